//! cqrs-es persistence over Gater.
//!
//! [`GaterEventRepository`] implements cqrs-es's
//! [`PersistedEventRepository`](cqrs_es::persist::PersistedEventRepository)
//! over any [`Gater`](gater_core::Gater): an embedded store, a QUIC client of
//! a server or cluster, a proxy. Plug it into
//! [`PersistedEventStore`](cqrs_es::persist::PersistedEventStore) (event
//! store, snapshot store or aggregate store) as any other cqrs-es backend.
//! [`GaterViewRepository`] implements
//! [`ViewRepository`](cqrs_es::persist::ViewRepository) for
//! [`GenericQuery`](cqrs_es::persist::GenericQuery) views.
//!
//! # Layout in Gater
//!
//! - One stream per aggregate instance, named `{aggregate_type}-{aggregate_id}`
//!   ([`stream_id`]). An id that makes an invalid stream id (empty, over 256
//!   bytes, a control character) is a typed [`RepositoryError::InvalidStreamId`].
//! - A cqrs-es event is one Gater event: the event type is Gater's
//!   `event_type`, the payload is the JSON `data`, and the metadata is a JSON
//!   object [`MetadataEnvelope`] holding the aggregate type and id, the event
//!   version and the cqrs-es metadata, so all four round-trip exactly.
//! - cqrs-es sequences start at 1, Gater versions at 0: sequence = version + 1.
//! - A snapshot is a Gater snapshot with source = aggregate type, stream = the
//!   aggregate's stream, version = the Gater version of the last event it
//!   covers, and data = [`SnapshotData`] (the aggregate's JSON and the
//!   cqrs-es snapshot counter).
//! - A view instance is a stream `{view_name}-{view_id}`; each update appends
//!   the whole view as one `ViewUpdated` event (see [`GaterViewRepository`]).
//!
//! # Consistency
//!
//! `persist` is one atomic append whose expected version comes from the first
//! event's sequence, so two commands that loaded the same state cannot both
//! commit: the loser gets `PersistenceError::OptimisticLockError`. Each
//! `persist` draws fresh random (version 4) event ids and keeps them for its
//! retries: a retry after a lost answer is recognised by Gater as the same
//! append and returns the original result instead of writing twice, while a
//! *different* command's events never share ids with stored ones, so they can
//! never be taken for a retry (ids derived from the aggregate and sequence
//! alone would let a stale command's events pass as a retry of the winner's).
//! The snapshot is written only after the append succeeded, so a crash never
//! leaves a snapshot ahead of its events; if writing it fails, the commit
//! stands and `persist` says so ([`RepositoryError::SnapshotNotRecorded`]).
//!
//! cqrs-es hands a repository a snapshot's state but not the sequence it
//! covers. A commit of one event is covered by it. For a commit of several,
//! a snapshot store (`new_snapshot_store`) builds the state from the events
//! up to its snapshot boundary only, which may end before the commit does;
//! the adapter then replays the aggregate from its previous snapshot through
//! the commit (without upcasters) and keys the snapshot at the last event
//! after which the state equals it. If none does (or the replay does not
//! decode), the snapshot is not recorded and `persist` says so
//! ([`RepositoryError::SnapshotCoverage`]): a snapshot under the wrong
//! version would make loads skip or repeat events.
//!
//! What it does not do: it does not retry a command (cqrs-es's caller decides
//! that, on reloaded state), it keeps every snapshot it records (older ones
//! can be deleted with `Gater::delete_snapshot`), and it depends on no
//! transport: the caller brings the `Gater`.

#![warn(missing_docs)]

mod codec;
mod error;
mod options;
mod repository;
mod view;

pub use codec::{stream_id, MetadataEnvelope, SnapshotData, VIEW_UPDATED_EVENT_TYPE};
pub use error::RepositoryError;
pub use options::{
    RepositoryOptions, CALL_ATTEMPTS_MAX_DEFAULT, READ_PAGE_LEN_DEFAULT, REPLAY_QUEUE_LEN_DEFAULT,
    RETRY_BACKOFF_MS_DEFAULT,
};
pub use repository::GaterEventRepository;
pub use view::GaterViewRepository;
