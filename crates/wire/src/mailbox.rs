//! The offline mailbox (docs/protocol.md §22): what a member leaves at the
//! mediator for another who cannot be reached, sealed so that only the
//! conversation's members can read it, in a queue only the recipient can
//! read and remove, under capabilities the mediator checks without learning
//! who anyone is. Sans-I/O: the caller passes the time and the randomness.
//!
//! An item's plaintext is one signed log message ([`crate::group::GroupMsg`]):
//! its author's signature, the conversation binding, dedup and causal order
//! come from the log (§17), so a replayed or reordered item is dropped there
//! even if the mediator let it through.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use dhke::{mailbox_queue, mailbox_read_seed, Identity, IdentityKey, MailboxQueue};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::peer::Signature64;

type HmacSha256 = Hmac<Sha256>;
type Enc = cbc::Encryptor<aes::Aes256>;
type Dec = cbc::Decryptor<aes::Aes256>;

/// Most bytes of one sealed item: with the request around it, one `MailboxAdd`
/// stays inside a mediator frame (16 KiB). A longer message is not left at the
/// mailbox; it waits for the recipient to come online.
pub const MAX_ITEM: usize = 15 * 1024;
/// How far a request's time may be from the mediator's clock, in seconds.
pub const MAX_CLOCK_SKEW: u64 = 300;
/// Item ids one `MailboxRemove` names at most.
pub const MAX_REMOVE: usize = 256;
/// Sealed bytes one `MailboxItems` answer carries at most (one item always).
pub const MAX_ITEMS_BYTES: usize = 15 * 1024;

const IV_LEN: usize = 16;
const TAG_LEN: usize = 32;
const ITEM_LABEL: &[u8] = b"p2pchat/v3/mailbox-item";
const IV_LABEL: &[u8] = b"p2pchat/v3/mailbox-iv";
const OPEN_LABEL: &[u8] = b"p2pchat/v3/mailbox-open";
const ADD_LABEL: &[u8] = b"p2pchat/v3/mailbox-add";
const FETCH_LABEL: &[u8] = b"p2pchat/v3/mailbox-fetch";
const REMOVE_LABEL: &[u8] = b"p2pchat/v3/mailbox-remove";

/// One stored item as the mediator hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredItem {
    /// [`item_id`] of `sealed`.
    pub id: [u8; 16],
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
    /// When the mediator drops it, seconds since 1970 (UTC).
    pub expires_unix: u64,
}

/// Why an item could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    #[error("a mailbox item holds at most {MAX_ITEM} bytes; this one would be {0}")]
    TooLarge(usize),
    /// Altered, truncated, for another queue, or not sealed by a member.
    #[error("mailbox item failed its integrity check")]
    Integrity,
}

/// What a member knows about one recipient's queue in one conversation.
#[derive(Debug, Clone)]
pub struct Queue {
    keys: MailboxQueue,
}

impl Queue {
    /// Member `recipient`'s queue in conversation `conversation` (its id, §17.1).
    pub fn of(conversation: &[u8; 32], recipient: &IdentityKey) -> Queue {
        Queue {
            keys: mailbox_queue(conversation, &recipient.0),
        }
    }

    /// The queue's name at the mediator.
    pub fn id(&self) -> [u8; 32] {
        self.keys.id
    }

    /// The key that may add to the queue (every member can make it).
    pub fn add_key(&self) -> Identity {
        Identity::from_seed(&self.keys.add_seed)
    }

