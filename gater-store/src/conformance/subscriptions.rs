//! Conformance cases for subscriptions: catch-up then live, the four
//! selector types, persistent consumer groups with acks, nacks, redelivery,
//! parking and replay, removal, listing and the typed errors of bad input.
//!
//! Cases use short real timeouts (200 ms acks) because transports cannot
//! share a paused clock; waits are bounded by [`PATIENCE`] so a broken
//! implementation fails instead of hanging. No case asserts on timing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use gater_core::{
    ConsumerStrategy, Delivery, Error, EventData, EventId, ExpectedVersion, Gater, NackAction,
    Position, Resource, StoreConfig, StoreId, StreamId, SubscribeOptions, Subscription,
    SubscriptionEnd, SubscriptionInfo, SubscriptionItem, SubscriptionKey, SubscriptionSpec,
    SubscriptionType, TRANSIENT,
};
use tokio::time::timeout;

/// Longest wait for something that must happen.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// Ack timeout of the redelivery cases.
const SHORT_ACK_TIMEOUT_MS: u64 = 200;
/// Ack timeout of cases that must see no redelivery.
const LONG_ACK_TIMEOUT_MS: u64 = 600_000;

/// Runs every subscription case against `gater`.
pub async fn run(gater: &dyn Gater) {
    catch_up_then_live_without_gap_or_duplicate(gater).await;
    selectors_deliver_only_matching_events(gater).await;
    acks_move_the_checkpoint_of_a_persistent_subscription(gater).await;
    unacked_delivery_is_redelivered_after_the_timeout(gater).await;
    nacks_retry_skip_and_park(gater).await;
    events_are_parked_after_max_retries_and_replayed(gater).await;
    round_robin_group_shares_events(gater).await;
    saving_again_keeps_the_checkpoint(gater).await;
    removal_ends_consumers(gater).await;
    transient_acks_are_accepted(gater).await;
    bad_input_gets_typed_errors(gater).await;
}

async fn catch_up_then_live_without_gap_or_duplicate(gater: &dyn Gater) {
    let case = "catch_up_then_live_without_gap_or_duplicate";
    let store = new_store(gater, case).await;
    append(gater, &store, "order-1", "Placed", 3).await;
    let key = transient(SubscriptionType::ByStream, "$all");
    let mut sub = subscribe(gater, &store, key, 2, case).await;
    assert_eq!(positions(&mut sub, 3, case).await, vec![0, 1, 2], "{case}");
    assert_eq!(
        next_item(&mut sub, case).await,
        SubscriptionItem::CaughtUp,
        "{case}"
    );
    append(gater, &store, "order-2", "Placed", 4).await;
    assert_eq!(
        positions(&mut sub, 4, case).await,
        vec![3, 4, 5, 6],
        "{case}"
    );
    assert!(quiet(&mut sub).await, "{case}: nothing more");
}

async fn selectors_deliver_only_matching_events(gater: &dyn Gater) {
    let case = "selectors_deliver_only_matching_events";
    let store = new_store(gater, case).await;
    let events = [
        (
            "order-1",
            "OrderPlaced",
            r#"{"total":10}"#,
            r#"{"tenant":"acme"}"#,
        ),
        (
            "user-1",
            "UserJoined",
            r#"{"name":"x"}"#,
            r#"{"tenant":"acme"}"#,
        ),
        (
            "order-2",
            "OrderShipped",
            r#"{"total":20}"#,
            r#"{"tenant":"zeta"}"#,
        ),
        (
            "order-1",
            "OrderShipped",
            r#"{"total":10}"#,
            r#"{"tenant":"acme"}"#,
        ),
    ];
    for (stream, event_type, data, metadata) in events {
        let event = event_data(event_type, data, metadata);
        gater
            .append_events(
                &store,
                &stream_id(stream),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .unwrap_or_else(|e| panic!("{case}: append: {e}"));
    }
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
        let mut sub = subscribe(gater, &store, transient(kind, selector), 8, case).await;
        let got = positions(&mut sub, expected.len(), case).await;
        assert_eq!(got, expected, "{case}: {kind} {selector}");
        assert!(
            quiet(&mut sub).await,
            "{case}: {kind} {selector} delivered more"
        );
    }
}

