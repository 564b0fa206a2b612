//! The role matrix through the in-process server: every request × every
//! role, each client connected under its identity.

use std::sync::Arc;

use gater_core::access::Gatekeeper;
use gater_core::{BoxGater, Side};
use gater_store::conformance::access;
use gater_store::{Store, StoreOptions};
use gater_transport_mem::{serve_guarded, MemClientOptions, MemOptions};

#[tokio::test]
async fn every_request_is_allowed_or_refused_as_the_role_matrix_says() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
    let options = MemOptions {
        codec: true,
        ..MemOptions::default()
    };
    let keeper = Gatekeeper::new(access::matrix_access(), Side::Worker);
    let server = serve_guarded(store, options, keeper);
    let connect = move |identity: &str| {
        let client: BoxGater = Arc::new(server.client_as(identity, MemClientOptions::default()));
        Box::pin(async move { client }) as _
    };
    access::run(&connect).await;
}
