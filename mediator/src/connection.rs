//! One client connection, start to end: read the `Hello` by its deadline, check
//! it, join the room table, then either answer as the joiner or wait as the host
//! (answering `Ping`s) until the joiner, a timeout, the client leaving, or
//! shutdown. After `Matched`, time the pair's hole punch (§12.2) and hold the
//! connection until the client leaves. A connection that opens with `RelayJoin`
//! goes to [`crate::relay`]. Every error is one `Error{code, message}` frame and
//! then close.
//!
//! Frames are read by a small [`FrameReader`] rather than a `Framed` codec, whose
//! 8 KiB read buffer per waiting client would blow the memory budget.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dhke::{check_public_range, Group, RoomTag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use wire::frame::HEADER_LEN;
use wire::rendezvous::MAX_LOCAL_ADDRS;
use wire::{
    ClientMsg, ErrorCode, FrameError, Link, MediatorMsg, RelayOffer, Role, PROTOCOL_VERSION,
};

use crate::metrics::Limit;
use crate::nameplates::{Nameplate, NameplateTable, NoNameplate};
use crate::rooms::{Arrival, ConnId, JoinOutcome, Joined, Pairing, PeerDetails};
use crate::server::Admitted;

/// A write (of at most one small frame) must finish within this.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// `Ping`s answered before the `Hello`; more is not a client, it is a loop.
const MAX_PINGS_BEFORE_HELLO: u32 = 8;
/// `Ping`s answered while waiting: one a second for the whole default room TTL,
/// ten times what an honest client sends.
const MAX_PINGS_WHILE_WAITING: u32 = 600;
/// How long the RTT probe after `Matched` waits for its `PunchPong`, and for the
/// other side's task to report its RTT.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest the nearer side's `PunchNow` is held back.
const MAX_PUNCH_DELAY: Duration = Duration::from_secs(1);
/// `Ping`s answered while a matched client holds its connection.
const MAX_PINGS_AFTER_MATCH: u32 = 32;

