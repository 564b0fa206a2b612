//! [`Gater`] for [`Proxy`]: each method becomes a wire [`Request`] sent
//! through the proxy's one routing and retry path, or is answered by the
//! proxy itself (cluster questions, subscriptions, placement).

use async_trait::async_trait;
use gater_core::wire::{Request, Response};
use gater_core::{
    AppendResult, ConsumerId, Direction, Error, EventData, ExpectedVersion, Gater, NackAction,
    Position, RecordedEvent, Snapshot, SnapshotKey, StoreConfig, StoreId, StoreInfo, StoreStatus,
    StreamId, StreamPage, SubscribeOptions, Subscription, SubscriptionInfo, SubscriptionKey,
    SubscriptionSpec, Version, WorkerInfo,
};

use super::admin::done;
use super::{unexpected, Proxy};

/// Unwraps a response of the expected variant, or reports the protocol break.
macro_rules! expect {
    ($method:literal, $response:expr, $variant:ident) => {
        match $response {
            Response::$variant(value) => Ok(value),
            other => Err(unexpected($method, &other)),
        }
    };
}

impl Proxy {
    async fn call(&self, request: Request) -> Result<Response, Error> {
        self.inner.call(request).await
    }
}

#[async_trait]
impl Gater for Proxy {
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
        expect!("append_events", self.call(request).await?, Appended)
    }

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
        expect!("get_events", self.call(request).await?, Events)
    }

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
        expect!("read_all", self.call(request).await?, Events)
    }

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
        expect!("get_streams", self.call(request).await?, Streams)
    }

    async fn get_version(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<Option<Version>, Error> {
        let request = Request::GetVersion {
            store: store.clone(),
            stream: stream.clone(),
        };
        expect!("get_version", self.call(request).await?, Version)
    }

    async fn save_subscription(
        &self,
        store: &StoreId,
        spec: SubscriptionSpec,
    ) -> Result<(), Error> {
        let request = Request::SaveSubscription {
            store: store.clone(),
            spec,
        };
        done("save_subscription", self.call(request).await?)
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.inner.subscribe(store, key, options).await
    }

    async fn remove_subscription(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<(), Error> {
        let request = Request::RemoveSubscription {
            store: store.clone(),
            key: key.clone(),
        };
        done("remove_subscription", self.call(request).await?)
    }

    async fn get_subscriptions(&self, store: &StoreId) -> Result<Vec<SubscriptionInfo>, Error> {
        let request = Request::GetSubscriptions {
            store: store.clone(),
        };
        expect!(
            "get_subscriptions",
            self.call(request).await?,
            Subscriptions
        )
    }

    async fn ack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        self.inner.ack(store, key, consumer, position, None).await
    }

    async fn nack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        self.inner
            .ack(store, key, consumer, position, Some(action))
            .await
    }

    async fn list_parked(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let request = Request::ListParked {
            store: store.clone(),
            key: key.clone(),
        };
        expect!("list_parked", self.call(request).await?, Events)
    }

    async fn replay_parked(&self, store: &StoreId, key: &SubscriptionKey) -> Result<u64, Error> {
        let request = Request::ReplayParked {
            store: store.clone(),
            key: key.clone(),
        };
        expect!("replay_parked", self.call(request).await?, Replayed)
    }

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
        done("record_snapshot", self.call(request).await?)
    }

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
        expect!("read_snapshot", self.call(request).await?, Snapshot)
    }

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
        expect!("list_snapshots", self.call(request).await?, SnapshotKeys)
    }

    async fn delete_snapshot(&self, store: &StoreId, key: &SnapshotKey) -> Result<(), Error> {
        let request = Request::DeleteSnapshot {
            store: store.clone(),
            key: key.clone(),
        };
        done("delete_snapshot", self.call(request).await?)
    }

    async fn create_store(&self, store: &StoreId, config: StoreConfig) -> Result<(), Error> {
        self.inner.create_store(store, config).await
    }

    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        self.inner.remove_store(store).await
    }

    async fn list_stores(&self) -> Result<Vec<StoreInfo>, Error> {
        self.inner.list_stores().await
    }

    async fn get_store_status(&self, store: &StoreId) -> Result<StoreStatus, Error> {
        self.inner.store_status(store).await
    }

    async fn get_store_config(&self, store: &StoreId) -> Result<StoreConfig, Error> {
        let request = Request::GetStoreConfig {
            store: store.clone(),
        };
        expect!("get_store_config", self.call(request).await?, StoreConfig)
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        Ok(self.inner.worker_infos())
    }

    async fn heartbeat(&self, worker: WorkerInfo) -> Result<(), Error> {
        self.inner.heartbeat(worker).await
    }
}
