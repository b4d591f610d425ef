//! Client ↔ mediator messages (docs/protocol.md §4, §12). Variant and field order is the
//! wire format: append, never reorder.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::peer::Signature64;

/// The protocol version a `Hello` carries (v2: punch timing, relay, nameplates;
/// v3: logs bound to conversations, equivocation proofs, docs/protocol.md §20).
pub const PROTOCOL_VERSION: u16 = 3;
/// Most interface addresses a client may advertise.
pub const MAX_LOCAL_ADDRS: usize = 8;

/// What a client sends to the mediator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Join (or open) the room with this tag.
    Hello {
        version: u16,
        room: [u8; 32],
        name: String,
        group: u8,
        #[serde(with = "serde_bytes")]
        public: Vec<u8>,
        listen_port: u16,
        local_addrs: Vec<SocketAddr>,
        no_relay: bool,
    },
    /// Keep-alive while waiting.
    Ping,
    /// After `Matched`: the answer to `PunchPing`, so the mediator learns our RTT.
    PunchPong { nonce: u64 },
    /// The first message on a relay connection: the token both sides got in `Matched`.
    RelayJoin { token: [u8; 32] },
    /// Before `Hello`: reserve a nameplate for a generated room code.
    Allocate,
    /// Join (or open) the *group room* with this tag (docs/protocol.md §19): the
    /// fields of `Hello`, for a room of up to the mediator's member cap.
    GroupHello {
        version: u16,
        room: [u8; 32],
        name: String,
        group: u8,
        #[serde(with = "serde_bytes")]
        public: Vec<u8>,
        listen_port: u16,
        local_addrs: Vec<SocketAddr>,
        no_relay: bool,
    },
    /// After `Matched` (or, in a group room, once its first link stands): which
    /// path our session took, for the mediator's reach figure
    /// (docs/protocol.md §4). At most one per connection; it carries nothing
    /// about who we are or where the peer is.
    SessionPath { path: PathLabel },
    /// Instead of `Hello` (docs/protocol.md §21): this connection waits for
    /// whoever opens a room under one of `tags` (the rooms of our contact
    /// pairs), to be told with `Ring`. May be sent again on the same connection
    /// to add tags; at most [`MAX_PRESENCE_BATCH`] a message, and at most the
    /// mediator's per-connection cap in all.
    Presence { tags: Vec<[u8; 32]> },
    /// Instead of `Hello` (docs/protocol.md §22): opens queue `queue` for its
    /// recipient, or confirms it: adds are checked against `add_key`, fetches
    /// and removals against `read_key`. Signed by `read_key`
    /// ([`crate::mailbox::open_signed`]) at `at` (seconds since 1970).
    MailboxOpen {
        queue: [u8; 32],
        add_key: [u8; 32],
        read_key: [u8; 32],
        at: u64,
        sig: Signature64,
    },
    /// Leaves one sealed item in `queue`, signed by `add_key`
    /// ([`crate::mailbox::add_signed`]); a queue nobody opened yet is made,
    /// taking `add_key` as its add key.
    MailboxAdd {
        queue: [u8; 32],
        add_key: [u8; 32],
        at: u64,
        #[serde(with = "serde_bytes")]
        item: Vec<u8>,
        sig: Signature64,
    },
    /// The oldest items of `queue`, signed by its read key
    /// ([`crate::mailbox::fetch_signed`]).
    MailboxFetch {
        queue: [u8; 32],
        at: u64,
        sig: Signature64,
    },
    /// Removes items of `queue` by id, signed by its read key
    /// ([`crate::mailbox::remove_signed`]).
    MailboxRemove {
        queue: [u8; 32],
        at: u64,
        ids: Vec<[u8; 16]>,
        sig: Signature64,
    },
}

/// Most tags one `Presence` message carries (8 KiB of tags: well inside a
/// mediator frame); more go in further messages.
pub const MAX_PRESENCE_BATCH: usize = 256;

/// How a session reached the peer, as a client reports it in
/// `ClientMsg::SessionPath` (the labels of docs/protocol.md §12.5, and `None`).
/// Variant order is the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathLabel {
    /// To the peer's observed address with no NAT on either side, or a
    /// forwarded port.
    Direct,
    /// To an address on the peer's own network interface.
    Lan,
    /// Through a TCP hole punched at the mediator's `PunchNow`.
    Punched,
    /// Through the mediator's relay.
    Relay,
    /// No path: the connect race gave up without a connection.
    None,
}

impl PathLabel {
    /// Every label, in wire order (metrics, tests).
    pub const ALL: [PathLabel; 5] = [
        PathLabel::Direct,
        PathLabel::Lan,
        PathLabel::Punched,
        PathLabel::Relay,
        PathLabel::None,
    ];

    /// The word on screen, in `peers.txt`, `--json` and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PathLabel::Direct => "direct",
            PathLabel::Lan => "lan",
            PathLabel::Punched => "punched",
            PathLabel::Relay => "relay",
            PathLabel::None => "none",
        }
    }
}

