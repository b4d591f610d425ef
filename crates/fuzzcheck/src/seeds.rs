//! Starting inputs the fuzzer could not easily guess (a genuine handshake, a prime
//! minus one, escape sequences). `examples/write-seeds.rs` writes them into
//! `fuzz/corpus/`; the corpus test replays them like any corpus file.

use dhke::Group;

use crate::handshake::{fixtures, Fixture};

/// The seeds of one target, named.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let named = |items: Vec<Vec<u8>>, prefix: &str| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| (format!("seed-{prefix}-{i}"), bytes))
            .collect()
    };
    match target {
        "frame_decode" => named(frames(), "frames"),
        "peer_handshake_msg" => named(
            all_fixtures()
                .flat_map(|f| {
                    [&f.hello, &f.host_confirm, &f.joiner_confirm]
                        .map(|m| wire::encode(m).expect("encode"))
                })
                .collect(),
            "msg",
        ),
        "handshake" => named(handshakes(), "exchange"),
        "record_open" => named(records(), "record"),
        "file_name" => named(
            [
                "report.pdf",
                "../../etc/passwd",
                "C:\\Windows\\evil.dll",
                "evil\u{202E}fdp.exe",
                "a\u{1b}[31m.txt",
                "..",
                " \u{200B} ",
                &format!("{}.tar.gz", "a".repeat(300)),
                &format!("x.{}", "é".repeat(200)),
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
            "name",
        ),
        "terminal_text" => named(
            [
                "hello",
                "a\u{1b}[31;1mred\u{1b}[0m",
                "\u{1b}]8;;http://e\u{1b}\\link",
                "\u{9b}2J\u{90}dcs\u{9c}x",
                "line\nfake\r\t",
                "evil\u{202E}txt\u{FEFF}",
                "Zoë 🦀",
            ]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
            "text",
        ),
        "public_value" => named(publics(), "public"),
        "lan_datagram" => named(lan_datagrams(), "lan"),
        "lan_presence" => named(lan_presences(), "presence"),
        "group_log" => named(crate::group::seeds(), "log"),
        _ => Vec::new(),
    }
}

fn all_fixtures() -> impl Iterator<Item = &'static Fixture> {
    let fx = fixtures();
    [&fx.fresh, &fx.resumed].into_iter()
}

fn frames() -> Vec<Vec<u8>> {
    let mut two = vec![0u8];
    two.extend_from_slice(b"\0\0\0\x05hello\0\0\0\x01x");
    // Three chunk sizes (1, 3, 7) over the same stream.
    let mut split = vec![3, 1, 3, 7];
    split.extend_from_slice(&two[1..]);
    let mut big = vec![0u8, 0, 0, 0x40, 0];
    big.extend(std::iter::repeat(0xab).take(16 * 1024));
    // A frame, then the relay's end notice of docs/protocol.md §12.3 in 5-byte
    // pieces; and a notice that carries something other than an `Error`.
    let mut notice = vec![1u8, 5];
    notice.extend_from_slice(b"\0\0\0\x02hi");
    notice.extend(wire::frame::relay_notice(
        wire::ErrorCode::RelayLimit,
        "byte cap",
    ));
    let mut odd_notice = vec![0u8, 0, 0, 0, 0, 0, 0, 0, 1];
    odd_notice.extend(wire::encode(&wire::MediatorMsg::RelayReady).expect("encode"));
    vec![
        two,
        split,
        big,
        vec![0, 0, 0, 0, 0],
        vec![0, 0xff, 0xff, 0xff, 0xff],
        notice,
        odd_notice,
    ]
}

/// `ctrl | u16_le(split) | first | second`, as `handshake` reads it.
fn handshakes() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (resume, f) in all_fixtures().enumerate() {
        let hello = wire::encode(&f.hello).expect("encode");
        let confirm = wire::encode(&f.joiner_confirm).expect("encode");
        let host_confirm = wire::encode(&f.host_confirm).expect("encode");
        let ctrl = resume as u8;
        let len = u16::try_from(hello.len()).expect("small");
        let mut host = vec![ctrl];
        host.extend_from_slice(&len.to_le_bytes());
        host.extend_from_slice(&hello);
        host.extend_from_slice(&confirm);
        out.push(host);
        let len = u16::try_from(host_confirm.len()).expect("small");
        let mut joiner = vec![ctrl | 2];
        joiner.extend_from_slice(&len.to_le_bytes());
        joiner.extend_from_slice(&host_confirm);
        out.push(joiner);
    }
    out
}

fn records() -> Vec<Vec<u8>> {
    let mut flip = vec![1u8, 5, 0];
    flip.extend_from_slice(b"hello");
    flip.extend_from_slice(&[0, 20, 0, 1]);
    let mut truncate = vec![2u8, 3, 0];
    truncate.extend_from_slice(b"abc");
    truncate.extend_from_slice(&[1, 40, 0, 0]);
    vec![flip, truncate, vec![0; 65]]
}

