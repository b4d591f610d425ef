//! Both roles of the peer handshake fed arbitrary messages: a host judging a
//! `PeerHello` and then a `JoinerConfirm`, a joiner judging a `HostConfirm`.
//!
//! The keys are fixed (group 14, key pairs from seeded RNGs) and the agreement
//! (the modpow and the key schedule) happens once per process, so one execution
//! costs a few hashes and MACs. The nonces come from seeded RNGs too, so the one
//! genuine exchange is known and can be checked both ways: it always completes,
//! with two sessions that agree and talk; nothing else ever completes.

use std::sync::OnceLock;

use dhke::{Group, KeyPair, ResumeSecret, RoomCode, RoomTag};
use rand::rngs::StdRng;
use rand::{CryptoRng, RngCore, SeedableRng};
use wire::handshake::{HostHandshake, JoinerHandshake};
use wire::{HandshakeInput, PeerHandshake, Session};

const ROOM: &str = "7-velvet-harbor";
const HOST_NAME: &str = "alice";
const JOINER_NAME: &str = "bob";
const HOST_KEY_SEED: u64 = 14;
const JOINER_KEY_SEED: u64 = 15;
const HOST_NONCE_SEED: u64 = 1;
const JOINER_NONCE_SEED: u64 = 2;

/// One host and one joiner with agreed keys, and the messages of their genuine
/// exchange under the seeded nonces.
pub(crate) struct Fixture {
    host: HostHandshake,
    joiner: JoinerHandshake,
    tag: RoomTag,
    joiner_public: Vec<u8>,
    /// The joiner's `PeerHello`, the host's `HostConfirm`, the joiner's `JoinerConfirm`.
    pub(crate) hello: PeerHandshake,
    pub(crate) host_confirm: PeerHandshake,
    pub(crate) joiner_confirm: PeerHandshake,
    /// Every `HostConfirm` the host can send this joiner: to its hello, and (when
    /// resuming) to the same hello without the resume offer.
    host_replies: Vec<PeerHandshake>,
}

/// A fresh pair, and a pair that shares a previous session's secret (resume).
pub(crate) struct Fixtures {
    pub(crate) fresh: Fixture,
    pub(crate) resumed: Fixture,
}

/// The room code, parsed once (its tag may cost an Argon2id).
pub(crate) fn code() -> &'static RoomCode {
    static CODE: OnceLock<RoomCode> = OnceLock::new();
    CODE.get_or_init(|| RoomCode::parse(ROOM))
}

fn host_rng() -> StdRng {
    StdRng::seed_from_u64(HOST_NONCE_SEED)
}

fn joiner_rng() -> StdRng {
    StdRng::seed_from_u64(JOINER_NONCE_SEED)
}

fn input(
    local: &KeyPair,
    local_name: &str,
    peer: &KeyPair,
    peer_name: &str,
    previous: Option<ResumeSecret>,
) -> HandshakeInput {
    HandshakeInput {
        room: code().clone(),
        local_name: local_name.into(),
        local: local.clone(),
        peer_name: peer_name.into(),
        peer_public: peer.public().to_vec(),
        previous,
        keylog: false,
        // Fixed identities, so replays repeat: seed = first byte of the name.
        identity: dhke::Identity::from_seed(&[local_name.as_bytes()[0]; 32]),
        expect_peer: None,
    }
}

