//! The room table: where a waiting host sits until its joiner arrives. One small
//! async trait with two implementations: [`InMemoryRooms`] (the default, one
//! process) and [`RedisRooms`] (several mediators sharing rooms through Redis,
//! docs/protocol.md §18), so the connection code never knows which it talks to.

mod memory;
mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use dhke::RoomTag;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

pub use self::redis::{place_of as redis_place, RedisRooms, RoomStoreError};
pub use memory::InMemoryRooms;

/// Identifies one client connection, so a leaving host removes its own room and
/// never a newer room that happens to have the same tag.
pub type ConnId = u64;

/// What one side of a match is told about the other (docs/protocol.md §4 `Matched`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDetails {
    /// Checked with `wire::validate_name`; never logged.
    pub name: String,
    /// Checked with `dhke::check_public_range`; never logged.
    pub public: Vec<u8>,
    /// The TCP source address the mediator saw (v4-mapped IPv6 shown as IPv4).
    pub observed_addr: SocketAddr,
    /// Where the client accepts peers (0: nowhere).
    pub listen_port: u16,
    /// The client's own interface addresses (at most `wire::rendezvous::MAX_LOCAL_ADDRS`).
    pub local_addrs: Vec<SocketAddr>,
    /// The client refuses to be relayed.
    pub no_relay: bool,
}

/// What the two ends of a pair share, fixed by the arrival that completes the
/// match: plain values, so an arrival that ends up waiting as the host holds no
/// channels.
#[derive(Debug, Clone)]
pub struct PairTerms {
    /// Names the pair in its relay token; the same on both sides.
    pub pair_id: [u8; 12],
    /// When the pair's relay token expires, in Unix seconds.
    pub token_expires: u32,
    /// `HOST:PORT` of the relay that serves this pair: the mediator that completed
    /// the match (empty: "the one you are talking to", `RelayOffer::Offered.server`).
    /// `None`: that mediator runs with its relay off.
    pub relay_server: Option<String>,
}

/// One side's end of a match: what its connection task needs to time the punch
/// with the other side's task and to hand out the pair's relay token.
#[derive(Debug)]
pub struct Pairing {
    /// The relay token's terms, the same on both ends.
    pub terms: PairTerms,
    /// Our client's round-trip time, for the other side's task.
    pub rtt_out: oneshot::Sender<Duration>,
    /// The other client's round-trip time, from the other side's task.
    pub rtt_in: oneshot::Receiver<Duration>,
}

impl Pairing {
    /// Both ends of one pair: (the host's, the joiner's).
    pub fn pair(terms: PairTerms) -> (Pairing, Pairing) {
        let (a_out, b_in) = oneshot::channel();
        let (b_out, a_in) = oneshot::channel();
        (
            Pairing {
                terms: terms.clone(),
                rtt_out: a_out,
                rtt_in: a_in,
            },
            Pairing {
                terms,
                rtt_out: b_out,
                rtt_in: b_in,
            },
        )
    }
}

/// What a waiting host receives when its joiner arrives.
#[derive(Debug)]
pub struct Joined {
    /// The joiner's details, for the host's `Matched`.
    pub details: PeerDetails,
    /// The host's end of the pair.
    pub pairing: Pairing,
}

/// A client asking for a room.
#[derive(Debug)]
pub struct Arrival {
    /// Its connection, for [`RoomTable::leave`].
    pub id: ConnId,
    /// The RFC 3526 group id of its public value: both sides must agree.
    pub group: u8,
    /// Its details, handed to the other side on a match.
    pub details: PeerDetails,
    /// The pair's terms if this arrival matches a waiting host (dropped if it
    /// opens the room instead).
    pub terms: PairTerms,
}

/// What [`RoomTable::join`] decided.
#[derive(Debug)]
pub enum JoinOutcome {
    /// The room was empty: the caller is now the waiting host. The joiner's
    /// details arrive on this channel; its sender lives in the table. (Boxed, so
    /// that a waiting host's channel is small.)
    Waiting(oneshot::Receiver<Box<Joined>>),
    /// A host was waiting: the caller is the joiner. The host has been handed the
    /// caller's details and its end of the pair already, and the room is
    /// forgotten; these are the host's details and the joiner's end.
    Matched(PeerDetails, Pairing),
    /// A host is waiting with another DH group.
    GroupMismatch,
    /// The tag is an open group room (§19; the shared table checks this in its
    /// claim).
    GroupRoom,
    /// The room was empty but the table holds its maximum of waiting rooms.
    Full,
    /// The shared room store cannot be reached: no room can be opened or joined
    /// now (the message says why; clients retry).
    Unavailable(String),
}

/// Waiting rooms keyed by room tag. Rooms are one-shot: a match removes the room.
pub trait RoomTable: Send + Sync + std::fmt::Debug + 'static {
    /// Opens the room for `arrival` or matches it with the host waiting there.
    fn join(&self, tag: RoomTag, arrival: Arrival) -> BoxFuture<'_, JoinOutcome>;
    /// Removes the room `tag` if connection `id` is its waiting host. Returns
    /// false when it was not (already matched, or never there).
    fn leave<'a>(&'a self, tag: &'a RoomTag, id: ConnId) -> BoxFuture<'a, bool>;
    /// Which of `tags` have a host waiting now (anywhere the table reaches):
    /// a presence connection that registers them is rung at once (§21).
    fn waits<'a>(&'a self, tags: &'a [RoomTag]) -> BoxFuture<'a, Vec<RoomTag>>;
    /// A host waits in room `tag` now: tell the other instances sharing the
    /// table, whose presence connections may wait under it (§21). In one
    /// process there is nobody else to tell.
    fn announce_waiting(&self, _tag: RoomTag) {}
    /// The rooms other instances announced, for this instance's presence
    /// connections; taken once, at start. `None` in one process.
    fn remote_rings(&self) -> Option<tokio::sync::mpsc::Receiver<RoomTag>> {
        None
    }
    /// How many rooms this mediator's hosts hold now (metrics).
    fn waiting(&self) -> usize;
    /// Why new rooms are refused now, if they are (`GET /health`, metrics).
    fn trouble(&self) -> Option<String> {
        None
    }
}
