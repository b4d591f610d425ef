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
//!
//! A waiting client costs its task, whose size is the largest state of this
//! future: everything that is large and not part of waiting (the group room, the
//! relay, the state after `Matched`, a write) is boxed or built outside the
//! future, and messages are encoded before a write is awaited, so no message
//! value sits in the state. `connection_task_is_small` keeps it that way.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
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
use crate::rooms::{Arrival, ConnId, JoinOutcome, Joined, PairTerms, Pairing, PeerDetails};
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
/// A shorter hold-back is not worth a timer: tokio's ticks are 1 ms, so the
/// sleep would last up to a whole tick, longer than the wait it stands for, and
/// cost a timer and a wake-up per pair on every fast link (§12.2's waits on a LAN
/// are tens of microseconds). Sending at once is off by less than this.
const MIN_PUNCH_DELAY: Duration = Duration::from_micros(500);
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
    /// The connection opened with `Presence`: it waits under these tags (§21).
    Presence(Vec<[u8; 32]>),
    /// The connection opened with this mailbox request (§22.3).
    Mailbox(Box<ClientMsg>),
}

pub(crate) fn refuse(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> End {
    End::Refuse(code, message.into())
}

/// Serves one admitted client until its conversation ends, then closes.
///
/// A function returning an `async move` block rather than an `async fn`: an
/// `async fn` keeps its arguments twice in its state (as passed, and moved into
/// the body), and this state is what every waiting client costs.
#[allow(clippy::manual_async_fn)] // an async fn's state would hold its arguments twice
pub(crate) fn serve(
    admitted: Admitted,
    mut stream: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
) -> impl Future<Output = ()> + Send {
    async move {
        match converse(&admitted, &mut stream, &peer, accepted).await {
            // Boxed: the relay's state is large, and it is not a waiting client's.
            End::Relay(token) => Box::pin(crate::relay::serve(admitted, stream, token)).await,
            End::Refuse(code, message) => {
                admitted.shared.metrics.error(code);
                tracing::debug!(code = code.as_str(), %peer, "refusing client");
                if let Some(frame) = error_frame(code, &message) {
                    let _ = timeout(WRITE_TIMEOUT, stream.write_all(&frame)).await;
                }
            }
            End::Done | End::Presence(_) | End::Mailbox(_) => {}
        }
        // Dropping the stream closes it: the kernel sends what is queued, then FIN.
    }
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
    /// `Presence`: wait under these tags (§21).
    Presence(Vec<[u8; 32]>),
    /// A mailbox request (§22.3).
    Mailbox(Box<ClientMsg>),
}

/// (Not an `async fn`, for the reason given at [`serve`].)
#[allow(clippy::manual_async_fn)] // an async fn's state would hold its arguments twice
fn converse<'a>(
    admitted: &'a Admitted,
    stream: &'a mut TcpStream,
    peer: &'a SocketAddr,
    accepted: Instant,
) -> impl Future<Output = End> + Send + 'a {
    async move {
        let mut reader = FrameReader::default();
        // Everything up to the wait happens in `arrive`, whose state is gone
        // before the wait begins: only `Host` goes on.
        let host = match arrive(admitted, &mut reader, stream, peer, accepted).await {
            Ok(host) => host,
            // Boxed: a presence holder's state is not a waiting host's.
            Err(End::Presence(tags)) => {
                return Box::pin(crate::presence::serve(admitted, &mut reader, stream, tags)).await
            }
            Err(End::Mailbox(first)) => {
                return Box::pin(crate::mailbox::serve(admitted, &mut reader, stream, *first)).await
            }
            Err(end) => return end,
        };
        let Host {
            tag,
            handoff,
            no_relay,
            nameplate: _nameplate,
        } = host;
        wait_as_host(admitted, &mut reader, stream, &tag, handoff, peer, no_relay).await
    }
}

/// A client that opened a room and waits in it as the host.
struct Host {
    tag: RoomTag,
    /// Brings the joiner.
    handoff: oneshot::Receiver<Box<Joined>>,
    no_relay: bool,
    /// A reserved nameplate stays taken while the connection lives. Boxed: it is
    /// rarely there.
    nameplate: Option<Box<Nameplate>>,
}

