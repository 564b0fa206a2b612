//! Store administration and worker descriptions.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::event::Position;
use crate::id::StoreId;
use crate::lifecycle::Retention;

/// How a store is configured; fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Flush every commit to stable storage before acknowledging it.
    /// Off trades durability on power loss for speed (tests, caches).
    pub fsync: bool,
    /// Group concurrent appends into one batch and one flush.
    /// Off gives one flush per append (kept for comparison benchmarks).
    pub group_commit: bool,
    /// The retention of every stream that sets none of its own (field by
    /// field, see [`Retention::or`]); [`Retention::NONE`] keeps everything.
    pub retention: Retention,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            fsync: true,
            group_commit: true,
            retention: Retention::NONE,
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
    /// Its disk is full: reads are served, appends refused with
    /// `StorageFull` until free space returns (it heals by itself).
    ReadOnly,
    /// An I/O error or corruption stopped it: appends are refused with
    /// `StorageFailed`; it is reopened from disk with back-off.
    Failed,
}

impl StoreState {
    /// The state's snake_case name, as JSON, tables and metrics labels show it.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreState::Starting => "starting",
            StoreState::Running => "running",
            StoreState::Stopping => "stopping",
            StoreState::ReadOnly => "read_only",
            StoreState::Failed => "failed",
        }
    }

    /// Whether the store takes appends in this state (`Starting` stores
    /// queue them until they run).
    pub fn takes_writes(self) -> bool {
        matches!(self, StoreState::Starting | StoreState::Running)
    }

    /// The error an append gets from a store in this state, `None` when it
    /// takes appends: the one mapping from a refusing state to an error,
    /// used by the worker and by a proxy that knows the state already.
    pub fn refusal(self, store: &StoreId, reason: &str) -> Option<Error> {
        let (store, message) = (store.to_string(), reason.to_owned());
        match self {
            StoreState::Starting | StoreState::Running => None,
            StoreState::Stopping => Some(Error::StoreStopping { store }),
            StoreState::ReadOnly => Some(Error::StorageFull { store, message }),
            StoreState::Failed => Some(Error::StorageFailed { store, message }),
        }
    }
}

impl std::fmt::Display for StoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store that a worker serves but that refuses appends now, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreFault {
    /// The store.
    pub store: StoreId,
    /// `ReadOnly` or `Failed`.
    pub state: StoreState,
    /// What is wrong, in words.
    pub reason: String,
}

/// What `verify_store` found: every record of the store's log read back and
/// checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The store.
    pub store: StoreId,
    /// Records scanned.
    pub records: u64,
    /// Positions whose record failed its checksum or did not decode, ascending.
    pub corrupt: Vec<u64>,
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
    /// Why it is `ReadOnly` or `Failed`, in words; `None` otherwise.
    pub reason: Option<String>,
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
    /// Why it is `ReadOnly` or `Failed`, in words; `None` otherwise.
    pub reason: Option<String>,
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
    /// Its stores that refuse appends now (`ReadOnly` or `Failed`): a proxy
    /// routes no appends for them to it, reads still go there.
    pub faults: Vec<StoreFault>,
}
