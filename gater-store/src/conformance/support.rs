//! Helpers shared by the conformance cases: unique stores, random event ids,
//! and checks that panic with the case's name.

use std::collections::hash_map::RandomState;
use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use gater_core::{Error, EventData, EventId, Gater, StoreConfig, StoreId, StreamId};

static STORE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A random u64 from the standard library's per-process hashing keys.
pub fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(STORE_COUNTER.load(Ordering::Relaxed));
    hasher.finish()
}

/// A fresh random (version 4) event id.
pub fn random_event_id() -> EventId {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&random_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&random_u64().to_le_bytes());
    EventId::from_random_bytes(bytes)
}

/// The config conformance stores use: no fsync (speed), group commit on.
pub const CONFIG: StoreConfig = StoreConfig {
    fsync: false,
    group_commit: true,
    retention: gater_core::Retention::NONE,
};

/// Creates a store with a name no other case uses (a counter plus a random suffix).
pub async fn new_store(gater: &dyn Gater, case: &str) -> StoreId {
    let n = STORE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = StoreId::new(format!("conf-{n}-{:08x}", random_u64() as u32))
        .unwrap_or_else(|e| panic!("[{case}] store id: {e}"));
    ok(case, gater.create_store(&id, CONFIG).await);
    id
}

/// A stream id (panics on an invalid literal: a bug in the suite).
pub fn stream(id: &str) -> StreamId {
    StreamId::new(id).unwrap_or_else(|e| panic!("conformance stream id {id:?}: {e}"))
}

/// A JSON event with a random id and `{"n": n}` as data.
pub fn event(event_type: &str, n: usize) -> EventData {
    EventData::json(
        random_event_id(),
        event_type,
        format!("{{\"n\":{n}}}").into_bytes(),
        b"{\"source\":\"conformance\"}".to_vec(),
    )
}

/// `count` events of type `Tested`, data numbered from 0.
pub fn events(count: usize) -> Vec<EventData> {
    (0..count).map(|n| event("Tested", n)).collect()
}

/// Unwraps `result` or panics naming the case.
#[track_caller]
pub fn ok<T>(case: &str, result: Result<T, Error>) -> T {
    result.unwrap_or_else(|e| panic!("[{case}] expected success, got error: {e:?}"))
}

/// The error of `result`, or a panic naming the case.
#[track_caller]
pub fn err<T: Debug>(case: &str, result: Result<T, Error>) -> Error {
    match result {
        Ok(value) => panic!("[{case}] expected an error, got {value:?}"),
        Err(e) => e,
    }
}

/// Asserts `actual == expected` or panics naming the case and `what`.
#[track_caller]
pub fn same<T: PartialEq + Debug>(case: &str, what: &str, actual: T, expected: T) {
    if actual != expected {
        panic!("[{case}] {what}: expected {expected:?}, got {actual:?}");
    }
}

/// Asserts `condition` or panics naming the case and `what`.
#[track_caller]
pub fn check(case: &str, what: &str, condition: bool) {
    if !condition {
        panic!("[{case}] {what}");
    }
}

/// Asserts `error` is of `kind` (see `Error::kind`).
#[track_caller]
pub fn kind(case: &str, what: &str, error: &Error, kind: &str) {
    if error.kind() != kind {
        panic!("[{case}] {what}: expected a {kind} error, got {error:?}");
    }
}

/// A target that hands each request to the next of several workers in
/// turn, so a case's writes and reads go through different workers: the
/// suite run through it checks that a change made through one worker of a
/// shared storage shows through every other at once.
pub struct RoundRobin {
    workers: Vec<std::sync::Arc<dyn Gater>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Debug for RoundRobin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundRobin")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl RoundRobin {
    /// Takes turns over `first` and `rest`.
    pub fn new(
        first: std::sync::Arc<dyn Gater>,
        rest: Vec<std::sync::Arc<dyn Gater>>,
    ) -> RoundRobin {
        let mut workers = vec![first];
        workers.extend(rest);
        RoundRobin {
            workers,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> &dyn Gater {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &*self.workers[turn % self.workers.len()]
    }
}

#[async_trait::async_trait]
impl Gater for RoundRobin {
    async fn call(
        &self,
        request: gater_core::wire::Request,
        within: Option<std::time::Duration>,
    ) -> Result<gater_core::wire::Response, Error> {
        self.pick().call(request, within).await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: gater_core::SubscriptionKey,
        options: gater_core::SubscribeOptions,
    ) -> Result<gater_core::Subscription, Error> {
        self.pick().subscribe(store, key, options).await
    }
}
