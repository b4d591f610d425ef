//! The soak in `cargo test` (issue 15): 90 s of two real clients chatting both ways
//! and sending files through proxies that cut, delay and stall the link; then every
//! message has arrived exactly once, every file byte-identical, and neither
//! client's RSS grew past a generous bound. The long run is
//! `cargo bench -p client --bench soak` (tests/common/soak.rs has the machinery).

mod common;

use std::time::Duration;

use common::soak::{run, Soak};

/// RSS growth allowed per client over the run. A client holds at most a few
/// transfer buffers and its bounded outbox; steady growth beyond this is a leak.
const RSS_GROWTH_KIB: i64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_files_survive_a_link_that_cuts_delays_and_stalls() {
    // A fixed schedule in CI (P2PCHAT_SOAK_SEED tries another); the timing of the
    // processes still varies from run to run.
    let mut soak = Soak::new(Duration::from_secs(90), Some(0x15_50AC));
    soak.settle = Duration::from_secs(40);
    // No mid-handshake ambushes in CI: each one after the host's HostConfirm is a
    // failed nonce reveal, and three in a run end it as a possible attack (§12.4),
    // which a 90 s run of ambushes can reach. The deterministic case is
    // `a_reconnect_cut_mid_handshake_is_retried`; the bench keeps them
    // (P2PCHAT_SOAK_WEIGHTS).
    soak.mischief.weights = [3, 0, 3, 3];
    let r = run(&soak).await;
    println!("{}", r.summary());
    for (label, d) in [
        ("alice->bob", &r.alice_to_bob),
        ("bob->alice", &r.bob_to_alice),
    ] {
        assert!(d.sent.len() > 100, "{label}: only {} typed", d.sent.len());
        assert_eq!(d.lost(), vec![], "{label}: lost (seed {})", r.seed);
        assert_eq!(
            d.duplicated(),
            vec![],
            "{label}: duplicated (seed {})",
            r.seed
        );
        assert_eq!(
            d.forged(),
            vec![],
            "{label}: shown but not sent so (seed {})",
            r.seed
        );
        assert_eq!(
            d.out_of_order(),
            0,
            "{label}: out of order (seed {})",
            r.seed
        );
        assert_eq!(
            d.acked.len(),
            d.sent.len(),
            "{label}: unacked (seed {})",
            r.seed
        );
    }
    assert!(
        r.settled,
        "not everything was delivered in time (seed {})",
        r.seed
    );
    assert!(
        r.cuts > 0 && r.alice.reconnecting + r.bob.reconnecting > 0,
        "the link was never cut"
    );
    assert!(r.files_verified >= 1, "no file arrived (seed {})", r.seed);
    assert_eq!(r.file_failures, Vec::<String>::new(), "seed {}", r.seed);
    for side in [&r.alice, &r.bob] {
        let growth = side.rss_end_kib as i64 - side.rss_start_kib as i64;
        assert!(side.rss_start_kib > 0, "{}: no RSS reading", side.name);
        assert!(
            growth <= RSS_GROWTH_KIB,
            "{}: RSS grew by {growth} KiB (seed {})",
            side.name,
            r.seed
        );
    }
}

/// The case the soak found (seed 5462767641137904345, `P2PCHAT_SOAK_WEIGHTS=1,6,1,1`):
/// after a drop, the connections of the next round are cut in the middle of the
/// peer handshake, and the host (alice here) ends the whole conversation with
/// `no_path` (exit 12, "no direct path to bob … bytes remaining on stream … you
/// passed --no-relay") about 10 s later, instead of trying another round within
/// `--reconnect-for` (docs/protocol.md §7.1). `NoPath` is final on the first
/// meeting (§12.3); once a conversation exists, `retryable` in app.rs now
/// retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_cut_mid_handshake_is_retried() {
    let dir = common::TempDir::new("soak-ambush");
    let med = common::Mediator::start(&[]).await;
    let server = med.server_arg();
    let (alice_args, pa) = common::soak::behind_chaos(&server, "alice", &dir, 1).await;
    let (bob_args, pb) = common::soak::behind_chaos(&server, "bob", &dir, 2).await;
    let (mut alice, mut bob) = common::connected_pair(&alice_args, &bob_args).await;
    // Both sides dial the other's proxy in the next round; each of those
    // connections is cut after 480 bytes, inside the handshake (found by trying
    // cut points on this branch's handshake: 330, 400 and 560 recover, 480 does not).
    for p in [&pa, &pb] {
        p.ambush_next(480);
        p.cut();
    }
    for c in [&mut alice, &mut bob] {
        c.expect("reconnecting").await;
    }
    for c in [&mut alice, &mut bob] {
        let again = c.expect_within("connected", Duration::from_secs(60)).await;
        assert_eq!(again["resumed"], true, "{}: {again}", c.name);
        assert!(
            !c.seen.iter().any(|e| e["event"] == "error"),
            "{}: {:?}",
            c.name,
            c.seen
        );
    }
    let (ambushed_a, ambushed_b) = (
        pa.counts()
            .ambushes
            .load(std::sync::atomic::Ordering::Relaxed),
        pb.counts()
            .ambushes
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(ambushed_a + ambushed_b >= 1, "the handshake was cut");
}
