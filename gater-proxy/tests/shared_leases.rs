//! Deterministic simulation of a shared-storage cluster: three workers, each
//! its own engine, over one simulated shared backend (`SimulatedShared`),
//! served over the in-memory transport with a paused clock, and a proxy in
//! front of them. Persistent subscriptions have one owner (the lease
//! holder); consumers attached elsewhere are relayed to it.
//!
//! Each scenario prints its seed; `GATER_SEED=<seed>` replays one run and,
//! with `RUN_SLOW_TESTS` set, `GATER_SEEDS=<n>` runs seeds 0 to n-1.
//!
//! The same scenarios run on real PostgreSQL (three `Store::open_postgres`
//! workers on one throwaway database, real time) with `RUN_SLOW_TESTS` set;
//! there a dying owner is cut off from the other workers only, so its
//! lease moves when it finds itself without consumers.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use gater_core::{
    BoxGater, ConsumerStrategy, Error, ExpectedVersion, Gater, NackAction, Position, Side, StoreId,
    SubscribeOptions, Subscription, SubscriptionEnd, SubscriptionItem, SubscriptionKey,
    SubscriptionSpec, SubscriptionType,
};
use gater_proxy::{Proxy, ProxyConfig, StorageMode};
use gater_store::{PeerConnector, PostgresOptions, SimulatedShared, Store, StoreOptions};
use gater_testkit::pg_harness::PgServer;
use gater_transport_mem::{serve, MemServer};
use support::{event, rng, store, stream, FAST};

/// The lease period of the simulated workers.
const LEASE_MS: u64 = 1_000;
/// Longest a scenario waits for something that must happen (simulated time).
const PATIENCE: Duration = Duration::from_secs(120);
/// Workers in the simulated cluster.
const WORKERS: usize = 3;

/// Reaches the simulated workers by address, as the application's QUIC
/// connector reaches real ones.
#[derive(Default)]
struct Peers {
    servers: Mutex<HashMap<String, MemServer>>,
}

#[async_trait]
impl PeerConnector for Peers {
    async fn connect(&self, address: &str) -> Result<BoxGater, Error> {
        let server = self.servers.lock().unwrap().get(address).cloned();
        match server {
            Some(server) => Ok(Arc::new(server.client())),
            None => Err(Error::unavailable(
                Side::Worker,
                format!("nothing at {address}"),
            )),
        }
    }
}

struct Worker {
    id: String,
    store: Store,
    server: MemServer,
    client: BoxGater,
}

/// What the workers share.
enum Storage {
    /// `SimulatedShared`, with a paused clock.
    Simulated,
    /// A PostgreSQL database at this URL, in real time.
    Postgres(String),
}

struct World {
    /// `None` on PostgreSQL.
    shared: Option<SimulatedShared>,
    workers: Vec<Worker>,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(seed: u64, storage: &Storage) -> World {
        let dir = tempfile::tempdir().unwrap();
        let shared = match storage {
            Storage::Simulated => Some(SimulatedShared::open(dir.path()).unwrap()),
            Storage::Postgres(_) => None,
        };
        let peers = Arc::new(Peers::default());
        let mut workers = Vec::new();
        for i in 0..WORKERS {
            let id = format!("w{i}");
            let mut options = StoreOptions::new(dir.path());
            options.worker_id = id.clone();
            options.address = format!("mem:{id}");
            options.lease_period_ms = LEASE_MS;
            let store = match (&shared, storage) {
                (Some(shared), _) => Store::open_simulated_shared(options, shared).await,
                (None, Storage::Postgres(url)) => {
                    Store::open_postgres(options, PostgresOptions::new(url.clone())).await
                }
                (None, Storage::Simulated) => unreachable!("a simulated world has its storage"),
            }
            .unwrap();
            store.connect_peers(peers.clone());
            let server = serve(store.clone());
            peers
                .servers
                .lock()
                .unwrap()
                .insert(format!("mem:{id}"), server.clone());
            let client: BoxGater = Arc::new(server.client());
            workers.push(Worker {
                id,
                store,
                server,
                client,
            });
        }
        let config = ProxyConfig {
            storage: StorageMode::Shared,
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(50),
            heartbeat_timeout: Duration::from_millis(500),
            request_deadline: Duration::from_secs(30),
            seed,
            ..ProxyConfig::default()
        };
        let mut builder = Proxy::builder().config(config);
        for w in &workers {
            builder = builder.worker(&w.id, format!("mem:{}", w.id), w.client.clone());
        }
        let proxy = builder.build().await.unwrap();
        World {
            shared,
            workers,
            proxy,
            _dir: dir,
        }
    }

