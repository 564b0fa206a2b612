//! The Gater conformance suite: the contract of `gater_core::Gater`, checked
//! through the trait only, so every implementation (the embedded store, the
//! transports' clients, the proxy, other backends) runs the same cases.
//!
//! Each case creates its own uniquely named store, so cases do not interfere
//! and can share one `Gater`. A failing case panics with its name. The suite
//! assumes the implementation enforces the default `Limits`.

use gater_core::Gater;

pub mod access;
pub mod dcb;
pub mod lifecycle;
pub mod snapshots;
pub mod stores;
pub mod streams;
pub mod subscriptions;
pub mod support;

/// Runs every case of the suite against `gater`.
pub async fn run_all(gater: &dyn Gater) {
    streams::run(gater).await;
    snapshots::run(gater).await;
    stores::run(gater).await;
    subscriptions::run(gater).await;
    dcb::run(gater).await;
    lifecycle::run(gater).await;
}
