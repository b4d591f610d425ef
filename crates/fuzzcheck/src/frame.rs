//! The frame codec of both links, and of a relayed peer link, fed one byte stream
//! in arbitrary splits: it must yield exactly the frames (and stop at exactly the
//! error, or the relay's end notice) that a direct reading of docs/protocol.md §1
//! and §12.3 gives, re-encode each frame to the bytes it came from, and never let a
//! length header grow the buffer past the link's bound.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use wire::frame::{FrameError, HEADER_LEN, MEDIATOR_FRAME_MAX, RELAY_NOTICE};
use wire::{ErrorCode, FrameCodec, Link, MediatorMsg};

/// How a stream of frames ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A header broke the rules: the connection closes.
    Error,
    /// On a relayed link: the mediator's end notice, with its reason.
    RelayEnded(ErrorCode, String),
    /// The stream ran out with this many bytes of an unfinished frame buffered.
    Pending(usize),
}

/// The three ways a client reads frames.
#[derive(Debug, Clone, Copy)]
enum Reader {
    Plain(Link),
    /// A peer link through the mediator's relay (`FrameCodec::relayed`).
    Relayed,
}

impl Reader {
    fn link(self) -> Link {
        match self {
            Reader::Plain(link) => link,
            Reader::Relayed => Link::Peer,
        }
    }

    fn codec(self) -> FrameCodec {
        match self {
            Reader::Plain(link) => FrameCodec::new(link),
            Reader::Relayed => FrameCodec::relayed(),
        }
    }
}

/// `data[0] & 7` chunk sizes follow (cycled; none = one write), then the stream.
pub fn frame_decode(data: &[u8]) {
    let Some((&ctrl, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(usize::from(ctrl & 7).min(rest.len()));
    for reader in [
        Reader::Plain(Link::Mediator),
        Reader::Plain(Link::Peer),
        Reader::Relayed,
    ] {
        let link = reader.link();
        let (frames, end) = by_the_spec(reader, stream);
        let (got, got_end) = through_the_codec(reader, stream, sizes);
        assert_eq!(
            got_end, end,
            "{reader:?}: codec ended differently from the spec"
        );
        assert_eq!(got.len(), frames.len(), "{reader:?}: frame count differs");
        let mut offset = 0;
        for (frame, expected) in got.iter().zip(&frames) {
            assert_eq!(&frame[..], *expected, "{reader:?}: frame payload differs");
            // Re-encoding gives back exactly the bytes the frame was read from.
            let mut out = BytesMut::new();
            FrameCodec::new(link)
                .encode(&frame[..], &mut out)
                .expect("a decoded frame re-encodes");
            assert_eq!(&out[..], &stream[offset..offset + out.len()]);
            offset += out.len();
        }
    }
}

/// §1 read literally: `u32_be(N) | N bytes`, 1 ≤ N ≤ the link's bound; on a relayed
/// link, §12.3: `00 00 00 00`, then one mediator frame that ends the stream, with
/// the mediator's reason when it is an `Error`, as a broken frame otherwise.
fn by_the_spec(reader: Reader, mut stream: &[u8]) -> (Vec<&[u8]>, End) {
    let link = reader.link();
    let mut frames = Vec::new();
    loop {
        let Some(header) = stream.get(..HEADER_LEN) else {
            return (frames, End::Pending(stream.len()));
        };
        if matches!(reader, Reader::Relayed) && header == RELAY_NOTICE {
            return (frames, relay_end_by_the_spec(&stream[HEADER_LEN..]));
        }
        let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
        if len == 0 || len > link.max_payload() {
            return (frames, End::Error);
        }
        let Some(payload) = stream.get(HEADER_LEN..HEADER_LEN + len) else {
            return (frames, End::Pending(stream.len()));
        };
        frames.push(payload);
        stream = &stream[HEADER_LEN + len..];
    }
}

/// What follows the notice header: a mediator frame (`1 ≤ N ≤ 16 KiB`).
fn relay_end_by_the_spec(after: &[u8]) -> End {
    let Some(header) = after.get(..HEADER_LEN) else {
        return End::Pending(HEADER_LEN + after.len());
    };
    let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MEDIATOR_FRAME_MAX {
        return End::Error;
    }
    match after.get(HEADER_LEN..HEADER_LEN + len) {
        None => End::Pending(HEADER_LEN + after.len()),
        Some(payload) => match wire::decode::<MediatorMsg>(payload) {
            Ok(MediatorMsg::Error { code, message }) => End::RelayEnded(code, message),
            _ => End::Error,
        },
    }
}

/// The codec as a connection drives it: append what arrived, decode until it asks
/// for more, repeat; at the end of the stream, `decode_eof`.
fn through_the_codec(reader: Reader, stream: &[u8], sizes: &[u8]) -> (Vec<BytesMut>, End) {
    let link = reader.link();
    let mut codec = reader.codec();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut cycle = sizes.iter().cycle();
    // A bound on what any buffer may hold: what arrived plus one largest frame, and
    // room for BytesMut's doubling. A header that made the codec reserve what it
    // announces (up to 4 GiB) would break it.
    let bound = 2 * (stream.len() + HEADER_LEN + link.max_payload()) + 64;
    loop {
        let take = match cycle.next() {
            // A zero-size write still calls decode: the codec must not misbehave
            // on a buffer that did not change.
            Some(&size) => usize::from(size).min(rest.len()),
            None => rest.len(),
        };
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= link.max_payload());
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(FrameError::RelayEnded { code, message }) => {
                    assert!(
                        matches!(reader, Reader::Relayed),
                        "{reader:?}: a relay notice"
                    );
                    return (frames, End::RelayEnded(code, message));
                }
                Err(_) => return (frames, End::Error),
            }
            assert!(buf.capacity() <= bound, "buffer grew to {}", buf.capacity());
        }
        assert!(buf.capacity() <= bound, "buffer grew to {}", buf.capacity());
        // Stop once everything is fed; a cycle of zero sizes would never finish.
        if rest.is_empty() || (take == 0 && sizes.iter().all(|&s| s == 0)) {
            if !rest.is_empty() {
                buf.extend_from_slice(rest);
                rest = &[];
                continue;
            }
            break;
        }
    }
    let pending = buf.len();
    match codec.decode_eof(&mut buf) {
        // Nothing left: a clean end. Bytes left: the peer hung up mid-frame.
        Ok(None) => assert_eq!(pending, 0, "decode_eof accepted a partial frame"),
        Ok(Some(_)) => panic!("decode_eof produced a frame decode did not"),
        Err(_) => assert!(pending > 0, "decode_eof failed on an empty buffer"),
    }
    (frames, End::Pending(pending))
}
