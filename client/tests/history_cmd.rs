//! `client history` end to end: a database written through the library API, read
//! back by the real binary as JSON lines and as text, with its filters; listing
//! and forgetting conversations of both kinds, and forgetting a contact.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use engine::history::History;
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

/// Runs `client SUBCOMMAND ARGS --history DB` with standard input that is not
/// a terminal (`Command::output` gives the child none).
fn client_cmd(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .arg("--history")
        .arg(db)
        .env_remove("P2PCHAT_HISTORY")
        .env_remove("P2PCHAT_PROFILE")
        .env("TZ", "UTC")
        .output()
        .expect("run client")
}

/// Stores `texts` as one author's messages of conversation `conversation`.
fn fill_log(
    h: &History,
    conversation: [u8; 32],
    room: &str,
    author: &dhke::Identity,
    texts: &[&str],
) {
    let mut log = wire::group::GroupLog::new(conversation, author.public().0);
    for (i, text) in texts.iter().enumerate() {
        let msg = log
            .write(author, (*text).to_owned(), 1_795_269_780_000 + i as u64)
            .unwrap();
        assert!(h
            .record_group(room, &msg, "ann", 1_795_269_790_000 + i as u64)
            .unwrap());
    }
}

/// The database file and its write-ahead log, as bytes: where a deleted text
/// could still be read by someone with the files.
fn file_bytes(db: &Path) -> Vec<u8> {
    let mut all = std::fs::read(db).unwrap();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(PathBuf::from(wal)) {
        all.extend(more);
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `client history list --json`: (short id, kind, label) of each conversation.
fn listed(db: &Path) -> Vec<(String, String, String)> {
    json_lines(&client_cmd(db, &["history", "list", "--json"]))
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["kind"].as_str().unwrap().to_owned(),
                c["label"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn id_of(list: &[(String, String, String)], kind: &str, label: &str) -> String {
    list.iter()
        .find(|(_, k, l)| k == kind && l == label)
        .unwrap_or_else(|| panic!("no {kind} {label} in {list:?}"))
        .0
        .clone()
}

#[test]
fn forget_with_yes_deletes_one_conversation_of_each_kind_and_keeps_the_rest() {
    let dir = TempDir::new("forget");
    let db = dir.0.join("history.sqlite3");
    fill(&db);
    let ann = dhke::Identity::from_seed(&[3; 32]);
    {
        let h = History::open(&db).unwrap();
        fill_log(&h, [7; 32], "group-kept", &ann, &["kept group text"]);
        fill_log(
            &h,
            [8; 32],
            "group-gone",
            &ann,
            &["secret group text 1", "secret group text 2"],
        );
    }
    let list = listed(&db);
    assert_eq!(list.len(), 5, "three v2 chats and two logs: {list:?}");
    let gone_log = id_of(&list, "log", "group-gone");
    let gone_chat = id_of(&list, "chat", "3-amber-lake");
    assert_eq!(gone_log, "08080808", "a log's id is its conversation id");
    let before = file_bytes(&db);
    assert!(contains(&before, "secret group text 2") && contains(&before, "hello carol"));

    // The text form lists the ids a person types.
    let text = stdout(&client_cmd(&db, &["history", "list"]));
    assert!(
        text.lines()
            .any(|l| l.starts_with(&gone_log) && l.contains("group-gone")),
        "{text}"
    );

    for id in [&gone_log[..6], &gone_chat[..]] {
        let out = client_cmd(&db, &["history", "forget", id, "--yes"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout(&out).starts_with("forgot conversation "),
            "{}",
            stdout(&out)
        );
    }
    let after = listed(&db);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after
        .iter()
        .all(|(id, _, _)| id != &gone_log && id != &gone_chat));
    // The others are intact, messages and all.
    let kept = id_of(&after, "log", "group-kept");
    let lines = json_lines(&client_cmd(&db, &["history", "show", &kept, "--json"]));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["text"], "kept group text");
    let chats = json_lines(&history_cmd(&db, &["--json"]));
    assert_eq!(chats.len(), 2);
    assert!(chats.iter().all(|c| c["peer"] == "alice"));
    assert_eq!(chats[1]["messages"].as_array().unwrap().len(), 3);
    // Gone from the files, not only from the tables.
    let bytes = file_bytes(&db);
    for text in ["secret group text 1", "secret group text 2", "hello carol"] {
        assert!(
            !contains(&bytes, text),
            "{text:?} is still in the database files"
        );
    }
    assert!(contains(&bytes, "kept group text") || contains(&bytes, "hi alice"));
    // A forgotten id is no longer found.
    let out = client_cmd(&db, &["history", "forget", &gone_log, "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no conversation with id"));
}

#[test]
fn forget_without_a_terminal_or_yes_is_refused_and_changes_nothing() {
    let dir = TempDir::new("forget-refused");
    let db = dir.0.join("history.sqlite3");
    fill(&db);
    let list = listed(&db);
    let id = id_of(&list, "chat", "3-amber-lake");
    let out = client_cmd(&db, &["history", "forget", &id]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a terminal") && err.contains("pass --yes"),
        "{err}"
    );
    assert_eq!(listed(&db), list, "nothing was forgotten");
    // Too short, or not hex: refused before anything is looked up.
    for typed in ["08", "zzzzzz"] {
        let out = client_cmd(&db, &["history", "forget", typed, "--yes"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("is not a conversation id"));
    }
    assert_eq!(listed(&db), list);
}

/// bob: a v2 chat and the `--to` log of the pair; dave: a v2 chat; a group
/// log that bob wrote in belongs to the group, not to bob.
#[test]
fn forgetting_a_contact_asks_about_its_conversations_and_the_flags_answer() {
    let dir = TempDir::new("contact-forget");
    let db = dir.0.join("history.sqlite3");
    let profile = dir.0.join("profile");
    let (me, _) = engine::identity::load_or_create(&profile).unwrap();
    let bob = dhke::Identity::from_seed(&[0xB0; 32]);
    let dave = dhke::Identity::from_seed(&[0xD0; 32]);
    let pair =
        dhke::RoomCode::from_secret("contact bob", &me.contact_secret(&bob.public()).unwrap())
            .conversation();
    {
        let h = History::open(&db).unwrap();
        for (who, key, text) in [
            ("bob", &bob, "bob chat text"),
            ("dave", &dave, "dave chat text"),
        ] {
            h.contact_seen(&key.public(), who, "192.0.2.1:1", 10)
                .unwrap();
            let chat = h
                .start_chat(
                    "room-x",
                    who,
                    &key.public().to_hex(),
                    "192.0.2.1:1",
                    "direct",
                    "1 2",
                    20,
                )
                .unwrap();
            h.record_incoming(chat, 1, who, text, 30, 31).unwrap();
        }
        fill_log(&h, pair, "contact bob", &bob, &["bob pair text"]);
        fill_log(&h, [9; 32], "group-with-bob", &bob, &["bob group text"]);
    }
    let contacts = |db: &Path, args: &[&str]| -> Output {
        let mut all = vec!["contacts"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--profile", profile.to_str().unwrap()]);
        client_cmd(db, &all)
    };
    // No terminal, no flag: refused, nothing changed.
    let out = contacts(&db, &["forget", "bob"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--with-conversations") && err.contains("--keep-conversations"),
        "{err}"
    );
    assert!(
        err.contains("2 conversations"),
        "the chat and the --to log: {err}"
    );
    assert_eq!(listed(&db).len(), 4);
    // Both flags at once make no sense.
    let out = contacts(
        &db,
        &[
            "forget",
            "bob",
            "--with-conversations",
            "--keep-conversations",
        ],
    );
    assert_eq!(out.status.code(), Some(2));

    // dave goes, his chat stays.
    let out = contacts(&db, &["remove", "dave", "--keep-conversations"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("stay in the history"),
        "{}",
        stdout(&out)
    );
    assert_eq!(listed(&db).len(), 4);

    // bob goes with his chat and the pair's log; the group log stays.
    let out = contacts(&db, &["forget", "bob", "--with-conversations"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels: Vec<String> = listed(&db).into_iter().map(|(_, _, l)| l).collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(labels.contains(&"group-with-bob".to_owned()), "{labels:?}");
    let chats = json_lines(&history_cmd(&db, &["--json"]));
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["peer"], "dave");
    let listed_contacts = json_lines(&contacts(&db, &["--json"]));
    assert!(listed_contacts.is_empty(), "{listed_contacts:?}");
    let bytes = file_bytes(&db);
    for text in ["bob chat text", "bob pair text"] {
        assert!(
            !contains(&bytes, text),
            "{text:?} is still in the database files"
        );
    }
}
