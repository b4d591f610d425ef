//! The offline mailbox at the mediator (docs/protocol.md §22.3) with its
//! embedded store (SQLite): the round trip, what one answer carries, durability
//! across a SIGKILL of the real binary, what a copy of the store reveals, and
//! every refusal: caps, keys, signatures, times, replays, the TTL, and the
//! connection's own bounds. The same rules against Redis: mailbox_redis.rs.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::mailbox::{
    add, contains, sealed_message, sealed_of_len, sqlite_items, Recipient, TempDir, TestClock,
};
use common::{config, hello, start, start_with_metrics, Binary, Client};
use dhke::Identity;
use mediator::mailbox::SWEEP_EVERY;
use mediator::Config;
use wire::mailbox::{self as mb, item_id, MAX_ITEM};
use wire::{ClientMsg, ErrorCode, MediatorMsg};

const CONVERSATION: [u8; 32] = [7; 32];
const WEEK: u64 = 7 * 24 * 3600;

fn alice() -> Recipient {
    Recipient::new(CONVERSATION, [1; 32])
}

fn bob() -> Recipient {
    Recipient::new(CONVERSATION, [2; 32])
}

#[tokio::test]
async fn open_add_fetch_remove_hands_each_item_out_oldest_first_until_removed() {
    let server = start(config()).await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let mut a = Client::connect(server.addr).await;
    assert_eq!(a.open(&alice, clock.now()).await, 0);
    // Bob leaves three messages in alice's queue.
    let mut b = Client::connect(server.addr).await;
    let mut ids = Vec::new();
    for seq in 1..=3 {
        let item = sealed_message(&alice.queue, CONVERSATION, &bob.identity, seq, "hi");
        let (id, expires) = b.add(&alice.queue, clock.now(), item.clone()).await;
        assert_eq!(id, item_id(&item));
        assert!(
            expires.abs_diff(clock.now() + WEEK) <= 2,
            "expires {expires}"
        );
        // A retry (the answer was lost) is answered the same, and stores nothing new.
        assert_eq!(b.add(&alice.queue, clock.now(), item).await, (id, expires));
        ids.push(id);
    }
    assert_eq!(a.open(&alice, clock.now()).await, 3);
    let (items, more) = a.fetch(&alice, clock.now()).await;
    assert!(!more);
    assert_eq!(items.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
    for (seq, item) in (1..).zip(&items) {
        let plain = alice.queue.open(&item.sealed).unwrap();
        let msg: wire::group::GroupMsg = wire::decode(&plain).unwrap();
        assert_eq!(msg.body.seq, seq);
        msg.verify(&CONVERSATION).unwrap();
    }
    // A fetch hands out the same again until they are removed.
    assert_eq!(a.fetch(&alice, clock.now()).await.0, items);
    assert_eq!(a.remove(&alice, clock.now(), ids[..2].to_vec()).await, 2);
    let (left, _) = a.fetch(&alice, clock.now()).await;
    assert_eq!(left.iter().map(|i| i.id).collect::<Vec<_>>(), ids[2..]);
    // Removing again, or ids never there, counts nothing.
    assert_eq!(a.remove(&alice, clock.now(), ids.clone()).await, 1);
    assert_eq!(a.fetch(&alice, clock.now()).await, (vec![], false));
    assert_eq!(a.open(&alice, clock.now()).await, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_answer_holds_what_fits_a_frame_and_says_more() {
    let server = start(config()).await;
    let clock = TestClock::new();
    let alice = alice();
    let mut a = Client::connect(server.addr).await;
    a.open(&alice, clock.now()).await;
    // 300 of the smallest items: their sealed bytes alone (19 200) would pass
    // the 15 360 of one answer, and with their ids and lengths one frame.
    for _ in 0..3 {
        // A connection takes at most 256 requests.
        let mut b = Client::connect(server.addr).await;
        for _ in 0..100 {
            b.add(&alice.queue, clock.now(), sealed_of_len(&alice.queue, 64))
                .await;
        }
    }
    let mut seen = 0;
    let mut rounds = 0;
    loop {
        let (items, more) = a.fetch(&alice, clock.now()).await;
        let cost: usize = items.iter().map(|i| i.sealed.len() + 24).sum();
        assert!(cost <= mb::MAX_ITEMS_BYTES, "{cost} bytes in one answer");
        seen += items.len();
        rounds += 1;
        let ids = items.iter().map(|i| i.id).collect();
        assert_eq!(
            a.remove(&alice, clock.now(), ids).await as usize,
            items.len()
        );
        if !more {
            break;
        }
        assert!(
            items.len() > 100,
            "an answer of {} small items",
            items.len()
        );
    }
    assert_eq!((seen, rounds), (300, 2));
    // The largest items go one per answer.
    let mut b = Client::connect(server.addr).await;
    for _ in 0..2 {
        b.add(
            &alice.queue,
            clock.now(),
            sealed_of_len(&alice.queue, MAX_ITEM),
        )
        .await;
    }
    let (items, more) = a.fetch(&alice, clock.now()).await;
    assert_eq!((items.len(), more), (1, true));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_queue_made_by_an_add_takes_its_readers_key_at_open_and_no_other() {
    let server = start(config()).await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let mut b = Client::connect(server.addr).await;
    let item = sealed_message(&alice.queue, CONVERSATION, &bob.identity, 1, "early");
    b.add(&alice.queue, clock.now(), item).await;
    // Nobody can fetch before the recipient opened it.
    let mut a = Client::connect(server.addr).await;
    let msg = a
        .refused(&alice.fetch(clock.now()), ErrorCode::MailboxAuth)
        .await;
    assert!(msg.contains("never opened"), "{msg}");
    let mut a = Client::connect(server.addr).await;
    assert_eq!(a.open(&alice, clock.now()).await, 1);
    assert_eq!(a.fetch(&alice, clock.now()).await.0.len(), 1);
    // Another member cannot take alice's queue over with a read key of its own.
    let squatter = mb::read_key(&bob.identity, &alice.id());
    let (queue, add_key, read) = (
        alice.id(),
        alice.queue.add_key().public().0,
        squatter.public().0,
    );
    let at = clock.now();
    let open = ClientMsg::MailboxOpen {
        queue,
        add_key,
        read_key: read,
        at,
        sig: mb::sign(&squatter, &mb::open_signed(&queue, &add_key, &read, at)),
    };
    let mut c = Client::connect(server.addr).await;
    let msg = c.refused(&open, ErrorCode::MailboxAuth).await;
    assert!(msg.contains("other keys"), "{msg}");
    server.shutdown().await.unwrap();
}

/// The acceptance of issue 24: items acknowledged to a sender survive a
/// SIGKILL of the mediator, and come back in order after a restart.
#[tokio::test]
async fn items_acknowledged_before_a_sigkill_are_fetched_in_order_after_the_restart() {
    let dir = TempDir::new("mbox-kill");
    let db = dir.join("mailbox.sqlite3");
    let flags = format!("--mailbox-db '{}'", db.display());
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let mut first = Binary::spawn(&flags);
    let mut b = Client::connect(first.addr).await;
    let mut acknowledged = Vec::new();
    for seq in 1..=3 {
        let item = sealed_message(&alice.queue, CONVERSATION, &bob.identity, seq, "offline");
        acknowledged.push(b.add(&alice.queue, clock.now(), item).await.0);
    }
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    drop(b);
    let second = Binary::spawn(&flags);
    let mut a = Client::connect(second.addr).await;
    assert_eq!(a.open(&alice, clock.now()).await, 3);
    let (items, more) = a.fetch(&alice, clock.now()).await;
    assert!(!more);
    assert_eq!(items.iter().map(|i| i.id).collect::<Vec<_>>(), acknowledged);
    let texts: Vec<u64> = items
        .iter()
        .map(|i| {
            let msg: wire::group::GroupMsg =
                wire::decode(&alice.queue.open(&i.sealed).unwrap()).unwrap();
            msg.body.seq
        })
        .collect();
    assert_eq!(texts, [1, 2, 3]);
}

/// Every file of an SQLite store at `db` (the database, its log, its index).
fn store_files(db: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            std::fs::read(&path).ok().map(|bytes| (path, bytes))
        })
        .collect()
}

/// What a copy of the whole store must not show: the texts, the names, the
/// identity keys (raw and hex), the room code and the conversation id.
pub fn secrets(author: &Identity, recipient: &Identity, code: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = vec![
        ("text".into(), b"the eagle lands at dawn".to_vec()),
        ("name".into(), b"Zebediah".to_vec()),
        ("code".into(), code.as_bytes().to_vec()),
        ("conversation".into(), CONVERSATION.to_vec()),
        (
            "conversation hex".into(),
            hex::encode(CONVERSATION).into_bytes(),
        ),
    ];
    for (who, key) in [("author", author), ("recipient", recipient)] {
        let key = key.public().0;
        out.push((format!("{who} key"), key.to_vec()));
        out.push((format!("{who} key hex"), hex::encode(key).into_bytes()));
        out.push((
            format!("{who} key HEX"),
            hex::encode_upper(key).into_bytes(),
        ));
    }
    out
}

/// The message whose plaintext holds every secret.
pub fn telling_text(author: &Identity, code: &str) -> String {
    format!(
        "the eagle lands at dawn, says Zebediah in room {code} ({}); my key is {}",
        hex::encode(CONVERSATION),
        hex::encode(author.public().0)
    )
}

#[tokio::test]
async fn a_copy_of_the_store_shows_no_text_name_identity_key_or_code() {
    let dir = TempDir::new("mbox-search");
    let db = dir.join("mailbox.sqlite3");
    let server = start(Config {
        mailbox_db: Some(db.clone()),
        ..config()
    })
    .await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let code = "7-velvet-harbor";
    let mut a = Client::connect(server.addr).await;
    a.open(&alice, clock.now()).await;
    let mut b = Client::connect(server.addr).await;
    let mut stored = Vec::new();
    for seq in 1..=5 {
        let item = sealed_message(
            &alice.queue,
            CONVERSATION,
            &bob.identity,
            seq,
            &telling_text(&bob.identity, code),
        );
        // The plaintext does hold them, so the search below means something.
        let plain = alice.queue.open(&item).unwrap();
        for (what, secret) in secrets(&bob.identity, &alice.identity, code) {
            if !what.contains("recipient") && !what.ends_with("HEX") {
                assert!(contains(&plain, &secret), "the plaintext lacks the {what}");
            }
        }
        b.add(&alice.queue, clock.now(), item.clone()).await;
        stored.push(item);
    }
    // One removed, so a remembered id is in the store too.
    a.remove(&alice, clock.now(), vec![item_id(&stored[0])])
        .await;
    let look = |when: &str| {
        let files = store_files(&db);
        let all: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
        assert!(
            contains(&all, &alice.id()),
            "{when}: the queue id is not in the store"
        );
        assert!(
            contains(&all, &stored[4]),
            "{when}: an item is not in the store"
        );
        for (path, bytes) in &files {
            for (what, secret) in secrets(&bob.identity, &alice.identity, code) {
                assert!(!contains(bytes, &secret), "{when}: {path} holds the {what}");
            }
        }
    };
    look("while it runs");
    server.shutdown().await.unwrap();
    look("after a shutdown");
}

#[tokio::test]
async fn a_flood_into_one_queue_stops_at_its_caps_and_the_store_stays_in_bounds() {
    let dir = TempDir::new("mbox-flood");
    let db = dir.join("mailbox.sqlite3");
    let server = start_with_metrics(Config {
        mailbox_db: Some(db.clone()),
        mailbox_queue_items: 20,
        mailbox_queue_bytes: 8 * 1024,
        ..config()
    })
    .await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    // Small items: the item cap.
    let mut b = Client::connect(server.addr).await;
    let mut stored = 0;
    let message = loop {
        match b
            .ask(&add(
                &alice.queue,
                clock.now(),
                sealed_of_len(&alice.queue, 64),
            ))
            .await
        {
            MediatorMsg::MailboxStored { .. } => stored += 1,
            MediatorMsg::Error { code, message } => {
                assert_eq!(code, ErrorCode::MailboxFull, "{message}");
                break message;
            }
            other => panic!("{other:?}"),
        }
        assert!(stored <= 20, "the queue took more than its cap");
    };
    assert_eq!(stored, 20);
    assert!(message.contains("20 items"), "{message}");
    // Large items into bob's queue: the byte cap.
    let mut stored_bytes = 0;
    let message = loop {
        let mut b = Client::connect(server.addr).await;
        match b
            .ask(&add(
                &bob.queue,
                clock.now(),
                sealed_of_len(&bob.queue, 3008),
            ))
            .await
        {
            MediatorMsg::MailboxStored { .. } => stored_bytes += 3008,
            MediatorMsg::Error { code, message } => {
                assert_eq!(code, ErrorCode::MailboxFull, "{message}");
                break message;
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(stored_bytes, 2 * 3008);
    assert!(message.contains("8192 bytes"), "{message}");
    server
        .wait_for_metric(r#"mediator_mailbox_refused_total{cap="queue_items"} 1"#)
        .await;
    server
        .wait_for_metric(r#"mediator_mailbox_refused_total{cap="queue_bytes"} 1"#)
        .await;
    server.wait_for_metric("mediator_mailbox_items 22").await;
    // What the store holds on disk is what it answered for, within the caps.
    assert_eq!(sqlite_items(&db), (22, 20 * 64 + 2 * 3008));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_per_source_and_whole_store_caps_refuse_with_mailbox_full_naming_them() {
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let for_alice: Vec<Vec<u8>> = (0..4).map(|_| sealed_of_len(&alice.queue, 1072)).collect();
    let for_bob: Vec<Vec<u8>> = (0..4).map(|_| sealed_of_len(&bob.queue, 1072)).collect();
    let item = |r: &Recipient, n: usize| {
        if r.id() == alice.id() {
            for_alice[n].clone()
        } else {
            for_bob[n].clone()
        }
    };
    // Per source: 4 KiB an hour from 127.0.0.1; 127.0.0.2 is another source.
    let server = start_with_metrics(Config {
        mailbox_source_bytes: 4096,
        ..config()
    })
    .await;
    let mut b = Client::connect_from(Ipv4Addr::new(127, 0, 0, 1), server.addr).await;
    for n in 0..3 {
        b.add(&alice.queue, clock.now(), item(&alice, n)).await;
    }
    // A retry of a stored item is answered even with the source spent.
    b.add(&alice.queue, clock.now(), item(&alice, 0)).await;
    let message = b
        .refused(
            &add(&alice.queue, clock.now(), item(&alice, 3)),
            ErrorCode::MailboxFull,
        )
        .await;
    assert!(message.contains("this hour"), "{message}");
    let mut other = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), server.addr).await;
    other.add(&alice.queue, clock.now(), item(&alice, 3)).await;
    server
        .wait_for_metric(r#"mediator_mailbox_refused_total{cap="source_bytes"} 1"#)
        .await;
    server.shutdown().await.unwrap();

    // The whole store: a queue (128) and three items (1072 + 64 each) fit 4 KiB.
    let server = start_with_metrics(Config {
        mailbox_max_bytes: 4096,
        ..config()
    })
    .await;
    for n in 0..3 {
        let mut b = Client::connect_from(Ipv4Addr::new(127, 0, 1, n as u8), server.addr).await;
        b.add(&bob.queue, clock.now(), item(&bob, n)).await;
    }
    let mut b = Client::connect_from(Ipv4Addr::new(127, 0, 1, 9), server.addr).await;
    let message = b
        .refused(
            &add(&bob.queue, clock.now(), item(&bob, 3)),
            ErrorCode::MailboxFull,
        )
        .await;
    assert!(
        message.contains("mailbox store holds its maximum"),
        "{message}"
    );
    server
        .wait_for_metric(r#"mediator_mailbox_refused_total{cap="store_bytes"} 1"#)
        .await;
    server
        .wait_for_metric(&format!("mediator_mailbox_bytes {}", 128 + 3 * (1072 + 64)))
        .await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_the_read_key_a_fetch_or_removal_is_refused_and_changes_nothing() {
    let server = start(config()).await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let mut a = Client::connect(server.addr).await;
    a.open(&alice, clock.now()).await;
    let mut b = Client::connect(server.addr).await;
    let item = sealed_message(&alice.queue, CONVERSATION, &bob.identity, 1, "mine");
    let (id, _) = b.add(&alice.queue, clock.now(), item).await;
    // Bob knows alice's queue (he adds to it) but not her read key; his own
    // key for it, or his identity, do not do.
    let thieves = [
        mb::read_key(&bob.identity, &alice.id()),
        bob.identity.clone(),
        alice.queue.add_key(),
    ];
    for thief in &thieves {
        let mut t = Client::connect(server.addr).await;
        let msg = t
            .refused(
                &alice.fetch_signed_by(thief, clock.now()),
                ErrorCode::MailboxAuth,
            )
            .await;
        assert!(msg.contains("signature"), "{msg}");
        let mut t = Client::connect(server.addr).await;
        t.refused(
            &alice.remove_signed_by(thief, clock.now(), vec![id]),
            ErrorCode::MailboxAuth,
        )
        .await;
    }
    // A right signature over other bytes (another time) does not do either.
    let mut t = Client::connect(server.addr).await;
    let mut forged = alice.fetch(clock.now());
    if let ClientMsg::MailboxFetch { at, .. } = &mut forged {
        *at += 1;
    }
    t.refused(&forged, ErrorCode::MailboxAuth).await;
    // An unknown queue.
    let mut t = Client::connect(server.addr).await;
    t.refused(
        &Recipient::new([9; 32], [3; 32]).fetch(clock.now()),
        ErrorCode::MailboxAuth,
    )
    .await;
    // Nothing changed: alice still finds her item, once.
    let mut a = Client::connect(server.addr).await;
    let (items, _) = a.fetch(&alice, clock.now()).await;
    assert_eq!(items.iter().map(|i| i.id).collect::<Vec<_>>(), [id]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn forged_adds_other_add_keys_and_stale_times_are_refused() {
    let server = start(config()).await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let item = || sealed_message(&alice.queue, CONVERSATION, &bob.identity, 1, "x");
    let mut b = Client::connect(server.addr).await;
    b.add(&alice.queue, clock.now(), item()).await;
    // A signature over another item.
    let mut forged = add(&alice.queue, clock.now(), item());
    if let ClientMsg::MailboxAdd { item, .. } = &mut forged {
        item[20] ^= 1;
    }
    let mut t = Client::connect(server.addr).await;
    let msg = t.refused(&forged, ErrorCode::MailboxAuth).await;
    assert!(msg.contains("signature"), "{msg}");
    // A stranger's own add key, well signed, for alice's queue.
    let stranger = Identity::from_seed(&[77; 32]);
    let at = clock.now();
    let sealed = item();
    let foreign = ClientMsg::MailboxAdd {
        queue: alice.id(),
        add_key: stranger.public().0,
        at,
        sig: mb::sign(&stranger, &mb::add_signed(&alice.id(), at, &sealed)),
        item: sealed,
    };
    let mut t = Client::connect(server.addr).await;
    let msg = t.refused(&foreign, ErrorCode::MailboxAuth).await;
    assert!(msg.contains("other keys"), "{msg}");
    // Times more than 300 s off, either way, for every request.
    for skew in [-301i64, 301] {
        let at = clock.now().saturating_add_signed(skew);
        for request in [
            add(&alice.queue, at, item()),
            alice.open(at),
            alice.fetch(at),
            alice.remove(at, vec![]),
        ] {
            let mut t = Client::connect(server.addr).await;
            let msg = t.refused(&request, ErrorCode::MailboxAuth).await;
            assert!(msg.contains("clock"), "{msg}");
        }
    }
    // Within the skew is fine.
    let mut a = Client::connect(server.addr).await;
    assert_eq!(a.open(&alice, clock.now() - 290).await, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_add_replayed_after_removal_is_refused_until_the_items_expiry() {
    let server = start(config()).await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let item = sealed_message(&alice.queue, CONVERSATION, &bob.identity, 1, "once");
    let mut a = Client::connect(server.addr).await;
    a.open(&alice, clock.now()).await;
    let mut b = Client::connect(server.addr).await;
    let (id, _) = b.add(&alice.queue, clock.now(), item.clone()).await;
    assert_eq!(a.remove(&alice, clock.now(), vec![id]).await, 1);
    // The same request again (as captured), and the same item freshly signed.
    let mut r = Client::connect(server.addr).await;
    let msg = r
        .refused(
            &add(&alice.queue, clock.now(), item.clone()),
            ErrorCode::MailboxReplay,
        )
        .await;
    assert!(msg.contains("removed"), "{msg}");
    assert_eq!(a.fetch(&alice, clock.now()).await, (vec![], false));
    server.shutdown().await.unwrap();
}

/// Paused time: the mediator's mailbox clock follows tokio's, so a TTL of an
/// hour passes at once; the sweeper runs every virtual minute.
#[tokio::test(start_paused = true)]
async fn items_past_their_ttl_are_not_handed_out_and_are_gone_after_the_sweep() {
    const TTL: u64 = 3600;
    let server = start_with_metrics(Config {
        mailbox_ttl: Duration::from_secs(TTL),
        ..config()
    })
    .await;
    let clock = TestClock::new();
    let (alice, bob) = (alice(), bob());
    let mut a = Client::connect(server.addr).await;
    a.open(&alice, clock.now()).await;
    let mut b = Client::connect(server.addr).await;
    let (first, expires) = b
        .add(&alice.queue, clock.now(), sealed_of_len(&alice.queue, 64))
        .await;
    assert!(expires.abs_diff(clock.now() + TTL) <= 1);
    b.add(&alice.queue, clock.now(), sealed_of_len(&alice.queue, 80))
        .await;
    // Bob's queue is never opened or fetched: only the sweep can empty it.
    b.add(&bob.queue, clock.now(), sealed_of_len(&bob.queue, 96))
        .await;
    assert_eq!(a.remove(&alice, clock.now(), vec![first]).await, 1);
    drop((a, b));
    tokio::time::sleep(Duration::from_secs(TTL / 2)).await;
    // Alice asks half-way: her queue is in use, and one item waits.
    let mut a = Client::connect(server.addr).await;
    assert_eq!(a.fetch(&alice, clock.now()).await.0.len(), 1);
    drop(a);
    tokio::time::sleep(Duration::from_secs(TTL / 2 + 2)).await;
    let mut a = Client::connect(server.addr).await;
    assert_eq!(a.fetch(&alice, clock.now()).await, (vec![], false));
    drop(a);
    // Bob's item goes at the next sweep.
    tokio::time::sleep(SWEEP_EVERY).await;
    server.wait_for_metric("mediator_mailbox_items 0").await;
    // Alice's queue goes a TTL after her last request (the fetch just now),
    // and with it everything the store counted: no queue, item or
    // remembered id is left.
    tokio::time::sleep(Duration::from_secs(TTL) + SWEEP_EVERY).await;
    server.wait_for_metric("mediator_mailbox_bytes 0").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_mailbox_connection_answers_256_requests_and_pings_and_nothing_else() {
    let server = start(config()).await;
    let clock = TestClock::new();
    let alice = alice();
    let mut a = Client::connect(server.addr).await;
    // Pings before the first request are answered as on any connection.
    assert_eq!(a.ask(&ClientMsg::Ping).await, MediatorMsg::Pong);
    a.open(&alice, clock.now()).await;
    assert_eq!(a.ask(&ClientMsg::Ping).await, MediatorMsg::Pong);
    for _ in 1..255 {
        a.fetch(&alice, clock.now()).await;
    }
    assert_eq!(a.ask(&ClientMsg::Ping).await, MediatorMsg::Pong);
    // The 256th request is answered, then the mediator closes.
    a.fetch(&alice, clock.now()).await;
    assert_eq!(a.recv().await, None);

    let mut a = Client::connect(server.addr).await;
    a.open(&alice, clock.now()).await;
    a.refused(&hello(1, "alice"), ErrorCode::Malformed).await;
    let mut a = Client::connect(server.addr).await;
    a.open(&alice, clock.now()).await;
    a.refused(&ClientMsg::Presence { tags: vec![] }, ErrorCode::Malformed)
        .await;
    // An item that cannot be a sealed message, and too many ids.
    let mut a = Client::connect(server.addr).await;
    let msg = a
        .refused(
            &add(&alice.queue, clock.now(), vec![0; 65]),
            ErrorCode::Malformed,
        )
        .await;
    assert!(msg.contains("sealed"), "{msg}");
    let mut a = Client::connect(server.addr).await;
    a.refused(
        &alice.remove(clock.now(), vec![[0; 16]; mb::MAX_REMOVE + 1]),
        ErrorCode::Malformed,
    )
    .await;
    // Allocate reserves a nameplate for a Hello, not for a mailbox.
    let mut a = Client::connect(server.addr).await;
    assert!(matches!(
        a.ask(&ClientMsg::Allocate).await,
        MediatorMsg::Allocated { .. }
    ));
    a.refused(&alice.open(clock.now()), ErrorCode::Malformed)
        .await;
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_silent_mailbox_connection_is_closed_at_the_idle_timeout() {
    let server = start(Config {
        idle_timeout: Duration::from_secs(30),
        ..config()
    })
    .await;
    let clock = TestClock::new();
    let mut a = Client::connect(server.addr).await;
    a.open(&alice(), clock.now()).await;
    let message = a.expect_error(ErrorCode::Timeout).await;
    assert!(message.contains("idle"), "{message}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mailbox_connections_count_against_the_per_address_limits() {
    let server = start(Config {
        per_ip_hellos_per_min: 2,
        ..config()
    })
    .await;
    let clock = TestClock::new();
    let alice = alice();
    for _ in 0..2 {
        let mut a = Client::connect(server.addr).await;
        a.open(&alice, clock.now()).await;
    }
    let mut a = Client::connect(server.addr).await;
    let msg = a
        .refused(&alice.open(clock.now()), ErrorCode::TooManyConnections)
        .await;
    assert!(msg.contains("Hellos from your address"), "{msg}");
    server.shutdown().await.unwrap();
}

/// A mailbox file the mediator cannot open stops it at start, saying what to do.
#[test]
fn an_unusable_mailbox_file_stops_the_binary_with_a_clear_error() {
    let dir = TempDir::new("mbox-bad");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mediator"))
        .args(["--listen", "127.0.0.1:0", "--mailbox-db"])
        .arg(dir.join("no-such-dir/mailbox.sqlite3"))
        .env_remove("MEDIATOR_MAILBOX_DB")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--mailbox-db"), "{stderr}");
}
