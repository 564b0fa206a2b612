//! The PostgreSQL backend against a throwaway server started from the
//! machine's binaries: the conformance suite, two workers over one database
//! (concurrent appenders, subscription failover), and faults (database down
//! at start and mid-run, password redaction).
//!
//! Every case prints that it was skipped and returns when PostgreSQL is not
//! installed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gater_core::{
    Direction, Error, EventData, ExpectedVersion, Gater, Position, Resource, Side, StoreConfig,
    StoreId, StreamId, SubscribeOptions, Subscription, SubscriptionItem, SubscriptionKey,
    SubscriptionSpec, SubscriptionType,
};
use gater_store::conformance;
use gater_store::{PostgresOptions, Store, StoreOptions};
use gater_testkit::pg_harness::{PgServer, Session, PASSWORD};

/// A fresh server, or `None` (with a message) when PostgreSQL is not installed.
fn server(case: &str) -> Option<PgServer> {
    match PgServer::start() {
        Ok(Some(server)) => Some(server),
        Ok(None) => {
            eprintln!("{case}: skipped, no PostgreSQL binaries (initdb, pg_ctl) on this machine");
            None
        }
        Err(error) => panic!("{case}: the throwaway PostgreSQL server did not start: {error}"),
    }
}

/// A worker `Store` named `id` over `url`.
async fn worker(id: &str, url: &str) -> Store {
    let mut options = StoreOptions::new(std::env::temp_dir());
    options.worker_id = id.to_owned();
    Store::open_postgres(options, PostgresOptions::new(url))
        .await
        .expect("open a PostgreSQL worker")
}

