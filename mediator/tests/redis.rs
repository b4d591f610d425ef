//! Several real `mediator` binaries sharing rooms through a real `redis-server`
//! on loopback (docs/protocol.md §18): pairing and punch timing across instances,
//! the relay on the instance that completed the match, an instance killed with a
//! host waiting, Redis going away and coming back under running mediators, and a
//! group room spanning instances (§19.7).
//! Needs `redis-server` on PATH (.ci/run installs it); without it every test fails.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::redis_server::{free_port, RedisServer};
use common::{group_hello, hello, Binary, Client};
use wire::{ClientMsg, ErrorCode, MediatorMsg, RelayOffer, Role};

/// A mediator instance using `redis`, with its metrics/health port.
struct Instance {
    binary: Binary,
    health: SocketAddr,
}

impl Instance {
    fn start(redis: &RedisServer) -> Instance {
        Instance::start_with(redis, "")
    }

    fn start_with(redis: &RedisServer, flags: &str) -> Instance {
        let health = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let binary = Binary::spawn(&format!(
            "--redis {} --metrics {health} --per-ip-connections 1000 --per-ip-hellos-per-min 100000 {flags}",
            redis.url()
        ));
        Instance { binary, health }
    }

    fn addr(&self) -> SocketAddr {
        self.binary.addr
    }

    /// `GET path` on the metrics port: (status code, body).
    fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect_timeout(&self.health, Duration::from_secs(2))
            .expect("metrics port answers");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }
}

fn room_key(n: u64) -> String {
    format!("p2pchat:v2:room:{}", hex::encode(common::room(n)))
}

