//! Stream lifecycle in the embedded backend: the lifecycle rows (prefix
//! `l` of the index, see `keys`), changes applied in step with the writer,
//! and compaction, which deletes what readers no longer see.
//!
//! A change takes the writer's head-cache lock, so no append commits
//! between reading the stream's version and writing its new state. The
//! states are also kept in memory (copied on write) for the engine's
//! reads and the writer's checks.
//!
//! Compaction walks the log and deletes every record the view hides with
//! all its index entries, in batches of [`COMPACT_BATCH_EVENTS`] that each
//! commit on their own: after a crash the next compaction walks again and
//! finds only what is left. It keeps what numbering needs: the log's last
//! record (recovery checks the head against it) and the last event of a
//! stream that is neither tombstoned nor truncated past it (its stream-index
//! key is the stream's version). Then it flushes and major-compacts the
//! worker's `log` and `index` keyspaces (every store's: the store has none
//! of its own), so the space is back on disk when it returns. The bytes
//! before and after are the store's byte count (see `table`), which every
//! deletion batch lowers by what it deletes.

use std::sync::Arc;

use fjall::PersistMode;
use gater_core::{Error, Position, RecordedEvent, StreamId, StreamLifecycle};

use super::keys::{self, corrupt};
use super::table::StoreBatch;
use super::{decode_record, encode_error, StoreInner, Tables};
use crate::backend::Compacted;
use crate::faults::fjall_error;
use crate::lifecycle::{apply, last_version, LifecycleChange, Lifecycles, View};

/// Hidden events deleted per committed batch during compaction.
pub(super) const COMPACT_BATCH_EVENTS: usize = 4_096;

impl Tables {
    /// Every stored lifecycle state.
    pub(super) fn load_lifecycles(&self) -> Result<Lifecycles, Error> {
        let mut states = Lifecycles::new();
        for guard in self.index.prefix(keys::LIFECYCLES) {
            let (key, value) = guard.into_inner().map_err(fjall_error)?;
            let stream = keys::decode_lifecycle_key(&key)?;
            let state: StreamLifecycle = postcard::from_bytes(&value).map_err(corrupt)?;
            states.insert(stream, state);
        }
        Ok(states)
    }
}

