//! Messenger benchmark: what an open conversation costs a running client, and
//! how long a restart takes to get them all back. Real `mediator` and `client`
//! binaries on loopback:
//!
//! 1. one client opens N rooms nobody else is in (default 64, the client's
//!    default cap): RSS per idle open conversation (each holds a port, a
//!    mediator connection and its task);
//! 2. a second client joins N/2 of them (default 32): RSS per idle connected
//!    conversation (one peer link each, keepalives only);
//! 3. the first is killed with SIGKILL and started again: the time from its
//!    start until every reopened conversation is connected again.
//!
//! `cargo bench -p client --bench messenger`. Environment:
//! P2PCHAT_MSGR_OPEN (default 64), P2PCHAT_MSGR_LINKED (default 32). Built
//! without `--bench` (`cargo test --benches`) it only says how to run it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::soak::rss_kib;
use common::{client_args, env_num, Client, Mediator, TempDir};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("messenger: a benchmark; run it with `cargo bench -p client --bench messenger`");
        return;
    }
    let open = env_num("P2PCHAT_MSGR_OPEN", 64).clamp(2, 1024) as usize;
    let linked = env_num("P2PCHAT_MSGR_LINKED", 32).clamp(1, open as u64) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(open, linked));
}

/// Waits until `c` has shown `event` for `n` distinct conversations (counting
/// those it showed before).
async fn wait_distinct(c: &mut Client, event: &str, n: usize) {
    let mut seen: HashSet<u64> = c
        .seen
        .iter()
        .filter(|e| e["event"] == event)
        .map(|e| e["conversation"]["number"].as_u64().unwrap_or(0))
        .collect();
    while seen.len() < n {
        let e = c.expect_within(event, Duration::from_secs(120)).await;
        seen.insert(e["conversation"]["number"].as_u64().unwrap_or(0));
    }
}

/// RSS after things settle: the lowest of a few samples a little apart (the
/// allocator returns freed pages lazily).
async fn settled_rss(pid: u32) -> u64 {
    let mut low = u64::MAX;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        low = low.min(rss_kib(pid).unwrap_or(0));
    }
    low
}

fn room(i: usize) -> String {
    format!("msgr-bench-{i}")
}

async fn bench(open: usize, linked: usize) {
    // One address holds every connection here: lift the per-address caps.
    let many = (open * 4).to_string();
    let med = Mediator::start(&[
        "--per-ip-connections",
        &many,
        "--per-ip-hellos-per-min",
        "100000",
        "--per-56-hellos-per-min",
        "100000",
        "--per-48-hellos-per-min",
        "100000",
    ])
    .await;
    let dir = TempDir::new("msgr-bench");
    let server = med.server_arg();
    let cap = open.to_string();
    let first = client_args(
        &server,
        "alice",
        &dir,
        &["--room", &room(0), "--max-conversations", &cap],
    );
    let mut alice = Client::start("alice", &first);
    wait_distinct(&mut alice, "waiting", 1).await;
    let pid = alice.pid().expect("alice runs");
    let one = settled_rss(pid).await;
    for i in 1..open {
        alice.say(&format!("/room {}", room(i))).await;
    }
    wait_distinct(&mut alice, "waiting", open).await;
    let all = settled_rss(pid).await;
    let per_open = (all.saturating_sub(one)) as f64 / (open - 1) as f64;

    let bob_args = client_args(
        &server,
        "bob",
        &dir,
        &["--room", &room(0), "--max-conversations", &cap],
    );
    let mut bob = Client::start("bob", &bob_args);
    for i in 1..linked {
        bob.say(&format!("/room {}", room(i))).await;
    }
    wait_distinct(&mut alice, "connected", linked).await;
    wait_distinct(&mut bob, "connected", linked).await;
    let with_links = settled_rss(pid).await;
    let per_link = (with_links.saturating_sub(all)) as f64 / linked as f64;

    alice.kill_hard().await;
    let restart = Instant::now();
    let again = client_args(&server, "alice", &dir, &["--max-conversations", &cap]);
    let mut alice = Client::start("alice", &again);
    wait_distinct(&mut alice, "connected", linked).await;
    let reconnected = alice
        .last_at
        .expect("an event time")
        .duration_since(restart);

    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("messenger, one client on loopback ({build} build):");
    println!("    RSS with 1 conversation waiting: {one} KiB; with {open}: {all} KiB");
    println!("    per idle open conversation (waiting at the mediator): {per_open:.1} KiB");
    println!(
        "    per idle connected conversation (one peer link, keepalives): {per_link:.1} KiB \
         ({linked} linked, RSS {with_links} KiB)"
    );
    println!(
        "    SIGKILL, start again: {open} conversations reopened, the {linked} with a peer \
         connected again after {:.2} s",
        reconnected.as_secs_f64()
    );
    drop(bob);
}
