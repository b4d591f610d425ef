//! Load generator for the mediator: starts the real `mediator` binary, then
//! measures (1) memory per waiting client at W waiting clients, (2) pairings per
//! second and time to `Matched` with N concurrent pairs, (3) a burst of B
//! simultaneous connects, (4) scale-out: the same pairing load on one in-memory
//! instance and on two instances sharing a real `redis-server`, every pair split
//! over both (host on one, joiner on the other), at 16, 32, 64 and 128 concurrent
//! pairs, then each set-up's capacity (its best level). Client sockets are spread over
//! 127.0.0.0/8 so neither side runs out of ports. It stops by itself.
//!
//! `cargo bench -p mediator --bench loadgen [-- --pairs N --duration SECS --waiting W --burst B
//! --scale-pairs N,N,...]` (or LOADGEN_PAIRS, LOADGEN_DURATION, LOADGEN_WAITING,
//! LOADGEN_BURST, LOADGEN_SCALE_PAIRS; `--pairs N` alone makes the scale-out phase run
//! at N only; `--only PHASE`
//! or LOADGEN_ONLY runs one of memory, throughput, burst, redis; LOADGEN_THREADS sets
//! the generator's worker threads). Built
//! without `--bench` (e.g. `cargo test --benches`) it runs a tiny smoke pass.
//!
//! Comparing two builds on a shared, noisy machine: `--baseline PATH` (LOADGEN_BASELINE)
//! names an older `mediator` binary; the memory and throughput phases then run
//! `--rounds N` times (LOADGEN_ROUNDS, default 5), the two binaries alternating
//! (ABBA, so drift hits both alike), and print each set-up's medians and their ratio.
//! `--mediator PATH` (LOADGEN_MEDIATOR) replaces the binary under test, which is
//! otherwise the one cargo built with this bench.
//!
//! `--side-by-side` (LOADGEN_SIDE_BY_SIDE=1, with `--baseline`): each throughput
//! round runs the two binaries at once, half the pairs on each, so both see the
//! same machine at the same moment (a busy neighbour hits both alike); the ratio
//! of CPU per pairing is then the one to read, per round and as a median.
//!
//! A pairing's clients stop at `Matched` and close (a FIN), unless `--punch`
//! (LOADGEN_PUNCH=1): then the throughput and scale-out clients go on as our client
//! does (docs/protocol.md §12.2, §4): both answer the `PunchPing`, wait for
//! `PunchNow`, report `SessionPath`, wait for the mediator's close and close with a
//! reset.

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)] // the tests use more of it
mod redis_server;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wire::{ClientMsg, Link, MediatorMsg};

/// Every network wait in the generator is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Marker room bytes, found in the encoded template and patched per pairing.
const ROOM_MARKER: [u8; 32] = [0xab; 32];

#[derive(Debug, Clone)]
struct Settings {
    pairs: usize,
    duration: Duration,
    waiting: usize,
    burst: usize,
    /// Run only this phase (memory, throughput or burst).
    only: Option<String>,
    /// The concurrencies the scale-out phase sweeps.
    scale_pairs: Vec<usize>,
    /// The mediator binary under test.
    mediator: PathBuf,
    /// An older binary to compare with, round by round.
    baseline: Option<PathBuf>,
    /// How many rounds the memory and throughput phases run.
    rounds: usize,
    /// Pairing clients go on through the punch timing and the path report.
    punch: bool,
    /// The throughput phase runs the test and baseline binaries at once.
    side_by_side: bool,
}

