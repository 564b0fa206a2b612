//! Stream lifecycle in the embedded store beyond the conformance suite:
//! retention by age against an injected clock (no sleeping), the store's
//! default retention, and the same hiding after a restart.

use std::time::Duration;

use gater_core::{
    Direction, EventData, EventId, ExpectedVersion, Gater, Position, Retention, StoreConfig,
    StoreId, StreamId,
};
use gater_store::{Clock, Store, StoreOptions};

fn events(from: u8, count: u8) -> Vec<EventData> {
    (from..from + count)
        .map(|n| {
            let mut bytes = [0u8; 16];
            bytes[0] = n;
            bytes[15] = 0xA5;
            EventData::json(
                EventId::from_random_bytes(bytes),
                "Aged",
                b"{}".to_vec(),
                Vec::new(),
            )
        })
        .collect()
}

async fn versions(store: &Store, id: &StoreId, stream: &StreamId) -> Vec<u64> {
    let read = store
        .get_events(id, stream, 0, 100, Direction::Forward)
        .await
        .unwrap();
    read.iter().map(|e| e.version).collect()
}

async fn log(store: &Store, id: &StoreId) -> Vec<u64> {
    let read = store
        .read_all(id, Position::START, 100, Direction::Forward)
        .await
        .unwrap();
    read.iter().map(|e| e.position.0).collect()
}

const FAST: StoreConfig = StoreConfig {
    fsync: false,
    group_commit: true,
    retention: Retention::NONE,
};

#[tokio::test]
async fn events_older_than_max_age_disappear_as_the_clock_moves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::default();
    let mut options = StoreOptions::new(dir.path());
    options.clock = clock.clone();
    // This checks the view's rule alone: the age check, on the same clock,
    // would start a compaction once the events aged out, and events a
    // compaction removed never show again, whatever the retention says
    // later (`events_aging_out_past_the_configured_share_start_a_compaction_by_themselves`).
    options.compact_age_check_interval_ms = 0;
    let store = Store::open(options).await.unwrap();
    let id = StoreId::new("aged").unwrap();
    store.create_store(&id, FAST).await.unwrap();
    let s = StreamId::new("s").unwrap();
    store
        .append_events(&id, &s, ExpectedVersion::NoStream, events(0, 3))
        .await
        .unwrap();
    store
        .set_stream_retention(&id, &s, None, Some(60))
        .await
        .unwrap();
    assert_eq!(versions(&store, &id, &s).await, vec![0, 1, 2]);
    clock.advance(Duration::from_secs(61));
    assert_eq!(versions(&store, &id, &s).await, Vec::<u64>::new());
    assert_eq!(log(&store, &id).await, Vec::<u64>::new());
    assert_eq!(store.get_version(&id, &s).await.unwrap(), Some(2));
    clock.advance(Duration::from_secs(3_600));
    store
        .set_stream_retention(&id, &s, None, Some(7_200))
        .await
        .unwrap();
    assert_eq!(
        versions(&store, &id, &s).await,
        vec![0, 1, 2],
        "a longer age shows them again"
    );
    store.shutdown().await;
}

#[tokio::test]
async fn the_store_default_retention_applies_to_streams_without_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
    let id = StoreId::new("defaults").unwrap();
    let config = StoreConfig {
        retention: Retention {
            max_count: Some(2),
            max_age_s: None,
        },
        ..FAST
    };
    store.create_store(&id, config).await.unwrap();
    let (a, b) = (StreamId::new("a").unwrap(), StreamId::new("b").unwrap());
    for (s, from) in [(&a, 0), (&b, 10)] {
        store
            .append_events(&id, s, ExpectedVersion::Any, events(from, 4))
            .await
            .unwrap_or_else(|e| panic!("append to {s}: {e}"));
    }
    assert_eq!(versions(&store, &id, &a).await, vec![2, 3]);
    store
        .set_stream_retention(&id, &b, Some(3), None)
        .await
        .unwrap();
    assert_eq!(versions(&store, &id, &b).await, vec![1, 2, 3]);
    assert_eq!(store.get_store_config(&id).await.unwrap(), config);
    store.shutdown().await;
}

