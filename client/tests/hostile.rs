//! A hostile peer and a broken mediator against the real `client --json`: at each
//! step of the peer link (frames, handshake, records, messages, file transfer) and
//! of the rendezvous, the raw side breaks a rule, and the client either ends with
//! a clear error and its exit code or ignores it as docs/protocol.md says, never
//! panics, and stays usable where the spec says it should.
//!
//! Most cases meet through the real mediator; the raw peer then works on the
//! peer link only (§1, §6, §7), which does not depend on how the two met.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_mediator::{broken, Broken};
use common::raw_peer::{
    expect_closed, frame_bytes, meet_as_joiner, recv_msg, send_msg, MatchedJoiner, RawPeer,
    WaitingHost,
};
use common::{client_args, Client, Mediator, TempDir};
use rand::rngs::OsRng;
use tokio::io::AsyncWriteExt;
use wire::peer::{MAX_CHAT_TEXT, MAX_FILE_CHUNK};
use wire::{MediatorMsg, PeerHandshake, PeerMsg, Role};

/// How long a stranger's connection may stay open after its offence.
const DROP_WITHIN: Duration = Duration::from_secs(15);

/// A scenario: a mediator, a scratch directory and the room the test uses.
struct Scene {
    med: Mediator,
    dir: TempDir,
    room: String,
}

impl Scene {
    async fn new(tag: &str) -> Scene {
        Scene {
            med: Mediator::start(&[]).await,
            dir: TempDir::new(&format!("hostile-{tag}")),
            room: format!("r-{tag}"),
        }
    }

    /// A client in this scene's room, giving up on reconnecting after a second
    /// (so a lost session ends the run quickly), downloads in the scratch dir.
    fn client(&self, name: &str, extra: &[&str]) -> Client {
        let downloads = self.downloads(name);
        let flags = [
            "--room",
            &self.room,
            "--reconnect-for",
            "1s",
            "--connect-timeout",
            "5s",
            "--downloads",
            downloads.to_str().unwrap(),
        ];
        let mut args = client_args(&self.med.server_arg(), name, &self.dir, &flags);
        // `extra` may replace one of the flags above (`--flag value`) or add one.
        let mut rest = extra.iter().peekable();
        while let Some(flag) = rest.next() {
            match rest.next_if(|v| !v.starts_with("--")) {
                Some(value) => common::set_flag(&mut args, flag, value),
                None => args.push(flag.to_string()),
            }
        }
        Client::start(name, &args)
    }

    fn downloads(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(&format!("downloads-{name}"))
    }

    /// Alice, waiting in the room as the host.
    async fn alice_hosting(&self, extra: &[&str]) -> Client {
        let mut alice = self.client("alice", extra);
        alice.expect("waiting").await;
        alice
    }

    /// Alice hosting, and Mallory matched with her but not yet connected.
    async fn alice_and_mallory(&self, extra: &[&str]) -> (Client, MatchedJoiner) {
        let alice = self.alice_hosting(extra).await;
        let mallory = meet_as_joiner(self.med.addr, &self.room, "mallory").await;
        (alice, mallory)
    }

    /// Alice hosting and connected to Mallory, who holds the session keys.
    async fn alice_connected_to_mallory(&self, extra: &[&str]) -> (Client, RawPeer) {
        let (mut alice, mallory) = self.alice_and_mallory(extra).await;
        let peer = mallory.handshake().await;
        alice.expect("connected").await;
        (alice, peer)
    }
}

/// Waits for the client to exit and checks its code, the `code` of its final
/// `error` event, and that nothing panicked.
async fn ends_with(client: &mut Client, exit: i32, error_code: &str) -> serde_json::Value {
    let code = client.exit_code().await;
    let events = client.drain().await;
    let stderr = client.stderr();
    assert!(!stderr.contains("panicked"), "{}: {stderr}", client.name);
    assert_eq!(
        code, exit,
        "{}: exit code; events {events:?}; stderr {stderr}",
        client.name
    );
    let error = events
        .iter()
        .rev()
        .find(|e| e["event"] == "error")
        .cloned()
        .unwrap_or_else(|| panic!("{}: no error event in {events:?}", client.name));
    assert_eq!(error["code"], error_code, "{error}");
    error
}

/// For a session the client closed as a protocol violation: it says so while
/// going back to the mediator, then gives up (`--reconnect-for 1s`) with exit 10.
async fn ends_as_protocol_violation(client: &mut Client, what: &str) {
    let reconnecting = client.expect("reconnecting").await;
    let reason = reconnecting["reason"].as_str().unwrap();
    assert!(
        reason.contains("broke the protocol") && reason.contains(what),
        "{reason}"
    );
    ends_with(client, 10, "connection_lost").await;
}

