//! The room table shared by several mediators through one Redis (docs/protocol.md
//! §18): a room is a Redis hash claimed by one Lua script, kept alive by the
//! heartbeat of the instance holding its host, and a match is handed to that
//! instance over its pub/sub channel, which confirms it. Every Redis call has a
//! deadline; while Redis is unreachable new rooms are refused, waiting hosts keep
//! waiting, and the heartbeat puts their rooms back when Redis returns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Script, Value};
use dhke::RoomTag;
use futures::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use wire::rendezvous::MAX_LOCAL_ADDRS;

mod groups;

use super::{Arrival, ConnId, JoinOutcome, Joined, PairTerms, Pairing, PeerDetails, RoomTable};
use crate::nameplates::{Nameplate, NameplateTable, NoNameplate, Release};
use dhke::room::NAMEPLATE_MAX;

/// Every key and channel starts with this.
const PREFIX: &str = "p2pchat:v2:";
/// A room key lives this long unless its instance's heartbeat refreshes it, so
/// the rooms of a killed instance vanish by themselves.
const ROOM_LIVENESS: Duration = Duration::from_secs(15);
/// How often an instance refreshes the rooms its hosts hold.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Every Redis command must answer within this.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// Connecting to Redis at startup must succeed within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the claiming instance waits for the host's instance to confirm.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Claims per arrival: each one that fails has removed a stale room.
const MAX_CLAIMS: usize = 3;
/// How long a cross-instance pair's round-trip figures may take to cross
/// (connection.rs waits 2 s for its probe, then 2 s for the other side's figure).
const RTT_WINDOW: Duration = Duration::from_secs(6);
/// Largest pub/sub message read; a `match` with 8 local addresses is under 1 KiB.
const MAX_NOTICE: usize = 8192;
/// Messages taken off our channel at once, so one `acks` answers at most this many
/// matches (under 6 KiB of ids).
const MAX_BATCH: usize = 256;
/// Answers read from one `acks`.
const MAX_ACKS: usize = MAX_BATCH;
/// Rooms refreshed by one heartbeat script call.
const HEARTBEAT_BATCH: usize = 512;
/// The channel on which an instance announces a room that got a waiting host,
/// for the presence connections of every instance (docs/protocol.md §21): the
/// 32 tag bytes, then the announcing instance's id.
const RING_CHANNEL: &str = "p2pchat:v3:ring";
/// Announced rooms waiting for this instance's presence table; more are
/// dropped (a ring is a wake-up, the room waits anyway).
const RING_QUEUE: usize = 1024;

/// The relay token key agreed by the instances (when no `--relay-secret`).
const RELAY_KEY: &str = "p2pchat:v2:relay-key";

/// Opens the room or takes the host waiting in it; refuses a tag that is a group
/// room (KEYS[2], §19.7). KEYS[1] room; ARGV group, inst,
/// conn, peer, liveness ms, may_open, match message. A host of another instance is
/// sent the match message (its `conn` filled in) on that instance's channel in the
/// same step; if nobody hears that channel, the instance is dead, its room was
/// stale, and the arrival opens the room instead.
const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return {'kind'} end
local room = redis.call('HMGET', KEYS[1], 'group', 'inst', 'conn', 'peer')
if room[1] then
  if room[1] ~= ARGV[1] then return {'mismatch'} end
  redis.call('DEL', KEYS[1])
  if room[2] == ARGV[2] then return {'matched', room[2], room[3], room[4]} end
  local notice = ARGV[7] .. ',"conn":' .. room[3] .. ',"peer":' .. ARGV[4] .. '}'
  if redis.call('PUBLISH', 'p2pchat:v2:inst:' .. room[2], notice) > 0 then
    return {'matched', room[2], room[3], room[4]}
  end
end
if ARGV[6] ~= '1' then return {'full'} end
redis.call('HSET', KEYS[1], 'group', ARGV[1], 'inst', ARGV[2], 'conn', ARGV[3], 'peer', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'waiting'}
"#;

/// Removes the room if this host still holds it. KEYS[1] room; ARGV inst, conn.
const LEAVE: &str = r"
local owner = redis.call('HMGET', KEYS[1], 'inst', 'conn')
if owner[1] == ARGV[1] and owner[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Refreshes each room this instance's host holds: 1 refreshed, 0 missing, 2 held
/// by someone else. KEYS rooms; ARGV inst, liveness ms, then one conn per key.
const REFRESH: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('HMGET', key, 'inst', 'conn')
  if owner[1] == ARGV[1] and owner[2] == ARGV[2 + i] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  elseif owner[1] then
    out[i] = 2
  else
    out[i] = 0
  end
end
return out
";

/// Puts a lost room back unless the tag is taken. KEYS[1] room; ARGV as CLAIM's
/// first five.
const REOPEN: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'group', ARGV[1], 'inst', ARGV[2], 'conn', ARGV[3], 'peer', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// Keys of the shared nameplate table (§18.3): held numbers by expiry (ms), released
/// numbers, the highest number ever handed out, and each held number's owner.
const PLATES_HELD: &str = "p2pchat:v2:plates:held";
const PLATES_FREE: &str = "p2pchat:v2:plates:free";
const PLATES_NEXT: &str = "p2pchat:v2:plates:next";
const PLATES_OWNER: &str = "p2pchat:v2:plates:owner";

/// Allocates the smallest released nameplate, else the next never used; first
/// frees up to 64 whose lease expired (their instance died). KEYS held, free, next,
/// owner; ARGV owner, liveness ms, cap, max. 0: none free.
const ALLOCATE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 64)
for _, n in ipairs(dead) do
  redis.call('ZREM', KEYS[1], n)
  redis.call('HDEL', KEYS[4], n)
  redis.call('ZADD', KEYS[2], n, n)
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
for _ = 1, 64 do
  local n
  local free = redis.call('ZPOPMIN', KEYS[2])
  if free[1] then
    n = tonumber(free[1])
  else
    n = redis.call('INCR', KEYS[3])
    if n > tonumber(ARGV[4]) then
      redis.call('DECR', KEYS[3])
      return 0
    end
  end
  if redis.call('HEXISTS', KEYS[4], n) == 0 then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), n)
    redis.call('HSET', KEYS[4], n, ARGV[1])
    return n
  end
