//! Hostile input and floods: each bad connection ends with an error or a close
//! while other clients keep pairing.

mod common;

use std::net::Ipv4Addr;

use common::{config, frame, hello, pair, pair_from, start, start_with_metrics, Client};
use wire::{ClientMsg, ErrorCode, MediatorMsg};

/// Opens a waiting host in room `n`, runs `abuse` on a fresh connection, checks
/// that connection ends with an error or close, and then that room `n` and a
/// new room still pair.
async fn survives(name: &str, bytes: &[u8], n: u64, close_write: bool) {
    let server = start(config()).await;
    let mut host = Client::connect(server.addr).await;
    host.send(&hello(n, "host")).await;
    host.expect_waiting().await;

    let mut bad = Client::connect(server.addr).await;
    let _ = bad.send_raw(bytes).await;
    if close_write {
        use tokio::io::AsyncWriteExt;
        let _ = bad.stream.shutdown().await;
    }
    let code = bad.expect_error_or_close().await;
    assert!(
        matches!(code, None | Some(ErrorCode::Malformed)),
        "{name}: {code:?}"
    );

    let mut joiner = Client::connect(server.addr).await;
    joiner.send(&hello(n, "joiner")).await;
    joiner.expect_matched(wire::Role::Joiner).await;
    host.expect_matched(wire::Role::Host).await;
    pair(server.addr, n + 1000).await;
}

#[tokio::test]
async fn garbage_bytes() {
    survives("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1, false).await;
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| i.wrapping_mul(2_654_435_761) as u8)
        .collect();
    survives("noise", &noise, 2, false).await;
    // A frame of the right size holding garbage.
    survives("garbage payload", &frame(&[0xee; 64]), 3, false).await;
}

#[tokio::test]
async fn zero_length_frame() {
    survives("zero length", &[0, 0, 0, 0], 10, false).await;
}

#[tokio::test]
async fn huge_length_prefix_is_refused_before_reading() {
    survives("0xFFFFFFFF", &[0xff; 4], 20, false).await;
    // One over the limit, announced with no payload behind it: refused at once,
    // not after waiting for 16 KiB that never come.
    let over = (wire::frame::MEDIATOR_FRAME_MAX as u32 + 1).to_be_bytes();
    let server = start(config()).await;
    let mut c = Client::connect(server.addr).await;
    c.send_raw(&over).await.unwrap();
    c.expect_error(ErrorCode::Malformed).await;
}

#[tokio::test]
async fn bincode_bomb() {
    // Nine bytes: a varint tag 0xFD followed by a u64 of 2^40, claiming a
    // string (or variant) of a terabyte.
    let bomb = [0xfd, 0, 0, 0, 0, 0, 1, 0, 0];
    survives("bare bomb", &frame(&bomb), 30, false).await;
    // The same nine bytes where the name's length goes inside a real Hello:
    // variant 0, version 1, 32 room bytes, then the claimed length.
    let mut payload = vec![0u8, 1];
    payload.extend_from_slice(&[7; 32]);
    payload.extend_from_slice(&bomb);
    survives("bomb in Hello name", &frame(&payload), 31, false).await;
}

#[tokio::test]
async fn truncated_frame() {
    let hello_frame = frame(&wire::encode(&hello(40, "trunc")).unwrap());
    // The header promises more than is sent, and the writer closes.
    survives("truncated payload", &hello_frame[..20], 40, true).await;
    survives("truncated header", &hello_frame[..2], 41, true).await;
    // Trailing bytes after a valid message in the same frame.
    let mut payload = wire::encode(&ClientMsg::Ping).unwrap();
    payload.push(0);
    survives("trailing bytes", &frame(&payload), 42, false).await;
}

#[tokio::test]
async fn hello_flood_from_one_address_is_throttled() {
    let server = start(mediator::Config {
        per_ip_connections: 1000,
        per_ip_hellos_per_min: 20,
        ..mediator::Config::default()
    })
    .await;
    let flooder = Ipv4Addr::new(127, 0, 0, 2);
    let mut throttled = 0;
    let mut open = Vec::new();
    for n in 0..60 {
        let mut c = Client::connect_from(flooder, server.addr).await;
        c.send(&hello(200 + n, "flood")).await;
        match c.recv().await {
            Some(MediatorMsg::Waiting { .. }) => open.push(c),
            Some(MediatorMsg::Error {
                code: ErrorCode::TooManyConnections,
                ..
            }) => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The bucket holds a minute's worth (one more may trickle in while the test runs).
    assert!((20..=21).contains(&open.len()), "{} admitted", open.len());
    assert_eq!(throttled, 60 - open.len());
    // Another address is unaffected.
    pair_from(Ipv4Addr::new(127, 0, 0, 3), server.addr, 300).await;
}

#[tokio::test]
async fn connection_flood_from_one_address_is_capped() {
    let server = start_with_metrics(mediator::Config {
        per_ip_connections: 5,
        ..mediator::Config::default()
    })
    .await;
    let flooder = Ipv4Addr::new(127, 0, 0, 4);
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(Client::connect_from(flooder, server.addr).await);
    }
    for _ in 0..5 {
        let mut extra = Client::connect_from(flooder, server.addr).await;
        assert_eq!(
            extra.expect_error_or_close().await,
            Some(ErrorCode::TooManyConnections)
        );
    }
    pair_from(Ipv4Addr::new(127, 0, 0, 5), server.addr, 400).await;
    // Closing frees the slots: once the server has seen every connection go
    // (the pair's too), the flooder's address pairs again.
    drop(silent);
    server.wait_for_metric("mediator_connections 0").await;
    pair_from(flooder, server.addr, 401).await;
}

#[tokio::test]
async fn max_connections_refuses_politely() {
    let server = start_with_metrics(mediator::Config {
        max_connections: 4,
        ..config()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(Client::connect(server.addr).await);
    }
    // All four admitted before the fifth arrives.
    server.wait_for_metric("mediator_connections 4").await;
    let mut extra = Client::connect(server.addr).await;
    assert_eq!(
        extra.expect_error_or_close().await,
        Some(ErrorCode::TooManyConnections)
    );
    // Two leave; once the server has seen it, a pair (two more) fits.
    silent.truncate(2);
    server.wait_for_metric("mediator_connections 2").await;
    pair(server.addr, 500).await;
}
