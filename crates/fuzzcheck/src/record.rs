//! The record layer with known keys: arbitrary bytes never open (at any point of a
//! session), a sealed record changed in any way never opens, a genuine record
//! opens to its plaintext, and a failed open leaves the opener where it was.
//!
//! The keys are derived from the whole input (SHA-256), not fixed: with fixed keys
//! libFuzzer's comparison tracing reads the expected tag out of the constant-time
//! compare and writes it into the next input, a "forgery" no network attacker can
//! make (the first crash of this target, kept in the corpus). With input-derived
//! keys, copying a learned tag into the input changes the keys it is checked with.

use dhke::schedule::Key;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use wire::{Opener, Sealer};

/// The keys of one direction for this input; `reflect` gives the other direction's.
fn keys(input: &[u8], reflect: bool) -> (Key, Key) {
    let derive = |label: &[u8]| {
        let mut h = Sha256::new();
        h.update(label);
        h.update([u8::from(reflect)]);
        h.update(input);
        Key::from_bytes(h.finalize().into())
    };
    (derive(b"enc"), derive(b"mac"))
}

fn pair(input: &[u8]) -> (Sealer, Opener) {
    let (enc, mac) = keys(input, false);
    (Sealer::new(&enc, &mac), Opener::new(&enc, &mac))
}

/// `ctrl | u16_le(plaintext_len) | plaintext | edits`. The whole input is first
/// tried as a forged record after `ctrl & 3` genuine ones; then `plaintext` is
/// sealed and changed by the 4-byte `edits` (`kind, pos_lo, pos_hi, value`).
pub fn record_open(data: &[u8]) {
    let Some((&ctrl, rest)) = data.split_first() else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(u64::from(ctrl));

    // Forgery: whatever the bytes, at whatever sequence number.
    let (mut sealer, mut opener) = pair(data);
    for i in 0..(ctrl & 3) {
        let mut record = sealer.seal(&[i], &mut rng).expect("seal");
        assert_eq!(opener.open(&mut record).expect("genuine record"), [i]);
    }
    let before = opener.sequence();
    let mut forged = rest.to_vec();
    assert!(opener.open(&mut forged).is_err(), "a forged record opened");
    assert_eq!(opener.sequence(), before, "a failed open moved the counter");

    // Tampering with a genuine record.
    let [lo, hi, rest @ ..] = rest else {
        return;
    };
    let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
    let (plaintext, edits) = rest.split_at(len);
    let (mut sealer, mut opener) = pair(data);
    let sealed = sealer.seal(plaintext, &mut rng).expect("seal");
    assert_eq!(sealed.len(), wire::record::sealed_len(plaintext.len()));
    let mut changed = sealed.clone();
    for edit in edits.chunks_exact(4) {
        apply(&mut changed, edit);
    }
    if changed != sealed {
        assert!(
            opener.open(&mut changed).is_err(),
            "a changed record opened"
        );
        assert_eq!(opener.sequence(), 0, "a failed open moved the counter");
    }
    // Reflected (the other direction's keys) and replayed records never open.
    let (enc, mac) = keys(data, true);
    let mut reflected = sealed.clone();
    assert!(Opener::new(&enc, &mac).open(&mut reflected).is_err());
    let mut genuine = sealed.clone();
    assert_eq!(
        opener.open(&mut genuine).expect("genuine record"),
        plaintext
    );
    let mut replayed = sealed;
    assert!(
        opener.open(&mut replayed).is_err(),
        "a replayed record opened"
    );
    // Out of order: record 2 at position 1.
    let _skipped = sealer.seal(b"1", &mut rng).expect("seal");
    let mut second = sealer.seal(b"2", &mut rng).expect("seal");
    assert!(
        opener.open(&mut second).is_err(),
        "a reordered record opened"
    );
}

/// One edit: flip bits, truncate, insert or remove a byte.
fn apply(record: &mut Vec<u8>, edit: &[u8]) {
    let pos = usize::from(u16::from_le_bytes([edit[1], edit[2]]));
    let value = edit[3];
    match edit[0] % 4 {
        0 if !record.is_empty() => {
            let at = pos % record.len();
            record[at] ^= value;
        }
        1 => record.truncate(pos % (record.len() + 1)),
        2 => {
            let at = pos % (record.len() + 1);
            record.insert(at, value);
        }
        3 if !record.is_empty() => {
            record.remove(pos % record.len());
        }
        _ => {}
    }
}
