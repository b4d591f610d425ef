//! Criterion benches for the wire crate: the whole peer handshake with CPace key
//! pairs, CPU per side (group 15), and record seal/open throughput at 16 and 64 KiB.
//! `cargo bench -p wire`.

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dhke::schedule::Key;
use dhke::{Group, KeyPair, RoomCode};
use rand_core::OsRng;
use wire::handshake::{HostHandshake, JoinerHelloSent};
use wire::{HandshakeInput, Opener, PeerHandshake, Sealer};

/// CPU time of each side (the thread's CPU time on Linux, else wall time) for one
/// complete handshake, including its key generation and the bincode encoding of what
/// it sends and decoding of what it receives. The other side's work happens too but
/// is not counted.
#[derive(Default)]
struct SideTimes {
    host: Duration,
    joiner: Duration,
}

/// CPU time of this thread so far (`CLOCK_THREAD_CPUTIME_ID`), so a busy shared
/// machine does not inflate the figures; `None` off Linux. Not
/// `/proc/thread-self/schedstat`: the kernel updates that figure only at a scheduler
/// tick (4 ms here), longer than one side's whole handshake, so single samples read
/// 0 or 4 ms and criterion refused the group-14 joiner figure as "zero time".
#[cfg(target_os = "linux")]
fn thread_cpu() -> Option<Duration> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u32::try_from(now.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Option<Duration> {
    None
}

fn timed<T>(acc: &mut Duration, f: impl FnOnce() -> T) -> T {
    let (start, cpu) = (Instant::now(), thread_cpu());
    let out = f();
    *acc += match (cpu, thread_cpu()) {
        (Some(before), Some(after)) => after.saturating_sub(before),
        _ => start.elapsed(),
    };
    out
}

/// A generated (nameplate) code: its tag is one SHA-256, so the handshake figures
/// are the PAKE's own. A typed name adds one Argon2id per run for its tag (the
/// `room_tag` bench in dhke), done once before the `Hello`, not per handshake.
fn code() -> RoomCode {
    RoomCode::parse("7-velvet-harbor-maple-otter")
}

fn input(local: KeyPair, local_name: &str, peer_name: &str, peer_public: &[u8]) -> HandshakeInput {
    HandshakeInput {
        room: code(),
        local_name: local_name.into(),
        local,
        peer_name: peer_name.into(),
        peer_public: peer_public.to_vec(),
        previous: None,
        keylog: false,
        identity: dhke::Identity::from_seed(&[local_name.len() as u8; 32]),
        expect_peer: None,
    }
}

fn one_handshake(group: Group, t: &mut SideTimes) {
    let rng = &mut OsRng;
    let host_keys = timed(&mut t.host, || {
        KeyPair::generate_cpace(group, &code(), rng).unwrap()
    });
    let joiner_keys = timed(&mut t.joiner, || {
        KeyPair::generate_cpace(group, &code(), rng).unwrap()
    });
    // The mediator hands each side the other's public value (not counted).
    let host_public = host_keys.public().to_vec();
    let joiner_public = joiner_keys.public().to_vec();

    let host = timed(&mut t.host, || {
        HostHandshake::new(input(host_keys, "alice", "bob", &joiner_public)).unwrap()
    });
    let (joiner, hello) = timed(&mut t.joiner, || {
        let (joiner, hello) =
            JoinerHelloSent::start(input(joiner_keys, "bob", "alice", &host_public), rng).unwrap();
        (joiner, wire::encode(&hello).unwrap())
    });
    let (host, confirm) = timed(&mut t.host, || {
        let hello: PeerHandshake = wire::decode(&hello).unwrap();
        let (host, confirm) = host.on_peer_hello(hello, rng).unwrap();
        (host, wire::encode(&confirm).unwrap())
    });
    let (joiner_session, joiner_confirm) = timed(&mut t.joiner, || {
        let confirm: PeerHandshake = wire::decode(&confirm).unwrap();
        let (session, reply) = joiner.on_host_confirm(confirm).unwrap();
        (session, wire::encode(&reply).unwrap())
    });
    let host_session = timed(&mut t.host, || {
        let reply: PeerHandshake = wire::decode(&joiner_confirm).unwrap();
        host.on_joiner_confirm(reply).unwrap()
    });
    assert_eq!(host_session.sas(), joiner_session.sas());
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.sample_size(20);
    for group in [Group::Modp3072, Group::Modp2048] {
        let id = group.id();
        g.bench_function(format!("host_side/group{id}"), |b| {
            b.iter_custom(|iters| {
                let mut t = SideTimes::default();
                for _ in 0..iters {
                    one_handshake(group, &mut t);
                }
                t.host
            })
        });
        g.bench_function(format!("joiner_side/group{id}"), |b| {
            b.iter_custom(|iters| {
                let mut t = SideTimes::default();
                for _ in 0..iters {
                    one_handshake(group, &mut t);
                }
                t.joiner
            })
        });
    }
    g.finish();
}

fn records(c: &mut Criterion) {
    let enc = Key::from_bytes([0x11; 32]);
    let mac = Key::from_bytes([0x22; 32]);
    let mut g = c.benchmark_group("record");
    for kib in [16usize, 64] {
        let len = kib * 1024;
        let plaintext = vec![0x5Au8; len];
        g.throughput(Throughput::Bytes(len as u64));

        let mut sealer = Sealer::new(&enc, &mac);
        let mut out = Vec::with_capacity(len + 64);
        g.bench_function(format!("seal/{kib}KiB"), |b| {
            b.iter(|| {
                out.clear();
                sealer
                    .seal_into(black_box(&plaintext), &mut OsRng, &mut out)
                    .unwrap();
            })
        });

        // Eight records sealed together, as the peer link seals a batch of file
        // chunks: their CBC chains run side by side.
        let mut batch = Vec::with_capacity(8 * (len + 64));
        let mut slots = Vec::with_capacity(8);
        g.throughput(Throughput::Bytes(8 * len as u64));
        g.bench_function(format!("seal_slots_x8/{kib}KiB"), |b| {
            b.iter(|| {
                batch.clear();
                slots.clear();
                for _ in 0..8 {
                    let at = batch.len();
                    batch.resize(at + wire::record::IV_LEN, 0);
                    batch.extend_from_slice(black_box(&plaintext));
                    slots.push(wire::record::slot(&mut batch, at).unwrap());
                }
                sealer.seal_slots(&mut batch, &slots, &mut OsRng).unwrap();
            })
        });
        g.throughput(Throughput::Bytes(len as u64));

        let record = Sealer::new(&enc, &mac)
            .seal(&plaintext, &mut OsRng)
            .unwrap();
        g.bench_function(format!("open/{kib}KiB"), |b| {
            b.iter_batched_ref(
                || (record.clone(), Opener::new(&enc, &mac)),
                |(record, opener)| {
                    black_box(opener.open(record).unwrap());
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// The raw primitives the record layer is built from, for comparison with
/// `openssl speed -evp aes-256-cbc` / `-evp sha256`: seal can at best run at
/// 1 / (1/aes + 1/hmac) of these.
fn primitives(c: &mut Criterion) {
    use aes::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
    use hmac::{Hmac, Mac};
    let mut g = c.benchmark_group("primitive");
    for kib in [16usize, 64] {
        let len = kib * 1024;
        g.throughput(Throughput::Bytes(len as u64));
        let mut buf = vec![0x5Au8; len];
        g.bench_function(format!("aes256cbc_encrypt/{kib}KiB"), |b| {
            b.iter(|| {
                cbc::Encryptor::<aes::Aes256Enc>::new(&[0x11; 32].into(), &[0; 16].into())
                    .encrypt_padded_mut::<NoPadding>(&mut buf, len)
                    .unwrap();
            })
        });
        g.bench_function(format!("hmac_sha256/{kib}KiB"), |b| {
            b.iter(|| {
                let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&[0x22; 32]).unwrap();
                mac.update(black_box(&buf));
                mac.finalize()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, handshake, records, primitives);
criterion_main!(benches);
