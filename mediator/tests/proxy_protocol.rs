//! `--proxy-protocol`: behind a TCP load balancer the mediator takes each client's
//! address from the PROXY header (v1 or v2), so `Matched` carries the real
//! addresses, and a connection without the header is closed.

mod common;

use std::net::SocketAddr;

use common::{config, hello, start, Client};
use mediator::Config;
use wire::{MediatorMsg, Role};

fn v2_header(src: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = src else {
        panic!("IPv4 only here")
    };
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&v4.ip().octets());
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&v4.port().to_be_bytes());
    out.extend_from_slice(&7070u16.to_be_bytes());
    out
}

/// The test config, behind a balancer.
fn proxied() -> Config {
    Config {
        proxy_protocol: true,
        ..config()
    }
}

fn observed(msg: &MediatorMsg) -> (SocketAddr, SocketAddr) {
    match msg {
        MediatorMsg::Matched {
            observed_addr,
            your_addr,
            ..
        } => (*observed_addr, *your_addr),
        other => panic!("not Matched: {other:?}"),
    }
}

#[tokio::test]
async fn matched_carries_the_addresses_from_the_proxy_headers() {
    let server = start(proxied()).await;
    let alice: SocketAddr = "203.0.113.9:5555".parse().unwrap();
    let bob: SocketAddr = "198.51.100.4:6000".parse().unwrap();
    let mut host = Client::connect(server.addr).await;
    host.send_raw(&v2_header(alice)).await.unwrap();
    host.send(&hello(1, "alice")).await;
    host.expect_waiting().await;
    let mut joiner = Client::connect(server.addr).await;
    joiner
        .send_raw(b"PROXY TCP4 198.51.100.4 127.0.0.1 6000 7070\r\n")
        .await
        .unwrap();
    joiner.send(&hello(1, "bob")).await;
    let joined = joiner.expect_matched(Role::Joiner).await;
    assert_eq!(observed(&joined), (alice, bob));
    let hosted = host.expect_matched(Role::Host).await;
    assert_eq!(observed(&hosted), (bob, alice));
}

#[tokio::test]
async fn a_connection_without_the_header_is_closed() {
    let server = start(proxied()).await;
    let mut c = Client::connect(server.addr).await;
    c.send(&hello(2, "mallory")).await;
    assert!(c.recv().await.is_none(), "closed without an answer");
    // A balancer's health check (v2 LOCAL) is served under the connection's own address.
    let mut check = Client::connect(server.addr).await;
    let mut local = v2_header("192.0.2.1:1".parse().unwrap());
    local[12] = 0x20;
    check.send_raw(&local).await.unwrap();
    check.send(&wire::ClientMsg::Ping).await;
    assert!(matches!(check.recv().await, Some(MediatorMsg::Pong)));
}
