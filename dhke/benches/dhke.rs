//! Criterion benches for the expensive parts of the key exchange: key generation,
//! public-value validation (Jacobi symbol vs the defining modpow), the shared
//! secret and the key schedule. `cargo bench -p dhke`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dhke::schedule::SessionKeys;
use dhke::{
    cpace_generator, jacobi, typed_room_tag, validate_peer_public, Group, KeyPair, PeerPublic,
    RoomCode, Transcript,
};
use num_bigint::BigUint;
use rand_core::OsRng;

const GROUPS: [Group; 2] = [Group::Modp2048, Group::Modp3072];

fn keygen(c: &mut Criterion) {
    let mut g = c.benchmark_group("keygen");
    for group in GROUPS {
        g.bench_function(format!("group{}", group.id()), |b| {
            b.iter(|| KeyPair::generate(group, &mut OsRng))
        });
    }
    g.finish();
}

fn validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    for group in GROUPS {
        let own = KeyPair::generate(group, &mut OsRng);
        let peer = KeyPair::generate(group, &mut OsRng);
        let p = BigUint::from_bytes_be(group.prime_bytes());
        let y = BigUint::from_bytes_be(peer.public());
        let id = group.id();
        g.bench_function(format!("jacobi/group{id}"), |b| {
            b.iter(|| jacobi(black_box(&y), &p))
        });
        g.bench_function(format!("modpow/group{id}"), |b| {
            b.iter(|| PeerPublic::in_subgroup_by_modpow(group, black_box(peer.public())))
        });
        g.bench_function(format!("full/group{id}"), |b| {
            b.iter(|| validate_peer_public(group, black_box(peer.public()), own.public()).unwrap())
        });
    }
    g.finish();
}

fn shared_secret(c: &mut Criterion) {
    let mut g = c.benchmark_group("shared_secret");
    for group in GROUPS {
        let own = KeyPair::generate(group, &mut OsRng);
        let peer = KeyPair::generate(group, &mut OsRng);
        let peer = validate_peer_public(group, peer.public(), own.public()).unwrap();
        g.bench_function(format!("group{}", group.id()), |b| {
            b.iter(|| own.agree(black_box(&peer)).unwrap())
        });
    }
    g.finish();
}

fn key_schedule(c: &mut Criterion) {
    let group = Group::Modp3072;
    let host = KeyPair::generate(group, &mut OsRng);
    let joiner = KeyPair::generate(group, &mut OsRng);
    let peer = validate_peer_public(group, joiner.public(), host.public()).unwrap();
    let z = host.agree(&peer).unwrap();
    let room = RoomCode::parse("7-velvet-harbor-maple-otter");
    let tag = room.tag();
    c.bench_function("key_schedule/transcript+derive", |b| {
        b.iter(|| {
            let th = Transcript {
                room_tag: &tag,
                group,
                host_name: "alice",
                host_public: host.public(),
                joiner_name: "bob",
                joiner_public: joiner.public(),
            }
            .hash();
            SessionKeys::derive(&th, &room, &z, None)
        })
    });
}

/// The PAKE's extra cost: the generator (HKDF + one squaring) and a CPace key pair,
/// next to the plain key pair above.
fn cpace(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpace");
    let code = RoomCode::parse("7-velvet-harbor-maple-otter");
    for group in GROUPS {
        let id = group.id();
        g.bench_function(format!("generator/group{id}"), |b| {
            b.iter(|| cpace_generator(group, black_box(&code)).unwrap())
        });
        g.bench_function(format!("keygen/group{id}"), |b| {
            b.iter(|| KeyPair::generate_cpace(group, black_box(&code), &mut OsRng).unwrap())
        });
    }
    g.finish();
}

/// One Argon2id tag of a typed room name (m = 19 MiB, t = 2, p = 1).
fn room_tag(c: &mut Criterion) {
    let mut g = c.benchmark_group("room_tag");
    g.sample_size(10);
    g.bench_function("argon2id", |b| {
        b.iter(|| typed_room_tag(black_box("7-velvet-harbor")))
    });
    g.finish();
}

criterion_group!(
    benches,
    keygen,
    validation,
    shared_secret,
    key_schedule,
    cpace,
    room_tag
);
criterion_main!(benches);
