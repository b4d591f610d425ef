//! Long-term identities (docs/protocol.md §15): an Ed25519 key pair per profile that
//! signs each handshake, its fingerprint, and the X25519 secret two contacts share.

use std::fmt;

use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::schedule;
use crate::Error;

/// Our identity: an Ed25519 signing key. Zeroized on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct Identity(SigningKey);

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public().fingerprint())
    }
}

impl Identity {
    /// A new identity from the CSPRNG.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Identity {
        Identity(SigningKey::generate(rng))
    }

    /// The identity whose 32-byte Ed25519 seed this is (RFC 8032 secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Identity {
        Identity(SigningKey::from_bytes(seed))
    }

    /// The seed, for storing in the profile's identity file.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// Our public identity key.
    pub fn public(&self) -> IdentityKey {
        IdentityKey(self.0.verifying_key().to_bytes())
    }

    /// An Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// [`schedule::contact_secret`] with `peer`: X25519 of our key's scalar and the
    /// Montgomery form of theirs. Refused for a weak (small-order) peer key or an
    /// all-zero shared value.
    pub fn contact_secret(&self, peer: &IdentityKey) -> Result<Zeroizing<[u8; 32]>, Error> {
        let their = peer.verifying_key()?;
        let shared = Zeroizing::new(
            their
                .to_montgomery()
                .mul_clamped(self.0.to_scalar_bytes())
                .to_bytes(),
        );
        if *shared == MontgomeryPoint([0; 32]).to_bytes() {
            return Err(Error::BadIdentityKey);
        }
        Ok(schedule::contact_secret(&shared, &self.public().0, &peer.0))
    }
}

/// A public identity key: 32 bytes of Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey(pub [u8; 32]);

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", self.fingerprint())
    }
}

impl IdentityKey {
    fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| Error::BadIdentityKey)?;
        if key.is_weak() {
            return Err(Error::BadIdentityKey);
        }
        Ok(key)
    }

    /// Whether these bytes are a usable identity key (a valid point, not of small
    /// order).
    pub fn check(&self) -> Result<(), Error> {
        self.verifying_key().map(|_| ())
    }

    /// Checks an Ed25519 signature with the strict rules (RFC 8032 §5.1.7, no
    /// small-order keys or non-canonical encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), Error> {
        let key = self.verifying_key()?;
        key.verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| Error::BadSignature)
    }

    /// The key's [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(schedule::fingerprint(&self.0))
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<IdentityKey> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut out).ok()?;
        Some(IdentityKey(out))
    }
}

/// 16 bytes that name an identity to people: [`schedule::fingerprint`] of the key,
/// shown as eight groups of four hex digits (`3f2a 9c01 …`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}", hex::encode(pair))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Fingerprint {
    /// The fingerprint without spaces: 32 hex digits.
    pub fn compact(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `typed` (hex digits, any spaces or dashes ignored, any case) is this
    /// fingerprint or a prefix of at least 8 digits of it.
    pub fn matches(&self, typed: &str) -> bool {
        let digits: String = typed
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        digits.len() >= 8
            && digits.bytes().all(|b| b.is_ascii_hexdigit())
            && self.compact().starts_with(&digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn signatures_verify_and_a_changed_byte_fails() {
        let id = Identity::generate(&mut OsRng);
        let sig = id.sign(b"hello");
        id.public().verify(b"hello", &sig).unwrap();
        assert_eq!(id.public().verify(b"hellp", &sig), Err(Error::BadSignature));
        let mut bad = sig;
        bad[3] ^= 1;
        assert!(id.public().verify(b"hello", &bad).is_err());
        let other = Identity::generate(&mut OsRng);
        assert!(other.public().verify(b"hello", &sig).is_err());
    }

    #[test]
    fn contact_secret_is_symmetric_and_pair_specific() {
        let a = Identity::generate(&mut OsRng);
        let b = Identity::generate(&mut OsRng);
        let c = Identity::generate(&mut OsRng);
        let ab = a.contact_secret(&b.public()).unwrap();
        assert_eq!(*ab, *b.contact_secret(&a.public()).unwrap());
        assert_ne!(*ab, *a.contact_secret(&c.public()).unwrap());
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (small order) and a non-point.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        assert_eq!(IdentityKey(ident).check(), Err(Error::BadIdentityKey));
        let a = Identity::generate(&mut OsRng);
        assert!(a.contact_secret(&IdentityKey(ident)).is_err());
    }

    #[test]
    fn fingerprint_shows_and_matches() {
        let key = Identity::from_seed(&[7; 32]).public();
        let fp = key.fingerprint();
        let shown = fp.to_string();
        assert_eq!(shown.len(), 39);
        assert!(fp.matches(&shown));
        assert!(fp.matches(&shown.to_uppercase()));
        assert!(fp.matches(&fp.compact()[..8]));
        assert!(!fp.matches(&fp.compact()[..7]));
        assert!(!fp.matches("zzzzzzzz"));
        let debug = format!("{:?}", Identity::from_seed(&[7; 32]));
        assert!(!debug.contains(&hex::encode([7u8; 32])), "{debug}");
    }
}
