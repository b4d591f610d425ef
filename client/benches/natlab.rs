//! NAT lab benchmark: for each pairing of router kinds (the same as
//! tests/nat_lab.rs), how long from the `matched` event to `connected`, median and
//! p95 per path; then file transfer throughput over the relay against a direct
//! path, in the same run. Real `mediator` and `client` binaries in network
//! namespaces (tests/common/lab.rs); needs root, iproute2 and nftables.
//!
//! `cargo bench -p client --bench natlab`. Environment: P2PCHAT_NATLAB_RUNS (runs per
//! pairing, default 20), P2PCHAT_NATLAB_MIB (transfer size, default 32),
//! P2PCHAT_NATLAB_TRANSFERS (transfers per path, default 3), P2PCHAT_NATLAB_ONLY
//! (only pairings whose label contains this), P2PCHAT_NATLAB_MEDIATOR (extra
//! mediator flags, space separated, e.g. relay caps). A pairing whose first run
//! fails is reported as failed and not repeated (each failure costs a timeout).
//! Built without `--bench` (`cargo test --benches`) it only says how to run it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::lab::{Lab, RouterKind, Site, Spot, Topology};
use common::{env_num, TempDir};
use RouterKind::{FullCone, HomeRouter, PortRange, RstRouter, Symmetric};

const PAIRINGS: &[(Spot, Spot)] = &[
    (Spot::Public, Spot::Public),
    (Spot::Behind(HomeRouter), Spot::Behind(HomeRouter)),
    (Spot::Behind(HomeRouter), Spot::Behind(PortRange)),
    (Spot::Behind(FullCone), Spot::Behind(HomeRouter)),
    (Spot::Behind(HomeRouter), Spot::Behind(FullCone)),
    (Spot::Behind(PortRange), Spot::Behind(PortRange)),
    (Spot::Behind(FullCone), Spot::Behind(PortRange)),
    (Spot::Behind(FullCone), Spot::Behind(FullCone)),
    (Spot::Behind(RstRouter), Spot::Behind(HomeRouter)),
    (Spot::Behind(RstRouter), Spot::Behind(PortRange)),
    (Spot::Behind(RstRouter), Spot::Behind(FullCone)),
    (Spot::Behind(RstRouter), Spot::Behind(RstRouter)),
    (Spot::Behind(Symmetric), Spot::Behind(HomeRouter)),
    (Spot::Behind(Symmetric), Spot::Behind(PortRange)),
    (Spot::Behind(Symmetric), Spot::Behind(Symmetric)),
    (Spot::Behind(FullCone), Spot::Behind(Symmetric)),
];

struct Settings {
    runs: usize,
    mib: u64,
    transfers: usize,
    only: Option<String>,
    mediator_flags: Vec<String>,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "natlab: a benchmark; run it with `cargo bench -p client --bench natlab` (as root)"
        );
        return;
    }
    let settings = Settings {
        runs: env_num("P2PCHAT_NATLAB_RUNS", 20).max(1) as usize,
        mib: env_num("P2PCHAT_NATLAB_MIB", 32).max(1),
        transfers: env_num("P2PCHAT_NATLAB_TRANSFERS", 3).max(1) as usize,
        only: std::env::var("P2PCHAT_NATLAB_ONLY").ok(),
        mediator_flags: std::env::var("P2PCHAT_NATLAB_MEDIATOR")
            .map(|v| v.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(settings));
}

/// One pairing's outcome: connect times per path, and failed runs.
#[derive(Default)]
struct Timings {
    by_path: BTreeMap<String, Vec<Duration>>,
    failed: usize,
    note: Option<String>,
}

async fn bench(settings: Settings) {
    let flags: Vec<&str> = settings.mediator_flags.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    for &(host, joiner) in PAIRINGS {
        let label = format!("{}–{}", host.label(), joiner.label());
        if !wanted(&settings.only, &label) {
            continue;
        }
        eprintln!("natlab: {label}, {} runs", settings.runs);
        let timings = pairing(host, joiner, settings.runs, &flags).await;
        rows.push((label, timings));
    }
    let shared = Topology::shared(HomeRouter, 2);
    if wanted(&settings.only, "home (one router)") {
        eprintln!("natlab: two behind one router, {} runs", settings.runs);
        let timings = runs(&shared, settings.runs, &flags, (0, 1)).await;
        rows.push(("home (one router)".to_string(), timings));
    }

    println!();
    println!("matched → connected, per pairing (host–joiner) and path");
    println!(
        "{:<26} {:<8} {:>6} {:>11} {:>9}",
        "pairing", "path", "runs", "median ms", "p95 ms"
    );
    for (label, t) in &rows {
        if t.by_path.is_empty() {
            println!(
                "{label:<26} {:<8} {:>6} {:>11} {:>9}   {}",
                "-",
                format!("0/{}", t.failed),
                "-",
                "-",
                t.note.as_deref().unwrap_or("")
            );
        }
        let total = t.failed + t.by_path.values().map(Vec::len).sum::<usize>();
        for (path, times) in &t.by_path {
            let ok = times.len();
            println!(
                "{label:<26} {path:<8} {:>6} {:>11.1} {:>9.1}{}",
                format!("{ok}/{total}"),
                ms(percentile(times, 50)),
                ms(percentile(times, 95)),
                if t.failed > 0 {
                    "   (some runs failed)"
                } else {
                    ""
                }
            );
        }
    }

    if wanted(&settings.only, "transfer") {
        println!();
        throughput(&settings, &flags).await;
    }
}

