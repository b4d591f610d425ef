//! Mailbox test helpers (docs/protocol.md §22): a recipient with its queue and
//! read key, a sender with the queue's add key, signed requests, sealed log
//! messages, the mailbox's clock, and a look into an SQLite store's file.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use dhke::Identity;
use rand::rngs::OsRng;
use rand::RngCore;
use wire::group::{GroupBody, GroupMsg};
use wire::mailbox::{self as mb, Queue, StoredItem};
use wire::{ClientMsg, ErrorCode, MediatorMsg};

use super::Client;

/// The mailbox's idea of now as a test sees it: the system clock at the
/// test's start moved on by tokio's clock, so paused tests follow the
/// mediator's `Clock` (mediator/src/mailbox.rs).
pub struct TestClock {
    start_unix: u64,
    start: tokio::time::Instant,
}

impl TestClock {
    pub fn new() -> TestClock {
        TestClock {
            start_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> u64 {
        self.start_unix + self.start.elapsed().as_secs()
    }
}

/// A member of a conversation who may receive mail.
pub struct Recipient {
    pub identity: Identity,
    pub queue: Queue,
    pub read: Identity,
}

impl Recipient {
    /// Member `seed`'s queue in conversation `conversation`.
    pub fn new(conversation: [u8; 32], seed: [u8; 32]) -> Recipient {
        let identity = Identity::from_seed(&seed);
        let queue = Queue::of(&conversation, &identity.public());
        let read = mb::read_key(&identity, &queue.id());
        Recipient {
            identity,
            queue,
            read,
        }
    }

    pub fn id(&self) -> [u8; 32] {
        self.queue.id()
    }

    /// `MailboxOpen` signed with our read key.
    pub fn open(&self, at: u64) -> ClientMsg {
        let (queue, add, read) = (
            self.id(),
            self.queue.add_key().public().0,
            self.read.public().0,
        );
        ClientMsg::MailboxOpen {
            queue,
            add_key: add,
            read_key: read,
            at,
            sig: mb::sign(&self.read, &mb::open_signed(&queue, &add, &read, at)),
        }
    }

    /// `MailboxFetch` signed with `key` (ours, or a thief's).
    pub fn fetch_signed_by(&self, key: &Identity, at: u64) -> ClientMsg {
        let queue = self.id();
        ClientMsg::MailboxFetch {
            queue,
            at,
            sig: mb::sign(key, &mb::fetch_signed(&queue, at)),
        }
    }

    pub fn fetch(&self, at: u64) -> ClientMsg {
        self.fetch_signed_by(&self.read, at)
    }

    /// `MailboxRemove` signed with `key`.
    pub fn remove_signed_by(&self, key: &Identity, at: u64, ids: Vec<[u8; 16]>) -> ClientMsg {
        let queue = self.id();
        let sig = mb::sign(key, &mb::remove_signed(&queue, at, &ids));
        ClientMsg::MailboxRemove {
            queue,
            at,
            ids,
            sig,
        }
    }

    pub fn remove(&self, at: u64, ids: Vec<[u8; 16]>) -> ClientMsg {
        self.remove_signed_by(&self.read, at, ids)
    }
}

/// `MailboxAdd` of `item` into `queue`, signed with its add key.
pub fn add(queue: &Queue, at: u64, item: Vec<u8>) -> ClientMsg {
    let key = queue.add_key();
    let id = queue.id();
    let sig = mb::sign(&key, &mb::add_signed(&id, at, &item));
    ClientMsg::MailboxAdd {
        queue: id,
        add_key: key.public().0,
        at,
        item,
        sig,
    }
}

/// A log message by `author` in `conversation` with `text`, encoded and
/// sealed for `queue`: what a client leaves at the mailbox.
pub fn sealed_message(
    queue: &Queue,
    conversation: [u8; 32],
    author: &Identity,
    seq: u64,
    text: &str,
) -> Vec<u8> {
    let body = GroupBody {
        conversation,
        author: author.public().0,
        seq,
        clock: Vec::new(),
        sent_at_ms: 1_800_000_000_000 + seq,
        text: text.to_owned(),
    };
    let msg = GroupMsg::sign(body, author).unwrap();
    queue.seal(&wire::encode(&msg).unwrap()).unwrap()
}

/// A sealed item of exactly `len` bytes (a multiple of 16 plus 48, ≥ 64), of
/// random bytes: sealing is deterministic (§22.2), so each call is a new item.
pub fn sealed_of_len(queue: &Queue, len: usize) -> Vec<u8> {
    let mut plain = vec![0u8; len - 48 - 1];
    OsRng.fill_bytes(&mut plain);
    let sealed = queue.seal(&plain).unwrap();
    assert_eq!(sealed.len(), len);
    sealed
}

impl Client {
    /// Sends `msg` and returns the answer (panics on a close).
    pub async fn ask(&mut self, msg: &ClientMsg) -> MediatorMsg {
        self.send(msg).await;
        self.recv().await.expect("an answer, not a close")
    }

    /// `MailboxOpen` → the queue's item count.
    pub async fn open(&mut self, who: &Recipient, at: u64) -> u32 {
        match self.ask(&who.open(at)).await {
            MediatorMsg::MailboxOpened { items } => items,
            other => panic!("expected MailboxOpened, got {other:?}"),
        }
    }

    /// `MailboxAdd` → (id, expiry).
    pub async fn add(&mut self, queue: &Queue, at: u64, item: Vec<u8>) -> ([u8; 16], u64) {
        match self.ask(&add(queue, at, item)).await {
            MediatorMsg::MailboxStored { id, expires_unix } => (id, expires_unix),
            other => panic!("expected MailboxStored, got {other:?}"),
        }
    }

    /// `MailboxFetch` → (items, more).
    pub async fn fetch(&mut self, who: &Recipient, at: u64) -> (Vec<StoredItem>, bool) {
        match self.ask(&who.fetch(at)).await {
            MediatorMsg::MailboxItems { items, more } => (items, more),
            other => panic!("expected MailboxItems, got {other:?}"),
        }
    }

    /// `MailboxRemove` → how many were there.
    pub async fn remove(&mut self, who: &Recipient, at: u64, ids: Vec<[u8; 16]>) -> u32 {
        match self.ask(&who.remove(at, ids)).await {
            MediatorMsg::MailboxRemoved { removed } => removed,
            other => panic!("expected MailboxRemoved, got {other:?}"),
        }
    }

    /// Sends `msg` and expects `Error{code}` and the close; returns the message.
    pub async fn refused(&mut self, msg: &ClientMsg, code: ErrorCode) -> String {
        self.send(msg).await;
        self.expect_error(code).await
    }
}

/// A directory of this test's own under the system's temp directory, removed
/// on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "mediator-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (items, sealed bytes) in the SQLite store at `path`, read through a
/// connection of our own.
pub fn sqlite_items(path: &Path) -> (u64, u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(length(sealed)), 0) FROM items",
        [],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
    .unwrap()
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
