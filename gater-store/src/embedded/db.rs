//! The worker's database: one fjall `Database` under `<data_dir>/db` holds
//! every store of the worker in three keyspaces whatever the number of
//! stores: `log` and `index`, where each store's rows are the keys under its
//! store number (see `keys` and `table`), and `stores`, the catalog (store
//! id → number and config, see `keys`), whose row marks a store as
//! completely created.
//!
//! One database with a fixed set of keyspaces means one journal, one pool
//! of fjall threads ([`WORKER_THREADS`]), one cap on cached open files
//! ([`CACHED_FILES_MAX`]) and one memtable per keyspace whatever the number
//! of stores, so creating a store writes rows, never a keyspace, and
//! commits of different stores share one flush (see `group`). It also means
//! that a journal failure fails every store on it: fjall then refuses every
//! write until the database is reopened, and a reopen (`WorkerDb::reopen`)
//! drops and recovers the database for all its stores at once, re-attaching
//! each open store with its counters read back.
//!
//! Store numbers come from the catalog's counter and are never reused, so
//! rows a removed store left behind can never show up in a new store.
//! Creation writes the counter, the catalog row and the store's counters
//! row in one durable batch. Removal deletes the catalog row and marks the
//! number dead (`keys::dead_key`) in one durable batch, then deletes the
//! number's rows, then the mark; an import (see `legacy`) marks its number
//! dead before it copies rows and clears the mark in the durable batch that
//! writes the catalog row. Rows of numbers still marked dead when the
//! database opens (an interrupted removal or import) are deleted then.
//!
//! What it does not do: reading and writing a store's tables (the rest of
//! `embedded`), and stores in the layouts before this one (see `legacy`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};

