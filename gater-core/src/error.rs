//! Typed errors: each variant documents itself, and every error says whether
//! repeating the request is safe ([`Error::is_retryable`]) and, for failures of
//! the path rather than the request, which side failed ([`Side`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::{ExpectedVersion, Position, Version};
use crate::id::{EventId, StreamId};

/// Why an identifier was refused at construction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum IdError {
    /// A store id must be 1 to 64 bytes.
    #[error("invalid store id: length {len} is not within 1..=64")]
    StoreIdLength {
        /// The length given.
        len: usize,
    },
    /// A store id may only hold `[a-z0-9_-]`.
    #[error("invalid store id {id:?}: character {c:?} is not one of [a-z0-9_-]")]
    StoreIdChar {
        /// The id given.
        id: String,
        /// The first character refused.
        c: char,
    },
    /// A stream id must be 1 to 256 bytes.
    #[error("invalid stream id: length {len} is not within 1..=256 bytes")]
    StreamIdLength {
        /// The length given, in bytes.
        len: usize,
    },
    /// A stream id may not hold control characters.
    #[error("invalid stream id: it holds a control character")]
    StreamIdControl,
    /// Stream ids starting with `$` are reserved for the system.
    #[error("invalid stream id {id:?}: the '$' prefix is reserved")]
    StreamIdReserved {
        /// The id given.
        id: String,
    },
    /// An event id must be a UUID.
    #[error("invalid event id {id:?}: not a UUID")]
    EventId {
        /// The text given.
        id: String,
    },
}

/// The kind of thing a [`Error::NotFound`] could not find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resource {
    /// A store.
    Store,
    /// A stream.
    Stream,
    /// A subscription.
    Subscription,
    /// A consumer attached to a subscription.
    Consumer,
    /// A delivery that the consumer has not got in flight.
    Delivery,
    /// A snapshot.
    Snapshot,
    /// A worker.
    Worker,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Store => "store",
            Resource::Stream => "stream",
            Resource::Subscription => "subscription",
            Resource::Consumer => "consumer",
            Resource::Delivery => "delivery",
            Resource::Snapshot => "snapshot",
            Resource::Worker => "worker",
        })
    }
}

/// Which side of a request path failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// The caller's own side (its connection, its deadline).
    Client,
    /// The proxy in front of the workers.
    Proxy,
    /// A worker (the process holding the store).
    Worker,
    /// The storage engine under a worker (disk, PostgreSQL).
    Storage,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Proxy => "proxy",
            Side::Worker => "worker",
            Side::Storage => "storage",
        })
    }
}

/// Every failure a [`Gater`](crate::Gater) call can report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    /// An argument was malformed or out of range; nothing changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An identifier was malformed; nothing changed.
    #[error(transparent)]
    InvalidId(#[from] IdError),
    /// The named thing does not exist.
    #[error("{resource} not found: {id}")]
    NotFound {
        /// What kind of thing.
        resource: Resource,
        /// Its id, as text.
        id: String,
    },
    /// The store exists with another configuration.
    #[error("store {store} already exists with a different configuration")]
    StoreConfigConflict {
        /// The store id.
        store: String,
    },
    /// The append's expected version did not hold; nothing was written.
    #[error("wrong expected version: expected {expected}, current {}", DisplayVersion(*.current))]
    WrongExpectedVersion {
        /// The stream whose expectation failed (in a multi-part append, the first such part's).
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was checked (`None`: no stream).
        current: Option<Version>,
    },
    /// The append's condition failed: an event matching its query exists
    /// after its `after` position; nothing was written.
    #[error("append condition failed: a matching event exists at position {position}")]
    AppendConditionFailed {
        /// The position of the first matching event.
        position: Position,
    },
    /// The stream was hard-deleted (tombstoned): every read, append or
    /// version query of it fails, for good; nothing changed.
    #[error("stream {stream} is deleted")]
    StreamDeleted {
        /// The tombstoned stream.
        stream: StreamId,
    },
    /// An event id of the append is already stored somewhere else, or twice in the append.
    #[error("duplicate event id {id}: already stored at another place")]
    DuplicateEventId {
        /// The event id.
        id: EventId,
    },
    /// A configured limit was hit; nothing changed.
    #[error("limit exceeded: {limit} is at most {max}, got {actual}")]
    LimitExceeded {
        /// Which limit.
        limit: String,
        /// Its value.
        max: u64,
        /// What the request asked for.
        actual: u64,
    },
    /// The store is being removed or shut down.
    #[error("store {store} is stopping")]
    StoreStopping {
        /// The store id.
        store: String,
    },
    /// The path to the data is down: a connection, a worker, the database.
    #[error("unavailable ({side}): {message}")]
    Unavailable {
        /// Which side failed.
        side: Side,
        /// What happened.
        message: String,
    },
    /// The request's deadline passed before an answer came.
    #[error("deadline exceeded ({side})")]
    DeadlineExceeded {
        /// Which side gave up.
        side: Side,
    },
    /// Too many requests in flight; back off and retry.
    #[error("overloaded ({side}): {message}")]
    Overloaded {
        /// Which side refused.
        side: Side,
        /// Which bound was full.
        message: String,
    },
    /// The peer spoke a protocol this side does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// This implementation does not offer the operation.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The storage engine failed (I/O, corruption); the request may or may not have applied
    /// only when it is not an append (appends are atomic).
    #[error("storage error: {0}")]
    Storage(String),
    /// The disk (or database) holding the store is full: the store is
    /// read-only until space returns, and heals by itself. Nothing of the
    /// failed append was acknowledged; retrying later is safe.
    #[error("{message}")]
    StorageFull {
        /// The store id.
        store: String,
        /// What is full, in words.
        message: String,
    },
    /// The storage failed (an I/O error, a failed flush, corruption): the
    /// store refuses appends until it is reopened from disk. Nothing of a
    /// failed append was acknowledged.
    #[error("storage failed for store {store}: {message}")]
    StorageFailed {
        /// The store id.
        store: String,
        /// What failed, in words.
        message: String,
    },
    /// The peer speaks another version of the wire protocol; nothing was done.
    #[error("unsupported protocol version {version} (this side speaks {supported})")]
    UnsupportedVersion {
        /// The version the peer sent.
        version: u16,
        /// The version this side speaks.
        supported: u16,
    },
    /// The caller's identity is not granted the request; nothing changed.
    #[error("permission denied: {identity} may not {action}{}", OnStore(.store.as_deref()))]
    PermissionDenied {
        /// The identity from the caller's certificate.
        identity: String,
        /// The method refused.
        action: String,
        /// The store it named, if any.
        store: Option<String>,
        /// The server that refused.
        side: Side,
    },
}

