//! The adapter against an embedded store, through the in-memory transport and
//! through a proxy over two workers: round trips, optimistic locking,
//! snapshots and replays, retries, views.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cqrs_es::persist::{
    GenericQuery, PersistedEventRepository, PersistedEventStore, PersistenceError, SerializedEvent,
    ViewContext, ViewRepository,
};
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use gater_core::{BoxGater, Direction, EventData, EventId, ExpectedVersion, Gater, StreamId};
use gater_cqrs_es::{
    GaterEventRepository, GaterViewRepository, RepositoryError, RepositoryOptions,
};
use serde_json::json;
use support::bank_account::{
    AccountView, BankAccount, BankAccountCommand, BankAccountError, BankAccountEvent,
    BankAccountServices,
};
use support::{Gated, Harness, LoseFirstAppendAnswer, RefuseSnapshots, Setup, Watched, SETUPS};

type Cqrs = CqrsFramework<BankAccount, PersistedEventStore<GaterEventRepository, BankAccount>>;

fn repository(harness: &Harness, gater: BoxGater) -> GaterEventRepository {
    GaterEventRepository::new(gater, harness.store.clone())
}

fn event_store(repo: &GaterEventRepository) -> Cqrs {
    CqrsFramework::new(
        PersistedEventStore::new_event_store(repo.clone()),
        vec![],
        BankAccountServices,
    )
}

fn deposit(amount_cents: u64) -> BankAccountCommand {
    BankAccountCommand::DepositMoney { amount_cents }
}

fn open(owner: &str) -> BankAccountCommand {
    BankAccountCommand::OpenAccount {
        owner: owner.to_owned(),
    }
}

/// A stored-form deposit event of account `id` at `sequence`.
fn serialized_deposit(id: &str, sequence: usize) -> SerializedEvent {
    let payload = BankAccountEvent::CustomerDepositedMoney {
        amount_cents: 1,
        balance_cents: sequence as u64,
    };
    SerializedEvent {
        aggregate_id: id.to_owned(),
        sequence,
        aggregate_type: "BankAccount".to_owned(),
        event_type: "CustomerDepositedMoney".to_owned(),
        event_version: "1.0".to_owned(),
        payload: serde_json::to_value(payload).unwrap(),
        metadata: json!({}),
    }
}

