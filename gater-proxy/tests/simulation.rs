//! Deterministic simulation of the proxy over the in-memory transport: a
//! paused clock, seeded workloads and seeded faults. Each test prints its
//! seed; `GATER_SEED=<seed>` replays a run.

mod support;

use std::time::Duration;

use futures::future::join_all;
use gater_core::routing::{HealthConfig, RetryBudgetConfig, RetryConfig};
use gater_core::{
    Direction, Error, ExpectedVersion, Gater, Position, Side, StoreId, WorkerHealth, WorkerInfo,
};
use gater_proxy::ProxyConfig;
use gater_transport_mem::{Faults, MemClientOptions};
use support::{advance, event, rng, seed, store, stream, Cluster, FAST};

/// Probes every 100 ms; a request may take 2 s; a call on a link 250 ms.
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

fn link(seed: u64) -> MemClientOptions {
    MemClientOptions {
        deadline_ms: Some(250),
        faults: Faults::NONE,
        seed,
    }
}

fn health_of(workers: &[WorkerInfo], id: &str) -> WorkerHealth {
    workers
        .iter()
        .find(|w| w.id == id)
        .map(|w| w.health)
        .unwrap_or_else(|| panic!("worker {id} is in the pool"))
}

/// One round of mixed load on `store`: appends to distinct streams and reads.
async fn round(
    g: &dyn Gater,
    store: &StoreId,
    rng: &mut gater_core::Rng,
    round: u64,
) -> Vec<Result<(), Error>> {
    let calls = (0..8u64).map(|i| {
        let s = stream(&format!("s-{round}-{i}"));
        let e = event(rng);
        async move {
            if i % 2 == 0 {
                g.append_events(store, &s, ExpectedVersion::NoStream, vec![e])
                    .await
                    .map(|_| ())
            } else {
                g.read_all(store, Position::START, 10, Direction::Forward)
                    .await
                    .map(|_| ())
            }
        }
    });
    join_all(calls).await
}

#[tokio::test(start_paused = true)]
async fn worker_crash_mid_load_fails_no_request_after_the_detection_window() {
    let seed = seed(11);
    let cluster = Cluster::shared(3, sim_config(seed), link(seed)).await;
    let orders = store("orders");
    cluster.proxy.create_store(&orders, FAST).await.unwrap();
    let mut rng = rng(seed);
    let detection_window = Duration::from_secs(1);
    let mut failures_after_window = Vec::new();
    let mut crashed_at = None;
    for r in 0..200u64 {
        if r == 50 {
            cluster.worker("w1").server.set_down(true);
            crashed_at = Some(tokio::time::Instant::now());
        }
        let results = round(&cluster.proxy, &orders, &mut rng, r).await;
        let settled = crashed_at.is_some_and(|t| t.elapsed() > detection_window);
        if settled {
            failures_after_window.extend(results.into_iter().filter_map(Result::err));
        }
        advance(Duration::from_millis(20)).await;
    }
    assert!(
        failures_after_window.is_empty(),
        "seed {seed}: {failures_after_window:?}"
    );
    let workers = cluster.proxy.workers().await.unwrap();
    assert_eq!(
        health_of(&workers, "w1"),
        WorkerHealth::Ejected,
        "seed {seed}"
    );
}

