//! Counters and gauges, served as Prometheus text (the Prometheus project's
//! `prometheus-client`, text format 0.0.4) at `GET /metrics`, and `GET /health`
//! saying whether new rooms can open (200, or 503 with the reason: e.g. Redis
//! unreachable), by axum on hyper: one request per connection, bounded in size,
//! time and connections at once.
//!
//! The counters are atomics that connection tasks bump without a lock; each
//! labelled series is created once, at start, and its handle kept, so the
//! registry's lock is taken only by a scrape.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wire::{ErrorCode, PathLabel};

use crate::mailbox::{Cap, Held};

/// Which limit turned a client away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `--max-connections`.
    MaxConnections,
    /// The process ran out of file descriptors.
    OpenFiles,
    /// `--per-ip-connections`.
    PerIpConnections,
    /// `--per-ip-hellos-per-min`.
    PerIpHellos,
    /// `--per-56-connections`.
    Per56Connections,
    /// `--per-48-connections`.
    Per48Connections,
    /// `--per-56-hellos-per-min`.
    Per56Hellos,
    /// `--per-48-hellos-per-min`.
    Per48Hellos,
    /// `--max-rooms`.
    MaxRooms,
    /// The shared room store (Redis) was unreachable.
    RoomStore,
    /// `--max-members-per-ip`: a group room holds that many members from the
    /// newcomer's address.
    MembersPerIp,
    /// `--presence-max-total`: the presence table is full (§21).
    Presence,
    /// The mailbox store (SQLite or Redis) failed or was unreachable (§22.3).
    MailboxStore,
}

impl Limit {
    const ALL: [Limit; 13] = [
        Limit::MaxConnections,
        Limit::OpenFiles,
        Limit::PerIpConnections,
        Limit::PerIpHellos,
        Limit::Per56Connections,
        Limit::Per48Connections,
        Limit::Per56Hellos,
        Limit::Per48Hellos,
        Limit::MaxRooms,
        Limit::RoomStore,
        Limit::MembersPerIp,
        Limit::Presence,
        Limit::MailboxStore,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::OpenFiles => "open_files",
            Limit::PerIpConnections => "per_ip_connections",
            Limit::PerIpHellos => "per_ip_hellos",
            Limit::Per56Connections => "per_56_connections",
            Limit::Per48Connections => "per_48_connections",
            Limit::Per56Hellos => "per_56_hellos",
            Limit::Per48Hellos => "per_48_hellos",
            Limit::MaxRooms => "max_rooms",
            Limit::RoomStore => "room_store",
            Limit::MembersPerIp => "max_members_per_ip",
            Limit::Presence => "presence_max_total",
            Limit::MailboxStore => "mailbox_store",
        }
    }
}

/// One label, e.g. `code="timeout"`: only ever from the fixed lists above, so a
/// client can never add a series.
type Label = [(&'static str, &'static str); 1];

