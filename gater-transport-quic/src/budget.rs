//! The server's memory budget: one semaphore of bytes, shared by every
//! connection. A request frame reserves its bytes once its header is in,
//! before its body is read, and holds them until the request is answered (so
//! a queued append counts while it waits for its batch); a subscription
//! delivery's frame reserves its bytes while it is handed to QUIC. When the
//! budget is used up, new frames wait for room (QUIC flow control holds the
//! peer meanwhile) and a frame larger than the whole budget is refused with
//! a retryable `Overloaded`: the process never holds more request bytes than
//! the budget because of what peers send.
//!
//! QUIC's own receive buffers are bounded from the same figure (see
//! [`receive_windows`]): half the budget is spread over the connections as
//! flow-control windows, but a connection's window is never smaller than one
//! whole frame, so a frame can always arrive whole (a smaller window stalled
//! connections in the flood test). With the shipped limits (16 MiB frames,
//! 4,096 connections) that floor, not the budget, bounds QUIC's buffers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gater_core::wire::FRAME_HEADER_LEN;
use gater_core::{Error, Side};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default server-wide byte budget (1 GiB).
pub const MEMORY_MAX_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Smallest flow-control window a connection gets, bytes.
pub const RECEIVE_WINDOW_MIN: u64 = 64 * 1024;

/// A server-wide budget of bytes.
#[derive(Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    max_bytes: u64,
    in_use: AtomicU64,
    peak: AtomicU64,
}

/// Bytes reserved from a [`MemoryBudget`]; returned when dropped.
#[derive(Debug)]
pub struct BudgetPermit {
    budget: Arc<MemoryBudget>,
    bytes: u64,
    _permit: OwnedSemaphorePermit,
}

impl MemoryBudget {
    /// A budget of `max_bytes` (capped to what a semaphore can count).
    pub fn new(max_bytes: u64) -> Arc<Self> {
        let max_bytes = max_bytes.min(Semaphore::MAX_PERMITS as u64);
        Arc::new(MemoryBudget {
            permits: Arc::new(Semaphore::new(max_bytes as usize)),
            max_bytes,
            in_use: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        })
    }

    /// The budget, bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes reserved now.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The most bytes ever reserved at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` now, or refuses with a retryable `Overloaded` of `side`.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64, side: Side) -> Result<BudgetPermit, Error> {
        let count = u32::try_from(bytes).map_err(|_| self.overloaded(bytes, side))?;
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(count)
            .map_err(|_| self.overloaded(bytes, side))?;
        Ok(self.held(permit, bytes))
    }

    /// Reserves `bytes`, waiting for them to be returned if the budget is
    /// used up (deliveries wait rather than fail); more than the whole
    /// budget is refused with `Overloaded` of `side`.
    pub async fn reserve(self: &Arc<Self>, bytes: u64, side: Side) -> Result<BudgetPermit, Error> {
        if bytes > self.max_bytes {
            return Err(self.overloaded(bytes, side));
        }
        let count = u32::try_from(bytes).map_err(|_| self.overloaded(bytes, side))?;
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(count)
            .await
            .map_err(|_| self.overloaded(bytes, side))?;
        Ok(self.held(permit, bytes))
    }

    fn held(self: &Arc<Self>, permit: OwnedSemaphorePermit, bytes: u64) -> BudgetPermit {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        BudgetPermit {
            budget: Arc::clone(self),
            bytes,
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

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// QUIC flow-control windows from the budget: `(per connection, per stream)`.
///
/// Half of `memory_max_bytes` spread over `connections_max` connections, but
/// at least one whole frame (and [`RECEIVE_WINDOW_MIN`]); a stream's window
/// is one whole frame at most.
pub fn receive_windows(
    memory_max_bytes: u64,
    connections_max: u32,
    frame_bytes_max: u32,
) -> (u64, u64) {
    let frame = u64::from(frame_bytes_max) + FRAME_HEADER_LEN as u64;
    let share = memory_max_bytes / 2 / u64::from(connections_max.max(1));
    let per_connection = share.max(frame).max(RECEIVE_WINDOW_MIN);
    (per_connection, per_connection.min(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_past_the_budget_are_refused_and_returned_when_dropped() {
        let budget = MemoryBudget::new(100);
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
        let budget = MemoryBudget::new(100);
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
    fn windows_share_half_the_budget_but_hold_at_least_a_frame() {
        let frame = |bytes: u64| bytes + FRAME_HEADER_LEN as u64;
        // The share of the budget when it holds a frame.
        let (connection, stream) = receive_windows(1 << 30, 4, 1024);
        assert_eq!((connection, stream), (128 << 20, frame(1024)));
        // Never less than a whole frame.
        let (connection, stream) = receive_windows(1 << 30, 4096, 16 << 20);
        assert_eq!((connection, stream), (frame(16 << 20), frame(16 << 20)));
        assert_eq!(receive_windows(0, 0, 1).0, RECEIVE_WINDOW_MIN);
    }
}
