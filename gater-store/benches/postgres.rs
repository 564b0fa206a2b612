//! The PostgreSQL backend side by side with the embedded one, both with
//! fsync on and group commit, through the `Store` engine (no transport):
//!
//! - W1: 64 concurrent appenders, one 256-byte event (random id) per append, expected
//!   version `Any`, spread over 1,000 streams;
//! - W4: 100-event page reads of streams, 64 readers at once.
//!
//! PostgreSQL runs as a throwaway local server (`pg_harness`); without its
//! binaries the PostgreSQL half is skipped with a message. `BENCH_APPENDS`
//! (default 20,000) and `BENCH_READS` (default 5,000) set the sizes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gater_core::{Direction, EventData, ExpectedVersion, Gater, StoreConfig, StoreId, StreamId};
use gater_store::{PostgresOptions, Store, StoreOptions};
use gater_testkit::pg_harness::PgServer;

const APPENDERS: usize = 64;
const READERS: usize = 64;
const EVENT_BYTES: usize = 256;
const W1_STREAMS: usize = 1_000;
const PAGE: u32 = 100;
/// Streams the reads page through, each holding a few pages.
const W4_STREAMS: usize = 50;
const W4_EVENTS_PER_STREAM: usize = 400;

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

#[tokio::main]
async fn main() {
    let appends = env_count("BENCH_APPENDS", 20_000);
    let reads = env_count("BENCH_READS", 5_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let embedded = Arc::new(
        Store::open(StoreOptions::new(dir.path()))
            .await
            .expect("open the embedded store"),
    );
    let embedded_figures = run(&embedded, appends, reads).await;
    embedded.shutdown().await;

    let server = match PgServer::start() {
        Ok(server) => server,
        Err(error) => panic!("the throwaway PostgreSQL server did not start: {error}"),
    };
    let postgres_figures = match &server {
        Some(server) => {
            let store = Arc::new(
                Store::open_postgres(
                    StoreOptions::new(dir.path()),
                    PostgresOptions::new(server.url()),
                )
                .await
                .expect("open the PostgreSQL store"),
            );
            let figures = run(&store, appends, reads).await;
            store.shutdown().await;
            Some(figures)
        }
        None => {
            println!("postgres: skipped, no PostgreSQL binaries (initdb, pg_ctl) on this machine");
            None
        }
    };

    println!("workload                                   backend     rate          p50       p99");
    for (name, figures) in [
        ("embedded", Some(embedded_figures)),
        ("postgres", postgres_figures),
    ] {
        let Some((w1, w4)) = figures else {
            continue;
        };
        print_line(
            "W1 append x64, 1 event of 256 B, Any",
            name,
            &w1,
            "events/s",
        );
        print_line(
            "W4 page reads x64, 100 events per page",
            name,
            &w4,
            "events/s",
        );
    }
}

fn print_line(workload: &str, backend: &str, figures: &Figures, unit: &str) {
    println!(
        "{workload:<42} {backend:<10} {:>9.0} {unit}  {:>7.2?}  {:>7.2?}",
        figures.rate, figures.p50, figures.p99
    );
}

async fn run(store: &Arc<Store>, appends: usize, reads: usize) -> (Figures, Figures) {
    let id = StoreId::new("bench").expect("valid store id");
    store
        .create_store(
            &id,
            StoreConfig {
                fsync: true,
                group_commit: true,
                retention: gater_core::Retention::NONE,
            },
        )
        .await
        .expect("create the bench store");
    let w1 = appends_w1(store, &id, appends).await;
    fill_w4(store, &id).await;
    let w4 = reads_w4(store, &id, reads).await;
    (w1, w4)
}

async fn appends_w1(store: &Arc<Store>, id: &StoreId, appends: usize) -> Figures {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(APPENDERS);
    for appender in 0..APPENDERS {
        let (store, id) = (Arc::clone(store), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(appends / APPENDERS + 1);
            let mut n = appender;
            while n < appends {
                let stream = stream(&format!("w1-{}", n % W1_STREAMS));
                let begun = Instant::now();
                store
                    .append_events(&id, &stream, ExpectedVersion::Any, vec![event(n)])
                    .await
                    .expect("append");
                latencies.push(begun.elapsed());
                n += APPENDERS;
            }
            latencies
        }));
    }
    figures(tasks, started, 1).await
}

async fn fill_w4(store: &Arc<Store>, id: &StoreId) {
    for s in 0..W4_STREAMS {
        let stream = stream(&format!("w4-{s}"));
        for chunk in 0..W4_EVENTS_PER_STREAM / PAGE as usize {
            let batch = (0..PAGE as usize)
                .map(|i| event(chunk * PAGE as usize + i))
                .collect();
            store
                .append_events(id, &stream, ExpectedVersion::Any, batch)
                .await
                .expect("fill a stream for the reads");
        }
    }
}

async fn reads_w4(store: &Arc<Store>, id: &StoreId, reads: usize) -> Figures {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(READERS);
    for reader in 0..READERS {
        let (store, id) = (Arc::clone(store), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(reads / READERS + 1);
            let mut n = reader;
            while n < reads {
                let stream = stream(&format!("w4-{}", n % W4_STREAMS));
                let pages = (W4_EVENTS_PER_STREAM / PAGE as usize) as u64;
                let start = (n as u64 % pages) * u64::from(PAGE);
                let begun = Instant::now();
                let page = store
                    .get_events(&id, &stream, start, PAGE, Direction::Forward)
                    .await
                    .expect("read a page");
                latencies.push(begun.elapsed());
                assert_eq!(page.len(), PAGE as usize, "a full page");
                n += READERS;
            }
            latencies
        }));
    }
    figures(tasks, started, PAGE as usize).await
}

async fn figures(
    tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
    started: Instant,
    events_per_call: usize,
) -> Figures {
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("bench task"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        rate: (latencies.len() * events_per_call) as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("valid stream id")
}

fn event(n: usize) -> EventData {
    let mut data = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
    data.resize(EVENT_BYTES - 2, b'x');
    data.extend_from_slice(b"\"}");
    EventData::json(
        // Random (version 4) ids, as clients send them and as the compare
        // suite's W1 does.
        gater_store::conformance::support::random_event_id(),
        "Benchmarked",
        data,
        Vec::new(),
    )
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