impl StoreInner {
    /// The lifecycle states as of now (a shared copy).
    pub(super) fn lifecycles(&self) -> Arc<Lifecycles> {
        self.lifecycles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `change` to `stream`; see `BackendStore::change_lifecycle`.
    pub(super) fn change_lifecycle(
        &self,
        stream: &StreamId,
        change: LifecycleChange,
    ) -> Result<(), Error> {
        self.with_tables(|t| {
            // Held like the writer holds it: no batch commits meanwhile.
            let cache = self.writer_cache.lock().unwrap_or_else(|p| p.into_inner());
            let name = stream.as_str();
            let states = self.lifecycles();
            let current = states.get(name).copied().unwrap_or_default();
            let stored = match cache.get(name) {
                Some(&version) => Some(version),
                None => t.stream_version(name)?,
            };
            let last = last_version(stored, &current);
            let next = apply(stream, current, last, change)?;
            if next == current {
                return Ok(());
            }
            let mut batch = self.store_batch(t);
            let value = postcard::to_stdvec(&next).map_err(encode_error)?;
            batch
                .put(&t.index, keys::lifecycle_key(name), value)
                .map_err(fjall_error)?;
            if next.tombstoned {
                for guard in t.index.prefix(keys::snapshots_all()) {
                    let (key, value) = guard.into_inner().map_err(fjall_error)?;
                    if keys::decode_snapshot_key(&key)?.stream == name {
                        batch.remove_known(&t.index, key, value.len());
                    }
                }
            }
            self.commit_counted(t, batch, &cache)?;
            let mut states = (*states).clone();
            states.insert(name.to_owned(), next);
            *self.lifecycles.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(states);
            drop(cache);
            Ok(())
        })
    }

    /// Deletes what `view` hides; see the module docs. Returns the events removed.
    pub(super) fn compact(&self, view: &View) -> Result<Compacted, Error> {
        let bytes_before = self.with_tables(|_| Ok(self.store_bytes()))?;
        let head = self.counters().head;
        let mut removed = 0u64;
        let mut from = Position::START;
        loop {
            let (doomed, next) = self.with_tables(|t| hidden_run(t, view, head, from))?;
            if !doomed.is_empty() {
                self.with_tables(|t| {
                    let writer = self.writer();
                    let mut batch =
                        StoreBatch::new(t.db.batch().durability(Some(PersistMode::SyncAll)));
                    for (event, record_len) in &doomed {
                        remove_event(t, &mut batch, event, *record_len);
                    }
                    self.commit_counted(t, batch, &writer)
                })?;
                removed += doomed.len() as u64;
            }
            match next {
                Some(next) => from = next,
                None => break,
            }
        }
        let bytes_after = self.with_tables(|t| {
            flush(t)?;
            for table in [&t.log, &t.index] {
                table.keyspace().major_compact().map_err(fjall_error)?;
            }
            t.db.persist(PersistMode::SyncAll).map_err(fjall_error)?;
            Ok(self.store_bytes())
        })?;
        Ok(Compacted {
            removed,
            bytes_before,
            bytes_after,
        })
    }
}

/// Writes both keyspaces' memtables out to tables and waits for it.
fn flush(t: &Tables) -> Result<(), Error> {
    for table in [&t.log, &t.index] {
        table
            .keyspace()
            .rotate_memtable_and_wait()
            .map_err(fjall_error)?;
    }
    t.db.persist(PersistMode::SyncAll).map_err(fjall_error)
}

/// An event compaction deletes, with the bytes of its log record.
type Doomed = (RecordedEvent, usize);

/// From `from` on, up to [`COMPACT_BATCH_EVENTS`] events that compaction
/// deletes, and where the walk goes on (`None`: the log is done).
fn hidden_run(
    t: &Tables,
    view: &View,
    head: Option<Position>,
    from: Position,
) -> Result<(Vec<Doomed>, Option<Position>), Error> {
    let mut doomed = Vec::new();
    let mut lasts = std::collections::HashMap::new();
    for guard in t.log.range(keys::position_key(from.0)..) {
        let (key, value) = guard.into_inner().map_err(fjall_error)?;
        let event = decode_record(&key, &value)?;
        let position = event.position;
        if Some(position) == head {
            break;
        }
        let state = view.lifecycle(event.stream.as_str());
        let last = match lasts.get(event.stream.as_str()) {
            Some(&last) => last,
            None => {
                let last = t.stream_version(event.stream.as_str())?.unwrap_or(0);
                lasts.insert(event.stream.as_str().to_owned(), last);
                last
            }
        };
        let numbering_needs_it = event.version == last
            && !state.tombstoned
            && state.truncate_before.is_none_or(|before| before <= last);
        if !numbering_needs_it
            && !view.shows_stored(event.stream.as_str(), last, event.version, event.created_us)
        {
            doomed.push((event, value.len()));
            if doomed.len() == COMPACT_BATCH_EVENTS {
                return Ok((doomed, Some(position.next())));
            }
        }
    }
    Ok((doomed, None))
}

/// Stages the removal of `event`'s log record and its index entries but
/// one: the event-id entry (no data, only where the event was) stays, so a
/// retry of an append made before a delete still answers its original
/// result instead of writing the events again.
fn remove_event(t: &Tables, batch: &mut StoreBatch, event: &RecordedEvent, record_len: usize) {
    let stream = event.stream.as_str();
    let position = event.position.0;
    batch.remove_known(&t.log, keys::position_key(position), record_len);
    // A stream-index value is the event's position.
    batch.remove_known(&t.index, keys::stream_key(stream, event.version), 8);
    let type_prefix = keys::type_prefix(&event.data.event_type);
    batch.remove_known(&t.index, keys::posting_key(&type_prefix, position), 0);
    for tag in &event.data.tags {
        let tag_prefix = keys::tag_prefix(tag);
        batch.remove_known(&t.index, keys::posting_key(&tag_prefix, position), 0);
    }
}
