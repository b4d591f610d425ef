//! The peer handshake of docs/protocol.md §6, host and joiner paired in memory:
//! agreement, a man in the middle, the commitment, resumption, transcript binding,
//! strangers, tampered confirms and refusals.

mod common;

use common::*;
use dhke::schedule::{Nonce, SessionKeys};
use dhke::{
    commit, host_confirm_mac, joiner_confirm_mac, keylog_line, resume_id, validate_peer_public,
    Group, SharedSecret, Transcript,
};
use wire::{HandshakeError, PeerHandshake, RecordError, Role};

const G14: Group = Group::Modp2048;

/// The keys, Z and th a side derives, recomputed here from the spec with dhke's
/// primitives, as a keylog line.
fn expected_keylog(host: &Side, joiner: &Side, resumed_from: Option<&Side>) -> String {
    let group = host.keys.group();
    let tag = code(ROOM).tag();
    let th = Transcript {
        room_tag: &tag,
        group,
        host_name: &host.name,
        host_public: host.keys.public(),
        joiner_name: &joiner.name,
        joiner_public: joiner.keys.public(),
    }
    .hash();
    let peer = validate_peer_public(group, joiner.keys.public(), host.keys.public()).unwrap();
    let z = host.keys.agree(&peer).unwrap();
    let previous = resumed_from.and_then(|s| s.previous.as_ref());
    let keys = SessionKeys::derive(&th, &code(ROOM), &z, previous);
    keylog_line(&th, &z, &keys).to_string()
}

#[test]
fn full_handshake_agrees_on_keys_and_sas() {
    let mut rng = rng(1);
    let (host, joiner) = pair(G14, &mut rng);
    let (mut h, mut j) = handshake(&host, &joiner, &mut rng);
    assert_eq!(h.role(), Role::Host);
    assert_eq!(j.role(), Role::Joiner);
    assert_eq!(h.sas(), j.sas());
    assert_eq!(h.transcript(), j.transcript());
    assert!(!h.resumed() && !j.resumed());
    // Both sides log the same keys, and they are the spec's keys.
    let line = h.keylog_line().unwrap().to_owned();
    assert_eq!(Some(line.as_str()), j.keylog_line());
    assert_eq!(line, expected_keylog(&host, &joiner, None));
    assert!(line.starts_with("P2PCHAT_V1 "));
    assert_eq!(line.split(' ').count(), 7);
    // Records flow both ways, several in a row.
    for i in 0..3u8 {
        assert_talks(&mut h, &mut j, &[i; 100]);
        assert_talks(&mut j, &mut h, &[i; 5]);
    }
    assert_eq!(h.sealer().sequence(), 3);
    assert_eq!(j.opener().sequence(), 3);
}

#[test]
fn full_handshake_in_group_15() {
    let mut rng = rng(15);
    let (host, joiner) = pair(Group::Modp3072, &mut rng);
    let (mut h, mut j) = handshake(&host, &joiner, &mut rng);
    assert_eq!(h.sas(), j.sas());
    assert_eq!(h.keylog_line(), j.keylog_line());
    assert_talks(&mut h, &mut j, b"hello");
    assert_talks(&mut j, &mut h, b"hi");
}

#[test]
fn messages_survive_the_wire_encoding() {
    // The same handshake, with every message passed through bincode as on a socket.
    fn hop(msg: PeerHandshake) -> PeerHandshake {
        wire::decode(&wire::encode(&msg).unwrap()).unwrap()
    }
    let mut rng = rng(2);
    let (host, joiner) = pair(G14, &mut rng);
    let host_hs = host_machine(&host, &joiner);
    let (joiner_hs, hello) = joiner_start(&joiner, &host, &mut rng);
    let (host_sent, confirm) = host_hs.on_peer_hello(hop(hello), &mut rng).unwrap();
    let (j, joiner_confirm) = joiner_hs.on_host_confirm(hop(confirm)).unwrap();
    let h = host_sent.on_joiner_confirm(hop(joiner_confirm)).unwrap();
    assert_eq!(h.sas(), j.sas());
}

