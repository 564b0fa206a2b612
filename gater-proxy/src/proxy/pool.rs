//! The pool: membership of the workers behind a proxy, what each serves, the
//! in-flight count the proxy tracks itself, and each worker's policy state
//! (health and latency estimate) as the core's routing types keep it.
//!
//! The pool holds facts, not decisions: which worker gets a request is the
//! routing policy's call, made on a [`Snapshot`] of the pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gater_core::routing::{EwmaConfig, Health, HealthConfig, PeakEwma, Serves, WorkerView};
use gater_core::{BoxGater, Error, Side, StoreFault, StoreId, StoreInfo, WorkerHealth, WorkerInfo};

/// One worker as the proxy knows it.
pub(crate) struct Worker {
    pub(crate) id: String,
    pub(crate) address: String,
    pub(crate) client: BoxGater,
    /// Joined by heartbeat (removed after a long silence) rather than configured.
    pub(crate) dynamic: bool,
    /// The identity whose heartbeat registered it (joined workers only).
    pub(crate) owner: Option<Arc<str>>,
    /// Distinguishes this incarnation from an earlier worker with the same id.
    pub(crate) generation: u64,
    in_flight: AtomicU32,
    /// Times the health policy ejected this worker.
    ejections: AtomicU64,
    state: Mutex<State>,
}

/// What the worker last told the proxy, and what the proxy observed of it.
struct State {
    /// Shared so a routing snapshot copies a pointer, not the list.
    stores: Arc<[StoreId]>,
    shared_storage: bool,
    /// Its stores that refuse appends (read-only or failed), as it last
    /// reported them or as an append just found.
    faults: Arc<[StoreFault]>,
    /// Bumped by every store change made through the proxy.
    store_changes: u64,
    /// Proxy time the worker was last heard from: its last heartbeat, or for
    /// a configured worker also its last answer.
    last_heard: Duration,
    health: Health,
    latency: PeakEwma,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("dynamic", &self.dynamic)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Requests in flight to this worker now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight, unless `max` are already.
    pub(crate) fn try_begin(self: &Arc<Self>, max: u32) -> Option<InFlight> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(InFlight {
            worker: Arc::clone(self),
        })
    }

    /// Whether the worker serves `store` (or every store, on shared storage).
    pub(crate) fn serves(&self, store: &StoreId) -> bool {
        let state = self.state();
        state.shared_storage || state.stores.contains(store)
    }

    /// A counter of the store changes made through the proxy; read it before
    /// asking the worker for its stores and pass it to [`Worker::set_stores`].
    pub(crate) fn store_changes(&self) -> u64 {
        self.state().store_changes
    }

    /// Replaces the stores the worker serves with what it reported, unless a
    /// store was created or removed through the proxy since `seen` was read:
    /// then the report may predate that change and the next probe corrects it.
    pub(crate) fn set_stores(&self, stores: &[StoreInfo], seen: u64, now: Duration) {
        let faults: Arc<[StoreFault]> = stores.iter().filter_map(fault_of).collect();
        let stores: BTreeSet<StoreId> = stores.iter().map(|s| s.store.clone()).collect();
        let mut state = self.state();
        self.answered(&mut state, now);
        state.faults = faults;
        if state.store_changes == seen {
            state.stores = stores.into_iter().collect();
        }
    }

    /// An append found `store` refusing appends on this worker: no more
    /// appends for it go there until a probe or heartbeat says it heals.
    pub(crate) fn note_fault(&self, fault: StoreFault) {
        let mut state = self.state();
        let mut faults: Vec<StoreFault> = state
            .faults
            .iter()
            .filter(|f| f.store != fault.store)
            .cloned()
            .collect();
        faults.push(fault);
        state.faults = faults.into();
    }

    /// Records a store created on, or removed from, the worker through the proxy.
    pub(crate) fn note_store(&self, store: &StoreId, served: bool) {
        let mut state = self.state();
        let mut stores: BTreeSet<StoreId> = state.stores.iter().cloned().collect();
        let changed = if served {
            stores.insert(store.clone())
        } else {
            stores.remove(store)
        };
        if changed {
            state.stores = stores.into_iter().collect();
            state.store_changes += 1;
        }
    }

    /// Records a heartbeat's facts. A heartbeat may have been composed before
    /// a change made through the proxy, so it only adds stores; probes, which
    /// know when they asked, also drop them.
    pub(crate) fn heard(
        &self,
        stores: Vec<StoreId>,
        faults: Vec<StoreFault>,
        shared_storage: bool,
        now: Duration,
    ) {
        let mut state = self.state();
        state.faults = faults.into();
        let mut all: BTreeSet<StoreId> = state.stores.iter().cloned().collect();
        let before = all.len();
        all.extend(stores);
        if all.len() != before {
            state.stores = all.into_iter().collect();
        }
        state.shared_storage = shared_storage;
        state.last_heard = state.last_heard.max(now);
    }

    /// The worker reported shared storage: it serves every store.
    pub(crate) fn set_shared_storage(&self) {
        self.state().shared_storage = true;
    }

    /// Times the health policy ejected this worker.
    pub(crate) fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Applies `change` to the health state, counting an ejection it starts.
    fn change_health(&self, state: &mut State, change: impl FnOnce(&mut Health)) {
        let before = state.health.ejected_until();
        change(&mut state.health);
        let after = state.health.ejected_until();
        if after.is_some() && after != before {
            self.ejections.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request or probe answered after `latency`.
    pub(crate) fn handle_success(&self, latency: Duration, now: Duration) {
        let mut state = self.state();
        self.change_health(&mut state, |h| h.handle_success(now));
        state.latency.handle_latency(latency, now);
        self.answered(&mut state, now);
    }

    /// A configured worker is heard from whenever it answers; one that joined
    /// by heartbeat only by its heartbeats, so that one which stops them
    /// leaves even while it still answers.
    fn answered(&self, state: &mut State, now: Duration) {
        if !self.dynamic {
            state.last_heard = state.last_heard.max(now);
        }
    }

    /// A request or probe failed on the path to this worker.
    pub(crate) fn handle_failure(&self, now: Duration) {
        let mut state = self.state();
        self.change_health(&mut state, |h| h.handle_failure(now));
    }

    /// The worker is known to be down (it shut down a subscription, or went silent).
    pub(crate) fn handle_down(&self, now: Duration) {
        let mut state = self.state();
        self.change_health(&mut state, |h| h.handle_down(now));
    }

    /// Proxy time the worker was last heard from.
    pub(crate) fn last_heard(&self) -> Duration {
        self.state().last_heard
    }

    /// The worker's row in a routing snapshot at `now`.
    ///
    /// A worker silent for longer than `silence_max` reports at least
    /// `Suspect`: a missed heartbeat window is a fact the policy ranks by.
    pub(crate) fn snapshot(self: &Arc<Self>, now: Duration, silence_max: Duration) -> Snapshot {
        let state = self.state();
        let mut health = state.health.state(now);
        if health == WorkerHealth::Healthy && now.saturating_sub(state.last_heard) > silence_max {
            health = WorkerHealth::Suspect;
        }
        Snapshot {
            worker: Arc::clone(self),
            stores: Arc::clone(&state.stores),
            shared_storage: state.shared_storage,
            faults: Arc::clone(&state.faults),
            health,
            in_flight: self.in_flight(),
            latency: state.latency.estimate(now),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every writer assigns whole fields while holding the lock, so a
        // poisoned lock still guards a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One worker frozen at the moment of a routing decision.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) worker: Arc<Worker>,
    pub(crate) stores: Arc<[StoreId]>,
    pub(crate) shared_storage: bool,
    pub(crate) faults: Arc<[StoreFault]>,
    pub(crate) health: WorkerHealth,
    pub(crate) in_flight: u32,
    pub(crate) latency: Duration,
}

impl Snapshot {
    /// The row as the core's routing policy reads it.
    pub(crate) fn view(&self) -> WorkerView<'_> {
        WorkerView {
            id: &self.worker.id,
            serves: if self.shared_storage {
                Serves::Every
            } else {
                Serves::Stores(&self.stores)
            },
            health: self.health,
            in_flight: self.in_flight,
            latency: self.latency,
            faults: &self.faults,
        }
    }

    /// The row as `workers()` lists it.
    pub(crate) fn info(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.worker.id.clone(),
            address: self.worker.address.clone(),
            health: self.health,
            in_flight: self.in_flight,
            latency_us: u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX),
            stores: self.stores.to_vec(),
            shared_storage: self.shared_storage,
            faults: self.faults.to_vec(),
        }
    }
}

