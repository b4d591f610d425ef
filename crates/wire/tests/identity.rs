//! Identities in the peer handshake (docs/protocol.md §15.2): each side proves its
//! Ed25519 key by signing the identity transcript; a man in the middle who knows the
//! room code can finish both legs only under an identity of its own.

mod common;

use common::*;
use dhke::{Group, Identity};
use wire::handshake::{HostHandshake, JoinerHelloSent};
use wire::{HandshakeError, PeerHandshake, Signature64};

const G14: Group = Group::Modp2048;

/// `side` under another identity (what a man in the middle would use).
fn as_mallory(mut side: Side) -> Side {
    side.identity = Identity::from_seed(&[0x4d; 32]);
    side
}

#[test]
fn each_session_names_the_identity_that_signed_it() {
    let mut rng = rng(100);
    let (host, joiner) = pair(G14, &mut rng);
    let (h, j) = handshake(&host, &joiner, &mut rng);
    assert_eq!(h.peer_identity(), joiner.identity.public());
    assert_eq!(j.peer_identity(), host.identity.public());
    assert_eq!(h.sas(), j.sas());
}

#[test]
fn a_man_in_the_middle_who_knows_the_code_shows_up_as_another_identity() {
    // Both legs complete (it knows the code), but neither side sees the contact's
    // key: it cannot sign as them, so a client never marks it verified.
    let mut rng = rng(101);
    let (host, joiner) = pair(G14, &mut rng);
    let m_as_joiner = as_mallory(Side::new(JOINER_NAME, G14, &mut rng));
    let m_as_host = as_mallory(Side::new(HOST_NAME, G14, &mut rng));
    let (h, _) = handshake(&host, &m_as_joiner, &mut rng);
    let (_, j) = handshake(&m_as_host, &joiner, &mut rng);
    assert_ne!(h.peer_identity(), joiner.identity.public());
    assert_ne!(j.peer_identity(), host.identity.public());

    // A side that expects its contact refuses the stranger outright.
    let mut input = host.input(ROOM, JOINER_NAME, m_as_joiner.keys.public());
    input.expect_peer = Some(joiner.identity.public());
    let host_hs = HostHandshake::new(input).unwrap();
    let (_, hello) = joiner_start(&m_as_joiner, &host, &mut rng);
    let err = host_hs.on_peer_hello(hello, &mut rng).unwrap_err();
    assert!(
        matches!(err, HandshakeError::WrongIdentity { .. }),
        "{err:?}"
    );

    let mut input = joiner.input(ROOM, HOST_NAME, m_as_host.keys.public());
    input.expect_peer = Some(host.identity.public());
    let (joiner_hs, hello) = JoinerHelloSent::start(input, &mut rng).unwrap();
    let (_, confirm) = host_machine(&m_as_host, &joiner)
        .on_peer_hello(hello, &mut rng)
        .unwrap();
    let err = joiner_hs.on_host_confirm(confirm).unwrap_err();
    assert!(
        matches!(err, HandshakeError::WrongIdentity { .. }),
        "{err:?}"
    );
}

#[test]
fn claiming_the_contacts_key_without_its_private_half_is_a_bad_signature() {
    // Mallory (knows the code) sends the real joiner's identity key in PeerHello,
    // then must sign with a key it has: the host refuses the signature.
    let mut rng = rng(102);
    let (host, joiner) = pair(G14, &mut rng);
    let mallory = as_mallory(Side::new(JOINER_NAME, G14, &mut rng));
    let host_hs = host_machine(&host, &mallory);
    let (m_hs, _) = joiner_start(&mallory, &host, &mut rng);
    let nonce = dhke::Nonce([0x5a; 32]);
    let commit = dhke::commit(&nonce);
    let claimed = PeerHandshake::PeerHello {
        room: code(ROOM).tag().0,
        public: mallory.keys.public().to_vec(),
        commit,
        resume: None,
        identity: joiner.identity.public().0,
    };
    let (sent, confirm) = host_hs.on_peer_hello(claimed, &mut rng).unwrap();
    drop(m_hs);
    // Mallory knows every key (it knows the code and its own exponent), so it
    // computes a JoinerConfirm MAC that verifies for the claimed identity...
    let PeerHandshake::HostConfirm {
        nonce: n_h,
        identity: host_id,
        ..
    } = confirm
    else {
        unreachable!()
    };
    let tag = code(ROOM).tag();
    let th = dhke::Transcript {
        room_tag: &tag,
        group: G14,
        host_name: &host.name,
        host_public: host.keys.public(),
        joiner_name: &mallory.name,
        joiner_public: mallory.keys.public(),
    }
    .hash();
    let peer = dhke::validate_peer_public(G14, host.keys.public(), mallory.keys.public()).unwrap();
    let z = mallory.keys.agree(&peer).unwrap();
    let keys = dhke::SessionKeys::derive(&th, &code(ROOM), &z, None);
    let thi = dhke::identity_transcript(&th, &host_id, &joiner.identity.public().0);
    let n_h = dhke::Nonce(n_h);
    let mac = dhke::joiner_confirm_mac(&keys, &thi, &commit, &n_h, false, &nonce);
    // ... but can sign only with its own key.
    let signed = dhke::joiner_signed_bytes(&thi, &commit, &n_h, false, &nonce);
    let reply = PeerHandshake::JoinerConfirm {
        nonce: nonce.0,
        mac,
        signature: Signature64(mallory.identity.sign(&signed)),
    };
    let err = sent.on_joiner_confirm(reply).unwrap_err();
    assert!(matches!(err, HandshakeError::BadSignature), "{err:?}");
}

#[test]
fn a_flipped_signature_bit_ends_the_handshake_on_either_side() {
    let mut rng = rng(103);
    let (host, joiner) = pair(G14, &mut rng);
    let s = steps_until_host_confirm(&host, &joiner, &mut rng);
    let mut confirm = s.host_confirm;
    let PeerHandshake::HostConfirm { signature, .. } = &mut confirm else {
        unreachable!()
    };
    signature.0[10] ^= 0x01;
    let err = s.joiner.on_host_confirm(confirm).unwrap_err();
    assert!(matches!(err, HandshakeError::BadSignature), "{err:?}");

    let s = steps_until_host_confirm(&host, &joiner, &mut rng);
    let (_, mut reply) = s.joiner.on_host_confirm(s.host_confirm).unwrap();
    let PeerHandshake::JoinerConfirm { signature, .. } = &mut reply else {
        unreachable!()
    };
    signature.0[63] ^= 0x10;
    let err = s.host.on_joiner_confirm(reply).unwrap_err();
    assert!(matches!(err, HandshakeError::BadSignature), "{err:?}");
}

#[test]
fn a_weak_identity_key_is_refused_as_a_stranger() {
    let mut rng = rng(104);
    let (host, joiner) = pair(G14, &mut rng);
    let host_hs = host_machine(&host, &joiner);
    let (_, hello) = joiner_start(&joiner, &host, &mut rng);
    let PeerHandshake::PeerHello {
        room,
        public,
        commit,
        resume,
        ..
    } = hello
    else {
        unreachable!()
    };
    let mut small_order = [0u8; 32];
    small_order[0] = 1; // the identity point
    let weak = PeerHandshake::PeerHello {
        room,
        public,
        commit,
        resume,
        identity: small_order,
    };
    let err = host_hs.on_peer_hello(weak, &mut rng).unwrap_err();
    assert!(matches!(err, HandshakeError::WrongPeer(_)), "{err:?}");
}
