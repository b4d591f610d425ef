//! The frame codec of both links, fed one byte stream in arbitrary splits: it must
//! yield exactly the frames (and stop at exactly the error) that a direct reading of
//! docs/protocol.md §1 gives, re-encode each frame to the bytes it came from, and
//! never let a length header grow the buffer past the link's bound.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};
use wire::frame::HEADER_LEN;
use wire::{FrameCodec, Link};

/// How a stream of frames ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A header broke the rules: the connection closes.
    Error,
    /// The stream ran out with this many bytes of an unfinished frame buffered.
    Pending(usize),
}

/// `data[0] & 7` chunk sizes follow (cycled; none = one write), then the stream.
pub fn frame_decode(data: &[u8]) {
    let Some((&ctrl, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(usize::from(ctrl & 7).min(rest.len()));
    for link in [Link::Mediator, Link::Peer] {
        let (frames, end) = by_the_spec(link, stream);
        let (got, got_end) = through_the_codec(link, stream, sizes);
        assert_eq!(
            got_end, end,
            "{link:?}: codec ended differently from the spec"
        );
        assert_eq!(got.len(), frames.len(), "{link:?}: frame count differs");
        let mut offset = 0;
        for (frame, expected) in got.iter().zip(&frames) {
            assert_eq!(&frame[..], *expected, "{link:?}: frame payload differs");
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

/// §1 read literally: `u32_be(N) | N bytes`, 1 ≤ N ≤ the link's bound.
fn by_the_spec(link: Link, mut stream: &[u8]) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    loop {
        let Some(header) = stream.get(..HEADER_LEN) else {
            return (frames, End::Pending(stream.len()));
        };
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

/// The codec as a connection drives it: append what arrived, decode until it asks
/// for more, repeat; at the end of the stream, `decode_eof`.
fn through_the_codec(link: Link, stream: &[u8], sizes: &[u8]) -> (Vec<BytesMut>, End) {
    let mut codec = FrameCodec::new(link);
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