impl Fixture {
    fn new(host_key: &KeyPair, joiner_key: &KeyPair, previous: Option<ResumeSecret>) -> Fixture {
        let host = HostHandshake::new(input(
            host_key,
            HOST_NAME,
            joiner_key,
            JOINER_NAME,
            previous.clone(),
        ))
        .expect("fixture host");
        let joiner = JoinerHandshake::new(input(
            joiner_key,
            JOINER_NAME,
            host_key,
            HOST_NAME,
            previous,
        ))
        .expect("fixture joiner");
        let (joiner_state, hello) = joiner.hello(&mut joiner_rng());
        let (host_state, host_confirm) = host
            .on_peer_hello(hello.clone(), &mut host_rng())
            .expect("fixture host accepts the hello");
        let (joiner_session, joiner_confirm) = joiner_state
            .on_host_confirm(host_confirm.clone())
            .expect("fixture joiner accepts the confirm");
        let host_session = host_state
            .on_joiner_confirm(joiner_confirm.clone())
            .expect("fixture host accepts the confirm");
        check_sessions(host_session, joiner_session);
        let mut host_replies = vec![host_confirm.clone()];
        if let PeerHandshake::PeerHello {
            room,
            public,
            commit,
            resume: Some(_),
            identity,
        } = hello.clone()
        {
            let plain = PeerHandshake::PeerHello {
                room,
                public,
                commit,
                resume: None,
                identity,
            };
            let (_, reply) = host
                .on_peer_hello(plain, &mut host_rng())
                .expect("fixture host accepts a hello without resume");
            host_replies.push(reply);
        }
        Fixture {
            host,
            joiner,
            tag: code().tag(),
            joiner_public: joiner_key.public().to_vec(),
            hello,
            host_confirm,
            joiner_confirm,
            host_replies,
        }
    }
}

/// The fixtures, built on first use (two modpows per key pair, once per process).
pub(crate) fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let host_key = KeyPair::generate_cpace(
            Group::Modp2048,
            code(),
            &mut StdRng::seed_from_u64(HOST_KEY_SEED),
        )
        .expect("fixture key pair");
        let joiner_key = KeyPair::generate_cpace(
            Group::Modp2048,
            code(),
            &mut StdRng::seed_from_u64(JOINER_KEY_SEED),
        )
        .expect("fixture key pair");
        let fresh = Fixture::new(&host_key, &joiner_key, None);
        let previous = session_secret(&fresh);
        let resumed = Fixture::new(&host_key, &joiner_key, Some(previous));
        Fixtures { fresh, resumed }
    })
}

/// The resume secret of the fresh pair's genuine session.
fn session_secret(f: &Fixture) -> ResumeSecret {
    let (state, _) = f
        .host
        .on_peer_hello(f.hello.clone(), &mut host_rng())
        .expect("genuine hello");
    let session = state
        .on_joiner_confirm(f.joiner_confirm.clone())
        .expect("genuine confirm");
    session.resume_secret().clone()
}

/// Two ends of one handshake: same transcript, SAS and resume state, and each
/// opens what the other seals.
fn check_sessions(mut host: Session, mut joiner: Session) {
    assert_eq!(host.sas().value(), joiner.sas().value(), "SAS differs");
    assert_eq!(host.transcript().0, joiner.transcript().0);
    assert_eq!(host.resumed(), joiner.resumed());
    let mut rng = StdRng::seed_from_u64(3);
    let mut record = host.sealer().seal(b"to joiner", &mut rng).expect("seal");
    assert_eq!(
        joiner.opener().open(&mut record).expect("open"),
        b"to joiner"
    );
    let mut record = joiner.sealer().seal(b"to host", &mut rng).expect("seal");
    assert_eq!(host.opener().open(&mut record).expect("open"), b"to host");
}

/// `ctrl | u16_le(split) | first | second`. `ctrl` bit 0: the resuming pair;
/// bit 1: the joiner's side (judges `first` as `HostConfirm`), else the host's
/// (judges `first` as `PeerHello`, then `second` as `JoinerConfirm`).
pub fn handshake(data: &[u8]) {
    let [ctrl, lo, hi, rest @ ..] = data else {
        return;
    };
    let fx = fixtures();
    let f = if ctrl & 1 == 0 {
        &fx.fresh
    } else {
        &fx.resumed
    };
    let split = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
    let (first, second) = rest.split_at(split);
    if ctrl & 2 == 0 {
        host_side(f, first, second);
    } else {
        joiner_side(f, first);
    }
}