async fn acks_move_the_checkpoint_of_a_persistent_subscription(gater: &dyn Gater) {
    let case = "acks_move_the_checkpoint_of_a_persistent_subscription";
    let store = new_store(gater, case).await;
    append(gater, &store, "s", "E", 4).await;
    let key = save(gater, &store, "billing", LONG_ACK_TIMEOUT_MS, 5, case).await;
    let mut sub = subscribe(gater, &store, key.clone(), 4, case).await;
    let delivered = positions(&mut sub, 4, case).await;
    let listed = info(gater, &store, &key, case).await;
    assert_eq!((listed.in_flight, listed.consumers), (4, 1), "{case}");
    assert_eq!(listed.checkpoint, Position(0), "{case}: nothing acked yet");
    for position in [0, 2, 3] {
        ack(gater, &store, &key, &sub, position, case).await;
    }
    let listed = info(gater, &store, &key, case).await;
    assert_eq!(listed.checkpoint, Position(1), "{case}: 1 is still unacked");
    assert_eq!(listed.lag, 3, "{case}");
    ack(gater, &store, &key, &sub, 1, case).await;
    let listed = info(gater, &store, &key, case).await;
    assert_eq!((listed.checkpoint, listed.lag), (Position(4), 0), "{case}");
    assert_eq!(delivered, vec![0, 1, 2, 3], "{case}");
}

async fn unacked_delivery_is_redelivered_after_the_timeout(gater: &dyn Gater) {
    let case = "unacked_delivery_is_redelivered_after_the_timeout";
    let store = new_store(gater, case).await;
    append(gater, &store, "s", "E", 1).await;
    let key = save(gater, &store, "redeliver", SHORT_ACK_TIMEOUT_MS, 5, case).await;
    let mut sub = subscribe(gater, &store, key.clone(), 4, case).await;
    let first = next_delivery(&mut sub, case).await;
    let again = next_delivery(&mut sub, case).await;
    assert_eq!(first.event.position, again.event.position, "{case}");
    assert_eq!((first.attempt, again.attempt), (1, 2), "{case}");
    ack(gater, &store, &key, &sub, again.event.position.0, case).await;
    let listed = info(gater, &store, &key, case).await;
    assert_eq!(
        (listed.checkpoint, listed.in_flight),
        (Position(1), 0),
        "{case}"
    );
}

async fn nacks_retry_skip_and_park(gater: &dyn Gater) {
    let case = "nacks_retry_skip_and_park";
    let store = new_store(gater, case).await;
    append(gater, &store, "s", "E", 3).await;
    let key = save(gater, &store, "nacks", LONG_ACK_TIMEOUT_MS, 5, case).await;
    let mut sub = subscribe(gater, &store, key.clone(), 1, case).await;
    let consumer = sub.consumer();

    let first = next_delivery(&mut sub, case).await;
    nack(
        gater,
        &store,
        &key,
        consumer,
        first.event.position,
        NackAction::Retry,
        case,
    )
    .await;
    let retried = next_delivery(&mut sub, case).await;
    assert_eq!(
        (retried.event.position, retried.attempt),
        (first.event.position, 2),
        "{case}"
    );
    nack(
        gater,
        &store,
        &key,
        consumer,
        retried.event.position,
        NackAction::Skip,
        case,
    )
    .await;

    let second = next_delivery(&mut sub, case).await;
    assert_eq!(second.event.position, Position(1), "{case}");
    nack(
        gater,
        &store,
        &key,
        consumer,
        second.event.position,
        NackAction::Park,
        case,
    )
    .await;
    let third = next_delivery(&mut sub, case).await;
    assert_eq!(third.event.position, Position(2), "{case}");
    ack(gater, &store, &key, &sub, 2, case).await;

    let parked = list_parked(gater, &store, &key, case).await;
    assert_eq!(parked, vec![1], "{case}");
    let listed = info(gater, &store, &key, case).await;
    assert_eq!(
        (listed.parked, listed.checkpoint),
        (1, Position(3)),
        "{case}"
    );

    let replayed = gater
        .replay_parked(&store, &key)
        .await
        .unwrap_or_else(|e| panic!("{case}: replay_parked: {e}"));
    assert_eq!(replayed, 1, "{case}");
    let again = next_delivery(&mut sub, case).await;
    assert_eq!(again.event.position, Position(1), "{case}");
    ack(gater, &store, &key, &sub, 1, case).await;
    assert!(
        list_parked(gater, &store, &key, case).await.is_empty(),
        "{case}"
    );
}

