//! Wire messages and the frame codec shared by every transport.
//!
//! A frame is a big-endian `u32` body length followed by a postcard body.
//!
//! A request stream carries any number of [`RequestEnvelope`] frames, each
//! with the protocol version and a request id chosen by the sender; the
//! answers are [`ResponseEnvelope`] frames carrying the id of the request
//! they answer, in the order the answers are ready (not the order of the
//! requests). A client may keep one request stream open for many requests
//! (pipelining) or send one request and finish the stream. An envelope's
//! encoding is its [`RequestHeader`] (version, id, deadline) followed by the
//! request's own encoding (the body), so [`split_request`] reads the header
//! and leaves the body bytes untouched. A request's encoding starts with its
//! kind and (for store-scoped kinds) its store: [`RequestHead::read`] takes
//! both, and an [`EncodedRequest`] carries the bytes with their head, so a
//! proxy routes and guards a request without decoding the rest.
//!
//! A subscription stream starts with a `Subscribe` request (its first frame),
//! then carries [`SubscriptionDown`] frames to the consumer and
//! [`SubscriptionUp`] frames (credit, acks, nacks) back.
//!
//! Decoding never panics: arbitrary bytes give a [`FrameError`].

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::access::Whoami;
use crate::append::{Append, AppendOutcome};
use crate::error::Error;
use crate::event::{
    AppendResult, Direction, EventData, ExpectedVersion, Position, RecordedEvent, StreamPage,
    Version,
};
use crate::id::{StoreId, StreamId};
use crate::lifecycle::{Compaction, Retention, StreamRetention};
use crate::query::Query;
use crate::routing::RequestClass;
use crate::snapshot::{Snapshot, SnapshotKey};
use crate::store::{StoreConfig, StoreInfo, StoreStatus, VerifyReport, WorkerInfo};
use crate::subscription::{
    ConsumerId, NackAction, SubscribeOptions, SubscriptionInfo, SubscriptionItem, SubscriptionKey,
    SubscriptionSpec,
};

/// The protocol version this build speaks. Version 1 had one request per
/// stream and no request ids; version 2 multiplexes requests on a stream;
/// version 3 adds the trace id to the request header.
pub const PROTOCOL_VERSION: u16 = 3;
/// The QUIC ALPN of the protocol.
pub const ALPN: &[u8] = b"gater/1";
/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// Default largest frame body, in bytes (16 MiB).
pub const FRAME_BYTES_MAX_DEFAULT: u32 = crate::Limits::DEFAULT.frame_bytes_max;

