//! The arithmetic mod p on secrets, constant-time: exponentiation with a private
//! exponent (key generation and agreement) and the CPace generator's reduction and
//! squaring, all in crypto-bigint's Montgomery form.
//!
//! Which arithmetic is which: everything here touches a secret (the private
//! exponent x, the generator G that stands for the room code, the powers G^x and
//! Y^x) and runs in time independent of those values: fixed-width limbs, a fixed
//! 4-bit window over exactly [`PRIVATE_BITS`] exponent bits, table look-ups by
//! constant-time selection. What stays on num-bigint, variable-time, sees public
//! values only: the range check of a public value, the Jacobi symbol and the
//! by-definition subgroup test `y^q mod p` (keypair.rs, jacobi.rs).
//!
//! Values cross this module's border as big-endian bytes exactly `len(p)` long, so
//! the callers keep no big-integer copies of secrets.

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Uint, Word, U128, U2048, U3072, U320};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::schedule::GENERATOR_EXTRA_BYTES;

/// Bits in a private exponent: fixed length, top bit set (docs/protocol.md §5).
pub(crate) const PRIVATE_BITS: usize = 320;
/// The private exponent in bytes.
pub(crate) const PRIVATE_BYTES: usize = PRIVATE_BITS / 8;
// The fixed widths below must match the protocol's sizes.
const _: () = assert!(U320::BITS == PRIVATE_BITS && U128::BYTES == GENERATOR_EXTRA_BYTES);

/// Limbs (64 or 32 bits, by target) of each group's prime.
const L2048: usize = U2048::LIMBS;
const L3072: usize = U3072::LIMBS;

/// The Montgomery parameters of one group's prime (R = 2^len(p), R² mod p, −p⁻¹
/// mod the limb base), computed once per group with [`crate::Group`]'s numbers.
// Two values in statics, one per group: the size difference costs nothing, and
// boxing would add a pointer chase to every exponentiation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Montgomery {
    /// Group 14, 2048 bits.
    Modp2048(DynResidueParams<L2048>),
    /// Group 15, 3072 bits.
    Modp3072(DynResidueParams<L3072>),
}

impl Montgomery {
    /// The parameters for an odd prime given as big-endian bytes of 256 or 384 bytes.
    ///
    /// # Panics
    /// For any other length: the two RFC 3526 constants are the only callers.
    pub(crate) fn new(p: &[u8]) -> Montgomery {
        match p.len() {
            U2048::BYTES => Montgomery::Modp2048(DynResidueParams::new(&U2048::from_be_slice(p))),
            U3072::BYTES => Montgomery::Modp3072(DynResidueParams::new(&U3072::from_be_slice(p))),
            other => unreachable!("no RFC 3526 group here is {other} bytes long"),
        }
    }

    /// `base^exponent mod p` in constant time. `base` is `len(p)` bytes (a public
    /// value, G or g); `exponent` is a private exponent, all [`PRIVATE_BITS`] of it
    /// used whatever its value.
    pub(crate) fn pow_secret(
        &self,
        base: &[u8],
        exponent: &[u8; PRIVATE_BYTES],
    ) -> Zeroizing<Vec<u8>> {
        match self {
            Montgomery::Modp2048(params) => pow(params, base, exponent),
            Montgomery::Modp3072(params) => pow(params, base, exponent),
        }
    }

    /// `(wide mod p)^2 mod p` in constant time, for the CPace generator: `wide` is
    /// `len(p) + 16` bytes of hash output.
    pub(crate) fn square_of_reduced(&self, wide: &[u8]) -> Zeroizing<Vec<u8>> {
        match self {
            Montgomery::Modp2048(params) => square_of_reduced(params, wide),
            Montgomery::Modp3072(params) => square_of_reduced(params, wide),
        }
    }
}

