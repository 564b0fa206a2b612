//! Passive outlier ejection: a per-worker state machine fed by request
//! outcomes and active probe results.
//!
//! ```text
//!            failure (< threshold)              failures reach threshold
//!  Healthy ──────────────────────► Suspect ─────────────────────────► Ejected
//!     ▲  ◄──────── success ────────────┘                               │ back-off ends
//!     │                                                                ▼
//!     └──────── enough successes ─────────────────────────────── Probation
//!                                     a failure: Ejected again, longer back-off
//! ```
//!
//! The back-off doubles with each ejection in a streak and is capped. A streak
//! is forgiven once the worker has stayed healthy for a while, so a worker
//! that failed once last week does not start at the cap.

use std::time::Duration;

use crate::WorkerHealth;

/// Knobs of [`Health`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive failures that eject a serving worker (values below 1 count as 1).
    pub failures_to_eject: u32,
    /// Consecutive successes on probation that restore a worker (values below 1 count as 1).
    pub probation_successes: u32,
    /// Length of the first ejection of a streak.
    pub ejection_base: Duration,
    /// Longest ejection, however long the streak.
    pub ejection_max: Duration,
    /// Time healthy after which the ejection streak starts over.
    pub forgive_after: Duration,
}

impl HealthConfig {
    /// Default failures before ejection.
    pub const FAILURES_TO_EJECT_DEFAULT: u32 = 5;
    /// Default successes that end probation.
    pub const PROBATION_SUCCESSES_DEFAULT: u32 = 3;
    /// Default first ejection.
    pub const EJECTION_BASE_DEFAULT: Duration = Duration::from_secs(1);
    /// Default cap on an ejection.
    pub const EJECTION_MAX_DEFAULT: Duration = Duration::from_secs(60);
    /// Default healthy time that forgives a streak.
    pub const FORGIVE_AFTER_DEFAULT: Duration = Duration::from_secs(300);
    /// Doublings after which the back-off is at least `2^30 × base`, far past any cap;
    /// bounds the shift so it cannot overflow.
    const DOUBLINGS_MAX: u32 = 30;

    /// The back-off of the `n`-th ejection of a streak (`n` from 1):
    /// `base × 2^(n-1)`, at most `ejection_max`.
    pub fn ejection_backoff(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(Self::DOUBLINGS_MAX);
        self.ejection_base
            .saturating_mul(1u32 << doublings)
            .min(self.ejection_max)
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            failures_to_eject: Self::FAILURES_TO_EJECT_DEFAULT,
            probation_successes: Self::PROBATION_SUCCESSES_DEFAULT,
            ejection_base: Self::EJECTION_BASE_DEFAULT,
            ejection_max: Self::EJECTION_MAX_DEFAULT,
            forgive_after: Self::FORGIVE_AFTER_DEFAULT,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Taking traffic; `failures` consecutive failures so far (more than 0: suspect).
    Serving { failures: u32 },
    /// Out of rotation until `until`; then on probation.
    Ejected { until: Duration },
    /// Re-admitted; `successes` consecutive successes so far.
    Probation { successes: u32 },
}

/// One worker's health.
///
/// Call order: [`Health::handle_success`] / [`Health::handle_failure`] for each
/// request outcome and [`Health::handle_probe`] for each active probe, then
/// [`Health::state`] when a routing snapshot is taken. Outcomes that arrive
/// while the worker is ejected are of requests sent before the ejection and
/// are ignored. `now` must not go backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    config: HealthConfig,
    phase: Phase,
    /// Ejections in the current streak.
    streak: u32,
    /// When the worker last became healthy after probation.
    healthy_since: Option<Duration>,
}

impl Health {
    /// A healthy worker.
    pub fn new(config: HealthConfig) -> Self {
        Health {
            config,
            phase: Phase::Serving { failures: 0 },
            streak: 0,
            healthy_since: None,
        }
    }

    /// The health at `now`, as a routing snapshot reports it.
    pub fn state(&self, now: Duration) -> WorkerHealth {
        match self.phase {
            Phase::Serving { failures: 0 } => WorkerHealth::Healthy,
            Phase::Serving { .. } => WorkerHealth::Suspect,
            Phase::Ejected { until } if now < until => WorkerHealth::Ejected,
            Phase::Ejected { .. } | Phase::Probation { .. } => WorkerHealth::Probation,
        }
    }

    /// A request to the worker succeeded.
    pub fn handle_success(&mut self, now: Duration) {
        self.settle(now);
        match self.phase {
            Phase::Serving { .. } => self.phase = Phase::Serving { failures: 0 },
            Phase::Ejected { .. } => {}
            Phase::Probation { successes } => {
                let successes = successes.saturating_add(1);
                if successes >= self.config.probation_successes.max(1) {
                    self.phase = Phase::Serving { failures: 0 };
                    self.healthy_since = Some(now);
                } else {
                    self.phase = Phase::Probation { successes };
                }
            }
        }
    }

