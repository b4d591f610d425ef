//! `group_log`: the group log of docs/protocol.md §17 under an arbitrary delivery
//! schedule. A fixed pool of genuine messages (three authors writing concurrently
//! for eight rounds, fixed keys) is signed once per process; the input picks a
//! window of one to three rounds in play, then a schedule over them: deliveries
//! in any order, duplicates, copies with one field tampered, catch-ups,
//! summaries, and messages decoded from the input itself. A window that starts
//! past round 0 begins with a catch-up whose floor (§17.4) stands for the rounds
//! before it, so deep messages are reached without verifying their history.
//!
//! Invariants: nothing tampered or undecodable is delivered; every genuine message
//! is delivered at most once, in causal order; the summary and the answer to any
//! summary are what the floor and the delivered messages say; once every message
//! in play has arrived nothing is pending and the history is those messages in
//! §17.3's order (causal depth, author, seq).
//!
//! Speed: a log verifies each new message's Ed25519 signature once (a repeat is
//! dropped by digest), about 0.4 ms each in the instrumented build, so an
//! execution costs one verification per message in play (3 to 9) plus one per
//! tampered copy (at most 8), instead of up to 24 for a log that must get every
//! round plus one per tampered copy however many.

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

fn assert_causal(floor: &HashMap<[u8; 32], u64>, delivered: &[GroupMsg]) {
    let mut have = floor.clone();
    for m in delivered {
        let b = &m.body;
        assert_eq!(have.get(&b.author).copied().unwrap_or(0) + 1, b.seq);
        for (a, n) in &b.clock {
            assert!(have.get(a).copied().unwrap_or(0) >= *n, "dependency later");
        }
        have.insert(b.author, b.seq);
    }
}

/// What a log that took `floor` and delivered `delivered` has.
fn have_of(floor: &HashMap<[u8; 32], u64>, delivered: &[GroupMsg]) -> HashMap<[u8; 32], u64> {
    let mut have = floor.clone();
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

/// Rounds in play at most: each costs a signature check per author.
const WINDOW: usize = 3;
/// Tampered copies tried per input (each costs a signature check); later
/// tamper operations are skipped. Where in a schedule a copy comes matters (a
/// copy of a pending message, of a delivered one), how many do not.
const MAX_TAMPERED: usize = 8;

/// The harness function of the `group_log` target.
///
/// Input: one byte choosing the window, `1 + (b >> 3) % 3` rounds starting at
/// round `b & 7` (moved back to fit in the pool), then operations, each an op
/// byte and its arguments:
/// - `0x00..=0x7F`: deliver message `op % in_play`;
/// - `0x80..=0xBF`, `how`: deliver a copy of message `op % in_play` with one
///   field tampered (see [`tampered`]), up to [`MAX_TAMPERED`] per input;
/// - `0xC0..=0xDF`, then `op & 31` indexes: a catch-up carrying those messages;
/// - `0xE0..=0xEF`, three bytes: check the summary, and the answer to the summary
///   that has each author at `byte % 9`;
/// - `0xF0..=0xFF`, a length byte, that many bytes: a message off the wire.
pub fn group_log(data: &[u8]) {
    let Some((&window, data)) = data.split_first() else {
        return;
    };
    let data = &data[..data.len().min(MAX_OPS * 2)];
    let msgs = genuine();
    let rounds = 1 + usize::from(window >> 3) % WINDOW;
    let first = usize::from(window & 7).min(ROUNDS - rounds);
    let in_play = &msgs[first * AUTHORS..(first + rounds) * AUTHORS];
    let pick = |op: u8| &in_play[usize::from(op) % in_play.len()];
    let mut log = GroupLog::new(ROOM);
    // The rounds before the window, counted as seen through a catch-up's floor
    // (before anything is pending, so nothing waits below it).
    let floor: HashMap<[u8; 32], u64> = msgs[..AUTHORS]
        .iter()
        .map(|m| (m.body.author, first as u64))
        .filter(|(_, n)| *n > 0)
        .collect();
    if first > 0 {
        let mut raised: Vec<_> = floor.iter().map(|(a, n)| (*a, *n)).collect();
        raised.sort();
        let out = log
            .receive_catchup(Catchup {
                floor: raised,
                msgs: Vec::new(),
            })
            .expect("a floor alone is taken");
        assert!(out.is_empty(), "nothing to deliver");
    }
    let mut delivered: Vec<GroupMsg> = Vec::new();
    // Genuine messages from past the window that came off the wire.
    let mut extra: Vec<usize> = Vec::new();
    let mut tampers = 0;
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
                let how = next(&mut i);
                if tampers < MAX_TAMPERED {
                    tampers += 1;
                    let msg = tampered(pick(op), how);
                    assert!(log.receive(msg).is_err(), "a tampered message is refused");
                }
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
                let have = have_of(&floor, &delivered);
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
                // Our floor is what we pruned (nothing, far below the backlog
                // bound), not what a catch-up raised.
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
                        let index = index.expect("only a genuine message is taken");
                        if round_of(index) < first {
                            // Below the floor: history the log skipped.
                            assert!(out.is_empty(), "delivered below the floor");
                        } else {
                            extra.push(index);
                        }
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
    assert_causal(&floor, &delivered);
    // Everything in play, and what the extra messages depend on (all earlier
    // rounds down to the floor): once that has arrived, nothing may wait.
    let closed = extra
        .iter()
        .map(|&x| round_of(x))
        .fold(first + rounds, |r, x| r.max(x));
    let mut everything: Vec<GroupMsg> = msgs[first * AUTHORS..closed * AUTHORS].to_vec();
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
    assert_causal(&floor, &delivered);
    let mut sorted_everything = in_history_order(&everything);
    sorted_everything.dedup();
    assert_eq!(delivered.len(), sorted_everything.len());
    assert!(
        log.history().eq(sorted_everything.iter()),
        "one history order"
    );
}

/// Seeds for `group_log`, in its input format: each window in order and
/// reversed, duplicates, each kind of tampering, a catch-up, summaries, and a
/// genuine message from past the window arriving off the wire.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let all = (AUTHORS * WINDOW) as u8;
    // Three rounds from round 0, three from round 5, one at round 7.
    let windows = [2 << 3, (2 << 3) | 5, 7];
    let mut out = Vec::new();
    for w in windows {
        out.push(std::iter::once(w).chain(0..all).collect());
        out.push(std::iter::once(w).chain((0..all).rev()).collect());
    }
    out.push(vec![1 << 3 | 3, 5, 5, 5, 0, 0, 1, 2, 5, 0xE0, 1, 2, 3]);
    let mut tampered = vec![2 << 3 | 4];
    for how in 0..16u8 {
        tampered.extend([0x80 | (how * 3 % all), how.wrapping_mul(37)]);
    }
    tampered.extend(0..all);
    out.push(tampered);
    let mut catchup = vec![1 << 3 | 2, 0xC0 | 6];
    catchup.extend((0..6).rev());
    catchup.extend([0xE0, 0, 3, 8, 0xE0, 2, 2, 2]);
    out.push(catchup);
    // Window: round 2 alone; off the wire: a message of round 3, then one of
    // round 1 (below the floor).
    let mut off_wire = vec![2, 0, 2];
    for index in [10, 4] {
        let msg = wire::encode(&genuine()[index]).expect("encode");
        off_wire.push(0xF0);
        off_wire.push(u8::try_from(msg.len()).expect("a short message"));
        off_wire.extend(msg);
    }
    off_wire.push(1);
    out.push(off_wire);
    out
}
