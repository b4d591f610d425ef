//! The mailbox's rules (docs/protocol.md §22.3) with the store in a real
//! `redis-server` shared by two mediators: an item added through one is
//! fetched through the other, even after the first is killed; keys, caps,
//! replays and times are checked the same; every Redis key and value is
//! searched for what must not be there; the TTL and the sweep.
//! Needs `redis-server` on PATH (.ci/run installs it); without it every test fails.

mod common;

use common::mailbox::{add, contains, sealed_message, sealed_of_len, Recipient, TestClock};
use common::redis_server::RedisServer;
use common::{config, start, start_with_metrics, Binary, Client, Server};
use mediator::mailbox::{MailboxTable, RedisMailbox, StoreCaps};
use mediator::Config;
use wire::mailbox as mb;
use wire::{ErrorCode, MediatorMsg};

const CONVERSATION: [u8; 32] = [7; 32];

fn alice() -> Recipient {
    Recipient::new(CONVERSATION, [1; 32])
}

fn bob() -> Recipient {
    Recipient::new(CONVERSATION, [2; 32])
}

fn shared(redis: &RedisServer) -> Config {
    Config {
        redis: Some(redis.url()),
        // No relay, so no --public-addr is needed for shared rooms.
        relay: false,
        ..config()
    }
}

/// Two mediators on one Redis.
async fn two(redis: &RedisServer) -> (Server, Server) {
    (start(shared(redis)).await, start(shared(redis)).await)
}

/// Every key in Redis with every value it holds (names and bytes).
fn everything(redis: &RedisServer) -> Vec<(String, Vec<u8>)> {
    let mut con = redis.connection();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    keys.into_iter()
        .map(|key| {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut con).unwrap();
            let parts: Vec<Vec<u8>> = match kind.as_str() {
                "string" => vec![redis::cmd("GET").arg(&key).query(&mut con).unwrap()],
                "hash" => redis::cmd("HGETALL").arg(&key).query(&mut con).unwrap(),
                "zset" => redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(&mut con)
                    .unwrap(),
                "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut con).unwrap(),
                "list" => redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query(&mut con)
                    .unwrap(),
                other => panic!("a {other} key in Redis: {}", String::from_utf8_lossy(&key)),
            };
            let mut bytes = key.clone();
            for part in parts {
                bytes.extend_from_slice(&part);
            }
            (String::from_utf8_lossy(&key).into_owned(), bytes)
        })
        .collect()
}

/// The mailbox's keys in Redis now.
fn mailbox_keys(redis: &RedisServer) -> Vec<String> {
    let mut con = redis.connection();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("p2pchat:v3:mbox:*")
        .query(&mut con)
        .unwrap();
    keys.sort();
    keys
}

fn held(redis: &RedisServer) -> (i64, i64) {
    let mut con = redis.connection();
    let (items, held): (Option<i64>, Option<i64>) = redis::cmd("MGET")
        .arg("p2pchat:v3:mbox:items")
        .arg("p2pchat:v3:mbox:held")
        .query(&mut con)
        .unwrap();
    (items.unwrap_or(0), held.unwrap_or(0))
}

/// The acceptance of issue 24 with Redis: three items added through one
/// mediator, which is then killed, are fetched in order through another.
#[tokio::test]
async fn items_added_through_one_instance_are_fetched_through_another_after_a_sigkill() {
    let redis = RedisServer::start();
    let flags = format!("--redis {} --relay off", redis.url());
    let mut first = Binary::spawn(&flags);
    let second = Binary::spawn(&flags);
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let mut a = Client::connect(second.addr).await;
    assert_eq!(a.open(&alice, clock.now()).await, 0);
    let mut b = Client::connect(first.addr).await;
    let mut acknowledged = Vec::new();
    for seq in 1..=3 {
        let item = sealed_message(&alice.queue, CONVERSATION, &bob.identity, seq, "offline");
        let (id, expires) = b.add(&alice.queue, clock.now(), item.clone()).await;
        // A retry through the other instance is the same item.
        let mut retry = Client::connect(second.addr).await;
        assert_eq!(
            retry.add(&alice.queue, clock.now(), item).await,
            (id, expires)
        );
        acknowledged.push(id);
    }
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let (items, more) = a.fetch(&alice, clock.now()).await;
    assert!(!more);
    assert_eq!(items.iter().map(|i| i.id).collect::<Vec<_>>(), acknowledged);
    assert_eq!(a.remove(&alice, clock.now(), acknowledged).await, 3);
    assert_eq!(a.fetch(&alice, clock.now()).await, (vec![], false));
}

