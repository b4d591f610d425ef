//! File transfer benchmark (issue 6): how close a transfer gets to the one-core
//! encrypt-then-MAC limit, and where every microsecond of a 64 KiB chunk goes.
//!
//! 1. `openssl speed` for aes-256-cbc and sha256 on one core (`taskset -c 0`),
//!    giving the limit `1 / (1/aes + 1/sha)`.
//! 2. In process: each pipeline stage on 64 KiB chunks (read + hash thread, bincode
//!    encode, seal, loopback TCP, open, decode, write + hash thread), then the whole
//!    pipeline over loopback TCP with the real threads.
//! 3. End to end: a real `mediator` and two real `client --json` processes; one
//!    `/send`s the file, the other runs with `--yes`; transfer rate, CPU seconds
//!    per GB of each client process, and chat RTT (line typed → `ack`) p50/p99 idle
//!    and during the transfer.
//! 4. magic-wormhole on the same file over loopback (its own mailbox server and
//!    transit relay on 127.0.0.1), for comparison. Needs a virtualenv, made once:
//!
//!    ```text
//!    python3 -m venv target/wormhole-venv
//!    target/wormhole-venv/bin/pip install magic-wormhole \
//!        magic-wormhole-mailbox-server magic-wormhole-transit-relay
//!    ```
//!
//!    (or point P2PCHAT_BENCH_WORMHOLE_VENV at another one). Without it the row is
//!    skipped with a note.
//!
//! `cargo bench -p client --bench transfer`. Environment: P2PCHAT_BENCH_MIB (file
//! size, default 1024), P2PCHAT_BENCH_E2E=0 to skip parts 3 and 4,
//! P2PCHAT_BENCH_OPENSSL=0 to skip part 1, P2PCHAT_BENCH_STAGES=0 to skip the
//! per-stage table, P2PCHAT_BENCH_RUNS (in-process pipeline runs, default 3).
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
use client::files::{ChunkSource, IncomingFile, Outgoing, OutgoingFile, PartScope};
use dhke::schedule::Key;
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
        .unwrap_or(if bench { 1024 } else { 8 });
    Settings {
        bench,
        file_bytes: mib.max(1) * MIB,
        openssl: env_on("P2PCHAT_BENCH_OPENSSL", bench),
        e2e: env_on("P2PCHAT_BENCH_E2E", bench),
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

    let mut ours = None;
    let mut theirs = None;
    if s.e2e {
        match end_to_end(&work, &source, s.file_bytes, source_sha, limit.as_ref()) {
            Ok(r) => ours = r,
            Err(e) => println!("\n[3] end to end failed: {e:#}"),
        }
        match wormhole(&work, &source, s.file_bytes, source_sha) {
            Ok(r) => theirs = r,
            Err(e) => println!("\n[4] magic-wormhole failed: {e:#}"),
        }
    } else {
        println!("\n[3] end to end skipped (P2PCHAT_BENCH_E2E=1 to run it)");
    }
    summary(s.file_bytes, limit.as_ref(), ours.as_ref(), theirs.as_ref());
    Ok(())
}

/// What one end-to-end transfer cost: wall time and CPU seconds per GB (10^9
/// bytes) of the sending and the receiving process.
#[derive(Debug, Clone)]
struct Run {
    rate: f64,
    sender_cpu_per_gb: Option<f64>,
    receiver_cpu_per_gb: Option<f64>,
    busy_rtt: Option<(Duration, Duration)>,
}

