//! The offline mailbox (docs/protocol.md §22.3): a connection whose first
//! message is a mailbox request may send up to [`MAX_REQUESTS`] of them, each
//! checked (time, signature, keys, caps) and answered in order. Items are
//! kept by a [`MailboxTable`]: SQLite in a file beside a single mediator
//! ([`SqliteMailbox`]), or Redis when mediators share one ([`RedisMailbox`]).
//!
//! The store holds, per queue, its id, its two public keys, the time of its
//! last request and its counts; per item the id, the sealed bytes, the expiry
//! and its place in the queue; and the ids of removed items until their
//! expiry. Nothing else: no source address, name or tag. The per-source cap
//! is counted here, in memory ([`source::SourceBytes`]).

mod redis;
mod source;
mod sqlite;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::net::TcpStream;
use tokio::time::timeout;
use wire::mailbox::{self as mb, StoredItem, MAX_ITEM, MAX_REMOVE};
use wire::{ClientMsg, ErrorCode, MediatorMsg, Signature64};

pub use self::redis::RedisMailbox;
pub use self::sqlite::SqliteMailbox;
pub(crate) use source::SourceBytes;

use crate::config::Config;
use crate::connection::{refuse, write_msg, End, FrameReader};
use crate::server::Admitted;

/// Requests one mailbox connection may send; then it is closed.
pub const MAX_REQUESTS: usize = 256;
/// `Ping`s answered on one mailbox connection.
const MAX_PINGS: u32 = 64;
/// What the store's cap counts for an item besides its sealed bytes (its id,
/// expiry, order and index entries).
pub const ITEM_COST: u64 = 64;
/// What the store's cap counts for a remembered id.
pub const REMEMBERED_COST: u64 = 64;
/// What the store's cap counts for a queue (its id, keys, counts, times), and
/// what an open that makes one costs its source.
pub const QUEUE_COST: u64 = 128;
/// A `MailboxItems` answer counts each item as its sealed bytes plus this (its
/// id, expiry and lengths, encoded), so that the answer fits one frame however
/// small the items.
pub const ANSWER_ITEM_OVERHEAD: usize = 24;
/// The smallest sealed item: iv, one AES block, the tag (§22.2).
pub const MIN_ITEM: usize = 16 + 16 + 32;
/// How often expired items, remembered ids and idle queues are deleted.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The caps a store applies itself (the per-source cap is the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCaps {
    /// Seconds an item is kept, and a removed item's id remembered.
    pub ttl_secs: u64,
    /// Items per queue.
    pub queue_items: u64,
    /// Sealed bytes per queue.
    pub queue_bytes: u64,
    /// Bytes in the whole store as the cap counts them ([`ITEM_COST`],
    /// [`REMEMBERED_COST`], [`QUEUE_COST`]).
    pub max_bytes: u64,
}

impl StoreCaps {
    /// The caps `config` describes.
    pub fn of(config: &Config) -> StoreCaps {
        StoreCaps {
            ttl_secs: config.mailbox_ttl.as_secs().max(1),
            queue_items: config.mailbox_queue_items,
            queue_bytes: config.mailbox_queue_bytes,
            max_bytes: config.mailbox_max_bytes,
        }
    }
}

/// Which cap refused an add (the metric label and the message say it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `--mailbox-queue-items`.
    QueueItems,
    /// `--mailbox-queue-bytes`.
    QueueBytes,
    /// `--mailbox-source-bytes` (per address or /64, per hour).
    SourceBytes,
    /// `--mailbox-max-bytes`.
    StoreBytes,
    /// The store's disk is full.
    Disk,
}

impl Cap {
    /// Every cap, in metric order.
    pub const ALL: [Cap; 5] = [
        Cap::QueueItems,
        Cap::QueueBytes,
        Cap::SourceBytes,
        Cap::StoreBytes,
        Cap::Disk,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Cap::QueueItems => "queue_items",
            Cap::QueueBytes => "queue_bytes",
            Cap::SourceBytes => "source_bytes",
            Cap::StoreBytes => "store_bytes",
            Cap::Disk => "disk",
        }
    }

    fn from_label(label: &str) -> Option<Cap> {
        Cap::ALL.into_iter().find(|c| c.as_str() == label)
    }
}

