//! Choosing a worker for one request from a snapshot of the pool.

use std::time::Duration;

use crate::error::{Error, Resource, Side};
use crate::id::StoreId;
use crate::rng::Rng;
use crate::store::{StoreFault, WorkerHealth, WorkerInfo};

use super::hash::{rendezvous_cmp, rendezvous_weight, AffinityKey};
use super::RequestClass;

/// Which stores a worker serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves<'a> {
    /// Every store: the worker sits on shared storage (PostgreSQL).
    Every,
    /// Exactly these stores (embedded storage). Looked up linearly: a worker
    /// holds few enough stores that a scan beats building a set per snapshot.
    Stores(&'a [StoreId]),
}

impl Serves<'_> {
    /// Whether `store` is among them.
    pub fn store(&self, store: &StoreId) -> bool {
        match self {
            Serves::Every => true,
            Serves::Stores(stores) => stores.contains(store),
        }
    }
}

/// One worker as the router sees it at the moment of a pick.
///
/// Time enters when the snapshot is taken: `health` comes from
/// [`Health::state`](super::Health::state) and `latency` from
/// [`PeakEwma::estimate`](super::PeakEwma::estimate) at the caller's `now`,
/// which keeps [`Router::pick`] a function of the snapshot and its RNG alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerView<'a> {
    /// Stable worker id; rendezvous hashing and retry exclusion use it.
    pub id: &'a str,
    /// The stores it serves.
    pub serves: Serves<'a>,
    /// Its health.
    pub health: WorkerHealth,
    /// Requests in flight to it.
    pub in_flight: u32,
    /// Its peak-EWMA latency estimate.
    pub latency: Duration,
    /// Its stores that refuse appends now (read-only or failed): appends
    /// for them do not go to it, reads still do.
    pub faults: &'a [StoreFault],
}

impl<'a> WorkerView<'a> {
    /// The view of a worker as `workers()` lists it.
    pub fn from_info(info: &'a WorkerInfo) -> Self {
        WorkerView {
            id: &info.id,
            serves: if info.shared_storage {
                Serves::Every
            } else {
                Serves::Stores(&info.stores)
            },
            health: info.health,
            in_flight: info.in_flight,
            latency: Duration::from_micros(info.latency_us),
            faults: &info.faults,
        }
    }

    /// Whether `store` refuses appends on this worker, and the fault if so.
    pub fn fault(&self, store: &StoreId) -> Option<&'a StoreFault> {
        self.faults.iter().find(|f| &f.store == store)
    }

    /// Power-of-two-choices load: `(in_flight + 1) × latency`. A zero latency
    /// counts as 1 ns so that in-flight counts still separate fresh workers.
    pub fn load(&self) -> u128 {
        (u128::from(self.in_flight) + 1) * self.latency.as_nanos().max(1)
    }
}

/// The request being routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRequest<'a> {
    /// Its class (see [`Request::class`](crate::wire::Request::class)).
    pub class: RequestClass,
    /// The store it is about; `None` lets any worker serve it.
    pub store: Option<&'a StoreId>,
    /// Keeps the request on the rendezvous owner of the key instead of balancing.
    pub affinity: Option<AffinityKey>,
    /// Ids of workers already tried by earlier attempts of this request.
    pub tried: &'a [&'a str],
}

impl<'a> RouteRequest<'a> {
    /// A first attempt without affinity.
    pub fn new(class: RequestClass, store: Option<&'a StoreId>) -> Self {
        RouteRequest {
            class,
            store,
            affinity: None,
            tried: &[],
        }
    }

    /// The same request, attached to `key`.
    pub fn with_affinity(self, key: AffinityKey) -> Self {
        RouteRequest {
            affinity: Some(key),
            ..self
        }
    }

    /// The same request, excluding the workers in `tried`.
    pub fn with_tried(self, tried: &'a [&'a str]) -> Self {
        RouteRequest { tried, ..self }
    }
}

/// How the router spreads requests over equally preferred workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balance {
    /// Power of two choices: draw two workers at random, take the less loaded.
    #[default]
    P2c,
    /// Each in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
}

/// Knobs of [`Router`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// The balancing strategy.
    pub balance: Balance,
    /// A worker on probation competes with healthy ones only while it has fewer
    /// requests in flight than this; beyond, it ranks with suspect workers. This
    /// is the "trickle" that lets it prove itself without taking a full share.
    pub probation_in_flight_max: u32,
}