fn host_side(f: &Fixture, first: &[u8], second: &[u8]) {
    let Ok(hello) = wire::decode::<PeerHandshake>(first) else {
        return;
    };
    let Ok((state, reply)) = f.host.on_peer_hello(hello.clone(), &mut host_rng()) else {
        assert_ne!(hello, f.hello, "the host refused the genuine hello");
        return;
    };
    // Only a PeerHello for this room from the announced key moves the host on.
    let PeerHandshake::PeerHello {
        room,
        public,
        commit,
        ..
    } = &hello
    else {
        panic!("the host accepted {hello:?}");
    };
    assert_eq!(*room, f.tag.0, "the host accepted another room");
    assert_eq!(*public, f.joiner_public, "the host accepted another key");
    assert!(matches!(reply, PeerHandshake::HostConfirm { .. }));
    let Ok(confirm) = wire::decode::<PeerHandshake>(second) else {
        return;
    };
    let genuine = hello == f.hello && confirm == f.joiner_confirm;
    match state.on_joiner_confirm(confirm.clone()) {
        Ok(host_session) => {
            // Completing needs the nonce behind the commitment, and a joiner that
            // chose that nonce sends this very JoinerConfirm to the host's answer.
            let PeerHandshake::JoinerConfirm { nonce, .. } = &confirm else {
                panic!("the host completed on {confirm:?}");
            };
            assert_eq!(
                dhke::commit(&dhke::Nonce(*nonce)),
                *commit,
                "the host completed with a nonce that does not open the commitment"
            );
            let (joiner_state, _) = f.joiner.hello(&mut Scripted(*nonce));
            let (joiner_session, expected) = joiner_state
                .on_host_confirm(reply)
                .expect("the joiner accepts the host's answer to its own commitment");
            assert_eq!(
                confirm, expected,
                "the host completed a forged JoinerConfirm"
            );
            check_sessions(host_session, joiner_session);
        }
        Err(e) => assert!(!genuine, "the genuine exchange failed: {e}"),
    }
}

fn joiner_side(f: &Fixture, first: &[u8]) {
    let Ok(msg) = wire::decode::<PeerHandshake>(first) else {
        return;
    };
    let (state, hello) = f.joiner.hello(&mut joiner_rng());
    debug_assert_eq!(hello, f.hello);
    match state.on_host_confirm(msg.clone()) {
        Ok((joiner_session, confirm)) => {
            // The host, drawing this nonce, answers this hello (or, not resuming,
            // the hello without its resume offer) with exactly this message.
            let PeerHandshake::HostConfirm { nonce, resumed, .. } = &msg else {
                panic!("the joiner completed on {msg:?}");
            };
            let hello = if *resumed {
                hello
            } else {
                strip_resume(&hello)
            };
            let (state, reply) = f
                .host
                .on_peer_hello(hello, &mut Scripted(*nonce))
                .expect("genuine hello");
            assert_eq!(reply, msg, "the joiner accepted a forged HostConfirm");
            let host_session = state
                .on_joiner_confirm(confirm)
                .expect("the host accepts the joiner's confirm");
            check_sessions(host_session, joiner_session);
        }
        Err(e) => assert!(
            !f.host_replies.contains(&msg),
            "the joiner refused a genuine HostConfirm: {e}"
        ),
    }
}

fn strip_resume(hello: &PeerHandshake) -> PeerHandshake {
    match hello.clone() {
        PeerHandshake::PeerHello {
            room,
            public,
            commit,
            identity,
            ..
        } => PeerHandshake::PeerHello {
            room,
            public,
            commit,
            resume: None,
            identity,
        },
        other => other,
    }
}

/// An "RNG" that hands out one chosen 32-byte nonce (repeated): lets the harness
/// ask what a side would have sent had it drawn the nonce an input carries. Only
/// for this harness; the `CryptoRng` mark is what the handshake API asks for.
struct Scripted([u8; 32]);

impl RngCore for Scripted {
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes(self.0[..4].try_into().expect("4 bytes"))
    }

    fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for (d, s) in dest.iter_mut().zip(self.0.iter().cycle()) {
            *d = *s;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Scripted {}
