//! Shared helpers for wire's integration tests: a host and a joiner paired in memory
//! (in the spirit of boringtun's `create_two_tuns`), with deterministic randomness.

#![allow(dead_code)] // each test crate uses a different subset

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use dhke::schedule::ResumeSecret;
use dhke::{Group, KeyPair, RoomCode};
use rand::{rngs::StdRng, SeedableRng};
use wire::handshake::{HostConfirmSent, HostHandshake, JoinerHelloSent};
use wire::{HandshakeInput, PeerHandshake, Session};

pub const ROOM: &str = "7-velvet-harbor";
pub const HOST_NAME: &str = "alice";
pub const JOINER_NAME: &str = "bob";

/// `RoomCode::parse(room)`, with the tag (an Argon2id for a typed name) computed once
/// per test process.
pub fn code(room: &str) -> RoomCode {
    static CODES: OnceLock<Mutex<HashMap<String, RoomCode>>> = OnceLock::new();
    let mut codes = CODES.get_or_init(Default::default).lock().unwrap();
    let code = codes
        .entry(room.to_owned())
        .or_insert_with(|| RoomCode::parse(room));
    code.tag();
    code.clone()
}

/// A seeded RNG, so every run of a test sees the same values.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// What one side brings to the handshake.
#[derive(Clone, Debug)]
pub struct Side {
    pub name: String,
    pub keys: KeyPair,
    pub previous: Option<ResumeSecret>,
    pub identity: dhke::Identity,
}

/// A fixed identity per name, so runs repeat: the seed is the name's bytes,
/// zero-padded to 32.
pub fn identity_of(name: &str) -> dhke::Identity {
    let mut seed = [0u8; 32];
    for (s, b) in seed.iter_mut().zip(name.bytes()) {
        *s = b;
    }
    dhke::Identity::from_seed(&seed)
}

impl Side {
    /// A side in `ROOM`.
    pub fn new(name: &str, group: Group, rng: &mut StdRng) -> Side {
        Side::in_room(name, group, ROOM, rng)
    }

    /// A side whose CPace key pair is made for `room`.
    pub fn in_room(name: &str, group: Group, room: &str, rng: &mut StdRng) -> Side {
        Side {
            name: name.to_owned(),
            keys: KeyPair::generate_cpace(group, &code(room), rng).unwrap(),
            previous: None,
            identity: identity_of(name),
        }
    }

    /// The handshake input for talking to `peer` as the mediator announced it.
    pub fn input(&self, room: &str, peer_name: &str, peer_public: &[u8]) -> HandshakeInput {
        HandshakeInput {
            room: code(room),
            local_name: self.name.clone(),
            local: self.keys.clone(),
            peer_name: peer_name.to_owned(),
            peer_public: peer_public.to_vec(),
            previous: self.previous.clone(),
            keylog: true,
            identity: self.identity.clone(),
            expect_peer: None,
        }
    }
}

/// A host and a joiner matched by an honest mediator in `ROOM`.
pub fn pair(group: Group, rng: &mut StdRng) -> (Side, Side) {
    (
        Side::new(HOST_NAME, group, rng),
        Side::new(JOINER_NAME, group, rng),
    )
}

/// The host's state machine for `host` expecting `joiner`.
pub fn host_machine(host: &Side, joiner: &Side) -> HostHandshake {
    HostHandshake::new(host.input(ROOM, &joiner.name, joiner.keys.public())).unwrap()
}

/// The joiner's state machine and its `PeerHello`.
pub fn joiner_start(
    joiner: &Side,
    host: &Side,
    rng: &mut StdRng,
) -> (JoinerHelloSent, PeerHandshake) {
    JoinerHelloSent::start(joiner.input(ROOM, &host.name, host.keys.public()), rng).unwrap()
}

/// Every step of the handshake, for tests that tamper with one message.
pub struct Steps {
    pub host: HostConfirmSent,
    pub joiner: JoinerHelloSent,
    pub hello: PeerHandshake,
    pub host_confirm: PeerHandshake,
}

pub fn steps_until_host_confirm(host: &Side, joiner: &Side, rng: &mut StdRng) -> Steps {
    let host_hs = host_machine(host, joiner);
    let (joiner_hs, hello) = joiner_start(joiner, host, rng);
    let (host_sent, host_confirm) = host_hs.on_peer_hello(hello.clone(), rng).unwrap();
    Steps {
        host: host_sent,
        joiner: joiner_hs,
        hello,
        host_confirm,
    }
}

/// Runs the whole handshake honestly: `(host session, joiner session)`.
pub fn handshake(host: &Side, joiner: &Side, rng: &mut StdRng) -> (Session, Session) {
    let s = steps_until_host_confirm(host, joiner, rng);
    let (joiner_session, joiner_confirm) = s.joiner.on_host_confirm(s.host_confirm).unwrap();
    let host_session = s.host.on_joiner_confirm(joiner_confirm).unwrap();
    (host_session, joiner_session)
}

/// A fresh pair of sessions in group 14 (fast in debug builds).
pub fn sessions(seed: u64) -> (Session, Session) {
    let mut rng = rng(seed);
    let (host, joiner) = pair(Group::Modp2048, &mut rng);
    handshake(&host, &joiner, &mut rng)
}

/// Seals on `from`, opens on `to`, and checks the plaintext survives.
pub fn assert_talks(from: &mut Session, to: &mut Session, text: &[u8]) {
    let mut record = from.sealer().seal(text, &mut rand::rngs::OsRng).unwrap();
    assert_eq!(to.opener().open(&mut record).unwrap(), text);
}
