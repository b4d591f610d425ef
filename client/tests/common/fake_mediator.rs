//! A lying mediator for tests: it speaks the real rendezvous protocol but either
//! pairs two clients whatever their rooms, or puts itself in the middle with its
//! own Diffie-Hellman values on both legs; and a broken one ([`Broken`]) that
//! answers a `Hello` with bytes of the test's choosing, or not at all.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use rand::rngs::OsRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::codec::Framed;
use wire::handshake::{HostHandshake, JoinerHelloSent};
use wire::{
    ClientMsg, FrameCodec, HandshakeInput, Link, MediatorMsg, PeerHandshake, RelayOffer, Role,
};

/// How the fake mediator lies.
#[derive(Debug, Clone)]
pub enum Lie {
    /// Match the first two clients even if their room tags differ.
    PairAnyRooms,
    /// Substitute its own public values both ways and run each leg's handshake
    /// honestly, knowing the room name (the strongest position a mediator can have).
    ManInTheMiddle { room: String },
    /// Pair the first meeting honestly, then sit in the middle of the next one
    /// (after the clients lost their link and came back to reconnect).
    MitmAtReconnect { room: String },
    /// Pair honestly but announce addresses where nobody listens, and offer a
    /// relay at a dead address (`relay: true`) or say the relay is off.
    DeadEnds { dead: SocketAddr, relay: bool },
}

/// The SAS values the man in the middle ended up with on each leg.
#[derive(Debug, Clone)]
pub struct MitmResult {
    pub with_host: String,
    pub with_joiner: String,
}

struct Arrival {
    framed: Framed<TcpStream, FrameCodec>,
    observed: SocketAddr,
    name: String,
    group: u8,
    public: Vec<u8>,
    listen_port: u16,
    local_addrs: Vec<SocketAddr>,
}

pub struct FakeMediator {
    pub addr: SocketAddr,
    pub mitm: Option<oneshot::Receiver<MitmResult>>,
}

impl FakeMediator {
    pub async fn start(lie: Lie) -> FakeMediator {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake mediator");
        let addr = listener.local_addr().expect("address");
        let (tx, rx) = oneshot::channel();
        let mitm = matches!(
            lie,
            Lie::ManInTheMiddle { .. } | Lie::MitmAtReconnect { .. }
        )
        .then_some(rx);
        tokio::spawn(async move {
            let host = arrive(&listener, true).await;
            let joiner = arrive(&listener, false).await;
            match lie {
                Lie::PairAnyRooms => pair_honestly(host, joiner).await,
                Lie::DeadEnds { dead, relay } => {
                    pair_at_dead_ends(host, joiner, dead, relay).await;
                    std::future::pending::<()>().await;
                }
                Lie::ManInTheMiddle { room } => {
                    let result = man_in_the_middle(host, joiner, room).await;
                    let _ = tx.send(result);
                    // Keep the legs open for the rest of the test.
                    std::future::pending::<()>().await;
                }
                Lie::MitmAtReconnect { room } => {
                    pair_honestly(host, joiner).await;
                    let host = arrive(&listener, true).await;
                    let joiner = arrive(&listener, false).await;
                    let result = man_in_the_middle(host, joiner, room).await;
                    let _ = tx.send(result);
                    // Keep the legs open for the rest of the test.
                    std::future::pending::<()>().await;
                }
            }
        });
        FakeMediator { addr, mitm }
    }
}

/// What a mediator with an empty mailbox that takes nothing answers on a
/// messenger's side connections (presence, §21; the mailbox, §22); `None`:
/// nothing (never rung, nothing else understood).
fn side_answer(request: &ClientMsg) -> Option<MediatorMsg> {
    Some(match request {
        ClientMsg::Presence { tags } => MediatorMsg::Present {
            tags: u32::try_from(tags.len()).unwrap_or(u32::MAX),
        },
        ClientMsg::Ping => MediatorMsg::Pong,
        ClientMsg::MailboxOpen { .. } => MediatorMsg::MailboxOpened { items: 0 },
        ClientMsg::MailboxFetch { .. } => MediatorMsg::MailboxItems {
            items: Vec::new(),
            more: false,
        },
        ClientMsg::MailboxRemove { .. } => MediatorMsg::MailboxRemoved { removed: 0 },
        ClientMsg::MailboxAdd { .. } => MediatorMsg::Error {
            code: wire::ErrorCode::MailboxFull,
            message: "this test mediator keeps no mail".into(),
        },
        _ => return None,
    })
}