end
return 0
";

/// Gives a nameplate back if this lease still holds it. KEYS held, free, owner;
/// ARGV number, owner.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
  return 1
end
return 0
";

/// Extends this instance's leases, and takes back those Redis forgot (it
/// restarted empty). KEYS held, free, owner; ARGV liveness ms, then number, owner
/// pairs. Returns how many are held by someone else now.
const RENEW: &str = r"
local t = redis.call('TIME')
local expires = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
local lost = 0
for i = 2, #ARGV, 2 do
  local owner = redis.call('HGET', KEYS[3], ARGV[i])
  if owner == ARGV[i + 1] or not owner then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[1], expires, ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
  else
    lost = lost + 1
  end
end
return lost
";

/// Why the shared room table could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoomStoreError {
    /// The URL does not parse.
    #[error("--redis `{0}` is not a Redis URL (like redis://127.0.0.1:6379/): {1}")]
    Url(String, String),
    /// Redis did not answer at startup.
    #[error("cannot reach Redis at {0}: {1}; start Redis or fix --redis")]
    Unreachable(String, String),
}

/// A client's details as they travel through Redis (room hashes and `match`
/// messages): JSON, `public` in hex.
#[derive(Debug, Serialize, Deserialize)]
struct WirePeer {
    name: String,
    public: String,
    observed_addr: SocketAddr,
    listen_port: u16,
    local_addrs: Vec<SocketAddr>,
    no_relay: bool,
}

impl WirePeer {
    fn of(details: &PeerDetails) -> WirePeer {
        WirePeer {
            name: details.name.clone(),
            public: fast_hex(&details.public),
            observed_addr: details.observed_addr,
            listen_port: details.listen_port,
            local_addrs: details.local_addrs.clone(),
            no_relay: details.no_relay,
        }
    }

    /// The details back, checked again: another instance wrote them, but Redis is
    /// not where a mediator takes a name or a length on trust.
    fn into_details(self) -> Option<PeerDetails> {
        wire::validate_name(&self.name).ok()?;
        if self.local_addrs.len() > MAX_LOCAL_ADDRS || self.public.len() > 2 * 512 {
            return None;
        }
        Some(PeerDetails {
            name: self.name,
            public: {
                let mut bytes = vec![0u8; self.public.len() / 2];
                hex::decode_to_slice(&self.public, &mut bytes).ok()?;
                bytes
            },
            observed_addr: self.observed_addr,
            listen_port: self.listen_port,
            local_addrs: self.local_addrs,
            no_relay: self.no_relay,
        })
    }
}

/// Lowercase hex of `bytes`, written pairwise into one buffer (the `hex` crate's
/// `encode` builds its string a char at a time, which showed in profiles: a
/// group-15 public value is 768 digits, twice per pairing).
fn fast_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    // The buffer is exactly twice the input, as encode_to_slice requires.
    let _ = hex::encode_to_slice(bytes, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The head of a `match` notice: every field but `conn` and `peer`, which the
/// claim script appends as text (no JSON work in Redis, and the peer's details
/// are encoded once for both the room hash and the notice).
#[derive(Serialize)]
struct MatchHead<'a> {
    t: &'static str,
    mid: u64,
    from: &'a str,
    pair: String,
    expires: u32,
    relay: Option<&'a str>,
}

impl MatchHead<'_> {
    /// The JSON text without its closing brace.
    fn open_json(&self) -> Result<String, serde_json::Error> {
        let mut text = serde_json::to_string(self)?;
        text.pop();
        Ok(text)
    }
}

/// One message on an instance's channel `p2pchat:v2:inst:{id}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Notice {
    /// To the host's instance: your host `conn` has a joiner.
    Match {
        mid: u64,
        from: String,
        conn: ConnId,
        pair: String,
        expires: u32,
        /// `None` (JSON null): the claimer's relay is off.
        relay: Option<String>,
        peer: WirePeer,
    },
    /// To a claiming instance: which of its matches our hosts took and which
    /// they could not (the host had just left). One message answers every match
    /// from that instance read in one go off our channel.
    Acks { took: Vec<u64>, refused: Vec<u64> },
    /// To the other side's instance: our client's punch-probe round trip.
    Rtt { pair: String, rtt_us: u64 },
    /// To every instance with a member in group room `tag` (§19.7): a newcomer.
    #[serde(rename = "garrive")]
    GroupArrive {
        tag: String,
        member: u32,
        peer: WirePeer,
        relay: String,
    },
    /// ... and a member gone.
    #[serde(rename = "gleft")]
    GroupLeft { tag: String, member: u32 },
}

