//! QUIC transport: serve any [`Gater`](gater_core::Gater) over quinn with
//! mutual TLS, and connect to it as a `Gater`.
//!
//! The server ([`serve`], or [`Server::bind`] then [`Server::run`]) answers
//! request streams: a client writes any number of
//! [`RequestEnvelope`](gater_core::wire::RequestEnvelope) frames, each with
//! a request id, on one bidirectional stream, and the server answers each
//! with a [`ResponseEnvelope`](gater_core::wire::ResponseEnvelope) frame
//! carrying that id, as soon as its answer is ready (so answers may overtake
//! one another), coalescing answers that are ready into one write. Requests
//! in flight on a connection are bounded (`streams_per_connection_max`); past
//! the bound the server stops reading and QUIC flow control holds the
//! client. A subscription is one long stream with credit-based flow control
//! (see the `subscription` module docs). Bad input (a foreign protocol
//! version, an oversize frame, bytes that do not decode, a truncated frame)
//! gets a typed error on its stream (a foreign version: `unsupported_version`);
//! the connection and the server keep serving. ALPN is `gater/1`; TLS is
//! rustls with the ring provider, TLS 1.3 only, and the server requires a
//! client certificate signed by its CA.
//!
//! The client ([`connect`]) is a [`QuicClient`]: a `Gater` that keeps one
//! connection and a few long-lived request streams on it
//! ([`REQUEST_STREAMS`], fewer if the server allows fewer streams), shared
//! by every call (round robin, pipelined, answers matched by id), and
//! reconnects with back-off. Its
//! connection attempts race across the addresses it was given (the next
//! address is dialled after a short stagger, the first handshake wins), and
//! it remembers addresses that failed, dialling them last while they back off.
//! A dead server is noticed within the client's idle timeout (600 ms by
//! default; keep-alives make a live one answer meanwhile). A call in flight
//! when the connection or the stream drops gives that connection up: with
//! other addresses to go to it is sent once more on a new connection if
//! gater-core's `retry_is_safe` allows it for its request class (reads,
//! appends, idempotent writes), and otherwise fails at once with a retryable
//! `Unavailable { side: Worker }`; every call has a deadline. Acks and nacks
//! travel as unary requests.
//!
//! [`certs`] generates development certificates in the layout the `gater`
//! binary uses, and signs a certificate per identity with an existing CA.
//! Given access rules ([`ServerConfig::access`]), the server serves each
//! connection under the identity of its certificate ([`peer_identity`]).
//! One server-wide [`MemoryBudget`] ([`ServerConfig::memory_max_bytes`])
//! bounds what peers make the server hold: each connection's QUIC windows
//! (a connection whose windows do not fit is refused), request frames until
//! answered, answers and deliveries until QUIC has them. Past it one frame
//! per connection waits for room and others get a retryable `Overloaded`.
//!
//! What it does not do: no retries of calls that failed otherwise than by
//! losing their connection (the proxy decides those, with its budget), and
//! none at all for a client of one address; no load balancing across addresses (they are
//! fail-over targets), and no certificate management beyond development
//! certificates.

#![warn(missing_docs)]

mod budget;
pub mod certs;
mod client;
mod dialer;
mod frame;
mod identity;
mod mux;
mod requests;
mod server;
mod subscription;
mod tls;

use std::time::Duration;

pub use budget::{
    memory_min_bytes, receive_windows, BudgetPermit, MemoryBudget, MEMORY_MAX_BYTES_DEFAULT,
    RECEIVE_WINDOW_MIN, WINDOWS_PER_CONNECTION,
};
pub use client::{
    connect, ClientOptions, QuicClient, QuicLink, BACKOFF_MAX_MS_DEFAULT, BACKOFF_MIN_MS_DEFAULT,
    CLIENT_IDLE_TIMEOUT_MS_DEFAULT, CLIENT_KEEP_ALIVE_MS_DEFAULT, CONNECT_TIMEOUT_MS_DEFAULT,
    DEADLINE_MS_DEFAULT, RACE_STAGGER_MS_DEFAULT, REQUEST_STREAMS, SUBSCRIPTION_CREDIT_DEFAULT,
};
pub use identity::{certificate_identity, peer_identity};
pub use server::{
    serve, ServeError, Server, ServerConfig, IDLE_TIMEOUT_MS_DEFAULT, KEEP_ALIVE_MS_DEFAULT,
    SHUTDOWN_GRACE_MS_DEFAULT, SUBSCRIPTION_CREDIT_MAX_DEFAULT,
};
pub use tls::{load_certs, load_key, ClientTls, ServerTls, TlsError};

/// Packets carrying data (or anything else that asks for an acknowledgement)
/// the peer may receive before it must acknowledge them, asked of it through
/// QUIC's acknowledgement-frequency extension (both ends are quinn). QUIC's
/// own rule acknowledges every second packet: under many small requests
/// that is one datagram of acknowledgement for every two of requests or
/// answers, each a `sendmsg`. Answers carry acknowledgements of the requests
/// anyway; fewer acknowledgement-only datagrams measured about a quarter
/// fewer `sendmsg` calls per append in a proxy. Small enough that a
/// connection's first congestion window (about a dozen packets) still gets
/// acknowledgements without waiting for [`ACK_DELAY_MAX_US`].
const ACK_ELICITING_THRESHOLD: u32 = 8;
/// Longest the peer may hold back an acknowledgement below
/// [`ACK_ELICITING_THRESHOLD`], microseconds (QUIC's default is 25 ms).
const ACK_DELAY_MAX_US: u64 = 5_000;

/// quinn transport settings, every one explicit: idle timeout, keep-alive,
/// how many bidirectional streams the peer may open at once, and how often
/// the peer acknowledges.
fn transport_config(
    idle_timeout_ms: u64,
    keep_alive_ms: u64,
    peer_streams_max: u32,
) -> Result<quinn::TransportConfig, String> {
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(idle_timeout_ms))
        .map_err(|e| format!("idle timeout {idle_timeout_ms} ms: {e}"))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(Duration::from_millis(keep_alive_ms)))
        .max_concurrent_bidi_streams(peer_streams_max.into())
        .max_concurrent_uni_streams(0u32.into());
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(ACK_ELICITING_THRESHOLD.into())
        .max_ack_delay(Some(Duration::from_micros(ACK_DELAY_MAX_US)));
    transport.ack_frequency_config(Some(acks));
    Ok(transport)
}
