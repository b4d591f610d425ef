//! The mailbox in SQLite (docs/protocol.md §22.3): one file beside a single
//! mediator, WAL with `synchronous = NORMAL`, so each request is one
//! transaction committed to the log before its answer: a killed process loses
//! nothing it answered (a power loss may lose the last few, deploy/README.md).
//! One connection behind a lock, used from tokio's blocking threads.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::{BoxFuture, FutureExt};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::Semaphore;
use wire::mailbox::{item_id, StoredItem, MAX_ITEMS_BYTES};

use super::{
    sweep_in_batches, unavailable, Cap, Fetched, Held, HeldGauge, MailboxTable, Opened, Refusal,
    StoreCaps, Stored, ANSWER_ITEM_OVERHEAD, ITEM_COST, QUEUE_COST, REMEMBERED_COST,
};

/// The schema's version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;
/// Records one sweep transaction deletes at most, so requests get the store
/// between batches.
const SWEEP_BATCH: i64 = 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    id BLOB PRIMARY KEY NOT NULL,
    add_key BLOB NOT NULL,
    read_key BLOB,
    touched INTEGER NOT NULL,
    items INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queues_idle ON queues(touched) WHERE items = 0;
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY,
    queue BLOB NOT NULL,
    id BLOB NOT NULL,
    sealed BLOB NOT NULL,
    expires INTEGER NOT NULL,
    stored INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS items_id ON items(queue, id);
CREATE INDEX IF NOT EXISTS items_order ON items(queue, seq);
CREATE INDEX IF NOT EXISTS items_queue_expiry ON items(queue, expires);
CREATE INDEX IF NOT EXISTS items_expiry ON items(expires);
CREATE TABLE IF NOT EXISTS removed (
    queue BLOB NOT NULL,
    id BLOB NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (queue, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS removed_expiry ON removed(expires);
";

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(
        "cannot open the mailbox store {0}: {1} (pass --mailbox-db PATH in a writable directory)"
    )]
    Open(String, rusqlite::Error),
    #[error("the mailbox store {0} was made by another mediator version (schema {1}, this one reads {SCHEMA_VERSION}); move it away or use another --mailbox-db")]
    Schema(String, i64),
}

/// The connection and the totals the caps count, behind one lock.
#[derive(Debug)]
struct Db {
    conn: Connection,
    caps: StoreCaps,
    held: Held,
}

/// Changes to [`Held`] a transaction makes, applied once it commits.
#[derive(Debug, Default, Clone, Copy)]
struct Delta {
    items: i64,
    bytes: i64,
}

impl Delta {
    fn item(&mut self, n: i64, sealed: i64) {
        self.items += n;
        self.bytes += sealed + n * ITEM_COST as i64;
    }

    fn bytes(&mut self, n: i64) {
        self.bytes += n;
    }
}

fn apply(held: &mut Held, delta: Delta) {
    held.items = held.items.saturating_add_signed(delta.items);
    held.bytes = held.bytes.saturating_add_signed(delta.bytes);
}

/// A failure of SQLite itself: the disk is full (`Full(Disk)`), or the store
/// is unusable now.
fn failed(e: rusqlite::Error) -> Refusal {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        tracing::warn!("mailbox store: disk full");
        return Refusal::Full(Cap::Disk);
    }
    unavailable(e)
}

type Tx<'a> = rusqlite::Transaction<'a>;

