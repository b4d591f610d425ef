//! The local API on its Unix socket (docs/api.md), against real clients: its
//! hello, commands and events; a text that looks like a command stays text;
//! history pages; a stale socket is replaced and a foreign file refused; the
//! socket is 0600 and another local user cannot open it; the bounds (a slow
//! client is dropped while the engine goes on, client count, message size);
//! and the bot example (examples/pingbot.py) answering a real peer.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::api::{socket_path, ApiClient};
use common::{client_args, connected_pair, Client, Mediator, TempDir, WAIT};
use serde_json::{json, Value};

fn profile(dir: &TempDir, name: &str) -> PathBuf {
    dir.join(&format!("profile-{name}"))
}

/// Waits for bob's message event with `text`.
async fn expect_message(c: &mut Client, text: &str) -> Value {
    loop {
        let e = c.expect("message").await;
        if e["text"] == text {
            return e;
        }
    }
}

#[tokio::test]
async fn commands_and_events_over_the_socket_and_text_never_becomes_a_command() {
    let dir = TempDir::new("api-basic");
    let med = Mediator::start(&[]).await;
    let alice_args = client_args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--room", "api-r", "--api"],
    );
    let bob_args = client_args(&med.server_arg(), "bob", &dir, &["--room", "api-r"]);
    let (mut alice, mut bob) = connected_pair(&alice_args, &bob_args).await;
    let path = socket_path(&profile(&dir, "alice"));
    let mode = std::fs::metadata(&path).expect("the socket exists").mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let mut api = ApiClient::connect(&path).await;
    let hello = api.next().await.expect("a hello");
    assert_eq!(hello["event"], "hello", "{hello}");
    assert_eq!(hello["api"], 1, "{hello}");
    // The list comes at once, then again as it changes: the engine shows the
    // `connected` event before it updates the list.
    let list = api
        .expect_where("the list with the conversation connected", |v| {
            v["event"] == "conversations" && v["items"][0]["state"] == "connected"
        })
        .await;
    assert_eq!(list["items"][0]["number"], 1, "{list}");

    // Texts that a person would type as commands arrive as texts.
    for text in ["/quit", "  /close", "/send /etc/passwd", "hello bob"] {
        api.ok(json!({"cmd": "send", "conversation": 1, "text": text, "api": 1}))
            .await;
        expect_message(&mut bob, text.trim_start()).await;
    }
    // Bob's line comes to the API as the --json event, conversation and all.
    bob.say("hi alice").await;
    let msg = api
        .expect_where("bob's message", |v| {
            v["event"] == "message" && v["text"] == "hi alice"
        })
        .await;
    assert_eq!(msg["conversation"]["number"], 1, "{msg}");
    assert_eq!(msg["from"], "bob", "{msg}");
    let from_json = expect_message(&mut alice, "hi alice").await;
    assert_eq!(msg, from_json, "the API's event is the --json event");

    // Still open and linked: none of the texts closed or quit anything.
    api.ok(json!({"cmd": "list"})).await;
    let list = api.expect("conversations").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["items"][0]["state"], "connected", "{list}");

    // A page of history: the two messages before the newest one.
    let reply_id = 99;
    api.send_raw(
        &json!({"cmd": "history", "conversation": 1, "limit": 2, "before": 1, "id": reply_id})
            .to_string(),
    )
    .await;
    let page = api
        .expect_where("the history page", |v| v["event"] == "history")
        .await;
    let texts: Vec<&str> = page["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(texts, ["/send /etc/passwd", "hello bob"], "{page}");
    assert_eq!(page["reply"], reply_id, "{page}");
    assert_eq!(page["more"], true, "{page}");

    // Refusals say why and change nothing.
    let bad = api
        .command(json!({"cmd": "room", "code": "a\n/quit"}))
        .await;
    assert_eq!(bad["ok"], false, "{bad}");
    assert_eq!(bad["error"]["code"], "bad_argument", "{bad}");
    let bad = api.command(json!({"cmd": "list", "api": 2})).await;
    assert_eq!(bad["error"]["code"], "unsupported_api", "{bad}");

    // The API's quit ends the client as /quit does.
    api.ok(json!({"cmd": "quit"})).await;
    assert_eq!(alice.exit_code().await, 0);
    assert!(!path.exists(), "the socket is removed at exit");
    bob.close_input();
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_anything_else_there_refused() {
    let dir = TempDir::new("api-stale");
    let med = Mediator::start(&[]).await;
    // What a client killed with SIGKILL leaves: a socket file nobody serves.
    let stale = profile(&dir, "alice");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o700)).unwrap();
    drop(std::os::unix::net::UnixListener::bind(socket_path(&stale)).unwrap());
    assert!(socket_path(&stale).exists());
    let args = client_args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--room", "api-s", "--api"],
    );
    let mut alice = Client::start("alice", &args);
    alice.expect("waiting").await;
    let mut api = ApiClient::connect(&socket_path(&stale)).await;
    assert_eq!(api.next().await.expect("hello")["event"], "hello");

    // A file of the person's at that name is left alone, and the client says so.
    let other = profile(&dir, "carol");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(socket_path(&other), "keep me").unwrap();
    let args = client_args(
        &med.server_arg(),
        "carol",
        &dir,
        &["--room", "api-t", "--api"],
    );
    let mut carol = Client::start("carol", &args);
    let error = carol.expect("error").await;
    assert!(
        error["text"]
            .as_str()
            .unwrap_or("")
            .contains("something other than a socket"),
        "{error}"
    );
    assert_eq!(carol.exit_code().await, 11, "a file error");
    assert_eq!(
        std::fs::read_to_string(socket_path(&other)).unwrap(),
        "keep me"
    );
    alice.close_input();
}

