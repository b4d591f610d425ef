//! A client of the local API's Unix socket (docs/api.md) for tests: one JSON
//! object per line each way.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::WAIT;

/// Where a test client's API socket is, given its `--profile`.
pub fn socket_path(profile: &Path) -> PathBuf {
    profile.join("api.sock")
}

/// One connection to the API.
pub struct ApiClient {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    /// Everything read so far.
    pub seen: Vec<Value>,
    next_id: u64,
}

impl ApiClient {
    /// Connects, waiting (up to [`WAIT`]) for the socket to appear.
    pub async fn connect(path: &Path) -> ApiClient {
        let deadline = tokio::time::Instant::now() + WAIT;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "cannot connect to the API at {}: {e}",
                        path.display()
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        let (read, write) = stream.into_split();
        ApiClient {
            lines: BufReader::new(read).lines(),
            write,
            seen: Vec::new(),
            next_id: 1,
        }
    }

    /// The next line as JSON; `None` when the connection ended.
    pub async fn next(&mut self) -> Option<Value> {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no line from the API within {WAIT:?}; saw {:?}", self.seen))
            .ok()??;
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the API sent a line that is not JSON: {line:?}: {e}"));
        self.seen.push(value.clone());
        Some(value)
    }

    /// Waits for the next event named `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            match self.next().await {
                Some(v) if v["event"] == kind => return v,
                Some(_) => {}
                None => panic!(
                    "the API closed before a `{kind}` event; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for an event for which `pred` holds.
    pub async fn expect_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.next().await {
                Some(v) if pred(&v) => return v,
                Some(_) => {}
                None => panic!("the API closed before {what}; saw {:?}", self.seen),
            }
        }
    }

    /// Sends one command as it is (no id added).
    pub async fn send_raw(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the API");
    }

    /// Sends `command` with a fresh `id` and returns its reply.
    pub async fn command(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = id.into();
        self.send_raw(&command.to_string()).await;
        self.expect_where("the reply", |v| v["reply"] == id).await
    }

    /// [`ApiClient::command`], which must succeed.
    pub async fn ok(&mut self, command: Value) -> Value {
        let reply = self.command(command.clone()).await;
        assert_eq!(reply["ok"], true, "{command} was refused: {reply}");
        reply
    }
}
