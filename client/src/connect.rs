//! Reaching the peer: the host accepts and judges incoming connections, the joiner
//! races every candidate address with backoff; both end with a confirmed
//! [`wire::Session`] on one TCP stream.
//!
//! Every way to reach the peer is a [`Candidate`] with a [`Path`]; hole punching
//! and relaying will arrive as more candidates feeding the same race.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::rngs::OsRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::Framed;
use wire::handshake::{HostHandshake, JoinerHandshake, JoinerHelloSent};
use wire::{FrameCodec, HandshakeError, Link, PeerHandshake, Session};

use crate::exit::ClientError;
use crate::rendezvous::Matched;

/// A TCP stream framed for the peer link.
pub type PeerFramed = Framed<TcpStream, FrameCodec>;

/// How long one TCP connect attempt may take.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(3);
/// How long one side may take to answer a handshake message.
const HANDSHAKE_STEP: Duration = Duration::from_secs(10);
/// Most handshakes the host judges at once; later connections wait in the backlog.
const MAX_PENDING_HANDSHAKES: usize = 8;
/// Backoff between joiner rounds: starts here, doubles, stops growing at the cap.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// How the two clients reach each other; shown in the status and `peers.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// To the address the mediator observed: no NAT in between, or a forwarded port.
    Direct,
    /// To an address on the peer's own network interface.
    Lan,
    /// Through a TCP hole punched with the mediator's help.
    Punched,
    /// Through the mediator's relay (ciphertext only).
    Relay,
}

impl Path {
    /// The word used on screen and in `peers.txt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Lan => "lan",
            Path::Punched => "punched",
            Path::Relay => "relay",
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One way to reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    pub path: Path,
}

/// The host's candidates, from what the mediator announced: its observed address
/// with its listen port, then each advertised local address (at most 8, no repeats).
pub fn candidates(matched: &Matched) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    if matched.listen_port != 0 {
        out.push(Candidate {
            addr: SocketAddr::new(matched.observed_addr.ip(), matched.listen_port),
            path: Path::Direct,
        });
    }
    for addr in matched
        .local_addrs
        .iter()
        .take(wire::rendezvous::MAX_LOCAL_ADDRS)
    {
        if addr.port() != 0 && !addr.ip().is_unspecified() && !out.iter().any(|c| c.addr == *addr) {
            out.push(Candidate {
                addr: *addr,
                path: Path::Lan,
            });
        }
    }
    out
}

/// How the host labels a joiner that connected from `from`.
pub fn path_of_incoming(from: IpAddr, matched: &Matched) -> Path {
    if canonical(from) == canonical(matched.observed_addr.ip()) {
        Path::Direct
    } else if matched
        .local_addrs
        .iter()
        .any(|a| canonical(a.ip()) == canonical(from))
    {
        Path::Lan
    } else {
        Path::Direct
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A confirmed peer connection.
#[derive(Debug)]
pub struct Connected {
    pub framed: PeerFramed,
    pub addr: SocketAddr,
    pub path: Path,
    pub session: Session,
}

async fn send_hs(framed: &mut PeerFramed, msg: &PeerHandshake) -> Result<(), String> {
    let payload = wire::encode(msg).map_err(|e| e.to_string())?;
    timeout(HANDSHAKE_STEP, framed.send(payload.as_slice()))
        .await
        .map_err(|_| "peer stopped reading".to_string())?
        .map_err(|e| e.to_string())
}

async fn recv_hs(framed: &mut PeerFramed) -> Result<PeerHandshake, String> {
    match timeout(HANDSHAKE_STEP, framed.next()).await {
        Err(_) => Err("no handshake message in time".into()),
        Ok(None) => Err("connection closed during the handshake".into()),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(Some(Ok(frame))) => wire::decode(&frame).map_err(|e| e.to_string()),
    }
}

/// What became of one incoming connection at the host.
enum HostAttempt {
    Done(Box<Connected>),
    Stranger(SocketAddr, String),
    Failed(SocketAddr, String),
    KeysDiffer,
}

/// Accepts connections until one completes the handshake with the announced peer.
/// Strangers are sent `Reject` and dropped; `on_stranger` hears about each.
pub async fn host(
    listener: &TcpListener,
    handshake: HostHandshake,
    matched: &Matched,
    deadline: Instant,
    mut on_stranger: impl FnMut(SocketAddr, &str),
) -> Result<Connected, ClientError> {
    let handshake = Arc::new(handshake);
    let mut attempts: JoinSet<HostAttempt> = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if attempts.len() < MAX_PENDING_HANDSHAKES => {
                let (stream, from) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let handshake = Arc::clone(&handshake);
                let path = path_of_incoming(from.ip(), matched);
                attempts.spawn(judge_incoming(stream, from, path, handshake));
            }
            Some(joined) = attempts.join_next() => match joined {
                Ok(HostAttempt::Done(conn)) => return Ok(*conn),
                Ok(HostAttempt::Stranger(from, why)) => on_stranger(from, &why),
                Ok(HostAttempt::Failed(from, why)) => {
                    tracing::debug!(peer = %from, reason = %why, "incoming handshake failed");
                }
                Ok(HostAttempt::KeysDiffer) => return Err(ClientError::KeysDiffer),
                Err(e) => tracing::warn!(error = %e, "handshake task failed"),
            },
            () = tokio::time::sleep_until(deadline) => {
                return Err(ClientError::PeerUnreachable(format!(
                    "{} did not connect within the connect timeout. They may be behind a firewall \
                     that blocks outgoing connections, or our listening port ({}) is not reachable \
                     from their network: try --listen with a forwarded port and --advertise.",
                    wire::sanitize_for_terminal(&matched.peer_name),
                    listener.local_addr().map(|a| a.port()).unwrap_or(0),
                )));
            }
        }
    }
}