#[test]
fn sessions_differ_between_runs() {
    let (h1, _) = sessions(3);
    let (h2, _) = sessions(4);
    assert_ne!(h1.keylog_line(), h2.keylog_line());
    assert_ne!(h1.transcript(), h2.transcript());
}

#[test]
fn man_in_the_middle_gets_differing_sas() {
    // M sits between host and joiner and hands each its own DH value (as a
    // malicious mediator could). It plays each leg honestly: as joiner toward the
    // host and as host toward the joiner. Each leg completes, but the SAS the two
    // people compare match only by a 1-in-10^6 chance, so over 200 seeded runs we
    // expect no match at all (P(any) ≈ 2·10^-4; the seed makes the outcome fixed).
    const RUNS: usize = 200;
    let mut rng = rng(0x4d49_544d);
    let mut equal = 0;
    for _ in 0..RUNS {
        let (host, joiner) = pair(G14, &mut rng);
        let m_as_joiner = Side::new(JOINER_NAME, G14, &mut rng);
        let m_as_host = Side::new(HOST_NAME, G14, &mut rng);
        let (mut h, mut m1) = handshake(&host, &m_as_joiner, &mut rng);
        let (mut m2, mut j) = handshake(&m_as_host, &joiner, &mut rng);
        // Each leg on its own is a working session...
        assert_eq!(h.sas(), m1.sas());
        assert_eq!(m2.sas(), j.sas());
        assert_talks(&mut h, &mut m1, b"leg 1");
        assert_talks(&mut m2, &mut j, b"leg 2");
        // ...but host and joiner do not share keys.
        let mut record = h.sealer().seal(b"direct?", &mut rng).unwrap();
        assert_eq!(j.opener().open(&mut record), Err(RecordError::Integrity));
        if h.sas() == j.sas() {
            equal += 1;
        }
    }
    assert_eq!(equal, 0, "SAS matched across a man in the middle");
}

/// A joiner driven by hand with dhke's primitives: it knows every key, as a man in
/// the middle playing the joiner would.
struct HandJoiner {
    /// The identity transcript `thi` (both identities bound in).
    th: dhke::TranscriptHash,
    keys: SessionKeys,
    identity: dhke::Identity,
    nonce: Nonce,
    commit: [u8; 32],
}

impl HandJoiner {
    fn new(host: &Side, joiner: &Side, rng: &mut rand::rngs::StdRng) -> HandJoiner {
        let group = joiner.keys.group();
        let tag = code(ROOM).tag();
        let th = Transcript {
            room_tag: &tag,
            group,
            host_name: &host.name,
            host_public: host.keys.public(),
            joiner_name: &joiner.name,
            joiner_public: joiner.keys.public(),
        }
        .hash();
        let peer = validate_peer_public(group, host.keys.public(), joiner.keys.public()).unwrap();
        let z = joiner.keys.agree(&peer).unwrap();
        let keys = SessionKeys::derive(&th, &code(ROOM), &z, None);
        let nonce = Nonce::random(rng);
        let th =
            dhke::identity_transcript(&th, &host.identity.public().0, &joiner.identity.public().0);
        HandJoiner {
            th,
            keys,
            identity: joiner.identity.clone(),
            commit: commit(&nonce),
            nonce,
        }
    }

    fn hello(&self, joiner: &Side) -> PeerHandshake {
        PeerHandshake::PeerHello {
            room: code(ROOM).tag().0,
            public: joiner.keys.public().to_vec(),
            commit: self.commit,
            resume: None,
            identity: joiner.identity.public().0,
        }
    }

    /// A `JoinerConfirm` revealing `revealed`, with a MAC that is valid for it.
    fn confirm(&self, host_confirm: &PeerHandshake, revealed: Nonce) -> PeerHandshake {
        let PeerHandshake::HostConfirm {
            nonce,
            mac,
            resumed,
            ..
        } = host_confirm
        else {
            panic!("expected HostConfirm, got {host_confirm:?}");
        };
        let host_nonce = Nonce(*nonce);
        // The hand-made keys are the host's keys.
        assert_eq!(
            &host_confirm_mac(&self.keys, &self.th, &self.commit, &host_nonce, *resumed),
            mac
        );
        PeerHandshake::JoinerConfirm {
            nonce: revealed.0,
            mac: joiner_confirm_mac(
                &self.keys,
                &self.th,
                &self.commit,
                &host_nonce,
                *resumed,
                &revealed,
            ),
            signature: wire::Signature64(self.identity.sign(&dhke::joiner_signed_bytes(
                &self.th,
                &self.commit,
                &host_nonce,
                *resumed,
                &revealed,
            ))),
        }
    }
}

