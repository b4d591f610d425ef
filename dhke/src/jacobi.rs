//! The Jacobi symbol, used as a Legendre symbol to test subgroup membership.
//!
//! For a safe prime p = 2q + 1 the order-q subgroup is exactly the set of quadratic
//! residues, so `y^q ≡ 1 (mod p)` ⇔ `(y/p) = 1`. The binary Jacobi algorithm gets
//! there with shifts and subtractions, far cheaper than a full modpow.

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{One, Zero};

/// The Jacobi symbol (a/n) for odd n > 0: 1, -1, or 0 when gcd(a, n) > 1.
///
/// # Panics
/// If `n` is even or zero: the symbol is undefined there, and every caller in this
/// crate passes an odd prime.
pub fn jacobi(a: &BigUint, n: &BigUint) -> i8 {
    assert!(n.is_odd(), "Jacobi symbol needs an odd modulus");
    // One division up front; after that only in-place subtractions and shifts,
    // so a 3072-bit symbol allocates nothing more (a `%` per round allocated
    // three numbers and ran a long division).
    let mut a = a % n;
    let mut n = n.clone();
    let mut t: i8 = 1;
    while !a.is_zero() {
        // Pull out factors of two: (2/n) = -1 exactly when n ≡ 3, 5 (mod 8).
        let zeros = a.trailing_zeros().unwrap_or(0);
        a >>= zeros;
        let n_mod_8 = low_bits(&n) & 7;
        if zeros % 2 == 1 && (n_mod_8 == 3 || n_mod_8 == 5) {
            t = -t;
        }
        // Both odd now. Keep a ≥ n; quadratic reciprocity: swapping flips the
        // sign when both are ≡ 3 (mod 4).
        if a < n {
            if low_bits(&a) & 3 == 3 && n_mod_8 & 3 == 3 {
                t = -t;
            }
            std::mem::swap(&mut a, &mut n);
        }
        // (a/n) = ((a - n)/n), and a - n is even: the next round halves it.
        a -= &n;
    }
    if n.is_one() {
        t
    } else {
        0
    }
}

fn low_bits(x: &BigUint) -> u64 {
    x.iter_u64_digits().next().unwrap_or(0)
}
