//! The request path: snapshot the pool, let the core policy pick, send,
//! feed the outcome back, and retry only when the policy allows it.

use gater_core::routing::{NoWorker, Pick, RequestClass, RouteRequest};
use gater_core::wire::{EncodedRequest, RequestKind, Response};
use gater_core::{Error, Resource, Side, StoreId};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::pool::{InFlight, Snapshot};
use super::{lock, Inner};

/// Why a pick gave no worker to send to.
#[derive(Debug)]
pub(crate) enum NoSend {
    /// The policy found none.
    Policy(NoWorker),
    /// Every worker the policy offered is at its in-flight limit.
    Full,
}

impl Inner {
    /// Sends `request` to a worker chosen by the policy, retrying on another
    /// worker when the policy says it is safe, within the request's deadline
    /// (the proxy's own, or what remains of the caller's when that is sooner).
    ///
    /// The request travels as the bytes it arrived in, routed by its head
    /// (kind and store); it is copied for an attempt only when another
    /// attempt could follow it, so a large append to a store one worker
    /// holds is moved, not copied.
    pub(crate) async fn call(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        if within == Some(Duration::ZERO) {
            return Err(Error::DeadlineExceeded { side: Side::Proxy });
        }
        let deadline = if request.head().kind == RequestKind::CompactStore {
            self.deadline_within(within, self.config.compaction_deadline)
        } else {
            self.deadline(within)
        };
        let class = request.class();
        let store = request.store().cloned();
        lock(&self.retry).handle_request(self.now());
        let mut request = Some(request);
        let mut tried: Vec<String> = Vec::new();
        let mut last_error: Option<Error> = None;
        loop {
            let guard = match self.pick(class, store.as_ref(), None, &tried) {
                Ok(guard) => guard,
                Err(no) => {
                    return Err(last_error.unwrap_or_else(|| self.no_send(no, store.as_ref())))
                }
            };
            let worker = Arc::clone(guard.worker());
            tried.push(worker.id.clone());
            let sent = if self.another_worker_left(store.as_ref(), &tried) {
                request.clone()
            } else {
                request.take()
            };
            let Some(sent) = sent else {
                // Unreachable: a request is taken only when no worker is left
                // to retry on, and then the loop ends below.
                return Err(last_error.unwrap_or_else(|| self.no_send(NoSend::Full, None)));
            };
            let error = match self.attempt(guard, sent, deadline).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if let (
                Error::NotFound {
                    resource: Resource::Store,
                    ..
                },
                Some(store),
            ) = (&error, &store)
            {
                // The worker no longer has the store (removed, or placed
                // elsewhere): forget it so routing stops sending it there.
                worker.note_store(store, false);
            }
            let refused = (class == RequestClass::Append)
                .then(|| refusal_state(&error))
                .flatten();
            if let (Some((state, reason)), Some(store)) = (refused, &store) {
                // The store refuses appends there: route none there until
                // the worker reports it healed.
                worker.note_fault(gater_core::StoreFault {
                    store: store.clone(),
                    state,
                    reason: reason.to_owned(),
                });
            }
            if request.is_none() {
                return Err(error);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let allowed = self.store_moved(&error, store.as_ref(), &tried)
                || lock(&self.retry)
                    .check_retry(
                        class,
                        &error,
                        tried.len() as u32,
                        Some(remaining),
                        self.now(),
                    )
                    .is_ok();
            if !allowed {
                return Err(error);
            }
            if let Some(retried) = &request {
                *lock(&self.retries)
                    .entry(retried.kind().method())
                    .or_default() += 1;
            }
            last_error = Some(error);
        }
    }

    /// One attempt on the worker `guard` counts in flight, bounded by `deadline`.
    async fn attempt(
        &self,
        guard: InFlight,
        request: EncodedRequest,
        deadline: Instant,
    ) -> Result<Response, Error> {
        let worker = guard.worker();
        let started = Instant::now();
        let within = deadline.saturating_duration_since(started);
        // Through the `dyn Gater`, not the `Arc`: one boxed future fewer.
        let call = (*worker.client).call_encoded(request, Some(within));
        let result = tokio::time::timeout_at(deadline, call).await;
        let now = self.now();
        let result = match result {
            Ok(result) => result.map_err(from_worker),
            Err(_) => {
                worker.handle_failure(now);
                return Err(Error::DeadlineExceeded { side: Side::Proxy });
            }
        };
        match &result {
            Err(error) if is_path_failure(error) => worker.handle_failure(now),
            _ => worker.handle_success(started.elapsed(), now),
        }
        result
    }

    /// Asks the policy for a worker and counts the request in flight to it.
    ///
    /// A worker at its in-flight limit is treated as tried for this request,
    /// so the policy offers the next best one; nothing was sent to it.
    pub(crate) fn pick(
        &self,
        class: RequestClass,
        store: Option<&StoreId>,
        affinity: Option<gater_core::routing::AffinityKey>,
        tried: &[String],
    ) -> Result<InFlight, NoSend> {
        let snapshot = self.snapshot();
        let mut skipped: Vec<&str> = tried.iter().map(String::as_str).collect();
        let mut full = false;
        loop {
            let views: Vec<_> = snapshot.iter().map(Snapshot::view).collect();
            let mut request = RouteRequest::new(class, store).with_tried(&skipped);
            if let Some(key) = affinity {
                request = request.with_affinity(key);
            }
            let pick = lock(&self.router).pick(&request, &views);
            let index = match pick {
                Pick::Worker(index) => index,
                Pick::NoWorker(NoWorker::AllTried) if full => return Err(NoSend::Full),
                Pick::NoWorker(no) => return Err(NoSend::Policy(no)),
            };
            let chosen = &snapshot[index].worker;
            if let Some(guard) = chosen.try_begin(self.config.worker_in_flight_max) {
                return Ok(guard);
            }
            full = true;
            skipped.push(&chosen.id);
        }
    }

    /// When a request must be answered: the proxy's deadline, or what remains
    /// of the caller's when that is sooner.
    pub(crate) fn deadline(&self, within: Option<Duration>) -> Instant {
        self.deadline_within(within, self.config.request_deadline)
    }

    /// The deadline `limit` from now, or what remains of the caller's when that is sooner.
    fn deadline_within(&self, within: Option<Duration>, limit: Duration) -> Instant {
        Instant::now() + within.map_or(limit, |w| w.min(limit))
    }

    /// Whether a worker the request has not tried could take it: without
    /// one no retry can follow, whatever the policy says.
    fn another_worker_left(&self, store: Option<&StoreId>, tried: &[String]) -> bool {
        self.pool.any_untried(store, tried)
    }

    /// The pool frozen now, for one routing decision.
    pub(crate) fn snapshot(&self) -> Vec<Snapshot> {
        self.pool
            .snapshot(self.now(), self.config.heartbeat_timeout)
    }

    /// The error for a request no worker can take.
    pub(crate) fn no_send(&self, no: NoSend, store: Option<&StoreId>) -> Error {
        match (no, store) {
            (NoSend::Policy(NoWorker::NoneServesStore), Some(store)) => {
                Error::not_found(Resource::Store, store)
            }
            (NoSend::Policy(NoWorker::StoreRefusesAppends), Some(store)) => {
                // The store's own error, as its worker would answer it.
                let snapshot = self.snapshot();
                let fault = snapshot.iter().find_map(|w| w.view().fault(store).cloned());
                fault
                    .and_then(|f| f.state.refusal(store, &f.reason))
                    .unwrap_or_else(|| NoWorker::StoreRefusesAppends.to_error(Some(store)))
            }
            (NoSend::Policy(_), Some(store)) => {
                Error::unavailable(Side::Proxy, format!("no live worker serves store {store}"))
            }
            (NoSend::Policy(_), None) => Error::unavailable(Side::Proxy, "no live worker"),
            (NoSend::Full, Some(store)) => Error::Overloaded {
                side: Side::Proxy,
                message: format!(
                    "every worker serving store {store} has {} requests in flight",
                    self.config.worker_in_flight_max
                ),
            },
            (NoSend::Full, None) => Error::Overloaded {
                side: Side::Proxy,
                message: format!(
                    "every worker has {} requests in flight",
                    self.config.worker_in_flight_max
                ),
            },
        }
    }

    /// A worker answered "store not found" although the proxy believed it
    /// served the store: nothing changed, so when another untried worker
    /// serves the store the request goes there, outside the retry budget (no
    /// worker failed, and each worker is tried at most once).
    fn store_moved(&self, error: &Error, store: Option<&StoreId>, tried: &[String]) -> bool {
        let Some(store) = store else {
            return false;
        };
        matches!(
            error,
            Error::NotFound {
                resource: Resource::Store,
                ..
            }
        ) && self
            .pool
            .serving(store)
            .iter()
            .any(|w| !tried.contains(&w.id))
    }
}

/// The state a store is in on a worker that answered `error`, when that
/// error means the store refuses appends there.
fn refusal_state(error: &Error) -> Option<(gater_core::StoreState, &str)> {
    match error {
        Error::StorageFull { message, .. } => Some((gater_core::StoreState::ReadOnly, message)),
        Error::StorageFailed { message, .. } => Some((gater_core::StoreState::Failed, message)),
        _ => None,
    }
}

/// Whether `error` says the path to the worker failed (counts against its health);
/// answers about the request itself (wrong version, not found) do not.
pub(crate) fn is_path_failure(error: &Error) -> bool {
    matches!(
        error,
        Error::Unavailable { .. } | Error::DeadlineExceeded { .. } | Error::Overloaded { .. }
    )
}

/// An error from a worker call, as the proxy's caller sees it.
///
/// The transport client that reaches a worker is the proxy's own, so its
/// client-side failures (a lost connection, its timeout) and a downstream
/// proxy's failures are all failures of the path to that worker: they are
/// reported as the worker side, which is what makes them retryable on
/// another worker.
pub(crate) fn from_worker(error: Error) -> Error {
    match error {
        Error::Unavailable {
            side: Side::Client | Side::Proxy,
            message,
        } => Error::Unavailable {
            side: Side::Worker,
            message,
        },
        Error::DeadlineExceeded {
            side: Side::Client | Side::Proxy,
        } => Error::DeadlineExceeded { side: Side::Worker },
        Error::Overloaded {
            side: Side::Client | Side::Proxy,
            message,
        } => Error::Overloaded {
            side: Side::Worker,
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: Error, expected: Error) {
        assert_eq!(from_worker(input.clone()), expected, "{input:?}");
    }

    #[test]
    fn failures_of_the_path_to_a_worker_are_reported_as_the_worker_side() {
        check(
            Error::unavailable(Side::Client, "connection lost"),
            Error::unavailable(Side::Worker, "connection lost"),
        );
        check(
            Error::DeadlineExceeded { side: Side::Client },
            Error::DeadlineExceeded { side: Side::Worker },
        );
        check(
            Error::unavailable(Side::Proxy, "no live worker serves store s"),
            Error::unavailable(Side::Worker, "no live worker serves store s"),
        );
        check(Error::Storage("disk".into()), Error::Storage("disk".into()));
        check(Error::invalid("count 0"), Error::invalid("count 0"));
    }

    #[test]
    fn only_path_errors_count_against_a_worker() {
        assert!(is_path_failure(&Error::unavailable(Side::Worker, "down")));
        assert!(is_path_failure(&Error::DeadlineExceeded {
            side: Side::Worker
        }));
        assert!(!is_path_failure(&Error::WrongExpectedVersion {
            stream: gater_core::StreamId::new("s").unwrap(),
            expected: gater_core::ExpectedVersion::NoStream,
            current: Some(1),
        }));
        assert!(!is_path_failure(&Error::AppendConditionFailed {
            position: gater_core::Position(3),
        }));
        assert!(!is_path_failure(&Error::not_found(Resource::Store, "s")));
    }
}
