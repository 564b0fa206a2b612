//! Property tests of the wire codec: every message of every type round-trips
//! through a frame unchanged, and no input bytes make a decoder panic.

use gater_core::wire::{
    decode, decode_body, decode_request, encode, encode_into, encode_request_into, peek_version,
    split_request, EncodedRequest, FrameError, Request, RequestEnvelope, RequestHead, Response,
    ResponseEnvelope, SubscriptionDown, SubscriptionUp, FRAME_BYTES_MAX_DEFAULT, FRAME_HEADER_LEN,
    PROTOCOL_VERSION,
};
use gater_core::{
    Append, AppendCondition, AppendOutcome, AppendPart, AppendResult, Compaction, ConsumerId,
    ConsumerStrategy, Delivery, Direction, Error, EventData, EventId, ExpectedVersion, IdError,
    NackAction, Position, Query, QueryItem, RecordedEvent, Resource, Retention, Side, Snapshot,
    SnapshotKey, StoreConfig, StoreFault, StoreId, StoreInfo, StoreState, StoreStatus, StreamId,
    StreamInfo, StreamPage, StreamRetention, StreamVersion, SubscribeOptions, SubscriptionEnd,
    SubscriptionInfo, SubscriptionItem, SubscriptionKey, SubscriptionSpec, SubscriptionType,
    VerifyReport, WorkerHealth, WorkerInfo, TRANSIENT,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::strategy::Union;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

const MAX: u32 = FRAME_BYTES_MAX_DEFAULT;

// ------------------------------------------------------------ domain types

fn text() -> impl Strategy<Value = String> {
    "[^\\p{Cc}]{0,24}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..48)
}

fn store_id() -> impl Strategy<Value = StoreId> {
    "[a-z0-9_-]{1,64}".prop_map(|s| StoreId::new(s).expect("the pattern only makes valid ids"))
}

fn user_stream_id() -> impl Strategy<Value = String> {
    "[^$\\p{Cc}][^\\p{Cc}]{0,30}"
}

fn stream_id() -> impl Strategy<Value = StreamId> {
    prop_oneof![
        4 => user_stream_id().prop_map(|s| StreamId::new(s).expect("the pattern only makes valid ids")),
        1 => Just(StreamId::all()),
    ]
}

fn event_id() -> impl Strategy<Value = EventId> {
    any::<[u8; 16]>().prop_map(EventId::from_bytes)
}

fn position() -> impl Strategy<Value = Position> {
    any::<u64>().prop_map(Position)
}

fn tags() -> impl Strategy<Value = Vec<String>> {
    vec("[^\\p{Cc}]{1,12}", 0..4)
}

fn event_data() -> impl Strategy<Value = EventData> {
    (
        event_id(),
        "[^\\p{Cc}]{1,24}",
        bytes(),
        bytes(),
        text(),
        tags(),
    )
        .prop_map(
            |(id, event_type, data, metadata, content_type, tags)| EventData {
                id,
                event_type,
                data,
                metadata,
                content_type,
                tags,
            },
        )
}

fn query() -> impl Strategy<Value = Query> {
    vec(
        (vec("[^\\p{Cc}]{1,12}", 0..3), tags()).prop_map(|(types, tags)| QueryItem { types, tags }),
        0..3,
    )
    .prop_map(|items| Query { items })
}

fn append() -> impl Strategy<Value = Append> {
    let part = (stream_id(), expected_version(), vec(event_data(), 0..3)).prop_map(
        |(stream, expected, events)| AppendPart {
            stream,
            expected,
            events,
        },
    );
    let condition = (query(), option::of(position())).prop_map(|(query, after)| AppendCondition {
        fail_if_events_match: query,
        after,
    });
    (vec(part, 0..3), option::of(condition))
        .prop_map(|(parts, condition)| Append { parts, condition })
}

fn append_outcome() -> impl Strategy<Value = AppendOutcome> {
    let stream =
        (stream_id(), any::<u64>()).prop_map(|(stream, version)| StreamVersion { stream, version });
    (position(), vec(stream, 0..3))
        .prop_map(|(position, streams)| AppendOutcome { position, streams })
}

fn recorded_event() -> impl Strategy<Value = RecordedEvent> {
    (
        stream_id(),
        any::<u64>(),
        position(),
        any::<u64>(),
        event_data(),
    )
        .prop_map(
            |(stream, version, position, created_us, data)| RecordedEvent {
                stream,
                version,
                position,
                created_us,
                data,
            },
        )
}

fn expected_version() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::StreamExists),
        any::<u64>().prop_map(ExpectedVersion::Exact),
    ]
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Forward), Just(Direction::Backward)]
}

