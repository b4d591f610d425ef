//! Diffie-Hellman public values from the network (the mediator's range check and
//! the client's full validation) and the Jacobi symbol behind the subgroup test.
//!
//! The definition of subgroup membership, y^q ≡ 1 (mod p), costs a 2048-bit modpow
//! per input, far too slow to fuzz; instead squares mod p (always in the subgroup)
//! must pass and their negatives (never in it: p ≡ 3 mod 4, so -1 is a non-residue)
//! must fail, and the symbol itself is checked against a u128 implementation and
//! Euler's criterion on small moduli.

use dhke::{check_public_range, jacobi, validate_peer_public, Error, Group};
use num_bigint::BigUint;

/// `ctrl | bytes`: `ctrl & 3` picks the check; bit 2 picks group 15 over 14.
pub fn public_value(data: &[u8]) {
    let Some((&ctrl, bytes)) = data.split_first() else {
        return;
    };
    let group = if ctrl & 4 == 0 {
        Group::Modp2048
    } else {
        Group::Modp3072
    };
    match ctrl & 3 {
        0 => as_sent(group, bytes),
        1 => squares(group, bytes),
        _ => symbol(bytes),
    }
}

/// The bytes as a peer would send them: validation agrees with the rules, stated
/// here on big integers.
fn as_sent(group: Group, bytes: &[u8]) {
    let p = BigUint::from_bytes_be(group.prime_bytes());
    let y = BigUint::from_bytes_be(bytes);
    let in_range = bytes.len() == group.prime_len() && y > BigUint::from(1u32) && y < &p - 1u32;
    assert_eq!(check_public_range(group, bytes).is_ok(), in_range);
    // Our own value, for the reflection check: a fixed value in range.
    let own = vec![0x5a; group.prime_len()];
    let own = own.as_slice();
    match validate_peer_public(group, bytes, own) {
        Ok(peer) => {
            assert!(in_range && bytes != own);
            assert_eq!(peer.as_bytes(), bytes);
            assert_eq!(jacobi(&y, &p), 1);
        }
        Err(Error::NotInSubgroup) => assert!(in_range && jacobi(&y, &p) != 1),
        Err(Error::Reflected) => assert!(in_range && bytes == own),
        Err(Error::PublicLength { .. } | Error::PublicRange) => assert!(!in_range),
        Err(e) => panic!("unexpected validation error {e}"),
    }
}

/// x² mod p is in the subgroup, p - x² mod p is not.
fn squares(group: Group, bytes: &[u8]) {
    let p = BigUint::from_bytes_be(group.prime_bytes());
    let x = BigUint::from_bytes_be(bytes);
    let square = (&x * &x) % &p;
    for (value, residue) in [(square.clone(), true), ((&p - &square) % &p, false)] {
        let encoded = pad(&value, group.prime_len());
        let result = validate_peer_public(group, &encoded, &[]);
        if check_public_range(group, &encoded).is_err() {
            assert!(result.is_err());
            continue;
        }
        assert_eq!(result.is_ok(), residue, "subgroup test wrong for {value:x}");
    }
}

fn pad(value: &BigUint, len: usize) -> Vec<u8> {
    let raw = value.to_bytes_be();
    let mut out = vec![0u8; len - raw.len()];
    out.extend_from_slice(&raw);
    out
}

/// `a (16 bytes) | n (16 bytes)`, n made odd: the symbol against a u128 version,
/// and against Euler's criterion when n is a small prime.
fn symbol(bytes: &[u8]) {
    let mut a = [0u8; 16];
    let mut n = [0u8; 16];
    let (first, second) = bytes.split_at(bytes.len().min(16));
    a[..first.len()].copy_from_slice(first);
    n[..second.len().min(16)].copy_from_slice(&second[..second.len().min(16)]);
    let a = u128::from_le_bytes(a);
    let n = u128::from_le_bytes(n) | 1;
    let got = jacobi(&BigUint::from(a), &BigUint::from(n));
    assert_eq!(got, jacobi_u128(a, n), "({a}/{n})");
    let small = (n & 0xF_FFFF) | 1;
    let a_small = a % small;
    if small > 2 && is_prime(small) {
        let euler = pow_mod(a_small, (small - 1) / 2, small);
        let expected = match euler {
            0 => 0,
            1 => 1,
            e if e == small - 1 => -1,
            e => panic!("Euler's criterion gave {e} mod {small}"),
        };
        assert_eq!(
            jacobi(&BigUint::from(a_small), &BigUint::from(small)),
            expected,
            "({a_small}/{small})"
        );
    }
}

/// The textbook binary Jacobi algorithm on machine integers.
fn jacobi_u128(mut a: u128, mut n: u128) -> i8 {
    let mut t = 1;
    a %= n;
    while a != 0 {
        while a % 2 == 0 {
            a /= 2;
            if n % 8 == 3 || n % 8 == 5 {
                t = -t;
            }
        }
        std::mem::swap(&mut a, &mut n);
        if a % 4 == 3 && n % 4 == 3 {
            t = -t;
        }
        a %= n;
    }
    if n == 1 {
        t
    } else {
        0
    }
}

fn is_prime(n: u128) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn pow_mod(mut base: u128, mut exp: u128, m: u128) -> u128 {
    let mut result = 1 % m;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            result = result * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    result
}
