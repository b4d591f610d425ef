//! Connection tokens (docs/protocol.md §16): `client token` prints one and hosts
//! whoever dials it; `client --connect TOKEN` dials it directly and accepts only
//! the identity the token names. The holder admits or denies a dialer it does not
//! know. A token may also name the holder's mediator: a dialer that cannot reach
//! the holder's addresses meets it there (the run's mediator path, in `app`).
//!
//! A holder's port is open to anyone who learns its address, token or not, so
//! what a stranger can cost it is bounded (§16.2): connections are accepted at
//! once and judged a few at a time per source, and refusals are shown a few per
//! minute, the rest summed up.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use dhke::{Group, Identity, IdentityKey, KeyPair, ResumeSecret, RoomCode};
use futures::{SinkExt, StreamExt};
use rand::rngs::OsRng;
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use wire::handshake::{HostHandshake, JoinerHelloSent};
use wire::token::Token;
use wire::{FrameCodec, HandshakeInput, Link, PeerHandshake, PeerMsg, RelayOffer, Role};

use crate::connect::{self, recv_hs, send_hs, Connected, Path, FIRST_MESSAGE, HANDSHAKE_STEP};
use crate::error::ClientError;
use crate::ports::LocalPort;
use crate::rendezvous::Matched;

/// Connections judged at once, in all and from any one [`Source`]. A connection
/// over either cap is closed at once (never left in the listen backlog, where
/// idle ones would keep a real dialer's SYN out): one source holds at most
/// [`MAX_JUDGED_PER_SOURCE`] slots, for at most [`FIRST_MESSAGE`] each without
/// the token.
const MAX_JUDGED: usize = 16;
const MAX_JUDGED_PER_SOURCE: usize = 2;
/// Refusals shown one by one per [`REFUSAL_WINDOW`]; the others (and every
/// connection closed over a cap) are counted and shown as one summary.
const REFUSAL_LINES: u32 = 3;
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);
/// Sources a summary names; it counts the others.
const SUMMARY_SOURCES: usize = 4;
/// How long the dialer waits for the holder to admit it (a person decides).
pub const ADMISSION_WAIT: Duration = Duration::from_secs(300);
/// How long one dial of a token address may take.
const DIAL: Duration = Duration::from_secs(3);

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The room of a token: its code is the token's room secret (§16.2).
pub fn room_of(token: &Token) -> RoomCode {
    RoomCode::from_secret("token", &token.room_secret())
}

/// A fresh token for `identity`, valid for `ttl`, naming the addresses we listen
/// on and the mediator we wait at (see [`mediator_of`]).
pub fn issue(
    identity: &Identity,
    addrs: Vec<SocketAddr>,
    mediator: Option<String>,
    ttl: Duration,
) -> Token {
    let mut secret = [0u8; wire::token::SECRET_LEN];
    OsRng.fill_bytes(&mut secret);
    Token {
        identity: identity.public().0,
        secret,
        expires_unix: now_unix().saturating_add(ttl.as_secs()),
        addrs,
        mediator,
    }
}

/// The holder's `--server` as a token names it (§16.1): `HOST:PORT`, the port
/// always written out, an IPv6 address in brackets.
pub fn mediator_of(server: &str) -> Result<String, ClientError> {
    let (host, port) = crate::config::split_server(server).map_err(ClientError::Usage)?;
    let text = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    wire::token::check_mediator(&text).map_err(|why| {
        ClientError::Usage(format!(
            "--server {}: a token cannot name it ({why}); use the mediator's plain host name \
             or address",
            wire::sanitize_for_terminal(server)
        ))
    })?;
    Ok(text)
}

/// Seconds until `token` expires (0 once it has).
pub fn remaining(token: &Token) -> Duration {
    Duration::from_secs(token.expires_unix.saturating_sub(now_unix()))
}

/// Reads `--connect`: a token with a typo, of another version, or expired is a
/// clear error.
pub fn parse(text: &str) -> Result<Token, ClientError> {
    let token = Token::parse(text).map_err(|e| ClientError::Usage(format!("--connect: {e}")))?;
    if token.expires_unix <= now_unix() {
        return Err(ClientError::TokenExpired(format!(
            "this token expired {} ago; ask its holder for a new one (`client token`)",
            humantime::format_duration(Duration::from_secs(now_unix() - token.expires_unix))
        )));
    }
    IdentityKey(token.identity)
        .check()
        .map_err(|_| ClientError::Usage("--connect: the token's identity key is damaged".into()))?;
    Ok(token)
}

