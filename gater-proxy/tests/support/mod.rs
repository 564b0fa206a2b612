//! A whole cluster in one process for the proxy's tests: embedded stores
//! served over the in-memory transport, a proxy over their clients, request
//! counters on both sides of every link, and the seed each run prints.

#![allow(dead_code, unreachable_pub)] // a kit shared by test binaries, each using a part

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gater_core::{
    AppendResult, BoxGater, ConsumerId, Direction, Error, EventData, EventId, ExpectedVersion,
    Gater, NackAction, Position, RecordedEvent, Snapshot, SnapshotKey, StoreConfig, StoreId,
    StoreInfo, StoreStatus, StreamId, StreamPage, SubscribeOptions, Subscription, SubscriptionInfo,
    SubscriptionKey, SubscriptionSpec, Version, WorkerInfo,
};
use gater_proxy::{Connector, Proxy, ProxyBuilder, ProxyConfig, StorageMode};
use gater_store::{Store, StoreOptions};
use gater_transport_mem::{serve, MemClient, MemClientOptions, MemServer};
use tempfile::TempDir;

/// A store config for tests: no fsync (the tests check routing, not durability).
pub const FAST: StoreConfig = StoreConfig {
    fsync: false,
    group_commit: true,
    retention: gater_core::Retention::NONE,
};

/// The seed of a simulation: `GATER_SEED` when set, else `default`; printed
/// so that a failing run names the seed that reproduces it.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("GATER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    eprintln!("simulation seed: {seed} (rerun with GATER_SEED={seed})");
    seed
}

/// A small deterministic generator for test workloads (SplitMix64 from the core).
pub fn rng(seed: u64) -> gater_core::Rng {
    gater_core::Rng::from_seed(seed)
}

/// An event id drawn from the test's generator.
pub fn event_id(rng: &mut gater_core::Rng) -> EventId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    EventId::from_random_bytes(bytes)
}

/// An event of 32 bytes of data.
pub fn event(rng: &mut gater_core::Rng) -> EventData {
    EventData::json(
        event_id(rng),
        "Tested",
        br#"{"n":"0123456789abcdefghij"}"#.to_vec(),
        b"{}".to_vec(),
    )
}

pub fn store(id: &str) -> StoreId {
    StoreId::new(id).expect("test store ids are valid")
}

pub fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("test stream ids are valid")
}

/// Counts requests by store (and in total) as they pass.
#[derive(Debug, Default)]
pub struct Counts {
    by_store: Mutex<BTreeMap<String, u64>>,
    appends: AtomicU64,
    subscribes: AtomicU64,
    total: AtomicU64,
}

impl Counts {
    fn record(&self, store: Option<&StoreId>, append: bool) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if append {
            self.appends.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(store) = store {
            *self
                .by_store
                .lock()
                .unwrap()
                .entry(store.to_string())
                .or_default() += 1;
        }
    }

    /// Store-scoped requests seen, by store.
    pub fn by_store(&self) -> BTreeMap<String, u64> {
        self.by_store.lock().unwrap().clone()
    }

    /// Store-scoped requests seen in all.
    pub fn store_requests(&self) -> u64 {
        self.by_store().values().sum()
    }

    /// `subscribe` calls seen.
    pub fn subscribes(&self) -> u64 {
        self.subscribes.load(Ordering::Relaxed)
    }

    /// `append_events` calls seen.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }
}

/// A `Gater` that counts what passes through it on its way to `inner`.
pub struct Counting {
    inner: BoxGater,
    counts: Arc<Counts>,
}

impl Counting {
    pub fn new(inner: BoxGater) -> (Self, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        (
            Counting {
                inner,
                counts: Arc::clone(&counts),
            },
            counts,
        )
    }

    fn note(&self, store: &StoreId) {
        self.counts.record(Some(store), false);
    }
}