async fn events_are_parked_after_max_retries_and_replayed(gater: &dyn Gater) {
    let case = "events_are_parked_after_max_retries_and_replayed";
    let store = new_store(gater, case).await;
    append(gater, &store, "s", "E", 1).await;
    let key = save(gater, &store, "poison", SHORT_ACK_TIMEOUT_MS, 1, case).await;
    let mut sub = subscribe(gater, &store, key.clone(), 1, case).await;
    for attempt in 1..=2 {
        let delivery = next_delivery(&mut sub, case).await;
        assert_eq!(
            (delivery.event.position, delivery.attempt),
            (Position(0), attempt),
            "{case}"
        );
    }
    let mut parked = Vec::new();
    for _ in 0..(PATIENCE.as_millis() / 50) {
        parked = list_parked(gater, &store, &key, case).await;
        if !parked.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        parked,
        vec![0],
        "{case}: parked after one retry, two unacked deliveries"
    );
    assert_eq!(
        info(gater, &store, &key, case).await.checkpoint,
        Position(1),
        "{case}"
    );
    let replayed = gater
        .replay_parked(&store, &key)
        .await
        .unwrap_or_else(|e| panic!("{case}: replay_parked: {e}"));
    assert_eq!(replayed, 1, "{case}");
    let again = next_delivery(&mut sub, case).await;
    assert_eq!(
        (again.event.position, again.attempt),
        (Position(0), 1),
        "{case}"
    );
    ack(gater, &store, &key, &sub, 0, case).await;
}

async fn round_robin_group_shares_events(gater: &dyn Gater) {
    let case = "round_robin_group_shares_events";
    let store = new_store(gater, case).await;
    let key = save(gater, &store, "workers", LONG_ACK_TIMEOUT_MS, 5, case).await;
    let mut a = subscribe(gater, &store, key.clone(), 2, case).await;
    let mut b = subscribe(gater, &store, key.clone(), 2, case).await;
    append(gater, &store, "s", "E", 4).await;
    let mut all = positions(&mut a, 2, case).await;
    all.extend(positions(&mut b, 2, case).await);
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3], "{case}");
    assert_eq!(info(gater, &store, &key, case).await.consumers, 2, "{case}");
}

async fn saving_again_keeps_the_checkpoint(gater: &dyn Gater) {
    let case = "saving_again_keeps_the_checkpoint";
    let store = new_store(gater, case).await;
    append(gater, &store, "s", "E", 2).await;
    let key = save(gater, &store, "resave", LONG_ACK_TIMEOUT_MS, 5, case).await;
    let mut sub = subscribe(gater, &store, key.clone(), 4, case).await;
    for position in positions(&mut sub, 2, case).await {
        ack(gater, &store, &key, &sub, position, case).await;
    }
    let spec = SubscriptionSpec {
        strategy: ConsumerStrategy::PinnedByStream,
        ack_timeout_ms: 1_000,
        max_retries: 7,
        ..SubscriptionSpec::new(key.clone())
    };
    gater
        .save_subscription(&store, spec.clone())
        .await
        .unwrap_or_else(|e| panic!("{case}: save again: {e}"));
    let listed = info(gater, &store, &key, case).await;
    assert_eq!(listed.spec, spec, "{case}");
    assert_eq!(listed.checkpoint, Position(2), "{case}");
}

