//! Staging an append batch, the same for every backend: each append is
//! checked in order against what the store held before the batch plus what
//! earlier appends of the batch staged, and each accepted new append is given
//! its versions and positions.
//!
//! An append (one or more parts, each `(stream, expected, events)`, and an
//! optional condition) first passes the idempotency check: when the ids of
//! every part are already stored (or staged) consecutively, in order, in the
//! part's stream, it answers the original outcome (each part's version and
//! the position of its last event) and writes nothing, whatever it expects;
//! ids stored elsewhere, out of order, only in part, or some parts stored and
//! others not are a `DuplicateEventId`. Then each part's expected version is
//! checked against its stream's current version, then the condition against
//! the stored log and the events staged before it in the batch (all of which
//! come after the stored ones). An accepted new append takes the versions
//! after each stream's and the positions after the batch's last one, its
//! parts one after the other.
//!
//! A backend supplies how it reads the state before the batch ([`Stored`])
//! and where it puts an accepted append's rows ([`Writes`]). What this module
//! does not do: read or write storage, or commit. The backend commits the
//! [`Staged`] outcome in one atomic write, or nothing when no append was
//! accepted.

use gater_core::{
    AppendCondition, AppendOutcome, Error, EventId, Position, Query, QueryItem, StreamLifecycle,
    StreamVersion, Version,
};

use crate::backend::{Counters, PendingAppend, PendingPart};
use crate::hashing::FastMap;

/// The new version of every stream a batch appends to.
pub(crate) type Heads<'a> = FastMap<&'a str, Version>;

/// Where an event is stored: its stream, version and global position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location<'s> {
    pub(crate) stream: &'s str,
    pub(crate) version: Version,
    pub(crate) position: Position,
}

/// How a backend reads what its store held before the batch.
pub(crate) trait Stored {
    /// The version of `stream`'s last event; `None` when it has none.
    fn version(&mut self, stream: &str) -> Result<Option<Version>, Error>;

    /// The lifecycle state of `stream` (see `crate::lifecycle`); the
    /// default for a backend that keeps none.
    fn lifecycle(&mut self, stream: &str) -> Result<StreamLifecycle, Error> {
        let _ = stream;
        Ok(StreamLifecycle::default())
    }

    /// Where the event `id` is stored; `None` when it is not.
    fn location(&mut self, id: &EventId) -> Result<Option<Location<'_>>, Error>;

    /// The position of the first stored event after `after` (from the start
    /// when `None`) that matches `query`; `None` when there is none.
    fn first_match(
        &mut self,
        query: &Query,
        after: Option<Position>,
    ) -> Result<Option<Position>, Error>;
}

/// Where a backend puts the rows of the appends the batch accepts.
pub(crate) trait Writes<'a> {
    /// Stages the rows of `append`, accepted and new: the events of part
    /// `i` take the versions from `first_versions[i]` on, and the events of
    /// all parts the positions from `first_position` on, part after part.
    /// An `Err` fails this append alone, so it must leave nothing of the
    /// append staged.
    fn stage(
        &mut self,
        append: &'a PendingAppend,
        first_versions: &[Version],
        first_position: Position,
    ) -> Result<(), Error>;
}

/// An event the batch staged, as a condition sees it.
#[derive(Debug)]
struct StagedEvent<'a> {
    position: Position,
    event_type: &'a str,
    tags: &'a [String],
}

/// What staging a batch decided; it borrows stream ids from the batch.
#[derive(Debug)]
pub(crate) struct Staged<'a> {
    /// One result per append, in the order given.
    pub(crate) results: Vec<Result<AppendOutcome, Error>>,
    /// The store's counters once the batch is committed.
    pub(crate) counters: Counters,
    /// The new version of every stream the batch appends to.
    pub(crate) heads: Heads<'a>,
    /// Where the batch puts each new event.
    ids: FastMap<EventId, (&'a str, Version, Position)>,
    /// Every event the batch stages, in position order.
    events: Vec<StagedEvent<'a>>,
    /// The tags and types among `events`, for conditions.
    names: StagedNames<'a>,
    /// Working lists of the append being staged.
    scratch: PartScratch,
}

/// Per-part working lists of one append, kept from append to append of a
/// batch so that staging an append allocates none of them.
#[derive(Debug, Default)]
struct PartScratch {
    lifecycles: Vec<StreamLifecycle>,
    currents: Vec<Option<Version>>,
    first_versions: Vec<Version>,
    /// The idempotency check's findings, one per part.
    found: Vec<Option<(Version, Position)>>,
}

