//! How cqrs-es events, snapshots and views are laid out in Gater: stream
//! names, the metadata envelope, sequences versus versions. Pure functions.

use cqrs_es::persist::{SerializedEvent, SerializedSnapshot};
use gater_core::{EventData, EventId, ExpectedVersion, RecordedEvent, Snapshot, StreamId, Version};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RepositoryError;

/// The event type of a view update (see [`GaterViewRepository`](crate::GaterViewRepository)).
pub const VIEW_UPDATED_EVENT_TYPE: &str = "ViewUpdated";

/// What a cqrs-es event keeps in its Gater event's metadata (a JSON object).
///
/// The aggregate's type and id are here as well as in the stream name, so
/// `stream_all_events` and `ByEventPattern` subscriptions (e.g.
/// `{"aggregate_type":"BankAccount"}`) select an aggregate type without
/// parsing stream names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataEnvelope {
    /// `Aggregate::TYPE`.
    pub aggregate_type: String,
    /// The aggregate instance.
    pub aggregate_id: String,
    /// `DomainEvent::event_version`.
    pub event_version: String,
    /// The cqrs-es metadata, exactly as given.
    pub metadata: Value,
}

/// What a Gater snapshot written by the adapter holds (as JSON).
///
/// The sequence it covers is not stored here: it is the snapshot key's
/// version + 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    /// The aggregate's state.
    pub aggregate: Value,
    /// cqrs-es's snapshot counter (`current_snapshot`).
    pub current_snapshot: usize,
}

/// The stream of aggregate (or view) `id` of type (or view name) `kind`: `{kind}-{id}`.
pub fn stream_id(kind: &str, id: &str) -> Result<StreamId, RepositoryError> {
    StreamId::new(format!("{kind}-{id}")).map_err(|source| RepositoryError::InvalidStreamId {
        aggregate_type: kind.to_owned(),
        aggregate_id: id.to_owned(),
        source,
    })
}

/// The cqrs-es sequence of the event at Gater version `version`.
pub(crate) fn sequence_of(version: Version) -> usize {
    // Gater versions count stored events; a stream holds far fewer than usize::MAX.
    usize::try_from(version.saturating_add(1)).unwrap_or(usize::MAX)
}

/// The Gater version of the event with cqrs-es sequence `sequence` (>= 1).
pub(crate) fn version_of(sequence: usize) -> Version {
    (sequence as Version).saturating_sub(1)
}

/// The expected version of an append whose first event has `first_sequence`.
pub(crate) fn expected_version(
    first: &SerializedEvent,
) -> Result<ExpectedVersion, RepositoryError> {
    match first.sequence {
        0 => Err(RepositoryError::SequenceZero {
            aggregate_type: first.aggregate_type.clone(),
            aggregate_id: first.aggregate_id.clone(),
        }),
        1 => Ok(ExpectedVersion::NoStream),
        n => Ok(ExpectedVersion::Exact(version_of(n - 1))),
    }
}

/// Checks that `events` are consecutive events of the first one's aggregate.
pub(crate) fn check_one_commit(events: &[SerializedEvent]) -> Result<(), RepositoryError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    for (offset, event) in events.iter().enumerate() {
        let expected_sequence = first.sequence + offset;
        if event.aggregate_type != first.aggregate_type
            || event.aggregate_id != first.aggregate_id
            || event.sequence != expected_sequence
        {
            return Err(RepositoryError::NotOneCommit {
                aggregate_type: first.aggregate_type.clone(),
                aggregate_id: first.aggregate_id.clone(),
                expected_sequence,
                got: format!(
                    "{} {:?} sequence {}",
                    event.aggregate_type, event.aggregate_id, event.sequence
                ),
            });
        }
    }
    Ok(())
}

/// The Gater event for a cqrs-es event, under id `id`.
pub(crate) fn event_data(
    event: &SerializedEvent,
    id: EventId,
) -> Result<EventData, RepositoryError> {
    let envelope = MetadataEnvelope {
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        event_version: event.event_version.clone(),
        metadata: event.metadata.clone(),
    };
    let data = serde_json::to_vec(&event.payload).map_err(RepositoryError::Encode)?;
    let metadata = serde_json::to_vec(&envelope).map_err(RepositoryError::Encode)?;
    Ok(EventData::json(
        id,
        event.event_type.clone(),
        data,
        metadata,
    ))
}