use fjall::config::{BlockSizePolicy, PartitioningPolicy, PinningPolicy, RestartIntervalPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use gater_core::{Error, StoreConfig, StoreId};

use super::keys::StorePrefix;
use super::keys::{self, corrupt, COUNTERS_KEY};
use super::table::Table;
use super::{encode_error, StoreInner};
use crate::backend::Counters;
use crate::faults::{self, fjall_error};

/// The directory of the worker's database, inside the data directory.
pub(super) const DB_DIR: &str = "db";
/// fjall's background threads (flushes and compactions of every store).
pub(super) const WORKER_THREADS: usize = 2;
/// Table files fjall keeps open at most, for every store together.
pub(super) const CACHED_FILES_MAX: usize = 128;
/// The keyspace listing every completely created store.
pub(super) const CATALOG: &str = "stores";
/// The keyspace of every store's log.
const LOG: &str = "log";
/// The keyspace of every store's other tables.
const INDEX: &str = "index";
/// Bytes of a data block of the log keyspace (before compression; see
/// `log_options`).
const LOG_DATA_BLOCK_BYTES: u32 = 2_048;
/// Rows deleted per batch while a store's rows are deleted.
const PURGE_BATCH_ROWS: usize = 4_096;

/// The open tables of one store.
pub(super) struct Tables {
    pub(super) db: Database,
    pub(super) log: Table,
    pub(super) index: Table,
    /// The database's generation these handles belong to.
    pub(super) generation: u64,
}

impl Tables {
    /// The tables of `store` in `open`; it must be in the catalog.
    pub(super) fn attach_existing(open: &OpenDb, store: &StoreId) -> Result<Tables, Error> {
        let (number, _) = open
            .catalog_row(store)?
            .ok_or_else(|| corrupt(format!("store {store} is missing from the catalog")))?;
        Ok(open.tables(number))
    }
}

/// What an import wrote into a store's tables (see `WorkerDb::import`).
#[derive(Debug, Default)]
pub(super) struct Imported {
    /// The counters of the imported store, if its rows had them.
    pub(super) counters: Option<Counters>,
    /// Bytes of the rows written (see `table`).
    pub(super) bytes: u64,
}

/// The worker's database as it is now.
pub(super) struct OpenDb {
    pub(super) db: Database,
    pub(super) catalog: Keyspace,
    log: Keyspace,
    index: Keyspace,
    /// The first store number of the short prefix code (`keys::LAYOUT_KEY`).
    short_from: u32,
    /// Counts the times the database was opened by this process.
    pub(super) generation: u64,
}

impl OpenDb {
    /// The tables of store `number`.
    pub(super) fn tables(&self, number: u32) -> Tables {
        let prefix = StorePrefix::of(number, self.short_from);
        Tables {
            db: self.db.clone(),
            log: Table::new(self.log.clone(), prefix),
            index: Table::new(self.index.clone(), prefix),
            generation: self.generation,
        }
    }

    /// The number and config of `store`, if the catalog lists it.
    fn catalog_row(&self, store: &StoreId) -> Result<Option<(u32, StoreConfig)>, Error> {
        let Some(value) = self.catalog.get(store.as_str()).map_err(fjall_error)? else {
            return Ok(None);
        };
        let (number, config) = keys::decode_catalog_value(&value)?;
        let config = postcard::from_bytes(config).map_err(corrupt)?;
        Ok(Some((number, config)))
    }

    /// The next store number, not yet taken.
    fn next_number(&self) -> Result<u32, Error> {
        let next = match self
            .catalog
            .get(keys::NEXT_NUMBER_KEY)
            .map_err(fjall_error)?
        {
            Some(bytes) => keys::decode_number(&bytes)?,
            None => 0,
        };
        // The last number is never handed out: its range would have no end.
        if next == u32::MAX {
            return Err(Error::Storage(
                "the worker has used up its store numbers".into(),
            ));
        }
        Ok(next)
    }

    /// Deletes every row of store `number`, then its dead mark, durably.
    fn purge(&self, number: u32) -> Result<(), Error> {
        let tables = self.tables(number);
        for table in [&tables.log, &tables.index] {
            let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
            for entry in table.iter() {
                let key = entry.key().map_err(fjall_error)?;
                batch.remove(table.keyspace(), table.user_key(&key));
                if batch.len() == PURGE_BATCH_ROWS {
                    let full = std::mem::replace(
                        &mut batch,
                        self.db.batch().durability(Some(PersistMode::Buffer)),
                    );
                    full.commit().map_err(fjall_error)?;
                }
            }
            batch.commit().map_err(fjall_error)?;
        }
        // The journal is written in order: this flush makes the deletions
        // before it durable too.
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&self.catalog, keys::dead_key(number));
        batch.commit().map_err(fjall_error)
    }
}

/// What the worker's database is now.
enum DbSlot {
    Open(OpenDb),
    /// A reopen failed: calls get this error until a reopen succeeds.
    Broken(Error),
    /// Closed for good.
    Closed,
}

/// The worker's database and the stores open in it.
pub(super) struct WorkerDb {
    path: PathBuf,
    /// Bytes of fjall's block cache, shared by every store (see `StoreOptions::block_cache_bytes`).
    block_cache_bytes: u64,
    /// Every call of a store holds this for reading while it uses its
    /// tables, so a reopen (which writes it) waits for them all.
    state: RwLock<(DbSlot, u64)>,
    /// Open stores, re-attached after a reopen.
    stores: Mutex<BTreeMap<StoreId, Weak<StoreInner>>>,
    /// Held while a store number is taken and its catalog row written, so
    /// no two stores get one number and no id is created twice.
    numbering: Mutex<()>,
    /// Commits of several stores sharing one flush.
    pub(super) group: super::group::GroupCommit,
}

/// The database, read-locked for the length of a call.
pub(super) struct DbGuard<'a>(RwLockReadGuard<'a, (DbSlot, u64)>);

