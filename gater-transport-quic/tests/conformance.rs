//! The Gater conformance suite (a slow test: it runs only with
//! `RUN_SLOW_TESTS` set, as CI does) through QUIC on loopback, against the embedded store.

use std::sync::Arc;

use gater_store::{conformance, Store, StoreOptions};
use gater_transport_quic::{
    certs, connect, ClientOptions, ClientTls, Server, ServerConfig, ServerTls,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_through_quic_passes_the_conformance_suite() {
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        return;
    }
    let data = tempfile::tempdir().expect("temporary directory");
    let tls = tempfile::tempdir().expect("temporary directory");
    certs::write_dev_certs(tls.path(), &[]).expect("development certificates");
    let store = Arc::new(
        Store::open(StoreOptions::new(data.path()))
            .await
            .expect("open store"),
    );
    let config = ServerConfig::new(
        "127.0.0.1:0".parse().expect("an address"),
        ServerTls::from_dir(tls.path()).expect("server tls"),
    );
    let server = Server::bind(config, Arc::clone(&store)).expect("bind");
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let client = connect(
        &[addr],
        ClientTls::from_dir(tls.path()).expect("client tls"),
        ClientOptions::default(),
    )
    .await
    .expect("connect");
    conformance::run_all(&client).await;
    let _ = stop.send(());
    running.await.expect("server task");
    store.shutdown().await;
}
