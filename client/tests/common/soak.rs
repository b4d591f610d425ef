//! The soak (issue 15): two real clients chat both ways and send files through
//! two [`ChaosProxy`]s that cut, delay and stall the link, reconnecting through a
//! real mediator; afterwards every message must have arrived exactly once and
//! every file byte-identical, and each client's RSS growth is measured. Shared by
//! `tests/soak.rs` (a short run in `cargo test`) and `benches/soak.rs` (long runs).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::time::Instant;

use super::chaos::{ChaosProxy, Mischief};
use super::{client_args, free_port, set_flag, Mediator, TempDir};

/// What to run.
#[derive(Debug, Clone)]
pub struct Soak {
    /// How long the proxies misbehave.
    pub chaos: Duration,
    /// After that, how long the clients may take to deliver what is still queued.
    pub settle: Duration,
    /// Seeds the proxies' schedules, the typing rhythm and the file contents.
    pub seed: u64,
    /// Size of each file alice sends (one after another while the chaos lasts).
    pub file_bytes: usize,
    /// Gap between two typed lines (either side), drawn uniformly, in ms.
    pub typing_gap_ms: (u64, u64),
    /// Most of one side's messages unacknowledged before it pauses typing.
    pub max_unacked: usize,
    pub mischief: Mischief,
}

impl Soak {
    /// A soak of `chaos` with the seed from `P2PCHAT_SOAK_SEED`, else `seed`, else
    /// a fresh one.
    pub fn new(chaos: Duration, seed: Option<u64>) -> Soak {
        let seed = std::env::var("P2PCHAT_SOAK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .or(seed)
            .unwrap_or_else(rand::random);
        Soak {
            chaos,
            settle: Duration::from_secs(60),
            seed,
            file_bytes: 8 * 1024 * 1024,
            typing_gap_ms: (5, 60),
            max_unacked: 300,
            mischief: Mischief::default(),
        }
    }
}

/// One direction of the chat, as both ends saw it.
#[derive(Debug, Default)]
pub struct Direction {
    /// What the sender typed, by the id its `sent` event gave.
    pub sent: BTreeMap<u64, String>,
    /// Ids the sender saw acknowledged.
    pub acked: std::collections::BTreeSet<u64>,
    /// What the receiver showed, in order.
    pub shown: Vec<(u64, String)>,
}

impl Direction {
    /// Texts shown more than once, with their counts.
    pub fn duplicated(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (_, text) in &self.shown {
            *counts.entry(text).or_default() += 1;
        }
        let mut dup: Vec<_> = counts
            .into_iter()
            .filter(|&(_, n)| n > 1)
            .map(|(t, n)| (t.to_string(), n))
            .collect();
        dup.sort();
        dup
    }

    /// Sent messages never shown.
    pub fn lost(&self) -> Vec<(u64, String)> {
        let shown: std::collections::HashSet<&str> =
            self.shown.iter().map(|(_, t)| t.as_str()).collect();
        self.sent
            .iter()
            .filter(|(_, t)| !shown.contains(t.as_str()))
            .map(|(&id, t)| (id, t.clone()))
            .collect()
    }

    /// Shown messages nobody sent, or shown under another id than it was sent with.
    pub fn forged(&self) -> Vec<(u64, String)> {
        self.shown
            .iter()
            .filter(|(id, t)| self.sent.get(id) != Some(t))
            .cloned()
            .collect()
    }

    /// Places where the receiver showed an id no greater than the one before.
    pub fn out_of_order(&self) -> usize {
        self.shown.windows(2).filter(|w| w[1].0 <= w[0].0).count()
    }

