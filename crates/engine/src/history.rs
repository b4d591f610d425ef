//! The chat history on disk: one SQLite file (WAL) with every conversation and
//! message, written before anything is shown, read by `/history` and `client history`.
//!
//! A *chat* is one client run with one peer in one room; it survives reconnects
//! ([`History::update_chat`]). Every call is one short transaction, so once it
//! returns the row survives the process being killed (WAL with
//! `synchronous=NORMAL` can lose the last commits only on power loss).
//! Everything that comes from the network is a bound parameter, never SQL text.

mod contacts;
mod conversations;
mod group;
mod open;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::error::ClientError;
use crate::events::HistoryLine;
use crate::private;

pub use contacts::{pair_conversation, Contact, ContactMatch};
pub use conversations::{
    ConversationKey, ConversationKind, ConversationMessages, Forgotten, StoredConversation,
    MIN_TYPED_ID, SHORT_ID_LEN,
};
pub use group::GroupLine;
pub use open::{OpenEntry, OpenKind};

/// Schema migrations in order: entry `i` takes `PRAGMA user_version` from `i` to
/// `i + 1`. Append only; never edit a released entry.
const MIGRATIONS: &[&str] = &[
    // 1: chats and messages.
    "CREATE TABLE chats (
        id            INTEGER PRIMARY KEY,
        room          TEXT    NOT NULL,
        peer          TEXT    NOT NULL,
        addr          TEXT    NOT NULL,
        path          TEXT    NOT NULL,
        sas           TEXT    NOT NULL,
        verified      INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
        reconnects    INTEGER NOT NULL DEFAULT 0,
        resumes       INTEGER NOT NULL DEFAULT 0,
        started_ms    INTEGER NOT NULL,
        ended_ms      INTEGER,
        end_reason    TEXT
    );
    CREATE INDEX chats_by_start ON chats (started_ms);
    CREATE INDEX chats_by_room ON chats (room, started_ms);
    CREATE INDEX chats_by_peer ON chats (peer, started_ms);
    CREATE TABLE messages (
        id            INTEGER PRIMARY KEY,
        chat_id       INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
        msg_id        INTEGER NOT NULL,
        direction     TEXT    NOT NULL CHECK (direction IN ('out', 'in')),
        sender        TEXT    NOT NULL,
        text          TEXT    NOT NULL,
        sent_ms       INTEGER NOT NULL,
        received_ms   INTEGER,
        acked         INTEGER NOT NULL DEFAULT 0 CHECK (acked IN (0, 1)),
        UNIQUE (chat_id, direction, msg_id)
    );
    -- A chat's messages in arrival order (the rowid rides along in the index).
    CREATE INDEX messages_by_chat ON messages (chat_id);",
    // 2: contacts (docs/protocol.md §15), and the identity each chat was with.
    "CREATE TABLE contacts (
        id            INTEGER PRIMARY KEY,
        identity      TEXT    NOT NULL UNIQUE,  -- 64 hex digits
        name          TEXT    NOT NULL,         -- the name last seen
        verified      INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL,
        last_addr     TEXT    NOT NULL DEFAULT ''
    );
    CREATE TABLE contact_names (
        contact_id    INTEGER NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
        name          TEXT    NOT NULL,
        UNIQUE (contact_id, name)
    );
    ALTER TABLE chats ADD COLUMN peer_identity TEXT;",
    // 3: group rooms' messages (docs/protocol.md §17, §19), each with its signed
    // bytes, so a member that restarts knows what it has and proves it to others.
    "CREATE TABLE group_messages (
        room          TEXT    NOT NULL,  -- the room code as typed
        room_tag      BLOB    NOT NULL,  -- 32 bytes (§3)
        author        BLOB    NOT NULL,  -- the author's 32-byte identity key
        author_name   TEXT    NOT NULL,  -- the name it used when we learned it
        seq           INTEGER NOT NULL,
        depth         INTEGER NOT NULL,  -- seq + the clock's sum: the shared order
        sent_ms       INTEGER NOT NULL,
        received_ms   INTEGER NOT NULL,
        text          TEXT    NOT NULL,
        encoded       BLOB    NOT NULL,  -- the GroupMsg as sent (§17.1)
        PRIMARY KEY (room_tag, author, seq)
    );
    CREATE INDEX group_messages_by_room ON group_messages (room, depth, author, seq);",
    // 4: contacts a token holder let in by `/accept` (docs/protocol.md §16.3).
    // Older contacts start without the mark: they are asked once more.
    "ALTER TABLE contacts ADD COLUMN
        token_admitted INTEGER NOT NULL DEFAULT 0 CHECK (token_admitted IN (0, 1));",
    // 5: conversation logs (docs/protocol.md §17, v3), keyed by the conversation
    // id that comes from the whole code, never by the mediator's tag: two codes
    // with one nameplate are two conversations. v2's group_messages stay for
    // `client history` to list; they are never restored into a log.
    "CREATE TABLE log_messages (
        conversation  BLOB    NOT NULL,  -- 32 bytes (§17.1)
        room          TEXT    NOT NULL,  -- the room code as typed, or a label
        author        BLOB    NOT NULL,  -- the author's 32-byte identity key
        author_name   TEXT    NOT NULL,  -- a proven name, or the fingerprint (not linked)
        seq           INTEGER NOT NULL,
        depth         INTEGER NOT NULL,  -- seq + the clock's sum: the shared order
        sent_ms       INTEGER NOT NULL,
        received_ms   INTEGER NOT NULL,
        text          TEXT    NOT NULL,
        encoded       BLOB    NOT NULL,  -- the GroupMsg as sent (§17.1)
        PRIMARY KEY (conversation, author, seq)
    );
    CREATE INDEX log_messages_by_room ON log_messages (room, depth, author, seq);
    CREATE INDEX log_messages_by_order ON log_messages (conversation, depth, author, seq);",
    // 6: two-party conversations on the log (docs/protocol.md §7.1, v3): one chat
    // row per conversation (its sessions' metadata), its messages in
    // log_messages; how far another member holds our messages (receipts).
    "ALTER TABLE chats ADD COLUMN conversation BLOB;  -- 32 bytes; NULL for v2 chats
    ALTER TABLE chats ADD COLUMN own_identity BLOB;   -- our 32-byte key in it
    CREATE INDEX chats_by_conversation ON chats (conversation);
    CREATE TABLE log_receipts (
        conversation  BLOB    PRIMARY KEY,  -- 32 bytes
        acked_seq     INTEGER NOT NULL      -- another member holds our 1..=acked_seq
    );",
    // 6 → 7: the conversations open in the messenger, reopened when it starts
    // again without one named on the command line. `target` is what reopens
    // it: the room code, or the contact's fingerprint.
    "CREATE TABLE open_conversations (
        kind       TEXT    NOT NULL,  -- room | group | contact
        target     TEXT    NOT NULL,
        opened_ms  INTEGER NOT NULL,
        PRIMARY KEY (kind, target)
    );",
];

