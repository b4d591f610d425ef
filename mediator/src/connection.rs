//! One client connection, start to end: read the `Hello` by its deadline, check
//! it, join the room table, then either answer as the joiner or wait as the host
//! (answering `Ping`s) until the joiner, a timeout, the client leaving, or
//! shutdown. Every error is one `Error{code, message}` frame and then close.
//!
//! Frames are read by a small [`FrameReader`] rather than a `Framed` codec, whose
//! 8 KiB read buffer per waiting client would blow the memory budget.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use dhke::{check_public_range, Group, RoomTag};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use wire::frame::HEADER_LEN;
use wire::rendezvous::MAX_LOCAL_ADDRS;
use wire::{ClientMsg, ErrorCode, FrameError, Link, MediatorMsg, Role, PROTOCOL_VERSION};

use crate::metrics::Limit;
use crate::rooms::{Arrival, ConnId, JoinOutcome, PeerDetails};
use crate::server::Admitted;

/// A write (of at most one small frame) must finish within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// `Ping`s answered before the `Hello`; more is not a client, it is a loop.
const MAX_PINGS_BEFORE_HELLO: u32 = 8;
/// `Ping`s answered while waiting: one a second for the whole default room TTL,
/// ten times what an honest client sends.
const MAX_PINGS_WHILE_WAITING: u32 = 600;

/// How a conversation ends.
#[derive(Debug)]
enum End {
    /// Matched, or the client went away: nothing more to send.
    Done,
    /// Send `Error{code, message}`, then close.
    Refuse(ErrorCode, Cow<'static, str>),
}

fn refuse(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> End {
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

/// The `Hello` fields the mediator uses (`no_relay` matters only to a relay).
struct Hello {
    version: u16,
    room: [u8; 32],
    name: String,
    group: u8,
    public: Vec<u8>,
    listen_port: u16,
    local_addrs: Vec<SocketAddr>,
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
    let hello = tokio::select! {
        biased;
        _ = shared.cancel.cancelled() => {
            return refuse(ErrorCode::ShuttingDown, "the mediator is shutting down");
        }
        read = timeout_at(deadline, read_hello(&mut reader, stream)) => match read {
            Err(_) => return refuse(ErrorCode::Timeout, "no Hello within the hello timeout"),
            Ok(Err(end)) => return end,
            Ok(Ok(hello)) => hello,
        },
    };
    if let Err(refused) = shared.limits.hello(admitted.key) {
        shared.metrics.rejected(refused.limit());
        return refuse(ErrorCode::TooManyConnections, refused.message());
    }
    let (tag, arrival) = match check_hello(hello, peer, admitted.id) {
        Ok(checked) => checked,
        Err(end) => return end,
    };
    let room = tag.short_hex();
    match shared.rooms.join(tag, arrival) {
        JoinOutcome::Matched(host) => {
            shared.metrics.matched();
            tracing::debug!(%room, "matched");
            send_matched(stream, Role::Joiner, host).await
        }
        JoinOutcome::Waiting(handoff) => {
            tracing::debug!(%room, "waiting");
            wait_as_host(admitted, &mut reader, stream, &tag, handoff).await
        }
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
    }
}

/// Reads frames until a `Hello`, answering the odd `Ping`.
async fn read_hello(reader: &mut FrameReader, stream: &mut TcpStream) -> Result<Hello, End> {
    for _ in 0..=MAX_PINGS_BEFORE_HELLO {
        match reader.next(stream).await? {
            ClientMsg::Ping => write_msg(stream, &MediatorMsg::Pong).await?,
            ClientMsg::Hello {
                version,
                room,
                name,
                group,
                public,
                listen_port,
                local_addrs,
                no_relay: _,
            } => {
                return Ok(Hello {
                    version,
                    room,
                    name,
                    group,
                    public,
                    listen_port,
                    local_addrs,
                })
            }
        }
    }
    Err(refuse(ErrorCode::Malformed, "too many Pings before Hello"))
}

/// docs/protocol.md §4 checks, in the order a client can fix them. An unknown group id
/// gets `BadPublic`: a public value is meaningless outside a known group.
fn check_hello(hello: Hello, peer: SocketAddr, id: ConnId) -> Result<(RoomTag, Arrival), End> {
    if hello.version != PROTOCOL_VERSION {
        return Err(refuse(
            ErrorCode::BadVersion,
            format!(
                "protocol version {} is not supported; this mediator speaks {PROTOCOL_VERSION}",
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
        },
    };
    Ok((RoomTag(hello.room), arrival))
}

/// What woke a waiting host.
enum Event {
    Joined(Result<PeerDetails, oneshot::error::RecvError>),
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
    mut handoff: oneshot::Receiver<PeerDetails>,
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
                Event::Joined(Ok(joiner)) => return send_matched(stream, Role::Host, joiner).await,
                // The table dropped the room without a joiner: only a table
                // being torn down does that.
                Event::Joined(Err(_)) => return End::Done,
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
                Event::Message(Ok(ClientMsg::Hello { .. })) => {
                    break refuse(ErrorCode::Malformed, "already waiting in a room")
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
    if shared.rooms.leave(tag, admitted.id) {
        return reason;
    }
    // A joiner took the room while this host was on its way out: the joiner has
    // its details already, so the host gets the match rather than the error.
    match handoff.try_recv() {
        Ok(joiner) => send_matched(stream, Role::Host, joiner).await,
        Err(_) => reason,
    }
}

async fn send_matched(stream: &mut TcpStream, role: Role, peer: PeerDetails) -> End {
    let msg = MediatorMsg::Matched {
        role,
        peer_name: peer.name,
        public: peer.public,
        observed_addr: peer.observed_addr,
        listen_port: peer.listen_port,
        local_addrs: peer.local_addrs,
    };
    match write_msg(stream, &msg).await {
        Ok(()) | Err(End::Done) => End::Done,
        Err(end) => end,
    }
}

/// First read size: a whole `Hello` (about 450 bytes in group 15) fits, so it
/// usually takes one read.
const FIRST_READ: usize = 512;

/// Reads frames with as few reads as possible, keeping surplus bytes (a client
/// may send its next frame right behind this one). Holds no allocation between
/// frames, so a waiting client costs nothing here.
#[derive(Debug, Default)]
struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Reads and decodes the next message. The length is checked by
    /// `wire::Link::Mediator` as soon as the 4-byte header is in, before any
    /// buffer is sized for it. A clean end of stream between frames is `Done`.
    async fn next(&mut self, stream: &mut TcpStream) -> Result<ClientMsg, End> {
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
    let mut out = vec![0u8; HEADER_LEN];
    wire::encode_into(msg, &mut out).ok()?;
    let header = Link::Mediator.header(out.len() - HEADER_LEN).ok()?;
    out[..HEADER_LEN].copy_from_slice(&header);
    Some(out)
}

/// Writes one message; a client that cannot take it is gone (`Done`).
async fn write_msg(stream: &mut TcpStream, msg: &MediatorMsg) -> Result<(), End> {
    let Some(frame) = encode_frame(msg) else {
        tracing::error!("a mediator message does not fit a frame");
        return Err(End::Done);
    };
    match timeout(WRITE_TIMEOUT, stream.write_all(&frame)).await {
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
