//! Subscriptions through the proxy: attach a consumer on the worker the
//! policy chooses, relay its deliveries through a bounded queue (whose
//! items count in the server's memory budget, when the proxy has one, until
//! the consumer takes them), map the
//! proxy's consumer ids to the worker's for acks and nacks, and move a
//! persistent consumer to another worker when its worker fails.
//!
//! A moved consumer keeps its proxy id and sees one `CaughtUp` in its
//! session. The relay remembers which attachment made each outstanding
//! delivery: an ack or nack of a delivery made before the move is answered
//! as a harmless no-op (the consumer that got it is gone with the old
//! worker, and the subscription redelivers the event from its checkpoint).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use gater_core::memory::{item_bytes, Reservation};
use gater_core::routing::{AffinityKey, RequestClass};
use gater_core::{
    ConsumerId, Error, NackAction, Position, Resource, Side, StoreId, SubscribeOptions,
    Subscription, SubscriptionEnd, SubscriptionItem, SubscriptionKey,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::pool::Worker;
use super::route::{from_worker, is_path_failure};
use super::{lock, Inner};

/// Outstanding deliveries remembered per consumer; past it those of earlier
/// attachments are forgotten first (their acks then reach the current
/// worker and may answer `NotFound`).
const DELIVERIES_TRACKED_MAX: usize = 4096;

/// A relay's queue to its consumer: each item with the budget bytes it holds.
type Queue = mpsc::Sender<(SubscriptionItem, Option<Reservation>)>;

/// The consumers attached through the proxy, by the proxy's consumer id.
#[derive(Debug)]
pub(crate) struct Consumers {
    max: usize,
    next: AtomicU64,
    routes: Mutex<HashMap<ConsumerId, Route>>,
}

/// Where a proxy consumer is attached now.
#[derive(Clone, Debug)]
struct Route {
    store: StoreId,
    key: SubscriptionKey,
    worker: Arc<Worker>,
    consumer: ConsumerId,
    /// Outstanding deliveries, by the attachment that made them.
    delivered: Arc<Mutex<Deliveries>>,
}

/// Positions relayed to a persistent consumer and not acked or nacked yet.
#[derive(Debug, Default)]
struct Deliveries {
    /// Made by the worker the consumer is attached to now.
    current: BTreeSet<Position>,
    /// Made by workers it has left.
    earlier: BTreeSet<Position>,
}

impl Deliveries {
    fn note(&mut self, position: Position) {
        if self.current.len() + self.earlier.len() >= DELIVERIES_TRACKED_MAX {
            self.earlier.clear();
        }
        if self.current.len() < DELIVERIES_TRACKED_MAX {
            self.current.insert(position);
        }
    }

    /// Whether an ack of `position` is for a delivery of a worker the
    /// consumer has left (and none of the current one); forgets it either way.
    fn settle(&mut self, position: Position) -> bool {
        if self.current.remove(&position) {
            return false;
        }
        self.earlier.remove(&position)
    }

    fn moved(&mut self) {
        let current = std::mem::take(&mut self.current);
        self.earlier.extend(current);
    }
}

impl Consumers {
    /// An empty registry of at most `max` consumers.
    pub(crate) fn new(max: usize) -> Self {
        Consumers {
            max,
            next: AtomicU64::new(1),
            routes: Mutex::default(),
        }
    }

    /// Consumers attached now.
    pub(crate) fn len(&self) -> usize {
        lock(&self.routes).len()
    }

    fn full(&self) -> Result<(), Error> {
        if self.len() >= self.max {
            return Err(Error::Overloaded {
                side: Side::Proxy,
                message: format!(
                    "the proxy already relays its maximum of {} consumers",
                    self.max
                ),
            });
        }
        Ok(())
    }

    fn insert(&self, route: Route) -> Result<ConsumerId, Error> {
        let mut routes = lock(&self.routes);
        if routes.len() >= self.max {
            return Err(Error::Overloaded {
                side: Side::Proxy,
                message: format!(
                    "the proxy already relays its maximum of {} consumers",
                    self.max
                ),
            });
        }
        let id = random_consumer_id(&self.next);
        routes.insert(id, route);
        Ok(id)
    }

    fn get(&self, id: ConsumerId, store: &StoreId, key: &SubscriptionKey) -> Result<Route, Error> {
        lock(&self.routes)
            .get(&id)
            .filter(|r| &r.store == store && &r.key == key)
            .cloned()
            .ok_or_else(|| Error::not_found(Resource::Consumer, id))
    }

    fn moved(&self, id: ConsumerId, worker: Arc<Worker>, consumer: ConsumerId) {
        if let Some(route) = lock(&self.routes).get_mut(&id) {
            route.worker = worker;
            route.consumer = consumer;
            lock(&route.delivered).moved();
        }
    }

    /// Notes that the consumer's current attachment delivered `position`.
    fn delivered(&self, id: ConsumerId, position: Position) {
        let delivered = lock(&self.routes)
            .get(&id)
            .map(|r| Arc::clone(&r.delivered));
        if let Some(delivered) = delivered {
            lock(&delivered).note(position);
        }
    }

    fn remove(&self, id: ConsumerId) {
        lock(&self.routes).remove(&id);
    }
}

/// Removes a consumer's route when its relay ends, however it ends.
struct RouteGuard {
    inner: Arc<Inner>,
    id: ConsumerId,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.inner.consumers.remove(self.id);
    }
}

