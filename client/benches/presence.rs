//! Presence benchmark (docs/protocol.md §21): how long a contact's message
//! takes to show on the screen of a messenger that runs idle. Real `mediator`
//! and `client` binaries on loopback:
//!
//! 1. cold: alice's messenger waits at the mediator; bob starts `--to alice`
//!    and types a line at once; the time from his line to alice's `message`
//!    event (ring, her Hello, the handshake, the catch-up), over R rounds;
//! 2. warm: with both linked, the time from each of N lines bob types to
//!    alice's `message` event (p50, p99).
//!
//! `cargo bench -p client --bench presence`. Environment: P2PCHAT_PRES_ROUNDS
//! (default 5), P2PCHAT_PRES_LINES (default 200). Built without `--bench`
//! (`cargo test --benches`) it only says how to run it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{client_args, env_num, Client, Mediator, TempDir};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("presence: a benchmark; run it with `cargo bench -p client --bench presence`");
        return;
    }
    let rounds = env_num("P2PCHAT_PRES_ROUNDS", 5).clamp(1, 100) as usize;
    let lines = env_num("P2PCHAT_PRES_LINES", 200).clamp(1, 10_000) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(rounds, lines));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits for alice's `message` with `text`; returns when its line was read.
async fn shown(alice: &mut Client, text: &str) -> Instant {
    loop {
        let m = alice
            .expect_within("message", Duration::from_secs(60))
            .await;
        if m["text"] == text {
            return alice.last_at.expect("the time the event was read");
        }
    }
}

async fn bench(rounds: usize, lines: usize) {
    let dir = TempDir::new("bench-presence");
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let med = Mediator::start(&["--metrics", &metrics]).await;
    let server = med.server_arg();
    common::become_contacts(&med, &dir, "alice", "bob", "bench-pres-meet").await;
    let mut alice = Client::start("alice", &client_args(&server, "alice", &dir, &[]));
    alice.expect("room").await;
    common::wait_for_metrics(&metrics, &["mediator_presence_tags 1".to_string()]).await;

    let mut cold = Vec::new();
    let mut bob = None;
    for round in 0..rounds {
        let mut b = Client::start(
            "bob",
            &client_args(&server, "bob", &dir, &["--to", "alice", "--no-presence"]),
        );
        let text = format!("cold {round}");
        let typed = Instant::now();
        b.say(&text).await;
        let at = shown(&mut alice, &text).await;
        cold.push(at - typed);
        if round + 1 < rounds {
            // He leaves; her conversation with him ends, presence waits again.
            b.say("/quit").await;
            let _ = b.exit_code().await;
            alice.expect_within("closed", Duration::from_secs(60)).await;
        } else {
            bob = Some(b);
        }
    }
    cold.sort();
    println!(
        "presence, cold: bob's first line -> shown by alice's idle messenger, {} rounds: \
         p50 {:.1} ms, max {:.1} ms",
        cold.len(),
        percentile(&cold, 0.5).as_secs_f64() * 1e3,
        cold.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );

    let mut bob = bob.expect("the last round's bob stays");
    let mut warm = Vec::new();
    for i in 0..lines {
        let text = format!("warm {i}");
        let typed = Instant::now();
        bob.say(&text).await;
        let at = shown(&mut alice, &text).await;
        warm.push(at - typed);
    }
    warm.sort();
    println!(
        "presence, warm: bob's line -> shown by alice, {} lines: p50 {:.2} ms, p99 {:.2} ms",
        warm.len(),
        percentile(&warm, 0.5).as_secs_f64() * 1e3,
        percentile(&warm, 0.99).as_secs_f64() * 1e3,
    );
    bob.say("/quit").await;
    let _ = bob.exit_code().await;
    alice.say("/quit").await;
    let _ = alice.exit_code().await;
}
