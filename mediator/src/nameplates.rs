//! The nameplates the mediator allocates for generated room codes (docs/protocol.md
//! §13.2): the smallest free number first, held until the room is matched or its host
//! leaves, at most as many at once as there may be waiting rooms. One small async
//! trait, [`NameplateTable`]: [`Nameplates`] here for one process, and
//! `rooms::RedisRooms` for mediators sharing a Redis (§18.3), so two instances never
//! hand out the same number.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use dhke::room::NAMEPLATE_MAX;
use dhke::{nameplate_tag, RoomTag};
use futures::future::{self, BoxFuture, FutureExt};

/// Why `Allocate` got no nameplate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoNameplate {
    /// Every number the table may hand out is taken (`Error{NoNameplate}`).
    Exhausted,
    /// The shared store cannot be reached; the message says so (`Error{TooManyConnections}`).
    Unavailable(String),
}

/// Where nameplates are allocated.
pub trait NameplateTable: Send + Sync + std::fmt::Debug + 'static {
    /// The smallest free nameplate, leased until the returned value is dropped.
    fn allocate(&self) -> BoxFuture<'_, Result<Nameplate, NoNameplate>>;
}

/// Gives a leased number back; called once, when its [`Nameplate`] is dropped.
pub trait Release: Send + Sync + std::fmt::Debug + 'static {
    /// Frees `number` (whose tag is `tag`).
    fn release(&self, number: u32, tag: &RoomTag);
}

/// The allocation table. Share it as `Arc<Nameplates>`; every method takes the one
/// short lock.
#[derive(Debug)]
pub struct Nameplates {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Allocated numbers by the room tag `Hello` will carry for them.
    by_tag: HashMap<RoomTag, u32>,
    /// Released numbers below `next`, smallest first.
    free: BTreeSet<u32>,
    /// Every number ≥ `next` is free.
    next: u32,
}

/// One allocated nameplate. Dropping it gives the number back, so holding it in
/// the host's connection task releases it on every way out: matched, left, timed
/// out, refused.
#[derive(Debug)]
pub struct Nameplate {
    number: u32,
    tag: RoomTag,
    table: Arc<dyn Release>,
}

impl Nameplate {
    /// The number to send in `Allocated { nameplate }`.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// `dhke::nameplate_tag(number)`: the tag the host's `Hello` carries.
    pub fn tag(&self) -> RoomTag {
        self.tag
    }
}

impl Nameplate {
    /// A lease on `number`, given back to `table` on drop.
    pub fn leased(number: u32, table: Arc<dyn Release>) -> Nameplate {
        Nameplate {
            number,
            tag: nameplate_tag(number),
            table,
        }
    }
}

impl Drop for Nameplate {
    fn drop(&mut self) {
        self.table.release(self.number, &self.tag);
    }
}

impl Release for Nameplates {
    fn release(&self, _number: u32, tag: &RoomTag) {
        self.release_tag(tag);
    }
}

impl NameplateTable for Arc<Nameplates> {
    fn allocate(&self) -> BoxFuture<'_, Result<Nameplate, NoNameplate>> {
        future::ready(Nameplates::allocate(self).ok_or(NoNameplate::Exhausted)).boxed()
    }
}

impl Nameplates {
    /// A table holding at most `cap` nameplates at once (the mediator's room cap),
    /// and never more than [`NAMEPLATE_MAX`].
    pub fn new(cap: usize) -> Arc<Nameplates> {
        Arc::new(Nameplates {
            cap: cap.min(NAMEPLATE_MAX as usize),
            inner: Mutex::new(Inner {
                next: 1,
                ..Inner::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing below panics while holding the lock; if something did, the
        // table is still consistent (each step is one insert or remove).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The smallest free nameplate, or `None` when `cap` are in use (answer
    /// `Error{NoNameplate}`).
    pub fn allocate(self: &Arc<Self>) -> Option<Nameplate> {
        let mut inner = self.lock();
        if inner.by_tag.len() >= self.cap {
            return None;
        }
        let number = match inner.free.pop_first() {
            Some(n) => n,
            None if inner.next <= NAMEPLATE_MAX => {
                inner.next += 1;
                inner.next - 1
            }
            None => return None,
        };
        let tag = nameplate_tag(number);
        inner.by_tag.insert(tag, number);
        Some(Nameplate {
            number,
            tag,
            table: Arc::clone(self) as Arc<dyn Release>,
        })
    }

    /// The allocated nameplate whose tag a `Hello` carries, if any: lets the
    /// mediator tell a room opened on an allocated nameplate from any other.
    pub fn lookup(&self, tag: &RoomTag) -> Option<u32> {
        self.lock().by_tag.get(tag).copied()
    }

    /// How many nameplates are allocated now.
    pub fn in_use(&self) -> usize {
        self.lock().by_tag.len()
    }

    fn release_tag(&self, tag: &RoomTag) {
        let mut inner = self.lock();
        let Some(number) = inner.by_tag.remove(tag) else {
            return;
        };
        inner.free.insert(number);
        // Keep `free` small: numbers at the top go back to the untouched range.
        loop {
            let top = inner.next - 1;
            if top == 0 || !inner.free.remove(&top) {
                break;
            }
            inner.next = top;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_free_number_first() {
        let table = Nameplates::new(100);
        let a = table.allocate().unwrap();
        let b = table.allocate().unwrap();
        let c = table.allocate().unwrap();
        assert_eq!((a.number(), b.number(), c.number()), (1, 2, 3));
        drop(b);
        assert_eq!(table.allocate().unwrap().number(), 2);
        // That one was dropped at once; 2 is free again, and after it 4.
        let two = table.allocate().unwrap();
        let four = table.allocate().unwrap();
        assert_eq!((two.number(), four.number()), (2, 4));
        drop(a);
        assert_eq!(table.allocate().unwrap().number(), 1);
        assert_eq!(table.in_use(), 3);
    }

    #[test]
    fn released_on_drop_and_table_shrinks_back() {
        let table = Nameplates::new(100);
        let held: Vec<_> = (0..10).map(|_| table.allocate().unwrap()).collect();
        assert_eq!(table.in_use(), 10);
        drop(held);
        assert_eq!(table.in_use(), 0);
        let inner = table.lock();
        assert!(inner.free.is_empty());
        assert_eq!(inner.next, 1);
    }

    #[test]
    fn bounded_by_the_cap() {
        let table = Nameplates::new(3);
        let held: Vec<_> = (0..3).map(|_| table.allocate().unwrap()).collect();
        assert!(table.allocate().is_none());
        drop(held);
        assert!(table.allocate().is_some());
    }

    #[test]
    fn never_beyond_six_digits() {
        let table = Nameplates::new(usize::MAX);
        assert_eq!(table.cap, NAMEPLATE_MAX as usize);
        table.lock().next = NAMEPLATE_MAX;
        let last = table.allocate().unwrap();
        assert_eq!(last.number(), NAMEPLATE_MAX);
        assert!(table.allocate().is_none());
    }

    #[test]
    fn lookup_by_the_tag_a_hello_carries() {
        let table = Nameplates::new(10);
        let plate = table.allocate().unwrap();
        let code = format!("{}-velvet-harbor-maple-otter", plate.number());
        let tag = dhke::RoomCode::parse(&code).tag();
        assert_eq!(tag, plate.tag());
        assert_eq!(table.lookup(&tag), Some(plate.number()));
        assert_eq!(table.lookup(&nameplate_tag(999)), None);
        drop(plate);
        assert_eq!(table.lookup(&tag), None);
    }
}
