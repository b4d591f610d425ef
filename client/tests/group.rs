//! Group rooms end to end (docs/protocol.md §19): real client processes and a
//! real mediator on loopback. Five members: every message reaches the four
//! others exactly once, every screen shows a causal order, and `client history
//! --room` lists the room alike on all five. A member killed for 30 s catches
//! up exactly once, even on an author who left meanwhile.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{client_args, Client, Mediator, TempDir};
use serde_json::Value;

const ROOM: &str = "group-test-room";

fn member_args(server: &str, name: &str, dir: &TempDir) -> Vec<String> {
    client_args(server, name, dir, &["--room", ROOM, "--group"])
}

/// Starts `names` one after another, then waits until each is linked with all
/// the others.
async fn start_members(server: &str, names: &[&str], dir: &TempDir) -> Vec<Client> {
    let mut clients = Vec::new();
    for name in names {
        let mut c = Client::start(name, &member_args(server, name, dir));
        c.expect("group_joined").await;
        clients.push(c);
    }
    for c in &mut clients {
        wait_linked(c, names.len() - 1).await;
    }
    clients
}

/// Waits until `c` has seen `n` `member_joined` events in all.
async fn wait_linked(c: &mut Client, n: usize) {
    while c
        .seen
        .iter()
        .filter(|e| e["event"] == "member_joined")
        .count()
        < n
    {
        c.expect("member_joined").await;
    }
}

