//! A hand-driven peer for tests: it joins a room through the real mediator as
//! the joiner, completes the real handshake with a real client, and then sends
//! whatever `PeerMsg`s a test wants, including ones no honest client would.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use rand::rngs::OsRng;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use wire::handshake::JoinerHelloSent;
use wire::{
    ClientMsg, FrameCodec, HandshakeInput, Link, MediatorMsg, Opener, PeerHandshake, PeerMsg,
    Sealer,
};

pub struct RawPeer {
    framed: Framed<TcpStream, FrameCodec>,
    sealer: Sealer,
    opener: Opener,
}

async fn recv_frame(framed: &mut Framed<TcpStream, FrameCodec>) -> bytes::BytesMut {
    tokio::time::timeout(super::WAIT, framed.next())
        .await
        .expect("an answer in time")
        .expect("a frame")
        .expect("frame ok")
}

impl RawPeer {
    /// Joins `room` at `mediator` (a client must already be waiting there).
    pub async fn join(mediator: SocketAddr, room: &str, name: &str) -> RawPeer {
        let group = dhke::Group::Modp2048;
        let code = dhke::RoomCode::parse(room);
        let keys = dhke::KeyPair::generate_cpace(group, &code, &mut OsRng).unwrap();
        let stream = TcpStream::connect(mediator).await.expect("reach mediator");
        let mut med = Framed::new(stream, FrameCodec::new(Link::Mediator));
        let hello = ClientMsg::Hello {
            version: wire::PROTOCOL_VERSION,
            room: code.tag().0,
            name: name.into(),
            group: group.id(),
            public: keys.public().to_vec(),
            listen_port: 0,
            local_addrs: vec![],
            no_relay: false,
        };
        med.send(wire::encode(&hello).unwrap().as_slice())
            .await
            .unwrap();
        let MediatorMsg::Matched {
            peer_name,
            public,
            observed_addr,
            listen_port,
            local_addrs,
            ..
        } = wire::decode(&recv_frame(&mut med).await).expect("Matched")
        else {
            panic!("expected Matched");
        };
        let host = local_addrs
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::new(observed_addr.ip(), listen_port));
        let input = HandshakeInput {
            room: code,
            local_name: name.into(),
            local: keys,
            peer_name,
            peer_public: public,
            previous: None,
            keylog: false,
        };
        let stream = TcpStream::connect(host).await.expect("reach host");
        let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
        let (state, hello) = JoinerHelloSent::start(input, &mut OsRng).unwrap();
        framed
            .send(wire::encode(&hello).unwrap().as_slice())
            .await
            .unwrap();
        let confirm: PeerHandshake = wire::decode(&recv_frame(&mut framed).await).unwrap();
        let (session, reply) = state.on_host_confirm(confirm).expect("host confirms");
        framed
            .send(wire::encode(&reply).unwrap().as_slice())
            .await
            .unwrap();
        let (sealer, opener) = session.split();
        RawPeer {
            framed,
            sealer,
            opener,
        }
    }

    pub async fn send(&mut self, msg: &PeerMsg) {
        let plaintext = wire::encode(msg).unwrap();
        let record = self.sealer.seal(&plaintext, &mut OsRng).unwrap();
        self.framed.send(record.as_slice()).await.unwrap();
    }

    /// The next message from the client, skipping pings and acks.
    pub async fn recv(&mut self) -> PeerMsg {
        loop {
            let mut frame = recv_frame(&mut self.framed).await;
            let plaintext = self.opener.open(&mut frame).expect("record opens");
            let msg: PeerMsg = wire::decode(plaintext).unwrap();
            match msg {
                PeerMsg::Ping { nonce } => self.send(&PeerMsg::Pong { nonce }).await,
                PeerMsg::Pong { .. } | PeerMsg::Ack { .. } => {}
                other => return other,
            }
        }
    }
}

/// What a grinding man in the middle saw at the host.
#[derive(Debug, Default)]
pub struct Grind {
    /// `HostConfirm`s received: each reveals a host nonce.
    pub confirms: usize,
    /// How the other attempts ended.
    pub other: Vec<String>,
}

/// A man in the middle that knows the room name: joins `room` as the joiner
/// (so its public value is the one the host expects), then opens `attempts`
/// connections to the host, sends a valid `PeerHello` on each, reads the
/// answer and drops the connection, hoping for a host nonce that gives a SAS
/// it likes (docs/protocol.md §12.4).
pub async fn grind(mediator: SocketAddr, room: &str, name: &str, attempts: usize) -> Grind {
    let group = dhke::Group::Modp2048;
    let code = dhke::RoomCode::parse(room);
    let keys = dhke::KeyPair::generate_cpace(group, &code, &mut OsRng).unwrap();
    let stream = TcpStream::connect(mediator).await.expect("reach mediator");
    let mut med = Framed::new(stream, FrameCodec::new(Link::Mediator));
    let hello = ClientMsg::Hello {
        version: wire::PROTOCOL_VERSION,
        room: code.tag().0,
        name: name.into(),
        group: group.id(),
        public: keys.public().to_vec(),
        listen_port: 0,
        local_addrs: vec![],
        no_relay: true,
    };
    med.send(wire::encode(&hello).unwrap().as_slice())
        .await
        .unwrap();
    let MediatorMsg::Matched {
        peer_name,
        public,
        observed_addr,
        listen_port,
        local_addrs,
        ..
    } = wire::decode(&recv_frame(&mut med).await).expect("Matched")
    else {
        panic!("expected Matched");
    };
    let host = local_addrs
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::new(observed_addr.ip(), listen_port));
    let input = HandshakeInput {
        room: code,
        local_name: name.into(),
        local: keys,
        peer_name,
        peer_public: public,
        previous: None,
        keylog: false,
    };
    let handshake = wire::handshake::JoinerHandshake::new(input).expect("handshake");
    let mut seen = Grind::default();
    for _ in 0..attempts {
        let Ok(stream) = TcpStream::connect(host).await else {
            seen.other.push("host gone".into());
            break;
        };
        let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
        let (_state, hello) = handshake.hello(&mut OsRng);
        if framed
            .send(wire::encode(&hello).unwrap().as_slice())
            .await
            .is_err()
        {
            seen.other.push("send failed".into());
            continue;
        }
        match tokio::time::timeout(super::WAIT, framed.next()).await {
            Ok(Some(Ok(frame))) => match wire::decode::<PeerHandshake>(&frame) {
                Ok(PeerHandshake::HostConfirm { .. }) => seen.confirms += 1,
                other => seen.other.push(format!("{other:?}")),
            },
            other => seen.other.push(format!("closed: {other:?}")),
        }
        // Drop the connection after the reveal, as the grinder would.
    }
    seen
}
