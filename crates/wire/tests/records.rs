//! The record layer of docs/protocol.md §7: the format pinned against raw
//! AES-256-CBC and HMAC-SHA256, and every way a record must be refused.

mod common;

use std::collections::HashSet;

use aes::cipher::{
    block_padding::{NoPadding, Pkcs7},
    BlockDecryptMut, BlockEncryptMut, KeyIvInit,
};
use common::*;
use dhke::schedule::Key;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use sha2::Sha256;
use wire::record::{sealed_len, IV_LEN, MIN_RECORD, TAG_LEN};
use wire::{Opener, RecordError, Sealer};

const ENC: [u8; 32] = [0x11; 32];
const MAC: [u8; 32] = [0x22; 32];

fn pair() -> (Sealer, Opener) {
    let (enc, mac) = (Key::from_bytes(ENC), Key::from_bytes(MAC));
    (Sealer::new(&enc, &mac), Opener::new(&enc, &mac))
}

fn opener() -> Opener {
    pair().1
}

/// `HMAC-SHA256(mac_key, u64_be(seq) || iv || ciphertext)`, written from the spec.
fn spec_tag(seq: u64, iv: &[u8], ciphertext: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&MAC).unwrap();
    mac.update(&seq.to_be_bytes());
    mac.update(iv);
    mac.update(ciphertext);
    mac.finalize().into_bytes().into()
}

/// A record built by hand: `iv || ciphertext || spec_tag`.
fn raw_record(seq: u64, iv: [u8; 16], ciphertext: &[u8]) -> Vec<u8> {
    let mut record = iv.to_vec();
    record.extend_from_slice(ciphertext);
    record.extend_from_slice(&spec_tag(seq, &iv, ciphertext));
    record
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn record_format_matches_the_spec() {
    let (mut sealer, _) = pair();
    for (seq, text) in [&b""[..], b"x", b"sixteen bytes!!!", &[7u8; 1000]]
        .into_iter()
        .enumerate()
    {
        let record = sealer.seal(text, &mut OsRng).unwrap();
        assert_eq!(record.len(), sealed_len(text.len()));
        assert_eq!(record.len(), IV_LEN + (text.len() / 16 + 1) * 16 + TAG_LEN);
        let (iv, rest) = record.split_at(IV_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        assert_eq!(tag, spec_tag(seq as u64, iv, ciphertext));
        let mut buf = ciphertext.to_vec();
        let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&ENC, iv)
            .unwrap()
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .unwrap();
        assert_eq!(plain, text);
    }
}

#[test]
fn hand_built_record_opens() {
    // The converse: a record made from the spec with raw primitives is accepted.
    let iv = [0x5a; 16];
    let mut buf = [0u8; 16];
    buf[..5].copy_from_slice(b"hello");
    let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&ENC, &iv)
        .unwrap()
        .encrypt_padded_mut::<Pkcs7>(&mut buf, 5)
        .unwrap()
        .to_vec();
    assert_eq!(ct.len(), 16);
    let mut opener = opener();
    let mut record = raw_record(0, iv, &ct);
    assert_eq!(opener.open(&mut record).unwrap(), b"hello");
}

#[test]
fn every_flipped_byte_is_refused() {
    let (mut sealer, mut opener) = pair();
    let secret = b"attack at dawn";
    let record = sealer.seal(secret, &mut OsRng).unwrap();
    assert_eq!(record.len(), IV_LEN + 16 + TAG_LEN);
    for pos in 0..record.len() {
        for bit in [0x01, 0x80] {
            let mut bad = record.clone();
            bad[pos] ^= bit;
            assert_eq!(
                opener.open(&mut bad),
                Err(RecordError::Integrity),
                "byte {pos} bit {bit:#x}"
            );
            assert!(!contains(&bad, secret), "plaintext left behind");
        }
    }
    // Nothing was consumed by the failures: the untouched record still opens.
    let mut good = record.clone();
    assert_eq!(opener.open(&mut good).unwrap(), secret);
}

