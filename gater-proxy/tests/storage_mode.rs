//! The proxy learns the storage mode from its workers: without being told,
//! a proxy over workers that report shared storage serves every store on
//! every worker, and a pool mixing embedded and shared workers is refused.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gater_core::wire::{Request, Response};
use gater_core::{BoxGater, Error, Gater, WorkerInfo};
use gater_proxy::{Proxy, ProxyConfig, StorageMode};
use gater_transport_mem::serve;
use support::{open_store, store, FAST};

/// A worker that reports shared storage, as a worker over PostgreSQL does,
/// in front of one embedded store every such worker shares.
struct ReportsShared(BoxGater);

#[async_trait]
impl Gater for ReportsShared {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        match self.0.call(request, within).await? {
            Response::Workers(infos) => Ok(Response::Workers(
                infos
                    .into_iter()
                    .map(|info| WorkerInfo {
                        shared_storage: true,
                        ..info
                    })
                    .collect(),
            )),
            other => Ok(other),
        }
    }

    async fn subscribe(
        &self,
        store: &gater_core::StoreId,
        key: gater_core::SubscriptionKey,
        options: gater_core::SubscribeOptions,
    ) -> Result<gater_core::Subscription, Error> {
        self.0.subscribe(store, key, options).await
    }
}

fn embedded_config() -> ProxyConfig {
    ProxyConfig {
        storage: StorageMode::Embedded,
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        ..ProxyConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_proxy_not_told_shared_serves_every_store_on_workers_that_report_shared_storage() {
    let mut dirs = Vec::new();
    let shared = open_store(&mut dirs, "shared").await;
    let mut builder = Proxy::builder().config(embedded_config());
    for id in ["a", "b"] {
        let client: BoxGater = Arc::new(serve(shared.clone()).client());
        builder = builder.worker(id, format!("mem:{id}"), Arc::new(ReportsShared(client)));
    }
    let proxy = builder.build().await.expect("the proxy builds");
    let orders = store("orders");
    proxy.create_store(&orders, FAST).await.unwrap();
    assert_eq!(proxy.workers_serving(&orders), vec!["a", "b"]);
    let status = proxy.get_store_status(&orders).await.unwrap();
    assert_eq!(
        status.workers,
        vec!["a", "b"],
        "both workers serve the store"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pool_mixing_embedded_and_shared_workers_is_refused_with_a_clear_error() {
    let mut dirs = Vec::new();
    let shared = open_store(&mut dirs, "shared").await;
    let own = open_store(&mut dirs, "own").await;
    let reports_shared: BoxGater = Arc::new(ReportsShared(Arc::new(serve(shared).client())));
    let embedded: BoxGater = Arc::new(serve(own).client());
    let error = Proxy::builder()
        .config(embedded_config())
        .worker("a", "mem:a", reports_shared)
        .worker("b", "mem:b", embedded)
        .build()
        .await
        .expect_err("a mixed pool is refused");
    assert_eq!(error.kind(), "invalid_argument");
    let message = error.to_string();
    assert!(
        message.contains("mixes embedded and shared") && message.contains("worker a"),
        "{message}"
    );
}
