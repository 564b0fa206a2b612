//! The [`Gater`] trait: the API contract every store, transport client and proxy honours.
//!
//! Its doc comments are the contract. An implementation that differs from
//! them is wrong; the conformance suite in `gater-store` checks them through
//! every implementation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::access::Whoami;
use crate::append::{Append, AppendOutcome};
use crate::dispatch::unexpected;

use crate::error::{Error, Side};
use crate::event::{
    AppendResult, Direction, EventData, ExpectedVersion, Position, RecordedEvent, StreamPage,
    Version,
};
use crate::id::{StoreId, StreamId};
use crate::lifecycle::{Compaction, StreamRetention};
use crate::query::Query;
use crate::snapshot::{Snapshot, SnapshotKey};
use crate::store::{StoreConfig, StoreInfo, StoreStatus, VerifyReport, WorkerInfo};
use crate::subscription::{
    ConsumerId, NackAction, SubscribeOptions, Subscription, SubscriptionInfo, SubscriptionKey,
    SubscriptionSpec,
};
use crate::wire::{EncodedRequest, Request, Response};

/// Calls `gater` with a request and extracts the expected response variant
/// (`Done` when no variant is named).
macro_rules! respond {
    ($gater:expr, $request:expr, $variant:ident) => {{
        let request = $request;
        let method = request.method();
        match $gater.call(request, None).await? {
            Response::$variant(value) => Ok(value),
            other => Err(unexpected(method, &other)),
        }
    }};
    ($gater:expr, $request:expr) => {{
        let request = $request;
        let method = request.method();
        match $gater.call(request, None).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(method, &other)),
        }
    }};
}

/// A shared, type-erased [`Gater`].
pub type BoxGater = Arc<dyn Gater>;

