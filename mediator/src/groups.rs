//! Group rooms (docs/protocol.md §19): a room of up to `max_members` members, at
//! most `per_source` of them from one IPv4 address or IPv6 /64, that stays open
//! while anyone is in it and for `group_ttl` after the last one left.
//! The table tells a newcomer about every member present and every member about
//! the newcomer; the members then link pairwise by §6. [`GroupTable`] is the
//! small async trait the connection code talks to; [`GroupRooms`] is the
//! in-memory table (one mutex around one map, held only for map operations and
//! non-blocking channel sends), `RedisRooms` the shared one (§19.7).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use dhke::RoomTag;
use futures::future::{self, BoxFuture, FutureExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::limits::AddrKey;
use crate::nameplates::Nameplate;
use crate::rooms::{ConnId, PeerDetails};

/// A group room's limits (§19.1).
#[derive(Debug, Clone, Copy)]
pub struct GroupCaps {
    /// Members at once (`--max-members`).
    pub max_members: usize,
    /// Members at once from one IPv4 address or IPv6 /64 (`--max-members-per-ip`),
    /// so a stranger without the code cannot fill a room from one host.
    pub per_source: usize,
    /// How long a room outlives its last member (`--group-ttl`).
    pub ttl: Duration,
}

/// Where a member's connection comes from, as the member cap counts it.
pub fn source_of(details: &PeerDetails) -> AddrKey {
    AddrKey::of(details.observed_addr.ip().to_canonical())
}

/// Notices queued towards one member's connection task. A member whose task
/// falls this far behind is dropped from the room (it is not reading).
pub const NOTICE_QUEUE: usize = 64;

/// The group rooms, wherever they live.
pub trait GroupTable: Send + Sync + std::fmt::Debug + 'static {
    /// Puts connection `conn` in room `tag` (opening it if need be) and tells the
    /// members present. `relay` is the relay server this newcomer's pairs use
    /// (`None`: our relay is off).
    fn join(
        &self,
        tag: RoomTag,
        conn: ConnId,
        dh_group: u8,
        details: PeerDetails,
        nameplate: Option<Nameplate>,
        relay: Option<String>,
    ) -> BoxFuture<'_, Result<Joined, Refusal>>;
    /// Takes member `member` (of connection `conn`) out and tells the others.
    fn leave<'a>(&'a self, tag: &'a RoomTag, member: u32, conn: ConnId) -> BoxFuture<'a, ()>;
    /// Whether a group room with this tag is open (a two-party `Hello` for it is
    /// refused).
    fn contains<'a>(&'a self, tag: &'a RoomTag) -> BoxFuture<'a, bool>;
    /// The member cap, for `GroupJoined`.
    fn max_members(&self) -> usize;
    /// Members of this process present in all rooms (metrics).
    fn members(&self) -> usize;
    /// Forgets rooms empty for their TTL; returns how many (the shared table
    /// lets Redis expire them instead).
    fn sweep(&self) -> usize {
        0
    }
}

/// The pair id of members `a` and `b` of room `tag` (the relay token names it):
/// the first 12 bytes of `SHA-256("p2pchat/v2/group-pair" || tag || u32_be(min) ||
/// u32_be(max))`, so both members' instances derive the same one.
pub fn pair_id(tag: &RoomTag, a: u32, b: u32) -> [u8; 12] {
    let mut h = Sha256::new();
    h.update(b"p2pchat/v2/group-pair");
    h.update(tag.0);
    h.update(a.min(b).to_be_bytes());
    h.update(a.max(b).to_be_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 12];
    id.copy_from_slice(&digest[..12]);
    id
}

/// What one member's connection task hears about the others.
#[derive(Debug)]
pub enum Notice {
    /// A newcomer: we were here first, so we host the link.
    Arrived(Other),
    /// A member's connection ended.
    Left { member: u32 },
}

/// Another member, as a `Member` message describes it, and the pair's relay
/// token inputs (both sides mint the same token from them).
#[derive(Debug, Clone)]
pub struct Other {
    pub member: u32,
    pub details: PeerDetails,
    pub pair_id: [u8; 12],
    /// The relay server of the pair (the newcomer's mediator); `None`: off.
    pub relay: Option<String>,
}

