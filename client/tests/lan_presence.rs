//! LAN presence end to end (docs/protocol.md §14.4): two contacts whose
//! messengers run with no mediator and no room find each other on the local
//! network by themselves and chat; what a stranger on that network hears (every
//! datagram on the LAN port, captured on the bridge) names neither of them: no
//! name, no identity key, no fingerprint. Once on loopback (no root needed),
//! once in a namespace LAN (needs root).

mod common;

use common::lan_lab::{Host, LanLab, LanTap};
use common::{client_bin, contains, identity_forms, lan_client_args, peers_file, Client, TempDir};

/// Distinctive names, so finding one in a capture is no accident.
const ALICE: &str = "alice-lanpres";
const BOB: &str = "bob-lanpres";

/// Both messengers are up with no room and no server: they connect by
/// themselves (each opens the other's contact conversation), bob writes, alice
/// reads, and back.
async fn they_meet_and_chat(alice: &mut Client, bob: &mut Client) {
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["conversation"]["label"], format!("contact {BOB}"), "{a}");
    assert_eq!(
        b["conversation"]["label"],
        format!("contact {ALICE}"),
        "{b}"
    );
    // Each shows the name it knows the other by, though none went on the air.
    assert_eq!(a["peer"], BOB, "{a}");
    assert_eq!(b["peer"], ALICE, "{b}");
    assert_eq!(a["path"], "lan", "{a}");
    assert_eq!(a["sas"], b["sas"]);
    assert_eq!(a["verified"], false, "{a}");
    bob.say("found you with no server").await;
    let m = alice.expect("message").await;
    assert_eq!(m["text"], "found you with no server", "{m}");
    alice.say("and no code").await;
    assert_eq!(bob.expect("message").await["text"], "and no code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_on_loopback_find_each_other_with_no_server_and_no_room() {
    let dir = TempDir::new("lanpres-lo");
    let port = common::free_udp_port();
    // They meet once with a room code, which makes them contacts.
    let meet = |name: &str| lan_client_args(name, &dir, port, &["--room", "lanpres-meet-lo"]);
    let (mut first, mut second) = common::connected_pair(&meet(ALICE), &meet(BOB)).await;
    first.say("/close").await;
    assert_eq!(first.exit_code().await, 0);
    assert_eq!(second.exit_code().await, 0);

    let mut alice = Client::start(ALICE, &lan_client_args(ALICE, &dir, port, &[]));
    let mut bob = Client::start(BOB, &lan_client_args(BOB, &dir, port, &[]));
    they_meet_and_chat(&mut alice, &mut bob).await;
    // No fresh room was opened (it would announce their names): one
    // conversation each, the contact's.
    for c in [&mut alice, &mut bob] {
        assert!(
            !c.seen.iter().any(|e| e["event"] == "room"),
            "{}: {:?}",
            c.name,
            c.seen
        );
    }
    bob.say("/quit").await;
    assert_eq!(bob.exit_code().await, 0);
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_messenger_on_the_lan_is_called_by_a_contact_with_nothing_typed_on_its_side() {
    let dir = TempDir::new("lanpres-call");
    let port = common::free_udp_port();
    let meet = |name: &str| lan_client_args(name, &dir, port, &["--room", "lanpres-meet-call"]);
    let (mut first, mut second) = common::connected_pair(&meet(ALICE), &meet(BOB)).await;
    first.say("/close").await;
    assert_eq!(first.exit_code().await, 0);
    assert_eq!(second.exit_code().await, 0);

    let mut alice = Client::start(ALICE, &lan_client_args(ALICE, &dir, port, &[]));
    alice.expect("info").await;
    // Bob announces no presence of his own: only his conversation's call
    // (`--to`, no server) can reach her.
    let mut bob = Client::start(
        BOB,
        &lan_client_args(BOB, &dir, port, &["--to", ALICE, "--no-presence"]),
    );
    bob.say("are you there, alice?").await;
    let connected = alice.expect("connected").await;
    assert_eq!(
        connected["conversation"]["label"],
        format!("contact {BOB}"),
        "{connected}"
    );
    let m = alice.expect("message").await;
    assert_eq!(m["text"], "are you there, alice?", "{m}");
    bob.expect("connected").await;
    alice.say("here I am").await;
    assert_eq!(bob.expect("message").await["text"], "here I am");
    // He leaves; her messenger stays up for the next contact.
    bob.close_input();
    assert_eq!(bob.exit_code().await, 0);
    alice.say("/list").await;
    alice.expect("conversations").await;
    assert!(!alice.has_exited(), "the idle messenger stays up");
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_without_presence_stay_apart() {
    let dir = TempDir::new("lanpres-off");
    let port = common::free_udp_port();
    let meet = |name: &str| lan_client_args(name, &dir, port, &["--room", "lanpres-meet-off"]);
    let (mut first, mut second) = common::connected_pair(&meet(ALICE), &meet(BOB)).await;
    first.say("/close").await;
    assert_eq!(first.exit_code().await, 0);
    assert_eq!(second.exit_code().await, 0);

    // With --no-presence on one side, nobody announces for it and it rings for
    // nobody: alice gets a fresh room as before, and no contact conversation.
    let mut alice = Client::start(
        ALICE,
        &lan_client_args(ALICE, &dir, port, &["--no-presence", "--lan-timeout", "4s"]),
    );
    alice.expect("room").await;
    let mut bob = Client::start(
        BOB,
        &lan_client_args(BOB, &dir, port, &["--lan-timeout", "4s"]),
    );
    // Alice's fresh room ends unmatched and, with nothing else to wait for,
    // her messenger ends (exit 14, LAN timeout) without ever being matched.
    assert_eq!(alice.exit_code().await, 14, "{}", alice.stderr());
    let events = alice.drain().await;
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "matched" || e["event"] == "connected"),
        "{events:?}"
    );
    bob.say("/quit").await;
    let _ = bob.exit_code().await;
}

