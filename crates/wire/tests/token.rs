//! Known-answer vectors of docs/protocol.md §16: a token's text (without and with
//! a mediator), the room secret and tag it gives, and the bytes of the token
//! messages.

use std::net::SocketAddr;

use wire::token::Token;
use wire::{encode, PeerHandshake, PeerMsg};

fn sample() -> Token {
    Token {
        identity: dhke::Identity::from_seed(&[1; 32]).public().0,
        secret: [0x22; 16],
        expires_unix: 1_800_000_000,
        addrs: vec!["192.0.2.7:4000".parse::<SocketAddr>().unwrap()],
        mediator: None,
    }
}

#[test]
fn token_text_room_secret_and_tag() {
    let t = sample();
    assert_eq!(t.encode(), "p2pchat:2:rkeohxlubhyzl7ks3mwtzos5olfgocn7dwkbeg7toseadnapn5oceirceirceirceirceirceirceaaaaaagwsosaaaqjqaaaidq7iaa4je6d5y");
    assert_eq!(
        hex::encode(t.room_secret()),
        "a2341b7376d3206305eb1f9c8309397e9887a7d29f06afe5728c21fb9b3f9f6a"
    );
    assert_eq!(
        hex::encode(dhke::secret_room_tag(&t.room_secret()).0),
        "697c6b7565febb7226068661ea26094e6c65ef7c889f906656cca15eda7517da"
    );
}

#[test]
fn token_text_with_a_mediator() {
    let mut t = sample();
    t.mediator = Some("203.0.113.1:7070".into());
    let text = "p2pchat:2:rkeohxlubhyzl7ks3mwtzos5olfgocn7dwkbeg7toseadnapn5oceirceirceirceirceirceirceaaaaaagwsosaaaqjqaaaidq7iaqgiydglrqfyytcmzoge5dombxgckkevqi";
    assert_eq!(t.encode(), text);
    assert_eq!(Token::parse(text).unwrap(), t);
    // The mediator does not change the room: same secret, same tag.
    assert_eq!(t.room_secret(), sample().room_secret());
}

#[test]
fn a_token_of_the_version_before_the_mediator_asks_for_a_new_one() {
    let v1 = "p2pchat:1:rkeohxlubhyzl7ks3mwtzos5olfgocn7dwkbeg7toseadnapn5oceirceirceirceirceirceirceaaaaaagwsosaaaqjqaaaidq7iextpzss";
    let err = Token::parse(v1).unwrap_err();
    assert!(err.to_string().contains("ask its holder"), "{err}");
}

#[test]
fn token_messages_bytes() {
    let hello = PeerHandshake::TokenHello {
        tag: [0x11; 32],
        name: "bob".into(),
        group: 14,
        public: vec![0xAA, 0xBB],
    };
    let mut want = vec![4];
    want.extend_from_slice(&[0x11; 32]);
    want.extend_from_slice(&[3, b'b', b'o', b'b', 14, 2, 0xAA, 0xBB]);
    assert_eq!(encode(&hello).unwrap(), want);
    let welcome = PeerHandshake::TokenWelcome {
        name: "al".into(),
        public: vec![0xCC],
    };
    assert_eq!(encode(&welcome).unwrap(), [5, 2, b'a', b'l', 1, 0xCC]);
    assert_eq!(encode(&PeerMsg::Admitted).unwrap(), [11]);
    assert_eq!(
        encode(&PeerMsg::Denied {
            reason: "no".into()
        })
        .unwrap(),
        [12, 2, b'n', b'o']
    );
}
