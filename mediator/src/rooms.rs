//! The room table: where a waiting host sits until its joiner arrives. One small
//! trait, so a table shared between mediators (e.g. in Redis) can replace the
//! in-memory one without touching the connection code.

mod memory;

use std::net::SocketAddr;

use dhke::RoomTag;
use tokio::sync::oneshot;

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
}

/// What [`RoomTable::join`] decided.
#[derive(Debug)]
pub enum JoinOutcome {
    /// The room was empty: the caller is now the waiting host. The joiner's
    /// details arrive on this channel; its sender lives in the table.
    Waiting(oneshot::Receiver<PeerDetails>),
    /// A host was waiting: the caller is the joiner. The host has been handed the
    /// caller's details already and the room is forgotten; these are the host's.
    Matched(PeerDetails),
    /// A host is waiting with another DH group.
    GroupMismatch,
    /// The room was empty but the table holds its maximum of waiting rooms.
    Full,
}

/// Waiting rooms keyed by room tag. Rooms are one-shot: a match removes the room.
pub trait RoomTable: Send + Sync + std::fmt::Debug + 'static {
    /// Opens the room for `arrival` or matches it with the host waiting there.
    fn join(&self, tag: RoomTag, arrival: Arrival) -> JoinOutcome;
    /// Removes the room `tag` if connection `id` is its waiting host. Returns
    /// false when it was not (already matched, or never there).
    fn leave(&self, tag: &RoomTag, id: ConnId) -> bool;
    /// How many rooms are waiting now (metrics).
    fn waiting(&self) -> usize;
}
