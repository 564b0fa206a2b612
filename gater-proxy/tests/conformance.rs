//! The Gater conformance suite, run through a proxy: the proxy must be
//! indistinguishable from a single store to its callers.

mod support;

use gater_proxy::ProxyConfig;
use gater_transport_mem::MemClientOptions;
use support::Cluster;

/// The suite writes with fsync on and takes several seconds: it runs when
/// `RUN_SLOW_TESTS` is set (CI sets it).
fn slow_tests_enabled() -> bool {
    std::env::var_os("RUN_SLOW_TESTS").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_through_a_proxy_over_two_embedded_workers() {
    if !slow_tests_enabled() {
        return;
    }
    let cluster = Cluster::embedded(2, ProxyConfig::default(), MemClientOptions::default()).await;
    gater_store::conformance::run_all(&cluster.proxy).await;
    let placed: Vec<usize> = cluster
        .workers
        .iter()
        .map(|w| w.served.by_store().len())
        .collect();
    assert!(
        placed.iter().all(|&n| n > 0),
        "stores are spread over both workers, got requests for {placed:?} stores"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_through_a_proxy_over_three_shared_workers() {
    if !slow_tests_enabled() {
        return;
    }
    let cluster = Cluster::shared(3, ProxyConfig::default(), MemClientOptions::default()).await;
    gater_store::conformance::run_all(&cluster.proxy).await;
}
