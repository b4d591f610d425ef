//! Group rooms end to end (docs/protocol.md §19): real client processes and a
//! real mediator on loopback. Five members: every message reaches the four
//! others exactly once, every screen shows a causal order, and `client history
//! --room` lists the room alike on all five. A member killed and restarted catches
//! up exactly once, even on an author who left meanwhile. Forged messages, floods,
//! a full room, a lying mediator, and members on two mediators sharing a Redis.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::redis::Redis;
use common::{client_args, Client, Mediator, TempDir};
use serde_json::Value;

const ROOM: &str = "group-test-room";

fn member_args(server: &str, name: &str, dir: &TempDir) -> Vec<String> {
    common::group::member_args(server, name, dir, ROOM)
}

async fn start_members(server: &str, names: &[&str], dir: &TempDir) -> Vec<Client> {
    common::group::start_members(server, names, dir, ROOM).await
}

/// Waits until `c` has shown that its link with `peer` ended.
async fn wait_left(c: &mut Client, peer: &str) {
    while !c
        .seen
        .iter()
        .any(|e| e["event"] == "member_left" && e["peer"] == peer)
    {
        c.expect("member_left").await;
    }
}

/// Quits `c` and keeps every event it showed up to its exit, so what a test then
/// checks in `seen` is all it will ever show, not what arrived within some window.
async fn quit_and_drain(c: &mut Client) {
    c.say("/quit").await;
    assert_eq!(c.exit_code().await, 0, "{}: {}", c.name, c.stderr());
    c.drain().await;
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
    for client in c.iter_mut() {
        quit_and_drain(client).await;
    }
    for client in c.iter_mut() {
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
async fn a_member_away_gets_what_it_missed_once_even_from_one_who_left() {
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
    // Dot comes back as a stranger to the links: those who stayed saw it go.
    wait_left(&mut c[0], "dot").await;
    wait_left(&mut c[2], "dot").await;

    let mut dot = Client::start("dot", &member_args(&server, "dot", &dir));
    wait_for_texts(&mut dot, &missed).await;
    quit_and_drain(&mut dot).await;
    let list = shown(&dot);
    assert_eq!(
        list, missed,
        "dot shows each missed message once, in causal order"
    );
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
        conversation: dhke::RoomCode::parse(ROOM).conversation(),
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
    // ben and cat hold no link with mal: they name it by its fingerprint, as
    // not linked (ann's word for its name proves nothing to them).
    let mal_fingerprint = dhke::IdentityKey(mal_identity.public().0)
        .fingerprint()
        .to_string();
    for other in &mut c[1..] {
        let text = warning(other, "expelled").await;
        assert!(
            text.contains("ann") && text.contains(&mal_fingerprint) && text.contains("not linked"),
            "{text}"
        );
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

/// A lying group mediator (it knows the room code): honest for everyone but
/// the pair of its first two members, whom it links through itself, each leg
/// with its own CPace values and its own identity under the other's name.
async fn lying_group_mediator() -> std::net::SocketAddr {
    use common::raw_peer::{recv_msg, send_msg};
    use futures::SinkExt;
    use rand::rngs::OsRng;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::codec::Framed;
    use wire::handshake::{HostHandshake, JoinerHelloSent};
    use wire::{
        ClientMsg, FrameCodec, HandshakeInput, Link, MediatorMsg, PeerHandshake, RelayOffer, Role,
    };

    struct Arrival {
        framed: Framed<TcpStream, FrameCodec>,
        name: String,
        public: Vec<u8>,
        observed: std::net::SocketAddr,
        addr: std::net::SocketAddr,
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut members: Vec<Arrival> = Vec::new();
        let code = dhke::RoomCode::parse(ROOM);
        let group = dhke::Group::Modp2048;
        let mallory = dhke::Identity::from_seed(&[0x4d; 32]);
        let input = |keys: dhke::KeyPair, local: &str, peer: &Arrival| HandshakeInput {
            room: code.clone(),
            local_name: local.to_owned(),
            local: keys,
            peer_name: peer.name.clone(),
            peer_public: peer.public.clone(),
            previous: None,
            keylog: false,
            identity: mallory.clone(),
            expect_peer: None,
        };
        let member_msg =
            |member: u32, role: Role, a: &Arrival, you: std::net::SocketAddr| MediatorMsg::Member {
                member,
                role,
                peer_name: a.name.clone(),
                public: a.public.clone(),
                observed_addr: a.observed,
                listen_port: a.addr.port(),
                local_addrs: vec![a.addr],
                your_addr: you,
                relay: RelayOffer::Off,
            };
        let mut n = 0u32;
        while n < 3 {
            let (stream, observed) = listener.accept().await.unwrap();
            let mut framed = Framed::new(stream, FrameCodec::new(Link::Mediator));
            let first = recv_msg::<ClientMsg>(&mut framed).await;
            // The members' mailbox connections are answered aside.
            let Some((framed, first)) = common::fake_mediator::side_connection(framed, first)
            else {
                continue;
            };
            n += 1;
            let ClientMsg::GroupHello {
                name,
                public,
                local_addrs,
                ..
            } = first
            else {
                panic!("expected GroupHello")
            };
            let me = Arrival {
                framed,
                name,
                public,
                observed,
                addr: local_addrs[0],
            };
            let mut me = me;
            let welcome = MediatorMsg::GroupJoined {
                member: n,
                present: n - 1,
                max_members: 16,
            };
            send_msg(&mut me.framed, &welcome).await;
            if n == 2 {
                // Between member 1 (A) and member 2 (B).
                let toward_a = dhke::KeyPair::generate_cpace(group, &code, &mut OsRng).unwrap();
                let toward_b = dhke::KeyPair::generate_cpace(group, &code, &mut OsRng).unwrap();
                let trap = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let trap_addr = trap.local_addr().unwrap();
                let fake_a = MediatorMsg::Member {
                    member: 1,
                    role: Role::Joiner,
                    peer_name: members[0].name.clone(),
                    public: toward_b.public().to_vec(),
                    observed_addr: trap_addr,
                    listen_port: trap_addr.port(),
                    local_addrs: vec![trap_addr],
                    your_addr: observed,
                    relay: RelayOffer::Off,
                };
                let fake_b_public = toward_a.public().to_vec();
                send_msg(&mut me.framed, &fake_a).await;
                let a = &mut members[0];
                let to_a = MediatorMsg::Member {
                    member: 2,
                    role: Role::Host,
                    peer_name: me.name.clone(),
                    public: fake_b_public,
                    observed_addr: "127.0.0.1:9".parse().unwrap(),
                    listen_port: 0,
                    local_addrs: vec![],
                    your_addr: a.observed,
                    relay: RelayOffer::Off,
                };
                send_msg(&mut a.framed, &to_a).await;
                // Host toward B at the trap, joiner toward A.
                let b_leg = HostHandshake::new(input(toward_b, &members[0].name, &me)).unwrap();
                let a_leg = input(toward_a, &me.name, &members[0]);
                let a_addr = members[0].addr;
                tokio::spawn(async move {
                    let (stream, _) = trap.accept().await.unwrap();
                    let mut f = Framed::new(stream, FrameCodec::new(Link::Peer));
                    let hello: PeerHandshake = recv_msg(&mut f).await;
                    let (state, confirm) = b_leg.on_peer_hello(hello, &mut OsRng).unwrap();
                    send_msg(&mut f, &confirm).await;
                    let reply: PeerHandshake = recv_msg(&mut f).await;
                    let _session = state.on_joiner_confirm(reply).unwrap();
                    std::future::pending::<()>().await;
                });
                tokio::spawn(async move {
                    let stream = TcpStream::connect(a_addr).await.unwrap();
                    let mut f = Framed::new(stream, FrameCodec::new(Link::Peer));
                    let (state, hello) = JoinerHelloSent::start(a_leg, &mut OsRng).unwrap();
                    let payload = wire::encode(&hello).unwrap();
                    f.send(payload.as_slice()).await.unwrap();
                    let confirm: PeerHandshake = recv_msg(&mut f).await;
                    let (_session, reply) = state.on_host_confirm(confirm).unwrap();
                    send_msg(&mut f, &reply).await;
                    std::future::pending::<()>().await;
                });
            } else {
                for (i, other) in members.iter_mut().enumerate() {
                    let id = u32::try_from(i).unwrap() + 1;
                    let to_new = member_msg(id, Role::Joiner, other, me.observed);
                    send_msg(&mut me.framed, &to_new).await;
                    let to_old = member_msg(n, Role::Host, &me, other.observed);
                    send_msg(&mut other.framed, &to_old).await;
                }
            }
            members.push(me);
        }
        // Answer pings for as long as the test runs.
        let mut pongs = Vec::new();
        for mut m in members {
            pongs.push(tokio::spawn(async move {
                loop {
                    if let ClientMsg::Ping = recv_msg::<ClientMsg>(&mut m.framed).await {
                        send_msg(&mut m.framed, &MediatorMsg::Pong).await;
                    }
                }
            }));
        }
        std::future::pending::<()>().await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lying_mediator_between_two_members_is_an_alert_on_both() {
    let fake = lying_group_mediator().await;
    let dir = TempDir::new("group-mitm");
    let server = fake.to_string();
    let mut amy = Client::start("amy", &member_args(&server, "amy", &dir));
    amy.expect("group_joined").await;
    let mut bob = Client::start("bob", &member_args(&server, "bob", &dir));
    bob.expect("group_joined").await;
    // Each has a link with "the other": really with the mediator.
    amy.expect("member_joined").await;
    bob.expect("member_joined").await;
    let mut cyd = Client::start("cyd", &member_args(&server, "cyd", &dir));
    common::group::wait_linked(&mut cyd, 2).await;
    let a = warning(&mut amy, "roster_mismatch").await;
    assert!(a.contains("bob"), "{a}");
    let b = warning(&mut bob, "roster_mismatch").await;
    assert!(b.contains("amy"), "{b}");
    for c in [&mut amy, &mut bob, &mut cyd] {
        c.say("/quit").await;
        assert_eq!(c.exit_code().await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_group_room_and_a_two_party_client_in_it_are_refused_clearly() {
    let mediator = Mediator::start(&["--max-members", "2"]).await;
    let dir = TempDir::new("group-full");
    let server = mediator.server_arg();
    let mut c = start_members(&server, &["ann", "ben"], &dir).await;
    let mut third = Client::start("cat", &member_args(&server, "cat", &dir));
    let e = third.expect("error").await;
    assert_eq!(e["code"], "room_full", "{e}");
    assert!(e["text"].as_str().unwrap().contains("full"), "{e}");
    assert_eq!(third.exit_code().await, 4);
    let mut two_party = Client::start("dan", &client_args(&server, "dan", &dir, &["--room", ROOM]));
    let e = two_party.expect("error").await;
    assert_eq!(e["code"], "room_kind", "{e}");
    assert!(e["text"].as_str().unwrap().contains("--group"), "{e}");
    assert_eq!(two_party.exit_code().await, 4);
    for client in c.iter_mut() {
        client.say("/quit").await;
        assert_eq!(client.exit_code().await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_flooding_valid_messages_is_cut_off_at_the_rate_limit() {
    use common::raw_peer;
    use wire::group::{GroupBody, GroupMsg};
    use wire::PeerMsg;

    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("group-flood");
    let mut c = start_members(&mediator.server_arg(), &["ann", "ben"], &dir).await;
    let flood = dhke::Identity::from_seed(&[0x46; 32]);
    let raw = raw_peer::join_group(mediator.addr, ROOM, "flo", flood.clone()).await;
    let (_, _, toward_ann) = raw
        .members
        .iter()
        .find(|(_, name, _)| name == "ann")
        .expect("ann is announced");
    let mut flo = toward_ann.handshake().await;
    let conversation = dhke::RoomCode::parse(ROOM).conversation();
    // Well past the bucket (a whole backlog plus 200), far faster than its refill.
    for seq in 1..=2600u64 {
        let body = GroupBody {
            conversation,
            author: flood.public().0,
            seq,
            clock: Vec::new(),
            sent_at_ms: seq,
            text: format!("flood {seq}"),
        };
        flo.feed(&PeerMsg::Group(GroupMsg::sign(body, &flood).unwrap()))
            .await;
    }
    flo.flush().await;
    let text = warning(&mut c[0], "bad_member").await;
    assert!(text.contains("flo") && text.contains("flooding"), "{text}");
    let shown_flood = shown(&c[0])
        .iter()
        .filter(|t| t.starts_with("flood "))
        .count();
    assert!(
        (2000..2600).contains(&shown_flood),
        "messages within the limit are shown, the rest never: {shown_flood}"
    );
    let text = warning(&mut c[1], "expelled").await;
    assert!(text.contains("flooding"), "{text}");
    for client in c.iter_mut() {
        client.say("/quit").await;
        assert_eq!(client.exit_code().await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_on_two_mediators_sharing_a_redis_are_one_group() {
    let redis = Redis::start().await;
    let url = redis.url();
    let a = Mediator::start(&["--redis", &url]).await;
    let b = Mediator::start(&["--redis", &url]).await;
    let dir = TempDir::new("group-redis");
    let at = [a.server_arg(), b.server_arg(), a.server_arg()];
    let names = ["ann", "ben", "cat"];
    let mut c = Vec::new();
    for (name, server) in names.iter().zip(&at) {
        let mut client = Client::start(name, &member_args(server, name, &dir));
        client.expect("group_joined").await;
        c.push(client);
    }
    for client in &mut c {
        common::group::wait_linked(client, 2).await;
    }
    c[1].say("from the other mediator").await;
    for client in c.iter_mut() {
        wait_for_texts(client, &["from the other mediator".to_owned()]).await;
        client.say("/quit").await;
        assert_eq!(client.exit_code().await, 0);
    }
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_conversation_goes_on_while_the_mediator_restarts_and_members_relink_after() {
    let mediator = Mediator::start(&[]).await;
    let addr = mediator.server_arg();
    let dir = TempDir::new("group-restart");
    let mut c = start_members(&addr, &["ann", "ben", "cat"], &dir).await;
    mediator.kill().await;
    // The links do not need the mediator.
    c[0].say("while it is down").await;
    for client in c.iter_mut() {
        wait_for_texts(client, &["while it is down".to_owned()]).await;
    }
    let _back = Mediator::start_at(&addr, &[]).await;
    // Each member rejoins (a second group_joined) and the pairs relink quietly.
    for client in c.iter_mut() {
        while client
            .seen
            .iter()
            .filter(|e| e["event"] == "group_joined")
            .count()
            < 2
        {
            client
                .expect_within("group_joined", Duration::from_secs(60))
                .await;
        }
    }
    // Each pair links again through the new mediator (each link is a line in
    // both members' peers files): two lines per other member in all. Nothing
    // is said meanwhile, so an old link that the other side replaces ends on
    // idle links (it must not show as a member leaving).
    for client in c.iter() {
        wait_peer_lines(&dir, &client.name, 2 * 2).await;
    }
    c[2].say("after the restart").await;
    for client in c.iter_mut() {
        wait_for_texts(client, &["after the restart".to_owned()]).await;
    }
    // Members quit in order: `left` of them have gone before this one.
    for (left, client) in c.iter_mut().enumerate() {
        quit_and_drain(client).await;
        let list = shown(client);
        assert_eq!(
            list,
            ["while it is down", "after the restart"],
            "{}: each once",
            client.name
        );
        // Up to its own exit: no warning, and no link lost but to those who quit
        // before it (`left`).
        let noise: Vec<_> = client
            .seen
            .iter()
            .filter(|e| {
                e["event"] == "warning" || (e["event"] == "member_left" && e["reason"] != "left")
            })
            .collect();
        assert!(noise.is_empty(), "{}: {noise:?}", client.name);
        let goodbyes = client
            .seen
            .iter()
            .filter(|e| e["event"] == "member_left")
            .count();
        assert_eq!(goodbyes, left, "{}: {:?}", client.name, client.seen);
    }
}

/// Waits (up to [`common::WAIT`]) until `name`'s peers file has `n` lines.
async fn wait_peer_lines(dir: &TempDir, name: &str, n: usize) {
    let path = common::peers_file(dir, name);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let lines = std::fs::read_to_string(&path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: {lines} of {n} links in {} within {:?}",
            path.display(),
            common::WAIT
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
