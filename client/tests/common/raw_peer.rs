//! A hand-driven peer for tests: it meets a real client through the real
//! mediator, as the joiner ([`MatchedJoiner`]) or as the host ([`WaitingHost`]),
//! and then either completes the real handshake ([`RawPeer`]) and sends whatever
//! records a test wants, or misbehaves on the raw TCP stream at any step.
//!
//! Only [`meet_as_joiner`] and [`WaitingHost::start`] speak to the mediator; the
//! rest is the peer link (docs/protocol.md §1, §6, §7), which does not depend on
//! how the two clients found each other.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use rand::rngs::OsRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use wire::handshake::{HostHandshake, JoinerHandshake};
use wire::{
    ClientMsg, FrameCodec, HandshakeInput, Link, MediatorMsg, Opener, PeerHandshake, PeerMsg,
    Sealer,
};

/// A framed peer-link stream.
pub type PeerFramed = Framed<TcpStream, FrameCodec>;
/// A framed mediator-link stream.
pub type MediatorFramed = Framed<TcpStream, FrameCodec>;

/// The DH group every test uses (fast, and what `client_args` passes).
const GROUP: dhke::Group = dhke::Group::Modp2048;

async fn recv_frame(framed: &mut Framed<TcpStream, FrameCodec>) -> BytesMut {
    tokio::time::timeout(super::WAIT, framed.next())
        .await
        .expect("an answer in time")
        .expect("a frame")
        .expect("frame ok")
}

/// Sends one message as one frame.
pub async fn send_msg<T: serde::Serialize>(framed: &mut Framed<TcpStream, FrameCodec>, msg: &T) {
    framed
        .send(wire::encode(msg).expect("encode").as_slice())
        .await
        .expect("send a frame");
}

/// Receives one frame and decodes it as `T`.
pub async fn recv_msg<T: serde::de::DeserializeOwned>(
    framed: &mut Framed<TcpStream, FrameCodec>,
) -> T {
    wire::decode(&recv_frame(framed).await).expect("decodes")
}

/// The frame around `payload` (header included), as raw bytes.
pub fn frame_bytes(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Waits until the other end closes `stream` (EOF or reset), discarding
/// whatever it sends first; panics if that takes longer than `limit`.
pub async fn expect_closed(stream: &mut TcpStream, limit: Duration) {
    let mut sink = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection stayed open for {limit:?}");
}

fn hello(
    room: &str,
    name: &str,
    keys: &dhke::KeyPair,
    listen: Option<SocketAddr>,
    no_relay: bool,
) -> ClientMsg {
    ClientMsg::Hello {
        version: wire::PROTOCOL_VERSION,
        room: dhke::RoomCode::parse(room).tag().0,
        name: name.into(),
        group: GROUP.id(),
        public: keys.public().to_vec(),
        listen_port: listen.map_or(0, |a| a.port()),
        local_addrs: listen.into_iter().collect(),
        no_relay,
    }
}

/// Reads mediator messages until `Matched`, skipping anything else (`Waiting`,
/// `Pong`, and whatever a later protocol version adds).
async fn until_matched(med: &mut MediatorFramed) -> MediatorMsg {
    loop {
        let msg: MediatorMsg = recv_msg(med).await;
        if let MediatorMsg::Matched { .. } = msg {
            return msg;
        }
        if let MediatorMsg::Error { code, message } = msg {
            panic!("mediator refused the raw peer: {code:?} {message}");
        }
    }
}

/// A raw joiner the mediator has matched with a waiting real client (the host).
pub struct MatchedJoiner {
    /// Where the host listens.
    pub host: SocketAddr,
    /// Agreed with the host's announced value: gives a fresh `PeerHello` per try.
    pub handshake: JoinerHandshake,
    /// The room's conversation id (§17.1), for the raw peer's log messages.
    pub conversation: [u8; 32],
    /// Held open: the mediator may still talk to us after `Matched` (`None`:
    /// one group link of several, whose mediator link the group holds).
    _mediator: Option<MediatorFramed>,
}

/// Joins `room` at `mediator` as the joiner (a client must be waiting there).
pub async fn meet_as_joiner(mediator: SocketAddr, room: &str, name: &str) -> MatchedJoiner {
    meet_as_joiner_relay(mediator, room, name, true).await
}

/// [`meet_as_joiner`], saying in `Hello` whether we refuse the relay: a grinder
/// that accepts it keeps the host's round alive until its connect timeout
/// (a refusal ends the round, and the run, with `no_path`).
pub async fn meet_as_joiner_relay(
    mediator: SocketAddr,
    room: &str,
    name: &str,
    no_relay: bool,
) -> MatchedJoiner {
    let keys = dhke::KeyPair::generate_cpace(GROUP, &dhke::RoomCode::parse(room), &mut OsRng)
        .expect("CPace key pair");
    let stream = TcpStream::connect(mediator).await.expect("reach mediator");
    let mut med = Framed::new(stream, FrameCodec::new(Link::Mediator));
    send_msg(&mut med, &hello(room, name, &keys, None, no_relay)).await;
    let MediatorMsg::Matched {
        peer_name,
        public,
        observed_addr,
        listen_port,
        local_addrs,
        ..
    } = until_matched(&mut med).await
    else {
        unreachable!()
    };
    let host = local_addrs
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::new(observed_addr.ip(), listen_port));
    let input = HandshakeInput {
        room: dhke::RoomCode::parse(room),
        local_name: name.into(),
        local: keys,
        peer_name,
        peer_public: public,
        previous: None,
        keylog: false,
        // A man in the middle has no one's identity but its own.
        identity: dhke::Identity::from_seed(&[0x4d; 32]),
        expect_peer: None,
    };
    MatchedJoiner {
        host,
        handshake: JoinerHandshake::new(input).expect("host's public value"),
        conversation: dhke::RoomCode::parse(room).conversation(),
        _mediator: Some(med),
    }
}

