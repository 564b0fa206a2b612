//! Runs the Gater conformance suite against the embedded `Store`.

use gater_store::conformance;
use gater_store::{Store, StoreOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(StoreOptions::new(dir.path()))
        .await
        .expect("open store");
    conformance::run_all(&store).await;
    store.shutdown().await;
}
