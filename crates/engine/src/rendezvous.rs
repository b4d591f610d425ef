//! The client's side of the mediator link (docs/protocol.md §4, §12): connect from
//! the run's one port, send `Hello`, keep the link alive with `Ping` while
//! waiting, return the match; then answer the punch probe and pass on `PunchNow`;
//! and open relay connections.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::codec::{Framed, FramedParts};
use wire::{ClientMsg, ErrorCode, FrameCodec, Link, MediatorMsg, PathLabel, RelayOffer, Role};

use crate::config::split_server;
use crate::error::ClientError;
use crate::ports::{self, LocalPort};

/// How long to try to open the mediator connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiting client pings (the mediator drops clients silent for 90 s;
/// the protocol asks for one at least every 60 s).
const PING_EVERY: Duration = Duration::from_secs(20);
/// How long the mediator may stay silent after a ping before we call it lost.
const PONG_GRACE: Duration = Duration::from_secs(30);

/// When a waiting link last heard the mediator and when it pings next.
#[derive(Debug)]
struct Keepalive {
    next_ping: Instant,
    last_heard: Instant,
}

impl Keepalive {
    fn new() -> Keepalive {
        let now = Instant::now();
        Keepalive {
            next_ping: now + PING_EVERY,
            last_heard: now,
        }
    }
}

/// A presence connection's pings ([`MediatorLink::next_ring`]).
#[derive(Debug)]
pub struct PresenceKeepalive(Keepalive);

/// The peer's details as the mediator announced them.
#[derive(Debug, Clone)]
pub struct Matched {
    pub role: Role,
    pub peer_name: String,
    pub public: Vec<u8>,
    pub observed_addr: SocketAddr,
    pub listen_port: u16,
    pub local_addrs: Vec<SocketAddr>,
    /// Our own address as the mediator saw it.
    pub your_addr: SocketAddr,
    pub relay: RelayOffer,
}

/// An open connection to the mediator.
#[derive(Debug)]
pub struct MediatorLink {
    framed: Framed<TcpStream, FrameCodec>,
    server: String,
}

/// Resolves `HOST[:PORT]`, bounded in time.
async fn resolve(server: &str) -> Result<(String, Vec<SocketAddr>), ClientError> {
    let (host, port) = split_server(server).map_err(ClientError::Usage)?;
    let name = format!("{host}:{port}");
    let unreachable = |reason: String| ClientError::MediatorUnreachable {
        addr: name.clone(),
        reason,
    };
    let looked_up = timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await;
    match looked_up {
        Ok(Ok(addrs)) => Ok((name, addrs.collect())),
        Ok(Err(e)) => Err(unreachable(format!("cannot resolve `{host}` ({e})"))),
        Err(_) => Err(unreachable(format!("resolving `{host}` timed out"))),
    }
}

