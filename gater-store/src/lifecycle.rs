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
