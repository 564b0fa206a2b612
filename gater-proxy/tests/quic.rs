//! End to end over QUIC on loopback: a client talks to a proxy served over
//! QUIC, which talks to two workers served over QUIC. One worker is killed;
//! the stores the other serves keep working.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gater_core::{Direction, ExpectedVersion, Gater, StoreId};
use gater_proxy::{Proxy, ProxyConfig, StorageMode};
use gater_transport_quic::{
    certs, connect, ClientOptions, ClientTls, QuicClient, Server, ServerConfig, ServerTls,
};
use support::{event, open_store, rng, store, stream, FAST};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn shut_down(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the server task ends cleanly");
    }
}

fn start(gater: impl Gater, dir: &Path) -> Running {
    let config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ServerTls::from_dir(dir).unwrap(),
    );
    let server = Server::bind(config, gater).unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

async fn client(addr: SocketAddr, dir: &Path) -> QuicClient {
    // Short waits: a dead peer on loopback answers nothing, so the client
    // gives up by its own deadlines.
    let options = ClientOptions {
        deadline_ms: Some(1_000),
        connect_timeout_ms: 300,
        ..ClientOptions::default()
    };
    connect(&[addr], ClientTls::from_dir(dir).unwrap(), options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keeps_working_through_a_quic_proxy_when_a_quic_worker_dies() {
    let certs_dir = tempfile::tempdir().unwrap();
    certs::write_dev_certs(certs_dir.path(), &[]).unwrap();
    let dir = certs_dir.path();
    let mut dirs = Vec::new();
    let w0 = start(open_store(&mut dirs, "w0").await, dir);
    let w1 = start(open_store(&mut dirs, "w1").await, dir);
    let proxy = Proxy::builder()
        .config(ProxyConfig {
            storage: StorageMode::Embedded,
            probe_interval: Duration::from_millis(200),
            ..ProxyConfig::default()
        })
        .worker(
            "w0",
            w0.addr.to_string(),
            Arc::new(client(w0.addr, dir).await),
        )
        .worker(
            "w1",
            w1.addr.to_string(),
            Arc::new(client(w1.addr, dir).await),
        )
        .build()
        .await
        .unwrap();
    let front = start(proxy.clone(), dir);
    let user = client(front.addr, dir).await;

    let stores: Vec<StoreId> = (0..3).map(|i| store(&format!("shop-{i}"))).collect();
    for s in &stores {
        user.create_store(s, FAST).await.unwrap();
    }
    let on_w0: Vec<&StoreId> = stores
        .iter()
        .filter(|s| proxy.workers_serving(s) == ["w0"])
        .collect();
    let on_w1: Vec<&StoreId> = stores
        .iter()
        .filter(|s| proxy.workers_serving(s) == ["w1"])
        .collect();
    assert!(
        !on_w0.is_empty() && !on_w1.is_empty(),
        "placement spreads stores: {on_w0:?} / {on_w1:?}"
    );

    w0.shut_down().await;
    let mut rng = rng(7);
    for round in 0..5 {
        for s in &on_w1 {
            let st = stream(&format!("cart-{round}"));
            user.append_events(s, &st, ExpectedVersion::NoStream, vec![event(&mut rng)])
                .await
                .unwrap();
            let read = user
                .get_events(s, &st, 0, 10, Direction::Forward)
                .await
                .unwrap();
            assert_eq!(read.len(), 1, "store {s} answers through the proxy");
        }
    }
    let lost = user
        .get_version(on_w0[0], &stream("cart-0"))
        .await
        .unwrap_err();
    assert!(
        lost.is_retryable(),
        "a store on the dead worker is unavailable, not gone: {lost}"
    );

    front.shut_down().await;
    w1.shut_down().await;
}
