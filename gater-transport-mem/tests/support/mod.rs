//! A small in-memory `Gater` for transport tests: stores, appends, reads,
//! versions and `$all` subscriptions, enough to see every message kind cross
//! a transport. It counts the subscription items the transport pulls, so
//! tests can see flow control at work.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gater_core::{
    AppendResult, ConsumerId, Direction, Error, EventData, EventId, ExpectedVersion, Gater,
    NackAction, Position, RecordedEvent, Resource, Snapshot, SnapshotKey, StoreConfig, StoreId,
    StoreInfo, StoreStatus, StreamId, StreamPage, SubscribeOptions, Subscription, SubscriptionEnd,
    SubscriptionInfo, SubscriptionItem, SubscriptionKey, SubscriptionSpec, Version, WorkerInfo,
};
use tokio::sync::watch;

#[derive(Default)]
struct StoreData {
    config: StoreConfig,
    log: Vec<RecordedEvent>,
    streams: BTreeMap<StreamId, Vec<usize>>,
}

/// The test gater. Clones share state.
#[derive(Clone, Default)]
pub(crate) struct TestGater {
    stores: Arc<Mutex<HashMap<StoreId, StoreData>>>,
    head: Arc<Mutex<Option<watch::Sender<u64>>>>,
    next_consumer: Arc<AtomicU64>,
    /// Subscription items handed to a transport so far.
    pub(crate) pulled: Arc<AtomicU64>,
    /// Requests that reached the gater.
    pub(crate) calls: Arc<AtomicU64>,
    /// While `true`, appends wait (a request kept in flight on purpose).
    pub(crate) hold_appends: Arc<watch::Sender<bool>>,
}

pub(crate) fn store(id: &str) -> StoreId {
    StoreId::new(id).unwrap()
}

pub(crate) fn stream(id: &str) -> StreamId {
    StreamId::new(id).unwrap()
}

/// A 256-byte JSON-typed event with an id derived from `n`.
pub(crate) fn event(n: u64) -> EventData {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8] = 0x40;
    EventData::json(
        EventId::from_bytes(id),
        "Tested",
        vec![b'x'; 256],
        b"{}".to_vec(),
    )
}

impl TestGater {
    pub(crate) fn new() -> Self {
        let (tx, _) = watch::channel(0);
        TestGater {
            head: Arc::new(Mutex::new(Some(tx))),
            hold_appends: Arc::new(watch::Sender::new(false)),
            ..Default::default()
        }
    }

    fn with_store<T>(
        &self,
        store: &StoreId,
        f: impl FnOnce(&mut StoreData) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut stores = self.stores.lock().unwrap();
        let data = stores
            .get_mut(store)
            .ok_or_else(|| Error::not_found(Resource::Store, store))?;
        f(data)
    }

    fn head_rx(&self) -> watch::Receiver<u64> {
        self.head.lock().unwrap().as_ref().unwrap().subscribe()
    }

    fn bump_head(&self) {
        self.head
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .send_modify(|h| *h += 1);
    }

    fn events_from(&self, store: &StoreId, from: u64, count: usize) -> Vec<RecordedEvent> {
        let stores = self.stores.lock().unwrap();
        let Some(data) = stores.get(store) else {
            return Vec::new();
        };
        data.log
            .iter()
            .skip(from as usize)
            .take(count)
            .cloned()
            .collect()
    }
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported(format!("test gater: {what}"))
}

#[async_trait]
impl Gater for TestGater {
    async fn append_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, Error> {
        if events.is_empty() {
            return Err(Error::invalid("no events"));
        }
        let _ = self.hold_appends.subscribe().wait_for(|held| !*held).await;
        let result = self.with_store(store, |data| {
            let current = data.streams.get(stream).map(|v| v.len() as u64 - 1);
            if !expected.is_satisfied_by(current) {
                return Err(Error::WrongExpectedVersion {
                    stream: stream.clone(),
                    expected,
                    current,
                });
            }
            let mut version = current.map_or(0, |v| v + 1);
            for event in events {
                let position = Position(data.log.len() as u64);
                data.streams
                    .entry(stream.clone())
                    .or_default()
                    .push(data.log.len());
                data.log.push(RecordedEvent {
                    stream: stream.clone(),
                    version,
                    position,
                    created_us: 0,
                    data: event,
                });
                version += 1;
            }
            Ok(AppendResult {
                version: version - 1,
                position: Position(data.log.len() as u64 - 1),
            })
        })?;
        self.bump_head();
        Ok(result)
    }

    async fn get_events(
        &self,
        store: &StoreId,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if count == 0 {
            return Err(Error::invalid("count 0"));
        }
        self.with_store(store, |data| {
            let Some(indexes) = data.streams.get(stream) else {
                return Ok(Vec::new());
            };
            let picked: Vec<usize> = match direction {
                Direction::Forward => indexes
                    .iter()
                    .skip(start as usize)
                    .take(count as usize)
                    .copied()
                    .collect(),
                Direction::Backward => {
                    let last = (start as usize).min(indexes.len() - 1);
                    indexes[..=last]
                        .iter()
                        .rev()
                        .take(count as usize)
                        .copied()
                        .collect()
                }
            };
            Ok(picked.into_iter().map(|i| data.log[i].clone()).collect())
        })
    }

    async fn read_all(
        &self,
        store: &StoreId,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        if count == 0 || direction == Direction::Backward {
            return Err(unsupported("backward or empty read_all"));
        }
        self.with_store(store, |data| {
            Ok(data
                .log
                .iter()
                .skip(from.0 as usize)
                .take(count as usize)
                .cloned()
                .collect())
        })
    }

    async fn get_streams(
        &self,
        store: &StoreId,
        _after: Option<StreamId>,
        _limit: u32,
    ) -> Result<StreamPage, Error> {
        self.with_store(store, |_| Err(unsupported("get_streams")))
    }

