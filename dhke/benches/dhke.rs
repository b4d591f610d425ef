//! Criterion benches for the expensive parts of the key exchange: key generation,
//! public-value validation (Jacobi symbol vs the defining modpow), the shared
//! secret and the key schedule. `cargo bench -p dhke`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dhke::schedule::{RoomName, SessionKeys};
use dhke::{jacobi, validate_peer_public, Group, KeyPair, PeerPublic, Transcript};
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
    let room = RoomName::new("7-velvet-harbor");
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

criterion_group!(benches, keygen, validation, shared_secret, key_schedule);
criterion_main!(benches);
