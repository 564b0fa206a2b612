//! The task serving one subscription: it owns every piece of the
//! subscription's state and is driven by commands, the log's head, consumer
//! detaches and redelivery deadlines.
//!
//! Reading is one loop from catch-up to live: the reader keeps a next
//! position and reads the global log from there in batches; when it reaches
//! the head it waits for the head to move and reads on. There is no separate
//! live path, so the switch can neither skip nor repeat an event. A query
//! (or event-type) subscription reads through the store's tag and type
//! indexes instead of the log, the same loop over matching events only. The reader
//! reads only while consumers have credit, so a consumer that stops reading
//! stops the reader instead of filling memory.
//!
//! Each delivery waiting in a consumer's channel holds its bytes in the
//! server's memory budget, when the store was given one: the dispatcher
//! reserves them before it sends (see `dispatch`), and when the budget has
//! no room it stops dispatching and waits for room among its other inputs,
//! so acks, detaches and commands keep being served meanwhile. Room frees
//! as consumers take deliveries or leave; a consumer that stops reading
//! holds at most its window's worth.
//!
//! A durable (persistent) group tracks every delivery until it is acked,
//! skipped or parked; a transient one hands events over and forgets them.
//!
//! On shared storage a durable group reads, dispatches and writes its record
//! only while it holds the subscription's lease (see `crate::lease`): it
//! claims the lease when a consumer attaches here, renews it a few times per
//! period, writes every checkpoint fenced by its epoch, and gives it up when
//! it has no consumer left. A group that does not hold the lease attaches
//! nobody and answers with the holder's address, to which the caller relays.

mod dispatch;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use gater_core::memory::{ByteBudget, Reservation};
use gater_core::{
    ConsumerId, Error, NackAction, Position, Query, RecordedEvent, Resource, SubscriptionEnd,
    SubscriptionInfo, SubscriptionSpec,
};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::{sleep_until, Instant};

use super::consumer::{ConsumerLink, Queued};
use super::{SubscriptionLog, SubscriptionRecord};
use crate::lease::{Claim, Fence, RENEWALS_PER_PERIOD};
use gater_core::selector::Selector;

/// Events read per history read.
pub(super) const READ_BATCH_MAX: u32 = 1024;
/// Matching events read but not yet handed to a consumer, at most (plus one batch).
pub(super) const READ_AHEAD_MAX: usize = 4096;
/// Commands handled back to back before the task persists and looks at its other inputs.
pub(super) const COMMAND_BURST_MAX: usize = 256;
/// Most events parked (or being replayed) per subscription.
pub(super) const PARKED_MAX: usize = 10_000;
/// Most consumers attached to one subscription.
pub(super) const CONSUMERS_MAX: usize = 1024;
/// Pause before reading again after a failed or empty read.
const READ_RETRY_DELAY: Duration = Duration::from_millis(50);

