//! The relay of last resort (docs/protocol.md §12.3): two clients that found no
//! direct path each open a new connection, present the token their `Matched`
//! carried, and get their byte streams spliced. The relay checks frame lengths
//! and its caps (bytes, rate, idle, sessions) and parses nothing else: it never
//! holds a key, and the peer handshake and records pass through unchanged.
//!
//! A pair id has at most one session: the [`PairTable`] decides in one step,
//! under one lock, whether a join is the first side (it waits), the second (it
//! hands its stream over) or one too many (refused, saying why), and remembers a
//! pair whose session ended until its token expires.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use wire::frame::{relay_notice, HEADER_LEN, PEER_FRAME_MAX};
use wire::{ErrorCode, Link};

use crate::server::{Admitted, Shared};

/// The label of the token MAC (docs/protocol.md §12.3). v3: the MAC also covers
/// the relay server the token is for.
const TOKEN_LABEL: &[u8] = b"p2pchat/v3/relay-token";
/// A `RelayReady` or end notice must be written within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ended session keeps reading (and discarding) so its close is a
/// FIN, not a reset that would destroy the end notice in flight.
const DRAIN: Duration = Duration::from_secs(2);

/// A refusal: the code and message of the `Error` the client gets.
pub(crate) type Refusal = (ErrorCode, String);

/// Mints and checks relay tokens: `pair_id (12) || expires (u32 BE, Unix seconds)
/// || HMAC-SHA256(secret, label || pair_id || expires || server)[..16]`, where
/// `server` is the relay the offer names (`--public-addr`, or empty). Stateless
/// until a client presents one, so a match costs the relay nothing. Mediators
/// sharing a Redis share the secret (docs/protocol.md §18.5): the host's mediator
/// mints the same token for its client that the relay's mediator minted for the
/// joiner. Because the MAC covers `server`, a token verifies only at the relay
/// it names, so instances sharing the secret cannot each give one pair a
/// session (each instance's [`PairTable`] only sees its own joins).
pub(crate) struct TokenKey {
    /// The MAC keyed with the secret and with the label absorbed, cloned for
    /// each token: a mint or a check then hashes only its own bytes, not the
    /// key's two padded blocks again (two SHA-256 blocks of four, per token).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenKey {
    /// A fresh random key; tokens die with the process.
    pub(crate) fn new() -> TokenKey {
        TokenKey::from_secret(rand::random())
    }

    /// A key given by the operator or agreed through Redis.
    pub(crate) fn from_secret(secret: [u8; 32]) -> TokenKey {
        let mut keyed = Hmac::<Sha256>::new_from_slice(&secret).expect("any key length");
        keyed.update(TOKEN_LABEL);
        TokenKey { keyed }
    }

    /// The expiry stamp for a token minted now and good for `ttl`.
    pub(crate) fn expiry(&self, ttl: Duration) -> u32 {
        u32::try_from(unix_now().saturating_add(ttl.as_secs())).unwrap_or(u32::MAX)
    }

