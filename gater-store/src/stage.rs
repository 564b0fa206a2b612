//! Staging an append batch, the same for every backend: each append is
//! checked in order against what the store held before the batch plus what
//! earlier appends of the batch staged, and each accepted new append is given
//! its versions and positions.
//!
//! An append first passes the idempotency check: when its ids are already
//! stored (or staged) consecutively, in order, in its stream, it answers the
//! original result (the version and position of its own last event) and
//! writes nothing, whatever its expected version; ids stored elsewhere, out
//! of order or only in part are a `DuplicateEventId`. Then its expected
//! version is checked against the stream's current version. An accepted new
//! append takes the versions after its stream's and the positions after the
//! batch's last one.
//!
//! A backend supplies how it reads the state before the batch ([`Stored`])
//! and where it puts an accepted append's rows ([`Writes`]). What this module
//! does not do: read or write storage, or commit. The backend commits the
//! [`Staged`] outcome in one atomic write, or nothing when no append was
//! accepted.

use std::collections::HashMap;

use gater_core::{AppendResult, Error, EventId, Position, Version};

use crate::backend::{Counters, PendingAppend};

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

    /// Where the event `id` is stored; `None` when it is not.
    fn location(&mut self, id: &EventId) -> Result<Option<Location<'_>>, Error>;
}

/// Where a backend puts the rows of the appends the batch accepts.
pub(crate) trait Writes<'a> {
    /// Stages the rows of `append`, accepted and new: its events take the
    /// versions from `first_version` and the positions from
    /// `first_position` on. An `Err` fails this append alone, so it must
    /// leave nothing of the append staged.
    fn stage(
        &mut self,
        append: &'a PendingAppend,
        first_version: Version,
        first_position: Position,
    ) -> Result<(), Error>;
}

/// What staging a batch decided; it borrows stream ids from the batch.
#[derive(Debug)]
pub(crate) struct Staged<'a> {
    /// One result per append, in the order given.
    pub(crate) results: Vec<Result<AppendResult, Error>>,
    /// The store's counters once the batch is committed.
    pub(crate) counters: Counters,
    /// The new version of every stream the batch appends to.
    pub(crate) heads: HashMap<&'a str, Version>,
    /// Where the batch puts each new event.
    ids: HashMap<EventId, (&'a str, Version, Position)>,
}

