//! The two ends of a transport, written once for all transports.
//!
//! On the server side, [`dispatch`] turns a wire [`Request`] into a call on a
//! [`Gater`] and its result into a [`Response`] (the default of
//! [`Gater::call`]). On the client side, [`RemoteGater`] implements [`Gater`]
//! over any [`Link`] (something that carries one request and brings back one
//! response, and opens subscription streams): it answers [`Gater::call`] by
//! carrying the request, and the trait's default methods turn each method
//! into a [`Request`] and each [`Response`] back into the method's result.
//!
//! What it does not do: no I/O. Framing, connections, deadlines and retries
//! belong to the transports; subscriptions need a long-lived stream, so
//! `Subscribe` is not dispatched here but handed to [`Link::subscribe`].

use std::time::Duration;

use async_trait::async_trait;

use crate::api::Gater;
use crate::error::Error;
use crate::id::StoreId;
use crate::subscription::{SubscribeOptions, Subscription, SubscriptionKey};
use crate::wire::{EncodedRequest, Request, Response};

/// Calls `gater` with a request that arrived over the wire.
///
/// `Subscribe` is refused with [`Error::Protocol`]: a subscription needs a
/// stream of its own, which the transport opens and serves itself.
pub async fn dispatch<G: Gater + ?Sized>(gater: &G, request: Request) -> Result<Response, Error> {
    use Request as R;
    Ok(match request {
        R::AppendEvents {
            store,
            stream,
            expected,
            events,
        } => Response::Appended(
            gater
                .append_events(&store, &stream, expected, events)
                .await?,
        ),
        R::GetEvents {
            store,
            stream,
            start,
            count,
            direction,
        } => Response::Events(
            gater
                .get_events(&store, &stream, start, count, direction)
                .await?,
        ),
        R::ReadAll {
            store,
            from,
            count,
            direction,
        } => Response::Events(gater.read_all(&store, from, count, direction).await?),
        R::GetStreams {
            store,
            after,
            limit,
        } => Response::Streams(gater.get_streams(&store, after, limit).await?),
        R::GetVersion { store, stream } => {
            Response::Version(gater.get_version(&store, &stream).await?)
        }
        R::Append { store, append } => Response::AppendedParts(gater.append(&store, append).await?),
        R::ReadQuery {
            store,
            query,
            from,
            count,
            direction,
        } => Response::Events(
            gater
                .read_query(&store, &query, from, count, direction)
                .await?,
        ),
        R::Subscribe { .. } => {
            return Err(Error::Protocol(
                "subscribe needs a subscription stream, not a unary request".into(),
            ))
        }
        other => return dispatch_subscriptions_and_admin(gater, other).await,
    })
}

/// The second half of [`dispatch`]: subscriptions, snapshots, administration.
async fn dispatch_subscriptions_and_admin<G: Gater + ?Sized>(
    gater: &G,
    request: Request,
) -> Result<Response, Error> {
    use Request as R;
    Ok(match request {
        R::SaveSubscription { store, spec } => {
            gater.save_subscription(&store, spec).await?;
            Response::Done
        }
        R::RemoveSubscription { store, key } => {
            gater.remove_subscription(&store, &key).await?;
            Response::Done
        }
        R::GetSubscriptions { store } => {
            Response::Subscriptions(gater.get_subscriptions(&store).await?)
        }
        R::AckEvent {
            store,
            key,
            consumer,
            position,
        } => {
            gater.ack_event(&store, &key, consumer, position).await?;
            Response::Done
        }
        R::NackEvent {
            store,
            key,
            consumer,
            position,
            action,
        } => {
            gater
                .nack_event(&store, &key, consumer, position, action)
                .await?;
            Response::Done
        }
        R::ListParked { store, key } => Response::Events(gater.list_parked(&store, &key).await?),
        R::ReplayParked { store, key } => {
            Response::Replayed(gater.replay_parked(&store, &key).await?)
        }
        other => return dispatch_lifecycle(gater, other).await,
    })
}

