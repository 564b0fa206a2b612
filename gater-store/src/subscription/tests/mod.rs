//! Unit tests of the subscription engine over an in-memory log, in paused tokio time,
//! and (with the `conformance` feature) the conformance cases over the engine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use gater_core::{
    ConsumerId, ConsumerStrategy, Delivery, Error, EventData, EventId, NackAction, Position,
    RecordedEvent, Resource, StoreId, StreamId, SubscribeOptions, Subscription, SubscriptionEnd,
    SubscriptionInfo, SubscriptionItem, SubscriptionKey, SubscriptionSpec, SubscriptionType,
    TRANSIENT,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::timeout;

use super::group::READ_BATCH_MAX;

mod budget;
#[cfg(feature = "conformance")]
mod conformance;
mod pinned;
use super::{SubscriptionLog, SubscriptionRecord, Subscriptions};

/// A store's log in memory: events, a head watch and subscription records.
struct FakeLog {
    events: Mutex<Vec<RecordedEvent>>,
    head: watch::Sender<Option<Position>>,
    records: Mutex<BTreeMap<SubscriptionKey, SubscriptionRecord>>,
    puts: AtomicUsize,
    /// Reads of the log so far.
    reads: AtomicUsize,
    next_id: AtomicU64,
}

impl FakeLog {
    fn new() -> Arc<FakeLog> {
        Arc::new(FakeLog {
            events: Mutex::new(Vec::new()),
            head: watch::channel(None).0,
            records: Mutex::new(BTreeMap::new()),
            puts: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        })
    }

    fn append(&self, stream: &str, event_type: &str, data: Value, metadata: Value) -> Position {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&id.to_be_bytes());
        let data = EventData::json(
            EventId::from_bytes(bytes),
            event_type,
            data.to_string().into_bytes(),
            metadata.to_string().into_bytes(),
        );
        self.append_data(StreamId::new(stream).unwrap(), data)
    }

    fn append_data(&self, stream: StreamId, data: EventData) -> Position {
        let mut events = self.events.lock().unwrap();
        let position = Position(events.len() as u64);
        let version = events.iter().filter(|e| e.stream == stream).count() as u64;
        events.push(RecordedEvent {
            stream,
            version,
            position,
            created_us: 0,
            data,
        });
        self.head.send_replace(Some(position));
        position
    }

    fn append_plain(&self, stream: &str, count: usize) -> Vec<Position> {
        (0..count)
            .map(|i| self.append(stream, "Happened", json!({ "i": i }), json!({})))
            .collect()
    }

    fn record(&self, key: &SubscriptionKey) -> Option<SubscriptionRecord> {
        self.records.lock().unwrap().get(key).cloned()
    }
}

#[async_trait]
impl SubscriptionLog for FakeLog {
    async fn read_all_forward(
        &self,
        from: Position,
        count: u32,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let events = self.events.lock().unwrap();
        let start = (from.0 as usize).min(events.len());
        let end = start.saturating_add(count as usize).min(events.len());
        Ok(events[start..end].to_vec())
    }

    fn watch_head(&self) -> watch::Receiver<Option<Position>> {
        self.head.subscribe()
    }

    async fn load_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error> {
        Ok(self.records.lock().unwrap().values().cloned().collect())
    }

    async fn put_subscription(&self, record: &SubscriptionRecord) -> Result<(), Error> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        let mut records = self.records.lock().unwrap();
        records.insert(record.spec.key.clone(), record.clone());
        Ok(())
    }

    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error> {
        self.records.lock().unwrap().remove(key);
        Ok(())
    }
}

/// Longer than any test waits, so no redelivery fires unless a test asks for it.
const LONG_ACK_TIMEOUT_MS: u64 = 3_600_000;
/// How long a test waits for an item that should come (paused time: instant).
const PATIENCE: Duration = Duration::from_secs(60);

async fn open(log: &Arc<FakeLog>) -> Arc<Subscriptions> {
    let log: Arc<dyn SubscriptionLog> = log.clone();
    Subscriptions::open(StoreId::new("test").unwrap(), log)
        .await
        .unwrap()
}

fn key(kind: SubscriptionType, selector: &str, name: &str) -> SubscriptionKey {
    SubscriptionKey::new(kind, selector, name).unwrap()
}

fn all(name: &str) -> SubscriptionKey {
    key(SubscriptionType::ByStream, "$all", name)
}

fn spec(key: SubscriptionKey, ack_timeout_ms: u64, max_retries: u32) -> SubscriptionSpec {
    SubscriptionSpec {
        ack_timeout_ms,
        max_retries,
        ..SubscriptionSpec::new(key)
    }
}

fn window(window: u32) -> SubscribeOptions {
    SubscribeOptions {
        window,
        start_from: None,
    }
}

