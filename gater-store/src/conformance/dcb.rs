//! Conformance cases of the general append model: tags, queries,
//! conditional appends (Dynamic Consistency Boundaries), multi-stream
//! appends and query subscriptions.

use futures::future::join_all;
use gater_core::{
    Append, AppendCondition, AppendPart, Direction, Error, EventData, ExpectedVersion, Gater,
    Position, Query, QueryItem, RecordedEvent, StoreId, SubscriptionItem, SubscriptionKey,
    SubscriptionSpec, SubscriptionType,
};

use super::subscriptions::{next_delivery, next_item, subscribe, transient};
use super::support::{check, err, event, kind, new_store, ok, same, stream};

/// Clients racing in the concurrency case.
const RACERS: usize = 16;

/// Runs every case of the append model against `gater`.
pub async fn run(gater: &dyn Gater) {
    tags_round_trip_in_order(gater).await;
    queries_match_types_or_tags_and_items_or(gater).await;
    invalid_queries_and_tags_get_typed_errors(gater).await;
    a_condition_without_after_covers_the_whole_log(gater).await;
    a_condition_with_after_covers_only_later_events(gater).await;
    of_racing_conditional_appends_exactly_one_wins_per_window(gater).await;
    a_multi_part_append_is_all_or_nothing(gater).await;
    a_multi_part_append_retried_answers_its_first_outcome(gater).await;
    query_subscriptions_catch_up_then_go_live_without_gaps(gater).await;
    a_persistent_query_subscription_resumes_after_its_checkpoint(gater).await;
}

fn tagged(event_type: &str, n: usize, tags: &[&str]) -> EventData {
    event(event_type, n).with_tags(tags.iter().map(|t| (*t).to_owned()).collect())
}

fn item(types: &[&str], tags: &[&str]) -> QueryItem {
    QueryItem {
        types: types.iter().map(|t| (*t).to_owned()).collect(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn query(items: Vec<QueryItem>) -> Query {
    Query { items }
}

fn condition(query: Query, after: Option<u64>) -> AppendCondition {
    AppendCondition {
        fail_if_events_match: query,
        after: after.map(Position),
    }
}

fn part(s: &str, expected: ExpectedVersion, events: Vec<EventData>) -> AppendPart {
    AppendPart {
        stream: stream(s),
        expected,
        events,
    }
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position.0).collect()
}

async fn read_query(
    g: &dyn Gater,
    store: &StoreId,
    q: &Query,
    direction: Direction,
    case: &str,
) -> Vec<RecordedEvent> {
    let from = match direction {
        Direction::Forward => Position::START,
        Direction::Backward => Position::END,
    };
    ok(case, g.read_query(store, q, from, 100, direction).await)
}

async fn tags_round_trip_in_order(g: &dyn Gater) {
    let case = "tags_round_trip_in_order";
    let store = new_store(g, case).await;
    let sent = vec![
        tagged("Enrolled", 0, &["student:3", "course:7"]),
        tagged("Enrolled", 1, &[]),
    ];
    let s = stream("enrolments");
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, sent.clone())
            .await,
    );
    let read = ok(
        case,
        g.get_events(&store, &s, 0, 10, Direction::Forward).await,
    );
    let by_log = ok(
        case,
        g.read_all(&store, Position::START, 10, Direction::Forward)
            .await,
    );
    for events in [&read, &by_log] {
        let tags: Vec<&Vec<String>> = events.iter().map(|e| &e.data.tags).collect();
        same(
            case,
            "tags in the given order",
            tags,
            vec![&sent[0].tags, &sent[1].tags],
        );
    }
    let q = query(vec![item(&[], &["course:7"])]);
    let found = read_query(g, &store, &q, Direction::Forward, case).await;
    same(case, "read by tag", &found[..], &read[..1]);
}

