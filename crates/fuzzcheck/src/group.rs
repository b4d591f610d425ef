//! `group_log`: the group log of docs/protocol.md §17 under an arbitrary delivery
//! schedule. A fixed pool of genuine messages (three authors writing concurrently
//! for eight rounds, fixed keys) is signed once per process; the input picks how
//! many rounds are in play, then a schedule over them: deliveries in any order,
//! duplicates, copies with one field tampered, catch-ups, summaries, and messages
//! decoded from the input itself.
//!
//! Invariants: nothing tampered or undecodable is delivered; every genuine message
//! is delivered at most once, in causal order; the summary and the answer to any
//! summary are what the delivered messages say; once every message in play has
//! arrived nothing is pending and the history is those messages in §17.3's order
//! (causal depth, author, seq).
//!
//! Speed: a log verifies each new message's signature once (a repeat is dropped by
//! digest), so an execution costs about one Ed25519 verification per message in
//! play plus one per tampered copy. The number of rounds in play is geometric in
//! the first byte (half the inputs use one round, a quarter two …), so most
//! executions verify a handful of signatures while every schedule over all 24
//! messages stays reachable.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use dhke::Identity;
use wire::group::{Catchup, GroupLog, GroupMsg, Summary};

const ROOM: [u8; 32] = [0x47; 32];
const AUTHORS: usize = 3;
const ROUNDS: usize = 8;

/// `AUTHORS * ROUNDS` genuine messages, round by round: in each round every author
/// writes before hearing the others' messages of that round (concurrency). So the
/// messages of round r depend exactly on everything of the rounds before it, and
/// every prefix of whole rounds is causally closed.
fn genuine() -> &'static [GroupMsg] {
    static MSGS: OnceLock<Vec<GroupMsg>> = OnceLock::new();
    MSGS.get_or_init(|| {
        let ids: Vec<Identity> = (1..=AUTHORS as u8)
            .map(|i| Identity::from_seed(&[i; 32]))
            .collect();
        let mut logs: Vec<GroupLog> = (0..AUTHORS).map(|_| GroupLog::new(ROOM)).collect();
        let mut all = Vec::new();
        for round in 0..ROUNDS as u64 {
            let mut wrote = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let msg = logs[i]
                    .write(id, format!("r{round} a{i}"), round)
                    .expect("write");
                wrote.push((i, msg));
            }
            for (from, msg) in &wrote {
                for (to, log) in logs.iter_mut().enumerate() {
                    if to != *from {
                        log.receive(msg.clone()).expect("genuine");
                    }
                }
                all.push(msg.clone());
            }
        }
        all
    })
}

/// The round of pool message `index` (the pool is in round order).
fn round_of(index: usize) -> usize {
    index / AUTHORS
}

fn assert_causal(delivered: &[GroupMsg]) {
    let mut have: HashMap<[u8; 32], u64> = HashMap::new();
    for m in delivered {
        let b = &m.body;
        assert_eq!(have.get(&b.author).copied().unwrap_or(0) + 1, b.seq);
        for (a, n) in &b.clock {
            assert!(have.get(a).copied().unwrap_or(0) >= *n, "dependency later");
        }
        have.insert(b.author, b.seq);
    }
}

/// What a log that delivered `delivered` (and took no catch-up floor) has.
fn have_of(delivered: &[GroupMsg]) -> HashMap<[u8; 32], u64> {
    let mut have = HashMap::new();
    for m in delivered {
        let n = have.entry(m.body.author).or_insert(0);
        *n = m.body.seq.max(*n);
    }
    have
}

/// §17.3: the one history order, written from the spec rather than taken from
/// the log (depth = seq + the sum of the clock, then author, then seq).
fn in_history_order(msgs: &[GroupMsg]) -> Vec<GroupMsg> {
    let mut sorted = msgs.to_vec();
    sorted.sort_by_key(|m| {
        let b = &m.body;
        let depth = b.seq + b.clock.iter().map(|(_, n)| n).sum::<u64>();
        (depth, b.author, b.seq)
    });
    sorted
}

/// One field of a genuine message changed, picked by `how`: every such copy is
/// refused (a signature byte, the text, the sequence number, the clock, the
/// sending time, the author, the room).
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
        _ => b.room[at % 32] ^= 1,
    }
    m
}

/// Operations read from one input.
const MAX_OPS: usize = 256;

