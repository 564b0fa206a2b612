//! Conformance cases of stream lifecycle: soft delete, tombstones,
//! truncation, retention and compaction, each visible at once in every
//! read (a stream, the global log, queries, append conditions,
//! subscriptions started afterwards).

use gater_core::{
    Append, AppendCondition, Direction, Error, ExpectedVersion, Gater, Position, Query, QueryItem,
    RecordedEvent, SnapshotKey, StoreId, StreamId, SubscriptionItem, SubscriptionType, Version,
};

use super::subscriptions::{next_delivery, next_item, subscribe, transient};
use super::support::{check, err, event, events, kind, new_store, ok, same, stream};

/// Enough for every read of a case.
const PAGE: u32 = 100;
/// Rounds of hiding events and compacting them away while clients work.
const COMPACTION_ROUNDS: usize = 6;
/// Events each round hides (soft-deletes) before compacting.
const HIDDEN_PER_ROUND: usize = 200;
/// Clients appending and reading while a compaction runs.
const CLIENTS_DURING_COMPACTION: usize = 8;
/// Most operations a client makes while one compaction runs.
const OPS_PER_COMPACTION_MAX: usize = 2_000;

/// Runs every lifecycle case against `gater`; prints that it skipped them
/// when the target answers `Unsupported` (a backend without lifecycle).
pub async fn run(gater: &dyn Gater) {
    let case = "lifecycle support";
    let store = new_store(gater, case).await;
    let probe = gater
        .delete_stream(&store, &stream("probe"), ExpectedVersion::Any)
        .await;
    if let Err(Error::Unsupported(why)) = probe {
        eprintln!("lifecycle conformance: skipped, the target does not support it: {why}");
        return;
    }
    ok(case, probe);
    a_soft_deleted_stream_is_gone_and_recreation_continues_numbering(gater).await;
    a_retry_of_an_append_made_before_a_soft_delete_answers_the_original(gater).await;
    a_delete_checks_its_expected_version(gater).await;
    a_tombstone_refuses_appends_of_every_expected_version_and_all_reads(gater).await;
    truncation_hides_lower_versions_everywhere(gater).await;
    retention_by_count_keeps_the_newest_events(gater).await;
    retention_by_age_hides_events_older_than_max_age(gater).await;
    subscriptions_started_after_a_delete_skip_hidden_events(gater).await;
    hidden_events_do_not_match_append_conditions(gater).await;
    compaction_keeps_every_visible_event(gater).await;
    events_a_running_compaction_removes_never_match_a_condition_or_fail_a_read(gater).await;
}

async fn read_stream(g: &dyn Gater, store: &StoreId, s: &StreamId, case: &str) -> Vec<Version> {
    let events = ok(
        case,
        g.get_events(store, s, 0, PAGE, Direction::Forward).await,
    );
    events.iter().map(|e| e.version).collect()
}

async fn read_all(g: &dyn Gater, store: &StoreId, case: &str) -> Vec<(String, Version)> {
    let events = ok(
        case,
        g.read_all(store, Position::START, PAGE, Direction::Forward)
            .await,
    );
    pairs(&events)
}

fn pairs(events: &[RecordedEvent]) -> Vec<(String, Version)> {
    events
        .iter()
        .map(|e| (e.stream.as_str().to_owned(), e.version))
        .collect()
}

fn named(s: &str, versions: &[Version]) -> Vec<(String, Version)> {
    versions.iter().map(|v| (s.to_owned(), *v)).collect()
}

