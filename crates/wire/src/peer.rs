//! Client ↔ client messages (docs/protocol.md §6, §7). Variant and field order is
//! the wire format: append, never reorder.

use serde::{Deserialize, Serialize};

/// Largest plaintext inside one record (64 KiB).
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Largest chat text, in bytes of UTF-8 (16 KiB).
pub const MAX_CHAT_TEXT: usize = 16 * 1024;
/// Largest file chunk: what fits a record next to the `FileChunk` header.
pub const MAX_FILE_CHUNK: usize = MAX_PLAINTEXT - 64;

/// The unencrypted handshake on a fresh peer connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerHandshake {
    /// Joiner → host: who I am, and my commitment to `nJ`.
    PeerHello {
        room: [u8; 32],
        #[serde(with = "serde_bytes")]
        public: Vec<u8>,
        commit: [u8; 32],
        resume: Option<[u8; 32]>,
    },
    /// Host → joiner: `nH` and proof of the host's keys.
    HostConfirm {
        nonce: [u8; 32],
        mac: [u8; 32],
        resumed: bool,
    },
    /// Joiner → host: `nJ` (opening the commitment) and proof of the joiner's keys.
    JoinerConfirm { nonce: [u8; 32], mac: [u8; 32] },
    /// Either side: the connection is refused.
    Reject { reason: String },
}

/// What travels inside records once the handshake is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    Chat {
        id: u64,
        sent_at_ms: u64,
        text: String,
    },
    Ack {
        id: u64,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    FileOffer {
        id: u64,
        name: String,
        size: u64,
    },
    FileAccept {
        id: u64,
        offset: u64,
    },
    FileReject {
        id: u64,
    },
    FileChunk {
        id: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Every chunk was sent; `blake3` is the BLAKE3 hash of the whole file, bytes
    /// before a resume offset included.
    FileDone {
        id: u64,
        blake3: [u8; 32],
    },
    FileCancel {
        id: u64,
    },
    Bye {
        reason: String,
    },
}
