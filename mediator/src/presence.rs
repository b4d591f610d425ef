//! Presence (docs/protocol.md §21): a connection that opened with `Presence`
//! waits under the room tags of its contact pairs, and is sent `Ring{tag}` when
//! someone opens a two-party room under one of them, so a messenger that runs
//! idle is reached by a contact who writes to it without anything typed on its
//! side. The mediator learns which tags wait together on one connection, and
//! from where; it keeps nothing after the connection ends.
//!
//! Bounds: tags per connection (`--presence-max-tags`) and in the whole table
//! (`--presence-max-total`), each holder's queue of rings (a slow holder misses
//! rings, it never makes the mediator hold more), frames per connection per
//! idle window, and the idle timeout: a holder pings like a waiting host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dhke::RoomTag;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};
use wire::{ClientMsg, ErrorCode, MediatorMsg, MAX_PRESENCE_BATCH};

use crate::connection::{refuse, write_msg, End, FrameReader};
use crate::rooms::ConnId;
use crate::server::Admitted;

/// Rings waiting to be written to one holder; more are dropped (the holder
/// that reads that slowly reconnects and its contact retries).
const RING_QUEUE: usize = 16;
/// Frames (Presence or Ping) one holder may send per idle window: a client
/// pings about every 30 s and adds tags now and then.
const MAX_FRAMES_PER_WINDOW: u32 = 64;

/// Where one holder's rings wait to be written: at most [`RING_QUEUE`], and a
/// wake-up. (A channel per connection would cost a kilobyte of slots each.)
#[derive(Debug, Default)]
pub(crate) struct Bell {
    rung: Mutex<Vec<[u8; 32]>>,
    wake: Notify,
}

impl Bell {
    /// Queues a ring; false when the holder has [`RING_QUEUE`] unread.
    fn ring(&self, tag: [u8; 32]) -> bool {
        let mut rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        if rung.len() >= RING_QUEUE {
            return false;
        }
        rung.push(tag);
        drop(rung);
        self.wake.notify_one();
        true
    }

