//! Watching a server: request metrics and trace ids on every request
//! (`requests`), the status document (`status`), the Prometheus families
//! (`metrics`) and the HTTP admin listener that serves them with the status
//! page (`http`).
//!
//! What a process exposes is an [`Observed`]: the `Gater` it reads status
//! through (in process), and whichever of a store engine, a proxy and a
//! QUIC server's memory budget it runs.

pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod requests;
pub(crate) mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use gater_core::BoxGater;
use gater_proxy::Proxy;
use gater_store::Store;
use gater_transport_quic::MemoryBudget;

use metrics::Scrape;
use requests::RequestMetrics;
use status::Status;

/// What one server process exposes to `/metrics`, `/api/status` and `/`.
#[derive(Clone)]
pub(crate) struct Observed {
    /// Where the status is read (the proxy, or the store of a worker).
    pub(crate) gater: BoxGater,
    /// Requests the server answered.
    pub(crate) requests: Arc<RequestMetrics>,
    /// The store engine, in a worker or `gater dev`.
    pub(crate) store: Option<Arc<Store>>,
    /// The proxy, in a proxy or `gater dev`.
    pub(crate) proxy: Option<Proxy>,
    /// The QUIC server's memory budget.
    pub(crate) budget: Option<Arc<MemoryBudget>>,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("store", &self.store.is_some())
            .field("proxy", &self.proxy.is_some())
            .finish_non_exhaustive()
    }
}

impl Observed {
    /// The status document now.
    pub(crate) async fn status(&self) -> Result<Status, gater_core::Error> {
        status::collect(self.gater.as_ref()).await
    }

    /// Everything `/metrics` exports now. A status that cannot be read
    /// leaves the gauges out (and is logged); the counters still go out.
    pub(crate) async fn scrape(&self) -> Scrape {
        let status = match self.status().await {
            Ok(status) => status,
            Err(error) => {
                tracing::warn!(%error, "cannot read the status for /metrics");
                Status::default()
            }
        };
        Scrape {
            requests: self.requests.snapshot(),
            status,
            store: self.store.as_ref().map(|s| s.metrics().snapshot()),
            proxy: self.proxy.as_ref().map(Proxy::counters),
            memory: self.budget.as_ref().map(|b| (b.max_bytes(), b.in_use())),
        }
    }
}
