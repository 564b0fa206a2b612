//! The proxy's configuration: every bound and interval it works with, named.

use std::time::Duration;

use gater_core::routing::{Balance, EwmaConfig, HealthConfig, RetryConfig, RouterConfig};

/// How the workers behind a proxy hold their stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StorageMode {
    /// Each store lives on exactly one worker (embedded fjall); the proxy routes
    /// by store and places new stores by rendezvous hashing.
    #[default]
    Embedded,
    /// Every worker serves every store of a shared database; the proxy balances
    /// freely and moves persistent subscriptions when a worker dies.
    Shared,
}

/// Default interval between active probes of every worker.
pub const PROBE_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// Default time a worker may stay silent (no heartbeat, no answered probe) before it is suspect.
pub const HEARTBEAT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Default silence after which a worker that joined by heartbeat is removed from the pool.
pub const REMOVAL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default time one request may take through the proxy, retries included.
pub const REQUEST_DEADLINE_DEFAULT: Duration = Duration::from_secs(10);
/// Default time a `compact_store` may take through the proxy: it returns
/// only once the space is reclaimed, which takes minutes on large stores.
pub const COMPACTION_DEADLINE_DEFAULT: Duration = Duration::from_secs(3_600);
/// Default time an active probe may take before it counts as a failure.
pub const PROBE_TIMEOUT_DEFAULT: Duration = Duration::from_millis(500);
/// Default most requests in flight to one worker at once.
pub const WORKER_IN_FLIGHT_MAX_DEFAULT: u32 = 1024;
/// Default most workers in the pool (static and joined).
pub const WORKERS_MAX_DEFAULT: usize = 256;
/// Default most consumers attached through the proxy at once.
pub const CONSUMERS_MAX_DEFAULT: usize = 65_536;
/// Default capacity of the queue between a worker's subscription and the consumer.
pub const RELAY_QUEUE_LEN_DEFAULT: usize = 64;
/// Default most re-attachments of one persistent consumer after its worker failed.
pub const REATTACH_MAX_DEFAULT: u32 = 16;

/// Default seed of the proxy's random choices.
pub const SEED_DEFAULT: u64 = 0x6761_7465_7270_7879;

/// The proxy's configuration. [`ProxyConfig::default`] holds the shipped values.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// How workers hold stores.
    pub storage: StorageMode,
    /// How eligible workers are chosen (power of two choices by default).
    pub balance: Balance,
    /// A worker on probation takes at most this many requests at once.
    pub probation_in_flight_max: u32,
    /// Passive ejection: failures that eject, back-off, probation.
    pub health: HealthConfig,
    /// Latency estimation for power of two choices.
    pub ewma: EwmaConfig,
    /// Attempts per request, deadline floor and the retry budget.
    pub retry: RetryConfig,
    /// Interval between active probes (`list_stores` on every worker).
    pub probe_interval: Duration,
    /// Time an active probe may take before it counts as a failure.
    pub probe_timeout: Duration,
    /// Silence after which a worker is suspect.
    pub heartbeat_timeout: Duration,
    /// Silence after which a worker that joined by heartbeat is removed.
    pub removal_timeout: Duration,
    /// Time one request may take through the proxy, retries included.
    pub request_deadline: Duration,
    /// Time a `compact_store` may take through the proxy (instead of
    /// `request_deadline`).
    pub compaction_deadline: Duration,
    /// Most requests in flight to one worker; past it the worker is skipped,
    /// and when every eligible worker is full the caller gets `Overloaded`.
    pub worker_in_flight_max: u32,
    /// Most workers in the pool.
    pub workers_max: usize,
    /// Most workers in the pool that joined by heartbeat.
    pub joins_max: usize,
    /// Most workers one identity may have joined by heartbeat.
    pub joins_per_identity_max: usize,
    /// Most consumers attached through the proxy.
    pub consumers_max: usize,
    /// Capacity of the queue between a worker's subscription and the consumer.
    pub relay_queue_len: usize,
    /// Most re-attachments of one persistent consumer.
    pub reattach_max: u32,
    /// Seed of the proxy's random choices (deterministic simulation passes its own).
    pub seed: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            storage: StorageMode::default(),
            balance: Balance::default(),
            probation_in_flight_max: RouterConfig::PROBATION_IN_FLIGHT_MAX_DEFAULT,
            health: HealthConfig::default(),
            ewma: EwmaConfig::default(),
            retry: RetryConfig::default(),
            probe_interval: PROBE_INTERVAL_DEFAULT,
            probe_timeout: PROBE_TIMEOUT_DEFAULT,
            heartbeat_timeout: HEARTBEAT_TIMEOUT_DEFAULT,
            removal_timeout: REMOVAL_TIMEOUT_DEFAULT,
            request_deadline: REQUEST_DEADLINE_DEFAULT,
            compaction_deadline: COMPACTION_DEADLINE_DEFAULT,
            worker_in_flight_max: WORKER_IN_FLIGHT_MAX_DEFAULT,
            workers_max: WORKERS_MAX_DEFAULT,
            joins_max: super::joins::JOINS_MAX_DEFAULT,
            joins_per_identity_max: super::joins::JOINS_PER_IDENTITY_MAX_DEFAULT,
            consumers_max: CONSUMERS_MAX_DEFAULT,
            relay_queue_len: RELAY_QUEUE_LEN_DEFAULT,
            reattach_max: REATTACH_MAX_DEFAULT,
            seed: SEED_DEFAULT,
        }
    }
}