/// Checks the client is still fine: a chat message from `peer` is shown.
async fn still_chats(client: &mut Client, peer: &mut RawPeer, id: u64) {
    let text = format!("still here {id}");
    let chat = peer.chat(&text);
    peer.send(&chat).await;
    let shown = client.expect("message").await;
    assert_eq!(shown["text"], text.as_str());
    assert!(!client.stderr().contains("panicked"), "{}", client.stderr());
}

fn no_panic(client: &Client) {
    let stderr = client.stderr();
    assert!(!stderr.contains("panicked"), "{}: {stderr}", client.name);
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

// ─── Frames and the handshake, at the host ─────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_from_a_stranger_is_dropped_and_the_real_peer_still_connects() {
    let scene = Scene::new("big-first").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&[]).await;
    let mut stranger = mallory.dial().await;
    // One byte over the peer bound, with no payload behind it: refused on the header.
    let over = (wire::frame::PEER_FRAME_MAX as u32 + 1).to_be_bytes();
    stranger.write_all(&over).await.unwrap();
    expect_closed(&mut stranger, DROP_WITHIN).await;
    let mut peer = mallory.handshake().await;
    alice.expect("connected").await;
    still_chats(&mut alice, &mut peer, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_length_frame_from_a_stranger_is_dropped_and_the_real_peer_still_connects() {
    let scene = Scene::new("zero-first").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&[]).await;
    let mut stranger = mallory.dial().await;
    stranger.write_all(&[0, 0, 0, 0]).await.unwrap();
    expect_closed(&mut stranger, DROP_WITHIN).await;
    mallory.handshake().await;
    alice.expect("connected").await;
    no_panic(&alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_first_message_is_dropped_and_the_real_peer_still_connects() {
    let scene = Scene::new("junk-first").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&[]).await;
    let mut stranger = mallory.dial().await;
    stranger
        .write_all(&frame_bytes(b"GET / HTTP/1.1\r\n\r\n"))
        .await
        .unwrap();
    expect_closed(&mut stranger, DROP_WITHIN).await;
    mallory.handshake().await;
    alice.expect("connected").await;
    no_panic(&alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_hello_dripped_one_byte_at_a_time_completes_the_handshake() {
    let scene = Scene::new("drip-hello").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&[]).await;
    let mut stream = mallory.dial().await;
    let (state, hello) = mallory.handshake.hello(&mut OsRng);
    for byte in frame_bytes(&wire::encode(&hello).unwrap()) {
        stream.write_all(&[byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut framed =
        tokio_util::codec::Framed::new(stream, wire::FrameCodec::new(wire::Link::Peer));
    let confirm: PeerHandshake = recv_msg(&mut framed).await;
    let (_session, reply) = state.on_host_confirm(confirm).expect("host confirms");
    send_msg(&mut framed, &reply).await;
    alice.expect("connected").await;
    no_panic(&alice);
}

/// A joiner that sends its `JoinerConfirm` and its first chat record in one
/// write (a fast peer, or one whose segments coalesced), and nothing after: the
/// host must read the record at once. Its reader used to start from a buffer
/// filled by hand, which tokio-util treats as "read the socket first", so a
/// record that came with the handshake's last message waited for the peer's next
/// bytes (with a silent peer, forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_comes_with_the_joiner_confirm_is_read_at_once() {
    let scene = Scene::new("record-with-confirm").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&[]).await;
    let mut framed = mallory.dial_framed().await;
    let (state, hello) = mallory.handshake.hello(&mut OsRng);
    send_msg(&mut framed, &hello).await;
    let confirm: PeerHandshake = recv_msg(&mut framed).await;
    let (session, reply) = state.on_host_confirm(confirm).expect("host confirms");
    let (mut sealer, _opener) = session.split();
    let chat = common::raw_peer::first_chat(&scene.room, "with the confirm");
    let record = sealer
        .seal(&wire::encode(&chat).unwrap(), &mut OsRng)
        .unwrap();
    let mut bytes = frame_bytes(&wire::encode(&reply).unwrap());
    bytes.extend(frame_bytes(&record));
    framed.get_mut().write_all(&bytes).await.unwrap();
    // Nothing more from us: only the record already sent can show the message.
    let shown = alice.expect("message").await;
    assert_eq!(shown["text"], "with the confirm");
    no_panic(&alice);
}

/// Watches a connection the host holds: the receiver fires once the host closes
/// it (end of stream or an error), never before.
fn closed_by_host(stream: tokio::net::TcpStream) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut stream = stream;
        let mut buf = [0u8; 64];
        // Bounded by the host: it sends nothing on these, then closes them.
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(());
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stranger_does_not_hold_up_the_real_peer() {
    let scene = Scene::new("stall-first").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&[]).await;
    // Three bytes of a header, then nothing: the host must not wait on it alone.
    let mut stalled = mallory.dial().await;
    stalled.write_all(&[0, 0, 1]).await.unwrap();
    let mut stalled = closed_by_host(stalled);
    let mut framed = mallory.dial_framed().await;
    let (state, hello) = mallory.handshake.hello(&mut OsRng);
    send_msg(&mut framed, &hello).await;
    let confirm: PeerHandshake = recv_msg(&mut framed).await;
    // The host answered the real peer while it still held the stranger (it
    // drops that one at its first-message deadline, or once a session is up,
    // which needs our JoinerConfirm): it did not wait for it.
    assert!(
        matches!(
            stalled.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ),
        "the host dropped the stalled stranger before answering the real peer"
    );
    let (_session, reply) = state.on_host_confirm(confirm).expect("host confirms");
    send_msg(&mut framed, &reply).await;
    alice.expect("connected").await;
    no_panic(&alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_stalled_strangers_keep_the_real_peer_out_only_until_the_host_drops_them() {
    let scene = Scene::new("stall-eight").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&["--connect-timeout", "30s"]).await;
    // The host judges a few connections at once per source and drops one that
    // brings no first message within 3 s (crates/engine/src/connect.rs): 8 silent ones
    // from the peer's own address fill its slots. Delayed, not locked out: once
    // the host has dropped them, the real peer's next attempt gets in.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut s = mallory.dial().await;
        s.write_all(&[0]).await.unwrap();
        stalled.push(closed_by_host(s));
    }
    for closed in stalled {
        tokio::time::timeout(DROP_WITHIN, closed)
            .await
            .expect("the host drops a silent connection")
            .expect("watcher");
    }
    mallory
        .try_handshake()
        .await
        .expect("the first attempt after the strangers were dropped gets in");
    alice.expect("connected").await;
    no_panic(&alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_confirm_before_the_peer_hello_is_rejected_and_the_host_keeps_waiting() {
    let scene = Scene::new("confirm-first").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&[]).await;
    let mut framed = mallory.dial_framed().await;
    send_msg(
        &mut framed,
        &PeerHandshake::JoinerConfirm {
            nonce: [1; 32],
            mac: [2; 32],
            signature: wire::Signature64([3; 64]),
        },
    )
    .await;
    let answer: PeerHandshake = recv_msg(&mut framed).await;
    assert!(matches!(answer, PeerHandshake::Reject { .. }), "{answer:?}");
    alice.expect("rejected").await;
    mallory.handshake().await;
    alice.expect("connected").await;
    no_panic(&alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_peer_hello_instead_of_the_joiner_confirm_fails_only_that_attempt() {
    let scene = Scene::new("hello-twice").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&[]).await;
    let mut framed = mallory.dial_framed().await;
    let (_state, hello) = mallory.handshake.hello(&mut OsRng);
    send_msg(&mut framed, &hello).await;
    let confirm: PeerHandshake = recv_msg(&mut framed).await;
    assert!(matches!(confirm, PeerHandshake::HostConfirm { .. }));
    let (_again, hello_again) = mallory.handshake.hello(&mut OsRng);
    send_msg(&mut framed, &hello_again).await;
    expect_closed(framed.get_mut(), DROP_WITHIN).await;
    mallory.handshake().await;
    alice.expect("connected").await;
    no_panic(&alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_confirm_that_does_not_open_the_commitment_ends_with_keys_differ() {
    let scene = Scene::new("bad-commit").await;
    let (mut alice, mallory) = scene.alice_and_mallory(&[]).await;
    let mut framed = mallory.dial_framed().await;
    let (state, hello) = mallory.handshake.hello(&mut OsRng);
    send_msg(&mut framed, &hello).await;
    let confirm: PeerHandshake = recv_msg(&mut framed).await;
    let (_session, reply) = state.on_host_confirm(confirm).expect("host confirms");
    let PeerHandshake::JoinerConfirm { mac, signature, .. } = reply else {
        panic!("{reply:?}")
    };
    // A nonce other than the one committed to in the PeerHello.
    send_msg(
        &mut framed,
        &PeerHandshake::JoinerConfirm {
            nonce: [0x5a; 32],
            mac,
            signature,
        },
    )
    .await;
    ends_with(&mut alice, 7, "keys_differ").await;
}

// ─── Records, at the host ───────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_record_ends_the_session_with_an_integrity_error() {
    let scene = Scene::new("replay").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    let record = {
        let c = mallory.chat("once");
        mallory.seal(&c)
    };
    mallory.send_record(&record).await;
    alice.expect("message").await;
    mallory.send_record(&record).await;
    ends_with(&mut alice, 9, "integrity").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_records_end_the_session_with_an_integrity_error() {
    let scene = Scene::new("reorder").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    let first = {
        let c = mallory.chat("first");
        mallory.seal(&c)
    };
    let second = {
        let c = mallory.chat("second");
        mallory.seal(&c)
    };
    mallory.send_record(&second).await;
    mallory.send_record(&first).await;
    ends_with(&mut alice, 9, "integrity").await;
    assert!(
        !alice.seen.iter().any(|e| e["event"] == "message"),
        "a reordered record was shown: {:?}",
        alice.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflected_record_ends_the_session_with_an_integrity_error() {
    let scene = Scene::new("reflect").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    // Alice's own record (her ack of our message), sent back to her.
    let chat = mallory.chat("ack me");
    mallory.send(&chat).await;
    // Whatever she sends first (the ack, or a ping) goes back unchanged.
    let (raw, _msg) = mallory.recv_record().await;
    mallory.send_record(&raw).await;
    ends_with(&mut alice, 9, "integrity").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_shorter_than_the_minimum_ends_the_session_with_an_integrity_error() {
    let scene = Scene::new("short-record").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    mallory.send_record(&[0u8; 47]).await;
    ends_with(&mut alice, 9, "integrity").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_after_the_handshake_closes_the_session() {
    let scene = Scene::new("big-record").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    let over = (wire::frame::PEER_FRAME_MAX as u32 + 1).to_be_bytes();
    mallory.send_raw(&over).await;
    ends_as_protocol_violation(&mut alice, "frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_length_frame_after_the_handshake_closes_the_session() {
    let scene = Scene::new("zero-record").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    mallory.send_raw(&[0, 0, 0, 0]).await;
    ends_as_protocol_violation(&mut alice, "frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_dripped_one_byte_at_a_time_is_delivered() {
    let scene = Scene::new("drip-record").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    let record = {
        let c = mallory.chat("slowly");
        mallory.seal(&c)
    };
    for byte in frame_bytes(&record) {
        mallory.send_raw(&[byte]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let shown = alice.expect("message").await;
    assert_eq!(shown["text"], "slowly");
    still_chats(&mut alice, &mut mallory, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_message_inside_a_record_closes_the_session() {
    let scene = Scene::new("hs-in-record").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    let plaintext = wire::encode(&PeerHandshake::Reject {
        reason: "x".repeat(300),
    })
    .unwrap();
    let record = mallory.sealer.seal(&plaintext, &mut OsRng).unwrap();
    mallory.send_record(&record).await;
    // As a `PeerMsg` those bytes read as `Pong { nonce: 300 }` (index 3, then the
    // reason's length) with the 300 bytes of the reason left over.
    ends_as_protocol_violation(&mut alice, "300 trailing bytes after the message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_message_type_closes_the_session() {
    let scene = Scene::new("unknown-msg").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    // Variant 200 does not exist (§7 lists far fewer).
    let record = mallory.sealer.seal(&[200, 0], &mut OsRng).unwrap();
    mallory.send_record(&record).await;
    ends_as_protocol_violation(&mut alice, "integer `200`, expected variant index").await;
}

// ─── Messages, at the host ──────────────────────────────────────────────────

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_answered_in_order_and_the_chat_goes_on() {
    let scene = Scene::new("ping-flood").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    const PINGS: u64 = 5_000;
    for nonce in 0..PINGS {
        mallory.feed(&PeerMsg::Ping { nonce }).await;
    }
    mallory.flush().await;
    let chat = mallory.chat("after the flood");
    mallory.send(&chat).await;
    let mut next = 0u64;
    loop {
        match mallory.recv_any().await {
            PeerMsg::Pong { nonce } => {
                assert_eq!(nonce, next, "pongs out of order");
                next += 1;
            }
            // Her receipt for our message (§7.1); her summary comes first.
            PeerMsg::GroupCatchup(c) if c.msgs.is_empty() => break,
            PeerMsg::GroupSummary(_) => {}
            PeerMsg::Ping { nonce } => mallory.send(&PeerMsg::Pong { nonce }).await,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(next, PINGS, "every ping answered before the chat's receipt");
    let shown = alice.expect("message").await;
    assert_eq!(shown["text"], "after the flood");
    no_panic(&alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_peer_that_never_reads_ends_the_session() {
    let scene = Scene::new("ping-noread").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    // Pings until Alice gives up on us: her answers pile up in a bounded queue
    // behind a socket we never read.
    let started = Instant::now();
    let mut nonce = 0u64;
    'flood: while started.elapsed() < Duration::from_secs(60) {
        for _ in 0..1000 {
            let record = mallory.seal(&PeerMsg::Ping { nonce });
            nonce += 1;
            let framed = &mut mallory.framed;
            if futures::SinkExt::feed(framed, record.as_slice())
                .await
                .is_err()
            {
                break 'flood;
            }
        }
        let flushed = tokio::time::timeout(
            Duration::from_secs(5),
            futures::SinkExt::<&[u8]>::flush(&mut mallory.framed),
        )
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            break;
        }
    }
    let reconnecting = alice.expect("reconnecting").await;
    assert!(
        reconnecting["reason"]
            .as_str()
            .unwrap()
            .contains("stopped reading"),
        "{reconnecting}"
    );
    ends_with(&mut alice, 10, "connection_lost").await;
}

/// The acks Alice has shown, by id.
fn acks(alice: &Client) -> Vec<u64> {
    alice
        .seen
        .iter()
        .filter(|e| e["event"] == "ack")
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

/// Receipts (v3, §7.1) are the peer's word: they ack only what Alice wrote,
/// never a message she has not written yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_for_messages_never_sent_are_ignored() {
    let scene = Scene::new("bad-acks").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    alice.say("hello mallory").await;
    let sent = alice.expect("sent").await;
    assert_eq!(sent["id"], 1);
    let PeerMsg::Group(msg) = mallory.recv().await else {
        panic!("expected Alice's message")
    };
    let alice_key = msg.body.author;
    for seq in [0, 42, u64::MAX] {
        mallory.send(&RawPeer::receipt(alice_key, seq)).await;
    }
    still_chats(&mut alice, &mut mallory, 1).await;
    assert_eq!(acks(&alice), [1], "{:?}", alice.seen);
    // Her second message waits for a receipt that covers it.
    alice.say("second").await;
    assert_eq!(alice.expect("sent").await["id"], 2);
    let PeerMsg::Group(_) = mallory.recv().await else {
        panic!("expected Alice's second message")
    };
    still_chats(&mut alice, &mut mallory, 2).await;
    assert_eq!(
        acks(&alice),
        [1],
        "an earlier receipt acked a later message"
    );
    mallory.send(&RawPeer::receipt(alice_key, 2)).await;
    assert_eq!(alice.expect("ack").await["id"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_text_over_the_limit_closes_the_session() {
    let scene = Scene::new("long-chat").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    let chat = mallory.chat(&"a".repeat(MAX_CHAT_TEXT + 1));
    mallory.send(&chat).await;
    ends_as_protocol_violation(&mut alice, "over the limit").await;
    assert!(!alice.seen.iter().any(|e| e["event"] == "message"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_text_at_the_limit_is_shown() {
    let scene = Scene::new("full-chat").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&[]).await;
    let chat = mallory.chat(&"a".repeat(MAX_CHAT_TEXT));
    mallory.send(&chat).await;
    let shown = alice.expect("message").await;
    assert_eq!(shown["text"].as_str().unwrap().len(), MAX_CHAT_TEXT);
}

// ─── File transfer, at the receiver ─────────────────────────────────────────

/// Offers `size` bytes under `name` and expects Alice (`--yes`) to accept at 0.
async fn offer_accepted(mallory: &mut RawPeer, id: u64, name: &str, size: u64) {
    mallory
        .send(&PeerMsg::FileOffer {
            id,
            name: name.into(),
            size,
        })
        .await;
    match mallory.recv().await {
        PeerMsg::FileAccept { id: got, offset } => assert_eq!((got, offset), (id, 0)),
        other => panic!("expected FileAccept, got {other:?}"),
    }
}

/// Expects Alice to cancel transfer `id` and to leave nothing in `downloads`.
async fn receiver_cancels(alice: &mut Client, mallory: &mut RawPeer, id: u64, downloads: &Path) {
    match mallory.recv().await {
        PeerMsg::FileCancel { id: got } => assert_eq!(got, id),
        other => panic!("expected FileCancel, got {other:?}"),
    }
    alice.expect("file_stopped").await;
    still_chats(alice, mallory, 1).await;
    assert!(listing(downloads).is_empty(), "{:?}", listing(downloads));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_chunk_past_the_offered_size_makes_the_receiver_cancel() {
    let scene = Scene::new("chunk-past").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&["--yes"]).await;
    offer_accepted(&mut mallory, 7, "small.bin", 10).await;
    mallory
        .send(&PeerMsg::FileChunk {
            id: 7,
            offset: 0,
            data: vec![1; 20],
        })
        .await;
    receiver_cancels(&mut alice, &mut mallory, 7, &scene.downloads("alice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_chunk_at_a_wrong_offset_makes_the_receiver_cancel() {
    let scene = Scene::new("chunk-gap").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&["--yes"]).await;
    offer_accepted(&mut mallory, 8, "gap.bin", 100).await;
    mallory
        .send(&PeerMsg::FileChunk {
            id: 8,
            offset: 0,
            data: vec![1; 10],
        })
        .await;
    mallory
        .send(&PeerMsg::FileChunk {
            id: 8,
            offset: 50,
            data: vec![2; 10],
        })
        .await;
    receiver_cancels(&mut alice, &mut mallory, 8, &scene.downloads("alice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_chunk_over_the_chunk_limit_closes_the_session() {
    let scene = Scene::new("chunk-big").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&["--yes"]).await;
    offer_accepted(&mut mallory, 9, "big.bin", 1 << 20).await;
    mallory
        .send(&PeerMsg::FileChunk {
            id: 9,
            offset: 0,
            data: vec![3; MAX_FILE_CHUNK + 1],
        })
        .await;
    ends_as_protocol_violation(&mut alice, "file chunk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_chunks_and_a_done_for_no_offer_are_ignored() {
    let scene = Scene::new("chunk-orphan").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&["--yes"]).await;
    mallory
        .send(&PeerMsg::FileChunk {
            id: 404,
            offset: 0,
            data: vec![1; 100],
        })
        .await;
    mallory
        .send(&PeerMsg::FileDone {
            id: 404,
            blake3: [0; 32],
        })
        .await;
    mallory
        .send(&PeerMsg::FileAccept { id: 405, offset: 3 })
        .await;
    mallory.send(&PeerMsg::FileCancel { id: 406 }).await;
    still_chats(&mut alice, &mut mallory, 1).await;
    assert!(listing(&scene.downloads("alice")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_name_full_of_escape_sequences_is_shown_and_saved_without_them() {
    let scene = Scene::new("name-escape").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&["--yes"]).await;
    let name = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31mevil\u{202e}txt.exe\r\n.txt";
    let data = b"harmless".to_vec();
    offer_accepted(&mut mallory, 11, name, data.len() as u64).await;
    mallory
        .send(&PeerMsg::FileChunk {
            id: 11,
            offset: 0,
            data: data.clone(),
        })
        .await;
    let blake3: [u8; 32] = blake3::hash(&data).into();
    mallory.send(&PeerMsg::FileDone { id: 11, blake3 }).await;
    // JSON events carry peer strings as sent (JSON-escaped, for scripts); the
    // text renderers sanitize them (ui.rs). What lands on disk must be clean.
    let done = alice.expect("file_done").await;
    let path = done["path"].as_str().unwrap();
    assert!(
        !path.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{path:?}"
    );
    let saved = listing(&scene.downloads("alice"));
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert!(
        !saved[0].chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{saved:?}"
    );
    no_panic(&alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_offer_name_is_shortened_to_a_file_name_the_system_takes() {
    let scene = Scene::new("name-huge").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&["--yes"]).await;
    let name = format!("{}.txt", "n".repeat(60_000));
    offer_accepted(&mut mallory, 12, &name, 2).await;
    mallory
        .send(&PeerMsg::FileChunk {
            id: 12,
            offset: 0,
            data: b"ok".to_vec(),
        })
        .await;
    let blake3: [u8; 32] = blake3::hash(b"ok").into();
    mallory.send(&PeerMsg::FileDone { id: 12, blake3 }).await;
    alice.expect("file_done").await;
    let saved = listing(&scene.downloads("alice"));
    assert_eq!(saved.len(), 1);
    assert!(
        saved[0].len() <= 255 && saved[0].ends_with(".txt"),
        "{}",
        saved[0].len()
    );
    no_panic(&alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_names_that_climb_out_stay_inside_the_downloads_directory() {
    let scene = Scene::new("name-path").await;
    let (mut alice, mut mallory) = scene.alice_connected_to_mallory(&["--yes"]).await;
    for (i, name) in ["../../escaped", "/tmp/escaped", "..\\..\\escaped"]
        .iter()
        .enumerate()
    {
        let id = 20 + i as u64;
        mallory
            .send(&PeerMsg::FileOffer {
                id,
                name: name.to_string(),
                size: 1,
            })
            .await;
        if let PeerMsg::FileAccept { .. } = mallory.recv().await {
            mallory
                .send(&PeerMsg::FileChunk {
                    id,
                    offset: 0,
                    data: b"x".to_vec(),
                })
                .await;
            let blake3: [u8; 32] = blake3::hash(b"x").into();
            mallory.send(&PeerMsg::FileDone { id, blake3 }).await;
        }
    }
    still_chats(&mut alice, &mut mallory, 1).await;
    assert_eq!(
        listing(scene.dir.path())
            .iter()
            .filter(|n| n.contains("escaped"))
            .count(),
        0
    );
    for name in listing(&scene.downloads("alice")) {
        assert!(!name.contains('/') && !name.contains('\\'), "{name}");
    }
}

// ─── The handshake, at the joiner ───────────────────────────────────────────

impl Scene {
    /// Mallory waiting as the host, and Bob started as the joiner.
    async fn mallory_hosting_bob(&self, extra: &[&str]) -> (common::raw_peer::MatchedHost, Client) {
        let waiting = WaitingHost::start(self.med.addr, &self.room, "mallory").await;
        let bob = self.client("bob", extra);
        (waiting.matched().await, bob)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_confirm_with_a_wrong_mac_ends_the_joiner_with_keys_differ() {
    let scene = Scene::new("bad-hostmac").await;
    let (mallory, mut bob) = scene.mallory_hosting_bob(&[]).await;
    let mut framed = mallory.accept_framed().await;
    let hello: PeerHandshake = recv_msg(&mut framed).await;
    let (_state, confirm) = mallory.handshake.on_peer_hello(hello, &mut OsRng).unwrap();
    let PeerHandshake::HostConfirm {
        nonce,
        mut mac,
        resumed,
        identity,
        signature,
    } = confirm
    else {
        panic!("{confirm:?}")
    };
    mac[0] ^= 1;
    send_msg(
        &mut framed,
        &PeerHandshake::HostConfirm {
            nonce,
            mac,
            resumed,
            identity,
            signature,
        },
    )
    .await;
    ends_with(&mut bob, 7, "keys_differ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_resuming_a_session_never_offered_is_refused() {
    let scene = Scene::new("bad-resume").await;
    let (mallory, mut bob) = scene.mallory_hosting_bob(&[]).await;
    let mut framed = mallory.accept_framed().await;
    let hello: PeerHandshake = recv_msg(&mut framed).await;
    let (_state, confirm) = mallory.handshake.on_peer_hello(hello, &mut OsRng).unwrap();
    let PeerHandshake::HostConfirm {
        nonce,
        mac,
        identity,
        signature,
        ..
    } = confirm
    else {
        panic!("{confirm:?}")
    };
    send_msg(
        &mut framed,
        &PeerHandshake::HostConfirm {
            nonce,
            mac,
            resumed: true,
            identity,
            signature,
        },
    )
    .await;
    let error = ends_with(&mut bob, 6, "peer_unreachable").await;
    assert!(
        error["text"].as_str().unwrap().contains("not offered"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_hello_from_the_host_is_refused_as_out_of_order() {
    let scene = Scene::new("host-hello").await;
    let (mallory, mut bob) = scene.mallory_hosting_bob(&[]).await;
    let mut framed = mallory.accept_framed().await;
    let hello: PeerHandshake = recv_msg(&mut framed).await;
    // Bob's own PeerHello, sent back to him where a HostConfirm belongs.
    send_msg(&mut framed, &hello).await;
    let error = ends_with(&mut bob, 6, "peer_unreachable").await;
    assert!(
        error["text"].as_str().unwrap().contains("unexpected"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_from_the_host_ends_the_joiner_without_printing_its_escapes() {
    let scene = Scene::new("host-reject").await;
    let (mallory, mut bob) = scene.mallory_hosting_bob(&[]).await;
    let mut framed = mallory.accept_framed().await;
    let _hello: PeerHandshake = recv_msg(&mut framed).await;
    send_msg(
        &mut framed,
        &PeerHandshake::Reject {
            reason: "\u{1b}[2J\u{1b}]0;owned\u{7}go away".into(),
        },
    )
    .await;
    ends_with(&mut bob, 7, "keys_differ").await;
    for event in &bob.seen {
        let text = event.to_string();
        assert!(
            !text.contains("\\u001b"),
            "an escape reached the output: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_answering_garbage_once_is_retried_and_the_retry_connects() {
    let scene = Scene::new("host-garbage").await;
    let (mallory, mut bob) = scene.mallory_hosting_bob(&[]).await;
    let mut first = mallory.accept().await;
    first.write_all(&[0xff; 4]).await.unwrap();
    drop(first);
    let mut peer = mallory.handshake().await;
    bob.expect("connected").await;
    still_chats(&mut bob, &mut peer, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_answers_lets_the_joiner_give_up_in_bounded_time() {
    let scene = Scene::new("host-stall").await;
    let (mallory, mut bob) = scene.mallory_hosting_bob(&[]).await;
    // Accept every attempt and never answer.
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            held.push(mallory.accept().await);
        }
    });
    // No direct path, and the relay refused (the raw host said no_relay): exit
    // 12. Bounded: --connect-timeout 5s, and an attempt in flight may take its
    // handshake step (10 s); `ends_with` gives up on a hang after 30 s.
    ends_with(&mut bob, 12, "no_path").await;
    keep.abort();
}

// ─── A broken mediator ──────────────────────────────────────────────────────

/// Bob against a broken mediator at `addr`; returns his final error event. Its
/// text says what broke, which is what shows he did not sit out a timeout
/// (`ends_with` gives up on a hang after 30 s).
async fn against_broken(addr: std::net::SocketAddr, exit: i32, code: &str) -> serde_json::Value {
    let dir = TempDir::new("hostile-broken");
    let mut bob = Client::start(
        "bob",
        &client_args(
            &addr.to_string(),
            "bob",
            &dir,
            &["--room", "r-broken", "--connect-timeout", "5s"],
        ),
    );
    ends_with(&mut bob, exit, code).await
}

fn mediator_frame(msg: &MediatorMsg) -> Vec<u8> {
    frame_bytes(&wire::encode(msg).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_answering_with_text_gives_exit_3_promptly() {
    let addr = broken(Broken::Answer(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec())).await;
    let error = against_broken(addr, 3, "mediator_unreachable").await;
    assert!(
        error["text"].as_str().unwrap().contains("connection lost"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_sending_an_undecodable_frame_gives_exit_3_promptly() {
    let addr = broken(Broken::Answer(frame_bytes(&[0xee; 40]))).await;
    let error = against_broken(addr, 3, "mediator_unreachable").await;
    assert!(
        error["text"].as_str().unwrap().contains("unreadable"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_sending_a_zero_length_frame_gives_exit_3_promptly() {
    let addr = broken(Broken::Answer(vec![0, 0, 0, 0])).await;
    let error = against_broken(addr, 3, "mediator_unreachable").await;
    assert!(
        error["text"].as_str().unwrap().contains("empty frame"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_closing_after_the_hello_gives_exit_3_promptly() {
    let addr = broken(Broken::AnswerAndClose(Vec::new())).await;
    let error = against_broken(addr, 3, "mediator_unreachable").await;
    assert!(
        error["text"].as_str().unwrap().contains("closed"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_with_an_escape_laden_error_is_reported_sanitized() {
    let addr = broken(Broken::Answer(mediator_frame(&MediatorMsg::Error {
        code: wire::ErrorCode::BadName,
        message: "\u{1b}[2J\u{1b}]0;owned\u{7}no".into(),
    })))
    .await;
    let error = against_broken(addr, 4, "bad_name").await;
    assert!(
        !error["text"].as_str().unwrap().contains('\u{1b}'),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_matching_with_an_invalid_public_value_gives_a_clear_error() {
    let addr = broken(Broken::Answer(mediator_frame(&MediatorMsg::Matched {
        role: Role::Joiner,
        peer_name: "eve".into(),
        public: vec![0xff; 256],
        observed_addr: "127.0.0.1:9".parse().unwrap(),
        listen_port: 9,
        local_addrs: vec![],
        your_addr: "127.0.0.1:9".parse().unwrap(),
        relay: wire::rendezvous::RelayOffer::Off,
    })))
    .await;
    let error = against_broken(addr, 6, "peer_unreachable").await;
    assert!(
        error["text"].as_str().unwrap().contains("invalid"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_announcing_an_invalid_peer_name_gives_a_clear_error() {
    let keys = dhke::KeyPair::generate(dhke::Group::Modp2048, &mut OsRng);
    let addr = broken(Broken::Answer(mediator_frame(&MediatorMsg::Matched {
        role: Role::Joiner,
        peer_name: "\u{1b}[31mroot\u{202e}".into(),
        public: keys.public().to_vec(),
        observed_addr: "127.0.0.1:9".parse().unwrap(),
        listen_port: 9,
        local_addrs: vec![],
        your_addr: "127.0.0.1:9".parse().unwrap(),
        relay: wire::rendezvous::RelayOffer::Off,
    })))
    .await;
    let error = against_broken(addr, 6, "peer_unreachable").await;
    assert!(
        error["text"].as_str().unwrap().contains("peer name"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_that_stalls_after_the_hello_gives_exit_3_in_bounded_time() {
    let addr = broken(Broken::Stall).await;
    let dir = TempDir::new("hostile-stall");
    let mut bob = Client::start(
        "bob",
        &client_args(&addr.to_string(), "bob", &dir, &["--room", "r-stall"]),
    );
    // The client pings after 20 s and gives up 30 s after that without an answer
    // ("stopped answering"); 90 s only keeps a hang from lasting.
    let code = bob.exit_code_within(Duration::from_secs(90)).await;
    assert_eq!(code, 3, "{:?}", bob.drain().await);
    let events = bob.drain().await;
    let error = events.iter().rev().find(|e| e["event"] == "error").unwrap();
    assert!(
        error["text"]
            .as_str()
            .unwrap()
            .contains("stopped answering"),
        "{error}"
    );
    no_panic(&bob);
}

/// Mallory takes alice's messages and never confirms one. Once she has more
/// unconfirmed than a conversation allows, typing there waits; her other
/// conversations do not: she opens a room with bob and they chat.
#[tokio::test]
async fn a_peer_that_never_confirms_holds_up_typing_in_its_own_conversation_only() {
    let s = Scene::new("unconfirmed").await;
    let (mut alice, _mallory) = s.alice_connected_to_mallory(&[]).await;
    // engine::conversation::MAX_UNACKED is 500: the last of these waits.
    for i in 0..=500 {
        alice.say(&format!("unconfirmed {i}")).await;
    }
    let mut bob = Client::start(
        "bob",
        &client_args(
            &s.med.server_arg(),
            "bob",
            &s.dir,
            &["--room", "r-unconfirmed-bob"],
        ),
    );
    bob.expect("waiting").await;
    alice.say("/room r-unconfirmed-bob").await;
    let connected = alice.expect("connected").await;
    assert_eq!(connected["conversation"]["number"], 2, "{connected}");
    bob.expect("connected").await;
    alice.say("bob, are you there?").await;
    let got = bob.expect("message").await;
    assert_eq!(got["text"], "bob, are you there?", "{got}");
    bob.say("here").await;
    assert_eq!(alice.expect("message").await["text"], "here");
    no_panic(&alice);
}