/// The fault of a store as a worker lists it, if it refuses appends.
fn fault_of(info: &StoreInfo) -> Option<StoreFault> {
    (!info.state.takes_writes() && info.state != gater_core::StoreState::Stopping).then(|| {
        StoreFault {
            store: info.store.clone(),
            state: info.state,
            reason: info.reason.clone().unwrap_or_default(),
        }
    })
}

/// A request counted in flight to a worker; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct InFlight {
    worker: Arc<Worker>,
}

impl InFlight {
    /// The worker the request goes to.
    pub(crate) fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.worker.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the pool needs to add a worker.
pub(crate) struct NewWorker {
    pub(crate) id: String,
    pub(crate) address: String,
    pub(crate) client: BoxGater,
    pub(crate) dynamic: bool,
    pub(crate) owner: Option<Arc<str>>,
    pub(crate) stores: Vec<StoreId>,
    pub(crate) shared_storage: bool,
}

/// The set of workers, keyed by id.
#[derive(Debug)]
pub(crate) struct Pool {
    workers: RwLock<BTreeMap<String, Arc<Worker>>>,
    generations: AtomicU64,
    health: HealthConfig,
    ewma: EwmaConfig,
    max: usize,
}

impl Pool {
    /// An empty pool of at most `max` workers.
    pub(crate) fn new(health: HealthConfig, ewma: EwmaConfig, max: usize) -> Self {
        Pool {
            workers: RwLock::default(),
            generations: AtomicU64::new(0),
            health,
            ewma,
            max,
        }
    }

