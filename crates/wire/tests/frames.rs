//! Frames and message decoding (docs/protocol.md §1, §2, §4, §6, §7): length bounds
//! checked before allocation, the bincode bomb, trailing bytes, a round trip of
//! every message variant, and pinned bytes so the wire format cannot drift.

use std::net::{Ipv6Addr, SocketAddr};

use bytes::BytesMut;
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::codec::{Decoder, Encoder};
use wire::encoding::DECODE_LIMIT;
use wire::frame::{MEDIATOR_FRAME_MAX, PEER_FRAME_MAX};
use wire::group::{Catchup, GroupBody, GroupMsg, Roster, RosterEntry, Summary};
use wire::{
    decode, encode, ClientMsg, DecodeError, ErrorCode, FrameCodec, FrameError, Link, MediatorMsg,
    PathLabel, PeerHandshake, PeerMsg, RelayOffer, Role,
};

// ---------------------------------------------------------------------------
// Frame lengths
// ---------------------------------------------------------------------------

/// Feeds `header` (plus a few payload bytes) to a codec and returns the error and
/// the buffer's capacity afterwards.
fn decode_header(link: Link, header: u32) -> (Result<Option<BytesMut>, FrameError>, usize) {
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&header.to_be_bytes());
    buf.extend_from_slice(b"abc");
    let result = FrameCodec::new(link).decode(&mut buf);
    (result, buf.capacity())
}

#[test]
fn zero_length_frame_is_refused() {
    for link in [Link::Mediator, Link::Peer] {
        let (result, capacity) = decode_header(link, 0);
        assert!(matches!(result, Err(FrameError::Empty)), "{result:?}");
        assert!(capacity <= 64);
    }
}

#[test]
fn huge_length_is_refused_before_allocation() {
    for link in [Link::Mediator, Link::Peer] {
        let (result, capacity) = decode_header(link, u32::MAX);
        assert!(
            matches!(
                result,
                Err(FrameError::TooLarge { len, max }) if len == u32::MAX as usize && max == link.max_payload()
            ),
            "{result:?}"
        );
        // Nothing was reserved for the announced 4 GiB.
        assert!(capacity <= 64, "buffer grew to {capacity} bytes");
    }
}

#[test]
fn one_past_the_bound_is_refused_on_each_link() {
    for (link, max) in [
        (Link::Mediator, MEDIATOR_FRAME_MAX),
        (Link::Peer, PEER_FRAME_MAX),
    ] {
        let (result, capacity) = decode_header(link, max as u32 + 1);
        assert!(matches!(result, Err(FrameError::TooLarge { .. })));
        assert!(capacity <= 64);
        // The bound itself is allowed: the codec waits for the payload.
        let (result, _) = decode_header(link, max as u32);
        assert!(matches!(result, Ok(None)));
        // And the encoder refuses to produce an oversize frame.
        let mut out = BytesMut::new();
        assert!(FrameCodec::new(link)
            .encode(&vec![0u8; max + 1][..], &mut out)
            .is_err());
        assert!(out.is_empty());
    }
    assert!(matches!(
        Link::Mediator.parse_header((MEDIATOR_FRAME_MAX as u32 + 1).to_be_bytes()),
        Err(FrameError::TooLarge { len, max }) if len == MEDIATOR_FRAME_MAX + 1 && max == MEDIATOR_FRAME_MAX
    ));
}

#[test]
fn several_frames_in_one_buffer() {
    let mut codec = FrameCodec::new(Link::Peer);
    let mut buf = BytesMut::new();
    codec.encode(&b"one"[..], &mut buf).unwrap();
    codec.encode(b"two!".to_vec(), &mut buf).unwrap();
    assert_eq!(&buf[..], b"\0\0\0\x03one\0\0\0\x04two!");
    assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"one");
    assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"two!");
    assert!(codec.decode(&mut buf).unwrap().is_none());
    // A lone partial header waits.
    buf.extend_from_slice(&[0, 0]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
}

// ---------------------------------------------------------------------------
// bincode: the bomb, trailing bytes, the limit
// ---------------------------------------------------------------------------