/// The schema version this build writes.
const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Two clients may share the file; a writer holds the lock for milliseconds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The row id of one conversation in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChatId(i64);

/// An open history database: one connection per process, shared by every
/// open conversation (cloning shares it; each call takes it for one short
/// statement or transaction).
#[derive(Debug, Clone)]
pub struct History {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// One conversation with all its messages, as `client history` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatRecord {
    pub room: String,
    pub peer: String,
    pub addr: String,
    pub path: String,
    pub sas: String,
    pub verified: bool,
    /// Times the session was re-established after a drop.
    pub reconnects: u32,
    /// Of those, how many continued the previous keys (docs/protocol.md §6).
    pub resumes: u32,
    pub started_ms: u64,
    /// `None` while the chat runs, or if the client was killed.
    pub ended_ms: Option<u64>,
    pub end_reason: Option<String>,
    pub messages: Vec<MessageRecord>,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRecord {
    /// The protocol id, counted per sender from 1 in each run.
    pub msg_id: u64,
    /// `out` (ours) or `in` (the peer's).
    pub direction: String,
    pub sender: String,
    pub text: String,
    /// The sender's clock (for incoming messages: what the peer claimed).
    pub sent_ms: u64,
    /// Our clock when an incoming message arrived; `None` for outgoing ones.
    pub received_ms: Option<u64>,
    /// Outgoing: the peer confirmed it. Incoming: always true (it reached us).
    pub acked: bool,
}

impl History {
    /// Opens (creating if needed) the history at `path` and brings its schema up
    /// to date. A file written by a newer p2pchat, or one that is not SQLite, is
    /// refused and left as it was.
    pub fn open(path: &Path) -> Result<History, ClientError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private::create_dir_all(dir).map_err(|e| {
                ClientError::File(format!(
                    "cannot create the directory {} for the history database: {e}. \
                     Create it, pass --history with another file, or --no-history.",
                    dir.display()
                ))
            })?;
        }
        // Created 0600 here, before SQLite sees it: SQLite would make it 0644
        // (less the umask), and its -wal and -shm files copy the database's
        // mode, so this one call makes all three private (crate::private).
        private::create_file(path).map_err(|e| {
            ClientError::File(format!(
                "cannot create the history database {}: {e}. Check the path and its \
                 permissions, or pass --history with another file or --no-history",
                path.display()
            ))
        })?;
        refuse_if_loose(path)?;
        let conn = Connection::open(path).map_err(|e| open_error(path, &e))?;
        let mut history = History {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        };
        history
            .conn()
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| open_error(path, &e))?;
        // Read the version before anything writes: a newer or foreign file must
        // stay byte for byte as it was (switching to WAL rewrites the header).
        let found = history.user_version().map_err(|e| open_error(path, &e))?;
        history.refuse_newer(found)?;
        let mode = history
            .conn()
            .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get::<_, String>(0))
            .map_err(|e| open_error(path, &e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some network file systems cannot share WAL memory; commits stay
            // durable with the rollback journal, only concurrent readers wait.
            tracing::warn!(%mode, "history database is not in WAL mode");
        }
        history
            .conn()
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| open_error(path, &e))?;
        history.migrate()?;
        Ok(history)
    }

    /// The connection, for one statement or transaction. A panic while it was
    /// held left nothing half-done: SQLite rolls back an unfinished
    /// transaction when its guard drops.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `history.sqlite3` in the profile directory (`--profile`, else `p2pchat` in
    /// the XDG data directory), or `None` when the system has no such directory.
    pub fn default_path(profile: Option<&Path>) -> Option<PathBuf> {
        crate::identity::profile_dir(profile)
            .ok()
            .map(|d| d.join("history.sqlite3"))
    }

    /// The database a command reads: `--history`, else [`History::default_path`].
    pub fn path_for(
        history: Option<&Path>,
        profile: Option<&Path>,
    ) -> Result<PathBuf, ClientError> {
        history
            .map(Path::to_path_buf)
            .or_else(|| History::default_path(profile))
            .ok_or_else(|| {
                ClientError::Usage(
                    "there is no data directory (is HOME set?); pass --profile DIR or --history PATH"
                        .into(),
                )
            })
    }

    /// The file this history lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn user_version(&self) -> rusqlite::Result<u32> {
        self.conn()
            .pragma_query_value(None, "user_version", |row| row.get::<_, u32>(0))
    }

    fn refuse_newer(&self, found: u32) -> Result<(), ClientError> {
        if found > SCHEMA_VERSION {
            return Err(ClientError::File(format!(
                "history database {} was written by a newer p2pchat (schema {found}, this build \
                 knows {SCHEMA_VERSION}); upgrade p2pchat or pass --history with another file",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Applies the missing migrations, each in its own transaction. The version
    /// is read again under the write lock so two clients starting together do
    /// not both apply the same step.
    fn migrate(&mut self) -> Result<(), ClientError> {
        loop {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| migrate_error(&self.path, &e))?;
            let version = tx
                .pragma_query_value(None, "user_version", |row| row.get::<_, u32>(0))
                .map_err(|e| migrate_error(&self.path, &e))?;
            if version > SCHEMA_VERSION {
                drop(tx);
                return self.refuse_newer(version);
            }
            let Some(step) = MIGRATIONS.get(version as usize) else {
                return Ok(());
            };
            tx.execute_batch(step)
                .and_then(|()| tx.pragma_update(None, "user_version", version + 1))
                .and_then(|()| tx.commit())
                .map_err(|e| migrate_error(&self.path, &e))?;
            tracing::debug!(from = version, to = version + 1, "history schema migrated");
        }
    }

    fn fail(&self, what: &str, e: &rusqlite::Error) -> ClientError {
        ClientError::File(format!(
            "history database {}: cannot {what}: {e}. Check that the disk has space and the \
             file is writable, or run with --no-history.",
            self.path.display()
        ))
    }

    /// Records the start of a conversation with the peer whose identity key is
    /// `identity` (64 hex digits).
    #[allow(clippy::too_many_arguments)]
    pub fn start_chat(
        &self,
        room: &str,
        peer: &str,
        identity: &str,
        addr: &str,
        path: &str,
        sas: &str,
        started_ms: u64,
    ) -> Result<ChatId, ClientError> {
        // One guard for the insert and its row id.
        let conn = self.conn();
        conn.execute(
            "INSERT INTO chats (room, peer, peer_identity, addr, path, sas, started_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![room, peer, identity, addr, path, sas, to_db(started_ms)],
        )
        .map_err(|e| self.fail("record the chat", &e))?;
        Ok(ChatId(conn.last_insert_rowid()))
    }

    /// The chat row of two-party conversation `conversation` (one row for all
    /// its runs and sessions; its messages are the conversation's log): opened
    /// again (no end yet, one more reconnect) when it exists, else created.
    #[allow(clippy::too_many_arguments)]
    pub fn open_conversation_chat(
        &self,
        conversation: &[u8; 32],
        own: &[u8; 32],
        room: &str,
        peer: &str,
        identity: &str,
        addr: &str,
        path: &str,
        sas: &str,
        started_ms: u64,
    ) -> Result<ChatId, ClientError> {
        let found: Option<i64> = self
            .conn()
            .query_row(
                "SELECT id FROM chats WHERE conversation = ?1 ORDER BY id DESC LIMIT 1",
                params![&conversation[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.fail("read the chat", &e))?;
        if let Some(id) = found {
            self.conn()
                .execute(
                    "UPDATE chats SET peer = ?2, peer_identity = ?3, addr = ?4, path = ?5,
                         sas = ?6, ended_ms = NULL, end_reason = NULL,
                         reconnects = reconnects + 1
                     WHERE id = ?1",
                    params![id, peer, identity, addr, path, sas],
                )
                .map_err(|e| self.fail("record the chat", &e))?;
            return Ok(ChatId(id));
        }
        // One guard for the insert and its row id.
        let conn = self.conn();
        conn.execute(
            "INSERT INTO chats (room, peer, peer_identity, addr, path, sas, started_ms,
                                    conversation, own_identity)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                room,
                peer,
                identity,
                addr,
                path,
                sas,
                to_db(started_ms),
                &conversation[..],
                &own[..]
            ],
        )
        .map_err(|e| self.fail("record the chat", &e))?;
        Ok(ChatId(conn.last_insert_rowid()))
    }

    /// After a reconnect: the new address, path and code, and whether the keys
    /// continued the previous session (`resumed`).
    pub fn update_chat(
        &self,
        chat: ChatId,
        addr: &str,
        path: &str,
        sas: &str,
        verified: bool,
        resumed: bool,
    ) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "UPDATE chats SET addr = ?2, path = ?3, sas = ?4, verified = ?5,
                     reconnects = reconnects + 1, resumes = resumes + ?6
                 WHERE id = ?1",
                params![chat.0, addr, path, sas, verified, resumed],
            )
            .map_err(|e| self.fail("record the reconnect", &e))?;
        Ok(())
    }

    /// The person compared the code (or a new session made it stale).
    pub fn set_verified(&self, chat: ChatId, verified: bool) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "UPDATE chats SET verified = ?2 WHERE id = ?1",
                params![chat.0, verified],
            )
            .map_err(|e| self.fail("record the verification", &e))?;
        Ok(())
    }

    /// Records how the conversation ended. The first call wins, so a generic
    /// clean-up path cannot overwrite the specific reason recorded before it.
    pub fn end_chat(&self, chat: ChatId, ended_ms: u64, reason: &str) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "UPDATE chats SET ended_ms = ?2, end_reason = ?3
                 WHERE id = ?1 AND ended_ms IS NULL",
                params![chat.0, to_db(ended_ms), reason],
            )
            .map_err(|e| self.fail("record the end of the chat", &e))?;
        Ok(())
    }

    /// Records one of our messages; call it before showing the message as sent.
    /// Recording the same id again (a resend) changes nothing.
    pub fn record_outgoing(
        &self,
        chat: ChatId,
        msg_id: u64,
        sender: &str,
        text: &str,
        sent_ms: u64,
    ) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "INSERT INTO messages (chat_id, msg_id, direction, sender, text, sent_ms, acked)
                 VALUES (?1, ?2, 'out', ?3, ?4, ?5, 0)
                 ON CONFLICT (chat_id, direction, msg_id) DO NOTHING",
                params![chat.0, to_db(msg_id), sender, text, to_db(sent_ms)],
            )
            .map_err(|e| self.fail("save the message", &e))?;
        Ok(())
    }

    /// Records a message from the peer; call it before showing it. Returns
    /// `false` for an id already stored in this chat (a resend after a
    /// reconnect), which changes nothing and should not be shown again.
    pub fn record_incoming(
        &self,
        chat: ChatId,
        msg_id: u64,
        sender: &str,
        text: &str,
        sent_ms: u64,
        received_ms: u64,
    ) -> Result<bool, ClientError> {
        let inserted = self
            .conn()
            .execute(
                "INSERT INTO messages
                     (chat_id, msg_id, direction, sender, text, sent_ms, received_ms, acked)
                 VALUES (?1, ?2, 'in', ?3, ?4, ?5, ?6, 1)
                 ON CONFLICT (chat_id, direction, msg_id) DO NOTHING",
                params![
                    chat.0,
                    to_db(msg_id),
                    sender,
                    text,
                    to_db(sent_ms),
                    to_db(received_ms)
                ],
            )
            .map_err(|e| self.fail("save the message", &e))?;
        Ok(inserted == 1)
    }

    /// The peer confirmed one of our messages. An id we never sent (the peer's
    /// word, from the network) is ignored.
    pub fn mark_acked(&self, chat: ChatId, msg_id: u64) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "UPDATE messages SET acked = 1
                 WHERE chat_id = ?1 AND direction = 'out' AND msg_id = ?2",
                params![chat.0, to_db(msg_id)],
            )
            .map_err(|e| self.fail("record the delivery", &e))?;
        Ok(())
    }

    /// The last `n` messages of a chat, oldest first, for `/history N`.
    pub fn recent(&self, chat: ChatId, n: u32) -> Result<Vec<HistoryLine>, ClientError> {
        let read = || -> rusqlite::Result<Vec<HistoryLine>> {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT direction, sender, text, sent_ms, received_ms, acked FROM (
                     SELECT id, direction, sender, text, sent_ms, received_ms, acked
                     FROM messages WHERE chat_id = ?1 ORDER BY id DESC LIMIT ?2
                 ) ORDER BY id",
            )?;
            let rows = stmt.query_map(params![chat.0, n], |row| {
                let outgoing = row.get::<_, String>(0)? == "out";
                let sent_ms = from_db(row.get(3)?);
                let received_ms = row.get::<_, Option<i64>>(4)?.map(from_db);
                Ok(HistoryLine {
                    at_ms: shown_at(outgoing, sent_ms, received_ms),
                    from: row.get(1)?,
                    text: row.get(2)?,
                    outgoing,
                    acked: row.get(5)?,
                })
            })?;
            rows.collect()
        };
        read().map_err(|e| self.fail("read the history", &e))
    }

    /// Our messages the peer has not confirmed, oldest first: `(msg_id, text,
    /// sent_ms)`, to send again on a new session.
    pub fn unacked_outgoing(&self, chat: ChatId) -> Result<Vec<(u64, String, u64)>, ClientError> {
        let read = || -> rusqlite::Result<Vec<(u64, String, u64)>> {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT msg_id, text, sent_ms FROM messages
                 WHERE chat_id = ?1 AND direction = 'out' AND acked = 0
                 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![chat.0], |row| {
                Ok((from_db(row.get(0)?), row.get(1)?, from_db(row.get(2)?)))
            })?;
            rows.collect()
        };
        read().map_err(|e| self.fail("read the unconfirmed messages", &e))
    }

    /// Chats newest first, optionally only in `room` and/or with `peer`, at most
    /// `limit`, each with all its messages in the order they were recorded.
    pub fn query(
        &self,
        room: Option<&str>,
        peer: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ChatRecord>, ClientError> {
        self.read_chats(room, peer, limit)
            .map_err(|e| self.fail("read the history", &e))
    }

    fn read_chats(
        &self,
        room: Option<&str>,
        peer: Option<&str>,
        limit: u32,
    ) -> rusqlite::Result<Vec<ChatRecord>> {
        // One read transaction: a consistent snapshot while a chat keeps writing.
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        // A fixed statement per filter combination, so each can use its index.
        let sql = match (room, peer) {
            (None, None) => {
                "SELECT id, room, peer, addr, path, sas, verified, reconnects, resumes,
                        started_ms, ended_ms, end_reason, conversation, own_identity
                 FROM chats ORDER BY started_ms DESC, id DESC LIMIT ?3"
            }
            (Some(_), None) => {
                "SELECT id, room, peer, addr, path, sas, verified, reconnects, resumes,
                        started_ms, ended_ms, end_reason, conversation, own_identity
                 FROM chats WHERE room = ?1 ORDER BY started_ms DESC, id DESC LIMIT ?3"
            }
            (None, Some(_)) => {
                "SELECT id, room, peer, addr, path, sas, verified, reconnects, resumes,
                        started_ms, ended_ms, end_reason, conversation, own_identity
                 FROM chats WHERE peer = ?2 OR peer_identity IN (SELECT identity FROM contacts_named)
                 ORDER BY started_ms DESC, id DESC LIMIT ?3"
            }
            (Some(_), Some(_)) => {
                "SELECT id, room, peer, addr, path, sas, verified, reconnects, resumes,
                        started_ms, ended_ms, end_reason, conversation, own_identity
                 FROM chats WHERE room = ?1
                   AND (peer = ?2 OR peer_identity IN (SELECT identity FROM contacts_named))
                 ORDER BY started_ms DESC, id DESC LIMIT ?3"
            }
        };
        // `--peer NAME` follows the identity of every contact that used NAME,
        // so chats where that person went by another name are listed too.
        let named = "WITH contacts_named AS (
                SELECT c.identity FROM contacts c WHERE c.name = ?2
                UNION SELECT c.identity FROM contacts c
                      JOIN contact_names n ON n.contact_id = c.id WHERE n.name = ?2) ";
        let sql = format!("{named}{sql}");
        let mut chats_stmt = tx.prepare(&sql)?;
        // Every statement ends with `?3`, so all three positions exist and the
        // filters a statement does not use are bound and ignored.
        let mut rows = chats_stmt.query(params![room, peer, limit])?;
        let mut msgs_stmt = tx.prepare(MESSAGES_OF_CHAT)?;
        let mut log_stmt = tx.prepare(LOG_OF_CHAT)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(chat_from_row(row, &mut msgs_stmt, &mut log_stmt)?);
        }
        Ok(out)
    }
}

