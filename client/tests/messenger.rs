//! The messenger end to end: one running client holds a two-party room, a group
//! and a contact's conversation at once, each message reaches only its
//! conversation, `/list` counts what arrived behind the one in front, and a
//! client killed with SIGKILL reopens all three when started again, reconnects
//! and catches up with what was said meanwhile, exactly once.

mod common;

use common::group::{start_members, wait_linked};
use common::{client_args, Client, Mediator, TempDir};
use serde_json::Value;

/// The label of the conversation an event belongs to.
fn label(event: &Value) -> &str {
    event["conversation"]["label"].as_str().unwrap_or("")
}

/// Waits for a message event (two-party `message` or group `group_message`)
/// with `text`, or finds it among those already seen; returns it.
async fn expect_text(c: &mut Client, kind: &str, text: &str) -> Value {
    if let Some(e) = c
        .seen
        .iter()
        .find(|e| e["event"] == kind && e["text"] == text)
    {
        return e.clone();
    }
    loop {
        let e = c.expect(kind).await;
        if e["text"] == text {
            return e;
        }
    }
}

/// How many `kind` events with `text` a client has shown so far.
fn count_text(c: &Client, kind: &str, text: &str) -> usize {
    c.seen
        .iter()
        .filter(|e| e["event"] == kind && e["text"] == text)
        .count()
}

/// The three peers and alice's messenger with a room (bob), a group (carol,
/// dave) and erin's contact conversation open, all linked.
struct World {
    /// Kept for the test's length: dropping it stops the mediator.
    _med: Mediator,
    dir: TempDir,
    bob: Client,
    carol: Client,
    dave: Client,
    erin: Client,
}

const ROOM: &str = "msgr-room";
const GROUP: &str = "msgr-group";

async fn open_three(alice: &mut Client, world: &mut World) {
    world.bob.expect("connected").await;
    let c = alice.expect("connected").await;
    assert_eq!(label(&c), ROOM, "{c}");
    alice.say(&format!("/group {GROUP}")).await;
    let joined = alice.expect("group_joined").await;
    assert_eq!(label(&joined), format!("group {GROUP}"), "{joined}");
    wait_linked(alice, 2).await;
    alice.say("/to erin").await;
    world.erin.expect("connected").await;
    loop {
        let c = alice.expect("connected").await;
        if label(&c) == "contact erin" {
            break;
        }
    }
}

