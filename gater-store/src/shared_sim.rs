//! A shared backend inside one process, for simulations of a shared-storage
//! cluster: several [`Store`] workers, each with its own engine (writers,
//! head polls, subscription tasks, leases), over the same stores.
//!
//! Each store is one embedded (fjall) store that every worker opens through
//! the same handle. What PostgreSQL gives a real cluster is stood in for
//! here: appends and stream lifecycle changes of all workers are serialised
//! by one lock (PostgreSQL's head-row lock), every worker reads the one
//! lifecycle state of a store (so a change shows through all at once),
//! subscription records and leases follow the rules of
//! `crate::lease::LeaseTable` on tokio's clock (so paused-time tests drive
//! lease expiry), and a store removed and created again is a new
//! incarnation that workers holding the old one find gone.
//!
//! A worker can be cut off from the storage ([`SimulatedShared::isolate`]):
//! its lease claims and record writes fail as a dead or partitioned worker's
//! would, so its leases run out and other workers take them over.
//!
//! What it does not do: records and leases live in memory only, so it
//! simulates no restart of the storage itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use gater_core::{
    Direction, Error, EventData, Position, Query, RecordedEvent, Resource, Snapshot, SnapshotKey,
    StoreConfig, StoreId, StreamId, StreamPage, SubscriptionKey, Version,
};
use tokio::time::Instant;

use crate::backend::{Backend, BackendStore, BatchOutcome, Compacted, Counters, PendingAppend};
use crate::embedded::EmbeddedBackend;
use crate::engine::{Store, StoreOptions};
use crate::lease::{Claim, Claimant, Fence, LeaseTable};
use crate::lifecycle::{LifecycleChange, Lifecycles, View};
use crate::subscription::SubscriptionRecord;

/// How often each simulated worker polls a store's head for the others' commits.
const HEAD_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Stores shared by every [`Store`] opened over it with [`Store::open_simulated_shared`].
#[derive(Clone, Debug)]
pub struct SimulatedShared {
    backend: Arc<SimBackend>,
}

impl SimulatedShared {
    /// Keeps the stores' data under `<data_dir>/stores`.
    pub fn open(data_dir: &Path) -> Result<SimulatedShared, Error> {
        Ok(SimulatedShared {
            backend: Arc::new(SimBackend {
                embedded: EmbeddedBackend::open(
                    data_dir,
                    crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT,
                )?,
                stores: Mutex::default(),
                incarnations: AtomicU64::new(1),
                admin: tokio::sync::Mutex::new(()),
                isolated: Arc::default(),
            }),
        })
    }

    /// Cuts worker `worker_id` off from the storage's leases and records
    /// (`false`: reconnects it).
    pub fn isolate(&self, worker_id: &str, isolated: bool) {
        let mut set = self
            .backend
            .isolated
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if isolated {
            set.insert(worker_id.to_owned());
        } else {
            set.remove(worker_id);
        }
    }
}

impl Store {
    /// Opens a worker over simulated shared storage (see [`SimulatedShared`]).
    pub async fn open_simulated_shared(
        options: StoreOptions,
        shared: &SimulatedShared,
    ) -> Result<Store, Error> {
        let backend: Arc<dyn Backend> = shared.backend.clone();
        Store::open_over(options, backend).await
    }
}

#[derive(Debug)]
struct SimBackend {
    embedded: EmbeddedBackend,
    stores: Mutex<BTreeMap<StoreId, Arc<SimStore>>>,
    incarnations: AtomicU64,
    /// Serialises creations and removals across workers (the catalog lock).
    admin: tokio::sync::Mutex<()>,
    /// Worker ids cut off from leases and records.
    isolated: Isolated,
}

type Isolated = Arc<Mutex<std::collections::BTreeSet<String>>>;

impl SimBackend {
    fn stores(&self) -> std::sync::MutexGuard<'_, BTreeMap<StoreId, Arc<SimStore>>> {
        self.stores.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Backend for SimBackend {
    async fn create_store(
        &self,
        store: &StoreId,
        config: StoreConfig,
    ) -> Result<Arc<dyn BackendStore>, Error> {
        let _admin = self.admin.lock().await;
        if let Some(existing) = self.stores().get(store).cloned() {
            if existing.inner.config() != config {
                return Err(Error::StoreConfigConflict {
                    store: store.to_string(),
                });
            }
            return Ok(existing);
        }
        let inner = self.embedded.create_store(store, config).await?;
        let opened = Arc::new(SimStore {
            store: store.clone(),
            inner,
            table: Mutex::default(),
            appends: tokio::sync::Mutex::new(()),
            gone: AtomicBool::new(false),
            incarnation: self.incarnations.fetch_add(1, Ordering::Relaxed),
            isolated: Arc::clone(&self.isolated),
        });
        self.stores().insert(store.clone(), Arc::clone(&opened));
        Ok(opened)
    }

    async fn open_store(&self, store: &StoreId) -> Result<Arc<dyn BackendStore>, Error> {
        let found = self.stores().get(store).cloned();
        match found {
            Some(opened) => Ok(opened),
            None => Err(Error::not_found(Resource::Store, store)),
        }
    }

    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        let _admin = self.admin.lock().await;
        let Some(removed) = self.stores().remove(store) else {
            return Err(Error::not_found(Resource::Store, store));
        };
        removed.gone.store(true, Ordering::Release);
        // Every worker's later call on it gets `StoreStopping`.
        let _appends = removed.appends.lock().await;
        removed.inner.close().await?;
        self.embedded.remove_store(store).await
    }

    async fn list_stores(&self) -> Result<Vec<StoreId>, Error> {
        Ok(self.stores().keys().cloned().collect())
    }

