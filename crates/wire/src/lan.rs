//! LAN announcements (docs/protocol.md §14): the datagram a client broadcasts to
//! find its peer without a mediator, sealed with an HMAC keyed by the room, and
//! the [`Sieve`] that screens incoming datagrams (size, magic, version, MAC, age,
//! replay, our own). No sockets and no clock: callers pass the time.
//!
//! Presence announcements (§14.4, [`seal_presence`], [`PresenceSieve`]) are a
//! second datagram kind on the same port: one tag per contact, recognisable only
//! by that contact.
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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
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

/// The name a contact's conversation announces (§14.4) and puts in both
/// sides' handshake transcripts, so no name goes on the air; each side shows
/// the name it knows the contact by.
pub const CONTACT_NAME: &str = "contact";

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
    #[error("a presence announcement carries 1 to {MAX_PRESENCE_TAGS} tags, not {0}")]
    TagCount(usize),
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
    /// The MAC does not verify with our room's key; for a presence
    /// announcement (§14.4), no tag is one of our contacts'.
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

// Presence announcements (docs/protocol.md §14.4).
//
// ```text
// offset  size  field
//      0     4  magic "P2PP" (50 32 50 50)
//      4     1  version (01)
//      5    16  id: the sender's random instance id (per run, or per call)
//     21     4  epoch, u32 big-endian: Unix time in ms / PRESENCE_EPOCH_MS
//     25     1  n, the number of tags (1 ..= MAX_PRESENCE_TAGS)
//     26  16·n  tags: HMAC-SHA256(presence_key(contact), label || id || epoch)[..16]
// ```

/// The first four bytes of every presence announcement.
pub const PRESENCE_MAGIC: [u8; 4] = *b"P2PP";
/// The presence format's own version.
pub const PRESENCE_VERSION: u8 = 1;
/// The sender's id: random per messenger run (or per contact conversation that
/// calls); a receiver rings each contact once per id.
pub const PRESENCE_ID_LEN: usize = 16;
/// One contact's tag: 128 bits, so a guessed tag matches with probability 2^-128.
pub const PRESENCE_TAG_LEN: usize = 16;
/// Magic, version, id, epoch, tag count.
pub const PRESENCE_HEADER_LEN: usize = 4 + 1 + PRESENCE_ID_LEN + 4 + 1;
/// Most tags one datagram carries: 26 + 64 · 16 = 1 050 bytes, under [`MAX_DATAGRAM`].
pub const MAX_PRESENCE_TAGS: usize = 64;
/// The largest presence datagram.
pub const MAX_PRESENCE_DATAGRAM: usize = PRESENCE_HEADER_LEN + MAX_PRESENCE_TAGS * PRESENCE_TAG_LEN;
/// Tags change every epoch (and with every id): one minute.
pub const PRESENCE_EPOCH_MS: u64 = 60_000;
/// Epochs either side of ours that a receiver accepts (clocks that differ, a
/// datagram sent just before the turn of the minute).
pub const PRESENCE_EPOCH_SLACK: u32 = 1;
/// How many senders' (id, epoch) the receiver keeps the expected tags of.
pub const PRESENCE_CACHE: usize = 16;
/// Presence datagrams a receiver evaluates per second at most (a token bucket
/// of this size, refilled at this rate); the rest are dropped as `busy`. Each
/// evaluation costs at most one HMAC per contact and contacts × tags
/// comparisons.
pub const PRESENCE_RATE: u32 = 20;
/// Our own conversations' call ids a [`PresenceSieve`] drops as ours.
pub const MAX_OWN_CALLS: usize = 16;

const PRESENCE_TAG_LABEL: &[u8] = b"p2pchat/v3/lan-presence-tag";

/// One contact's presence tag.
pub type PresenceTag = [u8; PRESENCE_TAG_LEN];

/// The key a pair of contacts derives its presence tags with. Zeroized on drop,
/// never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PresenceKey([u8; 32]);

impl PresenceKey {
    /// The key's bytes (for known-answer vectors; never log them).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PresenceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresenceKey(<redacted>)")
    }
}

