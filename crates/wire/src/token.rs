//! Connection tokens (docs/protocol.md §16): a short text that lets someone dial us
//! directly, with no mediator: `p2pchat:1:` and the base32 of our identity key, a
//! secret, an expiry, the addresses we listen on, and a typo check. No clock here:
//! the caller compares [`Token::expires_unix`] with its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What every token starts with (the scheme and the version).
pub const PREFIX: &str = "p2pchat:1:";
/// At most this many addresses in a token.
pub const MAX_ADDRS: usize = 8;
/// Bytes of the token's secret.
pub const SECRET_LEN: usize = 16;
/// The longest text [`Token::parse`] looks at (a full token is under 200).
pub const MAX_TEXT: usize = 512;

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
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_unix", &self.expires_unix)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

/// Why a text is not a usable token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this is not a p2pchat connection token (they start with `{PREFIX}`)")]
    NotAToken,
    #[error("this token is from another p2pchat version (`p2pchat:{0}:`); update the client")]
    OtherVersion(String),
    #[error("the token has a typo (its check does not match): copy it again, whole")]
    Typo,
    #[error("the token is damaged ({0}): copy it again, whole")]
    Malformed(&'static str),
}

impl Token {
    /// The token as text: `p2pchat:1:` and lowercase base32 (RFC 4648, no padding)
    /// of `body || token_checksum(body)`.
    pub fn encode(&self) -> String {
        let mut body = Vec::with_capacity(32 + SECRET_LEN + 9 + self.addrs.len() * 19);
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
        if version != "1" {
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
    if n == 0 || n > MAX_ADDRS {
        return Err(TokenError::Malformed("no addresses, or too many"));
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
    if !take(0)?.is_empty() || !r.is_empty() {
        return Err(TokenError::Malformed("bytes after the addresses"));
    }
    Ok(Token {
        identity,
        secret,
        expires_unix,
        addrs,
    })
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
        }
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
        assert!(matches!(
            Token::parse("p2pchat:2:aaaa").unwrap_err(),
            TokenError::OtherVersion(v) if v == "2"
        ));
        assert_eq!(Token::parse("p2pchat:1:a!a").unwrap_err(), TokenError::Typo);
        assert!(Token::parse(&"p".repeat(10_000)).is_err());
    }
}