fn publics() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (bit, group) in [(0u8, Group::Modp2048), (4, Group::Modp3072)] {
        let p = group.prime_bytes();
        let mut p_minus_1 = p.to_vec();
        *p_minus_1.last_mut().expect("non-empty") -= 1;
        let mut two = vec![0u8; p.len()];
        *two.last_mut().expect("non-empty") = 2;
        for value in [p.to_vec(), p_minus_1, two] {
            let mut input = vec![bit];
            input.extend_from_slice(&value);
            out.push(input);
        }
        out.push(vec![bit | 1, 2]);
    }
    out.push(vec![2, 5, 0, 0, 0, 7]);
    out
}

/// The docs/protocol.md §14.3 vector, whole.
const LAN_VECTOR: &str = "5032504c01222222222222222222222222222222220000018bcfe56800111111\
    1111111111111111111111111105616c6963650e02aabbfb409c0100c0a80114\
    fb409cc69790cfde585255fa04d58f9965c4655e97825a0c96808122c97da7b5\
    76e978";

/// `own | event*`, as `lan_datagram` reads it: the spec's vector as received, and a
/// key holder's announcements that hit each row of §14.2.
fn lan_datagrams() -> Vec<Vec<u8>> {
    let vector = hex::decode(LAN_VECTOR.replace(' ', "")).expect("hex");
    let ann = |instance: u8, name: &str, addrs: usize| {
        wire::encode(&wire::lan::Announcement {
            instance: [instance; wire::lan::INSTANCE_LEN],
            name: name.into(),
            group: 14,
            public: vec![0xAA, 0xBB],
            listen_port: 40000,
            addrs: vec!["192.168.1.20:40000".parse().expect("addr"); addrs],
        })
        .expect("encode")
    };
    let raw = |bytes: &[u8]| {
        let mut e = vec![0u8];
        e.extend_from_slice(&u16::try_from(bytes.len()).expect("small").to_le_bytes());
        e.extend_from_slice(bytes);
        e
    };
    let held = |nonce: u8, age_ms: i32, body: &[u8]| {
        let mut e = vec![1u8, nonce];
        e.extend_from_slice(&i16::try_from(age_ms / 4).expect("small").to_le_bytes());
        e.extend_from_slice(&u16::try_from(body.len()).expect("small").to_le_bytes());
        e.extend_from_slice(body);
        e
    };
    let mut vector_then_replay = vec![0x99];
    vector_then_replay.extend(raw(&vector));
    vector_then_replay.extend([2, 0]);
    let mut rows = vec![0x99];
    for event in [
        held(1, 0, &ann(0x11, "alice", 1)),
        vec![2, 0],
        held(2, 0, &ann(0x99, "me", 1)),
        held(3, 30_004, &ann(0x11, "alice", 1)),
        held(4, -10_004, &ann(0x11, "alice", 1)),
        held(5, 0, &ann(0x11, "alice", 9)),
        held(6, 0, &ann(0x11, "bad\u{1b}name", 1)),
        held(7, 0, &[0xFF; 8]),
        raw(b"P2PL\x02 not this version, but long enough to pass the size check.."),
        raw(b"garbage"),
        raw(&[b'X'; 70]),
        raw(&{
            let mut forged = vector.clone();
            *forged.last_mut().expect("non-empty") ^= 1;
            forged
        }),
        // 63 s later the first announcement is stale even replayed.
        vec![(63 << 2) | 2, 0],
    ] {
        rows.extend(event);
    }
    vec![vector_then_replay, rows]
}

/// The docs/protocol.md §14.4 vector, whole.
const PRESENCE_VECTOR: &str = "50325050011111111111111111111111111111111101b0551502704065\
    abf6586fadc8910ed1964acc52b364973c8b824fdb27bac0f7778366e9";

/// `own | event*`, as `lan_presence` reads it: the spec's vector as received,
/// and datagrams that hit each row of §14.4's receiving table.
fn lan_presences() -> Vec<Vec<u8>> {
    let vector = hex::decode(PRESENCE_VECTOR.replace(' ', "")).expect("hex");
    let raw = |bytes: &[u8]| {
        let mut e = vec![0u8];
        e.extend_from_slice(&u16::try_from(bytes.len()).expect("small").to_le_bytes());
        e.extend_from_slice(bytes);
        e
    };
    // From sender 16 × `id`, `epochs` from ours, real tags per `mask`, `extra` others.
    let held = |id: u8, epochs: i8, mask: u8, extra: u8| {
        vec![1u8, id, epochs.to_le_bytes()[0], mask, extra]
    };
    let mut vector_then_replay = vec![0x99];
    vector_then_replay.extend(raw(&vector));
    vector_then_replay.extend([2, 0]);
    let mut malformed = vector.clone();
    malformed.truncate(vector.len() - 16);
    let mut version = vector.clone();
    version[4] = 2;
    let mut rows = vec![0x99];
    for event in [
        held(1, 0, 1, 0),
        vec![2, 0],
        held(0x99, 0, 3, 0),
        held(2, -2, 1, 0),
        held(3, 2, 1, 0),
        held(4, 0, 0, 3),
        held(5, 1, 2, 1),
        raw(&version),
        raw(b"garbage"),
        raw(&[b'X'; 70]),
        raw(&malformed),
    ] {
        rows.extend(event);
    }
    // More than 20 evaluations within one second: the rest are busy.
    for id in 10..35 {
        rows.extend(held(id, 0, 0, 1));
    }
    vec![vector_then_replay, rows]
}
