//! Read receipts in two-party conversations (docs/protocol.md §7.1): shown
//! only when both sides allow them (`--read-receipts`); a side that does not
//! sends none, and shows none it gets.

mod common;

use common::{client_args, Client, Mediator, TempDir};

async fn pair(
    room: &str,
    alice_reads: bool,
    bob_reads: bool,
) -> (Client, Client, Mediator, TempDir) {
    let dir = TempDir::new(room);
    let med = Mediator::start(&[]).await;
    let flags = |on: bool| -> Vec<&str> {
        let mut f = vec!["--room", room, "--no-presence"];
        if on {
            f.push("--read-receipts");
        }
        f
    };
    let a = client_args(&med.server_arg(), "alice", &dir, &flags(alice_reads));
    let b = client_args(&med.server_arg(), "bob", &dir, &flags(bob_reads));
    let (alice, bob) = common::connected_pair(&a, &b).await;
    (alice, bob, med, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_allowing_see_what_the_other_has_read() {
    let (mut alice, mut bob, _med, _dir) = pair("rr-both", true, true).await;
    alice.say("did you read this?").await;
    bob.expect("message").await;
    let read = alice.expect("read").await;
    assert_eq!(read["id"], 1, "{read}");
    bob.say("yes").await;
    alice.expect("message").await;
    let read = bob.expect("read").await;
    assert_eq!(read["id"], 1, "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_side_not_allowing_means_neither_sees_receipts() {
    // Bob allows and tells; alice does not allow, so she shows nothing.
    let (mut alice, mut bob, _med, _dir) = pair("rr-one", false, true).await;
    alice.say("first").await;
    bob.expect("message").await;
    // Bob's answer goes after any receipt he sent on the same link.
    bob.say("answer").await;
    alice.expect("message").await;
    assert!(
        !alice.seen.iter().any(|e| e["event"] == "read"),
        "{:?}",
        alice.seen
    );
    // And alice tells bob nothing of what she read.
    alice.say("and another").await;
    bob.expect("message").await;
    assert!(
        !bob.seen.iter().any(|e| e["event"] == "read"),
        "{:?}",
        bob.seen
    );
}