#[tokio::test]
async fn deletes_and_truncations_hold_after_a_restart_and_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let id = StoreId::new("restarted").unwrap();
    let (gone, cut) = (
        StreamId::new("gone").unwrap(),
        StreamId::new("cut").unwrap(),
    );
    {
        let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
        store.create_store(&id, FAST).await.unwrap();
        store
            .append_events(&id, &gone, ExpectedVersion::NoStream, events(0, 3))
            .await
            .unwrap();
        store
            .append_events(&id, &cut, ExpectedVersion::NoStream, events(3, 3))
            .await
            .unwrap();
        store
            .delete_stream(&id, &gone, ExpectedVersion::Exact(2))
            .await
            .unwrap();
        store.truncate_stream(&id, &cut, 1).await.unwrap();
        store.compact_store(&id).await.unwrap();
        store.shutdown().await;
    }
    let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
    assert_eq!(store.get_version(&id, &gone).await.unwrap(), None);
    assert_eq!(versions(&store, &id, &cut).await, vec![1, 2]);
    assert_eq!(log(&store, &id).await, vec![4, 5]);
    let recreated = store
        .append_events(&id, &gone, ExpectedVersion::NoStream, events(6, 1))
        .await
        .unwrap();
    assert_eq!(
        recreated.version, 3,
        "numbering survives compaction and restart"
    );
    store.shutdown().await;
}

#[tokio::test]
async fn hiding_past_the_configured_share_starts_a_compaction_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.compact_hidden_share_percent = 40;
    let store = Store::open(options).await.unwrap();
    let id = StoreId::new("auto").unwrap();
    store.create_store(&id, FAST).await.unwrap();
    let (gone, kept) = (
        StreamId::new("gone").unwrap(),
        StreamId::new("kept").unwrap(),
    );
    store
        .append_events(&id, &gone, ExpectedVersion::NoStream, events(0, 6))
        .await
        .unwrap();
    store
        .append_events(&id, &kept, ExpectedVersion::NoStream, events(10, 4))
        .await
        .unwrap();
    store
        .delete_stream(&id, &gone, ExpectedVersion::Any)
        .await
        .unwrap();
    // The delete hid 6 of 10 events (over 40 %): a compaction started in
    // the background, and this one waits for it and finds nothing left.
    let after = store.compact_store(&id).await.unwrap();
    assert_eq!(after.events_removed, 0);
    assert_eq!(log(&store, &id).await, vec![6, 7, 8, 9]);
    store.shutdown().await;
}

#[tokio::test]
async fn hiding_under_the_configured_share_leaves_compaction_to_be_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.compact_hidden_share_percent = 90;
    let store = Store::open(options).await.unwrap();
    let id = StoreId::new("manual").unwrap();
    store.create_store(&id, FAST).await.unwrap();
    let s = StreamId::new("s").unwrap();
    store
        .append_events(&id, &s, ExpectedVersion::NoStream, events(0, 10))
        .await
        .unwrap();
    store.truncate_stream(&id, &s, 3).await.unwrap();
    let compaction = store.compact_store(&id).await.unwrap();
    assert_eq!(compaction.events_removed, 3);
    store.shutdown().await;
}

/// Most age checks a test waits through for a background compaction.
const AGE_CHECKS_MAX: u32 = 500;

#[tokio::test]
async fn events_aging_out_past_the_configured_share_start_a_compaction_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::default();
    let mut options = StoreOptions::new(dir.path());
    options.clock = clock.clone();
    options.compact_hidden_share_percent = 40;
    options.compact_age_check_interval_ms = 10;
    let store = Store::open(options).await.unwrap();
    let id = StoreId::new("aging").unwrap();
    store.create_store(&id, FAST).await.unwrap();
    let (aged, kept) = (
        StreamId::new("aged").unwrap(),
        StreamId::new("kept").unwrap(),
    );
    store
        .append_events(&id, &aged, ExpectedVersion::NoStream, events(0, 8))
        .await
        .unwrap();
    store
        .set_stream_retention(&id, &aged, None, Some(3_600))
        .await
        .unwrap();
    store
        .append_events(&id, &kept, ExpectedVersion::NoStream, events(10, 2))
        .await
        .unwrap();
    // Nothing changes a count: only time hides the events, and only the
    // background check of what age hid starts the compaction.
    clock.advance(Duration::from_secs(7_200));
    assert_eq!(versions(&store, &id, &aged).await, Vec::<u64>::new());
    let mut records = store.verify_store(&id).await.unwrap().records;
    for _ in 0..AGE_CHECKS_MAX {
        if records < 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        records = store.verify_store(&id).await.unwrap().records;
    }
    // The stream's last event stays (numbering); the other seven went.
    assert_eq!(records, 3, "the aged events were compacted away");
    assert_eq!(log(&store, &id).await, vec![8, 9]);
    store.shutdown().await;
}

