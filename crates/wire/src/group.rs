//! The replicated log of a conversation (docs/protocol.md §17), with no I/O:
//! signed messages that carry the conversation id, their author, a per-author
//! sequence number and a vector clock; a log that delivers each message once,
//! only after everything it depends on (causal order); summaries that say what a
//! member has, so a peer can send what it lacks, other authors' messages
//! included; and one deterministic order of the whole history that every member
//! computes alike.
//!
//! What a hostile member can do to a log is bounded here (§17.2, v3): a message
//! signed for another conversation is refused; what waits for its dependencies
//! is bounded per author and per link ("source"), so whoever fills its share
//! pays and nobody else; a catch-up floor never touches our own counter and
//! never exceeds what the sender's summary shows or what the messages at hand
//! need; every counter addition is checked; and two signatures by one author on
//! one (author, seq) are a proof against that author, never the forwarder.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use dhke::{Identity, IdentityKey};
use serde::{Deserialize, Serialize};

use crate::peer::{Signature64, MAX_CHAT_TEXT};

/// Most authors a clock (and a summary, and a floor) may name: members come and
/// go, so this is well above the member cap of a room.
pub const MAX_AUTHORS: usize = 64;
/// Messages a member keeps to hand to others (and a newcomer gets at most).
pub const BACKLOG: usize = 1000;
/// Messages of one author that may wait for what they depend on, and their bytes
/// ([`GroupMsg::weight`]). An author past its share has its further waiting
/// messages dropped (they come again by catch-up once they can be delivered).
pub const AUTHOR_PENDING: usize = 256;
pub const AUTHOR_PENDING_BYTES: usize = 1 << 20;
/// Waiting messages one source (a link) may have brought, and their bytes. A
/// link past its share is refused ([`GroupError::SourceOverShare`]): an honest
/// member sends what it has delivered, in the shared order, so what it brings
/// is deliverable or soon is.
pub const SOURCE_PENDING: usize = 512;
pub const SOURCE_PENDING_BYTES: usize = 2 << 20;
/// Authors proven to equivocate that a log remembers (each needs two valid
/// signatures by that author on messages of this conversation).
pub const MAX_BANNED: usize = 1024;

/// (author, seq): one message of the log.
type MsgId = ([u8; 32], u64);
/// (causal depth, author, seq): a message's place in the shared order.
type OrderKey = (u64, [u8; 32], u64);

/// The id of a source that is not a link: our own history store.
pub const OWN_STORE: u64 = 0;

/// What an author signs: everything but the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupBody {
    /// The conversation's id ([`dhke::schedule::conversation_id`]): a message
    /// belongs to one conversation, whatever tag the mediator matched on.
    pub conversation: [u8; 32],
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
/// `"p2pchat/v3/group-msg" || encode(body)`.
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

/// The answer to a [`Summary`]: the sender's own summary (`have`), the `floor`
/// below which the sender no longer keeps messages (the backlog bound; never
/// above `have`), what the asker lacks, oldest first, and whether more follows
/// once the asker asks again (`more`: answers are paced, §17.4).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Catchup {
    pub have: Vec<([u8; 32], u64)>,
    pub floor: Vec<([u8; 32], u64)>,
    pub msgs: Vec<GroupMsg>,
    pub more: bool,
}

/// Two messages one author signed with one (author, seq) and different
/// contents: whoever holds this can check that the author equivocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EquivocationProof {
    pub first: GroupMsg,
    pub second: GroupMsg,
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