/// The figures of this run side by side.
fn summary(size: u64, limit: Option<&Limit>, ours: Option<&Run>, theirs: Option<&Run>) {
    println!("\n[summary] {} MiB file on loopback", size / MIB);
    let cpu = |v: Option<f64>| v.map_or("?".to_string(), |c| format!("{c:.2}"));
    let row = |name: &str, r: &Run| {
        println!(
            "    {:<28} {:>8.1} MB/s   CPU s/GB: sender {:>5}, receiver {:>5}{}",
            name,
            r.rate / 1e6,
            cpu(r.sender_cpu_per_gb),
            cpu(r.receiver_cpu_per_gb),
            r.busy_rtt.map_or(String::new(), |(p50, p99)| format!(
                "   chat RTT p50 {:.2} ms, p99 {:.2} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            ))
        );
    };
    match ours {
        Some(r) => row("p2pchat (two clients)", r),
        None => println!("    p2pchat (two clients)        not measured"),
    }
    match theirs {
        Some(r) => row("magic-wormhole", r),
        None => println!("    magic-wormhole               not measured"),
    }
    if let (Some(o), Some(t)) = (ours, theirs) {
        println!(
            "    p2pchat / magic-wormhole     {:>8.2}×  (target ≥ 1.5×)",
            o.rate / t.rate
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
        .unwrap_or(3)
        .max(1);
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
// Part 3: end to end with real binaries

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    args: &[String],
    who: usize,
    events: mpsc::Sender<Seen>,
) -> anyhow::Result<(Proc, ChildStdin)> {
    let mut child = Command::new(common::client_bin())
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

/// Waits for an event named `kind` from `who`, skipping (and returning through
/// `skipped`) others.
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

fn end_to_end(
    work: &TempDir,
    source: &Path,
    size: u64,
    source_sha: [u8; 32],
    limit: Option<&Limit>,
) -> anyhow::Result<Option<Run>> {
    println!("\n[3] end to end: mediator + two `client --json` on loopback");
    let mut mediator = Command::new(common::mediator_bin())
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start mediator")?;
    let med_out = mediator.stdout.take().context("mediator stdout")?;
    let _mediator = Proc(mediator);
    let mut med_lines = BufReader::new(med_out).lines();
    let first = med_lines.next().context("mediator printed nothing")??;
    let server = first
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected mediator line {first:?}"))?
        .to_string();
    std::thread::spawn(move || for _ in med_lines.by_ref() {});

    let dl = work.path().join("downloads");
    std::fs::create_dir_all(&dl)?;
    let room = format!("bench-{}", rand::random::<u32>());
    let args = |name: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--server",
            &server,
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
        &args("alice", &["--downloads", &dl_arg]),
        SENDER,
        tx.clone(),
    )?;
    wait_for(&events, SENDER, "waiting", Duration::from_secs(30))?;
    let (bob, mut bob_in) = start_client(
        &args("bob", &["--downloads", &dl_arg, "--yes"]),
        RECEIVER,
        tx,
    )?;
    wait_for(&events, SENDER, "connected", Duration::from_secs(30))?;

    // Idle chat RTT: one line at a time, typed → ack.
    let mut idle = Vec::new();
    for i in 0..200 {
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
    println!(
        "    chat RTT idle ({} lines):            {}",
        idle.len(),
        percentiles(&mut idle)
    );

    // The transfer, with a chat line every 20 ms from the sending side.
    let cpu_before = [proc_cpu(alice.0.id()), proc_cpu(bob.0.id())];
    let start = say(&mut alice_in, &format!("/send {}", source.display()))?;
    let mut cpu_at_done = [None, None];
    let deadline = start + Duration::from_secs(60) + Duration::from_secs(size / (20 * MIB));
    let mut typed: HashMap<String, Instant> = HashMap::new();
    let mut ids: HashMap<u64, Instant> = HashMap::new();
    let mut busy = Vec::new();
    let mut next_line = start + Duration::from_millis(200);
    let mut n = 0u64;
    let mut first_progress: Option<Instant> = None;
    let mut last_report = (0u64, 0u64);
    let mut done: [Option<Seen>; 2] = [None, None];
    // Until the receiver has verified the file, then a moment for the sender's
    // own `file_done`.
    let mut grace: Option<Instant> = None;
    while done.iter().any(Option::is_none) {
        let now = Instant::now();
        if done[RECEIVER].is_some() {
            let until = *grace.get_or_insert(now + Duration::from_secs(5));
            if now > until {
                break;
            }
        }
        if now > deadline {
            bail!("the transfer did not finish in time (last progress {last_report:?})");
        }
        if now >= next_line && done[RECEIVER].is_none() {
            n += 1;
            let text = format!("busy {n}");
            typed.insert(text.clone(), say(&mut alice_in, &text)?);
            next_line += Duration::from_millis(20);
        }
        let Ok(seen) = events.recv_timeout(Duration::from_millis(5)) else {
            continue;
        };
        let e = &seen.event;
        match (seen.who, e["event"].as_str().unwrap_or("")) {
            (SENDER, "error") if e["code"] == "unknown_command" => {
                println!(
                    "    the client does not support /send yet (unknown_command): end-to-end transfer skipped"
                );
                let _ = say(&mut alice_in, "/quit");
                let _ = say(&mut bob_in, "/quit");
                return Ok(None);
            }
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
            (RECEIVER, "progress") => {
                first_progress.get_or_insert(seen.at);
                last_report = (
                    e["bytes"].as_u64().unwrap_or(0),
                    e["rate_bps"].as_u64().unwrap_or(0),
                );
            }
            (who, "file_done") => {
                // Both processes at the moment the receiver has verified the file.
                if who == RECEIVER {
                    cpu_at_done = [proc_cpu(alice.0.id()), proc_cpu(bob.0.id())];
                }
                done[who] = Some(seen);
            }
            _ => {}
        }
    }
    let received_at = done[RECEIVER].as_ref().map_or(start, |s| s.at);
    let received = &done[RECEIVER].as_ref().context("receiver done")?.event;
    let elapsed = received_at - start;
    let rate = size as f64 / elapsed.as_secs_f64();
    let from_first = first_progress.map(|t| size as f64 / (received_at - t).as_secs_f64());
    let path = received["path"].as_str().map(PathBuf::from);
    let identical = match &path {
        Some(p) => sha256_file(p)? == source_sha,
        None => false,
    };
    println!(
        "    transfer: {} MiB in {:.2} s (from /send to file_done) = {:.1} MB/s{}",
        size / MIB,
        elapsed.as_secs_f64(),
        rate / 1e6,
        from_first.map_or(String::new(), |r| format!(
            "; {:.1} MB/s from the first progress event",
            r / 1e6
        ))
    );
    if let Some(l) = limit {
        println!(
            "    ratio to the one-core encrypt-then-MAC limit ({:.1} MB/s): {:.0}% (target ≥ 70%, aim 85%)",
            l.etm / 1e6,
            100.0 * rate / l.etm
        );
    }
    println!(
        "    received file: {} ({})",
        path.as_ref()
            .map_or("?".into(), |p| p.display().to_string()),
        if identical {
            "SHA-256 matches the source"
        } else {
            "DIFFERS from the source"
        }
    );
    println!(
        "    chat RTT during the transfer ({} lines): {} (target p99 ≤ 20 ms)",
        busy.len(),
        percentiles(&mut busy)
    );
    let per_gb = |i: usize| {
        cpu_at_done[i]
            .zip(cpu_before[i])
            .map(|(b, a)| (b - a) * 1e9 / size as f64)
    };
    let run = Run {
        rate,
        sender_cpu_per_gb: per_gb(SENDER),
        receiver_cpu_per_gb: per_gb(RECEIVER),
        busy_rtt: quantiles(&busy),
    };
    println!(
        "    CPU per GB: sender process {} s, receiver process {} s",
        run.sender_cpu_per_gb
            .map_or("?".into(), |c| format!("{c:.2}")),
        run.receiver_cpu_per_gb
            .map_or("?".into(), |c| format!("{c:.2}"))
    );
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
    let _ = say(&mut alice_in, "/quit");
    let _ = say(&mut bob_in, "/quit");
    std::thread::sleep(Duration::from_millis(200));
    Ok(Some(run))
}

/// p50 and p99 of samples already sorted.
fn quantiles(sorted: &[Duration]) -> Option<(Duration, Duration)> {
    if sorted.is_empty() {
        return None;
    }
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Some((at(0.5), at(0.99)))
}

/// CPU seconds (user + system) a process has used so far (Linux `/proc`).
fn proc_cpu(pid: u32) -> Option<f64> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Follows a child's CPU time until it exits (by polling `/proc`, so up to one
/// poll interval of its last CPU use is missed) and returns the last figure and
/// the exit status.
fn watch_cpu(
    mut child: Child,
) -> std::thread::JoinHandle<(Option<f64>, Option<std::process::ExitStatus>)> {
    std::thread::spawn(move || {
        let pid = child.id();
        let mut last = None;
        loop {
            if let Some(c) = proc_cpu(pid) {
                last = Some(c);
            }
            match child.try_wait() {
                Ok(Some(status)) => return (last, Some(status)),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return (last, None),
            }
        }
    })
}

// ---------------------------------------------------------------------------
// Part 4: magic-wormhole on the same file

/// The virtualenv with `wormhole`, `twist` and the two servers, if there is one.
fn wormhole_venv() -> Option<PathBuf> {
    let venv = match std::env::var_os("P2PCHAT_BENCH_WORMHOLE_VENV") {
        Some(v) => PathBuf::from(v),
        None => common::client_bin()
            .parent()?
            .parent()?
            .join("wormhole-venv"),
    };
    venv.join("bin").join("wormhole").exists().then_some(venv)
}

/// Waits until something listens on `port` of 127.0.0.1.
fn wait_listening(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wormhole(
    work: &TempDir,
    source: &Path,
    size: u64,
    source_sha: [u8; 32],
) -> anyhow::Result<Option<Run>> {
    let Some(venv) = wormhole_venv() else {
        println!(
            "\n[4] magic-wormhole skipped: no virtualenv at target/wormhole-venv \
             (python3 -m venv target/wormhole-venv && target/wormhole-venv/bin/pip install \
             magic-wormhole magic-wormhole-mailbox-server magic-wormhole-transit-relay; \
             or set P2PCHAT_BENCH_WORMHOLE_VENV)"
        );
        return Ok(None);
    };
    println!(
        "\n[4] magic-wormhole {}: own mailbox server and transit relay on loopback",
        venv.display()
    );
    let bin = venv.join("bin");
    let (mailbox_port, relay_port) = (free_port()?, free_port()?);
    let state = work.path().join("wormhole-state");
    std::fs::create_dir_all(&state)?;
    let server = |args: &[String]| -> anyhow::Result<Proc> {
        Ok(Proc(
            Command::new(bin.join("twist"))
                .args(args)
                .current_dir(&state)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start twist")?,
        ))
    };
    let _mailbox = server(&[
        "wormhole-mailbox".into(),
        format!("--port=tcp:{mailbox_port}:interface=127.0.0.1"),
    ])?;
    let _relay = server(&[
        "transitrelay".into(),
        format!("--port=tcp:{relay_port}:interface=127.0.0.1"),
    ])?;
    wait_listening(mailbox_port, Duration::from_secs(30))?;
    wait_listening(relay_port, Duration::from_secs(30))?;
    let common = [
        format!("--relay-url=ws://127.0.0.1:{mailbox_port}/v1"),
        format!("--transit-helper=tcp:127.0.0.1:{relay_port}"),
    ];
    let code = format!("{}-bench-transfer", rand::random::<u16>() % 1000 + 1);
    let out_dir = work.path().join("wormhole-dl");
    std::fs::create_dir_all(&out_dir)?;
    let received = out_dir.join(source.file_name().context("source has a name")?);
    let quiet = |c: &mut Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let start = Instant::now();
    let mut send = Command::new(bin.join("wormhole"));
    send.args(&common)
        .args(["send", "--hide-progress", "--code", &code])
        .arg(source);
    quiet(&mut send);
    let sender = watch_cpu(send.spawn().context("start wormhole send")?);
    let mut recv = Command::new(bin.join("wormhole"));
    recv.args(&common)
        .args(["receive", "--hide-progress", "--accept-file", "-o"])
        .arg(&received)
        .arg(&code);
    quiet(&mut recv);
    let receiver = watch_cpu(recv.spawn().context("start wormhole receive")?);
    let (receiver_cpu, receiver_status) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    let elapsed = start.elapsed();
    let (sender_cpu, sender_status) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    if !receiver_status.is_some_and(|s| s.success()) || !sender_status.is_some_and(|s| s.success())
    {
        bail!("wormhole exited with {receiver_status:?} (receive) and {sender_status:?} (send)");
    }
    let identical = sha256_file(&received)? == source_sha;
    let rate = size as f64 / elapsed.as_secs_f64();
    let per_gb = |c: Option<f64>| c.map(|c| c * 1e9 / size as f64);
    println!(
        "    transfer: {} MiB in {:.2} s (from starting both ends to the receiver's exit) = {:.1} MB/s, {}",
        size / MIB,
        elapsed.as_secs_f64(),
        rate / 1e6,
        if identical { "byte-identical" } else { "FILES DIFFER" }
    );
    let run = Run {
        rate,
        sender_cpu_per_gb: per_gb(sender_cpu),
        receiver_cpu_per_gb: per_gb(receiver_cpu),
        busy_rtt: None,
    };
    println!(
        "    CPU per GB (whole processes, start-up included): sender {} s, receiver {} s",
        run.sender_cpu_per_gb
            .map_or("?".into(), |c| format!("{c:.2}")),
        run.receiver_cpu_per_gb
            .map_or("?".into(), |c| format!("{c:.2}"))
    );
    let _ = std::fs::remove_file(&received);
    Ok(Some(run))
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