/// A raw member of a group room (§19), linked with nobody yet: one joiner
/// handshake per member that was present when it joined.
pub struct GroupJoiner {
    /// (member number, name, the handshake toward it).
    pub members: Vec<(u32, String, MatchedJoiner)>,
    /// Who we claim to be on every link.
    pub identity: dhke::Identity,
    pub mediator: MediatorFramed,
}

/// Joins group room `room` at `mediator` as `name` with `identity`.
pub async fn join_group(
    mediator: SocketAddr,
    room: &str,
    name: &str,
    identity: dhke::Identity,
) -> GroupJoiner {
    let keys = dhke::KeyPair::generate_cpace(GROUP, &dhke::RoomCode::parse(room), &mut OsRng)
        .expect("CPace key pair");
    let stream = TcpStream::connect(mediator).await.expect("reach mediator");
    let mut med = Framed::new(stream, FrameCodec::new(Link::Mediator));
    let ClientMsg::Hello {
        version,
        room: tag,
        name: n,
        group,
        public,
        listen_port,
        local_addrs,
        no_relay,
    } = hello(room, name, &keys, None, true)
    else {
        unreachable!()
    };
    let group_hello = ClientMsg::GroupHello {
        version,
        room: tag,
        name: n,
        group,
        public,
        listen_port,
        local_addrs,
        no_relay,
    };
    send_msg(&mut med, &group_hello).await;
    let present = loop {
        match recv_msg::<MediatorMsg>(&mut med).await {
            MediatorMsg::GroupJoined { present, .. } => break present,
            MediatorMsg::Error { code, message } => panic!("refused: {code:?} {message}"),
            _ => {}
        }
    };
    let mut members = Vec::new();
    while members.len() < present as usize {
        if let MediatorMsg::Member {
            member,
            peer_name,
            public,
            observed_addr,
            listen_port,
            local_addrs,
            ..
        } = recv_msg::<MediatorMsg>(&mut med).await
        {
            let host = local_addrs
                .first()
                .copied()
                .unwrap_or_else(|| SocketAddr::new(observed_addr.ip(), listen_port));
            let input = HandshakeInput {
                room: dhke::RoomCode::parse(room),
                local_name: name.into(),
                local: keys.clone(),
                peer_name: peer_name.clone(),
                peer_public: public,
                previous: None,
                keylog: false,
                identity: identity.clone(),
                expect_peer: None,
            };
            let joiner = MatchedJoiner {
                host,
                handshake: JoinerHandshake::new(input).expect("member's public value"),
                conversation: dhke::RoomCode::parse(room).conversation(),
                _mediator: None,
            };
            members.push((member, peer_name, joiner));
        }
    }
    GroupJoiner {
        members,
        identity,
        mediator: med,
    }
}

impl MatchedJoiner {
    /// A fresh TCP connection to the host, nothing sent yet.
    pub async fn dial(&self) -> TcpStream {
        let stream = TcpStream::connect(self.host).await.expect("reach host");
        let _ = stream.set_nodelay(true);
        stream
    }

    /// A fresh framed connection to the host.
    pub async fn dial_framed(&self) -> PeerFramed {
        Framed::new(self.dial().await, FrameCodec::new(Link::Peer))
    }

    /// Runs the honest handshake on a fresh connection.
    pub async fn handshake(&self) -> RawPeer {
        self.try_handshake()
            .await
            .expect("the host completes the handshake")
    }