/// A host of this instance, waiting in a shared room.
#[derive(Debug)]
struct Host {
    tag: RoomTag,
    group: u8,
    details: PeerDetails,
    handoff: oneshot::Sender<Box<Joined>>,
    /// Its claim opened the room. Until then the heartbeat leaves it alone: putting
    /// back a room that was never opened could match the arrival with itself.
    opened: bool,
}

/// What the claim script decided.
enum Claim {
    Waiting,
    Full,
    Mismatch,
    /// The tag is an open group room.
    GroupRoom,
    Matched {
        inst: String,
        conn: ConnId,
        peer: String,
    },
}

/// The shared room table and nameplate table. Cheap to clone: everything lives
/// behind one `Arc`.
#[derive(Debug, Clone)]
pub struct RedisRooms {
    inner: Arc<Inner>,
}

struct Inner {
    /// Rooms other instances announced (§21), for our presence connections.
    rings: mpsc::Sender<RoomTag>,
    rings_out: Mutex<Option<mpsc::Receiver<RoomTag>>>,
    redis: ConnectionManager,
    /// This process's id (16 hex digits), fresh at every start.
    instance: String,
    /// Where Redis is, for messages (no password).
    place: String,
    max_rooms: usize,
    claim: Script,
    leave: Script,
    refresh: Script,
    reopen: Script,
    allocate: Script,
    release: Script,
    renew: Script,
    /// Most nameplates held at once across all instances (the room cap).
    plate_cap: usize,
    /// Nameplates leased by this instance's connections, with their owner string.
    plates: Mutex<HashMap<u32, String>>,
    next_lease: AtomicU64,
    hosts: Mutex<HashMap<ConnId, Host>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<bool>>>,
    rtts: Mutex<HashMap<[u8; 12], oneshot::Sender<Duration>>>,
    next_mid: AtomicU64,
    up: AtomicBool,
    /// Wakes the heartbeat early (Redis dropped the connection).
    wake: Notify,
    /// The relay key agreed in Redis, to put back after a Redis restart.
    relay_key: Option<String>,
    /// Group rooms (§19.7).
    groups: groups::Scripts,
    group_locals: Mutex<groups::Locals>,
    group_joining: Mutex<groups::Joining>,
    max_members: usize,
    /// Members of one room from one IPv4 address or IPv6 /64 (§19.1).
    members_per_source: usize,
    group_ttl: Duration,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRooms")
            .field("instance", &self.instance)
            .field("place", &self.place)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one map call: a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn room_key(tag: &RoomTag) -> String {
    format!("{PREFIX}room:{}", hex::encode(tag.0))
}

fn channel(instance: &str) -> String {
    format!("{PREFIX}inst:{instance}")
}

fn is_instance_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `host:port` of a Redis URL, for messages: never the password.
pub fn place_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or("").to_owned()
}

async fn bounded<T>(
    what: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, String> {
    match timeout(REDIS_TIMEOUT, what).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}ms", REDIS_TIMEOUT.as_millis())),
    }
}

impl RedisRooms {
    /// Connects to Redis at `url`, subscribes this instance's channel and starts
    /// the heartbeat and the message dispatcher (both stop at `cancel`). Returns
    /// the table and the relay token key: `relay_secret` if given, otherwise the
    /// one agreed in Redis (the first instance to start sets it).
    pub async fn connect(
        url: &str,
        max_rooms: usize,
        group_caps: crate::groups::GroupCaps,
        relay_secret: Option<[u8; 32]>,
        cancel: CancellationToken,
    ) -> Result<(RedisRooms, [u8; 32]), RoomStoreError> {
        let place = place_of(url);
        let mut info = url
            .into_connection_info()
            .map_err(|e| RoomStoreError::Url(place.clone(), e.to_string()))?;
        // Pub/sub on the same multiplexed connection needs RESP3 push messages.
        info.redis.protocol = ProtocolVersion::RESP3;
        let client =
            Client::open(info).map_err(|e| RoomStoreError::Url(place.clone(), e.to_string()))?;
        let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(500)
            .set_push_sender(push_tx)
            .set_automatic_resubscription();
        let unreachable = |e: String| RoomStoreError::Unreachable(place.clone(), e);
        let mut redis = match timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable("no answer".into())),
        };
        let instance = hex::encode(rand::random::<[u8; 8]>());
        bounded(redis.subscribe(channel(&instance)))
            .await
            .map_err(unreachable)?;
        bounded(redis.subscribe(RING_CHANNEL))
            .await
            .map_err(unreachable)?;
        let (rings, rings_out) = mpsc::channel(RING_QUEUE);
        let (secret, relay_key) = match relay_secret {
            Some(secret) => (secret, None),
            None => {
                let ours = hex::encode(rand::random::<[u8; 32]>());
                let agreed = agree_relay_key(&mut redis, &ours)
                    .await
                    .map_err(unreachable)?;
                (agreed.0, Some(agreed.1))
            }
        };
        let inner = Arc::new(Inner {
            rings,
            rings_out: Mutex::new(Some(rings_out)),
            redis,
            instance,
            place,
            max_rooms,
            claim: Script::new(CLAIM),
            leave: Script::new(LEAVE),
            refresh: Script::new(REFRESH),
            reopen: Script::new(REOPEN),
            allocate: Script::new(ALLOCATE),
            release: Script::new(RELEASE),
            renew: Script::new(RENEW),
            plate_cap: max_rooms.min(NAMEPLATE_MAX as usize),
            plates: Mutex::new(HashMap::new()),
            next_lease: AtomicU64::new(0),
            hosts: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            rtts: Mutex::new(HashMap::new()),
            next_mid: AtomicU64::new(0),
            up: AtomicBool::new(true),
            wake: Notify::new(),
            relay_key,
            groups: groups::Scripts::new(),
            group_locals: Mutex::new(HashMap::new()),
            group_joining: Mutex::new(HashMap::new()),
            max_members: group_caps.max_members,
            members_per_source: group_caps.per_source,
            group_ttl: group_caps.ttl,
        });
        tracing::info!(
            redis = %inner.place,
            instance = %inner.instance,
            "sharing rooms through Redis"
        );
        tokio::spawn(dispatch(inner.clone(), push_rx, cancel.clone()));
        tokio::spawn(heartbeat(inner.clone(), cancel));
        Ok((RedisRooms { inner }, secret))
    }

    /// This process's instance id (its channel is `p2pchat:v2:inst:{id}`).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }
}

