//! The embedded backend's group commit: the batch is staged (`crate::stage`)
//! over what the store's tables hold, and every accepted append is written
//! in one fjall batch with one flush.

use std::io::Read;

use fjall::Slice;
use gater_core::{Error, EventId, Position, Query, StreamLifecycle, Version};

use super::checksum;
use super::group::Staged;
use super::id_filter::{self, Coverage, IdFilter};
use super::keys::{self, corrupt};
use super::last_postings::LastPostings;
use super::query::Consistent;
use super::{encode_error, StoreInner, Tables};
use crate::backend::{BatchOutcome, PendingAppend};
use crate::faults::fjall_error;
use crate::hashing::FastMap;
use crate::lifecycle::{last_version, View};
use crate::stage::{stage_batch, Heads, Location, Stored, Writes};

/// Streams whose version the writer keeps in memory; the cache starts over when full.
pub(super) const HEAD_CACHE_LEN_MAX: usize = 65_536;

/// Initial bytes of the buffer keys are built in: a stream key of a
/// 256-byte stream id fits.
const SCRATCH_BYTES: usize = 512;

/// What the writer remembers between batches: versions of recently written
/// streams, so it need not read them back, and a filter of the stored event
/// ids, so a new id needs no lookup (`id_filter`). Only the writer changes
/// stream versions and ids, and it updates the versions after each
/// successful commit and the ids before each commit, so neither is ever
/// stale; a reopen starts both over.
#[derive(Debug, Default)]
pub(super) struct WriterCache {
    heads: FastMap<String, Version>,
    ids: IdFilter,
    /// Where each tag and type was last written, updated after each
    /// successful commit once the store has seen a condition: a condition
    /// looking only past it needs no index read. A store that never checks
    /// a condition does not pay for it on every append.
    postings: LastPostings,
    /// Whether any append of the store since it opened carried a condition.
    conditions_seen: bool,
}

impl WriterCache {
    pub(super) fn get(&self, stream: &str) -> Option<&Version> {
        self.heads.get(stream)
    }

    /// Updates known streams in place, so a busy stream costs no allocation.
    fn remember(&mut self, heads: &Heads<'_>) {
        if self.heads.len() + heads.len() > HEAD_CACHE_LEN_MAX {
            self.heads.clear();
        }
        for (&stream, &version) in heads {
            match self.heads.get_mut(stream) {
                Some(known) => *known = version,
                None => {
                    self.heads.insert(stream.to_owned(), version);
                }
            }
        }
    }

    /// Seeds the id filter from the event-id index, once, when the store
    /// holds few enough events (`event_count`) for one scan.
    fn seed_ids(&mut self, tables: &Tables, event_count: u64) {
        if self.ids.coverage() != Coverage::Unseeded {
            return;
        }
        if event_count > id_filter::SEED_SCAN_IDS_MAX {
            self.ids.cover_nothing();
            return;
        }
        let mut scanned = 0u64;
        for guard in tables.index.prefix(keys::ids_all()) {
            let id = guard
                .key()
                .map_err(fjall_error)
                .and_then(|key| keys::decode_id_key(&key));
            match id {
                Ok(id) if scanned < id_filter::SEED_SCAN_IDS_MAX => {
                    self.ids.insert(&id);
                    scanned += 1;
                }
                // Lookups answer for every id, and fail where the index does.
                Ok(_) => return self.ids.cover_nothing(),
                Err(error) => {
                    tracing::warn!(%error, "cannot seed the event-id filter: every id is looked up");
                    return self.ids.cover_nothing();
                }
            }
        }
        self.ids.seeded();
    }
}

/// What the store held before the batch, as the writer reads it: stream
/// versions from the cache or the stream index, event ids from the event-id
/// index.
struct Reader<'t> {
    tables: &'t Tables,
    cache: &'t WriterCache,
    /// What readers see: stream lifecycles (hidden events match no condition).
    view: &'t View,
    /// The event-id index value read last; locations borrow from it.
    id_value: Option<Slice>,
    /// What conditions are checked against, taken at the batch's first
    /// condition: index and log as of one instant, so a compaction
    /// committing meanwhile cannot take a posting's record away.
    at: Option<Consistent<'t>>,
}

impl Stored for Reader<'_> {
    fn version(&mut self, stream: &str) -> Result<Option<Version>, Error> {
        let stored = match self.cache.get(stream) {
            Some(&version) => Some(version),
            None => self.tables.stream_version(stream)?,
        };
        if self.view.hides_nothing() {
            return Ok(stored);
        }
        Ok(last_version(stored, &self.view.lifecycle(stream)))
    }

    fn lifecycle(&mut self, stream: &str) -> Result<StreamLifecycle, Error> {
        Ok(self.view.lifecycle(stream))
    }

    fn location(&mut self, id: &EventId) -> Result<Option<Location<'_>>, Error> {
        if !self.cache.ids.may_hold(id) {
            return Ok(None);
        }
        self.id_value = self
            .tables
            .index
            .get(keys::id_key(id))
            .map_err(fjall_error)?;
        self.id_value
            .as_deref()
            .map(keys::decode_id_value)
            .transpose()
    }

    fn first_match(
        &mut self,
        query: &Query,
        after: Option<Position>,
    ) -> Result<Option<Position>, Error> {
        if after.is_some_and(|after| self.cache.postings.rules_out(query, after)) {
            return Ok(None);
        }
        let at = self
            .at
            .take()
            .unwrap_or_else(|| Consistent::now(self.tables));
        let found = self.first_shown_match(&at, query, after);
        self.at = Some(at);
        found
    }
}