    async fn get_version(
        &self,
        store: &StoreId,
        stream: &StreamId,
    ) -> Result<Option<Version>, Error> {
        self.with_store(store, |data| {
            Ok(data.streams.get(stream).map(|v| v.len() as u64 - 1))
        })
    }

    async fn save_subscription(
        &self,
        _store: &StoreId,
        _spec: SubscriptionSpec,
    ) -> Result<(), Error> {
        Err(unsupported("save_subscription"))
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.with_store(store, |_| Ok(()))?;
        if key.selector() != "$all" || !key.is_transient() {
            return Err(unsupported("only transient $all subscriptions"));
        }
        let consumer = ConsumerId(self.next_consumer.fetch_add(1, Ordering::Relaxed).into());
        let state = (
            self.clone(),
            store.clone(),
            options.start_from.unwrap_or_default().0,
            false,
            self.head_rx(),
        );
        let items = futures::stream::unfold(
            state,
            |(gater, store, next, caught_up, mut head)| async move {
                loop {
                    if !gater.stores.lock().unwrap().contains_key(&store) {
                        return None;
                    }
                    if let Some(event) = gater.events_from(&store, next, 1).pop() {
                        gater.pulled.fetch_add(1, Ordering::Relaxed);
                        let item =
                            SubscriptionItem::Event(gater_core::Delivery { event, attempt: 1 });
                        return Some((item, (gater, store, next + 1, caught_up, head)));
                    }
                    if !caught_up {
                        return Some((
                            SubscriptionItem::CaughtUp,
                            (gater, store, next, true, head),
                        ));
                    }
                    head.changed().await.ok()?;
                }
            },
        );
        let removed = futures::stream::iter([SubscriptionItem::End(SubscriptionEnd::StoreRemoved)]);
        Ok(Subscription::new(
            consumer,
            futures::StreamExt::chain(items, removed),
        ))
    }

    async fn remove_subscription(
        &self,
        _store: &StoreId,
        _key: &SubscriptionKey,
    ) -> Result<(), Error> {
        Err(unsupported("remove_subscription"))
    }

    async fn get_subscriptions(&self, _store: &StoreId) -> Result<Vec<SubscriptionInfo>, Error> {
        Err(unsupported("get_subscriptions"))
    }

    async fn ack_event(
        &self,
        store: &StoreId,
        _key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
    ) -> Result<(), Error> {
        self.with_store(store, |data| {
            if consumer.0 >= u128::from(self.next_consumer.load(Ordering::Relaxed)) {
                return Err(Error::not_found(Resource::Consumer, consumer));
            }
            if position.0 >= data.log.len() as u64 {
                return Err(Error::not_found(Resource::Delivery, position));
            }
            Ok(())
        })
    }

    async fn nack_event(
        &self,
        store: &StoreId,
        key: &SubscriptionKey,
        consumer: ConsumerId,
        position: Position,
        _action: NackAction,
    ) -> Result<(), Error> {
        self.ack_event(store, key, consumer, position).await
    }

    async fn list_parked(
        &self,
        _store: &StoreId,
        _key: &SubscriptionKey,
    ) -> Result<Vec<RecordedEvent>, Error> {
        Err(unsupported("list_parked"))
    }

    async fn replay_parked(&self, _store: &StoreId, _key: &SubscriptionKey) -> Result<u64, Error> {
        Err(unsupported("replay_parked"))
    }

    async fn record_snapshot(
        &self,
        _store: &StoreId,
        _key: SnapshotKey,
        _data: Vec<u8>,
    ) -> Result<(), Error> {
        Err(unsupported("record_snapshot"))
    }

    async fn read_snapshot(
        &self,
        _store: &StoreId,
        _source: &str,
        _stream: &str,
        _version: Option<Version>,
    ) -> Result<Snapshot, Error> {
        Err(unsupported("read_snapshot"))
    }

    async fn list_snapshots(
        &self,
        _store: &StoreId,
        _source: Option<&str>,
        _stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        Err(unsupported("list_snapshots"))
    }

    async fn delete_snapshot(&self, _store: &StoreId, _key: &SnapshotKey) -> Result<(), Error> {
        Err(unsupported("delete_snapshot"))
    }

    async fn create_store(&self, store: &StoreId, config: StoreConfig) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut stores = self.stores.lock().unwrap();
        let data = stores.entry(store.clone()).or_insert_with(|| StoreData {
            config,
            ..Default::default()
        });
        if data.config != config {
            return Err(Error::StoreConfigConflict {
                store: store.to_string(),
            });
        }
        Ok(())
    }

    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.stores
            .lock()
            .unwrap()
            .remove(store)
            .ok_or_else(|| Error::not_found(Resource::Store, store))?;
        self.bump_head();
        Ok(())
    }

    async fn list_stores(&self) -> Result<Vec<StoreInfo>, Error> {
        Err(unsupported("list_stores"))
    }

    async fn get_store_status(&self, _store: &StoreId) -> Result<StoreStatus, Error> {
        Err(unsupported("get_store_status"))
    }

    async fn get_store_config(&self, store: &StoreId) -> Result<StoreConfig, Error> {
        self.with_store(store, |data| Ok(data.config))
    }

    async fn reopen_store(&self, _: &StoreId) -> Result<(), Error> {
        Err(unsupported("reopen_store"))
    }

    async fn verify_store(&self, _: &StoreId) -> Result<gater_core::VerifyReport, Error> {
        Err(unsupported("verify_store"))
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        Err(unsupported("workers"))
    }

    async fn heartbeat(&self, _worker: WorkerInfo) -> Result<(), Error> {
        Err(unsupported("heartbeat"))
    }
}
