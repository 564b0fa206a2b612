//! Stores of the layouts before this one are migrated into the worker's
//! shared keyspaces when the backend opens, each through
//! `WorkerDb::import`: its rows are copied under a new store number, which
//! stays marked dead until one durable batch writes the store's catalog
//! row, so a crash mid-copy leaves rows the next open deletes and the old
//! store intact, and the migration starts over. The old store is deleted
//! only after that batch; a crash in between leaves an old store that the
//! next open, finding the id in the catalog, deletes without copying.
//!
//! Two layouts are migrated:
//! - a pair of keyspaces per store in the worker's database (`<id>#log`,
//!   `<id>#index`), listed by a `catalog` keyspace (store id → config);
//!   keyspaces of no listed store (an interrupted creation or removal) are
//!   deleted, and the `catalog` keyspace once every store left it;
//! - one fjall database per store directory (`<data_dir>/stores/<id>`,
//!   complete once its `gater-store.config` file exists); directories of
//!   interrupted creations (no config file) and removals (`.removing-…`)
//!   are deleted, as that layout did.
//!
//! A store that cannot be migrated is logged and left in place for the
//! next open; the worker serves the others.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, UserKey, UserValue};
use gater_core::{Error, StoreConfig, StoreId};

use super::db::{Imported, WorkerDb};
use super::keys::{self, corrupt, CONFIG_KEY, COUNTERS_KEY};
use super::table::Table;
use crate::faults::{fjall_error, io_error};

/// The directory of the per-directory layout, inside the data directory.
const LEGACY_DIR: &str = "stores";
/// The file whose presence marked a store directory as completely created.
const CONFIG_FILE: &str = "gater-store.config";
/// Prefix of a store directory being deleted; store ids cannot start with a dot.
const REMOVING_PREFIX: &str = ".removing-";
/// Rows copied per batch while migrating a store.
const MIGRATE_BATCH_ROWS: usize = 4_096;
/// fjall threads of a store's old database while it is copied.
const MIGRATE_WORKER_THREADS: usize = 1;
/// The catalog keyspace of the keyspace-per-store layout.
const OLD_CATALOG: &str = "catalog";
/// Ends the name of a store's log keyspace in the keyspace-per-store layout.
const OLD_LOG_SUFFIX: &str = "#log";
/// Ends the name of a store's index keyspace in the keyspace-per-store layout.
const OLD_INDEX_SUFFIX: &str = "#index";

/// The names of `store`'s keyspaces in the keyspace-per-store layout: log, then index.
fn old_keyspace_names(store: &StoreId) -> [String; 2] {
    [
        format!("{store}{OLD_LOG_SUFFIX}"),
        format!("{store}{OLD_INDEX_SUFFIX}"),
    ]
}

/// The store an old keyspace name belongs to; `None` for any other keyspace.
fn store_of_old_keyspace(name: &str) -> Option<StoreId> {
    let id = name
        .strip_suffix(OLD_LOG_SUFFIX)
        .or_else(|| name.strip_suffix(OLD_INDEX_SUFFIX))?;
    StoreId::new(id).ok()
}

/// Migrates every store of the keyspace-per-store layout in the worker's
/// database into the shared keyspaces, then deletes the old keyspaces.
pub(super) fn migrate_keyspaces(worker: &WorkerDb) -> Result<(), Error> {
    let db = worker.read().open(None)?.db.clone();
    let mut kept = BTreeSet::new();
    if db.keyspace_exists(OLD_CATALOG) {
        let catalog = db
            .keyspace(OLD_CATALOG, KeyspaceCreateOptions::default)
            .map_err(fjall_error)?;
        for (store, config) in old_catalog(&catalog)? {
            if !worker.contains(&store)? {
                tracing::info!(%store, "migrating a store into the worker's shared keyspaces");
                if let Err(error) = migrate_keyspace_store(&db, &store, config, worker) {
                    tracing::error!(%store, %error, "the store cannot be migrated; its keyspaces are kept for the next start");
                    kept.insert(store);
                    continue;
                }
            }
            let mut batch = db.batch().durability(Some(PersistMode::SyncAll));
            batch.remove(&catalog, store.as_str());
            batch.commit().map_err(fjall_error)?;
            delete_keyspaces(&db, &old_keyspace_names(&store))?;
        }
        if kept.is_empty() {
            db.delete_keyspace(catalog).map_err(fjall_error)?;
        }
    }
    let orphans: Vec<String> = db
        .list_keyspace_names()
        .iter()
        .filter(|name| store_of_old_keyspace(name).is_some_and(|store| !kept.contains(&store)))
        .map(|name| name.to_string())
        .collect();
    if !orphans.is_empty() {
        tracing::warn!(?orphans, "deleting the keyspaces of incomplete stores");
    }
    delete_keyspaces(&db, &orphans)
}

