//! A throwaway `redis-server` for the scale-out tests (docs/protocol.md §18): on a
//! free loopback port of ours, or on a NAT lab's public segment, with no
//! persistence, killed on drop. Without `redis-server` on PATH it panics with
//! what to install.

use std::process::Stdio;

use std::path::Path;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// What redis-server prints on stdout once it takes connections.
const READY: &str = "Ready to accept connections";

pub struct Redis {
    _child: Child,
    port: u16,
}

impl Redis {
    /// On a free port of 127.0.0.1 in our own network namespace.
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Redis::spawn(None, port).await
    }

    /// On 127.0.0.1:6379 inside namespace `netns` (a lab's public segment, where
    /// the lab's mediators run), which has nothing else listening.
    pub async fn start_in(netns: &str) -> Redis {
        Redis::spawn(Some(netns), 6379).await
    }

    async fn spawn(netns: Option<&str>, port: u16) -> Redis {
        let mut child = super::command_in(netns, Path::new("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server on PATH (Debian package redis-server; .ci/run installs it)");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        super::await_line(lines, READY, "redis-server").await;
        Redis {
            _child: child,
            port,
        }
    }

    /// The `--redis` argument for a mediator in the same namespace.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}
