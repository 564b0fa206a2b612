//! Read-path benchmarks over the embedded store, in-process, in the shapes
//! of `gater bench`'s read cases (its `embedded` target is this `Store`):
//!
//! - `page-forward` / `page-backward` (W4): 16 readers, each reading 100-event
//!   pages of a random stream of 100 streams of 1,000 events (256 B data,
//!   100 B metadata) from a random version (target: 1,000,000 events/s each);
//! - `tags` (W8): one reader reading all ten events of a random tag of
//!   100,000 (target: 200,000 events/s); as in the suite, the store is
//!   compacted once filled (its memtables flushed, its tables merged);
//! - `catch-up` (W5): replay of 200,000 events through a transient `$all`
//!   subscription (target: 500,000 events/s);
//! - `query-catch-up`: a transient `ByQuery` subscription of one tag of the
//!   `tags` store catching up (ten events among 1,000,000).
//!
//! Run with `cargo bench -p gater-store --bench reads`; `GATER_BENCH_CASES`
//! (comma-separated names) picks cases, `GATER_BENCH_SECONDS` sets the
//! measured time of the closed-loop cases, `GATER_BENCH_SETTLE_SECONDS` a
//! pause after each fill (to measure with fjall's flushes and compactions
//! done; `gater bench` measures right after its fill). A steady loop to profile:
//! `perf record -g target/release/deps/reads-* --bench` with one case.
//!
//! Instruction counts of the `tags` case: `GATER_BENCH_DIR` keeps the data
//! in that directory (the tag store is filled on the first run only) and
//! `GATER_BENCH_QUERIES` makes the case read that many random tags instead
//! of a timed loop, so a run under
//! `valgrind --tool=callgrind --toggle-collect='*StoreInner::read_query*'`
//! counts the instructions of that many queries and nothing else.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gater_core::{
    Direction, EventData, EventId, ExpectedVersion, Gater, Position, Query, Rng, StoreConfig,
    StoreId, StreamId, SubscribeOptions, SubscriptionItem, SubscriptionKey, SubscriptionType,
    TRANSIENT,
};
use gater_store::{Store, StoreOptions};

