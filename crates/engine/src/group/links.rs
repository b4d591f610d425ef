//! The links of a group member (docs/protocol.md §19.2): one acceptor on the
//! run's port that reads each connection's `PeerHello` and hands it to the race
//! for the member whose public value it carries; one race per member the
//! mediator announces (the §6 handshake with its own keys, any path of §12:
//! both members punch as soon as they hear of each other, since the mediator
//! announces both at once); and one task per confirmed link that carries
//! messages between it and the mesh.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhke::{Identity, KeyPair, RoomCode};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use wire::handshake::{HostHandshake, JoinerHandshake};
use wire::{FrameCodec, HandshakeInput, Link, PeerHandshake, PeerMsg, Role};

use crate::connect::{self, Connected, Incoming, RoutedConn};
use crate::peerlink::{LinkError, LinkSender, PeerLink};
use crate::ports::{self, LocalPort};
use crate::rendezvous::Matched;

/// Connections whose first message is being read at once; more wait in the
/// kernel's backlog.
const MAX_FIRST_READS: usize = 32;
/// Connections queued towards one race.
const ROUTE_QUEUE: usize = 8;
/// How often a connection waiting for its race (one that has sent nothing, for
/// a joiner race of its address; a `PeerHello`, for a host race of its public
/// value) looks again.
const ROUTE_RECHECK: Duration = Duration::from_millis(50);

/// Races waiting for connections: hosts by the peer public value a `PeerHello`
/// will carry, joiners by the address their host dials from (its punch dials
/// leave from its one port, the address the mediator observed).
#[derive(Debug, Default)]
pub struct RouteTable {
    hosts: HashMap<Vec<u8>, mpsc::Sender<RoutedConn>>,
    joiners: HashMap<SocketAddr, mpsc::Sender<RoutedConn>>,
}

pub type Routes = Arc<Mutex<RouteTable>>;

/// Accepts on the run's listener for the whole run. A connection from the
/// address of a member we join goes to that race at once (its host punched
/// into our listener and waits for our `PeerHello`, as in a two-party room);
/// any other is routed by its first message, a `PeerHello` naming the public
/// value of a member we host; anything else is dropped.
pub fn spawn_acceptor(listener: TcpListener, routes: Routes) -> JoinHandle<()> {
    tokio::spawn(async move {
        let reading = Arc::new(Semaphore::new(MAX_FIRST_READS));
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let from = ports::unmap(from);
            let framed = Framed::new(stream, FrameCodec::new(Link::Peer));
            let joiner = lock(&routes).joiners.get(&from).cloned();
            if let Some(route) = joiner {
                let _ = route.try_send(RoutedConn {
                    framed,
                    addr: from,
                    first: None,
                });
                continue;
            }
            let Ok(permit) = reading.clone().try_acquire_owned() else {
                tracing::debug!(%from, "too many connections being read; dropped");
                continue;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut framed = framed;
                // A host may punch into our listener a moment before we hear of
                // it from the mediator: while no first message has come, a joiner
                // route for its address that appears meanwhile takes it.
                let deadline = Instant::now() + connect::FIRST_MESSAGE;
                let first = loop {
                    match tokio::time::timeout(ROUTE_RECHECK, framed.next()).await {
                        Ok(Some(Ok(frame))) => match wire::decode::<PeerHandshake>(&frame) {
                            Ok(first) => break first,
                            Err(e) => {
                                tracing::debug!(%from, error = %e, "undecodable first message");
                                return;
                            }
                        },
                        Ok(_) => return,
                        Err(_) => {
                            let joiner = lock(&routes).joiners.get(&from).cloned();
                            if let Some(route) = joiner {
                                let _ = route.try_send(RoutedConn {
                                    framed,
                                    addr: from,
                                    first: None,
                                });
                                return;
                            }
                            if Instant::now() >= deadline {
                                tracing::debug!(%from, "no first message in time; dropped");
                                return;
                            }
                        }
                    }
                };
                let PeerHandshake::PeerHello { public, .. } = &first else {
                    tracing::debug!(%from, "a first message that is not a PeerHello; dropped");
                    return;
                };
                // A joiner may dial a moment before the mediator's `Member`
                // reaches us: wait for its race until the first-message deadline.
                let route = loop {
                    if let Some(route) = lock(&routes).hosts.get(public).cloned() {
                        break route;
                    }
                    if Instant::now() >= deadline {
                        tracing::debug!(%from, "a connection for no member of ours; dropped");
                        return;
                    }
                    tokio::time::sleep(ROUTE_RECHECK).await;
                };
                let conn = RoutedConn {
                    framed,
                    addr: from,
                    first: Some(first),
                };
                let _ = route.try_send(conn);
            });
        }
    })
}

fn lock(routes: &Routes) -> std::sync::MutexGuard<'_, RouteTable> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a race needs besides the member's details: fixed for one mediator
/// session (the key pair is the one our `GroupHello` announced).
#[derive(Clone)]
pub struct PairSetup {
    pub code: RoomCode,
    pub name: String,
    pub keys: KeyPair,
    pub identity: Identity,
    pub port: LocalPort,
    pub own_locals: Vec<SocketAddr>,
    pub server: String,
    pub connect_timeout: Duration,
    pub relay_after: Duration,
    /// `--no-punch`: only announced addresses and the relay.
    pub no_punch: bool,
}

