//! The metrics listener (`mediator::metrics`): a well-formed Prometheus text
//! page (each family typed once, every series in a typed family), one request
//! per connection, the request-head bound, the scrape timeout and the cap on
//! scrapes at once (the last two in paused time).

mod common;

use std::net::SocketAddr;

use common::{config, start_with_metrics, RECV_TIMEOUT};
use mediator::metrics::{MAX_REQUEST, MAX_SCRAPES, SCRAPE_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use wire::{ErrorCode, PathLabel};

/// Sends `request` and reads until the server closes (a reset after the answer
/// counts as a close).
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_to_close(&mut s).await
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(RECV_TIMEOUT, s.read(&mut buf))
            .await
            .expect("the metrics listener closes the connection")
        {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Every family the mediator exposes, with its type.
const FAMILIES: [(&str, &str); 18] = [
    ("mediator_connections", "gauge"),
    ("mediator_connections_total", "counter"),
    ("mediator_waiting_rooms", "gauge"),
    ("mediator_group_members", "gauge"),
    ("mediator_matches_total", "counter"),
    ("mediator_room_store_up", "gauge"),
    ("mediator_errors_total", "counter"),
    ("mediator_rejected_total", "counter"),
    ("mediator_relay_sessions", "gauge"),
    ("mediator_relay_sessions_total", "counter"),
    ("mediator_relay_refused_total", "counter"),
    ("mediator_relay_bytes_total", "counter"),
    ("mediator_punch_timed_total", "counter"),
    ("mediator_sessions_total", "counter"),
    ("mediator_presence_tags", "gauge"),
    ("mediator_mailbox_items", "gauge"),
    ("mediator_mailbox_bytes", "gauge"),
    ("mediator_mailbox_refused_total", "counter"),
];

// Paused time (here and below): the clock jumps only when every task waits, so
// a connection left open would show as a jump to the scrape timeout.
#[tokio::test(start_paused = true)]
async fn the_page_is_prometheus_text_with_each_family_once() {
    let server = start_with_metrics(config()).await;
    let addr = server.metrics.unwrap();
    // HTTP/1.1 without `Connection: close`: answered once, then closed at once.
    let start = Instant::now();
    let response = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        start.elapsed() < SCRAPE_TIMEOUT,
        "held {:?}",
        start.elapsed()
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let mut typed = Vec::new();
    let mut helped = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            typed.push((name.to_owned(), kind.to_owned()));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split_once(' ').unwrap().0.to_owned());
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                FAMILIES.iter().any(|(f, _)| *f == name),
                "series {line:?} belongs to no family"
            );
        }
    }
    let mut want: Vec<_> = FAMILIES
        .iter()
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect();
    want.sort();
    typed.sort();
    assert_eq!(typed, want, "each family typed once, with its type");
    helped.sort();
    let names: Vec<_> = want.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(helped, names, "each family described once");
    // Every labelled series shows from the start, at 0.
    for code in ErrorCode::ALL {
        let line = format!("mediator_errors_total{{code=\"{}\"}} 0", code.as_str());
        assert!(body.lines().any(|l| l == line), "missing {line:?}");
    }
    for path in PathLabel::ALL {
        let line = format!("mediator_sessions_total{{path=\"{}\"}} 0", path.as_str());
        assert!(body.lines().any(|l| l == line), "missing {line:?}");
    }
    let limits = body
        .lines()
        .filter(|l| l.starts_with("mediator_rejected_total{limit="))
        .count();
    assert_eq!(limits, 13, "one series per limit");
    for cap in mediator::mailbox::Cap::ALL {
        let line = format!(
            "mediator_mailbox_refused_total{{cap=\"{}\"}} 0",
            cap.as_str()
        );
        assert!(body.lines().any(|l| l == line), "missing {line:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn methods_paths_and_the_head_bound() {
    let server = start_with_metrics(config()).await;
    let addr = server.metrics.unwrap();
    let status = |response: String| response.split(' ').nth(1).unwrap_or("").to_owned();
    assert_eq!(
        status(exchange(addr, b"GET /health HTTP/1.0\r\n\r\n").await),
        "200"
    );
    let head_only = exchange(addr, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(head_only.clone()), "200");
    assert!(head_only.ends_with("\r\n\r\n"), "no body: {head_only:?}");
    let not_found = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status(not_found.clone()), "404");
    assert!(
        not_found.ends_with("try /metrics or /health\n"),
        "{not_found}"
    );
    assert_eq!(
        status(
            exchange(
                addr,
                b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            )
            .await
        ),
        "405"
    );
    assert_eq!(
        status(exchange(addr, b"DELETE /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").await),
        "405"
    );
    // A head that fits the bound is read; one past it is refused unread.
    let padded = |total: usize| {
        let start = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        let pad = total - start.len() - 4;
        format!("{start}{}\r\n\r\n", "a".repeat(pad)).into_bytes()
    };
    assert_eq!(status(exchange(addr, &padded(MAX_REQUEST)).await), "200");
    assert_eq!(
        status(exchange(addr, &padded(MAX_REQUEST + 1)).await),
        "431"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_scraper_is_dropped_at_the_scrape_timeout() {
    let server = start_with_metrics(config()).await;
    let addr = server.metrics.unwrap();
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
    read_to_close(&mut s).await;
    let held = start.elapsed();
    assert!(
        held >= SCRAPE_TIMEOUT && held < SCRAPE_TIMEOUT * 2,
        "held {held:?}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn scrapes_past_the_cap_wait_for_a_slot() {
    let server = start_with_metrics(config()).await;
    let addr = server.metrics.unwrap();
    let start = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..MAX_SCRAPES {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // The kernel queues this one; the listener takes it only when a slot frees,
    // which is when the silent ones time out.
    let page = exchange(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let waited = start.elapsed();
    assert!(waited >= SCRAPE_TIMEOUT, "answered after {waited:?}");
    // With the slots free again, a scrape is answered at once.
    let again = Instant::now();
    let page = exchange(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(again.elapsed() < SCRAPE_TIMEOUT, "{:?}", again.elapsed());
    drop(silent);
    server.shutdown().await.unwrap();
}
