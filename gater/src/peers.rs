//! How a worker reaches the other workers of its shared storage: QUIC
//! clients with the worker's client identity, one per address, kept for
//! reuse (each reconnects on its own after a failure).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

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

    fn kept(&self) -> MutexGuard<'_, HashMap<String, BoxGater>> {
        // Every holder of this lock completes a whole insert or read: no half state.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl PeerConnector for QuicPeers {
    async fn connect(&self, address: &str) -> Result<BoxGater, Error> {
        if let Some(client) = self.kept().get(address) {
            return Ok(client.clone());
        }
        // Resolved without the lock held: a lookup may take a while.
        let client = quic_client(&[address.to_owned()], self.tls.clone(), None, None)
            .await
            .map_err(|e| Error::invalid(format!("worker address {address:?}: {e:#}")))?;
        let mut clients = self.kept();
        if let Some(made_meanwhile) = clients.get(address) {
            return Ok(made_meanwhile.clone());
        }
        if clients.len() >= PEERS_MAX {
            clients.clear();
        }
        clients.insert(address.to_owned(), client.clone());
        Ok(client)
    }
}
