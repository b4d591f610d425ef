//! The CPace generator over an RFC 3526 group (docs/protocol.md §13.1): the room code
//! hashed into the order-q subgroup, so a Diffie-Hellman exchange on it agrees only
//! between two people who typed the same code.

use std::fmt;

use num_bigint::BigUint;
use num_traits::{One, Zero};

use crate::keypair::{pad, wipe};
use crate::{schedule, Error, Group, RoomCode};

/// `G = (H(code, tag, group) mod p)^2 mod p`. Whoever knows `G` can test guesses of
/// the code offline, so it is treated like the code: wiped on drop, never shown.
pub struct Generator {
    group: Group,
    value: BigUint,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Generator(group {}, <redacted>)", self.group.id())
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        wipe(&mut self.value);
    }
}

impl Generator {
    /// The group of this generator.
    pub fn group(&self) -> Group {
        self.group
    }

    /// `G` big-endian, left-padded to len(p): for known-answer tests only.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(pad(&self.value, self.group))
    }

    pub(crate) fn value(&self) -> &BigUint {
        &self.value
    }
}

/// The one derivation of the CPace generator. `h` is [`schedule::generator_hash`]
/// (len(p) + 16 bytes of HKDF-SHA256 over the code, the room tag and the group id, so
/// `h mod p` is within 2^-128 of uniform); squaring maps it into the order-q subgroup
/// of quadratic residues with one multiplication, no modpow. `G` ∈ {0, 1, p−1} is
/// refused (it would make every public value the same; probability ~2^-2040).
pub fn cpace_generator(group: Group, code: &RoomCode) -> Result<Generator, Error> {
    let params = group.params();
    let tag = code.tag();
    let hash = schedule::generator_hash(code, &tag, group);
    let mut wide = BigUint::from_bytes_be(&hash);
    let mut h = &wide % &params.p;
    wipe(&mut wide);
    let value = (&h * &h) % &params.p;
    wipe(&mut h);
    let generator = Generator { group, value };
    if generator.value.is_zero() || generator.value.is_one() || generator.value == params.p_minus_1
    {
        return Err(Error::WeakGenerator);
    }
    Ok(generator)
}
