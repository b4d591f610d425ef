//! `group_log`: the conversation log of docs/protocol.md §17 (v3) under an
//! arbitrary delivery schedule and a hostile member's inputs. Four pools of
//! signed messages are made once per process, with fixed keys: genuine ones
//! (three authors writing concurrently for eight rounds), a conflicting version
//! of each (same author, seq and clock, another text: equivocation), and
//! messages of four fresh authors that start at seq 2 or later (so they wait
//! for ever unless a floor lets them in), two with short texts and two with
//! texts of the full 16 KiB (to reach the count and the byte shares). The input
//! picks a window of one to three rounds in play, then a schedule over them:
//! deliveries over one of four links, duplicates, copies with one field
//! tampered, conflicting versions, floods of fresh messages, catch-ups with
//! hostile floors (for our own key up to u64::MAX, above the sender's own
//! summary, beyond what the messages at hand need), forwarded proofs, dropped
//! links, our own writes, summaries, and messages decoded from the input
//! itself. A window that starts past round 0 begins with a catch-up whose floor
//! (§17.4) stands for the rounds before it, so deep messages are reached
//! without verifying their history.
//!
//! Every operation is also applied to a model written from the spec (the rules
//! in `wire::group`'s documentation and issue 22, not read back from the log),
//! and the log must agree with it: what is delivered, refused, proven, waiting
//! and summed up. Invariants: nothing tampered or undecodable is delivered,
//! only pool messages (and our own) verify; each (author, seq) is delivered at
//! most once, in causal order, and every delivery of an input that is taken is
//! reported (a catch-up refused halfway keeps what it delivered before the
//! refusal, as `receive_catchup` documents: see fuzz/README.md); a floor never
//! moves our own counter (our next write has the next seq, whatever the floor),
//! a floor above the sender's own summary is an error that blames the sender
//! and changes nothing, and a floor never skips more than the messages at hand
//! need; what waits stays within each author's and each link's share, a link
//! over its share (and only it) gets `SourceOverShare`, an author over its share
//! has its waiting messages dropped without blaming anyone, and `drop_source`
//! frees a link's share; a second version of a held (author, seq), from
//! whichever link and even inside one catch-up, gives exactly one proof that
//! verifies, with the shown version first, bans the author (what of it waits is
//! dropped, later messages are dropped) and is never an error; another log takes
//! the proof once, and the author's own log refuses it; the summary and the
//! (paced) answer to any summary are what the model delivered says; and once
//! every message in play has arrived nothing genuine waits (unless an author was
//! banned), after dropping every link nothing waits at all, and the history is
//! the delivered messages in §17.3's order (causal depth, author, seq).
//!
//! Speed: fuzz builds of `wire` remember each verified signature, so a pool
//! message costs a real Ed25519 verification once per process; an execution
//! costs its hashing and bookkeeping (the log scans everything waiting on each
//! delivery), and our own writes (a signature each, at most [`MAX_WRITES`]).
//! Floods are bounded per input ([`MAX_FLOOD`]) and large ones are explicit:
//! filling a link's share takes 513 short messages or 127 long ones.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use dhke::Identity;
use wire::group::{
    Catchup, EquivocationProof, GroupBody, GroupError, GroupLog, GroupMsg, Summary, AUTHOR_PENDING,
    AUTHOR_PENDING_BYTES, BACKLOG, MAX_AUTHORS, SOURCE_PENDING, SOURCE_PENDING_BYTES,
};
use wire::peer::MAX_CHAT_TEXT;

const CONVERSATION: [u8; 32] = [0x47; 32];
const AUTHORS: usize = 3;
const ROUNDS: usize = 8;

/// The fresh authors: key seed, first seq, how many messages, text length, and
/// whether their clock names genuine author 1 at seq 1 (so a floor can make
/// them deliverable only once that message is in).
const FRESH: [(u8, u64, usize, usize, bool); 4] = [
    (0x61, 2, AUTHOR_PENDING + 4, 0, false),
    (0x62, 4, AUTHOR_PENDING + 4, 0, true),
    (0x63, 2, 66, MAX_CHAT_TEXT, false),
    (0x64, 3, 66, MAX_CHAT_TEXT, true),
];

/// Our own key's seed: the log under test is kept by this member.
const ME: [u8; 32] = [0x4D; 32];

/// The links messages come in on; [`FINAL`] brings everything at the end.
const SOURCES: [u64; 4] = [1, 2, 3, 4];
const FINAL: u64 = 5;

/// Every message signed once per process.
struct Pools {
    /// `AUTHORS * ROUNDS` genuine messages, round by round: in each round every
    /// author writes before hearing the others' messages of that round
    /// (concurrency). So the messages of round r depend exactly on everything
    /// of the rounds before it, and every prefix of whole rounds is causally
    /// closed.
    genuine: Vec<GroupMsg>,
    /// For each genuine message, another one its author signed with the same
    /// seq and clock and another text.
    conflicting: Vec<GroupMsg>,
    /// Per fresh author ([`FRESH`]), its messages in seq order.
    fresh: Vec<Vec<GroupMsg>>,
    /// Our own identity and key, and every key an input can name in a floor:
    /// the genuine authors, the fresh ones, ours.
    me: Identity,
    own: [u8; 32],
    keys: Vec<[u8; 32]>,
}