impl RouterConfig {
    /// Default probation trickle: one request at a time.
    pub const PROBATION_IN_FLIGHT_MAX_DEFAULT: u32 = 1;
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            balance: Balance::P2c,
            probation_in_flight_max: Self::PROBATION_IN_FLIGHT_MAX_DEFAULT,
        }
    }
}

/// The outcome of a pick.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Send the request to the worker at this index of the snapshot.
    Worker(usize),
    /// No worker can take it, and why.
    NoWorker(NoWorker),
}

impl Pick {
    /// The chosen index, if any.
    pub fn worker(self) -> Option<usize> {
        match self {
            Pick::Worker(i) => Some(i),
            Pick::NoWorker(_) => None,
        }
    }
}

/// Why no worker can take a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoWorker {
    /// No worker in the snapshot serves the request's store.
    #[error("no worker serves the store")]
    NoneServesStore,
    /// Workers serve the store, but every one of them is ejected.
    #[error("every worker serving the store is ejected")]
    AllEjected,
    /// Every serving worker that is not ejected was already tried.
    #[error("every available worker was already tried")]
    AllTried,
    /// An append, and the store refuses appends (read-only or failed) on
    /// every worker serving it.
    #[error("the store refuses appends on every worker serving it")]
    StoreRefusesAppends,
}

impl NoWorker {
    /// The error to answer the request with: a store nobody serves is not
    /// found; otherwise the workers are unavailable and a later retry may work.
    pub fn to_error(self, store: Option<&StoreId>) -> Error {
        match (self, store) {
            (NoWorker::NoneServesStore, Some(store)) => Error::not_found(Resource::Store, store),
            (reason, Some(store)) => Error::unavailable(Side::Worker, format!("{reason}: {store}")),
            (reason, None) => Error::unavailable(Side::Worker, reason.to_string()),
        }
    }
}

/// Preference among eligible workers: the router draws from the best non-empty tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    /// Healthy, or on probation within its trickle.
    Preferred,
    /// Suspect, or on probation beyond its trickle.
    Fallback,
}

/// Picks workers for requests; one per proxy.
///
/// Call [`Router::pick`] with a fresh snapshot for every attempt; pass the ids
/// of workers already tried in [`RouteRequest::tried`] on a retry.
#[derive(Clone, Debug)]
pub struct Router {
    config: RouterConfig,
    rng: Rng,
    cursor: u64,
}