#[test]
fn revealed_nonce_must_match_commitment() {
    let mut rng = rng(5);
    let (host, joiner) = pair(G14, &mut rng);
    let host_hs = host_machine(&host, &joiner);
    let hand = HandJoiner::new(&host, &joiner, &mut rng);

    // Control: revealing the committed nonce completes.
    let (sent, confirm) = host_hs
        .on_peer_hello(hand.hello(&joiner), &mut rng)
        .unwrap();
    let session = sent
        .on_joiner_confirm(hand.confirm(&confirm, hand.nonce))
        .unwrap();
    assert_eq!(
        session.sas(),
        hand.keys.sas(
            &hand.th,
            &match confirm {
                PeerHandshake::HostConfirm { nonce, .. } => Nonce(nonce),
                _ => unreachable!(),
            },
            &hand.nonce
        )
    );

    // Revealing another nonce, even with a MAC valid for it, aborts.
    let (sent, confirm) = host_hs
        .on_peer_hello(hand.hello(&joiner), &mut rng)
        .unwrap();
    let other = Nonce::random(&mut rng);
    let err = sent
        .on_joiner_confirm(hand.confirm(&confirm, other))
        .unwrap_err();
    assert!(matches!(err, HandshakeError::KeysDiffer), "{err:?}");
}

#[test]
fn resumed_handshake_agrees_when_both_hold_the_previous_session() {
    let mut rng = rng(6);
    let (mut host, mut joiner) = pair(G14, &mut rng);
    let (h1, j1) = handshake(&host, &joiner, &mut rng);

    // They meet again in the same room with fresh key pairs.
    host = Side::new(HOST_NAME, G14, &mut rng);
    joiner = Side::new(JOINER_NAME, G14, &mut rng);
    host.previous = Some(h1.resume_secret().clone());
    joiner.previous = Some(j1.resume_secret().clone());
    assert_eq!(
        resume_id(host.previous.as_ref().unwrap()),
        resume_id(joiner.previous.as_ref().unwrap())
    );

    let host_hs = host_machine(&host, &joiner);
    let (joiner_hs, hello) = joiner_start(&joiner, &host, &mut rng);
    assert!(joiner_hs.offered_resume());
    match &hello {
        PeerHandshake::PeerHello { resume, .. } => {
            assert_eq!(*resume, Some(resume_id(joiner.previous.as_ref().unwrap())));
        }
        other => panic!("{other:?}"),
    }
    let (host_sent, confirm) = host_hs.on_peer_hello(hello, &mut rng).unwrap();
    assert!(matches!(
        confirm,
        PeerHandshake::HostConfirm { resumed: true, .. }
    ));
    let (mut j, joiner_confirm) = joiner_hs.on_host_confirm(confirm).unwrap();
    let mut h = host_sent.on_joiner_confirm(joiner_confirm).unwrap();
    assert!(h.resumed() && j.resumed());
    assert_eq!(h.sas(), j.sas());
    assert_talks(&mut h, &mut j, b"welcome back");
    assert_talks(&mut j, &mut h, b"thanks");

    // The keys are the resumed salt's keys, not a fresh derivation's.
    let line = h.keylog_line().unwrap();
    assert_eq!(line, expected_keylog(&host, &joiner, Some(&host)));
    let fresh = expected_keylog(&host, &joiner, None);
    let keys_of = |l: &str| l.split(' ').skip(3).map(str::to_owned).collect::<Vec<_>>();
    let (resumed_keys, fresh_keys) = (keys_of(line), keys_of(&fresh));
    assert_eq!(resumed_keys.len(), 4);
    for (r, f) in resumed_keys.iter().zip(&fresh_keys) {
        assert_ne!(r, f);
    }
    // And the resumed session chains: its own resume secret is new.
    assert_ne!(
        resume_id(h.resume_secret()),
        resume_id(host.previous.as_ref().unwrap())
    );
}

