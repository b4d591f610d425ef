//! Deadlines, in paused tokio time so minutes pass instantly: the hello timeout
//! (counted from accept, so a trickle is cut too), room expiry and the idle
//! timeout of a waiting client.

mod common;

use std::time::Duration;

use common::{config, hello, start, Client};
use tokio::time::Instant;
use wire::{ClientMsg, ErrorCode, MediatorMsg};

fn assert_near(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected && elapsed < expected + Duration::from_secs(2),
        "cut after {elapsed:?}, expected {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn silent_connection_is_cut_at_the_hello_timeout() {
    let server = start(config()).await;
    let started = Instant::now();
    let mut c = Client::connect(server.addr).await;
    c.expect_error(ErrorCode::Timeout).await;
    assert_near(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn byte_a_second_sender_is_cut_at_the_hello_timeout() {
    let server = start(config()).await;
    let started = Instant::now();
    let mut c = Client::connect(server.addr).await;
    let bytes = common::frame(&wire::encode(&hello(1, "slow")).unwrap());
    let (mut read, mut write) = c.stream.split();
    let trickle = async {
        use tokio::io::AsyncWriteExt;
        for b in &bytes {
            if write.write_all(std::slice::from_ref(b)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let answer = async {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let _ = read.read_to_end(&mut got).await;
        got
    };
    let got = tokio::select! {
        got = answer => got,
        _ = trickle => panic!("the whole Hello went through"),
    };
    assert_near(started.elapsed(), Duration::from_secs(10));
    let msg: MediatorMsg = wire::decode(&got[4..]).unwrap();
    assert!(
        matches!(
            msg,
            MediatorMsg::Error {
                code: ErrorCode::Timeout,
                ..
            }
        ),
        "{msg:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn pings_do_not_extend_the_hello_timeout() {
    let server = start(config()).await;
    let started = Instant::now();
    let mut c = Client::connect(server.addr).await;
    for _ in 0..3 {
        c.send(&ClientMsg::Ping).await;
        assert_eq!(c.recv().await, Some(MediatorMsg::Pong));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    c.expect_error(ErrorCode::Timeout).await;
    assert_near(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn expired_room_sends_timeout_and_is_freed() {
    let server = start(config()).await;
    let mut host = Client::connect(server.addr).await;
    host.send(&hello(2, "host")).await;
    host.expect_waiting().await;
    let opened = Instant::now();
    // Ping every 60 s (the protocol's rhythm) so only the room TTL can end it.
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        host.send(&ClientMsg::Ping).await;
        match host.recv().await {
            Some(MediatorMsg::Pong) => continue,
            Some(MediatorMsg::Error {
                code: ErrorCode::Timeout,
                ..
            }) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_near(opened.elapsed(), Duration::from_secs(600));
    let mut next = Client::connect(server.addr).await;
    next.send(&hello(2, "next")).await;
    next.expect_waiting().await;
}

#[tokio::test(start_paused = true)]
async fn waiting_client_that_stops_pinging_is_dropped() {
    let server = start(config()).await;
    let mut host = Client::connect(server.addr).await;
    host.send(&hello(3, "quiet")).await;
    host.expect_waiting().await;
    let opened = Instant::now();
    // Two pings keep it alive past one idle period...
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        host.send(&ClientMsg::Ping).await;
        assert_eq!(host.recv().await, Some(MediatorMsg::Pong));
    }
    // ...then silence: dropped 90 s after the last ping.
    tokio::time::sleep(Duration::from_secs(80)).await;
    host.expect_error(ErrorCode::Timeout).await;
    assert_near(opened.elapsed(), Duration::from_secs(120 + 90));
    let mut next = Client::connect(server.addr).await;
    next.send(&hello(3, "next")).await;
    next.expect_waiting().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_prompt_even_with_slow_clients() {
    let server = start(config()).await;
    let mut waiting = Client::connect(server.addr).await;
    waiting.send(&hello(4, "w")).await;
    waiting.expect_waiting().await;
    let mut trickler = Client::connect(server.addr).await;
    trickler.send_raw(&[0, 0]).await.unwrap();
    let started = Instant::now();
    server.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    waiting.expect_error(ErrorCode::ShuttingDown).await;
    assert!(matches!(
        trickler.expect_error_or_close().await,
        None | Some(ErrorCode::ShuttingDown)
    ));
}