#[test]
fn truncated_and_extended_records_are_refused() {
    let (mut sealer, mut opener) = pair();
    let record = sealer.seal(&[3u8; 40], &mut OsRng).unwrap();
    for len in 0..record.len() {
        let mut cut = record[..len].to_vec();
        assert_eq!(opener.open(&mut cut), Err(RecordError::Integrity), "{len}");
    }
    for extra in [1, 16, 32] {
        let mut long = record.clone();
        long.extend(std::iter::repeat(0).take(extra));
        assert_eq!(opener.open(&mut long), Err(RecordError::Integrity));
    }
    assert!(opener.open(&mut record.clone()).is_ok());
}

#[test]
fn replayed_record_is_refused() {
    let (mut sealer, mut opener) = pair();
    let r0 = sealer.seal(b"once", &mut OsRng).unwrap();
    assert_eq!(opener.open(&mut r0.clone()).unwrap(), b"once");
    assert_eq!(opener.open(&mut r0.clone()), Err(RecordError::Integrity));
}

#[test]
fn reordered_records_are_refused() {
    let (mut sealer, mut opener) = pair();
    let r0 = sealer.seal(b"first", &mut OsRng).unwrap();
    let r1 = sealer.seal(b"second", &mut OsRng).unwrap();
    assert_eq!(opener.open(&mut r1.clone()), Err(RecordError::Integrity));
    // In order they are fine.
    let mut in_order = pair().1;
    assert_eq!(in_order.open(&mut r0.clone()).unwrap(), b"first");
    assert_eq!(in_order.open(&mut r1.clone()).unwrap(), b"second");
}

#[test]
fn dropped_record_breaks_the_next() {
    let (mut sealer, mut opener) = pair();
    let r0 = sealer.seal(b"zero", &mut OsRng).unwrap();
    let _dropped = sealer.seal(b"one", &mut OsRng).unwrap();
    let r2 = sealer.seal(b"two", &mut OsRng).unwrap();
    assert_eq!(opener.open(&mut r0.clone()).unwrap(), b"zero");
    assert_eq!(opener.open(&mut r2.clone()), Err(RecordError::Integrity));
}

#[test]
fn record_reflected_to_its_sender_is_refused() {
    let (mut host, mut joiner) = sessions(100);
    let mut record = host.sealer().seal(b"to joiner", &mut OsRng).unwrap();
    // The host's own opener expects joiner->host keys: the echo fails.
    assert_eq!(
        host.opener().open(&mut record.clone()),
        Err(RecordError::Integrity)
    );
    // Same for the joiner, and the real recipient is unaffected.
    let mut back = joiner.sealer().seal(b"to host", &mut OsRng).unwrap();
    assert_eq!(
        joiner.opener().open(&mut back.clone()),
        Err(RecordError::Integrity)
    );
    assert_eq!(joiner.opener().open(&mut record).unwrap(), b"to joiner");
    assert_eq!(host.opener().open(&mut back).unwrap(), b"to host");
}

#[test]
fn bad_ciphertext_lengths_are_refused_without_panic() {
    // Correct tags over ciphertexts of impossible lengths: the length check, not the
    // MAC, must refuse them, and nothing may panic.
    for ct_len in [0usize, 1, 15, 17, 31, 33, 47] {
        let ciphertext = vec![0xC3; ct_len];
        let mut record = raw_record(0, [9; 16], &ciphertext);
        assert_eq!(record.len(), IV_LEN + ct_len + TAG_LEN);
        assert_eq!(
            opener().open(&mut record),
            Err(RecordError::Integrity),
            "ciphertext of {ct_len} bytes"
        );
        // And with a garbage tag.
        let mut garbage = vec![0xA5; IV_LEN + ct_len + TAG_LEN];
        assert_eq!(opener().open(&mut garbage), Err(RecordError::Integrity));
    }
    assert_eq!(MIN_RECORD, IV_LEN + 16 + TAG_LEN);
}

