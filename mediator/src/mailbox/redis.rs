//! The mailbox in Redis, shared by every mediator using it (docs/protocol.md
//! §22.3), under `p2pchat:v3:mbox:`. Each request is one Lua script, so each
//! rule holds atomically across instances; its answer goes out once Redis ran
//! it (durable as Redis's persistence makes it: deploy/README.md). Every call
//! has a deadline; while Redis is unreachable requests are refused with
//! `TooManyConnections`, which clients retry.
//!
//! Keys, for queue id `Q` in hex (ids and keys are raw bytes inside):
//! - `q:Q` hash: `add`, `read` (public keys), `items`, `bytes`, `touched`
//! - `q:Q:seq` zset item id → order; `q:Q:exp` zset item id → expiry;
//!   `q:Q:data` hash item id → sealed bytes; `q:Q:gone` zset removed id → expiry
//! - `due` zset `Q` → when the sweep must look at the queue next;
//!   `items`, `held` (the totals the store cap counts), `seq` (the order counter)

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Script, ScriptInvocation, Value};
use futures::future::{BoxFuture, FutureExt};
use tokio::time::timeout;
use wire::mailbox::{item_id, StoredItem, MAX_ITEMS_BYTES};

use super::{
    sweep_in_batches, Cap, Fetched, Held, HeldGauge, MailboxTable, Opened, Refusal, StoreCaps,
    Stored, ANSWER_ITEM_OVERHEAD, ITEM_COST, QUEUE_COST, REMEMBERED_COST,
};

/// Every key starts with this.
pub const PREFIX: &str = "p2pchat:v3:mbox:";
/// Every Redis call must answer within this.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// Connecting at startup must succeed within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Queues one sweep script call looks at.
const SWEEP_BATCH: u64 = 256;

/// Helpers every script starts with: purge a queue of what expired, file it
/// under its next due time, keep the totals.
fn prelude() -> String {
    format!(
        r"
local P = '{PREFIX}'
local ITEM_COST, GONE_COST, QUEUE_COST = {ITEM_COST}, {REMEMBERED_COST}, {QUEUE_COST}
local function totals(items, held)
  if items ~= 0 then redis.call('INCRBY', P .. 'items', items) end
  if held ~= 0 then redis.call('INCRBY', P .. 'held', held) end
end
local function purge(q, now)
  local dead = redis.call('ZRANGEBYSCORE', q .. ':exp', '-inf', now)
  local b = 0
  for _, id in ipairs(dead) do
    b = b + redis.call('HSTRLEN', q .. ':data', id)
    redis.call('HDEL', q .. ':data', id)
    redis.call('ZREM', q .. ':seq', id)
  end
  local n = #dead
  if n > 0 then
    redis.call('ZREMRANGEBYSCORE', q .. ':exp', '-inf', now)
    redis.call('HINCRBY', q, 'items', -n)
    redis.call('HINCRBY', q, 'bytes', -b)
  end
  local g = redis.call('ZREMRANGEBYSCORE', q .. ':gone', '-inf', now)
  totals(-n, -(b + n * ITEM_COST) - g * GONE_COST)
end
local function refile(q, h, touched, ttl)
  local due = nil
  local e = redis.call('ZRANGE', q .. ':exp', 0, 0, 'WITHSCORES')
  if e[2] then due = tonumber(e[2]) end
  local g = redis.call('ZRANGE', q .. ':gone', 0, 0, 'WITHSCORES')
  if g[2] and (not due or tonumber(g[2]) < due) then due = tonumber(g[2]) end
  if not e[2] and (not due or touched + ttl < due) then due = touched + ttl end
  redis.call('ZADD', P .. 'due', due, h)
end
local function touch(q, h, now, ttl)
  redis.call('HSET', q, 'touched', now)
  refile(q, h, now, ttl)
end
local function held_now()
  return {{tonumber(redis.call('GET', P .. 'items') or '0'), tonumber(redis.call('GET', P .. 'held') or '0')}}
end
"
    )
}

/// KEYS[1] queue; ARGV hex id, add key, read key, now, ttl, may create, max held.
const OPEN: &str = r"
local q, now, ttl = KEYS[1], tonumber(ARGV[4]), tonumber(ARGV[5])
local k = redis.call('HMGET', q, 'add', 'read')
if not k[1] then
  if ARGV[6] ~= '1' then return {'full', 'source_bytes'} end
  if held_now()[2] + QUEUE_COST > tonumber(ARGV[7]) then return {'full', 'store_bytes'} end
  redis.call('HSET', q, 'add', ARGV[2], 'read', ARGV[3], 'items', 0, 'bytes', 0)
  totals(0, QUEUE_COST)
  touch(q, ARGV[1], now, ttl)
  local t = held_now()
  return {'opened', 0, 1, t[1], t[2]}
