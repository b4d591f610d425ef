//! Per-address and per-network limits: open connections and a token bucket of
//! `Hello`s, docs/protocol.md §4. IPv4 addresses count one by one. IPv6 addresses
//! count by /64, since one host usually owns a whole /64 and could otherwise dodge
//! every limit, and also in aggregate by /56 and /48: a site gets a /48 (65 536
//! /64s) or a /56 (256), so without the aggregates one network could fill the
//! global connection and room caps by using a fresh /64 for every connection.
//!
//! The `Hello` rate is limited at the same three levels, each its own bucket, and
//! a `Hello` must find a token in every bucket of its address. Spreading over the
//! /64s of a /48 therefore buys at most the /48's bucket (by default 16 times one
//! /64's rate, the same factor as its connection cap), not 65 536 times.
//!
//! IPv4 has no aggregate: one IPv4 address is already what a site behind a NAT
//! shares, and neighbouring IPv4 addresses often belong to strangers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

use crate::metrics::Limit;

/// The unit the narrowest limit counts: an IPv4 address or an IPv6 /64. The
/// wider IPv6 networks it lies in follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    /// The key of `ip` (call it with v4-mapped addresses already unmapped).
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(_) => AddrKey(ip),
            IpAddr::V6(v6) => AddrKey(IpAddr::V6(mask(v6, 64))),
        }
    }

    /// Every scope this key counts in, narrowest first, with the network's key.
    fn scopes(self) -> impl Iterator<Item = (Scope, IpAddr)> {
        let wider = match self.0 {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => Some([
                (Scope::Net56, IpAddr::V6(mask(v6, 56))),
                (Scope::Net48, IpAddr::V6(mask(v6, 48))),
            ]),
        };
        std::iter::once((Scope::Address, self.0)).chain(wider.into_iter().flatten())
    }
}

/// `192.0.2.7`, or `2001:db8:1:2::/64`: one key, one text (the group member cap
/// compares it across instances, §19.7).
impl std::fmt::Display for AddrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

fn mask(v6: Ipv6Addr, prefix: u32) -> Ipv6Addr {
    let bits = u128::from(v6) & !(u128::MAX >> prefix);
    Ipv6Addr::from(bits)
}

/// Which of the nested limits an address ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One IPv4 address or one IPv6 /64 (`--per-ip-*`).
    Address,
    /// The IPv6 /56 around it (`--per-56-*`).
    Net56,
    /// The IPv6 /48 around it (`--per-48-*`).
    Net48,
}

impl Scope {
    const ALL: [Scope; 3] = [Scope::Address, Scope::Net56, Scope::Net48];

    fn index(self) -> usize {
        match self {
            Scope::Address => 0,
            Scope::Net56 => 1,
            Scope::Net48 => 2,
        }
    }
}

/// The two limits of one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Most connections open at once.
    pub connections: u32,
    /// `Hello`s per minute (the bucket's size; it refills evenly over a minute).
    pub hellos_per_min: u32,
}

/// The caps of every scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitCaps {
    /// Per IPv4 address or IPv6 /64.
    pub address: Caps,
    /// Per IPv6 /56, all its /64s together.
    pub net56: Caps,
    /// Per IPv6 /48, all its /64s together.
    pub net48: Caps,
}

impl LimitCaps {
    fn of(&self, scope: Scope) -> Caps {
        match scope {
            Scope::Address => self.address,
            Scope::Net56 => self.net56,
            Scope::Net48 => self.net48,
        }
    }
}

/// One address's or network's state.
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

/// Why an address was turned away, and by which scope's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The scope has its connection cap open already.
    Connections(Scope),
    /// The scope's `Hello` bucket is empty.
    Hellos(Scope),
}

impl Refused {
    /// The metrics label of the limit.
    pub fn limit(self) -> Limit {
        match self {
            Refused::Connections(Scope::Address) => Limit::PerIpConnections,
            Refused::Connections(Scope::Net56) => Limit::Per56Connections,
            Refused::Connections(Scope::Net48) => Limit::Per48Connections,
            Refused::Hellos(Scope::Address) => Limit::PerIpHellos,
            Refused::Hellos(Scope::Net56) => Limit::Per56Hellos,
            Refused::Hellos(Scope::Net48) => Limit::Per48Hellos,
        }
    }

    /// The `Error{TooManyConnections}` text: which limit, and what to do.
    pub fn message(self) -> &'static str {
        const TEXTS: [[&str; 3]; 2] = [
            [
                "too many connections from your address",
                "too many connections from your network (IPv6 /56)",
                "too many connections from your network (IPv6 /48)",
            ],
            [
                "too many Hellos from your address; wait a minute",
                "too many Hellos from your network (IPv6 /56); wait a minute",
                "too many Hellos from your network (IPv6 /48); wait a minute",
            ],
        ];
        match self {
            Refused::Connections(scope) => TEXTS[0][scope.index()],
            Refused::Hellos(scope) => TEXTS[1][scope.index()],
        }
    }

    /// The scope whose limit refused.
    pub fn scope(self) -> Scope {
        match self {
            Refused::Connections(scope) | Refused::Hellos(scope) => scope,
        }
    }
}

/// Usage of every address and network with an open connection or a bucket not
/// yet full again.
#[derive(Debug)]
pub struct AddrLimits {
    usage: Mutex<HashMap<(Scope, IpAddr), Usage>>,
    caps: LimitCaps,
    /// The map is swept of idle entries when it grows past this (amortized O(1)).
    sweep_at: Mutex<usize>,
}

/// The smallest map size that triggers a sweep.
const MIN_SWEEP_AT: usize = 1024;

