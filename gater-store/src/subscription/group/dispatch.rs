//! Handing events to consumers: who gets the next event (round robin or
//! pinned by stream), how much credit each consumer has, and the `CaughtUp`
//! marker that separates history from live events.
//!
//! A delivery sent reserves its bytes in the server's memory budget (if the
//! store has one); they go back when the consumer takes it. When the budget
//! has no room, the dispatch stops there, so no later event overtakes the
//! one that waits, and the task waits for room (`Group::room_wanted`).
//!
//! Pinned by stream is ordered per stream: a stream has at most one event
//! outstanding (in flight, or waiting for redelivery) at a time, and its
//! later events wait until that one is acked, skipped or parked. Timeouts,
//! retries and a consumer leaving therefore never let a later event of the
//! stream overtake an earlier one; other streams keep flowing.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use gater_core::memory::{event_bytes, Reservation};
use gater_core::{
    ConsumerId, ConsumerStrategy, Delivery, Position, RecordedEvent, StreamId, SubscriptionItem,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Group, InFlight, Retry, Room};
use crate::subscription::consumer::{ConsumerLink, Queued};

/// Where the next event of a stream goes.
enum Route {
    /// This consumer, which has credit.
    To(ConsumerId),
    /// The stream's consumer has no credit now.
    Blocked(ConsumerId),
    /// No consumer has credit.
    Nobody,
}

impl Group {
    /// Free credit of one consumer: window room (durable) and channel room.
    pub(super) fn credit(&self, link: &ConsumerLink) -> usize {
        let room = link.channel_room();
        if self.durable {
            room.min(link.window.saturating_sub(link.in_flight) as usize)
        } else {
            room
        }
    }

    pub(super) fn total_credit(&self) -> usize {
        self.consumers.values().map(|c| self.credit(c)).sum()
    }

    /// A consumer that would take more if its channel had room: the task
    /// waits for that room (the consumer reading) instead of polling.
    pub(super) fn blocked_consumer(&self) -> Option<&ConsumerLink> {
        let unread = !self.at_head() && self.read_retry_at.is_none();
        let work =
            unread || !self.ready.is_empty() || !self.retry.is_empty() || self.caught_up_due();
        if !work {
            return None;
        }
        self.consumers.values().find(|c| {
            c.channel_room() == 0 && (!self.durable || c.in_flight < c.window) && !c.is_detached()
        })
    }

    /// The sender of the consumer the last dispatch found blocked, if it is
    /// still attached: waiting for its room returns at once when it read
    /// meanwhile, so the task dispatches again instead of sleeping.
    pub(super) fn blocked_sender(&self) -> Option<mpsc::Sender<Queued>> {
        self.blocked
            .and_then(|id| self.consumers.get(&id))
            .map(ConsumerLink::sender)
    }

    pub(super) fn caught_up_due(&self) -> bool {
        let Some(mark) = self.caught_up_at else {
            return false;
        };
        self.ready.front().is_none_or(|e| e.position >= mark)
            && self.consumers.values().any(|c| !c.caught_up_sent)
    }

    /// Hands out redeliveries, then new events, as far as credit goes; then `CaughtUp`.
    pub(super) fn dispatch(&mut self) {
        self.room_wanted = None;
        self.dispatch_all();
        self.blocked = self.blocked_consumer().map(|c| c.id);
        // Room waited for but not used (its delivery went elsewhere or
        // waits for channel room) goes back rather than sit idle.
        self.room = None;
    }

    fn dispatch_all(&mut self) {
        if self.consumers.is_empty() {
            return;
        }
        let ordered = self.ordered_by_stream();
        // Streams with an event outstanding wait for it (pinned only).
        let mut blocked_streams: HashSet<StreamId> = if ordered {
            self.in_flight
                .values()
                .map(|f| f.event.stream.clone())
                .collect()
        } else {
            HashSet::new()
        };
        let mut full: HashSet<ConsumerId> = HashSet::new();
        if !self.retry.is_empty() {
            let positions: Vec<Position> = self.retry.keys().copied().collect();
            for position in positions {
                if full.len() >= self.consumers.len() || self.room_wanted.is_some() {
                    break;
                }
                let Some(stream) = self.retry.get(&position).map(|r| r.event.stream.clone()) else {
                    continue;
                };
                if blocked_streams.contains(&stream) {
                    continue;
                }
                match self.route(&stream) {
                    Route::Nobody => break,
                    Route::Blocked(consumer) => {
                        full.insert(consumer);
                        blocked_streams.insert(stream);
                    }
                    Route::To(consumer) => {
                        self.cursor = Some(consumer);
                        let Some(retry) = self.retry.remove(&position) else {
                            continue;
                        };
                        let attempt = retry.attempt.saturating_add(1);
                        if let Some(event) = self.offer(consumer, retry.event, attempt) {
                            self.retry.insert(position, Retry { event, ..retry });
                            full.insert(consumer);
                            blocked_streams.insert(stream);
                        } else if ordered {
                            blocked_streams.insert(stream);
                        }
                    }
                }
            }
        }
        if ordered {
            // A redelivery still waiting holds back its stream's later events.
            blocked_streams.extend(self.retry.values().map(|r| r.event.stream.clone()));
        }
        self.dispatch_ready(&mut blocked_streams, &mut full);
        self.announce_caught_up();
    }