/// What a relay needs to re-attach its consumer.
struct Attachment {
    store: StoreId,
    key: SubscriptionKey,
    options: SubscribeOptions,
    affinity: Option<AffinityKey>,
}

impl Inner {
    /// Attaches a consumer on the worker the policy picks (the rendezvous
    /// owner of the subscription for a persistent key) and relays it.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.consumers.full()?;
        let attachment = Attachment {
            affinity: (!key.is_transient()).then(|| AffinityKey::subscription(store, &key)),
            store: store.clone(),
            key,
            options,
        };
        let (worker, sub) = self.attach(&attachment, &mut Vec::new()).await?;
        let id = self.consumers.insert(Route {
            store: attachment.store.clone(),
            key: attachment.key.clone(),
            worker: Arc::clone(&worker),
            consumer: sub.consumer(),
            delivered: Arc::default(),
        })?;
        let (tx, rx) = mpsc::channel(self.config.relay_queue_len);
        let guard = RouteGuard {
            inner: Arc::clone(self),
            id,
        };
        tokio::spawn(relay(guard, attachment, worker, sub, tx));
        // The item's budget bytes are returned as the consumer takes it.
        let items = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|(item, _held)| (item, rx))
        });
        Ok(Subscription::new(id, items))
    }

    /// Attaches once on the worker the policy picks, skipping `tried`; a
    /// worker that fails is added to `tried`.
    async fn attach(
        &self,
        at: &Attachment,
        tried: &mut Vec<String>,
    ) -> Result<(Arc<Worker>, Subscription), Error> {
        let guard = self
            .pick(RequestClass::Subscribe, Some(&at.store), at.affinity, tried)
            .map_err(|no| self.no_send(no, Some(&at.store)))?;
        let worker = Arc::clone(guard.worker());
        let deadline = self.deadline(None);
        let started = Instant::now();
        let answer = tokio::time::timeout_at(
            deadline,
            worker
                .client
                .subscribe(&at.store, at.key.clone(), at.options.clone()),
        )
        .await;
        drop(guard);
        let now = self.now();
        let result = match answer {
            Ok(result) => result.map_err(from_worker),
            Err(_) => Err(Error::DeadlineExceeded { side: Side::Proxy }),
        };
        match &result {
            Err(error) if is_path_failure(error) => {
                worker.handle_failure(now);
                tried.push(worker.id.clone());
            }
            _ => worker.handle_success(started.elapsed(), now),
        }
        result.map(|sub| (worker, sub))
    }

    /// Moves a persistent consumer off `failed` to the next worker the policy
    /// offers, up to `reattach_max` attempts; delivery resumes from the
    /// subscription's checkpoint on the new worker.
    async fn reattach(
        &self,
        at: &Attachment,
        failed: &Worker,
        cause: Error,
    ) -> Result<(Arc<Worker>, Subscription), Error> {
        if at.key.is_transient() {
            return Err(Error::unavailable(
                Side::Worker,
                format!(
                    "worker {} serving transient subscription {} of store {} failed ({cause}); \
                     transient subscriptions are not moved",
                    failed.id, at.key, at.store
                ),
            ));
        }
        let mut tried = vec![failed.id.clone()];
        let mut last = cause;
        for _ in 0..self.config.reattach_max {
            match self.attach(at, &mut tried).await {
                Ok(attached) => return Ok(attached),
                // That worker failed too: the next attempt skips it.
                Err(error)
                    if is_path_failure(&error)
                        && (error.side() != Some(Side::Proxy) || is_timeout(&error)) =>
                {
                    last = error;
                }
                // No worker is left to try.
                Err(error) if is_path_failure(&error) || is_store_not_found(&error) => {
                    last = error;
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        Err(Error::unavailable(
            Side::Proxy,
            format!(
                "no live worker serves store {} for subscription {} (worker {} failed: {last})",
                at.store, at.key, failed.id
            ),
        ))
    }

    /// Acknowledges a delivery on the worker holding the consumer.
    pub(crate) async fn ack(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: Option<NackAction>,
    ) -> Result<(), Error> {
        let route = self.consumers.get(consumer, store, key)?;
        if lock(&route.delivered).settle(position) {
            // Delivered by a worker the consumer has left: nothing to tell
            // the new one, which delivers the event again.
            return Ok(());
        }
        let worker = &route.worker;
        let deadline = self.deadline(None);
        let call = async {
            match action {
                None => {
                    worker
                        .client
                        .ack_event(store, key, route.consumer, position)
                        .await
                }
                Some(action) => {
                    worker
                        .client
                        .nack_event(store, key, route.consumer, position, action)
                        .await
                }
            }
        };
        let result = match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result.map_err(from_worker),
            Err(_) => Err(Error::DeadlineExceeded { side: Side::Proxy }),
        };
        if result.as_ref().is_err_and(is_path_failure) {
            worker.handle_failure(self.now());
        }
        result
    }
}

fn is_timeout(error: &Error) -> bool {
    matches!(error, Error::DeadlineExceeded { .. })
}

fn is_store_not_found(error: &Error) -> bool {
    matches!(
        error,
        Error::NotFound {
            resource: Resource::Store,
            ..
        }
    )
}

/// Forwards a worker's items to the consumer until the consumer leaves or
/// the subscription ends; re-attaches a persistent consumer whose worker failed.
async fn relay(
    guard: RouteGuard,
    at: Attachment,
    mut worker: Arc<Worker>,
    mut sub: Subscription,
    tx: Queue,
) {
    let inner = Arc::clone(&guard.inner);
    let mut caught_up_sent = false;
    loop {
        let item = tokio::select! {
            item = sub.next() => item,
            () = tx.closed() => return,
        };
        let now = inner.now();
        let cause = match item {
            Some(SubscriptionItem::End(SubscriptionEnd::Shutdown)) => {
                worker.handle_down(now);
                Error::unavailable(Side::Worker, "the worker shut down")
            }
            Some(SubscriptionItem::End(SubscriptionEnd::Failed(error)))
                if is_path_failure(&from_worker(error.clone())) =>
            {
                worker.handle_failure(now);
                from_worker(error)
            }
            Some(item @ SubscriptionItem::End(_)) => {
                let _ = tx.send((item, None)).await;
                return;
            }
            // One `CaughtUp` per consumer session, however often it moves.
            Some(SubscriptionItem::CaughtUp) if caught_up_sent => continue,
            Some(item) => {
                match &item {
                    SubscriptionItem::CaughtUp => caught_up_sent = true,
                    // Transient deliveries need no ack: nothing to remember.
                    SubscriptionItem::Event(d) if !at.key.is_transient() => {
                        inner.consumers.delivered(guard.id, d.event.position);
                    }
                    SubscriptionItem::Event(_) => {}
                    SubscriptionItem::End(_) => {}
                }
                if !queue(&inner, &tx, item).await {
                    return;
                }
                continue;
            }
            None => {
                worker.handle_failure(now);
                Error::unavailable(Side::Worker, "the subscription stream ended without an end")
            }
        };
        drop(sub);
        match inner.reattach(&at, &worker, cause).await {
            Ok((next, next_sub)) => {
                tracing::info!(store = %at.store, key = %at.key, from = %worker.id, to = %next.id, "consumer re-attached");
                inner
                    .consumers
                    .moved(guard.id, Arc::clone(&next), next_sub.consumer());
                worker = next;
                sub = next_sub;
            }
            Err(error) => {
                let _ = tx
                    .send((SubscriptionItem::End(SubscriptionEnd::Failed(error)), None))
                    .await;
                return;
            }
        }
    }
}

/// Queues `item` for the consumer, its bytes reserved from the proxy's
/// budget (waiting for room) until the consumer takes it; `false` when the
/// consumer is gone or the subscription had to end.
async fn queue(inner: &Inner, tx: &Queue, item: SubscriptionItem) -> bool {
    let held = match &inner.budget {
        None => None,
        Some(budget) => {
            let reserved = tokio::select! {
                reserved = budget.reserve_bytes(item_bytes(&item), Side::Proxy) => reserved,
                () = tx.closed() => return false,
            };
            match reserved {
                Ok(held) => Some(held),
                Err(error) => {
                    let end = SubscriptionItem::End(SubscriptionEnd::Failed(error));
                    let _ = tx.send((end, None)).await;
                    return false;
                }
            }
        }
    };
    tx.send((item, held)).await.is_ok()
}

/// 128 random bits from the OS, so ids cannot be guessed; should the OS
/// source fail, `counter` keeps ids unique.
fn random_consumer_id(counter: &AtomicU64) -> ConsumerId {
    let mut bytes = [0; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
    }
    ConsumerId::from_random_bytes(bytes)
}