/// Runs a handshake where only some sides hold a previous session; returns
/// `(joiner offered, host resumed flag, joiner resumed flag)` after checking that
/// the two sides agree anyway.
fn partial_resume(host: &Side, joiner: &Side, rng: &mut rand::rngs::StdRng) -> (bool, bool, bool) {
    let host_hs = host_machine(host, joiner);
    let (joiner_hs, hello) = joiner_start(joiner, host, rng);
    let offered = joiner_hs.offered_resume();
    let (host_sent, confirm) = host_hs.on_peer_hello(hello, rng).unwrap();
    let (mut j, joiner_confirm) = joiner_hs.on_host_confirm(confirm).unwrap();
    let mut h = host_sent.on_joiner_confirm(joiner_confirm).unwrap();
    assert_eq!(h.sas(), j.sas());
    assert_eq!(h.keylog_line(), j.keylog_line());
    assert_eq!(
        h.keylog_line().unwrap(),
        expected_keylog(host, joiner, None),
        "a non-resumed session uses the fresh salt"
    );
    assert_talks(&mut h, &mut j, b"new keys");
    assert_talks(&mut j, &mut h, b"compare the SAS again");
    (offered, h.resumed(), j.resumed())
}

#[test]
fn resume_offered_but_host_has_no_previous_session() {
    let mut rng = rng(7);
    let (h1, _, j1) = {
        let (host, joiner) = pair(G14, &mut rng);
        let (h, j) = handshake(&host, &joiner, &mut rng);
        (h, (), j)
    };
    let (host, mut joiner) = pair(G14, &mut rng);
    joiner.previous = Some(j1.resume_secret().clone());
    drop(h1); // the host forgot it
    assert_eq!(
        partial_resume(&host, &joiner, &mut rng),
        (true, false, false)
    );
}

#[test]
fn host_has_previous_session_but_joiner_does_not_offer() {
    let mut rng = rng(8);
    let (h1, _) = {
        let (host, joiner) = pair(G14, &mut rng);
        handshake(&host, &joiner, &mut rng)
    };
    let (mut host, joiner) = pair(G14, &mut rng);
    host.previous = Some(h1.resume_secret().clone());
    assert_eq!(
        partial_resume(&host, &joiner, &mut rng),
        (false, false, false)
    );
}

#[test]
fn joiner_holding_a_stale_session_is_not_resumed() {
    let mut rng = rng(9);
    let (host, joiner) = pair(G14, &mut rng);
    let (h1, j1) = handshake(&host, &joiner, &mut rng);
    // A second session that only the host remembers (the joiner crashed before saving it).
    let (mut host2, mut joiner2) = pair(G14, &mut rng);
    host2.previous = Some(h1.resume_secret().clone());
    joiner2.previous = Some(j1.resume_secret().clone());
    let (h2, _) = handshake(&host2, &joiner2, &mut rng);
    assert!(h2.resumed());

    let (mut host3, mut joiner3) = pair(G14, &mut rng);
    host3.previous = Some(h2.resume_secret().clone());
    joiner3.previous = Some(j1.resume_secret().clone()); // stale
    assert_eq!(
        partial_resume(&host3, &joiner3, &mut rng),
        (true, false, false)
    );
}

#[test]
fn host_cannot_claim_resumption_that_was_not_offered() {
    let mut rng = rng(10);
    let (host, joiner) = pair(G14, &mut rng);
    let s = steps_until_host_confirm(&host, &joiner, &mut rng);
    let mut forged = s.host_confirm;
    let PeerHandshake::HostConfirm { resumed, .. } = &mut forged else {
        unreachable!()
    };
    *resumed = true;
    let err = s.joiner.on_host_confirm(forged).unwrap_err();
    assert!(matches!(err, HandshakeError::Unexpected(_)), "{err:?}");
}

