//! Deliveries buffered for consumers hold their bytes in the server's memory
//! budget: a consumer that does not read fills the budget and no more, the
//! dispatcher waits for room without losing or reordering anything, and
//! room freed by reading or leaving wakes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gater_core::memory::{event_bytes, ByteBudget, Reservation};
use gater_core::{
    ConsumerStrategy, Error, Limits, RecordedEvent, Side, StoreId, SubscriptionItem, TRANSIENT,
};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    all, next_delivery, next_item, nothing_within, positions, save_group, settle, window, FakeLog,
};
use crate::subscription::consumer::CHANNEL_SLACK;
use crate::subscription::group::READ_BATCH_MAX;
use crate::subscription::{PeerSlot, SubscriptionLog, Subscriptions};

/// Bytes of each event's payload: large next to the budget.
const PAYLOAD_BYTES: usize = 1_000;
/// Events the budget holds at once.
const BUDGET_EVENTS: u64 = 6;
/// Events appended: many times what the budget holds.
const EVENTS: usize = 100;

/// A budget that counts what it holds and the most it ever held.
#[derive(Debug)]
struct CountingBudget {
    permits: Arc<Semaphore>,
    max_bytes: u64,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    in_use: AtomicU64,
    peak: AtomicU64,
}

/// What a reservation of a [`CountingBudget`] holds; returns its bytes when dropped.
struct Held {
    counts: Arc<Counts>,
    bytes: u64,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counts.in_use.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

impl CountingBudget {
    fn new(max_bytes: u64) -> Arc<Self> {
        Arc::new(CountingBudget {
            permits: Arc::new(Semaphore::new(max_bytes as usize)),
            max_bytes,
            counts: Arc::default(),
        })
    }

    fn in_use(&self) -> u64 {
        self.counts.in_use.load(Ordering::SeqCst)
    }

    fn peak(&self) -> u64 {
        self.counts.peak.load(Ordering::SeqCst)
    }

    fn held(&self, bytes: u64, permit: OwnedSemaphorePermit) -> Reservation {
        let now = self.counts.in_use.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.counts.peak.fetch_max(now, Ordering::SeqCst);
        Reservation::new(Held {
            counts: Arc::clone(&self.counts),
            bytes,
            _permit: permit,
        })
    }
}

#[async_trait]
impl ByteBudget for CountingBudget {
    async fn reserve_bytes(&self, bytes: u64, side: Side) -> Result<Reservation, Error> {
        if bytes > self.max_bytes {
            return Err(Error::Overloaded {
                side,
                message: format!("{bytes} bytes exceed the budget"),
            });
        }
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(bytes as u32)
            .await
            .map_err(|_| Error::Overloaded {
                side,
                message: "the budget is closed".to_owned(),
            })?;
        Ok(self.held(bytes, permit))
    }