impl Reader<'_> {
    /// The first match after `after` in `at` that the view shows.
    fn first_shown_match(
        &mut self,
        at: &Consistent<'_>,
        query: &Query,
        after: Option<Position>,
    ) -> Result<Option<Position>, Error> {
        let mut after = after;
        loop {
            let found = super::query::first_match(at, query, after)?;
            let Some(position) = found.filter(|_| !self.view.hides_nothing()) else {
                return Ok(found);
            };
            let key = keys::position_key(position.0);
            let guard = at
                .log_get(&key)?
                .ok_or_else(|| corrupt(format!("an index names missing event {}", position.0)))?;
            let event = super::decode_record(&key, &guard)?;
            let last = self
                .version(event.stream.as_str())?
                .unwrap_or(event.version);
            let stream = event.stream.as_str();
            if self
                .view
                .shows_stored(stream, last, event.version, event.created_us)
            {
                return Ok(Some(position));
            }
            after = Some(position);
        }
    }
}

/// The fjall batch the accepted appends are written into.
struct Batch<'t> {
    tables: &'t Tables,
    batch: Staged,
    created_us: u64,
    /// Where each key and value is built before fjall copies it.
    scratch: Vec<u8>,
}

impl<'a> Writes<'a> for Batch<'_> {
    fn stage(
        &mut self,
        append: &'a PendingAppend,
        first_versions: &[Version],
        first_position: Position,
    ) -> Result<(), Error> {
        // A failure part-way takes back what this append staged.
        let mark = self.batch.mark();
        let staged = self.stage_events(append, first_versions, first_position);
        if staged.is_err() {
            self.batch.rollback(mark);
        }
        staged
    }
}

impl Batch<'_> {
    /// Stages the rows of every event of `append`: each key and value is
    /// built in one reused buffer and copied once, into the bytes fjall keeps.
    fn stage_events(
        &mut self,
        append: &PendingAppend,
        first_versions: &[Version],
        first_position: Position,
    ) -> Result<(), Error> {
        let t = self.tables;
        let key = &mut self.scratch;
        let mut position = first_position;
        for (part, &first_version) in append.parts.iter().zip(first_versions) {
            let stream = part.stream.as_str();
            for (i, event) in part.events.iter().enumerate() {
                let version = first_version + i as u64;
                let value = match part.encoded.get(i) {
                    Some(payload) => {
                        record_value(stream, version, position, self.created_us, payload)?
                    }
                    None => {
                        let payload = postcard::to_stdvec(event).map_err(encode_error)?;
                        record_value(stream, version, position, self.created_us, &payload)?
                    }
                };
                self.batch
                    .insert(&t.log, &keys::position_key(position.0), value);
                key.clear();
                keys::put_stream_key(key, stream, version);
                self.batch
                    .insert(&t.index, key.as_slice(), position.0.to_be_bytes());
                key.clear();
                keys::put_id_value(key, stream, version, position);
                self.batch
                    .insert(&t.index, &keys::id_key(&event.id), key.as_slice());
                key.clear();
                keys::put_type_posting(key, &event.event_type, position.0);
                self.batch.insert(&t.index, key.as_slice(), []);
                for tag in &event.tags {
                    key.clear();
                    keys::put_tag_posting(key, tag, position.0);
                    self.batch.insert(&t.index, key.as_slice(), []);
                }
                position = position.next();
            }
        }
        Ok(())
    }
}

impl StoreInner {
    /// Applies a batch; see `BackendStore::append_batch`.
    // Never inlined, so a profile sees the writer's commit as one function
    // (`cargo xtask profile-append`); it runs once per batch.
    #[inline(never)]
    pub(super) fn append_batch(
        &self,
        appends: Vec<PendingAppend>,
        created_us: u64,
    ) -> Result<BatchOutcome, Error> {
        self.with_tables(|t| {
            let mut cache = self.writer_cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.seed_ids(t, self.counters().event_count);
            let items: usize = appends
                .iter()
                .flat_map(|a| a.parts.iter().flat_map(|p| &p.events))
                .map(|e| 4 + e.tags.len())
                .sum();
            let mut writes = Batch {
                tables: t,
                batch: Staged::with_capacity(t, items + 8),
                created_us,
                scratch: Vec::with_capacity(SCRATCH_BYTES),
            };
            let view = View::new(self.lifecycles(), self.config.retention, created_us);
            let mut reader = Reader {
                tables: t,
                cache: &cache,
                view: &view,
                id_value: None,
                at: None,
            };
            let staged = stage_batch(&appends, self.counters(), &mut reader, &mut writes);
            if staged.written() {
                // Before the commit: a failed one may still leave its ids on disk.
                for (append, result) in appends.iter().zip(&staged.results) {
                    if result.is_ok() {
                        for part in &append.parts {
                            part.events.iter().for_each(|e| cache.ids.insert(&e.id));
                        }
                    }
                }
                let mut batch = writes.batch;
                let bytes = self.store_bytes().saturating_add(batch.bytes);
                batch.replace(
                    &t.index,
                    keys::COUNTERS_KEY,
                    keys::encode_counters(&staged.counters, bytes),
                );
                self.commit(batch)?;
                self.set_store_bytes(bytes);
                match self.counters.lock() {
                    Ok(mut c) => *c = staged.counters,
                    Err(poisoned) => *poisoned.into_inner() = staged.counters,
                }
                cache.remember(&staged.heads);
                cache.conditions_seen |= appends.iter().any(|a| a.condition.is_some());
                if cache.conditions_seen {
                    cache.postings.remember(staged.events());
                }
            }
            Ok(BatchOutcome {
                results: staged.results,
                head: staged.counters.head,
            })
        })
    }
}

