//! Per-address limits: open connections and a token bucket of `Hello`s. IPv4
//! addresses count one by one; IPv6 addresses by /64, since one host usually owns
//! a whole /64 and could otherwise dodge every limit.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// The unit a per-address limit counts: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    /// The key of `ip` (call it with v4-mapped addresses already unmapped).
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(_) => AddrKey(ip),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                AddrKey(IpAddr::V6(Ipv6Addr::from(bits)))
            }
        }
    }
}

/// One address's state.
#[derive(Debug)]
struct Usage {
    connections: u32,
    /// Hellos left, refilled continuously at `capacity` per minute.
    tokens: f64,
    refilled: Instant,
}

impl Usage {
    fn refill(&mut self, now: Instant, capacity: f64) {
        let per_sec = capacity / 60.0;
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(capacity);
        self.refilled = now;
    }
}

/// Why an address was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It has `per_ip_connections` open already.
    Connections,
    /// Its `Hello` bucket is empty.
    Hellos,
}

/// Usage of every address with an open connection or a bucket not yet full again.
#[derive(Debug)]
pub struct AddrLimits {
    usage: Mutex<HashMap<AddrKey, Usage>>,
    per_ip_connections: u32,
    hello_capacity: f64,
    /// The map is swept of idle entries when it grows past this (amortized O(1)).
    sweep_at: Mutex<usize>,
}

/// The smallest map size that triggers a sweep.
const MIN_SWEEP_AT: usize = 1024;

impl AddrLimits {
    /// Limits of `per_ip_connections` open connections and `hellos_per_min` hellos.
    pub fn new(per_ip_connections: u32, hellos_per_min: u32) -> AddrLimits {
        AddrLimits {
            usage: Mutex::new(HashMap::new()),
            per_ip_connections,
            hello_capacity: f64::from(hellos_per_min),
            sweep_at: Mutex::new(MIN_SWEEP_AT),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AddrKey, Usage>> {
        // Every critical section is a few field updates: a poisoned lock is consistent.
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `key`, unless it has too many open.
    pub fn connect(&self, key: AddrKey) -> Result<(), Refused> {
        let now = Instant::now();
        let mut usage = self.lock();
        self.maybe_sweep(&mut usage, now);
        let entry = usage.entry(key).or_insert(Usage {
            connections: 0,
            tokens: self.hello_capacity,
            refilled: now,
        });
        if entry.connections >= self.per_ip_connections {
            return Err(Refused::Connections);
        }
        entry.connections += 1;
        Ok(())
    }

    /// Takes one `Hello` token from `key`'s bucket.
    pub fn hello(&self, key: AddrKey) -> Result<(), Refused> {
        let now = Instant::now();
        let mut usage = self.lock();
        let Some(entry) = usage.get_mut(&key) else {
            // Only connected addresses send hellos; a missing entry is a bug
            // elsewhere, and refusing would punish the client for it.
            return Ok(());
        };
        entry.refill(now, self.hello_capacity);
        if entry.tokens < 1.0 {
            return Err(Refused::Hellos);
        }
        entry.tokens -= 1.0;
        Ok(())
    }

    /// Counts a connection from `key` as closed. The entry stays while its bucket
    /// is refilling, so closing and reconnecting does not reset the bucket.
    pub fn disconnect(&self, key: AddrKey) {
        let now = Instant::now();
        let mut usage = self.lock();
        if let Some(entry) = usage.get_mut(&key) {
            entry.connections = entry.connections.saturating_sub(1);
            entry.refill(now, self.hello_capacity);
            if entry.connections == 0 && entry.tokens >= self.hello_capacity {
                usage.remove(&key);
            }
        }
    }

    /// How many addresses are tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn maybe_sweep(&self, usage: &mut HashMap<AddrKey, Usage>, now: Instant) {
        let mut sweep_at = self.sweep_at.lock().unwrap_or_else(|p| p.into_inner());
        if usage.len() < *sweep_at {
            return;
        }
        let capacity = self.hello_capacity;
        usage.retain(|_, entry| {
            entry.refill(now, capacity);
            entry.connections > 0 || entry.tokens < capacity
        });
        *sweep_at = (usage.len() * 2).max(MIN_SWEEP_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(s: &str) -> AddrKey {
        AddrKey::of(s.parse().unwrap())
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:1"));
        assert_ne!(key("2001:db8:0:1::1"), key("2001:db8::1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
    }

    #[test]
    fn connection_limit() {
        let limits = AddrLimits::new(2, 10);
        let k = key("10.0.0.1");
        assert!(limits.connect(k).is_ok());
        assert!(limits.connect(k).is_ok());
        assert_eq!(limits.connect(k), Err(Refused::Connections));
        assert!(limits.connect(key("10.0.0.2")).is_ok());
        limits.disconnect(k);
        assert!(limits.connect(k).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn hello_bucket_refills() {
        let limits = AddrLimits::new(10, 60);
        let k = key("10.0.0.1");
        limits.connect(k).unwrap();
        for _ in 0..60 {
            assert!(limits.hello(k).is_ok());
        }
        assert_eq!(limits.hello(k), Err(Refused::Hellos));
        // Reconnecting does not reset the bucket.
        limits.disconnect(k);
        limits.connect(k).unwrap();
        assert_eq!(limits.hello(k), Err(Refused::Hellos));
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(limits.hello(k).is_ok());
        assert_eq!(limits.hello(k), Err(Refused::Hellos));
        // A full bucket with no connection is forgotten.
        tokio::time::advance(Duration::from_secs(120)).await;
        limits.disconnect(k);
        assert_eq!(limits.tracked(), 0);
    }
}