    fn mac(&self, pair_id: &[u8; 12], expires: u32, server: &str) -> [u8; 16] {
        let mut mac = self.keyed.clone();
        mac.update(pair_id);
        mac.update(&expires.to_be_bytes());
        // Last and the only variable-length input, so no length prefix is needed.
        mac.update(server.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The token both sides of pair `pair_id` get for the relay at `server`.
    pub(crate) fn mint(&self, pair_id: &[u8; 12], expires: u32, server: &str) -> [u8; 32] {
        let mut token = [0u8; 32];
        token[..12].copy_from_slice(pair_id);
        token[12..16].copy_from_slice(&expires.to_be_bytes());
        token[16..].copy_from_slice(&self.mac(pair_id, expires, server));
        token
    }

    /// The pair a token names and its expiry, if it is ours, for the relay at
    /// `server` (this one), and still good.
    pub(crate) fn check(&self, token: &[u8; 32], server: &str) -> Result<([u8; 12], u32), Refusal> {
        let mut pair_id = [0u8; 12];
        pair_id.copy_from_slice(&token[..12]);
        let expires = u32::from_be_bytes([token[12], token[13], token[14], token[15]]);
        if !bool::from(self.mac(&pair_id, expires, server).ct_eq(&token[16..])) {
            return Err((
                ErrorCode::RelayRefused,
                "this relay token was not issued here: it is for another relay (go to \
                 the server named in Matched), or this mediator restarted, or the \
                 mediators behind this address do not share --relay-secret; reconnect \
                 through the mediator"
                    .into(),
            ));
        }
        if unix_now() > u64::from(expires) {
            return Err((
                ErrorCode::RelayRefused,
                "this relay token has expired; reconnect through the mediator".into(),
            ));
        }
        Ok((pair_id, expires))
    }
}

/// The relay server this mediator names in its offers, and checks tokens
/// against: `--public-addr`, or empty ("the mediator you are talking to").
/// `None`: the relay is off.
pub(crate) fn own_server(config: &crate::config::Config) -> Option<String> {
    config
        .relay
        .then(|| config.public_addr.clone().unwrap_or_default())
}

/// One side's relay connection, waiting for or handed to the other side's task.
pub(crate) struct Half {
    stream: TcpStream,
    /// Keeps the connection counted against the limits while it is spliced.
    _admitted: Admitted,
}

/// The relay's table of pairs: [`PairTable`] over real connections.
pub(crate) type RelayTable = PairTable<Half>;

/// What the relay knows about one pair id. `T` is what the second side hands
/// the first (a connection; tests use plain values).
enum PairState<T> {
    /// One side waits; `handover` gives it the other side's connection.
    Waiting {
        handover: oneshot::Sender<T>,
        waiter: u64,
        expires: u32,
    },
    /// The pair's one session: spliced, or being handed over to `waiter`.
    Spliced { waiter: u64, expires: u32 },
    /// The session ended; the token opens no other until it expires.
    Ended { expires: u32 },
}

struct Pairs<T> {
    map: HashMap<[u8; 12], PairState<T>>,
    /// Tells the waiting sides apart (a pair may wait again after a side left).
    next_waiter: u64,
    /// Ended pairs are swept when the map reaches this size (amortised).
    sweep_at: usize,
}

impl<T> Default for Pairs<T> {
    fn default() -> Self {
        Pairs {
            map: HashMap::new(),
            next_waiter: 0,
            sweep_at: MIN_SWEEP,
        }
    }
}

/// The smallest map size at which ended pairs are swept.
const MIN_SWEEP: usize = 1024;

/// Relay pairs by id, and the session count. Waiting and spliced pairs are
/// bounded by the session cap (each holds a [`Slot`]); ended pairs are kept
/// only until their token expires (at most the token's life).
pub(crate) struct PairTable<T> {
    pairs: Mutex<Pairs<T>>,
    /// Sessions spliced or waiting for their second side.
    sessions: AtomicUsize,
}

impl<T> Default for PairTable<T> {
    fn default() -> Self {
        PairTable {
            pairs: Mutex::default(),
            sessions: AtomicUsize::new(0),
        }
    }
}

impl<T> std::fmt::Debug for PairTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairTable")
            .field("sessions", &self.sessions.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What one join gets, decided in one step.
pub(crate) enum Claim<'a, T> {
    /// The first side: wait on `handover`. Dropping `place` gives the pair up
    /// (or, once spliced, ends its session); `slot` counts the session.
    Wait {
        handover: oneshot::Receiver<T>,
        place: Place<'a, T>,
        slot: Slot<'a>,
    },
    /// The second side: send the connection to the first.
    HandOver(oneshot::Sender<T>),
    /// One join too many, or no room; the refusal says which.
    Refused(Refusal),
}

impl<T> PairTable<T> {
    fn lock(&self) -> MutexGuard<'_, Pairs<T>> {
        // Every critical section leaves the map consistent at each step, so a
        // poisoned lock is still usable.
        self.pairs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `pair_id` up and registers this join, under one lock: two sides
    /// arriving together cannot both find the pair empty.
    pub(crate) fn claim(
        &self,
        pair_id: [u8; 12],
        expires: u32,
        max_sessions: usize,
        now: u64,
    ) -> Claim<'_, T> {
        let mut pairs = self.lock();
        match pairs.map.get_mut(&pair_id) {
            Some(state @ PairState::Waiting { .. }) => {
                let PairState::Waiting {
                    waiter,
                    expires: first,
                    ..
                } = *state
                else {
                    unreachable!("matched Waiting")
                };
                let spliced = PairState::Spliced {
                    waiter,
                    expires: first.max(expires),
                };
                let PairState::Waiting { handover, .. } = std::mem::replace(state, spliced) else {
                    unreachable!("matched Waiting")
                };
                return Claim::HandOver(handover);
            }
            Some(PairState::Spliced { .. }) => {
                return Claim::Refused((
                    ErrorCode::RelayRefused,
                    "this pair already has its relay session (both sides joined); a pair \
                     gets one session at a time"
                        .to_owned(),
                ))
            }
            Some(PairState::Ended { expires: until }) if now <= u64::from(*until) => {
                return Claim::Refused((
                    ErrorCode::RelayRefused,
                    "this pair's relay session has ended and its token opens no other; \
                     reconnect through the mediator for a new one"
                        .to_owned(),
                ))
            }
            // No one here, or an ended pair whose token has expired since.
            _ => {}
        }
        let Some(slot) = Slot::take(&self.sessions, max_sessions) else {
            return Claim::Refused((
                ErrorCode::RelayRefused,
                format!(
                    "the relay is full ({max_sessions} sessions open or waiting); try \
                     again later"
                ),
            ));
        };
        let (tx, rx) = oneshot::channel();
        let waiter = pairs.next_waiter;
        pairs.next_waiter += 1;
        pairs.map.insert(
            pair_id,
            PairState::Waiting {
                handover: tx,
                waiter,
                expires,
            },
        );
        if pairs.map.len() >= pairs.sweep_at {
            pairs.map.retain(
                |_, s| !matches!(s, PairState::Ended { expires } if now > u64::from(*expires)),
            );
            pairs.sweep_at = (pairs.map.len() * 2).max(MIN_SWEEP);
        }
        Claim::Wait {
            handover: rx,
            place: Place {
                table: self,
                pair_id,
                waiter,
            },
            slot,
        }
    }

    /// A waiting side gives up: true if it was still waiting (now removed),
    /// false if a second side has taken the handover already (it is on its way).
    fn withdraw(&self, pair_id: &[u8; 12], waiter: u64) -> bool {
        let mut pairs = self.lock();
        match pairs.map.get(pair_id) {
            Some(PairState::Waiting { waiter: w, .. }) if *w == waiter => {
                pairs.map.remove(pair_id);
                true
            }
            _ => false,
        }
    }

    /// The pair's session (of `waiter`) ended: remember it until its token
    /// expires; a waiting side that leaves just frees the pair.
    fn end(&self, pair_id: &[u8; 12], waiter: u64, now: u64) {
        let mut pairs = self.lock();
        match pairs.map.get(pair_id) {
            Some(PairState::Spliced { waiter: w, expires }) if *w == waiter => {
                if now > u64::from(*expires) {
                    pairs.map.remove(pair_id);
                } else {
                    let expires = *expires;
                    pairs.map.insert(*pair_id, PairState::Ended { expires });
                }
            }
            Some(PairState::Waiting { waiter: w, .. }) if *w == waiter => {
                pairs.map.remove(pair_id);
            }
            _ => {}
        }
    }
}

/// A first side's place in the table. Dropped (however its task ends), it frees
/// a pair still waiting and ends a spliced one, so no pair stays taken.
pub(crate) struct Place<'a, T> {
    table: &'a PairTable<T>,
    pair_id: [u8; 12],
    waiter: u64,
}