/// The Gater API: an event store's operations, the same whether the answer
/// comes from an embedded store, over a transport, or through a proxy.
///
/// Two ways to implement it, and an implementation takes exactly one:
/// - answer every method (a store does), and leave [`Gater::call`] to
///   [`dispatch`](crate::dispatch::dispatch) wire requests to them;
/// - answer [`Gater::call`] and [`Gater::subscribe`] (a transport client, a
///   proxy), and leave every other method to build its wire [`Request`]: the
///   mapping from method to request is written once, here.
///
/// An implementation that answers neither a method nor `call` loops between
/// the two defaults; the conformance suite catches it.
///
/// Every method returns a typed [`Error`]; nothing is fire-and-forget. Errors
/// common to all store-scoped methods: an unknown store gives
/// [`Error::NotFound`] with [`Resource::Store`](crate::Resource::Store), a store
/// being removed gives [`Error::StoreStopping`], a path failure gives a
/// retryable [`Error::Unavailable`] or [`Error::DeadlineExceeded`]. Bad input
/// never changes anything.
#[async_trait]
pub trait Gater: Send + Sync + 'static {
    /// Answers one wire request: the entry point of a transport's server,
    /// and of every method an implementation does not answer itself.
    ///
    /// `within` is how long the caller still waits for the answer (the
    /// remaining deadline it sent); an implementation that passes the request
    /// on passes on what remains of it. The default refuses a request with
    /// nothing left (`DeadlineExceeded` of the worker side: it did not start
    /// late work) and dispatches the others to the methods.
    /// `Request::Subscribe` is refused with [`Error::Protocol`]: a
    /// subscription needs a stream of its own ([`Gater::subscribe`]).
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        if within == Some(Duration::ZERO) {
            return Err(Error::DeadlineExceeded { side: Side::Worker });
        }
        crate::dispatch::dispatch(self, request).await
    }

    /// [`Gater::call`] on behalf of `identity`, the name a server learned
    /// from the caller's certificate (see [`access`](crate::access)).
    ///
    /// The default ignores the identity. An implementation that keeps state
    /// per identity overrides it: a proxy records which identity registered
    /// a worker that joins by heartbeat.
    async fn call_as(
        &self,
        identity: &str,
        request: Request,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        let _ = identity;
        self.call(request, within).await
    }

    /// [`Gater::call`] for a request still in its wire encoding, as a
    /// transport's server reads it.
    ///
    /// The default decodes it and answers [`Gater::call`]; bytes that do not
    /// decode give [`Error::Protocol`]. An implementation that only passes
    /// requests on (a proxy, a transport client) overrides it to route on
    /// the request's head and pass the bytes on as they are, decoding only
    /// what it answers itself.
    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        let request = request.decode()?;
        self.call(request, within).await
    }

    /// Appends `events` to `stream` atomically (all or none) if `expected` holds.
    ///
    /// Returns the last event's version and global position. Events get
    /// consecutive versions after the stream's current one and consecutive,
    /// gapless global positions in commit order. Returns only once the events
    /// are durable (per the store's `fsync` setting).
    ///
    /// Idempotent retry: if the ids of `events` are already stored in
    /// `stream`, consecutively and in the same order, the append was applied
    /// before: the original result is returned and nothing is written, whatever
    /// `expected` says now. If only some of them are stored, or they are stored
    /// in another stream or at another place: [`Error::DuplicateEventId`].
    ///
    /// Errors: empty `events` or an event type empty or over 256 bytes →
    /// [`Error::InvalidArgument`]; more events than the limit or an event over
    /// the size limit → [`Error::LimitExceeded`]; the same id twice in `events` →
    /// [`Error::DuplicateEventId`]; `expected` not met →
    /// [`Error::WrongExpectedVersion`] naming the stream, with its current
    /// version; an event's tags malformed → [`Error::InvalidArgument`], over
    /// their limits → [`Error::LimitExceeded`] (see [`query`](crate::query)).
    /// Concurrent appends to one stream never overwrite each other: for one
    /// expected version exactly one wins. It is [`Gater::append`] with one
    /// part and no condition.
    async fn append_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, Error> {
        let request = Request::AppendEvents {
            store: store.clone(),
            stream: stream.clone(),
            expected,
            events,
        };
        respond!(self, request, Appended)
    }

    /// Appends every part of `append` and checks its condition, as one unit.
    ///
    /// Either every event of every part is stored, with contiguous global
    /// positions in part order (and within a part in the given order), or
    /// none is. Each part's `expected` is checked against its stream as in
    /// [`Gater::append_events`]; the first part that fails gives
    /// [`Error::WrongExpectedVersion`] naming its stream. The condition, if
    /// any, fails the append with [`Error::AppendConditionFailed`] (carrying
    /// the position of the first matching event) when an event matching
    /// `fail_if_events_match` is stored at a position after `after` (without
    /// `after`: anywhere in the log, the uniqueness pattern). Expectations
    /// and condition are checked against the log as it is when the append
    /// commits, so of two appends whose conditions the other's events would
    /// fail, at most one commits.
    ///
    /// Returns the position of the last event and each part's stream with
    /// its new version, in part order.
    ///
    /// Idempotent retry: when the events of every part are already stored
    /// as [`Gater::append_events`] would recognise them, the original
    /// outcome is returned and nothing is written; this is checked before
    /// the condition and the expectations, so a retry never fails on its own
    /// first attempt's events. When only some parts are stored:
    /// [`Error::DuplicateEventId`].
    ///
    /// Errors: no parts, a part without events, a stream in two parts, an
    /// invalid condition query → [`Error::InvalidArgument`]; more parts than
    /// [`APPEND_PARTS_MAX`](crate::APPEND_PARTS_MAX), more events in all
    /// parts than the append limit, a query over its limits →
    /// [`Error::LimitExceeded`]; events are checked as in `append_events`.
    async fn append(&self, store: &StoreId, append: Append) -> Result<AppendOutcome, Error> {
        let request = Request::Append {
            store: store.clone(),
            append,
        };
        respond!(self, request, AppendedParts)
    }

    /// Reads up to `count` events matching `query`, in global order.
    ///
    /// Forward from position `from` ascending; backward from `from`
    /// descending (`Position::END`: from the last event). A store answers it
    /// from indexes of events by type and by tag, not by scanning the log:
    /// reading a tag that 10 events of millions carry reads about 10 events.
    /// An empty query (no items) matches every event, as `read_all`. A
    /// reader resumes after the last event it got (`position + 1` forward).
    /// Same `count` and page-size rules as `read_all`; an invalid query →
    /// [`Error::InvalidArgument`] or [`Error::LimitExceeded`].
    async fn read_query(
        &self,
        store: &StoreId,
        query: &Query,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let request = Request::ReadQuery {
            store: store.clone(),
            query: query.clone(),
            from,
            count,
            direction,
        };
        respond!(self, request, Events)
    }

    /// Reads up to `count` events of `stream`.
    ///
    /// Forward: versions `start, start+1, …` ascending. Backward: versions
    /// `start, start-1, …` descending; `start = u64::MAX` (or any start past the
    /// end) means from the last event. Clipped to what exists: a missing stream
    /// or a forward start past the end gives an empty list. `count` of 0 or over
    /// the read limit → [`Error::InvalidArgument`]. A page is bounded by bytes
    /// too ([`page::fit_in_frame`](crate::page::fit_in_frame)): it may hold
    /// fewer than `count` events (at least one when any is left), so a reader
    /// that wants more goes on after the last event it got, until a page is empty.
    async fn get_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let request = Request::GetEvents {
            store: store.clone(),
            stream: stream.clone(),
            start,
            count,
            direction,
        };
        respond!(self, request, Events)
    }

    /// Reads up to `count` events of the store's global log, in commit order.
    ///
    /// Forward from position `from` ascending; backward from `from` descending
    /// (`Position::END` means from the last event). Positions are gapless, so a
    /// reader can resume at `last.position + 1`. Same `count` and page-size
    /// rules as `get_events`.
    async fn read_all(
        &self,
        store: &StoreId,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let request = Request::ReadAll {
            store: store.clone(),
            from,
            count,
            direction,
        };
        respond!(self, request, Events)
    }

    /// Lists streams with their versions in stream id order, `limit` at a time,
    /// starting after `after` (exclusive). `limit` 0 or over the page limit →
    /// [`Error::InvalidArgument`].
    async fn get_streams(
        &self,
        store: &StoreId,
        after: Option<StreamId>,
        limit: u32,
    ) -> Result<StreamPage, Error> {
        let request = Request::GetStreams {
            store: store.clone(),
            after,
            limit,
        };
        respond!(self, request, Streams)
    }

    /// The version of `stream`'s last event, or `None` if it has no events.
    async fn get_version(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<Option<Version>, Error> {
        let request = Request::GetVersion {
            store: store.clone(),
            stream: stream.clone(),
        };
        respond!(self, request, Version)
    }

    /// Soft-deletes `stream` if `expected` holds (checked as for appends,
    /// against the version readers see).
    ///
    /// At once, reads of the stream return no events, [`Gater::get_version`]
    /// answers `None`, [`Gater::get_streams`] omits it, and its events are
    /// gone from `read_all`, queries (they no longer match append
    /// conditions) and subscriptions started or resumed afterwards. A later
    /// append (`NoStream` or `Any`) recreates it and continues numbering
    /// after its last version: versions are never reused, so an idempotent
    /// retry of an append made before the delete still answers its original
    /// result. Deleting a stream with no events is Ok when `expected` holds.
    /// Errors: `expected` not met → [`Error::WrongExpectedVersion`]; a
    /// tombstoned stream → [`Error::StreamDeleted`].
    async fn delete_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        let request = Request::DeleteStream {
            store: store.clone(),
            stream: stream.clone(),
            expected,
        };
        respond!(self, request)
    }

    /// Hard-deletes (tombstones) `stream` if `expected` holds: permanent.
    ///
    /// Every later read, append (whatever it expects) or version query of
    /// the stream fails with [`Error::StreamDeleted`]; its events are gone
    /// from every read at once, and its snapshots (source any, stream id
    /// `stream`) are deleted with it. The name stays taken. Errors as for
    /// [`Gater::delete_stream`].
    async fn tombstone_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        let request = Request::TombstoneStream {
            store: store.clone(),
            stream: stream.clone(),
            expected,
        };
        respond!(self, request)
    }

    /// Hides the events of `stream` with a version lower than `before`,
    /// everywhere, at once. A truncation point never moves back: a lower
    /// `before` than the current one changes nothing. `before` past the last
    /// event hides the whole stream, as a soft delete. A tombstoned stream →
    /// [`Error::StreamDeleted`].
    async fn truncate_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        before: Version,
    ) -> Result<(), Error> {
        let request = Request::TruncateStream {
            store: store.clone(),
            stream: stream.clone(),
            before,
        };
        respond!(self, request)
    }

    /// Sets the retention of `stream`: readers see only its newest
    /// `max_count` events and none older than `max_age_s` seconds (`None`:
    /// the store's default, [`StoreConfig::retention`], applies to that
    /// field). Takes effect at once, everywhere; it may be set before the
    /// stream has events. A tombstoned stream → [`Error::StreamDeleted`].
    async fn set_stream_retention(
        &self,
        store: &StoreId,
        stream: &StreamId,
        max_count: Option<u64>,
        max_age_s: Option<u64>,
    ) -> Result<(), Error> {
        let request = Request::SetStreamRetention {
            store: store.clone(),
            stream: stream.clone(),
            retention: crate::Retention {
                max_count,
                max_age_s,
            },
        };
        respond!(self, request)
    }

    /// The retention `stream` sets for itself and its truncation point (a
    /// soft delete sets it past the last event); all `None` for a stream
    /// never touched. A tombstoned stream → [`Error::StreamDeleted`].
    async fn stream_retention(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<StreamRetention, Error> {
        let request = Request::StreamRetention {
            store: store.clone(),
            stream: stream.clone(),
        };
        respond!(self, request, Retention)
    }

    /// Reclaims the space of the events no reader sees any more (deleted,
    /// tombstoned, truncated, past retention) and returns once it is
    /// reclaimed, with the store's bytes before and after. Appends and
    /// reads go on meanwhile; what readers see does not change. Work done
    /// survives a crash, and a compaction after a restart finishes it.
    async fn compact_store(&self, store: &StoreId) -> Result<Compaction, Error> {
        let request = Request::CompactStore {
            store: store.clone(),
        };
        respond!(self, request, Compacted)
    }

    /// Creates or updates the subscription `spec.key` (identity: type, selector, name).
    ///
    /// A persistent subscription (name other than `"transient"`) is stored
    /// durably with a checkpoint that starts at `spec.start_from`; saving again
    /// updates its settings and keeps its checkpoint. A transient one only
    /// records the settings its next consumer uses. `ack_timeout_ms` of 0 →
    /// [`Error::InvalidArgument`].
    async fn save_subscription(
        &self,
        store: &StoreId,
        spec: SubscriptionSpec,
    ) -> Result<(), Error> {
        let request = Request::SaveSubscription {
            store: store.clone(),
            spec,
        };
        respond!(self, request)
    }

    /// Attaches a consumer to subscription `key` and returns its deliveries.
    ///
    /// A transient key need not have been saved (defaults apply); a persistent
    /// one must exist ([`Error::NotFound`]). Delivery starts at the stored
    /// checkpoint (persistent), else `options.start_from`, else the spec's
    /// `start_from`; history is read from the store (catch-up), then live
    /// events follow with no gap and no duplicate at the switch
    /// ([`SubscriptionItem::CaughtUp`](crate::SubscriptionItem::CaughtUp) marks it).
    /// At most `options.window` deliveries are unacked at once; `window` of 0
    /// or over the limit → [`Error::InvalidArgument`]. Transient subscriptions
    /// are at-most-once and need no acks: the window only bounds what waits
    /// for the consumer, and acks or nacks of its deliveries are accepted and
    /// change nothing. A slow consumer is never
    /// dropped and never makes the server buffer without bound. The stream's
    /// last item is [`SubscriptionItem::End`](crate::SubscriptionItem::End).
    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error>;

    /// Removes the subscription and ends its consumers with
    /// [`SubscriptionEnd::Removed`](crate::SubscriptionEnd::Removed). Unknown → [`Error::NotFound`].
    async fn remove_subscription(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<(), Error> {
        let request = Request::RemoveSubscription {
            store: store.clone(),
            key: key.clone(),
        };
        respond!(self, request)
    }

    /// Lists subscriptions with checkpoint, consumers, in-flight, parked count and lag.
    async fn get_subscriptions(&self, store: &StoreId) -> Result<Vec<SubscriptionInfo>, Error> {
        let request = Request::GetSubscriptions {
            store: store.clone(),
        };
        respond!(self, request, Subscriptions)
    }

    /// Acknowledges the delivery of the event at `position` to `consumer`.
    ///
    /// The checkpoint advances over the contiguous prefix of handled events.
    /// An event not in flight for that consumer → [`Error::NotFound`]
    /// ([`Resource::Delivery`](crate::Resource::Delivery)); an unknown consumer →
    /// [`Error::NotFound`] ([`Resource::Consumer`](crate::Resource::Consumer)).
    async fn ack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        let request = Request::AckEvent {
            store: store.clone(),
            key: key.clone(),
            consumer,
            position,
        };
        respond!(self, request)
    }

    /// Refuses a delivery: `Retry` sends it again (counting towards
    /// `max_retries`, after which it is parked), `Park` sets it aside, `Skip`
    /// handles it as acked. Same errors as `ack_event`.
    async fn nack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        let request = Request::NackEvent {
            store: store.clone(),
            key: key.clone(),
            consumer,
            position,
            action,
        };
        respond!(self, request)
    }

    /// The events parked for a persistent subscription, in position order.
    async fn list_parked(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let request = Request::ListParked {
            store: store.clone(),
            key: key.clone(),
        };
        respond!(self, request, Events)
    }

    /// Moves every parked event back to delivery; returns how many.
    async fn replay_parked(&self, store: &StoreId, key: &SubscriptionKey) -> Result<u64, Error> {
        let request = Request::ReplayParked {
            store: store.clone(),
            key: key.clone(),
        };
        respond!(self, request, Replayed)
    }

    /// Stores `data` under `key`, overwriting any snapshot with the same key.
    /// Empty or over-long source or stream → [`Error::InvalidArgument`]; data
    /// over the snapshot limit → [`Error::LimitExceeded`].
    async fn record_snapshot(
        &self,
        store: &StoreId,
        key: SnapshotKey,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        let request = Request::RecordSnapshot {
            store: store.clone(),
            key,
            data,
        };
        respond!(self, request)
    }

    /// Reads the snapshot of `(source, stream)` at `version`, or the one with
    /// the highest version when `version` is `None`. Missing → [`Error::NotFound`].
    async fn read_snapshot(
        &self,
        store: &StoreId,
        source: &str,
        stream: &str,
        version: Option<Version>,
    ) -> Result<Snapshot, Error> {
        let request = Request::ReadSnapshot {
            store: store.clone(),
            source: source.to_owned(),
            stream: stream.to_owned(),
            version,
        };
        respond!(self, request, Snapshot)
    }

    /// Lists snapshot keys in key order: all, those of a source, or of a source and stream.
    async fn list_snapshots(
        &self,
        store: &StoreId,
        source: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        let request = Request::ListSnapshots {
            store: store.clone(),
            source: source.map(str::to_owned),
            stream: stream.map(str::to_owned),
        };
        respond!(self, request, SnapshotKeys)
    }

    /// Deletes a snapshot. Missing → [`Error::NotFound`].
    async fn delete_snapshot(&self, store: &StoreId, key: &SnapshotKey) -> Result<(), Error> {
        let request = Request::DeleteSnapshot {
            store: store.clone(),
            key: key.clone(),
        };
        respond!(self, request)
    }

    /// Creates a store and returns once it serves requests. Creating an
    /// existing store with the same config is Ok; with another config →
    /// [`Error::StoreConfigConflict`].
    async fn create_store(&self, store: &StoreId, config: StoreConfig) -> Result<(), Error> {
        let request = Request::CreateStore {
            store: store.clone(),
            config,
        };
        respond!(self, request)
    }

    /// Stops a store (its consumers end with `StoreRemoved`, new requests get
    /// `StoreStopping`), then deletes its data. Unknown → [`Error::NotFound`].
    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        let request = Request::RemoveStore {
            store: store.clone(),
        };
        respond!(self, request)
    }

    /// Lists stores, with the workers serving each.
    async fn list_stores(&self) -> Result<Vec<StoreInfo>, Error> {
        respond!(self, Request::ListStores, Stores)
    }

    /// A store's status: state, stream and event counts, head, disk bytes, workers.
    async fn get_store_status(&self, store: &StoreId) -> Result<StoreStatus, Error> {
        let request = Request::GetStoreStatus {
            store: store.clone(),
        };
        respond!(self, request, StoreStatus)
    }

    /// A store's configuration.
    async fn get_store_config(&self, store: &StoreId) -> Result<StoreConfig, Error> {
        let request = Request::GetStoreConfig {
            store: store.clone(),
        };
        respond!(self, request, StoreConfig)
    }

    /// Reopens a store from its storage now (recovery from disk), instead
    /// of waiting for it to heal by itself; the store then runs, or stays
    /// `ReadOnly` / `Failed` and the error says why. Unknown → [`Error::NotFound`].
    async fn reopen_store(&self, store: &StoreId) -> Result<(), Error> {
        let request = Request::ReopenStore {
            store: store.clone(),
        };
        respond!(self, request)
    }

    /// Reads back every record of a store's log and checks it (checksum and
    /// decoding); the report lists the positions that failed.
    async fn verify_store(&self, store: &StoreId) -> Result<VerifyReport, Error> {
        let request = Request::VerifyStore {
            store: store.clone(),
        };
        respond!(self, request, Verified)
    }

    /// The gateway workers behind this endpoint (the seed's `gateway_worker_pids`).
    /// A worker lists itself; a proxy lists its pool.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        respond!(self, Request::Workers, Workers)
    }

    /// A worker announces itself (and heartbeats) to a proxy. Implementations
    /// that keep no membership answer [`Error::Unsupported`].
    async fn heartbeat(&self, worker: WorkerInfo) -> Result<(), Error> {
        respond!(self, Request::Heartbeat { worker })
    }

    /// The identity the serving endpoint learned from this client's
    /// certificate, and its grants. Answered by a server that checks
    /// identities (see [`access`](crate::access)); anything else answers
    /// [`Error::Unsupported`].
    async fn whoami(&self) -> Result<Whoami, Error> {
        respond!(self, Request::Whoami, Whoami)
    }
}