/// Streams of the page-read store.
const READ_STREAMS: u64 = 100;
/// Events per stream of the page-read store.
const READ_STREAM_LEN: u64 = 1_000;
/// Events per page read.
const PAGE_LEN: u64 = 100;
/// Concurrent page readers.
const PAGE_READERS: u64 = 16;
/// Tags of the tag-read store, each on [`EVENTS_PER_TAG`] events.
const TAGS: u64 = 100_000;
/// Events carrying each tag.
const EVENTS_PER_TAG: u64 = 10;
/// Tags whose events one fill append holds, interleaved.
const FILL_TAGS_PER_APPEND: u64 = 100;
/// Events replayed by the catch-up case.
const CATCH_UP_EVENTS: u64 = 200_000;
/// Events per append while filling the catch-up store.
const FILL_BATCH: u64 = 1_000;
/// Measured seconds of each closed-loop case unless `GATER_BENCH_SECONDS` says otherwise.
const SECONDS_DEFAULT: f64 = 3.0;
/// Warm-up before each closed-loop case.
const WARMUP: Duration = Duration::from_millis(500);
/// Every case, in the order they run.
const CASES: [&str; 5] = [
    "page-forward",
    "page-backward",
    "catch-up",
    "tags",
    "query-catch-up",
];

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let chosen: Vec<String> = match std::env::var("GATER_BENCH_CASES") {
        Ok(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
        Err(_) => CASES.iter().map(|s| (*s).to_owned()).collect(),
    };
    let wants = |case: &str| chosen.iter().any(|c| c == case);
    let seconds = std::env::var("GATER_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SECONDS_DEFAULT);
    let measure = Duration::from_secs_f64(seconds);
    let settle = std::env::var("GATER_BENCH_SETTLE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_secs_f64);
    let queries = std::env::var("GATER_BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok());
    runtime.block_on(async {
        let temporary = tempfile::tempdir().expect("a temporary directory");
        let dir = std::env::var_os("GATER_BENCH_DIR")
            .map_or_else(|| temporary.path().to_owned(), std::path::PathBuf::from);
        let store = Store::open(StoreOptions::new(&dir))
            .await
            .expect("the store opens");
        if wants("page-forward") || wants("page-backward") {
            let id = page_store(&store).await;
            tokio::time::sleep(settle).await;
            for (case, direction) in [
                ("page-forward", Direction::Forward),
                ("page-backward", Direction::Backward),
            ] {
                if wants(case) {
                    let rate = pages(&store, &id, direction, measure).await;
                    println!("reads/{case}: {rate:.0} events/s (target >= 1000000)");
                }
            }
        }
        if wants("catch-up") {
            let rate = catch_up(&store).await;
            println!("reads/catch-up: {rate:.0} events/s (target >= 500000)");
        }
        if wants("tags") || wants("query-catch-up") {
            let id = tag_store(&store).await;
            tokio::time::sleep(settle).await;
            if let (true, Some(queries)) = (wants("tags"), queries) {
                let read = counted_tags(&store, &id, queries).await;
                println!("reads/tags: {queries} queries read {read} events");
            } else if wants("tags") {
                let rate = tags(&store, &id, measure).await;
                println!("reads/tags: {rate:.0} events/s (target >= 200000)");
            }
            if wants("query-catch-up") {
                let elapsed = query_catch_up(&store, &id).await;
                println!(
                    "reads/query-catch-up: {EVENTS_PER_TAG} events of {} in {:.3} ms",
                    TAGS * EVENTS_PER_TAG,
                    elapsed.as_secs_f64() * 1_000.0
                );
            }
        }
        store.shutdown().await;
    });
}

async fn new_store(gater: &Store, name: &str) -> StoreId {
    let store = StoreId::new(name).expect("a valid store id");
    let config = StoreConfig {
        fsync: false,
        group_commit: true,
        retention: gater_core::Retention::NONE,
    };
    gater
        .create_store(&store, config)
        .await
        .expect("the store is created");
    store
}

fn event(n: u64) -> EventData {
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    EventData {
        id: EventId::from_random_bytes(bytes),
        event_type: "BenchEvent".to_owned(),
        data: vec![b'd'; 256],
        metadata: vec![b'm'; 100],
        content_type: "application/octet-stream".to_owned(),
        tags: Vec::new(),
    }
}

fn stream(i: u64) -> StreamId {
    StreamId::new(format!("stream-{i}")).expect("a valid stream id")
}

fn tag_query(i: u64) -> Query {
    Query::item(Vec::new(), vec![format!("tag-{i}")])
}

/// Appends `events` to `stream` in one append.
async fn append(gater: &Store, store: &StoreId, stream: &StreamId, events: Vec<EventData>) {
    gater
        .append_events(store, stream, ExpectedVersion::Any, events)
        .await
        .expect("the fill append succeeds");
}

async fn page_store(gater: &Store) -> StoreId {
    let store = new_store(gater, "bench-pages").await;
    let mut n = 0;
    for s in 0..READ_STREAMS {
        let events = (n..n + READ_STREAM_LEN).map(event).collect();
        append(gater, &store, &stream(s), events).await;
        n += READ_STREAM_LEN;
    }
    store
}

/// Runs `clients` closed loops of `op` for the warm-up and then `measure`;
/// events per second over the measured part.
async fn closed_loop<F, Fut>(clients: u64, measure: Duration, op: F) -> f64
where
    F: Fn(u64, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (counting, stop, events, op) =
            (counting.clone(), stop.clone(), events.clone(), op.clone());
        tasks.spawn(async move {
            let mut rng = Rng::from_seed(client + 1);
            while !stop.load(Ordering::Relaxed) {
                let read = op(client, rng.next_u64()).await;
                if counting.load(Ordering::Relaxed) {
                    events.fetch_add(read, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::time::sleep(WARMUP).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    events.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

async fn pages(gater: &Store, store: &StoreId, direction: Direction, measure: Duration) -> f64 {
    let (gater, store) = (gater.clone(), store.clone());
    closed_loop(PAGE_READERS, measure, move |_, random| {
        let (gater, store) = (gater.clone(), store.clone());
        async move {
            let s = stream(random % READ_STREAMS);
            let offset = (random >> 32) % (READ_STREAM_LEN - PAGE_LEN + 1);
            let start = match direction {
                Direction::Forward => offset,
                Direction::Backward => offset + PAGE_LEN - 1,
            };
            let page = gater
                .get_events(&store, &s, start, PAGE_LEN as u32, direction)
                .await
                .expect("the page read succeeds");
            page.len() as u64
        }
    })
    .await
}

async fn catch_up(gater: &Store) -> f64 {
    let store = new_store(gater, "bench-catch-up").await;
    let streams = READ_STREAMS;
    let mut n = 0;
    while n < CATCH_UP_EVENTS {
        let batch = FILL_BATCH.min(CATCH_UP_EVENTS - n);
        let events = (n..n + batch).map(event).collect();
        append(gater, &store, &stream(n / FILL_BATCH % streams), events).await;
        n += batch;
    }
    let options = SubscribeOptions {
        window: 10_000,
        start_from: Some(Position::START),
    };
    let started = Instant::now();
    let mut sub = gater
        .subscribe(&store, SubscriptionKey::stream(&StreamId::all()), options)
        .await
        .expect("subscribe");
    let mut received = 0;
    while received < CATCH_UP_EVENTS {
        match sub.next().await {
            Some(SubscriptionItem::Event(_)) => received += 1,
            Some(SubscriptionItem::CaughtUp) => {}
            other => panic!("catch-up ended early: {other:?}"),
        }
    }
    received as f64 / started.elapsed().as_secs_f64()
}

async fn tag_store(gater: &Store) -> StoreId {
    let store = new_store(gater, "bench-tags").await;
    let status = gater
        .get_store_status(&store)
        .await
        .expect("the store has a status");
    if status.event_count == TAGS * EVENTS_PER_TAG {
        // Filled by an earlier run in `GATER_BENCH_DIR`.
        return store;
    }
    let s = stream(0);
    let mut n = 0;
    let mut first = 0;
    while first < TAGS {
        let last = (first + FILL_TAGS_PER_APPEND).min(TAGS);
        let events = (0..EVENTS_PER_TAG)
            .flat_map(|_| first..last)
            .map(|i| {
                n += 1;
                event(n).with_tags(vec![format!("tag-{i}")])
            })
            .collect();
        append(gater, &store, &s, events).await;
        first = last;
    }
    gater
        .compact_store(&store)
        .await
        .expect("the filled store compacts");
    store
}

async fn tags(gater: &Store, store: &StoreId, measure: Duration) -> f64 {
    let (gater, store) = (gater.clone(), store.clone());
    closed_loop(1, measure, move |_, random| {
        let (gater, store) = (gater.clone(), store.clone());
        async move {
            let events = gater
                .read_query(
                    &store,
                    &tag_query(random % TAGS),
                    Position::START,
                    EVENTS_PER_TAG as u32,
                    Direction::Forward,
                )
                .await
                .expect("the tag read succeeds");
            events.len() as u64
        }
    })
    .await
}

/// Reads every event of `queries` random tags, one after another; the
/// events read.
async fn counted_tags(gater: &Store, store: &StoreId, queries: u64) -> u64 {
    let mut rng = Rng::from_seed(1);
    let mut read = 0;
    for _ in 0..queries {
        let events = gater
            .read_query(
                store,
                &tag_query(rng.next_u64() % TAGS),
                Position::START,
                EVENTS_PER_TAG as u32,
                Direction::Forward,
            )
            .await
            .expect("the tag read succeeds");
        read += events.len() as u64;
    }
    read
}

/// How long a `ByQuery` subscription of one tag takes to catch up.
async fn query_catch_up(gater: &Store, store: &StoreId) -> Duration {
    let selector = format!(r#"{{"items":[{{"tags":["tag-{}"]}}]}}"#, TAGS / 2);
    let key = SubscriptionKey::new(SubscriptionType::ByQuery, selector, TRANSIENT)
        .expect("a valid query subscription");
    let options = SubscribeOptions {
        window: 10_000,
        start_from: Some(Position::START),
    };
    let started = Instant::now();
    let mut sub = gater
        .subscribe(store, key, options)
        .await
        .expect("subscribe");
    let mut received = 0;
    loop {
        match sub.next().await {
            Some(SubscriptionItem::Event(_)) => received += 1,
            Some(SubscriptionItem::CaughtUp) => break,
            other => panic!("catch-up ended early: {other:?}"),
        }
    }
    assert_eq!(received, EVENTS_PER_TAG, "every event of the tag");
    started.elapsed()
}
