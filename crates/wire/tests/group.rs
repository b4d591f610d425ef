//! The conversation log of docs/protocol.md §17 in memory: members writing and
//! receiving in random orders deliver every message once, in causal order, and
//! agree on one history order; forged, altered, impossible or other
//! conversations' messages are refused; an equivocating author is proven and
//! refused while its forwarder is not blamed; what waits is bounded per author
//! and per link; catch-up floors never move our own counter nor go past what the
//! sender's summary shows; a member who was away catches up from a summary,
//! backlog bound and paced answers included.

use std::collections::{HashMap, HashSet};

use dhke::Identity;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wire::group::{
    Catchup, GroupBody, GroupError, GroupLog, GroupMsg, Summary, AUTHOR_PENDING, BACKLOG,
    SOURCE_PENDING,
};
use wire::Signature64;

const ROOM: [u8; 32] = [0x77; 32];
/// The link a test message comes in on.
const LINK: u64 = 1;
/// Enough bytes for any whole backlog in one answer.
const ALL: usize = usize::MAX;

fn member(i: u8) -> Identity {
    Identity::from_seed(&[i + 1; 32])
}

/// A log of conversation ROOM kept by `who`.
fn log_of(who: &Identity) -> GroupLog {
    GroupLog::new(ROOM, who.public().0)
}

/// A log kept by someone who writes nothing in the test.
fn observer() -> GroupLog {
    GroupLog::new(ROOM, [0xEE; 32])
}

/// What `receive` delivered, or the error.
fn got(log: &mut GroupLog, msg: GroupMsg) -> Result<Vec<GroupMsg>, GroupError> {
    log.receive(msg, LINK).map(|o| o.delivered)
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
    let mut logs: Vec<GroupLog> = ids.iter().map(log_of).collect();
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
            delivered[to].extend(got(&mut logs[to], msg).unwrap());
        }
    }
    while let Some((to, msg)) = in_flight.pop() {
        delivered[to].extend(got(&mut logs[to], msg).unwrap());
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
    let mut log = observer();
    let mut theirs = log_of(&alice);
    let real = theirs.write(&alice, "hi".into(), 1).unwrap();

    let mut altered = real.clone();
    altered.body.text = "send money".into();
    assert_eq!(got(&mut log, altered), Err(GroupError::BadSignature));

    // Mallory signs a message that names Alice as its author.
    let mut body = real.body.clone();
    body.text = "it's alice, honest".into();
    let forged = GroupMsg::sign(body, &mallory).unwrap();
    assert_eq!(got(&mut log, forged), Err(GroupError::BadSignature));

    let bad = |f: &dyn Fn(&mut GroupBody)| {
        let mut body = real.body.clone();
        body.author = mallory.public().0;
        f(&mut body);
        GroupMsg::sign(body, &mallory).unwrap()
    };
    let mut log2 = observer();
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
        (
            "depth overflows",
            bad(&|b| {
                b.seq = 2;
                b.clock = vec![([1; 32], u64::MAX - 1)];
            }),
        ),
    ] {
        assert!(
            matches!(got(&mut log2, msg), Err(GroupError::BadClock(_))),
            "{what}"
        );
    }
    // Nothing refused was delivered or kept.
    assert_eq!(log.history().count(), 0);
    assert_eq!(got(&mut log, real.clone()).unwrap(), vec![real]);
}

