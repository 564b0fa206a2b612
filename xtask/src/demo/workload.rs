//! The demo's workload over any `Gater`: a fresh store, a counting
//! subscription, concurrent conditional appends, a snapshot, and the summary.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use gater_core::{
    ConsumerId, EventData, EventId, ExpectedVersion, Gater, Position, SnapshotKey, StoreConfig,
    StoreId, StreamId, SubscribeOptions, Subscription, SubscriptionItem, SubscriptionKey,
    SubscriptionSpec, SubscriptionType,
};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use crate::cluster::render_table;

/// Name of the demo's persistent subscription.
const SUBSCRIPTION_NAME: &str = "demo-counter";
/// The snapshot's source.
const SNAPSHOT_SOURCE: &str = "demo";
/// The subscription gives up when nothing arrives for this long.
const DELIVERY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Acks the counting consumer keeps in flight at once.
const ACKS_IN_FLIGHT_MAX: usize = 64;

/// How much work to do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Events to append in all.
    pub(crate) events: u64,
    /// Streams, one writer each.
    pub(crate) streams: u64,
}

/// What the demo measured.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    /// Where it ran.
    pub(crate) server: String,
    /// The store it created.
    pub(crate) store: String,
    /// Events appended.
    pub(crate) appended: u64,
    /// Streams appended to.
    pub(crate) streams: u64,
    /// Time the appends took.
    pub(crate) append_elapsed: Duration,
    /// Latency of each append, microseconds, sorted.
    pub(crate) append_latency_us: Vec<u64>,
    /// Events the subscription received (first deliveries).
    pub(crate) deliveries: u64,
    /// Deliveries of an event received before.
    pub(crate) redeliveries: u64,
    /// Commit-to-delivery time of each first delivery, microseconds, sorted.
    pub(crate) delivery_latency_us: Vec<u64>,
    /// Subscription lag (events past its checkpoint) when the appends finished.
    pub(crate) lag_after_appends: u64,
    /// Subscription lag at the end.
    pub(crate) lag_final: u64,
    /// The snapshot recorded and read back.
    pub(crate) snapshot: String,
}

/// Runs the workload against `gater`.
pub(crate) async fn run(gater: Arc<dyn Gater>, server: &str, plan: &Plan) -> Result<Report> {
    let store = StoreId::new(format!("demo-{}", now_us() / 1_000))?;
    gater
        .create_store(&store, StoreConfig::default())
        .await
        .context("create store")?;
    let key = SubscriptionKey::new(
        SubscriptionType::ByStream,
        StreamId::all().as_str(),
        SUBSCRIPTION_NAME,
    )?;
    gater
        .save_subscription(&store, SubscriptionSpec::new(key.clone()))
        .await
        .context("save subscription")?;
    let subscription = gater
        .subscribe(&store, key.clone(), SubscribeOptions::default())
        .await
        .context("subscribe")?;
    let counter = tokio::spawn(count(
        gater.clone(),
        store.clone(),
        key.clone(),
        subscription,
        plan.events,
    ));
    let started = Instant::now();
    let mut append_latency_us = append_all(&gater, &store, plan).await?;
    let append_elapsed = started.elapsed();
    let lag_after_appends = lag(&gater, &store, &key).await?;
    let snapshot = snapshot(&gater, &store).await?;
    let counted = counter.await.context("the subscription task failed")??;
    let lag_final = lag(&gater, &store, &key).await?;
    append_latency_us.sort_unstable();
    Ok(Report {
        server: server.to_owned(),
        store: store.as_str().to_owned(),
        appended: plan.events,
        streams: plan.streams,
        append_elapsed,
        append_latency_us,
        deliveries: counted.deliveries,
        redeliveries: counted.redeliveries,
        delivery_latency_us: counted.latency_us,
        lag_after_appends,
        lag_final,
        snapshot,
    })
}

