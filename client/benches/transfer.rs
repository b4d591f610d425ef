//! File transfer benchmark (issues 6 and 26): how close a transfer gets to the
//! one-core encrypt-then-MAC limit, where every microsecond of a 64 KiB chunk
//! goes, and how p2pchat compares with both magic-wormholes on the same file.
//!
//! 1. `openssl speed` for aes-256-cbc and sha256 on one core (`taskset -c 0`),
//!    giving the limit `1 / (1/aes + 1/sha)`.
//! 2. In process: each pipeline stage on 64 KiB chunks (read + hash thread, bincode
//!    encode, seal, loopback TCP, open, decode, write + hash thread), then the whole
//!    pipeline over loopback TCP with the real threads.
//! 3. End to end, in rounds that alternate three contenders on the same file and
//!    the same cores: a real `mediator` and two real `client --json` processes
//!    (one `/send`s the file, the other runs with `--yes`, and a chat line is typed
//!    every 20 ms during the transfer for the chat RTT), magic-wormhole (Python)
//!    and wormhole-rs, both wormholes against their own mailbox server and transit
//!    relay on 127.0.0.1. Every contender is timed from the first received byte on
//!    the receiver's disk to the verified file, with the CPU of both processes
//!    over that span; the summary gives medians over the rounds and the ratio to
//!    the faster wormhole. The wormholes need, made once:
//!
//!    ```text
//!    python3 -m venv target/wormhole-venv
//!    target/wormhole-venv/bin/pip install magic-wormhole \
//!        magic-wormhole-mailbox-server magic-wormhole-transit-relay
//!    cargo install --locked --root target/wormhole-rs magic-wormhole-cli
//!    ```
//!
//!    (or point P2PCHAT_BENCH_WORMHOLE_VENV at another virtualenv and
//!    P2PCHAT_BENCH_WORMHOLE_RS at another `wormhole-rs`). A missing one is
//!    reported as NOT MEASURED. P2PCHAT_BENCH_BASELINE_CLIENT=path/to/client
//!    adds another build of our client (say, the commit before a change) to the
//!    rounds, for a before/after on the same machine at the same time.
//!
//! `cargo bench -p client --bench transfer`. Environment: P2PCHAT_BENCH_MIB (file
//! size, default 256), P2PCHAT_BENCH_ROUNDS (end-to-end rounds, default 5),
//! P2PCHAT_BENCH_E2E=0 to skip part 3, P2PCHAT_BENCH_OPENSSL=0 to skip part 1,
//! P2PCHAT_BENCH_STAGES=0 to skip the per-stage table, P2PCHAT_BENCH_RUNS
//! (in-process pipeline runs, default 3; 0 skips them).
//! Built without `--bench` (`cargo test --benches`) it runs a small smoke pass of
//! part 2 only.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dhke::schedule::Key;
use engine::files::{ChunkSource, IncomingFile, Outgoing, OutgoingFile, PartScope};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wire::frame::HEADER_LEN;
use wire::peer::MAX_FILE_CHUNK;
use wire::{Link, Opener, PeerMsg, Sealer};

// The binaries under test, and the mediator built on demand, as the tests find them.
#[path = "../tests/common/mod.rs"]
mod common;

const MIB: u64 = 1024 * 1024;
/// Chunk-level stages run over this much data (or the file size, if smaller).
const STAGE_BYTES: u64 = 256 * MIB;

#[derive(Debug, Clone)]
struct Settings {
    bench: bool,
    file_bytes: u64,
    openssl: bool,
    e2e: bool,
    rounds: usize,
}

