//! One run of the client, start to finish: check the flags, bind the listener,
//! meet the peer through the mediator, connect and confirm keys, record the
//! session, then chat.

use std::net::{IpAddr, SocketAddr};

use dhke::{Group, KeyPair, RoomName};
use rand::rngs::OsRng;
use tokio::net::TcpListener;
use tokio::time::Instant;
use wire::handshake::HostHandshake;
use wire::peer::MAX_CHAT_TEXT;
use wire::{ClientMsg, HandshakeInput, Role, PROTOCOL_VERSION};

use crate::chat::{self, PeerInfo};
use crate::cli::{parse_listen, Args};
use crate::connect::{self, Connected};
use crate::exit::ClientError;
use crate::peerlink::PeerLink;
use crate::records::{self, PeerLine};
use crate::rendezvous::{Matched, MediatorLink};
use crate::roomcode;
use crate::ui::{Event, Output};

/// Runs the client with parsed flags, showing events on `out`.
pub async fn run(args: Args, out: &Output) -> Result<(), ClientError> {
    let Some(server) = args.server.clone() else {
        return Err(ClientError::Usage(
            "--server is required to chat: client --server HOST[:PORT] --room ROOM (see --help)"
                .into(),
        ));
    };
    let name = match &args.name {
        Some(name) => {
            wire::validate_name(name)
                .map_err(|e| ClientError::Usage(format!("--name `{name}`: {e}")))?;
            name.clone()
        }
        None => roomcode::friendly_name(&mut OsRng),
    };
    let group = Group::from_id(args.group).map_err(|e| ClientError::Usage(e.to_string()))?;
    let listen = parse_listen(&args.listen).map_err(ClientError::Usage)?;
    let room = match &args.room {
        Some(room) => {
            roomcode::check_room(room).map_err(|e| ClientError::Usage(format!("--room: {e}")))?;
            room.clone()
        }
        None => {
            let room = roomcode::generate(&mut OsRng);
            out.show(&Event::Room {
                command: format!("client --server {server} --room {room}"),
                room: room.clone(),
            });
            room
        }
    };
    let keylog = records::keylog_path();
    if let Some(path) = &keylog {
        out.show(&Event::Info {
            text: format!(
                "warning: P2PCHAT_KEYLOG is set; session keys will be written to {}. Anyone with that file can read this chat.",
                path.display()
            ),
        });
    }

    // The listener exists before the Hello that advertises it.
    let listener = bind_listener(listen).await?;
    let listen_addr = listener
        .local_addr()
        .map_err(|e| ClientError::ListenFailed(format!("listener has no address: {e}")))?;
    let mediator = MediatorLink::connect(&server).await?;
    let keys = KeyPair::generate(group, &mut OsRng);
    let (listen_port, local_addrs) = advertised(&args, listen_addr, mediator.local_addr());
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        room: dhke::room_tag(&room).0,
        name: name.clone(),
        group: group.id(),
        public: keys.public().to_vec(),
        listen_port,
        local_addrs,
        no_relay: args.no_relay,
    };
    // Lines typed while we wait are kept and sent once the session is up.
    let mut input = out.input(MAX_CHAT_TEXT);
    let listen_text = listen_addr.to_string();
    let matched = mediator
        .rendezvous(hello, &room, |expires_in_secs| {
            out.show(&Event::Waiting {
                listen: listen_text.clone(),
                expires_in_secs,
            })
        })
        .await?;
    wire::validate_name(&matched.peer_name).map_err(|e| {
        ClientError::PeerUnreachable(format!(
            "the mediator announced an invalid peer name ({e}); it may be faulty or hostile"
        ))
    })?;
    out.show(&Event::Matched {
        peer: matched.peer_name.clone(),
        role: matched.role.to_string(),
    });

    let input_for = |previous| HandshakeInput {
        room: RoomName::new(room.clone()),
        local_name: name.clone(),
        local: keys.clone(),
        peer_name: matched.peer_name.clone(),
        peer_public: matched.public.clone(),
        previous,
        keylog: keylog.is_some(),
    };
    let deadline = Instant::now() + args.connect_timeout;
    let conn = connect_peer(&matched, &listener, || input_for(None), deadline, out).await?;
    drop(listener);

    let sas = conn.session.sas().to_string();
    let info = PeerInfo {
        name: matched.peer_name.clone(),
        addr: conn.addr,
        path: conn.path.as_str().to_string(),
        sas: sas.clone(),
    };
    out.show(&Event::Connected {
        peer: info.name.clone(),
        addr: info.addr.to_string(),
        path: info.path.clone(),
        sas: sas.clone(),
        role: matched.role.to_string(),
        resumed: conn.session.resumed(),
        verified: false,
    });
    if let (Some(path), Some(line)) = (&keylog, conn.session.keylog_line()) {
        records::append_keylog(path, line)?;
    }
    records::append_peer(
        &args.peers_file,
        &PeerLine {
            at: chrono::Utc::now(),
            peer_name: &info.name,
            peer_addr: info.addr,
            room: &room,
            path: &info.path,
            sas: &sas,
        },
    )?;

    let link = PeerLink::start(conn);
    chat::run(link, &info, out, &mut input).await.map(|_| ())
}

async fn bind_listener(addr: SocketAddr) -> Result<TcpListener, ClientError> {
    let failed = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another program uses that port: pick another with --listen, or 0 for any free port"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: pick a higher one with --listen"
            }
            _ => "check the --listen address",
        };
        ClientError::ListenFailed(format!("cannot listen on {addr}: {e}; {hint}"))
    };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(failed)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // Accept IPv4 peers on the same port too.
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_only_v6(false);
    }
    socket.bind(addr).map_err(failed)?;
    socket.listen(64).map_err(failed)
}

/// The listen port and local addresses our `Hello` advertises: `--advertise` if
/// given; otherwise the listener's own address, or, for a wildcard listener, the
/// interface address our mediator connection uses.
fn advertised(
    args: &Args,
    listen: SocketAddr,
    toward_mediator: Option<SocketAddr>,
) -> (u16, Vec<SocketAddr>) {
    if let Some(addr) = args.advertise {
        return (addr.port(), vec![addr]);
    }
    let ip: Option<IpAddr> = if listen.ip().is_unspecified() {
        toward_mediator.map(|a| a.ip())
    } else {
        Some(listen.ip())
    };
    let locals = ip
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| vec![SocketAddr::new(ip, listen.port())])
        .unwrap_or_default();
    (listen.port(), locals)
}

async fn connect_peer(
    matched: &Matched,
    listener: &TcpListener,
    input: impl FnMut() -> HandshakeInput,
    deadline: Instant,
    out: &Output,
) -> Result<Connected, ClientError> {
    let mut input = input;
    match matched.role {
        Role::Host => {
            let handshake = HostHandshake::new(input()).map_err(|e| {
                ClientError::PeerUnreachable(format!(
                    "the key announced for the peer is invalid ({e}); the mediator may be faulty or hostile"
                ))
            })?;
            connect::host(listener, handshake, matched, deadline, |addr, reason| {
                out.show(&Event::Rejected {
                    addr: addr.to_string(),
                    reason: reason.to_string(),
                })
            })
            .await
        }
        Role::Joiner => {
            let candidates = connect::candidates(matched);
            connect::join(&candidates, input, deadline, &matched.peer_name).await
        }
    }
}
