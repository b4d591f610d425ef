//! What a lying mediator or a stranger can do at the host's port and what it
//! costs us (docs/protocol.md §12.4): bounded nonce reveals, unauthenticated
//! `Reject`s, and idle connections that must not crowd out the real joiner.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{client_args as args, Client, Mediator, TempDir};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grinding_man_in_the_middle_gets_at_most_two_host_nonces_then_possible_attack() {
    let dir = TempDir::new("grind");
    let med = Mediator::start(&[]).await;
    let mut alice = Client::start(
        "alice",
        &args(&med.server_arg(), "alice", &dir, &["--room", "r-grind"]),
    );
    alice.expect("waiting").await;
    let seen = common::raw_peer::grind(med.addr, "r-grind", "mallory", 20).await;
    assert_eq!(
        seen.confirms, 2,
        "the host reveals its nonce at most twice per match: {seen:?}"
    );
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "possible_attack", "{err}");
    assert!(err["text"].as_str().unwrap().contains("possible attack"));
    assert_eq!(alice.exit_code().await, 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_from_a_stranger_does_not_end_the_joiners_attempt() {
    let dir = TempDir::new("reject");
    let med = Mediator::start(&[]).await;
    // Alice advertises an address where a stranger answers every PeerHello with
    // Reject; her real port stays reachable by the punch dial.
    let stranger = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stranger_addr = stranger.local_addr().unwrap();
    tokio::spawn(async move {
        use futures::{SinkExt, StreamExt};
        while let Ok((stream, _)) = stranger.accept().await {
            tokio::spawn(async move {
                let mut framed =
                    tokio_util::codec::Framed::new(stream, wire::FrameCodec::new(wire::Link::Peer));
                let _ = framed.next().await;
                let reject = wire::PeerHandshake::Reject {
                    reason: "go away".into(),
                };
                let _ = framed.send(wire::encode(&reject).unwrap().as_slice()).await;
            });
        }
    });
    let mut alice_args = args(&med.server_arg(), "alice", &dir, &["--room", "r-rej"]);
    common::set_flag(&mut alice_args, "--advertise", &stranger_addr.to_string());
    let mut alice = Client::start("alice", &alice_args);
    alice.expect("waiting").await;
    let mut bob = Client::start(
        "bob",
        &args(&med.server_arg(), "bob", &dir, &["--room", "r-rej"]),
    );
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["sas"], b["sas"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_strangers_beyond_two_per_address_are_closed_at_once_and_the_rest_after_the_first_message_deadline(
) {
    let dir = TempDir::new("idle");
    let med = Mediator::start(&[]).await;
    // No path will work (the only announced address is dead, nobody punches or
    // relays), so the host's race runs while the strangers knock.
    let dead = format!("127.0.0.1:{}", common::free_port());
    let quiet = ["--room", "r-idle", "--no-punch", "--no-relay"];
    let mut alice_args = args(&med.server_arg(), "alice", &dir, &quiet);
    common::set_flag(&mut alice_args, "--advertise", &dead);
    let mut alice = Client::start("alice", &alice_args);
    let waiting = alice.expect("waiting").await;
    let host: SocketAddr = waiting["listen"].as_str().unwrap().parse().unwrap();
    let _bob = Client::start("bob", &args(&med.server_arg(), "bob", &dir, &quiet));
    alice.expect("matched").await;
    // Twenty silent connections from another loopback address: a stranger.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(Ipv4Addr::new(127, 0, 0, 2).into(), 0))
            .unwrap();
        idle.push(socket.connect(host).await.unwrap());
    }
    let closed_within = |idle: &mut Vec<tokio::net::TcpStream>, wait: Duration| {
        let idle = std::mem::take(idle);
        async move {
            let mut open = Vec::new();
            let mut closed = 0;
            for mut stream in idle {
                let mut byte = [0u8; 1];
                match tokio::time::timeout(wait, stream.read(&mut byte)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
                    _ => open.push(stream),
                }
            }
            (closed, open)
        }
    };
    let (closed, mut open) = closed_within(&mut idle, Duration::from_millis(500)).await;
    assert_eq!(closed, 18, "all but two per address are closed at once");
    // The two being judged get the first-message deadline (3 s), not 10 s.
    let (closed, _) = closed_within(&mut open, Duration::from_secs(5)).await;
    assert_eq!(
        closed, 2,
        "the judged strangers are dropped at their deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reveal_bound_holds_across_reconnect_rounds_one_grind_a_round_ends_in_possible_attack()
{
    let dir = TempDir::new("grind-rounds");
    let med = Mediator::start(&[]).await;
    let room = ["--room", "r-rounds"];
    let mut alice_args = args(&med.server_arg(), "alice", &dir, &room);
    common::set_flag(&mut alice_args, "--connect-timeout", "3s");
    common::set_flag(&mut alice_args, "--reconnect-for", "2m");
    let bob_args = args(&med.server_arg(), "bob", &dir, &room);
    let (mut alice, mut bob) = common::connected_pair(&alice_args, &bob_args).await;
    // Bob vanishes; each of Alice's reconnect rounds now meets the grinder,
    // which takes one nonce and drops the connection, so no round alone
    // reaches the per-match bound of two.
    bob.kill_hard().await;
    let mut confirms = 0;
    for round in 1..=3 {
        alice.expect("waiting").await;
        let mallory =
            common::raw_peer::meet_as_joiner_relay(med.addr, "r-rounds", "mallory", false).await;
        let seen = common::raw_peer::grind_with(mallory, 1).await;
        assert_eq!(seen.confirms, 1, "round {round}: {seen:?}");
        confirms += seen.confirms;
    }
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "possible_attack", "{err}");
    assert_eq!(alice.exit_code().await, 13);
    assert_eq!(
        confirms, 3,
        "three failed reveals in a run end it, whichever rounds they fall in"
    );
}
