//! Every bound of the system, named in one place.
//!
//! Hitting a limit gives [`Error::LimitExceeded`](crate::Error::LimitExceeded)
//! or back-pressure, never unbounded memory.

use serde::{Deserialize, Serialize};

/// The limits a worker or proxy enforces. [`Limits::default`] holds the shipped values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest wire frame, in bytes.
    pub frame_bytes_max: u32,
    /// Most events in one append.
    pub append_events_max: u32,
    /// Largest event (type + data + metadata + content type), in bytes.
    pub event_bytes_max: u32,
    /// Most events one read returns.
    pub read_count_max: u32,
    /// Most streams one `get_streams` page returns.
    pub streams_page_max: u32,
    /// Largest unacked window a consumer may ask for.
    pub subscription_window_max: u32,
    /// Appends queued for a store's writer before callers wait.
    pub append_queue_len: u32,
    /// Requests in flight on one connection.
    pub connection_in_flight_max: u32,
    /// Connections one server accepts at once.
    pub connections_max: u32,
    /// Largest snapshot, in bytes.
    pub snapshot_bytes_max: u32,
    /// Most stores one worker holds open.
    pub stores_max: u32,
}

impl Limits {
    /// The shipped limits.
    pub const DEFAULT: Limits = Limits {
        frame_bytes_max: 16 * 1024 * 1024,
        append_events_max: 10_000,
        event_bytes_max: 1024 * 1024,
        read_count_max: 10_000,
        streams_page_max: 10_000,
        subscription_window_max: 10_000,
        append_queue_len: 4096,
        connection_in_flight_max: 1024,
        connections_max: 4096,
        snapshot_bytes_max: 8 * 1024 * 1024,
        stores_max: 100_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
