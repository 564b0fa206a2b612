//! Subscriptions: what to follow, how consumers attach, and what they receive.
//!
//! A subscription is identified by its [`SubscriptionKey`] `(type, selector, name)`.
//! The name [`TRANSIENT`] makes a subscription that lives while a consumer is
//! attached and keeps no checkpoint; any other name makes a persistent
//! consumer group with a durable checkpoint.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::event::{Position, RecordedEvent};
use crate::selector::Selector;

/// The name of transient subscriptions (the reference API's default).
pub const TRANSIENT: &str = "transient";
/// Longest subscription name, in bytes.
pub const SUBSCRIPTION_NAME_LEN_MAX: usize = 128;
/// Longest selector text, in bytes.
pub const SELECTOR_LEN_MAX: usize = 4096;

/// What a subscription follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SubscriptionType {
    /// One stream, or `$all` for the whole log. Selector: the stream id.
    ByStream,
    /// Events of one type. Selector: the exact type.
    ByEventType,
    /// Events whose envelope (stream, event_type, metadata keys) matches a JSON
    /// object; string values may use `*` globs. Selector: the JSON object.
    ByEventPattern,
    /// Events whose JSON data contains a JSON object as a subset. Selector: the JSON object.
    ByEventPayload,
    /// Events matching a [`Query`](crate::Query) (event types and tags).
    /// Selector: the query's JSON, `{"items":[{"types":[..],"tags":[..]}]}`.
    ByQuery,
}

impl SubscriptionType {
    /// The snake_case name used by the CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionType::ByStream => "by_stream",
            SubscriptionType::ByEventType => "by_event_type",
            SubscriptionType::ByEventPattern => "by_event_pattern",
            SubscriptionType::ByEventPayload => "by_event_payload",
            SubscriptionType::ByQuery => "by_query",
        }
    }
}

impl fmt::Display for SubscriptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a subscription: `(type, selector, name)`.
///
/// Construction checks the selector for its type and the name, so a key in
/// hand always names a subscription that could exist.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawKey", into = "RawKey")]
pub struct SubscriptionKey {
    kind: SubscriptionType,
    selector: String,
    name: String,
}

#[derive(Serialize, Deserialize)]
struct RawKey {
    kind: SubscriptionType,
    selector: String,
    name: String,
}

impl SubscriptionKey {
    /// Checks the selector against its type and the name, then builds the key.
    pub fn new(
        kind: SubscriptionType,
        selector: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<Self, Error> {
        let selector = selector.into();
        let name = name.into();
        if name.is_empty() || name.len() > SUBSCRIPTION_NAME_LEN_MAX {
            return Err(Error::invalid(format!(
                "subscription name must be 1 to {SUBSCRIPTION_NAME_LEN_MAX} bytes, got {}",
                name.len()
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "subscription name holds a control character",
            ));
        }
        if selector.len() > SELECTOR_LEN_MAX {
            return Err(Error::limit(
                "selector_bytes_max",
                SELECTOR_LEN_MAX as u64,
                selector.len() as u64,
            ));
        }
        Selector::parse(kind, &selector)?;
        Ok(SubscriptionKey {
            kind,
            selector,
            name,
        })
    }

    /// A transient subscription to one stream (or `$all`).
    pub fn stream(stream: &crate::StreamId) -> Self {
        SubscriptionKey {
            kind: SubscriptionType::ByStream,
            selector: stream.as_str().to_owned(),
            name: TRANSIENT.to_owned(),
        }
    }

    /// The same key with another name.
    pub fn with_name(self, name: impl Into<String>) -> Result<Self, Error> {
        SubscriptionKey::new(self.kind, self.selector, name)
    }

    /// The type.
    pub fn kind(&self) -> SubscriptionType {
        self.kind
    }

    /// The selector, as given.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the name makes this a transient subscription.
    pub fn is_transient(&self) -> bool {
        self.name == TRANSIENT
    }

    /// The parsed selector (parsing cannot fail: the key was checked at construction).
    pub fn parsed_selector(&self) -> Selector {
        Selector::parse(self.kind, &self.selector)
            .unwrap_or_else(|_| unreachable!("a SubscriptionKey's selector was checked when built"))
    }
}

impl fmt::Display for SubscriptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.selector, self.name)
    }
}

