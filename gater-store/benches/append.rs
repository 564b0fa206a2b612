//! Append and read throughput of the embedded store.
//!
//! Appends: 64 concurrent appenders, one 256-byte event per append, expected
//! version `Any`, spread over 1,000 streams, fsync on; group commit on and
//! off side by side. Reads: 100-event pages from a warm store, of the global
//! log and of single streams.
//!
//! `cargo bench -p gater-store`; `BENCH_SECONDS` sets each measurement's
//! length (default 3), `BENCH_ONLY=append` or `BENCH_ONLY=read` runs one half.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gater_core::{
    Direction, EventData, EventId, ExpectedVersion, Gater, Position, StoreConfig, StoreId, StreamId,
};
use gater_store::{Store, StoreOptions};

/// Concurrent appenders.
const APPENDERS: usize = 64;
/// Streams the appends are spread over.
const STREAMS: u64 = 1_000;
/// Bytes of each event's data.
const EVENT_BYTES: usize = 256;
/// Events per read page.
const PAGE: u32 = 100;
/// Events written before the read measurement.
const WARM_EVENTS: u64 = 200_000;
/// Concurrent readers.
const READERS: usize = 4;

fn main() {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    runtime.block_on(async {
        if only.is_empty() || only == "append" || only == "grouped" {
            let flush_us = flush_latency_us();
            println!("raw fdatasync of 24 KiB, now      : {flush_us:>12.0} us");
            let grouped = append_rate(true, duration).await;
            println!("append, fsync on, group commit on : {grouped:>12.0} events/s");
            if only == "grouped" {
                return;
            }
            let single = append_rate(false, duration).await;
            println!("append, fsync on, group commit off: {single:>12.0} events/s");
            println!(
                "group commit speed-up             : {:>12.1}x",
                grouped / single
            );
        }
        if only.is_empty() || only == "read" {
            let (log, stream) = read_rates(duration).await;
            println!("read_all, 100-event pages         : {log:>12.0} events/s");
            println!("get_events, 100-event pages       : {stream:>12.0} events/s");
        }
    });
}

/// Microseconds one `fdatasync` of a 24 KiB append takes on the disk the
/// stores use: every acknowledged append waits for at least one, so this
/// bounds what any number of appenders can reach.
fn flush_latency_us() -> f64 {
    use std::io::Write;
    const ROUNDS: u32 = 200;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut file = std::fs::File::create(dir.path().join("probe")).expect("probe file");
    let chunk = vec![b'x'; 24 * 1024];
    let start = Instant::now();
    for _ in 0..ROUNDS {
        file.write_all(&chunk).expect("probe write");
        file.sync_data().expect("probe fdatasync");
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
}

async fn open(config: StoreConfig) -> (tempfile::TempDir, Store, StoreId) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(StoreOptions::new(dir.path()))
        .await
        .expect("open store");
    let id = StoreId::new("bench").expect("store id");
    store.create_store(&id, config).await.expect("create store");
    (dir, store, id)
}

fn event(n: u64) -> EventData {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8] = 0xbe;
    EventData {
        id: EventId::from_bytes(id),
        event_type: "BenchEvent".to_owned(),
        data: vec![b'x'; EVENT_BYTES],
        metadata: Vec::new(),
        content_type: "application/octet-stream".to_owned(),
        tags: Vec::new(),
    }
}

fn stream(n: u64) -> StreamId {
    StreamId::new(format!("stream-{}", n % STREAMS)).expect("stream id")
}

/// Acknowledged events per second with `APPENDERS` appenders running for `duration`.
async fn append_rate(group_commit: bool, duration: Duration) -> f64 {
    let (_dir, store, id) = open(StoreConfig {
        fsync: true,
        group_commit,
        retention: gater_core::Retention::NONE,
    })
    .await;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..APPENDERS)
        .map(|_| {
            let (store, id, next, done) = (store.clone(), id.clone(), next.clone(), done.clone());
            tokio::spawn(async move {
                let mut acked = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let events = vec![event(n)];
                    store
                        .append_events(&id, &stream(n), ExpectedVersion::Any, events)
                        .await
                        .expect("append");
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for task in tasks {
        acked += task.await.expect("appender");
    }
    let rate = acked as f64 / start.elapsed().as_secs_f64();
    store.shutdown().await;
    rate
}

/// Events per second read in 100-event pages: (global log, single streams).
async fn read_rates(duration: Duration) -> (f64, f64) {
    let (_dir, store, id) = open(StoreConfig {
        fsync: false,
        group_commit: true,
        retention: gater_core::Retention::NONE,
    })
    .await;
    // One stream per 1,000 events, written in 100-event appends.
    for batch in 0..WARM_EVENTS / 100 {
        let events = (0..100).map(|i| event(batch * 100 + i)).collect();
        let s = StreamId::new(format!("warm-{}", batch / 10)).expect("stream id");
        store
            .append_events(&id, &s, ExpectedVersion::Any, events)
            .await
            .expect("warm-up append");
    }
    let log = read_rate(&store, &id, duration, |store, id, n| async move {
        let from = Position((n * 7919 % (WARM_EVENTS / 100)) * 100);
        store.read_all(&id, from, PAGE, Direction::Forward).await
    })
    .await;
    let streams = read_rate(&store, &id, duration, |store, id, n| async move {
        let s = StreamId::new(format!("warm-{}", n * 31 % (WARM_EVENTS / 1000))).expect("id");
        let start = (n % 10) * 100;
        store
            .get_events(&id, &s, start, PAGE, Direction::Forward)
            .await
    })
    .await;
    store.shutdown().await;
    (log, streams)
}

async fn read_rate<F, Fut>(store: &Store, id: &StoreId, duration: Duration, read: F) -> f64
where
    F: Fn(Store, StoreId, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<gater_core::RecordedEvent>, gater_core::Error>>
        + Send,
{
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..READERS)
        .map(|r| {
            let (store, id, done, read) = (store.clone(), id.clone(), done.clone(), read.clone());
            tokio::spawn(async move {
                let mut events = 0u64;
                let mut n = r as u64;
                while !done.load(Ordering::Relaxed) {
                    let page = read(store.clone(), id.clone(), n).await.expect("read");
                    assert_eq!(page.len(), PAGE as usize, "a warm page is full");
                    events += page.len() as u64;
                    n += READERS as u64;
                }
                events
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    let mut events = 0;
    for task in tasks {
        events += task.await.expect("reader");
    }
    events as f64 / start.elapsed().as_secs_f64()
}