/// A newcomer's place in its room.
#[derive(Debug)]
pub struct Joined {
    pub member: u32,
    /// Every member present before us (we join their links).
    pub others: Vec<Other>,
    pub notices: mpsc::Receiver<Notice>,
}

/// Why a `GroupHello` found no place.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The members present use another DH group.
    GroupMismatch,
    /// The room holds its member cap.
    Full(usize),
    /// The room holds its cap of members from the newcomer's address.
    PerSource(usize),
    /// The table holds its maximum of rooms.
    TooManyRooms,
    /// The shared room store cannot be reached (the message says why).
    Unavailable(String),
}

#[derive(Debug)]
struct Present {
    member: u32,
    conn: ConnId,
    details: PeerDetails,
    notices: mpsc::Sender<Notice>,
}

#[derive(Debug)]
struct Room {
    dh_group: u8,
    next_member: u32,
    present: Vec<Present>,
    /// When the last member left; the room is swept `ttl` later.
    empty_since: Option<Instant>,
    /// A generated code's nameplate stays taken while the room lives, so no one
    /// else is handed the same number meanwhile.
    _nameplate: Option<Nameplate>,
}

/// Every group room of this process.
#[derive(Debug)]
pub struct GroupRooms {
    rooms: Mutex<HashMap<RoomTag, Room>>,
    caps: GroupCaps,
    max_rooms: usize,
}

impl GroupRooms {
    pub fn new(caps: GroupCaps, max_rooms: usize) -> GroupRooms {
        GroupRooms {
            rooms: Mutex::new(HashMap::new()),
            caps,
            max_rooms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomTag, Room>> {
        // Each critical section is a few map and vector operations that cannot
        // leave the map inconsistent, so a poisoned lock is still usable.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn contains_now(&self, tag: &RoomTag) -> bool {
        self.lock().contains_key(tag)
    }

    pub fn join_now(
        &self,
        tag: RoomTag,
        conn: ConnId,
        dh_group: u8,
        details: PeerDetails,
        nameplate: Option<Nameplate>,
        relay: Option<String>,
    ) -> Result<Joined, Refusal> {
        let mut rooms = self.lock();
        let now = Instant::now();
        if rooms
            .get(&tag)
            .is_some_and(|room| room.empty_since.is_some_and(|t| now >= t + self.caps.ttl))
        {
            rooms.remove(&tag);
        }
        if !rooms.contains_key(&tag) && rooms.len() >= self.max_rooms {
            return Err(Refusal::TooManyRooms);
        }
        let room = rooms.entry(tag).or_insert_with(|| Room {
            dh_group,
            // A random start: members who stay linked while this mediator
            // restarts must not meet numbers of the new session that collide
            // with the old ones (§19.1).
            next_member: rand::random::<u32>().max(1),
            present: Vec::new(),
            empty_since: None,
            _nameplate: None,
        });
        if room.dh_group != dh_group {
            if !room.present.is_empty() {
                return Err(Refusal::GroupMismatch);
            }
            room.dh_group = dh_group;
        }
        // Members whose task has gone (its receiver dropped) no longer count.
        room.present.retain(|p| !p.notices.is_closed());
        if room.present.len() >= self.caps.max_members {
            return Err(Refusal::Full(self.caps.max_members));
        }
        let source = source_of(&details);
        let from_source = room
            .present
            .iter()
            .filter(|p| source_of(&p.details) == source)
            .count();
        if from_source >= self.caps.per_source {
            return Err(Refusal::PerSource(self.caps.per_source));
        }
        let member = room.next_member;
        room.next_member = room.next_member.checked_add(1).unwrap_or(1);
        let mut others = Vec::with_capacity(room.present.len());
        room.present.retain(|p| {
            let pair_id = pair_id(&tag, p.member, member);
            let newcomer = Other {
                member,
                details: details.clone(),
                pair_id,
                relay: relay.clone(),
            };
            match p.notices.try_send(Notice::Arrived(newcomer)) {
                Ok(()) => {
                    others.push(Other {
                        member: p.member,
                        details: p.details.clone(),
                        pair_id,
                        relay: relay.clone(),
                    });
                    true
                }
                // Not reading: it leaves (dropping its sender ends its task's wait).
                Err(_) => false,
            }
        });
        let (tx, rx) = mpsc::channel(NOTICE_QUEUE);
        room.present.push(Present {
            member,
            conn,
            details,
            notices: tx,
        });
        room.empty_since = None;
        if room._nameplate.is_none() {
            room._nameplate = nameplate;
        }
        Ok(Joined {
            member,
            others,
            notices: rx,
        })
    }

    pub fn leave_now(&self, tag: &RoomTag, member: u32, conn: ConnId) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(tag) else {
            return;
        };
        let before = room.present.len();
        room.present
            .retain(|p| !(p.member == member && p.conn == conn));
        if room.present.len() == before {
            return;
        }
        room.present
            .retain(|p| p.notices.try_send(Notice::Left { member }).is_ok());
        if room.present.is_empty() {
            room.empty_since = Some(Instant::now());
        }
    }
}

impl GroupTable for GroupRooms {
    fn join(
        &self,
        tag: RoomTag,
        conn: ConnId,
        dh_group: u8,
        details: PeerDetails,
        nameplate: Option<Nameplate>,
        relay: Option<String>,
    ) -> BoxFuture<'_, Result<Joined, Refusal>> {
        future::ready(self.join_now(tag, conn, dh_group, details, nameplate, relay)).boxed()
    }