    /// The rings queued so far, oldest first.
    fn take(&self) -> Vec<[u8; 32]> {
        std::mem::take(&mut *self.rung.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

type Holder = (ConnId, Arc<Bell>);

/// Every presence connection of this process, by tag.
#[derive(Debug, Default)]
pub(crate) struct PresenceTable {
    holders: Mutex<HashMap<[u8; 32], Vec<Holder>>>,
    /// Tag registrations in the table (one per tag and connection).
    total: AtomicUsize,
}

/// Why tags were not added.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection would pass its own cap.
    PerConnection,
    /// The table is full.
    Total,
}

impl PresenceTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Vec<Holder>>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `tags` for connection `id` (whose tags so far are `own`), all or
    /// none: refused when `own` would pass `per_connection` or the table
    /// `total`.
    pub(crate) fn add(
        &self,
        id: ConnId,
        bell: &Arc<Bell>,
        own: &mut Vec<[u8; 32]>,
        tags: &[[u8; 32]],
        (per_connection, total): (usize, usize),
    ) -> Result<(), Refused> {
        let mut fresh: Vec<[u8; 32]> = tags
            .iter()
            .filter(|t| own.binary_search(t).is_err())
            .copied()
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        if own.len() + fresh.len() > per_connection {
            return Err(Refused::PerConnection);
        }
        let mut holders = self.lock();
        if self.total.load(Ordering::Relaxed) + fresh.len() > total {
            return Err(Refused::Total);
        }
        for tag in fresh {
            holders.entry(tag).or_default().push((id, bell.clone()));
            if let Err(at) = own.binary_search(&tag) {
                own.insert(at, tag);
            }
            self.total.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Takes connection `id` off every tag in `own`.
    pub(crate) fn remove(&self, id: ConnId, own: &[[u8; 32]]) {
        let mut holders = self.lock();
        for tag in own {
            if let Some(list) = holders.get_mut(tag) {
                let before = list.len();
                list.retain(|(holder, _)| *holder != id);
                self.total.fetch_sub(before - list.len(), Ordering::Relaxed);
                if list.is_empty() {
                    holders.remove(tag);
                }
            }
        }
    }

    /// Tells every holder of `tag` that a room under it waits; returns how
    /// many were told (a holder whose queue is full is skipped).
    pub(crate) fn ring(&self, tag: &[u8; 32]) -> usize {
        let holders = self.lock();
        holders.get(tag).map_or(0, |list| {
            list.iter().filter(|(_, bell)| bell.ring(*tag)).count()
        })
    }

    /// Tag registrations held now (metrics).
    pub(crate) fn tags(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// What woke a presence connection.
enum Woke {
    Rung,
    Message(Result<ClientMsg, End>),
    Idle,
    ShuttingDown,
}

/// Serves a connection that opened with `Presence{first}` until it leaves, is
/// idle past the timeout, breaks a bound, or the mediator shuts down.
pub(crate) async fn serve(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    first: Vec<[u8; 32]>,
) -> End {
    let shared = &admitted.shared;
    let table = &shared.presence;
    let bell = Arc::new(Bell::default());
    let mut own = Vec::new();
    let end = serve_holder(admitted, reader, stream, first, &bell, &mut own).await;
    table.remove(admitted.id, &own);
    end
}

async fn serve_holder(
    admitted: &Admitted,
    reader: &mut FrameReader,
    stream: &mut TcpStream,
    first: Vec<[u8; 32]>,
    bell: &Arc<Bell>,
    own: &mut Vec<[u8; 32]>,
) -> End {
    let shared = &admitted.shared;
    let config = &shared.config;
    let caps = (config.presence_max_tags, config.presence_max_total);
    let mut batch = Some(first);
    let mut idle_until = Instant::now() + config.idle_timeout;
    let mut frames = 0u32;
    let mut window = Instant::now();
    loop {
        if let Some(tags) = batch.take() {
            if tags.len() > MAX_PRESENCE_BATCH {
                return refuse(
                    ErrorCode::Malformed,
                    format!("at most {MAX_PRESENCE_BATCH} tags in one Presence"),
                );
            }
            match shared.presence.add(admitted.id, bell, own, &tags, caps) {
                Ok(()) => {}
                Err(Refused::PerConnection) => {
                    return refuse(
                        ErrorCode::PresenceLimit,
                        format!(
                            "at most {} contacts wait on one connection here; \
                             wait for the others on a second connection",
                            caps.0
                        ),
                    )
                }
                Err(Refused::Total) => {
                    shared.metrics.rejected(crate::metrics::Limit::Presence);
                    return refuse(
                        ErrorCode::PresenceLimit,
                        "this mediator holds its maximum of waiting contacts; try again later",
                    );
                }
            }
            let count = u32::try_from(own.len()).unwrap_or(u32::MAX);
            if let Err(end) = write_msg(stream, MediatorMsg::Present { tags: count }).await {
                return end;
            }
            // A contact that opened its room before we came waits there now:
            // ring for it at once, as if it had come after.
            let room_tags: Vec<RoomTag> = tags.iter().map(|t| RoomTag(*t)).collect();
            for waiting in shared.rooms.waits(&room_tags).await {
                bell.ring(waiting.0);
            }
        }
        let woke = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => Woke::ShuttingDown,
            () = bell.wake.notified() => Woke::Rung,
            _ = sleep_until(idle_until) => Woke::Idle,
            msg = reader.next(stream) => Woke::Message(msg),
        };
        match woke {
            Woke::ShuttingDown => {
                return refuse(ErrorCode::ShuttingDown, "the mediator is shutting down")
            }
            Woke::Idle => return refuse(ErrorCode::Timeout, "no Ping within the idle timeout"),
            Woke::Rung => {
                for tag in bell.take() {
                    if let Err(end) = write_msg(stream, MediatorMsg::Ring { tag }).await {
                        return end;
                    }
                }
            }
            Woke::Message(Err(end)) => return end,
            Woke::Message(Ok(msg)) => {
                // The frame budget is per idle window: a holder that pings every
                // 30 s never runs out, a loop does at once.
                if window.elapsed() > config.idle_timeout {
                    window = Instant::now();
                    frames = 0;
                }
                frames += 1;
                if frames > MAX_FRAMES_PER_WINDOW {
                    return refuse(
                        ErrorCode::Malformed,
                        "too many messages on a presence connection",
                    );
                }
                idle_until = Instant::now() + config.idle_timeout;
                match msg {
                    ClientMsg::Ping => {
                        if let Err(end) = write_msg(stream, MediatorMsg::Pong).await {
                            return end;
                        }
                    }
                    ClientMsg::Presence { tags } => batch = Some(tags),
                    _ => {
                        return refuse(
                            ErrorCode::Malformed,
                            "only Presence and Ping on a presence connection",
                        )
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_added_all_or_none_and_removed_with_their_connection() {
        let table = PresenceTable::default();
        let tx = Arc::new(Bell::default());
        let mut own = Vec::new();
        table
            .add(1, &tx, &mut own, &[[1; 32], [2; 32]], (3, 10))
            .unwrap();
        // A repeat is no new tag.
        table.add(1, &tx, &mut own, &[[1; 32]], (3, 10)).unwrap();
        assert_eq!(table.tags(), 2);
        assert_eq!(
            table.add(1, &tx, &mut own, &[[3; 32], [4; 32]], (3, 10)),
            Err(Refused::PerConnection)
        );
        assert_eq!(table.tags(), 2, "a refused batch adds nothing");
        let tx2 = Arc::new(Bell::default());
        let mut own2 = Vec::new();
        assert_eq!(
            table.add(2, &tx2, &mut own2, &[[5; 32]], (3, 2)),
            Err(Refused::Total)
        );
        assert_eq!(table.ring(&[2; 32]), 1);
        assert_eq!(tx.take(), [[2; 32]]);
        assert_eq!(table.ring(&[9; 32]), 0);
        table.remove(1, &own);
        assert_eq!(table.tags(), 0);
        assert_eq!(table.ring(&[1; 32]), 0);
    }

    #[test]
    fn a_holder_that_does_not_read_misses_rings_and_costs_nothing_more() {
        let table = PresenceTable::default();
        let tx = Arc::new(Bell::default());
        let mut own = Vec::new();
        table.add(1, &tx, &mut own, &[[7; 32]], (4, 4)).unwrap();
        let told: usize = (0..RING_QUEUE * 4).map(|_| table.ring(&[7; 32])).sum();
        assert_eq!(told, RING_QUEUE);
    }
}
