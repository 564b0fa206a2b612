//! The check in front of a served [`Gater`]: one [`Gatekeeper`] per server
//! holds the rules and which identity attached each consumer; one
//! [`Guarded`] per connection carries that connection's identity.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

use crate::access::{Access, Need};
use crate::api::{BoxGater, Gater};
use crate::error::{Error, Side};
use crate::id::StoreId;
use crate::routing::RequestClass;
use crate::subscription::{
    ConsumerId, SubscribeOptions, Subscription, SubscriptionItem, SubscriptionKey,
};
use crate::wire::{EncodedRequest, Request, RequestKind, Response};

/// A server's rules, and the identity that attached each live consumer.
pub struct Gatekeeper {
    access: Access,
    side: Side,
    consumers: Mutex<HashMap<(StoreId, ConsumerId), Arc<str>>>,
}

impl std::fmt::Debug for Gatekeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatekeeper")
            .field("access", &self.access)
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl Gatekeeper {
    /// A gatekeeper enforcing `access`; its refusals name `side` (the kind of
    /// server it guards: a proxy or a worker).
    pub fn new(access: Access, side: Side) -> Arc<Self> {
        Arc::new(Gatekeeper {
            access,
            side,
            consumers: Mutex::new(HashMap::new()),
        })
    }

    /// The rules.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// `inner` as `identity` may use it.
    pub fn guard(self: &Arc<Self>, inner: BoxGater, identity: impl Into<Arc<str>>) -> Guarded {
        Guarded {
            keeper: Arc::clone(self),
            inner,
            identity: identity.into(),
        }
    }

    fn consumers(&self) -> std::sync::MutexGuard<'_, HashMap<(StoreId, ConsumerId), Arc<str>>> {
        // The map stays consistent whatever panicked while holding it.
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses an ack or nack of a consumer another identity attached.
    fn check_consumer(
        &self,
        identity: &str,
        store: &StoreId,
        consumer: ConsumerId,
        action: &str,
    ) -> Result<(), Error> {
        let owner = self.consumers().get(&(store.clone(), consumer)).cloned();
        match owner {
            Some(owner) if &*owner != identity => Err(Error::PermissionDenied {
                identity: identity.to_owned(),
                action: action.to_owned(),
                store: Some(store.as_str().to_owned()),
                side: self.side,
            }),
            _ => Ok(()),
        }
    }
}

/// A [`Gater`] that answers `whoami`, refuses what its identity may not do,
/// filters store listings, and binds consumers to the identity that attached them.
pub struct Guarded {
    keeper: Arc<Gatekeeper>,
    inner: BoxGater,
    identity: Arc<str>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Guarded {
    /// The identity of the connection.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

#[async_trait]
impl Gater for Guarded {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        let keeper = &self.keeper;
        let identity = &*self.identity;
        keeper.access.check(identity, &request, keeper.side)?;
        match &request {
            Request::Whoami => return Ok(Response::Whoami(keeper.access.whoami(identity))),
            Request::AckEvent {
                store, consumer, ..
            }
            | Request::NackEvent {
                store, consumer, ..
            } => keeper.check_consumer(identity, store, *consumer, request.method())?,
            _ => {}
        }
        let listing = need_is_listing(&request);
        let response = self.inner.call_as(identity, request, within).await?;
        Ok(match response {
            Response::Stores(mut stores) if listing => {
                stores.retain(|s| keeper.access.may_read(identity, s.store.as_str()));
                Response::Stores(stores)
            }
            other => other,
        })
    }

    /// Requests the guard answers or looks into (whoami, acks and nacks,
    /// store lists) and cluster requests (which `call_as` may treat per
    /// identity) are decoded and answered as [`Gater::call`] does; every
    /// other one is checked by its head and passed on still encoded.
    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        let decoded = matches!(
            request.kind(),
            RequestKind::Whoami | RequestKind::AckEvent | RequestKind::NackEvent
        ) || request.class() == RequestClass::Cluster;
        if decoded {
            return self.call(request.decode()?, within).await;
        }
        let keeper = &self.keeper;
        keeper
            .access
            .check_encoded(&self.identity, &request, keeper.side)?;
        // Through the `dyn Gater`, not the `Arc`: one boxed future fewer.
        (*self.inner).call_encoded(request, within).await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let request = Request::Subscribe {
            store: store.clone(),
            key: key.clone(),
            options: options.clone(),
        };
        self.keeper
            .access
            .check(&self.identity, &request, self.keeper.side)?;
        let sub = self.inner.subscribe(store, key, options).await?;
        let consumer = sub.consumer();
        self.keeper
            .consumers()
            .insert((store.clone(), consumer), Arc::clone(&self.identity));
        let binding = Binding {
            keeper: Arc::clone(&self.keeper),
            key: Some((store.clone(), consumer)),
        };
        Ok(Subscription::new(consumer, Bound { sub, binding }))
    }
}

fn need_is_listing(request: &Request) -> bool {
    matches!(super::need(request), Need::Listing)
}

/// Forgets a consumer's owner when its subscription is dropped.
struct Binding {
    keeper: Arc<Gatekeeper>,
    key: Option<(StoreId, ConsumerId)>,
}

impl Drop for Binding {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.keeper.consumers().remove(&key);
        }
    }
}

/// A subscription that holds its [`Binding`] while it lives.
struct Bound {
    sub: Subscription,
    #[allow(dead_code)] // held for its Drop
    binding: Binding,
}

impl Stream for Bound {
    type Item = SubscriptionItem;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SubscriptionItem>> {
        Pin::new(&mut self.sub).poll_next(cx)
    }
}
