//! Group commit across the stores of a worker: the batches that stores'
//! writers commit at about the same time go into the worker's journal as
//! one fjall batch with one flush.
//!
//! Each writer stages its batch into a [`Staged`] (the writes, not yet a
//! fjall batch) and hands it to [`GroupCommit::commit`], which queues it.
//! When no leader is writing, the committer becomes the leader: it takes
//! every queued batch, writes them as one fjall batch, flushes once, hands
//! each waiter the outcome and wakes exactly those waiters, each on its own
//! condition variable (a shared one woke every thread waiting, the next
//! group's too, for most to sleep again). While it flushes, the next group
//! queues up; the leader then wakes that group's first waiter, which leads
//! it unless a newcomer took the lead first. One store alone commits
//! exactly as before (a batch of its own, one flush); many stores share
//! flushes, so a thousand stores with one append each cost far fewer than
//! a thousand fdatasyncs.
//!
//! Nothing is visible before it is durable: fjall applies a batch to the
//! memtables only after its flush, and the writers answer only after
//! `commit` returns. A failed flush fails every batch of the group (fjall
//! then refuses writes until the database is reopened, see `db`).
//!
//! Batches of stores that do not flush (`fsync` off) skip the queue: they
//! gain nothing from sharing and would only wait for others' flushes.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use fjall::{Database, Keyspace, OwnedWriteBatch, PersistMode, UserKey, UserValue};
use gater_core::Error;

use super::table::Table;
use crate::faults::fjall_error;

/// The writes of one store's batch, staged before they are committed.
pub(crate) struct Staged {
    db: Database,
    /// The database's generation the keyspaces belong to.
    pub(super) generation: u64,
    items: Vec<Item>,
    /// Bytes the new rows add to the store (see `table`).
    pub(super) bytes: u64,
}

/// One write of a [`Staged`] batch.
struct Item {
    keyspace: Keyspace,
    key: UserKey,
    value: UserValue,
}

impl Staged {
    /// An empty batch over `tables`' database, with room for `capacity` writes.
    pub(super) fn with_capacity(tables: &super::Tables, capacity: usize) -> Self {
        Staged {
            db: tables.db.clone(),
            generation: tables.generation,
            items: Vec::with_capacity(capacity),
            bytes: 0,
        }
    }

    /// Stages writing `value` at `key` of the store's `table`, a key the
    /// store does not hold yet: the row's bytes are added to the store's.
    pub(crate) fn insert<V: Into<UserValue>>(&mut self, table: &Table, key: &[u8], value: V) {
        let value = value.into();
        self.bytes += table.row_bytes(key, value.len()) as u64;
        self.replace(table, key, value);
    }

    /// Stages writing `value` at `key` of the store's `table` over a value
    /// of the same length (the counters row): the store's bytes stay.
    pub(crate) fn replace<V: Into<UserValue>>(&mut self, table: &Table, key: &[u8], value: V) {
        self.items.push(Item {
            keyspace: table.keyspace().clone(),
            key: table.user_key(key),
            value: value.into(),
        });
    }

    /// Where the batch stands now, to go back to with [`Staged::rollback`].
    pub(super) fn mark(&self) -> (usize, u64) {
        (self.items.len(), self.bytes)
    }

    /// Drops every write staged since `mark`.
    pub(super) fn rollback(&mut self, (len, bytes): (usize, u64)) {
        self.items.truncate(len);
        self.bytes = bytes;
    }

    /// The fjall batch of these writes alone, flushed as `mode` says.
    pub(super) fn into_batch(self, mode: PersistMode) -> OwnedWriteBatch {
        let mut batch = OwnedWriteBatch::with_capacity(self.db.clone(), self.items.len())
            .durability(Some(mode));
        self.drain_into(&mut batch);
        batch
    }

    fn drain_into(self, batch: &mut OwnedWriteBatch) {
        for item in self.items {
            batch.insert(&item.keyspace, item.key, item.value);
        }
    }
}

/// A batch waiting for the leader, and where its outcome goes.
struct Waiting {
    staged: Staged,
    slot: Arc<Slot>,
}

/// Where a queued batch's committer waits for its outcome.
#[derive(Default)]
struct Slot {
    /// Set, under the queue's lock, once the batch's group committed.
    outcome: Mutex<Option<Result<(), Error>>>,
    /// Signalled, under the queue's lock, when the outcome is set or the
    /// committer may lead the next group.
    wake: Condvar,
}

/// The queue of batches waiting to share a flush; one per worker database.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
}

/// Batches waiting, and whether a leader is writing a group now.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    leading: bool,
}

impl GroupCommit {
    /// Commits `staged` durably (`mode`), sharing the flush with whatever
    /// other stores commit meanwhile; returns once it is durable (or failed).
    pub(super) fn commit(&self, staged: Staged, mode: PersistMode) -> Result<(), Error> {
        if matches!(mode, PersistMode::Buffer) {
            return staged.into_batch(mode).commit().map_err(fjall_error);
        }
        let slot = Arc::new(Slot::default());
        let mut queue = lock(&self.queue);
        queue.waiting.push(Waiting {
            staged,
            slot: Arc::clone(&slot),
        });
        loop {
            let done = lock(&slot.outcome).take();
            if let Some(done) = done {
                return done;
            }
            if queue.leading {
                queue = slot.wake.wait(queue).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // No leader: this thread writes every queued batch, its own
            // among them, while the next group queues up.
            queue.leading = true;
            let group = std::mem::take(&mut queue.waiting);
            drop(queue);
            let (slots, result) = write_group(group, mode);
            queue = lock(&self.queue);
            for slot in slots {
                *lock(&slot.outcome) = Some(result.clone());
                slot.wake.notify_one();
            }
            queue.leading = false;
            if let Some(next) = queue.waiting.first() {
                next.slot.wake.notify_one();
            }
        }
    }
}

/// Writes `group` as one fjall batch with one flush; gives back the
/// group's slots and the outcome, for the caller to hand out.
fn write_group(group: Vec<Waiting>, mode: PersistMode) -> (Vec<Arc<Slot>>, Result<(), Error>) {
    let Some(first) = group.first() else {
        return (Vec::new(), Ok(()));
    };
    let len = group.iter().map(|w| w.staged.items.len()).sum();
    let mut batch =
        OwnedWriteBatch::with_capacity(first.staged.db.clone(), len).durability(Some(mode));
    let mut slots = Vec::with_capacity(group.len());
    for waiting in group {
        waiting.staged.drain_into(&mut batch);
        slots.push(waiting.slot);
    }
    (slots, batch.commit().map_err(fjall_error))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a push, a take or a store: a panic cannot
    // leave the value half-changed.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