impl<T> Place<'_, T> {
    fn withdraw(&self) -> bool {
        self.table.withdraw(&self.pair_id, self.waiter)
    }

    fn end(&self) {
        self.table.end(&self.pair_id, self.waiter, unix_now());
    }
}

impl<T> Drop for Place<'_, T> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Holds one session slot; frees it when dropped.
pub(crate) struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(sessions: &'a AtomicUsize, max: usize) -> Option<Slot<'a>> {
        sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(sessions))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves a connection whose first message was `RelayJoin { token }`: waits for
/// the other side (up to the token's life), then splices the two. The second
/// side's task hands its stream to the first and returns at once. A refusal is
/// one `Error` frame, then close.
pub(crate) async fn serve(admitted: Admitted, stream: TcpStream, token: [u8; 32]) {
    let shared = admitted.shared.clone();
    let half = Half {
        stream,
        _admitted: admitted,
    };
    let Err(Some(((code, message), mut half))) = pair_up(&shared, half, token).await else {
        return;
    };
    shared.metrics.relay_refused();
    shared.metrics.error(code);
    tracing::debug!(code = code.as_str(), "relay join refused");
    if let Some(frame) = crate::connection::error_frame(code, &message) {
        let _ = timeout(WRITE_TIMEOUT, half.stream.write_all(&frame)).await;
    }
}

/// What ended a first side's wait, other than the second side arriving.
enum WaitEnd {
    TimedOut,
    ShuttingDown,
    /// Our client closed its connection (or it broke).
    Closed,
    /// Our client sent bytes before `RelayReady`.
    Spoke,
}

/// Refusals go back with the connection so the caller can write them; `None`:
/// nothing to say (the client has gone).
type Unpaired = Option<(Refusal, Half)>;

async fn pair_up(shared: &Arc<Shared>, half: Half, token: [u8; 32]) -> Result<(), Unpaired> {
    let Some(server) = own_server(&shared.config) else {
        let why = (
            ErrorCode::RelayRefused,
            "this mediator runs with --relay off".to_owned(),
        );
        return Err(Some((why, half)));
    };
    let (pair_id, expires) = match shared.tokens.check(&token, &server) {
        Ok(checked) => checked,
        Err(why) => return Err(Some((why, half))),
    };
    let claim = shared.relay.claim(
        pair_id,
        expires,
        shared.config.relay_max_sessions,
        unix_now(),
    );
    let (mut handover, place, _slot) = match claim {
        Claim::Refused(why) => return Err(Some((why, half))),
        // The second side: hand over and leave. The first side only lets go of
        // its receiver after taking itself out of the table under the lock, so
        // this fails only if its task was torn down (shutdown).
        Claim::HandOver(first) => {
            return match first.send(half) {
                Ok(()) => Ok(()),
                Err(half) => {
                    let why = (
                        ErrorCode::RelayRefused,
                        "the other side's relay connection went away as this one \
                         joined; reconnect through the mediator"
                            .to_owned(),
                    );
                    Err(Some((why, half)))
                }
            };
        }
        Claim::Wait {
            handover,
            place,
            slot,
        } => (handover, place, slot),
    };
    let wait = shared.config.relay_token_ttl;
    let mut byte = [0u8; 1];
    let ended = tokio::select! {
        got = &mut handover => match got {
            Ok(second) => {
                splice(shared, &place, half, second).await;
                return Ok(());
            }
            Err(_) => WaitEnd::Closed,
        },
        () = tokio::time::sleep(wait) => WaitEnd::TimedOut,
        _ = shared.cancel.cancelled() => WaitEnd::ShuttingDown,
        // Watches our own client while it waits: one that leaves frees the
        // pair at once (its retry can wait in its place), one that speaks
        // before `RelayReady` breaks §12.3.
        peeked = half.stream.peek(&mut byte) => match peeked {
            Ok(n) if n > 0 => WaitEnd::Spoke,
            _ => WaitEnd::Closed,
        },
    };
    if !place.withdraw() {
        // A second side took the handover between the wake-up and the lock: its
        // connection is on its way (sent without an await after its claim).
        let Ok(second) = handover.await else {
            return Err(None);
        };
        splice(shared, &place, half, second).await;
        return Ok(());
    }
    let why = match ended {
        WaitEnd::TimedOut => (
            ErrorCode::RelayRefused,
            format!(
                "the other side of this pair did not come to the relay within {}s",
                wait.as_secs()
            ),
        ),
        WaitEnd::ShuttingDown => (
            ErrorCode::ShuttingDown,
            "the mediator is shutting down".to_owned(),
        ),
        WaitEnd::Spoke => (
            ErrorCode::Malformed,
            "send nothing after RelayJoin before RelayReady".to_owned(),
        ),
        WaitEnd::Closed => return Err(None),
    };
    Err(Some((why, half)))
}

/// One spliced session: why it stopped, if the relay stopped it, and its caps.
struct Session<'a> {
    /// The pair's place: the session is marked ended there before either side
    /// hears of the end, so a join that follows is refused as "ended".
    place: &'a Place<'a, Half>,
    stop: CancellationToken,
    reason: Mutex<Option<Refusal>>,
    bytes: AtomicU64,
    /// Milliseconds since `start` of the last forwarded frame, either direction.
    last_active_ms: AtomicU64,
    bucket: Mutex<Bucket>,
}