/// What both ends share for a token connection.
#[derive(Debug)]
pub struct Ends<'a> {
    pub name: &'a str,
    pub group: Group,
    pub identity: &'a Identity,
    pub previous: Option<ResumeSecret>,
    pub keylog: bool,
}

/// A confirmed token connection, and the `Matched` a mediator would have sent
/// for it (so the rest of the run treats both paths alike).
fn confirmed(
    role: Role,
    framed: connect::PeerFramed,
    addr: SocketAddr,
    session: wire::Session,
    peer_name: String,
    public: Vec<u8>,
) -> (Connected, Matched) {
    let conn = Connected {
        framed,
        addr,
        path: Path::Direct,
        session,
    };
    let matched = Matched {
        role,
        peer_name,
        public,
        observed_addr: addr,
        listen_port: addr.port(),
        local_addrs: Vec::new(),
        your_addr: addr,
        relay: RelayOffer::Off,
    };
    (conn, matched)
}

/// What per-source limits count: an IPv4 address (v4-mapped ones as IPv4), or
/// an IPv6 /64, since one host usually owns a whole /64 (as the mediator counts,
/// §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Source(IpAddr);

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V6(v6) => Source(IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & !(u128::MAX >> 64),
            ))),
            v4 => Source(v4),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The judging slots: in all, and per source.
#[derive(Debug, Default)]
struct Slots {
    total: usize,
    per_source: HashMap<Source, usize>,
}

impl Slots {
    /// Takes a slot for `source`, or says no.
    fn take(&mut self, source: Source) -> bool {
        let held = self.per_source.get(&source).copied().unwrap_or(0);
        if self.total >= MAX_JUDGED || held >= MAX_JUDGED_PER_SOURCE {
            return false;
        }
        self.per_source.insert(source, held + 1);
        self.total += 1;
        true
    }