end
if k[1] ~= ARGV[2] or (k[2] and k[2] ~= ARGV[3]) then return {'auth'} end
if not k[2] then redis.call('HSET', q, 'read', ARGV[3]) end
purge(q, now)
touch(q, ARGV[1], now, ttl)
local t = held_now()
return {'opened', tonumber(redis.call('HGET', q, 'items')), 0, t[1], t[2]}
";

/// KEYS[1] queue; ARGV hex id, add key, item id, item, now, ttl, queue items,
/// queue bytes, source ok, max held.
const ADD: &str = r"
local q, now, ttl = KEYS[1], tonumber(ARGV[5]), tonumber(ARGV[6])
local add = redis.call('HGET', q, 'add')
if add and add ~= ARGV[2] then return {'auth'} end
if add then
  purge(q, now)
  local held_until = redis.call('ZSCORE', q .. ':exp', ARGV[3])
  if held_until then
    touch(q, ARGV[1], now, ttl)
    local t = held_now()
    return {'stored', tonumber(held_until), 0, t[1], t[2]}
  end
  if redis.call('ZSCORE', q .. ':gone', ARGV[3]) then return {'replay'} end
end
local len = string.len(ARGV[4])
if tonumber(redis.call('HGET', q, 'items') or '0') + 1 > tonumber(ARGV[7]) then
  return {'full', 'queue_items'}
end
if tonumber(redis.call('HGET', q, 'bytes') or '0') + len > tonumber(ARGV[8]) then
  return {'full', 'queue_bytes'}
end
if ARGV[9] ~= '1' then return {'full', 'source_bytes'} end
local cost = len + ITEM_COST
if not add then cost = cost + QUEUE_COST end
if held_now()[2] + cost > tonumber(ARGV[10]) then return {'full', 'store_bytes'} end
if not add then redis.call('HSET', q, 'add', ARGV[2], 'items', 0, 'bytes', 0) end
local expires = now + ttl
redis.call('ZADD', q .. ':seq', redis.call('INCR', P .. 'seq'), ARGV[3])
redis.call('ZADD', q .. ':exp', expires, ARGV[3])
redis.call('HSET', q .. ':data', ARGV[3], ARGV[4])
redis.call('HINCRBY', q, 'items', 1)
redis.call('HINCRBY', q, 'bytes', len)
totals(1, cost)
touch(q, ARGV[1], now, ttl)
local t = held_now()
return {'stored', expires, 1, t[1], t[2]}
";

