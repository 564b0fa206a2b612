//! The engine: [`Store`] serves every store found in its data directory and
//! implements [`Gater`] over them.
//!
//! Per store it runs one writer task (group commit, see `writer`), publishes
//! the head of the global log on a watch channel after each commit, and hosts
//! the store's subscriptions. It validates every request before it reaches
//! the writer or the backend.
//!
//! Over a shared backend (PostgreSQL) other workers create, remove and
//! append to the same stores: the engine then opens a store it does not know
//! when a request names it, and polls each store's head so that
//! subscriptions see commits made elsewhere.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use gater_core::memory::ByteBudget;
use gater_core::wire::{EncodedRequest, Response};
use gater_core::{
    Append, AppendOutcome, AppendResult, Compaction, ConsumerId, Direction, Error, EventData,
    ExpectedVersion, Gater, Limits, NackAction, Position, Query, RecordedEvent, Resource,
    Retention, Snapshot, SnapshotKey, StoreConfig, StoreFault, StoreId, StoreInfo, StoreState,
    StoreStatus, StreamId, StreamPage, StreamRetention, SubscribeOptions, Subscription,
    SubscriptionEnd, SubscriptionInfo, SubscriptionKey, SubscriptionSpec, VerifyReport, Version,
    WorkerHealth, WorkerInfo,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::backend::{Backend, BackendStore, PendingAppend, PendingPart};
use crate::embedded::EmbeddedBackend;
use crate::faults::{HealOptions, Health};
use crate::lease::{Claim, Claimant, Fence};
use crate::lifecycle::{Clock, Hidden, LifecycleChange, Source, View};
use crate::metrics::StoreMetrics;
use crate::misses::Misses;
use crate::subscription::{
    PeerConnector, PeerSlot, SubscriptionLog, SubscriptionRecord, Subscriptions,
};
use crate::validate;
use crate::writer::{AppendRequest, BatchBounds, ReopenRequest, Writer};

/// How a [`Store`] is set up.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Directory holding every store (the worker's database, `<data_dir>/db`);
    /// unused by `Store::open_postgres`.
    pub data_dir: PathBuf,
    /// This worker's id, reported by `workers()` and in store listings.
    pub worker_id: String,
    /// Where this worker is reached (`host:port`, or `mem` in-process).
    pub address: String,
    /// The limits enforced on requests.
    pub limits: Limits,
    /// Most appends the writer commits in one batch.
    pub batch_appends_max: u32,
    /// A batch stops taking appends once it holds this many events.
    pub batch_events_max: u32,
    /// On shared storage, how long a worker's lease of a persistent
    /// subscription holds without renewal: a dead worker's subscriptions
    /// move to another worker within it. Milliseconds.
    pub lease_period_ms: u64,
    /// How a store heals after a disk fault.
    pub heal: HealOptions,
    /// The clock retention by age is measured with.
    pub clock: Clock,
    /// A store compacts by itself, in the background, once the events its
    /// lifecycle changes hid since its last compaction reach this share of
    /// its log, in percent; 0 never starts one.
    pub compact_hidden_share_percent: u8,
    /// How often each store checks, in the background, how many events
    /// retention by age hid since its last compaction (age hides events as
    /// time passes, with no change to count), starting a compaction when
    /// they reach `compact_hidden_share_percent`; milliseconds, 0 never.
    pub compact_age_check_interval_ms: u64,
    /// The server's memory budget: deliveries waiting in subscription
    /// consumers' buffers hold their bytes in it until taken (`None`: not counted).
    pub memory_budget: Option<Arc<dyn ByteBudget>>,
    /// Bytes of the embedded database's block cache, shared by every store
    /// of the worker: recently read blocks of the log and the indexes, kept
    /// decompressed. Reads that miss it go to the files (the OS page cache
    /// at best); unused by `Store::open_postgres`.
    pub block_cache_bytes: u64,
}

impl StoreOptions {
    /// Default most appends per batch.
    pub const BATCH_APPENDS_MAX_DEFAULT: u32 = 1024;
    /// Default share of hidden events, in percent, that starts a background compaction.
    pub const COMPACT_HIDDEN_SHARE_PERCENT_DEFAULT: u8 = 25;
    /// Default interval of the background check of what age hid: a minute.
    pub const COMPACT_AGE_CHECK_INTERVAL_MS_DEFAULT: u64 = 60_000;
    /// Default events per batch before it stops taking appends.
    pub const BATCH_EVENTS_MAX_DEFAULT: u32 = 16_384;
    /// Default block cache: 256 MiB, a query's scattered events stay in
    /// memory for a store of about half a million events of 400 bytes
    /// (fjall's own default is 32 MiB).
    pub const BLOCK_CACHE_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

    /// Options with the default limits and batch bounds, worker id `worker` and address `mem`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            data_dir: data_dir.into(),
            worker_id: "worker".to_owned(),
            address: "mem".to_owned(),
            limits: Limits::DEFAULT,
            batch_appends_max: Self::BATCH_APPENDS_MAX_DEFAULT,
            batch_events_max: Self::BATCH_EVENTS_MAX_DEFAULT,
            lease_period_ms: crate::lease::LEASE_PERIOD_MS_DEFAULT,
            heal: HealOptions::default(),
            clock: Clock::default(),
            compact_hidden_share_percent: Self::COMPACT_HIDDEN_SHARE_PERCENT_DEFAULT,
            compact_age_check_interval_ms: Self::COMPACT_AGE_CHECK_INTERVAL_MS_DEFAULT,
            memory_budget: None,
            block_cache_bytes: Self::BLOCK_CACHE_BYTES_DEFAULT,
        }
    }
}

/// An embedded event-store worker: every store of one data directory, served through [`Gater`].
///
/// Stores survive a restart: [`Store::open`] reopens each store it finds.
/// Call [`Store::shutdown`] for a graceful stop; dropping the last handle
/// closes the stores' files too, without waiting for subscriptions.
#[derive(Clone, Debug)]
pub struct Store {
    engine: Arc<Engine>,
}

#[derive(Debug)]
struct Engine {
    options: StoreOptions,
    backend: Arc<dyn Backend>,
    stores: RwLock<BTreeMap<StoreId, Arc<StoreHandle>>>,
    /// Serialises creations and removals, which span several awaits.
    admin: tokio::sync::Mutex<()>,
    /// This worker process as it claims subscription leases.
    claimant: Claimant,
    /// Reaches other workers of a shared storage (set by the application).
    peers: PeerSlot,
    /// Stores a shared backend recently said do not exist.
    misses: Misses,
    /// Stores whose storage would not open, and why: listed as `Failed`,
    /// retried with back-off (see `Engine::retry_broken`).
    broken: Mutex<BTreeMap<StoreId, String>>,
    /// What the writers measure.
    metrics: Arc<StoreMetrics>,
}

/// One open store.
struct StoreHandle {
    id: StoreId,
    config: StoreConfig,
    backend: Arc<dyn BackendStore>,
    appends: mpsc::Sender<AppendRequest>,
    stopping: AtomicBool,
    stop: watch::Sender<bool>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Polls the head for other workers' commits (shared backends only).
    poll: Option<JoinHandle<()>>,
    subscriptions: Arc<Subscriptions>,
    /// The head as published after each commit.
    head: watch::Receiver<Option<Position>>,
    /// Whether it takes appends (see `faults`); the writer changes it.
    health: Arc<Health>,
    /// Forced reopens, served by the writer.
    reopens: mpsc::Sender<ReopenRequest>,
    /// Held while a compaction runs: one at a time per store.
    compaction: Arc<tokio::sync::Mutex<()>>,
    /// Events lifecycle changes hid since the last compaction (an estimate:
    /// truncation and count retention; age is `age_mark_at_compaction`'s).
    hidden_since_compaction: AtomicU64,
    /// `View::age_mark` when the background age check last started a
    /// compaction (0 at open: what aged out before counts once).
    age_mark_at_compaction: AtomicU64,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backend")
    }
}

