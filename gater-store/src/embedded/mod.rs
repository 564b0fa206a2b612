//! The embedded backend: every store of a worker lives in one fjall
//! database under `<data_dir>/db` (see `db`), in keyspaces every store
//! shares, each store's rows under its own store number (see `table`).
//!
//! A store's two tables: `log` (position → postcard `RecordedEvent`) and `index`,
//! which holds the other tables under one-byte prefixes (see `keys`): the
//! stream index ((stream, version) → position; the last key of a stream's
//! range gives its version, so there is no separate table of stream heads),
//! the event-id index (id → stream, version, position), the tag and
//! event-type indexes ((tag or type, position), which queries walk, see
//! `query`), snapshots, subscription records and the meta rows (config,
//! counters). An append
//! batch writes all of them in one fjall write batch, which fjall journals and makes visible atomically; the batch
//! is flushed with `fdatasync` before it is applied when the store's `fsync`
//! is on (batches of several stores share that flush, see `group`), and to
//! the OS otherwise (that survives a process crash, not a power loss).
//!
//! A store exists once its catalog row does (see `db`); stores of the
//! earlier layouts (a pair of keyspaces per store, or a database per store
//! directory under `<data_dir>/stores`) are migrated when the backend opens
//! (see `legacy`). A store's `disk_bytes` is the byte count of its rows,
//! kept with its counters (see `table`).
//!
//! Every log record ends with an xxh3 checksum of the record (see
//! `checksum`), checked on every read and by `verify`, on top of fjall's own
//! block and journal checksums: a damaged record is a `StorageFailed` naming
//! the store and position, never garbage handed to a client. After a failed
//! commit the engine calls `reopen`, which drops the worker's database and
//! recovers it from its files for every store on it, so nothing the process
//! held in memory outlives the failure.
//!
//! What it does not do: validation, limits and writer serialisation belong
//! to the engine; fjall calls are blocking, so every call runs on tokio's
//! blocking pool, but reads of at most [`INLINE_READ_EVENTS_MAX`] events,
//! which cost less than the hand-off. The worker's block cache holds
//! `StoreOptions::block_cache_bytes`.

mod append;
mod checksum;
mod db;
mod group;
mod id_filter;
#[cfg(debug_assertions)]
mod inject;
mod keys;
mod last_postings;
mod legacy;
mod lifecycle;
mod query;
mod table;

#[cfg(debug_assertions)]
pub use inject::InjectedFault;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use fjall::PersistMode;
use gater_core::{
    Direction, Error, EventData, Position, Query, RecordedEvent, Snapshot, SnapshotKey,
    StoreConfig, StoreId, StreamId, StreamInfo, StreamPage, SubscriptionKey, VerifyReport, Version,
};

use crate::backend::{Backend, BackendStore, BatchOutcome, Counters, PendingAppend};
use crate::faults::{self, fjall_error};
use crate::lifecycle::{LifecycleChange, Lifecycles, View};
use crate::subscription::SubscriptionRecord;
use db::{OpenDb, Tables, WorkerDb};
use keys::{corrupt, COUNTERS_KEY};
use query::Consistent;
use table::StoreBatch;

/// Reads of at most this many events run on the calling task: a few
/// block reads (from the block cache, or the OS page cache at worst) cost
/// less than handing the read to the blocking pool and waking the caller
/// again, the most of a small read's time.
const INLINE_READ_EVENTS_MAX: u32 = 16;

/// Most log entries `verify` reads past the counters' event count.
const VERIFY_EXTRA_MAX: u64 = 1_024;

/// Stores on the local disk, all in the worker's one fjall database.
pub(crate) struct EmbeddedBackend {
    worker: Arc<WorkerDb>,
}

impl std::fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBackend")
            .field("path", &self.worker.path())
            .finish()
    }
}

impl EmbeddedBackend {
    /// Opens the worker's database under `data_dir`, deleting the rows
    /// of interrupted removals and imports and migrating stores of the
    /// earlier layouts. Its block cache holds `block_cache_bytes`.
    pub(crate) fn open(data_dir: &Path, block_cache_bytes: u64) -> Result<Self, Error> {
        let worker = Arc::new(WorkerDb::open(
            data_dir.join(db::DB_DIR),
            block_cache_bytes,
        )?);
        legacy::migrate_keyspaces(&worker)?;
        legacy::migrate(data_dir, &worker)?;
        Ok(EmbeddedBackend { worker })
    }
}

