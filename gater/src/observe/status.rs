//! The status document: workers, stores and persistent subscriptions, as
//! one JSON object. `GET /api/status`, the status page, `gater top` and the
//! gauges of `GET /metrics` all read it, collected through the `Gater` API
//! (in process for the HTTP listener, over QUIC for `gater top`), so every
//! view shows the same numbers.

use gater_core::{Gater, StoreId, SubscriptionInfo, WorkerInfo};
use serde::{Deserialize, Serialize};

/// Most stores one status document describes (the first ones by id).
pub(crate) const STATUS_STORES_MAX: usize = 1_000;

/// What a status document says about the whole process and cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    /// The version of the `gater` that collected it.
    pub(crate) version: String,
    /// Workers behind the server (a worker lists itself).
    pub(crate) workers: Vec<WorkerRow>,
    /// Stores with their counters.
    pub(crate) stores: Vec<StoreRow>,
    /// Persistent subscriptions of every listed store.
    pub(crate) subscriptions: Vec<SubscriptionRow>,
    /// Stores left out past [`STATUS_STORES_MAX`].
    pub(crate) stores_omitted: u64,
}

/// One worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WorkerRow {
    pub(crate) id: String,
    pub(crate) address: String,
    /// `healthy`, `probation`, `suspect` or `ejected`.
    pub(crate) health: String,
    pub(crate) in_flight: u32,
    /// Latency estimate (peak EWMA), microseconds.
    pub(crate) latency_us: u64,
    pub(crate) stores: u64,
}

/// One store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoreRow {
    pub(crate) store: String,
    pub(crate) state: String,
    pub(crate) streams: u64,
    pub(crate) events: u64,
    /// Position of the last event; -1 for an empty store.
    pub(crate) head: i64,
    pub(crate) disk_bytes: u64,
    pub(crate) workers: Vec<String>,
}

/// One persistent subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubscriptionRow {
    pub(crate) store: String,
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) selector: String,
    pub(crate) checkpoint: u64,
    pub(crate) lag: u64,
    pub(crate) consumers: u32,
    pub(crate) in_flight: u32,
    pub(crate) parked: u64,
}

/// Lower-case name of a `Debug`-named enum value (`ReadOnly` → `read_only`).
pub(crate) fn snake_name(value: &impl std::fmt::Debug) -> String {
    let mut out = String::new();
    for (i, c) in format!("{value:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Collects the status through `gater`. A store that vanishes meanwhile, or
/// a part the server does not answer (`workers` of a lone worker), is left
/// out rather than failing the whole document; listing the stores must work.
pub(crate) async fn collect(gater: &dyn Gater) -> Result<Status, gater_core::Error> {
    let workers = gater
        .workers()
        .await
        .map(|list| list.iter().map(worker_row).collect())
        .unwrap_or_default();
    let mut ids: Vec<StoreId> = gater
        .list_stores()
        .await?
        .into_iter()
        .map(|s| s.store)
        .collect();
    ids.sort();
    ids.dedup();
    let omitted = ids.len().saturating_sub(STATUS_STORES_MAX) as u64;
    ids.truncate(STATUS_STORES_MAX);
    let mut stores = Vec::with_capacity(ids.len());
    let mut subscriptions = Vec::new();
    for id in &ids {
        let Ok(status) = gater.get_store_status(id).await else {
            continue;
        };
        stores.push(StoreRow {
            store: id.to_string(),
            state: snake_name(&status.state),
            streams: status.stream_count,
            events: status.event_count,
            head: status
                .head
                .map_or(-1, |p| i64::try_from(p.0).unwrap_or(i64::MAX)),
            disk_bytes: status.disk_bytes,
            workers: status.workers,
        });
        if let Ok(list) = gater.get_subscriptions(id).await {
            subscriptions.extend(
                list.iter()
                    .filter(|s| !s.spec.key.is_transient())
                    .map(|s| subscription_row(id, s)),
            );
        }
    }
    Ok(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        workers,
        stores,
        subscriptions,
        stores_omitted: omitted,
    })
}

fn worker_row(w: &WorkerInfo) -> WorkerRow {
    WorkerRow {
        id: w.id.clone(),
        address: w.address.clone(),
        health: snake_name(&w.health),
        in_flight: w.in_flight,
        latency_us: w.latency_us,
        stores: w.stores.len() as u64,
    }
}

fn subscription_row(store: &StoreId, s: &SubscriptionInfo) -> SubscriptionRow {
    SubscriptionRow {
        store: store.to_string(),
        name: s.spec.key.name().to_owned(),
        kind: s.spec.key.kind().as_str().to_owned(),
        selector: s.spec.key.selector().to_owned(),
        checkpoint: s.checkpoint.0,
        lag: s.lag,
        consumers: s.consumers,
        in_flight: s.in_flight,
        parked: s.parked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_become_snake_case() {
        assert_eq!(snake_name(&gater_core::WorkerHealth::Healthy), "healthy");
        assert_eq!(snake_name(&gater_core::StoreState::Running), "running");
        #[derive(Debug)]
        struct ReadOnly;
        assert_eq!(snake_name(&ReadOnly), "read_only");
    }
}