/// Every request, one variant per [`Gater`](crate::Gater) method.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // fields mirror the Gater methods' arguments
pub enum Request {
    AppendEvents {
        store: StoreId,
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    },
    GetEvents {
        store: StoreId,
        stream: StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    },
    ReadAll {
        store: StoreId,
        from: Position,
        count: u32,
        direction: Direction,
    },
    GetStreams {
        store: StoreId,
        after: Option<StreamId>,
        limit: u32,
    },
    GetVersion {
        store: StoreId,
        stream: StreamId,
    },
    SaveSubscription {
        store: StoreId,
        spec: SubscriptionSpec,
    },
    Subscribe {
        store: StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    },
    RemoveSubscription {
        store: StoreId,
        key: SubscriptionKey,
    },
    GetSubscriptions {
        store: StoreId,
    },
    AckEvent {
        store: StoreId,
        key: SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    },
    NackEvent {
        store: StoreId,
        key: SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    },
    ListParked {
        store: StoreId,
        key: SubscriptionKey,
    },
    ReplayParked {
        store: StoreId,
        key: SubscriptionKey,
    },
    RecordSnapshot {
        store: StoreId,
        key: SnapshotKey,
        data: Vec<u8>,
    },
    ReadSnapshot {
        store: StoreId,
        source: String,
        stream: String,
        version: Option<Version>,
    },
    ListSnapshots {
        store: StoreId,
        source: Option<String>,
        stream: Option<String>,
    },
    DeleteSnapshot {
        store: StoreId,
        key: SnapshotKey,
    },
    CreateStore {
        store: StoreId,
        config: StoreConfig,
    },
    RemoveStore {
        store: StoreId,
    },
    ListStores,
    GetStoreStatus {
        store: StoreId,
    },
    GetStoreConfig {
        store: StoreId,
    },
    Workers,
    Heartbeat {
        worker: WorkerInfo,
    },
    /// The identity the server sees and its grants; answered by the server itself.
    Whoami,
    ReopenStore {
        store: StoreId,
    },
    VerifyStore {
        store: StoreId,
    },
    /// [`Gater::append`](crate::Gater::append): parts and a condition, one unit.
    Append {
        store: StoreId,
        append: Append,
    },
    /// [`Gater::read_query`](crate::Gater::read_query).
    ReadQuery {
        store: StoreId,
        query: Query,
        from: Position,
        count: u32,
        direction: Direction,
    },
    /// [`Gater::delete_stream`](crate::Gater::delete_stream).
    DeleteStream {
        store: StoreId,
        stream: StreamId,
        expected: ExpectedVersion,
    },
    /// [`Gater::tombstone_stream`](crate::Gater::tombstone_stream).
    TombstoneStream {
        store: StoreId,
        stream: StreamId,
        expected: ExpectedVersion,
    },
    /// [`Gater::truncate_stream`](crate::Gater::truncate_stream).
    TruncateStream {
        store: StoreId,
        stream: StreamId,
        before: Version,
    },
    /// [`Gater::set_stream_retention`](crate::Gater::set_stream_retention).
    SetStreamRetention {
        store: StoreId,
        stream: StreamId,
        retention: Retention,
    },
    /// [`Gater::stream_retention`](crate::Gater::stream_retention).
    StreamRetention {
        store: StoreId,
        stream: StreamId,
    },
    /// [`Gater::compact_store`](crate::Gater::compact_store).
    CompactStore {
        store: StoreId,
    },
}

/// What a request is, one variant per [`Request`] variant in the same order:
/// a request's encoding starts with its variant's index, so a
/// [`RequestHead`] reads the kind of an encoded request without decoding
/// the rest. A new request kind is added to both enums at the same place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // one per Request variant
pub enum RequestKind {
    AppendEvents,
    GetEvents,
    ReadAll,
    GetStreams,
    GetVersion,
    SaveSubscription,
    Subscribe,
    RemoveSubscription,
    GetSubscriptions,
    AckEvent,
    NackEvent,
    ListParked,
    ReplayParked,
    RecordSnapshot,
    ReadSnapshot,
    ListSnapshots,
    DeleteSnapshot,
    CreateStore,
    RemoveStore,
    ListStores,
    GetStoreStatus,
    GetStoreConfig,
    Workers,
    Heartbeat,
    Whoami,
    ReopenStore,
    VerifyStore,
    Append,
    ReadQuery,
    DeleteStream,
    TombstoneStream,
    TruncateStream,
    SetStreamRetention,
    StreamRetention,
    CompactStore,
}

