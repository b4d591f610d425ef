//! Presence in the NAT lab (docs/protocol.md §21): two contacts behind two home
//! routers (real nftables NATs in network namespaces, tests/common/lab.rs).
//! Alice's messenger runs idle; bob writes to her with `--to`; they meet with
//! no input on her side, through a punched hole. Needs root, iproute2 and
//! nftables; without them this test fails, saying so.

mod common;

use common::lab::{Lab, RouterKind, Spot, Topology};

/// `args` without its `--room ROOM`: a messenger that names no conversation.
fn without_room(mut args: Vec<String>) -> Vec<String> {
    if let Some(i) = args.iter().position(|a| a == "--room") {
        args.drain(i..=i + 1);
    }
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_messenger_behind_a_home_router_is_reached_through_a_punched_hole() {
    let lab = Lab::build(&Topology::pair(
        Spot::Behind(RouterKind::HomeRouter),
        Spot::Behind(RouterKind::HomeRouter),
    ));
    let dir = common::TempDir::new("presence-lab");
    let _mediator = lab.start_mediator(&[]).await;

    // They meet once with a code, so each is the other's contact.
    let mut alice = lab.start_client(0, "alice", &lab.client_args("alice", "pl-meet", &dir, &[]));
    alice.expect("waiting").await;
    let mut bob = lab.start_client(1, "bob", &lab.client_args("bob", "pl-meet", &dir, &[]));
    alice.expect("connected").await;
    bob.expect("connected").await;
    alice.say("/close").await;
    assert_eq!(alice.exit_code().await, 0);
    bob.close_input();
    let _ = bob.exit_code().await;

    // Alice's messenger runs idle, waiting for her contact at the mediator.
    let mut alice = lab.start_client(
        0,
        "alice",
        &without_room(lab.client_args("alice", "-", &dir, &[])),
    );
    alice.expect("room").await;
    lab.wait_for_metrics(&["mediator_presence_tags 1".to_string()])
        .await;
    let mut bob = lab.start_client(
        1,
        "bob",
        &without_room(lab.client_args("bob", "-", &dir, &["--to", "alice"])),
    );
    bob.say("through two home routers").await;
    let connected = alice.expect("connected").await;
    assert_eq!(
        connected["conversation"]["label"], "contact bob",
        "{connected}"
    );
    assert_eq!(connected["path"], "punched", "{connected}");
    // Typed before the meeting, the line may come by the mailbox first.
    let m = match alice.seen.iter().find(|e| e["event"] == "message") {
        Some(m) => m.clone(),
        None => alice.expect("message").await,
    };
    assert_eq!(m["text"], "through two home routers", "{m}");
    bob.close_input();
    let _ = bob.exit_code().await;
    alice.say("/quit").await;
    let _ = alice.exit_code().await;
}