async fn judge_incoming(
    stream: TcpStream,
    from: SocketAddr,
    path: Path,
    handshake: Arc<HostHandshake>,
) -> HostAttempt {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
    let hello = match recv_hs(&mut framed).await {
        Ok(msg) => msg,
        Err(why) => return HostAttempt::Stranger(from, why),
    };
    let (state, confirm) = match handshake.on_peer_hello(hello, &mut OsRng) {
        Ok(pair) => pair,
        Err(e) => {
            let reason = e.to_string();
            let _ = send_hs(
                &mut framed,
                &PeerHandshake::Reject {
                    reason: reason.clone(),
                },
            )
            .await;
            return HostAttempt::Stranger(from, reason);
        }
    };
    if let Err(why) = send_hs(&mut framed, &confirm).await {
        return HostAttempt::Failed(from, why);
    }
    let reply = match recv_hs(&mut framed).await {
        Ok(msg) => msg,
        Err(why) => return HostAttempt::Failed(from, why),
    };
    match state.on_joiner_confirm(reply) {
        Ok(session) => HostAttempt::Done(Box::new(Connected {
            framed,
            addr: from,
            path,
            session,
        })),
        Err(HandshakeError::KeysDiffer) => HostAttempt::KeysDiffer,
        Err(e) => HostAttempt::Failed(from, e.to_string()),
    }
}

/// A joiner attempt that got as far as a `HostConfirm`.
struct Reached {
    framed: PeerFramed,
    candidate: Candidate,
    state: JoinerHelloSent,
    confirm: PeerHandshake,
}