/// Why a store refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The queue has other keys (`MailboxAuth`).
    OtherKeys,
    /// No such queue, or it has no read key yet (`MailboxAuth`).
    NoReadKey,
    /// The queue gave this item out and had it removed (`MailboxReplay`).
    Replay,
    /// A cap (`MailboxFull`).
    Full(Cap),
    /// The store cannot be used now (`TooManyConnections`: clients retry).
    Unavailable(String),
}

/// `MailboxOpen` took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Items the queue holds now.
    pub items: u32,
    /// The open made the queue.
    pub created: bool,
}

/// `MailboxAdd` took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub id: [u8; 16],
    pub expires_unix: u64,
    /// Stored now; false for a retry of an item the queue held already.
    pub fresh: bool,
}

/// What `MailboxFetch` hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub items: Vec<StoredItem>,
    pub more: bool,
}

/// What the store holds now, as its cap counts it (metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub items: u64,
    pub bytes: u64,
}

/// [`Held`] as a store keeps it for the metrics: set after each step, read
/// without a lock.
#[derive(Debug, Default)]
pub struct HeldGauge {
    items: AtomicU64,
    bytes: AtomicU64,
}

impl HeldGauge {
    pub fn new(held: Held) -> HeldGauge {
        let gauge = HeldGauge::default();
        gauge.set(held);
        gauge
    }

    pub fn set(&self, held: Held) {
        self.items.store(held.items, Ordering::Relaxed);
        self.bytes.store(held.bytes, Ordering::Relaxed);
    }