    fn try_reserve_bytes(&self, bytes: u64) -> Option<Reservation> {
        let count = u32::try_from(bytes).ok()?;
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(count)
            .ok()?;
        Some(self.held(bytes, permit))
    }
}

/// `EVENTS` events of `PAYLOAD_BYTES` on stream `s`, and a budget for `BUDGET_EVENTS` of them.
fn large_events() -> (Arc<FakeLog>, Arc<CountingBudget>) {
    let log = FakeLog::new();
    let payload = "x".repeat(PAYLOAD_BYTES);
    for i in 0..EVENTS {
        log.append("s", "Large", json!({ "i": i, "p": payload }), json!({}));
    }
    let first: RecordedEvent = log.events.lock().unwrap()[0].clone();
    let budget = CountingBudget::new(BUDGET_EVENTS * event_bytes(&first) + event_bytes(&first) / 2);
    (log, budget)
}

async fn open_with_budget(log: &Arc<FakeLog>, budget: &Arc<CountingBudget>) -> Arc<Subscriptions> {
    let log: Arc<dyn SubscriptionLog> = log.clone();
    let budget: Arc<dyn ByteBudget> = budget.clone();
    Subscriptions::open_with_peers(
        StoreId::new("test").unwrap(),
        log,
        String::new(),
        PeerSlot::default(),
        Some(budget),
    )
    .await
    .unwrap()
}

fn report(name: &str, budget: &CountingBudget) {
    println!(
        "{name}: peak {} bytes of a {} byte budget",
        budget.peak(),
        budget.max_bytes
    );
}

#[tokio::test(start_paused = true)]
async fn transient_consumer_that_does_not_read_fills_the_budget_then_gets_every_event_in_order() {
    let (log, budget) = large_events();
    let subs = open_with_budget(&log, &budget).await;
    let mut sub = subs
        .subscribe(all(TRANSIENT), window(EVENTS as u32))
        .await
        .unwrap();
    settle().await;
    // The window would take every event; the budget stops the buffer first.
    assert!(budget.in_use() <= budget.max_bytes);
    assert!(budget.in_use() > (BUDGET_EVENTS - 1) * PAYLOAD_BYTES as u64);
    let expected: Vec<u64> = (0..EVENTS as u64).collect();
    assert_eq!(positions(&mut sub, EVENTS).await, expected);
    assert_eq!(next_item(&mut sub).await, SubscriptionItem::CaughtUp);
    assert!(budget.peak() <= budget.max_bytes);
    report("transient", &budget);
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn reader_stops_while_a_delivery_waits_for_budget_room() {
    let (log, budget) = large_events();
    log.append_plain("t", 3 * READ_BATCH_MAX as usize);
    let total = EVENTS + 3 * READ_BATCH_MAX as usize;
    let subs = open_with_budget(&log, &budget).await;
    let mut sub = subs
        .subscribe(
            all(TRANSIENT),
            window(Limits::DEFAULT.subscription_window_max),
        )
        .await
        .unwrap();
    settle().await;
    // The channel has room for thousands, the budget for a few: one batch
    // was read, and nothing more piles up behind the waiting delivery.
    assert_eq!(log.reads.load(Ordering::Relaxed), 1);
    let expected: Vec<u64> = (0..total as u64).collect();
    assert_eq!(positions(&mut sub, total).await, expected);
    assert!(budget.peak() <= budget.max_bytes);
    report("reader held back", &budget);
}

#[tokio::test(start_paused = true)]
async fn group_consumer_that_does_not_read_fills_the_budget_then_gets_every_event_in_order() {
    let (log, budget) = large_events();
    let subs = open_with_budget(&log, &budget).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut sub = subs
        .subscribe(key.clone(), window(EVENTS as u32))
        .await
        .unwrap();
    settle().await;
    assert!(budget.in_use() <= budget.max_bytes);
    assert!(budget.in_use() > 0);
    for expected in 0..EVENTS as u64 {
        let delivery = next_delivery(&mut sub).await;
        assert_eq!(delivery.event.position.0, expected);
        assert_eq!(delivery.attempt, 1);
        subs.ack(&key, sub.consumer(), delivery.event.position)
            .await
            .unwrap();
    }
    assert!(budget.peak() <= budget.max_bytes);
    report("group", &budget);
    assert!(nothing_within(&mut sub, Duration::from_secs(1)).await);
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn consumer_that_stops_reading_holds_no_more_than_its_window_and_leaving_frees_it() {
    let (log, budget) = large_events();
    let subs = open_with_budget(&log, &budget).await;
    let stalled_window = 2;
    let stalled = subs
        .subscribe(all(TRANSIENT), window(stalled_window))
        .await
        .unwrap();
    settle().await;
    // Its channel: the window, plus the slot kept for `CaughtUp`.
    let one = budget.max_bytes / BUDGET_EVENTS;
    let buffered_max = u64::from(stalled_window) + CHANNEL_SLACK as u64;
    assert!(budget.in_use() <= buffered_max * one);
    // Another consumer still gets everything through what is left.
    let mut reader = subs
        .subscribe(all(TRANSIENT), window(EVENTS as u32))
        .await
        .unwrap();
    let expected: Vec<u64> = (0..EVENTS as u64).collect();
    assert_eq!(positions(&mut reader, EVENTS).await, expected);
    assert!(budget.peak() <= budget.max_bytes);
    report("stalled and reader", &budget);
    drop(stalled);
    settle().await;
    assert_eq!(budget.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn dispatcher_waiting_for_room_is_woken_when_a_consumer_leaves() {
    let (log, budget) = large_events();
    let subs = open_with_budget(&log, &budget).await;
    // The first consumer takes the whole budget and never reads.
    let hog = subs
        .subscribe(all(TRANSIENT), window(EVENTS as u32))
        .await
        .unwrap();
    settle().await;
    let mut waiting = subs
        .subscribe(all(TRANSIENT), window(EVENTS as u32))
        .await
        .unwrap();
    assert!(nothing_within(&mut waiting, Duration::from_secs(1)).await);
    drop(hog);
    let expected: Vec<u64> = (0..EVENTS as u64).collect();
    assert_eq!(positions(&mut waiting, EVENTS).await, expected);
    assert!(budget.peak() <= budget.max_bytes);
    report("woken by a leaving consumer", &budget);
}
