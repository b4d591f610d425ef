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
        /// The joiner's Ed25519 identity key (v2, §15).
        identity: [u8; 32],
    },
    /// Host → joiner: `nH` and proof of the host's keys and identity.
    HostConfirm {
        nonce: [u8; 32],
        mac: [u8; 32],
        resumed: bool,
        /// The host's Ed25519 identity key (v2, §15).
        identity: [u8; 32],
        /// The host's signature of `host_signed_bytes` (§15.2).
        signature: Signature64,
    },
    /// Joiner → host: `nJ` (opening the commitment) and proof of the joiner's keys
    /// and identity.
    JoinerConfirm {
        nonce: [u8; 32],
        mac: [u8; 32],
        /// The joiner's signature of `joiner_signed_bytes` (§15.2).
        signature: Signature64,
    },
    /// Either side: the connection is refused.
    Reject { reason: String },
    /// Dialer → token holder, first on a connection dialed from a token (§16.2):
    /// the token's room tag, and what `Hello` would carry.
    TokenHello {
        tag: [u8; 32],
        name: String,
        group: u8,
        #[serde(with = "serde_bytes")]
        public: Vec<u8>,
    },
    /// Token holder → dialer: its name and a fresh public value for this
    /// connection; §6 follows with the dialer as the joiner.
    TokenWelcome {
        name: String,
        #[serde(with = "serde_bytes")]
        public: Vec<u8>,
    },
}

/// A 64-byte Ed25519 signature, encoded as 64 raw bytes (serde's arrays stop at
/// 32, so this is a tuple of 64 `u8` by hand: the same bytes bincode gives an array).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature64(pub [u8; 64]);

impl std::fmt::Debug for Signature64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature64({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

impl Serialize for Signature64 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Signature64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes64;
        impl<'de> serde::de::Visitor<'de> for Bytes64 {
            type Value = Signature64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Signature64, A::Error> {
                let mut out = [0u8; 64];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature64(out))
            }
        }
        deserializer.deserialize_tuple(64, Bytes64)
    }
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
    /// Token holder → dialer, the first record after a token handshake: the
    /// holder let us in (§16.3).
    Admitted,
    /// ... or did not; the connection closes after it.
    Denied {
        reason: String,
    },
    /// Group rooms (§19): a signed message of the room's log, ours or forwarded.
    Group(crate::group::GroupMsg),
    /// Group rooms: what we have delivered, per author (sent on every new link
    /// and when a message waits for one we lack).
    GroupSummary(crate::group::Summary),
    /// Group rooms: the answer to a summary, split over as many records as needed.
    GroupCatchup(crate::group::Catchup),
    /// Group rooms: the members we hold a confirmed link with, and ourselves.
    Roster(crate::group::Roster),
    /// Group rooms: we disconnected the member with this identity for `reason`.
    Expelled {
        identity: [u8; 32],
        reason: String,
    },
    /// Conversations (v3, §17.5): two messages one author signed with one
    /// (author, seq); every member that checks it refuses the author and
    /// forwards it once.
    Equivocation(Box<crate::group::EquivocationProof>),
    /// Two-party conversations (v3, §7.1): we have shown the peer's messages
    /// up to its `seq` to our person. Sent only by a side that allows read
    /// receipts, and shown only by a side that allows them too.
    Read {
        seq: u64,
    },
}

/// A [`PeerMsg`] field over its limit (docs/protocol.md §7). Senders never
/// produce one; a receiver treats it as a protocol violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// `Chat.text` longer than [`MAX_CHAT_TEXT`] bytes.
    #[error("chat text of {0} bytes, over the limit of {MAX_CHAT_TEXT}")]
    ChatText(usize),
    /// `FileChunk.data` longer than [`MAX_FILE_CHUNK`] bytes.
    #[error("file chunk of {0} bytes, over the limit of {MAX_FILE_CHUNK}")]
    FileChunk(usize),
}

impl PeerMsg {
    /// Checks the per-field limits of docs/protocol.md §7 (the record and frame
    /// bounds are checked where records are opened). The one place a receiver
    /// decides them.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        match self {
            PeerMsg::Chat { text, .. } if text.len() > MAX_CHAT_TEXT => {
                Err(LimitError::ChatText(text.len()))
            }
            PeerMsg::FileChunk { data, .. } if data.len() > MAX_FILE_CHUNK => {
                Err(LimitError::FileChunk(data.len()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive() {
        let chat = |n: usize| PeerMsg::Chat {
            id: 1,
            sent_at_ms: 0,
            text: "a".repeat(n),
        };
        assert_eq!(chat(MAX_CHAT_TEXT).check_limits(), Ok(()));
        assert_eq!(
            chat(MAX_CHAT_TEXT + 1).check_limits(),
            Err(LimitError::ChatText(MAX_CHAT_TEXT + 1))
        );
        let chunk = |n: usize| PeerMsg::FileChunk {
            id: 1,
            offset: 0,
            data: vec![0; n],
        };
        assert_eq!(chunk(MAX_FILE_CHUNK).check_limits(), Ok(()));
        assert_eq!(
            chunk(MAX_FILE_CHUNK + 1).check_limits(),
            Err(LimitError::FileChunk(MAX_FILE_CHUNK + 1))
        );
        assert_eq!(PeerMsg::Ping { nonce: 0 }.check_limits(), Ok(()));
    }
}
