//! Consumers of a persistent subscription on shared storage, served through
//! whichever worker holds the subscription's lease.
//!
//! A consumer attached here keeps the id this worker gave it for its whole
//! session. Behind it, its deliveries come from this worker's own task when
//! this worker holds the lease, or from the holder, reached through the
//! store's [`PeerConnector`], when another worker does. When that source
//! fails (the holder died, the lease moved) the relay finds the holder again
//! (taking the lease itself once it has expired) and goes on: the consumer
//! sees the events again from the stored checkpoint (at-least-once), and one
//! `CaughtUp` in its session. Acks and nacks follow the consumer to where it
//! is attached now; an ack of a delivery made before a move answers
//! `NotFound` (the new holder redelivers that event anyway).

use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use async_trait::async_trait;
use futures::StreamExt;
use gater_core::{
    BoxGater, ConsumerId, Error, NackAction, Position, Resource, Side, StoreId, SubscribeOptions,
    Subscription, SubscriptionEnd, SubscriptionItem, SubscriptionKey,
};
use tokio::sync::mpsc;

use super::Subscriptions;
use crate::lease::RENEWALS_PER_PERIOD;

/// Attempts to find the lease holder again after a source failed, one per
/// third of a lease period: four periods in all, enough for a dead holder's
/// lease to run out and be taken.
const RESOLVE_ATTEMPTS_MAX: u32 = 4 * RENEWALS_PER_PERIOD;

/// Reaches another worker of the same shared storage by its address.
///
/// The `gater` application connects over QUIC with the worker's own
/// certificate; tests hand out in-memory clients. gater-store itself opens
/// no connection.
#[async_trait]
pub trait PeerConnector: Send + Sync + 'static {
    /// A client for the worker at `address`.
    async fn connect(&self, address: &str) -> Result<BoxGater, Error>;
}

/// The connector of a worker, set once after it is opened.
pub(crate) type PeerSlot = Arc<OnceLock<Arc<dyn PeerConnector>>>;

/// Where a relayed consumer's deliveries come from now.
#[derive(Clone)]
pub(super) enum Target {
    /// This worker's own task, under this consumer id.
    Local(ConsumerId),
    /// The lease holder, under the consumer id it gave.
    Remote {
        peer: BoxGater,
        consumer: ConsumerId,
    },
    /// Being attached again; acks answer `NotFound` meanwhile.
    Moving,
}

/// The shared handle on a relayed consumer's target.
pub(super) type TargetCell = Arc<Mutex<Target>>;

