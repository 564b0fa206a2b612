//! Gater's worker-side event store engine: [`Store`] implements
//! [`gater_core::Gater`] directly, over an embedded fjall backend, so an
//! application can embed an event store with no server.
//!
//! Each store lives in its own fjall database under
//! `<data_dir>/stores/<store_id>`. One writer task per store groups
//! concurrent appends into one atomic batch and one flush (group commit); an
//! append is acknowledged only once its batch is durable. Subscriptions run
//! over the store's global log.
//!
//! With the `postgres` feature, [`Store::open_postgres`] serves the stores of
//! a PostgreSQL database instead, shared by any number of workers.
//!
//! What it does not do: no networking (transports serve a `Store` to remote
//! clients), no routing between workers (the proxy does that), no
//! replication (the PostgreSQL backend is the answer for scale-out).
//!
//! With the `conformance` feature, [`conformance`] holds the suite every
//! `Gater` implementation must pass.
#![warn(missing_docs)]

mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod embedded;
mod engine;
#[cfg(all(feature = "postgres", feature = "conformance"))]
pub mod pg_harness;
#[cfg(feature = "postgres")]
mod postgres;
#[allow(dead_code)] // the interface is wider than what its current bodies use
mod subscription;
mod validate;
mod writer;

pub use engine::{Store, StoreOptions};
#[cfg(feature = "postgres")]
pub use postgres::PostgresOptions;
pub use validate::{EVENT_TYPE_LEN_MAX, SNAPSHOT_PART_LEN_MAX};
