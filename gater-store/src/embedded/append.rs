//! The embedded backend's group commit: checks a batch of appends in order
//! against the stored state plus what earlier appends of the batch staged,
//! then writes every accepted append in one fjall batch with one flush.

use std::collections::HashMap;
use std::io::Read;

use fjall::{OwnedWriteBatch, Slice};
use gater_core::{AppendResult, Error, EventId, Position, Version};

use super::keys::{self, IdLocation};
use super::{encode_error, fjall_error, StoreInner, Tables};

/// Streams whose version the writer keeps in memory; the cache starts over when full.
pub(super) const HEAD_CACHE_LEN_MAX: usize = 65_536;

/// Versions of recently written streams, so the writer need not read them
/// back. Only the writer changes stream versions and it updates the cache
/// after each successful commit, so the cache is never stale.
#[derive(Debug, Default)]
pub(super) struct HeadCache {
    heads: HashMap<String, Version>,
}

impl HeadCache {
    fn get(&self, stream: &str) -> Option<&Version> {
        self.heads.get(stream)
    }

    /// Updates known streams in place, so a busy stream costs no allocation.
    fn remember(&mut self, heads: &HashMap<&str, Version>) {
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
}
use crate::backend::{BatchOutcome, Counters, PendingAppend};

/// What the appends accepted so far in this batch have changed; it borrows
/// stream ids from the batch's appends instead of copying them per event.
struct Staged<'a> {
    counters: Counters,
    /// New stream versions, written once per stream at the end of the batch.
    heads: HashMap<&'a str, Version>,
    /// Where the batch puts each new event: stream, version, position.
    ids: HashMap<EventId, (&'a str, Version, Position)>,
    written: bool,
}

impl Staged<'_> {
    fn next_position(&self) -> u64 {
        self.counters.head.map_or(0, |h| h.0 + 1)
    }

    fn version(
        &self,
        t: &Tables,
        cache: &HeadCache,
        stream: &str,
    ) -> Result<Option<Version>, Error> {
        if let Some(&version) = self.heads.get(stream).or_else(|| cache.get(stream)) {
            return Ok(Some(version));
        }
        t.index
            .get(keys::head_key(stream))
            .map_err(fjall_error)?
            .map(|v| keys::decode_u64(&v))
            .transpose()
    }

    fn location(&self, t: &Tables, id: &EventId) -> Result<Option<IdLocation>, Error> {
        if let Some(&(stream, version, position)) = self.ids.get(id) {
            return Ok(Some(IdLocation {
                stream: stream.to_owned(),
                version,
                position,
            }));
        }
        t.index
            .get(keys::id_key(id))
            .map_err(fjall_error)?
            .map(|v| keys::decode_id_value(&v))
            .transpose()
    }
}

impl StoreInner {
    /// Applies a batch; see `BackendStore::append_batch`.
    pub(super) fn append_batch(
        &self,
        appends: Vec<PendingAppend>,
        created_us: u64,
    ) -> Result<BatchOutcome, Error> {
        self.with_tables(|t| {
            let mut cache = self.head_cache.lock().unwrap_or_else(|p| p.into_inner());
            let mut staged = Staged {
                counters: self.counters(),
                heads: HashMap::new(),
                ids: HashMap::new(),
                written: false,
            };
            let items: usize = appends.iter().map(|a| a.events.len() * 3).sum();
            let mut batch = OwnedWriteBatch::with_capacity(t.db.clone(), items + 8)
                .durability(Some(self.persist_mode));
            let results = appends
                .iter()
                .map(|append| stage(t, &cache, &mut staged, &mut batch, append, created_us))
                .collect();
            if staged.written {
                for (stream, version) in &staged.heads {
                    batch.insert(&t.index, keys::head_key(stream), version.to_be_bytes());
                }
                batch.insert(
                    &t.index,
                    keys::COUNTERS_KEY,
                    keys::encode_counters(&staged.counters),
                );
                batch.commit().map_err(fjall_error)?;
                match self.counters.lock() {
                    Ok(mut c) => *c = staged.counters,
                    Err(poisoned) => *poisoned.into_inner() = staged.counters,
                }
                cache.remember(&staged.heads);
            }
            Ok(BatchOutcome {
                results,
                head: staged.counters.head,
            })
        })
    }
}

