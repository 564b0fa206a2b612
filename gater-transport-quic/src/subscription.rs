//! Subscription streams over QUIC.
//!
//! After the `Subscribe` request and its `Subscribed` answer, the server
//! sends [`SubscriptionDown`] frames and the consumer sends
//! [`SubscriptionUp`] frames. Flow control is by credit: the consumer grants
//! credit as it reads, the server sends no more items than granted, so a
//! consumer that stops reading stops the server with at most its credit in
//! transit. This crate's client acks with unary `ack_event`/`nack_event`
//! requests; the server also accepts `Ack`/`Nack` up the stream and answers
//! each with an `AckResult` (not counted against credit).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use gater_core::wire::{
    self, RequestEnvelope, Response, ResponseEnvelope, SubscriptionDown, SubscriptionUp,
};
use gater_core::{
    ConsumerId, Error, NackAction, Position, Side, StoreId, SubscribeOptions, Subscription,
    SubscriptionEnd, SubscriptionItem, SubscriptionKey,
};
use tokio::sync::{mpsc, watch};

use crate::frame::{lost, write_frame, FrameReader, ReadFailure};
use crate::server::{stopping, Stream as ServerStream};

/// Credit grants a consumer may have queued for its stream task; grants are
/// batched, so a few slots suffice.
const GRANT_CHANNEL_LEN: usize = 16;

/// The server's side of one subscription stream.
pub(crate) struct Serve {
    pub(crate) stream: ServerStream,
    pub(crate) reader: FrameReader,
    /// The id of the `Subscribe` request, for its answer.
    pub(crate) id: u64,
    pub(crate) store: StoreId,
    pub(crate) key: SubscriptionKey,
}

impl Serve {
    pub(crate) async fn run(mut self, options: SubscribeOptions, mut stop: watch::Receiver<bool>) {
        let gater = Arc::clone(&self.stream.shared.gater);
        let mut sub = match gater
            .subscribe(&self.store, self.key.clone(), options)
            .await
        {
            Ok(sub) => sub,
            Err(e) => {
                self.stream.respond(self.id, Err(e)).await;
                let _ = self.stream.send.finish();
                return;
            }
        };
        self.stream
            .respond(self.id, Ok(Response::Subscribed(sub.consumer())))
            .await;
        let end = self.pump(&mut sub, &mut stop).await;
        if let Some(end) = end {
            let _ = self
                .send(&SubscriptionDown::Item(SubscriptionItem::End(end)))
                .await;
        }
        let _ = self.stream.send.finish();
        let _ = self.stream.send.stopped().await;
    }

