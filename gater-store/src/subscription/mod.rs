//! Subscriptions: catch-up then live delivery, persistent consumer groups,
//! acks, nacks, redelivery and parking, over a store's global log.
//!
//! The engine knows the store only through [`SubscriptionLog`]: reads of the
//! global log, a watch of the head position, and persistence of subscription
//! records. That keeps it independent of the backend (fjall or PostgreSQL).

mod consumer;
mod group;
mod relay;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use gater_core::memory::ByteBudget;
use gater_core::{
    BoxGater, ConsumerId, Error, Limits, NackAction, Position, Query, RecordedEvent, Resource,
    Side, StoreId, SubscribeOptions, Subscription, SubscriptionEnd, SubscriptionInfo,
    SubscriptionKey, SubscriptionSpec,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::lease::{Claim, Fence};
use consumer::consumer_pair;
use group::{Command, Inputs, Routed, Start};
pub use relay::PeerConnector;
pub(crate) use relay::PeerSlot;
use relay::{Attachment, TargetCell};

/// Longest ack timeout a subscription may ask for, milliseconds (one day).
pub(crate) const ACK_TIMEOUT_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Commands queued for one subscription task before callers wait.
const COMMAND_QUEUE_LEN: usize = 64;
/// Most subscriptions per store: persistent ones plus saved transient settings.
const SUBSCRIPTIONS_MAX: usize = 10_000;
/// Most transient consumers attached at once per store.
const TRANSIENT_CONSUMERS_MAX: usize = 10_000;

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
    /// Up to `count` events from `from` that readers still see (see
    /// `crate::lifecycle`), reading past hidden ones, and the position
    /// after the last event read, shown or not: catch-up goes on from there.
    /// The default hides nothing.
    async fn read_visible_forward(
        &self,
        from: Position,
        count: u32,
    ) -> Result<(Vec<RecordedEvent>, Position), Error> {
        let events = self.read_all_forward(from, count).await?;
        let next = events.last().map_or(from, |e| e.position.next());
        Ok((events, next))
    }
    /// Up to `count` events matching `query` (at least one item) from
    /// `from` that readers still see, up to the head, and the position from
    /// which catch-up goes on: every event before it that is not among those
    /// returned does not match or does not show. A store serves it from its
    /// tag and type indexes, so a query for a rare tag reads about as many
    /// records as it matches; the default reads the log and filters it.
    async fn read_query_forward(
        &self,
        query: &Query,
        from: Position,
        count: u32,
    ) -> Result<(Vec<RecordedEvent>, Position), Error> {
        let (mut events, next) = self.read_visible_forward(from, count).await?;
        events.retain(|event| query.matches_event(event));
        Ok((events, next))
    }
    /// The position of the last committed event (`None`: empty log); changes after every commit.
    fn watch_head(&self) -> watch::Receiver<Option<Position>>;
    /// Every stored persistent subscription record.
    async fn load_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error>;
    /// Stores (creates or overwrites) a record durably.
    async fn put_subscription(&self, record: &SubscriptionRecord) -> Result<(), Error>;
    /// Deletes a record; deleting a missing one is Ok.
    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error>;
    /// Whether other workers serve the same store and its records (a shared
    /// database): records are then read again before they are relied on.
    fn shared(&self) -> bool {
        false
    }
    /// The stored record of one subscription.
    async fn load_subscription(
        &self,
        key: &SubscriptionKey,
    ) -> Result<Option<SubscriptionRecord>, Error> {
        let records = self.load_subscriptions().await?;
        Ok(records.into_iter().find(|r| &r.spec.key == key))
    }
    /// Takes or renews this worker's lease of `key` (see `crate::lease`);
    /// a log of this worker alone always grants it.
    async fn claim_lease(&self, _key: &SubscriptionKey) -> Result<Claim, Error> {
        Ok(Claim::Held(0))
    }
    /// Gives up this worker's lease of `key` at `epoch`.
    async fn release_lease(&self, _key: &SubscriptionKey, _epoch: u64) -> Result<(), Error> {
        Ok(())
    }
    /// Writes `record` if this worker holds its lease at `epoch` (a fenced compare-and-set).
    async fn put_subscription_fenced(
        &self,
        record: &SubscriptionRecord,
        _epoch: u64,
    ) -> Result<Fence, Error> {
        self.put_subscription(record).await.map(|()| Fence::Written)
    }
    /// The event at `position`, which was committed (a parked event), even
    /// if this worker's head has not announced it yet.
    async fn read_committed(&self, position: Position) -> Result<Option<RecordedEvent>, Error> {
        let events = self.read_all_forward(position, 1).await?;
        Ok(events.into_iter().find(|e| e.position == position))
    }
    /// How long a lease holds without renewal.
    fn lease_period(&self) -> Duration {
        Duration::from_millis(crate::lease::LEASE_PERIOD_MS_DEFAULT)
    }
}