    fn give_back(&mut self, source: Source) {
        if let Some(held) = self.per_source.get_mut(&source) {
            *held -= 1;
            self.total -= 1;
            if *held == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

/// What the holder tells the person about connections it turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turned {
    /// One connection, and why; any words of the peer in `reason` have passed
    /// [`wire::sanitize_for_terminal`].
    Away { addr: SocketAddr, reason: String },
    /// The connections not shown one by one since the last summary.
    Unshown { text: String },
}

/// Decides which refusals are shown: at most [`REFUSAL_LINES`] one by one per
/// [`REFUSAL_WINDOW`], and one summary of the rest when the window ends, so a
/// flood costs at most `REFUSAL_LINES + 1` lines a window however long it lasts.
#[derive(Debug)]
struct RefusalLog {
    window_start: Instant,
    shown: u32,
    unshown: u64,
    sources: Vec<Source>,
    more_sources: bool,
}

impl RefusalLog {
    fn new(now: Instant) -> RefusalLog {
        RefusalLog {
            window_start: now,
            shown: 0,
            unshown: 0,
            sources: Vec::new(),
            more_sources: false,
        }
    }

    /// A connection judged and refused for `reason` (the peer's words in it
    /// are made safe here, the one place refusals leave this module).
    fn refused(&mut self, now: Instant, addr: SocketAddr, reason: &str) -> Vec<Turned> {
        let mut lines = self.roll(now);
        if self.shown < REFUSAL_LINES {
            self.shown += 1;
            lines.push(Turned::Away {
                addr,
                reason: wire::sanitize_for_terminal(reason).into_owned(),
            });
        } else {
            self.count(Source::of(addr.ip()));
        }
        lines
    }

    /// A connection closed unheard, over a cap: only ever counted.
    fn closed(&mut self, now: Instant, source: Source) -> Vec<Turned> {
        let lines = self.roll(now);
        self.count(source);
        lines
    }

    fn count(&mut self, source: Source) {
        self.unshown = self.unshown.saturating_add(1);
        if !self.sources.contains(&source) {
            if self.sources.len() < SUMMARY_SOURCES {
                self.sources.push(source);
            } else {
                self.more_sources = true;
            }
        }
    }

    /// When the summary of the current window is due, if there is one.
    fn due(&self) -> Option<Instant> {
        (self.unshown > 0).then_some(self.window_start + REFUSAL_WINDOW)
    }

    /// Starts a new window once the current one is over, summing it up.
    fn roll(&mut self, now: Instant) -> Vec<Turned> {
        if now < self.window_start + REFUSAL_WINDOW {
            return Vec::new();
        }
        let lines = self.summary();
        self.window_start = now;
        self.shown = 0;
        lines
    }

    /// The summary of what was not shown, if anything was not.
    fn summary(&mut self) -> Vec<Turned> {
        if self.unshown == 0 {
            return Vec::new();
        }
        let sources: Vec<String> = self.sources.iter().map(Source::to_string).collect();
        let text = format!(
            "Turned away {} more connection{} to your token without showing each, from {}{}. \
             Someone may be trying to keep your dialers out; each address gets at most {} \
             connections judged at once, so real dialers still get through.",
            self.unshown,
            if self.unshown == 1 { "" } else { "s" },
            sources.join(", "),
            if self.more_sources {
                " and other addresses"
            } else {
                ""
            },
            MAX_JUDGED_PER_SOURCE
        );
        self.unshown = 0;
        self.sources.clear();
        self.more_sources = false;
        vec![Turned::Unshown { text }]
    }
}

/// The holder: waits for a dialer that knows the token and completes the
/// handshake; strangers are turned away and the wait goes on until the token
/// expires. What was turned away goes to `on_turned` ([`RefusalLog`] decides
/// how much of it).
pub async fn host(
    listener: &TcpListener,
    token: &Token,
    ends: Ends<'_>,
    mut on_turned: impl FnMut(Turned),
) -> Result<(Connected, Matched), ClientError> {
    let code = room_of(token);
    let until = Instant::now() + remaining(token);
    let mut judging: JoinSet<Result<(Connected, Matched), (SocketAddr, String)>> = JoinSet::new();
    let mut judged_from: HashMap<tokio::task::Id, Source> = HashMap::new();
    let mut slots = Slots::default();
    let mut log = RefusalLog::new(Instant::now());
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let outcome = loop {
        let lines = tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: pause instead of spinning.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let source = Source::of(addr.ip());
                if slots.take(source) {
                    let task = judging.spawn(judge(stream, addr, code.clone(), ends_owned(&ends)));
                    judged_from.insert(task.id(), source);
                    Vec::new()
                } else {
                    tracing::debug!(peer = %addr, "token connection over the judging caps closed");
                    drop(stream);
                    log.closed(Instant::now(), source)
                }
            }
            Some(done) = judging.join_next_with_id() => {
                let id = match &done {
                    Ok((id, _)) => *id,
                    Err(e) => e.id(),
                };
                if let Some(source) = judged_from.remove(&id) {
                    slots.give_back(source);
                }
                match done {
                    Ok((_, Ok(pair))) => break Ok(pair),
                    Ok((_, Err((addr, why)))) => log.refused(Instant::now(), addr, &why),
                    Err(_) => Vec::new(),
                }
            }
            () = tokio::time::sleep_until(log.due().unwrap_or(far)), if log.due().is_some() => {
                log.roll(Instant::now())
            }
            () = tokio::time::sleep_until(until) => {
                break Err(ClientError::TokenExpired(
                    "the token expired and nobody connected with it; run `client token` for a new one".into(),
                ));
            }
        };
        lines.into_iter().for_each(&mut on_turned);
    };
    // What was not shown yet is told before the session (or the end) starts.
    log.summary().into_iter().for_each(&mut on_turned);
    outcome
}

/// [`Ends`] with owned parts, for a task.
struct OwnedEnds {
    name: String,
    group: Group,
    identity: Identity,
    previous: Option<ResumeSecret>,
    keylog: bool,
}

fn ends_owned(e: &Ends<'_>) -> OwnedEnds {
    OwnedEnds {
        name: e.name.to_owned(),
        group: e.group,
        identity: e.identity.clone(),
        previous: e.previous.clone(),
        keylog: e.keylog,
    }
}

