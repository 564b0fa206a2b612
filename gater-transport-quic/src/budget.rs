//! The server's memory budget: one figure of bytes, shared by every
//! connection, that bounds everything peers make the server hold. Half of
//! it is for QUIC's buffers, half for the rest, so neither crowds out the other.
//!
//! - QUIC's own buffers: each connection's flow-control windows (receive
//!   and send, see [`receive_windows`]) are reserved from the windows' half
//!   when the connection is admitted and held for its life
//!   ([`MemoryBudget::try_reserve_windows`]); a connection whose windows no
//!   longer fit is refused, so connections × windows never exceed that half
//!   whatever `connections_max` says.
//! - Request frames: a frame reserves its bytes once its header is in,
//!   before its body is read, and holds them until the request is answered
//!   (so a queued append counts while it waits for its batch).
//! - Answers and subscription deliveries: their encoded bytes are reserved
//!   (waiting for room) while they are handed to QUIC; before that, a
//!   delivery waiting in its consumer's buffer in the store (or in a proxy's
//!   relay queue) holds its bytes through [`ByteBudget`].
//!
//! The last two share the other half ([`MemoryBudget::can_hold`]).
//!
//! When the budget is used up, one frame per connection waits for room (QUIC
//! flow control holds the peer meanwhile); any other is read past without
//! being kept and answered with a retryable `Overloaded`, so every stream
//! keeps draining and no frame waits on bytes another waiting frame holds.
//! The process never holds more than the budget because of what peers send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use gater_core::memory::{ByteBudget, Reservation};
use gater_core::wire::FRAME_HEADER_LEN;
use gater_core::{Error, Side};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::frame::COALESCE_BYTES_MAX;

/// Default server-wide byte budget (1 GiB).
pub const MEMORY_MAX_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Smallest flow-control window a connection gets, bytes.
pub const RECEIVE_WINDOW_MIN: u64 = 64 * 1024;
/// Flow-control windows a connection holds: one to receive, one to send.
pub const WINDOWS_PER_CONNECTION: u64 = 2;
/// The part of the budget (1 / this) that connections' windows may take.
const WINDOWS_SHARE_DIVISOR: u64 = 2;

/// A server-wide budget of bytes: one part for connections' windows, the
/// rest for requests, answers and deliveries, so neither crowds out the other.
#[derive(Debug)]
pub struct MemoryBudget {
    /// Bytes of requests, answers and deliveries.
    permits: Arc<Semaphore>,
    /// Bytes of connections' flow-control windows.
    window_permits: Arc<Semaphore>,
    max_bytes: u64,
    /// What `permits` holds at most.
    requests_max_bytes: u64,
    counters: Arc<Counters>,
}

/// What a budget has reserved, shared with its permits.
#[derive(Debug, Default)]
struct Counters {
    in_use: AtomicU64,
    peak: AtomicU64,
    windows: AtomicU64,
}

/// Bytes reserved from a [`MemoryBudget`]; returned when dropped.
#[derive(Debug)]
pub struct BudgetPermit {
    counters: Arc<Counters>,
    bytes: u64,
    windows: bool,
    _permit: OwnedSemaphorePermit,
}

impl MemoryBudget {
    /// A budget of `max_bytes` (capped to what a semaphore can count).
    pub fn new(max_bytes: u64) -> Arc<Self> {
        let max_bytes = max_bytes.min(Semaphore::MAX_PERMITS as u64);
        let windows_max_bytes = max_bytes / WINDOWS_SHARE_DIVISOR;
        let requests_max_bytes = max_bytes - windows_max_bytes;
        Arc::new(MemoryBudget {
            permits: Arc::new(Semaphore::new(requests_max_bytes as usize)),
            window_permits: Arc::new(Semaphore::new(windows_max_bytes as usize)),
            max_bytes,
            requests_max_bytes,
            counters: Arc::default(),
        })
    }