fn slow_tests_enabled(case: &str) -> bool {
    if std::env::var_os("RUN_SLOW_TESTS").is_some() {
        return true;
    }
    eprintln!("{case}: skipped, slow test (set RUN_SLOW_TESTS=1 to run it)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    let case = "postgres_store_passes_the_conformance_suite";
    if !slow_tests_enabled(case) {
        return;
    }
    let Some(server) = server(case) else {
        return;
    };
    let store = worker("pg-worker", &server.url()).await;
    conformance::run_all(&store).await;
    store.shutdown().await;
}

/// A head poll interval longer than any test.
const NO_POLL_MS: u64 = 3_600_000;

/// Longest wait for something that must happen.
const PATIENCE: Duration = Duration::from_secs(20);

fn store_id(id: &str) -> StoreId {
    StoreId::new(id).expect("valid store id")
}

fn stream_id(id: &str) -> StreamId {
    StreamId::new(id).expect("valid stream id")
}

fn events(count: usize) -> Vec<EventData> {
    (0..count)
        .map(|n| {
            EventData::json(
                conformance::support::random_event_id(),
                "Tested",
                format!("{{\"n\":{n}}}").into_bytes(),
                b"{}".to_vec(),
            )
        })
        .collect()
}

const CONFIG: StoreConfig = StoreConfig {
    fsync: true,
    group_commit: true,
    retention: gater_core::Retention::NONE,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_have_one_winner_per_expected_version_and_gapless_positions() {
    let case = "two_workers_have_one_winner_per_expected_version_and_gapless_positions";
    let Some(server) = server(case) else {
        return;
    };
    let a = Arc::new(worker("worker-a", &server.url()).await);
    let b = Arc::new(worker("worker-b", &server.url()).await);
    let store = store_id("contended");
    a.create_store(&store, CONFIG).await.expect("create store");
    let stream = stream_id("account-1");
    const ROUNDS: u64 = 12;
    const CONTENDERS_PER_WORKER: usize = 3;
    for round in 0..ROUNDS {
        let expected = match round {
            0 => ExpectedVersion::NoStream,
            r => ExpectedVersion::Exact(2 * r - 1),
        };
        let mut attempts = Vec::new();
        for worker in [&a, &b] {
            for _ in 0..CONTENDERS_PER_WORKER {
                let (worker, store, stream) = (Arc::clone(worker), store.clone(), stream.clone());
                attempts.push(tokio::spawn(async move {
                    worker
                        .append_events(&store, &stream, expected, events(2))
                        .await
                }));
            }
        }
        let mut winners = 0;
        for attempt in attempts {
            match attempt.await.expect("append task") {
                Ok(result) => {
                    winners += 1;
                    assert_eq!(result.version, round * 2 + 1, "round {round}");
                }
                Err(Error::WrongExpectedVersion { current, .. }) => {
                    assert_eq!(current, Some(round * 2 + 1), "round {round}: loser's view");
                }
                Err(other) => panic!("round {round}: unexpected error {other:?}"),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one winner");
    }
    let log = b
        .read_all(&store, Position::START, 1000, Direction::Forward)
        .await
        .expect("read the log");
    let positions: Vec<u64> = log.iter().map(|e| e.position.0).collect();
    assert_eq!(
        positions,
        (0..ROUNDS * 2).collect::<Vec<_>>(),
        "gapless log"
    );
    let versions: Vec<u64> = log.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (0..ROUNDS * 2).collect::<Vec<_>>(),
        "one stream, in order"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_any_appends_through_two_workers_get_gapless_positions() {
    let case = "concurrent_any_appends_through_two_workers_get_gapless_positions";
    let Some(server) = server(case) else {
        return;
    };
    let a = Arc::new(worker("worker-a", &server.url()).await);
    let b = Arc::new(worker("worker-b", &server.url()).await);
    let store = store_id("busy");
    a.create_store(&store, CONFIG).await.expect("create store");
    const TASKS: usize = 8;
    const APPENDS: usize = 10;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let worker = if task % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..APPENDS {
                let stream = stream_id(&format!("stream-{}", (task + n) % 3));
                let result = worker
                    .append_events(&store, &stream, ExpectedVersion::Any, events(3))
                    .await
                    .expect("append");
                acknowledged.push((stream, result));
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("append task"));
    }
    let total = (TASKS * APPENDS * 3) as u64;
    let log = a
        .read_all(&store, Position::START, 10_000, Direction::Forward)
        .await
        .expect("read the log");
    let positions: Vec<u64> = log.iter().map(|e| e.position.0).collect();
    assert_eq!(
        positions,
        (0..total).collect::<Vec<_>>(),
        "gapless, in commit order"
    );
    for (stream, result) in &acknowledged {
        let event = &log[result.position.0 as usize];
        assert_eq!(
            &event.stream, stream,
            "acknowledged position holds the append"
        );
        assert_eq!(event.version, result.version, "acknowledged version");
    }
    for s in 0..3 {
        let stream = stream_id(&format!("stream-{s}"));
        let read = b
            .get_events(&store, &stream, 0, 10_000, Direction::Forward)
            .await
            .expect("read a stream");
        let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (0..read.len() as u64).collect::<Vec<_>>(),
            "{stream}"
        );
    }
    let status = b.get_store_status(&store).await.expect("status");
    assert_eq!((status.event_count, status.stream_count), (total, 3));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_remembers_stale_versions_answers_from_the_database() {
    let case = "a_worker_that_remembers_stale_versions_answers_from_the_database";
    let Some(server) = server(case) else {
        return;
    };
    let a = worker("worker-a", &server.url()).await;
    let b = worker("worker-b", &server.url()).await;
    let store = store_id("remembered");
    a.create_store(&store, CONFIG).await.expect("create store");
    let (s, t) = (stream_id("s"), stream_id("t"));
    let append = |worker: &Store, stream: &StreamId, expected, events| {
        let (worker, store, stream) = (worker.clone(), store.clone(), stream.clone());
        async move {
            worker
                .append_events(&store, &stream, expected, events)
                .await
                .expect("append")
        }
    };
    let first = append(&a, &s, ExpectedVersion::NoStream, events(2)).await;
    assert_eq!((first.version, first.position.0), (1, 1));
    // Worker a now knows every stream: this one is staged from memory.
    let second = append(&a, &s, ExpectedVersion::Exact(1), events(2)).await;
    assert_eq!((second.version, second.position.0), (3, 3));
    let other = append(&b, &s, ExpectedVersion::Exact(3), events(2)).await;
    assert_eq!((other.version, other.position.0), (5, 5));
    // What a remembers is stale: the database decides.
    let resent = events(2);
    let third = append(&a, &s, ExpectedVersion::Any, resent.clone()).await;
    assert_eq!((third.version, third.position.0), (7, 7));
    // A re-send gets its original answer, though memory would stage it anew.
    let again = append(&a, &s, ExpectedVersion::Any, resent).await;
    assert_eq!(again, third, "idempotent re-send");
    // A stream another worker created is not new to a.
    let created = append(&b, &t, ExpectedVersion::NoStream, events(1)).await;
    assert_eq!((created.version, created.position.0), (0, 8));
    let onto = append(&a, &t, ExpectedVersion::Any, events(1)).await;
    assert_eq!((onto.version, onto.position.0), (1, 9));
    let refused = a
        .append_events(&store, &t, ExpectedVersion::NoStream, events(1))
        .await
        .expect_err("t exists");
    assert!(
        matches!(
            refused,
            Error::WrongExpectedVersion {
                current: Some(1),
                ..
            }
        ),
        "{refused:?}"
    );
    let log = b
        .read_all(&store, Position::START, 100, Direction::Forward)
        .await
        .expect("read the log");
    let rows: Vec<(String, u64, u64)> = log
        .iter()
        .map(|e| (e.stream.to_string(), e.version, e.position.0))
        .collect();
    let mut expected: Vec<(String, u64, u64)> = (0..8).map(|n| ("s".to_owned(), n, n)).collect();
    expected.extend([("t".to_owned(), 0, 8), ("t".to_owned(), 1, 9)]);
    assert_eq!(rows, expected, "gapless log, versions in order");
    let status = a.get_store_status(&store).await.expect("status");
    assert_eq!((status.event_count, status.stream_count), (10, 2));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_between_staging_from_memory_and_commit_refuses_the_append() {
    let case = "a_tombstone_between_staging_from_memory_and_commit_refuses_the_append";
    let Some(server) = server(case) else {
        return;
    };
    let a = worker("worker-a", &server.url()).await;
    let b = worker("worker-b", &server.url()).await;
    let store = store_id("tombstoned");
    a.create_store(&store, CONFIG).await.expect("create store");
    let s = stream_id("s");
    a.append_events(&store, &s, ExpectedVersion::NoStream, events(2))
        .await
        .expect("append");
    // Staged from a's memory and committed in one round trip.
    a.append_events(&store, &s, ExpectedVersion::Exact(1), events(1))
        .await
        .expect("append from memory");
    // The tombstone moves no position and no stream count: a still
    // remembers the head as current, and only the lifecycle generation
    // tells its next append, staged from memory, that it is stale.
    b.tombstone_stream(&store, &s, ExpectedVersion::Exact(2))
        .await
        .expect("tombstone");
    let refused = a
        .append_events(&store, &s, ExpectedVersion::Any, events(1))
        .await
        .expect_err("the stream is tombstoned");
    assert_eq!(refused, Error::StreamDeleted { stream: s.clone() });
    let status = b.get_store_status(&store).await.expect("status");
    assert_eq!(status.head, Some(Position(2)), "nothing written");
    let version = a.get_version(&store, &s).await.expect_err("tombstoned");
    assert_eq!(version.kind(), "stream_deleted");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stores_default_retention_is_kept_in_the_catalog_for_every_worker() {
    let case = "a_stores_default_retention_is_kept_in_the_catalog_for_every_worker";
    let Some(server) = server(case) else {
        return;
    };
    let a = worker("worker-a", &server.url()).await;
    let b = worker("worker-b", &server.url()).await;
    let store = store_id("retained");
    let config = StoreConfig {
        retention: gater_core::Retention {
            max_count: Some(2),
            max_age_s: None,
        },
        ..CONFIG
    };
    a.create_store(&store, config).await.expect("create store");
    let s = stream_id("s");
    a.append_events(&store, &s, ExpectedVersion::NoStream, events(5))
        .await
        .expect("append");
    assert_eq!(b.get_store_config(&store).await.expect("config"), config);
    let read = b
        .get_events(&store, &s, 0, 10, Direction::Forward)
        .await
        .expect("read");
    let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![3, 4], "the newest two");
    let other = b
        .create_store(&store, CONFIG)
        .await
        .expect_err("another config");
    assert_eq!(other.kind(), "store_config_conflict");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_changes_through_one_postgres_worker_show_through_the_other_at_once() {
    let case = "lifecycle_changes_through_one_postgres_worker_show_through_the_other_at_once";
    let Some(server) = server(case) else {
        return;
    };
    let a = worker("worker-a", &server.url()).await;
    let b = worker("worker-b", &server.url()).await;
    let both =
        conformance::support::RoundRobin::new(Arc::new(a.clone()), vec![Arc::new(b.clone())]);
    conformance::lifecycle::run(&both).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_created_again_with_the_same_head_is_never_written_from_the_old_ones_versions() {
    let case =
        "a_store_created_again_with_the_same_head_is_never_written_from_the_old_ones_versions";
    let Some(server) = server(case) else {
        return;
    };
    // Worker a does not poll in this test's lifetime: it learns of the
    // removal only from its own appends.
    let mut options = StoreOptions::new(std::env::temp_dir());
    options.worker_id = "worker-a".to_owned();
    let mut postgres = PostgresOptions::new(server.url());
    postgres.head_poll_interval_ms = NO_POLL_MS;
    let a = Store::open_postgres(options, postgres)
        .await
        .expect("open a PostgreSQL worker");
    let b = worker("worker-b", &server.url()).await;
    let store = store_id("again");
    let (s, x) = (stream_id("s"), stream_id("x"));
    a.create_store(&store, CONFIG).await.expect("create store");
    a.append_events(&store, &s, ExpectedVersion::Any, events(2))
        .await
        .expect("append to the first store");
    b.remove_store(&store).await.expect("remove the store");
    b.create_store(&store, CONFIG)
        .await
        .expect("create it again");
    // The same next position and stream count as a last saw.
    b.append_events(&store, &x, ExpectedVersion::Any, events(2))
        .await
        .expect("append to the second store");
    match a
        .append_events(&store, &s, ExpectedVersion::Any, events(1))
        .await
    {
        Ok(result) => assert_eq!(
            (result.version, result.position.0),
            (0, 2),
            "s is new in the second store"
        ),
        // Or a refuses, retryably, until it opens the store again.
        Err(error) => assert_eq!(error.kind(), "unavailable", "{error:?}"),
    }
    let versions: Vec<(String, u64)> = b
        .read_all(&store, Position::START, 100, Direction::Forward)
        .await
        .expect("read the log")
        .iter()
        .map(|e| (e.stream.to_string(), e.version))
        .collect();
    assert!(
        versions == [("x".to_owned(), 0), ("x".to_owned(), 1)]
            || versions
                == [
                    ("x".to_owned(), 0),
                    ("x".to_owned(), 1),
                    ("s".to_owned(), 0)
                ],
        "{versions:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

async fn next_event(sub: &mut Subscription) -> Option<u64> {
    loop {
        let item = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("a subscription item in time")?;
        match item {
            SubscriptionItem::Event(delivery) => return Some(delivery.event.position.0),
            SubscriptionItem::CaughtUp => continue,
            SubscriptionItem::End(_) => return None,
        }
    }
}

async fn checkpoint_on(worker: &Store, store: &StoreId, key: &SubscriptionKey) -> Position {
    worker
        .get_subscriptions(store)
        .await
        .expect("list subscriptions")
        .into_iter()
        .find(|info| &info.spec.key == key)
        .expect("the subscription is listed")
        .checkpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_subscription_resumes_on_another_worker_from_its_checkpoint() {
    let case = "persistent_subscription_resumes_on_another_worker_from_its_checkpoint";
    let Some(server) = server(case) else {
        return;
    };
    let a = worker("worker-a", &server.url()).await;
    let b = worker("worker-b", &server.url()).await;
    let store = store_id("billing");
    a.create_store(&store, CONFIG).await.expect("create store");
    let stream = stream_id("invoice-1");
    b.append_events(&store, &stream, ExpectedVersion::Any, events(10))
        .await
        .expect("append through b");
    let key =
        SubscriptionKey::new(SubscriptionType::ByStream, "$all", "billing").expect("valid key");
    a.save_subscription(&store, SubscriptionSpec::new(key.clone()))
        .await
        .expect("save on a");

    // Consumed on worker a: 0..5 acked, 5..8 delivered and never acked.
    let options = SubscribeOptions {
        window: 8,
        start_from: None,
    };
    let mut on_a = a
        .subscribe(&store, key.clone(), options.clone())
        .await
        .expect("subscribe on a");
    for expected in 0..8 {
        let position = next_event(&mut on_a).await.expect("delivery on a");
        assert_eq!(position, expected, "in order on a");
        if position < 5 {
            a.ack_event(&store, &key, on_a.consumer(), Position(position))
                .await
                .expect("ack on a");
        }
    }
    // The checkpoint reaches the database asynchronously; worker b reads it there.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while checkpoint_on(&b, &store, &key).await < Position(5) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "checkpoint 5 never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await;
    drop(on_a);

    // More events arrive through b while nobody consumes.
    b.append_events(&store, &stream, ExpectedVersion::Any, events(5))
        .await
        .expect("append through b after the failover");
    let mut on_b = b
        .subscribe(&store, key.clone(), options)
        .await
        .expect("re-attach on b");
    let mut seen = Vec::new();
    while seen.last() != Some(&14) {
        let position = next_event(&mut on_b).await.expect("delivery on b");
        b.ack_event(&store, &key, on_b.consumer(), Position(position))
            .await
            .expect("ack on b");
        seen.push(position);
    }
    assert_eq!(
        seen,
        (5..15).collect::<Vec<_>>(),
        "resumed at the checkpoint, nothing lost"
    );
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_and_live_events_of_one_worker_are_seen_by_another() {
    let case = "stores_and_live_events_of_one_worker_are_seen_by_another";
    let Some(server) = server(case) else {
        return;
    };
    let a = worker("worker-a", &server.url()).await;
    let b = worker("worker-b", &server.url()).await;
    let store = store_id("seen-elsewhere");
    a.create_store(&store, CONFIG).await.expect("create on a");
    let listed = b.list_stores().await.expect("list on b");
    assert!(listed.iter().any(|s| s.store == store), "b lists a's store");
    let workers = b.workers().await.expect("workers");
    assert!(
        workers.iter().all(|w| w.shared_storage),
        "shared storage reported"
    );
    assert_eq!(
        b.create_store(
            &store,
            StoreConfig {
                fsync: false,
                ..CONFIG
            }
        )
        .await,
        Err(Error::StoreConfigConflict {
            store: store.to_string()
        }),
        "b sees a's config"
    );

    let mut live = b
        .subscribe(
            &store,
            SubscriptionKey::stream(&StreamId::all()),
            SubscribeOptions::default(),
        )
        .await
        .expect("transient subscription on b");
    a.append_events(&store, &stream_id("s"), ExpectedVersion::Any, events(3))
        .await
        .expect("append on a");
    let mut positions = Vec::new();
    for _ in 0..3 {
        positions.push(next_event(&mut live).await.expect("live delivery on b"));
    }
    assert_eq!(positions, vec![0, 1, 2], "b delivers a's commits");

    a.remove_store(&store).await.expect("remove on a");
    let after = b
        .get_events(&store, &stream_id("s"), 0, 10, Direction::Forward)
        .await;
    assert!(
        matches!(
            after,
            Err(Error::NotFound {
                resource: Resource::Store,
                ..
            })
        ),
        "b finds the store gone: {after:?}"
    );
    let listed = b.list_stores().await.expect("list on b");
    assert!(
        listed.iter().all(|s| s.store != store),
        "no longer listed on b"
    );
    a.shutdown().await;
    b.shutdown().await;
}

fn assert_storage_unavailable(what: &str, error: &Error) {
    assert!(error.is_retryable(), "{what}: retryable, got {error:?}");
    assert_eq!(
        error.side(),
        Some(Side::Storage),
        "{what}: storage side, got {error:?}"
    );
    assert!(
        !error.to_string().contains(PASSWORD),
        "{what}: password leaked in {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_at_start_and_mid_run_gives_retryable_errors_then_recovers() {
    let case = "database_down_at_start_and_mid_run_gives_retryable_errors_then_recovers";
    let Some(server) = server(case) else {
        return;
    };
    server.stop().expect("stop the server");
    let w = worker("worker", &server.url()).await;
    let store = store_id("flaky");
    let down = w
        .create_store(&store, CONFIG)
        .await
        .expect_err("database is down");
    assert_storage_unavailable("create while down", &down);

    server.start_again().expect("start the server");
    w.create_store(&store, CONFIG)
        .await
        .expect("create once it is up");
    let stream = stream_id("s");
    let batch = events(2);
    w.append_events(&store, &stream, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("append");

    server.stop().expect("stop the server mid-run");
    let retry = events(1);
    let append = w
        .append_events(&store, &stream, ExpectedVersion::Exact(1), retry.clone())
        .await
        .expect_err("append while down");
    assert_storage_unavailable("append while down", &append);
    let read = w
        .get_events(&store, &stream, 0, 10, Direction::Forward)
        .await
        .expect_err("read while down");
    assert_storage_unavailable("read while down", &read);

    server.start_again().expect("restart the server");
    let first = w
        .append_events(&store, &stream, ExpectedVersion::NoStream, batch)
        .await
        .expect("the first append, retried, is idempotent");
    assert_eq!(first.version, 1);
    let retried = w
        .append_events(&store, &stream, ExpectedVersion::Exact(1), retry)
        .await
        .expect("the refused append goes through once the database is back");
    assert_eq!(retried.version, 2);
    let read = w
        .get_events(&store, &stream, 0, 10, Direction::Forward)
        .await
        .expect("read after recovery");
    assert_eq!(read.len(), 3);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_a_retryable_storage_deadline() {
    let case = "a_statement_timeout_is_a_retryable_storage_deadline";
    let Some(server) = server(case) else {
        return;
    };
    let mut options = StoreOptions::new(std::env::temp_dir());
    options.worker_id = "impatient".to_owned();
    let postgres = PostgresOptions {
        statement_timeout_ms: 200,
        ..PostgresOptions::new(server.url())
    };
    let w = Store::open_postgres(options, postgres).await.expect("open");
    let store = store_id("locked");
    w.create_store(&store, CONFIG).await.expect("create");
    // Another session holds the store's head row: the append waits on it until the timeout.
    let blocker = Session::connect(&server.url()).await.expect("session");
    blocker
        .batch("BEGIN; SELECT * FROM gs_locked.head FOR UPDATE")
        .await
        .expect("lock the head row");
    let error = w
        .append_events(&store, &stream_id("s"), ExpectedVersion::Any, events(1))
        .await
        .expect_err("the append times out");
    assert_eq!(
        error,
        Error::DeadlineExceeded {
            side: Side::Storage
        }
    );
    assert!(error.is_retryable());
    blocker.batch("ROLLBACK").await.expect("release the lock");
    let events_stored = blocker
        .scalar("SELECT count(*) FROM gs_locked.events")
        .await
        .expect("count");
    assert_eq!(
        events_stored, 0,
        "nothing of the timed-out append was written"
    );
    w.append_events(&store, &stream_id("s"), ExpectedVersion::Any, events(1))
        .await
        .expect("append once the lock is gone");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_never_echoed() {
    let case = "a_wrong_password_is_never_echoed";
    let Some(server) = server(case) else {
        return;
    };
    let secret = "not-the-password-8d1f";
    let url = format!(
        "postgres://gater:{secret}@127.0.0.1:{}/postgres",
        server.port()
    );
    let w = worker("worker", &url).await;
    let error = w
        .create_store(&store_id("x"), CONFIG)
        .await
        .expect_err("authentication fails");
    assert!(
        !error.to_string().contains(secret),
        "password leaked: {error}"
    );
    assert!(
        !format!("{error:?}").contains(secret),
        "password leaked: {error:?}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_catalog_of_another_shape_is_a_storage_error_not_a_panic() {
    let case = "a_catalog_of_another_shape_is_a_storage_error_not_a_panic";
    let Some(server) = server(case) else {
        return;
    };
    let session = Session::connect(&server.url()).await.expect("connect");
    // A foreign `gater.stores`: fsync and group_commit hold text, not booleans.
    session
        .batch(
            "CREATE SCHEMA gater;
             CREATE TABLE gater.stores (id text PRIMARY KEY, schema_name text,
                                        fsync text, group_commit text, created_us bigint);
             INSERT INTO gater.stores VALUES ('foreign', 'gs_foreign', 'yes', 'no', 1);",
        )
        .await
        .expect("foreign catalog");
    let mut options = StoreOptions::new(std::env::temp_dir());
    options.worker_id = "worker-foreign".to_owned();
    let opened = Store::open_postgres(options, PostgresOptions::new(server.url())).await;
    let error = match opened {
        Err(error) => error,
        Ok(store) => store
            .get_store_config(&store_id("foreign"))
            .await
            .expect_err("a foreign catalog row does not read as a store"),
    };
    assert_eq!(error.kind(), "storage", "{case}: {error}");
    assert!(
        error.to_string().contains("unexpected database schema"),
        "{case}: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_makes_the_store_read_only_until_it_takes_writes_again() {
    let case = "a_read_only_database_makes_the_store_read_only_until_it_takes_writes_again";
    if !slow_tests_enabled(case) {
        return;
    }
    let Some(server) = server(case) else {
        return;
    };
    let mut options = StoreOptions::new(std::env::temp_dir());
    options.worker_id = "pg-ro".to_owned();
    options.heal.interval_ms = 50;
    let w = Store::open_postgres(options, PostgresOptions::new(server.url()))
        .await
        .expect("open a PostgreSQL worker");
    let store = store_id("ro");
    w.create_store(&store, CONFIG).await.expect("create");
    w.append_events(&store, &stream_id("s"), ExpectedVersion::Any, events(1))
        .await
        .expect("an append while the database takes writes");
    let admin = Session::connect(&server.url()).await.expect("session");
    admin
        .batch("ALTER SYSTEM SET default_transaction_read_only = on")
        .await
        .expect("make the database read-only");
    admin
        .batch("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    // Sessions apply the reload at their next command: append until one is refused.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let refused = loop {
        match w
            .append_events(&store, &stream_id("s"), ExpectedVersion::Any, events(1))
            .await
        {
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => panic!("the database never refused a write"),
            Err(error) => break error,
        }
    };
    assert_eq!(refused.kind(), "storage_full", "{refused}");
    assert!(refused.is_retryable());
    let status = w.get_store_status(&store).await.expect("status");
    assert_eq!(status.state, gater_core::StoreState::ReadOnly, "{status:?}");
    assert!(status.reason.expect("a reason").contains("read-only"));
    // Reads are still served.
    w.read_all(&store, Position::START, 10, Direction::Forward)
        .await
        .expect("reads of a read-only store");
    admin
        .batch("SET default_transaction_read_only = off")
        .await
        .expect("this session writes");
    admin
        .batch("ALTER SYSTEM RESET default_transaction_read_only")
        .await
        .expect("the database takes writes again");
    admin
        .batch("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while w.get_store_status(&store).await.expect("status").state != gater_core::StoreState::Running
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store heals once the database takes writes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.append_events(&store, &stream_id("s"), ExpectedVersion::Any, events(1))
        .await
        .expect("an append after healing");
    w.shutdown().await;
}
