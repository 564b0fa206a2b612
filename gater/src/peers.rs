//! How a worker reaches the other workers of its shared storage: QUIC
//! clients with the worker's client identity, one per address, kept for
//! reuse (each reconnects on its own after a failure).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use gater_core::{BoxGater, Error};
use gater_store::PeerConnector;
use gater_transport_quic::ClientTls;

use crate::server::quic_client;

/// Most peer workers one worker keeps a client for; past it every kept
/// client is dropped and made again on use (addresses of workers that left go).
const PEERS_MAX: usize = 256;

/// Reaches peer workers over QUIC.
pub(crate) struct QuicPeers {
    tls: ClientTls,
    clients: Mutex<HashMap<String, BoxGater>>,
}

impl QuicPeers {
    pub(crate) fn new(tls: ClientTls) -> Self {
        QuicPeers {
            tls,
            clients: Mutex::default(),
        }
    }
}

#[async_trait]
impl PeerConnector for QuicPeers {
    async fn connect(&self, address: &str) -> Result<BoxGater, Error> {
        // Every holder of this lock completes a whole insert or read: no half state.
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let client = quic_client(&[address.to_owned()], self.tls.clone(), None, None)
            .map_err(|e| Error::invalid(format!("worker address {address:?}: {e:#}")))?;
        if clients.len() >= PEERS_MAX {
            clients.clear();
        }
        clients.insert(address.to_owned(), client.clone());
        Ok(client)
    }
}
