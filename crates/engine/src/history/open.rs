//! The messenger's list of open conversations in the history database, so a
//! client started again (after a quit, a crash or SIGKILL) reopens them.

use rusqlite::params;

use super::{to_db, History};
use crate::error::ClientError;

/// What a stored open conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenKind {
    /// A two-party room: `target` is its code.
    Room,
    /// A group room: `target` is its code.
    Group,
    /// A contact's conversation (`--to`): `target` is its fingerprint.
    Contact,
}

impl OpenKind {
    fn as_str(self) -> &'static str {
        match self {
            OpenKind::Room => "room",
            OpenKind::Group => "group",
            OpenKind::Contact => "contact",
        }
    }

    fn parse(text: &str) -> Option<OpenKind> {
        match text {
            "room" => Some(OpenKind::Room),
            "group" => Some(OpenKind::Group),
            "contact" => Some(OpenKind::Contact),
            _ => None,
        }
    }
}

/// One conversation to reopen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEntry {
    pub kind: OpenKind,
    pub target: String,
}

/// At most this many are kept (the messenger's own cap is lower).
const MAX_OPEN: i64 = 1024;

impl History {
    /// Records `entry` as open (again); the oldest beyond [`MAX_OPEN`] are dropped.
    pub fn remember_open(&self, entry: &OpenEntry, now_ms: u64) -> Result<(), ClientError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO open_conversations (kind, target, opened_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, target) DO UPDATE SET opened_ms = excluded.opened_ms",
            params![entry.kind.as_str(), entry.target, to_db(now_ms)],
        )
        .and_then(|_| {
            conn.execute(
                "DELETE FROM open_conversations WHERE rowid NOT IN
                       (SELECT rowid FROM open_conversations ORDER BY opened_ms DESC LIMIT ?1)",
                params![MAX_OPEN],
            )
        })
        .map(|_| ())
        .map_err(|e| self.fail("record the open conversations", &e))
    }

    /// Takes `entry` off the list (closed, or ended for good).
    pub fn forget_open(&self, entry: &OpenEntry) -> Result<(), ClientError> {
        self.conn()
            .execute(
                "DELETE FROM open_conversations WHERE kind = ?1 AND target = ?2",
                params![entry.kind.as_str(), entry.target],
            )
            .map(|_| ())
            .map_err(|e| self.fail("record the open conversations", &e))
    }

    /// The open list, oldest first (the order they are reopened and numbered in).
    pub fn open_conversations(&self) -> Result<Vec<OpenEntry>, ClientError> {
        let read = || -> rusqlite::Result<Vec<OpenEntry>> {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT kind, target FROM open_conversations ORDER BY opened_ms, rowid LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![MAX_OPEN], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, target) = row?;
                // A kind a later version wrote is skipped, not an error.
                if let Some(kind) = OpenKind::parse(&kind) {
                    out.push(OpenEntry { kind, target });
                }
            }
            Ok(out)
        };
        read().map_err(|e| self.fail("read the open conversations", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_list_keeps_order_and_forgets_what_is_closed() {
        let db = crate::history::tests::TempDb::new("open");
        let h = History::open(&db.0).unwrap();
        let room = OpenEntry {
            kind: OpenKind::Room,
            target: "7-velvet-harbor".into(),
        };
        let group = OpenEntry {
            kind: OpenKind::Group,
            target: "3-amber-fox".into(),
        };
        h.remember_open(&room, 10).unwrap();
        h.remember_open(&group, 20).unwrap();
        h.remember_open(&room, 5).unwrap();
        assert_eq!(
            h.open_conversations().unwrap(),
            vec![room.clone(), group.clone()]
        );
        h.forget_open(&room).unwrap();
        assert_eq!(h.open_conversations().unwrap(), vec![group]);
    }
}