/// How a conversation ends.
#[derive(Debug)]
pub(crate) enum End {
    /// Matched, or the client went away: nothing more to send.
    Done,
    /// Send `Error{code, message}`, then close.
    Refuse(ErrorCode, Cow<'static, str>),
    /// The connection opened with `RelayJoin`: hand it to the relay.
    Relay([u8; 32]),
}

pub(crate) fn refuse(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> End {
    End::Refuse(code, message.into())
}

/// Serves one admitted client until its conversation ends, then closes.
pub(crate) async fn serve(
    admitted: Admitted,
    mut stream: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
) {
    let end = converse(&admitted, &mut stream, peer, accepted).await;
    if let End::Relay(token) = end {
        return crate::relay::serve(admitted, stream, token).await;
    }
    if let End::Refuse(code, message) = end {
        admitted.shared.metrics.error(code);
        tracing::debug!(code = code.as_str(), %peer, "refusing client");
        if let Some(frame) = encode_frame(&MediatorMsg::Error {
            code,
            message: message.into_owned(),
        }) {
            let _ = timeout(WRITE_TIMEOUT, stream.write_all(&frame)).await;
        }
    }
    // Dropping the stream closes it: the kernel sends what is queued, then FIN.
}

/// The `Hello` fields the mediator uses.
struct Hello {
    version: u16,
    room: [u8; 32],
    name: String,
    group: u8,
    public: Vec<u8>,
    listen_port: u16,
    local_addrs: Vec<SocketAddr>,
    no_relay: bool,
    /// `GroupHello`: a group room (§19).
    group_room: bool,
}

/// What a connection opened with.
enum First {
    /// A `Hello`, perhaps after `Allocate` reserved the nameplate it names.
    Hello(Hello, Option<Nameplate>),
    RelayJoin([u8; 32]),
}

async fn converse(
    admitted: &Admitted,
    stream: &mut TcpStream,
    peer: SocketAddr,
    accepted: Instant,
) -> End {
    let shared = &admitted.shared;
    let deadline = accepted + shared.config.hello_timeout;
    let mut reader = FrameReader::default();
    let first = tokio::select! {
        biased;
        _ = shared.cancel.cancelled() => {
            return refuse(ErrorCode::ShuttingDown, "the mediator is shutting down");
        }
        read = timeout_at(deadline, read_first(&mut reader, stream, &shared.nameplates)) => match read {
            Err(_) => return refuse(ErrorCode::Timeout, "no Hello within the hello timeout"),
            Ok(Err(end)) => return end,
            Ok(Ok(first)) => first,
        },
    };
    if let Err(refused) = shared.limits.hello(admitted.key) {
        shared.metrics.rejected(refused.limit());
        return refuse(ErrorCode::TooManyConnections, refused.message());
    }
    // A reserved nameplate stays taken while this connection lives (waiting,
    // matched, punching): it is released when the task ends. A group room keeps
    // it while the room lives.
    let (hello, nameplate) = match first {
        First::Hello(hello, plate) => (hello, plate),
        First::RelayJoin(_) if !reader.is_empty() => {
            return refuse(
                ErrorCode::Malformed,
                "send nothing after RelayJoin before RelayReady",
            )
        }
        First::RelayJoin(token) => return End::Relay(token),
    };
    let no_relay = hello.no_relay;
    let group_room = hello.group_room;
    // The mediator that completes a match hosts the pair's relay: this one if
    // this arrival turns out to be the joiner.
    let (host_end, joiner_end) = Pairing::pair(
        rand::random(),
        shared.tokens.expiry(shared.config.relay_token_ttl),
        crate::relay::own_server(&shared.config),
    );
    let (tag, arrival) = match check_hello(hello, peer, admitted.id, host_end) {
        Ok(checked) => checked,
        Err(end) => return end,
    };
    let room = tag.short_hex();
    if group_room {
        return crate::group_member::serve(admitted, &mut reader, stream, tag, arrival, nameplate)
            .await;
    }
    if shared.groups.contains(&tag).await {
        return refuse(
            ErrorCode::RoomKind,
            "this room code belongs to a group room: join it with --group",
        );
    }
    let _nameplate = nameplate;
    match shared.rooms.join(tag, arrival).await {
        JoinOutcome::Matched(host) => {
            shared.metrics.matched();
            tracing::debug!(%room, "matched");
            let relay = relay_offer(admitted, no_relay, host.no_relay, &joiner_end);
            match send_matched(stream, Role::Joiner, host, peer, relay).await {
                Ok(probe) => punch(admitted, &mut reader, stream, joiner_end, probe).await,
                Err(end) => end,
            }
        }
        JoinOutcome::Waiting(handoff) => {
            tracing::debug!(%room, "waiting");
            wait_as_host(admitted, &mut reader, stream, &tag, handoff, peer, no_relay).await
        }
        JoinOutcome::GroupRoom => refuse(
            ErrorCode::RoomKind,
            "this room code belongs to a group room: join it with --group",
        ),
        JoinOutcome::GroupMismatch => refuse(
            ErrorCode::GroupMismatch,
            "the peer waiting in this room uses another DH group",
        ),
        JoinOutcome::Full => {
            shared.metrics.rejected(Limit::MaxRooms);
            refuse(
                ErrorCode::TooManyConnections,
                "the mediator holds its maximum of waiting rooms; try again later",
            )
        }
        // TooManyConnections: the code clients already retry on, with a message
        // that says what is wrong (docs/protocol.md §18.6).
        JoinOutcome::Unavailable(message) => {
            shared.metrics.rejected(Limit::RoomStore);
            refuse(ErrorCode::TooManyConnections, message)
        }
    }
}

/// Reads frames until a `Hello` or a `RelayJoin`, answering the odd `Ping` and
/// at most one `Allocate` (docs/protocol.md §13.2).
async fn read_first(
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    nameplates: &Arc<dyn NameplateTable>,
) -> Result<First, End> {
    let mut plate: Option<Nameplate> = None;
    for _ in 0..=MAX_PINGS_BEFORE_HELLO {
        let msg = reader.next(stream).await?;
        let group_room = matches!(msg, ClientMsg::GroupHello { .. });
        match msg {
            ClientMsg::Ping => write_msg(stream, &MediatorMsg::Pong).await?,
            // The two carry the same fields (docs/protocol.md §4, §19.1).
            ClientMsg::Hello {
                version,
                room,
                name,
                group,
                public,
                listen_port,
                local_addrs,
                no_relay,
            }
            | ClientMsg::GroupHello {
                version,
                room,
                name,
                group,
                public,
                listen_port,
                local_addrs,
                no_relay,
            } => {
                let hello = Hello {
                    version,
                    room,
                    name,
                    group,
                    public,
                    listen_port,
                    local_addrs,
                    no_relay,
                    group_room,
                };
                return Ok(First::Hello(hello, plate));
            }
            ClientMsg::RelayJoin { token } => return Ok(First::RelayJoin(token)),
            ClientMsg::PunchPong { .. } => {
                return Err(refuse(ErrorCode::Malformed, "PunchPong before Matched"))
            }
            ClientMsg::SessionPath { .. } => {
                return Err(refuse(ErrorCode::Malformed, "SessionPath before Matched"))
            }
            ClientMsg::Allocate if plate.is_some() => {
                return Err(refuse(ErrorCode::Malformed, "one Allocate per connection"))
            }
            ClientMsg::Allocate => {
                let got = match nameplates.allocate().await {
                    Ok(got) => got,
                    Err(NoNameplate::Exhausted) => {
                        return Err(refuse(
                            ErrorCode::NoNameplate,
                            "no free room numbers; try again in a minute",
                        ))
                    }
                    Err(NoNameplate::Unavailable(message)) => {
                        return Err(refuse(ErrorCode::TooManyConnections, message))
                    }
                };
                write_msg(
                    stream,
                    &MediatorMsg::Allocated {
                        nameplate: got.number(),
                    },
                )
                .await?;
                plate = Some(got);
            }
        }
    }
    Err(refuse(ErrorCode::Malformed, "too many Pings before Hello"))
}

/// docs/protocol.md §4 checks, in the order a client can fix them. An unknown group id
/// gets `BadPublic`: a public value is meaningless outside a known group.
fn check_hello(
    hello: Hello,
    peer: SocketAddr,
    id: ConnId,
    host_end: Pairing,
) -> Result<(RoomTag, Arrival), End> {
    if hello.version != PROTOCOL_VERSION {
        return Err(refuse(
            ErrorCode::BadVersion,
            format!(
                "protocol version {} is not supported; this mediator speaks {PROTOCOL_VERSION}: \
                 update the client (or the mediator)",
                hello.version
            ),
        ));
    }
    if hello.local_addrs.len() > MAX_LOCAL_ADDRS {
        return Err(refuse(
            ErrorCode::Malformed,
            format!("at most {MAX_LOCAL_ADDRS} local addresses"),
        ));
    }
    if let Err(e) = wire::validate_name(&hello.name) {
        return Err(refuse(ErrorCode::BadName, e.to_string()));
    }
    let group =
        Group::from_id(hello.group).map_err(|e| refuse(ErrorCode::BadPublic, e.to_string()))?;
    check_public_range(group, &hello.public)
        .map_err(|e| refuse(ErrorCode::BadPublic, e.to_string()))?;
    let arrival = Arrival {
        id,
        group: hello.group,
        details: PeerDetails {
            name: hello.name,
            public: hello.public,
            observed_addr: peer,
            listen_port: hello.listen_port,
            local_addrs: hello.local_addrs,
            no_relay: hello.no_relay,
        },
        host_end,
    };
    Ok((RoomTag(hello.room), arrival))
}

/// What `Matched` says about the relay to a client that sent `own_no_relay`: `Off`
/// if this mediator, or the one that completed the match and would relay, runs with
/// `--relay off`.
fn relay_offer(
    admitted: &Admitted,
    own_no_relay: bool,
    peer_no_relay: bool,
    pairing: &Pairing,
) -> RelayOffer {
    relay_offer_for(
        admitted,
        (own_no_relay, peer_no_relay),
        &pairing.pair_id,
        pairing.token_expires,
        pairing.relay_server.as_deref(),
    )
}

/// [`relay_offer`] from its parts: the pair's id and token expiry, and the
/// relay that serves it (`None`: that mediator's relay is off). Group rooms'
/// `Member` uses it too (§19.1).
pub(crate) fn relay_offer_for(
    admitted: &Admitted,
    (own_no_relay, peer_no_relay): (bool, bool),
    pair_id: &[u8; 12],
    expires: u32,
    relay_server: Option<&str>,
) -> RelayOffer {
    let shared = &admitted.shared;
    let Some(server) = relay_server.filter(|_| shared.config.relay) else {
        return RelayOffer::Off;
    };
    if own_no_relay {
        RelayOffer::RefusedByYou
    } else if peer_no_relay {
        RelayOffer::RefusedByPeer
    } else {
        RelayOffer::Offered {
            token: shared.tokens.mint(pair_id, expires, server),
            server: server.to_owned(),
        }
    }
}

/// What woke a waiting host.
enum Event {
    Joined(Result<Joined, oneshot::error::RecvError>),
    ShuttingDown,
    Deadline,
    Message(Result<ClientMsg, End>),
}

/// The host's side: wait for the joiner, answering `Ping`s, until a deadline.
async fn wait_as_host(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    tag: &RoomTag,
    mut handoff: oneshot::Receiver<Joined>,
    peer: SocketAddr,
    no_relay: bool,
) -> End {
    let shared = &admitted.shared;
    let config = &shared.config;
    let opened = Instant::now();
    let expires = opened + config.room_ttl;
    let mut idle_until = opened + config.idle_timeout;
    let expires_in_secs =
        u32::try_from(config.room_ttl.as_secs_f64().ceil() as u64).unwrap_or(u32::MAX);
    let mut pings = 0u32;
    let reason = match write_msg(stream, &MediatorMsg::Waiting { expires_in_secs }).await {
        Err(end) => end,
        Ok(()) => loop {
            let event = tokio::select! {
                biased;
                joined = &mut handoff => Event::Joined(joined),
                _ = shared.cancel.cancelled() => Event::ShuttingDown,
                _ = sleep_until(expires.min(idle_until)) => Event::Deadline,
                msg = reader.next(stream) => Event::Message(msg),
            };
            match event {
                Event::Joined(Ok(joined)) => {
                    return host_matched(admitted, reader, stream, joined, peer, no_relay).await
                }
                // The table dropped the room without a joiner: the shared
                // store lost it and another host holds the tag now (§18.4).
                Event::Joined(Err(_)) => {
                    return refuse(
                        ErrorCode::TooManyConnections,
                        "the mediators lost this room (their room store restarted); connect again",
                    )
                }
                Event::ShuttingDown => {
                    break refuse(ErrorCode::ShuttingDown, "the mediator is shutting down")
                }
                Event::Deadline if Instant::now() >= expires => {
                    break refuse(ErrorCode::Timeout, "the room expired before a peer came")
                }
                Event::Deadline => {
                    break refuse(ErrorCode::Timeout, "no Ping within the idle timeout")
                }
                Event::Message(Err(end)) => break end,
                Event::Message(Ok(ClientMsg::Hello { .. } | ClientMsg::GroupHello { .. })) => {
                    break refuse(ErrorCode::Malformed, "already waiting in a room")
                }
                Event::Message(Ok(
                    ClientMsg::PunchPong { .. } | ClientMsg::RelayJoin { .. } | ClientMsg::Allocate,
                )) => break refuse(ErrorCode::Malformed, "unexpected message while waiting"),
                Event::Message(Ok(ClientMsg::SessionPath { .. })) => {
                    break refuse(ErrorCode::Malformed, "unexpected message while waiting")
                }
                Event::Message(Ok(ClientMsg::Ping)) => {
                    pings += 1;
                    if pings > MAX_PINGS_WHILE_WAITING {
                        break refuse(ErrorCode::Malformed, "too many Pings");
                    }
                    idle_until = Instant::now() + config.idle_timeout;
                    if let Err(end) = write_msg(stream, &MediatorMsg::Pong).await {
                        break end;
                    }
                }
            }
        },
    };
    if shared.rooms.leave(tag, admitted.id).await {
        return reason;
    }
    // A joiner took the room while this host was on its way out: the joiner has
    // its details already, so the host gets the match rather than the error.
    match handoff.try_recv() {
        Ok(joined) => host_matched(admitted, reader, stream, joined, peer, no_relay).await,
        Err(_) => reason,
    }
}

async fn host_matched(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    joined: Joined,
    peer: SocketAddr,
    no_relay: bool,
) -> End {
    let Joined { details, pairing } = joined;
    let relay = relay_offer(admitted, no_relay, details.no_relay, &pairing);
    match send_matched(stream, Role::Host, details, peer, relay).await {
        Ok(probe) => punch(admitted, reader, stream, pairing, probe).await,
        Err(end) => end,
    }
}

/// The `PunchPing` that went out with `Matched`: its nonce and when it left.
struct Probe {
    nonce: u64,
    sent: Instant,
}

/// Sends `Matched` and, in the same write, the first `PunchPing` (§12.2): one
/// syscall and one segment where there were two.
async fn send_matched(
    stream: &mut TcpStream,
    role: Role,
    peer: PeerDetails,
    your_addr: SocketAddr,
    relay: RelayOffer,
) -> Result<Probe, End> {
    let matched = MediatorMsg::Matched {
        role,
        peer_name: peer.name,
        public: peer.public,
        observed_addr: peer.observed_addr,
        listen_port: peer.listen_port,
        local_addrs: peer.local_addrs,
        your_addr,
        relay,
    };
    let nonce: u64 = rand::random();
    let sent = Instant::now();
    write_msgs(stream, &[&matched, &MediatorMsg::PunchPing { nonce }]).await?;
    Ok(Probe { nonce, sent })
}

/// After `Matched` (docs/protocol.md §12.2): measure our client's round trip with
/// `PunchPing`, swap it with the other side's task, hold the nearer side's
/// `PunchNow` back by half the difference so both arrive together, then keep the
/// connection (answering `Ping`s) until the client closes it or `punch_hold`.
async fn punch(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    pairing: Pairing,
    Probe { nonce, sent }: Probe,
) -> End {
    let shared = &admitted.shared;
    let hold_until = Instant::now() + shared.config.punch_hold;
    let probe_deadline = sent + PROBE_TIMEOUT;
    let mut pings = 0u32;
    let rtt = loop {
        let msg = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return End::Done,
            read = timeout_at(probe_deadline, reader.next(stream)) => read,
        };
        match msg {
            Err(_) => break PROBE_TIMEOUT,
            Ok(Err(end)) => return end,
            Ok(Ok(ClientMsg::PunchPong { nonce: n })) if n == nonce => break sent.elapsed(),
            Ok(Ok(ClientMsg::SessionPath { path })) => {
                return path_reported(admitted, stream, path)
            }
            Ok(Ok(ClientMsg::Ping)) if pings < MAX_PINGS_AFTER_MATCH => {
                pings += 1;
                if let Err(end) = write_msg(stream, &MediatorMsg::Pong).await {
                    return end;
                }
            }
            Ok(Ok(_)) => return refuse(ErrorCode::Malformed, "unexpected message after Matched"),
        }
    };
    let Pairing {
        rtt_out, rtt_in, ..
    } = pairing;
    let _ = rtt_out.send(rtt);
    // A peer task that is gone or slow gives no figure: then send at once.
    let peer_rtt = match timeout(PROBE_TIMEOUT, rtt_in).await {
        Ok(Ok(peer_rtt)) => peer_rtt,
        _ => rtt,
    };
    let delay = (peer_rtt.saturating_sub(rtt) / 2).min(MAX_PUNCH_DELAY);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Err(end) = write_msg(stream, &MediatorMsg::PunchNow).await {
        return end;
    }
    shared.metrics.punch_timed();
    loop {
        let msg = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return End::Done,
            () = sleep_until(hold_until) => return End::Done,
            msg = reader.next(stream) => msg,
        };
        match msg {
            Err(end) => return end,
            Ok(ClientMsg::Ping) if pings < MAX_PINGS_AFTER_MATCH => {
                pings += 1;
                if let Err(end) = write_msg(stream, &MediatorMsg::Pong).await {
                    return end;
                }
            }
            // A late answer to the probe is harmless.
            Ok(ClientMsg::PunchPong { .. }) => {}
            Ok(ClientMsg::SessionPath { path }) => return path_reported(admitted, stream, path),
            Ok(_) => return refuse(ErrorCode::Malformed, "unexpected message after Matched"),
        }
    }
}

