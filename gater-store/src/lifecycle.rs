//! Stream lifecycle in the engine: how a change (delete, tombstone,
//! truncate, retention) applies to a stream's stored state, and how reads
//! leave out what a stream no longer shows.
//!
//! A backend stores each stream's [`StreamLifecycle`] and applies a
//! [`LifecycleChange`] with [`apply`] in step with its appends (so an append
//! and a delete of one stream are ordered). The engine filters every read
//! (a stream, the global log, queries, subscription catch-up) through a
//! [`View`], the one place that asks [`StreamLifecycle::shows`]; reads of a
//! store with nothing hidden go straight to the backend.
//!
//! What it does not do: reclaim space (a backend's `compact`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gater_core::{
    Direction, Error, ExpectedVersion, Position, Query, RecordedEvent, Retention, StreamId,
    StreamLifecycle, Version,
};

use crate::backend::BackendStore;

/// The wall clock that retention by age is measured with: the system's,
/// moved forward by what [`Clock::advance`] added (tests age events
/// without sleeping). Clones share the offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_us: Arc<AtomicU64>,
}

impl Clock {
    /// Microseconds since the epoch, as retention sees them.
    pub fn now_us(&self) -> u64 {
        crate::engine::now_us().saturating_add(self.offset_us.load(Ordering::Relaxed))
    }

    /// Moves this clock (and its clones) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.offset_us.fetch_add(by, Ordering::Relaxed);
    }
}

/// Streams with a retention by age of their own that one background age
/// check looks at (see [`View::age_mark`]).
pub(crate) const AGE_CHECK_STREAMS_MAX: usize = 1_024;

/// Streams whose hidden events the store status counts (see [`View::hidden`]).
pub(crate) const STATUS_STREAMS_MAX: usize = 4_096;
/// Streams listed per page while the store status counts them.
const STATUS_STREAMS_PAGE: u32 = 1_024;

/// What readers no longer see of a store, as its status counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hidden {
    /// Events hidden (or compacted away after being hidden).
    pub(crate) events: u64,
    /// Streams that readers see as not existing (soft-deleted, tombstoned).
    pub(crate) streams: u64,
}

/// The lifecycle state of every stream that has some, by stream id.
pub(crate) type Lifecycles = HashMap<String, StreamLifecycle>;

/// One change of a stream's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LifecycleChange {
    /// Soft delete, if the expectation holds.
    Delete(ExpectedVersion),
    /// Hard delete (tombstone), if the expectation holds.
    Tombstone(ExpectedVersion),
    /// Hide versions before this one.
    Truncate(Version),
    /// Set the stream's own retention.
    Retention(Retention),
}

/// The state of `stream` after `change`, given its state `current` and the
/// version of its last stored event `last`.
///
/// A tombstoned stream refuses every change with `StreamDeleted`; delete
/// and tombstone check their expectation against the version readers see
/// (as appends do); a truncation point only moves forward.
pub(crate) fn apply(
    stream: &StreamId,
    current: StreamLifecycle,
    last: Option<Version>,
    change: LifecycleChange,
) -> Result<StreamLifecycle, Error> {
    if current.tombstoned {
        return Err(Error::StreamDeleted {
            stream: stream.clone(),
        });
    }
    let check = |expected: ExpectedVersion| {
        let visible = current.visible_version(last);
        if expected.is_satisfied_by(visible) {
            Ok(())
        } else {
            Err(Error::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                current: visible,
            })
        }
    };
    let mut next = current;
    match change {
        LifecycleChange::Delete(expected) => {
            check(expected)?;
            if let Some(last) = last {
                next.truncate_before = next.truncate_before.max(Some(last + 1));
            }
        }
        LifecycleChange::Tombstone(expected) => {
            check(expected)?;
            next.tombstoned = true;
            // The truncation point remembers how many versions the stream
            // had once compaction has removed them with its last key, so
            // status counts and numbering need no stored event.
            if let Some(last) = last {
                next.truncate_before = next.truncate_before.max(Some(last + 1));
            }
        }
        LifecycleChange::Truncate(before) => {
            // Past the last event it hides the whole stream, as a soft
            // delete does, and numbering goes on after the last event.
            let end = last.map_or(0, |last| last + 1);
            let before = before.min(end);
            if before > 0 {
                next.truncate_before = next.truncate_before.max(Some(before));
            }
        }
        LifecycleChange::Retention(retention) => next.retention = retention,
    }
    Ok(next)
}