impl Drop for EmbeddedBackend {
    fn drop(&mut self) {
        // The engine released every store before: the database's files and
        // threads go now, so the data directory can be opened again at once.
        self.worker.close();
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    async fn create_store(
        &self,
        store: &StoreId,
        config: StoreConfig,
    ) -> Result<Arc<dyn BackendStore>, Error> {
        let (worker, id) = (Arc::clone(&self.worker), store.clone());
        let created = blocking(move || worker.create(&id, config)).await;
        let inner = created.map_err(|e| faults::attribute(e, store, Some(self.worker.path())))?;
        Ok(Arc::new(EmbeddedStore { inner }) as Arc<dyn BackendStore>)
    }

    async fn open_store(&self, store: &StoreId) -> Result<Arc<dyn BackendStore>, Error> {
        let (worker, id) = (Arc::clone(&self.worker), store.clone());
        let opened = blocking(move || worker.open_store(&id)).await;
        let inner = opened.map_err(|e| faults::attribute(e, store, Some(self.worker.path())))?;
        Ok(Arc::new(EmbeddedStore { inner }) as Arc<dyn BackendStore>)
    }

    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        let (worker, id) = (Arc::clone(&self.worker), store.clone());
        blocking(move || worker.remove(&id))
            .await
            .map_err(|e| faults::attribute(e, store, Some(self.worker.path())))
    }

    async fn list_stores(&self) -> Result<Vec<StoreId>, Error> {
        let worker = Arc::clone(&self.worker);
        blocking(move || worker.list()).await
    }

    fn close(&self) {
        self.worker.close();
    }
}

impl Tables {
    /// The version of `stream`'s last event: the last key of its range in
    /// the stream index.
    fn stream_version(&self, stream: &str) -> Result<Option<Version>, Error> {
        last_version_of(self.index.prefix(keys::stream_prefix(stream)))
    }

    /// Reads the counters row (and the store's byte count) and checks it
    /// against the log it describes.
    fn recover_counters(&self) -> Result<(Counters, u64), Error> {
        let bytes = self
            .index
            .get(COUNTERS_KEY)
            .map_err(fjall_error)?
            .ok_or_else(|| corrupt("the counters row is missing"))?;
        let (counters, store_bytes) = keys::decode_counters(&bytes)?;
        let store_bytes =
            store_bytes.ok_or_else(|| corrupt("the counters row has no byte count"))?;
        let last = match self.log.last_key_value() {
            Some(guard) => Some(Position(keys::decode_u64(
                &guard.key().map_err(fjall_error)?,
            )?)),
            None => None,
        };
        let gapless_count = counters.head.map_or(0, |h| h.0 + 1);
        if last != counters.head || counters.event_count != gapless_count {
            return Err(corrupt(format!(
                "counters say head {:?} and {} events, the log ends at {last:?}",
                counters.head, counters.event_count
            )));
        }
        Ok((counters, store_bytes))
    }

    fn persist_mode(config: &StoreConfig) -> PersistMode {
        // fdatasync also flushes the file size, which is all the journal
        // needs; a full fsync costs about three times as much here.
        if config.fsync {
            PersistMode::SyncData
        } else {
            PersistMode::Buffer
        }
    }
}

/// One open store of the embedded backend.
struct EmbeddedStore {
    inner: Arc<StoreInner>,
}

/// The shared state of an open store; blocking closures hold it by `Arc`.
struct StoreInner {
    store: StoreId,
    /// The worker's database, which holds this store's rows.
    worker: Arc<WorkerDb>,
    config: StoreConfig,
    persist_mode: PersistMode,
    /// The counters as of the last commit; only the writer changes them.
    counters: Mutex<Counters>,
    /// Bytes of the store's rows as of the last commit (see `table`);
    /// changed only by a holder of `writer_cache`, with the counters row.
    store_bytes: AtomicU64,
    /// Stream versions and event ids the writer remembers between
    /// batches; stream lifecycle changes hold it too, to stay in step with
    /// the writer.
    writer_cache: Mutex<append::WriterCache>,
    /// Every stream's lifecycle state, as stored; replaced whole on change.
    lifecycles: RwLock<Arc<Lifecycles>>,
    /// The store's open tables; taking them out under the write lock
    /// waits for every call in progress.
    tables: RwLock<Slot>,
    /// The database's generation when a commit of this store last failed,
    /// until a reopen takes it (see `WorkerDb::reopen`).
    fault_generation: Mutex<Option<u64>>,
    /// Log records read back for reads (`BackendStore::records_read`).
    records_read: AtomicU64,
    /// The next commit fails as told (tests of disk faults only).
    #[cfg(debug_assertions)]
    injected: Mutex<Option<inject::InjectedFault>>,
}

/// What a store's tables are now.
enum Slot {
    /// Open and serving.
    Open(Tables),
    /// Being reopened, or a reopen failed: calls get this error until a
    /// reopen succeeds.
    Broken(Error),
    /// Closed for good: calls get `StoreStopping`.
    Closed,
}