#[tokio::test(start_paused = true)]
async fn appends_retried_through_failover_never_duplicate() {
    let seed = seed(23);
    let faults = Faults {
        drop_response: 0.3,
        ..Faults::NONE
    };
    let cluster = Cluster::shared(
        2,
        sim_config(seed),
        MemClientOptions {
            faults,
            ..link(seed)
        },
    )
    .await;
    let orders = store("orders");
    cluster.proxy.create_store(&orders, FAST).await.unwrap();
    let s = stream("ledger");
    let mut rng = rng(seed);
    let mut written = Vec::new();
    for _ in 0..60 {
        let batch = vec![event(&mut rng), event(&mut rng)];
        written.extend(batch.iter().map(|e| e.id));
        // A caller that gets a retryable error sends the same events again,
        // as an idempotent client does.
        loop {
            match cluster
                .proxy
                .append_events(&orders, &s, ExpectedVersion::Any, batch.clone())
                .await
            {
                Ok(_) => break,
                Err(e) if e.is_retryable() => advance(Duration::from_millis(10)).await,
                Err(e) => panic!("seed {seed}: append failed: {e}"),
            }
        }
    }
    let retried: u64 = cluster.workers.iter().map(|w| w.sent.appends()).sum();
    assert!(
        retried > 60,
        "seed {seed}: some appends were retried ({retried} attempts)"
    );
    let stored = cluster
        .worker("w0")
        .store
        .get_events(&orders, &s, 0, 1000, Direction::Forward)
        .await
        .unwrap();
    let ids: Vec<_> = stored.iter().map(|e| e.data.id).collect();
    assert_eq!(ids, written, "seed {seed}: every event once, in order");
}

#[tokio::test(start_paused = true)]
async fn flapping_worker_is_ejected_and_readmitted_on_probation() {
    let seed = seed(37);
    let config = ProxyConfig {
        health: HealthConfig {
            failures_to_eject: 3,
            probation_successes: 2,
            ejection_base: Duration::from_secs(1),
            ejection_max: Duration::from_secs(8),
            ..HealthConfig::default()
        },
        ..sim_config(seed)
    };
    let cluster = Cluster::shared(2, config, link(seed)).await;
    let w1 = &cluster.worker("w1").server;
    let mut seen: Vec<(WorkerHealth, u32)> = Vec::new();
    let mut observe = |health: WorkerHealth| match seen.last_mut() {
        Some((last, steps)) if *last == health => *steps += 1,
        _ => seen.push((health, 1)),
    };
    for step in 0..120u32 {
        // Down for 1 s, up for 2 s, down again for 1 s, then up for good.
        let down = matches!(step, 10..20 | 40..50);
        if w1.is_down() != down {
            w1.set_down(down);
        }
        advance(Duration::from_millis(50)).await;
        observe(health_of(&cluster.proxy.workers().await.unwrap(), "w1"));
    }
    let states: Vec<WorkerHealth> = seen.iter().map(|(h, _)| *h).collect();
    let ejections: Vec<u32> = seen
        .iter()
        .filter(|(h, _)| *h == WorkerHealth::Ejected)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        states.first(),
        Some(&WorkerHealth::Healthy),
        "seed {seed}: {seen:?}"
    );
    assert_eq!(
        states.last(),
        Some(&WorkerHealth::Healthy),
        "seed {seed}: {seen:?}"
    );
    assert!(
        states
            .windows(2)
            .any(|w| w == [WorkerHealth::Ejected, WorkerHealth::Probation]),
        "seed {seed}: re-admitted on probation after its ejection: {seen:?}"
    );
    assert!(
        states
            .windows(2)
            .any(|w| w == [WorkerHealth::Probation, WorkerHealth::Healthy]),
        "seed {seed}: probation ends in health: {seen:?}"
    );
    assert_eq!(
        ejections.len(),
        2,
        "seed {seed}: ejected once per outage: {seen:?}"
    );
    assert!(
        ejections[1] > ejections[0],
        "seed {seed}: the back-off grows with the streak: {seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_never_exceed_the_budget() {
    let seed = seed(41);
    let budget = RetryBudgetConfig {
        window: Duration::from_secs(10),
        retry_percent: 20,
        min_retries_per_sec: 1,
    };
    let config = ProxyConfig {
        // Never eject, so every request reaches the retry decision.
        health: HealthConfig {
            failures_to_eject: u32::MAX,
            ..HealthConfig::default()
        },
        retry: RetryConfig {
            budget,
            ..RetryConfig::default()
        },
        ..sim_config(seed)
    };
    let cluster = Cluster::shared(3, config, link(seed)).await;
    let orders = store("orders");
    cluster.proxy.create_store(&orders, FAST).await.unwrap();
    for w in &cluster.workers {
        w.server.set_down(true);
    }
    let before: u64 = cluster
        .workers
        .iter()
        .map(|w| w.sent.store_requests())
        .sum();
    let requests = 200u64;
    for _ in 0..requests {
        let err = cluster
            .proxy
            .get_version(&orders, &stream("a"))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "seed {seed}: {err}");
        advance(Duration::from_millis(5)).await;
    }
    let attempts: u64 = cluster
        .workers
        .iter()
        .map(|w| w.sent.store_requests())
        .sum::<u64>()
        - before;
    let allowed = requests * u64::from(budget.retry_percent) / 100
        + u64::from(budget.min_retries_per_sec) * 10;
    assert!(
        attempts > requests,
        "seed {seed}: the budget allowed some retries ({attempts} attempts)"
    );
    assert!(
        attempts <= requests + allowed,
        "seed {seed}: {attempts} attempts for {requests} requests, at most {allowed} retries allowed"
    );
}

