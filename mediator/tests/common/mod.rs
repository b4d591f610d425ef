//! Shared helpers for the mediator's integration tests: an in-process server on
//! 127.0.0.1:0, a raw-frame test client, valid and invalid `Hello`s, and a
//! handle on the real binary.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dhke::Group;
use mediator::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wire::{ClientMsg, ErrorCode, Link, MediatorMsg, Role};

pub mod mailbox;
pub mod redis_server;

/// Longest a test waits for one message before it fails (virtual time in paused tests).
pub const RECV_TIMEOUT: Duration = Duration::from_secs(60);

/// A mediator running in this test's runtime.
pub struct Server {
    pub addr: SocketAddr,
    /// Its metrics listener, when started with [`start_with_metrics`].
    pub metrics: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts `mediator::run` on 127.0.0.1:0 with `config`.
pub async fn start(config: Config) -> Server {
    start_on("127.0.0.1:0".parse().unwrap(), config).await
}

/// Starts `mediator::run` on `listen` (e.g. `[::1]:0`) with `config`.
pub async fn start_on(listen: SocketAddr, config: Config) -> Server {
    let listener = mediator::bind(listen).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(mediator::run(listener, config, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        metrics: None,
        stop: Some(stop),
        task: Some(task),
    }
}

/// [`start`] with a metrics listener on 127.0.0.1:0, so a test can wait for what
/// the server has done ([`Server::wait_for_metric`]) instead of sleeping.
pub async fn start_with_metrics(config: Config) -> Server {
    let listener = mediator::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let metrics = mediator::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(mediator::run_with_metrics(
        listener,
        Some(metrics),
        config,
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        metrics: Some(metrics_addr),
        stop: Some(stop),
        task: Some(task),
    }
}

impl Server {
    /// The metrics page (`GET /metrics`), body included.
    pub async fn metrics_text(&self) -> String {
        let addr = self.metrics.expect("started with start_with_metrics");
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        tokio::time::timeout(RECV_TIMEOUT, s.read_to_string(&mut body))
            .await
            .expect("metrics page in time")
            .unwrap();
        body
    }

    /// Waits until the metrics page has the line `line` (`name value`), polling
    /// every 10 ms; fails after [`RECV_TIMEOUT`] with the page as last read.
    pub async fn wait_for_metric(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let text = self.metrics_text().await;
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {line:?} on the metrics page within {RECV_TIMEOUT:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Fires the shutdown future and returns what `run` returned.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A config with every default but relaxed per-address limits, since every test
/// client comes from 127.0.0.1.
pub fn config() -> Config {
    Config {
        per_ip_connections: 1000,
        per_ip_hellos_per_min: 10_000,
        ..Config::default()
    }
}

/// A room tag unique to `n`.
pub fn room(n: u64) -> [u8; 32] {
    let mut tag = [0u8; 32];
    tag[..8].copy_from_slice(&n.to_be_bytes());
    tag[31] = 0xa5;
    tag
}

/// A public value that passes the mediator's length and range check.
pub fn public(group: Group) -> Vec<u8> {
    vec![0x5a; group.prime_len()]
}

/// A valid `Hello` for room `n` with this name, in group 15.
pub fn hello(n: u64, name: &str) -> ClientMsg {
    hello_with(n, name, Group::Modp3072, public(Group::Modp3072))
}

/// A `Hello` with a chosen group and public value.
pub fn hello_with(n: u64, name: &str, group: Group, public: Vec<u8>) -> ClientMsg {
    ClientMsg::Hello {
        version: wire::PROTOCOL_VERSION,
        room: room(n),
        name: name.to_owned(),
        group: group.id(),
        public,
        listen_port: 4000 + name.len() as u16,
        local_addrs: vec![format!("192.168.1.{}:4000", name.len()).parse().unwrap()],
        no_relay: false,
    }
}

/// `hello(n, name)` as a `GroupHello` (§19).
pub fn group_hello(n: u64, name: &str) -> ClientMsg {
    let ClientMsg::Hello {
        version,
        room,
        name,
        group,
        public,
        listen_port,
        local_addrs,
        no_relay,
    } = hello(n, name)
    else {
        unreachable!()
    };
    ClientMsg::GroupHello {
        version,
        room,
        name,
        group,
        public,
        listen_port,
        local_addrs,
        no_relay,
    }
}

/// Mutates a `Hello`'s fields in place.
pub fn edit(msg: &mut ClientMsg, f: impl FnOnce(&mut u16, &mut String, &mut u8, &mut Vec<u8>)) {
    match msg {
        ClientMsg::Hello {
            version,
            name,
            group,
            public,
            ..
        } => f(version, name, group, public),
        other => panic!("not a Hello: {other:?}"),
    }
}

/// `payload` with its 4-byte length prefix.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A test client speaking raw frames.
pub struct Client {
    pub stream: TcpStream,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
        }
    }

    /// Connects from a chosen loopback source address (127.0.0.0/8).
    pub async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
        Client {
            stream: socket.connect(addr).await.unwrap(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        let payload = wire::encode(msg).unwrap();
        self.stream.write_all(&frame(&payload)).await.unwrap();
    }

    /// Sends bytes as they are; a reset by the server is not a test failure.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next message, or `None` when the server closed (or reset) the connection.
    pub async fn recv(&mut self) -> Option<MediatorMsg> {
        tokio::time::timeout(RECV_TIMEOUT, self.recv_inner())
            .await
            .expect("no message from the mediator in time")
    }

    async fn recv_inner(&mut self) -> Option<MediatorMsg> {
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).await.ok()?;
        let len = Link::Mediator
            .parse_header(header)
            .expect("mediator frame length");
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some(wire::decode(&payload).expect("mediator message decodes"))
    }

    /// Expects `Error{code}` and then the end of the stream.
    pub async fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.recv().await {
            Some(MediatorMsg::Error { code: got, message }) => {
                assert_eq!(got, code, "error message: {message}");
                assert!(self.recv().await.is_none(), "connection closed after Error");
                message
            }
            other => panic!("expected Error{{{code:?}}}, got {other:?}"),
        }
    }

    /// Expects an `Error` (any code) or a plain close; returns the code if any.
    pub async fn expect_error_or_close(&mut self) -> Option<ErrorCode> {
        match self.recv().await {
            None => None,
            Some(MediatorMsg::Error { code, .. }) => {
                assert!(self.recv().await.is_none(), "connection closed after Error");
                Some(code)
            }
            other => panic!("expected an Error or close, got {other:?}"),
        }
    }

    pub async fn expect_waiting(&mut self) {
        match self.recv().await {
            Some(MediatorMsg::Waiting { .. }) => {}
            other => panic!("expected Waiting, got {other:?}"),
        }
    }

    /// Answers the `PunchPing` after `Matched` and waits for `PunchNow`.
    pub async fn answer_punch(&mut self) {
        match self.recv().await {
            Some(MediatorMsg::PunchPing { nonce }) => {
                self.send(&ClientMsg::PunchPong { nonce }).await
            }
            other => panic!("expected PunchPing, got {other:?}"),
        }
        match self.recv().await {
            Some(MediatorMsg::PunchNow) => {}
            other => panic!("expected PunchNow, got {other:?}"),
        }
    }

    /// Expects `RelayReady` (§12.3).
    pub async fn expect_relay_ready(&mut self) {
        match self.recv().await {
            Some(MediatorMsg::RelayReady) => {}
            other => panic!("expected RelayReady, got {other:?}"),
        }
    }

    /// Reads one peer frame's payload (through a relay).
    pub async fn read_peer_frame(&mut self) -> Vec<u8> {
        let mut header = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(&mut header))
            .await
            .expect("frame in time")
            .expect("read header");
        let len = Link::Peer.parse_header(header).expect("peer frame length");
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.expect("payload");
        payload
    }

    /// Sends `GroupHello` for group room `n`: our member number from
    /// `GroupJoined`, or the refusal (code and message, the connection closed).
    pub async fn join_group(&mut self, n: u64, name: &str) -> Result<u32, (ErrorCode, String)> {
        self.send(&group_hello(n, name)).await;
        match self.recv().await {
            Some(MediatorMsg::GroupJoined { member, .. }) => Ok(member),
            Some(MediatorMsg::Error { code, message }) => {
                assert!(self.recv().await.is_none(), "connection closed after Error");
                Err((code, message))
            }
            other => panic!("{name}: expected GroupJoined or Error, got {other:?}"),
        }
    }

    /// Expects `Matched` with this role; returns the peer's details.
    pub async fn expect_matched(&mut self, role: Role) -> MediatorMsg {
        match self.recv().await {
            Some(msg @ MediatorMsg::Matched { role: got, .. }) if got == role => msg,
            other => panic!("expected Matched{{{role:?}}}, got {other:?}"),
        }
    }
}

/// Two relay connections to `addr` presenting `token`, both past `RelayReady`.
pub async fn relay_pair(addr: SocketAddr, token: [u8; 32]) -> (Client, Client) {
    let mut a = Client::connect(addr).await;
    a.send(&ClientMsg::RelayJoin { token }).await;
    let mut b = Client::connect(addr).await;
    b.send(&ClientMsg::RelayJoin { token }).await;
    a.expect_relay_ready().await;
    b.expect_relay_ready().await;
    (a, b)
}

/// `rounds` frames of growing size from `a` to `b`, each answered by a one-byte
/// frame back; every frame must arrive unchanged.
pub async fn relay_round_trips(a: &mut Client, b: &mut Client, rounds: u32) {
    for i in 0..rounds {
        let payload: Vec<u8> = (0..(1 + i * 1000)).map(|x| x as u8).collect();
        a.send_raw(&frame(&payload)).await.unwrap();
        assert_eq!(b.read_peer_frame().await, payload);
        b.send_raw(&frame(&payload[..1])).await.unwrap();
        assert_eq!(a.read_peer_frame().await, payload[..1]);
    }
}

/// Two fresh clients pair in room `n`; panics if they do not.
pub async fn pair(addr: SocketAddr, n: u64) {
    pair_from(Ipv4Addr::LOCALHOST, addr, n).await
}

/// [`pair`] from a chosen loopback source address.
pub async fn pair_from(source: Ipv4Addr, addr: SocketAddr, n: u64) {
    let mut host = Client::connect_from(source, addr).await;
    host.send(&hello(n, "host")).await;
    host.expect_waiting().await;
    let mut joiner = Client::connect_from(source, addr).await;
    joiner.send(&hello(n, "joiner")).await;
    joiner.expect_matched(Role::Joiner).await;
    host.expect_matched(Role::Host).await;
}

/// The real `mediator` binary, killed when dropped.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Binary {
    /// Runs `script` under bash (it must `exec` the binary, found in `$MEDIATOR`)
    /// and reads the `listening on ADDR` line.
    pub fn spawn_script(script: &str) -> Binary {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("MEDIATOR", env!("CARGO_BIN_EXE_mediator"))
            .env("RUST_LOG", "warn")
            // No mailbox file in the working directory (the crate's source),
            // none shared by tests: a test that wants one passes --mailbox-db.
            .env("MEDIATOR_MAILBOX_DB", ":memory:")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first stdout line was {line:?}"))
            .parse()
            .unwrap();
        Binary { child, addr }
    }

    /// Starts the binary on 127.0.0.1:0 with these extra flags.
    pub fn spawn(flags: &str) -> Binary {
        Binary::spawn_script(&format!("exec \"$MEDIATOR\" --listen 127.0.0.1:0 {flags}"))
    }

    /// Sends a signal by name (TERM, INT) with the `kill` utility.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mediator did not exit within {limit:?}");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
