//! The p2pchat wire protocol (docs/protocol.md), with no sockets and no clocks.
//!
//! A connection carries length-prefixed [`frame`]s. On a mediator link each frame
//! holds one bincode [`rendezvous`] message, decoded only through [`encoding`],
//! which always applies a byte limit. On a peer link the first frames carry the
//! [`peer::PeerHandshake`] messages driven by the [`handshake`] state machines; a
//! finished handshake turns into a [`Session`], whose [`record`] layer seals and
//! opens every later frame (AES-256-CBC + HMAC-SHA256, implicit sequence numbers)
//! around one bincode [`peer::PeerMsg`]. Without a mediator, clients find each
//! other by [`lan`] announcements. [`text`] holds the name check and the one
//! function that makes peer-supplied text safe to print.

pub mod encoding;
pub mod frame;
pub mod group;
pub mod handshake;
pub mod lan;
pub mod mailbox;
pub mod peer;
pub mod record;
pub mod rendezvous;
pub mod text;
pub mod token;

pub use encoding::{decode, encode, encode_into, encoded_len, DecodeError};
pub use frame::{FrameCodec, FrameError, Link};
pub use handshake::{HandshakeError, HandshakeInput, Session};
pub use peer::{PeerHandshake, PeerMsg, Signature64};
pub use record::{Opener, RecordError, Sealer};
pub use rendezvous::{
    ClientMsg, ErrorCode, MediatorMsg, PathLabel, RelayOffer, Role, MAX_PRESENCE_BATCH,
    PROTOCOL_VERSION,
};
pub use text::{sanitize_for_terminal, validate_name, NameError};