/// `script` run by perl as user `user` (through runuser), its output and
/// whether it succeeded.
fn perl_as(user: Option<&str>, script: &str, socket: &Path) -> (bool, String) {
    let mut cmd = match user {
        Some(user) => {
            let mut cmd = std::process::Command::new("runuser");
            cmd.args(["-u", user, "--", "perl"]);
            cmd
        }
        None => std::process::Command::new("perl"),
    };
    let out = cmd
        .args(["-MIO::Socket::UNIX", "-e", script])
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .expect("run perl (apt-get install perl)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn another_local_user_cannot_open_the_socket() {
    // The test switches to user `nobody`: it must run as root, and fails if it cannot.
    let who = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "id", "-u"])
        .output()
        .expect("run runuser (util-linux)");
    let uid = String::from_utf8_lossy(&who.stdout).trim().to_string();
    assert!(
        who.status.success() && uid != "0" && !uid.is_empty(),
        "cannot switch to user nobody (this test needs root): {}{}",
        uid,
        String::from_utf8_lossy(&who.stderr)
    );
    let dir = TempDir::new("api-uid");
    // Every directory on the way open to others: only the socket's own mode
    // stands in the way.
    let profile = profile(&dir, "alice");
    std::fs::create_dir_all(&profile).unwrap();
    for d in [dir.path(), profile.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let med = Mediator::start(&[]).await;
    let args = client_args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--room", "api-u", "--api"],
    );
    let mut alice = Client::start("alice", &args);
    alice.expect("waiting").await;
    let socket = socket_path(&profile);
    let script = r#"my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0])
        or die "connect: $!\n"; my $hello = <$s>; print "read: $hello";"#;
    let (ok, said) = perl_as(None, script, &socket);
    assert!(
        ok && said.contains("\"hello\""),
        "the owner connects: {said}"
    );
    let (ok, said) = perl_as(Some("nobody"), script, &socket);
    assert!(!ok, "user nobody opened the socket: {said}");
    assert!(
        said.contains("connect: Permission denied"),
        "nobody is refused by the socket's mode: {said}"
    );
    alice.close_input();
}

