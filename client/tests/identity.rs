//! Identities and contacts across runs (docs/protocol.md §15): a contact verified
//! once stays verified, a stranger using its name is a loud warning, two contacts
//! meet with `--to` and no room code (no key or fingerprint of either reaches the
//! mediator, in the bytes it receives or in its log and metrics, and no name is in
//! its log or metrics), and the identity file is private and never overwritten.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::fake_mediator::{FakeMediator, Lie};
use common::proxy::Proxy;
use common::{client_args as args, contains, identity_forms, Client, Mediator, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Alice and Bob (profiles in `dir`) meet in `room`, compare codes and leave.
async fn verify_once(med: &Mediator, dir: &TempDir, room: &str) -> (String, String) {
    let a = args(&med.server_arg(), "alice", dir, &["--room", room]);
    let b = args(&med.server_arg(), "bob", dir, &["--room", room]);
    let (mut alice, mut bob) = common::connected_pair(&a, &b).await;
    let fp_of_bob = common::last(&alice, "connected")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    let fp_of_alice = common::last(&bob, "connected")["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.say("/verify yes").await;
    bob.say("/verify yes").await;
    assert_eq!(alice.expect("verify").await["verified"], true);
    assert_eq!(bob.expect("verify").await["verified"], true);
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    bob.close_input();
    let _ = bob.exit_code().await;
    (fp_of_alice, fp_of_bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_verified_once_are_verified_in_a_new_room_without_verify() {
    let dir = TempDir::new("id-again");
    let med = Mediator::start(&[]).await;
    let (fp_alice, fp_bob) = verify_once(&med, &dir, "r-first").await;
    let a = args(&med.server_arg(), "alice", &dir, &["--room", "r-second"]);
    let b = args(&med.server_arg(), "bob", &dir, &["--room", "r-second"]);
    let (alice, bob) = common::connected_pair(&a, &b).await;
    let (ca, cb) = (
        common::last(&alice, "connected"),
        common::last(&bob, "connected"),
    );
    assert_eq!(ca["verified"], true, "{ca}");
    assert_eq!(cb["verified"], true, "{cb}");
    assert_eq!(ca["resumed"], false, "a new room: new keys, no resumption");
    assert_eq!(ca["fingerprint"], fp_bob.as_str());
    assert_eq!(cb["fingerprint"], fp_alice.as_str());
    assert_eq!(ca["sas"], cb["sas"], "the code is still shown, and equal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_using_a_verified_contacts_name_is_a_warning_and_not_verified() {
    let dir = TempDir::new("id-imposter");
    let med = Mediator::start(&[]).await;
    verify_once(&med, &dir, "r-trust").await;
    // Another profile that calls itself bob.
    let mut b = args(&med.server_arg(), "bob", &dir, &["--room", "r-imposter"]);
    common::set_flag(
        &mut b,
        "--profile",
        &dir.join("profile-imposter").display().to_string(),
    );
    common::set_flag(
        &mut b,
        "--history",
        &dir.join("history-imposter.sqlite3").display().to_string(),
    );
    let a = args(&med.server_arg(), "alice", &dir, &["--room", "r-imposter"]);
    let (alice, _bob) = common::connected_pair(&a, &b).await;
    let connected = common::last(&alice, "connected");
    assert_eq!(connected["verified"], false, "{connected}");
    let warning = common::last(&alice, "warning");
    assert_eq!(warning["code"], "impersonation", "{warning}");
    assert!(
        warning["text"]
            .as_str()
            .unwrap()
            .contains("another identity"),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_mediator_between_verified_contacts_cannot_make_either_side_verified() {
    let dir = TempDir::new("id-mitm");
    let med = Mediator::start(&[]).await;
    verify_once(&med, &dir, "r-honest").await;
    // It knows the room code and runs each leg with values of its own; it has
    // no contact's identity key, so it signs as itself.
    let room = "r-lying";
    let fake = FakeMediator::start(Lie::ManInTheMiddle { room: room.into() }).await;
    let server = fake.addr.to_string();
    let a = args(&server, "alice", &dir, &["--room", room]);
    let b = args(&server, "bob", &dir, &["--room", room]);
    let (alice, bob) = common::connected_pair(&a, &b).await;
    for side in [&alice, &bob] {
        let connected = common::last(side, "connected");
        assert_eq!(connected["verified"], false, "{connected}");
        let warning = common::last(side, "warning");
        assert_eq!(warning["code"], "impersonation", "{warning}");
    }
}

/// GET /metrics from the mediator's metrics listener.
async fn metrics(addr: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_meet_with_to_and_no_room_code_and_the_mediator_learns_no_identity() {
    let dir = TempDir::new("id-to");
    let log = dir.join("mediator.log");
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let med = Mediator::start_logged(&["--metrics", &metrics_addr], &log).await;
    let (fp_alice, fp_bob) = verify_once(&med, &dir, "r-meet").await;
    // The `--to` meeting goes through taps: every byte to and from the mediator,
    // and every byte of the direct link (where the handshake does carry the
    // identities, §6: the check that they are found there shows the search works).
    let med_tap = Proxy::start("127.0.0.1:0".parse().unwrap(), med.addr, None).await;
    let alice_listen = format!("127.0.0.1:{}", common::free_port());
    let link_tap = Proxy::start(
        "127.0.0.1:0".parse().unwrap(),
        alice_listen.parse().unwrap(),
        None,
    )
    .await;
    let server = med_tap.addr.to_string();
    let direct = ["--no-punch", "--no-relay"];
    let mut a = args(
        &server,
        "alice",
        &dir,
        &[&["--to", "bob"][..], &direct].concat(),
    );
    common::set_flag(&mut a, "--listen", &alice_listen);
    common::set_flag(&mut a, "--advertise", &link_tap.addr.to_string());
    let b = args(
        &server,
        "bob",
        &dir,
        &[&["--to", &fp_alice][..], &direct].concat(),
    );
    let (alice, bob) = common::connected_pair(&a, &b).await;
    let (ca, cb) = (
        common::last(&alice, "connected"),
        common::last(&bob, "connected"),
    );
    assert_eq!(ca["fingerprint"], fp_bob.as_str());
    assert_eq!(ca["verified"], true);
    assert_eq!(cb["verified"], true);
    assert_eq!(ca["sas"], cb["sas"]);
    drop((alice, bob));

    let at_mediator = med_tap.bytes();
    let on_link = link_tap.bytes();
    assert!(
        at_mediator.len() > 200,
        "the mediator's tap saw the rendezvous ({} bytes)",
        at_mediator.len()
    );
    for name in ["alice", "bob"] {
        let forms = identity_forms(&dir.join(&format!("profile-{name}")));
        assert!(
            contains(&on_link, &forms[0].1),
            "{name}'s key is in the direct link's handshake: the tap and the search work"
        );
        for (form, bytes) in &forms {
            assert!(
                !contains(&at_mediator, bytes),
                "{name}'s {form} is in the bytes the mediator received or sent"
            );
        }
        // Nor the label the client gives the meeting (`contact NAME`).
        assert!(
            !contains(&at_mediator, format!("contact {name}").as_bytes()),
            "the contact label reached the mediator"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap() + &metrics(&metrics_addr).await;
    for secret in [&fp_alice, &fp_bob] {
        let compact: String = secret.split(' ').collect();
        assert!(
            !text.contains(secret.as_str()),
            "fingerprint in the mediator's output"
        );
        assert!(
            !text.contains(&compact),
            "fingerprint in the mediator's output"
        );
    }
    for name in ["alice", "bob"] {
        assert!(
            !text.contains(name),
            "a name ({name}) is in the mediator's log or metrics"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_an_unknown_contact_is_a_usage_error() {
    let dir = TempDir::new("id-unknown");
    let mut c = Client::start(
        "alice",
        &args("127.0.0.1:9", "alice", &dir, &["--to", "nobody"]),
    );
    let err = c.expect("error").await;
    assert!(
        err["text"].as_str().unwrap().contains("client contacts"),
        "{err}"
    );
    assert_eq!(c.exit_code().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loose_or_corrupt_identity_file_is_refused_and_left_as_it_was() {
    let dir = TempDir::new("id-file");
    let profile = dir.join("profile-alice");
    // First run creates it, 0600.
    let mut c = Client::start(
        "alice",
        &args("127.0.0.1:9", "alice", &dir, &["--room", "x1"]),
    );
    let _ = c.exit_code().await;
    let key = profile.join("identity.key");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(&key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = Client::start(
        "alice",
        &args("127.0.0.1:9", "alice", &dir, &["--room", "x1"]),
    );
    let err = c.expect("error").await;
    assert!(err["text"].as_str().unwrap().contains("mode 0644"), "{err}");
    assert_eq!(c.exit_code().await, 11);
    assert_eq!(std::fs::read(&key).unwrap(), before);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key, b"garbage").unwrap();
    let mut c = Client::start(
        "alice",
        &args("127.0.0.1:9", "alice", &dir, &["--room", "x1"]),
    );
    let err = c.expect("error").await;
    assert!(
        err["text"]
            .as_str()
            .unwrap()
            .contains("not a p2pchat identity"),
        "{err}"
    );
    assert_eq!(c.exit_code().await, 11);
    assert_eq!(std::fs::read(&key).unwrap(), b"garbage");
}
