//! [`Proxy`]: a [`Gater`](gater_core::Gater) over a pool of worker `Gater`s.
//!
//! Every decision (which worker, whether it is ejected, whether a failure may
//! be retried, where a new store goes, which worker owns a persistent
//! subscription) is made by the core's routing policy
//! ([`gater_core::routing`]). This module is the glue around it: it keeps the
//! pool, counts requests in flight, measures latency, feeds outcomes, probes
//! and heartbeats into the policy, maps tokio's clock onto the policy's
//! [`Duration`]-since-start time, and owns the seeded RNG.
//!
//! Proxies compose: a worker is any `Gater` client, so a `Proxy` whose
//! workers are other proxies (in [`StorageMode::Shared`], since each of them
//! reaches every store) is a client that fails over between proxies with the
//! same policy.

mod admin;
mod config;
mod gater;
mod joins;
mod membership;
mod pool;
mod relay;
mod route;
mod storage;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gater_core::memory::ByteBudget;
use gater_core::routing::{Balance, RetryPolicy, Router, RouterConfig};
use gater_core::{BoxGater, Error, Rng, StoreId, WorkerInfo};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use config::{
    ProxyConfig, StorageMode, COMPACTION_DEADLINE_DEFAULT, CONSUMERS_MAX_DEFAULT,
    HEARTBEAT_TIMEOUT_DEFAULT, PROBE_INTERVAL_DEFAULT, PROBE_TIMEOUT_DEFAULT, REATTACH_MAX_DEFAULT,
    RELAY_QUEUE_LEN_DEFAULT, REMOVAL_TIMEOUT_DEFAULT, REQUEST_DEADLINE_DEFAULT, SEED_DEFAULT,
    WORKERS_MAX_DEFAULT, WORKER_IN_FLIGHT_MAX_DEFAULT,
};

pub use joins::{JOINS_MAX_DEFAULT, JOINS_PER_IDENTITY_MAX_DEFAULT, REFUSAL_LOG_INTERVAL};
pub use membership::{WORKER_ADDRESS_LEN_MAX, WORKER_ID_LEN_MAX, WORKER_STORES_MAX};

use pool::{NewWorker, Pool};
use relay::Consumers;
use storage::StorageReports;

/// Reaches a worker by address; used for workers that join at run time.
///
/// In production this opens a QUIC connection; in tests it hands out
/// in-memory clients.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// A client for the worker at `address`.
    async fn connect(&self, address: &str) -> Result<BoxGater, Error>;
}

/// A highly available, load-balancing [`Gater`](gater_core::Gater) over a pool of workers.
///
/// Build it with [`Proxy::builder`]; it must be built inside a tokio runtime,
/// which runs its probe loop until the last clone of the proxy is dropped.
#[derive(Clone, Debug)]
pub struct Proxy {
    inner: Arc<Inner>,
}

/// Builds a [`Proxy`]: configuration, the static workers and the connector.
pub struct ProxyBuilder {
    config: ProxyConfig,
    workers: Vec<NewWorker>,
    connector: Option<Arc<dyn Connector>>,
    budget: Option<Arc<dyn ByteBudget>>,
}

impl std::fmt::Debug for ProxyBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBuilder")
            .field("config", &self.config)
            .field("workers", &self.workers.len())
            .field("connector", &self.connector.is_some())
            .field("budget", &self.budget)
            .finish()
    }
}

