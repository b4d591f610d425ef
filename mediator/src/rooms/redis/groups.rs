//! Group rooms shared through Redis (docs/protocol.md §19.7): a room is one hash
//! (`g`: the DH group, `next`: the last member number, `m:{n}`: member n's
//! instance, connection, liveness stamp, source address and details), changed
//! only by scripts
//! that also publish `garrive` / `gleft` to every instance holding a member of
//! it. Each instance refreshes its own members' stamps with the heartbeat; a
//! killed instance's members go stale within the liveness and are pruned (and
//! announced as left) by the next script that touches the room.

use std::collections::HashMap;

use dhke::RoomTag;
use futures::future::{BoxFuture, FutureExt};
use tokio::sync::mpsc;

use super::{bounded, lock, Inner, RedisRooms, WirePeer, PREFIX, ROOM_LIVENESS};
use crate::groups::{pair_id, source_of, GroupTable, Joined, Notice, Other, Refusal, NOTICE_QUEUE};
use crate::nameplates::Nameplate;
use crate::rooms::{ConnId, PeerDetails};

/// Prunes stale members of KEYS[1] (publishing `gleft` for each to the
/// instances of the live ones) and returns the live members as field, value
/// pairs after the room's DH group. Shared by the scripts below.
const PRUNE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local all = redis.call('HGETALL', KEYS[1])
local g = false
local live, dead = {}, {}
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  if f == 'g' then g = v
  elseif string.sub(f, 1, 2) == 'm:' then
    local m = cjson.decode(v)
    if m.live < now then
      redis.call('HDEL', KEYS[1], f)
      dead[#dead + 1] = tonumber(string.sub(f, 3))
    else
      live[#live + 1] = {tonumber(string.sub(f, 3)), m}
    end
  end
end
local function tell(notice, skip)
  local told = {}
  for _, p in ipairs(live) do
    local inst = p[2].inst
    if inst ~= skip and not told[inst] then
      told[inst] = true
      redis.call('PUBLISH', 'p2pchat:v2:inst:' .. inst, notice)
    end
  end
end
for _, n in ipairs(dead) do
  tell(cjson.encode({t = 'gleft', tag = ARGV[1], member = n}), '')
end
";

/// Join. KEYS[1] room; ARGV tag hex, dh group, inst, conn, peer JSON, liveness
/// ms, max members, room ttl ms, relay server ('' none, '-' off), the source
/// key (`AddrKey`'s text), members per source.
const JOIN: &str = r"
if #live > 0 and g and g ~= ARGV[2] then return {'mismatch'} end
if #live >= tonumber(ARGV[7]) then return {'full'} end
local same = 0
for _, p in ipairs(live) do
  if p[2].src == ARGV[10] then same = same + 1 end
end
if same >= tonumber(ARGV[11]) then return {'source'} end
local id = redis.call('HINCRBY', KEYS[1], 'next', 1)
local me = {inst = ARGV[3], conn = tonumber(ARGV[4]), live = now + tonumber(ARGV[6]),
  src = ARGV[10], peer = cjson.decode(ARGV[5])}
redis.call('HSET', KEYS[1], 'g', ARGV[2], 'm:' .. id, cjson.encode(me))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[8]) + tonumber(ARGV[6]))
tell(cjson.encode({t = 'garrive', tag = ARGV[1], member = id, peer = me.peer,
  relay = ARGV[9]}), '')
local out = {'joined', tostring(id)}
for _, p in ipairs(live) do
  out[#out + 1] = tostring(p[1])
  out[#out + 1] = cjson.encode(p[2].peer)
end
return out
";

/// Leave. KEYS[1] room; ARGV tag hex, inst, conn, member, room ttl ms.
const LEAVE: &str = r"
local f = 'm:' .. ARGV[4]
local v = redis.call('HGET', KEYS[1], f)
if v then
  local m = cjson.decode(v)
  if m.inst == ARGV[2] and m.conn == tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], f)
    for i, p in ipairs(live) do
      if p[1] == tonumber(ARGV[4]) then table.remove(live, i) break end
    end
    tell(cjson.encode({t = 'gleft', tag = ARGV[1], member = tonumber(ARGV[4])}), '')
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
    return 1
  end
end
return 0
";

/// Heartbeat for one room. KEYS[1] room; ARGV tag hex, inst, liveness ms, room ttl
/// ms, dh group, then (member, conn, source key, peer JSON) per member of ours. A
/// member of ours that is missing (Redis restarted) is put back under its number.
const REFRESH: &str = r"
for i = 6, #ARGV, 4 do
  local f = 'm:' .. ARGV[i]
  local v = redis.call('HGET', KEYS[1], f)
  local m = v and cjson.decode(v)
  if (not m) or (m.inst == ARGV[2] and m.conn == tonumber(ARGV[i + 1])) then
    m = {inst = ARGV[2], conn = tonumber(ARGV[i + 1]), live = now + tonumber(ARGV[3]),
      src = ARGV[i + 2], peer = cjson.decode(ARGV[i + 3])}
    redis.call('HSET', KEYS[1], f, cjson.encode(m), 'g', ARGV[5])
    if tonumber(redis.call('HGET', KEYS[1], 'next') or '0') < tonumber(ARGV[i]) then
      redis.call('HSET', KEYS[1], 'next', ARGV[i])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[3]))
