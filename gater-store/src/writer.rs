//! The single writer of a store: group commit.
//!
//! Appends wait in a bounded queue. The writer takes the first, drains
//! whatever else is queued (up to the batch bounds), hands the batch to the
//! backend as one atomic, durable commit, publishes the new head and only
//! then answers every append of the batch. While one batch is being flushed
//! the next one fills up, so the flush cost is shared by every append that
//! arrived meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use gater_core::{AppendResult, Error, Position, StoreId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{BackendStore, PendingAppend};
use crate::metrics::StoreMetrics;

/// Most times the writer yields while the queue keeps growing before it cuts a batch.
const GATHER_YIELDS_MAX: usize = 16;

/// An append on its way to the writer, with the channel its answer goes back on.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub(crate) append: PendingAppend,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, Error>>,
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

/// Everything the writer task owns.
pub(crate) struct Writer {
    pub(crate) store: StoreId,
    pub(crate) backend: Arc<dyn BackendStore>,
    pub(crate) queue: mpsc::Receiver<AppendRequest>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) head: watch::Sender<Option<Position>>,
    pub(crate) bounds: BatchBounds,
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
            let first = tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => break,
                request = self.queue.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
            };
            let batch = self.fill(first).await;
            self.commit(batch).await;
        }
        self.queue.close();
        while let Some(request) = self.queue.recv().await {
            let _ = request.reply.send(Err(self.stopping()));
        }
    }

    async fn fill(&mut self, first: AppendRequest) -> Vec<AppendRequest> {
        let mut events = first.append.events.len();
        let mut batch = vec![first];
        if !self.bounds.group_commit {
            return batch;
        }
        self.gather().await;
        while batch.len() < self.bounds.appends_max && events < self.bounds.events_max {
            match self.queue.try_recv() {
                Ok(request) => {
                    events += request.append.events.len();
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

    async fn commit(&mut self, batch: Vec<AppendRequest>) {
        let (appends, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|r| (r.append, r.reply)).unzip();
        let sizes: Vec<u64> = appends.iter().map(|a| a.events.len() as u64).collect();
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
            }
            Err(error) => {
                tracing::error!(store = %self.store, %error, "append batch failed");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
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
        results: &[Result<AppendResult, Error>],
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