#[test]
fn downgrading_resumed_to_false_is_detected() {
    // Someone on the path flips `resumed: true` to `false` to make the joiner use
    // fresh keys: the MAC covers the flag, so the joiner refuses.
    let mut rng = rng(11);
    let (host, joiner) = pair(G14, &mut rng);
    let (h1, j1) = handshake(&host, &joiner, &mut rng);
    let (mut host, mut joiner) = pair(G14, &mut rng);
    host.previous = Some(h1.resume_secret().clone());
    joiner.previous = Some(j1.resume_secret().clone());
    let s = steps_until_host_confirm(&host, &joiner, &mut rng);
    let mut forged = s.host_confirm;
    let PeerHandshake::HostConfirm { resumed, .. } = &mut forged else {
        unreachable!()
    };
    assert!(*resumed, "expected a resumed HostConfirm");
    *resumed = false;
    let err = s.joiner.on_host_confirm(forged).unwrap_err();
    assert!(matches!(err, HandshakeError::KeysDiffer), "{err:?}");
}

// ---------------------------------------------------------------------------
// Transcript binding: one changed byte changes every key and the SAS.
// ---------------------------------------------------------------------------

/// The owned inputs of a transcript plus the room name (mixed into the salt).
#[derive(Clone)]
struct Inputs {
    room: String,
    tag: [u8; 32],
    group: Group,
    host_name: String,
    host_public: Vec<u8>,
    joiner_name: String,
    joiner_public: Vec<u8>,
}

/// Everything a session derives, each through its public output: the four record
/// keys (from the keylog line), both confirm MACs and the SAS for fixed nonces (so
/// only the keys vary), and the resume id.
fn outputs(i: &Inputs, z: &SharedSecret) -> Vec<(&'static str, Vec<u8>)> {
    let tag = dhke::RoomTag(i.tag);
    let th = Transcript {
        room_tag: &tag,
        group: i.group,
        host_name: &i.host_name,
        host_public: &i.host_public,
        joiner_name: &i.joiner_name,
        joiner_public: &i.joiner_public,
    }
    .hash();
    let keys = SessionKeys::derive(&th, &code(&i.room), z, None);
    let line = keylog_line(&th, z, &keys);
    let fields: Vec<&str> = line.split(' ').collect();
    let fixed_th = dhke::TranscriptHash([9; 32]);
    let (n_h, n_j) = (Nonce([1; 32]), Nonce([2; 32]));
    let c = commit(&n_j);
    vec![
        ("th", hex::decode(fields[1]).unwrap()),
        ("k(host->joiner enc)", hex::decode(fields[3]).unwrap()),
        ("k(host->joiner mac)", hex::decode(fields[4]).unwrap()),
        ("k(joiner->host enc)", hex::decode(fields[5]).unwrap()),
        ("k(joiner->host mac)", hex::decode(fields[6]).unwrap()),
        (
            "k(confirm host)",
            host_confirm_mac(&keys, &fixed_th, &c, &n_h, false).to_vec(),
        ),
        (
            "k(confirm joiner)",
            joiner_confirm_mac(&keys, &fixed_th, &c, &n_h, false, &n_j).to_vec(),
        ),
        (
            "sas",
            keys.sas(&fixed_th, &n_h, &n_j)
                .value()
                .to_be_bytes()
                .to_vec(),
        ),
        ("k(resume)", resume_id(&keys.resume_secret()).to_vec()),
    ]
}

