//! Conversations as a person manages them: every conversation the history holds
//! (v3 logs by conversation id, v2 two-party chats, v2 group rooms), each with a
//! short id to type, and forgetting one: every row keyed to it, in one
//! transaction, overwritten on disk rather than only unlinked.

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{chat_from_row, from_db, ChatId, ChatRecord, GroupLine, History, CHAT_COLUMNS};
use crate::error::ClientError;

/// Hex digits of a conversation's id shown in lists and JSON.
pub const SHORT_ID_LEN: usize = 8;
/// Fewest hex digits a typed id may have: fewer would match too much by chance.
pub const MIN_TYPED_ID: usize = 4;
/// Most conversations of each kind read into a list (a bound on the work of one
/// `client history list`, far above what a person keeps).
const MAX_PER_KIND: i64 = 100_000;
/// Most member names kept per listed conversation.
const MAX_NAMES: usize = 8;

/// Where a conversation's rows live, and the key they are stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConversationKey {
    /// A conversation log (docs/protocol.md §17, v3): group conversations, and
    /// two-party ones once they are logs. Every table with a `conversation`
    /// column holds rows of it.
    Log([u8; 32]),
    /// A v2 two-party chat: one `chats` row and its `messages`.
    Chat(ChatId),
    /// A v2 group room: its `group_messages`, by room tag.
    GroupV2([u8; 32]),
}

impl ConversationKey {
    /// 32 bytes naming the conversation: a log's id, a v2 room's tag, or for a
    /// v2 chat a hash of its row (its row id alone would be reused after a
    /// forget, so a stale short id could name a newer chat).
    fn digest(&self, started_ms: u64) -> [u8; 32] {
        match self {
            ConversationKey::Log(id) | ConversationKey::GroupV2(id) => *id,
            ConversationKey::Chat(chat) => {
                let mut h = Sha256::new();
                h.update(b"p2pchat/history/chat");
                h.update(chat.0.to_be_bytes());
                h.update(started_ms.to_be_bytes());
                h.finalize().into()
            }
        }
    }
}

/// What kind of conversation a listed one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// A conversation log (group, or two-party on the one model).
    Log,
    /// A v2 two-party chat.
    Chat,
    /// A v2 group room.
    GroupV2,
}

/// One conversation as `client history list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredConversation {
    /// The first [`SHORT_ID_LEN`] hex digits of [`Self::conversation`]: what a
    /// person types (`client history show ID`, `forget ID`).
    pub id: String,
    /// 64 hex digits: a log's conversation id, a v2 room's tag, or a v2 chat's
    /// row hash.
    pub conversation: String,
    pub kind: ConversationKind,
    /// The room code as typed, or a label (`contact alice`).
    pub label: String,
    /// Names of the peer or of the authors, at most [`MAX_NAMES`].
    pub with: Vec<String>,
    pub messages: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    #[serde(skip)]
    pub key: ConversationKey,
}

/// One conversation's messages, as `client history show ID` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationMessages {
    Chat(ChatRecord),
    /// In the order every member shares.
    Log(Vec<GroupLine>),
}

/// What forgetting removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Forgotten {
    /// Messages deleted.
    pub messages: u64,
    /// Every row deleted (messages, chats, and rows of other tables keyed to
    /// the conversations).
    pub rows: u64,
    /// Whether the deleted pages also left the write-ahead log: false when
    /// another client had the database open, in which case they leave it at
    /// that client's next checkpoint.
    pub wiped: bool,
}