/// Checks one append and, if it is accepted and new, stages its writes.
fn stage<'a>(
    t: &Tables,
    cache: &HeadCache,
    staged: &mut Staged<'a>,
    batch: &mut OwnedWriteBatch,
    append: &'a PendingAppend,
    created_us: u64,
) -> Result<AppendResult, Error> {
    if let Some(original) = earlier_result(t, staged, append)? {
        return Ok(original);
    }
    let current = staged.version(t, cache, append.stream.as_str())?;
    if !append.expected.is_satisfied_by(current) {
        return Err(Error::WrongExpectedVersion {
            expected: append.expected,
            current,
        });
    }
    let first_version = current.map_or(0, |v| v + 1);
    let first_position = staged.next_position();
    let count = append.events.len() as u64;
    // Encode everything before staging anything, so a failure stages nothing.
    let stream = append.stream.as_str();
    let mut encoded = Vec::with_capacity(append.events.len());
    for (i, event) in append.events.iter().enumerate() {
        let version = first_version + i as u64;
        let position = Position(first_position + i as u64);
        let value = match append.encoded.get(i) {
            Some(payload) => record_value(stream, version, position, created_us, payload)?,
            None => {
                let payload = postcard::to_stdvec(event).map_err(encode_error)?;
                record_value(stream, version, position, created_us, &payload)?
            }
        };
        encoded.push((event.id, version, position, value));
    }
    for (id, version, position, value) in encoded {
        batch.insert(&t.log, keys::position_key(position.0), value);
        batch.insert(
            &t.index,
            keys::stream_key(stream, version),
            position.0.to_be_bytes(),
        );
        batch.insert(
            &t.index,
            keys::id_key(&id),
            keys::id_value(stream, version, position),
        );
        staged.ids.insert(id, (stream, version, position));
    }
    let last_version = first_version + count - 1;
    let last_position = Position(first_position + count - 1);
    if current.is_none() {
        staged.counters.stream_count += 1;
    }
    staged.heads.insert(stream, last_version);
    staged.counters.head = Some(last_position);
    staged.counters.event_count += count;
    staged.written = true;
    Ok(AppendResult {
        version: last_version,
        position: last_position,
    })
}

/// The idempotency check: `Some` with the original result when every id of
/// `append` is already stored consecutively, in order, in its stream.
fn earlier_result(
    t: &Tables,
    staged: &Staged,
    append: &PendingAppend,
) -> Result<Option<AppendResult>, Error> {
    let Some(first) = append.events.first() else {
        return Err(Error::invalid("an append needs at least one event"));
    };
    let Some(origin) = staged.location(t, &first.id)? else {
        for event in &append.events[1..] {
            if staged.location(t, &event.id)?.is_some() {
                return Err(Error::DuplicateEventId { id: event.id });
            }
        }
        return Ok(None);
    };
    let mut last = origin.clone();
    for (i, event) in append.events.iter().enumerate() {
        let at_place = match staged.location(t, &event.id)? {
            Some(found)
                if found.stream == append.stream.as_str()
                    && Some(found.version) == origin.version.checked_add(i as u64) =>
            {
                found
            }
            Some(_) => return Err(Error::DuplicateEventId { id: event.id }),
            // Part of the append is stored and part is not: the stored part is the duplicate.
            None => return Err(Error::DuplicateEventId { id: first.id }),
        };
        last = at_place;
    }
    Ok(Some(AppendResult {
        version: last.version,
        position: last.position,
    }))
}

/// Most bytes of a postcard varint (a u64 or a usize).
const VARINT_BYTES_MAX: usize = 10;

/// The log record of an event, byte for byte the postcard encoding of its
/// `RecordedEvent`, built from the event's own encoding: postcard writes a
/// struct as its fields in order, and the event is the record's last field.
/// The header is encoded on the stack and the record copied once, straight
/// into the value fjall keeps.
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
    let len = length.len() + stream.len() + numbers.len() + payload.len();
    let mut parts = (&*length)
        .chain(stream.as_bytes())
        .chain(&*numbers)
        .chain(payload);
    Slice::from_reader(&mut parts, len).map_err(|e| Error::Storage(format!("log record: {e}")))
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
        assert_eq!(&*value, &postcard::to_stdvec(&recorded).unwrap()[..]);
        assert_eq!(
            postcard::from_bytes::<RecordedEvent>(&value).unwrap(),
            recorded
        );
    }
}