impl Slot {
    /// Takes the tables out, leaving `Closed`.
    fn take(&mut self) -> Option<Tables> {
        match std::mem::replace(self, Slot::Closed) {
            Slot::Open(tables) => Some(tables),
            Slot::Broken(_) | Slot::Closed => None,
        }
    }
}

impl StoreInner {
    fn new(
        store: StoreId,
        worker: Arc<WorkerDb>,
        config: StoreConfig,
        (counters, store_bytes): (Counters, u64),
        lifecycles: Lifecycles,
        tables: Tables,
    ) -> Self {
        StoreInner {
            lifecycles: RwLock::new(Arc::new(lifecycles)),
            store,
            worker,
            config,
            persist_mode: Tables::persist_mode(&config),
            counters: Mutex::new(counters),
            store_bytes: AtomicU64::new(store_bytes),
            writer_cache: Mutex::new(append::WriterCache::default()),
            tables: RwLock::new(Slot::Open(tables)),
            fault_generation: Mutex::new(None),
            records_read: AtomicU64::new(0),
            #[cfg(debug_assertions)]
            injected: Mutex::new(None),
        }
    }

    /// Where the store's files live (the worker's database).
    fn dir(&self) -> &Path {
        self.worker.path()
    }

    /// Runs `f` over the open tables; its storage errors name this store.
    fn with_tables<R>(&self, f: impl FnOnce(&Tables) -> Result<R, Error>) -> Result<R, Error> {
        // Held through `f`: a reopen of the database waits for it.
        let db = self.worker.read();
        let result = db.open(Some(&self.store)).and_then(|_| {
            let guard = self
                .tables
                .read()
                .map_err(|_| Error::Storage("store tables lock poisoned".into()))?;
            match &*guard {
                Slot::Open(tables) => f(tables),
                Slot::Broken(error) => Err(error.clone()),
                Slot::Closed => Err(Error::StoreStopping {
                    store: self.store.to_string(),
                }),
            }
        });
        result.map_err(|e| faults::attribute(e, &self.store, Some(self.dir())))
    }

    /// Recovers the store from its files after a failed commit: the
    /// worker's database is dropped and recovered (fjall's journal
    /// recovery) for every store on it, unless that already happened since
    /// this store's commit failed, and the store is re-attached with the
    /// counters as the files hold them. Nothing of the process's memory
    /// (counters, stream versions, fjall's poisoned journal) is trusted again.
    fn reopen(&self) -> Result<Counters, Error> {
        if matches!(
            *self.tables.read().unwrap_or_else(|p| p.into_inner()),
            Slot::Closed
        ) {
            return Err(Error::StoreStopping {
                store: self.store.to_string(),
            });
        }
        let seen = self
            .fault_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let reopened = self
            .worker
            .reopen(seen)
            .and_then(|()| self.worker.ensure_attached(self))
            .and_then(|()| self.with_tables(|_| Ok(())));
        match reopened {
            Ok(()) => Ok(self.counters()),
            Err(error) => Err(faults::attribute(error, &self.store, Some(self.dir()))),
        }
    }

    /// Whether the store's tables are open (or closed for good).
    fn attached(&self) -> bool {
        matches!(
            *self.tables.read().unwrap_or_else(|p| p.into_inner()),
            Slot::Open(_) | Slot::Closed
        )
    }

    /// Drops the store's table handles while the database is reopened.
    fn detach(&self) {
        let mut slot = self.tables.write().unwrap_or_else(|p| p.into_inner());
        if !matches!(*slot, Slot::Closed) {
            *slot = Slot::Broken(faults::failed("the worker's database is being reopened"));
        }
    }

