//! Stream lifecycle: soft delete, tombstones, truncation and retention, and
//! the one rule deciding which stored events a reader still sees.
//!
//! A stream's lifecycle state ([`StreamLifecycle`]) hides events without
//! removing them: every read (a stream, the global log, queries,
//! subscriptions started or resumed afterwards) applies [`StreamLifecycle::shows`]
//! at once, and compaction reclaims the space of what it hides later.
//! Versions and positions of hidden events are never reused.
//!
//! What this module does not do: store the state or reclaim space; a
//! backend does both.

use serde::{Deserialize, Serialize};

use crate::event::Version;
use crate::id::{StoreId, StreamId};

/// Microseconds in a second, to compare ages in seconds with `created` stamps.
const MICROS_PER_SECOND: u64 = 1_000_000;

/// How many of a stream's events, and how old, readers see.
///
/// `None` fields do not limit. A stream's own retention overrides the
/// store's default ([`StoreConfig::retention`](crate::StoreConfig::retention))
/// field by field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Retention {
    /// Only the newest `max_count` events are read.
    pub max_count: Option<u64>,
    /// No event older than this many seconds is read.
    pub max_age_s: Option<u64>,
}

impl Retention {
    /// No limit.
    pub const NONE: Retention = Retention {
        max_count: None,
        max_age_s: None,
    };

    /// This retention, with each field it leaves open taken from `default`.
    pub fn or(self, default: Retention) -> Retention {
        Retention {
            max_count: self.max_count.or(default.max_count),
            max_age_s: self.max_age_s.or(default.max_age_s),
        }
    }

    /// Whether it limits anything.
    pub fn is_none(&self) -> bool {
        self.max_count.is_none() && self.max_age_s.is_none()
    }

    /// The creation instant (µs since the epoch) before which a retention
    /// by age of `age_s` seconds hides events, at `now_us`.
    pub fn age_cutoff_us(age_s: u64, now_us: u64) -> u64 {
        now_us.saturating_sub(age_s.saturating_mul(MICROS_PER_SECOND))
    }
}

/// What is stored about a stream's lifecycle; the default hides nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamLifecycle {
    /// Events with a lower version are hidden (truncation; a soft delete
    /// sets it past the stream's last event).
    pub truncate_before: Option<Version>,
    /// Hard-deleted: the stream and every event of it are gone for good.
    pub tombstoned: bool,
    /// The stream's own retention (before the store's default applies).
    pub retention: Retention,
}

impl StreamLifecycle {
    /// Whether the state hides nothing (a backend need not store it).
    pub fn is_default(&self) -> bool {
        *self == StreamLifecycle::default()
    }

    /// The version a reader sees for a stream whose last stored event has
    /// version `last`: `None` (no stream) when tombstoned or when every
    /// event is before the truncation point (soft-deleted). Retention does
    /// not change it: a stream whose events all aged out still exists.
    pub fn visible_version(&self, last: Option<Version>) -> Option<Version> {
        let last = last?;
        if self.tombstoned || self.truncate_before.is_some_and(|before| last < before) {
            return None;
        }
        Some(last)
    }

    /// Whether a reader sees the event `version` (created at `created_us`,
    /// µs since the epoch) of a stream whose last stored event is `last`, at
    /// `now_us`, with the store's `default` retention.
    pub fn shows(
        &self,
        default: Retention,
        last: Version,
        version: Version,
        created_us: u64,
        now_us: u64,
    ) -> bool {
        if self.tombstoned || self.truncate_before.is_some_and(|before| version < before) {
            return false;
        }
        let retention = self.retention.or(default);
        if let Some(count) = retention.max_count {
            // The newest `count` events: versions after `last - count`.
            if count == 0 || last.saturating_sub(version) >= count {
                return false;
            }
        }
        if let Some(age_s) = retention.max_age_s {
            if created_us < Retention::age_cutoff_us(age_s, now_us) {
                return false;
            }
        }
        true
    }

    /// The lowest version a reader may see given truncation and count
    /// retention alone (age aside): where a forward read starts.
    pub fn first_shown(&self, default: Retention, last: Version) -> Version {
        let by_truncation = self.truncate_before.unwrap_or(0);
        let by_count = match self.retention.or(default).max_count {
            Some(count) => (last + 1).saturating_sub(count),
            None => 0,
        };
        by_truncation.max(by_count)
    }
}

/// A stream's retention and truncation point, as
/// [`Gater::stream_retention`](crate::Gater::stream_retention) answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRetention {
    /// The stream.
    pub stream: StreamId,
    /// The stream's own count limit (`None`: the store's default applies, if any).
    pub max_count: Option<u64>,
    /// The stream's own age limit in seconds (`None`: the store's default applies, if any).
    pub max_age_s: Option<u64>,
    /// Events below this version are hidden (truncation or soft delete).
    pub truncate_before: Option<Version>,
}

/// What [`Gater::compact_store`](crate::Gater::compact_store) reclaimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// The store.
    pub store: StoreId,
    /// Bytes the store occupied before.
    pub bytes_before: u64,
    /// Bytes it occupies once the hidden events' space is reclaimed.
    pub bytes_after: u64,
    /// Hidden events removed.
    pub events_removed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000 * MICROS_PER_SECOND;

    fn check(lifecycle: StreamLifecycle, last: Version, shown: &[Version]) {
        let got: Vec<Version> = (0..=last)
            .filter(|v| lifecycle.shows(Retention::NONE, last, *v, NOW, NOW))
            .collect();
        assert_eq!(got, shown, "{lifecycle:?}");
    }

    #[test]
    fn truncation_count_and_tombstone_hide_the_expected_versions() {
        check(StreamLifecycle::default(), 3, &[0, 1, 2, 3]);
        let truncated = StreamLifecycle {
            truncate_before: Some(2),
            ..StreamLifecycle::default()
        };
        check(truncated, 3, &[2, 3]);
        let counted = StreamLifecycle {
            retention: Retention {
                max_count: Some(3),
                max_age_s: None,
            },
            ..StreamLifecycle::default()
        };
        check(counted, 4, &[2, 3, 4]);
        let tombstoned = StreamLifecycle {
            tombstoned: true,
            ..StreamLifecycle::default()
        };
        check(tombstoned, 3, &[]);
    }

    #[test]
    fn age_hides_events_older_than_max_age() {
        let aged = StreamLifecycle {
            retention: Retention {
                max_count: None,
                max_age_s: Some(10),
            },
            ..StreamLifecycle::default()
        };
        let old = NOW - 11 * MICROS_PER_SECOND;
        let young = NOW - 9 * MICROS_PER_SECOND;
        assert!(!aged.shows(Retention::NONE, 1, 0, old, NOW));
        assert!(aged.shows(Retention::NONE, 1, 1, young, NOW));
    }

    #[test]
    fn the_stream_retention_overrides_the_store_default_field_by_field() {
        let own = Retention {
            max_count: Some(5),
            max_age_s: None,
        };
        let default = Retention {
            max_count: Some(1),
            max_age_s: Some(7),
        };
        assert_eq!(
            own.or(default),
            Retention {
                max_count: Some(5),
                max_age_s: Some(7)
            }
        );
    }

    #[test]
    fn a_soft_deleted_stream_has_no_version_until_recreated() {
        let deleted = StreamLifecycle {
            truncate_before: Some(4),
            ..StreamLifecycle::default()
        };
        assert_eq!(deleted.visible_version(Some(3)), None);
        assert_eq!(deleted.visible_version(Some(4)), Some(4));
        assert_eq!(deleted.visible_version(None), None);
    }
}