impl DbGuard<'_> {
    /// The open database, or why there is none (for `store`'s call, if any).
    pub(super) fn open(&self, store: Option<&StoreId>) -> Result<&OpenDb, Error> {
        match (&self.0 .0, store) {
            (DbSlot::Open(open), _) => Ok(open),
            (DbSlot::Broken(error), _) => Err(error.clone()),
            (DbSlot::Closed, Some(store)) => Err(Error::StoreStopping {
                store: store.to_string(),
            }),
            (DbSlot::Closed, None) => Err(Error::Storage("the worker's database is closed".into())),
        }
    }
}

impl WorkerDb {
    /// Opens (or creates) the database at `path` and deletes the rows of
    /// stores whose removal or import was interrupted.
    pub(super) fn open(path: PathBuf, block_cache_bytes: u64) -> Result<WorkerDb, Error> {
        let open = open_db(&path, 1, block_cache_bytes)?;
        let worker = WorkerDb {
            path,
            block_cache_bytes,
            state: RwLock::new((DbSlot::Open(open), 1)),
            stores: Mutex::new(BTreeMap::new()),
            numbering: Mutex::new(()),
            group: super::group::GroupCommit::default(),
        };
        worker.purge_dead()?;
        worker.renumber_wide()?;
        Ok(worker)
    }

    /// Where the database lives (for the device's free space and messages).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The database for one call; see [`DbGuard`].
    pub(super) fn read(&self) -> DbGuard<'_> {
        DbGuard(self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn purge_dead(&self) -> Result<(), Error> {
        let guard = self.read();
        let open = guard.open(None)?;
        let mut dead = Vec::new();
        for entry in open.catalog.prefix(keys::DEAD_PREFIX) {
            dead.push(keys::decode_dead_key(&entry.key().map_err(fjall_error)?)?);
        }
        for number in dead {
            tracing::warn!(
                number,
                "deleting the rows of a store whose removal or import was interrupted"
            );
            open.purge(number)?;
        }
        Ok(())
    }

    /// Every completely created store, in id order.
    pub(super) fn list(&self) -> Result<Vec<StoreId>, Error> {
        let guard = self.read();
        let open = guard.open(None)?;
        let mut stores = Vec::new();
        for entry in open.catalog.iter() {
            let key = entry.key().map_err(fjall_error)?;
            // The catalog's own rows start with a dot; no store id does.
            if key.starts_with(b".") {
                continue;
            }
            let id = std::str::from_utf8(&key)
                .ok()
                .and_then(|s| StoreId::new(s).ok())
                .ok_or_else(|| corrupt("the catalog holds an invalid store id"))?;
            stores.push(id);
        }
        Ok(stores)
    }

    /// Whether the catalog lists `store`.
    pub(super) fn contains(&self, store: &StoreId) -> Result<bool, Error> {
        let guard = self.read();
        let open = guard.open(Some(store))?;
        open.catalog
            .contains_key(store.as_str())
            .map_err(fjall_error)
    }

    /// Creates `store` with `config` under a new number: the number, the
    /// catalog row and the store's counters row in one durable batch.
    pub(super) fn create(
        self: &Arc<Self>,
        store: &StoreId,
        config: StoreConfig,
    ) -> Result<Arc<StoreInner>, Error> {
        {
            let _numbering = self.numbering.lock().unwrap_or_else(|p| p.into_inner());
            let guard = self.read();
            let open = guard.open(Some(store))?;
            let number = Self::unused_number(open, store, None)?;
            let mut batch = open.db.batch().durability(Some(PersistMode::SyncAll));
            Self::stage_catalog_row(open, &mut batch, store, number, config, Imported::default())?;
            batch.commit().map_err(fjall_error)?;
        }
        self.open_store(store)
    }

    /// Imports a store of an earlier layout (see `legacy`) under a new
    /// number: the number is marked dead durably, `fill` writes the store's
    /// rows into its tables, and the catalog row, the store's counters row
    /// and the dead mark's removal go in one durable batch. Until that
    /// batch the store does not exist, and the rows `fill` wrote are
    /// deleted at the next open.
    pub(super) fn import(
        &self,
        store: &StoreId,
        config: StoreConfig,
        fill: impl FnOnce(&Tables) -> Result<Imported, Error>,
    ) -> Result<(), Error> {
        self.import_as(store, config, None, fill)
    }

    /// [`WorkerDb::import`] of `store`, which holds number `replaces` now
    /// (`None`: it must not exist): the durable batch that writes its new
    /// catalog row also marks `replaces` dead, whose rows are deleted then.
    fn import_as(
        &self,
        store: &StoreId,
        config: StoreConfig,
        replaces: Option<u32>,
        fill: impl FnOnce(&Tables) -> Result<Imported, Error>,
    ) -> Result<(), Error> {
        let _numbering = self.numbering.lock().unwrap_or_else(|p| p.into_inner());
        let guard = self.read();
        let open = guard.open(Some(store))?;
        let number = Self::unused_number(open, store, replaces)?;
        let mut batch = open.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(
            &open.catalog,
            keys::NEXT_NUMBER_KEY,
            keys::number_bytes(number + 1),
        );
        batch.insert(&open.catalog, keys::dead_key(number), []);
        batch.commit().map_err(fjall_error)?;
        let imported = fill(&open.tables(number))?;
        let mut batch = open.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&open.catalog, keys::dead_key(number));
        if let Some(old) = replaces {
            batch.insert(&open.catalog, keys::dead_key(old), []);
        }
        Self::stage_catalog_row(open, &mut batch, store, number, config, imported)?;
        batch.commit().map_err(fjall_error)?;
        match replaces {
            Some(old) => open.purge(old),
            None => Ok(()),
        }
    }

