//! The NAT lab tests: real `mediator` and `client` binaries in network namespaces
//! behind real nftables NATs (see tests/common/lab.rs), one test per pairing of
//! router kinds, plus relay refusal, the relay byte cap, a tap on the public
//! segment that must never see chat text or the room name, a pair split over
//! two mediators sharing a Redis, and a connection token whose holder and dialer
//! sit behind two home routers and meet through the mediator the token names. Needs root, iproute2, nftables and redis-server
//! (and tcpdump for the tap); without them these tests fail, saying so.

mod common;

use std::time::{Duration, Instant};

use common::lab::{Lab, RouterKind, Site, Spot, Topology, MEDIATOR_IP, MEDIATOR_PORT};
use common::redis::Redis;
use common::{Client, Mediator};
use RouterKind::{FullCone, HomeRouter, PortRange, RstRouter, Symmetric};

/// Both ends of a connected pair, the host (first to arrive) first.
struct Pair {
    host: Client,
    joiner: Client,
    /// The path each side's `connected` event showed, host first.
    paths: [String; 2],
}

/// Starts `alice` on host 0 and, once she waits (so she hosts), `bob` on host 1;
/// waits for `connected` on both and checks the SAS agree and the path is allowed.
async fn connect_pair(
    lab: &Lab,
    room: &str,
    dir: &common::TempDir,
    extra: [&[&str]; 2],
    allowed: &[&str],
) -> Pair {
    let both = lab.server();
    connect_pair_via(lab, room, dir, extra, allowed, [&both, &both]).await
}

/// [`connect_pair`] with alice's and bob's own `--server`.
async fn connect_pair_via(
    lab: &Lab,
    room: &str,
    dir: &common::TempDir,
    extra: [&[&str]; 2],
    allowed: &[&str],
    servers: [&str; 2],
) -> Pair {
    let args = |side: usize, name: &str| {
        let mut args = lab.client_args(name, room, dir, extra[side]);
        common::set_flag(&mut args, "--server", servers[side]);
        args
    };
    let mut host = lab.start_client(0, "alice", &args(0, "alice"));
    host.expect("waiting").await;
    let mut joiner = lab.start_client(1, "bob", &args(1, "bob"));
    let a = host.expect("connected").await;
    let b = joiner.expect("connected").await;
    assert_eq!(a["sas"], b["sas"], "both screens show the same SAS");
    assert!(!a["sas"].as_str().unwrap_or("").is_empty(), "a SAS: {a}");
    assert_eq!(a["peer"], "bob");
    assert_eq!(b["peer"], "alice");
    for (side, event) in [("host", &a), ("joiner", &b)] {
        let path = event["path"].as_str().unwrap_or("");
        assert!(
            allowed.contains(&path),
            "{side} connected over `{path}`, expected one of {allowed:?}: {event}"
        );
    }
    let paths = [&a, &b].map(|e| e["path"].as_str().unwrap_or("?").to_owned());
    println!(
        "{room}: host over `{}`, joiner over `{}`",
        paths[0], paths[1]
    );
    Pair {
        host,
        joiner,
        paths,
    }
}

/// The five `mediator_sessions_total` lines once both sides of one pair have
/// reported `paths` (docs/protocol.md §4, "The path report"): one count per
/// reporting side, under the label its `connected` event showed.
fn sessions_after(paths: &[String; 2]) -> Vec<String> {
    ["direct", "lan", "punched", "relay", "none"]
        .iter()
        .map(|label| {
            let n = paths.iter().filter(|p| p == label).count();
            format!("mediator_sessions_total{{path=\"{label}\"}} {n}")
        })
        .collect()
}

/// A 6,000-letter chat line (letters stepping by `step`), long enough that its
/// ciphertext must show on the wire.
fn long_line(step: u32) -> String {
    (0..6000u32)
        .map(|i| char::from(b'a' + ((i * step + i / 26) % 26) as u8))
        .collect()
}

/// One line each way arrives intact.
async fn chat_both_ways(pair: &mut Pair) {
    pair.host.say("hello from behind the first router").await;
    let m = pair.joiner.expect("message").await;
    assert_eq!(m["text"], "hello from behind the first router");
    assert_eq!(m["from"], "alice");
    pair.joiner.say("and back from the second").await;
    let m = pair.host.expect("message").await;
    assert_eq!(m["text"], "and back from the second");
    assert_eq!(m["from"], "bob");
}

