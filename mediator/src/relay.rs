//! The relay of last resort (docs/protocol.md §12.3): two clients that found no
//! direct path each open a new connection, present the token their `Matched`
//! carried, and get their byte streams spliced. The relay checks frame lengths
//! and its caps (bytes, rate, idle, sessions) and parses nothing else: it never
//! holds a key, and the peer handshake and records pass through unchanged.

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

/// The label of the token MAC (docs/protocol.md §12.3).
const TOKEN_LABEL: &[u8] = b"p2pchat/v2/relay-token";
/// A `RelayReady` or end notice must be written within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an ended session keeps reading (and discarding) so its close is a
/// FIN, not a reset that would destroy the end notice in flight.
const DRAIN: Duration = Duration::from_secs(2);

/// A refusal: the code and message of the `Error` the client gets.
pub(crate) type Refusal = (ErrorCode, String);

/// Mints and checks relay tokens: `pair_id (12) || expires (u32 BE, Unix seconds)
/// || HMAC-SHA256(secret, label || pair_id || expires)[..16]`. Stateless until a
/// client presents one, so a match costs the relay nothing. Mediators sharing a
/// Redis share the secret (docs/protocol.md §18.5): the host's mediator mints the
/// same token for its client that the relay's mediator minted for the joiner.
pub(crate) struct TokenKey {
    secret: [u8; 32],
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
        TokenKey { secret }
    }

    /// The expiry stamp for a token minted now and good for `ttl`.
    pub(crate) fn expiry(&self, ttl: Duration) -> u32 {
        u32::try_from(unix_now().saturating_add(ttl.as_secs())).unwrap_or(u32::MAX)
    }

    fn mac(&self, pair_id: &[u8; 12], expires: u32) -> [u8; 16] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(TOKEN_LABEL);
        mac.update(pair_id);
        mac.update(&expires.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// The token both sides of pair `pair_id` get.
    pub(crate) fn mint(&self, pair_id: &[u8; 12], expires: u32) -> [u8; 32] {
        let mut token = [0u8; 32];
        token[..12].copy_from_slice(pair_id);
        token[12..16].copy_from_slice(&expires.to_be_bytes());
        token[16..].copy_from_slice(&self.mac(pair_id, expires));
        token
    }

    /// The pair a token names, if it is ours and still good.
    pub(crate) fn check(&self, token: &[u8; 32]) -> Result<[u8; 12], Refusal> {
        let mut pair_id = [0u8; 12];
        pair_id.copy_from_slice(&token[..12]);
        let expires = u32::from_be_bytes([token[12], token[13], token[14], token[15]]);
        if !bool::from(self.mac(&pair_id, expires).ct_eq(&token[16..])) {
            return Err((
                ErrorCode::RelayRefused,
                "this relay token was not issued here (or the mediator restarted, or \
                 the mediators behind this address do not share --relay-secret); \
                 reconnect through the mediator"
                    .into(),
            ));
        }
        if unix_now() > u64::from(expires) {
            return Err((
                ErrorCode::RelayRefused,
                "this relay token has expired; reconnect through the mediator".into(),
            ));
        }
        Ok(pair_id)
    }
}

/// One side's relay connection, waiting for or handed to the other side's task.
struct Half {
    stream: TcpStream,
    /// Keeps the connection counted against the limits while it is spliced.
    _admitted: Admitted,
}

/// Relay connections waiting for their second side, and the session count.
#[derive(Default)]
pub(crate) struct RelayTable {
    waiting: Mutex<HashMap<[u8; 12], oneshot::Sender<Half>>>,
    /// Sessions spliced or waiting for their second side.
    sessions: AtomicUsize,
}