    /// A request to the worker failed on the worker's side (unavailable,
    /// overloaded, timed out); failures of the request itself do not count.
    pub fn handle_failure(&mut self, now: Duration) {
        self.settle(now);
        match self.phase {
            Phase::Serving { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failures_to_eject.max(1) {
                    self.eject(now);
                } else {
                    self.phase = Phase::Serving { failures };
                }
            }
            Phase::Ejected { .. } => {}
            Phase::Probation { .. } => self.eject(now),
        }
    }

    /// An active probe answered (`ok`) or failed; feeds the same state as requests.
    pub fn handle_probe(&mut self, ok: bool, now: Duration) {
        if ok {
            self.handle_success(now);
        } else {
            self.handle_failure(now);
        }
    }

    /// The worker is known to be down (its connection closed, its heartbeats
    /// stopped): eject it now, without waiting for the failure threshold.
    pub fn handle_down(&mut self, now: Duration) {
        self.settle(now);
        if !matches!(self.phase, Phase::Ejected { .. }) {
            self.eject(now);
        }
    }

    /// When the current ejection ends, if the worker is ejected.
    pub fn ejected_until(&self) -> Option<Duration> {
        match self.phase {
            Phase::Ejected { until } => Some(until),
            _ => None,
        }
    }

    /// Ejections in the current streak.
    pub fn ejection_streak(&self) -> u32 {
        self.streak
    }

    /// Moves an ejection whose back-off has ended to probation.
    fn settle(&mut self, now: Duration) {
        if let Phase::Ejected { until } = self.phase {
            if now >= until {
                self.phase = Phase::Probation { successes: 0 };
            }
        }
    }

    fn eject(&mut self, now: Duration) {
        let forgiven = self
            .healthy_since
            .is_some_and(|since| now.saturating_sub(since) >= self.config.forgive_after);
        if forgiven {
            self.streak = 0;
        }
        self.streak = self.streak.saturating_add(1);
        let until = now.saturating_add(self.config.ejection_backoff(self.streak));
        self.phase = Phase::Ejected { until };
        self.healthy_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn failures(h: &mut Health, n: u32, now: Duration) {
        for _ in 0..n {
            h.handle_failure(now);
        }
    }

    #[test]
    fn one_failure_makes_a_worker_suspect_and_a_success_clears_it() {
        let mut h = Health::new(HealthConfig::default());
        assert_eq!(h.state(Duration::ZERO), WorkerHealth::Healthy);
        h.handle_failure(Duration::ZERO);
        assert_eq!(h.state(Duration::ZERO), WorkerHealth::Suspect);
        h.handle_success(Duration::ZERO);
        assert_eq!(h.state(Duration::ZERO), WorkerHealth::Healthy);
    }

    #[test]
    fn consecutive_failures_eject_then_probation_then_healthy() {
        let mut h = Health::new(HealthConfig::default());
        failures(&mut h, 5, Duration::ZERO);
        assert_eq!(h.state(Duration::ZERO), WorkerHealth::Ejected);
        assert_eq!(h.ejected_until(), Some(S));
        assert_eq!(h.state(S), WorkerHealth::Probation);
        h.handle_success(S);
        h.handle_success(S);
        assert_eq!(h.state(S), WorkerHealth::Probation);
        h.handle_success(S);
        assert_eq!(h.state(S), WorkerHealth::Healthy);
    }

    #[test]
    fn a_failure_on_probation_ejects_for_twice_as_long() {
        let mut h = Health::new(HealthConfig::default());
        failures(&mut h, 5, Duration::ZERO);
        h.handle_failure(S);
        assert_eq!(h.ejected_until(), Some(3 * S));
        assert_eq!(h.ejection_streak(), 2);
    }

    #[test]
    fn outcomes_during_an_ejection_are_ignored() {
        let mut h = Health::new(HealthConfig::default());
        failures(&mut h, 5, Duration::ZERO);
        h.handle_success(S / 2);
        h.handle_failure(S / 2);
        assert_eq!(h.ejected_until(), Some(S));
        assert_eq!(h.ejection_streak(), 1);
    }

    #[test]
    fn a_long_healthy_stretch_forgives_the_streak() {
        let config = HealthConfig::default();
        let mut h = Health::new(config);
        h.handle_down(Duration::ZERO);
        h.handle_probe(true, S);
        h.handle_probe(true, S);
        h.handle_probe(true, S);
        assert_eq!(h.state(S), WorkerHealth::Healthy);
        let later = S + config.forgive_after;
        h.handle_down(later);
        assert_eq!(h.ejection_streak(), 1);
        assert_eq!(h.ejected_until(), Some(later + config.ejection_base));
    }

    #[test]
    fn backoff_doubles_and_stops_at_the_cap() {
        let c = HealthConfig::default();
        let got: Vec<u64> = (1..=9).map(|n| c.ejection_backoff(n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(c.ejection_backoff(u32::MAX), c.ejection_max);
    }
}