async fn a_soft_deleted_stream_is_gone_and_recreation_continues_numbering(g: &dyn Gater) {
    let case = "a_soft_deleted_stream_is_gone_and_recreation_continues_numbering";
    let store = new_store(g, case).await;
    let (a, b) = (stream("a"), stream("b"));
    ok(
        case,
        g.append_events(&store, &a, ExpectedVersion::NoStream, events(3))
            .await,
    );
    ok(
        case,
        g.append_events(&store, &b, ExpectedVersion::NoStream, events(2))
            .await,
    );
    ok(
        case,
        g.delete_stream(&store, &a, ExpectedVersion::Exact(2)).await,
    );
    same(
        case,
        "events after delete",
        read_stream(g, &store, &a, case).await,
        vec![],
    );
    same(
        case,
        "version after delete",
        ok(case, g.get_version(&store, &a).await),
        None,
    );
    let listed = ok(case, g.get_streams(&store, None, PAGE).await);
    let names: Vec<&str> = listed.streams.iter().map(|s| s.stream.as_str()).collect();
    same(case, "streams after delete", names, vec!["b"]);
    same(
        case,
        "read_all after delete",
        read_all(g, &store, case).await,
        named("b", &[0, 1]),
    );
    let backward = ok(
        case,
        g.get_events(&store, &a, u64::MAX, PAGE, Direction::Backward)
            .await,
    );
    check(case, "backward read is empty", backward.is_empty());
    let recreated = ok(
        case,
        g.append_events(&store, &a, ExpectedVersion::NoStream, events(1))
            .await,
    );
    same(case, "recreated version", recreated.version, 3);
    same(
        case,
        "events after recreate",
        read_stream(g, &store, &a, case).await,
        vec![3],
    );
    same(
        case,
        "version after recreate",
        ok(case, g.get_version(&store, &a).await),
        Some(3),
    );
    let mut expected = named("b", &[0, 1]);
    expected.extend(named("a", &[3]));
    same(
        case,
        "read_all after recreate",
        read_all(g, &store, case).await,
        expected,
    );
    ok(
        case,
        g.delete_stream(&store, &a, ExpectedVersion::Any).await,
    );
    let any = ok(
        case,
        g.append_events(&store, &a, ExpectedVersion::Any, events(1))
            .await,
    );
    same(case, "recreated with Any", any.version, 4);
}

async fn a_retry_of_an_append_made_before_a_soft_delete_answers_the_original(g: &dyn Gater) {
    let case = "a_retry_of_an_append_made_before_a_soft_delete_answers_the_original";
    let store = new_store(g, case).await;
    let s = stream("retried");
    let batch = events(2);
    let first = ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::NoStream, batch.clone())
            .await,
    );
    ok(
        case,
        g.delete_stream(&store, &s, ExpectedVersion::Any).await,
    );
    let retry = ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::NoStream, batch.clone())
            .await,
    );
    same(case, "retry answers the original", retry, first);
    same(
        case,
        "nothing written again",
        ok(case, g.get_version(&store, &s).await),
        None,
    );
    // Compaction removes the events but keeps what a retry needs.
    ok(case, g.compact_store(&store).await);
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
        let retry = ok(
            case,
            g.append_events(&store, &s, expected, batch.clone()).await,
        );
        same(case, "retry after compaction", retry, first);
    }
    same(
        case,
        "nothing written after compaction either",
        ok(
            case,
            g.read_all(&store, Position::START, PAGE, Direction::Forward)
                .await,
        ),
        vec![],
    );
}

async fn a_delete_checks_its_expected_version(g: &dyn Gater) {
    let case = "a_delete_checks_its_expected_version";
    let store = new_store(g, case).await;
    let s = stream("checked");
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::NoStream, events(3))
            .await,
    );
    for expected in [ExpectedVersion::Exact(5), ExpectedVersion::NoStream] {
        let e = err(case, g.delete_stream(&store, &s, expected).await);
        same(
            case,
            "wrong expectation",
            e,
            Error::WrongExpectedVersion {
                stream: s.clone(),
                expected,
                current: Some(2),
            },
        );
        let e = err(case, g.tombstone_stream(&store, &s, expected).await);
        kind(case, "tombstone expectation", &e, "wrong_expected_version");
    }
    same(
        case,
        "nothing deleted",
        read_stream(g, &store, &s, case).await,
        vec![0, 1, 2],
    );
}

