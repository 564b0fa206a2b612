//! W5, subscriptions: catch-up of a filled store through a transient `$all`
//! subscription, live append-to-delivery latency at a fixed write rate, and
//! a persistent group of consumers acking what it receives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gater_core::{
    BoxGater, Error, ExpectedVersion, Position, StoreId, StreamId, SubscribeOptions, Subscription,
    SubscriptionItem, SubscriptionKey, SubscriptionSpec,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::driver::{per_second, Tally};
use super::report::{metric, CaseResult};
use super::workload::{client_seed, fill, stream_ids, EventMaker, Params};

/// Streams the catch-up store is filled over.
const FILL_STREAMS: u32 = 100;
/// Window of the catch-up consumer: the largest the shipped limits allow.
const CATCHUP_WINDOW: u32 = 10_000;
/// Longest a catch-up may take before the case gives up on it.
const CATCHUP_TIMEOUT: Duration = Duration::from_secs(300);
/// Live appends in flight at once, so a slow commit does not lower the rate.
const LIVE_IN_FLIGHT_MAX: usize = 64;
/// How long the live consumer waits for a delivery once the writer has stopped.
const LIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Window of each consumer of the persistent group.
const GROUP_WINDOW: u32 = 256;
/// How often the group phase checks whether everything is acked.
const GROUP_POLL: Duration = Duration::from_millis(10);
/// Name of the persistent group.
const GROUP_NAME: &str = "bench-group";

/// Runs the three W5 phases on a store filled with `params.catchup_events`.
///
/// Returns the catch-up, live and group cases (ids `w5/<target>/catch-up`, …).
pub(crate) async fn run(
    gater: &BoxGater,
    store: &StoreId,
    params: &Params,
    target: &str,
) -> Result<Vec<CaseResult>, Error> {
    let streams = stream_ids(FILL_STREAMS);
    let per_stream = params
        .catchup_events
        .div_ceil(u64::from(FILL_STREAMS))
        .max(1);
    fill(gater, store, &streams, per_stream, params.seed).await?;
    let total = per_stream * u64::from(FILL_STREAMS);
    let mut catchup_case = CaseResult::new("w5", target, "subscriptions", "catch-up");
    catchup_case.params.insert("events".into(), total);
    catchup(gater, store, total, &mut catchup_case).await?;
    let mut live_case = CaseResult::new("w5", target, "subscriptions", "live");
    live_case
        .params
        .insert("rate".into(), u64::from(params.live_rate));
    live(gater, store, params, Position(total), &mut live_case).await?;
    let mut group_case = CaseResult::new("w5", target, "subscriptions", "group");
    group_case
        .params
        .insert("consumers".into(), params.group_consumers as u64);
    group(gater, store, params, total, &mut group_case).await?;
    Ok(vec![catchup_case, live_case, group_case])
}

fn all_key() -> SubscriptionKey {
    SubscriptionKey::stream(&StreamId::all())
}

/// Replays `total` events from position 0 and times it.
async fn catchup(
    gater: &BoxGater,
    store: &StoreId,
    total: u64,
    case: &mut CaseResult,
) -> Result<(), Error> {
    let options = SubscribeOptions {
        window: CATCHUP_WINDOW,
        start_from: Some(Position::START),
    };
    let began = Instant::now();
    let mut subscription = gater.subscribe(store, all_key(), options).await?;
    let received = tokio::time::timeout(CATCHUP_TIMEOUT, async {
        let mut received = 0u64;
        while received < total {
            match subscription.next().await {
                Some(SubscriptionItem::Event(_)) => received += 1,
                Some(SubscriptionItem::CaughtUp) => {}
                Some(SubscriptionItem::End(_)) | None => break,
            }
        }
        received
    })
    .await;
    let elapsed = began.elapsed();
    let received = match received {
        Ok(n) => n,
        Err(_) => {
            case.errors.insert("deadline_exceeded".into(), 1);
            0
        }
    };
    if received < total && !case.errors.contains_key("deadline_exceeded") {
        case.errors.insert("ended_early".into(), total - received);
    }
    case.measured_s = elapsed.as_secs_f64();
    case.figures
        .insert(metric::EVENTS_PER_S.into(), per_second(received, elapsed));
    Ok(())
}

/// Appends at `params.live_rate` while a caught-up consumer measures append-to-delivery latency.
async fn live(
    gater: &BoxGater,
    store: &StoreId,
    params: &Params,
    head: Position,
    case: &mut CaseResult,
) -> Result<(), Error> {
    let options = SubscribeOptions {
        window: CATCHUP_WINDOW,
        start_from: Some(head),
    };
    let mut subscription = gater.subscribe(store, all_key(), options).await?;
    wait_caught_up(&mut subscription).await?;
    let epoch = Instant::now();
    let mut writer = tokio::spawn(live_writer(
        gater.clone(),
        store.clone(),
        params.clone(),
        epoch,
    ));
    let warmup_ns = u64::try_from(params.timing.warmup.as_nanos()).unwrap_or(u64::MAX);
    let mut tally = Tally::new(params.timing.measure);
    let mut received = 0u64;
    let mut written: Option<(u64, Tally)> = None;
    loop {
        if written.as_ref().is_some_and(|(sent, _)| received >= *sent) {
            break;
        }
        tokio::select! {
            item = subscription.next() => match item {
                Some(SubscriptionItem::Event(delivery)) => {
                    received += 1;
                    let stamp = stamp_of(&delivery.event.data.data);
                    let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    if stamp >= warmup_ns {
                        tally.add(&Ok(1), Duration::from_nanos(now.saturating_sub(stamp)));
                    }
                }
                Some(SubscriptionItem::CaughtUp) => {}
                Some(SubscriptionItem::End(_)) | None => break,
            },
            done = &mut writer, if written.is_none() => {
                let done = done.map_err(|e| Error::invalid(format!("the live writer failed: {e}")))?;
                written = Some(done);
            }
            _ = tokio::time::sleep(LIVE_IDLE_TIMEOUT), if written.is_some() => break,
        }
    }
    if written.is_none() {
        writer.abort();
    }
    let (sent, writes) = written.unwrap_or((0, Tally::new(params.timing.measure)));
    case.measured_s = params.timing.measure.as_secs_f64();
    case.figures
        .insert(metric::EVENTS_PER_S.into(), tally.events_per_s());
    case.figures
        .insert(metric::APPENDS_PER_S.into(), writes.ops_per_s());
    case.figures
        .insert("missed".into(), sent.saturating_sub(received) as f64);
    case.latency = tally.latencies.summary();
    case.errors = writes.errors;
    Ok(())
}