async fn save_group(
    subs: &Subscriptions,
    name: &str,
    strategy: ConsumerStrategy,
) -> SubscriptionKey {
    let key = all(name);
    let spec = SubscriptionSpec {
        strategy,
        ..spec(key.clone(), LONG_ACK_TIMEOUT_MS, 5)
    };
    subs.save(spec).await.unwrap();
    key
}

async fn next_item(sub: &mut Subscription) -> SubscriptionItem {
    timeout(PATIENCE, sub.next())
        .await
        .expect("an item should arrive")
        .expect("the stream should not be over")
}

/// The next delivery, passing over the `CaughtUp` marker.
async fn next_delivery(sub: &mut Subscription) -> Delivery {
    loop {
        match next_item(sub).await {
            SubscriptionItem::Event(delivery) => return delivery,
            SubscriptionItem::CaughtUp => continue,
            SubscriptionItem::End(end) => panic!("subscription ended: {end:?}"),
        }
    }
}

async fn positions(sub: &mut Subscription, count: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(next_delivery(sub).await.event.position.0);
    }
    out
}

/// Whether no event (nor the end) arrives within `wait`; paused time jumps
/// there once everything is idle. A `CaughtUp` marker is passed over.
async fn nothing_within(sub: &mut Subscription, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Err(_) => return true,
            Ok(Some(SubscriptionItem::CaughtUp)) => continue,
            Ok(_) => return false,
        }
    }
}

/// Lets every task run until all wait (paused time only moves when all are idle).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

async fn info(subs: &Subscriptions, key: &SubscriptionKey) -> SubscriptionInfo {
    subs.list()
        .await
        .unwrap()
        .into_iter()
        .find(|i| &i.spec.key == key)
        .expect("the subscription is listed")
}

