//! LAN announcements (docs/protocol.md §14): the datagram a client broadcasts to
//! find its peer without a mediator, sealed with an HMAC keyed by the room, and
//! the [`Sieve`] that screens incoming datagrams (size, magic, version, MAC, age,
//! replay, our own). No sockets and no clock: callers pass the time.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "P2PL" (50 32 50 4C)
//!      4     1  version (01)
//!      5    16  nonce, fresh random bytes per announcement round
//!     21     8  sent_at_ms, u64 big-endian Unix time in milliseconds
//!     29     n  body: one bincode `Announcement` (docs/protocol.md §2 rules)
//!   29+n    32  mac = HMAC-SHA256(lan_key(room), bytes 0 .. 29+n)
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The first four bytes of every announcement.
pub const MAGIC: [u8; 4] = *b"P2PL";
/// The announcement format's own version (independent of the rendezvous version).
pub const VERSION: u8 = 1;
/// Random bytes per announcement round; also the replay-cache key.
pub const NONCE_LEN: usize = 16;
/// A client's random instance id (roles: the smaller id hosts).
pub const INSTANCE_LEN: usize = 16;
/// Magic, version, nonce, time.
pub const HEADER_LEN: usize = 4 + 1 + NONCE_LEN + 8;
/// HMAC-SHA256 tag at the end.
pub const MAC_LEN: usize = 32;
/// Largest datagram sealed or opened: below the 1232 bytes of UDP payload that
/// IPv6's minimum MTU carries without fragments. The largest valid announcement
/// (32-character name of 4-byte characters, group 15, 8 IPv6 addresses) is 758 bytes.
pub const MAX_DATAGRAM: usize = 1200;
/// Most addresses one announcement may list (as in `Hello`).
pub const MAX_ADDRS: usize = crate::rendezvous::MAX_LOCAL_ADDRS;
/// An announcement older than this (by its own clock against ours) is stale.
pub const MAX_AGE_MS: u64 = 30_000;
/// An announcement dated further ahead than this is refused (clock skew slack).
pub const MAX_AHEAD_MS: u64 = 10_000;
/// Most nonces the replay cache holds; beyond that new announcements are refused
/// (counted as `busy`) until old ones expire.
pub const MAX_SEEN: usize = 4096;

/// What an announcement carries: what the mediator's `Matched` would say about
/// the sender, plus its instance id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Random per process; tells our own announcements apart and sets the roles.
    pub instance: [u8; INSTANCE_LEN],
    /// The sender's name (§10 rules).
    pub name: String,
    /// DH group id (14 or 15).
    pub group: u8,
    /// The sender's DH public value, big-endian, len(p) bytes.
    #[serde(with = "serde_bytes")]
    pub public: Vec<u8>,
    /// The sender's TCP listen port.
    pub listen_port: u16,
    /// The sender's own interface addresses with its listen port (≤ 8).
    pub addrs: Vec<SocketAddr>,
}

/// The key that seals announcements of one room. Zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct LanKey([u8; 32]);

impl fmt::Debug for LanKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LanKey(<redacted>)")
    }
}

/// The announcement key of `room`: [`dhke::RoomCode::lan_key`], Argon2id over the
/// whole code (docs/protocol.md §13.5), so a captured announcement costs an
/// eavesdropper one Argon2id per guess of the code. The one place LAN mode gets it.
pub fn lan_key(room: &dhke::RoomCode) -> LanKey {
    LanKey(*room.lan_key().expose())
}

/// Why an announcement could not be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("an announcement lists at most {MAX_ADDRS} addresses")]
    TooManyAddrs,
    #[error("the announcement would be {0} bytes, over {MAX_DATAGRAM}")]
    TooLong(usize),
    #[error("cannot encode the announcement: {0}")]
    Encode(String),
}

fn mac_over(key: &LanKey, bytes: &[u8]) -> Hmac<Sha256> {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&key.0) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes a key of any length"),
    };
    mac.update(bytes);
    mac
}