/// Tries every candidate in parallel, in rounds with backoff, until one answers
/// our `PeerHello` with a `HostConfirm` or `deadline` passes. The first to answer
/// wins; the rest are dropped before we confirm, so host and joiner always settle
/// on the same connection.
pub async fn join(
    candidates: &[Candidate],
    handshake: &JoinerHandshake,
    deadline: Instant,
    peer_name: &str,
) -> Result<Connected, ClientError> {
    if candidates.is_empty() {
        return Err(ClientError::PeerUnreachable(format!(
            "{} announced no address to connect to",
            wire::sanitize_for_terminal(peer_name)
        )));
    }
    let mut backoff = BACKOFF_START;
    let mut last_errors: Vec<String> = Vec::new();
    loop {
        let round_started = Instant::now();
        let mut attempts: JoinSet<Result<Reached, String>> = JoinSet::new();
        for &candidate in candidates {
            let (state, hello) = handshake.hello(&mut OsRng);
            attempts.spawn(reach(candidate, state, hello, deadline));
        }
        last_errors.clear();
        while let Some(joined) = attempts.join_next().await {
            match joined {
                Ok(Ok(reached)) => {
                    attempts.abort_all();
                    return confirm(reached, peer_name).await;
                }
                Ok(Err(why)) => last_errors.push(why),
                Err(e) => last_errors.push(e.to_string()),
            }
        }
        let next = (round_started + backoff).max(Instant::now());
        if next >= deadline {
            let tried: Vec<String> = candidates.iter().map(|c| c.addr.to_string()).collect();
            return Err(ClientError::PeerUnreachable(format!(
                "could not reach {} at any of {} ({}). Their firewall may block incoming \
                 connections: they can forward a port and pass --listen PORT --advertise IP:PORT.",
                wire::sanitize_for_terminal(peer_name),
                tried.join(", "),
                last_errors.join("; "),
            )));
        }
        tokio::time::sleep_until(next).await;
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

/// What a handshake failure means for the person, and its exit code.
pub fn handshake_failure(e: HandshakeError, peer_name: &str) -> ClientError {
    match e {
        HandshakeError::KeysDiffer | HandshakeError::Rejected(_) | HandshakeError::WrongPeer(_) => {
            ClientError::KeysDiffer
        }
        HandshakeError::BadPeerPublic(why) => ClientError::PeerUnreachable(format!(
            "the key announced for {} is invalid ({why}); the mediator may be faulty or hostile",
            wire::sanitize_for_terminal(peer_name)
        )),
        other => ClientError::PeerUnreachable(other.to_string()),
    }
}

async fn reach(
    candidate: Candidate,
    state: JoinerHelloSent,
    hello: PeerHandshake,
    deadline: Instant,
) -> Result<Reached, String> {
    let stream = match timeout_at(
        deadline.min(Instant::now() + CONNECT_ATTEMPT),
        TcpStream::connect(candidate.addr),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("{}: {e}", candidate.addr)),
        Err(_) => return Err(format!("{}: no answer", candidate.addr)),
    };
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
    send_hs(&mut framed, &hello)
        .await
        .map_err(|e| format!("{}: {e}", candidate.addr))?;
    let confirm = recv_hs(&mut framed)
        .await
        .map_err(|e| format!("{}: {e}", candidate.addr))?;
    Ok(Reached {
        framed,
        candidate,
        state,
        confirm,
    })
}

async fn confirm(reached: Reached, peer_name: &str) -> Result<Connected, ClientError> {
    let Reached {
        mut framed,
        candidate,
        state,
        confirm,
    } = reached;
    let (session, reply) = state
        .on_host_confirm(confirm)
        .map_err(|e| handshake_failure(e, peer_name))?;
    send_hs(&mut framed, &reply).await.map_err(|why| {
        ClientError::ConnectionLost(format!("lost the peer while confirming keys: {why}"))
    })?;
    Ok(Connected {
        framed,
        addr: candidate.addr,
        path: candidate.path,
        session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::Role;

    fn matched(observed: &str, port: u16, locals: &[&str]) -> Matched {
        Matched {
            role: Role::Host,
            peer_name: "bob".into(),
            public: vec![],
            observed_addr: observed.parse().unwrap(),
            listen_port: port,
            local_addrs: locals.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn candidates_put_observed_first_and_skip_repeats() {
        let m = matched(
            "203.0.113.5:40000",
            5000,
            &["192.168.1.9:5000", "203.0.113.5:5000", "0.0.0.0:5000"],
        );
        let c = candidates(&m);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].addr, "203.0.113.5:5000".parse().unwrap());
        assert_eq!(c[0].path, Path::Direct);
        assert_eq!(c[1].path, Path::Lan);
    }

    #[test]
    fn incoming_path() {
        let m = matched("203.0.113.5:1", 0, &["192.168.1.9:5000"]);
        assert_eq!(
            path_of_incoming("203.0.113.5".parse().unwrap(), &m),
            Path::Direct
        );
        assert_eq!(
            path_of_incoming("192.168.1.9".parse().unwrap(), &m),
            Path::Lan
        );
        assert_eq!(
            path_of_incoming("::ffff:203.0.113.5".parse().unwrap(), &m),
            Path::Direct
        );
    }
}