/// Why a message, a catch-up or a proof was refused. Every variant but
/// [`GroupError::Equivocation`] blames whoever sent it ([`GroupError::blames_sender`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    #[error("a message of another conversation")]
    OtherConversation,
    #[error("the author's signature does not verify (forged or altered)")]
    BadSignature,
    #[error("impossible causal context: {0}")]
    BadClock(&'static str),
    #[error("the text is {0} bytes, over the limit")]
    TooLong(usize),
    /// The author signed two messages with one (author, seq): the proof is
    /// against the author, not the one who forwarded the second.
    #[error("the author signed two different messages with one sequence number")]
    Equivocation(Box<EquivocationProof>),
    #[error("too many messages waiting for what they depend on")]
    SourceOverShare,
    #[error("a bad catch-up floor: {0}")]
    BadFloor(&'static str),
    #[error("not a proof of equivocation: {0}")]
    BadProof(&'static str),
    #[error("our own sequence numbers are used up")]
    Exhausted,
    #[error("the message cannot be encoded")]
    Encoding,
}

impl GroupError {
    /// Whether the link that sent the refused input is to be cut off for it.
    pub fn blames_sender(&self) -> bool {
        !matches!(self, GroupError::Equivocation(_) | GroupError::Exhausted)
    }
}

/// What taking something in did: the messages that became deliverable, in
/// causal order, and the equivocations it proved (their authors are now
/// refused; forward each proof).
#[derive(Debug, Default)]
pub struct Outcome {
    pub delivered: Vec<GroupMsg>,
    pub proofs: Vec<EquivocationProof>,
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

/// `"p2pchat/v3/group-msg" || encode(body)`: the bytes an author signs.
pub fn signed_bytes(body: &GroupBody) -> Result<Vec<u8>, GroupError> {
    let mut out = dhke::schedule::GROUP_MSG_LABEL.to_vec();
    crate::encode_into(body, &mut out).map_err(|_| GroupError::Encoding)?;
    Ok(out)
}

impl GroupMsg {
    /// Signs `body` as `identity` (the body's `author` must be its key).
    pub fn sign(body: GroupBody, identity: &Identity) -> Result<GroupMsg, GroupError> {
        let signature = Signature64(identity.sign(&signed_bytes(&body)?));
        Ok(GroupMsg { body, signature })
    }

    /// Every check a receiver makes before the message may enter the log of
    /// conversation `conversation`.
    pub fn verify(&self, conversation: &[u8; 32]) -> Result<(), GroupError> {
        self.verify_signed(conversation, &signed_bytes(&self.body)?)
    }

    /// [`GroupMsg::verify`] with the body's [`signed_bytes`] already encoded.
    fn verify_signed(&self, conversation: &[u8; 32], signed: &[u8]) -> Result<(), GroupError> {
        let b = &self.body;
        if &b.conversation != conversation {
            return Err(GroupError::OtherConversation);
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
        if self.depth().is_none() {
            return Err(GroupError::BadClock("the causal depth overflows"));
        }
        if signature_holds(&b.author, signed, &self.signature.0) {
            Ok(())
        } else {
            Err(GroupError::BadSignature)
        }
    }

    /// seq + the sum of the clock, if it fits in a u64 ([`GroupMsg::verify`]
    /// refuses a message where it does not).
    fn depth(&self) -> Option<u64> {
        self.body
            .clock
            .iter()
            .try_fold(self.body.seq, |d, (_, n)| d.checked_add(*n))
    }

    /// The position in the one history order all members share: (causal depth,
    /// author, seq), where depth = seq + the sum of the clock. If m1 happened
    /// before m2, m1's depth is smaller, so the order is causal.
    pub fn order_key(&self) -> (u64, [u8; 32], u64) {
        (
            self.depth().unwrap_or(u64::MAX),
            self.body.author,
            self.body.seq,
        )
    }

    /// What a waiting message counts against its author's and its source's
    /// byte shares: its text and clock plus a fixed overhead for the rest.
    pub fn weight(&self) -> usize {
        160 + self.body.text.len() + self.body.clock.len() * 40
    }
}

impl EquivocationProof {
    /// Checks the proof for conversation `conversation`; returns the author it
    /// proves against.
    pub fn verify(&self, conversation: &[u8; 32]) -> Result<[u8; 32], GroupError> {
        let (a, b) = (&self.first.body, &self.second.body);
        if a.author != b.author || a.seq != b.seq {
            return Err(GroupError::BadProof("two different (author, seq)"));
        }
        let (sa, sb) = (signed_bytes(a)?, signed_bytes(b)?);
        if digest(&sa, &self.first.signature) == digest(&sb, &self.second.signature) {
            return Err(GroupError::BadProof("the same message twice"));
        }
        for (msg, signed) in [(&self.first, &sa), (&self.second, &sb)] {
            msg.verify_signed(conversation, signed)
                .map_err(|_| GroupError::BadProof("a message that does not verify"))?;
        }
        Ok(a.author)
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

/// A verified message waiting for its dependencies.
#[derive(Debug)]
struct Waiting {
    msg: GroupMsg,
    digest: [u8; 32],
    source: u64,
    weight: usize,
}

/// Count and bytes of what waits, per author or per source.
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    count: usize,
    bytes: usize,
}

/// One member's copy of a conversation's log.
#[derive(Debug)]
pub struct GroupLog {
    conversation: [u8; 32],
    /// Our own identity key: no floor ever moves its counter.
    own: [u8; 32],
    /// Highest seq delivered per author.
    have: HashMap<[u8; 32], u64>,
    /// Delivered messages, kept for others (the last [`BACKLOG`] by order).
    kept: BTreeMap<(u64, [u8; 32], u64), GroupMsg>,
    /// The digest and order key of every kept (author, seq), to spot
    /// equivocation, to find the message it contradicts, and to drop a repeat
    /// without verifying its signature again.
    seen: HashMap<MsgId, ([u8; 32], OrderKey)>,
    /// Verified messages waiting for their dependencies.
    pending: HashMap<([u8; 32], u64), Waiting>,
    by_author: HashMap<[u8; 32], Load>,
    by_source: HashMap<u64, Load>,
    /// Per author, the highest seq pruned from `kept`.
    floor: HashMap<[u8; 32], u64>,
    /// Authors proven to equivocate, oldest first (at most [`MAX_BANNED`]).
    banned: HashSet<[u8; 32]>,
    banned_order: VecDeque<[u8; 32]>,
}

impl GroupLog {
    /// An empty log of conversation `conversation`, kept by the member whose
    /// identity key is `own`.
    pub fn new(conversation: [u8; 32], own: [u8; 32]) -> GroupLog {
        GroupLog {
            conversation,
            own,
            have: HashMap::new(),
            kept: BTreeMap::new(),
            seen: HashMap::new(),
            pending: HashMap::new(),
            by_author: HashMap::new(),
            by_source: HashMap::new(),
            floor: HashMap::new(),
            banned: HashSet::new(),
            banned_order: VecDeque::new(),
        }
    }

    /// The conversation this log belongs to.
    pub fn conversation(&self) -> &[u8; 32] {
        &self.conversation
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
            .filter(|(a, n)| **a != author && **n > 0)
            .map(|(a, n)| (*a, *n))
            .collect();
        clock.sort();
        clock.truncate(MAX_AUTHORS);
        let seq = self
            .have
            .get(&author)
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(GroupError::Exhausted)?;
        let body = GroupBody {
            conversation: self.conversation,
            author,
            seq,
            clock,
            sent_at_ms,
            text,
        };
        let msg = GroupMsg::sign(body, identity)?;
        if msg.depth().is_none() {
            return Err(GroupError::Exhausted);
        }
        let digest = digest(&signed_bytes(&msg.body)?, &msg.signature);
        self.deliver(msg.clone(), digest);
        Ok(msg)
    }

    /// Takes in a message that link `source` brought. Returns what became
    /// deliverable, in causal order (empty for a duplicate, a message still
    /// waiting, or one dropped because its author is refused or over its share),
    /// and the equivocation it proved, if any.
    pub fn receive(&mut self, msg: GroupMsg, source: u64) -> Result<Outcome, GroupError> {
        let mut out = Outcome::default();
        if let Some(checked) = self.check(msg, &mut out)? {
            out.delivered = self.take(checked, source)?;
        }
        Ok(out)
    }

    /// The checks before a message may wait or be delivered: an exact repeat of
    /// one we hold is dropped before its signature is checked again (repeats are
    /// common: every peer forwards what others lack); a message by a refused
    /// author is dropped; one that contradicts a message we hold is a proof.
    fn check(&mut self, msg: GroupMsg, out: &mut Outcome) -> Result<Option<Checked>, GroupError> {
        let id = (msg.body.author, msg.body.seq);
        // Encoded once: for the digest, the signature and the digest kept.
        let signed = signed_bytes(&msg.body)?;
        let digest = digest(&signed, &msg.signature);
        let held = self
            .seen
            .get(&id)
            .map(|(d, _)| *d)
            .or_else(|| self.pending.get(&id).map(|w| w.digest));
        if held == Some(digest) {
            return Ok(None);
        }
        msg.verify_signed(&self.conversation, &signed)?;
        if self.banned.contains(&id.0) {
            return Ok(None);
        }
        if held.is_some() {
            let first = self.held(&id).cloned().ok_or(GroupError::Encoding)?;
            let proof = EquivocationProof { first, second: msg };
            self.ban(id.0);
            out.proofs.push(proof);
            return Ok(None);
        }
        let had = self.have.get(&id.0).copied().unwrap_or(0);
        if id.1 <= had {
            // Below a catch-up floor we accepted: it is history we skipped.
            return Ok(None);
        }
        Ok(Some(Checked { msg, digest }))
    }

    /// The message we hold for (author, seq): delivered (kept) or waiting.
    fn held(&self, id: &([u8; 32], u64)) -> Option<&GroupMsg> {
        self.seen
            .get(id)
            .and_then(|(_, key)| self.kept.get(key))
            .or_else(|| self.pending.get(id).map(|w| &w.msg))
    }

    /// Delivers a checked message if it can be, with what it makes deliverable,
    /// or holds it. A deliverable message never waits, so no share can keep it
    /// out; and only a delivered message can make waiting ones deliverable, so
    /// one that must wait costs no scan of the waiting room.
    fn take(&mut self, checked: Checked, source: u64) -> Result<Vec<GroupMsg>, GroupError> {
        // A repeat (held already) or history a floor skipped since its check.
        let id = (checked.msg.body.author, checked.msg.body.seq);
        if id.1 <= self.have.get(&id.0).copied().unwrap_or(0) || self.pending.contains_key(&id) {
            return Ok(Vec::new());
        }
        if !self.ready(&checked.msg) {
            self.hold(checked, source)?;
            return Ok(Vec::new());
        }
        let Checked { msg, digest } = checked;
        self.deliver(msg.clone(), digest);
        let mut out = vec![msg];
        out.extend(self.drain());
        Ok(out)
    }

    /// Puts a checked message in the waiting room, within its author's and its
    /// source's shares.
    fn hold(&mut self, checked: Checked, source: u64) -> Result<(), GroupError> {
        let Checked { msg, digest } = checked;
        let weight = msg.weight();
        let author = msg.body.author;
        let s = self.by_source.get(&source).copied().unwrap_or_default();
        if source != OWN_STORE
            && (s.count >= SOURCE_PENDING || s.bytes.saturating_add(weight) > SOURCE_PENDING_BYTES)
        {
            return Err(GroupError::SourceOverShare);
        }
        let a = self.by_author.get(&author).copied().unwrap_or_default();
        if a.count >= AUTHOR_PENDING || a.bytes.saturating_add(weight) > AUTHOR_PENDING_BYTES {
            // The author filled its own share: this one is dropped, and comes
            // again by catch-up once what it waits for is here.
            return Ok(());
        }
        add_load(&mut self.by_source, source, weight);
        add_load(&mut self.by_author, author, weight);
        self.pending.insert(
            (author, msg.body.seq),
            Waiting {
                msg,
                digest,
                source,
                weight,
            },
        );
        Ok(())
    }

    /// Removes a waiting message and its load.
    fn unhold(&mut self, id: &([u8; 32], u64)) -> Option<Waiting> {
        let w = self.pending.remove(id)?;
        sub_load(&mut self.by_source, w.source, w.weight);
        sub_load(&mut self.by_author, id.0, w.weight);
        Some(w)
    }

    fn ready(&self, msg: &GroupMsg) -> bool {
        let b = &msg.body;
        self.have
            .get(&b.author)
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            == Some(b.seq)
            && b.clock
                .iter()
                .all(|(a, n)| self.have.get(a).copied().unwrap_or(0) >= *n)
    }

    /// Delivers every waiting message whose dependencies are met, repeatedly.
    fn drain(&mut self) -> Vec<GroupMsg> {
        let mut out = Vec::new();
        loop {
            // Only an author's next seq can be deliverable: one look per
            // author with anything waiting, not a scan of the waiting room.
            let mut ready: Vec<(OrderKey, MsgId)> = self
                .by_author
                .keys()
                .filter_map(|a| {
                    let id = (*a, self.have.get(a).copied().unwrap_or(0).checked_add(1)?);
                    let w = self.pending.get(&id)?;
                    self.ready(&w.msg).then(|| (w.msg.order_key(), id))
                })
                .collect();
            if ready.is_empty() {
                return out;
            }
            // Deliver in the shared order, so equal inputs give equal outputs.
            ready.sort();
            for (_, id) in ready {
                let still_ready = self.pending.get(&id).is_some_and(|w| self.ready(&w.msg));
                if still_ready {
                    if let Some(w) = self.unhold(&id) {
                        self.deliver(w.msg.clone(), w.digest);
                        out.push(w.msg);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, msg: GroupMsg, digest: [u8; 32]) {
        let b = &msg.body;
        let key = msg.order_key();
        self.have.insert(b.author, b.seq);
        self.seen.insert((b.author, b.seq), (digest, key));
        self.kept.insert(key, msg);
        while self.kept.len() > BACKLOG {
            if let Some((_, old)) = self.kept.pop_first() {
                let f = self.floor.entry(old.body.author).or_insert(0);
                *f = (*f).max(old.body.seq);
                self.seen.remove(&(old.body.author, old.body.seq));
            }
        }
    }

    /// Refuses `author` from now on: what of it waits is dropped.
    fn ban(&mut self, author: [u8; 32]) {
        let waiting: Vec<([u8; 32], u64)> = self
            .pending
            .keys()
            .filter(|(a, _)| *a == author)
            .copied()
            .collect();
        for id in waiting {
            self.unhold(&id);
        }
        if self.banned.insert(author) {
            self.banned_order.push_back(author);
            if self.banned_order.len() > MAX_BANNED {
                if let Some(old) = self.banned_order.pop_front() {
                    self.banned.remove(&old);
                }
            }
        }
    }

    /// Takes in a proof a peer forwarded. `Ok(Some(author))` when it is new to
    /// us (forward it on); `Ok(None)` when we refused the author already; an
    /// error blames the sender (the proof does not hold).
    pub fn receive_proof(
        &mut self,
        proof: &EquivocationProof,
    ) -> Result<Option<[u8; 32]>, GroupError> {
        let author = proof.verify(&self.conversation)?;
        if author == self.own {
            // Nobody can prove that we signed two: it would take our key. Two
            // valid signatures would mean the key is out; say nothing of it here.
            return Err(GroupError::BadProof("a proof against ourselves"));
        }
        if self.banned.contains(&author) {
            return Ok(None);
        }
        self.ban(author);
        Ok(Some(author))
    }

    /// Whether `author` is refused for equivocating.
    pub fn is_banned(&self, author: &[u8; 32]) -> bool {
        self.banned.contains(author)
    }

    /// The message delivered (shown) for (author, seq), if we still keep it.
    pub fn delivered(&self, author: &[u8; 32], seq: u64) -> Option<&GroupMsg> {
        self.seen
            .get(&(*author, seq))
            .and_then(|(_, key)| self.kept.get(key))
    }

    /// A link went away: what it brought that still waits is dropped (another
    /// link brings it again by catch-up), so a member that comes back under a
    /// new link cannot pile up shares.
    pub fn drop_source(&mut self, source: u64) {
        let brought: Vec<([u8; 32], u64)> = self
            .pending
            .iter()
            .filter(|(_, w)| w.source == source)
            .map(|(id, _)| *id)
            .collect();
        for id in brought {
            self.unhold(&id);
        }
        self.by_source.remove(&source);
    }

    /// What we have, for a peer to compare.
    pub fn summary(&self) -> Summary {
        let mut have: Vec<([u8; 32], u64)> = self.have.iter().map(|(a, n)| (*a, *n)).collect();
        have.sort();
        have.truncate(MAX_AUTHORS);
        Summary { have }
    }

    /// What a peer with `theirs` lacks: the kept messages past its summary, in
    /// the shared order (so they arrive deliverable), as many as fit in
    /// `max_bytes` of [`GroupMsg::weight`] (at least one), with `more` set when
    /// some were left for the next ask; our summary, and our floor where it is
    /// above theirs.
    pub fn missing_for(&self, theirs: &Summary, max_bytes: usize) -> Catchup {
        let known: HashMap<&[u8; 32], u64> = theirs
            .have
            .iter()
            .take(MAX_AUTHORS)
            .map(|(a, n)| (a, *n))
            .collect();
        let lacks = |a: &[u8; 32]| known.get(a).copied().unwrap_or(0);
        let have = self.summary().have;
        let in_have: HashSet<&[u8; 32]> = have.iter().map(|(a, _)| a).collect();
        let mut floor: Vec<([u8; 32], u64)> = self
            .floor
            .iter()
            .filter(|(a, n)| lacks(a) < **n && in_have.contains(a))
            .map(|(a, n)| (*a, *n))
            .collect();
        floor.sort();
        floor.truncate(MAX_AUTHORS);
        let mut msgs = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        for m in self
            .kept
            .values()
            .filter(|m| lacks(&m.body.author) < m.body.seq)
        {
            if !msgs.is_empty() && bytes.saturating_add(m.weight()) > max_bytes {
                more = true;
                break;
            }
            bytes = bytes.saturating_add(m.weight());
            msgs.push(m.clone());
        }
        Catchup {
            have,
            floor,
            msgs,
            more,
        }
    }

    /// Takes in a [`Catchup`] from link `source`. Its messages are checked
    /// first; then each floor entry raises what we count as seen (those messages
    /// are gone from the sender's backlog), except that a floor never moves our
    /// own counter, never exceeds what the sender's own summary shows (that is
    /// an error: the sender lied), and never goes past what the messages at
    /// hand (these and those waiting) need to be delivered. Stops at the first
    /// message that blames the sender.
    pub fn receive_catchup(
        &mut self,
        catchup: Catchup,
        source: u64,
    ) -> Result<Outcome, GroupError> {
        if catchup.have.len() > MAX_AUTHORS || catchup.floor.len() > MAX_AUTHORS {
            return Err(GroupError::BadFloor("too many authors"));
        }
        let theirs: HashMap<[u8; 32], u64> = catchup.have.iter().copied().collect();
        for (author, n) in &catchup.floor {
            if *n > theirs.get(author).copied().unwrap_or(0) {
                return Err(GroupError::BadFloor(
                    "a floor above what the sender's own summary shows",
                ));
            }
        }
        let mut out = Outcome::default();
        let mut checked: Vec<Checked> = Vec::new();
        // What this catch-up brought so far counts as held: the same message
        // again is a repeat, another one with its (author, seq) a proof.
        let mut here: HashMap<MsgId, [u8; 32]> = HashMap::new();
        for msg in catchup.msgs.into_iter().take(BACKLOG) {
            let Some(c) = self.check(msg, &mut out)? else {
                continue;
            };
            let id = (c.msg.body.author, c.msg.body.seq);
            match here.get(&id) {
                None => {
                    here.insert(id, c.digest);
                    checked.push(c);
                }
                Some(d) if *d == c.digest => {}
                Some(_) => {
                    let at = checked
                        .iter()
                        .position(|e| (e.msg.body.author, e.msg.body.seq) == id);
                    if let Some(first) = at.map(|k| checked.remove(k).msg) {
                        out.proofs.push(EquivocationProof {
                            first,
                            second: c.msg,
                        });
                    }
                    self.ban(id.0);
                }
            }
        }
        // A proof refuses its author in the rest of the catch-up too.
        checked.retain(|c| !self.banned.contains(&c.msg.body.author));
        let own = self.own;
        let floor: Vec<([u8; 32], u64)> = catchup
            .floor
            .into_iter()
            .filter(|(author, _)| *author != own)
            .collect();
        self.raise_floor(&floor, &checked);
        // One at a time: an honest catch-up comes in the shared order, so each
        // message is delivered as it comes and the waiting room stays empty.
        out.delivered = self.drain();
        for c in checked {
            let delivered = self.take(c, source)?;
            out.delivered.extend(delivered);
        }
        Ok(out)
    }

    /// Raises what we count as delivered per author to `floor`, but only as far
    /// as the messages `incoming` and those waiting depend on; drops what waits
    /// at or below the new counts (its place is history we skip).
    fn raise_floor(&mut self, floor: &[([u8; 32], u64)], incoming: &[Checked]) {
        let mut needed: HashMap<[u8; 32], u64> = HashMap::new();
        let waiting = self.pending.values().map(|w| &w.msg);
        for m in incoming.iter().map(|c| &c.msg).chain(waiting) {
            let b = &m.body;
            let own = needed.entry(b.author).or_insert(0);
            *own = (*own).max(b.seq.saturating_sub(1));
            for (a, n) in &b.clock {
                let e = needed.entry(*a).or_insert(0);
                *e = (*e).max(*n);
            }
        }
        for &(author, n) in floor {
            let n = n.min(needed.get(&author).copied().unwrap_or(0));
            // Only a raise: an entry that moves nothing adds no author.
            if n > self.have.get(&author).copied().unwrap_or(0) {
                self.have.insert(author, n);
            }
        }
        let stale: Vec<([u8; 32], u64)> = self
            .pending
            .keys()
            .filter(|(author, seq)| *seq <= self.have.get(author).copied().unwrap_or(0))
            .copied()
            .collect();
        for id in stale {
            self.unhold(&id);
        }
    }

    /// Restores a window of our own stored history (oldest first in the shared
    /// order, at most [`BACKLOG`]): what it depends on and lacks is older than
    /// all of it, so it counts as seen; our own counter continues past
    /// `own_last` (the highest seq of ours ever stored) and past the window.
    /// Messages that fail their checks now are dropped with what follows them;
    /// the others send those again.
    pub fn restore(&mut self, window: Vec<GroupMsg>, own_last: u64) -> Outcome {
        let mut out = Outcome::default();
        let mut checked = Vec::new();
        for msg in window.into_iter().take(BACKLOG) {
            match self.check(msg, &mut out) {
                Ok(Some(c)) => checked.push(c),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        let mut floor: HashMap<[u8; 32], u64> = HashMap::new();
        for c in &checked {
            let b = &c.msg.body;
            let f = floor.entry(b.author).or_insert(u64::MAX);
            *f = (*f).min(b.seq.saturating_sub(1));
        }
        let authors: HashSet<[u8; 32]> = floor.keys().copied().collect();
        for c in &checked {
            for (a, n) in &c.msg.body.clock {
                if !authors.contains(a) {
                    let f = floor.entry(*a).or_insert(0);
                    *f = (*f).max(*n);
                }
            }
        }
        for (author, n) in floor {
            let have = self.have.entry(author).or_insert(0);
            *have = (*have).max(n);
        }
        out.delivered = self.drain();
        for c in checked {
            // Our own store has no source share to exceed.
            if let Ok(delivered) = self.take(c, OWN_STORE) {
                out.delivered.extend(delivered);
            }
        }
        let own_key = self.own;
        let own = self.have.entry(own_key).or_insert(0);
        *own = (*own).max(own_last);
        out
    }

    /// The kept history in the order every member shares.
    pub fn history(&self) -> impl Iterator<Item = &GroupMsg> {
        self.kept.values()
    }

    /// How many messages wait for something they depend on.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Count and bytes of what link `source` brought that still waits.
    pub fn pending_from(&self, source: u64) -> (usize, usize) {
        let l = self.by_source.get(&source).copied().unwrap_or_default();
        (l.count, l.bytes)
    }

    /// The authors we have delivered messages from.
    pub fn authors(&self) -> HashSet<[u8; 32]> {
        self.have.keys().copied().collect()
    }
}

/// A message that passed [`GroupLog::check`], with its digest.
#[derive(Debug)]
struct Checked {
    msg: GroupMsg,
    digest: [u8; 32],
}

fn add_load<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Load>, key: K, weight: usize) {
    let l = map.entry(key).or_default();
    l.count = l.count.saturating_add(1);
    l.bytes = l.bytes.saturating_add(weight);
}

fn sub_load<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Load>, key: K, weight: usize) {
    if let Some(l) = map.get_mut(&key) {
        l.count = l.count.saturating_sub(1);
        l.bytes = l.bytes.saturating_sub(weight);
        if l.count == 0 {
            map.remove(&key);
        }
    }
}
