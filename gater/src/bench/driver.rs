//! The closed-loop driver: C clients, each with one operation in flight,
//! run for a warm-up and then a measured window.
//!
//! An operation counts when it completes inside the measured window; its
//! latency is recorded then, so warm-up and the tail after the window are
//! excluded. Each client keeps its own histogram and counters (no shared
//! lock on the hot path); they are merged once the clients stop. Time is
//! tokio's clock, so tests drive the loop with paused time.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use gater_core::Error;
use tokio::time::Instant;

use super::cpu::{CpuProbe, CpuUse};
use super::latency::Latencies;

/// Warm-up and measured window of one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
    /// Run before measuring, excluded from every figure.
    pub(crate) warmup: Duration,
    /// The measured window.
    pub(crate) measure: Duration,
}

/// One client of a closed loop: performs one operation per call.
#[async_trait]
pub(crate) trait Client: Send + 'static {
    /// Runs one operation; returns the events it wrote or read.
    async fn op(&mut self) -> Result<u64, Error>;
}

/// What the clients of a case did inside the measured window.
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    /// Latency of successful operations.
    pub(crate) latencies: Latencies,
    /// Successful operations.
    pub(crate) ops: u64,
    /// Events those operations wrote or read.
    pub(crate) events: u64,
    /// Failed operations by `Error::kind()`.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Length of the measured window.
    pub(crate) measured: Duration,
    /// CPU time each probed process used in the measured window.
    pub(crate) cpu: Vec<CpuUse>,
}

impl Tally {
    /// An empty tally over a window of `measured`.
    pub(crate) fn new(measured: Duration) -> Self {
        Tally {
            latencies: Latencies::new(),
            ops: 0,
            events: 0,
            errors: BTreeMap::new(),
            measured,
            cpu: Vec::new(),
        }
    }

    /// Counts one outcome.
    pub(crate) fn add(&mut self, outcome: &Result<u64, Error>, latency: Duration) {
        match outcome {
            Ok(events) => {
                self.ops += 1;
                self.events += events;
                self.latencies.record(latency);
            }
            Err(e) => *self.errors.entry(e.kind().to_owned()).or_default() += 1,
        }
    }

    /// Adds another client's tally.
    pub(crate) fn merge(&mut self, other: &Tally) {
        self.latencies.merge(&other.latencies);
        self.ops += other.ops;
        self.events += other.events;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }

    /// Operations per second over the window.
    pub(crate) fn ops_per_s(&self) -> f64 {
        per_second(self.ops, self.measured)
    }

    /// Events per second over the window.
    pub(crate) fn events_per_s(&self) -> f64 {
        per_second(self.events, self.measured)
    }

    /// Failed operations of every kind.
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// `count / window`, zero for an empty window.
pub(crate) fn per_second(count: u64, window: Duration) -> f64 {
    let s = window.as_secs_f64();
    if s > 0.0 {
        count as f64 / s
    } else {
        0.0
    }
}

/// Runs every client concurrently for `timing`, then merges their tallies;
/// the CPU time of `probe`'s processes is sampled as the measured window
/// opens and closes.
pub(crate) async fn closed_loop<C: Client>(
    clients: Vec<C>,
    timing: Timing,
    probe: &CpuProbe,
) -> Tally {
    let start = Instant::now();
    let measure_from = start + timing.warmup;
    let until = measure_from + timing.measure;
    let sampler = (!probe.is_empty()).then(|| {
        let probe = probe.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from).await;
            let first = probe.sample();
            tokio::time::sleep_until(until).await;
            probe.used(&first, &probe.sample())
        })
    });
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        tasks.spawn(async move {
            let mut tally = Tally::new(timing.measure);
            loop {
                let began = Instant::now();
                if began >= until {
                    break;
                }
                let outcome = client.op().await;
                let ended = Instant::now();
                if ended >= measure_from && ended < until {
                    tally.add(&outcome, ended - began);
                }
            }
            tally
        });
    }
    let mut total = Tally::new(timing.measure);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(tally) => total.merge(&tally),
            // A client panicked: count it, as the figures would otherwise be silently short.
            Err(_) => *total.errors.entry("client_panic".to_owned()).or_default() += 1,
        }
    }
    if let Some(sampler) = sampler {
        // The sampler only reads files; it ends by `until`, as the clients do.
        total.cpu = sampler.await.unwrap_or_default();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        every: u64,
        n: u64,
    }

    #[async_trait]
    impl Client for Counting {
        async fn op(&mut self) -> Result<u64, Error> {
            self.n += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
            if self.n % self.every == 0 {
                return Err(Error::invalid("every nth fails"));
            }
            Ok(10)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_counts_only_the_measured_window() {
        let timing = Timing {
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(1000),
        };
        let clients = (0..4).map(|_| Counting { every: 5, n: 0 }).collect();
        let tally = closed_loop(clients, timing, &CpuProbe::this_process("bench")).await;
        let attempts = tally.ops + tally.error_count();
        // Paused time: each client completes one op per millisecond, so the
        // window holds 1000 per client, whatever the warm-up did.
        assert_eq!(attempts, 4 * 1000);
        assert_eq!(tally.errors["invalid_argument"], 4 * 200);
        assert_eq!(tally.events, tally.ops * 10);
        assert_eq!(tally.latencies.summary().map(|s| s.count), Some(tally.ops));
        assert_eq!(tally.ops_per_s(), 3200.0);
        assert_eq!(tally.events_per_s(), 32_000.0);
        if cfg!(target_os = "linux") {
            assert_eq!(tally.cpu.len(), 1, "the window's CPU time is reported");
        }
    }

    #[test]
    fn per_second_of_an_empty_window_is_zero() {
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(per_second(5, Duration::from_millis(500)), 10.0);
    }
}