/// One incoming connection at the holder: `TokenHello`, then §6 as the host.
async fn judge(
    stream: TcpStream,
    addr: SocketAddr,
    code: RoomCode,
    ends: OwnedEnds,
) -> Result<(Connected, Matched), (SocketAddr, String)> {
    let fail = |why: String| (addr, why);
    let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
    let reject = |why: &str| PeerHandshake::Reject { reason: why.into() };
    let (name, public) = match recv_hs(&mut framed, FIRST_MESSAGE).await.map_err(fail)? {
        PeerHandshake::TokenHello {
            tag,
            name,
            group,
            public,
        } => {
            let why = if !dhke::verify_mac(&tag, &code.tag().0) {
                Some("not our token".to_string())
            } else if group != ends.group.id() {
                Some(format!("use --dh-group {}", ends.group.id()))
            } else if let Err(e) = wire::validate_name(&name) {
                Some(format!("bad name: {e}"))
            } else {
                None
            };
            if let Some(why) = why {
                let _ = send_hs(&mut framed, &reject(&why)).await;
                return Err(fail(why));
            }
            (name, public)
        }
        _ => return Err(fail("the first message is not a TokenHello".into())),
    };
    let keys =
        KeyPair::generate_cpace(ends.group, &code, &mut OsRng).map_err(|e| fail(e.to_string()))?;
    let welcome = PeerHandshake::TokenWelcome {
        name: ends.name.clone(),
        public: keys.public().to_vec(),
    };
    let handshake = HostHandshake::new(HandshakeInput {
        room: code,
        local_name: ends.name,
        local: keys,
        peer_name: name.clone(),
        peer_public: public.clone(),
        previous: ends.previous,
        keylog: ends.keylog,
        identity: ends.identity,
        expect_peer: None,
    })
    .map_err(|e| fail(e.to_string()))?;
    send_hs(&mut framed, &welcome).await.map_err(fail)?;
    let hello = recv_hs(&mut framed, HANDSHAKE_STEP).await.map_err(fail)?;
    let (state, confirm) = handshake
        .on_peer_hello(hello, &mut OsRng)
        .map_err(|e| fail(e.to_string()))?;
    send_hs(&mut framed, &confirm).await.map_err(fail)?;
    let reply = recv_hs(&mut framed, HANDSHAKE_STEP).await.map_err(fail)?;
    let session = state
        .on_joiner_confirm(reply)
        .map_err(|e| fail(e.to_string()))?;
    Ok(confirmed(Role::Host, framed, addr, session, name, public))
}

/// The dialer: tries the token's addresses in order; the host must prove the
/// token's identity.
pub async fn dial(
    port: LocalPort,
    token: &Token,
    ends: Ends<'_>,
) -> Result<(Connected, Matched), ClientError> {
    let code = room_of(token);
    let expected = IdentityKey(token.identity);
    let mut errors = Vec::new();
    for &addr in &token.addrs {
        let stream = match port.connect(addr, DIAL).await {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{addr}: {e}"));
                continue;
            }
        };
        match dial_one(stream, addr, &code, expected, &ends).await {
            Ok(pair) => return Ok(pair),
            Err(Dialed::Fatal(e)) => return Err(e),
            // `why` may carry the holder's words (a decoding error, say).
            Err(Dialed::Next(why)) => {
                errors.push(format!("{addr}: {}", wire::sanitize_for_terminal(&why)))
            }
        }
    }
    Err(ClientError::PeerUnreachable(format!(
        "could not reach the token's holder ({}). Is `client token` still running there, and \
         is its port reachable from here?",
        errors.join("; ")
    )))
}

enum Dialed {
    Next(String),
    Fatal(ClientError),
}

