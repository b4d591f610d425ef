//! End-to-end tests of issue 5's history with the real binaries: a finished chat
//! is listed by `client history --json` with directions and ack states, and a
//! client killed with SIGKILL mid-chat loses nothing it had shown.

mod common;

use common::{client_args, connected_pair, last, Mediator, TempDir};
use serde_json::Value;

fn history_json(db: &std::path::Path) -> Vec<Value> {
    let out = std::process::Command::new(common::client_bin())
        .args(["history", "--json", "--history"])
        .arg(db)
        .output()
        .expect("run client history");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn messages(chat: &Value) -> Vec<(String, String, bool)> {
    chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["direction"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap().to_string(),
                m["acked"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_chat_is_listed_with_directions_and_acks() {
    let dir = TempDir::new("hist");
    let med = Mediator::start(&[]).await;
    let args = |name: &str| client_args(&med.server_arg(), name, &dir, &["--room", "r-hist"]);
    let (mut alice, mut bob) = connected_pair(&args("alice"), &args("bob")).await;
    let sas = last(&alice, "connected")["sas"].clone();
    alice.say("/verify yes").await;
    alice.expect("verify").await;
    for text in ["one", "two"] {
        alice.say(text).await;
        bob.expect("message").await;
        alice.expect("ack").await;
    }
    bob.say("three").await;
    alice.expect("message").await;
    bob.expect("ack").await;
    bob.say("/quit").await;
    assert_eq!(bob.exit_code().await, 0);
    assert_eq!(alice.exit_code().await, 0);

    let chats = history_json(&dir.join("history-alice.sqlite3"));
    assert_eq!(chats.len(), 1, "{chats:?}");
    let chat = &chats[0];
    assert_eq!(chat["room"], "r-hist");
    assert_eq!(chat["peer"], "bob");
    assert_eq!(chat["path"], "direct");
    assert_eq!(chat["sas"], sas);
    assert_eq!(chat["verified"], true);
    assert!(chat["ended_ms"].as_u64().is_some());
    assert!(
        chat["end_reason"].as_str().unwrap().contains("bob left"),
        "{chat}"
    );
    assert_eq!(
        messages(chat),
        vec![
            ("out".into(), "one".into(), true),
            ("out".into(), "two".into(), true),
            ("in".into(), "three".into(), true),
        ]
    );
    let bob_chats = history_json(&dir.join("history-bob.sqlite3"));
    assert_eq!(
        messages(&bob_chats[0]),
        vec![
            ("in".into(), "one".into(), true),
            ("in".into(), "two".into(), true),
            ("out".into(), "three".into(), true),
        ]
    );
    assert_eq!(bob_chats[0]["verified"], false);
    assert_eq!(bob_chats[0]["end_reason"], "you left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_chat_loses_nothing_already_shown() {
    let dir = TempDir::new("kill");
    let med = Mediator::start(&[]).await;
    let args = |name: &str| client_args(&med.server_arg(), name, &dir, &["--room", "r-kill"]);
    let (mut alice, mut bob) = connected_pair(&args("alice"), &args("bob")).await;
    let mut shown_out = Vec::new();
    let mut shown_in = Vec::new();
    for i in 0..50 {
        let text = format!("from alice {i}");
        alice.say(&text).await;
        shown_out.push(text);
        let text = format!("from bob {i}");
        bob.say(&text).await;
    }
    // Wait until alice has shown every message both ways, then kill her hard.
    while shown_in.len() < 50 {
        let m = alice.expect("message").await;
        shown_in.push(m["text"].as_str().unwrap().to_string());
    }
    let sent = alice.seen.iter().filter(|e| e["event"] == "sent").count();
    assert_eq!(sent, 50);
    alice.kill_hard().await;

    let chats = history_json(&dir.join("history-alice.sqlite3"));
    assert_eq!(chats.len(), 1);
    let stored = messages(&chats[0]);
    let out: Vec<String> = stored
        .iter()
        .filter(|m| m.0 == "out")
        .map(|m| m.1.clone())
        .collect();
    let inn: Vec<String> = stored
        .iter()
        .filter(|m| m.0 == "in")
        .map(|m| m.1.clone())
        .collect();
    assert_eq!(out, shown_out, "every message shown as sent is on disk");
    assert_eq!(inn, shown_in, "every message shown as received is on disk");
    assert!(
        chats[0]["ended_ms"].is_null(),
        "a killed chat has no recorded end"
    );
}

/// Starts a chat against a closed mediator port, so the client opens its history
/// (before it reaches for the mediator) and exits 3; returns stderr.
#[cfg(unix)]
async fn open_history_and_exit(
    dir: &TempDir,
    db: Option<&std::path::Path>,
    env: &[(&str, &std::path::Path)],
) -> String {
    let (code, stdout, stderr) = run_with_history(dir, db, env).await;
    assert_eq!(code, Some(3), "{stdout}");
    stderr
}

/// Runs the client with `--json` toward a port where no mediator listens, and
/// returns its exit code, stdout and stderr.
async fn run_with_history(
    dir: &TempDir,
    db: Option<&std::path::Path>,
    env: &[(&str, &std::path::Path)],
) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(common::client_bin());
    cmd.kill_on_drop(true)
        .env_remove("P2PCHAT_HISTORY")
        .env_remove("P2PCHAT_KEYLOG");
    cmd.args(["--server", &format!("127.0.0.1:{}", common::free_port())]);
    cmd.args([
        "--room",
        "r-private",
        "--name",
        "bob",
        "--listen",
        "127.0.0.1:0",
        "--json",
    ]);
    cmd.arg("--peers-file").arg(dir.join("peers.txt"));
    if let Some(db) = db {
        cmd.arg("--history").arg(db);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Input stays open (end of input would mean "leave" and race the refusal).
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run client");
    let input = child.stdin.take();
    let out = tokio::time::timeout(common::WAIT, child.wait_with_output())
        .await
        .expect("the client exits in time")
        .expect("wait for client");
    drop(input);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn the_default_history_is_created_in_a_private_xdg_directory() {
    let dir = TempDir::new("xdg");
    let data = dir.join("data");
    let stderr = open_history_and_exit(
        &dir,
        None,
        &[("XDG_DATA_HOME", &data), ("HOME", dir.path())],
    )
    .await;
    assert!(!stderr.contains("chmod"), "{stderr}");
    let db = data.join("p2pchat").join("history.sqlite3");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("p2pchat")), 0o700);
    assert_eq!(mode(&db), 0o600);
}

#[cfg(unix)]
#[tokio::test]
async fn a_history_file_others_can_read_is_refused_with_the_chmod_and_left_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("loose");
    let db = dir.join("history.sqlite3");
    assert!(!open_history_and_exit(&dir, Some(&db), &[])
        .await
        .contains("chmod"));
    assert_eq!(mode(&db), 0o600);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(&db).unwrap();
    let (code, stdout, _) = run_with_history(&dir, Some(&db), &[]).await;
    // Refused like a loose identity file: the file error's code, before any
    // network step (the mediator is not even tried).
    assert_eq!(code, Some(11), "{stdout}");
    let error: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(error["event"], "error", "{stdout}");
    assert_eq!(error["code"], "file", "{stdout}");
    let text = error["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("chmod 600 {}", db.display())),
        "{text}"
    );
    assert_eq!(mode(&db), 0o644, "the file is left as it was");
    assert_eq!(std::fs::read(&db).unwrap(), before);
}
