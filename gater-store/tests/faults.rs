//! Disk faults of the embedded backend: a failed fsync or write never gets
//! an append acknowledged that is not on disk after a reopen, a full disk
//! makes the store `read_only` (reads served, other stores unaffected) until
//! it heals by itself, and damaged files make a store `failed` while the
//! worker serves its other stores.
//!
//! The faults are injected through the backend's fault seam, which exists
//! only in builds with debug assertions; the real full disk (a tmpfs) is in
//! `disk_full.rs`.
#![cfg(debug_assertions)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gater_core::{
    Direction, Error, EventData, EventId, ExpectedVersion, Gater, Position, StoreConfig, StoreId,
    StoreState, StreamId,
};
use gater_store::{HealOptions, InjectedFault, Store, StoreOptions};

/// Heal checks in these tests: short, so a healing store is seen soon.
const HEAL_INTERVAL_MS: u64 = 20;
/// Most status polls while waiting for a store to change state.
const POLLS_MAX: u32 = 2_000;
/// Concurrent appenders racing the injected fault.
const APPENDERS: u8 = 8;

fn options(dir: &Path) -> StoreOptions {
    let mut options = StoreOptions::new(dir);
    options.heal = HealOptions {
        interval_ms: HEAL_INTERVAL_MS,
        backoff_max_ms: 4 * HEAL_INTERVAL_MS,
        // The test machine's disk has room for this: a read-only store heals.
        free_bytes_min: 1024 * 1024,
        free_percent_min: 0,
    };
    options
}

fn store_id(s: &str) -> StoreId {
    StoreId::new(s).unwrap()
}

