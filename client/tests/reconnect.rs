//! End-to-end tests of issue 5's resilience with the real binaries: the direct
//! link is cut mid-burst (and, separately, the mediator is down while the link
//! is cut), the clients reconnect by themselves with key continuity, and every
//! message arrives exactly once, in order; a man in the middle at the reconnect
//! cannot resume; a host whose mediator is killed while it waits comes back
//! through another instance behind a balancer and meets its joiner.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fake_mediator::{FakeMediator, Lie};
use common::proxy::Proxy;
use common::{client_args, free_port, set_flag, Client, Mediator, TempDir};

const BURST: usize = 1000;

/// A client whose listener sits behind its own proxy, so the test can cut the
/// direct link whichever side hosts.
async fn behind_proxy(server: &str, name: &str, room: &str, dir: &TempDir) -> (Client, Proxy) {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), listen, None).await;
    let mut args = client_args(
        server,
        name,
        dir,
        &["--room", room, "--reconnect-for", "60s"],
    );
    set_flag(&mut args, "--listen", &listen.to_string());
    set_flag(&mut args, "--advertise", &proxy.addr.to_string());
    // The path must be the proxy: no punch past it, no relay around it.
    args.extend(["--no-punch".to_string(), "--no-relay".to_string()]);
    (Client::start(name, &args), proxy)
}

/// Collects `message` events until `n` have arrived, returning their texts.
async fn collect_messages(c: &mut Client, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = c.expect("message").await;
        got.push((
            m["id"].as_u64().unwrap(),
            m["text"].as_str().unwrap().to_string(),
        ));
    }
    got
}

fn burst_lines(range: std::ops::RangeInclusive<usize>) -> String {
    range.map(|i| format!("burst message {i:04}\n")).collect()
}