/// The columns [`chat_from_row`] reads, in its order.
const CHAT_COLUMNS: &str = "id, room, peer, addr, path, sas, verified, reconnects, resumes,
                            started_ms, ended_ms, end_reason, conversation, own_identity";

/// A v2 chat's messages in the order they were recorded.
const MESSAGES_OF_CHAT: &str = "SELECT msg_id, direction, sender, text, sent_ms, received_ms, acked
                                FROM messages WHERE chat_id = ?1 ORDER BY id";

/// A v3 conversation's log (?1 the conversation, ?2 our key): ours are `out`,
/// acked as far as another member holds them (log_receipts).
const LOG_OF_CHAT: &str = "SELECT seq, author = ?2, author_name, text, sent_ms, received_ms,
                                  seq <= COALESCE((SELECT acked_seq FROM log_receipts
                                                   WHERE conversation = ?1), 0)
                           FROM log_messages WHERE conversation = ?1
                           ORDER BY depth, author, seq";

/// One `chats` row (selected as [`CHAT_COLUMNS`]) with its messages: a v3 row
/// (with a conversation id) lists its log, a v2 row its own messages.
fn chat_from_row(
    row: &rusqlite::Row<'_>,
    msgs_stmt: &mut rusqlite::Statement<'_>,
    log_stmt: &mut rusqlite::Statement<'_>,
) -> rusqlite::Result<ChatRecord> {
    let id: i64 = row.get(0)?;
    let conversation: Option<Vec<u8>> = row.get(12)?;
    let own: Option<Vec<u8>> = row.get(13)?;
    let messages = if let Some(conversation) = conversation {
        log_stmt
            .query_map(params![conversation, own], |m| {
                let outgoing: bool = m.get(1)?;
                let received_ms: i64 = m.get(5)?;
                Ok(MessageRecord {
                    msg_id: from_db(m.get(0)?),
                    direction: if outgoing { "out" } else { "in" }.into(),
                    sender: m.get(2)?,
                    text: m.get(3)?,
                    sent_ms: from_db(m.get(4)?),
                    received_ms: (!outgoing).then(|| from_db(received_ms)),
                    acked: !outgoing || m.get::<_, bool>(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
    } else {
        msgs_stmt
            .query_map(params![id], |m| {
                Ok(MessageRecord {
                    msg_id: from_db(m.get(0)?),
                    direction: m.get(1)?,
                    sender: m.get(2)?,
                    text: m.get(3)?,
                    sent_ms: from_db(m.get(4)?),
                    received_ms: m.get::<_, Option<i64>>(5)?.map(from_db),
                    acked: m.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    Ok(ChatRecord {
        room: row.get(1)?,
        peer: row.get(2)?,
        addr: row.get(3)?,
        path: row.get(4)?,
        sas: row.get(5)?,
        verified: row.get(6)?,
        reconnects: row.get(7)?,
        resumes: row.get(8)?,
        started_ms: from_db(row.get(9)?),
        ended_ms: row.get::<_, Option<i64>>(10)?.map(from_db),
        end_reason: row.get(11)?,
        messages,
    })
}

/// The wall clock in milliseconds since the Unix epoch, as rows and messages
/// keep it (0 before 1970, `u64::MAX` past the year 584 million).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Protocol ids and peer clocks are any `u64`; SQLite integers are `i64`. The
/// bit pattern is stored as is, so every value round-trips exactly (values above
/// `i64::MAX` read as negative in the raw table, which nothing relies on).
fn to_db(value: u64) -> i64 {
    value as i64
}

fn from_db(value: i64) -> u64 {
    value as u64
}

/// When a message is shown as having happened: our own clock where we have it
/// (the peer's `sent_ms` is only its claim).
pub fn shown_at(outgoing: bool, sent_ms: u64, received_ms: Option<u64>) -> u64 {
    if outgoing {
        sent_ms
    } else {
        received_ms.unwrap_or(sent_ms)
    }
}

/// The database at `path` and its WAL files.
fn files_of(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.to_path_buf().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Refuses a database (or a journal of it) that group or others may read or
/// change, as the identity file is refused: it holds every chat and the verified
/// marks, so a file someone else could write may make a stranger "verified". It
/// is left as it is; the message names the chmod that fixes it. Checked before
/// SQLite opens it, so nothing is read from or written to such a file.
fn refuse_if_loose(path: &Path) -> Result<(), ClientError> {
    for file in files_of(path) {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if let Some(mode) = private::loose_mode(&meta) {
            return Err(ClientError::File(format!(
                "history database {}: group or others may read or change it (mode {mode:04o}), \
                 and it holds your chats and which contacts you verified. If only you could \
                 ever read or change it, run `chmod 600 {}`; otherwise move it away (and its \
                 -wal and -shm files) to start a new history, or run with --no-history. It was \
                 left untouched.",
                file.display(),
                file.display()
            )));
        }
    }
    Ok(())
}

fn open_error(path: &Path, e: &rusqlite::Error) -> ClientError {
    let code = match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    ClientError::File(match code {
        Some(ErrorCode::NotADatabase) => format!(
            "{} is not a p2pchat history database (not an SQLite file); move it aside, or pass \
             --history with another file or --no-history",
            path.display()
        ),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "history database {} stayed locked by another program for {} s; close it and try \
             again, or pass --history with another file",
            path.display(),
            BUSY_TIMEOUT.as_secs()
        ),
        _ => format!(
            "cannot open the history database {}: {e}. Check the path and its permissions, or \
             pass --history with another file or --no-history",
            path.display()
        ),
    })
}

fn migrate_error(path: &Path, e: &rusqlite::Error) -> ClientError {
    ClientError::File(format!(
        "cannot update the history database {} to schema {SCHEMA_VERSION}: {e}. That step was rolled \
         back; check the disk and permissions, or pass --history with another file",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A unique database path under the temp dir, removed (with its WAL files)
    /// when dropped.
    pub(super) struct TempDb(pub(super) PathBuf);

    impl TempDb {
        pub(super) fn new(label: &str) -> TempDb {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "p2pchat-history-{label}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            TempDb(dir.join("nested").join("history.sqlite3"))
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent().and_then(Path::parent) {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    fn chat(h: &History, room: &str, peer: &str, started_ms: u64) -> ChatId {
        h.start_chat(
            room,
            peer,
            "",
            "192.0.2.7:4000",
            "direct",
            "482 093",
            started_ms,
        )
        .unwrap()
    }

    #[test]
    fn migrates_from_empty_and_creates_parent_dirs() {
        let db = TempDb::new("migrate");
        let h = History::open(&db.0).unwrap();
        assert_eq!(h.user_version().unwrap(), SCHEMA_VERSION);
        let mode: String = h
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = h
            .conn()
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        assert!(h.query(None, None, 10).unwrap().is_empty());
    }

    /// Makes a file written by a test private, as the client creates its own.
    fn private_mode(path: &Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        #[cfg(not(unix))]
        let _ = path;
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn database_wal_and_shm_are_0600_and_new_directories_0700() {
        let db = TempDb::new("private");
        let h = History::open(&db.0).unwrap();
        // A write makes sure the WAL and the shared-memory file exist.
        chat(&h, "room", "bob", 1);
        for file in files_of(&h.path) {
            assert!(file.exists(), "{} missing", file.display());
            assert_eq!(mode(&file), private::FILE_MODE, "{}", file.display());
        }
        let nested = db.0.parent().unwrap();
        assert_eq!(mode(nested), private::DIR_MODE);
        assert_eq!(mode(nested.parent().unwrap()), private::DIR_MODE);
    }

    /// The history holds the verified marks (contacts): a file others may write
    /// could make a stranger "verified", one they may read leaks every chat. Like
    /// the identity file, it is refused and left as it is, with the chmod to run.
    #[cfg(unix)]
    #[test]
    fn a_database_others_may_read_or_write_is_refused_and_left_untouched() {
        use std::os::unix::fs::PermissionsExt;
        for loose in [0o640, 0o604, 0o620, 0o666] {
            let db = TempDb::new("loose");
            {
                let h = History::open(&db.0).unwrap();
                let bob = dhke::Identity::from_seed(&[2; 32]).public();
                h.contact_seen(&bob, "bob", "127.0.0.1:1", 1).unwrap();
                h.set_contact_verified(&bob, true).unwrap();
            }
            std::fs::set_permissions(&db.0, std::fs::Permissions::from_mode(loose)).unwrap();
            let before = std::fs::read(&db.0).unwrap();
            let err = History::open(&db.0).unwrap_err();
            let text = err.to_string();
            assert_eq!(err.exit_code(), 11, "{text}");
            assert!(
                text.contains(&format!("chmod 600 {}", db.0.display())),
                "{loose:o}: {text}"
            );
            assert!(text.contains(&format!("{loose:04o}")), "{text}");
            assert_eq!(std::fs::read(&db.0).unwrap(), before);
            assert_eq!(mode(&db.0), loose, "the mode was changed");
            // After the chmod it opens, with its verified contact.
            std::fs::set_permissions(&db.0, std::fs::Permissions::from_mode(0o600)).unwrap();
            let h = History::open(&db.0).unwrap();
            assert!(h.contacts().unwrap()[0].verified);
        }
    }

    /// SQLite's journals hold the same rows: one made loose on its own is refused too.
    #[cfg(unix)]
    #[test]
    fn a_loose_journal_beside_a_private_database_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let db = TempDb::new("loose-wal");
        drop(History::open(&db.0).unwrap());
        let mut wal = db.0.clone().into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = History::open(&db.0).unwrap_err().to_string();
        assert!(
            text.contains(&format!("chmod 600 {}", wal.display())),
            "{text}"
        );
    }

    #[test]
    fn reopen_keeps_data_and_does_not_migrate_again() {
        let db = TempDb::new("reopen");
        {
            let h = History::open(&db.0).unwrap();
            let c = chat(&h, "7-velvet-harbor", "alice", 1_000);
            h.record_outgoing(c, 1, "bob", "hello", 1_001).unwrap();
            h.end_chat(c, 2_000, "bob left").unwrap();
        }
        let h = History::open(&db.0).unwrap();
        assert_eq!(h.user_version().unwrap(), SCHEMA_VERSION);
        let chats = h.query(None, None, 10).unwrap();
        assert_eq!(chats.len(), 1);
        assert_eq!(chats[0].messages[0].text, "hello");
        assert_eq!(chats[0].ended_ms, Some(2_000));
        assert_eq!(chats[0].end_reason.as_deref(), Some("bob left"));
    }

    #[test]
    fn a_schema_3_database_keeps_its_contacts_and_they_start_not_token_admitted() {
        let db = TempDb::new("schema3");
        std::fs::create_dir_all(db.0.parent().unwrap()).unwrap();
        let bob = dhke::Identity::from_seed(&[2; 32]).public();
        {
            // What a build of schema 3 wrote: its migrations, and a verified contact.
            let conn = Connection::open(&db.0).unwrap();
            for step in &MIGRATIONS[..3] {
                conn.execute_batch(step).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute(
                "INSERT INTO contacts (identity, name, verified, first_seen_ms, last_seen_ms)
                 VALUES (?1, 'bob', 1, 10, 20)",
                params![bob.to_hex()],
            )
            .unwrap();
        }
        // Written 0600, as the client writes it (a looser file is refused).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db.0, std::fs::Permissions::from_mode(0o600)).unwrap();
        let h = History::open(&db.0).unwrap();
        assert_eq!(h.user_version().unwrap(), SCHEMA_VERSION);
        let c = h.contact_by_key(&bob).unwrap().unwrap();
        assert_eq!((c.name.as_str(), c.verified), ("bob", true));
        assert!(
            !c.token_admitted,
            "no contact is taken as admitted by a token"
        );
        h.set_contact_token_admitted(&bob).unwrap();
        assert!(h.contact_by_key(&bob).unwrap().unwrap().token_admitted);
    }

    #[test]
    fn newer_schema_is_refused_and_left_untouched() {
        let db = TempDb::new("newer");
        std::fs::create_dir_all(db.0.parent().unwrap()).unwrap();
        {
            let conn = Connection::open(&db.0).unwrap();
            conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
                .unwrap();
        }
        private_mode(&db.0);
        let before = std::fs::read(&db.0).unwrap();
        let err = History::open(&db.0).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.exit_code(), 11);
        assert!(text.contains("newer p2pchat"), "{text}");
        assert!(
            text.contains(&format!("schema 99, this build knows {SCHEMA_VERSION}")),
            "{text}"
        );
        assert!(text.contains("--history"), "{text}");
        assert_eq!(std::fs::read(&db.0).unwrap(), before);
        let wal = db.0.with_extension("sqlite3-wal");
        assert!(!wal.exists(), "no WAL file created for a refused database");
    }

    #[test]
    fn not_a_database_is_refused() {
        let db = TempDb::new("notdb");
        std::fs::create_dir_all(db.0.parent().unwrap()).unwrap();
        let junk = "this is a text file, not SQLite\n".repeat(64);
        std::fs::write(&db.0, &junk).unwrap();
        private_mode(&db.0);
        let err = History::open(&db.0).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("not a p2pchat history database"), "{text}");
        assert_eq!(std::fs::read_to_string(&db.0).unwrap(), junk);
    }

    #[test]
    fn two_clients_share_one_file() {
        let db = TempDb::new("shared");
        let first = History::open(&db.0).unwrap();
        let second = History::open(&db.0).unwrap();
        let a = chat(&first, "r1", "alice", 1);
        let b = chat(&second, "r2", "bob", 2);
        first.record_outgoing(a, 1, "me", "from first", 3).unwrap();
        second
            .record_outgoing(b, 1, "me", "from second", 4)
            .unwrap();
        assert_eq!(first.query(None, None, 10).unwrap().len(), 2);
        assert_eq!(
            second.query(Some("r1"), None, 10).unwrap()[0]
                .messages
                .len(),
            1
        );
    }

    #[test]
    fn duplicate_incoming_is_dropped() {
        let db = TempDb::new("dup");
        let h = History::open(&db.0).unwrap();
        let c = chat(&h, "r", "alice", 1);
        assert!(h.record_incoming(c, 1, "alice", "first", 10, 11).unwrap());
        assert!(!h.record_incoming(c, 1, "alice", "changed", 20, 21).unwrap());
        assert!(h.record_incoming(c, 2, "alice", "second", 30, 31).unwrap());
        // The same id in the other direction, or in another chat, is distinct.
        h.record_outgoing(c, 1, "bob", "mine", 12).unwrap();
        let other = chat(&h, "r", "alice", 2);
        assert!(h
            .record_incoming(other, 1, "alice", "again", 40, 41)
            .unwrap());
        let chats = h.query(None, None, 10).unwrap();
        let first = &chats[1];
        assert_eq!(first.messages.len(), 3);
        assert_eq!(first.messages[0].text, "first");
        assert_eq!(first.messages[0].sent_ms, 10);
        assert_eq!(first.messages[0].received_ms, Some(11));
        assert_eq!(first.messages[2].direction, "out");
    }

    #[test]
    fn acked_flags_and_unacked_outgoing() {
        let db = TempDb::new("ack");
        let h = History::open(&db.0).unwrap();
        let c = chat(&h, "r", "alice", 1);
        for id in 1..=4 {
            h.record_outgoing(c, id, "bob", &format!("m{id}"), 100 + id)
                .unwrap();
        }
        // A resend is recorded once.
        h.record_outgoing(c, 2, "bob", "m2 again", 999).unwrap();
        h.record_incoming(c, 3, "alice", "theirs", 5, 6).unwrap();
        h.mark_acked(c, 1).unwrap();
        h.mark_acked(c, 3).unwrap();
        // An ack for an id we never sent is the peer's word: ignored.
        h.mark_acked(c, 77).unwrap();
        assert_eq!(
            h.unacked_outgoing(c).unwrap(),
            vec![(2, "m2".to_string(), 102), (4, "m4".to_string(), 104)]
        );
        let msgs = &h.query(None, None, 1).unwrap()[0].messages;
        let acked: Vec<(&str, u64, bool)> = msgs
            .iter()
            .map(|m| (m.direction.as_str(), m.msg_id, m.acked))
            .collect();
        assert_eq!(
            acked,
            vec![
                ("out", 1, true),
                ("out", 2, false),
                ("out", 3, true),
                ("out", 4, false),
                ("in", 3, true),
            ]
        );
        h.mark_acked(c, 2).unwrap();
        h.mark_acked(c, 4).unwrap();
        assert!(h.unacked_outgoing(c).unwrap().is_empty());
    }

    #[test]
    fn query_filters_orders_and_limits() {
        let db = TempDb::new("query");
        let h = History::open(&db.0).unwrap();
        let a1 = chat(&h, "room-a", "alice", 100);
        let b = chat(&h, "room-b", "bob", 200);
        let a2 = chat(&h, "room-a", "carol", 300);
        let a3 = chat(&h, "room-a", "alice", 300); // same start: later row first
        for (c, text) in [(a1, "a1"), (b, "b"), (a2, "a2"), (a3, "a3")] {
            h.record_outgoing(c, 1, "me", text, 1).unwrap();
        }
        let first_texts = |chats: Vec<ChatRecord>| -> Vec<String> {
            chats
                .into_iter()
                .map(|c| c.messages[0].text.clone())
                .collect()
        };
        assert_eq!(
            first_texts(h.query(None, None, 10).unwrap()),
            ["a3", "a2", "b", "a1"]
        );
        assert_eq!(
            first_texts(h.query(Some("room-a"), None, 10).unwrap()),
            ["a3", "a2", "a1"]
        );
        assert_eq!(
            first_texts(h.query(None, Some("alice"), 10).unwrap()),
            ["a3", "a1"]
        );
        assert_eq!(
            first_texts(h.query(Some("room-b"), Some("alice"), 10).unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            first_texts(h.query(Some("room-a"), Some("alice"), 1).unwrap()),
            ["a3"]
        );
        assert_eq!(first_texts(h.query(None, None, 2).unwrap()), ["a3", "a2"]);
        // A filter is a value, never SQL.
        assert!(h.query(Some("' OR 1=1 --"), None, 10).unwrap().is_empty());
    }

    #[test]
    fn chat_updates_and_end_reason() {
        let db = TempDb::new("update");
        let h = History::open(&db.0).unwrap();
        let c = chat(&h, "r", "alice", 1);
        h.set_verified(c, true).unwrap();
        h.update_chat(c, "198.51.100.1:9", "relay", "111 222", true, true)
            .unwrap();
        h.update_chat(c, "198.51.100.2:9", "punched", "333 444", false, false)
            .unwrap();
        h.end_chat(c, 50, "bob left").unwrap();
        h.end_chat(c, 60, "internal clean-up").unwrap();
        let rec = &h.query(None, None, 1).unwrap()[0];
        assert_eq!(rec.addr, "198.51.100.2:9");
        assert_eq!(rec.path, "punched");
        assert_eq!(rec.sas, "333 444");
        assert!(!rec.verified);
        assert_eq!((rec.reconnects, rec.resumes), (2, 1));
        assert_eq!(rec.ended_ms, Some(50));
        assert_eq!(rec.end_reason.as_deref(), Some("bob left"));
    }

    #[test]
    fn recent_returns_the_last_n_oldest_first() {
        let db = TempDb::new("recent");
        let h = History::open(&db.0).unwrap();
        let c = chat(&h, "r", "alice", 1);
        let other = chat(&h, "r", "carol", 1);
        h.record_outgoing(other, 1, "me", "elsewhere", 1).unwrap();
        for id in 1..=5u64 {
            h.record_outgoing(c, id, "bob", &format!("out{id}"), 1000 + id)
                .unwrap();
            h.record_incoming(c, id, "alice", &format!("in{id}"), 7, 2000 + id)
                .unwrap();
        }
        h.mark_acked(c, 5).unwrap();
        let lines = h.recent(c, 3).unwrap();
        let view: Vec<(&str, &str, u64, bool, bool)> = lines
            .iter()
            .map(|l| {
                (
                    l.from.as_str(),
                    l.text.as_str(),
                    l.at_ms,
                    l.outgoing,
                    l.acked,
                )
            })
            .collect();
        assert_eq!(
            view,
            vec![
                ("alice", "in4", 2004, false, true),
                ("bob", "out5", 1005, true, true),
                ("alice", "in5", 2005, false, true),
            ]
        );
        assert_eq!(h.recent(c, 100).unwrap().len(), 10);
        assert!(h.recent(c, 0).unwrap().is_empty());
    }

    #[test]
    fn hostile_texts_and_extreme_values_round_trip() {
        let db = TempDb::new("texts");
        let h = History::open(&db.0).unwrap();
        let room = "it's \"quoted\"; DROP TABLE chats; --";
        let peer = "Zoë 🦀 'o'";
        let c = chat(&h, room, peer, u64::MAX);
        let texts = [
            "plain",
            "'single' \"double\" `back` \\ %s ?1 :name @x $y",
            "Ünïcødé — 日本語 — עברית — 🦀🔐",
            "\u{1b}[31mred\u{1b}[0m and \u{202e}rtl",
            "');DELETE FROM messages;--",
        ];
        for (i, t) in texts.iter().enumerate() {
            let id = u64::MAX - i as u64;
            h.record_outgoing(c, id, peer, t, u64::MAX).unwrap();
            assert!(h.record_incoming(c, id, peer, t, u64::MAX, 1).unwrap());
        }
        let rec = &h.query(Some(room), Some(peer), 5).unwrap()[0];
        assert_eq!(rec.room, room);
        assert_eq!(rec.peer, peer);
        assert_eq!(rec.started_ms, u64::MAX);
        let stored: Vec<&str> = rec.messages.iter().map(|m| m.text.as_str()).collect();
        let expected: Vec<&str> = texts.iter().flat_map(|t| [*t, *t]).collect();
        assert_eq!(stored, expected);
        assert_eq!(rec.messages[0].msg_id, u64::MAX);
        assert_eq!(rec.messages[0].sent_ms, u64::MAX);
        h.mark_acked(c, u64::MAX).unwrap();
        assert_eq!(h.unacked_outgoing(c).unwrap().len(), texts.len() - 1);
    }
}