/// The subscriptions of one store.
///
/// Each persistent subscription has one task owning all its state; each
/// attached transient consumer has its own task, which ends (and is
/// forgotten) the moment the consumer's `Subscription` is dropped.
pub(crate) struct Subscriptions {
    store: StoreId,
    /// Where other workers reach this one (shared storage).
    address: String,
    shared: Arc<Shared>,
    /// Serialises `save` and `remove`, which span awaits on the log.
    admin: tokio::sync::Mutex<()>,
    /// Reaches the worker holding a subscription's lease (shared storage).
    peers: PeerSlot,
    /// Consumers relayed to the lease holder, by the id given here.
    relays: Mutex<HashMap<ConsumerId, TargetCell>>,
    /// Lets relay tasks reach back without keeping the subscriptions alive.
    this: Weak<Subscriptions>,
    /// Largest window a consumer may ask for (`Limits::subscription_window_max`).
    window_max: AtomicU32,
}

/// What the API side and the transient tasks share.
struct Shared {
    log: Arc<dyn SubscriptionLog>,
    registry: Mutex<Registry>,
    /// `Some(end)` once `shutdown` was called; dropping it stops every task too.
    stop: watch::Sender<Option<SubscriptionEnd>>,
    next_consumer: AtomicU64,
    /// The server's memory budget, in which deliveries buffered for consumers count.
    budget: Option<Arc<dyn ByteBudget>>,
}

#[derive(Default)]
struct Registry {
    stopping: bool,
    persistent: HashMap<SubscriptionKey, Task>,
    /// Settings saved for transient subscriptions; their consumers start from these.
    transient_specs: HashMap<SubscriptionKey, SubscriptionSpec>,
    /// Attached transient consumers, each with its own task.
    transient: HashMap<ConsumerId, TransientTask>,
}

struct Task {
    commands: mpsc::Sender<Command>,
    detached: Arc<Notify>,
    join: JoinHandle<()>,
}

struct TransientTask {
    key: SubscriptionKey,
    task: Task,
}