/// From the connection's opening to the room table: `Ok` if the client opened
/// a room and waits in it as the host, else how its conversation ended (as the
/// joiner of a match, in a group room, in the relay, or refused).
async fn arrive(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    peer: &SocketAddr,
    accepted: Instant,
) -> Result<Host, End> {
    let shared = &admitted.shared;
    let (hello, nameplate) = read_hello(admitted, reader, stream, accepted).await?;
    let no_relay = hello.no_relay;
    let group_room = hello.group_room;
    // The mediator that completes a match hosts the pair's relay: this one if
    // this arrival turns out to be the joiner. Plain values: the pair's channels
    // are made only when the match happens.
    let terms = PairTerms {
        pair_id: rand::random(),
        token_expires: shared.tokens.expiry(shared.config.relay_token_ttl),
        relay_server: crate::relay::own_server(&shared.config),
    };
    let (tag, arrival) = check_hello(hello, *peer, admitted.id, terms)?;
    if group_room {
        // Boxed: a group member's state is large, and not a waiting client's.
        return Err(Box::pin(crate::group_member::serve(
            admitted, reader, stream, tag, arrival, nameplate,
        ))
        .await);
    }
    if shared.groups.contains(&tag).await {
        return Err(refuse(
            ErrorCode::RoomKind,
            "this room code belongs to a group room: join it with --group",
        ));
    }
    let nameplate = nameplate.map(Box::new);
    match shared.rooms.join(tag, arrival).await {
        JoinOutcome::Matched(host, pairing) => {
            shared.metrics.matched();
            tracing::debug!(room = %tag.short_hex(), "matched");
            let side = Side {
                role: Role::Joiner,
                your_addr: *peer,
                no_relay,
            };
            // Boxed, like the host's: the two share `matched`'s state type.
            Err(Box::pin(matched(admitted, reader, stream, side, host, pairing)).await)
        }
        JoinOutcome::Waiting(handoff) => {
            tracing::debug!(room = %tag.short_hex(), "waiting");
            // A contact's messenger waiting under this tag comes to meet us,
            // here or at another instance sharing the table.
            shared.presence.ring(&tag.0);
            shared.rooms.announce_waiting(tag);
            Ok(Host {
                tag,
                handoff,
                no_relay,
                nameplate,
            })
        }
        JoinOutcome::GroupRoom => Err(refuse(
            ErrorCode::RoomKind,
            "this room code belongs to a group room: join it with --group",
        )),
        JoinOutcome::GroupMismatch => Err(refuse(
            ErrorCode::GroupMismatch,
            "the peer waiting in this room uses another DH group",
        )),
        JoinOutcome::Full => {
            shared.metrics.rejected(Limit::MaxRooms);
            Err(refuse(
                ErrorCode::TooManyConnections,
                "the mediator holds its maximum of waiting rooms; try again later",
            ))
        }
        // TooManyConnections: the code clients already retry on, with a message
        // that says what is wrong (docs/protocol.md §18.6).
        JoinOutcome::Unavailable(message) => {
            shared.metrics.rejected(Limit::RoomStore);
            Err(refuse(ErrorCode::TooManyConnections, message))
        }
    }
}

