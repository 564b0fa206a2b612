//! Store administration across the pool: placement of new stores, removal
//! from every worker serving one, and lists and statuses merged over workers.

use std::sync::Arc;
use std::time::Duration;

use gater_core::routing::placement_order;
use gater_core::wire::Response;
use gater_core::{Error, Resource, Side, StoreConfig, StoreId, StoreInfo};
use tokio::time::Instant;

use super::pool::{merge_store_lists, InFlight, Snapshot, Worker};
use super::route::{from_worker, is_path_failure, NoSend};
use super::{unexpected, Inner};

impl Inner {
    /// Creates a store where the policy places it (embedded storage; on
    /// shared storage a create goes to any worker, balanced and retried like
    /// other requests, and then [`Inner::note_everywhere`]).
    ///
    /// A store that a worker already serves goes back to that worker (so a
    /// repeat is idempotent and a config conflict is reported); a new one goes
    /// to the first worker with room in the policy's rendezvous placement
    /// order, so every proxy places the same store id on the same worker. It is
    /// not retried on another worker: a lost answer could otherwise leave two
    /// copies.
    pub(crate) async fn place_store(
        &self,
        store: &StoreId,
        config: StoreConfig,
        within: Option<Duration>,
    ) -> Result<(), Error> {
        let guard = self.placement(store)?;
        let worker = Arc::clone(guard.worker());
        let deadline = self.deadline(within);
        let answer =
            tokio::time::timeout_at(deadline, worker.client.create_store(store, config)).await;
        drop(guard);
        let result = match answer {
            Ok(result) => result.map_err(from_worker),
            Err(_) => Err(Error::DeadlineExceeded { side: Side::Proxy }),
        };
        match &result {
            Err(error) if is_path_failure(error) => worker.handle_failure(self.now()),
            Err(_) => {}
            Ok(()) => {
                worker.note_store(store, true);
                self.refresh_stores(&worker).await;
            }
        }
        result
    }

    /// Every worker of a shared pool serves a store created on one of them.
    pub(crate) fn note_everywhere(&self, store: &StoreId) {
        for worker in self.pool.all() {
            worker.note_store(store, true);
        }
    }

    /// The worker a store is created on (Embedded mode).
    fn placement(&self, store: &StoreId) -> Result<InFlight, Error> {
        let max = self.config.worker_in_flight_max;
        if let Some(owner) = self.pool.serving(store).into_iter().next() {
            return owner
                .try_begin(max)
                .ok_or_else(|| self.no_send(NoSend::Full, Some(store)));
        }
        let snapshot = self.snapshot();
        let views: Vec<_> = snapshot.iter().map(Snapshot::view).collect();
        let order = placement_order(store, &views);
        if order.is_empty() {
            return Err(Error::unavailable(
                Side::Proxy,
                format!("no live worker to place store {store} on"),
            ));
        }
        order
            .into_iter()
            .find_map(|i| snapshot[i].worker.try_begin(max))
            .ok_or_else(|| self.no_send(NoSend::Full, Some(store)))
    }

    /// Removes a store from every worker that serves it.
    ///
    /// Each serving worker is asked once (removal is not idempotent, so it is
    /// never retried blindly). A worker that no longer has it is fine as long
    /// as one removed it; the first other failure is reported after all were asked.
    pub(crate) async fn remove_store(
        &self,
        store: &StoreId,
        within: Option<Duration>,
    ) -> Result<(), Error> {
        let workers = self.pool.serving(store);
        if workers.is_empty() {
            return Err(Error::not_found(Resource::Store, store));
        }
        let deadline = self.deadline(within);
        let answers = futures::future::join_all(workers.iter().map(|worker| async move {
            let answer = tokio::time::timeout_at(deadline, worker.client.remove_store(store)).await;
            match answer {
                Ok(result) => result.map_err(from_worker),
                Err(_) => Err(Error::DeadlineExceeded { side: Side::Proxy }),
            }
        }))
        .await;
        let mut removed = false;
        let mut failure = None;
        for (worker, answer) in workers.iter().zip(answers) {
            match answer {
                Ok(())
                | Err(Error::NotFound {
                    resource: Resource::Store,
                    ..
                }) => {
                    removed |= answer.is_ok();
                    worker.note_store(store, false);
                }
                Err(error) => {
                    if is_path_failure(&error) {
                        worker.handle_failure(self.now());
                    }
                    failure.get_or_insert(error);
                }
            }
        }
        match (failure, removed) {
            (Some(error), _) => Err(error),
            (None, true) => Ok(()),
            (None, false) => Err(Error::not_found(Resource::Store, store)),
        }
    }

    /// Lists stores over every worker, naming the workers serving each.
    ///
    /// Workers that do not answer are left out (and their health is fed);
    /// when none answers, the proxy reports itself unavailable.
    pub(crate) async fn list_stores(
        &self,
        within: Option<Duration>,
    ) -> Result<Vec<StoreInfo>, Error> {
        let workers = self.pool.all();
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = self.deadline(within);
        let answers = futures::future::join_all(workers.iter().map(|worker| async move {
            let seen = worker.store_changes();
            let started = Instant::now();
            let answer = tokio::time::timeout_at(deadline, worker.client.list_stores()).await;
            (worker, seen, started, answer)
        }))
        .await;
        let mut lists = Vec::new();
        let mut last_error = None;
        for (worker, seen, started, answer) in answers {
            let now = self.now();
            match answer.map_err(|_| Error::DeadlineExceeded { side: Side::Proxy }) {
                Ok(Ok(infos)) => {
                    worker.handle_success(started.elapsed(), now);
                    worker.set_stores(&infos, seen, now);
                    lists.push((worker.id.clone(), infos));
                }
                Ok(Err(error)) | Err(error) => {
                    let error = from_worker(error);
                    if is_path_failure(&error) {
                        worker.handle_failure(now);
                    }
                    last_error = Some(error);
                }
            }
        }
        if lists.is_empty() {
            let cause = last_error.map(|e| e.to_string()).unwrap_or_default();
            return Err(Error::unavailable(
                Side::Proxy,
                format!("no worker answered list_stores: {cause}"),
            ));
        }
        Ok(merge_store_lists(lists))
    }

    /// A worker's answer to `get_store_status`, naming every worker the
    /// proxy knows to serve the store (the worker knows only itself).
    pub(crate) fn name_serving_workers(
        &self,
        store: &StoreId,
        response: Response,
    ) -> Result<Response, Error> {
        let Response::StoreStatus(mut status) = response else {
            return Err(unexpected("get_store_status", &response));
        };
        let serving: Vec<String> = self
            .pool
            .serving(store)
            .iter()
            .map(|w| w.id.clone())
            .collect();
        if !serving.is_empty() {
            status.workers = serving;
        }
        Ok(Response::StoreStatus(status))
    }

    /// Asks a worker which stores it serves right away (after a create or remove).
    async fn refresh_stores(&self, worker: &Worker) {
        let seen = worker.store_changes();
        let answer =
            tokio::time::timeout(self.config.probe_timeout, worker.client.list_stores()).await;
        if let Ok(Ok(infos)) = answer {
            worker.set_stores(&infos, seen, self.now());
        }
    }
}
