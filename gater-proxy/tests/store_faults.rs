//! A store that refuses appends (read-only after a full disk, or failed)
//! stops receiving appends through the proxy while its reads keep going to
//! the worker that holds it, and takes appends again once it heals.
//!
//! The full disk is injected through the store's fault seam, which exists
//! only in builds with debug assertions.
#![cfg(debug_assertions)]

use std::sync::Arc;
use std::time::Duration;

use gater_core::{Direction, Error, ExpectedVersion, Gater, StoreState};
use gater_proxy::{Proxy, ProxyConfig, StorageMode};
use gater_store::{HealOptions, InjectedFault, Store, StoreOptions};
use gater_transport_mem::MemClientOptions;

mod support;
use support::{advance, event, rng, seed, sim_worker, store, stream, FAST};

#[tokio::test(start_paused = true)]
async fn a_worker_whose_only_store_is_read_only_gets_no_appends_but_still_serves_reads() {
    let seed = seed(2201);
    let mut rng = rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.worker_id = "w0".to_owned();
    // The store never finds room by itself here: only a forced reopen heals it.
    options.heal = HealOptions {
        free_bytes_min: u64::MAX,
        ..HealOptions::default()
    };
    let worker_store = Store::open(options).await.unwrap();
    let worker = sim_worker("w0", worker_store.clone(), MemClientOptions::default());
    let config = ProxyConfig {
        storage: StorageMode::Embedded,
        ..ProxyConfig::default()
    };
    let probe_interval = config.probe_interval;
    let proxy = Proxy::builder()
        .config(config)
        .worker("w0", "mem:w0", Arc::clone(&worker.client) as _)
        .build()
        .await
        .unwrap();
    let s = store("full");
    proxy.create_store(&s, FAST).await.unwrap();
    proxy
        .append_events(
            &s,
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(&mut rng)],
        )
        .await
        .unwrap();

    worker_store
        .inject_fault(&s, InjectedFault::DiskFullNextWrite)
        .unwrap();
    let appends_before = worker.served.appends();
    let full = proxy
        .append_events(
            &s,
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(&mut rng)],
        )
        .await;
    assert!(matches!(full, Err(Error::StorageFull { .. })), "{full:?}");
    assert_eq!(
        worker.served.appends(),
        appends_before + 1,
        "storage_full is passed through at once, not retried"
    );

    // Whether the proxy learned it from that answer or from its probes, the
    // worker gets no more appends for the store: the proxy answers them.
    for _ in 0..3 {
        advance(probe_interval).await;
        let refused = proxy
            .append_events(
                &s,
                &stream("a"),
                ExpectedVersion::Any,
                vec![event(&mut rng)],
            )
            .await;
        let Err(error) = refused else {
            panic!("an append to a read-only store succeeded");
        };
        assert_eq!(error.kind(), "storage_full", "{error}");
        assert!(error.is_retryable());
    }
    assert_eq!(
        worker.served.appends(),
        appends_before + 1,
        "no append reached the worker"
    );
    let listed = proxy.list_stores().await.unwrap();
    assert_eq!(listed[0].state, StoreState::ReadOnly, "{listed:?}");
    let workers = proxy.workers().await.unwrap();
    assert_eq!(workers[0].faults.len(), 1, "{workers:?}");

    // Reads still go to the worker.
    let reads_before = worker.served.store_requests();
    let read = proxy
        .get_events(&s, &stream("a"), 0, 10, Direction::Forward)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert!(worker.served.store_requests() > reads_before);

    // Reopened by hand, it takes appends through the proxy again once the
    // proxy's next probe sees it running.
    proxy.reopen_store(&s).await.unwrap();
    advance(probe_interval + Duration::from_millis(1)).await;
    proxy
        .append_events(
            &s,
            &stream("a"),
            ExpectedVersion::Exact(0),
            vec![event(&mut rng)],
        )
        .await
        .unwrap();
    assert_eq!(worker.served.appends(), appends_before + 2);
}