fn pow<const LIMBS: usize>(
    params: &DynResidueParams<LIMBS>,
    base: &[u8],
    exponent: &[u8; PRIVATE_BYTES],
) -> Zeroizing<Vec<u8>> {
    let mut x = U320::from_be_slice(exponent);
    let mut base = Uint::<LIMBS>::from_be_slice(base);
    let mut b = DynResidue::new(&base, *params);
    // The exponent's length is public (fixed); its bits are not: the crate's
    // fixed-window ladder squares and multiplies the same number of times for every
    // exponent and picks each window's table entry by constant-time selection.
    let mut power = b.pow_bounded_exp(&x, PRIVATE_BITS);
    let mut value = power.retrieve();
    let out = to_be_bytes(&value);
    // Our copies; the crate's own stack temporaries (the table of powers, the
    // accumulator) are out of reach, as num-bigint's were.
    x.zeroize();
    base.zeroize();
    b.zeroize();
    power.zeroize();
    value.zeroize();
    out
}

fn square_of_reduced<const LIMBS: usize>(
    params: &DynResidueParams<LIMBS>,
    wide: &[u8],
) -> Zeroizing<Vec<u8>> {
    // wide = hi·2^len(p) + lo, and 2^len(p) mod p is R mod p, the Montgomery
    // form of 1; so wide ≡ lo + hi·R (mod p), each term reduced by the Montgomery
    // arithmetic itself rather than by a data-dependent long division.
    let (hi_bytes, lo_bytes) = wide.split_at(GENERATOR_EXTRA_BYTES);
    let mut hi = Uint::<LIMBS>::ZERO;
    let mut hi_words = U128::from_be_slice(hi_bytes);
    hi.as_words_mut()[..U128::LIMBS].copy_from_slice(hi_words.as_words());
    let mut lo = Uint::<LIMBS>::from_be_slice(lo_bytes);
    let r = DynResidue::new(DynResidue::one(*params).as_montgomery(), *params);
    let mut h = DynResidue::new(&lo, *params) + DynResidue::new(&hi, *params) * r;
    let mut square = h.square();
    let mut value = square.retrieve();
    let out = to_be_bytes(&value);
    hi_words.zeroize();
    hi.zeroize();
    lo.zeroize();
    h.zeroize();
    square.zeroize();
    value.zeroize();
    out
}

/// Big-endian bytes, exactly len(p) long (leading zeros kept).
fn to_be_bytes<const LIMBS: usize>(value: &Uint<LIMBS>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(Uint::<LIMBS>::BYTES));
    for word in value.as_words().iter().rev() {
        out.extend_from_slice(&Word::to_be_bytes(*word));
    }
    out
}

/// Whether a len(p)-byte big-endian value is 0, 1 or p − 1, without branching on
/// its bytes: the answer is all that may show (a refused generator or secret).
pub(crate) fn is_degenerate(value: &[u8], p_minus_1: &[u8]) -> bool {
    let (last, head) = match value.split_last() {
        Some(split) => split,
        None => return true,
    };
    let head_zero = head.iter().fold(0u8, |acc, byte| acc | byte).ct_eq(&0);
    let small = head_zero & (last.ct_eq(&0) | last.ct_eq(&1));
    bool::from(small | value.ct_eq(p_minus_1))
}

#[cfg(test)]
mod tests {
    //! The constant-time arithmetic against num-bigint's, the variable-time reference
    //! it replaced, on random and edge-case inputs of both groups.

    use num_bigint::BigUint;
    use proptest::prelude::*;

    use super::*;
    use crate::Group;

    const GROUPS: [Group; 2] = [Group::Modp2048, Group::Modp3072];

    fn padded(value: &BigUint, len: usize) -> Vec<u8> {
        let raw = value.to_bytes_be();
        let mut out = vec![0u8; len];
        out[len - raw.len()..].copy_from_slice(&raw);
        out
    }

    fn reference_pow(group: Group, base: &[u8], exponent: &[u8]) -> Vec<u8> {
        let p = &group.params().p;
        let value = BigUint::from_bytes_be(base).modpow(&BigUint::from_bytes_be(exponent), p);
        padded(&value, group.prime_len())
    }

    fn reference_square(group: Group, wide: &[u8]) -> Vec<u8> {
        let p = &group.params().p;
        let h = BigUint::from_bytes_be(wide) % p;
        padded(&(&h * &h % p), group.prime_len())
    }