/// A request to a subscription task.
#[derive(Debug)]
pub(super) enum Command {
    /// Attach a consumer.
    Attach {
        link: ConsumerLink,
        reply: oneshot::Sender<Result<Routed<()>, Error>>,
    },
    /// `ack_event`.
    Ack {
        consumer: ConsumerId,
        position: Position,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// `nack_event`.
    Nack {
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// One line of `get_subscriptions`.
    Info {
        reply: oneshot::Sender<SubscriptionInfo>,
    },
    /// `list_parked`.
    ListParked {
        reply: oneshot::Sender<Result<Routed<Vec<RecordedEvent>>, Error>>,
    },
    /// `replay_parked`.
    ReplayParked {
        reply: oneshot::Sender<Result<Routed<u64>, Error>>,
    },
    /// `save_subscription` of an existing persistent subscription: new settings.
    Update {
        spec: SubscriptionSpec,
        reply: oneshot::Sender<Result<Routed<()>, Error>>,
    },
    /// `remove_subscription`: delete the record, end the consumers, stop.
    Remove {
        reply: oneshot::Sender<Result<(), Error>>,
    },
    /// The record as another worker of a shared store left it: taken over
    /// unless consumers are attached here (then this task's state is the live one).
    Reload {
        record: SubscriptionRecord,
        reply: oneshot::Sender<()>,
    },
}

/// Done here, or to be done by the worker holding the lease, reached at this address.
#[derive(Debug)]
pub(super) enum Routed<T> {
    /// Done by this worker.
    Here(T),
    /// Another worker holds the lease; it is reached at this address.
    Owner(String),
}

/// Whether this task may read, dispatch and write the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A transient group, or a store of this worker alone: always.
    Sole,
    /// Holds the lease at `epoch`; renews at `renew_at`; without a renewal
    /// it must stop at `valid_until`.
    Owner {
        epoch: u64,
        renew_at: Instant,
        valid_until: Instant,
    },
    /// Another worker, or nobody, holds the lease: nothing is done here.
    Follower,
}

/// Where a subscription starts and what it remembers.
#[derive(Debug)]
pub(super) struct Start {
    /// The definition.
    pub(super) spec: SubscriptionSpec,
    /// Whether acks are tracked and the record persisted (persistent subscriptions).
    pub(super) durable: bool,
    /// The first position to read.
    pub(super) from: Position,
    /// Parked positions (persistent subscriptions reopened).
    pub(super) parked: Vec<Position>,
}

/// The inputs a task waits on besides its own state.
#[derive(Debug)]
pub(super) struct Inputs {
    /// Commands from the store's API.
    pub(super) commands: mpsc::Receiver<Command>,
    /// `Some(end)` once the store shuts the subscriptions down.
    pub(super) stop: watch::Receiver<Option<SubscriptionEnd>>,
    /// Notified when a consumer's stream is dropped.
    pub(super) detached: Arc<Notify>,
    /// The server's memory budget, in which buffered deliveries count.
    pub(super) budget: Option<Arc<dyn ByteBudget>>,
}

/// Budget room the task waited for, used by the next delivery it sends.
#[derive(Debug)]
enum Room {
    /// This many bytes, reserved.
    Held(u64, Reservation),
    /// The budget can never hold the delivery waiting: it goes unreserved
    /// rather than stall its subscription for good.
    Unbounded,
}

/// Serves one subscription until it is removed, shut down or (transient) its consumer leaves.
pub(super) async fn run(
    start: Start,
    log: Arc<dyn SubscriptionLog>,
    first: Option<ConsumerLink>,
    inputs: Inputs,
) {
    let mut group = Group::new(start, log, inputs.budget.clone());
    if let Some(link) = first {
        group.consumers.insert(link.id, link);
    }
    group.serve(inputs).await;
}

#[derive(Debug)]
struct InFlight {
    consumer: ConsumerId,
    attempt: u32,
    deadline: Instant,
    event: RecordedEvent,
}

#[derive(Debug)]
struct Retry {
    event: RecordedEvent,
    /// The last delivery's attempt number (0: never delivered since replay).
    attempt: u32,
    /// Who had it last: a late ack from them still counts.
    last_consumer: Option<ConsumerId>,
}

#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

struct Group {
    spec: SubscriptionSpec,
    selector: Selector,
    /// The query the selector stands for, when the store's indexes can
    /// answer it (see [`indexed_query`]).
    indexed: Option<Query>,
    durable: bool,
    log: Arc<dyn SubscriptionLog>,
    head: watch::Receiver<Option<Position>>,
    head_pos: Option<Position>,
    head_open: bool,
    next_read: Position,
    /// Where the reader first found the head: events from here on are live.
    caught_up_at: Option<Position>,
    read_retry_at: Option<Instant>,
    ready: VecDeque<RecordedEvent>,
    retry: BTreeMap<Position, Retry>,
    in_flight: HashMap<Position, InFlight>,
    deadlines: BTreeSet<(Instant, Position)>,
    /// Matching positions read and not yet acked, skipped or parked (durable only).
    outstanding: BTreeSet<Position>,
    parked: BTreeSet<Position>,
    /// Parked events moved back to delivery; kept in the record until handled.
    replaying: BTreeSet<Position>,
    consumers: BTreeMap<ConsumerId, ConsumerLink>,
    cursor: Option<ConsumerId>,
    persisted_checkpoint: Position,
    parked_dirty: bool,
    role: Role,
    /// The record was found removed: the task ends.
    removed: bool,
    /// The server's memory budget, in which buffered deliveries count.
    budget: Option<Arc<dyn ByteBudget>>,
    /// Room reserved while waiting, for the next delivery sent.
    room: Option<Room>,
    /// Bytes of the delivery the budget had no room for in the last
    /// dispatch; nothing after it went out, and the task waits for them.
    room_wanted: Option<u64>,
    /// The consumer whose full channel held the last dispatch back; the
    /// task waits for room in it. Taken at the dispatch, not at the wait: a
    /// consumer that drains its channel in between must still wake the task.
    blocked: Option<ConsumerId>,
}

impl Group {
    fn new(
        start: Start,
        log: Arc<dyn SubscriptionLog>,
        budget: Option<Arc<dyn ByteBudget>>,
    ) -> Group {
        let selector = start.spec.key.parsed_selector();
        let head = log.watch_head();
        let role = if start.durable && log.shared() {
            Role::Follower
        } else {
            Role::Sole
        };
        Group {
            role,
            removed: false,
            budget,
            room: None,
            room_wanted: None,
            blocked: None,
            spec: start.spec,
            indexed: indexed_query(&selector),
            selector,
            durable: start.durable,
            log,
            head,
            head_pos: None,
            head_open: true,
            next_read: start.from,
            caught_up_at: None,
            read_retry_at: None,
            ready: VecDeque::new(),
            retry: BTreeMap::new(),
            in_flight: HashMap::new(),
            deadlines: BTreeSet::new(),
            outstanding: BTreeSet::new(),
            parked: start.parked.into_iter().collect(),
            replaying: BTreeSet::new(),
            consumers: BTreeMap::new(),
            cursor: None,
            persisted_checkpoint: start.from,
            parked_dirty: false,
        }
    }

