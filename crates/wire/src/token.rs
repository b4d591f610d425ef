//! Connection tokens (docs/protocol.md §16): a short text that lets someone dial us
//! directly, or meet us through our mediator: `p2pchat:2:` and the base32 of our
//! identity key, a secret, an expiry, the addresses we listen on, the mediator we
//! wait at (if any), and a typo check. No clock here: the caller compares
//! [`Token::expires_unix`] with its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What every token starts with (the scheme and the version). Version 2 (protocol
/// v3) added the mediator; a reader of version 1 refuses it as "another version".
pub const PREFIX: &str = "p2pchat:2:";
/// The version in [`PREFIX`].
const VERSION: &str = "2";
/// At most this many addresses in a token.
pub const MAX_ADDRS: usize = 8;
/// Bytes of the token's secret.
pub const SECRET_LEN: usize = 16;
/// The longest mediator (`HOST:PORT`, ASCII) a token names.
pub const MAX_MEDIATOR: usize = 255;
/// The longest text [`Token::parse`] looks at (a full token, longest mediator and
/// all eight addresses, is under 800 characters).
pub const MAX_TEXT: usize = 1024;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A decoded connection token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The holder's Ed25519 identity key: the dialer accepts only this host.
    pub identity: [u8; 32],
    /// Known only to those who have the token; the room code of the handshake.
    pub secret: [u8; SECRET_LEN],
    /// Seconds since 1970-01-01 UTC after which the holder refuses it.
    pub expires_unix: u64,
    /// Where the holder listens.
    pub addrs: Vec<SocketAddr>,
    /// The mediator the holder waits at, `HOST:PORT` (it passes
    /// [`check_mediator`]); a dialer that cannot reach [`Token::addrs`] meets the
    /// holder there.
    pub mediator: Option<String>,
}

impl Drop for Token {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_unix", &self.expires_unix)
            .field("addrs", &self.addrs)
            .field("mediator", &self.mediator)
            .finish_non_exhaustive()
    }
}

/// Why a text is not a usable token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this is not a p2pchat connection token (they start with `{PREFIX}`)")]
    NotAToken,
    #[error("{}", other_version(.0))]
    OtherVersion(String),
    #[error("the token has a typo (its check does not match): copy it again, whole")]
    Typo,
    #[error("the token is damaged ({0}): copy it again, whole")]
    Malformed(&'static str),
}

impl Token {
    /// The token as text: `p2pchat:2:` and lowercase base32 (RFC 4648, no padding)
    /// of `body || token_checksum(body)`. A mediator that fails [`check_mediator`]
    /// makes a text that [`Token::parse`] refuses as damaged.
    pub fn encode(&self) -> String {
        let mediator = self.mediator.as_deref().unwrap_or("").as_bytes();
        let mediator = &mediator[..mediator.len().min(MAX_MEDIATOR)];
        let mut body =
            Vec::with_capacity(32 + SECRET_LEN + 10 + self.addrs.len() * 19 + mediator.len());
        body.extend_from_slice(&self.identity);
        body.extend_from_slice(&self.secret);
        body.extend_from_slice(&self.expires_unix.to_be_bytes());
        let addrs = &self.addrs[..self.addrs.len().min(MAX_ADDRS)];
        body.push(u8::try_from(addrs.len()).unwrap_or(0));
        for addr in addrs {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    body.push(4);
                    body.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    body.push(6);
                    body.extend_from_slice(&ip.octets());
                }
            }
            body.extend_from_slice(&addr.port().to_be_bytes());
        }
        body.push(u8::try_from(mediator.len()).unwrap_or(0));
        body.extend_from_slice(mediator);
        let check = dhke::token_checksum(&body);
        body.extend_from_slice(&check);
        format!("{PREFIX}{}", base32(&body))
    }

    /// Reads a token as a person pasted it: surrounding and inner whitespace and
    /// case do not matter.
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        if text.len() > MAX_TEXT {
            return Err(TokenError::Malformed("too long"));
        }
        let clean: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let rest = clean
            .strip_prefix("p2pchat:")
            .ok_or(TokenError::NotAToken)?;
        let (version, data) = rest.split_once(':').ok_or(TokenError::NotAToken)?;
        if version != VERSION {
            return Err(TokenError::OtherVersion(version.chars().take(8).collect()));
        }
        let bytes = unbase32(data).ok_or(TokenError::Typo)?;
        if bytes.len() < 4 {
            return Err(TokenError::Typo);
        }
        let (body, check) = bytes.split_at(bytes.len() - 4);
        if dhke::token_checksum(body) != check {
            return Err(TokenError::Typo);
        }
        decode_body(body)
    }

    /// The 32-byte room secret of the handshake: `SHA-256("p2pchat/v2/token-room"
    /// || secret)` (via [`dhke::token_room_secret`]).
    pub fn room_secret(&self) -> [u8; 32] {
        dhke::token_room_secret(&self.secret)
    }
}

