//! Conformance cases for appends and reads: expected versions, atomicity,
//! idempotency, stream and global-log reads, stream listing, invalid input
//! and concurrent appenders.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;
use gater_core::{
    AppendResult, Direction, Error, ExpectedVersion, Gater, Limits, Position, Resource, StoreId,
    StreamId,
};

use super::support::{check, err, event, events, kind, new_store, ok, same, stream};

/// Runs every stream case against `gater`.
pub async fn run(gater: &dyn Gater) {
    append_assigns_consecutive_versions_and_positions(gater).await;
    expected_versions_are_enforced(gater).await;
    failing_append_writes_nothing(gater).await;
    retried_append_returns_the_original_result(gater).await;
    duplicate_event_ids_are_refused(gater).await;
    stream_reads_clip_in_both_directions(gater).await;
    read_all_is_gapless_in_commit_order(gater).await;
    get_streams_pages_in_id_order(gater).await;
    invalid_appends_and_reads_are_refused(gater).await;
    concurrent_exact_appenders_have_one_winner_per_version(gater).await;
    concurrent_any_appenders_get_gapless_positions(gater).await;
}

async fn append_assigns_consecutive_versions_and_positions(g: &dyn Gater) {
    let case = "append_assigns_consecutive_versions_and_positions";
    let store = new_store(g, case).await;
    let (a, b) = (stream("account-a"), stream("account-b"));
    same(
        case,
        "missing stream version",
        ok(case, g.get_version(&store, &a).await),
        None,
    );
    let sent = events(3);
    let first = ok(
        case,
        g.append_events(&store, &a, ExpectedVersion::Any, sent.clone())
            .await,
    );
    same(case, "first append", first, result(2, 2));
    let second = ok(
        case,
        g.append_events(&store, &b, ExpectedVersion::Any, events(2))
            .await,
    );
    same(case, "second stream", second, result(1, 4));
    let third = ok(
        case,
        g.append_events(&store, &a, ExpectedVersion::Any, events(1))
            .await,
    );
    same(case, "third append", third, result(3, 5));
    same(
        case,
        "version of a",
        ok(case, g.get_version(&store, &a).await),
        Some(3),
    );
    let read = ok(
        case,
        g.get_events(&store, &a, 0, 10, Direction::Forward).await,
    );
    same(case, "events read back", read.len(), 4);
    for (i, (recorded, original)) in read.iter().zip(&sent).enumerate() {
        same(case, "event data round trip", &recorded.data, original);
        same(case, "stream", &recorded.stream, &a);
        same(case, "version", recorded.version, i as u64);
        same(case, "position", recorded.position, Position(i as u64));
        check(case, "created_us is stamped", recorded.created_us > 0);
    }
}

async fn expected_versions_are_enforced(g: &dyn Gater) {
    let case = "expected_versions_are_enforced";
    let store = new_store(g, case).await;
    let s = stream("orders-1");
    use ExpectedVersion::*;
    for expected in [StreamExists, Exact(0)] {
        let e = err(case, g.append_events(&store, &s, expected, events(1)).await);
        same(case, "on a missing stream", e, wrong(expected, None));
    }
    ok(case, g.append_events(&store, &s, NoStream, events(2)).await);
    let e = err(case, g.append_events(&store, &s, NoStream, events(1)).await);
    same(
        case,
        "NoStream on an existing stream",
        e,
        wrong(NoStream, Some(1)),
    );
    for stale in [Exact(0), Exact(2), Exact(u64::MAX)] {
        let e = err(case, g.append_events(&store, &s, stale, events(1)).await);
        same(case, "stale exact version", e, wrong(stale, Some(1)));
    }
    let r = ok(case, g.append_events(&store, &s, Exact(1), events(1)).await);
    same(case, "exact version that holds", r.version, 2);
    let r = ok(
        case,
        g.append_events(&store, &s, StreamExists, events(1)).await,
    );
    same(case, "stream exists", r.version, 3);
    let r = ok(case, g.append_events(&store, &s, Any, events(1)).await);
    same(case, "any", r.version, 4);
    let other = stream("orders-2");
    let r = ok(case, g.append_events(&store, &other, Any, events(1)).await);
    same(case, "any on a missing stream", r.version, 0);
}