impl ProxyBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ProxyConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets how workers hold stores.
    pub fn storage(mut self, storage: StorageMode) -> Self {
        self.config.storage = storage;
        self
    }

    /// Sets the balancing strategy.
    pub fn balance(mut self, balance: Balance) -> Self {
        self.config.balance = balance;
        self
    }

    /// Sets the seed of the proxy's random choices.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Adds a statically configured worker reached through `client`.
    ///
    /// The stores it serves are learnt by the first probe; in
    /// [`StorageMode::Shared`] it serves every store from the start.
    pub fn worker(
        mut self,
        id: impl Into<String>,
        address: impl Into<String>,
        client: BoxGater,
    ) -> Self {
        self.workers.push(NewWorker {
            owner: None,
            id: id.into(),
            address: address.into(),
            client,
            dynamic: false,
            stores: Vec::new(),
            shared_storage: self.config.storage == StorageMode::Shared,
        });
        self
    }

    /// Sets the connector used for workers that announce themselves by heartbeat.
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Counts the items queued for relayed consumers in `budget` (the
    /// memory budget of the server in front of the proxy): a relay waits for
    /// room before it queues an item, so the worker's flow control holds the
    /// rest. Without it only the queues' lengths bound them.
    pub fn memory_budget(mut self, budget: Arc<dyn ByteBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Builds the proxy, asks every static worker what storage it has,
    /// probes every worker once, and starts the probe loop.
    ///
    /// Fails with `InvalidArgument` for a zero interval, limit, two static
    /// workers with one id, or workers that mix embedded and shared storage.
    /// Must be called inside a tokio runtime.
    pub async fn build(self) -> Result<Proxy, Error> {
        let config = self.config;
        validate(&config)?;
        let epoch = Instant::now();
        let pool = Pool::new(config.health, config.ewma, config.workers_max);
        let shared = config.storage == StorageMode::Shared;
        for mut worker in self.workers {
            if pool.get(&worker.id).is_some() {
                return Err(Error::invalid(format!(
                    "worker {} is listed twice",
                    worker.id
                )));
            }
            worker.shared_storage |= shared;
            pool.insert(worker, Duration::ZERO)?;
        }
        let router = Router::new(
            RouterConfig {
                balance: config.balance,
                probation_in_flight_max: config.probation_in_flight_max,
            },
            Rng::from_seed(config.seed),
        );
        let any = Router::new(
            RouterConfig {
                balance: Balance::Random,
                probation_in_flight_max: config.probation_in_flight_max,
            },
            Rng::from_seed(config.seed.rotate_left(32) ^ RANDOM_WORKER_SEED_SALT),
        );
        let inner = Arc::new(Inner {
            retry: Mutex::new(RetryPolicy::new(config.retry)),
            consumers: Consumers::new(config.consumers_max),
            storage_reports: StorageReports::default(),
            connector: self.connector,
            budget: self.budget,
            router: Mutex::new(router),
            any_router: Mutex::new(any),
            pool,
            epoch,
            config,
            probe_task: Mutex::new(None),
            refusals: joins::RefusalLog::default(),
            retries: Mutex::new(BTreeMap::new()),
        });
        // The storage mode is known before the first request is answered
        // (of every static worker that answers now; the others tell later).
        inner.learn_all_storage().await?;
        inner.probe_all().await;
        let task = tokio::spawn(membership::probe_loop(Arc::downgrade(&inner)));
        *lock(&inner.probe_task) = Some(task);
        Ok(Proxy { inner })
    }
}

/// Mixed into the seed of `random_worker`'s generator so it does not mirror the router's.
const RANDOM_WORKER_SEED_SALT: u64 = 0x7261_6e64_6f6d_7772;

impl Proxy {
    /// A builder with the default configuration and no workers.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            config: ProxyConfig::default(),
            budget: None,
            workers: Vec::new(),
            connector: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// A random live worker (the seed's `random_gateway_worker`), chosen by
    /// the routing policy among workers that are not ejected.
    pub fn random_worker(&self) -> Result<WorkerInfo, Error> {
        self.inner.random_worker()
    }

    /// Probes every worker now instead of waiting for the next interval.
    pub async fn probe_now(&self) {
        self.inner.probe_all().await;
    }

    /// What the proxy counted since it started: retries by method, and
    /// ejections of each worker in the pool now.
    pub fn counters(&self) -> ProxyCounters {
        let retries = lock(&self.inner.retries)
            .iter()
            .map(|(method, count)| (*method, *count))
            .collect();
        let ejections = self
            .inner
            .pool
            .all()
            .iter()
            .map(|w| (w.id.clone(), w.ejections()))
            .collect();
        ProxyCounters { retries, ejections }
    }

    /// The ids of the workers the proxy believes serve `store`.
    pub fn workers_serving(&self, store: &StoreId) -> Vec<String> {
        self.inner
            .pool
            .serving(store)
            .iter()
            .map(|w| w.id.clone())
            .collect()
    }
}

/// Counters of a proxy, for the application to export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounters {
    /// Requests sent again to another worker, by the request's method.
    pub retries: Vec<(&'static str, u64)>,
    /// Times each worker now in the pool was ejected (by worker id).
    pub ejections: Vec<(String, u64)>,
}

/// The state shared by a proxy's clones, its probe loop and its relays.
pub(crate) struct Inner {
    config: ProxyConfig,
    pool: Pool,
    /// The proxy's time zero: the policy's clock is the time since it.
    epoch: Instant,
    router: Mutex<Router>,
    /// A second router for `random_worker`, so that calls to it do not shift
    /// the request router's random sequence.
    any_router: Mutex<Router>,
    retry: Mutex<RetryPolicy>,
    consumers: Consumers,
    /// What each worker said about its storage (see `storage`).
    storage_reports: StorageReports,
    connector: Option<Arc<dyn Connector>>,
    /// Where relay queues count their bytes, if anywhere.
    budget: Option<Arc<dyn ByteBudget>>,
    probe_task: Mutex<Option<JoinHandle<()>>>,
    /// Refused heartbeats, logged once per identity per minute.
    refusals: joins::RefusalLog,
    /// Retries made, by the retried request's method.
    retries: Mutex<BTreeMap<&'static str, u64>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// The policy's clock: time since the proxy started, from tokio's clock
    /// (so paused-time tests drive it).
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.probe_task).take() {
            task.abort();
        }
    }
}

/// An answer of the wrong shape: the worker broke the protocol.
fn unexpected(method: &str, response: &gater_core::wire::Response) -> Error {
    Error::Protocol(format!(
        "{method}: the worker answered with an unexpected {response:?}"
    ))
}

/// Locks a mutex whose data stays consistent even if a holder panicked: every
/// holder in this crate completes its update before any point that could panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn validate(config: &ProxyConfig) -> Result<(), Error> {
    let checks = [
        (
            config.probe_interval.is_zero(),
            "probe_interval must be above zero",
        ),
        (
            config.probe_timeout.is_zero(),
            "probe_timeout must be above zero",
        ),
        (
            config.request_deadline.is_zero(),
            "request_deadline must be above zero",
        ),
        (
            config.worker_in_flight_max == 0,
            "worker_in_flight_max must be above zero",
        ),
        (config.workers_max == 0, "workers_max must be above zero"),
        (
            config.consumers_max == 0,
            "consumers_max must be above zero",
        ),
        (
            config.relay_queue_len == 0,
            "relay_queue_len must be above zero",
        ),
        (
            config.removal_timeout < config.heartbeat_timeout,
            "removal_timeout must be at least heartbeat_timeout",
        ),
    ];
    match checks.iter().find(|(bad, _)| *bad) {
        Some((_, message)) => Err(Error::invalid(*message)),
        None => Ok(()),
    }
}
