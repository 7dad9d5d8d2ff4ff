//! Round-trip time distributions per order, counted as results are processed: the source of
//! the API's Prometheus histogram `spoolmon_ping_rtt_seconds` ([`crate::api`]'s `/metrics`).
//!
//! Owns on disk: nothing; the counts live in memory and start again at zero when the process
//! starts (a Prometheus counter reset, which `rate()` and `increase()` handle).
//!
//! Invariants:
//! - **Fixed buckets** ([`BUCKETS`], the same on every node and in every version): histograms
//!   of several nodes add up bucket by bucket, so `sum by (le)` over nodes and then
//!   `histogram_quantile` gives the distribution of all of them. (No peer spoolmon replaces
//!   offers a latency distribution that merges: SmokePing and pingmachine keep per-round sorted
//!   RTTs, which cannot be combined into a quantile.)
//! - **Each result counted once**: processing calls [`RttHistograms::observe`] only for a
//!   snapshot's first application (not for one found applied after a restart), and only for
//!   this node's own orders, so a replay adds nothing.
//! - **Bounded**: one entry per order that had a result; [`RttHistograms::forget`] drops an
//!   order that is removed, so churn does not grow the map.
//!
//! Called by processing ([`super::round::Processor`]) to count, by the API to read.

use crate::shared::measurement::{OrderId, OrderResult};
use std::collections::HashMap;
use std::sync::Mutex;

/// Upper bounds of the buckets, seconds (`le`); a last, implicit bucket is `+Inf`. From 0.1 ms
/// (loopback, a LAN) to 5 s (past the usual ping timeouts), about 2.5 per decade.
pub const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// One order's counts since the process started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Answered pings per bucket, not cumulative: `counts[i]` are the RTTs in
    /// (`BUCKETS[i-1]`, `BUCKETS[i]`], the last entry those above the last bound.
    pub counts: [u64; BUCKETS.len() + 1],
    /// Sum of the answered pings' RTTs, seconds.
    pub sum: f64,
    /// Pings sent (answered or lost) in measured runs; a run that could not measure counts none.
    pub sent: u64,
    pub lost: u64,
}

impl Histogram {
    /// Answered pings (the histogram's `_count`).
    pub fn answered(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The counts as Prometheus writes buckets: for each bound (and `+Inf` last), the answered
    /// pings at or below it.
    pub fn cumulative(&self) -> [u64; BUCKETS.len() + 1] {
        let mut running = 0;
        self.counts.map(|c| {
            running += c;
            running
        })
    }

    fn add(&mut self, result: &OrderResult) {
        for rtt in &result.rtts {
            self.sent += 1;
            match rtt {
                Some(seconds) if seconds.is_finite() && *seconds >= 0.0 => {
                    let bucket = BUCKETS
                        .iter()
                        .position(|bound| seconds <= bound)
                        .unwrap_or(BUCKETS.len());
                    self.counts[bucket] += 1;
                    self.sum += seconds;
                }
                Some(_) => self.sent -= 1,
                None => self.lost += 1,
            }
        }
    }
}

/// Every order's histogram, shared between processing (writing) and the API (reading).
#[derive(Debug, Default)]
pub struct RttHistograms {
    by_order: Mutex<HashMap<OrderId, Histogram>>,
}

impl RttHistograms {
    /// Counts the pings of `results` (measured ones; a run that could not measure tells
    /// nothing about latency or loss).
    pub fn observe<'a>(&self, results: impl IntoIterator<Item = &'a OrderResult>) {
        let mut by_order = self.lock();
        for result in results.into_iter().filter(|r| r.failure.is_none()) {
            match by_order.get_mut(&result.id) {
                Some(histogram) => histogram.add(result),
                None => {
                    let mut histogram = Histogram::default();
                    histogram.add(result);
                    by_order.insert(result.id.clone(), histogram);
                }
            }
        }
    }

    /// Drops an order's counts (it was removed: its output is archived).
    pub fn forget(&self, id: &OrderId) {
        self.lock().remove(id);
    }

    /// A copy of every order's counts, sorted by order id.
    pub fn snapshot(&self) -> Vec<(OrderId, Histogram)> {
        let mut all: Vec<(OrderId, Histogram)> = self.lock().iter().map(|(id, h)| (id.clone(), h.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OrderId, Histogram>> {
        // Counts stay consistent under a panic elsewhere: each add is complete or not begun.
        self.by_order.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, rtts: &[Option<f64>]) -> OrderResult {
        OrderResult::builder(OrderId::new(id).unwrap(), 1_000_020)
            .rtts(rtts.to_vec())
            .build()
    }

    #[test]
    fn pings_fall_into_the_first_bucket_whose_bound_they_do_not_exceed() {
        let histograms = RttHistograms::default();
        histograms.observe(&[
            result("a", &[Some(0.0001), Some(0.00011), None, Some(7.0)]),
            result("a", &[Some(0.001)]),
        ]);
        let (id, h) = histograms.snapshot().remove(0);
        assert_eq!(id.as_str(), "a");
        assert_eq!((h.sent, h.lost, h.answered()), (5, 1, 4));
        assert_eq!(h.counts[0], 1, "0.1 ms is at the first bound");
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[3], 1, "1 ms");
        assert_eq!(h.counts[BUCKETS.len()], 1, "7 s only in +Inf");
        let cumulative = h.cumulative();
        assert_eq!(cumulative[BUCKETS.len()], 4);
        assert!(cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert!((h.sum - 7.00121).abs() < 1e-9);
    }

    #[test]
    fn runs_that_could_not_measure_count_nothing_and_gone_orders_are_dropped() {
        let histograms = RttHistograms::default();
        let mut failed = result("b", &[None, None]);
        failed.failure = Some("cannot resolve".into());
        histograms.observe(&[failed, result("c", &[Some(0.002)])]);
        assert_eq!(histograms.len(), 1);
        histograms.forget(&OrderId::new("c").unwrap());
        assert!(histograms.is_empty());
    }

    #[test]
    fn the_bounds_ascend() {
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
