//! The terminal interface in a real terminal: two `client`s in tmux panes meet
//! through the real `mediator`, the status bars show `secure`, the path and the
//! same SAS, a typed message reaches the other pane and gets its delivery mark,
//! `/help` opens and closes, and after `/quit` (or Ctrl-C) the shell gets its
//! terminal back in cooked mode on the main screen. And the messenger: one
//! client in a pane holds a room, a second room and a group at once, each
//! conversation's messages stay in its own scrollback, the list counts what
//! arrived behind and rings the bell, and Alt-N / Ctrl-N / Ctrl-P switch.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::group::member_args;
use common::{client_args, client_bin, Client, Mediator, TempDir, WAIT};

/// A private tmux server for this test, killed on drop (also when an
/// assertion fails half-way).
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        match Command::new("tmux").arg("-V").output() {
            Ok(out) if out.status.success() => {}
            _ => panic!(
                "tmux is required for this test and was not found on PATH; \
                 install it (apt-get install tmux) or run `bash .ci/run`, which does"
            ),
        }
        // One server per test: tests of this file run in parallel in one process.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmux {
            socket: format!("p2pchat-test-{}-{n}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        // -u: the panes speak UTF-8 whatever the locale (for `✓` and `│`).
        Command::new("tmux")
            .args(["-u", "-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn start(&self, session: &str, command: &str) {
        let out = self.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "30",
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn capture(&self, session: &str) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn type_text(&self, session: &str, text: &str) {
        self.run(&["send-keys", "-t", session, "-l", text]);
    }

    fn key(&self, session: &str, key: &str) {
        self.run(&["send-keys", "-t", session, key]);
    }

    fn bell(&self, session: &str) -> bool {
        let out = self.run(&[
            "display-message",
            "-p",
            "-t",
            session,
            "#{window_bell_flag}",
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    fn alternate_screen(&self, session: &str) -> bool {
        let out = self.run(&["display-message", "-p", "-t", session, "#{alternate_on}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Polls the pane until `ready` holds, or fails showing the last capture.
    async fn wait_for(&self, session: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.capture(session);
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "pane {session}: timed out waiting for {what}; it shows:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The shell command a pane runs: the client, then what the terminal looks
/// like after it exits.
fn pane_command(server: &str, name: &str, dir: &TempDir) -> String {
    format!(
        "unset P2PCHAT_KEYLOG P2PCHAT_JSON P2PCHAT_PLAIN P2PCHAT_ROOM P2PCHAT_NAME; \
         '{client}' --server {server} --room r-tui --name {name} --listen 127.0.0.1:0 \
         --dh-group 14 --peers-file '{peers}' --no-history; \
         echo EXITED:$?; \
         echo STTY: $(stty -a | tr ' ;' '\\n\\n' | grep -E '^-?(icanon|echo|isig)$' | tr '\\n' ' '); \
         sleep 60",
        client = client_bin().display(),
        peers = common::peers_file(dir, name).display(),
    )
}

/// The status bar: the second-to-last non-empty row.
fn status_bar(screen: &str) -> &str {
    let rows: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    rows.iter()
        .rev()
        .find(|l| l.contains(" │ "))
        .copied()
        .unwrap_or("")
}

/// `482 093` from `SAS 482 093 …` in the status bar.
fn sas(screen: &str) -> Option<String> {
    let bar = status_bar(screen);
    let at = bar.find("SAS ")? + 4;
    let code: String = bar[at..].chars().take(7).collect();
    let well_formed = code.len() == 7
        && code
            .chars()
            .enumerate()
            .all(|(i, c)| if i == 3 { c == ' ' } else { c.is_ascii_digit() });
    well_formed.then_some(code)
}

fn secure(screen: &str) -> bool {
    status_bar(screen).contains("secure") && sas(screen).is_some()
}

/// After the client exited: exit code 0, cooked mode, main screen.
async fn check_restored(tmux: &Tmux, session: &str) {
    let screen = tmux
        .wait_for(session, "the client to exit", |s| s.contains("STTY:"))
        .await;
    assert!(screen.contains("EXITED:0"), "{session}:\n{screen}");
    let stty = screen
        .lines()
        .find_map(|l| l.strip_prefix("STTY:"))
        .unwrap_or_default();
    let flags: Vec<&str> = stty.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig"] {
        assert!(
            flags.contains(&flag),
            "{session}: terminal not in cooked mode ({stty}):\n{screen}"
        );
    }
    assert!(
        !tmux.alternate_screen(session),
        "{session}: still on the alternate screen"
    );
    assert!(
        !screen.contains("SAS "),
        "{session}: the chat screen was left behind:\n{screen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_in_real_terminals_and_leave_them_usable() {
    let tmux = Tmux::new();
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("tui");
    let server = mediator.server_arg();
    tmux.start("alice", &pane_command(&server, "alice", &dir));
    tmux.start("bob", &pane_command(&server, "bob", &dir));

    let alice = tmux.wait_for("alice", "a secure session", secure).await;
    let bob = tmux.wait_for("bob", "a secure session", secure).await;
    assert!(
        tmux.alternate_screen("alice"),
        "the interface uses the alternate screen"
    );
    let (sas_a, sas_b) = (sas(&alice), sas(&bob));
    assert_eq!(sas_a, sas_b, "both sides show the same code");
    for (screen, peer) in [(&alice, "bob"), (&bob, "alice")] {
        let bar = status_bar(screen);
        assert!(bar.contains(peer), "status names the peer: {bar}");
        assert!(bar.contains(" direct "), "status shows the path: {bar}");
    }

    tmux.type_text("alice", "hello from alice");
    tmux.key("alice", "Enter");
    tmux.wait_for("bob", "alice's message", |s| {
        s.contains("alice: hello from alice")
    })
    .await;
    tmux.wait_for("alice", "the delivery mark", |s| {
        s.contains("you: hello from alice ✓")
    })
    .await;

    tmux.type_text("bob", "/help");
    tmux.key("bob", "Enter");
    tmux.wait_for("bob", "the help overlay", |s| {
        s.contains("any key closes") && s.contains("/verify yes")
    })
    .await;
    tmux.key("bob", "Escape");
    tmux.wait_for("bob", "the help overlay to close", |s| {
        !s.contains("any key closes") && s.contains("alice: hello from alice")
    })
    .await;

    tmux.type_text("alice", "/quit");
    tmux.key("alice", "Enter");
    check_restored(&tmux, "alice").await;

    // Bob's client ends when alice leaves; if it stays (waiting for her to come
    // back), Ctrl-C leaves too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tmux.capture("bob").contains("STTY:") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !tmux.capture("bob").contains("STTY:") {
        tmux.key("bob", "C-c");
    }
    check_restored(&tmux, "bob").await;
    mediator.kill().await;
}

/// The messenger pane's command: one client opened on `room`, with its own
/// profile and no history, asking for desktop notifications too.
fn messenger_command(server: &str, room: &str, dir: &TempDir) -> String {
    format!(
        "unset P2PCHAT_KEYLOG P2PCHAT_JSON P2PCHAT_PLAIN P2PCHAT_ROOM P2PCHAT_NAME; \
         '{client}' --server {server} --room {room} --name alice --listen 127.0.0.1:0 \
         --dh-group 14 --peers-file '{peers}' --profile '{profile}' --no-history --notify; \
         echo EXITED:$?; \
         echo STTY: $(stty -a | tr ' ;' '\\n\\n' | grep -E '^-?(icanon|echo|isig)$' | tr '\\n' ' '); \
         sleep 60",
        client = client_bin().display(),
        peers = common::peers_file(dir, "alice").display(),
        profile = dir.join("profile-alice").display(),
    )
}

/// Conversation `number`'s two rows of the list (left of its border), or
/// empty strings when the list does not show it.
fn entry(screen: &str, number: u32) -> (String, String) {
    let list: Vec<&str> = screen
        .lines()
        .map(|l| l.split('│').next().unwrap_or(""))
        .collect();
    for (i, row) in list.iter().enumerate() {
        let head = row.trim_start_matches([' ', '▸']);
        if head.starts_with(&format!("{number} ")) && row.len() < 200 {
            let next = list.get(i + 1).copied().unwrap_or("");
            return (row.trim_end().to_string(), next.trim_end().to_string());
        }
    }
    (String::new(), String::new())
}

fn in_front(screen: &str, number: u32) -> bool {
    entry(screen, number).0.starts_with('▸')
}

fn unread(screen: &str, number: u32) -> Option<u32> {
    let (head, _) = entry(screen, number);
    let count = head.rsplit_once('[')?.1.strip_suffix(']')?;
    count.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_three_conversations_with_their_own_scrollback() {
    let tmux = Tmux::new();
    let mediator = Mediator::start(&[]).await;
    let dir = TempDir::new("tui-messenger");
    let server = mediator.server_arg();
    let (one, two, group) = ("r-msgr-one", "r-msgr-two", "g-msgr");

    // Conversation 1: alice starts with --room, bob waits there.
    let mut bob = Client::start("bob", &client_args(&server, "bob", &dir, &["--room", one]));
    bob.expect("waiting").await;
    tmux.start("alice", &messenger_command(&server, one, &dir));
    tmux.wait_for("alice", "a secure session with bob", secure)
        .await;
    bob.expect("connected").await;

    // Conversation 2: a second room, typed in the running client.
    let mut dave = Client::start(
        "dave",
        &client_args(&server, "dave", &dir, &["--room", two]),
    );
    dave.expect("waiting").await;
    tmux.type_text("alice", &format!("/room {two}"));
    tmux.key("alice", "Enter");
    dave.expect("connected").await;

    // Conversation 3: a group room with carol.
    let mut carol = Client::start("carol", &member_args(&server, "carol", &dir, group));
    carol.expect("group_joined").await;
    tmux.type_text("alice", &format!("/group {group}"));
    tmux.key("alice", "Enter");
    carol.expect("member_joined").await;
    let screen = tmux
        .wait_for(
            "alice",
            "three conversations in the list, the group in front",
            |s| {
                entry(s, 1).1.contains("connected")
                    && entry(s, 2).1.contains("connected")
                    && entry(s, 3).1.contains("2 members")
                    && in_front(s, 3)
            },
        )
        .await;
    assert!(entry(&screen, 1).0.contains(one), "{screen}");
    assert!(entry(&screen, 1).1.contains("room·direct"), "{screen}");
    assert!(entry(&screen, 2).0.contains(two), "{screen}");
    assert!(
        entry(&screen, 3).0.contains(&format!("group {group}")),
        "{screen}"
    );
    assert!(
        !tmux.bell("alice"),
        "nothing arrived behind yet, yet the bell rang"
    );

    // Each peer speaks in its own conversation; the group is in front.
    bob.say("hello from bob").await;
    dave.say("hello from dave").await;
    carol.say("hello from carol").await;
    let screen = tmux
        .wait_for("alice", "carol's message and two unread behind", |s| {
            s.contains("carol: hello from carol")
                && unread(s, 1) == Some(1)
                && unread(s, 2) == Some(1)
        })
        .await;
    assert!(!screen.contains("hello from bob"), "{screen}");
    assert!(!screen.contains("hello from dave"), "{screen}");
    assert_eq!(unread(&screen, 3), None, "{screen}");
    assert!(tmux.bell("alice"), "a message behind rings the bell");
    // The notification sequences are the terminal's, not text on the screen.
    assert!(
        !screen.contains("p2pchat") && !screen.contains("777"),
        "{screen}"
    );

    // Alt-2: dave's room, its own scrollback; its count goes, bob's stays.
    tmux.key("alice", "M-2");
    let screen = tmux
        .wait_for("alice", "conversation 2 in front", |s| {
            in_front(s, 2) && s.contains("dave: hello from dave")
        })
        .await;
    assert!(!screen.contains("hello from carol"), "{screen}");
    assert!(!screen.contains("hello from bob"), "{screen}");
    assert_eq!(unread(&screen, 2), None, "{screen}");
    assert_eq!(unread(&screen, 1), Some(1), "{screen}");
    assert!(status_bar(&screen).contains("dave"), "{screen}");
    assert!(
        !screen.contains("/switch") && !screen.contains("[room]"),
        "the switch is neither typed nor listed as text:\n{screen}"
    );

    // What alice types goes to the conversation in front only.
    tmux.type_text("alice", "to dave only");
    tmux.key("alice", "Enter");
    let got = dave.expect("message").await;
    assert_eq!(got["text"], "to dave only");
    tmux.wait_for("alice", "the delivery mark", |s| {
        s.contains("you: to dave only ✓")
    })
    .await;

    // Ctrl-N: the next one, the group, with carol's message.
    tmux.key("alice", "C-n");
    let screen = tmux
        .wait_for("alice", "conversation 3 in front", |s| {
            in_front(s, 3) && s.contains("carol: hello from carol")
        })
        .await;
    assert!(!screen.contains("to dave only"), "{screen}");
    assert!(status_bar(&screen).contains("members"), "{screen}");

    // Ctrl-N again, round to the first: bob's room, its count gone.
    tmux.key("alice", "C-n");
    let screen = tmux
        .wait_for("alice", "conversation 1 in front", |s| {
            in_front(s, 1) && s.contains("bob: hello from bob")
        })
        .await;
    assert!(!screen.contains("hello from dave"), "{screen}");
    assert!(!screen.contains("hello from carol"), "{screen}");
    assert_eq!(unread(&screen, 1), None, "{screen}");
    assert!(status_bar(&screen).contains("bob"), "{screen}");

    // Ctrl-P goes back (to the group); a message behind counts again.
    tmux.key("alice", "C-p");
    tmux.wait_for("alice", "conversation 3 in front", |s| in_front(s, 3))
        .await;
    bob.say("bob again").await;
    let screen = tmux
        .wait_for("alice", "bob's second message behind", |s| {
            unread(s, 1) == Some(1)
        })
        .await;
    assert!(!screen.contains("bob again"), "{screen}");

    // Nobody heard another conversation's words.
    for peer in [&bob, &carol] {
        assert!(
            !peer.seen.iter().any(|e| e["text"] == "to dave only"),
            "{} saw dave's message: {:?}",
            peer.name,
            peer.seen
        );
    }

    tmux.type_text("alice", "/quit");
    tmux.key("alice", "Enter");
    check_restored(&tmux, "alice").await;
    mediator.kill().await;
}
