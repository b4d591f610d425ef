//! End-to-end tests of issue 6 with the real binaries: files of awkward sizes
//! arrive byte-identical, a cut transfer resumes from its `.part`, hostile names
//! cannot escape the downloads directory, and rejected or cancelled transfers
//! leave nothing behind.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::proxy::Proxy;
use common::raw_peer::RawPeer;
use common::{free_port, set_flag, Client, Mediator, TempDir};
use wire::PeerMsg;

fn client_args(server: &str, name: &str, room: &str, dir: &TempDir, extra: &[&str]) -> Vec<String> {
    let mut a = common::client_args(server, name, dir, &["--room", room]);
    set_flag(
        &mut a,
        "--downloads",
        &dir.join(&format!("downloads-{name}")).display().to_string(),
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// A file of `len` pseudo-random bytes (seeded, so every run is the same).
fn make_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let mut data = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    path
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn pair(med: &Mediator, room: &str, dir: &TempDir, bob_extra: &[&str]) -> (Client, Client) {
    common::connected_pair(
        &client_args(&med.server_arg(), "alice", room, dir, &[]),
        &client_args(&med.server_arg(), "bob", room, dir, bob_extra),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_sizes_arrive_byte_identical() {
    let dir = TempDir::new("sizes");
    let med = Mediator::start(&[]).await;
    let (mut alice, mut bob) = pair(&med, "r-sizes", &dir, &["--yes"]).await;
    let sizes = [0usize, 1, 64 * 1024, 5 * 1024 * 1024 + 3];
    for (i, &len) in sizes.iter().enumerate() {
        let path = make_file(dir.path(), &format!("file-{i}.bin"), len);
        alice.say(&format!("/send {}", path.display())).await;
        let offer = bob.expect("file_offer").await;
        assert_eq!(offer["size"], len as u64);
        assert_eq!(offer["name"], format!("file-{i}.bin"));
        let done = bob.expect("file_done").await;
        let got = PathBuf::from(done["path"].as_str().unwrap());
        assert_eq!(
            got,
            dir.join("downloads-bob")
                .canonicalize()
                .unwrap()
                .join(format!("file-{i}.bin"))
        );
        let sent = std::fs::read(&path).unwrap();
        let received = std::fs::read(&got).unwrap();
        assert!(
            sent == received,
            "file {i} ({len} bytes) arrived byte-identical"
        );
        assert_eq!(done["blake3"], blake3::hash(&sent).to_hex().as_str());
        let mine = alice.expect("file_done").await;
        assert_eq!(mine["direction"], "send");
        assert_eq!(mine["blake3"], done["blake3"]);
    }
    // Chat still works after the transfers, and nothing but the files is left.
    alice.say("all sent").await;
    assert_eq!(bob.expect("message").await["text"], "all sent");
    assert_eq!(
        listing(&dir.join("downloads-bob")),
        vec!["file-0.bin", "file-1.bin", "file-2.bin", "file-3.bin"]
    );
    // The same name again is never overwritten.
    let path = dir.join("file-1.bin");
    alice.say(&format!("/send {}", path.display())).await;
    let done = bob.expect("file_done").await;
    assert!(
        done["path"].as_str().unwrap().ends_with("file-1 (1).bin"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_mid_way_resumes_from_the_part_file() {
    let dir = TempDir::new("resume");
    let med = Mediator::start(&[]).await;
    // Both listeners sit behind proxies so the link can be cut whoever hosts.
    let mut proxies = Vec::new();
    let mut clients = Vec::new();
    for name in ["alice", "bob"] {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), listen, None).await;
        let extra = if name == "bob" { vec!["--yes"] } else { vec![] };
        let mut args = client_args(&med.server_arg(), name, "r-resume", &dir, &extra);
        set_flag(&mut args, "--listen", &listen.to_string());
        set_flag(&mut args, "--advertise", &proxy.addr.to_string());
        // The path must be the proxy: no punch past it, no relay around it.
        args.extend(["--no-punch".to_string(), "--no-relay".to_string()]);
        let mut c = Client::start(name, &args);
        if name == "alice" {
            c.expect("waiting").await;
        }
        clients.push(c);
        proxies.push(proxy);
    }
    let (mut alice, mut bob) = {
        let mut it = clients.into_iter();
        (it.next().unwrap(), it.next().unwrap())
    };
    alice.expect("connected").await;
    bob.expect("connected").await;

    let len = 48 * 1024 * 1024 + 5;
    let path = make_file(dir.path(), "big.bin", len);
    alice.say(&format!("/send {}", path.display())).await;
    bob.expect("file_offer").await;
    // Cut once part of the file has arrived.
    loop {
        let p = bob.expect("progress").await;
        let bytes = p["bytes"].as_u64().unwrap();
        if bytes > 0 && bytes < len as u64 {
            break;
        }
    }
    for p in &proxies {
        p.cut();
    }
    let resumed = bob.expect("info").await;
    assert!(
        resumed["text"]
            .as_str()
            .unwrap()
            .starts_with("Resuming big.bin"),
        "the receiver resumes from its .part: {resumed}"
    );
    let done = bob.expect("file_done").await;
    let got = std::fs::read(done["path"].as_str().unwrap()).unwrap();
    let sent = std::fs::read(&path).unwrap();
    assert!(got == sent, "the resumed file is byte-identical");
    assert!(bob.seen.iter().any(|e| e["event"] == "reconnecting"));
    assert_eq!(
        listing(&dir.join("downloads-bob")),
        vec!["big.bin"],
        "no .part left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_restarted_with_its_part_file_resumes() {
    let dir = TempDir::new("restart-part");
    let med = Mediator::start(&[]).await;
    let mut alice = Client::start(
        "alice",
        &client_args(
            &med.server_arg(),
            "alice",
            "r-part",
            &dir,
            &["--reconnect-for", "60s"],
        ),
    );
    alice.expect("waiting").await;
    let bob_args = client_args(&med.server_arg(), "bob", "r-part", &dir, &["--yes"]);
    let mut bob = Client::start("bob", &bob_args);
    alice.expect("connected").await;
    bob.expect("connected").await;
    let len = 48 * 1024 * 1024 + 7;
    let path = make_file(dir.path(), "restart.bin", len);
    alice.say(&format!("/send {}", path.display())).await;
    loop {
        let p = bob.expect("progress").await;
        let bytes = p["bytes"].as_u64().unwrap();
        if bytes > 0 && bytes < len as u64 {
            break;
        }
    }
    // Kill bob once part of the file is on disk (progress counts bytes handed
    // to the writer thread, which may not have reached the file yet). The
    // `.part` is named by sender and transfer id, not by the file's name.
    let downloads = dir.join("downloads-bob");
    let part_file = || {
        let parts: Vec<String> = listing(&downloads)
            .into_iter()
            .filter(|n| n.starts_with(".p2pchat-") && n.ends_with(".part"))
            .collect();
        assert!(parts.len() <= 1, "one transfer, one .part: {parts:?}");
        parts.first().map(|n| downloads.join(n))
    };
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let part = loop {
        if let Some(p) = part_file() {
            if std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) > 0 {
                break p;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing reached the .part"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    bob.kill_hard().await;
    let on_disk = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(on_disk > 0, "the .part survives the crash");
    assert!(on_disk < len as u64, "the crash came mid-transfer");

    // A new bob process: new keys, same downloads directory.
    let mut bob = Client::start("bob2", &bob_args);
    bob.expect("connected").await;
    let resumed = bob.expect("info").await;
    assert!(
        resumed["text"]
            .as_str()
            .unwrap()
            .starts_with("Resuming restart.bin"),
        "{resumed}"
    );
    let done = bob.expect("file_done").await;
    assert!(
        std::fs::read(done["path"].as_str().unwrap()).unwrap() == std::fs::read(&path).unwrap()
    );
    assert!(!part.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_stay_inside_the_downloads_directory() {
    let dir = TempDir::new("names");
    let med = Mediator::start(&[]).await;
    let downloads = dir.join("deep").join("downloads-alice");
    let mut args = client_args(&med.server_arg(), "alice", "r-names", &dir, &["--yes"]);
    set_flag(&mut args, "--downloads", &downloads.display().to_string());
    let mut alice = Client::start("alice", &args);
    alice.expect("waiting").await;
    let mut mallory = RawPeer::join(med.addr, "r-names", "mallory").await;
    alice.expect("connected").await;

    let hostile = [
        "../../x",
        "/etc/x",
        "a/b",
        "evil\u{1b}[2J\u{7}name",
        "..",
        "\u{0}",
        "c\\d",
    ];
    for (i, name) in hostile.iter().enumerate() {
        let id = 1000 + i as u64;
        let data = format!("payload {i}").into_bytes();
        mallory
            .send(&PeerMsg::FileOffer {
                id,
                name: name.to_string(),
                size: data.len() as u64,
            })
            .await;
        match mallory.recv().await {
            PeerMsg::FileAccept { id: got, offset } => {
                assert_eq!((got, offset), (id, 0));
                mallory
                    .send(&PeerMsg::FileChunk {
                        id,
                        offset: 0,
                        data: data.clone(),
                    })
                    .await;
                let blake3 = *blake3::hash(&data).as_bytes();
                mallory.send(&PeerMsg::FileDone { id, blake3 }).await;
            }
            PeerMsg::FileReject { id: got } => assert_eq!(got, id, "{name:?} refused"),
            other => panic!("unexpected answer to {name:?}: {other:?}"),
        }
    }
    let chat = mallory.chat("done");
    mallory.send(&chat).await;
    alice.expect("message").await;

    // Nothing outside the downloads directory...
    assert_eq!(listing(&dir.join("deep")), vec!["downloads-alice"]);
    assert!(!dir.join("x").exists() && !dir.join("deep").join("x").exists());
    assert!(!Path::new("/etc/x").exists());
    // ...and inside it only plain names, none with a separator or control character.
    let inside = listing(&downloads);
    assert!(
        !inside.is_empty(),
        "some offers were accepted under safe names"
    );
    for name in &inside {
        assert!(
            !name.contains('/') && !name.contains('\\') && !name.chars().any(char::is_control),
            "{name:?}"
        );
        assert!(!name.ends_with(".part"), "{name:?}");
        assert!(name != "." && name != "..");
    }
    for e in alice.seen.iter().filter(|e| e["event"] == "file_done") {
        let path = PathBuf::from(e["path"].as_str().unwrap());
        assert_eq!(path.parent().unwrap(), downloads.canonicalize().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_and_cancelled_transfers_leave_nothing_behind() {
    let dir = TempDir::new("cancel");
    let med = Mediator::start(&[]).await;
    let (mut alice, mut bob) = pair(&med, "r-cancel", &dir, &[]).await;
    let small = make_file(dir.path(), "small.bin", 1000);
    let big = make_file(dir.path(), "big.bin", 96 * 1024 * 1024);

    // Rejected: nothing is created.
    alice.say(&format!("/send {}", small.display())).await;
    let offer = bob.expect("file_offer").await;
    bob.say(&format!("/reject {}", offer["id"])).await;
    let stopped = alice.expect("file_stopped").await;
    assert!(
        stopped["reason"].as_str().unwrap().contains("declined"),
        "{stopped}"
    );
    assert!(listing(&dir.join("downloads-bob")).is_empty());

    // Cancelled by the receiver mid-way: the .part goes too.
    alice.say(&format!("/send {}", big.display())).await;
    let offer = bob.expect("file_offer").await;
    bob.say(&format!("/accept {}", offer["id"])).await;
    bob.expect("progress").await;
    bob.say(&format!("/cancel {}", offer["id"])).await;
    bob.expect("file_stopped").await;
    let stopped = alice.expect("file_stopped").await;
    assert!(
        stopped["reason"].as_str().unwrap().contains("cancelled"),
        "{stopped}"
    );
    // Let chunks still in flight arrive and be dropped.
    alice.say("sync").await;
    bob.expect("message").await;
    assert!(
        listing(&dir.join("downloads-bob")).is_empty(),
        "{:?}",
        listing(&dir.join("downloads-bob"))
    );

    // Cancelled by the sender mid-way: the receiver's .part goes too.
    alice.say(&format!("/send {}", big.display())).await;
    let offer = bob.expect("file_offer").await;
    bob.say(&format!("/accept {}", offer["id"])).await;
    bob.expect("progress").await;
    let sending = alice.expect("progress").await;
    alice.say(&format!("/cancel {}", sending["id"])).await;
    let stopped = bob.expect("file_stopped").await;
    assert!(
        stopped["reason"].as_str().unwrap().contains("cancelled"),
        "{stopped}"
    );
    alice.say("sync again").await;
    bob.expect("message").await;
    assert!(
        listing(&dir.join("downloads-bob")).is_empty(),
        "{:?}",
        listing(&dir.join("downloads-bob"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_offers_is_bounded() {
    let dir = TempDir::new("flood");
    let med = Mediator::start(&[]).await;
    let mut alice = Client::start(
        "alice",
        &client_args(&med.server_arg(), "alice", "r-flood", &dir, &[]),
    );
    alice.expect("waiting").await;
    let mut mallory = RawPeer::join(med.addr, "r-flood", "mallory").await;
    alice.expect("connected").await;
    let waiting = engine::transfer::MAX_WAITING_OFFERS;
    let total = waiting + 8;
    for id in 0..total as u64 {
        mallory
            .send(&PeerMsg::FileOffer {
                id: 5000 + id,
                name: format!("spam-{id}.bin"),
                size: 1 << 30,
            })
            .await;
    }
    // Every offer past the bound is declined at once...
    let mut declined = Vec::new();
    while declined.len() < total - waiting {
        match mallory.recv().await {
            PeerMsg::FileReject { id } => declined.push(id),
            other => panic!("unexpected {other:?}"),
        }
    }
    declined.sort_unstable();
    let expected: Vec<u64> = (waiting as u64..total as u64).map(|i| 5000 + i).collect();
    assert_eq!(declined, expected);
    // ...the person sees exactly the bounded number of offers, and is told.
    let chat = mallory.chat("sync");
    mallory.send(&chat).await;
    alice.expect("message").await;
    let offers = alice
        .seen
        .iter()
        .filter(|e| e["event"] == "file_offer")
        .count();
    assert_eq!(offers, waiting);
    assert!(alice
        .seen
        .iter()
        .any(|e| e["event"] == "error" && e["code"] == "busy"));
    assert!(listing(&dir.join("downloads-alice")).is_empty());
}