fn settings() -> Settings {
    let bench = std::env::args().any(|a| a == "--bench");
    let env_on = |name: &str, default: bool| {
        std::env::var(name)
            .map(|v| !matches!(v.as_str(), "0" | "false" | "no" | ""))
            .unwrap_or(default)
    };
    let mib = std::env::var("P2PCHAT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(if bench { 256 } else { 8 });
    Settings {
        bench,
        file_bytes: mib.max(1) * MIB,
        openssl: env_on("P2PCHAT_BENCH_OPENSSL", bench),
        e2e: env_on("P2PCHAT_BENCH_E2E", bench),
        rounds: std::env::var("P2PCHAT_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(5)
            .max(1),
    }
}

fn main() -> anyhow::Result<()> {
    let s = settings();
    println!(
        "p2pchat file transfer benchmark: {} MiB file, {} CPUs{}",
        s.file_bytes / MIB,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if s.bench { "" } else { " (smoke pass)" }
    );
    let limit = if s.openssl {
        match openssl_limit() {
            Ok(l) => Some(l),
            Err(e) => {
                println!("\n[1] openssl speed unavailable: {e:#}");
                None
            }
        }
    } else {
        println!("\n[1] openssl speed skipped");
        None
    };

    let work = TempDir::new("bench")?;
    let source = work.path().join("payload.bin");
    make_file(&source, s.file_bytes)?;
    let source_sha = sha256_file(&source)?;

    stages(
        &work,
        &source,
        s.file_bytes.min(STAGE_BYTES),
        limit.as_ref(),
    )?;

    if s.e2e {
        let file = Payload {
            path: source.clone(),
            size: s.file_bytes,
            sha256: source_sha,
        };
        rounds(&work, &file, s.rounds, limit.as_ref())?;
    } else {
        println!("\n[3] end to end skipped (P2PCHAT_BENCH_E2E=1 to run it)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Part 1: openssl

#[derive(Debug, Clone, Copy)]
struct Limit {
    aes: f64,
    sha: f64,
    /// Encrypt-then-MAC bytes per second on one core.
    etm: f64,
}

fn openssl_limit() -> anyhow::Result<Limit> {
    println!("\n[1] openssl speed, 64 KiB blocks, 2 s each, one core");
    let aes = openssl_speed("aes-256-cbc")?;
    let sha = openssl_speed("sha256")?;
    let etm = 1.0 / (1.0 / aes + 1.0 / sha);
    println!("    aes-256-cbc encrypt   {:>8.1} MB/s", aes / 1e6);
    println!("    sha256                {:>8.1} MB/s", sha / 1e6);
    println!(
        "    encrypt-then-MAC      {:>8.1} MB/s  = 1/(1/aes + 1/sha): the one-core limit",
        etm / 1e6
    );
    Ok(Limit { aes, sha, etm })
}

/// Bytes per second for `alg` on 64 KiB blocks, pinned to CPU 0 when `taskset`
/// exists.
fn openssl_speed(alg: &str) -> anyhow::Result<f64> {
    let args = ["speed", "-evp", alg, "-bytes", "65536", "-seconds", "2"];
    let pinned = Command::new("taskset")
        .args(["-c", "0", "openssl"])
        .args(args)
        .stderr(Stdio::null())
        .output();
    let output = match pinned {
        Ok(o) if o.status.success() => o,
        _ => Command::new("openssl")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .context("run openssl")?,
    };
    let text = String::from_utf8_lossy(&output.stdout);
    // The last line reads `<name>  <n>k`, in 1000s of bytes per second.
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("openssl printed nothing")?;
    let figure = last
        .split_whitespace()
        .last()
        .and_then(|f| f.strip_suffix('k'))
        .and_then(|f| f.parse::<f64>().ok())
        .with_context(|| format!("unexpected openssl line {last:?}"))?;
    Ok(figure * 1000.0)
}

// ---------------------------------------------------------------------------
// Part 2: stages in process

/// Whose downloads the in-process receivers write.
fn bench_scope() -> PartScope {
    PartScope::new("bench")
}

/// One row of the table.
struct Stage {
    name: &'static str,
    thread: &'static str,
    bytes: u64,
    elapsed: Duration,
}

impl Stage {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn us_per_chunk(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / (self.bytes as f64 / MAX_FILE_CHUNK as f64)
    }
}

fn stages(
    work: &TempDir,
    source: &Path,
    stage_bytes: u64,
    limit: Option<&Limit>,
) -> anyhow::Result<()> {
    if std::env::var("P2PCHAT_BENCH_STAGES").is_ok_and(|v| v == "0") {
        return pipelines(work, source, limit);
    }
    println!(
        "\n[2] in process, {} MiB through each stage in {} B chunks (MAX_FILE_CHUNK)",
        stage_bytes / MIB,
        MAX_FILE_CHUNK
    );
    let chunks = stage_bytes / MAX_FILE_CHUNK as u64;
    let mut rows = Vec::new();

    // Reader thread: read + BLAKE3 of the whole file, handed over a bounded queue.
    let out = OutgoingFile::open(source)?;
    let t = Instant::now();
    let mut src = out.start(0)?;
    let mut read = 0u64;
    while read < stage_bytes {
        match src.blocking_next()? {
            Outgoing::Chunk { data, .. } => {
                read += data.len() as u64;
                src.recycle(data);
            }
            Outgoing::Finished { .. } => break,
        }
    }
    rows.push(Stage {
        name: "ChunkSource: read + BLAKE3",
        thread: "sender file thread",
        bytes: read,
        elapsed: t.elapsed(),
    });
    src.cancel();

    // The file hash alone.
    let block = random_bytes(MAX_FILE_CHUNK);
    let t = Instant::now();
    let mut h = blake3::Hasher::new();
    for _ in 0..chunks {
        h.update(&block);
    }
    std::hint::black_box(h.finalize());
    rows.push(Stage {
        name: "  of which BLAKE3 (blake3 crate)",
        thread: "",
        bytes: chunks * MAX_FILE_CHUNK as u64,
        elapsed: t.elapsed(),
    });

    // Encode → seal → open → decode, timed per step on one thread.
    let enc = Key::from_bytes([1; 32]);
    let mac = Key::from_bytes([2; 32]);
    let mut sealer = Sealer::new(&enc, &mac);
    let mut opener = Opener::new(&enc, &mac);
    let msg = PeerMsg::FileChunk {
        id: 1,
        offset: 1 << 30,
        data: block.clone(),
    };
    let mut plaintext = Vec::with_capacity(MAX_FILE_CHUNK + 64);
    let mut record = Vec::with_capacity(80 * 1024);
    let mut rng = rand::rngs::OsRng;
    let (mut t_enc, mut t_seal, mut t_open, mut t_dec) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    for _ in 0..chunks {
        let t0 = Instant::now();
        plaintext.clear();
        wire::encode_into(&msg, &mut plaintext)?;
        let t1 = Instant::now();
        record.clear();
        sealer.seal_into(&plaintext, &mut rng, &mut record)?;
        let t2 = Instant::now();
        let opened = opener.open(&mut record)?;
        let t3 = Instant::now();
        let decoded: PeerMsg = wire::decode(opened)?;
        let t4 = Instant::now();
        std::hint::black_box(decoded);
        t_enc += t1 - t0;
        t_seal += t2 - t1;
        t_open += t3 - t2;
        t_dec += t4 - t3;
    }
    let bytes = chunks * MAX_FILE_CHUNK as u64;
    let record_len = wire::record::sealed_len(plaintext.len());
    rows.push(Stage {
        name: "bincode encode FileChunk (copy)",
        thread: "sender sealing task",
        bytes,
        elapsed: t_enc,
    });
    rows.push(Stage {
        name: "Sealer::seal_into (AES-CBC+HMAC)",
        thread: "sender sealing task",
        bytes,
        elapsed: t_seal,
    });
    let tcp = loopback_tcp(stage_bytes, record_len)?;
    rows.push(tcp);
    rows.push(Stage {
        name: "Opener::open (HMAC + AES-CBC dec)",
        thread: "receiver opening task",
        bytes,
        elapsed: t_open,
    });
    rows.push(Stage {
        name: "bincode decode FileChunk (alloc+copy)",
        thread: "receiver opening task",
        bytes,
        elapsed: t_dec,
    });

    // Writer thread: write + BLAKE3, fed as the engine would (one Vec per chunk).
    let dl = work.path().join("sink");
    let (mut sink, _) = IncomingFile::begin(&dl, "sink.bin", bytes, bench_scope(), 1)?;
    let t = Instant::now();
    for i in 0..chunks {
        sink.blocking_write(i * MAX_FILE_CHUNK as u64, block.clone())?;
    }
    let mut h = blake3::Hasher::new();
    for _ in 0..chunks {
        h.update(&block);
    }
    let written = sink.blocking_finish(*h.finalize().as_bytes())?;
    rows.push(Stage {
        name: "IncomingFile: write + BLAKE3",
        thread: "receiver file thread",
        bytes,
        elapsed: t.elapsed(),
    });
    std::fs::remove_file(written)?;

    println!(
        "\n    {:<40} {:<22} {:>10} {:>10}",
        "stage (per 64 KiB chunk)", "runs on", "µs/chunk", "MB/s"
    );
    for r in &rows {
        println!(
            "    {:<40} {:<22} {:>10.1} {:>10.1}",
            r.name,
            r.thread,
            r.us_per_chunk(),
            r.mbps()
        );
    }
    let per = |name: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(name))
            .map_or(0.0, Stage::us_per_chunk)
    };
    let sender = per("bincode encode") + per("Sealer");
    let receiver = per("Opener") + per("bincode decode");
    println!(
        "\n    sealing task  {:>6.1} µs/chunk → at most {:>7.1} MB/s (plus its share of the socket write)",
        sender,
        MAX_FILE_CHUNK as f64 / sender
    );
    println!(
        "    opening task  {:>6.1} µs/chunk → at most {:>7.1} MB/s (plus its share of the socket read)",
        receiver,
        MAX_FILE_CHUNK as f64 / receiver
    );
    let cpu_total = rows
        .iter()
        .filter(|r| !r.thread.is_empty())
        .map(Stage::us_per_chunk)
        .sum::<f64>();
    println!(
        "    CPU per chunk, all stages on both sides: {:.1} µs → on 2 cores at best {:.1} MB/s",
        cpu_total,
        2.0 * MAX_FILE_CHUNK as f64 / cpu_total
    );
    if let Some(l) = limit {
        println!(
            "    openssl one-core encrypt-then-MAC: {:.1} µs/chunk ({:.1} MB/s; aes {:.1} + sha {:.1} µs)",
            MAX_FILE_CHUNK as f64 / l.etm * 1e6,
            l.etm / 1e6,
            MAX_FILE_CHUNK as f64 / l.aes * 1e6,
            MAX_FILE_CHUNK as f64 / l.sha * 1e6
        );
    }

    pipelines(work, source, limit)
}

/// The pipeline a few times: the machine is shared, so the best run is the one
/// least disturbed by others.
fn pipelines(work: &TempDir, source: &Path, limit: Option<&Limit>) -> anyhow::Result<()> {
    let runs = std::env::var("P2PCHAT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(3);
    if runs == 0 {
        return Ok(());
    }
    let mut rates = Vec::new();
    for _ in 0..runs {
        rates.push(pipeline(work, source, limit)?);
    }
    rates.sort_by(f64::total_cmp);
    let best = rates[rates.len() - 1];
    println!(
        "\n    pipeline over {runs} runs: best {:.1} MB/s, median {:.1} MB/s{}",
        best / 1e6,
        rates[rates.len() / 2] / 1e6,
        limit.map_or(String::new(), |l| format!(
            " ({:.0}% / {:.0}% of the one-core encrypt-then-MAC limit)",
            100.0 * best / l.etm,
            100.0 * rates[rates.len() / 2] / l.etm
        ))
    );
    Ok(())
}

/// Loopback TCP alone: 64 KiB-ish frames from one thread to another.
fn loopback_tcp(bytes: u64, frame_len: usize) -> anyhow::Result<Stage> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let frames = bytes / MAX_FILE_CHUNK as u64;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let frame = vec![0u8; frame_len + HEADER_LEN];
    let t = Instant::now();
    for _ in 0..frames {
        s.write_all(&frame)?;
    }
    drop(s);
    let total = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let elapsed = t.elapsed();
    Ok(Stage {
        name: "loopback TCP write → read (2 threads)",
        thread: "kernel, both sides",
        bytes: total * MAX_FILE_CHUNK as u64 / (frame_len + HEADER_LEN) as u64,
        elapsed,
    })
}

/// The whole pipeline with the real threads over loopback TCP: reader thread →
/// sealing thread → socket → opening thread → writer thread. No tokio, no chat
/// engine: the best an integrated client can do on this machine.
fn pipeline(work: &TempDir, source: &Path, limit: Option<&Limit>) -> anyhow::Result<f64> {
    let out = OutgoingFile::open(source)?;
    let size = out.size();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let enc = Key::from_bytes([3; 32]);
    let mac = Key::from_bytes([4; 32]);
    let dl = work.path().join("pipeline-dl");
    let (opener_enc, opener_mac) = (enc.clone(), mac.clone());
    let sampler = ThreadSampler::start();
    let receiver = std::thread::Builder::new().name("opener".into()).spawn(
        move || -> anyhow::Result<PathBuf> {
            let (s, _) = listener.accept()?;
            let mut s = BufReader::with_capacity(256 * 1024, s);
            let mut opener = Opener::new(&opener_enc, &opener_mac);
            let (mut sink, _) = IncomingFile::begin(&dl, "payload.bin", size, bench_scope(), 2)?;
            let mut frame = Vec::with_capacity(80 * 1024);
            let (mut in_read, mut in_sink) = (Duration::ZERO, Duration::ZERO);
            loop {
                let t0 = Instant::now();
                let mut header = [0u8; HEADER_LEN];
                s.read_exact(&mut header)?;
                let len = Link::Peer.parse_header(header)?;
                frame.resize(len, 0);
                s.read_exact(&mut frame)?;
                let t1 = Instant::now();
                in_read += t1 - t0;
                match wire::decode::<PeerMsg>(opener.open(&mut frame)?)? {
                    PeerMsg::FileChunk { offset, data, .. } => {
                        let t2 = Instant::now();
                        sink.blocking_write(offset, data)?;
                        in_sink += t2.elapsed();
                    }
                    PeerMsg::FileDone { blake3, .. } => {
                        println!(
                            "    opening thread: {:.2} s in socket reads, {:.2} s handing chunks to the writer thread",
                            in_read.as_secs_f64(),
                            in_sink.as_secs_f64()
                        );
                        return Ok(sink.blocking_finish(blake3)?);
                    }
                    other => bail!("unexpected {other:?}"),
                }
            }
        },
    )?;
    let t = Instant::now();
    let cpu0 = cpu_seconds();
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut s = std::io::BufWriter::with_capacity(256 * 1024, s);
    let mut sealer = Sealer::new(&enc, &mac);
    let mut rng = rand::rngs::OsRng;
    let mut src: ChunkSource = out.start(0)?;
    let mut plaintext = Vec::with_capacity(MAX_FILE_CHUNK + 64);
    let mut record = Vec::with_capacity(80 * 1024);
    let (mut in_next, mut in_write) = (Duration::ZERO, Duration::ZERO);
    loop {
        let t0 = Instant::now();
        let next = src.blocking_next()?;
        in_next += t0.elapsed();
        let (msg, done) = match next {
            Outgoing::Chunk { offset, data } => (
                PeerMsg::FileChunk {
                    id: 1,
                    offset,
                    data,
                },
                false,
            ),
            Outgoing::Finished { blake3 } => (PeerMsg::FileDone { id: 1, blake3 }, true),
        };
        plaintext.clear();
        wire::encode_into(&msg, &mut plaintext)?;
        if let PeerMsg::FileChunk { data, .. } = msg {
            src.recycle(data);
        }
        record.clear();
        record.extend_from_slice(&[0; HEADER_LEN]);
        sealer.seal_into(&plaintext, &mut rng, &mut record)?;
        let header = Link::Peer.header(record.len() - HEADER_LEN)?;
        record[..HEADER_LEN].copy_from_slice(&header);
        let t1 = Instant::now();
        s.write_all(&record)?;
        in_write += t1.elapsed();
        if done {
            break;
        }
    }
    s.flush()?;
    println!(
        "    sealing thread: {:.2} s waiting for the reader thread, {:.2} s in socket writes",
        in_next.as_secs_f64(),
        in_write.as_secs_f64()
    );
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let elapsed = t.elapsed();
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    let per_thread = sampler.stop();
    let rate = size as f64 / elapsed.as_secs_f64();
    let identical = sha256_file(&received)? == sha256_file(source)?;
    println!(
        "\n    whole pipeline in process over loopback TCP (4 threads, 2 cores): {:.1} MiB in {:.2} s = {:.1} MB/s{}{}",
        size as f64 / MIB as f64,
        elapsed.as_secs_f64(),
        rate / 1e6,
        limit.map_or(String::new(), |l| format!(
            " = {:.0}% of the encrypt-then-MAC limit",
            100.0 * rate / l.etm
        )),
        if identical { ", byte-identical" } else { ", FILES DIFFER" }
    );
    let chunks = size as f64 / MAX_FILE_CHUNK as f64;
    if let Some(cpu) = cpu {
        println!(
            "    CPU used: {:.2} s = {:.2} cores busy, {:.1} µs of CPU per chunk",
            cpu,
            cpu / elapsed.as_secs_f64(),
            cpu * 1e6 / chunks
        );
    }
    for (name, secs) in per_thread {
        println!(
            "      thread {:<12} {:>6.2} s CPU = {:>5.1} µs/chunk, busy {:>3.0}% of the time",
            name,
            secs,
            secs * 1e6 / chunks,
            100.0 * secs / elapsed.as_secs_f64()
        );
    }
    std::fs::remove_file(received)?;
    Ok(rate)
}

// ---------------------------------------------------------------------------
// Part 3: p2pchat, magic-wormhole and wormhole-rs, alternated

/// The file every contender moves.
struct Payload {
    path: PathBuf,
    size: u64,
    sha256: [u8; 32],
}

/// Who moves the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Ours,
    MagicWormhole,
    WormholeRs,
    /// Another build of our client (P2PCHAT_BENCH_BASELINE_CLIENT), for a
    /// before/after in the same run.
    Baseline,
}

impl Contender {
    const ALL: [Contender; 4] = [
        Contender::Ours,
        Contender::MagicWormhole,
        Contender::WormholeRs,
        Contender::Baseline,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Ours => "p2pchat (two clients)",
            Contender::MagicWormhole => "magic-wormhole (Python)",
            Contender::WormholeRs => "wormhole-rs",
            Contender::Baseline => "p2pchat baseline build",
        }
    }
}

/// What one transfer cost. Every contender is timed the same way: from the
/// moment the first received byte is on the receiver's disk (a watcher polls
/// the download directory every millisecond) until the receiver has verified
/// the file (our `file_done`; a wormhole receiver's exit). CPU is what each
/// process used over that same span, so start-up, key exchange and (for the
/// wormholes) Python's imports are left out of both figures.
#[derive(Debug, Clone)]
struct Run {
    /// Bytes per second, first received byte to verified.
    rate: f64,
    /// Bytes per second from the command (`/send`; starting both wormholes) to
    /// verified: start-up and key exchange included.
    whole_rate: f64,
    sender_cpu_per_gb: Option<f64>,
    receiver_cpu_per_gb: Option<f64>,
    /// Chat round trips during the transfer (ours only).
    busy_rtt: Vec<Duration>,
    /// How a wormhole receiver says it connected, from its output.
    route: Option<String>,
}

/// A network namespace of our own, removed on drop. Every process of part 3
/// runs in it: the wormholes offer every address of every interface as a direct
/// hint and dial them, and here there is only loopback and a veth pair with
/// 198.51.100.1 (TEST-NET-2), whose traffic the kernel delivers over loopback
/// too. The pair is there for wormhole-rs, which never offers a loopback address
/// as a direct hint: without another address it would go through the transit
/// relay, which it does not do between two machines.
struct Netns(String);

impl Netns {
    fn new() -> anyhow::Result<Netns> {
        let name = format!("p2pb-{}-{}", std::process::id(), rand::random::<u16>());
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("ip").args(args).output().context(
                "run `ip` (iproute2): part 3 needs it and root for its own network namespace",
            )?;
            if !out.status.success() {
                bail!(
                    "`ip {}` failed ({}): part 3 needs root for its own network namespace \
                     (or P2PCHAT_BENCH_E2E=0 to skip it)",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(())
        };
        ip(&["netns", "add", &name])?;
        let ns = Netns(name);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.0, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["link", "set", "lo", "up"])?;
        in_ns(&[
            "link", "add", "bench0", "type", "veth", "peer", "name", "bench1",
        ])?;
        in_ns(&["addr", "add", "198.51.100.1/24", "dev", "bench0"])?;
        in_ns(&["link", "set", "bench0", "up"])?;
        in_ns(&["link", "set", "bench1", "up"])?;
        Ok(ns)
    }

    /// `program` run in the namespace (`ip netns exec` execs it in place, so the
    /// child's pid is the program's).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Our processes in it are gone by now (each `Proc` kills its own).
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// The servers every round uses: our mediator, and one mailbox server and
/// transit relay (Python, on loopback) for both wormholes, all in one
/// loopback-only namespace.
struct Arena {
    mediator: String,
    _mediator: Proc,
    wormholes: Option<WormholeServers>,
    wormhole_py: Option<PathBuf>,
    wormhole_rs: Option<PathBuf>,
    baseline: Option<PathBuf>,
    /// Last, so it is removed after every server in it has been killed.
    netns: Netns,
}

struct WormholeServers {
    mailbox_port: u16,
    relay_port: u16,
    _mailbox: Proc,
    _relay: Proc,
}

fn rounds(
    work: &TempDir,
    file: &Payload,
    rounds: usize,
    limit: Option<&Limit>,
) -> anyhow::Result<()> {
    println!(
        "\n[3] end to end, {rounds} rounds, contenders alternated (each round starts one later in the list)"
    );
    let arena = Arena::start(work)?;
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); Contender::ALL.len()];
    let mut idle = Vec::new();
    let mut baseline_idle = Vec::new();
    let present: Vec<usize> = (0..Contender::ALL.len())
        .filter(|&i| match Contender::ALL[i] {
            Contender::Ours => true,
            Contender::MagicWormhole => arena.wormhole_py.is_some(),
            Contender::WormholeRs => arena.wormhole_rs.is_some(),
            Contender::Baseline => arena.baseline.is_some(),
        })
        .collect();
    for round in 0..rounds {
        for k in 0..present.len() {
            let i = present[(round + k) % present.len()];
            let who = Contender::ALL[i];
            let dl = work.path().join(format!("dl-{round}-{i}"));
            std::fs::create_dir_all(&dl)?;
            let result = match (who, &arena.wormhole_py, &arena.wormhole_rs, &arena.baseline) {
                (Contender::Ours, ..) => {
                    ours(&arena, &common::client_bin(), work, file, &dl, &mut idle)
                }
                (Contender::MagicWormhole, Some(bin), _, _) => {
                    arena.wormhole_py_run(bin, file, &dl)
                }
                (Contender::WormholeRs, _, Some(bin), _) => arena.wormhole_rs_run(bin, file, &dl),
                (Contender::Baseline, _, _, Some(bin)) => {
                    ours(&arena, bin, work, file, &dl, &mut baseline_idle)
                }
                _ => continue,
            };
            // Nothing of this run is left to be written back during the next.
            let _ = std::fs::remove_dir_all(&dl);
            let _ = Command::new("sync").status();
            match result {
                Ok(run) => {
                    println!(
                        "    round {} {:<26} {:>7.1} MB/s (whole {:>6.1}), CPU s/GB sender {:>5}, receiver {:>5}{}",
                        round + 1,
                        who.name(),
                        run.rate / 1e6,
                        run.whole_rate / 1e6,
                        cpu_text(run.sender_cpu_per_gb),
                        cpu_text(run.receiver_cpu_per_gb),
                        if run.busy_rtt.is_empty() {
                            String::new()
                        } else {
                            let mut r = run.busy_rtt.clone();
                            format!(", chat RTT {}", percentiles(&mut r))
                        }
                    );
                    if let Some(route) = run.route.as_ref().filter(|_| round == 0) {
                        println!("      (its receiver said: {route})");
                    }
                    runs[i].push(run);
                }
                Err(e) => println!("    round {} {} FAILED: {e:#}", round + 1, who.name()),
            }
        }
    }
    println!(
        "    chat RTT idle, all rounds ({} lines): {}",
        idle.len(),
        percentiles(&mut idle)
    );
    if arena.baseline.is_some() {
        println!(
            "    chat RTT idle, baseline build ({} lines): {}",
            baseline_idle.len(),
            percentiles(&mut baseline_idle)
        );
    }
    summary(file.size, rounds, limit, &runs);
    Ok(())
}