impl std::fmt::Debug for RelayTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayTable")
            .field("sessions", &self.sessions.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RelayTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 12], oneshot::Sender<Half>>> {
        // Each critical section is one map call: a poisoned lock is still consistent.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Holds one session slot; frees it when dropped.
struct Slot<'a>(&'a AtomicUsize);

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
    let Err(((code, message), mut half)) = pair_up(&shared, half, token).await else {
        return;
    };
    shared.metrics.relay_refused();
    shared.metrics.error(code);
    tracing::debug!(code = code.as_str(), "relay join refused");
    if let Some(frame) = crate::connection::error_frame(code, &message) {
        let _ = timeout(WRITE_TIMEOUT, half.stream.write_all(&frame)).await;
    }
}

async fn pair_up(
    shared: &Arc<Shared>,
    mut half: Half,
    token: [u8; 32],
) -> Result<(), (Refusal, Half)> {
    if !shared.config.relay {
        let why = (
            ErrorCode::RelayRefused,
            "this mediator runs with --relay off".to_owned(),
        );
        return Err((why, half));
    }
    let pair_id = match shared.tokens.check(&token) {
        Ok(id) => id,
        Err(why) => return Err((why, half)),
    };
    // The second side: hand over and leave. A first side that just gave up has
    // dropped its receiver; then this side waits in its place.
    let waiting = shared.relay.lock().remove(&pair_id);
    if let Some(first) = waiting {
        match first.send(half) {
            Ok(()) => return Ok(()),
            Err(back) => half = back,
        }
    }
    let Some(_slot) = Slot::take(&shared.relay.sessions, shared.config.relay_max_sessions) else {
        let why = (
            ErrorCode::RelayRefused,
            "the relay is full; try again later".to_owned(),
        );
        return Err((why, half));
    };
    let (tx, rx) = oneshot::channel();
    shared.relay.lock().insert(pair_id, tx);
    let wait = shared.config.relay_token_ttl;
    let second = tokio::select! {
        got = timeout(wait, rx) => got,
        _ = shared.cancel.cancelled() => {
            shared.relay.lock().remove(&pair_id);
            let why = (ErrorCode::ShuttingDown, "the mediator is shutting down".to_owned());
            return Err((why, half));
        }
    };
    let Ok(Ok(second)) = second else {
        // Ours is the entry whose receiver is gone; a second side that lost the
        // race may have put its own (open) one there since.
        let mut map = shared.relay.lock();
        if map.get(&pair_id).is_some_and(|tx| tx.is_closed()) {
            map.remove(&pair_id);
        }
        drop(map);
        let why = (
            ErrorCode::RelayRefused,
            format!(
                "the peer did not come to the relay within {}s",
                wait.as_secs()
            ),
        );
        return Err((why, half));
    };
    splice(shared, half, second).await;
    Ok(())
}

/// Why a relay session stopped, if the relay stopped it.
#[derive(Default)]
struct Session {
    stop: CancellationToken,
    reason: Mutex<Option<Refusal>>,
    bytes: AtomicU64,
    /// Milliseconds since `start` of the last forwarded frame, either direction.
    last_active_ms: AtomicU64,
    bucket: Mutex<Bucket>,
}

impl Session {
    fn end(&self, code: ErrorCode, message: String) {
        let mut reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        reason.get_or_insert((code, message));
        self.stop.cancel();
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

async fn splice(shared: &Arc<Shared>, mut a: Half, mut b: Half) {
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
    let session = Session::default();
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
    session: &Session,
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
                    session.stop.cancel();
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
                session.stop.cancel();
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
                session.stop.cancel();
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
    fn tokens_check_their_mac_and_expiry() {
        let key = TokenKey::new();
        let pair = [7u8; 12];
        let token = key.mint(&pair, key.expiry(Duration::from_secs(60)));
        assert_eq!(key.check(&token).unwrap(), pair);
        let mut forged = token;
        forged[0] ^= 1;
        assert!(key.check(&forged).is_err());
        let mut extended = token;
        extended[15] ^= 0x80;
        assert!(key.check(&extended).is_err());
        let other = TokenKey::new();
        assert!(other.check(&token).is_err());
        let stale = key.mint(&pair, 0);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(key.check(&stale).is_err());
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
