//! Presence end to end (docs/protocol.md §21): a messenger that runs idle with
//! a mediator waits there for its contacts, and a contact who opens a
//! conversation with it (`--to`) is met with nothing typed on the idle side:
//! the conversation appears, the message typed before the meeting arrives, and
//! the answer goes back.

mod common;

use common::{client_args, Client, Mediator, TempDir};
use serde_json::Value;

/// The first `kind` event `c` showed, whether before or after the one the
/// test waited for last (bob's line may come by the mailbox before the
/// meeting, or over the link after it).
async fn shown(c: &mut Client, kind: &str) -> Value {
    match c.seen.iter().find(|e| e["event"] == kind) {
        Some(e) => e.clone(),
        None => c.expect(kind).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_messenger_is_reached_by_a_contact_with_nothing_typed_on_its_side() {
    let dir = TempDir::new("presence-idle");
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let med = Mediator::start(&["--metrics", &metrics]).await;
    common::become_contacts(&med, &dir, "alice", "bob", "pres-meet").await;
    let server = med.server_arg();

    // Alice's messenger names no conversation: it opens a fresh room, and
    // waits at the mediator for her one contact.
    let mut alice = Client::start("alice", &client_args(&server, "alice", &dir, &[]));
    alice.expect("room").await;
    common::wait_for_metrics(&metrics, &["mediator_presence_tags 1".to_string()]).await;

    // Bob writes to her before they are connected; she types nothing.
    let mut bob = Client::start(
        "bob",
        &client_args(&server, "bob", &dir, &["--to", "alice"]),
    );
    bob.say("are you there, alice?").await;
    let connected = alice.expect("connected").await;
    assert_eq!(
        connected["conversation"]["label"], "contact bob",
        "{connected}"
    );
    let number = connected["conversation"]["number"].as_u64().unwrap();
    let m = shown(&mut alice, "message").await;
    assert_eq!(m["text"], "are you there, alice?", "{m}");
    assert_eq!(m["conversation"]["number"], number, "{m}");

    // Her answer, to that conversation, reaches him.
    bob.expect("connected").await;
    alice.say(&format!("/msg {number} here I am")).await;
    let answer = bob.expect("message").await;
    assert_eq!(answer["text"], "here I am", "{answer}");

    // `/peers` says he is online, linked in that conversation.
    alice.say("/peers").await;
    let peers = alice.expect("contacts").await;
    assert_eq!(peers["contacts"][0]["name"], "bob", "{peers}");
    assert_eq!(peers["contacts"][0]["online"], true, "{peers}");
    assert_eq!(peers["contacts"][0]["conversation"], number, "{peers}");

    // He leaves; her messenger stays up for the next contact, and shows him
    // offline.
    bob.close_input();
    assert_eq!(bob.exit_code().await, 0);
    alice.expect("closed").await;
    alice.say("/peers").await;
    let peers = alice.expect("contacts").await;
    assert_eq!(peers["contacts"][0]["online"], false, "{peers}");
    alice.say("/list").await;
    alice.expect("conversations").await;
    assert!(!alice.has_exited(), "the idle messenger stays up");
    alice.say("/quit").await;
    let _ = alice.exit_code().await;
}

/// The same across two mediators sharing a Redis: alice's messenger waits at
/// A, bob writes to her through B; the ring crosses instances and they meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_writing_through_another_mediator_of_the_same_redis_reaches_the_idle_messenger() {
    let redis = common::redis::Redis::start().await;
    let url = redis.url();
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let a = Mediator::start(&["--redis", &url, "--metrics", &metrics]).await;
    let b = Mediator::start(&["--redis", &url]).await;
    let dir = TempDir::new("presence-redis");
    common::become_contacts(&a, &dir, "alice", "bob", "pres-redis-meet").await;

    let mut alice = Client::start("alice", &client_args(&a.server_arg(), "alice", &dir, &[]));
    alice.expect("room").await;
    common::wait_for_metrics(&metrics, &["mediator_presence_tags 1".to_string()]).await;
    let mut bob = Client::start(
        "bob",
        &client_args(&b.server_arg(), "bob", &dir, &["--to", "alice"]),
    );
    bob.say("across two mediators").await;
    let connected = alice.expect("connected").await;
    assert_eq!(
        connected["conversation"]["label"], "contact bob",
        "{connected}"
    );
    let m = shown(&mut alice, "message").await;
    assert_eq!(m["text"], "across two mediators", "{m}");
    bob.close_input();
    let _ = bob.exit_code().await;
    alice.say("/quit").await;
    let _ = alice.exit_code().await;
}