    async fn serve(&mut self, mut inputs: Inputs) {
        let stopped = inputs.stop.borrow_and_update().clone();
        if let Some(end) = stopped {
            self.finish_all(end);
            return;
        }
        loop {
            self.head_pos = *self.head.borrow_and_update();
            if self.lease_ran_out() {
                // A renewal came too late (a slow read or storage): another
                // worker may hold the lease now, so nothing more goes out here.
                self.lose_lease();
            }
            if self.caught_up_at.is_none() && self.at_head() {
                self.caught_up_at = Some(self.next_read);
            }
            self.dispatch();
            if !self.durable && self.consumers.is_empty() {
                return;
            }
            self.persist_if_dirty().await;
            if self.removed {
                self.finish_all(SubscriptionEnd::Removed);
                return;
            }
            if self.wait(&mut inputs).await == Flow::Exit {
                self.give_up_lease().await;
                return;
            }
        }
    }

    /// Waits for the next input and handles it.
    async fn wait(&mut self, inputs: &mut Inputs) -> Flow {
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        let read_retry_at = self.read_retry_at;
        let can_read = self.can_read();
        let wait_head = self.head_open && self.at_head();
        let blocked = self.blocked_sender();
        let wait_room = blocked.is_some();
        let wanted = self.room_wanted;
        let budget = self.budget.clone();
        let detached = Arc::clone(&inputs.detached);
        let renew_at = match self.role {
            Role::Owner { renew_at, .. } => Some(renew_at),
            Role::Sole | Role::Follower => None,
        };
        // Unbiased: a flood of acks must not starve reading, nor reading the acks.
        tokio::select! {
            () = sleep_until(renew_at.unwrap_or_else(Instant::now)), if renew_at.is_some() => {
                self.renew().await;
                Flow::Continue
            }
            changed = inputs.stop.changed() => {
                let end = match changed {
                    Ok(()) => inputs.stop.borrow().clone(),
                    Err(_) => None,
                };
                self.finish_all(end.unwrap_or(SubscriptionEnd::Shutdown));
                Flow::Exit
            }
            command = inputs.commands.recv() => match command {
                Some(command) => self.handle_burst(command, &mut inputs.commands).await,
                None => {
                    // The registry dropped its sender: a shutdown, whose reason
                    // is on the stop channel if it was given.
                    let end = inputs.stop.borrow().clone();
                    self.finish_all(end.unwrap_or(SubscriptionEnd::Shutdown));
                    Flow::Exit
                }
            },
            () = detached.notified() => {
                self.reap_detached();
                Flow::Continue
            }
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                self.expire(Instant::now());
                Flow::Continue
            }
            () = sleep_until(read_retry_at.unwrap_or_else(Instant::now)), if read_retry_at.is_some() => {
                self.read_retry_at = None;
                Flow::Continue
            }
            () = std::future::ready(()), if can_read => {
                self.read_batch().await;
                Flow::Continue
            }
            changed = self.head.changed(), if wait_head => {
                self.head_open = changed.is_ok();
                Flow::Continue
            }
            reserved = reserve_budget(budget, wanted), if wanted.is_some() => {
                self.room = Some(match reserved {
                    Ok((bytes, held)) => Room::Held(bytes, held),
                    Err(error) => {
                        tracing::warn!(
                            subscription = %self.spec.key,
                            %error,
                            "a delivery larger than the memory budget goes out unreserved"
                        );
                        Room::Unbounded
                    }
                });
                Flow::Continue
            }
            permit = reserve(blocked), if wait_room => {
                // The slot goes back at once; the next dispatch uses it.
                if permit.is_err() {
                    self.reap_detached();
                }
                Flow::Continue
            }
        }
    }

