//! Known answers of the mailbox (docs/protocol.md §22): the queue's keys, a
//! sealed item, its id, the read key and an add signature, computed apart from
//! this code (Python's `cryptography`: HKDF, AES-256-CBC, HMAC, Ed25519; the
//! script is docs/vectors/mailbox.py), and the request messages' bytes. A change here
//! is a protocol change.

use dhke::Identity;
use wire::mailbox::{self, Queue};
use wire::{encode, ClientMsg, MediatorMsg, Signature64};

#[test]
fn queue_keys_seal_and_signatures_match_the_vectors() {
    let member = Identity::from_seed(&[2; 32]).public();
    assert_eq!(
        hex::encode(member.0),
        "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
    );
    let q = Queue::of(&[7; 32], &member);
    assert_eq!(
        hex::encode(q.id()),
        "1cdaf71f81ea0b7ed06ce6106c21f4573cdb551f6b830e390bdd2f08065c7e65"
    );
    assert_eq!(
        hex::encode(q.add_key().public().0),
        "12085b2abf27cb28000ef89996c909d6a2d4e7750572e64f752e34a4aeba8dc8"
    );
    let sealed = q.seal(b"hello mailbox").unwrap();
    assert_eq!(
        hex::encode(&sealed),
        "e3ffa3350ff467eceb6a84ba2617548078ffc9de2d5eae593cd896b4059fcf00\
         d901a9df9a8148e3e8e4c3bab8ef1be32c6580b4d4adfcf7e642d4be1577659f"
    );
    assert_eq!(q.open(&sealed).unwrap(), b"hello mailbox");
    assert_eq!(
        hex::encode(mailbox::item_id(&sealed)),
        "2bd23cea92b796cda7802e3e904b2470"
    );
    let reader = mailbox::read_key(&Identity::from_seed(&[1; 32]), &q.id());
    assert_eq!(
        hex::encode(reader.public().0),
        "8919d284125d000ea3575693c74db96e4b1ca8ab74d1702cc34aa53df08cf6dc"
    );
    let sig = mailbox::sign(
        &q.add_key(),
        &mailbox::add_signed(&q.id(), 1_800_000_000, &sealed),
    );
    assert_eq!(
        hex::encode(sig.0),
        "f7cf78f5535e404d3bfc5b1a5ea8dc469ab701498b447fb414a33117978749f3\
         7659e3302b49cbe0b327ce4d3ed47de1669545ea76082f15b20d94866ad87d00"
    );
}

#[test]
fn mailbox_messages_have_the_documented_bytes() {
    // Variant index, then the fields in order: arrays as their bytes, u64 as
    // a varint (251 = u16 follows, 252 = u32, 253 = u64, little-endian).
    let fetch = ClientMsg::MailboxFetch {
        queue: [0xAA; 32],
        at: 1_800_000_000,
        sig: Signature64([0xBB; 64]),
    };
    let mut expected = vec![10u8];
    expected.extend([0xAA; 32]);
    expected.extend([252, 0x00, 0xd2, 0x49, 0x6b]);
    expected.extend([0xBB; 64]);
    assert_eq!(encode(&fetch).unwrap(), expected);
    assert_eq!(
        hex::encode(encode(&MediatorMsg::MailboxRemoved { removed: 2 }).unwrap()),
        "1002"
    );
    let stored = MediatorMsg::MailboxStored {
        id: [0x01; 16],
        expires_unix: 1_800_604_800,
    };
    let mut expected = vec![14u8];
    expected.extend([0x01; 16]);
    expected.extend([252, 0x80, 0x0c, 0x53, 0x6b]);
    assert_eq!(encode(&stored).unwrap(), expected);
}

#[test]
fn the_largest_mailbox_messages_fit_a_mediator_frame() {
    let add = ClientMsg::MailboxAdd {
        queue: [1; 32],
        add_key: [2; 32],
        at: u64::MAX,
        item: vec![5; mailbox::MAX_ITEM],
        sig: Signature64([6; 64]),
    };
    assert!(encode(&add).unwrap().len() <= wire::frame::MEDIATOR_FRAME_MAX);
    let items = MediatorMsg::MailboxItems {
        items: vec![mailbox::StoredItem {
            id: [6; 16],
            sealed: vec![7; mailbox::MAX_ITEMS_BYTES],
            expires_unix: u64::MAX,
        }],
        more: true,
    };
    assert!(encode(&items).unwrap().len() <= wire::frame::MEDIATOR_FRAME_MAX);
    let remove = ClientMsg::MailboxRemove {
        queue: [1; 32],
        at: u64::MAX,
        ids: vec![[8; 16]; mailbox::MAX_REMOVE],
        sig: Signature64([9; 64]),
    };
    assert!(encode(&remove).unwrap().len() <= wire::frame::MEDIATOR_FRAME_MAX);
}