impl RequestKind {
    /// The method's name, for logs and metrics.
    pub fn method(self) -> &'static str {
        use RequestKind as K;
        match self {
            K::AppendEvents => "append_events",
            K::GetEvents => "get_events",
            K::ReadAll => "read_all",
            K::GetStreams => "get_streams",
            K::GetVersion => "get_version",
            K::SaveSubscription => "save_subscription",
            K::Subscribe => "subscribe",
            K::RemoveSubscription => "remove_subscription",
            K::GetSubscriptions => "get_subscriptions",
            K::AckEvent => "ack_event",
            K::NackEvent => "nack_event",
            K::ListParked => "list_parked",
            K::ReplayParked => "replay_parked",
            K::RecordSnapshot => "record_snapshot",
            K::ReadSnapshot => "read_snapshot",
            K::ListSnapshots => "list_snapshots",
            K::DeleteSnapshot => "delete_snapshot",
            K::CreateStore => "create_store",
            K::RemoveStore => "remove_store",
            K::ListStores => "list_stores",
            K::GetStoreStatus => "get_store_status",
            K::GetStoreConfig => "get_store_config",
            K::Workers => "workers",
            K::Heartbeat => "heartbeat",
            K::Whoami => "whoami",
            K::ReopenStore => "reopen_store",
            K::VerifyStore => "verify_store",
            K::Append => "append",
            K::ReadQuery => "read_query",
            K::DeleteStream => "delete_stream",
            K::TombstoneStream => "tombstone_stream",
            K::TruncateStream => "truncate_stream",
            K::SetStreamRetention => "set_stream_retention",
            K::StreamRetention => "stream_retention",
            K::CompactStore => "compact_store",
        }
    }

    /// The routing class: decides where it may go and whether a retry is safe.
    pub fn class(self) -> RequestClass {
        use RequestKind as K;
        match self {
            K::GetEvents
            | K::ReadAll
            | K::GetStreams
            | K::GetVersion
            | K::GetSubscriptions
            | K::ListParked
            | K::ReadSnapshot
            | K::ListSnapshots
            | K::GetStoreStatus
            | K::GetStoreConfig
            | K::VerifyStore
            | K::ReadQuery
            | K::StreamRetention => RequestClass::Read,
            // Event ids make every append idempotent, conditional or not: a
            // retried append answers its first attempt's result.
            K::AppendEvents | K::Append => RequestClass::Append,
            K::SaveSubscription
            | K::RecordSnapshot
            | K::CreateStore
            | K::TruncateStream
            | K::SetStreamRetention
            | K::CompactStore => RequestClass::IdempotentWrite,
            // A second ack of a delivery answers NotFound: not idempotent.
            K::RemoveSubscription
            | K::AckEvent
            | K::NackEvent
            | K::ReplayParked
            | K::DeleteSnapshot
            | K::RemoveStore
            | K::ReopenStore
            // A repeated delete may fail on its own first attempt's effect.
            | K::DeleteStream
            | K::TombstoneStream => RequestClass::Write,
            K::Subscribe => RequestClass::Subscribe,
            K::ListStores | K::Workers | K::Heartbeat | K::Whoami => RequestClass::Cluster,
        }
    }

    /// Whether the request names a store: then the store is its first field.
    /// Cluster requests are the ones that do not.
    pub fn has_store(self) -> bool {
        self.class() != RequestClass::Cluster
    }
}

impl Request {
    /// The request's kind.
    pub fn kind(&self) -> RequestKind {
        use RequestKind as K;
        match self {
            Request::AppendEvents { .. } => K::AppendEvents,
            Request::GetEvents { .. } => K::GetEvents,
            Request::ReadAll { .. } => K::ReadAll,
            Request::GetStreams { .. } => K::GetStreams,
            Request::GetVersion { .. } => K::GetVersion,
            Request::SaveSubscription { .. } => K::SaveSubscription,
            Request::Subscribe { .. } => K::Subscribe,
            Request::RemoveSubscription { .. } => K::RemoveSubscription,
            Request::GetSubscriptions { .. } => K::GetSubscriptions,
            Request::AckEvent { .. } => K::AckEvent,
            Request::NackEvent { .. } => K::NackEvent,
            Request::ListParked { .. } => K::ListParked,
            Request::ReplayParked { .. } => K::ReplayParked,
            Request::RecordSnapshot { .. } => K::RecordSnapshot,
            Request::ReadSnapshot { .. } => K::ReadSnapshot,
            Request::ListSnapshots { .. } => K::ListSnapshots,
            Request::DeleteSnapshot { .. } => K::DeleteSnapshot,
            Request::CreateStore { .. } => K::CreateStore,
            Request::RemoveStore { .. } => K::RemoveStore,
            Request::ListStores => K::ListStores,
            Request::GetStoreStatus { .. } => K::GetStoreStatus,
            Request::GetStoreConfig { .. } => K::GetStoreConfig,
            Request::Workers => K::Workers,
            Request::Heartbeat { .. } => K::Heartbeat,
            Request::Whoami => K::Whoami,
            Request::ReopenStore { .. } => K::ReopenStore,
            Request::VerifyStore { .. } => K::VerifyStore,
            Request::Append { .. } => K::Append,
            Request::ReadQuery { .. } => K::ReadQuery,
            Request::DeleteStream { .. } => K::DeleteStream,
            Request::TombstoneStream { .. } => K::TombstoneStream,
            Request::TruncateStream { .. } => K::TruncateStream,
            Request::SetStreamRetention { .. } => K::SetStreamRetention,
            Request::StreamRetention { .. } => K::StreamRetention,
            Request::CompactStore { .. } => K::CompactStore,
        }
    }