impl fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriptions")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Subscriptions {
    /// Loads the store's persistent subscriptions and starts serving them.
    #[cfg(test)]
    pub(crate) async fn open(
        store: StoreId,
        log: Arc<dyn SubscriptionLog>,
    ) -> Result<Arc<Self>, Error> {
        Self::open_with_peers(store, log, String::new(), PeerSlot::default(), None).await
    }

    /// [`Subscriptions::open`] for a worker reached at `address` that
    /// relays to other workers through `peers`, counting deliveries
    /// buffered for consumers in `budget`.
    pub(crate) async fn open_with_peers(
        store: StoreId,
        log: Arc<dyn SubscriptionLog>,
        address: String,
        peers: PeerSlot,
        budget: Option<Arc<dyn ByteBudget>>,
    ) -> Result<Arc<Self>, Error> {
        let records = log.load_subscriptions().await?;
        let (stop, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            log,
            registry: Mutex::new(Registry::default()),
            stop,
            next_consumer: AtomicU64::new(1),
            budget,
        });
        {
            let mut registry = shared.registry();
            for record in records {
                if record.spec.key.is_transient() {
                    tracing::warn!(subscription = %record.spec.key, "ignoring a stored transient subscription");
                    continue;
                }
                let key = record.spec.key.clone();
                registry
                    .persistent
                    .insert(key, shared.spawn_persistent(record));
            }
        }
        Ok(Arc::new_cyclic(|this| Subscriptions {
            store,
            address,
            shared,
            admin: tokio::sync::Mutex::new(()),
            peers,
            window_max: AtomicU32::new(Limits::DEFAULT.subscription_window_max),
            relays: Mutex::default(),
            this: this.clone(),
        }))
    }

    /// The same registry enforcing `window_max` (the store's configured
    /// `Limits::subscription_window_max`) instead of the default.
    pub(crate) fn with_window_max(self: Arc<Self>, window_max: u32) -> Arc<Self> {
        self.window_max.store(window_max, Ordering::Relaxed);
        self
    }

    /// `Gater::save_subscription`.
    pub(crate) async fn save(&self, spec: SubscriptionSpec) -> Result<(), Error> {
        check_spec(&spec)?;
        let _admin = self.admin.lock().await;
        if !spec.key.is_transient() {
            self.refresh(&spec.key).await?;
        }
        let existing = {
            let mut registry = self.shared.registry();
            self.check_running(&registry)?;
            if spec.key.is_transient() {
                let count = registry.transient_specs.len() + registry.persistent.len();
                if !registry.transient_specs.contains_key(&spec.key) && count >= SUBSCRIPTIONS_MAX {
                    return Err(subscriptions_limit(count));
                }
                registry.transient_specs.insert(spec.key.clone(), spec);
                return Ok(());
            }
            registry
                .persistent
                .get(&spec.key)
                .map(|t| t.commands.clone())
        };
        if let Some(commands) = existing {
            let key = spec.key.clone();
            let forward = spec.clone();
            return match self
                .request(&key, &commands, |reply| Command::Update { spec, reply })
                .await??
            {
                Routed::Here(()) => Ok(()),
                Routed::Owner(address) => {
                    self.peer(&address)
                        .await?
                        .save_subscription(&self.store, forward)
                        .await
                }
            };
        }
        let count = {
            let registry = self.shared.registry();
            registry.transient_specs.len() + registry.persistent.len()
        };
        if count >= SUBSCRIPTIONS_MAX {
            return Err(subscriptions_limit(count));
        }
        let record = SubscriptionRecord {
            checkpoint: spec.start_from,
            spec,
            parked: Vec::new(),
        };
        self.shared.log.put_subscription(&record).await?;
        let mut registry = self.shared.registry();
        self.check_running(&registry)?;
        let key = record.spec.key.clone();
        let task = self.shared.spawn_persistent(record);
        registry.persistent.insert(key, task);
        Ok(())
    }

    /// `Gater::subscribe`.
    ///
    /// A persistent subscription always has a stored checkpoint (saving one
    /// stores `spec.start_from` as its first checkpoint), so its consumers
    /// start there and `options.start_from` applies to transient ones only.
    pub(crate) async fn subscribe(
        &self,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let window_max = self.window_max.load(Ordering::Relaxed);
        if options.window == 0 || options.window > window_max {
            return Err(Error::invalid(format!(
                "subscription window must be 1 to {window_max}, got {}",
                options.window
            )));
        }
        if key.is_transient() {
            return self.subscribe_transient(key, options);
        }
        if self.shared.log.shared() {
            return self.subscribe_relayed(key, options).await;
        }
        match self.attach_here(&key, &options).await? {
            Ok(sub) => Ok(sub),
            // Only a shared log has leases held elsewhere.
            Err(address) => Err(Error::unavailable(
                Side::Worker,
                format!("subscription {key} is served by the worker at {address}"),
            )),
        }
    }

    /// A consumer on shared storage: attached where the lease holder is, and
    /// followed there for its whole session (see `relay`).
    async fn subscribe_relayed(
        &self,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let at = Attachment {
            store: self.store.clone(),
            key,
            options,
        };
        let (target, source) = self.resolve_patiently(&at).await?;
        let id = self.shared.next_consumer_id();
        let cell: TargetCell = Arc::new(Mutex::new(target));
        lock(&self.relays).insert(id, Arc::clone(&cell));
        let (tx, rx) = mpsc::channel(at.options.window as usize + 1);
        tokio::spawn(relay::run(self.this.clone(), id, at, cell, source, tx));
        let items = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Subscription::new(id, items))
    }

    /// Attaches a consumer to this worker's own task for `key`; on shared
    /// storage only while this worker holds (or can take) the lease, else
    /// the holder's address.
    async fn attach_here(
        &self,
        key: &SubscriptionKey,
        options: &SubscribeOptions,
    ) -> Result<Result<Subscription, String>, Error> {
        if self.shared.log.shared() {
            let _admin = self.admin.lock().await;
            self.refresh(key).await?;
        }
        let key = key.clone();
        let (commands, detached) = {
            let registry = self.shared.registry();
            self.check_running(&registry)?;
            let task = registry
                .persistent
                .get(&key)
                .ok_or_else(|| Error::not_found(Resource::Subscription, &key))?;
            (task.commands.clone(), Arc::clone(&task.detached))
        };
        let id = self.shared.next_consumer_id();
        let (link, stream) = consumer_pair(id, options.window, detached);
        match self
            .request(&key, &commands, |reply| Command::Attach { link, reply })
            .await??
        {
            Routed::Here(()) => Ok(Ok(Subscription::new(id, stream))),
            Routed::Owner(address) => Ok(Err(address)),
        }
    }

    fn is_stopping(&self) -> bool {
        self.shared.registry().stopping
    }

    fn forget_relay(&self, id: ConsumerId) {
        lock(&self.relays).remove(&id);
    }

    fn relay_target(&self, id: ConsumerId) -> Option<TargetCell> {
        lock(&self.relays).get(&id).cloned()
    }

    /// `Gater::remove_subscription`.
    pub(crate) async fn remove(&self, key: &SubscriptionKey) -> Result<(), Error> {
        let _admin = self.admin.lock().await;
        if key.is_transient() {
            let (saved, attached) = {
                let mut registry = self.shared.registry();
                self.check_running(&registry)?;
                let saved = registry.transient_specs.remove(key).is_some();
                let attached: Vec<mpsc::Sender<Command>> = registry
                    .transient
                    .values()
                    .filter(|t| &t.key == key)
                    .map(|t| t.task.commands.clone())
                    .collect();
                (saved, attached)
            };
            if !saved && attached.is_empty() {
                return Err(Error::not_found(Resource::Subscription, key));
            }
            for commands in attached {
                // A consumer leaving at this instant ends its task anyway.
                let _ = self
                    .request(key, &commands, |reply| Command::Remove { reply })
                    .await;
            }
            return Ok(());
        }
        self.refresh(key).await?;
        let commands = self.persistent_commands(key)?;
        self.request(key, &commands, |reply| Command::Remove { reply })
            .await??;
        let task = self.shared.registry().persistent.remove(key);
        if let Some(task) = task {
            // The task replied and is returning; waiting keeps removal synchronous.
            let _ = task.join.await;
        }
        Ok(())
    }

    /// `Gater::get_subscriptions`.
    pub(crate) async fn list(&self) -> Result<Vec<SubscriptionInfo>, Error> {
        if self.shared.log.shared() {
            let _admin = self.admin.lock().await;
            self.refresh_all().await?;
        }
        let (mut tasks, idle) = {
            let registry = self.shared.registry();
            self.check_running(&registry)?;
            let mut persistent: Vec<(&SubscriptionKey, &Task)> =
                registry.persistent.iter().collect();
            persistent.sort_by(|a, b| a.0.cmp(b.0));
            let mut tasks: Vec<(SubscriptionKey, mpsc::Sender<Command>)> = persistent
                .into_iter()
                .map(|(k, t)| (k.clone(), t.commands.clone()))
                .collect();
            let mut transient: Vec<(&ConsumerId, &TransientTask)> =
                registry.transient.iter().collect();
            transient.sort_by_key(|(id, _)| **id);
            tasks.extend(
                transient
                    .into_iter()
                    .map(|(_, t)| (t.key.clone(), t.task.commands.clone())),
            );
            let mut idle: Vec<SubscriptionSpec> = registry
                .transient_specs
                .values()
                .filter(|spec| !registry.transient.values().any(|t| t.key == spec.key))
                .cloned()
                .collect();
            idle.sort_by(|a, b| a.key.cmp(&b.key));
            (tasks, idle)
        };
        let mut infos = Vec::with_capacity(tasks.len() + idle.len());
        for (key, commands) in tasks.drain(..) {
            // A task that ended meanwhile is simply no longer listed.
            if let Ok(info) = self
                .request(&key, &commands, |reply| Command::Info { reply })
                .await
            {
                infos.push(info);
            }
        }
        let end = group::lag_end(*self.shared.log.watch_head().borrow());
        infos.extend(idle.into_iter().map(|spec| SubscriptionInfo {
            checkpoint: spec.start_from,
            lag: end.saturating_sub(spec.start_from.0),
            spec,
            consumers: 0,
            in_flight: 0,
            parked: 0,
        }));
        Ok(infos)
    }

    /// `Gater::ack_event`.
    pub(crate) async fn ack(
        &self,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        if key.is_transient() {
            return self.check_transient_consumer(key, consumer);
        }
        if let Some(cell) = self.relay_target(consumer) {
            return relay::forward_ack(self, &cell, key, consumer, position, None).await;
        }
        self.ack_local(key, consumer, position).await
    }

    /// An ack of a consumer attached to this worker's own task.
    async fn ack_local(
        &self,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        let commands = self.persistent_commands(key)?;
        self.request(key, &commands, |reply| Command::Ack {
            consumer,
            position,
            reply,
        })
        .await?
    }

    /// `Gater::nack_event`.
    pub(crate) async fn nack(
        &self,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        if key.is_transient() {
            return self.check_transient_consumer(key, consumer);
        }
        if let Some(cell) = self.relay_target(consumer) {
            return relay::forward_ack(self, &cell, key, consumer, position, Some(action)).await;
        }
        self.nack_local(key, consumer, position, action).await
    }

    /// A nack of a consumer attached to this worker's own task.
    async fn nack_local(
        &self,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        let commands = self.persistent_commands(key)?;
        self.request(key, &commands, |reply| Command::Nack {
            consumer,
            position,
            action,
            reply,
        })
        .await?
    }

    /// `Gater::list_parked`.
    pub(crate) async fn list_parked(
        &self,
        key: &SubscriptionKey,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if key.is_transient() {
            // Transient deliveries are never parked.
            return self.check_transient_known(key).map(|()| Vec::new());
        }
        self.on_holder(
            key,
            |reply| Command::ListParked { reply },
            |peer: BoxGater| async move { peer.list_parked(&self.store, key).await },
        )
        .await
    }

    /// `Gater::replay_parked`.
    pub(crate) async fn replay_parked(&self, key: &SubscriptionKey) -> Result<u64, Error> {
        if key.is_transient() {
            return self.check_transient_known(key).map(|()| 0);
        }
        self.on_holder(
            key,
            |reply| Command::ReplayParked { reply },
            |peer: BoxGater| async move { peer.replay_parked(&self.store, key).await },
        )
        .await
    }

    /// Asks the group task of persistent subscription `key` (on shared
    /// storage after reading its stored record again) and, when another
    /// worker holds its lease, asks that worker with `remote` instead.
    async fn on_holder<T, Remote>(
        &self,
        key: &SubscriptionKey,
        command: impl FnOnce(oneshot::Sender<Result<Routed<T>, Error>>) -> Command,
        remote: impl FnOnce(BoxGater) -> Remote,
    ) -> Result<T, Error>
    where
        Remote: std::future::Future<Output = Result<T, Error>>,
    {
        if self.shared.log.shared() {
            let _admin = self.admin.lock().await;
            self.refresh(key).await?;
        }
        let commands = self.persistent_commands(key)?;
        match self.request(key, &commands, command).await?? {
            Routed::Here(answer) => Ok(answer),
            Routed::Owner(address) => remote(self.peer(&address).await?).await,
        }
    }

    /// Ends every consumer with `end` and stops background work (store removal, shutdown).
    pub(crate) async fn shutdown(&self, end: SubscriptionEnd) {
        let joins: Vec<JoinHandle<()>> = {
            let mut registry = self.shared.registry();
            registry.stopping = true;
            // The reason goes out before the tasks' command senders are dropped below.
            self.shared.stop.send_replace(Some(end));
            registry.transient_specs.clear();
            let mut joins: Vec<JoinHandle<()>> =
                registry.persistent.drain().map(|(_, t)| t.join).collect();
            joins.extend(registry.transient.drain().map(|(_, t)| t.task.join));
            joins
        };
        for join in joins {
            // A task that panicked has nothing left to stop.
            let _ = join.await;
        }
    }

    /// On a shared store, brings the local task of persistent `key` in line
    /// with the stored record, which another worker may have created,
    /// advanced or deleted: starts a task for a record new here, hands an
    /// idle task the stored checkpoint, ends a task whose record is gone.
    /// Does nothing on a store of this worker alone. The caller holds `admin`.
    async fn refresh(&self, key: &SubscriptionKey) -> Result<(), Error> {
        if !self.shared.log.shared() {
            return Ok(());
        }
        let record = self.shared.log.load_subscription(key).await?;
        let existing = {
            let registry = self.shared.registry();
            self.check_running(&registry)?;
            registry.persistent.get(key).map(|t| t.commands.clone())
        };
        match (record, existing) {
            (Some(record), Some(commands)) => {
                self.request(key, &commands, |reply| Command::Reload { record, reply })
                    .await
            }
            (Some(record), None) => self.adopt(record),
            (None, Some(commands)) => {
                // Deleting the missing record again is Ok; consumers end as removed.
                let _ = self
                    .request(key, &commands, |reply| Command::Remove { reply })
                    .await;
                self.shared.registry().persistent.remove(key);
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    /// `refresh` for every stored record and every local persistent task.
    async fn refresh_all(&self) -> Result<(), Error> {
        let mut keys: Vec<SubscriptionKey> = self
            .shared
            .log
            .load_subscriptions()
            .await?
            .into_iter()
            .map(|r| r.spec.key)
            .collect();
        keys.extend(self.shared.registry().persistent.keys().cloned());
        keys.sort();
        keys.dedup();
        for key in keys {
            self.refresh(&key).await?;
        }
        Ok(())
    }

    /// Starts serving a persistent subscription that another worker saved.
    fn adopt(&self, record: SubscriptionRecord) -> Result<(), Error> {
        let mut registry = self.shared.registry();
        self.check_running(&registry)?;
        let count = registry.transient_specs.len() + registry.persistent.len();
        if count >= SUBSCRIPTIONS_MAX {
            return Err(subscriptions_limit(count));
        }
        let key = record.spec.key.clone();
        let task = self.shared.spawn_persistent(record);
        registry.persistent.insert(key, task);
        Ok(())
    }

    fn subscribe_transient(
        &self,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let mut registry = self.shared.registry();
        self.check_running(&registry)?;
        if registry.transient.len() >= TRANSIENT_CONSUMERS_MAX {
            return Err(Error::limit(
                "transient_consumers_max",
                TRANSIENT_CONSUMERS_MAX as u64,
                registry.transient.len() as u64 + 1,
            ));
        }
        let spec = registry
            .transient_specs
            .get(&key)
            .cloned()
            .unwrap_or_else(|| SubscriptionSpec::new(key.clone()));
        let start = Start {
            from: options.start_from.unwrap_or(spec.start_from),
            spec,
            durable: false,
            parked: Vec::new(),
        };
        let id = self.shared.next_consumer_id();
        let detached = Arc::new(Notify::new());
        let (link, stream) = consumer_pair(id, options.window, Arc::clone(&detached));
        let (commands, inputs) = self.shared.inputs(Arc::clone(&detached));
        let log = Arc::clone(&self.shared.log);
        let shared = Arc::downgrade(&self.shared);
        let join = tokio::spawn(async move {
            group::run(start, log, Some(link), inputs).await;
            forget_transient(&shared, id);
        });
        let task = Task {
            commands,
            detached,
            join,
        };
        registry.transient.insert(id, TransientTask { key, task });
        Ok(Subscription::new(id, stream))
    }

    fn check_running(&self, registry: &Registry) -> Result<(), Error> {
        if registry.stopping {
            return Err(self.stopping());
        }
        Ok(())
    }

    fn stopping(&self) -> Error {
        Error::StoreStopping {
            store: self.store.to_string(),
        }
    }

    fn persistent_commands(&self, key: &SubscriptionKey) -> Result<mpsc::Sender<Command>, Error> {
        let registry = self.shared.registry();
        self.check_running(&registry)?;
        registry
            .persistent
            .get(key)
            .map(|t| t.commands.clone())
            .ok_or_else(|| Error::not_found(Resource::Subscription, key))
    }

    /// Transient deliveries need no ack: acks and nacks are accepted if the consumer is attached.
    fn check_transient_consumer(
        &self,
        key: &SubscriptionKey,
        consumer: ConsumerId,
    ) -> Result<(), Error> {
        let attached = {
            let registry = self.shared.registry();
            self.check_running(&registry)?;
            registry
                .transient
                .get(&consumer)
                .is_some_and(|t| &t.key == key)
        };
        if attached {
            return Ok(());
        }
        self.check_transient_known(key)?;
        Err(Error::not_found(Resource::Consumer, consumer))
    }

    fn check_transient_known(&self, key: &SubscriptionKey) -> Result<(), Error> {
        let registry = self.shared.registry();
        self.check_running(&registry)?;
        let known = registry.transient_specs.contains_key(key)
            || registry.transient.values().any(|t| &t.key == key);
        if known {
            Ok(())
        } else {
            Err(Error::not_found(Resource::Subscription, key))
        }
    }

    /// Sends a command to a subscription task and waits for its answer.
    async fn request<T>(
        &self,
        key: &SubscriptionKey,
        commands: &mpsc::Sender<Command>,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        if commands.send(command(reply)).await.is_err() {
            return Err(self.gone(key));
        }
        answer.await.map_err(|_| self.gone(key))
    }

    /// The error for a task that ended under our feet: shut down, or removed.
    fn gone(&self, key: &SubscriptionKey) -> Error {
        if self.shared.registry().stopping {
            self.stopping()
        } else {
            Error::not_found(Resource::Subscription, key)
        }
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // The registry holds plain maps; a panic elsewhere cannot leave them half-updated.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// 128 random bits from the OS; should the OS source fail, the counter
    /// keeps ids unique (and the process-random hasher keys unpredictable).
    fn next_consumer_id(&self) -> ConsumerId {
        let mut bytes = [0; 16];
        if getrandom::getrandom(&mut bytes).is_err() {
            use std::hash::{BuildHasher, Hasher};
            let n = self.next_consumer.fetch_add(1, Ordering::Relaxed);
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(n);
            bytes[..8].copy_from_slice(&hasher.finish().to_le_bytes());
            bytes[8..].copy_from_slice(&n.to_le_bytes());
        }
        ConsumerId::from_random_bytes(bytes)
    }

    fn inputs(&self, detached: Arc<Notify>) -> (mpsc::Sender<Command>, Inputs) {
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE_LEN);
        let inputs = Inputs {
            commands: receiver,
            stop: self.stop.subscribe(),
            detached,
            budget: self.budget.clone(),
        };
        (commands, inputs)
    }

    fn spawn_persistent(&self, record: SubscriptionRecord) -> Task {
        let start = Start {
            spec: record.spec,
            durable: true,
            from: record.checkpoint,
            parked: record.parked,
        };
        let detached = Arc::new(Notify::new());
        let (commands, inputs) = self.inputs(Arc::clone(&detached));
        let log = Arc::clone(&self.log);
        let join = tokio::spawn(group::run(start, log, None, inputs));
        Task {
            commands,
            detached,
            join,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps, each update whole: a panic elsewhere leaves them consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn forget_transient(shared: &Weak<Shared>, id: ConsumerId) {
    if let Some(shared) = shared.upgrade() {
        shared.registry().transient.remove(&id);
    }
}

fn check_spec(spec: &SubscriptionSpec) -> Result<(), Error> {
    if spec.ack_timeout_ms == 0 || spec.ack_timeout_ms > ACK_TIMEOUT_MS_MAX {
        return Err(Error::invalid(format!(
            "ack_timeout_ms must be 1 to {ACK_TIMEOUT_MS_MAX}, got {}",
            spec.ack_timeout_ms
        )));
    }
    Ok(())
}

fn subscriptions_limit(count: usize) -> Error {
    Error::limit(
        "subscriptions_max",
        SUBSCRIPTIONS_MAX as u64,
        count as u64 + 1,
    )
}