    /// A value in [0, p) from arbitrary bytes.
    fn below_p(group: Group, bytes: &[u8]) -> Vec<u8> {
        let value = BigUint::from_bytes_be(bytes) % &group.params().p;
        padded(&value, group.prime_len())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn pow_secret_matches_modpow(
            base in proptest::collection::vec(any::<u8>(), 384),
            exponent in proptest::array::uniform32(any::<u8>()),
            tail in any::<u64>(),
        ) {
            let mut x = [0u8; PRIVATE_BYTES];
            x[..32].copy_from_slice(&exponent);
            x[32..].copy_from_slice(&tail.to_be_bytes());
            for group in GROUPS {
                let base = below_p(group, &base);
                let got = group.params().montgomery.pow_secret(&base, &x);
                prop_assert_eq!(got.to_vec(), reference_pow(group, &base, &x));
            }
        }

        #[test]
        fn square_of_reduced_matches_remainder_and_square(
            wide in proptest::collection::vec(any::<u8>(), 384 + GENERATOR_EXTRA_BYTES),
        ) {
            for group in GROUPS {
                let wide = &wide[..group.prime_len() + GENERATOR_EXTRA_BYTES];
                let got = group.params().montgomery.square_of_reduced(wide);
                prop_assert_eq!(got.to_vec(), reference_square(group, wide));
            }
        }
    }

    #[test]
    fn pow_secret_edge_cases() {
        for group in GROUPS {
            let params = group.params();
            let len = group.prime_len();
            let one = padded(&BigUint::from(1u32), len);
            let exponents = [[0u8; PRIVATE_BYTES], [0xFF; PRIVATE_BYTES], {
                let mut top = [0u8; PRIVATE_BYTES];
                top[0] = 0x80;
                top
            }];
            for base in [
                vec![0u8; len],
                one.clone(),
                params.g_bytes.clone(),
                params.p_minus_1_bytes.clone(),
            ] {
                for x in &exponents {
                    let got = params.montgomery.pow_secret(&base, x);
                    assert_eq!(got.len(), len);
                    assert_eq!(*got, reference_pow(group, &base, x), "group {}", group.id());
                }
            }
        }
    }

    #[test]
    fn square_of_reduced_edge_cases() {
        for group in GROUPS {
            let params = group.params();
            let extra = vec![0u8; GENERATOR_EXTRA_BYTES];
            let with_extra = |high: &[u8], low: &[u8]| [high, low].concat();
            let p_plus_1 = padded(&(&params.p + 1u32), group.prime_len());
            let zero = vec![0u8; group.prime_len()];
            let cases = [
                // lo = p, p − 1, p + 1 (≥ p needs the reduction), 0; hi = 0 or all ones.
                with_extra(&extra, &params.p_bytes),
                with_extra(&extra, &params.p_minus_1_bytes),
                with_extra(&extra, &p_plus_1),
                with_extra(&extra, &zero),
                vec![0xFF; group.prime_len() + GENERATOR_EXTRA_BYTES],
                with_extra(&[0xFF; GENERATOR_EXTRA_BYTES], &params.p_bytes),
            ];
            for wide in cases {
                let got = params.montgomery.square_of_reduced(&wide);
                assert_eq!(*got, reference_square(group, &wide), "group {}", group.id());
            }
        }
    }

    #[test]
    fn degenerate_values_are_exactly_0_1_and_p_minus_1() {
        for group in GROUPS {
            let params = group.params();
            let len = group.prime_len();
            let small = |n: u32| padded(&BigUint::from(n), len);
            assert!(is_degenerate(&small(0), &params.p_minus_1_bytes));
            assert!(is_degenerate(&small(1), &params.p_minus_1_bytes));
            assert!(is_degenerate(
                &params.p_minus_1_bytes,
                &params.p_minus_1_bytes
            ));
            assert!(!is_degenerate(&small(2), &params.p_minus_1_bytes));
            let mut high_one = small(1);
            high_one[0] = 1;
            assert!(!is_degenerate(&high_one, &params.p_minus_1_bytes));
            let p_minus_2 = padded(&(&params.p - 2u32), len);
            assert!(!is_degenerate(&p_minus_2, &params.p_minus_1_bytes));
        }
    }
}