/// `SET relay-key ours NX`, then `GET`: the key every instance uses, hex and bytes.
async fn agree_relay_key(
    redis: &mut ConnectionManager,
    ours: &str,
) -> Result<([u8; 32], String), String> {
    let _: Value = bounded(
        ::redis::cmd("SET")
            .arg(RELAY_KEY)
            .arg(ours)
            .arg("NX")
            .query_async(redis),
    )
    .await?;
    let agreed: String = bounded(::redis::cmd("GET").arg(RELAY_KEY).query_async(redis)).await?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(&agreed, &mut secret)
        .map_err(|_| format!("{RELAY_KEY} in Redis is not 64 hex digits; delete it"))?;
    Ok((secret, agreed))
}

impl Inner {
    fn set_up(&self, up: bool, why: &str) {
        let was = self.up.swap(up, Ordering::Relaxed);
        if was && !up {
            tracing::warn!(redis = %self.place, error = why, "Redis unreachable: refusing new rooms");
        } else if !was && up {
            tracing::info!(redis = %self.place, "Redis reachable again: opening rooms");
        }
    }

    fn unavailable(&self, why: &str) -> JoinOutcome {
        self.set_up(false, why);
        JoinOutcome::Unavailable(format!(
            "the mediator cannot reach its room store (Redis at {}); try again in a moment",
            self.place
        ))
    }

    async fn claim(
        &self,
        (key, group_key): (&str, &str),
        group: u8,
        conn: ConnId,
        peer: &str,
        may_open: bool,
        notice: &str,
    ) -> Result<Claim, String> {
        let mut redis = self.redis.clone();
        let mut call = self.claim.key(key);
        call.key(group_key);
        self.room_args(&mut call, group, conn, peer)
            .arg(if may_open { "1" } else { "0" })
            .arg(notice);
        let reply: Vec<String> = bounded(call.invoke_async(&mut redis)).await?;
        match reply.as_slice() {
            [w] if w == "waiting" => Ok(Claim::Waiting),
            [w] if w == "full" => Ok(Claim::Full),
            [w] if w == "mismatch" => Ok(Claim::Mismatch),
            [w] if w == "kind" => Ok(Claim::GroupRoom),
            [w, inst, conn, peer] if w == "matched" => Ok(Claim::Matched {
                inst: inst.clone(),
                conn: conn.parse().unwrap_or(ConnId::MAX),
                peer: peer.clone(),
            }),
            other => Err(format!("unexpected claim reply {other:?}")),
        }
    }

    /// The first five arguments of CLAIM and REOPEN: what a room hash holds, and
    /// its liveness.
    fn room_args<'c, 'a>(
        &self,
        call: &'c mut ::redis::ScriptInvocation<'a>,
        group: u8,
        conn: ConnId,
        peer: &str,
    ) -> &'c mut ::redis::ScriptInvocation<'a> {
        call.arg(group)
            .arg(&self.instance)
            .arg(conn)
            .arg(peer)
            .arg(ROOM_LIVENESS.as_millis() as u64)
    }

    async fn publish(&self, instance: &str, notice: &Notice) -> Result<i64, String> {
        let text = serde_json::to_string(notice).map_err(|e| e.to_string())?;
        let mut redis = self.redis.clone();
        bounded(
            ::redis::cmd("PUBLISH")
                .arg(channel(instance))
                .arg(text)
                .query_async(&mut redis),
        )
        .await
    }

    fn take_host(&self, conn: ConnId) -> Option<Host> {
        lock(&self.hosts).remove(&conn)
    }

