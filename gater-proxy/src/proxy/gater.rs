//! [`Gater`] for [`Proxy`]: every request, whether it arrived over a
//! transport or from a method call, is one wire [`Request`] answered by
//! [`Proxy`]'s `call`. The proxy answers cluster questions, subscriptions,
//! placement and removal itself; everything else goes as it is through the
//! one routing and retry path. The methods are the trait's defaults, which
//! build the request: the mapping from method to request is gater-core's.

use std::time::Duration;

use async_trait::async_trait;
use gater_core::wire::{Request, Response};
use gater_core::{Error, Gater, StoreId, SubscribeOptions, Subscription, SubscriptionKey};

use super::{Proxy, StorageMode};

#[async_trait]
impl Gater for Proxy {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        let inner = &self.inner;
        let shared = inner.storage() == StorageMode::Shared;
        Ok(match request {
            Request::AckEvent {
                store,
                key,
                consumer,
                position,
            } => {
                inner.ack(&store, &key, consumer, position, None).await?;
                Response::Done
            }
            Request::NackEvent {
                store,
                key,
                consumer,
                position,
                action,
            } => {
                inner
                    .ack(&store, &key, consumer, position, Some(action))
                    .await?;
                Response::Done
            }
            Request::CreateStore { store, config } if !shared => {
                inner.place_store(&store, config, within).await?;
                Response::Done
            }
            Request::CreateStore { ref store, .. } => {
                let store = store.clone();
                let response = inner.call(request, within).await?;
                inner.note_everywhere(&store);
                response
            }
            Request::RemoveStore { store } => {
                inner.remove_store(&store, within).await?;
                Response::Done
            }
            Request::ListStores => Response::Stores(inner.list_stores(within).await?),
            Request::GetStoreStatus { ref store } => {
                let store = store.clone();
                let response = inner.call(request, within).await?;
                inner.name_serving_workers(&store, response)?
            }
            Request::Workers => Response::Workers(inner.worker_infos()),
            Request::Heartbeat { worker } => {
                inner.heartbeat(worker, None).await?;
                Response::Done
            }
            Request::Subscribe { .. } => {
                return Err(Error::Protocol(
                    "subscribe needs a subscription stream, not a unary request".into(),
                ))
            }
            other => inner.call(other, within).await?,
        })
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