impl LogView {
    /// A record found missing may be gone with its store (removed, maybe
    /// created again): then the store is stopping, not the subscription removed.
    async fn check_incarnation(&self) -> Result<(), Error> {
        let _ = self.backend.refresh_head().await;
        if self.backend.gone() {
            return Err(Error::StoreStopping {
                store: self.store.to_string(),
            });
        }
        Ok(())
    }
}

/// The store's log as the subscription engine sees it.
struct LogView {
    store: StoreId,
    backend: Arc<dyn BackendStore>,
    head: watch::Receiver<Option<Position>>,
    claimant: Claimant,
    /// The store's default retention, for what subscriptions see.
    retention: Retention,
    /// The clock retention by age is measured with.
    clock: Clock,
}

impl Store {
    /// Opens the data directory and every store in it.
    pub async fn open(options: StoreOptions) -> Result<Store, Error> {
        let dir = options.data_dir.clone();
        let cache = options.block_cache_bytes;
        let backend = tokio::task::spawn_blocking(move || EmbeddedBackend::open(&dir, cache))
            .await
            .map_err(|e| Error::Storage(format!("opening the data directory failed: {e}")))??;
        Store::open_over(options, Arc::new(backend)).await
    }

    /// Opens a worker over `backend` and every store it lists now.
    pub(crate) async fn open_over(
        options: StoreOptions,
        backend: Arc<dyn Backend>,
    ) -> Result<Store, Error> {
        let engine = Engine::new(options, backend);
        let mut broken = Vec::new();
        for id in engine.backend.list_stores().await? {
            match engine.open_one(&id).await {
                Ok(handle) => {
                    engine.write_stores().insert(id, handle);
                }
                Err(error) => {
                    // One damaged store does not keep the worker from serving the others.
                    tracing::error!(store = %id, %error, "the store cannot open; it is failed and retried with back-off");
                    engine.broken().insert(id.clone(), failure_reason(&error));
                    broken.push(id);
                }
            }
        }
        let engine = Arc::new(engine);
        for id in broken {
            tokio::spawn(Engine::retry_broken(Arc::downgrade(&engine), id));
        }
        Ok(Store { engine })
    }

    /// Opens a worker over the stores of a PostgreSQL database, which any
    /// number of workers may share (`data_dir` of `options` is not used).
    ///
    /// The database need not be reachable yet: requests get a retryable
    /// [`Error::Unavailable`] (side `Storage`) until it is, and stores are
    /// opened as requests name them. A malformed URL is refused at once.
    #[cfg(feature = "postgres")]
    pub async fn open_postgres(
        options: StoreOptions,
        postgres: crate::PostgresOptions,
    ) -> Result<Store, Error> {
        let backend = crate::postgres::PostgresBackend::new(&postgres)?;
        let engine = Engine::new(options, Arc::new(backend));
        {
            let _admin = engine.admin.lock().await;
            if let Err(error) = engine.sync_stores().await {
                let url = crate::postgres::redact_url(&postgres.url);
                tracing::warn!(%error, %url, "PostgreSQL is not reachable yet; stores open once it is");
            }
        }
        Ok(Store {
            engine: Arc::new(engine),
        })
    }

    /// Stops every store gracefully: consumers end with `Shutdown`, queued
    /// appends finish or are refused, files are flushed and closed (the
    /// worker's database too, so the data directory can be opened again).
    pub async fn shutdown(&self) {
        let _admin = self.engine.admin.lock().await;
        let handles: Vec<_> = std::mem::take(&mut *self.engine.write_stores())
            .into_values()
            .collect();
        for handle in handles {
            handle.stop(SubscriptionEnd::Shutdown).await;
            if let Err(error) = handle.backend.close().await {
                tracing::warn!(store = %handle.id, %error, "closing a store failed");
            }
        }
        self.engine.backend.close();
    }
}

impl Store {
    /// Every store this worker holds, opened or failed to open, in id order.
    fn served(&self) -> Vec<StoreId> {
        let mut stores: Vec<StoreId> = self.engine.read_stores().keys().cloned().collect();
        stores.extend(self.engine.broken().keys().cloned());
        stores.sort();
        stores
    }

    /// The stores that refuse appends now, and why.
    fn faults(&self) -> Vec<StoreFault> {
        let mut faults: Vec<StoreFault> = self
            .engine
            .read_stores()
            .values()
            .filter_map(|handle| handle.health.report(&handle.id))
            .collect();
        faults.extend(self.engine.broken().iter().map(|(id, reason)| StoreFault {
            store: id.clone(),
            state: StoreState::Failed,
            reason: reason.clone(),
        }));
        faults
    }

    /// Makes the next commit of `store` fail as `fault` says, as a failing
    /// disk would: the seam the disk-fault tests use. Debug builds only.
    #[cfg(debug_assertions)]
    pub fn inject_fault(&self, store: &StoreId, fault: crate::InjectedFault) -> Result<(), Error> {
        let handle = self.engine.handle(store)?;
        if handle.backend.inject_fault(fault) {
            return Ok(());
        }
        Err(Error::Unsupported(
            "inject_fault: this backend has no fault seam".into(),
        ))
    }

    /// Lets this worker reach the others of its shared storage, to relay
    /// consumers of a persistent subscription whose lease another worker
    /// holds. Set once; later calls are ignored. Without it such consumers
    /// are refused with `Unavailable`.
    pub fn connect_peers(&self, connector: Arc<dyn PeerConnector>) {
        let _ = self.engine.peers.set(connector);
    }

    /// What this engine's writers measured: batch sizes, durable-commit
    /// times and events appended per store.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.engine.metrics
    }

    /// Log records `store` has read back for reads and subscriptions since
    /// it was opened here, index entries not counted: how much of the log
    /// the read paths touch (a query for a rare tag reads its few events,
    /// not the log). `None` when the backend does not count them
    /// (PostgreSQL).
    pub fn records_read(&self, store: &StoreId) -> Result<Option<u64>, Error> {
        Ok(self.engine.handle(store)?.backend.records_read())
    }
}

impl Store {
    /// Applies a lifecycle change to `stream` of `store`.
    async fn change_lifecycle(
        &self,
        store: &StoreId,
        stream: &StreamId,
        change: LifecycleChange,
    ) -> Result<(), Error> {
        validate::writable_stream(stream)?;
        let handle = self.engine.serving(store).await?;
        if let Some(refusal) = handle.health.refusal(&handle.id) {
            return Err(refusal);
        }
        let before = self.engine.view(&handle).await?.lifecycle(stream.as_str());
        handle.backend.change_lifecycle(stream, change).await?;
        let after = self.engine.view(&handle).await?.lifecycle(stream.as_str());
        if let Some(last) = handle.backend.version(stream).await? {
            let default = handle.config.retention;
            let first = |state: gater_core::StreamLifecycle| {
                if state.tombstoned {
                    last + 1
                } else {
                    state.first_shown(default, last).min(last + 1)
                }
            };
            let hidden = first(after).saturating_sub(first(before));
            self.engine.note_hidden(&handle, hidden);
        }
        Ok(())
    }
}

impl Engine {
    /// What readers of `handle`'s store see now.
    async fn view(&self, handle: &StoreHandle) -> Result<View, Error> {
        let lifecycles = handle.backend.lifecycles().await?;
        Ok(View::new(
            lifecycles,
            handle.config.retention,
            self.options.clock.now_us(),
        ))
    }

