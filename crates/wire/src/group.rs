//! The replicated log of a group room (docs/protocol.md §17), with no I/O: signed
//! messages that carry their author, a per-author sequence number and a vector
//! clock; a log that delivers each message once, only after everything it depends
//! on (causal order); summaries that say what a member has, so a peer can send what
//! it lacks, other authors' messages included; and one deterministic order of the
//! whole history that every member computes alike.

use std::collections::{BTreeMap, HashMap, HashSet};

use dhke::{Identity, IdentityKey};
use serde::{Deserialize, Serialize};

use crate::peer::{Signature64, MAX_CHAT_TEXT};

/// Most authors a clock (and a summary) may name: members come and go, so this
/// is well above the member cap of a room.
pub const MAX_AUTHORS: usize = 64;
/// Messages held back because something they depend on has not arrived yet.
pub const MAX_PENDING: usize = 4096;
/// Messages a member keeps to hand to others (and a newcomer gets at most).
pub const BACKLOG: usize = 1000;

/// What an author signs: everything but the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupBody {
    /// The room's tag: a message belongs to one room.
    pub room: [u8; 32],
    /// The author's identity key.
    pub author: [u8; 32],
    /// 1, 2, 3 … per author.
    pub seq: u64,
    /// For every other author whose messages the author had delivered when it
    /// wrote this one: (author, highest seq delivered). Sorted by key, no
    /// duplicates, never the author itself.
    pub clock: Vec<([u8; 32], u64)>,
    /// The author's clock when it wrote it (its claim; not used for ordering).
    pub sent_at_ms: u64,
    pub text: String,
}

/// A message as it travels: the body and the author's signature of
/// `"p2pchat/v2/group-msg" || encode(body)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMsg {
    pub body: GroupBody,
    pub signature: Signature64,
}

/// What a member has: the highest seq it delivered from each author.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub have: Vec<([u8; 32], u64)>,
}

/// The answer to a [`Summary`]: what the asker lacks, oldest first, and the
/// `floor` below which the sender no longer keeps messages (the backlog bound):
/// the asker counts those as seen, so what it gets is deliverable.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Catchup {
    pub floor: Vec<([u8; 32], u64)>,
    pub msgs: Vec<GroupMsg>,
}

/// One member of a roster: the mediator's member number, the identity key our
/// confirmed link proved, and the name it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub member: u32,
    pub identity: [u8; 32],
    pub name: String,
}

/// Who a member is linked with (and itself, first), so two members can see
/// whether the mediator told them different things (docs/protocol.md §19.4).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Roster {
    pub members: Vec<RosterEntry>,
}

/// Why a message was refused. Each names a bad member (or a forwarder of a bad
/// message): the caller disconnects whoever sent it and tells the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the message is for another room")]
    OtherRoom,
    #[error("the author's signature does not verify (forged or altered)")]
    BadSignature,
    #[error("impossible causal context: {0}")]
    BadClock(&'static str),
    #[error("the text is {0} bytes, over the limit")]
    TooLong(usize),
    #[error("two different messages with the same author and sequence number")]
    Equivocation,
    #[error("too many messages waiting for what they depend on")]
    TooManyPending,
    #[error("the message cannot be encoded")]
    Encoding,
}

/// SHA-256 of a message's signed bytes ([`signed_bytes`]) and its signature: one
/// message, exactly.
fn digest(signed: &[u8], signature: &Signature64) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(signed);
    h.update(signature.0);
    h.finalize().into()
}

/// `"p2pchat/v2/group-msg" || encode(body)`: the bytes an author signs.
pub fn signed_bytes(body: &GroupBody) -> Result<Vec<u8>, GroupError> {
    let mut out = b"p2pchat/v2/group-msg".to_vec();
    crate::encode_into(body, &mut out).map_err(|_| GroupError::Encoding)?;
    Ok(out)
}

impl GroupMsg {
    /// Signs `body` as `identity` (the body's `author` must be its key).
    pub fn sign(body: GroupBody, identity: &Identity) -> Result<GroupMsg, GroupError> {
        let signature = Signature64(identity.sign(&signed_bytes(&body)?));
        Ok(GroupMsg { body, signature })
    }

    /// Every check a receiver makes before the message may enter a log.
    pub fn verify(&self, room: &[u8; 32]) -> Result<(), GroupError> {
        self.verify_signed(room, &signed_bytes(&self.body)?)
    }

