//! Ephemeral key pairs, peer public-value validation and the shared secret `Z`.

use std::fmt;

use num_bigint::BigUint;
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::modp::{is_degenerate, PRIVATE_BYTES};
use crate::{cpace_generator, jacobi, Error, Group, RoomCode};

/// A private exponent x. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey {
    bytes: [u8; PRIVATE_BYTES],
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PrivateKey {
    /// A private exponent from fixed bytes (known-answer tests); the top bit is set
    /// as for a generated one.
    pub fn from_bytes(mut bytes: [u8; PRIVATE_BYTES]) -> PrivateKey {
        bytes[0] |= 0x80;
        let key = PrivateKey { bytes };
        bytes.zeroize();
        key
    }

    /// 320 bits from `rng` with the top bit set, so every exponent has the same length.
    pub fn generate(rng: &mut impl CryptoRngCore) -> PrivateKey {
        let mut bytes = [0u8; PRIVATE_BYTES];
        rng.fill_bytes(&mut bytes);
        bytes[0] |= 0x80;
        PrivateKey { bytes }
    }

    /// Raises `base` (len(p) big-endian bytes) to this exponent mod p in constant
    /// time (modp.rs); the result is len(p) bytes, wiped on drop.
    fn pow_mod(&self, base: &[u8], group: Group) -> Zeroizing<Vec<u8>> {
        group.params().montgomery.pow_secret(base, &self.bytes)
    }
}

/// A validated public value: exactly `prime_len` big-endian bytes with 1 < y < p-1.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerPublic {
    group: Group,
    bytes: Vec<u8>,
}

impl fmt::Debug for PeerPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PeerPublic(group {}, {:02x?}…)",
            self.group.id(),
            &self.bytes[..4]
        )
    }
}

impl PeerPublic {
    /// The value as sent on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The group this value belongs to.
    pub fn group(&self) -> Group {
        self.group
    }

    /// Subgroup membership by the slow definition, y^q ≡ 1 (mod p); kept for the
    /// benchmark and the tests that compare it with the Jacobi route. Public values
    /// only: num-bigint's variable-time modpow.
    pub fn in_subgroup_by_modpow(group: Group, bytes: &[u8]) -> bool {
        let params = group.params();
        BigUint::from_bytes_be(bytes).modpow(&params.q, &params.p) == BigUint::from(1u32)
    }
}

/// An ephemeral Diffie-Hellman key pair for one session.
#[derive(Clone)]
pub struct KeyPair {
    group: Group,
    private: PrivateKey,
    public: Vec<u8>,
    /// The room code whose CPace generator made `public`; `None` for g = 2.
    room: Option<RoomCode>,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("group", &self.group.id())
            .field("private", &self.private)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh plain key pair on g = 2: x from [`PrivateKey::generate`], y = g^x mod p.
    /// Not for sessions (the peer handshake refuses it): use [`KeyPair::generate_cpace`].
    pub fn generate(group: Group, rng: &mut impl CryptoRngCore) -> KeyPair {
        KeyPair::from_private(group, PrivateKey::generate(rng))
    }

    /// The plain key pair for a given private exponent (known-answer tests, benches).
    pub fn from_private(group: Group, private: PrivateKey) -> KeyPair {
        let y = private.pow_mod(&group.params().g_bytes, group);
        KeyPair {
            group,
            public: y.to_vec(),
            private,
            room: None,
        }
    }

    /// A fresh CPace key pair for `code`: x from [`PrivateKey::generate`],
    /// Y = G^x mod p with G = [`cpace_generator`]`(group, code)` (docs/protocol.md
    /// §13.1). This is the key pair a session's `Hello` announces. For a typed name
    /// the first call costs one Argon2id (the tag, kept in `code`'s clones made after).
    pub fn generate_cpace(
        group: Group,
        code: &RoomCode,
        rng: &mut impl CryptoRngCore,
    ) -> Result<KeyPair, Error> {
        KeyPair::from_private_cpace(group, code, PrivateKey::generate(rng))
    }

    /// The CPace key pair for a given private exponent (known-answer tests).
    pub fn from_private_cpace(
        group: Group,
        code: &RoomCode,
        private: PrivateKey,
    ) -> Result<KeyPair, Error> {
        let generator = cpace_generator(group, code)?;
        let y = private.pow_mod(generator.value(), group);
        Ok(KeyPair {
            group,
            public: y.to_vec(),
            private,
            room: Some(code.clone()),
        })
    }

    /// Whether this is a CPace key pair made for exactly `code` (constant-time on
    /// the code's bytes).
    pub fn made_for(&self, code: &RoomCode) -> bool {
        self.room.as_ref().is_some_and(|own| own.same_as(code))
    }

    /// The group of this key pair.
    pub fn group(&self) -> Group {
        self.group
    }

    /// Our public value y, big-endian, exactly `prime_len` bytes.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Z = peer^x mod p, left-padded to `prime_len`. Refuses Z = 1 and Z = p-1 (and
    /// 0, which a validated peer value cannot give).
    pub fn agree(&self, peer: &PeerPublic) -> Result<SharedSecret, Error> {
        let bytes = self.private.pow_mod(peer.as_bytes(), self.group);
        if is_degenerate(&bytes, &self.group.params().p_minus_1_bytes) {
            return Err(Error::WeakSharedSecret);
        }
        Ok(SharedSecret { bytes })
    }
}

/// Length and range of a public value (1 < y < p-1): the check the mediator makes.
pub fn check_public_range(group: Group, bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() != group.prime_len() {
        return Err(Error::PublicLength {
            expected: group.prime_len(),
            got: bytes.len(),
        });
    }
    let y = BigUint::from_bytes_be(bytes);
    if y <= BigUint::from(1u32) || y >= group.params().p_minus_1 {
        return Err(Error::PublicRange);
    }
    Ok(())
}

/// Every check a client makes on a peer's public value before using it:
/// length, 1 < y < p-1, not our own value, and membership in the order-q subgroup
/// (Legendre symbol (y/p) = 1, computed as a Jacobi symbol).
pub fn validate_peer_public(
    group: Group,
    bytes: &[u8],
    own_public: &[u8],
) -> Result<PeerPublic, Error> {
    check_public_range(group, bytes)?;
    if bytes == own_public {
        return Err(Error::Reflected);
    }
    let y = BigUint::from_bytes_be(bytes);
    if jacobi(&y, &group.params().p) != 1 {
        return Err(Error::NotInSubgroup);
    }
    Ok(PeerPublic {
        group,
        bytes: bytes.to_vec(),
    })
}

/// The Diffie-Hellman shared secret Z, `prime_len` bytes. Zeroized on drop.
pub struct SharedSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

impl SharedSecret {
    /// The padded big-endian bytes of Z (input keying material for HKDF).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A secret made from raw bytes, for known-answer tests of the key schedule.
    pub fn from_bytes(bytes: Vec<u8>) -> SharedSecret {
        SharedSecret {
            bytes: Zeroizing::new(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let mut rng = rand_core::OsRng;
        let pair = KeyPair::generate(Group::Modp2048, &mut rng);
        let text = format!("{pair:?}");
        assert!(text.contains("redacted"), "{text}");
        assert!(!text.contains(&hex::encode(&pair.private.bytes[..8])));
    }

    #[test]
    fn private_key_has_fixed_length_with_top_bit() {
        let mut rng = rand_core::OsRng;
        for _ in 0..64 {
            let key = PrivateKey::generate(&mut rng);
            assert!(key.bytes[0] & 0x80 != 0);
        }
    }
}
