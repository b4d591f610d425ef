//! End-to-end tests of issue 4 with the real `mediator` and `client` binaries on
//! loopback: chat both ways, generated room codes, strangers, a lying mediator,
//! tampering and eavesdropping proxies, retries, and every documented failure.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fake_mediator::{FakeMediator, Lie};
use common::proxy::{FlipBit, Proxy};
use common::{client_args as args, free_port, peers_file, Client, Mediator, TempDir};
use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use wire::{FrameCodec, Link, PeerHandshake};

fn peers_lines(dir: &TempDir, name: &str) -> Vec<String> {
    std::fs::read_to_string(peers_file(dir, name))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Checks one `peers.txt` line field by field.
fn check_peers_line(line: &str, peer: &str, room: &str, path: &str, sas: &str) {
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 6, "six tab-separated fields: {line:?}");
    chrono::DateTime::parse_from_rfc3339(fields[0]).expect("RFC 3339 time");
    assert!(fields[0].ends_with('Z'), "UTC time: {}", fields[0]);
    assert_eq!(fields[1], peer);
    let addr: SocketAddr = fields[2].parse().expect("ip:port");
    assert!(addr.ip().is_loopback());
    assert_eq!(fields[3], room);
    assert_eq!(fields[4], path);
    assert_eq!(fields[5], sas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_both_ways_and_record_the_session() {
    let dir = TempDir::new("chat");
    let med = Mediator::start(&[]).await;
    let room = "7-velvet-harbor";
    let mut alice = Client::start(
        "alice",
        &args(&med.server_arg(), "alice", &dir, &["--room", room]),
    );
    alice.expect("waiting").await;
    let mut bob = Client::start(
        "bob",
        &args(&med.server_arg(), "bob", &dir, &["--room", room]),
    );
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["sas"], b["sas"], "both screens show the same code");
    let sas = a["sas"].as_str().unwrap().to_string();
    assert!(
        sas.len() == 7
            && sas.as_bytes()[3] == b' '
            && sas.replace(' ', "").chars().all(|c| c.is_ascii_digit()),
        "SAS looks like `482 093`: {sas}"
    );
    assert_eq!(a["role"], "host");
    assert_eq!(b["role"], "joiner");
    assert_eq!(a["peer"], "bob");
    assert_eq!(b["peer"], "alice");
    assert_eq!(a["path"], "direct");
    assert_eq!(b["path"], "direct");

    alice.say("hello bob").await;
    let m = bob.expect("message").await;
    assert_eq!(m["from"], "alice");
    assert_eq!(m["text"], "hello bob");
    let sent = alice.expect("sent").await;
    assert_eq!(alice.expect("ack").await["id"], sent["id"]);

    bob.say("hi alice, \u{1b}[31mred\u{1b}[0m").await;
    let m = alice.expect("message").await;
    assert_eq!(m["from"], "bob");
    assert_eq!(
        m["text"], "hi alice, \u{1b}[31mred\u{1b}[0m",
        "JSON carries the exact text"
    );

    bob.say("/verify").await;
    assert_eq!(bob.expect("verify").await["sas"], sas);
    bob.say("/peers").await;
    let p = bob.expect("peer").await;
    assert_eq!(p["name"], "alice");
    assert_eq!(p["path"], "direct");

    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    let bye = bob.expect("disconnected").await;
    assert!(
        bye["reason"].as_str().unwrap().contains("alice left"),
        "{bye}"
    );
    assert_eq!(bob.exit_code().await, 0);

    let a_lines = peers_lines(&dir, "alice");
    let b_lines = peers_lines(&dir, "bob");
    assert_eq!(a_lines.len(), 1, "{a_lines:?}");
    assert_eq!(b_lines.len(), 1, "{b_lines:?}");
    check_peers_line(&a_lines[0], "bob", room, "direct", &sas);
    check_peers_line(&b_lines[0], "alice", room, "direct", &sas);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_mode_shows_sanitized_messages() {
    let dir = TempDir::new("line");
    let med = Mediator::start(&[]).await;
    let mut alice = Client::start(
        "alice",
        &args(&med.server_arg(), "alice", &dir, &["--room", "r-line"]),
    );
    alice.expect("waiting").await;
    // Bob in line mode: no --json.
    let mut bob_args = args(&med.server_arg(), "bob", &dir, &["--room", "r-line"]);
    bob_args.retain(|a| a != "--json");
    let bob = tokio::process::Command::new(common::client_bin())
        .args(&bob_args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    alice.expect("connected").await;
    alice
        .say("evil \u{1b}]0;pwned\u{7} \u{1b}[2Jtext\rover")
        .await;
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    let out = tokio::time::timeout(common::WAIT, bob.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Security code:"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("alice: evil"))
        .unwrap_or_else(|| panic!("message line missing: {text}"));
    assert!(
        line.starts_with('[') && line.as_bytes()[9] == b']',
        "[HH:MM:SS] prefix: {line}"
    );
    assert!(line.ends_with("alice: evil  text over"), "{line:?}");
    assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{7}'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_room_code_works_for_the_other_side() {
    let dir = TempDir::new("gen");
    let med = Mediator::start(&[]).await;
    let mut alice = Client::start("alice", &args(&med.server_arg(), "alice", &dir, &[]));
    let room = alice.expect("room").await;
    let code = room["room"].as_str().unwrap().to_string();
    let command = room["command"].as_str().unwrap();
    assert!(command.contains(&format!("--room {code}")), "{command}");
    assert!(command.contains(&med.server_arg()), "{command}");
    assert_eq!(code.split('-').count(), 5, "number and four words: {code}");
    alice.expect("waiting").await;
    let mut bob = Client::start(
        "bob",
        &args(&med.server_arg(), "bob", &dir, &["--room", &code]),
    );
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["sas"], b["sas"]);
    alice.close_input();
    assert_eq!(alice.exit_code().await, 0);
    assert_eq!(bob.exit_code().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_at_the_host_port_is_rejected_and_the_joiner_gets_through() {
    let dir = TempDir::new("stranger");
    let med = Mediator::start(&[]).await;
    // Alice advertises a port that opens only after the stranger was turned
    // away, so the stranger surely reaches her first.
    let alice_port = free_port();
    let listen: SocketAddr = format!("127.0.0.1:{alice_port}").parse().unwrap();
    let late: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut alice_args = args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--room", "r-str", "--no-punch", "--no-relay"],
    );
    common::set_flag(&mut alice_args, "--listen", &listen.to_string());
    common::set_flag(&mut alice_args, "--advertise", &late.to_string());
    let mut alice = Client::start("alice", &alice_args);
    alice.expect("waiting").await;
    let mut bob = Client::start(
        "bob",
        &args(
            &med.server_arg(),
            "bob",
            &dir,
            &["--room", "r-str", "--no-punch", "--no-relay"],
        ),
    );
    alice.expect("matched").await;
    bob.expect("matched").await;

    let stream = tokio::net::TcpStream::connect(listen).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
    let hello = PeerHandshake::PeerHello {
        room: [7; 32],
        public: vec![5; 256],
        commit: [0; 32],
        resume: None,
        identity: [9; 32],
    };
    framed
        .send(wire::encode(&hello).unwrap().as_slice())
        .await
        .unwrap();
    let frame = tokio::time::timeout(common::WAIT, framed.next())
        .await
        .expect("the host answers the stranger")
        .expect("a frame")
        .expect("frame ok");
    let msg: PeerHandshake = wire::decode(&frame).unwrap();
    assert!(matches!(msg, PeerHandshake::Reject { .. }), "{msg:?}");
    let rejected = alice.expect("rejected").await;
    assert!(rejected["addr"].as_str().unwrap().starts_with("127.0.0.1:"));

    let _door = Proxy::start(late, listen, None).await;
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["sas"], b["sas"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn man_in_the_middle_shows_as_different_codes() {
    let dir = TempDir::new("mitm");
    let room = "r-mitm";
    let mut fake = FakeMediator::start(Lie::ManInTheMiddle { room: room.into() }).await;
    let server = fake.addr.to_string();
    let mut alice = Client::start("alice", &args(&server, "alice", &dir, &["--room", room]));
    alice.expect("waiting").await;
    let mut bob = Client::start("bob", &args(&server, "bob", &dir, &["--room", room]));
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    let legs = tokio::time::timeout(common::WAIT, fake.mitm.take().unwrap())
        .await
        .unwrap()
        .unwrap();
    // Each leg completed honestly with the attacker...
    assert_eq!(a["sas"], legs.with_host.as_str());
    assert_eq!(b["sas"], legs.with_joiner.as_str());
    // ...and that is exactly what the people see when they compare codes.
    assert_ne!(
        a["sas"], b["sas"],
        "a man in the middle must show as differing codes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mediator_pairing_different_rooms_gives_keys_differ() {
    let dir = TempDir::new("rooms");
    let fake = FakeMediator::start(Lie::PairAnyRooms).await;
    let server = fake.addr.to_string();
    let mut alice = Client::start(
        "alice",
        &args(
            &server,
            "alice",
            &dir,
            &["--room", "room-one", "--connect-timeout", "5s"],
        ),
    );
    alice.expect("waiting").await;
    let mut bob = Client::start("bob", &args(&server, "bob", &dir, &["--room", "room-two"]));
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "keys_differ", "{err}");
    assert!(err["text"]
        .as_str()
        .unwrap()
        .contains("wrong room, or someone in the middle"));
    assert_eq!(bob.exit_code().await, 7);
    assert!(
        peers_lines(&dir, "bob").is_empty(),
        "no session, no peers line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_on_the_direct_link_ends_the_session_with_an_integrity_error() {
    let dir = TempDir::new("flip");
    let med = Mediator::start(&[]).await;
    // Alice advertises the proxy; the proxy forwards to her real listener and
    // flips a bit in the first record bob sends (frames 0 and 1 are the handshake).
    let alice_port = free_port();
    let alice_listen = format!("127.0.0.1:{alice_port}");
    let proxy = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        alice_listen.parse().unwrap(),
        Some(FlipBit { frame_index: 2 }),
    )
    .await;
    let mut alice_args = args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--room", "r-flip", "--no-punch", "--no-relay"],
    );
    common::set_flag(&mut alice_args, "--listen", &alice_listen);
    common::set_flag(&mut alice_args, "--advertise", &proxy.addr.to_string());
    let mut alice = Client::start("alice", &alice_args);
    alice.expect("waiting").await;
    // Bob cannot tell tampering from a dropped link, so he tries to reconnect;
    // with alice gone he gives up after --reconnect-for.
    let mut bob = Client::start(
        "bob",
        &args(
            &med.server_arg(),
            "bob",
            &dir,
            &[
                "--room",
                "r-flip",
                "--reconnect-for",
                "2s",
                "--no-punch",
                "--no-relay",
            ],
        ),
    );
    bob.expect("connected").await;
    bob.say("this must never be shown").await;
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "integrity", "{err}");
    assert_eq!(alice.exit_code().await, 9);
    let events = alice.drain().await;
    assert!(
        !events.iter().any(|e| e["event"] == "message"),
        "no plaintext from a damaged session: {events:?}"
    );
    let code = bob.exit_code().await;
    assert_eq!(
        code, 10,
        "bob sees the connection drop and gives up reconnecting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eavesdroppers_see_no_text_and_the_mediator_no_chat_byte() {
    let dir = TempDir::new("tap");
    let med = Mediator::start(&[]).await;
    // Every byte to and from the mediator passes a recording proxy...
    let med_tap = Proxy::start("127.0.0.1:0".parse().unwrap(), med.addr, None).await;
    // ...and so does the direct link.
    let alice_port = free_port();
    let alice_listen = format!("127.0.0.1:{alice_port}");
    let link_tap = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        alice_listen.parse().unwrap(),
        None,
    )
    .await;
    let server = med_tap.addr.to_string();
    let mut alice_args = args(
        &server,
        "alice",
        &dir,
        &["--room", "r-tap", "--no-punch", "--no-relay"],
    );
    common::set_flag(&mut alice_args, "--listen", &alice_listen);
    common::set_flag(&mut alice_args, "--advertise", &link_tap.addr.to_string());
    let mut alice = Client::start("alice", &alice_args);
    alice.expect("waiting").await;
    let mut bob = Client::start(
        "bob",
        &args(
            &server,
            "bob",
            &dir,
            &["--room", "r-tap", "--no-punch", "--no-relay"],
        ),
    );
    alice.expect("connected").await;
    bob.expect("connected").await;
    let secrets = ["purple-zebra-says-4711", "the vault code is 31337"];
    alice.say(secrets[0]).await;
    assert_eq!(bob.expect("message").await["text"], secrets[0]);
    bob.say(secrets[1]).await;
    assert_eq!(alice.expect("message").await["text"], secrets[1]);
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);

    let on_link = link_tap.bytes();
    let at_mediator = med_tap.bytes();
    assert!(
        on_link.len() > 500,
        "the tap saw the session ({} bytes)",
        on_link.len()
    );
    assert!(!at_mediator.is_empty());
    for secret in secrets {
        for (what, bytes) in [("direct link", &on_link), ("mediator", &at_mediator)] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "`{secret}` visible on the {what}"
            );
        }
    }
    // The room name never reaches the mediator either.
    assert!(!at_mediator.windows(5).any(|w| w == b"r-tap"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_keeps_retrying_until_the_host_is_reachable() {
    let dir = TempDir::new("retry");
    let med = Mediator::start(&[]).await;
    let alice_port = free_port();
    let alice_listen = format!("127.0.0.1:{alice_port}");
    // Alice advertises a port where nothing listens for the first 2 s.
    let late_port = free_port();
    let late: SocketAddr = format!("127.0.0.1:{late_port}").parse().unwrap();
    let mut alice_args = args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--room", "r-late", "--no-punch", "--no-relay"],
    );
    common::set_flag(&mut alice_args, "--listen", &alice_listen);
    common::set_flag(&mut alice_args, "--advertise", &late.to_string());
    let mut alice = Client::start("alice", &alice_args);
    alice.expect("waiting").await;
    let mut bob = Client::start(
        "bob",
        &args(
            &med.server_arg(),
            "bob",
            &dir,
            &["--room", "r-late", "--no-punch", "--no-relay"],
        ),
    );
    bob.expect("matched").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _proxy = Proxy::start(late, alice_listen.parse().unwrap(), None).await;
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["sas"], b["sas"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mediator_down_or_wrong_port_exits_3_with_advice() {
    let dir = TempDir::new("down");
    // Nothing listens on this port.
    let server = format!("127.0.0.1:{}", free_port());
    let mut c = Client::start("alice", &args(&server, "alice", &dir, &["--room", "x"]));
    let err = c.expect("error").await;
    assert_eq!(err["code"], "mediator_unreachable");
    let text = err["text"].as_str().unwrap();
    assert!(
        text.contains(&server) && text.contains("Is `mediator` running"),
        "{text}"
    );
    assert_eq!(c.exit_code().await, 3);

    // A live mediator, but the client names the wrong port.
    let med = Mediator::start(&[]).await;
    let wrong = format!(
        "127.0.0.1:{}",
        if med.addr.port() == 65535 {
            1
        } else {
            med.addr.port() + 1
        }
    );
    let mut c = Client::start("bob", &args(&wrong, "bob", &dir, &["--room", "x"]));
    assert_eq!(c.expect("error").await["code"], "mediator_unreachable");
    assert_eq!(c.exit_code().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_code_typo_waits_then_times_out_with_exit_5() {
    let dir = TempDir::new("typo");
    let med = Mediator::start(&["--room-ttl", "2s"]).await;
    let mut alice = Client::start(
        "alice",
        &args(
            &med.server_arg(),
            "alice",
            &dir,
            &["--room", "7-velvet-harbor"],
        ),
    );
    let mut bob = Client::start(
        "bob",
        &args(
            &med.server_arg(),
            "bob",
            &dir,
            &["--room", "7-velvet-harbour"],
        ),
    );
    alice.expect("waiting").await;
    bob.expect("waiting").await;
    for c in [&mut alice, &mut bob] {
        let err = c.expect("error").await;
        assert_eq!(err["code"], "timeout");
        assert!(
            err["text"]
                .as_str()
                .unwrap()
                .contains("Check the room code"),
            "{err}"
        );
        assert_eq!(c.exit_code().await, 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host_exits_6_and_bad_flags_exit_2_or_8() {
    let dir = TempDir::new("unreach");
    let med = Mediator::start(&[]).await;
    // Every announced address is dead, and so is the offered relay: exit 6.
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    for (relay, code, exit) in [(true, "peer_unreachable", 6), (false, "no_path", 12)] {
        let fake = FakeMediator::start(Lie::DeadEnds { dead, relay }).await;
        let server = fake.addr.to_string();
        let mut alice = Client::start(
            "alice",
            &args(
                &server,
                "alice",
                &dir,
                &[
                    "--room",
                    "r-dead",
                    "--connect-timeout",
                    "3s",
                    "--relay-after",
                    "1s",
                ],
            ),
        );
        alice.expect("waiting").await;
        let mut bob = Client::start(
            "bob",
            &args(
                &server,
                "bob",
                &dir,
                &[
                    "--room",
                    "r-dead",
                    "--connect-timeout",
                    "2s",
                    "--relay-after",
                    "1s",
                ],
            ),
        );
        let err = bob.expect("error").await;
        assert_eq!(err["code"], code);
        let text = err["text"].as_str().unwrap();
        assert!(text.contains(&dead.to_string()), "{err}");
        if !relay {
            assert!(text.contains("--relay off"), "{err}");
        }
        assert_eq!(bob.exit_code().await, exit);
        assert_eq!(alice.exit_code().await, exit, "the host gives up too");
    }

    // A port that is already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut carol = args(&med.server_arg(), "carol", &dir, &["--room", "r-x"]);
    common::set_flag(&mut carol, "--listen", &format!("127.0.0.1:{port}"));
    let mut c = Client::start("carol", &carol);
    assert_eq!(c.expect("error").await["code"], "listen_failed");
    assert_eq!(c.exit_code().await, 8);

    // A bad name never reaches the mediator.
    let mut c = Client::start(
        "dave",
        &args(&med.server_arg(), "x\u{7}y", &dir, &["--room", "r-x"]),
    );
    assert_eq!(c.expect("error").await["code"], "usage");
    assert_eq!(c.exit_code().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keylog_lines_match_on_both_sides() {
    let dir = TempDir::new("keylog");
    let med = Mediator::start(&[]).await;
    let log = dir.join("keys.log");
    let log_str = log.display().to_string();
    let env = [("P2PCHAT_KEYLOG", log_str.as_str())];
    let mut alice = Client::start_env(
        "alice",
        &args(&med.server_arg(), "alice", &dir, &["--room", "r-k"]),
        &env,
    );
    let warning = alice.expect("info").await;
    assert!(warning["text"].as_str().unwrap().contains("P2PCHAT_KEYLOG"));
    alice.expect("waiting").await;
    let mut bob = Client::start_env(
        "bob",
        &args(&med.server_arg(), "bob", &dir, &["--room", "r-k"]),
        &env,
    );
    alice.expect("connected").await;
    bob.expect("connected").await;
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    assert_eq!(bob.exit_code().await, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], lines[1], "both sides log the same keys");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(fields[0], "P2PCHAT_V1");
    assert_eq!(fields.len(), 7);
    assert_eq!(fields[2].len(), 2 * 256, "Z is len(p) bytes for group 14");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
