//! docs/protocol.md §12 against `mediator::run` on 127.0.0.1:0: the punch timing
//! after `Matched`, and the relay (tokens, splicing, caps, refusals).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, frame, hello, relay_pair, relay_round_trips, start, Client};
use mediator::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Barrier, Semaphore};
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

/// Ends our sending side and reads on: what the mediator's close looks like.
async fn close_write_and_read(c: &mut Client) -> std::io::Result<usize> {
    c.stream.shutdown().await.expect("shutdown");
    let mut rest = [0u8; 64];
    tokio::time::timeout(Duration::from_secs(10), c.stream.read(&mut rest))
        .await
        .expect("the mediator closes in time")
}

/// A client that closes after `Matched` (during the probe or after `PunchNow`) is
/// answered with a reset, not a FIN: no ACK round, and no TIME_WAIT on the client's
/// side. (Our clients close the whole socket, so they never read this reset; the
/// half-close here only makes it visible.)
#[tokio::test]
async fn a_client_closing_after_matched_is_answered_with_a_reset() {
    let server = start(config()).await;
    let (mut host, mut joiner, _, _) = matched_pair(server.addr, 40, false, false).await;
    assert!(matches!(
        host.recv().await,
        Some(MediatorMsg::PunchPing { .. })
    ));
    let Some(MediatorMsg::PunchPing { nonce }) = joiner.recv().await else {
        panic!("expected PunchPing")
    };
    joiner.send(&ClientMsg::PunchPong { nonce }).await;
    // The host leaves while its probe is out: the joiner's PunchNow comes at once.
    let during_probe = close_write_and_read(&mut host).await;
    assert_eq!(
        during_probe.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "closing during the probe"
    );
    assert_eq!(joiner.recv().await, Some(MediatorMsg::PunchNow));
    let after_punch_now = close_write_and_read(&mut joiner).await;
    assert_eq!(
        after_punch_now.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "closing after PunchNow"
    );
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

/// One relay join with `token` from a fresh connection, sent when `go` releases
/// it: the connection if `RelayReady` came, else what came instead.
async fn join_when_released(
    addr: std::net::SocketAddr,
    token: [u8; 32],
    go: Arc<Barrier>,
) -> Result<Client, String> {
    let mut c = Client::connect(addr).await;
    let join = frame(&wire::encode(&ClientMsg::RelayJoin { token }).unwrap());
    go.wait().await;
    c.send_raw(&join).await.map_err(|e| e.to_string())?;
    match c.recv().await {
        Some(MediatorMsg::RelayReady) => Ok(c),
        other => Err(format!("{other:?}")),
    }
}

/// docs/protocol.md §12.3, the atomic pairing: both sides of a pair present the
/// token at the same instant (released together by a barrier, on different
/// worker threads), many times over. Each time the relay must splice the two,
/// never leave both waiting as "first", and carry bytes both ways.
///
/// The race this guards against (a look-up and a registration under two
/// locks) had a window of well under a microsecond: on loopback about 1 pair in
/// 1 000 hit it, so this catches it only sometimes; `relay.rs`'s unit test
/// `claims_from_many_threads_pair_each_pair_once` races the table itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_sides_joining_the_relay_at_the_same_instant_are_spliced_every_time() {
    const PAIRS: u64 = 2_000;
    let server = start(Config {
        // Four Hellos (two matches, two joins) per pair.
        per_ip_hellos_per_min: 1_000_000,
        // A side left waiting for nobody is refused after this, not after 60 s.
        relay_token_ttl: Duration::from_secs(5),
        ..config()
    })
    .await;
    let addr = server.addr;
    // Pairs in flight at once, within the per-address connection limit.
    let in_flight = Arc::new(Semaphore::new(64));
    let mut pairs = tokio::task::JoinSet::new();
    for n in 0..PAIRS {
        let in_flight = in_flight.clone();
        pairs.spawn(async move {
            let _permit = in_flight.acquire_owned().await.unwrap();
            let (host, joiner, offer, _) = matched_pair(addr, 1000 + n, false, false).await;
            drop((host, joiner));
            let token = token_of(&offer);
            let go = Arc::new(Barrier::new(2));
            let a = tokio::spawn(join_when_released(addr, token, go.clone()));
            let b = tokio::spawn(join_when_released(addr, token, go));
            match (a.await.unwrap(), b.await.unwrap()) {
                (Ok(mut a), Ok(mut b)) => {
                    relay_round_trips(&mut a, &mut b, 1).await;
                    Ok(())
                }
                (a, b) => Err(format!(
                    "pair {n}: {:?} / {:?}",
                    a.map(|_| "RelayReady"),
                    b.map(|_| "RelayReady")
                )),
            }
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = pairs.join_next().await {
        if let Err(why) = done.unwrap() {
            failed.push(why);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {PAIRS} pairs were not spliced: {failed:#?}",
        failed.len()
    );
}

/// docs/protocol.md §12.3, one session per pair: six joins with one token make
/// exactly one spliced session; the four others are refused and told why, and
/// after that session ends the token opens no other.
#[tokio::test]
async fn six_joins_with_one_token_make_one_session_and_the_others_are_refused() {
    let server = start(config()).await;
    let (_host, _joiner, offer, _) = matched_pair(server.addr, 20, false, false).await;
    let token = token_of(&offer);
    let mut joins = Vec::new();
    for _ in 0..6 {
        joins.push(relay_join(server.addr, token).await);
    }
    let mut spliced = Vec::new();
    let mut refused = Vec::new();
    for mut c in joins {
        match c.recv().await {
            Some(MediatorMsg::RelayReady) => spliced.push(c),
            Some(MediatorMsg::Error { code, message }) => {
                assert!(c.recv().await.is_none(), "closed after the refusal");
                refused.push((code, message));
            }
            other => panic!("expected RelayReady or Error, got {other:?}"),
        }
    }
    assert_eq!(
        (spliced.len(), refused.len()),
        (2, 4),
        "one session (two sides), four refusals: {refused:?}"
    );
    for (code, message) in &refused {
        assert_eq!(*code, ErrorCode::RelayRefused, "{message}");
        assert!(
            message.contains("already has its relay session"),
            "the refusal says why: {message}"
        );
    }
    let (mut a, mut b) = (spliced.remove(0), spliced.remove(0));
    relay_round_trips(&mut a, &mut b, 3).await;
    // The session ends (one side leaves, the other is closed) ...
    drop(a);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), b.stream.read_to_end(&mut rest))
        .await
        .expect("the other side is closed")
        .unwrap();
    // ... and the token, still within its life, opens no second one.
    for _ in 0..2 {
        let mut late = relay_join(server.addr, token).await;
        let message = late.expect_error(ErrorCode::RelayRefused).await;
        assert!(
            message.contains("session has ended"),
            "the refusal says why: {message}"
        );
    }
}

/// docs/protocol.md §12.3: bytes after `RelayJoin` while waiting for the other
/// side are `Malformed`, and the pair is free again for its real sides. Paused
/// time: the sleep below only lets the mediator take the join first, and the
/// token's life would pass in an instant if the bytes went unnoticed.
#[tokio::test(start_paused = true)]
async fn a_waiting_side_that_sends_bytes_is_refused_and_the_pair_stays_free() {
    let server = start(Config {
        relay_token_ttl: Duration::from_secs(5),
        ..config()
    })
    .await;
    let (_host, _joiner, offer, _) = matched_pair(server.addr, 21, false, false).await;
    let token = token_of(&offer);
    let mut early = relay_join(server.addr, token).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    early.send_raw(&frame(b"too soon")).await.unwrap();
    let message = early.expect_error(ErrorCode::Malformed).await;
    assert!(message.contains("before RelayReady"), "{message}");
    let (mut a, mut b) = relay_pair(server.addr, token).await;
    relay_round_trips(&mut a, &mut b, 2).await;
}