async fn world(tag: &str) -> (World, Vec<String>) {
    let dir = TempDir::new(tag);
    let med = Mediator::start(&[]).await;
    common::become_contacts(&med, &dir, "alice", "erin", "msgr-meet").await;
    let server = med.server_arg();
    let [carol, dave]: [Client; 2] = start_members(&server, &["carol", "dave"], &dir, GROUP)
        .await
        .try_into()
        .unwrap_or_else(|_| panic!("two members"));
    let bob = Client::start("bob", &client_args(&server, "bob", &dir, &["--room", ROOM]));
    let erin = Client::start(
        "erin",
        &client_args(&server, "erin", &dir, &["--to", "alice"]),
    );
    // Without presence: erin waits until alice types `/to erin` (presence,
    // which would meet erin by itself, has tests of its own in presence.rs).
    let alice_args = client_args(&server, "alice", &dir, &["--no-presence"]);
    (
        World {
            _med: med,
            dir,
            bob,
            carol,
            dave,
            erin,
        },
        alice_args,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_a_room_a_group_and_a_contact_and_keeps_them_apart() {
    let (mut w, mut alice_args) = world("msgr-three").await;
    alice_args.extend(["--room".to_string(), ROOM.to_string()]);
    let mut alice = Client::start("alice", &alice_args);
    open_three(&mut alice, &mut w).await;

    // Each peer's message reaches alice tagged with its own conversation.
    w.bob.say("from bob").await;
    w.carol.say("from carol").await;
    w.erin.say("from erin").await;
    let m = expect_text(&mut alice, "message", "from bob").await;
    assert_eq!(label(&m), ROOM, "{m}");
    let g = expect_text(&mut alice, "group_message", "from carol").await;
    assert_eq!(label(&g), format!("group {GROUP}"), "{g}");
    let e = expect_text(&mut alice, "message", "from erin").await;
    assert_eq!(label(&e), "contact erin", "{e}");

    // Lines go to the conversation in front (erin's, opened last); /msg and
    // /switch reach the others.
    alice.say("to erin").await;
    alice.say(&format!("/msg {GROUP} to the group")).await;
    alice.say("/switch 1").await;
    alice.say("to bob").await;
    expect_text(&mut w.erin, "message", "to erin").await;
    expect_text(&mut w.carol, "group_message", "to the group").await;
    expect_text(&mut w.dave, "group_message", "to the group").await;
    expect_text(&mut w.bob, "message", "to bob").await;
    // Nothing crossed over: each peer saw only its own conversation's lines.
    for (peer, kind, foreign) in [
        (&w.bob, "message", ["to erin", "to the group"]),
        (&w.erin, "message", ["to bob", "to the group"]),
        (&w.carol, "group_message", ["to bob", "to erin"]),
    ] {
        for text in foreign {
            assert_eq!(
                count_text(peer, kind, text),
                0,
                "{} got {text:?}",
                peer.name
            );
        }
    }

    // With bob's room in front, what the others say counts as unread.
    w.carol.say("while bob is in front").await;
    w.erin.say("erin again").await;
    expect_text(&mut alice, "group_message", "while bob is in front").await;
    expect_text(&mut alice, "message", "erin again").await;
    alice.say("/list").await;
    let list = loop {
        let l = alice.expect("conversations").await;
        if l["conversation"].is_null()
            && l["items"].as_array().is_some_and(|i| i.len() == 3)
            && l["items"][1]["unread"].as_u64() > Some(0)
        {
            break l;
        }
    };
    let items = list["items"].as_array().unwrap();
    assert_eq!(list["front"], 1, "{list}");
    assert_eq!(items[0]["label"], ROOM);
    assert_eq!(items[0]["kind"], "room");
    assert_eq!(items[0]["state"], "connected");
    assert_eq!(items[0]["unread"], 0);
    assert_eq!(items[1]["kind"], "group");
    assert_eq!(items[1]["members"], 3, "{list}");
    assert!(items[1]["unread"].as_u64() >= Some(1), "{list}");
    assert_eq!(items[2]["label"], "contact erin");
    assert!(items[2]["unread"].as_u64() >= Some(1), "{list}");
    // Every conversation event names its conversation by id and label.
    for e in alice.seen.iter().filter(|e| e["event"] == "message") {
        assert_eq!(
            e["conversation"]["id"].as_str().map(str::len),
            Some(16),
            "{e}"
        );
    }
    let _ = &w.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_messenger_reopens_its_conversations_and_catches_up_exactly_once() {
    let (mut w, alice_args) = world("msgr-restart").await;
    let mut first = alice_args.clone();
    first.extend(["--room".to_string(), ROOM.to_string()]);
    let mut alice = Client::start("alice", &first);
    open_three(&mut alice, &mut w).await;
    w.bob.say("before").await;
    expect_text(&mut alice, "message", "before").await;

    alice.kill_hard().await;
    // What is said while alice is gone waits for her.
    w.bob.say("bob meanwhile").await;
    w.carol.say("carol meanwhile").await;
    w.erin.say("erin meanwhile").await;
    w.bob.expect("reconnecting").await;
    w.erin.expect("reconnecting").await;

    // Started again with no conversation named, she reopens all three.
    let mut alice = Client::start("alice", &alice_args);
    let info = loop {
        let i = alice.expect("info").await;
        if i["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Reopened"))
        {
            break i;
        }
    };
    assert!(info["text"].as_str().unwrap().contains('3'), "{info}");
    let m = expect_text(&mut alice, "message", "bob meanwhile").await;
    assert_eq!(label(&m), ROOM);
    let g = expect_text(&mut alice, "group_message", "carol meanwhile").await;
    assert_eq!(label(&g), format!("group {GROUP}"));
    let e = expect_text(&mut alice, "message", "erin meanwhile").await;
    assert_eq!(label(&e), "contact erin");
    // Exactly once, and nothing from before the kill shown again as new.
    w.bob.say("after").await;
    w.erin.say("erin after").await;
    expect_text(&mut alice, "message", "after").await;
    expect_text(&mut alice, "message", "erin after").await;
    wait_linked(&mut alice, 2).await;
    for (kind, text) in [
        ("message", "bob meanwhile"),
        ("group_message", "carol meanwhile"),
        ("message", "erin meanwhile"),
        ("message", "before"),
    ] {
        let n = count_text(&alice, kind, text);
        let want = usize::from(text != "before");
        assert_eq!(n, want, "{text:?} shown {n} times after the restart");
    }
    // And she can still talk in each.
    alice.say("/switch 1").await;
    alice.say("back").await;
    expect_text(&mut w.bob, "message", "back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_asks_first_then_closes_the_conversation_and_deletes_its_messages() {
    let dir = TempDir::new("msgr-forget");
    let med = Mediator::start(&[]).await;
    let server = med.server_arg();
    let a = client_args(&server, "alice", &dir, &["--room", "msgr-forget"]);
    let b = client_args(&server, "bob", &dir, &["--room", "msgr-forget"]);
    let (mut alice, mut bob) = common::connected_pair(&a, &b).await;
    bob.say("a secret to forget").await;
    expect_text(&mut alice, "message", "a secret to forget").await;
    alice.say("/forget").await;
    let ask = alice.expect("info").await;
    assert!(
        ask["text"].as_str().unwrap().contains("/forget yes"),
        "{ask}"
    );
    // Asking changed nothing: the conversation goes on.
    bob.say("still here").await;
    expect_text(&mut alice, "message", "still here").await;
    alice.say("/forget yes").await;
    let done = loop {
        let i = alice.expect("info").await;
        if i["text"].as_str().is_some_and(|t| t.starts_with("Forgot")) {
            break i;
        }
    };
    assert!(
        done["text"].as_str().unwrap().contains("2 messages"),
        "{done}"
    );
    assert_eq!(alice.exit_code().await, 0, "its last conversation closed");
    let needle = b"a secret to forget";
    for file in ["history-alice.sqlite3", "history-alice.sqlite3-wal"] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the forgotten text is still in {file}"
        );
    }
    // Not reopened either.
    let mut again = Client::start("alice", &client_args(&server, "alice", &dir, &[]));
    let room = again.expect("room").await;
    assert!(
        room["room"].as_str().is_some_and(|r| r != "msgr-forget"),
        "{room}"
    );
}
