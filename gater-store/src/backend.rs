//! The storage boundary: what the engine needs from a backend (embedded fjall,
//! or a PostgreSQL database shared by several workers).
//!
//! A [`Backend`] manages the life cycle of stores; a [`BackendStore`] is one
//! open store. The engine owns everything above this line: validation,
//! limits, the single writer per store, head publication and subscriptions.
//! A backend owns everything below it: the layout of keys and rows, atomic
//! commits, durability and recovery.
//!
//! What a backend does not do: it does not validate request shapes (the
//! engine has done that before calling), and it never serialises writers
//! itself: the engine calls [`BackendStore::append_batch`] from one task per
//! store, one batch at a time.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gater_core::{
    AppendCondition, AppendOutcome, Direction, Error, EventData, ExpectedVersion, Position, Query,
    RecordedEvent, Snapshot, SnapshotKey, StoreConfig, StoreId, StreamId, StreamPage,
    SubscriptionKey, VerifyReport, Version,
};

use crate::faults::HealOptions;
use crate::lifecycle::{LifecycleChange, Lifecycles, View};

use crate::lease::{Claim, Claimant, Fence};
use crate::subscription::SubscriptionRecord;

/// Creates, opens, lists and removes stores.
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Creates a new, empty store with `config`; the store must not exist.
    async fn create_store(
        &self,
        store: &StoreId,
        config: StoreConfig,
    ) -> Result<Arc<dyn BackendStore>, Error>;

    /// Opens an existing store, recovering its head and counters.
    async fn open_store(&self, store: &StoreId) -> Result<Arc<dyn BackendStore>, Error>;

    /// Deletes a store's data. The engine has closed the store first.
    async fn remove_store(&self, store: &StoreId) -> Result<(), Error>;

    /// Every store that exists, in id order.
    async fn list_stores(&self) -> Result<Vec<StoreId>, Error>;

    /// Releases what the backend holds for all its stores (the embedded
    /// backend's database, its files and threads) once every store is
    /// closed, so the data can be opened again at once; later calls fail.
    fn close(&self) {}

    /// Whether other workers create, change and remove stores of this
    /// backend too (a shared database): the engine then looks for stores it
    /// has not opened and polls heads for commits it did not make.
    fn shared(&self) -> bool {
        false
    }
}

/// One append waiting in a batch: already validated by the engine.
#[derive(Clone, Debug)]
pub(crate) struct PendingAppend {
    /// The parts, in the order their events are stored; streams distinct.
    pub(crate) parts: Vec<PendingPart>,
    /// Checked with the parts' expectations (see `crate::stage`).
    pub(crate) condition: Option<AppendCondition>,
}

impl PendingAppend {
    /// Events in every part together.
    pub(crate) fn event_count(&self) -> usize {
        self.parts.iter().map(|p| p.events.len()).sum()
    }
}

/// One part of a [`PendingAppend`]: events for one stream.
#[derive(Clone, Debug)]
pub(crate) struct PendingPart {
    /// The stream appended to.
    pub(crate) stream: StreamId,
    /// The condition on the stream's version.
    pub(crate) expected: ExpectedVersion,
    /// The events, non-empty, ids distinct.
    pub(crate) events: Vec<EventData>,
    /// Each event encoded by [`BackendStore::encode_event`], in the
    /// appender's task so the single writer does not spend its time on it;
    /// empty when the backend encodes nothing ahead.
    pub(crate) encoded: Vec<Vec<u8>>,
}

/// What one call of [`BackendStore::append_batch`] did.
#[derive(Debug)]
pub(crate) struct BatchOutcome {
    /// One result per append, in the order given.
    pub(crate) results: Vec<Result<AppendOutcome, Error>>,
    /// The head of the global log after the commit (`None`: still empty).
    pub(crate) head: Option<Position>,
}

/// What [`BackendStore::compact`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Compacted {
    /// Hidden events removed.
    pub(crate) removed: u64,
    /// Bytes on disk before.
    pub(crate) bytes_before: u64,
    /// Bytes on disk after.
    pub(crate) bytes_after: u64,
}

/// The counters of a store, as of its last commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Position of the last event; `None` for an empty store.
    pub(crate) head: Option<Position>,
    /// Events in the global log.
    pub(crate) event_count: u64,
    /// Streams holding at least one event.
    pub(crate) stream_count: u64,
}