#[test]
fn valid_mac_with_bad_padding_is_the_same_error_as_a_bad_mac() {
    // Blocks whose decryption ends in invalid PKCS#7 padding: 0x00, > 16, or
    // inconsistent padding bytes. Each gets a correct tag, so only the unpadding
    // can fail — and it must fail exactly like a forged tag.
    let bad_last_blocks: [[u8; 16]; 4] = [
        [0x41; 16], // ends in 0x41 = 65 > 16
        {
            let mut b = [0x41; 16];
            b[15] = 0x00;
            b
        },
        {
            let mut b = [0x41; 16];
            b[15] = 0x03;
            b[14] = 0x03;
            b[13] = 0x02;
            b
        },
        {
            let mut b = [0x41; 16];
            b[15] = 0x11;
            b
        },
    ];
    let iv = [0x77; 16];
    for (i, block) in bad_last_blocks.iter().enumerate() {
        let secret = b"two-block secret plaintext here!";
        let mut plain = secret.to_vec();
        plain.extend_from_slice(block);
        let len = plain.len();
        let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(&ENC, &iv)
            .unwrap()
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .unwrap()
            .to_vec();
        let mut record = raw_record(0, iv, &ct);
        let padding_error = opener().open(&mut record).map(<[u8]>::to_vec);
        assert_eq!(padding_error, Err(RecordError::Integrity), "case {i}");
        assert!(
            !contains(&record, secret),
            "case {i}: decrypted plaintext left in the buffer"
        );

        let mut forged = raw_record(0, iv, &ct);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let mac_error = opener().open(&mut forged).map(<[u8]>::to_vec);
        assert_eq!(padding_error, mac_error);
        assert_eq!(
            padding_error.unwrap_err().to_string(),
            mac_error.unwrap_err().to_string()
        );
    }
}

#[test]
fn ten_thousand_seals_have_distinct_ivs() {
    let (mut sealer, _) = pair();
    let mut ivs = HashSet::new();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        out.clear();
        sealer
            .seal_into(b"same text", &mut OsRng, &mut out)
            .unwrap();
        let iv: [u8; 16] = out[..16].try_into().unwrap();
        assert!(ivs.insert(iv), "IV repeated");
    }
    assert_eq!(sealer.sequence(), 10_000);
}

#[test]
fn largest_plaintext_round_trips_and_one_more_byte_is_refused() {
    let (mut sealer, mut opener) = pair();
    let max = wire::peer::MAX_PLAINTEXT;
    let text: Vec<u8> = (0..max).map(|i| (i * 7) as u8).collect();
    let mut record = sealer.seal(&text, &mut OsRng).unwrap();
    // It fits one peer frame.
    assert!(record.len() <= wire::frame::PEER_FRAME_MAX);
    assert_eq!(opener.open(&mut record).unwrap(), &text[..]);
    assert_eq!(
        sealer.seal(&vec![0; max + 1], &mut OsRng),
        Err(RecordError::TooLarge(max + 1))
    );
    // A refused plaintext does not consume a sequence number.
    assert_eq!(sealer.sequence(), 1);
}

#[test]
fn seal_into_appends_after_existing_bytes() {
    let (mut sealer, mut opener) = pair();
    let mut out = b"header".to_vec();
    sealer.seal_into(b"body", &mut OsRng, &mut out).unwrap();
    assert_eq!(&out[..6], b"header");
    assert_eq!(opener.open(&mut out[6..]).unwrap(), b"body");
}

#[test]
fn wrong_keys_are_refused() {
    let (mut sealer, _) = pair();
    let record = sealer.seal(b"hi", &mut OsRng).unwrap();
    let other_mac = Opener::new(&Key::from_bytes(ENC), &Key::from_bytes([0x23; 32]));
    let other_enc = Opener::new(&Key::from_bytes([0x12; 32]), &Key::from_bytes(MAC));
    for mut o in [other_mac, other_enc] {
        let mut r = record.clone();
        match o.open(&mut r) {
            // Another MAC key fails the tag; another encryption key almost surely
            // fails the padding, and if not, gives garbage, never "hi".
            Err(e) => assert_eq!(e, RecordError::Integrity),
            Ok(p) => assert_ne!(p, b"hi"),
        }
    }
}