    /// Counts `hidden` more events hidden in `handle`'s store, and starts a
    /// compaction in the background when they reach the configured share.
    fn note_hidden(&self, handle: &Arc<StoreHandle>, hidden: u64) {
        let share = u64::from(self.options.compact_hidden_share_percent);
        if share == 0 || hidden == 0 {
            return;
        }
        let total = handle
            .hidden_since_compaction
            .fetch_add(hidden, Ordering::Relaxed)
            + hidden;
        let events = handle.backend.counters().event_count.max(1);
        if total.saturating_mul(100) < share.saturating_mul(events) {
            return;
        }
        start_compaction(handle, &self.options.clock);
    }

    fn new(options: StoreOptions, backend: Arc<dyn Backend>) -> Engine {
        let claimant = Claimant {
            // Unique per process: a restarted worker with the same id is a new holder.
            holder: format!("{}/{}", options.worker_id, now_us()),
            address: options.address.clone(),
            period: Duration::from_millis(options.lease_period_ms.max(1)),
        };
        Engine {
            options,
            backend,
            stores: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            claimant,
            peers: PeerSlot::default(),
            misses: Misses::default(),
            broken: Mutex::new(BTreeMap::new()),
            metrics: Arc::new(StoreMetrics::default()),
        }
    }

    fn broken(&self) -> std::sync::MutexGuard<'_, BTreeMap<StoreId, String>> {
        // Every critical section is a single insert, remove or read.
        self.broken.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a listed store and starts serving it.
    async fn open_one(&self, id: &StoreId) -> Result<Arc<StoreHandle>, Error> {
        let backend = self.backend.open_store(id).await?;
        self.start(id.clone(), backend).await
    }

    /// Tries to open a store that would not open, once; on success it is
    /// served from then on. The caller holds `admin`.
    async fn open_broken(&self, id: &StoreId) -> Result<(), Error> {
        if !self.broken().contains_key(id) {
            return Ok(());
        }
        match self.open_one(id).await {
            Ok(handle) => {
                self.write_stores().insert(id.clone(), handle);
                self.broken().remove(id);
                tracing::info!(store = %id, "the store opened and is served again");
                Ok(())
            }
            Err(error) => {
                if let Some(reason) = self.broken().get_mut(id) {
                    *reason = failure_reason(&error);
                }
                Err(error)
            }
        }
    }

    /// Retries opening a store that would not open, with exponential
    /// back-off, logging each attempt, until it opens, is removed or the
    /// worker is gone.
    async fn retry_broken(engine: std::sync::Weak<Engine>, id: StoreId) {
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let Some(wait) = engine.upgrade().map(|e| e.options.heal.backoff(attempt)) else {
                return;
            };
            tokio::time::sleep(wait).await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let _admin = engine.admin.lock().await;
            if !engine.broken().contains_key(&id) {
                return;
            }
            tracing::warn!(store = %id, attempt, "opening a failed store again");
            match engine.open_broken(&id).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(store = %id, attempt, %error, "the store still cannot open");
                }
            }
        }
    }

    /// The error requests for a store that would not open get.
    fn broken_error(&self, store: &StoreId) -> Option<Error> {
        let reason = self.broken().get(store).cloned()?;
        Some(Error::StorageFailed {
            store: store.to_string(),
            message: reason,
        })
    }

    fn read_stores(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<StoreId, Arc<StoreHandle>>> {
        // A panic while holding this lock cannot leave the map half-updated:
        // every critical section is a single insert, remove or read.
        self.stores.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_stores(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<StoreId, Arc<StoreHandle>>> {
        self.stores.write().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, store: &StoreId) -> Result<Arc<StoreHandle>, Error> {
        if let Some(handle) = self.read_stores().get(store) {
            return Ok(Arc::clone(handle));
        }
        Err(self
            .broken_error(store)
            .unwrap_or_else(|| Error::not_found(Resource::Store, store)))
    }

    /// The store, if it exists and is not being removed; over a shared
    /// backend, a store another worker created is opened first.
    async fn serving(&self, store: &StoreId) -> Result<Arc<StoreHandle>, Error> {
        let handle = self.known(store).await?;
        if handle.stopping.load(Ordering::Acquire) {
            return Err(handle.stopping_error());
        }
        Ok(handle)
    }

    /// The store, running or stopping; over a shared backend, a store
    /// another worker created is opened first.
    async fn known(&self, store: &StoreId) -> Result<Arc<StoreHandle>, Error> {
        match self.handle(store) {
            Ok(handle) if handle.backend.gone() => {
                let _admin = self.admin.lock().await;
                self.discover(store).await
            }
            Err(_) if self.backend.shared() => {
                if self.misses.recent(store) {
                    return Err(Error::not_found(Resource::Store, store));
                }
                let _admin = self.admin.lock().await;
                let found = self.discover(store).await;
                if let Err(Error::NotFound {
                    resource: Resource::Store,
                    ..
                }) = &found
                {
                    self.misses.note(store);
                }
                found
            }
            found => found,
        }
    }

    /// Stops and forgets the handle of `store` if another worker removed
    /// that incarnation: its consumers end with `StoreRemoved`, its writer
    /// and subscription tasks stop. The caller holds `admin`.
    async fn drop_gone(&self, store: &StoreId) {
        let gone = {
            let mut stores = self.write_stores();
            match stores.get(store) {
                Some(handle) if handle.backend.gone() => stores.remove(store),
                _ => None,
            }
        };
        if let Some(handle) = gone {
            tracing::info!(store = %store, incarnation = handle.backend.incarnation(), "dropping a store another worker removed");
            handle.stop(SubscriptionEnd::StoreRemoved).await;
            let _ = handle.backend.close().await;
        }
    }

    /// The store, running or stopping; over a shared backend it is opened
    /// if another worker created it, and opened anew if another worker
    /// removed the incarnation this worker had open. The caller holds `admin`.
    async fn discover(&self, store: &StoreId) -> Result<Arc<StoreHandle>, Error> {
        self.drop_gone(store).await;
        if let Ok(handle) = self.handle(store) {
            return Ok(handle);
        }
        if !self.backend.shared() {
            return Err(Error::not_found(Resource::Store, store));
        }
        let backend = self.backend.open_store(store).await?;
        let handle = self.start(store.clone(), backend).await?;
        self.write_stores()
            .insert(store.clone(), Arc::clone(&handle));
        Ok(handle)
    }

    /// Brings the open stores in line with a shared backend's list: opens
    /// new ones, stops those another worker removed. The caller holds `admin`.
    async fn sync_stores(&self) -> Result<(), Error> {
        let listed = self.backend.list_stores().await?;
        let gone: Vec<Arc<StoreHandle>> = {
            let mut stores = self.write_stores();
            let ids: Vec<StoreId> = stores
                .iter()
                .filter(|(id, handle)| listed.binary_search(id).is_err() || handle.backend.gone())
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| stores.remove(id)).collect()
        };
        for handle in gone {
            handle.stop(SubscriptionEnd::StoreRemoved).await;
            let _ = handle.backend.close().await;
        }
        for id in listed {
            if let Err(error) = self.discover(&id).await {
                tracing::warn!(store = %id, %error, "cannot open a store of the shared database");
            }
        }
        Ok(())
    }

    /// Starts serving an opened store: its writer and its subscriptions.
    async fn start(
        &self,
        id: StoreId,
        backend: Arc<dyn BackendStore>,
    ) -> Result<Arc<StoreHandle>, Error> {
        let config = backend.config();
        let (head_tx, head_rx) = watch::channel(backend.counters().head);
        let log = Arc::new(LogView {
            store: id.clone(),
            backend: backend.clone(),
            head: head_rx.clone(),
            claimant: self.claimant.clone(),
            retention: config.retention,
            clock: self.options.clock.clone(),
        });
        let opened = Subscriptions::open_with_peers(
            id.clone(),
            log,
            self.options.address.clone(),
            Arc::clone(&self.peers),
            self.options.memory_budget.clone(),
        );
        let subscriptions = match opened.await {
            Ok(subscriptions) => {
                subscriptions.with_window_max(self.options.limits.subscription_window_max)
            }
            Err(error) => {
                let _ = backend.close().await;
                return Err(error);
            }
        };
        let queue_len = self.options.limits.append_queue_len.max(1) as usize;
        let (appends, queue) = mpsc::channel(queue_len);
        let (reopens, reopen_queue) = mpsc::channel(REOPEN_QUEUE_LEN);
        let health = Arc::new(Health::default());
        let (stop, stop_rx) = watch::channel(false);
        let age_stop = stop_rx.clone();
        let poll = backend.head_poll_interval().map(|interval| {
            tokio::spawn(poll_head(
                id.clone(),
                backend.clone(),
                head_tx.clone(),
                stop_rx.clone(),
                interval,
                Arc::downgrade(&subscriptions),
            ))
        });
        let writer = Writer {
            store: id.clone(),
            backend: backend.clone(),
            queue,
            stop: stop_rx,
            head: head_tx,
            metrics: Arc::clone(&self.metrics),
            appended: self.metrics.appended_counter(&id),
            durable: config.fsync,
            bounds: BatchBounds {
                group_commit: config.group_commit,
                appends_max: self.options.batch_appends_max.max(1) as usize,
                events_max: self.options.batch_events_max.max(1) as usize,
            },
            health: Arc::clone(&health),
            reopens: reopen_queue,
            heal: self.options.heal,
        };
        let handle = Arc::new(StoreHandle {
            id,
            config,
            backend,
            appends,
            stopping: AtomicBool::new(false),
            stop,
            writer: Mutex::new(Some(tokio::spawn(writer.run()))),
            poll,
            subscriptions,
            head: head_rx,
            health,
            reopens,
            compaction: Arc::new(tokio::sync::Mutex::new(())),
            hidden_since_compaction: AtomicU64::new(0),
            age_mark_at_compaction: AtomicU64::new(0),
        });
        let share = u64::from(self.options.compact_hidden_share_percent);
        let interval = self.options.compact_age_check_interval_ms;
        if share > 0 && interval > 0 {
            tokio::spawn(check_age(
                Arc::downgrade(&handle),
                age_stop,
                Duration::from_millis(interval),
                share,
                self.options.clock.clone(),
            ));
        }
        Ok(handle)
    }

    /// The store's state and, when it refuses appends, why.
    fn state(handle: &StoreHandle) -> (StoreState, Option<String>) {
        if handle.stopping.load(Ordering::Acquire) {
            return (StoreState::Stopping, None);
        }
        handle.health.state()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Release the files now so the data directory can be opened again at
        // once; tasks still holding a store then get `StoreStopping`.
        for handle in self.write_stores().values() {
            handle.stopping.store(true, Ordering::Release);
            let _ = handle.stop.send(true);
            handle.backend.release();
        }
    }
}

impl StoreHandle {
    /// A receiver of the head published after each commit.
    #[cfg(test)]
    fn subscriptions_head(&self) -> watch::Receiver<Option<Position>> {
        self.head.clone()
    }

    fn stopping_error(&self) -> Error {
        Error::StoreStopping {
            store: self.id.to_string(),
        }
    }

    /// Refuses new requests, ends the subscriptions and waits for the writer.
    async fn stop(&self, end: SubscriptionEnd) {
        self.stopping.store(true, Ordering::Release);
        self.subscriptions.shutdown(end).await;
        let _ = self.stop.send(true);
        if let Some(poll) = &self.poll {
            poll.abort();
        }
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            if let Err(error) = writer.await {
                tracing::error!(store = %self.id, %error, "store writer task failed");
            }
        }
    }
}

