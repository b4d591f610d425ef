//! The reach figure end to end (docs/protocol.md §4, `SessionPath`): clients
//! meet through a real mediator on loopback, each tells the mediator the path
//! its session took, and `mediator_sessions_total{path}` counts one per
//! reporting side, under the label each side showed in its `connected` event.

mod common;

use common::{client_args, connected_pair, last, wait_for_metrics, Client, Mediator, TempDir};

/// The five `mediator_sessions_total` lines for these counts of direct, lan,
/// punched, relay and none.
fn sessions(counts: [u32; 5]) -> Vec<String> {
    ["direct", "lan", "punched", "relay", "none"]
        .iter()
        .zip(counts)
        .map(|(path, n)| format!("mediator_sessions_total{{path=\"{path}\"}} {n}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_of_a_direct_session_is_counted_once() {
    let dir = TempDir::new("reach-pair");
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let med = Mediator::start(&["--metrics", &metrics]).await;
    wait_for_metrics(&metrics, &sessions([0; 5])).await;
    let server = med.server_arg();
    let a = client_args(&server, "alice", &dir, &["--room", "r-reach"]);
    let b = client_args(&server, "bob", &dir, &["--room", "r-reach"]);
    let (alice, bob) = connected_pair(&a, &b).await;
    // Both on loopback, neither behind a NAT: both sides say `direct` (§12.5).
    for side in [&alice, &bob] {
        assert_eq!(last(side, "connected")["path"], "direct", "{}", side.name);
    }
    wait_for_metrics(&metrics, &sessions([2, 0, 0, 0, 0])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_reports_its_first_link_once() {
    let dir = TempDir::new("reach-group");
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let med = Mediator::start(&["--metrics", &metrics]).await;
    let server = med.server_arg();
    let names = ["carol", "dave", "erin"];
    let mut members = Vec::new();
    for name in names {
        let args = client_args(&server, name, &dir, &["--room", "r-reach-g", "--group"]);
        let mut c = Client::start(name, &args);
        c.expect("group_joined").await;
        members.push(c);
    }
    for c in &mut members {
        for _ in 1..names.len() {
            let joined = c.expect("member_joined").await;
            assert_eq!(joined["path"], "direct", "{}: {joined}", c.name);
        }
    }
    // Three members, two links each, one mediator connection each: three
    // reports, not six.
    wait_for_metrics(&metrics, &sessions([3, 0, 0, 0, 0])).await;
}