return 1
";

/// The scripts, each with [`PRUNE`] in front.
pub(super) struct Scripts {
    join: ::redis::Script,
    leave: ::redis::Script,
    refresh: ::redis::Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        let with_prune = |body: &str| ::redis::Script::new(&format!("{PRUNE}{body}"));
        Scripts {
            join: with_prune(JOIN),
            leave: with_prune(LEAVE),
            refresh: with_prune(REFRESH),
        }
    }
}

/// A member of this instance in a shared group room.
#[derive(Debug)]
pub(super) struct Local {
    conn: ConnId,
    dh_group: u8,
    details: PeerDetails,
    notices: mpsc::Sender<Notice>,
    /// A generated code's nameplate, kept while the member is here.
    _nameplate: Option<Nameplate>,
}

/// This instance's members, by room and member number.
pub(super) type Locals = HashMap<(RoomTag, u32), Local>;

/// Newcomers of this instance whose join script has not answered yet, by room
/// and connection: `garrive`s for their room that come meanwhile (a member who
/// joined right after them) are kept for them here.
pub(super) type Joining = HashMap<(RoomTag, ConnId), Vec<(u32, PeerDetails, Option<String>)>>;

pub(super) fn group_key(tag: &RoomTag) -> String {
    format!("{PREFIX}group:{}", hex::encode(tag.0))
}

impl Inner {
    /// A `garrive` from our channel: tell our members of that room.
    pub(super) fn on_group_arrive(&self, tag: &str, member: u32, peer: WirePeer, relay: String) {
        let (Some(tag), Some(details)) = (parse_tag(tag), peer.into_details()) else {
            return;
        };
        let relay = relay_of(&relay);
        for ((t, _), early) in lock(&self.group_joining).iter_mut() {
            if *t == tag && early.len() < NOTICE_QUEUE {
                early.push((member, details.clone(), relay.clone()));
            }
        }
        lock(&self.group_locals).retain(|(t, m), local| {
            if *t != tag || *m == member {
                return true;
            }
            let other = Other {
                member,
                details: details.clone(),
                pair_id: pair_id(&tag, *m, member),
                relay: relay.clone(),
            };
            // A member not reading its notices leaves the room.
            local.notices.try_send(Notice::Arrived(other)).is_ok()
        });
    }

    /// A `gleft` from our channel.
    pub(super) fn on_group_left(&self, tag: &str, member: u32) {
        let Some(tag) = parse_tag(tag) else { return };
        lock(&self.group_locals).retain(|(t, m), local| {
            *t != tag || *m == member || local.notices.try_send(Notice::Left { member }).is_ok()
        });
    }

    async fn group_join(
        &self,
        tag: RoomTag,
        conn: ConnId,
        dh_group: u8,
        details: PeerDetails,
        nameplate: Option<Nameplate>,
        relay: Option<String>,
    ) -> Result<Joined, Refusal> {
        let peer = serde_json::to_string(&WirePeer::of(&details))
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let relay_arg = match &relay {
            None => "-".to_owned(),
            Some(server) => server.clone(),
        };
        let mut redis = self.redis.clone();
        let mut call = self.groups.join.key(group_key(&tag));
        call.arg(hex::encode(tag.0))
            .arg(dh_group)
            .arg(&self.instance)
            .arg(conn)
            .arg(&peer)
            .arg(ROOM_LIVENESS.as_millis() as u64)
            .arg(self.max_members)
            .arg(self.group_ttl.as_millis() as u64)
            .arg(&relay_arg)
            .arg(source_of(&details).to_string())
            .arg(self.members_per_source);
        // Until the script answers with our number, `garrive`s for this room
        // (members who joined right after us) are kept for us.
        lock(&self.group_joining).insert((tag, conn), Vec::new());
        let answer = bounded(call.invoke_async::<Vec<String>>(&mut redis)).await;
        let early = lock(&self.group_joining)
            .remove(&(tag, conn))
            .unwrap_or_default();
        let reply: Vec<String> = match answer {
            Ok(reply) => reply,
            Err(why) => {
                let crate::rooms::JoinOutcome::Unavailable(message) = self.unavailable(&why) else {
                    unreachable!("unavailable() is always Unavailable")
                };
                return Err(Refusal::Unavailable(message));
            }
        };
        self.set_up(true, "");
        match reply.first().map(String::as_str) {
            Some("mismatch") => return Err(Refusal::GroupMismatch),
            Some("full") => return Err(Refusal::Full(self.max_members)),
            Some("source") => return Err(Refusal::PerSource(self.members_per_source)),
            Some("joined") => {}
            _ => {
                return Err(Refusal::Unavailable(format!(
                    "unexpected group reply {reply:?}"
                )))
            }
        }
        let member: u32 = reply
            .get(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Refusal::Unavailable("a group reply without a number".into()))?;
        let mut others = Vec::new();
        for pair in reply[2..].chunks(2) {
            let [n, peer] = pair else { continue };
            let (Ok(n), Ok(peer)) = (n.parse::<u32>(), serde_json::from_str::<WirePeer>(peer))
            else {
                continue;
            };
            let Some(details) = peer.into_details() else {
                continue;
            };
            others.push(Other {
                member: n,
                details,
                pair_id: pair_id(&tag, n, member),
                relay: relay.clone(),
            });
        }
        let (tx, rx) = mpsc::channel(NOTICE_QUEUE);
        for (n, details, relay) in early {
            if n > member {
                let other = Other {
                    member: n,
                    details,
                    pair_id: pair_id(&tag, n, member),
                    relay,
                };
                let _ = tx.try_send(Notice::Arrived(other));
            }
        }
        lock(&self.group_locals).insert(
            (tag, member),
            Local {
                conn,
                dh_group,
                details,
                notices: tx,
                _nameplate: nameplate,
            },
        );
        Ok(Joined {
            member,
            others,
            notices: rx,
        })
    }

