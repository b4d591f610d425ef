//! Frames: `u32 big-endian length N | N bytes`, with a per-link bound on N checked
//! before anything is read or allocated.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Which kind of connection a frame travels on; each has its own size bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Client ↔ mediator: control messages only.
    Mediator,
    /// Client ↔ client: handshake messages, then encrypted records.
    Peer,
}

/// Largest payload on a mediator link (16 KiB).
pub const MEDIATOR_FRAME_MAX: usize = 16 * 1024;
/// Largest payload on a peer link (80 KiB): a 64 KiB plaintext record plus IV,
/// padding and tag, with room to spare.
pub const PEER_FRAME_MAX: usize = 80 * 1024;
/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

impl Link {
    /// The largest payload length this link accepts.
    pub const fn max_payload(self) -> usize {
        match self {
            Link::Mediator => MEDIATOR_FRAME_MAX,
            Link::Peer => PEER_FRAME_MAX,
        }
    }

    /// The one frame-length check: 1 ≤ N ≤ max. Every reader calls this on the
    /// 4-byte header before it reads or allocates the payload.
    pub fn check_len(self, len: usize) -> Result<usize, FrameError> {
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_payload() {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_payload(),
            });
        }
        Ok(len)
    }

    /// Parses a frame header and checks the length it announces.
    pub fn parse_header(self, header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
        self.check_len(u32::from_be_bytes(header) as usize)
    }

    /// Writes the header for a payload of `len` bytes, after checking it.
    pub fn header(self, len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
        let len = self.check_len(len)?;
        // check_len bounds len by 80 KiB, so it fits a u32.
        Ok((len as u32).to_be_bytes())
    }
}

/// A frame that breaks the framing rules. The connection must be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A zero-length frame.
    #[error("empty frame")]
    Empty,
    /// A length over the link's bound.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// On a relayed connection: the mediator ended the relay session
    /// (docs/protocol.md §12.3). `message` is the mediator's, sanitised.
    #[error("the mediator ended the relay session ({}): {message}", code.as_str())]
    RelayEnded {
        code: crate::rendezvous::ErrorCode,
        message: String,
    },
    /// The underlying transport failed (only from the tokio codec).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The header that announces a relay's end notice in place of a peer frame: a
/// zero length, which no peer frame can have.
pub const RELAY_NOTICE: [u8; HEADER_LEN] = [0; HEADER_LEN];

/// Encodes the relay's end notice: [`RELAY_NOTICE`], then one mediator frame with
/// `MediatorMsg::Error { code, message }`.
pub fn relay_notice(code: crate::rendezvous::ErrorCode, message: &str) -> Vec<u8> {
    let msg = crate::rendezvous::MediatorMsg::Error {
        code,
        message: message.to_owned(),
    };
    let mut out = RELAY_NOTICE.to_vec();
    out.extend_from_slice(&[0; HEADER_LEN]);
    // A short error always encodes and fits a mediator frame; if a caller passed
    // a huge message, the notice degrades to a bare close.
    match crate::encode_into(&msg, &mut out)
        .ok()
        .and_then(|()| Link::Mediator.header(out.len() - 2 * HEADER_LEN).ok())
    {
        Some(header) => {
            out[HEADER_LEN..2 * HEADER_LEN].copy_from_slice(&header);
            out
        }
        None => RELAY_NOTICE.to_vec(),
    }
}

/// A `tokio_util` codec for one link's frames. Decoding yields the payload bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    link: Link,
    relayed: bool,
}

impl FrameCodec {
    /// A codec enforcing `link`'s bound.
    pub fn new(link: Link) -> FrameCodec {
        FrameCodec {
            link,
            relayed: false,
        }
    }

    /// A peer-link codec for a connection spliced through the mediator's relay:
    /// it also understands the relay's end notice (docs/protocol.md §12.3).
    pub fn relayed() -> FrameCodec {
        FrameCodec {
            link: Link::Peer,
            relayed: true,
        }
    }