fn decode_body(body: &[u8]) -> Result<Token, TokenError> {
    let mut r = body;
    let mut take = |n: usize| -> Result<&[u8], TokenError> {
        if r.len() < n {
            return Err(TokenError::Malformed("it ends too early"));
        }
        let (head, tail) = r.split_at(n);
        r = tail;
        Ok(head)
    };
    let identity: [u8; 32] = take(32)?.try_into().expect("32 bytes");
    let secret: [u8; SECRET_LEN] = take(SECRET_LEN)?.try_into().expect("16 bytes");
    let expires_unix = u64::from_be_bytes(take(8)?.try_into().expect("8 bytes"));
    let n = usize::from(take(1)?[0]);
    if n > MAX_ADDRS {
        return Err(TokenError::Malformed("too many addresses"));
    }
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        let ip = match take(1)?[0] {
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(4)?).expect("4"))),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(take(16)?).expect("16"))),
            _ => return Err(TokenError::Malformed("unknown address family")),
        };
        let port = u16::from_be_bytes(take(2)?.try_into().expect("2 bytes"));
        addrs.push(SocketAddr::new(ip, port));
    }
    let m = usize::from(take(1)?[0]);
    let mediator = match take(m)? {
        [] => None,
        bytes => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| TokenError::Malformed("the mediator is not text"))?;
            check_mediator(text).map_err(TokenError::Malformed)?;
            Some(text.to_owned())
        }
    };
    if !r.is_empty() {
        return Err(TokenError::Malformed("bytes after the mediator"));
    }
    if addrs.is_empty() && mediator.is_none() {
        return Err(TokenError::Malformed("no address and no mediator"));
    }
    Ok(Token {
        identity,
        secret,
        expires_unix,
        addrs,
        mediator,
    })
}

/// What a token's mediator must be (docs/protocol.md §16.1): `HOST:PORT`, at most
/// [`MAX_MEDIATOR`] bytes, the port a decimal 1..=65535, the host a bracketed
/// IPv6 address or a name or IPv4 address of ASCII letters, digits, `-`, `_`
/// and `.`, so it never carries a space or a control character to a screen.
pub fn check_mediator(text: &str) -> Result<(), &'static str> {
    if text.len() > MAX_MEDIATOR {
        return Err("the mediator is too long");
    }
    let (host, port) = text.rsplit_once(':').ok_or("the mediator has no port")?;
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return Err("the mediator's port is not 1-65535");
    }
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
    };
    if !host_ok {
        return Err("the mediator's host is not a name or an address");
    }
    Ok(())
}

