//! The embedded backend: each store is one fjall database under
//! `<data_dir>/stores/<store_id>`, with one keyspace per table.
//!
//! Two keyspaces: `log` (position → postcard `RecordedEvent`) and `index`,
//! which holds the other tables under one-byte prefixes (see `keys`): the
//! stream index ((stream, version) → position; the last key of a stream's
//! range gives its version, so there is no separate table of stream heads),
//! the event-id index (id → stream, version, position), the tag and
//! event-type indexes ((tag or type, position), which queries walk, see
//! `query`), snapshots, subscription records and the meta rows (config,
//! counters). An append
//! batch writes all of them in one fjall write batch, which fjall journals and makes visible atomically; the batch
//! is flushed with `fdatasync` before it is applied when the store's `fsync`
//! is on, and to the OS otherwise (that survives a process crash, not a power
//! loss).
//!
//! A store directory is complete once its config file exists (written last
//! at creation, atomically by rename); incomplete directories and those of
//! interrupted removals are deleted when the backend opens.
//!
//! Every log record ends with an xxh3 checksum of the record (see
//! `checksum`), checked on every read and by `verify`, on top of fjall's own
//! block and journal checksums: a damaged record is a `StorageFailed` naming
//! the store and position, never garbage handed to a client. After a failed
//! commit the engine calls `reopen`, which drops the database and recovers
//! it from its files, so nothing the process held in memory outlives the
//! failure.
//!
//! What it does not do: validation, limits and writer serialisation belong
//! to the engine; fjall calls are blocking, so every call runs on tokio's
//! blocking pool.

mod append;
mod checksum;
mod id_filter;
#[cfg(debug_assertions)]
mod inject;
mod keys;
mod lifecycle;
mod query;

#[cfg(debug_assertions)]
pub use inject::InjectedFault;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use gater_core::{
    Direction, Error, EventData, Position, Query, RecordedEvent, Snapshot, SnapshotKey,
    StoreConfig, StoreId, StreamId, StreamInfo, StreamPage, SubscriptionKey, VerifyReport, Version,
};

use crate::backend::{Backend, BackendStore, BatchOutcome, Counters, PendingAppend};
use crate::faults::{self, fjall_error, io_error};
use crate::lifecycle::{LifecycleChange, Lifecycles, View};
use crate::subscription::SubscriptionRecord;
use keys::{corrupt, CONFIG_KEY, COUNTERS_KEY};

/// The file whose presence marks a store directory as completely created.
const CONFIG_FILE: &str = "gater-store.config";
/// Most log entries `verify` reads past the counters' event count.
const VERIFY_EXTRA_MAX: u64 = 1_024;
/// Prefix of a store directory being deleted; store ids cannot start with a dot.
const REMOVING_PREFIX: &str = ".removing-";

/// Stores on the local disk, one fjall database each.
#[derive(Debug)]
pub(crate) struct EmbeddedBackend {
    root: PathBuf,
}

