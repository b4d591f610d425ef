//! The record layer (docs/protocol.md §7): AES-256-CBC then HMAC-SHA256 over
//! `u64_be(seq) || iv || ciphertext`, with an implicit per-direction counter.
//!
//! `record = iv (16) || ciphertext (16·k, k ≥ 1) || tag (32)`. The receiver checks
//! lengths, then the tag in constant time, and only then decrypts and unpads, so
//! every failure, padding included, is the same [`RecordError::Integrity`].

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use aes::{Aes256Dec, Aes256Enc};
use dhke::schedule::Key;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::Zeroize;

use crate::peer::MAX_PLAINTEXT;

/// Bytes of the IV in front of each record.
pub const IV_LEN: usize = 16;
/// Bytes of the HMAC-SHA256 tag at the end of each record.
pub const TAG_LEN: usize = 32;
const BLOCK: usize = 16;
/// The shortest valid record: IV, one block, tag.
pub const MIN_RECORD: usize = IV_LEN + BLOCK + TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Why a record could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record was altered, replayed, reordered, truncated, reflected or sent
    /// with other keys. Deliberately one vague error: the session must end.
    #[error("record failed its integrity check")]
    Integrity,
    /// A plaintext over 64 KiB.
    #[error("plaintext of {0} bytes exceeds the 64 KiB record limit")]
    TooLarge(usize),
    /// The sender's counter reached u64::MAX: it never wraps.
    #[error("record sequence number exhausted; start a new session")]
    Exhausted,
}

/// The length of the sealed record for a plaintext of `len` bytes.
pub const fn sealed_len(len: usize) -> usize {
    IV_LEN + (len / BLOCK + 1) * BLOCK + TAG_LEN
}

/// `HMAC(mac_key, u64_be(seq) || iv || ciphertext)`: the one tag formula.
fn record_tag(mac_key: &Key, seq: u64, iv: &[u8], ciphertext: &[u8]) -> [u8; TAG_LEN] {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(mac_key.expose()).expect("HMAC takes any key length");
    mac.update(&seq.to_be_bytes());
    mac.update(iv);
    mac.update(ciphertext);
    mac.finalize().into_bytes().into()
}

/// The sending half of a session: seals records in order.
pub struct Sealer {
    cipher: Aes256Enc,
    mac_key: Key,
    seq: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for one direction's keys, starting at sequence 0.
    pub fn new(enc: &Key, mac: &Key) -> Sealer {
        Sealer {
            cipher: Aes256Enc::new(enc.expose().into()),
            mac_key: mac.clone(),
            seq: 0,
        }
    }

    /// Records sealed so far.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// Seals `plaintext` and appends `iv || ciphertext || tag` to `out`: one copy of
    /// the plaintext, encrypted in place.
    pub fn seal_into(
        &mut self,
        plaintext: &[u8],
        rng: &mut impl CryptoRngCore,
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(RecordError::TooLarge(plaintext.len()));
        }
        let start = out.len();
        out.reserve(sealed_len(plaintext.len()));
        out.resize(start + IV_LEN, 0);
        out.extend_from_slice(plaintext);
        self.seal_in_place(out, start, rng)
            .inspect_err(|_| out.truncate(start))
    }

    /// Seals in place a plaintext the caller has already written into `out`: the
    /// record starts at `out[start]`, where [`IV_LEN`] bytes are reserved for the
    /// IV, and the plaintext is everything after them up to the end of `out`. On
    /// return `out[start..]` is `iv || ciphertext || tag`. This spares the copy of
    /// the plaintext that [`Sealer::seal_into`] makes: a message can be encoded
    /// straight into the output buffer and encrypted where it lies.
    ///
    /// On an error `out` is as it was given (the plaintext still in it). Panics if
    /// `out` is shorter than `start + IV_LEN` (a caller's bug, not bad input).
    pub fn seal_in_place(
        &mut self,
        out: &mut Vec<u8>,
        start: usize,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), RecordError> {
        assert!(
            out.len() >= start + IV_LEN,
            "seal_in_place: room for the IV must be reserved at `start`"
        );
        let len = out.len() - start - IV_LEN;
        if len > MAX_PLAINTEXT {
            return Err(RecordError::TooLarge(len));
        }
        if self.seq == u64::MAX {
            return Err(RecordError::Exhausted);
        }
        let mut iv = [0u8; IV_LEN];
        rng.fill_bytes(&mut iv);
        self.encrypt_and_tag(out, start, len, iv);
        Ok(())
    }

    /// The cipher work of [`Sealer::seal_in_place`], checks done. Not generic, so
    /// it is compiled (and optimised) in this crate whoever calls it.
    fn encrypt_and_tag(&mut self, out: &mut Vec<u8>, start: usize, len: usize, iv: [u8; IV_LEN]) {
        out.resize(start + sealed_len(len) - TAG_LEN, 0);
        let (head, body) = out[start..].split_at_mut(IV_LEN);
        head.copy_from_slice(&iv);
        cbc::Encryptor::<Aes256Enc>::inner_iv_init(self.cipher.clone(), &iv.into())
            .encrypt_padded_mut::<Pkcs7>(body, len)
            .expect("buffer sized for the padded plaintext");
        let tag = record_tag(&self.mac_key, self.seq, &iv, body);
        out.extend_from_slice(&tag);
        self.seq += 1;
    }

    /// Seals `plaintext` into a new record.
    pub fn seal(
        &mut self,
        plaintext: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, RecordError> {
        let mut out = Vec::with_capacity(sealed_len(plaintext.len()));
        self.seal_into(plaintext, rng, &mut out)?;
        Ok(out)
    }
}

