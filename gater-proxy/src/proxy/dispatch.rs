//! Sends one wire [`Request`] to a worker through the [`Gater`] trait and
//! wraps the answer as a [`Response`], so the proxy has a single routing and
//! retry path for every method instead of one per method.

use gater_core::wire::{Request, Response};
use gater_core::{Error, Gater};

/// Calls the method `request` names on `worker`.
///
/// `Subscribe`, `Workers` and `Heartbeat` are answered by the proxy itself and
/// never dispatched; asking for them is a caller bug reported as `Unsupported`.
pub(crate) async fn dispatch(worker: &dyn Gater, request: Request) -> Result<Response, Error> {
    use Request as R;
    Ok(match request {
        R::AppendEvents {
            store,
            stream,
            expected,
            events,
        } => Response::Appended(
            worker
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
            worker
                .get_events(&store, &stream, start, count, direction)
                .await?,
        ),
        R::ReadAll {
            store,
            from,
            count,
            direction,
        } => Response::Events(worker.read_all(&store, from, count, direction).await?),
        R::GetStreams {
            store,
            after,
            limit,
        } => Response::Streams(worker.get_streams(&store, after, limit).await?),
        R::GetVersion { store, stream } => {
            Response::Version(worker.get_version(&store, &stream).await?)
        }
        R::SaveSubscription { store, spec } => {
            worker.save_subscription(&store, spec).await?;
            Response::Done
        }
        R::RemoveSubscription { store, key } => {
            worker.remove_subscription(&store, &key).await?;
            Response::Done
        }
        R::GetSubscriptions { store } => {
            Response::Subscriptions(worker.get_subscriptions(&store).await?)
        }
        R::AckEvent {
            store,
            key,
            consumer,
            position,
        } => {
            worker.ack_event(&store, &key, consumer, position).await?;
            Response::Done
        }
        R::NackEvent {
            store,
            key,
            consumer,
            position,
            action,
        } => {
            worker
                .nack_event(&store, &key, consumer, position, action)
                .await?;
            Response::Done
        }
        R::ListParked { store, key } => Response::Events(worker.list_parked(&store, &key).await?),
        R::ReplayParked { store, key } => {
            Response::Replayed(worker.replay_parked(&store, &key).await?)
        }
        R::RecordSnapshot { store, key, data } => {
            worker.record_snapshot(&store, key, data).await?;
            Response::Done
        }
        R::ReadSnapshot {
            store,
            source,
            stream,
            version,
        } => Response::Snapshot(
            worker
                .read_snapshot(&store, &source, &stream, version)
                .await?,
        ),
        R::ListSnapshots {
            store,
            source,
            stream,
        } => Response::SnapshotKeys(
            worker
                .list_snapshots(&store, source.as_deref(), stream.as_deref())
                .await?,
        ),
        R::DeleteSnapshot { store, key } => {
            worker.delete_snapshot(&store, &key).await?;
            Response::Done
        }
        R::CreateStore { store, config } => {
            worker.create_store(&store, config).await?;
            Response::Done
        }
        R::RemoveStore { store } => {
            worker.remove_store(&store).await?;
            Response::Done
        }
        R::ListStores => Response::Stores(worker.list_stores().await?),
        R::GetStoreStatus { store } => {
            Response::StoreStatus(worker.get_store_status(&store).await?)
        }
        R::GetStoreConfig { store } => {
            Response::StoreConfig(worker.get_store_config(&store).await?)
        }
        R::Subscribe { .. } | R::Workers | R::Heartbeat { .. } => {
            return Err(Error::Unsupported(format!(
                "{} is answered by the proxy, not forwarded",
                request.method()
            )))
        }
    })
}

/// An answer of the wrong shape: the worker broke the protocol.
pub(crate) fn unexpected(method: &str, response: &Response) -> Error {
    Error::Protocol(format!(
        "{method}: the worker answered with an unexpected {response:?}"
    ))
}