/// Most forced reopens of one store waiting for its writer.
const REOPEN_QUEUE_LEN: usize = 8;

/// A failure in words, for a store's `reason`: the message of a storage
/// error, without the kind's prefix.
fn failure_reason(error: &Error) -> String {
    match error {
        Error::StorageFailed { message, .. } | Error::StorageFull { message, .. } => {
            message.clone()
        }
        other => other.to_string(),
    }
}

/// Starts a compaction of `handle`'s store in the background, unless one
/// runs; the lock is taken before this returns, so a compaction asked for
/// later waits for this one.
fn start_compaction(handle: &Arc<StoreHandle>, clock: &Clock) {
    let Ok(running) = Arc::clone(&handle.compaction).try_lock_owned() else {
        return; // one is running already
    };
    handle.hidden_since_compaction.store(0, Ordering::Relaxed);
    let (handle, clock) = (Arc::clone(handle), clock.clone());
    tokio::spawn(async move {
        let _running = running;
        let lifecycles = match handle.backend.lifecycles().await {
            Ok(lifecycles) => lifecycles,
            Err(error) => {
                tracing::warn!(store = %handle.id, %error, "background compaction did not start");
                return;
            }
        };
        let view = View::new(lifecycles, handle.config.retention, clock.now_us());
        match handle.backend.compact(&view).await {
            Ok(done) => {
                let removed = done.removed;
                tracing::info!(store = %handle.id, removed, "background compaction done")
            }
            Err(error) => {
                tracing::warn!(store = %handle.id, %error, "background compaction failed")
            }
        }
    });
}

/// Every `interval` until the store stops: estimates the events retention
/// by age hid since the last compaction this check started
/// (`View::age_mark`) and starts one when they reach `share` percent of
/// the log.
async fn check_age(
    handle: std::sync::Weak<StoreHandle>,
    mut stop: watch::Receiver<bool>,
    interval: Duration,
    share: u64,
    clock: Clock,
) {
    let mut tick = ticks(interval);
    while next_tick(&mut tick, &mut stop).await {
        let Some(handle) = handle.upgrade() else {
            return;
        };
        let lifecycles = match handle.backend.lifecycles().await {
            Ok(lifecycles) => lifecycles,
            Err(Error::StoreStopping { .. }) => return,
            Err(error) => {
                tracing::debug!(store = %handle.id, %error, "age check failed; checking on");
                continue;
            }
        };
        let view = View::new(lifecycles, handle.config.retention, clock.now_us());
        if !view.ages_out() {
            continue;
        }
        let mark = match view.age_mark(&*handle.backend).await {
            Ok(mark) => mark,
            Err(error) => {
                tracing::debug!(store = %handle.id, %error, "age check failed; checking on");
                continue;
            }
        };
        let aged = mark.saturating_sub(handle.age_mark_at_compaction.load(Ordering::Relaxed));
        let events = handle.backend.counters().event_count.max(1);
        if aged.saturating_mul(100) >= share.saturating_mul(events) {
            handle.age_mark_at_compaction.store(mark, Ordering::Relaxed);
            start_compaction(&handle, &clock);
        }
    }
}

/// Publishes the head committed by any worker every `interval`, until the store stops.
async fn poll_head(
    store: StoreId,
    backend: Arc<dyn BackendStore>,
    head: watch::Sender<Option<Position>>,
    mut stop: watch::Receiver<bool>,
    interval: Duration,
    subscriptions: std::sync::Weak<Subscriptions>,
) {
    let mut tick = ticks(interval);
    while next_tick(&mut tick, &mut stop).await {
        match backend.refresh_head().await {
            // Only forward: this worker's writer may have published a later head meanwhile.
            Ok(latest) => crate::writer::publish_head(&head, latest),
            Err(Error::StoreStopping { .. }) => {
                // Removed by another worker: its consumers end now, not at
                // the next request that finds the handle stale.
                if backend.gone() {
                    if let Some(subscriptions) = subscriptions.upgrade() {
                        subscriptions.shutdown(SubscriptionEnd::StoreRemoved).await;
                    }
                }
                return;
            }
            Err(error) => tracing::debug!(%store, %error, "polling the head failed; polling on"),
        }
    }
}

/// Microseconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[async_trait]
impl SubscriptionLog for LogView {
    /// Clipped to the published head, so catch-up never runs ahead of what
    /// the head watch has announced.
    async fn read_all_forward(
        &self,
        from: Position,
        count: u32,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let head = *self.head.borrow();
        let Some(head) = head.filter(|h| from <= *h) else {
            return Ok(Vec::new());
        };
        let available = head.0 - from.0 + 1;
        let count = u32::try_from(available).map_or(count, |a| a.min(count));
        if count == 0 {
            return Ok(Vec::new());
        }
        self.backend.read_all(from, count, Direction::Forward).await
    }

    /// Reads past hidden events up to the published head.
    async fn read_visible_forward(
        &self,
        from: Position,
        count: u32,
    ) -> Result<(Vec<RecordedEvent>, Position), Error> {
        let lifecycles = self.backend.lifecycles().await?;
        let view = View::new(lifecycles, self.retention, self.clock.now_us());
        let mut from = from;
        loop {
            let raw = self.read_all_forward(from, count).await?;
            let Some(last) = raw.last() else {
                return Ok((Vec::new(), from));
            };
            from = last.position.next();
            let shown = view.filter(&*self.backend, raw).await?;
            if !shown.is_empty() {
                return Ok((shown, from));
            }
        }
    }

    /// From the backend's indexes, through the same view as every read,
    /// clipped to the published head: a page that is not full, or reaches
    /// past the head, covers everything up to it.
    async fn read_query_forward(
        &self,
        query: &Query,
        from: Position,
        count: u32,
    ) -> Result<(Vec<RecordedEvent>, Position), Error> {
        let head = *self.head.borrow();
        let Some(head) = head.filter(|h| from <= *h) else {
            return Ok((Vec::new(), from));
        };
        let lifecycles = self.backend.lifecycles().await?;
        let view = View::new(lifecycles, self.retention, self.clock.now_us());
        let (mut events, next) = view
            .read(
                &*self.backend,
                Source::Query(query),
                from.0,
                count,
                Direction::Forward,
            )
            .await?;
        let full = events.len() >= count as usize;
        events.retain(|event| event.position <= head);
        let next = match next {
            Some(next) if full && next <= head.0 => Position(next),
            _ => head.next(),
        };
        Ok((events, next))
    }

    fn watch_head(&self) -> watch::Receiver<Option<Position>> {
        self.head.clone()
    }

    async fn load_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error> {
        self.backend.load_subscriptions().await
    }

    async fn put_subscription(&self, record: &SubscriptionRecord) -> Result<(), Error> {
        self.backend.put_subscription(record).await
    }

    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error> {
        self.backend.delete_subscription(key).await
    }

    fn shared(&self) -> bool {
        self.backend.shared()
    }

    async fn load_subscription(
        &self,
        key: &SubscriptionKey,
    ) -> Result<Option<SubscriptionRecord>, Error> {
        self.backend.load_subscription(key).await
    }

    async fn claim_lease(&self, key: &SubscriptionKey) -> Result<Claim, Error> {
        let claim = self.backend.claim_lease(key, &self.claimant).await?;
        if claim == Claim::Removed {
            self.check_incarnation().await?;
        }
        Ok(claim)
    }

    async fn release_lease(&self, key: &SubscriptionKey, epoch: u64) -> Result<(), Error> {
        self.backend
            .release_lease(key, &self.claimant.holder, epoch)
            .await
    }

    async fn put_subscription_fenced(
        &self,
        record: &SubscriptionRecord,
        epoch: u64,
    ) -> Result<Fence, Error> {
        let fence = self
            .backend
            .put_subscription_fenced(record, &self.claimant.holder, epoch)
            .await?;
        if fence == Fence::Removed {
            self.check_incarnation().await?;
        }
        Ok(fence)
    }

    fn lease_period(&self) -> Duration {
        self.claimant.period
    }

    /// Not clipped to the head: on shared storage another worker's commit
    /// may be parked here before this worker's head poll announces it.
    async fn read_committed(&self, position: Position) -> Result<Option<RecordedEvent>, Error> {
        let events = self
            .backend
            .read_all(position, 1, Direction::Forward)
            .await?;
        Ok(events.into_iter().find(|e| e.position == position))
    }
}

/// Requests at least this large are decoded on the blocking pool: decoding
/// megabytes on a runtime worker holds back the tasks queued behind it there,
/// a QUIC connection's driver among them (its peer then times the connection
/// out).
const BLOCKING_DECODE_BYTES_MIN: usize = 1024 * 1024;

