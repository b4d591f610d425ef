//! Arbitrary bytes decoded as every message type: never a panic or an abort
//! (the bincode limit), and whatever decodes re-encodes to a value that decodes
//! to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::{ClientMsg, MediatorMsg, PeerHandshake, PeerMsg};

fn check<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(msg) = wire::decode::<T>(data) {
        let bytes = wire::encode(&msg).expect("a decoded message re-encodes");
        assert_eq!(wire::decode::<T>(&bytes).expect("re-decodes"), msg);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ClientMsg>(data);
    check::<MediatorMsg>(data);
    check::<PeerHandshake>(data);
    check::<PeerMsg>(data);
});
