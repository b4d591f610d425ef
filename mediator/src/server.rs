//! The accept loop and shutdown: admit each connection against the global and
//! per-address limits, spawn its task, refuse politely when full (even past the
//! open-file limit), and on shutdown stop accepting, tell every client
//! `ShuttingDown` and wait a bounded time for them.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::ErrorCode;

use crate::config::Config;
use crate::connection;
use crate::limits::{AddrKey, AddrLimits};
use crate::metrics::{self, Limit, Metrics};
use crate::nameplates::{NameplateTable, Nameplates};
use crate::relay::{RelayTable, TokenKey};
use crate::rooms::{ConnId, InMemoryRooms, RedisRooms, RoomTable};

/// Listen backlog: a burst of thousands of connects must queue, not have SYNs
/// dropped (a dropped SYN stalls the client a full second). The kernel caps it
/// at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 4096;
/// How long shutdown waits for connections to say goodbye (the binary must exit
/// within 5 s of a signal).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after an accept error that is not about one connection.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one warning per this interval about accept trouble.
const WARN_INTERVAL: Duration = Duration::from_secs(5);

/// State shared by the accept loop and every connection task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) rooms: Box<dyn RoomTable>,
    /// Group rooms (§19): in this process, or shared through Redis.
    pub(crate) groups: Box<dyn crate::groups::GroupTable>,
    pub(crate) limits: AddrLimits,
    pub(crate) metrics: Metrics,
    /// Fires at shutdown; every connection task watches it.
    pub(crate) cancel: CancellationToken,
    /// Mints and checks the relay tokens handed out in `Matched`.
    pub(crate) tokens: TokenKey,
    /// Relay connections waiting for their second side.
    pub(crate) relay: RelayTable,
    /// Nameplates reserved by `Allocate` for generated room codes.
    pub(crate) nameplates: Arc<dyn NameplateTable>,
    /// Presence connections by tag (§21).
    pub(crate) presence: crate::presence::PresenceTable,
    /// The offline mailbox's store and per-source cap (§22).
    pub(crate) mailbox: crate::mailbox::Mailbox,
    /// Connections still reading their PROXY header (not yet admitted).
    unproxied: AtomicUsize,
    next_id: AtomicU64,
}

/// An admitted connection: while it lives it counts against the limits.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) shared: Arc<Shared>,
    pub(crate) key: AddrKey,
    pub(crate) id: ConnId,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.shared.limits.disconnect(self.key);
        self.shared.metrics.connection_closed();
    }
}

/// Binds a TCP listener the way the mediator needs it: `SO_REUSEADDR` (restart
/// without waiting out TIME_WAIT), dual-stack when `addr` is IPv6 (so `[::]:7070`
/// takes IPv4 clients too), and a backlog of [`LISTEN_BACKLOG`]. On a host with
/// IPv6 switched off, `[::]:PORT` falls back to `0.0.0.0:PORT`. Call it inside a
/// tokio runtime.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    match bind_exactly(addr) {
        // EAFNOSUPPORT (97 on Linux): the kernel has no IPv6 at all.
        Err(e)
            if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED
                && (e.raw_os_error() == Some(97)
                    || e.kind() == io::ErrorKind::AddrNotAvailable) =>
        {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            let listener = bind_exactly(v4).map_err(|_| e)?;
            tracing::warn!(%addr, fallback = %v4, "IPv6 unavailable; listening on IPv4 only");
            Ok(listener)
        }
        other => other,
    }
}

fn bind_exactly(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY on Linux: one setsockopt per server
    // instead of one per connection. Frames are small and written whole, so
    // Nagle could only delay an answer.
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Runs the mediator on `listener` until `shutdown` completes, then tells waiting
/// clients `ShuttingDown` and returns within a few seconds.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_metrics(listener, None, config, shutdown).await
}