    /// Attaches the store to its tables in `open` and reads back its
    /// counters and lifecycle states; the writer's stream versions and
    /// event-id filter start over. A closed store stays closed.
    fn attach(&self, open: &OpenDb) -> Result<(), Error> {
        let mut slot = self.tables.write().unwrap_or_else(|p| p.into_inner());
        if matches!(*slot, Slot::Closed) {
            return Ok(());
        }
        let attached = Tables::attach_existing(open, &self.store).and_then(|tables| {
            let counters = tables.recover_counters()?;
            let lifecycles = tables.load_lifecycles()?;
            Ok((tables, counters, lifecycles))
        });
        match attached {
            Ok((tables, (counters, store_bytes), lifecycles)) => {
                self.set_store_bytes(store_bytes);
                *slot = Slot::Open(tables);
                *self.lifecycles.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lifecycles);
                match self.counters.lock() {
                    Ok(mut c) => *c = counters,
                    Err(poisoned) => *poisoned.into_inner() = counters,
                }
                *self.writer_cache.lock().unwrap_or_else(|p| p.into_inner()) =
                    append::WriterCache::default();
                Ok(())
            }
            Err(error) => {
                let error = faults::attribute(error, &self.store, Some(self.dir()));
                *slot = Slot::Broken(error.clone());
                Err(error)
            }
        }
    }

    /// Remembers that a commit failed at the database's `generation`.
    fn note_fault(&self, generation: u64) {
        *self
            .fault_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(generation);
    }

    /// The fault injected for the next commit, taken.
    #[cfg(debug_assertions)]
    fn take_injected(&self) -> Option<InjectedFault> {
        self.injected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Reads back every record of the log and checks it.
    fn verify(&self) -> Result<VerifyReport, Error> {
        self.with_tables(|t| {
            let mut records = 0u64;
            let mut corrupt = Vec::new();
            let mut expected = 0u64;
            // Entries past the counters' count are read too (they would be
            // damage as well), within a bound, so an iterator that keeps
            // failing cannot keep the scan going.
            let entries_max = self.counters().event_count.saturating_add(VERIFY_EXTRA_MAX);
            for guard in t.log.iter() {
                if records + corrupt.len() as u64 >= entries_max {
                    break;
                }
                let Ok((key, value)) = guard.into_inner() else {
                    // fjall could not read the block: the next expected
                    // position is the first it hides.
                    corrupt.push(expected);
                    expected += 1;
                    continue;
                };
                records += 1;
                let position = keys::decode_u64(&key).unwrap_or(expected);
                if decode_record(&key, &value).is_err() {
                    corrupt.push(position);
                }
                expected = position.saturating_add(1);
            }
            corrupt.sort_unstable();
            corrupt.dedup();
            Ok(VerifyReport {
                store: self.store.clone(),
                records,
                corrupt,
            })
        })
    }

    fn counters(&self) -> Counters {
        match self.counters.lock() {
            Ok(c) => *c,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Bytes of the store's rows as of the last commit.
    fn store_bytes(&self) -> u64 {
        self.store_bytes.load(Ordering::Acquire)
    }

    fn set_store_bytes(&self, bytes: u64) {
        self.store_bytes.store(bytes, Ordering::Release);
    }

    /// A batch of this store's writes outside appends, flushed as the
    /// store's config says; see [`StoreInner::commit_counted`].
    fn store_batch(&self, t: &Tables) -> StoreBatch {
        StoreBatch::new(t.db.batch().durability(Some(self.persist_mode)))
    }

    /// Commits `batch` with the counters row holding the store's new byte
    /// count. `_writer` is the writer's lock, held by the caller: no append
    /// writes the counters row meanwhile.
    fn commit_counted(
        &self,
        t: &Tables,
        batch: StoreBatch,
        _writer: &append::WriterCache,
    ) -> Result<(), Error> {
        let StoreBatch { mut batch, delta } = batch;
        let bytes = self.store_bytes().saturating_add_signed(delta);
        batch.insert(
            t.index.keyspace(),
            t.index.user_key(COUNTERS_KEY),
            keys::encode_counters(&self.counters(), bytes),
        );
        batch.commit().map_err(fjall_error)?;
        self.set_store_bytes(bytes);
        Ok(())
    }

    /// The writer's lock (see `append::WriterCache`).
    fn writer(&self) -> std::sync::MutexGuard<'_, append::WriterCache> {
        self.writer_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.with_tables(|t| {
            let t = &Consistent::now(t);
            let stream = stream.as_str();
            let count = count as usize;
            let mut positions = Vec::with_capacity(count);
            match direction {
                Direction::Forward => {
                    let range = t.index_range(
                        keys::stream_key(stream, start)..=keys::stream_key(stream, u64::MAX),
                    );
                    for guard in range.take(count) {
                        positions.push(keys::decode_u64(&guard.value().map_err(fjall_error)?)?);
                    }
                }
                Direction::Backward => {
                    // Clipped to the last version, so "from the end" finds
                    // the stream's last events in one forward window.
                    let Some(last) = last_version_of(t.index_prefix(keys::stream_prefix(stream)))?
                    else {
                        return Ok(Vec::new());
                    };
                    let key = |version| keys::stream_key(stream, version);
                    for (_, value) in
                        last_entries(|range| t.index_range(range), key, start.min(last), count)?
                    {
                        positions.push(keys::decode_u64(&value)?);
                    }
                }
            }
            self.counted(read_positions(t, &positions))
        })
    }

    /// Up to `count` events matching `query` from `from`, found through
    /// the tag and type indexes: only the matches are read from the log.
    fn read_query(
        &self,
        query: &Query,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.with_tables(|t| {
            let t = &Consistent::now(t);
            let positions = query::positions(t, query, from, count as usize, direction)?;
            self.counted(read_positions(t, &positions))
        })
    }

    /// `read`, its records counted in `records_read`.
    fn counted(
        &self,
        read: Result<Vec<RecordedEvent>, Error>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if let Ok(events) = &read {
            self.records_read
                .fetch_add(events.len() as u64, Ordering::Relaxed);
        }
        read
    }

    fn read_all(
        &self,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.with_tables(|t| {
            let count = count as usize;
            let mut events = Vec::with_capacity(count);
            match direction {
                Direction::Forward => {
                    for guard in t.log.range(keys::position_key(from.0)..).take(count) {
                        let (key, value) = guard.into_inner().map_err(fjall_error)?;
                        events.push(decode_record(&key, &value)?);
                    }
                }
                Direction::Backward => {
                    // Clipped to the head, so "from the end" finds the last
                    // events in one forward window.
                    let Some(last) = t.log.last_key_value() else {
                        return Ok(events);
                    };
                    let high = from
                        .0
                        .min(keys::decode_u64(&last.key().map_err(fjall_error)?)?);
                    let log = |range| t.log.range(range);
                    for (key, value) in last_entries(log, keys::position_key, high, count)? {
                        events.push(decode_record(&key, &value)?);
                    }
                }
            }
            self.counted(Ok(events))
        })
    }

    fn list_streams(&self, after: Option<StreamId>, limit: u32) -> Result<StreamPage, Error> {
        self.with_tables(|t| {
            let mut streams = Vec::with_capacity(limit as usize);
            let mut after = after;
            // One step per stream: the first key after the previous stream
            // names the next one, the last key of its range its version.
            loop {
                let bounds = keys::streams_after(after.as_ref().map(StreamId::as_str));
                let Some(guard) = t.index.range::<Vec<u8>, _>(bounds).next() else {
                    return Ok(StreamPage::new(streams, false));
                };
                if streams.len() == limit as usize {
                    return Ok(StreamPage::new(streams, true));
                }
                let (stream, _) = keys::decode_stream_key(&guard.key().map_err(fjall_error)?)?;
                // A compaction running meanwhile may have deleted every key
                // of the stream (a tombstoned one) since its first was read.
                let Some(version) = t.stream_version(stream.as_str())? else {
                    after = Some(stream);
                    continue;
                };
                streams.push(StreamInfo {
                    stream: stream.clone(),
                    version,
                });
                after = Some(stream);
            }
        })
    }

    fn version(&self, stream: &StreamId) -> Result<Option<Version>, Error> {
        self.with_tables(|t| t.stream_version(stream.as_str()))
    }

    fn record_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        self.with_tables(|t| {
            let mut value = Vec::with_capacity(8 + snapshot.data.len());
            value.extend_from_slice(&snapshot.created_us.to_be_bytes());
            value.extend_from_slice(&snapshot.data);
            let writer = self.writer();
            let mut batch = self.store_batch(t);
            batch
                .put(&t.index, keys::snapshot_key(&snapshot.key), value)
                .map_err(fjall_error)?;
            self.commit_counted(t, batch, &writer)
        })
    }

    fn read_snapshot(
        &self,
        source: &str,
        stream: &str,
        version: Option<Version>,
    ) -> Result<Option<Snapshot>, Error> {
        self.with_tables(|t| {
            let found = match version {
                Some(version) => {
                    let key = SnapshotKey {
                        source: source.to_owned(),
                        stream: stream.to_owned(),
                        version,
                    };
                    let encoded = keys::snapshot_key(&key);
                    t.index
                        .get(&encoded)
                        .map_err(fjall_error)?
                        .map(|v| (encoded.into(), v))
                }
                None => t
                    .index
                    .prefix(keys::snapshot_prefix(source, Some(stream)))
                    .next_back()
                    .map(|g| g.into_inner().map_err(fjall_error))
                    .transpose()?,
            };
            let Some((key, value)) = found else {
                return Ok(None);
            };
            if value.len() < 8 {
                return Err(corrupt("snapshot value too short"));
            }
            Ok(Some(Snapshot {
                key: keys::decode_snapshot_key(&key)?,
                created_us: keys::decode_u64(&value[..8])?,
                data: value[8..].to_vec(),
            }))
        })
    }

    fn list_snapshots(
        &self,
        source: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        self.with_tables(|t| {
            let iter = match source {
                Some(source) => t.index.prefix(keys::snapshot_prefix(source, stream)),
                None => t.index.prefix(keys::snapshots_all()),
            };
            let mut found = Vec::new();
            for guard in iter {
                let key = keys::decode_snapshot_key(&guard.key().map_err(fjall_error)?)?;
                // Without a source the stream filter cannot be a prefix.
                if stream.is_none_or(|s| s == key.stream) {
                    found.push(key);
                }
            }
            Ok(found)
        })
    }

    fn delete_snapshot(&self, key: &SnapshotKey) -> Result<bool, Error> {
        self.with_tables(|t| {
            let encoded = keys::snapshot_key(key);
            let writer = self.writer();
            let Some(len) = t.index.size_of(&encoded).map_err(fjall_error)? else {
                return Ok(false);
            };
            let mut batch = self.store_batch(t);
            batch.remove_known(&t.index, encoded, len as usize);
            self.commit_counted(t, batch, &writer)?;
            Ok(true)
        })
    }

    fn load_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error> {
        self.with_tables(|t| {
            let mut records = Vec::new();
            for guard in t.index.prefix(keys::SUBSCRIPTIONS) {
                let value = guard.value().map_err(fjall_error)?;
                records.push(postcard::from_bytes(&value).map_err(corrupt)?);
            }
            Ok(records)
        })
    }

    fn put_subscription(&self, record: &SubscriptionRecord) -> Result<(), Error> {
        let key = keys::subscription_key(&record.spec.key).map_err(encode_error)?;
        let value = postcard::to_stdvec(record).map_err(encode_error)?;
        self.with_tables(|t| {
            let writer = self.writer();
            let mut batch = self.store_batch(t);
            batch.put(&t.index, key, value).map_err(fjall_error)?;
            self.commit_counted(t, batch, &writer)
        })
    }

    fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error> {
        let key = keys::subscription_key(key).map_err(encode_error)?;
        self.with_tables(|t| {
            let writer = self.writer();
            let mut batch = self.store_batch(t);
            batch.remove(&t.index, key).map_err(fjall_error)?;
            self.commit_counted(t, batch, &writer)
        })
    }

    fn close(&self) -> Result<(), Error> {
        let tables = match self.tables.write() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        self.worker.unregister(&self.store);
        if let Some(tables) = tables {
            tables
                .db
                .persist(PersistMode::SyncAll)
                .map_err(|e| faults::attribute(fjall_error(e), &self.store, Some(self.dir())))?;
        }
        Ok(())
    }
}

