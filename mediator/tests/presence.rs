//! Presence (docs/protocol.md §21): a connection that opens with `Presence`
//! waits under its contacts' tags and gets `Ring{tag}` when a room opens under
//! one; its bounds (tags per connection, per batch, the whole table), its idle
//! timeout, and what it refuses.

mod common;

use std::time::Duration;

use common::{config, hello, room, start, Client};
use mediator::Config;
use wire::{ClientMsg, ErrorCode, MediatorMsg, MAX_PRESENCE_BATCH};

async fn present(c: &mut Client, tags: Vec<[u8; 32]>) -> u32 {
    c.send(&ClientMsg::Presence { tags }).await;
    match c.recv().await {
        Some(MediatorMsg::Present { tags }) => tags,
        other => panic!("expected Present, got {other:?}"),
    }
}

#[tokio::test]
async fn a_room_opened_under_a_waiting_tag_rings_its_holder_and_no_other() {
    let server = start(config()).await;
    let mut alice = Client::connect(server.addr).await;
    assert_eq!(present(&mut alice, vec![room(1), room(2)]).await, 2);
    let mut carol = Client::connect(server.addr).await;
    assert_eq!(present(&mut carol, vec![room(3)]).await, 1);
    // Tags may be added later on the same connection; repeats count once.
    assert_eq!(present(&mut alice, vec![room(2), room(4)]).await, 3);

    let mut bob = Client::connect(server.addr).await;
    bob.send(&hello(2, "bob")).await;
    bob.expect_waiting().await;
    assert_eq!(alice.recv().await, Some(MediatorMsg::Ring { tag: room(2) }));
    // Alice comes to meet bob on a connection of her own.
    let mut meet = Client::connect(server.addr).await;
    meet.send(&hello(2, "alice")).await;
    meet.expect_matched(wire::Role::Joiner).await;
    bob.expect_matched(wire::Role::Host).await;

    // Carol, who waits under another tag, heard nothing: her next message is
    // the answer to her own Ping.
    carol.send(&ClientMsg::Ping).await;
    assert_eq!(carol.recv().await, Some(MediatorMsg::Pong));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tags_past_the_caps_are_refused_with_presence_limit() {
    let server = start(Config {
        presence_max_tags: 3,
        presence_max_total: 5,
        ..config()
    })
    .await;
    let mut a = Client::connect(server.addr).await;
    assert_eq!(present(&mut a, vec![room(1), room(2), room(3)]).await, 3);
    a.send(&ClientMsg::Presence {
        tags: vec![room(4)],
    })
    .await;
    let text = a.expect_error(ErrorCode::PresenceLimit).await;
    assert!(text.contains("at most 3"), "{text}");

    // The table's own cap: 3 + 3 > 5 even though each is within its own.
    let mut b = Client::connect(server.addr).await;
    assert_eq!(present(&mut b, vec![room(5), room(6), room(7)]).await, 3);
    let mut c = Client::connect(server.addr).await;
    c.send(&ClientMsg::Presence {
        tags: vec![room(8), room(9), room(10)],
    })
    .await;
    c.expect_error(ErrorCode::PresenceLimit).await;
    // A's tags left with its connection: a room under one rings nobody, and
    // room is made for others.
    let mut d = Client::connect(server.addr).await;
    assert_eq!(present(&mut d, vec![room(11), room(12)]).await, 2);

    // One batch holds at most MAX_PRESENCE_BATCH tags.
    let mut e = Client::connect(server.addr).await;
    e.send(&ClientMsg::Presence {
        tags: (0..=MAX_PRESENCE_BATCH as u64)
            .map(|n| room(100 + n))
            .collect(),
    })
    .await;
    e.expect_error(ErrorCode::Malformed).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_presence_connection_takes_only_presence_and_ping() {
    let server = start(config()).await;
    let mut a = Client::connect(server.addr).await;
    present(&mut a, vec![room(1)]).await;
    a.send(&hello(1, "a")).await;
    a.expect_error(ErrorCode::Malformed).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_holder_is_dropped_at_the_idle_timeout_and_a_pinging_one_stays() {
    let server = start(config()).await;
    let mut silent = Client::connect(server.addr).await;
    present(&mut silent, vec![room(1)]).await;
    let mut pinging = Client::connect(server.addr).await;
    present(&mut pinging, vec![room(2)]).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        pinging.send(&ClientMsg::Ping).await;
        assert_eq!(pinging.recv().await, Some(MediatorMsg::Pong));
    }
    silent.expect_error(ErrorCode::Timeout).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_contact_already_waiting_rings_the_holder_as_it_registers() {
    let server = start(config()).await;
    let mut bob = Client::connect(server.addr).await;
    bob.send(&hello(5, "bob")).await;
    bob.expect_waiting().await;
    let mut alice = Client::connect(server.addr).await;
    assert_eq!(present(&mut alice, vec![room(4), room(5)]).await, 2);
    assert_eq!(alice.recv().await, Some(MediatorMsg::Ring { tag: room(5) }));
    server.shutdown().await.unwrap();
}