/// The presence key of two contacts, from the key schedule
/// ([`dhke::lan_presence_key`] over the pair's static secret of §15.3).
pub fn presence_key(contact_secret: &[u8; 32]) -> PresenceKey {
    PresenceKey(*dhke::lan_presence_key(contact_secret).expose())
}

/// The tag that says "I am here" to one contact from sender `id` in `epoch`.
/// Both sides of the pair compute the same tag for the same (id, epoch).
pub fn presence_tag(key: &PresenceKey, id: &[u8; PRESENCE_ID_LEN], epoch: u32) -> PresenceTag {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&key.0) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes a key of any length"),
    };
    mac.update(PRESENCE_TAG_LABEL);
    mac.update(id);
    mac.update(&epoch.to_be_bytes());
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; PRESENCE_TAG_LEN];
    tag.copy_from_slice(&full[..PRESENCE_TAG_LEN]);
    tag
}

/// The presence epoch of Unix time `now_ms`.
pub fn presence_epoch(now_ms: u64) -> u32 {
    u32::try_from(now_ms / PRESENCE_EPOCH_MS).unwrap_or(u32::MAX)
}

/// What a presence announcement says: sender `id` in `epoch` is present for
/// whoever can compute one of `tags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub id: [u8; PRESENCE_ID_LEN],
    pub epoch: u32,
    pub tags: Vec<PresenceTag>,
}

/// Seals one presence announcement (1 to [`MAX_PRESENCE_TAGS`] tags).
pub fn seal_presence(presence: &Presence) -> Result<Vec<u8>, SealError> {
    let n = presence.tags.len();
    if n == 0 || n > MAX_PRESENCE_TAGS {
        return Err(SealError::TagCount(n));
    }
    let mut out = Vec::with_capacity(PRESENCE_HEADER_LEN + n * PRESENCE_TAG_LEN);
    out.extend_from_slice(&PRESENCE_MAGIC);
    out.push(PRESENCE_VERSION);
    out.extend_from_slice(&presence.id);
    out.extend_from_slice(&presence.epoch.to_be_bytes());
    out.push(u8::try_from(n).map_err(|_| SealError::TagCount(n))?);
    for tag in &presence.tags {
        out.extend_from_slice(tag);
    }
    Ok(out)
}

/// Reads one presence datagram: size, magic, version, tag count, epoch. Whose
/// tags it carries is the [`PresenceSieve`]'s business.
pub fn open_presence(datagram: &[u8], now_ms: u64) -> Result<Presence, Dropped> {
    if datagram.len() < PRESENCE_HEADER_LEN + PRESENCE_TAG_LEN
        || datagram.len() > MAX_PRESENCE_DATAGRAM
    {
        return Err(Dropped::Size);
    }
    if datagram[..4] != PRESENCE_MAGIC {
        return Err(Dropped::Magic);
    }
    if datagram[4] != PRESENCE_VERSION {
        return Err(Dropped::Version);
    }
    let n = usize::from(datagram[PRESENCE_HEADER_LEN - 1]);
    if n == 0 || datagram.len() != PRESENCE_HEADER_LEN + n * PRESENCE_TAG_LEN {
        return Err(Dropped::Malformed);
    }
    let mut id = [0u8; PRESENCE_ID_LEN];
    id.copy_from_slice(&datagram[5..5 + PRESENCE_ID_LEN]);
    let mut epoch = [0u8; 4];
    epoch.copy_from_slice(&datagram[5 + PRESENCE_ID_LEN..PRESENCE_HEADER_LEN - 1]);
    let epoch = u32::from_be_bytes(epoch);
    let now = presence_epoch(now_ms);
    if epoch.saturating_add(PRESENCE_EPOCH_SLACK) < now {
        return Err(Dropped::Stale);
    }
    if epoch > now.saturating_add(PRESENCE_EPOCH_SLACK) {
        return Err(Dropped::Future);
    }
    let tags = datagram[PRESENCE_HEADER_LEN..]
        .chunks_exact(PRESENCE_TAG_LEN)
        .map(|c| {
            let mut tag = [0u8; PRESENCE_TAG_LEN];
            tag.copy_from_slice(c);
            tag
        })
        .collect();
    Ok(Presence { id, epoch, tags })
}