/// A JSON object as selector text: string values are globs (no backslash), others numbers.
fn json_object() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "[a-z*-]{0,8}".prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
    ];
    proptest::collection::btree_map("[a-z_]{1,8}", value, 0..4)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()).to_string())
}

fn subscription_key() -> impl Strategy<Value = SubscriptionKey> {
    let selector = prop_oneof![
        stream_id().prop_map(|s| (SubscriptionType::ByStream, s.to_string())),
        "[^\\p{Cc}]{1,24}".prop_map(|t| (SubscriptionType::ByEventType, t)),
        json_object().prop_map(|j| (SubscriptionType::ByEventPattern, j)),
        json_object().prop_map(|j| (SubscriptionType::ByEventPayload, j)),
        query()
            .prop_filter("a selector's query is valid", |q| q.validate().is_ok())
            .prop_map(|q| (SubscriptionType::ByQuery, q.to_json())),
    ];
    let name = prop_oneof![Just(TRANSIENT.to_owned()), "[^\\p{Cc}]{1,24}"];
    (selector, name).prop_map(|((kind, selector), name)| {
        SubscriptionKey::new(kind, selector, name).expect("strategies only make valid keys")
    })
}

fn subscription_spec() -> impl Strategy<Value = SubscriptionSpec> {
    let strategy = prop_oneof![
        Just(ConsumerStrategy::RoundRobin),
        Just(ConsumerStrategy::PinnedByStream)
    ];
    (
        subscription_key(),
        position(),
        strategy,
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(key, start_from, strategy, ack_timeout_ms, max_retries)| {
            SubscriptionSpec {
                key,
                start_from,
                strategy,
                ack_timeout_ms,
                max_retries,
            }
        })
}

fn subscribe_options() -> impl Strategy<Value = SubscribeOptions> {
    (any::<u32>(), option::of(position()))
        .prop_map(|(window, start_from)| SubscribeOptions { window, start_from })
}

fn nack_action() -> impl Strategy<Value = NackAction> {
    prop_oneof![
        Just(NackAction::Retry),
        Just(NackAction::Park),
        Just(NackAction::Skip)
    ]
}

fn snapshot_key() -> impl Strategy<Value = SnapshotKey> {
    (text(), text(), any::<u64>()).prop_map(|(source, stream, version)| SnapshotKey {
        source,
        stream,
        version,
    })
}

fn store_config() -> impl Strategy<Value = StoreConfig> {
    (any::<bool>(), any::<bool>(), retention()).prop_map(|(fsync, group_commit, retention)| {
        StoreConfig {
            fsync,
            group_commit,
            retention,
        }
    })
}

fn retention() -> impl Strategy<Value = Retention> {
    (option::of(any::<u64>()), option::of(any::<u64>())).prop_map(|(max_count, max_age_s)| {
        Retention {
            max_count,
            max_age_s,
        }
    })
}

fn store_state() -> impl Strategy<Value = StoreState> {
    prop_oneof![
        Just(StoreState::Starting),
        Just(StoreState::Running),
        Just(StoreState::Stopping),
        Just(StoreState::ReadOnly),
        Just(StoreState::Failed)
    ]
}

fn worker_info() -> impl Strategy<Value = WorkerInfo> {
    let health = prop_oneof![
        Just(WorkerHealth::Healthy),
        Just(WorkerHealth::Probation),
        Just(WorkerHealth::Suspect),
        Just(WorkerHealth::Ejected),
    ];
    (
        text(),
        text(),
        health,
        any::<u32>(),
        any::<u64>(),
        vec(store_id(), 0..4),
        any::<bool>(),
        vec(store_fault(), 0..3),
    )
        .prop_map(
            |(id, address, health, in_flight, latency_us, stores, shared_storage, faults)| {
                WorkerInfo {
                    id,
                    address,
                    health,
                    in_flight,
                    latency_us,
                    stores,
                    shared_storage,
                    faults,
                }
            },
        )
}

fn store_fault() -> impl Strategy<Value = StoreFault> {
    (store_id(), store_state(), text()).prop_map(|(store, state, reason)| StoreFault {
        store,
        state,
        reason,
    })
}