async fn failing_append_writes_nothing(g: &dyn Gater) {
    let case = "failing_append_writes_nothing";
    let store = new_store(g, case).await;
    let s = stream("cart-1");
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::NoStream, events(2))
            .await,
    );
    let refused = events(3);
    let e = err(
        case,
        g.append_events(&store, &s, ExpectedVersion::Exact(0), refused.clone())
            .await,
    );
    kind(case, "stale append", &e, "wrong_expected_version");
    same(
        case,
        "version unchanged",
        ok(case, g.get_version(&store, &s).await),
        Some(1),
    );
    let log = ok(
        case,
        g.read_all(&store, Position::START, 100, Direction::Forward)
            .await,
    );
    same(case, "global log unchanged", log.len(), 2);
    // The refused ids were not recorded: they append cleanly elsewhere.
    let r = ok(
        case,
        g.append_events(&store, &stream("cart-2"), ExpectedVersion::Any, refused)
            .await,
    );
    same(case, "refused ids append later", r, result(2, 4));
}

async fn retried_append_returns_the_original_result(g: &dyn Gater) {
    let case = "retried_append_returns_the_original_result";
    let store = new_store(g, case).await;
    let s = stream("payment-1");
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, events(1))
            .await,
    );
    let batch = events(3);
    let original = ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Exact(0), batch.clone())
            .await,
    );
    same(case, "original", original, result(3, 3));
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, events(1))
            .await,
    );
    for expected in [
        ExpectedVersion::Exact(0),
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
    ] {
        let again = ok(
            case,
            g.append_events(&store, &s, expected, batch.clone()).await,
        );
        same(case, "retry result", again, original);
    }
    same(
        case,
        "nothing written",
        ok(case, g.get_version(&store, &s).await),
        Some(4),
    );
    let log = ok(
        case,
        g.read_all(&store, Position::START, 100, Direction::Forward)
            .await,
    );
    same(case, "global log length", log.len(), 5);
}

async fn duplicate_event_ids_are_refused(g: &dyn Gater) {
    let case = "duplicate_event_ids_are_refused";
    let store = new_store(g, case).await;
    let (s, other) = (stream("ledger-1"), stream("ledger-2"));
    let stored = events(2);
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, stored.clone())
            .await,
    );
    let fresh = event("Fresh", 9);
    let attempts = [
        ("same ids in another stream", other.clone(), stored.clone()),
        (
            "stored ids in another order",
            s.clone(),
            vec![stored[1].clone(), stored[0].clone()],
        ),
        (
            "a new id before a stored one",
            s.clone(),
            vec![fresh.clone(), stored[0].clone()],
        ),
        (
            "stored ids then a new one",
            s.clone(),
            vec![stored[0].clone(), stored[1].clone(), fresh.clone()],
        ),
        (
            "the same id twice in one append",
            s.clone(),
            vec![fresh.clone(), fresh.clone()],
        ),
    ];
    for (what, target, batch) in attempts {
        let e = err(
            case,
            g.append_events(&store, &target, ExpectedVersion::Any, batch)
                .await,
        );
        kind(case, what, &e, "duplicate_event_id");
    }
    same(
        case,
        "stream unchanged",
        ok(case, g.get_version(&store, &s).await),
        Some(1),
    );
    same(
        case,
        "other stream not created",
        ok(case, g.get_version(&store, &other).await),
        None,
    );
    let log = ok(
        case,
        g.read_all(&store, Position::START, 100, Direction::Forward)
            .await,
    );
    same(case, "global log unchanged", log.len(), 2);
}