#[test]
fn a_message_signed_for_one_conversation_is_refused_in_every_other() {
    let alice = member(0);
    // Two generated codes with one nameplate: one mediator tag, two conversations.
    let day_one = dhke::RoomCode::parse("7-alpha-bravo-charlie-delta");
    let day_two = dhke::RoomCode::parse("7-zulu-yankee-xray-whiskey");
    assert_eq!(day_one.tag(), day_two.tag());
    assert_ne!(day_one.conversation(), day_two.conversation());
    let mut first = GroupLog::new(day_one.conversation(), alice.public().0);
    let old = first.write(&alice, "day one".into(), 1).unwrap();
    let mut second = GroupLog::new(day_two.conversation(), [9; 32]);
    assert_eq!(
        got(&mut second, old.clone()),
        Err(GroupError::OtherConversation)
    );
    assert!(GroupError::OtherConversation.blames_sender());
    // Re-signing under the new id does not help a replayer without the key.
    let mut body = old.body.clone();
    body.conversation = day_two.conversation();
    let replayed = GroupMsg {
        body,
        signature: old.signature,
    };
    assert_eq!(got(&mut second, replayed), Err(GroupError::BadSignature));
    assert_eq!(second.history().count(), 0);
}

#[test]
fn two_messages_with_one_author_and_seq_are_a_proof_against_the_author_not_the_forwarder() {
    let (alice, bob) = (member(0), member(1));
    let mut a1 = log_of(&alice);
    let mut a2 = log_of(&alice);
    let first = a1.write(&alice, "one".into(), 1).unwrap();
    let second = a2.write(&alice, "another".into(), 1).unwrap();
    let mut log = log_of(&bob);
    assert_eq!(got(&mut log, first.clone()).unwrap(), vec![first.clone()]);
    assert!(
        got(&mut log, first.clone()).unwrap().is_empty(),
        "a duplicate is ignored"
    );
    // The second version is no error of the link that forwarded it.
    let out = log.receive(second.clone(), LINK).unwrap();
    assert!(out.delivered.is_empty());
    assert_eq!(out.proofs.len(), 1);
    let proof = &out.proofs[0];
    assert_eq!(proof.verify(&ROOM), Ok(alice.public().0));
    assert_eq!(proof.first, first, "the shown version comes first");
    assert_eq!(log.delivered(&alice.public().0, 1), Some(&first));
    assert!(log.is_banned(&alice.public().0));
    // Alice's later messages are dropped, whoever brings them.
    let later = a1.write(&alice, "later".into(), 2).unwrap();
    assert!(got(&mut log, later).unwrap().is_empty());

    // Another member takes the proof in once, and forwards it once.
    let mut carol = log_of(&member(2));
    assert_eq!(carol.receive_proof(proof), Ok(Some(alice.public().0)));
    assert_eq!(carol.receive_proof(proof), Ok(None));
    assert!(carol.is_banned(&alice.public().0));
    // A proof that does not hold blames its sender.
    let bogus = wire::group::EquivocationProof {
        first: first.clone(),
        second: first.clone(),
    };
    assert!(matches!(
        carol.receive_proof(&bogus),
        Err(GroupError::BadProof(_))
    ));
    let mut tampered = proof.clone();
    tampered.second.body.text = "edited".into();
    assert!(matches!(
        carol.receive_proof(&tampered),
        Err(GroupError::BadProof(_))
    ));
    // Nobody can prove anything against us without our key; a "proof" against
    // our own key is refused.
    let mut alices = log_of(&alice);
    assert!(matches!(
        alices.receive_proof(proof),
        Err(GroupError::BadProof(_))
    ));
}

