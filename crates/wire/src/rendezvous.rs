//! Client ↔ mediator messages (docs/protocol.md §4). Variant and field order is the
//! wire format: append, never reorder.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The protocol version a `Hello` carries.
pub const PROTOCOL_VERSION: u16 = 1;
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
    },
    /// Answer to `Ping`.
    Pong,
    /// A refusal; the mediator closes the connection after sending it.
    Error { code: ErrorCode, message: String },
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
}

impl ErrorCode {
    /// Every code, in wire order (metrics, tests).
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::BadVersion,
        ErrorCode::Malformed,
        ErrorCode::RoomFull,
        ErrorCode::GroupMismatch,
        ErrorCode::BadName,
        ErrorCode::BadPublic,
        ErrorCode::Timeout,
        ErrorCode::TooManyConnections,
        ErrorCode::ShuttingDown,
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
        }
    }
}
