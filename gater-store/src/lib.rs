//! Gater's worker-side event store engine: [`Store`] implements
//! [`gater_core::Gater`] directly, over an embedded fjall backend, so an
//! application can embed an event store with no server.
//!
//! Every store of a worker lives in one fjall database under
//! `<data_dir>/db`, each store a pair of keyspaces named from its id, so
//! threads and open files do not grow with the number of stores. One writer
//! task per store groups concurrent appends into one atomic batch, and
//! batches of several stores share one flush (group commit); an append is
//! acknowledged only once its batch is durable. Subscriptions run
//! over the store's global log.
//!
//! With the `postgres` feature, [`Store::open_postgres`] serves the stores of
//! a PostgreSQL database instead, shared by any number of workers.
//!
//! What it does not do: no networking (transports serve a `Store` to remote
//! clients), no routing between workers (the proxy does that), no
//! replication (the PostgreSQL backend is the answer for scale-out).
//!
//! Decisions where the contract is silent:
//! - stream operations on `$all` (append, `get_events`, `get_version`) are
//!   refused with `InvalidArgument`: the global log is read with `read_all`;
//! - an idempotent retry whose ids are a consecutive, in-order part of an
//!   earlier append returns the version and position of its own last event;
//! - events of one batch share one `created_us`, taken when the batch is cut;
//! - `get_store_status` reports the head published to subscriptions, which
//!   may trail the counters by the commit whose appends are being answered;
//!   on shared storage, the later of that and the head just read from the
//!   storage (other workers' commits before this worker's poll sees them).
//!
//! With the `conformance` feature, the `conformance` module holds the suite every
//! `Gater` implementation must pass, and [`SimulatedShared`] lets several
//! workers in one process share stores, for simulations of a shared cluster.
#![warn(missing_docs)]

mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod embedded;
mod engine;
mod faults;
mod hashing;
mod lease;
mod lifecycle;
mod metrics;
mod misses;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "conformance")]
mod shared_sim;
mod stage;
mod subscription;
mod validate;
mod writer;

#[cfg(debug_assertions)]
pub use embedded::InjectedFault;
pub use engine::{Store, StoreOptions};
pub use faults::{
    HealOptions, HEAL_BACKOFF_MAX_MS_DEFAULT, HEAL_FREE_BYTES_MIN_DEFAULT,
    HEAL_FREE_PERCENT_MIN_DEFAULT, HEAL_INTERVAL_MS_DEFAULT,
};
pub use lease::LEASE_PERIOD_MS_DEFAULT;
pub use lifecycle::Clock;
pub use metrics::{StoreMetrics, StoreMetricsSnapshot};
#[cfg(feature = "postgres")]
pub use postgres::{redact_url, PostgresOptions};
#[cfg(feature = "conformance")]
pub use shared_sim::SimulatedShared;
pub use subscription::PeerConnector;
pub use validate::{EVENT_TYPE_LEN_MAX, SNAPSHOT_PART_LEN_MAX};