fn settings() -> anyhow::Result<Settings> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let mut s = if bench_mode {
        Settings {
            pairs: 128,
            duration: Duration::from_secs(5),
            waiting: 15_000,
            burst: 5_000,
            only: None,
            scale_pairs: vec![16, 32, 64, 128],
            mediator: PathBuf::from(env!("CARGO_BIN_EXE_mediator")),
            baseline: None,
            rounds: 1,
            punch: false,
            side_by_side: false,
        }
    } else {
        Settings {
            pairs: 4,
            duration: Duration::from_millis(300),
            waiting: 100,
            burst: 100,
            only: None,
            scale_pairs: vec![4],
            mediator: PathBuf::from(env!("CARGO_BIN_EXE_mediator")),
            baseline: None,
            rounds: 1,
            punch: false,
            side_by_side: false,
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let pick = |f: &str, e: &str| flag(f).or_else(|| env(e));
    if let Some(v) = pick("--pairs", "LOADGEN_PAIRS") {
        s.pairs = v.parse().context("--pairs N")?;
        s.scale_pairs = vec![s.pairs];
    }
    if let Some(v) = pick("--scale-pairs", "LOADGEN_SCALE_PAIRS") {
        s.scale_pairs = v
            .split(',')
            .map(|n| n.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .context("--scale-pairs N,N,...")?;
        if s.scale_pairs.is_empty() || s.scale_pairs.contains(&0) {
            bail!("--scale-pairs needs one or more counts above 0, like 16,64,128");
        }
    }
    if let Some(v) = pick("--duration", "LOADGEN_DURATION") {
        s.duration = match v.parse::<f64>() {
            Ok(secs) => Duration::from_secs_f64(secs),
            Err(_) => humantime::parse_duration(&v).context("--duration SECS")?,
        };
    }
    if let Some(v) = pick("--waiting", "LOADGEN_WAITING") {
        s.waiting = v.parse().context("--waiting W")?;
    }
    if let Some(v) = pick("--burst", "LOADGEN_BURST") {
        s.burst = v.parse().context("--burst B")?;
    }
    s.only = pick("--only", "LOADGEN_ONLY");
    s.punch = args.iter().any(|a| a == "--punch")
        || env("LOADGEN_PUNCH").is_some_and(|v| !v.is_empty() && v != "0");
    s.side_by_side = args.iter().any(|a| a == "--side-by-side")
        || env("LOADGEN_SIDE_BY_SIDE").is_some_and(|v| !v.is_empty() && v != "0");
    if let Some(v) = pick("--mediator", "LOADGEN_MEDIATOR") {
        s.mediator = PathBuf::from(v);
    }
    if let Some(v) = pick("--baseline", "LOADGEN_BASELINE") {
        s.baseline = Some(PathBuf::from(v));
        s.rounds = 5;
    }
    if let Some(v) = pick("--rounds", "LOADGEN_ROUNDS") {
        s.rounds = v.parse().context("--rounds N")?;
        if s.rounds == 0 {
            bail!("--rounds needs a count above 0");
        }
    }
    for bin in s.baseline.iter().chain([&s.mediator]) {
        if !bin.is_file() {
            bail!("no mediator binary at {}", bin.display());
        }
    }
    Ok(s)
}

/// The mediator under test, killed on drop.
struct Mediator {
    child: Child,
    addr: SocketAddr,
}

impl Mediator {
    fn start(bin: &Path) -> anyhow::Result<Mediator> {
        Mediator::start_with(bin, &[])
    }

    /// With extra flags (e.g. `--redis URL`).
    fn start_with(bin: &Path, extra: &[&str]) -> anyhow::Result<Mediator> {
        let mut child = Command::new(bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                // Throughput is the point here, not the per-address limits.
                "--per-ip-connections",
                "1000000",
                "--per-ip-hellos-per-min",
                "1000000000",
                "--max-rooms",
                "1000000",
                "--hello-timeout",
                "60s",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            // The pairing path is measured here: no mailbox file left behind.
            .env("MEDIATOR_MAILBOX_DB", ":memory:")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start the mediator binary {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?
            .parse()?;
        Ok(Mediator { child, addr })
    }

    /// Resident set size in KiB, from /proc.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?)
    }
}

/// User and system CPU seconds a process has used (Linux /proc, 100 ticks a second).
fn cpu_secs(pid: &str) -> f64 {
    let (user, system) = cpu_split(pid);
    user + system
}

/// User and system CPU seconds a process has used, apart.
fn cpu_split(pid: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    // Fields after the ")" closing the command name: state is field 3, utime 14, stime 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return (0.0, 0.0);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// Context switches (voluntary and not) of all of a process's threads so far: each
/// voluntary one is a thread that went to sleep and had to be woken again.
fn context_switches(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

impl Drop for Mediator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hands out distinct loopback source addresses, skipping 127.0.0.0/24.
#[derive(Default)]
struct Sources(AtomicU32);

impl Sources {
    fn next(&self) -> Ipv4Addr {
        let i = self.0.fetch_add(1, Ordering::Relaxed) % (1 << 22);
        let n = (1 << 8) + i; // 127.0.1.0 and up
        Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8)
    }
}

/// A Hello frame template whose room bytes are patched per use.
#[derive(Clone)]
struct HelloFrame {
    bytes: Vec<u8>,
    room_at: usize,
}

impl HelloFrame {
    fn new(name: &str) -> anyhow::Result<HelloFrame> {
        let msg = ClientMsg::Hello {
            version: wire::PROTOCOL_VERSION,
            room: ROOM_MARKER,
            name: name.to_owned(),
            group: 15,
            public: vec![0x5a; 384],
            listen_port: 40000,
            local_addrs: vec!["192.168.1.20:40000".parse()?],
            no_relay: false,
        };
        let payload = wire::encode(&msg)?;
        let mut bytes = Link::Mediator.header(payload.len())?.to_vec();
        bytes.extend_from_slice(&payload);
        let room_at = bytes
            .windows(32)
            .position(|w| w == ROOM_MARKER)
            .context("room in template")?;
        Ok(HelloFrame { bytes, room_at })
    }

    fn for_room(&mut self, room: u64) -> &[u8] {
        let tag = &mut self.bytes[self.room_at..self.room_at + 32];
        tag.fill(0);
        tag[..8].copy_from_slice(&room.to_be_bytes());
        &self.bytes
    }
}

/// A client connection with the bytes read past the last frame (a host may get
/// `Waiting` and `Matched` in one read).
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

async fn connect(from: Ipv4Addr, to: SocketAddr) -> anyhow::Result<Conn> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.into(), 0))?;
    let stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(to))
        .await
        .context("connect timed out")??;
    Ok(Conn {
        stream,
        pending: Vec::new(),
    })
}

