//! Runs the Gater conformance suite against the embedded `Store`, and its
//! lifecycle cases across workers of a simulated shared storage.

use std::sync::Arc;

use gater_store::conformance;
use gater_store::conformance::support::RoundRobin;
use gater_store::{SimulatedShared, Store, StoreOptions};

/// Workers over one simulated shared storage.
const SHARED_WORKERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(StoreOptions::new(dir.path()))
        .await
        .expect("open store");
    conformance::run_all(&store).await;
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_changes_through_one_shared_worker_show_through_every_other_at_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let shared = SimulatedShared::open(dir.path()).expect("open the shared storage");
    let mut workers = Vec::new();
    for i in 0..SHARED_WORKERS {
        let mut options = StoreOptions::new(dir.path());
        options.worker_id = format!("w{i}");
        let worker = Store::open_simulated_shared(options, &shared)
            .await
            .expect("open a worker");
        workers.push(worker);
    }
    let mut gaters: Vec<Arc<dyn gater_core::Gater>> = workers
        .iter()
        .map(|w| Arc::new(w.clone()) as Arc<dyn gater_core::Gater>)
        .collect();
    let first = gaters.remove(0);
    conformance::lifecycle::run(&RoundRobin::new(first, gaters)).await;
    for worker in workers {
        worker.shutdown().await;
    }
}