/// The receiving half of a session: opens records in order.
pub struct Opener {
    cipher: Aes256Dec,
    mac_key: Key,
    seq: u64,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener for one direction's keys, expecting sequence 0 first.
    pub fn new(enc: &Key, mac: &Key) -> Opener {
        Opener {
            cipher: Aes256Dec::new(enc.expose().into()),
            mac_key: mac.clone(),
            seq: 0,
        }
    }

    /// Records opened so far.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// Verifies and decrypts `record` in place, returning the plaintext within it.
    /// Any failure is [`RecordError::Integrity`] and leaves no plaintext behind.
    pub fn open<'a>(&mut self, record: &'a mut [u8]) -> Result<&'a [u8], RecordError> {
        let len = record.len();
        if len < MIN_RECORD || (len - IV_LEN - TAG_LEN) % BLOCK != 0 || self.seq == u64::MAX {
            return Err(RecordError::Integrity);
        }
        let (iv, rest) = record.split_at_mut(IV_LEN);
        let (body, tag) = rest.split_at_mut(len - IV_LEN - TAG_LEN);
        let expected = record_tag(&self.mac_key, self.seq, iv, body);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().expect("split at TAG_LEN");
        if !dhke::verify_mac(&expected, tag) {
            return Err(RecordError::Integrity);
        }
        let iv: [u8; IV_LEN] = (&*iv).try_into().expect("split at IV_LEN");
        let decrypted = cbc::Decryptor::<Aes256Dec>::inner_iv_init(self.cipher.clone(), &iv.into())
            .decrypt_padded_mut::<Pkcs7>(body)
            .map(|plaintext| plaintext.len());
        let Ok(plaintext_len) = decrypted else {
            // A valid tag with bad padding: the body is decrypted in place by now,
            // so wipe it before reporting the same vague error as a bad tag.
            body.zeroize();
            return Err(RecordError::Integrity);
        };
        self.seq += 1;
        Ok(&body[..plaintext_len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener) {
        let enc = Key::from_bytes([1; 32]);
        let mac = Key::from_bytes([2; 32]);
        (Sealer::new(&enc, &mac), Opener::new(&enc, &mac))
    }

    #[test]
    fn sender_refuses_at_u64_max() {
        let (mut sealer, _) = pair();
        sealer.seq = u64::MAX - 1;
        let mut rng = rand_core::OsRng;
        assert!(sealer.seal(b"last", &mut rng).is_ok());
        assert_eq!(
            sealer.seal(b"one more", &mut rng),
            Err(RecordError::Exhausted)
        );
    }

    /// Hands out the same IV every time, so two ways of sealing can be compared.
    struct FixedIv;

    impl rand_core::RngCore for FixedIv {
        fn next_u32(&mut self) -> u32 {
            7
        }
        fn next_u64(&mut self) -> u64 {
            7
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rand_core::CryptoRng for FixedIv {}

    #[test]
    fn sealing_in_place_gives_the_same_record_as_sealing_a_copy() {
        let (mut copying, mut opener) = pair();
        let (mut in_place, _) = pair();
        for len in [0, 1, 16, 1000, MAX_PLAINTEXT] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut a = b"header".to_vec();
            copying.seal_into(&pt, &mut FixedIv, &mut a).unwrap();
            let mut b = b"header".to_vec();
            b.extend_from_slice(&[0xEE; IV_LEN]);
            b.extend_from_slice(&pt);
            in_place.seal_in_place(&mut b, 6, &mut FixedIv).unwrap();
            assert_eq!(a, b, "{len} bytes");
            assert_eq!(opener.open(&mut a[6..]).unwrap(), &pt[..]);
        }
        // Too long: refused, and the buffer is left as it was.
        let mut big = vec![1u8; IV_LEN + MAX_PLAINTEXT + 1];
        assert_eq!(
            in_place.seal_in_place(&mut big, 0, &mut FixedIv),
            Err(RecordError::TooLarge(MAX_PLAINTEXT + 1))
        );
        assert_eq!(big, vec![1u8; IV_LEN + MAX_PLAINTEXT + 1]);
    }

    #[test]
    fn sealed_len_matches() {
        let (mut sealer, mut opener) = pair();
        let mut rng = rand_core::OsRng;
        for len in [0, 1, 15, 16, 17, 1000, MAX_PLAINTEXT] {
            let pt = vec![7u8; len];
            let mut rec = sealer.seal(&pt, &mut rng).unwrap();
            assert_eq!(rec.len(), sealed_len(len));
            assert_eq!(opener.open(&mut rec).unwrap(), &pt[..]);
        }
        assert_eq!(
            sealer.seal(&vec![0; MAX_PLAINTEXT + 1], &mut rng),
            Err(RecordError::TooLarge(MAX_PLAINTEXT + 1))
        );
    }
}
