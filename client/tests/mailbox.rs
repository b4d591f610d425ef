//! The offline mailbox end to end (docs/protocol.md §22), with real `mediator`
//! and `client` binaries on loopback: messages for a contact who is offline
//! wait, sealed, at the mediator, survive its SIGKILL, reach the contact in
//! order and exactly once when it comes, and come back to the sender as
//! delivered; the same across two mediators sharing a Redis; a group member
//! who returns alone gets what the others said; and the store holds none of
//! the texts, names, identity keys or the code.

mod common;

use common::group::{member_args, start_members, wait_linked};
use common::{client_args, contains, Client, Mediator, TempDir};
use serde_json::Value;

/// The texts of `c`'s `message` events so far and until `n` are there.
async fn messages(c: &mut Client, n: usize) -> Vec<String> {
    let count = |c: &Client| c.seen.iter().filter(|e| e["event"] == "message").count();
    while count(c) < n {
        c.expect("message").await;
    }
    c.seen
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| e["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Waits until `c` has shown `event` for every id in `ids`.
async fn each_id(c: &mut Client, event: &str, ids: &[u64]) {
    let has = |c: &Client, id: u64| {
        c.seen
            .iter()
            .any(|e| e["event"] == event && e["id"].as_u64() == Some(id))
    };
    for &id in ids {
        while !has(c, id) {
            c.expect(event).await;
        }
    }
}

/// Bob writes three lines to alice, who is offline, sees each stored, and
/// leaves once they are (his input ends).
async fn bob_leaves_three(server: &str, dir: &TempDir, texts: &[&str; 3]) {
    let mut bob = Client::start(
        "bob",
        &client_args(server, "bob", dir, &["--to", "alice", "--no-presence"]),
    );
    for text in texts {
        bob.say(text).await;
    }
    each_id(&mut bob, "stored", &[1, 2, 3]).await;
    bob.close_input();
    assert_eq!(bob.exit_code().await, 0, "bob: {}", bob.stderr());
}

/// Alice comes and gets them, in order, once; her input ends once her
/// receipt is at bob's queue.
async fn alice_gets_three(server: &str, dir: &TempDir, texts: &[&str; 3]) -> Client {
    let mut alice = Client::start(
        "alice",
        &client_args(server, "alice", dir, &["--to", "bob", "--no-presence"]),
    );
    assert_eq!(messages(&mut alice, 3).await, texts.map(String::from));
    alice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_messages_wait_for_an_offline_contact_through_a_mediator_sigkill() {
    let dir = TempDir::new("mbox-pair");
    let db = dir.join("mailbox.sqlite3").display().to_string();
    let med = Mediator::start(&["--mailbox-db", &db]).await;
    let addr = med.server_arg();
    common::become_contacts(&med, &dir, "alice", "bob", "mbox-meet").await;
    let texts = ["first while away", "second while away", "third while away"];
    bob_leaves_three(&addr, &dir, &texts).await;

    // SIGKILL: nothing acknowledged to bob may be lost.
    med.kill().await;
    let _med = Mediator::start_at(&addr, &["--mailbox-db", &db]).await;

    let mut alice = alice_gets_three(&addr, &dir, &texts).await;
    alice.close_input();
    assert_eq!(alice.exit_code().await, 0, "alice: {}", alice.stderr());
    // Exactly once: a second run of alice gets nothing again.
    let mut again = Client::start(
        "alice",
        &client_args(&addr, "alice", &dir, &["--to", "bob", "--no-presence"]),
    );
    again.say("/history 10").await;
    let history = again.expect("history").await;
    let from_bob: Vec<&Value> = history["lines"]
        .as_array()
        .map(|l| l.iter().filter(|l| l["outgoing"] == false).collect())
        .unwrap_or_default();
    assert_eq!(from_bob.len(), 3, "{history}");
    again.close_input();
    let _ = again.exit_code().await;
    assert!(
        !again.seen.iter().any(|e| e["event"] == "message"),
        "nothing is delivered twice: {:?}",
        again.seen
    );

    // Bob, when he runs again, sees all three delivered.
    let mut bob = Client::start(
        "bob",
        &client_args(&addr, "bob", &dir, &["--to", "alice", "--no-presence"]),
    );
    each_id(&mut bob, "ack", &[1, 2, 3]).await;
    bob.close_input();
    let _ = bob.exit_code().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailbox_works_across_two_mediators_sharing_a_redis() {
    let redis = common::redis::Redis::start().await;
    let url = redis.url();
    let a = Mediator::start(&["--redis", &url]).await;
    let b = Mediator::start(&["--redis", &url]).await;
    let dir = TempDir::new("mbox-redis");
    common::become_contacts(&a, &dir, "alice", "bob", "mbox-redis-meet").await;
    let texts = ["left at A", "also at A", "and a third"];
    bob_leaves_three(&a.server_arg(), &dir, &texts).await;
    let mut alice = alice_gets_three(&b.server_arg(), &dir, &texts).await;
    alice.close_input();
    assert_eq!(alice.exit_code().await, 0, "alice: {}", alice.stderr());
    let mut bob = Client::start(
        "bob",
        &client_args(
            &a.server_arg(),
            "bob",
            &dir,
            &["--to", "alice", "--no-presence"],
        ),
    );
    each_id(&mut bob, "ack", &[1, 2, 3]).await;
    bob.close_input();
    let _ = bob.exit_code().await;
}

/// The bytes of every file of the store (the database, its WAL and shm).
fn store_bytes(db: &str) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{db}{suffix}")) {
            all.extend(bytes);
        }
    }
    all
}

/// `client id --json` for `name`'s profile: its identity key in hex.
fn identity_hex(dir: &TempDir, name: &str) -> String {
    let out = std::process::Command::new(common::client_bin())
        .args(["id", "--json", "--profile"])
        .arg(dir.join(&format!("profile-{name}")))
        .output()
        .expect("run client id");
    let v: Value = serde_json::from_slice(&out.stdout).expect("client id --json");
    v["identity"].as_str().expect("an identity").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_holds_no_text_name_identity_or_code() {
    let dir = TempDir::new("mbox-search");
    let db = dir.join("mailbox.sqlite3").display().to_string();
    let med = Mediator::start(&["--mailbox-db", &db]).await;
    let server = med.server_arg();
    let code = "mbox-velvet-harbor-cipher";
    let (names, texts) = (
        ["alicemailboxname", "bobmailboxname"],
        [
            "a very distinctive sentence one",
            "another distinctive sentence two",
        ],
    );
    // They meet in a room (alice says something there, so bob knows her as
    // an author of the conversation), and both leave.
    let a = client_args(&server, names[0], &dir, &["--room", code, "--no-presence"]);
    let b = client_args(&server, names[1], &dir, &["--room", code, "--no-presence"]);
    let (mut alice, mut bob) = common::connected_pair(&a, &b).await;
    alice.say("hello from the first meeting").await;
    bob.expect("message").await;
    alice.say("/quit").await;
    let _ = alice.exit_code().await;
    let _ = bob.exit_code().await;
    // Bob comes back to the room alone and writes; his lines go to her mailbox.
    let mut bob = Client::start(names[1], &b);
    for text in texts {
        bob.say(text).await;
    }
    each_id(&mut bob, "stored", &[1, 2]).await;
    let store = store_bytes(&db);
    assert!(!store.is_empty(), "the store has files at {db}");
    let mut needles: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    needles.extend(names.iter().map(|n| n.as_bytes().to_vec()));
    needles.push(code.as_bytes().to_vec());
    for name in names {
        let hex_key = identity_hex(&dir, name);
        needles.push(hex::decode(&hex_key).expect("hex"));
        needles.push(hex_key.into_bytes());
    }
    for needle in &needles {
        assert!(
            !contains(&store, needle),
            "the mailbox store holds {:?}",
            String::from_utf8_lossy(needle)
        );
    }
    bob.say("/quit").await;
    let _ = bob.exit_code().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_who_returns_alone_gets_what_the_others_said() {
    let dir = TempDir::new("mbox-group");
    let med = Mediator::start(&[]).await;
    let server = med.server_arg();
    let room = "mbox-group-room";
    let mut members = start_members(&server, &["bob", "carol", "dave"], &dir, room).await;
    let mut dave = members.pop().expect("dave");
    let mut carol = members.pop().expect("carol");
    let mut bob = members.pop().expect("bob");
    // Bob leaves; carol and dave talk, and leave too.
    bob.say("/quit").await;
    let _ = bob.exit_code().await;
    carol.expect("member_left").await;
    dave.expect("member_left").await;
    carol.say("said while bob was away").await;
    dave.expect("group_message").await;
    dave.say("and an answer").await;
    carol.expect("group_message").await;
    for c in [&mut carol, &mut dave] {
        each_id(c, "stored", &[1]).await;
    }
    carol.say("/quit").await;
    dave.say("/quit").await;
    let _ = carol.exit_code().await;
    let _ = dave.exit_code().await;

    // Bob comes back to an empty room and gets both, in order.
    let mut bob = Client::start("bob", &member_args(&server, "bob", &dir, room));
    bob.expect("group_joined").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = bob.expect("group_message").await;
        if m["own"] == false {
            got.push(m["text"].as_str().unwrap_or("").to_owned());
        }
    }
    assert_eq!(got, ["said while bob was away", "and an answer"]);
    wait_linked(&mut bob, 0).await;
    bob.say("/quit").await;
    let _ = bob.exit_code().await;
}