    /// [`GroupMsg::verify`] with the body's [`signed_bytes`] already encoded.
    fn verify_signed(&self, room: &[u8; 32], signed: &[u8]) -> Result<(), GroupError> {
        let b = &self.body;
        if &b.room != room {
            return Err(GroupError::OtherRoom);
        }
        if b.text.len() > MAX_CHAT_TEXT {
            return Err(GroupError::TooLong(b.text.len()));
        }
        if b.seq == 0 {
            return Err(GroupError::BadClock("sequence numbers start at 1"));
        }
        if b.clock.len() > MAX_AUTHORS {
            return Err(GroupError::BadClock("too many authors"));
        }
        if b.clock.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(GroupError::BadClock("clock not sorted, or an author twice"));
        }
        if b.clock.iter().any(|(a, n)| a == &b.author || *n == 0) {
            return Err(GroupError::BadClock(
                "the author in its own clock, or a zero entry",
            ));
        }
        if signature_holds(&b.author, signed, &self.signature.0) {
            Ok(())
        } else {
            Err(GroupError::BadSignature)
        }
    }

    /// The position in the one history order all members share: (causal depth,
    /// author, seq), where depth = seq + the sum of the clock. If m1 happened
    /// before m2, m1's depth is smaller, so the order is causal.
    pub fn order_key(&self) -> (u64, [u8; 32], u64) {
        let depth = self
            .body
            .clock
            .iter()
            .fold(self.body.seq, |d, (_, n)| d.saturating_add(*n));
        (depth, self.body.author, self.body.seq)
    }
}

/// Whether `signature` is `author`'s Ed25519 signature of `signed`.
#[cfg(not(fuzzing))]
fn signature_holds(author: &[u8; 32], signed: &[u8], signature: &[u8; 64]) -> bool {
    IdentityKey(*author).verify(signed, signature).is_ok()
}

/// The same check in fuzz builds, remembered per (author, bytes, signature): the
/// `group_log` target replays a fixed pool of signed messages and their tampered
/// copies, and an instrumented curve25519 verification (about 0.4 ms) was 70% of
/// its time. Every triple is still verified for real the first time it is seen;
/// the memory is bounded (cleared when full). The stable corpus replay in
/// `cargo test` is built without `cfg(fuzzing)` and verifies every time.
#[cfg(fuzzing)]
fn signature_holds(author: &[u8; 32], signed: &[u8], signature: &[u8; 64]) -> bool {
    use std::cell::RefCell;
    type Seen = HashMap<([u8; 32], Vec<u8>, [u8; 64]), bool>;
    const MAX_REMEMBERED: usize = 1 << 16;
    thread_local! {
        static SEEN: RefCell<Seen> = RefCell::new(HashMap::new());
    }
    let key = (*author, signed.to_vec(), *signature);
    if let Some(known) = SEEN.with(|seen| seen.borrow().get(&key).copied()) {
        return known;
    }
    let holds = IdentityKey(*author).verify(signed, signature).is_ok();
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        seen.insert(key, holds);
    });
    holds
}

/// One member's copy of the room's log.
#[derive(Debug)]
pub struct GroupLog {
    room: [u8; 32],
    /// Highest seq delivered per author.
    have: HashMap<[u8; 32], u64>,
    /// Delivered messages, kept for others (the last [`BACKLOG`] by order).
    kept: BTreeMap<(u64, [u8; 32], u64), GroupMsg>,
    /// The digest of every delivered (author, seq), to spot equivocation and to
    /// drop a repeat without verifying its signature again.
    seen: HashMap<([u8; 32], u64), [u8; 32]>,
    /// Verified messages waiting for their dependencies, with their digests.
    pending: HashMap<([u8; 32], u64), (GroupMsg, [u8; 32])>,
    /// Per author, the highest seq pruned from `kept`.
    floor: HashMap<[u8; 32], u64>,
}

impl GroupLog {
    /// An empty log for the room with tag `room`.
    pub fn new(room: [u8; 32]) -> GroupLog {
        GroupLog {
            room,
            have: HashMap::new(),
            kept: BTreeMap::new(),
            seen: HashMap::new(),
            pending: HashMap::new(),
            floor: HashMap::new(),
        }
    }

    /// Writes our next message: seq one past our last, clock = everything we
    /// delivered from others. It is delivered to our own log at once.
    pub fn write(
        &mut self,
        identity: &Identity,
        text: String,
        sent_at_ms: u64,
    ) -> Result<GroupMsg, GroupError> {
        let author = identity.public().0;
        let mut clock: Vec<([u8; 32], u64)> = self
            .have
            .iter()
            .filter(|(a, _)| **a != author)
            .map(|(a, n)| (*a, *n))
            .collect();
        clock.sort();
        clock.truncate(MAX_AUTHORS);
        let body = GroupBody {
            room: self.room,
            author,
            seq: self.have.get(&author).copied().unwrap_or(0) + 1,
            clock,
            sent_at_ms,
            text,
        };
        let msg = GroupMsg::sign(body, identity)?;
        let digest = digest(&signed_bytes(&msg.body)?, &msg.signature);
        self.deliver(msg.clone(), digest);
        Ok(msg)
    }

