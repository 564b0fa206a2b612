//! Membership and active health: the probe loop, heartbeats from workers that
//! join at run time, and the removal of workers that went silent.

use std::sync::{Arc, Weak};

use gater_core::routing::{Pick, RequestClass, RouteRequest};
use gater_core::{Error, Side, WorkerInfo};
use tokio::time::Instant;

use super::joins::{admit, Admission};
use super::pool::{NewWorker, Snapshot, Worker};
use super::route::is_path_failure;
use super::{lock, Inner, StorageMode};

/// Longest worker id a heartbeat may carry, in bytes.
pub const WORKER_ID_LEN_MAX: usize = 256;
/// Longest worker address a heartbeat may carry, in bytes.
pub const WORKER_ADDRESS_LEN_MAX: usize = 1024;
/// Most stores one worker may report.
pub const WORKER_STORES_MAX: usize = 65_536;

/// Probes every worker each interval until the proxy is dropped.
pub(crate) async fn probe_loop(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|i| i.config.probe_interval) else {
        return;
    };
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.probe_all().await;
        inner.remove_silent();
    }
}

impl Inner {
    /// Probes every worker at once: `list_stores` refreshes what it serves and
    /// feeds its health; a probe past `probe_timeout` is a failure.
    pub(crate) async fn probe_all(&self) {
        let workers = self.pool.all();
        let probes = workers.iter().map(|worker| self.probe(worker));
        futures::future::join_all(probes).await;
    }

    async fn probe(&self, worker: &Arc<Worker>) {
        if let Err(error) = self.learn_storage(worker).await {
            tracing::error!(worker = %worker.id, %error, "worker refused");
            self.pool.remove(worker);
            return;
        }
        let seen = worker.store_changes();
        let started = Instant::now();
        let answer =
            tokio::time::timeout(self.config.probe_timeout, worker.client.list_stores()).await;
        let now = self.now();
        match answer {
            Ok(Ok(stores)) => {
                worker.set_stores(&stores, seen, now);
                worker.handle_success(started.elapsed(), now);
            }
            Ok(Err(error)) if !is_path_failure(&error) => {
                // The worker answered, if unhelpfully: it is alive.
                worker.handle_success(started.elapsed(), now);
            }
            Ok(Err(_)) | Err(_) => worker.handle_failure(now),
        }
    }

    /// Removes workers that joined by heartbeat and have been silent past
    /// `removal_timeout`; configured workers stay (ejected while down).
    pub(crate) fn remove_silent(&self) {
        let now = self.now();
        for worker in self.pool.all() {
            let silent = now.saturating_sub(worker.last_heard());
            if worker.dynamic && silent > self.config.removal_timeout {
                tracing::info!(worker = %worker.id, "removing a worker silent for {silent:?}");
                if self.pool.remove(&worker) {
                    self.storage_reports.forget(&worker.id);
                }
            }
        }
    }

    /// A worker announces itself: the first heartbeat of an unknown id (or a
    /// known id at a new address) connects and adds it, later ones refresh
    /// it; `identity` (from the caller's certificate) must be allowed to (see
    /// the `joins` module). Refusals are logged once per identity per minute.
    pub(crate) async fn heartbeat(
        &self,
        info: WorkerInfo,
        identity: Option<&str>,
    ) -> Result<(), Error> {
        let result = self.admit_heartbeat(info, identity).await;
        if let Err(error) = &result {
            if !is_path_failure(error) {
                self.refusals.note(identity, error, self.now());
            }
        }
        result
    }

    async fn admit_heartbeat(&self, info: WorkerInfo, identity: Option<&str>) -> Result<(), Error> {
        check_heartbeat(&info)?;
        let now = self.now();
        self.heard_storage(&info.id, info.shared_storage)?;
        let shared = info.shared_storage || self.config.storage == StorageMode::Shared;
        let caps = (self.config.joins_max, self.config.joins_per_identity_max);
        if let Admission::Refresh(worker) = admit(&self.pool, &info, identity, caps)? {
            worker.heard(info.stores, info.faults, shared, now);
            return Ok(());
        }
        self.pool.check_room(&info.id)?;
        let Some(connector) = &self.connector else {
            return Err(Error::Unsupported(
                "heartbeat: this proxy has no connector for workers that join".into(),
            ));
        };
        let client = connector.connect(&info.address).await.map_err(|e| {
            Error::unavailable(
                Side::Proxy,
                format!(
                    "cannot connect to worker {} at {}: {e}",
                    info.id, info.address
                ),
            )
        })?;
        tracing::info!(worker = %info.id, address = %info.address, "worker joined");
        self.pool.insert(
            NewWorker {
                id: info.id,
                address: info.address,
                client,
                dynamic: true,
                owner: identity.map(Arc::from),
                stores: info.stores,
                shared_storage: shared,
            },
            self.now(),
        )?;
        Ok(())
    }

    /// The pool as `workers()` lists it.
    pub(crate) fn worker_infos(&self) -> Vec<WorkerInfo> {
        self.snapshot().iter().map(Snapshot::info).collect()
    }

    /// A random worker that is not ejected, chosen by the policy.
    pub(crate) fn random_worker(&self) -> Result<WorkerInfo, Error> {
        let snapshot = self.snapshot();
        let views: Vec<_> = snapshot.iter().map(Snapshot::view).collect();
        let request = RouteRequest::new(RequestClass::Cluster, None);
        match lock(&self.any_router).pick(&request, &views) {
            Pick::Worker(index) => Ok(snapshot[index].info()),
            Pick::NoWorker(_) => Err(Error::unavailable(Side::Proxy, "no live worker")),
        }
    }
}

fn check_heartbeat(info: &WorkerInfo) -> Result<(), Error> {
    if info.id.is_empty() || info.id.len() > WORKER_ID_LEN_MAX {
        return Err(Error::invalid(format!(
            "worker id must be 1 to {WORKER_ID_LEN_MAX} bytes, got {}",
            info.id.len()
        )));
    }
    if info.address.is_empty() || info.address.len() > WORKER_ADDRESS_LEN_MAX {
        return Err(Error::invalid(format!(
            "worker address must be 1 to {WORKER_ADDRESS_LEN_MAX} bytes, got {}",
            info.address.len()
        )));
    }
    if info.stores.len() > WORKER_STORES_MAX {
        return Err(Error::limit(
            "worker_stores_max",
            WORKER_STORES_MAX as u64,
            info.stores.len() as u64,
        ));
    }
    Ok(())
}
