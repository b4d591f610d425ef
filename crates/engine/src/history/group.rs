//! Group rooms' messages in the history database: stored once per (room,
//! author, seq) with their signed bytes, listed in the order every member
//! shares (docs/protocol.md §17.3), and read back to restore a member's log.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use wire::group::{GroupMsg, BACKLOG};

use super::{from_db, to_db, History};
use crate::error::ClientError;

/// Most bytes one stored message may decode from (its text is at most 16 KiB).
const MAX_ENCODED: usize = 64 * 1024;

/// One group message as `client history --room` and `/history` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupLine {
    pub room: String,
    /// 64 hex digits of the author's key.
    pub author: String,
    pub author_name: String,
    pub seq: u64,
    pub depth: u64,
    pub sent_at_ms: u64,
    pub text: String,
}

impl History {
    /// Stores a delivered message of a conversation's log (before it is shown),
    /// under the conversation id the message carries. Returns `false` when it
    /// was stored already, which changes nothing.
    pub fn record_group(
        &self,
        room: &str,
        msg: &GroupMsg,
        author_name: &str,
        received_ms: u64,
    ) -> Result<bool, ClientError> {
        let b = &msg.body;
        let encoded = wire::encode(msg).map_err(|e| ClientError::Internal(e.into()))?;
        let (depth, _, _) = msg.order_key();
        let inserted = self
            .conn()
            .execute(
                "INSERT INTO log_messages
                     (conversation, room, author, author_name, seq, depth, sent_ms,
                      received_ms, text, encoded)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (conversation, author, seq) DO NOTHING",
                params![
                    &b.conversation[..],
                    room,
                    &b.author[..],
                    author_name,
                    to_db(b.seq),
                    to_db(depth),
                    to_db(b.sent_at_ms),
                    to_db(received_ms),
                    b.text,
                    encoded
                ],
            )
            .map_err(|e| self.fail("save the group message", &e))?;
        Ok(inserted == 1)
    }