/// [`run`], also serving Prometheus text at `GET /metrics` on `metrics` if given.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let cancel = CancellationToken::new();
    let secret = config.relay_secret.as_ref().map(|s| s.0);
    type Tables = (
        Box<dyn RoomTable>,
        Box<dyn crate::groups::GroupTable>,
        Arc<dyn NameplateTable>,
        TokenKey,
    );
    let (rooms, groups, nameplates, tokens): Tables = match &config.redis {
        None => (
            Box::new(InMemoryRooms::new(config.max_rooms)),
            Box::new(crate::groups::GroupRooms::new(
                config.group_caps(),
                config.max_rooms,
            )),
            Arc::new(Nameplates::new(config.max_rooms)),
            secret.map_or_else(TokenKey::new, TokenKey::from_secret),
        ),
        Some(url) => {
            let (rooms, agreed) = RedisRooms::connect(
                url,
                config.max_rooms,
                config.group_caps(),
                secret,
                cancel.clone(),
            )
            .await?;
            let plates = Arc::new(rooms.clone());
            let groups = Box::new(rooms.clone());
            (
                Box::new(rooms),
                groups,
                plates,
                TokenKey::from_secret(agreed),
            )
        }
    };
    let mailbox = open_mailbox(&config).await?;
    let shared = Arc::new(Shared {
        mailbox: crate::mailbox::Mailbox::new(mailbox, &config),
        rooms,
        groups,
        limits: AddrLimits::new(config.limit_caps()),
        metrics: Metrics::default(),
        cancel,
        tokens,
        relay: RelayTable::default(),
        nameplates,
        presence: Default::default(),
        unproxied: AtomicUsize::new(0),
        next_id: AtomicU64::new(0),
        config,
    });
    let tracker = TaskTracker::new();
    if let Some(metrics_listener) = metrics {
        tracker.spawn(metrics::serve(
            metrics_listener,
            Status(shared.clone()),
            shared.cancel.clone(),
        ));
    }
    tracker.spawn(sweep_groups(shared.clone()));
    tracker.spawn(crate::mailbox::sweep(shared.clone()));
    if let Some(mut rings) = shared.rooms.remote_rings() {
        // Rooms other instances opened ring our presence connections (§21).
        let shared = shared.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = shared.cancel.cancelled() => return,
                    tag = rings.recv() => match tag {
                        Some(tag) => {
                            shared.presence.ring(&tag.0);
                        }
                        None => return,
                    },
                }
            }
        });
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "mediator accepting connections");
    }
    accept_loop(&listener, &shared, &tracker, shutdown).await;
    drop(listener);
    tracing::info!(
        connections = shared.metrics.connections_open(),
        "shutting down: telling clients"
    );
    shared.cancel.cancel();
    tracker.close();
    if timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!(
            remaining = tracker.len(),
            "connections still open after the drain timeout; leaving them"
        );
    }
    tracing::info!("mediator stopped");
    Ok(())
}

/// The mailbox's store: Redis with `--redis`, else the SQLite file (or memory).
async fn open_mailbox(config: &Config) -> anyhow::Result<Box<dyn crate::mailbox::MailboxTable>> {
    use crate::mailbox::{RedisMailbox, SqliteMailbox, StoreCaps};
    let caps = StoreCaps::of(config);
    Ok(match &config.redis {
        Some(url) => {
            Box::new(RedisMailbox::connect(url, crate::rooms::redis_place(url), caps).await?)
        }
        None => {
            let path = config.mailbox_db.clone();
            // Opening reads the totals: a blocking job, off the runtime's threads.
            let store =
                tokio::task::spawn_blocking(move || SqliteMailbox::open(path.as_deref(), caps))
                    .await??;
            Box::new(store)
        }
    })
}

/// Forgets group rooms empty for their TTL, every few seconds until shutdown.
async fn sweep_groups(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            () = sleep(Duration::from_secs(5)) => {}
        }
        let swept = shared.groups.sweep();
        if swept > 0 {
            tracing::debug!(swept, "empty group rooms forgotten");
        }
    }
}

/// What `/metrics` and `/health` report.
struct Status(Arc<Shared>);

impl metrics::Status for Status {
    fn metrics(&self) -> String {
        let rooms = &self.0.rooms;
        self.0.metrics.set_presence_tags(self.0.presence.tags());
        self.0.metrics.set_mailbox(self.0.mailbox.store.held());
        self.0.metrics.render(
            rooms.waiting(),
            self.0.groups.members(),
            rooms.trouble().is_none(),
        )
    }

    fn trouble(&self) -> Option<String> {
        self.0.rooms.trouble()
    }
}

/// A file descriptor held in reserve: when `accept` fails for lack of
/// descriptors, it is released so one connection can be accepted and told
/// `TooManyConnections`, instead of staying in the queue and spinning the loop.
struct SpareFd(Option<File>);