impl History {
    /// Every conversation in the history, the most recently active first.
    pub fn conversations(&self) -> Result<Vec<StoredConversation>, ClientError> {
        let read = || -> rusqlite::Result<Vec<StoredConversation>> {
            let conn = self.conn();
            let tx = conn.unchecked_transaction()?;
            let mut out = Vec::new();
            // Logs and v2 group rooms: one row per key, with its authors' names.
            for (sql, names_sql, kind) in [
                (
                    "SELECT conversation, MIN(room), COUNT(*), MIN(received_ms), MAX(received_ms)
                     FROM log_messages GROUP BY conversation LIMIT ?1",
                    "SELECT DISTINCT author_name FROM log_messages WHERE conversation = ?1 LIMIT ?2",
                    ConversationKind::Log,
                ),
                (
                    "SELECT room_tag, MIN(room), COUNT(*), MIN(received_ms), MAX(received_ms)
                     FROM group_messages GROUP BY room_tag LIMIT ?1",
                    "SELECT DISTINCT author_name FROM group_messages WHERE room_tag = ?1 LIMIT ?2",
                    ConversationKind::GroupV2,
                ),
            ] {
                let mut stmt = tx.prepare(sql)?;
                let mut names_stmt = tx.prepare(names_sql)?;
                let rows = stmt.query_map(params![MAX_PER_KIND], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        from_db(r.get(2)?),
                        from_db(r.get(3)?),
                        from_db(r.get(4)?),
                    ))
                })?;
                for row in rows {
                    let (raw, label, count, first, last) = row?;
                    // A key of another length was not written by p2pchat: skip it.
                    let Ok(key) = <[u8; 32]>::try_from(raw.as_slice()) else {
                        continue;
                    };
                    let names = names_stmt
                        .query_map(params![raw, MAX_NAMES as i64], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()?;
                    let key = match kind {
                        ConversationKind::Log => ConversationKey::Log(key),
                        _ => ConversationKey::GroupV2(key),
                    };
                    out.push(listed(key, kind, label, names, count, (first, last)));
                }
            }
            let mut stmt = tx.prepare(
                "SELECT c.id, c.room, c.peer, c.started_ms,
                        COUNT(m.id), MAX(COALESCE(m.received_ms, m.sent_ms)), c.ended_ms
                 FROM chats c LEFT JOIN messages m ON m.chat_id = c.id
                 GROUP BY c.id LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![MAX_PER_KIND], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    from_db(r.get(3)?),
                    from_db(r.get(4)?),
                    r.get::<_, Option<i64>>(5)?.map(from_db),
                    r.get::<_, Option<i64>>(6)?.map(from_db),
                ))
            })?;
            for row in rows {
                let (id, room, peer, started, count, last_msg, ended) = row?;
                let last = [Some(started), last_msg, ended].into_iter().flatten().max();
                out.push(listed(
                    ConversationKey::Chat(ChatId(id)),
                    ConversationKind::Chat,
                    room,
                    vec![peer],
                    count,
                    (started, last.unwrap_or(started)),
                ));
            }
            Ok(out)
        };
        let mut all = read().map_err(|e| self.fail("read the conversations", &e))?;
        all.sort_by(|a, b| (b.last_ms, &b.conversation).cmp(&(a.last_ms, &a.conversation)));
        Ok(all)
    }

    /// The conversation whose id starts with `typed` (at least [`MIN_TYPED_ID`]
    /// hex digits, any case). None, or several, is an error that says what to do.
    pub fn find_conversation(&self, typed: &str) -> Result<StoredConversation, ClientError> {
        let wanted = typed.trim().to_ascii_lowercase();
        if wanted.len() < MIN_TYPED_ID || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClientError::Usage(format!(
                "`{}` is not a conversation id: type at least {MIN_TYPED_ID} of the hex digits \
                 `client history list` shows",
                wire::sanitize_for_terminal(typed)
            )));
        }
        let mut found: Vec<StoredConversation> = self
            .conversations()?
            .into_iter()
            .filter(|c| c.conversation.starts_with(&wanted))
            .collect();
        match found.len() {
            0 => Err(ClientError::Usage(format!(
                "no conversation with id {wanted} in {}; `client history list` lists them",
                self.path.display()
            ))),
            1 => Ok(found.remove(0)),
            _ => Err(ClientError::Usage(format!(
                "several conversations have ids starting with {wanted} ({}); type more digits",
                found
                    .iter()
                    .map(|c| &c.conversation[..SHORT_ID_LEN * 2])
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// A conversation's messages: at most `limit` of a log, oldest first.
    pub fn conversation_messages(
        &self,
        key: &ConversationKey,
        limit: u32,
    ) -> Result<ConversationMessages, ClientError> {
        match key {
            ConversationKey::Log(id) => Ok(ConversationMessages::Log(
                self.conversation_lines(id, limit)?,
            )),
            ConversationKey::GroupV2(tag) => {
                Ok(ConversationMessages::Log(self.v2_group_lines(tag, limit)?))
            }
            ConversationKey::Chat(chat) => {
                let read = || -> rusqlite::Result<Option<ChatRecord>> {
                    let conn = self.conn();
                    let tx = conn.unchecked_transaction()?;
                    let mut msgs = tx.prepare(super::MESSAGES_OF_CHAT)?;
                    let mut log = tx.prepare(super::LOG_OF_CHAT)?;
                    tx.query_row(
                        &format!("SELECT {CHAT_COLUMNS} FROM chats WHERE id = ?1"),
                        params![chat.0],
                        |row| chat_from_row(row, &mut msgs, &mut log),
                    )
                    .optional()
                };
                read()
                    .map_err(|e| self.fail("read the chat", &e))?
                    .map(ConversationMessages::Chat)
                    .ok_or_else(|| {
                        ClientError::Usage("that chat is no longer in the history".into())
                    })
            }
        }
    }

    /// Forgets one conversation: see [`History::forget_conversations`].
    pub fn forget_conversation(&self, key: &ConversationKey) -> Result<Forgotten, ClientError> {
        self.forget_conversations(std::slice::from_ref(key), None)
    }

    /// Deletes every row keyed to these conversations, and the contact with
    /// identity `contact` (64 hex digits) if given, in one transaction: either
    /// all of it is gone or nothing is. For a log that is its rows in every
    /// table with a `conversation` column (messages, and whatever else is
    /// stored per conversation); for a v2 chat its row and messages; for a v2
    /// group room its messages. Deleted content is overwritten with zeros
    /// (`secure_delete`) and the write-ahead log is checkpointed and
    /// truncated, so the texts leave the files rather than linger in free pages.
    pub fn forget_conversations(
        &self,
        keys: &[ConversationKey],
        contact: Option<&str>,
    ) -> Result<Forgotten, ClientError> {
        let delete = || -> rusqlite::Result<(u64, u64)> {
            let conn = self.conn();
            conn.pragma_update(None, "secure_delete", true)?;
            let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)?;
            let keyed: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c
                     WHERE m.type = 'table' AND c.name = 'conversation' ORDER BY m.name",
                )?;
                let names = stmt.query_map([], |r| r.get(0))?;
                names.collect::<rusqlite::Result<_>>()?
            };
            let (mut messages, mut rows) = (0u64, 0u64);
            let mut count = |n: usize, is_messages: bool| {
                rows += n as u64;
                if is_messages {
                    messages += n as u64;
                }
            };
            for key in keys {
                match key {
                    ConversationKey::Log(id) => {
                        for table in &keyed {
                            // The name comes from the schema, quoted as an identifier.
                            let sql = format!(
                                "DELETE FROM \"{}\" WHERE conversation = ?1",
                                table.replace('"', "\"\"")
                            );
                            let n = tx.execute(&sql, params![&id[..]])?;
                            count(n, table == "log_messages");
                        }
                    }
                    ConversationKey::Chat(chat) => {
                        let n =
                            tx.execute("DELETE FROM messages WHERE chat_id = ?1", params![chat.0])?;
                        count(n, true);
                        let n = tx.execute("DELETE FROM chats WHERE id = ?1", params![chat.0])?;
                        count(n, false);
                    }
                    ConversationKey::GroupV2(tag) => {
                        let n = tx.execute(
                            "DELETE FROM group_messages WHERE room_tag = ?1",
                            params![&tag[..]],
                        )?;
                        count(n, true);
                    }
                }
            }
            if let Some(identity) = contact {
                let n = tx.execute(
                    "DELETE FROM contacts WHERE identity = ?1",
                    params![identity],
                )?;
                count(n, false);
            }
            tx.commit()?;
            Ok((messages, rows))
        };
        let (messages, rows) = delete().map_err(|e| self.fail("forget the conversation", &e))?;
        Ok(Forgotten {
            messages,
            rows,
            wiped: self.wipe_journal(),
        })
    }

    /// Copies every committed page into the database file and empties the
    /// write-ahead log. Returns false when a reader kept it from completing.
    fn wipe_journal(&self) -> bool {
        let result = self
            .conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        match result {
            // (busy, frames in the log, frames checkpointed); -1 when not in WAL mode.
            Ok((0, log, done)) => log == done,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "history checkpoint after a forget failed");
                false
            }
        }
    }

    /// The conversations that belong to the contact with identity key
    /// `identity` (64 hex digits): its v2 chats, and the log of the pair's own
    /// conversation (`--to`), whose id `pair` only the profile's identity can
    /// compute (None: only the chats).
    pub fn contact_conversations(
        &self,
        identity: &str,
        pair: Option<&[u8; 32]>,
    ) -> Result<Vec<StoredConversation>, ClientError> {
        let chats: Vec<i64> = {
            let read = || -> rusqlite::Result<Vec<i64>> {
                let conn = self.conn();
                let mut stmt = conn.prepare("SELECT id FROM chats WHERE peer_identity = ?1")?;
                let ids = stmt.query_map(params![identity], |r| r.get(0))?;
                ids.collect()
            };
            read().map_err(|e| self.fail("read the contact's chats", &e))?
        };
        Ok(self
            .conversations()?
            .into_iter()
            .filter(|c| match &c.key {
                ConversationKey::Chat(chat) => chats.contains(&chat.0),
                ConversationKey::Log(id) => pair == Some(id),
                ConversationKey::GroupV2(_) => false,
            })
            .collect())
    }

    /// A v2 group room's messages by its tag: the last `limit`, oldest first.
    fn v2_group_lines(&self, tag: &[u8; 32], limit: u32) -> Result<Vec<GroupLine>, ClientError> {
        self.lines_where(
            "SELECT room, author, author_name, seq, depth, sent_ms, text
             FROM group_messages WHERE room_tag = ?1
             ORDER BY depth DESC, author DESC, seq DESC LIMIT ?2",
            params![&tag[..], i64::from(limit)],
        )
    }
}

