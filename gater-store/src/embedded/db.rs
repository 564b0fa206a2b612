//! The worker's database: one fjall `Database` under `<data_dir>/db` holds
//! every store of the worker, each store a pair of keyspaces named from its
//! id (see [`keyspace_names`]), plus a `catalog` keyspace (store id →
//! config) whose row marks a store as completely created.
//!
//! One database means one journal, one pool of fjall threads
//! ([`WORKER_THREADS`]) and one cap on cached open files
//! ([`CACHED_FILES_MAX`]) whatever the number of stores, and commits of
//! different stores can share one flush (see `group`). It also means that a
//! journal failure fails every store on it: fjall then refuses every write
//! until the database is reopened, and a reopen (`WorkerDb::reopen`) drops
//! and recovers the database for all its stores at once, re-attaching each
//! open store to the recovered keyspaces with its counters read back from
//! them.
//!
//! Creation writes the store's keyspaces, then its config, counters and
//! catalog row in one durable batch; removal deletes the catalog row
//! durably, then the keyspaces. Keyspaces whose store has no catalog row
//! (an interrupted creation or removal) are deleted when the database opens.
//!
//! What it does not do: reading and writing a store's tables (the rest of
//! `embedded`), and stores in the layout before this one (see `legacy`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, Weak};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use gater_core::{Error, StoreConfig, StoreId};

use super::keys::{self, corrupt, CONFIG_KEY, COUNTERS_KEY};
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
const CATALOG: &str = "catalog";
/// Ends the name of a store's log keyspace.
const LOG_SUFFIX: &str = "#log";
/// Ends the name of a store's index keyspace.
const INDEX_SUFFIX: &str = "#index";

/// The names of `store`'s keyspaces: log, then index. Store ids
/// (`[a-z0-9_-]{1,64}`) are valid keyspace names as they are (fjall takes
/// alphanumerics, `_`, `-`, `.`, `#` and `$`, up to 255 bytes), so the
/// name is the id and a suffix that no id holds.
pub(super) fn keyspace_names(store: &StoreId) -> [String; 2] {
    [
        format!("{store}{LOG_SUFFIX}"),
        format!("{store}{INDEX_SUFFIX}"),
    ]
}

/// The store a keyspace name belongs to ([`keyspace_names`] read back);
/// `None` for any other keyspace.
pub(super) fn store_of_keyspace(name: &str) -> Option<StoreId> {
    let id = name
        .strip_suffix(LOG_SUFFIX)
        .or_else(|| name.strip_suffix(INDEX_SUFFIX))?;
    StoreId::new(id).ok()
}

/// How each of a store's keyspaces is created: log, then index.
fn create_options() -> [KeyspaceCreateOptions; 2] {
    // Positions are read back only when they exist, so the log needs no
    // bloom filters on its last level; the index is mostly probed for
    // event ids that are not there, so it keeps them.
    [
        KeyspaceCreateOptions::default().expect_point_read_hits(true),
        KeyspaceCreateOptions::default(),
    ]
}

/// The open keyspaces of one store.
pub(super) struct Tables {
    pub(super) db: Database,
    pub(super) log: Keyspace,
    pub(super) index: Keyspace,
    /// The database's generation these handles belong to.
    pub(super) generation: u64,
}

impl Tables {
    /// The store's keyspaces in `open`; they must exist.
    pub(super) fn attach_existing(open: &OpenDb, store: &StoreId) -> Result<Tables, Error> {
        let [log, index] = keyspace_names(store);
        for name in [&log, &index] {
            if !open.db.keyspace_exists(name) {
                return Err(corrupt(format!("the keyspace {name} is missing")));
            }
        }
        Self::open_or_create(open, store)
    }

    /// The store's keyspaces in `open`, created when missing.
    fn open_or_create(open: &OpenDb, store: &StoreId) -> Result<Tables, Error> {
        let [log_name, index_name] = keyspace_names(store);
        let [log_options, index_options] = create_options();
        let log = open
            .db
            .keyspace(&log_name, || log_options)
            .map_err(fjall_error)?;
        let index = open
            .db
            .keyspace(&index_name, || index_options)
            .map_err(fjall_error)?;
        Ok(Tables {
            db: open.db.clone(),
            log,
            index,
            generation: open.generation,
        })
    }

    /// Bytes the store's own keyspaces hold on disk: their tables, plus
    /// what their active memtables hold (records only in the journal every
    /// store shares, until they are flushed into tables).
    pub(super) fn disk_space(&self) -> u64 {
        use fjall::AbstractTree;
        [&self.log, &self.index]
            .iter()
            .map(|k| k.disk_space() + k.tree.active_memtable().size())
            .sum()
    }
}

/// The worker's database as it is now.
pub(super) struct OpenDb {
    pub(super) db: Database,
    catalog: Keyspace,
    /// Counts the times the database was opened by this process.
    pub(super) generation: u64,
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
    /// keyspaces, so a reopen (which writes it) waits for them all.
    state: RwLock<(DbSlot, u64)>,
    /// Open stores, re-attached after a reopen.
    stores: Mutex<BTreeMap<StoreId, Weak<StoreInner>>>,
    /// Commits of several stores sharing one flush.
    pub(super) group: super::group::GroupCommit,
}

/// The database, read-locked for the length of a call.
pub(super) struct DbGuard<'a>(RwLockReadGuard<'a, (DbSlot, u64)>);