impl StoreInner {
    /// Commits a batch: the one place a batch meets the disk (sharing
    /// its flush with other stores' batches, see `group`), where a debug
    /// build's injected fault strikes instead. A failure is remembered
    /// with the database's generation for `reopen`.
    fn commit(&self, batch: Staged) -> Result<(), Error> {
        let generation = batch.generation;
        #[cfg(debug_assertions)]
        if let Some(fault) = self.take_injected() {
            self.note_fault(generation);
            return fault.apply(batch.into_batch(self.persist_mode));
        }
        let committed = self.worker.group.commit(batch, self.persist_mode);
        if committed.is_err() {
            self.note_fault(generation);
        }
        committed
    }
}

/// Most bytes of a postcard varint (a u64 or a usize).
const VARINT_BYTES_MAX: usize = 10;

/// The log record of an event, byte for byte the postcard encoding of its
/// `RecordedEvent` followed by its checksum (`checksum`), built from the
/// event's own encoding: postcard writes a struct as its fields in order,
/// and the event is the record's last field. The header is encoded on the
/// stack and the record copied once, straight into the value fjall keeps,
/// where its checksum is taken.
fn record_value(
    stream: &str,
    version: Version,
    position: Position,
    created_us: u64,
    payload: &[u8],
) -> Result<Slice, Error> {
    let mut length = [0; VARINT_BYTES_MAX];
    let length = postcard::to_slice(&stream.len(), &mut length).map_err(encode_error)?;
    let mut numbers = [0; 3 * VARINT_BYTES_MAX];
    let numbers =
        postcard::to_slice(&(version, position, created_us), &mut numbers).map_err(encode_error)?;
    let mut record = Sealed {
        parts: [length, stream.as_bytes(), numbers, payload],
        done: false,
    };
    let len = record.parts.iter().map(|p| p.len()).sum::<usize>() + checksum::CHECKSUM_LEN;
    Slice::from_reader(&mut record, len).map_err(|e| Error::Storage(format!("log record: {e}")))
}

/// A record's parts, read out as the record followed by its checksum.
struct Sealed<'p> {
    parts: [&'p [u8]; 4],
    done: bool,
}

impl Read for Sealed<'_> {
    /// Fills `buf` with the whole sealed record at once (the checksum is
    /// taken over the bytes just copied); a `buf` too short for it is refused.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let len: usize = self.parts.iter().map(|p| p.len()).sum();
        let Some(out) = buf.get_mut(..len + checksum::CHECKSUM_LEN) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the buffer is shorter than the record",
            ));
        };
        let (record, sum) = out.split_at_mut(len);
        let mut at = 0;
        for part in self.parts {
            record[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        sum.copy_from_slice(&checksum::of(record));
        self.done = true;
        Ok(len + checksum::CHECKSUM_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_core::{EventData, RecordedEvent, StreamId};

    #[test]
    fn record_values_built_from_encoded_events_match_the_recorded_event_encoding() {
        let event = EventData {
            id: EventId::from_bytes([7; 16]),
            event_type: "OrderPlaced".to_owned(),
            data: vec![1; 300],
            metadata: b"{\"k\":1}".to_vec(),
            content_type: gater_core::CONTENT_TYPE_JSON.to_owned(),
            tags: vec!["course:7".to_owned()],
        };
        let recorded = RecordedEvent {
            stream: StreamId::new("orders-1").unwrap(),
            version: 300,
            position: Position(u64::MAX),
            created_us: 1_700_000_000_000_000,
            data: event.clone(),
        };
        let payload = postcard::to_stdvec(&event).unwrap();
        let value = record_value(
            "orders-1",
            recorded.version,
            recorded.position,
            recorded.created_us,
            &payload,
        )
        .unwrap();
        let record = checksum::open(&value).unwrap();
        assert_eq!(record, &postcard::to_stdvec(&recorded).unwrap()[..]);
        assert_eq!(
            postcard::from_bytes::<RecordedEvent>(record).unwrap(),
            recorded
        );
    }
}
