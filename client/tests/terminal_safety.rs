//! A hostile peer's words on a real client's terminal: the client runs in plain
//! mode (no `--json`), a raw peer puts escape sequences, C1 controls, bidi
//! overrides and a fake line into text that ends up in the client's error and
//! exit message, and nothing of them reaches its stdout or stderr.

mod common;

use std::process::Stdio;

use common::raw_peer::{meet_as_joiner, recv_msg, send_msg};
use common::{client_args, client_bin, Mediator, TempDir, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use wire::PeerHandshake;

/// Clears the screen, retitles the window, turns text red (7- and 8-bit CSI),
/// opens a hyperlink, rings the bell, reverses text and fakes a line of ours.
const HOSTILE: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{1b}[31mgo\u{9b}1;1H away\
                       \u{1b}]8;;http://evil\u{1b}\\\u{202e}gnp.exe\u{2066}\u{200b}\
                       \r\nVerified contact connected: bob";

/// Everything a terminal would act on or that hides text.
fn unsafe_chars(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| (c.is_control() && c != '\n') || wire::text::is_invisible_format(c))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_escapes_in_the_exit_message_never_reach_stdout_or_stderr() {
    let med = Mediator::start(&[]).await;
    let dir = TempDir::new("terminal-safety");
    let room = "r-terminal-safety";
    let mut args = client_args(
        &med.server_arg(),
        "alice",
        &dir,
        &["--room", room, "--connect-timeout", "3s", "--plain"],
    );
    args.retain(|a| a != "--json");
    let mut alice = Command::new(client_bin())
        .args(&args)
        .env_remove("P2PCHAT_KEYLOG")
        .env_remove("P2PCHAT_SERVER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start client");
    let _stdin = alice.stdin.take();
    let mut stdout = BufReader::new(alice.stdout.take().expect("piped stdout"));
    let mut stderr = alice.stderr.take().expect("piped stderr");
    let err_task = tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes).await;
        bytes
    });

    // Alice waits in the room (so she hosts); her output so far is kept.
    let mut out_bytes = Vec::new();
    let waiting = tokio::time::timeout(WAIT, async {
        loop {
            let mut line = Vec::new();
            if stdout
                .read_until(b'\n', &mut line)
                .await
                .expect("read stdout")
                == 0
            {
                return false;
            }
            out_bytes.extend_from_slice(&line);
            if line.starts_with(b"Waiting for the other person") {
                return true;
            }
        }
    })
    .await
    .expect("alice waits in the room in time");
    if !waiting {
        let err = err_task.await.expect("stderr reader");
        panic!(
            "alice ended before waiting: {:?} {:?}",
            String::from_utf8_lossy(&out_bytes),
            String::from_utf8_lossy(&err)
        );
    }

    // Mallory knows the code: her PeerHello passes, alice reveals, and Mallory
    // answers the HostConfirm with a Reject full of escapes. Alice notes that
    // attempt's failure and, when nobody else connects, names it in her exit
    // message.
    let mallory = meet_as_joiner(med.addr, room, "mallory").await;
    let mut framed = mallory.dial_framed().await;
    let (_state, hello) = mallory.handshake.hello(&mut rand::rngs::OsRng);
    send_msg(&mut framed, &hello).await;
    let _confirm: PeerHandshake = recv_msg(&mut framed).await;
    send_msg(
        &mut framed,
        &PeerHandshake::Reject {
            reason: HOSTILE.into(),
        },
    )
    .await;

    let status = tokio::time::timeout(WAIT, alice.wait())
        .await
        .expect("alice gives up within the connect timeout")
        .expect("wait for alice");
    stdout
        .read_to_end(&mut out_bytes)
        .await
        .expect("read stdout");
    let err_bytes = err_task.await.expect("stderr reader");
    let out = String::from_utf8(out_bytes).expect("stdout is UTF-8");
    let err = String::from_utf8(err_bytes).expect("stderr is UTF-8");
    // Mallory refused the relay: no path (12), with the attempts it made.
    assert_eq!(status.code(), Some(12), "stdout: {out:?}\nstderr: {err:?}");
    for (stream, text) in [("stdout", &out), ("stderr", &err)] {
        let bad = unsafe_chars(text);
        assert!(bad.is_empty(), "{stream} carries {bad:?}: {text:?}");
        assert!(
            !text.lines().any(|l| l.starts_with("Verified contact")),
            "{stream} has a line the peer made: {text:?}"
        );
    }
    let exit_line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no exit message on stderr: {err:?}"));
    // The peer's words did reach the exit message, without their controls.
    assert!(
        exit_line.contains("peer refused the connection: go away"),
        "{exit_line:?}"
    );
    assert!(
        exit_line.contains("Verified contact connected"),
        "{exit_line:?}"
    );
}