    /// [`MatchedJoiner::handshake`], or why the host turned this attempt away
    /// (a real joiner would try again).
    pub async fn try_handshake(&self) -> Result<RawPeer, String> {
        let stream = TcpStream::connect(self.host)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
        let (state, hello) = self.handshake.hello(&mut OsRng);
        let payload = wire::encode(&hello).map_err(|e| e.to_string())?;
        framed
            .send(payload.as_slice())
            .await
            .map_err(|e| e.to_string())?;
        let frame = match tokio::time::timeout(super::WAIT, framed.next()).await {
            Ok(Some(Ok(frame))) => frame,
            other => return Err(format!("no HostConfirm: {other:?}")),
        };
        let confirm: PeerHandshake = wire::decode(&frame).map_err(|e| e.to_string())?;
        let (session, reply) = state.on_host_confirm(confirm).map_err(|e| e.to_string())?;
        send_msg(&mut framed, &reply).await;
        Ok(RawPeer::new(framed, session, self.conversation))
    }
}

/// A raw host waiting at the mediator, with its listener on loopback.
pub struct WaitingHost {
    listener: TcpListener,
    mediator: MediatorFramed,
    keys: dhke::KeyPair,
    room: String,
    name: String,
}

/// A raw host the mediator has matched with a real client (the joiner).
pub struct MatchedHost {
    /// Where the joiner will connect.
    pub listener: TcpListener,
    /// Judges any number of `PeerHello`s (the state is not consumed).
    pub handshake: HostHandshake,
    /// The room's conversation id (§17.1), for the raw peer's log messages.
    pub conversation: [u8; 32],
    _mediator: MediatorFramed,
}

impl WaitingHost {
    /// Opens `room` at `mediator` and returns once the mediator says `Waiting`,
    /// so a client started now becomes the joiner.
    pub async fn start(mediator: SocketAddr, room: &str, name: &str) -> WaitingHost {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw host");
        let listen = listener.local_addr().expect("listener address");
        let keys = dhke::KeyPair::generate_cpace(GROUP, &dhke::RoomCode::parse(room), &mut OsRng)
            .expect("CPace key pair");
        let stream = TcpStream::connect(mediator).await.expect("reach mediator");
        let mut med = Framed::new(stream, FrameCodec::new(Link::Mediator));
        send_msg(&mut med, &hello(room, name, &keys, Some(listen), true)).await;
        match recv_msg::<MediatorMsg>(&mut med).await {
            MediatorMsg::Waiting { .. } => {}
            other => panic!("expected Waiting, got {other:?}"),
        }
        WaitingHost {
            listener,
            mediator: med,
            keys,
            room: room.into(),
            name: name.into(),
        }
    }

    /// Waits for the joiner's match.
    pub async fn matched(mut self) -> MatchedHost {
        let MediatorMsg::Matched {
            peer_name, public, ..
        } = until_matched(&mut self.mediator).await
        else {
            unreachable!()
        };
        let input = HandshakeInput {
            room: dhke::RoomCode::parse(&self.room),
            local_name: self.name,
            local: self.keys,
            peer_name,
            peer_public: public,
            previous: None,
            keylog: false,
            // A man in the middle has no one's identity but its own.
            identity: dhke::Identity::from_seed(&[0x4d; 32]),
            expect_peer: None,
        };
        MatchedHost {
            listener: self.listener,
            handshake: HostHandshake::new(input).expect("joiner's public value"),
            conversation: dhke::RoomCode::parse(&self.room).conversation(),
            _mediator: self.mediator,
        }
    }
}

impl MatchedHost {
    /// The joiner's next connection, nothing read yet.
    pub async fn accept(&self) -> TcpStream {
        let (stream, _) = tokio::time::timeout(super::WAIT, self.listener.accept())
            .await
            .expect("the joiner connects in time")
            .expect("accept");
        let _ = stream.set_nodelay(true);
        stream
    }

    /// The joiner's next connection, framed.
    pub async fn accept_framed(&self) -> PeerFramed {
        Framed::new(self.accept().await, FrameCodec::new(Link::Peer))
    }

    /// Runs the honest handshake on the joiner's next connection.
    pub async fn handshake(&self) -> RawPeer {
        let mut framed = self.accept_framed().await;
        let hello: PeerHandshake = recv_msg(&mut framed).await;
        let (state, confirm) = self
            .handshake
            .on_peer_hello(hello, &mut OsRng)
            .expect("joiner's hello");
        send_msg(&mut framed, &confirm).await;
        let reply: PeerHandshake = recv_msg(&mut framed).await;
        let session = state.on_joiner_confirm(reply).expect("joiner confirms");
        RawPeer::new(framed, session, self.conversation)
    }
}