impl Conn {
    async fn send(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        Ok(self.stream.write_all(frame).await?)
    }

    /// Reads one message, usually in one read: mediator frames are small.
    async fn recv(&mut self) -> anyhow::Result<MediatorMsg> {
        tokio::time::timeout(IO_TIMEOUT, async {
            let mut buf = [0u8; 2048];
            let mut got = self.pending.len();
            if got > buf.len() {
                bail!("too many bytes pending");
            }
            buf[..got].copy_from_slice(&self.pending);
            self.pending.clear();
            loop {
                if let Some(header) = buf[..got].first_chunk::<4>() {
                    let len = Link::Mediator.parse_header(*header)?;
                    if 4 + len > buf.len() {
                        bail!("unexpectedly large frame");
                    }
                    if got >= 4 + len {
                        self.pending.extend_from_slice(&buf[4 + len..got]);
                        return Ok(wire::decode(&buf[4..4 + len])?);
                    }
                }
                let n = self.stream.read(&mut buf[got..]).await?;
                if n == 0 {
                    bail!("connection closed");
                }
                got += n;
            }
        })
        .await
        .context("no answer in time")?
    }

    async fn expect_waiting(&mut self) -> anyhow::Result<()> {
        match self.recv().await? {
            MediatorMsg::Waiting { .. } => Ok(()),
            other => bail!("expected Waiting, got {other:?}"),
        }
    }

    async fn expect_matched(&mut self) -> anyhow::Result<()> {
        match self.recv().await? {
            MediatorMsg::Matched { .. } => Ok(()),
            other => bail!("expected Matched, got {other:?}"),
        }
    }

    /// After `Matched`, what our client does: answer the probe, wait for
    /// `PunchNow`, report the path, wait for the mediator to close, close with a
    /// reset.
    async fn punch_and_report(&mut self) -> anyhow::Result<()> {
        let nonce = match self.recv().await? {
            MediatorMsg::PunchPing { nonce } => nonce,
            other => bail!("expected PunchPing, got {other:?}"),
        };
        self.send(&frame_of(&ClientMsg::PunchPong { nonce })?)
            .await?;
        match self.recv().await? {
            MediatorMsg::PunchNow => {}
            other => bail!("expected PunchNow, got {other:?}"),
        }
        let report = ClientMsg::SessionPath {
            path: wire::PathLabel::Punched,
        };
        self.send(&frame_of(&report)?).await?;
        socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO))?;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(IO_TIMEOUT, self.stream.read(&mut byte)).await {
            Err(_) => bail!("the mediator did not close after SessionPath"),
            Ok(Ok(0)) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Ok(Ok(_)) => bail!("bytes after SessionPath"),
            Ok(Err(e)) => Err(e.into()),
        }
    }
}