async fn removal_ends_consumers(gater: &dyn Gater) {
    let case = "removal_ends_consumers";
    let store = new_store(gater, case).await;
    let key = save(gater, &store, "doomed", LONG_ACK_TIMEOUT_MS, 5, case).await;
    let mut sub = subscribe(gater, &store, key.clone(), 4, case).await;
    gater
        .remove_subscription(&store, &key)
        .await
        .unwrap_or_else(|e| panic!("{case}: remove: {e}"));
    let mut last = None;
    while let Some(item) = timeout(PATIENCE, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{case}: the stream did not end"))
    {
        last = Some(item);
    }
    assert_eq!(
        last,
        Some(SubscriptionItem::End(SubscriptionEnd::Removed)),
        "{case}"
    );
    let again = gater.remove_subscription(&store, &key).await;
    assert!(
        is_not_found(&again, Resource::Subscription),
        "{case}: {again:?}"
    );
    let listed = gater
        .get_subscriptions(&store)
        .await
        .unwrap_or_else(|e| panic!("{case}: get_subscriptions: {e}"));
    assert!(listed.iter().all(|i| i.spec.key != key), "{case}");
}

async fn transient_acks_are_accepted(gater: &dyn Gater) {
    let case = "transient_acks_are_accepted";
    let store = new_store(gater, case).await;
    append(gater, &store, "s", "E", 1).await;
    let key = transient(SubscriptionType::ByStream, "$all");
    let mut sub = subscribe(gater, &store, key.clone(), 4, case).await;
    let delivery = next_delivery(&mut sub, case).await;
    ack(gater, &store, &key, &sub, delivery.event.position.0, case).await;
    let consumer = sub.consumer();
    let position = delivery.event.position;
    nack(
        gater,
        &store,
        &key,
        consumer,
        position,
        NackAction::Retry,
        case,
    )
    .await;
    assert!(
        quiet(&mut sub).await,
        "{case}: a transient nack redelivers nothing"
    );
}

async fn bad_input_gets_typed_errors(gater: &dyn Gater) {
    let case = "bad_input_gets_typed_errors";
    let store = new_store(gater, case).await;
    append(gater, &store, "s", "E", 2).await;
    let all = transient(SubscriptionType::ByStream, "$all");
    for window in [0, u32::MAX] {
        let options = SubscribeOptions {
            window,
            start_from: None,
        };
        let refused = gater.subscribe(&store, all.clone(), options).await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{case}: window {window}"
        );
    }
    let unsaved = all.clone().with_name("never-saved").expect("valid name");
    let refused = gater
        .subscribe(&store, unsaved, SubscribeOptions::default())
        .await;
    assert!(
        is_not_found(&refused, Resource::Subscription),
        "{case}: unsaved"
    );
    let zero_timeout = SubscriptionSpec {
        ack_timeout_ms: 0,
        ..SubscriptionSpec::new(all.clone().with_name("zero").expect("valid name"))
    };
    let refused = gater.save_subscription(&store, zero_timeout).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{case}: ack timeout 0"
    );

    let key = save(gater, &store, "strict", LONG_ACK_TIMEOUT_MS, 5, case).await;
    let mut sub = subscribe(gater, &store, key.clone(), 1, case).await;
    let delivered = next_delivery(&mut sub, case).await.event.position;
    let consumer = sub.consumer();
    let stranger = gater_core::ConsumerId(u128::MAX);
    let refused = gater.ack_event(&store, &key, stranger, delivered).await;
    assert!(
        is_not_found(&refused, Resource::Consumer),
        "{case}: {refused:?}"
    );
    let refused = gater.ack_event(&store, &key, consumer, Position(1)).await;
    assert!(
        is_not_found(&refused, Resource::Delivery),
        "{case}: {refused:?}"
    );
    let refused = gater
        .nack_event(&store, &key, consumer, Position(99), NackAction::Park)
        .await;
    assert!(
        is_not_found(&refused, Resource::Delivery),
        "{case}: {refused:?}"
    );
    let listed = info(gater, &store, &key, case).await;
    assert_eq!(
        (listed.in_flight, listed.parked),
        (1, 0),
        "{case}: nothing changed"
    );
    ack(gater, &store, &key, &sub, delivered.0, case).await;
    let refused = gater.ack_event(&store, &key, consumer, delivered).await;
    assert!(
        is_not_found(&refused, Resource::Delivery),
        "{case}: acked twice"
    );

    let missing = StoreId::new(format!("{}-missing", store.as_str())).expect("valid store id");
    let refused = gater.get_subscriptions(&missing).await;
    assert!(
        is_not_found(&refused, Resource::Store),
        "{case}: {refused:?}"
    );
}

/// A store of its own for one case, named uniquely across processes and runs.
async fn new_store(gater: &dyn Gater, case: &str) -> StoreId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("conf-sub-{}-{nanos}-{n}", std::process::id());
    let store = StoreId::new(id).expect("the generated store id is valid");
    let config = StoreConfig {
        fsync: false,
        group_commit: true,
        retention: gater_core::Retention::NONE,
    };
    gater
        .create_store(&store, config)
        .await
        .unwrap_or_else(|e| panic!("{case}: create_store: {e}"));
    store
}

fn stream_id(stream: &str) -> StreamId {
    StreamId::new(stream).expect("the case's stream ids are valid")
}

fn event_data(event_type: &str, data: &str, metadata: &str) -> EventData {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&std::process::id().to_be_bytes().repeat(2));
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    EventData::json(
        EventId::from_random_bytes(bytes),
        event_type,
        data.as_bytes().to_vec(),
        metadata.as_bytes().to_vec(),
    )
}