    /// The next store number, once sure `store` holds number `holds` now
    /// (`None`: it does not exist).
    fn unused_number(open: &OpenDb, store: &StoreId, holds: Option<u32>) -> Result<u32, Error> {
        if open.catalog_row(store)?.map(|(number, _)| number) != holds {
            return Err(Error::Storage(format!("store {store} already exists")));
        }
        open.next_number()
    }

    /// Moves every store that still has a wide prefix (see `keys`) to a
    /// new number with a short one, through [`WorkerDb::import_as`]: a
    /// crash before its catalog row changes leaves the copy's rows to the
    /// next open's purge and the store as it was, a crash after leaves the
    /// old rows to it. A store that cannot be moved is logged and served
    /// under its wide prefix; the next open tries again.
    fn renumber_wide(&self) -> Result<(), Error> {
        let mut wide = Vec::new();
        for store in self.list()? {
            let guard = self.read();
            let open = guard.open(None)?;
            if let Some((number, config)) = open.catalog_row(&store)? {
                if number < open.short_from {
                    wide.push((store, number, config, open.tables(number)));
                }
            }
        }
        for (store, number, config, from) in wide {
            tracing::info!(%store, number, "moving a store to a short key prefix");
            let moved = self.import_as(&store, config, Some(number), |to| {
                let mut imported = Imported::default();
                for (source, target) in [(&from.log, &to.log), (&from.index, &to.index)] {
                    let rows = source.iter().map(super::table::Entry::into_inner);
                    super::legacy::copy(&to.db, rows, target, &mut imported)?;
                }
                Ok(imported)
            });
            if let Err(error) = moved {
                tracing::error!(%store, %error, "the store cannot be moved to a short key prefix; it keeps its wide one until the next open");
            }
        }
        Ok(())
    }