#[tokio::test(start_paused = true)]
async fn request_for_a_store_no_live_worker_serves_fails_fast_with_a_clear_error() {
    let seed = seed(53);
    let cluster = Cluster::embedded(2, sim_config(seed), link(seed)).await;
    let orders = store("orders");
    cluster.proxy.create_store(&orders, FAST).await.unwrap();
    let owner_id = cluster
        .proxy
        .workers_serving(&orders)
        .pop()
        .expect("an owner");
    let owner = cluster.worker(&owner_id);
    owner.server.set_down(true);
    advance(Duration::from_secs(1)).await;
    let workers = cluster.proxy.workers().await.unwrap();
    assert_eq!(
        health_of(&workers, &owner_id),
        WorkerHealth::Ejected,
        "seed {seed}"
    );

    let sent_before = owner.sent.store_requests();
    let err = cluster
        .proxy
        .get_version(&orders, &stream("a"))
        .await
        .unwrap_err();
    match &err {
        Error::Unavailable {
            side: Side::Proxy,
            message,
        } => {
            assert!(
                message.contains("no live worker serves store orders"),
                "seed {seed}: {message}"
            )
        }
        other => panic!("seed {seed}: expected the proxy to be unavailable, got {other:?}"),
    }
    assert!(
        err.is_retryable(),
        "seed {seed}: the caller may try again later"
    );
    assert_eq!(
        owner.sent.store_requests(),
        sent_before,
        "seed {seed}: nothing was sent to the dead worker"
    );
}

#[tokio::test(start_paused = true)]
async fn routing_never_sends_a_request_to_a_worker_that_lacks_the_store() {
    let seed = seed(67);
    let cluster = Cluster::embedded(3, sim_config(seed), link(seed)).await;
    let stores: Vec<StoreId> = (0..6).map(|i| store(&format!("store-{i}"))).collect();
    for s in &stores {
        cluster.proxy.create_store(s, FAST).await.unwrap();
    }
    let mut rng = rng(seed);
    for i in 0..300u64 {
        let s = &stores[rng.index(stores.len())];
        let st = stream(&format!("s-{}", rng.below(5)));
        let result = match i % 4 {
            0 => cluster
                .proxy
                .append_events(s, &st, ExpectedVersion::Any, vec![event(&mut rng)])
                .await
                .map(|_| ()),
            1 => cluster
                .proxy
                .get_events(s, &st, 0, 10, Direction::Forward)
                .await
                .map(|_| ()),
            2 => cluster.proxy.get_version(s, &st).await.map(|_| ()),
            _ => cluster.proxy.get_streams(s, None, 10).await.map(|_| ()),
        };
        result.unwrap_or_else(|e| panic!("seed {seed}: request {i} on {s}: {e}"));
    }
    for w in &cluster.workers {
        let held: Vec<String> = w
            .store
            .list_stores()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.store.to_string())
            .collect();
        for (s, n) in w.served.by_store() {
            assert!(
                held.contains(&s),
                "seed {seed}: worker {} got {n} requests for {s}, which it lacks",
                w.id
            );
        }
    }
    let busy = cluster
        .workers
        .iter()
        .filter(|w| w.served.store_requests() > 0)
        .count();
    assert!(
        busy >= 2,
        "seed {seed}: stores are placed on more than one worker"
    );
}