impl DbGuard<'_> {
    /// The open database, or why there is none.
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
    /// Opens (or creates) the database at `path` and deletes the keyspaces
    /// of stores that were never completely created or not completely removed.
    pub(super) fn open(path: PathBuf, block_cache_bytes: u64) -> Result<WorkerDb, Error> {
        let open = open_db(&path, 1, block_cache_bytes)?;
        let worker = WorkerDb {
            path,
            block_cache_bytes,
            state: RwLock::new((DbSlot::Open(open), 1)),
            stores: Mutex::new(BTreeMap::new()),
            group: super::group::GroupCommit::default(),
        };
        worker.remove_orphans()?;
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

    fn remove_orphans(&self) -> Result<(), Error> {
        let guard = self.read();
        let open = guard.open(None)?;
        for name in open.db.list_keyspace_names() {
            let name: &str = &name;
            if name == CATALOG {
                continue;
            }
            let listed = match store_of_keyspace(name) {
                Some(store) => open
                    .catalog
                    .contains_key(store.as_str())
                    .map_err(fjall_error)?,
                None => false,
            };
            if !listed {
                tracing::warn!(
                    keyspace = name,
                    "deleting the keyspace of an incomplete store"
                );
                let keyspace = open
                    .db
                    .keyspace(name, KeyspaceCreateOptions::default)
                    .map_err(fjall_error)?;
                open.db.delete_keyspace(keyspace).map_err(fjall_error)?;
            }
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

    /// Creates `store` with `config`, durably, and opens it.
    pub(super) fn create(
        self: &Arc<Self>,
        store: &StoreId,
        config: StoreConfig,
    ) -> Result<Arc<StoreInner>, Error> {
        self.import(store, config, |_, _| Ok(()))?;
        self.open_store(store)
    }

    /// Creates `store`'s keyspaces, lets `fill` write into them (the rows
    /// of a store in the earlier layout, see `legacy`), then writes its
    /// config, counters and catalog row in one durable batch: until that
    /// batch the store does not exist, and its keyspaces are deleted at
    /// the next open. The counters row `fill` wrote, if any, is kept.
    pub(super) fn import(
        &self,
        store: &StoreId,
        config: StoreConfig,
        fill: impl FnOnce(&Database, &Tables) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let guard = self.read();
        let open = guard.open(Some(store))?;
        if open
            .catalog
            .contains_key(store.as_str())
            .map_err(fjall_error)?
        {
            return Err(Error::Storage(format!("store {store} already exists")));
        }
        delete_keyspaces(open, store)?;
        let tables = Tables::open_or_create(open, store)?;
        fill(&open.db, &tables)?;
        let config_bytes = postcard::to_stdvec(&config).map_err(encode_error)?;
        let mut batch = open.db.batch().durability(Some(PersistMode::SyncAll));
        batch.insert(&tables.index, CONFIG_KEY, config_bytes.clone());
        if !tables
            .index
            .contains_key(COUNTERS_KEY)
            .map_err(fjall_error)?
        {
            batch.insert(
                &tables.index,
                COUNTERS_KEY,
                keys::encode_counters(&Counters::default()).to_vec(),
            );
        }
        batch.insert(&open.catalog, store.as_str(), config_bytes);
        batch.commit().map_err(fjall_error)
    }

    /// Opens `store`, recovering its counters from its keyspaces.
    pub(super) fn open_store(self: &Arc<Self>, store: &StoreId) -> Result<Arc<StoreInner>, Error> {
        let guard = self.read();
        let open = guard.open(Some(store))?;
        let config_bytes = open
            .catalog
            .get(store.as_str())
            .map_err(fjall_error)?
            .ok_or_else(|| Error::not_found(gater_core::Resource::Store, store))?;
        let config: StoreConfig = postcard::from_bytes(&config_bytes).map_err(corrupt)?;
        let tables = Tables::attach_existing(open, store)?;
        let counters = tables.recover_counters()?;
        let lifecycles = tables.load_lifecycles()?;
        let inner = Arc::new(StoreInner::new(
            store.clone(),
            Arc::clone(self),
            config,
            counters,
            lifecycles,
            tables,
        ));
        self.register(&inner);
        Ok(inner)
    }

    /// Deletes `store`: its catalog row durably, then its keyspaces.
    pub(super) fn remove(&self, store: &StoreId) -> Result<(), Error> {
        self.unregister(store);
        let guard = self.read();
        let open = guard.open(Some(store))?;
        let mut batch = open.db.batch().durability(Some(PersistMode::SyncAll));
        batch.remove(&open.catalog, store.as_str());
        batch.commit().map_err(fjall_error)?;
        delete_keyspaces(open, store)
    }

    fn register(&self, inner: &Arc<StoreInner>) {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.retain(|_, store| store.strong_count() > 0);
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
    /// then re-attached to its keyspaces with its counters, lifecycle
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

/// Opens the database at `path` with the worker's fixed pools and a block
/// cache of `block_cache_bytes`.
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
    Ok(OpenDb {
        db,
        catalog,
        generation,
    })
}

/// Deletes `store`'s keyspaces where they exist.
fn delete_keyspaces(open: &OpenDb, store: &StoreId) -> Result<(), Error> {
    for name in keyspace_names(store) {
        if !open.db.keyspace_exists(&name) {
            continue;
        }
        let keyspace = open
            .db
            .keyspace(&name, KeyspaceCreateOptions::default)
            .map_err(fjall_error)?;
        open.db.delete_keyspace(keyspace).map_err(fjall_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_names_map_back_to_their_store_and_nothing_else_does() {
        for id in ["a", "orders", "team-1_x", &"z".repeat(64)] {
            let store = StoreId::new(id).unwrap();
            for name in keyspace_names(&store) {
                assert!(name.len() <= 255, "{name}");
                assert_eq!(store_of_keyspace(&name), Some(store.clone()));
            }
        }
        for other in ["catalog", "#log", "a#logs", "A#log", "a.b#index"] {
            assert_eq!(store_of_keyspace(other), None, "{other}");
        }
    }
}