/// What the mediator sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediatorMsg {
    /// The room was empty: wait for the peer.
    Waiting { expires_in_secs: u32 },
    /// The peer is here; its details follow.
    Matched {
        role: Role,
        peer_name: String,
        #[serde(with = "serde_bytes")]
        public: Vec<u8>,
        observed_addr: SocketAddr,
        listen_port: u16,
        local_addrs: Vec<SocketAddr>,
        /// Our own source address as the mediator saw it (tells us whether we are
        /// behind a NAT).
        your_addr: SocketAddr,
        /// Whether a relay is on offer if no direct path works.
        relay: RelayOffer,
    },
    /// Answer to `Ping`.
    Pong,
    /// A refusal; the mediator closes the connection after sending it.
    Error { code: ErrorCode, message: String },
    /// After `Matched`: answer with `PunchPong { nonce }` at once (RTT probe).
    PunchPing { nonce: u64 },
    /// Dial the peer's observed address now; the peer is told at the same moment.
    PunchNow,
    /// On a relay connection: the peer is here; from the next byte on, this
    /// connection carries peer frames (`Link::Peer`) spliced to the peer.
    RelayReady,
    /// The nameplate reserved for us by `Allocate`, for our next `Hello`.
    Allocated { nameplate: u32 },
    /// After `GroupHello`: we are member `member` of the group room, which holds
    /// `present` others now and at most `max_members` in all. A `Member` for each
    /// of the others follows.
    GroupJoined {
        member: u32,
        present: u32,
        max_members: u32,
    },
    /// Another member of our group room, to link with by §6 in `role` (the one
    /// that was there first hosts). Sent for each member present when we join, and
    /// for each newcomer after.
    Member {
        member: u32,
        role: Role,
        peer_name: String,
        #[serde(with = "serde_bytes")]
        public: Vec<u8>,
        observed_addr: SocketAddr,
        listen_port: u16,
        local_addrs: Vec<SocketAddr>,
        your_addr: SocketAddr,
        relay: RelayOffer,
    },
    /// Member `member` left the group room (its mediator connection ended).
    MemberLeft { member: u32 },
    /// After each `Presence`: the connection now waits under `tags` distinct
    /// tags in all.
    Present { tags: u32 },
    /// On a presence connection: someone opened a room under `tag` and waits
    /// in it; say `Hello` with that tag (on a connection of its own) to meet.
    Ring { tag: [u8; 32] },
    /// `MailboxOpen` took: the queue holds `items` items now.
    MailboxOpened { items: u32 },
    /// `MailboxAdd` took (or had taken this very item before): it is stored
    /// durably under `id` until `expires_unix`.
    MailboxStored { id: [u8; 16], expires_unix: u64 },
    /// The answer to `MailboxFetch`: the oldest items, and whether more wait.
    MailboxItems {
        items: Vec<crate::mailbox::StoredItem>,
        more: bool,
    },
    /// `MailboxRemove` took: `removed` of the named items were there.
    MailboxRemoved { removed: u32 },
}

/// What `Matched` says about the relay. Variant order is the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayOffer {
    /// Present `token` in `RelayJoin` on a new connection to `server`
    /// (`HOST:PORT`; empty: the mediator this `Matched` came from).
    Offered { token: [u8; 32], server: String },
    /// We sent `no_relay`.
    RefusedByYou,
    /// The peer sent `no_relay`.
    RefusedByPeer,
    /// The mediator runs with its relay off.
    Off,
}

/// Which side of the peer connection a client plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Arrived first: listens and accepts.
    Host,
    /// Arrived second: connects.
    Joiner,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Host => "host",
            Role::Joiner => "joiner",
        })
    }
}

/// Why the mediator refused. Order is the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    BadVersion,
    Malformed,
    RoomFull,
    GroupMismatch,
    BadName,
    BadPublic,
    Timeout,
    TooManyConnections,
    ShuttingDown,
    /// A `RelayJoin` with an unknown, expired or forged token, or the relay is full.
    RelayRefused,
    /// A relay session passed one of its caps (bytes, idle) and was ended.
    RelayLimit,
    /// `Allocate` found no free nameplate.
    NoNameplate,
    /// A `Hello` for a group room, or a `GroupHello` for a two-party room.
    RoomKind,
    /// A `Presence` past the per-connection cap of tags (§21).
    PresenceLimit,
    /// A mailbox queue, the requests from one source, or the whole store is
    /// at its cap (§22); the message says which.
    MailboxFull,
    /// A mailbox request with a wrong signature, a key that is not the
    /// queue's, a time too far from the mediator's, or for no such queue.
    MailboxAuth,
    /// `MailboxAdd` of an item the queue held and gave out already.
    MailboxReplay,
}

impl ErrorCode {
    /// Every code, in wire order (metrics, tests).
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BadVersion,
        ErrorCode::Malformed,
        ErrorCode::RoomFull,
        ErrorCode::GroupMismatch,
        ErrorCode::BadName,
        ErrorCode::BadPublic,
        ErrorCode::Timeout,
        ErrorCode::TooManyConnections,
        ErrorCode::ShuttingDown,
        ErrorCode::RelayRefused,
        ErrorCode::RelayLimit,
        ErrorCode::NoNameplate,
        ErrorCode::RoomKind,
        ErrorCode::PresenceLimit,
        ErrorCode::MailboxFull,
        ErrorCode::MailboxAuth,
        ErrorCode::MailboxReplay,
    ];

    /// A stable snake_case name for logs, metrics and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadVersion => "bad_version",
            ErrorCode::Malformed => "malformed",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::GroupMismatch => "group_mismatch",
            ErrorCode::BadName => "bad_name",
            ErrorCode::BadPublic => "bad_public",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::RelayRefused => "relay_refused",
            ErrorCode::RelayLimit => "relay_limit",
            ErrorCode::NoNameplate => "no_nameplate",
            ErrorCode::RoomKind => "room_kind",
            ErrorCode::PresenceLimit => "presence_limit",
            ErrorCode::MailboxFull => "mailbox_full",
            ErrorCode::MailboxAuth => "mailbox_auth",
            ErrorCode::MailboxReplay => "mailbox_replay",
        }
    }
}
