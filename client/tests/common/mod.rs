//! Shared helpers for the client's end-to-end tests: start the real `mediator`
//! and `client` binaries on loopback, read their `--json` events, and put
//! proxies or a lying mediator between them.
#![allow(dead_code)]

pub mod api;
pub mod browser;
pub mod chaos;
pub mod fake_mediator;
pub mod group;
pub mod lab;
pub mod lan_lab;
pub mod proxy;
pub mod raw_peer;
pub mod redis;
pub mod soak;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Generous bound for anything a test waits for on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// The `client` binary under test.
pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_client"))
}

/// The `mediator` binary: beside `client` when the workspace was built together,
/// else built on demand.
pub fn mediator_bin() -> PathBuf {
    let client = client_bin();
    let dir = client.parent().expect("binary has a directory");
    let path = dir.join(format!("mediator{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let target_dir = dir.parent().expect("profile dir has a parent");
        // A bench (target/release) needs the mediator of the same profile.
        let profile = if dir.ends_with("release") {
            "bench"
        } else {
            "dev"
        };
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "mediator",
                "--bin",
                "mediator",
                "--profile",
                profile,
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .status()
            .expect("run cargo build for the mediator");
        assert!(status.success(), "building the mediator failed");
    }
    assert!(
        path.exists(),
        "mediator binary missing at {}",
        path.display()
    );
    path
}

/// `program`, run in network namespace `netns` (through `ip netns exec`, which
/// execs it in place, so the child's pid is the program's) or in ours.
pub fn command_in(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A scratch directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "p2pchat-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `mediator` on 127.0.0.1, killed on drop.
pub struct Mediator {
    pub addr: SocketAddr,
    child: Child,
}

impl Mediator {
    pub async fn start(extra: &[&str]) -> Mediator {
        Mediator::start_at("127.0.0.1:0", extra).await
    }

    /// Starts a mediator on a given address (to restart one on the same port).
    pub async fn start_at(listen: &str, extra: &[&str]) -> Mediator {
        Mediator::start_in(None, listen, extra).await
    }

    /// Starts a mediator inside network namespace `netns` (a lab's public
    /// segment), or in ours with `None`.
    pub async fn start_in(netns: Option<&str>, listen: &str, extra: &[&str]) -> Mediator {
        Mediator::spawn(netns, listen, extra, Stdio::null(), "info").await
    }

    /// Starts a mediator on 127.0.0.1 logging at debug level into `log`.
    pub async fn start_logged(extra: &[&str], log: &Path) -> Mediator {
        let file = std::fs::File::create(log).expect("create the mediator log");
        Mediator::spawn(None, "127.0.0.1:0", extra, Stdio::from(file), "debug").await
    }

    async fn spawn(
        netns: Option<&str>,
        listen: &str,
        extra: &[&str],
        stderr: Stdio,
        log_level: &str,
    ) -> Mediator {
        let mut child = command_in(netns, &mediator_bin())
            .env("RUST_LOG", log_level)
            // Every loopback test member comes from 127.0.0.1: lift the group
            // members-per-address cap (default 4) as far as the room cap goes.
            // A flag in `extra` still wins over this.
            .env("MEDIATOR_MAX_MEMBERS_PER_IP", "1024")
            // No mailbox file shared by parallel tests or left in the source
            // tree; a test that restarts a mediator on its mailbox passes
            // --mailbox-db PATH in `extra`.
            .env("MEDIATOR_MAILBOX_DB", ":memory:")
            .args(["--listen", listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start mediator");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("mediator prints its address in time")
            .expect("read mediator stdout")
            .expect("mediator printed a line");
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .parse()
            .expect("address on the first line");
        // Keep draining stdout so the mediator never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Mediator { addr, child }
    }

    pub fn server_arg(&self) -> String {
        self.addr.to_string()
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A running `client --json`, with its events on a channel.
pub struct Client {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Each event with the moment its line was read.
    events: mpsc::UnboundedReceiver<(std::time::Instant, Value)>,
    /// When the event [`Client::expect`] last returned was printed (timing benches).
    pub last_at: Option<std::time::Instant>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    pub seen: Vec<Value>,
}

/// `a` and `b` meet once in `room`, so each is the other's contact; both end.
pub async fn become_contacts(med: &Mediator, dir: &TempDir, a: &str, b: &str, room: &str) {
    let a_args = client_args(&med.server_arg(), a, dir, &["--room", room]);
    let b_args = client_args(&med.server_arg(), b, dir, &["--room", room]);
    let (mut first, mut second) = connected_pair(&a_args, &b_args).await;
    // Closed, not quit: it leaves the list of conversations to reopen.
    first.say("/close").await;
    assert_eq!(first.exit_code().await, 0);
    second.close_input();
    let _ = second.exit_code().await;
}

/// Where a test client named `name` keeps its `peers.txt`.
pub fn peers_file(dir: &TempDir, name: &str) -> PathBuf {
    dir.join(&format!("peers-{name}.txt"))
}

/// What every test client gets, then `extra`: loopback only, group 14 (fast),
/// JSON, and its peers file and history in `dir` (never the real home).
pub fn client_args(server: &str, name: &str, dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--history".into(),
        dir.join(&format!("history-{name}.sqlite3"))
            .display()
            .to_string(),
        "--profile".into(),
        dir.join(&format!("profile-{name}")).display().to_string(),
        "--server".into(),
        server.into(),
        "--name".into(),
        name.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--peers-file".into(),
        peers_file(dir, name).display().to_string(),
        "--dh-group".into(),
        "14".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

impl Client {
    /// Starts a client with exactly `args` (plus `--json` if missing).
    pub fn start(name: &str, args: &[String]) -> Client {
        Client::start_env(name, args, &[])
    }

    pub fn start_env(name: &str, args: &[String], env: &[(&str, &str)]) -> Client {
        Client::start_in(None, name, args, env)
    }

    /// Starts a client inside network namespace `netns` (a lab host), or in ours
    /// with `None`.
    pub fn start_in(
        netns: Option<&str>,
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Client {
        let mut cmd = command_in(netns, &client_bin());
        // Only what the test passes: no keylog, no mediator from the environment.
        cmd.env_remove("P2PCHAT_KEYLOG")
            .env_remove("P2PCHAT_SERVER")
            .args(args);
        if !args.iter().any(|a| a == "--json") {
            cmd.arg("--json");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Client::spawn(name, cmd)
    }

    /// Starts a prepared command (e.g. `ip netns exec NS client …`) that runs
    /// the client with `--json`.
    pub fn spawn(name: &str, mut cmd: Command) -> Client {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start client");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("client printed non-JSON line {line:?}: {e}"));
                if tx.send((std::time::Instant::now(), value)).is_err() {
                    break;
                }
            }
        });
        let err_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = err_text.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Client {
            name: name.into(),
            stdin: child.stdin.take(),
            child,
            events,
            stderr: err_text,
            seen: Vec::new(),
            last_at: None,
        }
    }

    /// Waits for the next event named `kind`, skipping others (kept in `seen`).
    pub async fn expect(&mut self, kind: &str) -> Value {
        self.expect_within(kind, WAIT).await
    }

    /// [`Client::expect`] with its own bound.
    pub async fn expect_within(&mut self, kind: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.events.recv()).await;
            match next {
                Ok(Some((at, event))) => {
                    self.seen.push(event.clone());
                    if event["event"] == kind {
                        self.last_at = Some(at);
                        return event;
                    }
                }
                Ok(None) => panic!(
                    "{}: output ended before a `{kind}` event; saw {:?}; stderr: {}",
                    self.name,
                    self.seen,
                    self.stderr()
                ),
                Err(_) => panic!(
                    "{}: no `{kind}` event within {limit:?}; saw {:?}; stderr: {}",
                    self.name,
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// Every event until the output ends (the process exited).
    pub async fn drain(&mut self) -> Vec<Value> {
        while let Ok(Some((_, event))) = tokio::time::timeout(WAIT, self.events.recv()).await {
            self.seen.push(event);
        }
        self.seen.clone()
    }

    /// The next event of any kind within `limit`, not kept in `seen` (a soak reads
    /// tens of thousands); `None` on timeout or once the output ended.
    pub async fn next_event(&mut self, limit: Duration) -> Option<Value> {
        match tokio::time::timeout(limit, self.events.recv()).await {
            Ok(Some((_, event))) => Some(event),
            Ok(None) | Err(_) => None,
        }
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Types one line.
    pub async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).await.expect("write stdin");
        stdin.write_all(b"\n").await.expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    /// Types one line, reporting (not panicking on) a client that already exited.
    pub async fn try_say(&mut self, line: &str) -> std::io::Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        };
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await
    }

    /// Closes stdin (end of input).
    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// Kills the process with SIGKILL and waits for it.
    pub async fn kill_hard(&mut self) {
        self.child.start_kill().expect("send SIGKILL");
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }

    /// Waits for the process to exit and returns its code.
    pub async fn exit_code(&mut self) -> i32 {
        self.exit_code_within(WAIT).await
    }

    /// Waits up to `limit` for the process to exit and returns its code.
    pub async fn exit_code_within(&mut self, limit: Duration) -> i32 {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} did not exit within {limit:?}; saw {:?}; stderr: {}",
                    self.name,
                    self.seen,
                    self.stderr()
                )
            })
            .expect("wait for client");
        status.code().unwrap_or(-1)
    }
}

/// Starts alice, then (once she waits, so she hosts) bob, and returns both
/// once each shows `connected` (the events stay in their `seen`).
pub async fn connected_pair(alice_args: &[String], bob_args: &[String]) -> (Client, Client) {
    let mut alice = Client::start("alice", alice_args);
    alice.expect("waiting").await;
    let mut bob = Client::start("bob", bob_args);
    alice.expect("connected").await;
    bob.expect("connected").await;
    (alice, bob)
}

/// The last event named `kind` a client has shown.
pub fn last(c: &Client, kind: &str) -> Value {
    c.seen
        .iter()
        .rev()
        .find(|e| e["event"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("{}: no `{kind}` event in {:?}", c.name, c.seen))
}

/// Waits (up to [`WAIT`]) until a helper process `who` prints a line containing
/// `needle`, panicking with what it said instead; then keeps draining its output
/// so it never blocks on a full pipe.
pub async fn await_line<R>(mut lines: tokio::io::Lines<BufReader<R>>, needle: &str, who: &str)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let ready = tokio::time::timeout(WAIT, async {
        let mut said = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(needle) {
                return Ok(());
            }
            said.push_str(&line);
            said.push('\n');
        }
        Err(said)
    })
    .await;
    match ready {
        Ok(Ok(())) => {}
        Ok(Err(said)) => panic!("{who} ended before saying `{needle}`:\n{said}"),
        Err(_) => panic!("{who} did not say `{needle}` within {WAIT:?}"),
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

/// Sets `flag` to `value` in `args`, replacing an earlier value.
pub fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    if let Some(i) = args.iter().position(|a| a == flag) {
        args[i + 1] = value.to_string();
    } else {
        args.extend([flag.to_string(), value.to_string()]);
    }
}

/// What every LAN-mode test client gets, then `extra`: no `--server`, LAN port
/// `lan_port`, loopback only (`--lan-interface lo`, so nothing leaves this
/// machine), group 14, JSON, its peers file and history in `dir`.
pub fn lan_client_args(name: &str, dir: &TempDir, lan_port: u16, extra: &[&str]) -> Vec<String> {
    let mut args = client_args("unused", name, dir, &[]);
    let at = args
        .iter()
        .position(|a| a == "--server")
        .expect("--server in the base args");
    args.drain(at..at + 2);
    args.extend(
        ["--lan-port", &lan_port.to_string(), "--lan-interface", "lo"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A number from the environment variable `name`, else `default` (bench settings).
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A UDP port that is free on loopback right now (bound, then released). Tests
/// bind nothing outside loopback; the clients that use the port hear only `lo`
/// (`--lan-interface lo`).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("find a free UDP port")
}

/// A loopback port that is free right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// The mediator's metrics page (`GET /metrics` on `addr`, its `--metrics`).
pub async fn metrics_page(addr: &str) -> String {
    try_metrics_page(addr).await.expect("read the metrics page")
}

/// [`metrics_page`], or the error (the listener may not be up yet: a mediator
/// says it is ready when its rendezvous listener is).
pub async fn try_metrics_page(addr: &str) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut page = String::new();
        stream.read_to_string(&mut page).await?;
        std::io::Result::Ok(page)
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the metrics page in time")
}

/// The metrics page on `addr` inside network namespace `netns` (a NAT lab's
/// public segment), or in ours with `None`. Inside a namespace the GET runs in a
/// `bash` started there (its `/dev/tcp`), since this process cannot reach the
/// namespace's addresses itself.
pub async fn metrics_page_in(netns: Option<&str>, addr: &str) -> String {
    let Some(ns) = netns else {
        return metrics_page(addr).await;
    };
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("a metrics address is host:port, not {addr}"));
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port} && \
         printf 'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' >&3 && \
         cat <&3"
    );
    let out = tokio::time::timeout(
        WAIT,
        command_in(Some(ns), Path::new("bash"))
            .args(["-c", &script])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the metrics page in time")
    .expect("start bash in the namespace for the metrics page (apt-get install bash)");
    assert!(
        out.status.success(),
        "GET /metrics on {addr} in {ns} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until the metrics page on `addr` has every line of `lines` at once,
/// reading it every 50 ms; fails after [`WAIT`] showing the page as last read.
pub async fn wait_for_metrics(addr: &str, lines: &[String]) {
    wait_for_metrics_in(None, addr, lines).await
}

/// [`wait_for_metrics`] for a page served inside network namespace `netns`.
pub async fn wait_for_metrics_in(netns: Option<&str>, addr: &str, lines: &[String]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = match netns {
            None => match try_metrics_page(addr).await {
                Ok(page) => page,
                Err(e) => format!("(no page yet: {e})"),
            },
            Some(_) => metrics_page_in(netns, addr).await,
        };
        if lines.iter().all(|want| page.lines().any(|l| l == want)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all of {lines:?} on the metrics page within {WAIT:?}:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every form in which an identity could be told: the raw key, its hex (either case), the raw
/// fingerprint and the fingerprint as shown (with and without spaces).
pub fn identity_forms(profile: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let key = engine::identity::load(&profile.join(engine::identity::FILE_NAME))
        .expect("the profile's identity")
        .public();
    let fingerprint = key.fingerprint();
    let shown = fingerprint.to_string();
    let compact: String = shown.split(' ').collect();
    vec![
        ("raw key".into(), key.0.to_vec()),
        ("key hex".into(), key.to_hex().into_bytes()),
        ("key HEX".into(), key.to_hex().to_uppercase().into_bytes()),
        ("raw fingerprint".into(), fingerprint.0.to_vec()),
        ("fingerprint".into(), shown.into_bytes()),
        ("compact fingerprint".into(), compact.into_bytes()),
    ]
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