    pub fn get(&self) -> Held {
        Held {
            items: self.items.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// Sweep batches per sweep: the rest waits for the next sweep.
const MAX_SWEEP_BATCHES: usize = 1024;

/// A sweep as a store runs it: `batch` (one short step, so requests get the
/// store between steps) until it says nothing more is due, at most
/// [`MAX_SWEEP_BATCHES`] times. `batch` returns its count and whether more
/// may be due; the sweep returns the counts' sum.
pub async fn sweep_in_batches<F, Fut>(mut batch: F) -> Result<u64, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(u64, bool), Refusal>>,
{
    let mut total = 0;
    for _ in 0..MAX_SWEEP_BATCHES {
        let (n, more) = batch().await.map_err(|r| format!("{r:?}"))?;
        total += n;
        if !more {
            break;
        }
    }
    Ok(total)
}

/// The mailbox's store: every rule of §22.3 that needs what is stored, each
/// call one atomic step, durable before it returns. The caller has checked
/// the request's time and signature.
pub trait MailboxTable: Send + Sync + fmt::Debug + 'static {
    /// `MailboxOpen`: makes the queue with both keys (only if `may_create`,
    /// else `Full(SourceBytes)`), gives a queue made by an add its read key,
    /// or confirms a queue with these two keys.
    fn open(
        &self,
        queue: [u8; 32],
        add_key: [u8; 32],
        read_key: [u8; 32],
        now: u64,
        may_create: bool,
    ) -> BoxFuture<'_, Result<Opened, Refusal>>;

    /// `MailboxAdd`: stores `item` (its id computed here) until `now + TTL`,
    /// making the queue with `add_key` if there is none. `source_ok`: the
    /// source may add these bytes (else a new item is `Full(SourceBytes)`).
    fn add(
        &self,
        queue: [u8; 32],
        add_key: [u8; 32],
        item: Vec<u8>,
        now: u64,
        source_ok: bool,
    ) -> BoxFuture<'_, Result<Stored, Refusal>>;

    /// The queue's read key, if it exists and has one.
    fn read_key(&self, queue: [u8; 32]) -> BoxFuture<'_, Result<Option<[u8; 32]>, Refusal>>;

    /// `MailboxFetch` for a request signed by `read_key` (checked again
    /// against the queue's in the same step).
    fn fetch(
        &self,
        queue: [u8; 32],
        read_key: [u8; 32],
        now: u64,
    ) -> BoxFuture<'_, Result<Fetched, Refusal>>;

    /// `MailboxRemove`: removes the named items, remembering their ids until
    /// their expiry; returns how many were there.
    fn remove(
        &self,
        queue: [u8; 32],
        read_key: [u8; 32],
        ids: Vec<[u8; 16]>,
        now: u64,
    ) -> BoxFuture<'_, Result<u32, Refusal>>;

    /// Deletes expired items, expired remembered ids and queues with no
    /// items and no request for a TTL; returns how many records went.
    fn sweep(&self, now: u64) -> BoxFuture<'_, Result<u64, String>>;

    /// What the store holds now (as last seen, for metrics).
    fn held(&self) -> Held;
}

/// Seconds since 1970 as the mailbox counts them: the system clock, moved on
/// by however far tokio's clock was advanced past the real one. That is
/// nothing in the binary (tokio's clock is the real one there), and lets tests
/// with paused time see items expire without waiting days.
#[derive(Debug)]
pub(crate) struct Clock {
    tokio: tokio::time::Instant,
    real: std::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            tokio: tokio::time::Instant::now(),
            real: std::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        let ahead = self.tokio.elapsed().saturating_sub(self.real.elapsed());
        (SystemTime::now() + ahead)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The mailbox part of the mediator's shared state.
#[derive(Debug)]
pub(crate) struct Mailbox {
    pub(crate) store: Box<dyn MailboxTable>,
    pub(crate) sources: SourceBytes,
    pub(crate) clock: Clock,
}

impl Mailbox {
    pub(crate) fn new(store: Box<dyn MailboxTable>, config: &Config) -> Mailbox {
        Mailbox {
            store,
            sources: SourceBytes::new(config.mailbox_source_bytes),
            clock: Clock::new(),
        }
    }
}

/// Whether `msg` is a mailbox request (what may open a mailbox connection).
pub(crate) fn is_request(msg: &ClientMsg) -> bool {
    matches!(
        msg,
        ClientMsg::MailboxOpen { .. }
            | ClientMsg::MailboxAdd { .. }
            | ClientMsg::MailboxFetch { .. }
            | ClientMsg::MailboxRemove { .. }
    )
}

/// Serves a connection that opened with the mailbox request `first`: it and
/// up to [`MAX_REQUESTS`] − 1 more, each answered in order, then the close.
pub(crate) async fn serve(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    first: ClientMsg,
) -> End {
    let shared = &admitted.shared;
    let mut next = Some(first);
    let mut requests = 0usize;
    let mut pings = 0u32;
    loop {
        let msg = match next.take() {
            Some(msg) => msg,
            None => {
                let read = tokio::select! {
                    biased;
                    _ = shared.cancel.cancelled() => {
                        return refuse(ErrorCode::ShuttingDown, "the mediator is shutting down")
                    }
                    read = timeout(shared.config.idle_timeout, reader.next(stream)) => read,
                };
                match read {
                    Err(_) => {
                        return refuse(ErrorCode::Timeout, "no request within the idle timeout")
                    }
                    Ok(Err(end)) => return end,
                    Ok(Ok(msg)) => msg,
                }
            }
        };
        let answer = match msg {
            ClientMsg::Ping if pings < MAX_PINGS => {
                pings += 1;
                MediatorMsg::Pong
            }
            ClientMsg::Ping => {
                return refuse(
                    ErrorCode::Malformed,
                    "too many Pings on a mailbox connection",
                )
            }
            msg if is_request(&msg) => {
                requests += 1;
                match answer(admitted, msg).await {
                    Ok(answer) => answer,
                    Err(end) => return end,
                }
            }
            _ => {
                return refuse(
                    ErrorCode::Malformed,
                    "only mailbox requests and Ping on a mailbox connection",
                )
            }
        };
        if let Err(end) = write_msg(stream, answer).await {
            return end;
        }
        if requests >= MAX_REQUESTS {
            return End::Done;
        }
    }
}

/// The answer to one mailbox request, or the refusal that ends the connection.
async fn answer(admitted: &Admitted, msg: ClientMsg) -> Result<MediatorMsg, End> {
    let mailbox = &admitted.shared.mailbox;
    let now = mailbox.clock.now();
    let store = &*mailbox.store;
    // The time first: it needs no store, and a stale request needs no more.
    if let ClientMsg::MailboxOpen { at, .. }
    | ClientMsg::MailboxAdd { at, .. }
    | ClientMsg::MailboxFetch { at, .. }
    | ClientMsg::MailboxRemove { at, .. } = &msg
    {
        if !mb::fresh(*at, now) {
            return Err(refuse(
                ErrorCode::MailboxAuth,
                format!(
                    "the request's time is more than {} s from the mediator's; check your clock",
                    mb::MAX_CLOCK_SKEW
                ),
            ));
        }
    }
    match msg {
        ClientMsg::MailboxOpen {
            queue,
            add_key,
            read_key,
            at,
            sig,
        } => {
            signed_by(
                &read_key,
                &mb::open_signed(&queue, &add_key, &read_key, at),
                &sig,
            )?;
            let source = admitted.key;
            let reserved = mailbox.sources.reserve(source, QUEUE_COST);
            let opened = store.open(queue, add_key, read_key, now, reserved).await;
            if reserved && !matches!(opened, Ok(Opened { created: true, .. })) {
                mailbox.sources.refund(source, QUEUE_COST);
            }
            let opened = opened.map_err(|r| refusal(admitted, r))?;
            Ok(MediatorMsg::MailboxOpened {
                items: opened.items,
            })
        }
        ClientMsg::MailboxAdd {
            queue,
            add_key,
            at,
            item,
            sig,
        } => {
            if !(MIN_ITEM..=MAX_ITEM).contains(&item.len()) || (item.len() - 48) % 16 != 0 {
                return Err(refuse(
                    ErrorCode::Malformed,
                    format!(
                        "a mailbox item is a sealed message of {MIN_ITEM} to {MAX_ITEM} bytes \
                         (48 and a multiple of 16)"
                    ),
                ));
            }
            signed_by(&add_key, &mb::add_signed(&queue, at, &item), &sig)?;
            let source = admitted.key;
            let cost = item.len() as u64;
            let reserved = mailbox.sources.reserve(source, cost);
            let stored = store.add(queue, add_key, item, now, reserved).await;
            if reserved && !matches!(stored, Ok(Stored { fresh: true, .. })) {
                mailbox.sources.refund(source, cost);
            }
            let stored = stored.map_err(|r| refusal(admitted, r))?;
            Ok(MediatorMsg::MailboxStored {
                id: stored.id,
                expires_unix: stored.expires_unix,
            })
        }
        ClientMsg::MailboxFetch { queue, at, sig } => {
            let read_key = reader_of(admitted, queue).await?;
            signed_by(&read_key, &mb::fetch_signed(&queue, at), &sig)?;
            let fetched = store
                .fetch(queue, read_key, now)
                .await
                .map_err(|r| refusal(admitted, r))?;
            Ok(MediatorMsg::MailboxItems {
                items: fetched.items,
                more: fetched.more,
            })
        }
        ClientMsg::MailboxRemove {
            queue,
            at,
            ids,
            sig,
        } => {
            if ids.len() > MAX_REMOVE {
                return Err(refuse(
                    ErrorCode::Malformed,
                    format!("at most {MAX_REMOVE} ids in one MailboxRemove"),
                ));
            }
            let read_key = reader_of(admitted, queue).await?;
            signed_by(&read_key, &mb::remove_signed(&queue, at, &ids), &sig)?;
            let removed = store
                .remove(queue, read_key, ids, now)
                .await
                .map_err(|r| refusal(admitted, r))?;
            Ok(MediatorMsg::MailboxRemoved { removed })
        }
        _ => Err(refuse(ErrorCode::Malformed, "not a mailbox request")),
    }
}

/// The read key of `queue`, or `MailboxAuth` if it has none.
async fn reader_of(admitted: &Admitted, queue: [u8; 32]) -> Result<[u8; 32], End> {
    match admitted.shared.mailbox.store.read_key(queue).await {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(refusal(admitted, Refusal::NoReadKey)),
        Err(r) => Err(refusal(admitted, r)),
    }
}

/// Checks a request's signature by `key` over `signed`.
fn signed_by(key: &[u8; 32], signed: &[u8], sig: &Signature64) -> Result<(), End> {
    if !mb::verify(key, signed, sig) {
        return Err(refuse(
            ErrorCode::MailboxAuth,
            "the mailbox request's signature does not verify",
        ));
    }
    Ok(())
}

/// The `Error` a store's refusal is, counted in the metrics.
fn refusal(admitted: &Admitted, refusal: Refusal) -> End {
    let shared = &admitted.shared;
    let config = &shared.config;
    match refusal {
        Refusal::OtherKeys => refuse(ErrorCode::MailboxAuth, "this mailbox queue has other keys"),
        Refusal::NoReadKey => refuse(
            ErrorCode::MailboxAuth,
            "no such mailbox queue, or it was never opened by its reader",
        ),
        Refusal::Replay => refuse(
            ErrorCode::MailboxReplay,
            "this item was delivered and removed already",
        ),
        Refusal::Full(cap) => {
            shared.metrics.mailbox_refused(cap);
            let message: Cow<'static, str> = match cap {
                Cap::QueueItems => format!(
                    "the recipient's mailbox queue holds its maximum of {} items",
                    config.mailbox_queue_items
                )
                .into(),
                Cap::QueueBytes => format!(
                    "the recipient's mailbox queue holds its maximum of {} bytes",
                    config.mailbox_queue_bytes
                )
                .into(),
                Cap::SourceBytes => format!(
                    "your address added its maximum of {} bytes to the mailbox this hour; \
                     try again later",
                    config.mailbox_source_bytes
                )
                .into(),
                Cap::StoreBytes => format!(
                    "the mailbox store holds its maximum of {} bytes; try again later",
                    config.mailbox_max_bytes
                )
                .into(),
                Cap::Disk => "the mailbox store's disk is full; try again later".into(),
            };
            refuse(ErrorCode::MailboxFull, message)
        }
        Refusal::Unavailable(why) => {
            shared.metrics.rejected(crate::metrics::Limit::MailboxStore);
            refuse(ErrorCode::TooManyConnections, why)
        }
    }
}

/// Deletes what expired, every [`SWEEP_EVERY`] until shutdown.
pub(crate) async fn sweep(shared: std::sync::Arc<crate::server::Shared>) {
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let now = shared.mailbox.clock.now();
        match shared.mailbox.store.sweep(now).await {
            Ok(0) => {}
            Ok(gone) => tracing::debug!(gone, "mailbox: expired records deleted"),
            Err(why) => tracing::warn!(error = %why, "mailbox sweep failed; retrying in a minute"),
        }
    }
}

/// The error a store reports when it cannot be used: what to tell clients.
pub(crate) fn unavailable(why: impl fmt::Display) -> Refusal {
    if warn_now() {
        tracing::warn!(error = %why, "mailbox store failed");
    }
    Refusal::Unavailable("the mediator's mailbox store failed; try again later".to_owned())
}

/// Whether a store failure may be logged now: at most one warning every few
/// seconds, however many requests fail.
pub(crate) fn warn_now() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    const EVERY_SECS: u64 = 5;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    now >= last + EVERY_SECS
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}
