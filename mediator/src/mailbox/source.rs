//! The mailbox's per-source cap (docs/protocol.md §22.3): bytes one IPv4
//! address or IPv6 /64 may add per hour, a token bucket per source refilled
//! evenly over the hour. Kept in this process's memory only, so no store ever
//! holds a source address; mediators sharing a Redis each count their own.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::limits::AddrKey;

/// The window the cap is per.
const WINDOW: Duration = Duration::from_secs(3600);
/// The smallest map size that triggers a sweep of full buckets.
const MIN_SWEEP_AT: usize = 1024;

#[derive(Debug)]
struct Bucket {
    /// Bytes this source may still add.
    tokens: f64,
    refilled: Instant,
}

/// The buckets of every source that added within the last hour.
#[derive(Debug)]
pub(crate) struct SourceBytes {
    per_hour: f64,
    buckets: Mutex<(HashMap<AddrKey, Bucket>, usize)>,
}

impl SourceBytes {
    pub(crate) fn new(per_hour: u64) -> SourceBytes {
        SourceBytes {
            per_hour: per_hour as f64,
            buckets: Mutex::new((HashMap::new(), MIN_SWEEP_AT)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (HashMap<AddrKey, Bucket>, usize)> {
        // Every critical section is a few field updates: a poisoned lock is consistent.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.refilled);
        bucket.tokens = (bucket.tokens
            + elapsed.as_secs_f64() * self.per_hour / WINDOW.as_secs_f64())
        .min(self.per_hour);
        bucket.refilled = now;
    }

    /// Takes `bytes` from `source`'s bucket if it holds them (all or nothing).
    pub(crate) fn reserve(&self, source: AddrKey, bytes: u64) -> bool {
        let now = Instant::now();
        let mut guard = self.lock();
        let (buckets, sweep_at) = &mut *guard;
        if buckets.len() >= *sweep_at {
            buckets.retain(|_, b| {
                self.refill(b, now);
                b.tokens < self.per_hour
            });
            *sweep_at = (buckets.len() * 2).max(MIN_SWEEP_AT);
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: self.per_hour,
            refilled: now,
        });
        self.refill(bucket, now);
        let bytes = bytes as f64;
        if bucket.tokens < bytes {
            return false;
        }
        bucket.tokens -= bytes;
        true
    }

    /// Gives back what [`SourceBytes::reserve`] took for bytes that were not
    /// stored after all (a retry, a refusal).
    pub(crate) fn refund(&self, source: AddrKey, bytes: u64) {
        let mut guard = self.lock();
        if let Some(bucket) = guard.0.get_mut(&source) {
            bucket.tokens = (bucket.tokens + bytes as f64).min(self.per_hour);
        }
    }

    /// Sources tracked now (tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AddrKey {
        AddrKey::of(s.parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_adds_its_bytes_per_hour_and_a_64_counts_as_one() {
        let sources = SourceBytes::new(1000);
        assert!(sources.reserve(key("2001:db8::1"), 600));
        assert!(!sources.reserve(key("2001:db8::2"), 600), "same /64");
        assert!(sources.reserve(key("2001:db8:0:1::1"), 600), "another /64");
        sources.refund(key("2001:db8::1"), 600);
        assert!(sources.reserve(key("2001:db8::3"), 1000));
        assert!(!sources.reserve(key("2001:db8::3"), 1));
        // A tenth of the hour brings a tenth of the bytes back.
        tokio::time::advance(WINDOW / 10).await;
        assert!(sources.reserve(key("2001:db8::3"), 100));
        assert!(!sources.reserve(key("2001:db8::3"), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn full_buckets_are_forgotten() {
        let sources = SourceBytes::new(1000);
        for i in 0..MIN_SWEEP_AT as u32 {
            assert!(sources.reserve(AddrKey::of(std::net::Ipv4Addr::from(i).into()), 10));
        }
        tokio::time::advance(WINDOW).await;
        assert!(sources.reserve(key("192.0.2.1"), 10));
        assert_eq!(sources.tracked(), 1);
    }
}