/// Whether P2PCHAT_NATLAB_ONLY lets the part named `label` run.
fn wanted(only: &Option<String>, label: &str) -> bool {
    match only {
        None => true,
        Some(part) => label.contains(part.as_str()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `pct`-th percentile (nearest rank) of `times`.
fn percentile(times: &[Duration], pct: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

async fn pairing(host: Spot, joiner: Spot, n: usize, flags: &[&str]) -> Timings {
    runs(&Topology::pair(host, joiner), n, flags, (0, 1)).await
}

/// `n` runs of one pairing on one lab and one mediator; `hosts` says which lab
/// hosts the two clients run on.
async fn runs(topology: &Topology, n: usize, flags: &[&str], hosts: (usize, usize)) -> Timings {
    let lab = std::sync::Arc::new(Lab::build(topology));
    let _mediator = lab.start_mediator(flags).await;
    let dir = std::sync::Arc::new(TempDir::new("natlab-bench"));
    let mut timings = Timings::default();
    for i in 0..n {
        // Its own task: a timeout inside the helpers panics, failing this run only.
        let run = tokio::spawn(one_run(
            lab.clone(),
            dir.clone(),
            format!("bench-{i}"),
            hosts,
        ));
        match run.await {
            Ok((path, took)) => timings.by_path.entry(path).or_default().push(took),
            Err(_) => {
                timings.failed += 1;
                if i == 0 {
                    timings.note = Some("first run failed (see above); not repeated".into());
                    break;
                }
            }
        }
    }
    timings
}

/// One connection: returns the joiner's path and the later side's time from
/// `matched` to `connected`.
async fn one_run(
    lab: std::sync::Arc<Lab>,
    dir: std::sync::Arc<TempDir>,
    room: String,
    hosts: (usize, usize),
) -> (String, Duration) {
    let mut alice = lab.start_client(
        hosts.0,
        "alice",
        &lab.client_args("alice", &room, &dir, &[]),
    );
    alice.expect("waiting").await;
    let mut bob = lab.start_client(hosts.1, "bob", &lab.client_args("bob", &room, &dir, &[]));
    let mut took = Duration::ZERO;
    let mut path = String::new();
    for client in [&mut alice, &mut bob] {
        client.expect("matched").await;
        let matched = client.last_at.expect("an event time");
        let connected = client.expect("connected").await;
        let at = client.last_at.expect("an event time");
        took = took.max(at.duration_since(matched));
        path = connected["path"].as_str().unwrap_or("?").to_string();
    }
    (path, took)
}

/// Transfers over the relay (two symmetric NATs) and a direct path (two hosts on
/// the public segment), on one lab and one mediator.
async fn throughput(settings: &Settings, flags: &[&str]) {
    let topology = Topology {
        sites: vec![
            Site::PublicHost,
            Site::PublicHost,
            Site::Router {
                kind: Symmetric,
                hosts: 1,
            },
            Site::Router {
                kind: Symmetric,
                hosts: 1,
            },
        ],
    };
    let lab = Lab::build(&topology);
    let _mediator = lab.start_mediator(flags).await;
    let dir = TempDir::new("natlab-xfer");
    let bytes = settings.mib * 1024 * 1024;
    let file = make_file(dir.path(), bytes);
    println!(
        "file transfer, {} MiB, {} transfers per path",
        settings.mib, settings.transfers
    );
    println!(
        "{:<10} {:<8} {:>13} {:>13}",
        "pair", "path", "median MiB/s", "best MiB/s"
    );
    for (label, hosts) in [("direct", (0, 1)), ("relayed", (2, 3))] {
        let room = format!("bench-xfer-{label}");
        let run = transfer_runs(&lab, &dir, &room, hosts, &file, settings.transfers);
        let limit = Duration::from_secs(60 + 10 * settings.transfers as u64 * settings.mib);
        match tokio::time::timeout(limit, run).await {
            Ok(Ok((path, rates))) => {
                let mut sorted = rates.clone();
                sorted.sort_by(f64::total_cmp);
                println!(
                    "{label:<10} {path:<8} {:>13.1} {:>13.1}",
                    sorted[sorted.len() / 2],
                    sorted[sorted.len() - 1]
                );
            }
            Ok(Err(why)) => println!("{label:<10} failed: {why}"),
            Err(_) => println!("{label:<10} failed: no result within {limit:?}"),
        }
    }
}

async fn transfer_runs(
    lab: &Lab,
    dir: &TempDir,
    room: &str,
    hosts: (usize, usize),
    file: &Path,
    n: usize,
) -> Result<(String, Vec<f64>), String> {
    let mut alice = lab.start_client(hosts.0, "alice", &lab.client_args("alice", room, dir, &[]));
    alice.expect("waiting").await;
    let mut bob = lab.start_client(
        hosts.1,
        "bob",
        &lab.client_args(&format!("bob{}", hosts.1), room, dir, &["--yes"]),
    );
    let connected = bob.expect("connected").await;
    alice.expect("connected").await;
    let path = connected["path"].as_str().unwrap_or("?").to_string();
    let size = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
    let mut rates = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        alice.say(&format!("/send {}", file.display())).await;
        let done = bob
            .expect_within("file_done", Duration::from_secs(600))
            .await;
        let took = started.elapsed();
        if let Some(p) = done["path"].as_str() {
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
        rates.push(size as f64 / (1024.0 * 1024.0) / took.as_secs_f64());
    }
    Ok((path, rates))
}

/// A file of `len` pseudo-random bytes (incompressible, seeded).
fn make_file(dir: &Path, len: u64) -> PathBuf {
    let mut data = Vec::with_capacity(len as usize);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while (data.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len as usize);
    let path = dir.join("natlab-bench.bin");
    std::fs::write(&path, &data).expect("write the benchmark file");
    path
}