/// KEYS[1] queue; ARGV hex id, read key, now, ttl, budget, overhead. Replies
/// 'items', more, the totals, then id, sealed, expiry per item. (Every
/// script's answer carries the store's totals, items and held bytes, for the
/// metrics.)
const FETCH: &str = r"
local q, now, ttl = KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local r = redis.call('HGET', q, 'read')
if not r then return {'noread'} end
if r ~= ARGV[2] then return {'auth'} end
purge(q, now)
touch(q, ARGV[1], now, ttl)
local t = held_now()
local out = {'items', 0, t[1], t[2]}
local used, start = 0, 0
local budget, over = tonumber(ARGV[5]), tonumber(ARGV[6])
while true do
  local ids = redis.call('ZRANGE', q .. ':seq', start, start + 63)
  if #ids == 0 then return out end
  for _, id in ipairs(ids) do
    local sealed = redis.call('HGET', q .. ':data', id)
    if sealed then
      local cost = string.len(sealed) + over
      if #out > 4 and used + cost > budget then
        out[2] = 1
        return out
      end
      used = used + cost
      out[#out + 1] = id
      out[#out + 1] = sealed
      out[#out + 1] = tonumber(redis.call('ZSCORE', q .. ':exp', id))
    end
  end
  start = start + 64
end
";

/// KEYS[1] queue; ARGV hex id, read key, now, ttl, then the ids.
const REMOVE: &str = r"
local q, now, ttl = KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local r = redis.call('HGET', q, 'read')
if not r then return {'noread'} end
if r ~= ARGV[2] then return {'auth'} end
purge(q, now)
local n, b = 0, 0
for i = 5, #ARGV do
  local id = ARGV[i]
  local e = redis.call('ZSCORE', q .. ':exp', id)
  if e then
    b = b + redis.call('HSTRLEN', q .. ':data', id)
    redis.call('HDEL', q .. ':data', id)
    redis.call('ZREM', q .. ':seq', id)
    redis.call('ZREM', q .. ':exp', id)
    redis.call('ZADD', q .. ':gone', e, id)
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', q, 'items', -n)
  redis.call('HINCRBY', q, 'bytes', -b)
  totals(-n, -(b + n * ITEM_COST) + n * GONE_COST)
end
touch(q, ARGV[1], now, ttl)
local t = held_now()
return {'removed', n, t[1], t[2]}
";

/// ARGV now, ttl, batch. Looks at the queues due; replies how many, then the
/// totals.
const SWEEP: &str = r"
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local hs = redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, h in ipairs(hs) do
  local q = P .. 'q:' .. h
  local touched = redis.call('HGET', q, 'touched')
  if not touched then
    redis.call('ZREM', P .. 'due', h)
  else
    purge(q, now)
    touched = tonumber(touched)
    if tonumber(redis.call('HGET', q, 'items') or '0') == 0 and touched + ttl <= now then
      totals(0, -redis.call('ZCARD', q .. ':gone') * GONE_COST - QUEUE_COST)
      redis.call('DEL', q, q .. ':seq', q .. ':exp', q .. ':data', q .. ':gone')
      redis.call('ZREM', P .. 'due', h)
    else
      refile(q, h, touched, ttl)
    end
  end
end
local t = held_now()
return {#hs, t[1], t[2]}
";

/// Why the shared mailbox could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("--redis `{0}` is not a Redis URL: {1}")]
    Url(String, String),
    #[error("cannot reach Redis at {0} for the mailbox: {1}; start Redis or fix --redis")]
    Unreachable(String, String),
}

/// The Redis mailbox store. Cheap to clone.
#[derive(Clone)]
pub struct RedisMailbox {
    inner: Arc<Inner>,
}

struct Inner {
    redis: ConnectionManager,
    /// Where Redis is, for messages (no password).
    place: String,
    caps: StoreCaps,
    open: Script,
    add: Script,
    fetch: Script,
    remove: Script,
    sweep: Script,
    held: HeldGauge,
}

impl std::fmt::Debug for RedisMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisMailbox")
            .field("place", &self.inner.place)
            .finish_non_exhaustive()
    }
}

fn queue_key(queue: &[u8; 32]) -> (String, String) {
    let hex = hex::encode(queue);
    (format!("{PREFIX}q:{hex}"), hex)
}

/// A reply's byte string, if it is one.
fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => bytes(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok()),
    }
}

/// A script's refusal (`auth`, `noread`, `replay`, `full CAP`), if `reply`
/// is one.
fn refused(reply: &[Value]) -> Option<Refusal> {
    let word = reply.first().and_then(bytes)?;
    Some(match word {
        b"auth" => Refusal::OtherKeys,
        b"noread" => Refusal::NoReadKey,
        b"replay" => Refusal::Replay,
        b"full" => {
            let label = reply.get(1).and_then(bytes).unwrap_or_default();
            let cap = std::str::from_utf8(label)
                .ok()
                .and_then(Cap::from_label)
                .unwrap_or(Cap::StoreBytes);
            Refusal::Full(cap)
        }
        _ => return None,
    })
}