/// The stores the old catalog lists, with their configs.
fn old_catalog(catalog: &Keyspace) -> Result<Vec<(StoreId, StoreConfig)>, Error> {
    let mut stores = Vec::new();
    for guard in catalog.iter() {
        let (key, value) = guard.into_inner().map_err(fjall_error)?;
        let store = std::str::from_utf8(&key)
            .ok()
            .and_then(|s| StoreId::new(s).ok())
            .ok_or_else(|| corrupt("the old catalog holds an invalid store id"))?;
        stores.push((store, postcard::from_bytes(&value).map_err(corrupt)?));
    }
    Ok(stores)
}

/// Copies the store in its own keyspaces of `db` into `worker`.
fn migrate_keyspace_store(
    db: &Database,
    store: &StoreId,
    config: StoreConfig,
    worker: &WorkerDb,
) -> Result<(), Error> {
    let [log, index] = old_keyspace_names(store).map(|name| {
        if !db.keyspace_exists(&name) {
            return Err(corrupt(format!("the keyspace {name} is missing")));
        }
        db.keyspace(&name, KeyspaceCreateOptions::default)
            .map_err(fjall_error)
    });
    let (log, index) = (log?, index?);
    worker.import(store, config, |tables| {
        let mut imported = Imported::default();
        copy(db, rows_of(&log), &tables.log, &mut imported)?;
        copy(db, rows_of(&index), &tables.index, &mut imported)?;
        Ok(imported)
    })
}

/// Deletes the keyspaces of `db` named in `names` where they exist.
fn delete_keyspaces(db: &Database, names: &[String]) -> Result<(), Error> {
    for name in names {
        if !db.keyspace_exists(name) {
            continue;
        }
        let keyspace = db
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(fjall_error)?;
        db.delete_keyspace(keyspace).map_err(fjall_error)?;
    }
    Ok(())
}

/// Migrates every store under `<data_dir>/stores` into `worker`, then
/// deletes that directory once it is empty.
pub(super) fn migrate(data_dir: &Path, worker: &Arc<WorkerDb>) -> Result<(), Error> {
    let root = data_dir.join(LEGACY_DIR);
    let entries = match fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name.starts_with(REMOVING_PREFIX) {
            tracing::warn!(path = %path.display(), "deleting an incompletely removed store directory");
            fs::remove_dir_all(&path).map_err(io_error)?;
            continue;
        }
        let Ok(store) = StoreId::new(name.as_ref()) else {
            continue;
        };
        if !path.join(CONFIG_FILE).exists() {
            tracing::warn!(path = %path.display(), "deleting an incompletely created store directory");
            fs::remove_dir_all(&path).map_err(io_error)?;
            continue;
        }
        if !worker.contains(&store)? {
            tracing::info!(%store, path = %path.display(), "migrating a store into the worker's database");
            if let Err(error) = migrate_one(&store, &path, worker) {
                tracing::error!(%store, %error, "the store cannot be migrated; its directory is kept for the next start");
                continue;
            }
        }
        fs::remove_dir_all(&path).map_err(io_error)?;
    }
    // Only when empty: anything else there is not ours to delete.
    let _ = fs::remove_dir(&root);
    Ok(())
}

/// Copies the store in `dir` into `worker`.
fn migrate_one(store: &StoreId, dir: &Path, worker: &WorkerDb) -> Result<(), Error> {
    let config_bytes = fs::read(dir.join(CONFIG_FILE)).map_err(io_error)?;
    let config: StoreConfig = postcard::from_bytes(&config_bytes).map_err(corrupt)?;
    let old = Database::builder(dir)
        .worker_threads(MIGRATE_WORKER_THREADS)
        .open()
        .map_err(fjall_error)?;
    let old_log = old
        .keyspace("log", KeyspaceCreateOptions::default)
        .map_err(fjall_error)?;
    let old_index = old
        .keyspace("index", KeyspaceCreateOptions::default)
        .map_err(fjall_error)?;
    worker.import(store, config, |tables| {
        let mut imported = Imported::default();
        copy(&tables.db, rows_of(&old_log), &tables.log, &mut imported)?;
        copy(
            &tables.db,
            rows_of(&old_index),
            &tables.index,
            &mut imported,
        )?;
        Ok(imported)
    })
}

