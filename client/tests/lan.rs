//! LAN mode (no `--server`) on loopback: two clients in one room find each other
//! by UDP and chat over path `lan`, other rooms never match, a drop sends both
//! back to announcing, and garbage, forged, stale and replayed datagrams are
//! dropped and counted without a crash. Every client is limited to `lo` and each
//! test uses its own UDP port, so tests never meet each other or the network.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{free_udp_port, lan_client_args as args, last, peers_file, Client, TempDir};
use dhke::{Group, RoomCode};
use engine::lan::{Discovery, LanConfig, Us};
use rand::{Rng, RngCore};
use wire::lan::{Announcement, INSTANCE_LEN, NONCE_LEN};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A socket on the LAN port beside the clients (it hears their broadcasts) that
/// can broadcast to them on loopback.
fn test_socket(port: u16) -> std::net::UdpSocket {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_broadcast(true).unwrap();
    // Hear loopback only, like the clients with `--lan-interface lo`.
    s.bind_device(Some(b"lo")).unwrap();
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
        .unwrap();
    let s: std::net::UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn loopback_broadcast(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 255, 255, 255), port))
}

/// Removes terminal colour sequences from log text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The counter `name=N` from the last "LAN datagrams dropped" debug line.
fn dropped(stderr: &str, name: &str) -> u64 {
    let text = strip_ansi(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("LAN datagrams dropped"))
        .unwrap_or_else(|| panic!("no drop counter line in the log:\n{text}"));
    let key = format!(" {name}=");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no `{name}` in {line}"))
        + key.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`{name}` is not a number in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_two_clients_on_loopback_without_a_server_chat_over_path_lan() {
    let dir = TempDir::new("lan-chat");
    let port = free_udp_port();
    let room = "4-quiet-lantern";
    let started = std::time::Instant::now();
    let mut alice = Client::start("alice", &args("alice", &dir, port, &["--room", room]));
    alice.expect("waiting").await;
    let mut bob = Client::start("bob", &args("bob", &dir, port, &["--room", room]));
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    eprintln!("found each other and connected in {:?}", started.elapsed());
    assert_eq!(a["path"], "lan");
    assert_eq!(b["path"], "lan");
    assert_eq!(a["sas"], b["sas"], "both screens show the same code");
    assert_eq!(a["peer"], "bob");
    assert_eq!(b["peer"], "alice");
    let mut roles = [a["role"].as_str().unwrap(), b["role"].as_str().unwrap()];
    roles.sort();
    assert_eq!(roles, ["host", "joiner"], "one hosts, one joins");

    alice.say("hello over the lan").await;
    let m = bob.expect("message").await;
    assert_eq!(m["from"], "alice");
    assert_eq!(m["text"], "hello over the lan");
    bob.say("hi alice").await;
    assert_eq!(alice.expect("message").await["text"], "hi alice");

    bob.say("/quit").await;
    assert_eq!(bob.exit_code().await, 0);
    assert_eq!(alice.exit_code().await, 0);
    let line = std::fs::read_to_string(peers_file(&dir, "alice")).unwrap();
    let fields: Vec<&str> = line.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 6, "{line:?}");
    assert_eq!((fields[1], fields[3], fields[4]), ("bob", room, "lan"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_a_client_in_another_room_is_never_matched_and_exits_14() {
    let dir = TempDir::new("lan-rooms");
    let port = free_udp_port();
    let quick = ["--lan-timeout", "3s", "--log", "engine=debug"];
    let mut alice = Client::start_env(
        "alice",
        &args(
            "alice",
            &dir,
            port,
            &[&["--room", "room-one"][..], &quick].concat(),
        ),
        &[("NO_COLOR", "1")],
    );
    let mut carol = Client::start_env(
        "carol",
        &args(
            "carol",
            &dir,
            port,
            &[&["--room", "room-two"][..], &quick].concat(),
        ),
        &[("NO_COLOR", "1")],
    );
    assert_eq!(alice.exit_code().await, 14);
    assert_eq!(carol.exit_code().await, 14);
    for c in [&mut alice, &mut carol] {
        let events = c.drain().await;
        assert!(
            !events.iter().any(|e| e["event"] == "matched"),
            "{}: matched someone from another room: {events:?}",
            c.name
        );
        let err = last(c, "error");
        assert_eq!(err["code"], "lan_timeout");
        let text = err["text"].as_str().unwrap();
        for hint in [
            "--server",
            "UDP port",
            "firewall",
            "Wi-Fi",
            "different network",
        ] {
            assert!(text.contains(hint), "message names `{hint}`: {text}");
        }
        // They did hear each other: the other room's announcements fail the MAC.
        assert!(dropped(&c.stderr(), "mac") > 0, "{}", c.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_after_a_drop_both_go_back_to_announcing_and_meet_again() {
    let dir = TempDir::new("lan-drop");
    let port = free_udp_port();
    let room = "9-amber-kettle";
    let mut alice = Client::start("alice", &args("alice", &dir, port, &["--room", room]));
    alice.expect("waiting").await;
    let mut bob = Client::start("bob", &args("bob", &dir, port, &["--room", room]));
    alice.expect("connected").await;
    bob.expect("connected").await;
    bob.kill_hard().await;
    alice.expect("reconnecting").await;
    let mut bob2 = Client::start("bob", &args("bob", &dir, port, &["--room", room]));
    let a = alice.expect("connected").await;
    let b = bob2.expect("connected").await;
    assert_eq!(a["path"], "lan");
    assert_eq!(a["sas"], b["sas"]);
    bob2.say("back again").await;
    assert_eq!(alice.expect("message").await["text"], "back again");
    let lines = std::fs::read_to_string(peers_file(&dir, "alice")).unwrap();
    assert_eq!(lines.lines().count(), 2, "two sessions recorded: {lines}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_garbage_forged_stale_and_reflected_datagrams_are_counted_and_never_match() {
    let dir = TempDir::new("lan-garbage");
    let port = free_udp_port();
    let room = "3-paper-comet";
    let listen = test_socket(port);
    let mut alice = Client::start_env(
        "alice",
        &args(
            "alice",
            &dir,
            port,
            &[
                "--room",
                room,
                "--lan-timeout",
                "6s",
                "--log",
                "engine=debug",
            ],
        ),
        &[("NO_COLOR", "1")],
    );
    alice.expect("waiting").await;
    // Capture one of alice's announcements.
    let mut buf = [0u8; 2048];
    let captured = tokio::task::spawn_blocking(move || {
        let (n, _) = listen.recv_from(&mut buf).expect("alice announces");
        (listen, buf[..n].to_vec())
    });
    let (listen, captured) = captured.await.unwrap();
    let key = wire::lan::lan_key(&RoomCode::parse(room));
    assert!(wire::lan::open(&key, &captured, now_ms()).is_ok());
    let to = loopback_broadcast(port);
    let mut rng = rand::thread_rng();
    let mut sent = std::collections::HashMap::<&str, u64>::new();
    let mut total = 0u32;
    let mut send = |what: &'static str, d: &[u8]| {
        listen.send_to(d, to).unwrap();
        *sent.entry(what).or_default() += 1;
        // Loopback loses nothing while the receiver keeps up, but a burst of
        // 400 datagrams (each charged ~2 KiB) overflows a default receive
        // buffer of ~208 KiB when alice is off the CPU: a breath every 8.
        total += 1;
        if total % 8 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    for _ in 0..300 {
        let len = rng.gen_range(0..1500);
        let mut junk = vec![0u8; len];
        rng.fill_bytes(&mut junk);
        send("junk", &junk);
    }
    for cut in [0, 1, 4, 5, 28, 60] {
        send("short", &captured[..cut]);
    }
    for i in (0..captured.len()).step_by(7) {
        let mut bad = captured.clone();
        bad[i] ^= 0x40;
        send("flipped", &bad);
    }
    let mut other_version = captured.clone();
    other_version[4] = 9;
    send("version", &other_version);
    // Reflection: alice's own announcement sent back to her.
    send("own", &captured);
    send("own", &captured);
    // A member's announcement captured over 30 s ago, and one dated ahead.
    let fake = Announcement {
        instance: [0x42; INSTANCE_LEN],
        name: "mallory".into(),
        group: 14,
        public: vec![2; 256],
        listen_port: 1,
        addrs: vec![],
    };
    let old = wire::lan::seal(&key, &fake, [1; NONCE_LEN], now_ms() - 60_000).unwrap();
    send("stale", &old);
    let ahead = wire::lan::seal(&key, &fake, [2; NONCE_LEN], now_ms() + 60_000).unwrap();
    send("future", &ahead);

    assert_eq!(alice.exit_code().await, 14, "stderr: {}", alice.stderr());
    let events = alice.drain().await;
    assert!(
        !events.iter().any(|e| e["event"] == "matched"),
        "{events:?}"
    );
    assert_eq!(last(&alice, "error")["code"], "lan_timeout");
    let log = alice.stderr();
    assert!(!log.contains("panicked"), "{log}");
    // Paced, loopback loses no datagram: every kind shows in its counter.
    assert!(dropped(&log, "size") >= 6, "{log}");
    assert!(
        dropped(&log, "magic") + dropped(&log, "size") >= sent["junk"] + sent["short"] - 1,
        "{log}"
    );
    assert!(
        dropped(&log, "mac") + dropped(&log, "magic") >= sent["flipped"] - 1,
        "{log}"
    );
    assert!(dropped(&log, "version") >= 1, "{log}");
    assert!(dropped(&log, "own") >= 2, "{log}");
    assert_eq!(dropped(&log, "stale"), 1, "{log}");
    assert_eq!(dropped(&log, "future"), 1, "{log}");
}

fn lo_config(port: u16) -> LanConfig {
    LanConfig::new(port, Duration::from_secs(30), vec!["lo".into()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_socket_loop_accepts_an_announcement_once_and_drops_its_replays() {
    let port = free_udp_port();
    let room = "6-silver-fjord";
    let public = vec![3u8; 256];
    let us = Us {
        name: "alice",
        group: Group::Modp2048,
        public: &public,
        listen: "127.0.0.1:4000".parse().unwrap(),
        advertise: None,
    };
    let config = lo_config(port);
    let mut discovery = Discovery::bind(&config, room, us).expect("bind the LAN port");
    let key = wire::lan::lan_key(&RoomCode::parse(room));
    let bob = Announcement {
        instance: [0x77; INSTANCE_LEN],
        name: "bob".into(),
        group: 14,
        public: vec![2; 256],
        listen_port: 5000,
        addrs: vec!["127.0.0.1:5000".parse().unwrap()],
    };
    let sealed = wire::lan::seal(&key, &bob, [9; NONCE_LEN], now_ms()).unwrap();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.set_broadcast(true).unwrap();
    sender.send_to(&sealed, loopback_broadcast(port)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let found = discovery
        .next_peer(deadline, |_| {})
        .await
        .expect("bob's announcement is found");
    assert_eq!(found.announcement, bob);
    let matched = found.matched(&config.instance, &[]);
    assert_eq!(matched.peer_name, "bob");
    assert_eq!(matched.listen_port, 5000);

    for _ in 0..5 {
        sender.send_to(&sealed, loopback_broadcast(port)).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    assert!(
        discovery.next_peer(deadline, |_| {}).await.is_none(),
        "a replay is not a new peer"
    );
    assert_eq!(discovery.counts().repeated, 5, "{}", discovery.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_a_flood_of_room_members_is_bounded_to_a_fixed_number_of_candidates() {
    let port = free_udp_port();
    let room = "2-iron-meadow";
    let public = vec![3u8; 384];
    let us = Us {
        name: "alice",
        group: Group::Modp3072,
        public: &public,
        listen: "127.0.0.1:4000".parse().unwrap(),
        advertise: None,
    };
    let mut discovery = Discovery::bind(&lo_config(port), room, us).expect("bind the LAN port");
    let key = wire::lan::lan_key(&RoomCode::parse(room));
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.set_broadcast(true).unwrap();
    // 40 members that use the other group: heard, never matched.
    let flood = 40u8;
    for i in 0..flood {
        let member = Announcement {
            instance: [i; INSTANCE_LEN],
            name: format!("m{i}"),
            group: 14,
            public: vec![2; 256],
            listen_port: 5000,
            addrs: vec![],
        };
        let mut nonce = [0u8; NONCE_LEN];
        nonce[0] = i;
        let sealed = wire::lan::seal(&key, &member, nonce, now_ms()).unwrap();
        sender.send_to(&sealed, loopback_broadcast(port)).unwrap();
    }
    let mut warned = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    assert!(discovery
        .next_peer(deadline, |g| warned.push(g))
        .await
        .is_none());
    assert_eq!(warned, vec![14], "one warning about the other group");
    let kept = discovery.other_group();
    assert_eq!(
        kept,
        engine::lan::MAX_CANDIDATES as u64,
        "only this many are tracked"
    );
    assert_eq!(discovery.crowded(), u64::from(flood) - kept);
}