#[async_trait]
impl Gater for Store {
    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        let request = if request.bytes().len() >= BLOCKING_DECODE_BYTES_MIN {
            tokio::task::spawn_blocking(move || request.decode())
                .await
                .map_err(|e| Error::Protocol(format!("request decoding failed: {e}")))??
        } else {
            request.decode()?
        };
        self.call(request, within).await
    }

    async fn append_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, Error> {
        let append = Append::single(stream.clone(), expected, events);
        Ok(self.append(store, append).await?.single())
    }

    async fn append(&self, store: &StoreId, append: Append) -> Result<AppendOutcome, Error> {
        validate::append(&self.engine.options.limits, &append)?;
        let handle = self.engine.serving(store).await?;
        if let Some(refusal) = handle.health.refusal(&handle.id) {
            return Err(refusal);
        }
        let mut parts = Vec::with_capacity(append.parts.len());
        for part in append.parts {
            let encoded = part
                .events
                .iter()
                .map_while(|event| handle.backend.encode_event(event))
                .collect::<Result<Vec<_>, Error>>()?;
            parts.push(PendingPart {
                stream: part.stream,
                expected: part.expected,
                events: part.events,
                encoded,
            });
        }
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            append: PendingAppend {
                parts,
                condition: append.condition,
            },
            reply,
        };
        if handle.appends.send(request).await.is_err() {
            return Err(handle.stopping_error());
        }
        answer.await.map_err(|_| handle.stopping_error())?
    }

    async fn read_query(
        &self,
        store: &StoreId,
        query: &Query,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        validate::read_count(&self.engine.options.limits, count)?;
        query.validate()?;
        let handle = self.engine.serving(store).await?;
        let source = if query.items.is_empty() {
            Source::All
        } else {
            Source::Query(query)
        };
        let view = self.engine.view(&handle).await?;
        let (mut page, _) = view
            .read(&*handle.backend, source, from.0, count, direction)
            .await?;
        gater_core::page::fit_in_frame(&mut page, self.engine.options.limits.frame_bytes_max);
        Ok(page)
    }

    async fn get_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        validate::read_count(&self.engine.options.limits, count)?;
        validate::writable_stream(stream)?;
        let handle = self.engine.serving(store).await?;
        let view = self.engine.view(&handle).await?;
        view.check_not_tombstoned(stream)?;
        let start = match direction {
            Direction::Forward if !view.hides_nothing() => {
                match handle.backend.version(stream).await? {
                    Some(last) => start.max(
                        view.lifecycle(stream.as_str())
                            .first_shown(handle.config.retention, last),
                    ),
                    None => start,
                }
            }
            _ => start,
        };
        let (mut page, _) = view
            .read(
                &*handle.backend,
                Source::Stream(stream),
                start,
                count,
                direction,
            )
            .await?;
        gater_core::page::fit_in_frame(&mut page, self.engine.options.limits.frame_bytes_max);
        Ok(page)
    }

    async fn read_all(
        &self,
        store: &StoreId,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        validate::read_count(&self.engine.options.limits, count)?;
        let handle = self.engine.serving(store).await?;
        let view = self.engine.view(&handle).await?;
        let (mut page, _) = view
            .read(&*handle.backend, Source::All, from.0, count, direction)
            .await?;
        gater_core::page::fit_in_frame(&mut page, self.engine.options.limits.frame_bytes_max);
        Ok(page)
    }

    async fn get_streams(
        &self,
        store: &StoreId,
        after: Option<StreamId>,
        limit: u32,
    ) -> Result<StreamPage, Error> {
        validate::page_limit(&self.engine.options.limits, limit)?;
        let handle = self.engine.serving(store).await?;
        let view = self.engine.view(&handle).await?;
        if view.hides_nothing() {
            return handle.backend.list_streams(after, limit).await;
        }
        // Deleted streams are left out; pages are filled from further on.
        let mut shown = Vec::with_capacity(limit as usize);
        let mut after = after;
        loop {
            let page = handle.backend.list_streams(after, limit).await?;
            for info in page.streams {
                let visible = view
                    .lifecycle(info.stream.as_str())
                    .visible_version(Some(info.version));
                if visible.is_none() {
                    continue;
                }
                if shown.len() == limit as usize {
                    return Ok(StreamPage::new(shown, true));
                }
                shown.push(info);
            }
            if page.next_after.is_none() {
                return Ok(StreamPage::new(shown, false));
            }
            after = page.next_after;
        }
    }

    async fn get_version(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<Option<Version>, Error> {
        validate::writable_stream(stream)?;
        let handle = self.engine.serving(store).await?;
        let view = self.engine.view(&handle).await?;
        view.check_not_tombstoned(stream)?;
        let stored = handle.backend.version(stream).await?;
        Ok(view.lifecycle(stream.as_str()).visible_version(stored))
    }

    async fn delete_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        self.change_lifecycle(store, stream, LifecycleChange::Delete(expected))
            .await
    }

    async fn tombstone_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        self.change_lifecycle(store, stream, LifecycleChange::Tombstone(expected))
            .await
    }

    async fn truncate_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        before: Version,
    ) -> Result<(), Error> {
        self.change_lifecycle(store, stream, LifecycleChange::Truncate(before))
            .await
    }

    async fn set_stream_retention(
        &self,
        store: &StoreId,
        stream: &StreamId,
        max_count: Option<u64>,
        max_age_s: Option<u64>,
    ) -> Result<(), Error> {
        let retention = Retention {
            max_count,
            max_age_s,
        };
        self.change_lifecycle(store, stream, LifecycleChange::Retention(retention))
            .await
    }

    async fn stream_retention(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<StreamRetention, Error> {
        validate::writable_stream(stream)?;
        let handle = self.engine.serving(store).await?;
        let view = self.engine.view(&handle).await?;
        view.check_not_tombstoned(stream)?;
        let lifecycle = view.lifecycle(stream.as_str());
        Ok(StreamRetention {
            stream: stream.clone(),
            max_count: lifecycle.retention.max_count,
            max_age_s: lifecycle.retention.max_age_s,
            truncate_before: lifecycle.truncate_before,
        })
    }

    async fn compact_store(&self, store: &StoreId) -> Result<Compaction, Error> {
        let handle = self.engine.serving(store).await?;
        let _running = handle.compaction.lock().await;
        let view = self.engine.view(&handle).await?;
        let done = handle.backend.compact(&view).await?;
        Ok(Compaction {
            store: store.clone(),
            bytes_before: done.bytes_before,
            bytes_after: done.bytes_after,
            events_removed: done.removed,
        })
    }

    async fn save_subscription(
        &self,
        store: &StoreId,
        spec: SubscriptionSpec,
    ) -> Result<(), Error> {
        self.engine
            .serving(store)
            .await?
            .subscriptions
            .save(spec)
            .await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let handle = self.engine.serving(store).await?;
        handle.subscriptions.subscribe(key, options).await
    }

    async fn remove_subscription(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<(), Error> {
        self.engine
            .serving(store)
            .await?
            .subscriptions
            .remove(key)
            .await
    }

    async fn get_subscriptions(&self, store: &StoreId) -> Result<Vec<SubscriptionInfo>, Error> {
        self.engine.serving(store).await?.subscriptions.list().await
    }

    async fn ack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        let handle = self.engine.serving(store).await?;
        handle.subscriptions.ack(key, consumer, position).await
    }

    async fn nack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        let handle = self.engine.serving(store).await?;
        handle
            .subscriptions
            .nack(key, consumer, position, action)
            .await
    }

    async fn list_parked(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.engine
            .serving(store)
            .await?
            .subscriptions
            .list_parked(key)
            .await
    }

    async fn replay_parked(&self, store: &StoreId, key: &SubscriptionKey) -> Result<u64, Error> {
        let handle = self.engine.serving(store).await?;
        handle.subscriptions.replay_parked(key).await
    }

    async fn record_snapshot(
        &self,
        store: &StoreId,
        key: SnapshotKey,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        validate::snapshot_part("source", &key.source)?;
        validate::snapshot_part("stream", &key.stream)?;
        validate::snapshot_data(&self.engine.options.limits, &data)?;
        let handle = self.engine.serving(store).await?;
        let snapshot = Snapshot {
            key,
            data,
            created_us: now_us(),
        };
        handle.backend.record_snapshot(snapshot).await
    }

    async fn read_snapshot(
        &self,
        store: &StoreId,
        source: &str,
        stream: &str,
        version: Option<Version>,
    ) -> Result<Snapshot, Error> {
        validate::snapshot_part("source", source)?;
        validate::snapshot_part("stream", stream)?;
        let handle = self.engine.serving(store).await?;
        let found = handle
            .backend
            .read_snapshot(source, stream, version)
            .await?;
        found.ok_or_else(|| {
            let version = version.map_or_else(|| "latest".to_owned(), |v| v.to_string());
            Error::not_found(Resource::Snapshot, format!("{source}/{stream}/{version}"))
        })
    }

    async fn list_snapshots(
        &self,
        store: &StoreId,
        source: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        if let Some(source) = source {
            validate::snapshot_part("source", source)?;
        }
        if let Some(stream) = stream {
            validate::snapshot_part("stream", stream)?;
        }
        let handle = self.engine.serving(store).await?;
        handle.backend.list_snapshots(source, stream).await
    }

    async fn delete_snapshot(&self, store: &StoreId, key: &SnapshotKey) -> Result<(), Error> {
        validate::snapshot_part("source", &key.source)?;
        validate::snapshot_part("stream", &key.stream)?;
        let handle = self.engine.serving(store).await?;
        if handle.backend.delete_snapshot(key).await? {
            return Ok(());
        }
        Err(Error::not_found(
            Resource::Snapshot,
            format!("{}/{}/{}", key.source, key.stream, key.version),
        ))
    }

    async fn create_store(&self, store: &StoreId, config: StoreConfig) -> Result<(), Error> {
        let _admin = self.engine.admin.lock().await;
        let existing = match self.engine.discover(store).await {
            Ok(handle) => Some(handle),
            Err(Error::NotFound {
                resource: Resource::Store,
                ..
            }) => None,
            Err(error) => return Err(error),
        };
        if let Some(handle) = existing {
            if handle.stopping.load(Ordering::Acquire) {
                return Err(handle.stopping_error());
            }
            if handle.config == config {
                return Ok(());
            }
            return Err(Error::StoreConfigConflict {
                store: store.to_string(),
            });
        }
        let stores_max = self.engine.options.limits.stores_max;
        let open = self.engine.read_stores().len();
        if open >= stores_max as usize {
            return Err(Error::limit(
                "stores_max",
                stores_max.into(),
                open as u64 + 1,
            ));
        }
        let backend = self.engine.backend.create_store(store, config).await?;
        let handle = self.engine.start(store.clone(), backend).await?;
        self.engine.write_stores().insert(store.clone(), handle);
        self.engine.misses.forget(store);
        Ok(())
    }

    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        let _admin = self.engine.admin.lock().await;
        if self.engine.broken().remove(store).is_some() {
            // Never opened: nothing to stop, only its files to delete.
            return self.engine.backend.remove_store(store).await;
        }
        let handle = self.engine.discover(store).await?;
        handle.stop(SubscriptionEnd::StoreRemoved).await;
        let closed = handle.backend.close().await;
        self.engine.write_stores().remove(store);
        closed?;
        self.engine.backend.remove_store(store).await
    }

    async fn list_stores(&self) -> Result<Vec<StoreInfo>, Error> {
        if self.engine.backend.shared() {
            let _admin = self.engine.admin.lock().await;
            self.engine.sync_stores().await?;
        }
        let worker = &self.engine.options.worker_id;
        let mut stores: Vec<StoreInfo> = self
            .engine
            .read_stores()
            .values()
            .map(|handle| {
                let (state, reason) = Engine::state(handle);
                StoreInfo {
                    store: handle.id.clone(),
                    config: handle.config,
                    state,
                    reason,
                    workers: vec![worker.clone()],
                }
            })
            .collect();
        // Stores that would not open: their configuration is in files that
        // could not be read, so the default stands in for it.
        stores.extend(self.engine.broken().iter().map(|(id, reason)| StoreInfo {
            store: id.clone(),
            config: StoreConfig::default(),
            state: StoreState::Failed,
            reason: Some(reason.clone()),
            workers: vec![worker.clone()],
        }));
        stores.sort_by(|a, b| a.store.cmp(&b.store));
        Ok(stores)
    }

    async fn get_store_status(&self, store: &StoreId) -> Result<StoreStatus, Error> {
        if let Some(reason) = self.engine.broken().get(store).cloned() {
            return Ok(StoreStatus {
                store: store.clone(),
                state: StoreState::Failed,
                reason: Some(reason),
                stream_count: 0,
                event_count: 0,
                head: None,
                disk_bytes: 0,
                workers: vec![self.engine.options.worker_id.clone()],
            });
        }
        let mut handle = self.engine.known(store).await?;
        if handle.backend.shared() {
            // Other workers' commits count too; the polled counters may lag.
            match handle.backend.refresh_head().await {
                Ok(_) | Err(Error::StoreStopping { .. }) => {}
                Err(error) => return Err(error),
            }
            if handle.backend.gone() {
                // The refresh found another incarnation: answer for that one.
                handle = self.engine.known(store).await?;
            }
        }
        let counters = handle.backend.counters();
        // The published head, as subscriptions see it; the counters may be
        // one commit ahead while that commit's appends are being answered.
        let mut head = *handle.head.borrow();
        if handle.backend.shared() {
            // Just refreshed from the storage: other workers' commits are
            // durable, even before this worker's poll publishes them.
            head = head.max(counters.head);
        }
        let (state, reason) = Engine::state(&handle);
        let disk_bytes = match handle.backend.disk_bytes().await {
            Ok(bytes) => bytes,
            // A store that stops, or whose storage failed, still has a status.
            Err(Error::StoreStopping { .. }) => 0,
            Err(_) if !state.takes_writes() => 0,
            Err(error) => return Err(error),
        };
        // The counts say what readers see.
        let hidden = match self.engine.view(&handle).await {
            Ok(view) => view.hidden(&*handle.backend).await,
            Err(error) => Err(error),
        };
        let hidden = match hidden {
            Ok(hidden) => hidden,
            Err(Error::StoreStopping { .. }) => Hidden::default(),
            Err(_) if !state.takes_writes() => Hidden::default(),
            Err(error) => return Err(error),
        };
        Ok(StoreStatus {
            store: handle.id.clone(),
            state,
            reason,
            stream_count: counters.stream_count.saturating_sub(hidden.streams),
            event_count: counters.event_count.saturating_sub(hidden.events),
            head,
            disk_bytes,
            workers: vec![self.engine.options.worker_id.clone()],
        })
    }

    async fn get_store_config(&self, store: &StoreId) -> Result<StoreConfig, Error> {
        Ok(self.engine.known(store).await?.config)
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        let options = &self.engine.options;
        Ok(vec![WorkerInfo {
            id: options.worker_id.clone(),
            address: options.address.clone(),
            health: WorkerHealth::Healthy,
            in_flight: 0,
            latency_us: 0,
            stores: self.served(),
            shared_storage: self.engine.backend.shared(),
            faults: self.faults(),
        }])
    }

    async fn reopen_store(&self, store: &StoreId) -> Result<(), Error> {
        {
            let _admin = self.engine.admin.lock().await;
            if self.engine.broken().contains_key(store) {
                return self.engine.open_broken(store).await;
            }
        }
        let handle = self.engine.serving(store).await?;
        let (reply, answer) = oneshot::channel();
        if handle.reopens.send(reply).await.is_err() {
            return Err(handle.stopping_error());
        }
        answer.await.map_err(|_| handle.stopping_error())?
    }

    async fn verify_store(&self, store: &StoreId) -> Result<VerifyReport, Error> {
        let handle = self.engine.serving(store).await?;
        handle.backend.verify().await
    }

    /// A worker keeps no membership: heartbeats go to proxies.
    async fn heartbeat(&self, _worker: WorkerInfo) -> Result<(), Error> {
        Err(Error::Unsupported(
            "heartbeat: a worker keeps no membership (send it to a proxy)".into(),
        ))
    }
}

