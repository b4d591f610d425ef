//! The group log of docs/protocol.md §17 in memory: members writing and receiving
//! in random orders deliver every message once, in causal order, and agree on one
//! history order; forged, altered, equivocating or impossible messages are refused;
//! a member who was away catches up from a summary, backlog bound included.

use std::collections::{HashMap, HashSet};

use dhke::Identity;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wire::group::{GroupBody, GroupError, GroupLog, GroupMsg, BACKLOG};
use wire::Signature64;

const ROOM: [u8; 32] = [0x77; 32];

fn member(i: u8) -> Identity {
    Identity::from_seed(&[i + 1; 32])
}

/// Every message's dependencies came before it in `delivered`.
fn assert_causal(delivered: &[GroupMsg]) {
    let mut have: HashMap<[u8; 32], u64> = HashMap::new();
    for m in delivered {
        let b = &m.body;
        assert_eq!(
            have.get(&b.author).copied().unwrap_or(0) + 1,
            b.seq,
            "per-author order"
        );
        for (a, n) in &b.clock {
            assert!(
                have.get(a).copied().unwrap_or(0) >= *n,
                "a dependency came later"
            );
        }
        have.insert(b.author, b.seq);
    }
}

/// `members` members; each step one writes (to its own log) or one in-flight
/// message reaches one member. Returns each member's delivered sequence and log.
fn simulate(members: u8, steps: usize, seed: u64) -> Vec<(Vec<GroupMsg>, GroupLog)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids: Vec<Identity> = (0..members).map(member).collect();
    let mut logs: Vec<GroupLog> = (0..members).map(|_| GroupLog::new(ROOM)).collect();
    let mut delivered: Vec<Vec<GroupMsg>> = vec![Vec::new(); members as usize];
    let mut in_flight: Vec<(usize, GroupMsg)> = Vec::new();
    for step in 0..steps {
        if in_flight.is_empty() || rng.gen_bool(0.3) {
            let w = rng.gen_range(0..members as usize);
            let msg = logs[w]
                .write(&ids[w], format!("m{step}"), step as u64)
                .unwrap();
            delivered[w].push(msg.clone());
            for to in 0..members as usize {
                if to != w {
                    in_flight.push((to, msg.clone()));
                }
            }
        } else {
            let (to, msg) = in_flight.swap_remove(rng.gen_range(0..in_flight.len()));
            // Some messages arrive twice (a forwarder and the author both send).
            if rng.gen_bool(0.1) {
                in_flight.push((to, msg.clone()));
            }
            delivered[to].extend(logs[to].receive(msg).unwrap());
        }
    }
    while let Some((to, msg)) = in_flight.pop() {
        delivered[to].extend(logs[to].receive(msg).unwrap());
    }
    delivered.into_iter().zip(logs).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn every_member_delivers_every_message_once_in_causal_order_and_one_history(
        members in 2u8..6, steps in 1usize..120, seed in any::<u64>()
    ) {
        let out = simulate(members, steps, seed);
        let all: HashSet<([u8; 32], u64)> = out
            .iter()
            .flat_map(|(d, _)| d.iter().map(|m| (m.body.author, m.body.seq)))
            .collect();
        let first: Vec<_> = out[0].1.history().map(|m| m.signature).collect();
        for (delivered, log) in &out {
            let ids: Vec<_> = delivered.iter().map(|m| (m.body.author, m.body.seq)).collect();
            let unique: HashSet<_> = ids.iter().copied().collect();
            prop_assert_eq!(ids.len(), unique.len(), "delivered twice");
            prop_assert_eq!(&unique, &all, "something missing");
            assert_causal(delivered);
            prop_assert_eq!(log.pending(), 0);
            let history: Vec<_> = log.history().map(|m| m.signature).collect();
            prop_assert_eq!(&history, &first, "histories differ");
            // The shared order is itself a causal order.
            let ordered: Vec<GroupMsg> = log.history().cloned().collect();
            assert_causal(&ordered);
        }
    }
}