    /// Stops every worker, so a run over many seeds does not keep the
    /// earlier worlds' tasks busy.
    async fn shutdown(self) {
        drop(self.proxy);
        for w in &self.workers {
            w.store.shutdown().await;
        }
    }

    /// Worker `i` dies as its peers and the proxy see it: its server goes
    /// down; on simulated storage it is also cut off from the storage, so
    /// its leases run out.
    fn kill(&self, i: usize) {
        self.workers[i].server.set_down(true);
        if let Some(shared) = &self.shared {
            shared.isolate(&self.workers[i].id, true);
        }
    }

    fn client(&self, i: usize) -> &dyn Gater {
        self.workers[i].client.as_ref()
    }

    /// A store with a round-robin group `g` from position 0.
    async fn store_with_group(&self, strategy: ConsumerStrategy) -> (StoreId, SubscriptionKey) {
        let id = store("orders");
        self.client(0).create_store(&id, FAST).await.unwrap();
        let key = SubscriptionKey::new(SubscriptionType::ByStream, "$all", "g").unwrap();
        let spec = SubscriptionSpec {
            strategy,
            ack_timeout_ms: 60_000,
            ..SubscriptionSpec::new(key.clone())
        };
        self.client(0).save_subscription(&id, spec).await.unwrap();
        (id, key)
    }

    async fn append(&self, via: usize, id: &StoreId, rng: &mut gater_core::Rng, n: u64) {
        for _ in 0..n {
            let s = stream(&format!("s-{}", rng.below(5)));
            self.client(via)
                .append_events(id, &s, ExpectedVersion::Any, vec![event(rng)])
                .await
                .unwrap();
        }
    }

    /// The worker whose task has consumers attached: the lease holder.
    async fn owner(&self, id: &StoreId, key: &SubscriptionKey) -> Option<usize> {
        for (i, w) in self.workers.iter().enumerate() {
            if w.server.is_down() {
                continue;
            }
            let infos = w.store.get_subscriptions(id).await.unwrap();
            if infos.iter().any(|s| &s.spec.key == key && s.consumers > 0) {
                return Some(i);
            }
        }
        None
    }
}

fn opts() -> SubscribeOptions {
    SubscribeOptions {
        window: 8,
        ..SubscribeOptions::default()
    }
}

/// The next item, within the scenario's patience.
async fn next(sub: &mut Subscription) -> SubscriptionItem {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("an item within the patience")
        .expect("the stream ends with End, not silence")
}

/// Seeds to run: `GATER_SEEDS` (slow runs only), else one seed.
fn seeds(default: u64) -> Vec<u64> {
    let many = std::env::var("GATER_SEEDS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok());
    match many {
        Some(n) if std::env::var_os("RUN_SLOW_TESTS").is_some() => (0..n).collect(),
        Some(_) => {
            eprintln!("GATER_SEEDS ignored: a slow run (set RUN_SLOW_TESTS=1 to run many seeds)");
            vec![support::seed(default)]
        }
        None => vec![support::seed(default)],
    }
}

async fn two_consumers_through_different_workers_share_events_without_double_dispatch(
    seed: u64,
    storage: &Storage,
) {
    eprintln!("seed {seed}: no double dispatch");
    let world = World::new(seed, storage).await;
    let mut rng = rng(seed);
    let (id, key) = world.store_with_group(ConsumerStrategy::RoundRobin).await;
    let a_at = rng.below(WORKERS as u64) as usize;
    let b_at = (a_at + 1 + rng.below(WORKERS as u64 - 1) as usize) % WORKERS;
    let mut a = world
        .client(a_at)
        .subscribe(&id, key.clone(), opts())
        .await
        .unwrap();
    let mut b = world
        .client(b_at)
        .subscribe(&id, key.clone(), opts())
        .await
        .unwrap();
    let n = 20 + rng.below(60);
    world
        .append(rng.below(WORKERS as u64) as usize, &id, &mut rng, n)
        .await;
    let mut delivered: BTreeMap<u64, u32> = BTreeMap::new();
    while delivered.len() < n as usize {
        let (item, via, sub) = tokio::select! {
            item = next(&mut a) => (item, a_at, &a),
            item = next(&mut b) => (item, b_at, &b),
        };
        match item {
            SubscriptionItem::Event(d) => {
                *delivered.entry(d.event.position.0).or_default() += 1;
                let consumer = sub.consumer();
                world
                    .client(via)
                    .ack_event(&id, &key, consumer, d.event.position)
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed}: ack through w{via}: {e}"));
            }
            SubscriptionItem::CaughtUp => {}
            SubscriptionItem::End(end) => panic!("seed {seed}: a consumer ended: {end:?}"),
        }
    }
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: delivered more than once: {twice:?}"
    );
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    world.shutdown().await;
}

