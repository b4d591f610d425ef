//! Connection tokens on loopback (docs/protocol.md §16): with no mediator running,
//! dial and chat, a typo, an expired token, a denial, a holder whose identity is
//! not the token's; a token whose addresses are closed, met through the mediator
//! it names (with `--connect`, and with a messenger's `/connect` that has a
//! mediator of its own), or failing with what to do next when that mediator is
//! down or the token names none; and what a hostile dialer or a stranger cannot do to a holder:
//! keep real dialers out with a flood of idle connections, slip past the
//! admission question as a mere contact, receive messages typed for another
//! dialer, or write escape sequences to the holder's terminal.

mod common;

use std::process::Stdio;

use common::{client_args, free_port, Client, Mediator, TempDir, WAIT};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::codec::Framed;
use wire::{FrameCodec, HandshakeInput, Link, PeerHandshake};

/// A client's flags with no mediator at all.
fn direct_args(name: &str, dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut args = client_args("unused", name, dir, &[]);
    let at = args.iter().position(|a| a == "--server").expect("--server");
    args.drain(at..at + 2);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `client token --ttl TTL FLAGS…` for `name`; returns it and its token.
async fn holder(name: &str, dir: &TempDir, ttl: &str, extra: &[&str]) -> (Client, String) {
    let mut args = vec!["token".to_string(), "--ttl".into(), ttl.into()];
    args.extend(direct_args(name, dir, extra));
    let mut c = Client::start(name, &args);
    let event = c.expect("token").await;
    let token = event["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("p2pchat:2:"), "{event}");
    assert!(event["command"].as_str().unwrap().contains(&token));
    (c, token)
}

fn dialer(dir: &TempDir, token: &str) -> Client {
    Client::start("bob", &direct_args("bob", dir, &["--connect", token]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_dialed_on_loopback_with_no_mediator_connects_after_accept_and_chats() {
    let dir = TempDir::new("token-chat");
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut bob = dialer(&dir, &token);
    let ask: Value = alice.expect("admission").await;
    assert_eq!(ask["peer"], "bob", "{ask}");
    alice.say("/accept").await;
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["sas"], b["sas"]);
    // Bob reached the identity the token names.
    let named = dhke::IdentityKey(wire::token::Token::parse(&token).unwrap().identity);
    assert_eq!(b["fingerprint"], named.fingerprint().to_string().as_str());
    bob.say("hello through a token").await;
    let m = alice.expect("message").await;
    assert_eq!(m["text"], "hello through a token");
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    // Bob is now one of Alice's contacts: the next dial needs no /accept.
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut bob = dialer(&dir, &token);
    alice.expect("connected").await;
    bob.expect("connected").await;
    assert!(
        !alice.seen.iter().any(|e| e["event"] == "admission"),
        "a known contact is let in at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_one_changed_character_is_a_typo() {
    let dir = TempDir::new("token-typo");
    let (_alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut typo = token.clone();
    let i = token.len() - 10;
    let c = if &token[i..=i] == "a" { "b" } else { "a" };
    typo.replace_range(i..=i, c);
    let mut bob = dialer(&dir, &typo);
    let err = bob.expect("error").await;
    assert!(err["text"].as_str().unwrap().contains("typo"), "{err}");
    assert_eq!(bob.exit_code().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_with_its_own_exit_code_on_both_sides() {
    let dir = TempDir::new("token-expired");
    let (mut alice, token) = holder("alice", &dir, "1s", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut bob = dialer(&dir, &token);
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "token_expired", "{err}");
    assert!(err["text"].as_str().unwrap().contains("expired"));
    assert_eq!(bob.exit_code().await, 16);
    let err = alice.expect("error").await;
    assert_eq!(err["code"], "token_expired", "{err}");
    assert_eq!(alice.exit_code().await, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_dialer_is_told_so_and_exits_with_its_own_code() {
    let dir = TempDir::new("token-deny");
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut bob = dialer(&dir, &token);
    alice.expect("admission").await;
    alice.say("/deny").await;
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "denied", "{err}");
    assert!(err["text"].as_str().unwrap().contains("denied"), "{err}");
    assert_eq!(bob.exit_code().await, 17);
    // Alice keeps waiting for others.
    alice.expect("info").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_identity_is_not_the_tokens_is_refused() {
    let dir = TempDir::new("token-identity");
    let (_alice, token) = holder("alice", &dir, "1h", &[]).await;
    // The same address and secret, but another identity key: someone else at
    // the address (or a lying copy of the token).
    let mut forged = wire::token::Token::parse(&token).unwrap();
    forged.identity = dhke::Identity::from_seed(&[0x4d; 32]).public().0;
    let mut bob = dialer(&dir, &forged.encode());
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "wrong_identity", "{err}");
    assert_eq!(bob.exit_code().await, 15);
}

/// `client token` for alice with mediator `server`, advertising a loopback
/// port nobody listens on (so every direct dial of the token is refused).
async fn holder_behind_closed_port(dir: &TempDir, server: &str) -> (Client, String) {
    let closed = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["token".to_string(), "--ttl".into(), "1h".into()];
    args.extend(client_args(server, "alice", dir, &["--advertise", &closed]));
    let mut alice = Client::start("alice", &args);
    let event = alice.expect("token").await;
    let token = event["token"].as_str().unwrap().to_owned();
    let parsed = wire::token::Token::parse(&token).unwrap();
    assert_eq!(parsed.addrs, vec![closed.parse().unwrap()], "{event}");
    (alice, token)
}

/// Alice admits bob, both show `connected` with one SAS, bob reached the
/// identity `token` names, and a line goes each way.
async fn admit_and_chat(alice: &mut Client, bob: &mut Client, token: &str) {
    let ask = alice.expect("admission").await;
    assert_eq!(ask["peer"], "bob", "{ask}");
    alice.say("/accept").await;
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    assert_eq!(a["sas"], b["sas"]);
    for event in [&a, &b] {
        let path = event["path"].as_str().unwrap();
        assert!(["direct", "punched", "relay"].contains(&path), "{event}");
    }
    let named = dhke::IdentityKey(wire::token::Token::parse(token).unwrap().identity);
    assert_eq!(b["fingerprint"], named.fingerprint().to_string().as_str());
    bob.say("hello through the token's mediator").await;
    assert_eq!(
        alice.expect("message").await["text"],
        "hello through the token's mediator"
    );
    alice.say("and back").await;
    assert_eq!(bob.expect("message").await["text"], "and back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_addresses_are_closed_meets_its_holder_through_the_mediator_it_names() {
    let med = Mediator::start(&[]).await;
    let dir = TempDir::new("token-mediator");
    let (mut alice, token) = holder_behind_closed_port(&dir, &med.server_arg()).await;
    assert_eq!(
        wire::token::Token::parse(&token)
            .unwrap()
            .mediator
            .as_deref(),
        Some(med.server_arg().as_str())
    );
    // Bob has no mediator of his own: the token's is the one he meets alice at.
    let mut bob = dialer(&dir, &token);
    admit_and_chat(&mut alice, &mut bob, &token).await;
    assert!(
        bob.seen.iter().any(|e| e["event"] == "info"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains("meeting them through its mediator"))),
        "bob says he went to the mediator: {:?}",
        bob.seen
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messengers_connect_uses_the_tokens_mediator_over_its_own() {
    let token_med = Mediator::start(&[]).await;
    let own_med = Mediator::start(&[]).await;
    let dir = TempDir::new("token-connect-cmd");
    let (mut alice, token) = holder_behind_closed_port(&dir, &token_med.server_arg()).await;
    // Bob's messenger runs at another mediator, a fresh room open there.
    let mut bob = Client::start("bob", &client_args(&own_med.server_arg(), "bob", &dir, &[]));
    bob.expect("room").await;
    bob.say(&format!("/connect {token}")).await;
    admit_and_chat(&mut alice, &mut bob, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_with_a_server_of_its_own_meets_the_holder_at_the_tokens() {
    let token_med = Mediator::start(&[]).await;
    let own_med = Mediator::start(&[]).await;
    let dir = TempDir::new("token-own-server");
    let (mut alice, token) = holder_behind_closed_port(&dir, &token_med.server_arg()).await;
    let args = client_args(&own_med.server_arg(), "bob", &dir, &["--connect", &token]);
    let mut bob = Client::start("bob", &args);
    admit_and_chat(&mut alice, &mut bob, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_addresses_and_mediator_are_down_says_to_ask_the_holder() {
    let dir = TempDir::new("token-mediator-down");
    let dead = format!("127.0.0.1:{}", free_port());
    let (mut alice, token) = holder_behind_closed_port(&dir, &dead).await;
    // The holder keeps waiting at its port and says dialers cannot meet it.
    let info = first_of(&mut alice, &["info"]).await;
    assert!(
        info["text"]
            .as_str()
            .unwrap()
            .contains("cannot meet you at the mediator"),
        "{info}"
    );
    let mut bob = dialer(&dir, &token);
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "mediator_unreachable", "{err}");
    let text = err["text"].as_str().unwrap();
    assert!(
        text.contains(&dead) && text.contains("the mediator the token names"),
        "{err}"
    );
    assert!(text.contains("ask the holder"), "{err}");
    assert_eq!(bob.exit_code().await, 3);
    assert!(!alice.has_exited(), "the holder is still waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_mediator_that_cannot_be_dialed_says_how_to_get_one_that_can() {
    let dir = TempDir::new("token-no-mediator");
    let closed = format!("127.0.0.1:{}", free_port());
    let (_alice, token) = holder("alice", &dir, "1h", &["--advertise", &closed]).await;
    assert_eq!(wire::token::Token::parse(&token).unwrap().mediator, None);
    let mut bob = dialer(&dir, &token);
    let err = bob.expect("error").await;
    assert_eq!(err["code"], "peer_unreachable", "{err}");
    assert!(
        err["text"]
            .as_str()
            .unwrap()
            .contains("client token --server"),
        "{err}"
    );
    assert_eq!(bob.exit_code().await, 6);
}

/// The first of `kinds` that `c` shows (the others it skips stay in `seen`).
async fn first_of(c: &mut Client, kinds: &[&str]) -> Value {
    loop {
        let Some(event) = c.next_event(WAIT).await else {
            panic!(
                "{}: none of {kinds:?} within {WAIT:?}; saw {:?}; stderr: {}",
                c.name,
                c.seen,
                c.stderr()
            );
        };
        c.seen.push(event.clone());
        if kinds.iter().any(|k| event["event"] == *k) {
            return event;
        }
    }
}

/// Idle connections opened from 127.0.0.2 to the holder.
const FLOOD: usize = 100;
/// The holder's listen backlog (`ports::BACKLOG`): once this many flood
/// connections are up, the holder's queue was full before the fix.
const BACKLOG: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_from_one_address_neither_keeps_a_real_dialer_out_nor_floods_the_screen() {
    let dir = TempDir::new("token-flood");
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let at = wire::token::Token::parse(&token).unwrap().addrs[0];
    // Another loopback address, so the flood is one source and the real
    // dialer (127.0.0.1) another.
    let (up_tx, mut up) = mpsc::unbounded_channel();
    let mut flood = JoinSet::new();
    for _ in 0..FLOOD {
        let up_tx = up_tx.clone();
        flood.spawn(async move {
            let socket = TcpSocket::new_v4().expect("a socket");
            socket
                .bind("127.0.0.2:0".parse().unwrap())
                .expect("bind 127.0.0.2 (all of 127/8 is loopback)");
            let Ok(mut stream) = socket.connect(at).await else {
                return;
            };
            let _ = up_tx.send(());
            // Idle: never a byte. Held until the holder closes it or the test ends.
            let mut sink = [0u8; 64];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            std::future::pending::<()>().await;
        });
    }
    for n in 0..BACKLOG {
        tokio::time::timeout(WAIT, up.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} flood connections came up"));
    }
    let mut bob = dialer(&dir, &token);
    let ask = first_of(&mut alice, &["admission", "error"]).await;
    assert_eq!(ask["event"], "admission", "bob never reached alice: {ask}");
    assert_eq!(ask["peer"], "bob", "{ask}");
    alice.say("/accept").await;
    alice.expect("connected").await;
    bob.expect("connected").await;
    bob.say("through the flood").await;
    assert_eq!(alice.expect("message").await["text"], "through the flood");
    // The flood cost alice a bounded number of lines: a few refusals one by
    // one, then one summary, however many connections there were.
    let about_flood: Vec<&Value> = alice
        .seen
        .iter()
        .filter(|e| {
            (e["event"] == "rejected" && e["addr"].as_str().unwrap().starts_with("127.0.0.2:"))
                || (e["event"] == "warning" && e["code"] == "token_flood")
        })
        .collect();
    assert!(
        (1..=4).contains(&about_flood.len()),
        "lines about the flood: {about_flood:?}"
    );
    let summary = about_flood
        .iter()
        .find(|e| e["event"] == "warning")
        .unwrap_or_else(|| panic!("no summary line: {about_flood:?}"));
    let text = summary["text"].as_str().unwrap();
    assert!(text.contains("127.0.0.2"), "{text}");
    flood.abort_all();
}

/// Meets alice and bob (profiles in `dir`) in a room at `med`; alice marks bob
/// verified when `verify`; both leave.
async fn meet_by_room(med: &Mediator, dir: &TempDir, verify: bool) {
    let a = client_args(&med.server_arg(), "alice", dir, &["--room", "r-met"]);
    let b = client_args(&med.server_arg(), "bob", dir, &["--room", "r-met"]);
    let (mut alice, mut bob) = common::connected_pair(&a, &b).await;
    if verify {
        alice.say("/verify yes").await;
        assert_eq!(alice.expect("verify").await["verified"], true);
    }
    alice.say("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
    bob.close_input();
    let _ = bob.exit_code().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_that_is_not_verified_is_asked_before_a_token_lets_it_in() {
    let dir = TempDir::new("token-unverified");
    let med = Mediator::start(&[]).await;
    meet_by_room(&med, &dir, false).await;
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut bob = dialer(&dir, &token);
    let first = first_of(&mut alice, &["admission", "connected"]).await;
    assert_eq!(
        first["event"], "admission",
        "an unverified contact must be asked about: {first}"
    );
    alice.say("/deny").await;
    assert_eq!(bob.expect("error").await["code"], "denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_contact_dials_a_token_without_being_asked() {
    let dir = TempDir::new("token-verified");
    let med = Mediator::start(&[]).await;
    meet_by_room(&med, &dir, true).await;
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut bob = dialer(&dir, &token);
    let first = first_of(&mut alice, &["admission", "connected"]).await;
    assert_eq!(first["event"], "connected", "{first}");
    assert_eq!(first["verified"], true, "{first}");
    bob.expect("connected").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_typed_for_a_dropped_dialer_wait_for_it_and_never_reach_another_identity() {
    let dir = TempDir::new("token-outbox");
    let (mut alice, token) = holder("alice", &dir, "1h", &[]).await;
    let mut bob = dialer(&dir, &token);
    alice.expect("admission").await;
    alice.say("/accept").await;
    alice.expect("connected").await;
    bob.expect("connected").await;
    bob.kill_hard().await;
    alice.expect("reconnecting").await;
    alice.say("for bob only").await;
    let sent = alice.expect("sent").await;
    assert_eq!(sent["pending"], true, "{sent}");
    // Carol: another profile, so another identity, with the same token.
    let mut carol = Client::start("carol", &direct_args("carol", &dir, &["--connect", &token]));
    let ask = alice.expect("admission").await;
    assert_eq!(ask["peer"], "carol", "{ask}");
    alice.say("/accept").await;
    alice.expect("connected").await;
    carol.expect("connected").await;
    // Anything waiting would be flushed before this one, on the same link.
    alice.say("for carol").await;
    let m = carol.expect("message").await;
    assert_eq!(
        m["text"], "for carol",
        "carol got a message typed for bob: {m}"
    );
    carol.kill_hard().await;
    alice.expect("reconnecting").await;
    // Bob comes back (a new run of his profile): admitted through the token
    // before, so no question; what was typed for him reaches him now.
    let mut bob = dialer(&dir, &token);
    bob.expect("connected").await;
    let m = bob.expect("message").await;
    assert_eq!(m["text"], "for bob only", "{m}");
    alice.say("welcome back").await;
    assert_eq!(bob.expect("message").await["text"], "welcome back");
    assert!(
        !bob.seen.iter().any(|e| e["text"] == "for carol"),
        "{:?}",
        bob.seen
    );
}

/// A `client token --plain` run whose stdout is kept byte for byte.
struct PlainHolder {
    _child: tokio::process::Child,
    chunks: mpsc::UnboundedReceiver<Vec<u8>>,
    stdout: Vec<u8>,
}

impl PlainHolder {
    fn start(dir: &TempDir) -> PlainHolder {
        let mut args = vec!["token".to_string(), "--ttl".into(), "1h".into()];
        args.extend(direct_args("alice", dir, &["--plain"]));
        args.retain(|a| a != "--json");
        let mut child = tokio::process::Command::new(common::client_bin())
            .env_remove("P2PCHAT_KEYLOG")
            .env_remove("P2PCHAT_SERVER")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the holder");
        let mut out = child.stdout.take().expect("piped stdout");
        let (tx, chunks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        PlainHolder {
            _child: child,
            chunks,
            stdout: Vec::new(),
        }
    }

    /// Waits until stdout holds a whole line containing `needle`; returns that line.
    async fn line_with(&mut self, needle: &str) -> String {
        loop {
            let text = String::from_utf8_lossy(&self.stdout).into_owned();
            if let Some(line) = text
                .split_inclusive('\n')
                .find(|l| l.ends_with('\n') && l.contains(needle))
            {
                return line.to_string();
            }
            match tokio::time::timeout(WAIT, self.chunks.recv()).await {
                Ok(Some(chunk)) => self.stdout.extend_from_slice(&chunk),
                _ => panic!("no line with {needle:?}; stdout so far: {text:?}"),
            }
        }
    }
}

/// Dials `token` as a raw dialer that runs the handshake up to `HostConfirm`
/// and then refuses with `reason`.
async fn reject_with(token: &wire::token::Token, reason: &str) {
    let code = dhke::RoomCode::from_secret("token", &token.room_secret());
    let group = dhke::Group::Modp2048;
    let stream = TcpStream::connect(token.addrs[0]).await.expect("dial");
    let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
    let send = |msg: PeerHandshake| wire::encode(&msg).expect("encode");
    let keys = dhke::KeyPair::generate_cpace(group, &code, &mut rand::rngs::OsRng).unwrap();
    framed
        .send(
            send(PeerHandshake::TokenHello {
                tag: code.tag().0,
                name: "mallory".into(),
                group: group.id(),
                public: keys.public().to_vec(),
            })
            .as_slice(),
        )
        .await
        .unwrap();
    let recv = |frame: Option<Result<bytes::BytesMut, _>>| -> PeerHandshake {
        wire::decode(&frame.expect("a frame").expect("frame ok")).expect("decodes")
    };
    let welcome = recv(tokio::time::timeout(WAIT, framed.next()).await.unwrap());
    let PeerHandshake::TokenWelcome { name, public } = welcome else {
        panic!("expected TokenWelcome, got {welcome:?}");
    };
    let (_state, hello) = wire::handshake::JoinerHelloSent::start(
        HandshakeInput {
            room: code,
            local_name: "mallory".into(),
            local: keys,
            peer_name: name,
            peer_public: public,
            previous: None,
            keylog: false,
            identity: dhke::Identity::from_seed(&[0x6d; 32]),
            expect_peer: None,
        },
        &mut rand::rngs::OsRng,
    )
    .expect("a PeerHello");
    framed.send(send(hello).as_slice()).await.unwrap();
    let confirm = recv(tokio::time::timeout(WAIT, framed.next()).await.unwrap());
    assert!(
        matches!(confirm, PeerHandshake::HostConfirm { .. }),
        "{confirm:?}"
    );
    framed
        .send(
            send(PeerHandshake::Reject {
                reason: reason.into(),
            })
            .as_slice(),
        )
        .await
        .unwrap();
    // The holder closes once it has judged us.
    let _ = tokio::time::timeout(WAIT, framed.next()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_reason_with_escape_sequences_reaches_a_plain_holders_stdout_without_them() {
    let dir = TempDir::new("token-escapes");
    let mut alice = PlainHolder::start(&dir);
    let line = alice.line_with("client --connect p2pchat:2:").await;
    let text = line.split("--connect ").nth(1).unwrap().trim();
    let token = wire::token::Token::parse(text).unwrap();
    // A window title, a cleared screen and a fake notice.
    reject_with(
        &token,
        "\x1b]0;p2pchat: verified\x07\x1b[2J\x1b[Hbob (verified contact) connected",
    )
    .await;
    let line = alice.line_with("(verified contact) connected").await;
    assert!(
        !alice.stdout.contains(&0x1b),
        "the peer's escape bytes reached stdout: {line:?}"
    );
}