fn cpu_text(v: Option<f64>) -> String {
    v.map_or("?".to_string(), |c| format!("{c:.2}"))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians per contender, the ratio to the faster wormhole and our chat RTT.
fn summary(size: u64, rounds: usize, limit: Option<&Limit>, runs: &[Vec<Run>]) {
    println!(
        "\n[summary] {} MiB file on loopback, medians of {rounds} alternated rounds \
         (MB/s from the first received byte on disk to the verified file; CPU per 10^9 bytes over the same span)",
        size / MIB
    );
    println!(
        "    {:<26} {:>9} {:>11} {:>12} {:>14}   rounds (MB/s)",
        "", "MB/s", "whole MB/s", "sender s/GB", "receiver s/GB"
    );
    let mut medians = [None; 4];
    for (i, who) in Contender::ALL.iter().enumerate() {
        let r = &runs[i];
        if r.is_empty() {
            println!("    {:<26} not measured", who.name());
            continue;
        }
        let rate = median(r.iter().map(|x| x.rate).collect());
        medians[i] = rate;
        let opt = |f: fn(&Run) -> Option<f64>| median(r.iter().filter_map(f).collect());
        println!(
            "    {:<26} {:>9.1} {:>11.1} {:>12} {:>14}   {}",
            who.name(),
            rate.unwrap_or(0.0) / 1e6,
            median(r.iter().map(|x| x.whole_rate).collect()).unwrap_or(0.0) / 1e6,
            cpu_text(opt(|x| x.sender_cpu_per_gb)),
            cpu_text(opt(|x| x.receiver_cpu_per_gb)),
            r.iter()
                .map(|x| format!("{:.0}", x.rate / 1e6))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let faster = medians[1].into_iter().chain(medians[2]).reduce(f64::max);
    match (medians[0], faster) {
        (Some(o), Some(t)) => println!(
            "    p2pchat / faster wormhole   {:>8.2}×  (target ≥ 1.8×)",
            o / t
        ),
        _ => println!("    p2pchat / faster wormhole   not measured"),
    }
    if let (Some(o), Some(b)) = (medians[0], medians[3]) {
        println!("    p2pchat / baseline build    {:>8.2}×", o / b);
    }
    let mut busy: Vec<Duration> = runs[0].iter().flat_map(|r| r.busy_rtt.clone()).collect();
    println!(
        "    chat RTT during our transfers ({} lines, all rounds): {} (target p99 ≤ 20 ms)",
        busy.len(),
        percentiles(&mut busy)
    );
    if !runs[3].is_empty() {
        let mut busy: Vec<Duration> = runs[3].iter().flat_map(|r| r.busy_rtt.clone()).collect();
        println!(
            "    chat RTT during the baseline's transfers ({} lines): {}",
            busy.len(),
            percentiles(&mut busy)
        );
    }
    if let Some(l) = limit {
        println!(
            "    record layer floor (openssl) {:>8.1} MB/s on one core = {:.2} CPU s/GB per end \
             (aes-256-cbc {:.2} + sha256 {:.2})",
            l.etm / 1e6,
            1e9 / l.etm,
            1e9 / l.aes,
            1e9 / l.sha
        );
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The virtualenv with `wormhole`, `twist` and the two servers, if there is one.
fn wormhole_venv() -> Option<PathBuf> {
    let venv = match std::env::var_os("P2PCHAT_BENCH_WORMHOLE_VENV") {
        Some(v) => PathBuf::from(v),
        None => target_dir()?.join("wormhole-venv"),
    };
    venv.join("bin").join("wormhole").exists().then_some(venv)
}

/// The `wormhole-rs` binary: P2PCHAT_BENCH_WORMHOLE_RS, else where `cargo install
/// --root target/wormhole-rs magic-wormhole-cli` puts it, else on the PATH.
fn wormhole_rs_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("P2PCHAT_BENCH_WORMHOLE_RS") {
        return Some(PathBuf::from(p));
    }
    let local = target_dir()?.join("wormhole-rs/bin/wormhole-rs");
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("wormhole-rs"))
            .find(|p| p.exists())
    })
}

/// `target/`, from where the client binary under test is.
fn target_dir() -> Option<PathBuf> {
    Some(common::client_bin().parent()?.parent()?.to_path_buf())
}

impl Arena {
    fn start(work: &TempDir) -> anyhow::Result<Arena> {
        let netns = Netns::new()?;
        let mut mediator = netns
            .command(common::mediator_bin())
            // The mailbox in memory: no file left in the source tree.
            .args(["--listen", "127.0.0.1:0", "--mailbox-db", ":memory:"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start mediator")?;
        let med_out = mediator.stdout.take().context("mediator stdout")?;
        let guard = Proc(mediator);
        let mut med_lines = BufReader::new(med_out).lines();
        let first = med_lines.next().context("mediator printed nothing")??;
        let server = first
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected mediator line {first:?}"))?
            .to_string();
        std::thread::spawn(move || for _ in med_lines.by_ref() {});

        let venv = wormhole_venv();
        let wormhole_rs = wormhole_rs_bin();
        if venv.is_none() {
            println!(
                "    magic-wormhole NOT MEASURED: no virtualenv at target/wormhole-venv \
                 (python3 -m venv target/wormhole-venv && target/wormhole-venv/bin/pip install \
                 magic-wormhole magic-wormhole-mailbox-server magic-wormhole-transit-relay; \
                 or set P2PCHAT_BENCH_WORMHOLE_VENV)"
            );
        }
        if wormhole_rs.is_none() {
            println!(
                "    wormhole-rs NOT MEASURED: no binary (cargo install --locked --root \
                 target/wormhole-rs magic-wormhole-cli; or set P2PCHAT_BENCH_WORMHOLE_RS)"
            );
        }
        // The servers are Python whichever wormhole runs: the mailbox server and
        // the transit relay come with the virtualenv.
        let wormholes = match &venv {
            Some(v) => Some(WormholeServers::start(v, work, &netns)?),
            None => {
                if wormhole_rs.is_some() {
                    println!(
                        "    wormhole-rs NOT MEASURED: its mailbox server and transit relay \
                         come from the virtualenv above"
                    );
                }
                None
            }
        };
        Ok(Arena {
            mediator: server,
            _mediator: guard,
            wormhole_py: venv.map(|v| v.join("bin").join("wormhole")),
            wormhole_rs: wormholes.as_ref().and(wormhole_rs),
            wormholes,
            baseline: std::env::var_os("P2PCHAT_BENCH_BASELINE_CLIENT").map(PathBuf::from),
            netns,
        })
    }

    fn servers(&self) -> anyhow::Result<&WormholeServers> {
        self.wormholes.as_ref().context("no mailbox server")
    }

    fn wormhole_py_run(&self, bin: &Path, file: &Payload, dl: &Path) -> anyhow::Result<Run> {
        let s = self.servers()?;
        let common = [
            format!("--relay-url=ws://127.0.0.1:{}/v1", s.mailbox_port),
            format!("--transit-helper=tcp:127.0.0.1:{}", s.relay_port),
        ];
        let code = format!("{}-bench-transfer", rand::random::<u16>() % 1000 + 1);
        let received = dl.join(file.path.file_name().context("source has a name")?);
        let mut send = self.netns.command(bin);
        send.args(&common)
            .args(["send", "--hide-progress", "--code", &code])
            .arg(&file.path);
        let mut recv = self.netns.command(bin);
        recv.args(&common)
            .args(["receive", "--hide-progress", "--accept-file", "-o"])
            .arg(&received)
            .arg(&code);
        let log = dl.with_extension("log");
        wormhole_pair(send, recv, file, dl, &received, &log)
    }

    fn wormhole_rs_run(&self, bin: &Path, file: &Payload, dl: &Path) -> anyhow::Result<Run> {
        let s = self.servers()?;
        let common = [
            format!("--rendezvous-server=ws://127.0.0.1:{}/v1", s.mailbox_port),
            format!("--relay-server=tcp://127.0.0.1:{}", s.relay_port),
        ];
        let code = format!("{}-bench-transfer", rand::random::<u16>() % 1000 + 1);
        let received = dl.join(file.path.file_name().context("source has a name")?);
        let mut send = self.netns.command(bin);
        send.arg("send")
            .args(&common)
            .args(["--no-qr", "--code", &code])
            .arg(&file.path);
        let mut recv = self.netns.command(bin);
        recv.arg("receive")
            .args(&common)
            .arg("--noconfirm")
            .arg("--out-dir")
            .arg(dl)
            .arg(&code);
        let log = dl.with_extension("log");
        wormhole_pair(send, recv, file, dl, &received, &log)
    }
}

impl WormholeServers {
    fn start(venv: &Path, work: &TempDir, netns: &Netns) -> anyhow::Result<WormholeServers> {
        let bin = venv.join("bin");
        let (mailbox_port, relay_port) = (free_port()?, free_port()?);
        let state = work.path().join("wormhole-state");
        std::fs::create_dir_all(&state)?;
        let server = |args: &[String]| -> anyhow::Result<Proc> {
            Ok(Proc(
                netns
                    .command(bin.join("twist"))
                    .args(args)
                    .current_dir(&state)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("start twist")?,
            ))
        };
        let mailbox = server(&[
            "wormhole-mailbox".into(),
            format!("--port=tcp:{mailbox_port}:interface=127.0.0.1"),
        ])?;
        let relay = server(&[
            "transitrelay".into(),
            format!("--port=tcp:{relay_port}:interface=127.0.0.1"),
        ])?;
        wait_listening(&mailbox, mailbox_port, Duration::from_secs(30))?;
        wait_listening(&relay, relay_port, Duration::from_secs(30))?;
        println!(
            "    wormhole mailbox server on 127.0.0.1:{mailbox_port}, transit relay on 127.0.0.1:{relay_port}"
        );
        Ok(WormholeServers {
            mailbox_port,
            relay_port,
            _mailbox: mailbox,
            _relay: relay,
        })
    }
}

/// Runs a wormhole sender and receiver to the end and times them.
fn wormhole_pair(
    mut send: Command,
    mut recv: Command,
    file: &Payload,
    dl: &Path,
    received: &Path,
    log: &Path,
) -> anyhow::Result<Run> {
    send.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let out = std::fs::File::create(log)?;
    recv.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let start = Instant::now();
    let sender = send.spawn().context("start the wormhole sender")?;
    let receiver = recv.spawn().context("start the wormhole receiver")?;
    let first = FirstByte::watch(dl, [sender.id(), receiver.id()]);
    let sender = watch_cpu(sender);
    let receiver = watch_cpu(receiver);
    let (receiver_cpu, receiver_status, done) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    let (sender_cpu, sender_status, _) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    let first = first.stop();
    if !receiver_status.is_some_and(|s| s.success()) || !sender_status.is_some_and(|s| s.success())
    {
        bail!("exited with {receiver_status:?} (receive) and {sender_status:?} (send)");
    }
    if sha256_file(received)? != file.sha256 {
        bail!("the received file differs from the source");
    }
    let (first_at, cpu_at_first) = first.context("no received byte was seen on disk")?;
    let per_gb = |end: Option<f64>, begin: Option<f64>| {
        end.zip(begin)
            .map(|(e, b)| (e - b) * 1e9 / file.size as f64)
    };
    // Progress bars redraw with carriage returns: split on those too.
    let said = std::fs::read_to_string(log).unwrap_or_default();
    let route = said
        .split(['\n', '\r'])
        .find(|l| l.contains("Receiving (") || l.contains("Connecting"))
        .map(|l| l.trim().to_string());
    let _ = std::fs::remove_file(log);
    Ok(Run {
        rate: file.size as f64 / (done - first_at).as_secs_f64(),
        whole_rate: file.size as f64 / (done - start).as_secs_f64(),
        sender_cpu_per_gb: per_gb(sender_cpu, cpu_at_first[0]),
        receiver_cpu_per_gb: per_gb(receiver_cpu, cpu_at_first[1]),
        busy_rtt: Vec::new(),
        route,
    })
}

/// Watches a download directory from its own thread until the first received
/// byte is on disk, then notes the time and both processes' CPU seconds.
struct FirstByte {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<(Instant, [Option<f64>; 2])>>,
}

impl FirstByte {
    fn watch(dir: &Path, pids: [u32; 2]) -> FirstByte {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            // Bounded by the stop flag, and by ten minutes whatever happens.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let bytes: u64 = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.filter_map(|e| e.ok()?.metadata().ok())
                            .map(|m| m.len())
                            .sum()
                    })
                    .unwrap_or(0);
                if bytes > 0 {
                    return Some((Instant::now(), pids.map(proc_cpu)));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            None
        });
        FirstByte { stop, thread }
    }

    fn stop(self) -> Option<(Instant, [Option<f64>; 2])> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// One `--json` event, stamped when it was read.
struct Seen {
    who: usize,
    at: Instant,
    event: Value,
}

/// Starts a client and a thread that forwards its events, tagged `who`.
fn start_client(
    netns: &Netns,
    client: &Path,
    args: &[String],
    who: usize,
    events: mpsc::Sender<Seen>,
) -> anyhow::Result<(Proc, ChildStdin)> {
    let mut child = netns
        .command(client)
        .args(args)
        .env_remove("P2PCHAT_KEYLOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start client")?;
    let stdin = child.stdin.take().context("piped stdin")?;
    let stdout = child.stdout.take().context("piped stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let at = Instant::now();
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if events.send(Seen { who, at, event }).is_err() {
                break;
            }
        }
    });
    Ok((Proc(child), stdin))
}