/// bincode 2 varint for a u64 ≥ 2^32: marker 253, then 8 bytes little-endian.
fn varint_u64(v: u64) -> Vec<u8> {
    let mut out = vec![253];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

const TERA: u64 = 1 << 40;

fn assert_malformed<T: DeserializeOwned + std::fmt::Debug>(payload: &[u8]) {
    match decode::<T>(payload) {
        Err(DecodeError::Malformed(_)) => {}
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn nine_byte_string_bomb_is_an_error() {
    let bomb = varint_u64(TERA);
    assert_eq!(bomb.len(), 9);
    assert_eq!(bomb, [253, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_malformed::<String>(&bomb);
    assert_malformed::<Vec<u8>>(&bomb);
    assert_malformed::<String>(&varint_u64(u64::MAX));
}

#[test]
fn bomb_inside_a_client_hello_is_an_error() {
    // Hello = variant 0, version 1, 32 raw room bytes, then the name's length.
    let mut prefix = vec![0u8, 1];
    prefix.extend_from_slice(&[0xAB; 32]);

    let mut name_bomb = prefix.clone();
    name_bomb.extend(varint_u64(TERA));
    assert_malformed::<ClientMsg>(&name_bomb);

    // ...name "ab", group 15, then the public value's length.
    let mut public_bomb = prefix.clone();
    public_bomb.extend_from_slice(&[2, b'a', b'b', 15]);
    public_bomb.extend(varint_u64(TERA));
    assert_malformed::<ClientMsg>(&public_bomb);

    // ...empty public, port 0, then the address list's length.
    let mut addrs_bomb = prefix;
    addrs_bomb.extend_from_slice(&[2, b'a', b'b', 15, 0, 0]);
    addrs_bomb.extend(varint_u64(TERA));
    assert_malformed::<ClientMsg>(&addrs_bomb);
}

#[test]
fn bombs_in_peer_messages_are_errors() {
    // Chat { id: 1, sent_at_ms: 2, text: <2^40 bytes> }
    let mut chat = vec![0u8, 1, 2];
    chat.extend(varint_u64(TERA));
    assert_malformed::<PeerMsg>(&chat);
    // FileChunk { id: 1, offset: 0, data: <2^40 bytes> }
    let mut chunk = vec![7u8, 1, 0];
    chunk.extend(varint_u64(TERA));
    assert_malformed::<PeerMsg>(&chunk);
    // Reject { reason: <2^40 bytes> }
    let mut reject = vec![3u8];
    reject.extend(varint_u64(TERA));
    assert_malformed::<PeerHandshake>(&reject);
    // PeerHello with a public value claiming 2^40 bytes.
    let mut hello = vec![0u8];
    hello.extend_from_slice(&[0; 32]);
    hello.extend(varint_u64(TERA));
    assert_malformed::<PeerHandshake>(&hello);
    // MediatorMsg::Matched { role: Host, peer_name: <2^40 bytes> }
    let mut matched = vec![1u8, 0];
    matched.extend(varint_u64(TERA));
    assert_malformed::<MediatorMsg>(&matched);
}

#[test]
fn length_just_over_the_limit_is_refused() {
    // A string claiming DECODE_LIMIT + 1 bytes with that many bytes present would
    // need a payload over the limit; claiming it with few bytes present is malformed.
    let claim = (DECODE_LIMIT + 1) as u32;
    let mut payload = vec![252];
    payload.extend_from_slice(&claim.to_le_bytes());
    payload.extend_from_slice(b"short");
    assert_malformed::<String>(&payload);
    let oversize = vec![0u8; DECODE_LIMIT + 1];
    assert!(matches!(
        decode::<Vec<u8>>(&oversize),
        Err(DecodeError::TooLong(n)) if n == DECODE_LIMIT + 1
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut ping = encode(&ClientMsg::Ping).unwrap();
    ping.push(0);
    assert!(matches!(
        decode::<ClientMsg>(&ping),
        Err(DecodeError::Trailing(1))
    ));
    let mut ack = encode(&PeerMsg::Ack { id: 300 }).unwrap();
    ack.extend_from_slice(&[1, 2, 3]);
    assert!(matches!(
        decode::<PeerMsg>(&ack),
        Err(DecodeError::Trailing(3))
    ));
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    assert_malformed::<ClientMsg>(&[]);
    assert_malformed::<MediatorMsg>(&[0xFF; 3]);
    assert_malformed::<PeerHandshake>(&[1, 0, 0]); // truncated HostConfirm
    assert_malformed::<String>(&[2, 0xC3, 0x28]); // invalid UTF-8
    assert_malformed::<PeerHandshake>(&{
        // HostConfirm with resumed = 2: not a bool.
        let mut v = vec![1u8];
        v.extend_from_slice(&[0; 64]);
        v.push(2);
        v
    });
}

#[test]
fn encode_refuses_messages_over_the_limit() {
    let big = PeerMsg::FileChunk {
        id: 1,
        offset: 0,
        data: vec![0; DECODE_LIMIT + 1],
    };
    assert!(encode(&big).is_err());
    let mut out = b"keep".to_vec();
    assert!(wire::encode_into(&big, &mut out).is_err());
    assert_eq!(out, b"keep", "a failed encode leaves the buffer as it was");
}

// ---------------------------------------------------------------------------
// Round trips and pinned bytes
// ---------------------------------------------------------------------------

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T) {
    let bytes = encode(msg).unwrap();
    let back: T = decode(&bytes).unwrap();
    assert_eq!(&back, msg);
}

fn v4() -> SocketAddr {
    "203.0.113.7:50000".parse().unwrap()
}

fn v6() -> SocketAddr {
    "[2001:db8::1]:443".parse().unwrap()
}

// Every variant of each message enum. Each enum has an index function, an
// exhaustive `match` with no wildcard: a new variant does not compile until it is
// listed there with its wire index, and then `check_every_variant` fails until the
// enum's example list has that variant too.

/// A payload long enough for any variant's fields when they are all zero (zero is a
/// valid varint, length, bool, `None`, array byte, `V4`, first enum variant).
const ZEROS: usize = 1024;

/// Whether `index` (one varint byte) followed by zeros names a variant of `T`: a
/// known variant decodes (with trailing bytes left over at most), an unknown one is
/// refused as malformed, by serde's "variant index" check.
fn is_variant<T: DeserializeOwned + std::fmt::Debug>(index: u8) -> bool {
    let mut payload = vec![index];
    payload.resize(1 + ZEROS, 0);
    match decode::<T>(&payload) {
        Err(DecodeError::Malformed(e)) => {
            assert!(e.contains("variant index"), "{index}: {e}");
            false
        }
        Ok(_) | Err(DecodeError::Trailing(_)) => true,
        Err(e) => panic!("variant {index}: {e:?}"),
    }
}

/// The first index that is no variant of `T`, by decoding: every index below it is
/// a variant, none from it up to 250 (the largest one-byte varint) is.
fn first_unknown_variant<T: DeserializeOwned + std::fmt::Debug>() -> u8 {
    let n = (0..=250u8)
        .find(|&i| !is_variant::<T>(i))
        .expect("fewer than 251 variants");
    for i in n..=250 {
        assert!(!is_variant::<T>(i), "index {i} decodes, {n} does not");
    }
    n
}

/// Round-trips every example; checks each encodes with its variant's wire index
/// as its first byte, and that the examples cover every variant the decoder
/// knows (indices `0..first_unknown_variant`), none missing.
fn check_every_variant<T>(examples: &[T], index: fn(&T) -> u8)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut covered = std::collections::BTreeSet::new();
    for msg in examples {
        round_trip(msg);
        let bytes = encode(msg).unwrap();
        assert_eq!(bytes[0], index(msg), "wire index of {msg:?}");
        covered.insert(index(msg));
    }
    let known: std::collections::BTreeSet<u8> = (0..first_unknown_variant::<T>()).collect();
    assert_eq!(
        covered,
        known,
        "the examples of {} must cover every variant",
        std::any::type_name::<T>()
    );
}

/// docs/protocol.md §4, §12, §19.
fn client_msg_index(msg: &ClientMsg) -> u8 {
    match msg {
        ClientMsg::Hello { .. } => 0,
        ClientMsg::Ping => 1,
        ClientMsg::PunchPong { .. } => 2,
        ClientMsg::RelayJoin { .. } => 3,
        ClientMsg::Allocate => 4,
        ClientMsg::GroupHello { .. } => 5,
        ClientMsg::SessionPath { .. } => 6,
        ClientMsg::Presence { .. } => 7,
        ClientMsg::MailboxOpen { .. } => 8,
        ClientMsg::MailboxAdd { .. } => 9,
        ClientMsg::MailboxFetch { .. } => 10,
        ClientMsg::MailboxRemove { .. } => 11,
    }
}

fn client_msgs() -> Vec<ClientMsg> {
    vec![
        ClientMsg::Ping,
        ClientMsg::Hello {
            version: wire::PROTOCOL_VERSION,
            room: [7; 32],
            name: "Zoë 🦀".into(),
            group: 15,
            public: vec![0xEE; 384],
            listen_port: 40_000,
            local_addrs: vec![v4(), v6(), "[fe80::1]:1".parse().unwrap()],
            no_relay: true,
        },
        ClientMsg::PunchPong { nonce: 7 },
        ClientMsg::RelayJoin { token: [9; 32] },
        ClientMsg::Allocate,
        ClientMsg::GroupHello {
            version: wire::PROTOCOL_VERSION,
            room: [8; 32],
            name: "carol".into(),
            group: 15,
            public: vec![0xEF; 384],
            listen_port: 0,
            local_addrs: vec![v6()],
            no_relay: false,
        },
        ClientMsg::SessionPath {
            path: PathLabel::Punched,
        },
        ClientMsg::Presence {
            tags: vec![[0x33; 32]; wire::MAX_PRESENCE_BATCH],
        },
        ClientMsg::MailboxOpen {
            queue: [1; 32],
            add_key: [2; 32],
            read_key: [3; 32],
            at: 1_800_000_000,
            sig: wire::Signature64([4; 64]),
        },
        ClientMsg::MailboxAdd {
            queue: [1; 32],
            add_key: [2; 32],
            at: u64::MAX,
            item: vec![5; wire::mailbox::MAX_ITEM],
            sig: wire::Signature64([6; 64]),
        },
        ClientMsg::MailboxFetch {
            queue: [1; 32],
            at: 0,
            sig: wire::Signature64([7; 64]),
        },
        ClientMsg::MailboxRemove {
            queue: [1; 32],
            at: 9,
            ids: vec![[8; 16]; wire::mailbox::MAX_REMOVE],
            sig: wire::Signature64([9; 64]),
        },
    ]
}

/// docs/protocol.md §4, §12, §19.
fn mediator_msg_index(msg: &MediatorMsg) -> u8 {
    match msg {
        MediatorMsg::Waiting { .. } => 0,
        MediatorMsg::Matched { .. } => 1,
        MediatorMsg::Pong => 2,
        MediatorMsg::Error { .. } => 3,
        MediatorMsg::PunchPing { .. } => 4,
        MediatorMsg::PunchNow => 5,
        MediatorMsg::RelayReady => 6,
        MediatorMsg::Allocated { .. } => 7,
        MediatorMsg::GroupJoined { .. } => 8,
        MediatorMsg::Member { .. } => 9,
        MediatorMsg::MemberLeft { .. } => 10,
        MediatorMsg::Present { .. } => 11,
        MediatorMsg::Ring { .. } => 12,
        MediatorMsg::MailboxOpened { .. } => 13,
        MediatorMsg::MailboxStored { .. } => 14,
        MediatorMsg::MailboxItems { .. } => 15,
        MediatorMsg::MailboxRemoved { .. } => 16,
    }
}

fn mediator_msgs() -> Vec<MediatorMsg> {
    let mut msgs = vec![MediatorMsg::Waiting {
        expires_in_secs: 600,
    }];
    for role in [Role::Host, Role::Joiner] {
        msgs.push(MediatorMsg::Matched {
            role,
            peer_name: "bob".into(),
            public: vec![1; 256],
            observed_addr: v6(),
            listen_port: 0,
            local_addrs: vec![],
            your_addr: v4(),
            relay: RelayOffer::Offered {
                token: [5; 32],
                server: "relay.example.org:7070".into(),
            },
        });
    }
    for relay in [
        RelayOffer::RefusedByYou,
        RelayOffer::RefusedByPeer,
        RelayOffer::Off,
    ] {
        msgs.push(MediatorMsg::Matched {
            role: Role::Host,
            peer_name: "a".into(),
            public: vec![1],
            observed_addr: v4(),
            listen_port: 1,
            local_addrs: vec![v4()],
            your_addr: v6(),
            relay,
        });
    }
    msgs.extend([
        MediatorMsg::Pong,
        MediatorMsg::PunchPing { nonce: u64::MAX },
        MediatorMsg::PunchNow,
        MediatorMsg::RelayReady,
        MediatorMsg::Allocated { nameplate: 999_999 },
    ]);
    for code in ErrorCode::ALL {
        msgs.push(MediatorMsg::Error {
            code,
            message: code.as_str().into(),
        });
    }
    msgs.push(MediatorMsg::GroupJoined {
        member: 3,
        present: 2,
        max_members: 16,
    });
    for (role, relay) in [
        (Role::Host, RelayOffer::Off),
        (
            Role::Joiner,
            RelayOffer::Offered {
                token: [6; 32],
                server: String::new(),
            },
        ),
    ] {
        msgs.push(MediatorMsg::Member {
            member: u32::MAX,
            role,
            peer_name: "dave".into(),
            public: vec![2; 384],
            observed_addr: v4(),
            listen_port: 40_001,
            local_addrs: vec![v4(), v6()],
            your_addr: v6(),
            relay,
        });
    }
    msgs.push(MediatorMsg::MemberLeft { member: 300 });
    msgs.push(MediatorMsg::Present { tags: 1024 });
    msgs.push(MediatorMsg::Ring { tag: [0x44; 32] });
    msgs.push(MediatorMsg::MailboxOpened { items: 3 });
    msgs.push(MediatorMsg::MailboxStored {
        id: [0x55; 16],
        expires_unix: 1_800_604_800,
    });
    msgs.push(MediatorMsg::MailboxItems {
        items: vec![wire::mailbox::StoredItem {
            id: [0x66; 16],
            sealed: vec![0x77; wire::mailbox::MAX_ITEMS_BYTES],
            expires_unix: 1,
        }],
        more: true,
    });
    msgs.push(MediatorMsg::MailboxRemoved { removed: 256 });
    msgs
}

/// docs/protocol.md §6, §16.
fn peer_handshake_index(msg: &PeerHandshake) -> u8 {
    match msg {
        PeerHandshake::PeerHello { .. } => 0,
        PeerHandshake::HostConfirm { .. } => 1,
        PeerHandshake::JoinerConfirm { .. } => 2,
        PeerHandshake::Reject { .. } => 3,
        PeerHandshake::TokenHello { .. } => 4,
        PeerHandshake::TokenWelcome { .. } => 5,
    }
}

fn peer_handshakes() -> Vec<PeerHandshake> {
    vec![
        PeerHandshake::PeerHello {
            room: [1; 32],
            public: vec![2; 384],
            commit: [3; 32],
            resume: Some([4; 32]),
            identity: [9; 32],
        },
        PeerHandshake::PeerHello {
            room: [1; 32],
            public: vec![2; 256],
            commit: [3; 32],
            resume: None,
            identity: [9; 32],
        },
        PeerHandshake::HostConfirm {
            nonce: [5; 32],
            mac: [6; 32],
            resumed: true,
            identity: [9; 32],
            signature: wire::Signature64([10; 64]),
        },
        PeerHandshake::JoinerConfirm {
            nonce: [7; 32],
            mac: [8; 32],
            signature: wire::Signature64([11; 64]),
        },
        PeerHandshake::Reject {
            reason: "wrong room".into(),
        },
        PeerHandshake::TokenHello {
            tag: [12; 32],
            name: "erin".into(),
            group: 14,
            public: vec![13; 256],
        },
        PeerHandshake::TokenWelcome {
            name: "frank".into(),
            public: vec![14; 384],
        },
    ]
}

/// docs/protocol.md §7, §16.3, §19.
fn peer_msg_index(msg: &PeerMsg) -> u8 {
    match msg {
        PeerMsg::Chat { .. } => 0,
        PeerMsg::Ack { .. } => 1,
        PeerMsg::Ping { .. } => 2,
        PeerMsg::Pong { .. } => 3,
        PeerMsg::FileOffer { .. } => 4,
        PeerMsg::FileAccept { .. } => 5,
        PeerMsg::FileReject { .. } => 6,
        PeerMsg::FileChunk { .. } => 7,
        PeerMsg::FileDone { .. } => 8,
        PeerMsg::FileCancel { .. } => 9,
        PeerMsg::Bye { .. } => 10,
        PeerMsg::Admitted => 11,
        PeerMsg::Denied { .. } => 12,
        PeerMsg::Group(_) => 13,
        PeerMsg::GroupSummary(_) => 14,
        PeerMsg::GroupCatchup(_) => 15,
        PeerMsg::Roster(_) => 16,
        PeerMsg::Expelled { .. } => 17,
        PeerMsg::Equivocation(_) => 18,
        PeerMsg::Read { .. } => 19,
    }
}

fn peer_msgs() -> Vec<PeerMsg> {
    let group_msg = |seq, text: &str| GroupMsg {
        body: GroupBody {
            conversation: [0x21; 32],
            author: [0x22; 32],
            seq,
            clock: vec![([0x23; 32], 4), ([0x24; 32], u64::MAX)],
            sent_at_ms: 1_700_000_000_000,
            text: text.into(),
        },
        signature: wire::Signature64([0x25; 64]),
    };
    vec![
        PeerMsg::Chat {
            id: 1,
            sent_at_ms: 1_700_000_000_000,
            text: "héllo\nworld".into(),
        },
        PeerMsg::Ack { id: u64::MAX },
        PeerMsg::Ping { nonce: 0 },
        PeerMsg::Pong { nonce: 250 },
        PeerMsg::FileOffer {
            id: 2,
            name: "photo.jpg".into(),
            size: 1 << 33,
        },
        PeerMsg::FileAccept { id: 2, offset: 0 },
        PeerMsg::FileReject { id: 3 },
        PeerMsg::FileChunk {
            id: 2,
            offset: 65_472,
            data: vec![0xAB; wire::peer::MAX_FILE_CHUNK],
        },
        PeerMsg::FileDone {
            id: 2,
            blake3: [0x5C; 32],
        },
        PeerMsg::FileCancel { id: 4 },
        PeerMsg::Bye {
            reason: "quit".into(),
        },
        PeerMsg::Admitted,
        PeerMsg::Denied {
            reason: "not today".into(),
        },
        PeerMsg::Group(group_msg(1, "hi all")),
        PeerMsg::GroupSummary(Summary {
            have: vec![([0x22; 32], 7), ([0x26; 32], 1)],
        }),
        PeerMsg::GroupSummary(Summary::default()),
        PeerMsg::GroupCatchup(Catchup {
            have: vec![([0x22; 32], 5)],
            floor: vec![([0x22; 32], 3)],
            msgs: vec![group_msg(4, "four"), group_msg(5, "")],
            more: true,
        }),
        PeerMsg::GroupCatchup(Catchup::default()),
        PeerMsg::Roster(Roster {
            members: vec![
                RosterEntry {
                    member: 0,
                    identity: [0x27; 32],
                    name: "grace".into(),
                },
                RosterEntry {
                    member: 15,
                    identity: [0x28; 32],
                    name: "Zoë 🦀".into(),
                },
            ],
        }),
        PeerMsg::Expelled {
            identity: [0x29; 32],
            reason: "equivocation".into(),
        },
        PeerMsg::Equivocation(Box::new(wire::group::EquivocationProof {
            first: group_msg(6, "one"),
            second: group_msg(6, "another"),
        })),
        PeerMsg::Read { seq: 300 },
    ]
}

#[test]
fn pinned_read_receipt() {
    // docs/protocol.md §7.1: variant 19, then the seq as a varint.
    assert_eq!(encode(&PeerMsg::Read { seq: 3 }).unwrap(), [19, 3]);
    assert_eq!(
        encode(&PeerMsg::Read { seq: 300 }).unwrap(),
        [19, 251, 0x2c, 0x01]
    );
}

#[test]
fn every_client_message_round_trips() {
    check_every_variant(&client_msgs(), client_msg_index);
}

#[test]
fn every_mediator_message_round_trips() {
    check_every_variant(&mediator_msgs(), mediator_msg_index);
}

#[test]
fn every_peer_handshake_message_round_trips() {
    check_every_variant(&peer_handshakes(), peer_handshake_index);
}

#[test]
fn every_peer_message_round_trips() {
    check_every_variant(&peer_msgs(), peer_msg_index);
}

/// The first index past the last variant of `T` (one more than the largest index
/// its examples use), alone, followed by a valid-looking body, and as the largest
/// one-byte varint and a multi-byte varint: each refused as malformed.
fn check_unknown_variants_refused<T: DeserializeOwned + std::fmt::Debug>(
    examples: &[T],
    index: fn(&T) -> u8,
) {
    let first_unknown = examples.iter().map(index).max().expect("examples") + 1;
    let mut followed = vec![first_unknown];
    followed.resize(1 + ZEROS, 0);
    for payload in [
        vec![first_unknown],
        followed,
        vec![250],
        vec![251, 0x00, 0x01], // varint 256
        vec![252, 0xFF, 0xFF, 0xFF, 0xFF],
    ] {
        match decode::<T>(&payload) {
            Err(DecodeError::Malformed(e)) => assert!(e.contains("variant index"), "{e}"),
            other => panic!(
                "{}: {:?}: expected an unknown variant, got {other:?}",
                std::any::type_name::<T>(),
                &payload[..payload.len().min(8)]
            ),
        }
    }
}

#[test]
fn unknown_variants_are_refused() {
    check_unknown_variants_refused(&client_msgs(), client_msg_index);
    check_unknown_variants_refused(&mediator_msgs(), mediator_msg_index);
    check_unknown_variants_refused(&peer_handshakes(), peer_handshake_index);
    check_unknown_variants_refused(&peer_msgs(), peer_msg_index);
}

#[test]
fn largest_file_chunk_fits_a_record() {
    let msg = PeerMsg::FileChunk {
        id: u64::MAX,
        offset: u64::MAX,
        data: vec![0; wire::peer::MAX_FILE_CHUNK],
    };
    assert!(encode(&msg).unwrap().len() <= wire::peer::MAX_PLAINTEXT);
}

// Pinned bytes. bincode 2 `standard()` with serde, by its rules:
// - enum variant: its index as a varint (u32);
// - integers u16..u64: varint — < 251 in one byte; 251 + u16 LE; 252 + u32 LE;
//   253 + u64 LE; u8 and bool are one raw byte;
// - String / serde_bytes Vec<u8> / Vec<T>: varint length, then the contents;
// - [u8; 32]: a tuple, 32 raw bytes, no length; Option: 0, or 1 then the value;
// - SocketAddr (non-human-readable serde): enum V4 = 0 / V6 = 1, then the IP as
//   raw octets (4 or 16), then the port as a varint; flow info and scope are not sent.

#[test]
fn pinned_client_ping() {
    assert_eq!(encode(&ClientMsg::Ping).unwrap(), [1]);
}

#[test]
fn pinned_peer_ack_300() {
    // variant 1; 300 ≥ 251 → 251, then 300 = 0x012C little-endian.
    assert_eq!(encode(&PeerMsg::Ack { id: 300 }).unwrap(), [1, 251, 44, 1]);
    assert_eq!(encode(&PeerMsg::Ack { id: 250 }).unwrap(), [1, 250]);
    assert_eq!(
        encode(&PeerMsg::Ack { id: 1 << 32 }).unwrap(),
        [1, 253, 0, 0, 0, 0, 1, 0, 0, 0]
    );
}

#[test]
fn pinned_client_hello() {
    let msg = ClientMsg::Hello {
        version: 2,
        room: [0xAA; 32],
        name: "al".into(),
        group: 15,
        public: vec![1, 2, 3],
        listen_port: 4000,
        local_addrs: vec!["192.168.1.2:4000".parse().unwrap()],
        no_relay: true,
    };
    let mut want = vec![0, 2]; // Hello, version 2
    want.extend_from_slice(&[0xAA; 32]); // room, raw
    want.extend_from_slice(&[2, b'a', b'l']); // name
    want.push(15); // group (u8)
    want.extend_from_slice(&[3, 1, 2, 3]); // public
    want.extend_from_slice(&[251, 0xA0, 0x0F]); // listen_port 4000 = 0x0FA0
    want.extend_from_slice(&[1, 0, 192, 168, 1, 2, 251, 0xA0, 0x0F]); // one V4 address
    want.push(1); // no_relay
    assert_eq!(encode(&msg).unwrap(), want);
    assert_eq!(decode::<ClientMsg>(&want).unwrap(), msg);
}

#[test]
fn pinned_mediator_matched_with_v4_and_v6() {
    let msg = MediatorMsg::Matched {
        role: Role::Joiner,
        peer_name: "bob".into(),
        public: vec![9],
        observed_addr: v4(),
        listen_port: 0,
        local_addrs: vec![v6()],
        your_addr: "198.51.100.2:7071".parse().unwrap(),
        relay: RelayOffer::Offered {
            token: [0x11; 32],
            server: String::new(),
        },
    };
    let mut want = vec![1, 1]; // Matched, Joiner
    want.extend_from_slice(&[3, b'b', b'o', b'b']);
    want.extend_from_slice(&[1, 9]);
    want.extend_from_slice(&[0, 203, 0, 113, 7, 251, 0x50, 0xC3]); // V4, port 50000 = 0xC350
    want.push(0); // listen_port
    want.extend_from_slice(&[1, 1]); // one address, V6
    want.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    want.extend_from_slice(&[251, 0xBB, 0x01]); // port 443 = 0x01BB
    want.extend_from_slice(&[0, 198, 51, 100, 2, 251, 0x9F, 0x1B]); // your_addr, port 7071
    want.push(0); // relay: Offered
    want.extend_from_slice(&[0x11; 32]); // token, raw
    want.push(0); // server: "" (same mediator)
    assert_eq!(encode(&msg).unwrap(), want);
    assert_eq!(decode::<MediatorMsg>(&want).unwrap(), msg);
}

#[test]
fn pinned_v2_punch_and_relay_messages() {
    // docs/protocol.md §12 vectors.
    assert_eq!(
        encode(&ClientMsg::PunchPong { nonce: 300 }).unwrap(),
        [2, 251, 0x2C, 0x01]
    );
    let mut join = vec![3];
    join.extend_from_slice(&[0xAB; 32]);
    assert_eq!(
        encode(&ClientMsg::RelayJoin { token: [0xAB; 32] }).unwrap(),
        join
    );
    assert_eq!(encode(&ClientMsg::Allocate).unwrap(), [4]);
    assert_eq!(
        encode(&MediatorMsg::PunchPing { nonce: 300 }).unwrap(),
        [4, 251, 0x2C, 0x01]
    );
    assert_eq!(encode(&MediatorMsg::PunchNow).unwrap(), [5]);
    assert_eq!(encode(&MediatorMsg::RelayReady).unwrap(), [6]);
    assert_eq!(
        encode(&MediatorMsg::Allocated { nameplate: 7 }).unwrap(),
        [7, 7]
    );
    for (relay, byte) in [
        (RelayOffer::RefusedByYou, 1u8),
        (RelayOffer::RefusedByPeer, 2),
        (RelayOffer::Off, 3),
    ] {
        let bytes = encode(&relay).unwrap();
        assert_eq!(bytes, [byte]);
    }
}

#[test]
fn pinned_session_path_reports() {
    // docs/protocol.md §4: variant 6, then the label's index, one byte each.
    for (path, byte, word) in [
        (PathLabel::Direct, 0u8, "direct"),
        (PathLabel::Lan, 1, "lan"),
        (PathLabel::Punched, 2, "punched"),
        (PathLabel::Relay, 3, "relay"),
        (PathLabel::None, 4, "none"),
    ] {
        let msg = ClientMsg::SessionPath { path };
        assert_eq!(encode(&msg).unwrap(), [6, byte], "{word}");
        assert_eq!(decode::<ClientMsg>(&[6, byte]).unwrap(), msg);
        assert_eq!(path.as_str(), word);
    }
    assert_eq!(PathLabel::ALL.len(), 5, "every label is pinned above");
    // A label this version does not know is refused, never read as another one.
    match decode::<ClientMsg>(&[6, 5]) {
        Err(DecodeError::Malformed(e)) => assert!(e.contains("variant index"), "{e}"),
        other => panic!("an unknown path label decoded: {other:?}"),
    }
}

#[test]
fn pinned_presence_messages() {
    // docs/protocol.md §21: variant 7, the count of tags (varint), then each
    // tag's 32 bytes; Present is variant 11 with a varint, Ring 12 with a tag.
    let presence = ClientMsg::Presence {
        tags: vec![[0x11; 32], [0x22; 32]],
    };
    let mut expected = vec![7u8, 2];
    expected.extend([0x11; 32]);
    expected.extend([0x22; 32]);
    assert_eq!(encode(&presence).unwrap(), expected);
    assert_eq!(decode::<ClientMsg>(&expected).unwrap(), presence);
    assert_eq!(
        encode(&MediatorMsg::Present { tags: 1024 }).unwrap(),
        [11, 251, 0x00, 0x04]
    );
    let mut ring = vec![12u8];
    ring.extend([0x44; 32]);
    assert_eq!(
        encode(&MediatorMsg::Ring { tag: [0x44; 32] }).unwrap(),
        ring
    );
    // A full batch fits a mediator frame.
    let full = ClientMsg::Presence {
        tags: vec![[0xFF; 32]; wire::MAX_PRESENCE_BATCH],
    };
    assert!(encode(&full).unwrap().len() <= wire::frame::MEDIATOR_FRAME_MAX);
}

#[test]
fn pinned_mediator_small_messages() {
    assert_eq!(
        encode(&MediatorMsg::Waiting {
            expires_in_secs: 600
        })
        .unwrap(),
        [0, 251, 0x58, 0x02]
    );
    assert_eq!(encode(&MediatorMsg::Pong).unwrap(), [2]);
    assert_eq!(
        encode(&MediatorMsg::Error {
            code: ErrorCode::RoomFull,
            message: "full".into()
        })
        .unwrap(),
        [3, 2, 4, b'f', b'u', b'l', b'l']
    );
    // Error codes are numbered in declaration order.
    for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
        let bytes = encode(&MediatorMsg::Error {
            code,
            message: String::new(),
        })
        .unwrap();
        assert_eq!(bytes, [3, i as u8, 0]);
    }
}

#[test]
fn pinned_peer_handshake_messages() {
    let hello = PeerHandshake::PeerHello {
        room: [0x11; 32],
        public: vec![0xA1, 0xA2, 0xA3],
        commit: [0x22; 32],
        resume: None,
        identity: [0x99; 32],
    };
    let mut want = vec![0];
    want.extend_from_slice(&[0x11; 32]);
    want.extend_from_slice(&[3, 0xA1, 0xA2, 0xA3]);
    want.extend_from_slice(&[0x22; 32]);
    want.push(0); // None
    want.extend_from_slice(&[0x99; 32]);
    assert_eq!(encode(&hello).unwrap(), want);

    // A full-size public value: 384 = 0x0180 → 251, 0x80, 0x01; resume Some.
    let hello = PeerHandshake::PeerHello {
        room: [0x11; 32],
        public: vec![0xEE; 384],
        commit: [0x22; 32],
        resume: Some([0x33; 32]),
        identity: [0x99; 32],
    };
    let bytes = encode(&hello).unwrap();
    assert_eq!(bytes.len(), 1 + 32 + 3 + 384 + 32 + 1 + 32 + 32);
    assert_eq!(&bytes[33..36], [251, 0x80, 0x01]);
    assert_eq!(bytes[36 + 384 + 32], 1);

    let confirm = PeerHandshake::HostConfirm {
        nonce: [0x44; 32],
        mac: [0x55; 32],
        resumed: true,
        identity: [0x99; 32],
        signature: wire::Signature64([0xAB; 64]),
    };
    let mut want = vec![1];
    want.extend_from_slice(&[0x44; 32]);
    want.extend_from_slice(&[0x55; 32]);
    want.push(1);
    want.extend_from_slice(&[0x99; 32]);
    want.extend_from_slice(&[0xAB; 64]); // 64 raw bytes, no length
    assert_eq!(encode(&confirm).unwrap(), want);

    let mut want = vec![2];
    want.extend_from_slice(&[0x66; 32]);
    want.extend_from_slice(&[0x77; 32]);
    want.extend_from_slice(&[0xCD; 64]);
    assert_eq!(
        encode(&PeerHandshake::JoinerConfirm {
            nonce: [0x66; 32],
            mac: [0x77; 32],
            signature: wire::Signature64([0xCD; 64]),
        })
        .unwrap(),
        want
    );
    assert_eq!(
        encode(&PeerHandshake::Reject {
            reason: "no".into()
        })
        .unwrap(),
        [3, 2, b'n', b'o']
    );
}

#[test]
fn pinned_peer_chat_and_chunk() {
    let chat = PeerMsg::Chat {
        id: 7,
        sent_at_ms: 1_700_000_000_000, // 0x18B_CFE5_6800 > u32::MAX → 253 + 8 bytes LE
        text: "hi".into(),
    };
    let mut want = vec![0, 7, 253];
    want.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    want.extend_from_slice(&[2, b'h', b'i']);
    assert_eq!(encode(&chat).unwrap(), want);

    let chunk = PeerMsg::FileChunk {
        id: 1,
        offset: 70_000, // > u16::MAX → 252 + u32 LE
        data: vec![0xDA; 2],
    };
    let mut want = vec![7, 1, 252];
    want.extend_from_slice(&70_000u32.to_le_bytes());
    want.extend_from_slice(&[2, 0xDA, 0xDA]);
    assert_eq!(encode(&chunk).unwrap(), want);
}

/// docs/protocol.md §7 vector: BLAKE3("abc"), and the `FileDone` that carries it.
const BLAKE3_ABC: &str = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";

#[test]
fn pinned_file_done_carries_blake3_of_the_whole_file() {
    let hash: [u8; 32] = blake3::hash(b"abc").into();
    assert_eq!(hex::encode(hash), BLAKE3_ABC);
    let done = PeerMsg::FileDone {
        id: 300, // ≥ 251 → 251 + u16 LE
        blake3: hash,
    };
    let mut want = vec![8, 251, 0x2C, 0x01];
    want.extend_from_slice(&hash);
    assert_eq!(encode(&done).unwrap(), want);
    assert_eq!(
        hex::encode(encode(&done).unwrap()),
        format!("08fb2c01{BLAKE3_ABC}")
    );
}

/// Writes one byte, then fails: like any Serialize impl that refuses halfway.
struct FailsHalfway;

impl Serialize for FailsHalfway {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeTuple};
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&42u8)?;
        Err(S::Error::custom("refused halfway"))
    }
}

#[test]
fn failed_encode_leaves_the_buffer_untouched() {
    let mut out = b"keep".to_vec();
    assert!(matches!(
        wire::encode_into(&FailsHalfway, &mut out),
        Err(DecodeError::Encode(_))
    ));
    assert_eq!(out, b"keep");
}
