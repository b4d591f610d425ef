//! The one place bincode is called. Every decode has a byte limit and rejects
//! trailing bytes; without the limit a 9-byte payload claiming a 2^40-byte string
//! would make bincode try to allocate it and abort the process.

use bincode::config::{self, Configuration, Limit, LittleEndian, Varint};
use serde::{de::DeserializeOwned, Serialize};

use crate::frame::PEER_FRAME_MAX;

/// The most bytes any decode may consume or claim: the largest frame payload.
pub const DECODE_LIMIT: usize = PEER_FRAME_MAX;

/// bincode 2 `standard()` (little-endian varints) with the limit; docs/protocol.md §2
/// spells out the resulting bytes.
fn wire_config() -> Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>> {
    config::standard().with_limit::<DECODE_LIMIT>()
}

/// Why a payload could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is longer than any message may be.
    #[error("payload of {0} bytes exceeds the decode limit")]
    TooLong(usize),
    /// bytes that are not a valid message (or claim more than the limit).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A valid message followed by extra bytes.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// A message that cannot be encoded within the limit.
    #[error("message cannot be encoded: {0}")]
    Encode(String),
}

/// Decodes exactly one message from `payload`.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    if payload.len() > DECODE_LIMIT {
        return Err(DecodeError::TooLong(payload.len()));
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, wire_config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(DecodeError::Trailing(payload.len() - used));
    }
    Ok(value)
}

/// Encodes one message into a fresh vector.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Appends one encoded message to `out` (reusable buffers on hot paths).
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let start = out.len();
    if let Err(e) = bincode::serde::encode_into_std_write(msg, out, wire_config()) {
        // A failing Serialize impl may have written part of the message already.
        out.truncate(start);
        return Err(DecodeError::Encode(e.to_string()));
    }
    if out.len() - start > DECODE_LIMIT {
        out.truncate(start);
        return Err(DecodeError::TooLong(DECODE_LIMIT + 1));
    }
    Ok(())
}

/// The number of bytes [`encode`] would produce, counted without allocating:
/// what a queue bounded in bytes charges for a message before it is sealed.
pub fn encoded_len<T: Serialize>(msg: &T) -> Result<usize, DecodeError> {
    let mut counter = Counter(0);
    bincode::serde::encode_into_std_write(msg, &mut counter, wire_config())
        .map_err(|e| DecodeError::Encode(e.to_string()))
}

/// A writer that only counts.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_len_counts_what_encode_writes() {
        let msg = crate::PeerMsg::Chat {
            id: 300,
            sent_at_ms: 1,
            text: "x".repeat(1000),
        };
        assert_eq!(encoded_len(&msg).unwrap(), encode(&msg).unwrap().len());
    }
}
