//! The in-memory room table: one mutex around one hash map, held only for a map
//! operation and a channel send, never across an await.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use dhke::RoomTag;
use futures::future::{self, BoxFuture, FutureExt};
use tokio::sync::oneshot;

use super::{Arrival, ConnId, JoinOutcome, Joined, Pairing, PeerDetails, RoomTable};

/// A host waiting in its room.
#[derive(Debug)]
struct WaitingHost {
    id: ConnId,
    group: u8,
    details: PeerDetails,
    /// Hands the joiner's details to the host's connection task.
    handoff: oneshot::Sender<Box<Joined>>,
}

/// Rooms of this process, at most `max_rooms` waiting at once.
#[derive(Debug)]
pub struct InMemoryRooms {
    /// Boxed values: the map keeps up to twice as many slots as rooms (it grows by
    /// doubling), and an empty slot then costs a pointer, not a whole host.
    rooms: Mutex<HashMap<RoomTag, Box<WaitingHost>>>,
    max_rooms: usize,
}

impl InMemoryRooms {
    /// An empty table that holds at most `max_rooms` waiting rooms.
    pub fn new(max_rooms: usize) -> InMemoryRooms {
        InMemoryRooms {
            rooms: Mutex::new(HashMap::new()),
            max_rooms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomTag, Box<WaitingHost>>> {
        // A panic while holding this lock cannot leave the map half-updated (every
        // critical section is one map call), so a poisoned lock is still usable.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl InMemoryRooms {
    fn join_now(&self, tag: RoomTag, arrival: Arrival) -> JoinOutcome {
        let mut rooms = self.lock();
        let mut details = arrival.details;
        if let Some(host) = rooms.get(&tag) {
            if host.group != arrival.group {
                return JoinOutcome::GroupMismatch;
            }
            if let Some(host) = rooms.remove(&tag) {
                let (host_end, joiner_end) = Pairing::pair(arrival.terms);
                let joined = Box::new(Joined {
                    details,
                    pairing: host_end,
                });
                let host = *host;
                match host.handoff.send(joined) {
                    Ok(()) => return JoinOutcome::Matched(host.details, joiner_end),
                    // The host's task is gone (it disconnected and has not called
                    // leave yet): the room is free, and this arrival opens it.
                    Err(back) => details = back.details,
                }
            }
        }
        if rooms.len() >= self.max_rooms {
            return JoinOutcome::Full;
        }
        let (handoff, receiver) = oneshot::channel();
        rooms.insert(
            tag,
            Box::new(WaitingHost {
                id: arrival.id,
                group: arrival.group,
                details,
                handoff,
            }),
        );
        JoinOutcome::Waiting(receiver)
    }

    fn leave_now(&self, tag: &RoomTag, id: ConnId) -> bool {
        let mut rooms = self.lock();
        if rooms.get(tag).is_some_and(|host| host.id == id) {
            rooms.remove(tag);
            true
        } else {
            false
        }
    }
}

impl RoomTable for InMemoryRooms {
    fn join(&self, tag: RoomTag, arrival: Arrival) -> BoxFuture<'_, JoinOutcome> {
        future::ready(self.join_now(tag, arrival)).boxed()
    }

    fn leave<'a>(&'a self, tag: &'a RoomTag, id: ConnId) -> BoxFuture<'a, bool> {
        future::ready(self.leave_now(tag, id)).boxed()
    }

    fn waits<'a>(&'a self, tags: &'a [RoomTag]) -> BoxFuture<'a, Vec<RoomTag>> {
        let rooms = self.lock();
        let found = tags
            .iter()
            .filter(|t| rooms.contains_key(t))
            .copied()
            .collect();
        future::ready(found).boxed()
    }

    fn waiting(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(id: ConnId, group: u8, name: &str) -> Arrival {
        Arrival {
            id,
            group,
            details: PeerDetails {
                name: name.to_owned(),
                public: vec![2; 4],
                observed_addr: "127.0.0.1:1000".parse().unwrap(),
                listen_port: 7,
                local_addrs: Vec::new(),
                no_relay: false,
            },
            terms: super::super::PairTerms {
                pair_id: [0; 12],
                token_expires: 0,
                relay_server: Some(String::new()),
            },
        }
    }

    #[test]
    fn second_arrival_matches_and_room_is_forgotten() {
        let rooms = InMemoryRooms::new(10);
        let tag = RoomTag([1; 32]);
        let JoinOutcome::Waiting(mut rx) = rooms.join_now(tag, arrival(1, 15, "a")) else {
            panic!("first arrival waits");
        };
        let JoinOutcome::Matched(host, _) = rooms.join_now(tag, arrival(2, 15, "b")) else {
            panic!("second arrival matches");
        };
        assert_eq!(host.name, "a");
        assert_eq!(rx.try_recv().unwrap().details.name, "b");
        assert_eq!(rooms.waiting(), 0);
        assert!(!rooms.leave_now(&tag, 1));
        assert!(matches!(
            rooms.join_now(tag, arrival(3, 15, "c")),
            JoinOutcome::Waiting(_)
        ));
    }

    #[test]
    fn group_mismatch_keeps_the_host() {
        let rooms = InMemoryRooms::new(10);
        let tag = RoomTag([1; 32]);
        let _rx = rooms.join_now(tag, arrival(1, 15, "a"));
        assert!(matches!(
            rooms.join_now(tag, arrival(2, 14, "b")),
            JoinOutcome::GroupMismatch
        ));
        assert_eq!(rooms.waiting(), 1);
    }

    #[test]
    fn a_gone_host_frees_its_room() {
        let rooms = InMemoryRooms::new(10);
        let tag = RoomTag([1; 32]);
        drop(rooms.join_now(tag, arrival(1, 15, "a")));
        assert!(matches!(
            rooms.join_now(tag, arrival(2, 15, "b")),
            JoinOutcome::Waiting(_)
        ));
        // The old host's leave must not remove the new room.
        assert!(!rooms.leave_now(&tag, 1));
        assert!(rooms.leave_now(&tag, 2));
    }

    #[test]
    fn full_table_refuses_new_rooms_but_still_matches() {
        let rooms = InMemoryRooms::new(1);
        let _rx = rooms.join_now(RoomTag([1; 32]), arrival(1, 15, "a"));
        assert!(matches!(
            rooms.join_now(RoomTag([2; 32]), arrival(2, 15, "b")),
            JoinOutcome::Full
        ));
        assert!(matches!(
            rooms.join_now(RoomTag([1; 32]), arrival(3, 15, "c")),
            JoinOutcome::Matched(..)
        ));
    }
}
