//! Every peer public value docs/protocol.md §5 says to refuse, one test each, with
//! the exact `dhke::Error` it must produce. Group 15 (the default) throughout.

use dhke::{check_public_range, validate_peer_public, Error, Group, KeyPair};
use num_bigint::BigUint;
use rand::{rngs::StdRng, SeedableRng};

const G: Group = Group::Modp3072;
const LEN: usize = 384;

fn own() -> KeyPair {
    KeyPair::generate(G, &mut StdRng::seed_from_u64(15))
}

fn p() -> BigUint {
    BigUint::from_bytes_be(G.prime_bytes())
}

/// `value` big-endian, left-padded to `len` bytes.
fn bytes_of(value: &BigUint, len: usize) -> Vec<u8> {
    let raw = value.to_bytes_be();
    assert!(raw.len() <= len);
    let mut out = vec![0u8; len - raw.len()];
    out.extend_from_slice(&raw);
    out
}

fn refused(bytes: &[u8]) -> Error {
    validate_peer_public(G, bytes, own().public()).unwrap_err()
}

fn range_refused(value: BigUint) {
    let bytes = bytes_of(&value, LEN);
    assert_eq!(refused(&bytes), Error::PublicRange);
    // The mediator's cheaper check refuses it too.
    assert_eq!(check_public_range(G, &bytes), Err(Error::PublicRange));
}

#[test]
fn control_a_genuine_value_is_accepted() {
    let peer = KeyPair::generate(G, &mut StdRng::seed_from_u64(16));
    let ok = validate_peer_public(G, peer.public(), own().public()).unwrap();
    assert_eq!(ok.as_bytes(), peer.public());
    assert_eq!(ok.group(), G);
    assert!(check_public_range(G, peer.public()).is_ok());
}

#[test]
fn zero_is_refused() {
    range_refused(BigUint::from(0u32));
}

#[test]
fn one_is_refused() {
    range_refused(BigUint::from(1u32));
}

#[test]
fn p_minus_one_is_refused() {
    range_refused(p() - 1u32);
}

#[test]
fn p_is_refused() {
    range_refused(p());
}

#[test]
fn p_plus_one_is_refused() {
    range_refused(p() + 1u32);
}

#[test]
fn two_to_the_3072_is_refused() {
    // 2^3072 needs 385 bytes: refused on length before any arithmetic.
    let big = BigUint::from(1u32) << 3072u32;
    let bytes = bytes_of(&big, 385);
    assert_eq!(bytes[0], 1);
    assert_eq!(
        refused(&bytes),
        Error::PublicLength {
            expected: LEN,
            got: 385
        }
    );
    // Its largest 384-byte neighbour, 2^3072 − 1 (all 0xFF), is out of range.
    assert_eq!(refused(&[0xFF; LEN]), Error::PublicRange);
    assert_eq!(check_public_range(G, &[0xFF; LEN]), Err(Error::PublicRange));
}

#[test]
fn non_residue_is_refused() {
    // p − y for a genuine y: in range, but −1 is a non-residue mod p, so p − y is not
    // in the order-q subgroup.
    let peer = KeyPair::generate(G, &mut StdRng::seed_from_u64(17));
    let y = BigUint::from_bytes_be(peer.public());
    let bytes = bytes_of(&(p() - y), LEN);
    assert!(check_public_range(G, &bytes).is_ok());
    assert!(!dhke::PeerPublic::in_subgroup_by_modpow(G, &bytes));
    assert_eq!(refused(&bytes), Error::NotInSubgroup);
}

#[test]
fn small_non_residue_is_refused() {
    // p − 2 = −2 is a non-residue (p ≡ 7 mod 8).
    let bytes = bytes_of(&(p() - 2u32), LEN);
    assert_eq!(refused(&bytes), Error::NotInSubgroup);
}

#[test]
fn value_of_383_bytes_is_refused() {
    let peer = KeyPair::generate(G, &mut StdRng::seed_from_u64(18));
    assert_eq!(
        refused(&peer.public()[1..]),
        Error::PublicLength {
            expected: LEN,
            got: 383
        }
    );
}

#[test]
fn value_of_385_bytes_is_refused() {
    // A genuine value with a leading zero byte: numerically fine, wrong length.
    let peer = KeyPair::generate(G, &mut StdRng::seed_from_u64(19));
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(peer.public());
    assert_eq!(
        refused(&bytes),
        Error::PublicLength {
            expected: LEN,
            got: 385
        }
    );
}

#[test]
fn group_14_length_in_group_15_is_refused() {
    let peer = KeyPair::generate(Group::Modp2048, &mut StdRng::seed_from_u64(20));
    assert_eq!(
        refused(peer.public()),
        Error::PublicLength {
            expected: LEN,
            got: 256
        }
    );
}

#[test]
fn our_own_value_is_refused() {
    let me = own();
    assert_eq!(
        validate_peer_public(G, me.public(), me.public()).unwrap_err(),
        Error::Reflected
    );
}