    fn leave<'a>(&'a self, tag: &'a RoomTag, member: u32, conn: ConnId) -> BoxFuture<'a, ()> {
        self.leave_now(tag, member, conn);
        future::ready(()).boxed()
    }

    fn contains<'a>(&'a self, tag: &'a RoomTag) -> BoxFuture<'a, bool> {
        future::ready(self.contains_now(tag)).boxed()
    }

    fn max_members(&self) -> usize {
        self.caps.max_members
    }

    fn members(&self) -> usize {
        self.lock().values().map(|r| r.present.len()).sum()
    }

    fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut rooms = self.lock();
        let before = rooms.len();
        rooms.retain(|_, room| !room.empty_since.is_some_and(|t| now >= t + self.caps.ttl));
        before - rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(name: &str) -> PeerDetails {
        details_from(name, "127.0.0.1:1000")
    }

    fn details_from(name: &str, addr: &str) -> PeerDetails {
        PeerDetails {
            name: name.to_owned(),
            public: vec![2; 4],
            observed_addr: addr.parse().unwrap(),
            listen_port: 7,
            local_addrs: Vec::new(),
            no_relay: false,
        }
    }

    /// `max_members` members, as many from one address, `ttl`.
    fn caps(max_members: usize, ttl: Duration) -> GroupCaps {
        GroupCaps {
            max_members,
            per_source: max_members,
            ttl,
        }
    }