/// A sender's id and an epoch: what a set of expected tags is computed for.
type SenderEpoch = ([u8; PRESENCE_ID_LEN], u32);

/// A presence announcement that carries tags of our contacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recognised {
    pub id: [u8; PRESENCE_ID_LEN],
    pub epoch: u32,
    /// The contacts (indexes into the sieve's keys) found for the first time
    /// under this id: ring them, answer them. Empty when all were known.
    pub fresh: Vec<usize>,
}

/// Screens incoming presence datagrams for the contacts of `keys`: drops our
/// own, copies already seen (the same datagram arrives by broadcast and
/// multicast) and, beyond [`PRESENCE_RATE`] a second, the rest; then computes
/// each contact's expected tag for the sender's (id, epoch) and compares it with
/// every tag in the datagram, in constant time. Everything it keeps is bounded.
#[derive(Debug)]
pub struct PresenceSieve {
    keys: Vec<PresenceKey>,
    /// Our current id and the one before (still on the wire for a while).
    own: [Option<[u8; PRESENCE_ID_LEN]>; 2],
    /// Our own conversations' call ids, newest last, at most [`MAX_OWN_CALLS`].
    calls: VecDeque<[u8; PRESENCE_ID_LEN]>,
    /// (id, epoch) → each contact's expected tag, most recent last.
    expected: VecDeque<(SenderEpoch, Vec<PresenceTag>)>,
    /// SHA-256 of each datagram evaluated → its epoch.
    seen: HashMap<[u8; 32], u32>,
    /// (sender id, contact) already recognised → the epoch.
    recognised: HashMap<([u8; PRESENCE_ID_LEN], usize), u32>,
    budget: u32,
    refilled_ms: u64,
    counts: DropCounts,
}

impl PresenceSieve {
    /// A sieve for the contacts of `keys` (their order names them in [`Recognised`]).
    pub fn new(keys: Vec<PresenceKey>) -> PresenceSieve {
        PresenceSieve {
            keys,
            own: [None, None],
            calls: VecDeque::new(),
            expected: VecDeque::new(),
            seen: HashMap::new(),
            recognised: HashMap::new(),
            budget: PRESENCE_RATE,
            refilled_ms: 0,
            counts: DropCounts::default(),
        }
    }

    /// Our id changed (a new epoch): datagrams from it, or from the one before,
    /// are ours.
    pub fn own(&mut self, id: [u8; PRESENCE_ID_LEN]) {
        if self.own[0] != Some(id) {
            self.own = [Some(id), self.own[0]];
        }
    }

    /// One of our own conversations calls a contact under `id` (§14.4): its
    /// calls come back to us on the same port and are ours, not the contact's.
    /// The newest [`MAX_OWN_CALLS`] are kept; an echo follows its call within
    /// milliseconds.
    pub fn own_call(&mut self, id: [u8; PRESENCE_ID_LEN]) {
        if self.calls.contains(&id) {
            return;
        }
        if self.calls.len() >= MAX_OWN_CALLS {
            self.calls.pop_front();
        }
        self.calls.push_back(id);
    }

    /// The contacts `datagram` announces itself to, if it is a fresh presence
    /// announcement from someone else that carries a tag of one of ours;
    /// otherwise counts why not and returns it.
    pub fn accept(&mut self, datagram: &[u8], now_ms: u64) -> Result<Recognised, Dropped> {
        let result = self.judge(datagram, now_ms);
        if let Err(why) = result {
            self.counts.bump(why);
        }
        result
    }

