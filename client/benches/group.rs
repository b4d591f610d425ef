//! Group room benchmark (docs/protocol.md §19): N members (default 16, the
//! mediator's default cap) on loopback, real `mediator` and `client` binaries.
//! Prints the time from starting them all until every one is linked with every
//! other, and the fan-out latency of messages (typed on one member → shown on
//! each of the others) p50/p99 and max.
//!
//! `cargo bench -p client --bench group`. Environment: P2PCHAT_GROUP_MEMBERS
//! (default 16), P2PCHAT_GROUP_MESSAGES (default 64, senders in turn). Built
//! without `--bench` (`cargo test --benches`) it only says how to run it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{client_args, env_num, Client, Mediator, TempDir};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("group: a benchmark; run it with `cargo bench -p client --bench group`");
        return;
    }
    let members = env_num("P2PCHAT_GROUP_MEMBERS", 16).clamp(2, 64) as usize;
    let messages = env_num("P2PCHAT_GROUP_MESSAGES", 64).max(1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(members, messages));
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn bench(n: usize, messages: usize) {
    let mediator = Mediator::start(&["--max-members", &n.max(16).to_string()]).await;
    let dir = TempDir::new("group-bench");
    let server = mediator.server_arg();
    let started = Instant::now();
    let mut clients: Vec<Client> = (0..n)
        .map(|i| {
            let name = format!("m{i:02}");
            let args = client_args(&server, &name, &dir, &["--room", "bench-room", "--group"]);
            Client::start(&name, &args)
        })
        .collect();
    let mut linked_at = Vec::new();
    for c in &mut clients {
        let mut links = 0;
        while links < n - 1 {
            let e = c
                .expect_within("member_joined", Duration::from_secs(120))
                .await;
            if e["event"] == "member_joined" {
                links += 1;
            }
        }
        linked_at.push(c.last_at.expect("an event time"));
    }
    let all_linked = linked_at
        .iter()
        .max()
        .expect("members")
        .duration_since(started);
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("group room, {n} members on loopback ({build} build):");
    println!(
        "    start → every member linked with the {} others: {:.2} s ({} links)",
        n - 1,
        all_linked.as_secs_f64(),
        n * (n - 1) / 2
    );

    let mut latencies = Vec::with_capacity(messages * (n - 1));
    for k in 0..messages {
        let sender = k % n;
        let text = format!("fanout-{k}");
        let typed = Instant::now();
        clients[sender].say(&text).await;
        for (i, c) in clients.iter_mut().enumerate() {
            if i == sender {
                continue;
            }
            loop {
                let e = c.expect("group_message").await;
                if e["text"] == text.as_str() {
                    latencies.push(c.last_at.expect("an event time").duration_since(typed));
                    break;
                }
            }
        }
    }
    latencies.sort();
    println!(
        "    fan-out, typed → shown on each other member ({} samples): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        quantile(&latencies, 0.5).as_secs_f64() * 1e3,
        quantile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().expect("samples").as_secs_f64() * 1e3,
    );
    for c in &mut clients {
        let _ = c.try_say("/quit").await;
    }
    for c in &mut clients {
        let _ = c.exit_code().await;
    }
}
