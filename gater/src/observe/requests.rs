//! The front door of a server: every request it answers is counted by
//! method and outcome, timed, and logged inside a `request` span (a debug
//! span: `RUST_LOG=gater=debug` shows it) that carries its request id (the
//! one it arrived with, or a fresh one), which the calls it makes carry on
//! to the next hop whatever the log level.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gater_core::metrics::{Histogram, HistogramSnapshot, DURATION_US_BOUNDS};
use gater_core::wire::{EncodedRequest, Request, Response};
use gater_core::{
    trace, BoxGater, Error, Gater, StoreId, SubscribeOptions, Subscription, SubscriptionKey,
};
use tracing::Instrument;

/// The outcome label of a request that succeeded; failures use the error's kind.
pub(crate) const OUTCOME_OK: &str = "ok";
/// The method label of a subscription opened.
pub(crate) const METHOD_SUBSCRIBE: &str = "subscribe";

/// Requests answered, by method and outcome, and their durations by method.
///
/// A request touches only its method's atomics (and takes a lock only when
/// it failed, or is the method's first): the front door of a busy server
/// must not serialise requests on one lock.
#[derive(Debug, Default)]
pub(crate) struct RequestMetrics {
    methods: RwLock<BTreeMap<&'static str, Arc<MethodStats>>>,
}

/// One method's counts.
#[derive(Debug)]
struct MethodStats {
    ok: AtomicU64,
    /// Failures by error kind.
    failed: Mutex<BTreeMap<&'static str, u64>>,
    durations_us: Histogram,
}

/// [`RequestMetrics`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestSnapshot {
    /// `((method, outcome), count)`.
    pub(crate) counts: Vec<((&'static str, &'static str), u64)>,
    /// Durations in microseconds, by method.
    pub(crate) durations_us: Vec<(&'static str, HistogramSnapshot)>,
}

impl RequestMetrics {
    fn record(&self, method: &'static str, failure: Option<&'static str>, took: Duration) {
        let stats = self.stats(method);
        match failure {
            None => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Some(kind) => *lock(&stats.failed).entry(kind).or_default() += 1,
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        stats.durations_us.observe(micros);
    }

    fn stats(&self, method: &'static str) -> Arc<MethodStats> {
        if let Some(stats) = read(&self.methods).get(method) {
            return Arc::clone(stats);
        }
        let mut methods = self.methods.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(methods.entry(method).or_insert_with(|| {
            Arc::new(MethodStats {
                ok: AtomicU64::new(0),
                failed: Mutex::new(BTreeMap::new()),
                durations_us: Histogram::new(DURATION_US_BOUNDS),
            })
        }))
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> RequestSnapshot {
        let methods = read(&self.methods);
        let mut counts = Vec::new();
        for (method, stats) in methods.iter() {
            let ok = stats.ok.load(Ordering::Relaxed);
            if ok > 0 {
                counts.push(((*method, OUTCOME_OK), ok));
            }
            for (kind, count) in lock(&stats.failed).iter() {
                counts.push(((*method, *kind), *count));
            }
        }
        RequestSnapshot {
            counts,
            durations_us: methods
                .iter()
                .map(|(method, stats)| (*method, stats.durations_us.snapshot()))
                .collect(),
        }
    }
}

/// A `Gater` that measures and traces every request `inner` answers.
pub(crate) struct Instrumented {
    inner: BoxGater,
    metrics: Arc<RequestMetrics>,
    /// Which server this is in logs (`proxy`, `worker`).
    role: &'static str,
}

impl std::fmt::Debug for Instrumented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Instrumented {
    /// Wraps `inner`, recording into `metrics`.
    pub(crate) fn new(inner: BoxGater, metrics: Arc<RequestMetrics>, role: &'static str) -> Self {
        Instrumented {
            inner,
            metrics,
            role,
        }
    }

    async fn measured<T>(
        &self,
        method: &'static str,
        work: impl std::future::Future<Output = Result<T, Error>> + Send,
    ) -> Result<T, Error> {
        let id = trace::current().unwrap_or_else(fresh_id);
        // A debug span: at the default level it is never built, entered or
        // formatted (at INFO it was about 7 % of a proxy's CPU under W1); the
        // id travels to the next hop through `trace::scope` either way.
        let span = tracing::debug_span!(
            "request",
            request_id = %trace::display(id),
            method,
            server = self.role
        );
        let started = Instant::now();
        let work = std::pin::pin!(work);
        let result = trace::scope(id, work).instrument(span.clone()).await;
        let failure = result.as_ref().err().map(Error::kind);
        let outcome = failure.unwrap_or(OUTCOME_OK);
        span.in_scope(|| tracing::debug!(outcome, "answered"));
        self.metrics.record(method, failure, started.elapsed());
        result
    }
}

/// A request id for a request that arrived without one: random per process,
/// then counting, so ids from different servers do not collide.
fn fresh_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let id = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
    // 0 means "none" on the wire.
    id.max(1)
}

#[async_trait]
impl Gater for Instrumented {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        let method = request.method();
        self.measured(method, self.inner.call(request, within))
            .await
    }

    async fn call_as(
        &self,
        identity: &str,
        request: Request,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        let method = request.method();
        self.measured(method, self.inner.call_as(identity, request, within))
            .await
    }

    /// Passed on still encoded: a proxy behind this routes on the request's
    /// head and forwards its bytes (the default would decode it here).
    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        let method = request.kind().method();
        self.measured(method, self.inner.call_encoded(request, within))
            .await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.measured(METHOD_SUBSCRIBE, self.inner.subscribe(store, key, options))
            .await
    }
}

// Every update is one whole insert or increment, so a poisoned map is consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}