impl SpareFd {
    fn open() -> SpareFd {
        SpareFd(File::open("/dev/null").ok())
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE (per process) and ENFILE (system-wide): 24 and 23 on Linux and the BSDs.
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

/// Errors about a single connection that went away before accept finished.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// v4-mapped IPv6 addresses (from the dual-stack socket) become plain IPv4.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Writes a refusal without waiting (the socket's buffer is empty, so a small
/// frame fits) and closes.
fn refuse_now(stream: TcpStream, message: &str) {
    if let Some(frame) = connection::error_frame(ErrorCode::TooManyConnections, message) {
        let _ = stream.try_write(&frame);
    }
}

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown);
    let mut spare = SpareFd::open();
    let mut last_warn: Option<Instant> = None;
    let mut warn_now = |what: &str, e: &io::Error| {
        let now = Instant::now();
        if last_warn.map_or(true, |t| now.duration_since(t) >= WARN_INTERVAL) {
            last_warn = Some(now);
            tracing::warn!(error = %e, "{what}");
        }
    };
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) if shared.config.proxy_protocol => {
                admit_proxied(stream, unmap(addr), shared, tracker)
            }
            Ok((stream, addr)) => admit(stream, unmap(addr), shared, tracker),
            Err(e) if is_fd_exhaustion(&e) => {
                warn_now(
                    "out of file descriptors: refusing new clients (raise LimitNOFILE?)",
                    &e,
                );
                if spare.0.take().is_some() {
                    if let Ok(Ok((stream, _))) =
                        timeout(Duration::from_millis(10), listener.accept()).await
                    {
                        shared.metrics.rejected(Limit::OpenFiles);
                        shared.metrics.error(ErrorCode::TooManyConnections);
                        refuse_now(stream, "the mediator is out of file descriptors");
                    }
                    spare = SpareFd::open();
                }
                if spare.0.is_none() {
                    // No spare to trade: wait for connections to close.
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = sleep(ACCEPT_BACKOFF) => {}
                    }
                    spare = SpareFd::open();
                }
            }
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                warn_now("accept failed; backing off", &e);
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// With `--proxy-protocol`: reads the header (within the hello timeout) on a task
/// of its own, then admits the connection under the client's address from it. A
/// connection without a valid header is closed without a word: it is not a client
/// coming through the balancer. Headers being read count against
/// `--max-connections` too.
fn admit_proxied(
    mut stream: TcpStream,
    addr: SocketAddr,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
) {
    let pending = shared.unproxied.load(Ordering::Relaxed);
    if shared.metrics.connections_open() + pending >= shared.config.max_connections {
        shared.metrics.rejected(Limit::MaxConnections);
        shared.metrics.error(ErrorCode::TooManyConnections);
        refuse_now(stream, "the mediator is full; try again later");
        return;
    }
    shared.unproxied.fetch_add(1, Ordering::Relaxed);
    let (shared, spawner) = (shared.clone(), tracker.clone());
    tracker.spawn(async move {
        let header = timeout(
            shared.config.hello_timeout,
            crate::proxy::read_header(&mut stream),
        )
        .await;
        shared.unproxied.fetch_sub(1, Ordering::Relaxed);
        match header {
            Ok(Ok(crate::proxy::Source::Client(client))) => {
                admit(stream, unmap(client), &shared, &spawner)
            }
            Ok(Ok(crate::proxy::Source::Local)) => admit(stream, addr, &shared, &spawner),
            Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "closing"),
            Err(_) => tracing::debug!(peer = %addr, "no PROXY header in time; closing"),
        }
    });
}

/// Checks the limits and spawns the connection's task, or refuses it.
fn admit(stream: TcpStream, addr: SocketAddr, shared: &Arc<Shared>, tracker: &TaskTracker) {
    let accepted = Instant::now();
    if shared.metrics.connections_open() >= shared.config.max_connections {
        shared.metrics.rejected(Limit::MaxConnections);
        shared.metrics.error(ErrorCode::TooManyConnections);
        refuse_now(stream, "the mediator is full; try again later");
        return;
    }
    let key = AddrKey::of(addr.ip());
    if let Err(refused) = shared.limits.connect(key) {
        shared.metrics.rejected(refused.limit());
        shared.metrics.error(ErrorCode::TooManyConnections);
        tracing::debug!(peer = %addr, limit = refused.limit().as_str(), "per-address connection limit");
        refuse_now(stream, refused.message());
        return;
    }
    shared.metrics.connection_opened();
    let admitted = Admitted {
        shared: shared.clone(),
        key,
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
    };
    tracker.spawn(connection::serve(admitted, stream, addr, accepted));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:4000".parse().unwrap();
        assert_eq!(unmap(mapped), "192.0.2.7:4000".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(unmap(v6), v6);
    }
}