/// Seals `ann` into one datagram with the given nonce and send time.
pub fn seal(
    key: &LanKey,
    ann: &Announcement,
    nonce: [u8; NONCE_LEN],
    sent_at_ms: u64,
) -> Result<Vec<u8>, SealError> {
    if ann.addrs.len() > MAX_ADDRS {
        return Err(SealError::TooManyAddrs);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + 512 + MAC_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sent_at_ms.to_be_bytes());
    crate::encode_into(ann, &mut out).map_err(|e| SealError::Encode(e.to_string()))?;
    let tag = mac_over(key, &out).finalize().into_bytes();
    out.extend_from_slice(&tag);
    if out.len() > MAX_DATAGRAM {
        return Err(SealError::TooLong(out.len()));
    }
    Ok(out)
}

/// A verified announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub nonce: [u8; NONCE_LEN],
    pub sent_at_ms: u64,
    pub announcement: Announcement,
}

/// Why a datagram was dropped. Everything but `Mac` and later says nothing about
/// rooms; `Mac` is what another room's announcements, forgeries and noise that
/// happens to start with the magic all look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dropped {
    /// Shorter than header + one body byte + MAC, or longer than [`MAX_DATAGRAM`].
    Size,
    /// Does not start with [`MAGIC`]: not an announcement at all.
    Magic,
    /// Another announcement format version.
    Version,
    /// The MAC does not verify with our room's key.
    Mac,
    /// MAC fine but the body breaks the format (only a key holder can send this).
    Malformed,
    /// Older than [`MAX_AGE_MS`].
    Stale,
    /// More than [`MAX_AHEAD_MS`] in the future.
    Future,
    /// A nonce already seen: a replay, or the same round arriving by another path
    /// (broadcast and multicast both reach us).
    Repeated,
    /// Our own announcement coming back.
    Own,
    /// The replay cache is full of live nonces.
    Busy,
}

/// Opens one datagram: size, magic, version, MAC (constant time), age, body.
/// Replays and our own announcements are the [`Sieve`]'s business.
pub fn open(key: &LanKey, datagram: &[u8], now_ms: u64) -> Result<Opened, Dropped> {
    if datagram.len() < HEADER_LEN + 1 + MAC_LEN || datagram.len() > MAX_DATAGRAM {
        return Err(Dropped::Size);
    }
    if datagram[..4] != MAGIC {
        return Err(Dropped::Magic);
    }
    if datagram[4] != VERSION {
        return Err(Dropped::Version);
    }
    let (signed, tag) = datagram.split_at(datagram.len() - MAC_LEN);
    mac_over(key, signed)
        .verify_slice(tag)
        .map_err(|_| Dropped::Mac)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&signed[5..5 + NONCE_LEN]);
    let mut time = [0u8; 8];
    time.copy_from_slice(&signed[5 + NONCE_LEN..HEADER_LEN]);
    let sent_at_ms = u64::from_be_bytes(time);
    if sent_at_ms.saturating_add(MAX_AGE_MS) < now_ms {
        return Err(Dropped::Stale);
    }
    if sent_at_ms > now_ms.saturating_add(MAX_AHEAD_MS) {
        return Err(Dropped::Future);
    }
    let announcement: Announcement =
        crate::decode(&signed[HEADER_LEN..]).map_err(|_| Dropped::Malformed)?;
    if announcement.addrs.len() > MAX_ADDRS || crate::validate_name(&announcement.name).is_err() {
        return Err(Dropped::Malformed);
    }
    Ok(Opened {
        nonce,
        sent_at_ms,
        announcement,
    })
}

/// How many datagrams were dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    pub size: u64,
    pub magic: u64,
    pub version: u64,
    pub mac: u64,
    pub malformed: u64,
    pub stale: u64,
    pub future: u64,
    pub repeated: u64,
    pub own: u64,
    pub busy: u64,
}

impl DropCounts {
    fn bump(&mut self, why: Dropped) {
        let slot = match why {
            Dropped::Size => &mut self.size,
            Dropped::Magic => &mut self.magic,
            Dropped::Version => &mut self.version,
            Dropped::Mac => &mut self.mac,
            Dropped::Malformed => &mut self.malformed,
            Dropped::Stale => &mut self.stale,
            Dropped::Future => &mut self.future,
            Dropped::Repeated => &mut self.repeated,
            Dropped::Own => &mut self.own,
            Dropped::Busy => &mut self.busy,
        };
        *slot = slot.saturating_add(1);
    }