impl EmbeddedBackend {
    /// Opens the backend rooted at `<data_dir>/stores`, cleaning up interrupted creations and removals.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, Error> {
        let root = data_dir.join("stores");
        fs::create_dir_all(&root).map_err(io_error)?;
        for entry in fs::read_dir(&root).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            let interrupted_removal = name.starts_with(REMOVING_PREFIX);
            let interrupted_creation =
                StoreId::new(name.as_ref()).is_ok() && !path.join(CONFIG_FILE).exists();
            if interrupted_removal || interrupted_creation {
                tracing::warn!(path = %path.display(), "deleting an incomplete store directory");
                fs::remove_dir_all(&path).map_err(io_error)?;
            }
        }
        Ok(EmbeddedBackend { root })
    }

    fn store_dir(&self, store: &StoreId) -> PathBuf {
        self.root.join(store.as_str())
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    async fn create_store(
        &self,
        store: &StoreId,
        config: StoreConfig,
    ) -> Result<Arc<dyn BackendStore>, Error> {
        let dir = self.store_dir(store);
        let id = store.clone();
        let store = store.clone();
        let created = blocking(move || {
            if dir.join(CONFIG_FILE).exists() {
                return Err(Error::Storage(format!("store {store} already exists")));
            }
            let tables = Tables::open(&dir)?;
            let mut batch = tables.db.batch().durability(Some(PersistMode::SyncAll));
            let config_bytes = postcard::to_stdvec(&config).map_err(encode_error)?;
            batch.insert(&tables.index, CONFIG_KEY, config_bytes.clone());
            batch.insert(
                &tables.index,
                COUNTERS_KEY,
                keys::encode_counters(&Counters::default()).to_vec(),
            );
            batch.commit().map_err(fjall_error)?;
            write_atomically(&dir, CONFIG_FILE, &config_bytes)?;
            let inner = StoreInner::new(
                store,
                dir,
                config,
                Counters::default(),
                Lifecycles::new(),
                tables,
            );
            Ok(Arc::new(EmbeddedStore {
                inner: Arc::new(inner),
            }) as Arc<dyn BackendStore>)
        })
        .await;
        created.map_err(|e| faults::attribute(e, &id, Some(&self.store_dir(&id))))
    }

    async fn open_store(&self, store: &StoreId) -> Result<Arc<dyn BackendStore>, Error> {
        let dir = self.store_dir(store);
        let id = store.clone();
        let store = store.clone();
        let opened = blocking(move || {
            let config_bytes = fs::read(dir.join(CONFIG_FILE)).map_err(io_error)?;
            let config: StoreConfig = postcard::from_bytes(&config_bytes).map_err(corrupt)?;
            let tables = Tables::open(&dir)?;
            let counters = tables.recover_counters()?;
            let lifecycles = tables.load_lifecycles()?;
            let inner = StoreInner::new(store, dir, config, counters, lifecycles, tables);
            Ok(Arc::new(EmbeddedStore {
                inner: Arc::new(inner),
            }) as Arc<dyn BackendStore>)
        })
        .await;
        opened.map_err(|e| faults::attribute(e, &id, Some(&self.store_dir(&id))))
    }

    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        let dir = self.store_dir(store);
        let doomed = self.root.join(format!(
            "{REMOVING_PREFIX}{store}-{}",
            crate::engine::now_us()
        ));
        blocking(move || {
            // The rename is atomic: a crash leaves either a whole store or a
            // directory that `open` recognises as garbage.
            fs::rename(&dir, &doomed).map_err(io_error)?;
            fs::remove_dir_all(&doomed).map_err(io_error)
        })
        .await
    }

    async fn list_stores(&self) -> Result<Vec<StoreId>, Error> {
        let root = self.root.clone();
        blocking(move || {
            let mut stores = Vec::new();
            for entry in fs::read_dir(&root).map_err(io_error)? {
                let entry = entry.map_err(io_error)?;
                let Ok(id) = StoreId::new(entry.file_name().to_string_lossy()) else {
                    continue;
                };
                if entry.path().join(CONFIG_FILE).exists() {
                    stores.push(id);
                }
            }
            stores.sort();
            Ok(stores)
        })
        .await
    }
}

/// The keyspaces of one store's database.
struct Tables {
    db: Database,
    log: Keyspace,
    index: Keyspace,
}

impl Tables {
    fn open(dir: &Path) -> Result<Self, Error> {
        let db = Database::builder(dir).open().map_err(fjall_error)?;
        // Positions are read back only when they exist, so the log needs no
        // bloom filters on its last level; the index is mostly probed for
        // event ids that are not there, so it keeps them.
        let log = db
            .keyspace("log", || {
                KeyspaceCreateOptions::default().expect_point_read_hits(true)
            })
            .map_err(fjall_error)?;
        let index = db
            .keyspace("index", KeyspaceCreateOptions::default)
            .map_err(fjall_error)?;
        Ok(Tables { db, log, index })
    }

    /// The version of `stream`'s last event: the last key of its range in
    /// the stream index.
    fn stream_version(&self, stream: &str) -> Result<Option<Version>, Error> {
        let Some(guard) = self.index.prefix(keys::stream_prefix(stream)).next_back() else {
            return Ok(None);
        };
        let (_, version) = keys::decode_stream_key(&guard.key().map_err(fjall_error)?)?;
        Ok(Some(version))
    }