    /// Stages the rows that make store `number` exist as `store`: the
    /// catalog's counter past it, its catalog row and its counters row
    /// (what `imported` holds, counting itself).
    fn stage_catalog_row(
        open: &OpenDb,
        batch: &mut fjall::OwnedWriteBatch,
        store: &StoreId,
        number: u32,
        config: StoreConfig,
        imported: Imported,
    ) -> Result<(), Error> {
        let config_bytes = postcard::to_stdvec(&config).map_err(encode_error)?;
        let tables = open.tables(number);
        let counters = imported.counters.unwrap_or_default();
        let bytes = imported.bytes.saturating_add(
            tables
                .index
                .row_bytes(COUNTERS_KEY, keys::COUNTERS_LEN)
                .unsigned_abs(),
        );
        batch.insert(
            &open.catalog,
            keys::NEXT_NUMBER_KEY,
            keys::number_bytes(number + 1),
        );
        batch.insert(
            &open.catalog,
            store.as_str(),
            keys::catalog_value(number, &config_bytes),
        );
        batch.insert(
            tables.index.keyspace(),
            tables.index.user_key(COUNTERS_KEY),
            keys::encode_counters(&counters, bytes),
        );
        Ok(())
    }

    /// Opens `store`, recovering its counters from its tables.
    pub(super) fn open_store(self: &Arc<Self>, store: &StoreId) -> Result<Arc<StoreInner>, Error> {
        let guard = self.read();
        let open = guard.open(Some(store))?;
        let (number, config) = open
            .catalog_row(store)?
            .ok_or_else(|| Error::not_found(gater_core::Resource::Store, store))?;
        let tables = open.tables(number);
        let (counters, bytes) = tables.recover_counters()?;
        let lifecycles = tables.load_lifecycles()?;
        let inner = Arc::new(StoreInner::new(
            store.clone(),
            Arc::clone(self),
            config,
            (counters, bytes),
            lifecycles,
            tables,
        ));
        self.register(&inner);
        Ok(inner)
    }

    /// Deletes `store`: its catalog row durably (its number marked dead in
    /// the same batch), then its rows, then the mark.
    pub(super) fn remove(&self, store: &StoreId) -> Result<(), Error> {
        self.unregister(store);
        let guard = self.read();
        let open = guard.open(Some(store))?;
        let Some((number, _)) = open.catalog_row(store)? else {
            return Ok(());
        };
        let mut batch = open.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&open.catalog, store.as_str());
        batch.insert(&open.catalog, keys::dead_key(number), []);
        batch.commit().map_err(fjall_error)?;
        open.purge(number)
    }

    fn register(&self, inner: &Arc<StoreInner>) {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        // Dropped stores are pruned when the map doubles, not at every
        // store: creating n stores stays linear in n.
        if stores.len().is_power_of_two() {
            stores.retain(|_, store| store.strong_count() > 0);
        }
        stores.insert(inner.store.clone(), Arc::downgrade(inner));
    }

    /// Forgets a store that closed or is being removed.
    pub(super) fn unregister(&self, store: &StoreId) {
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(store);
    }

    /// Drops the database and recovers it from its files for every store
    /// on it, unless it was reopened (and is open) since generation `seen`,
    /// when a store's commit failed: a journal failure fails every store,
    /// and their reopens must not each start over. Every open store is
    /// then re-attached to its tables with its counters, lifecycle
    /// states and stream versions read back; a store that cannot be is
    /// left broken with its reason.
    pub(super) fn reopen(&self, seen: Option<u64>) -> Result<(), Error> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let (slot, generation) = &mut *state;
        match slot {
            DbSlot::Closed => return Err(faults::failed("the worker's database is closed")),
            DbSlot::Open(_) if seen.is_some_and(|seen| *generation > seen) => return Ok(()),
            _ => {}
        }
        let stores: Vec<Arc<StoreInner>> = self
            .stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for store in &stores {
            store.detach();
        }
        // fjall locks its directory: the old database goes before the new one opens.
        *slot = DbSlot::Broken(faults::failed("the worker's database is being reopened"));
        *generation += 1;
        match open_db(&self.path, *generation, self.block_cache_bytes) {
            Ok(open) => {
                for store in &stores {
                    if let Err(error) = store.attach(&open) {
                        tracing::error!(store = %store.store, %error, "the store cannot be re-attached after the database was reopened");
                    }
                }
                *slot = DbSlot::Open(open);
                tracing::info!(
                    generation = *generation,
                    stores = stores.len(),
                    "the worker's database was reopened from its files"
                );
                Ok(())
            }
            Err(error) => {
                *slot = DbSlot::Broken(error.clone());
                Err(error)
            }
        }
    }

    /// Re-attaches `store` to the open database if it is not attached.
    pub(super) fn ensure_attached(&self, store: &StoreInner) -> Result<(), Error> {
        let guard = self.read();
        let open = guard.open(Some(&store.store))?;
        if store.attached() {
            return Ok(());
        }
        store.attach(open)
    }

    /// Closes the database for good (the backend is being dropped): its
    /// files and threads are released once no store holds its keyspaces.
    pub(super) fn close(&self) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let DbSlot::Open(open) = std::mem::replace(&mut state.0, DbSlot::Closed) {
            if let Err(error) = open.db.persist(PersistMode::SyncAll) {
                tracing::warn!(error = %fjall_error(error), "flushing the worker's database failed");
            }
        }
    }
}