/// The tags and types of a batch's first `upto` staged events, kept from
/// the batch's first condition on: a condition item naming a tag (or only
/// types) none of them carries matches none of them, without a scan.
#[derive(Debug, Default)]
struct StagedNames<'a> {
    tags: FastMap<&'a str, ()>,
    types: FastMap<&'a str, ()>,
    upto: usize,
}

impl<'a> StagedNames<'a> {
    /// Takes in the events staged since the last call.
    fn catch_up(&mut self, events: &[StagedEvent<'a>]) {
        for event in &events[self.upto..] {
            self.types.insert(event.event_type, ());
            for tag in event.tags {
                self.tags.insert(tag.as_str(), ());
            }
        }
        self.upto = events.len();
    }

    /// Whether no staged event can match `item`.
    fn rule_out(&self, item: &QueryItem) -> bool {
        item.tags
            .iter()
            .any(|tag| !self.tags.contains_key(tag.as_str()))
            || (!item.types.is_empty()
                && item
                    .types
                    .iter()
                    .all(|ty| !self.types.contains_key(ty.as_str())))
    }
}

impl Staged<'_> {
    /// Whether any append was accepted as new, so there is something to commit.
    pub(crate) fn written(&self) -> bool {
        !self.heads.is_empty()
    }

    /// Every event the batch stages (position, type, tags), in position order.
    pub(crate) fn events(&self) -> impl Iterator<Item = (Position, &str, &[String])> {
        self.events
            .iter()
            .map(|e| (e.position, e.event_type, e.tags))
    }
}

/// Checks `appends` in order on top of `stored` (whose counters are
/// `counters`) and stages the accepted new ones in `writes`.
///
/// A failure to read `stored` fails the append that needed the read, not
/// the batch, exactly like a failure of `writes`.
pub(crate) fn stage_batch<'a>(
    appends: &'a [PendingAppend],
    counters: Counters,
    stored: &mut impl Stored,
    writes: &mut impl Writes<'a>,
) -> Staged<'a> {
    // Sized up front: growing a map rehashes every key it holds.
    let events = appends.iter().map(PendingAppend::event_count).sum();
    let mut staged = Staged {
        results: Vec::with_capacity(appends.len()),
        counters,
        heads: Heads::with_capacity_and_hasher(appends.len(), Default::default()),
        ids: FastMap::with_capacity_and_hasher(events, Default::default()),
        events: Vec::with_capacity(events),
        names: StagedNames::default(),
        scratch: PartScratch::default(),
    };
    for append in appends {
        let result = staged.stage(stored, writes, append);
        staged.results.push(result);
    }
    staged
}