impl TryFrom<RawKey> for SubscriptionKey {
    type Error = Error;
    fn try_from(raw: RawKey) -> Result<Self, Error> {
        SubscriptionKey::new(raw.kind, raw.selector, raw.name)
    }
}

impl From<SubscriptionKey> for RawKey {
    fn from(key: SubscriptionKey) -> RawKey {
        RawKey {
            kind: key.kind,
            selector: key.selector,
            name: key.name,
        }
    }
}

/// How a persistent subscription shares events among its consumers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConsumerStrategy {
    /// Each event to the next consumer with room in its window.
    #[default]
    RoundRobin,
    /// All events of a stream to the same consumer, strictly in version
    /// order: a stream's next event is delivered only once the one before
    /// it is acked, skipped or parked, so timeouts, retries, consumers
    /// joining or leaving and a move to another worker never reorder a
    /// stream; other streams keep flowing meanwhile. (Replayed parked events
    /// come back after the stream has moved on: parking takes an event out
    /// of its order.)
    PinnedByStream,
}

/// A subscription's definition, as saved by `save_subscription`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionSpec {
    /// Its identity.
    pub key: SubscriptionKey,
    /// The global position delivery starts at, when no checkpoint is stored.
    pub start_from: Position,
    /// How consumers of a persistent subscription share events.
    pub strategy: ConsumerStrategy,
    /// An unacked delivery is sent again after this long, milliseconds.
    pub ack_timeout_ms: u64,
    /// Redeliveries of an unacked event (timeouts and `Retry` nacks) before
    /// it is parked: with 1 an event is delivered twice, with 0 it is parked
    /// after its first failed delivery (KurrentDB's `max_retry_count`).
    pub max_retries: u32,
}

impl SubscriptionSpec {
    /// Default time before an unacked delivery is redelivered, milliseconds.
    pub const ACK_TIMEOUT_MS_DEFAULT: u64 = 30_000;
    /// Default redeliveries before an event is parked.
    pub const MAX_RETRIES_DEFAULT: u32 = 10;

    /// A spec with the defaults: start at position 0, round robin, 30 s ack timeout, 10 retries.
    pub fn new(key: SubscriptionKey) -> Self {
        SubscriptionSpec {
            key,
            start_from: Position::START,
            strategy: ConsumerStrategy::RoundRobin,
            ack_timeout_ms: Self::ACK_TIMEOUT_MS_DEFAULT,
            max_retries: Self::MAX_RETRIES_DEFAULT,
        }
    }
}

/// Options of one consumer attaching with `subscribe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeOptions {
    /// Most unacked deliveries this consumer holds at once (its credit); 1 to the limit.
    pub window: u32,
    /// For transient subscriptions: start here instead of the spec's
    /// `start_from`. Ignored for persistent ones: saving a persistent
    /// subscription stores its `start_from` as the first checkpoint, and its
    /// consumers always resume from the stored checkpoint.
    pub start_from: Option<Position>,
}

impl SubscribeOptions {
    /// Default window of unacked deliveries.
    pub const WINDOW_DEFAULT: u32 = 256;
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            window: Self::WINDOW_DEFAULT,
            start_from: None,
        }
    }
}

/// Identifies one attached consumer within its store; acks and nacks name it.
///
/// Servers draw it from 128 random bits ([`ConsumerId::from_random_bytes`]),
/// so nobody acks another consumer's deliveries by guessing its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsumerId(pub u128);

impl ConsumerId {
    /// The id made of 16 bytes from a cryptographic random source.
    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        ConsumerId(u128::from_le_bytes(bytes))
    }
}

