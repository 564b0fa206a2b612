//! What the engine measures, as plain counters and histograms the
//! application reads and exports (it picks the names and the format).
//!
//! The writer of each store records every committed batch here: its size
//! in appends and in events, how long its durable commit took, and how many
//! events it added to the store (idempotent re-sends add none).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gater_core::metrics::{Histogram, HistogramSnapshot, DURATION_US_BOUNDS, SIZE_BOUNDS};
use gater_core::StoreId;

/// The engine's measurements, shared by every store of one [`Store`](crate::Store).
#[derive(Debug)]
pub struct StoreMetrics {
    batch_events: Histogram,
    batch_appends: Histogram,
    fsync_us: Histogram,
    appended: Mutex<BTreeMap<StoreId, Arc<AtomicU64>>>,
}

/// The engine's measurements at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMetricsSnapshot {
    /// Events per committed batch.
    pub batch_events: HistogramSnapshot,
    /// Appends per committed batch.
    pub batch_appends: HistogramSnapshot,
    /// Microseconds each durable commit took (stores with `fsync` on only):
    /// the journal write and its `fdatasync` on the embedded backend, the
    /// transaction on PostgreSQL.
    pub fsync_us: HistogramSnapshot,
    /// Events appended through this engine since it started, per store it has served.
    pub appended_events: Vec<(StoreId, u64)>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            batch_events: Histogram::new(SIZE_BOUNDS),
            batch_appends: Histogram::new(SIZE_BOUNDS),
            fsync_us: Histogram::new(DURATION_US_BOUNDS),
            appended: Mutex::new(BTreeMap::new()),
        }
    }
}

impl StoreMetrics {
    /// The counts now.
    pub fn snapshot(&self) -> StoreMetricsSnapshot {
        let appended_events = self
            .appended()
            .iter()
            .map(|(store, count)| (store.clone(), count.load(Ordering::Relaxed)))
            .collect();
        StoreMetricsSnapshot {
            batch_events: self.batch_events.snapshot(),
            batch_appends: self.batch_appends.snapshot(),
            fsync_us: self.fsync_us.snapshot(),
            appended_events,
        }
    }

    /// The appended-events counter of `store`; a store opened again keeps counting on.
    pub(crate) fn appended_counter(&self, store: &StoreId) -> Arc<AtomicU64> {
        Arc::clone(self.appended().entry(store.clone()).or_default())
    }

    /// A committed batch of `appends` appends holding `events` events.
    pub(crate) fn handle_batch(&self, appends: u64, events: u64) {
        self.batch_appends.observe(appends);
        self.batch_events.observe(events);
    }

    /// A durable commit that took `micros` microseconds.
    pub(crate) fn handle_fsync(&self, micros: u64) {
        self.fsync_us.observe(micros);
    }

    fn appended(&self) -> std::sync::MutexGuard<'_, BTreeMap<StoreId, Arc<AtomicU64>>> {
        // Entries are only ever inserted whole, so a poisoned map is consistent.
        self.appended.lock().unwrap_or_else(|e| e.into_inner())
    }
}