fn listed(
    key: ConversationKey,
    kind: ConversationKind,
    label: String,
    mut with: Vec<String>,
    messages: u64,
    (first_ms, last_ms): (u64, u64),
) -> StoredConversation {
    let full = hex::encode(key.digest(first_ms));
    with.retain(|n| !n.is_empty());
    with.truncate(MAX_NAMES);
    StoredConversation {
        id: full[..SHORT_ID_LEN].to_owned(),
        conversation: full,
        kind,
        label,
        with,
        messages,
        first_ms,
        last_ms,
        key,
    }
}

#[cfg(test)]
mod tests {
    use dhke::Identity;
    use wire::group::GroupLog;

    use super::*;

    #[test]
    fn forgetting_a_log_deletes_its_rows_in_every_table_keyed_by_conversation() {
        let dir = std::env::temp_dir().join(format!("p2pchat-forget-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let h = History::open(&dir.join("h.sqlite3")).unwrap();
        // A table added later (file records, say) keyed the same way.
        h.conn()
            .execute_batch("CREATE TABLE transfers_seen (conversation BLOB NOT NULL, name TEXT)")
            .unwrap();
        let ann = Identity::from_seed(&[1; 32]);
        for id in [[1u8; 32], [2u8; 32]] {
            let mut log = GroupLog::new(id, ann.public().0);
            let msg = log.write(&ann, format!("text {}", id[0]), 5).unwrap();
            h.record_group("r", &msg, "ann", 6 + u64::from(id[0]))
                .unwrap();
            h.conn()
                .execute(
                    "INSERT INTO transfers_seen VALUES (?1, 'f')",
                    params![&id[..]],
                )
                .unwrap();
        }
        let chat = h.start_chat("r", "bob", "", "a", "direct", "1", 1).unwrap();
        h.record_outgoing(chat, 1, "me", "chat text", 2).unwrap();
        let all = h.conversations().unwrap();
        let kinds: Vec<_> = all.iter().map(|c| (c.kind, c.messages)).collect();
        // The most recently active first.
        assert_eq!(
            kinds,
            [
                (ConversationKind::Log, 1),
                (ConversationKind::Log, 1),
                (ConversationKind::Chat, 1)
            ]
        );
        assert_eq!(all[0].id, "02020202");
        assert_eq!(all[0].with, ["ann"]);
        let gone = h
            .forget_conversation(&ConversationKey::Log([2; 32]))
            .unwrap();
        assert_eq!((gone.messages, gone.rows, gone.wiped), (1, 2, true));
        let left: Vec<Vec<u8>> = h
            .conn()
            .prepare("SELECT conversation FROM transfers_seen")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(left, vec![vec![1u8; 32]]);
        assert_eq!(h.conversations().unwrap().len(), 2);
        // The chat by a typed prefix of its id, in any case.
        let chat_id = h.conversations().unwrap()[1].id.to_ascii_uppercase();
        let found = h.find_conversation(&chat_id[..5]).unwrap();
        assert_eq!(found.key, ConversationKey::Chat(chat));
        let gone = h.forget_conversation(&found.key).unwrap();
        assert_eq!((gone.messages, gone.rows), (1, 2));
        assert!(h.query(None, None, 10).unwrap().is_empty());
        drop(h);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