    /// Refuses a new worker id when the pool is full, before any connection is made for it.
    pub(crate) fn check_room(&self, id: &str) -> Result<(), Error> {
        let workers = self.read();
        if !workers.contains_key(id) && workers.len() >= self.max {
            return Err(self.full());
        }
        Ok(())
    }

    fn full(&self) -> Error {
        Error::Overloaded {
            side: Side::Proxy,
            message: format!("the pool already holds its maximum of {} workers", self.max),
        }
    }

    /// Adds a worker, replacing one with the same id; refuses past the maximum.
    pub(crate) fn insert(&self, new: NewWorker, now: Duration) -> Result<Arc<Worker>, Error> {
        let mut workers = self.write();
        if !workers.contains_key(&new.id) && workers.len() >= self.max {
            return Err(self.full());
        }
        let stores: BTreeSet<StoreId> = new.stores.into_iter().collect();
        let worker = Arc::new(Worker {
            id: new.id,
            address: new.address,
            client: new.client,
            dynamic: new.dynamic,
            owner: new.owner,
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            in_flight: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
            state: Mutex::new(State {
                stores: stores.into_iter().collect(),
                shared_storage: new.shared_storage,
                faults: Arc::from([]),
                store_changes: 0,
                last_heard: now,
                health: Health::new(self.health),
                latency: PeakEwma::new(self.ewma, now),
            }),
        });
        workers.insert(worker.id.clone(), Arc::clone(&worker));
        Ok(worker)
    }

    /// Removes a worker if it is still the same incarnation.
    pub(crate) fn remove(&self, worker: &Worker) -> bool {
        let mut workers = self.write();
        let same = workers
            .get(&worker.id)
            .is_some_and(|w| w.generation == worker.generation);
        if same {
            workers.remove(&worker.id);
        }
        same
    }

    /// The worker with this id.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Worker>> {
        self.read().get(id).cloned()
    }

    /// Every worker, in id order.
    pub(crate) fn all(&self) -> Vec<Arc<Worker>> {
        self.read().values().cloned().collect()
    }

    /// The workers that serve `store`, in id order.
    pub(crate) fn serving(&self, store: &StoreId) -> Vec<Arc<Worker>> {
        self.read()
            .values()
            .filter(|w| w.serves(store))
            .cloned()
            .collect()
    }

    /// Whether a worker not in `tried` serves `store` (with no store: any
    /// worker not in `tried`); looks without collecting the workers.
    pub(crate) fn any_untried(&self, store: Option<&StoreId>, tried: &[String]) -> bool {
        self.read()
            .values()
            .any(|w| !tried.contains(&w.id) && store.is_none_or(|s| w.serves(s)))
    }

    /// Every worker frozen at `now`, in id order.
    pub(crate) fn snapshot(&self, now: Duration, silence_max: Duration) -> Vec<Snapshot> {
        self.read()
            .values()
            .map(|w| w.snapshot(now, silence_max))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Worker>>> {
        // The map is only ever changed entry by entry; poisoning cannot tear it.
        self.workers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Worker>>> {
        // See `read`: a poisoned map is still a consistent map.
        self.workers.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Merges the stores each worker listed into one list naming the workers of each.
pub(crate) fn merge_store_lists(answers: Vec<(String, Vec<StoreInfo>)>) -> Vec<StoreInfo> {
    let mut merged: BTreeMap<StoreId, StoreInfo> = BTreeMap::new();
    for (worker, infos) in answers {
        for info in infos {
            let faulty = fault_of(&info);
            let entry = merged.entry(info.store.clone()).or_insert(StoreInfo {
                workers: Vec::new(),
                ..info
            });
            // On shared storage one worker may find the store refusing
            // appends while another has not tried yet: the listing says so.
            if let (Some(fault), None) = (faulty, fault_of(entry)) {
                entry.state = fault.state;
                entry.reason = Some(fault.reason);
            }
            if !entry.workers.contains(&worker) {
                entry.workers.push(worker.clone());
            }
        }
    }
    merged
        .into_values()
        .map(|mut info| {
            info.workers.sort();
            info
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_core::{StoreConfig, StoreState};

    fn info(store: &str, worker: &str) -> StoreInfo {
        StoreInfo {
            store: StoreId::new(store).unwrap(),
            config: StoreConfig::default(),
            state: StoreState::Running,
            reason: None,
            workers: vec![worker.to_owned()],
        }
    }

    #[test]
    fn merged_store_lists_name_every_worker_of_each_store_once() {
        let merged = merge_store_lists(vec![
            ("w1".into(), vec![info("b", "w1"), info("a", "w1")]),
            ("w0".into(), vec![info("a", "w0")]),
        ]);
        let shape: Vec<(&str, Vec<String>)> = merged
            .iter()
            .map(|i| (i.store.as_str(), i.workers.clone()))
            .collect();
        assert_eq!(
            shape,
            [
                ("a", vec!["w0".to_owned(), "w1".to_owned()]),
                ("b", vec!["w1".to_owned()])
            ]
        );
    }
}