#[tokio::test(start_paused = true)]
async fn transient_subscription_catches_up_then_goes_live_without_gap_or_duplicate() {
    let log = FakeLog::new();
    log.append_plain("a", 5);
    let subs = open(&log).await;
    let mut sub = subs.subscribe(all(TRANSIENT), window(2)).await.unwrap();
    assert_eq!(positions(&mut sub, 5).await, vec![0, 1, 2, 3, 4]);
    assert_eq!(next_item(&mut sub).await, SubscriptionItem::CaughtUp);
    log.append_plain("b", 3);
    assert_eq!(positions(&mut sub, 3).await, vec![5, 6, 7]);
    assert!(nothing_within(&mut sub, Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn transient_start_from_option_skips_earlier_history() {
    let log = FakeLog::new();
    log.append_plain("a", 6);
    let subs = open(&log).await;
    let options = SubscribeOptions {
        window: 8,
        start_from: Some(Position(4)),
    };
    let mut sub = subs.subscribe(all(TRANSIENT), options).await.unwrap();
    assert_eq!(positions(&mut sub, 2).await, vec![4, 5]);
}

#[tokio::test(start_paused = true)]
async fn each_selector_type_delivers_only_matching_events() {
    let log = FakeLog::new();
    log.append(
        "order-1",
        "OrderPlaced",
        json!({"total": 10}),
        json!({"tenant": "acme"}),
    );
    log.append(
        "user-1",
        "UserJoined",
        json!({"name": "x"}),
        json!({"tenant": "acme"}),
    );
    log.append(
        "order-2",
        "OrderShipped",
        json!({"total": 20}),
        json!({"tenant": "zeta"}),
    );
    log.append(
        "order-1",
        "OrderShipped",
        json!({"total": 10}),
        json!({"tenant": "acme"}),
    );
    let subs = open(&log).await;
    let cases = [
        (SubscriptionType::ByStream, "order-1", vec![0, 3]),
        (SubscriptionType::ByEventType, "OrderShipped", vec![2, 3]),
        (
            SubscriptionType::ByEventPattern,
            r#"{"stream":"order-*","tenant":"acme"}"#,
            vec![0, 3],
        ),
        (
            SubscriptionType::ByEventPayload,
            r#"{"total":10}"#,
            vec![0, 3],
        ),
    ];
    for (kind, selector, expected) in cases {
        let mut sub = subs
            .subscribe(key(kind, selector, TRANSIENT), window(8))
            .await
            .unwrap();
        let got = positions(&mut sub, expected.len()).await;
        assert_eq!(got, expected, "{kind:?} {selector}");
        assert_eq!(next_item(&mut sub).await, SubscriptionItem::CaughtUp);
        assert!(nothing_within(&mut sub, Duration::from_secs(1)).await);
    }
}

#[tokio::test(start_paused = true)]
async fn unacked_delivery_is_redelivered_after_the_ack_timeout() {
    let log = FakeLog::new();
    log.append_plain("a", 1);
    let subs = open(&log).await;
    let key = all("billing");
    subs.save(spec(key.clone(), 500, 5)).await.unwrap();
    let mut sub = subs.subscribe(key.clone(), window(4)).await.unwrap();
    let first = next_delivery(&mut sub).await;
    assert_eq!((first.event.position, first.attempt), (Position(0), 1));
    assert!(nothing_within(&mut sub, Duration::from_millis(400)).await);
    let again = next_delivery(&mut sub).await;
    assert_eq!((again.event.position, again.attempt), (Position(0), 2));
    subs.ack(&key, sub.consumer(), Position(0)).await.unwrap();
    assert!(nothing_within(&mut sub, Duration::from_secs(5)).await);
    assert_eq!(info(&subs, &key).await.checkpoint, Position(1));
}

#[tokio::test(start_paused = true)]
async fn nack_retry_redelivers_at_once_with_the_next_attempt() {
    let log = FakeLog::new();
    log.append_plain("a", 2);
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut sub = subs.subscribe(key.clone(), window(1)).await.unwrap();
    let first = next_delivery(&mut sub).await;
    subs.nack(
        &key,
        sub.consumer(),
        first.event.position,
        NackAction::Retry,
    )
    .await
    .unwrap();
    let again = next_delivery(&mut sub).await;
    assert_eq!((again.event.position, again.attempt), (Position(0), 2));
}

#[tokio::test(start_paused = true)]
async fn nack_skip_counts_as_handled_and_moves_the_checkpoint() {
    let log = FakeLog::new();
    log.append_plain("a", 2);
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut sub = subs.subscribe(key.clone(), window(1)).await.unwrap();
    let first = next_delivery(&mut sub).await;
    subs.nack(&key, sub.consumer(), first.event.position, NackAction::Skip)
        .await
        .unwrap();
    let second = next_delivery(&mut sub).await;
    assert_eq!((second.event.position, second.attempt), (Position(1), 1));
    assert_eq!(info(&subs, &key).await.checkpoint, Position(1));
}

#[tokio::test(start_paused = true)]
async fn nack_park_sets_the_event_aside_until_replayed() {
    let log = FakeLog::new();
    log.append_plain("a", 2);
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut sub = subs.subscribe(key.clone(), window(1)).await.unwrap();
    let first = next_delivery(&mut sub).await;
    subs.nack(&key, sub.consumer(), first.event.position, NackAction::Park)
        .await
        .unwrap();
    let second = next_delivery(&mut sub).await;
    assert_eq!(second.event.position, Position(1));
    subs.ack(&key, sub.consumer(), Position(1)).await.unwrap();
    let parked = subs.list_parked(&key).await.unwrap();
    assert_eq!(parked, vec![first.event.clone()]);
    let listed = info(&subs, &key).await;
    assert_eq!((listed.parked, listed.checkpoint), (1, Position(2)));
    assert_eq!(log.record(&key).unwrap().parked, vec![Position(0)]);

    assert_eq!(subs.replay_parked(&key).await.unwrap(), 1);
    let replayed = next_delivery(&mut sub).await;
    assert_eq!(
        (replayed.event.position, replayed.attempt),
        (Position(0), 1)
    );
    assert!(subs.list_parked(&key).await.unwrap().is_empty());
    subs.ack(&key, sub.consumer(), Position(0)).await.unwrap();
    assert_eq!(info(&subs, &key).await.parked, 0);
    assert!(log.record(&key).unwrap().parked.is_empty());
}

#[tokio::test(start_paused = true)]
async fn event_is_parked_after_max_retries_and_replay_brings_it_back() {
    let log = FakeLog::new();
    log.append_plain("a", 1);
    let subs = open(&log).await;
    let key = all("poison");
    subs.save(spec(key.clone(), 100, 2)).await.unwrap();
    let mut sub = subs.subscribe(key.clone(), window(2)).await.unwrap();
    // Two retries: three deliveries in all.
    for attempt in 1..=3 {
        let delivery = next_delivery(&mut sub).await;
        assert_eq!(
            (delivery.event.position, delivery.attempt),
            (Position(0), attempt)
        );
    }
    assert!(nothing_within(&mut sub, Duration::from_secs(5)).await);
    let parked: Vec<Position> = subs
        .list_parked(&key)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(parked, vec![Position(0)]);
    assert_eq!(info(&subs, &key).await.checkpoint, Position(1));

    assert_eq!(subs.replay_parked(&key).await.unwrap(), 1);
    let replayed = next_delivery(&mut sub).await;
    assert_eq!(
        (replayed.event.position, replayed.attempt),
        (Position(0), 1)
    );
    subs.ack(&key, sub.consumer(), Position(0)).await.unwrap();
    assert_eq!(info(&subs, &key).await.parked, 0);
}

#[tokio::test(start_paused = true)]
async fn max_retries_counts_retries_not_deliveries() {
    let log = FakeLog::new();
    log.append_plain("a", 1);
    let subs = open(&log).await;
    let key = all("once");
    subs.save(spec(key.clone(), LONG_ACK_TIMEOUT_MS, 1))
        .await
        .unwrap();
    let mut sub = subs.subscribe(key.clone(), window(2)).await.unwrap();
    let first = next_delivery(&mut sub).await;
    assert_eq!(first.attempt, 1);
    subs.nack(&key, sub.consumer(), Position(0), NackAction::Retry)
        .await
        .unwrap();
    let retried = next_delivery(&mut sub).await;
    assert_eq!(
        (retried.event.position, retried.attempt),
        (Position(0), 2),
        "max_retries 1 allows one retry"
    );
    subs.nack(&key, sub.consumer(), Position(0), NackAction::Retry)
        .await
        .unwrap();
    assert!(nothing_within(&mut sub, Duration::from_secs(5)).await);
    assert_eq!(
        info(&subs, &key).await.parked,
        1,
        "parked after its one retry"
    );
}

#[tokio::test(start_paused = true)]
async fn round_robin_spreads_events_across_consumers() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut a = subs.subscribe(key.clone(), window(10)).await.unwrap();
    let mut b = subs.subscribe(key.clone(), window(10)).await.unwrap();
    let mut c = subs.subscribe(key.clone(), window(10)).await.unwrap();
    log.append_plain("s", 9);
    let mut seen = Vec::new();
    for sub in [&mut a, &mut b, &mut c] {
        let got = positions(sub, 3).await;
        assert!(nothing_within(sub, Duration::from_secs(1)).await);
        seen.extend(got);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..9).collect::<Vec<u64>>());
}

#[tokio::test(start_paused = true)]
async fn round_robin_passes_over_a_consumer_with_a_full_window() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut small = subs.subscribe(key.clone(), window(1)).await.unwrap();
    let mut large = subs.subscribe(key.clone(), window(10)).await.unwrap();
    log.append_plain("s", 6);
    assert_eq!(positions(&mut small, 1).await.len(), 1);
    assert_eq!(positions(&mut large, 5).await.len(), 5);
    assert!(nothing_within(&mut small, Duration::from_secs(1)).await);
    assert_eq!(info(&subs, &key).await.in_flight, 6);
}