#[test]
fn any_changed_transcript_byte_changes_every_key_and_the_sas() {
    let mut rng = rng(12);
    let mut public = |n: usize| {
        let mut v = vec![0u8; n];
        rand::Rng::fill(&mut rng, &mut v[..]);
        v
    };
    let base = Inputs {
        room: ROOM.to_owned(),
        tag: code(ROOM).tag().0,
        group: Group::Modp3072,
        host_name: "alice".to_owned(),
        host_public: public(384),
        joiner_name: "bob".to_owned(),
        joiner_public: public(384),
    };
    let z = SharedSecret::from_bytes(public(384));
    let want = outputs(&base, &z);

    let mut variants: Vec<(String, Inputs)> = Vec::new();
    let mut push = |what: String, f: &dyn Fn(&mut Inputs)| {
        let mut v = base.clone();
        f(&mut v);
        variants.push((what, v));
    };
    for i in 0..base.room.len() {
        push(format!("room name byte {i}"), &|v| {
            let mut b = v.room.clone().into_bytes();
            b[i] ^= 0x01;
            v.room = String::from_utf8(b).unwrap();
        });
    }
    for i in 0..32 {
        push(format!("room tag byte {i}"), &|v| v.tag[i] ^= 0x01);
    }
    push("group".into(), &|v| v.group = Group::Modp2048);
    for i in 0..base.host_name.len() {
        push(format!("host name byte {i}"), &|v| {
            let mut b = v.host_name.clone().into_bytes();
            b[i] ^= 0x01;
            v.host_name = String::from_utf8(b).unwrap();
        });
    }
    for i in 0..base.joiner_name.len() {
        push(format!("joiner name byte {i}"), &|v| {
            let mut b = v.joiner_name.clone().into_bytes();
            b[i] ^= 0x01;
            v.joiner_name = String::from_utf8(b).unwrap();
        });
    }
    for i in 0..base.host_public.len() {
        push(format!("host public byte {i}"), &|v| {
            v.host_public[i] ^= 0x80
        });
    }
    for i in 0..base.joiner_public.len() {
        push(format!("joiner public byte {i}"), &|v| {
            v.joiner_public[i] ^= 0x80
        });
    }
    // Length prefixes: moving a byte from one name to the next is a change too.
    push("name boundary".into(), &|v| {
        v.host_name = "alic".into();
        v.joiner_name = "ebob".into();
    });
    // Swapping roles (host and joiner trade places) is a different transcript.
    push("roles swapped".into(), &|v| {
        std::mem::swap(&mut v.host_name, &mut v.joiner_name);
        std::mem::swap(&mut v.host_public, &mut v.joiner_public);
    });

    assert!(variants.len() > 800);
    for (what, inputs) in &variants {
        let got = outputs(inputs, &z);
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            // The room name is not in th (only its tag is); it enters through the salt.
            if *name == "th" && what.starts_with("room name") {
                assert_eq!(w, g);
                continue;
            }
            assert_ne!(w, g, "{what} left {name} unchanged");
        }
    }

    // And Z itself, of course.
    let mut other = z.as_bytes().to_vec();
    other[383] ^= 1;
    let got = outputs(&base, &SharedSecret::from_bytes(other));
    for ((name, w), (_, g)) in want.iter().zip(&got).skip(1) {
        assert_ne!(w, g, "Z change left {name} unchanged");
    }
}

// ---------------------------------------------------------------------------
// Strangers, tampering, refusals
// ---------------------------------------------------------------------------

#[test]
fn stranger_is_refused_and_the_real_joiner_still_gets_in() {
    let mut rng = rng(13);
    let (host, joiner) = pair(G14, &mut rng);
    let host_hs = host_machine(&host, &joiner);

    // Someone who learned the room tag but has their own key pair.
    let stranger = Side::new(JOINER_NAME, G14, &mut rng);
    let (_, stranger_hello) = joiner_start(&stranger, &host, &mut rng);
    let err = host_hs.on_peer_hello(stranger_hello, &mut rng).unwrap_err();
    assert!(
        matches!(err, HandshakeError::WrongPeer("different public value")),
        "{err:?}"
    );

    // The right public value, but for another room.
    let (_, hello) = joiner_start(&joiner, &host, &mut rng);
    let PeerHandshake::PeerHello {
        public,
        commit,
        resume,
        identity,
        ..
    } = hello
    else {
        unreachable!()
    };
    let wrong_room = PeerHandshake::PeerHello {
        room: code("8-other-room").tag().0,
        public,
        commit,
        resume,
        identity,
    };
    let err = host_hs.on_peer_hello(wrong_room, &mut rng).unwrap_err();
    assert!(
        matches!(err, HandshakeError::WrongPeer("different room")),
        "{err:?}"
    );

    // Something that is not a PeerHello at all.
    let err = host_hs
        .on_peer_hello(
            PeerHandshake::JoinerConfirm {
                nonce: [0; 32],
                mac: [0; 32],
                signature: wire::Signature64([0; 64]),
            },
            &mut rng,
        )
        .unwrap_err();
    assert!(matches!(err, HandshakeError::WrongPeer(_)), "{err:?}");

    // The real joiner completes with the same host state.
    let (joiner_hs, hello) = joiner_start(&joiner, &host, &mut rng);
    let (sent, confirm) = host_hs.on_peer_hello(hello, &mut rng).unwrap();
    let (mut j, jc) = joiner_hs.on_host_confirm(confirm).unwrap();
    let mut h = sent.on_joiner_confirm(jc).unwrap();
    assert_eq!(h.sas(), j.sas());
    assert_talks(&mut j, &mut h, b"it's me");
}

