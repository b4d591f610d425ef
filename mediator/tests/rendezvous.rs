//! docs/protocol.md §4 against `mediator::run` on 127.0.0.1:0: pairing, roles and
//! swapped details, independent rooms, one-shot rooms, and every `Hello` check.

mod common;

use std::time::Duration;

use common::{config, edit, hello, hello_with, public, start, start_with_metrics, Client};
use dhke::Group;
use wire::{ClientMsg, ErrorCode, MediatorMsg, RelayOffer, Role};

#[tokio::test]
async fn two_clients_pair_with_roles_and_swapped_details() {
    let server = start(config()).await;
    let mut alice = Client::connect(server.addr).await;
    let mut alice_hello = hello(1, "alice");
    edit(&mut alice_hello, |_, _, _, p| p[0] = 0x11);
    alice.send(&alice_hello).await;
    match alice.recv().await {
        Some(MediatorMsg::Waiting { expires_in_secs }) => assert_eq!(expires_in_secs, 600),
        other => panic!("expected Waiting, got {other:?}"),
    }

    let mut bob = Client::connect(server.addr).await;
    let mut bob_hello = hello(1, "bob");
    edit(&mut bob_hello, |_, _, _, p| p[0] = 0x22);
    bob.send(&bob_hello).await;

    let MediatorMsg::Matched {
        peer_name,
        public,
        observed_addr,
        listen_port,
        local_addrs,
        your_addr,
        relay,
        ..
    } = bob.expect_matched(Role::Joiner).await
    else {
        unreachable!()
    };
    assert_eq!(your_addr, bob.local_addr());
    let RelayOffer::Offered {
        token: bob_token, ..
    } = relay
    else {
        panic!("relay offered by default, got {relay:?}");
    };
    assert_eq!(peer_name, "alice");
    assert_eq!(public[0], 0x11);
    assert_eq!(public.len(), 384);
    assert_eq!(observed_addr, alice.local_addr());
    assert_eq!(listen_port, 4005);
    assert_eq!(local_addrs, vec!["192.168.1.5:4000".parse().unwrap()]);

    let MediatorMsg::Matched {
        peer_name,
        public,
        observed_addr,
        listen_port,
        local_addrs,
        your_addr,
        relay,
        ..
    } = alice.expect_matched(Role::Host).await
    else {
        unreachable!()
    };
    assert_eq!(your_addr, alice.local_addr());
    assert_eq!(
        relay,
        RelayOffer::Offered {
            token: bob_token,
            server: String::new()
        },
        "both sides get the same relay token"
    );
    assert_eq!(peer_name, "bob");
    assert_eq!(public[0], 0x22);
    assert_eq!(observed_addr, bob.local_addr());
    assert_eq!(listen_port, 4003);
    assert_eq!(local_addrs, vec!["192.168.1.3:4000".parse().unwrap()]);

    // Both stay for the punch: PunchPing, then PunchNow; leaving ends them.
    alice.answer_punch().await;
    bob.answer_punch().await;
    drop(alice);
    drop(bob);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rooms_are_independent_and_one_shot() {
    let server = start(config()).await;
    let mut a1 = Client::connect(server.addr).await;
    a1.send(&hello(10, "a1")).await;
    a1.expect_waiting().await;
    let mut b1 = Client::connect(server.addr).await;
    b1.send(&hello(11, "b1")).await;
    b1.expect_waiting().await;

    let mut b2 = Client::connect(server.addr).await;
    b2.send(&hello(11, "b2")).await;
    let MediatorMsg::Matched { peer_name, .. } = b2.expect_matched(Role::Joiner).await else {
        unreachable!()
    };
    assert_eq!(peer_name, "b1");
    b1.expect_matched(Role::Host).await;

    let mut a2 = Client::connect(server.addr).await;
    a2.send(&hello(10, "a2")).await;
    let MediatorMsg::Matched { peer_name, .. } = a2.expect_matched(Role::Joiner).await else {
        unreachable!()
    };
    assert_eq!(peer_name, "a1");
    a1.expect_matched(Role::Host).await;

    // The matched room is forgotten: the next Hello for it opens it afresh.
    let mut a3 = Client::connect(server.addr).await;
    a3.send(&hello(10, "a3")).await;
    a3.expect_waiting().await;
}

#[tokio::test]
async fn a_host_that_leaves_frees_its_room() {
    let server = start_with_metrics(config()).await;
    let mut host = Client::connect(server.addr).await;
    host.send(&hello(20, "gone")).await;
    host.expect_waiting().await;
    drop(host);
    // Once the server has seen the host go, its room is gone: the next arrival
    // waits rather than being matched with the departed host.
    server.wait_for_metric("mediator_waiting_rooms 0").await;
    let mut next = Client::connect(server.addr).await;
    next.send(&hello(20, "next")).await;
    next.expect_waiting().await;
    let mut joiner = Client::connect(server.addr).await;
    joiner.send(&hello(20, "joiner")).await;
    let MediatorMsg::Matched { peer_name, .. } = joiner.expect_matched(Role::Joiner).await else {
        unreachable!()
    };
    assert_eq!(peer_name, "next");
}

#[tokio::test]
async fn group_mismatch() {
    let server = start(config()).await;
    let mut host = Client::connect(server.addr).await;
    host.send(&hello(30, "host")).await;
    host.expect_waiting().await;
    let mut other = Client::connect(server.addr).await;
    other
        .send(&hello_with(
            30,
            "other",
            Group::Modp2048,
            public(Group::Modp2048),
        ))
        .await;
    other.expect_error(ErrorCode::GroupMismatch).await;
    // The host keeps waiting and still pairs.
    let mut joiner = Client::connect(server.addr).await;
    joiner.send(&hello(30, "joiner")).await;
    joiner.expect_matched(Role::Joiner).await;
    host.expect_matched(Role::Host).await;
}

#[tokio::test]
async fn bad_version() {
    let server = start(config()).await;
    let v = wire::PROTOCOL_VERSION;
    for version in [0, 1, v - 1, v + 1, u16::MAX] {
        let mut c = Client::connect(server.addr).await;
        let mut msg = hello(40, "v");
        edit(&mut msg, |v, _, _, _| *v = version);
        c.send(&msg).await;
        c.expect_error(ErrorCode::BadVersion).await;
    }
}

#[tokio::test]
async fn ping_before_hello_and_while_waiting() {
    let server = start(config()).await;
    let mut c = Client::connect(server.addr).await;
    c.send(&ClientMsg::Ping).await;
    assert_eq!(c.recv().await, Some(MediatorMsg::Pong));
    c.send(&hello(50, "pinger")).await;
    c.expect_waiting().await;
    for _ in 0..3 {
        c.send(&ClientMsg::Ping).await;
        assert_eq!(c.recv().await, Some(MediatorMsg::Pong));
    }
    // A second Hello on a waiting connection is a protocol error.
    c.send(&hello(51, "again")).await;
    c.expect_error(ErrorCode::Malformed).await;
}

#[tokio::test]
async fn bad_public_values() {
    let server = start(config()).await;
    let p = Group::Modp3072.prime_bytes().to_vec();
    let mut p_minus_1 = p.clone();
    *p_minus_1.last_mut().unwrap() -= 1;
    let mut one = vec![0u8; 384];
    one[383] = 1;
    let cases: Vec<(&str, u8, Vec<u8>)> = vec![
        ("too short", 15, vec![0x5a; 383]),
        ("too long", 15, vec![0x5a; 385]),
        ("empty", 15, Vec::new()),
        ("group 14 length in group 15", 15, vec![0x5a; 256]),
        ("zero", 15, vec![0; 384]),
        ("one", 15, one),
        ("p - 1", 15, p_minus_1),
        ("p", 15, p),
        ("all ones", 15, vec![0xff; 384]),
        ("unknown group", 16, vec![0x5a; 384]),
        ("group zero", 0, vec![0x5a; 384]),
    ];
    for (what, group, value) in cases {
        let mut c = Client::connect(server.addr).await;
        let mut msg = hello(60, "pub");
        edit(&mut msg, |_, _, g, public| {
            *g = group;
            *public = value;
        });
        c.send(&msg).await;
        match c.recv().await {
            Some(MediatorMsg::Error {
                code: ErrorCode::BadPublic,
                ..
            }) => {}
            other => panic!("{what}: expected BadPublic, got {other:?}"),
        }
    }
    // Group 14 with its own length is fine.
    let mut c = Client::connect(server.addr).await;
    c.send(&hello_with(
        61,
        "g14",
        Group::Modp2048,
        public(Group::Modp2048),
    ))
    .await;
    c.expect_waiting().await;
}

#[tokio::test]
async fn bad_names() {
    let server = start(config()).await;
    let names = [
        String::new(),
        "x".repeat(33),
        "a\nb".to_owned(),
        "tab\there".to_owned(),
        "\u{1b}[31mred".to_owned(),
        "nul\0".to_owned(),
        "bidi\u{202e}txt".to_owned(),
        " padded".to_owned(),
    ];
    for name in names {
        let mut c = Client::connect(server.addr).await;
        let mut msg = hello(70, "n");
        edit(&mut msg, |_, n, _, _| *n = name.clone());
        c.send(&msg).await;
        c.expect_error(ErrorCode::BadName).await;
    }
    // 32 characters (multi-byte ones too) are fine.
    let mut c = Client::connect(server.addr).await;
    c.send(&hello(71, &"é".repeat(32))).await;
    c.expect_waiting().await;
}

/// Invalid UTF-8 in the name cannot even be decoded as a `String`: `Malformed`
/// (docs/protocol.md §4 allows `BadName` or `Malformed`).
#[tokio::test]
async fn invalid_utf8_name() {
    let server = start(config()).await;
    let mut payload = wire::encode(&hello(72, "abcd")).unwrap();
    let at = payload
        .windows(4)
        .position(|w| w == b"abcd")
        .expect("name bytes in the payload");
    payload[at + 1] = 0xff;
    let mut c = Client::connect(server.addr).await;
    c.send_raw(&common::frame(&payload)).await.unwrap();
    let code = c.expect_error_or_close().await;
    assert!(
        matches!(code, Some(ErrorCode::Malformed | ErrorCode::BadName)),
        "{code:?}"
    );
}

#[tokio::test]
async fn too_many_local_addresses() {
    let server = start(config()).await;
    let mut msg = hello(80, "many");
    if let ClientMsg::Hello { local_addrs, .. } = &mut msg {
        *local_addrs = (0..9)
            .map(|i| format!("10.0.0.{i}:1").parse().unwrap())
            .collect();
    }
    let mut c = Client::connect(server.addr).await;
    c.send(&msg).await;
    c.expect_error(ErrorCode::Malformed).await;

    // Exactly the maximum is fine.
    if let ClientMsg::Hello { local_addrs, .. } = &mut msg {
        local_addrs.truncate(wire::rendezvous::MAX_LOCAL_ADDRS);
    }
    let mut c = Client::connect(server.addr).await;
    c.send(&msg).await;
    c.expect_waiting().await;
}

#[tokio::test]
async fn max_rooms_reached() {
    let server = start(mediator::Config {
        max_rooms: 2,
        ..config()
    })
    .await;
    let mut hosts = Vec::new();
    for n in 0..2 {
        let mut c = Client::connect(server.addr).await;
        c.send(&hello(90 + n, "host")).await;
        c.expect_waiting().await;
        hosts.push(c);
    }
    let mut third = Client::connect(server.addr).await;
    third.send(&hello(99, "third")).await;
    third.expect_error(ErrorCode::TooManyConnections).await;
    // Joining a waiting room still works when the table is full, and frees a slot.
    let mut joiner = Client::connect(server.addr).await;
    joiner.send(&hello(90, "joiner")).await;
    joiner.expect_matched(Role::Joiner).await;
    hosts[0].expect_matched(Role::Host).await;
    let mut fourth = Client::connect(server.addr).await;
    fourth.send(&hello(99, "fourth")).await;
    fourth.expect_waiting().await;
}

#[tokio::test]
async fn shutdown_sends_shutting_down_to_waiting_clients() {
    let server = start(config()).await;
    let mut waiting = Vec::new();
    for n in 0..3 {
        let mut c = Client::connect(server.addr).await;
        c.send(&hello(100 + n, "w")).await;
        c.expect_waiting().await;
        waiting.push(c);
    }
    let mut silent = Client::connect(server.addr).await;
    let addr = server.addr;
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("run returns within 5 s")
        .unwrap();
    for c in &mut waiting {
        c.expect_error(ErrorCode::ShuttingDown).await;
    }
    assert!(matches!(
        silent.expect_error_or_close().await,
        None | Some(ErrorCode::ShuttingDown)
    ));
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn metrics_endpoint() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = mediator::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let metrics = mediator::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(mediator::run_with_metrics(
        listener,
        Some(metrics),
        config(),
        async {
            let _ = stopped.await;
        },
    ));
    common::pair(addr, 110).await;
    let mut waiting = Client::connect(addr).await;
    waiting.send(&hello(111, "w")).await;
    waiting.expect_waiting().await;
    let mut bad = Client::connect(addr).await;
    let mut msg = hello(112, "b");
    edit(&mut msg, |v, _, _, _| *v = 9);
    bad.send(&msg).await;
    bad.expect_error(ErrorCode::BadVersion).await;

    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    };
    let text = get("/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    for line in [
        "mediator_matches_total 1",
        "mediator_waiting_rooms 1",
        "mediator_errors_total{code=\"bad_version\"} 1",
        "mediator_rejected_total{limit=\"per_ip_hellos\"} 0",
        "mediator_connections 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(get("/").await.starts_with("HTTP/1.1 404"));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

// Paused time: the clock moves on only when the runtime is idle, so the server,
// woken by each chunk's arrival, reads it before the sleep ends and the next is
// written (a real-time pause would only make that likely).
#[tokio::test(start_paused = true)]
async fn frames_split_across_writes_and_pipelined() {
    let server = start(config()).await;
    let mut bytes = common::frame(&wire::encode(&hello(120, "split")).unwrap());
    bytes.extend(common::frame(&wire::encode(&ClientMsg::Ping).unwrap()));
    let mut c = Client::connect(server.addr).await;
    for chunk in [&bytes[..3], &bytes[3..200], &bytes[200..]] {
        c.send_raw(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.expect_waiting().await;
    assert_eq!(c.recv().await, Some(MediatorMsg::Pong));

    // A frame of the maximum size is read whole (and refused as garbage).
    let mut big = Client::connect(server.addr).await;
    big.send_raw(&common::frame(&vec![0x33; wire::frame::MEDIATOR_FRAME_MAX]))
        .await
        .unwrap();
    big.expect_error(ErrorCode::Malformed).await;
}

/// A dual-stack listener sees IPv4 clients as v4-mapped IPv6 addresses; the
/// mediator reports them as plain IPv4. (Binding the v4-mapped loopback address
/// keeps the test on 127.0.0.1.)
#[tokio::test]
async fn v4_mapped_peers_are_reported_as_ipv4() {
    let listener = match mediator::bind("[::ffff:127.0.0.1]:0".parse().unwrap()) {
        Ok(l) => l,
        Err(e) => panic!("dual-stack bind on the v4-mapped loopback failed: {e}"),
    };
    let port = listener.local_addr().unwrap().port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(mediator::run(listener, config(), async {
        let _ = stopped.await;
    }));
    let mut host = Client::connect(addr).await;
    host.send(&hello(130, "host")).await;
    host.expect_waiting().await;
    let mut joiner = Client::connect(addr).await;
    joiner.send(&hello(130, "joiner")).await;
    let MediatorMsg::Matched { observed_addr, .. } = joiner.expect_matched(Role::Joiner).await
    else {
        unreachable!()
    };
    assert!(observed_addr.is_ipv4(), "{observed_addr}");
    assert_eq!(observed_addr, host.local_addr());
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
