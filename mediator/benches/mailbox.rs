//! Mailbox bench (docs/protocol.md §22.3): how many items a second the real
//! `mediator` binary stores (`MailboxAdd`, each committed before its answer)
//! and hands out (`MailboxFetch` then `MailboxRemove`, until the queues are
//! empty), on its embedded store (an SQLite file, WAL, synchronous=NORMAL) and
//! on a real `redis-server` (no persistence: what Redis's own fsync costs is
//! Redis's, deploy/README.md). C connections at once, one request in flight
//! on each; the requests are signed before the clock starts.
//!
//! `cargo bench -p mediator --bench mailbox [-- --items N --connections C
//! --queues Q --size BYTES]` (or MAILBOX_BENCH_ITEMS, _CONNECTIONS, _QUEUES,
//! _SIZE; --size is the sealed item's length). Built without `--bench` (e.g.
//! `cargo test --benches`) it runs a tiny smoke pass.

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code)] // the tests use more of it
mod redis_server;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use dhke::Identity;
use rand::rngs::OsRng;
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::mailbox::{self as mb, Queue};
use wire::{ClientMsg, Link, MediatorMsg};

/// Every network wait is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests sent on one connection before a fresh one (the mediator's cap is 256).
const PER_CONNECTION: usize = 250;

#[derive(Debug, Clone)]
struct Settings {
    items: usize,
    connections: usize,
    queues: usize,
    size: usize,
}

fn settings() -> anyhow::Result<Settings> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = if args.iter().any(|a| a == "--bench") {
        Settings {
            items: 20_000,
            connections: 16,
            queues: 64,
            size: 304,
        }
    } else {
        Settings {
            items: 200,
            connections: 4,
            queues: 4,
            size: 304,
        }
    };
    let pick = |flag: &str, env: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| std::env::var(env).ok())
    };
    let number = |flag: &str, env: &str, into: &mut usize| -> anyhow::Result<()> {
        if let Some(v) = pick(flag, env) {
            *into = v.parse().with_context(|| format!("{flag} N"))?;
            if *into == 0 {
                bail!("{flag} needs a number above 0");
            }
        }
        Ok(())
    };
    number("--items", "MAILBOX_BENCH_ITEMS", &mut s.items)?;
    number(
        "--connections",
        "MAILBOX_BENCH_CONNECTIONS",
        &mut s.connections,
    )?;
    number("--queues", "MAILBOX_BENCH_QUEUES", &mut s.queues)?;
    number("--size", "MAILBOX_BENCH_SIZE", &mut s.size)?;
    if s.size < 64 || s.size > mb::MAX_ITEM || (s.size - 48) % 16 != 0 {
        bail!(
            "--size must be 48 plus a multiple of 16, from 64 to {}",
            mb::MAX_ITEM
        );
    }
    Ok(s)
}

/// The mediator binary, killed on drop.
struct Mediator {
    child: Child,
    addr: SocketAddr,
}

impl Mediator {
    fn start(extra: &[&str]) -> anyhow::Result<Mediator> {
        let bin = env!("CARGO_BIN_EXE_mediator");
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--relay", "off"])
            // The store's rate is the point, not the per-address caps.
            .args(["--per-ip-connections", "100000"])
            .args(["--per-ip-hellos-per-min", "1000000000"])
            .args(["--mailbox-source-bytes", "1024G"])
            .args(["--mailbox-max-bytes", "1024G"])
            .args(["--mailbox-queue-items", "1000000"])
            .args(["--mailbox-queue-bytes", "1024G"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {bin}"))?;
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
}

impl Drop for Mediator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) process `pid` has used (Linux /proc).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// One connection to the mediator, one request in flight.
struct Conn {
    stream: TcpStream,
    sent: usize,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, sent: 0 })
    }

    async fn ask(&mut self, addr: SocketAddr, frame: &[u8]) -> anyhow::Result<MediatorMsg> {
        if self.sent == PER_CONNECTION {
            *self = Conn::open(addr).await?;
        }
        self.sent += 1;
        self.stream.write_all(frame).await?;
        let mut header = [0u8; 4];
        tokio::time::timeout(IO_TIMEOUT, self.stream.read_exact(&mut header))
            .await
            .context("no answer in time")??;
        let len = Link::Mediator.parse_header(header)?;
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await?;
        Ok(wire::decode(&payload)?)
    }
}

fn frame(msg: &ClientMsg) -> anyhow::Result<Vec<u8>> {
    let payload = wire::encode(msg)?;
    let mut out = Link::Mediator.header(payload.len())?.to_vec();
    out.extend_from_slice(&payload);
    Ok(out)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A recipient: its queue and read key.
struct Recipient {
    queue: Queue,
    read: Identity,
}

fn recipients(n: usize) -> Vec<Recipient> {
    (0..n)
        .map(|i| {
            let identity = Identity::from_seed(&[(i % 251) as u8 + 1; 32]);
            let conversation: [u8; 32] = std::array::from_fn(|j| (i >> (8 * (j % 4))) as u8);
            let queue = Queue::of(&conversation, &identity.public());
            let read = mb::read_key(&identity, &queue.id());
            Recipient { queue, read }
        })
        .collect()
}

fn open_frame(r: &Recipient, at: u64) -> anyhow::Result<Vec<u8>> {
    let (queue, add, read) = (
        r.queue.id(),
        r.queue.add_key().public().0,
        r.read.public().0,
    );
    frame(&ClientMsg::MailboxOpen {
        queue,
        add_key: add,
        read_key: read,
        at,
        sig: mb::sign(&r.read, &mb::open_signed(&queue, &add, &read, at)),
    })
}

/// `items` signed `MailboxAdd` frames, spread over the recipients, dealt to
/// `connections` workers.
fn add_frames(s: &Settings, rs: &[Recipient], at: u64) -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
    let mut work = vec![Vec::new(); s.connections];
    for i in 0..s.items {
        let r = &rs[i % rs.len()];
        // Sealing is deterministic (§22.2): each item gets its own bytes.
        let mut plain = vec![0u8; s.size - 49];
        OsRng.fill_bytes(&mut plain);
        let item = r.queue.seal(&plain)?;
        let key = r.queue.add_key();
        let queue = r.queue.id();
        let sig = mb::sign(&key, &mb::add_signed(&queue, at, &item));
        work[i % s.connections].push(frame(&ClientMsg::MailboxAdd {
            queue,
            add_key: key.public().0,
            at,
            item,
            sig,
        })?);
    }
    Ok(work)
}