/// The refusal of a token of another version: an older one needs a new token,
/// a newer one a newer client.
fn other_version(version: &str) -> String {
    match version.parse::<u32>() {
        Ok(v) if v < 2 => format!(
            "this token was made by an older p2pchat (`p2pchat:{version}:`); ask its holder \
             to update and run `client token` again"
        ),
        _ => format!(
            "this token is from another p2pchat version (`p2pchat:{version}:`); update the client"
        ),
    }
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// `None` for a character outside the alphabet or nonzero padding bits.
fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = ((acc << 5) | v) & 0xFFFF;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xFF) as u8);
        }
    }
    // Leftover bits must be zero padding (one encoding per byte string).
    if bits >= 5 || (acc & ((1 << bits) - 1)) != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Token {
        Token {
            identity: [0x11; 32],
            secret: [0x22; SECRET_LEN],
            expires_unix: 1_800_000_000,
            addrs: vec![
                "192.0.2.7:4000".parse().unwrap(),
                "[2001:db8::1]:4000".parse().unwrap(),
            ],
            mediator: Some("chat.example.org:7070".into()),
        }
    }

    /// The text of `token` with its body replaced by `body` (and a fresh check).
    fn with_body(body: &[u8]) -> String {
        let mut bytes = body.to_vec();
        bytes.extend_from_slice(&dhke::token_checksum(body));
        format!("{PREFIX}{}", base32(&bytes))
    }

    /// The body of a token with `addrs` and a raw mediator field.
    fn body(addrs: &[u8], mediator: &[u8]) -> Vec<u8> {
        let mut body = vec![0x11; 32];
        body.extend_from_slice(&[0x22; SECRET_LEN]);
        body.extend_from_slice(&1_800_000_000u64.to_be_bytes());
        body.extend_from_slice(addrs);
        body.push(u8::try_from(mediator.len()).unwrap());
        body.extend_from_slice(mediator);
        body
    }

    #[test]
    fn round_trips_and_tolerates_case_and_spaces() {
        let t = sample();
        let text = t.encode();
        assert!(text.starts_with(PREFIX));
        assert_eq!(Token::parse(&text).unwrap(), t);
        let shouty = format!("  {} \n", text.to_uppercase());
        assert_eq!(Token::parse(&shouty).unwrap(), t);
    }

    #[test]
    fn every_single_changed_character_is_caught() {
        let text = sample().encode();
        let start = PREFIX.len();
        for i in start..text.len() {
            for c in ALPHABET.iter().map(|&b| char::from(b)) {
                if text.as_bytes()[i] == c as u8 {
                    continue;
                }
                let mut typo = text.clone();
                typo.replace_range(i..=i, &c.to_string());
                assert!(Token::parse(&typo).is_err(), "position {i} → {c}");
            }
        }
        assert_eq!(
            Token::parse(&text[..text.len() - 1]).unwrap_err(),
            TokenError::Typo
        );
    }

    #[test]
    fn other_texts_say_what_they_are() {
        assert_eq!(Token::parse("hello").unwrap_err(), TokenError::NotAToken);
        let newer = Token::parse("p2pchat:3:aaaa").unwrap_err();
        assert_eq!(newer, TokenError::OtherVersion("3".into()));
        assert!(newer.to_string().contains("update the client"), "{newer}");
        // A token of the version before the mediator (protocol v2's clients).
        let older = Token::parse("p2pchat:1:aaaa").unwrap_err();
        assert_eq!(older, TokenError::OtherVersion("1".into()));
        assert!(older.to_string().contains("older p2pchat"), "{older}");
        assert!(older.to_string().contains("client token"), "{older}");
        assert_eq!(Token::parse("p2pchat:2:a!a").unwrap_err(), TokenError::Typo);
        assert!(Token::parse(&"p".repeat(10_000)).is_err());
    }

    #[test]
    fn a_mediator_round_trips_with_or_without_addresses() {
        let mut t = sample();
        for mediator in [
            "203.0.113.5:7070",
            "[2001:db8::7]:443",
            "m_1.example-x.org:1",
        ] {
            t.mediator = Some(mediator.into());
            assert_eq!(Token::parse(&t.encode()).unwrap(), t, "{mediator}");
        }
        t.mediator = None;
        assert_eq!(Token::parse(&t.encode()).unwrap(), t);
        // A mediator and no address: still a way to reach the holder.
        let mut only = sample();
        only.addrs = Vec::new();
        only.mediator = Some("chat.example.org:7070".into());
        assert_eq!(Token::parse(&only.encode()).unwrap(), only);
        // The longest mediator and all eight addresses fit the text limit.
        let mut longest = sample();
        longest.addrs = vec!["[2001:db8::1]:4000".parse().unwrap(); MAX_ADDRS];
        longest.mediator = Some(format!("{}:65535", "a".repeat(MAX_MEDIATOR - 6)));
        let text = longest.encode();
        assert!(text.len() < 800, "{}", text.len());
        assert_eq!(Token::parse(&text).unwrap(), longest);
    }

    #[test]
    fn a_bad_mediator_or_no_way_to_reach_the_holder_is_damaged() {
        let addr = [1, 4, 192, 0, 2, 7, 0x0f, 0xa0];
        for bad in [
            &b"chat.example.org"[..],
            b"chat.example.org:",
            b"chat.example.org:0",
            b"chat.example.org:65536",
            b"chat.example.org:+7070",
            b":7070",
            b"chat example.org:7070",
            b"chat\x1b[2J.org:7070",
            b"[2001:db8::1:7070",
            b"[not-v6]:7070",
            b"2001:db8::1:7070",
            b"\xff\xfe:7070",
        ] {
            let err = Token::parse(&with_body(&body(&addr, bad))).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            Token::parse(&with_body(&body(&[0], b""))).unwrap_err(),
            TokenError::Malformed("no address and no mediator")
        );
        // The mediator field is the last: anything after it is damage.
        let mut trailing = body(&addr, b"m.example:1");
        trailing.push(0);
        assert!(matches!(
            Token::parse(&with_body(&trailing)).unwrap_err(),
            TokenError::Malformed(_)
        ));
        // A mediator length past the end.
        let mut short = body(&addr, b"m.example:1");
        short.truncate(short.len() - 1);
        assert!(matches!(
            Token::parse(&with_body(&short)).unwrap_err(),
            TokenError::Malformed(_)
        ));
    }
}