#[async_trait]
impl Gater for Counting {
    async fn append(
        &self,
        store: &StoreId,
        append: gater_core::Append,
    ) -> Result<gater_core::AppendOutcome, Error> {
        self.counts.record(Some(store), true);
        self.inner.append(store, append).await
    }
    async fn read_query(
        &self,
        store: &StoreId,
        query: &gater_core::Query,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.note(store);
        self.inner
            .read_query(store, query, from, count, direction)
            .await
    }
    async fn append_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, Error> {
        self.counts.record(Some(store), true);
        self.inner
            .append_events(store, stream, expected, events)
            .await
    }
    async fn get_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.note(store);
        self.inner
            .get_events(store, stream, start, count, direction)
            .await
    }
    async fn read_all(
        &self,
        store: &StoreId,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.note(store);
        self.inner.read_all(store, from, count, direction).await
    }
    async fn get_streams(
        &self,
        store: &StoreId,
        after: Option<StreamId>,
        limit: u32,
    ) -> Result<StreamPage, Error> {
        self.note(store);
        self.inner.get_streams(store, after, limit).await
    }
    async fn get_version(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<Option<Version>, Error> {
        self.note(store);
        self.inner.get_version(store, stream).await
    }
    async fn save_subscription(
        &self,
        store: &StoreId,
        spec: SubscriptionSpec,
    ) -> Result<(), Error> {
        self.note(store);
        self.inner.save_subscription(store, spec).await
    }
    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.note(store);
        self.counts.subscribes.fetch_add(1, Ordering::Relaxed);
        self.inner.subscribe(store, key, options).await
    }
    async fn remove_subscription(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<(), Error> {
        self.note(store);
        self.inner.remove_subscription(store, key).await
    }
    async fn get_subscriptions(&self, store: &StoreId) -> Result<Vec<SubscriptionInfo>, Error> {
        self.note(store);
        self.inner.get_subscriptions(store).await
    }
    async fn ack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        self.note(store);
        self.inner.ack_event(store, key, consumer, position).await
    }
    async fn nack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        self.note(store);
        self.inner
            .nack_event(store, key, consumer, position, action)
            .await
    }
    async fn list_parked(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.note(store);
        self.inner.list_parked(store, key).await
    }
    async fn replay_parked(&self, store: &StoreId, key: &SubscriptionKey) -> Result<u64, Error> {
        self.note(store);
        self.inner.replay_parked(store, key).await
    }
    async fn record_snapshot(
        &self,
        store: &StoreId,
        key: SnapshotKey,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        self.note(store);
        self.inner.record_snapshot(store, key, data).await
    }
    async fn read_snapshot(
        &self,
        store: &StoreId,
        source: &str,
        stream: &str,
        version: Option<Version>,
    ) -> Result<Snapshot, Error> {
        self.note(store);
        self.inner
            .read_snapshot(store, source, stream, version)
            .await
    }
    async fn list_snapshots(
        &self,
        store: &StoreId,
        source: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        self.note(store);
        self.inner.list_snapshots(store, source, stream).await
    }
    async fn delete_snapshot(&self, store: &StoreId, key: &SnapshotKey) -> Result<(), Error> {
        self.note(store);
        self.inner.delete_snapshot(store, key).await
    }
    async fn create_store(&self, store: &StoreId, config: StoreConfig) -> Result<(), Error> {
        self.note(store);
        self.inner.create_store(store, config).await
    }
    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        self.note(store);
        self.inner.remove_store(store).await
    }
    async fn list_stores(&self) -> Result<Vec<StoreInfo>, Error> {
        self.counts.record(None, false);
        self.inner.list_stores().await
    }
    async fn get_store_status(&self, store: &StoreId) -> Result<StoreStatus, Error> {
        self.note(store);
        self.inner.get_store_status(store).await
    }
    async fn get_store_config(&self, store: &StoreId) -> Result<StoreConfig, Error> {
        self.note(store);
        self.inner.get_store_config(store).await
    }
    async fn reopen_store(&self, store: &StoreId) -> Result<(), Error> {
        self.note(store);
        self.inner.reopen_store(store).await
    }
    async fn verify_store(&self, store: &StoreId) -> Result<gater_core::VerifyReport, Error> {
        self.note(store);
        self.inner.verify_store(store).await
    }
    async fn delete_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        self.note(store);
        self.inner.delete_stream(store, stream, expected).await
    }
    async fn tombstone_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        self.note(store);
        self.inner.tombstone_stream(store, stream, expected).await
    }
    async fn truncate_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        before: Version,
    ) -> Result<(), Error> {
        self.note(store);
        self.inner.truncate_stream(store, stream, before).await
    }
    async fn set_stream_retention(
        &self,
        store: &StoreId,
        stream: &StreamId,
        max_count: Option<u64>,
        max_age_s: Option<u64>,
    ) -> Result<(), Error> {
        self.note(store);
        self.inner
            .set_stream_retention(store, stream, max_count, max_age_s)
            .await
    }
    async fn stream_retention(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<gater_core::StreamRetention, Error> {
        self.note(store);
        self.inner.stream_retention(store, stream).await
    }
    async fn compact_store(&self, store: &StoreId) -> Result<gater_core::Compaction, Error> {
        self.note(store);
        self.inner.compact_store(store).await
    }
    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        self.counts.record(None, false);
        self.inner.workers().await
    }
    async fn heartbeat(&self, worker: WorkerInfo) -> Result<(), Error> {
        self.counts.record(None, false);
        self.inner.heartbeat(worker).await
    }
}