    /// The budget, bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        self.counters.in_use.load(Ordering::Relaxed)
    }

    /// The most bytes ever reserved at once.
    pub fn peak(&self) -> u64 {
        self.counters.peak.load(Ordering::Relaxed)
    }

    /// Bytes reserved now for connections' flow-control windows.
    pub fn windows_in_use(&self) -> u64 {
        self.counters.windows.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` of a request, answer or delivery now, or refuses with a retryable `Overloaded` of `side`.
    pub fn try_reserve(&self, bytes: u64, side: Side) -> Result<BudgetPermit, Error> {
        let count = u32::try_from(bytes).map_err(|_| self.overloaded(bytes, side))?;
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(count)
            .map_err(|_| self.overloaded(bytes, side))?;
        Ok(self.held(permit, bytes, false))
    }

    /// Reserves a connection's flow-control windows (`bytes` in all) now, if
    /// every connection's windows then still fit in their half of the
    /// budget; else refuses with a retryable `Overloaded` of `side`.
    pub fn try_reserve_windows(&self, bytes: u64, side: Side) -> Result<BudgetPermit, Error> {
        let count = u32::try_from(bytes).map_err(|_| self.overloaded(bytes, side))?;
        let permit = Arc::clone(&self.window_permits)
            .try_acquire_many_owned(count)
            .map_err(|_| self.overloaded(bytes, side))?;
        self.counters.windows.fetch_add(bytes, Ordering::Relaxed);
        Ok(self.held(permit, bytes, true))
    }

    /// Reserves `bytes`, waiting for them to be returned if the budget is
    /// used up (deliveries wait rather than fail); more than the whole
    /// budget is refused with `Overloaded` of `side`.
    pub async fn reserve(&self, bytes: u64, side: Side) -> Result<BudgetPermit, Error> {
        if !self.can_hold(bytes) {
            return Err(self.overloaded(bytes, side));
        }
        let count = u32::try_from(bytes).map_err(|_| self.overloaded(bytes, side))?;
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(count)
            .await
            .map_err(|_| self.overloaded(bytes, side))?;
        Ok(self.held(permit, bytes, false))
    }

    /// Whether a request, answer or delivery of `bytes` can ever be
    /// reserved (what windows leave of the budget can hold it).
    pub fn can_hold(&self, bytes: u64) -> bool {
        bytes <= self.requests_max_bytes
    }

    fn held(&self, permit: OwnedSemaphorePermit, bytes: u64, windows: bool) -> BudgetPermit {
        let now = self.counters.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.counters.peak.fetch_max(now, Ordering::Relaxed);
        BudgetPermit {
            counters: Arc::clone(&self.counters),
            bytes,
            windows,
            _permit: permit,
        }
    }

    fn overloaded(&self, bytes: u64, side: Side) -> Error {
        Error::Overloaded {
            side,
            message: format!(
                "memory budget: {bytes} bytes asked, {} of {} in use (memory_max_bytes)",
                self.in_use(),
                self.max_bytes
            ),
        }
    }
}

/// Lets code outside this crate (the proxy's relay queues) count what it
/// holds in the server's budget.
#[async_trait]
impl ByteBudget for MemoryBudget {
    async fn reserve_bytes(&self, bytes: u64, side: Side) -> Result<Reservation, Error> {
        self.reserve(bytes, side).await.map(Reservation::new)
    }

    fn try_reserve_bytes(&self, bytes: u64) -> Option<Reservation> {
        self.try_reserve(bytes, Side::Worker)
            .ok()
            .map(Reservation::new)
    }
}

impl BudgetPermit {
    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        self.counters
            .in_use
            .fetch_sub(self.bytes, Ordering::Relaxed);
        if self.windows {
            self.counters
                .windows
                .fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

/// The smallest budget a server with frames of `frame_bytes_max` accepts:
/// what windows leave of it holds two frames, each with the answers
/// gathered for one write, so one answer or request always fits.
pub fn memory_min_bytes(frame_bytes_max: u32) -> u64 {
    let frame = u64::from(frame_bytes_max) + FRAME_HEADER_LEN as u64;
    WINDOWS_SHARE_DIVISOR * 2 * (frame + COALESCE_BYTES_MAX as u64)
}

/// QUIC flow-control windows from the budget: `(per connection, per stream)`.
///
/// A quarter of `memory_max_bytes` spread over `connections_max` connections
/// (each holds a receive and a send window of that size, so at
/// `connections_max` they take half the budget), but at least
/// [`RECEIVE_WINDOW_MIN`]; a stream's window is half its connection's, so
/// one stream whose frame waits for room never holds all of its
/// connection's window. Frames larger than a window flow through it: the
/// reader drains them into bytes the budget counts.
pub fn receive_windows(memory_max_bytes: u64, connections_max: u32) -> (u64, u64) {
    let share = memory_max_bytes
        / WINDOWS_SHARE_DIVISOR
        / WINDOWS_PER_CONNECTION
        / u64::from(connections_max.max(1));
    let per_connection = share.max(RECEIVE_WINDOW_MIN);
    (per_connection, per_connection / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_past_the_budget_are_refused_and_returned_when_dropped() {
        let budget = MemoryBudget::new(200);
        let a = budget.try_reserve(60, Side::Worker).unwrap();
        let refused = budget.try_reserve(41, Side::Worker).unwrap_err();
        assert!(refused.is_retryable(), "{refused}");
        assert_eq!(refused.kind(), "overloaded");
        let b = budget.try_reserve(40, Side::Worker).unwrap();
        assert_eq!((budget.in_use(), budget.peak()), (100, 100));
        drop((a, b));
        assert_eq!(budget.in_use(), 0);
        assert!(budget.try_reserve(100, Side::Worker).is_ok());
    }

    #[tokio::test]
    async fn a_waiting_reservation_gets_its_bytes_once_they_are_returned() {
        let budget = MemoryBudget::new(200);
        let held = budget.try_reserve(80, Side::Worker).unwrap();
        let waiting = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.reserve(50, Side::Worker).await.map(|p| p.bytes) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(waiting.await.unwrap().unwrap(), 50);
        assert!(budget.reserve(101, Side::Worker).await.is_err());
    }

    #[test]
    fn windows_take_at_most_half_the_budget_and_leave_the_rest_to_requests() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_reserve_windows(30, Side::Worker).unwrap();
        let refused = budget.try_reserve_windows(21, Side::Worker).unwrap_err();
        assert_eq!(refused.kind(), "overloaded");
        assert_eq!(budget.windows_in_use(), 30, "a refusal reserves nothing");
        let b = budget.try_reserve_windows(20, Side::Worker).unwrap();
        assert!(budget.try_reserve(50, Side::Worker).is_ok());
        drop((a, b));
        assert_eq!((budget.windows_in_use(), budget.in_use()), (0, 0));
        // Requests take their half, never the windows'.
        let requests = budget.try_reserve(50, Side::Worker).unwrap();
        assert!(budget.try_reserve(1, Side::Worker).is_err());
        assert!(!budget.can_hold(51));
        let windows = budget.try_reserve_windows(50, Side::Worker).unwrap();
        assert_eq!((budget.in_use(), budget.peak()), (100, 100));
        drop((requests, windows));
    }

    fn check(memory_max_bytes: u64, connections_max: u32, expected: (u64, u64)) {
        let windows = receive_windows(memory_max_bytes, connections_max);
        assert_eq!(
            windows, expected,
            "budget {memory_max_bytes}, {connections_max} connections"
        );
    }

    #[test]
    fn windows_share_a_quarter_of_the_budget_each_way_and_never_fall_under_the_floor() {
        check(1 << 30, 4, (64 << 20, 32 << 20));
        check(1 << 30, 4096, (RECEIVE_WINDOW_MIN, RECEIVE_WINDOW_MIN / 2));
        check(8 << 30, 4096, (512 << 10, 256 << 10));
        check(0, 0, (RECEIVE_WINDOW_MIN, RECEIVE_WINDOW_MIN / 2));
    }

    #[test]
    fn the_default_budget_holds_default_frames() {
        let frame_bytes_max = gater_core::Limits::DEFAULT.frame_bytes_max;
        assert!(memory_min_bytes(frame_bytes_max) <= MEMORY_MAX_BYTES_DEFAULT);
        assert!(memory_min_bytes(frame_bytes_max) > 4 * u64::from(frame_bytes_max));
    }

    #[test]
    fn at_connections_max_every_window_fits_the_budget_above_the_floor() {
        for (max, connections) in [(1u64 << 30, 4096u32), (4 << 30, 100), (1 << 28, 1)] {
            let (window, _) = receive_windows(max, connections);
            let budget = MemoryBudget::new(max);
            let held: Vec<_> = (0..connections)
                .map(|_| budget.try_reserve_windows(WINDOWS_PER_CONNECTION * window, Side::Worker))
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(budget.windows_in_use() <= max / 2);
            drop(held);
        }
    }
}