async fn stream_reads_clip_in_both_directions(g: &dyn Gater) {
    let case = "stream_reads_clip_in_both_directions";
    let store = new_store(g, case).await;
    let s = stream("sensor-7");
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, events(10))
            .await,
    );
    ok(
        case,
        g.append_events(
            &store,
            &stream("sensor-70"),
            ExpectedVersion::Any,
            events(2),
        )
        .await,
    );
    let cases: [(u64, u32, Direction, &[u64]); 9] = [
        (0, 3, Direction::Forward, &[0, 1, 2]),
        (3, 4, Direction::Forward, &[3, 4, 5, 6]),
        (8, 5, Direction::Forward, &[8, 9]),
        (10, 5, Direction::Forward, &[]),
        (5, 3, Direction::Backward, &[5, 4, 3]),
        (1, 5, Direction::Backward, &[1, 0]),
        (u64::MAX, 3, Direction::Backward, &[9, 8, 7]),
        (100, 2, Direction::Backward, &[9, 8]),
        (0, 100, Direction::Backward, &[0]),
    ];
    for (start, count, direction, expected) in cases {
        let read = ok(
            case,
            g.get_events(&store, &s, start, count, direction).await,
        );
        let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
        let what = format!("{direction:?} from {start}, count {count}");
        same(case, &what, versions.as_slice(), expected);
        check(
            case,
            "only the asked stream",
            read.iter().all(|e| e.stream == s),
        );
    }
    let missing = stream("sensor-missing");
    for direction in [Direction::Forward, Direction::Backward] {
        let read = ok(case, g.get_events(&store, &missing, 0, 10, direction).await);
        check(case, "a missing stream reads empty", read.is_empty());
    }
    for count in [0, u32::MAX] {
        let e = err(
            case,
            g.get_events(&store, &s, 0, count, Direction::Forward).await,
        );
        kind(case, "count out of range", &e, "invalid_argument");
        let e = err(
            case,
            g.read_all(&store, Position::START, count, Direction::Forward)
                .await,
        );
        kind(case, "read_all count out of range", &e, "invalid_argument");
    }
}

async fn read_all_is_gapless_in_commit_order(g: &dyn Gater) {
    let case = "read_all_is_gapless_in_commit_order";
    let store = new_store(g, case).await;
    let mut expected = Vec::new();
    for i in 0..12usize {
        let s = stream(&format!("mix-{}", i % 3));
        let batch = events(1 + i % 3);
        ok(
            case,
            g.append_events(&store, &s, ExpectedVersion::Any, batch.clone())
                .await,
        );
        expected.extend(batch.into_iter().map(|e| (s.clone(), e.id)));
    }
    let all = ok(
        case,
        g.read_all(&store, Position::START, 1000, Direction::Forward)
            .await,
    );
    same(case, "log length", all.len(), expected.len());
    for (i, (recorded, (s, id))) in all.iter().zip(&expected).enumerate() {
        same(case, "position", recorded.position, Position(i as u64));
        same(
            case,
            "commit order",
            (&recorded.stream, recorded.data.id),
            (s, *id),
        );
    }
    let mut paged = Vec::new();
    let mut from = Position::START;
    loop {
        let page = ok(case, g.read_all(&store, from, 5, Direction::Forward).await);
        let Some(last) = page.last() else { break };
        from = last.position.next();
        paged.extend(page.iter().map(|e| e.position));
    }
    let positions: Vec<Position> = all.iter().map(|e| e.position).collect();
    same(case, "resuming at last + 1", &paged, &positions);
    let back = ok(
        case,
        g.read_all(&store, Position::END, 1000, Direction::Backward)
            .await,
    );
    let mut reversed = positions.clone();
    reversed.reverse();
    let back_positions: Vec<Position> = back.iter().map(|e| e.position).collect();
    same(case, "backward from the end", back_positions, reversed);
    let mid = ok(
        case,
        g.read_all(&store, Position(10), 3, Direction::Backward)
            .await,
    );
    let mid: Vec<u64> = mid.iter().map(|e| e.position.0).collect();
    same(case, "backward from the middle", mid, vec![10, 9, 8]);
    let past = ok(
        case,
        g.read_all(&store, Position(1000), 3, Direction::Forward)
            .await,
    );
    check(case, "forward past the end reads empty", past.is_empty());
}

