//! Reaching the peer (docs/protocol.md §6, §12): every way to reach it feeds one
//! race — the joiner's dials to the host's announced addresses, both sides'
//! punch dials to the other's observed address from the run's one port at the
//! mediator's `PunchNow`, both listeners, and the mediator's relay: at once when
//! a NAT changed a port (punching is then unlikely; its connection still waits a
//! short grace before it may win), else after `--relay-after`. Handshake roles stay the ones the mediator assigned, whichever side's
//! SYN won; the first connection to finish the handshake wins.
//!
//! Against a lying mediator the host reveals its nonce (`HostConfirm`) at most
//! [`MAX_REVEALS`] times per match and the joiner sends `PeerHello` on one
//! connection at a time; strangers at the host's port get a short deadline and a
//! per-address cap, and connections from the announced addresses go first.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::rngs::OsRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::codec::Framed;
use wire::handshake::{HostHandshake, JoinerHandshake};
use wire::{FrameCodec, HandshakeError, Link, PathLabel, PeerHandshake, RelayOffer, Session};

use crate::error::ClientError;
use crate::ports::{self, LocalPort};
use crate::rendezvous::{self, Matched, PunchWatch, RelayFailure};

/// A TCP stream framed for the peer link.
pub type PeerFramed = Framed<TcpStream, FrameCodec>;

/// How long one TCP connect attempt to an announced address may take.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(3);
/// How long one punch dial may take (a dropped SYN is sent again at 1 s).
const PUNCH_ATTEMPT: Duration = Duration::from_millis(1500);
/// Pause after a punch dial was refused (a router answering with RST before the
/// peer's own SYN has opened its side).
const PUNCH_RETRY: Duration = Duration::from_millis(25);
/// Most punch dials per match.
const MAX_PUNCH_DIALS: u32 = 400;
/// Punch anyway this long after `Matched` if the mediator never says `PunchNow`.
const PUNCH_FALLBACK: Duration = Duration::from_secs(2);
/// How long one side may take to answer a handshake message.
pub(crate) const HANDSHAKE_STEP: Duration = Duration::from_secs(10);
/// A connection to the host must bring its first message within this.
pub(crate) const FIRST_MESSAGE: Duration = Duration::from_secs(3);
/// Handshakes the host judges at once from unannounced addresses, and from any
/// one such address.
const MAX_STRANGERS: usize = 6;
const MAX_PER_SOURCE: usize = 2;
/// Handshakes the host judges at once from the announced addresses (and the relay).
const MAX_ANNOUNCED: usize = 6;
/// Connections the joiner keeps waiting while one handshake runs.
const MAX_QUEUED: usize = 8;
/// Backoff between joiner rounds over the announced addresses.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// With no relay on offer, give up this long after `Matched`.
const NO_RELAY_GIVE_UP: Duration = Duration::from_secs(10);
/// How long the relay may take to pair us with the peer.
const RELAY_WAIT: Duration = Duration::from_secs(30);
/// A relay joined at `Matched` (punching unlikely) enters the race this long
/// after `Matched`: a direct or punched connection that arrives sooner goes
/// first (docs/protocol.md §12.3, "Early relay").
pub const RELAY_GRACE: Duration = Duration::from_millis(600);
/// `HostConfirm`s (nonce reveals) the host sends per match (docs/protocol.md §12.4).
pub const MAX_REVEALS: u32 = 2;
/// Reveals not followed by a session that the host accepts over a whole run,
/// across reconnect rounds.
pub const MAX_FAILED_REVEALS: u32 = 3;

/// How the two clients reach each other; shown in the status and `peers.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// To the address the mediator observed, with no NAT on either side (or a
    /// forwarded port).
    Direct,
    /// To an address on the peer's own network interface.
    Lan,
    /// Through a TCP hole punched with the mediator's help.
    Punched,
    /// Through the mediator's relay (ciphertext only).
    Relay,
}

impl Path {
    /// The word used on screen and in `peers.txt`: the wire label's.
    pub fn as_str(self) -> &'static str {
        PathLabel::from(self).as_str()
    }
}

impl From<Path> for PathLabel {
    fn from(path: Path) -> PathLabel {
        match path {
            Path::Direct => PathLabel::Direct,
            Path::Lan => PathLabel::Lan,
            Path::Punched => PathLabel::Punched,
            Path::Relay => PathLabel::Relay,
        }
    }
}

