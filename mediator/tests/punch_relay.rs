//! docs/protocol.md §12 against `mediator::run` on 127.0.0.1:0: the punch timing
//! after `Matched`, and the relay (tokens, splicing, caps, refusals).

mod common;

use std::time::{Duration, Instant};

use common::{config, frame, hello, relay_pair, relay_round_trips, start, Client};
use mediator::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire::frame::RELAY_NOTICE;
use wire::{ClientMsg, ErrorCode, Link, MediatorMsg, RelayOffer, Role};

/// Pairs two clients in room `n`; returns (host, joiner, host's relay offer, joiner's).
async fn matched_pair(
    addr: std::net::SocketAddr,
    n: u64,
    host_no_relay: bool,
    joiner_no_relay: bool,
) -> (Client, Client, RelayOffer, RelayOffer) {
    let with_relay = |mut msg: ClientMsg, refuse: bool| {
        if let ClientMsg::Hello { no_relay, .. } = &mut msg {
            *no_relay = refuse;
        }
        msg
    };
    let mut host = Client::connect(addr).await;
    host.send(&with_relay(hello(n, "host"), host_no_relay))
        .await;
    host.expect_waiting().await;
    let mut joiner = Client::connect(addr).await;
    joiner
        .send(&with_relay(hello(n, "joiner"), joiner_no_relay))
        .await;
    let offer = |msg: MediatorMsg| match msg {
        MediatorMsg::Matched { relay, .. } => relay,
        _ => unreachable!(),
    };
    let joiner_offer = offer(joiner.expect_matched(Role::Joiner).await);
    let host_offer = offer(host.expect_matched(Role::Host).await);
    (host, joiner, host_offer, joiner_offer)
}

fn token_of(offer: &RelayOffer) -> [u8; 32] {
    match offer {
        RelayOffer::Offered { token, server } => {
            assert!(server.is_empty(), "same server");
            *token
        }
        other => panic!("expected a relay offer, got {other:?}"),
    }
}

/// Opens a relay connection with `token` and waits for `RelayReady`.
async fn relay_join(addr: std::net::SocketAddr, token: [u8; 32]) -> Client {
    let mut c = Client::connect(addr).await;
    c.send(&ClientMsg::RelayJoin { token }).await;
    c
}

/// Reads peer frames until the relay's end notice; returns its code and message.
async fn read_until_notice(c: &mut Client) -> (ErrorCode, String) {
    for _ in 0..10_000 {
        let mut header = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), c.stream.read_exact(&mut header))
            .await
            .expect("notice in time")
            .expect("read header");
        if header == RELAY_NOTICE {
            match c.recv().await {
                Some(MediatorMsg::Error { code, message }) => return (code, message),
                other => panic!("expected the notice's Error, got {other:?}"),
            }
        }
        let len = Link::Peer.parse_header(header).expect("peer frame length");
        let mut payload = vec![0u8; len];
        c.stream.read_exact(&mut payload).await.expect("payload");
    }
    panic!("no end notice");
}

#[tokio::test]
async fn punch_now_reaches_the_nearer_side_later_by_half_the_rtt_difference() {
    let server = start(config()).await;
    let (mut host, mut joiner, _, _) = matched_pair(server.addr, 1, false, false).await;
    // The host answers its probe 400 ms late: it looks 200 ms farther away, so
    // the joiner's PunchNow is held back about 200 ms.
    let probe = |msg: Option<MediatorMsg>| match msg {
        Some(MediatorMsg::PunchPing { nonce }) => nonce,
        other => panic!("expected PunchPing, got {other:?}"),
    };
    let host_nonce = probe(host.recv().await);
    let joiner_nonce = probe(joiner.recv().await);
    joiner
        .send(&ClientMsg::PunchPong {
            nonce: joiner_nonce,
        })
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    host.send(&ClientMsg::PunchPong { nonce: host_nonce }).await;
    let (host_at, joiner_at) = tokio::join!(
        async {
            assert_eq!(host.recv().await, Some(MediatorMsg::PunchNow));
            Instant::now()
        },
        async {
            assert_eq!(joiner.recv().await, Some(MediatorMsg::PunchNow));
            Instant::now()
        }
    );
    let lag = joiner_at.saturating_duration_since(host_at);
    assert!(
        lag >= Duration::from_millis(150),
        "the nearer side's PunchNow must wait: lag {lag:?}"
    );
    // The connection stays for pings until the client leaves.
    host.send(&ClientMsg::Ping).await;
    assert_eq!(host.recv().await, Some(MediatorMsg::Pong));
}

#[tokio::test]
async fn a_client_that_never_answers_the_probe_still_gets_punch_now() {
    let server = start(config()).await;
    let (mut host, mut joiner, _, _) = matched_pair(server.addr, 2, false, false).await;
    assert!(matches!(
        joiner.recv().await,
        Some(MediatorMsg::PunchPing { .. })
    ));
    let Some(MediatorMsg::PunchPing { nonce }) = host.recv().await else {
        panic!("expected PunchPing")
    };
    host.send(&ClientMsg::PunchPong { nonce }).await;
    assert_eq!(host.recv().await, Some(MediatorMsg::PunchNow));
    assert_eq!(joiner.recv().await, Some(MediatorMsg::PunchNow));
}

#[tokio::test]
async fn relay_splices_the_two_sides_and_forwards_frames_unchanged() {
    let server = start(config()).await;
    let (_host, _joiner, host_offer, joiner_offer) =
        matched_pair(server.addr, 3, false, false).await;
    let token = token_of(&host_offer);
    assert_eq!(token, token_of(&joiner_offer));
    let (mut a, mut b) = relay_pair(server.addr, token).await;
    relay_round_trips(&mut a, &mut b, 50).await;
    // One side leaving ends the other.
    drop(a);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), b.stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the other side is closed too");
}

