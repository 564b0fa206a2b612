//! Stores, events, counters and snapshots survive dropping a `Store` and
//! opening its data directory again.

use gater_core::{
    Direction, EventData, EventId, ExpectedVersion, Gater, Position, SnapshotKey, StoreConfig,
    StoreId, StreamId,
};
use gater_store::{Store, StoreOptions};

fn event(n: u8) -> EventData {
    EventData::json(
        EventId::from_random_bytes([n; 16]),
        "Reopened",
        format!("{{\"n\":{n}}}").into_bytes(),
        Vec::new(),
    )
}

fn ids(events: &[gater_core::RecordedEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.data.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_and_events_survive_drop_and_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (a, b) = (
        StoreId::new("alpha").unwrap(),
        StoreId::new("beta").unwrap(),
    );
    let (s1, s2) = (StreamId::new("s-1").unwrap(), StreamId::new("s-2").unwrap());
    let fast = StoreConfig {
        fsync: false,
        group_commit: true,
        retention: gater_core::Retention::NONE,
    };
    let snapshot = SnapshotKey {
        source: "agg".into(),
        stream: "s-1".into(),
        version: 2,
    };
    let before = {
        let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
        store
            .create_store(&a, StoreConfig::default())
            .await
            .unwrap();
        store.create_store(&b, fast).await.unwrap();
        let any = ExpectedVersion::Any;
        store
            .append_events(&a, &s1, any, vec![event(1), event(2), event(3)])
            .await
            .unwrap();
        store
            .append_events(&a, &s2, any, vec![event(4), event(5)])
            .await
            .unwrap();
        store
            .record_snapshot(&b, snapshot.clone(), b"state".to_vec())
            .await
            .unwrap();
        let before = store
            .read_all(&a, Position::START, 100, Direction::Forward)
            .await
            .unwrap();
        drop(store);
        before
    };

    let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
    let listed: Vec<_> = store
        .list_stores()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.store, i.config))
        .collect();
    assert_eq!(
        listed,
        vec![(a.clone(), StoreConfig::default()), (b.clone(), fast)]
    );
    let after = store
        .read_all(&a, Position::START, 100, Direction::Forward)
        .await
        .unwrap();
    assert_eq!(after, before);
    let status = store.get_store_status(&a).await.unwrap();
    assert_eq!(
        (status.stream_count, status.event_count, status.head),
        (2, 5, Some(Position(4)))
    );
    let read = store.read_snapshot(&b, "agg", "s-1", None).await.unwrap();
    assert_eq!((read.key, read.data), (snapshot, b"state".to_vec()));

    let next = store
        .append_events(&a, &s1, ExpectedVersion::Exact(2), vec![event(6)])
        .await
        .unwrap();
    assert_eq!((next.version, next.position), (3, Position(5)));
    let retried = store
        .append_events(&a, &s2, ExpectedVersion::NoStream, vec![event(4), event(5)])
        .await
        .unwrap();
    assert_eq!(
        (retried.version, retried.position),
        (1, Position(4)),
        "idempotency survives a restart"
    );
    let s1_events = store
        .get_events(&a, &s1, 0, 10, Direction::Forward)
        .await
        .unwrap();
    assert_eq!(
        ids(&s1_events),
        vec![event(1).id, event(2).id, event(3).id, event(6).id]
    );
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_store_stays_removed_after_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (kept, removed) = (
        StoreId::new("kept").unwrap(),
        StoreId::new("removed").unwrap(),
    );
    {
        let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
        for id in [&kept, &removed] {
            store
                .create_store(id, StoreConfig::default())
                .await
                .unwrap();
            let s = StreamId::new("s").unwrap();
            store
                .append_events(id, &s, ExpectedVersion::Any, vec![event(9)])
                .await
                .unwrap();
        }
        store.remove_store(&removed).await.unwrap();
        store.shutdown().await;
    }
    let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
    let listed: Vec<_> = store
        .list_stores()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.store)
        .collect();
    assert_eq!(listed, vec![kept.clone()]);
    assert_eq!(store.get_store_status(&kept).await.unwrap().event_count, 1);
    assert!(!dir.path().join("stores").join("removed").exists());
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_store_creation_is_cleaned_up_on_open() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // A directory without its config file is what a crash during creation leaves.
    let half = dir.path().join("stores").join("half");
    std::fs::create_dir_all(half.join("junk")).unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
    assert!(store.list_stores().await.unwrap().is_empty());
    assert!(!half.exists());
    let id = StoreId::new("half").unwrap();
    store
        .create_store(&id, StoreConfig::default())
        .await
        .unwrap();
    assert_eq!(store.get_store_status(&id).await.unwrap().event_count, 0);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_stored_before_a_reopen_are_recognised_as_retries_and_duplicates() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let id = StoreId::new("ids").unwrap();
    let (s1, s2) = (StreamId::new("s-1").unwrap(), StreamId::new("s-2").unwrap());
    let original = {
        let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
        store
            .create_store(&id, StoreConfig::default())
            .await
            .unwrap();
        let original = store
            .append_events(&id, &s1, ExpectedVersion::Any, vec![event(1), event(2)])
            .await
            .unwrap();
        store.shutdown().await;
        original
    };
    let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
    // A new append first, so the writer's first batch after the reopen is not the retry.
    store
        .append_events(&id, &s2, ExpectedVersion::NoStream, vec![event(3)])
        .await
        .unwrap();
    let retried = store
        .append_events(
            &id,
            &s1,
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )
        .await
        .unwrap();
    assert_eq!(retried, original, "a retry answers the original result");
    let elsewhere = store
        .append_events(&id, &s2, ExpectedVersion::Any, vec![event(2)])
        .await
        .unwrap_err();
    assert_eq!(elsewhere.kind(), "duplicate_event_id", "{elsewhere}");
    let events = store
        .read_all(&id, Position::START, 100, Direction::Forward)
        .await
        .unwrap();
    assert_eq!(ids(&events), vec![event(1).id, event(2).id, event(3).id]);
    store.shutdown().await;
}