    fn delivered(&self) -> bool {
        self.acked.len() == self.sent.len() && self.lost().is_empty()
    }
}

/// What one client went through.
#[derive(Debug, Default)]
pub struct Side {
    pub name: String,
    pub connects: usize,
    /// Sessions that did not continue the previous keys (the first one included).
    pub fresh_sessions: usize,
    pub reconnecting: usize,
    /// Transfers this side resumed from a `.part` after a cut.
    pub resumed_transfers: usize,
    pub errors: Vec<String>,
    /// The last events seen (for a failure's story).
    pub recent: std::collections::VecDeque<Value>,
    /// Set if the client exited during the soak: its exit code.
    pub exited: Option<i32>,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    pub rss_peak_kib: u64,
    /// RSS once a minute (KiB), to tell a plateau from steady growth.
    pub rss_by_minute: Vec<u64>,
}

/// Everything a soak measured.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub elapsed: Duration,
    pub alice_to_bob: Direction,
    pub bob_to_alice: Direction,
    pub alice: Side,
    pub bob: Side,
    pub files_sent: usize,
    pub files_verified: usize,
    /// Files that arrived different from what was sent, or stopped.
    pub file_failures: Vec<String>,
    pub cuts: u64,
    /// Of the cuts: connections cut within their first 1 500 bytes.
    pub ambushes: u64,
    pub stalls: u64,
    pub delay_changes: u64,
    pub proxied_connections: u64,
    pub proxied_bytes: u64,
    /// Whether everything queued was delivered before the settle time ran out.
    pub settled: bool,
}