/// Whether room `n`'s key is in Redis now.
fn room_exists(con: &mut redis::Connection, n: u64) -> bool {
    let exists: i64 = redis::cmd("EXISTS").arg(room_key(n)).query(con).unwrap();
    exists == 1
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What is published on the channels matching `patterns` (channel, payload), read
/// by a thread of its own; the subscription is live when this returns.
fn subscribe(redis: &RedisServer, patterns: &[&str]) -> mpsc::Receiver<(String, String)> {
    let mut con = redis.connection();
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut pubsub = con.as_pubsub();
        for pattern in &patterns {
            pubsub.psubscribe(pattern).expect("psubscribe");
        }
        let _ = ready_tx.send(());
        // Ends when the test drops the receiver or the redis-server goes away.
        while let Ok(msg) = pubsub.get_message() {
            let payload: String = msg.get_payload().unwrap_or_default();
            if tx
                .send((msg.get_channel_name().to_owned(), payload))
                .is_err()
            {
                break;
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the subscription is live");
    rx
}

/// The next message from `sub` that `pick` accepts, within `limit`.
fn next_published<T>(
    sub: &mpsc::Receiver<(String, String)>,
    limit: Duration,
    what: &str,
    mut pick: impl FnMut(&str, &str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.recv_timeout(left) {
            Ok((channel, payload)) => {
                if let Some(found) = pick(&channel, &payload) {
                    return found;
                }
            }
            Err(_) => panic!("{what}: nothing published within {limit:?}"),
        }
    }
}

fn relay_of(msg: &MediatorMsg) -> RelayOffer {
    match msg {
        MediatorMsg::Matched { relay, .. } => relay.clone(),
        other => panic!("not Matched: {other:?}"),
    }
}

fn peer_name(msg: &MediatorMsg) -> String {
    match msg {
        MediatorMsg::Matched { peer_name, .. } => peer_name.clone(),
        other => panic!("not Matched: {other:?}"),
    }
}

/// A host waiting on `host_at`, then a joiner on `joiner_at`: both `Matched`.
async fn meet(
    host_at: SocketAddr,
    joiner_at: SocketAddr,
    n: u64,
) -> (Client, MediatorMsg, Client, MediatorMsg) {
    let mut host = Client::connect(host_at).await;
    host.send(&hello(n, "alice")).await;
    host.expect_waiting().await;
    let mut joiner = Client::connect(joiner_at).await;
    joiner.send(&hello(n, "bob")).await;
    let joined = joiner.expect_matched(Role::Joiner).await;
    let hosted = host.expect_matched(Role::Host).await;
    (host, hosted, joiner, joined)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_instances_meet_and_time_their_punch_together() {
    let redis = RedisServer::start();
    let a = Instance::start(&redis);
    let b = Instance::start(&redis);
    let notices = subscribe(&redis, &["p2pchat:v2:inst:*"]);
    let (mut host, hosted, mut joiner, joined) = meet(a.addr(), b.addr(), 1).await;
    assert_eq!(peer_name(&hosted), "bob");
    assert_eq!(peer_name(&joined), "alice");
    let MediatorMsg::Matched {
        public,
        listen_port,
        ..
    } = &joined
    else {
        unreachable!()
    };
    assert_eq!(public, &common::public(dhke::Group::Modp3072));
    assert_eq!(
        *listen_port, 4005,
        "the host's details crossed byte for byte"
    );
    // The round-trip figures cross instances (§18.4 `rtt`): each instance sends
    // its client's figure to the other's channel, for the pair of this match.
    // (Whether they arrive in time to spare the 2 s wait is a latency question,
    // not asserted here: no wall clock in tests.)
    tokio::join!(host.answer_punch(), joiner.answer_punch());
    let rtt_notice = |channel: &str, payload: &str| {
        let notice: serde_json::Value = serde_json::from_str(payload).ok()?;
        (notice["t"] == "rtt").then(|| (channel.to_owned(), notice["pair"].clone()))
    };
    let first = next_published(
        &notices,
        Duration::from_secs(10),
        "an rtt notice",
        rtt_notice,
    );
    let second = next_published(
        &notices,
        Duration::from_secs(10),
        "the other side's rtt notice",
        rtt_notice,
    );
    assert_eq!(first.1, second.1, "both figures are for one pair");
    assert!(first.1.is_string(), "{first:?}");
    assert_ne!(first.0, second.0, "each went to the other instance");
    // The room is gone from Redis once matched.
    let mut con = redis.connection();
    assert!(!room_exists(&mut con, 1));

    // Same instance in Redis mode, and the other way round.
    meet(b.addr(), b.addr(), 2).await;
    meet(b.addr(), a.addr(), 3).await;

    // A group mismatch is told across instances, and the host keeps its room.
    let mut host = Client::connect(a.addr()).await;
    host.send(&hello(4, "alice")).await;
    host.expect_waiting().await;
    let mut other = Client::connect(b.addr()).await;
    let group14 = dhke::Group::Modp2048;
    other
        .send(&common::hello_with(
            4,
            "carol",
            group14,
            common::public(group14),
        ))
        .await;
    other.expect_error(ErrorCode::GroupMismatch).await;
    let mut joiner = Client::connect(b.addr()).await;
    joiner.send(&hello(4, "bob")).await;
    joiner.expect_matched(Role::Joiner).await;
    host.expect_matched(Role::Host).await;

    let (status, body) = a.get("/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (_, metrics) = a.get("/metrics");
    assert!(metrics.contains("mediator_room_store_up 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_split_over_two_instances_relays_through_the_one_that_matched() {
    let redis = RedisServer::start();
    let a = Instance::start(&redis);
    let b = Instance::start(&redis);
    let (_host, hosted, _joiner, joined) = meet(a.addr(), b.addr(), 10).await;
    let (
        RelayOffer::Offered { token, server },
        RelayOffer::Offered {
            token: t2,
            server: s2,
        },
    ) = (relay_of(&hosted), relay_of(&joined))
    else {
        panic!("both sides are offered the relay");
    };
    assert_eq!(token, t2, "one token for the pair");
    assert_eq!(
        server,
        b.addr().to_string(),
        "B completed the match: B relays"
    );
    assert_eq!(s2, server);
    // Both go to the relay named in Matched; the host's token was minted on A
    // with the key agreed in Redis, and B accepts it.
    let relay: SocketAddr = server.parse().unwrap();
    let (mut x, mut y) = common::relay_pair(relay, token).await;
    common::relay_round_trips(&mut x, &mut y, 20).await;
    // The session is on B alone.
    let (_, metrics) = a.get("/metrics");
    assert!(metrics.contains("mediator_relay_sessions 0"), "{metrics}");
    let (_, metrics) = b.get("/metrics");
    assert!(metrics.contains("mediator_relay_sessions 1"), "{metrics}");
}

/// docs/protocol.md §12.3 across instances: a pair's token opens a session
/// only at the relay it names, so instances sharing a Redis (and so the token
/// key) cannot each give the pair a session of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_token_opens_a_session_only_at_the_instance_it_names() {
    let redis = RedisServer::start();
    let a = Instance::start(&redis);
    let b = Instance::start(&redis);
    let (_host, hosted, _joiner, _joined) = meet(a.addr(), b.addr(), 11).await;
    let RelayOffer::Offered { token, server } = relay_of(&hosted) else {
        panic!("the host is offered the relay");
    };
    assert_eq!(
        server,
        b.addr().to_string(),
        "B completed the match: B relays"
    );
    // Both sides of the pair at A, which shares the key but is not named:
    // refused at once, with the reason.
    let mut strays = Vec::new();
    for _ in 0..2 {
        let mut stray = Client::connect(a.addr()).await;
        stray.send(&ClientMsg::RelayJoin { token }).await;
        strays.push(stray);
    }
    for mut stray in strays {
        let message = stray.expect_error(ErrorCode::RelayRefused).await;
        assert!(message.contains("not issued here"), "{message}");
    }
    // At B, the pair gets its one session.
    let (mut x, mut y) = common::relay_pair(b.addr(), token).await;
    common::relay_round_trips(&mut x, &mut y, 2).await;
}

/// Sends `Allocate` on a fresh connection to `at`; returns the number and the
/// connection (which holds it).
async fn allocate(at: SocketAddr) -> (u32, Client) {
    let mut c = Client::connect(at).await;
    c.send(&ClientMsg::Allocate).await;
    match c.recv().await {
        Some(MediatorMsg::Allocated { nameplate }) => (nameplate, c),
        other => panic!("expected Allocated, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nameplates_are_unique_across_instances_and_come_back_when_freed() {
    let redis = RedisServer::start();
    let a = Instance::start(&redis);
    let b = Instance::start(&redis);
    let (first, on_a) = allocate(a.addr()).await;
    let (second, _on_b) = allocate(b.addr()).await;
    assert_eq!((first, second), (1, 2), "one sequence for all instances");
    drop(on_a);
    // Released asynchronously: poll, each look's own number released at once.
    let start = Instant::now();
    while allocate(b.addr()).await.0 != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "nameplate 1 never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_the_relay_off_completing_a_match_means_off_for_both() {
    let redis = RedisServer::start();
    let a = Instance::start(&redis);
    let b = Instance::start_with(&redis, "--relay off");
    let (_host, hosted, _joiner, joined) = meet(a.addr(), b.addr(), 50).await;
    assert_eq!(relay_of(&hosted), RelayOffer::Off);
    assert_eq!(relay_of(&joined), RelayOffer::Off);
    // The other way round A relays, and says so to both.
    let (_host, hosted, _joiner, joined) = meet(b.addr(), a.addr(), 51).await;
    assert_eq!(
        relay_of(&hosted),
        RelayOffer::Off,
        "B itself runs with the relay off"
    );
    let RelayOffer::Offered { server, .. } = relay_of(&joined) else {
        panic!("A offers its relay to its own client");
    };
    assert_eq!(server, a.addr().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_no_room_behind() {
    let redis = RedisServer::start();
    let mut a = Instance::start(&redis);
    let b = Instance::start(&redis);
    let mut host = Client::connect(a.addr()).await;
    host.send(&hello(20, "alice")).await;
    host.expect_waiting().await;
    let (plate, _held) = allocate(a.addr()).await;
    assert_eq!(plate, 1);
    let mut con = redis.connection();
    let mut pttl = || -> i64 {
        redis::cmd("PTTL")
            .arg(room_key(20))
            .query(&mut con)
            .unwrap()
    };
    let first = pttl();
    assert!((1..=15_000).contains(&first), "room key TTL {first} ms");
    // A live instance's heartbeat (every 5 s) keeps pushing the expiry out: the
    // TTL goes up again.
    let mut last = first;
    eventually(
        Duration::from_secs(20),
        "the heartbeat refreshes the TTL",
        || {
            let now = pttl();
            let refreshed = now > last;
            last = now;
            refreshed
        },
    )
    .await;
    // Redis says how the key goes: expired (its TTL ran out) or deleted.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Egx")
        .query::<()>(&mut con)
        .unwrap();
    let gone = subscribe(&redis, &["__keyevent@0__:expired", "__keyevent@0__:del"]);
    a.binary.child.kill().unwrap();
    let _ = a.binary.child.wait();
    let key = room_key(20);
    let how = next_published(
        &gone,
        Duration::from_secs(30),
        "the dead instance's room goes",
        |channel, payload| (payload == key).then(|| channel.to_owned()),
    );
    assert_eq!(
        how, "__keyevent@0__:expired",
        "the room lived on until its TTL, not removed by anything else"
    );
    assert!(!room_exists(&mut con, 20));
    // The dead instance's nameplate lease ran out too: B hands the number out again.
    let (plate, _held) = allocate(b.addr()).await;
    assert_eq!(plate, 1, "the dead instance's nameplate is reclaimed");
    // The host comes back through B and meets its joiner.
    meet(b.addr(), b.addr(), 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_back_at_once_after_its_instance_died_meets_its_joiner_not_its_ghost() {
    let redis = RedisServer::start();
    let mut a = Instance::start(&redis);
    let b = Instance::start(&redis);
    let c = Instance::start(&redis);
    let mut host = Client::connect(a.addr()).await;
    host.send(&hello(30, "alice")).await;
    host.expect_waiting().await;
    a.binary.child.kill().unwrap();
    let _ = a.binary.child.wait();
    // Its room is still in Redis (TTL not passed), but nobody hears A's channel:
    // the reconnecting host opens the room again instead of meeting itself.
    let mut con = redis.connection();
    assert!(room_exists(&mut con, 30), "the stale room is still there");
    let mut host = Client::connect(b.addr()).await;
    host.send(&hello(30, "alice")).await;
    host.expect_waiting().await;
    let mut joiner = Client::connect(c.addr()).await;
    joiner.send(&hello(30, "bob")).await;
    let joined = joiner.expect_matched(Role::Joiner).await;
    assert_eq!(peer_name(&joined), "alice");
    let hosted = host.expect_matched(Role::Host).await;
    assert_eq!(peer_name(&hosted), "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_refuses_new_rooms_clearly_and_service_returns_with_it() {
    let mut redis = RedisServer::start();
    let a = Instance::start(&redis);
    let b = Instance::start(&redis);
    meet(a.addr(), b.addr(), 40).await;
    // A host waiting through the outage.
    let mut patient = Client::connect(a.addr()).await;
    patient.send(&hello(41, "alice")).await;
    patient.expect_waiting().await;

    redis.stop();
    let mut refused = Client::connect(b.addr()).await;
    refused.send(&hello(42, "bob")).await;
    let message = refused.expect_error(ErrorCode::TooManyConnections).await;
    assert!(message.contains("Redis"), "{message}");
    assert!(message.contains("try again"), "{message}");
    let health = || b.get("/health");
    eventually(
        Duration::from_secs(10),
        "/health reports Redis down",
        || {
            let (status, body) = health();
            status == 503 && body.contains("Redis")
        },
    )
    .await;
    let (_, metrics) = b.get("/metrics");
    assert!(metrics.contains("mediator_room_store_up 0"), "{metrics}");
    assert!(
        metrics.contains("mediator_rejected_total{limit=\"room_store\"} 1"),
        "{metrics}"
    );

    redis.restart();
    eventually(Duration::from_secs(15), "/health recovers on both", || {
        a.get("/health").0 == 200 && b.get("/health").0 == 200
    })
    .await;
    meet(a.addr(), b.addr(), 43).await;
    meet(b.addr(), a.addr(), 44).await;
    // The waiting host's room is put back by A's heartbeat, and a joiner meets it.
    let mut con = redis.connection();
    eventually(
        Duration::from_secs(15),
        "the waiting host's room is back",
        || room_exists(&mut con, 41),
    )
    .await;
    let mut joiner = Client::connect(b.addr()).await;
    joiner.send(&hello(41, "bob")).await;
    joiner.expect_matched(Role::Joiner).await;
    patient.expect_matched(Role::Host).await;
}

#[test]
fn redis_without_a_public_address_is_refused_with_what_to_do() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mediator"))
        .args([
            "--listen",
            "[::]:7070",
            "--redis",
            "redis://127.0.0.1:1/",
            "--check-config",
        ])
        .env_remove("MEDIATOR_PUBLIC_ADDR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--public-addr"), "{err}");
}

#[test]
fn an_unreachable_redis_at_startup_is_a_clear_exit() {
    let port = free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mediator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &format!("redis://127.0.0.1:{port}/"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach Redis"), "{err}");
}

/// Joins group room `n` at `at`: our member number, and the members announced
/// in `GroupJoined`'s wake (number, name, relay offer).
async fn join_group(
    at: SocketAddr,
    n: u64,
    name: &str,
) -> (Client, u32, Vec<(u32, String, RelayOffer)>) {
    let mut c = Client::connect(at).await;
    c.send(&group_hello(n, name)).await;
    let (member, present) = match c.recv().await {
        Some(MediatorMsg::GroupJoined {
            member, present, ..
        }) => (member, present),
        other => panic!("{name}: expected GroupJoined, got {other:?}"),
    };
    let mut others = Vec::new();
    for _ in 0..present {
        others.push(expect_member(&mut c, Role::Joiner).await);
    }
    (c, member, others)
}

async fn expect_member(c: &mut Client, want: Role) -> (u32, String, RelayOffer) {
    loop {
        match c.recv().await {
            Some(MediatorMsg::Member {
                member,
                role,
                peer_name,
                relay,
                ..
            }) => {
                assert_eq!(role, want, "{peer_name}");
                return (member, peer_name, relay);
            }
            Some(MediatorMsg::Pong) => {}
            other => panic!("expected Member, got {other:?}"),
        }
    }
}

async fn expect_left(c: &mut Client, limit: Duration) -> u32 {
    let deadline = Instant::now() + limit;
    loop {
        let left = tokio::time::timeout_at(deadline.into(), c.recv())
            .await
            .expect("a MemberLeft in time");
        match left {
            Some(MediatorMsg::MemberLeft { member }) => return member,
            Some(MediatorMsg::Pong) => {}
            other => panic!("expected MemberLeft, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_room_spans_instances_and_a_killed_instances_members_leave_it() {
    let redis = RedisServer::start();
    let a = Instance::start(&redis);
    let mut b = Instance::start(&redis);
    let (mut ann, ann_n, none) = join_group(a.addr(), 30, "ann").await;
    assert!(none.is_empty());
    let (mut ben, ben_n, seen_by_ben) = join_group(b.addr(), 30, "ben").await;
    assert_eq!(seen_by_ben.len(), 1);
    assert_eq!(
        (seen_by_ben[0].0, seen_by_ben[0].1.as_str()),
        (ann_n, "ann")
    );
    let (told_ann, name, relay_for_ann) = expect_member(&mut ann, Role::Host).await;
    assert_eq!((told_ann, name.as_str()), (ben_n, "ben"));
    // One relay for the pair, on the newcomer's instance: the same token both ways.
    let RelayOffer::Offered { token, .. } = &relay_for_ann else {
        panic!("{relay_for_ann:?}")
    };
    assert!(matches!(&seen_by_ben[0].2, RelayOffer::Offered { token: t, .. } if t == token));

    let (cat, _, seen_by_cat) = join_group(a.addr(), 30, "cat").await;
    let mut names: Vec<_> = seen_by_cat.iter().map(|m| m.1.clone()).collect();
    names.sort();
    assert_eq!(names, ["ann", "ben"]);
    expect_member(&mut ann, Role::Host).await;
    expect_member(&mut ben, Role::Host).await;

    // A two-party Hello for the group's code is refused, on either instance.
    let mut stray = Client::connect(b.addr()).await;
    stray.send(&hello(30, "dan")).await;
    stray.expect_error(ErrorCode::RoomKind).await;

    // cat leaves: both others hear it, across instances.
    drop(cat);
    expect_left(&mut ann, Duration::from_secs(5)).await;
    expect_left(&mut ben, Duration::from_secs(5)).await;

    // ben's instance dies: ben goes stale in Redis and ann is told it left.
    b.binary.child.kill().unwrap();
    let _ = b.binary.child.wait();
    drop(ben);
    let gone = expect_left(&mut ann, Duration::from_secs(25)).await;
    assert_eq!(gone, ben_n);
    // ben comes back through A and is announced to ann as a new member.
    let (_ben, ben_again, seen) = join_group(a.addr(), 30, "ben").await;
    assert!(ben_again > ben_n);
    assert_eq!(seen.len(), 1, "only ann is in the room: {seen:?}");
    let _ = &mut ann;
}

/// docs/protocol.md §19.1, members per source address, counted across the
/// instances sharing the room: a third member from 127.0.0.2 is refused under
/// `--max-members-per-ip 2` wherever it arrives, and 127.0.0.3 still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_per_address_cap_holds_across_instances() {
    use std::net::Ipv4Addr;
    let redis = RedisServer::start();
    let a = Instance::start_with(&redis, "--max-members-per-ip 2");
    let b = Instance::start_with(&redis, "--max-members-per-ip 2");
    let two = Ipv4Addr::new(127, 0, 0, 2);
    let mut ann = Client::connect_from(two, a.addr()).await;
    let ann_n = ann.join_group(40, "ann").await.unwrap();
    let mut ben = Client::connect_from(two, b.addr()).await;
    let ben_n = ben.join_group(40, "ben").await.unwrap();
    let third_is_refused = || async {
        for at in [a.addr(), b.addr()] {
            let mut third = Client::connect_from(two, at).await;
            let (code, message) = third.join_group(40, "cat").await.unwrap_err();
            assert_eq!(code, ErrorCode::RoomFull, "{message}");
            assert!(message.contains("2 members from your address"), "{message}");
        }
    };
    third_is_refused().await;
    let mut dan = Client::connect_from(Ipv4Addr::new(127, 0, 0, 3), b.addr()).await;
    dan.join_group(40, "dan").await.unwrap();
    // Another room is another count.
    let mut eve = Client::connect_from(two, a.addr()).await;
    eve.join_group(41, "eve").await.unwrap();
    // Redis loses the room (as in a restart): each instance's heartbeat puts
    // its members back with their source, and the cap holds again.
    let mut con = redis.connection();
    let key = format!("p2pchat:v2:group:{}", hex::encode(common::room(40)));
    let _: i64 = redis::cmd("DEL").arg(&key).query(&mut con).unwrap();
    eventually(Duration::from_secs(15), "members put back", || {
        [ann_n, ben_n].iter().all(|n| {
            let member: Option<String> = redis::cmd("HGET")
                .arg(&key)
                .arg(format!("m:{n}"))
                .query(&mut con)
                .unwrap();
            member.is_some_and(|m| m.contains(r#""src":"127.0.0.2""#))
        })
    })
    .await;
    third_is_refused().await;
}

/// Presence across instances (docs/protocol.md §21): a holder on one instance
/// is rung for a room opened on another, both when the room comes after the
/// holder and when it was there first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_rings_across_instances_sharing_a_redis() {
    let redis = RedisServer::start();
    let a = Instance::start(&redis);
    let b = Instance::start(&redis);

    // Bob's room waits at B before alice's presence connects to A.
    let mut bob = Client::connect(b.addr()).await;
    bob.send(&hello(7, "bob")).await;
    bob.expect_waiting().await;
    let mut alice = Client::connect(a.addr()).await;
    alice
        .send(&ClientMsg::Presence {
            tags: vec![common::room(7), common::room(8)],
        })
        .await;
    assert_eq!(alice.recv().await, Some(MediatorMsg::Present { tags: 2 }));
    assert_eq!(
        alice.recv().await,
        Some(MediatorMsg::Ring {
            tag: common::room(7)
        })
    );

    // Dave waits under the same tag at B itself.
    let mut dave = Client::connect(b.addr()).await;
    dave.send(&ClientMsg::Presence {
        tags: vec![common::room(8)],
    })
    .await;
    assert_eq!(dave.recv().await, Some(MediatorMsg::Present { tags: 1 }));

    // Carol opens a room at B after alice waits at A.
    let mut carol = Client::connect(b.addr()).await;
    carol.send(&hello(8, "carol")).await;
    carol.expect_waiting().await;
    // (Bob's announcement may reach A after alice registered and ring her for
    // room 7 once more: a ring is a wake-up, a repeat costs one Hello.)
    loop {
        match alice.recv().await {
            Some(MediatorMsg::Ring { tag }) if tag == common::room(8) => break,
            Some(MediatorMsg::Ring { tag }) if tag == common::room(7) => {}
            other => panic!("expected the ring for room 8, got {other:?}"),
        }
    }
    assert_eq!(
        dave.recv().await,
        Some(MediatorMsg::Ring {
            tag: common::room(8)
        })
    );
    // B's own announcement came back from Redis to B when it reached A (alice
    // was rung through it above): it does not ring dave a second time, so the
    // next message he sees answers his ping.
    dave.send(&ClientMsg::Ping).await;
    assert_eq!(dave.recv().await, Some(MediatorMsg::Pong));
    alice.send(&ClientMsg::Ping).await;
    assert_eq!(alice.recv().await, Some(MediatorMsg::Pong));
}
