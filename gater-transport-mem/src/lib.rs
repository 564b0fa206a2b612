//! In-process transport: serve any `Gater` and get a `Gater` client back, through the same wire messages as QUIC.
#![warn(missing_docs)]