async fn a_tombstone_refuses_appends_of_every_expected_version_and_all_reads(g: &dyn Gater) {
    let case = "a_tombstone_refuses_appends_of_every_expected_version_and_all_reads";
    let store = new_store(g, case).await;
    let (t, kept) = (stream("t"), stream("kept"));
    ok(
        case,
        g.append_events(&store, &t, ExpectedVersion::NoStream, events(2))
            .await,
    );
    ok(
        case,
        g.append_events(&store, &kept, ExpectedVersion::NoStream, events(1))
            .await,
    );
    let snapshot = SnapshotKey {
        source: "src".into(),
        stream: "t".into(),
        version: 1,
    };
    ok(
        case,
        g.record_snapshot(&store, snapshot, b"state".to_vec()).await,
    );
    ok(
        case,
        g.tombstone_stream(&store, &t, ExpectedVersion::StreamExists)
            .await,
    );
    let deleted = Error::StreamDeleted { stream: t.clone() };
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(2),
    ] {
        let e = err(case, g.append_events(&store, &t, expected, events(1)).await);
        same(case, &format!("append {expected:?}"), e, deleted.clone());
    }
    let e = err(
        case,
        g.get_events(&store, &t, 0, PAGE, Direction::Forward).await,
    );
    same(case, "read", e, deleted.clone());
    same(
        case,
        "version",
        err(case, g.get_version(&store, &t).await),
        deleted.clone(),
    );
    let e = err(
        case,
        g.delete_stream(&store, &t, ExpectedVersion::Any).await,
    );
    same(case, "delete again", e, deleted.clone());
    let e = err(case, g.stream_retention(&store, &t).await);
    kind(case, "retention of a tombstone", &e, "stream_deleted");
    same(
        case,
        "read_all",
        read_all(g, &store, case).await,
        named("kept", &[0]),
    );
    let snapshots = ok(case, g.list_snapshots(&store, Some("src"), Some("t")).await);
    check(
        case,
        "snapshots deleted with the stream",
        snapshots.is_empty(),
    );
}

async fn truncation_hides_lower_versions_everywhere(g: &dyn Gater) {
    let case = "truncation_hides_lower_versions_everywhere";
    let store = new_store(g, case).await;
    let s = stream("truncated");
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::NoStream, events(5))
            .await,
    );
    ok(case, g.truncate_stream(&store, &s, 3).await);
    same(
        case,
        "forward",
        read_stream(g, &store, &s, case).await,
        vec![3, 4],
    );
    let backward = ok(
        case,
        g.get_events(&store, &s, u64::MAX, PAGE, Direction::Backward)
            .await,
    );
    let versions: Vec<Version> = backward.iter().map(|e| e.version).collect();
    same(case, "backward", versions, vec![4, 3]);
    same(
        case,
        "read_all",
        read_all(g, &store, case).await,
        named("truncated", &[3, 4]),
    );
    same(
        case,
        "version",
        ok(case, g.get_version(&store, &s).await),
        Some(4),
    );
    let retention = ok(case, g.stream_retention(&store, &s).await);
    same(case, "truncate_before", retention.truncate_before, Some(3));
    ok(case, g.truncate_stream(&store, &s, 1).await);
    same(
        case,
        "never moves back",
        read_stream(g, &store, &s, case).await,
        vec![3, 4],
    );
}

async fn retention_by_count_keeps_the_newest_events(g: &dyn Gater) {
    let case = "retention_by_count_keeps_the_newest_events";
    let store = new_store(g, case).await;
    let s = stream("counted");
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::NoStream, events(5))
            .await,
    );
    ok(
        case,
        g.set_stream_retention(&store, &s, Some(2), None).await,
    );
    same(
        case,
        "newest two",
        read_stream(g, &store, &s, case).await,
        vec![3, 4],
    );
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Exact(4), events(1))
            .await,
    );
    same(
        case,
        "after an append",
        read_stream(g, &store, &s, case).await,
        vec![4, 5],
    );
    same(
        case,
        "read_all",
        read_all(g, &store, case).await,
        named("counted", &[4, 5]),
    );
    let retention = ok(case, g.stream_retention(&store, &s).await);
    same(case, "max_count", retention.max_count, Some(2));
    same(case, "max_age", retention.max_age_s, None);
}