/// One open store.
#[async_trait]
pub(crate) trait BackendStore: Send + Sync + 'static {
    /// The configuration the store was created with.
    fn config(&self) -> StoreConfig;

    /// The counters as of the last commit.
    fn counters(&self) -> Counters;

    /// Encodes an event ahead of its append, in the appender's task (see
    /// [`PendingAppend::encoded`]); `None` when the backend does not want it.
    fn encode_event(&self, _event: &EventData) -> Option<Result<Vec<u8>, Error>> {
        None
    }

    /// Applies `appends` in order, later ones seeing the effect of earlier ones.
    ///
    /// Each append passes the idempotency check (its ids already stored
    /// consecutively in its streams: the original result, nothing written;
    /// stored elsewhere or partially: `DuplicateEventId`), then its
    /// expected-version checks, then its condition. All accepted appends are written in one atomic
    /// commit followed by one durable flush, stamped `created_us`. An `Err`
    /// means nothing of the batch was written. The checks are
    /// [`crate::stage::stage_batch`]'s; a backend only reads and commits.
    async fn append_batch(
        &self,
        appends: Vec<PendingAppend>,
        created_us: u64,
    ) -> Result<BatchOutcome, Error>;

    /// Up to `count` events of `stream` from version `start` in `direction`.
    async fn read_stream(
        &self,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error>;

    /// Up to `count` events matching `query` (valid, with at least one
    /// item) from `from` in `direction`, found through the backend's
    /// indexes by type and tag.
    async fn read_query(
        &self,
        query: &Query,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error>;

    /// Up to `count` events of the global log from `from` in `direction`.
    async fn read_all(
        &self,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error>;

    /// Up to `limit` streams after `after`, in id order.
    async fn list_streams(&self, after: Option<StreamId>, limit: u32) -> Result<StreamPage, Error>;

    /// The version of `stream`'s last event.
    async fn version(&self, stream: &StreamId) -> Result<Option<Version>, Error>;

    /// Bytes the store occupies on disk.
    async fn disk_bytes(&self) -> Result<u64, Error>;

    /// Log records read back for reads since the store was opened (index
    /// entries not counted): how much of the log a read path touches;
    /// `None` when the backend does not count them.
    fn records_read(&self) -> Option<u64> {
        None
    }

    /// The lifecycle state of every stream that has some (see `crate::lifecycle`).
    ///
    /// The default: none (a backend that does not keep lifecycle state).
    async fn lifecycles(&self) -> Result<Arc<Lifecycles>, Error> {
        Ok(Arc::default())
    }

    /// Applies `change` to `stream` with [`crate::lifecycle::apply`], in
    /// step with appends (no append of the stream commits between the
    /// check and the write), and stores the result durably. A tombstone
    /// deletes the stream's snapshots too.
    async fn change_lifecycle(
        &self,
        stream: &StreamId,
        change: LifecycleChange,
    ) -> Result<(), Error> {
        let _ = (stream, change);
        Err(Error::Unsupported(
            "this backend keeps no stream lifecycle".into(),
        ))
    }

    /// Deletes the stored data of every event `view` hides and reclaims its
    /// space, without blocking appends; returns how many events it removed
    /// and the store's bytes on disk before and after (measured with what
    /// the backend buffers in memory written out first, so that they
    /// compare). Work done is durable as it goes, so a compaction after a
    /// crash finishes it.
    async fn compact(&self, view: &View) -> Result<Compacted, Error> {
        let _ = view;
        Err(Error::Unsupported("this backend does not compact".into()))
    }

    /// Stores a snapshot, overwriting one with the same key.
    async fn record_snapshot(&self, snapshot: Snapshot) -> Result<(), Error>;

    /// The snapshot at `version`, or the highest version when `None`.
    async fn read_snapshot(
        &self,
        source: &str,
        stream: &str,
        version: Option<Version>,
    ) -> Result<Option<Snapshot>, Error>;

    /// Snapshot keys in key order, filtered by source and stream.
    async fn list_snapshots(
        &self,
        source: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error>;

    /// Deletes a snapshot; `false` when it did not exist.
    async fn delete_snapshot(&self, key: &SnapshotKey) -> Result<bool, Error>;

    /// Every stored subscription record.
    async fn load_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error>;

    /// The stored record of one subscription.
    async fn load_subscription(
        &self,
        key: &SubscriptionKey,
    ) -> Result<Option<SubscriptionRecord>, Error> {
        let records = self.load_subscriptions().await?;
        Ok(records.into_iter().find(|r| &r.spec.key == key))
    }

    /// Stores a subscription record durably: creates it, or on a store of
    /// this worker alone overwrites it. A shared backend keeps an existing
    /// record (its holder writes it with [`BackendStore::put_subscription_fenced`]).
    async fn put_subscription(&self, record: &SubscriptionRecord) -> Result<(), Error>;

    /// Deletes a subscription record, and its lease; a missing one is Ok.
    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error>;

    /// Takes or renews the lease of persistent subscription `key` for
    /// `claimant` (see `lease`). A store of this worker alone needs none:
    /// its one worker always holds it.
    async fn claim_lease(
        &self,
        _key: &SubscriptionKey,
        _claimant: &Claimant,
    ) -> Result<Claim, Error> {
        Ok(Claim::Held(0))
    }

    /// Gives up a lease `holder` holds at `epoch`, so another worker may take it at once.
    async fn release_lease(
        &self,
        _key: &SubscriptionKey,
        _holder: &str,
        _epoch: u64,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// Overwrites a record if `holder` holds its lease at `epoch`, unexpired,
    /// and the record was not removed: a compare-and-set, so a worker that
    /// lost its lease never writes.
    async fn put_subscription_fenced(
        &self,
        record: &SubscriptionRecord,
        _holder: &str,
        _epoch: u64,
    ) -> Result<Fence, Error> {
        self.put_subscription(record).await.map(|()| Fence::Written)
    }

    /// Tells this creation of the store from an earlier one with the same id
    /// (a store removed and created again); 0 when the backend has only one.
    fn incarnation(&self) -> u64 {
        0
    }

    /// Whether another worker removed this incarnation of the store (and
    /// maybe created the id again): the engine then drops this handle, its
    /// writer and its subscription tasks, and opens the store anew.
    fn gone(&self) -> bool {
        false
    }

    /// Flushes and releases the store's files; later calls get `StoreStopping`.
    async fn close(&self) -> Result<(), Error>;

    /// Releases the store's files at once, without an extra flush (for drops,
    /// where nothing can be awaited); later calls get `StoreStopping`.
    fn release(&self);

    /// Whether other workers append to this store too.
    fn shared(&self) -> bool {
        false
    }

    /// How often the engine polls [`BackendStore::refresh_head`] for commits
    /// of other workers; `None` when this worker's writer is the only one.
    fn head_poll_interval(&self) -> Option<Duration> {
        None
    }

    /// The head as committed by any worker, refreshing the counters with it.
    async fn refresh_head(&self) -> Result<Option<Position>, Error> {
        Ok(self.counters().head)
    }

    /// Recovers the store from its storage after a failed commit, dropping
    /// whatever the process holds in memory (counters, caches, a poisoned
    /// journal), and answers the counters as the storage holds them. A
    /// database that holds no state in the worker only refreshes its head.
    async fn reopen(&self) -> Result<Counters, Error> {
        self.refresh_head().await?;
        Ok(self.counters())
    }

    /// Whether the store's storage has room to write again by `heal`'s
    /// margins; `None` when the backend cannot tell (a database), and the
    /// engine then simply tries.
    async fn has_room(&self, _heal: &HealOptions) -> Result<Option<bool>, Error> {
        Ok(None)
    }

    /// The directory holding the store's files, for messages about its
    /// device; `None` for a database.
    fn data_dir(&self) -> Option<&std::path::Path> {
        None
    }

    /// Reads back every record of the log and checks it.
    async fn verify(&self) -> Result<VerifyReport, Error> {
        Err(Error::Unsupported(
            "verify: this storage checks its own data".into(),
        ))
    }

    /// Makes the next commit fail as `fault` says; `false` when the backend
    /// has no such seam. Debug builds only.
    #[cfg(debug_assertions)]
    fn inject_fault(&self, _fault: crate::InjectedFault) -> bool {
        false
    }
}