    async fn join(self: &Arc<Self>, tag: RoomTag, arrival: Arrival) -> JoinOutcome {
        let key = room_key(&tag);
        let group_key = groups::group_key(&tag);
        let peer = match serde_json::to_string(&WirePeer::of(&arrival.details)) {
            Ok(p) => p,
            Err(e) => return self.unavailable(&e.to_string()),
        };
        let Arrival {
            id,
            group,
            details,
            terms,
        } = arrival;
        // Registered before the claim, so a joiner's `match` that races the claim's
        // answer finds the host.
        let (handoff, receiver) = oneshot::channel();
        let may_open = {
            let mut hosts = lock(&self.hosts);
            let may_open = hosts.len() < self.max_rooms;
            if may_open {
                let host = Host {
                    tag,
                    group,
                    details: details.clone(),
                    handoff,
                    opened: false,
                };
                hosts.insert(id, host);
            }
            may_open
        };
        let mut details = Some(details);
        for _ in 0..MAX_CLAIMS {
            if details.is_none() {
                break;
            }
            // The match message goes out inside the claim, so its ack may come
            // back before the claim's answer: wait for it from the start.
            let (mid, ack) = self.expect_ack();
            let notice = MatchHead {
                t: "match",
                mid,
                from: &self.instance,
                pair: hex::encode(terms.pair_id),
                expires: terms.token_expires,
                relay: terms.relay_server.as_deref(),
            }
            .open_json();
            let claim = match notice {
                Ok(notice) => {
                    self.claim((&key, &group_key), group, id, &peer, may_open, &notice)
                        .await
                }
                Err(e) => Err(e.to_string()),
            };
            let claim = match claim {
                Ok(claim) => claim,
                Err(why) => {
                    lock(&self.acks).remove(&mid);
                    self.take_host(id);
                    return self.unavailable(&why);
                }
            };
            self.set_up(true, "");
            if !matches!(&claim, Claim::Matched { inst, .. } if *inst != self.instance) {
                lock(&self.acks).remove(&mid);
            }
            let (inst, conn, host_peer) = match claim {
                Claim::Waiting => {
                    if let Some(host) = lock(&self.hosts).get_mut(&id) {
                        host.opened = true;
                    }
                    return JoinOutcome::Waiting(receiver);
                }
                Claim::Full => return JoinOutcome::Full,
                Claim::Mismatch => {
                    self.take_host(id);
                    return JoinOutcome::GroupMismatch;
                }
                Claim::GroupRoom => {
                    self.take_host(id);
                    return JoinOutcome::GroupRoom;
                }
                Claim::Matched { inst, conn, peer } => (inst, conn, peer),
            };
            let Some(joiner) = details.take() else {
                break;
            };
            let (end, joiner_end) = Pairing::pair(terms.clone());
            if inst == self.instance {
                // The host is ours: hand over in memory, as InMemoryRooms does.
                let Some(host) = self.take_host(conn) else {
                    details = Some(joiner);
                    continue;
                };
                let joined = Box::new(Joined {
                    details: joiner,
                    pairing: end,
                });
                match host.handoff.send(joined) {
                    Ok(()) => {
                        self.take_host(id);
                        return JoinOutcome::Matched(host.details, joiner_end);
                    }
                    Err(back) => {
                        details = Some(back.details);
                        continue;
                    }
                }
            }
            let host_details = serde_json::from_str::<WirePeer>(&host_peer)
                .ok()
                .and_then(WirePeer::into_details);
            // The host's instance took the match, or its host had just left (then
            // the room is gone and the next claim opens it).
            let took = matches!(timeout(ACK_TIMEOUT, ack).await, Ok(Ok(true)));
            lock(&self.acks).remove(&mid);
            match (host_details, is_instance_id(&inst)) {
                (Some(host), true) if took => {
                    self.take_host(id);
                    self.bridge(end, inst);
                    return JoinOutcome::Matched(host, joiner_end);
                }
                (Some(_), true) => {}
                // Garbage in the room (not ours to read): the claim removed it.
                _ => tracing::warn!(redis = %self.place, "removed an unreadable room"),
            }
            details = Some(joiner);
        }
        self.take_host(id);
        // Redis answered; every claim met a room whose host had just gone.
        JoinOutcome::Unavailable("the room changed hands too often; try again in a moment".into())
    }