/// A connection a messenger opens beside its room's (presence, mailbox) is
/// answered by [`side_answer`] until the client closes it, and `None` comes
/// back; any other comes back with its first message.
pub fn side_connection(
    mut framed: Framed<TcpStream, FrameCodec>,
    first: ClientMsg,
) -> Option<(Framed<TcpStream, FrameCodec>, ClientMsg)> {
    if !matches!(
        first,
        ClientMsg::Presence { .. }
            | ClientMsg::MailboxOpen { .. }
            | ClientMsg::MailboxAdd { .. }
            | ClientMsg::MailboxFetch { .. }
            | ClientMsg::MailboxRemove { .. }
    ) {
        return Some((framed, first));
    }
    tokio::spawn(async move {
        let mut request = Some(first);
        loop {
            if let Some(answer) = request.as_ref().and_then(side_answer) {
                let payload = wire::encode(&answer).expect("encode");
                if framed.send(payload.as_slice()).await.is_err() {
                    return;
                }
            }
            request = match framed.next().await {
                Some(Ok(frame)) => wire::decode(&frame).ok(),
                _ => return,
            };
        }
    });
    None
}

async fn arrive(listener: &TcpListener, first: bool) -> Arrival {
    let (mut framed, observed, frame) = loop {
        let (stream, observed) = listener.accept().await.expect("accept client");
        let mut framed = Framed::new(stream, FrameCodec::new(Link::Mediator));
        let frame = framed.next().await.expect("a frame").expect("frame ok");
        let first: ClientMsg = wire::decode(&frame).expect("a client message");
        if let Some((framed, first)) = side_connection(framed, first) {
            break (framed, observed, first);
        }
    };
    let ClientMsg::Hello {
        name,
        group,
        public,
        listen_port,
        local_addrs,
        ..
    } = frame
    else {
        panic!("expected Hello");
    };
    if first {
        send(
            &mut framed,
            &MediatorMsg::Waiting {
                expires_in_secs: 600,
            },
        )
        .await;
    }
    Arrival {
        framed,
        observed,
        name,
        group,
        public,
        listen_port,
        local_addrs,
    }
}

async fn send<T: serde::Serialize>(framed: &mut Framed<TcpStream, FrameCodec>, msg: &T) {
    let payload = wire::encode(msg).expect("encode");
    framed.send(payload.as_slice()).await.expect("send");
}

async fn pair_honestly(mut host: Arrival, mut joiner: Arrival) {
    let to_host = MediatorMsg::Matched {
        role: Role::Host,
        peer_name: joiner.name.clone(),
        public: joiner.public.clone(),
        observed_addr: joiner.observed,
        listen_port: joiner.listen_port,
        local_addrs: joiner.local_addrs.clone(),
        your_addr: host.observed,
        relay: RelayOffer::Off,
    };
    let to_joiner = MediatorMsg::Matched {
        role: Role::Joiner,
        peer_name: host.name.clone(),
        public: host.public.clone(),
        observed_addr: host.observed,
        listen_port: host.listen_port,
        local_addrs: host.local_addrs.clone(),
        your_addr: joiner.observed,
        relay: RelayOffer::Off,
    };
    send(&mut host.framed, &to_host).await;
    send(&mut joiner.framed, &to_joiner).await;
    send(&mut host.framed, &MediatorMsg::PunchNow).await;
    send(&mut joiner.framed, &MediatorMsg::PunchNow).await;
}

async fn pair_at_dead_ends(mut host: Arrival, mut joiner: Arrival, dead: SocketAddr, relay: bool) {
    let relay = if relay {
        RelayOffer::Offered {
            token: [0; 32],
            server: dead.to_string(),
        }
    } else {
        RelayOffer::Off
    };
    let told = |role: Role, other: &Arrival, me: &Arrival| MediatorMsg::Matched {
        role,
        peer_name: other.name.clone(),
        public: other.public.clone(),
        observed_addr: dead,
        listen_port: dead.port(),
        local_addrs: vec![dead],
        your_addr: me.observed,
        relay: relay.clone(),
    };
    let to_host = told(Role::Host, &joiner, &host);
    let to_joiner = told(Role::Joiner, &host, &joiner);
    for (arrival, msg) in [(&mut host, to_host), (&mut joiner, to_joiner)] {
        send(&mut arrival.framed, &msg).await;
        send(&mut arrival.framed, &MediatorMsg::PunchNow).await;
    }
    // Hold both links like a real mediator does.
    tokio::spawn(async move {
        let _keep = (host, joiner);
        std::future::pending::<()>().await;
    });
}

