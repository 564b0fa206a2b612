//! Workers joining and leaving at run time, and subscriptions moving between
//! workers, simulated over the in-memory transport with a paused clock.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gater_core::wire::Request;
use gater_core::{
    Error, ExpectedVersion, Gater, Position, Side, SubscribeOptions, SubscriptionEnd,
    SubscriptionItem, SubscriptionKey, SubscriptionSpec, SubscriptionType, WorkerHealth,
    WorkerInfo,
};
use gater_proxy::{Proxy, ProxyConfig, StorageMode};
use gater_transport_mem::{serve, MemClientOptions};
use support::{
    advance, event, open_store, rng, seed, store, stream, Cluster, Counting, MemConnector, FAST,
};

fn sim_config(seed: u64) -> ProxyConfig {
    ProxyConfig {
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_millis(500),
        removal_timeout: Duration::from_secs(2),
        request_deadline: Duration::from_secs(2),
        seed,
        ..ProxyConfig::default()
    }
}

fn announce(id: &str) -> WorkerInfo {
    WorkerInfo {
        id: id.to_owned(),
        address: format!("mem:{id}"),
        health: WorkerHealth::Healthy,
        in_flight: 0,
        latency_us: 0,
        stores: Vec::new(),
        shared_storage: true,
        faults: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_joining_worker_takes_load_and_a_leaving_one_drains() {
    let seed = seed(71);
    let mut dirs = Vec::new();
    let shared = open_store(&mut dirs, "shared").await;
    let connector = Arc::new(MemConnector::default());
    let mut builder = Proxy::builder().config(ProxyConfig {
        storage: StorageMode::Shared,
        ..sim_config(seed)
    });
    for id in ["w0", "w1"] {
        let (counting, _) = Counting::new(Arc::new(serve(shared.clone()).client()));
        builder = builder.worker(id, format!("mem:{id}"), Arc::new(counting));
    }
    let joiner = connector.add("mem:w2", serve(shared.clone()));
    let proxy = builder.connector(connector).build().await.unwrap();
    let orders = store("orders");
    proxy.create_store(&orders, FAST).await.unwrap();
    let mut rng = rng(seed);
    let mut load = async |proxy: &Proxy, n: u64| {
        for i in 0..n {
            let s = stream(&format!("s-{}", rng.below(20)));
            let result = if i % 2 == 0 {
                proxy
                    .append_events(&orders, &s, ExpectedVersion::Any, vec![event(&mut rng)])
                    .await
                    .map(|_| ())
            } else {
                proxy.get_version(&orders, &s).await.map(|_| ())
            };
            result.unwrap_or_else(|e| panic!("seed {seed}: request {i}: {e}"));
            advance(Duration::from_millis(2)).await;
        }
    };

    // Joins, and takes its share while it heartbeats.
    for _ in 0..5 {
        proxy.heartbeat(announce("w2")).await.unwrap();
        load(&proxy, 50).await;
    }
    let joined = joiner.store_requests();
    assert!(
        joined > 20,
        "seed {seed}: the joiner took load ({joined} requests)"
    );

    // Stops heartbeating: suspect after the heartbeat window, so it drains.
    advance(Duration::from_millis(600)).await;
    let health = proxy
        .workers()
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.id == "w2")
        .map(|w| w.health);
    assert_eq!(health, Some(WorkerHealth::Suspect), "seed {seed}");
    let drained = joiner.store_requests();
    load(&proxy, 100).await;
    assert_eq!(
        joiner.store_requests(),
        drained,
        "seed {seed}: no new request went to the leaving worker"
    );

    // Removed after the longer silence.
    advance(Duration::from_secs(2)).await;
    let ids: Vec<String> = proxy
        .workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, ["w0", "w1"], "seed {seed}");
}