impl fmt::Display for ConsumerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One event handed to a consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event.
    pub event: RecordedEvent,
    /// 1 for the first delivery, more for redeliveries.
    pub attempt: u32,
}

/// Why a subscription's stream of deliveries ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionEnd {
    /// `remove_subscription` removed it.
    Removed,
    /// Its store was removed.
    StoreRemoved,
    /// The server is shutting down; attach again elsewhere.
    Shutdown,
    /// A failure ended it.
    Failed(Error),
}

/// An item of a subscription's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionItem {
    /// An event to handle, then ack or nack.
    Event(Delivery),
    /// Catch-up reached the head of the log; what follows is live.
    CaughtUp,
    /// The last item: the subscription ended and why.
    End(SubscriptionEnd),
}

/// What a consumer does with a delivery it will not ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NackAction {
    /// Deliver it again (counts towards `max_retries`).
    Retry,
    /// Set it aside in the parked list; it can be replayed later.
    Park,
    /// Drop it as if it were acked.
    Skip,
}

/// A subscription as reported by `get_subscriptions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// Its definition.
    pub spec: SubscriptionSpec,
    /// Next position to process: every earlier matching event is acked, skipped or parked.
    pub checkpoint: Position,
    /// Consumers attached now.
    pub consumers: u32,
    /// Deliveries sent and not yet acked.
    pub in_flight: u32,
    /// Events parked.
    pub parked: u64,
    /// Events not yet handled: the store's head position + 1 − checkpoint,
    /// counted against the head now (whatever the consumers are doing); for a
    /// transient consumer the checkpoint is its own position. For `$all` this
    /// is exactly the matching events; for a narrower selector it counts every
    /// log position past the checkpoint, an upper bound.
    pub lag: u64,
}

/// An attached consumer: a stream of [`SubscriptionItem`]s plus the consumer id to ack with.
///
/// Dropping it detaches the consumer; a transient subscription is then gone,
/// a persistent one redelivers this consumer's unacked events to others.
pub struct Subscription {
    consumer: ConsumerId,
    items: Pin<Box<dyn Stream<Item = SubscriptionItem> + Send>>,
}

impl Subscription {
    /// Wraps a stream of items produced by an implementation.
    pub fn new(
        consumer: ConsumerId,
        items: impl Stream<Item = SubscriptionItem> + Send + 'static,
    ) -> Self {
        Subscription {
            consumer,
            items: Box::pin(items),
        }
    }

    /// The id to pass to `ack_event` and `nack_event`.
    pub fn consumer(&self) -> ConsumerId {
        self.consumer
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = SubscriptionItem;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SubscriptionItem>> {
        self.items.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_check_their_selector_and_name() {
        use SubscriptionType::*;
        assert!(SubscriptionKey::new(ByStream, "$all", TRANSIENT).is_ok());
        assert!(SubscriptionKey::new(ByStream, "orders-1", "billing").is_ok());
        assert!(SubscriptionKey::new(ByStream, "", "billing").is_err());
        assert!(SubscriptionKey::new(ByStream, "$nope", "billing").is_err());
        assert!(SubscriptionKey::new(ByEventType, "OrderPlaced", "").is_err());
        assert!(SubscriptionKey::new(ByEventPattern, "[1]", "x").is_err());
        assert!(SubscriptionKey::new(ByEventPattern, r#"{"stream":"o-*"}"#, "x").is_ok());
        assert!(SubscriptionKey::new(ByEventPayload, "not json", "x").is_err());
        assert!(SubscriptionKey::new(ByEventPayload, r#"{"a":1}"#, "x").is_ok());
    }

    #[test]
    fn transient_is_the_name_not_the_type() {
        let k = SubscriptionKey::new(SubscriptionType::ByEventType, "A", TRANSIENT).unwrap();
        assert!(k.is_transient());
        assert!(!k.with_name("durable").unwrap().is_transient());
    }
}