/// Sends a 1,000-message burst from alice to bob, calling `cut` once part of it
/// is on the wire, and checks every message arrives exactly once, in order.
async fn burst_across(
    alice: &mut Client,
    bob: &mut Client,
    cut: impl std::future::Future<Output = ()>,
    link: &Proxy,
    other: &Proxy,
) {
    let first = burst_lines(1..=300);
    let before =
        link.forwarded_up.load(Ordering::Relaxed) + other.forwarded_up.load(Ordering::Relaxed);
    alice.say(first.trim_end()).await;
    // Wait until part of the burst is in flight, then cut.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let now =
            link.forwarded_up.load(Ordering::Relaxed) + other.forwarded_up.load(Ordering::Relaxed);
        if now > before + 2_000 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cut.await;
    alice.say(burst_lines(301..=BURST).trim_end()).await;

    let got = collect_messages(bob, BURST).await;
    let texts: Vec<String> = got.iter().map(|(_, t)| t.clone()).collect();
    let expected: Vec<String> = (1..=BURST)
        .map(|i| format!("burst message {i:04}"))
        .collect();
    assert_eq!(texts.len(), BURST);
    assert!(texts == expected, "every message once, in order");
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    // No stray duplicate shows up afterwards either.
    bob.say("/peers").await;
    bob.expect("peer").await;
    let extra = bob.seen.iter().filter(|e| e["event"] == "message").count();
    assert_eq!(extra, BURST, "no duplicates shown");
    // The cut really fell inside the burst: some messages came before the
    // reconnect, the rest after it.
    let reconnected_at = bob
        .seen
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "connected")
        .map(|(i, _)| i)
        .nth(1)
        .expect("bob connected a second time");
    let before = bob.seen[..reconnected_at]
        .iter()
        .filter(|e| e["event"] == "message")
        .count();
    assert!(
        before > 0 && before < BURST,
        "{before} of {BURST} arrived before the reconnect"
    );
    // Alice hears an ack for every message.
    let mut acked = std::collections::BTreeSet::new();
    for e in alice.seen.iter().filter(|e| e["event"] == "ack") {
        acked.insert(e["id"].as_u64().unwrap());
    }
    while acked.len() < BURST {
        acked.insert(alice.expect("ack").await["id"].as_u64().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_mid_burst_reconnects_and_delivers_exactly_once() {
    let dir = TempDir::new("cut");
    let med = Mediator::start(&[]).await;
    let (mut alice, pa) = behind_proxy(&med.server_arg(), "alice", "r-cut", &dir).await;
    alice.expect("waiting").await;
    let (mut bob, pb) = behind_proxy(&med.server_arg(), "bob", "r-cut", &dir).await;
    // The first session, the one alice verifies: what the resumed one must continue.
    let a_first = alice.expect("connected").await;
    let b_first = bob.expect("connected").await;
    assert_eq!(
        a_first["sas"], b_first["sas"],
        "the first meeting is honest"
    );
    alice.say("/verify yes").await;
    assert_eq!(alice.expect("verify").await["verified"], true);

    burst_across(
        &mut alice,
        &mut bob,
        async {
            pa.cut();
            pb.cut()
        },
        &pa,
        &pb,
    )
    .await;

    let mut last = Vec::new();
    for (c, first) in [(&mut alice, &a_first), (&mut bob, &b_first)] {
        assert!(
            c.seen.iter().any(|e| e["event"] == "reconnecting"),
            "{} reconnected",
            c.name
        );
        let again: Vec<_> = c
            .seen
            .iter()
            .filter(|e| e["event"] == "connected")
            .cloned()
            .collect();
        // `seen` holds every event, the first `connected` included.
        assert!(again.len() >= 2, "{}: {again:?}", c.name);
        assert_eq!(&again[0], first, "{}", c.name);
        let resumed = again.last().unwrap().clone();
        // Key continuity: the handshake checked out only with keys salted by the
        // first session's resume key (§5, §6), with the identity met then.
        assert_eq!(resumed["resumed"], true, "{}: key continuity", c.name);
        assert_eq!(
            resumed["fingerprint"], first["fingerprint"],
            "{}: the resumed session is with the identity of the first",
            c.name
        );
        assert!(
            !c.seen.iter().any(|e| e["event"] == "info"
                && e["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("The keys are new")),
            "{}: no new-keys warning",
            c.name
        );
        last.push(resumed);
    }
    let (a_last, b_last) = (&last[0], &last[1]);
    assert_eq!(
        a_last["verified"], true,
        "verified mark kept across a resumed session"
    );
    assert_eq!(b_last["verified"], false, "bob never marked it");
    // A resumed session has fresh nonces, so a new code (§6); both ends show the same.
    assert_eq!(
        a_last["sas"], b_last["sas"],
        "both ends derived the same resumed keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mediator_restart_while_the_link_is_cut_still_reconnects() {
    let dir = TempDir::new("restart");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let med = Mediator::start_at(&listen, &[]).await;
    let server = med.server_arg();
    let (mut alice, pa) = behind_proxy(&server, "alice", "r-restart", &dir).await;
    alice.expect("waiting").await;
    let (mut bob, pb) = behind_proxy(&server, "bob", "r-restart", &dir).await;
    alice.expect("connected").await;
    bob.expect("connected").await;

    // The mediator dies while they chat; then the link drops too, so the
    // clients must wait for the mediator to come back.
    med.kill().await;
    let restarted: std::sync::Mutex<Option<Mediator>> = std::sync::Mutex::new(None);
    let restart = async {
        pa.cut();
        pb.cut();
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Held until the test ends, then killed with it.
        *restarted.lock().unwrap() = Some(Mediator::start_at(&listen, &[]).await);
    };
    burst_across(&mut alice, &mut bob, restart, &pa, &pb).await;
    assert!(restarted.lock().unwrap().is_some());
    for c in [&mut alice, &mut bob] {
        let last = c
            .seen
            .iter()
            .rev()
            .find(|e| e["event"] == "connected")
            .unwrap()
            .clone();
        assert_eq!(last["resumed"], true, "{}", c.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn man_in_the_middle_at_reconnect_cannot_resume() {
    let dir = TempDir::new("mitm-re");
    let room = "r-mitm-again";
    let mut fake = FakeMediator::start(Lie::MitmAtReconnect { room: room.into() }).await;
    let server = fake.addr.to_string();
    let (mut alice, pa) = behind_proxy(&server, "alice", room, &dir).await;
    alice.expect("waiting").await;
    let (mut bob, pb) = behind_proxy(&server, "bob", room, &dir).await;
    let a1 = alice.expect("connected").await;
    let b1 = bob.expect("connected").await;
    assert_eq!(a1["sas"], b1["sas"], "the first meeting is honest");
    alice.say("/verify yes").await;
    alice.expect("verify").await;

    pa.cut();
    pb.cut();
    let a2 = alice.expect("connected").await;
    let b2 = bob.expect("connected").await;
    let legs = tokio::time::timeout(common::WAIT, fake.mitm.take().unwrap())
        .await
        .unwrap()
        .unwrap();
    for (c, e) in [(&mut alice, &a2), (&mut bob, &b2)] {
        assert_eq!(
            e["resumed"], false,
            "{}: the attacker cannot continue the keys",
            c.name
        );
        assert_eq!(
            e["verified"], false,
            "{}: verification does not carry over",
            c.name
        );
        let warning = c.expect("info").await;
        assert!(
            warning["text"]
                .as_str()
                .unwrap()
                .contains("The keys are new"),
            "{}: {warning}",
            c.name
        );
    }
    assert_ne!(a2["sas"], b2["sas"], "and the codes differ");
    assert!(legs.with_host != legs.with_joiner);
}

/// A TCP balancer as an operator would put in front of several mediators (the
/// deploy example's HAProxy, reduced to its failover): each connection goes to
/// the first backend that accepts it.
async fn failover_balancer(backends: Vec<SocketAddr>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backends = backends.clone();
            tokio::spawn(async move {
                for backend in backends {
                    let connect = tokio::net::TcpStream::connect(backend);
                    if let Ok(Ok(mut outbound)) =
                        tokio::time::timeout(Duration::from_secs(2), connect).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Issue 14's failover, end to end: alice waits through the balancer on mediator
/// A; A is killed (SIGKILL), so her room is left in Redis with nobody behind it.
/// She reconnects by herself, the balancer sends her to B, she opens the room
/// again (not meeting A's ghost), and bob, arriving later, meets her.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_mediator_is_killed_comes_back_through_another_and_meets_its_joiner() {
    let redis = common::redis::Redis::start().await;
    let url = redis.url();
    let a = Mediator::start(&["--redis", &url]).await;
    let b = Mediator::start(&["--redis", &url]).await;
    let server = failover_balancer(vec![a.addr, b.addr]).await.to_string();
    let dir = TempDir::new("failover");
    let args = |name: &str| client_args(&server, name, &dir, &["--room", "r-failover"]);
    let mut alice = Client::start("alice", &args("alice"));
    alice.expect("waiting").await;
    a.kill().await;
    let again = alice.expect("reconnecting").await;
    assert!(
        again["reason"]
            .as_str()
            .unwrap_or("")
            .contains("connection lost"),
        "{again}"
    );
    alice.expect("waiting").await;
    let mut bob = Client::start("bob", &args("bob"));
    let x = alice.expect("connected").await;
    let y = bob.expect("connected").await;
    assert_eq!(x["sas"], y["sas"]);
    assert_eq!(
        (x["role"].as_str(), y["role"].as_str()),
        (Some("host"), Some("joiner"))
    );
    alice.say("still here after the failover").await;
    let m = bob.expect("message").await;
    assert_eq!(m["text"], "still here after the failover");
    // Alice leaves; bob is told and ends too.
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    assert_eq!(bob.exit_code().await, 0);
    drop(b);
}