    fn shared(&self) -> bool {
        true
    }
}

/// One store as every simulated worker sees it.
struct SimStore {
    store: StoreId,
    inner: Arc<dyn BackendStore>,
    table: Mutex<LeaseTable>,
    /// Serialises appends of every worker.
    appends: tokio::sync::Mutex<()>,
    gone: AtomicBool,
    incarnation: u64,
    isolated: Isolated,
}

impl std::fmt::Debug for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStore")
            .field("store", &self.store)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl SimStore {
    fn live(&self) -> Result<(), Error> {
        if self.gone.load(Ordering::Acquire) {
            return Err(Error::StoreStopping {
                store: self.store.to_string(),
            });
        }
        Ok(())
    }

    /// Refuses a lease holder cut off from the storage.
    fn reachable(&self, holder: &str) -> Result<(), Error> {
        self.live()?;
        let worker = holder.rsplit_once('/').map_or(holder, |(worker, _)| worker);
        let isolated = self
            .isolated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(worker);
        if isolated {
            return Err(Error::unavailable(
                gater_core::Side::Storage,
                format!("worker {worker} is cut off from the storage"),
            ));
        }
        Ok(())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, LeaseTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl BackendStore for SimStore {
    fn config(&self) -> StoreConfig {
        self.inner.config()
    }

    fn counters(&self) -> Counters {
        self.inner.counters()
    }

    fn encode_event(&self, event: &EventData) -> Option<Result<Vec<u8>, Error>> {
        self.inner.encode_event(event)
    }

    async fn append_batch(
        &self,
        appends: Vec<PendingAppend>,
        created_us: u64,
    ) -> Result<BatchOutcome, Error> {
        let _serialised = self.appends.lock().await;
        self.live()?;
        self.inner.append_batch(appends, created_us).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.live()?;
        self.inner
            .read_stream(stream, start, count, direction)
            .await
    }

    async fn read_all(
        &self,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.live()?;
        self.inner.read_all(from, count, direction).await
    }

    async fn read_query(
        &self,
        query: &Query,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.live()?;
        self.inner.read_query(query, from, count, direction).await
    }

    async fn list_streams(&self, after: Option<StreamId>, limit: u32) -> Result<StreamPage, Error> {
        self.live()?;
        self.inner.list_streams(after, limit).await
    }

    async fn version(&self, stream: &StreamId) -> Result<Option<Version>, Error> {
        self.live()?;
        self.inner.version(stream).await
    }

    async fn disk_bytes(&self) -> Result<u64, Error> {
        self.live()?;
        self.inner.disk_bytes().await
    }

    async fn lifecycles(&self) -> Result<Arc<Lifecycles>, Error> {
        self.live()?;
        self.inner.lifecycles().await
    }

    async fn change_lifecycle(
        &self,
        stream: &StreamId,
        change: LifecycleChange,
    ) -> Result<(), Error> {
        // In step with every worker's appends, as under PostgreSQL's head-row lock.
        let _serialised = self.appends.lock().await;
        self.live()?;
        self.inner.change_lifecycle(stream, change).await
    }

    async fn compact(&self, view: &View) -> Result<Compacted, Error> {
        self.live()?;
        self.inner.compact(view).await
    }

    async fn record_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        self.live()?;
        self.inner.record_snapshot(snapshot).await
    }

    async fn read_snapshot(
        &self,
        source: &str,
        stream: &str,
        version: Option<Version>,
    ) -> Result<Option<Snapshot>, Error> {
        self.live()?;
        self.inner.read_snapshot(source, stream, version).await
    }

    async fn list_snapshots(
        &self,
        source: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        self.live()?;
        self.inner.list_snapshots(source, stream).await
    }

    async fn delete_snapshot(&self, key: &SnapshotKey) -> Result<bool, Error> {
        self.live()?;
        self.inner.delete_snapshot(key).await
    }

    async fn load_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error> {
        self.live()?;
        Ok(self.table().records())
    }

    async fn load_subscription(
        &self,
        key: &SubscriptionKey,
    ) -> Result<Option<SubscriptionRecord>, Error> {
        self.live()?;
        Ok(self.table().record(key))
    }

    async fn put_subscription(&self, record: &SubscriptionRecord) -> Result<(), Error> {
        self.live()?;
        self.table().create(record);
        Ok(())
    }

    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error> {
        self.live()?;
        self.table().remove(key);
        Ok(())
    }

    async fn claim_lease(
        &self,
        key: &SubscriptionKey,
        claimant: &Claimant,
    ) -> Result<Claim, Error> {
        self.reachable(&claimant.holder)?;
        Ok(self.table().claim(key, claimant, Instant::now()))
    }

    async fn release_lease(
        &self,
        key: &SubscriptionKey,
        holder: &str,
        epoch: u64,
    ) -> Result<(), Error> {
        self.reachable(holder)?;
        self.table().release(key, holder, epoch, Instant::now());
        Ok(())
    }

    async fn put_subscription_fenced(
        &self,
        record: &SubscriptionRecord,
        holder: &str,
        epoch: u64,
    ) -> Result<Fence, Error> {
        self.reachable(holder)?;
        Ok(self
            .table()
            .put_fenced(record, holder, epoch, Instant::now()))
    }

    fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Other workers still use the store: a worker letting go closes nothing.
    async fn close(&self) -> Result<(), Error> {
        Ok(())
    }

    fn release(&self) {}

    fn shared(&self) -> bool {
        true
    }

    fn head_poll_interval(&self) -> Option<Duration> {
        Some(HEAD_POLL_INTERVAL)
    }

    async fn refresh_head(&self) -> Result<Option<Position>, Error> {
        self.live()?;
        Ok(self.inner.counters().head)
    }
}