/// `msg` as one frame on the mediator link.
fn frame_of(msg: &ClientMsg) -> anyhow::Result<Vec<u8>> {
    let payload = wire::encode(msg)?;
    let mut bytes = Link::Mediator.header(payload.len())?.to_vec();
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Memory per waiting client: RSS before and after `w` clients wait in distinct rooms.
/// Prints the figures after `label` and returns KiB per waiting client.
async fn memory(bin: &Path, label: &str, w: usize, sources: &Sources) -> anyhow::Result<f64> {
    let mediator = Mediator::start(bin)?;
    let addr = mediator.addr;
    // Warm up the allocator and runtime with a few pairings first.
    let mut template = HelloFrame::new("memory")?;
    for room in 0..100u64 {
        let mut a = connect(sources.next(), addr).await?;
        a.send(template.for_room(room)).await?;
        a.expect_waiting().await?;
        let mut b = connect(sources.next(), addr).await?;
        b.send(template.for_room(room)).await?;
        b.expect_matched().await?;
        a.expect_matched().await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = mediator.rss_kib()?;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(w);
    const BATCH: usize = 500;
    let mut next_room = 1_000_000u64;
    while clients.len() < w {
        let n = BATCH.min(w - clients.len());
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..n {
            let from = sources.next();
            let room = next_room;
            next_room += 1;
            let mut frame = template.clone();
            batch.spawn(async move {
                let mut s = connect(from, addr).await?;
                s.send(frame.for_room(room)).await?;
                s.expect_waiting().await?;
                anyhow::Ok(s)
            });
        }
        while let Some(done) = batch.join_next().await {
            clients.push(done??);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = mediator.rss_kib()?;
    let per = (after.saturating_sub(before)) as f64 / w as f64;
    println!(
        "memory{label}: {w} waiting clients (opened in {:.2} s): mediator RSS {:.1} MiB -> {:.1} MiB, \
         {per:.2} KiB per waiting client (target <= 4 KiB)",
        started.elapsed().as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    let _ = template.for_room(0);
    drop(clients);
    Ok(per)
}

/// The presence phase (docs/protocol.md §21): `n` idle presence connections,
/// each waiting under `tags` tags, and the mediator's memory per connection;
/// then the time from a room opened under a waiting tag to its ring.
async fn presence(bin: &Path, n: usize, tags: usize, sources: &Sources) -> anyhow::Result<()> {
    let mediator = Mediator::start(bin)?;
    let addr = mediator.addr;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = mediator.rss_kib()?;
    let started = Instant::now();
    let mut holders: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    const BATCH: usize = 500;
    let mut opened = 0;
    while opened < n {
        let count = BATCH.min(n - opened);
        let mut batch = tokio::task::JoinSet::new();
        for i in opened..opened + count {
            let from = sources.next();
            let first = i as u64 * tags as u64;
            batch.spawn(async move {
                let mut c = connect(from, addr).await?;
                let frame = frame_of(&ClientMsg::Presence {
                    tags: (first..first + tags as u64).map(presence_tag).collect(),
                })?;
                c.send(&frame).await?;
                match c.recv().await? {
                    MediatorMsg::Present { .. } => anyhow::Ok((i, c)),
                    other => bail!("expected Present, got {other:?}"),
                }
            });
        }
        while let Some(done) = batch.join_next().await {
            let (i, c) = done??;
            holders[i] = Some(c);
        }
        opened += count;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = mediator.rss_kib()?;
    println!(
        "presence: {n} idle presence connections x {tags} tags (opened in {:.2} s): mediator RSS \
         {:.1} MiB -> {:.1} MiB, {:.2} KiB per connection",
        started.elapsed().as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / n as f64,
    );
    // Rings: a room opened under the first tag of holder i rings holder i.
    let mut template = HelloFrame::new("ringer")?;
    let mut times = Vec::new();
    for i in (0..n).step_by((n / 200).max(1)) {
        let tag = presence_tag(i as u64 * tags as u64);
        let room = u64::from_be_bytes(tag[..8].try_into()?);
        let mut opener = connect(sources.next(), addr).await?;
        let at = Instant::now();
        opener.send(template.for_room(room)).await?;
        let holder = holders[i].as_mut().context("every holder connected")?;
        match holder.recv().await? {
            MediatorMsg::Ring { tag: rung } if rung == tag => times.push(at.elapsed()),
            other => bail!("expected the ring, got {other:?}"),
        }
        opener.expect_waiting().await?;
    }
    times.sort();
    println!(
        "presence: room opened -> ring at the holder, {} rings: p50 {} p99 {}",
        times.len(),
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99)),
    );
    drop(holders);
    Ok(())
}

/// The tag a presence holder waits under: the room tag [`HelloFrame::for_room`]
/// writes for room `n`.
fn presence_tag(n: u64) -> [u8; 32] {
    let mut tag = [0u8; 32];
    tag[..8].copy_from_slice(&n.to_be_bytes());
    tag
}

/// What a pairing run measured.
struct Figures {
    pairings: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    errors: u64,
    elapsed: Duration,
    /// CPU seconds of the mediators (and Redis) and of this generator.
    cpu_servers: f64,
    cpu_self: f64,
    /// The servers' system (kernel) share of `cpu_servers`.
    sys_servers: f64,
    /// Context switches of the servers' threads.
    switches: u64,
}

impl Figures {
    fn line(&self, what: &str, pairs: usize) -> String {
        let per_pairing = |x: f64| x / self.pairings.max(1) as f64;
        format!(
            "{what}: {pairs} concurrent pairs for {:.1} s: {} pairings, {:.0} pairings/s; \
             time to Matched (joiner connect -> both Matched) p50 {}, p99 {}, max {}; {} errors; \
             CPU: servers {:.0}% ({:.0} us per pairing, {:.0} of it in the kernel; {:.1} context \
             switches per pairing), generator {:.0}% ({:.0} us per pairing)",
            self.elapsed.as_secs_f64(),
            self.pairings,
            self.per_sec,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.errors,
            100.0 * self.cpu_servers / self.elapsed.as_secs_f64(),
            self.us_per_pairing(),
            1e6 * per_pairing(self.sys_servers),
            per_pairing(self.switches as f64),
            100.0 * self.cpu_self / self.elapsed.as_secs_f64(),
            1e6 * per_pairing(self.cpu_self),
        )
    }

    /// The servers' CPU time per pairing, in microseconds.
    fn us_per_pairing(&self) -> f64 {
        1e6 * self.cpu_servers / self.pairings.max(1) as f64
    }
}

/// `pairs` workers pair clients back to back for `duration`; worker `i` puts its
/// hosts on `hosts_at[i % len]` and its joiners on `joiners_at[i % len]`. `pids`
/// are the server processes whose CPU time is counted.
async fn pair_for(
    pairs: usize,
    duration: Duration,
    sources: Arc<Sources>,
    hosts_at: &[SocketAddr],
    joiners_at: &[SocketAddr],
    pids: &[String],
    punch: bool,
) -> anyhow::Result<Figures> {
    // Room numbers never repeat across runs, so a mediator reused for the next
    // run can hold nothing that matches it.
    static ROOMS: AtomicU64 = AtomicU64::new(0);
    let rooms = &ROOMS;
    let errors = Arc::new(AtomicU64::new(0));
    let servers_cpu = || pids.iter().map(|p| cpu_secs(p)).sum::<f64>();
    let servers_sys = || pids.iter().map(|p| cpu_split(p).1).sum::<f64>();
    let servers_switches = || pids.iter().map(|p| context_switches(p)).sum::<u64>();
    let (cpu_servers, cpu_self) = (servers_cpu(), cpu_secs("self"));
    let (sys_servers, switches) = (servers_sys(), servers_switches());
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..pairs {
        let (errors, sources) = (errors.clone(), sources.clone());
        let host_at = hosts_at[i % hosts_at.len()];
        let joiner_at = joiners_at[i % joiners_at.len()];
        let mut host_hello = HelloFrame::new("host")?;
        let mut joiner_hello = HelloFrame::new("joiner")?;
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let room = rooms.fetch_add(1, Ordering::Relaxed);
                let one = async {
                    let mut host = connect(sources.next(), host_at).await?;
                    host.send(host_hello.for_room(room)).await?;
                    host.expect_waiting().await?;
                    let t0 = Instant::now();
                    let mut joiner = connect(sources.next(), joiner_at).await?;
                    joiner.send(joiner_hello.for_room(room)).await?;
                    joiner.expect_matched().await?;
                    host.expect_matched().await?;
                    let latency = t0.elapsed();
                    if punch {
                        tokio::try_join!(host.punch_and_report(), joiner.punch_and_report())?;
                    }
                    anyhow::Ok(latency)
                };
                match one.await {
                    Ok(latency) => latencies.push(latency),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("pairing failed: {e:#}");
                        }
                        // Out of file descriptors or ports: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        latencies.extend(done?);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Figures {
        pairings: latencies.len(),
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        cpu_servers: servers_cpu() - cpu_servers,
        cpu_self: cpu_secs("self") - cpu_self,
        sys_servers: servers_sys() - sys_servers,
        switches: servers_switches().saturating_sub(switches),
    })
}

/// `pairs` workers pair clients back to back for `duration` on one mediator
/// started from `bin`; prints the figures after `label`.
async fn throughput(
    bin: &Path,
    label: &str,
    pairs: usize,
    duration: Duration,
    sources: Arc<Sources>,
    punch: bool,
) -> anyhow::Result<Figures> {
    let mediator = Mediator::start(bin)?;
    let addr = [mediator.addr];
    let pid = [mediator.child.id().to_string()];
    let figures = pair_for(pairs, duration, sources, &addr, &addr, &pid, punch).await?;
    println!("{}", figures.line(&format!("throughput{label}"), pairs));
    Ok(figures)
}

/// One round of the test binary and the baseline at once, `pairs / 2` pairs on
/// each, over the same window: (test's figures, baseline's).
async fn side_by_side(
    test_bin: &Path,
    base_bin: &Path,
    pairs: usize,
    duration: Duration,
    sources: &Arc<Sources>,
    punch: bool,
) -> anyhow::Result<(Figures, Figures)> {
    let (test, base) = (Mediator::start(test_bin)?, Mediator::start(base_bin)?);
    let half = (pairs / 2).max(1);
    let pid = |m: &Mediator| [m.child.id().to_string()];
    let (test_pid, base_pid) = (pid(&test), pid(&base));
    let (test_at, base_at) = ([test.addr], [base.addr]);
    let (t, b) = tokio::join!(
        pair_for(
            half,
            duration,
            sources.clone(),
            &test_at,
            &test_at,
            &test_pid,
            punch
        ),
        pair_for(
            half,
            duration,
            sources.clone(),
            &base_at,
            &base_at,
            &base_pid,
            punch
        ),
    );
    let (t, b) = (t?, b?);
    println!("{}", t.line("throughput [test, side by side]", half));
    println!("{}", b.line("throughput [baseline, side by side]", half));
    Ok((t, b))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The binaries a phase runs in round `round`: with a baseline, ABBA order so
/// that a drifting machine favours neither.
fn round_order(s: &Settings, round: usize) -> Vec<(&Path, &'static str)> {
    let test = (s.mediator.as_path(), " [test]");
    match &s.baseline {
        None => vec![(test.0, "")],
        Some(base) if round % 2 == 0 => vec![(base.as_path(), " [baseline]"), test],
        Some(base) => vec![test, (base.as_path(), " [baseline]")],
    }
}

/// Medians of the rounds for the test binary and the baseline, and their ratio.
fn summarise(what: &str, unit: &str, test: Vec<f64>, base: Vec<f64>) {
    if base.is_empty() && test.len() < 2 {
        return;
    }
    let rounds = test.len();
    let (t, b) = (median(test), median(base));
    if b == 0.0 {
        println!("{what}: median of {rounds} rounds {t:.2} {unit}");
    } else {
        println!(
            "{what}: medians of {rounds} alternated rounds: test {t:.2} {unit}, baseline {b:.2} \
             {unit}: {:.2} x the baseline",
            t / b
        );
    }
}

/// The same load on one in-memory instance, then on two instances sharing a
/// `redis-server` with every pair split over both, at each concurrency in
/// `levels` (the two set-ups alternate, so drift in the machine hits both). Prints
/// every level, then each set-up's capacity (its best pairings/s over the levels)
/// and their ratio.
async fn scale_out(
    bin: &Path,
    levels: &[usize],
    duration: Duration,
    sources: Arc<Sources>,
    punch: bool,
) -> anyhow::Result<()> {
    let alone = Mediator::start(bin)?;
    let redis = redis_server::RedisServer::start();
    let url = redis.url();
    let a = Mediator::start_with(bin, &["--redis", &url])?;
    let b = Mediator::start_with(bin, &["--redis", &url])?;
    let mut shared_pids = vec![a.child.id().to_string(), b.child.id().to_string()];
    shared_pids.extend(redis.pid().map(|p| p.to_string()));
    let mut best: [Option<(usize, Figures)>; 2] = [None, None];
    // The p99 target holds at every level, not only at the best one.
    let mut worst_p99 = (0, Duration::ZERO);
    for &pairs in levels {
        let memory = pair_for(
            pairs,
            duration,
            sources.clone(),
            &[alone.addr],
            &[alone.addr],
            &[alone.child.id().to_string()],
            punch,
        )
        .await?;
        println!("{}", memory.line("scale-out, 1 instance in memory", pairs));
        let shared = pair_for(
            pairs,
            duration,
            sources.clone(),
            &[a.addr, b.addr],
            &[b.addr, a.addr],
            &shared_pids,
            punch,
        )
        .await?;
        println!(
            "{}",
            shared.line("scale-out, 2 instances + Redis, every pair split", pairs)
        );
        println!(
            "scale-out at {pairs} pairs: 2 instances + Redis reach {:.2} x the pairings/s of 1 in-memory instance",
            shared.per_sec / memory.per_sec.max(1e-9)
        );
        if shared.p99 >= worst_p99.1 {
            worst_p99 = (pairs, shared.p99);
        }
        for (slot, figures) in best.iter_mut().zip([memory, shared]) {
            if slot
                .as_ref()
                .map_or(true, |(_, b)| figures.per_sec > b.per_sec)
            {
                *slot = Some((pairs, figures));
            }
        }
    }
    let [Some((mem_pairs, memory)), Some((shared_pairs, shared))] = best else {
        bail!("the scale-out phase needs at least one concurrency");
    };
    let ratio = shared.per_sec / memory.per_sec.max(1e-9);
    println!(
        "scale-out capacity: 1 instance in memory {:.0} pairings/s (at {mem_pairs} pairs), \
         2 instances + Redis {:.0} pairings/s (at {shared_pairs} pairs): {:.2} x (target >= 0.5: \
         {}); worst p99 to Matched with Redis {} (at {} pairs; target <= 50 ms: {})",
        memory.per_sec,
        shared.per_sec,
        ratio,
        if ratio >= 0.5 { "met" } else { "MISSED" },
        ms(worst_p99.1),
        worst_p99.0,
        if worst_p99.1 <= Duration::from_millis(50) {
            "met"
        } else {
            "MISSED"
        },
    );
    Ok(())
}

/// The kernel's count of listen-queue overflows and drops (this network
/// namespace), from /proc/net/netstat: a dropped SYN shows up here.
fn listen_drops() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let pairs = names.split_whitespace().zip(values.split_whitespace());
        let mut total = 0;
        for (name, value) in pairs {
            if name == "ListenOverflows" || name == "ListenDrops" {
                total += value.parse::<u64>().ok()?;
            }
        }
        return Some(total);
    }
    None
}

/// `b` clients connect at once (b/2 rooms, two clients each) and pair.
async fn burst(bin: &Path, b: usize, sources: &Sources) -> anyhow::Result<()> {
    let mediator = Mediator::start(bin)?;
    let addr = mediator.addr;
    let gate = Arc::new(tokio::sync::Barrier::new(b + 1));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..b {
        let gate = gate.clone();
        let from = sources.next();
        let mut frame = HelloFrame::new("burst")?;
        let room = 5_000_000 + (i / 2) as u64;
        clients.spawn(async move {
            gate.wait().await;
            let t0 = Instant::now();
            let mut s = connect(from, addr).await?;
            let connect_time = t0.elapsed();
            s.send(frame.for_room(room)).await?;
            // Either Waiting then Matched (first of the two) or Matched at once.
            let mut msg = s.recv().await.context("first answer")?;
            if let MediatorMsg::Waiting { .. } = msg {
                msg = s.recv().await.context("after Waiting")?;
            }
            if !matches!(msg, MediatorMsg::Matched { .. }) {
                bail!("expected Matched, got {msg:?}");
            }
            anyhow::Ok((connect_time, t0.elapsed()))
        });
    }
    let drops_before = listen_drops();
    let started = Instant::now();
    gate.wait().await;
    let (mut connects, mut matched, mut failed) = (Vec::new(), Vec::new(), 0);
    while let Some(done) = clients.join_next().await {
        match done? {
            Ok((c, m)) => {
                connects.push(c);
                matched.push(m);
            }
            Err(e) => {
                failed += 1;
                if failed <= 5 {
                    eprintln!("burst client failed: {e:#}");
                }
            }
        }
    }
    let drops = match (drops_before, listen_drops()) {
        (Some(before), Some(after)) => format!("{}", after.saturating_sub(before)),
        _ => "unknown".to_owned(),
    };
    connects.sort_unstable();
    matched.sort_unstable();
    let stalled = connects
        .iter()
        .filter(|c| **c >= Duration::from_millis(900))
        .count();
    println!(
        "burst: {b} simultaneous connects: connect time p50 {}, p99 {}, max {}; {stalled} stalled \
         (>= 0.9 s, a dropped SYN); kernel listen drops {drops}; {} paired, {failed} failed; \
         all done in {}",
        ms(percentile(&connects, 0.5)),
        ms(percentile(&connects, 0.99)),
        ms(connects.last().copied().unwrap_or_default()),
        matched.len(),
        ms(started.elapsed()),
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let s = settings()?;
    println!(
        "loadgen: mediator {}{}, {} pairs x {:?}, {} waiting, burst {}{}",
        s.mediator.display(),
        s.baseline
            .as_ref()
            .map(|b| format!(" against baseline {} ({} rounds)", b.display(), s.rounds))
            .unwrap_or_default(),
        s.pairs,
        s.duration,
        s.waiting,
        s.burst,
        if s.punch {
            ", clients through PunchNow and SessionPath"
        } else {
            ""
        }
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = std::env::var("LOADGEN_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
    {
        builder.worker_threads(threads);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async {
        let sources = Arc::new(Sources::default());
        let run = |phase: &str| s.only.as_deref().map_or(true, |only| only == phase);
        if run("memory") {
            let (mut test, mut base) = (Vec::new(), Vec::new());
            for round in 0..s.rounds {
                for (bin, label) in round_order(&s, round) {
                    let kib = memory(bin, label, s.waiting, &sources).await?;
                    if bin == s.mediator {
                        test.push(kib);
                    } else {
                        base.push(kib);
                    }
                }
            }
            summarise("memory per waiting client", "KiB", test, base);
        }
        if let (true, true, Some(base)) = (run("throughput"), s.side_by_side, &s.baseline) {
            let (mut rates, mut costs, mut ratios) = ((vec![], vec![]), (vec![], vec![]), vec![]);
            for _ in 0..s.rounds {
                let (test, baseline) =
                    side_by_side(&s.mediator, base, s.pairs, s.duration, &sources, s.punch).await?;
                ratios.push(test.us_per_pairing() / baseline.us_per_pairing().max(1e-9));
                println!(
                    "side by side: CPU per pairing {:.2} x the baseline this round",
                    ratios.last().copied().unwrap_or_default()
                );
                rates.0.push(test.per_sec);
                rates.1.push(baseline.per_sec);
                costs.0.push(test.us_per_pairing());
                costs.1.push(baseline.us_per_pairing());
            }
            summarise("throughput, side by side", "pairings/s", rates.0, rates.1);
            summarise("mediator CPU per pairing, side by side", "us", costs.0, costs.1);
            println!(
                "mediator CPU per pairing, side by side: median of the {} rounds' ratios {:.2} x the baseline",
                ratios.len(),
                median(ratios)
            );
        } else if run("throughput") {
            let mut rates = (Vec::new(), Vec::new());
            let mut costs = (Vec::new(), Vec::new());
            for round in 0..s.rounds {
                for (bin, label) in round_order(&s, round) {
                    let f = throughput(bin, label, s.pairs, s.duration, sources.clone(), s.punch)
                        .await?;
                    let (rate, cost) = if bin == s.mediator {
                        (&mut rates.0, &mut costs.0)
                    } else {
                        (&mut rates.1, &mut costs.1)
                    };
                    rate.push(f.per_sec);
                    cost.push(f.us_per_pairing());
                }
            }
            summarise("throughput", "pairings/s", rates.0, rates.1);
            summarise("mediator CPU per pairing", "us", costs.0, costs.1);
        }
        if run("presence") {
            let n = std::env::var("LOADGEN_PRESENCE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000);
            presence(&s.mediator, n, 8, &sources).await?;
        }
        if run("burst") {
            burst(&s.mediator, s.burst, &sources).await?;
        }
        if run("redis") {
            scale_out(
                &s.mediator,
                &s.scale_pairs,
                s.duration,
                sources.clone(),
                s.punch,
            )
            .await?;
        }
        anyhow::Ok(())
    })
}