fn pools() -> &'static Pools {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    POOLS.get_or_init(|| {
        let ids: Vec<Identity> = (1..=AUTHORS as u8)
            .map(|i| Identity::from_seed(&[i; 32]))
            .collect();
        let mut logs: Vec<GroupLog> = ids
            .iter()
            .map(|id| GroupLog::new(CONVERSATION, id.public().0))
            .collect();
        let mut genuine = Vec::new();
        let mut conflicting = Vec::new();
        for round in 0..ROUNDS as u64 {
            let mut wrote = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let msg = logs[i]
                    .write(id, format!("r{round} a{i}"), round)
                    .expect("write");
                let other = GroupBody {
                    text: format!("r{round} a{i}, the other version"),
                    ..msg.body.clone()
                };
                conflicting.push(GroupMsg::sign(other, id).expect("sign"));
                wrote.push((i, msg));
            }
            for (from, msg) in &wrote {
                for (to, log) in logs.iter_mut().enumerate() {
                    if to != *from {
                        log.receive(msg.clone(), 1).expect("genuine");
                    }
                }
                genuine.push(msg.clone());
            }
        }
        let mut keys: Vec<[u8; 32]> = ids.iter().map(|id| id.public().0).collect();
        let fresh = FRESH
            .iter()
            .map(|&(seed, first, count, text_len, clock)| {
                let id = Identity::from_seed(&[seed; 32]);
                keys.push(id.public().0);
                (0..count as u64)
                    .map(|k| {
                        let seq = first + k;
                        let mut text = format!("fresh {seed:x} {seq} ");
                        let pad = text_len.saturating_sub(text.len());
                        text.extend(std::iter::repeat('w').take(pad));
                        let body = GroupBody {
                            conversation: CONVERSATION,
                            author: id.public().0,
                            seq,
                            clock: if clock {
                                vec![(keys[1], 1)]
                            } else {
                                Vec::new()
                            },
                            sent_at_ms: seq,
                            text,
                        };
                        GroupMsg::sign(body, &id).expect("sign")
                    })
                    .collect()
            })
            .collect();
        let me = Identity::from_seed(&ME);
        let own = me.public().0;
        keys.push(own);
        Pools {
            genuine,
            conflicting,
            fresh,
            me,
            own,
            keys,
        }
    })
}

/// The round of genuine message `index` (the pool is in round order).
fn round_of(index: usize) -> usize {
    index / AUTHORS
}

type Id = ([u8; 32], u64);

fn id_of(msg: &GroupMsg) -> Id {
    (msg.body.author, msg.body.seq)
}

/// §17.3: the one history order, written from the spec rather than taken from
/// the log (depth = seq + the sum of the clock, then author, then seq).
fn history_key(msg: &GroupMsg) -> (u64, [u8; 32], u64) {
    let b = &msg.body;
    let depth = b
        .clock
        .iter()
        .try_fold(b.seq, |d, (_, n)| d.checked_add(*n))
        .expect("pool messages have small depths");
    (depth, b.author, b.seq)
}

fn in_history_order<'a>(msgs: impl IntoIterator<Item = &'a GroupMsg>) -> Vec<&'a GroupMsg> {
    let mut sorted: Vec<&GroupMsg> = msgs.into_iter().collect();
    sorted.sort_by_cached_key(|m| history_key(m));
    sorted
}

/// Every message's dependencies are in `base` or came before it in `delivered`.
fn assert_causal(base: &HashMap<[u8; 32], u64>, delivered: &[GroupMsg]) {
    let mut have = base.clone();
    for m in delivered {
        let b = &m.body;
        assert_eq!(
            have.get(&b.author).copied().unwrap_or(0) + 1,
            b.seq,
            "per-author order"
        );
        for (a, n) in &b.clock {
            assert!(have.get(a).copied().unwrap_or(0) >= *n, "dependency later");
        }
        have.insert(b.author, b.seq);
    }
}

/// One field of a genuine message changed, picked by `how`: every such copy is
/// refused (a signature byte, the text, the sequence number, the clock, the
/// sending time, the author, the conversation).
fn tampered(msg: &GroupMsg, how: u8) -> GroupMsg {
    let mut m = msg.clone();
    let at = usize::from(how >> 3);
    let b = &mut m.body;
    match how & 7 {
        0 | 1 => m.signature.0[at % 64] ^= 1 << (how & 1),
        2 => b.text.push(char::from(b'!' + (how >> 3))),
        3 => b.seq ^= 1 << (at % 4),
        4 => {
            let entry = at % b.clock.len().max(1);
            match b.clock.get_mut(entry) {
                Some(e) if at & 1 == 0 => e.1 += 1,
                Some(_) => {
                    b.clock.remove(entry);
                }
                None => b.clock.push(([0x11; 32], 1)),
            }
        }
        5 => b.sent_at_ms ^= 1 << (at % 32),
        6 => b.author[at % 32] ^= 1,
        _ => b.conversation[at % 32] ^= 1,
    }
    m
}

/// What the spec says an input must do.
#[derive(Debug, Default)]
struct Expected {
    delivered: Vec<GroupMsg>,
    proofs: Vec<EquivocationProof>,
    /// What we counted as delivered per author just before the first delivery
    /// of this input (after a catch-up's floor): the delivered messages are
    /// causal from there.
    base: Option<HashMap<[u8; 32], u64>>,
}

/// Why the spec says an input is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    SourceOverShare,
    BadFloor,
    BadProof,
}

/// Count and bytes of what waits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Load {
    count: usize,
    bytes: usize,
}

/// What a message is to a log, before it may wait or be delivered.
enum Class<'a> {
    /// Ignored: the same message is held, its author is banned, or it is at
    /// or below what we count as delivered (history we skipped).
    Ignored,
    /// Another message with its (author, seq) is held: a proof.
    Conflict(&'a GroupMsg),
    New,
}

/// The log as the spec describes it.
struct Model {
    own: [u8; 32],
    /// Highest seq delivered, or skipped below an accepted floor, per author
    /// (no zero entries: "what a member has").
    have: HashMap<[u8; 32], u64>,
    delivered: HashMap<Id, GroupMsg>,
    waiting: HashMap<Id, (GroupMsg, u64)>,
    by_author: HashMap<[u8; 32], Load>,
    by_source: HashMap<u64, Load>,
    banned: HashSet<[u8; 32]>,
}

impl Model {
    fn new(own: [u8; 32]) -> Model {
        Model {
            own,
            have: HashMap::new(),
            delivered: HashMap::new(),
            waiting: HashMap::new(),
            by_author: HashMap::new(),
            by_source: HashMap::new(),
            banned: HashSet::new(),
        }
    }