#[tokio::test]
async fn keys_signatures_times_and_replays_are_checked_across_instances() {
    let redis = RedisServer::start();
    let (one, other) = two(&redis).await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    // Added before the recipient opened: the queue takes her read key later.
    let item = sealed_message(&alice.queue, CONVERSATION, &bob.identity, 1, "hi");
    let mut b = Client::connect(one.addr).await;
    let (id, _) = b.add(&alice.queue, clock.now(), item.clone()).await;
    let mut t = Client::connect(other.addr).await;
    let msg = t
        .refused(&alice.fetch(clock.now()), ErrorCode::MailboxAuth)
        .await;
    assert!(msg.contains("never opened"), "{msg}");
    let mut a = Client::connect(other.addr).await;
    assert_eq!(a.open(&alice, clock.now()).await, 1);
    // Without alice's read key: no fetch, no removal, through either instance.
    let thief = mb::read_key(&bob.identity, &alice.id());
    for server in [&one, &other] {
        let mut t = Client::connect(server.addr).await;
        t.refused(
            &alice.fetch_signed_by(&thief, clock.now()),
            ErrorCode::MailboxAuth,
        )
        .await;
        let mut t = Client::connect(server.addr).await;
        t.refused(
            &alice.remove_signed_by(&thief, clock.now(), vec![id]),
            ErrorCode::MailboxAuth,
        )
        .await;
        // Nor can bob take the queue over with a key of his own.
        let squat = Recipient {
            identity: bob.identity.clone(),
            queue: alice.queue.clone(),
            read: thief.clone(),
        };
        let mut t = Client::connect(server.addr).await;
        t.refused(&squat.open(clock.now()), ErrorCode::MailboxAuth)
            .await;
    }
    // A stale time.
    let mut t = Client::connect(one.addr).await;
    t.refused(&alice.fetch(clock.now() - 400), ErrorCode::MailboxAuth)
        .await;
    // Nothing changed; after the removal a replay is refused on both.
    assert_eq!(a.fetch(&alice, clock.now()).await.0.len(), 1);
    assert_eq!(a.remove(&alice, clock.now(), vec![id]).await, 1);
    for server in [&one, &other] {
        let mut r = Client::connect(server.addr).await;
        r.refused(
            &add(&alice.queue, clock.now(), item.clone()),
            ErrorCode::MailboxReplay,
        )
        .await;
    }
    one.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_flood_into_one_queue_stops_at_the_shared_caps() {
    let redis = RedisServer::start();
    let caps = |redis: &RedisServer| Config {
        mailbox_queue_items: 10,
        mailbox_max_bytes: 16 * 1024,
        ..shared(redis)
    };
    let one = start_with_metrics(caps(&redis)).await;
    let other = start_with_metrics(caps(&redis)).await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    // Half the adds through each instance: the queue's cap is one for both.
    let mut stored = 0;
    let message = loop {
        let server = if stored % 2 == 0 { &one } else { &other };
        let mut b = Client::connect(server.addr).await;
        match b
            .ask(&add(
                &alice.queue,
                clock.now(),
                sealed_of_len(&alice.queue, 64),
            ))
            .await
        {
            MediatorMsg::MailboxStored { .. } => stored += 1,
            MediatorMsg::Error { code, message } => {
                assert_eq!(code, ErrorCode::MailboxFull, "{message}");
                break message;
            }
            other => panic!("{other:?}"),
        }
        assert!(stored <= 10);
    };
    assert_eq!(stored, 10);
    assert!(message.contains("10 items"), "{message}");
    // The whole store: 16 KiB.
    let message = loop {
        let mut b = Client::connect(other.addr).await;
        match b
            .ask(&add(
                &bob.queue,
                clock.now(),
                sealed_of_len(&bob.queue, 2048 + 48),
            ))
            .await
        {
            MediatorMsg::MailboxStored { .. } => {}
            MediatorMsg::Error { code, message } => {
                assert_eq!(code, ErrorCode::MailboxFull, "{message}");
                break message;
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(message.contains("store holds its maximum"), "{message}");
    let (items, bytes) = held(&redis);
    assert!(bytes <= 16 * 1024, "the store holds {bytes} bytes");
    // The counts are what the keys hold.
    let mut con = redis.connection();
    let mut sealed = 0i64;
    for r in [&alice, &bob] {
        let key = format!("p2pchat:v3:mbox:q:{}", hex::encode(r.id()));
        let queue_bytes: i64 = redis::cmd("HGET")
            .arg(&key)
            .arg("bytes")
            .query(&mut con)
            .unwrap();
        sealed += queue_bytes;
    }
    assert_eq!(bytes, sealed + items * 64 + 2 * 128);
    // The instance that made the last change shows it at once (the other
    // one at its next request or sweep).
    other
        .wait_for_metric(&format!("mediator_mailbox_items {items}"))
        .await;
    one.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_redis_key_or_value_shows_a_text_name_identity_key_or_code() {
    let redis = RedisServer::start();
    let (one, other) = two(&redis).await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let code = "7-velvet-harbor";
    let text = format!(
        "the eagle lands at dawn, says Zebediah in room {code} ({}); my key is {}",
        hex::encode(CONVERSATION),
        hex::encode(bob.identity.public().0)
    );
    let mut a = Client::connect(one.addr).await;
    a.open(&alice, clock.now()).await;
    let mut b = Client::connect(other.addr).await;
    let mut stored = Vec::new();
    for seq in 1..=5 {
        let item = sealed_message(&alice.queue, CONVERSATION, &bob.identity, seq, &text);
        b.add(&alice.queue, clock.now(), item.clone()).await;
        stored.push(item);
    }
    a.remove(&alice, clock.now(), vec![mb::item_id(&stored[0])])
        .await;
    // A room waiting, too: the whole Redis is searched.
    let mut host = Client::connect(one.addr).await;
    host.send(&common::hello(5, "Zebediah")).await;
    host.expect_waiting().await;
    let all = everything(&redis);
    let joined: Vec<u8> = all.iter().flat_map(|(_, v)| v.clone()).collect();
    // Queue ids name the keys, in hex.
    assert!(
        contains(&joined, hex::encode(alice.id()).as_bytes()),
        "no queue id in Redis"
    );
    assert!(contains(&joined, &stored[4]), "no item in Redis");
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("text".into(), b"the eagle lands at dawn".to_vec()),
        ("code".into(), code.as_bytes().to_vec()),
        ("conversation".into(), CONVERSATION.to_vec()),
        (
            "conversation hex".into(),
            hex::encode(CONVERSATION).into_bytes(),
        ),
    ];
    for (who, key) in [("author", &bob.identity), ("recipient", &alice.identity)] {
        let key = key.public().0;
        secrets.push((format!("{who} key"), key.to_vec()));
        secrets.push((format!("{who} key hex"), hex::encode(key).into_bytes()));
    }
    for (key, bytes) in &all {
        for (what, secret) in &secrets {
            assert!(!contains(bytes, secret), "Redis key {key} holds the {what}");
        }
        // The waiting room's host name is the rooms' business (§18), not
        // the mailbox's: only the mailbox's keys must never hold a name.
        if key.starts_with("p2pchat:v3:mbox:") {
            assert!(
                !contains(bytes, b"Zebediah"),
                "Redis key {key} holds the name"
            );
        }
    }
    drop(host);
    one.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}

/// The TTL, through the store itself at a later `now`: expired items are not
/// handed out, and the sweep leaves no key but the totals, at zero.
#[tokio::test]
async fn items_past_their_ttl_are_not_handed_out_and_the_sweep_leaves_nothing() {
    let redis = RedisServer::start();
    let caps = StoreCaps::of(&Config::default());
    let store = RedisMailbox::connect(&redis.url(), "test".into(), caps)
        .await
        .unwrap();
    let (alice, bob) = (alice(), bob());
    let now = 1_800_000_000;
    let (add_key, read) = (alice.queue.add_key().public().0, alice.read.public().0);
    store
        .open(alice.id(), add_key, read, now, true)
        .await
        .unwrap();
    let first = sealed_of_len(&alice.queue, 64);
    let stored = store
        .add(alice.id(), add_key, first.clone(), now, true)
        .await
        .unwrap();
    assert_eq!(stored.expires_unix, now + caps.ttl_secs);
    store
        .add(
            alice.id(),
            add_key,
            sealed_of_len(&alice.queue, 80),
            now + 10,
            true,
        )
        .await
        .unwrap();
    store
        .add(
            bob.id(),
            bob.queue.add_key().public().0,
            sealed_of_len(&bob.queue, 96),
            now,
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .remove(alice.id(), read, vec![stored.id], now + 20)
            .await,
        Ok(1)
    );
    // The first has expired, the second not yet.
    let later = now + caps.ttl_secs + 5;
    let fetched = store.fetch(alice.id(), read, later).await.unwrap();
    assert_eq!(fetched.items.len(), 1);
    // Its id is forgotten with its expiry: it may be added again.
    assert!(
        store
            .add(alice.id(), add_key, first, later, true)
            .await
            .unwrap()
            .fresh
    );
    assert!(store
        .fetch(alice.id(), read, later + caps.ttl_secs + 1)
        .await
        .unwrap()
        .items
        .is_empty());
    // Long after the last request: every queue is idle.
    store.sweep(later + 3 * caps.ttl_secs).await.unwrap();
    assert_eq!(
        mailbox_keys(&redis),
        [
            "p2pchat:v3:mbox:held",
            "p2pchat:v3:mbox:items",
            "p2pchat:v3:mbox:seq"
        ]
    );
    assert_eq!(held(&redis), (0, 0));
    assert_eq!(store.held(), Default::default());
}

/// Redis gone: mailbox requests are turned away with `TooManyConnections`
/// (clients retry) and the mediator stays up; Redis back: they work again.
#[tokio::test]
async fn while_redis_is_away_requests_are_refused_and_then_served_again() {
    let mut redis = RedisServer::start();
    let server = start_with_metrics(shared(&redis)).await;
    let clock = TestClock::new();
    let alice = alice();
    let mut a = Client::connect(server.addr).await;
    a.open(&alice, clock.now()).await;
    redis.stop();
    let mut a = Client::connect(server.addr).await;
    let msg = a
        .refused(&alice.open(clock.now()), ErrorCode::TooManyConnections)
        .await;
    assert!(msg.contains("mailbox store"), "{msg}");
    server
        .wait_for_metric(r#"mediator_rejected_total{limit="mailbox_store"} 1"#)
        .await;
    // Back (empty: this test's Redis keeps nothing): the queue is made anew.
    redis.restart();
    let mut served = None;
    for _ in 0..50 {
        let mut a = Client::connect(server.addr).await;
        match a.ask(&alice.open(clock.now())).await {
            MediatorMsg::MailboxOpened { items } => {
                served = Some(items);
                break;
            }
            MediatorMsg::Error {
                code: ErrorCode::TooManyConnections,
                ..
            } => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(served, Some(0), "the mailbox never came back with Redis");
    server.shutdown().await.unwrap();
}