    /// Moves items within credit and answers what comes up. Returns the end
    /// to send, if the subscription's own stream did not already send one.
    async fn pump(
        &mut self,
        sub: &mut Subscription,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<SubscriptionEnd> {
        let consumer = sub.consumer();
        let mut credit: u32 = 0;
        loop {
            tokio::select! {
                biased;
                () = stopping(stop) => return Some(SubscriptionEnd::Shutdown),
                up = self.reader.next(&mut self.stream.recv, wire::decode_body::<SubscriptionUp>) => {
                    let answer = match up {
                        Ok(Some(SubscriptionUp::Credit(n))) => {
                            let max = self.stream.shared.subscription_credit_max;
                            credit = credit.saturating_add(n).min(max);
                            continue;
                        }
                        Ok(Some(SubscriptionUp::Ack(position))) => self.settle(consumer, position, None).await,
                        Ok(Some(SubscriptionUp::Nack(position, action))) => {
                            self.settle(consumer, position, Some(action)).await
                        }
                        Ok(Some(SubscriptionUp::Close)) | Ok(None) => return None,
                        Err(ReadFailure::Stream(_)) => return None,
                        Err(failure) => return Some(SubscriptionEnd::Failed(failure.into())),
                    };
                    if self.send(&answer).await.is_err() {
                        return None;
                    }
                }
                item = sub.next(), if credit > 0 => {
                    credit -= 1;
                    let Some(item) = item else {
                        let e = Error::unavailable(Side::Worker, "subscription ended without an end item");
                        return Some(SubscriptionEnd::Failed(e));
                    };
                    let last = matches!(item, SubscriptionItem::End(_));
                    if self.send(&SubscriptionDown::Item(item)).await.is_err() || last {
                        return None;
                    }
                }
            }
        }
    }

    async fn settle(
        &self,
        consumer: ConsumerId,
        position: Position,
        action: Option<NackAction>,
    ) -> SubscriptionDown {
        let gater = &self.stream.shared.gater;
        let result = match action {
            None => {
                gater
                    .ack_event(&self.store, &self.key, consumer, position)
                    .await
            }
            Some(action) => {
                gater
                    .nack_event(&self.store, &self.key, consumer, position, action)
                    .await
            }
        };
        SubscriptionDown::AckResult(position, result)
    }

    /// Sends one frame; its bytes count against the server's memory budget
    /// (waiting for room) until QUIC has taken them.
    async fn send(&mut self, msg: &SubscriptionDown) -> Result<(), Error> {
        let shared = Arc::clone(&self.stream.shared);
        let max = shared.frame_bytes_max;
        let frame = match wire::encode(msg, max) {
            Ok(frame) => frame,
            Err(e) => {
                let e = Error::from(e);
                let end = SubscriptionDown::Item(SubscriptionItem::End(SubscriptionEnd::Failed(e)));
                write_frame(&mut self.stream.send, &end, max).await?;
                return Err(Error::Protocol(
                    "subscription item over the frame limit".into(),
                ));
            }
        };
        let _held = shared
            .budget
            .reserve(frame.len() as u64, shared.side)
            .await?;
        self.stream.send.write_all(&frame).await.map_err(lost)
    }
}

/// Opens a subscription on `connection` and returns the consumer's stream.
pub(crate) async fn open(
    connection: &quinn::Connection,
    envelope: RequestEnvelope,
    frame_bytes_max: u32,
    credit: u32,
) -> Result<Subscription, Error> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(lost)?;
    write_frame(&mut send, &envelope, frame_bytes_max).await?;
    let mut reader = FrameReader::new(frame_bytes_max);
    let answer = reader
        .next(&mut recv, wire::decode_body::<ResponseEnvelope>)
        .await?
        .ok_or_else(|| Error::unavailable(Side::Worker, "stream ended before an answer"))?;
    let consumer = match answer.result? {
        Response::Subscribed(consumer) => consumer,
        other => {
            return Err(Error::Protocol(format!(
                "subscribe: unexpected response {other:?}"
            )))
        }
    };
    write_frame(&mut send, &SubscriptionUp::Credit(credit), frame_bytes_max).await?;
    // One slot beyond the credit: the server's End(Shutdown) is sent without credit.
    let (items_tx, items_rx) = mpsc::channel(credit as usize + 1);
    let (grant_tx, grant_rx) = mpsc::channel(GRANT_CHANNEL_LEN);
    let task = ClientTask {
        send,
        recv,
        reader,
        items: items_tx,
        grants: grant_rx,
        frame_bytes_max,
    };
    tokio::spawn(task.run());
    let items = Items {
        items: items_rx,
        grants: grant_tx,
        consumed: 0,
        grant_batch: (credit / 4).max(1),
        done: false,
    };
    Ok(Subscription::new(consumer, items))
}

/// The consumer's stream task: frames down into the item channel, credit up.
struct ClientTask {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    reader: FrameReader,
    items: mpsc::Sender<SubscriptionItem>,
    grants: mpsc::Receiver<u32>,
    frame_bytes_max: u32,
}

impl ClientTask {
    async fn run(mut self) {
        loop {
            tokio::select! {
                down = self.reader.next(&mut self.recv, wire::decode_body::<SubscriptionDown>) => {
                    let item = match down {
                        Ok(Some(SubscriptionDown::Item(item))) => item,
                        // This client acks with unary requests.
                        Ok(Some(SubscriptionDown::AckResult(..))) => continue,
                        Ok(None) => failed(Error::unavailable(Side::Worker, "subscription stream ended")),
                        Err(failure) => failed(failure.into()),
                    };
                    let last = matches!(item, SubscriptionItem::End(_));
                    if self.items.send(item).await.is_err() || last {
                        return;
                    }
                }
                grant = self.grants.recv() => {
                    let up = grant.map_or(SubscriptionUp::Close, SubscriptionUp::Credit);
                    let close = up == SubscriptionUp::Close;
                    if let Err(e) = write_frame(&mut self.send, &up, self.frame_bytes_max).await {
                        let _ = self.items.send(failed(e)).await;
                        return;
                    }
                    if close {
                        let _ = self.send.finish();
                        return;
                    }
                }
            }
        }
    }
}

fn failed(e: Error) -> SubscriptionItem {
    SubscriptionItem::End(SubscriptionEnd::Failed(e))
}

/// The consumer's items; reading grants credit back in batches.
struct Items {
    items: mpsc::Receiver<SubscriptionItem>,
    grants: mpsc::Sender<u32>,
    consumed: u32,
    grant_batch: u32,
    done: bool,
}

impl Stream for Items {
    type Item = SubscriptionItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SubscriptionItem>> {
        if self.done {
            return Poll::Ready(None);
        }
        let item = match self.items.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(item)) => item,
            Poll::Ready(None) => failed(Error::unavailable(
                Side::Worker,
                "subscription stream closed",
            )),
        };
        self.done = matches!(item, SubscriptionItem::End(_));
        self.consumed += 1;
        // A full grant channel already holds credit for the server; this
        // grant then goes with the next read.
        if self.consumed >= self.grant_batch && self.grants.try_send(self.consumed).is_ok() {
            self.consumed = 0;
        }
        Poll::Ready(Some(item))
    }
}
