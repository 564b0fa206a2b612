//! The subscription conformance cases run against a minimal `Gater` made of
//! the engine over in-memory logs: the engine's contract, checked through the
//! trait in real time, without the embedded store. Operations outside
//! subscriptions and appends answer `Unsupported`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gater_core::{
    AppendResult, ConsumerId, Direction, Error, EventData, ExpectedVersion, Gater, NackAction,
    Position, RecordedEvent, Resource, Snapshot, SnapshotKey, StoreConfig, StoreId, StoreInfo,
    StoreStatus, StreamId, StreamPage, SubscribeOptions, Subscription, SubscriptionInfo,
    SubscriptionKey, SubscriptionSpec, Version, WorkerInfo,
};

use super::{FakeLog, Subscriptions};
use crate::subscription::SubscriptionLog;

/// One store of the double: its log and its subscriptions.
type FakeStore = (Arc<FakeLog>, Arc<Subscriptions>);

#[derive(Default)]
struct FakeGater {
    stores: Mutex<HashMap<StoreId, FakeStore>>,
}

impl FakeGater {
    fn store(&self, store: &StoreId) -> Result<FakeStore, Error> {
        let stores = self.stores.lock().unwrap();
        stores
            .get(store)
            .cloned()
            .ok_or_else(|| Error::not_found(Resource::Store, store))
    }

    fn subs(&self, store: &StoreId) -> Result<Arc<Subscriptions>, Error> {
        self.store(store).map(|(_, subs)| subs)
    }
}

fn unsupported<T>(what: &str) -> Result<T, Error> {
    Err(Error::Unsupported(format!(
        "{what}: not part of this test double"
    )))
}

#[async_trait]
impl Gater for FakeGater {
    async fn append_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        _expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, Error> {
        let (log, _) = self.store(store)?;
        let mut last = None;
        for event in events {
            last = Some(log.append_data(stream.clone(), event));
        }
        let position = last.ok_or_else(|| Error::invalid("no events"))?;
        Ok(AppendResult {
            version: 0,
            position,
        })
    }
    async fn get_events(
        &self,
        _: &StoreId,
        _: &StreamId,
        _: Version,
        _: u32,
        _: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        unsupported("get_events")
    }
    async fn read_all(
        &self,
        store: &StoreId,
        from: Position,
        count: u32,
        _: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let (log, _) = self.store(store)?;
        log.read_all_forward(from, count).await
    }
    async fn get_streams(
        &self,
        _: &StoreId,
        _: Option<StreamId>,
        _: u32,
    ) -> Result<StreamPage, Error> {
        unsupported("get_streams")
    }
    async fn get_version(&self, _: &StoreId, _: &StreamId) -> Result<Option<Version>, Error> {
        unsupported("get_version")
    }
    async fn save_subscription(
        &self,
        store: &StoreId,
        spec: SubscriptionSpec,
    ) -> Result<(), Error> {
        self.subs(store)?.save(spec).await
    }
    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.subs(store)?.subscribe(key, options).await
    }
    async fn remove_subscription(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<(), Error> {
        self.subs(store)?.remove(key).await
    }
    async fn get_subscriptions(&self, store: &StoreId) -> Result<Vec<SubscriptionInfo>, Error> {
        self.subs(store)?.list().await
    }
    async fn ack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        self.subs(store)?.ack(key, consumer, position).await
    }
    async fn nack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        action: NackAction,
    ) -> Result<(), Error> {
        self.subs(store)?
            .nack(key, consumer, position, action)
            .await
    }
    async fn list_parked(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.subs(store)?.list_parked(key).await
    }
    async fn replay_parked(&self, store: &StoreId, key: &SubscriptionKey) -> Result<u64, Error> {
        self.subs(store)?.replay_parked(key).await
    }
    async fn record_snapshot(&self, _: &StoreId, _: SnapshotKey, _: Vec<u8>) -> Result<(), Error> {
        unsupported("record_snapshot")
    }
    async fn read_snapshot(
        &self,
        _: &StoreId,
        _: &str,
        _: &str,
        _: Option<Version>,
    ) -> Result<Snapshot, Error> {
        unsupported("read_snapshot")
    }
    async fn list_snapshots(
        &self,
        _: &StoreId,
        _: Option<&str>,
        _: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        unsupported("list_snapshots")
    }
    async fn delete_snapshot(&self, _: &StoreId, _: &SnapshotKey) -> Result<(), Error> {
        unsupported("delete_snapshot")
    }
    async fn create_store(&self, store: &StoreId, _: StoreConfig) -> Result<(), Error> {
        if self.store(store).is_ok() {
            return Ok(());
        }
        let log = FakeLog::new();
        let engine: Arc<dyn SubscriptionLog> = log.clone();
        let subs = Subscriptions::open(store.clone(), engine).await?;
        self.stores
            .lock()
            .unwrap()
            .insert(store.clone(), (log, subs));
        Ok(())
    }
    async fn remove_store(&self, _: &StoreId) -> Result<(), Error> {
        unsupported("remove_store")
    }
    async fn list_stores(&self) -> Result<Vec<StoreInfo>, Error> {
        unsupported("list_stores")
    }
    async fn get_store_status(&self, _: &StoreId) -> Result<StoreStatus, Error> {
        unsupported("get_store_status")
    }
    async fn get_store_config(&self, _: &StoreId) -> Result<StoreConfig, Error> {
        unsupported("get_store_config")
    }
    async fn reopen_store(&self, _: &StoreId) -> Result<(), Error> {
        unsupported("reopen_store")
    }
    async fn verify_store(&self, _: &StoreId) -> Result<gater_core::VerifyReport, Error> {
        unsupported("verify_store")
    }
    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        unsupported("workers")
    }

    async fn heartbeat(&self, _worker: WorkerInfo) -> Result<(), Error> {
        unsupported("heartbeat")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_conformance_cases_pass_over_the_engine() {
    let gater = FakeGater::default();
    crate::conformance::subscriptions::run(&gater).await;
}