/// One simulated worker: a mem server in front of a (possibly shared) store.
pub struct SimWorker {
    pub id: String,
    pub store: Store,
    pub server: MemServer,
    /// The proxy's client of this worker; its link carries the fault knobs.
    pub client: Arc<MemClient>,
    /// Requests the worker's server received (after the link).
    pub served: Arc<Counts>,
    /// Requests the proxy sent to this worker (before the link): its attempts.
    pub sent: Arc<Counts>,
}

/// Opens an embedded store in a fresh directory.
pub async fn open_store(dirs: &mut Vec<TempDir>, worker_id: &str) -> Store {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut options = StoreOptions::new(dir.path());
    options.worker_id = worker_id.to_owned();
    dirs.push(dir);
    Store::open(options).await.expect("the store opens")
}

/// Serves `store` as worker `id` with counters on both sides and client `options`.
pub fn sim_worker(id: &str, store: Store, options: MemClientOptions) -> SimWorker {
    let (counting, served) = Counting::new(Arc::new(store.clone()));
    let server = serve(counting);
    let client = Arc::new(server.client_with(options));
    let (_, sent) = Counting::new(client.clone() as BoxGater);
    SimWorker {
        id: id.to_owned(),
        store,
        server,
        client,
        served,
        sent,
    }
}

/// A cluster: workers and the proxy over them.
pub struct Cluster {
    pub proxy: Proxy,
    pub workers: Vec<SimWorker>,
    pub dirs: Vec<TempDir>,
}

impl Cluster {
    /// `n` workers, each with its own embedded store (storage per worker).
    pub async fn embedded(n: usize, config: ProxyConfig, client: MemClientOptions) -> Cluster {
        let mut dirs = Vec::new();
        let mut workers = Vec::new();
        for i in 0..n {
            let id = format!("w{i}");
            let store = open_store(&mut dirs, &id).await;
            workers.push(sim_worker(
                &id,
                store,
                MemClientOptions {
                    seed: client.seed.wrapping_add(i as u64),
                    ..client
                },
            ));
        }
        let config = ProxyConfig {
            storage: StorageMode::Embedded,
            ..config
        };
        Cluster::assemble(workers, dirs, Proxy::builder().config(config)).await
    }

    /// `n` workers in front of one store engine: every worker serves every
    /// store, as workers on a shared database do.
    pub async fn shared(n: usize, config: ProxyConfig, client: MemClientOptions) -> Cluster {
        let mut dirs = Vec::new();
        let store = open_store(&mut dirs, "shared").await;
        let workers = (0..n)
            .map(|i| {
                sim_worker(
                    &format!("w{i}"),
                    store.clone(),
                    MemClientOptions {
                        seed: client.seed.wrapping_add(i as u64),
                        ..client
                    },
                )
            })
            .collect();
        let config = ProxyConfig {
            storage: StorageMode::Shared,
            ..config
        };
        Cluster::assemble(workers, dirs, Proxy::builder().config(config)).await
    }

    async fn assemble(
        mut workers: Vec<SimWorker>,
        dirs: Vec<TempDir>,
        mut builder: ProxyBuilder,
    ) -> Cluster {
        for w in &mut workers {
            let (counting, sent) = Counting::new(w.client.clone() as BoxGater);
            w.sent = sent;
            builder = builder.worker(&w.id, format!("mem:{}", w.id), Arc::new(counting));
        }
        let proxy = builder.build().await.expect("the proxy builds");
        Cluster {
            proxy,
            workers,
            dirs,
        }
    }

    pub fn worker(&self, id: &str) -> &SimWorker {
        self.workers
            .iter()
            .find(|w| w.id == id)
            .expect("a worker of the cluster")
    }
}

/// Connects to simulated workers by address (`mem:<id>`).
#[derive(Default)]
pub struct MemConnector {
    servers: Mutex<HashMap<String, (MemServer, Arc<Counts>)>>,
}

impl MemConnector {
    /// Makes `server` reachable at `address`; returns the counts of what the proxy sends it.
    pub fn add(&self, address: &str, server: MemServer) -> Arc<Counts> {
        let counts = Arc::new(Counts::default());
        self.servers
            .lock()
            .unwrap()
            .insert(address.to_owned(), (server, Arc::clone(&counts)));
        counts
    }
}

#[async_trait]
impl Connector for MemConnector {
    async fn connect(&self, address: &str) -> Result<BoxGater, Error> {
        let (server, counts) = self
            .servers
            .lock()
            .unwrap()
            .get(address)
            .cloned()
            .ok_or_else(|| {
                Error::unavailable(gater_core::Side::Worker, format!("nothing at {address}"))
            })?;
        Ok(Arc::new(Counting {
            inner: Arc::new(server.client()),
            counts,
        }))
    }
}

/// A short pause in simulated time (tests run with a paused clock).
pub async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
}
