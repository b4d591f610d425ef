//! Known-answer tests: the RFC 3526 primes (checked against the RFC's own formula,
//! not just the pasted hex), RFC 5869 HKDF-SHA256, RFC 4231 HMAC-SHA256 and
//! NIST SP 800-38A AES-256-CBC, through the same crates the protocol uses; then the
//! Diffie-Hellman agreement itself.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use dhke::{jacobi, validate_peer_public, Group, KeyPair, PeerPublic, PrivateKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use num_bigint::{BigInt, BigUint, Sign};
use num_traits::{One, Zero};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use sha2::Sha256;

fn unhex(s: &str) -> Vec<u8> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(digits).unwrap()
}

fn prime(group: Group) -> BigUint {
    BigUint::from_bytes_be(group.prime_bytes())
}

// ---------------------------------------------------------------------------
// RFC 3526 groups
// ---------------------------------------------------------------------------

/// `⌊atan(1/x) · 2^bits⌋` up to a small truncation error (one unit per series term).
fn arctan_inv_scaled(x: u32, bits: u64) -> BigInt {
    let x2 = BigInt::from(x) * BigInt::from(x);
    let mut power = (BigInt::one() << bits) / BigInt::from(x); // 2^bits / x^(2n+1)
    let mut sum = BigInt::zero();
    let mut n: u32 = 0;
    while !power.is_zero() {
        let term = &power / BigInt::from(2 * n + 1);
        if n % 2 == 0 {
            sum += term;
        } else {
            sum -= term;
        }
        power /= &x2;
        n += 1;
    }
    sum
}

/// `⌊2^k · π⌋` by Machin's formula, π = 16·atan(1/5) − 4·atan(1/239), computed with
/// 64 guard bits. The accumulated truncation error is below 2^16; the test insists
/// the guard bits are far from a carry so the floor is exact.
fn floor_pi_scaled(k: u64) -> BigUint {
    const GUARD: u64 = 64;
    let bits = k + GUARD;
    let pi: BigInt = arctan_inv_scaled(5, bits) * 16u32 - arctan_inv_scaled(239, bits) * 4u32;
    let (sign, mag) = pi.into_parts();
    assert_eq!(sign, Sign::Plus);
    let guard_mask = (BigUint::one() << GUARD) - 1u32;
    let guard = &mag & &guard_mask;
    let margin = BigUint::one() << 20;
    assert!(
        guard > margin && guard < &guard_mask - &margin,
        "guard bits too close to a carry; raise GUARD"
    );
    mag >> GUARD
}

/// RFC 3526: `p = 2^n − 2^(n−64) − 1 + 2^64 · (⌊2^(n−130) · π⌋ + offset)`.
fn rfc3526_formula(n: u64, offset: u32) -> BigUint {
    let one = BigUint::one();
    let mid = (floor_pi_scaled(n - 130) + offset) << 64;
    ((&one << n) + mid) - (&one << (n - 64)) - one
}

#[test]
fn pi_by_machin_is_right() {
    // 2^64 · π = 57952155664616982739.5…, π = 3.243F6A8885A308D3… in hex.
    assert_eq!(
        floor_pi_scaled(64),
        BigUint::parse_bytes(b"3243F6A8885A308D3", 16).unwrap()
    );
}

#[test]
fn modp_2048_matches_rfc_formula() {
    let p = rfc3526_formula(2048, 124_476);
    assert_eq!(prime(Group::Modp2048), p);
    assert_eq!(Group::Modp2048.prime_bytes().len(), 256);
}

#[test]
fn modp_3072_matches_rfc_formula() {
    let p = rfc3526_formula(3072, 1_690_314);
    assert_eq!(prime(Group::Modp3072), p);
    assert_eq!(Group::Modp3072.prime_bytes().len(), 384);
}

#[test]
fn rfc_hex_parses_to_prime_bytes() {
    for group in [Group::Modp2048, Group::Modp3072] {
        assert_eq!(unhex(group.rfc_hex()), group.prime_bytes());
    }
}

#[test]
fn group_ids() {
    assert_eq!(Group::Modp2048.id(), 14);
    assert_eq!(Group::Modp3072.id(), 15);
    assert_eq!(Group::from_id(14), Ok(Group::Modp2048));
    assert_eq!(Group::from_id(15), Ok(Group::Modp3072));
    assert_eq!(Group::from_id(5), Err(dhke::Error::UnknownGroup(5)));
    assert_eq!(Group::DEFAULT, Group::Modp3072);
}