    fn judge(&mut self, datagram: &[u8], now_ms: u64) -> Result<Recognised, Dropped> {
        let presence = open_presence(datagram, now_ms)?;
        if self.own.contains(&Some(presence.id)) || self.calls.contains(&presence.id) {
            return Err(Dropped::Own);
        }
        let digest: [u8; 32] = Sha256::digest(datagram).into();
        if self.seen.contains_key(&digest) {
            return Err(Dropped::Repeated);
        }
        self.refill(now_ms);
        if self.budget == 0 {
            return Err(Dropped::Busy);
        }
        let now = presence_epoch(now_ms);
        let live = |epoch: &u32| epoch.saturating_add(PRESENCE_EPOCH_SLACK) >= now;
        if self.seen.len() >= MAX_SEEN {
            self.seen.retain(|_, epoch| live(epoch));
            if self.seen.len() >= MAX_SEEN {
                return Err(Dropped::Busy);
            }
        }
        self.budget -= 1;
        self.seen.insert(digest, presence.epoch);
        let expected = self.expected_tags(presence.id, presence.epoch);
        let mut found = Vec::new();
        for (contact, want) in expected.iter().enumerate() {
            let mut hit = subtle::Choice::from(0);
            for tag in &presence.tags {
                hit |= want.ct_eq(tag);
            }
            if bool::from(hit) {
                found.push(contact);
            }
        }
        if found.is_empty() {
            return Err(Dropped::Mac);
        }
        if self.recognised.len() + found.len() > MAX_SEEN {
            self.recognised.retain(|_, epoch| live(epoch));
            if self.recognised.len() + found.len() > MAX_SEEN {
                // Forgetting only means a contact may ring once more.
                self.recognised.clear();
            }
        }
        let fresh = found
            .into_iter()
            .filter(|&c| {
                self.recognised
                    .insert((presence.id, c), presence.epoch)
                    .is_none()
            })
            .collect();
        Ok(Recognised {
            id: presence.id,
            epoch: presence.epoch,
            fresh,
        })
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.refilled_ms);
        let earned = elapsed.saturating_mul(u64::from(PRESENCE_RATE)) / 1000;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.budget = self.budget.saturating_add(earned).min(PRESENCE_RATE);
            self.refilled_ms = now_ms;
        }
    }

    /// Every contact's tag for sender `id` in `epoch`, computed once per
    /// (id, epoch) while it stays among the last [`PRESENCE_CACHE`].
    fn expected_tags(&mut self, id: [u8; PRESENCE_ID_LEN], epoch: u32) -> &[PresenceTag] {
        let at = match self.expected.iter().position(|(k, _)| *k == (id, epoch)) {
            Some(at) => at,
            None => {
                if self.expected.len() >= PRESENCE_CACHE {
                    self.expected.pop_front();
                }
                let tags = self
                    .keys
                    .iter()
                    .map(|key| presence_tag(key, &id, epoch))
                    .collect();
                self.expected.push_back(((id, epoch), tags));
                self.expected.len() - 1
            }
        };
        &self.expected[at].1
    }

    /// Drops counted so far (`mac`: no tag of any of our contacts).
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

    fn pkey(n: u8) -> PresenceKey {
        presence_key(&[n; 32])
    }

    /// A presence datagram from `id` in the epoch of `now` with a tag for each
    /// of `contacts` (by secret byte).
    fn presence_from(id: u8, now: u64, contacts: &[u8]) -> Vec<u8> {
        let id = [id; PRESENCE_ID_LEN];
        let epoch = presence_epoch(now);
        let tags = contacts
            .iter()
            .map(|&c| presence_tag(&pkey(c), &id, epoch))
            .collect();
        seal_presence(&Presence { id, epoch, tags }).unwrap()
    }

    #[test]
    fn only_the_contact_recognises_its_presence_tag() {
        // Bob knows contacts 1 (alice) and 2; a stranger knows 3 and 4.
        let mut bob = PresenceSieve::new(vec![pkey(1), pkey(2)]);
        let mut stranger = PresenceSieve::new(vec![pkey(3), pkey(4)]);
        let alice = presence_from(7, NOW, &[9, 1, 8]);
        let got = bob.accept(&alice, NOW).unwrap();
        assert_eq!(got.fresh, vec![0], "alice's tag names bob's contact 0");
        assert_eq!(got.id, [7; PRESENCE_ID_LEN]);
        assert_eq!(stranger.accept(&alice, NOW), Err(Dropped::Mac));
        assert_eq!(stranger.counts().mac, 1);
    }

    #[test]
    fn presence_tags_change_with_the_id_and_the_epoch_and_differ_per_contact() {
        let k = pkey(1);
        let t = presence_tag(&k, &[7; PRESENCE_ID_LEN], 100);
        assert_ne!(t, presence_tag(&k, &[8; PRESENCE_ID_LEN], 100));
        assert_ne!(t, presence_tag(&k, &[7; PRESENCE_ID_LEN], 101));
        assert_ne!(t, presence_tag(&pkey(2), &[7; PRESENCE_ID_LEN], 100));
        // Derived under its own label: neither the secret nor the --to tag.
        let secret = [1u8; 32];
        let to_tag = dhke::RoomCode::from_secret("contact", &secret).tag().0;
        assert_ne!(k.0, secret);
        assert_ne!(k.0, to_tag);
    }

    #[test]
    fn a_presence_datagram_carries_no_key_or_secret() {
        let secret = [0x5Au8; 32];
        let d = presence_from(7, NOW, &[0x5A]);
        let key = presence_key(&secret);
        for needle in [&secret[..], &key.0[..], &secret[..8], &key.0[..8]] {
            assert!(!d.windows(needle.len()).any(|w| w == needle));
        }
        assert_eq!(d.len(), PRESENCE_HEADER_LEN + PRESENCE_TAG_LEN);
    }

    #[test]
    fn a_contact_is_fresh_once_per_sender_id() {
        let mut bob = PresenceSieve::new(vec![pkey(1), pkey(2)]);
        assert_eq!(
            bob.accept(&presence_from(7, NOW, &[1]), NOW).unwrap().fresh,
            vec![0]
        );
        // The same sender again, now also for contact 2: only 2 is fresh.
        assert_eq!(
            bob.accept(&presence_from(7, NOW, &[1, 2]), NOW)
                .unwrap()
                .fresh,
            vec![1]
        );
        // A new id (the next epoch, or another run) is fresh again.
        assert_eq!(
            bob.accept(&presence_from(8, NOW, &[1]), NOW).unwrap().fresh,
            vec![0]
        );
    }

    #[test]
    fn presence_drops_own_copies_old_and_future_and_malformed() {
        let mut s = PresenceSieve::new(vec![pkey(1)]);
        s.own([7; PRESENCE_ID_LEN]);
        assert_eq!(
            s.accept(&presence_from(7, NOW, &[1]), NOW),
            Err(Dropped::Own)
        );
        let d = presence_from(8, NOW, &[1]);
        assert!(s.accept(&d, NOW).is_ok());
        assert_eq!(s.accept(&d, NOW + 10), Err(Dropped::Repeated));
        // The id before the current one is still ours.
        s.own([9; PRESENCE_ID_LEN]);
        assert_eq!(
            s.accept(&presence_from(7, NOW, &[1]), NOW),
            Err(Dropped::Own)
        );
        let epoch_ms = PRESENCE_EPOCH_MS;
        let slack = u64::from(PRESENCE_EPOCH_SLACK) * epoch_ms;
        let old = presence_from(10, NOW - slack - epoch_ms, &[1]);
        assert_eq!(s.accept(&old, NOW), Err(Dropped::Stale));
        let ahead = presence_from(11, NOW + slack + epoch_ms, &[1]);
        assert_eq!(s.accept(&ahead, NOW), Err(Dropped::Future));
        // Within the slack either way: fine.
        assert!(s.accept(&presence_from(12, NOW - slack, &[1]), NOW).is_ok());
        assert!(s.accept(&presence_from(13, NOW + slack, &[1]), NOW).is_ok());
        let mut short = presence_from(14, NOW, &[1, 1]);
        short.pop();
        assert_eq!(s.accept(&short, NOW), Err(Dropped::Malformed));
        let mut zero = presence_from(15, NOW, &[1]);
        zero[PRESENCE_HEADER_LEN - 1] = 0;
        assert_eq!(s.accept(&zero, NOW), Err(Dropped::Malformed));
        // A room announcement is not a presence announcement, nor the reverse.
        let room = seal(&key("r1"), &ann(1), [7; NONCE_LEN], NOW).unwrap();
        assert_eq!(s.accept(&room, NOW), Err(Dropped::Magic));
        let mut sieve = Sieve::new(key("r1"), [9; INSTANCE_LEN]);
        let long = presence_from(8, NOW, &[1, 2, 3]);
        assert_eq!(sieve.accept(&long, NOW), Err(Dropped::Magic));
        let c = s.counts();
        assert_eq!(
            (c.own, c.repeated, c.stale, c.future, c.malformed, c.magic),
            (2, 1, 1, 1, 2, 1)
        );
    }

    #[test]
    fn our_own_conversations_calls_are_ours_and_only_the_newest_are_kept() {
        let mut s = PresenceSieve::new(vec![pkey(1)]);
        s.own([7; PRESENCE_ID_LEN]);
        s.own_call([20; PRESENCE_ID_LEN]);
        // The call's echo carries the contact's tag, yet it is ours.
        assert_eq!(
            s.accept(&presence_from(20, NOW, &[1]), NOW),
            Err(Dropped::Own)
        );
        for id in 21..21 + MAX_OWN_CALLS as u8 {
            s.own_call([id; PRESENCE_ID_LEN]);
        }
        s.own_call([21; PRESENCE_ID_LEN]);
        assert_eq!(s.calls.len(), MAX_OWN_CALLS);
        assert_eq!(
            s.accept(&presence_from(21 + MAX_OWN_CALLS as u8 - 1, NOW, &[1]), NOW),
            Err(Dropped::Own)
        );
        // The oldest call id was let go: the contact's call under it rings.
        assert_eq!(
            s.accept(&presence_from(20, NOW, &[1]), NOW).unwrap().fresh,
            vec![0]
        );
    }

    #[test]
    fn seal_presence_refuses_no_tags_and_too_many() {
        let p = |n: usize| Presence {
            id: [1; PRESENCE_ID_LEN],
            epoch: 1,
            tags: vec![[0; PRESENCE_TAG_LEN]; n],
        };
        assert!(matches!(seal_presence(&p(0)), Err(SealError::TagCount(0))));
        assert!(matches!(
            seal_presence(&p(MAX_PRESENCE_TAGS + 1)),
            Err(SealError::TagCount(_))
        ));
        let full = seal_presence(&p(MAX_PRESENCE_TAGS)).unwrap();
        assert_eq!(full.len(), MAX_PRESENCE_DATAGRAM);
        const { assert!(MAX_PRESENCE_DATAGRAM <= MAX_DATAGRAM) };
        assert_eq!(open_presence(&full, 60_000).unwrap(), p(MAX_PRESENCE_TAGS));
    }

    #[test]
    fn presence_evaluation_is_rate_limited_then_refills() {
        let mut s = PresenceSieve::new(vec![pkey(1)]);
        for i in 0..PRESENCE_RATE {
            let d = presence_from(u8::try_from(i).unwrap(), NOW, &[2]);
            assert_eq!(s.accept(&d, NOW), Err(Dropped::Mac));
        }
        let more = presence_from(200, NOW, &[1]);
        assert_eq!(s.accept(&more, NOW), Err(Dropped::Busy));
        // Not remembered as seen: once the bucket refills it is evaluated.
        assert_eq!(s.accept(&more, NOW + 100).unwrap().fresh, vec![0]);
    }

    #[test]
    fn presence_state_stays_bounded() {
        let mut s = PresenceSieve::new(vec![pkey(1)]);
        let mut now = NOW;
        for i in 0..(MAX_SEEN as u32 + 100) {
            now += 50; // 20 a second: within the rate
            let id = {
                let mut id = [0u8; PRESENCE_ID_LEN];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id
            };
            let epoch = presence_epoch(now);
            let d = seal_presence(&Presence {
                id,
                epoch,
                tags: vec![presence_tag(&pkey(1), &id, epoch)],
            })
            .unwrap();
            assert!(s.accept(&d, now).is_ok(), "{i}");
            assert!(s.expected.len() <= PRESENCE_CACHE);
            assert!(s.seen.len() <= MAX_SEEN);
            assert!(s.recognised.len() <= MAX_SEEN);
        }
    }

    #[test]
    fn presence_key_debug_is_redacted() {
        assert_eq!(format!("{:?}", pkey(1)), "PresenceKey(<redacted>)");
    }
}