    /// A fresh match id and the receiver its `ack` will arrive on.
    fn expect_ack(&self) -> (u64, oneshot::Receiver<bool>) {
        let mid = self.next_mid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.acks).insert(mid, tx);
        (mid, rx)
    }

    /// Carries a cross-instance pair's round-trip figures: our task's goes to the
    /// other instance, the other's comes back into our task's `rtt_in`.
    fn bridge(self: &Arc<Self>, end: Pairing, to: String) {
        let Pairing {
            terms: PairTerms { pair_id, .. },
            rtt_out,
            rtt_in,
        } = end;
        lock(&self.rtts).insert(pair_id, rtt_out);
        let inner = self.clone();
        tokio::spawn(async move {
            let until = Instant::now() + RTT_WINDOW;
            // If our client's connection ended before its probe (or never
            // answered it), nobody waits for the other side's figure and the
            // entry goes at once: a task and its timer per pair for 6 s cost
            // more than the pairing itself.
            if let Ok(Ok(rtt)) = tokio::time::timeout_at(until, rtt_in).await {
                let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                let notice = Notice::Rtt {
                    pair: hex::encode(pair_id),
                    rtt_us,
                };
                let _ = inner.publish(&to, &notice).await;
                // The other side's figure may still be on its way.
                tokio::time::sleep_until(until).await;
            }
            lock(&inner.rtts).remove(&pair_id);
        });
    }

    /// A `match` from our channel: hands the joiner to our host `conn` if it is
    /// still here. Returns whether it took it; the caller answers in an `acks`.
    fn take_match(
        self: &Arc<Self>,
        from: &str,
        conn: ConnId,
        pair: &str,
        expires: u32,
        relay: Option<String>,
        peer: WirePeer,
    ) -> bool {
        let mut pair_id = [0u8; 12];
        hex::decode_to_slice(pair, &mut pair_id).is_ok()
            && relay.as_ref().map_or(true, |r| r.len() <= 253)
            && match (peer.into_details(), self.take_host(conn)) {
                (Some(details), Some(host)) => {
                    let (local, far) = Pairing::pair(PairTerms {
                        pair_id,
                        token_expires: expires,
                        relay_server: relay,
                    });
                    let joined = Box::new(Joined {
                        details,
                        pairing: local,
                    });
                    let sent = host.handoff.send(joined).is_ok();
                    if sent {
                        self.bridge(far, from.to_owned());
                    }
                    sent
                }
                (None, Some(host)) => {
                    // Keep the host waiting; the joiner's claim moves on.
                    lock(&self.hosts).insert(conn, host);
                    false
                }
                _ => false,
            }
    }

    /// One message from our channel. For a `match`, returns the claiming
    /// instance, the match id and whether our host took it, for `dispatch` to
    /// answer in an `acks`.
    fn on_notice(self: &Arc<Self>, notice: Notice) -> Option<(String, u64, bool)> {
        match notice {
            Notice::Match {
                mid,
                from,
                conn,
                pair,
                expires,
                relay,
                peer,
            } => {
                if !is_instance_id(&from) {
                    return None;
                }
                let took = self.take_match(&from, conn, &pair, expires, relay, peer);
                return Some((from, mid, took));
            }
            Notice::Acks { took, refused } => {
                let answers = took.into_iter().map(|mid| (mid, true));
                let answers = answers.chain(refused.into_iter().map(|mid| (mid, false)));
                let mut acks = lock(&self.acks);
                for (mid, ok) in answers.take(MAX_ACKS) {
                    if let Some(tx) = acks.remove(&mid) {
                        let _ = tx.send(ok);
                    }
                }
            }
            Notice::GroupArrive {
                tag,
                member,
                peer,
                relay,
            } => self.on_group_arrive(&tag, member, peer, relay),
            Notice::GroupLeft { tag, member } => self.on_group_left(&tag, member),
            Notice::Rtt { pair, rtt_us } => {
                let mut pair_id = [0u8; 12];
                if hex::decode_to_slice(&pair, &mut pair_id).is_err() {
                    return None;
                }
                if let Some(tx) = lock(&self.rtts).remove(&pair_id) {
                    let _ = tx.send(Duration::from_micros(rtt_us.min(10_000_000)));
                }
            }
        }
        None
    }

    /// One heartbeat: refresh our rooms, put back those lost (Redis restarted)
    /// and drop hosts whose tag someone else holds now, re-assert the relay key.
    async fn beat(self: &Arc<Self>) -> Result<(), String> {
        let snapshot: Vec<(ConnId, RoomTag)> = lock(&self.hosts)
            .iter()
            .filter(|(_, host)| host.opened)
            .map(|(id, host)| (*id, host.tag))
            .collect();
        let mut redis = self.redis.clone();
        if snapshot.is_empty() {
            let _: String = bounded(::redis::cmd("PING").query_async(&mut redis)).await?;
        }
        for batch in snapshot.chunks(HEARTBEAT_BATCH) {
            let mut call = self.refresh.prepare_invoke();
            call.arg(&self.instance)
                .arg(ROOM_LIVENESS.as_millis() as u64);
            for (id, tag) in batch {
                call.key(room_key(tag)).arg(*id);
            }
            let states: Vec<i64> = bounded(call.invoke_async(&mut redis)).await?;
            for ((id, _), state) in batch.iter().zip(states) {
                if state != 1 {
                    self.missed(*id).await?;
                }
            }
        }
        self.renew_plates(&mut redis).await?;
        self.group_beat().await?;
        if let Some(key) = &self.relay_key {
            let _: Value = bounded(
                ::redis::cmd("SET")
                    .arg(RELAY_KEY)
                    .arg(key)
                    .arg("NX")
                    .query_async(&mut redis),
            )
            .await?;
        }
        Ok(())
    }

    /// A heartbeat did not find host `id`'s room (Redis restarted empty, or a
    /// match for it is on its way): put it back. If a match was on its way, the
    /// host takes it and the room put back is stale; whoever claims that one gets
    /// no `ack` and claims again, so putting back at once is safe.
    async fn missed(self: &Arc<Self>, id: ConnId) -> Result<(), String> {
        let reopen = lock(&self.hosts).get(&id).map(|host| {
            (
                room_key(&host.tag),
                host.group,
                serde_json::to_string(&WirePeer::of(&host.details)),
            )
        });
        let Some((key, group, Ok(peer))) = reopen else {
            return Ok(());
        };
        let mut redis = self.redis.clone();
        let mut call = self.reopen.key(key);
        self.room_args(&mut call, group, id, &peer);
        let put_back: i64 = bounded(call.invoke_async(&mut redis)).await?;
        if put_back == 1 {
            tracing::info!("put a lost room back into Redis");
        } else {
            // Another host holds the tag now: ours cannot be found any more.
            // Dropping its handoff ends its wait with a retryable refusal.
            self.take_host(id);
        }
        Ok(())
    }

    async fn allocate(self: &Arc<Self>) -> Result<Nameplate, NoNameplate> {
        let lease = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let owner = format!("{}:{lease}", self.instance);
        let mut redis = self.redis.clone();
        let mut call = self.allocate.key(PLATES_HELD);
        call.key(PLATES_FREE)
            .key(PLATES_NEXT)
            .key(PLATES_OWNER)
            .arg(&owner)
            .arg(ROOM_LIVENESS.as_millis() as u64)
            .arg(self.plate_cap)
            .arg(NAMEPLATE_MAX);
        let number: u32 = match bounded(call.invoke_async(&mut redis)).await {
            Ok(0) => return Err(NoNameplate::Exhausted),
            Ok(n) => n,
            Err(why) => {
                let JoinOutcome::Unavailable(message) = self.unavailable(&why) else {
                    unreachable!("unavailable() is always Unavailable")
                };
                return Err(NoNameplate::Unavailable(message));
            }
        };
        lock(&self.plates).insert(number, owner);
        Ok(Nameplate::leased(
            number,
            Arc::new(PlateLease(self.clone())),
        ))
    }

    async fn renew_plates(&self, redis: &mut ConnectionManager) -> Result<(), String> {
        let held: Vec<(u32, String)> = lock(&self.plates)
            .iter()
            .map(|(n, owner)| (*n, owner.clone()))
            .collect();
        for batch in held.chunks(HEARTBEAT_BATCH) {
            let mut call = self.renew.key(PLATES_HELD);
            call.key(PLATES_FREE)
                .key(PLATES_OWNER)
                .arg(ROOM_LIVENESS.as_millis() as u64);
            for (n, owner) in batch {
                call.arg(*n).arg(owner);
            }
            let lost: i64 = bounded(call.invoke_async(redis)).await?;
            if lost > 0 {
                tracing::warn!(
                    lost,
                    "nameplates taken by another instance while Redis was away"
                );
            }
        }
        Ok(())
    }

    /// A room another instance announced (§21): ring our presence
    /// connections, unless it is our own announcement coming back.
    fn on_ring(&self, payload: &[u8]) {
        if payload.len() != 32 + self.instance.len() || &payload[32..] == self.instance.as_bytes() {
            return;
        }
        let mut tag = [0u8; 32];
        tag.copy_from_slice(&payload[..32]);
        let _ = self.rings.try_send(RoomTag(tag));
    }

    async fn leave(&self, tag: &RoomTag, id: ConnId) -> bool {
        if self.take_host(id).is_none() {
            return false;
        }
        let mut redis = self.redis.clone();
        let mut call = self.leave.key(room_key(tag));
        call.arg(&self.instance).arg(id);
        match bounded(call.invoke_async::<i64>(&mut redis)).await {
            Ok(removed) => removed == 1,
            // Gone from this instance, so a late `match` is refused; Redis drops
            // the key within ROOM_LIVENESS.
            Err(why) => {
                self.set_up(false, &why);
                true
            }
        }
    }
}

