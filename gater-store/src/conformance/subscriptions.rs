//! Conformance cases for subscriptions.

use gater_core::Gater;

/// Runs every subscription case against `gater`.
pub async fn run(gater: &dyn Gater) {
    let _ = gater;
}
