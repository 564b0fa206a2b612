//! Gater's pure core: the vocabulary every other crate speaks.
//!
//! It holds the domain model ([`StoreId`], [`StreamId`], [`EventData`],
//! [`RecordedEvent`], subscriptions, snapshots, store administration), the
//! [`Gater`] trait whose doc comments are the API contract, the typed
//! [`Error`], the [`access`] rules (roles, grants, the per-connection check),
//! the [`wire`] messages with their frame codec, the [`dispatch`]
//! ends every transport shares, the pure [`routing`] policy the proxy
//! uses to pick workers, and the [`memory`] budget's interface.
//!
//! What it does not do: no I/O of any kind. There is no async runtime, no
//! socket, no file, no clock and no OS entropy in this crate; time and
//! randomness are arguments. That keeps every piece here deterministic and
//! testable with property tests, and lets transports, stores and the proxy
//! share one definition of every message.

#![warn(missing_docs)]

pub mod access;
mod api;
mod append;
pub mod dispatch;
mod error;
mod event;
mod id;
mod lifecycle;
mod limits;
pub mod memory;
pub mod metrics;
pub mod page;
pub mod pending;
pub mod query;
mod rng;
pub mod routing;
pub mod selector;
mod snapshot;
mod store;
mod subscription;
pub mod trace;
pub mod wire;

pub use api::{BoxGater, Gater};
pub use append::{
    Append, AppendCondition, AppendOutcome, AppendPart, StreamVersion, APPEND_PARTS_MAX,
};
pub use error::{Error, IdError, Resource, Side};
pub use event::{
    AppendResult, Direction, EventData, ExpectedVersion, Position, RecordedEvent, StreamInfo,
    StreamPage, Version, CONTENT_TYPE_JSON,
};
pub use id::{EventId, StoreId, StreamId, ALL_STREAM, STORE_ID_LEN_MAX, STREAM_ID_LEN_MAX};
pub use lifecycle::{Compaction, Retention, StreamLifecycle, StreamRetention};
pub use limits::Limits;
pub use query::{Query, QueryItem};
pub use rng::Rng;
pub use snapshot::{Snapshot, SnapshotKey};
pub use store::{
    StoreConfig, StoreFault, StoreInfo, StoreState, StoreStatus, VerifyReport, WorkerHealth,
    WorkerInfo,
};
pub use subscription::{
    ConsumerId, ConsumerStrategy, Delivery, NackAction, SubscribeOptions, Subscription,
    SubscriptionEnd, SubscriptionInfo, SubscriptionItem, SubscriptionKey, SubscriptionSpec,
    SubscriptionType, SELECTOR_LEN_MAX, SUBSCRIPTION_NAME_LEN_MAX, TRANSIENT,
};
