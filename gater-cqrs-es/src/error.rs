//! The adapter's typed error, and how it maps onto cqrs-es's `PersistenceError`.

use cqrs_es::persist::PersistenceError;
use gater_core::{Error, IdError, Version};

/// Why a repository call failed. It reaches cqrs-es inside a
/// [`PersistenceError`] (see the `From` impl), from which it can be downcast.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// `{aggregate_type}-{aggregate_id}` is not a valid Gater stream id.
    #[error("aggregate {aggregate_type} {aggregate_id:?} has no valid stream id: {source}")]
    InvalidStreamId {
        /// The aggregate type (or view name).
        aggregate_type: String,
        /// The aggregate id (or view id).
        aggregate_id: String,
        /// Why Gater refused the stream id.
        source: IdError,
    },
    /// cqrs-es sequences start at 1; an event claimed sequence 0.
    #[error("event of {aggregate_type} {aggregate_id:?} has sequence 0: sequences start at 1")]
    SequenceZero {
        /// The aggregate type.
        aggregate_type: String,
        /// The aggregate id.
        aggregate_id: String,
    },
    /// The events of one `persist` (and its snapshot) must belong to one
    /// aggregate, and the events must have consecutive sequences.
    #[error("events of one commit must be consecutive events of one aggregate: expected {aggregate_type} {aggregate_id:?} sequence {expected_sequence}, got {got}")]
    NotOneCommit {
        /// The aggregate type of the first event.
        aggregate_type: String,
        /// The aggregate id of the first event.
        aggregate_id: String,
        /// The sequence the event at this place should have had.
        expected_sequence: usize,
        /// What the event at this place was.
        got: String,
    },
    /// A view's context carried a negative version.
    #[error("view {view_id:?} has version {version}: versions are not negative")]
    NegativeViewVersion {
        /// The view instance.
        view_id: String,
        /// The version given.
        version: i64,
    },
    /// A stored event is not one this adapter wrote (foreign metadata, non-JSON data).
    #[error("event {version} of stream {stream} is not a cqrs-es event: {reason}")]
    ForeignEvent {
        /// The stream.
        stream: String,
        /// The event's version in it.
        version: Version,
        /// What did not decode.
        reason: String,
    },
    /// A stored snapshot's data is not [`SnapshotData`](crate::SnapshotData).
    #[error("snapshot {version} of stream {stream} does not decode: {reason}")]
    UnreadableSnapshot {
        /// The stream.
        stream: String,
        /// The version it was taken at.
        version: Version,
        /// What did not decode.
        reason: String,
    },
    /// A value did not serialise to JSON.
    #[error("cannot encode to JSON: {0}")]
    Encode(#[source] serde_json::Error),
    /// The events were appended, but the snapshot after them could not be recorded.
    ///
    /// The commit stands: a snapshot store reloads from the previous snapshot
    /// and the events. An aggregate store (which trusts its snapshot alone)
    /// stays behind until a snapshot is recorded.
    #[error("events of {stream} up to version {version} are stored, but their snapshot is not: {source}")]
    SnapshotNotRecorded {
        /// The stream.
        stream: String,
        /// The version of the last stored event.
        version: Version,
        /// What Gater answered.
        source: Error,
    },
    /// The events were appended, but the snapshot cqrs-es gave with them
    /// matches none of them, so it was not recorded (a snapshot under the
    /// wrong version would make loads skip or repeat events).
    #[error("events of {stream} are stored, but their snapshot is not: cannot tell which events it covers: {reason}")]
    SnapshotCoverage {
        /// The stream.
        stream: String,
        /// Why the snapshot could not be placed.
        reason: String,
    },
    /// Gater answered with an error.
    #[error(transparent)]
    Gater(#[from] Error),
}

impl From<RepositoryError> for PersistenceError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::Gater(Error::WrongExpectedVersion { .. }) => {
                PersistenceError::OptimisticLockError
            }
            RepositoryError::Gater(ref e) if e.is_retryable() => {
                PersistenceError::ConnectionError(Box::new(error))
            }
            RepositoryError::ForeignEvent { .. } | RepositoryError::UnreadableSnapshot { .. } => {
                PersistenceError::DeserializationError(Box::new(error))
            }
            other => PersistenceError::UnknownError(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_core::{ExpectedVersion, Side};

    #[test]
    fn wrong_expected_version_is_an_optimistic_lock_error() {
        let error = RepositoryError::Gater(Error::WrongExpectedVersion {
            stream: gater_core::StreamId::new("account-1").unwrap(),
            expected: ExpectedVersion::Exact(1),
            current: Some(2),
        });
        assert!(matches!(
            PersistenceError::from(error),
            PersistenceError::OptimisticLockError
        ));
    }

    #[test]
    fn path_failures_are_connection_errors_and_keep_the_gater_error() {
        let error = RepositoryError::Gater(Error::unavailable(Side::Worker, "gone"));
        let PersistenceError::ConnectionError(inner) = PersistenceError::from(error) else {
            panic!("expected a connection error");
        };
        let inner = inner
            .downcast::<RepositoryError>()
            .expect("the adapter's error is inside");
        assert!(matches!(
            *inner,
            RepositoryError::Gater(Error::Unavailable { .. })
        ));
    }

    #[test]
    fn foreign_events_are_deserialization_errors() {
        let error = RepositoryError::ForeignEvent {
            stream: "s".into(),
            version: 0,
            reason: "no envelope".into(),
        };
        assert!(matches!(
            PersistenceError::from(error),
            PersistenceError::DeserializationError(_)
        ));
    }
}
