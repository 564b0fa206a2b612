//! Store administration and worker descriptions.

use serde::{Deserialize, Serialize};

use crate::event::Position;
use crate::id::StoreId;

/// How a store is configured; fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Flush every commit to stable storage before acknowledging it.
    /// Off trades durability on power loss for speed (tests, caches).
    pub fsync: bool,
    /// Group concurrent appends into one batch and one flush.
    /// Off gives one flush per append (kept for comparison benchmarks).
    pub group_commit: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            fsync: true,
            group_commit: true,
        }
    }
}

/// The life-cycle state of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StoreState {
    /// Opening: recovering its log.
    Starting,
    /// Serving requests.
    Running,
    /// Being removed or shut down; requests get `StoreStopping`.
    Stopping,
}

/// A store and where it is served, as listed by `list_stores`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// The store.
    pub store: StoreId,
    /// Its configuration.
    pub config: StoreConfig,
    /// Its state.
    pub state: StoreState,
    /// Ids of the workers that serve it (filled in by a proxy; a worker names itself).
    pub workers: Vec<String>,
}

/// A store's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// The store.
    pub store: StoreId,
    /// Its state.
    pub state: StoreState,
    /// Streams holding at least one event.
    pub stream_count: u64,
    /// Events in the global log.
    pub event_count: u64,
    /// Position of the last event; `None` for an empty store.
    pub head: Option<Position>,
    /// Bytes the store occupies on disk (approximate for shared storage).
    pub disk_bytes: u64,
    /// Ids of the workers that serve it.
    pub workers: Vec<String>,
}

/// A worker's health as seen by the one reporting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkerHealth {
    /// Answering.
    Healthy,
    /// Re-admitted after an ejection; takes a trickle of requests until it proves itself.
    Probation,
    /// Missed heartbeats or probes; still routed to when nothing better exists.
    Suspect,
    /// Failing; not routed to until its back-off ends.
    Ejected,
}

/// A gateway worker as listed by `workers()` (the seed's `gateway_worker_pids`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Stable id of the worker.
    pub id: String,
    /// Where it is reached (`host:port`, or `mem` for in-process workers).
    pub address: String,
    /// Its health.
    pub health: WorkerHealth,
    /// Requests in flight to it right now.
    pub in_flight: u32,
    /// Latency estimate (peak EWMA), microseconds.
    pub latency_us: u64,
    /// Stores it serves.
    pub stores: Vec<StoreId>,
    /// Whether it serves every store of a shared database (PostgreSQL backend).
    pub shared_storage: bool,
}