/// A LAN-mode messenger inside `host`, default LAN port and interfaces, with
/// its own profile and history in `dir`.
fn start_in(lab: &LanLab, host: Host, name: &str, dir: &TempDir, extra: &[&str]) -> Client {
    let mut cmd = lab.command(host, &client_bin());
    cmd.env_remove("P2PCHAT_KEYLOG")
        .env_remove("P2PCHAT_SERVER")
        .args(["--name", name, "--dh-group", "14", "--json"])
        .arg("--history")
        .arg(dir.join(&format!("history-{name}.sqlite3")))
        .arg("--profile")
        .arg(dir.join(&format!("profile-{name}")))
        .arg("--peers-file")
        .arg(peers_file(dir, name))
        .args(extra)
        .env("NO_COLOR", "1");
    Client::spawn(name, cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_lab_contacts_meet_by_presence_and_a_stranger_hears_no_name_key_or_fingerprint() {
    let lab = LanLab::build();
    let dir = TempDir::new("lanpres-lab");
    let meet = ["--room", "6-amber-lantern"];
    let mut first = start_in(&lab, Host::Lan1, ALICE, &dir, &meet);
    let mut second = start_in(&lab, Host::Lan2, BOB, &dir, &meet);
    first.expect("connected").await;
    second.expect("connected").await;
    first.say("/close").await;
    assert_eq!(first.exit_code().await, 0);
    assert_eq!(second.exit_code().await, 0);

    // From here on, everything said on the LAN port is captured on the bridge.
    let tap = LanTap::start(&lab, engine::lan::DEFAULT_LAN_PORT).await;
    let mut alice = start_in(&lab, Host::Lan1, ALICE, &dir, &[]);
    let mut bob = start_in(&lab, Host::Lan2, BOB, &dir, &[]);
    they_meet_and_chat(&mut alice, &mut bob).await;
    bob.say("/quit").await;
    assert_eq!(bob.exit_code().await, 0);
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    let heard = tap.stop().await;

    let presence = heard.iter().filter(|d| d.starts_with(b"P2PP")).count();
    let rooms = heard.iter().filter(|d| d.starts_with(b"P2PL")).count();
    assert!(
        presence > 0 && rooms > 0,
        "the stranger heard {presence} presence and {rooms} room announcements of {} datagrams",
        heard.len()
    );
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("alice's name".into(), ALICE.as_bytes().to_vec()),
        ("bob's name".into(), BOB.as_bytes().to_vec()),
    ];
    for name in [ALICE, BOB] {
        for (form, bytes) in identity_forms(&dir.join(&format!("profile-{name}"))) {
            secrets.push((format!("{name}'s {form}"), bytes));
        }
    }
    for datagram in &heard {
        for (what, needle) in &secrets {
            assert!(
                !contains(datagram, needle),
                "a stranger on the LAN heard {what} in {}",
                String::from_utf8_lossy(datagram)
            );
        }
    }
}