    /// Seals `plaintext` (an encoded log message) for this queue:
    /// `iv || AES-256-CBC(seal key, iv, PKCS#7(plaintext)) || HMAC-SHA256(mac
    /// key, "p2pchat/v3/mailbox-item" || queue id || iv || ciphertext)`, with
    /// the synthetic `iv = HMAC-SHA256(mac key, "p2pchat/v3/mailbox-iv" ||
    /// plaintext)[..16]`: one message sealed twice is one item (one id), so a
    /// sender's retry is recognised at the mediator, and equal sealed items
    /// reveal only equal plaintexts, which a log never repeats.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, MailboxError> {
        let len = IV_LEN + (plaintext.len() / 16 + 1) * 16 + TAG_LEN;
        if len > MAX_ITEM {
            return Err(MailboxError::TooLarge(len));
        }
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.keys.mac_key.expose())
            .expect("HMAC takes any key length");
        mac.update(IV_LABEL);
        mac.update(plaintext);
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&full[..IV_LEN]);
        let ct = Enc::new(self.keys.seal_key.expose().into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        let tag = self.tag(&iv, &ct);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens an item sealed by [`Queue::seal`] for this queue.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, MailboxError> {
        if sealed.len() < IV_LEN + 16 + TAG_LEN
            || sealed.len() > MAX_ITEM
            || (sealed.len() - IV_LEN - TAG_LEN) % 16 != 0
        {
            return Err(MailboxError::Integrity);
        }
        let (iv, rest) = sealed.split_at(IV_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let expected = self.tag(iv, ct);
        if !bool::from(expected.ct_eq(tag)) {
            return Err(MailboxError::Integrity);
        }
        let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| MailboxError::Integrity)?;
        Dec::new(self.keys.seal_key.expose().into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(|_| MailboxError::Integrity)
    }

    fn tag(&self, iv: &[u8], ct: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.keys.mac_key.expose())
            .expect("HMAC takes any key length");
        mac.update(ITEM_LABEL);
        mac.update(&self.keys.id);
        mac.update(iv);
        mac.update(ct);
        mac.finalize().into_bytes().into()
    }
}

/// The key with which `identity` alone reads and removes queue `queue`'s items.
pub fn read_key(identity: &Identity, queue: &[u8; 32]) -> Identity {
    Identity::from_seed(&mailbox_read_seed(&identity.seed(), queue))
}

/// `SHA-256(sealed)[..16]`: an item's name in its queue, the same at every
/// mediator and for every retry, so a replay is recognised.
pub fn item_id(sealed: &[u8]) -> [u8; 16] {
    let full: [u8; 32] = Sha256::digest(sealed).into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&full[..16]);
    id
}

/// What `MailboxOpen`'s signature (by the read key) covers:
/// `"p2pchat/v3/mailbox-open" || queue || add key || read key || u64_be(at)`.
pub fn open_signed(queue: &[u8; 32], add_key: &[u8; 32], read_key: &[u8; 32], at: u64) -> Vec<u8> {
    [OPEN_LABEL, queue, add_key, read_key, &at.to_be_bytes()].concat()
}

/// What `MailboxAdd`'s signature (by the add key) covers:
/// `"p2pchat/v3/mailbox-add" || queue || u64_be(at) || SHA-256(sealed)`.
pub fn add_signed(queue: &[u8; 32], at: u64, sealed: &[u8]) -> Vec<u8> {
    let digest: [u8; 32] = Sha256::digest(sealed).into();
    [ADD_LABEL, queue, &at.to_be_bytes(), &digest].concat()
}

/// What `MailboxFetch`'s signature (by the read key) covers:
/// `"p2pchat/v3/mailbox-fetch" || queue || u64_be(at)`.
pub fn fetch_signed(queue: &[u8; 32], at: u64) -> Vec<u8> {
    [FETCH_LABEL, queue, &at.to_be_bytes()].concat()
}

/// What `MailboxRemove`'s signature (by the read key) covers:
/// `"p2pchat/v3/mailbox-remove" || queue || u64_be(at) || ids`.
pub fn remove_signed(queue: &[u8; 32], at: u64, ids: &[[u8; 16]]) -> Vec<u8> {
    let mut out = [REMOVE_LABEL, queue, &at.to_be_bytes()].concat();
    for id in ids {
        out.extend_from_slice(id);
    }
    out
}

/// Signs `bytes` with `key`, as the mailbox messages carry it.
pub fn sign(key: &Identity, bytes: &[u8]) -> Signature64 {
    Signature64(key.sign(bytes))
}