/// One writer per stream, each append conditional on the version the writer
/// last wrote; returns each append's latency.
async fn append_all(gater: &Arc<dyn Gater>, store: &StoreId, plan: &Plan) -> Result<Vec<u64>> {
    let bar = ProgressBar::new(plan.events);
    if let Ok(style) =
        ProgressStyle::with_template("appending {bar:40} {pos}/{len} events ({per_sec}, eta {eta})")
    {
        bar.set_style(style);
    }
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..plan.streams {
        let share = plan.events / plan.streams + u64::from(writer < plan.events % plan.streams);
        let (gater, store, bar) = (gater.clone(), store.clone(), bar.clone());
        writers.spawn(async move {
            let stream = StreamId::new(format!("demo-{writer}"))?;
            let mut latencies = Vec::with_capacity(usize::try_from(share).unwrap_or(0));
            let mut expected = ExpectedVersion::NoStream;
            for n in 0..share {
                let data = format!(r#"{{"writer":{writer},"n":{n}}}"#).into_bytes();
                let event = EventData::json(
                    EventId::from_uuid(uuid::Uuid::new_v4()),
                    "DemoEvent",
                    data,
                    b"{}".to_vec(),
                );
                let sent = Instant::now();
                let written = gater
                    .append_events(&store, &stream, expected, vec![event])
                    .await
                    .with_context(|| format!("append to {}", stream.as_str()))?;
                latencies.push(micros(sent.elapsed()));
                expected = ExpectedVersion::Exact(written.version);
                bar.inc(1);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = writers.join_next().await {
        all.extend(joined.context("a writer task failed")??);
    }
    bar.finish_and_clear();
    Ok(all)
}

/// What the counting consumer saw.
struct Counted {
    deliveries: u64,
    redeliveries: u64,
    latency_us: Vec<u64>,
}

/// Acks and counts deliveries until `expected` arrived, the subscription
/// ends, or nothing arrives for [`DELIVERY_IDLE_TIMEOUT`].
async fn count(
    gater: Arc<dyn Gater>,
    store: StoreId,
    key: SubscriptionKey,
    mut subscription: Subscription,
    expected: u64,
) -> Result<Counted> {
    let consumer = subscription.consumer();
    let (acks, positions) = mpsc::channel(ACKS_IN_FLIGHT_MAX);
    let acker = tokio::spawn(ack_all(gater, store, key, consumer, positions));
    let mut counted = Counted {
        deliveries: 0,
        redeliveries: 0,
        latency_us: Vec::with_capacity(usize::try_from(expected).unwrap_or(0)),
    };
    while counted.deliveries < expected {
        let item = match tokio::time::timeout(DELIVERY_IDLE_TIMEOUT, subscription.next()).await {
            Ok(Some(item)) => item,
            Ok(None) | Err(_) => break,
        };
        match item {
            SubscriptionItem::Event(delivery) => {
                if delivery.attempt == 1 {
                    counted.deliveries += 1;
                    counted
                        .latency_us
                        .push(now_us().saturating_sub(delivery.event.created_us));
                } else {
                    counted.redeliveries += 1;
                }
                if acks.send(delivery.event.position).await.is_err() {
                    break;
                }
            }
            SubscriptionItem::CaughtUp => {}
            SubscriptionItem::End(end) => bail!("the subscription ended: {end:?}"),
        }
    }
    drop(acks);
    acker.await.context("the ack task failed")??;
    counted.latency_us.sort_unstable();
    Ok(counted)
}

/// Acks the positions it receives, up to [`ACKS_IN_FLIGHT_MAX`] at once, so
/// the consumer is not held to one round trip per event.
async fn ack_all(
    gater: Arc<dyn Gater>,
    store: StoreId,
    key: SubscriptionKey,
    consumer: ConsumerId,
    mut positions: mpsc::Receiver<Position>,
) -> Result<()> {
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = positions.recv(), if pending.len() < ACKS_IN_FLIGHT_MAX => {
                let Some(position) = next else { break };
                let (gater, store, key) = (gater.clone(), store.clone(), key.clone());
                pending.push(async move {
                    gater.ack_event(&store, &key, consumer, position).await
                });
            }
            Some(done) = pending.next(), if !pending.is_empty() => done.context("ack")?,
        }
    }
    while let Some(done) = pending.next().await {
        done.context("ack")?;
    }
    Ok(())
}

/// The demo subscription's lag, as the server reports it.
async fn lag(gater: &Arc<dyn Gater>, store: &StoreId, key: &SubscriptionKey) -> Result<u64> {
    let subscriptions = gater
        .get_subscriptions(store)
        .await
        .context("list subscriptions")?;
    subscriptions
        .iter()
        .find(|s| &s.spec.key == key)
        .map(|s| s.lag)
        .context("the demo subscription is not listed")
}

/// Records a snapshot of the first stream at its version and reads it back.
async fn snapshot(gater: &Arc<dyn Gater>, store: &StoreId) -> Result<String> {
    let stream = StreamId::new("demo-0")?;
    let version = gater.get_version(store, &stream).await?.unwrap_or(0);
    let data = format!(r#"{{"events_seen":{}}}"#, version + 1).into_bytes();
    let key = SnapshotKey {
        source: SNAPSHOT_SOURCE.to_owned(),
        stream: stream.as_str().to_owned(),
        version,
    };
    gater
        .record_snapshot(store, key.clone(), data.clone())
        .await
        .context("record snapshot")?;
    let read = gater
        .read_snapshot(store, &key.source, &key.stream, None)
        .await
        .context("read snapshot")?;
    if read.key != key || read.data != data {
        bail!("the snapshot read back differs from the one recorded");
    }
    Ok(format!(
        "{}/{}@{} ({} bytes, read back)",
        key.source,
        key.stream,
        key.version,
        data.len()
    ))
}

impl Report {
    /// The summary table.
    pub(crate) fn render(&self) -> String {
        let seconds = self.append_elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            self.appended as f64 / seconds
        } else {
            0.0
        };
        let rows: Vec<Vec<String>> = [
            ("server", self.server.clone()),
            ("store", self.store.clone()),
            (
                "events appended",
                format!("{} over {} streams", self.appended, self.streams),
            ),
            ("append time", format!("{seconds:.2} s")),
            ("events/s", format!("{rate:.0}")),
            (
                "append p50",
                millis(percentile(&self.append_latency_us, 50)),
            ),
            (
                "append p99",
                millis(percentile(&self.append_latency_us, 99)),
            ),
            ("deliveries", self.deliveries.to_string()),
            ("redeliveries", self.redeliveries.to_string()),
            (
                "delivery p50",
                millis(percentile(&self.delivery_latency_us, 50)),
            ),
            (
                "delivery p99",
                millis(percentile(&self.delivery_latency_us, 99)),
            ),
            (
                "lag after appends",
                format!("{} events", self.lag_after_appends),
            ),
            ("lag at the end", format!("{} events", self.lag_final)),
            ("snapshot", self.snapshot.clone()),
        ]
        .into_iter()
        .map(|(metric, value)| vec![metric.to_owned(), value])
        .collect();
        format!(
            "demo summary\n{}",
            render_table(&["metric", "value"], &rows)
        )
    }
}

/// The `p`th percentile (nearest rank) of sorted values; 0 for none.
pub(crate) fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let len = sorted.len() as u64;
    let rank = (p * len).div_ceil(100).clamp(1, len);
    sorted[usize::try_from(rank - 1).unwrap_or(0)]
}

fn millis(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1_000.0)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// Wall-clock microseconds since the Unix epoch (the store stamps events the same way).
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(micros)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: &[u64], p: u64, expected: u64) {
        assert_eq!(percentile(values, p), expected, "p{p} of {values:?}");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        check(&[], 50, 0);
        check(&[7], 99, 7);
        check(&[1, 2, 3, 4], 50, 2);
        check(&[1, 2, 3, 4], 99, 4);
        let hundred: Vec<u64> = (1..=100).collect();
        check(&hundred, 50, 50);
        check(&hundred, 99, 99);
        check(&hundred, 100, 100);
    }

    #[test]
    fn the_summary_names_every_metric() {
        let report = Report {
            server: "127.0.0.1:1".into(),
            store: "demo-1".into(),
            appended: 10,
            streams: 2,
            append_elapsed: Duration::from_millis(500),
            append_latency_us: vec![1_000, 2_000],
            deliveries: 10,
            redeliveries: 0,
            delivery_latency_us: vec![3_000],
            lag_after_appends: 4,
            lag_final: 0,
            snapshot: "demo/demo-0@4".into(),
        };
        let text = report.render();
        for needle in [
            "events/s",
            "20",
            "append p50",
            "1.00 ms",
            "append p99",
            "2.00 ms",
            "deliveries",
            "delivery p99",
            "3.00 ms",
            "lag after appends",
            "4 events",
            "demo/demo-0@4",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
    }
}