/// Deletes `queue`'s expired items; returns their count and sealed bytes.
fn purge(tx: &Tx<'_>, queue: &[u8; 32], now: u64) -> rusqlite::Result<(i64, i64)> {
    let mut stmt = tx.prepare_cached(
        "DELETE FROM items WHERE queue = ?1 AND expires <= ?2 RETURNING length(sealed)",
    )?;
    let lens = stmt
        .query_map(params![queue, now as i64], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    let (n, bytes) = (lens.len() as i64, lens.iter().sum::<i64>());
    if n > 0 {
        tx.prepare_cached(
            "UPDATE queues SET items = items - ?2, bytes = bytes - ?3 WHERE id = ?1",
        )?
        .execute(params![queue, n, bytes])?;
    }
    Ok((n, bytes))
}

fn touch(tx: &Tx<'_>, queue: &[u8; 32], now: u64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE queues SET touched = ?2 WHERE id = ?1")?
        .execute(params![queue, now as i64])?;
    Ok(())
}

/// The queue's read key, if it has one; `NoReadKey` without, `OtherKeys` if
/// it is not `read_key`.
fn check_reader(tx: &Tx<'_>, queue: &[u8; 32], read_key: &[u8; 32]) -> Result<(), Refusal> {
    let stored: Option<Option<Vec<u8>>> = tx
        .prepare_cached("SELECT read_key FROM queues WHERE id = ?1")
        .and_then(|mut s| s.query_row([queue], |r| r.get(0)).optional())
        .map_err(failed)?;
    match stored.flatten() {
        None => Err(Refusal::NoReadKey),
        Some(key) if key.as_slice() == read_key => Ok(()),
        Some(_) => Err(Refusal::OtherKeys),
    }
}

impl Db {
    fn open(path: Option<&Path>, caps: StoreCaps) -> Result<Db, OpenError> {
        let place = path.map_or_else(|| "(in memory)".to_owned(), |p| p.display().to_string());
        let fail = |e| OpenError::Open(place.clone(), e);
        let conn = match path {
            Some(path) => Connection::open(path),
            None => Connection::open_in_memory(),
        }
        .map_err(fail)?;
        // WAL: readers never block the writer, and a commit is an append to
        // the log. NORMAL: the log is synced at checkpoints, not at every
        // commit, so a killed process loses nothing committed, a power loss
        // the commits since the last checkpoint. secure_delete: a removed
        // item's bytes are overwritten, not left in free pages.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(fail)?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(fail)?;
        if version != 0 && version != SCHEMA_VERSION {
            return Err(OpenError::Schema(place, version));
        }
        conn.execute_batch(SCHEMA).map_err(fail)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(fail)?;
        let (queues, items, bytes): (i64, i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(items), 0), COALESCE(SUM(bytes), 0) FROM queues",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(fail)?;
        let remembered: i64 = conn
            .query_row("SELECT COUNT(*) FROM removed", [], |r| r.get(0))
            .map_err(fail)?;
        let held = Held {
            items: items as u64,
            bytes: (bytes as u64)
                + items as u64 * ITEM_COST
                + remembered as u64 * REMEMBERED_COST
                + queues as u64 * QUEUE_COST,
        };
        Ok(Db { conn, caps, held })
    }

    fn write(&mut self) -> Result<Tx<'_>, Refusal> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)
    }

    fn open_queue(
        &mut self,
        queue: &[u8; 32],
        add_key: &[u8; 32],
        read_key: &[u8; 32],
        now: u64,
        may_create: bool,
    ) -> Result<Opened, Refusal> {
        let (caps, held) = (self.caps, self.held);
        let tx = self.write()?;
        let row: Option<(Vec<u8>, Option<Vec<u8>>)> = tx
            .prepare_cached("SELECT add_key, read_key FROM queues WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([queue], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(failed)?;
        let mut delta = Delta::default();
        let created = match row {
            None => {
                if !may_create {
                    return Err(Refusal::Full(Cap::SourceBytes));
                }
                if held.bytes + QUEUE_COST > caps.max_bytes {
                    return Err(Refusal::Full(Cap::StoreBytes));
                }
                tx.prepare_cached(
                    "INSERT INTO queues (id, add_key, read_key, touched, items, bytes) \
                     VALUES (?1, ?2, ?3, ?4, 0, 0)",
                )
                .and_then(|mut s| s.execute(params![queue, add_key, read_key, now as i64]))
                .map_err(failed)?;
                delta.bytes(QUEUE_COST as i64);
                true
            }
            Some((add, _)) if add.as_slice() != add_key => return Err(Refusal::OtherKeys),
            Some((_, Some(read))) if read.as_slice() != read_key => return Err(Refusal::OtherKeys),
            Some((_, read)) => {
                if read.is_none() {
                    tx.prepare_cached("UPDATE queues SET read_key = ?2 WHERE id = ?1")
                        .and_then(|mut s| s.execute(params![queue, read_key]))
                        .map_err(failed)?;
                }
                false
            }
        };
        let (n, bytes) = purge(&tx, queue, now).map_err(failed)?;
        delta.item(-n, -bytes);
        touch(&tx, queue, now).map_err(failed)?;
        let items: i64 = tx
            .prepare_cached("SELECT items FROM queues WHERE id = ?1")
            .and_then(|mut s| s.query_row([queue], |r| r.get(0)))
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        apply(&mut self.held, delta);
        Ok(Opened {
            items: u32::try_from(items).unwrap_or(u32::MAX),
            created,
        })
    }

    fn add(
        &mut self,
        queue: &[u8; 32],
        add_key: &[u8; 32],
        item: &[u8],
        now: u64,
        source_ok: bool,
    ) -> Result<Stored, Refusal> {
        let (caps, held) = (self.caps, self.held);
        let id = item_id(item);
        let tx = self.write()?;
        let row: Option<(Vec<u8>, i64, i64)> = tx
            .prepare_cached("SELECT add_key, items, bytes FROM queues WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([queue], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()
            })
            .map_err(failed)?;
        let mut delta = Delta::default();
        let (exists, items, bytes) = match row {
            Some((key, _, _)) if key.as_slice() != add_key => return Err(Refusal::OtherKeys),
            Some((_, items, bytes)) => {
                let (n, b) = purge(&tx, queue, now).map_err(failed)?;
                delta.item(-n, -b);
                (true, items - n, bytes - b)
            }
            None => (false, 0, 0),
        };
        if exists {
            let held_until: Option<i64> = tx
                .prepare_cached("SELECT expires FROM items WHERE queue = ?1 AND id = ?2")
                .and_then(|mut s| s.query_row(params![queue, id], |r| r.get(0)).optional())
                .map_err(failed)?;
            if let Some(expires) = held_until {
                touch(&tx, queue, now).map_err(failed)?;
                tx.commit().map_err(failed)?;
                apply(&mut self.held, delta);
                return Ok(Stored {
                    id,
                    expires_unix: expires as u64,
                    fresh: false,
                });
            }
            let removed: Option<i64> = tx
                .prepare_cached(
                    "SELECT 1 FROM removed WHERE queue = ?1 AND id = ?2 AND expires > ?3",
                )
                .and_then(|mut s| {
                    s.query_row(params![queue, id, now as i64], |r| r.get(0))
                        .optional()
                })
                .map_err(failed)?;
            if removed.is_some() {
                return Err(Refusal::Replay);
            }
        }
        let len = item.len() as u64;
        if items as u64 + 1 > caps.queue_items {
            return Err(Refusal::Full(Cap::QueueItems));
        }
        if bytes as u64 + len > caps.queue_bytes {
            return Err(Refusal::Full(Cap::QueueBytes));
        }
        if !source_ok {
            return Err(Refusal::Full(Cap::SourceBytes));
        }
        let cost = len + ITEM_COST + if exists { 0 } else { QUEUE_COST };
        let after_purge = held.bytes.saturating_add_signed(delta.bytes);
        if after_purge + cost > caps.max_bytes {
            return Err(Refusal::Full(Cap::StoreBytes));
        }
        if !exists {
            tx.prepare_cached(
                "INSERT INTO queues (id, add_key, read_key, touched, items, bytes) \
                 VALUES (?1, ?2, NULL, ?3, 0, 0)",
            )
            .and_then(|mut s| s.execute(params![queue, add_key, now as i64]))
            .map_err(failed)?;
            delta.bytes(QUEUE_COST as i64);
        }
        let expires = now + caps.ttl_secs;
        tx.prepare_cached(
            "INSERT INTO items (queue, id, sealed, expires, stored) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![queue, id, item, expires as i64, now as i64]))
        .map_err(failed)?;
        tx.prepare_cached(
            "UPDATE queues SET items = items + 1, bytes = bytes + ?2, touched = ?3 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![queue, len as i64, now as i64]))
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        delta.item(1, len as i64);
        apply(&mut self.held, delta);
        Ok(Stored {
            id,
            expires_unix: expires,
            fresh: true,
        })
    }

    fn read_key(&mut self, queue: &[u8; 32]) -> Result<Option<[u8; 32]>, Refusal> {
        let key: Option<Option<Vec<u8>>> = self
            .conn
            .prepare_cached("SELECT read_key FROM queues WHERE id = ?1")
            .and_then(|mut s| s.query_row([queue], |r| r.get(0)).optional())
            .map_err(failed)?;
        Ok(key.flatten().and_then(|k| k.try_into().ok()))
    }

    fn fetch(
        &mut self,
        queue: &[u8; 32],
        read_key: &[u8; 32],
        now: u64,
    ) -> Result<Fetched, Refusal> {
        let tx = self.write()?;
        check_reader(&tx, queue, read_key)?;
        let mut delta = Delta::default();
        let (n, b) = purge(&tx, queue, now).map_err(failed)?;
        delta.item(-n, -b);
        touch(&tx, queue, now).map_err(failed)?;
        let mut items = Vec::new();
        let mut more = false;
        {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, sealed, expires FROM items WHERE queue = ?1 ORDER BY seq",
                )
                .map_err(failed)?;
            let mut rows = stmt.query([queue]).map_err(failed)?;
            let mut used = 0usize;
            while let Some(row) = rows.next().map_err(failed)? {
                let sealed: Vec<u8> = row.get(1).map_err(failed)?;
                let cost = sealed.len() + ANSWER_ITEM_OVERHEAD;
                if !items.is_empty() && used + cost > MAX_ITEMS_BYTES {
                    more = true;
                    break;
                }
                used += cost;
                let id: Vec<u8> = row.get(0).map_err(failed)?;
                let expires: i64 = row.get(2).map_err(failed)?;
                let Ok(id) = <[u8; 16]>::try_from(id) else {
                    continue;
                };
                items.push(StoredItem {
                    id,
                    sealed,
                    expires_unix: expires as u64,
                });
            }
        }
        tx.commit().map_err(failed)?;
        apply(&mut self.held, delta);
        Ok(Fetched { items, more })
    }

    fn remove(
        &mut self,
        queue: &[u8; 32],
        read_key: &[u8; 32],
        ids: &[[u8; 16]],
        now: u64,
    ) -> Result<u32, Refusal> {
        let tx = self.write()?;
        check_reader(&tx, queue, read_key)?;
        let mut delta = Delta::default();
        let (n, b) = purge(&tx, queue, now).map_err(failed)?;
        delta.item(-n, -b);
        let (mut removed, mut bytes) = (0i64, 0i64);
        for id in ids {
            let gone: Option<(i64, i64)> = tx
                .prepare_cached(
                    "DELETE FROM items WHERE queue = ?1 AND id = ?2 \
                     RETURNING length(sealed), expires",
                )
                .and_then(|mut s| {
                    s.query_row(params![queue, id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(failed)?;
            let Some((len, expires)) = gone else { continue };
            let remembered = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO removed (queue, id, expires) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![queue, id, expires]))
                .map_err(failed)?;
            removed += 1;
            bytes += len;
            delta.bytes(remembered as i64 * REMEMBERED_COST as i64);
        }
        tx.prepare_cached(
            "UPDATE queues SET items = items - ?2, bytes = bytes - ?3, touched = ?4 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![queue, removed, bytes, now as i64]))
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        delta.item(-removed, -bytes);
        apply(&mut self.held, delta);
        Ok(u32::try_from(removed).unwrap_or(u32::MAX))
    }

    /// One sweep transaction: at most [`SWEEP_BATCH`] expired items,
    /// remembered ids and idle queues each. Returns the records deleted.
    fn sweep_batch(&mut self, now: u64) -> rusqlite::Result<u64> {
        let idle_since = now.saturating_sub(self.caps.ttl_secs) as i64;
        let now = now as i64;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut delta = Delta::default();
        let expired: Vec<(Vec<u8>, i64)> = tx
            .prepare_cached(
                "DELETE FROM items WHERE seq IN \
                 (SELECT seq FROM items WHERE expires <= ?1 LIMIT ?2) \
                 RETURNING queue, length(sealed)",
            )?
            .query_map(params![now, SWEEP_BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut per_queue: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        for (queue, len) in &expired {
            let entry = per_queue.entry(queue.clone()).or_default();
            entry.0 += 1;
            entry.1 += len;
        }
        for (queue, (n, bytes)) in per_queue {
            tx.prepare_cached(
                "UPDATE queues SET items = items - ?2, bytes = bytes - ?3 WHERE id = ?1",
            )?
            .execute(params![queue, n, bytes])?;
            delta.item(-n, -bytes);
        }
        let forgotten = tx
            .prepare_cached(
                "DELETE FROM removed WHERE (queue, id) IN \
                 (SELECT queue, id FROM removed WHERE expires <= ?1 LIMIT ?2)",
            )?
            .execute(params![now, SWEEP_BATCH])?;
        delta.bytes(-(forgotten as i64) * REMEMBERED_COST as i64);
        let idle: Vec<Vec<u8>> = tx
            .prepare_cached(
                "DELETE FROM queues WHERE id IN \
                 (SELECT id FROM queues WHERE items = 0 AND touched <= ?1 LIMIT ?2) \
                 RETURNING id",
            )?
            .query_map(params![idle_since, SWEEP_BATCH], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut leftovers = 0;
        for queue in &idle {
            leftovers += tx
                .prepare_cached("DELETE FROM removed WHERE queue = ?1")?
                .execute([queue])?;
        }
        delta.bytes(
            -(leftovers as i64) * REMEMBERED_COST as i64 - idle.len() as i64 * QUEUE_COST as i64,
        );
        tx.commit()?;
        apply(&mut self.held, delta);
        Ok((expired.len() + forgotten + idle.len() + leftovers) as u64)
    }
}

/// The SQLite mailbox store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteMailbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Mutex<Db>,
    /// One request at a time on the blocking threads: more would only wait
    /// for the lock there, each holding a thread.
    gate: Semaphore,
    held: HeldGauge,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Db> {
        // A panic inside a transaction rolled it back: the store is consistent.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SqliteMailbox {
    /// Opens (or makes) the store at `path`, or in memory with `None`.
    pub fn open(path: Option<&Path>, caps: StoreCaps) -> Result<SqliteMailbox, OpenError> {
        let db = Db::open(path, caps)?;
        let held = db.held;
        if let Some(path) = path {
            tracing::info!(
                path = %path.display(),
                items = held.items,
                bytes = held.bytes,
                "mailbox store open"
            );
        }
        Ok(SqliteMailbox {
            inner: Arc::new(Inner {
                db: Mutex::new(db),
                gate: Semaphore::new(1),
                held: HeldGauge::new(held),
            }),
        })
    }

    /// Runs `op` on the store on a blocking thread, one at a time.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Db) -> Result<T, Refusal> + Send + 'static,
    ) -> Result<T, Refusal> {
        let Ok(_permit) = self.inner.gate.acquire().await else {
            return Err(unavailable("the store's gate is closed"));
        };
        let inner = self.inner.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut db = inner.lock();
            let result = op(&mut db);
            inner.held.set(db.held);
            result
        })
        .await;
        done.unwrap_or_else(|e| Err(unavailable(e)))
    }
}

impl MailboxTable for SqliteMailbox {
    fn open(
        &self,
        queue: [u8; 32],
        add_key: [u8; 32],
        read_key: [u8; 32],
        now: u64,
        may_create: bool,
    ) -> BoxFuture<'_, Result<Opened, Refusal>> {
        self.run(move |db| db.open_queue(&queue, &add_key, &read_key, now, may_create))
            .boxed()
    }

    fn add(
        &self,
        queue: [u8; 32],
        add_key: [u8; 32],
        item: Vec<u8>,
        now: u64,
        source_ok: bool,
    ) -> BoxFuture<'_, Result<Stored, Refusal>> {
        self.run(move |db| db.add(&queue, &add_key, &item, now, source_ok))
            .boxed()
    }

    fn read_key(&self, queue: [u8; 32]) -> BoxFuture<'_, Result<Option<[u8; 32]>, Refusal>> {
        self.run(move |db| db.read_key(&queue)).boxed()
    }

    fn fetch(
        &self,
        queue: [u8; 32],
        read_key: [u8; 32],
        now: u64,
    ) -> BoxFuture<'_, Result<Fetched, Refusal>> {
        self.run(move |db| db.fetch(&queue, &read_key, now)).boxed()
    }

    fn remove(
        &self,
        queue: [u8; 32],
        read_key: [u8; 32],
        ids: Vec<[u8; 16]>,
        now: u64,
    ) -> BoxFuture<'_, Result<u32, Refusal>> {
        self.run(move |db| db.remove(&queue, &read_key, &ids, now))
            .boxed()
    }

    fn sweep(&self, now: u64) -> BoxFuture<'_, Result<u64, String>> {
        // Until a batch finds nothing left to delete.
        sweep_in_batches(move || async move {
            let gone = self
                .run(move |db| db.sweep_batch(now).map_err(failed))
                .await?;
            Ok((gone, gone > 0))
        })
        .boxed()
    }

    fn held(&self) -> Held {
        self.inner.held.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: StoreCaps = StoreCaps {
        ttl_secs: 100,
        queue_items: 3,
        queue_bytes: 1000,
        max_bytes: 10_000,
    };

    fn item(n: u8, len: usize) -> Vec<u8> {
        vec![n; len]
    }

    /// What the totals would be if counted from the tables now.
    fn recount(db: &Db) -> Held {
        let (queues, items, bytes): (i64, i64, i64) = db
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM queues), (SELECT COUNT(*) FROM items), \
                 (SELECT COALESCE(SUM(length(sealed)), 0) FROM items)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let removed: i64 = db
            .conn
            .query_row("SELECT COUNT(*) FROM removed", [], |r| r.get(0))
            .unwrap();
        Held {
            items: items as u64,
            bytes: bytes as u64
                + items as u64 * ITEM_COST
                + removed as u64 * REMEMBERED_COST
                + queues as u64 * QUEUE_COST,
        }
    }

    #[test]
    fn the_totals_follow_every_step_and_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("mbox-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("totals.sqlite3");
        let (q, add, read) = ([1; 32], [2; 32], [3; 32]);
        {
            let mut db = Db::open(Some(&path), CAPS).unwrap();
            db.add(&q, &add, &item(1, 64), 10, true).unwrap();
            db.add(&q, &add, &item(2, 80), 11, true).unwrap();
            assert_eq!(db.held, recount(&db));
            db.open_queue(&q, &add, &read, 12, true).unwrap();
            db.open_queue(&[9; 32], &add, &read, 12, true).unwrap();
            let ids = [item_id(&item(1, 64))];
            assert_eq!(db.remove(&q, &read, &ids, 13).unwrap(), 1);
            assert_eq!(db.held, recount(&db));
            // Item 2 expires at 111, the remembered id at 110; the queues
            // were last asked at 13.
            db.sweep_batch(111).unwrap();
            assert_eq!(db.held, recount(&db));
            assert_eq!(db.held.items, 0);
            db.add(&q, &add, &item(3, 64), 112, true).unwrap();
        }
        let mut db = Db::open(Some(&path), CAPS).unwrap();
        assert_eq!(db.held, recount(&db));
        db.sweep_batch(1000).unwrap();
        assert_eq!(db.held, Held::default());
        assert_eq!(recount(&db), Held::default());
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A full disk (here SQLite's own page limit, which fails the same way)
    /// refuses adds naming it, and the store keeps serving what it holds.
    #[test]
    fn a_full_disk_refuses_adds_and_the_store_goes_on() {
        let mut db = Db::open(
            None,
            StoreCaps {
                queue_items: 1000,
                queue_bytes: 1 << 30,
                max_bytes: 1 << 30,
                ..CAPS
            },
        )
        .unwrap();
        let (q, add, read) = ([1; 32], [2; 32], [3; 32]);
        db.open_queue(&q, &add, &read, 10, true).unwrap();
        let pages: i64 = db
            .conn
            .pragma_query_value(None, "page_count", |r| r.get(0))
            .unwrap();
        db.conn
            .pragma_update(None, "max_page_count", pages + 8)
            .unwrap();
        let mut stored = Vec::new();
        let refusal = loop {
            let sealed = item(stored.len() as u8, 4000);
            match db.add(&q, &add, &sealed, 10, true) {
                Ok(s) => stored.push(s.id),
                Err(refusal) => break refusal,
            }
            assert!(stored.len() < 100, "the page limit never bit");
        };
        assert_eq!(refusal, Refusal::Full(Cap::Disk));
        assert_eq!(db.held, recount(&db), "the failed add left a trace");
        let fetched = db.fetch(&q, &read, 11).unwrap();
        assert_eq!(fetched.items.len(), stored.len().min(3));
        assert_eq!(
            db.remove(&q, &read, &stored, 12).unwrap() as usize,
            stored.len()
        );
        assert_eq!(db.held, recount(&db));
    }

    #[test]
    fn caps_are_checked_in_order_and_a_refusal_changes_nothing() {
        let mut db = Db::open(None, CAPS).unwrap();
        let (q, add) = ([1; 32], [2; 32]);
        for n in 0..3 {
            db.add(&q, &add, &item(n, 100), 10, true).unwrap();
        }
        assert_eq!(
            db.add(&q, &add, &item(9, 100), 10, true),
            Err(Refusal::Full(Cap::QueueItems))
        );
        let mut other = Db::open(None, CAPS).unwrap();
        other.add(&q, &add, &item(1, 900), 10, true).unwrap();
        assert_eq!(
            other.add(&q, &add, &item(2, 101), 10, true),
            Err(Refusal::Full(Cap::QueueBytes))
        );
        assert_eq!(
            other.add(&q, &add, &item(2, 100), 10, false),
            Err(Refusal::Full(Cap::SourceBytes))
        );
        // A retry is answered even when the source is spent.
        assert!(!other.add(&q, &add, &item(1, 900), 10, false).unwrap().fresh);
        let before = other.held;
        assert_eq!(
            other.add(&[7; 32], &add, &item(1, 64), 10, false),
            Err(Refusal::Full(Cap::SourceBytes))
        );
        assert_eq!(other.held, before);
        assert_eq!(other.held, recount(&other));
    }
}