impl RedisMailbox {
    /// Connects to Redis at `url` (`place`: where, for messages).
    pub async fn connect(
        url: &str,
        place: String,
        caps: StoreCaps,
    ) -> Result<RedisMailbox, ConnectError> {
        let client =
            Client::open(url).map_err(|e| ConnectError::Url(place.clone(), e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(REDIS_TIMEOUT)
            .set_response_timeout(REDIS_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(500);
        let redis = match timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(ConnectError::Unreachable(place, e.to_string())),
            Err(_) => return Err(ConnectError::Unreachable(place, "no answer".into())),
        };
        let prelude = prelude();
        let script = |body: &str| Script::new(&format!("{prelude}{body}"));
        let store = RedisMailbox {
            inner: Arc::new(Inner {
                redis,
                place,
                caps,
                open: script(OPEN),
                add: script(ADD),
                fetch: script(FETCH),
                remove: script(REMOVE),
                sweep: script(SWEEP),
                held: HeldGauge::default(),
            }),
        };
        // The totals, for the metrics before the first sweep.
        let _ = store.inner.sweep_batch(0).await;
        Ok(store)
    }
}

impl Inner {
    fn unreachable(&self, why: &str) -> Refusal {
        if super::warn_now() {
            tracing::warn!(redis = %self.place, error = why, "mailbox: Redis call failed");
        }
        Refusal::Unavailable(format!(
            "the mediator cannot reach its mailbox store (Redis at {}); try again in a moment",
            self.place
        ))
    }

    async fn call(&self, call: &ScriptInvocation<'_>) -> Result<Vec<Value>, Refusal> {
        let mut redis = self.redis.clone();
        match timeout(REDIS_TIMEOUT, call.invoke_async::<Value>(&mut redis)).await {
            Ok(Ok(Value::Array(reply))) => Ok(reply),
            Ok(Ok(other)) => Err(self.unreachable(&format!("unexpected reply {other:?}"))),
            Ok(Err(e)) => Err(self.unreachable(&e.to_string())),
            Err(_) => {
                Err(self.unreachable(&format!("no answer within {}ms", REDIS_TIMEOUT.as_millis())))
            }
        }
    }

    fn odd(&self, reply: &[Value]) -> Refusal {
        self.unreachable(&format!("unexpected script reply {reply:?}"))
    }

    /// One sweep call: returns how many queues it looked at.
    async fn sweep_batch(&self, now: u64) -> Result<u64, Refusal> {
        let mut call = self.sweep.prepare_invoke();
        call.arg(now).arg(self.caps.ttl_secs).arg(SWEEP_BATCH);
        let reply = self.call(&call).await?;
        match reply.as_slice() {
            [n, items, held] => {
                let Some(n) = int(n) else {
                    return Err(self.odd(&reply));
                };
                self.seen(items, held);
                Ok(n.max(0) as u64)
            }
            _ => Err(self.odd(&reply)),
        }
    }

    /// Keeps the totals a script answered with, for the metrics.
    fn seen(&self, items: &Value, held: &Value) {
        if let (Some(items), Some(held)) = (int(items), int(held)) {
            self.held.set(Held {
                items: items.max(0) as u64,
                bytes: held.max(0) as u64,
            });
        }
    }
}

impl MailboxTable for RedisMailbox {
    fn open(
        &self,
        queue: [u8; 32],
        add_key: [u8; 32],
        read_key: [u8; 32],
        now: u64,
        may_create: bool,
    ) -> BoxFuture<'_, Result<Opened, Refusal>> {
        async move {
            let inner = &self.inner;
            let (key, hex) = queue_key(&queue);
            let mut call = inner.open.key(key);
            call.arg(hex)
                .arg(&add_key[..])
                .arg(&read_key[..])
                .arg(now)
                .arg(inner.caps.ttl_secs)
                .arg(if may_create { "1" } else { "0" })
                .arg(inner.caps.max_bytes);
            let reply = inner.call(&call).await?;
            if let Some(refusal) = refused(&reply) {
                return Err(refusal);
            }
            match reply.as_slice() {
                [word, items, created, total, held] if bytes(word) == Some(b"opened") => {
                    inner.seen(total, held);
                    let created = int(created) == Some(1);
                    Ok(Opened {
                        items: int(items).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
                        created,
                    })
                }
                _ => Err(inner.odd(&reply)),
            }
        }
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
        async move {
            let inner = &self.inner;
            let caps = inner.caps;
            let id = item_id(&item);
            let (key, hex) = queue_key(&queue);
            let mut call = inner.add.key(key);
            call.arg(hex)
                .arg(&add_key[..])
                .arg(&id[..])
                .arg(&item[..])
                .arg(now)
                .arg(caps.ttl_secs)
                .arg(caps.queue_items)
                .arg(caps.queue_bytes)
                .arg(if source_ok { "1" } else { "0" })
                .arg(caps.max_bytes);
            let reply = inner.call(&call).await?;
            if let Some(refusal) = refused(&reply) {
                return Err(refusal);
            }
            match reply.as_slice() {
                [word, expires, fresh, total, held] if bytes(word) == Some(b"stored") => {
                    inner.seen(total, held);
                    Ok(Stored {
                        id,
                        expires_unix: int(expires).unwrap_or(0).max(0) as u64,
                        fresh: int(fresh) == Some(1),
                    })
                }
                _ => Err(inner.odd(&reply)),
            }
        }
        .boxed()
    }

    fn read_key(&self, queue: [u8; 32]) -> BoxFuture<'_, Result<Option<[u8; 32]>, Refusal>> {
        async move {
            let inner = &self.inner;
            let mut redis = inner.redis.clone();
            let (key, _) = queue_key(&queue);
            let read = timeout(
                REDIS_TIMEOUT,
                ::redis::cmd("HGET")
                    .arg(key)
                    .arg("read")
                    .query_async::<Option<Vec<u8>>>(&mut redis),
            )
            .await;
            match read {
                Ok(Ok(key)) => Ok(key.and_then(|k| <[u8; 32]>::try_from(k).ok())),
                Ok(Err(e)) => Err(inner.unreachable(&e.to_string())),
                Err(_) => Err(inner.unreachable("no answer")),
            }
        }
        .boxed()
    }

