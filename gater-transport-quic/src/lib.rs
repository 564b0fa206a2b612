//! QUIC transport: serve any `Gater` over quinn with mutual TLS, and connect to it as a `Gater`.
#![warn(missing_docs)]