    /// Parses the relay's end notice at the front of `src` (which starts with
    /// [`RELAY_NOTICE`]): `None` while incomplete.
    fn relay_end(src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(header) = src.get(HEADER_LEN..2 * HEADER_LEN) else {
            return Ok(None);
        };
        let header: [u8; HEADER_LEN] = header.try_into().expect("slice of HEADER_LEN");
        let len = Link::Mediator.parse_header(header)?;
        if src.len() < 2 * HEADER_LEN + len {
            src.reserve(2 * HEADER_LEN + len - src.len());
            return Ok(None);
        }
        let payload = &src[2 * HEADER_LEN..2 * HEADER_LEN + len];
        let err = match crate::decode::<crate::rendezvous::MediatorMsg>(payload) {
            Ok(crate::rendezvous::MediatorMsg::Error { code, message }) => FrameError::RelayEnded {
                code,
                message: crate::sanitize_for_terminal(&message).into_owned(),
            },
            _ => FrameError::Empty,
        };
        src.clear();
        Err(err)
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(header) = src.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header: [u8; HEADER_LEN] = header.try_into().expect("slice of HEADER_LEN");
        if self.relayed && header == RELAY_NOTICE {
            return FrameCodec::relay_end(src);
        }
        let len = self.link.parse_header(header)?;
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let header = self.link.header(payload.len())?;
        dst.reserve(HEADER_LEN + payload.len());
        dst.put_slice(&header);
        dst.put_slice(payload);
        Ok(())
    }
}

impl Encoder<Vec<u8>> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: Vec<u8>, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(payload.as_slice(), dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut codec = FrameCodec::new(Link::Mediator);
        let mut buf = BytesMut::new();
        codec.encode(&b"hello"[..], &mut buf).unwrap();
        assert_eq!(&buf[..], b"\0\0\0\x05hello");
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&frame[..], b"hello");
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frame_waits() {
        let mut codec = FrameCodec::new(Link::Peer);
        let mut buf = BytesMut::from(&b"\0\0\0\x05hel"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"lo");
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"hello");
    }

    #[test]
    fn relayed_codec_reads_the_end_notice() {
        use crate::rendezvous::ErrorCode;
        let notice = relay_notice(ErrorCode::RelayLimit, "byte cap");
        // Worked bytes of docs/protocol.md §12.3.
        assert_eq!(hex(&notice), "000000000000000b030a086279746520636170");
        let mut codec = FrameCodec::relayed();
        let mut buf = BytesMut::from(&b"\0\0\0\x02hi"[..]);
        assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"hi");
        buf.extend_from_slice(&notice[..6]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&notice[6..]);
        match codec.decode(&mut buf) {
            Err(FrameError::RelayEnded { code, message }) => {
                assert_eq!(code, ErrorCode::RelayLimit);
                assert_eq!(message, "byte cap");
            }
            other => panic!("expected the end notice, got {other:?}"),
        }
        // A plain peer codec still refuses a zero length.
        let mut plain = FrameCodec::new(Link::Peer);
        let mut buf = BytesMut::from(&notice[..]);
        assert!(matches!(plain.decode(&mut buf), Err(FrameError::Empty)));
        // The mediator's words are one printable line.
        let notice = relay_notice(ErrorCode::RelayLimit, "cap\n WARN fake\u{1b}[2J");
        let mut buf = BytesMut::from(&notice[..]);
        match FrameCodec::relayed().decode(&mut buf) {
            Err(FrameError::RelayEnded { message, .. }) => assert_eq!(message, "cap  WARN fake"),
            other => panic!("expected the end notice, got {other:?}"),
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn bounds_are_per_link() {
        assert!(Link::Mediator.check_len(MEDIATOR_FRAME_MAX).is_ok());
        assert!(Link::Mediator.check_len(MEDIATOR_FRAME_MAX + 1).is_err());
        assert!(Link::Peer.check_len(PEER_FRAME_MAX).is_ok());
        assert!(Link::Peer.check_len(PEER_FRAME_MAX + 1).is_err());
        let mut codec = FrameCodec::new(Link::Peer);
        let mut buf = BytesMut::new();
        assert!(codec.encode(&[][..], &mut buf).is_err());
    }
}