/// Reads our channel's messages, taking every one already waiting at once (up to
/// [`MAX_BATCH`]): they are handled in place (none waits on anything), and the
/// matches among them are answered with one `acks` per claiming instance, sent on
/// its own task so a slow publish never holds up the next match.
async fn dispatch(
    inner: Arc<Inner>,
    mut push: mpsc::UnboundedReceiver<PushInfo>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            info = push.recv() => match info {
                Some(info) => info,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match push.try_recv() {
                Ok(info) => batch.push(info),
                Err(_) => break,
            }
        }
        let mut answers: HashMap<String, (Vec<u64>, Vec<u64>)> = HashMap::new();
        for info in batch {
            match info.kind {
                PushKind::Message => {}
                PushKind::Disconnection => {
                    inner.set_up(false, "connection lost");
                    inner.wake.notify_one();
                    continue;
                }
                _ => continue,
            }
            let Some(Value::BulkString(payload)) = info.data.get(1) else {
                continue;
            };
            if matches!(info.data.first(), Some(Value::BulkString(c)) if c.as_slice() == RING_CHANNEL.as_bytes())
            {
                inner.on_ring(payload);
                continue;
            }
            if payload.len() > MAX_NOTICE {
                continue;
            }
            let Ok(notice) = serde_json::from_slice::<Notice>(payload) else {
                tracing::debug!("ignoring an unreadable message on our Redis channel");
                continue;
            };
            if let Some((from, mid, took)) = inner.on_notice(notice) {
                let (yes, no) = answers.entry(from).or_default();
                if took { yes } else { no }.push(mid);
            }
        }
        for (to, (took, refused)) in answers {
            let inner = inner.clone();
            tokio::spawn(async move {
                let _ = inner.publish(&to, &Notice::Acks { took, refused }).await;
            });
        }
    }
}

/// Refreshes our rooms every [`HEARTBEAT`] (sooner after a lost connection, and
/// every second while Redis is down) until `cancel`.
async fn heartbeat(inner: Arc<Inner>, cancel: CancellationToken) {
    loop {
        let pause = if inner.up.load(Ordering::Relaxed) {
            HEARTBEAT
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
            _ = inner.wake.notified() => {}
        }
        match inner.beat().await {
            Ok(()) => inner.set_up(true, ""),
            Err(why) => inner.set_up(false, &why),
        }
    }
}

/// Gives a shared nameplate back when its lease is dropped.
#[derive(Debug)]
struct PlateLease(Arc<Inner>);

impl Release for PlateLease {
    fn release(&self, number: u32, _tag: &RoomTag) {
        let Some(owner) = lock(&self.0.plates).remove(&number) else {
            return;
        };
        // Outside a runtime (shutdown) the lease simply runs out in Redis.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.0.clone();
        runtime.spawn(async move {
            let mut redis = inner.redis.clone();
            let mut call = inner.release.key(PLATES_HELD);
            call.key(PLATES_FREE)
                .key(PLATES_OWNER)
                .arg(number)
                .arg(owner);
            let _ = bounded(call.invoke_async::<i64>(&mut redis)).await;
        });
    }
}

impl NameplateTable for RedisRooms {
    fn allocate(&self) -> BoxFuture<'_, Result<Nameplate, NoNameplate>> {
        self.inner.allocate().boxed()
    }
}