    /// Takes in a message from the network. Returns the messages that became
    /// deliverable, in causal order (empty for a duplicate or one still waiting).
    /// An exact repeat of a message we hold is dropped before its signature is
    /// checked again (repeats are common: every peer forwards what others lack).
    pub fn receive(&mut self, msg: GroupMsg) -> Result<Vec<GroupMsg>, GroupError> {
        let id = (msg.body.author, msg.body.seq);
        // Encoded once: for the digest, the signature and the digest kept.
        let signed = signed_bytes(&msg.body)?;
        let digest = digest(&signed, &msg.signature);
        let held = self
            .seen
            .get(&id)
            .or_else(|| self.pending.get(&id).map(|(_, d)| d))
            .copied();
        if held == Some(digest) {
            return Ok(Vec::new());
        }
        msg.verify_signed(&self.room, &signed)?;
        if held.is_some() {
            // Same author and seq, another valid signature: the author signed two.
            return Err(GroupError::Equivocation);
        }
        let had = self.have.get(&id.0).copied().unwrap_or(0);
        if id.1 <= had {
            // Below a catch-up floor we accepted: it is history we skipped.
            return Ok(Vec::new());
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(GroupError::TooManyPending);
        }
        self.pending.insert(id, (msg, digest));
        Ok(self.drain())
    }

    fn ready(&self, msg: &GroupMsg) -> bool {
        let b = &msg.body;
        self.have.get(&b.author).copied().unwrap_or(0) + 1 == b.seq
            && b.clock
                .iter()
                .all(|(a, n)| self.have.get(a).copied().unwrap_or(0) >= *n)
    }

    /// Delivers every pending message whose dependencies are met, repeatedly.
    fn drain(&mut self) -> Vec<GroupMsg> {
        let mut out = Vec::new();
        loop {
            let mut ready: Vec<([u8; 32], u64)> = self
                .pending
                .iter()
                .filter(|(_, (m, _))| self.ready(m))
                .map(|(id, _)| *id)
                .collect();
            if ready.is_empty() {
                return out;
            }
            // Deliver in the shared order, so equal inputs give equal outputs.
            ready.sort_by_key(|id| self.pending[id].0.order_key());
            for id in ready {
                if let Some((msg, digest)) = self.pending.remove(&id) {
                    if self.ready(&msg) {
                        self.deliver(msg.clone(), digest);
                        out.push(msg);
                    } else {
                        self.pending.insert(id, (msg, digest));
                    }
                }
            }
        }
    }

    fn deliver(&mut self, msg: GroupMsg, digest: [u8; 32]) {
        let b = &msg.body;
        self.have.insert(b.author, b.seq);
        self.seen.insert((b.author, b.seq), digest);
        self.kept.insert(msg.order_key(), msg);
        while self.kept.len() > BACKLOG {
            if let Some((_, old)) = self.kept.pop_first() {
                let f = self.floor.entry(old.body.author).or_insert(0);
                *f = (*f).max(old.body.seq);
                self.seen.remove(&(old.body.author, old.body.seq));
            }
        }
    }

    /// What we have, for a peer to compare.
    pub fn summary(&self) -> Summary {
        let mut have: Vec<([u8; 32], u64)> = self.have.iter().map(|(a, n)| (*a, *n)).collect();
        have.sort();
        Summary { have }
    }

    /// What a peer with `theirs` lacks: the kept messages past its summary, in
    /// the shared order (so they arrive deliverable), at most [`BACKLOG`], and
    /// our floor where it is above theirs.
    pub fn missing_for(&self, theirs: &Summary) -> Catchup {
        let known: HashMap<&[u8; 32], u64> = theirs
            .have
            .iter()
            .take(MAX_AUTHORS)
            .map(|(a, n)| (a, *n))
            .collect();
        let lacks = |a: &[u8; 32]| known.get(a).copied().unwrap_or(0);
        let mut floor: Vec<([u8; 32], u64)> = self
            .floor
            .iter()
            .filter(|(a, n)| lacks(a) < **n)
            .map(|(a, n)| (*a, *n))
            .collect();
        floor.sort();
        let msgs = self
            .kept
            .values()
            .filter(|m| lacks(&m.body.author) < m.body.seq)
            .take(BACKLOG)
            .cloned()
            .collect();
        Catchup { floor, msgs }
    }

    /// Takes in a [`Catchup`]: raises what we count as seen to its floor (those
    /// messages are gone from every backlog that answered), then takes each
    /// message. Returns what became deliverable, in causal order. Stops at the
    /// first bad message: its sender is to be disconnected.
    pub fn receive_catchup(&mut self, catchup: Catchup) -> Result<Vec<GroupMsg>, GroupError> {
        for (author, n) in catchup.floor.into_iter().take(MAX_AUTHORS) {
            let have = self.have.entry(author).or_insert(0);
            *have = (*have).max(n);
        }
        // A message waiting at or below its author's new floor can never be
        // delivered (its place is history we skip): it must not hold a slot.
        let have = &self.have;
        self.pending
            .retain(|(author, seq), _| *seq > have.get(author).copied().unwrap_or(0));
        let mut out = self.drain();
        for msg in catchup.msgs.into_iter().take(BACKLOG) {
            out.extend(self.receive(msg)?);
        }
        Ok(out)
    }

    /// The kept history in the order every member shares.
    pub fn history(&self) -> impl Iterator<Item = &GroupMsg> {
        self.kept.values()
    }

    /// How many messages wait for something they depend on.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The authors we have delivered messages from.
    pub fn authors(&self) -> HashSet<[u8; 32]> {
        self.have.keys().copied().collect()
    }
}