impl<'a> Session<'a> {
    fn new(place: &'a Place<'a, Half>) -> Session<'a> {
        Session {
            place,
            stop: CancellationToken::new(),
            reason: Mutex::default(),
            bytes: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(0),
            bucket: Mutex::default(),
        }
    }

    /// Stops both directions (the table first, then the pumps).
    fn halt(&self) {
        self.place.end();
        self.stop.cancel();
    }

    fn end(&self, code: ErrorCode, message: String) {
        let mut reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        reason.get_or_insert((code, message));
        drop(reason);
        self.halt();
    }

    fn reason(&self) -> Option<Refusal> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A token bucket over both directions: `rate` bytes per second, bursts of one
/// second's worth.
#[derive(Default)]
struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

impl Bucket {
    /// Takes `n` tokens, returning how long to wait before sending them.
    fn take(&mut self, n: u64, rate: u64, now: Instant) -> Duration {
        let rate = rate as f64;
        let elapsed = self.at.map_or(1.0, |at| (now - at).as_secs_f64());
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = Some(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

async fn splice(shared: &Arc<Shared>, place: &Place<'_, Half>, mut a: Half, mut b: Half) {
    let ready = wire::encode(&wire::MediatorMsg::RelayReady)
        .ok()
        .and_then(|payload| {
            let mut frame = Link::Mediator.header(payload.len()).ok()?.to_vec();
            frame.extend_from_slice(&payload);
            Some(frame)
        });
    let Some(ready) = ready else { return };
    for half in [&mut a, &mut b] {
        if !matches!(
            timeout(WRITE_TIMEOUT, half.stream.write_all(&ready)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
    shared.metrics.relay_opened();
    tracing::debug!("relay session spliced");
    let session = Session::new(place);
    let start = Instant::now();
    let (ar, aw) = a.stream.split();
    let (br, bw) = b.stream.split();
    tokio::join!(
        pump(shared, &session, start, ar, bw),
        pump(shared, &session, start, br, aw),
    );
    shared.metrics.relay_closed();
    if let Some((code, _)) = session.reason() {
        tracing::debug!(code = code.as_str(), "relay session ended by a cap");
    }
}

/// Forwards whole frames from `src` to `dst` until either side closes or the
/// session is stopped; then, if the relay stopped it, sends `dst` the end notice.
async fn pump(
    shared: &Shared,
    session: &Session<'_>,
    start: Instant,
    mut src: ReadHalf<'_>,
    mut dst: WriteHalf<'_>,
) {
    let config = &shared.config;
    let idle = config.relay_idle;
    let mut buf = vec![0u8; HEADER_LEN + PEER_FRAME_MAX];
    'frames: loop {
        // The header read is raced against the stop signal and the idle clock, so
        // it keeps partial bytes across wake-ups (`read` is cancel-safe). `dst` is
        // always at a frame boundary here, so a notice can follow.
        let mut filled = 0;
        while filled < HEADER_LEN {
            let read = tokio::select! {
                biased;
                _ = session.stop.cancelled() => break 'frames,
                read = timeout(idle, src.read(&mut buf[filled..HEADER_LEN])) => read,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    session.halt();
                    break 'frames;
                }
                Ok(Ok(n)) => filled += n,
                Err(_) => {
                    let last =
                        Duration::from_millis(session.last_active_ms.load(Ordering::Relaxed));
                    if start.elapsed().saturating_sub(last) >= idle {
                        session.end(
                            ErrorCode::RelayLimit,
                            format!(
                                "the relay ended the session after {}s without traffic",
                                idle.as_secs()
                            ),
                        );
                        break 'frames;
                    }
                }
            }
        }
        let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().expect("header slice");
        let Ok(len) = Link::Peer.parse_header(header) else {
            session.end(
                ErrorCode::Malformed,
                "a peer frame broke the framing rules".into(),
            );
            break;
        };
        let total = (HEADER_LEN + len) as u64;
        let carried = session.bytes.fetch_add(total, Ordering::Relaxed) + total;
        if carried > config.relay_max_bytes {
            session.end(
                ErrorCode::RelayLimit,
                format!(
                    "the relay's cap of {} bytes per session was reached",
                    config.relay_max_bytes
                ),
            );
            break;
        }
        match timeout(idle, src.read_exact(&mut buf[HEADER_LEN..HEADER_LEN + len])).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                session.halt();
                break;
            }
            Err(_) => {
                session.end(
                    ErrorCode::RelayLimit,
                    "the relay ended the session: a frame stalled halfway".into(),
                );
                break;
            }
        }
        let now = Instant::now();
        let elapsed_ms = u64::try_from((now - start).as_millis()).unwrap_or(u64::MAX);
        session
            .last_active_ms
            .fetch_max(elapsed_ms, Ordering::Relaxed);
        let wait = session
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(total, config.relay_rate, now);
        if !wait.is_zero() {
            tokio::select! {
                _ = session.stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        match timeout(idle, dst.write_all(&buf[..HEADER_LEN + len])).await {
            Ok(Ok(())) => shared.metrics.relayed(total),
            _ => {
                session.halt();
                break;
            }
        }
    }
    if let Some((code, message)) = session.reason() {
        let _ = timeout(WRITE_TIMEOUT, dst.write_all(&relay_notice(code, &message))).await;
    }
    let _ = dst.shutdown().await;
    // Read what `src` still sends (discarding it) until it closes or DRAIN
    // passes: closing a socket with unread bytes sends a reset, and a reset makes
    // the far kernel drop the end notice before its client reads it.
    let until = Instant::now() + DRAIN;
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, src.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_their_mac_expiry_and_relay() {
        let key = TokenKey::new();
        let pair = [7u8; 12];
        let expires = key.expiry(Duration::from_secs(60));
        let token = key.mint(&pair, expires, "relay-b:7070");
        assert_eq!(key.check(&token, "relay-b:7070").unwrap(), (pair, expires));
        // Good only at the relay it names (§12.3): not at another instance
        // sharing the key, nor at one that names no server.
        assert!(key.check(&token, "relay-a:7070").is_err());
        assert!(key.check(&token, "").is_err());
        let mut forged = token;
        forged[0] ^= 1;
        assert!(key.check(&forged, "relay-b:7070").is_err());
        let mut extended = token;
        extended[15] ^= 0x80;
        assert!(key.check(&extended, "relay-b:7070").is_err());
        let other = TokenKey::new();
        assert!(other.check(&token, "relay-b:7070").is_err());
        let stale = key.mint(&pair, 0, "");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(key.check(&stale, "").is_err());
    }

    #[test]
    fn the_token_mac_is_pinned() {
        // docs/protocol.md §12.3: secret 32 × 0x42, pair id 12 × 0x01, expires
        // 0x01020304, server "relay.example:7070".
        let key = TokenKey::from_secret([0x42; 32]);
        let token = key.mint(&[1; 12], 0x0102_0304, "relay.example:7070");
        assert_eq!(
            hex::encode(token),
            concat!(
                "010101010101010101010101",
                "01020304",
                "deddc207f42e19a25c230a1f8440baa8"
            )
        );
    }

    fn refusal<T>(claim: Claim<'_, T>) -> String {
        match claim {
            Claim::Refused((code, message)) => {
                assert_eq!(code, ErrorCode::RelayRefused);
                message
            }
            Claim::Wait { .. } => panic!("expected a refusal, got Wait"),
            Claim::HandOver(_) => panic!("expected a refusal, got HandOver"),
        }
    }

    #[test]
    fn a_pair_has_one_session_and_its_token_none_after_it() {
        let table = PairTable::<u32>::default();
        // Places end sessions with the real clock: a token good for a minute.
        let now = unix_now();
        let (pair, expires) = ([1; 12], u32::try_from(now + 60).unwrap());
        let Claim::Wait {
            mut handover,
            place,
            slot,
        } = table.claim(pair, expires, 10, now)
        else {
            panic!("the first side waits")
        };
        let Claim::HandOver(tx) = table.claim(pair, expires, 10, now) else {
            panic!("the second side hands over")
        };
        tx.send(2).unwrap();
        assert_eq!(handover.try_recv().unwrap(), 2);
        // Spliced: every further join is refused, and takes no slot.
        for _ in 0..4 {
            let message = refusal(table.claim(pair, expires, 10, now));
            assert!(
                message.contains("already has its relay session"),
                "{message}"
            );
        }
        assert_eq!(table.sessions.load(Ordering::Relaxed), 1);
        // The session ends: refused as ended while the token lives ...
        drop(place);
        drop(slot);
        let message = refusal(table.claim(pair, expires, 10, now));
        assert!(message.contains("session has ended"), "{message}");
        let message = refusal(table.claim(pair, expires, 10, u64::from(expires)));
        assert!(message.contains("session has ended"), "{message}");
        // ... and forgotten once it has expired (the token check refuses it then).
        assert!(matches!(
            table.claim(pair, expires, 10, u64::from(expires) + 1),
            Claim::Wait { .. }
        ));
    }

    #[test]
    fn a_side_that_gives_up_frees_the_pair_for_the_next() {
        let table = PairTable::<u32>::default();
        let (pair, expires, now) = ([2; 12], 1_000, 900);
        let Claim::Wait { place, .. } = table.claim(pair, expires, 10, now) else {
            panic!("waits")
        };
        assert!(place.withdraw());
        let Claim::Wait { place: next, .. } = table.claim(pair, expires, 10, now) else {
            panic!("the next join waits in its place")
        };
        // The first one's place going away leaves the new waiter alone.
        drop(place);
        assert!(matches!(
            table.claim(pair, expires, 10, now),
            Claim::HandOver(_)
        ));
        // A waiter whose handover was taken cannot withdraw: the stream is on
        // its way.
        assert!(!next.withdraw());
    }

    #[test]
    fn the_session_cap_counts_waiting_and_spliced_pairs() {
        let table = PairTable::<u32>::default();
        let Claim::Wait { slot, .. } = table.claim([3; 12], 1_000, 1, 900) else {
            panic!("waits")
        };
        let message = refusal(table.claim([4; 12], 1_000, 1, 900));
        assert!(message.contains("relay is full (1 sessions"), "{message}");
        drop(slot);
        assert!(matches!(
            table.claim([4; 12], 1_000, 1, 900),
            Claim::Wait { .. }
        ));
    }

    #[test]
    fn ended_pairs_are_swept_once_expired() {
        let table = PairTable::<u32>::default();
        let now = unix_now();
        let expires = u32::try_from(now + 60).unwrap();
        for i in 0..MIN_SWEEP as u32 - 1 {
            let mut pair = [0; 12];
            pair[..4].copy_from_slice(&i.to_be_bytes());
            let Claim::Wait { place, .. } = table.claim(pair, expires, usize::MAX, now) else {
                panic!("waits")
            };
            let Claim::HandOver(_) = table.claim(pair, expires, usize::MAX, now) else {
                panic!("hands over")
            };
            drop(place);
        }
        assert_eq!(table.lock().map.len(), MIN_SWEEP - 1);
        // The join that brings the map to the sweep size, after they expired,
        // sweeps them.
        let later = u64::from(expires) + 1;
        let _fresh = table.claim([0xff; 12], u32::MAX, usize::MAX, later);
        assert_eq!(table.lock().map.len(), 1);
    }

    /// The atomic step (issue 22, item 13): two sides claiming one pair at the
    /// same instant from two threads, many times over, always make one waiter
    /// and one handover. With the look-up and the registration under two locks,
    /// both could find the pair empty and wait.
    #[test]
    fn claims_from_many_threads_pair_each_pair_once() {
        const PAIRS: u32 = 100_000;
        let table = PairTable::<u32>::default();
        let go = std::sync::Barrier::new(2);
        let side = |me: u32| {
            let mut waited = Vec::new();
            for i in 0..PAIRS {
                let mut pair = [0; 12];
                pair[..4].copy_from_slice(&i.to_be_bytes());
                go.wait();
                match table.claim(pair, u32::MAX, usize::MAX, 0) {
                    Claim::Wait {
                        handover,
                        place,
                        slot,
                    } => waited.push((i, handover, place, slot)),
                    Claim::HandOver(tx) => tx.send(me).unwrap(),
                    Claim::Refused(why) => panic!("pair {i}: refused {why:?}"),
                }
            }
            waited
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| side(1));
            let b = s.spawn(|| side(2));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a.len() + b.len(), PAIRS as usize, "one waiter per pair");
        for (who, waited) in [(1, a), (2, b)] {
            for (i, mut handover, _place, _slot) in waited {
                assert_eq!(
                    handover.try_recv().ok(),
                    Some(3 - who),
                    "pair {i}: the other side handed over"
                );
            }
        }
    }

    #[test]
    fn bucket_waits_for_what_exceeds_the_rate() {
        let mut bucket = Bucket::default();
        let t0 = Instant::now();
        // A full second's worth is free, the next 500 bytes wait half a second.
        assert_eq!(bucket.take(1000, 1000, t0), Duration::ZERO);
        let wait = bucket.take(500, 1000, t0);
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
    }

    #[test]
    fn slots_are_bounded_and_freed() {
        let n = AtomicUsize::new(0);
        let a = Slot::take(&n, 2).unwrap();
        let _b = Slot::take(&n, 2).unwrap();
        assert!(Slot::take(&n, 2).is_none());
        drop(a);
        assert!(Slot::take(&n, 2).is_some());
    }
}
