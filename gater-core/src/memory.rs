//! A byte budget as seen by code that holds bytes peers made it hold but may
//! not depend on the budget's implementation: the proxy counts its relay
//! queues, and the store its consumers' delivery buffers, in the memory
//! budget of the server in front of them, which lives with the QUIC
//! transport and its async runtime.
//!
//! What it does not do: no accounting of its own; [`ByteBudget`] is
//! implemented where the budget is.

use async_trait::async_trait;

use crate::{Error, RecordedEvent, Side, SubscriptionItem};

/// Bytes a buffered subscription item is counted for beyond its event's own
/// (ids, stream, position, framing).
pub const ITEM_OVERHEAD_BYTES: u64 = 128;

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

    /// Reserves `bytes` now if the budget has room; `None` when the caller
    /// must wait for room with [`ByteBudget::reserve_bytes`] (what a budget
    /// that cannot tell without waiting always answers).
    fn try_reserve_bytes(&self, _bytes: u64) -> Option<Reservation> {
        None
    }
}

/// The bytes a subscription item is counted for while it waits in a buffer
/// for its consumer: its event's own size (`size_bytes`) and stream name, plus
/// [`ITEM_OVERHEAD_BYTES`].
pub fn item_bytes(item: &SubscriptionItem) -> u64 {
    match item {
        SubscriptionItem::Event(delivery) => event_bytes(&delivery.event),
        _ => ITEM_OVERHEAD_BYTES,
    }
}

/// The bytes a delivery of `event` is counted for while buffered (see [`item_bytes`]).
pub fn event_bytes(event: &RecordedEvent) -> u64 {
    (event.data.size_bytes() + event.stream.as_str().len()) as u64 + ITEM_OVERHEAD_BYTES
}