    /// The last [`BACKLOG`] stored messages of conversation `conversation`,
    /// oldest first in the shared order, to restore its log: nothing of any
    /// other conversation, whatever its tag. A row that no longer decodes is
    /// skipped (the log will fetch it from the others again).
    pub fn group_log(&self, conversation: &[u8; 32]) -> Result<Vec<GroupMsg>, ClientError> {
        let read = || -> rusqlite::Result<Vec<Vec<u8>>> {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT encoded FROM log_messages WHERE conversation = ?1
                 ORDER BY depth DESC, author DESC, seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![&conversation[..], BACKLOG as i64], |r| r.get(0))?;
            rows.collect()
        };
        let mut rows = read().map_err(|e| self.fail("read the group history", &e))?;
        rows.reverse();
        Ok(rows
            .iter()
            .filter(|bytes| bytes.len() <= MAX_ENCODED)
            .filter_map(|bytes| wire::decode::<GroupMsg>(bytes).ok())
            .collect())
    }

    /// The highest seq of `author`'s that is stored in conversation
    /// `conversation` (0 for none): a restarted member's counter goes on past
    /// it, even when its own messages are older than the restored window.
    pub fn group_own_last(
        &self,
        conversation: &[u8; 32],
        author: &[u8; 32],
    ) -> Result<u64, ClientError> {
        let last: Option<i64> = self
            .conn()
            .query_row(
                "SELECT MAX(seq) FROM log_messages WHERE conversation = ?1 AND author = ?2",
                params![&conversation[..], &author[..]],
                |r| r.get(0),
            )
            .map_err(|e| self.fail("read the group history", &e))?;
        Ok(last.map_or(0, from_db))
    }

    /// How far another member holds our messages in conversation
    /// `conversation`: our seq 1..=this (0 for none), from receipts.
    pub fn log_acked(&self, conversation: &[u8; 32]) -> Result<u64, ClientError> {
        let acked: Option<i64> = self
            .conn()
            .query_row(
                "SELECT acked_seq FROM log_receipts WHERE conversation = ?1",
                params![&conversation[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.fail("read the receipts", &e))?;
        Ok(acked.map_or(0, from_db))
    }

    /// Records that another member holds our messages up to `upto` (never lowers it).
    pub fn set_log_acked(&self, conversation: &[u8; 32], upto: u64) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "INSERT INTO log_receipts (conversation, acked_seq) VALUES (?1, ?2)
                 ON CONFLICT (conversation) DO UPDATE SET acked_seq = MAX(acked_seq, ?2)",
                params![&conversation[..], to_db(upto)],
            )
            .map_err(|e| self.fail("record the delivery", &e))?;
        Ok(())
    }

    /// The room's messages in the shared order: the last `limit`, oldest first
    /// (v3 logs and v2 group rooms stored under the same code text).
    pub fn group_lines(&self, room: &str, limit: u32) -> Result<Vec<GroupLine>, ClientError> {
        self.lines_where(
            "SELECT room, author, author_name, seq, depth, sent_ms, text
             FROM log_messages WHERE room = ?1
             UNION ALL
             SELECT room, author, author_name, seq, depth, sent_ms, text
             FROM group_messages WHERE room = ?1
             ORDER BY 5 DESC, 2 DESC, 4 DESC LIMIT ?2",
            params![room, i64::from(limit)],
        )
    }

    /// Conversation `conversation`'s messages in the shared order: the last
    /// `limit`, oldest first (`/history` in a running group).
    pub fn conversation_lines(
        &self,
        conversation: &[u8; 32],
        limit: u32,
    ) -> Result<Vec<GroupLine>, ClientError> {
        self.lines_where(
            "SELECT room, author, author_name, seq, depth, sent_ms, text
             FROM log_messages WHERE conversation = ?1
             ORDER BY depth DESC, author DESC, seq DESC LIMIT ?2",
            params![&conversation[..], i64::from(limit)],
        )
    }

    pub(super) fn lines_where(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<GroupLine>, ClientError> {
        let read = || -> rusqlite::Result<Vec<GroupLine>> {
            let conn = self.conn();
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map(params, |r| {
                let author: Vec<u8> = r.get(1)?;
                Ok(GroupLine {
                    room: r.get(0)?,
                    author: hex::encode(author),
                    author_name: r.get(2)?,
                    seq: from_db(r.get(3)?),
                    depth: from_db(r.get(4)?),
                    sent_at_ms: from_db(r.get(5)?),
                    text: r.get(6)?,
                })
            })?;
            rows.collect()
        };
        let mut lines = read().map_err(|e| self.fail("read the group history", &e))?;
        lines.reverse();
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use dhke::Identity;
    use wire::group::GroupLog;

    use super::*;

    #[test]
    fn stored_once_listed_in_the_shared_order_and_restored() {
        let dir =
            std::env::temp_dir().join(format!("p2pchat-group-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = History::open(&dir.join("h.sqlite3")).unwrap();
        let mut rng = rand::rngs::OsRng;
        let (a, b) = (Identity::generate(&mut rng), Identity::generate(&mut rng));
        let room = [7u8; 32];
        let (mut la, mut lb) = (
            GroupLog::new(room, a.public().0),
            GroupLog::new(room, b.public().0),
        );
        let m1 = la.write(&a, "one".into(), 1).unwrap();
        lb.receive(m1.clone(), 1).unwrap();
        let m2 = lb.write(&b, "two".into(), 2).unwrap();
        // Stored in the wrong order, listed in the shared one.
        assert!(db.record_group("r", &m2, "bob", 3).unwrap());
        assert!(db.record_group("r", &m1, "alice", 3).unwrap());
        assert!(!db.record_group("r", &m1, "alice", 4).unwrap());
        let lines = db.group_lines("r", 10).unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["one", "two"]);
        assert_eq!(lines[1].author_name, "bob");
        assert_eq!(db.conversation_lines(&room, 10).unwrap().len(), 2);
        let restored = db.group_log(&room).unwrap();
        assert_eq!(restored, vec![m1.clone(), m2]);
        assert_eq!(db.group_own_last(&room, &a.public().0).unwrap(), 1);
        // Another conversation under the same code text shares nothing.
        let other = [8u8; 32];
        assert!(db.group_log(&other).unwrap().is_empty());
        assert_eq!(db.group_own_last(&other, &a.public().0).unwrap(), 0);
        let mut lo = GroupLog::new(other, a.public().0);
        let o1 = lo.write(&a, "other one".into(), 1).unwrap();
        assert!(
            db.record_group("r", &o1, "alice", 5).unwrap(),
            "same author and seq, other conversation"
        );
        assert_eq!(db.group_log(&other).unwrap(), vec![o1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
