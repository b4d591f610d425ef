//! LAN mode in a network-namespace LAN (tests/common/lan_lab.rs): two hosts on
//! one bridge find each other with the default settings (every interface,
//! broadcast and multicast on UDP 7071) and chat over path `lan`; a third host in
//! another room is never matched; a host behind a router on another segment is
//! not found and gets the clear message and exit code 14. Needs root.

mod common;

use std::net::SocketAddr;

use common::lan_lab::{Host, LanLab};
use common::{client_bin, last, peers_file, Client, TempDir};

/// A LAN-mode client inside `host`: no `--server`, default LAN port and
/// interfaces, listening on every interface.
fn start_in(lab: &LanLab, host: Host, name: &str, dir: &TempDir, extra: &[&str]) -> Client {
    let mut cmd = lab.command(host, &client_bin());
    cmd.env_remove("P2PCHAT_KEYLOG")
        .env_remove("P2PCHAT_SERVER")
        .args([
            "--name",
            name,
            "--dh-group",
            "14",
            "--json",
            "--history",
            &dir.join(&format!("history-{name}.sqlite3"))
                .display()
                .to_string(),
            "--peers-file",
            &peers_file(dir, name).display().to_string(),
        ])
        .args(extra)
        .env("NO_COLOR", "1");
    Client::spawn(name, cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_lab_two_hosts_on_one_bridge_find_each_other_and_chat_over_path_lan() {
    let lab = LanLab::build();
    let dir = TempDir::new("lanlab-chat");
    let room = "5-copper-heron";
    let started = std::time::Instant::now();
    let mut carol = start_in(
        &lab,
        Host::Lan3,
        "carol",
        &dir,
        &["--room", "another-room", "--lan-timeout", "8s"],
    );
    let mut alice = start_in(&lab, Host::Lan1, "alice", &dir, &["--room", room]);
    let mut bob = start_in(&lab, Host::Lan2, "bob", &dir, &["--room", room]);
    let a = alice.expect("connected").await;
    let b = bob.expect("connected").await;
    eprintln!(
        "found each other across the bridge in {:?}",
        started.elapsed()
    );
    assert_eq!(a["path"], "lan");
    assert_eq!(b["path"], "lan");
    assert_eq!(a["sas"], b["sas"]);
    let bob_addr: SocketAddr = a["addr"].as_str().unwrap().parse().unwrap();
    let alice_addr: SocketAddr = b["addr"].as_str().unwrap().parse().unwrap();
    // The bridge's IPv4 addresses, or IPv6 link-local ones (LAN mode also
    // announces over link-local multicast): each namespace holds only the
    // loopback and its veth on the bridge, so either is the bridge.
    let on_bridge = |addr: &SocketAddr| match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            ip.to_string() == Host::Lan1.ip() || ip.to_string() == Host::Lan2.ip()
        }
        std::net::IpAddr::V6(ip) => (ip.segments()[0] & 0xffc0) == 0xfe80,
    };
    assert!(
        on_bridge(&bob_addr) && on_bridge(&alice_addr),
        "the peers talk over the bridge: {bob_addr}, {alice_addr}"
    );

    alice.say("hello across the bridge").await;
    assert_eq!(
        bob.expect("message").await["text"],
        "hello across the bridge"
    );
    bob.say("hello back").await;
    assert_eq!(alice.expect("message").await["text"], "hello back");

    // Carol, in another room on the same bridge, never matches anyone.
    assert_eq!(carol.exit_code().await, 14);
    let events = carol.drain().await;
    assert!(
        !events.iter().any(|e| e["event"] == "matched"),
        "{events:?}"
    );
    assert_eq!(last(&carol, "error")["code"], "lan_timeout");

    bob.say("/quit").await;
    assert_eq!(bob.exit_code().await, 0);
    assert_eq!(alice.exit_code().await, 0);
    let line = std::fs::read_to_string(peers_file(&dir, "alice")).unwrap();
    assert!(line.contains("\tlan\t"), "{line:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_lab_a_host_behind_a_router_is_not_found_and_exits_14_with_the_clear_message() {
    let lab = LanLab::build();
    let dir = TempDir::new("lanlab-far");
    let room = "8-distant-shore";
    let quick = ["--room", room, "--lan-timeout", "5s"];
    let mut near = start_in(&lab, Host::Lan1, "near", &dir, &quick);
    let mut far = start_in(&lab, Host::Far, "far", &dir, &quick);
    for c in [&mut near, &mut far] {
        assert_eq!(c.exit_code().await, 14, "{}: {}", c.name, c.stderr());
        let events = c.drain().await;
        assert!(
            !events.iter().any(|e| e["event"] == "matched"),
            "{}: {events:?}",
            c.name
        );
        let err = last(c, "error");
        assert_eq!(err["code"], "lan_timeout");
        let text = err["text"].as_str().unwrap();
        for hint in ["--server", "different network", "UDP port 7071", "Wi-Fi"] {
            assert!(
                text.contains(hint),
                "{}: message names `{hint}`: {text}",
                c.name
            );
        }
    }
}
