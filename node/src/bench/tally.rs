//! What a run counts: records and payload bytes measured, a latency histogram over the whole
//! run and one per second (for the plot), and the time the measurement window took.
//!
//! Latencies are kept in microseconds from 1 µs to 10 minutes at 3 significant digits, the
//! bounds of the cluster bench: anything slower is clamped to the top rather than dropped, so
//! a stall still shows as a max.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Slowest latency a histogram holds exactly, in microseconds (10 minutes).
const LATENCY_US_MAX: u64 = 600_000_000;

/// Counts of one client (or the sum of several, see [`Tally::merge`]).
#[derive(Clone, Debug)]
pub struct Tally {
    /// Records measured (after the warm-up).
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Send → ack (produce) or send → receive (e2e) latency, µs; empty for consume.
    pub latency_us: Histogram<u64>,
    /// The same per second of the measurement window (index = whole seconds since its start).
    pub per_second_us: Vec<Histogram<u64>>,
    /// When the measurement window started (the warm-up's end).
    pub window_start: Instant,
    /// The last measured event (ack or receipt); the window's end.
    pub last_event: Option<Instant>,
    /// Records that failed for good (produce).
    pub failed: u64,
    /// The first failure's message, for the report.
    pub first_error: Option<String>,
}

/// A histogram with the bounds above.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
        .expect("constant bounds: 1 <= low, high >= 2 * low, 3 significant digits")
}

impl Tally {
    /// An empty tally whose window starts at `window_start`.
    pub fn new(window_start: Instant) -> Tally {
        Tally {
            records: 0,
            bytes: 0,
            latency_us: latency_histogram(),
            per_second_us: Vec::new(),
            window_start,
            last_event: None,
            failed: 0,
            first_error: None,
        }
    }

    /// Counts one record of `bytes` that arrived at `at`, `latency` after it was (meant to be)
    /// sent; `None` for a figure without latency (consume, or an acknowledgement of a record
    /// sent during the warm-up).
    pub fn record(&mut self, at: Instant, bytes: usize, latency: Option<Duration>) {
        self.records += 1;
        self.bytes += bytes as u64;
        self.last_event = Some(self.last_event.map_or(at, |l| l.max(at)));
        let Some(latency) = latency else {
            return;
        };
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        self.latency_us.saturating_record(us);
        let second = at.saturating_duration_since(self.window_start).as_secs() as usize;
        while self.per_second_us.len() <= second {
            self.per_second_us.push(latency_histogram());
        }
        self.per_second_us[second].saturating_record(us);
    }

    /// Counts one record that failed with `error`.
    pub fn fail(&mut self, error: &dyn std::fmt::Display) {
        self.failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    /// Adds `other` (another client of the same run, same window start) to this tally.
    pub fn merge(&mut self, other: &Tally) {
        self.records += other.records;
        self.bytes += other.bytes;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        for (i, h) in other.per_second_us.iter().enumerate() {
            while self.per_second_us.len() <= i {
                self.per_second_us.push(latency_histogram());
            }
            let _ = self.per_second_us[i].add(h);
        }
        self.last_event = match (self.last_event, other.last_event) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Seconds from the window's start to the last event (0 when nothing was measured).
    pub fn window_s(&self) -> f64 {
        self.last_event.map_or(0.0, |l| {
            l.saturating_duration_since(self.window_start).as_secs_f64()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves merging two clients' tallies sums counts and keeps every latency and second.
    #[test]
    fn test_merge_sums_and_keeps_seconds() {
        let t0 = Instant::now();
        let mut a = Tally::new(t0);
        let mut b = Tally::new(t0);
        a.record(
            t0 + Duration::from_millis(10),
            100,
            Some(Duration::from_millis(2)),
        );
        b.record(
            t0 + Duration::from_millis(2500),
            100,
            Some(Duration::from_millis(4)),
        );
        b.fail(&"boom");
        a.merge(&b);
        assert_eq!((a.records, a.bytes, a.failed), (2, 200, 1));
        assert_eq!(a.per_second_us.len(), 3);
        assert_eq!(a.latency_us.len(), 2);
        assert!((a.window_s() - 2.5).abs() < 1e-9);
        assert_eq!(a.first_error.as_deref(), Some("boom"));
    }
}