#[tokio::test]
async fn store_status_counts_what_readers_see() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::default();
    let mut options = StoreOptions::new(dir.path());
    options.clock = clock.clone();
    options.compact_hidden_share_percent = 0;
    let store = Store::open(options).await.unwrap();
    let id = StoreId::new("counted").unwrap();
    store.create_store(&id, FAST).await.unwrap();
    let [gone, cut, aged, kept] =
        ["gone", "cut", "aged", "kept"].map(|s| StreamId::new(s).unwrap());
    for (stream, from) in [(&gone, 0), (&cut, 10), (&aged, 20), (&kept, 30)] {
        store
            .append_events(&id, stream, ExpectedVersion::NoStream, events(from, 5))
            .await
            .unwrap();
    }
    let counts = |store: Store| {
        let id = id.clone();
        async move {
            let status = store.get_store_status(&id).await.unwrap();
            (status.event_count, status.stream_count)
        }
    };
    assert_eq!(counts(store.clone()).await, (20, 4));
    store
        .delete_stream(&id, &gone, ExpectedVersion::Any)
        .await
        .unwrap();
    store.truncate_stream(&id, &cut, 2).await.unwrap();
    store
        .set_stream_retention(&id, &aged, None, Some(60))
        .await
        .unwrap();
    assert_eq!(
        counts(store.clone()).await,
        (13, 3),
        "delete and truncation"
    );
    clock.advance(Duration::from_secs(120));
    assert_eq!(counts(store.clone()).await, (8, 3), "age too");
    store.compact_store(&id).await.unwrap();
    assert_eq!(
        counts(store.clone()).await,
        (8, 3),
        "compaction changes nothing readers see"
    );
    store
        .append_events(&id, &gone, ExpectedVersion::NoStream, events(40, 1))
        .await
        .unwrap();
    assert_eq!(counts(store.clone()).await, (9, 4), "recreated");
    store.shutdown().await;
}

/// Events of the store compaction is measured on.
const MILLION: u64 = 1_000_000;
/// Events per append while filling it.
const FILL_APPEND_EVENTS: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_a_million_event_store_with_ninety_percent_hidden_reclaims_most_of_its_space() {
    let case =
        "compacting_a_million_event_store_with_ninety_percent_hidden_reclaims_most_of_its_space";
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        eprintln!("{case}: skipped, slow test (set RUN_SLOW_TESTS=1 to run it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.compact_hidden_share_percent = 0;
    let store = Store::open(options).await.unwrap();
    let id = StoreId::new("million").unwrap();
    store.create_store(&id, FAST).await.unwrap();
    let (old, kept) = (
        StreamId::new("old").unwrap(),
        StreamId::new("kept").unwrap(),
    );
    let batch = |n: u64| -> Vec<EventData> {
        (0..FILL_APPEND_EVENTS)
            .map(|i| {
                let id = nth_event_id(n * FILL_APPEND_EVENTS + i);
                EventData::json(
                    id,
                    "Filled",
                    format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(64)).into_bytes(),
                    Vec::new(),
                )
            })
            .collect()
    };
    let appends = MILLION / FILL_APPEND_EVENTS;
    for n in 0..appends {
        // Nine appends in ten go to the stream that is deleted, spread over the log.
        let stream = if n % 10 == 9 { &kept } else { &old };
        store
            .append_events(&id, stream, ExpectedVersion::Any, batch(n))
            .await
            .unwrap();
    }
    store
        .delete_stream(&id, &old, ExpectedVersion::Any)
        .await
        .unwrap();
    let compaction = store.compact_store(&id).await.unwrap();
    eprintln!(
        "{case}: removed {} events, {} bytes before, {} bytes after",
        compaction.events_removed, compaction.bytes_before, compaction.bytes_after
    );
    // A soft delete's truncation point keeps the numbering: every event goes.
    assert_eq!(compaction.events_removed, MILLION * 9 / 10);
    // What stays: the kept tenth, and every event's id entry (retries).
    assert!(
        compaction.bytes_after * 100 <= compaction.bytes_before * 35,
        "at most a third left: {} of {} bytes",
        compaction.bytes_after,
        compaction.bytes_before
    );
    let status = store.get_store_status(&id).await.unwrap();
    assert_eq!(status.event_count, MILLION / 10);
    store.shutdown().await;
}

/// A distinct id for event `n`.
fn nth_event_id(n: u64) -> EventId {
    // Bytes 6 and 8 carry the UUID's version and variant: n stays clear of them.
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&n.to_be_bytes()[2..]);
    bytes[15] = 0x5A;
    EventId::from_random_bytes(bytes)
}