/// The cqrs-es event a stored Gater event holds.
pub(crate) fn serialized_event(
    recorded: &RecordedEvent,
) -> Result<SerializedEvent, RepositoryError> {
    let foreign = |reason: String| RepositoryError::ForeignEvent {
        stream: recorded.stream.to_string(),
        version: recorded.version,
        reason,
    };
    let envelope: MetadataEnvelope = serde_json::from_slice(&recorded.data.metadata)
        .map_err(|e| foreign(format!("metadata is not a cqrs-es envelope: {e}")))?;
    let payload: Value = serde_json::from_slice(&recorded.data.data)
        .map_err(|e| foreign(format!("data is not JSON: {e}")))?;
    Ok(SerializedEvent {
        aggregate_id: envelope.aggregate_id,
        sequence: sequence_of(recorded.version),
        aggregate_type: envelope.aggregate_type,
        event_type: recorded.data.event_type.clone(),
        event_version: envelope.event_version,
        payload,
        metadata: envelope.metadata,
    })
}

/// The cqrs-es event of aggregate type `aggregate_type` a stored event holds,
/// or `None` when it is another type's event or not a cqrs-es event at all
/// (a log holds every stream of the store).
pub(crate) fn event_of_type(
    recorded: &RecordedEvent,
    aggregate_type: &str,
) -> Option<SerializedEvent> {
    let prefix_len = aggregate_type.len();
    let stream = recorded.stream.as_str();
    if stream.len() <= prefix_len
        || !stream.starts_with(aggregate_type)
        || stream.as_bytes()[prefix_len] != b'-'
    {
        return None;
    }
    serialized_event(recorded)
        .ok()
        .filter(|event| event.aggregate_type == aggregate_type)
}

/// The data of a snapshot of `aggregate` with cqrs-es counter `current_snapshot`.
pub(crate) fn snapshot_data(
    aggregate: Value,
    current_snapshot: usize,
) -> Result<Vec<u8>, RepositoryError> {
    serde_json::to_vec(&SnapshotData {
        aggregate,
        current_snapshot,
    })
    .map_err(RepositoryError::Encode)
}

/// The cqrs-es snapshot of aggregate `aggregate_id` a stored Gater snapshot holds.
pub(crate) fn serialized_snapshot(
    aggregate_id: &str,
    snapshot: &Snapshot,
) -> Result<SerializedSnapshot, RepositoryError> {
    let data: SnapshotData = serde_json::from_slice(&snapshot.data).map_err(|e| {
        RepositoryError::UnreadableSnapshot {
            stream: snapshot.key.stream.clone(),
            version: snapshot.key.version,
            reason: e.to_string(),
        }
    })?;
    Ok(SerializedSnapshot {
        aggregate_id: aggregate_id.to_owned(),
        aggregate: data.aggregate,
        current_sequence: sequence_of(snapshot.key.version),
        current_snapshot: data.current_snapshot,
    })
}

