//! `GET /metrics`: every metric family a server exports, named here and
//! nowhere else, rendered in the Prometheus (OpenMetrics) text format by
//! `prometheus-client` from one [`Scrape`] taken at request time.
//!
//! The libraries only measure (atomic counters, fixed-bucket histograms, the
//! status API); this module picks names, labels and units.

use gater_core::metrics::HistogramSnapshot;
use gater_proxy::ProxyCounters;
use gater_store::StoreMetricsSnapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::requests::RequestSnapshot;
use super::status::{Status, StoreRow, SubscriptionRow};

/// A gauge family read from each row of a status table: name, help, value.
type Gauge<Row> = (&'static str, &'static str, fn(&Row) -> u64);

/// Requests answered, by method and outcome (`ok` or the error kind).
pub(crate) const REQUESTS: &str = "gater_requests";
/// Time to answer a request, by method.
pub(crate) const REQUEST_DURATION: &str = "gater_request_duration_seconds";
/// Events appended by this process's stores, by store.
pub(crate) const APPENDED_EVENTS: &str = "gater_appended_events";
/// Events in a store's log.
pub(crate) const STORE_EVENTS: &str = "gater_store_events";
/// Streams of a store.
pub(crate) const STORE_STREAMS: &str = "gater_store_streams";
/// Bytes a store holds on disk.
pub(crate) const STORE_DISK_BYTES: &str = "gater_store_disk_bytes";
/// 1 for a store's current state (`running`, `stopping`, ...), by store and state.
pub(crate) const STORE_STATE: &str = "gater_store_state";
/// Events per group-commit batch.
pub(crate) const COMMIT_BATCH_EVENTS: &str = "gater_commit_batch_events";
/// Appends per group-commit batch.
pub(crate) const COMMIT_BATCH_APPENDS: &str = "gater_commit_batch_appends";
/// Time of a batch's durable commit.
pub(crate) const FSYNC_DURATION: &str = "gater_fsync_duration_seconds";
/// Matching events a persistent subscription has not handled yet.
pub(crate) const SUBSCRIPTION_LAG: &str = "gater_subscription_lag_events";
/// Deliveries of a persistent subscription not acked yet.
pub(crate) const SUBSCRIPTION_IN_FLIGHT: &str = "gater_subscription_in_flight";
/// Parked events of a persistent subscription.
pub(crate) const SUBSCRIPTION_PARKED: &str = "gater_subscription_parked";
/// Consumers attached to a persistent subscription.
pub(crate) const SUBSCRIPTION_CONSUMERS: &str = "gater_subscription_consumers";
/// 1 when the proxy routes to a worker, 0 when it is ejected.
pub(crate) const WORKER_UP: &str = "gater_worker_up";
/// Requests in flight from the proxy to a worker.
pub(crate) const WORKER_IN_FLIGHT: &str = "gater_worker_in_flight";
/// The proxy's latency estimate of a worker (peak EWMA).
pub(crate) const WORKER_LATENCY: &str = "gater_worker_latency_seconds";
/// Requests the proxy sent again to another worker, by method.
pub(crate) const RETRIES: &str = "gater_retries";
/// Times the proxy ejected a worker.
pub(crate) const EJECTIONS: &str = "gater_ejections";
/// The server's byte budget for requests it holds.
pub(crate) const MEMORY_BUDGET: &str = "gater_memory_budget_bytes";
/// Bytes of the budget in use.
pub(crate) const MEMORY_USED: &str = "gater_memory_used_bytes";
/// Always 1, labelled with the build's version.
pub(crate) const BUILD_INFO: &str = "gater_build_info";

/// The content type of the text `render` writes.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Microseconds per second, to export durations in seconds.
const MICROS_PER_SECOND: f64 = 1_000_000.0;

