//! The single writer of a store: group commit.
//!
//! Appends wait in a bounded queue. The writer takes the first, drains
//! whatever else is queued (up to the batch bounds), hands the batch to the
//! backend as one atomic, durable commit, publishes the new head and only
//! then answers every append of the batch. While one batch is being flushed
//! the next one fills up, so the flush cost is shared by every append that
//! arrived meanwhile.
//!
//! A commit that fails for a disk reason stops the store's appends at once
//! (fail-stop, this store only): the batch's appenders get the error, the
//! store turns `ReadOnly` (device full) or `Failed`, and the writer refuses
//! appends until it has reopened the store from its storage, so it never
//! retries the in-memory state of a failed commit. A read-only store
//! checks for room every heal interval; a failed one is reopened with
//! exponential back-off; `reopen_store` forces an attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gater_core::{AppendOutcome, Error, Position, StoreId, StoreState};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::backend::{BackendStore, PendingAppend};
use crate::faults::{self, HealOptions, Health};
use crate::metrics::StoreMetrics;

/// Most times the writer yields while the queue keeps growing before it cuts a batch.
const GATHER_YIELDS_MAX: usize = 16;

/// An append on its way to the writer, with the channel its answer goes back on.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub(crate) append: PendingAppend,
    pub(crate) reply: oneshot::Sender<Result<AppendOutcome, Error>>,
}

/// How the writer forms batches.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchBounds {
    /// Group concurrent appends; `false` commits each append alone.
    pub(crate) group_commit: bool,
    /// Most appends in one batch.
    pub(crate) appends_max: usize,
    /// A batch stops taking appends once it holds this many events.
    pub(crate) events_max: usize,
}

/// A forced reopen of the store, with the channel its outcome goes back on.
pub(crate) type ReopenRequest = oneshot::Sender<Result<(), Error>>;

/// Everything the writer task owns.
pub(crate) struct Writer {
    pub(crate) store: StoreId,
    pub(crate) backend: Arc<dyn BackendStore>,
    pub(crate) queue: mpsc::Receiver<AppendRequest>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) head: watch::Sender<Option<Position>>,
    pub(crate) bounds: BatchBounds,
    /// Whether the store takes appends; shared with the engine's status.
    pub(crate) health: Arc<Health>,
    /// Forced reopens (`reopen_store`).
    pub(crate) reopens: mpsc::Receiver<ReopenRequest>,
    pub(crate) heal: HealOptions,
    /// Where batch sizes and commit times are recorded.
    pub(crate) metrics: Arc<StoreMetrics>,
    /// This store's appended-events counter.
    pub(crate) appended: Arc<AtomicU64>,
    /// Whether commits are flushed to disk (the store's `fsync`): only those
    /// count as fsyncs.
    pub(crate) durable: bool,
}

