//! Known-answer encodings of the group-room messages of docs/protocol.md §19:
//! `GroupHello`, `GroupJoined`, `Member`, `MemberLeft` on the mediator link, and
//! the group `PeerMsg`s inside records. A change here is a protocol change. The
//! v3 records' hex was computed apart from this code (Python's `cryptography`
//! Ed25519 over the bytes docs/protocol.md §17 spells out).

use std::net::SocketAddr;

use dhke::Identity;
use wire::group::{Catchup, EquivocationProof, GroupBody, GroupMsg, Roster, RosterEntry, Summary};
use wire::{encode, ClientMsg, MediatorMsg, PeerMsg, RelayOffer, Role};

fn hex(msg: &impl serde::Serialize) -> String {
    hex::encode(encode(msg).unwrap())
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn mediator_link_messages() {
    let hello = ClientMsg::GroupHello {
        version: 2,
        room: [0x11; 32],
        name: "ann".into(),
        group: 14,
        public: vec![0x02, 0x03],
        listen_port: 7000,
        local_addrs: vec![addr("192.168.1.5:7000")],
        no_relay: false,
    };
    assert_eq!(hex(&hello), "0502111111111111111111111111111111111111111111111111111111111111111103616e6e0e020203fb581b0100c0a80105fb581b00");
    let joined = MediatorMsg::GroupJoined {
        member: 3,
        present: 2,
        max_members: 16,
    };
    assert_eq!(hex(&joined), "08030210");
    let member = MediatorMsg::Member {
        member: 1,
        role: Role::Joiner,
        peer_name: "ben".into(),
        public: vec![0x04],
        observed_addr: addr("203.0.113.7:40000"),
        listen_port: 7001,
        local_addrs: vec![],
        your_addr: addr("198.51.100.2:50000"),
        relay: RelayOffer::Off,
    };
    assert_eq!(
        hex(&member),
        "0901010362656e010400cb007107fb409cfb591b0000c6336402fb50c303"
    );
    assert_eq!(hex(&MediatorMsg::MemberLeft { member: 300 }), "0afb2c01");
}

#[test]
fn group_records() {
    let author = Identity::from_seed(&[0x01; 32]);
    let body = GroupBody {
        conversation: [0x77; 32],
        author: author.public().0,
        seq: 1,
        clock: vec![],
        sent_at_ms: 5,
        text: "hi".into(),
    };
    let msg = GroupMsg::sign(body, &author).unwrap();
    assert_eq!(hex(&PeerMsg::Group(msg.clone())), "0d77777777777777777777777777777777777777777777777777777777777777778a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c010005026869fcce04b4cbb0b67440ba356d64ad6c898a2574c4506b3f7ddc0b5c094ea3e181161e02f8f79e0d2d39d9c2181bfeea0ced712197c713d23b2652ee5ac6563305");
    let summary = PeerMsg::GroupSummary(Summary {
        have: vec![([0x22; 32], 7)],
    });
    assert_eq!(
        hex(&summary),
        "0e01222222222222222222222222222222222222222222222222222222222222222207"
    );
    let catchup = PeerMsg::GroupCatchup(Catchup {
        have: vec![([0x22; 32], 3)],
        floor: vec![([0x22; 32], 2)],
        msgs: vec![],
        more: false,
    });
    assert_eq!(
        hex(&catchup),
        "0f01222222222222222222222222222222222222222222222222222222222222222203012222222222222222222222222222222222222222222222222222222222222222020000"
    );
    let roster = PeerMsg::Roster(Roster {
        members: vec![RosterEntry {
            member: 2,
            identity: [0x33; 32],
            name: "cat".into(),
        }],
    });
    assert_eq!(
        hex(&roster),
        "100102333333333333333333333333333333333333333333333333333333333333333303636174"
    );
    let expelled = PeerMsg::Expelled {
        identity: [0x44; 32],
        reason: "forged".into(),
    };
    assert_eq!(
        hex(&expelled),
        "11444444444444444444444444444444444444444444444444444444444444444406666f72676564"
    );
    let version = |text: &str| {
        let body = GroupBody {
            conversation: [0x77; 32],
            author: author.public().0,
            seq: 1,
            clock: vec![],
            sent_at_ms: 5,
            text: text.into(),
        };
        GroupMsg::sign(body, &author).unwrap()
    };
    let proof = PeerMsg::Equivocation(Box::new(EquivocationProof {
        first: version("a"),
        second: version("b"),
    }));
    assert_eq!(hex(&proof), "1277777777777777777777777777777777777777777777777777777777777777778a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c0100050161f005272067b16d8691752ad736936d2bb283cdd425781c2d4ac0523b57152799d90b6c2ca7759eda61a6be5647a09e4872f768847a17453158dedfa8fb2a710077777777777777777777777777777777777777777777777777777777777777778a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c010005016241c0961c87628b86c14462382a938f34c8a5e2fec8d77f89e155f2b1b494d414c9a195c6251e4c474d1830877c3d99ffe490333bea69b5c31588de6936c4a705");
}
