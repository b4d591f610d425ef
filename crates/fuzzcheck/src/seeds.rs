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
    vec![
        two,
        split,
        big,
        vec![0, 0, 0, 0, 0],
        vec![0, 0xff, 0xff, 0xff, 0xff],
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