async fn balance(cqrs_repo: &GaterEventRepository, id: &str) -> (u64, usize) {
    let store = PersistedEventStore::<_, BankAccount>::new_event_store(cqrs_repo.clone());
    let context = store.load_aggregate(id).await.expect("the account loads");
    (context.aggregate.balance_cents, context.current_sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_events_load_back_with_type_version_payload_and_metadata_intact() {
    for setup in SETUPS {
        let harness = Harness::new(setup).await;
        let repo = repository(&harness, harness.gater.clone());
        let mut events: Vec<SerializedEvent> =
            (1..=3).map(|n| serialized_deposit("acct-1", n)).collect();
        events[1].event_version = "2.7-beta".to_owned();
        events[1].metadata = json!({"user": "ana", "trace": {"ids": [1, 2], "ok": null}});
        events[2].event_type = "Renamed Type".to_owned();
        repo.persist::<BankAccount>(&events, None).await.unwrap();

        let loaded = repo.get_events::<BankAccount>("acct-1").await.unwrap();
        assert_eq!(loaded, events, "{setup:?}");
        let last = repo
            .get_last_events::<BankAccount>("acct-1", 1)
            .await
            .unwrap();
        assert_eq!(last, events[1..], "{setup:?}: events after sequence 1");
        assert!(repo
            .get_events::<BankAccount>("acct-unknown")
            .await
            .unwrap()
            .is_empty());

        let stream = StreamId::new("BankAccount-acct-1").unwrap();
        let stored = harness
            .gater
            .get_events(&harness.store, &stream, 0, 10, Direction::Forward)
            .await
            .unwrap();
        assert_eq!(stored.len(), 3, "{setup:?}: one stream per aggregate");
        assert_eq!(stored[2].data.event_type, "Renamed Type");
        assert_eq!(stored[1].version, 1, "sequence 2 is version 1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_through_the_framework_load_back_with_their_metadata() {
    for setup in SETUPS {
        let harness = Harness::new(setup).await;
        let repo = repository(&harness, harness.gater.clone());
        let cqrs = event_store(&repo);
        cqrs.execute("acct-1", open("ana")).await.unwrap();
        let metadata = HashMap::from([("channel".to_owned(), "atm".to_owned())]);
        cqrs.execute_with_metadata("acct-1", deposit(250), metadata.clone())
            .await
            .unwrap();
        let refused = cqrs
            .execute(
                "acct-1",
                BankAccountCommand::WithdrawMoney { amount_cents: 900 },
            )
            .await;
        assert!(matches!(
            refused,
            Err(AggregateError::UserError(
                BankAccountError::InsufficientFunds { .. }
            ))
        ));
        assert_eq!(balance(&repo, "acct-1").await, (250, 2), "{setup:?}");
        let events = repo.get_events::<BankAccount>("acct-1").await.unwrap();
        assert_eq!(events[1].metadata, serde_json::to_value(&metadata).unwrap());
        assert_eq!(events[1].event_type, "CustomerDepositedMoney");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_commands_on_one_account_commit_once_and_conflict_once() {
    for setup in SETUPS {
        let harness = Harness::new(setup).await;
        let plain = repository(&harness, harness.gater.clone());
        event_store(&plain)
            .execute("acct-1", open("ana"))
            .await
            .unwrap();
        // Both commands load sequence 1 before either appends: the gate holds
        // appends until both have come.
        let gated = repository(&harness, Arc::new(Gated::new(harness.gater.clone(), 2)));
        let cqrs = event_store(&gated);
        let (a, b) = tokio::join!(
            cqrs.execute("acct-1", deposit(10)),
            cqrs.execute("acct-1", deposit(20))
        );
        let outcomes = [a, b];
        let won = outcomes.iter().filter(|r| r.is_ok()).count();
        let conflicts = outcomes
            .iter()
            .filter(|r| matches!(r, Err(AggregateError::AggregateConflict)))
            .count();
        assert_eq!((won, conflicts), (1, 1), "{setup:?}: {outcomes:?}");
        let (balance_cents, sequence) = balance(&plain, "acct-1").await;
        assert_eq!(sequence, 2, "{setup:?}: only the winner's event is stored");
        assert!(balance_cents == 10 || balance_cents == 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_store_loads_from_its_latest_snapshot_plus_later_events() {
    for setup in SETUPS {
        let harness = Harness::new(setup).await;
        let repo = repository(&harness, harness.gater.clone());
        let cqrs = CqrsFramework::new(
            PersistedEventStore::<_, BankAccount>::new_snapshot_store(repo.clone(), 2),
            vec![],
            BankAccountServices,
        );
        cqrs.execute("acct-1", open("ana")).await.unwrap();
        for amount in [100, 50, 25, 5] {
            cqrs.execute("acct-1", deposit(amount)).await.unwrap();
        }
        // Snapshots every 2 events: after sequences 2 and 4.
        let snapshot = repo
            .get_snapshot::<BankAccount>("acct-1")
            .await
            .unwrap()
            .expect("a snapshot was recorded");
        assert_eq!(snapshot.current_sequence, 4, "{setup:?}");
        assert_eq!(snapshot.current_snapshot, 2);
        assert_eq!(
            snapshot.aggregate,
            json!({"opened": true, "balance_cents": 175})
        );
        let keys = harness
            .gater
            .list_snapshots(&harness.store, Some("BankAccount"), None)
            .await
            .unwrap();
        let versions: Vec<u64> = keys.iter().map(|k| k.version).collect();
        assert_eq!(
            versions,
            [1, 3],
            "{setup:?}: keyed by the last covered version"
        );

        let store = PersistedEventStore::<_, BankAccount>::new_snapshot_store(repo.clone(), 2);
        let context = store.load_aggregate("acct-1").await.unwrap();
        assert_eq!(context.aggregate.balance_cents, 180);
        assert_eq!(context.current_sequence, 5);

        let mut replay = repo.stream_events::<BankAccount>("acct-1").await.unwrap();
        let mut sequences = Vec::new();
        while let Some(envelope) = replay.next::<BankAccount>(&[]).await {
            sequences.push(envelope.unwrap().sequence);
        }
        assert_eq!(sequences, [1, 2, 3, 4, 5], "{setup:?}");
        assert!(repo
            .get_snapshot::<BankAccount>("acct-2")
            .await
            .unwrap()
            .is_none());
    }
}

fn deposited(amount_cents: u64, balance_cents: u64) -> BankAccountEvent {
    BankAccountEvent::CustomerDepositedMoney {
        amount_cents,
        balance_cents,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_of_several_events_gets_its_snapshot_keyed_at_the_event_it_covers() {
    for setup in SETUPS {
        let harness = Harness::new(setup).await;
        let repo = repository(&harness, harness.gater.clone());
        let snapshots = PersistedEventStore::<_, BankAccount>::new_snapshot_store(repo.clone(), 3);
        event_store(&repo)
            .execute("acct-1", open("ana"))
            .await
            .unwrap();
        // Sequences 2, 3 and 4 in one commit: cqrs-es snapshots at 3 (a
        // multiple of 3) and builds that state from sequences 2 and 3 only.
        let context = snapshots.load_aggregate("acct-1").await.unwrap();
        let three = vec![deposited(10, 10), deposited(20, 30), deposited(40, 70)];
        snapshots
            .commit(three, context, HashMap::new())
            .await
            .unwrap();
        let snapshot = repo
            .get_snapshot::<BankAccount>("acct-1")
            .await
            .unwrap()
            .expect("a snapshot was recorded");
        assert_eq!(snapshot.current_sequence, 3, "{setup:?}");
        assert_eq!(
            snapshot.aggregate,
            json!({"opened": true, "balance_cents": 30})
        );
        let context = snapshots.load_aggregate("acct-1").await.unwrap();
        assert_eq!(
            (context.aggregate.balance_cents, context.current_sequence),
            (70, 4),
            "{setup:?}: the load applies sequence 4 after the snapshot"
        );

        // An aggregate store's snapshot of a commit covers all of it.
        let aggregates = PersistedEventStore::<_, BankAccount>::new_aggregate_store(repo.clone());
        let context = aggregates.load_aggregate("acct-2").await.unwrap();
        let opened = BankAccountEvent::AccountOpened {
            owner: "bo".to_owned(),
        };
        let three = vec![opened, deposited(1, 1), deposited(1, 2)];
        aggregates
            .commit(three, context, HashMap::new())
            .await
            .unwrap();
        let snapshot = repo
            .get_snapshot::<BankAccount>("acct-2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(snapshot.current_sequence, 3, "{setup:?}");
        let context = aggregates.load_aggregate("acct-2").await.unwrap();
        assert_eq!(context.aggregate.balance_cents, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_store_keeps_its_snapshot_at_the_last_event() {
    let harness = Harness::new(Setup::Embedded).await;
    let repo = repository(&harness, harness.gater.clone());
    let cqrs = CqrsFramework::new(
        PersistedEventStore::<_, BankAccount>::new_aggregate_store(repo.clone()),
        vec![],
        BankAccountServices,
    );
    cqrs.execute("acct-1", open("ana")).await.unwrap();
    cqrs.execute("acct-1", deposit(7)).await.unwrap();
    cqrs.execute("acct-1", deposit(8)).await.unwrap();
    let store = PersistedEventStore::<_, BankAccount>::new_aggregate_store(repo.clone());
    let context = store.load_aggregate("acct-1").await.unwrap();
    assert_eq!(context.aggregate.balance_cents, 15);
    assert_eq!(context.current_sequence, 3);
    assert_eq!(context.current_snapshot, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_recorded_leaves_the_commit_standing_and_says_so() {
    let harness = Harness::new(Setup::Embedded).await;
    let refusing = Arc::new(RefuseSnapshots::new(harness.gater.clone()));
    let repo = repository(&harness, refusing).with_options(RepositoryOptions {
        retry_backoff_ms: 0,
        ..RepositoryOptions::default()
    });
    let events = [serialized_deposit("acct-1", 1)];
    let snapshot = Some(("acct-1".to_owned(), json!({"balance_cents": 1}), 1));
    let answer = repo.persist::<BankAccount>(&events, snapshot).await;
    let Err(PersistenceError::UnknownError(error)) = answer else {
        panic!("expected the snapshot failure, got {answer:?}");
    };
    let error = error.downcast::<RepositoryError>().unwrap();
    assert!(matches!(
        *error,
        RepositoryError::SnapshotNotRecorded { version: 0, .. }
    ));
    let stored = repo.get_events::<BankAccount>("acct-1").await.unwrap();
    assert_eq!(stored, events, "the events are stored");
    assert!(repo
        .get_snapshot::<BankAccount>("acct-1")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_whose_answer_was_lost_is_stored_once() {
    for setup in SETUPS {
        let harness = Harness::new(setup).await;
        let lossy = Arc::new(LoseFirstAppendAnswer::new(harness.gater.clone()));
        let repo = repository(&harness, lossy).with_options(RepositoryOptions {
            retry_backoff_ms: 0,
            ..RepositoryOptions::default()
        });
        let events: Vec<_> = (1..=2).map(|n| serialized_deposit("acct-1", n)).collect();
        repo.persist::<BankAccount>(&events, None)
            .await
            .expect("the retry gets the original answer");
        let stored = repo.get_events::<BankAccount>("acct-1").await.unwrap();
        assert_eq!(stored, events, "{setup:?}: stored once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_lost_answer_is_a_connection_error() {
    let harness = Harness::new(Setup::Embedded).await;
    let lossy = Arc::new(LoseFirstAppendAnswer::new(harness.gater.clone()));
    let repo = repository(&harness, lossy).with_options(RepositoryOptions {
        call_attempts_max: 1,
        ..RepositoryOptions::default()
    });
    let events = [serialized_deposit("acct-1", 1)];
    let answer = repo.persist::<BankAccount>(&events, None).await;
    assert!(matches!(answer, Err(PersistenceError::ConnectionError(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregate_id_that_makes_no_stream_id_is_a_typed_error() {
    let harness = Harness::new(Setup::Embedded).await;
    let repo = repository(&harness, harness.gater.clone());
    let answer = event_store(&repo).execute("bad\nid", open("ana")).await;
    let Err(AggregateError::UnexpectedError(error)) = answer else {
        panic!("expected an unexpected error, got {answer:?}");
    };
    let error = error.downcast::<RepositoryError>().unwrap();
    assert!(matches!(*error, RepositoryError::InvalidStreamId { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_event_in_an_aggregate_stream_is_a_deserialization_error() {
    let harness = Harness::new(Setup::Embedded).await;
    let stream = StreamId::new("BankAccount-acct-1").unwrap();
    let raw = EventData::json(
        EventId::from_random_bytes([9; 16]),
        "Raw",
        b"{}".to_vec(),
        b"{}".to_vec(),
    );
    harness
        .gater
        .append_events(
            &harness.store,
            &stream,
            ExpectedVersion::NoStream,
            vec![raw],
        )
        .await
        .unwrap();
    let repo = repository(&harness, harness.gater.clone());
    let answer = repo.get_events::<BankAccount>("acct-1").await;
    assert!(matches!(
        answer,
        Err(PersistenceError::DeserializationError(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_kept_per_instance_and_optimistically_locked() {
    for setup in SETUPS {
        let harness = Harness::new(setup).await;
        let repo = repository(&harness, harness.gater.clone());
        let views = Arc::new(GaterViewRepository::<AccountView, BankAccount>::new(
            harness.gater.clone(),
            harness.store.clone(),
            "account_view",
        ));
        let cqrs = CqrsFramework::new(
            PersistedEventStore::new_event_store(repo.clone()),
            vec![Box::new(GenericQuery::new(Arc::clone(&views)))],
            BankAccountServices,
        );
        assert!(views.load("acct-1").await.unwrap().is_none());
        cqrs.execute("acct-1", open("ana")).await.unwrap();
        cqrs.execute("acct-1", deposit(40)).await.unwrap();
        let (view, context) = views
            .load_with_context("acct-1")
            .await
            .unwrap()
            .expect("the view exists");
        assert_eq!(view.owner, "ana", "{setup:?}");
        assert_eq!(view.balance_cents, 40);
        assert_eq!(view.ledger.len(), 2);
        assert_eq!(context.version, 2, "two updates so far");

        let stale = ViewContext::new("acct-1".to_owned(), 1);
        let answer = views.update_view(view.clone(), stale).await;
        assert!(
            matches!(answer, Err(PersistenceError::OptimisticLockError)),
            "{setup:?}: {answer:?}"
        );
        views.update_view(view, context).await.unwrap();
    }
}

/// How a replay test writes and reads.
struct ReplayShape {
    accounts: usize,
    rounds: usize,
    per_commit: usize,
    page: u32,
    queue: usize,
}

/// The ten-thousand-event replay: 100 accounts, 2 rounds of 50-event commits.
const TEN_THOUSAND: ReplayShape = ReplayShape {
    accounts: 100,
    rounds: 2,
    per_commit: 50,
    page: 256,
    queue: 64,
};

fn slow_tests_enabled(test: &str) -> bool {
    let enabled = std::env::var_os("RUN_SLOW_TESTS").is_some();
    if !enabled {
        eprintln!("{test}: skipped (set RUN_SLOW_TESTS=1 to run it)");
    }
    enabled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_all_events_replays_ten_thousand_events_in_global_order_page_by_page() {
    check_replay_of_the_log(Setup::Embedded, &TEN_THOUSAND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_all_events_replays_ten_thousand_events_through_the_mem_transport_and_a_proxy() {
    if !slow_tests_enabled(
        "stream_all_events_replays_ten_thousand_events_through_the_mem_transport_and_a_proxy",
    ) {
        return;
    }
    for setup in [Setup::Mem, Setup::Proxy] {
        check_replay_of_the_log(setup, &TEN_THOUSAND).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_all_events_pages_through_the_mem_transport_and_a_proxy() {
    let small = ReplayShape {
        accounts: 20,
        rounds: 3,
        per_commit: 10,
        page: 32,
        queue: 8,
    };
    for setup in [Setup::Mem, Setup::Proxy] {
        check_replay_of_the_log(setup, &small).await;
    }
}

/// Writes `shape`'s events (commits interleaving accounts, other kinds'
/// events in between), then replays the aggregate type's events from the
/// global log and checks order, completeness, page size and how many events
/// the replay held at most.
async fn check_replay_of_the_log(setup: Setup, shape: &ReplayShape) {
    let harness = Harness::new(setup).await;
    let writer = repository(&harness, harness.gater.clone());
    let mut written = Vec::new();
    for round in 0..shape.rounds {
        for account in 0..shape.accounts {
            let id = format!("acct-{account}");
            let first = round * shape.per_commit + 1;
            let events: Vec<_> = (first..first + shape.per_commit)
                .map(|sequence| serialized_deposit(&id, sequence))
                .collect();
            writer.persist::<BankAccount>(&events, None).await.unwrap();
            written.extend(events.iter().map(|e| (e.aggregate_id.clone(), e.sequence)));
        }
        let other = StreamId::new(format!("Audit-{round}")).unwrap();
        let raw = EventData::json(
            EventId::from_random_bytes([round as u8; 16]),
            "Raw",
            b"{}".to_vec(),
            b"{}".to_vec(),
        );
        harness
            .gater
            .append_events(&harness.store, &other, ExpectedVersion::Any, vec![raw])
            .await
            .unwrap();
    }
    assert_eq!(
        written.len(),
        shape.accounts * shape.rounds * shape.per_commit
    );

    let watched = Arc::new(Watched::new(harness.gater.clone()));
    let reads = Arc::clone(&watched.reads);
    let reader = repository(&harness, watched).with_options(RepositoryOptions {
        read_page_len: shape.page,
        replay_queue_len: shape.queue,
        ..RepositoryOptions::default()
    });
    let mut replay = reader.stream_all_events::<BankAccount>().await.unwrap();
    let mut replayed = Vec::with_capacity(written.len());
    let mut last_sequence = BTreeMap::new();
    while let Some(envelope) = replay.next::<BankAccount>(&[]).await {
        let envelope = envelope.unwrap();
        reads.consumed.fetch_add(1, Ordering::SeqCst);
        let previous = last_sequence.insert(envelope.aggregate_id.clone(), envelope.sequence);
        assert_eq!(previous.unwrap_or(0) + 1, envelope.sequence);
        replayed.push((envelope.aggregate_id, envelope.sequence));
    }
    assert_eq!(replayed, written, "{setup:?}: every event, in commit order");

    let page = u64::from(shape.page);
    let calls = reads.calls.load(Ordering::SeqCst);
    let ahead_max = reads.ahead_max.load(Ordering::SeqCst);
    assert!(
        reads.count_max.load(Ordering::SeqCst) <= page,
        "pages of at most {page}"
    );
    let logged = (written.len() + shape.rounds) as u64;
    assert!(calls >= logged / page, "{setup:?}: {calls} reads");
    // Read but not yet taken: at most a full queue, one event in hand,
    // one page, and the other kinds' events the replay skipped.
    let bound = shape.queue as u64 + 1 + page + shape.rounds as u64;
    eprintln!(
        "{setup:?}: replayed {} events in {calls} reads of at most {page}; \
         at most {ahead_max} held at once (bound {bound})",
        replayed.len()
    );
    assert!(
        ahead_max <= bound,
        "{setup:?}: {ahead_max} events held, bound {bound}"
    );
}
