//! A byte budget as seen by code that holds bytes peers made it hold but may
//! not depend on the budget's implementation: the proxy counts its relay
//! queues in the memory budget of the server in front of it, which lives
//! with the QUIC transport and its async runtime.
//!
//! What it does not do: no accounting of its own; [`ByteBudget`] is
//! implemented where the budget is.

use async_trait::async_trait;

use crate::{Error, Side};

/// Bytes reserved from a [`ByteBudget`]; they are returned when it is dropped.
pub struct Reservation {
    _held: Box<dyn std::any::Any + Send + Sync>,
}

impl Reservation {
    /// Wraps whatever returns the bytes when dropped.
    pub fn new(held: impl std::any::Any + Send + Sync) -> Self {
        Reservation {
            _held: Box::new(held),
        }
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").finish_non_exhaustive()
    }
}

/// A budget of bytes shared by everything a server holds for its peers.
#[async_trait]
pub trait ByteBudget: Send + Sync + std::fmt::Debug {
    /// Reserves `bytes`, waiting for room while the budget is used up; only
    /// what the budget can never hold is refused, with a retryable
    /// `Overloaded` of `side`.
    async fn reserve_bytes(&self, bytes: u64, side: Side) -> Result<Reservation, Error>;
}
