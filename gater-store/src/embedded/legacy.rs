//! Stores of the earlier layout, one fjall database per store directory
//! (`<data_dir>/stores/<store_id>`, complete once its `gater-store.config`
//! file exists), are migrated into the worker's database when the backend
//! opens: every row of the store's `log` and `index` keyspaces is copied
//! into the store's new keyspaces, the catalog row is written last and
//! durably (see `WorkerDb::import`), and only then is the old directory
//! deleted. A crash before the catalog row leaves keyspaces the next open
//! deletes and the old directory intact, so the migration starts over; a
//! crash after it leaves an old directory that the next open, finding the
//! store in the catalog, deletes.
//!
//! Directories of interrupted creations (no config file) and removals
//! (`.removing-…`) of that layout are deleted, as that layout did. A store
//! whose directory cannot be migrated is logged and left in place for the
//! next open; the worker serves the others.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use gater_core::{Error, StoreConfig, StoreId};

use super::db::WorkerDb;
use super::keys::corrupt;
use crate::faults::{fjall_error, io_error};

/// The directory of the earlier layout, inside the data directory.
const LEGACY_DIR: &str = "stores";
/// The file whose presence marked a store directory as completely created.
const CONFIG_FILE: &str = "gater-store.config";
/// Prefix of a store directory being deleted; store ids cannot start with a dot.
const REMOVING_PREFIX: &str = ".removing-";
/// Rows copied per batch while migrating a store.
const MIGRATE_BATCH_ROWS: usize = 4_096;
/// fjall threads of a store's old database while it is copied.
const MIGRATE_WORKER_THREADS: usize = 1;

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
    worker.import(store, config, |db, tables| {
        copy(db, &old_log, &tables.log)?;
        copy(db, &old_index, &tables.index)
    })
}

/// Copies every row of `from` into `to`, in batches that the import's
/// final durable batch flushes.
fn copy(db: &Database, from: &Keyspace, to: &Keyspace) -> Result<(), Error> {
    let mut batch = db.batch();
    for guard in from.iter() {
        let (key, value) = guard.into_inner().map_err(fjall_error)?;
        batch.insert(to, key, value);
        if batch.len() == MIGRATE_BATCH_ROWS {
            std::mem::replace(&mut batch, db.batch())
                .commit()
                .map_err(fjall_error)?;
        }
    }
    batch.commit().map_err(fjall_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Counters;
    use crate::embedded::keys::{self, CONFIG_KEY, COUNTERS_KEY};

    /// Writes a store in the earlier layout: its own database and config file.
    fn legacy_store(root: &Path, id: &str, config: StoreConfig) {
        let dir = root.join(LEGACY_DIR).join(id);
        let db = Database::builder(&dir).worker_threads(1).open().unwrap();
        let log = db.keyspace("log", KeyspaceCreateOptions::default).unwrap();
        let index = db
            .keyspace("index", KeyspaceCreateOptions::default)
            .unwrap();
        let config_bytes = postcard::to_stdvec(&config).unwrap();
        let mut batch = db.batch();
        batch.insert(&index, CONFIG_KEY, config_bytes.clone());
        batch.insert(
            &index,
            COUNTERS_KEY,
            keys::encode_counters(&Counters::default()).to_vec(),
        );
        batch.insert(&index, b"zkept".to_vec(), b"row".to_vec());
        batch.commit().unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
        drop((log, index, db));
        std::fs::write(dir.join(CONFIG_FILE), config_bytes).unwrap();
    }

    #[test]
    fn a_store_of_the_earlier_layout_is_migrated_at_open_and_its_directory_deleted() {
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            fsync: false,
            ..StoreConfig::default()
        };
        legacy_store(root.path(), "old", config);
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
        let old = StoreId::new("old").unwrap();
        assert_eq!(worker.list().unwrap(), vec![old.clone()]);
        assert!(!root.path().join(LEGACY_DIR).exists());
        let store = worker.open_store(&old).unwrap();
        assert_eq!(store.config, config);
        assert_eq!(store.counters(), Counters::default());
        let copied = store
            .with_tables(|t| t.index.get(b"zkept").map_err(fjall_error))
            .unwrap();
        assert_eq!(copied.as_deref(), Some(&b"row"[..]));
    }
}
