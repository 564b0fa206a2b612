//! The storage mode of the pool, learned from the workers.
//!
//! Every worker says whether its storage is shared (`WorkerInfo::shared_storage`
//! in `workers()` and in heartbeats). A proxy configured for embedded storage
//! that finds shared workers serves every store on every worker, exactly as
//! one configured with [`StorageMode::Shared`]; a pool whose workers disagree
//! is refused: stores placed on one embedded worker are not on the shared
//! database, and the other way round, so a mixed pool would answer the same
//! question two ways.
//!
//! Static workers are asked when the proxy is built (before it answers its
//! first request) and again by every probe until they have answered; workers
//! that join tell it in their heartbeats. A proxy configured for shared
//! storage asks nothing: the operator has said every worker serves every
//! store (a proxy in front of other proxies, or a test sharing one store).

use std::collections::BTreeMap;
use std::sync::Mutex;

use gater_core::Error;

use super::pool::Worker;
use super::{lock, Inner, StorageMode};

/// What each worker reported about its storage, by worker id.
#[derive(Debug, Default)]
pub(crate) struct StorageReports {
    reports: Mutex<BTreeMap<String, bool>>,
}

impl StorageReports {
    /// Records that `worker` reports shared (`true`) or embedded storage;
    /// refuses the report when another worker of the pool said otherwise.
    pub(crate) fn report(&self, worker: &str, shared: bool) -> Result<(), Error> {
        let mut reports = lock(&self.reports);
        let other = reports
            .iter()
            .find(|(id, s)| id.as_str() != worker && **s != shared);
        if let Some((other, other_shared)) = other {
            return Err(mixed(worker, shared, other, *other_shared));
        }
        reports.insert(worker.to_owned(), shared);
        Ok(())
    }

    /// Whether `worker` has reported yet.
    pub(crate) fn known(&self, worker: &str) -> bool {
        lock(&self.reports).contains_key(worker)
    }

    /// Forgets a worker that left the pool.
    pub(crate) fn forget(&self, worker: &str) {
        lock(&self.reports).remove(worker);
    }

    /// Whether any worker reported shared storage.
    fn any_shared(&self) -> bool {
        lock(&self.reports).values().any(|shared| *shared)
    }
}

fn mixed(worker: &str, shared: bool, other: &str, other_shared: bool) -> Error {
    let name = |shared: bool| if shared { "shared" } else { "embedded" };
    Error::invalid(format!(
        "worker {worker} has {} storage but worker {other} has {} storage: \
         one proxy cannot serve a pool that mixes embedded and shared workers",
        name(shared),
        name(other_shared)
    ))
}

impl Inner {
    /// The storage mode in force: shared when configured so or when the
    /// workers report shared storage; embedded otherwise.
    pub(crate) fn storage(&self) -> StorageMode {
        if self.config.storage == StorageMode::Shared || self.storage_reports.any_shared() {
            StorageMode::Shared
        } else {
            StorageMode::Embedded
        }
    }

    /// Asks `worker` what storage it has, unless it already said. Returns
    /// the refusal when its answer mixes modes with the rest of the pool.
    pub(crate) async fn learn_storage(&self, worker: &Worker) -> Result<(), Error> {
        if self.config.storage == StorageMode::Shared || self.storage_reports.known(&worker.id) {
            return Ok(());
        }
        let answer = tokio::time::timeout(self.config.probe_timeout, worker.client.workers()).await;
        // A worker that does not answer now is asked again by the next probe.
        let Ok(Ok(infos)) = answer else {
            return Ok(());
        };
        // A worker that is a proxy lists its own pool; an empty one says nothing yet.
        if infos.is_empty() {
            return Ok(());
        }
        let shared = infos.iter().any(|info| info.shared_storage);
        self.storage_reports.report(&worker.id, shared)?;
        if shared {
            worker.set_shared_storage();
        }
        Ok(())
    }

    /// Learns the storage of every static worker (when the proxy is built).
    pub(crate) async fn learn_all_storage(&self) -> Result<(), Error> {
        for worker in self.pool.all() {
            self.learn_storage(&worker).await?;
        }
        Ok(())
    }

    /// Records the storage a joining worker announces in its heartbeat.
    pub(crate) fn heard_storage(&self, worker: &str, shared: bool) -> Result<(), Error> {
        if self.config.storage == StorageMode::Shared {
            return Ok(());
        }
        self.storage_reports.report(worker, shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_that_mixes_embedded_and_shared_workers_is_refused() {
        let reports = StorageReports::default();
        reports.report("a", true).unwrap();
        reports.report("b", true).unwrap();
        let error = reports.report("c", false).unwrap_err();
        assert_eq!(error.kind(), "invalid_argument");
        assert!(
            error.to_string().contains("mixes embedded and shared"),
            "{error}"
        );
        assert!(!reports.known("c"));
        reports.forget("a");
        reports.forget("b");
        reports.report("c", false).unwrap();
        assert!(!reports.any_shared());
    }

    #[test]
    fn a_worker_may_repeat_its_report() {
        let reports = StorageReports::default();
        reports.report("a", false).unwrap();
        reports.report("a", false).unwrap();
        assert!(reports.known("a"));
        assert!(!reports.any_shared());
    }
}