    fn count(&self, author: &[u8; 32]) -> u64 {
        self.have.get(author).copied().unwrap_or(0)
    }

    fn held(&self, id: &Id) -> Option<&GroupMsg> {
        self.delivered
            .get(id)
            .or_else(|| self.waiting.get(id).map(|(m, _)| m))
    }

    /// §17.2: the author's previous seq is delivered, and so is every clock entry.
    fn ready(&self, msg: &GroupMsg) -> bool {
        let b = &msg.body;
        self.count(&b.author) + 1 == b.seq && b.clock.iter().all(|(a, n)| self.count(a) >= *n)
    }

    fn source_load(&self, source: u64) -> Load {
        self.by_source.get(&source).copied().unwrap_or_default()
    }

    fn author_load(&self, author: &[u8; 32]) -> Load {
        self.by_author.get(author).copied().unwrap_or_default()
    }

    /// Classifies `msg` against what the log holds and `earlier`, the messages
    /// taken from the same catch-up before it (they count as held too).
    fn classify<'a>(&'a self, msg: &GroupMsg, earlier: &'a [GroupMsg]) -> Class<'a> {
        let id = id_of(msg);
        let held = self
            .held(&id)
            .or_else(|| earlier.iter().find(|m| id_of(m) == id));
        if held == Some(msg) || self.banned.contains(&id.0) {
            return Class::Ignored;
        }
        if let Some(first) = held {
            return Class::Conflict(first);
        }
        if id.1 <= self.count(&id.0) {
            return Class::Ignored;
        }
        Class::New
    }

    fn deliver(&mut self, msg: GroupMsg, out: &mut Expected) {
        if out.base.is_none() {
            out.base = Some(self.have.clone());
        }
        self.have.insert(msg.body.author, msg.body.seq);
        self.delivered.insert(id_of(&msg), msg.clone());
        out.delivered.push(msg);
    }

    fn unhold(&mut self, id: &Id) {
        if let Some((msg, source)) = self.waiting.remove(id) {
            let w = msg.weight();
            for load in [
                self.by_source.entry(source).or_default(),
                self.by_author.entry(id.0).or_default(),
            ] {
                load.count -= 1;
                load.bytes -= w;
            }
        }
    }

    /// Delivers whatever waiting messages became deliverable, until none does.
    /// Only an author's next seq can be deliverable, so each round looks at one
    /// message per author that has any waiting (the log scans them all).
    fn drain(&mut self, out: &mut Expected) {
        loop {
            let mut ready: Vec<GroupMsg> = self
                .by_author
                .iter()
                .filter(|(_, load)| load.count > 0)
                .filter_map(|(a, _)| Some(self.waiting.get(&(*a, self.count(a).checked_add(1)?))))
                .flatten()
                .filter(|(m, _)| self.ready(m))
                .map(|(m, _)| m.clone())
                .collect();
            if ready.is_empty() {
                return;
            }
            ready.sort_by_key(history_key);
            for msg in ready {
                self.unhold(&id_of(&msg));
                self.deliver(msg, out);
            }
        }
    }

    fn ban(&mut self, author: [u8; 32]) {
        let of: Vec<Id> = self
            .waiting
            .keys()
            .filter(|(a, _)| *a == author)
            .copied()
            .collect();
        for id in of {
            self.unhold(&id);
        }
        self.banned.insert(author);
    }

    /// A new message: delivered with what it makes deliverable, or waiting
    /// within its link's share (over it: refused) and its author's (over it:
    /// dropped, nobody blamed).
    fn take(&mut self, msg: GroupMsg, source: u64, out: &mut Expected) -> Result<(), Refusal> {
        if self.ready(&msg) {
            self.deliver(msg, out);
            self.drain(out);
            return Ok(());
        }
        let w = msg.weight();
        let s = self.source_load(source);
        if s.count >= SOURCE_PENDING || s.bytes + w > SOURCE_PENDING_BYTES {
            return Err(Refusal::SourceOverShare);
        }
        let a = self.author_load(&msg.body.author);
        if a.count >= AUTHOR_PENDING || a.bytes + w > AUTHOR_PENDING_BYTES {
            return Ok(());
        }
        for load in [
            self.by_source.entry(source).or_default(),
            self.by_author.entry(msg.body.author).or_default(),
        ] {
            load.count += 1;
            load.bytes += w;
        }
        self.waiting.insert(id_of(&msg), (msg, source));
        Ok(())
    }

    fn receive(&mut self, msg: &GroupMsg, source: u64) -> Result<Expected, Refusal> {
        let mut out = Expected::default();
        match self.classify(msg, &[]) {
            Class::Ignored => {}
            Class::Conflict(first) => {
                let proof = EquivocationProof {
                    first: first.clone(),
                    second: msg.clone(),
                };
                self.ban(msg.body.author);
                out.proofs.push(proof);
            }
            Class::New => self.take(msg.clone(), source, &mut out)?,
        }
        Ok(out)
    }

