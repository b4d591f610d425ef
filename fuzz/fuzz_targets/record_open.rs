//! Arbitrary records into an opener: never a panic, and nothing but a record
//! sealed with the same keys ever opens.
#![no_main]

use dhke::schedule::Key;
use libfuzzer_sys::fuzz_target;
use wire::{Opener, Sealer};

fuzz_target!(|data: &[u8]| {
    let (enc, mac) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
    let mut opener = Opener::new(&enc, &mac);
    let mut record = data.to_vec();
    assert!(opener.open(&mut record).is_err(), "a forged record opened");

    // A genuine record of this plaintext opens, and any one-byte change breaks it.
    let mut sealer = Sealer::new(&enc, &mac);
    let plaintext = &data[..data.len().min(wire::peer::MAX_PLAINTEXT)];
    let sealed = sealer.seal(plaintext, &mut rand_core::OsRng).unwrap();
    let mut good = sealed.clone();
    assert_eq!(Opener::new(&enc, &mac).open(&mut good).unwrap(), plaintext);
    if let Some(&b) = data.first() {
        let mut bad = sealed;
        let pos = b as usize % bad.len();
        bad[pos] ^= 1;
        assert!(Opener::new(&enc, &mac).open(&mut bad).is_err());
    }
});
