//! The memory budget under a flood: many connections send large appends at
//! once to a server with a small budget. Every call gets an answer (appended,
//! or a retryable `overloaded`), and the bytes the server held for requests
//! never exceed its budget (its own accounting, checked at its peak).

use std::sync::Arc;

use gater_core::{
    Error, EventData, EventId, ExpectedVersion, Gater, StoreConfig, StoreId, StreamId,
};
use gater_store::{Store, StoreOptions};
use gater_transport_quic::{
    certs, connect, ClientOptions, ClientTls, Server, ServerConfig, ServerTls,
};

/// The server's budget: room for about two of the flood's frames at once.
const BUDGET_BYTES: u64 = 512 * 1024;
/// Connections flooding the server.
const CONNECTIONS: usize = 12;
/// Appends each connection sends at once.
const APPENDS_PER_CONNECTION: usize = 3;
/// Events per append, each of [`EVENT_DATA_BYTES`].
const EVENTS_PER_APPEND: usize = 3;
const EVENT_DATA_BYTES: usize = 64 * 1024;

fn big_append(n: usize) -> Vec<EventData> {
    (0..EVENTS_PER_APPEND)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(n as u64).to_le_bytes());
            id[8] = i as u8;
            EventData::json(
                EventId::from_random_bytes(id),
                "Big",
                vec![b'7'; EVENT_DATA_BYTES],
                Vec::new(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_appends_stays_within_the_memory_budget() {
    let certs_dir = tempfile::tempdir().unwrap();
    certs::write_dev_certs(certs_dir.path(), &[]).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(data.path())).await.unwrap();
    let id = StoreId::new("flood").unwrap();
    let config = StoreConfig {
        fsync: false,
        group_commit: true,
    };
    store.create_store(&id, config).await.unwrap();
    let mut server_config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ServerTls::from_dir(certs_dir.path()).unwrap(),
    );
    server_config.memory_max_bytes = BUDGET_BYTES;
    let server = Server::bind(server_config, store).unwrap();
    let budget = server.budget();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let mut calls = Vec::new();
    for c in 0..CONNECTIONS {
        let tls = ClientTls::from_dir(certs_dir.path()).unwrap();
        let client = Arc::new(
            connect(&[addr], tls, ClientOptions::default())
                .await
                .unwrap(),
        );
        for a in 0..APPENDS_PER_CONNECTION {
            let client = Arc::clone(&client);
            let id = id.clone();
            let n = c * APPENDS_PER_CONNECTION + a;
            calls.push(tokio::spawn(async move {
                let stream = StreamId::new(format!("s-{n}")).unwrap();
                client
                    .append_events(&id, &stream, ExpectedVersion::Any, big_append(n))
                    .await
            }));
        }
    }
    let (mut appended, mut overloaded) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => appended += 1,
            Err(e @ Error::Overloaded { .. }) => {
                assert!(e.is_retryable());
                overloaded += 1;
            }
            Err(other) => panic!("a call got neither an answer nor overloaded: {other}"),
        }
    }
    println!(
        "flood: {appended} appended, {overloaded} overloaded; budget peak {} of {} bytes",
        budget.peak(),
        budget.max_bytes()
    );
    assert!(appended > 0, "some appends got through");
    assert!(budget.peak() > 0, "requests were accounted");
    assert!(
        budget.peak() <= BUDGET_BYTES,
        "peak {} over the budget {BUDGET_BYTES}",
        budget.peak()
    );
    assert_eq!(budget.in_use(), 0, "every reservation was returned");
    let _ = stop.send(());
    task.await.unwrap();
}