async fn retention_by_age_hides_events_older_than_max_age(g: &dyn Gater) {
    let case = "retention_by_age_hides_events_older_than_max_age";
    let store = new_store(g, case).await;
    let s = stream("aged");
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::NoStream, events(3))
            .await,
    );
    ok(
        case,
        g.set_stream_retention(&store, &s, None, Some(3_600)).await,
    );
    same(
        case,
        "an hour keeps all",
        read_stream(g, &store, &s, case).await,
        vec![0, 1, 2],
    );
    // A maximum age of 0 s hides every event created before the read:
    // aging without waiting (other tests move an injected clock).
    ok(
        case,
        g.set_stream_retention(&store, &s, None, Some(0)).await,
    );
    same(
        case,
        "zero hides all",
        read_stream(g, &store, &s, case).await,
        vec![],
    );
    same(case, "read_all", read_all(g, &store, case).await, vec![]);
    same(
        case,
        "the stream still exists",
        ok(case, g.get_version(&store, &s).await),
        Some(2),
    );
}

async fn subscriptions_started_after_a_delete_skip_hidden_events(g: &dyn Gater) {
    let case = "subscriptions_started_after_a_delete_skip_hidden_events";
    let store = new_store(g, case).await;
    let (gone, kept) = (stream("gone"), stream("kept"));
    ok(
        case,
        g.append_events(&store, &gone, ExpectedVersion::NoStream, events(3))
            .await,
    );
    ok(
        case,
        g.append_events(&store, &kept, ExpectedVersion::NoStream, events(1))
            .await,
    );
    ok(
        case,
        g.append_events(&store, &gone, ExpectedVersion::Any, events(2))
            .await,
    );
    ok(
        case,
        g.delete_stream(&store, &gone, ExpectedVersion::Any).await,
    );
    let key = transient(SubscriptionType::ByStream, "$all");
    let mut sub = subscribe(g, &store, key, 10, case).await;
    let first = next_delivery(&mut sub, case).await;
    same(
        case,
        "only the kept event",
        first.event.stream,
        kept.clone(),
    );
    same(
        case,
        "caught up after it",
        next_item(&mut sub, case).await,
        SubscriptionItem::CaughtUp,
    );
    ok(
        case,
        g.append_events(&store, &gone, ExpectedVersion::NoStream, events(1))
            .await,
    );
    let live = next_delivery(&mut sub, case).await;
    same(
        case,
        "the recreated stream's event",
        (live.event.stream, live.event.version),
        (gone, 5),
    );
}

async fn hidden_events_do_not_match_append_conditions(g: &dyn Gater) {
    let case = "hidden_events_do_not_match_append_conditions";
    let store = new_store(g, case).await;
    let taken = Query {
        items: vec![QueryItem {
            types: Vec::new(),
            tags: vec!["username:ana".into()],
        }],
    };
    let register = |s: &str| {
        Append::single(
            stream(s),
            ExpectedVersion::NoStream,
            vec![event("UserRegistered", 0).with_tags(vec!["username:ana".into()])],
        )
        .with_condition(AppendCondition {
            fail_if_events_match: taken.clone(),
            after: None,
        })
    };
    ok(case, g.append(&store, register("user-1")).await);
    let e = err(case, g.append(&store, register("user-2")).await);
    kind(case, "the name is taken", &e, "append_condition_failed");
    ok(
        case,
        g.delete_stream(&store, &stream("user-1"), ExpectedVersion::Any)
            .await,
    );
    let found = ok(
        case,
        g.read_query(&store, &taken, Position::START, PAGE, Direction::Forward)
            .await,
    );
    check(case, "the query no longer finds it", found.is_empty());
    ok(case, g.append(&store, register("user-2")).await);
    ok(
        case,
        g.tombstone_stream(&store, &stream("user-2"), ExpectedVersion::Any)
            .await,
    );
    let e = err(case, g.append(&store, register("user-2")).await);
    kind(case, "a tombstoned name stays taken", &e, "stream_deleted");
    ok(case, g.append(&store, register("user-3")).await);
}