pub(super) fn target(cell: &TargetCell) -> Target {
    cell.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

fn set_target(cell: &TargetCell, target: Target) {
    *cell.lock().unwrap_or_else(PoisonError::into_inner) = target;
}

/// What a relay needs to attach its consumer again.
pub(super) struct Attachment {
    pub(super) store: StoreId,
    pub(super) key: SubscriptionKey,
    pub(super) options: SubscribeOptions,
}

/// Forwards an acknowledgement to where the consumer is attached now.
pub(super) async fn forward_ack(
    subscriptions: &Subscriptions,
    cell: &TargetCell,
    key: &SubscriptionKey,
    consumer: ConsumerId,
    position: Position,
    action: Option<NackAction>,
) -> Result<(), Error> {
    match target(cell) {
        Target::Local(inner) => match action {
            None => subscriptions.ack_local(key, inner, position).await,
            Some(action) => subscriptions.nack_local(key, inner, position, action).await,
        },
        Target::Remote { peer, consumer } => {
            let store = &subscriptions.store;
            match action {
                None => peer.ack_event(store, key, consumer, position).await,
                Some(action) => {
                    peer.nack_event(store, key, consumer, position, action)
                        .await
                }
            }
        }
        Target::Moving => Err(Error::not_found(
            Resource::Delivery,
            format!("position {position} for consumer {consumer}"),
        )),
    }
}

/// Runs a relayed consumer until it leaves or its subscription ends.
pub(super) async fn run(
    subscriptions: Weak<Subscriptions>,
    id: ConsumerId,
    at: Attachment,
    cell: TargetCell,
    mut source: Subscription,
    tx: mpsc::Sender<SubscriptionItem>,
) {
    let mut caught_up_sent = false;
    let end = loop {
        let item = tokio::select! {
            item = source.next() => item,
            () = tx.closed() => break None,
        };
        match item {
            Some(SubscriptionItem::CaughtUp) if caught_up_sent => {}
            Some(item @ SubscriptionItem::CaughtUp) => {
                caught_up_sent = true;
                if tx.send(item).await.is_err() {
                    break None;
                }
            }
            Some(item @ SubscriptionItem::Event(_)) => {
                if tx.send(item).await.is_err() {
                    break None;
                }
            }
            Some(SubscriptionItem::End(
                end @ (SubscriptionEnd::Removed | SubscriptionEnd::StoreRemoved),
            )) => break Some(end),
            Some(SubscriptionItem::End(end)) => {
                drop(source);
                set_target(&cell, Target::Moving);
                let Some(owner) = subscriptions.upgrade() else {
                    break Some(SubscriptionEnd::Shutdown);
                };
                match owner.reattach(&at, &tx, end).await {
                    Ok((next, next_source)) => {
                        set_target(&cell, next);
                        source = next_source;
                    }
                    Err(end) => break Some(end),
                }
            }
            None => {
                drop(source);
                set_target(&cell, Target::Moving);
                let Some(owner) = subscriptions.upgrade() else {
                    break Some(SubscriptionEnd::Shutdown);
                };
                let cause = SubscriptionEnd::Failed(Error::unavailable(
                    Side::Worker,
                    "the subscription's source ended without an end",
                ));
                match owner.reattach(&at, &tx, cause).await {
                    Ok((next, next_source)) => {
                        set_target(&cell, next);
                        source = next_source;
                    }
                    Err(end) => break Some(end),
                }
            }
        }
    };
    if let Some(end) = end {
        let _ = tx.send(SubscriptionItem::End(end)).await;
    }
    if let Some(owner) = subscriptions.upgrade() {
        owner.forget_relay(id);
    }
}

impl Subscriptions {
    /// Finds the lease holder again after the consumer's source ended with
    /// `end`; gives up (with the end to report) when this worker stops, the
    /// subscription is gone or no holder answers within the attempts.
    async fn reattach(
        &self,
        at: &Attachment,
        tx: &mpsc::Sender<SubscriptionItem>,
        end: SubscriptionEnd,
    ) -> Result<(Target, Subscription), SubscriptionEnd> {
        let pause = self.shared.log.lease_period() / RENEWALS_PER_PERIOD;
        let mut last = end;
        for attempt in 0..RESOLVE_ATTEMPTS_MAX {
            if self.is_stopping() {
                return Err(SubscriptionEnd::Shutdown);
            }
            if attempt > 0 {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = tx.closed() => return Err(last),
                }
            }
            match self.resolve(at).await {
                Ok(found) => return Ok(found),
                Err(Error::NotFound {
                    resource: Resource::Subscription,
                    ..
                }) => return Err(SubscriptionEnd::Removed),
                Err(Error::NotFound {
                    resource: Resource::Store,
                    ..
                }) => return Err(SubscriptionEnd::StoreRemoved),
                Err(error) => last = SubscriptionEnd::Failed(error),
            }
        }
        Err(last)
    }

    /// [`Subscriptions::resolve`], tried again while the holder cannot be
    /// reached (a dead holder's lease has not run out yet), up to the
    /// attempts; the caller's own deadline may end the wait sooner.
    pub(super) async fn resolve_patiently(
        &self,
        at: &Attachment,
    ) -> Result<(Target, Subscription), Error> {
        let pause = self.shared.log.lease_period() / RENEWALS_PER_PERIOD;
        let mut attempt = 1;
        loop {
            match self.resolve(at).await {
                Err(error) if error.is_retryable() && attempt < RESOLVE_ATTEMPTS_MAX => {
                    tracing::debug!(subscription = %at.key, %error, "the lease holder is not reachable yet");
                    attempt += 1;
                    tokio::time::sleep(pause).await;
                }
                found => return found,
            }
        }
    }

    /// Attaches a consumer for `at` where the lease holder is: here, taking
    /// the lease if it is free, or on the holder through a peer.
    pub(super) async fn resolve(&self, at: &Attachment) -> Result<(Target, Subscription), Error> {
        match self.attach_here(&at.key, &at.options).await? {
            Ok(sub) => Ok((Target::Local(sub.consumer()), sub)),
            Err(address) if address == self.address => Err(Error::unavailable(
                Side::Worker,
                format!(
                    "subscription {} is leased to an earlier run of this worker; \
                     the lease runs out within one period",
                    at.key
                ),
            )),
            Err(address) => {
                let peer = self.peer(&address).await?;
                let sub = peer
                    .subscribe(&at.store, at.key.clone(), at.options.clone())
                    .await?;
                let consumer = sub.consumer();
                Ok((Target::Remote { peer, consumer }, sub))
            }
        }
    }

    /// A client for the worker at `address`.
    pub(super) async fn peer(&self, address: &str) -> Result<BoxGater, Error> {
        let Some(connector) = self.peers.get() else {
            return Err(Error::unavailable(
                Side::Worker,
                format!(
                    "the worker at {address} holds the subscription and this worker \
                     has no connection to other workers"
                ),
            ));
        };
        connector.connect(address).await.map_err(|e| {
            Error::unavailable(
                Side::Worker,
                format!("cannot reach the worker at {address} holding the subscription: {e}"),
            )
        })
    }
}

impl std::fmt::Debug for dyn PeerConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerConnector")
    }
}