impl Staged<'_> {
    /// Whether any append was accepted as new, so there is something to commit.
    pub(crate) fn written(&self) -> bool {
        !self.heads.is_empty()
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
    let events = appends.iter().map(|a| a.events.len()).sum();
    let mut staged = Staged {
        results: Vec::with_capacity(appends.len()),
        counters,
        heads: HashMap::with_capacity(appends.len()),
        ids: HashMap::with_capacity(events),
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
    ) -> Result<AppendResult, Error> {
        if let Some(original) = self.earlier_result(stored, append)? {
            return Ok(original);
        }
        let stream = append.stream.as_str();
        let current = match self.heads.get(stream) {
            Some(&version) => Some(version),
            None => stored.version(stream)?,
        };
        if !append.expected.is_satisfied_by(current) {
            return Err(Error::WrongExpectedVersion {
                expected: append.expected,
                current,
            });
        }
        let first_version = current.map_or(0, |v| v + 1);
        let first_position = self.counters.head.map_or(0, |h| h.0 + 1);
        writes.stage(append, first_version, Position(first_position))?;
        for (i, event) in append.events.iter().enumerate() {
            let at = (
                stream,
                first_version + i as u64,
                Position(first_position + i as u64),
            );
            self.ids.insert(event.id, at);
        }
        let count = append.events.len() as u64;
        let last_version = first_version + count - 1;
        let last_position = Position(first_position + count - 1);
        if current.is_none() {
            self.counters.stream_count += 1;
        }
        self.heads.insert(stream, last_version);
        self.counters.head = Some(last_position);
        self.counters.event_count += count;
        Ok(AppendResult {
            version: last_version,
            position: last_position,
        })
    }

    /// The idempotency check: `Some` with the original result when every id
    /// of `append` is already stored consecutively, in order, in its stream.
    fn earlier_result(
        &self,
        stored: &mut impl Stored,
        append: &PendingAppend,
    ) -> Result<Option<AppendResult>, Error> {
        let Some(first) = append.events.first() else {
            return Err(Error::invalid("an append needs at least one event"));
        };
        let Some(origin) = self.location(stored, &first.id)?.map(|l| l.version) else {
            for event in &append.events[1..] {
                if self.location(stored, &event.id)?.is_some() {
                    return Err(Error::DuplicateEventId { id: event.id });
                }
            }
            return Ok(None);
        };
        let stream = append.stream.as_str();
        let mut last = None;
        for (i, event) in append.events.iter().enumerate() {
            last = match self.location(stored, &event.id)? {
                Some(found)
                    if found.stream == stream
                        && Some(found.version) == origin.checked_add(i as u64) =>
                {
                    Some(AppendResult {
                        version: found.version,
                        position: found.position,
                    })
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
    use gater_core::{EventData, ExpectedVersion, StreamId};
    use proptest::prelude::*;

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
    }

    /// The rows a batch staged, in the order staged.
    #[derive(Debug, Default)]
    struct Rows<'a> {
        rows: Vec<(EventId, &'a str, Version, Position)>,
    }

    impl<'a> Writes<'a> for Rows<'a> {
        fn stage(
            &mut self,
            append: &'a PendingAppend,
            first_version: Version,
            first_position: Position,
        ) -> Result<(), Error> {
            if append.stream.as_str() == POISON {
                return Err(Error::Storage("cannot encode".into()));
            }
            for (i, event) in append.events.iter().enumerate() {
                self.rows.push((
                    event.id,
                    append.stream.as_str(),
                    first_version + i as u64,
                    Position(first_position.0 + i as u64),
                ));
            }
            Ok(())
        }
    }

    impl Memory {
        /// Stages `batch` and commits it as a backend would; the results.
        fn append(&mut self, batch: &[PendingAppend]) -> Vec<Result<AppendResult, Error>> {
            let mut rows = Rows::default();
            let staged = stage_batch(batch, self.counters, &mut *self, &mut rows);
            if staged.written() {
                for &(id, stream, version, position) in &rows.rows {
                    self.ids.insert(id, (stream.to_owned(), version, position));
                    self.log.push((id, stream.to_owned(), version, position));
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

    fn append(stream: &str, expected: ExpectedVersion, ids: &[u8]) -> PendingAppend {
        PendingAppend {
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
                })
                .collect(),
            encoded: Vec::new(),
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

    fn wrong(expected: ExpectedVersion, current: Option<Version>) -> Result<AppendResult, Error> {
        Err(Error::WrongExpectedVersion { expected, current })
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
            &[ok(2, 3), wrong(Exact(0), None)],
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
        assert_eq!(staged.results, [ok(0, 0), wrong(Exact(0), None)]);
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
            (0..STREAMS.len(), expected_version(), ids).prop_map(|(stream, expected, ids)| {
                Op::New {
                    stream,
                    expected,
                    ids,
                }
            }),
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
                batch.push(PendingAppend { expected, ..append.clone() });
            }
            let mut alone = Memory::default();
            let first = alone.append(&appends);
            let mut memory = Memory::default();
            let mut rows = Rows::default();
            let staged = stage_batch(&batch, memory.counters, &mut memory, &mut rows);
            let (originals, retries) = staged.results.split_at(appends.len());
            prop_assert_eq!(originals, &first[..]);
            let mut accepted = std::collections::HashSet::new();
            for ((original, retry), append) in originals.iter().zip(retries).zip(&appends) {
                if original.is_ok() {
                    prop_assert_eq!(original, retry);
                    accepted.extend(append.events.iter().map(|e| e.id));
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
            for (i, &(id, stream, version, position)) in rows.rows.iter().enumerate() {
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