    async fn group_leave(&self, tag: &RoomTag, member: u32, conn: ConnId) {
        let removed = {
            let mut locals = lock(&self.group_locals);
            match locals.get(&(*tag, member)) {
                Some(local) if local.conn == conn => locals.remove(&(*tag, member)),
                _ => None,
            }
        };
        if removed.is_none() {
            return;
        }
        let mut redis = self.redis.clone();
        let mut call = self.groups.leave.key(group_key(tag));
        call.arg(hex::encode(tag.0))
            .arg(&self.instance)
            .arg(conn)
            .arg(member)
            .arg(self.group_ttl.as_millis() as u64);
        // Unreachable: the member goes stale in Redis within the liveness.
        if let Err(why) = bounded(call.invoke_async::<i64>(&mut redis)).await {
            self.set_up(false, &why);
        }
    }

    /// The heartbeat's part for group rooms: refresh (or put back) our members.
    pub(super) async fn group_beat(&self) -> Result<(), String> {
        /// One member of ours as `REFRESH` takes it.
        struct Beat {
            member: u32,
            conn: ConnId,
            dh_group: u8,
            source: String,
            peer: String,
        }
        let mut rooms: HashMap<RoomTag, Vec<Beat>> = HashMap::new();
        for ((tag, member), local) in lock(&self.group_locals).iter() {
            if local.notices.is_closed() {
                continue;
            }
            let peer =
                serde_json::to_string(&WirePeer::of(&local.details)).map_err(|e| e.to_string())?;
            rooms.entry(*tag).or_default().push(Beat {
                member: *member,
                conn: local.conn,
                dh_group: local.dh_group,
                source: source_of(&local.details).to_string(),
                peer,
            });
        }
        let mut redis = self.redis.clone();
        for (tag, members) in rooms {
            let mut call = self.groups.refresh.key(group_key(&tag));
            call.arg(hex::encode(tag.0))
                .arg(&self.instance)
                .arg(ROOM_LIVENESS.as_millis() as u64)
                .arg(self.group_ttl.as_millis() as u64)
                .arg(members[0].dh_group);
            for beat in &members {
                call.arg(beat.member)
                    .arg(beat.conn)
                    .arg(&beat.source)
                    .arg(&beat.peer);
            }
            let _: i64 = bounded(call.invoke_async(&mut redis)).await?;
        }
        Ok(())
    }
}

fn parse_tag(text: &str) -> Option<RoomTag> {
    let mut tag = [0u8; 32];
    hex::decode_to_slice(text, &mut tag).ok()?;
    Some(RoomTag(tag))
}

/// The relay argument back: `-` off, else the server (`""`: the mediator the
/// member talks to); at most a host name and port.
fn relay_of(text: &str) -> Option<String> {
    (text != "-" && text.len() <= 253).then(|| text.to_owned())
}

impl GroupTable for RedisRooms {
    fn join(
        &self,
        tag: RoomTag,
        conn: ConnId,
        dh_group: u8,
        details: PeerDetails,
        nameplate: Option<Nameplate>,
        relay: Option<String>,
    ) -> BoxFuture<'_, Result<Joined, Refusal>> {
        async move {
            self.inner
                .group_join(tag, conn, dh_group, details, nameplate, relay)
                .await
        }
        .boxed()
    }

    fn leave<'a>(&'a self, tag: &'a RoomTag, member: u32, conn: ConnId) -> BoxFuture<'a, ()> {
        self.inner.group_leave(tag, member, conn).boxed()
    }

    /// Always false: the two-party claim script checks the group key itself, in
    /// the same step (no extra round trip per `Hello`).
    fn contains<'a>(&'a self, _tag: &'a RoomTag) -> BoxFuture<'a, bool> {
        futures::future::ready(false).boxed()
    }

    fn max_members(&self) -> usize {
        self.inner.max_members
    }

    fn members(&self) -> usize {
        lock(&self.inner.group_locals).len()
    }
}