impl Report {
    /// One paragraph of figures.
    pub fn summary(&self) -> String {
        let dir = |d: &Direction| {
            format!(
                "{} sent, {} shown, {} lost, {} duplicated, {} forged, {} out of order",
                d.sent.len(),
                d.shown.len(),
                d.lost().len(),
                d.duplicated().len(),
                d.forged().len(),
                d.out_of_order()
            )
        };
        let side = |s: &Side| {
            format!(
                "{}: {}{} sessions ({} not resumed), {} reconnects, {} transfers resumed, RSS {} -> {} KiB (peak {}, growth {:+} KiB; by minute {:?}), errors {:?}",
                s.name,
                s.exited
                    .map(|code| {
                        let story: Vec<String> = s.recent.iter().map(|e| e.to_string()).collect();
                        format!("EXITED with {code}; its last events:\n    {}\n  ", story.join("\n    "))
                    })
                    .unwrap_or_default(),
                s.connects,
                s.fresh_sessions,
                s.reconnecting,
                s.resumed_transfers,
                s.rss_start_kib,
                s.rss_end_kib,
                s.rss_peak_kib,
                s.rss_end_kib as i64 - s.rss_start_kib as i64,
                s.rss_by_minute,
                s.errors
            )
        };
        format!(
            "soak seed {} ({:.0?}): proxies made {} cuts ({} within a connection's first bytes), {} stalls, {} delay changes over {} connections, {} MiB forwarded\n  alice->bob: {}\n  bob->alice: {}\n  files: {} sent, {} verified, failures {:?}\n  {}\n  {}\n  settled: {}",
            self.seed,
            self.elapsed,
            self.cuts + self.ambushes,
            self.ambushes,
            self.stalls,
            self.delay_changes,
            self.proxied_connections,
            self.proxied_bytes / (1024 * 1024),
            dir(&self.alice_to_bob),
            dir(&self.bob_to_alice),
            self.files_sent,
            self.files_verified,
            self.file_failures,
            side(&self.alice),
            side(&self.bob),
            self.settled
        )
    }
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn write_file(path: &Path, len: usize, rng: &mut StdRng) {
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    std::fs::write(path, &data).expect("write soak file");
}

/// A client whose listener sits behind its own chaos proxy, which is the only
/// path to it: no punch past it, no relay around it.
pub async fn behind_chaos(
    server: &str,
    name: &str,
    dir: &TempDir,
    seed: u64,
) -> (Vec<String>, ChaosProxy) {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = ChaosProxy::start(listen, seed).await;
    let mut args = client_args(
        server,
        name,
        dir,
        &["--room", "r-soak", "--reconnect-for", "10m", "--yes"],
    );
    set_flag(&mut args, "--listen", &listen.to_string());
    set_flag(&mut args, "--advertise", &proxy.addr.to_string());
    set_flag(
        &mut args,
        "--downloads",
        &dir.join(&format!("downloads-{name}")).display().to_string(),
    );
    args.extend(["--no-punch".to_string(), "--no-relay".to_string()]);
    (args, proxy)
}

/// Reacts to one event of `side`'s client: what it sent, showed, had acked.
fn record(event: &Value, side: &mut Side, outgoing: &mut Direction, incoming: &mut Direction) {
    if side.recent.len() == 40 {
        side.recent.pop_front();
    }
    side.recent.push_back(event.clone());
    let id = event["id"].as_u64();
    let text = || event["text"].as_str().unwrap_or_default().to_string();
    match event["event"].as_str().unwrap_or_default() {
        "sent" => {
            let id = id.expect("sent has an id");
            let previous = outgoing.sent.insert(id, text());
            assert!(previous.is_none(), "{}: id {id} sent twice", side.name);
        }
        "ack" => {
            outgoing.acked.insert(id.expect("ack has an id"));
        }
        "message" => incoming
            .shown
            .push((id.expect("message has an id"), text())),
        "connected" => {
            side.connects += 1;
            if event["resumed"] != true {
                side.fresh_sessions += 1;
            }
        }
        "reconnecting" => side.reconnecting += 1,
        "info" if text().starts_with("Resuming") => side.resumed_transfers += 1,
        "error" => side.errors.push(event.to_string()),
        _ => {}
    }
}

/// Runs one soak and returns what it saw; the caller decides what must hold.
pub async fn run(soak: &Soak) -> Report {
    let started = Instant::now();
    println!(
        "soak: seed {} (P2PCHAT_SOAK_SEED={} repeats the proxies' schedules, the typing and the files), {:?} of chaos",
        soak.seed, soak.seed, soak.chaos
    );
    let dir = TempDir::new("soak");
    let med = Mediator::start(&[]).await;
    let server = med.server_arg();
    let (alice_args, pa) = behind_chaos(&server, "alice", &dir, soak.seed).await;
    let (bob_args, pb) = behind_chaos(&server, "bob", &dir, soak.seed.rotate_left(17)).await;
    let (mut alice, mut bob) = super::connected_pair(&alice_args, &bob_args).await;
    let mut report = Report {
        seed: soak.seed,
        ..Report::default()
    };
    report.alice.name = "alice".into();
    report.bob.name = "bob".into();
    for (c, side) in [(&alice, &mut report.alice), (&bob, &mut report.bob)] {
        side.connects = 1;
        side.fresh_sessions = 1;
        side.rss_start_kib = c.pid().and_then(rss_kib).unwrap_or(0);
    }

    let mut rng = StdRng::seed_from_u64(soak.seed);
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    let send_file = |alice_files: &mut HashMap<String, PathBuf>, rng: &mut StdRng| {
        let name = format!("soak-{}.bin", alice_files.len());
        let path = dir.join(&name);
        write_file(&path, soak.file_bytes, rng);
        alice_files.insert(name, path.clone());
        path
    };
    let first = send_file(&mut files, &mut rng);
    alice.say(&format!("/send {}", first.display())).await;
    report.files_sent = 1;

    pa.unleash(soak.mischief);
    pb.unleash(soak.mischief);
    let chaos_ends = Instant::now() + soak.chaos;
    let settle_ends = chaos_ends + soak.settle;
    let mut next_line = Instant::now();
    let mut typed = 0u64;
    let mut calm = false;
    let mut sampled = Instant::now();
    loop {
        let now = Instant::now();
        if !calm && now >= chaos_ends {
            pa.calm();
            pb.calm();
            calm = true;
        }
        let files_done = report.files_verified + report.file_failures.len() == report.files_sent;
        if calm && files_done && report.alice_to_bob.delivered() && report.bob_to_alice.delivered()
        {
            report.settled = true;
            break;
        }
        if now >= settle_ends {
            break;
        }
        if now >= sampled + Duration::from_secs(1) {
            sampled = now;
            let minute = (now - started).as_secs() / 60;
            for (c, side) in [(&alice, &mut report.alice), (&bob, &mut report.bob)] {
                let rss = c.pid().and_then(rss_kib).unwrap_or(0);
                side.rss_peak_kib = side.rss_peak_kib.max(rss);
                if side.rss_by_minute.len() as u64 <= minute {
                    side.rss_by_minute.push(rss);
                }
            }
        }
        tokio::select! {
            event = alice.next_event(Duration::from_millis(200)) => match event {
                Some(e) => {
                    record(&e, &mut report.alice, &mut report.alice_to_bob, &mut report.bob_to_alice);
                }
                None if alice.has_exited() => {
                    report.alice.exited = Some(alice.exit_code().await);
                    break;
                }
                None => {}
            },
            event = bob.next_event(Duration::from_millis(200)) => match event {
                Some(e) => {
                    record(&e, &mut report.bob, &mut report.bob_to_alice, &mut report.alice_to_bob);
                    if e["event"] == "file_done" && e["direction"] == "receive" {
                        let name = e["name"].as_str().unwrap_or_default();
                        let sent = files.get(name).map(std::fs::read);
                        let got = e["path"].as_str().map(std::fs::read);
                        match (sent, got) {
                            (Some(Ok(a)), Some(Ok(b))) if a == b => report.files_verified += 1,
                            _ => report.file_failures.push(format!("{name} arrived different: {e}")),
                        }
                        if !calm {
                            let next = send_file(&mut files, &mut rng);
                            alice.say(&format!("/send {}", next.display())).await;
                            report.files_sent += 1;
                        }
                    } else if e["event"] == "file_stopped" {
                        report.file_failures.push(format!("stopped: {e}"));
                    }
                }
                None if bob.has_exited() => {
                    report.bob.exited = Some(bob.exit_code().await);
                    break;
                }
                None => {}
            },
            () = tokio::time::sleep_until(next_line), if !calm => {
                let gap = rng.gen_range(soak.typing_gap_ms.0..=soak.typing_gap_ms.1);
                next_line = Instant::now() + Duration::from_millis(gap);
                let alice_types = rng.gen_bool(0.5);
                let (c, d) = if alice_types {
                    (&mut alice, &report.alice_to_bob)
                } else {
                    (&mut bob, &report.bob_to_alice)
                };
                if d.sent.len() - d.acked.len().min(d.sent.len()) < soak.max_unacked {
                    typed += 1;
                    c.say(&format!("soak {} {typed:06} {}", c.name, "x".repeat(rng.gen_range(0..200)))).await;
                }
            }
        }
    }
    for (c, side) in [(&alice, &mut report.alice), (&bob, &mut report.bob)] {
        side.rss_end_kib = c.pid().and_then(rss_kib).unwrap_or(0);
        side.rss_peak_kib = side.rss_peak_kib.max(side.rss_end_kib);
    }
    report.elapsed = started.elapsed();
    for p in [&pa, &pb] {
        let c = p.counts();
        use std::sync::atomic::Ordering::Relaxed;
        report.cuts += c.cuts.load(Relaxed);
        report.ambushes += c.ambushes.load(Relaxed);
        report.stalls += c.stalls.load(Relaxed);
        report.delay_changes += c.delay_changes.load(Relaxed);
        report.proxied_connections += c.connections.load(Relaxed);
        report.proxied_bytes += c.bytes.load(Relaxed);
    }
    alice.kill_hard().await;
    bob.kill_hard().await;
    med.kill().await;
    report
}
