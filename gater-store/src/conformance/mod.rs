//! The Gater conformance suite: the contract of `gater_core::Gater`, checked
//! through the trait only, so every implementation (the embedded store, the
//! transports' clients, the proxy, other backends) runs the same cases.
//!
//! Each case creates its own uniquely named store, so cases do not interfere
//! and can share one `Gater`. A failing case panics with its name.

use gater_core::Gater;

pub mod subscriptions;

/// Runs every case of the suite against `gater`.
pub async fn run_all(gater: &dyn Gater) {
    subscriptions::run(gater).await;
}