    /// Datagrams that were not announcements of our room at all (garbage,
    /// other formats, other rooms, forgeries).
    pub fn unreadable(&self) -> u64 {
        self.size + self.magic + self.version + self.mac + self.malformed
    }

    /// Every dropped datagram.
    pub fn total(&self) -> u64 {
        self.unreadable() + self.stale + self.future + self.repeated + self.own + self.busy
    }
}

impl fmt::Display for DropCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "size={} magic={} version={} mac={} malformed={} stale={} future={} repeated={} own={} busy={}",
            self.size,
            self.magic,
            self.version,
            self.mac,
            self.malformed,
            self.stale,
            self.future,
            self.repeated,
            self.own,
            self.busy
        )
    }
}

/// Screens incoming datagrams for one room: [`open`], then drops our own
/// announcements and every nonce seen before (kept until it would be stale
/// anyway, at most [`MAX_SEEN`]), counting each drop.
#[derive(Debug)]
pub struct Sieve {
    key: LanKey,
    own: [u8; INSTANCE_LEN],
    /// nonce → sent_at_ms
    seen: HashMap<[u8; NONCE_LEN], u64>,
    counts: DropCounts,
}

impl Sieve {
    /// A sieve for the room of `key`; `own` is our instance id.
    pub fn new(key: LanKey, own: [u8; INSTANCE_LEN]) -> Sieve {
        Sieve {
            key,
            own,
            seen: HashMap::new(),
            counts: DropCounts::default(),
        }
    }

    /// The announcement in `datagram` if it is a fresh one of another member of
    /// our room; otherwise counts why not and returns it.
    pub fn accept(&mut self, datagram: &[u8], now_ms: u64) -> Result<Opened, Dropped> {
        let result = self.judge(datagram, now_ms);
        if let Err(why) = result {
            self.counts.bump(why);
        }
        result
    }

    fn judge(&mut self, datagram: &[u8], now_ms: u64) -> Result<Opened, Dropped> {
        let opened = open(&self.key, datagram, now_ms)?;
        if opened.announcement.instance == self.own {
            return Err(Dropped::Own);
        }
        if self.seen.contains_key(&opened.nonce) {
            return Err(Dropped::Repeated);
        }
        if self.seen.len() >= MAX_SEEN {
            // Forget nonces that would be refused as stale anyway.
            self.seen
                .retain(|_, sent| sent.saturating_add(MAX_AGE_MS) >= now_ms);
            if self.seen.len() >= MAX_SEEN {
                return Err(Dropped::Busy);
            }
        }
        self.seen.insert(opened.nonce, opened.sent_at_ms);
        Ok(opened)
    }

    /// Drops counted so far.
    pub fn counts(&self) -> DropCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(room: &str) -> LanKey {
        lan_key(&dhke::RoomCode::parse(room))
    }

    fn ann(instance: u8) -> Announcement {
        Announcement {
            instance: [instance; INSTANCE_LEN],
            name: "alice".into(),
            group: 14,
            public: vec![0x02; 256],
            listen_port: 40000,
            addrs: vec!["192.168.1.20:40000".parse().unwrap()],
        }
    }

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn sealed_announcement_opens_with_the_same_room_only() {
        let sealed = seal(&key("r1"), &ann(1), [7; NONCE_LEN], NOW).unwrap();
        let opened = open(&key("r1"), &sealed, NOW + 1).unwrap();
        assert_eq!(opened.announcement, ann(1));
        assert_eq!(opened.nonce, [7; NONCE_LEN]);
        assert_eq!(opened.sent_at_ms, NOW);
        assert_eq!(open(&key("r2"), &sealed, NOW), Err(Dropped::Mac));
    }