#[tokio::test(start_paused = true)]
async fn pinned_by_stream_keeps_each_stream_on_one_consumer_in_order() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::PinnedByStream).await;
    let mut consumers = Vec::new();
    for _ in 0..3 {
        consumers.push(subs.subscribe(key.clone(), window(100)).await.unwrap());
    }
    let streams = ["s-0", "s-1", "s-2", "s-3", "s-4", "s-5"];
    for round in 0..5 {
        for stream in streams {
            log.append(stream, "E", json!({ "round": round }), json!({}));
        }
    }
    let mut owner: BTreeMap<StreamId, ConsumerId> = BTreeMap::new();
    let mut total = 0;
    for sub in &mut consumers {
        let mut last: BTreeMap<StreamId, u64> = BTreeMap::new();
        while let Ok(Some(item)) = timeout(Duration::from_secs(1), sub.next()).await {
            let SubscriptionItem::Event(delivery) = item else {
                continue;
            };
            let event = delivery.event;
            // A stream's next event comes once this one is acked.
            subs.ack(&key, sub.consumer(), event.position)
                .await
                .unwrap();
            let previous = owner.insert(event.stream.clone(), sub.consumer());
            assert!(
                previous.is_none_or(|p| p == sub.consumer()),
                "{} moved",
                event.stream
            );
            let before = last.insert(event.stream.clone(), event.version);
            assert!(
                before.is_none_or(|v| v + 1 == event.version),
                "out of order"
            );
            total += 1;
        }
    }
    assert_eq!(total, 30);
    assert_eq!(owner.len(), streams.len());
}

#[tokio::test(start_paused = true)]
async fn pinned_stream_waits_for_its_full_consumer() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::PinnedByStream).await;
    let mut sub = subs.subscribe(key.clone(), window(1)).await.unwrap();
    log.append_plain("x", 3);
    let first = next_delivery(&mut sub).await;
    assert_eq!(first.event.position, Position(0));
    assert!(nothing_within(&mut sub, Duration::from_secs(1)).await);
    subs.ack(&key, sub.consumer(), Position(0)).await.unwrap();
    assert_eq!(positions(&mut sub, 1).await, vec![1]);
}

