//! The Gater conformance suite (a slow test: it runs only with
//! `RUN_SLOW_TESTS` set, as CI does) through the mem transport, in plain and
//! codec mode, against the embedded store.

use std::sync::Arc;

use gater_store::{conformance, Store, StoreOptions};
use gater_transport_mem::{serve_with, MemOptions};

async fn run_through_mem(codec: bool) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(
        Store::open(StoreOptions::new(dir.path()))
            .await
            .expect("open store"),
    );
    let options = MemOptions {
        codec,
        ..MemOptions::default()
    };
    let server = serve_with(Arc::clone(&store), options);
    conformance::run_all(&server.client()).await;
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_through_mem_passes_the_conformance_suite() {
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        return;
    }
    run_through_mem(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_through_mem_in_codec_mode_passes_the_conformance_suite() {
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        return;
    }
    run_through_mem(true).await;
}