async fn dial_one(
    stream: TcpStream,
    addr: SocketAddr,
    code: &RoomCode,
    expected: IdentityKey,
    ends: &Ends<'_>,
) -> Result<(Connected, Matched), Dialed> {
    let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
    let keys = KeyPair::generate_cpace(ends.group, code, &mut OsRng)
        .map_err(|e| Dialed::Fatal(ClientError::Usage(e.to_string())))?;
    let hello = PeerHandshake::TokenHello {
        tag: code.tag().0,
        name: ends.name.to_owned(),
        group: ends.group.id(),
        public: keys.public().to_vec(),
    };
    send_hs(&mut framed, &hello).await.map_err(Dialed::Next)?;
    let (name, public) = match recv_hs(&mut framed, HANDSHAKE_STEP)
        .await
        .map_err(Dialed::Next)?
    {
        PeerHandshake::TokenWelcome { name, public } => (name, public),
        PeerHandshake::Reject { reason } => {
            return Err(Dialed::Next(format!(
                "refused us: {}",
                wire::sanitize_for_terminal(&reason)
            )))
        }
        _ => {
            return Err(Dialed::Next(
                "answered with something other than TokenWelcome".into(),
            ))
        }
    };
    wire::validate_name(&name).map_err(|e| Dialed::Next(format!("bad name: {e}")))?;
    let input = HandshakeInput {
        room: code.clone(),
        local_name: ends.name.to_owned(),
        local: keys,
        peer_name: name.clone(),
        peer_public: public.clone(),
        previous: ends.previous.clone(),
        keylog: ends.keylog,
        identity: ends.identity.clone(),
        expect_peer: Some(expected),
    };
    let fatal = |e| Dialed::Fatal(connect::handshake_failure(e, &name));
    let (state, peer_hello) = JoinerHelloSent::start(input, &mut OsRng).map_err(fatal)?;
    send_hs(&mut framed, &peer_hello)
        .await
        .map_err(Dialed::Next)?;
    let confirm = recv_hs(&mut framed, HANDSHAKE_STEP)
        .await
        .map_err(Dialed::Next)?;
    let (session, reply) = state.on_host_confirm(confirm).map_err(fatal)?;
    send_hs(&mut framed, &reply).await.map_err(Dialed::Next)?;
    Ok(confirmed(Role::Joiner, framed, addr, session, name, public))
}

/// The holder's answer, as the first record of the session.
pub async fn send_admission(
    conn: &mut Connected,
    admitted: Result<(), String>,
) -> Result<(), ClientError> {
    let msg = match admitted {
        Ok(()) => PeerMsg::Admitted,
        Err(reason) => PeerMsg::Denied { reason },
    };
    let plain = wire::encode(&msg).map_err(|e| ClientError::Internal(e.into()))?;
    let record = conn
        .session
        .sealer()
        .seal(&plain, &mut OsRng)
        .map_err(|e| ClientError::Internal(anyhow::anyhow!("sealing the admission: {e}")))?;
    timeout(HANDSHAKE_STEP, conn.framed.send(record.as_slice()))
        .await
        .map_err(|_| ClientError::ConnectionLost("the dialer stopped reading".into()))?
        .map_err(|e| ClientError::ConnectionLost(format!("lost the dialer: {e}")))
}

