//! On shared storage a store created anywhere is visible everywhere within
//! one probe interval, although workers remember unknown stores briefly so
//! requests naming them neither take the admin lock nor query the storage
//! each time. Two workers over one simulated shared backend, asked directly
//! (only the remembered miss's expiry makes the store visible there) and
//! each behind its own proxy on the in-memory transport, with a paused
//! clock: simulated time is advanced by exactly one probe interval.

mod support;

use std::sync::Arc;

use gater_core::{BoxGater, Error, ExpectedVersion, Gater, Resource, StoreConfig};
use gater_proxy::{Proxy, ProxyConfig, StorageMode, PROBE_INTERVAL_DEFAULT};
use gater_store::{SimulatedShared, Store, StoreOptions};
use gater_transport_mem::serve;
use support::{event, rng, store, stream, FAST};

/// Workers, each behind a proxy of its own.
const WORKERS: usize = 2;

fn is_unknown_store(result: &Result<StoreConfig, Error>) -> bool {
    matches!(
        result,
        Err(Error::NotFound {
            resource: Resource::Store,
            ..
        })
    )
}

#[tokio::test(start_paused = true)]
async fn a_store_created_through_one_worker_is_visible_through_another_within_one_probe_interval() {
    let dir = tempfile::tempdir().unwrap();
    let shared = SimulatedShared::open(dir.path()).unwrap();
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let mut options = StoreOptions::new(dir.path());
        options.worker_id = format!("w{i}");
        options.address = format!("mem:w{i}");
        workers.push(
            Store::open_simulated_shared(options, &shared)
                .await
                .unwrap(),
        );
    }
    let late = store("late");
    // Asked twice: the second answer comes from the remembered miss.
    for _ in 0..2 {
        assert!(is_unknown_store(&workers[1].get_store_config(&late).await));
    }
    workers[0].create_store(&late, FAST).await.unwrap();
    tokio::time::advance(PROBE_INTERVAL_DEFAULT).await;
    assert_eq!(workers[1].get_store_config(&late).await, Ok(FAST));
    for worker in &workers {
        worker.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_created_through_one_proxy_is_visible_through_another_within_one_probe_interval() {
    let dir = tempfile::tempdir().unwrap();
    let shared = SimulatedShared::open(dir.path()).unwrap();
    let (mut stores, mut workers, mut proxies) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..WORKERS {
        let id = format!("w{i}");
        let mut options = StoreOptions::new(dir.path());
        options.worker_id = id.clone();
        options.address = format!("mem:{id}");
        let worker = Store::open_simulated_shared(options, &shared)
            .await
            .unwrap();
        let client: BoxGater = Arc::new(serve(worker.clone()).client());
        let config = ProxyConfig {
            storage: StorageMode::Shared,
            probe_interval: PROBE_INTERVAL_DEFAULT,
            ..ProxyConfig::default()
        };
        let proxy = Proxy::builder()
            .config(config)
            .worker(&id, format!("mem:{id}"), client.clone())
            .build()
            .await
            .unwrap();
        stores.push(worker);
        workers.push(client);
        proxies.push(proxy);
    }
    let late = store("late");
    // Every worker and proxy has just been asked for the store and said it
    // does not exist: each worker now remembers the miss.
    for (worker, proxy) in workers.iter().zip(&proxies) {
        assert!(is_unknown_store(&worker.get_store_config(&late).await));
        assert!(is_unknown_store(&proxy.get_store_config(&late).await));
    }

    proxies[0].create_store(&late, FAST).await.unwrap();
    tokio::time::advance(PROBE_INTERVAL_DEFAULT).await;

    let mut rng = rng(7);
    for (i, (worker, proxy)) in workers.iter().zip(&proxies).enumerate() {
        assert_eq!(
            worker.get_store_config(&late).await,
            Ok(FAST),
            "worker {i} sees the store one probe interval after its creation"
        );
        assert_eq!(proxy.get_store_config(&late).await, Ok(FAST), "proxy {i}");
        let appended = proxy
            .append_events(
                &late,
                &stream("s"),
                ExpectedVersion::Any,
                vec![event(&mut rng)],
            )
            .await;
        assert!(appended.is_ok(), "proxy {i} appends: {appended:?}");
    }
    drop(proxies);
    for worker in &stores {
        worker.shutdown().await;
    }
}
