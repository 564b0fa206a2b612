//! Events, versions, positions and the shapes of append and read results.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{EventId, StreamId};

/// A stream version: 0-based, the version of a stream is that of its last event.
pub type Version = u64;

/// A position in a store's global log: 0-based, gapless, in commit order.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position(pub u64);

impl Position {
    /// The first position of every log.
    pub const START: Position = Position(0);
    /// Reading backward from here means "from the end of the log".
    pub const END: Position = Position(u64::MAX);

    /// The position after this one.
    pub fn next(self) -> Position {
        Position(self.0.saturating_add(1))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event as the writer hands it in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// Writer-chosen id; the key of idempotent retries.
    pub id: EventId,
    /// The event's type, e.g. `"OrderPlaced"`; 1 to 256 bytes.
    pub event_type: String,
    /// The payload; JSON when `content_type` says so, opaque bytes otherwise.
    #[serde(with = "payload")]
    pub data: Vec<u8>,
    /// Free-form metadata; JSON objects are matched by `ByEventPattern` subscriptions.
    #[serde(with = "payload")]
    pub metadata: Vec<u8>,
    /// MIME type of `data`, e.g. `application/json`.
    pub content_type: String,
    /// Tags that queries select the event by, in the writer's order: 0 to
    /// [`TAGS_PER_EVENT_MAX`](crate::query::TAGS_PER_EVENT_MAX) distinct
    /// strings (see [`query`](crate::query)). Last, so a record's encoding
    /// ends with them.
    pub tags: Vec<String>,
}

/// Payloads as serde bytes rather than a sequence of `u8`s: postcard
/// writes both as a varint length and the bytes (so encodings are
/// unchanged), but bytes are copied at once where a sequence goes byte by
/// byte; JSON writes both as an array of numbers. Decoding takes either.
mod payload {
    use std::fmt;

    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Most bytes reserved ahead from a sequence's announced length: the
    /// announcement comes from the peer.
    const RESERVE_MAX: usize = 4_096;

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(RESERVE_MAX));
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

/// The content type of JSON payloads.
pub const CONTENT_TYPE_JSON: &str = "application/json";

impl EventData {
    /// A JSON event: `data` and `metadata` are serialised JSON text.
    pub fn json(
        id: EventId,
        event_type: impl Into<String>,
        data: Vec<u8>,
        metadata: Vec<u8>,
    ) -> Self {
        EventData {
            id,
            event_type: event_type.into(),
            data,
            metadata,
            content_type: CONTENT_TYPE_JSON.to_owned(),
            tags: Vec::new(),
        }
    }

    /// The same event carrying `tags`.
    pub fn with_tags(mut self, tags: Vec<String>) -> Self {
        self.tags = tags;
        self
    }

    /// Bytes this event occupies against the per-event size limit (tags included).
    pub fn size_bytes(&self) -> usize {
        self.event_type.len()
            + self.data.len()
            + self.metadata.len()
            + self.content_type.len()
            + self.tags.iter().map(String::len).sum::<usize>()
    }
}

/// An event as stored: the writer's data plus where and when it was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version in that stream.
    pub version: Version,
    /// Its position in the store's global log.
    pub position: Position,
    /// Commit time, microseconds since the Unix epoch (stamped by the store).
    pub created_us: u64,
    /// What the writer sent.
    pub data: EventData,
}

/// The condition an append places on the stream's current version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No condition.
    Any,
    /// The stream must not exist.
    NoStream,
    /// The stream must exist (have at least one event).
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream whose current version is `current` satisfies this condition.
    pub fn is_satisfied_by(self, current: Option<Version>) -> bool {
        match (self, current) {
            (ExpectedVersion::Any, _) => true,
            (ExpectedVersion::NoStream, None) => true,
            (ExpectedVersion::StreamExists, Some(_)) => true,
            (ExpectedVersion::Exact(v), Some(c)) => v == c,
            _ => false,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => v.fmt(f),
        }
    }
}

/// Reading direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Ascending versions or positions.
    Forward,
    /// Descending versions or positions.
    Backward,
}

/// What a successful append returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The version of the last appended event (the stream's new version).
    pub version: Version,
    /// The global position of the last appended event.
    pub position: Position,
}

/// A stream and its current version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream.
    pub stream: StreamId,
    /// Its version (that of its last event).
    pub version: Version,
}

/// One page of `get_streams`, in stream id order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPage {
    /// Streams on this page.
    pub streams: Vec<StreamInfo>,
    /// Pass as `after` to get the next page; `None` when this is the last page.
    pub next_after: Option<StreamId>,
}

impl StreamPage {
    /// A page of `streams`; when `more` exist past it, the last one is where the next page starts.
    pub fn new(streams: Vec<StreamInfo>, more: bool) -> Self {
        let next_after = if more {
            streams.last().map(|s| s.stream.clone())
        } else {
            None
        };
        StreamPage {
            streams,
            next_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expected: ExpectedVersion, current: Option<u64>, ok: bool) {
        assert_eq!(
            expected.is_satisfied_by(current),
            ok,
            "{expected:?} vs {current:?}"
        );
    }

    #[test]
    fn expected_version_conditions_match_the_contract() {
        use ExpectedVersion::*;
        check(Any, None, true);
        check(Any, Some(3), true);
        check(NoStream, None, true);
        check(NoStream, Some(0), false);
        check(StreamExists, None, false);
        check(StreamExists, Some(0), true);
        check(Exact(0), None, false);
        check(Exact(0), Some(0), true);
        check(Exact(2), Some(3), false);
    }

    /// `EventData` as it was encoded before its payloads were serde bytes.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct PlainEvent {
        id: EventId,
        event_type: String,
        data: Vec<u8>,
        metadata: Vec<u8>,
        content_type: String,
        tags: Vec<String>,
    }

    fn events() -> impl proptest::strategy::Strategy<Value = (EventData, PlainEvent)> {
        use proptest::prelude::*;
        (
            any::<[u8; 16]>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(|(id, data, metadata)| {
                let event = EventData {
                    id: EventId::from_bytes(id),
                    event_type: "T".to_owned(),
                    data,
                    metadata,
                    content_type: CONTENT_TYPE_JSON.to_owned(),
                    tags: vec!["a:1".to_owned()],
                };
                let plain = PlainEvent {
                    id: event.id,
                    event_type: event.event_type.clone(),
                    data: event.data.clone(),
                    metadata: event.metadata.clone(),
                    content_type: event.content_type.clone(),
                    tags: event.tags.clone(),
                };
                (event, plain)
            })
    }

    proptest::proptest! {
        #[test]
        fn payloads_encode_as_they_did_as_sequences_of_bytes((event, plain) in events()) {
            let postcard_bytes = postcard::to_stdvec(&event).unwrap();
            proptest::prop_assert_eq!(&postcard_bytes, &postcard::to_stdvec(&plain).unwrap());
            proptest::prop_assert_eq!(&postcard::from_bytes::<EventData>(&postcard_bytes).unwrap(), &event);
            let json = serde_json::to_string(&event).unwrap();
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&plain).unwrap());
            proptest::prop_assert_eq!(serde_json::from_str::<EventData>(&json).unwrap(), event);
        }
    }
}
