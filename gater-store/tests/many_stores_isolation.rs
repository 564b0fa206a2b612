//! Stores of one worker share its keyspaces, each store's rows under its own
//! store number: two stores with the same stream names and event ids never
//! see each other's events, through reads, queries, stream listings,
//! expected versions, append conditions or idempotent retries, and a store
//! removed and created again under the same id starts empty.

use gater_core::{
    Append, AppendCondition, AppendPart, Direction, EventData, EventId, ExpectedVersion, Gater,
    Position, Query, QueryItem, StoreConfig, StoreId, StreamId,
};
use gater_store::{Store, StoreOptions};

/// Stores that flush to the OS only: the test is about keys, not disks.
fn config() -> StoreConfig {
    StoreConfig {
        fsync: false,
        ..StoreConfig::default()
    }
}

fn store(id: &str) -> StoreId {
    StoreId::new(id).unwrap()
}

fn stream() -> StreamId {
    StreamId::new("orders-1").unwrap()
}

/// Event `n`: the same id in every store, its store's name in the data.
fn event(n: u8, owner: &str) -> EventData {
    EventData::json(
        EventId::from_bytes([n; 16]),
        "Placed",
        format!("{{\"owner\":\"{owner}\"}}").into_bytes(),
        Vec::new(),
    )
    .with_tags(vec!["course:1".to_owned()])
}

fn placed() -> Query {
    Query {
        items: vec![QueryItem {
            types: vec!["Placed".to_owned()],
            tags: vec!["course:1".to_owned()],
        }],
    }
}

/// The owners named by `events`' data.
fn owners(events: &[gater_core::RecordedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.data.data).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_with_the_same_streams_and_event_ids_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let gater = Store::open(StoreOptions::new(dir.path())).await.unwrap();
    let (a, b) = (store("a"), store("b"));
    gater.create_store(&a, config()).await.unwrap();
    gater.create_store(&b, config()).await.unwrap();
    let first = vec![event(1, "a"), event(2, "a")];
    let in_a = gater
        .append_events(&a, &stream(), ExpectedVersion::NoStream, first.clone())
        .await
        .unwrap();
    // The same stream from nothing and an id `a` holds: new to `b`.
    let in_b = gater
        .append_events(
            &b,
            &stream(),
            ExpectedVersion::NoStream,
            vec![event(1, "b")],
        )
        .await
        .unwrap();
    assert_eq!((in_a.position, in_b.position), (Position(1), Position(0)));
    // `a`'s second id is new to `b` too: stored, not answered as `a`'s retry.
    let second_in_b = gater
        .append_events(
            &b,
            &stream(),
            ExpectedVersion::Exact(0),
            vec![event(2, "b")],
        )
        .await
        .unwrap();
    assert_eq!(second_in_b.position, Position(1));
    // A retry in `a` is answered from `a`'s own events.
    let retried = gater
        .append_events(&a, &stream(), ExpectedVersion::NoStream, first)
        .await
        .unwrap();
    assert_eq!(retried, in_a);
    // A condition looks at its own store only: `a` has no event after
    // position 1, `b` has none after it either.
    for id in [&a, &b] {
        let outcome = gater
            .append(
                id,
                Append {
                    parts: vec![AppendPart {
                        stream: StreamId::new("other").unwrap(),
                        expected: ExpectedVersion::NoStream,
                        events: vec![event(3, id.as_str())],
                    }],
                    condition: Some(AppendCondition {
                        fail_if_events_match: placed(),
                        after: Some(Position(1)),
                    }),
                },
            )
            .await
            .unwrap();
        assert_eq!(outcome.position, Position(2), "store {id}");
    }
    let a_owner = "{\"owner\":\"a\"}".to_owned();
    let b_owner = "{\"owner\":\"b\"}".to_owned();
    for (id, owner) in [(&a, &a_owner), (&b, &b_owner)] {
        let read = gater
            .get_events(id, &stream(), 0, 10, Direction::Forward)
            .await
            .unwrap();
        assert_eq!(owners(&read), vec![owner.clone(); 2], "stream of {id}");
        let all = gater
            .read_all(id, Position::END, 10, Direction::Backward)
            .await
            .unwrap();
        assert_eq!(owners(&all), vec![owner.clone(); 3], "log of {id}");
        let queried = gater
            .read_query(id, &placed(), Position::START, 10, Direction::Forward)
            .await
            .unwrap();
        assert_eq!(owners(&queried), vec![owner.clone(); 3], "query of {id}");
        let streams = gater.get_streams(id, None, 10).await.unwrap();
        let listed: Vec<(String, u64)> = streams
            .streams
            .iter()
            .map(|s| (s.stream.to_string(), s.version))
            .collect();
        assert_eq!(
            listed,
            [("orders-1".to_owned(), 1), ("other".to_owned(), 0)],
            "streams of {id}"
        );
    }
    gater.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_removed_and_created_again_starts_empty_and_others_keep_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (store("a"), store("b"));
    {
        let gater = Store::open(StoreOptions::new(dir.path())).await.unwrap();
        gater.create_store(&a, config()).await.unwrap();
        gater.create_store(&b, config()).await.unwrap();
        let empty_bytes = gater.get_store_status(&a).await.unwrap().disk_bytes;
        for id in [&a, &b] {
            gater
                .append_events(
                    id,
                    &stream(),
                    ExpectedVersion::NoStream,
                    vec![event(1, id.as_str())],
                )
                .await
                .unwrap();
        }
        let full_bytes = gater.get_store_status(&a).await.unwrap().disk_bytes;
        assert!(full_bytes > empty_bytes, "{full_bytes} > {empty_bytes}");
        gater.remove_store(&a).await.unwrap();
        gater.create_store(&a, config()).await.unwrap();
        let status = gater.get_store_status(&a).await.unwrap();
        assert_eq!((status.event_count, status.disk_bytes), (0, empty_bytes));
        gater.shutdown().await;
    }
    let gater = Store::open(StoreOptions::new(dir.path())).await.unwrap();
    let read = gater
        .read_all(&a, Position::START, 10, Direction::Forward)
        .await
        .unwrap();
    assert!(read.is_empty(), "{read:?}");
    assert_eq!(gater.get_version(&a, &stream()).await.unwrap(), None);
    assert!(gater
        .get_streams(&a, None, 10)
        .await
        .unwrap()
        .streams
        .is_empty());
    // The old store's id is new again, at the first position.
    let again = gater
        .append_events(
            &a,
            &stream(),
            ExpectedVersion::NoStream,
            vec![event(1, "a")],
        )
        .await
        .unwrap();
    assert_eq!(again.position, Position(0));
    let other = gater
        .read_all(&b, Position::START, 10, Direction::Forward)
        .await
        .unwrap();
    assert_eq!(owners(&other), vec!["{\"owner\":\"b\"}".to_owned()]);
    gater.shutdown().await;
}
