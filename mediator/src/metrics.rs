//! Counters and gauges, and a tiny HTTP responder that serves them as Prometheus
//! text at `GET /metrics` and says at `GET /health` whether new rooms can open
//! (200, or 503 with the reason: e.g. Redis unreachable). Hand-written on purpose:
//! one read with a size bound and a deadline, one write, close.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wire::ErrorCode;

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
}

impl Limit {
    const ALL: [Limit; 11] = [
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
        }
    }
}

/// The mediator's counters. Updated with relaxed atomics: they are statistics.
#[derive(Debug, Default)]
pub struct Metrics {
    connections_open: AtomicI64,
    connections_total: AtomicU64,
    matches_total: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    rejected: [AtomicU64; Limit::ALL.len()],
    relay_sessions_open: AtomicI64,
    relay_sessions_total: AtomicU64,
    relay_refused_total: AtomicU64,
    relay_bytes_total: AtomicU64,
    punch_timed_total: AtomicU64,
}

impl Metrics {
    /// A client connection was admitted.
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted client connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Client connections open now.
    pub fn connections_open(&self) -> usize {
        usize::try_from(self.connections_open.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Two clients were paired.
    pub fn matched(&self) {
        self.matches_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Two relay connections were spliced.
    pub fn relay_opened(&self) {
        self.relay_sessions_open.fetch_add(1, Ordering::Relaxed);
        self.relay_sessions_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A spliced relay session ended.
    pub fn relay_closed(&self) {
        self.relay_sessions_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A `RelayJoin` was refused (bad or expired token, relay off or full, no peer).
    pub fn relay_refused(&self) {
        self.relay_refused_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes forwarded by the relay.
    pub fn relayed(&self, bytes: u64) {
        self.relay_bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A `PunchNow` was sent.
    pub fn punch_timed(&self) {
        self.punch_timed_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Relay sessions open now.
    pub fn relay_sessions_open(&self) -> usize {
        usize::try_from(self.relay_sessions_open.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// An `Error{code}` was sent (or attempted).
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A limit turned a client away.
    pub fn rejected(&self, limit: Limit) {
        if let Some(i) = Limit::ALL.iter().position(|l| *l == limit) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text exposition format, version 0.0.4. `store_up`: whether the
    /// room table can open rooms now (always, in memory).
    pub fn render(&self, waiting_rooms: usize, group_members: usize, store_up: bool) -> String {
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        metric(
            "mediator_connections",
            "gauge",
            "Client connections open now.",
        );
        metric(
            "mediator_connections_total",
            "counter",
            "Client connections admitted.",
        );
        metric(
            "mediator_waiting_rooms",
            "gauge",
            "Rooms with a host waiting for its peer.",
        );
        metric(
            "mediator_group_members",
            "gauge",
            "Members of group rooms connected to this instance now.",
        );
        metric("mediator_matches_total", "counter", "Pairs matched.");
        metric(
            "mediator_room_store_up",
            "gauge",
            "1 if the room table can open rooms (Redis reachable, or in memory), else 0.",
        );
        metric(
            "mediator_errors_total",
            "counter",
            "Error messages sent to clients, by code.",
        );
        metric(
            "mediator_rejected_total",
            "counter",
            "Clients turned away by a limit, by limit.",
        );
        metric(
            "mediator_relay_sessions",
            "gauge",
            "Relay sessions spliced now.",
        );
        metric(
            "mediator_relay_sessions_total",
            "counter",
            "Relay sessions spliced.",
        );
        metric(
            "mediator_relay_refused_total",
            "counter",
            "Relay joins refused (token, relay off or full, peer never came).",
        );
        metric(
            "mediator_relay_bytes_total",
            "counter",
            "Bytes forwarded by the relay, both directions, frame headers included.",
        );
        metric(
            "mediator_punch_timed_total",
            "counter",
            "PunchNow messages sent to matched clients.",
        );
        let _ = writeln!(out, "mediator_connections {}", self.connections_open());
        let _ = writeln!(
            out,
            "mediator_relay_sessions {}",
            self.relay_sessions_open()
        );
        for (name, value) in [
            ("mediator_relay_sessions_total", &self.relay_sessions_total),
            ("mediator_relay_refused_total", &self.relay_refused_total),
            ("mediator_relay_bytes_total", &self.relay_bytes_total),
            ("mediator_punch_timed_total", &self.punch_timed_total),
        ] {
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "mediator_connections_total {}",
            self.connections_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "mediator_waiting_rooms {waiting_rooms}");
        let _ = writeln!(out, "mediator_group_members {group_members}");
        let _ = writeln!(out, "mediator_room_store_up {}", u8::from(store_up));
        let _ = writeln!(
            out,
            "mediator_matches_total {}",
            self.matches_total.load(Ordering::Relaxed)
        );
        for (code, count) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "mediator_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        for (limit, count) in Limit::ALL.iter().zip(&self.rejected) {
            let _ = writeln!(
                out,
                "mediator_rejected_total{{limit=\"{}\"}} {}",
                limit.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Longest request head read; anything longer gets a 431.
const MAX_REQUEST: usize = 4096;
/// A scrape must be read and answered within this.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait in the accept queue.
const MAX_SCRAPES: usize = 16;

/// What the responder asks the server for.
pub trait Status: Send + Sync + 'static {
    /// The `/metrics` body.
    fn metrics(&self) -> String;
    /// Why the mediator cannot open rooms now, if it cannot (`/health` answers 503).
    fn trouble(&self) -> Option<String>;
}

/// Serves `GET /metrics` and `GET /health` on `listener` until `cancel` fires.
pub async fn serve(listener: TcpListener, status: impl Status, cancel: CancellationToken) {
    let render: Arc<dyn Status> = Arc::new(status);
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
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
                let render = render.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &*render)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head (bounded) and writes one response.
async fn answer(mut stream: TcpStream, status: &dyn Status) {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut used = 0;
    let complete = loop {
        if used == buf.len() {
            break false;
        }
        match stream.read(&mut buf[used..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => used += n,
        }
        if buf[..used].windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
    };
    let head = &buf[..used];
    let (status, body) = if !complete {
        ("431 Request Header Fields Too Large", String::new())
    } else if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        ("200 OK", status.metrics())
    } else if head.starts_with(b"GET /health ") || head.starts_with(b"GET /health?") {
        match status.trouble() {
            None => ("200 OK", "ok\n".to_owned()),
            Some(why) => ("503 Service Unavailable", format!("{why}\n")),
        }
    } else if head.starts_with(b"GET ") {
        ("404 Not Found", "try /metrics or /health\n".to_owned())
    } else {
        ("405 Method Not Allowed", String::new())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