async fn the_owner_dies_mid_stream_and_another_worker_resumes_from_the_checkpoint(
    seed: u64,
    storage: &Storage,
) {
    eprintln!("seed {seed}: owner dies");
    let world = World::new(seed, storage).await;
    let mut rng = rng(seed);
    let (id, key) = world.store_with_group(ConsumerStrategy::RoundRobin).await;
    let mut sub = world
        .proxy
        .subscribe(&id, key.clone(), opts())
        .await
        .unwrap();
    let n = 10 + rng.below(40);
    let survivor = |dead: usize| (dead + 1) % WORKERS;
    world.append(0, &id, &mut rng, n).await;
    let before = 1 + rng.below(n - 1);
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    while (seen.len() as u64) < before {
        if let SubscriptionItem::Event(d) = next(&mut sub).await {
            seen.insert(d.event.position.0);
            world
                .proxy
                .ack_event(&id, &key, sub.consumer(), d.event.position)
                .await
                .unwrap();
        }
    }
    let dead = world
        .owner(&id, &key)
        .await
        .expect("an owner serves the consumer");
    eprintln!(
        "seed {seed}: worker {} dies after {before} of {n} events",
        world.workers[dead].id
    );
    world.kill(dead);
    let more = rng.below(10);
    world.append(survivor(dead), &id, &mut rng, more).await;
    let total = n + more;
    while (seen.len() as u64) < total {
        match next(&mut sub).await {
            SubscriptionItem::Event(d) => {
                seen.insert(d.event.position.0);
                // An ack of a delivery made before the move may be refused
                // (the new owner redelivers it): at-least-once.
                let _ = world
                    .proxy
                    .ack_event(&id, &key, sub.consumer(), d.event.position)
                    .await;
            }
            SubscriptionItem::CaughtUp => {}
            SubscriptionItem::End(end) => panic!("seed {seed}: the consumer ended: {end:?}"),
        }
    }
    assert_eq!(
        seen,
        (0..total).collect(),
        "seed {seed}: every event at least once"
    );
    let owner = world.owner(&id, &key).await;
    assert_ne!(
        owner,
        Some(dead),
        "seed {seed}: the dead worker still owns the group"
    );
    // Redeliveries of what the dead owner had in flight keep coming until
    // they are acked; then the new owner's checkpoint reaches the end.
    let live = world.client(survivor(dead));
    let mut checkpoint = Position(0);
    for _ in 0..1_000 {
        let infos = live.get_subscriptions(&id).await.unwrap();
        checkpoint = infos.iter().find(|s| s.spec.key == key).unwrap().checkpoint;
        if checkpoint == Position(total) {
            break;
        }
        if let Ok(Some(SubscriptionItem::Event(d))) =
            tokio::time::timeout(Duration::from_millis(100), sub.next()).await
        {
            let _ = world
                .proxy
                .ack_event(&id, &key, sub.consumer(), d.event.position)
                .await;
        }
    }
    assert_eq!(
        checkpoint,
        Position(total),
        "seed {seed}: the new owner's checkpoint"
    );
    world.shutdown().await;
}