impl Writer {
    /// Commits batches until told to stop or until every sender is gone,
    /// then refuses whatever is still queued with `StoreStopping`.
    pub(crate) async fn run(mut self) {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => Next::Stop,
                Some(reply) = self.reopens.recv() => Next::Reopen(reply),
                request = self.queue.recv() => request.map_or(Next::Stop, Next::Append),
            };
            let fault = match next {
                Next::Stop => break,
                Next::Reopen(reply) => {
                    let reopened = self.reopen().await;
                    let fault = reopened
                        .as_ref()
                        .err()
                        .filter(|e| faults::is_disk_fault(e))
                        .cloned();
                    let _ = reply.send(reopened);
                    fault
                }
                Next::Append(first) => {
                    let batch = self.fill(first).await;
                    self.commit(batch).await
                }
            };
            if let Some(fault) = fault {
                if !self.heal(fault).await {
                    break;
                }
            }
        }
        self.queue.close();
        while let Some(request) = self.queue.recv().await {
            let _ = request.reply.send(Err(self.stopping()));
        }
    }

    async fn fill(&mut self, first: AppendRequest) -> Vec<AppendRequest> {
        let mut events = first.append.event_count();
        let mut batch = vec![first];
        if !self.bounds.group_commit {
            return batch;
        }
        self.gather().await;
        while batch.len() < self.bounds.appends_max && events < self.bounds.events_max {
            match self.queue.try_recv() {
                Ok(request) => {
                    events += request.append.event_count();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Lets appenders that were just answered queue their next append, so
    /// they join this batch instead of waiting a whole flush for the next:
    /// without this, concurrent appenders split into groups that take turns.
    async fn gather(&mut self) {
        for _ in 0..GATHER_YIELDS_MAX {
            let queued = self.queue.len();
            if queued >= self.bounds.appends_max {
                return;
            }
            tokio::task::yield_now().await;
            if self.queue.len() == queued {
                return;
            }
        }
    }

    /// Commits a batch and answers its appends; a disk fault is returned.
    async fn commit(&mut self, batch: Vec<AppendRequest>) -> Option<Error> {
        let (appends, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|r| (r.append, r.reply)).unzip();
        let sizes: Vec<u64> = appends.iter().map(|a| a.event_count() as u64).collect();
        let head_before = *self.head.borrow();
        let started = Instant::now();
        match self
            .backend
            .append_batch(appends, crate::engine::now_us())
            .await
        {
            Ok(outcome) => {
                self.measure(&sizes, head_before, &outcome.results, started);
                // Publish before answering: whoever sees its append succeed
                // and then watches the head must find it there.
                publish_head(&self.head, outcome.head);
                debug_assert_eq!(outcome.results.len(), replies.len());
                for (reply, result) in replies.into_iter().zip(outcome.results) {
                    let _ = reply.send(result);
                }
                None
            }
            Err(error) => {
                tracing::error!(store = %self.store, %error, "append batch failed");
                let fault = faults::is_disk_fault(&error);
                let mut error = error;
                if fault {
                    // Before answering: whoever sees its append fail finds
                    // the store refusing appends.
                    self.stop_appends(&error).await;
                    if self.health.state().0 == StoreState::ReadOnly {
                        // A full device is `storage_full`, whatever failed first
                        // (a journal write, or a flush that poisoned the database).
                        error = self.health.refusal(&self.store).unwrap_or(error);
                    }
                }
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                fault.then_some(error)
            }
        }
    }

    /// After the disk fault `error`: refuses appends until the store is
    /// reopened from its storage. `false` when told to stop meanwhile.
    async fn heal(&mut self, error: Error) -> bool {
        if self.health.state().0 == StoreState::Running {
            self.stop_appends(&error).await;
        }
        let mut attempt = 0u32;
        loop {
            let (state, _) = self.health.state();
            let wait = if state == StoreState::ReadOnly {
                self.heal.interval()
            } else {
                attempt = attempt.saturating_add(1);
                self.heal.backoff(attempt)
            };
            let forced = match self.refuse_until(Instant::now() + wait).await {
                Waited::Stop => return false,
                Waited::Forced(reply) => Some(reply),
                Waited::Elapsed => None,
            };
            if let Some(reply) = forced {
                let reopened = self.reopen().await;
                let healed = reopened.is_ok();
                let _ = reply.send(reopened);
                if healed {
                    return true;
                }
                continue;
            }
            if state == StoreState::ReadOnly {
                match self.backend.has_room(&self.heal).await {
                    Ok(Some(false)) => continue,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(store = %self.store, %error, "cannot tell the free space of the store's device");
                        continue;
                    }
                }
            } else {
                tracing::warn!(store = %self.store, attempt, "reopening a failed store");
            }
            match self.reopen().await {
                Ok(()) => return true,
                Err(error) => {
                    tracing::warn!(store = %self.store, attempt, %error, "reopening the store failed");
                }
            }
        }
    }

    /// Puts the store in the state the disk fault `error` calls for.
    async fn stop_appends(&self, error: &Error) {
        let device_full = matches!(self.backend.has_room(&self.heal).await, Ok(Some(false)));
        let (state, reason) =
            faults::state_after(error, device_full, &self.store, self.backend.data_dir());
        tracing::error!(store = %self.store, %state, %reason, "the store takes no appends until it is reopened from its storage");
        self.health.set_fault(state, reason);
    }

    /// Refuses every append that arrives until `deadline`, a forced reopen
    /// or the stop, whichever comes first.
    async fn refuse_until(&mut self, deadline: Instant) -> Waited {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => Next::Stop,
                Some(reply) = self.reopens.recv() => Next::Reopen(reply),
                request = self.queue.recv() => request.map_or(Next::Stop, Next::Append),
                _ = tokio::time::sleep_until(deadline) => return Waited::Elapsed,
            };
            match next {
                Next::Stop => return Waited::Stop,
                Next::Reopen(reply) => return Waited::Forced(reply),
                Next::Append(request) => {
                    let refusal = self
                        .health
                        .refusal(&self.store)
                        .unwrap_or_else(|| self.stopping());
                    let _ = request.reply.send(Err(refusal));
                }
            }
        }
    }

    /// Reopens the store from its storage and, when that works, takes
    /// appends again from the head the storage holds; otherwise the store
    /// keeps (or takes) the fault's state.
    async fn reopen(&mut self) -> Result<(), Error> {
        match self.backend.reopen().await {
            Ok(counters) => {
                publish_head(&self.head, counters.head);
                if self.health.state().0 != StoreState::Running {
                    tracing::info!(store = %self.store, events = counters.event_count, "the store was reopened from its storage and takes appends again");
                }
                self.health.clear();
                Ok(())
            }
            Err(error) => {
                if faults::is_disk_fault(&error) {
                    self.stop_appends(&error).await;
                }
                Err(error)
            }
        }
    }

    /// Records a committed batch. An append whose result lies at or before
    /// the head seen before the batch was an idempotent re-send: it added
    /// nothing, so it does not count as appended events.
    fn measure(
        &self,
        sizes: &[u64],
        head_before: Option<Position>,
        results: &[Result<AppendOutcome, Error>],
        started: Instant,
    ) {
        let mut written_appends = 0u64;
        let mut written_events = 0u64;
        for (size, result) in sizes.iter().zip(results) {
            if let Ok(result) = result {
                if head_before.is_none_or(|head| result.position > head) {
                    written_appends += 1;
                    written_events += size;
                }
            }
        }
        if written_appends == 0 {
            return;
        }
        if self.durable {
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.metrics.handle_fsync(micros);
        }
        self.metrics.handle_batch(written_appends, written_events);
        self.appended.fetch_add(written_events, Ordering::Relaxed);
    }

    fn stopping(&self) -> Error {
        Error::StoreStopping {
            store: self.store.to_string(),
        }
    }
}

/// What woke the writer.
enum Next {
    Stop,
    Reopen(ReopenRequest),
    Append(AppendRequest),
}

/// How waiting in a faulty state ended.
enum Waited {
    Stop,
    Forced(ReopenRequest),
    Elapsed,
}

/// Publishes `seen` as the head if it is later than the published one: on a
/// shared backend a head poll may already have published another worker's
/// later commit, and the head never moves back.
pub(crate) fn publish_head(head: &watch::Sender<Option<Position>>, seen: Option<Position>) {
    head.send_if_modified(|current| {
        let newer = seen > *current;
        if newer {
            *current = seen;
        }
        newer
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_head_only_moves_forward() {
        let (head, watched) = watch::channel(None);
        publish_head(&head, Some(Position(5)));
        assert_eq!(*watched.borrow(), Some(Position(5)));
        publish_head(&head, Some(Position(3)));
        assert_eq!(
            *watched.borrow(),
            Some(Position(5)),
            "an earlier head is ignored"
        );
        publish_head(&head, None);
        assert_eq!(
            *watched.borrow(),
            Some(Position(5)),
            "an empty head is ignored"
        );
        publish_head(&head, Some(Position(9)));
        assert_eq!(*watched.borrow(), Some(Position(9)));
    }
}