    async fn handle_burst(
        &mut self,
        first: Command,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Flow {
        if self.handle(first).await == Flow::Exit {
            return Flow::Exit;
        }
        for _ in 1..COMMAND_BURST_MAX {
            let Ok(command) = commands.try_recv() else {
                break;
            };
            if self.handle(command).await == Flow::Exit {
                return Flow::Exit;
            }
        }
        Flow::Continue
    }

    async fn handle(&mut self, command: Command) -> Flow {
        match command {
            Command::Attach { link, reply } => {
                let _ = reply.send(self.attach(link).await);
            }
            Command::Ack {
                consumer,
                position,
                reply,
            } => {
                let _ = reply.send(self.ack(consumer, position));
            }
            Command::Nack {
                consumer,
                position,
                action,
                reply,
            } => {
                let _ = reply.send(self.nack(consumer, position, action));
            }
            Command::Info { reply } => {
                let _ = reply.send(self.info());
            }
            Command::ListParked { reply } => {
                let _ = reply.send(self.list_parked().await);
            }
            Command::ReplayParked { reply } => {
                let _ = reply.send(self.replay_parked().await);
            }
            Command::Update { spec, reply } => {
                let _ = reply.send(self.update(spec).await);
            }
            Command::Reload { record, reply } => {
                self.reload(record);
                let _ = reply.send(());
            }
            Command::Remove { reply } => {
                if self.durable {
                    if let Err(e) = self.log.delete_subscription(&self.spec.key).await {
                        let _ = reply.send(Err(e));
                        return Flow::Continue;
                    }
                }
                self.finish_all(SubscriptionEnd::Removed);
                let _ = reply.send(Ok(()));
                return Flow::Exit;
            }
        }
        Flow::Continue
    }

    async fn attach(&mut self, link: ConsumerLink) -> Result<Routed<()>, Error> {
        if self.consumers.len() >= CONSUMERS_MAX {
            return Err(Error::limit(
                "subscription_consumers_max",
                CONSUMERS_MAX as u64,
                self.consumers.len() as u64 + 1,
            ));
        }
        if let Some(address) = self.take_ownership().await? {
            return Ok(Routed::Owner(address));
        }
        self.consumers.insert(link.id, link);
        Ok(Routed::Here(()))
    }

    /// Makes this task the lease holder unless another live worker holds it
    /// (then its address). Taking the lease starts over from the stored
    /// record, which the previous holder left.
    async fn take_ownership(&mut self) -> Result<Option<String>, Error> {
        if self.role != Role::Follower {
            return Ok(None);
        }
        let key = self.spec.key.clone();
        let asked = Instant::now();
        let epoch = match self.log.claim_lease(&key).await? {
            Claim::Held(epoch) => epoch,
            Claim::Other(lease) => return Ok(Some(lease.address)),
            Claim::Removed => {
                self.removed = true;
                return Err(Error::not_found(Resource::Subscription, &key));
            }
        };
        let record = match self.log.load_subscription(&key).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                self.removed = true;
                return Err(Error::not_found(Resource::Subscription, &key));
            }
            Err(error) => {
                // Not started: let the lease go again rather than hold it idle.
                let _ = self.log.release_lease(&key, epoch).await;
                return Err(error);
            }
        };
        self.reset(record);
        self.role = self.owner(epoch, asked);
        tracing::debug!(subscription = %key, epoch, "took the subscription's lease");
        Ok(None)
    }

    /// The lease held at `epoch` as claimed at `asked`: it is counted from
    /// before the claim was sent, so this worker stops serving no later than
    /// the storage lets another worker take over.
    fn owner(&self, epoch: u64, asked: Instant) -> Role {
        let period = self.log.lease_period();
        Role::Owner {
            epoch,
            renew_at: asked + period / RENEWALS_PER_PERIOD,
            valid_until: asked + period,
        }
    }

    /// Renews the lease; gives it up when no consumer is left here; stops
    /// serving when it was lost or the record removed.
    async fn renew(&mut self) {
        let Role::Owner {
            epoch, valid_until, ..
        } = self.role
        else {
            return;
        };
        self.reap_detached();
        if self.consumers.is_empty() && self.replaying.is_empty() {
            self.persist_if_dirty().await;
            self.give_up_lease().await;
            return;
        }
        let asked = Instant::now();
        let result = self.log.claim_lease(&self.spec.key).await;
        let now = Instant::now();
        match result {
            Ok(Claim::Held(renewed)) if renewed == epoch => self.role = self.owner(epoch, asked),
            // Held at a new epoch: it expired meanwhile and this state may be stale.
            Ok(Claim::Held(_) | Claim::Other(_)) => self.lose_lease(),
            Ok(Claim::Removed) => self.removed = true,
            Err(error) if now >= valid_until => {
                tracing::warn!(subscription = %self.spec.key, %error, "the lease could not be renewed");
                self.lose_lease();
            }
            Err(_) => {
                let period = self.log.lease_period();
                let retry = now + period / (RENEWALS_PER_PERIOD * 2);
                self.role = Role::Owner {
                    epoch,
                    renew_at: retry.min(valid_until),
                    valid_until,
                };
            }
        }
    }

    fn lease_ran_out(&self) -> bool {
        matches!(self.role, Role::Owner { valid_until, .. } if Instant::now() >= valid_until)
    }

    /// Lets the lease go (no consumer left, or the task ends) so another
    /// worker may take it at once.
    async fn give_up_lease(&mut self) {
        let Role::Owner { epoch, .. } = self.role else {
            return;
        };
        if let Err(error) = self.log.release_lease(&self.spec.key, epoch).await {
            tracing::debug!(subscription = %self.spec.key, %error, "releasing the lease failed; it expires");
        }
        self.role = Role::Follower;
        self.clear_delivery();
    }

    /// The lease went to another worker: this task stops serving; its
    /// consumers end with a retryable failure and attach again (to the holder).
    fn lose_lease(&mut self) {
        tracing::info!(subscription = %self.spec.key, "lost the subscription's lease");
        self.role = Role::Follower;
        self.finish_all(SubscriptionEnd::Failed(Error::unavailable(
            gater_core::Side::Worker,
            format!(
                "this worker lost the lease of subscription {}",
                self.spec.key
            ),
        )));
        self.clear_delivery();
    }

    fn ack(&mut self, consumer: ConsumerId, position: Position) -> Result<(), Error> {
        if !self.durable {
            return self.check_consumer(consumer);
        }
        self.take_delivery(consumer, position)?;
        self.handled(position);
        Ok(())
    }

    fn nack(
        &mut self,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        if !self.durable {
            return self.check_consumer(consumer);
        }
        if action == NackAction::Park && self.parked_full() {
            self.check_consumer(consumer)?;
            return Err(self.parked_limit());
        }
        let (event, attempt) = self.take_delivery(consumer, position)?;
        match action {
            NackAction::Skip => self.handled(position),
            NackAction::Park => self.park(position),
            NackAction::Retry => self.failed(event, attempt, Some(consumer)),
        }
        Ok(())
    }

    fn check_consumer(&self, consumer: ConsumerId) -> Result<(), Error> {
        if self.consumers.contains_key(&consumer) {
            Ok(())
        } else {
            Err(Error::not_found(Resource::Consumer, consumer))
        }
    }

    /// Takes the delivery of `position` away from `consumer`: in flight, or
    /// timed out and not yet redelivered (a late ack still counts).
    fn take_delivery(
        &mut self,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(RecordedEvent, u32), Error> {
        self.check_consumer(consumer)?;
        if self
            .in_flight
            .get(&position)
            .is_some_and(|f| f.consumer == consumer)
        {
            if let Some(flight) = self.in_flight.remove(&position) {
                self.deadlines.remove(&(flight.deadline, position));
                if let Some(link) = self.consumers.get_mut(&consumer) {
                    link.in_flight = link.in_flight.saturating_sub(1);
                }
                return Ok((flight.event, flight.attempt));
            }
        }
        if self
            .retry
            .get(&position)
            .is_some_and(|r| r.last_consumer == Some(consumer))
        {
            if let Some(retry) = self.retry.remove(&position) {
                return Ok((retry.event, retry.attempt));
            }
        }
        Err(Error::not_found(
            Resource::Delivery,
            format!("position {position} for consumer {consumer}"),
        ))
    }

    /// Acked or skipped: done with it for good.
    fn handled(&mut self, position: Position) {
        self.outstanding.remove(&position);
        if self.replaying.remove(&position) {
            self.parked_dirty = true;
        }
    }

    fn park(&mut self, position: Position) {
        debug_assert!(!self.parked_full());
        self.outstanding.remove(&position);
        self.replaying.remove(&position);
        self.parked.insert(position);
        self.parked_dirty = true;
    }

    fn parked_full(&self) -> bool {
        self.parked.len() + self.replaying.len() >= PARKED_MAX
    }

    fn parked_limit(&self) -> Error {
        Error::limit(
            "subscription_parked_max",
            PARKED_MAX as u64,
            (self.parked.len() + self.replaying.len()) as u64 + 1,
        )
    }

    /// A delivery went unacked (timeout or nack Retry): redeliver, or park after too many tries.
    fn failed(&mut self, event: RecordedEvent, attempt: u32, last: Option<ConsumerId>) {
        let position = event.position;
        // `attempt` counts deliveries; the first is no retry.
        if attempt > self.spec.max_retries {
            if !self.parked_full() {
                self.park(position);
                return;
            }
            tracing::warn!(
                subscription = %self.spec.key,
                %position,
                "parked list full; the event stays in delivery"
            );
        }
        let retry = Retry {
            event,
            attempt,
            last_consumer: last,
        };
        self.retry.insert(position, retry);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, position)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(flight) = self.in_flight.remove(&position) else {
                continue;
            };
            if let Some(link) = self.consumers.get_mut(&flight.consumer) {
                link.in_flight = link.in_flight.saturating_sub(1);
            }
            self.failed(flight.event, flight.attempt, Some(flight.consumer));
        }
    }

    /// Drops consumers whose stream is gone; their unacked events go back to delivery.
    fn reap_detached(&mut self) {
        let gone: Vec<ConsumerId> = self
            .consumers
            .values()
            .filter(|c| c.is_detached())
            .map(|c| c.id)
            .collect();
        for id in gone {
            self.consumers.remove(&id);
            let positions: Vec<Position> = self
                .in_flight
                .iter()
                .filter(|(_, f)| f.consumer == id)
                .map(|(p, _)| *p)
                .collect();
            for position in positions {
                if let Some(flight) = self.in_flight.remove(&position) {
                    self.deadlines.remove(&(flight.deadline, position));
                    let retry = Retry {
                        event: flight.event,
                        attempt: flight.attempt,
                        last_consumer: None,
                    };
                    self.retry.insert(position, retry);
                }
            }
            for retry in self.retry.values_mut() {
                if retry.last_consumer == Some(id) {
                    retry.last_consumer = None;
                }
            }
        }
    }

    fn finish_all(&mut self, end: SubscriptionEnd) {
        for (_, link) in std::mem::take(&mut self.consumers) {
            link.finish(end.clone());
        }
    }

    fn at_head(&self) -> bool {
        self.head_pos.is_none_or(|head| self.next_read > head)
    }

    /// Whether the reader may read on: not while a delivery waits for budget
    /// room, so events read ahead do not pile up behind it.
    fn can_read(&self) -> bool {
        self.room_wanted.is_none()
            && self.read_retry_at.is_none()
            && !self.at_head()
            && self.ready.len() < READ_AHEAD_MAX
            && self.ready.len() < self.total_credit()
    }

    fn checkpoint(&self) -> Position {
        let pending = if self.durable {
            self.outstanding.first().copied()
        } else {
            self.ready.front().map(|e| e.position)
        };
        pending.unwrap_or(self.next_read)
    }

    fn info(&self) -> SubscriptionInfo {
        let checkpoint = self.checkpoint();
        // The store's head now, not `head_pos`: that one moves only when the
        // task reads, so a consumer that stopped reading would hide its lag.
        let end = lag_end(*self.head.borrow());
        SubscriptionInfo {
            spec: self.spec.clone(),
            checkpoint,
            consumers: self.consumers.len() as u32,
            in_flight: self.in_flight.len() as u32,
            parked: self.parked.len() as u64,
            lag: end.saturating_sub(checkpoint.0),
        }
    }

    fn record(&self) -> SubscriptionRecord {
        let parked: BTreeSet<Position> = self.parked.union(&self.replaying).copied().collect();
        SubscriptionRecord {
            spec: self.spec.clone(),
            checkpoint: self.checkpoint(),
            parked: parked.into_iter().collect(),
        }
    }

    /// Stores the checkpoint and parked list if they changed: once per burst of work.
    async fn persist_if_dirty(&mut self) {
        if !self.durable {
            return;
        }
        let record = self.record();
        if record.checkpoint == self.persisted_checkpoint && !self.parked_dirty {
            return;
        }
        let written = match self.role {
            Role::Sole => self
                .log
                .put_subscription(&record)
                .await
                .map(|()| Fence::Written),
            Role::Owner { epoch, .. } => self.log.put_subscription_fenced(&record, epoch).await,
            Role::Follower => return,
        };
        match written {
            Ok(Fence::Written) => {
                self.persisted_checkpoint = record.checkpoint;
                self.parked_dirty = false;
            }
            Ok(Fence::LeaseLost) => self.lose_lease(),
            Ok(Fence::Removed) => self.removed = true,
            Err(e) => tracing::warn!(
                subscription = %self.spec.key,
                error = %e,
                "storing the subscription checkpoint failed; it is retried with the next change"
            ),
        }
    }

    /// Starts over from a stored record, if no consumer is attached here
    /// and this task does not hold the lease (then its state is the live one).
    fn reload(&mut self, record: SubscriptionRecord) {
        self.reap_detached();
        let owner = matches!(self.role, Role::Owner { .. });
        if !self.consumers.is_empty() || !self.durable || owner {
            return;
        }
        self.reset(record);
    }

    /// Forgets every delivery in progress (the lease went elsewhere: the
    /// next holder redelivers from the stored checkpoint).
    fn clear_delivery(&mut self) {
        self.next_read = self.persisted_checkpoint;
        self.caught_up_at = None;
        self.read_retry_at = None;
        self.cursor = None;
        self.ready.clear();
        self.retry.clear();
        self.in_flight.clear();
        self.deadlines.clear();
        self.outstanding.clear();
        self.replaying.clear();
    }

    /// Starts over from `record`.
    fn reset(&mut self, record: SubscriptionRecord) {
        self.spec = record.spec;
        self.selector = self.spec.key.parsed_selector();
        self.indexed = indexed_query(&self.selector);
        self.next_read = record.checkpoint;
        self.persisted_checkpoint = record.checkpoint;
        self.parked = record.parked.into_iter().collect();
        self.parked_dirty = false;
        self.clear_delivery();
    }

    async fn update(&mut self, spec: SubscriptionSpec) -> Result<Routed<()>, Error> {
        if let Some(address) = self.take_ownership().await? {
            return Ok(Routed::Owner(address));
        }
        let previous = std::mem::replace(&mut self.spec, spec);
        let record = self.record();
        let written = match self.role {
            Role::Owner { epoch, .. } => self.log.put_subscription_fenced(&record, epoch).await,
            Role::Sole | Role::Follower => self
                .log
                .put_subscription(&record)
                .await
                .map(|()| Fence::Written),
        };
        let refused = match written {
            Ok(Fence::Written) => None,
            Ok(Fence::LeaseLost) => {
                self.lose_lease();
                Some(Error::unavailable(
                    gater_core::Side::Worker,
                    format!(
                        "the lease of subscription {} moved; save it again",
                        self.spec.key
                    ),
                ))
            }
            Ok(Fence::Removed) => {
                self.removed = true;
                Some(Error::not_found(Resource::Subscription, &self.spec.key))
            }
            Err(e) => Some(e),
        };
        if let Some(error) = refused {
            self.spec = previous;
            return Err(error);
        }
        self.persisted_checkpoint = record.checkpoint;
        self.parked_dirty = false;
        Ok(Routed::Here(()))
    }

    async fn read_event(&self, position: Position) -> Result<RecordedEvent, Error> {
        self.log
            .read_committed(position)
            .await?
            .ok_or_else(|| Error::Storage(format!("parked event at position {position} is gone")))
    }

    async fn parked_events(&self) -> Result<Vec<RecordedEvent>, Error> {
        let mut events = Vec::with_capacity(self.parked.len());
        for position in &self.parked {
            events.push(self.read_event(*position).await?);
        }
        Ok(events)
    }

    /// The parked events as the lease holder knows them (it may not have
    /// stored its latest park yet).
    async fn list_parked(&mut self) -> Result<Routed<Vec<RecordedEvent>>, Error> {
        if let Some(address) = self.take_ownership().await? {
            return Ok(Routed::Owner(address));
        }
        self.parked_events().await.map(Routed::Here)
    }

    async fn replay_parked(&mut self) -> Result<Routed<u64>, Error> {
        if let Some(address) = self.take_ownership().await? {
            return Ok(Routed::Owner(address));
        }
        let events = self.parked_events().await?;
        let count = events.len() as u64;
        for event in events {
            let position = event.position;
            self.parked.remove(&position);
            self.replaying.insert(position);
            let retry = Retry {
                event,
                attempt: 0,
                last_consumer: None,
            };
            self.retry.insert(position, retry);
        }
        self.parked_dirty = true;
        Ok(Routed::Here(count))
    }

    async fn read_batch(&mut self) {
        // A query's events come from the store's indexes, so a query for a
        // rare tag does not read the whole log to find them.
        let read = match &self.indexed {
            Some(query) => {
                self.log
                    .read_query_forward(query, self.next_read, READ_BATCH_MAX)
                    .await
            }
            None => {
                self.log
                    .read_visible_forward(self.next_read, READ_BATCH_MAX)
                    .await
            }
        };
        let (events, next) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(
                    subscription = %self.spec.key,
                    error = %e,
                    "reading the log failed; retrying"
                );
                self.read_retry_at = Some(Instant::now() + READ_RETRY_DELAY);
                return;
            }
        };
        if events.is_empty() {
            if next > self.next_read {
                // Every event read is hidden (deleted, truncated, past retention).
                self.next_read = next;
                return;
            }
            // The head said there was more; give the store a moment to make it readable.
            self.read_retry_at = Some(Instant::now() + READ_RETRY_DELAY);
            return;
        }
        for event in events {
            if event.position < self.next_read {
                continue;
            }
            self.next_read = event.position.next();
            let position = event.position;
            if self.durable
                && (self.parked.contains(&position) || self.replaying.contains(&position))
            {
                continue;
            }
            if self.selector.matches(&event) {
                if self.durable {
                    self.outstanding.insert(position);
                }
                self.ready.push_back(event);
            }
        }
        // Hidden events after the last one shown were read too.
        self.next_read = self.next_read.max(next);
    }
}

