//! Arbitrary bytes into the frame codec of both links: never a panic, never a
//! frame outside the link's bound, and never a buffer grown past the bound.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use wire::{FrameCodec, Link};

fuzz_target!(|data: &[u8]| {
    for link in [Link::Mediator, Link::Peer] {
        let mut codec = FrameCodec::new(link);
        // Feed in two pieces to exercise the partial-frame path.
        let split = data.first().map_or(0, |b| *b as usize).min(data.len());
        let mut buf = BytesMut::from(&data[..split]);
        let mut rest = &data[split..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= link.max_payload());
                }
                Ok(None) if !rest.is_empty() => {
                    buf.extend_from_slice(rest);
                    rest = &[];
                }
                Ok(None) | Err(_) => break,
            }
            assert!(buf.capacity() <= data.len() + link.max_payload() + 4 + 64);
        }
    }
});