#[tokio::test(start_paused = true)]
async fn checkpoint_survives_reopen_and_delivery_resumes_after_the_last_ack() {
    let log = FakeLog::new();
    log.append_plain("a", 5);
    let key = all("durable");
    {
        let subs = open(&log).await;
        subs.save(spec(key.clone(), LONG_ACK_TIMEOUT_MS, 5))
            .await
            .unwrap();
        let mut sub = subs.subscribe(key.clone(), window(2)).await.unwrap();
        for _ in 0..3 {
            let position = next_delivery(&mut sub).await.event.position;
            subs.ack(&key, sub.consumer(), position).await.unwrap();
        }
        assert_eq!(info(&subs, &key).await.checkpoint, Position(3));
        subs.shutdown(SubscriptionEnd::Shutdown).await;
        let mut last = None;
        while let Some(item) = timeout(PATIENCE, sub.next()).await.unwrap() {
            last = Some(item);
        }
        assert_eq!(last, Some(SubscriptionItem::End(SubscriptionEnd::Shutdown)));
    }
    assert_eq!(log.record(&key).unwrap().checkpoint, Position(3));
    let subs = open(&log).await;
    let mut sub = subs.subscribe(key.clone(), window(8)).await.unwrap();
    assert_eq!(positions(&mut sub, 2).await, vec![3, 4]);
    assert_eq!(next_item(&mut sub).await, SubscriptionItem::CaughtUp);
}