#[test]
fn an_equivocation_inside_a_catchup_is_a_proof_and_the_rest_is_delivered() {
    let (alice, bob, carol) = (member(0), member(1), member(2));
    let mut la = log_of(&alice);
    let mut fork = log_of(&alice);
    let m1 = la.write(&alice, "one".into(), 1).unwrap();
    let m1b = fork.write(&alice, "one, other".into(), 1).unwrap();
    let mut lb = log_of(&bob);
    got(&mut lb, m1).unwrap();
    let b1 = lb.write(&bob, "bob".into(), 2).unwrap();
    let mut lc = log_of(&carol);
    got(&mut lc, m1b).unwrap();
    // lc asks for everything (as a newcomer that lost its summary would).
    let out = lc
        .receive_catchup(lb.missing_for(&Summary::default(), ALL), LINK)
        .unwrap();
    assert_eq!(out.proofs.len(), 1);
    assert_eq!(
        out.proofs[0].first.body.text, "one, other",
        "the one lc showed"
    );
    // The rest of the catch-up still counts: bob's message is delivered.
    assert_eq!(out.delivered, vec![b1]);
}
#[test]
fn a_member_who_was_away_catches_up_once_even_from_an_author_who_left() {
    let (a, b, c) = (member(0), member(1), member(2));
    let (mut la, mut lb, mut lc) = (log_of(&a), log_of(&b), log_of(&c));
    let m = la.write(&a, "before".into(), 1).unwrap();
    got(&mut lb, m.clone()).unwrap();
    got(&mut lc, m).unwrap();
    // C is away. A and B talk; B sends and leaves (its log is gone).
    for i in 0..5 {
        let m = la.write(&a, format!("a{i}"), 10 + i).unwrap();
        got(&mut lb, m).unwrap();
        let m = lb.write(&b, format!("b{i}"), 20 + i).unwrap();
        got(&mut la, m).unwrap();
    }
    drop(lb);
    // C comes back and swaps summaries with A only.
    let catchup = la.missing_for(&lc.summary(), ALL);
    assert!(catchup.floor.is_empty());
    assert!(!catchup.more);
    let got = lc.receive_catchup(catchup, LINK).unwrap().delivered;
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
        .receive_catchup(la.missing_for(&lc.summary(), ALL), LINK)
        .unwrap()
        .delivered
        .is_empty());
    let ha: Vec<_> = la.history().map(|m| m.signature).collect();
    let hc: Vec<_> = lc.history().map(|m| m.signature).collect();
    assert_eq!(ha, hc);
}

#[test]
fn a_newcomer_gets_the_bounded_backlog_and_all_of_it_is_deliverable() {
    let a = member(0);
    let b = member(1);
    let mut la = log_of(&a);
    let mut lb = log_of(&b);
    for i in 0..(BACKLOG + 500) {
        let m = la.write(&a, format!("a{i}"), i as u64).unwrap();
        got(&mut lb, m).unwrap();
        if i % 3 == 0 {
            let m = lb.write(&b, format!("b{i}"), i as u64).unwrap();
            got(&mut la, m).unwrap();
        }
    }
    let mut newcomer = observer();
    let catchup = la.missing_for(&newcomer.summary(), ALL);
    assert_eq!(catchup.msgs.len(), BACKLOG);
    assert!(!catchup.floor.is_empty());
    let delivered = newcomer.receive_catchup(catchup, LINK).unwrap().delivered;
    assert_eq!(delivered.len(), BACKLOG);
    assert_eq!(newcomer.pending(), 0);
    // A pruned message arriving late is history it skipped, not a new one.
    let mut fresh = log_of(&a);
    let old = fresh.write(&a, "a0".into(), 0).unwrap();
    assert!(got(&mut newcomer, old).unwrap().is_empty());
}

#[test]
fn answers_are_paced_and_a_newcomer_asking_again_gets_the_rest_once() {
    let a = member(0);
    let mut la = log_of(&a);
    for i in 0..300 {
        la.write(&a, "x".repeat(1000), i).unwrap();
    }
    let mut newcomer = observer();
    let mut rounds = 0;
    let mut delivered = 0;
    loop {
        rounds += 1;
        let part = la.missing_for(&newcomer.summary(), 64 * 1024);
        let more = part.more;
        let weight: usize = part.msgs.iter().map(GroupMsg::weight).sum();
        assert!(weight <= 64 * 1024, "{weight}");
        delivered += newcomer
            .receive_catchup(part, LINK)
            .unwrap()
            .delivered
            .len();
        if !more {
            break;
        }
        assert!(rounds < 20);
    }
    assert_eq!(delivered, 300);
    assert!(rounds >= 5, "{rounds} rounds");
}

