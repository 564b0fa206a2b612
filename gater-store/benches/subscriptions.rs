//! Subscription benchmarks over the embedded store, in-process:
//!
//! - catch-up: replay of 1,000,000 stored events through a transient `$all`
//!   subscription (target: at least 500,000 events/s);
//! - live: append-to-delivery latency at 10,000 events/s, ten single-event
//!   appends every millisecond (targets: p50 at most 1 ms, p99 at most 5 ms).
//!
//! Run with `cargo bench -p gater-store --bench subscriptions`. Sizes can be
//! scaled down with `GATER_BENCH_EVENTS` and `GATER_BENCH_LIVE_SECONDS`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use gater_core::{
    EventData, EventId, ExpectedVersion, Gater, StoreConfig, StoreId, StreamId, SubscribeOptions,
    SubscriptionItem, SubscriptionKey,
};
use gater_store::{Store, StoreOptions};

/// Events replayed by the catch-up benchmark.
const CATCH_UP_EVENTS: u64 = 1_000_000;
/// Events per append while filling the store.
const FILL_BATCH: u64 = 5_000;
/// Live rate: appends per millisecond tick (10 per ms = 10,000 events/s).
const LIVE_APPENDS_PER_TICK: u64 = 10;
/// How long the live benchmark runs.
const LIVE_SECONDS: u64 = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(StoreOptions::new(dir.path()))
            .await
            .expect("the store opens");
        catch_up(&store, env_u64("GATER_BENCH_EVENTS", CATCH_UP_EVENTS)).await;
        live(&store, env_u64("GATER_BENCH_LIVE_SECONDS", LIVE_SECONDS)).await;
        store.shutdown().await;
    });
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn new_store(gater: &Store, name: &str) -> StoreId {
    let store = StoreId::new(name).expect("a valid store id");
    let config = StoreConfig {
        fsync: false,
        group_commit: true,
        retention: gater_core::Retention::NONE,
    };
    gater
        .create_store(&store, config)
        .await
        .expect("the store is created");
    store
}

fn event(n: u64, data: Vec<u8>) -> EventData {
    let mut bytes = [0u8; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    EventData::json(
        EventId::from_random_bytes(bytes),
        "Measured",
        data,
        b"{}".to_vec(),
    )
}

fn all() -> SubscriptionKey {
    SubscriptionKey::stream(&StreamId::all())
}

async fn catch_up(gater: &Store, events: u64) {
    let store = new_store(gater, "bench-catch-up").await;
    let stream = StreamId::new("bench").expect("a valid stream id");
    let mut n = 0;
    while n < events {
        let batch = FILL_BATCH.min(events - n);
        let data = (n..n + batch)
            .map(|i| event(i, format!(r#"{{"i":{i}}}"#).into_bytes()))
            .collect();
        gater
            .append_events(&store, &stream, ExpectedVersion::Any, data)
            .await
            .expect("the fill append succeeds");
        n += batch;
    }
    let options = SubscribeOptions {
        window: 10_000,
        start_from: None,
    };
    let started = Instant::now();
    let mut sub = gater
        .subscribe(&store, all(), options)
        .await
        .expect("subscribe");
    let mut received = 0;
    while received < events {
        match sub.next().await {
            Some(SubscriptionItem::Event(_)) => received += 1,
            Some(SubscriptionItem::CaughtUp) => {}
            other => panic!("catch-up ended early: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let rate = received as f64 / elapsed.as_secs_f64();
    println!(
        "subscriptions/catch_up: {received} events in {:.3} s = {rate:.0} events/s (target >= 500000)",
        elapsed.as_secs_f64()
    );
}

async fn live(gater: &Store, seconds: u64) {
    let store = new_store(gater, "bench-live").await;
    let base = Instant::now();
    let options = SubscribeOptions {
        window: 10_000,
        start_from: None,
    };
    let mut sub = gater
        .subscribe(&store, all(), options)
        .await
        .expect("subscribe");
    let total = seconds * 1_000 * LIVE_APPENDS_PER_TICK;
    let receiver = tokio::spawn(async move {
        let mut latencies_us = Vec::with_capacity(total as usize);
        while (latencies_us.len() as u64) < total {
            match sub.next().await {
                Some(SubscriptionItem::Event(delivery)) => {
                    let now = base.elapsed().as_nanos() as u64;
                    let sent: u64 = std::str::from_utf8(&delivery.event.data.data)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("the payload is the send time");
                    latencies_us.push(now.saturating_sub(sent) / 1_000);
                }
                Some(SubscriptionItem::CaughtUp) => {}
                other => panic!("live subscription ended: {other:?}"),
            }
        }
        latencies_us
    });
    let stream = StreamId::new("live").expect("a valid stream id");
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0;
    while n < total {
        tick.tick().await;
        for _ in 0..LIVE_APPENDS_PER_TICK {
            let sent = base.elapsed().as_nanos() as u64;
            let data = vec![event(n, sent.to_string().into_bytes())];
            gater
                .append_events(&store, &stream, ExpectedVersion::Any, data)
                .await
                .expect("the live append succeeds");
            n += 1;
        }
    }
    let mut latencies_us = receiver.await.expect("the receiver finishes");
    latencies_us.sort_unstable();
    let at = |q: f64| latencies_us[((latencies_us.len() - 1) as f64 * q) as usize];
    let rate = total as f64 / base.elapsed().as_secs_f64();
    println!(
        "subscriptions/live: {total} events at {rate:.0} events/s: latency p50 {} us, p99 {} us, max {} us (targets p50 <= 1000, p99 <= 5000)",
        at(0.50),
        at(0.99),
        at(1.0)
    );
}