#[test]
fn a_forged_author_an_altered_text_and_an_impossible_clock_are_refused() {
    let (alice, mallory) = (member(0), member(9));
    let mut log = GroupLog::new(ROOM);
    let mut theirs = GroupLog::new(ROOM);
    let real = theirs.write(&alice, "hi".into(), 1).unwrap();

    let mut altered = real.clone();
    altered.body.text = "send money".into();
    assert_eq!(log.receive(altered), Err(GroupError::BadSignature));

    // Mallory signs a message that names Alice as its author.
    let mut body = real.body.clone();
    body.text = "it's alice, honest".into();
    let forged = GroupMsg::sign(body, &mallory).unwrap();
    assert_eq!(log.receive(forged), Err(GroupError::BadSignature));

    let bad = |f: &dyn Fn(&mut GroupBody)| {
        let mut body = real.body.clone();
        body.author = mallory.public().0;
        f(&mut body);
        GroupMsg::sign(body, &mallory).unwrap()
    };
    let mut log2 = GroupLog::new(ROOM);
    for (what, msg) in [
        ("seq 0", bad(&|b| b.seq = 0)),
        ("self in clock", bad(&|b| b.clock = vec![(b.author, 1)])),
        (
            "unsorted",
            bad(&|b| b.clock = vec![([9; 32], 1), ([1; 32], 1)]),
        ),
        ("zero entry", bad(&|b| b.clock = vec![([1; 32], 0)])),
        (
            "too many",
            bad(&|b| b.clock = (0..65u8).map(|i| ([i; 32], 1)).collect()),
        ),
    ] {
        assert!(
            matches!(log2.receive(msg), Err(GroupError::BadClock(_))),
            "{what}"
        );
    }
    let other_room = {
        let mut body = real.body.clone();
        body.room = [0; 32];
        GroupMsg::sign(body, &alice).unwrap()
    };
    assert_eq!(log.receive(other_room), Err(GroupError::OtherRoom));
    // Nothing refused was delivered or kept.
    assert_eq!(log.history().count(), 0);
    assert_eq!(log.receive(real.clone()).unwrap(), vec![real]);
}

#[test]
fn two_messages_with_one_author_and_seq_are_equivocation() {
    let alice = member(0);
    let mut a1 = GroupLog::new(ROOM);
    let mut a2 = GroupLog::new(ROOM);
    let first = a1.write(&alice, "one".into(), 1).unwrap();
    let second = a2.write(&alice, "another".into(), 1).unwrap();
    let mut log = GroupLog::new(ROOM);
    log.receive(first.clone()).unwrap();
    assert!(
        log.receive(first).unwrap().is_empty(),
        "a duplicate is ignored"
    );
    assert_eq!(log.receive(second), Err(GroupError::Equivocation));
}

#[test]
fn a_member_who_was_away_catches_up_once_even_from_an_author_who_left() {
    let (a, b, c) = (member(0), member(1), member(2));
    let (mut la, mut lb, mut lc) = (
        GroupLog::new(ROOM),
        GroupLog::new(ROOM),
        GroupLog::new(ROOM),
    );
    let m = la.write(&a, "before".into(), 1).unwrap();
    lb.receive(m.clone()).unwrap();
    lc.receive(m).unwrap();
    // C is away. A and B talk; B sends and leaves (its log is gone).
    for i in 0..5 {
        let m = la.write(&a, format!("a{i}"), 10 + i).unwrap();
        lb.receive(m).unwrap();
        let m = lb.write(&b, format!("b{i}"), 20 + i).unwrap();
        la.receive(m).unwrap();
    }
    drop(lb);
    // C comes back and swaps summaries with A only.
    let catchup = la.missing_for(&lc.summary());
    assert!(catchup.floor.is_empty());
    let got = lc.receive_catchup(catchup).unwrap();
    assert_eq!(got.len(), 10);
    assert_causal(
        &[
            la.history().take(1).cloned().collect::<Vec<_>>(),
            got.clone(),
        ]
        .concat(),
    );
    let ids: HashSet<_> = got.iter().map(|m| (m.body.author, m.body.seq)).collect();
    assert_eq!(ids.len(), 10, "each once");
    assert!(lc
        .receive_catchup(la.missing_for(&lc.summary()))
        .unwrap()
        .is_empty());
    let ha: Vec<_> = la.history().map(|m| m.signature).collect();
    let hc: Vec<_> = lc.history().map(|m| m.signature).collect();
    assert_eq!(ha, hc);
    let _ = c;
}

