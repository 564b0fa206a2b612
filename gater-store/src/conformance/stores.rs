//! Conformance cases for store administration: idempotent creation,
//! conflicts, configuration, status counters, listing, workers and removal.

use gater_core::{
    Direction, ExpectedVersion, Gater, Position, Resource, StoreConfig, StoreId, StoreState,
};

use super::support::{check, err, events, kind, new_store, ok, same, stream, CONFIG};

/// Runs every store case against `gater`.
pub async fn run(gater: &dyn Gater) {
    create_store_is_idempotent_and_detects_conflicts(gater).await;
    store_status_counts_streams_events_and_head(gater).await;
    stores_are_listed_with_their_workers(gater).await;
    removed_store_is_gone_and_can_be_created_again(gater).await;
}

async fn create_store_is_idempotent_and_detects_conflicts(g: &dyn Gater) {
    let case = "create_store_is_idempotent_and_detects_conflicts";
    let store = new_store(g, case).await;
    ok(case, g.create_store(&store, CONFIG).await);
    same(
        case,
        "config",
        ok(case, g.get_store_config(&store).await),
        CONFIG,
    );
    let other = StoreConfig {
        fsync: !CONFIG.fsync,
        ..CONFIG
    };
    let e = err(case, g.create_store(&store, other).await);
    same(
        case,
        "conflicting config",
        e,
        gater_core::Error::StoreConfigConflict {
            store: store.to_string(),
        },
    );
    same(
        case,
        "config unchanged",
        ok(case, g.get_store_config(&store).await),
        CONFIG,
    );
    let durable = new_store(g, case).await;
    ok(case, g.remove_store(&durable).await);
    ok(case, g.create_store(&durable, StoreConfig::default()).await);
    let s = stream("durable-1");
    let r = ok(
        case,
        g.append_events(&durable, &s, ExpectedVersion::NoStream, events(2))
            .await,
    );
    same(case, "append to an fsync store", r.version, 1);
    same(
        case,
        "default config",
        ok(case, g.get_store_config(&durable).await),
        StoreConfig::default(),
    );
}

async fn store_status_counts_streams_events_and_head(g: &dyn Gater) {
    let case = "store_status_counts_streams_events_and_head";
    let store = new_store(g, case).await;
    let empty = ok(case, g.get_store_status(&store).await);
    same(
        case,
        "empty store",
        (empty.stream_count, empty.event_count, empty.head),
        (0, 0, None),
    );
    same(case, "state", empty.state, StoreState::Running);
    check(case, "workers named", !empty.workers.is_empty());
    ok(
        case,
        g.append_events(&store, &stream("a"), ExpectedVersion::Any, events(3))
            .await,
    );
    ok(
        case,
        g.append_events(&store, &stream("b"), ExpectedVersion::Any, events(2))
            .await,
    );
    ok(
        case,
        g.append_events(&store, &stream("a"), ExpectedVersion::Any, events(1))
            .await,
    );
    let status = ok(case, g.get_store_status(&store).await);
    same(case, "store id", &status.store, &store);
    same(
        case,
        "counters",
        (status.stream_count, status.event_count, status.head),
        (2, 6, Some(Position(5))),
    );
    check(case, "disk bytes reported", status.disk_bytes > 0);
}

async fn stores_are_listed_with_their_workers(g: &dyn Gater) {
    let case = "stores_are_listed_with_their_workers";
    let store = new_store(g, case).await;
    let stores = ok(case, g.list_stores().await);
    let Some(info) = stores.iter().find(|i| i.store == store) else {
        panic!("[{case}] store {store} is not listed");
    };
    same(case, "listed config", info.config, CONFIG);
    same(case, "listed state", info.state, StoreState::Running);
    check(case, "listed workers", !info.workers.is_empty());
    let workers = ok(case, g.workers().await);
    check(case, "at least one worker", !workers.is_empty());
    check(
        case,
        "a worker serves the store",
        workers.iter().any(|w| w.stores.contains(&store)),
    );
}

async fn removed_store_is_gone_and_can_be_created_again(g: &dyn Gater) {
    let case = "removed_store_is_gone_and_can_be_created_again";
    let store = new_store(g, case).await;
    let s = stream("doomed");
    ok(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, events(4))
            .await,
    );
    ok(case, g.remove_store(&store).await);
    let not_found = gater_core::Error::not_found(Resource::Store, &store);
    same(
        case,
        "status after removal",
        err(case, g.get_store_status(&store).await),
        not_found.clone(),
    );
    let e = err(
        case,
        g.append_events(&store, &s, ExpectedVersion::Any, events(1))
            .await,
    );
    same(case, "append after removal", e, not_found.clone());
    let e = err(
        case,
        g.get_events(&store, &s, 0, 10, Direction::Forward).await,
    );
    kind(case, "read after removal", &e, "not_found");
    let listed = ok(case, g.list_stores().await);
    check(
        case,
        "not listed after removal",
        listed.iter().all(|i| i.store != store),
    );
    same(
        case,
        "removing twice",
        err(case, g.remove_store(&store).await),
        not_found,
    );
    ok(case, g.create_store(&store, CONFIG).await);
    let status = ok(case, g.get_store_status(&store).await);
    same(
        case,
        "recreated store is empty",
        (status.event_count, status.head),
        (0, None),
    );
    let read = ok(
        case,
        g.get_events(&store, &s, 0, 10, Direction::Forward).await,
    );
    check(case, "old events are gone", read.is_empty());
    let unknown = StoreId::new("conformance-never-created").unwrap_or_else(|_| unreachable!());
    kind(
        case,
        "unknown store config",
        &err(case, g.get_store_config(&unknown).await),
        "not_found",
    );
}