impl<'a> Staged<'a> {
    /// Checks one append and, if it is accepted and new, stages it.
    fn stage(
        &mut self,
        stored: &mut impl Stored,
        writes: &mut impl Writes<'a>,
        append: &'a PendingAppend,
    ) -> Result<AppendOutcome, Error> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.stage_with(&mut scratch, stored, writes, append);
        self.scratch = scratch;
        result
    }

    /// [`Staged::stage`] with the batch's working lists.
    fn stage_with(
        &mut self,
        scratch: &mut PartScratch,
        stored: &mut impl Stored,
        writes: &mut impl Writes<'a>,
        append: &'a PendingAppend,
    ) -> Result<AppendOutcome, Error> {
        if append.parts.is_empty() {
            return Err(Error::invalid("an append needs at least one part"));
        }
        let PartScratch {
            lifecycles,
            currents,
            first_versions,
            found,
        } = scratch;
        lifecycles.clear();
        currents.clear();
        first_versions.clear();
        for part in &append.parts {
            let lifecycle = stored.lifecycle(part.stream.as_str())?;
            if lifecycle.tombstoned {
                return Err(Error::StreamDeleted {
                    stream: part.stream.clone(),
                });
            }
            lifecycles.push(lifecycle);
        }
        if let Some(original) = self.earlier_outcome(stored, append, found)? {
            return Ok(original);
        }
        for (part, lifecycle) in append.parts.iter().zip(lifecycles.iter()) {
            let stream = part.stream.as_str();
            let current = match self.heads.get(stream) {
                Some(&version) => Some(version),
                None => stored.version(stream)?,
            };
            // Expectations see what readers see (a soft-deleted stream has
            // no version); numbering goes on after the last stored version.
            let visible = lifecycle.visible_version(current);
            if !part.expected.is_satisfied_by(visible) {
                return Err(Error::WrongExpectedVersion {
                    stream: part.stream.clone(),
                    expected: part.expected,
                    current: visible,
                });
            }
            currents.push(current);
        }
        if let Some(condition) = &append.condition {
            if let Some(position) = self.first_match(stored, condition)? {
                return Err(Error::AppendConditionFailed { position });
            }
        }
        first_versions.extend(currents.iter().map(|c| c.map_or(0, |v| v + 1)));
        let first_position = self.counters.head.map_or(0, |h| h.0 + 1);
        writes.stage(append, first_versions, Position(first_position))?;
        let mut position = first_position;
        let mut streams = Vec::with_capacity(append.parts.len());
        for ((part, &first_version), current) in append
            .parts
            .iter()
            .zip(first_versions.iter())
            .zip(currents.iter())
        {
            let stream = part.stream.as_str();
            for (i, event) in part.events.iter().enumerate() {
                let at = Position(position);
                self.ids
                    .insert(event.id, (stream, first_version + i as u64, at));
                self.events.push(StagedEvent {
                    position: at,
                    event_type: &event.event_type,
                    tags: &event.tags,
                });
                position += 1;
            }
            let last_version = first_version + part.events.len() as u64 - 1;
            if current.is_none() {
                self.counters.stream_count += 1;
            }
            self.heads.insert(stream, last_version);
            streams.push(StreamVersion {
                stream: part.stream.clone(),
                version: last_version,
            });
        }
        let last_position = Position(position - 1);
        self.counters.head = Some(last_position);
        self.counters.event_count += position - first_position;
        Ok(AppendOutcome {
            position: last_position,
            streams,
        })
    }

    /// The first event after the condition's `after` that matches its query:
    /// a stored one, else one staged earlier in this batch (all of which
    /// come after every stored event).
    fn first_match(
        &mut self,
        stored: &mut impl Stored,
        condition: &AppendCondition,
    ) -> Result<Option<Position>, Error> {
        let query = &condition.fail_if_events_match;
        if let Some(position) = stored.first_match(query, condition.after)? {
            return Ok(Some(position));
        }
        self.names.catch_up(&self.events);
        if !query.items.is_empty() && query.items.iter().all(|item| self.names.rule_out(item)) {
            return Ok(None);
        }
        Ok(self
            .events
            .iter()
            .filter(|e| condition.after.is_none_or(|after| e.position > after))
            .find(|e| query.matches(e.event_type, e.tags))
            .map(|e| e.position))
    }

    /// The idempotency check: `Some` with the original outcome when the ids
    /// of every part are already stored consecutively, in order, in the
    /// part's stream; `DuplicateEventId` when some parts are and others not.
    fn earlier_outcome(
        &self,
        stored: &mut impl Stored,
        append: &PendingAppend,
        found: &mut Vec<Option<(Version, Position)>>,
    ) -> Result<Option<AppendOutcome>, Error> {
        found.clear();
        for part in &append.parts {
            found.push(self.earlier_result(stored, part)?);
        }
        if found.iter().all(Option::is_none) {
            return Ok(None);
        }
        if found.iter().any(Option::is_none) {
            // Some parts stored and others not: the stored ones are the duplicates.
            let (part, _) = append
                .parts
                .iter()
                .zip(found.iter())
                .find(|(_, f)| f.is_some())
                .expect("some part was found stored: checked above");
            return Err(Error::DuplicateEventId {
                id: part.events[0].id,
            });
        }
        let mut streams = Vec::with_capacity(found.len());
        let mut position = Position(0);
        for (part, &(version, last)) in append.parts.iter().zip(found.iter().flatten()) {
            position = position.max(last);
            streams.push(StreamVersion {
                stream: part.stream.clone(),
                version,
            });
        }
        Ok(Some(AppendOutcome { position, streams }))
    }

    /// The idempotency check of one part: `Some` with its last event's
    /// version and position when every id is stored consecutively, in
    /// order, in its stream.
    fn earlier_result(
        &self,
        stored: &mut impl Stored,
        part: &PendingPart,
    ) -> Result<Option<(Version, Position)>, Error> {
        let Some(first) = part.events.first() else {
            return Err(Error::invalid("an append needs at least one event"));
        };
        let Some(origin) = self.location(stored, &first.id)?.map(|l| l.version) else {
            for event in &part.events[1..] {
                if self.location(stored, &event.id)?.is_some() {
                    return Err(Error::DuplicateEventId { id: event.id });
                }
            }
            return Ok(None);
        };
        let stream = part.stream.as_str();
        let mut last = None;
        for (i, event) in part.events.iter().enumerate() {
            last = match self.location(stored, &event.id)? {
                Some(found)
                    if found.stream == stream
                        && Some(found.version) == origin.checked_add(i as u64) =>
                {
                    Some((found.version, found.position))
                }
                Some(_) => return Err(Error::DuplicateEventId { id: event.id }),
                // Part of the append is stored and part is not: the stored part is the duplicate.
                None => return Err(Error::DuplicateEventId { id: first.id }),
            };
        }
        Ok(last)
    }

    /// Where `id` is, staged by this batch or stored before it.
    fn location<'s>(
        &'s self,
        stored: &'s mut impl Stored,
        id: &EventId,
    ) -> Result<Option<Location<'s>>, Error> {
        if let Some(&(stream, version, position)) = self.ids.get(id) {
            return Ok(Some(Location {
                stream,
                version,
                position,
            }));
        }
        stored.location(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_core::{AppendResult, EventData, ExpectedVersion, QueryItem, StreamId};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Appends to this stream fail in [`Rows::stage`], as an encoding failure would.
    const POISON: &str = "poison";
    const STREAMS: [&str; 3] = ["a", "b", POISON];

    /// A backend's committed state, in memory.
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Memory {
        counters: Counters,
        versions: HashMap<String, Version>,
        ids: HashMap<EventId, (String, Version, Position)>,
        /// Every committed event, in position order.
        log: Vec<(EventId, String, Version, Position)>,
        /// The type and tags of every committed event, in position order.
        kinds: Vec<(String, Vec<String>)>,
    }

    impl Stored for Memory {
        fn version(&mut self, stream: &str) -> Result<Option<Version>, Error> {
            Ok(self.versions.get(stream).copied())
        }

        fn location(&mut self, id: &EventId) -> Result<Option<Location<'_>>, Error> {
            Ok(self
                .ids
                .get(id)
                .map(|(stream, version, position)| Location {
                    stream,
                    version: *version,
                    position: *position,
                }))
        }

        fn first_match(
            &mut self,
            query: &Query,
            after: Option<Position>,
        ) -> Result<Option<Position>, Error> {
            let from = after.map_or(0, |a| a.0 as usize + 1);
            Ok(self
                .kinds
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, (event_type, tags))| query.matches(event_type, tags))
                .map(|(i, _)| Position(i as u64)))
        }
    }

    /// The rows a batch staged, in the order staged.
    #[derive(Debug, Default)]
    struct Rows<'a> {
        rows: Vec<(EventId, &'a str, Version, Position, &'a EventData)>,
    }

    impl<'a> Writes<'a> for Rows<'a> {
        fn stage(
            &mut self,
            append: &'a PendingAppend,
            first_versions: &[Version],
            first_position: Position,
        ) -> Result<(), Error> {
            if append.parts.iter().any(|p| p.stream.as_str() == POISON) {
                return Err(Error::Storage("cannot encode".into()));
            }
            let mut position = first_position;
            for (part, first_version) in append.parts.iter().zip(first_versions) {
                for (i, event) in part.events.iter().enumerate() {
                    self.rows.push((
                        event.id,
                        part.stream.as_str(),
                        first_version + i as u64,
                        position,
                        event,
                    ));
                    position = position.next();
                }
            }
            Ok(())
        }
    }

    impl Memory {
        /// Stages `batch` and commits it as a backend would; the results as
        /// `append_events` gives them.
        fn append(&mut self, batch: &[PendingAppend]) -> Vec<Result<AppendResult, Error>> {
            self.outcomes(batch)
                .into_iter()
                .map(|r| r.map(|o| o.single()))
                .collect()
        }

        /// Stages `batch` and commits it as a backend would; the results.
        fn outcomes(&mut self, batch: &[PendingAppend]) -> Vec<Result<AppendOutcome, Error>> {
            let mut rows = Rows::default();
            let staged = stage_batch(batch, self.counters, &mut *self, &mut rows);
            if staged.written() {
                for &(id, stream, version, position, event) in &rows.rows {
                    self.ids.insert(id, (stream.to_owned(), version, position));
                    self.log.push((id, stream.to_owned(), version, position));
                    self.kinds
                        .push((event.event_type.clone(), event.tags.clone()));
                }
                for (&stream, &version) in &staged.heads {
                    self.versions.insert(stream.to_owned(), version);
                }
            }
            self.counters = staged.counters;
            staged.results
        }
    }

    fn id(n: u8) -> EventId {
        EventId::from_bytes([n; 16])
    }

    fn part(stream: &str, expected: ExpectedVersion, ids: &[u8]) -> PendingPart {
        PendingPart {
            stream: StreamId::new(stream).unwrap(),
            expected,
            events: ids
                .iter()
                .map(|&n| EventData {
                    id: id(n),
                    event_type: "T".to_owned(),
                    data: vec![n],
                    metadata: Vec::new(),
                    content_type: gater_core::CONTENT_TYPE_JSON.to_owned(),
                    tags: vec![format!("n:{n}")],
                })
                .collect(),
            encoded: Vec::new(),
        }
    }

    fn append(stream: &str, expected: ExpectedVersion, ids: &[u8]) -> PendingAppend {
        PendingAppend {
            parts: vec![part(stream, expected, ids)],
            condition: None,
        }
    }

    fn ok(version: Version, position: u64) -> Result<AppendResult, Error> {
        Ok(AppendResult {
            version,
            position: Position(position),
        })
    }

    fn duplicate(n: u8) -> Result<AppendResult, Error> {
        Err(Error::DuplicateEventId { id: id(n) })
    }

    /// A failed expectation of stream `a`, the stream most cases append to.
    fn wrong(expected: ExpectedVersion, current: Option<Version>) -> Result<AppendResult, Error> {
        wrong_in("a", expected, current)
    }

    fn wrong_in(
        stream: &str,
        expected: ExpectedVersion,
        current: Option<Version>,
    ) -> Result<AppendResult, Error> {
        Err(Error::WrongExpectedVersion {
            stream: StreamId::new(stream).unwrap(),
            expected,
            current,
        })
    }

    /// Commits `before` (one batch each), then stages `batch` as one batch
    /// and compares its results with `expected`.
    fn check(
        before: &[Vec<PendingAppend>],
        batch: &[PendingAppend],
        expected: &[Result<AppendResult, Error>],
    ) {
        let mut memory = Memory::default();
        for earlier in before {
            memory.append(earlier);
        }
        assert_eq!(memory.append(batch), expected);
    }

    use ExpectedVersion::{Any, Exact, NoStream, StreamExists};

    #[test]
    fn appends_of_one_batch_see_what_earlier_ones_staged() {
        check(
            &[],
            &[
                append("a", NoStream, &[1, 2]),
                append("b", NoStream, &[3]),
                append("a", Exact(1), &[4]),
                append("a", NoStream, &[5]),
                append("b", StreamExists, &[6]),
            ],
            &[
                ok(1, 1),
                ok(0, 2),
                ok(2, 3),
                wrong(NoStream, Some(2)),
                ok(1, 4),
            ],
        );
    }

    #[test]
    fn positions_and_versions_continue_after_the_stored_ones() {
        check(
            &[vec![append("a", Any, &[1, 2]), append("b", Any, &[3])]],
            &[append("a", Exact(1), &[4]), append("c", Exact(0), &[5])],
            &[ok(2, 3), wrong_in("c", Exact(0), None)],
        );
    }

    #[test]
    fn a_retry_in_the_same_batch_answers_the_original_whatever_it_expects() {
        check(
            &[],
            &[
                append("a", NoStream, &[1, 2]),
                append("a", NoStream, &[1, 2]),
                append("a", Exact(7), &[1, 2]),
                append("a", Exact(1), &[3]),
            ],
            &[ok(1, 1), ok(1, 1), ok(1, 1), ok(2, 2)],
        );
    }

    #[test]
    fn a_retry_of_a_stored_append_answers_the_original() {
        check(
            &[
                vec![append("a", Any, &[1, 2])],
                vec![append("b", Any, &[3])],
            ],
            &[append("a", NoStream, &[1, 2]), append("b", Exact(5), &[3])],
            &[ok(1, 1), ok(0, 2)],
        );
    }

    #[test]
    fn a_retry_of_a_consecutive_part_answers_its_own_last_event() {
        check(
            &[vec![append("a", Any, &[1, 2, 3])]],
            &[
                append("a", Any, &[2, 3]),
                append("a", Any, &[1, 2]),
                append("a", Any, &[2]),
            ],
            &[ok(2, 2), ok(1, 1), ok(1, 1)],
        );
    }

    #[test]
    fn ids_stored_elsewhere_out_of_order_or_in_part_are_duplicates() {
        check(
            &[vec![append("a", Any, &[1, 2, 3])]],
            &[
                // In another stream.
                append("b", Any, &[1, 2]),
                // Out of order.
                append("a", Any, &[2, 1]),
                // Not consecutive.
                append("a", Any, &[1, 3]),
                // Stored, then new: the stored part is the duplicate.
                append("a", Any, &[3, 9]),
                // New, then stored: the stored id is the duplicate.
                append("a", Any, &[9, 2]),
                // Staged earlier in the batch, retried in another stream.
                append("a", Any, &[4]),
                append("b", Any, &[4]),
            ],
            &[
                duplicate(1),
                duplicate(1),
                duplicate(3),
                duplicate(3),
                duplicate(2),
                ok(3, 3),
                duplicate(4),
            ],
        );
    }

    #[test]
    fn an_empty_append_is_invalid() {
        check(
            &[],
            &[append("a", Any, &[]), append("a", NoStream, &[1])],
            &[
                Err(Error::invalid("an append needs at least one event")),
                ok(0, 0),
            ],
        );
    }

    #[test]
    fn a_refused_append_stages_nothing() {
        let batch = [
            append("a", Exact(3), &[1]),
            append(POISON, Any, &[2]),
            append("a", NoStream, &[1, 2]),
        ];
        let mut memory = Memory::default();
        let results = memory.append(&batch);
        assert_eq!(results[0], wrong(Exact(3), None));
        assert_eq!(results[1], Err(Error::Storage("cannot encode".into())));
        // Neither refused append took an id, a version, a position or a stream.
        assert_eq!(results[2], ok(1, 1));
        assert_eq!(memory.counters.stream_count, 1);
        assert_eq!(memory.counters.event_count, 2);
        assert_eq!(memory.versions.get(POISON), None);
    }

    #[test]
    fn a_batch_with_nothing_accepted_writes_nothing() {
        let mut memory = Memory::default();
        memory.append(&[append("a", Any, &[1])]);
        let before = memory.clone();
        let batch = [append("a", Any, &[1]), append("b", Exact(0), &[2])];
        let mut rows = Rows::default();
        let staged = stage_batch(&batch, memory.counters, &mut memory, &mut rows);
        assert!(!staged.written());
        assert!(rows.rows.is_empty());
        assert_eq!(staged.counters, before.counters);
        let results: Vec<_> = staged
            .results
            .into_iter()
            .map(|r| r.map(|o| o.single()))
            .collect();
        assert_eq!(results, [ok(0, 0), wrong_in("b", Exact(0), None)]);
    }

    fn tag_query(tag: &str) -> Query {
        Query {
            items: vec![QueryItem {
                types: vec![],
                tags: vec![tag.to_owned()],
            }],
        }
    }

    fn conditional(stream: &str, ids: &[u8], query: Query, after: Option<u64>) -> PendingAppend {
        PendingAppend {
            parts: vec![part(stream, Any, ids)],
            condition: Some(AppendCondition {
                fail_if_events_match: query,
                after: after.map(Position),
            }),
        }
    }

    fn failed(position: u64) -> Result<AppendResult, Error> {
        Err(Error::AppendConditionFailed {
            position: Position(position),
        })
    }

    #[test]
    fn a_condition_sees_stored_events_and_those_staged_earlier_in_the_batch() {
        check(
            &[vec![append("a", Any, &[1, 2])]],
            &[
                // Stored at position 1.
                conditional("u", &[10], tag_query("n:2"), None),
                // Only events after position 1 count: none matches yet.
                conditional("u", &[11], tag_query("n:2"), Some(1)),
                // Staged at position 3 by the append before.
                conditional("v", &[12], tag_query("n:11"), Some(1)),
                // Nothing carries the tag.
                conditional("v", &[13], tag_query("n:99"), None),
                // An empty query matches any event after `after`.
                conditional("w", &[14], Query::all(), Some(4)),
                conditional("w", &[15], Query::all(), Some(3)),
            ],
            &[
                failed(1),
                ok(0, 2),
                failed(2),
                ok(0, 3),
                ok(0, 4),
                failed(4),
            ],
        );
    }

    #[test]
    fn a_retried_conditional_append_answers_the_original_instead_of_failing_on_itself() {
        check(
            &[vec![conditional("u", &[1], tag_query("n:1"), None)]],
            &[conditional("u", &[1], tag_query("n:1"), None)],
            &[ok(0, 0)],
        );
    }

    fn multi(parts: Vec<PendingPart>) -> PendingAppend {
        PendingAppend {
            parts,
            condition: None,
        }
    }

    #[test]
    fn a_multi_part_append_is_all_or_nothing_and_positions_follow_part_order() {
        let mut memory = Memory::default();
        let results = memory.outcomes(&[
            multi(vec![
                part("a", NoStream, &[1, 2]),
                part("b", Exact(5), &[3]),
            ]),
            multi(vec![
                part("b", NoStream, &[4]),
                part("a", NoStream, &[5, 6]),
            ]),
        ]);
        assert_eq!(
            results[0],
            Err(Error::WrongExpectedVersion {
                stream: StreamId::new("b").unwrap(),
                expected: Exact(5),
                current: None,
            })
        );
        let outcome = results[1].clone().unwrap();
        assert_eq!(outcome.position, Position(2));
        let versions: Vec<(&str, Version)> = outcome
            .streams
            .iter()
            .map(|s| (s.stream.as_str(), s.version))
            .collect();
        assert_eq!(versions, [("b", 0), ("a", 1)]);
        let order: Vec<EventId> = memory.log.iter().map(|e| e.0).collect();
        assert_eq!(order, [id(4), id(5), id(6)]);
    }

    #[test]
    fn a_retried_multi_part_append_answers_the_original_and_a_partial_one_is_a_duplicate() {
        let mut memory = Memory::default();
        let first = memory.outcomes(&[multi(vec![
            part("a", NoStream, &[1, 2]),
            part("b", NoStream, &[3]),
        ])]);
        let again = memory.outcomes(&[
            multi(vec![
                part("a", NoStream, &[1, 2]),
                part("b", NoStream, &[3]),
            ]),
            multi(vec![part("a", Any, &[1, 2]), part("c", Any, &[9])]),
        ]);
        assert_eq!(again[0], first[0]);
        assert_eq!(again[1], Err(Error::DuplicateEventId { id: id(1) }));
        assert_eq!(memory.log.len(), 3);
    }

    /// One append of a generated batch.
    #[derive(Clone, Debug)]
    enum Op {
        /// Events with these ids (distinct, as the engine guarantees).
        New {
            stream: usize,
            expected: ExpectedVersion,
            ids: Vec<u8>,
        },
        /// A part of an earlier op's ids sent again, maybe to another stream.
        Resend {
            earlier: usize,
            stream: usize,
            expected: ExpectedVersion,
            skip: usize,
            take: usize,
        },
        /// New events on the condition that none matches `query` after `after`.
        Conditional {
            stream: usize,
            ids: Vec<u8>,
            query: Query,
            after: Option<u64>,
        },
    }

    fn expected_version() -> impl Strategy<Value = ExpectedVersion> {
        prop_oneof![
            Just(Any),
            Just(NoStream),
            Just(StreamExists),
            (0u64..4).prop_map(Exact),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few ids, so that new appends collide with earlier ones too.
        let ids = prop::collection::btree_set(0u8..12, 1..4)
            .prop_map(|ids| ids.into_iter().collect::<Vec<u8>>())
            .prop_shuffle();
        prop_oneof![
            (0..STREAMS.len(), expected_version(), ids.clone()).prop_map(
                |(stream, expected, ids)| {
                    Op::New {
                        stream,
                        expected,
                        ids,
                    }
                }
            ),
            (
                any::<usize>(),
                0..STREAMS.len(),
                expected_version(),
                0..3usize,
                1..4usize
            )
                .prop_map(|(earlier, stream, expected, skip, take)| Op::Resend {
                    earlier,
                    stream,
                    expected,
                    skip,
                    take,
                }),
            (
                0..STREAMS.len(),
                ids.clone(),
                0u8..12,
                prop_oneof![Just("T"), Just("U")],
                prop::option::of(0u64..10),
            )
                .prop_map(|(stream, ids, tag, event_type, after)| {
                    // A tag alone, a type alone, or both in one item.
                    let query = match tag % 3 {
                        0 => tag_query(&format!("n:{tag}")),
                        1 => Query::item(vec![event_type.to_owned()], Vec::new()),
                        _ => Query::item(vec![event_type.to_owned()], vec![format!("n:{tag}")]),
                    };
                    Op::Conditional {
                        stream,
                        ids,
                        query,
                        after,
                    }
                }),
        ]
    }

    /// Turns ops into appends; a resend refers to any earlier op of any batch.
    fn appends(ops: &[Op]) -> Vec<PendingAppend> {
        let mut ids: Vec<Vec<u8>> = Vec::new();
        let mut appends = Vec::new();
        for op in ops {
            let (stream, expected, these) = match op {
                Op::New {
                    stream,
                    expected,
                    ids,
                } => (*stream, *expected, ids.clone()),
                Op::Resend {
                    earlier,
                    stream,
                    expected,
                    skip,
                    take,
                } => {
                    let Some(original) = ids.get(earlier % ids.len().max(1)) else {
                        continue;
                    };
                    let skip = (*skip).min(original.len() - 1);
                    let part = original[skip..].iter().take(*take).copied().collect();
                    (*stream, *expected, part)
                }
                Op::Conditional {
                    stream,
                    ids: these,
                    query,
                    after,
                } => {
                    appends.push(conditional(STREAMS[*stream], these, query.clone(), *after));
                    ids.push(these.clone());
                    continue;
                }
            };
            appends.push(append(STREAMS[stream], expected, &these));
            ids.push(these);
        }
        appends
    }

    fn batches() -> impl Strategy<Value = (Vec<PendingAppend>, usize)> {
        (
            prop::collection::vec(op(), 1..16),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(ops, split)| {
                let appends = appends(&ops);
                let split = split.index(appends.len() + 1);
                (appends, split)
            })
    }

    proptest! {
        /// The within-batch accounting is exactly the committed one: a batch
        /// answers and stores what its appends do one batch each.
        #[test]
        fn a_batch_answers_like_one_append_per_batch((appends, split) in batches()) {
            let (before, batch) = appends.split_at(split);
            let mut together = Memory::default();
            together.append(before);
            let mut alone = together.clone();
            let results = together.append(batch);
            let one_by_one: Vec<_> = batch
                .iter()
                .flat_map(|a| alone.append(std::slice::from_ref(a)))
                .collect();
            prop_assert_eq!(results, one_by_one);
            prop_assert_eq!(together, alone);
        }

        /// Sending every append of a batch again, later in the same batch,
        /// answers each accepted one with its original result and stages nothing more.
        #[test]
        fn retries_in_the_same_batch_answer_the_originals(
            (appends, _) in batches(),
            expected in prop::collection::vec(expected_version(), 16),
        ) {
            let mut batch = appends.clone();
            for (append, &expected) in appends.iter().zip(&expected) {
                let mut retry = append.clone();
                retry.parts[0].expected = expected;
                batch.push(retry);
            }
            let mut alone = Memory::default();
            let first = alone.append(&appends);
            let mut memory = Memory::default();
            let mut rows = Rows::default();
            let staged = stage_batch(&batch, memory.counters, &mut memory, &mut rows);
            let (originals, retries) = staged.results.split_at(appends.len());
            let originals: Vec<_> = originals.iter().cloned().map(|r| r.map(|o| o.single())).collect();
            let retries: Vec<_> = retries.iter().cloned().map(|r| r.map(|o| o.single())).collect();
            prop_assert_eq!(&originals[..], &first[..]);
            let mut accepted = std::collections::HashSet::new();
            for ((original, retry), append) in originals.iter().zip(&retries).zip(&appends) {
                if original.is_ok() {
                    prop_assert_eq!(original, retry);
                    accepted.extend(append.parts[0].events.iter().map(|e| e.id));
                }
            }
            // The originals staged what they stage alone; a retry of an
            // accepted append staged none of its events again.
            let (staged_first, staged_by_retries) = rows.rows.split_at(alone.log.len());
            for (row, logged) in staged_first.iter().zip(&alone.log) {
                prop_assert_eq!((row.0, row.1, row.2, row.3), (logged.0, logged.1.as_str(), logged.2, logged.3));
            }
            for row in staged_by_retries {
                prop_assert!(!accepted.contains(&row.0), "{:?} staged again", row.0);
            }
        }

        /// Staged rows take every position once, in order from the head, and
        /// each stream's versions in order from its last; no id is staged twice.
        #[test]
        fn staged_rows_are_contiguous_and_ids_unique((appends, split) in batches()) {
            let (before, batch) = appends.split_at(split);
            let mut memory = Memory::default();
            memory.append(before);
            let counters = memory.counters;
            let mut next_version: HashMap<String, Version> = memory
                .versions
                .iter()
                .map(|(stream, version)| (stream.clone(), version + 1))
                .collect();
            let mut rows = Rows::default();
            let staged = stage_batch(batch, counters, &mut memory, &mut rows);
            let first_position = counters.head.map_or(0, |h| h.0 + 1);
            let mut ids = std::collections::HashSet::new();
            for (i, &(id, stream, version, position, _)) in rows.rows.iter().enumerate() {
                prop_assert_eq!(position, Position(first_position + i as u64));
                let next = next_version.entry(stream.to_owned()).or_insert(0);
                prop_assert_eq!(version, *next);
                *next += 1;
                prop_assert!(!memory.ids.contains_key(&id), "{:?} was stored already", id);
                prop_assert!(ids.insert(id), "{:?} staged twice", id);
            }
            prop_assert_eq!(staged.counters.event_count, counters.event_count + rows.rows.len() as u64);
            for (stream, version) in &staged.heads {
                prop_assert_eq!(next_version.get(*stream), Some(&(version + 1)));
            }
        }
    }
}