impl Error {
    /// Whether sending the same request again may succeed and is safe.
    ///
    /// Safe means: reads, and appends (whose event ids make them idempotent),
    /// cannot be applied twice. A retryable error never means the request was
    /// half applied.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::DeadlineExceeded { .. }
                | Error::Overloaded { .. }
                | Error::StoreStopping { .. }
                | Error::StorageFull { .. }
        )
    }

    /// The side that failed, for failures of the path (not of the request
    /// itself), and the server that refused a [`Error::PermissionDenied`].
    pub fn side(&self) -> Option<Side> {
        match self {
            Error::Unavailable { side, .. }
            | Error::DeadlineExceeded { side }
            | Error::Overloaded { side, .. } => Some(*side),
            Error::Storage(_) | Error::StorageFull { .. } | Error::StorageFailed { .. } => {
                Some(Side::Storage)
            }
            Error::PermissionDenied { side, .. } => Some(*side),
            _ => None,
        }
    }

    /// A stable snake_case name of the error's kind, for JSON output and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::InvalidId(_) => "invalid_id",
            Error::NotFound { .. } => "not_found",
            Error::StoreConfigConflict { .. } => "store_config_conflict",
            Error::WrongExpectedVersion { .. } => "wrong_expected_version",
            Error::AppendConditionFailed { .. } => "append_condition_failed",
            Error::StreamDeleted { .. } => "stream_deleted",
            Error::DuplicateEventId { .. } => "duplicate_event_id",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::StoreStopping { .. } => "store_stopping",
            Error::Unavailable { .. } => "unavailable",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::Overloaded { .. } => "overloaded",
            Error::Protocol(_) => "protocol",
            Error::Unsupported(_) => "unsupported",
            Error::Storage(_) => "storage",
            Error::StorageFull { .. } => "storage_full",
            Error::StorageFailed { .. } => "storage_failed",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::PermissionDenied { .. } => "permission_denied",
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(resource: Resource, id: impl fmt::Display) -> Self {
        Error::NotFound {
            resource,
            id: id.to_string(),
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    /// Shorthand for [`Error::LimitExceeded`].
    pub fn limit(limit: &str, max: u64, actual: u64) -> Self {
        Error::LimitExceeded {
            limit: limit.to_owned(),
            max,
            actual,
        }
    }

    /// Shorthand for [`Error::Unavailable`].
    pub fn unavailable(side: Side, message: impl Into<String>) -> Self {
        Error::Unavailable {
            side,
            message: message.into(),
        }
    }
}

struct OnStore<'a>(Option<&'a str>);

impl fmt::Display for OnStore<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(store) => write!(f, " on store {store}"),
            None => Ok(()),
        }
    }
}

struct DisplayVersion(Option<Version>);

impl fmt::Display for DisplayVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("no stream"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_expected_version_reads_like_the_cli_promises() {
        let e = Error::WrongExpectedVersion {
            stream: StreamId::new("s").unwrap(),
            expected: ExpectedVersion::Exact(3),
            current: Some(5),
        };
        assert_eq!(
            e.to_string(),
            "wrong expected version: expected 3, current 5"
        );
        assert_eq!(e.kind(), "wrong_expected_version");
        assert!(!e.is_retryable());
    }

    #[test]
    fn path_failures_are_retryable_and_name_their_side() {
        let e = Error::unavailable(Side::Worker, "connection lost");
        assert!(e.is_retryable());
        assert_eq!(e.side(), Some(Side::Worker));
        assert!(!Error::invalid("count 0").is_retryable());
        assert_eq!(Error::invalid("x").side(), None);
    }
}