impl AddrLimits {
    /// Limits with these caps.
    pub fn new(caps: LimitCaps) -> AddrLimits {
        AddrLimits {
            usage: Mutex::new(HashMap::new()),
            caps,
            sweep_at: Mutex::new(MIN_SWEEP_AT),
        }
    }

    fn capacity(&self, scope: Scope) -> f64 {
        f64::from(self.caps.of(scope).hellos_per_min)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(Scope, IpAddr), Usage>> {
        // Every critical section is a few field updates: a poisoned lock is consistent.
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `key` in every scope, unless one of them has
    /// its cap open already (then nothing is counted). The narrowest full scope
    /// is the one reported.
    pub fn connect(&self, key: AddrKey) -> Result<(), Refused> {
        let now = Instant::now();
        let mut usage = self.lock();
        self.maybe_sweep(&mut usage, now);
        for (scope, net) in key.scopes() {
            let open = usage.get(&(scope, net)).map_or(0, |u| u.connections);
            if open >= self.caps.of(scope).connections {
                return Err(Refused::Connections(scope));
            }
        }
        for (scope, net) in key.scopes() {
            let capacity = self.capacity(scope);
            let entry = usage.entry((scope, net)).or_insert(Usage {
                connections: 0,
                tokens: capacity,
                refilled: now,
            });
            entry.connections += 1;
        }
        Ok(())
    }

    /// Takes one `Hello` token from each of `key`'s buckets, or none if one of
    /// them is empty.
    pub fn hello(&self, key: AddrKey) -> Result<(), Refused> {
        let now = Instant::now();
        let mut usage = self.lock();
        for (scope, net) in key.scopes() {
            let capacity = self.capacity(scope);
            // Only connected addresses send hellos; a missing entry is a bug
            // elsewhere, and refusing would punish the client for it.
            if let Some(entry) = usage.get_mut(&(scope, net)) {
                entry.refill(now, capacity);
                if entry.tokens < 1.0 {
                    return Err(Refused::Hellos(scope));
                }
            }
        }
        for (scope, net) in key.scopes() {
            if let Some(entry) = usage.get_mut(&(scope, net)) {
                entry.tokens -= 1.0;
            }
        }
        Ok(())
    }

    /// Counts a connection from `key` as closed in every scope. An entry stays
    /// while its bucket is refilling, so closing and reconnecting does not reset it.
    pub fn disconnect(&self, key: AddrKey) {
        let now = Instant::now();
        let mut usage = self.lock();
        for (scope, net) in key.scopes() {
            let capacity = self.capacity(scope);
            if let Some(entry) = usage.get_mut(&(scope, net)) {
                entry.connections = entry.connections.saturating_sub(1);
                entry.refill(now, capacity);
                if entry.connections == 0 && entry.tokens >= capacity {
                    usage.remove(&(scope, net));
                }
            }
        }
    }

    /// Connections open in `key`'s `scope` (for tests and diagnostics).
    pub fn open_in(&self, key: AddrKey, scope: Scope) -> u32 {
        let usage = self.lock();
        key.scopes()
            .find(|(s, _)| *s == scope)
            .and_then(|k| usage.get(&k).map(|u| u.connections))
            .unwrap_or(0)
    }

    /// How many addresses and networks are tracked.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn maybe_sweep(&self, usage: &mut HashMap<(Scope, IpAddr), Usage>, now: Instant) {
        let mut sweep_at = self.sweep_at.lock().unwrap_or_else(|p| p.into_inner());
        if usage.len() < *sweep_at {
            return;
        }
        let capacities = Scope::ALL.map(|s| self.capacity(s));
        usage.retain(|(scope, _), entry| {
            let capacity = capacities[scope.index()];
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

    fn caps(connections: u32, hellos_per_min: u32) -> LimitCaps {
        let c = Caps {
            connections,
            hellos_per_min,
        };
        LimitCaps {
            address: c,
            net56: c,
            net48: c,
        }
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:1"));
        assert_ne!(key("2001:db8:0:1::1"), key("2001:db8::1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
    }

    #[test]
    fn masks() {
        let ip: Ipv6Addr = "2001:db8:abcd:12ff:1:2:3:4".parse().unwrap();
        assert_eq!(
            mask(ip, 64),
            "2001:db8:abcd:12ff::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            mask(ip, 56),
            "2001:db8:abcd:1200::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(mask(ip, 48), "2001:db8:abcd::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(key("10.0.0.1").scopes().count(), 1);
        assert_eq!(key("2001:db8::1").scopes().count(), 3);
    }

    #[test]
    fn connection_limit() {
        let limits = AddrLimits::new(caps(2, 10));
        let k = key("10.0.0.1");
        assert!(limits.connect(k).is_ok());
        assert!(limits.connect(k).is_ok());
        assert_eq!(limits.connect(k), Err(Refused::Connections(Scope::Address)));
        assert!(limits.connect(key("10.0.0.2")).is_ok());
        limits.disconnect(k);
        assert!(limits.connect(k).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn hello_bucket_refills() {
        let limits = AddrLimits::new(caps(10, 60));
        let k = key("10.0.0.1");
        limits.connect(k).unwrap();
        for _ in 0..60 {
            assert!(limits.hello(k).is_ok());
        }
        assert_eq!(limits.hello(k), Err(Refused::Hellos(Scope::Address)));
        // Reconnecting does not reset the bucket.
        limits.disconnect(k);
        limits.connect(k).unwrap();
        assert_eq!(limits.hello(k), Err(Refused::Hellos(Scope::Address)));
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(limits.hello(k).is_ok());
        assert_eq!(limits.hello(k), Err(Refused::Hellos(Scope::Address)));
        // A full bucket with no connection is forgotten.
        tokio::time::advance(Duration::from_secs(120)).await;
        limits.disconnect(k);
        assert_eq!(limits.tracked(), 0);
    }
}
