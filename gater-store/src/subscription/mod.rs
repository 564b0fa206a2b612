//! Subscriptions: catch-up then live delivery, persistent consumer groups,
//! acks, nacks, redelivery and parking, over a store's global log.
//!
//! The engine knows the store only through [`SubscriptionLog`]: reads of the
//! global log, a watch of the head position, and persistence of subscription
//! records. That keeps it independent of the backend (fjall or PostgreSQL).

use std::sync::Arc;

use async_trait::async_trait;
use gater_core::{
    ConsumerId, Error, NackAction, Position, RecordedEvent, StoreId, SubscribeOptions,
    Subscription, SubscriptionEnd, SubscriptionInfo, SubscriptionKey, SubscriptionSpec,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A persistent subscription as stored: its definition, checkpoint and parked events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubscriptionRecord {
    /// The definition.
    pub(crate) spec: SubscriptionSpec,
    /// Next position to process: every earlier matching event is acked, skipped or parked.
    pub(crate) checkpoint: Position,
    /// Positions of parked events, ascending.
    pub(crate) parked: Vec<Position>,
}

/// What the subscription engine needs from the store it serves.
#[async_trait]
pub(crate) trait SubscriptionLog: Send + Sync + 'static {
    /// Up to `count` events of the global log from `from`, ascending.
    async fn read_all_forward(
        &self,
        from: Position,
        count: u32,
    ) -> Result<Vec<RecordedEvent>, Error>;
    /// The position of the last committed event (`None`: empty log); changes after every commit.
    fn watch_head(&self) -> watch::Receiver<Option<Position>>;
    /// Every stored persistent subscription record.
    async fn load_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error>;
    /// Stores (creates or overwrites) a record durably.
    async fn put_subscription(&self, record: &SubscriptionRecord) -> Result<(), Error>;
    /// Deletes a record; deleting a missing one is Ok.
    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error>;
}

/// The subscriptions of one store.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    store: StoreId,
}

impl Subscriptions {
    /// Loads the store's persistent subscriptions and starts serving them.
    pub(crate) async fn open(store: StoreId, log: Arc<dyn SubscriptionLog>) -> Result<Self, Error> {
        let _ = log;
        Ok(Subscriptions { store })
    }

    /// `Gater::save_subscription`.
    pub(crate) async fn save(&self, spec: SubscriptionSpec) -> Result<(), Error> {
        let _ = spec;
        Err(self.unsupported())
    }

    /// `Gater::subscribe`.
    pub(crate) async fn subscribe(
        &self,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let _ = (key, options);
        Err(self.unsupported())
    }

    /// `Gater::remove_subscription`.
    pub(crate) async fn remove(&self, key: &SubscriptionKey) -> Result<(), Error> {
        let _ = key;
        Err(self.unsupported())
    }

    /// `Gater::get_subscriptions`.
    pub(crate) async fn list(&self) -> Result<Vec<SubscriptionInfo>, Error> {
        Err(self.unsupported())
    }

    /// `Gater::ack_event`.
    pub(crate) async fn ack(
        &self,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        let _ = (key, consumer, position);
        Err(self.unsupported())
    }

    /// `Gater::nack_event`.
    pub(crate) async fn nack(
        &self,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        let _ = (key, consumer, position, action);
        Err(self.unsupported())
    }

    /// `Gater::list_parked`.
    pub(crate) async fn list_parked(
        &self,
        key: &SubscriptionKey,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let _ = key;
        Err(self.unsupported())
    }

    /// `Gater::replay_parked`.
    pub(crate) async fn replay_parked(&self, key: &SubscriptionKey) -> Result<u64, Error> {
        let _ = key;
        Err(self.unsupported())
    }

    /// Ends every consumer with `end` and stops background work (store removal, shutdown).
    pub(crate) async fn shutdown(&self, end: SubscriptionEnd) {
        let _ = end;
    }

    fn unsupported(&self) -> Error {
        Error::Unsupported(format!(
            "subscriptions of store {} are not served yet",
            self.store
        ))
    }
}
