//! A proxy in Shared mode over two workers on one PostgreSQL database: a
//! worker dies while appends flow through the proxy, and no acknowledged
//! append is lost or stored twice.
//!
//! The workers are `Store`s on the PostgreSQL backend behind the mem
//! transport; the database is a throwaway server from the machine's own
//! binaries (the case is skipped, with a message, when they are missing).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gater_core::{
    AppendResult, BoxGater, Direction, EventData, EventId, ExpectedVersion, Gater, Position,
    StoreConfig,
};
use gater_proxy::{Proxy, ProxyConfig, StorageMode};
use gater_store::{PostgresOptions, Store, StoreOptions};
use gater_testkit::pg_harness::PgServer;
use gater_transport_mem::MemClientOptions;
use support::{sim_worker, store, stream};

const APPENDERS: usize = 8;
const APPENDS_PER_APPENDER: usize = 40;
/// Acknowledged appends after which worker w0 dies.
const KILL_AFTER: u64 = 60;
/// Times a client sends the same append again after a retryable error.
const CLIENT_RETRIES: usize = 50;

async fn pg_worker(id: &str, url: &str) -> Store {
    let mut options = StoreOptions::new(std::env::temp_dir());
    options.worker_id = id.to_owned();
    Store::open_postgres(options, PostgresOptions::new(url))
        .await
        .expect("a PostgreSQL worker opens")
}

fn event(appender: usize, n: usize) -> EventData {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(appender as u64).to_be_bytes());
    id[8..].copy_from_slice(&(n as u64).to_be_bytes());
    EventData::json(
        EventId::from_random_bytes(id),
        "Paid",
        format!("{{\"appender\":{appender},\"n\":{n}}}").into_bytes(),
        b"{}".to_vec(),
    )
}

/// Appends like a careful client: the same events again after a retryable error.
async fn append_until_acknowledged(
    proxy: &Proxy,
    appender: usize,
    n: usize,
) -> (EventId, AppendResult) {
    let event = event(appender, n);
    let id = event.id;
    let target = stream(&format!("account-{appender}"));
    for _ in 0..CLIENT_RETRIES {
        let sent = proxy
            .append_events(
                &store("ledger"),
                &target,
                ExpectedVersion::Any,
                vec![event.clone()],
            )
            .await;
        match sent {
            Ok(result) => return (id, result),
            Err(error) if error.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("append {appender}/{n} refused: {error:?}"),
        }
    }
    panic!("append {appender}/{n} never acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_shared_worker_during_appends_loses_and_duplicates_nothing() {
    let case = "killing_a_shared_worker_during_appends_loses_and_duplicates_nothing";
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        eprintln!("{case}: skipped, slow test (set RUN_SLOW_TESTS=1 to run it)");
        return;
    }
    let server = match PgServer::start() {
        Ok(Some(server)) => server,
        Ok(None) => {
            eprintln!("{case}: skipped, no PostgreSQL binaries (initdb, pg_ctl) on this machine");
            return;
        }
        Err(error) => panic!("{case}: the throwaway PostgreSQL server did not start: {error}"),
    };
    let workers = [
        sim_worker(
            "w0",
            pg_worker("w0", &server.url()).await,
            MemClientOptions::default(),
        ),
        sim_worker(
            "w1",
            pg_worker("w1", &server.url()).await,
            MemClientOptions::default(),
        ),
    ];
    let config = ProxyConfig {
        storage: StorageMode::Shared,
        ..ProxyConfig::default()
    };
    let mut builder = Proxy::builder().config(config);
    for w in &workers {
        builder = builder.worker(&w.id, format!("mem:{}", w.id), w.client.clone() as BoxGater);
    }
    let proxy = builder.build().await.expect("the proxy builds");
    let config = StoreConfig {
        fsync: true,
        group_commit: true,
        retention: gater_core::Retention::NONE,
    };
    proxy
        .create_store(&store("ledger"), config)
        .await
        .expect("create the store through the proxy");

    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for appender in 0..APPENDERS {
        let (proxy, acknowledged) = (proxy.clone(), Arc::clone(&acknowledged));
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for n in 0..APPENDS_PER_APPENDER {
                results.push(append_until_acknowledged(&proxy, appender, n).await);
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            results
        }));
    }
    while acknowledged.load(Ordering::Relaxed) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Worker w0 dies: its link drops and its engine stops.
    workers[0].server.set_down(true);
    workers[0].store.shutdown().await;

    let mut results: HashMap<EventId, AppendResult> = HashMap::new();
    for task in tasks {
        for (id, result) in task.await.expect("an appender") {
            assert!(results.insert(id, result).is_none(), "one answer per event");
        }
    }
    let total = (APPENDERS * APPENDS_PER_APPENDER) as u64;
    let log = workers[1]
        .store
        .read_all(
            &store("ledger"),
            Position::START,
            10_000,
            Direction::Forward,
        )
        .await
        .expect("read the log on the survivor");
    let positions: Vec<u64> = log.iter().map(|e| e.position.0).collect();
    assert_eq!(
        positions,
        (0..total).collect::<Vec<_>>(),
        "every append stored once, gapless"
    );
    for event in &log {
        let acked = results
            .get(&event.data.id)
            .unwrap_or_else(|| panic!("stored event {} was never acknowledged", event.data.id));
        assert_eq!(
            acked.position, event.position,
            "acknowledged where it is stored"
        );
    }
    assert_eq!(results.len() as u64, total, "every append acknowledged");
    workers[1].store.shutdown().await;
}