/// Stream lifecycle requests; delegates the rest to [`dispatch_snapshots_and_admin`].
async fn dispatch_lifecycle<G: Gater + ?Sized>(
    gater: &G,
    request: Request,
) -> Result<Response, Error> {
    use Request as R;
    Ok(match request {
        R::DeleteStream {
            store,
            stream,
            expected,
        } => {
            gater.delete_stream(&store, &stream, expected).await?;
            Response::Done
        }
        R::TombstoneStream {
            store,
            stream,
            expected,
        } => {
            gater.tombstone_stream(&store, &stream, expected).await?;
            Response::Done
        }
        R::TruncateStream {
            store,
            stream,
            before,
        } => {
            gater.truncate_stream(&store, &stream, before).await?;
            Response::Done
        }
        R::SetStreamRetention {
            store,
            stream,
            retention,
        } => {
            gater
                .set_stream_retention(&store, &stream, retention.max_count, retention.max_age_s)
                .await?;
            Response::Done
        }
        R::StreamRetention { store, stream } => {
            Response::Retention(gater.stream_retention(&store, &stream).await?)
        }
        other => return dispatch_snapshots_and_admin(gater, other).await,
    })
}

/// The last part of [`dispatch`]: snapshots and administration.
async fn dispatch_snapshots_and_admin<G: Gater + ?Sized>(
    gater: &G,
    request: Request,
) -> Result<Response, Error> {
    use Request as R;
    Ok(match request {
        R::RecordSnapshot { store, key, data } => {
            gater.record_snapshot(&store, key, data).await?;
            Response::Done
        }
        R::ReadSnapshot {
            store,
            source,
            stream,
            version,
        } => Response::Snapshot(
            gater
                .read_snapshot(&store, &source, &stream, version)
                .await?,
        ),
        R::ListSnapshots {
            store,
            source,
            stream,
        } => Response::SnapshotKeys(
            gater
                .list_snapshots(&store, source.as_deref(), stream.as_deref())
                .await?,
        ),
        R::DeleteSnapshot { store, key } => {
            gater.delete_snapshot(&store, &key).await?;
            Response::Done
        }
        R::CreateStore { store, config } => {
            gater.create_store(&store, config).await?;
            Response::Done
        }
        R::RemoveStore { store } => {
            gater.remove_store(&store).await?;
            Response::Done
        }
        R::ListStores => Response::Stores(gater.list_stores().await?),
        R::GetStoreStatus { store } => Response::StoreStatus(gater.get_store_status(&store).await?),
        R::GetStoreConfig { store } => Response::StoreConfig(gater.get_store_config(&store).await?),
        R::ReopenStore { store } => {
            gater.reopen_store(&store).await?;
            Response::Done
        }
        R::VerifyStore { store } => Response::Verified(gater.verify_store(&store).await?),
        R::CompactStore { store } => Response::Compacted(gater.compact_store(&store).await?),
        R::Workers => Response::Workers(gater.workers().await?),
        R::Heartbeat { worker } => {
            gater.heartbeat(worker).await?;
            Response::Done
        }
        R::Whoami => {
            return Err(Error::Unsupported(
                "whoami is answered by a server that checks identities".into(),
            ))
        }
        // The first two parts handled every other variant before delegating here.
        other => {
            return Err(Error::Protocol(format!(
                "{} is not a unary request",
                other.method()
            )))
        }
    })
}

/// What a transport's client side provides: one request out, one response
/// back; and subscription streams.
#[async_trait]
pub trait Link: Send + Sync + 'static {
    /// Carries `request` to the server and returns its answer, waiting at
    /// most `within` (and at most the link's own deadline); the server is told
    /// how long remains, so it does not start work that is already late.
    ///
    /// Failures of the path (connection lost, deadline) are the transport's
    /// own retryable errors; failures of the request are the server's.
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error>;

    /// [`Link::call`] for a request already encoded (a proxy passing one
    /// on). The default decodes it; a transport that sends bytes overrides
    /// it to send them as they are.
    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        let request = request.decode()?;
        self.call(request, within).await
    }

    /// Opens a subscription stream for `Request::Subscribe { store, key, options }`.
    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error>;
}