    /// The method's name, for logs and metrics.
    pub fn method(&self) -> &'static str {
        self.kind().method()
    }

    /// The store the request is about, if any.
    pub fn store(&self) -> Option<&StoreId> {
        match self {
            Request::AppendEvents { store, .. }
            | Request::GetEvents { store, .. }
            | Request::ReadAll { store, .. }
            | Request::GetStreams { store, .. }
            | Request::GetVersion { store, .. }
            | Request::SaveSubscription { store, .. }
            | Request::Subscribe { store, .. }
            | Request::RemoveSubscription { store, .. }
            | Request::GetSubscriptions { store }
            | Request::AckEvent { store, .. }
            | Request::NackEvent { store, .. }
            | Request::ListParked { store, .. }
            | Request::ReplayParked { store, .. }
            | Request::RecordSnapshot { store, .. }
            | Request::ReadSnapshot { store, .. }
            | Request::ListSnapshots { store, .. }
            | Request::DeleteSnapshot { store, .. }
            | Request::CreateStore { store, .. }
            | Request::RemoveStore { store }
            | Request::GetStoreStatus { store }
            | Request::GetStoreConfig { store }
            | Request::ReopenStore { store }
            | Request::VerifyStore { store }
            | Request::Append { store, .. }
            | Request::ReadQuery { store, .. }
            | Request::DeleteStream { store, .. }
            | Request::TombstoneStream { store, .. }
            | Request::TruncateStream { store, .. }
            | Request::SetStreamRetention { store, .. }
            | Request::StreamRetention { store, .. }
            | Request::CompactStore { store } => Some(store),
            Request::ListStores
            | Request::Workers
            | Request::Heartbeat { .. }
            | Request::Whoami => None,
        }
    }

    /// The routing class: decides where it may go and whether a retry is safe.
    pub fn class(&self) -> RequestClass {
        self.kind().class()
    }

    /// The request's kind and store.
    pub fn head(&self) -> RequestHead {
        RequestHead {
            kind: self.kind(),
            store: self.store().cloned(),
        }
    }
}

/// What routing and access checks need of a request: its kind and store,
/// read from the first bytes of its encoding ([`RequestHead::read`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The request's kind.
    pub kind: RequestKind,
    /// The store it is about, if its kind names one.
    pub store: Option<StoreId>,
}

impl RequestHead {
    /// Reads the head at the start of a [`Request`]'s encoding, leaving
    /// the rest undecoded (and unchecked).
    pub fn read(request: &[u8]) -> Result<RequestHead, FrameError> {
        let decode = |e: postcard::Error| FrameError::Decode(e.to_string());
        let (kind, rest) = postcard::take_from_bytes::<RequestKind>(request).map_err(decode)?;
        let store = if kind.has_store() {
            Some(
                postcard::take_from_bytes::<StoreId>(rest)
                    .map_err(decode)?
                    .0,
            )
        } else {
            None
        };
        Ok(RequestHead { kind, store })
    }

    /// The routing class of its kind.
    pub fn class(&self) -> RequestClass {
        self.kind.class()
    }
}

/// A request in its wire encoding with its [`RequestHead`]: what a proxy
/// routes and passes on as bytes, decoding only what it answers itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedRequest {
    head: RequestHead,
    /// Shared, not copied, by a clone (a proxy's attempt that may be retried).
    bytes: Bytes,
}