impl Router {
    /// A router drawing its random choices from `rng`.
    pub fn new(config: RouterConfig, rng: Rng) -> Self {
        Router {
            config,
            rng,
            cursor: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Chooses the worker for `request` among `workers`.
    ///
    /// Eligible workers serve the request's store, are not ejected and were not
    /// tried. Healthy workers (and probation ones within their trickle) win over
    /// suspect ones. With an affinity key the rendezvous owner among the winners
    /// is chosen; otherwise the configured [`Balance`] spreads the load.
    pub fn pick(&mut self, request: &RouteRequest<'_>, workers: &[WorkerView<'_>]) -> Pick {
        let sticky = request.affinity.is_some();
        let config = self.config;
        let census = census(&config, request, workers, sticky);
        if census.serving == 0 {
            return Pick::NoWorker(NoWorker::NoneServesStore);
        }
        if census.refusing == census.serving {
            return Pick::NoWorker(NoWorker::StoreRefusesAppends);
        }
        if census.available == 0 {
            return Pick::NoWorker(NoWorker::AllEjected);
        }
        let (tier, n) = match (census.preferred, census.fallback) {
            (0, 0) => return Pick::NoWorker(NoWorker::AllTried),
            (0, n) => (Tier::Fallback, n),
            (n, _) => (Tier::Preferred, n),
        };
        let candidates = workers
            .iter()
            .enumerate()
            .filter(|(_, w)| tier_of(&config, request, w, sticky) == Some(tier))
            .map(|(i, _)| i);
        let chosen = match request.affinity {
            Some(key) => candidates.min_by(|&a, &b| {
                let (a, b) = (workers[a].id, workers[b].id);
                rendezvous_cmp(
                    (rendezvous_weight(key, a), a),
                    (rendezvous_weight(key, b), b),
                )
            }),
            None => self.balance(candidates, n, workers),
        };
        // `n > 0` candidates exist in the tier, so every strategy finds one.
        match chosen {
            Some(i) => Pick::Worker(i),
            None => Pick::NoWorker(NoWorker::AllTried),
        }
    }

    /// Draws one of the `n` candidates by the configured strategy.
    fn balance(
        &mut self,
        mut candidates: impl Iterator<Item = usize> + Clone,
        n: usize,
        workers: &[WorkerView<'_>],
    ) -> Option<usize> {
        match self.config.balance {
            Balance::Random => candidates.nth(self.rng.index(n)),
            Balance::RoundRobin => {
                // `cursor % n` is below `n`, a usize.
                let k = (self.cursor % n as u64) as usize;
                self.cursor = self.cursor.wrapping_add(1);
                candidates.nth(k)
            }
            Balance::P2c if n == 1 => candidates.next(),
            Balance::P2c => {
                let i = self.rng.index(n);
                let mut j = self.rng.index(n - 1);
                if j >= i {
                    j += 1;
                }
                let a = candidates.clone().nth(i)?;
                let b = candidates.nth(j)?;
                Some(if workers[b].load() < workers[a].load() {
                    b
                } else {
                    a
                })
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Census {
    serving: usize,
    refusing: usize,
    available: usize,
    preferred: usize,
    fallback: usize,
}

fn serves(request: &RouteRequest<'_>, w: &WorkerView<'_>) -> bool {
    request.store.is_none_or(|store| w.serves.store(store))
}

/// Whether `w` would refuse the request because its store takes no appends there.
fn refuses(request: &RouteRequest<'_>, w: &WorkerView<'_>) -> bool {
    request.class == RequestClass::Append
        && request.store.is_some_and(|store| w.fault(store).is_some())
}

/// Counts the workers in each stage of eligibility.
fn census(
    config: &RouterConfig,
    request: &RouteRequest<'_>,
    workers: &[WorkerView<'_>],
    sticky: bool,
) -> Census {
    let mut census = Census::default();
    for w in workers {
        if !serves(request, w) {
            continue;
        }
        census.serving += 1;
        if refuses(request, w) {
            census.refusing += 1;
            continue;
        }
        if w.health == WorkerHealth::Ejected {
            continue;
        }
        census.available += 1;
        match tier_of(config, request, w, sticky) {
            Some(Tier::Preferred) => census.preferred += 1,
            Some(Tier::Fallback) => census.fallback += 1,
            None => {}
        }
    }
    census
}

/// The tier of an eligible worker, `None` for an ineligible one. Sticky
/// (affinity) requests ignore the probation trickle so that a key's owner
/// does not change with the owner's in-flight count.
fn tier_of(
    config: &RouterConfig,
    request: &RouteRequest<'_>,
    w: &WorkerView<'_>,
    sticky: bool,
) -> Option<Tier> {
    if !serves(request, w) || refuses(request, w) || request.tried.contains(&w.id) {
        return None;
    }
    match w.health {
        WorkerHealth::Ejected => None,
        WorkerHealth::Healthy => Some(Tier::Preferred),
        WorkerHealth::Probation if sticky || w.in_flight < config.probation_in_flight_max => {
            Some(Tier::Preferred)
        }
        WorkerHealth::Probation | WorkerHealth::Suspect => Some(Tier::Fallback),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreState;

    fn view<'a>(id: &'a str, stores: &'a [StoreId], faults: &'a [StoreFault]) -> WorkerView<'a> {
        WorkerView {
            id,
            serves: Serves::Stores(stores),
            health: WorkerHealth::Healthy,
            in_flight: 0,
            latency: Duration::from_millis(1),
            faults,
        }
    }

    #[test]
    fn appends_skip_a_worker_whose_store_refuses_them_and_reads_do_not() {
        let store = StoreId::new("s").unwrap();
        let stores = [store.clone()];
        let fault = [StoreFault {
            store: store.clone(),
            state: StoreState::ReadOnly,
            reason: "no space left".into(),
        }];
        let mut router = Router::new(RouterConfig::default(), Rng::from_seed(7));
        let one = [view("w0", &stores, &fault)];
        let append = RouteRequest::new(RequestClass::Append, Some(&store));
        assert_eq!(
            router.pick(&append, &one),
            Pick::NoWorker(NoWorker::StoreRefusesAppends)
        );
        let read = RouteRequest::new(RequestClass::Read, Some(&store));
        assert_eq!(router.pick(&read, &one), Pick::Worker(0));
        let two = [view("w0", &stores, &fault), view("w1", &stores, &[])];
        for _ in 0..20 {
            assert_eq!(router.pick(&append, &two), Pick::Worker(1));
        }
    }
}