/// A peer past the handshake, holding both record directions.
pub struct RawPeer {
    pub framed: PeerFramed,
    pub sealer: Sealer,
    pub opener: Opener,
    /// The raw peer's copy of the conversation's log (two-party chats are log
    /// messages in v3, docs/protocol.md §7.1), signed with its identity.
    pub log: wire::group::GroupLog,
}

/// The identity every raw peer proves (a man in the middle has its own).
pub fn raw_identity() -> dhke::Identity {
    dhke::Identity::from_seed(&[0x4d; 32])
}

/// A chat message as a raw peer with a fresh log sends it: its message 1 of
/// the conversation of room code `room` (§7.1).
pub fn first_chat(room: &str, text: &str) -> PeerMsg {
    let id = raw_identity();
    let mut log =
        wire::group::GroupLog::new(dhke::RoomCode::parse(room).conversation(), id.public().0);
    PeerMsg::Group(log.write(&id, text.into(), 0).expect("sign"))
}

impl RawPeer {
    /// Joins `room` at `mediator` as the joiner and completes the handshake (a
    /// client must already be waiting there).
    pub async fn join(mediator: SocketAddr, room: &str, name: &str) -> RawPeer {
        meet_as_joiner(mediator, room, name).await.handshake().await
    }

    fn new(framed: PeerFramed, session: wire::Session, conversation: [u8; 32]) -> RawPeer {
        let (sealer, opener) = session.split();
        RawPeer {
            framed,
            sealer,
            opener,
            log: wire::group::GroupLog::new(conversation, raw_identity().public().0),
        }
    }

    /// Our next chat message: a log message of the conversation, signed.
    pub fn chat(&mut self, text: &str) -> PeerMsg {
        PeerMsg::Group(
            self.log
                .write(&raw_identity(), text.into(), 0)
                .expect("sign"),
        )
    }

    /// A receipt (§7.1): we hold `author`'s messages up to `seq`.
    pub fn receipt(author: [u8; 32], seq: u64) -> PeerMsg {
        PeerMsg::GroupCatchup(wire::group::Catchup {
            have: vec![(author, seq)],
            ..Default::default()
        })
    }

    /// Seals `msg` as the next record without sending it (to replay, reorder or
    /// tamper with it).
    pub fn seal(&mut self, msg: &PeerMsg) -> Vec<u8> {
        let plaintext = wire::encode(msg).unwrap();
        self.sealer.seal(&plaintext, &mut OsRng).unwrap()
    }

    /// Sends a record (sealed earlier, or any bytes) as one frame.
    pub async fn send_record(&mut self, record: &[u8]) {
        self.framed.send(record).await.expect("send a record");
    }

    /// Writes raw bytes on the stream, bypassing the frame codec.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.framed.get_mut();
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
    }

    pub async fn send(&mut self, msg: &PeerMsg) {
        let record = self.seal(msg);
        self.send_record(&record).await;
    }

    /// Queues a message without flushing (for floods; `flush` sends them).
    pub async fn feed(&mut self, msg: &PeerMsg) {
        let record = self.seal(msg);
        self.framed
            .feed(record.as_slice())
            .await
            .expect("queue a record");
    }

    pub async fn flush(&mut self) {
        SinkExt::<&[u8]>::flush(&mut self.framed)
            .await
            .expect("flush records");
    }

    /// The next record from the client as it came (not opened), and what it says.
    pub async fn recv_record(&mut self) -> (Vec<u8>, PeerMsg) {
        let frame = recv_frame(&mut self.framed).await;
        let raw = frame.to_vec();
        let mut copy = frame;
        let plaintext = self.opener.open(&mut copy).expect("record opens");
        (raw, wire::decode(plaintext).unwrap())
    }

    /// The next message from the client, whatever it is.
    pub async fn recv_any(&mut self) -> PeerMsg {
        self.recv_record().await.1
    }

    /// The next message from the client, answering pings and skipping pongs,
    /// summaries and receipts (a catch-up without messages).
    pub async fn recv(&mut self) -> PeerMsg {
        loop {
            match self.recv_any().await {
                PeerMsg::Ping { nonce } => self.send(&PeerMsg::Pong { nonce }).await,
                PeerMsg::Pong { .. } | PeerMsg::GroupSummary(_) => {}
                PeerMsg::GroupCatchup(c) if c.msgs.is_empty() => {}
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
    grind_with(meet_as_joiner(mediator, room, name).await, attempts).await
}

/// [`grind`] from a joiner already matched.
pub async fn grind_with(joiner: MatchedJoiner, attempts: usize) -> Grind {
    let (host, handshake) = (joiner.host, &joiner.handshake);
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
