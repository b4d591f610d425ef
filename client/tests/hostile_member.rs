//! A hostile group member (docs/protocol.md §17, §19, §20), written from the spec
//! as a raw member ([`common::raw_peer::join_group`]) beside real clients and a
//! real mediator on loopback. Each test is one finding of the trust review: old
//! history shown to a stranger, honest members cut off through a shared waiting
//! cap, a catch-up floor that wraps a member's counter, a spoofed author name,
//! an equivocating author whose forwarder was blamed, and a member that makes
//! its victim queue catch-up answers without end.

mod common;

use std::time::Duration;

use common::group::{member_args, start_members};
use common::raw_peer::{self, RawPeer};
use common::{Client, Mediator, TempDir};
use futures::StreamExt;
use serde_json::Value;
use wire::group::{Catchup, GroupBody, GroupMsg, Summary};
use wire::PeerMsg;

/// The `group_message` events `c` has shown.
fn messages(c: &Client) -> Vec<Value> {
    c.seen
        .iter()
        .filter(|e| e["event"] == "group_message")
        .cloned()
        .collect()
}

fn texts(c: &Client) -> Vec<String> {
    messages(c)
        .iter()
        .map(|e| e["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until `c` has shown `text` as a group message; returns the event.
async fn wait_for_text(c: &mut Client, text: &str) -> Value {
    loop {
        if let Some(e) = messages(c).into_iter().find(|e| e["text"] == text) {
            return e;
        }
        c.expect("group_message").await;
    }
}

/// The next warning with `code` that `c` shows (earlier ones count too).
async fn warning(c: &mut Client, code: &str) -> String {
    loop {
        if let Some(w) = c
            .seen
            .iter()
            .find(|e| e["event"] == "warning" && e["code"] == code)
        {
            return w["text"].as_str().unwrap_or_default().to_owned();
        }
        c.expect("warning").await;
    }
}

/// Warnings `c` has shown so far, as (code, text).
fn warnings(c: &Client) -> Vec<(String, String)> {
    c.seen
        .iter()
        .filter(|e| e["event"] == "warning")
        .map(|e| {
            (
                e["code"].as_str().unwrap_or_default().to_owned(),
                e["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A raw member `name` with `identity` in `room`, linked with the real member
/// called `with` (who was in the room when it joined).
async fn raw_link(
    mediator: std::net::SocketAddr,
    room: &str,
    name: &str,
    identity: &dhke::Identity,
    with: &str,
) -> (raw_peer::GroupJoiner, RawPeer) {
    let raw = raw_peer::join_group(mediator, room, name, identity.clone()).await;
    let link = {
        let (_, _, toward) = raw
            .members
            .iter()
            .find(|(_, n, _)| n == with)
            .unwrap_or_else(|| panic!("{with} is announced to {name}"));
        toward.handshake().await
    };
    (raw, link)
}

/// The conversation id of the group room `code` as every honest member derives it.
fn conversation(code: &str) -> [u8; 32] {
    dhke::RoomCode::parse(code).conversation()
}

/// `author`'s message number `seq` in `room`, signed.
fn signed(
    author: &dhke::Identity,
    room: [u8; 32],
    seq: u64,
    clock: Vec<([u8; 32], u64)>,
    text: &str,
) -> GroupMsg {
    let body = GroupBody {
        conversation: room,
        author: author.public().0,
        seq,
        clock,
        sent_at_ms: 1,
        text: text.into(),
    };
    GroupMsg::sign(body, author).expect("signs")
}

/// `work`, or a panic after [`common::WAIT`] (loops that answer pings never time
/// out on their own).
async fn within<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(common::WAIT, work)
        .await
        .expect("the awaited message within the time limit")
}

/// Reads `link` until a `GroupCatchup` (answering pings), for at most `limit`.
async fn next_catchup(link: &mut RawPeer, limit: Duration) -> Option<Catchup> {
    tokio::time::timeout(limit, async {
        loop {
            if let PeerMsg::GroupCatchup(c) = link.recv().await {
                return c;
            }
        }
    })
    .await
    .ok()
}

/// Whether `link` was closed by the other side within `limit` (after whatever
/// records it still had in flight).
async fn closed_within(link: &mut RawPeer, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, link.framed.next()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
}

/// Reads `link` until the client answers ping `nonce` or closes the link.
async fn pong_or_closed(link: &mut RawPeer, nonce: u64) {
    let wait = tokio::time::timeout(common::WAIT, async {
        while let Some(Ok(mut frame)) = link.framed.next().await {
            let Ok(plain) = link.opener.open(&mut frame) else {
                return;
            };
            if let Ok(PeerMsg::Pong { nonce: n }) = wire::decode::<PeerMsg>(plain) {
                if n == nonce {
                    return;
                }
            }
        }
    });
    wait.await.expect("a pong or the end of the link in time");
}

async fn quit_all(clients: &mut [Client]) {
    for c in clients.iter_mut() {
        c.say("/quit").await;
        assert_eq!(c.exit_code().await, 0, "{} exits cleanly", c.name);
    }
}

/// Item 1: alice and bob chat in `7-alpha-…`; mal is in that room too and keeps
/// a signed message of bob's. A day later alice meets mal in `7-zulu-…`: the
/// same nameplate, so the same mediator tag. Alice must neither show nor hand
/// mal the first room's messages, and bob's old message replayed by mal is
/// refused (mal is cut off for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_group_history_stays_in_its_conversation_and_cannot_be_replayed_into_another() {
    const DAY_ONE: &str = "7-alpha-bravo-charlie-delta";
    const DAY_TWO: &str = "7-zulu-yankee-xray-whiskey";
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("hostile-old-history");
    let mut day_one = start_members(&mediator.server_arg(), &["alice", "bob"], &dir, DAY_ONE).await;
    let mal_id = dhke::Identity::from_seed(&[0x71; 32]);
    let (_raw, mut mal) = raw_link(mediator.addr, DAY_ONE, "mal", &mal_id, "bob").await;
    day_one[1].say("the day one secret").await;
    wait_for_text(&mut day_one[0], "the day one secret").await;
    // mal asks bob for what it lacks (bob may have spoken before it took mal's
    // link in, so the message need not have come live).
    mal.send(&PeerMsg::GroupSummary(Summary::default())).await;
    let kept = within(async {
        loop {
            match mal.recv().await {
                PeerMsg::Group(m) if m.body.text == "the day one secret" => return m,
                PeerMsg::GroupCatchup(c) => {
                    if let Some(m) = c
                        .msgs
                        .into_iter()
                        .find(|m| m.body.text == "the day one secret")
                    {
                        return m;
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    quit_all(&mut day_one).await;
    drop(mal);

    let mut alice = Client::start(
        "alice",
        &member_args(&mediator.server_arg(), "alice", &dir, DAY_TWO),
    );
    alice.expect("group_joined").await;
    let (_raw2, mut mal) = raw_link(mediator.addr, DAY_TWO, "mal", &mal_id, "alice").await;
    alice.expect("member_joined").await;
    // mal asks for everything alice holds.
    mal.send(&PeerMsg::GroupSummary(Summary::default())).await;
    if let Some(catchup) = next_catchup(&mut mal, Duration::from_secs(3)).await {
        assert!(
            catchup
                .msgs
                .iter()
                .all(|m| m.body.text != "the day one secret"),
            "alice handed a stranger the other room's history"
        );
    }
    // The replay: bob's signed message from the first room.
    mal.send(&PeerMsg::Group(kept)).await;
    let text = warning(&mut alice, "bad_member").await;
    assert!(text.contains("mal"), "{text}");
    assert!(
        closed_within(&mut mal, common::WAIT).await,
        "alice kept mal's link"
    );
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    assert!(
        !texts(&alice).iter().any(|t| t == "the day one secret"),
        "alice showed the first room's message in the second: {:?}",
        texts(&alice)
    );
}

/// Item 2: two hostile members fill ann's waiting room with messages of fresh
/// authors that can never be delivered (each starts at seq 2). Ben, honest,
/// speaks next: ann shows his message and keeps him; only the flooders pay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_filling_the_waiting_messages_cost_only_themselves() {
    const ROOM: &str = "hostile-pending-room";
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("hostile-pending");
    let mut c = start_members(&mediator.server_arg(), &["ann", "ben"], &dir, ROOM).await;
    let room = conversation(ROOM);
    let mut flooders = Vec::new();
    for (i, name) in ["mal", "mel"].into_iter().enumerate() {
        let id = dhke::Identity::from_seed(&[0x80 + i as u8; 32]);
        let (raw, link) = raw_link(mediator.addr, ROOM, name, &id, "ann").await;
        flooders.push((raw, link));
    }
    for (i, (_, link)) in flooders.iter_mut().enumerate() {
        for round in 0..7u8 {
            let msgs: Vec<GroupMsg> = (0..300u32)
                .map(|n| {
                    let mut seed = [0u8; 32];
                    seed[..4].copy_from_slice(&n.to_be_bytes());
                    seed[4] = i as u8;
                    seed[5] = round;
                    seed[6] = 0xEE;
                    let fresh = dhke::Identity::from_seed(&seed);
                    signed(&fresh, room, 2, Vec::new(), "never deliverable")
                })
                .collect();
            let record = link.seal(&PeerMsg::GroupCatchup(Catchup {
                msgs,
                ..Catchup::default()
            }));
            // Ann may have cut this flooder off already.
            if futures::SinkExt::send(&mut link.framed, record.as_slice())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    // Ann has taken all of it in (or cut the flooders off) when she answers a ping.
    for (_, link) in flooders.iter_mut() {
        let record = link.seal(&PeerMsg::Ping { nonce: 7 });
        let _ = futures::SinkExt::send(&mut link.framed, record.as_slice()).await;
        pong_or_closed(link, 7).await;
    }
    c[1].say("ben is still here").await;
    wait_for_text(&mut c[0], "ben is still here").await;
    c[0].say("and ann answers").await;
    wait_for_text(&mut c[1], "and ann answers").await;
    for (code, text) in warnings(&c[0]) {
        assert!(
            !(code == "bad_member" && text.contains("ben")),
            "ann cut off an honest member: {text}"
        );
    }
    quit_all(&mut c).await;
}

/// Item 3: a catch-up whose floor names ann's own key at 2^64-1. Ann's next
/// message must go out with her next real number, and ben keeps her; a floor
/// above what the sender's own summary shows costs the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_catchup_floor_cannot_wrap_a_members_counter() {
    const ROOM: &str = "hostile-floor-room";
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("hostile-floor");
    let mut c = start_members(&mediator.server_arg(), &["ann", "ben"], &dir, ROOM).await;
    c[0].say("first from ann").await;
    wait_for_text(&mut c[1], "first from ann").await;
    let ann_key = messages(&c[1])[0]["author"].as_str().unwrap().to_owned();
    let mal_id = dhke::Identity::from_seed(&[0x90; 32]);
    let (_raw, mut mal) = raw_link(mediator.addr, ROOM, "mal", &mal_id, "ann").await;
    // The roster ann sends names her key.
    let ann = within(async {
        loop {
            if let PeerMsg::Roster(r) = mal.recv().await {
                if let Some(e) = r.members.iter().find(|e| e.name == "ann") {
                    return e.identity;
                }
            }
        }
    })
    .await;
    assert!(ann_key.len() > 8);
    mal.send(&PeerMsg::GroupCatchup(Catchup {
        have: vec![(ann, u64::MAX)],
        floor: vec![(ann, u64::MAX)],
        ..Catchup::default()
    }))
    .await;
    c[0].say("second from ann").await;
    let shown = wait_for_text(&mut c[1], "second from ann").await;
    assert_eq!(shown["seq"], 2, "ann's counter went on from 1: {shown}");
    for (code, text) in warnings(&c[1]) {
        assert!(
            !(code == "bad_member" && text.contains("ann")),
            "ben cut ann off: {text}"
        );
    }
    // A floor for a third author above anything mal's summary shows: mal pays.
    let other = dhke::Identity::from_seed(&[0x91; 32]).public().0;
    mal.send(&PeerMsg::GroupCatchup(Catchup {
        have: vec![(other, 3)],
        floor: vec![(other, 1_000_000)],
        ..Catchup::default()
    }))
    .await;
    let text = warning(&mut c[0], "bad_member").await;
    assert!(text.contains("mal"), "{text}");
    quit_all(&mut c).await;
}

/// Item 4: mal's roster lists a fresh key under the name "alice"; messages
/// signed by that key must not show as "alice" anywhere: they show by
/// fingerprint, marked as not linked, on screen, in `--json` and in history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_roster_cannot_give_an_unlinked_key_a_name() {
    const ROOM: &str = "hostile-names-room";
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("hostile-names");
    let mut c = start_members(&mediator.server_arg(), &["ann", "ben"], &dir, ROOM).await;
    let mal_id = dhke::Identity::from_seed(&[0xA0; 32]);
    let (_raw, mut mal) = raw_link(mediator.addr, ROOM, "mal", &mal_id, "ann").await;
    let fake = dhke::Identity::from_seed(&[0xA1; 32]);
    mal.send(&PeerMsg::Roster(wire::group::Roster {
        members: vec![
            wire::group::RosterEntry {
                member: 900,
                identity: mal_id.public().0,
                name: "mal".into(),
            },
            wire::group::RosterEntry {
                member: 901,
                identity: fake.public().0,
                name: "alice".into(),
            },
        ],
    }))
    .await;
    let room = conversation(ROOM);
    mal.send(&PeerMsg::Group(signed(
        &fake,
        room,
        1,
        Vec::new(),
        "hi, it is alice",
    )))
    .await;
    let shown = wait_for_text(&mut c[0], "hi, it is alice").await;
    let fingerprint = dhke::IdentityKey(fake.public().0).fingerprint().to_string();
    assert_ne!(
        shown["from"], "alice",
        "a roster named a key it never proved: {shown}"
    );
    assert!(
        shown["from"]
            .as_str()
            .unwrap_or_default()
            .contains(&fingerprint),
        "an unlinked author shows by fingerprint: {shown}"
    );
    assert_eq!(shown["linked"], false, "marked as not linked: {shown}");
    // 20 s on, ann warns that mal lists a key she has no link with: by its
    // fingerprint, and never by the name mal's roster gave it.
    let unseen = loop {
        let w = c[0].expect_within("warning", Duration::from_secs(40)).await;
        if w["code"] == "member_unseen" {
            break w;
        }
    };
    let text = unseen["text"].as_str().unwrap_or_default();
    assert!(text.contains(&fingerprint), "{unseen}");
    assert!(
        !text.contains("alice"),
        "a roster named a key it never proved: {unseen}"
    );
    quit_all(&mut c).await;
    let out = std::process::Command::new(common::client_bin())
        .args(["history", "--json", "--room", ROOM, "--history"])
        .arg(dir.join("history-ann.sqlite3"))
        .output()
        .expect("run client history");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("hi, it is alice"), "{listed}");
    assert!(
        !listed.contains("\"alice\""),
        "history names the spoofed author: {listed}"
    );
}

/// Item 5: mal signs two texts as its message 1. It gives one to ann and cat
/// directly; dan, who got the other, forwards it to cat. The two signatures
/// prove mal equivocated: cat refuses mal and forwards the proof, ann and ben
/// refuse mal on it too, nobody blames dan (the forwarder), and the screens say
/// which text each had shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_equivocating_author_is_proven_and_refused_and_its_forwarder_is_kept() {
    const ROOM: &str = "hostile-equivocation-room";
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("hostile-equivocation");
    let mut c = start_members(&mediator.server_arg(), &["ann", "ben", "cat"], &dir, ROOM).await;
    let mal_id = dhke::Identity::from_seed(&[0xB0; 32]);
    let raw = raw_peer::join_group(mediator.addr, ROOM, "mal", mal_id.clone()).await;
    let mut mal_links = Vec::new();
    for who in ["ann", "cat"] {
        let (_, _, toward) = raw
            .members
            .iter()
            .find(|(_, n, _)| n == who)
            .expect("announced");
        mal_links.push(toward.handshake().await);
    }
    let dan_id = dhke::Identity::from_seed(&[0xB1; 32]);
    let (_raw_dan, mut dan) = raw_link(mediator.addr, ROOM, "dan", &dan_id, "cat").await;
    let room = conversation(ROOM);
    let shown_version = signed(&mal_id, room, 1, Vec::new(), "version one");
    let other_version = signed(&mal_id, room, 1, Vec::new(), "version two");
    for link in mal_links.iter_mut() {
        link.send(&PeerMsg::Group(shown_version.clone())).await;
    }
    wait_for_text(&mut c[0], "version one").await;
    wait_for_text(&mut c[2], "version one").await;
    // dan forwards the other version, as an honest member would have.
    dan.send(&PeerMsg::GroupCatchup(Catchup {
        msgs: vec![other_version],
        ..Catchup::default()
    }))
    .await;
    let mal_fingerprint = dhke::IdentityKey(mal_id.public().0)
        .fingerprint()
        .to_string();
    let text = warning(&mut c[2], "equivocation").await;
    assert!(text.contains(&mal_fingerprint), "{text}");
    assert!(
        text.contains("version one") && text.contains("version two"),
        "{text}"
    );
    assert!(
        text.contains("shown"),
        "the warning says which text was shown: {text}"
    );
    for honest in c[..2].iter_mut() {
        let text = warning(honest, "equivocation").await;
        assert!(text.contains(&mal_fingerprint), "{text}");
    }
    // Everyone who saw the proof closes mal's links.
    for link in mal_links.iter_mut() {
        assert!(
            closed_within(link, common::WAIT).await,
            "mal is still linked"
        );
    }
    // dan is kept: cat's next message reaches it.
    c[2].say("cat after the proof").await;
    let reached = tokio::time::timeout(common::WAIT, async {
        loop {
            if let PeerMsg::Group(m) = dan.recv().await {
                if m.body.text == "cat after the proof" {
                    return;
                }
            }
        }
    })
    .await;
    assert!(reached.is_ok(), "cat cut dan off for forwarding");
    for (code, text) in warnings(&c[2]) {
        assert!(
            !(code == "bad_member" && text.contains("dan")),
            "cat blamed the forwarder: {text}"
        );
    }
    quit_all(&mut c).await;
}

/// Resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Item 8: ann holds a full backlog of large messages; mal stops reading and
/// asks for everything with an empty summary every half second for 60 s
/// (`P2PCHAT_HOSTILE_SECS` shortens it for a quick look). Ann's resident
/// memory grows by less than 64 MiB, and the group goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_stops_reading_and_asks_for_catchups_costs_bounded_memory() {
    const ROOM: &str = "hostile-memory-room";
    let secs = common::env_num("P2PCHAT_HOSTILE_SECS", 60);
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("hostile-memory");
    let mut c = start_members(&mediator.server_arg(), &["ann", "ben"], &dir, ROOM).await;
    let room = conversation(ROOM);
    // A helper member fills ann's backlog with 1,000 messages of 15 KiB.
    let filler_id = dhke::Identity::from_seed(&[0xC0; 32]);
    let (_raw, mut filler) = raw_link(mediator.addr, ROOM, "fil", &filler_id, "ann").await;
    let big = "x".repeat(15 * 1024);
    let msgs: Vec<GroupMsg> = (1..=1000u64)
        .map(|seq| signed(&filler_id, room, seq, Vec::new(), &big))
        .collect();
    for chunk in msgs.chunks(2) {
        filler
            .send(&PeerMsg::GroupCatchup(Catchup {
                msgs: chunk.to_vec(),
                ..Catchup::default()
            }))
            .await;
    }
    filler.send(&PeerMsg::Ping { nonce: 9 }).await;
    within(async {
        loop {
            if let PeerMsg::Pong { nonce: 9 } = filler.recv_any().await {
                return;
            }
        }
    })
    .await;
    let pid = c[0].pid().expect("ann runs");
    let before = rss_kib(pid);
    let mal_id = dhke::Identity::from_seed(&[0xC1; 32]);
    let (mut _raw2, mut mal) = raw_link(mediator.addr, ROOM, "mal", &mal_id, "ann").await;
    let mut peak = before;
    let start = tokio::time::Instant::now();
    let (mut asks, mut closed) = (0u32, 0u32);
    while start.elapsed() < Duration::from_secs(secs) {
        // Never reads: only writes its summary. When ann closes the link (its
        // writes to mal stalled), mal joins again and goes on, as an attacker
        // would, until the time is up.
        let record = mal.seal(&PeerMsg::GroupSummary(Summary::default()));
        let sent = tokio::time::timeout(
            Duration::from_secs(1),
            futures::SinkExt::send(&mut mal.framed, record.as_slice()),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            closed += 1;
            (_raw2, mal) = raw_link(mediator.addr, ROOM, "mal", &mal_id, "ann").await;
            continue;
        }
        asks += 1;
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    peak = peak.max(rss_kib(pid));
    let grew = peak.saturating_sub(before);
    eprintln!(
        "ann's RSS: {before} KiB before, peak {peak} KiB after {asks} asks over {secs} s, \
         {closed} links closed by ann ({grew} KiB more)"
    );
    assert!(
        grew < 64 * 1024,
        "ann's memory grew by {grew} KiB under the catch-up attack"
    );
    c[1].say("still talking").await;
    wait_for_text(&mut c[0], "still talking").await;
    quit_all(&mut c).await;
}