/// Everything one scrape exports.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scrape {
    /// Requests this server answered.
    pub(crate) requests: RequestSnapshot,
    /// Workers, stores and subscriptions (gauges).
    pub(crate) status: Status,
    /// The store engine of this process, if it has one.
    pub(crate) store: Option<StoreMetricsSnapshot>,
    /// The proxy of this process, if it has one.
    pub(crate) proxy: Option<ProxyCounters>,
    /// `(budget, used)` bytes of the server's memory budget.
    pub(crate) memory: Option<(u64, u64)>,
}

/// The scrape as exposition text.
pub(crate) fn render(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a `String` cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

type Fmt = Result<(), std::fmt::Error>;

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Fmt {
        self.encode_requests(&mut encoder)?;
        self.encode_stores(&mut encoder)?;
        self.encode_subscriptions(&mut encoder)?;
        if self.proxy.is_some() {
            self.encode_proxy(&mut encoder)?;
        }
        if let Some((budget, used)) = self.memory {
            gauge(
                &mut encoder,
                MEMORY_BUDGET,
                "Request bytes the server may hold",
                budget,
            )?;
            gauge(
                &mut encoder,
                MEMORY_USED,
                "Request bytes the server holds now",
                used,
            )?;
        }
        let mut info = family(
            &mut encoder,
            BUILD_INFO,
            "Build information",
            MetricType::Gauge,
        )?;
        let labels = [("version", env!("CARGO_PKG_VERSION"))];
        info.encode_family(&labels)?.encode_gauge(&1u64)
    }
}

impl Scrape {
    fn encode_requests(&self, encoder: &mut DescriptorEncoder) -> Fmt {
        let mut requests = family(encoder, REQUESTS, "Requests answered", MetricType::Counter)?;
        for ((method, outcome), count) in &self.requests.counts {
            let labels = [("method", *method), ("outcome", *outcome)];
            requests
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(count, None)?;
        }
        let mut durations = family(
            encoder,
            REQUEST_DURATION,
            "Time to answer a request",
            MetricType::Histogram,
        )?;
        for (method, histogram) in &self.requests.durations_us {
            let labels = [("method", *method)];
            histogram_of(
                durations.encode_family(&labels)?,
                histogram,
                MICROS_PER_SECOND,
            )?;
        }
        Ok(())
    }

    fn encode_stores(&self, encoder: &mut DescriptorEncoder) -> Fmt {
        if let Some(store) = &self.store {
            let mut appended = family(
                encoder,
                APPENDED_EVENTS,
                "Events appended by this process's stores",
                MetricType::Counter,
            )?;
            for (id, count) in &store.appended_events {
                let labels = [("store", id.as_str())];
                appended
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(count, None)?;
            }
            let batch_help = "Events per group-commit batch";
            let m = family(
                encoder,
                COMMIT_BATCH_EVENTS,
                batch_help,
                MetricType::Histogram,
            )?;
            histogram_of(m, &store.batch_events, 1.0)?;
            let batch_help = "Appends per group-commit batch";
            let m = family(
                encoder,
                COMMIT_BATCH_APPENDS,
                batch_help,
                MetricType::Histogram,
            )?;
            histogram_of(m, &store.batch_appends, 1.0)?;
            let help = "Time of a batch's durable commit (journal write and fsync)";
            let m = family(encoder, FSYNC_DURATION, help, MetricType::Histogram)?;
            histogram_of(m, &store.fsync_us, MICROS_PER_SECOND)?;
        }
        let stores = &self.status.stores;
        let per_store: [Gauge<StoreRow>; 3] = [
            (STORE_EVENTS, "Events in a store's log", |s| s.events),
            (STORE_STREAMS, "Streams of a store", |s| s.streams),
            (STORE_DISK_BYTES, "Bytes a store holds on disk", |s| {
                s.disk_bytes
            }),
        ];
        for (name, help, value) in per_store {
            let mut m = family(encoder, name, help, MetricType::Gauge)?;
            for store in stores {
                let labels = [("store", store.store.as_str())];
                m.encode_family(&labels)?.encode_gauge(&value(store))?;
            }
        }
        let help = "1 for the store's current state";
        let mut state = family(encoder, STORE_STATE, help, MetricType::Gauge)?;
        for store in stores {
            let labels = [
                ("store", store.store.as_str()),
                ("state", store.state.as_str()),
            ];
            state.encode_family(&labels)?.encode_gauge(&1u64)?;
        }
        Ok(())
    }

