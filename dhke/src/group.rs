//! The two RFC 3526 MODP groups p2pchat speaks: 14 (2048-bit) and 15 (3072-bit).

use std::sync::OnceLock;

use num_bigint::BigUint;

use crate::modp::Montgomery;
use crate::Error;

/// RFC 3526 §3, "2048-bit MODP Group", id 14. Generator 2.
const MODP_2048_HEX: &str = "
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AACAA68 FFFFFFFF FFFFFFFF";

/// RFC 3526 §4, "3072-bit MODP Group", id 15. Generator 2.
const MODP_3072_HEX: &str = "
    FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1
    29024E08 8A67CC74 020BBEA6 3B139B22 514A0879 8E3404DD
    EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245
    E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED
    EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
    C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F
    83655D23 DCA3AD96 1C62F356 208552BB 9ED52907 7096966D
    670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B
    E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9
    DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
    15728E5A 8AAAC42D AD33170D 04507A33 A85521AB DF1CBA64
    ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7
    ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B
    F12FFA06 D98A0864 D8760273 3EC86A64 521F2B18 177B200C
    BBE11757 7A615D6C 770988C0 BAD946E2 08E24FA0 74E5AB31
    43DB5BFC E0FD108E 4B82D120 A93AD2CA FFFFFFFF FFFFFFFF";

/// An RFC 3526 MODP group. Both primes are safe primes (p = 2q + 1), g = 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Group 14, 2048-bit: accepted for slow devices.
    Modp2048,
    /// Group 15, 3072-bit: the default.
    Modp3072,
}

/// The numbers of one group, parsed once. The big integers serve the public-only
/// checks (variable-time); the byte forms and `montgomery` the constant-time
/// arithmetic on secrets (modp.rs).
pub(crate) struct Params {
    pub(crate) p: BigUint,
    pub(crate) p_minus_1: BigUint,
    pub(crate) q: BigUint,
    pub(crate) p_bytes: Vec<u8>,
    /// p − 1, big-endian, len(p) bytes: a degenerate shared secret or generator.
    pub(crate) p_minus_1_bytes: Vec<u8>,
    /// The generator g = 2, big-endian, len(p) bytes.
    pub(crate) g_bytes: Vec<u8>,
    pub(crate) montgomery: Montgomery,
}

impl Group {
    /// The group used when nobody asks for another.
    pub const DEFAULT: Group = Group::Modp3072;

    /// The RFC 3526 group id sent on the wire.
    pub const fn id(self) -> u8 {
        match self {
            Group::Modp2048 => 14,
            Group::Modp3072 => 15,
        }
    }

    /// The group for a wire id.
    pub fn from_id(id: u8) -> Result<Group, Error> {
        match id {
            14 => Ok(Group::Modp2048),
            15 => Ok(Group::Modp3072),
            other => Err(Error::UnknownGroup(other)),
        }
    }

    /// Length of p in bytes: every public value and shared secret has exactly this length.
    pub const fn prime_len(self) -> usize {
        match self {
            Group::Modp2048 => 256,
            Group::Modp3072 => 384,
        }
    }

    /// The prime p, big-endian, exactly [`Group::prime_len`] bytes.
    pub fn prime_bytes(self) -> &'static [u8] {
        &self.params().p_bytes
    }

    /// The prime as printed in RFC 3526 (hex in groups of eight), for tests that
    /// compare against the RFC text.
    pub fn rfc_hex(self) -> &'static str {
        match self {
            Group::Modp2048 => MODP_2048_HEX,
            Group::Modp3072 => MODP_3072_HEX,
        }
    }

    pub(crate) fn params(self) -> &'static Params {
        static P2048: OnceLock<Params> = OnceLock::new();
        static P3072: OnceLock<Params> = OnceLock::new();
        let cell = match self {
            Group::Modp2048 => &P2048,
            Group::Modp3072 => &P3072,
        };
        cell.get_or_init(|| Params::from_hex(self.rfc_hex(), self.prime_len()))
    }
}

impl Params {
    fn from_hex(text: &str, len: usize) -> Params {
        let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        // The constants above are fixed text checked by tests/vectors.rs; a parse
        // failure is a bug in this file, not a runtime condition.
        let p = BigUint::parse_bytes(digits.as_bytes(), 16).expect("RFC 3526 constant is hex");
        let p_bytes = p.to_bytes_be();
        assert_eq!(
            p_bytes.len(),
            len,
            "RFC 3526 constant has the documented length"
        );
        let p_minus_1 = &p - 1u32;
        let q = &p_minus_1 >> 1;
        let mut p_minus_1_bytes = p_bytes.clone();
        // p is odd, so p − 1 differs from it only in the last byte.
        p_minus_1_bytes[len - 1] -= 1;
        let mut g_bytes = vec![0u8; len];
        g_bytes[len - 1] = 2;
        let montgomery = Montgomery::new(&p_bytes);
        Params {
            p,
            p_minus_1,
            q,
            p_bytes,
            p_minus_1_bytes,
            g_bytes,
            montgomery,
        }
    }
}