    fn receive_catchup(&mut self, catchup: &Catchup, source: u64) -> Result<Expected, Refusal> {
        if catchup.have.len() > MAX_AUTHORS || catchup.floor.len() > MAX_AUTHORS {
            return Err(Refusal::BadFloor);
        }
        let theirs: HashMap<[u8; 32], u64> = catchup.have.iter().copied().collect();
        if catchup
            .floor
            .iter()
            .any(|(a, n)| *n > theirs.get(a).copied().unwrap_or(0))
        {
            return Err(Refusal::BadFloor);
        }
        let mut out = Expected::default();
        let mut incoming: Vec<GroupMsg> = Vec::new();
        for msg in catchup.msgs.iter().take(BACKLOG) {
            match self.classify(msg, &incoming) {
                Class::Ignored => {}
                Class::Conflict(first) => {
                    let proof = EquivocationProof {
                        first: first.clone(),
                        second: msg.clone(),
                    };
                    let author = msg.body.author;
                    self.ban(author);
                    incoming.retain(|m| m.body.author != author);
                    out.proofs.push(proof);
                }
                Class::New => incoming.push(msg.clone()),
            }
        }
        // A floor stands for history the sender no longer keeps: it lets in
        // what the messages at hand (these and those waiting) need, no more,
        // and never touches our own counter.
        let mut needed: HashMap<[u8; 32], u64> = HashMap::new();
        for m in incoming.iter().chain(self.waiting.values().map(|(m, _)| m)) {
            let b = &m.body;
            let own = needed.entry(b.author).or_default();
            *own = (*own).max(b.seq - 1);
            for (a, n) in &b.clock {
                let e = needed.entry(*a).or_default();
                *e = (*e).max(*n);
            }
        }
        for (author, n) in &catchup.floor {
            if *author == self.own {
                continue;
            }
            let n = (*n).min(needed.get(author).copied().unwrap_or(0));
            if n > self.count(author) {
                self.have.insert(*author, n);
            }
        }
        let stale: Vec<Id> = self
            .waiting
            .keys()
            .filter(|(a, seq)| *seq <= self.count(a))
            .copied()
            .collect();
        for id in stale {
            self.unhold(&id);
        }
        self.drain(&mut out);
        for msg in incoming {
            if msg.body.seq <= self.count(&msg.body.author) {
                // Below the floor just taken: history we skip.
                continue;
            }
            // A catch-up stops at the first message that blames the sender;
            // what it delivered or proved before stays (and is not reported:
            // see fuzz/README.md).
            self.take(msg, source, &mut out)?;
        }
        Ok(out)
    }

    /// A proof a peer forwarded: `Ok(true)` when it bans the author now.
    fn receive_proof(&mut self, proof: &EquivocationProof) -> Result<bool, Refusal> {
        let (a, b) = (&proof.first, &proof.second);
        if id_of(a) != id_of(b) || a == b || a.body.author == self.own {
            return Err(Refusal::BadProof);
        }
        if self.banned.contains(&a.body.author) {
            return Ok(false);
        }
        self.ban(a.body.author);
        Ok(true)
    }

    fn drop_source(&mut self, source: u64) {
        let brought: Vec<Id> = self
            .waiting
            .iter()
            .filter(|(_, (_, s))| *s == source)
            .map(|(id, _)| *id)
            .collect();
        for id in brought {
            self.unhold(&id);
        }
    }

    /// The summary the spec asks for: what we count as delivered, per author.
    fn summary(&self) -> Vec<([u8; 32], u64)> {
        let mut have: Vec<([u8; 32], u64)> = self.have.iter().map(|(a, n)| (*a, *n)).collect();
        have.sort();
        have.truncate(MAX_AUTHORS);
        have
    }
}

/// Operations read from one input, each counted with the waiting room it
/// runs against: interleavings need a few dozen operations, a full share one
/// flood and a dozen after it; more only makes an execution slower.
const MAX_WORK: usize = 128;
/// Input bytes read at most (messages off the wire take a few hundred).
const MAX_INPUT: usize = 768;
/// Rounds in play at most.
const WINDOW: usize = 3;
/// Tampered copies tried per input (each costs a signature check); later
/// tamper operations are skipped. Where in a schedule a copy comes matters (a
/// copy of a pending message, of a delivered one), how many do not.
const MAX_TAMPERED: usize = 8;
/// Our own messages written per input (each costs a signature).
const MAX_WRITES: usize = 3;
/// Fresh messages sent per input, short and long texts: enough to fill a
/// link's count share (two authors' shares) and its byte share, and some.
const MAX_FLOOD: [usize; 2] = [SOURCE_PENDING + 88, 140];

// Nothing is ever pruned from a log here, so its floor (what it no longer
// keeps) stays empty and its history is everything delivered.
const _: () = assert!(AUTHORS * ROUNDS + 2 * (AUTHOR_PENDING + 4) + 2 * 66 + MAX_WRITES < BACKLOG);

/// The log under test, the model and what an input has done so far.
struct Run<'p> {
    pools: &'p Pools,
    log: GroupLog,
    model: Model,
    /// Our own messages written so far.
    written: Vec<GroupMsg>,
}