#[test]
fn bad_announced_public_is_refused_up_front() {
    let mut rng = rng(14);
    let (host, joiner) = pair(G14, &mut rng);
    let err = wire::handshake::HostHandshake::new(host.input(ROOM, "bob", host.keys.public()))
        .unwrap_err();
    assert!(
        matches!(err, HandshakeError::BadPeerPublic(dhke::Error::Reflected)),
        "{err:?}"
    );
    let err =
        wire::handshake::JoinerHelloSent::start(joiner.input(ROOM, "alice", &[0u8; 256]), &mut rng)
            .unwrap_err();
    assert!(
        matches!(err, HandshakeError::BadPeerPublic(dhke::Error::PublicRange)),
        "{err:?}"
    );
}

fn flip_mac(mut msg: PeerHandshake, byte: usize) -> PeerHandshake {
    match &mut msg {
        PeerHandshake::HostConfirm { mac, .. } | PeerHandshake::JoinerConfirm { mac, .. } => {
            mac[byte] ^= 0x01;
        }
        other => panic!("no MAC in {other:?}"),
    }
    msg
}

#[test]
fn flipped_mac_in_host_confirm_is_keys_differ() {
    for byte in [0, 17, 31] {
        let mut rng = rng(20 + byte as u64);
        let (host, joiner) = pair(G14, &mut rng);
        let s = steps_until_host_confirm(&host, &joiner, &mut rng);
        let err = s
            .joiner
            .on_host_confirm(flip_mac(s.host_confirm, byte))
            .unwrap_err();
        assert!(matches!(err, HandshakeError::KeysDiffer), "{err:?}");
    }
}

#[test]
fn flipped_nonce_in_host_confirm_is_keys_differ() {
    let mut rng = rng(30);
    let (host, joiner) = pair(G14, &mut rng);
    let s = steps_until_host_confirm(&host, &joiner, &mut rng);
    let mut confirm = s.host_confirm;
    let PeerHandshake::HostConfirm { nonce, .. } = &mut confirm else {
        unreachable!()
    };
    nonce[5] ^= 0x40;
    let err = s.joiner.on_host_confirm(confirm).unwrap_err();
    assert!(matches!(err, HandshakeError::KeysDiffer), "{err:?}");
}

#[test]
fn flipped_mac_in_joiner_confirm_is_keys_differ() {
    for byte in [0, 17, 31] {
        let mut rng = rng(40 + byte as u64);
        let (host, joiner) = pair(G14, &mut rng);
        let s = steps_until_host_confirm(&host, &joiner, &mut rng);
        let (_, joiner_confirm) = s.joiner.on_host_confirm(s.host_confirm).unwrap();
        let err = s
            .host
            .on_joiner_confirm(flip_mac(joiner_confirm, byte))
            .unwrap_err();
        assert!(matches!(err, HandshakeError::KeysDiffer), "{err:?}");
    }
}

#[test]
fn joiner_in_another_room_fails_confirmation() {
    // A joiner that typed another room name but whose PeerHello was rewritten to
    // carry the host's tag gets past the host's room check; its keys (transcript
    // and salt both depend on the room) differ, so the host's MAC does not verify.
    let mut rng = rng(50);
    let (host, _) = pair(G14, &mut rng);
    let joiner = Side::in_room(JOINER_NAME, G14, "7-velvet-harbour", &mut rng);
    let host_hs = host_machine(&host, &joiner);
    let (joiner_hs, hello) = joiner_start_in_room(&joiner, &host, "7-velvet-harbour", &mut rng);
    let PeerHandshake::PeerHello {
        public,
        commit,
        resume,
        identity,
        ..
    } = hello
    else {
        unreachable!()
    };
    let hello = PeerHandshake::PeerHello {
        room: code(ROOM).tag().0,
        public,
        commit,
        resume,
        identity,
    };
    let (_, confirm) = host_hs.on_peer_hello(hello, &mut rng).unwrap();
    let err = joiner_hs.on_host_confirm(confirm).unwrap_err();
    assert!(matches!(err, HandshakeError::KeysDiffer), "{err:?}");
}

