//! Arbitrary handshake messages into both state machines (group 14, fixed keys):
//! never a panic, and no forged message completes a handshake.
#![no_main]

use std::sync::OnceLock;

use dhke::{Group, KeyPair, RoomCode};
use libfuzzer_sys::fuzz_target;
use wire::handshake::{HostHandshake, JoinerHelloSent};
use wire::{HandshakeInput, PeerHandshake};

struct Fixture {
    host: KeyPair,
    joiner: KeyPair,
    host_machine: HostHandshake,
}

/// A nameplate code: its tag needs no Argon2id, so the fixture stays fast.
fn code() -> RoomCode {
    RoomCode::parse("1-fuzz-target-room-code")
}

fn input(local: &KeyPair, name: &str, peer: &KeyPair, peer_name: &str) -> HandshakeInput {
    HandshakeInput {
        room: code(),
        local_name: name.into(),
        local: local.clone(),
        peer_name: peer_name.into(),
        peer_public: peer.public().to_vec(),
        previous: None,
        keylog: false,
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = rand_core::OsRng;
        let host = KeyPair::generate_cpace(Group::Modp2048, &code(), &mut rng).unwrap();
        let joiner = KeyPair::generate_cpace(Group::Modp2048, &code(), &mut rng).unwrap();
        let host_machine = HostHandshake::new(input(&host, "alice", &joiner, "bob")).unwrap();
        Fixture {
            host,
            joiner,
            host_machine,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = wire::decode::<PeerHandshake>(data) else {
        return;
    };
    let f = fixture();
    let mut rng = rand_core::OsRng;
    // Host side: a PeerHello may move it on (it carries no secret), but the
    // fuzzer cannot then produce a valid JoinerConfirm.
    if let Ok((sent, _)) = f.host_machine.on_peer_hello(msg.clone(), &mut rng) {
        assert!(sent.on_joiner_confirm(msg.clone()).is_err());
    }
    // Joiner side: no HostConfirm from the fuzzer carries a valid MAC.
    let (joiner, _) =
        JoinerHelloSent::start(input(&f.joiner, "bob", &f.host, "alice"), &mut rng).unwrap();
    assert!(joiner.on_host_confirm(msg).is_err());
});
