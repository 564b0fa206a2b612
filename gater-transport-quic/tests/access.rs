//! The role matrix over QUIC with real certificates: one certificate per
//! identity, signed by one CA, and the server learns each client's identity
//! from its certificate's common name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use gater_core::access::Gatekeeper;
use gater_core::{BoxGater, Side};
use gater_store::conformance::access;
use gater_store::{Store, StoreOptions};
use gater_transport_quic::certs::{self, IssueOptions};
use gater_transport_quic::{connect, ClientOptions, ClientTls, Server, ServerConfig, ServerTls};

#[tokio::test]
async fn every_request_over_quic_is_allowed_or_refused_as_the_role_matrix_says() {
    let ca = tempfile::tempdir().unwrap();
    certs::write_dev_certs(ca.path(), &[]).unwrap();
    let identities = tempfile::tempdir().unwrap();
    let mut dirs: HashMap<String, PathBuf> = HashMap::new();
    for name in [
        access::READER,
        access::WRITER,
        access::ADMIN,
        access::WORKER,
        access::NOBODY,
    ] {
        let out = identities.path().join(name);
        certs::issue_identity(ca.path(), name, &out, &IssueOptions::default()).unwrap();
        dirs.insert(name.to_owned(), out);
    }
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(data.path())).await.unwrap();
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ServerTls::from_dir(ca.path()).unwrap(),
    );
    config.access = Some(Gatekeeper::new(access::matrix_access(), Side::Worker));
    let server = Server::bind(config, store).unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let dirs = Arc::new(dirs);
    let connect_as = move |identity: &str| {
        let dir = dirs[identity].clone();
        Box::pin(async move {
            let tls = ClientTls::from_dir(&dir).unwrap();
            let client = connect(&[addr], tls, ClientOptions::default()).await;
            Arc::new(client.unwrap()) as BoxGater
        }) as _
    };
    access::run(&connect_as).await;
    let _ = stop.send(());
    task.await.unwrap();
}