    fn fetch(
        &self,
        queue: [u8; 32],
        read_key: [u8; 32],
        now: u64,
    ) -> BoxFuture<'_, Result<Fetched, Refusal>> {
        async move {
            let inner = &self.inner;
            let (key, hex) = queue_key(&queue);
            let mut call = inner.fetch.key(key);
            call.arg(hex)
                .arg(&read_key[..])
                .arg(now)
                .arg(inner.caps.ttl_secs)
                .arg(MAX_ITEMS_BYTES)
                .arg(ANSWER_ITEM_OVERHEAD);
            let reply = inner.call(&call).await?;
            if let Some(refusal) = refused(&reply) {
                return Err(refusal);
            }
            let [word, more, total, held, rest @ ..] = reply.as_slice() else {
                return Err(inner.odd(&reply));
            };
            if bytes(word) != Some(b"items") {
                return Err(inner.odd(&reply));
            }
            inner.seen(total, held);
            let mut items = Vec::new();
            for triple in rest.chunks(3) {
                let [id, sealed, expires] = triple else {
                    return Err(inner.odd(&reply));
                };
                let (Some(id), Some(sealed), Some(expires)) = (
                    bytes(id).and_then(|b| <[u8; 16]>::try_from(b).ok()),
                    bytes(sealed),
                    int(expires),
                ) else {
                    return Err(inner.odd(&reply));
                };
                items.push(StoredItem {
                    id,
                    sealed: sealed.to_vec(),
                    expires_unix: expires.max(0) as u64,
                });
            }
            Ok(Fetched {
                items,
                more: int(more) == Some(1),
            })
        }
        .boxed()
    }

    fn remove(
        &self,
        queue: [u8; 32],
        read_key: [u8; 32],
        ids: Vec<[u8; 16]>,
        now: u64,
    ) -> BoxFuture<'_, Result<u32, Refusal>> {
        async move {
            let inner = &self.inner;
            let (key, hex) = queue_key(&queue);
            let mut call = inner.remove.key(key);
            call.arg(hex)
                .arg(&read_key[..])
                .arg(now)
                .arg(inner.caps.ttl_secs);
            for id in &ids {
                call.arg(&id[..]);
            }
            let reply = inner.call(&call).await?;
            if let Some(refusal) = refused(&reply) {
                return Err(refusal);
            }
            match reply.as_slice() {
                [word, n, total, held] if bytes(word) == Some(b"removed") => {
                    inner.seen(total, held);
                    Ok(int(n).and_then(|n| u32::try_from(n).ok()).unwrap_or(0))
                }
                _ => Err(inner.odd(&reply)),
            }
        }
        .boxed()
    }

    fn sweep(&self, now: u64) -> BoxFuture<'_, Result<u64, String>> {
        // A full batch of queues looked at: more may be due.
        sweep_in_batches(move || async move {
            let n = self.inner.sweep_batch(now).await?;
            Ok((n, n >= SWEEP_BATCH))
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

    #[test]
    fn refusals_are_read_from_script_replies() {
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        assert_eq!(refused(&[s("auth")]), Some(Refusal::OtherKeys));
        assert_eq!(refused(&[s("noread")]), Some(Refusal::NoReadKey));
        assert_eq!(refused(&[s("replay")]), Some(Refusal::Replay));
        for cap in Cap::ALL {
            assert_eq!(
                refused(&[s("full"), s(cap.as_str())]),
                Some(Refusal::Full(cap))
            );
        }
        assert_eq!(refused(&[s("stored"), Value::Int(5), Value::Int(1)]), None);
    }
}