/// A timer of `interval` whose late ticks are delayed, not bunched.
fn ticks(interval: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Waits for `tick`'s next tick; `false` once `stop` says stop.
async fn next_tick(tick: &mut tokio::time::Interval, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop.wait_for(|stop| *stop) => false,
        _ = tick.tick() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_core::{SubscriptionType, TRANSIENT};

    async fn open(dir: &std::path::Path) -> (Store, Arc<StoreHandle>, StoreId) {
        let store = Store::open(StoreOptions::new(dir)).await.unwrap();
        let id = StoreId::new("logview").unwrap();
        let config = StoreConfig {
            fsync: false,
            group_commit: true,
            retention: gater_core::Retention::NONE,
        };
        store.create_store(&id, config).await.unwrap();
        let handle = store.engine.handle(&id).unwrap();
        (store, handle, id)
    }

    fn event(n: u8) -> EventData {
        EventData::json(
            gater_core::EventId::from_random_bytes([n; 16]),
            "Viewed",
            b"{}".to_vec(),
            Vec::new(),
        )
    }

    #[tokio::test]
    async fn a_configured_subscription_window_max_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new(dir.path());
        options.limits.subscription_window_max = 8;
        let store = Store::open(options).await.unwrap();
        let id = StoreId::new("windows").unwrap();
        let config = StoreConfig {
            fsync: false,
            group_commit: true,
            retention: gater_core::Retention::NONE,
        };
        store.create_store(&id, config).await.unwrap();
        let key = SubscriptionKey::stream(&StreamId::new("s").unwrap());
        let window = |window| SubscribeOptions {
            window,
            start_from: None,
        };
        let refused = store.subscribe(&id, key.clone(), window(9)).await;
        assert!(
            matches!(&refused, Err(Error::InvalidArgument(message)) if message.contains("1 to 8")),
            "{:?}",
            refused.map(|s| s.consumer())
        );
        assert!(store.subscribe(&id, key, window(8)).await.is_ok());
    }

    #[tokio::test]
    async fn a_worker_refuses_stores_past_stores_max() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new(dir.path());
        options.limits.stores_max = 2;
        let store = Store::open(options).await.unwrap();
        let config = StoreConfig {
            fsync: false,
            group_commit: true,
            retention: gater_core::Retention::NONE,
        };
        for id in ["a", "b"] {
            store
                .create_store(&StoreId::new(id).unwrap(), config)
                .await
                .unwrap();
        }
        let third = store
            .create_store(&StoreId::new("c").unwrap(), config)
            .await;
        assert!(
            matches!(&third, Err(Error::LimitExceeded { limit, .. }) if limit == "stores_max"),
            "{third:?}"
        );
        // Creating one that exists is still the idempotent no-op.
        store
            .create_store(&StoreId::new("a").unwrap(), config)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn log_view_reads_up_to_the_published_head_and_watches_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, handle, id) = open(dir.path()).await;
        let log = LogView {
            store: id.clone(),
            backend: handle.backend.clone(),
            head: watch::channel(None).1,
            claimant: store.engine.claimant.clone(),
            retention: Retention::NONE,
            clock: Clock::default(),
        };
        let empty = log.read_all_forward(Position::START, 10).await.unwrap();
        assert!(empty.is_empty(), "nothing is read past an unpublished head");
        let mut watched = store.engine.handle(&id).unwrap().subscriptions_head();
        let s = StreamId::new("s").unwrap();
        let events = vec![event(1), event(2), event(3)];
        store
            .append_events(&id, &s, ExpectedVersion::Any, events)
            .await
            .unwrap();
        watched.changed().await.unwrap();
        assert_eq!(*watched.borrow(), Some(Position(2)));
        let log = LogView {
            store: id.clone(),
            backend: handle.backend.clone(),
            head: watched.clone(),
            claimant: store.engine.claimant.clone(),
            retention: Retention::NONE,
            clock: Clock::default(),
        };
        let read = log.read_all_forward(Position(1), 10).await.unwrap();
        let positions: Vec<u64> = read.iter().map(|e| e.position.0).collect();
        assert_eq!(positions, vec![1, 2]);
        assert!(log
            .read_all_forward(Position(3), 10)
            .await
            .unwrap()
            .is_empty());
        store.shutdown().await;
    }

    /// Events until the subscription's `CaughtUp` marker, by position.
    async fn caught_up_positions(sub: &mut Subscription) -> Vec<u64> {
        use futures::StreamExt;
        let mut positions = Vec::new();
        loop {
            let item = tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .expect("the catch-up goes on")
                .expect("the subscription goes on");
            match item {
                gater_core::SubscriptionItem::Event(delivery) => {
                    positions.push(delivery.event.position.0)
                }
                gater_core::SubscriptionItem::CaughtUp => return positions,
                gater_core::SubscriptionItem::End(end) => panic!("subscription ended: {end:?}"),
            }
        }
    }

    #[tokio::test]
    async fn query_and_type_subscriptions_catch_up_from_the_indexes_reading_only_their_events() {
        const EVENTS: u64 = 5_000;
        /// One event in this many carries the rare tag and the rare type.
        const RARE_EVERY: u64 = 500;
        let dir = tempfile::tempdir().unwrap();
        let (store, _, id) = open(dir.path()).await;
        let s = StreamId::new("s").unwrap();
        let rare = |i: u64| i % RARE_EVERY == 7;
        for chunk in 0..EVENTS / 1_000 {
            let events = (chunk * 1_000..(chunk + 1) * 1_000)
                .map(|i| {
                    let mut bytes = [0u8; 16];
                    bytes[8..].copy_from_slice(&i.to_be_bytes());
                    let id = gater_core::EventId::from_random_bytes(bytes);
                    let (event_type, tags) = if rare(i) {
                        ("Rare", vec!["rare".to_owned()])
                    } else {
                        ("Common", vec![format!("common-{}", i % 7)])
                    };
                    EventData::json(id, event_type, b"{}".to_vec(), Vec::new()).with_tags(tags)
                })
                .collect();
            store
                .append_events(&id, &s, ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
        let expected: Vec<u64> = (0..EVENTS).filter(|&i| rare(i)).collect();
        let options = SubscribeOptions {
            window: 100,
            start_from: Some(Position::START),
        };
        for (kind, selector) in [
            (
                SubscriptionType::ByQuery,
                r#"{"items":[{"tags":["rare"]}]}"#,
            ),
            (SubscriptionType::ByEventType, "Rare"),
        ] {
            let key = SubscriptionKey::new(kind, selector, TRANSIENT).unwrap();
            let before = store.records_read(&id).unwrap().unwrap();
            let mut sub = store.subscribe(&id, key, options.clone()).await.unwrap();
            assert_eq!(caught_up_positions(&mut sub).await, expected, "{kind}");
            let read = store.records_read(&id).unwrap().unwrap() - before;
            assert_eq!(
                read,
                expected.len() as u64,
                "{kind}: only the matching records are read from the log of {EVENTS}"
            );
        }
        // The all-log subscription reads every record, as the counter shows.
        let before = store.records_read(&id).unwrap().unwrap();
        let all = SubscriptionKey::stream(&StreamId::all());
        let mut sub = store.subscribe(&id, all, options.clone()).await.unwrap();
        assert_eq!(caught_up_positions(&mut sub).await.len() as u64, EVENTS);
        assert_eq!(store.records_read(&id).unwrap().unwrap() - before, EVENTS);
        store.shutdown().await;
    }

    #[tokio::test]
    async fn a_query_subscription_goes_live_after_its_indexed_catch_up_without_gaps() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let (store, _, id) = open(dir.path()).await;
        let s = StreamId::new("s").unwrap();
        let tagged = |n: u8, tag: &str| event(n).with_tags(vec![tag.to_owned()]);
        let first = vec![tagged(1, "a"), tagged(2, "b"), tagged(3, "a")];
        store
            .append_events(&id, &s, ExpectedVersion::Any, first)
            .await
            .unwrap();
        let key = SubscriptionKey::new(
            SubscriptionType::ByQuery,
            r#"{"items":[{"tags":["a"]}]}"#,
            TRANSIENT,
        )
        .unwrap();
        let options = SubscribeOptions {
            window: 100,
            start_from: Some(Position::START),
        };
        let mut sub = store.subscribe(&id, key, options).await.unwrap();
        assert_eq!(caught_up_positions(&mut sub).await, vec![0, 2]);
        for n in 4..8u8 {
            let tag = if n % 2 == 0 { "a" } else { "b" };
            store
                .append_events(&id, &s, ExpectedVersion::Any, vec![tagged(n, tag)])
                .await
                .unwrap();
        }
        let mut live = Vec::new();
        while live.len() < 2 {
            let item = tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .expect("live events arrive")
                .expect("the subscription goes on");
            if let gater_core::SubscriptionItem::Event(delivery) = item {
                live.push(delivery.event.position.0);
            }
        }
        assert_eq!(
            live,
            vec![3, 5],
            "the tagged events appended after catch-up"
        );
        store.shutdown().await;
    }

    #[tokio::test]
    async fn subscription_records_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = SubscriptionKey::new(SubscriptionType::ByStream, "$all", "billing").unwrap();
        let other = SubscriptionKey::new(SubscriptionType::ByEventType, "A", "audit").unwrap();
        let record = |key: &SubscriptionKey, checkpoint| SubscriptionRecord {
            spec: SubscriptionSpec::new(key.clone()),
            checkpoint: Position(checkpoint),
            parked: vec![Position(1)],
        };
        {
            let (store, handle, _) = open(dir.path()).await;
            let backend = &handle.backend;
            backend.put_subscription(&record(&key, 3)).await.unwrap();
            backend.put_subscription(&record(&key, 7)).await.unwrap();
            backend.put_subscription(&record(&other, 1)).await.unwrap();
            backend.delete_subscription(&other).await.unwrap();
            let transient = SubscriptionKey::new(SubscriptionType::ByStream, "$all", TRANSIENT);
            backend
                .delete_subscription(&transient.unwrap())
                .await
                .unwrap();
            store.shutdown().await;
        }
        let (store, handle, _) = open(dir.path()).await;
        let loaded = handle.backend.load_subscriptions().await.unwrap();
        assert_eq!(loaded, vec![record(&key, 7)]);
        store.shutdown().await;
    }
}
