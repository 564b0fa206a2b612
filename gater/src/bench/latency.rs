//! Latency recording: an HDR histogram per client, merged into a [`LatencySummary`].
//!
//! Values are recorded in nanoseconds with three significant digits, so a
//! percentile is within 0.1% of the true value; anything above
//! [`LATENCY_NS_MAX`] is clamped rather than lost.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::report::LatencySummary;

/// Longest latency told apart from others: one minute.
pub(crate) const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits the histogram keeps.
const SIGNIFICANT_DIGITS: u8 = 3;
/// The percentiles of the curve kept in every summary (for charts).
pub(crate) const CURVE_PERCENTILES: [f64; 12] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0,
];

/// Latencies of one client or of a whole case.
#[derive(Clone, Debug)]
pub(crate) struct Latencies {
    histogram: Histogram<u64>,
}

impl Latencies {
    /// An empty recorder.
    pub(crate) fn new() -> Self {
        Latencies {
            // The bounds are constants that hdrhistogram accepts (low >= 1,
            // high >= 2 * low, sigfig <= 5): this cannot fail.
            histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Records one latency.
    pub(crate) fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(ns.max(1));
    }

    /// Adds another recorder's values to this one.
    pub(crate) fn merge(&mut self, other: &Latencies) {
        // Both histograms share the same bounds, so adding cannot go out of range.
        self.histogram
            .add(&other.histogram)
            .expect("histograms with equal bounds add");
    }

    /// Values recorded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// The summary, or `None` when nothing was recorded.
    pub(crate) fn summary(&self) -> Option<LatencySummary> {
        if self.histogram.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        let at = |p: f64| us(self.histogram.value_at_quantile(p / 100.0));
        Some(LatencySummary {
            count: self.histogram.len(),
            mean_us: self.histogram.mean() / 1_000.0,
            p50_us: at(50.0),
            p95_us: at(95.0),
            p99_us: at(99.0),
            p999_us: at(99.9),
            max_us: us(self.histogram.max()),
            curve: CURVE_PERCENTILES.iter().map(|&p| [p, at(p)]).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_nothing_is_none() {
        assert!(Latencies::new().summary().is_none());
    }

    #[test]
    fn summary_reports_percentiles_in_microseconds() {
        let mut latencies = Latencies::new();
        for ms in 1..=1000u64 {
            latencies.record(Duration::from_micros(ms * 10));
        }
        let s = latencies.summary().unwrap();
        assert_eq!(s.count, 1000);
        let close = |actual: f64, expected: f64| {
            assert!(
                (actual - expected).abs() <= expected * 0.002,
                "{actual} is not within 0.2% of {expected}"
            );
        };
        close(s.p50_us, 5_000.0);
        close(s.p95_us, 9_500.0);
        close(s.p99_us, 9_900.0);
        close(s.p999_us, 9_990.0);
        close(s.max_us, 10_000.0);
        close(s.mean_us, 5_005.0);
        assert_eq!(s.curve.len(), CURVE_PERCENTILES.len());
        assert!(s.curve.windows(2).all(|w| w[0][1] <= w[1][1]));
    }

    #[test]
    fn merged_recorders_count_every_value() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        a.record(Duration::from_micros(1));
        b.record(Duration::from_millis(2));
        b.record(Duration::from_secs(120));
        a.merge(&b);
        assert_eq!(a.len(), 3);
        let s = a.summary().unwrap();
        assert!(
            s.max_us >= 59_000_000.0,
            "an over-long value is clamped, not lost"
        );
    }
}