#[test]
fn a_newcomer_gets_the_bounded_backlog_and_all_of_it_is_deliverable() {
    let a = member(0);
    let b = member(1);
    let mut la = GroupLog::new(ROOM);
    let mut lb = GroupLog::new(ROOM);
    for i in 0..(BACKLOG + 500) {
        let m = la.write(&a, format!("a{i}"), i as u64).unwrap();
        lb.receive(m).unwrap();
        if i % 3 == 0 {
            let m = lb.write(&b, format!("b{i}"), i as u64).unwrap();
            la.receive(m).unwrap();
        }
    }
    let mut newcomer = GroupLog::new(ROOM);
    let catchup = la.missing_for(&newcomer.summary());
    assert_eq!(catchup.msgs.len(), BACKLOG);
    assert!(!catchup.floor.is_empty());
    let got = newcomer.receive_catchup(catchup).unwrap();
    assert_eq!(got.len(), BACKLOG);
    assert_eq!(newcomer.pending(), 0);
    // A pruned message arriving late is history it skipped, not a new one.
    let mut fresh = GroupLog::new(ROOM);
    let old = fresh.write(&a, "a0".into(), 0).unwrap();
    assert!(newcomer.receive(old).unwrap().is_empty());
}

#[test]
fn group_message_vector() {
    let alice = member(0);
    let body = GroupBody {
        room: ROOM,
        author: alice.public().0,
        seq: 1,
        clock: vec![([0x22; 32], 3)],
        sent_at_ms: 1_700_000_000_000,
        text: "hi".into(),
    };
    let signed = wire::group::signed_bytes(&body).unwrap();
    assert_eq!(hex::encode(&signed), "703270636861742f76322f67726f75702d6d736777777777777777777777777777777777777777777777777777777777777777778a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c0101222222222222222222222222222222222222222222222222222222222222222203fd0068e5cf8b010000026869");
    let msg = GroupMsg::sign(body, &alice).unwrap();
    assert_eq!(hex::encode(msg.signature.0), "6aa81458cbceacb84878205a9519814220dbc33107e9a78280ca1ed14c7fea56909e446008446e8ae50de7c3653f5d6482eb8c48b47fbde2adcd4bc9e1fd2d0b");
    let _: Signature64 = msg.signature;
}

#[test]
fn a_message_waiting_below_a_new_catch_up_floor_frees_its_slot() {
    let a = member(0);
    let (mut la, mut lb) = (GroupLog::new(ROOM), GroupLog::new(ROOM));
    let m1 = la.write(&a, "one".into(), 1).unwrap();
    let m2 = la.write(&a, "two".into(), 2).unwrap();
    let m3 = la.write(&a, "three".into(), 3).unwrap();
    // b gets m2 first: it waits for m1.
    assert!(lb.receive(m2).unwrap().is_empty());
    assert_eq!(lb.pending(), 1);
    // A catch-up says a's first two are history: m2 can never be delivered.
    let floor = wire::group::Catchup {
        floor: vec![(a.public().0, 2)],
        msgs: vec![m3.clone()],
    };
    assert_eq!(lb.receive_catchup(floor).unwrap(), vec![m3]);
    assert_eq!(lb.pending(), 0, "nothing is stranded");
    // And m1 arriving late changes nothing.
    assert!(lb.receive(m1).unwrap().is_empty());
}