fn id_error() -> impl Strategy<Value = IdError> {
    prop_oneof![
        any::<usize>().prop_map(|len| IdError::StoreIdLength { len }),
        (text(), any::<char>()).prop_map(|(id, c)| IdError::StoreIdChar { id, c }),
        any::<usize>().prop_map(|len| IdError::StreamIdLength { len }),
        Just(IdError::StreamIdControl),
        text().prop_map(|id| IdError::StreamIdReserved { id }),
        text().prop_map(|id| IdError::EventId { id }),
    ]
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![
        Just(Side::Client),
        Just(Side::Proxy),
        Just(Side::Worker),
        Just(Side::Storage)
    ]
}

fn resource() -> impl Strategy<Value = Resource> {
    prop_oneof![
        Just(Resource::Store),
        Just(Resource::Stream),
        Just(Resource::Subscription),
        Just(Resource::Consumer),
        Just(Resource::Delivery),
        Just(Resource::Snapshot),
        Just(Resource::Worker),
    ]
}

/// Every kind of [`Error`].
fn error() -> impl Strategy<Value = Error> {
    Union::new(vec![
        text().prop_map(Error::InvalidArgument).boxed(),
        id_error().prop_map(Error::InvalidId).boxed(),
        (resource(), text())
            .prop_map(|(resource, id)| Error::NotFound { resource, id })
            .boxed(),
        text()
            .prop_map(|store| Error::StoreConfigConflict { store })
            .boxed(),
        (stream_id(), expected_version(), option::of(any::<u64>()))
            .prop_map(|(stream, expected, current)| Error::WrongExpectedVersion {
                stream,
                expected,
                current,
            })
            .boxed(),
        position()
            .prop_map(|position| Error::AppendConditionFailed { position })
            .boxed(),
        stream_id()
            .prop_map(|stream| Error::StreamDeleted { stream })
            .boxed(),
        event_id()
            .prop_map(|id| Error::DuplicateEventId { id })
            .boxed(),
        (text(), any::<u64>(), any::<u64>())
            .prop_map(|(limit, max, actual)| Error::LimitExceeded { limit, max, actual })
            .boxed(),
        text()
            .prop_map(|store| Error::StoreStopping { store })
            .boxed(),
        (side(), text())
            .prop_map(|(side, message)| Error::Unavailable { side, message })
            .boxed(),
        side()
            .prop_map(|side| Error::DeadlineExceeded { side })
            .boxed(),
        (side(), text())
            .prop_map(|(side, message)| Error::Overloaded { side, message })
            .boxed(),
        text().prop_map(Error::Protocol).boxed(),
        text().prop_map(Error::Unsupported).boxed(),
        text().prop_map(Error::Storage).boxed(),
        (text(), text())
            .prop_map(|(store, message)| Error::StorageFull { store, message })
            .boxed(),
        (text(), text())
            .prop_map(|(store, message)| Error::StorageFailed { store, message })
            .boxed(),
        (any::<u16>(), any::<u16>())
            .prop_map(|(version, supported)| Error::UnsupportedVersion { version, supported })
            .boxed(),
    ])
}

fn subscription_item() -> impl Strategy<Value = SubscriptionItem> {
    let end = prop_oneof![
        Just(SubscriptionEnd::Removed),
        Just(SubscriptionEnd::StoreRemoved),
        Just(SubscriptionEnd::Shutdown),
        error().prop_map(SubscriptionEnd::Failed),
    ];
    prop_oneof![
        (recorded_event(), any::<u32>())
            .prop_map(|(event, attempt)| SubscriptionItem::Event(Delivery { event, attempt })),
        Just(SubscriptionItem::CaughtUp),
        end.prop_map(SubscriptionItem::End),
    ]
}

// ------------------------------------------------------------ wire messages