/// The texts of the group messages `c` has shown, in screen order.
fn shown(c: &Client) -> Vec<String> {
    c.seen
        .iter()
        .filter(|e| e["event"] == "group_message")
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `c` has shown every text in `texts`.
async fn wait_for_texts(c: &mut Client, texts: &[String]) {
    while !texts.iter().all(|t| shown(c).contains(t)) {
        c.expect("group_message").await;
    }
}

/// `client history --room ROOM --json`'s group lines for `name`.
async fn history_lines(name: &str, dir: &TempDir) -> Vec<(String, String)> {
    let out = tokio::process::Command::new(common::client_bin())
        .args([
            "history",
            "--history",
            &dir.join(&format!("history-{name}.sqlite3"))
                .display()
                .to_string(),
            "--room",
            ROOM,
            "--json",
        ])
        .output()
        .await
        .expect("run client history");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["author_name"].is_string())
        .map(|v| {
            (
                v["author_name"].as_str().unwrap().to_owned(),
                v["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn position(list: &[String], text: &str) -> usize {
    list.iter()
        .position(|t| t == text)
        .unwrap_or_else(|| panic!("{text} not shown in {list:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_members_see_every_message_once_in_a_causal_order_and_store_one_order() {
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("group5");
    let names = ["ann", "ben", "cat", "dan", "eve"];
    let mut c = start_members(&mediator.server_arg(), &names, &dir).await;

    // A causal chain: each member answers the previous one's line after seeing
    // it, so on every screen chain-k comes after chain-(k-1).
    let mut all: Vec<String> = Vec::new();
    for (i, client) in c.iter_mut().enumerate() {
        if i > 0 {
            wait_for_texts(client, &[format!("chain-{}", i - 1)]).await;
        }
        let text = format!("chain-{i}");
        client.say(&text).await;
        all.push(text);
    }
    // Then everyone at once: concurrent messages, in whatever order.
    for (i, client) in c.iter_mut().enumerate() {
        for k in 0..3 {
            let text = format!("burst-{i}-{k}");
            client.say(&text).await;
            all.push(text);
        }
    }
    for client in c.iter_mut() {
        wait_for_texts(client, &all).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for client in c.iter_mut() {
        while let Some(e) = client.next_event(Duration::from_millis(100)).await {
            client.seen.push(e);
        }
        let list = shown(client);
        // Exactly once each (own messages are shown once, as sent).
        assert_eq!(list.len(), all.len(), "{}: {list:?}", client.name);
        for t in &all {
            assert_eq!(
                list.iter().filter(|x| *x == t).count(),
                1,
                "{t} on {}",
                client.name
            );
        }
        for k in 1..names.len() {
            assert!(
                position(&list, &format!("chain-{}", k - 1))
                    < position(&list, &format!("chain-{k}")),
                "{}: {list:?}",
                client.name
            );
        }
        // A member's own burst is in its order everywhere.
        for i in 0..names.len() {
            for k in 1..3 {
                assert!(
                    position(&list, &format!("burst-{i}-{}", k - 1))
                        < position(&list, &format!("burst-{i}-{k}"))
                );
            }
        }
        // Each message names its author.
        let authors: HashMap<String, String> = client
            .seen
            .iter()
            .filter(|e| e["event"] == "group_message")
            .map(|e| {
                (
                    e["text"].as_str().unwrap().to_owned(),
                    e["from"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(authors["chain-2"], "cat");
    }
    for client in c.iter_mut() {
        client.say("/quit").await;
        assert_eq!(client.exit_code().await, 0, "{}", client.stderr());
    }
    let first = history_lines(names[0], &dir).await;
    assert_eq!(first.len(), all.len(), "{first:?}");
    for name in &names[1..] {
        assert_eq!(
            history_lines(name, &dir).await,
            first,
            "{name}'s history differs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_away_for_30s_gets_what_it_missed_once_even_from_one_who_left() {
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("group-away");
    let server = mediator.server_arg();
    let mut c = start_members(&server, &["amy", "bob", "cyd", "dot"], &dir).await;
    c[0].say("before").await;
    for client in c.iter_mut() {
        wait_for_texts(client, &["before".to_owned()]).await;
    }
    let mut dot = c.pop().unwrap();
    dot.kill_hard().await;

    let mut missed = Vec::new();
    for k in 0..3 {
        let text = format!("amy-{k}");
        c[0].say(&text).await;
        missed.push(text);
    }
    wait_for_texts(&mut c[1], &missed).await;
    // bob answers, then leaves before dot comes back.
    c[1].say("bob-reply").await;
    missed.push("bob-reply".to_owned());
    wait_for_texts(&mut c[0], &missed).await;
    wait_for_texts(&mut c[2], &missed).await;
    c[1].say("/quit").await;
    assert_eq!(c[1].exit_code().await, 0);
    c[2].say("cyd-after-bob").await;
    missed.push("cyd-after-bob".to_owned());
    wait_for_texts(&mut c[0], &missed).await;
    tokio::time::sleep(Duration::from_secs(30)).await;

    let mut dot = Client::start("dot", &member_args(&server, "dot", &dir));
    wait_for_texts(&mut dot, &missed).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Some(e) = dot.next_event(Duration::from_millis(200)).await {
        dot.seen.push(e);
    }
    let list = shown(&dot);
    assert_eq!(
        list, missed,
        "dot shows each missed message once, in causal order"
    );
    dot.say("/quit").await;
    assert_eq!(dot.exit_code().await, 0);
    let stored: Vec<String> = history_lines("dot", &dir)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let mut expected = vec!["before".to_owned()];
    expected.extend(missed);
    assert_eq!(stored, expected);
    for client in c.iter_mut() {
        let _ = client.try_say("/quit").await;
    }
}

/// The next group-room warning with `code` on `c`.
async fn warning(c: &mut Client, code: &str) -> String {
    loop {
        let w = c.expect("warning").await;
        if w["code"] == code {
            return w["text"].as_str().unwrap().to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_forwarding_a_forged_message_is_cut_off_and_named_and_nothing_forged_is_kept() {
    use common::raw_peer;
    use futures::StreamExt;
    use wire::group::{GroupBody, GroupMsg};
    use wire::{PeerMsg, Signature64};

    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("group-forged");
    let mut c = start_members(&mediator.server_arg(), &["ann", "ben", "cat"], &dir).await;
    let mal_identity = dhke::Identity::from_seed(&[0x66; 32]);
    let raw = raw_peer::join_group(mediator.addr, ROOM, "mal", mal_identity.clone()).await;
    let (_, _, toward_ann) = raw
        .members
        .iter()
        .find(|(_, name, _)| name == "ann")
        .expect("ann is announced");
    let mut mal = toward_ann.handshake().await;
    // ann's roster names ben's identity key.
    let ben_key = loop {
        if let PeerMsg::Roster(roster) = mal.recv().await {
            if let Some(e) = roster.members.iter().find(|e| e.name == "ben") {
                break e.identity;
            }
        }
    };
    let body = GroupBody {
        room: dhke::RoomCode::parse(ROOM).tag().0,
        author: ben_key,
        seq: 1,
        clock: Vec::new(),
        sent_at_ms: 1,
        text: "FORGED".into(),
    };
    // Signed by mal, claiming ben as its author.
    let signature =
        Signature64(mal_identity.sign(&wire::group::signed_bytes(&body).expect("encodes")));
    mal.send(&PeerMsg::Group(GroupMsg { body, signature }))
        .await;

    let text = warning(&mut c[0], "bad_member").await;
    assert!(text.contains("mal"), "{text}");
    for other in &mut c[1..] {
        let text = warning(other, "expelled").await;
        assert!(text.contains("ann") && text.contains("mal"), "{text}");
    }
    // The link to mal is closed by ann (a Bye, then the end).
    loop {
        match tokio::time::timeout(common::WAIT, mal.framed.next()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(_) => break,
            Err(_) => panic!("ann kept the forger's link open"),
        }
    }
    c[0].say("after").await;
    for client in c.iter_mut() {
        wait_for_texts(client, &["after".to_owned()]).await;
        assert!(!shown(client).iter().any(|t| t == "FORGED"));
        client.say("/quit").await;
        assert_eq!(client.exit_code().await, 0);
    }
    for name in ["ann", "ben", "cat"] {
        let stored = history_lines(name, &dir).await;
        assert_eq!(
            stored,
            vec![("ann".to_owned(), "after".to_owned())],
            "{name}"
        );
    }
}