async fn wait_caught_up(subscription: &mut Subscription) -> Result<(), Error> {
    loop {
        match subscription.next().await {
            Some(SubscriptionItem::CaughtUp) => return Ok(()),
            Some(SubscriptionItem::Event(_)) => {}
            Some(SubscriptionItem::End(end)) => {
                return Err(Error::invalid(format!(
                    "the live subscription ended before catching up: {end:?}"
                )))
            }
            None => return Err(Error::invalid("the live subscription closed")),
        }
    }
}

fn stamp_of(data: &[u8]) -> u64 {
    data.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// Appends one stamped event per tick for warm-up plus the measured window;
/// returns how many appends succeeded and their tally.
async fn live_writer(
    gater: BoxGater,
    store: StoreId,
    params: Params,
    epoch: Instant,
) -> (u64, Tally) {
    let rate = params.live_rate.max(1);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let until = epoch + params.timing.warmup + params.timing.measure;
    let measure_from = epoch + params.timing.warmup;
    let streams = stream_ids(FILL_STREAMS);
    let mut maker = EventMaker::new(client_seed(params.seed, &store, usize::MAX));
    let slots = Arc::new(Semaphore::new(LIVE_IN_FLIGHT_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    while tick.tick().await < until {
        // The semaphore lives as long as this function and is never closed.
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let stamp = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let stream = streams[maker.rng().index(streams.len())].clone();
        let event = maker.event(Some(stamp));
        let (gater, store) = (gater.clone(), store.clone());
        tasks.spawn(async move {
            let began = Instant::now();
            let outcome = gater
                .append_events(&store, &stream, ExpectedVersion::Any, vec![event])
                .await
                .map(|_| 1);
            drop(permit);
            (began, outcome)
        });
    }
    let mut tally = Tally::new(params.timing.measure);
    let mut sent = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok((began, outcome)) = joined else {
            continue;
        };
        sent += u64::from(outcome.is_ok());
        if began >= measure_from {
            tally.add(&outcome, began.elapsed());
        }
    }
    (sent, tally)
}

/// A persistent group of consumers acking everything from position 0.
async fn group(
    gater: &BoxGater,
    store: &StoreId,
    params: &Params,
    total: u64,
    case: &mut CaseResult,
) -> Result<(), Error> {
    let key = SubscriptionKey::new(
        gater_core::SubscriptionType::ByStream,
        gater_core::ALL_STREAM,
        GROUP_NAME,
    )?;
    gater
        .save_subscription(store, SubscriptionSpec::new(key.clone()))
        .await?;
    let acks = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..params.group_consumers.max(1) {
        let options = SubscribeOptions {
            window: GROUP_WINDOW,
            start_from: None,
        };
        let subscription = gater.subscribe(store, key.clone(), options).await?;
        let (gater, store, key) = (gater.clone(), store.clone(), key.clone());
        let (acks, failures) = (acks.clone(), failures.clone());
        consumers.spawn(async move {
            let consumer = subscription.consumer();
            let mut subscription = subscription;
            while let Some(item) = subscription.next().await {
                let SubscriptionItem::Event(delivery) = item else {
                    continue;
                };
                match gater
                    .ack_event(&store, &key, consumer, delivery.event.position)
                    .await
                {
                    Ok(()) => acks.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    tokio::time::sleep(params.timing.warmup).await;
    let (from_acks, from) = (acks.load(Ordering::Relaxed), Instant::now());
    let until = from + params.timing.measure;
    // Stop early once everything is acked: idle consumers would lower the rate.
    while Instant::now() < until && acks.load(Ordering::Relaxed) < total {
        tokio::time::sleep(GROUP_POLL.min(until - Instant::now())).await;
    }
    let (to_acks, window) = (acks.load(Ordering::Relaxed), from.elapsed());
    consumers.abort_all();
    while consumers.join_next().await.is_some() {}
    if let Err(error) = gater.remove_subscription(store, &key).await {
        tracing::warn!(%error, "cannot remove the benchmark group");
    }
    case.measured_s = window.as_secs_f64();
    case.figures.insert(
        metric::ACKS_PER_S.into(),
        per_second(to_acks - from_acks, window),
    );
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        case.errors.insert("ack_failed".into(), failed);
    }
    Ok(())
}