#[tokio::test(start_paused = true)]
async fn checkpoint_stops_at_the_first_unacked_event() {
    let log = FakeLog::new();
    log.append_plain("a", 4);
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut sub = subs.subscribe(key.clone(), window(4)).await.unwrap();
    assert_eq!(positions(&mut sub, 4).await, vec![0, 1, 2, 3]);
    for position in [0, 2, 3] {
        subs.ack(&key, sub.consumer(), Position(position))
            .await
            .unwrap();
    }
    let listed = info(&subs, &key).await;
    assert_eq!(
        (listed.checkpoint, listed.lag, listed.in_flight),
        (Position(1), 3, 1)
    );
    subs.ack(&key, sub.consumer(), Position(1)).await.unwrap();
    let listed = info(&subs, &key).await;
    assert_eq!(
        (listed.checkpoint, listed.lag, listed.in_flight),
        (Position(4), 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn lag_counts_to_the_head_while_a_group_consumer_stops_reading() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut sub = subs.subscribe(key.clone(), window(4)).await.unwrap();
    log.append_plain("a", 2);
    assert_eq!(positions(&mut sub, 1).await, vec![0]);
    // The consumer stops reading and acking; the log keeps growing far past
    // the group's read window.
    let appended = READ_BATCH_MAX as usize * 5;
    for _ in 0..5 {
        log.append_plain("b", appended / 5);
        settle().await;
    }
    let listed = info(&subs, &key).await;
    assert_eq!(listed.checkpoint, Position(0));
    assert_eq!(listed.lag, 2 + appended as u64);
    drop(sub);
    settle().await;
    let listed = info(&subs, &key).await;
    assert_eq!((listed.checkpoint, listed.consumers), (Position(0), 0));
    assert_eq!(listed.lag, 2 + appended as u64);
}

#[tokio::test(start_paused = true)]
async fn transient_lag_counts_from_the_consumers_own_position() {
    let log = FakeLog::new();
    log.append_plain("a", 10);
    let subs = open(&log).await;
    let options = SubscribeOptions {
        window: 2,
        start_from: Some(Position(6)),
    };
    let mut sub = subs.subscribe(all(TRANSIENT), options).await.unwrap();
    assert_eq!(positions(&mut sub, 1).await, vec![6]);
    for _ in 0..3 {
        log.append_plain("b", READ_BATCH_MAX as usize);
        settle().await;
    }
    let listed = info(&subs, &all(TRANSIENT)).await;
    let head_end = 10 + READ_BATCH_MAX as u64 * 3;
    assert_eq!(listed.lag, head_end - listed.checkpoint.0);
    assert!(listed.checkpoint >= Position(7), "{listed:?}");
    assert!(listed.lag > READ_BATCH_MAX as u64 * 2, "{listed:?}");
}

#[tokio::test(start_paused = true)]
async fn saving_again_updates_settings_and_keeps_the_checkpoint() {
    let log = FakeLog::new();
    log.append_plain("a", 3);
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut sub = subs.subscribe(key.clone(), window(4)).await.unwrap();
    for position in positions(&mut sub, 2).await {
        subs.ack(&key, sub.consumer(), Position(position))
            .await
            .unwrap();
    }
    let mut updated = spec(key.clone(), 1_234, 7);
    updated.start_from = Position(0);
    subs.save(updated.clone()).await.unwrap();
    let listed = info(&subs, &key).await;
    assert_eq!(listed.spec, updated);
    assert_eq!(listed.checkpoint, Position(2));
    assert_eq!(log.record(&key).unwrap().spec, updated);
}

#[tokio::test(start_paused = true)]
async fn removal_ends_consumers_with_removed_and_forgets_the_record() {
    let log = FakeLog::new();
    log.append_plain("a", 1);
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut sub = subs.subscribe(key.clone(), window(4)).await.unwrap();
    next_delivery(&mut sub).await;
    subs.remove(&key).await.unwrap();
    let mut ended = None;
    while let Some(item) = timeout(PATIENCE, sub.next()).await.unwrap() {
        ended = Some(item);
    }
    assert_eq!(ended, Some(SubscriptionItem::End(SubscriptionEnd::Removed)));
    assert!(log.record(&key).is_none());
    assert!(matches!(
        subs.remove(&key).await,
        Err(Error::NotFound {
            resource: Resource::Subscription,
            ..
        })
    ));
    assert!(subs.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn removing_a_transient_key_ends_its_consumers() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = all(TRANSIENT);
    let mut sub = subs.subscribe(key.clone(), window(4)).await.unwrap();
    assert_eq!(next_item(&mut sub).await, SubscriptionItem::CaughtUp);
    subs.remove(&key).await.unwrap();
    assert_eq!(
        next_item(&mut sub).await,
        SubscriptionItem::End(SubscriptionEnd::Removed)
    );
    assert_eq!(timeout(PATIENCE, sub.next()).await.unwrap(), None);
    assert!(subs.remove(&key).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn consumer_that_never_reads_holds_in_flight_at_its_window() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let _sub = subs.subscribe(key.clone(), window(8)).await.unwrap();
    for _ in 0..10 {
        log.append_plain("s", 1_000);
        settle().await;
        let listed = info(&subs, &key).await;
        assert_eq!(listed.in_flight, 8);
        assert_eq!(listed.checkpoint, Position(0));
    }
}

#[tokio::test(start_paused = true)]
async fn transient_consumer_that_never_reads_stops_the_reader() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = all(TRANSIENT);
    let _sub = subs.subscribe(key.clone(), window(8)).await.unwrap();
    for _ in 0..10 {
        log.append_plain("s", 1_000);
        settle().await;
        let listed = info(&subs, &key).await;
        // What was handed over (the channel) plus at most one read batch waits.
        let bound = 8 + 1 + READ_BATCH_MAX as u64;
        assert!(
            listed.checkpoint.0 <= bound,
            "reader ran to {}",
            listed.checkpoint
        );
    }
}

#[tokio::test(start_paused = true)]
async fn detached_consumer_gives_its_unacked_events_to_the_others() {
    let log = FakeLog::new();
    log.append_plain("a", 3);
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut first = subs.subscribe(key.clone(), window(3)).await.unwrap();
    assert_eq!(positions(&mut first, 3).await, vec![0, 1, 2]);
    let mut second = subs.subscribe(key.clone(), window(3)).await.unwrap();
    drop(first);
    let redelivered: Vec<(u64, u32)> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            let d = next_delivery(&mut second).await;
            out.push((d.event.position.0, d.attempt));
        }
        out
    };
    assert_eq!(redelivered, vec![(0, 2), (1, 2), (2, 2)]);
    assert_eq!(info(&subs, &key).await.consumers, 1);
}

#[tokio::test(start_paused = true)]
async fn transient_subscription_is_gone_when_its_consumer_drops() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let sub = subs.subscribe(all(TRANSIENT), window(4)).await.unwrap();
    assert_eq!(subs.list().await.unwrap().len(), 1);
    let consumer = sub.consumer();
    drop(sub);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert!(subs.list().await.unwrap().is_empty());
    assert!(matches!(
        subs.ack(&all(TRANSIENT), consumer, Position(0)).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn transient_acks_and_nacks_are_accepted_no_ops() {
    let log = FakeLog::new();
    log.append_plain("a", 1);
    let subs = open(&log).await;
    let key = all(TRANSIENT);
    let mut sub = subs.subscribe(key.clone(), window(4)).await.unwrap();
    let delivery = next_delivery(&mut sub).await;
    let position = delivery.event.position;
    subs.ack(&key, sub.consumer(), position).await.unwrap();
    subs.nack(&key, sub.consumer(), position, NackAction::Retry)
        .await
        .unwrap();
    assert_eq!(next_item(&mut sub).await, SubscriptionItem::CaughtUp);
    assert!(nothing_within(&mut sub, Duration::from_secs(5)).await);
    assert!(matches!(
        subs.ack(&key, ConsumerId(9_999), position).await,
        Err(Error::NotFound {
            resource: Resource::Consumer,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn bad_acks_are_typed_errors_and_change_nothing() {
    let log = FakeLog::new();
    log.append_plain("a", 2);
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut a = subs.subscribe(key.clone(), window(1)).await.unwrap();
    let b = subs.subscribe(key.clone(), window(1)).await.unwrap();
    let delivered = next_delivery(&mut a).await.event.position;
    let not_found = |resource| move |r: Result<(), Error>| matches!(r, Err(Error::NotFound { resource: got, .. }) if got == resource);
    let delivery = not_found(Resource::Delivery);
    assert!(delivery(subs.ack(&key, b.consumer(), delivered).await));
    assert!(delivery(subs.ack(&key, a.consumer(), Position(99)).await));
    assert!(delivery(
        subs.nack(&key, b.consumer(), delivered, NackAction::Skip)
            .await
    ));
    assert!(not_found(Resource::Consumer)(
        subs.ack(&key, ConsumerId(424_242), delivered).await
    ));
    assert!(not_found(Resource::Subscription)(
        subs.ack(&all("nope"), a.consumer(), delivered).await
    ));
    assert_eq!(info(&subs, &key).await.in_flight, 2);
    subs.ack(&key, a.consumer(), delivered).await.unwrap();
    assert!(delivery(subs.ack(&key, a.consumer(), delivered).await));
}

#[tokio::test(start_paused = true)]
async fn subscribe_and_save_refuse_bad_arguments() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let invalid = |r: Result<Subscription, Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(subs.subscribe(all(TRANSIENT), window(0)).await));
    assert!(invalid(
        subs.subscribe(all(TRANSIENT), window(10_001)).await
    ));
    assert!(matches!(
        subs.subscribe(all("unsaved"), window(1)).await,
        Err(Error::NotFound {
            resource: Resource::Subscription,
            ..
        })
    ));
    assert!(matches!(
        subs.save(spec(all("g"), 0, 3)).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(log.record(&all("g")).is_none());
    assert!(subs.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn saved_transient_settings_apply_to_its_next_consumer() {
    let log = FakeLog::new();
    log.append_plain("a", 4);
    let subs = open(&log).await;
    let key = all(TRANSIENT);
    let mut saved = SubscriptionSpec::new(key.clone());
    saved.start_from = Position(2);
    subs.save(saved).await.unwrap();
    assert!(log.record(&key).is_none());
    let mut sub = subs.subscribe(key, window(4)).await.unwrap();
    assert_eq!(positions(&mut sub, 2).await, vec![2, 3]);
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_every_consumer_and_refuses_new_work() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut durable = subs.subscribe(key.clone(), window(1)).await.unwrap();
    let mut transient = subs.subscribe(all(TRANSIENT), window(1)).await.unwrap();
    subs.shutdown(SubscriptionEnd::StoreRemoved).await;
    for sub in [&mut durable, &mut transient] {
        let mut last = None;
        while let Some(item) = timeout(PATIENCE, sub.next()).await.unwrap() {
            last = Some(item);
        }
        assert_eq!(
            last,
            Some(SubscriptionItem::End(SubscriptionEnd::StoreRemoved))
        );
    }
    assert!(matches!(
        subs.subscribe(key, window(1)).await,
        Err(Error::StoreStopping { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_acks_is_persisted_in_few_writes() {
    let log = FakeLog::new();
    log.append_plain("a", 200);
    let subs = Arc::new(open(&log).await);
    let key = save_group(&subs, "g", ConsumerStrategy::RoundRobin).await;
    let mut sub = subs.subscribe(key.clone(), window(200)).await.unwrap();
    let delivered = positions(&mut sub, 200).await;
    let before = log.puts.load(Ordering::Relaxed);
    let consumer = sub.consumer();
    let acks = delivered.into_iter().map(|p| {
        let subs = Arc::clone(&subs);
        let key = key.clone();
        tokio::spawn(async move { subs.ack(&key, consumer, Position(p)).await })
    });
    for ack in futures::future::join_all(acks).await {
        ack.unwrap().unwrap();
    }
    assert_eq!(info(&subs, &key).await.checkpoint, Position(200));
    let writes = log.puts.load(Ordering::Relaxed) - before;
    assert!(writes < 20, "{writes} writes for 200 acks");
    assert_eq!(log.record(&key).unwrap().checkpoint, Position(200));
}

#[derive(Clone, Debug)]
enum Op {
    /// Append this many events to stream `s-{0}`.
    Append(usize, usize),
    /// Let the consumer take up to this many items.
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, 1usize..6).prop_map(|(s, n)| Op::Append(s, n)),
        (1usize..12).prop_map(Op::Read),
    ]
}

async fn check_interleaving(initial: usize, ops: Vec<Op>, window: u32, filtered: bool) {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let selector = if filtered { "s-0" } else { "$all" };
    let mut appended: Vec<RecordedEvent> = Vec::new();
    let mut append = |stream: usize, count: usize| {
        for i in 0..count {
            let p = log.append(&format!("s-{stream}"), "E", json!({ "i": i }), json!({}));
            appended.push(log.events.lock().unwrap()[p.0 as usize].clone());
        }
    };
    append(0, initial);
    let key = key(SubscriptionType::ByStream, selector, TRANSIENT);
    let options = SubscribeOptions {
        window,
        start_from: None,
    };
    let mut sub = subs.subscribe(key, options).await.unwrap();
    let mut items = Vec::new();
    for op in ops {
        match op {
            Op::Append(stream, count) => append(stream, count),
            Op::Read(count) => {
                for _ in 0..count {
                    match timeout(Duration::from_millis(1), sub.next()).await {
                        Ok(Some(item)) => items.push(item),
                        _ => break,
                    }
                }
            }
        }
    }
    let expected: Vec<u64> = appended
        .iter()
        .filter(|e| !filtered || e.stream.as_str() == "s-0")
        .map(|e| e.position.0)
        .collect();
    let count_events = |items: &[SubscriptionItem]| {
        items
            .iter()
            .filter(|i| matches!(i, SubscriptionItem::Event(_)))
            .count()
    };
    while count_events(&items) < expected.len() || !items.contains(&SubscriptionItem::CaughtUp) {
        items.push(next_item(&mut sub).await);
    }
    assert!(nothing_within(&mut sub, Duration::from_secs(1)).await);
    let got: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            SubscriptionItem::Event(d) => Some(d.event.position.0),
            _ => None,
        })
        .collect();
    assert_eq!(got, expected);
    let caught_up = items
        .iter()
        .filter(|i| **i == SubscriptionItem::CaughtUp)
        .count();
    assert_eq!(caught_up, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn catch_up_and_live_deliver_every_matching_event_once_in_order(
        initial in 0usize..40,
        ops in proptest::collection::vec(op(), 0..40),
        window in 1u32..8,
        filtered in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(check_interleaving(initial, ops, window, filtered));
    }
}

#[tokio::test(start_paused = true)]
async fn pinned_stream_behind_a_full_consumer_waits_while_other_streams_flow() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = save_group(&subs, "g", ConsumerStrategy::PinnedByStream).await;
    let mut stuck = subs.subscribe(key.clone(), window(1)).await.unwrap();
    let mut busy = subs.subscribe(key.clone(), window(1)).await.unwrap();
    for version in 0..3 {
        for s in 0..6 {
            log.append(&format!("s-{s}"), "E", json!({ "v": version }), json!({}));
        }
    }
    let held = next_delivery(&mut stuck).await.event;
    assert_eq!(held.version, 0);
    let mut got: BTreeMap<StreamId, Vec<u64>> = BTreeMap::new();
    while let Ok(Some(item)) = timeout(Duration::from_secs(1), busy.next()).await {
        if let SubscriptionItem::Event(delivery) = item {
            let event = delivery.event;
            subs.ack(&key, busy.consumer(), event.position)
                .await
                .unwrap();
            got.entry(event.stream).or_default().push(event.version);
        }
    }
    assert!(
        !got.is_empty(),
        "other streams flow while one consumer is full"
    );
    assert!(
        !got.contains_key(&held.stream),
        "a pinned stream never moves"
    );
    assert!(got.values().all(|versions| *versions == vec![0, 1, 2]));
    assert!(nothing_within(&mut stuck, Duration::from_secs(1)).await);
    subs.ack(&key, stuck.consumer(), held.position)
        .await
        .unwrap();
    let mut resumed: BTreeMap<StreamId, Vec<u64>> = BTreeMap::new();
    while let Ok(Some(item)) = timeout(Duration::from_secs(1), stuck.next()).await {
        if let SubscriptionItem::Event(delivery) = item {
            let event = delivery.event;
            subs.ack(&key, stuck.consumer(), event.position)
                .await
                .unwrap();
            resumed.entry(event.stream).or_default().push(event.version);
        }
    }
    assert_eq!(resumed.remove(&held.stream), Some(vec![1, 2]));
    assert!(resumed.keys().all(|stream| !got.contains_key(stream)));
    assert_eq!(got.len() + resumed.len() + 1, 6);
}

#[tokio::test(start_paused = true)]
async fn consumer_ids_are_random_not_sequential() {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        let sub = subs.subscribe(all(TRANSIENT), window(4)).await.unwrap();
        ids.push(sub.consumer().0);
    }
    // Sequential ids would all fit in the low 64 bits and differ by one.
    assert!(ids.iter().any(|id| id >> 64 != 0), "{ids:x?}");
    assert!(ids.windows(2).all(|w| w[0].abs_diff(w[1]) > 1), "{ids:x?}");
}

#[tokio::test(start_paused = true)]
async fn the_configured_window_limit_is_enforced() {
    let log = FakeLog::new();
    let subs = open(&log).await.with_window_max(8);
    assert!(subs.subscribe(all(TRANSIENT), window(8)).await.is_ok());
    assert!(matches!(
        subs.subscribe(all(TRANSIENT), window(9)).await,
        Err(Error::InvalidArgument(_))
    ));
}