async fn removal_ends_consumers_on_two_workers_and_the_record_stays_removed(
    seed: u64,
    storage: &Storage,
) {
    eprintln!("seed {seed}: removal");
    let world = World::new(seed, storage).await;
    let mut rng = rng(seed);
    let (id, key) = world.store_with_group(ConsumerStrategy::RoundRobin).await;
    let mut a = world
        .client(0)
        .subscribe(&id, key.clone(), opts())
        .await
        .unwrap();
    let mut b = world
        .client(1)
        .subscribe(&id, key.clone(), opts())
        .await
        .unwrap();
    let n = 1 + rng.below(10);
    world.append(0, &id, &mut rng, n).await;
    let via = rng.below(WORKERS as u64) as usize;
    world
        .client(via)
        .remove_subscription(&id, &key)
        .await
        .unwrap();
    for (name, sub) in [("a", &mut a), ("b", &mut b)] {
        loop {
            match next(sub).await {
                SubscriptionItem::End(end) => {
                    assert_eq!(
                        end,
                        SubscriptionEnd::Removed,
                        "seed {seed}: consumer {name}"
                    );
                    break;
                }
                // Deliveries already on their way; their acks no longer count.
                SubscriptionItem::Event(_) | SubscriptionItem::CaughtUp => {}
            }
        }
    }
    world.append(2, &id, &mut rng, 3).await;
    tokio::time::sleep(Duration::from_millis(5 * LEASE_MS)).await;
    for i in 0..WORKERS {
        let listed = world.client(i).get_subscriptions(&id).await.unwrap();
        assert!(
            listed.iter().all(|s| s.spec.key != key),
            "seed {seed}: w{i} lists the removed group: {listed:?}"
        );
    }
    world.shutdown().await;
}

async fn replay_parked_through_any_worker_moves_parked_events_back(seed: u64, storage: &Storage) {
    eprintln!("seed {seed}: replay parked");
    let world = World::new(seed, storage).await;
    let mut rng = rng(seed);
    let (id, key) = world.store_with_group(ConsumerStrategy::RoundRobin).await;
    let at = rng.below(WORKERS as u64) as usize;
    let mut sub = world
        .client(at)
        .subscribe(&id, key.clone(), opts())
        .await
        .unwrap();
    let n = 2 + rng.below(6);
    world.append(at, &id, &mut rng, n).await;
    let mut parked = Vec::new();
    let mut handled = 0;
    while handled < n {
        let SubscriptionItem::Event(d) = next(&mut sub).await else {
            continue;
        };
        handled += 1;
        let position = d.event.position;
        let park = parked.is_empty() || rng.below(2) == 0;
        let client = world.client(at);
        if park {
            parked.push(position);
            client
                .nack_event(&id, &key, sub.consumer(), position, NackAction::Park)
                .await
                .unwrap();
        } else {
            client
                .ack_event(&id, &key, sub.consumer(), position)
                .await
                .unwrap();
        }
    }
    let elsewhere = (at + 1 + rng.below(WORKERS as u64 - 1) as usize) % WORKERS;
    let listed: Vec<Position> = world
        .client(elsewhere)
        .list_parked(&id, &key)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(
        listed, parked,
        "seed {seed}: parked as stored, listed through w{elsewhere}"
    );
    let replayed = world
        .client(elsewhere)
        .replay_parked(&id, &key)
        .await
        .unwrap();
    assert_eq!(replayed, parked.len() as u64, "seed {seed}");
    let mut again = Vec::new();
    while again.len() < parked.len() {
        if let SubscriptionItem::Event(d) = next(&mut sub).await {
            again.push(d.event.position);
            world
                .client(at)
                .ack_event(&id, &key, sub.consumer(), d.event.position)
                .await
                .unwrap();
        }
    }
    again.sort();
    assert_eq!(again, parked, "seed {seed}: the parked events come back");
    world.shutdown().await;
}