impl Run<'_> {
    /// [`Run::same`], then the state.
    fn compare(
        &self,
        what: &str,
        got: Result<wire::group::Outcome, GroupError>,
        expected: Result<Expected, Refusal>,
    ) {
        self.same(what, got, expected);
        self.check_state(what);
    }

    /// The log's answer to something the spec expects `expected` of: the same
    /// refusal, or the same deliveries (in causal order) and proofs.
    fn same(
        &self,
        what: &str,
        got: Result<wire::group::Outcome, GroupError>,
        expected: Result<Expected, Refusal>,
    ) {
        match (got, expected) {
            (Ok(got), Ok(expected)) => {
                assert_causal(&expected.base.unwrap_or_default(), &got.delivered);
                assert_eq!(
                    in_history_order(&got.delivered),
                    in_history_order(&expected.delivered),
                    "{what}: delivered"
                );
                assert_eq!(got.proofs, expected.proofs, "{what}: proofs");
                for proof in &got.proofs {
                    self.check_proof(proof);
                }
            }
            (Err(e), Err(refusal)) => {
                assert!(e.blames_sender(), "{what}: {e} blames the sender");
                let same = match refusal {
                    Refusal::SourceOverShare => e == GroupError::SourceOverShare,
                    Refusal::BadFloor => matches!(e, GroupError::BadFloor(_)),
                    Refusal::BadProof => matches!(e, GroupError::BadProof(_)),
                };
                assert!(same, "{what}: refused with {e:?}, not {refusal:?}");
            }
            (got, expected) => panic!("{what}: the log says {got:?}, the spec {expected:?}"),
        }
    }

    /// A proof the log found: it holds against its author and nobody else,
    /// and another member's log takes it once (and the author's refuses it).
    fn check_proof(&self, proof: &EquivocationProof) {
        let author = proof.first.body.author;
        assert_eq!(proof.verify(&CONVERSATION), Ok(author), "the proof holds");
        assert!(self.log.is_banned(&author), "the author is banned");
        let mut other = GroupLog::new(CONVERSATION, self.pools.own);
        assert_eq!(
            other.receive_proof(proof),
            Ok(Some(author)),
            "new to another"
        );
        assert_eq!(other.receive_proof(proof), Ok(None), "taken once");
        assert!(other.is_banned(&author));
        let mut its_own = GroupLog::new(CONVERSATION, author);
        let e = its_own
            .receive_proof(proof)
            .expect_err("a proof against ourselves");
        assert!(matches!(e, GroupError::BadProof(_)));
    }

    /// After every operation: the log waits for, holds, bans and sums up what
    /// the model does, within every share.
    fn check_state(&self, what: &str) {
        assert_eq!(
            self.log.pending(),
            self.model.waiting.len(),
            "{what}: waiting"
        );
        for source in SOURCES.into_iter().chain([FINAL]) {
            let (count, bytes) = self.log.pending_from(source);
            let l = self.model.source_load(source);
            assert_eq!((count, bytes), (l.count, l.bytes), "{what}: link {source}");
            assert!(count <= SOURCE_PENDING && bytes <= SOURCE_PENDING_BYTES);
        }
        for load in self.model.by_author.values() {
            assert!(load.count <= AUTHOR_PENDING && load.bytes <= AUTHOR_PENDING_BYTES);
        }
        assert_eq!(
            self.log.history().count(),
            self.model.delivered.len(),
            "{what}: something delivered unreported"
        );
        for key in &self.pools.keys {
            assert_eq!(
                self.log.is_banned(key),
                self.model.banned.contains(key),
                "{what}: banned"
            );
        }
        assert_eq!(
            self.log.summary().have,
            self.model.summary(),
            "{what}: summary"
        );
    }

    fn receive(&mut self, what: &str, msg: &GroupMsg, source: u64) {
        let expected = self.model.receive(msg, source);
        let got = self.log.receive(msg.clone(), source);
        self.compare(what, got, expected);
    }

    fn receive_catchup(&mut self, what: &str, catchup: Catchup, source: u64) {
        let expected = self.model.receive_catchup(&catchup, source);
        let got = self.log.receive_catchup(catchup, source);
        self.compare(what, got, expected);
    }

    /// A message that is not in a pool: refused (only a signature by the
    /// author verifies, and we sign only what we write), blaming the sender.
    fn refused(&mut self, what: &str, msg: GroupMsg, source: u64) {
        let e = self.log.receive(msg, source).expect_err(what);
        assert!(e.blames_sender(), "{what}: {e}");
        self.check_state(what);
    }

    /// Our next message: seq one past our last (whatever floors said of our
    /// key), clock = everything we count as delivered from others.
    fn write(&mut self) {
        let n = self.written.len() as u64;
        let msg = self
            .log
            .write(&self.pools.me, format!("me {n}"), n)
            .expect("our own counter is far from used up");
        let b = &msg.body;
        let own = self.pools.own;
        assert_eq!(b.seq, self.model.count(&own) + 1, "our next seq");
        assert_eq!((b.author, b.conversation), (own, CONVERSATION));
        let clock: Vec<([u8; 32], u64)> = self
            .model
            .summary()
            .into_iter()
            .filter(|(a, _)| *a != own)
            .collect();
        assert_eq!(b.clock, clock, "our clock");
        assert_eq!(self.log.delivered(&own, b.seq), Some(&msg));
        let mut ignored = Expected::default();
        self.model.deliver(msg.clone(), &mut ignored);
        self.written.push(msg);
        self.check_state("write");
    }

    /// The pool message equal to `msg`, if any (our own written ones included).
    fn known(&self, msg: &GroupMsg) -> bool {
        let p = self.pools;
        p.genuine
            .iter()
            .chain(&p.conflicting)
            .chain(p.fresh.iter().flatten())
            .chain(&self.written)
            .any(|m| m == msg)
    }
}

/// A floor value byte: small values as they are, the top 64 at the top of the
/// range (up to u64::MAX).
fn floor_value(v: u8) -> u64 {
    if v < 0xC0 {
        u64::from(v)
    } else {
        u64::MAX - u64::from(0xFF - v)
    }
}

