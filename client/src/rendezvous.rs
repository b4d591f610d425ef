//! The client's side of the mediator link (docs/protocol.md §4): connect, send
//! `Hello`, keep the link alive with `Ping` while waiting, and return the match.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use wire::{ClientMsg, FrameCodec, Link, MediatorMsg, Role};

use crate::cli::split_server;
use crate::exit::ClientError;

/// How long to try to open the mediator connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting client pings (the mediator drops clients silent for 90 s;
/// the protocol asks for one at least every 60 s).
const PING_EVERY: Duration = Duration::from_secs(20);
/// How long the mediator may stay silent after a ping before we call it lost.
const PONG_GRACE: Duration = Duration::from_secs(30);

/// The peer's details as the mediator announced them.
#[derive(Debug, Clone)]
pub struct Matched {
    pub role: Role,
    pub peer_name: String,
    pub public: Vec<u8>,
    pub observed_addr: SocketAddr,
    pub listen_port: u16,
    pub local_addrs: Vec<SocketAddr>,
}

/// An open connection to the mediator.
#[derive(Debug)]
pub struct MediatorLink {
    framed: Framed<TcpStream, FrameCodec>,
    server: String,
}

impl MediatorLink {
    /// Resolves `server` (HOST[:PORT]) and connects to the first address that answers.
    pub async fn connect(server: &str) -> Result<MediatorLink, ClientError> {
        let (host, port) = split_server(server).map_err(ClientError::Usage)?;
        let unreachable = |reason: String| ClientError::MediatorUnreachable {
            addr: format!("{host}:{port}"),
            reason,
        };
        let addrs: Vec<SocketAddr> = match timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => return Err(unreachable(format!("cannot resolve `{host}` ({e})"))),
            Err(_) => return Err(unreachable(format!("resolving `{host}` timed out"))),
        };
        let mut last = String::from("no address found");
        for addr in addrs {
            match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(MediatorLink {
                        framed: Framed::new(stream, FrameCodec::new(Link::Mediator)),
                        server: format!("{host}:{port}"),
                    });
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            }
        }
        Err(unreachable(last))
    }

    /// Our address on this connection: the interface that reaches the mediator.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.framed.get_ref().local_addr().ok()
    }

    async fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        let payload = wire::encode(msg).map_err(|e| ClientError::Internal(e.into()))?;
        self.framed
            .send(payload.as_slice())
            .await
            .map_err(|e| self.lost(&e.to_string()))
    }

    fn lost(&self, reason: &str) -> ClientError {
        ClientError::MediatorUnreachable {
            addr: self.server.clone(),
            reason: format!("connection lost ({reason})"),
        }
    }

    /// Sends `hello` and waits for the match, pinging while the room is open.
    /// `on_waiting` is called once with the room's lifetime when we are first.
    pub async fn rendezvous(
        mut self,
        hello: ClientMsg,
        room: &str,
        mut on_waiting: impl FnMut(u32),
    ) -> Result<Matched, ClientError> {
        self.send(&hello).await?;
        let mut next_ping = Instant::now() + PING_EVERY;
        let mut last_heard = Instant::now();
        loop {
            let deadline = next_ping.min(last_heard + PING_EVERY + PONG_GRACE);
            let frame = match tokio::time::timeout_at(deadline, self.framed.next()).await {
                Err(_) if Instant::now() >= last_heard + PING_EVERY + PONG_GRACE => {
                    return Err(self.lost("the mediator stopped answering"));
                }
                Err(_) => {
                    self.send(&ClientMsg::Ping).await?;
                    next_ping = Instant::now() + PING_EVERY;
                    continue;
                }
                Ok(None) => return Err(self.lost("closed by the mediator")),
                Ok(Some(Err(e))) => return Err(self.lost(&e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            last_heard = Instant::now();
            let msg: MediatorMsg =
                wire::decode(&frame).map_err(|e| self.lost(&format!("unreadable message: {e}")))?;
            match msg {
                MediatorMsg::Waiting { expires_in_secs } => on_waiting(expires_in_secs),
                MediatorMsg::Pong => {}
                MediatorMsg::Matched {
                    role,
                    peer_name,
                    public,
                    observed_addr,
                    listen_port,
                    local_addrs,
                } => {
                    return Ok(Matched {
                        role,
                        peer_name,
                        public,
                        observed_addr,
                        listen_port,
                        local_addrs,
                    })
                }
                MediatorMsg::Error { code, message } => {
                    let message = wire::sanitize_for_terminal(&message).into_owned();
                    return Err(ClientError::from_mediator(code, &message, room));
                }
            }
        }
    }
}