/// A [`Gater`] whose every method travels over a [`Link`].
#[derive(Debug)]
pub struct RemoteGater<L> {
    link: L,
}

impl<L: Link> RemoteGater<L> {
    /// A client over `link`.
    pub fn new(link: L) -> Self {
        RemoteGater { link }
    }

    /// The link, for transport-specific controls.
    pub fn link(&self) -> &L {
        &self.link
    }
}

/// The error for an answer of the wrong shape: a server bug or a foreign peer.
pub(crate) fn unexpected(method: &str, response: &Response) -> Error {
    Error::Protocol(format!(
        "{method}: unexpected response {}",
        response_name(response)
    ))
}

fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Appended(_) => "Appended",
        Response::AppendedParts(_) => "AppendedParts",
        Response::Events(_) => "Events",
        Response::Streams(_) => "Streams",
        Response::Version(_) => "Version",
        Response::Done => "Done",
        Response::Subscribed(_) => "Subscribed",
        Response::Subscriptions(_) => "Subscriptions",
        Response::Replayed(_) => "Replayed",
        Response::Snapshot(_) => "Snapshot",
        Response::SnapshotKeys(_) => "SnapshotKeys",
        Response::Stores(_) => "Stores",
        Response::StoreStatus(_) => "StoreStatus",
        Response::StoreConfig(_) => "StoreConfig",
        Response::Workers(_) => "Workers",
        Response::Whoami(_) => "Whoami",
        Response::Verified(_) => "Verified",
        Response::Retention(_) => "Retention",
        Response::Compacted(_) => "Compacted",
    }
}