/// Every [`Request`] variant.
fn request() -> impl Strategy<Value = Request> {
    let sub = || (store_id(), subscription_key());
    Union::new(vec![
        (
            store_id(),
            stream_id(),
            expected_version(),
            vec(event_data(), 0..4),
        )
            .prop_map(|(store, stream, expected, events)| Request::AppendEvents {
                store,
                stream,
                expected,
                events,
            })
            .boxed(),
        (
            store_id(),
            stream_id(),
            any::<u64>(),
            any::<u32>(),
            direction(),
        )
            .prop_map(
                |(store, stream, start, count, direction)| Request::GetEvents {
                    store,
                    stream,
                    start,
                    count,
                    direction,
                },
            )
            .boxed(),
        (store_id(), position(), any::<u32>(), direction())
            .prop_map(|(store, from, count, direction)| Request::ReadAll {
                store,
                from,
                count,
                direction,
            })
            .boxed(),
        (store_id(), option::of(stream_id()), any::<u32>())
            .prop_map(|(store, after, limit)| Request::GetStreams {
                store,
                after,
                limit,
            })
            .boxed(),
        (store_id(), stream_id())
            .prop_map(|(store, stream)| Request::GetVersion { store, stream })
            .boxed(),
        (store_id(), subscription_spec())
            .prop_map(|(store, spec)| Request::SaveSubscription { store, spec })
            .boxed(),
        (store_id(), subscription_key(), subscribe_options())
            .prop_map(|(store, key, options)| Request::Subscribe {
                store,
                key,
                options,
            })
            .boxed(),
        sub()
            .prop_map(|(store, key)| Request::RemoveSubscription { store, key })
            .boxed(),
        store_id()
            .prop_map(|store| Request::GetSubscriptions { store })
            .boxed(),
        (store_id(), subscription_key(), any::<u64>(), position())
            .prop_map(|(store, key, c, position)| Request::AckEvent {
                store,
                key,
                consumer: ConsumerId(c.into()),
                position,
            })
            .boxed(),
        (
            store_id(),
            subscription_key(),
            any::<u64>(),
            position(),
            nack_action(),
        )
            .prop_map(|(store, key, c, position, action)| Request::NackEvent {
                store,
                key,
                consumer: ConsumerId(c.into()),
                position,
                action,
            })
            .boxed(),
        sub()
            .prop_map(|(store, key)| Request::ListParked { store, key })
            .boxed(),
        sub()
            .prop_map(|(store, key)| Request::ReplayParked { store, key })
            .boxed(),
        (store_id(), snapshot_key(), bytes())
            .prop_map(|(store, key, data)| Request::RecordSnapshot { store, key, data })
            .boxed(),
        (store_id(), text(), text(), option::of(any::<u64>()))
            .prop_map(|(store, source, stream, version)| Request::ReadSnapshot {
                store,
                source,
                stream,
                version,
            })
            .boxed(),
        (store_id(), option::of(text()), option::of(text()))
            .prop_map(|(store, source, stream)| Request::ListSnapshots {
                store,
                source,
                stream,
            })
            .boxed(),
        (store_id(), snapshot_key())
            .prop_map(|(store, key)| Request::DeleteSnapshot { store, key })
            .boxed(),
        (store_id(), store_config())
            .prop_map(|(store, config)| Request::CreateStore { store, config })
            .boxed(),
        store_id()
            .prop_map(|store| Request::RemoveStore { store })
            .boxed(),
        Just(Request::ListStores).boxed(),
        store_id()
            .prop_map(|store| Request::GetStoreStatus { store })
            .boxed(),
        store_id()
            .prop_map(|store| Request::GetStoreConfig { store })
            .boxed(),
        store_id()
            .prop_map(|store| Request::ReopenStore { store })
            .boxed(),
        store_id()
            .prop_map(|store| Request::VerifyStore { store })
            .boxed(),
        Just(Request::Workers).boxed(),
        Just(Request::Whoami).boxed(),
        worker_info()
            .prop_map(|worker| Request::Heartbeat { worker })
            .boxed(),
        (store_id(), append())
            .prop_map(|(store, append)| Request::Append { store, append })
            .boxed(),
        (store_id(), query(), position(), any::<u32>(), direction())
            .prop_map(
                |(store, query, from, count, direction)| Request::ReadQuery {
                    store,
                    query,
                    from,
                    count,
                    direction,
                },
            )
            .boxed(),
        (store_id(), stream_id(), expected_version())
            .prop_map(|(store, stream, expected)| Request::DeleteStream {
                store,
                stream,
                expected,
            })
            .boxed(),
        (store_id(), stream_id(), expected_version())
            .prop_map(|(store, stream, expected)| Request::TombstoneStream {
                store,
                stream,
                expected,
            })
            .boxed(),
        (store_id(), stream_id(), any::<u64>())
            .prop_map(|(store, stream, before)| Request::TruncateStream {
                store,
                stream,
                before,
            })
            .boxed(),
        (store_id(), stream_id(), retention())
            .prop_map(|(store, stream, retention)| Request::SetStreamRetention {
                store,
                stream,
                retention,
            })
            .boxed(),
        (store_id(), stream_id())
            .prop_map(|(store, stream)| Request::StreamRetention { store, stream })
            .boxed(),
        store_id()
            .prop_map(|store| Request::CompactStore { store })
            .boxed(),
    ])
}

