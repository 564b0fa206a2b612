//! The general append: several `(stream, expected version, events)` parts
//! and an optional condition, committed as one unit.
//!
//! [`Gater::append`](crate::Gater::append) takes an [`Append`];
//! [`Gater::append_events`](crate::Gater::append_events) is its one-part
//! form without a condition. The checks of an append's shape that need no
//! store are here ([`Append::validate_shape`]); stores add their limits.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::event::{AppendResult, EventData, ExpectedVersion, Position, Version};
use crate::id::StreamId;
use crate::query::Query;

/// Most parts in one append.
pub const APPEND_PARTS_MAX: usize = 256;

/// The events one append adds to one stream, and what it expects of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendPart {
    /// The stream appended to.
    pub stream: StreamId,
    /// The condition on the stream's version.
    pub expected: ExpectedVersion,
    /// The events, at least one.
    pub events: Vec<EventData>,
}

/// A Dynamic Consistency Boundary condition: the append fails if an event
/// matching `fail_if_events_match` exists after `after` (in the whole log
/// when `after` is `None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendCondition {
    /// The events whose existence fails the append.
    pub fail_if_events_match: Query,
    /// Only events at positions after this one count; `None`: every event.
    pub after: Option<Position>,
}

/// One atomic append: every event of every part, or none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    /// The parts, in the order their events are stored; at least one, each
    /// stream in at most one part.
    pub parts: Vec<AppendPart>,
    /// Checked against the log together with the parts' expectations.
    pub condition: Option<AppendCondition>,
}

/// A stream's version after an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamVersion {
    /// The stream.
    pub stream: StreamId,
    /// Its version after the append (that of its last event).
    pub version: Version,
}

/// What a successful [`Append`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// The global position of the append's last event.
    pub position: Position,
    /// Each part's stream and new version, in part order.
    pub streams: Vec<StreamVersion>,
}

impl Append {
    /// The one-part append of `append_events`.
    pub fn single(stream: StreamId, expected: ExpectedVersion, events: Vec<EventData>) -> Self {
        Append {
            parts: vec![AppendPart {
                stream,
                expected,
                events,
            }],
            condition: None,
        }
    }

    /// Adds a condition.
    pub fn with_condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Events in every part together.
    pub fn event_count(&self) -> usize {
        self.parts.iter().map(|p| p.events.len()).sum()
    }

    /// Every event of the append, in the order it would be stored.
    pub fn events(&self) -> impl Iterator<Item = &EventData> {
        self.parts.iter().flat_map(|p| p.events.iter())
    }

    /// Checks what needs no store: 1 to [`APPEND_PARTS_MAX`] parts, each
    /// stream once, each part with events, and a well-formed condition.
    pub fn validate_shape(&self) -> Result<(), Error> {
        if self.parts.is_empty() {
            return Err(Error::invalid("an append needs at least one part"));
        }
        if self.parts.len() > APPEND_PARTS_MAX {
            return Err(Error::limit(
                "append_parts_max",
                APPEND_PARTS_MAX as u64,
                self.parts.len() as u64,
            ));
        }
        for (i, part) in self.parts.iter().enumerate() {
            if part.events.is_empty() {
                return Err(Error::invalid("an append needs at least one event"));
            }
            if self.parts[..i].iter().any(|p| p.stream == part.stream) {
                return Err(Error::invalid(format!(
                    "stream {} is in more than one part of the append",
                    part.stream
                )));
            }
        }
        if let Some(condition) = &self.condition {
            condition.fail_if_events_match.validate()?;
        }
        Ok(())
    }
}

impl AppendOutcome {
    /// The `append_events` result of a one-part append: its stream's version.
    pub fn single(&self) -> AppendResult {
        AppendResult {
            version: self.streams.first().map_or(0, |s| s.version),
            position: self.position,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::EventId;

    fn part(stream: &str, n: usize) -> AppendPart {
        AppendPart {
            stream: StreamId::new(stream).unwrap(),
            expected: ExpectedVersion::Any,
            events: (0..n)
                .map(|i| EventData::json(EventId::from_bytes([i as u8; 16]), "T", vec![], vec![]))
                .collect(),
        }
    }

    fn check(append: Append, kind: Option<&str>) {
        assert_eq!(
            append.validate_shape().err().map(|e| e.kind()),
            kind,
            "{append:?}"
        );
    }

    #[test]
    fn an_append_shape_needs_parts_with_events_and_distinct_streams() {
        let two = |a, b| Append {
            parts: vec![a, b],
            condition: None,
        };
        check(two(part("a", 1), part("b", 2)), None);
        check(two(part("a", 1), part("a", 1)), Some("invalid_argument"));
        check(two(part("a", 1), part("b", 0)), Some("invalid_argument"));
        check(
            Append {
                parts: vec![],
                condition: None,
            },
            Some("invalid_argument"),
        );
        let many = (0..=APPEND_PARTS_MAX)
            .map(|i| part(&format!("s{i}"), 1))
            .collect();
        check(
            Append {
                parts: many,
                condition: None,
            },
            Some("limit_exceeded"),
        );
        let bad_condition = Append::single(
            StreamId::new("a").unwrap(),
            ExpectedVersion::Any,
            part("a", 1).events,
        )
        .with_condition(AppendCondition {
            fail_if_events_match: Query::item(vec![], vec![]),
            after: None,
        });
        check(bad_condition, Some("invalid_argument"));
    }
}