impl EncodedRequest {
    /// Takes the encoding of a request as it arrived (kept as it is, not
    /// copied), reading its head; the rest is checked only when the request
    /// is decoded.
    pub fn from_bytes(bytes: Bytes) -> Result<EncodedRequest, FrameError> {
        Ok(EncodedRequest {
            head: RequestHead::read(&bytes)?,
            bytes,
        })
    }

    /// Encodes `request`.
    pub fn encode(request: &Request) -> Result<EncodedRequest, FrameError> {
        let bytes = postcard::to_stdvec(request).map_err(|e| FrameError::Encode(e.to_string()))?;
        Ok(EncodedRequest {
            head: request.head(),
            bytes: bytes.into(),
        })
    }

    /// The request's kind and store.
    pub fn head(&self) -> &RequestHead {
        &self.head
    }

    /// The request's kind.
    pub fn kind(&self) -> RequestKind {
        self.head.kind
    }

    /// The routing class of its kind.
    pub fn class(&self) -> RequestClass {
        self.head.class()
    }

    /// The store it is about, if any.
    pub fn store(&self) -> Option<&StoreId> {
        self.head.store.as_ref()
    }

    /// The request's encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decodes the whole request.
    pub fn decode(&self) -> Result<Request, FrameError> {
        decode_body(&self.bytes)
    }
}

/// Every successful answer, one variant per result shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // each variant carries the result of the methods that return it
pub enum Response {
    Appended(AppendResult),
    Events(Vec<RecordedEvent>),
    Streams(StreamPage),
    Version(Option<Version>),
    /// Methods that return `()`.
    Done,
    /// A consumer attached; deliveries follow on the same stream.
    Subscribed(ConsumerId),
    Subscriptions(Vec<SubscriptionInfo>),
    Replayed(u64),
    Snapshot(Snapshot),
    SnapshotKeys(Vec<SnapshotKey>),
    Stores(Vec<StoreInfo>),
    StoreStatus(StoreStatus),
    StoreConfig(StoreConfig),
    Workers(Vec<WorkerInfo>),
    Whoami(Whoami),
    Verified(VerifyReport),
    /// The result of [`Gater::append`](crate::Gater::append).
    AppendedParts(AppendOutcome),
    /// The result of [`Gater::stream_retention`](crate::Gater::stream_retention).
    Retention(StreamRetention),
    /// The result of [`Gater::compact_store`](crate::Gater::compact_store).
    Compacted(Compaction),
}

/// One request frame: its header fields, then the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// The sender's protocol version; must be [`PROTOCOL_VERSION`]. Encoded first,
    /// so [`peek_version`] can read it even when the rest does not decode.
    pub version: u16,
    /// Chosen by the sender, unique among its requests in flight on the
    /// stream; the answer carries it back.
    pub id: u64,
    /// Milliseconds the sender will still wait for the answer. A server
    /// passes what remains on to whatever it calls and refuses work that is
    /// already late (0) with `DeadlineExceeded` instead of starting it.
    pub deadline_ms: Option<u32>,
    /// The id that follows the request across hops in logs (see
    /// [`trace`](crate::trace)); 0 when the sender had none.
    pub trace: u64,
    /// The request.
    pub request: Request,
}

/// The fields of a [`RequestEnvelope`] before its request: encoded exactly
/// as the envelope's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// [`RequestEnvelope::version`].
    pub version: u16,
    /// [`RequestEnvelope::id`].
    pub id: u64,
    /// [`RequestEnvelope::deadline_ms`].
    pub deadline_ms: Option<u32>,
    /// [`RequestEnvelope::trace`].
    pub trace: u64,
}

impl RequestHeader {
    /// How long the sender still waits, from [`RequestHeader::deadline_ms`].
    pub fn within(&self) -> Option<Duration> {
        self.deadline_ms.map(|ms| Duration::from_millis(ms.into()))
    }
}

impl RequestEnvelope {
    /// An envelope of this build's version with request id 0 (a transport
    /// sets [`RequestEnvelope::id`] as it sends it), carrying the trace id of
    /// the request being answered, if any ([`trace::current`](crate::trace::current)).
    pub fn new(request: Request, deadline_ms: Option<u32>) -> Self {
        RequestEnvelope {
            version: PROTOCOL_VERSION,
            id: 0,
            deadline_ms,
            trace: crate::trace::current().unwrap_or(0),
            request,
        }
    }