/// How a race for member `member` ended.
pub enum Paired {
    Linked {
        member: u32,
        matched: Matched,
        conn: Box<Connected>,
    },
    Failed {
        member: u32,
        name: String,
        error: crate::error::ClientError,
    },
}

/// Runs the race for one announced member and reports on `done`.
pub fn spawn_race(
    setup: PairSetup,
    member: u32,
    matched: Matched,
    routes: Routes,
    done: mpsc::Sender<Paired>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let name = matched.peer_name.clone();
        let result = race(&setup, &matched, &routes).await;
        {
            let mut table = lock(&routes);
            table.hosts.remove(&matched.public);
            table.joiners.remove(&matched.observed_addr);
        }
        let report = match result {
            Ok(conn) => Paired::Linked {
                member,
                matched,
                conn: Box::new(conn),
            },
            Err(error) => Paired::Failed {
                member,
                name,
                error,
            },
        };
        let _ = done.send(report).await;
    })
}

async fn race(
    setup: &PairSetup,
    matched: &Matched,
    routes: &Routes,
) -> Result<Connected, crate::error::ClientError> {
    wire::validate_name(&matched.peer_name).map_err(|e| {
        crate::error::ClientError::PeerUnreachable(format!(
            "the mediator announced an invalid member name ({e})"
        ))
    })?;
    let input = HandshakeInput {
        room: setup.code.clone(),
        local_name: setup.name.clone(),
        local: setup.keys.clone(),
        peer_name: matched.peer_name.clone(),
        peer_public: matched.public.clone(),
        previous: None,
        keylog: false,
        identity: setup.identity.clone(),
        expect_peer: None,
    };
    let refused = |e| connect::handshake_failure(e, &matched.peer_name);
    let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
    let side = match matched.role {
        Role::Host => {
            lock(routes).hosts.insert(matched.public.clone(), tx);
            connect::Side::Host(HostHandshake::new(input).map_err(refused)?)
        }
        Role::Joiner => {
            lock(routes).joiners.insert(matched.observed_addr, tx);
            connect::Side::Joiner(JoinerHandshake::new(input).map_err(refused)?)
        }
    };
    // Each pair counts its own reveals: one member's failures say nothing of
    // another's link.
    let reveals = connect::Reveals::default();
    let matched_at = Instant::now();
    let race = connect::Race {
        matched,
        port: setup.port,
        incoming: Incoming::Routed(rx),
        own_locals: &setup.own_locals,
        server: &setup.server,
        punch: (!setup.no_punch).then(crate::rendezvous::PunchWatch::immediate),
        matched_at,
        deadline: matched_at + setup.connect_timeout,
        relay_after: setup.relay_after,
        reveals: &reveals,
    };
    connect::connect(race, side, |addr, reason| {
        tracing::debug!(%addr, reason, "a stranger turned away");
    })
    .await
}

/// The mesh's handle on one link: messages go straight into the link's
/// queue (bounded in items and bytes, [`LinkSender`]); closing goes through the
/// link's task, which says goodbye and flushes.
#[derive(Debug)]
pub struct LinkHandle {
    sender: LinkSender,
    close: Option<oneshot::Sender<Option<String>>>,
}

impl LinkHandle {
    /// Queues `msg`; an error when the peer stopped reading or the link ended.
    pub fn send(&self, msg: PeerMsg) -> Result<(), LinkError> {
        self.sender.send(msg)
    }

    /// A sender of our own towards the peer (the conversation's writes).
    pub fn sender(&self) -> LinkSender {
        self.sender.clone()
    }

    /// Bytes queued towards the peer and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.sender.queued_bytes()
    }

    /// Ends the link, with a `Bye` carrying `bye` if given.
    pub fn close(&mut self, bye: Option<String>) {
        if let Some(close) = self.close.take() {
            let _ = close.send(bye);
        }
    }
}

/// From a link's task to the mesh.
pub enum FromLink {
    /// A message from the link with this serial.
    Msg(u64, PeerMsg),
    /// The link with this serial ended, and why.
    Ended(u64, String),
}

/// Carries messages between a confirmed link and the mesh until either ends it.
pub fn spawn_link(
    serial: u64,
    conn: Connected,
    to_mesh: mpsc::Sender<FromLink>,
) -> (LinkHandle, JoinHandle<()>) {
    let mut link = PeerLink::start(conn);
    let (close_tx, mut close_rx) = oneshot::channel::<Option<String>>();
    let handle = LinkHandle {
        sender: link.sender(),
        close: Some(close_tx),
    };
    let task = tokio::spawn(async move {
        let why = loop {
            tokio::select! {
                order = &mut close_rx => {
                    link.close(order.unwrap_or(None)).await;
                    return;
                }
                got = link.recv() => match got {
                    Some(Ok(msg)) => {
                        if to_mesh.send(FromLink::Msg(serial, msg)).await.is_err() {
                            link.close(None).await;
                            return;
                        }
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "the connection was closed".to_owned(),
                },
            }
        };
        let _ = to_mesh.send(FromLink::Ended(serial, why)).await;
        link.close(None).await;
    });
    (handle, task)
}