async fn get_streams_pages_in_id_order(g: &dyn Gater) {
    let case = "get_streams_pages_in_id_order";
    let store = new_store(g, case).await;
    let mut expected = BTreeMap::new();
    for i in [
        17usize, 3, 24, 0, 9, 12, 21, 5, 1, 8, 19, 2, 14, 23, 6, 11, 4, 22, 15, 7, 18, 10, 20, 13,
        16,
    ] {
        let s = stream(&format!("s-{i:02}"));
        let r = ok(
            case,
            g.append_events(&store, &s, ExpectedVersion::Any, events(1 + i % 2))
                .await,
        );
        expected.insert(s, r.version);
    }
    let mut seen = Vec::new();
    let mut after: Option<StreamId> = None;
    let mut pages = 0;
    loop {
        let page = ok(case, g.get_streams(&store, after.clone(), 10).await);
        pages += 1;
        check(
            case,
            "a page holds at most the limit",
            page.streams.len() <= 10,
        );
        seen.extend(page.streams.iter().map(|s| (s.stream.clone(), s.version)));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
        check(case, "pagination terminates", pages <= 3);
    }
    let expected: Vec<_> = expected.into_iter().collect();
    same(case, "every stream once, in id order", seen, expected);
    let page = ok(case, g.get_streams(&store, Some(stream("s-10x")), 2).await);
    let ids: Vec<&str> = page.streams.iter().map(|s| s.stream.as_str()).collect();
    same(
        case,
        "after an id that is not a stream",
        ids,
        vec!["s-11", "s-12"],
    );
    for limit in [0, u32::MAX] {
        let e = err(case, g.get_streams(&store, None, limit).await);
        kind(case, "limit out of range", &e, "invalid_argument");
    }
}

async fn invalid_appends_and_reads_are_refused(g: &dyn Gater) {
    let case = "invalid_appends_and_reads_are_refused";
    let store = new_store(g, case).await;
    let s = stream("strict-1");
    let limits = Limits::DEFAULT;
    let mut empty_type = events(1);
    empty_type[0].event_type.clear();
    let mut long_type = events(1);
    long_type[0].event_type = "t".repeat(257);
    let mut big = events(1);
    big[0].data = vec![b'x'; limits.event_bytes_max as usize + 1];
    let attempts = [
        ("no events", Vec::new(), "invalid_argument"),
        ("empty event type", empty_type, "invalid_argument"),
        ("event type over 256 bytes", long_type, "invalid_argument"),
        ("event over the size limit", big, "limit_exceeded"),
        (
            "too many events",
            events(limits.append_events_max as usize + 1),
            "limit_exceeded",
        ),
    ];
    for (what, batch, expected_kind) in attempts {
        let e = err(
            case,
            g.append_events(&store, &s, ExpectedVersion::Any, batch)
                .await,
        );
        kind(case, what, &e, expected_kind);
    }
    same(
        case,
        "nothing written",
        ok(case, g.get_version(&store, &s).await),
        None,
    );
    let status = ok(case, g.get_store_status(&store).await);
    same(case, "no events in the store", status.event_count, 0);
    let unknown = StoreId::new("conformance-no-such-store").unwrap_or_else(|_| unreachable!());
    let e = err(
        case,
        g.append_events(&unknown, &s, ExpectedVersion::Any, events(1))
            .await,
    );
    same(
        case,
        "unknown store",
        e,
        Error::not_found(Resource::Store, &unknown),
    );
    let e = err(
        case,
        g.get_events(&unknown, &s, 0, 1, Direction::Forward).await,
    );
    kind(case, "read of an unknown store", &e, "not_found");
    let e = err(case, g.get_version(&unknown, &s).await);
    kind(case, "version in an unknown store", &e, "not_found");
}

