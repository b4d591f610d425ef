//! Connection tokens (docs/protocol.md §16): `client token` prints one and hosts
//! whoever dials it; `client --connect TOKEN` dials it directly, with no mediator,
//! and accepts only the identity the token names. The holder admits or denies a
//! dialer it does not know.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use dhke::{Group, Identity, IdentityKey, KeyPair, ResumeSecret, RoomCode};
use futures::{SinkExt, StreamExt};
use rand::rngs::OsRng;
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;
use wire::handshake::{HostHandshake, JoinerHelloSent};
use wire::token::Token;
use wire::{FrameCodec, HandshakeInput, Link, PeerHandshake, PeerMsg, RelayOffer, Role};

use crate::connect::{self, recv_hs, send_hs, Connected, Path, FIRST_MESSAGE, HANDSHAKE_STEP};
use crate::exit::ClientError;
use crate::ports::LocalPort;
use crate::rendezvous::Matched;

/// Dialers judged at once; more wait in the listen backlog.
const MAX_JUDGED: usize = 4;
/// How long the dialer waits for the holder to admit it (a person decides).
pub const ADMISSION_WAIT: Duration = Duration::from_secs(300);
/// How long one dial of a token address may take.
const DIAL: Duration = Duration::from_secs(3);

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The room of a token: its code is the token's room secret (§16.2).
pub fn room_of(token: &Token) -> RoomCode {
    RoomCode::from_secret("token", &token.room_secret())
}

/// A fresh token for `identity`, valid for `ttl`, naming the addresses we listen on.
pub fn issue(identity: &Identity, addrs: Vec<SocketAddr>, ttl: Duration) -> Token {
    let mut secret = [0u8; wire::token::SECRET_LEN];
    OsRng.fill_bytes(&mut secret);
    Token {
        identity: identity.public().0,
        secret,
        expires_unix: now_unix().saturating_add(ttl.as_secs()),
        addrs,
    }
}

/// Reads `--connect`: a token with a typo, of another version, or expired is a
/// clear error.
pub fn parse(text: &str) -> Result<Token, ClientError> {
    let token = Token::parse(text).map_err(|e| ClientError::Usage(format!("--connect: {e}")))?;
    if token.expires_unix <= now_unix() {
        return Err(ClientError::TokenExpired(format!(
            "this token expired {} ago; ask its holder for a new one (`client token`)",
            humantime::format_duration(Duration::from_secs(now_unix() - token.expires_unix))
        )));
    }
    IdentityKey(token.identity)
        .check()
        .map_err(|_| ClientError::Usage("--connect: the token's identity key is damaged".into()))?;
    Ok(token)
}

/// What both ends share for a token connection.
#[derive(Debug)]
pub struct Ends<'a> {
    pub name: &'a str,
    pub group: Group,
    pub identity: &'a Identity,
    pub previous: Option<ResumeSecret>,
    pub keylog: bool,
}

/// A confirmed token connection, and the `Matched` a mediator would have sent
/// for it (so the rest of the run treats both paths alike).
fn confirmed(
    role: Role,
    framed: connect::PeerFramed,
    addr: SocketAddr,
    session: wire::Session,
    peer_name: String,
    public: Vec<u8>,
) -> (Connected, Matched) {
    let conn = Connected {
        framed,
        addr,
        path: Path::Direct,
        session,
    };
    let matched = Matched {
        role,
        peer_name,
        public,
        observed_addr: addr,
        listen_port: addr.port(),
        local_addrs: Vec::new(),
        your_addr: addr,
        relay: RelayOffer::Off,
    };
    (conn, matched)
}

/// The holder: waits for a dialer that knows the token and completes the
/// handshake; strangers are turned away and the wait goes on until the token
/// expires.
pub async fn host(
    listener: &TcpListener,
    token: &Token,
    ends: Ends<'_>,
    mut on_stranger: impl FnMut(SocketAddr, &str),
) -> Result<(Connected, Matched), ClientError> {
    let code = room_of(token);
    let until = Instant::now() + Duration::from_secs(token.expires_unix.saturating_sub(now_unix()));
    let mut judging: JoinSet<Result<(Connected, Matched), (SocketAddr, String)>> = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if judging.len() < MAX_JUDGED => {
                let (stream, addr) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                judging.spawn(judge(stream, addr, code.clone(), ends_owned(&ends)));
            }
            Some(done) = judging.join_next() => match done {
                Ok(Ok(pair)) => return Ok(pair),
                Ok(Err((addr, why))) => on_stranger(addr, &why),
                Err(_) => {}
            },
            () = tokio::time::sleep_until(until) => {
                return Err(ClientError::TokenExpired(
                    "the token expired and nobody connected with it; run `client token` for a new one".into(),
                ));
            }
        }
    }
}

