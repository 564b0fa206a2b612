//! [`Gater`] for [`Proxy`]: every request, whether it arrived over a
//! transport or from a method call, is one wire request answered by
//! [`Proxy`]'s `call` or `call_encoded`. The proxy answers cluster
//! questions, subscriptions, placement and removal itself (decoding those
//! requests); everything else goes through the one routing and retry path
//! as the bytes it arrived in, routed on its head (kind and store). The
//! methods are the trait's defaults, which build the request: the mapping
//! from method to request is gater-core's.

use std::time::Duration;

use async_trait::async_trait;
use gater_core::wire::{EncodedRequest, Request, RequestKind, Response};
use gater_core::{Error, Gater, StoreId, SubscribeOptions, Subscription, SubscriptionKey};

use super::{Inner, Proxy, StorageMode};

/// Whether the proxy answers requests of `kind` itself (or looks into
/// their answers), so it decodes them; the rest it passes on as bytes.
fn answered_here(kind: RequestKind) -> bool {
    use RequestKind as K;
    matches!(
        kind,
        K::AckEvent
            | K::NackEvent
            | K::CreateStore
            | K::RemoveStore
            | K::ListStores
            | K::GetStoreStatus
            | K::Workers
            | K::Heartbeat
            | K::Subscribe
    )
}

#[async_trait]
impl Gater for Proxy {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        if answered_here(request.kind()) {
            return self.inner.answer(request, within).await;
        }
        let request = EncodedRequest::encode(&request)?;
        self.inner.call(request, within).await
    }

    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        if answered_here(request.kind()) {
            return self.inner.answer(request.decode()?, within).await;
        }
        self.inner.call(request, within).await
    }

    async fn call_as(
        &self,
        identity: &str,
        request: Request,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        match request {
            Request::Heartbeat { worker } => {
                self.inner.heartbeat(worker, Some(identity)).await?;
                Ok(Response::Done)
            }
            other => self.call(other, within).await,
        }
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.inner.subscribe(store, key, options).await
    }
}

impl Inner {
    /// Answers a request the proxy handles itself (see [`answered_here`]);
    /// any other request is routed.
    async fn answer(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        let shared = self.storage() == StorageMode::Shared;
        Ok(match request {
            Request::AckEvent {
                store,
                key,
                consumer,
                position,
            } => {
                self.ack(&store, &key, consumer, position, None).await?;
                Response::Done
            }
            Request::NackEvent {
                store,
                key,
                consumer,
                position,
                action,
            } => {
                self.ack(&store, &key, consumer, position, Some(action))
                    .await?;
                Response::Done
            }
            Request::CreateStore { store, config } if !shared => {
                self.place_store(&store, config, within).await?;
                Response::Done
            }
            Request::CreateStore { ref store, .. } => {
                let store = store.clone();
                let response = self.route(&request, within).await?;
                self.note_everywhere(&store);
                response
            }
            Request::RemoveStore { store } => {
                self.remove_store(&store, within).await?;
                Response::Done
            }
            Request::ListStores => Response::Stores(self.list_stores(within).await?),
            Request::GetStoreStatus { ref store } => {
                let response = self.route(&request, within).await?;
                self.name_serving_workers(store, response)?
            }
            Request::Workers => Response::Workers(self.worker_infos()),
            Request::Heartbeat { worker } => {
                self.heartbeat(worker, None).await?;
                Response::Done
            }
            Request::Subscribe { .. } => {
                return Err(Error::Protocol(
                    "subscribe needs a subscription stream, not a unary request".into(),
                ))
            }
            other => self.route(&other, within).await?,
        })
    }

    /// Routes a decoded request: encoded once, then the one request path.
    async fn route(&self, request: &Request, within: Option<Duration>) -> Result<Response, Error> {
        self.call(EncodedRequest::encode(request)?, within).await
    }
}