async fn append(gater: &dyn Gater, store: &StoreId, stream: &str, event_type: &str, count: usize) {
    let events = (0..count)
        .map(|i| event_data(event_type, &format!(r#"{{"i":{i}}}"#), "{}"))
        .collect();
    gater
        .append_events(store, &stream_id(stream), ExpectedVersion::Any, events)
        .await
        .unwrap_or_else(|e| panic!("append to {stream}: {e}"));
}

pub(super) fn transient(kind: SubscriptionType, selector: &str) -> SubscriptionKey {
    SubscriptionKey::new(kind, selector, TRANSIENT).expect("the case's selectors are valid")
}

async fn save(
    gater: &dyn Gater,
    store: &StoreId,
    name: &str,
    ack_timeout_ms: u64,
    max_retries: u32,
    case: &str,
) -> SubscriptionKey {
    let key = SubscriptionKey::new(SubscriptionType::ByStream, "$all", name)
        .expect("the case's names are valid");
    let spec = SubscriptionSpec {
        ack_timeout_ms,
        max_retries,
        ..SubscriptionSpec::new(key.clone())
    };
    gater
        .save_subscription(store, spec)
        .await
        .unwrap_or_else(|e| panic!("{case}: save_subscription: {e}"));
    key
}

pub(super) async fn subscribe(
    gater: &dyn Gater,
    store: &StoreId,
    key: SubscriptionKey,
    window: u32,
    case: &str,
) -> Subscription {
    let options = SubscribeOptions {
        window,
        start_from: None,
    };
    gater
        .subscribe(store, key, options)
        .await
        .unwrap_or_else(|e| panic!("{case}: subscribe: {e}"))
}

pub(super) async fn next_item(sub: &mut Subscription, case: &str) -> SubscriptionItem {
    timeout(PATIENCE, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{case}: no item arrived"))
        .unwrap_or_else(|| panic!("{case}: the stream ended without End"))
}

pub(super) async fn next_delivery(sub: &mut Subscription, case: &str) -> Delivery {
    loop {
        match next_item(sub, case).await {
            SubscriptionItem::Event(delivery) => return delivery,
            SubscriptionItem::CaughtUp => continue,
            SubscriptionItem::End(end) => panic!("{case}: the subscription ended: {end:?}"),
        }
    }
}

async fn positions(sub: &mut Subscription, count: usize, case: &str) -> Vec<u64> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(next_delivery(sub, case).await.event.position.0);
    }
    out
}

/// Whether no event (nor the end) arrives for a while; `CaughtUp` is passed over.
async fn quiet(sub: &mut Subscription) -> bool {
    let deadline = tokio::time::Instant::now() + QUIET;
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Err(_) => return true,
            Ok(Some(SubscriptionItem::CaughtUp)) => continue,
            Ok(_) => return false,
        }
    }
}

async fn ack(
    gater: &dyn Gater,
    store: &StoreId,
    key: &SubscriptionKey,
    sub: &Subscription,
    position: u64,
    case: &str,
) {
    gater
        .ack_event(store, key, sub.consumer(), Position(position))
        .await
        .unwrap_or_else(|e| panic!("{case}: ack {position}: {e}"));
}

async fn nack(
    gater: &dyn Gater,
    store: &StoreId,
    key: &SubscriptionKey,
    consumer: gater_core::ConsumerId,
    position: Position,
    action: NackAction,
    case: &str,
) {
    gater
        .nack_event(store, key, consumer, position, action)
        .await
        .unwrap_or_else(|e| panic!("{case}: nack {position} {action:?}: {e}"));
}

async fn list_parked(
    gater: &dyn Gater,
    store: &StoreId,
    key: &SubscriptionKey,
    case: &str,
) -> Vec<u64> {
    gater
        .list_parked(store, key)
        .await
        .unwrap_or_else(|e| panic!("{case}: list_parked: {e}"))
        .iter()
        .map(|e| e.position.0)
        .collect()
}

async fn info(
    gater: &dyn Gater,
    store: &StoreId,
    key: &SubscriptionKey,
    case: &str,
) -> SubscriptionInfo {
    gater
        .get_subscriptions(store)
        .await
        .unwrap_or_else(|e| panic!("{case}: get_subscriptions: {e}"))
        .into_iter()
        .find(|i| &i.spec.key == key)
        .unwrap_or_else(|| panic!("{case}: {key} is not listed"))
}

fn is_not_found<T>(result: &Result<T, Error>, resource: Resource) -> bool {
    matches!(result, Err(Error::NotFound { resource: r, .. }) if *r == resource)
}