#[cfg(test)]
mod tests {
    use gater_core::Position;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn event(aggregate_id: &str, sequence: usize) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            aggregate_type: "BankAccount".to_owned(),
            event_type: "CustomerDepositedMoney".to_owned(),
            event_version: "2.1".to_owned(),
            payload: json!({"CustomerDepositedMoney": {"amount": 12.5, "note": "ünï\n"}}),
            metadata: json!({"user": "ana", "nested": {"n": [1, null, true]}}),
        }
    }

    fn recorded(stream: &str, version: Version, data: EventData) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new(stream).unwrap(),
            version,
            position: Position(40 + version),
            created_us: 1,
            data,
        }
    }

    #[test]
    fn an_event_round_trips_through_a_gater_event_exactly() {
        let original = event("acct-1", 4);
        let data = event_data(&original, EventId::from_random_bytes([3; 16])).unwrap();
        assert_eq!(data.event_type, "CustomerDepositedMoney");
        let back = serialized_event(&recorded("BankAccount-acct-1", 3, data)).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn sequence_is_version_plus_one() {
        assert_eq!(sequence_of(0), 1);
        assert_eq!(sequence_of(41), 42);
        assert_eq!(version_of(1), 0);
        assert_eq!(version_of(42), 41);
    }

    #[test]
    fn expected_version_follows_from_the_first_sequence() {
        assert_eq!(
            expected_version(&event("a", 1)).unwrap(),
            ExpectedVersion::NoStream
        );
        assert_eq!(
            expected_version(&event("a", 5)).unwrap(),
            ExpectedVersion::Exact(3)
        );
        assert!(matches!(
            expected_version(&event("a", 0)),
            Err(RepositoryError::SequenceZero { .. })
        ));
    }

    #[test]
    fn a_commit_must_be_consecutive_events_of_one_aggregate() {
        assert!(check_one_commit(&[event("a", 3), event("a", 4)]).is_ok());
        assert!(check_one_commit(&[]).is_ok());
        assert!(matches!(
            check_one_commit(&[event("a", 3), event("a", 5)]),
            Err(RepositoryError::NotOneCommit {
                expected_sequence: 4,
                ..
            })
        ));
        assert!(check_one_commit(&[event("a", 3), event("b", 4)]).is_err());
    }

    #[test]
    fn an_id_that_makes_no_stream_id_is_a_typed_error() {
        assert_eq!(
            stream_id("BankAccount", "acct-1").unwrap().as_str(),
            "BankAccount-acct-1"
        );
        assert!(matches!(
            stream_id("BankAccount", "bad\nid"),
            Err(RepositoryError::InvalidStreamId { .. })
        ));
        assert!(stream_id("BankAccount", &"x".repeat(300)).is_err());
    }

    #[test]
    fn only_events_of_the_aggregate_type_are_selected_from_the_log() {
        let mut other_type = event("1", 1);
        other_type.aggregate_type = "BankAccountAudit".to_owned();
        let id = EventId::from_random_bytes([1; 16]);
        let mine = recorded("BankAccount-1", 0, event_data(&event("1", 1), id).unwrap());
        let theirs = recorded(
            "BankAccountAudit-1",
            0,
            event_data(&other_type, id).unwrap(),
        );
        let foreign = recorded(
            "BankAccount-x",
            0,
            EventData::json(id, "Raw", b"{}".to_vec(), b"{}".to_vec()),
        );
        assert!(event_of_type(&mine, "BankAccount").is_some());
        assert!(event_of_type(&theirs, "BankAccount").is_none());
        assert!(event_of_type(&foreign, "BankAccount").is_none());
        assert!(event_of_type(&mine, "Bank").is_none());
    }

    #[test]
    fn a_foreign_event_in_an_aggregate_stream_is_a_typed_error() {
        let raw = EventData::json(
            EventId::from_random_bytes([1; 16]),
            "Raw",
            b"{}".to_vec(),
            b"{}".to_vec(),
        );
        assert!(matches!(
            serialized_event(&recorded("BankAccount-1", 0, raw)),
            Err(RepositoryError::ForeignEvent { version: 0, .. })
        ));
    }

    #[test]
    fn a_snapshot_covers_up_to_its_key_version() {
        let data = snapshot_data(json!({"balance": 70}), 3).unwrap();
        let snapshot = Snapshot {
            key: gater_core::SnapshotKey {
                source: "BankAccount".into(),
                stream: "BankAccount-1".into(),
                version: 5,
            },
            data,
            created_us: 0,
        };
        let back = serialized_snapshot("1", &snapshot).unwrap();
        assert_eq!(back.current_sequence, 6);
        assert_eq!(back.current_snapshot, 3);
        assert_eq!(back.aggregate, json!({"balance": 70}));
    }

    /// JSON values without floats (serde_json reads some floats back a unit
    /// in the last place off; cqrs-es payloads go through the same codec
    /// in every backend).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_event_round_trips_through_a_gater_event(
            aggregate_type in "[A-Za-z][A-Za-z0-9_]{0,20}",
            aggregate_id in "[^\\p{Cc}]{1,40}",
            sequence in 1usize..1_000_000,
            event_type in "[^\\p{Cc}]{1,40}",
            event_version in ".{0,10}",
            payload in json_value(),
            metadata in json_value(),
        ) {
            let original = SerializedEvent {
                aggregate_id,
                sequence,
                aggregate_type,
                event_type,
                event_version,
                payload,
                metadata,
            };
            let stream = stream_id(&original.aggregate_type, &original.aggregate_id).unwrap();
            let data = event_data(&original, EventId::from_random_bytes([5; 16])).unwrap();
            let stored = RecordedEvent {
                stream,
                version: version_of(original.sequence),
                position: Position(7),
                created_us: 0,
                data,
            };
            prop_assert_eq!(serialized_event(&stored).unwrap(), original.clone());
            prop_assert_eq!(
                event_of_type(&stored, &original.aggregate_type),
                Some(original)
            );
        }
    }
}