async fn queries_match_types_or_tags_and_items_or(g: &dyn Gater) {
    let case = "queries_match_types_or_tags_and_items_or";
    let store = new_store(g, case).await;
    let events = vec![
        tagged("A", 0, &["x"]),      // 0
        tagged("B", 1, &["x", "y"]), // 1
        tagged("C", 2, &["y"]),      // 2
        tagged("A", 3, &["y", "x"]), // 3
        tagged("B", 4, &[]),         // 4
    ];
    ok(
        case,
        g.append_events(&store, &stream("s"), ExpectedVersion::Any, events)
            .await,
    );
    let cases: Vec<(Query, Vec<u64>)> = vec![
        (query(vec![item(&["A"], &[])]), vec![0, 3]),
        (query(vec![item(&["A", "C"], &[])]), vec![0, 2, 3]),
        (query(vec![item(&[], &["x"])]), vec![0, 1, 3]),
        (query(vec![item(&[], &["x", "y"])]), vec![1, 3]),
        (query(vec![item(&["B"], &["x"])]), vec![1]),
        (query(vec![item(&["C"], &["x"])]), vec![]),
        (
            query(vec![item(&["C"], &[]), item(&[], &["x", "y"])]),
            vec![1, 2, 3],
        ),
        (
            query(vec![item(&["B"], &[]), item(&["B"], &["y"])]),
            vec![1, 4],
        ),
        (Query::all(), vec![0, 1, 2, 3, 4]),
        (query(vec![item(&["Z"], &[])]), vec![]),
    ];
    for (q, expected) in cases {
        let what = format!("{q:?}");
        let forward = read_query(g, &store, &q, Direction::Forward, case).await;
        same(case, &what, positions(&forward), expected.clone());
        let backward = read_query(g, &store, &q, Direction::Backward, case).await;
        let mut reversed = expected;
        reversed.reverse();
        same(case, &what, positions(&backward), reversed);
    }
    let q = query(vec![item(&[], &["x"])]);
    let page = ok(
        case,
        g.read_query(&store, &q, Position(1), 1, Direction::Forward)
            .await,
    );
    same(case, "from and count", positions(&page), vec![1]);
    let page = ok(
        case,
        g.read_query(&store, &q, Position(2), 5, Direction::Backward)
            .await,
    );
    same(case, "backward from", positions(&page), vec![1, 0]);
}

async fn invalid_queries_and_tags_get_typed_errors(g: &dyn Gater) {
    let case = "invalid_queries_and_tags_get_typed_errors";
    let store = new_store(g, case).await;
    let empty_item = query(vec![item(&[], &[])]);
    let e = err(
        case,
        g.read_query(&store, &empty_item, Position::START, 10, Direction::Forward)
            .await,
    );
    kind(
        case,
        "an item with neither types nor tags",
        &e,
        "invalid_argument",
    );
    let s = stream("s");
    let bad_tags: [(Vec<String>, &str); 3] = [
        (vec![String::new()], "invalid_argument"),
        (vec!["a".into(), "a".into()], "invalid_argument"),
        (
            vec!["t".repeat(gater_core::query::TAG_BYTES_MAX + 1)],
            "limit_exceeded",
        ),
    ];
    for (tags, expected) in bad_tags {
        let e = err(
            case,
            g.append_events(
                &store,
                &s,
                ExpectedVersion::Any,
                vec![event("A", 0).with_tags(tags)],
            )
            .await,
        );
        kind(case, "malformed tags", &e, expected);
    }
    let too_many: Vec<String> = (0..=gater_core::query::TAGS_PER_EVENT_MAX)
        .map(|i| format!("t{i}"))
        .collect();
    let e = err(
        case,
        g.append_events(
            &store,
            &s,
            ExpectedVersion::Any,
            vec![event("A", 0).with_tags(too_many)],
        )
        .await,
    );
    kind(case, "too many tags", &e, "limit_exceeded");
    let e = err(
        case,
        g.append(
            &store,
            Append {
                parts: vec![],
                condition: None,
            },
        )
        .await,
    );
    kind(case, "no parts", &e, "invalid_argument");
    same(
        case,
        "nothing was written",
        ok(case, g.get_version(&store, &s).await),
        None,
    );
}

async fn a_condition_without_after_covers_the_whole_log(g: &dyn Gater) {
    let case = "a_condition_without_after_covers_the_whole_log";
    let store = new_store(g, case).await;
    // The uniqueness pattern: claim a username unless someone holds it.
    let claim = |user: &str, n: usize| {
        let tag = format!("username:{user}");
        Append::single(
            stream(&format!("user-{n}")),
            ExpectedVersion::NoStream,
            vec![tagged("UsernameClaimed", n, &[tag.as_str()])],
        )
        .with_condition(condition(query(vec![item(&[], &[tag.as_str()])]), None))
    };
    ok(case, g.append(&store, claim("ada", 1)).await);
    ok(case, g.append(&store, claim("bob", 2)).await);
    let e = err(case, g.append(&store, claim("ada", 3)).await);
    same(
        case,
        "the failure names the first match",
        e,
        Error::AppendConditionFailed {
            position: Position(0),
        },
    );
    same(
        case,
        "nothing was written",
        ok(case, g.get_version(&store, &stream("user-3")).await),
        None,
    );
}