async fn man_in_the_middle(mut host: Arrival, mut joiner: Arrival, room: String) -> MitmResult {
    let group = dhke::Group::from_id(host.group).expect("group");
    // This mediator knows the room code (the attack the SAS is for): it runs CPace
    // with it on both legs.
    let code = dhke::RoomCode::parse(&room);
    let toward_host = dhke::KeyPair::generate_cpace(group, &code, &mut OsRng).unwrap();
    let toward_joiner = dhke::KeyPair::generate_cpace(group, &code, &mut OsRng).unwrap();
    let trap = TcpListener::bind("127.0.0.1:0").await.expect("bind trap");
    let trap_addr = trap.local_addr().expect("trap address");

    send(
        &mut host.framed,
        &MediatorMsg::Matched {
            role: Role::Host,
            peer_name: joiner.name.clone(),
            public: toward_host.public().to_vec(),
            observed_addr: "127.0.0.1:9".parse().unwrap(),
            listen_port: 0,
            local_addrs: vec![],
            your_addr: host.observed,
            relay: RelayOffer::Off,
        },
    )
    .await;
    send(&mut host.framed, &MediatorMsg::PunchNow).await;
    send(
        &mut joiner.framed,
        &MediatorMsg::Matched {
            role: Role::Joiner,
            peer_name: host.name.clone(),
            public: toward_joiner.public().to_vec(),
            observed_addr: trap_addr,
            listen_port: trap_addr.port(),
            local_addrs: vec![trap_addr],
            your_addr: joiner.observed,
            relay: RelayOffer::Off,
        },
    )
    .await;
    send(&mut joiner.framed, &MediatorMsg::PunchNow).await;

    // Leg 1: we play the host toward the real joiner.
    let joiner_leg = {
        let input = HandshakeInput {
            room: code.clone(),
            local_name: host.name.clone(),
            local: toward_joiner,
            peer_name: joiner.name.clone(),
            peer_public: joiner.public.clone(),
            previous: None,
            keylog: false,
            // A man in the middle has no one's identity but its own.
            identity: dhke::Identity::from_seed(&[0x4d; 32]),
            expect_peer: None,
        };
        tokio::spawn(async move {
            let hs = HostHandshake::new(input).expect("host handshake");
            let (stream, _) = trap.accept().await.expect("joiner reaches the trap");
            let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
            let hello: PeerHandshake = recv(&mut framed).await;
            let (state, confirm) = hs.on_peer_hello(hello, &mut OsRng).expect("joiner's hello");
            send(&mut framed, &confirm).await;
            let reply: PeerHandshake = recv(&mut framed).await;
            let session = state.on_joiner_confirm(reply).expect("joiner's confirm");
            (session.sas().to_string(), framed)
        })
    };
    // Leg 2: we play the joiner toward the real host.
    let host_addr = host
        .local_addrs
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::new(host.observed.ip(), host.listen_port));
    let input = HandshakeInput {
        room: code,
        local_name: joiner.name.clone(),
        local: toward_host,
        peer_name: host.name.clone(),
        peer_public: host.public.clone(),
        previous: None,
        keylog: false,
        // A man in the middle has no one's identity but its own.
        identity: dhke::Identity::from_seed(&[0x4d; 32]),
        expect_peer: None,
    };
    let stream = TcpStream::connect(host_addr).await.expect("reach the host");
    let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
    let (state, hello) = JoinerHelloSent::start(input, &mut OsRng).expect("joiner handshake");
    send(&mut framed, &hello).await;
    let confirm: PeerHandshake = recv(&mut framed).await;
    let (session, reply) = state.on_host_confirm(confirm).expect("host's confirm");
    send(&mut framed, &reply).await;
    let with_host = session.sas().to_string();
    let (with_joiner, joiner_framed) = joiner_leg.await.expect("joiner leg");
    // Hold both connections open so the clients stay in their sessions.
    tokio::spawn(async move {
        let _keep = (framed, joiner_framed, host, joiner);
        std::future::pending::<()>().await;
    });
    MitmResult {
        with_host,
        with_joiner,
    }
}

async fn recv<T: serde::de::DeserializeOwned>(framed: &mut Framed<TcpStream, FrameCodec>) -> T {
    let frame = tokio::time::timeout(super::WAIT, framed.next())
        .await
        .expect("peer answers in time")
        .expect("a frame")
        .expect("frame ok");
    wire::decode(&frame).expect("decodes")
}

/// What a broken mediator does after reading one client's `Hello` frame.
#[derive(Debug, Clone)]
pub enum Broken {
    /// Writes these bytes (frames or garbage) and keeps the connection open.
    Answer(Vec<u8>),
    /// Writes these bytes, then closes.
    AnswerAndClose(Vec<u8>),
    /// Reads and never writes.
    Stall,
}

/// Serves one client with `behaviour` on 127.0.0.1 and returns the address.
pub async fn broken(behaviour: Broken) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind broken mediator");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        // A messenger's presence and mailbox connections are answered as a
        // mediator would; the behaviour is for the first other connection.
        let mut stream = loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            // The first message: a 4-byte length, then that many bytes.
            let mut header = [0u8; 4];
            if stream.read_exact(&mut header).await.is_err() {
                continue;
            }
            let mut first = vec![0u8; u32::from_be_bytes(header).min(1 << 16) as usize];
            if stream.read_exact(&mut first).await.is_err() {
                continue;
            }
            let framed = Framed::new(stream, FrameCodec::new(Link::Mediator));
            match wire::decode::<ClientMsg>(&first) {
                Ok(msg) => {
                    if let Some((framed, _)) = side_connection(framed, msg) {
                        break framed.into_inner();
                    }
                }
                Err(_) => break framed.into_inner(),
            }
        };
        match behaviour {
            Broken::Answer(bytes) => {
                let _ = stream.write_all(&bytes).await;
            }
            Broken::AnswerAndClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                return;
            }
            Broken::Stall => {}
        }
        // Keep reading (pings) and never answer, until the client leaves.
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    addr
}
