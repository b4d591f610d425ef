//! The terminal interface in a real terminal: two `client`s in tmux panes meet
//! through the real `mediator`, the status bars show `secure`, the path and the
//! same SAS, a typed message reaches the other pane and gets its delivery mark,
//! `/help` opens and closes, and after `/quit` (or Ctrl-C) the shell gets its
//! terminal back in cooked mode on the main screen.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{client_bin, Mediator, TempDir, WAIT};

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
        Tmux {
            socket: format!("p2pchat-test-{}", std::process::id()),
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