    fn encode_subscriptions(&self, encoder: &mut DescriptorEncoder) -> Fmt {
        let per_subscription: [Gauge<SubscriptionRow>; 4] = [
            (SUBSCRIPTION_LAG, "Matching events not handled yet", |s| {
                s.lag
            }),
            (SUBSCRIPTION_IN_FLIGHT, "Deliveries not acked yet", |s| {
                s.in_flight.into()
            }),
            (SUBSCRIPTION_PARKED, "Parked events", |s| s.parked),
            (SUBSCRIPTION_CONSUMERS, "Consumers attached", |s| {
                s.consumers.into()
            }),
        ];
        for (name, help, value) in per_subscription {
            let mut m = family(encoder, name, help, MetricType::Gauge)?;
            for sub in &self.status.subscriptions {
                let labels = [
                    ("store", sub.store.as_str()),
                    ("subscription", sub.name.as_str()),
                ];
                m.encode_family(&labels)?.encode_gauge(&value(sub))?;
            }
        }
        Ok(())
    }

    fn encode_proxy(&self, encoder: &mut DescriptorEncoder) -> Fmt {
        let workers = &self.status.workers;
        let mut up = family(
            encoder,
            WORKER_UP,
            "1 unless the worker is ejected",
            MetricType::Gauge,
        )?;
        for w in workers {
            let labels = [("worker", w.id.as_str())];
            let value = u64::from(w.health != "ejected");
            up.encode_family(&labels)?.encode_gauge(&value)?;
        }
        let help = "Requests in flight to a worker";
        let mut in_flight = family(encoder, WORKER_IN_FLIGHT, help, MetricType::Gauge)?;
        for w in workers {
            let labels = [("worker", w.id.as_str())];
            in_flight
                .encode_family(&labels)?
                .encode_gauge(&u64::from(w.in_flight))?;
        }
        let help = "Latency estimate of a worker (peak EWMA)";
        let mut latency = family(encoder, WORKER_LATENCY, help, MetricType::Gauge)?;
        for w in workers {
            let labels = [("worker", w.id.as_str())];
            let seconds = w.latency_us as f64 / MICROS_PER_SECOND;
            latency.encode_family(&labels)?.encode_gauge(&seconds)?;
        }
        let counters = self.proxy.clone().unwrap_or_default();
        let help = "Requests sent again to another worker";
        let mut retries = family(encoder, RETRIES, help, MetricType::Counter)?;
        for (method, count) in &counters.retries {
            let labels = [("method", *method)];
            retries
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(count, None)?;
        }
        let mut ejections = family(
            encoder,
            EJECTIONS,
            "Times a worker was ejected",
            MetricType::Counter,
        )?;
        for (worker, count) in &counters.ejections {
            let labels = [("worker", worker.as_str())];
            ejections
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(count, None)?;
        }
        Ok(())
    }
}

fn family<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, kind)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Fmt {
    family(encoder, name, help, MetricType::Gauge)?.encode_gauge(&value)
}

/// Encodes `h` (integer units) divided by `scale` (1 for counts, 10⁶ for µs → s).
fn histogram_of(mut encoder: MetricEncoder<'_>, h: &HistogramSnapshot, scale: f64) -> Fmt {
    let mut buckets = Vec::with_capacity(h.bounds.len() + 1);
    let mut previous = 0u64;
    for (bound, cumulative) in h.bounds.iter().zip(&h.cumulative) {
        buckets.push((*bound as f64 / scale, cumulative.saturating_sub(previous)));
        previous = *cumulative;
    }
    buckets.push((f64::MAX, h.count.saturating_sub(previous)));
    encoder.encode_histogram::<NoLabelSet>(h.sum as f64 / scale, h.count, &buckets, None)
}
