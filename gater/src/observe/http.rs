//! The HTTP admin listener: `GET /metrics` (Prometheus text), `GET
//! /api/status` (the status document as JSON) and `GET /` (the status page,
//! which polls `/api/status`). Plain HTTP on axum, meant for loopback or a
//! private network: a non-loopback address needs `--http-public`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use thiserror::Error;
use tokio::net::TcpListener;

use super::{metrics, Observed};

/// Where `gater dev` serves HTTP unless told otherwise.
pub(crate) const DEV_HTTP_DEFAULT: &str = "127.0.0.1:7480";

/// The status page; `__INITIAL_STATUS__` is replaced by the status at load,
/// so the page shows numbers before its first poll.
const PAGE: &str = include_str!("page.html");
const INITIAL_STATUS_SLOT: &str = "__INITIAL_STATUS__";

/// Why the admin listener did not start.
#[derive(Debug, Error)]
pub(crate) enum HttpError {
    /// The address does not parse or resolve.
    #[error("invalid HTTP address {address:?}: {reason}")]
    Address {
        /// As given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A non-loopback address without `--http-public`.
    #[error(
        "refusing to serve plain HTTP on {0}, which is not a loopback address; \
         pass --http-public to serve it on a private network"
    )]
    NotLoopback(SocketAddr),
    /// Binding failed (the port is taken, no permission).
    #[error("cannot listen for HTTP on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl HttpError {
    /// Whether binding failed because the port is taken.
    pub(crate) fn is_addr_in_use(&self) -> bool {
        matches!(self, HttpError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// Resolves `address`, checks it is loopback (unless `public`) and binds it.
pub(crate) async fn bind(address: &str, public: bool) -> Result<TcpListener, HttpError> {
    let addr = tokio::net::lookup_host(address)
        .await
        .map_err(|e| HttpError::Address {
            address: address.to_owned(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| HttpError::Address {
            address: address.to_owned(),
            reason: "resolves to no address".to_owned(),
        })?;
    if !public && !addr.ip().is_loopback() {
        return Err(HttpError::NotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind {
            address: addr,
            source,
        })
}

/// The routes over `observed`.
pub(crate) fn router(observed: Arc<Observed>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(scrape))
        .route("/api/status", get(status))
        .with_state(observed)
}

/// Serves `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    observed: Arc<Observed>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let served = axum::serve(listener, router(observed))
        .with_graceful_shutdown(shutdown)
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the HTTP admin listener failed");
    }
}

async fn scrape(State(observed): State<Arc<Observed>>) -> Response {
    let text = metrics::render(observed.scrape().await);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn status(State(observed): State<Arc<Observed>>) -> Response {
    match observed.status().await {
        Ok(status) => Json(status).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": error.to_string(), "kind": error.kind() })),
        )
            .into_response(),
    }
}

async fn page(State(observed): State<Arc<Observed>>) -> Html<String> {
    let initial = match observed.status().await {
        // `<\/` keeps a `</script>` inside a string from ending the script.
        Ok(status) => serde_json::to_string(&status)
            .unwrap_or_else(|_| "null".to_owned())
            .replace("</", "<\\/"),
        Err(_) => "null".to_owned(),
    };
    Html(PAGE.replace(INITIAL_STATUS_SLOT, &initial))
}