#[tokio::test]
async fn a_slow_client_is_dropped_the_engine_goes_on_and_bounds_hold() {
    let dir = TempDir::new("api-bounds");
    let med = Mediator::start(&[]).await;
    let args = client_args(
        &med.server_arg(),
        "alice",
        &dir,
        &[
            "--room",
            "api-b",
            "--api",
            "--api-queue-bytes",
            "65536",
            "--api-max-clients",
            "2",
        ],
    );
    let mut alice = Client::start("alice", &args);
    alice.expect("waiting").await;
    let path = socket_path(&profile(&dir, "alice"));
    let mut slow = ApiClient::connect(&path).await;
    let mut quick = ApiClient::connect(&path).await;
    // Both are in before the third comes (then `slow` reads nothing more).
    slow.expect("hello").await;
    quick.expect("hello").await;

    // A third client is one too many.
    let mut third = ApiClient::connect(&path).await;
    let bye = third.next().await.expect("a bye");
    assert_eq!(bye["event"], "bye", "{bye}");
    assert!(
        bye["reason"].as_str().unwrap_or("").contains("at most 2"),
        "{bye}"
    );
    assert!(third.next().await.is_none(), "closed after the bye");

    // Megabytes of events while `slow` reads nothing (more than its queue and
    // the kernel's socket buffers hold): the engine and `quick` go on; `slow`
    // is dropped. `quick` reads each message's `sent` before the next, as a
    // live client does, so it never holds more than one behind.
    let text = "x".repeat(16_000);
    let sent = |c: &ApiClient| c.seen.iter().filter(|v| v["event"] == "sent").count();
    for i in 1..=100 {
        quick
            .ok(json!({"cmd": "send", "conversation": 1, "text": text}))
            .await;
        // Its `sent` may come before the reply or after it.
        while sent(&quick) < i {
            quick.expect("sent").await;
        }
    }
    quick.ok(json!({"cmd": "list"})).await;
    let mut last = None;
    while let Some(v) = slow.next().await {
        last = Some(v);
    }
    let last = last.expect("slow read something");
    assert_eq!(last["event"], "bye", "{last}");
    assert!(
        last["reason"].as_str().unwrap_or("").contains("too slow"),
        "{last}"
    );

    // Its place is free again.
    let mut again = ApiClient::connect(&path).await;
    again.expect("hello").await;

    // A message over the bound ends that connection, and only that one.
    let huge = format!(
        "{{\"cmd\":\"send\",\"conversation\":1,\"text\":\"{}\"}}",
        "y".repeat(200_000)
    );
    again.send_raw(&huge).await;
    let bye = again.expect_where("the bye", |v| v["event"] == "bye").await;
    assert!(
        bye["reason"].as_str().unwrap_or("").contains("over"),
        "{bye}"
    );
    quick.ok(json!({"cmd": "list"})).await;
    alice.close_input();
    let _ = tokio::time::timeout(WAIT, alice.kill_hard()).await;
}

#[tokio::test]
async fn the_bot_example_answers_ping_with_pong() {
    let dir = TempDir::new("api-bot");
    let med = Mediator::start(&[]).await;
    let alice_args = client_args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--room", "api-p", "--api"],
    );
    let bob_args = client_args(&med.server_arg(), "bob", &dir, &["--room", "api-p"]);
    let (_alice, mut bob) = connected_pair(&alice_args, &bob_args).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pingbot.py");
    let mut bot = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(socket_path(&profile(&dir, "alice")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python3 (apt-get install python3)");
    let stdout = tokio::io::BufReader::new(bot.stdout.take().expect("piped"));
    common::await_line(
        tokio::io::AsyncBufReadExt::lines(stdout),
        "ready",
        "pingbot",
    )
    .await;
    bob.say("ping").await;
    let pong = expect_message(&mut bob, "pong").await;
    assert_eq!(pong["from"], "alice", "{pong}");
    // Other words get no answer: the next message bob sees is the next pong.
    bob.say("hello").await;
    bob.say("PING").await;
    expect_message(&mut bob, "pong").await;
    let pongs = bob.seen.iter().filter(|e| e["event"] == "message").count();
    assert_eq!(pongs, 2, "one pong per ping: {:?}", bob.seen);
}
