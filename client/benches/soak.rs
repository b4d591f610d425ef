//! The long soak (issue 15): tests/common/soak.rs for P2PCHAT_SOAK_SECS of chaos
//! (default 600), printing messages each way, lost and duplicated, files verified,
//! reconnects, and each client's RSS at start, end and peak. Each run draws a
//! fresh seed (printed first); P2PCHAT_SOAK_SEED repeats a run's schedule;
//! P2PCHAT_SOAK_FILE_MIB sets the file size (default 8); P2PCHAT_SOAK_WEIGHTS the
//! odds of the proxies' misdeeds, "cut,ambush,stall,delay" (default 3,1,3,3; an
//! ambush cuts the next connection within its first 1 500 bytes, mid-handshake).
//!
//! `cargo bench -p client --bench soak`. Built without `--bench`
//! (`cargo test --benches`) it only says how to run it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::env_num;
use common::soak::{run, Soak};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "soak: run with `cargo bench -p client --bench soak` (P2PCHAT_SOAK_SECS, default 600)"
        );
        return;
    }
    let mut soak = Soak::new(Duration::from_secs(env_num("P2PCHAT_SOAK_SECS", 600)), None);
    soak.file_bytes =
        usize::try_from(env_num("P2PCHAT_SOAK_FILE_MIB", 8) * 1024 * 1024).expect("file size fits");
    if let Ok(weights) = std::env::var("P2PCHAT_SOAK_WEIGHTS") {
        let parsed: Vec<u32> = weights
            .split(',')
            .filter_map(|w| w.trim().parse().ok())
            .collect();
        soak.mischief.weights = parsed
            .try_into()
            .expect("P2PCHAT_SOAK_WEIGHTS: four numbers");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = runtime.block_on(run(&soak));
    println!("{}", report.summary());
    let failed = [&report.alice_to_bob, &report.bob_to_alice]
        .iter()
        .any(|d| {
            !d.lost().is_empty()
                || !d.duplicated().is_empty()
                || !d.forged().is_empty()
                || d.out_of_order() > 0
        })
        || !report.file_failures.is_empty()
        || !report.settled
        || report.alice.exited.is_some()
        || report.bob.exited.is_some();
    for d in [&report.alice_to_bob, &report.bob_to_alice] {
        for (text, n) in d.duplicated().iter().take(10) {
            println!("  duplicated x{n}: {text:.40}");
        }
        for (id, text) in d.lost().iter().take(10) {
            println!("  lost: id {id} {text:.40}");
        }
    }
    if failed {
        println!("soak FAILED (seed {})", report.seed);
        std::process::exit(1);
    }
}