/// How the log keyspace is laid out, tuned for point reads of positions
/// an index names (a query's or a stream's scattered events):
///
/// - no bloom filters on its last level: positions are read back only when
///   they exist;
/// - small data blocks ([`LOG_DATA_BLOCK_BYTES`]), each key a restart point:
///   a point read that misses the block cache reads and decompresses one
///   small block and finds its record by binary search, instead of
///   decompressing 4 KiB and scanning it;
/// - one index block per table, never partitioned and pinned in memory
///   (some 25 bytes per data block: about 1 % of the log's uncompressed
///   bytes): a point read seeks it directly, instead of a top-level index
///   and then an index partition through the block cache.
///
/// fjall keeps a keyspace's options with it, so this applies to databases
/// created with it; a database created before keeps its log as it was,
/// readable as ever.
fn log_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .expect_point_read_hits(true)
        .data_block_size_policy(BlockSizePolicy::all(LOG_DATA_BLOCK_BYTES))
        .data_block_restart_interval_policy(RestartIntervalPolicy::all(1))
        .index_block_partitioning_policy(PartitioningPolicy::all(false))
        .index_block_pinning_policy(PinningPolicy::all(true))
}

/// Opens the database at `path` with the worker's fixed pools and
/// keyspaces, and a block cache of `block_cache_bytes`.
fn open_db(path: &Path, generation: u64, block_cache_bytes: u64) -> Result<OpenDb, Error> {
    let db = Database::builder(path)
        .worker_threads(WORKER_THREADS)
        .max_cached_files(Some(CACHED_FILES_MAX))
        .cache_size(block_cache_bytes)
        .open()
        .map_err(fjall_error)?;
    let catalog = db
        .keyspace(CATALOG, KeyspaceCreateOptions::default)
        .map_err(fjall_error)?;
    let log = db.keyspace(LOG, log_options).map_err(fjall_error)?;
    // The index is mostly probed for event ids that are not there, so it
    // keeps fjall's default bloom filters.
    let index = db
        .keyspace(INDEX, KeyspaceCreateOptions::default)
        .map_err(fjall_error)?;
    let short_from = short_from(&db, &catalog)?;
    Ok(OpenDb {
        db,
        catalog,
        log,
        index,
        short_from,
        generation,
    })
}

