//! One attached consumer, seen from both ends: the task's side (a bounded
//! sender plus the slot for the end reason) and the consumer's side (the
//! stream of items that ends with `SubscriptionItem::End` and detaches on drop).
//!
//! The end reason travels on its own oneshot rather than through the item
//! channel, so ending a consumer never needs room in a channel that a slow
//! consumer keeps full.
//!
//! A delivery travels with the bytes it holds in the server's memory budget
//! (if the store has one): they are returned when the consumer takes the
//! delivery from its stream, or when the stream is dropped with deliveries
//! still queued.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::Stream;
use gater_core::memory::Reservation;
use gater_core::{ConsumerId, Error, Side, SubscriptionEnd, SubscriptionItem};
use tokio::sync::{mpsc, oneshot, Notify};

/// Items a consumer's channel holds beyond its window: the one `CaughtUp` marker.
pub(super) const CHANNEL_SLACK: usize = 1;

/// An item in a consumer's channel with the budget bytes it holds until taken.
pub(super) type Queued = (SubscriptionItem, Option<Reservation>);

/// The subscription task's handle on one consumer.
#[derive(Debug)]
pub(super) struct ConsumerLink {
    /// The consumer's id.
    pub(super) id: ConsumerId,
    /// Most unacked deliveries at once.
    pub(super) window: u32,
    /// Unacked deliveries now (persistent subscriptions only).
    pub(super) in_flight: u32,
    /// Whether `CaughtUp` has been sent.
    pub(super) caught_up_sent: bool,
    items: mpsc::Sender<Queued>,
    end: oneshot::Sender<SubscriptionEnd>,
}

/// The consumer's side: a stream of items that ends with `End`, then `None`.
///
/// Dropping it closes the channel and wakes the task, which then detaches
/// the consumer: that is what makes cleanup immediate, with no sweeping.
#[derive(Debug)]
pub(super) struct ConsumerStream {
    items: mpsc::Receiver<Queued>,
    end: Option<oneshot::Receiver<SubscriptionEnd>>,
    detached: Arc<Notify>,
}

/// Builds both ends of a consumer whose channel holds `window` deliveries plus slack.
///
/// `detached` is the owning task's wake-up, notified when the stream is dropped.
pub(super) fn consumer_pair(
    id: ConsumerId,
    window: u32,
    detached: Arc<Notify>,
) -> (ConsumerLink, ConsumerStream) {
    let capacity = window as usize + CHANNEL_SLACK;
    let (items_tx, items_rx) = mpsc::channel(capacity);
    let (end_tx, end_rx) = oneshot::channel();
    let link = ConsumerLink {
        id,
        window,
        in_flight: 0,
        caught_up_sent: false,
        items: items_tx,
        end: end_tx,
    };
    let stream = ConsumerStream {
        items: items_rx,
        end: Some(end_rx),
        detached,
    };
    (link, stream)
}

impl ConsumerLink {
    /// Free slots in the channel; sending never blocks within them (the task is the only sender).
    pub(super) fn channel_room(&self) -> usize {
        self.items.capacity()
    }

    /// Whether the consumer's stream was dropped.
    pub(super) fn is_detached(&self) -> bool {
        self.items.is_closed()
    }

    /// Sends an item, with the budget bytes it holds, if the channel has
    /// room; whether it was sent (if not, the bytes go back at once).
    pub(super) fn try_send(&self, item: SubscriptionItem, held: Option<Reservation>) -> bool {
        self.items.try_send((item, held)).is_ok()
    }

    /// A clone of the sender, to wait for channel room without borrowing the task's state.
    pub(super) fn sender(&self) -> mpsc::Sender<Queued> {
        self.items.clone()
    }

    /// Ends the consumer: its stream yields what is queued, then `End(end)`.
    pub(super) fn finish(self, end: SubscriptionEnd) {
        // The consumer may be gone already; then nobody wants the reason.
        let _ = self.end.send(end);
    }
}

impl Stream for ConsumerStream {
    type Item = SubscriptionItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SubscriptionItem>> {
        let this = self.get_mut();
        let Some(end) = this.end.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some((item, held)) = ready!(this.items.poll_recv(cx)) {
            // Taken: its bytes are the taker's to count from here on.
            drop(held);
            return Poll::Ready(Some(item));
        }
        let reason = ready!(Pin::new(end).poll(cx)).unwrap_or_else(|_| {
            SubscriptionEnd::Failed(Error::unavailable(
                Side::Worker,
                "the subscription stopped without saying why",
            ))
        });
        this.end = None;
        Poll::Ready(Some(SubscriptionItem::End(reason)))
    }
}

impl Drop for ConsumerStream {
    fn drop(&mut self) {
        self.items.close();
        // What is still queued goes now, with its budget bytes, rather than
        // when the task gets round to detaching this consumer.
        while self.items.try_recv().is_ok() {}
        self.detached.notify_one();
    }
}