    fn dispatch_ready(
        &mut self,
        blocked_streams: &mut HashSet<StreamId>,
        full: &mut HashSet<ConsumerId>,
    ) {
        let mut index = 0;
        while index < self.ready.len()
            && full.len() < self.consumers.len()
            && self.room_wanted.is_none()
        {
            let stream = &self.ready[index].stream;
            if blocked_streams.contains(stream) {
                index += 1;
                continue;
            }
            match self.route(stream) {
                Route::Nobody => break,
                Route::Blocked(consumer) => {
                    full.insert(consumer);
                    blocked_streams.insert(self.ready[index].stream.clone());
                    index += 1;
                }
                Route::To(consumer) => {
                    self.cursor = Some(consumer);
                    let Some(event) = self.ready.remove(index) else {
                        break;
                    };
                    let stream = event.stream.clone();
                    if let Some(event) = self.offer(consumer, event, 1) {
                        self.ready.insert(index, event);
                        full.insert(consumer);
                        index += 1;
                        blocked_streams.insert(stream);
                    } else if self.ordered_by_stream() {
                        blocked_streams.insert(stream);
                    }
                }
            }
        }
    }

    /// Whether events are ordered per stream (pinned by stream, durable).
    fn ordered_by_stream(&self) -> bool {
        self.durable && self.spec.strategy == ConsumerStrategy::PinnedByStream
    }

    /// Who gets the next event of `stream`.
    fn route(&self, stream: &StreamId) -> Route {
        if self.durable && self.spec.strategy == ConsumerStrategy::PinnedByStream {
            let Some(consumer) = self.pinned(stream) else {
                return Route::Nobody;
            };
            return match self.consumers.get(&consumer) {
                Some(link) if self.credit(link) > 0 => Route::To(consumer),
                _ => Route::Blocked(consumer),
            };
        }
        let after = self
            .cursor
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let next = self
            .consumers
            .range((after, std::ops::Bound::Unbounded))
            .chain(self.consumers.range(..))
            .find(|(_, link)| self.credit(link) > 0)
            .map(|(id, _)| *id);
        next.map_or(Route::Nobody, Route::To)
    }

    /// The consumer a stream is pinned to: rendezvous hashing, so a consumer
    /// joining or leaving moves only the streams it gains or loses. Order
    /// survives a move: the stream's one outstanding event goes back to
    /// delivery when its consumer leaves, before any later one.
    fn pinned(&self, stream: &StreamId) -> Option<ConsumerId> {
        self.consumers
            .keys()
            .max_by_key(|id| {
                let mut hasher = DefaultHasher::new();
                stream.hash(&mut hasher);
                id.hash(&mut hasher);
                hasher.finish()
            })
            .copied()
    }

    /// Sends `event` to `consumer` if it has room (in its channel and in the
    /// memory budget), `CaughtUp` first when the event is the first live one
    /// it gets; gives the event back if it could not.
    fn offer(
        &mut self,
        consumer: ConsumerId,
        event: RecordedEvent,
        attempt: u32,
    ) -> Option<RecordedEvent> {
        let live = self.caught_up_at.is_some_and(|mark| event.position >= mark);
        let Some(link) = self.consumers.get_mut(&consumer) else {
            return Some(event);
        };
        if live && !link.caught_up_sent {
            if !link.try_send(SubscriptionItem::CaughtUp, None) {
                return Some(event);
            }
            link.caught_up_sent = true;
        }
        if link.channel_room() == 0 || link.is_detached() {
            return Some(event);
        }
        let Some(held) = self.room_for(&event) else {
            return Some(event);
        };
        let Some(link) = self.consumers.get_mut(&consumer) else {
            return Some(event);
        };
        if !self.durable {
            // Room was checked and this task is the only sender: a failure
            // here means the consumer just left, and a transient event dies with it.
            link.try_send(SubscriptionItem::Event(Delivery { event, attempt }), held);
            return None;
        }
        let delivery = Delivery {
            event: event.clone(),
            attempt,
        };
        // A send that fails because the consumer just left stays in flight
        // and goes back to delivery when the detach is reaped.
        link.try_send(SubscriptionItem::Event(delivery), held);
        link.in_flight += 1;
        let deadline = deadline_after(self.spec.ack_timeout_ms);
        let position = event.position;
        self.deadlines.insert((deadline, position));
        let flight = InFlight {
            consumer,
            attempt,
            deadline,
            event,
        };
        self.in_flight.insert(position, flight);
        None
    }

    /// The budget bytes a delivery of `event` holds while buffered: room
    /// waited for, or reserved now; `None` when the budget has no room (the
    /// dispatch stops and the task waits for `room_wanted`). `Some(None)`:
    /// no budget, or one that can never hold the delivery.
    fn room_for(&mut self, event: &RecordedEvent) -> Option<Option<Reservation>> {
        let Some(budget) = &self.budget else {
            return Some(None);
        };
        if self.room_wanted.is_some() {
            return None;
        }
        let bytes = event_bytes(event);
        match self.room.take() {
            Some(Room::Held(held, reservation)) if held >= bytes => return Some(Some(reservation)),
            Some(Room::Unbounded) => return Some(None),
            other => self.room = other,
        }
        if let Some(reservation) = budget.try_reserve_bytes(bytes) {
            return Some(Some(reservation));
        }
        self.room_wanted = Some(bytes);
        None
    }

    fn announce_caught_up(&mut self) {
        if !self.caught_up_due() {
            return;
        }
        for link in self.consumers.values_mut() {
            if !link.caught_up_sent && link.try_send(SubscriptionItem::CaughtUp, None) {
                link.caught_up_sent = true;
            }
        }
    }
}

pub(super) fn deadline_after(timeout_ms: u64) -> Instant {
    let now = Instant::now();
    // Timeouts are validated against ACK_TIMEOUT_MS_MAX, so the sum fits; were
    // it ever to overflow, redelivering at once beats never redelivering.
    now.checked_add(Duration::from_millis(timeout_ms))
        .unwrap_or(now)
}