/// [`Ends`] with owned parts, for a task.
struct OwnedEnds {
    name: String,
    group: Group,
    identity: Identity,
    previous: Option<ResumeSecret>,
    keylog: bool,
}

fn ends_owned(e: &Ends<'_>) -> OwnedEnds {
    OwnedEnds {
        name: e.name.to_owned(),
        group: e.group,
        identity: e.identity.clone(),
        previous: e.previous.clone(),
        keylog: e.keylog,
    }
}

/// One incoming connection at the holder: `TokenHello`, then §6 as the host.
async fn judge(
    stream: TcpStream,
    addr: SocketAddr,
    code: RoomCode,
    ends: OwnedEnds,
) -> Result<(Connected, Matched), (SocketAddr, String)> {
    let fail = |why: String| (addr, why);
    let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
    let reject = |why: &str| PeerHandshake::Reject { reason: why.into() };
    let (name, public) = match recv_hs(&mut framed, FIRST_MESSAGE).await.map_err(fail)? {
        PeerHandshake::TokenHello {
            tag,
            name,
            group,
            public,
        } => {
            let why = if !dhke::verify_mac(&tag, &code.tag().0) {
                Some("not our token".to_string())
            } else if group != ends.group.id() {
                Some(format!("use --dh-group {}", ends.group.id()))
            } else if let Err(e) = wire::validate_name(&name) {
                Some(format!("bad name: {e}"))
            } else {
                None
            };
            if let Some(why) = why {
                let _ = send_hs(&mut framed, &reject(&why)).await;
                return Err(fail(why));
            }
            (name, public)
        }
        _ => return Err(fail("the first message is not a TokenHello".into())),
    };
    let keys =
        KeyPair::generate_cpace(ends.group, &code, &mut OsRng).map_err(|e| fail(e.to_string()))?;
    let welcome = PeerHandshake::TokenWelcome {
        name: ends.name.clone(),
        public: keys.public().to_vec(),
    };
    let handshake = HostHandshake::new(HandshakeInput {
        room: code,
        local_name: ends.name,
        local: keys,
        peer_name: name.clone(),
        peer_public: public.clone(),
        previous: ends.previous,
        keylog: ends.keylog,
        identity: ends.identity,
        expect_peer: None,
    })
    .map_err(|e| fail(e.to_string()))?;
    send_hs(&mut framed, &welcome).await.map_err(fail)?;
    let hello = recv_hs(&mut framed, HANDSHAKE_STEP).await.map_err(fail)?;
    let (state, confirm) = handshake
        .on_peer_hello(hello, &mut OsRng)
        .map_err(|e| fail(e.to_string()))?;
    send_hs(&mut framed, &confirm).await.map_err(fail)?;
    let reply = recv_hs(&mut framed, HANDSHAKE_STEP).await.map_err(fail)?;
    let session = state
        .on_joiner_confirm(reply)
        .map_err(|e| fail(e.to_string()))?;
    Ok(confirmed(Role::Host, framed, addr, session, name, public))
}

/// The dialer: tries the token's addresses in order; the host must prove the
/// token's identity.
pub async fn dial(
    port: LocalPort,
    token: &Token,
    ends: Ends<'_>,
) -> Result<(Connected, Matched), ClientError> {
    let code = room_of(token);
    let expected = IdentityKey(token.identity);
    let mut errors = Vec::new();
    for &addr in &token.addrs {
        let stream = match port.connect(addr, DIAL).await {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{addr}: {e}"));
                continue;
            }
        };
        match dial_one(stream, addr, &code, expected, &ends).await {
            Ok(pair) => return Ok(pair),
            Err(Dialed::Fatal(e)) => return Err(e),
            Err(Dialed::Next(why)) => errors.push(format!("{addr}: {why}")),
        }
    }
    Err(ClientError::PeerUnreachable(format!(
        "could not reach the token's holder ({}). Is `client token` still running there, and \
         is its port reachable from here?",
        errors.join("; ")
    )))
}

enum Dialed {
    Next(String),
    Fatal(ClientError),
}

