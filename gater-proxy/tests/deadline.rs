//! The caller's deadline travels with its request: the proxy routes within
//! what remains of it, tells the worker how much is left, and refuses a
//! request that arrives with nothing left instead of starting it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gater_core::wire::{Request, Response};
use gater_core::{
    Error, Gater, Side, StoreId, StreamId, SubscribeOptions, Subscription, SubscriptionKey,
};
use gater_proxy::{Proxy, ProxyConfig};
use gater_transport_mem::serve;
use tempfile::TempDir;

mod support;
use support::{open_store, FAST};

/// A worker that records how long each request's sender still waited.
struct Recording {
    store: gater_store::Store,
    seen: Mutex<Vec<(&'static str, Option<Duration>)>>,
}

#[async_trait]
impl Gater for Recording {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        self.seen.lock().unwrap().push((request.method(), within));
        self.store.call(request, within).await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.store.subscribe(store, key, options).await
    }
}

async fn cluster(request_deadline: Duration) -> (Proxy, Arc<Recording>, Vec<TempDir>) {
    let mut dirs = Vec::new();
    let store = open_store(&mut dirs, "w1").await;
    let worker = Arc::new(Recording {
        store,
        seen: Mutex::new(Vec::new()),
    });
    let server = serve(Arc::clone(&worker));
    let config = ProxyConfig {
        request_deadline,
        ..ProxyConfig::default()
    };
    let proxy = Proxy::builder()
        .config(config)
        .worker("w1", "mem:w1", Arc::new(server.client()))
        .build()
        .await
        .unwrap();
    proxy
        .create_store(&StoreId::new("s").unwrap(), FAST)
        .await
        .unwrap();
    worker.seen.lock().unwrap().clear();
    (proxy, worker, dirs)
}

fn get_version() -> Request {
    Request::GetVersion {
        store: StoreId::new("s").unwrap(),
        stream: StreamId::new("orders-1").unwrap(),
    }
}

/// What the worker was told of `get_version` requests.
fn seen_by_worker(worker: &Recording) -> Vec<Option<Duration>> {
    let seen = worker.seen.lock().unwrap();
    seen.iter()
        .filter(|(method, _)| *method == "get_version")
        .map(|(_, within)| *within)
        .collect()
}

#[tokio::test]
async fn the_worker_is_told_what_remains_of_the_callers_deadline() {
    let (proxy, worker, _dirs) = cluster(Duration::from_secs(10)).await;
    let answer = proxy
        .call(get_version(), Some(Duration::from_millis(300)))
        .await;
    assert_eq!(answer, Ok(Response::Version(None)));
    let seen = seen_by_worker(&worker);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let within = seen[0].expect("the worker learns a deadline");
    assert!(
        within <= Duration::from_millis(300) && within > Duration::ZERO,
        "{within:?}"
    );
}

#[tokio::test]
async fn without_a_caller_deadline_the_worker_is_told_the_proxys_own() {
    let (proxy, worker, _dirs) = cluster(Duration::from_millis(800)).await;
    proxy
        .get_version(&StoreId::new("s").unwrap(), &StreamId::new("a").unwrap())
        .await
        .unwrap();
    let seen = seen_by_worker(&worker);
    let within = seen[0].expect("the worker learns a deadline");
    assert!(within <= Duration::from_millis(800), "{within:?}");
    // A caller that waits longer than the proxy does not extend it.
    proxy
        .call(get_version(), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let within = seen_by_worker(&worker)[1].expect("a deadline");
    assert!(within <= Duration::from_millis(800), "{within:?}");
}

#[tokio::test]
async fn a_request_with_no_time_left_is_refused_and_never_reaches_a_worker() {
    let (proxy, worker, _dirs) = cluster(Duration::from_secs(10)).await;
    let answer = proxy.call(get_version(), Some(Duration::ZERO)).await;
    assert_eq!(answer, Err(Error::DeadlineExceeded { side: Side::Proxy }));
    assert!(seen_by_worker(&worker).is_empty());
}

#[tokio::test]
async fn a_worker_refuses_work_that_is_already_late() {
    let (_proxy, worker, _dirs) = cluster(Duration::from_secs(10)).await;
    let answer = worker.store.call(get_version(), Some(Duration::ZERO)).await;
    assert_eq!(answer, Err(Error::DeadlineExceeded { side: Side::Worker }));
}
