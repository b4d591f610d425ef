//! The CPace generator over an RFC 3526 group (docs/protocol.md §13.1): the room code
//! hashed into the order-q subgroup, so a Diffie-Hellman exchange on it agrees only
//! between two people who typed the same code.

use std::fmt;

use zeroize::Zeroizing;

use crate::modp::is_degenerate;
use crate::{schedule, Error, Group, RoomCode};

/// `G = (H(code, tag, group) mod p)^2 mod p`. Whoever knows `G` can test guesses of
/// the code offline, so it is treated like the code: wiped on drop, never shown.
pub struct Generator {
    group: Group,
    /// Big-endian, exactly len(p) bytes.
    value: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Generator(group {}, <redacted>)", self.group.id())
    }
}

impl Generator {
    /// The group of this generator.
    pub fn group(&self) -> Group {
        self.group
    }

    /// `G` big-endian, left-padded to len(p): for known-answer tests only.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.value.clone()
    }

    pub(crate) fn value(&self) -> &[u8] {
        &self.value
    }
}

/// The one derivation of the CPace generator. `h` is [`schedule::generator_hash`]
/// (len(p) + 16 bytes of HKDF-SHA256 over the code, the room tag and the group id, so
/// `h mod p` is within 2^-128 of uniform); squaring maps it into the order-q subgroup
/// of quadratic residues with one multiplication, no modpow. The reduction and the
/// squaring are constant-time (modp.rs): `G` stands for the code. `G` ∈ {0, 1, p−1}
/// is refused (it would make every public value the same; probability ~2^-2040).
pub fn cpace_generator(group: Group, code: &RoomCode) -> Result<Generator, Error> {
    let params = group.params();
    let tag = code.tag();
    let hash = schedule::generator_hash(code, &tag, group);
    let value = params.montgomery.square_of_reduced(&hash);
    if is_degenerate(&value, &params.p_minus_1_bytes) {
        return Err(Error::WeakGenerator);
    }
    Ok(Generator { group, value })
}