async fn next_event(
    sub: &mut gater_core::Subscription,
) -> Result<gater_core::Delivery, SubscriptionEnd> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), sub.next()).await {
            Ok(Some(SubscriptionItem::Event(d))) => return Ok(d),
            Ok(Some(SubscriptionItem::CaughtUp)) => continue,
            Ok(Some(SubscriptionItem::End(end))) => return Err(end),
            Ok(None) => panic!("the subscription ended without an End item"),
            Err(_) => panic!("no delivery within 30 s"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn persistent_subscription_moves_to_another_worker_and_loses_nothing() {
    let seed = seed(83);
    let cluster = Cluster::shared(3, sim_config(seed), MemClientOptions::default()).await;
    let orders = store("orders");
    let s = stream("orders-1");
    cluster.proxy.create_store(&orders, FAST).await.unwrap();
    let key = SubscriptionKey::new(SubscriptionType::ByStream, "orders-1", "billing").unwrap();
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
    let mut written = Vec::new();
    let mut delivered = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = cluster
            .proxy
            .append_events(&orders, &s, ExpectedVersion::Any, vec![event(&mut rng)])
            .await
            .unwrap();
        written.push(r.position);
    }
    for _ in 0..10 {
        let d = next_event(&mut sub).await.unwrap();
        cluster
            .proxy
            .ack_event(&orders, &key, sub.consumer(), d.event.position)
            .await
            .unwrap();
        delivered.insert(d.event.position);
    }
    let holder = cluster
        .workers
        .iter()
        .find(|w| w.served.subscribes() > 0)
        .expect("a worker holds the consumer");
    holder.server.set_down(true);
    for _ in 0..10 {
        let r = cluster
            .proxy
            .append_events(&orders, &s, ExpectedVersion::Any, vec![event(&mut rng)])
            .await
            .unwrap();
        written.push(r.position);
    }
    while delivered.len() < written.len() {
        let d = next_event(&mut sub)
            .await
            .unwrap_or_else(|end| panic!("seed {seed}: ended: {end:?}"));
        // Acks of deliveries made before the move may be refused; redelivery covers them.
        let _ = cluster
            .proxy
            .ack_event(&orders, &key, sub.consumer(), d.event.position)
            .await;
        delivered.insert(d.event.position);
    }
    let delivered: Vec<Position> = delivered.into_iter().collect();
    assert_eq!(
        delivered, written,
        "seed {seed}: every event delivered at least once"
    );
    let moved = cluster
        .workers
        .iter()
        .filter(|w| w.id != holder.id && w.served.subscribes() > 0)
        .count();
    assert_eq!(
        moved, 1,
        "seed {seed}: the consumer re-attached on one other worker"
    );
}

#[tokio::test(start_paused = true)]
async fn subscription_ends_unavailable_when_no_other_worker_serves_the_store() {
    let seed = seed(89);
    let cluster = Cluster::embedded(2, sim_config(seed), MemClientOptions::default()).await;
    let orders = store("orders");
    cluster.proxy.create_store(&orders, FAST).await.unwrap();
    let key = SubscriptionKey::new(SubscriptionType::ByStream, "$all", "audit").unwrap();
    cluster
        .proxy
        .save_subscription(&orders, SubscriptionSpec::new(key.clone()))
        .await
        .unwrap();
    let mut sub = cluster
        .proxy
        .subscribe(&orders, key, SubscribeOptions::default())
        .await
        .unwrap();
    let owner = cluster.proxy.workers_serving(&orders).pop().unwrap();
    cluster.worker(&owner).server.set_down(true);
    let end = next_event(&mut sub)
        .await
        .expect_err("the subscription ends");
    match end {
        SubscriptionEnd::Failed(Error::Unavailable {
            side: Side::Proxy,
            message,
        }) => {
            assert!(
                message.contains("no live worker serves store orders"),
                "seed {seed}: {message}"
            )
        }
        other => panic!("seed {seed}: expected an unavailable end, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_proxy_over_proxies_fails_over_between_them() {
    let seed = seed(97);
    let mut dirs = Vec::new();
    let shared = open_store(&mut dirs, "shared").await;
    let config = ProxyConfig {
        storage: StorageMode::Shared,
        ..sim_config(seed)
    };
    let mut fronts = Vec::new();
    for p in 0..2 {
        let mut builder = Proxy::builder().config(ProxyConfig {
            seed: seed + p,
            ..config.clone()
        });
        for w in 0..2 {
            builder = builder.worker(
                format!("w{w}"),
                format!("mem:w{w}"),
                Arc::new(serve(shared.clone()).client()),
            );
        }
        fronts.push(serve(builder.build().await.unwrap()));
    }
    let mut client = Proxy::builder().config(config);
    for (p, front) in fronts.iter().enumerate() {
        client = client.worker(
            format!("p{p}"),
            format!("mem:p{p}"),
            Arc::new(front.client()),
        );
    }
    let client = client.build().await.unwrap();
    let orders = store("orders");
    client.create_store(&orders, FAST).await.unwrap();
    let s = stream("ledger");
    let mut rng = rng(seed);
    for i in 0..40 {
        if i == 10 {
            fronts[0].set_down(true);
        }
        client
            .append_events(&orders, &s, ExpectedVersion::Any, vec![event(&mut rng)])
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: append {i} failed: {e}"));
        advance(Duration::from_millis(20)).await;
    }
    assert_eq!(
        client.get_version(&orders, &s).await.unwrap(),
        Some(39),
        "seed {seed}"
    );
    let live = client.random_worker().unwrap();
    assert_eq!(
        live.id, "p1",
        "seed {seed}: the dead proxy is ejected, so only p1 is offered"
    );
}

async fn heartbeat_as(proxy: &Proxy, identity: &str, info: WorkerInfo) -> Result<(), Error> {
    proxy
        .call_as(identity, Request::Heartbeat { worker: info }, None)
        .await
        .map(drop)
}

fn at(id: &str, address: &str) -> WorkerInfo {
    WorkerInfo {
        address: address.to_owned(),
        ..announce(id)
    }
}

#[tokio::test(start_paused = true)]
async fn a_joined_worker_can_be_moved_only_by_the_identity_that_registered_it() {
    let mut dirs = Vec::new();
    let shared = open_store(&mut dirs, "shared").await;
    let connector = Arc::new(MemConnector::default());
    connector.add("mem:w2", serve(shared.clone()));
    connector.add("mem:evil", serve(shared.clone()));
    connector.add("mem:w2-new", serve(shared.clone()));
    let static_worker = Arc::new(serve(shared.clone()).client());
    // Every worker here serves one store: a shared-storage pool.
    let proxy = Proxy::builder()
        .config(ProxyConfig {
            storage: StorageMode::Shared,
            ..sim_config(seed(72))
        })
        .worker("w0", "mem:w0", static_worker)
        .connector(connector)
        .build()
        .await
        .unwrap();
    heartbeat_as(&proxy, "worker-a", announce("w2"))
        .await
        .unwrap();

    let hijack = heartbeat_as(&proxy, "worker-b", at("w2", "mem:evil")).await;
    assert!(
        matches!(hijack, Err(Error::PermissionDenied { .. })),
        "{hijack:?}"
    );
    let moved_static = heartbeat_as(&proxy, "worker-a", at("w0", "mem:evil")).await;
    assert!(
        matches!(moved_static, Err(Error::PermissionDenied { .. })),
        "{moved_static:?}"
    );
    let address_of = |workers: Vec<WorkerInfo>, id: &str| {
        workers.into_iter().find(|w| w.id == id).map(|w| w.address)
    };
    let workers = proxy.workers().await.unwrap();
    assert_eq!(address_of(workers.clone(), "w2").as_deref(), Some("mem:w2"));
    assert_eq!(address_of(workers, "w0").as_deref(), Some("mem:w0"));

    heartbeat_as(&proxy, "worker-a", at("w2", "mem:w2-new"))
        .await
        .unwrap();
    let workers = proxy.workers().await.unwrap();
    assert_eq!(address_of(workers, "w2").as_deref(), Some("mem:w2-new"));
}

#[tokio::test(start_paused = true)]
async fn joins_are_capped_per_identity_and_in_total() {
    let mut dirs = Vec::new();
    let shared = open_store(&mut dirs, "shared").await;
    let connector = Arc::new(MemConnector::default());
    for i in 0..4 {
        connector.add(&format!("mem:j{i}"), serve(shared.clone()));
    }
    let proxy = Proxy::builder()
        .config(ProxyConfig {
            joins_max: 3,
            joins_per_identity_max: 2,
            ..sim_config(seed(73))
        })
        .connector(connector)
        .build()
        .await
        .unwrap();
    heartbeat_as(&proxy, "a", announce("j0")).await.unwrap();
    heartbeat_as(&proxy, "a", announce("j1")).await.unwrap();
    let third = heartbeat_as(&proxy, "a", announce("j2")).await;
    assert!(
        matches!(&third, Err(Error::LimitExceeded { limit, .. }) if limit == "joins_per_identity_max"),
        "{third:?}"
    );
    heartbeat_as(&proxy, "b", announce("j2")).await.unwrap();
    let full = heartbeat_as(&proxy, "c", announce("j3")).await;
    assert!(
        matches!(&full, Err(Error::LimitExceeded { limit, .. }) if limit == "joins_max"),
        "{full:?}"
    );
    // Refreshing a worker already joined is not a new join.
    heartbeat_as(&proxy, "a", announce("j0")).await.unwrap();
    assert_eq!(proxy.workers().await.unwrap().len(), 3);
}
