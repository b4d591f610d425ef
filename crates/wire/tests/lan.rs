//! LAN announcements (docs/protocol.md §14): the known-answer vector, the
//! largest announcement fits one datagram, and arbitrary bytes never panic.

use proptest::prelude::*;
use wire::lan::{
    lan_key, open, seal, Announcement, Dropped, Sieve, INSTANCE_LEN, MAX_ADDRS, MAX_DATAGRAM,
    NONCE_LEN,
};

const NOW: u64 = 1_700_000_000_000;

fn vector_announcement() -> Announcement {
    Announcement {
        instance: [0x11; INSTANCE_LEN],
        name: "alice".into(),
        group: 14,
        public: vec![0xAA, 0xBB],
        listen_port: 40000,
        addrs: vec!["192.168.1.20:40000".parse().unwrap()],
    }
}

/// docs/protocol.md §14 prints these bytes.
const VECTOR_KEY: &str = "9cd7f421e117cfb669c1b73288e342c41a2d22c0c88e210d38092aa8053e428c";
const VECTOR: &str = "5032504c01222222222222222222222222222222220000018bcfe568001111111111111111111111111111111105616c6963650e02aabbfb409c0100c0a80114fb409cc69790cfde585255fa04d58f9965c4655e97825a0c96808122c97da7b576e978";

#[test]
fn known_answer_vector_matches_the_spec() {
    let key = lan_key(&dhke::RoomCode::parse("7-velvet-harbor"));
    let sealed = seal(&key, &vector_announcement(), [0x22; NONCE_LEN], NOW).unwrap();
    // The key is dhke's LAN key (Argon2id, pinned in dhke/tests/vectors.rs and
    // cross-checked there in Python); the MAC pins that `lan_key` uses it.
    let expected_key = dhke::RoomCode::parse("7-velvet-harbor").lan_key();
    assert_eq!(hex::encode(expected_key.expose()), VECTOR_KEY);
    assert_eq!(hex::encode(&sealed), VECTOR);
    let opened = open(&key, &sealed, NOW).unwrap();
    assert_eq!(opened.announcement, vector_announcement());
}

#[test]
fn the_largest_announcement_fits_one_unfragmented_datagram() {
    let key = lan_key(&dhke::RoomCode::parse("r"));
    let ann = Announcement {
        instance: [0xFF; INSTANCE_LEN],
        name: "\u{1F980}".repeat(32),
        group: 15,
        public: vec![0xFF; 384],
        listen_port: u16::MAX,
        addrs: vec!["[ffff::1]:65535".parse().unwrap(); MAX_ADDRS],
    };
    let sealed = seal(&key, &ann, [0; NONCE_LEN], u64::MAX).unwrap();
    assert!(sealed.len() <= MAX_DATAGRAM, "{} bytes", sealed.len());
    assert_eq!(sealed.len(), 758, "docs/protocol.md §14 states this size");
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_dropped_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let mut sieve = Sieve::new(lan_key(&dhke::RoomCode::parse("r")), [0; INSTANCE_LEN]);
        prop_assert!(sieve.accept(&bytes, NOW).is_err());
        prop_assert_eq!(sieve.counts().total(), 1);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_are_dropped(body in proptest::collection::vec(any::<u8>(), 33..1100)) {
        let mut d = Vec::new();
        d.extend_from_slice(&wire::lan::MAGIC);
        d.push(wire::lan::VERSION);
        d.extend_from_slice(&[0; NONCE_LEN]);
        d.extend_from_slice(&NOW.to_be_bytes());
        d.extend_from_slice(&body);
        let key = lan_key(&dhke::RoomCode::parse("r"));
        prop_assert_eq!(open(&key, &d, NOW), Err(Dropped::Mac));
    }
}