/// Checks a mailbox request's signature by `key` over `bytes`.
pub fn verify(key: &[u8; 32], bytes: &[u8], signature: &Signature64) -> bool {
    IdentityKey(*key).verify(bytes, &signature.0).is_ok()
}

/// Whether a request made at `at` may be taken at `now` (both seconds since
/// 1970): within [`MAX_CLOCK_SKEW`] either way.
pub fn fresh(at: u64, now: u64) -> bool {
    at.abs_diff(now) <= MAX_CLOCK_SKEW
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue {
        Queue::of(&[7; 32], &Identity::from_seed(&[2; 32]).public())
    }

    #[test]
    fn an_item_opens_only_with_its_queue_and_unaltered() {
        let q = queue();
        let sealed = q.seal(b"a signed log message").unwrap();
        assert_eq!(q.open(&sealed).unwrap(), b"a signed log message");
        let other = Queue::of(&[7; 32], &Identity::from_seed(&[3; 32]).public());
        assert_eq!(other.open(&sealed), Err(MailboxError::Integrity));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(q.open(&bad), Err(MailboxError::Integrity), "byte {i}");
        }
        assert_eq!(
            q.open(&sealed[..sealed.len() - 1]),
            Err(MailboxError::Integrity)
        );
        assert_eq!(q.open(&[]), Err(MailboxError::Integrity));
    }

    #[test]
    fn one_message_sealed_twice_is_one_item() {
        let q = queue();
        assert_eq!(q.seal(b"m").unwrap(), q.seal(b"m").unwrap());
        assert_ne!(q.seal(b"m").unwrap(), q.seal(b"n").unwrap());
    }

    #[test]
    fn items_past_the_limit_are_refused_before_sealing() {
        let q = queue();
        let fits = MAX_ITEM - IV_LEN - TAG_LEN - 1;
        assert!(q.seal(&vec![0; fits]).is_ok());
        assert!(matches!(
            q.seal(&vec![0; fits + 1]),
            Err(MailboxError::TooLarge(_))
        ));
    }

    #[test]
    fn queues_of_two_members_or_two_conversations_share_nothing_visible() {
        let alice = Identity::from_seed(&[1; 32]).public();
        let bob = Identity::from_seed(&[2; 32]).public();
        let ids = [
            Queue::of(&[7; 32], &alice).id(),
            Queue::of(&[7; 32], &bob).id(),
            Queue::of(&[8; 32], &alice).id(),
        ];
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
        let add = |q: &Queue| q.add_key().public().0;
        assert_ne!(
            add(&Queue::of(&[7; 32], &alice)),
            add(&Queue::of(&[7; 32], &bob))
        );
        let me = Identity::from_seed(&[1; 32]);
        assert_ne!(
            read_key(&me, &ids[0]).public().0,
            read_key(&me, &ids[2]).public().0
        );
        assert_ne!(read_key(&me, &ids[0]).public().0, me.public().0);
    }

    #[test]
    fn signatures_bind_the_queue_the_time_and_the_item() {
        let q = queue();
        let key = q.add_key();
        let sealed = q.seal(b"x").unwrap();
        let sig = sign(&key, &add_signed(&q.id(), 100, &sealed));
        let pk = key.public().0;
        assert!(verify(&pk, &add_signed(&q.id(), 100, &sealed), &sig));
        assert!(!verify(&pk, &add_signed(&q.id(), 101, &sealed), &sig));
        assert!(!verify(&pk, &add_signed(&[0; 32], 100, &sealed), &sig));
        assert!(!verify(&pk, &add_signed(&q.id(), 100, b"y"), &sig));
        assert!(fresh(1000, 1000 + MAX_CLOCK_SKEW));
        assert!(!fresh(1000, 1001 + MAX_CLOCK_SKEW));
        assert!(fresh(1000 + MAX_CLOCK_SKEW, 1000));
    }
}