#[async_trait]
impl BackendStore for EmbeddedStore {
    fn config(&self) -> StoreConfig {
        self.inner.config
    }

    fn counters(&self) -> Counters {
        self.inner.counters()
    }

    fn encode_event(&self, event: &EventData) -> Option<Result<Vec<u8>, Error>> {
        // The fields plus room for the id and the four length prefixes, so
        // the encoding never grows its buffer.
        let buffer = Vec::with_capacity(event.size_bytes() + 64);
        Some(postcard::to_extend(event, buffer).map_err(encode_error))
    }

    async fn append_batch(
        &self,
        appends: Vec<PendingAppend>,
        created_us: u64,
    ) -> Result<BatchOutcome, Error> {
        let inner = self.inner.clone();
        blocking(move || inner.append_batch(appends, created_us)).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if count <= INLINE_READ_EVENTS_MAX {
            return self.inner.read_stream(stream, start, count, direction);
        }
        let (inner, stream) = (self.inner.clone(), stream.clone());
        blocking(move || inner.read_stream(&stream, start, count, direction)).await
    }

    async fn read_all(
        &self,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if count <= INLINE_READ_EVENTS_MAX {
            return self.inner.read_all(from, count, direction);
        }
        let inner = self.inner.clone();
        blocking(move || inner.read_all(from, count, direction)).await
    }