fn joiner_start_in_room(
    joiner: &Side,
    host: &Side,
    room: &str,
    rng: &mut rand::rngs::StdRng,
) -> (wire::handshake::JoinerHelloSent, PeerHandshake) {
    wire::handshake::JoinerHelloSent::start(joiner.input(room, &host.name, host.keys.public()), rng)
        .unwrap()
}

#[test]
fn reject_is_rejected_on_both_sides() {
    let mut rng = rng(60);
    let (host, joiner) = pair(G14, &mut rng);
    let s = steps_until_host_confirm(&host, &joiner, &mut rng);
    let reject = PeerHandshake::Reject {
        reason: "busy".into(),
    };
    match s.joiner.on_host_confirm(reject.clone()) {
        Err(HandshakeError::Rejected(reason)) => assert_eq!(reason, "busy"),
        other => panic!("{other:?}"),
    }
    match s.host.on_joiner_confirm(reject) {
        Err(HandshakeError::Rejected(reason)) => assert_eq!(reason, "busy"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reject_reason_cannot_start_a_line_or_move_the_cursor() {
    let mut rng = rng(61);
    let (host, joiner) = pair(G14, &mut rng);
    let s = steps_until_host_confirm(&host, &joiner, &mut rng);
    let reject = PeerHandshake::Reject {
        reason: "busy\n2026-12-07T00:00:00Z  WARN fake line\u{1b}[2J".into(),
    };
    for result in [
        s.joiner.on_host_confirm(reject.clone()).map(|_| ()),
        s.host.on_joiner_confirm(reject).map(|_| ()),
    ] {
        match result {
            Err(e @ HandshakeError::Rejected(_)) => {
                let shown = e.to_string();
                assert!(!shown.contains(['\n', '\u{1b}']), "{shown:?}");
                assert!(
                    shown.ends_with("busy 2026-12-07T00:00:00Z  WARN fake line"),
                    "{shown:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn out_of_order_messages_are_unexpected() {
    let mut rng = rng(61);
    let (host, joiner) = pair(G14, &mut rng);
    let s = steps_until_host_confirm(&host, &joiner, &mut rng);
    let err = s.joiner.on_host_confirm(s.hello.clone()).unwrap_err();
    assert!(matches!(err, HandshakeError::Unexpected(_)), "{err:?}");
    let err = s.host.on_joiner_confirm(s.hello).unwrap_err();
    assert!(matches!(err, HandshakeError::Unexpected(_)), "{err:?}");
}

#[test]
fn one_joiner_agreement_serves_many_attempts_with_fresh_commitments() {
    let mut rng = rng(41);
    let (host, joiner) = pair(Group::Modp2048, &mut rng);
    let machine =
        wire::handshake::JoinerHandshake::new(joiner.input(ROOM, &host.name, host.keys.public()))
            .unwrap();
    let attempts: Vec<_> = (0..3).map(|_| machine.hello(&mut rng)).collect();
    let commits: Vec<[u8; 32]> = attempts
        .iter()
        .map(|(_, hello)| match hello {
            PeerHandshake::PeerHello { commit, .. } => *commit,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(commits[0] != commits[1] && commits[1] != commits[2] && commits[0] != commits[2]);
    // Any attempt can be the one that reaches the host, and it completes.
    let (state, hello) = attempts.into_iter().nth(1).unwrap();
    let host_machine = host_machine(&host, &joiner);
    let (host_state, confirm) = host_machine.on_peer_hello(hello, &mut rng).unwrap();
    let (mut joiner_session, reply) = state.on_host_confirm(confirm).unwrap();
    let mut host_session = host_state.on_joiner_confirm(reply).unwrap();
    assert_eq!(joiner_session.sas(), host_session.sas());
    assert_talks(&mut joiner_session, &mut host_session, b"second attempt");
}