/// `SessionPath` after `Matched` (§4): counted, and the conversation is over,
/// so a connection reports once at most. Closed with a reset, as the client
/// closes it too, so that neither side keeps the pair in TIME_WAIT.
fn path_reported(admitted: &Admitted, stream: &TcpStream, path: wire::PathLabel) -> End {
    admitted.shared.metrics.session_path(path);
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    End::Done
}

/// First read size: a whole `Hello` (about 450 bytes in group 15) fits, so it
/// usually takes one read.
const FIRST_READ: usize = 512;

/// Reads frames with as few reads as possible, keeping surplus bytes (a client
/// may send its next frame right behind this one). Holds no allocation between
/// frames, so a waiting client costs nothing here.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Whether bytes past the last frame are buffered.
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads and decodes the next message. The length is checked by
    /// `wire::Link::Mediator` as soon as the 4-byte header is in, before any
    /// buffer is sized for it. A clean end of stream between frames is `Done`.
    pub(crate) async fn next(&mut self, stream: &mut TcpStream) -> Result<ClientMsg, End> {
        loop {
            let mut need = HEADER_LEN;
            if let Some(header) = self.buf.first_chunk::<HEADER_LEN>() {
                let len = Link::Mediator.parse_header(*header).map_err(|e| match e {
                    FrameError::Empty => refuse(ErrorCode::Malformed, "empty frame"),
                    other => refuse(ErrorCode::Malformed, other.to_string()),
                })?;
                need = HEADER_LEN + len;
                if self.buf.len() >= need {
                    let msg = wire::decode(&self.buf[HEADER_LEN..need])
                        .map_err(|e| refuse(ErrorCode::Malformed, e.to_string()));
                    self.buf.drain(..need);
                    if self.buf.is_empty() {
                        self.buf = Vec::new();
                    }
                    return msg;
                }
            }
            // need ≤ HEADER_LEN + MEDIATOR_FRAME_MAX: the buffer stays bounded.
            self.buf.reserve(need.max(FIRST_READ) - self.buf.len());
            match stream.read_buf(&mut self.buf).await {
                Ok(0) if self.buf.is_empty() => return Err(End::Done),
                Ok(0) => return Err(refuse(ErrorCode::Malformed, "truncated frame")),
                Ok(_) => {}
                Err(_) => return Err(End::Done),
            }
        }
    }
}

