//! Relay queues count in the memory budget: a consumer that does not take
//! its deliveries makes the proxy hold no more than the budget allows (the
//! relay waits for room, the worker's flow control holds the rest), and
//! every delivery still arrives, in order, once the consumer reads. One
//! embedded worker on the in-memory transport, a paused clock.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use gater_core::memory::{ByteBudget, Reservation};
use gater_core::{
    Error, EventData, EventId, ExpectedVersion, Gater, Position, Side, SubscribeOptions,
    SubscriptionItem, SubscriptionKey,
};
use gater_proxy::Proxy;
use gater_transport_mem::MemClientOptions;
use support::{open_store, sim_worker, store, stream, FAST};
use tokio::sync::Semaphore;

/// Events appended before the consumer reads.
const EVENTS: u64 = 12;
/// Bytes of each event's data.
const EVENT_DATA_BYTES: usize = 4096;
/// The budget: room for about three queued deliveries.
const BUDGET_BYTES: u64 = 3 * (EVENT_DATA_BYTES as u64 + 256);

/// A budget that counts what it has lent and the most it ever lent.
#[derive(Debug)]
struct Counted {
    permits: Arc<Semaphore>,
    in_use: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
}

/// Bytes lent by a [`Counted`] budget, returned on drop.
struct Lent {
    in_use: Arc<AtomicU64>,
    bytes: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.in_use.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

#[async_trait]
impl ByteBudget for Counted {
    async fn reserve_bytes(&self, bytes: u64, side: Side) -> Result<Reservation, Error> {
        let overloaded = || Error::Overloaded {
            side,
            message: format!("{bytes} bytes over the budget"),
        };
        if bytes > BUDGET_BYTES {
            return Err(overloaded());
        }
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(bytes as u32)
            .await
            .map_err(|_| overloaded())?;
        let now = self.in_use.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Ok(Reservation::new(Lent {
            in_use: Arc::clone(&self.in_use),
            bytes,
            _permit: permit,
        }))
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_does_not_read_holds_no_more_than_the_budget() {
    let mut dirs = Vec::new();
    let worker = sim_worker(
        "w0",
        open_store(&mut dirs, "w0").await,
        MemClientOptions::default(),
    );
    let budget = Arc::new(Counted {
        permits: Arc::new(Semaphore::new(BUDGET_BYTES as usize)),
        in_use: Arc::default(),
        peak: Arc::default(),
    });
    let proxy = Proxy::builder()
        .worker("w0", "mem:w0", worker.client.clone())
        .memory_budget(budget.clone())
        .build()
        .await
        .unwrap();
    let id = store("relayed");
    proxy.create_store(&id, FAST).await.unwrap();
    for n in 0..EVENTS {
        let mut event_id = [0u8; 16];
        event_id[..8].copy_from_slice(&n.to_le_bytes());
        let event = EventData::json(
            EventId::from_random_bytes(event_id),
            "Big",
            vec![b'7'; EVENT_DATA_BYTES],
            Vec::new(),
        );
        proxy
            .append_events(&id, &stream("s"), ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    let key = SubscriptionKey::stream(&stream("s"));
    let options = SubscribeOptions {
        window: EVENTS as u32,
        start_from: Some(Position::START),
    };
    let mut sub = proxy.subscribe(&id, key, options).await.unwrap();
    // Simulated time for the relay to queue what the budget lets it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = budget.in_use.load(Ordering::SeqCst);
    println!("queued for the idle consumer: {queued} of {BUDGET_BYTES} budget bytes");
    assert!(queued > 0, "queued deliveries are counted");
    let mut positions = Vec::new();
    while positions.len() < EVENTS as usize {
        match sub.next().await {
            Some(SubscriptionItem::Event(delivery)) => positions.push(delivery.event.position),
            Some(SubscriptionItem::CaughtUp) => {}
            other => panic!("the subscription ended early: {other:?}"),
        }
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let peak = budget.peak.load(Ordering::SeqCst);
    println!("relay queue peak {peak} of {BUDGET_BYTES} budget bytes");
    assert!(peak <= BUDGET_BYTES);
    drop(sub);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        budget.in_use.load(Ordering::SeqCst),
        0,
        "every byte returned"
    );
    worker.store.shutdown().await;
}