    /// The envelope's header fields.
    pub fn header(&self) -> RequestHeader {
        RequestHeader {
            version: self.version,
            id: self.id,
            deadline_ms: self.deadline_ms,
            trace: self.trace,
        }
    }

    /// How long the sender still waits, from [`RequestEnvelope::deadline_ms`].
    pub fn within(&self) -> Option<Duration> {
        self.deadline_ms.map(|ms| Duration::from_millis(ms.into()))
    }
}

/// The tighter of a link's own deadline (`own_ms`) and what remains of the
/// caller's (`within`), in the envelope's whole milliseconds (rounded down:
/// less than a millisecond left is late).
pub fn deadline_ms(own_ms: Option<u32>, within: Option<Duration>) -> Option<u32> {
    let within_ms = within.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
    match (own_ms, within_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The id of the request it answers; 0 when the request's own id could
    /// not be read (bytes that do not decode, a foreign protocol version).
    pub id: u64,
    /// The result.
    pub result: Result<Response, Error>,
}

/// From consumer to server on a subscription stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionUp {
    /// The consumer has read this many more items; the server may send as many.
    Credit(u32),
    /// Ack the delivery at this position.
    Ack(Position),
    /// Nack the delivery at this position.
    Nack(Position, NackAction),
    /// The consumer detaches.
    Close,
}

/// From server to consumer on a subscription stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionDown {
    /// A subscription item.
    Item(SubscriptionItem),
    /// The outcome of an ack or nack sent up the stream, in the order they were sent.
    AckResult(Position, Result<(), Error>),
}

/// Why a frame could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces a body over the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversize {
        /// The announced or encoded length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The body is not a valid message.
    #[error("frame does not decode: {0}")]
    Decode(String),
    /// The message could not be serialised.
    #[error("frame does not encode: {0}")]
    Encode(String),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Error {
        match e {
            FrameError::Oversize { len, max } => Error::limit("frame_bytes_max", max.into(), len),
            FrameError::UnsupportedVersion(version) => Error::UnsupportedVersion {
                version,
                supported: PROTOCOL_VERSION,
            },
            other => Error::Protocol(other.to_string()),
        }
    }
}

/// Appends one frame holding `msg` to `out`. A body over `max` bytes is refused
/// and `out` is left as it was.
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>, max: u32) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let mut buf = std::mem::take(out);
    buf = match postcard::to_extend(msg, buf) {
        Ok(buf) => buf,
        Err(e) => return Err(FrameError::Encode(e.to_string())),
    };
    *out = buf;
    seal_frame(out, start, max)
}

/// Writes the length prefix of the frame that starts at `start` of `out`
/// (its header's place reserved), or removes the frame if its body is over `max`.
fn seal_frame(out: &mut Vec<u8>, start: usize, max: u32) -> Result<(), FrameError> {
    let len = out.len() - start - FRAME_HEADER_LEN;
    if len > max as usize {
        out.truncate(start);
        return Err(FrameError::Oversize {
            len: len as u64,
            max,
        });
    }
    // `len <= max`, a u32, so the cast is lossless.
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// One frame holding `msg`.
pub fn encode<T: Serialize>(msg: &T, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out, max)?;
    Ok(out)
}

/// The body length announced by a frame header, checked against `max`.
pub fn body_len(header: [u8; FRAME_HEADER_LEN], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > max {
        return Err(FrameError::Oversize {
            len: len.into(),
            max,
        });
    }
    Ok(len as usize)
}

/// Decodes a frame body (without its header). Trailing bytes are an error.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(FrameError::Decode(format!(
            "{} trailing bytes after the message",
            rest.len()
        ))),
        Err(e) => Err(FrameError::Decode(e.to_string())),
    }
}