/// Every [`Response`] variant.
fn response() -> impl Strategy<Value = Response> {
    let stream_info =
        (stream_id(), any::<u64>()).prop_map(|(stream, version)| StreamInfo { stream, version });
    let subscription_info = (
        subscription_spec(),
        position(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(spec, checkpoint, consumers, in_flight, parked, lag)| SubscriptionInfo {
                spec,
                checkpoint,
                consumers,
                in_flight,
                parked,
                lag,
            },
        );
    let store_info = (
        store_id(),
        store_config(),
        store_state(),
        option::of(text()),
        vec(text(), 0..3),
    )
        .prop_map(|(store, config, state, reason, workers)| StoreInfo {
            store,
            config,
            state,
            reason,
            workers,
        });
    let store_status = (
        store_id(),
        (store_state(), option::of(text())),
        any::<u64>(),
        any::<u64>(),
        option::of(position()),
        any::<u64>(),
        vec(text(), 0..3),
    )
        .prop_map(
            |(store, (state, reason), stream_count, event_count, head, disk_bytes, workers)| {
                StoreStatus {
                    store,
                    state,
                    reason,
                    stream_count,
                    event_count,
                    head,
                    disk_bytes,
                    workers,
                }
            },
        );
    let stream_retention = (
        stream_id(),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
    )
        .prop_map(
            |(stream, max_count, max_age_s, truncate_before)| StreamRetention {
                stream,
                max_count,
                max_age_s,
                truncate_before,
            },
        );
    let compaction = (store_id(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(store, bytes_before, bytes_after, events_removed)| Compaction {
            store,
            bytes_before,
            bytes_after,
            events_removed,
        },
    );
    Union::new(vec![
        stream_retention.prop_map(Response::Retention).boxed(),
        compaction.prop_map(Response::Compacted).boxed(),
        (any::<u64>(), position())
            .prop_map(|(version, position)| Response::Appended(AppendResult { version, position }))
            .boxed(),
        vec(recorded_event(), 0..4)
            .prop_map(Response::Events)
            .boxed(),
        (vec(stream_info, 0..4), option::of(stream_id()))
            .prop_map(|(streams, next_after)| {
                Response::Streams(StreamPage {
                    streams,
                    next_after,
                })
            })
            .boxed(),
        option::of(any::<u64>()).prop_map(Response::Version).boxed(),
        Just(Response::Done).boxed(),
        any::<u64>()
            .prop_map(|c| Response::Subscribed(ConsumerId(c.into())))
            .boxed(),
        vec(subscription_info, 0..3)
            .prop_map(Response::Subscriptions)
            .boxed(),
        any::<u64>().prop_map(Response::Replayed).boxed(),
        (snapshot_key(), bytes(), any::<u64>())
            .prop_map(|(key, data, created_us)| {
                Response::Snapshot(Snapshot {
                    key,
                    data,
                    created_us,
                })
            })
            .boxed(),
        vec(snapshot_key(), 0..4)
            .prop_map(Response::SnapshotKeys)
            .boxed(),
        vec(store_info, 0..3).prop_map(Response::Stores).boxed(),
        store_status.prop_map(Response::StoreStatus).boxed(),
        store_config().prop_map(Response::StoreConfig).boxed(),
        vec(worker_info(), 0..3).prop_map(Response::Workers).boxed(),
        (store_id(), any::<u64>(), vec(any::<u64>(), 0..4))
            .prop_map(|(store, records, corrupt)| {
                Response::Verified(VerifyReport {
                    store,
                    records,
                    corrupt,
                })
            })
            .boxed(),
        append_outcome().prop_map(Response::AppendedParts).boxed(),
    ])
}

fn request_envelope() -> impl Strategy<Value = RequestEnvelope> {
    (
        prop_oneof![4 => Just(PROTOCOL_VERSION), 1 => any::<u16>()],
        any::<u64>(),
        option::of(any::<u32>()),
        any::<u64>(),
        request(),
    )
        .prop_map(
            |(version, id, deadline_ms, trace, request)| RequestEnvelope {
                version,
                id,
                deadline_ms,
                trace,
                request,
            },
        )
}

fn response_envelope() -> impl Strategy<Value = ResponseEnvelope> {
    (
        any::<u64>(),
        prop_oneof![response().prop_map(Ok), error().prop_map(Err)],
    )
        .prop_map(|(id, result)| ResponseEnvelope { id, result })
}

fn subscription_up() -> impl Strategy<Value = SubscriptionUp> {
    prop_oneof![
        any::<u32>().prop_map(SubscriptionUp::Credit),
        position().prop_map(SubscriptionUp::Ack),
        (position(), nack_action()).prop_map(|(p, a)| SubscriptionUp::Nack(p, a)),
        Just(SubscriptionUp::Close),
    ]
}

fn subscription_down() -> impl Strategy<Value = SubscriptionDown> {
    prop_oneof![
        subscription_item().prop_map(SubscriptionDown::Item),
        (position(), prop_oneof![Just(Ok(())), error().prop_map(Err)])
            .prop_map(|(p, r)| SubscriptionDown::AckResult(p, r)),
    ]
}

// ---------------------------------------------------------------- helpers

/// Encodes `msg` as a frame and decodes it back: same message, whole frame used.
fn assert_round_trip<T>(msg: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone,
{
    let frame = encode(msg, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoded = decode::<T>(&frame, MAX);
    prop_assert_eq!(decoded, Ok(Some((msg.clone(), frame.len()))));
    Ok(())
}

/// Decodes `bytes` as `T`; the only requirement is to return rather than panic,
/// and never to claim more bytes than given.
fn decode_any<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Some((_, used))) = decode::<T>(bytes, MAX) {
        prop_assert!(used <= bytes.len());
    }
    let _ = decode_body::<T>(bytes);
    Ok(())
}

fn decode_all_types(bytes: &[u8]) -> Result<(), TestCaseError> {
    decode_any::<RequestEnvelope>(bytes)?;
    decode_any::<ResponseEnvelope>(bytes)?;
    decode_any::<Request>(bytes)?;
    decode_any::<Response>(bytes)?;
    decode_any::<SubscriptionUp>(bytes)?;
    decode_any::<SubscriptionDown>(bytes)?;
    let _ = decode_request(bytes);
    let _ = peek_version(bytes);
    // A head that reads belongs to every request that decodes from the bytes.
    if let (Ok(head), Ok(request)) = (RequestHead::read(bytes), decode_body::<Request>(bytes)) {
        prop_assert_eq!(head, request.head());
    }
    Ok(())
}

// ------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_request_round_trips(env in request_envelope()) {
        assert_round_trip(&env)?;
        assert_round_trip(&env.request)?;
        let frame = encode(&env, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let body = &frame[FRAME_HEADER_LEN..];
        prop_assert_eq!(peek_version(body), Ok(env.version));
        if env.version == PROTOCOL_VERSION {
            let request = postcard::to_stdvec(&env.request).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(split_request(body), Ok((env.header(), request.as_slice())));
            prop_assert_eq!(decode_request(body), Ok(env));
        } else {
            prop_assert_eq!(decode_request(body), Err(FrameError::UnsupportedVersion(env.version)));
        }
    }

    #[test]
    fn a_request_head_is_read_from_its_encoding_alone(request in request(), rest in vec(any::<u8>(), 0..16)) {
        let encoded = EncodedRequest::encode(&request).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(encoded.head(), &request.head());
        prop_assert_eq!(RequestHead::read(encoded.bytes()), Ok(request.head()));
        prop_assert_eq!(encoded.decode(), Ok(request.clone()));
        // The head is the encoding's first bytes: whatever follows it is not read.
        let cut = postcard::to_stdvec(&request.kind()).map_err(|e| TestCaseError::fail(e.to_string()))?.len()
            + request.store().map_or(0, |s| postcard::to_stdvec(s).map_or(0, |b| b.len()));
        let mut head_only = encoded.bytes()[..cut].to_vec();
        head_only.extend_from_slice(&rest);
        prop_assert_eq!(RequestHead::read(&head_only), Ok(request.head()));
        let again = EncodedRequest::from_bytes(encoded.bytes().to_vec().into()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again, encoded);
    }

    #[test]
    fn a_request_frame_from_its_encoded_request_is_the_envelope_frame(env in request_envelope()) {
        let encoded = EncodedRequest::encode(&env.request).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut frame = vec![7];
        encode_request_into(&env.header(), &encoded, &mut frame, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let whole = encode(&env, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&frame[1..], whole.as_slice());
        // Over the limit: refused, the buffer as it was.
        let body = whole.len() - FRAME_HEADER_LEN;
        let mut short = vec![7];
        let refused = encode_request_into(&env.header(), &encoded, &mut short, (body - 1) as u32);
        prop_assert_eq!(refused, Err(FrameError::Oversize { len: body as u64, max: (body - 1) as u32 }));
        prop_assert_eq!(short, vec![7]);
    }

    #[test]
    fn every_response_round_trips(env in response_envelope()) {
        assert_round_trip(&env)?;
        if let Ok(response) = &env.result {
            assert_round_trip(response)?;
        }
    }

    #[test]
    fn every_subscription_frame_round_trips(up in subscription_up(), down in subscription_down()) {
        assert_round_trip(&up)?;
        assert_round_trip(&down)?;
    }

    #[test]
    fn back_to_back_frames_decode_one_at_a_time(
        first in response_envelope(),
        second in subscription_down(),
    ) {
        let mut buf = Vec::new();
        encode_into(&first, &mut buf, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let split = buf.len();
        encode_into(&second, &mut buf, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Ok(Some((a, used))) = decode::<ResponseEnvelope>(&buf, MAX) else {
            return Err(TestCaseError::fail("the first frame did not decode"));
        };
        prop_assert_eq!(a, first);
        prop_assert_eq!(used, split);
        prop_assert_eq!(decode::<SubscriptionDown>(&buf[used..], MAX), Ok(Some((second, buf.len() - split))));
    }

    #[test]
    fn a_truncated_frame_asks_for_more_bytes(
        env in request_envelope(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let frame = encode(&env, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let short = &frame[..cut.index(frame.len())];
        prop_assert_eq!(decode::<RequestEnvelope>(short, MAX), Ok(None));
    }

    #[test]
    fn an_oversize_length_prefix_is_refused(
        max in 0u32..4096,
        excess in 1u32..=u32::MAX,
        rest in vec(any::<u8>(), 0..64),
    ) {
        // `max < 4096`, so the sum saturates, if at all, far above `max`.
        let len = max.saturating_add(excess);
        let mut frame = len.to_be_bytes().to_vec();
        frame.extend_from_slice(&rest);
        let want = Some(FrameError::Oversize { len: len.into(), max });
        prop_assert_eq!(decode::<RequestEnvelope>(&frame, max).err(), want.clone());
        prop_assert_eq!(decode::<SubscriptionUp>(&frame, max).err(), want);
    }

    #[test]
    fn a_message_over_the_limit_does_not_encode(events in vec(event_data(), 1..4)) {
        let env = RequestEnvelope::new(
            Request::AppendEvents {
                store: StoreId::new("s").expect("valid id"),
                stream: StreamId::new("x").expect("valid id"),
                expected: ExpectedVersion::Any,
                events,
            },
            None,
        );
        let len = postcard::to_stdvec(&env).map_err(|e| TestCaseError::fail(e.to_string()))?.len();
        let max = u32::try_from(len - 1).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(encode(&env, max), Err(FrameError::Oversize { len: len as u64, max }));
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in vec(any::<u8>(), 0..512)) {
        decode_all_types(&bytes)?;
    }

    #[test]
    fn arbitrary_bodies_after_a_valid_header_decode_or_fail_cleanly(
        body in vec(any::<u8>(), 0..512),
    ) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        decode_all_types(&frame)?;
        match decode::<Request>(&frame, MAX) {
            Ok(Some((_, used))) => prop_assert_eq!(used, frame.len()),
            Ok(None) => prop_assert!(false, "a whole frame was reported as incomplete"),
            Err(e) => prop_assert!(matches!(e, FrameError::Decode(_)), "{e:?}"),
        }
    }

    #[test]
    fn valid_bodies_with_a_flipped_byte_never_panic(
        env in request_envelope(),
        at in any::<proptest::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut frame = encode(&env, MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let i = FRAME_HEADER_LEN + at.index(frame.len() - FRAME_HEADER_LEN);
        frame[i] ^= flip;
        decode_all_types(&frame)?;
    }
}
