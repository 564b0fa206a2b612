//! Subscription streams over the in-process link: the server's pump, which
//! sends no more items than the consumer granted, and the consumer's side,
//! which grants credit as it reads.

use std::sync::Arc;

use futures::StreamExt;
use gater_core::wire::{SubscriptionDown, SubscriptionUp};
use gater_core::{
    BoxGater, ConsumerId, Error, NackAction, Position, Side, StoreId, Subscription,
    SubscriptionEnd, SubscriptionItem, SubscriptionKey,
};
use tokio::sync::mpsc;

use crate::breaker::Breaker;
use crate::carry::Codec;
use crate::server::{down, Inner};

/// Messages from a consumer waiting for the server; credit is batched, so a
/// few slots suffice.
pub(crate) const UP_CHANNEL_LEN: usize = 16;

/// The server's end of one subscription.
pub(crate) struct Pump {
    pub(crate) server: Arc<Inner>,
    /// What acks and nacks go to: the server's gater as this consumer's identity sees it.
    pub(crate) gater: BoxGater,
    pub(crate) store: StoreId,
    pub(crate) key: SubscriptionKey,
    pub(crate) consumer: ConsumerId,
    /// The server's epoch when the consumer attached.
    pub(crate) epoch: u64,
}

impl Pump {
    /// Moves items from `sub` to the consumer within its credit, and answers
    /// what comes up, until the subscription ends, the consumer leaves or
    /// the server goes down.
    pub(crate) async fn run(
        self,
        mut sub: Subscription,
        down_tx: mpsc::Sender<SubscriptionDown>,
        mut up_rx: mpsc::Receiver<SubscriptionUp>,
    ) {
        let credit_max = self.server.options.subscription_credit;
        let mut credit: u32 = 0;
        loop {
            tokio::select! {
                biased;
                () = self.server.breaker.tripped(self.epoch) => {
                    let end = SubscriptionItem::End(SubscriptionEnd::Failed(down()));
                    // The consumer may have no room left; it then sees the channel close.
                    let _ = down_tx.try_send(SubscriptionDown::Item(end));
                    return;
                }
                up = up_rx.recv() => match up {
                    None | Some(SubscriptionUp::Close) => return,
                    Some(SubscriptionUp::Credit(n)) => {
                        credit = credit.saturating_add(n).min(credit_max);
                    }
                    Some(SubscriptionUp::Ack(position)) => {
                        let answer = self.settle(position, None).await;
                        if self.send(&down_tx, answer).await.is_err() {
                            return;
                        }
                    }
                    Some(SubscriptionUp::Nack(position, action)) => {
                        let answer = self.settle(position, Some(action)).await;
                        if self.send(&down_tx, answer).await.is_err() {
                            return;
                        }
                    }
                },
                item = sub.next(), if credit > 0 => {
                    credit -= 1;
                    let item = item.unwrap_or_else(|| {
                        SubscriptionItem::End(SubscriptionEnd::Failed(Error::unavailable(
                            Side::Worker,
                            "subscription ended without an end item",
                        )))
                    });
                    let last = matches!(item, SubscriptionItem::End(_));
                    if self.send(&down_tx, SubscriptionDown::Item(item)).await.is_err() || last {
                        return;
                    }
                }
            }
        }
    }

    /// Applies an ack (`action` is `None`) or a nack sent up the stream.
    async fn settle(&self, position: Position, action: Option<NackAction>) -> SubscriptionDown {
        let gater = &self.gater;
        let (store, key, consumer) = (&self.store, &self.key, self.consumer);
        let result = match action {
            None => gater.ack_event(store, key, consumer, position).await,
            Some(action) => {
                gater
                    .nack_event(store, key, consumer, position, action)
                    .await
            }
        };
        SubscriptionDown::AckResult(position, result)
    }

    /// Carries one message down; `Err` when the consumer is gone.
    async fn send(
        &self,
        down_tx: &mpsc::Sender<SubscriptionDown>,
        msg: SubscriptionDown,
    ) -> Result<(), ()> {
        let msg = match self.server.codec.carry(msg) {
            Ok(msg) => msg,
            Err(e) => SubscriptionDown::Item(SubscriptionItem::End(SubscriptionEnd::Failed(e))),
        };
        let last = matches!(msg, SubscriptionDown::Item(SubscriptionItem::End(_)));
        down_tx.send(msg).await.map_err(|_| ())?;
        if last {
            return Err(());
        }
        Ok(())
    }
}

/// The consumer's end of one subscription.
pub(crate) struct Consumer {
    pub(crate) down: mpsc::Receiver<SubscriptionDown>,
    pub(crate) up: mpsc::Sender<SubscriptionUp>,
    pub(crate) codec: Codec,
    /// The client's connection, and its epoch when the consumer attached.
    pub(crate) link: Arc<Breaker>,
    pub(crate) epoch: u64,
    /// Items read and not yet granted back as credit.
    pub(crate) consumed: u32,
    /// Grant credit once this many items were read.
    pub(crate) grant_batch: u32,
    pub(crate) done: bool,
}

impl Consumer {
    /// Grants the first credit and wraps the consumer as a [`Subscription`].
    pub(crate) fn start(mut self, consumer: ConsumerId, credit: u32) -> Subscription {
        self.consumed = credit;
        self.grant(true);
        let items = futures::stream::unfold(self, |mut this| async move {
            let item = this.next().await?;
            Some((item, this))
        });
        Subscription::new(consumer, items)
    }

    async fn next(&mut self) -> Option<SubscriptionItem> {
        if self.done {
            return None;
        }
        self.grant(false);
        loop {
            let msg = tokio::select! {
                biased;
                msg = self.down.recv() => msg,
                () = self.link.tripped(self.epoch) => None,
            };
            match msg {
                Some(SubscriptionDown::Item(item)) => {
                    self.consumed = self.consumed.saturating_add(1);
                    self.done = matches!(item, SubscriptionItem::End(_));
                    return Some(item);
                }
                // This client acks with unary requests; answers to stream acks
                // it never sent are ignored.
                Some(SubscriptionDown::AckResult(..)) => continue,
                None => {
                    self.done = true;
                    let lost = Error::unavailable(Side::Worker, "subscription stream closed");
                    return Some(SubscriptionItem::End(SubscriptionEnd::Failed(lost)));
                }
            }
        }
    }

    /// Sends the credit of what was read, once a batch is due (or `now`). A
    /// full channel already holds credit for the server, so the grant waits
    /// for the next read instead of blocking.
    fn grant(&mut self, now: bool) {
        if self.consumed == 0 || (!now && self.consumed < self.grant_batch) {
            return;
        }
        let Ok(msg) = self.codec.carry(SubscriptionUp::Credit(self.consumed)) else {
            return;
        };
        if self.up.try_send(msg).is_ok() {
            self.consumed = 0;
        }
    }
}
