//! `group_log`: the group log of docs/protocol.md §17 under an arbitrary delivery
//! schedule. A fixed set of genuine messages (three authors, concurrent writes,
//! fixed keys) is delivered in the order, with the duplicates and the tampering
//! the input chooses, interleaved with messages decoded from the input itself.
//! Invariants: nothing tampered or undecodable is delivered; every genuine message
//! is delivered at most once, in causal order; once all of them have arrived
//! nothing is pending and the history is the same as a reference log's.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use dhke::Identity;
use wire::group::{GroupLog, GroupMsg};

const ROOM: [u8; 32] = [0x47; 32];

/// 24 genuine messages of three authors who see each other's writes late.
fn genuine() -> &'static [GroupMsg] {
    static MSGS: OnceLock<Vec<GroupMsg>> = OnceLock::new();
    MSGS.get_or_init(|| {
        let ids: Vec<Identity> = (1..=3u8).map(|i| Identity::from_seed(&[i; 32])).collect();
        let mut logs: Vec<GroupLog> = (0..3).map(|_| GroupLog::new(ROOM)).collect();
        let mut all = Vec::new();
        for round in 0..8u64 {
            let mut wrote = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let msg = logs[i]
                    .write(id, format!("r{round} a{i}"), round)
                    .expect("write");
                wrote.push((i, msg));
            }
            // Everyone hears the round only after writing in it: concurrency.
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

/// The history of a log that got every genuine message.
fn reference() -> &'static [GroupMsg] {
    static HISTORY: OnceLock<Vec<GroupMsg>> = OnceLock::new();
    HISTORY.get_or_init(|| {
        let mut log = GroupLog::new(ROOM);
        for msg in genuine() {
            log.receive(msg.clone()).expect("genuine");
        }
        log.history().cloned().collect()
    })
}

/// Operations read from one input (each verifies a signature at most once).
const MAX_OPS: usize = 256;

/// The harness function of the `group_log` target.
pub fn group_log(data: &[u8]) {
    let data = &data[..data.len().min(MAX_OPS * 2)];
    let msgs = genuine();
    let mut log = GroupLog::new(ROOM);
    let mut delivered = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let op = data[i];
        i += 1;
        match op >> 6 {
            // Deliver genuine message op % 64 (as is).
            0 | 1 => {
                let msg = msgs[usize::from(op & 63) % msgs.len()].clone();
                delivered.extend(
                    log.receive(msg)
                        .expect("a genuine message is never refused"),
                );
            }
            // Deliver it with one byte of its text or signature flipped.
            2 => {
                let mut msg = msgs[usize::from(op & 63) % msgs.len()].clone();
                let at = data.get(i).copied().unwrap_or(0);
                i += 1;
                if at & 1 == 0 {
                    msg.signature.0[usize::from(at >> 1) % 64] ^= 0x01;
                } else {
                    msg.body.text.push('!');
                }
                assert!(log.receive(msg).is_err(), "a tampered message is refused");
            }
            // The next bytes (length op & 63) as a message off the wire.
            _ => {
                let n = usize::from(op & 63).min(data.len() - i);
                if let Ok(msg) = wire::decode::<GroupMsg>(&data[i..i + n]) {
                    if let Ok(out) = log.receive(msg) {
                        // Only a genuine message can verify.
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
    for msg in msgs {
        delivered.extend(log.receive(msg.clone()).expect("genuine"));
    }
    assert_eq!(log.pending(), 0);
    assert_eq!(delivered.len(), msgs.len());
    assert_causal(&delivered);
    assert!(log.history().eq(reference().iter()), "one history order");
}