/// What the end of a race says about reach, for the mediator's count
/// (`SessionPath`, docs/protocol.md §4): the path of the session; `None` when
/// the race gave up with no way through (or the peer's announced key was
/// unusable); nothing when it ended otherwise (keys differ, an attack, the
/// link lost while confirming), which says nothing about the networks.
pub fn reached(outcome: Result<Path, &ClientError>) -> Option<PathLabel> {
    match outcome {
        Ok(path) => Some(path.into()),
        Err(ClientError::NoPath(_) | ClientError::PeerUnreachable(_)) => Some(PathLabel::None),
        Err(_) => None,
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

/// What both sides know about the two ends, from which each labels a connection
/// the same way (docs/protocol.md §12.5).
#[derive(Debug, Clone)]
pub struct Ends {
    /// The peer's address as the mediator saw it.
    pub peer_observed: SocketAddr,
    /// The peer's own interface addresses.
    pub peer_locals: Vec<SocketAddr>,
    /// Whether either side is behind a NAT (observed address not its own).
    pub behind_nat: bool,
}

impl Ends {
    /// From the match and our own advertised addresses.
    pub fn new(matched: &Matched, own_locals: &[SocketAddr]) -> Ends {
        let natted = |observed: SocketAddr, locals: &[SocketAddr]| {
            !locals
                .iter()
                .any(|l| canonical(l.ip()) == canonical(observed.ip()))
        };
        Ends {
            peer_observed: matched.observed_addr,
            peer_locals: matched.local_addrs.clone(),
            behind_nat: natted(matched.your_addr, own_locals)
                || natted(matched.observed_addr, &matched.local_addrs),
        }
    }

    /// The path of a connection whose far end is `remote`.
    pub fn classify(&self, remote: SocketAddr) -> Path {
        let ip = canonical(remote.ip());
        if ip == canonical(self.peer_observed.ip()) {
            if self.behind_nat {
                Path::Punched
            } else {
                Path::Direct
            }
        } else if self.peer_locals.iter().any(|a| canonical(a.ip()) == ip) {
            Path::Lan
        } else {
            Path::Direct
        }
    }

    /// Whether a connection from `remote` comes from an address the mediator announced.
    fn announced(&self, remote: SocketAddr) -> bool {
        let ip = canonical(remote.ip());
        ip == canonical(self.peer_observed.ip())
            || self.peer_locals.iter().any(|a| canonical(a.ip()) == ip)
    }
}

/// The host's announced addresses the joiner dials at once: its observed IP with
/// its listen port, then each advertised local address (at most 8, no repeats).
/// When `punching`, the observed address itself is left to the punch dialer (§12.2).
pub fn candidates(matched: &Matched, punching: bool) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let punched = punching.then_some(matched.observed_addr);
    let mut push = |addr: SocketAddr, path: Path| {
        let addr = ports::unmap(addr);
        if addr.port() != 0
            && !addr.ip().is_unspecified()
            && Some(addr) != punched
            && !out.iter().any(|c| c.addr == addr)
        {
            out.push(Candidate { addr, path });
        }
    };
    if matched.listen_port != 0 {
        push(
            SocketAddr::new(matched.observed_addr.ip(), matched.listen_port),
            Path::Direct,
        );
    }
    for addr in matched
        .local_addrs
        .iter()
        .take(wire::rendezvous::MAX_LOCAL_ADDRS)
    {
        push(*addr, Path::Lan);
    }
    out
}

/// Whether punching is unlikely to work for this pair: a NAT on either side
/// changed the port of the mediator connection (symmetric NATs do; so do some
/// that still punch, which the grace is for). Both sides compute the same answer
/// from their `Matched`: ours says our own observed port, and the peer's says its
/// announced `listen_port` beside its observed port (docs/protocol.md §12.3).
pub fn punch_unlikely(matched: &Matched, own_port: u16) -> bool {
    let ours = matched.your_addr.port() != own_port;
    let theirs = matched.listen_port != 0 && matched.observed_addr.port() != matched.listen_port;
    ours || theirs
}

/// When, after `Matched`, to join the relay and when its connection may enter
/// the race: with punching unlikely, join at once and enter after
/// [`RELAY_GRACE`] (or `relay_after`, if sooner); else both at `relay_after`.
pub fn relay_timing(
    matched: &Matched,
    own_port: u16,
    relay_after: Duration,
) -> (Duration, Duration) {
    if punch_unlikely(matched, own_port) {
        (Duration::ZERO, relay_after.min(RELAY_GRACE))
    } else {
        (relay_after, relay_after)
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

/// The run's count of host nonce reveals that were not followed by a session.
#[derive(Debug, Default)]
pub struct Reveals {
    failed: AtomicU32,
}

/// Which side of the handshake we play, with its state machine.
#[derive(Debug)]
pub enum Side {
    Host(HostHandshake),
    Joiner(JoinerHandshake),
}

/// Where connections to our port come from.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// Our listener: every connection to the port is for this race.
    Listener(&'a TcpListener),
    /// A group member's port serves several races at once: its acceptor reads
    /// each connection's first message and hands it to the race whose peer it
    /// names ([`crate::group`]).
    Routed(mpsc::Receiver<RoutedConn>),
}

/// A connection the acceptor handed over, with its first message if it read one.
#[derive(Debug)]
pub struct RoutedConn {
    pub framed: PeerFramed,
    pub addr: SocketAddr,
    pub first: Option<PeerHandshake>,
}

/// Everything one race needs.
#[derive(Debug)]
pub struct Race<'a> {
    pub matched: &'a Matched,
    pub port: LocalPort,
    pub incoming: Incoming<'a>,
    /// Our advertised interface addresses (from our `Hello`).
    pub own_locals: &'a [SocketAddr],
    /// The mediator we met through (where an `Offered { server: "" }` relay is).
    pub server: &'a str,
    /// The mediator link, timing our punch; `None`: do not punch (`--no-punch`).
    pub punch: Option<PunchWatch>,
    pub matched_at: Instant,
    /// The connect timeout.
    pub deadline: Instant,
    /// When to fall back to the relay if nothing else has finished.
    pub relay_after: Duration,
    pub reveals: &'a Reveals,
}

/// A connection that reached us or that we opened, not yet judged.
struct PendingConn {
    framed: PeerFramed,
    addr: SocketAddr,
    path: Path,
    /// The first message, if the acceptor already read it.
    first: Option<Box<PeerHandshake>>,
}

/// What the background sources report.
enum Found {
    Stream(PendingConn),
    Failed(String),
    RelayRefused(String),
}

pub(crate) async fn send_hs(framed: &mut PeerFramed, msg: &PeerHandshake) -> Result<(), String> {
    let payload = wire::encode(msg).map_err(|e| e.to_string())?;
    timeout(HANDSHAKE_STEP, framed.send(payload.as_slice()))
        .await
        .map_err(|_| "peer stopped reading".to_string())?
        .map_err(|e| e.to_string())
}

pub(crate) async fn recv_hs(
    framed: &mut PeerFramed,
    within: Duration,
) -> Result<PeerHandshake, String> {
    match timeout(within, framed.next()).await {
        Err(_) => Err("no handshake message in time".into()),
        Ok(None) => Err("connection closed during the handshake".into()),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(Some(Ok(frame))) => wire::decode(&frame).map_err(|e| e.to_string()),
    }
}

/// What a handshake failure means for the person, and its exit code.
pub fn handshake_failure(e: HandshakeError, peer_name: &str) -> ClientError {
    match e {
        HandshakeError::KeysDiffer | HandshakeError::Rejected(_) | HandshakeError::WrongPeer(_) => {
            ClientError::KeysDiffer
        }
        e @ (HandshakeError::BadSignature | HandshakeError::WrongIdentity { .. }) => {
            ClientError::WrongIdentity(format!(
                "{}: {e}. If you expected someone new, meet with a room code and compare the \
                 security code.",
                wire::sanitize_for_terminal(peer_name)
            ))
        }
        HandshakeError::BadPeerPublic(why) => ClientError::PeerUnreachable(format!(
            "the key announced for {} is invalid ({why}); the mediator may be faulty or hostile",
            wire::sanitize_for_terminal(peer_name)
        )),
        other => ClientError::PeerUnreachable(other.to_string()),
    }
}

/// Runs the race to a confirmed connection. Strangers turned away at the host
/// are reported to `on_stranger`.
pub async fn connect(
    race: Race<'_>,
    side: Side,
    mut on_stranger: impl FnMut(SocketAddr, &str),
) -> Result<Connected, ClientError> {
    let mut incoming = race.incoming;
    let ends = Ends::new(race.matched, race.own_locals);
    let peer_name = wire::sanitize_for_terminal(&race.matched.peer_name).into_owned();
    let (tx, mut found) = mpsc::channel::<Found>(16);
    let mut sources = JoinSet::new();
    let relay_token = match &race.matched.relay {
        RelayOffer::Offered { token, server } => {
            let server = if server.is_empty() {
                race.server.to_owned()
            } else {
                server.clone()
            };
            Some((*token, server))
        }
        _ => None,
    };
    let mut state = RaceState {
        errors: Vec::new(),
        give_up: if relay_token.is_some() {
            race.deadline
        } else {
            race.deadline.min(race.matched_at + NO_RELAY_GIVE_UP)
        },
        relay_refusal: match &race.matched.relay {
            RelayOffer::Offered { .. } => None,
            RelayOffer::RefusedByYou => Some("you passed --no-relay".into()),
            RelayOffer::RefusedByPeer => Some(format!("{peer_name} passed --no-relay")),
            RelayOffer::Off => Some("the mediator runs with --relay off".into()),
        },
    };

    let punching = race.punch.is_some();
    if let Some(punch) = race.punch {
        sources.spawn(punch_dials(
            race.port,
            race.matched.observed_addr,
            ends.classify(race.matched.observed_addr),
            punch,
            race.deadline,
            tx.clone(),
        ));
    }
    if matches!(side, Side::Joiner(_)) {
        sources.spawn(dial_rounds(
            race.port,
            candidates(race.matched, punching),
            race.deadline,
            tx.clone(),
        ));
    }
    if let Some((token, server)) = relay_token {
        let (join, enter) = relay_timing(race.matched, race.port.addr().port(), race.relay_after);
        sources.spawn(relay_source(
            server,
            token,
            race.matched_at + join,
            race.matched_at + enter,
            race.matched.observed_addr,
            tx.clone(),
        ));
    }
    drop(tx);

    match side {
        Side::Host(handshake) => {
            let handshake = Arc::new(handshake);
            let reveals_this_match = Arc::new(AtomicU32::new(0));
            let mut judging: JoinSet<(Judged, IpAddr, bool)> = JoinSet::new();
            let mut per_source: HashMap<IpAddr, usize> = HashMap::new();
            let (mut announced_n, mut strangers_n) = (0usize, 0usize);
            loop {
                let incoming = tokio::select! {
                    link = next_incoming(&mut incoming, &ends) => link,
                    Some(got) = found.recv() => state.on_found(got, race.matched_at),
                    Some(joined) = judging.join_next() => {
                        let Ok((judged, ip, announced)) = joined else { continue };
                        if announced { announced_n -= 1 } else {
                            strangers_n -= 1;
                            if let Some(n) = per_source.get_mut(&ip) { *n -= 1; if *n == 0 { per_source.remove(&ip); } }
                        }
                        match judged {
                            Judged::Done(conn) => return Ok(*conn),
                            Judged::Stranger(from, why) => on_stranger(from, &why),
                            Judged::Silent(why) => tracing::debug!(reason = %why, "incoming connection dropped"),
                            Judged::FailedAfterReveal(why) => {
                                let failed = race.reveals.failed.fetch_add(1, Ordering::Relaxed) + 1;
                                tracing::debug!(reason = %why, failed, "a handshake failed after our reveal");
                                if failed >= MAX_FAILED_REVEALS {
                                    return Err(ClientError::PossibleAttack(failed));
                                }
                                note(&mut state.errors, why);
                            }
                            Judged::TooManyReveals => {
                                return Err(ClientError::PossibleAttack(MAX_REVEALS + 1));
                            }
                            Judged::KeysDiffer => return Err(ClientError::KeysDiffer),
                        }
                        None
                    }
                    () = sleep_until(state.give_up) => {
                        return Err(state.give_up_error(&peer_name, race.port));
                    }
                };
                let Some(link) = incoming else { continue };
                let announced = link.path == Path::Relay || ends.announced(link.addr);
                let ip = canonical(link.addr.ip());
                if announced {
                    if announced_n >= MAX_ANNOUNCED {
                        continue;
                    }
                    announced_n += 1;
                } else {
                    let n = per_source.entry(ip).or_default();
                    if strangers_n >= MAX_STRANGERS || *n >= MAX_PER_SOURCE {
                        tracing::debug!(peer = %link.addr, "stranger over the cap dropped");
                        continue;
                    }
                    *n += 1;
                    strangers_n += 1;
                }
                let handshake = Arc::clone(&handshake);
                let reveals = Arc::clone(&reveals_this_match);
                judging
                    .spawn(async move { (judge(link, handshake, reveals).await, ip, announced) });
            }
        }
        Side::Joiner(handshake) => {
            // Whether a host refused our PeerHello: at the end, that is the
            // likeliest reason (a room code that differs), though anyone could
            // have sent the refusal.
            let mut rejected = false;
            let mut queue: VecDeque<PendingConn> = VecDeque::new();
            let mut active: JoinSet<Result<Connected, Attempt>> = JoinSet::new();
            loop {
                let incoming = tokio::select! {
                    link = next_incoming(&mut incoming, &ends) => link,
                    Some(got) = found.recv() => state.on_found(got, race.matched_at),
                    Some(done) = active.join_next() => {
                        match done {
                            Ok(Ok(conn)) => return Ok(conn),
                            Ok(Err(Attempt::Fatal(e))) => return Err(e),
                            Ok(Err(Attempt::Next(why))) => note(&mut state.errors, why),
                            Ok(Err(Attempt::Rejected(why))) => {
                                rejected = true;
                                note(&mut state.errors, why);
                            }
                            Err(e) => note(&mut state.errors, e.to_string()),
                        }
                        None
                    }
                    () = sleep_until(state.give_up) => {
                        if rejected {
                            return Err(ClientError::KeysDiffer);
                        }
                        return Err(state.give_up_error(&peer_name, race.port));
                    }
                };
                if let Some(link) = incoming {
                    if queue.len() < MAX_QUEUED {
                        queue.push_back(link);
                    }
                }
                // One PeerHello at a time: the host reveals a nonce per PeerHello.
                if active.is_empty() {
                    if let Some(link) = queue.pop_front() {
                        let (state, hello) = handshake.hello(&mut OsRng);
                        let peer_name = race.matched.peer_name.clone();
                        active.spawn(async move {
                            let PendingConn {
                                mut framed,
                                addr,
                                path,
                                ..
                            } = link;
                            send_hs(&mut framed, &hello)
                                .await
                                .map_err(|e| Attempt::Next(format!("{addr}: {e}")))?;
                            let confirm = recv_hs(&mut framed, HANDSHAKE_STEP)
                                .await
                                .map_err(|e| Attempt::Next(format!("{addr}: {e}")))?;
                            let (session, reply) = match state.on_host_confirm(confirm) {
                                Ok(pair) => pair,
                                // An unauthenticated Reject (§12.4): anyone can send
                                // one, so it only ends this connection.
                                Err(HandshakeError::Rejected(why)) => {
                                    return Err(Attempt::Rejected(format!(
                                        "{addr} refused us: {}",
                                        wire::sanitize_for_terminal(&why)
                                    )))
                                }
                                Err(e) => {
                                    return Err(Attempt::Fatal(handshake_failure(e, &peer_name)))
                                }
                            };
                            send_hs(&mut framed, &reply).await.map_err(|why| {
                                Attempt::Fatal(ClientError::ConnectionLost(format!(
                                    "lost the peer while confirming keys: {why}"
                                )))
                            })?;
                            Ok(Connected {
                                framed,
                                addr,
                                path,
                                session,
                            })
                        });
                    }
                }
            }
        }
    }
}

/// What the race loop keeps between events, for its give-up moment and message.
struct RaceState {
    /// A few distinct reasons, for the final message.
    errors: Vec<String>,
    give_up: Instant,
    /// Why no relay can help, once that is known.
    relay_refusal: Option<String>,
}

impl RaceState {
    /// Takes in what a background source found; a connection goes to the race.
    fn on_found(&mut self, got: Found, matched_at: Instant) -> Option<PendingConn> {
        match got {
            Found::Stream(link) => Some(link),
            Found::Failed(why) => {
                note(&mut self.errors, why);
                None
            }
            Found::RelayRefused(why) => {
                self.give_up = self
                    .give_up
                    .min((matched_at + NO_RELAY_GIVE_UP).max(Instant::now()));
                self.relay_refusal = Some(why);
                None
            }
        }
    }

    fn give_up_error(&self, peer_name: &str, port: LocalPort) -> ClientError {
        give_up_error(peer_name, self.relay_refusal.as_deref(), &self.errors, port)
    }
}

/// The next connection to our port, labelled; `None` after an accept error.
/// A closed routed source never yields again.
async fn next_incoming(incoming: &mut Incoming<'_>, ends: &Ends) -> Option<PendingConn> {
    match incoming {
        Incoming::Listener(listener) => accepted_conn(listener.accept().await, ends).await,
        Incoming::Routed(rx) => match rx.recv().await {
            Some(conn) => Some(PendingConn {
                path: ends.classify(conn.addr),
                framed: conn.framed,
                addr: conn.addr,
                first: conn.first.map(Box::new),
            }),
            None => std::future::pending().await,
        },
    }
}

/// A connection our listener accepted, labelled; `None` after an accept error.
async fn accepted_conn(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    ends: &Ends,
) -> Option<PendingConn> {
    match accepted {
        Ok((stream, from)) => {
            let from = ports::unmap(from);
            Some(PendingConn {
                framed: Framed::new(stream, FrameCodec::new(Link::Peer)),
                addr: from,
                path: ends.classify(from),
                first: None,
            })
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Keeps a few distinct reasons for the final error message.
fn note(errors: &mut Vec<String>, why: String) {
    if errors.len() < 8 && !errors.contains(&why) {
        errors.push(why);
    }
}

/// How one joiner attempt ended without a session.
enum Attempt {
    /// Try the next connection.
    Next(String),
    /// The far end sent `Reject`: try the next connection.
    Rejected(String),
    /// End the race.
    Fatal(ClientError),
}

/// What became of one connection at the host.
enum Judged {
    Done(Box<Connected>),
    /// A `PeerHello` that is not the announced peer: rejected.
    Stranger(SocketAddr, String),
    /// Nothing useful arrived in time (a backup connection of the joiner's, or idle).
    Silent(String),
    /// We revealed our nonce and the connection then failed.
    FailedAfterReveal(String),
    /// A `PeerHello` past this match's reveal bound.
    TooManyReveals,
    KeysDiffer,
}

async fn judge(
    link: PendingConn,
    handshake: Arc<HostHandshake>,
    reveals: Arc<AtomicU32>,
) -> Judged {
    let PendingConn {
        mut framed,
        addr,
        path,
        first,
    } = link;
    let hello = match first {
        Some(msg) => *msg,
        None => match recv_hs(&mut framed, FIRST_MESSAGE).await {
            Ok(msg) => msg,
            Err(why) => return Judged::Silent(format!("{addr}: {why}")),
        },
    };
    let (state, confirm) = match handshake.on_peer_hello(hello, &mut OsRng) {
        Ok(pair) => pair,
        Err(e) => {
            let reason = e.to_string();
            let reject = PeerHandshake::Reject {
                reason: reason.clone(),
            };
            let _ = send_hs(&mut framed, &reject).await;
            return Judged::Stranger(addr, reason);
        }
    };
    if reveals.fetch_add(1, Ordering::AcqRel) >= MAX_REVEALS {
        return Judged::TooManyReveals;
    }
    if let Err(why) = send_hs(&mut framed, &confirm).await {
        return Judged::FailedAfterReveal(format!("{addr}: {why}"));
    }
    let reply = match recv_hs(&mut framed, HANDSHAKE_STEP).await {
        Ok(msg) => msg,
        Err(why) => return Judged::FailedAfterReveal(format!("{addr}: {why}")),
    };
    match state.on_joiner_confirm(reply) {
        Ok(session) => Judged::Done(Box::new(Connected {
            framed,
            addr,
            path,
            session,
        })),
        Err(HandshakeError::KeysDiffer) => Judged::KeysDiffer,
        // It had the keys (it knows the code) but not the identity it claimed.
        Err(HandshakeError::BadSignature) => Judged::KeysDiffer,
        Err(e) => Judged::FailedAfterReveal(format!("{addr}: {e}")),
    }
}

fn give_up_error(
    peer_name: &str,
    relay_refusal: Option<&str>,
    errors: &[String],
    port: LocalPort,
) -> ClientError {
    let tried = if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    };
    match relay_refusal {
        Some(why) => ClientError::NoPath(format!(
            "no direct path to {peer_name}: the networks on both sides block every direct \
             connection we tried{tried}, and the relay is refused: {why}. Without --no-relay on \
             both sides (and a mediator with its relay on) the chat would be relayed; or one \
             side can forward a port and pass --listen PORT --advertise IP:PORT."
        )),
        None => ClientError::PeerUnreachable(format!(
            "could not reach {peer_name} directly or through the relay within the connect \
             timeout{tried}. Their firewall may block outgoing connections, or our port ({}) is \
             not reachable: try --listen with a forwarded port and --advertise.",
            port.addr().port()
        )),
    }
}

/// Dials the host's announced addresses in rounds with backoff until `deadline`.
async fn dial_rounds(
    port: LocalPort,
    candidates: Vec<Candidate>,
    deadline: Instant,
    tx: mpsc::Sender<Found>,
) {
    if candidates.is_empty() {
        return;
    }
    let mut backoff = BACKOFF_START;
    loop {
        let round = Instant::now();
        let mut dials = JoinSet::new();
        for candidate in candidates.clone() {
            let within = CONNECT_ATTEMPT.min(deadline.saturating_duration_since(Instant::now()));
            dials.spawn(async move { (candidate, port.connect(candidate.addr, within).await) });
        }
        while let Some(Ok((candidate, result))) = dials.join_next().await {
            let found = match result {
                Ok(stream) => Found::Stream(PendingConn {
                    framed: Framed::new(stream, FrameCodec::new(Link::Peer)),
                    addr: candidate.addr,
                    path: candidate.path,
                    first: None,
                }),
                Err(e) => Found::Failed(format!("{}: {e}", candidate.addr)),
            };
            if tx.send(found).await.is_err() {
                return;
            }
        }
        let next = (round + backoff).max(Instant::now());
        if next >= deadline {
            return;
        }
        sleep_until(next).await;
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

/// At `PunchNow` (or after a fallback delay), dials the peer's observed address
/// from our port, again at once when a router answers with RST, until the race
/// ends or `deadline` (docs/protocol.md §12.2).
async fn punch_dials(
    port: LocalPort,
    dest: SocketAddr,
    path: Path,
    mut punch: PunchWatch,
    deadline: Instant,
    tx: mpsc::Sender<Found>,
) {
    punch.punch_now(PUNCH_FALLBACK).await;
    let dest = ports::unmap(dest);
    let mut told: Vec<std::io::ErrorKind> = Vec::new();
    for _ in 0..MAX_PUNCH_DIALS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match port.connect(dest, PUNCH_ATTEMPT.min(left)).await {
            Ok(stream) => {
                let link = PendingConn {
                    framed: Framed::new(stream, FrameCodec::new(Link::Peer)),
                    addr: dest,
                    path,
                    first: None,
                };
                if tx.send(Found::Stream(link)).await.is_err() {
                    return;
                }
                // That connection is in the race now; another one to the same
                // 4-tuple cannot exist while it lives.
                sleep(Duration::from_secs(1)).await;
            }
            Err(e) => match e.kind() {
                kind if !told.contains(&kind) && kind != std::io::ErrorKind::AddrNotAvailable => {
                    told.push(kind);
                    let _ = tx.try_send(Found::Failed(format!("{dest}: {e}")));
                    sleep(PUNCH_RETRY).await;
                }
                std::io::ErrorKind::ConnectionRefused => sleep(PUNCH_RETRY).await,
                std::io::ErrorKind::TimedOut => {}
                // Our listener holds this 4-tuple already, or a dial of ours is
                // still on its way: the race has it.
                std::io::ErrorKind::AddrNotAvailable => sleep(Duration::from_millis(200)).await,
                _ => sleep(Duration::from_millis(200)).await,
            },
        }
    }
    // Keep the mediator link until the race ends (this task is aborted then).
    std::future::pending::<()>().await;
}

/// At `join`, opens a relay connection with the pair's token; once the relay
/// says ready, hands it to the race no sooner than `enter` (docs/protocol.md §12.3).
async fn relay_source(
    server: String,
    token: [u8; 32],
    join: Instant,
    enter: Instant,
    peer: SocketAddr,
    tx: mpsc::Sender<Found>,
) {
    sleep_until(join).await;
    for attempt in 0..2 {
        match rendezvous::relay_join(&server, token, RELAY_WAIT).await {
            Ok(framed) => {
                // Spliced, but a direct or punched connection that comes
                // within the grace still goes first.
                sleep_until(enter).await;
                let link = PendingConn {
                    framed,
                    addr: ports::unmap(peer),
                    path: Path::Relay,
                    first: None,
                };
                let _ = tx.send(Found::Stream(link)).await;
                return;
            }
            Err(RelayFailure::Refused(code, why)) => {
                let _ = tx
                    .send(Found::RelayRefused(format!(
                        "the mediator's relay said no ({}: {why})",
                        code.as_str()
                    )))
                    .await;
                return;
            }
            Err(RelayFailure::Unreachable(why)) => {
                let _ = tx.send(Found::Failed(format!("relay: {why}"))).await;
                if attempt == 0 {
                    sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::Role;

    fn matched(observed: &str, port: u16, locals: &[&str], you: &str) -> Matched {
        Matched {
            role: Role::Host,
            peer_name: "bob".into(),
            public: vec![],
            observed_addr: observed.parse().unwrap(),
            listen_port: port,
            local_addrs: locals.iter().map(|a| a.parse().unwrap()).collect(),
            your_addr: you.parse().unwrap(),
            relay: RelayOffer::Off,
        }
    }

    #[test]
    fn the_relay_starts_at_once_only_when_a_nat_changed_a_port() {
        let after = Duration::from_secs(3);
        // Both ports kept (home routers, no NAT): the relay waits for --relay-after.
        let kept = matched("203.0.113.5:40000", 40000, &[], "198.51.100.7:50000");
        assert!(!punch_unlikely(&kept, 50000));
        assert_eq!(relay_timing(&kept, 50000, after), (after, after));
        // Our NAT changed our port: at once, entering after the grace.
        assert!(punch_unlikely(&kept, 50001));
        assert_eq!(
            relay_timing(&kept, 50001, after),
            (Duration::ZERO, RELAY_GRACE)
        );
        // The peer's NAT changed its port: the same on our side.
        let moved = matched("203.0.113.5:23456", 40000, &[], "198.51.100.7:50000");
        assert!(punch_unlikely(&moved, 50000));
        // A shorter --relay-after than the grace still wins.
        let short = Duration::from_millis(100);
        assert_eq!(relay_timing(&moved, 50000, short), (Duration::ZERO, short));
    }

    #[test]
    fn candidates_skip_the_punched_address_and_repeats() {
        let m = matched(
            "203.0.113.5:40000",
            5000,
            &["192.168.1.9:5000", "203.0.113.5:5000", "0.0.0.0:5000"],
            "198.51.100.1:6000",
        );
        let c = candidates(&m, true);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].addr, "203.0.113.5:5000".parse().unwrap());
        assert_eq!(c[0].path, Path::Direct);
        assert_eq!(c[1].path, Path::Lan);
        // No NAT: the observed address is the listener, and the punch dials it.
        let m = matched(
            "127.0.0.1:5000",
            5000,
            &["127.0.0.1:5000"],
            "127.0.0.1:6000",
        );
        assert!(candidates(&m, true).is_empty());
        assert_eq!(candidates(&m, false).len(), 1);
    }

    #[test]
    fn both_sides_label_a_connection_alike() {
        // Two homes behind NATs: the far end is the peer's observed address.
        let alice = matched(
            "203.0.113.5:40000",
            40000,
            &["192.168.1.9:40000"],
            "198.51.100.7:50000",
        );
        let ends = Ends::new(&alice, &["192.168.2.3:50000".parse().unwrap()]);
        assert_eq!(
            ends.classify("203.0.113.5:40000".parse().unwrap()),
            Path::Punched
        );
        assert_eq!(
            ends.classify("192.168.1.9:40000".parse().unwrap()),
            Path::Lan
        );
        // No NAT anywhere (loopback, or a mediator on the LAN): direct.
        let plain = matched(
            "127.0.0.1:5000",
            5000,
            &["127.0.0.1:5000"],
            "127.0.0.1:6000",
        );
        let ends = Ends::new(&plain, &["127.0.0.1:6000".parse().unwrap()]);
        assert_eq!(
            ends.classify("127.0.0.1:5000".parse().unwrap()),
            Path::Direct
        );
        assert_eq!(
            ends.classify("[::ffff:127.0.0.1]:5000".parse().unwrap()),
            Path::Direct
        );
        // Two behind one router: the mediator sees one public address for both.
        let lan = matched(
            "203.0.113.9:1000",
            4000,
            &["192.168.1.4:4000"],
            "203.0.113.9:1001",
        );
        let ends = Ends::new(&lan, &["192.168.1.5:4001".parse().unwrap()]);
        assert_eq!(
            ends.classify("192.168.1.4:4000".parse().unwrap()),
            Path::Lan
        );
    }
}