#[test]
fn group_message_vector() {
    let alice = member(0);
    let body = GroupBody {
        conversation: ROOM,
        author: alice.public().0,
        seq: 1,
        clock: vec![([0x22; 32], 3)],
        sent_at_ms: 1_700_000_000_000,
        text: "hi".into(),
    };
    let signed = wire::group::signed_bytes(&body).unwrap();
    assert_eq!(hex::encode(&signed), "703270636861742f76332f67726f75702d6d736777777777777777777777777777777777777777777777777777777777777777778a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c0101222222222222222222222222222222222222222222222222222222222222222203fd0068e5cf8b010000026869");
    let msg = GroupMsg::sign(body, &alice).unwrap();
    assert_eq!(hex::encode(msg.signature.0), "f0549ceac665564fd283f3750d60eb0af3f3498be535a4b6d2518c92d773079e972745ffa15c0e7528d46f769ebadf24c2f29ecd6b0c338ed59b1b49a5b18307");
    let _: Signature64 = msg.signature;
}

#[test]
fn a_message_waiting_below_a_new_catch_up_floor_frees_its_slot() {
    let a = member(0);
    let (mut la, mut lb) = (log_of(&a), observer());
    let m1 = la.write(&a, "one".into(), 1).unwrap();
    let m2 = la.write(&a, "two".into(), 2).unwrap();
    let m3 = la.write(&a, "three".into(), 3).unwrap();
    // b gets m2 first: it waits for m1.
    assert!(got(&mut lb, m2).unwrap().is_empty());
    assert_eq!(lb.pending(), 1);
    // A catch-up says a's first two are history: m2 can never be delivered.
    let floor = Catchup {
        have: vec![(a.public().0, 3)],
        floor: vec![(a.public().0, 2)],
        msgs: vec![m3.clone()],
        more: false,
    };
    assert_eq!(lb.receive_catchup(floor, LINK).unwrap().delivered, vec![m3]);
    assert_eq!(lb.pending(), 0, "nothing is stranded");
    // And m1 arriving late changes nothing.
    assert!(got(&mut lb, m1).unwrap().is_empty());
}

#[test]
fn a_floor_never_moves_our_own_counter_nor_goes_past_the_senders_summary_or_need() {
    let (me, other) = (member(0), member(1));
    let mut log = log_of(&me);
    log.write(&me, "first".into(), 1).unwrap();
    // A floor for our own key at the top of the range is ignored.
    let wrap = Catchup {
        have: vec![(me.public().0, u64::MAX)],
        floor: vec![(me.public().0, u64::MAX)],
        msgs: vec![],
        more: false,
    };
    assert!(log
        .receive_catchup(wrap, LINK)
        .unwrap()
        .delivered
        .is_empty());
    assert_eq!(log.write(&me, "second".into(), 2).unwrap().body.seq, 2);
    // A floor above the sender's own summary is the sender's error.
    let lie = Catchup {
        have: vec![(other.public().0, 3)],
        floor: vec![(other.public().0, 1_000_000)],
        msgs: vec![],
        more: false,
    };
    let e = log.receive_catchup(lie, LINK).unwrap_err();
    assert!(matches!(e, GroupError::BadFloor(_)) && e.blames_sender());
    let unnamed = Catchup {
        have: vec![],
        floor: vec![(other.public().0, 5)],
        msgs: vec![],
        more: false,
    };
    assert!(matches!(
        log.receive_catchup(unnamed, LINK),
        Err(GroupError::BadFloor(_))
    ));
    // A floor that nothing at hand needs moves nothing: the author's real
    // messages 1.. are still delivered when they come.
    let idle = Catchup {
        have: vec![(other.public().0, 900)],
        floor: vec![(other.public().0, 900)],
        msgs: vec![],
        more: false,
    };
    log.receive_catchup(idle, LINK).unwrap();
    let mut theirs = log_of(&other);
    let o1 = theirs.write(&other, "o1".into(), 1).unwrap();
    assert_eq!(got(&mut log, o1.clone()).unwrap(), vec![o1]);
    // A message whose own counter is used up cannot be written.
    let mut full = log_of(&me);
    let max = Catchup {
        have: vec![],
        floor: vec![],
        msgs: vec![],
        more: false,
    };
    full.receive_catchup(max, LINK).unwrap();
    full.restore(Vec::new(), u64::MAX);
    assert_eq!(full.write(&me, "no".into(), 1), Err(GroupError::Exhausted));
}