    #[test]
    fn newcomers_hear_of_everyone_and_everyone_of_them() {
        let rooms = GroupRooms::new(caps(16, Duration::from_secs(60)), 10);
        let tag = RoomTag([1; 32]);
        let mut a = rooms
            .join_now(tag, 1, 14, details("a"), None, None)
            .unwrap();
        assert_eq!(a.others.len(), 0);
        let mut b = rooms
            .join_now(tag, 2, 14, details("b"), None, None)
            .unwrap();
        assert_eq!(b.member, a.member.checked_add(1).unwrap_or(1));
        assert_eq!(b.others[0].details.name, "a");
        let c = rooms
            .join_now(tag, 3, 14, details("c"), None, None)
            .unwrap();
        let names: Vec<_> = c.others.iter().map(|o| o.details.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let Ok(Notice::Arrived(seen_by_a)) = a.notices.try_recv() else {
            panic!("a hears of b")
        };
        assert_eq!(seen_by_a.details.name, "b");
        // Both ends of a pair carry the same pair id (one relay token).
        assert_eq!(seen_by_a.pair_id, b.others[0].pair_id);
        let Ok(Notice::Arrived(seen_by_b)) = b.notices.try_recv() else {
            panic!("b hears of c")
        };
        assert_eq!(seen_by_b.pair_id, c.others[1].pair_id);
        rooms.leave_now(&tag, c.member, 3);
        assert!(matches!(
            b.notices.try_recv(),
            Ok(Notice::Left { member }) if member == c.member
        ));
        assert_eq!(rooms.members(), 2);
    }

    #[test]
    fn the_cap_and_the_dh_group_are_enforced() {
        let rooms = GroupRooms::new(caps(2, Duration::from_secs(60)), 10);
        let tag = RoomTag([1; 32]);
        let _a = rooms
            .join_now(tag, 1, 14, details("a"), None, None)
            .unwrap();
        assert_eq!(
            rooms
                .join_now(tag, 2, 15, details("b"), None, None)
                .unwrap_err(),
            Refusal::GroupMismatch
        );
        let _b = rooms
            .join_now(tag, 2, 14, details("b"), None, None)
            .unwrap();
        assert_eq!(
            rooms
                .join_now(tag, 3, 14, details("c"), None, None)
                .unwrap_err(),
            Refusal::Full(2)
        );
    }

    #[test]
    fn members_per_source_are_capped_by_ipv4_address_and_ipv6_64() {
        let rooms = GroupRooms::new(
            GroupCaps {
                max_members: 16,
                per_source: 2,
                ttl: Duration::from_secs(60),
            },
            10,
        );
        let tag = RoomTag([1; 32]);
        let join = |conn, addr| rooms.join_now(tag, conn, 14, details_from("m", addr), None, None);
        let _a = join(1, "192.0.2.7:1000").unwrap();
        // The same host, v4-mapped and from another port, is the same source.
        let _b = join(2, "[::ffff:192.0.2.7]:2000").unwrap();
        assert_eq!(
            join(3, "192.0.2.7:3000").unwrap_err(),
            Refusal::PerSource(2)
        );
        let _c = join(4, "192.0.2.8:1000").unwrap();
        // One IPv6 /64 is one source, whatever its interface ids.
        let _d = join(5, "[2001:db8:1:2::1]:1000").unwrap();
        let _e = join(6, "[2001:db8:1:2::ffff]:1000").unwrap();
        assert_eq!(
            join(7, "[2001:db8:1:2:abcd::1]:1000").unwrap_err(),
            Refusal::PerSource(2)
        );
        let _f = join(8, "[2001:db8:1:3::1]:1000").unwrap();
        // A member that leaves frees its source's place.
        rooms.leave_now(&tag, _a.member, 1);
        let _g = join(9, "192.0.2.7:4000").unwrap();
    }

    #[test]
    fn an_empty_room_lives_for_the_ttl_then_goes() {
        let rooms = GroupRooms::new(caps(16, Duration::from_millis(1)), 1);
        let tag = RoomTag([1; 32]);
        let a = rooms
            .join_now(tag, 1, 14, details("a"), None, None)
            .unwrap();
        rooms.leave_now(&tag, a.member, 1);
        assert!(rooms.contains_now(&tag));
        // The table is at its room cap, but the empty room still counts.
        assert_eq!(
            rooms
                .join_now(RoomTag([2; 32]), 2, 14, details("b"), None, None)
                .unwrap_err(),
            Refusal::TooManyRooms
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(rooms.sweep(), 1);
        assert!(!rooms.contains_now(&tag));
    }

    #[test]
    fn the_pair_id_is_symmetric_and_pinned() {
        let tag = RoomTag([0x11; 32]);
        assert_eq!(pair_id(&tag, 1, 2), pair_id(&tag, 2, 1));
        assert_ne!(pair_id(&tag, 1, 2), pair_id(&tag, 1, 3));
        assert_eq!(hex::encode(pair_id(&tag, 1, 2)), "816516be1b22b4b8c649b4de");
    }

    #[test]
    fn a_member_that_stopped_reading_is_dropped() {
        let rooms = GroupRooms::new(caps(16, Duration::from_secs(60)), 10);
        let tag = RoomTag([1; 32]);
        let a = rooms
            .join_now(tag, 1, 14, details("a"), None, None)
            .unwrap();
        drop(a.notices);
        let b = rooms
            .join_now(tag, 2, 14, details("b"), None, None)
            .unwrap();
        assert!(b.others.is_empty());
        assert_eq!(rooms.members(), 1);
    }
}
