//! `client history` end to end: a database written through the library API, read
//! back by the real binary as JSON lines and as text, with its filters.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use client::history::History;
use serde_json::Value;

/// A unique directory under the temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "p2pchat-history-cmd-{label}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `client history ARGS --history DB` in UTC, with no history variable
/// from the environment leaking in.
fn history_cmd(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .arg("history")
        .args(args)
        .arg("--history")
        .arg(db)
        .env_remove("P2PCHAT_HISTORY")
        .env("TZ", "UTC")
        .output()
        .expect("run client history")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Two finished chats with alice in one room (2026-11-21 14:03 and 15:00 UTC)
/// and one unfinished chat with carol in another.
fn fill(db: &Path) {
    let h = History::open(db).expect("open history");
    // 2026-11-21 14:03:00 UTC.
    let t0: u64 = 1_795_269_780_000;
    let first = h
        .start_chat(
            "7-velvet-harbor",
            "alice",
            "",
            "192.0.2.7:4000",
            "direct",
            "482 093",
            t0,
        )
        .unwrap();
    h.set_verified(first, true).unwrap();
    h.record_outgoing(first, 1, "bob", "hi alice", t0 + 1_000)
        .unwrap();
    h.mark_acked(first, 1).unwrap();
    assert!(h
        .record_incoming(
            first,
            1,
            "alice",
            "hi \"bob\" \u{1b}[2J🦀",
            t0 + 1_500,
            t0 + 2_000
        )
        .unwrap());
    assert!(!h
        .record_incoming(first, 1, "alice", "duplicate", t0 + 1_500, t0 + 3_000)
        .unwrap());
    h.record_outgoing(first, 2, "bob", "are you there?", t0 + 4_000)
        .unwrap();
    h.end_chat(first, t0 + 5_000, "bob left").unwrap();

    let second = h
        .start_chat(
            "7-velvet-harbor",
            "alice",
            "",
            "192.0.2.7:4001",
            "lan",
            "111 222",
            t0 + 3_420_000,
        )
        .unwrap();
    h.update_chat(second, "198.51.100.9:5000", "relay", "111 222", false, true)
        .unwrap();
    h.record_incoming(second, 1, "alice", "again", t0 + 3_421_000, t0 + 3_421_500)
        .unwrap();
    h.end_chat(second, t0 + 3_430_000, "alice left").unwrap();

    let third = h
        .start_chat(
            "3-amber-lake",
            "carol",
            "",
            "203.0.113.5:7000",
            "punched",
            "999 000",
            t0 + 60_000,
        )
        .unwrap();
    h.record_outgoing(third, 1, "bob", "hello carol", t0 + 61_000)
        .unwrap();
}

#[test]
fn json_lists_chats_newest_first_with_every_message() {
    let dir = TempDir::new("json");
    let db = dir.0.join("history.sqlite3");
    fill(&db);
    let chats = json_lines(&history_cmd(&db, &["--json"]));
    let peers: Vec<&str> = chats.iter().map(|c| c["peer"].as_str().unwrap()).collect();
    assert_eq!(peers, ["alice", "carol", "alice"]);

    let first = &chats[2];
    assert_eq!(first["room"], "7-velvet-harbor");
    assert_eq!(first["addr"], "192.0.2.7:4000");
    assert_eq!(first["path"], "direct");
    assert_eq!(first["sas"], "482 093");
    assert_eq!(first["verified"], true);
    assert_eq!(first["reconnects"], 0);
    assert_eq!(first["started_ms"], 1_795_269_780_000u64);
    assert_eq!(first["ended_ms"], 1_795_269_785_000u64);
    assert_eq!(first["end_reason"], "bob left");
    let messages = first["messages"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str, bool)> = messages
        .iter()
        .map(|m| {
            (
                m["msg_id"].as_u64().unwrap(),
                m["direction"].as_str().unwrap(),
                m["sender"].as_str().unwrap(),
                m["acked"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "out", "bob", true),
            (1, "in", "alice", true),
            (2, "out", "bob", false),
        ]
    );
    // JSON carries the stored text exactly; sanitizing is for terminals.
    assert_eq!(messages[1]["text"], "hi \"bob\" \u{1b}[2J🦀");
    assert_eq!(messages[1]["sent_ms"], 1_795_269_781_500u64);
    assert_eq!(messages[1]["received_ms"], 1_795_269_782_000u64);
    assert_eq!(messages[0]["received_ms"], Value::Null);

    let resumed = &chats[0];
    assert_eq!(resumed["path"], "relay");
    assert_eq!(resumed["addr"], "198.51.100.9:5000");
    assert_eq!(resumed["reconnects"], 1);
    assert_eq!(resumed["verified"], false);

    let running = &chats[1];
    assert_eq!(running["ended_ms"], Value::Null);
    assert_eq!(running["end_reason"], Value::Null);
}

#[test]
fn text_form_shows_headers_lines_and_marks() {
    let dir = TempDir::new("text");
    let db = dir.0.join("history.sqlite3");
    fill(&db);
    let out = history_cmd(&db, &["--room", "7-velvet-harbor", "--limit", "1"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        !text.contains('\u{1b}'),
        "escape reached the terminal: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "2026-11-21 15:00  alice  room 7-velvet-harbor  relay  SAS 111 222 not verified  \
             reconnected 1× (1 resumed)  (ended: alice left)",
            "[15:00:01] alice: again",
        ]
    );

    let out = history_cmd(&db, &["--peer", "alice"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "2026-11-21 15:00  alice  room 7-velvet-harbor  relay  SAS 111 222 not verified  \
             reconnected 1× (1 resumed)  (ended: alice left)",
            "[15:00:01] alice: again",
            "",
            "2026-11-21 14:03  alice  room 7-velvet-harbor  direct  SAS 482 093 ✓verified  \
             (ended: bob left)",
            "[14:03:01] bob: hi alice",
            "[14:03:02] alice: hi \"bob\" 🦀",
            "[14:03:04] bob: are you there? (not delivered)",
        ]
    );
}

#[test]
fn filters_by_room_peer_and_limit() {
    let dir = TempDir::new("filters");
    let db = dir.0.join("history.sqlite3");
    fill(&db);
    // `room/peer` of each chat listed.
    let chats = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json_lines(&history_cmd(&db, &all))
            .iter()
            .map(|c| {
                format!(
                    "{}/{}",
                    c["room"].as_str().unwrap(),
                    c["peer"].as_str().unwrap()
                )
            })
            .collect()
    };
    let velvet = "7-velvet-harbor/alice";
    let amber = "3-amber-lake/carol";
    assert_eq!(chats(&["--room", "3-amber-lake"]), [amber]);
    assert_eq!(chats(&["--peer", "alice"]), [velvet, velvet]);
    assert_eq!(
        chats(&["--peer", "carol", "--room", "3-amber-lake"]),
        [amber]
    );
    assert!(chats(&["--peer", "carol", "--room", "7-velvet-harbor"]).is_empty());
    assert_eq!(chats(&["--limit", "2"]), [velvet, amber]);

    let out = history_cmd(&db, &["--peer", "dave"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("no chats with peer dave in "));
}

#[test]
fn missing_database_is_reported_and_not_created() {
    let dir = TempDir::new("missing");
    let db = dir.0.join("nowhere").join("history.sqlite3");
    let out = history_cmd(&db, &[]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim_end(),
        format!("no history yet at {}", db.display())
    );
    let out = history_cmd(&db, &["--json"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "", "JSON output stays empty");
    assert!(!db.exists() && !db.parent().unwrap().exists());
}

#[test]
fn newer_database_exits_with_the_file_code() {
    let dir = TempDir::new("newer");
    let db = dir.0.join("history.sqlite3");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA user_version = 1000;").unwrap();
    }
    // Private, as the client makes it (a looser one is refused for that first).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let out = history_cmd(&db, &[]);
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("written by a newer p2pchat (schema 1000"),
        "{err}"
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);

    let out = history_cmd(&db, &["--json"]);
    assert_eq!(out.status.code(), Some(11));
    let event: Value = serde_json::from_str(stdout(&out).trim_end()).unwrap();
    assert_eq!(event["event"], "error");
    assert_eq!(event["code"], "file");
}
