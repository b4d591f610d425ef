//! LAN announcements (docs/protocol.md §14): the known-answer vectors (room
//! announcement §14.3, presence announcement §14.4), the largest announcement
//! fits one datagram, and arbitrary bytes never panic.

use proptest::prelude::*;
use wire::lan::{
    lan_key, open, open_presence, presence_epoch, presence_key, presence_tag, seal, seal_presence,
    Announcement, Dropped, Presence, PresenceSieve, Sieve, INSTANCE_LEN, MAX_ADDRS, MAX_DATAGRAM,
    NONCE_LEN, PRESENCE_ID_LEN,
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

/// docs/protocol.md §14.4 prints these, computed independently with Python's
/// `hmac`/`hashlib` (none of our code): contact secrets 32 × `41` and 32 × `42`,
/// sender id 16 × `11`, at 1 700 000 000 000 ms.
const PRESENCE_KEY_A: &str = "9135fc27643d953ae8fb27487470f6f4e29fcba63e0b5afd228c376581381021";
const PRESENCE_KEY_B: &str = "0a3017ef36cd392408dc0073783555c67bdad2e7f653ecd7f1880e7c1af7757a";
const PRESENCE_TAG_A: &str = "704065abf6586fadc8910ed1964acc52";
const PRESENCE_TAG_B: &str = "b364973c8b824fdb27bac0f7778366e9";
const PRESENCE_VECTOR: &str = "50325050011111111111111111111111111111111101b0551502704065abf6586fadc8910ed1964acc52b364973c8b824fdb27bac0f7778366e9";

#[test]
fn presence_known_answer_vector_matches_the_spec() {
    let (a, b) = (presence_key(&[0x41; 32]), presence_key(&[0x42; 32]));
    assert_eq!(hex::encode(a.expose()), PRESENCE_KEY_A);
    assert_eq!(hex::encode(b.expose()), PRESENCE_KEY_B);
    let id = [0x11; PRESENCE_ID_LEN];
    let epoch = presence_epoch(NOW);
    assert_eq!(epoch, 28_333_333);
    let tags = vec![presence_tag(&a, &id, epoch), presence_tag(&b, &id, epoch)];
    assert_eq!(hex::encode(tags[0]), PRESENCE_TAG_A);
    assert_eq!(hex::encode(tags[1]), PRESENCE_TAG_B);
    let presence = Presence { id, epoch, tags };
    let sealed = seal_presence(&presence).unwrap();
    assert_eq!(hex::encode(&sealed), PRESENCE_VECTOR);
    assert_eq!(open_presence(&sealed, NOW), Ok(presence));
    // The holder of secret 42 recognises it as its contact 1; the holder of
    // neither secret learns nothing.
    let mut holder = PresenceSieve::new(vec![presence_key(&[0x43; 32]), presence_key(&[0x42; 32])]);
    assert_eq!(holder.accept(&sealed, NOW).unwrap().fresh, vec![1]);
    let mut stranger = PresenceSieve::new(vec![presence_key(&[0x43; 32])]);
    assert_eq!(stranger.accept(&sealed, NOW), Err(Dropped::Mac));
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

    #[test]
    fn arbitrary_bytes_are_no_presence_announcement_of_ours(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let mut sieve = PresenceSieve::new(vec![presence_key(&[1; 32])]);
        prop_assert!(sieve.accept(&bytes, NOW).is_err());
        prop_assert_eq!(sieve.counts().total(), 1);
    }

    #[test]
    fn random_tags_behind_a_valid_presence_header_match_nobody(
        id in any::<[u8; PRESENCE_ID_LEN]>(),
        tags in proptest::collection::vec(any::<[u8; 16]>(), 1..=64),
    ) {
        let d = seal_presence(&Presence { id, epoch: presence_epoch(NOW), tags }).unwrap();
        let mut sieve = PresenceSieve::new(vec![presence_key(&[1; 32]), presence_key(&[2; 32])]);
        prop_assert_eq!(sieve.accept(&d, NOW), Err(Dropped::Mac));
    }
}