/// Decodes the first frame of `buf`: `Ok(None)` when `buf` does not yet hold a
/// whole frame, else the message and the number of bytes it used.
pub fn decode<T: DeserializeOwned>(buf: &[u8], max: u32) -> Result<Option<(T, usize)>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    let mut h = [0; FRAME_HEADER_LEN];
    h.copy_from_slice(header);
    let len = body_len(h, max)?;
    let Some(body) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, FRAME_HEADER_LEN + len)))
}

/// Reads the protocol version at the start of a [`RequestEnvelope`] body, even
/// when the rest is from an unknown version.
pub fn peek_version(body: &[u8]) -> Result<u16, FrameError> {
    postcard::take_from_bytes::<u16>(body)
        .map(|(v, _)| v)
        .map_err(|e| FrameError::Decode(e.to_string()))
}

/// Splits a request envelope body into its header and the request's own
/// bytes (not decoded), checking the version first.
pub fn split_request(body: &[u8]) -> Result<(RequestHeader, &[u8]), FrameError> {
    let version = peek_version(body)?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    postcard::take_from_bytes::<RequestHeader>(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Appends the answer to a request of protocol `version` (not this build's)
/// to `out`, in a shape that version reads where this build knows it:
/// version 1 answered a bare result, and knew no `UnsupportedVersion`, so it
/// gets a `Protocol` error naming both versions; any other version gets an
/// envelope of this version with `UnsupportedVersion` under request id 0.
pub fn encode_version_refusal(version: u16, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let unsupported = FrameError::UnsupportedVersion(version);
    if version == 1 {
        let result: Result<Response, Error> = Err(Error::Protocol(unsupported.to_string()));
        return encode_into(&result, out, u32::MAX);
    }
    let refusal = ResponseEnvelope {
        id: 0,
        result: Err(unsupported.into()),
    };
    encode_into(&refusal, out, u32::MAX)
}

/// Appends one request frame to `out`: `header`, then the request's bytes
/// as they are (the encoding of the [`RequestEnvelope`] they make). A body
/// over `max` bytes is refused and `out` is left as it was.
pub fn encode_request_into(
    header: &RequestHeader,
    request: &EncodedRequest,
    out: &mut Vec<u8>,
    max: u32,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    let mut buf = std::mem::take(out);
    buf = match postcard::to_extend(header, buf) {
        Ok(buf) => buf,
        Err(e) => return Err(FrameError::Encode(e.to_string())),
    };
    *out = buf;
    out.extend_from_slice(request.bytes());
    seal_frame(out, start, max)
}

/// Decodes a request envelope body, checking the version first.
pub fn decode_request(body: &[u8]) -> Result<RequestEnvelope, FrameError> {
    let (header, request) = split_request(body)?;
    Ok(RequestEnvelope {
        version: header.version,
        id: header.id,
        deadline_ms: header.deadline_ms,
        trace: header.trace,
        request: decode_body(request)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_and_nacks_are_never_retried_after_a_lost_answer() {
        let store = StoreId::new("s").unwrap();
        let key = SubscriptionKey::new(crate::SubscriptionType::ByStream, "$all", "g").unwrap();
        let lost = Error::unavailable(crate::Side::Worker, "connection lost");
        let ack = Request::AckEvent {
            store: store.clone(),
            key: key.clone(),
            consumer: crate::ConsumerId(1),
            position: crate::Position(0),
        };
        let nack = Request::NackEvent {
            store,
            key,
            consumer: crate::ConsumerId(1),
            position: crate::Position(0),
            action: crate::NackAction::Retry,
        };
        for request in [ack, nack] {
            assert_eq!(request.class(), RequestClass::Write, "{request:?}");
            assert!(!crate::routing::retry_is_safe(request.class(), &lost));
        }
    }

    #[test]
    fn the_sooner_deadline_is_sent_in_whole_milliseconds() {
        let ms = Duration::from_millis;
        assert_eq!(deadline_ms(None, None), None);
        assert_eq!(deadline_ms(Some(500), None), Some(500));
        assert_eq!(deadline_ms(None, Some(ms(70))), Some(70));
        assert_eq!(deadline_ms(Some(500), Some(ms(70))), Some(70));
        assert_eq!(deadline_ms(Some(30), Some(ms(70))), Some(30));
        assert_eq!(
            deadline_ms(Some(30), Some(Duration::from_micros(900))),
            Some(0)
        );
        assert_eq!(
            deadline_ms(None, Some(Duration::from_secs(u64::MAX))),
            Some(u32::MAX)
        );
        let env = RequestEnvelope::new(Request::ListStores, Some(70));
        assert_eq!(env.within(), Some(ms(70)));
    }

    #[test]
    fn frames_round_trip_and_report_their_length() {
        let env = RequestEnvelope::new(Request::ListStores, Some(500));
        let frame = encode(&env, 1024).unwrap();
        let (back, used) = decode::<RequestEnvelope>(&frame, 1024).unwrap().unwrap();
        assert_eq!(back, env);
        assert_eq!(used, frame.len());
        assert_eq!(
            decode::<RequestEnvelope>(&frame[..frame.len() - 1], 1024),
            Ok(None)
        );
    }

    #[test]
    fn oversize_length_prefix_is_refused_before_reading_the_body() {
        let header = (2048u32).to_be_bytes();
        assert_eq!(
            decode::<Request>(&header, 1024),
            Err(FrameError::Oversize {
                len: 2048,
                max: 1024
            })
        );
    }

    #[test]
    fn encoding_over_the_limit_leaves_the_buffer_unchanged() {
        let mut out = vec![9];
        let big = Response::Replayed(u64::MAX);
        assert!(encode_into(&big, &mut out, 2).is_err());
        assert_eq!(out, vec![9]);
    }

    #[test]
    fn unknown_versions_are_named_even_if_the_body_is_foreign() {
        let mut body = postcard::to_stdvec(&7u16).unwrap();
        body.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(
            decode_request(&body),
            Err(FrameError::UnsupportedVersion(7))
        );
        assert_eq!(
            Error::from(FrameError::UnsupportedVersion(7)).kind(),
            "unsupported_version"
        );
    }

    #[test]
    fn an_envelope_is_its_header_then_the_request_body() {
        let mut env = RequestEnvelope::new(Request::ListStores, Some(250));
        env.id = 300;
        let body = postcard::to_stdvec(&env).unwrap();
        let (header, request) = split_request(&body).unwrap();
        assert_eq!(header, env.header());
        assert_eq!(request, postcard::to_stdvec(&env.request).unwrap());
        assert_eq!(decode_request(&body), Ok(env));
    }

    #[test]
    fn a_version_1_client_reads_its_refusal_as_its_own_response_shape() {
        // Version 1's response envelope: the bare result.
        #[derive(Deserialize)]
        struct Version1Response {
            result: Result<Response, Error>,
        }
        let mut out = Vec::new();
        encode_version_refusal(1, &mut out).unwrap();
        let (v1, _) = decode::<Version1Response>(&out, u32::MAX).unwrap().unwrap();
        let message = v1.result.unwrap_err().to_string();
        assert!(
            message.contains("unsupported protocol version 1"),
            "{message}"
        );
        out.clear();
        encode_version_refusal(2, &mut out).unwrap();
        let (v2, _) = decode::<ResponseEnvelope>(&out, u32::MAX).unwrap().unwrap();
        assert_eq!(v2.id, 0);
        assert_eq!(v2.result.unwrap_err().kind(), "unsupported_version");
    }

    #[test]
    fn a_version_1_request_is_refused_by_version() {
        // Version 1: version, deadline, request; no id.
        let mut body = postcard::to_stdvec(&1u16).unwrap();
        body.extend_from_slice(&postcard::to_stdvec(&Some(500u32)).unwrap());
        body.extend_from_slice(&postcard::to_stdvec(&Request::ListStores).unwrap());
        assert_eq!(
            decode_request(&body),
            Err(FrameError::UnsupportedVersion(1))
        );
    }

    #[test]
    fn trailing_bytes_do_not_decode() {
        let mut body = postcard::to_stdvec(&Response::Done).unwrap();
        body.push(0);
        assert!(matches!(
            decode_body::<Response>(&body),
            Err(FrameError::Decode(_))
        ));
    }
}