async fn a_condition_with_after_covers_only_later_events(g: &dyn Gater) {
    let case = "a_condition_with_after_covers_only_later_events";
    let store = new_store(g, case).await;
    let s = stream("course-7");
    let course = |n| tagged("StudentSubscribed", n, &["course:7"]);
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, vec![course(0), course(1)])
            .await,
    );
    let q = query(vec![item(&["StudentSubscribed"], &["course:7"])]);
    // Decided on what was read up to position 1: nothing since.
    let fresh = Append::single(s.clone(), ExpectedVersion::Any, vec![course(2)])
        .with_condition(condition(q.clone(), Some(1)));
    let outcome = ok(case, g.append(&store, fresh).await);
    same(case, "position", outcome.position, Position(2));
    // Decided on a stale read (up to position 1): position 2 now matches.
    let stale = Append::single(s.clone(), ExpectedVersion::Any, vec![course(3)])
        .with_condition(condition(q.clone(), Some(1)));
    let e = err(case, g.append(&store, stale).await);
    same(
        case,
        "stale decision",
        e,
        Error::AppendConditionFailed {
            position: Position(2),
        },
    );
    let other = query(vec![item(&["StudentSubscribed"], &["course:8"])]);
    let unrelated = Append::single(s, ExpectedVersion::Any, vec![course(4)])
        .with_condition(condition(other, Some(0)));
    ok(case, g.append(&store, unrelated).await);
}

async fn of_racing_conditional_appends_exactly_one_wins_per_window(g: &dyn Gater) {
    let case = "of_racing_conditional_appends_exactly_one_wins_per_window";
    let store = new_store(g, case).await;
    let q = query(vec![item(&[], &["seat:1"])]);
    for window in 0..3u64 {
        // Every client read the log up to the same head and decides on it.
        let head = ok(
            case,
            g.read_all(&store, Position::END, 1, Direction::Backward)
                .await,
        )
        .first()
        .map(|e| e.position.0);
        let attempts = (0..RACERS).map(|client| {
            let append = Append::single(
                stream(&format!("client-{client}")),
                ExpectedVersion::Any,
                vec![tagged("SeatBooked", client, &["seat:1"])],
            )
            .with_condition(condition(q.clone(), head));
            g.append(&store, append)
        });
        let results = join_all(attempts).await;
        let wins = results.iter().filter(|r| r.is_ok()).count();
        same(case, &format!("winners in window {window}"), wins, 1);
        for result in results.iter().filter_map(|r| r.as_ref().err()) {
            kind(case, "losers", result, "append_condition_failed");
        }
    }
    let all = read_query(g, &store, &q, Direction::Forward, case).await;
    same(case, "one event per window", all.len(), 3);
}

async fn a_multi_part_append_is_all_or_nothing(g: &dyn Gater) {
    let case = "a_multi_part_append_is_all_or_nothing";
    let store = new_store(g, case).await;
    ok(
        case,
        g.append_events(
            &store,
            &stream("b"),
            ExpectedVersion::Any,
            vec![event("B", 0)],
        )
        .await,
    );
    let failing = Append {
        parts: vec![
            part("a", ExpectedVersion::NoStream, vec![event("A", 0)]),
            part("b", ExpectedVersion::NoStream, vec![event("B", 1)]),
        ],
        condition: None,
    };
    let e = err(case, g.append(&store, failing).await);
    match &e {
        Error::WrongExpectedVersion {
            stream: s, current, ..
        } => {
            same(case, "the failing stream", s.as_str(), "b");
            same(case, "its version", *current, Some(0));
        }
        other => panic!("{case}: expected wrong_expected_version, got {other:?}"),
    }
    let log = ok(
        case,
        g.read_all(&store, Position::START, 10, Direction::Forward)
            .await,
    );
    same(case, "nothing of the append", log.len(), 1);
    let tagged_fail = Append {
        parts: vec![part(
            "a",
            ExpectedVersion::Any,
            vec![tagged("A", 1, &["k"])],
        )],
        condition: Some(condition(query(vec![item(&["B"], &[])]), None)),
    };
    let e = err(case, g.append(&store, tagged_fail).await);
    kind(
        case,
        "condition fails the whole append",
        &e,
        "append_condition_failed",
    );
    let good = Append {
        parts: vec![
            part(
                "c",
                ExpectedVersion::NoStream,
                vec![event("C", 0), event("C", 1)],
            ),
            part("b", ExpectedVersion::Exact(0), vec![event("B", 2)]),
        ],
        condition: None,
    };
    let outcome = ok(case, g.append(&store, good).await);
    same(case, "last position", outcome.position, Position(3));
    let versions: Vec<(String, u64)> = outcome
        .streams
        .iter()
        .map(|s| (s.stream.to_string(), s.version))
        .collect();
    same(
        case,
        "versions in part order",
        versions,
        vec![("c".to_owned(), 1), ("b".to_owned(), 1)],
    );
    let log = ok(
        case,
        g.read_all(&store, Position(1), 10, Direction::Forward)
            .await,
    );
    let order: Vec<String> = log.iter().map(|e| e.stream.to_string()).collect();
    same(
        case,
        "contiguous in part order",
        order,
        vec!["c".to_owned(), "c".to_owned(), "b".to_owned()],
    );
}

