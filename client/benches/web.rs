//! Local API and web page benchmark (docs/api.md):
//!
//! 1. events per second the API delivers to one WebSocket subscriber: the
//!    web interface in this process, E `message` events published into its
//!    hub as the engine would, read by a WebSocket client over loopback;
//! 2. the latency from a peer's message to the page showing it: real
//!    `mediator` and `client` binaries, alice's page in a headless Chromium;
//!    from the moment bob's line is written to his client until alice's page
//!    adds it to the DOM (a MutationObserver stamps it), over N lines, p50/p99.
//!
//! `cargo bench -p client --bench web`. Environment: P2PCHAT_WEB_EVENTS
//! (default 200000), P2PCHAT_WEB_LINES (default 200). Built without `--bench`
//! (`cargo test --benches`) it only says how to run it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use client::api::{ApiHub, Limits, Lines};
use common::browser::{eval, wait_for, Driver};
use common::{client_args, env_num, Client, Mediator, TempDir};
use engine::events::{ConvRef, Event};
use futures::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("web: a benchmark; run it with `cargo bench -p client --bench web`");
        return;
    }
    let events = env_num("P2PCHAT_WEB_EVENTS", 200_000).clamp(1, 10_000_000) as usize;
    let lines = env_num("P2PCHAT_WEB_LINES", 200).clamp(1, 10_000) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        throughput(events).await;
        latency(lines).await;
    });
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The session cookie the page would get on its first load.
async fn session_cookie(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, target) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET /{target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().split(';').next().unwrap().to_string())
        .expect("a session cookie")
}

async fn throughput(events: usize) {
    let dir = TempDir::new("web-bench");
    let hub = Arc::new(ApiHub::new(Limits {
        // Room for every event at once: this measures delivery, not drops.
        queue_bytes: 1 << 30,
        ..Limits::default()
    }));
    let (_terminal, terminal_rx) = tokio::sync::mpsc::channel(1);
    let (lines, _input) = Lines::new(terminal_rx, true);
    let server = client::web::serve(0, dir.path(), Arc::clone(&hub), lines)
        .await
        .expect("serve the web interface");
    let cookie = session_cookie(server.url()).await;
    let host = server.addr().to_string();
    let mut request = format!("ws://{host}/api/ws").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("Cookie", HeaderValue::from_str(&cookie).unwrap());
    headers.insert(
        "Origin",
        HeaderValue::from_str(&format!("http://{host}")).unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("open the WebSocket");
    // The hello (and no list yet).
    let hello = ws.next().await.expect("a hello").expect("a frame");
    assert!(
        hello.to_text().unwrap_or("").contains("\"hello\""),
        "{hello:?}"
    );
    let conv = ConvRef {
        number: 1,
        id: "0011223344556677".into(),
        label: "7-velvet-harbor".into(),
    };
    let started = Instant::now();
    let publisher = {
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            for i in 0..events {
                hub.publish(
                    Some(&conv),
                    &Event::Message {
                        from: "bob".into(),
                        text: format!("message number {i} of the benchmark"),
                        id: i as u64,
                        sent_at_ms: 1_700_000_000_000,
                    },
                );
                if i % 1024 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut got = 0usize;
    let mut bytes = 0usize;
    while got < events {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                got += 1;
                bytes += t.len();
            }
            Some(Ok(_)) => {}
            other => panic!("the WebSocket ended after {got} events: {other:?}"),
        }
    }
    let took = started.elapsed();
    publisher.await.unwrap();
    assert_eq!(hub.client_count(), 1, "the subscriber was dropped");
    println!(
        "web: API to one WebSocket subscriber: {events} message events ({:.1} MB) in {:.2} s: {:.0} events/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64()
    );
}

async fn latency(lines: usize) {
    let dir = TempDir::new("web-bench-lat");
    let med = Mediator::start(&[]).await;
    let alice_args = client_args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--web", "--room", "web-bench"],
    );
    let bob_args = client_args(&med.server_arg(), "bob", &dir, &["--room", "web-bench"]);
    let mut alice = Client::start("alice", &alice_args);
    let url = loop {
        let info = alice.expect("info").await;
        if let Some(rest) = info["text"]
            .as_str()
            .unwrap_or("")
            .strip_prefix("Web interface: ")
        {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    alice.expect("waiting").await;
    let mut bob = Client::start("bob", &bob_args);
    alice.expect("connected").await;
    bob.expect("connected").await;
    let driver = Driver::start().await;
    let page = driver.browser().await;
    page.goto(&url).await.expect("load the page");
    wait_for(
        &page,
        "the list",
        "document.querySelector(\"button.conv[data-number='1']\")",
    )
    .await;
    // Stamp each message as it enters the DOM, on the same clock as ours.
    eval(
        &page,
        "(() => { window.__seen = {}; new MutationObserver(ms => { for (const m of ms) for (const n of m.addedNodes) { \
           const t = n.querySelector && n.querySelector('.text'); \
           if (t && t.textContent.startsWith('lat-')) window.__seen[t.textContent] = performance.timeOrigin + performance.now(); } }) \
           .observe(document.getElementById('messages'), {childList: true}); return true; })()",
    )
    .await;
    let mut ms = Vec::with_capacity(lines);
    for i in 0..lines {
        let text = format!("lat-{i}");
        let sent = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1000.0;
        bob.say(&text).await;
        let seen = wait_for(&page, &text, &format!("window.__seen['{text}']")).await;
        ms.push(seen.as_f64().unwrap() - sent);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "web: a peer's message to alice's page showing it: {lines} lines, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
    let _ = page.close().await;
    drop(driver);
}