/// The dialer: waits for the holder's decision.
pub async fn await_admission(conn: &mut Connected, holder: &str) -> Result<(), ClientError> {
    let holder = wire::sanitize_for_terminal(holder).into_owned();
    let frame = match timeout(ADMISSION_WAIT, conn.framed.next()).await {
        Err(_) => {
            return Err(ClientError::Denied(format!(
                "{holder} did not let us in within {}; try again later",
                humantime::format_duration(ADMISSION_WAIT)
            )))
        }
        Ok(None) => {
            return Err(ClientError::ConnectionLost(format!(
                "{holder} closed the connection before deciding"
            )))
        }
        Ok(Some(Err(e))) => return Err(ClientError::ConnectionLost(format!("lost {holder}: {e}"))),
        Ok(Some(Ok(frame))) => frame,
    };
    let mut frame = BytesMut::from(&frame[..]);
    let plain = conn
        .session
        .opener()
        .open(&mut frame)
        .map_err(|_| ClientError::Integrity)?;
    match wire::decode::<PeerMsg>(plain) {
        Ok(PeerMsg::Admitted) => Ok(()),
        Ok(PeerMsg::Denied { reason }) => Err(ClientError::Denied(format!(
            "{holder} denied the connection ({}). Ask them to accept you, or to add you as a contact first.",
            wire::sanitize_for_terminal(&reason)
        ))),
        _ => Err(ClientError::ConnectionLost(format!(
            "{holder} sent something other than its decision first; session closed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_source_holds_at_most_its_share_of_the_judging_slots() {
        let mut slots = Slots::default();
        let flood = Source::of(addr("127.0.0.2:1").ip());
        let dialer = Source::of(addr("127.0.0.1:1").ip());
        let taken = (0..100).filter(|_| slots.take(flood)).count();
        assert_eq!(taken, MAX_JUDGED_PER_SOURCE);
        assert!(slots.take(dialer), "another source still gets a slot");
        slots.give_back(flood);
        assert!(slots.take(flood), "a slot given back can be taken again");
        // Many sources together stop at the total.
        let others = (0..100u8)
            .filter(|i| slots.take(Source::of(IpAddr::from([10, 0, 0, *i]))))
            .count();
        assert_eq!(slots.total, MAX_JUDGED);
        assert_eq!(others, MAX_JUDGED - MAX_JUDGED_PER_SOURCE - 1);
    }

    #[test]
    fn ipv6_sources_count_by_64_and_v4_mapped_ones_as_ipv4() {
        let a = Source::of("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Source::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = Source::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            Source::of("::ffff:192.0.2.7".parse().unwrap()),
            Source::of("192.0.2.7".parse().unwrap())
        );
    }

    #[test]
    fn a_flood_costs_a_bounded_number_of_lines_per_window_and_is_summed_up() {
        let start = Instant::now();
        let mut log = RefusalLog::new(start);
        let mut lines = Vec::new();
        // Ten minutes of refusals and closed connections, ten a second, from
        // two addresses, with the summaries taken when due (as `host` does).
        for tenth in 0..6000u64 {
            let now = start + Duration::from_millis(tenth * 100);
            if log.due().is_some_and(|due| due <= now) {
                lines.extend(log.roll(now));
            }
            let from = if tenth % 2 == 0 {
                "192.0.2.1:5"
            } else {
                "192.0.2.2:5"
            };
            lines.extend(if tenth % 3 == 0 {
                log.refused(now, addr(from), "no handshake message in time")
            } else {
                log.closed(now, Source::of(addr(from).ip()))
            });
        }
        lines.extend(log.summary());
        let windows = 10;
        assert!(
            lines.len() <= windows * (REFUSAL_LINES as usize + 1) + 1,
            "{} lines",
            lines.len()
        );
        let shown = lines
            .iter()
            .filter(|l| matches!(l, Turned::Away { .. }))
            .count();
        let Turned::Unshown { text } = lines.last().unwrap() else {
            panic!("the last line is a summary: {lines:?}");
        };
        assert!(
            text.contains("192.0.2.1") && text.contains("192.0.2.2"),
            "{text}"
        );
        // Nothing is lost: what was not shown is counted in a summary.
        let summed: u64 = lines
            .iter()
            .filter_map(|l| match l {
                Turned::Unshown { text } => text.split(' ').nth(2)?.parse::<u64>().ok(),
                Turned::Away { .. } => None,
            })
            .sum();
        assert_eq!(summed + shown as u64, 6000);
    }

    #[test]
    fn a_refusal_reason_is_shown_without_the_peers_escape_sequences() {
        let mut log = RefusalLog::new(Instant::now());
        let lines = log.refused(
            Instant::now(),
            addr("192.0.2.1:5"),
            "peer refused the connection: \u{1b}]0;title\u{7}\u{1b}[2Jhello",
        );
        let [Turned::Away { reason, .. }] = &lines[..] else {
            panic!("{lines:?}");
        };
        assert_eq!(reason, "peer refused the connection: hello");
    }

    #[test]
    fn summaries_name_a_bounded_number_of_sources() {
        let mut log = RefusalLog::new(Instant::now());
        for i in 0..=255u8 {
            log.closed(Instant::now(), Source::of(IpAddr::from([198, 51, 100, i])));
        }
        assert_eq!(log.sources.len(), SUMMARY_SOURCES);
        let [Turned::Unshown { text }] = &log.summary()[..] else {
            panic!("one summary");
        };
        assert!(
            text.starts_with("Turned away 256 more connections"),
            "{text}"
        );
        assert!(text.contains("and other addresses"), "{text}");
    }

    #[test]
    fn a_token_names_the_holders_server_with_its_port_written_out() {
        assert_eq!(
            mediator_of("chat.example.org").unwrap(),
            "chat.example.org:7070"
        );
        assert_eq!(mediator_of("203.0.113.1:9000").unwrap(), "203.0.113.1:9000");
        assert_eq!(
            mediator_of("[2001:db8::7]:443").unwrap(),
            "[2001:db8::7]:443"
        );
        assert_eq!(mediator_of("2001:db8::7").unwrap(), "[2001:db8::7]:7070");
        let err = mediator_of("bad host:7070").unwrap_err().to_string();
        assert!(err.contains("a token cannot name it"), "{err}");
    }
}