/// Copies `rows` (keys without any store prefix) into the store's table
/// `to`, in batches that the import's final durable batch flushes,
/// counting their bytes; a counters row is decoded instead (the import
/// writes the store's counters row), and a config row of an older layout is
/// left out (the catalog holds the config). Every import copies through
/// here: the earlier layouts and the renumbering of wide prefixes.
pub(super) fn copy(
    db: &Database,
    rows: impl Iterator<Item = fjall::Result<(UserKey, UserValue)>>,
    to: &Table,
    imported: &mut Imported,
) -> Result<(), Error> {
    let mut batch = db.batch();
    for row in rows {
        let (key, value) = row.map_err(fjall_error)?;
        if &*key == COUNTERS_KEY {
            imported.counters = Some(keys::decode_counters(&value)?.0);
            continue;
        }
        if &*key == CONFIG_KEY {
            continue;
        }
        imported.bytes += to.row_bytes(&key, value.len()) as u64;
        batch.insert(to.keyspace(), to.user_key(&key), value);
        if batch.len() == MIGRATE_BATCH_ROWS {
            std::mem::replace(&mut batch, db.batch())
                .commit()
                .map_err(fjall_error)?;
        }
    }
    batch.commit().map_err(fjall_error)
}

/// Every row of a keyspace of an earlier layout, whose keys have no store
/// prefix.
fn rows_of(keyspace: &Keyspace) -> impl Iterator<Item = fjall::Result<(UserKey, UserValue)>> {
    keyspace.iter().map(|guard| guard.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Counters;
    use crate::embedded::checksum;
    use gater_core::{Direction, EventData, EventId, Position, RecordedEvent, StreamId};

    fn config() -> StoreConfig {
        StoreConfig {
            fsync: false,
            ..StoreConfig::default()
        }
    }

    /// The events every old store below holds: one stream, ids that the
    /// stores share.
    fn events() -> Vec<RecordedEvent> {
        (0..3u8)
            .map(|i| RecordedEvent {
                stream: StreamId::new("orders-1").unwrap(),
                version: u64::from(i),
                position: Position(u64::from(i)),
                created_us: 1,
                data: EventData::json(
                    EventId::from_bytes([i + 1; 16]),
                    "Placed",
                    b"{}".to_vec(),
                    Vec::new(),
                ),
            })
            .collect()
    }

    /// Writes a store of `events` with its counters row as the layouts
    /// before this one did (no store prefix, a 24-byte counters row).
    fn write_old_rows(db: &Database, log: &Keyspace, index: &Keyspace, events: &[RecordedEvent]) {
        let mut batch = db.batch();
        for event in events {
            let mut record = postcard::to_stdvec(event).unwrap();
            record.extend_from_slice(&checksum::of(&record.clone()));
            let stream = event.stream.as_str();
            batch.insert(log, keys::position_key(event.position.0), record);
            batch.insert(
                index,
                keys::stream_key(stream, event.version),
                event.position.0.to_be_bytes(),
            );
            let mut id_value = Vec::new();
            keys::put_id_value(&mut id_value, stream, event.version, event.position);
            batch.insert(index, keys::id_key(&event.data.id), id_value);
            let mut type_key = Vec::new();
            keys::put_type_posting(&mut type_key, &event.data.event_type, event.position.0);
            batch.insert(index, type_key, []);
        }
        let counters = Counters {
            head: events.last().map(|e| e.position),
            event_count: events.len() as u64,
            stream_count: u64::from(!events.is_empty()),
        };
        batch.insert(index, CONFIG_KEY, postcard::to_stdvec(&config()).unwrap());
        batch.insert(
            index,
            COUNTERS_KEY,
            keys::encode_counters(&counters, 0)[..24].to_vec(),
        );
        batch.commit().unwrap();
        db.persist(PersistMode::SyncAll).unwrap();
    }

    /// Writes a store in the per-directory layout: its own database and config file.
    fn legacy_store(root: &Path, id: &str) {
        let dir = root.join(LEGACY_DIR).join(id);
        let db = Database::builder(&dir).worker_threads(1).open().unwrap();
        let log = db.keyspace("log", KeyspaceCreateOptions::default).unwrap();
        let index = db
            .keyspace("index", KeyspaceCreateOptions::default)
            .unwrap();
        write_old_rows(&db, &log, &index, &events());
        drop((log, index, db));
        std::fs::write(
            dir.join(CONFIG_FILE),
            postcard::to_stdvec(&config()).unwrap(),
        )
        .unwrap();
    }

    /// Writes stores `ids` in the keyspace-per-store layout, and the
    /// keyspaces of an interrupted creation.
    fn keyspace_stores(root: &Path, ids: &[&str]) {
        let db = Database::builder(root.join(super::super::db::DB_DIR))
            .worker_threads(1)
            .open()
            .unwrap();
        let catalog = db
            .keyspace(OLD_CATALOG, KeyspaceCreateOptions::default)
            .unwrap();
        for id in ids.iter().chain(&["half"]) {
            let [log, index] = old_keyspace_names(&StoreId::new(*id).unwrap())
                .map(|name| db.keyspace(&name, KeyspaceCreateOptions::default).unwrap());
            write_old_rows(&db, &log, &index, &events());
            if *id != "half" {
                catalog
                    .insert(*id, postcard::to_stdvec(&config()).unwrap())
                    .unwrap();
            }
        }
        db.persist(PersistMode::SyncAll).unwrap();
    }

    /// Checks that `id` holds exactly [`events`] and takes the next one at the next position.
    fn check_migrated(worker: &Arc<WorkerDb>, id: &str) {
        let store = worker.open_store(&StoreId::new(id).unwrap()).unwrap();
        assert_eq!(store.config, config());
        let stream = StreamId::new("orders-1").unwrap();
        let read = store
            .read_stream(&stream, 0, 10, Direction::Forward)
            .unwrap();
        assert_eq!(read, events(), "{id}");
        let all = store
            .read_all(Position::END, 10, Direction::Backward)
            .unwrap();
        assert_eq!(all.len(), 3, "{id}");
        assert_eq!(store.counters().head, Some(Position(2)));
        let verified = store.verify().unwrap();
        assert!(verified.corrupt.is_empty() && verified.records == 3);
        // Every copied row is counted: the log's records among them.
        let record_bytes: u64 = store
            .with_tables(|t| Ok(t.log.iter().map(|e| e.value().unwrap().len() as u64).sum()))
            .unwrap();
        assert!(store.store_bytes() > record_bytes);
    }

    /// Rows of the worker's shared keyspaces under no listed store and no
    /// dead mark left: an import that was interrupted left nothing.
    fn no_stray_rows(worker: &WorkerDb) {
        let guard = worker.read();
        let open = guard.open(None).unwrap();
        assert_eq!(open.catalog.prefix(keys::DEAD_PREFIX).count(), 0);
        let mut numbers = BTreeSet::new();
        for entry in open.catalog.iter() {
            let (key, value) = entry.into_inner().unwrap();
            if !key.starts_with(b".") {
                numbers.insert(keys::decode_catalog_value(&value).unwrap().0);
            }
        }
        for number in 0..8 {
            let t = open.tables(number);
            let rows = t.log.iter().count() + t.index.iter().count();
            assert_eq!(rows > 0, numbers.contains(&number), "store number {number}");
        }
    }

    #[test]
    fn a_store_of_the_per_directory_layout_is_migrated_at_open_and_its_directory_deleted() {
        let root = tempfile::tempdir().unwrap();
        legacy_store(root.path(), "old");
        // An interrupted creation of that layout: no config file.
        std::fs::create_dir_all(root.path().join(LEGACY_DIR).join("half")).unwrap();
        let worker = Arc::new(
            WorkerDb::open(
                root.path().join("db"),
                crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT,
            )
            .unwrap(),
        );
        migrate(root.path(), &worker).unwrap();
        assert_eq!(worker.list().unwrap(), vec![StoreId::new("old").unwrap()]);
        assert!(!root.path().join(LEGACY_DIR).exists());
        check_migrated(&worker, "old");
        no_stray_rows(&worker);
    }

    #[test]
    fn stores_of_the_keyspace_per_store_layout_are_migrated_and_their_keyspaces_deleted() {
        let root = tempfile::tempdir().unwrap();
        keyspace_stores(root.path(), &["a", "b"]);
        let worker = Arc::new(
            WorkerDb::open(
                root.path().join("db"),
                crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT,
            )
            .unwrap(),
        );
        migrate_keyspaces(&worker).unwrap();
        let ids: Vec<StoreId> = ["a", "b"].map(|id| StoreId::new(id).unwrap()).into();
        assert_eq!(worker.list().unwrap(), ids);
        // Both hold the same stream and ids, each its own.
        check_migrated(&worker, "a");
        check_migrated(&worker, "b");
        no_stray_rows(&worker);
        let db = worker.read().open(None).unwrap().db.clone();
        let mut names: Vec<String> = db
            .list_keyspace_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["index", "log", "stores"]);
    }

    #[test]
    fn a_migration_interrupted_mid_copy_loses_nothing_and_starts_over_at_the_next_open() {
        let root = tempfile::tempdir().unwrap();
        keyspace_stores(root.path(), &["a"]);
        legacy_store(root.path(), "old");
        let db_dir = root.path().join("db");
        {
            // Both migrations stop after copying the log, as a crash would.
            let worker = Arc::new(
                WorkerDb::open(
                    db_dir.clone(),
                    crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT,
                )
                .unwrap(),
            );
            let db = worker.read().open(None).unwrap().db.clone();
            let old_log = db
                .keyspace("a#log", KeyspaceCreateOptions::default)
                .unwrap();
            let a = StoreId::new("a").unwrap();
            let interrupted = worker.import(&a, config(), |t| {
                copy(&t.db, rows_of(&old_log), &t.log, &mut Imported::default())?;
                Err(Error::Storage("crashed".into()))
            });
            assert!(interrupted.is_err());
            let old = Database::builder(root.path().join(LEGACY_DIR).join("old"))
                .open()
                .unwrap();
            let old_log = old.keyspace("log", KeyspaceCreateOptions::default).unwrap();
            let interrupted = worker.import(&StoreId::new("old").unwrap(), config(), |t| {
                copy(&t.db, rows_of(&old_log), &t.log, &mut Imported::default())?;
                Err(Error::Storage("crashed".into()))
            });
            assert!(interrupted.is_err());
            drop((old_log, old));
            assert!(worker.list().unwrap().is_empty());
            worker.close();
        }
        let worker = Arc::new(
            WorkerDb::open(db_dir, crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT).unwrap(),
        );
        migrate_keyspaces(&worker).unwrap();
        migrate(root.path(), &worker).unwrap();
        check_migrated(&worker, "a");
        check_migrated(&worker, "old");
        no_stray_rows(&worker);
    }

    /// A database of the wide layout holding stores "a" (number 0) and
    /// "b" (number 1) with [`events`]; `crash` edits it before it is
    /// closed, as an interrupted renumbering would have left it.
    fn wide_layout(root: &Path, crash: impl FnOnce(&Database, &[Keyspace; 3])) {
        legacy_store(root, "a");
        legacy_store(root, "b");
        {
            let worker = Arc::new(
                WorkerDb::open(
                    root.join("db"),
                    crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT,
                )
                .unwrap(),
            );
            migrate(root, &worker).unwrap();
            worker.close();
        }
        let db = Database::builder(root.join("db")).open().unwrap();
        let spaces = ["stores", "log", "index"]
            .map(|name| db.keyspace(name, KeyspaceCreateOptions::default).unwrap());
        let [catalog, log, index] = &spaces;
        for number in 0..2 {
            move_rows(&db, [log, index], number, keys::StorePrefix::wide(number));
        }
        catalog.remove(keys::LAYOUT_KEY).unwrap();
        crash(&db, &spaces);
        db.persist(PersistMode::SyncAll).unwrap();
    }

    /// Copies the rows of store `number` (a short prefix) under `to`,
    /// removing the originals.
    fn move_rows(db: &Database, spaces: [&Keyspace; 2], number: u32, to: keys::StorePrefix) {
        let from = keys::StorePrefix::short(number);
        let mut batch = db.batch();
        for keyspace in spaces {
            for guard in keyspace.prefix(from.as_bytes()) {
                let (key, value) = guard.into_inner().unwrap();
                let mut moved = to.as_bytes().to_vec();
                moved.extend_from_slice(&key[from.as_bytes().len()..]);
                batch.insert(keyspace, moved, value);
                batch.remove(keyspace, key);
            }
        }
        batch.commit().unwrap();
    }

    /// Opens the worker after [`wide_layout`] and checks that both stores
    /// hold their events under short prefixes, with exact byte counts, and
    /// that no wide or stray row is left.
    fn check_renumbered(root: &Path) {
        let worker = Arc::new(
            WorkerDb::open(
                root.join("db"),
                crate::StoreOptions::BLOCK_CACHE_BYTES_DEFAULT,
            )
            .unwrap(),
        );
        let ids: Vec<StoreId> = ["a", "b"].map(|id| StoreId::new(id).unwrap()).into();
        assert_eq!(worker.list().unwrap(), ids);
        for id in ["a", "b"] {
            check_migrated(&worker, id);
            let store = worker.open_store(&StoreId::new(id).unwrap()).unwrap();
            let counted: u64 = store
                .with_tables(|t| {
                    let mut bytes = 0;
                    for table in [&t.log, &t.index] {
                        for entry in table.iter() {
                            let (key, value) = entry.into_inner().unwrap();
                            bytes += table.row_bytes(&key, value.len()) as u64;
                        }
                    }
                    Ok(bytes)
                })
                .unwrap();
            assert_eq!(store.store_bytes(), counted, "{id}");
        }
        no_stray_rows(&worker);
        let guard = worker.read();
        let open = guard.open(None).unwrap();
        assert_eq!(
            open.tables(0).log.keyspace().prefix([0u8]).count()
                + open.tables(0).index.keyspace().prefix([0u8]).count(),
            0,
            "no row under a wide prefix is left"
        );
    }

    #[test]
    fn stores_of_the_wide_prefix_layout_are_renumbered_to_short_prefixes_at_open() {
        let root = tempfile::tempdir().unwrap();
        wide_layout(root.path(), |_, _| {});
        check_renumbered(root.path());
    }

    #[test]
    fn a_renumbering_interrupted_mid_copy_loses_nothing_and_starts_over() {
        let root = tempfile::tempdir().unwrap();
        wide_layout(root.path(), |db, [catalog, log, _]| {
            // The layout row was written, number 2 taken and marked dead,
            // and store number 0's log copied under it.
            catalog
                .insert(keys::LAYOUT_KEY, keys::number_bytes(2))
                .unwrap();
            catalog
                .insert(keys::NEXT_NUMBER_KEY, keys::number_bytes(3))
                .unwrap();
            catalog.insert(keys::dead_key(2), []).unwrap();
            let mut batch = db.batch();
            for guard in log.prefix(keys::StorePrefix::wide(0).as_bytes()) {
                let (key, value) = guard.into_inner().unwrap();
                let mut copied = keys::StorePrefix::short(2).as_bytes().to_vec();
                copied.extend_from_slice(&key[4..]);
                batch.insert(log, copied, value);
            }
            batch.commit().unwrap();
        });
        check_renumbered(root.path());
    }

    #[test]
    fn a_renumbering_interrupted_after_its_catalog_row_deletes_the_old_rows_at_the_next_open() {
        let root = tempfile::tempdir().unwrap();
        wide_layout(root.path(), |db, [catalog, log, index]| {
            // a moved to number 2 in full; its old number (0 or 1: the
            // stores were migrated in directory order) is marked dead,
            // its old rows not yet deleted.
            catalog
                .insert(keys::LAYOUT_KEY, keys::number_bytes(2))
                .unwrap();
            catalog
                .insert(keys::NEXT_NUMBER_KEY, keys::number_bytes(3))
                .unwrap();
            let row = catalog.get("a").unwrap().unwrap();
            let (old, config) = keys::decode_catalog_value(&row).unwrap();
            catalog.insert(keys::dead_key(old), []).unwrap();
            catalog.insert("a", keys::catalog_value(2, config)).unwrap();
            let short = keys::StorePrefix::short(2);
            let (mut batch, mut bytes, mut counters) = (db.batch(), 0, None);
            for keyspace in [log, index] {
                for guard in keyspace.prefix(keys::StorePrefix::wide(old).as_bytes()) {
                    let (key, value) = guard.into_inner().unwrap();
                    let mut copied = short.as_bytes().to_vec();
                    copied.extend_from_slice(&key[4..]);
                    bytes += (copied.len() + value.len()) as u64;
                    if &key[4..] == COUNTERS_KEY {
                        counters = Some(keys::decode_counters(&value).unwrap().0);
                    }
                    batch.insert(keyspace, copied, value);
                }
            }
            // The renumbering's catalog batch wrote the counters row with the
            // rows' bytes under the new prefix.
            let mut counters_key = short.as_bytes().to_vec();
            counters_key.extend_from_slice(COUNTERS_KEY);
            batch.insert(
                index,
                counters_key,
                keys::encode_counters(&counters.unwrap(), bytes).to_vec(),
            );
            batch.commit().unwrap();
        });
        check_renumbered(root.path());
    }
}