/// The harness function of the `group_log` target.
///
/// Input: a byte choosing the window, `1 + (b >> 3) % 3` rounds starting at
/// round `b & 7` (moved back to fit in the pool); a byte choosing the message
/// `in_play[b % len]` that the opening catch-up (when the window starts past
/// round 0) carries with its floor; then operations, each an op byte and its
/// arguments (`len` is the number of messages in play):
/// - `0x00..=0x7F`: deliver message `(op & 31) % len` over link `1 + (op >> 5)`;
/// - `0x80..=0x9F`, `how`: deliver a copy of message `(op & 31) % len` with one
///   field tampered (see [`tampered`]), up to [`MAX_TAMPERED`] per input;
/// - `0xA0..=0xAF`: deliver the conflicting version of message `(op & 15) % len`
///   over link 1;
/// - `0xB0..=0xBF`, `k`: flood: the next `1 + (k & 7)` messages of fresh
///   author `op & 3` (one for a long-text author; cycling through them), or
///   for `k = 0xFF` the rest of them, over link `1 + ((op >> 2) & 3)`, until
///   one is refused, up to [`MAX_FLOOD`] per input (large floods are rare and
///   explicit: they cost);
/// - `0xC0..=0xCF`, `spec`, `(spec >> 2) & 3` floor entries of three bytes
///   (key `% 8`: genuine, fresh, ours; value, see [`floor_value`]; `d`: the
///   sender's summary for that key is the value plus `d` when `d < 0x80`, minus
///   `d & 0x7F` otherwise, absent for `0xFF`), then `op & 15` message bytes
///   `m`: message `m % len` (`m < 0x80`), its conflicting version (`< 0xC0`),
///   or short-text fresh author `m & 1`'s message `(m >> 1) & 31`: a catch-up
///   over link `1 + (spec & 3)`;
/// - `0xD0..=0xD3`: drop link `1 + (op & 3)`;
/// - `0xD4..=0xD7`: write our next message, up to [`MAX_WRITES`] per input;
/// - `0xD8..=0xDB`, `k`: a forwarded proof about message `k % len`: `op & 3` is
///   0 (genuine, conflicting), 1 (conflicting, genuine), 2 (the genuine one
///   twice: no proof), 3 (two messages with different (author, seq));
/// - `0xDC..=0xEF`, four bytes: check the answer to the summary that has each
///   genuine author at `byte % 9`, paced at `128 * p` bytes (`p = 0xFF`: all);
/// - `0xF0..=0xFF`, a length byte, that many bytes: a message off the wire.
pub fn group_log(data: &[u8]) {
    let [window, opener, ref data @ ..] = *data else {
        return;
    };
    let data = &data[..data.len().min(MAX_INPUT)];
    let pools = pools();
    let msgs = &pools.genuine;
    let rounds = 1 + usize::from(window >> 3) % WINDOW;
    let first = usize::from(window & 7).min(ROUNDS - rounds);
    let span = first * AUTHORS..(first + rounds) * AUTHORS;
    let in_play = &msgs[span.clone()];
    let conflicting = &pools.conflicting[span];
    let len = in_play.len();
    let mut run = Run {
        pools,
        log: GroupLog::new(CONVERSATION, pools.own),
        model: Model::new(pools.own),
        written: Vec::new(),
    };
    if first > 0 {
        // The rounds before the window are history the sender no longer
        // keeps: its floor stands for them, and the message it carries needs
        // all of it.
        let floor: Vec<([u8; 32], u64)> = pools.keys[..AUTHORS]
            .iter()
            .map(|a| (*a, first as u64))
            .collect();
        let opening = Catchup {
            have: floor.clone(),
            floor,
            msgs: vec![in_play[usize::from(opener) % len].clone()],
            more: false,
        };
        run.receive_catchup("opening catch-up", opening, SOURCES[0]);
    }
    let mut tampers = 0;
    let mut flooded = [0; 2];
    let mut cursor = [0usize; FRESH.len()];
    let mut i = 0;
    let next = |i: &mut usize| {
        let b = data.get(*i).copied().unwrap_or(0);
        *i += 1;
        b
    };
    // Work done so far: an operation costs one, plus one per 64 messages
    // waiting or delivered (the log scans what waits on each delivery, an
    // answer to a summary goes through the history).
    let mut work = 0;
    while i < data.len() && work < MAX_WORK {
        work += 1 + (run.model.waiting.len() + run.model.delivered.len()) / 64;
        let op = next(&mut i);
        match op {
            0x00..=0x7F => {
                let msg = &in_play[usize::from(op & 31) % len];
                run.receive("deliver", msg, 1 + u64::from(op >> 5));
            }
            0x80..=0x9F => {
                let how = next(&mut i);
                if tampers < MAX_TAMPERED {
                    tampers += 1;
                    let msg = tampered(&in_play[usize::from(op & 31) % len], how);
                    run.refused("a tampered copy", msg, 1);
                }
            }
            0xA0..=0xAF => {
                let msg = &conflicting[usize::from(op & 15) % len];
                run.receive("a conflicting version", msg, 1);
            }
            0xB0..=0xBF => {
                let author = usize::from(op & 3);
                let source = 1 + u64::from((op >> 2) & 3);
                let k = next(&mut i);
                let theirs = &pools.fresh[author];
                let long = usize::from(FRESH[author].3 > 0);
                let count = if k == 0xFF {
                    theirs.len() - cursor[author] % theirs.len()
                } else if long == 1 {
                    1
                } else {
                    1 + usize::from(k & 7)
                };
                for _ in 0..count.min(MAX_FLOOD[long] - flooded[long]) {
                    flooded[long] += 1;
                    let msg = &theirs[cursor[author] % theirs.len()];
                    cursor[author] += 1;
                    let expected = run.model.receive(msg, source);
                    let refused = expected.is_err();
                    let got = run.log.receive(msg.clone(), source);
                    run.same("flood", got, expected);
                    if refused {
                        break;
                    }
                }
                run.check_state("flood");
            }
            0xC0..=0xCF => {
                let spec = next(&mut i);
                let source = 1 + u64::from(spec & 3);
                let mut floor = Vec::new();
                let mut have: Vec<([u8; 32], u64)> = Vec::new();
                for _ in 0..(spec >> 2) & 3 {
                    let key = pools.keys[usize::from(next(&mut i)) % pools.keys.len()];
                    let value = floor_value(next(&mut i));
                    let d = next(&mut i);
                    floor.push((key, value));
                    let theirs = match d {
                        0xFF => continue,
                        0..=0x7F => value.saturating_add(u64::from(d)),
                        _ => value.saturating_sub(u64::from(d & 0x7F)),
                    };
                    // One entry per key in a summary: the highest named.
                    match have.iter_mut().find(|(a, _)| *a == key) {
                        Some(e) => e.1 = e.1.max(theirs),
                        None => have.push((key, theirs)),
                    }
                }
                have.sort();
                let carried = (0..op & 15)
                    .map(|_| {
                        let m = next(&mut i);
                        match m {
                            0x00..=0x7F => in_play[usize::from(m) % len].clone(),
                            0x80..=0xBF => conflicting[usize::from(m) % len].clone(),
                            _ => {
                                pools.fresh[usize::from(m & 1)][usize::from((m >> 1) & 31)].clone()
                            }
                        }
                    })
                    .collect();
                let catchup = Catchup {
                    have,
                    floor,
                    msgs: carried,
                    more: spec >> 7 == 1,
                };
                run.receive_catchup("catch-up", catchup, source);
            }
            0xD0..=0xD3 => {
                let source = 1 + u64::from(op & 3);
                run.log.drop_source(source);
                run.model.drop_source(source);
                assert_eq!(run.log.pending_from(source), (0, 0), "dropped");
                run.check_state("drop_source");
            }
            0xD4..=0xD7 => {
                if run.written.len() < MAX_WRITES {
                    run.write();
                }
            }
            0xD8..=0xDB => {
                let k = usize::from(next(&mut i)) % len;
                let (genuine, other) = (&in_play[k], &conflicting[k]);
                let proof = match op & 3 {
                    0 => (genuine, other),
                    1 => (other, genuine),
                    2 => (genuine, genuine),
                    _ => (genuine, &in_play[(k + 1) % len]),
                };
                let proof = EquivocationProof {
                    first: proof.0.clone(),
                    second: proof.1.clone(),
                };
                let expected = run.model.receive_proof(&proof);
                let got = run.log.receive_proof(&proof);
                match (got, expected) {
                    (Ok(got), Ok(new)) => {
                        assert_eq!(got, new.then_some(proof.first.body.author), "proof");
                    }
                    (Err(e), Err(_)) => {
                        assert!(matches!(e, GroupError::BadProof(_)) && e.blames_sender());
                    }
                    (got, expected) => panic!("proof: the log {got:?}, the spec {expected:?}"),
                }
                run.check_state("forwarded proof");
            }
            0xDC..=0xEF => {
                let theirs: Vec<([u8; 32], u64)> = pools.keys[..AUTHORS]
                    .iter()
                    .map(|a| (*a, u64::from(next(&mut i) % 9)))
                    .collect();
                let p = next(&mut i);
                let max_bytes = if p == 0xFF {
                    usize::MAX
                } else {
                    128 * usize::from(p)
                };
                let lacks: HashMap<_, _> = theirs.iter().copied().collect();
                let answer = run.log.missing_for(&Summary { have: theirs }, max_bytes);
                assert_eq!(answer.have, run.model.summary(), "the answer's summary");
                // Our floor is what we no longer keep (the backlog bound):
                // nothing, far below it.
                assert!(answer.floor.is_empty(), "no floor below the backlog bound");
                let wanted = in_history_order(
                    run.model
                        .delivered
                        .values()
                        .filter(|m| lacks.get(&m.body.author).copied().unwrap_or(0) < m.body.seq),
                );
                let mut bytes = 0usize;
                let fits = wanted
                    .iter()
                    .enumerate()
                    .take_while(|(k, m)| {
                        bytes = bytes.saturating_add(m.weight());
                        *k == 0 || bytes <= max_bytes
                    })
                    .count();
                assert!(
                    answer.msgs.iter().eq(wanted[..fits].iter().copied()),
                    "catch-up answer"
                );
                assert_eq!(answer.more, fits < wanted.len(), "more");
            }
            0xF0..=0xFF => {
                let n = usize::from(next(&mut i));
                let bytes = data.get(i..).unwrap_or_default();
                let bytes = &bytes[..n.min(bytes.len())];
                if let Ok(msg) = wire::decode::<GroupMsg>(bytes) {
                    if run.known(&msg) {
                        run.receive("off the wire", &msg, 1);
                    } else {
                        run.refused("only pool messages verify", msg, 1);
                    }
                }
                i += n;
            }
        }
    }
    // Everything in play, and what any genuine message from past the window
    // that came off the wire depends on (all earlier rounds).
    let closed = run
        .model
        .delivered
        .values()
        .chain(run.model.waiting.values().map(|(m, _)| m))
        .filter_map(|m| msgs.iter().position(|g| id_of(g) == id_of(m)))
        .map(|x| round_of(x) + 1)
        .fold(first + rounds, usize::max);
    let everything = &msgs[first * AUTHORS..closed * AUTHORS];
    for msg in everything {
        run.receive("everything", msg, FINAL);
    }
    if run.model.banned.is_empty() {
        // Nothing genuine is stranded: each (author, seq) in play was
        // delivered or is history a floor let us skip.
        for msg in everything {
            let (author, seq) = id_of(msg);
            assert!(seq <= run.model.count(&author), "stranded");
        }
        assert!(
            run.model.waiting.values().all(|(m, _)| !msgs.contains(m)),
            "a genuine message waits"
        );
    }
    for source in SOURCES.into_iter().chain([FINAL]) {
        run.log.drop_source(source);
        run.model.drop_source(source);
    }
    run.check_state("every link dropped");
    assert_eq!(run.log.pending(), 0, "nothing waits without a link");
    assert!(
        run.log
            .history()
            .eq(in_history_order(run.model.delivered.values())),
        "one history order"
    );
}