/// The connection's opening, by the hello deadline: a `Hello` (and the nameplate
/// an `Allocate` before it reserved), or how the conversation ends: a refusal,
/// or `Relay` for a connection that opened with `RelayJoin`. Counts the `Hello`
/// against the per-address rate.
async fn read_hello(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    accepted: Instant,
) -> Result<(Hello, Option<Nameplate>), End> {
    let shared = &admitted.shared;
    let deadline = accepted + shared.config.hello_timeout;
    // Boxed: reading the first frame may answer `Allocate` (a nameplate table
    // call and a write), more state than waiting needs; it is freed at the Hello.
    // The read goes first: the Hello is usually in by the time the connection is
    // accepted, and then the shutdown watch is never registered (a lock shared by
    // every connection, taken to register and again to drop).
    let first = tokio::select! {
        biased;
        read = timeout_at(deadline, Box::pin(read_first(reader, stream, &shared.nameplates))) => match read {
            Err(_) => return Err(refuse(ErrorCode::Timeout, "no Hello within the hello timeout")),
            Ok(read) => read?,
        },
        _ = shared.cancel.cancelled() => {
            return Err(refuse(ErrorCode::ShuttingDown, "the mediator is shutting down"));
        }
    };
    if let Err(refused) = shared.limits.hello(admitted.key) {
        shared.metrics.rejected(refused.limit());
        return Err(refuse(ErrorCode::TooManyConnections, refused.message()));
    }
    match first {
        First::Hello(hello, plate) => Ok((hello, plate)),
        First::RelayJoin(_) if !reader.is_empty() => Err(refuse(
            ErrorCode::Malformed,
            "send nothing after RelayJoin before RelayReady",
        )),
        First::RelayJoin(token) => Err(End::Relay(token)),
        First::Presence(tags) => Err(End::Presence(tags)),
        First::Mailbox(first) => Err(End::Mailbox(first)),
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
            ClientMsg::Ping => write_msg(stream, MediatorMsg::Pong).await?,
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
            ClientMsg::Presence { .. } if plate.is_some() => {
                return Err(refuse(ErrorCode::Malformed, "Presence after Allocate"))
            }
            ClientMsg::Presence { tags } => return Ok(First::Presence(tags)),
            msg @ (ClientMsg::MailboxOpen { .. }
            | ClientMsg::MailboxAdd { .. }
            | ClientMsg::MailboxFetch { .. }
            | ClientMsg::MailboxRemove { .. }) => {
                if plate.is_some() {
                    return Err(refuse(
                        ErrorCode::Malformed,
                        "a mailbox request after Allocate",
                    ));
                }
                return Ok(First::Mailbox(Box::new(msg)));
            }
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
                    MediatorMsg::Allocated {
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
    terms: PairTerms,
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
        terms,
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
        &pairing.terms.pair_id,
        pairing.terms.token_expires,
        pairing.terms.relay_server.as_deref(),
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
    Joined(Result<Box<Joined>, oneshot::error::RecvError>),
    ShuttingDown,
    Deadline,
    Message(Result<ClientMsg, End>),
}

/// The host's side: wait for the joiner, answering `Ping`s, until a deadline.
/// This is the state a waiting client's task holds for minutes: keep it small.
/// (Not an `async fn`, for the reason given at [`serve`].)
#[allow(clippy::manual_async_fn)] // an async fn's state would hold its arguments twice
fn wait_as_host<'a>(
    admitted: &'a Admitted,
    reader: &'a mut FrameReader,
    stream: &'a mut TcpStream,
    tag: &'a RoomTag,
    mut handoff: oneshot::Receiver<Box<Joined>>,
    peer: &'a SocketAddr,
    no_relay: bool,
) -> impl Future<Output = End> + Send + 'a {
    async move {
        let shared = &admitted.shared;
        let config = &shared.config;
        let opened = Instant::now();
        let expires = opened + config.room_ttl;
        let mut idle_until = opened + config.idle_timeout;
        let expires_in_secs =
            u32::try_from(config.room_ttl.as_secs_f64().ceil() as u64).unwrap_or(u32::MAX);
        let mut pings = 0u32;
        // The loop ends with the joiner or with why the host leaves; the event
        // that decided it is gone by then, so no message sits in the state.
        let waited: Result<Box<Joined>, End> = 'wait: {
            if let Err(end) = write_msg(stream, MediatorMsg::Waiting { expires_in_secs }).await {
                break 'wait Err(end);
            }
            loop {
                let event = tokio::select! {
                    biased;
                    joined = &mut handoff => Event::Joined(joined),
                    _ = shared.cancel.cancelled() => Event::ShuttingDown,
                    _ = sleep_until(expires.min(idle_until)) => Event::Deadline,
                    msg = reader.next(stream) => Event::Message(msg),
                };
                let reason = match event {
                    Event::Joined(Ok(joined)) => break 'wait Ok(joined),
                    // The table dropped the room without a joiner: the shared
                    // store lost it and another host holds the tag now (§18.4).
                    Event::Joined(Err(_)) => {
                        return refuse(
                            ErrorCode::TooManyConnections,
                            "the mediators lost this room (their room store restarted); \
                             connect again",
                        )
                    }
                    Event::ShuttingDown => {
                        refuse(ErrorCode::ShuttingDown, "the mediator is shutting down")
                    }
                    Event::Deadline if Instant::now() >= expires => {
                        refuse(ErrorCode::Timeout, "the room expired before a peer came")
                    }
                    Event::Deadline => {
                        refuse(ErrorCode::Timeout, "no Ping within the idle timeout")
                    }
                    Event::Message(Err(end)) => end,
                    Event::Message(Ok(ClientMsg::Hello { .. } | ClientMsg::GroupHello { .. })) => {
                        refuse(ErrorCode::Malformed, "already waiting in a room")
                    }
                    Event::Message(Ok(
                        ClientMsg::PunchPong { .. }
                        | ClientMsg::RelayJoin { .. }
                        | ClientMsg::Allocate
                        | ClientMsg::SessionPath { .. }
                        | ClientMsg::Presence { .. }
                        | ClientMsg::MailboxOpen { .. }
                        | ClientMsg::MailboxAdd { .. }
                        | ClientMsg::MailboxFetch { .. }
                        | ClientMsg::MailboxRemove { .. },
                    )) => refuse(ErrorCode::Malformed, "unexpected message while waiting"),
                    Event::Message(Ok(ClientMsg::Ping)) => {
                        pings += 1;
                        if pings > MAX_PINGS_WHILE_WAITING {
                            refuse(ErrorCode::Malformed, "too many Pings")
                        } else {
                            idle_until = Instant::now() + config.idle_timeout;
                            // Encoded and (nearly always) written here, before the
                            // next await.
                            let pong = write_msg(stream, MediatorMsg::Pong);
                            match pong.await {
                                Ok(()) => continue,
                                Err(end) => end,
                            }
                        }
                    }
                };
                break 'wait Err(reason);
            }
        };
        let reason = match waited {
            Ok(joined) => {
                return host_matched(admitted, reader, stream, *joined, peer, no_relay).await
            }
            Err(reason) => reason,
        };
        if shared.rooms.leave(tag, admitted.id).await {
            return reason;
        }
        // A joiner took the room while this host was on its way out: the joiner has
        // its details already, so the host gets the match rather than the error.
        match handoff.try_recv() {
            Ok(joined) => host_matched(admitted, reader, stream, *joined, peer, no_relay).await,
            Err(_) => reason,
        }
    }
}