impl RoomTable for RedisRooms {
    fn join(&self, tag: RoomTag, arrival: Arrival) -> BoxFuture<'_, JoinOutcome> {
        async move { self.inner.join(tag, arrival).await }.boxed()
    }

    fn announce_waiting(&self, tag: RoomTag) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut payload = tag.0.to_vec();
            payload.extend_from_slice(inner.instance.as_bytes());
            let mut redis = inner.redis.clone();
            let mut publish = ::redis::cmd("PUBLISH");
            publish.arg(RING_CHANNEL).arg(payload);
            if let Err(why) = bounded(publish.query_async::<i64>(&mut redis)).await {
                tracing::debug!(%why, "presence: cannot announce a waiting room");
            }
        });
    }

    fn remote_rings(&self) -> Option<mpsc::Receiver<RoomTag>> {
        lock(&self.inner.rings_out).take()
    }

    fn waits<'a>(&'a self, tags: &'a [RoomTag]) -> BoxFuture<'a, Vec<RoomTag>> {
        async move {
            let mut pipe = ::redis::pipe();
            for tag in tags {
                pipe.exists(room_key(tag));
            }
            let mut redis = self.inner.redis.clone();
            match bounded(pipe.query_async::<Vec<bool>>(&mut redis)).await {
                Ok(found) => tags
                    .iter()
                    .zip(found)
                    .filter(|(_, waits)| *waits)
                    .map(|(tag, _)| *tag)
                    .collect(),
                // Presence rings on the next room instead; nothing is lost.
                Err(why) => {
                    tracing::debug!(%why, "presence: cannot ask Redis for waiting rooms");
                    Vec::new()
                }
            }
        }
        .boxed()
    }

    fn leave<'a>(&'a self, tag: &'a RoomTag, id: ConnId) -> BoxFuture<'a, bool> {
        self.inner.leave(tag, id).boxed()
    }

    fn waiting(&self) -> usize {
        lock(&self.inner.hosts).len()
    }

    fn trouble(&self) -> Option<String> {
        (!self.inner.up.load(Ordering::Relaxed)).then(|| {
            format!(
                "the room store (Redis at {}) is unreachable",
                self.inner.place
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_never_show_a_password() {
        assert_eq!(
            place_of("redis://:hunter2@10.0.0.5:6379/0"),
            "10.0.0.5:6379"
        );
        assert_eq!(place_of("redis://127.0.0.1:6379"), "127.0.0.1:6379");
        assert_eq!(place_of("rediss://u:p@h:1/?protocol=resp3"), "h:1");
    }

    #[test]
    fn peers_survive_the_trip_and_bad_ones_do_not() {
        let details = PeerDetails {
            name: "alice".into(),
            public: vec![1, 2, 3],
            observed_addr: "192.0.2.1:4000".parse().unwrap(),
            listen_port: 4000,
            local_addrs: vec!["10.0.0.2:4000".parse().unwrap()],
            no_relay: true,
        };
        let text = serde_json::to_string(&WirePeer::of(&details)).unwrap();
        let back: WirePeer = serde_json::from_str(&text).unwrap();
        assert_eq!(back.into_details().unwrap(), details);
        let mut bad = WirePeer::of(&details);
        bad.name = "\u{1b}[2J".into();
        assert!(bad.into_details().is_none());
        let mut many = WirePeer::of(&details);
        many.local_addrs = vec![details.observed_addr; MAX_LOCAL_ADDRS + 1];
        assert!(many.into_details().is_none());
    }

    #[test]
    fn notices_have_the_documented_shape() {
        let acks = Notice::Acks {
            took: vec![7, 9],
            refused: vec![8],
        };
        let text = serde_json::to_string(&acks).unwrap();
        assert_eq!(text, r#"{"t":"acks","took":[7,9],"refused":[8]}"#);
        let rtt: Notice = serde_json::from_str(r#"{"t":"rtt","pair":"00","rtt_us":5}"#).unwrap();
        assert!(matches!(rtt, Notice::Rtt { rtt_us: 5, .. }));
        assert!(is_instance_id("0123456789abcdef"));
        assert!(!is_instance_id("0123456789abcdef:x"));
    }

    #[test]
    fn a_match_assembled_as_the_claim_script_does_reads_back() {
        let peer = WirePeer::of(&PeerDetails {
            name: "bob".into(),
            public: vec![0xab, 0x01],
            observed_addr: "127.0.0.1:9".parse().unwrap(),
            listen_port: 7,
            local_addrs: vec![],
            no_relay: false,
        });
        let peer = serde_json::to_string(&peer).unwrap();
        let head = MatchHead {
            t: "match",
            mid: 3,
            from: "0123456789abcdef",
            pair: "00".repeat(12),
            expires: 9,
            relay: None,
        }
        .open_json()
        .unwrap();
        // What CLAIM publishes: head .. ',"conn":' .. conn .. ',"peer":' .. peer .. '}'
        let text = format!("{head},\"conn\":42,\"peer\":{peer}}}");
        let Notice::Match {
            conn, peer, mid, ..
        } = serde_json::from_str(&text).unwrap()
        else {
            panic!("not a match: {text}")
        };
        assert_eq!((conn, mid), (42, 3));
        assert_eq!(peer.into_details().unwrap().public, vec![0xab, 0x01]);
        assert_eq!(fast_hex(&[0x00, 0xff, 0x5a]), "00ff5a");
    }
}
