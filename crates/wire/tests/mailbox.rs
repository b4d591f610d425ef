//! Known answers of the mailbox (docs/protocol.md §22): the queue's keys, a
//! sealed item, its id, the read key and an add signature, computed apart from
//! this code (Python's `cryptography`: HKDF, AES-256-CBC, HMAC, Ed25519; the
//! script is quoted in §22.6), and the request messages' bytes. A change here
//! is a protocol change.

use dhke::Identity;
use rand_core::{CryptoRng, RngCore};
use wire::mailbox::{self, Queue};
use wire::{encode, ClientMsg, MediatorMsg, Signature64};

/// An "RNG" that gives the fixed IV of the vector.
struct FixedIv;

impl RngCore for FixedIv {
    fn next_u32(&mut self) -> u32 {
        0x1010_1010
    }
    fn next_u64(&mut self) -> u64 {
        0x1010_1010_1010_1010
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0x10);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        dest.fill(0x10);
        Ok(())
    }
}

impl CryptoRng for FixedIv {}

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
    let sealed = q.seal(b"hello mailbox", &mut FixedIv).unwrap();
    assert_eq!(
        hex::encode(&sealed),
        "10101010101010101010101010101010678c8f9bb52a2a3232cd2a8960894227\
         f7d11ac2d698f100399f827cde562d809dcfe70d79d15463e7976d45e5d6b08d"
    );
    assert_eq!(q.open(&sealed).unwrap(), b"hello mailbox");
    assert_eq!(
        hex::encode(mailbox::item_id(&sealed)),
        "0c42963066094823e9ecb51ebad4cd6f"
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
        "11fd6e16ecdf590ac483aab36b0450335b019822035d68bbb9269ea928573c79\
         8a07b7741cb2b8aec486d4391873a88fed9e15e2cf3e2e78a18898a0e03fcf04"
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
