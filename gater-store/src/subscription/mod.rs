//! Subscriptions: catch-up then live delivery, persistent consumer groups,
//! acks, nacks, redelivery and parking, over a store's global log.
//!
//! The engine knows the store only through [`SubscriptionLog`]: reads of the
//! global log, a watch of the head position, and persistence of subscription
//! records. That keeps it independent of the backend (fjall or PostgreSQL).

mod consumer;
mod group;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use async_trait::async_trait;
use gater_core::{
    ConsumerId, Error, Limits, NackAction, Position, RecordedEvent, Resource, StoreId,
    SubscribeOptions, Subscription, SubscriptionEnd, SubscriptionInfo, SubscriptionKey,
    SubscriptionSpec,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use consumer::consumer_pair;
use group::{Command, Inputs, Start};

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
}

/// The subscriptions of one store.
///
/// Each persistent subscription has one task owning all its state; each
/// attached transient consumer has its own task, which ends (and is
/// forgotten) the moment the consumer's `Subscription` is dropped.
pub(crate) struct Subscriptions {
    store: StoreId,
    shared: Arc<Shared>,
    /// Serialises `save` and `remove`, which span awaits on the log.
    admin: tokio::sync::Mutex<()>,
    /// Largest window a consumer may ask for (`Limits::subscription_window_max`).
    window_max: u32,
}

/// What the API side and the transient tasks share.
struct Shared {
    log: Arc<dyn SubscriptionLog>,
    registry: Mutex<Registry>,
    /// `Some(end)` once `shutdown` was called; dropping it stops every task too.
    stop: watch::Sender<Option<SubscriptionEnd>>,
    next_consumer: AtomicU64,
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
    pub(crate) async fn open(store: StoreId, log: Arc<dyn SubscriptionLog>) -> Result<Self, Error> {
        let records = log.load_subscriptions().await?;
        let (stop, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            log,
            registry: Mutex::new(Registry::default()),
            stop,
            next_consumer: AtomicU64::new(1),
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
        Ok(Subscriptions {
            store,
            shared,
            admin: tokio::sync::Mutex::new(()),
            window_max: Limits::DEFAULT.subscription_window_max,
        })
    }

    /// The same registry enforcing `window_max` (the store's configured
    /// `Limits::subscription_window_max`) instead of the default.
    pub(crate) fn with_window_max(mut self, window_max: u32) -> Self {
        self.window_max = window_max;
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
            return self
                .request(&key, &commands, |reply| Command::Update { spec, reply })
                .await?;
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
        let window_max = self.window_max;
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
            let _admin = self.admin.lock().await;
            self.refresh(&key).await?;
        }
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
        self.request(&key, &commands, |reply| Command::Attach { link, reply })
            .await??;
        Ok(Subscription::new(id, stream))
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
        let head = *self.shared.log.watch_head().borrow();
        let end = head.map_or(0, |h| h.0.saturating_add(1));
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
        let commands = self.persistent_commands(key)?;
        self.request(key, &commands, |reply| Command::ListParked { reply })
            .await?
    }

    /// `Gater::replay_parked`.
    pub(crate) async fn replay_parked(&self, key: &SubscriptionKey) -> Result<u64, Error> {
        if key.is_transient() {
            return self.check_transient_known(key).map(|()| 0);
        }
        let commands = self.persistent_commands(key)?;
        self.request(key, &commands, |reply| Command::ReplayParked { reply })
            .await?
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