    async fn read_query(
        &self,
        query: &Query,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if count <= INLINE_READ_EVENTS_MAX {
            return self.inner.read_query(query, from, count, direction);
        }
        let (inner, query) = (self.inner.clone(), query.clone());
        blocking(move || inner.read_query(&query, from, count, direction)).await
    }

    async fn list_streams(&self, after: Option<StreamId>, limit: u32) -> Result<StreamPage, Error> {
        let inner = self.inner.clone();
        blocking(move || inner.list_streams(after, limit)).await
    }

    async fn version(&self, stream: &StreamId) -> Result<Option<Version>, Error> {
        let (inner, stream) = (self.inner.clone(), stream.clone());
        blocking(move || inner.version(&stream)).await
    }

    fn records_read(&self) -> Option<u64> {
        Some(self.inner.records_read.load(Ordering::Relaxed))
    }

    async fn disk_bytes(&self) -> Result<u64, Error> {
        let inner = self.inner.clone();
        blocking(move || inner.with_tables(|_| Ok(inner.store_bytes()))).await
    }

    async fn lifecycles(&self) -> Result<Arc<Lifecycles>, Error> {
        Ok(self.inner.lifecycles())
    }

    async fn change_lifecycle(
        &self,
        stream: &StreamId,
        change: LifecycleChange,
    ) -> Result<(), Error> {
        let (inner, stream) = (self.inner.clone(), stream.clone());
        blocking(move || inner.change_lifecycle(&stream, change)).await
    }