    /// Reads the counters row and checks it against the log it describes.
    fn recover_counters(&self) -> Result<Counters, Error> {
        let counters = match self.index.get(COUNTERS_KEY).map_err(fjall_error)? {
            Some(bytes) => keys::decode_counters(&bytes)?,
            None => Counters::default(),
        };
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
        Ok(counters)
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
    /// The store's directory, to reopen it from and to check its device's space.
    dir: PathBuf,
    config: StoreConfig,
    persist_mode: PersistMode,
    /// The counters as of the last commit; only the writer changes them.
    counters: Mutex<Counters>,
    /// Stream versions and event ids the writer remembers between
    /// batches; stream lifecycle changes hold it too, to stay in step with
    /// the writer.
    writer_cache: Mutex<append::WriterCache>,
    /// Every stream's lifecycle state, as stored; replaced whole on change.
    lifecycles: RwLock<Arc<Lifecycles>>,
    /// The open database; taking it out under the write lock waits for
    /// every call in progress and then drops the database.
    tables: RwLock<Slot>,
    /// The next commit fails as told (tests of disk faults only).
    #[cfg(debug_assertions)]
    injected: Mutex<Option<inject::InjectedFault>>,
}

/// What a store's database is now.
enum Slot {
    /// Open and serving.
    Open(Tables),
    /// A reopen failed: calls get this error until a reopen succeeds.
    Broken(Error),
    /// Closed for good: calls get `StoreStopping`.
    Closed,
}

impl Slot {
    /// Takes the database out, leaving `Closed`.
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
        dir: PathBuf,
        config: StoreConfig,
        counters: Counters,
        lifecycles: Lifecycles,
        tables: Tables,
    ) -> Self {
        StoreInner {
            lifecycles: RwLock::new(Arc::new(lifecycles)),
            store,
            dir,
            config,
            persist_mode: Tables::persist_mode(&config),
            counters: Mutex::new(counters),
            writer_cache: Mutex::new(append::WriterCache::default()),
            tables: RwLock::new(Slot::Open(tables)),
            #[cfg(debug_assertions)]
            injected: Mutex::new(None),
        }
    }

    /// Runs `f` over the open database; its storage errors name this store.
    fn with_tables<R>(&self, f: impl FnOnce(&Tables) -> Result<R, Error>) -> Result<R, Error> {
        let guard = self
            .tables
            .read()
            .map_err(|_| Error::Storage("store tables lock poisoned".into()))?;
        let result = match &*guard {
            Slot::Open(tables) => f(tables),
            Slot::Broken(error) => Err(error.clone()),
            Slot::Closed => Err(Error::StoreStopping {
                store: self.store.to_string(),
            }),
        };
        result.map_err(|e| faults::attribute(e, &self.store, Some(&self.dir)))
    }

    /// Drops the database and recovers it from its files (fjall's journal
    /// recovery), with the counters as the files hold them: after a failed
    /// commit nothing of the process's memory (counters, stream versions,
    /// fjall's poisoned journal) is trusted again.
    fn reopen(&self) -> Result<Counters, Error> {
        let mut slot = self.tables.write().unwrap_or_else(|p| p.into_inner());
        if matches!(*slot, Slot::Closed) {
            return Err(Error::StoreStopping {
                store: self.store.to_string(),
            });
        }
        // fjall locks its directory: the old database goes before the new one opens.
        *slot = Slot::Broken(faults::failed("the store is being reopened"));
        let opened = Tables::open(&self.dir).and_then(|tables| {
            let counters = tables.recover_counters()?;
            let lifecycles = tables.load_lifecycles()?;
            Ok((tables, counters, lifecycles))
        });
        match opened {
            Ok((tables, counters, lifecycles)) => {
                *slot = Slot::Open(tables);
                *self.lifecycles.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lifecycles);
                match self.counters.lock() {
                    Ok(mut c) => *c = counters,
                    Err(poisoned) => *poisoned.into_inner() = counters,
                }
                *self.writer_cache.lock().unwrap_or_else(|p| p.into_inner()) =
                    append::WriterCache::default();
                Ok(counters)
            }
            Err(error) => {
                let error = faults::attribute(error, &self.store, Some(&self.dir));
                *slot = Slot::Broken(error.clone());
                Err(error)
            }
        }
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

    fn read_stream(
        &self,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.with_tables(|t| {
            let stream = stream.as_str();
            let iter = match direction {
                Direction::Forward => {
                    Box::new(t.index.range(
                        keys::stream_key(stream, start)..=keys::stream_key(stream, u64::MAX),
                    )) as Box<dyn Iterator<Item = fjall::Guard>>
                }
                Direction::Backward => Box::new(
                    t.index
                        .range(keys::stream_key(stream, 0)..=keys::stream_key(stream, start))
                        .rev(),
                ),
            };
            let mut positions = Vec::with_capacity(count as usize);
            for guard in iter.take(count as usize) {
                positions.push(keys::decode_u64(&guard.value().map_err(fjall_error)?)?);
            }
            read_positions(t, &positions)
        })
    }