/// Seeds for `group_log`, in its input format: each window in order and
/// reversed, duplicates, each kind of tampering, a catch-up, summaries, a
/// genuine message from past the window arriving off the wire, and one for
/// each hostile input: floors for our own key, above the sender's summary and
/// beyond what is needed; floods that fill an author's share, a link's count
/// and byte shares, with genuine messages on other links and a dropped link;
/// equivocation by delivery, inside a catch-up and by a forwarded proof.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let all = (AUTHORS * WINDOW) as u8;
    // Three rounds from round 0, three from round 5, one at round 7.
    let windows = [2 << 3, (2 << 3) | 5, 7];
    let mut out = Vec::new();
    for w in windows {
        out.push([w, 0].into_iter().chain(0..all).collect());
        out.push([w, 8].into_iter().chain((0..all).rev()).collect());
    }
    out.push(vec![
        1 << 3 | 3,
        2,
        5,
        5,
        5,
        0,
        0,
        1,
        2,
        5,
        0xE0,
        1,
        2,
        3,
        0xFF,
    ]);
    let mut tampered = vec![2 << 3 | 4, 0];
    for how in 0..16u8 {
        tampered.extend([0x80 | (how * 3 % all), how.wrapping_mul(37)]);
    }
    tampered.extend(0..all);
    out.push(tampered);
    let mut catchup = vec![1 << 3 | 2, 1, 0xC6, 0];
    catchup.extend((0..6).rev());
    catchup.extend([0xE0, 0, 3, 8, 2, 0xE0, 2, 2, 2, 0xFF]);
    out.push(catchup);
    // Window: round 2 alone; off the wire: a message of round 3, then one of
    // round 1 (below the floor).
    let mut off_wire = vec![2, 0, 2];
    for index in [10, 4] {
        let msg = wire::encode(&pools().genuine[index]).expect("encode");
        off_wire.push(0xF0);
        off_wire.push(u8::try_from(msg.len()).expect("a short message"));
        off_wire.extend(msg);
    }
    off_wire.push(1);
    out.push(off_wire);

    // Floors. Keys: 0..=2 genuine, 3..=6 fresh, 7 ours. One entry is
    // `[key, value, d]`; a catch-up is `0xC0 | messages, spec, entries…,
    // messages…` with spec = link - 1 | entries << 2.
    let catchup_on = |link: u8, entries: &[[u8; 3]], carried: &[u8]| {
        let mut op = vec![
            0xC0 | u8::try_from(carried.len()).expect("few"),
            (link - 1) | u8::try_from(entries.len()).expect("few") << 2,
        ];
        op.extend(entries.iter().flatten());
        op.extend(carried);
        op
    };
    let catchup_op = |entries: &[[u8; 3]], carried: &[u8]| catchup_on(1, entries, carried);
    // Our own key at u64::MAX, u64::MAX - 1 and 5, each followed by a write.
    let mut own = vec![2 << 3, 0, 0xD4];
    for value in [0xFF, 0xFE, 5] {
        own.extend(catchup_op(&[[7, value, 0]], &[3]));
        own.push(0xD4);
    }
    out.push(own);
    // Above the sender's summary: the summary one below, and absent.
    let mut above = vec![2 << 3 | 3, 4, 0];
    above.extend(catchup_op(&[[1, 5, 0x81]], &[4]));
    above.extend(catchup_op(&[[2, 4, 0xFF]], &[]));
    above.extend([1, 2, 0xD4]);
    out.push(above);
    // Beyond what is needed: u64::MAX for a genuine author while only round
    // 3's messages (needing 3 of each) are at hand, then the rest in order; and
    // a floor that lets a fresh author's waiting messages in.
    let mut beyond = vec![1 << 3 | 3, 5];
    beyond.extend(catchup_op(&[[0, 0xFF, 0], [2, 0xC0, 0]], &[0, 1]));
    beyond.extend([2, 3, 4, 5, 0xE0, 0, 0, 0, 0xFF]);
    beyond.extend([0xB0, 3]);
    beyond.extend(catchup_op(&[[3, 1, 0]], &[]));
    beyond.extend(catchup_op(&[[3, 3, 0]], &[0xC0]));
    beyond.extend([0xD4, 0xE0, 8, 8, 8, 4]);
    out.push(beyond);

    // Bounds. A flood of `count` messages of fresh author a over link l is
    // `0xB0 | (l - 1) << 2 | a, k` repeated; `usize::MAX`: all of them.
    let flood = |author: u8, link: u8, count: usize| {
        let op = 0xB0 | (link - 1) << 2 | author;
        if count == usize::MAX {
            return vec![op, 0xFF];
        }
        let mut ops = Vec::new();
        let mut left = count;
        while left > 0 {
            let k = left.min(8);
            ops.extend([op, u8::try_from(k - 1).expect("k")]);
            left -= k;
        }
        ops
    };
    let every = usize::MAX;
    // An author's count share, over two links, then its deliverable first.
    let mut author_share = vec![2 << 3, 0];
    author_share.extend(flood(0, 1, 200));
    author_share.extend(flood(0, 2, 80));
    author_share.extend([0, 1, 2]);
    out.push(author_share);
    // A link's count share (two light authors), genuine messages on it and on
    // another link, the link dropped, the share free again.
    let mut link_share = vec![2 << 3, 0];
    link_share.extend(flood(0, 1, every));
    link_share.extend(flood(1, 1, every));
    link_share.extend([3, 4, 0x20 | 4, 0x20 | 3, 0, 0xD0]);
    link_share.extend(flood(1, 1, 8));
    link_share.extend([0x21, 0x22, 0x25, 0x24, 5]);
    out.push(link_share);
    // The byte shares: the two long-text authors over one link.
    let mut byte_share = vec![1 << 3 | 2, 1];
    byte_share.extend(flood(2, 3, every));
    byte_share.extend(flood(3, 3, every));
    byte_share.extend([0x40, 0x41, 0x42, 0xD2, 0x43]);
    out.push(byte_share);
    // A catch-up refused over the link's share.
    let mut refused = vec![2 << 3, 0];
    refused.extend(flood(0, 2, every));
    refused.extend(flood(1, 2, 254));
    refused.extend(catchup_on(2, &[], &[0, 3, 4, 5]));
    out.push(refused);

    // Equivocation: by delivery (genuine first, then the other; and the other
    // first), with later messages of the author; inside one catch-up; a
    // forwarded proof, twice, and two that are not proofs.
    out.push(vec![2 << 3, 0, 0, 1, 2, 0xA0, 3, 6, 0xA4, 4, 5, 7, 8]);
    let mut inside = vec![2 << 3, 0];
    inside.extend(catchup_op(&[], &[0, 1, 2, 0x80, 3]));
    inside.extend(catchup_op(&[], &[0x84, 4, 0, 5]));
    out.push(inside);
    out.push(vec![
        2 << 3,
        0,
        0,
        0xD8,
        3,
        0xD9,
        3,
        0xDA,
        1,
        0xDB,
        2,
        0xD8,
        0,
        1,
        2,
        3,
    ]);
    out
}