async fn compaction_keeps_every_visible_event(g: &dyn Gater) {
    let case = "compaction_keeps_every_visible_event";
    let store = new_store(g, case).await;
    let (gone, cut, kept) = (stream("gone"), stream("cut"), stream("kept"));
    ok(
        case,
        g.append_events(&store, &gone, ExpectedVersion::NoStream, events(4))
            .await,
    );
    ok(
        case,
        g.append_events(&store, &cut, ExpectedVersion::NoStream, events(4))
            .await,
    );
    ok(
        case,
        g.append_events(&store, &kept, ExpectedVersion::NoStream, events(2))
            .await,
    );
    ok(
        case,
        g.delete_stream(&store, &gone, ExpectedVersion::Any).await,
    );
    ok(case, g.truncate_stream(&store, &cut, 2).await);
    let before = read_all(g, &store, case).await;
    let compaction = ok(case, g.compact_store(&store).await);
    same(case, "its store", compaction.store.clone(), store.clone());
    // A background compaction may have removed some of them already.
    check(
        case,
        "hidden events removed",
        compaction.events_removed <= 6,
    );
    let again = ok(case, g.compact_store(&store).await);
    same(case, "nothing left to remove", again.events_removed, 0);
    same(
        case,
        "read_all unchanged",
        read_all(g, &store, case).await,
        before,
    );
    let recreated = ok(
        case,
        g.append_events(&store, &gone, ExpectedVersion::NoStream, events(1))
            .await,
    );
    same(case, "numbering survives compaction", recreated.version, 4);
    same(
        case,
        "truncated stream",
        read_stream(g, &store, &cut, case).await,
        vec![2, 3],
    );
}

/// Compaction removes hidden events while appends and reads go on: an
/// event it removes was hidden before, so a condition never matches it and
/// a read never finds its index entry without its record, whichever half
/// of the removal a reader sees.
async fn events_a_running_compaction_removes_never_match_a_condition_or_fail_a_read(g: &dyn Gater) {
    let case = "events_a_running_compaction_removes_never_match_a_condition_or_fail_a_read";
    let store = new_store(g, case).await;
    let hidden = Query {
        items: vec![QueryItem {
            types: Vec::new(),
            tags: vec!["hidden".into()],
        }],
    };
    for round in 0..COMPACTION_ROUNDS {
        let gone = stream(&format!("gone-{round}"));
        let doomed = (0..HIDDEN_PER_ROUND)
            .map(|n| event("Gone", n).with_tags(vec!["hidden".into()]))
            .collect();
        ok(
            case,
            g.append_events(&store, &gone, ExpectedVersion::NoStream, doomed)
                .await,
        );
        ok(
            case,
            g.delete_stream(&store, &gone, ExpectedVersion::Any).await,
        );
        let done = std::sync::atomic::AtomicBool::new(false);
        let compaction = async {
            let compacted = g.compact_store(&store).await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            ok(case, compacted);
        };
        let client = |i: usize| {
            let (store, hidden, gone, done) = (&store, &hidden, &gone, &done);
            async move {
                let live = stream(&format!("live-{round}-{i}"));
                for n in 0..OPS_PER_COMPACTION_MAX {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let append =
                        Append::single(live.clone(), ExpectedVersion::Any, vec![event("Live", n)])
                            .with_condition(AppendCondition {
                                fail_if_events_match: hidden.clone(),
                                after: None,
                            });
                    ok(case, g.append(store, append).await);
                    let found = ok(
                        case,
                        g.read_query(store, hidden, Position::START, PAGE, Direction::Forward)
                            .await,
                    );
                    check(case, "a query finds no hidden event", found.is_empty());
                    let read = ok(
                        case,
                        g.get_events(store, gone, 0, PAGE, Direction::Forward).await,
                    );
                    check(case, "a deleted stream reads empty", read.is_empty());
                }
            }
        };
        futures::join!(
            compaction,
            futures::future::join_all((0..CLIENTS_DURING_COMPACTION).map(client))
        );
    }
}