/// A shared [`Gater`] is a [`Gater`]: proxies and transports hold workers as `Arc<dyn Gater>`.
#[async_trait]
impl<G: Gater + ?Sized> Gater for Arc<G> {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        (**self).call(request, within).await
    }

    async fn call_as(
        &self,
        identity: &str,
        request: Request,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        (**self).call_as(identity, request, within).await
    }

    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        (**self).call_encoded(request, within).await
    }

    async fn append_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, Error> {
        (**self)
            .append_events(store, stream, expected, events)
            .await
    }
    async fn append(&self, store: &StoreId, append: Append) -> Result<AppendOutcome, Error> {
        (**self).append(store, append).await
    }
    async fn read_query(
        &self,
        store: &StoreId,
        query: &Query,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        (**self)
            .read_query(store, query, from, count, direction)
            .await
    }
    async fn get_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        (**self)
            .get_events(store, stream, start, count, direction)
            .await
    }
    async fn read_all(
        &self,
        store: &StoreId,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        (**self).read_all(store, from, count, direction).await
    }
    async fn get_streams(
        &self,
        store: &StoreId,
        after: Option<StreamId>,
        limit: u32,
    ) -> Result<StreamPage, Error> {
        (**self).get_streams(store, after, limit).await
    }
    async fn get_version(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<Option<Version>, Error> {
        (**self).get_version(store, stream).await
    }
    async fn delete_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        (**self).delete_stream(store, stream, expected).await
    }
    async fn tombstone_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<(), Error> {
        (**self).tombstone_stream(store, stream, expected).await
    }
    async fn truncate_stream(
        &self,
        store: &StoreId,
        stream: &StreamId,
        before: Version,
    ) -> Result<(), Error> {
        (**self).truncate_stream(store, stream, before).await
    }
    async fn set_stream_retention(
        &self,
        store: &StoreId,
        stream: &StreamId,
        max_count: Option<u64>,
        max_age_s: Option<u64>,
    ) -> Result<(), Error> {
        (**self)
            .set_stream_retention(store, stream, max_count, max_age_s)
            .await
    }
    async fn stream_retention(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<StreamRetention, Error> {
        (**self).stream_retention(store, stream).await
    }
    async fn compact_store(&self, store: &StoreId) -> Result<Compaction, Error> {
        (**self).compact_store(store).await
    }
    async fn save_subscription(
        &self,
        store: &StoreId,
        spec: SubscriptionSpec,
    ) -> Result<(), Error> {
        (**self).save_subscription(store, spec).await
    }
    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        (**self).subscribe(store, key, options).await
    }
    async fn remove_subscription(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<(), Error> {
        (**self).remove_subscription(store, key).await
    }
    async fn get_subscriptions(&self, store: &StoreId) -> Result<Vec<SubscriptionInfo>, Error> {
        (**self).get_subscriptions(store).await
    }
    async fn ack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        (**self).ack_event(store, key, consumer, position).await
    }
    async fn nack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        (**self)
            .nack_event(store, key, consumer, position, action)
            .await
    }
    async fn list_parked(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<Vec<RecordedEvent>, Error> {
        (**self).list_parked(store, key).await
    }
    async fn replay_parked(&self, store: &StoreId, key: &SubscriptionKey) -> Result<u64, Error> {
        (**self).replay_parked(store, key).await
    }
    async fn record_snapshot(
        &self,
        store: &StoreId,
        key: SnapshotKey,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        (**self).record_snapshot(store, key, data).await
    }
    async fn read_snapshot(
        &self,
        store: &StoreId,
        source: &str,
        stream: &str,
        version: Option<Version>,
    ) -> Result<Snapshot, Error> {
        (**self).read_snapshot(store, source, stream, version).await
    }
    async fn list_snapshots(
        &self,
        store: &StoreId,
        source: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        (**self).list_snapshots(store, source, stream).await
    }
    async fn delete_snapshot(&self, store: &StoreId, key: &SnapshotKey) -> Result<(), Error> {
        (**self).delete_snapshot(store, key).await
    }
    async fn create_store(&self, store: &StoreId, config: StoreConfig) -> Result<(), Error> {
        (**self).create_store(store, config).await
    }
    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        (**self).remove_store(store).await
    }
    async fn list_stores(&self) -> Result<Vec<StoreInfo>, Error> {
        (**self).list_stores().await
    }
    async fn get_store_status(&self, store: &StoreId) -> Result<StoreStatus, Error> {
        (**self).get_store_status(store).await
    }
    async fn get_store_config(&self, store: &StoreId) -> Result<StoreConfig, Error> {
        (**self).get_store_config(store).await
    }
    async fn reopen_store(&self, store: &StoreId) -> Result<(), Error> {
        (**self).reopen_store(store).await
    }
    async fn verify_store(&self, store: &StoreId) -> Result<VerifyReport, Error> {
        (**self).verify_store(store).await
    }
    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        (**self).workers().await
    }
    async fn heartbeat(&self, worker: WorkerInfo) -> Result<(), Error> {
        (**self).heartbeat(worker).await
    }
    async fn whoami(&self) -> Result<Whoami, Error> {
        (**self).whoami().await
    }
}
