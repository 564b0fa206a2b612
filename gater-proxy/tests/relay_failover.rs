//! The proxy's relay when a persistent consumer moves to another worker:
//! one `CaughtUp` per consumer session, and acks of deliveries the old
//! worker made are answered as harmless no-ops (the event comes again).

mod support;

use std::time::Duration;

use futures::StreamExt;
use gater_core::{
    ExpectedVersion, Gater, Position, SubscribeOptions, SubscriptionItem, SubscriptionKey,
    SubscriptionSpec, SubscriptionType,
};
use gater_proxy::ProxyConfig;
use gater_transport_mem::MemClientOptions;
use support::{event, rng, seed, store, stream, Cluster, FAST};

fn sim_config(seed: u64) -> ProxyConfig {
    ProxyConfig {
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(500),
        request_deadline: Duration::from_secs(2),
        seed,
        ..ProxyConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_moved_consumer_sees_one_caught_up_and_its_old_acks_are_harmless() {
    let seed = seed(97);
    let cluster = Cluster::shared(3, sim_config(seed), MemClientOptions::default()).await;
    let orders = store("orders");
    cluster.proxy.create_store(&orders, FAST).await.unwrap();
    let key = SubscriptionKey::new(SubscriptionType::ByStream, "$all", "billing").unwrap();
    cluster
        .proxy
        .save_subscription(&orders, SubscriptionSpec::new(key.clone()))
        .await
        .unwrap();
    let mut sub = cluster
        .proxy
        .subscribe(&orders, key.clone(), SubscribeOptions::default())
        .await
        .unwrap();
    let mut rng = rng(seed);
    let s = stream("s");
    let n = 5 + rng.below(10);
    for _ in 0..n {
        cluster
            .proxy
            .append_events(&orders, &s, ExpectedVersion::Any, vec![event(&mut rng)])
            .await
            .unwrap();
    }
    let mut caught_up = 0;
    let mut unacked: Vec<Position> = Vec::new();
    while (unacked.len() as u64) < n {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Some(SubscriptionItem::Event(d))) => unacked.push(d.event.position),
            Ok(Some(SubscriptionItem::CaughtUp)) => caught_up += 1,
            other => panic!("seed {seed}: {other:?}"),
        }
    }
    let holder = cluster
        .workers
        .iter()
        .find(|w| w.served.subscribes() > 0)
        .expect("a worker holds the consumer");
    holder.server.set_down(true);
    let mut again = std::collections::BTreeSet::new();
    while (again.len() as u64) < n {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Some(SubscriptionItem::Event(d))) => {
                again.insert(d.event.position);
            }
            Ok(Some(SubscriptionItem::CaughtUp)) => caught_up += 1,
            other => panic!("seed {seed}: {other:?}"),
        }
    }
    // The old worker's deliveries: acked after the move, without error.
    for position in &unacked {
        cluster
            .proxy
            .ack_event(&orders, &key, sub.consumer(), *position)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: ack of old delivery {position}: {e}"));
    }
    for position in &again {
        cluster
            .proxy
            .ack_event(&orders, &key, sub.consumer(), *position)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: ack of redelivery {position}: {e}"));
    }
    assert_eq!(caught_up, 1, "seed {seed}: one CaughtUp in the session");
    assert_eq!(
        again.len() as u64,
        n,
        "seed {seed}: every event redelivered"
    );
}
