//! Many stores on one worker under the common open-file limit: a child
//! process whose `RLIMIT_NOFILE` is 1,024 (`ulimit -n 1024`) creates 10,000
//! stores (another count with `GATER_MANY_STORES=N`), appends to each, and
//! opens its data directory again with all of them. Stores share the
//! worker's database and its keyspaces, so the files it keeps open do not
//! grow with the number of stores (the layout with a database per store
//! ran out of descriptors at store 505).
//!
//! Slow (ten thousand stores, each created durably; on `/dev/shm` where
//! there is one; about half a minute in a debug build): runs only when
//! `RUN_SLOW_TESTS` is set, and says so when it skips.

use std::path::Path;
use std::process::Command;

use gater_core::{
    EventData, EventId, ExpectedVersion, Gater, Position, StoreConfig, StoreId, StreamId,
};
use gater_store::{Store, StoreOptions};

/// Stores the child creates by default: the scale target, ten times the
/// open-file limit (the layout with a database per store failed at store
/// 505).
const STORES_DEFAULT: u32 = 10_000;
/// The child's open-file limit.
const FD_LIMIT: u32 = 1_024;
/// Set in the child's environment: the test body runs there.
const CHILD_ENV: &str = "GATER_MANY_STORES_CHILD";
/// A memory file system for the child's data directory, where the machine has one.
const SHM: &str = "/dev/shm";
/// This test's name, for the child's filter.
const TEST_NAME: &str = "more_stores_than_open_files_work_under_an_open_file_limit_of_1024";

/// Stores the child creates: `GATER_MANY_STORES`, else [`STORES_DEFAULT`].
fn stores() -> u32 {
    std::env::var("GATER_MANY_STORES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(STORES_DEFAULT)
}

fn id(i: u32) -> StoreId {
    StoreId::new(format!("tenant-{i}")).unwrap()
}

fn event(i: u32) -> EventData {
    let mut bytes = [0u8; 16];
    bytes[12..].copy_from_slice(&i.to_be_bytes());
    EventData::json(
        EventId::from_random_bytes(bytes),
        "TenantEvent",
        format!("{{\"tenant\":{i}}}").into_bytes(),
        Vec::new(),
    )
}

/// Files this process has open.
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn more_stores_than_open_files_work_under_an_open_file_limit_of_1024() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let dir = std::env::var_os(CHILD_ENV).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(child(Path::new(&dir)));
        return;
    }
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        eprintln!(
            "skipped: set RUN_SLOW_TESTS to create {} stores under `ulimit -n {FD_LIMIT}`",
            stores()
        );
        return;
    }
    // The test is about open files, not the disk: on a memory file system
    // (where there is one) each store's durable creation costs no disk flush.
    let dir = match Path::new(SHM).is_dir() {
        true => tempfile::tempdir_in(SHM).unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the child failed: {status}");
}

async fn child(dir: &Path) {
    let limit = Command::new("sh")
        .args(["-c", "ulimit -n"])
        .output()
        .unwrap();
    let limit = String::from_utf8_lossy(&limit.stdout).trim().to_owned();
    assert_eq!(
        limit,
        FD_LIMIT.to_string(),
        "the child runs under the limit"
    );
    let stream = StreamId::new("s").unwrap();
    let stores = stores();
    {
        let store = Store::open(StoreOptions::new(dir)).await.unwrap();
        for i in 0..stores {
            store
                .create_store(&id(i), StoreConfig::default())
                .await
                .unwrap_or_else(|e| panic!("store {i}: {e}"));
            store
                .append_events(&id(i), &stream, ExpectedVersion::NoStream, vec![event(i)])
                .await
                .unwrap_or_else(|e| panic!("append to store {i}: {e}"));
        }
        let files = open_files();
        eprintln!("{stores} stores created, {files} files open");
        assert!(files < FD_LIMIT as usize / 2, "{files} files open");
        store.shutdown().await;
    }
    let store = Store::open(StoreOptions::new(dir)).await.unwrap();
    let listed = store.list_stores().await.unwrap();
    assert_eq!(listed.len(), stores as usize);
    for i in [0, stores / 2, stores - 1] {
        let read = store
            .read_all(&id(i), Position::START, 10, gater_core::Direction::Forward)
            .await
            .unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].data.id, event(i).id);
    }
    let next = store
        .append_events(
            &id(7),
            &stream,
            ExpectedVersion::Exact(0),
            vec![event(stores)],
        )
        .await
        .unwrap();
    assert_eq!(next.position, Position(1));
    eprintln!(
        "reopened with {} stores, {} files open",
        listed.len(),
        open_files()
    );
    store.shutdown().await;
}