/// The harness function of the `group_log` target.
///
/// Input: one byte choosing the rounds in play (1 + trailing zeros, so one round
/// for an odd byte, all eight for 0 or 0x80), then operations, each an op byte
/// and its arguments:
/// - `0x00..=0x7F`: deliver message `op % in_play`;
/// - `0x80..=0xBF`, `how`: deliver a copy of message `op % in_play` with one
///   field tampered (see [`tampered`]);
/// - `0xC0..=0xDF`, then `op & 31` indexes: a catch-up carrying those messages;
/// - `0xE0..=0xEF`, three bytes: check the summary, and the answer to the summary
///   that has each author at `byte % 9`;
/// - `0xF0..=0xFF`, a length byte, that many bytes: a message off the wire.
pub fn group_log(data: &[u8]) {
    let Some((&scope, data)) = data.split_first() else {
        return;
    };
    let data = &data[..data.len().min(MAX_OPS * 2)];
    let msgs = genuine();
    let rounds = 1 + (scope | 0x80).trailing_zeros() as usize;
    let in_play = &msgs[..rounds * AUTHORS];
    let pick = |op: u8| &in_play[usize::from(op) % in_play.len()];
    let mut log = GroupLog::new(ROOM);
    let mut delivered: Vec<GroupMsg> = Vec::new();
    // Genuine messages from outside the rounds in play that came off the wire.
    let mut extra: Vec<usize> = Vec::new();
    let mut i = 0;
    let next = |i: &mut usize| {
        let b = data.get(*i).copied().unwrap_or(0);
        *i += 1;
        b
    };
    while i < data.len() {
        let op = next(&mut i);
        match op {
            0x00..=0x7F => delivered.extend(
                log.receive(pick(op).clone())
                    .expect("a genuine message is never refused"),
            ),
            0x80..=0xBF => {
                let msg = tampered(pick(op), next(&mut i));
                assert!(log.receive(msg).is_err(), "a tampered message is refused");
            }
            0xC0..=0xDF => {
                let n = usize::from(op & 31);
                let catchup = Catchup {
                    floor: Vec::new(),
                    msgs: (0..n).map(|_| pick(next(&mut i)).clone()).collect(),
                };
                delivered.extend(
                    log.receive_catchup(catchup)
                        .expect("a catch-up of genuine messages is taken"),
                );
            }
            0xE0..=0xEF => {
                let have = have_of(&delivered);
                let mut summary: Vec<([u8; 32], u64)> =
                    have.iter().map(|(a, n)| (*a, *n)).collect();
                summary.sort();
                assert_eq!(log.summary().have, summary, "summary");
                let theirs: Vec<([u8; 32], u64)> = msgs[..AUTHORS]
                    .iter()
                    .map(|m| (m.body.author, u64::from(next(&mut i) % 9)))
                    .collect();
                let lacks: HashMap<_, _> = theirs.iter().copied().collect();
                let answer = log.missing_for(&Summary { have: theirs });
                assert!(answer.floor.is_empty(), "no floor below the backlog bound");
                let wanted: Vec<GroupMsg> = delivered
                    .iter()
                    .filter(|m| lacks[&m.body.author] < m.body.seq)
                    .cloned()
                    .collect();
                assert_eq!(answer.msgs, in_history_order(&wanted), "catch-up answer");
            }
            0xF0..=0xFF => {
                let n = usize::from(next(&mut i));
                let bytes = data.get(i..).unwrap_or_default();
                let bytes = &bytes[..n.min(bytes.len())];
                if let Ok(msg) = wire::decode::<GroupMsg>(bytes) {
                    if let Ok(out) = log.receive(msg.clone()) {
                        // Only a genuine message can verify.
                        let index = msgs.iter().position(|m| *m == msg);
                        extra.push(index.expect("only a genuine message is taken"));
                        assert!(out.iter().all(|m| msgs.contains(m)));
                        delivered.extend(out);
                    }
                }
                i += n;
            }
        }
    }
    let once: HashSet<_> = delivered
        .iter()
        .map(|m| (m.body.author, m.body.seq))
        .collect();
    assert_eq!(once.len(), delivered.len(), "delivered twice");
    assert_causal(&delivered);
    // Everything in play, and what the extra messages depend on (all earlier
    // rounds): once that has arrived, nothing may wait.
    let closed = extra
        .iter()
        .map(|&x| round_of(x))
        .fold(rounds, |r, x| r.max(x));
    let mut everything: Vec<GroupMsg> = msgs[..closed * AUTHORS].to_vec();
    everything.extend(
        extra
            .iter()
            .filter(|&&x| round_of(x) >= closed)
            .map(|&x| msgs[x].clone()),
    );
    for msg in &everything {
        delivered.extend(log.receive(msg.clone()).expect("genuine"));
    }
    assert_eq!(log.pending(), 0);
    assert_causal(&delivered);
    let mut sorted_everything = in_history_order(&everything);
    sorted_everything.dedup();
    assert_eq!(delivered.len(), sorted_everything.len());
    assert!(
        log.history().eq(sorted_everything.iter()),
        "one history order"
    );
}

/// Seeds for `group_log`, in its input format: every round in order and
/// reversed, duplicates, each kind of tampering, a catch-up, summaries, and a
/// genuine message of a round not in play arriving off the wire.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let all = (AUTHORS * ROUNDS) as u8;
    let in_order: Vec<u8> = std::iter::once(0).chain(0..all).collect();
    let reversed: Vec<u8> = std::iter::once(0).chain((0..all).rev()).collect();
    let duplicates = vec![0x04, 5, 5, 5, 0, 0, 1, 2, 5, 0xE0, 1, 2, 3];
    let mut tampered = vec![0x00];
    for how in 0..16u8 {
        tampered.extend([0x80 | (how * 3 % all), how.wrapping_mul(37)]);
    }
    tampered.extend(0..all);
    let mut catchup = vec![0x02, 0xC0 | 9];
    catchup.extend((0..9).rev());
    catchup.extend([0xE0, 0, 1, 8, 0xE0, 2, 2, 2]);
    let mut off_wire = vec![0x01, 0, 2];
    let msg = wire::encode(&genuine()[4]).expect("encode");
    off_wire.push(0xF0);
    off_wire.push(u8::try_from(msg.len()).expect("a short message"));
    off_wire.extend(msg);
    off_wire.push(1);
    vec![in_order, reversed, duplicates, tampered, catchup, off_wire]
}