    fn read_all(
        &self,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.with_tables(|t| {
            let from = keys::position_key(from.0);
            let iter = match direction {
                Direction::Forward => {
                    Box::new(t.log.range(from..)) as Box<dyn Iterator<Item = fjall::Guard>>
                }
                Direction::Backward => Box::new(t.log.range(..=from).rev()),
            };
            let mut events = Vec::with_capacity(count as usize);
            for guard in iter.take(count as usize) {
                let (key, value) = guard.into_inner().map_err(fjall_error)?;
                events.push(decode_record(&key, &value)?);
            }
            Ok(events)
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
                let version = t.stream_version(stream.as_str())?.ok_or_else(|| {
                    corrupt(format!("stream {stream} vanished while being listed"))
                })?;
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
            let mut batch = t.db.batch().durability(Some(self.persist_mode));
            batch.insert(&t.index, keys::snapshot_key(&snapshot.key), value);
            batch.commit().map_err(fjall_error)
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
            if !t.index.contains_key(&encoded).map_err(fjall_error)? {
                return Ok(false);
            }
            let mut batch = t.db.batch().durability(Some(self.persist_mode));
            batch.remove(&t.index, encoded);
            batch.commit().map_err(fjall_error)?;
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
            let mut batch = t.db.batch().durability(Some(self.persist_mode));
            batch.insert(&t.index, key, value);
            batch.commit().map_err(fjall_error)
        })
    }

    fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error> {
        let key = keys::subscription_key(key).map_err(encode_error)?;
        self.with_tables(|t| {
            let mut batch = t.db.batch().durability(Some(self.persist_mode));
            batch.remove(&t.index, key);
            batch.commit().map_err(fjall_error)
        })
    }

    fn close(&self) -> Result<(), Error> {
        let tables = match self.tables.write() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(tables) = tables {
            tables
                .db
                .persist(PersistMode::SyncAll)
                .map_err(|e| faults::attribute(fjall_error(e), &self.store, Some(&self.dir)))?;
            // Dropping the last handles stops fjall's background threads.
            drop(tables);
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
        let (inner, stream) = (self.inner.clone(), stream.clone());
        blocking(move || inner.read_stream(&stream, start, count, direction)).await
    }

    async fn read_all(
        &self,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
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
        let (inner, query) = (self.inner.clone(), query.clone());
        blocking(move || {
            inner.with_tables(|t| {
                let positions = query::positions(t, &query, from, count as usize, direction)?;
                read_positions(t, &positions)
            })
        })
        .await
    }

    async fn list_streams(&self, after: Option<StreamId>, limit: u32) -> Result<StreamPage, Error> {
        let inner = self.inner.clone();
        blocking(move || inner.list_streams(after, limit)).await
    }

    async fn version(&self, stream: &StreamId) -> Result<Option<Version>, Error> {
        let (inner, stream) = (self.inner.clone(), stream.clone());
        blocking(move || inner.version(&stream)).await
    }

    async fn disk_bytes(&self) -> Result<u64, Error> {
        let inner = self.inner.clone();
        blocking(move || inner.with_tables(|t| t.db.disk_space().map_err(fjall_error))).await
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
        let (dir, heal) = (self.inner.dir.clone(), *heal);
        blocking(move || faults::space(&dir).map(|space| Some(heal.has_room(space)))).await
    }

    fn data_dir(&self) -> Option<&Path> {
        Some(&self.inner.dir)
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
        let tables = match self.inner.tables.write() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(tables);
    }
}

/// Runs blocking fjall or file-system work on tokio's blocking pool.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("storage task failed: {e}")))?
}

/// Reads the log entries at `positions` (ascending or descending), one range
/// scan per run of consecutive positions (the events of one multi-event
/// append are adjacent in the log, and a scan is far cheaper than a lookup
/// each) and a point read per lone position.
fn read_positions(t: &Tables, positions: &[u64]) -> Result<Vec<RecordedEvent>, Error> {
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
                .log
                .get(key)
                .map_err(fjall_error)?
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
        let range = t
            .log
            .range(keys::position_key(low)..=keys::position_key(high));
        let scanned: Box<dyn Iterator<Item = fjall::Guard>> = if backward {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let before = events.len();
        for guard in scanned {
            let (key, value) = guard.into_inner().map_err(fjall_error)?;
            events.push(decode_record(&key, &value)?);
        }
        if events.len() - before != run {
            return Err(corrupt(format!(
                "stream index names missing events in {low}..={high}"
            )));
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

/// Writes `name` in `dir` so that it exists either whole or not at all.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&tmp).map_err(io_error)?;
    file.write_all(bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    fs::rename(&tmp, dir.join(name)).map_err(io_error)?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

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