/// A fresh author's message 2: it can never be delivered (nobody has its 1).
fn undeliverable(i: u32, text_len: usize) -> GroupMsg {
    let mut seed = [0x5A; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    let fresh = Identity::from_seed(&seed);
    let body = GroupBody {
        conversation: ROOM,
        author: fresh.public().0,
        seq: 2,
        clock: vec![],
        sent_at_ms: 0,
        text: "w".repeat(text_len),
    };
    GroupMsg::sign(body, &fresh).unwrap()
}

#[test]
fn a_link_that_fills_its_waiting_share_is_refused_and_others_keep_delivering() {
    let (me, bob) = (member(0), member(1));
    let mut log = log_of(&me);
    const HOSTILE: u64 = 7;
    let mut refused = None;
    for i in 0..(SOURCE_PENDING as u32 + 10) {
        if let Err(e) = log.receive(undeliverable(i, 10), HOSTILE) {
            refused = Some((i, e));
            break;
        }
    }
    let (at, e) = refused.expect("the share ends");
    assert_eq!(at as usize, SOURCE_PENDING);
    assert_eq!(e, GroupError::SourceOverShare);
    assert!(e.blames_sender());
    // An honest member's message on another link goes straight through, and
    // one that has to wait still finds room.
    let mut lb = log_of(&bob);
    let b1 = lb.write(&bob, "b1".into(), 1).unwrap();
    let b2 = lb.write(&bob, "b2".into(), 2).unwrap();
    assert!(got(&mut log, b2.clone()).unwrap().is_empty());
    assert_eq!(got(&mut log, b1.clone()).unwrap(), vec![b1, b2]);
    // The hostile link's share is freed when it goes.
    assert_eq!(log.pending_from(HOSTILE).0, SOURCE_PENDING);
    log.drop_source(HOSTILE);
    assert_eq!(log.pending(), 0);
    assert_eq!(log.pending_from(HOSTILE), (0, 0));
    // The byte share holds too: a few large messages fill it.
    let mut big = log_of(&me);
    let mut n = 0;
    while big
        .receive(undeliverable(10_000 + n, 16 * 1024), HOSTILE)
        .is_ok()
    {
        n += 1;
        assert!(n < 1000);
    }
    assert!((n as usize) < SOURCE_PENDING);
    assert!(big.pending_from(HOSTILE).1 <= wire::group::SOURCE_PENDING_BYTES);
}

#[test]
fn an_author_that_fills_its_own_share_has_its_waiting_messages_dropped_and_nobody_is_blamed() {
    let me = member(0);
    let flooder = member(5);
    let mut log = log_of(&me);
    let mut theirs = log_of(&flooder);
    // Its message 1 never arrives; 2.. wait for it, over several links.
    theirs.write(&flooder, "lost".into(), 0).unwrap();
    let msgs: Vec<GroupMsg> = (0..AUTHOR_PENDING + 50)
        .map(|i| theirs.write(&flooder, format!("m{i}"), i as u64).unwrap())
        .collect();
    for (i, m) in msgs.into_iter().enumerate() {
        let link = 10 + (i % 4) as u64;
        assert!(log.receive(m, link).unwrap().delivered.is_empty());
    }
    assert_eq!(log.pending(), AUTHOR_PENDING);
    // Its deliverable message is never kept out by the share, and frees it.
    let lost = theirs.history().next().unwrap().clone();
    let delivered = log.receive(lost, 10).unwrap().delivered;
    assert_eq!(delivered.len(), AUTHOR_PENDING + 1);
    assert_eq!(log.pending(), 0);
}

#[test]
fn a_restored_window_is_delivered_and_our_seq_goes_on_past_what_we_stored() {
    let (me, other) = (member(0), member(1));
    let (mut mine, mut theirs) = (log_of(&me), log_of(&other));
    let mut all = Vec::new();
    for i in 0..30u64 {
        let m = mine.write(&me, format!("me {i}"), i).unwrap();
        got(&mut theirs, m.clone()).unwrap();
        let t = theirs.write(&other, format!("them {i}"), i).unwrap();
        got(&mut mine, t.clone()).unwrap();
        all.extend([m, t]);
    }
    // Only the newest 11 were kept (a window that starts mid-author).
    let mut sorted = all.clone();
    sorted.sort_by_key(|m| m.order_key());
    let window = sorted[sorted.len() - 11..].to_vec();
    let mut restored = log_of(&me);
    let out = restored.restore(window.clone(), 30);
    assert_eq!(out.delivered, window);
    assert_eq!(restored.pending(), 0);
    assert_eq!(
        restored.write(&me, "again".into(), 99).unwrap().body.seq,
        31
    );
    // Our own last seq counts even when none of ours is in the window.
    let mut bare = log_of(&me);
    bare.restore(Vec::new(), 40);
    assert_eq!(bare.write(&me, "on".into(), 1).unwrap().body.seq, 41);
}

#[test]
fn conversation_id_vectors() {
    // docs/protocol.md §17.6.
    let typed = dhke::RoomCode::parse("7-velvet-harbor");
    assert_eq!(
        hex::encode(typed.conversation()),
        "6fa80d7993d51eac4bea8a5f2b7d6a430ab208594f96a9f782d8ee3b0f6ccbc4"
    );
    let secret = dhke::RoomCode::from_secret("contact bob", &[0x42; 32]);
    assert_eq!(
        hex::encode(secret.conversation()),
        "2e4a1527fec793f8678fd30263e27389dcd3b5f261a4ba092347ec37448296ee"
    );
}

#[test]
fn summary_and_catchup_never_name_more_than_max_authors() {
    let me = member(0);
    let mut log = log_of(&me);
    for i in 0..80u8 {
        let a = Identity::from_seed(&[0x90u8.wrapping_add(i); 32]);
        let mut l = log_of(&a);
        let m = l.write(&a, "hi".into(), 0).unwrap();
        got(&mut log, m).unwrap();
    }
    assert!(log.summary().have.len() <= wire::group::MAX_AUTHORS);
    let c = log.missing_for(&Summary::default(), ALL);
    assert!(c.have.len() <= wire::group::MAX_AUTHORS);
    assert!(c.floor.len() <= wire::group::MAX_AUTHORS);
}

#[test]
fn a_floor_that_nothing_needs_adds_no_author_to_what_we_have() {
    // A hostile catch-up names 64 keys nobody wrote as (key, 0) and as (key,
    // 5) with nothing at hand: each entry is within the sender's summary and
    // moves nothing, so neither the summary nor the authors change, and a
    // real author is still named in the summary (junk keys sorting first
    // would push it out of the 64 entries).
    let (me, other) = (member(0), member(1));
    let mut log = log_of(&me);
    let mut theirs = log_of(&other);
    got(&mut log, theirs.write(&other, "o1".into(), 1).unwrap()).unwrap();
    let before = log.summary();
    for value in [0, 5] {
        let junk: Vec<([u8; 32], u64)> = (0..64u8).map(|i| ([i; 32], value)).collect();
        let catchup = Catchup {
            have: junk.clone(),
            floor: junk,
            msgs: vec![],
            more: false,
        };
        assert!(log
            .receive_catchup(catchup, LINK)
            .unwrap()
            .delivered
            .is_empty());
        assert_eq!(log.summary(), before, "floor value {value}");
    }
    assert_eq!(log.authors(), HashSet::from([other.public().0]));
}

#[test]
fn a_repeat_inside_one_catch_up_is_taken_once() {
    // Found by the group_log fuzz target: the second copy was held as waiting
    // (for a seq already delivered, so for ever) or counted twice against the
    // link's share.
    let a = member(0);
    let mut la = log_of(&a);
    let m1 = la.write(&a, "one".into(), 1).unwrap();
    let m2 = la.write(&a, "two".into(), 2).unwrap();
    let m3 = la.write(&a, "three".into(), 3).unwrap();
    let mut log = observer();
    let twice = Catchup {
        msgs: vec![m1.clone(), m1.clone(), m3.clone(), m3.clone()],
        ..Catchup::default()
    };
    let delivered = log.receive_catchup(twice, LINK).unwrap().delivered;
    assert_eq!(delivered, vec![m1]);
    assert_eq!(log.pending(), 1, "m3 waits once");
    assert_eq!(log.pending_from(LINK).0, 1, "and counts once");
    assert_eq!(got(&mut log, m2.clone()).unwrap(), vec![m2, m3]);
    assert_eq!(log.pending(), 0);
    assert_eq!(log.pending_from(LINK), (0, 0));
}

#[test]
fn two_versions_inside_one_catch_up_are_a_proof() {
    // Found by the group_log fuzz target: both passed the checks (neither was
    // held yet), one was delivered and the other held, with no proof.
    let (alice, bob) = (member(0), member(1));
    let one = log_of(&alice).write(&alice, "one".into(), 1).unwrap();
    let other = log_of(&alice).write(&alice, "other".into(), 1).unwrap();
    let b1 = log_of(&bob).write(&bob, "bob".into(), 1).unwrap();
    let mut log = observer();
    let both = Catchup {
        msgs: vec![one.clone(), b1.clone(), other.clone()],
        ..Catchup::default()
    };
    let out = log.receive_catchup(both, LINK).unwrap();
    assert_eq!(out.proofs.len(), 1);
    let proof = &out.proofs[0];
    assert_eq!((&proof.first, &proof.second), (&one, &other));
    assert!(log.is_banned(&alice.public().0));
    // The author is refused in the rest of the catch-up: only bob's is shown.
    assert_eq!(out.delivered, vec![b1]);
    assert_eq!(log.pending(), 0);
}

#[test]
fn a_message_below_the_floor_its_own_catch_up_raises_is_skipped() {
    // Found by the group_log fuzz target: a message checked before the floor
    // was raised past it was then held as waiting, for ever.
    let (a, b) = (member(0), member(1));
    let (mut la, mut lb) = (log_of(&a), log_of(&b));
    let a1 = la.write(&a, "a1".into(), 1).unwrap();
    let a2 = la.write(&a, "a2".into(), 2).unwrap();
    got(&mut lb, a1).unwrap();
    got(&mut lb, a2.clone()).unwrap();
    let b1 = lb.write(&b, "b1".into(), 3).unwrap();
    // b1 (it needs a's 2) waits; a catch-up brings a's 2 with a floor at 2.
    let mut log = observer();
    assert!(got(&mut log, b1.clone()).unwrap().is_empty());
    let catchup = Catchup {
        have: vec![(a.public().0, 2)],
        floor: vec![(a.public().0, 2)],
        msgs: vec![a2],
        more: false,
    };
    let delivered = log.receive_catchup(catchup, LINK).unwrap().delivered;
    assert!(delivered.contains(&b1));
    assert_eq!(log.pending(), 0, "nothing left waiting below what we have");
}