/// The first store number of the short prefix code (see `keys`): the
/// catalog's layout row, written here durably when the database has none
/// (a new database, or one of the wide layout, whose stores up to its
/// next number keep wide prefixes until they are renumbered).
fn short_from(db: &Database, catalog: &Keyspace) -> Result<u32, Error> {
    if let Some(bytes) = catalog.get(keys::LAYOUT_KEY).map_err(fjall_error)? {
        return keys::decode_number(&bytes);
    }
    let next = match catalog.get(keys::NEXT_NUMBER_KEY).map_err(fjall_error)? {
        Some(bytes) => keys::decode_number(&bytes)?,
        None => 0,
    };
    if next > keys::WIDE_NUMBERS_END {
        return Err(corrupt(format!(
            "the catalog's next store number {next} is past the wide layout's last one"
        )));
    }
    let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
    batch.insert(catalog, keys::LAYOUT_KEY, keys::number_bytes(next));
    batch.commit().map_err(fjall_error)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StoreConfig {
        StoreConfig {
            fsync: false,
            ..StoreConfig::default()
        }
    }

    #[test]
    fn a_log_laid_out_with_the_earlier_options_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_DIR);
        let rows: Vec<([u8; 8], Vec<u8>)> = (0..5_000u64)
            .map(|p| (keys::position_key(p), vec![b'e'; 300 + (p % 7) as usize]))
            .collect();
        {
            // The log as databases created before `log_options` have it.
            let db = Database::builder(&path).open().unwrap();
            let log = db
                .keyspace(LOG, || {
                    KeyspaceCreateOptions::default().expect_point_read_hits(true)
                })
                .unwrap();
            for (key, value) in &rows {
                log.insert(key, value.as_slice()).unwrap();
            }
            log.rotate_memtable_and_wait().unwrap();
            log.major_compact().unwrap();
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let open = open_db(&path, 1, crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT).unwrap();
        for (key, value) in rows.iter().step_by(97) {
            assert_eq!(
                open.log.get(key).unwrap().as_deref(),
                Some(value.as_slice())
            );
        }
        assert_eq!(open.log.iter().count(), rows.len());
    }

    #[test]
    fn store_numbers_are_never_reused_and_a_removed_store_leaves_no_rows() {
        let dir = tempfile::tempdir().unwrap();
        let worker = Arc::new(
            WorkerDb::open(
                dir.path().join(DB_DIR),
                crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT,
            )
            .unwrap(),
        );
        let a = StoreId::new("a").unwrap();
        let number = |worker: &WorkerDb| {
            let guard = worker.read();
            guard
                .open(None)
                .unwrap()
                .catalog_row(&a)
                .unwrap()
                .unwrap()
                .0
        };
        drop(worker.create(&a, config()).unwrap());
        let first = number(&worker);
        worker.remove(&a).unwrap();
        drop(worker.create(&a, config()).unwrap());
        assert!(number(&worker) > first);
        let guard = worker.read();
        let open = guard.open(None).unwrap();
        let old = open.tables(first);
        assert_eq!(old.log.iter().count() + old.index.iter().count(), 0);
        assert_eq!(open.catalog.prefix(keys::DEAD_PREFIX).count(), 0);
    }

    #[test]
    fn rows_of_an_interrupted_import_are_deleted_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_DIR);
        let store = StoreId::new("half").unwrap();
        {
            let worker =
                WorkerDb::open(path.clone(), crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT)
                    .unwrap();
            let failed = worker.import(&store, config(), |t| {
                let mut batch = t.db.batch().durability(Some(PersistMode::SyncAll));
                batch.insert(t.log.keyspace(), t.log.user_key(b"row"), b"value");
                batch.commit().unwrap();
                Err(Error::Storage("interrupted".into()))
            });
            assert!(failed.is_err());
            worker.close();
        }
        let worker = WorkerDb::open(path, crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT).unwrap();
        assert!(worker.list().unwrap().is_empty());
        let guard = worker.read();
        let open = guard.open(None).unwrap();
        assert_eq!(open.tables(0).log.iter().count(), 0);
        assert_eq!(open.catalog.prefix(keys::DEAD_PREFIX).count(), 0);
        assert_eq!(
            open.next_number().unwrap(),
            1,
            "the number is not handed out again"
        );
    }
}