async fn a_store_removed_and_created_again_replaces_the_old_handle_everywhere(
    seed: u64,
    storage: &Storage,
) {
    eprintln!("seed {seed}: store incarnations");
    let world = World::new(seed, storage).await;
    let mut rng = rng(seed);
    let (id, key) = world.store_with_group(ConsumerStrategy::RoundRobin).await;
    let holder = 1 + rng.below(WORKERS as u64 - 1) as usize;
    let mut sub = world
        .client(holder)
        .subscribe(&id, key.clone(), opts())
        .await
        .unwrap();
    let n = 1 + rng.below(5);
    world.append(holder, &id, &mut rng, n).await;
    let status = world.client(holder).get_store_status(&id).await.unwrap();
    assert!(status.head.is_some());
    world.client(0).remove_store(&id).await.unwrap();
    world.client(0).create_store(&id, FAST).await.unwrap();
    let fresh = 1 + rng.below(3);
    world.append(0, &id, &mut rng, fresh).await;
    let status = world.client(holder).get_store_status(&id).await.unwrap();
    assert_eq!(
        status.head,
        Some(Position(fresh - 1)),
        "seed {seed}: the new incarnation's head"
    );
    loop {
        if let SubscriptionItem::End(end) = next(&mut sub).await {
            assert_eq!(end, SubscriptionEnd::StoreRemoved, "seed {seed}");
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(3 * LEASE_MS)).await;
    for i in 0..WORKERS {
        let listed = world.client(i).get_subscriptions(&id).await.unwrap();
        assert!(
            listed.is_empty(),
            "seed {seed}: the old group leaked into the new store: {listed:?}"
        );
    }
    world.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn consumers_through_different_workers_receive_each_event_exactly_once() {
    for seed in seeds(151) {
        two_consumers_through_different_workers_share_events_without_double_dispatch(
            seed,
            &Storage::Simulated,
        )
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn when_the_owner_dies_another_worker_takes_over_and_nothing_is_lost() {
    for seed in seeds(152) {
        the_owner_dies_mid_stream_and_another_worker_resumes_from_the_checkpoint(
            seed,
            &Storage::Simulated,
        )
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn removal_through_any_worker_ends_every_consumer_and_stays() {
    for seed in seeds(153) {
        removal_ends_consumers_on_two_workers_and_the_record_stays_removed(
            seed,
            &Storage::Simulated,
        )
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn parked_events_are_listed_and_replayed_through_any_worker() {
    for seed in seeds(154) {
        replay_parked_through_any_worker_moves_parked_events_back(seed, &Storage::Simulated).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_recreated_store_is_a_new_incarnation_on_every_worker() {
    for seed in seeds(155) {
        a_store_removed_and_created_again_replaces_the_old_handle_everywhere(
            seed,
            &Storage::Simulated,
        )
        .await;
    }
}

/// A throwaway PostgreSQL server for one scenario, or why it is skipped.
fn postgres(case: &str) -> Option<PgServer> {
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        eprintln!("{case}: skipped, slow test (set RUN_SLOW_TESTS=1 to run it)");
        return None;
    }
    let server = PgServer::start().expect("the PostgreSQL server starts");
    if server.is_none() {
        eprintln!("{case}: skipped, no PostgreSQL binaries (initdb, pg_ctl) on this machine");
    }
    server
}

macro_rules! on_postgres {
    ($name:ident, $scenario:ident, $seed:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(pg) = postgres(stringify!($name)) else {
                return;
            };
            $scenario(support::seed($seed), &Storage::Postgres(pg.url())).await;
        }
    };
}

on_postgres!(
    postgres_consumers_through_different_workers_receive_each_event_exactly_once,
    two_consumers_through_different_workers_share_events_without_double_dispatch,
    161
);
on_postgres!(
    postgres_when_the_owner_dies_another_worker_takes_over_and_nothing_is_lost,
    the_owner_dies_mid_stream_and_another_worker_resumes_from_the_checkpoint,
    162
);
on_postgres!(
    postgres_removal_through_any_worker_ends_every_consumer_and_stays,
    removal_ends_consumers_on_two_workers_and_the_record_stays_removed,
    163
);
on_postgres!(
    postgres_parked_events_are_listed_and_replayed_through_any_worker,
    replay_parked_through_any_worker_moves_parked_events_back,
    164
);
on_postgres!(
    postgres_a_recreated_store_is_a_new_incarnation_on_every_worker,
    a_store_removed_and_created_again_replaces_the_old_handle_everywhere,
    165
);
