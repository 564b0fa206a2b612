//! Plain measurement types that the libraries fill and the application renders.
//!
//! A [`Histogram`] counts observations into fixed buckets with atomics, so a
//! hot path records a value without a lock or an allocation. Values are
//! integers in the unit the owner picks (microseconds, events); whoever
//! exports them scales them. Nothing here reads a clock: callers measure and
//! pass the value in. Names and rendering live in the application only.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket bounds for durations in microseconds: 50 µs to 10 s.
pub const DURATION_US_BOUNDS: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Bucket bounds for sizes counted in items (events, appends): 1 to 10,000.
pub const SIZE_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 4_096, 10_000];

/// A histogram over fixed, ascending upper bounds (inclusive), plus an
/// overflow bucket for values above the last bound.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, then the overflow bucket.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

/// A histogram's counts at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending.
    pub bounds: &'static [u64],
    /// Cumulative counts: `cumulative[i]` observations were at most `bounds[i]`.
    pub cumulative: Vec<u64>,
    /// Sum of every observed value (saturating).
    pub sum: u64,
    /// Observations in all, overflow included.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds).
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation of `value`.
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        // `partition_point` is at most `bounds.len()`, the overflow bucket.
        if let Some(slot) = self.buckets.get(bucket) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(sum.saturating_add(value))
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now. Taken without a lock, so a snapshot racing an
    /// observation may count it in `count` and not yet in its bucket; the
    /// cumulative counts never exceed `count`.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let cumulative: Vec<u64> = self.buckets[..self.bounds.len()]
            .iter()
            .map(|b| {
                running = running.saturating_add(b.load(Ordering::Relaxed));
                running
            })
            .collect();
        let overflow = self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        let count = self
            .count
            .load(Ordering::Relaxed)
            .max(running.saturating_add(overflow));
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: self.sum.load(Ordering::Relaxed),
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOUNDS: &[u64] = &[1, 10, 100];

    fn check(values: &[u64], cumulative: &[u64]) {
        let histogram = Histogram::new(BOUNDS);
        for value in values {
            histogram.observe(*value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative, cumulative, "{values:?}");
        assert_eq!(snapshot.count, values.len() as u64);
        assert_eq!(snapshot.sum, values.iter().sum::<u64>());
    }

    #[test]
    fn values_fall_into_the_first_bucket_whose_bound_they_do_not_exceed() {
        check(&[], &[0, 0, 0]);
        check(&[0, 1], &[2, 2, 2]);
        check(&[2, 10], &[0, 2, 2]);
        check(&[11, 100], &[0, 0, 2]);
        check(&[101, 5], &[0, 1, 1]);
    }

    proptest! {
        #[test]
        fn cumulative_counts_match_a_count_of_values_at_most_each_bound(
            values in proptest::collection::vec(0u64..1_000, 0..64)
        ) {
            let histogram = Histogram::new(SIZE_BOUNDS);
            for value in &values {
                histogram.observe(*value);
            }
            let snapshot = histogram.snapshot();
            for (bound, cumulative) in SIZE_BOUNDS.iter().zip(&snapshot.cumulative) {
                let expected = values.iter().filter(|v| *v <= bound).count() as u64;
                prop_assert_eq!(*cumulative, expected);
            }
            prop_assert_eq!(snapshot.count, values.len() as u64);
        }
    }
}