#[tokio::test]
async fn relay_refuses_a_forged_token() {
    let server = start(config()).await;
    let (_host, _joiner, offer, _) = matched_pair(server.addr, 4, false, false).await;
    let mut token = token_of(&offer);
    token[20] ^= 1;
    let mut c = relay_join(server.addr, token).await;
    let message = c.expect_error(ErrorCode::RelayRefused).await;
    assert!(message.contains("not issued here"), "{message}");
}

#[tokio::test]
async fn relay_off_is_said_in_matched_and_refused_at_the_relay() {
    let server = start(Config {
        relay: false,
        ..config()
    })
    .await;
    let (_host, _joiner, host_offer, joiner_offer) =
        matched_pair(server.addr, 5, false, false).await;
    assert_eq!(host_offer, RelayOffer::Off);
    assert_eq!(joiner_offer, RelayOffer::Off);
    let mut c = relay_join(server.addr, [0; 32]).await;
    let message = c.expect_error(ErrorCode::RelayRefused).await;
    assert!(message.contains("--relay off"), "{message}");
}

#[tokio::test]
async fn no_relay_on_one_side_is_named_to_both() {
    let server = start(config()).await;
    let (_h, _j, host_offer, joiner_offer) = matched_pair(server.addr, 6, false, true).await;
    assert_eq!(host_offer, RelayOffer::RefusedByPeer);
    assert_eq!(joiner_offer, RelayOffer::RefusedByYou);
}

#[tokio::test]
async fn a_relay_session_past_its_byte_cap_ends_with_a_notice_to_both_and_pairing_goes_on() {
    let server = start(Config {
        relay_max_bytes: 64 * 1024,
        ..config()
    })
    .await;
    let (_host, _joiner, offer, _) = matched_pair(server.addr, 7, false, false).await;
    let token = token_of(&offer);
    let mut a = relay_join(server.addr, token).await;
    let mut b = relay_join(server.addr, token).await;
    a.expect_relay_ready().await;
    b.expect_relay_ready().await;
    let chunk = vec![0x42u8; 8 * 1024];
    // 64 KiB of cap: the ninth 8 KiB frame passes it.
    for _ in 0..12 {
        if a.send_raw(&frame(&chunk)).await.is_err() {
            break;
        }
    }
    let (code, message) = read_until_notice(&mut b).await;
    assert_eq!(code, ErrorCode::RelayLimit);
    assert!(message.contains("65536 bytes"), "{message}");
    let (code, _) = read_until_notice(&mut a).await;
    assert_eq!(code, ErrorCode::RelayLimit);
    // Meanwhile and afterwards, pairing goes on.
    common::pair(server.addr, 8).await;
}

#[tokio::test]
async fn an_idle_relay_session_is_ended_with_a_notice() {
    let server = start(Config {
        relay_idle: Duration::from_millis(600),
        ..config()
    })
    .await;
    let (_host, _joiner, offer, _) = matched_pair(server.addr, 9, false, false).await;
    let token = token_of(&offer);
    let mut a = relay_join(server.addr, token).await;
    let mut b = relay_join(server.addr, token).await;
    a.expect_relay_ready().await;
    b.expect_relay_ready().await;
    let (code, message) = read_until_notice(&mut a).await;
    assert_eq!(code, ErrorCode::RelayLimit);
    assert!(message.contains("without traffic"), "{message}");
}

#[tokio::test]
async fn a_relay_join_whose_peer_never_comes_is_refused_after_the_token_life() {
    let server = start(Config {
        relay_token_ttl: Duration::from_secs(1),
        ..config()
    })
    .await;
    let (_host, _joiner, offer, _) = matched_pair(server.addr, 10, false, false).await;
    let mut a = relay_join(server.addr, token_of(&offer)).await;
    let message = a.expect_error(ErrorCode::RelayRefused).await;
    assert!(message.contains("did not come"), "{message}");
}

#[tokio::test]
async fn an_oversized_frame_through_the_relay_closes_both_sides() {
    let server = start(config()).await;
    let (_host, _joiner, offer, _) = matched_pair(server.addr, 11, false, false).await;
    let token = token_of(&offer);
    let mut a = relay_join(server.addr, token).await;
    let mut b = relay_join(server.addr, token).await;
    a.expect_relay_ready().await;
    b.expect_relay_ready().await;
    let _ = a.stream.write_all(&u32::MAX.to_be_bytes()).await;
    let (code, _) = read_until_notice(&mut b).await;
    assert_eq!(code, ErrorCode::Malformed);
}

#[tokio::test]
async fn allocate_reserves_the_smallest_free_nameplate_until_the_connection_ends() {
    let server = start(config()).await;
    let allocated = |msg: Option<MediatorMsg>| match msg {
        Some(MediatorMsg::Allocated { nameplate }) => nameplate,
        other => panic!("expected Allocated, got {other:?}"),
    };
    let mut a = Client::connect(server.addr).await;
    a.send(&ClientMsg::Allocate).await;
    assert_eq!(allocated(a.recv().await), 1);
    let mut b = Client::connect(server.addr).await;
    b.send(&ClientMsg::Allocate).await;
    assert_eq!(allocated(b.recv().await), 2);
    // One per connection.
    b.send(&ClientMsg::Allocate).await;
    b.expect_error(ErrorCode::Malformed).await;
    // The host waits under its nameplate; when it leaves, the number is free.
    a.send(&hello(12, "host")).await;
    a.expect_waiting().await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = Client::connect(server.addr).await;
    c.send(&ClientMsg::Allocate).await;
    assert_eq!(allocated(c.recv().await), 1);
}
