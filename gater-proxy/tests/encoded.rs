//! Requests the proxy only routes reach the worker as the bytes they arrived
//! in: routed on their head (kind and store), never decoded and encoded
//! again; requests the proxy answers itself are decoded and answered there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gater_core::wire::{EncodedRequest, Request, Response};
use gater_core::{
    Error, ExpectedVersion, Gater, StoreId, SubscribeOptions, Subscription, SubscriptionKey,
};
use gater_proxy::Proxy;
use tempfile::TempDir;

mod support;
use support::{event, open_store, rng, seed, store, stream, FAST};

/// A worker that records the bytes of every encoded request it is handed.
struct Recording {
    store: gater_store::Store,
    encoded: Mutex<Vec<Vec<u8>>>,
}

#[async_trait]
impl Gater for Recording {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        self.store.call(request, within).await
    }

    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        self.encoded.lock().unwrap().push(request.bytes().to_vec());
        self.store.call_encoded(request, within).await
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

async fn cluster() -> (Proxy, Arc<Recording>, Vec<TempDir>) {
    let mut dirs = Vec::new();
    let worker = Arc::new(Recording {
        store: open_store(&mut dirs, "w1").await,
        encoded: Mutex::new(Vec::new()),
    });
    let proxy = Proxy::builder()
        .worker("w1", "mem:w1", Arc::clone(&worker) as gater_core::BoxGater)
        .build()
        .await
        .unwrap();
    proxy.create_store(&store("s"), FAST).await.unwrap();
    worker.encoded.lock().unwrap().clear();
    (proxy, worker, dirs)
}

#[tokio::test]
async fn an_append_reaches_the_worker_as_the_bytes_it_arrived_in() {
    let (proxy, worker, _dirs) = cluster().await;
    let mut rng = rng(seed(16));
    let append = Request::AppendEvents {
        store: store("s"),
        stream: stream("orders-1"),
        expected: ExpectedVersion::NoStream,
        events: (0..100).map(|_| event(&mut rng)).collect(),
    };
    let encoded = EncodedRequest::encode(&append).unwrap();
    let bytes = encoded.bytes().to_vec();
    let response = proxy.call_encoded(encoded, None).await.unwrap();
    assert!(
        matches!(&response, Response::Appended(r) if r.version == 99),
        "{response:?}"
    );
    assert_eq!(*worker.encoded.lock().unwrap(), vec![bytes]);
}

#[tokio::test]
async fn a_body_that_does_not_decode_is_refused_by_the_worker_that_reads_it() {
    let (proxy, worker, _dirs) = cluster().await;
    let get_version = Request::GetVersion {
        store: store("s"),
        stream: stream("orders-1"),
    };
    let mut bytes = EncodedRequest::encode(&get_version)
        .unwrap()
        .bytes()
        .to_vec();
    bytes.truncate(bytes.len() - 1);
    let encoded = EncodedRequest::from_bytes(bytes.clone().into()).unwrap();
    let error = proxy.call_encoded(encoded, None).await.unwrap_err();
    assert_eq!(error.kind(), "protocol", "{error}");
    assert_eq!(*worker.encoded.lock().unwrap(), vec![bytes]);
}

#[tokio::test]
async fn requests_the_proxy_answers_are_decoded_at_the_proxy() {
    let (proxy, worker, _dirs) = cluster().await;
    let status = EncodedRequest::encode(&Request::GetStoreStatus { store: store("s") }).unwrap();
    let Response::StoreStatus(status) = proxy.call_encoded(status, None).await.unwrap() else {
        panic!("not a store status");
    };
    // The proxy names the workers serving the store in the worker's answer.
    assert_eq!(status.workers, vec!["w1".to_owned()]);
    let workers = EncodedRequest::encode(&Request::Workers).unwrap();
    let response = proxy.call_encoded(workers, None).await.unwrap();
    assert!(matches!(response, Response::Workers(w) if w.len() == 1));
    // The status went on to the worker encoded again by the proxy; the
    // worker list never left the proxy.
    assert_eq!(worker.encoded.lock().unwrap().len(), 1);
}