#[async_trait]
impl<L: Link> Gater for RemoteGater<L> {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        self.link.call(request, within).await
    }

    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        self.link.call_encoded(request, within).await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.link.subscribe(store, key, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::error::Side;
    use crate::id::StreamId;
    use crate::store::{WorkerHealth, WorkerInfo};

    /// A link that answers every call with a fixed response and records the request.
    struct Canned {
        answer: Response,
        seen: Mutex<Vec<Request>>,
    }

    #[async_trait]
    impl Link for Canned {
        async fn call(
            &self,
            request: Request,
            _within: Option<Duration>,
        ) -> Result<Response, Error> {
            self.seen.lock().unwrap().push(request);
            Ok(self.answer.clone())
        }
        async fn subscribe(
            &self,
            _store: &StoreId,
            _key: SubscriptionKey,
            _options: SubscribeOptions,
        ) -> Result<Subscription, Error> {
            Err(Error::Unsupported("no subscriptions here".into()))
        }
    }

    fn remote(answer: Response) -> RemoteGater<Canned> {
        RemoteGater::new(Canned {
            answer,
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Polls a future that never waits (the canned link answers at once).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the canned link never waits"),
        }
    }

    #[test]
    fn remote_methods_send_their_request_and_unwrap_the_matching_response() {
        let store = StoreId::new("s").unwrap();
        let stream = StreamId::new("orders-1").unwrap();
        let gater = remote(Response::Version(Some(4)));
        let version = block_on(gater.get_version(&store, &stream)).unwrap();
        assert_eq!(version, Some(4));
        assert_eq!(
            gater.link().seen.lock().unwrap().as_slice(),
            &[Request::GetVersion { store, stream }]
        );
    }

    #[test]
    fn a_request_with_no_time_left_is_refused_before_any_method_runs() {
        // A gater that answers methods and leaves `call` to its default, as a
        // store does: a late request runs none of them.
        let outer = Dispatching(remote(Response::Done));
        let err = block_on(outer.call(Request::ListStores, Some(Duration::ZERO))).unwrap_err();
        assert_eq!(err, Error::DeadlineExceeded { side: Side::Worker });
        assert!(outer.0.link().seen.lock().unwrap().is_empty());
        let ok = block_on(outer.call(Request::ListStores, Some(Duration::from_millis(1))));
        assert_eq!(ok, Ok(Response::Stores(Vec::new())));
        assert_eq!(outer.0.link().seen.lock().unwrap().len(), 1);
    }

    /// Answers methods by forwarding them to a remote gater, and leaves
    /// `call` to the trait's default (dispatch), as a store does.
    struct Dispatching(RemoteGater<Canned>);

    #[async_trait]
    impl Gater for Dispatching {
        async fn subscribe(
            &self,
            store: &StoreId,
            key: SubscriptionKey,
            options: SubscribeOptions,
        ) -> Result<Subscription, Error> {
            self.0.subscribe(store, key, options).await
        }

        async fn list_stores(&self) -> Result<Vec<crate::store::StoreInfo>, Error> {
            self.0.link().seen.lock().unwrap().push(Request::ListStores);
            Ok(Vec::new())
        }
    }

    #[test]
    fn a_response_of_the_wrong_shape_is_a_protocol_error() {
        let gater = remote(Response::Done);
        let err = block_on(gater.list_stores()).unwrap_err();
        assert!(matches!(err, Error::Protocol(m) if m.contains("list_stores")));
    }

    #[test]
    fn dispatch_refuses_subscribe_as_a_unary_request() {
        let gater = remote(Response::Done);
        let key = SubscriptionKey::stream(&StreamId::all());
        let request = Request::Subscribe {
            store: StoreId::new("s").unwrap(),
            key,
            options: SubscribeOptions::default(),
        };
        let err = block_on(dispatch(&gater, request)).unwrap_err();
        assert_eq!(err.kind(), "protocol");
        assert!(gater.link().seen.lock().unwrap().is_empty());
    }

    #[test]
    fn dispatch_through_a_remote_gater_round_trips_each_request() {
        let worker = WorkerInfo {
            id: "w1".into(),
            address: "mem".into(),
            health: WorkerHealth::Healthy,
            in_flight: 0,
            latency_us: 0,
            stores: Vec::new(),
            shared_storage: false,
            faults: Vec::new(),
        };
        let requests = [
            (Request::Workers, Response::Workers(vec![worker.clone()])),
            (Request::Heartbeat { worker }, Response::Done),
            (Request::ListStores, Response::Stores(Vec::new())),
        ];
        let store = StoreId::new("s").unwrap();
        let stream = StreamId::new("a").unwrap();
        let retention = crate::StreamRetention {
            stream: stream.clone(),
            max_count: Some(3),
            max_age_s: None,
            truncate_before: Some(2),
        };
        let compaction = crate::Compaction {
            store: store.clone(),
            bytes_before: 10,
            bytes_after: 4,
            events_removed: 2,
        };
        let lifecycle = [
            (
                Request::DeleteStream {
                    store: store.clone(),
                    stream: stream.clone(),
                    expected: crate::ExpectedVersion::Any,
                },
                Response::Done,
            ),
            (
                Request::TombstoneStream {
                    store: store.clone(),
                    stream: stream.clone(),
                    expected: crate::ExpectedVersion::Exact(1),
                },
                Response::Done,
            ),
            (
                Request::TruncateStream {
                    store: store.clone(),
                    stream: stream.clone(),
                    before: 2,
                },
                Response::Done,
            ),
            (
                Request::SetStreamRetention {
                    store: store.clone(),
                    stream: stream.clone(),
                    retention: crate::Retention {
                        max_count: Some(3),
                        max_age_s: Some(60),
                    },
                },
                Response::Done,
            ),
            (
                Request::StreamRetention {
                    store: store.clone(),
                    stream,
                },
                Response::Retention(retention),
            ),
            (
                Request::CompactStore { store },
                Response::Compacted(compaction),
            ),
        ];
        let requests = requests.into_iter().chain(lifecycle);
        for (request, answer) in requests {
            let inner = remote(answer.clone());
            let got = block_on(dispatch(&inner, request.clone())).unwrap();
            assert_eq!(got, answer);
            assert_eq!(inner.link().seen.lock().unwrap().as_slice(), &[request]);
        }
    }
}