    #[test]
    fn the_room_name_appears_nowhere_in_the_datagram() {
        let room = "7-velvet-harbor";
        let sealed = seal(&key(room), &ann(1), [7; NONCE_LEN], NOW).unwrap();
        assert!(!sealed.windows(room.len()).any(|w| w == room.as_bytes()));
        let tag = dhke::RoomCode::parse(room).tag().0;
        assert!(!sealed.windows(8).any(|w| w == &tag[..8]));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let k = key("r1");
        let sealed = seal(&k, &ann(1), [7; NONCE_LEN], NOW).unwrap();
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert!(open(&k, &bad, NOW).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn stale_and_future_announcements_are_refused() {
        let k = key("r1");
        let sealed = seal(&k, &ann(1), [7; NONCE_LEN], NOW).unwrap();
        assert!(open(&k, &sealed, NOW + MAX_AGE_MS).is_ok());
        assert_eq!(open(&k, &sealed, NOW + MAX_AGE_MS + 1), Err(Dropped::Stale));
        assert!(open(&k, &sealed, NOW - MAX_AHEAD_MS).is_ok());
        assert_eq!(
            open(&k, &sealed, NOW - MAX_AHEAD_MS - 1),
            Err(Dropped::Future)
        );
    }

    #[test]
    fn sieve_drops_replays_and_own_announcements_and_counts_them() {
        let mut sieve = Sieve::new(key("r1"), [9; INSTANCE_LEN]);
        let theirs = seal(&key("r1"), &ann(1), [7; NONCE_LEN], NOW).unwrap();
        let ours = seal(&key("r1"), &ann(9), [8; NONCE_LEN], NOW).unwrap();
        assert!(sieve.accept(&theirs, NOW).is_ok());
        assert_eq!(sieve.accept(&theirs, NOW + 5), Err(Dropped::Repeated));
        assert_eq!(sieve.accept(&ours, NOW), Err(Dropped::Own));
        assert_eq!(sieve.accept(b"garbage", NOW), Err(Dropped::Size));
        let c = sieve.counts();
        assert_eq!((c.repeated, c.own, c.size, c.total()), (1, 1, 1, 3));
    }

    #[test]
    fn sieve_cache_is_bounded_and_forgets_stale_nonces() {
        let k = key("r1");
        let mut sieve = Sieve::new(k.clone(), [9; INSTANCE_LEN]);
        for i in 0..MAX_SEEN as u32 {
            let mut nonce = [0u8; NONCE_LEN];
            nonce[..4].copy_from_slice(&i.to_be_bytes());
            let d = seal(&k, &ann(1), nonce, NOW).unwrap();
            assert!(sieve.accept(&d, NOW).is_ok());
        }
        let one_more = seal(&k, &ann(1), [0xEE; NONCE_LEN], NOW).unwrap();
        assert_eq!(sieve.accept(&one_more, NOW), Err(Dropped::Busy));
        // Once the old nonces are past their age they make room.
        let later = NOW + MAX_AGE_MS + 1;
        let fresh = seal(&k, &ann(1), [0xEF; NONCE_LEN], later).unwrap();
        assert!(sieve.accept(&fresh, later).is_ok());
        assert_eq!(sieve.seen.len(), 1);
    }

    #[test]
    fn too_many_addresses_are_refused_both_ways() {
        let k = key("r1");
        let mut a = ann(1);
        a.addrs = vec!["10.0.0.1:1".parse().unwrap(); MAX_ADDRS + 1];
        assert!(matches!(
            seal(&k, &a, [0; NONCE_LEN], NOW),
            Err(SealError::TooManyAddrs)
        ));
        // A key holder that builds one by hand still gets it refused.
        let mut raw = Vec::new();
        raw.extend_from_slice(&MAGIC);
        raw.push(VERSION);
        raw.extend_from_slice(&[0; NONCE_LEN]);
        raw.extend_from_slice(&NOW.to_be_bytes());
        crate::encode_into(&a, &mut raw).unwrap();
        let tag = mac_over(&k, &raw).finalize().into_bytes();
        raw.extend_from_slice(&tag);
        assert_eq!(open(&k, &raw, NOW), Err(Dropped::Malformed));
    }

    #[test]
    fn key_debug_is_redacted() {
        assert_eq!(format!("{:?}", key("secret")), "LanKey(<redacted>)");
    }
}