    async fn compact(&self, view: &View) -> Result<crate::backend::Compacted, Error> {
        let (inner, view) = (self.inner.clone(), view.clone());
        blocking(move || inner.compact(&view)).await
    }

    async fn record_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        let inner = self.inner.clone();
        blocking(move || inner.record_snapshot(snapshot)).await
    }

    async fn read_snapshot(
        &self,
        source: &str,
        stream: &str,
        version: Option<Version>,
    ) -> Result<Option<Snapshot>, Error> {
        let (inner, source, stream) = (self.inner.clone(), source.to_owned(), stream.to_owned());
        blocking(move || inner.read_snapshot(&source, &stream, version)).await
    }

    async fn list_snapshots(
        &self,
        source: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        let inner = self.inner.clone();
        let (source, stream) = (source.map(str::to_owned), stream.map(str::to_owned));
        blocking(move || inner.list_snapshots(source.as_deref(), stream.as_deref())).await
    }

    async fn delete_snapshot(&self, key: &SnapshotKey) -> Result<bool, Error> {
        let (inner, key) = (self.inner.clone(), key.clone());
        blocking(move || inner.delete_snapshot(&key)).await
    }

    async fn load_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error> {
        let inner = self.inner.clone();
        blocking(move || inner.load_subscriptions()).await
    }

    async fn put_subscription(&self, record: &SubscriptionRecord) -> Result<(), Error> {
        let (inner, record) = (self.inner.clone(), record.clone());
        blocking(move || inner.put_subscription(&record)).await
    }

    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error> {
        let (inner, key) = (self.inner.clone(), key.clone());
        blocking(move || inner.delete_subscription(&key)).await
    }

    async fn close(&self) -> Result<(), Error> {
        let inner = self.inner.clone();
        blocking(move || inner.close()).await
    }

    async fn reopen(&self) -> Result<Counters, Error> {
        let inner = self.inner.clone();
        blocking(move || inner.reopen()).await
    }

    async fn has_room(&self, heal: &faults::HealOptions) -> Result<Option<bool>, Error> {
        let (dir, heal) = (self.inner.dir().to_owned(), *heal);
        blocking(move || faults::space(&dir).map(|space| Some(heal.has_room(space)))).await
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(self.inner.dir())
    }

    async fn verify(&self) -> Result<VerifyReport, Error> {
        let inner = self.inner.clone();
        blocking(move || inner.verify()).await
    }

    #[cfg(debug_assertions)]
    fn inject_fault(&self, fault: InjectedFault) -> bool {
        *self
            .inner
            .injected
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(fault);
        true
    }

    fn release(&self) {
        self.inner.worker.unregister(&self.inner.store);
        let tables = match self.inner.tables.write() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(tables);
    }
}

/// The version of the last key of a stream's range in the stream index.
fn last_version_of(mut range: table::Iter) -> Result<Option<Version>, Error> {
    let Some(guard) = range.next_back() else {
        return Ok(None);
    };
    let (_, version) = keys::decode_stream_key(&guard.key().map_err(fjall_error)?)?;
    Ok(Some(version))
}

/// Runs blocking fjall or file-system work on tokio's blocking pool.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("storage task failed: {e}")))?
}

/// The last `count` entries of `table` among the keys `key(0)..=key(high)`
/// (numbered keys that sort as their numbers), highest first.
///
/// Iterating backward costs fjall several times what iterating forward
/// does (each step back in a memtable is a new search of its skip list), so
/// the window `high + 1 - count..=high` is read forward and reversed; only
/// when it holds fewer than `count` entries and more may lie below (a
/// compaction removed some) does the iteration go backward.
fn last_entries<K: AsRef<[u8]>>(
    range: impl Fn(std::ops::RangeInclusive<K>) -> table::Iter,
    key: impl Fn(u64) -> K,
    high: u64,
    count: usize,
) -> Result<Vec<(fjall::Slice, fjall::Slice)>, Error> {
    let mut entries = Vec::with_capacity(count);
    let Some(span) = (count as u64).checked_sub(1) else {
        return Ok(entries);
    };
    let low = high.saturating_sub(span);
    for guard in range(key(low)..=key(high)) {
        entries.push(guard.into_inner().map_err(fjall_error)?);
    }
    if entries.len() < count && low > 0 {
        entries.clear();
        for guard in range(key(0)..=key(high)).rev().take(count) {
            entries.push(guard.into_inner().map_err(fjall_error)?);
        }
        return Ok(entries);
    }
    entries.reverse();
    Ok(entries)
}