/// The last version of a stream: stored, or (once compaction removed every
/// event of a soft-deleted stream) the one before its truncation point, so
/// numbering never starts over.
pub(crate) fn last_version(stored: Option<Version>, state: &StreamLifecycle) -> Option<Version> {
    let floor = state
        .truncate_before
        .and_then(|before| before.checked_sub(1));
    stored.max(floor)
}

/// What readers see of a store at one instant: its streams' lifecycle
/// states, its default retention and the time.
#[derive(Clone, Debug)]
pub(crate) struct View {
    lifecycles: Arc<Lifecycles>,
    default: Retention,
    now_us: u64,
}

/// Where a filtered read reads from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source<'a> {
    /// The global log.
    All,
    /// Events matching a query (with at least one item).
    Query(&'a Query),
    /// One stream's events, by version.
    Stream(&'a StreamId),
}

impl View {
    /// The view of `lifecycles` with the store's `default` retention at `now_us`.
    pub(crate) fn new(lifecycles: Arc<Lifecycles>, default: Retention, now_us: u64) -> View {
        View {
            lifecycles,
            default,
            now_us,
        }
    }

    /// Whether the view hides nothing anywhere.
    pub(crate) fn hides_nothing(&self) -> bool {
        self.lifecycles.is_empty() && self.default.is_none()
    }

    /// The state of `stream` (the default when it has none).
    pub(crate) fn lifecycle(&self, stream: &str) -> StreamLifecycle {
        self.lifecycles.get(stream).copied().unwrap_or_default()
    }

    /// `StreamDeleted` when `stream` is tombstoned.
    pub(crate) fn check_not_tombstoned(&self, stream: &StreamId) -> Result<(), Error> {
        if self.lifecycle(stream.as_str()).tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        Ok(())
    }

    /// Whether `event` shows; `lasts` caches stream versions read from `backend`.
    async fn shows(
        &self,
        backend: &dyn BackendStore,
        event: &RecordedEvent,
        lasts: &mut HashMap<String, Version>,
    ) -> Result<bool, Error> {
        let lifecycle = self.lifecycle(event.stream.as_str());
        let last = if lifecycle.retention.or(self.default).max_count.is_some() {
            match lasts.get(event.stream.as_str()) {
                Some(&last) => last,
                None => {
                    let last = backend.version(&event.stream).await?.unwrap_or(0);
                    lasts.insert(event.stream.as_str().to_owned(), last);
                    last
                }
            }
        } else {
            event.version
        };
        Ok(lifecycle.shows(
            self.default,
            last,
            event.version,
            event.created_us,
            self.now_us,
        ))
    }

    /// Up to `count` events of `source` from `from` (a position, or a
    /// version for a stream) in `direction` that the view shows, and where
    /// the read stopped: the position or version after (forward) or before
    /// (backward) the last event read, shown or not (`None`: the end).
    ///
    /// Hidden events are read past until the page is full or the source
    /// ends, so an empty answer means nothing more shows.
    pub(crate) async fn read(
        &self,
        backend: &dyn BackendStore,
        source: Source<'_>,
        from: u64,
        count: u32,
        direction: Direction,
    ) -> Result<(Vec<RecordedEvent>, Option<u64>), Error> {
        let mut shown = Vec::new();
        let mut lasts = HashMap::new();
        let mut cursor = from;
        loop {
            let raw = match source {
                Source::All => backend.read_all(Position(cursor), count, direction).await?,
                Source::Query(query) => {
                    backend
                        .read_query(query, Position(cursor), count, direction)
                        .await?
                }
                Source::Stream(stream) => {
                    backend
                        .read_stream(stream, cursor, count, direction)
                        .await?
                }
            };
            let Some(last) = raw.last() else {
                return Ok((shown, None));
            };
            let at = match source {
                Source::Stream(_) => last.version,
                Source::All | Source::Query(_) => last.position.0,
            };
            let next = match direction {
                Direction::Forward => at.checked_add(1),
                Direction::Backward => at.checked_sub(1),
            };
            let full = raw.len() >= count as usize;
            if self.hides_nothing() && shown.is_empty() && raw.len() <= count as usize {
                // Everything shows: the backend's page is the answer as it is.
                return Ok((raw, next));
            }
            for event in raw {
                if shown.len() == count as usize {
                    break;
                }
                if self.hides_nothing() || self.shows(backend, &event, &mut lasts).await? {
                    shown.push(event);
                }
            }
            match next {
                // A full page with hidden events in it: read on to fill it.
                Some(next) if full && shown.len() < count as usize => cursor = next,
                _ => return Ok((shown, next)),
            }
        }
    }

    /// The events of `events` that the view shows, in their order.
    pub(crate) async fn filter(
        &self,
        backend: &dyn BackendStore,
        events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if self.hides_nothing() {
            return Ok(events);
        }
        let mut lasts = HashMap::new();
        let mut shown = Vec::with_capacity(events.len());
        for event in events {
            if self.shows(backend, &event, &mut lasts).await? {
                shown.push(event);
            }
        }
        Ok(shown)
    }

    /// Whether retention by age applies anywhere: the store's default, or
    /// a stream's own.
    pub(crate) fn ages_out(&self) -> bool {
        self.default.max_age_s.is_some()
            || self
                .lifecycles
                .values()
                .any(|s| !s.tombstoned && s.retention.max_age_s.is_some())
    }

    /// How far retention by age reaches now: the position before which the
    /// store's default hides every event, plus, for each stream with a
    /// retention by age of its own (the first [`AGE_CHECK_STREAMS_MAX`]),
    /// the version before which it hides every event. Each is found by
    /// bisection over stored events (events are stamped in commit order),
    /// so it costs a few reads, and it only grows as time passes: its
    /// growth since a compaction estimates the events aged out since.
    pub(crate) async fn age_mark(&self, backend: &dyn BackendStore) -> Result<u64, Error> {
        let mut mark = 0u64;
        if let (Some(age_s), Some(head)) = (self.default.max_age_s, backend.counters().head) {
            let cutoff = self.age_cutoff_us(age_s);
            mark = mark.saturating_add(first_young(backend, Source::All, head.0, cutoff).await?);
        }
        let owns_age = self
            .lifecycles
            .iter()
            .filter(|(_, s)| !s.tombstoned && s.retention.max_age_s.is_some());
        for (name, state) in owns_age.take(AGE_CHECK_STREAMS_MAX) {
            let (Some(age_s), Ok(stream)) =
                (state.retention.max_age_s, StreamId::new(name.as_str()))
            else {
                continue;
            };
            let Some(last) = backend.version(&stream).await? else {
                continue;
            };
            let cutoff = self.age_cutoff_us(age_s);
            let young = first_young(backend, Source::Stream(&stream), last, cutoff).await?;
            mark = mark.saturating_add(young);
        }
        Ok(mark)
    }

    /// What readers no longer see: each stream's events below the first
    /// version it shows (by truncation, retention by count and by age,
    /// found by bisection), and every event and the stream itself when it
    /// shows as not existing. Streams with a state of their own are looked
    /// at, or every stream when the store has a default retention; at most
    /// [`STATUS_STREAMS_MAX`] of them.
    pub(crate) async fn hidden(&self, backend: &dyn BackendStore) -> Result<Hidden, Error> {
        let mut hidden = Hidden::default();
        if self.hides_nothing() {
            return Ok(hidden);
        }
        if self.default.is_none() {
            for (name, state) in self.lifecycles.iter().take(STATUS_STREAMS_MAX) {
                let Ok(stream) = StreamId::new(name.as_str()) else {
                    continue;
                };
                let last = last_version(backend.version(&stream).await?, state);
                self.count_hidden(backend, &stream, *state, last, &mut hidden)
                    .await?;
            }
            return Ok(hidden);
        }
        let (mut after, mut counted) = (None, 0);
        loop {
            let page = backend.list_streams(after, STATUS_STREAMS_PAGE).await?;
            for info in &page.streams {
                if counted == STATUS_STREAMS_MAX {
                    return Ok(hidden);
                }
                let state = self.lifecycle(info.stream.as_str());
                self.count_hidden(
                    backend,
                    &info.stream,
                    state,
                    Some(info.version),
                    &mut hidden,
                )
                .await?;
                counted += 1;
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(hidden),
            }
        }
    }

    /// Adds what `stream` (state `state`, last stored version `last`) hides to `hidden`.
    async fn count_hidden(
        &self,
        backend: &dyn BackendStore,
        stream: &StreamId,
        state: StreamLifecycle,
        last: Option<Version>,
        hidden: &mut Hidden,
    ) -> Result<(), Error> {
        let Some(last) = last else {
            return Ok(());
        };
        if state.visible_version(Some(last)).is_none() {
            hidden.streams += 1;
            hidden.events += last + 1;
            return Ok(());
        }
        let mut first = state.first_shown(self.default, last);
        if let Some(age_s) = state.retention.or(self.default).max_age_s {
            let cutoff = self.age_cutoff_us(age_s);
            first = first.max(first_young(backend, Source::Stream(stream), last, cutoff).await?);
        }
        hidden.events += first.min(last + 1);
        Ok(())
    }

    /// Events created before this instant are older than `age_s` seconds.
    fn age_cutoff_us(&self, age_s: u64) -> u64 {
        Retention::age_cutoff_us(age_s, self.now_us)
    }

    /// Whether a stored event (stream, version, created) shows.
    pub(crate) fn shows_stored(
        &self,
        stream: &str,
        last: Version,
        version: Version,
        created_us: u64,
    ) -> bool {
        self.lifecycle(stream)
            .shows(self.default, last, version, created_us, self.now_us)
    }
}

/// The lowest key (a position, or a version of a stream) from which every
/// stored event of `source` up to `last` was created at or after
/// `cutoff_us`, by bisection: each probe reads the first stored event at or
/// after its key.
async fn first_young(
    backend: &dyn BackendStore,
    source: Source<'_>,
    last: u64,
    cutoff_us: u64,
) -> Result<u64, Error> {
    let (mut low, mut high) = (0u64, last.saturating_add(1));
    while low < high {
        let middle = low + (high - low) / 2;
        let probe = match source {
            Source::All => {
                backend
                    .read_all(Position(middle), 1, Direction::Forward)
                    .await?
            }
            Source::Stream(stream) => {
                backend
                    .read_stream(stream, middle, 1, Direction::Forward)
                    .await?
            }
            Source::Query(_) => return Ok(0),
        };
        match probe.first() {
            Some(event) if event.created_us < cutoff_us => {
                let key = match source {
                    Source::Stream(_) => event.version,
                    Source::All | Source::Query(_) => event.position.0,
                };
                low = key.saturating_add(1).max(middle + 1);
            }
            _ => high = middle,
        }
    }
    Ok(low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamId {
        StreamId::new("s").unwrap()
    }

    #[test]
    fn a_soft_delete_hides_up_to_the_last_version_and_checks_the_visible_one() {
        let deleted = apply(
            &stream(),
            StreamLifecycle::default(),
            Some(4),
            LifecycleChange::Delete(ExpectedVersion::Exact(4)),
        )
        .unwrap();
        assert_eq!(deleted.truncate_before, Some(5));
        assert_eq!(deleted.visible_version(Some(4)), None);
        let again = apply(
            &stream(),
            deleted,
            Some(4),
            LifecycleChange::Delete(ExpectedVersion::Exact(4)),
        );
        assert!(matches!(
            again,
            Err(Error::WrongExpectedVersion { current: None, .. })
        ));
    }

    #[test]
    fn a_tombstone_refuses_every_later_change() {
        let tombstoned = apply(
            &stream(),
            StreamLifecycle::default(),
            None,
            LifecycleChange::Tombstone(ExpectedVersion::Any),
        )
        .unwrap();
        for change in [
            LifecycleChange::Delete(ExpectedVersion::Any),
            LifecycleChange::Tombstone(ExpectedVersion::Any),
            LifecycleChange::Truncate(1),
            LifecycleChange::Retention(Retention::NONE),
        ] {
            assert_eq!(
                apply(&stream(), tombstoned, Some(3), change),
                Err(Error::StreamDeleted { stream: stream() })
            );
        }
    }

    #[test]
    fn a_truncation_point_never_moves_back() {
        let truncated = apply(
            &stream(),
            StreamLifecycle::default(),
            Some(9),
            LifecycleChange::Truncate(5),
        )
        .unwrap();
        let lower = apply(&stream(), truncated, Some(9), LifecycleChange::Truncate(2)).unwrap();
        assert_eq!(lower.truncate_before, Some(5));
        let past = apply(&stream(), lower, Some(9), LifecycleChange::Truncate(50)).unwrap();
        assert_eq!(
            past.truncate_before,
            Some(10),
            "clipped to after the last event"
        );
    }
}