/// One frame (header and payload) in one buffer, so it goes out in one write.
fn encode_frame(msg: &MediatorMsg) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    append_frame(msg, &mut out)?;
    Some(out)
}

/// Appends `msg` as one frame (header and body) to `out`.
fn append_frame(msg: &MediatorMsg, out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    wire::encode_into(msg, out).ok()?;
    let header = Link::Mediator.header(out.len() - start - HEADER_LEN).ok()?;
    out[start..start + HEADER_LEN].copy_from_slice(&header);
    Some(())
}

/// Writes one message; a client that cannot take it is gone (`Done`).
pub(crate) async fn write_msg(stream: &mut TcpStream, msg: &MediatorMsg) -> Result<(), End> {
    write_msgs(stream, &[msg]).await
}

/// Writes `msgs` in order with one write; a client that cannot take them is gone.
async fn write_msgs(stream: &mut TcpStream, msgs: &[&MediatorMsg]) -> Result<(), End> {
    let mut frames = Vec::new();
    if msgs
        .iter()
        .any(|msg| append_frame(msg, &mut frames).is_none())
    {
        tracing::error!("a mediator message does not fit a frame");
        return Err(End::Done);
    }
    match timeout(WRITE_TIMEOUT, stream.write_all(&frames)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(End::Done),
    }
}

/// Encodes a refusal for callers that cannot await (the accept loop).
pub(crate) fn error_frame(code: ErrorCode, message: &str) -> Option<Vec<u8>> {
    encode_frame(&MediatorMsg::Error {
        code,
        message: message.to_owned(),
    })
}
