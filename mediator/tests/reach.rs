//! The reach figure (docs/protocol.md §4, `ClientMsg::SessionPath`): a client's
//! report of the path its session took is counted under
//! `mediator_sessions_total{path}`, once per connection at most; a label the
//! mediator does not know is refused and counted under no path.

mod common;

use common::{config, frame, hello, start_with_metrics, Client, Server};
use wire::{ClientMsg, ErrorCode, MediatorMsg, PathLabel, Role};

/// The `mediator_sessions_total` line for each label, as the page shows it.
fn session_lines(counts: [u64; 5]) -> Vec<String> {
    PathLabel::ALL
        .iter()
        .zip(counts)
        .map(|(path, n)| format!("mediator_sessions_total{{path=\"{}\"}} {n}", path.as_str()))
        .collect()
}

/// Asserts the page has exactly these session counts, in the order of
/// `PathLabel::ALL`, and no series of the family besides.
async fn assert_sessions(server: &Server, counts: [u64; 5]) {
    let text = server.metrics_text().await;
    let want = session_lines(counts);
    for line in &want {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let series = text
        .lines()
        .filter(|l| l.starts_with("mediator_sessions_total{"))
        .count();
    assert_eq!(series, want.len(), "one series per known label:\n{text}");
}

/// A matched pair on room `n`, both past `Matched`.
async fn matched_pair(server: &Server, n: u64) -> (Client, Client) {
    let mut host = Client::connect(server.addr).await;
    host.send(&hello(n, "host")).await;
    host.expect_waiting().await;
    let mut joiner = Client::connect(server.addr).await;
    joiner.send(&hello(n, "joiner")).await;
    joiner.expect_matched(Role::Joiner).await;
    host.expect_matched(Role::Host).await;
    (host, joiner)
}

#[tokio::test]
async fn a_connection_reports_its_path_once() {
    let server = start_with_metrics(config()).await;
    assert_sessions(&server, [0; 5]).await;

    let (mut host, mut joiner) = matched_pair(&server, 1).await;
    host.answer_punch().await;
    joiner.answer_punch().await;
    // Two reports in one write: the first is counted and ends the conversation.
    let report = wire::encode(&ClientMsg::SessionPath {
        path: PathLabel::Direct,
    })
    .unwrap();
    let mut twice = frame(&report);
    twice.extend(frame(&report));
    host.send_raw(&twice).await.unwrap();
    assert_eq!(
        host.recv().await,
        None,
        "the mediator closes after a report"
    );
    // The other side's report is its own.
    joiner
        .send(&ClientMsg::SessionPath {
            path: PathLabel::Punched,
        })
        .await;
    assert_eq!(joiner.recv().await, None);
    assert_sessions(&server, [1, 0, 1, 0, 0]).await;

    // A report before the punch probe is answered counts too (a session on the
    // LAN can stand before the probe's round trip is over).
    let (mut host, mut joiner) = matched_pair(&server, 2).await;
    host.send(&ClientMsg::SessionPath {
        path: PathLabel::None,
    })
    .await;
    loop {
        match host.recv().await {
            Some(MediatorMsg::PunchPing { .. }) => {}
            None => break,
            other => panic!("expected the close, got {other:?}"),
        }
    }
    joiner.answer_punch().await;
    assert_sessions(&server, [1, 0, 1, 0, 1]).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_path_is_refused_and_counted_nowhere() {
    let server = start_with_metrics(config()).await;
    let (mut host, mut joiner) = matched_pair(&server, 3).await;
    host.answer_punch().await;
    joiner.answer_punch().await;
    // `SessionPath` (6) with label index 5, one past `None`.
    host.send_raw(&frame(&[6, 5])).await.unwrap();
    host.expect_error(ErrorCode::Malformed).await;
    assert_sessions(&server, [0; 5]).await;
    let text = server.metrics_text().await;
    assert!(
        text.lines()
            .any(|l| l == "mediator_errors_total{code=\"malformed\"} 1"),
        "{text}"
    );
    // Before `Matched` a report means nothing: refused, not counted.
    let mut early = Client::connect(server.addr).await;
    early
        .send(&ClientMsg::SessionPath {
            path: PathLabel::Direct,
        })
        .await;
    early.expect_error(ErrorCode::Malformed).await;
    assert_sessions(&server, [0; 5]).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_group_member_reports_once_and_stays() {
    let server = start_with_metrics(config()).await;
    let mut alice = Client::connect(server.addr).await;
    alice.join_group(4, "alice").await.unwrap();
    alice
        .send(&ClientMsg::SessionPath {
            path: PathLabel::Lan,
        })
        .await;
    // Still in the room: a Ping is answered (frames are read in order, so the
    // report was counted before this Pong).
    alice.send(&ClientMsg::Ping).await;
    assert_eq!(alice.recv().await, Some(MediatorMsg::Pong));
    assert_sessions(&server, [0, 1, 0, 0, 0]).await;
    // A second report on the same connection is a protocol error, not a count.
    alice
        .send(&ClientMsg::SessionPath {
            path: PathLabel::Lan,
        })
        .await;
    alice.expect_error(ErrorCode::Malformed).await;
    assert_sessions(&server, [0, 1, 0, 0, 0]).await;
    server.shutdown().await.unwrap();
}