fn stream(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

fn event(tag: u8, n: u32, data: &[u8]) -> EventData {
    let mut id = [0u8; 16];
    id[0] = tag;
    id[12..].copy_from_slice(&n.to_be_bytes());
    EventData::json(
        EventId::from_random_bytes(id),
        "Faulted",
        data.to_vec(),
        Vec::new(),
    )
}

const DURABLE: StoreConfig = StoreConfig {
    fsync: true,
    group_commit: true,
    retention: gater_core::Retention::NONE,
};

/// Polls the store's status until it is in `state` (bounded by a number of
/// polls, not by time).
async fn wait_for_state(store: &Store, id: &StoreId, state: StoreState) {
    for _ in 0..POLLS_MAX {
        if store.get_store_status(id).await.unwrap().state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = store.get_store_status(id).await.unwrap();
    panic!("store {id} never became {state}: {status:?}");
}

/// Every event of the store's log, checked gapless, and each stream's
/// versions checked dense; returns the event ids by position.
async fn check_log(store: &Store, id: &StoreId) -> Vec<EventId> {
    let events = store
        .read_all(id, Position::START, 10_000, Direction::Forward)
        .await
        .unwrap();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position.0, i as u64, "positions are gapless");
        let next = versions.entry(e.stream.to_string()).or_insert(0);
        assert_eq!(e.version, *next, "versions of {} are dense", e.stream);
        *next += 1;
    }
    events.iter().map(|e| e.data.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_acknowledges_nothing_that_is_not_on_disk_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id = store_id("orders");
    let mut acked: Vec<EventId> = Vec::new();
    {
        let store = Store::open(options(dir.path())).await.unwrap();
        store.create_store(&id, DURABLE).await.unwrap();
        for n in 0..10 {
            let e = event(1, n, b"{}");
            store
                .append_events(&id, &stream("a"), ExpectedVersion::Any, vec![e.clone()])
                .await
                .unwrap();
            acked.push(e.id);
        }
        store
            .inject_fault(&id, InjectedFault::FailNextFsync)
            .unwrap();
        // Concurrent appenders: the first batch after the fault fails whole.
        let mut tasks = Vec::new();
        for task in 0..APPENDERS {
            let (store, id) = (store.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let e = event(2, u32::from(task), b"{}");
                let s = stream(&format!("s{}", task % 3));
                let result = store
                    .append_events(&id, &s, ExpectedVersion::Any, vec![e.clone()])
                    .await;
                (e.id, result)
            }));
        }
        let mut failed = 0;
        for task in tasks {
            let (event_id, result) = task.await.unwrap();
            match result {
                Ok(_) => acked.push(event_id),
                Err(Error::StorageFailed { store, message }) => {
                    assert_eq!(store, "orders");
                    assert!(!message.contains("Os {"), "no debug dump: {message}");
                    failed += 1;
                }
                Err(other) => panic!("an append got {other:?}"),
            }
        }
        assert!(failed >= 1, "the failed batch's appenders got errors");
        let status = store.get_store_status(&id).await.unwrap();
        assert_eq!(status.state, StoreState::Failed, "{status:?}");
        assert!(status.reason.is_some());
        // Reads keep working; appends are refused until the store reopens.
        store
            .read_all(&id, Position::START, 10, Direction::Forward)
            .await
            .unwrap();
        let refused = store
            .append_events(
                &id,
                &stream("a"),
                ExpectedVersion::Any,
                vec![event(3, 0, b"{}")],
            )
            .await;
        assert!(
            matches!(&refused, Err(Error::StorageFailed { .. })),
            "{refused:?}"
        );
        store.reopen_store(&id).await.unwrap();
        assert_eq!(
            store.get_store_status(&id).await.unwrap().state,
            StoreState::Running
        );
        let on_disk = check_log(&store, &id).await;
        for n in 0..10 {
            let e = event(4, n, b"{}");
            store
                .append_events(&id, &stream("a"), ExpectedVersion::Any, vec![e.clone()])
                .await
                .unwrap();
            acked.push(e.id);
        }
        // Appends after the reopen continue the log the disk holds.
        let after = check_log(&store, &id).await;
        assert_eq!(&after[..on_disk.len()], &on_disk[..]);
        store.shutdown().await;
    }
    let store = Store::open(options(dir.path())).await.unwrap();
    let logged = check_log(&store, &id).await;
    for event_id in &acked {
        assert!(
            logged.contains(event_id),
            "acknowledged {event_id} is on disk"
        );
    }
    eprintln!(
        "fsync failure: {} appends acknowledged, {} events on disk after the restart, none lost",
        acked.len(),
        logged.len()
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_heals_by_itself_with_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let id = store_id("ledger");
    let store = Store::open(options(dir.path())).await.unwrap();
    store.create_store(&id, DURABLE).await.unwrap();
    store
        .inject_fault(&id, InjectedFault::FailNextWrite)
        .unwrap();
    let failed = store
        .append_events(
            &id,
            &stream("a"),
            ExpectedVersion::NoStream,
            vec![event(1, 0, b"{}")],
        )
        .await;
    assert!(
        matches!(&failed, Err(Error::StorageFailed { .. })),
        "{failed:?}"
    );
    wait_for_state(&store, &id, StoreState::Running).await;
    // Nothing of the failed write is there, and the stream starts afresh.
    let appended = store
        .append_events(
            &id,
            &stream("a"),
            ExpectedVersion::NoStream,
            vec![event(1, 1, b"{}")],
        )
        .await
        .unwrap();
    assert_eq!((appended.version, appended.position), (0, Position(0)));
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_store_read_only_until_there_is_room_again() {
    let dir = tempfile::tempdir().unwrap();
    let (full, other) = (store_id("full"), store_id("other"));
    let store = Store::open(options(dir.path())).await.unwrap();
    store.create_store(&full, DURABLE).await.unwrap();
    store.create_store(&other, DURABLE).await.unwrap();
    store
        .append_events(
            &full,
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(1, 0, b"{}")],
        )
        .await
        .unwrap();
    store
        .inject_fault(&full, InjectedFault::DiskFullNextWrite)
        .unwrap();
    let refused = store
        .append_events(
            &full,
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(1, 1, b"{}")],
        )
        .await;
    let Err(error) = refused else {
        panic!("an append on a full disk succeeded");
    };
    assert_eq!(error.kind(), "storage_full");
    assert!(error.is_retryable());
    assert!(
        error
            .to_string()
            .starts_with("no space left on the device holding store full (data dir "),
        "{error}"
    );
    // The other store is unaffected.
    store
        .append_events(
            &other,
            &stream("b"),
            ExpectedVersion::Any,
            vec![event(2, 0, b"{}")],
        )
        .await
        .unwrap();
    // The disk has room (the test's margin is small): it heals by itself,
    // and what it acknowledged before is there.
    wait_for_state(&store, &full, StoreState::Running).await;
    store
        .append_events(
            &full,
            &stream("a"),
            ExpectedVersion::Exact(0),
            vec![event(1, 2, b"{}")],
        )
        .await
        .unwrap();
    assert_eq!(check_log(&store, &full).await.len(), 2);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_serves_reads_and_lists_its_state_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let id = store_id("tight");
    let mut options = options(dir.path());
    // More free space than any disk has: the store stays read-only.
    options.heal.free_bytes_min = u64::MAX;
    let store = Store::open(options).await.unwrap();
    store.create_store(&id, DURABLE).await.unwrap();
    store
        .append_events(
            &id,
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(1, 0, b"{}")],
        )
        .await
        .unwrap();
    store
        .inject_fault(&id, InjectedFault::DiskFullNextWrite)
        .unwrap();
    let refused = store
        .append_events(
            &id,
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(1, 1, b"{}")],
        )
        .await;
    assert!(
        matches!(refused, Err(Error::StorageFull { .. })),
        "{refused:?}"
    );
    let status = store.get_store_status(&id).await.unwrap();
    assert_eq!(status.state, StoreState::ReadOnly);
    assert_eq!(status.state.as_str(), "read_only");
    assert!(status.reason.unwrap().contains("no space left"));
    let listed = store.list_stores().await.unwrap();
    assert_eq!(listed[0].state, StoreState::ReadOnly);
    let worker = &store.workers().await.unwrap()[0];
    assert_eq!(worker.faults.len(), 1);
    assert_eq!(worker.faults[0].state, StoreState::ReadOnly);
    let read = store
        .get_events(&id, &stream("a"), 0, 10, Direction::Forward)
        .await
        .unwrap();
    assert_eq!(read.len(), 1, "reads are served");
    // Still no room: a forced reopen says so and the store stays read-only.
    let again = store
        .append_events(
            &id,
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(1, 2, b"{}")],
        )
        .await;
    assert!(matches!(again, Err(Error::StorageFull { .. })), "{again:?}");
    store.shutdown().await;
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_make_one_store_failed_while_the_worker_serves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (damaged, healthy) = (store_id("damaged"), store_id("healthy"));
    // A payload easy to find in the data files.
    let marker = b"{\"marker\":\"QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\"}";
    {
        let store = Store::open(options(dir.path())).await.unwrap();
        store.create_store(&damaged, DURABLE).await.unwrap();
        for n in 0..20 {
            store
                .append_events(
                    &damaged,
                    &stream("a"),
                    ExpectedVersion::Any,
                    vec![event(1, n, marker)],
                )
                .await
                .unwrap();
        }
        // The damaged store's rows move from the journal every store
        // shares into table files of the keyspaces every store shares;
        // the healthy store's, written after, stay in the journal.
        store.compact_store(&damaged).await.unwrap();
        store.create_store(&healthy, DURABLE).await.unwrap();
        for n in 0..20 {
            store
                .append_events(
                    &healthy,
                    &stream("a"),
                    ExpectedVersion::Any,
                    vec![event(1, n, marker)],
                )
                .await
                .unwrap();
        }
        store.shutdown().await;
    }
    // Flip one byte in every table file of the keyspaces: only the
    // damaged store's rows are in tables (its events, compressed); the
    // journal every store shares is left alone, and so is fjall's own
    // keyspace of keyspaces (folder `0`).
    let mut flipped = 0;
    for path in files(&dir.path().join("db").join("keyspaces")) {
        let in_tables = path
            .parent()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == "tables"));
        let keyspace = path.ancestors().nth(2).and_then(Path::file_name);
        if !in_tables || keyspace.is_none_or(|k| k == "0") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 4;
        bytes[at] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        flipped += 1;
    }
    assert!(flipped > 0, "the events are in the store's files");
    let store = Store::open(options(dir.path())).await.unwrap();
    let status = store.get_store_status(&damaged).await.unwrap();
    if status.state == StoreState::Failed {
        let reason = status.reason.unwrap();
        eprintln!("damaged store: failed: {reason}");
        assert!(!reason.is_empty());
        let read = store
            .read_all(&damaged, Position::START, 10, Direction::Forward)
            .await;
        assert!(
            matches!(&read, Err(Error::StorageFailed { .. })),
            "{read:?}"
        );
    } else {
        let report = store.verify_store(&damaged).await.unwrap();
        eprintln!("damaged store: verify found {:?}", report.corrupt);
        assert!(!report.corrupt.is_empty(), "{report:?}");
    }
    let listed = store.list_stores().await.unwrap();
    assert_eq!(listed.len(), 2, "both stores are listed: {listed:?}");
    store
        .append_events(
            &healthy,
            &stream("a"),
            ExpectedVersion::Exact(19),
            vec![event(2, 0, b"{}")],
        )
        .await
        .unwrap();
    let report = store.verify_store(&healthy).await.unwrap();
    assert_eq!((report.records, report.corrupt.len()), (21, 0));
    store.shutdown().await;
}