/// The whole pairing test: host at `host`, joiner at `joiner`, path in `allowed`.
async fn pairing(host: Spot, joiner: Spot, allowed: &[&str]) {
    let lab = Lab::build(&Topology::pair(host, joiner));
    run_pairing(
        &lab,
        allowed,
        &format!("lab-{}-{}", host.label(), joiner.label()),
    )
    .await;
}

async fn run_pairing(lab: &Lab, allowed: &[&str], room: &str) {
    let dir = common::TempDir::new("natlab");
    let _mediator = lab.start_mediator(&[]).await;
    let mut pair = connect_pair(lab, room, &dir, [&[], &[]], allowed).await;
    // The reach figure: the mediator counted each side under the path it took.
    lab.wait_for_metrics(&sessions_after(&pair.paths)).await;
    chat_both_ways(&mut pair).await;
}

/// Behind any NAT a connection to the peer's observed address is labelled
/// `punched` whichever side dialed first (§12.5, `connect::Ends::classify`), so
/// the pairings through routers that punch must report exactly that: `direct`
/// would mean a path the lab does not have.
const PUNCHED: &[&str] = &["punched"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_hosts_without_nat_connect_direct() {
    pairing(Spot::Public, Spot::Public, &["direct"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_home_routers_punch_through() {
    pairing(Spot::Behind(HomeRouter), Spot::Behind(HomeRouter), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_router_and_port_changing_router_punch_through() {
    pairing(Spot::Behind(HomeRouter), Spot::Behind(PortRange), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cone_host_is_reached_from_behind_a_home_router() {
    pairing(Spot::Behind(FullCone), Spot::Behind(HomeRouter), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_router_host_is_reached_from_behind_a_full_cone() {
    pairing(Spot::Behind(HomeRouter), Spot::Behind(FullCone), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_port_changing_routers_punch_through() {
    pairing(Spot::Behind(PortRange), Spot::Behind(PortRange), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cone_host_is_reached_from_behind_a_port_changing_router() {
    pairing(Spot::Behind(FullCone), Spot::Behind(PortRange), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_full_cones_reach_each_other() {
    pairing(Spot::Behind(FullCone), Spot::Behind(FullCone), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_answering_router_and_home_router_punch_through() {
    pairing(Spot::Behind(RstRouter), Spot::Behind(HomeRouter), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_answering_router_and_port_changing_router_punch_through() {
    pairing(Spot::Behind(RstRouter), Spot::Behind(PortRange), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rst_answering_host_is_reached_from_behind_a_full_cone() {
    pairing(Spot::Behind(RstRouter), Spot::Behind(FullCone), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rst_answering_routers_punch_or_relay() {
    pairing(
        Spot::Behind(RstRouter),
        Spot::Behind(RstRouter),
        &["punched", "relay"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_nat_and_home_router_fall_back_to_the_relay() {
    pairing(
        Spot::Behind(Symmetric),
        Spot::Behind(HomeRouter),
        &["relay"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_nat_and_port_changing_router_fall_back_to_the_relay() {
    pairing(Spot::Behind(Symmetric), Spot::Behind(PortRange), &["relay"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_symmetric_nats_fall_back_to_the_relay() {
    pairing(Spot::Behind(Symmetric), Spot::Behind(Symmetric), &["relay"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cone_host_is_reached_from_behind_a_symmetric_nat() {
    pairing(Spot::Behind(FullCone), Spot::Behind(Symmetric), PUNCHED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_behind_one_router_meet_on_the_lan() {
    let lab = Lab::build(&Topology::shared(HomeRouter, 2));
    run_pairing(&lab, &["lan"], "lab-one-router").await;
}

/// Symmetric against symmetric with the relay refused: both sides give up with
/// exit code 12 within 15 s, and each error contains one of `blame[side]`.
async fn relay_refused(mediator_flags: &[&str], bob_flags: &[&str], blame: [&[&str]; 2]) {
    let lab = Lab::build(&Topology::pair(
        Spot::Behind(Symmetric),
        Spot::Behind(Symmetric),
    ));
    let dir = common::TempDir::new("natlab-norelay");
    let _mediator = lab.start_mediator(mediator_flags).await;
    let mut alice = lab.start_client(
        0,
        "alice",
        &lab.client_args("alice", "lab-no-relay", &dir, &[]),
    );
    alice.expect("waiting").await;
    let mut bob = lab.start_client(
        1,
        "bob",
        &lab.client_args("bob", "lab-no-relay", &dir, bob_flags),
    );
    alice.expect("matched").await;
    bob.expect("matched").await;
    let since_match = Instant::now();
    let limit = Duration::from_secs(15);
    for (side, client) in [(0, &mut alice), (1, &mut bob)] {
        let left = limit.saturating_sub(since_match.elapsed());
        let code = client.exit_code_within(left).await;
        let events = client.drain().await;
        assert_eq!(code, 12, "{}: exit code; saw {events:?}", client.name);
        let error = events
            .iter()
            .find(|e| e["event"] == "error")
            .unwrap_or_else(|| panic!("{}: no error event in {events:?}", client.name));
        assert_eq!(error["code"], "no_path", "{}: {error}", client.name);
        let text = error["text"].as_str().unwrap_or("").to_lowercase();
        assert!(
            blame[side].iter().any(|word| text.contains(word)),
            "{}: the error should say who refused the relay (one of {:?}): {text}",
            client.name,
            blame[side]
        );
        assert!(
            !events.iter().any(|e| e["event"] == "connected"),
            "{}: connected although no path exists: {events:?}",
            client.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_nats_with_the_relay_refused_by_one_client_give_up_naming_it() {
    relay_refused(
        &[],
        &["--no-relay"],
        [&["bob", "peer", "other side"], &["--no-relay", "you"]],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_nats_with_the_relay_off_at_the_mediator_give_up_naming_it() {
    relay_refused(&["--relay", "off"], &[], [&["mediator"], &["mediator"]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_session_past_its_byte_cap_ends_and_the_mediator_still_matches() {
    let lab = Lab::build(&Topology::pair(
        Spot::Behind(Symmetric),
        Spot::Behind(Symmetric),
    ));
    let dir = common::TempDir::new("natlab-cap");
    let cap = 48 * 1024;
    let _mediator = lab
        .start_mediator(&["--relay-max-bytes", &cap.to_string()])
        .await;
    let mut pair = connect_pair(&lab, "lab-cap-1", &dir, [&[], &[]], &["relay"]).await;
    // Past the cap in both directions together, one 4000-character line at a time.
    let line = "c".repeat(4000);
    for _ in 0..(2 * cap / line.len() + 2) {
        // The client may already have stopped reading: the cap ended the session.
        if pair.host.try_say(&line).await.is_err() {
            break;
        }
    }
    for client in [&mut pair.host, &mut pair.joiner] {
        let error = client.expect("error").await;
        assert_eq!(error["code"], "relay_ended", "{}: {error}", client.name);
        assert!(
            !error["text"].as_str().unwrap_or("").is_empty(),
            "{}: the relay end says why: {error}",
            client.name
        );
        assert_eq!(client.exit_code().await, 10, "{}", client.name);
    }
    // The mediator itself carries on: a new pair on the same hosts still matches.
    let again = connect_pair(&lab, "lab-cap-2", &dir, [&[], &[]], &["relay"]).await;
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_on_the_public_segment_never_sees_chat_text_or_the_room_name() {
    let lab = Lab::build(&Topology::pair(
        Spot::Behind(Symmetric),
        Spot::Behind(Symmetric),
    ));
    let tap = common::lab::Tap::start(&lab).await;
    let dir = common::TempDir::new("natlab-tap");
    let _mediator = lab.start_mediator(&[]).await;
    let room = format!("tap-room-{:08x}", rand::random::<u32>());
    let secret = format!("tap-secret-{:08x}", rand::random::<u32>());
    // Long enough that its ciphertext must show in the capture (the positive control).
    let long = long_line(7);
    let mut pair = connect_pair(&lab, &room, &dir, [&[], &[]], &["relay"]).await;
    pair.host.say(&secret).await;
    assert_eq!(pair.joiner.expect("message").await["text"], secret);
    pair.joiner.say(&long).await;
    assert_eq!(pair.host.expect("message").await["text"], long);
    // A few more round trips, so every earlier packet has left the capture buffer.
    for i in 0..3 {
        pair.host.say(&format!("tick {i}")).await;
        pair.joiner.expect("message").await;
    }
    let capture = tap.stop().await;
    let relayed = capture.tcp_payload_bytes(MEDIATOR_PORT);
    assert!(
        relayed >= 2 * long.len() as u64,
        "the tap saw only {relayed} payload bytes to or from the mediator: it is not seeing the relay"
    );
    for (what, needle) in [
        ("the room name", room.as_str()),
        ("a chat line", secret.as_str()),
        ("the long chat line", &long[..64]),
    ] {
        assert!(
            !capture.contains(needle.as_bytes()),
            "the tap saw {what} in clear"
        );
    }
}

/// Two mediators on the public host sharing one Redis (docs/protocol.md §18), as
/// behind a TCP load balancer: A on the usual port, B on the next. Returns them
/// with their `--server` arguments; alice goes to A and bob to B.
async fn two_mediators_sharing_redis(lab: &Lab) -> (Redis, [Mediator; 2], [String; 2]) {
    let redis = Redis::start_in(&lab.public_ns).await;
    let url = redis.url();
    let ports = [MEDIATOR_PORT, MEDIATOR_PORT + 1];
    let servers = ports.map(|port| format!("{MEDIATOR_IP}:{port}"));
    let a = Mediator::start_in(Some(&lab.public_ns), &servers[0], &["--redis", &url]).await;
    let b = Mediator::start_in(Some(&lab.public_ns), &servers[1], &["--redis", &url]).await;
    (redis, [a, b], servers)
}

/// Alice on mediator A, bob on mediator B, each behind a home router: B finds
/// alice's room in Redis, hands the match to A, and they punch through and chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_split_over_two_mediators_punches_through_two_home_routers() {
    let lab = Lab::build(&Topology::pair(
        Spot::Behind(HomeRouter),
        Spot::Behind(HomeRouter),
    ));
    let (_redis, _mediators, servers) = two_mediators_sharing_redis(&lab).await;
    let dir = common::TempDir::new("natlab-split");
    let [a, b] = [servers[0].as_str(), servers[1].as_str()];
    let mut pair =
        connect_pair_via(&lab, "lab-split-home", &dir, [&[], &[]], PUNCHED, [a, b]).await;
    chat_both_ways(&mut pair).await;
}

/// Alice on mediator A, bob on mediator B, both behind symmetric NATs: B
/// completed the match, so both are relayed through B (the tap sees the chat's
/// ciphertext on B's port, and only rendezvous on A's), and they chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_split_over_two_mediators_relays_through_the_one_that_matched() {
    let lab = Lab::build(&Topology::pair(
        Spot::Behind(Symmetric),
        Spot::Behind(Symmetric),
    ));
    let (_redis, _mediators, servers) = two_mediators_sharing_redis(&lab).await;
    let tap = common::lab::Tap::start(&lab).await;
    let dir = common::TempDir::new("natlab-split-relay");
    let [a, b] = [servers[0].as_str(), servers[1].as_str()];
    let mut pair = connect_pair_via(
        &lab,
        "lab-split-relay",
        &dir,
        [&[], &[]],
        &["relay"],
        [a, b],
    )
    .await;
    chat_both_ways(&mut pair).await;
    let long = long_line(11);
    pair.host.say(&long).await;
    assert_eq!(pair.joiner.expect("message").await["text"], long);
    for i in 0..3 {
        pair.joiner.say(&format!("tick {i}")).await;
        pair.host.expect("message").await;
    }
    let capture = tap.stop().await;
    let on_a = capture.tcp_payload_bytes(MEDIATOR_PORT);
    let on_b = capture.tcp_payload_bytes(MEDIATOR_PORT + 1);
    println!("payload bytes through mediator A: {on_a}, through B: {on_b}");
    assert!(
        on_b >= 2 * long.len() as u64,
        "B matched the pair, so B relays both legs: only {on_b} bytes on its port"
    );
    assert!(
        on_a < long.len() as u64,
        "A only did alice's rendezvous, yet {on_a} bytes crossed its port"
    );
}

/// A group room (§19) of three members, each behind its own router: the two
/// behind home routers punch through to each other, the one behind a symmetric
/// NAT reaches both through the relay, and a message reaches everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_behind_routers_punches_where_it_can_and_relays_the_rest() {
    let router = |kind| Site::Router { kind, hosts: 1 };
    let lab = Lab::build(&Topology {
        sites: vec![router(HomeRouter), router(HomeRouter), router(Symmetric)],
    });
    let dir = common::TempDir::new("natlab-group");
    let _mediator = lab.start_mediator(&[]).await;
    let names = ["ann", "ben", "sym"];
    let mut members = Vec::new();
    for (host, name) in names.iter().enumerate() {
        let args = lab.client_args(name, "lab-group", &dir, &["--group"]);
        let mut c = lab.start_client(host, name, &args);
        c.expect("group_joined").await;
        members.push(c);
    }
    let mut paths = std::collections::BTreeMap::new();
    for (i, c) in members.iter_mut().enumerate() {
        for _ in 0..2 {
            let e = c
                .expect_within("member_joined", Duration::from_secs(40))
                .await;
            let peer = e["peer"].as_str().unwrap().to_owned();
            let (a, b) = if names[i] < peer.as_str() {
                (names[i].to_owned(), peer)
            } else {
                (peer, names[i].to_owned())
            };
            paths
                .entry((a, b))
                .or_insert_with(Vec::new)
                .push(e["path"].as_str().unwrap().to_owned());
        }
    }
    println!("group paths: {paths:?}");
    let both = |a: &str, b: &str| paths[&(a.to_owned(), b.to_owned())].clone();
    for side in both("ann", "ben") {
        assert_eq!(side, "punched", "{paths:?}");
    }
    for side in both("ann", "sym").into_iter().chain(both("ben", "sym")) {
        assert_eq!(side, "relay", "{paths:?}");
    }
    members[2].say("from behind the symmetric nat").await;
    for c in &mut members[..2] {
        loop {
            let m = c.expect("group_message").await;
            if m["text"] == "from behind the symmetric nat" {
                assert_eq!(m["from"], "sym");
                break;
            }
        }
    }
}

/// `args` without `flag` and its value.
fn without(mut args: Vec<String>, flag: &str) -> Vec<String> {
    if let Some(at) = args.iter().position(|a| a == flag) {
        args.drain(at..at + 2);
    }
    args
}

/// docs/protocol.md §16.2: alice holds a token behind one home router with the
/// lab mediator as her `--server`; bob, behind another and with no mediator of
/// his own, cannot reach the token's addresses (alice's private LAN address)
/// and meets her at the mediator the token names, rung through presence; they
/// punch through, alice admits him, and they chat both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holder_and_dialer_behind_two_home_routers_meet_through_the_tokens_mediator() {
    let lab = Lab::build(&Topology::pair(
        Spot::Behind(HomeRouter),
        Spot::Behind(HomeRouter),
    ));
    let dir = common::TempDir::new("natlab-token");
    let _mediator = lab.start_mediator(&[]).await;
    let mut holder_args = vec!["token".to_string(), "--ttl".into(), "1h".into()];
    holder_args.extend(without(lab.client_args("alice", "", &dir, &[]), "--room"));
    let mut alice = lab.start_client(0, "alice", &holder_args);
    let event = alice.expect("token").await;
    let text = event["token"].as_str().unwrap().to_owned();
    let token = wire::token::Token::parse(&text).unwrap();
    assert_eq!(token.mediator, Some(lab.server()), "{event}");
    assert!(
        token.addrs.iter().all(|a| a.ip() == lab.hosts[0].addr),
        "the token names only alice's private address: {token:?}"
    );
    let dialer_args = without(
        without(
            lab.client_args("bob", "", &dir, &["--connect", &text]),
            "--room",
        ),
        "--server",
    );
    let mut bob = lab.start_client(1, "bob", &dialer_args);
    let ask = alice.expect("admission").await;
    assert_eq!(ask["peer"], "bob", "{ask}");
    alice.say("/accept").await;
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["sas"], b["sas"], "both screens show the same SAS");
    for event in [&a, &b] {
        assert_eq!(event["path"], "punched", "{event}");
    }
    assert_eq!(
        b["fingerprint"],
        dhke::IdentityKey(token.identity)
            .fingerprint()
            .to_string()
            .as_str(),
        "bob reached the identity the token names"
    );
    assert!(
        bob.seen.iter().any(|e| e["text"]
            .as_str()
            .is_some_and(|t| t.contains("No direct connection to the token's holder"))),
        "bob's direct dials failed first: {:?}",
        bob.seen
    );
    let mut pair = Pair {
        host: alice,
        joiner: bob,
        paths: ["punched".into(), "punched".into()],
    };
    chat_both_ways(&mut pair).await;
}