/// The mediator's counters and gauges.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections_total: Counter,
    matches_total: Counter,
    /// One handle per `ErrorCode::ALL` entry, in that order.
    errors: [Counter; ErrorCode::ALL.len()],
    /// One handle per `Limit::ALL` entry, in that order.
    rejected: [Counter; Limit::ALL.len()],
    relay_sessions_open: Gauge,
    relay_sessions_total: Counter,
    relay_refused_total: Counter,
    relay_bytes_total: Counter,
    punch_timed_total: Counter,
    /// One handle per `PathLabel::ALL` entry, in that order.
    sessions: [Counter; PathLabel::ALL.len()],
    // Read from the room tables when a scrape renders.
    waiting_rooms: Gauge,
    group_members: Gauge,
    presence_tags: Gauge,
    room_store_up: Gauge,
    mailbox_items: Gauge,
    mailbox_bytes: Gauge,
    /// One handle per `mailbox::Cap::ALL` entry, in that order.
    mailbox_refused: [Counter; Cap::ALL.len()],
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Registers a family labelled `key` with one series per `values` entry (so each
/// shows, at 0, before its first event) and returns the series' handles.
fn labelled<const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    key: &'static str,
    values: [&'static str; N],
) -> [Counter; N] {
    let family = Family::<Label, Counter>::default();
    let handles = values.map(|value| family.get_or_create_owned(&[(key, value)]));
    registry.register(name, help, family);
    handles
}

impl Metrics {
    /// Every metric registered, every labelled series created, all at 0.
    // Names go in without `_total`, help without its final stop: the encoder
    // appends both.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let connections_open = gauge("mediator_connections", "Client connections open now");
        let waiting_rooms = gauge(
            "mediator_waiting_rooms",
            "Rooms with a host waiting for its peer",
        );
        let group_members = gauge(
            "mediator_group_members",
            "Members of group rooms connected to this instance now",
        );
        let presence_tags = gauge(
            "mediator_presence_tags",
            "Contact tags presence connections wait under now (docs/protocol.md §21)",
        );
        let room_store_up = gauge(
            "mediator_room_store_up",
            "1 if the room table can open rooms (Redis reachable, or in memory), else 0",
        );
        let relay_sessions_open = gauge("mediator_relay_sessions", "Relay sessions spliced now");
        let mailbox_items = gauge(
            "mediator_mailbox_items",
            "Items the mailbox store holds now (docs/protocol.md §22; with Redis: all instances', \
             as of this instance's last mailbox request or sweep)",
        );
        let mailbox_bytes = gauge(
            "mediator_mailbox_bytes",
            "Bytes the mailbox store holds now as --mailbox-max-bytes counts them: sealed items, \
             and 64 per item and per remembered id, 128 per queue",
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let connections_total = counter("mediator_connections", "Client connections admitted");
        let matches_total = counter("mediator_matches", "Pairs matched");
        let relay_sessions_total = counter("mediator_relay_sessions", "Relay sessions spliced");
        let relay_refused_total = counter(
            "mediator_relay_refused",
            "Relay joins refused (token, relay off or full, peer never came)",
        );
        let relay_bytes_total = counter(
            "mediator_relay_bytes",
            "Bytes forwarded by the relay, both directions, frame headers included",
        );
        let punch_timed_total = counter(
            "mediator_punch_timed",
            "PunchNow messages sent to matched clients",
        );
        let errors = labelled(
            &mut registry,
            "mediator_errors",
            "Error messages sent to clients, by code",
            "code",
            ErrorCode::ALL.map(ErrorCode::as_str),
        );
        let rejected = labelled(
            &mut registry,
            "mediator_rejected",
            "Clients turned away by a limit, by limit",
            "limit",
            Limit::ALL.map(Limit::as_str),
        );
        let sessions = labelled(
            &mut registry,
            "mediator_sessions",
            "Sessions by the path their client reported (direct, lan, punched, relay, none): \
             each side of a pair reports its own; nothing about who or where is kept",
            "path",
            PathLabel::ALL.map(PathLabel::as_str),
        );
        let mailbox_refused = labelled(
            &mut registry,
            "mediator_mailbox_refused",
            "Mailbox adds and opens refused by a cap (MailboxFull), by cap",
            "cap",
            Cap::ALL.map(Cap::as_str),
        );
        Metrics {
            registry,
            connections_open,
            connections_total,
            matches_total,
            errors,
            rejected,
            relay_sessions_open,
            relay_sessions_total,
            relay_refused_total,
            relay_bytes_total,
            punch_timed_total,
            sessions,
            waiting_rooms,
            group_members,
            presence_tags,
            room_store_up,
            mailbox_items,
            mailbox_bytes,
            mailbox_refused,
        }
    }

    /// A client connection was admitted.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
        self.connections_total.inc();
    }

    /// An admitted client connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// Client connections open now.
    pub fn connections_open(&self) -> usize {
        usize::try_from(self.connections_open.get()).unwrap_or(0)
    }

    /// Two clients were paired.
    pub fn matched(&self) {
        self.matches_total.inc();
    }

    /// Two relay connections were spliced.
    pub fn relay_opened(&self) {
        self.relay_sessions_open.inc();
        self.relay_sessions_total.inc();
    }

    /// A spliced relay session ended.
    pub fn relay_closed(&self) {
        self.relay_sessions_open.dec();
    }

    /// A `RelayJoin` was refused (bad or expired token, relay off or full, no peer).
    pub fn relay_refused(&self) {
        self.relay_refused_total.inc();
    }

    /// Bytes forwarded by the relay.
    pub fn relayed(&self, bytes: u64) {
        self.relay_bytes_total.inc_by(bytes);
    }

    /// A `PunchNow` was sent.
    pub fn punch_timed(&self) {
        self.punch_timed_total.inc();
    }

    /// Relay sessions open now.
    pub fn relay_sessions_open(&self) -> usize {
        usize::try_from(self.relay_sessions_open.get()).unwrap_or(0)
    }

    /// An `Error{code}` was sent (or attempted).
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    /// A limit turned a client away.
    pub fn rejected(&self, limit: Limit) {
        if let Some(i) = Limit::ALL.iter().position(|l| *l == limit) {
            self.rejected[i].inc();
        }
    }

    /// A client reported the path its session took (`ClientMsg::SessionPath`).
    /// The caller lets each connection report once.
    pub fn session_path(&self, path: PathLabel) {
        if let Some(i) = PathLabel::ALL.iter().position(|p| *p == path) {
            self.sessions[i].inc();
        }
    }

    /// Sets the presence gauge (read before each [`Metrics::render`]).
    pub fn set_presence_tags(&self, tags: usize) {
        self.presence_tags
            .set(i64::try_from(tags).unwrap_or(i64::MAX));
    }

    /// A mailbox request was refused by `cap`.
    pub fn mailbox_refused(&self, cap: Cap) {
        if let Some(i) = Cap::ALL.iter().position(|c| *c == cap) {
            self.mailbox_refused[i].inc();
        }
    }

    /// Sets the mailbox gauges (read before each [`Metrics::render`]).
    pub fn set_mailbox(&self, held: Held) {
        self.mailbox_items
            .set(i64::try_from(held.items).unwrap_or(i64::MAX));
        self.mailbox_bytes
            .set(i64::try_from(held.bytes).unwrap_or(i64::MAX));
    }

    /// Prometheus text exposition format, version 0.0.4. `store_up`: whether the
    /// room table can open rooms now (always, in memory).
    pub fn render(&self, waiting_rooms: usize, group_members: usize, store_up: bool) -> String {
        let as_gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.waiting_rooms.set(as_gauge(waiting_rooms));
        self.group_members.set(as_gauge(group_members));
        self.room_store_up.set(i64::from(store_up));
        let mut out = String::with_capacity(4096);
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; say so if it ever does.
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// Longest request head (request line and headers) read; anything longer gets
/// a 431.
pub const MAX_REQUEST: usize = 4096;
/// The smallest read buffer hyper allows: what one scrape connection may hold.
const READ_BUFFER: usize = 8192;
/// A scrape must be read and answered within this.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait in the accept queue.
pub const MAX_SCRAPES: usize = 16;

/// What the responder asks the server for.
pub trait Status: Send + Sync + 'static {
    /// The `/metrics` body.
    fn metrics(&self) -> String;
    /// Why the mediator cannot open rooms now, if it cannot (`/health` answers 503).
    fn trouble(&self) -> Option<String>;
}

type Shared = Arc<dyn Status>;

/// The routes: `/metrics`, `/health`, and a word for everything else.
fn routes(status: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health_page))
        .fallback(elsewhere)
        .with_state(status)
}

async fn metrics_page(State(status): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        status.metrics(),
    )
        .into_response()
}

async fn health_page(State(status): State<Shared>) -> Response {
    match status.trouble() {
        None => (StatusCode::OK, "ok\n".to_owned()).into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// Another path (404) or method (405); `POST /metrics` included.
async fn elsewhere(method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        (StatusCode::NOT_FOUND, "try /metrics or /health\n").into_response()
    } else {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
    }
}

/// Serves `GET /metrics` and `GET /health` on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, status: impl Status, cancel: CancellationToken) {
    let routes = routes(Arc::new(status));
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut http = hyper::server::conn::http1::Builder::new();
    // One request per connection, as a scraper sends: the answer ends with
    // `Connection: close` and the close, and nothing lingers idle.
    http.keep_alive(false)
        .max_header_size(MAX_REQUEST)
        .max_buf_size(READ_BUFFER)
        .timer(TokioTimer::new())
        .header_read_timeout(SCRAPE_TIMEOUT);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let connection = http.serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(routes.clone()),
                );
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(SCRAPE_TIMEOUT, connection).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