/// The host's `Matched` and punch, boxed: a waiting host's task must not carry
/// their state.
fn host_matched<'a>(
    admitted: &'a Admitted,
    reader: &'a mut FrameReader,
    stream: &'a mut TcpStream,
    joined: Joined,
    peer: &SocketAddr,
    no_relay: bool,
) -> Pin<Box<dyn Future<Output = End> + Send + 'a>> {
    let Joined { details, pairing } = joined;
    let side = Side {
        role: Role::Host,
        your_addr: *peer,
        no_relay,
    };
    Box::pin(matched(admitted, reader, stream, side, details, pairing))
}

/// Which side of a match a connection is, as `Matched` tells it.
struct Side {
    role: Role,
    /// The client's address as this mediator saw it.
    your_addr: SocketAddr,
    /// The client said `no_relay`.
    no_relay: bool,
}

/// Either side after the match: `Matched` and the first `PunchPing` in one
/// write, then the punch timing (§12.2).
async fn matched(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    side: Side,
    peer: PeerDetails,
    pairing: Pairing,
) -> End {
    let relay = relay_offer(admitted, side.no_relay, peer.no_relay, &pairing);
    match send_matched(stream, side.role, peer, side.your_addr, relay).await {
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
    let nonce: u64 = rand::random();
    let frames = encode_frames(&[
        &MediatorMsg::Matched {
            role,
            peer_name: peer.name,
            public: peer.public,
            observed_addr: peer.observed_addr,
            listen_port: peer.listen_port,
            local_addrs: peer.local_addrs,
            your_addr,
            relay,
        },
        &MediatorMsg::PunchPing { nonce },
    ])?;
    let sent = Instant::now();
    write_frames(stream, frames).await?;
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
    // One shutdown watch and one timer for the whole phase, each registered once
    // (a select over fresh ones registers and drops them again every turn).
    let cancelled = shared.cancel.cancelled();
    tokio::pin!(cancelled);
    let deadline = sleep_until(sent + PROBE_TIMEOUT);
    tokio::pin!(deadline);
    let mut pings = 0u32;
    let rtt = loop {
        let msg = tokio::select! {
            biased;
            _ = &mut cancelled => return End::Done,
            () = &mut deadline => break PROBE_TIMEOUT,
            msg = reader.next(stream) => msg,
        };
        match msg {
            Err(end) => return client_left(stream, end),
            Ok(ClientMsg::PunchPong { nonce: n }) if n == nonce => break sent.elapsed(),
            Ok(ClientMsg::SessionPath { path }) => return path_reported(admitted, stream, path),
            Ok(ClientMsg::Ping) if pings < MAX_PINGS_AFTER_MATCH => {
                pings += 1;
                if let Err(end) = write_msg(stream, MediatorMsg::Pong).await {
                    return end;
                }
            }
            Ok(_) => return refuse(ErrorCode::Malformed, "unexpected message after Matched"),
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
    if let Some(delay) = hold_back(rtt, peer_rtt) {
        tokio::time::sleep(delay).await;
    }
    if let Err(end) = write_msg(stream, MediatorMsg::PunchNow).await {
        return end;
    }
    shared.metrics.punch_timed();
    deadline.as_mut().reset(hold_until);
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut cancelled => return End::Done,
            () = &mut deadline => return End::Done,
            msg = reader.next(stream) => msg,
        };
        match msg {
            Err(end) => return client_left(stream, end),
            Ok(ClientMsg::Ping) if pings < MAX_PINGS_AFTER_MATCH => {
                pings += 1;
                if let Err(end) = write_msg(stream, MediatorMsg::Pong).await {
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

/// How long the side with round trip `own` holds its `PunchNow` back, the other's
/// being `peer` (§12.2): half the difference, at most [`MAX_PUNCH_DELAY`]; none for
/// the farther side, nor below [`MIN_PUNCH_DELAY`].
fn hold_back(own: Duration, peer: Duration) -> Option<Duration> {
    let delay = (peer.saturating_sub(own) / 2).min(MAX_PUNCH_DELAY);
    (delay >= MIN_PUNCH_DELAY).then_some(delay)
}

/// `SessionPath` after `Matched` (§4): counted, and the conversation is over,
/// so a connection reports once at most. Closed with a reset, as the client
/// closes it too, so that neither side keeps the pair in TIME_WAIT.
fn path_reported(admitted: &Admitted, stream: &TcpStream, path: wire::PathLabel) -> End {
    admitted.shared.metrics.session_path(path);
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    End::Done
}

/// The read after `Matched` ended: if the client closed the connection (end of
/// stream, or its reset), our end closes with a reset too. The client's socket
/// is gone (our clients close the whole socket, never just their sending half),
/// so the reset discards nothing it could read; a graceful close would cost our
/// FIN, the client's ACK and a TIME_WAIT entry on the client's side, about a
/// third of the mediator's CPU per pairing under the load generator. A malformed
/// frame (`Refuse`) still gets its `Error` and a graceful close.
fn client_left(stream: &TcpStream, end: End) -> End {
    if matches!(end, End::Done) {
        let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    }
    end
}

/// First read size: a whole `Hello` (about 450 bytes in group 15) fits, so it
/// usually takes one read.
const FIRST_READ: usize = 512;

/// Reads frames with as few reads as possible, keeping surplus bytes (a client
/// may send its next frame right behind this one). Holds no allocation between
/// frames, nor while it waits for the next one, so a waiting client costs
/// nothing here.
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
            // Wait for bytes (or the end) before taking a buffer, so that a client
            // waiting between frames holds none.
            if self.buf.is_empty() && stream.readable().await.is_err() {
                return Err(End::Done);
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

/// Room for the frames of one write: `Matched` with its `PunchPing` (about 500
/// bytes in group 15) fits without growing the buffer.
const WRITE_CAPACITY: usize = 640;

/// One frame (header and payload) in one buffer, so it goes out in one write.
fn encode_frame(msg: &MediatorMsg) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(WRITE_CAPACITY);
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

/// `msgs` as frames in one buffer, in order, so they go out in one write. A
/// message that does not fit a frame ends the connection (`Done`): it is a bug.
fn encode_frames(msgs: &[&MediatorMsg]) -> Result<Vec<u8>, End> {
    let mut frames = Vec::with_capacity(WRITE_CAPACITY);
    if msgs
        .iter()
        .any(|msg| append_frame(msg, &mut frames).is_none())
    {
        tracing::error!("a mediator message does not fit a frame");
        return Err(End::Done);
    }
    Ok(frames)
}

/// Writes one message; a client that cannot take it is gone (`Done`). The
/// message is encoded before this returns, so the future holds no message.
pub(crate) fn write_msg(stream: &mut TcpStream, msg: MediatorMsg) -> Write<'_> {
    match encode_frames(&[&msg]) {
        Ok(frames) => write_frames(stream, frames),
        Err(_) => Write::Done(false),
    }
}

/// Writes encoded frames, trying the socket at once: they are small and its
/// send buffer is nearly always empty, so this is one `send`, with no timer and
/// no state to keep. Only what the socket does not take at once goes out through
/// a (boxed) future, within [`WRITE_TIMEOUT`].
fn write_frames(stream: &mut TcpStream, frames: Vec<u8>) -> Write<'_> {
    let sent = match stream.try_write(&frames) {
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) =>
        {
            0
        }
        // The client is gone.
        Err(_) => return Write::Done(false),
    };
    if sent == frames.len() {
        return Write::Done(true);
    }
    Write::Rest(Box::pin(async move {
        matches!(
            timeout(WRITE_TIMEOUT, stream.write_all(&frames[sent..])).await,
            Ok(Ok(()))
        )
    }))
}

/// A write to the client: finished at once, or the rest on its way. Ends in
/// `Err(Done)` (the client is gone) if the client could not take it.
pub(crate) enum Write<'a> {
    /// Whether the socket took everything.
    Done(bool),
    /// What it did not take yet; true once written.
    Rest(Pin<Box<dyn Future<Output = bool> + Send + 'a>>),
}

impl Future for Write<'_> {
    type Output = Result<(), End>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let written = match &mut *self {
            Write::Done(written) => *written,
            Write::Rest(rest) => ready!(rest.as_mut().poll(cx)),
        };
        Poll::Ready(if written { Ok(()) } else { Err(End::Done) })
    }
}

/// Encodes a refusal for callers that cannot await (the accept loop).
pub(crate) fn error_frame(code: ErrorCode, message: &str) -> Option<Vec<u8>> {
    encode_frame(&MediatorMsg::Error {
        code,
        message: message.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn output_size<A, B, C, D, R>(_: impl FnOnce(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// A waiting host sits in `next` for minutes: it must not hold a read buffer
    /// meanwhile (512 bytes per waiting client before).
    #[tokio::test]
    async fn a_reader_waiting_for_a_frame_holds_no_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // The connecting end: tokio assumes an accepted stream readable until a
        // read says otherwise, so this one shows a real wait at once.
        let mut stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let _peer = listener.accept().await.unwrap();
        let mut reader = FrameReader::default();
        {
            let next = reader.next(&mut stream);
            tokio::pin!(next);
            assert!(futures::poll!(next.as_mut()).is_pending());
        }
        assert_eq!(reader.buf.capacity(), 0);
    }

    /// A write is tried at once; what the socket does not take must follow, in
    /// order, once the client reads.
    #[tokio::test]
    async fn a_write_the_socket_cannot_take_at_once_is_finished_later() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // More than the loopback socket buffers hold, so the first send is short.
        let frames: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expected = frames.clone();
        let write = write_frames(&mut server, frames);
        assert!(
            matches!(write, Write::Rest(_)),
            "the socket took 8 MiB at once"
        );
        let read = async {
            let mut got = vec![0u8; expected.len()];
            client.read_exact(&mut got).await.unwrap();
            got
        };
        let (written, got) = tokio::join!(write, read);
        assert!(written.is_ok());
        assert!(got == expected, "the bytes arrived changed or out of order");
    }

    /// Below half a millisecond a hold-back would be a timer that oversleeps it.
    #[test]
    fn punch_now_is_held_back_by_half_the_difference_above_half_a_millisecond() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        assert_eq!(hold_back(ms(10), ms(30)), Some(ms(10)));
        assert_eq!(hold_back(ms(30), ms(10)), None, "the farther side");
        assert_eq!(hold_back(ms(0), ms(5_000)), Some(MAX_PUNCH_DELAY));
        assert_eq!(hold_back(us(100), us(1_100)), Some(us(500)));
        assert_eq!(hold_back(us(100), us(1_000)), None, "a LAN's 450 us");
        assert_eq!(hold_back(us(40), us(90)), None, "loopback's 25 us");
    }

    /// A connection task holds `serve`'s future for its whole life, so a waiting
    /// client costs this (in a task cell of tokio's, rounded up to 128 bytes)
    /// besides its socket, its room entry and its public value; 4 KiB per
    /// waiting client (issue 26) leaves at most 1 KiB here.
    #[test]
    fn connection_task_is_small() {
        let size = output_size(serve);
        assert!(
            size <= 1024,
            "serve's future is {size} bytes: something large is held across an await \
             (box it, or end its scope before the await)"
        );
    }
}