impl MediatorLink {
    /// Resolves `server` (HOST[:PORT]) and connects to the first address that
    /// answers, from the run's port when it can reach that address (so the
    /// mediator observes the mapping the peer will dial), else from any port.
    pub async fn connect(server: &str, port: &LocalPort) -> Result<MediatorLink, ClientError> {
        let (name, addrs) = resolve(server).await?;
        let mut last = String::from("no address found");
        for addr in addrs {
            let attempt = match port.connect(addr, CONNECT_TIMEOUT).await {
                // Our port to this address is still taken (a previous link's
                // TIME_WAIT, which `close` avoids): any port beats none.
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                    timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                        .await
                        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                }
                other => other,
            };
            match attempt {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(MediatorLink {
                        framed: Framed::new(stream, FrameCodec::new(Link::Mediator)),
                        server: name,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    last = format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(ClientError::MediatorUnreachable {
            addr: name,
            reason: last,
        })
    }

    /// Like [`MediatorLink::connect`], from any port (relay connections).
    async fn connect_any(server: &str) -> Result<MediatorLink, ClientError> {
        let (name, addrs) = resolve(server).await?;
        let mut last = String::from("no address found");
        for addr in addrs {
            match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(MediatorLink {
                        framed: Framed::new(stream, FrameCodec::new(Link::Mediator)),
                        server: name,
                    });
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            }
        }
        Err(ClientError::MediatorUnreachable {
            addr: name,
            reason: last,
        })
    }

    /// Asks for a nameplate for a fresh room code (`Allocate`, §13.2).
    pub async fn allocate(&mut self) -> Result<u32, ClientError> {
        self.send(&ClientMsg::Allocate).await?;
        match self.answer("Allocate").await? {
            MediatorMsg::Allocated { nameplate } => Ok(nameplate),
            other => Err(self.lost(&format!("unexpected {} after Allocate", kind(&other)))),
        }
    }

    /// The answer to the request `what` just sent: the next message but
    /// `Pong`s (at most a few), within the answer deadline; a refusal is the
    /// mediator's error, with advice.
    async fn answer(&mut self, what: &str) -> Result<MediatorMsg, ClientError> {
        for _ in 0..MAX_MESSAGES_AFTER_MATCH {
            let frame = match timeout(CONNECT_TIMEOUT * 2, self.framed.next()).await {
                Err(_) => return Err(self.lost(&format!("no answer to {what}"))),
                Ok(None) => return Err(self.lost("closed by the mediator")),
                Ok(Some(Err(e))) => return Err(self.lost(&e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            match wire::decode::<MediatorMsg>(&frame) {
                Ok(MediatorMsg::Pong) => {}
                Ok(MediatorMsg::Error { code, message }) => {
                    let message = wire::sanitize_for_terminal(&message).into_owned();
                    return Err(ClientError::from_mediator(code, &message, ""));
                }
                Ok(answer) => return Ok(answer),
                Err(e) => return Err(self.lost(&format!("unreadable message: {e}"))),
            }
        }
        Err(self.lost(&format!("no answer to {what}")))
    }

    /// Opens a presence connection (docs/protocol.md §21) that waits under
    /// `tags`: every batch is confirmed by `Present` before this returns.
    pub async fn wait_for_contacts(
        server: &str,
        tags: &[[u8; 32]],
    ) -> Result<(MediatorLink, PresenceKeepalive), ClientError> {
        let mut link = MediatorLink::connect_any(server).await?;
        for batch in tags.chunks(wire::MAX_PRESENCE_BATCH) {
            link.send(&ClientMsg::Presence {
                tags: batch.to_vec(),
            })
            .await?;
            match link.answer("Presence").await? {
                MediatorMsg::Present { .. } => {}
                other => {
                    return Err(link.lost(&format!("unexpected {} after Presence", kind(&other))))
                }
            }
        }
        Ok((link, PresenceKeepalive(Keepalive::new())))
    }

    /// On a presence connection: the tag of the next `Ring`, pinging meanwhile.
    pub async fn next_ring(
        &mut self,
        alive: &mut PresenceKeepalive,
    ) -> Result<[u8; 32], ClientError> {
        loop {
            match self.next_pinging(&mut alive.0).await? {
                MediatorMsg::Ring { tag } => return Ok(tag),
                MediatorMsg::Pong | MediatorMsg::Present { .. } => {}
                MediatorMsg::Error { code, message } => {
                    let message = wire::sanitize_for_terminal(&message).into_owned();
                    return Err(ClientError::from_mediator(code, &message, ""));
                }
                other => {
                    return Err(self.lost(&format!(
                        "unexpected {} on a presence connection",
                        kind(&other)
                    )))
                }
            }
        }
    }

    /// Opens a connection for mailbox requests (docs/protocol.md §22.3).
    pub async fn for_mailbox(server: &str) -> Result<MediatorLink, ClientError> {
        MediatorLink::connect_any(server).await
    }

    /// Sends one mailbox request and returns its answer (a refusal is the
    /// mediator's error, with advice).
    pub async fn mailbox_request(&mut self, msg: &ClientMsg) -> Result<MediatorMsg, ClientError> {
        self.send(msg).await?;
        self.answer("a mailbox request").await
    }

    /// Our address on this connection: the interface that reaches the mediator.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.framed.get_ref().local_addr().ok()
    }

    /// Sends `msg`; a mediator that stops reading (its buffers full) is lost
    /// after [`CONNECT_TIMEOUT`], like one that stops answering.
    async fn send(&mut self, msg: &ClientMsg) -> Result<(), ClientError> {
        let payload = wire::encode(msg).map_err(|e| ClientError::Internal(e.into()))?;
        match timeout(CONNECT_TIMEOUT, self.framed.send(payload.as_slice())).await {
            Ok(sent) => sent.map_err(|e| self.lost(&e.to_string())),
            Err(_) => Err(self.lost("the mediator stopped reading")),
        }
    }

    /// The next message, sending `Ping` every [`PING_EVERY`] of silence; the
    /// link is lost when the mediator stays silent past [`PONG_GRACE`] after that.
    async fn next_pinging(&mut self, alive: &mut Keepalive) -> Result<MediatorMsg, ClientError> {
        loop {
            let give_up = alive.last_heard + PING_EVERY + PONG_GRACE;
            let frame =
                match tokio::time::timeout_at(alive.next_ping.min(give_up), self.framed.next())
                    .await
                {
                    Err(_) if Instant::now() >= give_up => {
                        return Err(self.lost("the mediator stopped answering"));
                    }
                    Err(_) => {
                        self.send(&ClientMsg::Ping).await?;
                        alive.next_ping = Instant::now() + PING_EVERY;
                        continue;
                    }
                    Ok(None) => return Err(self.lost("closed by the mediator")),
                    Ok(Some(Err(e))) => return Err(self.lost(&e.to_string())),
                    Ok(Some(Ok(frame))) => frame,
                };
            alive.last_heard = Instant::now();
            return wire::decode(&frame)
                .map_err(|e| self.lost(&format!("unreadable message: {e}")));
        }
    }

    fn lost(&self, reason: &str) -> ClientError {
        ClientError::MediatorUnreachable {
            addr: self.server.clone(),
            reason: format!("connection lost ({reason})"),
        }
    }

    /// Sends `hello` and waits for the match, pinging while the room is open.
    /// `on_waiting` is called once with the room's lifetime when we are first.
    /// The link comes back with the match: it times the punch (§12.2).
    pub async fn rendezvous(
        mut self,
        hello: ClientMsg,
        room: &str,
        mut on_waiting: impl FnMut(u32),
    ) -> Result<(Matched, MediatorLink), ClientError> {
        self.send(&hello).await?;
        let mut alive = Keepalive::new();
        loop {
            match self.next_pinging(&mut alive).await? {
                MediatorMsg::Waiting { expires_in_secs } => on_waiting(expires_in_secs),
                MediatorMsg::Pong => {}
                MediatorMsg::Matched {
                    role,
                    peer_name,
                    public,
                    observed_addr,
                    listen_port,
                    local_addrs,
                    your_addr,
                    relay,
                } => {
                    let matched = Matched {
                        role,
                        peer_name,
                        public,
                        observed_addr: ports::unmap(observed_addr),
                        listen_port,
                        local_addrs,
                        your_addr: ports::unmap(your_addr),
                        relay,
                    };
                    return Ok((matched, self));
                }
                MediatorMsg::Error { code, message } => {
                    let message = wire::sanitize_for_terminal(&message).into_owned();
                    return Err(ClientError::from_mediator(code, &message, room));
                }
                other => {
                    return Err(self.lost(&format!("unexpected {} before Matched", kind(&other))))
                }
            }
        }
    }

    /// Hands the link to a task that answers the punch probe and reports
    /// `PunchNow` on the returned [`PunchWatch`], and holds the link (so the
    /// mediator sees us) until the [`PathReport`] sends the session's path
    /// (`SessionPath`, §4) or is dropped unsent.
    pub fn watch_punch(self) -> (PunchWatch, PathReport) {
        // However the link ends (the report sent, the race lost), it closes with
        // a reset, keeping our port's 4-tuple to the mediator out of TIME_WAIT for
        // the next reconnect.
        let _ = socket2::SockRef::from(self.framed.get_ref()).set_linger(Some(Duration::ZERO));
        let (now_tx, now_rx) = oneshot::channel();
        let (path_tx, path_rx) = oneshot::channel();
        tokio::spawn(self.punch_loop(now_tx, path_rx));
        (PunchWatch { now: Some(now_rx) }, PathReport(Some(path_tx)))
    }

    async fn punch_loop(mut self, tx: oneshot::Sender<()>, mut path: oneshot::Receiver<PathLabel>) {
        let mut tx = Some(tx);
        // PunchPing, PunchNow and the odd Pong: a handful, never a stream.
        for _ in 0..MAX_MESSAGES_AFTER_MATCH {
            let frame = tokio::select! {
                reported = &mut path => {
                    // Unsent (the race was dropped): just close.
                    if let Ok(path) = reported {
                        let _ = timeout(REPORT_WAIT, self.report(path)).await;
                    }
                    return;
                }
                frame = timeout(PUNCH_HOLD, self.framed.next()) => frame,
            };
            let frame = match frame {
                Ok(Some(Ok(frame))) => frame,
                _ => break,
            };
            match wire::decode::<MediatorMsg>(&frame) {
                Ok(MediatorMsg::PunchPing { nonce }) => {
                    if self.send(&ClientMsg::PunchPong { nonce }).await.is_err() {
                        break;
                    }
                }
                Ok(MediatorMsg::PunchNow) => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(MediatorMsg::Pong) => {}
                _ => break,
            }
        }
        // Returning drops the sender (no PunchNow will come) and closes the link;
        // a path known after that goes unreported.
    }

    /// Sends `SessionPath` and waits for the mediator to close the link, which
    /// it does once it has counted the report: closing first could lose the
    /// report to our reset. What else arrives meanwhile is ignored.
    async fn report(&mut self, path: PathLabel) {
        if self.send(&ClientMsg::SessionPath { path }).await.is_err() {
            return;
        }
        for _ in 0..MAX_MESSAGES_AFTER_MATCH {
            if !matches!(self.framed.next().await, Some(Ok(_))) {
                return;
            }
        }
    }
}

/// Most mediator messages read after `Matched`.
const MAX_MESSAGES_AFTER_MATCH: usize = 16;
/// How long the link is kept after `Matched` at most (the mediator's `punch_hold`).
const PUNCH_HOLD: Duration = Duration::from_secs(60);
/// How long a path report may take, close included: the mediator reads it once
/// its punch timing is over (2 s probe, 2 s for the peer's figure, 1 s delay).
const REPORT_WAIT: Duration = Duration::from_secs(6);

/// The mediator link after `Matched`: tells the dials when to punch.
#[derive(Debug)]
pub struct PunchWatch {
    now: Option<oneshot::Receiver<()>>,
}

impl PunchWatch {
    /// A watch that says "now" at once, holding no link: group rooms (§19.1),
    /// where the mediator announces both members of a pair at the same moment
    /// and times nothing, so both dial as soon as they hear of each other.
    pub fn immediate() -> PunchWatch {
        PunchWatch { now: None }
    }

    /// Resolves when the mediator says `PunchNow`, or after `fallback` if it never
    /// does (a mediator that does not time punches, or a lost link).
    pub async fn punch_now(&mut self, fallback: Duration) {
        let Some(rx) = self.now.take() else { return };
        let _ = timeout(fallback, rx).await;
    }
}

/// Where the path a session took goes, once known: to the task holding the
/// mediator link, which sends it as `SessionPath` (docs/protocol.md §4). One
/// report per link; a two-party link closes when this is sent or dropped.
#[derive(Debug)]
pub struct PathReport(Option<oneshot::Sender<PathLabel>>);

impl PathReport {
    /// Reports `path`; later calls do nothing.
    pub fn send(&mut self, path: PathLabel) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(path);
        }
    }
}

fn kind(msg: &MediatorMsg) -> &'static str {
    match msg {
        MediatorMsg::Waiting { .. } => "Waiting",
        MediatorMsg::Matched { .. } => "Matched",
        MediatorMsg::Pong => "Pong",
        MediatorMsg::Error { .. } => "Error",
        MediatorMsg::PunchPing { .. } => "PunchPing",
        MediatorMsg::PunchNow => "PunchNow",
        MediatorMsg::RelayReady => "RelayReady",
        MediatorMsg::Allocated { .. } => "Allocated",
        MediatorMsg::GroupJoined { .. } => "GroupJoined",
        MediatorMsg::Member { .. } => "Member",
        MediatorMsg::MemberLeft { .. } => "MemberLeft",
        MediatorMsg::Present { .. } => "Present",
        MediatorMsg::Ring { .. } => "Ring",
        MediatorMsg::MailboxOpened { .. } => "MailboxOpened",
        MediatorMsg::MailboxStored { .. } => "MailboxStored",
        MediatorMsg::MailboxItems { .. } => "MailboxItems",
        MediatorMsg::MailboxRemoved { .. } => "MailboxRemoved",
    }
}

/// Our place in a group room, from `GroupJoined` (§19.1).
#[derive(Debug, Clone, Copy)]
pub struct GroupPlace {
    pub member: u32,
    pub present: u32,
    pub max_members: u32,
}

/// What the mediator tells a group member after `GroupJoined`.
#[derive(Debug)]
pub enum RoomNotice {
    /// Another member to link with, in `matched.role`.
    Member {
        member: u32,
        matched: Matched,
    },
    Left {
        member: u32,
    },
    /// The mediator link ended (the room goes on over the peer links).
    Lost(ClientError),
}

/// Most notices queued towards the mesh; the watcher waits when it is full.
const NOTICE_QUEUE: usize = 64;

/// A group room joined: our place, the room's notices, the task watching the
/// link, and where our path report goes (the first link's, §4).
#[derive(Debug)]
pub struct GroupJoin {
    pub place: GroupPlace,
    pub notices: mpsc::Receiver<RoomNotice>,
    pub watcher: JoinHandle<()>,
    pub report: PathReport,
}

impl MediatorLink {
    /// Sends `GroupHello` and waits for `GroupJoined`; then a task keeps the link
    /// alive with `Ping`s, passes the room's notices on and sends our path
    /// report when it comes, until the link ends.
    pub async fn join_group(
        mut self,
        hello: ClientMsg,
        room: &str,
    ) -> Result<GroupJoin, ClientError> {
        self.send(&hello).await?;
        // One deadline for the answer, however many `Pong`s come before it.
        let deadline = Instant::now() + CONNECT_TIMEOUT * 2;
        let place = loop {
            let frame = match timeout_at(deadline, self.framed.next()).await {
                Err(_) => return Err(self.lost("no answer to GroupHello")),
                Ok(None) => return Err(self.lost("closed by the mediator")),
                Ok(Some(Err(e))) => return Err(self.lost(&e.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            match wire::decode::<MediatorMsg>(&frame) {
                Ok(MediatorMsg::GroupJoined {
                    member,
                    present,
                    max_members,
                }) => {
                    break GroupPlace {
                        member,
                        present,
                        max_members,
                    }
                }
                Ok(MediatorMsg::Pong) => {}
                Ok(MediatorMsg::Error { code, message }) => {
                    let message = wire::sanitize_for_terminal(&message).into_owned();
                    return Err(ClientError::from_mediator(code, &message, room));
                }
                Ok(other) => {
                    return Err(self.lost(&format!("unexpected {} after GroupHello", kind(&other))))
                }
                Err(e) => return Err(self.lost(&format!("unreadable message: {e}"))),
            }
        };
        let (tx, rx) = mpsc::channel(NOTICE_QUEUE);
        let (path_tx, path_rx) = oneshot::channel();
        let room = room.to_owned();
        let task = tokio::spawn(async move {
            let end = self.watch_group(&tx, path_rx, &room).await;
            let _ = tx.send(RoomNotice::Lost(end)).await;
        });
        Ok(GroupJoin {
            place,
            notices: rx,
            watcher: task,
            report: PathReport(Some(path_tx)),
        })
    }

    /// The group watcher's loop; returns why the link ended.
    async fn watch_group(
        &mut self,
        tx: &mpsc::Sender<RoomNotice>,
        path: oneshot::Receiver<PathLabel>,
        room: &str,
    ) -> ClientError {
        let mut alive = Keepalive::new();
        // Taken when the report came (or can no longer come): one per link.
        let mut path = Some(path);
        loop {
            let next = tokio::select! {
                reported = async {
                    match path.as_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                } => {
                    path = None;
                    match reported {
                        Ok(path) => self.send(&ClientMsg::SessionPath { path }).await.map(|()| None),
                        Err(_) => Ok(None),
                    }
                }
                msg = self.next_pinging(&mut alive) => msg.map(Some),
            };
            let msg = match next {
                Ok(Some(msg)) => msg,
                Ok(None) => continue,
                Err(e) => return e,
            };
            let notice = match msg {
                MediatorMsg::Pong => continue,
                MediatorMsg::Member {
                    member,
                    role,
                    peer_name,
                    public,
                    observed_addr,
                    listen_port,
                    local_addrs,
                    your_addr,
                    relay,
                } => RoomNotice::Member {
                    member,
                    matched: Matched {
                        role,
                        peer_name,
                        public,
                        observed_addr: ports::unmap(observed_addr),
                        listen_port,
                        local_addrs,
                        your_addr: ports::unmap(your_addr),
                        relay,
                    },
                },
                MediatorMsg::MemberLeft { member } => RoomNotice::Left { member },
                MediatorMsg::Error { code, message } => {
                    let message = wire::sanitize_for_terminal(&message).into_owned();
                    return ClientError::from_mediator(code, &message, room);
                }
                other => return self.lost(&format!("unexpected {} in a group room", kind(&other))),
            };
            if tx.send(notice).await.is_err() {
                return self.lost("the room was left");
            }
        }
    }
}

/// Why a relay connection did not come up.
#[derive(Debug)]
pub enum RelayFailure {
    /// The mediator said no (token, relay off or full, the peer never came).
    Refused(ErrorCode, String),
    /// The network failed.
    Unreachable(String),
}

/// Opens a relay connection (§12.3) to `server` with `token` and waits, up to
/// `within`, for `RelayReady`. The returned stream carries peer frames with the
/// relay's end notice understood.
pub async fn relay_join(
    server: &str,
    token: [u8; 32],
    within: Duration,
) -> Result<Framed<TcpStream, FrameCodec>, RelayFailure> {
    let mut link = MediatorLink::connect_any(server)
        .await
        .map_err(|e| RelayFailure::Unreachable(e.to_string()))?;
    link.send(&ClientMsg::RelayJoin { token })
        .await
        .map_err(|e| RelayFailure::Unreachable(e.to_string()))?;
    let frame = match timeout(within, link.framed.next()).await {
        Err(_) => return Err(RelayFailure::Unreachable("the relay did not answer".into())),
        Ok(None) => return Err(RelayFailure::Unreachable("the relay closed".into())),
        Ok(Some(Err(e))) => return Err(RelayFailure::Unreachable(e.to_string())),
        Ok(Some(Ok(frame))) => frame,
    };
    match wire::decode::<MediatorMsg>(&frame) {
        Ok(MediatorMsg::RelayReady) => {
            let parts = link.framed.into_parts();
            let mut relayed = FramedParts::new::<&[u8]>(parts.io, FrameCodec::relayed());
            relayed.read_buf = parts.read_buf;
            Ok(Framed::from_parts(relayed))
        }
        Ok(MediatorMsg::Error { code, message }) => Err(RelayFailure::Refused(
            code,
            wire::sanitize_for_terminal(&message).into_owned(),
        )),
        Ok(other) => Err(RelayFailure::Unreachable(format!(
            "the relay sent {} instead of RelayReady",
            kind(&other)
        ))),
        Err(e) => Err(RelayFailure::Unreachable(format!(
            "unreadable relay answer: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::net::TcpListener;

    /// A mediator that answers the first request with nothing but a `Pong`
    /// every 300 ms, for a minute.
    async fn pong_only_mediator() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut framed = Framed::new(stream, FrameCodec::new(Link::Mediator));
            let _hello = framed.next().await;
            let pong = wire::encode(&MediatorMsg::Pong).unwrap();
            for _ in 0..200 {
                if framed.send(pong.as_slice()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn pongs_alone_do_not_keep_a_group_join_waiting() {
        let server = pong_only_mediator().await;
        let link = MediatorLink::for_mailbox(&server).await.unwrap();
        let joined = timeout(
            CONNECT_TIMEOUT * 4,
            link.join_group(ClientMsg::Ping, "4-quiet-harbor"),
        )
        .await
        .expect("the join gives up by its own deadline");
        match joined {
            Err(ClientError::MediatorUnreachable { reason, .. }) => {
                assert!(reason.contains("no answer to GroupHello"), "{reason}");
            }
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("joined a room that never answered"),
        }
    }
}
