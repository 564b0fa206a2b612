//! Gater's worker-side event store engine: implements `Gater` over an embedded fjall backend.
#![warn(missing_docs)]

#[cfg(feature = "conformance")]
pub mod conformance;
#[allow(dead_code)] // wired into the store by the engine
mod subscription;