/// Appenders per concurrency case.
const APPENDERS: usize = 16;
/// Appends each appender makes.
const APPENDS_EACH: usize = 50;

async fn concurrent_exact_appenders_have_one_winner_per_version(g: &dyn Gater) {
    let case = "concurrent_exact_appenders_have_one_winner_per_version";
    let store = new_store(g, case).await;
    let s = stream("contended");
    let appender = |_: usize| {
        let (store, s) = (store.clone(), s.clone());
        async move {
            let mut wins = Vec::new();
            for _ in 0..APPENDS_EACH {
                let current = ok(case, g.get_version(&store, &s).await);
                let expected = current.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let sent = events(1);
                match g.append_events(&store, &s, expected, sent.clone()).await {
                    Ok(r) => wins.push((expected, r, sent[0].id)),
                    Err(e) => kind(case, "a losing append", &e, "wrong_expected_version"),
                }
            }
            wins
        }
    };
    let wins: Vec<_> = join_all((0..APPENDERS).map(appender))
        .await
        .into_iter()
        .flatten()
        .collect();
    check(case, "somebody won", !wins.is_empty());
    let mut versions = BTreeSet::new();
    for (expected, r, _) in &wins {
        let wanted = match expected {
            ExpectedVersion::Exact(v) => v + 1,
            _ => 0,
        };
        same(
            case,
            "a winner's version follows its expected one",
            r.version,
            wanted,
        );
        check(
            case,
            "one winner per expected version",
            versions.insert(r.version),
        );
    }
    let dense: BTreeSet<u64> = (0..wins.len() as u64).collect();
    same(case, "versions are dense", versions, dense);
    let stored = ok(
        case,
        g.get_events(&store, &s, 0, 10_000, Direction::Forward)
            .await,
    );
    same(case, "stream length", stored.len(), wins.len());
    for (_, r, id) in &wins {
        same(
            case,
            "no overwrite",
            stored[r.version as usize].data.id,
            *id,
        );
    }
}

async fn concurrent_any_appenders_get_gapless_positions(g: &dyn Gater) {
    let case = "concurrent_any_appenders_get_gapless_positions";
    let store = new_store(g, case).await;
    let appender = |n: usize| {
        let store = store.clone();
        async move {
            let s = stream(&format!("busy-{}", n % 4));
            let mut results = Vec::new();
            for _ in 0..APPENDS_EACH {
                let r = g
                    .append_events(&store, &s, ExpectedVersion::Any, events(1))
                    .await;
                results.push(ok(case, r));
            }
            results
        }
    };
    let results: Vec<AppendResult> = join_all((0..APPENDERS).map(appender))
        .await
        .into_iter()
        .flatten()
        .collect();
    let positions: BTreeSet<u64> = results.iter().map(|r| r.position.0).collect();
    let total = (APPENDERS * APPENDS_EACH) as u64;
    same(
        case,
        "positions are unique and gapless",
        positions,
        (0..total).collect(),
    );
    let mut from = Position::START;
    let mut read = 0u64;
    loop {
        let page = ok(
            case,
            g.read_all(&store, from, 256, Direction::Forward).await,
        );
        let Some(last) = page.last() else { break };
        for (i, e) in page.iter().enumerate() {
            same(case, "log position", e.position.0, from.0 + i as u64);
        }
        read += page.len() as u64;
        from = last.position.next();
    }
    same(case, "log length", read, total);
    for n in 0..4 {
        let s = stream(&format!("busy-{n}"));
        let version = ok(case, g.get_version(&store, &s).await);
        same(
            case,
            "per-stream versions are dense",
            version,
            Some(total / 4 - 1),
        );
    }
}

fn result(version: u64, position: u64) -> AppendResult {
    AppendResult {
        version,
        position: Position(position),
    }
}

/// The error of an append to `orders-1`, the stream the expectation cases use.
fn wrong(expected: ExpectedVersion, current: Option<u64>) -> Error {
    Error::WrongExpectedVersion {
        stream: stream("orders-1"),
        expected,
        current,
    }
}
