//! How far a transfer is: bytes, rate over a sliding window, time left, reported
//! at most about four times a second so a fast transfer does not flood the screen
//! or the `--json` reader.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::events::Event;

/// Least time between two reports.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The rate is measured over about this much recent time.
const WINDOW: Duration = Duration::from_secs(3);
/// Samples kept for the window (one per report, so ~12 in use).
const MAX_SAMPLES: usize = 32;

/// One snapshot, ready to become a [`crate::events::Event::Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressReport {
    pub bytes: u64,
    pub total: u64,
    /// Bytes per second over the last few seconds (0 until measurable).
    pub rate_bps: u64,
    /// Seconds left at that rate; `None` while the rate is unknown.
    pub eta_secs: Option<u64>,
}

impl ProgressReport {
    /// The `progress` event for transfer `id`; `direction` is `send` or `receive`.
    pub fn event(&self, id: u64, direction: &str, name: &str) -> Event {
        Event::Progress {
            id,
            direction: direction.to_string(),
            name: name.to_string(),
            bytes: self.bytes,
            total: self.total,
            rate_bps: self.rate_bps,
            eta_secs: self.eta_secs,
        }
    }
}

/// Progress of one transfer. Call [`Progress::advance`] per chunk (cheap) and
/// [`Progress::poll`] as often as convenient; it answers only when a report is due.
#[derive(Debug, Clone)]
pub struct Progress {
    total: u64,
    bytes: u64,
    samples: VecDeque<(Instant, u64)>,
    last_report: Option<Instant>,
    reported_done: bool,
}

impl Progress {
    /// A transfer of `total` bytes that already has `start` (a resume offset).
    pub fn new(total: u64, start: u64, now: Instant) -> Progress {
        let mut samples = VecDeque::with_capacity(MAX_SAMPLES);
        samples.push_back((now, start.min(total)));
        Progress {
            total,
            bytes: start.min(total),
            samples,
            last_report: None,
            reported_done: false,
        }
    }

    /// `n` more bytes moved.
    pub fn advance(&mut self, n: u64) {
        self.bytes = self.bytes.saturating_add(n).min(self.total);
    }

    /// Bytes moved so far (including a resume offset).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A report if one is due: the first call, then at most every
    /// [`PROGRESS_EVERY`], and always once when the transfer completes.
    pub fn poll(&mut self, now: Instant) -> Option<ProgressReport> {
        let done = self.bytes >= self.total;
        let due = match self.last_report {
            None => true,
            Some(at) => now.saturating_duration_since(at) >= PROGRESS_EVERY,
        };
        if !(due || (done && !self.reported_done)) {
            return None;
        }
        self.last_report = Some(now);
        self.reported_done |= done;
        self.samples.push_back((now, self.bytes));
        while self.samples.len() > MAX_SAMPLES
            || (self.samples.len() > 2
                && self
                    .samples
                    .get(1)
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= WINDOW))
        {
            self.samples.pop_front();
        }
        Some(self.report(now))
    }

    /// A report now, due or not.
    pub fn report(&self, now: Instant) -> ProgressReport {
        let rate_bps = match self.samples.front() {
            Some(&(t0, b0)) => {
                let secs = now.saturating_duration_since(t0).as_secs_f64();
                if secs >= 0.05 {
                    (self.bytes.saturating_sub(b0) as f64 / secs) as u64
                } else {
                    0
                }
            }
            None => 0,
        };
        let left = self.total - self.bytes;
        let eta_secs = if left == 0 {
            Some(0)
        } else if rate_bps > 0 {
            Some(left.div_ceil(rate_bps))
        } else {
            None
        };
        ProgressReport {
            bytes: self.bytes,
            total: self.total,
            rate_bps,
            eta_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_rate_limited_and_measure_the_rate() {
        let t0 = Instant::now();
        let mut p = Progress::new(1_000_000, 0, t0);
        let first = p.poll(t0).unwrap();
        assert_eq!((first.bytes, first.rate_bps, first.eta_secs), (0, 0, None));
        p.advance(100_000);
        assert!(
            p.poll(t0 + Duration::from_millis(100)).is_none(),
            "too soon"
        );
        let r = p.poll(t0 + Duration::from_millis(500)).unwrap();
        assert_eq!(r.bytes, 100_000);
        assert_eq!(r.rate_bps, 200_000);
        assert_eq!(r.eta_secs, Some(5));
        // 10 s later at a new pace: the old samples have left the window.
        let mut t = t0 + Duration::from_millis(500);
        for _ in 0..40 {
            t += Duration::from_millis(250);
            p.advance(10_000);
            p.poll(t);
        }
        let r = p.report(t);
        assert!((38_000..=42_000).contains(&r.rate_bps), "{r:?}");
    }

    #[test]
    fn completion_is_always_reported_once() {
        let t0 = Instant::now();
        let mut p = Progress::new(10, 4, t0);
        assert_eq!(p.bytes(), 4);
        assert!(p.poll(t0).is_some());
        p.advance(100);
        let r = p.poll(t0 + Duration::from_millis(1)).unwrap();
        assert_eq!((r.bytes, r.total, r.eta_secs), (10, 10, Some(0)));
        assert!(p.poll(t0 + Duration::from_millis(2)).is_none());
        let e = r.event(7, "receive", "x");
        assert!(matches!(
            e,
            Event::Progress {
                id: 7,
                bytes: 10,
                ..
            }
        ));
    }

    #[test]
    fn empty_file_is_done_at_once() {
        let t0 = Instant::now();
        let mut p = Progress::new(0, 0, t0);
        let r = p.poll(t0).unwrap();
        assert_eq!((r.bytes, r.total, r.eta_secs), (0, 0, Some(0)));
    }
}
