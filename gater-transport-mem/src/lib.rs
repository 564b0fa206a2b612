//! In-process transport: serve any [`Gater`](gater_core::Gater) and get a
//! `Gater` client back, through the same wire messages as QUIC.
//!
//! [`serve`] puts a server in front of a `Gater`; [`MemServer::client`] hands
//! out [`MemClient`]s, which are `Gater`s themselves, so a proxy over mem
//! clients over stores is a whole cluster in one process. Every call becomes
//! a [`Request`](gater_core::wire::Request) and comes back as a
//! [`Response`](gater_core::wire::Response); a subscription is a bounded
//! channel of [`SubscriptionDown`](gater_core::wire::SubscriptionDown) with
//! credit flowing up as [`SubscriptionUp`](gater_core::wire::SubscriptionUp),
//! exactly as on a QUIC stream. With [`MemOptions::codec`] every message also
//! round-trips through postcard frames, so what passes in memory passes on the
//! wire.
//!
//! For deterministic simulation a client carries [`Faults`] (dropped
//! requests, dropped responses, random delays) drawn from a seeded generator,
//! and can have its connection cut ([`MemLink::set_connected`]); a server can
//! be crashed and restored ([`MemServer::set_down`]). Under tokio's paused
//! clock a run is a function of its seed.
//!
//! [`serve_guarded`] holds clients to access rules: each client made with
//! [`MemServer::client_as`] is served under that identity, as a QUIC server
//! serves a connection under its certificate's name.
//!
//! Acks and nacks travel as unary requests (`ack_event`, `nack_event`); the
//! server also answers `SubscriptionUp::Ack`/`Nack` on a subscription stream
//! with `AckResult`, as the QUIC server does.
//!
//! What it does not do: no sockets, no TLS, no retries (the proxy decides
//! those), and no per-delivery faults (a subscription stream is reliable, as a
//! QUIC stream is: it ends when its connection does).

#![warn(missing_docs)]

mod breaker;
mod carry;
mod client;
mod faults;
mod server;
mod subscription;

pub use client::{MemClient, MemClientOptions, MemLink};
pub use faults::Faults;
pub use server::{
    serve, serve_guarded, serve_with, MemOptions, MemServer, SUBSCRIPTION_CREDIT_DEFAULT,
};