#[test]
fn records_sealed_together_are_each_the_record_of_the_spec() {
    // Sealing several records at once (interleaving their CBC chains) changes
    // nothing on the wire: each is the record `seal` would make, in order, and
    // the bytes between them are left alone. Eleven records: a group of eight
    // lanes and a shorter one, lengths mixed so lanes end at different blocks.
    use wire::peer::{MAX_FILE_CHUNK, MAX_PLAINTEXT};
    let (mut sealer, mut opener) = pair();
    let lens = [
        MAX_FILE_CHUNK + 20,
        0,
        1,
        15,
        16,
        17,
        1000,
        MAX_PLAINTEXT,
        31,
        MAX_PLAINTEXT - 1,
        5,
    ];
    let plaintexts: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|b| (b * 31 + i) as u8).collect())
        .collect();
    let mut out = Vec::new();
    let mut slots = Vec::new();
    for pt in &plaintexts {
        out.extend_from_slice(b"head");
        let start = out.len();
        out.resize(start + IV_LEN, 0);
        out.extend_from_slice(pt);
        slots.push(wire::record::slot(&mut out, start).unwrap());
    }
    sealer.seal_slots(&mut out, &slots, &mut OsRng).unwrap();
    assert_eq!(sealer.sequence(), lens.len() as u64);
    for (seq, (slot, pt)) in slots.iter().zip(&plaintexts).enumerate() {
        assert_eq!(&out[slot.start() - 4..slot.start()], b"head");
        let record = &out[slot.start()..slot.end()];
        assert_eq!(record.len(), sealed_len(pt.len()));
        let (iv, rest) = record.split_at(IV_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        assert_eq!(tag, spec_tag(seq as u64, iv, ciphertext), "record {seq}");
        let mut buf = ciphertext.to_vec();
        let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&ENC, iv)
            .unwrap()
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .unwrap();
        assert_eq!(plain, &pt[..], "record {seq}");
        let mut copy = record.to_vec();
        assert_eq!(opener.open(&mut copy).unwrap(), &pt[..]);
    }
    // A plaintext over the record limit gets no slot.
    let mut big = vec![0u8; IV_LEN + MAX_PLAINTEXT + 1];
    assert_eq!(
        wire::record::slot(&mut big, 0).unwrap_err(),
        RecordError::TooLarge(MAX_PLAINTEXT + 1)
    );
}

#[test]
fn records_encrypted_ahead_take_their_number_when_tagged() {
    // File chunks are encrypted a batch at a time and tagged as each leaves, so
    // a chat record sealed in between takes the next number and the receiver,
    // who opens in the order sent, accepts them all.
    let (mut sealer, mut opener) = pair();
    let mut batch = Vec::new();
    let mut slots = Vec::new();
    for i in 0..3u8 {
        let start = batch.len();
        batch.resize(start + IV_LEN, 0);
        batch.extend_from_slice(&[i; 5000]);
        slots.push(wire::record::slot(&mut batch, start).unwrap());
    }
    let mut encrypted = std::collections::VecDeque::new();
    sealer.encrypt_slots(&mut batch, &slots, &mut OsRng, &mut encrypted);
    assert_eq!(sealer.sequence(), 0, "encrypting takes no number");
    let mut sent: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let first = encrypted.pop_front().unwrap();
    let (start, end) = (first.start(), first.end());
    sealer.tag(&mut batch, first).unwrap();
    sent.push((batch[start..end].to_vec(), vec![0; 5000]));
    sent.push((sealer.seal(b"chat", &mut OsRng).unwrap(), b"chat".to_vec()));
    for (i, record) in encrypted.into_iter().enumerate() {
        let (start, end) = (record.start(), record.end());
        sealer.tag(&mut batch, record).unwrap();
        sent.push((batch[start..end].to_vec(), vec![i as u8 + 1; 5000]));
    }
    for (seq, (mut record, plain)) in sent.into_iter().enumerate() {
        let (iv, rest) = record.split_at(IV_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        assert_eq!(tag, spec_tag(seq as u64, iv, ciphertext), "record {seq}");
        assert_eq!(
            opener.open(&mut record).unwrap(),
            &plain[..],
            "record {seq}"
        );
    }
}