fn say(stdin: &mut ChildStdin, line: &str) -> anyhow::Result<Instant> {
    let at = Instant::now();
    stdin.write_all(format!("{line}\n").as_bytes())?;
    stdin.flush()?;
    Ok(at)
}

/// Waits for an event named `kind` from `who`, skipping others.
fn wait_for(
    events: &mpsc::Receiver<Seen>,
    who: usize,
    kind: &str,
    timeout: Duration,
) -> anyhow::Result<Seen> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = events
            .recv_timeout(left)
            .with_context(|| format!("no `{kind}` event from client {who} within {timeout:?}"))?;
        if seen.who == who && seen.event["event"] == kind {
            return Ok(seen);
        }
        if seen.event["event"] == "disconnected" {
            bail!("client {} disconnected: {}", seen.who, seen.event);
        }
    }
}

/// Idle chat lines per round (typed → ack, one at a time).
const IDLE_LINES: usize = 50;
/// A chat line is typed this often on the sending side during our transfer.
const BUSY_EVERY: Duration = Duration::from_millis(20);

/// Our two clients through a mediator: one `/send`s the file, the other runs
/// with `--yes`; chat lines typed during the transfer give the busy RTT.
fn ours(
    arena: &Arena,
    client: &Path,
    work: &TempDir,
    file: &Payload,
    dl: &Path,
    idle: &mut Vec<Duration>,
) -> anyhow::Result<Run> {
    let room = format!("bench-{}", rand::random::<u32>());
    let args = |name: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--server",
            &arena.mediator,
            "--room",
            &room,
            "--name",
            name,
            "--listen",
            "127.0.0.1:0",
            "--dh-group",
            "14",
            "--json",
            "--no-history",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push("--peers-file".into());
        a.push(
            work.path()
                .join(format!("peers-{name}.txt"))
                .display()
                .to_string(),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (tx, events) = mpsc::channel();
    const SENDER: usize = 0;
    const RECEIVER: usize = 1;
    let dl_arg = dl.display().to_string();
    let (alice, mut alice_in) = start_client(
        &arena.netns,
        client,
        &args("alice", &["--downloads", &dl_arg]),
        SENDER,
        tx.clone(),
    )?;
    wait_for(&events, SENDER, "waiting", Duration::from_secs(30))?;
    let (bob, mut bob_in) = start_client(
        &arena.netns,
        client,
        &args("bob", &["--downloads", &dl_arg, "--yes"]),
        RECEIVER,
        tx,
    )?;
    wait_for(&events, SENDER, "connected", Duration::from_secs(30))?;

    for i in 0..IDLE_LINES {
        let at = say(&mut alice_in, &format!("idle {i}"))?;
        let sent = wait_for(&events, SENDER, "sent", Duration::from_secs(10))?;
        let id = sent.event["id"].clone();
        loop {
            let ack = wait_for(&events, SENDER, "ack", Duration::from_secs(10))?;
            if ack.event["id"] == id {
                idle.push(ack.at - at);
                break;
            }
        }
    }

    let pids = [alice.0.id(), bob.0.id()];
    let first = FirstByte::watch(dl, pids);
    let start = say(&mut alice_in, &format!("/send {}", file.path.display()))?;
    let deadline = start + Duration::from_secs(60) + Duration::from_secs(file.size / (20 * MIB));
    let mut typed: HashMap<String, Instant> = HashMap::new();
    let mut ids: HashMap<u64, Instant> = HashMap::new();
    let mut busy = Vec::new();
    let mut next_line = start + BUSY_EVERY;
    let mut n = 0u64;
    let mut done: Option<(Seen, [Option<f64>; 2])> = None;
    // Bounded by the deadline.
    while done.is_none() {
        let now = Instant::now();
        if now > deadline {
            bail!("the transfer did not finish in time");
        }
        if now >= next_line {
            n += 1;
            let text = format!("busy {n}");
            typed.insert(text.clone(), say(&mut alice_in, &text)?);
            next_line += BUSY_EVERY;
        }
        let Ok(seen) = events.recv_timeout(Duration::from_millis(2)) else {
            continue;
        };
        let e = &seen.event;
        match (seen.who, e["event"].as_str().unwrap_or("")) {
            (_, "error") | (_, "file_stopped") | (_, "disconnected") => {
                bail!("client {} reported {e}", seen.who)
            }
            (SENDER, "sent") => {
                if let (Some(text), Some(id)) = (e["text"].as_str(), e["id"].as_u64()) {
                    if let Some(at) = typed.remove(text) {
                        ids.insert(id, at);
                    }
                }
            }
            (SENDER, "ack") => {
                if let Some(at) = e["id"].as_u64().and_then(|id| ids.remove(&id)) {
                    busy.push(seen.at - at);
                }
            }
            (RECEIVER, "file_done") => {
                let cpu = pids.map(proc_cpu);
                done = Some((seen, cpu));
            }
            _ => {}
        }
    }
    let first = first.stop();
    let Some((received, cpu_at_done)) = done else {
        bail!("no file_done");
    };
    let path = received.event["path"]
        .as_str()
        .map(PathBuf::from)
        .context("file_done names no path")?;
    if sha256_file(&path)? != file.sha256 {
        bail!("the received file differs from the source");
    }
    let (first_at, cpu_at_first) = first.context("no received byte was seen on disk")?;
    let per_gb = |i: usize| {
        cpu_at_done[i]
            .zip(cpu_at_first[i])
            .map(|(e, b)| (e - b) * 1e9 / file.size as f64)
    };
    let _ = say(&mut alice_in, "/quit");
    let _ = say(&mut bob_in, "/quit");
    std::thread::sleep(Duration::from_millis(200));
    busy.sort();
    Ok(Run {
        rate: file.size as f64 / (received.at - first_at).as_secs_f64(),
        whole_rate: file.size as f64 / (received.at - start).as_secs_f64(),
        sender_cpu_per_gb: per_gb(SENDER),
        receiver_cpu_per_gb: per_gb(RECEIVER),
        busy_rtt: busy,
        route: None,
    })
}

/// CPU seconds (user + system) a process has used so far (Linux `/proc`).
fn proc_cpu(pid: u32) -> Option<f64> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// What [`watch_cpu`] found: the last CPU figure, the exit status and when the
/// exit was seen.
type Watched = (Option<f64>, Option<std::process::ExitStatus>, Instant);

/// Follows a child's CPU time until it exits (by polling `/proc` every
/// millisecond, so up to a millisecond of its last CPU use is missed).
fn watch_cpu(mut child: Child) -> std::thread::JoinHandle<Watched> {
    std::thread::spawn(move || {
        let pid = child.id();
        let mut last = None;
        loop {
            if let Some(c) = proc_cpu(pid) {
                last = Some(c);
            }
            match child.try_wait() {
                Ok(Some(status)) => return (last, Some(status), Instant::now()),
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return (last, None, Instant::now()),
            }
        }
    })
}

/// Waits until `server` listens on TCP `port`, as its own namespace's
/// `/proc/<pid>/net/tcp` shows (state 0A is LISTEN).
fn wait_listening(server: &Proc, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let needle = format!(":{port:04X} 00000000:0000 0A");
    loop {
        let table =
            std::fs::read_to_string(format!("/proc/{}/net/tcp", server.0.id())).unwrap_or_default();
        if table.contains(&needle) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port to give a server in the namespace (free here, and the namespace has
/// nothing else listening).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn percentiles(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    )
}

// ---------------------------------------------------------------------------
// Helpers

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!(
            "p2pchat-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// A file of `len` bytes of random-looking data (a random MiB, varied per MiB).
fn make_file(path: &Path, len: u64) -> anyhow::Result<()> {
    let mut block = random_bytes(MIB as usize);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut left = len;
    let mut i = 0u64;
    while left > 0 {
        block[..8].copy_from_slice(&i.to_le_bytes());
        let n = left.min(MIB) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
        i += 1;
    }
    // Written out now, so the kernel's writeback does not steal CPU from the
    // measurements that follow.
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Samples every thread's CPU time (Linux `/proc/self/task`) while a phase runs,
/// so threads that end early are still counted.
struct ThreadSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<HashMap<u64, (String, f64, f64)>>,
}

impl ThreadSampler {
    fn start() -> ThreadSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // tid → (name, CPU seconds at first sight, CPU seconds at last sight)
            let mut seen: HashMap<u64, (String, f64, f64)> = HashMap::new();
            loop {
                for (tid, name, cpu) in thread_cpu() {
                    seen.entry(tid)
                        .and_modify(|e| {
                            // A new thread shows its parent's name until it sets its own.
                            e.0.clone_from(&name);
                            e.2 = cpu;
                        })
                        .or_insert((name, cpu, cpu));
                }
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        ThreadSampler { stop, thread }
    }

    /// CPU seconds per thread name during the phase, busiest first.
    fn stop(self) -> Vec<(String, f64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = self.thread.join().unwrap_or_default();
        let mut by_name: HashMap<String, f64> = HashMap::new();
        for (name, first, last) in seen.into_values() {
            *by_name.entry(name).or_default() += last - first;
        }
        let mut out: Vec<(String, f64)> = by_name.into_iter().filter(|(_, s)| *s > 0.0).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }
}

/// (tid, name, CPU seconds) of every thread of this process.
fn thread_cpu() -> Vec<(u64, String, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let name = stat[stat.find('(')? + 1..stat.rfind(')')?].to_string();
        Some((tid, name, stat_cpu(&stat)?))
    })
    .collect()
}

/// utime + stime from a `/proc/.../stat` line, in seconds.
fn stat_cpu(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux we run on.
    Some(ticks / 100.0)
}

/// User + system CPU time of this process so far (Linux `/proc`), in seconds.
fn cpu_seconds() -> Option<f64> {
    stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn sha256_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}
