//! A loopback TCP proxy that misbehaves on a seeded schedule, for the soak: it
//! cuts every connection at once, or the next one after a few hundred bytes (in
//! the middle of its handshake), delays what it forwards (each chunk, in two
//! writes split at a random point) and stalls the link for seconds, until told to
//! calm down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How often and how hard the proxy misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct Mischief {
    /// Gap between two misdeeds, drawn uniformly.
    pub every: (Duration, Duration),
    /// Length of a stall, drawn uniformly.
    pub stall: (Duration, Duration),
    /// Per-chunk delays to switch between (each misdeed may pick one).
    pub delays_ms: &'static [u64],
    /// Relative odds of each misdeed: cut all, cut and ambush the next
    /// connection, stall, change the delay.
    pub weights: [u32; 4],
}

impl Default for Mischief {
    fn default() -> Mischief {
        Mischief {
            every: (Duration::from_secs(2), Duration::from_secs(9)),
            // Well below the clients' 45 s silence limit: a stall is a slow link,
            // not a dead one.
            stall: (Duration::from_millis(300), Duration::from_secs(6)),
            delays_ms: &[0, 0, 2, 10, 40],
            weights: [3, 1, 3, 3],
        }
    }
}

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct ChaosCounts {
    pub connections: AtomicU64,
    pub cuts: AtomicU64,
    /// Connections cut after their first few hundred bytes.
    pub ambushes: AtomicU64,
    pub stalls: AtomicU64,
    pub delay_changes: AtomicU64,
    pub bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    live: Mutex<Vec<AbortHandle>>,
    stalled_until: Mutex<Option<Instant>>,
    /// Bytes the next connection may carry (both ways) before it is cut.
    ambush: Mutex<Option<u64>>,
    max_delay_ms: AtomicU64,
    calm: AtomicBool,
    counts: ChaosCounts,
}

impl Shared {
    fn cut(&self) {
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A running proxy; it stops with the test's runtime.
pub struct ChaosProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    seed: u64,
}

impl ChaosProxy {
    /// Listens on 127.0.0.1 and forwards each connection to `target`, behaving
    /// well until [`ChaosProxy::unleash`].
    pub async fn start(target: SocketAddr, seed: u64) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        tokio::spawn(async move {
            let mut index = 0u64;
            while let Ok((inbound, _)) = listener.accept().await {
                let connect = TcpStream::connect(target);
                let Ok(Ok(outbound)) = tokio::time::timeout(super::WAIT, connect).await else {
                    continue;
                };
                state.counts.connections.fetch_add(1, Ordering::Relaxed);
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let rng = |dir: u64| StdRng::seed_from_u64(seed ^ (index << 1 | dir));
                let budget = Arc::new(AtomicU64::new(
                    state.ambush.lock().unwrap().take().unwrap_or(u64::MAX),
                ));
                let up = tokio::spawn(pump(ri, wo, state.clone(), rng(0), budget.clone()));
                let down = tokio::spawn(pump(ro, wi, state.clone(), rng(1), budget));
                index += 1;
                let mut live = state.live.lock().unwrap();
                // Finished pumps leave their handles behind until the next cut.
                live.retain(|t| !t.is_finished());
                live.extend([up.abort_handle(), down.abort_handle()]);
            }
        });
        ChaosProxy { addr, shared, seed }
    }

    /// Starts misbehaving: a misdeed every `every`, drawn from an RNG seeded
    /// with this proxy's seed, until [`ChaosProxy::calm`].
    pub fn unleash(&self, mischief: Mischief) {
        let shared = self.shared.clone();
        let mut rng = StdRng::seed_from_u64(self.seed);
        shared.calm.store(false, Ordering::Relaxed);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(rng.gen_range(mischief.every.0..=mischief.every.1)).await;
                if shared.calm.load(Ordering::Relaxed) {
                    return;
                }
                let [cut, ambush, stall, _] = mischief.weights;
                let roll = rng.gen_range(0..mischief.weights.iter().sum::<u32>().max(1));
                match roll {
                    r if r < cut => {
                        shared.counts.cuts.fetch_add(1, Ordering::Relaxed);
                        shared.cut();
                    }
                    r if r < cut + ambush => {
                        // Then cut the current one, so the next comes soon.
                        *shared.ambush.lock().unwrap() = Some(rng.gen_range(1..1500));
                        shared.counts.cuts.fetch_add(1, Ordering::Relaxed);
                        shared.cut();
                    }
                    r if r < cut + ambush + stall => {
                        let len = rng.gen_range(mischief.stall.0..=mischief.stall.1);
                        shared.counts.stalls.fetch_add(1, Ordering::Relaxed);
                        *shared.stalled_until.lock().unwrap() = Some(Instant::now() + len);
                    }
                    _ => {
                        let delay = mischief.delays_ms[rng.gen_range(0..mischief.delays_ms.len())];
                        shared.counts.delay_changes.fetch_add(1, Ordering::Relaxed);
                        shared.max_delay_ms.store(delay, Ordering::Relaxed);
                    }
                }
            }
        });
    }

    /// Stops misbehaving: no more cuts, stalls end, no delay.
    pub fn calm(&self) {
        self.shared.calm.store(true, Ordering::Relaxed);
        self.shared.max_delay_ms.store(0, Ordering::Relaxed);
        *self.shared.stalled_until.lock().unwrap() = None;
    }

    /// Cuts the next connection once it has carried `bytes` (both ways together).
    pub fn ambush_next(&self, bytes: u64) {
        *self.shared.ambush.lock().unwrap() = Some(bytes);
    }

    /// Cuts every connection in flight now.
    pub fn cut(&self) {
        self.shared.counts.cuts.fetch_add(1, Ordering::Relaxed);
        self.shared.cut();
    }

    pub fn counts(&self) -> &ChaosCounts {
        &self.shared.counts
    }
}

/// Forwards one direction, waiting out stalls and delays before each write; once
/// the connection's `budget` (both directions) is spent, cuts it mid-chunk.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    shared: Arc<Shared>,
    mut rng: StdRng,
    budget: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        loop {
            let until = *shared.stalled_until.lock().unwrap();
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        let max = shared.max_delay_ms.load(Ordering::Relaxed);
        if max > 0 {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=max))).await;
        }
        let left = budget.fetch_sub(n as u64, Ordering::Relaxed);
        if left <= n as u64 {
            let _ = to.write_all(&buf[..left as usize]).await;
            shared.counts.ambushes.fetch_add(1, Ordering::Relaxed);
            shared.cut();
            return;
        }
        let split = rng.gen_range(0..=n);
        if to.write_all(&buf[..split]).await.is_err() || to.write_all(&buf[split..n]).await.is_err()
        {
            break;
        }
        shared.counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}