/// Stores every frame of `work`, `work.len()` connections at once.
async fn store(addr: SocketAddr, work: Vec<Vec<Vec<u8>>>) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for frames in work {
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            for f in frames {
                match conn.ask(addr, &f).await? {
                    MediatorMsg::MailboxStored { .. } => {}
                    other => bail!("an add was answered {other:?}"),
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Fetches and removes every recipient's items, `connections` recipients at
/// once; returns how many items came.
async fn drain(
    addr: SocketAddr,
    rs: Arc<Vec<Recipient>>,
    connections: usize,
) -> anyhow::Result<usize> {
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let rs = rs.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut got = 0;
            for r in rs.iter().skip(worker).step_by(connections) {
                let queue = r.queue.id();
                loop {
                    let at = now();
                    let fetch = frame(&ClientMsg::MailboxFetch {
                        queue,
                        at,
                        sig: mb::sign(&r.read, &mb::fetch_signed(&queue, at)),
                    })?;
                    let MediatorMsg::MailboxItems { items, more } = conn.ask(addr, &fetch).await?
                    else {
                        bail!("a fetch was refused");
                    };
                    if items.is_empty() {
                        break;
                    }
                    got += items.len();
                    let ids: Vec<[u8; 16]> = items.iter().map(|i| i.id).collect();
                    let sig = mb::sign(&r.read, &mb::remove_signed(&queue, at, &ids));
                    let remove = frame(&ClientMsg::MailboxRemove {
                        queue,
                        at,
                        ids,
                        sig,
                    })?;
                    match conn.ask(addr, &remove).await? {
                        MediatorMsg::MailboxRemoved { removed }
                            if removed as usize == items.len() => {}
                        other => bail!("a removal was answered {other:?}"),
                    }
                    if !more {
                        break;
                    }
                }
            }
            anyhow::Ok(got)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

/// How a store's footprint is read: the SQLite files, or Redis's memory.
enum Footprint<'a> {
    Files(&'a Path),
    Redis(&'a redis_server::RedisServer),
}

impl Footprint<'_> {
    fn bytes(&self) -> u64 {
        match self {
            Footprint::Files(db) => ["", "-wal", "-shm"]
                .iter()
                .map(|suffix| file_size(Path::new(&format!("{}{suffix}", db.display()))))
                .sum(),
            Footprint::Redis(redis) => {
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query(&mut redis.connection())
                    .unwrap_or_default();
                info.lines()
                    .find_map(|l| l.strip_prefix("used_memory:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            }
        }
    }
}

/// Both phases on one mediator; `helper`: another process whose CPU counts
/// (redis-server).
async fn run(
    label: &str,
    m: &Mediator,
    helper: Option<u32>,
    footprint: Footprint<'_>,
    s: &Settings,
) -> anyhow::Result<()> {
    let rs = Arc::new(recipients(s.queues));
    let at = now();
    let mut conn = Conn::open(m.addr).await?;
    for r in rs.iter() {
        conn.ask(m.addr, &open_frame(r, at)?).await?;
    }
    let work = add_frames(s, &rs, at)?;
    let cpu = || cpu_secs(m.child.id()) + helper.map_or(0.0, cpu_secs);

    let before = footprint.bytes();
    let (cpu0, start) = (cpu(), Instant::now());
    store(m.addr, work).await?;
    let (took, used) = (start.elapsed(), cpu() - cpu0);
    let grown = footprint.bytes().saturating_sub(before);
    println!(
        "mailbox {label}: stored {} items of {} bytes in {:.2} s = {:.0} items/s \
         ({} connections, {} queues; server CPU {:.0} us/item; {} bytes/item in the store)",
        s.items,
        s.size,
        took.as_secs_f64(),
        s.items as f64 / took.as_secs_f64(),
        s.connections,
        s.queues,
        used * 1e6 / s.items as f64,
        grown / s.items as u64
    );

    let (cpu0, start) = (cpu(), Instant::now());
    let got = drain(m.addr, rs, s.connections.min(s.queues)).await?;
    let (took, used) = (start.elapsed(), cpu() - cpu0);
    if got != s.items {
        bail!("{label}: fetched {got} of {} items", s.items);
    }
    println!(
        "mailbox {label}: fetched and removed {got} items in {:.2} s = {:.0} items/s \
         ({} connections; server CPU {:.0} us/item)",
        took.as_secs_f64(),
        got as f64 / took.as_secs_f64(),
        s.connections.min(s.queues),
        used * 1e6 / got as f64
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let s = settings()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("mailbox-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("mailbox.sqlite3");
        let result = async {
            let m = Mediator::start(&["--mailbox-db", &db.display().to_string()])?;
            run("sqlite file", &m, None, Footprint::Files(&db), &s).await?;
            drop(m);
            let redis = redis_server::RedisServer::start();
            let m = Mediator::start(&["--redis", &redis.url()])?;
            run("redis", &m, redis.pid(), Footprint::Redis(&redis), &s).await
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    })
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}
