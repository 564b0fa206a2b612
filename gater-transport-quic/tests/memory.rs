//! The memory budget under a flood: many connections send large appends at
//! once to a server with a small budget. Every call gets an answer
//! (appended, or a retryable `overloaded`), and what the server held never
//! exceeds its budget: its own accounting, which counts every connection's
//! QUIC flow-control windows, the request frames being read or served and
//! the answers being sent, checked at its peak. Connections whose windows
//! no longer fit are refused, whatever `connections_max` allows.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use gater_core::{
    Error, EventData, EventId, ExpectedVersion, Gater, StoreConfig, StoreId, StreamId,
};
use gater_store::{Store, StoreOptions};
use gater_transport_quic::{
    certs, connect, receive_windows, ClientOptions, ClientTls, MemoryBudget, Server, ServerConfig,
    ServerTls, WINDOWS_PER_CONNECTION,
};
use tokio::sync::oneshot;

/// The flood server's budget: the windows of its connections take half,
/// the rest holds about ten of the flood's frames at once.
const BUDGET_BYTES: u64 = 4 * 1024 * 1024;
/// Largest frame body the servers accept.
const FRAME_BYTES_MAX: u32 = 256 * 1024;
/// Connections flooding the server (its `connections_max`).
const CONNECTIONS: usize = 12;
/// Appends each connection sends at once.
const APPENDS_PER_CONNECTION: usize = 4;
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

/// A store server with `memory_max_bytes` and `connections_max`, running
/// until the sender is used; its budget, address and task.
struct Running {
    budget: Arc<MemoryBudget>,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

async fn start(certs_dir: &Path, memory_max_bytes: u64, connections_max: u32) -> Running {
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(data.path())).await.unwrap();
    let config = StoreConfig {
        fsync: false,
        group_commit: true,
        retention: gater_core::Retention::NONE,
    };
    store.create_store(&flood(), config).await.unwrap();
    let mut server_config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ServerTls::from_dir(certs_dir).unwrap(),
    );
    server_config.memory_max_bytes = memory_max_bytes;
    server_config.connections_max = connections_max;
    server_config.frame_bytes_max = FRAME_BYTES_MAX;
    let server = Server::bind(server_config, store).unwrap();
    let (budget, addr) = (server.budget(), server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        budget,
        addr,
        stop,
        task,
        _data: data,
    }
}

fn flood() -> StoreId {
    StoreId::new("flood").unwrap()
}

fn client_options() -> ClientOptions {
    ClientOptions {
        frame_bytes_max: FRAME_BYTES_MAX,
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_appends_stays_within_the_memory_budget() {
    let certs_dir = tempfile::tempdir().unwrap();
    certs::write_dev_certs(certs_dir.path(), &[]).unwrap();
    let server = start(certs_dir.path(), BUDGET_BYTES, CONNECTIONS as u32).await;
    let mut calls = Vec::new();
    for c in 0..CONNECTIONS {
        let tls = ClientTls::from_dir(certs_dir.path()).unwrap();
        let client = Arc::new(
            connect(&[server.addr], tls, client_options())
                .await
                .unwrap(),
        );
        for a in 0..APPENDS_PER_CONNECTION {
            let client = Arc::clone(&client);
            let n = c * APPENDS_PER_CONNECTION + a;
            calls.push(tokio::spawn(async move {
                let stream = StreamId::new(format!("s-{n}")).unwrap();
                client
                    .append_events(&flood(), &stream, ExpectedVersion::Any, big_append(n))
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
    let budget = &server.budget;
    println!(
        "flood: {appended} appended, {overloaded} overloaded; budget peak {} of {} bytes \
         ({} of them the windows of {CONNECTIONS} connections)",
        budget.peak(),
        budget.max_bytes(),
        CONNECTIONS as u64
            * WINDOWS_PER_CONNECTION
            * receive_windows(BUDGET_BYTES, CONNECTIONS as u32).0,
    );
    assert!(appended > 0, "some appends got through");
    assert!(
        budget.peak() > budget.windows_in_use(),
        "requests were accounted"
    );
    assert!(
        budget.peak() <= BUDGET_BYTES,
        "peak {} over the budget {BUDGET_BYTES}",
        budget.peak()
    );
    let _ = server.stop.send(());
    server.task.await.unwrap();
    assert_eq!(budget.in_use(), 0, "every reservation was returned");
}

#[tokio::test]
async fn connections_whose_windows_do_not_fit_the_budget_are_refused() {
    let certs_dir = tempfile::tempdir().unwrap();
    certs::write_dev_certs(certs_dir.path(), &[]).unwrap();
    // `connections_max` allows thousands, but at the window floor half of
    // this budget holds the windows of only a few connections.
    let memory_max_bytes = gater_transport_quic::memory_min_bytes(FRAME_BYTES_MAX);
    let (window, _) = receive_windows(memory_max_bytes, 4096);
    let fit = (memory_max_bytes / 2 / (WINDOWS_PER_CONNECTION * window)) as usize;
    let server = start(certs_dir.path(), memory_max_bytes, 4096).await;
    let mut admitted = Vec::new();
    for _ in 0..fit {
        let tls = ClientTls::from_dir(certs_dir.path()).unwrap();
        let client = connect(&[server.addr], tls, client_options())
            .await
            .unwrap();
        client.get_store_config(&flood()).await.unwrap();
        admitted.push(client);
    }
    let options = ClientOptions {
        connect_timeout_ms: 1_000,
        ..client_options()
    };
    let tls = ClientTls::from_dir(certs_dir.path()).unwrap();
    let refused = connect(&[server.addr], tls, options).await;
    assert!(
        matches!(&refused, Err(e @ Error::Unavailable { .. }) if e.is_retryable()),
        "{refused:?}"
    );
    println!(
        "{fit} connections admitted; budget peak {} of {memory_max_bytes} bytes",
        server.budget.peak()
    );
    assert!(server.budget.peak() <= memory_max_bytes);
    // The admitted connections are still served.
    for client in &admitted {
        client.get_store_config(&flood()).await.unwrap();
    }
    drop(admitted);
    let _ = server.stop.send(());
    server.task.await.unwrap();
}

#[tokio::test]
async fn a_budget_that_cannot_hold_two_frames_with_their_answers_is_refused_at_start() {
    let certs_dir = tempfile::tempdir().unwrap();
    certs::write_dev_certs(certs_dir.path(), &[]).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(data.path())).await.unwrap();
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ServerTls::from_dir(certs_dir.path()).unwrap(),
    );
    config.frame_bytes_max = FRAME_BYTES_MAX;
    config.memory_max_bytes = gater_transport_quic::memory_min_bytes(FRAME_BYTES_MAX) - 1;
    let refused = Server::bind(config.clone(), store.clone()).unwrap_err();
    assert!(
        refused.to_string().contains("memory_max_bytes"),
        "{refused}"
    );
    config.memory_max_bytes += 1;
    assert!(Server::bind(config, store).is_ok());
}