async fn dial_one(
    stream: TcpStream,
    addr: SocketAddr,
    code: &RoomCode,
    expected: IdentityKey,
    ends: &Ends<'_>,
) -> Result<(Connected, Matched), Dialed> {
    let mut framed = Framed::new(stream, FrameCodec::new(Link::Peer));
    let keys = KeyPair::generate_cpace(ends.group, code, &mut OsRng)
        .map_err(|e| Dialed::Fatal(ClientError::Usage(e.to_string())))?;
    let hello = PeerHandshake::TokenHello {
        tag: code.tag().0,
        name: ends.name.to_owned(),
        group: ends.group.id(),
        public: keys.public().to_vec(),
    };
    send_hs(&mut framed, &hello).await.map_err(Dialed::Next)?;
    let (name, public) = match recv_hs(&mut framed, HANDSHAKE_STEP)
        .await
        .map_err(Dialed::Next)?
    {
        PeerHandshake::TokenWelcome { name, public } => (name, public),
        PeerHandshake::Reject { reason } => {
            return Err(Dialed::Next(format!(
                "refused us: {}",
                wire::sanitize_for_terminal(&reason)
            )))
        }
        _ => {
            return Err(Dialed::Next(
                "answered with something other than TokenWelcome".into(),
            ))
        }
    };
    wire::validate_name(&name).map_err(|e| Dialed::Next(format!("bad name: {e}")))?;
    let input = HandshakeInput {
        room: code.clone(),
        local_name: ends.name.to_owned(),
        local: keys,
        peer_name: name.clone(),
        peer_public: public.clone(),
        previous: ends.previous.clone(),
        keylog: ends.keylog,
        identity: ends.identity.clone(),
        expect_peer: Some(expected),
    };
    let fatal = |e| Dialed::Fatal(connect::handshake_failure(e, &name));
    let (state, peer_hello) = JoinerHelloSent::start(input, &mut OsRng).map_err(fatal)?;
    send_hs(&mut framed, &peer_hello)
        .await
        .map_err(Dialed::Next)?;
    let confirm = recv_hs(&mut framed, HANDSHAKE_STEP)
        .await
        .map_err(Dialed::Next)?;
    let (session, reply) = state.on_host_confirm(confirm).map_err(fatal)?;
    send_hs(&mut framed, &reply).await.map_err(Dialed::Next)?;
    Ok(confirmed(Role::Joiner, framed, addr, session, name, public))
}

/// The holder's answer, as the first record of the session.
pub async fn send_admission(
    conn: &mut Connected,
    admitted: Result<(), String>,
) -> Result<(), ClientError> {
    let msg = match admitted {
        Ok(()) => PeerMsg::Admitted,
        Err(reason) => PeerMsg::Denied { reason },
    };
    let plain = wire::encode(&msg).map_err(|e| ClientError::Internal(e.into()))?;
    let record = conn
        .session
        .sealer()
        .seal(&plain, &mut OsRng)
        .map_err(|e| ClientError::Internal(anyhow::anyhow!("sealing the admission: {e}")))?;
    timeout(HANDSHAKE_STEP, conn.framed.send(record.as_slice()))
        .await
        .map_err(|_| ClientError::ConnectionLost("the dialer stopped reading".into()))?
        .map_err(|e| ClientError::ConnectionLost(format!("lost the dialer: {e}")))
}

/// The dialer: waits for the holder's decision.
pub async fn await_admission(conn: &mut Connected, holder: &str) -> Result<(), ClientError> {
    let holder = wire::sanitize_for_terminal(holder).into_owned();
    let frame = match timeout(ADMISSION_WAIT, conn.framed.next()).await {
        Err(_) => {
            return Err(ClientError::Denied(format!(
                "{holder} did not let us in within {}; try again later",
                humantime::format_duration(ADMISSION_WAIT)
            )))
        }
        Ok(None) => {
            return Err(ClientError::ConnectionLost(format!(
                "{holder} closed the connection before deciding"
            )))
        }
        Ok(Some(Err(e))) => return Err(ClientError::ConnectionLost(format!("lost {holder}: {e}"))),
        Ok(Some(Ok(frame))) => frame,
    };
    let mut frame = BytesMut::from(&frame[..]);
    let plain = conn
        .session
        .opener()
        .open(&mut frame)
        .map_err(|_| ClientError::Integrity)?;
    match wire::decode::<PeerMsg>(plain) {
        Ok(PeerMsg::Admitted) => Ok(()),
        Ok(PeerMsg::Denied { reason }) => Err(ClientError::Denied(format!(
            "{holder} denied the connection ({}). Ask them to accept you, or to add you as a contact first.",
            wire::sanitize_for_terminal(&reason)
        ))),
        _ => Err(ClientError::ConnectionLost(format!(
            "{holder} sent something other than its decision first; session closed"
        ))),
    }
}
