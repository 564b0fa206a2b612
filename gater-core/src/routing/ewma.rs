//! Peak-EWMA latency estimation, the load signal of power-of-two-choices.
//!
//! The estimate follows an exponentially weighted moving average of observed
//! latencies whose weights fade with elapsed time (not with sample count), so
//! a quiet worker and a busy one age alike. A sample above the estimate
//! replaces it at once: a worker that slows down is avoided immediately and
//! earns its way back slowly. Between samples the estimate decays towards
//! zero, so a worker that was slow and then left alone is tried again.

use std::time::Duration;

/// Knobs of [`PeakEwma`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EwmaConfig {
    /// Time over which an old observation loses about 63% (1 − 1/e) of its weight.
    pub decay_window: Duration,
    /// The estimate of a worker before its first sample.
    pub initial: Duration,
}

impl EwmaConfig {
    /// Default decay window: ten seconds, long enough to smooth bursts, short
    /// enough to notice a worker that recovered.
    pub const DECAY_WINDOW_DEFAULT: Duration = Duration::from_secs(10);
    /// Default first estimate: a pessimistic 5 ms, so a new worker is not flooded
    /// before it has answered anything.
    pub const INITIAL_DEFAULT: Duration = Duration::from_millis(5);
    /// Shortest decay window accepted; shorter ones are raised to it so the
    /// decay exponent stays finite.
    pub const DECAY_WINDOW_MIN: Duration = Duration::from_micros(1);
}

impl Default for EwmaConfig {
    fn default() -> Self {
        EwmaConfig {
            decay_window: Self::DECAY_WINDOW_DEFAULT,
            initial: Self::INITIAL_DEFAULT,
        }
    }
}

/// A worker's peak-EWMA latency estimate.
///
/// Call order: [`PeakEwma::handle_latency`] for each observed round trip,
/// [`PeakEwma::estimate`] whenever a snapshot is taken. `now` must not go
/// backwards; if it does, the elapsed time counts as zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEwma {
    /// The estimate at `updated`, nanoseconds.
    estimate_ns: f64,
    updated: Duration,
    decay_ns: f64,
}

impl PeakEwma {
    /// A fresh estimator holding `config.initial` at `now`.
    pub fn new(config: EwmaConfig, now: Duration) -> Self {
        PeakEwma {
            estimate_ns: nanos(config.initial),
            updated: now,
            decay_ns: nanos(config.decay_window.max(EwmaConfig::DECAY_WINDOW_MIN)),
        }
    }

    /// Folds in one observed latency.
    pub fn handle_latency(&mut self, sample: Duration, now: Duration) {
        let sample_ns = nanos(sample);
        if sample_ns >= self.estimate_ns {
            self.estimate_ns = sample_ns;
        } else {
            let keep = self.keep_factor(now);
            self.estimate_ns = self.estimate_ns * keep + sample_ns * (1.0 - keep);
        }
        self.updated = self.updated.max(now);
    }

    /// The estimate at `now`: the last value, decayed by the time since it was set.
    pub fn estimate(&self, now: Duration) -> Duration {
        let decayed = self.estimate_ns * self.keep_factor(now);
        // The estimate is finite and non-negative, and float-to-int casts saturate.
        Duration::from_nanos(decayed.round() as u64)
    }

    /// The weight the previous estimate keeps after the time since the last update.
    fn keep_factor(&self, now: Duration) -> f64 {
        let elapsed = nanos(now.saturating_sub(self.updated));
        (-elapsed / self.decay_ns).exp()
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ewma(now: Duration) -> PeakEwma {
        PeakEwma::new(EwmaConfig::default(), now)
    }

    #[test]
    fn starts_at_the_initial_estimate() {
        let e = ewma(Duration::ZERO);
        assert_eq!(e.estimate(Duration::ZERO), EwmaConfig::INITIAL_DEFAULT);
    }

    #[test]
    fn a_peak_replaces_the_estimate_at_once() {
        let mut e = ewma(Duration::ZERO);
        e.handle_latency(MS, Duration::ZERO);
        e.handle_latency(200 * MS, Duration::from_millis(1));
        assert_eq!(e.estimate(Duration::from_millis(1)), 200 * MS);
    }

    #[test]
    fn lower_samples_pull_the_estimate_down_gradually() {
        let mut e = ewma(Duration::ZERO);
        e.handle_latency(100 * MS, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut last = 100 * MS;
        for _ in 0..50 {
            now += Duration::from_secs(1);
            e.handle_latency(10 * MS, now);
            let est = e.estimate(now);
            assert!(est < last, "estimate must fall: {est:?} after {last:?}");
            assert!(est > 10 * MS);
            last = est;
        }
        // After 50 s, five decay windows, the old peak weighs under 1%.
        assert!(last < 11 * MS, "{last:?}");
    }

    #[test]
    fn an_idle_estimate_decays_towards_zero() {
        let mut e = ewma(Duration::ZERO);
        e.handle_latency(100 * MS, Duration::ZERO);
        let after_one_window = e.estimate(EwmaConfig::DECAY_WINDOW_DEFAULT);
        assert!(after_one_window < 37 * MS && after_one_window > 36 * MS);
        assert!(e.estimate(Duration::from_secs(1000)) < Duration::from_micros(1));
    }

    #[test]
    fn time_going_backwards_counts_as_no_time() {
        let mut e = ewma(Duration::from_secs(10));
        e.handle_latency(50 * MS, Duration::from_secs(10));
        assert_eq!(e.estimate(Duration::from_secs(5)), 50 * MS);
        e.handle_latency(10 * MS, Duration::from_secs(5));
        assert_eq!(e.estimate(Duration::from_secs(10)), 50 * MS);
    }
}