/// Reads the log entries at `positions` (ascending or descending), one range
/// scan per run of consecutive positions (the events of one multi-event
/// append are adjacent in the log, and a scan is far cheaper than a lookup
/// each) and a point read per lone position. A descending run is scanned
/// forward and reversed: iterating backward costs fjall far more.
fn read_positions(t: &Consistent<'_>, positions: &[u64]) -> Result<Vec<RecordedEvent>, Error> {
    let mut events = Vec::with_capacity(positions.len());
    let mut rest = positions;
    while let Some(&first) = rest.first() {
        let backward = rest.get(1).is_some_and(|&p| p + 1 == first);
        let run = rest
            .iter()
            .enumerate()
            .take_while(|&(i, &p)| {
                let step = i as u64;
                p == if backward {
                    first.wrapping_sub(step)
                } else {
                    first.wrapping_add(step)
                }
            })
            .count();
        if run == 1 {
            // A lone position (a query's scattered matches): a point read
            // costs less than setting up a range over the LSM levels.
            let key = keys::position_key(first);
            let value = t
                .log_get(&key)?
                .ok_or_else(|| corrupt(format!("an index names missing event {first}")))?;
            events.push(decode_record(&key, &value)?);
            rest = &rest[1..];
            continue;
        }
        let (low, high) = if backward {
            (first + 1 - run as u64, first)
        } else {
            (first, first + run as u64 - 1)
        };
        let before = events.len();
        for guard in t.log_range(keys::position_key(low)..=keys::position_key(high)) {
            let (key, value) = guard.into_inner().map_err(fjall_error)?;
            events.push(decode_record(&key, &value)?);
        }
        if events.len() - before != run {
            return Err(corrupt(format!(
                "stream index names missing events in {low}..={high}"
            )));
        }
        if backward {
            events[before..].reverse();
        }
        rest = &rest[run..];
    }
    Ok(events)
}

/// The event of a log record, its checksum checked: a damaged record is a
/// `StorageFailed` naming its position.
fn decode_record(key: &[u8], value: &[u8]) -> Result<RecordedEvent, Error> {
    let position = || {
        keys::decode_u64(key)
            .map_or_else(|_| "an unreadable position".to_owned(), |p| p.to_string())
    };
    let record = checksum::open(value)
        .map_err(|why| corrupt(format!("the record at position {} {why}", position())))?;
    postcard::from_bytes(record).map_err(|e| {
        corrupt(format!(
            "the record at position {} does not decode: {e}",
            position()
        ))
    })
}

fn encode_error(e: postcard::Error) -> Error {
    Error::Storage(format!("encoding failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::table::Table;
    use super::*;

    #[test]
    fn last_entries_are_the_highest_keys_at_or_below_high_across_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let log = db
            .keyspace("log", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let log = Table::new(log, keys::StorePrefix::short(3));
        // Positions 6 and 7 are gone, as a compaction leaves the log.
        for position in (0..=9u64).filter(|p| !(6..=7).contains(p)) {
            let key = log.user_key(&keys::position_key(position));
            log.keyspace().insert(key, position.to_be_bytes()).unwrap();
        }
        let last = |high, count| -> Vec<u64> {
            last_entries(|range| log.range(range), keys::position_key, high, count)
                .unwrap()
                .iter()
                .map(|(key, _)| keys::decode_u64(key).unwrap())
                .collect()
        };
        assert_eq!(last(9, 2), vec![9, 8], "a full window");
        assert_eq!(last(9, 4), vec![9, 8, 5, 4], "past the gap");
        assert_eq!(last(u64::MAX, 3), vec![9, 8, 5], "from past the end");
        assert_eq!(last(4, 10), vec![4, 3, 2, 1, 0], "down to the first");
        assert_eq!(last(9, 0), Vec::<u64>::new());
    }

    #[test]
    fn a_damaged_record_is_storage_failed_naming_its_position_never_garbage() {
        let event = EventData::json(
            gater_core::EventId::from_bytes([3; 16]),
            "Checked",
            b"{\"n\":1}".to_vec(),
            Vec::new(),
        );
        let recorded = RecordedEvent {
            stream: StreamId::new("s").unwrap(),
            version: 0,
            position: Position(41),
            created_us: 1,
            data: event,
        };
        let body = postcard::to_stdvec(&recorded).unwrap();
        let mut value = body.clone();
        value.extend_from_slice(&checksum::of(&body));
        let key = keys::position_key(41);
        assert_eq!(decode_record(&key, &value).unwrap(), recorded);
        let last = value.len() - checksum::CHECKSUM_LEN - 1;
        value[last] ^= 0x01;
        let error = faults::attribute(
            decode_record(&key, &value).unwrap_err(),
            &StoreId::new("orders").unwrap(),
            None,
        );
        assert_eq!(error.kind(), "storage_failed");
        let text = error.to_string();
        assert!(text.contains("store orders"), "{text}");
        assert!(text.contains("position 41"), "{text}");
    }
}