/// The query with at least one item that `selector` stands for: a query
/// (the empty one matches everything and is read from the log) or one
/// event type (a query of that type).
fn indexed_query(selector: &Selector) -> Option<Query> {
    match selector {
        Selector::Query(query) if !query.items.is_empty() => Some(query.clone()),
        Selector::EventType(event_type) => Some(Query::item(vec![event_type.clone()], Vec::new())),
        _ => None,
    }
}

/// One past the head: the `end` that lag is counted up to.
pub(super) fn lag_end(head: Option<Position>) -> u64 {
    head.map_or(0, |head| head.0.saturating_add(1))
}

/// Waits for room for `bytes` in `budget`.
async fn reserve_budget(
    budget: Option<Arc<dyn ByteBudget>>,
    bytes: Option<u64>,
) -> Result<(u64, Reservation), Error> {
    match (budget, bytes) {
        (Some(budget), Some(bytes)) => budget
            .reserve_bytes(bytes, gater_core::Side::Worker)
            .await
            .map(|held| (bytes, held)),
        _ => std::future::pending().await,
    }
}

/// Waits for a slot in `sender`'s channel; releasing the permit gives it back.
async fn reserve(sender: Option<mpsc::Sender<Queued>>) -> Result<(), ()> {
    match sender {
        Some(sender) => sender.reserve_owned().await.map(drop).map_err(drop),
        None => std::future::pending().await,
    }
}
