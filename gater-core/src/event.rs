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
    #[serde(with = "byte_string")]
    pub data: Vec<u8>,
    /// Free-form metadata; JSON objects are matched by `ByEventPattern` subscriptions.
    #[serde(with = "byte_string")]
    pub metadata: Vec<u8>,
    /// MIME type of `data`, e.g. `application/json`.
    pub content_type: String,
    /// Tags that queries select the event by, in the writer's order: 0 to
    /// [`TAGS_PER_EVENT_MAX`](crate::query::TAGS_PER_EVENT_MAX) distinct
    /// strings (see [`query`](crate::query)). Last, so a record's encoding
    /// ends with them.
    pub tags: Vec<String>,
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

/// `Vec<u8>` fields as one byte string instead of a sequence of bytes.
///
/// Postcard writes both as the length then the bytes, so stored records and
/// frames are unchanged, but a sequence goes through serde one byte at a
/// time: reading a 356-byte event cost hundreds of calls, a byte string
/// one copy. Formats that tell the two apart (JSON) read either.
mod byte_string {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_bytes(ByteString)
    }

    struct ByteString;

    impl<'de> Visitor<'de> for ByteString {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            Ok(text.as_bytes().to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // A sequence's announced length is the peer's word: it bounds the
            // first allocation only up to what a frame could hold anyway.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(SEQ_PREALLOC_MAX));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }

    /// Most bytes reserved up front for a byte string sent as a sequence.
    const SEQ_PREALLOC_MAX: usize = 64 * 1024;
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

    /// `EventData` as it was derived before its byte fields were byte strings.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct SequenceBytes {
        id: EventId,
        event_type: String,
        data: Vec<u8>,
        metadata: Vec<u8>,
        content_type: String,
        tags: Vec<String>,
    }

    proptest::proptest! {
        #[test]
        fn byte_fields_encode_as_byte_sequences_did_so_stored_records_still_read(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            metadata in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            id in proptest::array::uniform16(proptest::num::u8::ANY),
        ) {
            let event = EventData {
                id: EventId::from_bytes(id),
                event_type: "T".into(),
                data: data.clone(),
                metadata: metadata.clone(),
                content_type: "x".into(),
                tags: vec!["a".into()],
            };
            let old = SequenceBytes {
                id: event.id,
                event_type: "T".into(),
                data,
                metadata,
                content_type: "x".into(),
                tags: vec!["a".into()],
            };
            let encoded = postcard::to_stdvec(&event).unwrap();
            proptest::prop_assert_eq!(&encoded, &postcard::to_stdvec(&old).unwrap());
            proptest::prop_assert_eq!(postcard::from_bytes::<EventData>(&encoded).unwrap(), event.clone());
            // JSON keeps its array of numbers, and reads it back.
            let json = serde_json::to_string(&event).unwrap();
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&old).unwrap());
            proptest::prop_assert_eq!(serde_json::from_str::<EventData>(&json).unwrap(), event);
        }
    }
}
