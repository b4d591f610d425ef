//! Known-answer encodings of the group-room messages of docs/protocol.md §19:
//! `GroupHello`, `GroupJoined`, `Member`, `MemberLeft` on the mediator link, and
//! the group `PeerMsg`s inside records. A change here is a protocol change.

use std::net::SocketAddr;

use dhke::Identity;
use wire::group::{Catchup, GroupBody, GroupMsg, Roster, RosterEntry, Summary};
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
        room: [0x77; 32],
        author: author.public().0,
        seq: 1,
        clock: vec![],
        sent_at_ms: 5,
        text: "hi".into(),
    };
    let msg = GroupMsg::sign(body, &author).unwrap();
    assert_eq!(hex(&PeerMsg::Group(msg.clone())), "0d77777777777777777777777777777777777777777777777777777777777777778a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c010005026869c2747507b0ffa8bc24b21577fbaf3e80091a3632680cc8e02926a49a72ad6a97014232ee595a232c555506b9365cc66fab19118c9df0bed7e637b972a8068704");
    let summary = PeerMsg::GroupSummary(Summary {
        have: vec![([0x22; 32], 7)],
    });
    assert_eq!(
        hex(&summary),
        "0e01222222222222222222222222222222222222222222222222222222222222222207"
    );
    let catchup = PeerMsg::GroupCatchup(Catchup {
        floor: vec![([0x22; 32], 2)],
        msgs: vec![],
    });
    assert_eq!(
        hex(&catchup),
        "0f0122222222222222222222222222222222222222222222222222222222222222220200"
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
}
