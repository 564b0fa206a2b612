//! Gater's worker-side event store engine: implements `Gater` over an embedded fjall backend.
#![warn(missing_docs)]
