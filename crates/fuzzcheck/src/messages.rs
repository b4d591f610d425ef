//! Every bincode message type decoded from arbitrary bytes. Generic over the type,
//! so variants added later are covered without touching the harness: whatever
//! decodes must re-encode (within the limit) to bytes no longer than the input,
//! identical to it when as long (the encoder is canonical; only a longer varint
//! form may be accepted), which decode to the same message.

use std::fmt::Debug;

use serde::{de::DeserializeOwned, Serialize};
use wire::{ClientMsg, MediatorMsg, PeerHandshake, PeerMsg};

/// Decodes `data` as `T` and checks the round trip; returns the message if any.
pub(crate) fn round_trip<T>(data: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let msg = wire::decode::<T>(data).ok()?;
    let bytes = wire::encode(&msg).expect("a decoded message re-encodes");
    assert!(
        bytes.len() <= data.len(),
        "re-encoding grew from {} to {} bytes: {msg:?}",
        data.len(),
        bytes.len()
    );
    if bytes.len() == data.len() {
        assert_eq!(bytes, data, "same length, different bytes: {msg:?}");
    }
    let again = wire::decode::<T>(&bytes).expect("a re-encoded message decodes");
    assert_eq!(again, msg);
    // Debug output is what logs show; it must not panic on any value.
    let _ = format!("{msg:?}");
    Some(msg)
}

/// Client → mediator messages (what the mediator decodes).
pub fn client_msg(data: &[u8]) {
    round_trip::<ClientMsg>(data);
}

/// Mediator → client messages (what the client decodes).
pub fn mediator_msg(data: &[u8]) {
    round_trip::<MediatorMsg>(data);
}

/// The plaintext peer handshake messages (decoded before any key is confirmed).
pub fn peer_handshake_msg(data: &[u8]) {
    round_trip::<PeerHandshake>(data);
}

/// What a record carries once it opened; its field limits are docs/protocol.md §7's.
pub fn peer_msg(data: &[u8]) {
    let Some(msg) = round_trip::<PeerMsg>(data) else {
        return;
    };
    let over = match &msg {
        PeerMsg::Chat { text, .. } => text.len() > 16_384,
        PeerMsg::FileChunk { data, .. } => data.len() > 65_472,
        _ => false,
    };
    assert_eq!(msg.check_limits().is_err(), over, "{msg:?}");
}