async fn a_multi_part_append_retried_answers_its_first_outcome(g: &dyn Gater) {
    let case = "a_multi_part_append_retried_answers_its_first_outcome";
    let store = new_store(g, case).await;
    let append = Append {
        parts: vec![
            part("a", ExpectedVersion::NoStream, vec![tagged("A", 0, &["k"])]),
            part("b", ExpectedVersion::NoStream, vec![event("B", 0)]),
        ],
        condition: Some(condition(query(vec![item(&[], &["k"])]), None)),
    };
    let first = ok(case, g.append(&store, append.clone()).await);
    let again = ok(case, g.append(&store, append).await);
    same(case, "the original outcome", again, first);
    let log = ok(
        case,
        g.read_all(&store, Position::START, 10, Direction::Forward)
            .await,
    );
    same(case, "written once", log.len(), 2);
}

async fn query_subscriptions_catch_up_then_go_live_without_gaps(g: &dyn Gater) {
    let case = "query_subscriptions_catch_up_then_go_live_without_gaps";
    let store = new_store(g, case).await;
    let s = stream("course-7");
    let mixed = |base: usize| {
        vec![
            tagged("StudentSubscribed", base, &["course:7"]),
            tagged("StudentSubscribed", base + 1, &["course:8"]),
            tagged("CourseDefined", base + 2, &["course:7"]),
        ]
    };
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, mixed(0))
            .await,
    );
    let q = query(vec![item(&["StudentSubscribed"], &["course:7"])]);
    check(case, "the query is valid", q.validate().is_ok());
    let key = transient(SubscriptionType::ByQuery, &q.to_json());
    let mut sub = subscribe(g, &store, key, 10, case).await;
    let first = next_delivery(&mut sub, case).await;
    same(case, "catch-up", first.event.position, Position(0));
    same(
        case,
        "caught up",
        next_item(&mut sub, case).await,
        SubscriptionItem::CaughtUp,
    );
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, mixed(3))
            .await,
    );
    let live = next_delivery(&mut sub, case).await;
    same(case, "live", live.event.position, Position(3));
}

async fn a_persistent_query_subscription_resumes_after_its_checkpoint(g: &dyn Gater) {
    let case = "a_persistent_query_subscription_resumes_after_its_checkpoint";
    let store = new_store(g, case).await;
    let s = stream("course-9");
    let enrol = |n| tagged("StudentSubscribed", n, &["course:9"]);
    ok(
        case,
        g.append_events(
            &store,
            &s,
            ExpectedVersion::Any,
            vec![enrol(0), tagged("Other", 1, &["course:9"]), enrol(2)],
        )
        .await,
    );
    let q = query(vec![item(&["StudentSubscribed"], &["course:9"])]);
    let key = SubscriptionKey::new(SubscriptionType::ByQuery, q.to_json(), "enrolments")
        .unwrap_or_else(|e| panic!("{case}: key: {e}"));
    ok(
        case,
        g.save_subscription(&store, SubscriptionSpec::new(key.clone()))
            .await,
    );
    let mut sub = subscribe(g, &store, key.clone(), 10, case).await;
    let first = next_delivery(&mut sub, case).await;
    same(case, "first match", first.event.position, Position(0));
    ok(
        case,
        g.ack_event(&store, &key, sub.consumer(), first.event.position)
            .await,
    );
    let second = next_delivery(&mut sub, case).await;
    same(case, "second match", second.event.position, Position(2));
    ok(
        case,
        g.ack_event(&store, &key, sub.consumer(), second.event.position)
            .await,
    );
    drop(sub);
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, vec![enrol(3)])
            .await,
    );
    let mut again = subscribe(g, &store, key, 10, case).await;
    let resumed = next_delivery(&mut again, case).await;
    same(
        case,
        "resumed after the checkpoint",
        resumed.event.position,
        Position(3),
    );
}