/// Miller–Rabin with fixed bases: a composite passes one round with probability ≤ 1/4.
fn miller_rabin(n: &BigUint, bases: &[u32]) -> bool {
    let one = BigUint::one();
    let n_minus_1 = n - &one;
    let s = n_minus_1.trailing_zeros().unwrap();
    let d = &n_minus_1 >> s;
    'bases: for &a in bases {
        let mut x = BigUint::from(a).modpow(&d, n);
        if x == one || x == n_minus_1 {
            continue;
        }
        for _ in 1..s {
            x = x.modpow(&BigUint::from(2u32), n);
            if x == n_minus_1 {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

#[test]
fn miller_rabin_catches_composites() {
    // A Carmichael number and the product of two Mersenne primes.
    assert!(!miller_rabin(&BigUint::from(561u32), &[2, 3]));
    let m = (BigUint::one() << 61u32) - 1u32;
    let c = &m * ((BigUint::one() << 89u32) - 1u32);
    assert!(miller_rabin(&m, &[2, 3, 5]));
    assert!(!miller_rabin(&c, &[2, 3, 5]));
}

#[test]
fn primes_are_safe_primes_with_generator_of_order_q() {
    for group in [Group::Modp2048, Group::Modp3072] {
        let p = prime(group);
        let q = (&p - 1u32) >> 1;
        assert!(miller_rabin(&p, &[2, 3, 5]), "p of group {}", group.id());
        assert!(miller_rabin(&q, &[2, 3, 5]), "q of group {}", group.id());
        // g = 2 lies in the order-q subgroup (p ≡ 7 mod 8), so public values do too.
        assert_eq!(BigUint::from(2u32).modpow(&q, &p), BigUint::one());
        assert_eq!(&p % 8u32, BigUint::from(7u32));
    }
}

// ---------------------------------------------------------------------------
// RFC 5869 HKDF-SHA256, test cases 1–3
// ---------------------------------------------------------------------------

fn hkdf_case(ikm: &[u8], salt: Option<&[u8]>, info: &[u8], prk: &str, okm: &str) {
    let (got_prk, hk) = Hkdf::<Sha256>::extract(salt, ikm);
    assert_eq!(got_prk.as_slice(), unhex(prk));
    let want = unhex(okm);
    let mut out = vec![0u8; want.len()];
    hk.expand(info, &mut out).unwrap();
    assert_eq!(out, want);
    // The constructor the key schedule uses gives the same output.
    let mut again = vec![0u8; want.len()];
    Hkdf::<Sha256>::new(salt, ikm)
        .expand(info, &mut again)
        .unwrap();
    assert_eq!(again, want);
}

#[test]
fn rfc5869_case_1() {
    hkdf_case(
        &[0x0b; 22],
        Some(&unhex("000102030405060708090a0b0c")),
        &unhex("f0f1f2f3f4f5f6f7f8f9"),
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    );
}

#[test]
fn rfc5869_case_2() {
    let ikm: Vec<u8> = (0x00..=0x4f).collect();
    let salt: Vec<u8> = (0x60..=0xaf).collect();
    let info: Vec<u8> = (0xb0..=0xff).collect();
    hkdf_case(
        &ikm,
        Some(&salt),
        &info,
        "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c
         59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71
         cc30c58179ec3e87c14c01d5c1f3434f1d87",
    );
}

#[test]
fn rfc5869_case_3() {
    hkdf_case(
        &[0x0b; 22],
        None,
        b"",
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    );
    // An empty salt is the same as no salt (RFC 5869 §2.2: HashLen zeros).
    let (a, _) = Hkdf::<Sha256>::extract(Some(&[]), &[0x0b; 22]);
    let (b, _) = Hkdf::<Sha256>::extract(None, &[0x0b; 22]);
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------
// RFC 4231 HMAC-SHA256
// ---------------------------------------------------------------------------

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[test]
fn rfc4231_case_1() {
    assert_eq!(
        hmac_sha256(&[0x0b; 20], b"Hi There"),
        unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    );
}

#[test]
fn rfc4231_case_2() {
    assert_eq!(
        hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
        unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
}

#[test]
fn rfc4231_case_3() {
    assert_eq!(
        hmac_sha256(&[0xaa; 20], &[0xdd; 50]),
        unhex("773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe")
    );
}

#[test]
fn rfc4231_case_4() {
    let key: Vec<u8> = (0x01..=0x19).collect();
    assert_eq!(
        hmac_sha256(&key, &[0xcd; 50]),
        unhex("82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b")
    );
}

#[test]
fn rfc4231_case_5_truncated() {
    let tag = hmac_sha256(&[0x0c; 20], b"Test With Truncation");
    assert_eq!(tag[..16], unhex("a3b6167473100ee06e0c796c2955552b"));
}

#[test]
fn rfc4231_case_6() {
    assert_eq!(
        hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        ),
        unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    );
}

#[test]
fn rfc4231_case_7() {
    let data: &[u8] = b"This is a test using a larger than block-size key and a larger \
than block-size data. The key needs to be hashed before being used by the HMAC algorithm.";
    assert_eq!(
        hmac_sha256(&[0xaa; 131], data),
        unhex("9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2")
    );
}

#[test]
fn verify_mac_is_exact() {
    let a = [7u8; 32];
    let mut b = a;
    assert!(dhke::verify_mac(&a, &b));
    for i in 0..32 {
        b = a;
        b[i] ^= 0x80;
        assert!(!dhke::verify_mac(&a, &b), "byte {i}");
    }
}

// ---------------------------------------------------------------------------
// NIST SP 800-38A F.2.5 / F.2.6: AES-256-CBC
// ---------------------------------------------------------------------------

const SP800_38A_KEY: &str = "603deb1015ca71be2b73aef0857d7781 1f352c073b6108d72d9810a30914dff4";
const SP800_38A_IV: &str = "000102030405060708090a0b0c0d0e0f";
const SP800_38A_PLAIN: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
                               30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710";
const SP800_38A_CIPHER: &str = "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d
                                39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b";

#[test]
fn sp800_38a_f_2_5_cbc_aes256_encrypt() {
    let key = unhex(SP800_38A_KEY);
    let iv = unhex(SP800_38A_IV);
    let mut buf = unhex(SP800_38A_PLAIN);
    let len = buf.len();
    let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &iv)
        .unwrap()
        .encrypt_padded_mut::<NoPadding>(&mut buf, len)
        .unwrap();
    assert_eq!(ct, unhex(SP800_38A_CIPHER));
}

#[test]
fn sp800_38a_f_2_6_cbc_aes256_decrypt() {
    let key = unhex(SP800_38A_KEY);
    let iv = unhex(SP800_38A_IV);
    let mut buf = unhex(SP800_38A_CIPHER);
    let pt = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
        .unwrap()
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .unwrap();
    assert_eq!(pt, unhex(SP800_38A_PLAIN));
}

// ---------------------------------------------------------------------------
// Diffie-Hellman agreement
// ---------------------------------------------------------------------------

fn key_pair(group: Group, rng: &mut StdRng) -> KeyPair {
    KeyPair::generate(group, rng)
}

fn agree_both(a: &KeyPair, b: &KeyPair) -> (Vec<u8>, Vec<u8>) {
    let group = a.group();
    let b_seen_by_a = validate_peer_public(group, b.public(), a.public()).unwrap();
    let a_seen_by_b = validate_peer_public(group, a.public(), b.public()).unwrap();
    let za = a.agree(&b_seen_by_a).unwrap();
    let zb = b.agree(&a_seen_by_b).unwrap();
    (za.as_bytes().to_vec(), zb.as_bytes().to_vec())
}

fn check_agreement(group: Group, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let a = key_pair(group, &mut rng);
    let b = key_pair(group, &mut rng);
    assert_eq!(a.public().len(), group.prime_len());
    assert_ne!(a.public(), b.public());
    let (za, zb) = agree_both(&a, &b);
    assert_eq!(za.len(), group.prime_len());
    assert_eq!(za, zb);
    // Publics are in the order-q subgroup, as the Jacobi check says.
    assert!(PeerPublic::in_subgroup_by_modpow(group, a.public()));
}

proptest! {
    // Debug-mode tests: keep the case counts modest (num-bigint itself is optimised).
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn dh_agreement_group_14(seed in any::<u64>()) {
        check_agreement(Group::Modp2048, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    #[test]
    fn dh_agreement_group_15(seed in any::<u64>()) {
        check_agreement(Group::Modp3072, seed);
    }
}

#[test]
fn same_private_key_gives_same_public() {
    let mut rng = StdRng::seed_from_u64(1);
    let private = PrivateKey::generate(&mut rng);
    let a = KeyPair::from_private(Group::Modp2048, private.clone());
    let b = KeyPair::from_private(Group::Modp2048, private);
    assert_eq!(a.public(), b.public());
}

#[test]
fn public_value_matches_independent_modpow() {
    // y = 2^x mod p computed by num-bigint directly from the same random bytes the
    // key generator draws (40 bytes, top bit forced).
    let mut rng = StdRng::seed_from_u64(42);
    let mut probe = rng.clone();
    let pair = KeyPair::generate(Group::Modp3072, &mut rng);
    let mut x = [0u8; 40];
    probe.fill(&mut x[..]);
    x[0] |= 0x80;
    let y = BigUint::from(2u32).modpow(&BigUint::from_bytes_be(&x), &prime(Group::Modp3072));
    let mut want = y.to_bytes_be();
    while want.len() < 384 {
        want.insert(0, 0);
    }
    assert_eq!(pair.public(), &want[..]);
}

#[test]
fn shared_secret_with_leading_zero_keeps_full_length() {
    let group = Group::Modp3072;
    let mut rng = StdRng::seed_from_u64(0x2c_2c_2c);
    let host = key_pair(group, &mut rng);
    for attempt in 0..4096 {
        let joiner = key_pair(group, &mut rng);
        let peer = validate_peer_public(group, host.public(), joiner.public()).unwrap();
        let z = joiner.agree(&peer).unwrap();
        if z.as_bytes()[0] != 0 {
            continue;
        }
        let (zh, zj) = agree_both(&host, &joiner);
        assert_eq!(zj.len(), 384);
        assert_eq!(zh.len(), 384);
        assert_eq!(zh, zj);
        assert_eq!(zh, z.as_bytes());
        assert_eq!(zh[0], 0);
        // The value itself is one byte shorter than p: padding did the work.
        assert!(BigUint::from_bytes_be(&zh).to_bytes_be().len() < 384);
        eprintln!("leading-zero secret after {} attempts", attempt + 1);
        return;
    }
    panic!("no shared secret with a leading zero byte in 4096 attempts (expected ~256)");
}

// ---------------------------------------------------------------------------
// Jacobi symbol
// ---------------------------------------------------------------------------

/// The Jacobi symbol from its definition: the product of Legendre symbols over the
/// prime factors of n, each by Euler's criterion.
fn jacobi_by_definition(a: u64, n: u64) -> i8 {
    let mut result: i8 = 1;
    let mut m = n;
    let mut f = 3;
    while m > 1 {
        while m % f != 0 {
            f += 2;
        }
        m /= f;
        let r = BigUint::from(a % f).modpow(&BigUint::from((f - 1) / 2), &BigUint::from(f));
        result *= if r.is_zero() {
            0
        } else if r.is_one() {
            1
        } else {
            -1
        };
    }
    result
}

#[test]
fn jacobi_matches_definition_for_small_odd_moduli() {
    for n in (1u64..400).step_by(2) {
        for a in 0..(2 * n + 3) {
            assert_eq!(
                jacobi(&BigUint::from(a), &BigUint::from(n)),
                jacobi_by_definition(a, n),
                "({a}/{n})"
            );
        }
    }
}

#[test]
fn jacobi_agrees_with_modpow_on_random_values() {
    let mut rng = StdRng::seed_from_u64(7);
    for group in [Group::Modp2048, Group::Modp3072] {
        let p = prime(group);
        let (mut residues, mut others) = (0, 0);
        for _ in 0..24 {
            let mut bytes = vec![0u8; group.prime_len()];
            rng.fill(&mut bytes[..]);
            let y = BigUint::from_bytes_be(&bytes) % &p;
            let bytes = {
                let mut b = y.to_bytes_be();
                while b.len() < group.prime_len() {
                    b.insert(0, 0);
                }
                b
            };
            let by_modpow = PeerPublic::in_subgroup_by_modpow(group, &bytes);
            assert_eq!(jacobi(&y, &p) == 1, by_modpow);
            if by_modpow {
                residues += 1;
            } else {
                others += 1;
            }
        }
        // Half of all values are residues; 24 draws all one way is a broken test.
        assert!(residues > 0 && others > 0);
    }
}

#[test]
fn jacobi_known_residues_and_non_residues() {
    let mut rng = StdRng::seed_from_u64(9);
    for group in [Group::Modp2048, Group::Modp3072] {
        let p = prime(group);
        // p ≡ 7 (mod 8): 2 is a residue, −1 is not (p ≡ 3 mod 4), so −2 is not.
        assert_eq!(jacobi(&BigUint::from(2u32), &p), 1);
        assert_eq!(jacobi(&BigUint::from(4u32), &p), 1);
        assert_eq!(jacobi(&(&p - 1u32), &p), -1);
        assert_eq!(jacobi(&(&p - 2u32), &p), -1);
        assert_eq!(jacobi(&p, &p), 0);
        assert_eq!(jacobi(&BigUint::zero(), &p), 0);
        // A genuine public value y is a residue; p − y is not.
        let pair = key_pair(group, &mut rng);
        let y = BigUint::from_bytes_be(pair.public());
        assert_eq!(jacobi(&y, &p), 1);
        assert_eq!(jacobi(&(&p - &y), &p), -1);
        // Any square is a residue.
        let r = BigUint::from_bytes_be(&[0x5a; 100]);
        assert_eq!(jacobi(&(&r * &r % &p), &p), 1);
    }
}

// ---------------------------------------------------------------------------
// §13: room tags, the LAN key, the CPace generator and a whole CPace session.
// Every value below was computed independently by dhke/tests/pake_vectors.py
// (Python hashlib/hmac, argon2-cffi 25.1), not by this crate.
// ---------------------------------------------------------------------------

mod pake {
    use dhke::schedule::{Nonce, SessionKeys};
    use dhke::{
        commit, cpace_generator, host_confirm_mac, joiner_confirm_mac, keylog_line, lan_key,
        nameplate_tag, typed_room_tag, validate_peer_public, Group, KeyPair, PrivateKey, RoomCode,
        RoomKind, Transcript,
    };
    use sha2::{Digest, Sha256};

    const CODE: &str = "7-velvet-harbor-maple-otter";
    const TYPED: &str = "7-velvet-harbor";

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn nameplate_tags() {
        assert_eq!(
            hex::encode(nameplate_tag(7).0),
            "1791e31102b9c29d2a62b1a4bc2f23ebc166c311cd9d738ede7f97ed67b661eb"
        );
        assert_eq!(
            hex::encode(nameplate_tag(482).0),
            "99504a8f942c01fde77a109ba6710df89ec4bb66609fadd83262daecbfe2df50"
        );
        assert_eq!(RoomCode::parse(CODE).tag(), nameplate_tag(7));
    }

    #[test]
    fn argon2id_tag_of_a_typed_name() {
        let code = RoomCode::parse(TYPED);
        assert_eq!(code.kind(), RoomKind::Typed);
        let want = "cacb6145d2869c96eef8ab044ea31991bf814809b60e32a02b0fe11f32d74302";
        assert_eq!(hex::encode(code.tag().0), want);
        assert_eq!(hex::encode(typed_room_tag(TYPED).0), want);
    }

    #[test]
    fn argon2id_parameters_are_the_spec_s() {
        // m = 19 MiB, t = 2, p = 1 (docs/protocol.md §13.2): a change here changes
        // every typed tag and LAN key, so it must be a protocol change.
        assert_eq!(dhke::schedule::ARGON2_M_KIB, 19_456);
        assert_eq!(dhke::schedule::ARGON2_T, 2);
        assert_eq!(dhke::schedule::ARGON2_P, 1);
        assert_eq!(dhke::schedule::GENERATOR_EXTRA_BYTES, 16);
    }

    #[test]
    fn lan_keys_cover_the_whole_code() {
        assert_eq!(
            hex::encode(lan_key(&RoomCode::parse(CODE)).expose()),
            "bbbafa32784a2fd975e1ca2c817836612471ee519ca55a959609eebd3fa470e0"
        );
        assert_eq!(
            hex::encode(RoomCode::parse(TYPED).lan_key().expose()),
            "9cd7f421e117cfb669c1b73288e342c41a2d22c0c88e210d38092aa8053e428c"
        );
        // Same nameplate, other words: same tag, another LAN key.
        let other = RoomCode::parse("7-amber-quiet-river-stone");
        assert_eq!(other.tag(), RoomCode::parse(CODE).tag());
        assert_ne!(
            other.lan_key().expose(),
            RoomCode::parse(CODE).lan_key().expose()
        );
    }

    #[test]
    fn cpace_generators() {
        let cases = [
            (
                CODE,
                Group::Modp2048,
                "9df7ae8746e528bf",
                "859e16ff94250c836b15f12d5affefab701a0f1c18ac3424d8b123959092c6f6",
            ),
            (
                CODE,
                Group::Modp3072,
                "c5050519f1bf8023",
                "19c200c3c8adaf3a7e89b92e26587be9957687c7ccff8122b128441b9a44fbce",
            ),
            (
                TYPED,
                Group::Modp2048,
                "d131f4fe88322df2",
                "e7f0a1da3fb7bc74ea9d82c77fde5fcaf2c4cc5ee375d96d70f1bfdaa33557ee",
            ),
            (
                TYPED,
                Group::Modp3072,
                "2d51e2f6a3da4463",
                "04a25ac803eacafbfa4843f667e1e7230e7d3003e1388d4706a791fa54372f86",
            ),
        ];
        for (code, group, head, digest) in cases {
            let g = cpace_generator(group, &RoomCode::parse(code)).unwrap();
            let bytes = g.to_bytes();
            assert_eq!(bytes.len(), group.prime_len());
            assert_eq!(
                hex::encode(&bytes[..8]),
                head,
                "{code} group {}",
                group.id()
            );
            assert_eq!(sha(&bytes), digest, "{code} group {}", group.id());
            // G is a square, so it is in the order-q subgroup.
            assert!(dhke::PeerPublic::in_subgroup_by_modpow(group, &bytes));
        }
    }

    #[test]
    fn generator_depends_on_every_input() {
        let g = |code: &str, group| {
            cpace_generator(group, &RoomCode::parse(code))
                .unwrap()
                .to_bytes()
                .to_vec()
        };
        let base = g(CODE, Group::Modp2048);
        assert_ne!(base, g("7-velvet-harbor-maple-ottex", Group::Modp2048));
        assert_ne!(base, g("8-velvet-harbor-maple-otter", Group::Modp2048));
        assert_ne!(
            base,
            g(CODE, Group::Modp3072)[..256].to_vec(),
            "group id is in the hash"
        );
    }

    /// A whole group-14 CPace session with fixed exponents (40 × 11 and 40 × 22 with
    /// the top bit set) and nonces (32 × A0, 32 × B0).
    #[test]
    fn whole_session() {
        let group = Group::Modp2048;
        let code = RoomCode::parse(CODE);
        let host =
            KeyPair::from_private_cpace(group, &code, PrivateKey::from_bytes([0x11; 40])).unwrap();
        let joiner =
            KeyPair::from_private_cpace(group, &code, PrivateKey::from_bytes([0x22; 40])).unwrap();
        assert_eq!(
            sha(host.public()),
            "57bf3ba14728f0f237e72dc922397cc0049d4a1bfbe69832db46d16376a38740"
        );
        assert_eq!(
            sha(joiner.public()),
            "16ca73819e0dbcaf79fde7f11cf3a6b4da4132ca6a98ab66ee9559b172e4b73a"
        );
        let z = host
            .agree(&validate_peer_public(group, joiner.public(), host.public()).unwrap())
            .unwrap();
        let z_joiner = joiner
            .agree(&validate_peer_public(group, host.public(), joiner.public()).unwrap())
            .unwrap();
        assert_eq!(z.as_bytes(), z_joiner.as_bytes());
        assert_eq!(
            sha(z.as_bytes()),
            "62013c9cf2c5f9ed2c99e585bc4e254885440101ad65f1a4ad11e9dba7f9bb36"
        );
        let tag = code.tag();
        let th = Transcript {
            room_tag: &tag,
            group,
            host_name: "alice",
            host_public: host.public(),
            joiner_name: "bob",
            joiner_public: joiner.public(),
        }
        .hash();
        assert_eq!(
            hex::encode(th.0),
            "920674f6c8bf93ccc9e8710d1e5b26e6cc2eb78c555f041661489d343cb58d21"
        );
        let keys = SessionKeys::derive(&th, &code, &z, None);
        let line = keylog_line(&th, &z, &keys);
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            &fields[3..],
            [
                "da51185555816feed75a2c2f7de05df16c601a6fa532b1fb23159daa7973c4c7",
                "28fa3e79da9062240fe9de83a68569bb91b07c7edcc17c94cc080d6dfcf38c1a",
                "9fae96e0edb57aeb9927047bad4057105bdb81f27dc6d6f42c5df04a38ccfe63",
                "5e652c05f8652ac7973cf6c3634c339740068fb069ddb21bb3df0c29fba185b5",
            ]
        );
        // Identities (§15): seeds 32 × 01 (alice, host) and 32 × 02 (bob, joiner).
        let (id_h, id_j) = (
            dhke::Identity::from_seed(&[1; 32]),
            dhke::Identity::from_seed(&[2; 32]),
        );
        assert_eq!(
            id_h.public().to_hex(),
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        assert_eq!(
            id_j.public().to_hex(),
            "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
        );
        let thi = dhke::identity_transcript(&th, &id_h.public().0, &id_j.public().0);
        assert_eq!(
            hex::encode(thi.0),
            "755eebab9d07ad9cc907191b7b339139f645502cbb69a488b18d4e2e1b72e6e0"
        );
        let (nh, nj) = (Nonce([0xA0; 32]), Nonce([0xB0; 32]));
        let c = commit(&nj);
        assert_eq!(
            hex::encode(host_confirm_mac(&keys, &thi, &c, &nh, false)),
            "878db44ac8baa4099720a46dbb2c3be42a19a71520d3cd329906df4de365b5ca"
        );
        assert_eq!(
            hex::encode(joiner_confirm_mac(&keys, &thi, &c, &nh, false, &nj)),
            "a2d2be9f4e9735a7787330dc3920849bd72a1c075836b39cf464bd5ab1e0304c"
        );
        let sig_h = id_h.sign(&dhke::host_signed_bytes(&thi, &c, &nh, false));
        let sig_j = id_j.sign(&dhke::joiner_signed_bytes(&thi, &c, &nh, false, &nj));
        assert_eq!(hex::encode(sig_h), "5aebe401ae7cc19aa2436f16a4b2a94c9e4e603af85bcad1ae7cbb07c65217033b7be8701e5d94bc393e9ea4084f9c71cb42bb1c68e70bf722e27faf4ead3301");
        assert_eq!(hex::encode(sig_j), "43e131ebf4ffecfe91384df09e9084220c07b0c6685a6538a579ec4e22369ff4723a72a960a11fbdd1ba67e6d422783f5f107060d3fe484873eb30c85a367305");
        assert_eq!(keys.sas(&thi, &nh, &nj).to_string(), "576 207");
    }

    #[test]
    fn identity_vectors() {
        let (a, b) = (
            dhke::Identity::from_seed(&[1; 32]),
            dhke::Identity::from_seed(&[2; 32]),
        );
        assert_eq!(
            a.public().fingerprint().to_string(),
            "ea10 695a f766 1f0e 1345 7f35 4cff 16ec"
        );
        let secret = a.contact_secret(&b.public()).unwrap();
        assert_eq!(*secret, *b.contact_secret(&a.public()).unwrap());
        assert_eq!(
            hex::encode(*secret),
            "a5fb7549e30d9767de78f11c471a8351cfdcab2f8d34a2332f67a0e931a264d6"
        );
        assert_eq!(
            RoomCode::from_secret("contact", &secret).tag().short_hex(),
            hex::encode(&dhke::secret_room_tag(&secret).0[..4])
        );
        assert_eq!(
            hex::encode(dhke::secret_room_tag(&secret).0),
            "098fe3101a53d2e2f076210f1a22fd157bea45b5bb735143e8aecf45a5c045a2"
        );
        assert_eq!(hex::encode(dhke::token_checksum(b"p2pchat")), "c173adf0");
    }

    #[test]
    fn cpace_key_pairs_agree_only_on_the_same_code() {
        let group = Group::Modp2048;
        let mut rng = rand_core::OsRng;
        let a = RoomCode::parse(CODE);
        let b = RoomCode::parse("7-velvet-harbor-maple-ottex");
        let host = KeyPair::generate_cpace(group, &a, &mut rng).unwrap();
        let same = KeyPair::generate_cpace(group, &a, &mut rng).unwrap();
        let wrong = KeyPair::generate_cpace(group, &b, &mut rng).unwrap();
        let z = |x: &KeyPair, y: &KeyPair| {
            x.agree(&validate_peer_public(group, y.public(), x.public()).unwrap())
                .unwrap()
                .as_bytes()
                .to_vec()
        };
        assert_eq!(z(&host, &same), z(&same, &host));
        assert_ne!(z(&host, &wrong), z(&wrong, &host));
        assert!(host.made_for(&a) && !host.made_for(&b));
        assert!(!KeyPair::generate(group, &mut rng).made_for(&a));
    }
}
