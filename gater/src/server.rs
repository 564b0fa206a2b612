//! The server commands: `gater dev`, `gater worker` and `gater proxy`.
//!
//! Each builds its configuration, binds its QUIC endpoint, prints where it
//! listens, and serves until Ctrl-C (or SIGTERM), then shuts down gracefully:
//! stop accepting, finish requests in flight, close subscriptions, flush stores.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use gater_core::dispatch::RemoteGater;
use gater_core::{BoxGater, Error, Gater, Side, WorkerHealth, WorkerInfo};
use gater_proxy::{Connector, Proxy};
use gater_store::{PostgresOptions, Store, StoreOptions};
use gater_transport_quic::{
    certs, load_certs, load_key, ClientOptions, ClientTls, MemoryBudget, QuicLink, Server,
    ServerConfig, ServerTls,
};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::access;
use crate::cli::args::{BackendKind, DevArgs, Global, HttpArgs, ProxyArgs, WorkerArgs};
use crate::cli::config::{HttpSettings, ProxyConfig, ServerLimits, TlsFiles, WorkerConfig};
use crate::observe::http;
use crate::observe::requests::{Instrumented, RequestMetrics};
use crate::observe::Observed;

/// How often a worker started with `--join` announces itself to its proxy.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Deadline of one heartbeat.
const HEARTBEAT_DEADLINE_MS: u32 = 2_000;
/// Id of the embedded worker inside `gater dev`.
const DEV_WORKER_ID: &str = "dev-worker";

/// `gater dev`: an embedded store worker behind the proxy, on QUIC.
pub(crate) async fn dev(args: DevArgs) -> Result<()> {
    let listen = resolve(&args.listen).await?;
    let certs_dir = args.data_dir.join("certs");
    let hosts = vec![listen.ip().to_string()];
    let wrote = certs::write_dev_certs(&certs_dir, &hosts)
        .with_context(|| format!("cannot write certificates under {}", certs_dir.display()))?;
    let mut options = StoreOptions::new(args.data_dir.join("worker"));
    options.worker_id = DEV_WORKER_ID.to_owned();
    options.address = "in-process".to_owned();
    options.heal = crate::cli::config::heal_options(&args.heal, (None, None, None));
    if let Some(stores_max) = args.stores_max {
        options.limits.stores_max = stores_max;
    }
    let limits = ServerLimits::merge(&args.limits, &Default::default());
    // One budget for the server, the proxy's relay queues and the store's
    // subscription buffers.
    let budget = MemoryBudget::new(limits.memory_max_bytes);
    options.memory_budget = Some(budget.clone());
    let store = Arc::new(Store::open(options).await?);
    let proxy = Proxy::builder()
        .worker(DEV_WORKER_ID, "in-process", store.clone() as BoxGater)
        .memory_budget(budget.clone())
        .build()
        .await?;
    let http = dev_http_listener(&args.http).await?;
    let requests = Arc::new(RequestMetrics::default());
    let front = Instrumented::new(Arc::new(proxy.clone()), requests.clone(), "proxy");
    let mut server_config = ServerConfig::new(listen, ServerTls::from_dir(&certs_dir)?);
    server_config.access = Some(access::gatekeeper(args.access.as_deref(), Side::Proxy)?);
    server_config.side = Side::Proxy;
    limits.apply(&mut server_config);
    server_config.budget = Some(budget);
    let server = Server::bind(server_config, front)?;
    let addr = server.local_addr();
    let observed = Observed {
        gater: Arc::new(proxy.clone()),
        requests,
        store: Some(store.clone()),
        proxy: Some(proxy),
        budget: Some(server.budget()),
    };
    println!("gater dev listening on {addr} (QUIC, mutual TLS)");
    let http = start_http(http, observed);
    if http.is_none() {
        println!(
            "  http:  off ({} is taken; --http ADDR picks another)",
            http::DEV_HTTP_DEFAULT
        );
    }
    println!("  data:  {}", args.data_dir.display());
    let fresh = if wrote { " (new development CA)" } else { "" };
    println!("  certs: {}{fresh}", certs_dir.display());
    println!(
        "  try:   gater --server {addr} --certs {} store create demo",
        certs_dir.display()
    );
    println!("Press Ctrl-C to stop.");
    server.run(shutdown_signal()).await;
    stop_http(http);
    store.shutdown().await;
    tracing::info!("gater dev stopped");
    Ok(())
}

/// `gater worker`: stores served on QUIC, optionally announced to a proxy.
pub(crate) async fn worker(global: &Global, args: WorkerArgs) -> Result<()> {
    let config = WorkerConfig::load(&args)?;
    let listen = resolve(&config.listen).await?;
    let mut options = StoreOptions::new(&config.data_dir);
    options.worker_id = config.id.clone();
    options.address = config.advertise.clone();
    options.heal = config.heal;
    options.limits.stores_max = config.stores_max;
    // One budget for the server and the store's subscription buffers.
    let budget = MemoryBudget::new(config.limits.memory_max_bytes);
    options.memory_budget = Some(budget.clone());
    let store = match config.backend {
        BackendKind::Embedded => Store::open(options).await?,
        BackendKind::Postgres => {
            let url = config.postgres_url.clone().context(
                "--postgres-url (or postgres_url in the config file) is required with --backend postgres",
            )?;
            Store::open_postgres(options, PostgresOptions::new(url)).await?
        }
    };
    // Consumers of a persistent subscription whose lease another worker
    // holds are relayed to it (shared storage only).
    let peers = crate::peers::QuicPeers::new(client_tls(&global.certs, &config.tls)?);
    store.connect_peers(Arc::new(peers));
    let store = Arc::new(store);
    let http = http_listener(&config.http).await?;
    let requests = Arc::new(RequestMetrics::default());
    let front = Instrumented::new(store.clone() as BoxGater, requests.clone(), "worker");
    let server_tls = server_tls(&global.certs, &config.tls)?;
    let mut server_config = ServerConfig::new(listen, server_tls);
    server_config.access = Some(access::gatekeeper(config.access.as_deref(), Side::Worker)?);
    config.limits.apply(&mut server_config);
    server_config.budget = Some(budget);
    let server = Server::bind(server_config, front)?;
    let observed = Observed {
        gater: store.clone() as BoxGater,
        requests,
        store: Some(store.clone()),
        proxy: None,
        budget: Some(server.budget()),
    };
    println!(
        "gater worker {} listening on {}",
        config.id,
        server.local_addr()
    );
    let http = start_http(http, observed);
    let heartbeat = match &config.join {
        Some(proxy) => {
            let client = quic_client(
                std::slice::from_ref(proxy),
                client_tls(&global.certs, &config.tls)?,
                Some(HEARTBEAT_DEADLINE_MS),
                global
                    .server_name
                    .as_deref()
                    .or(config.server_name.as_deref()),
            )
            .await?;
            println!("  joining proxy {proxy}");
            Some(tokio::spawn(heartbeat_loop(
                client,
                store.clone(),
                config.clone(),
            )))
        }
        None => None,
    };
    server.run(shutdown_signal()).await;
    stop_http(http);
    if let Some(task) = heartbeat {
        task.abort();
    }
    store.shutdown().await;
    Ok(())
}

/// Announces the worker to its proxy every [`HEARTBEAT_INTERVAL`].
async fn heartbeat_loop(proxy: BoxGater, store: Arc<Store>, config: WorkerConfig) {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tick.tick().await;
        // The worker's own row: its stores, whether it sits on a shared
        // database, and which of its stores refuse appends now.
        let info = match store.workers().await {
            Ok(mut rows) if !rows.is_empty() => rows.swap_remove(0),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot describe the worker for the heartbeat");
                continue;
            }
        };
        let info = WorkerInfo {
            id: config.id.clone(),
            address: config.advertise.clone(),
            health: WorkerHealth::Healthy,
            in_flight: 0,
            latency_us: 0,
            ..info
        };
        if let Err(e) = proxy.heartbeat(info).await {
            tracing::warn!(error = %e, "heartbeat to the proxy failed");
        }
    }
}

/// `gater proxy`: the load balancer in front of workers.
pub(crate) async fn proxy(global: &Global, args: ProxyArgs) -> Result<()> {
    let config = ProxyConfig::load(&args)?;
    let listen = resolve(&config.listen).await?;
    let tls = client_tls(&global.certs, &config.tls)?;
    let server_name = global.server_name.clone().or(config.server_name.clone());
    let mut builder = Proxy::builder().storage(config.storage);
    for address in &config.workers {
        let client = quic_client(
            std::slice::from_ref(address),
            tls.clone(),
            None,
            server_name.as_deref(),
        )
        .await?;
        builder = builder.worker(address.clone(), address.clone(), client);
    }
    let gatekeeper = access::gatekeeper(config.access.as_deref(), Side::Proxy)?;
    // One budget for the server and the proxy's relay queues.
    let budget = MemoryBudget::new(config.limits.memory_max_bytes);
    let proxy = builder
        .connector(Arc::new(QuicConnector { tls, server_name }))
        .memory_budget(budget.clone())
        .build()
        .await?;
    let http = http_listener(&config.http).await?;
    let requests = Arc::new(RequestMetrics::default());
    let front = Instrumented::new(Arc::new(proxy.clone()), requests.clone(), "proxy");
    let server_tls = server_tls(&global.certs, &config.tls)?;
    let mut server_config = ServerConfig::new(listen, server_tls);
    server_config.access = Some(gatekeeper);
    config.limits.apply(&mut server_config);
    server_config.budget = Some(budget);
    server_config.side = Side::Proxy;
    let server = Server::bind(server_config, front)?;
    let observed = Observed {
        gater: Arc::new(proxy.clone()),
        requests,
        store: None,
        proxy: Some(proxy),
        budget: Some(server.budget()),
    };
    println!("gater proxy listening on {}", server.local_addr());
    let http = start_http(http, observed);
    if config.storage == gater_proxy::StorageMode::Shared {
        println!("  storage: shared (every worker serves every store)");
    }
    for address in &config.workers {
        println!("  worker {address}");
    }
    server.run(shutdown_signal()).await;
    stop_http(http);
    Ok(())
}

/// `gater dev`'s admin listener: `--http ADDR` must bind; without it the
/// default address is tried, and when that port is taken (another dev
/// server, a test) the server warns and runs without HTTP.
async fn dev_http_listener(args: &HttpArgs) -> Result<Option<TcpListener>> {
    if args.http.is_some() {
        return http_listener(&HttpSettings {
            address: args.http.clone(),
            public: args.http_public,
        })
        .await;
    }
    match http::bind(http::DEV_HTTP_DEFAULT, args.http_public).await {
        Ok(listener) => Ok(Some(listener)),
        Err(error) if error.is_addr_in_use() => {
            tracing::warn!(
                %error,
                "running without the HTTP admin listener (pass --http ADDR for another port)"
            );
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

/// The admin listener asked for (`--http`, `http = ...`); failing to bind it is fatal.
async fn http_listener(settings: &HttpSettings) -> Result<Option<TcpListener>> {
    match &settings.address {
        Some(address) => Ok(Some(http::bind(address, settings.public).await?)),
        None => Ok(None),
    }
}

/// Serves the admin listener, if any, printing where; the task runs until
/// [`stop_http`].
fn start_http(listener: Option<TcpListener>, observed: Observed) -> Option<JoinHandle<()>> {
    let listener = listener?;
    match listener.local_addr() {
        Ok(addr) => println!("  http:  http://{addr}/ (status page, /metrics, /api/status)"),
        Err(error) => tracing::warn!(%error, "the HTTP listener has no local address"),
    }
    let observed = Arc::new(observed);
    Some(tokio::spawn(http::serve(
        listener,
        observed,
        std::future::pending(),
    )))
}

/// Stops the admin listener once the QUIC server has stopped.
fn stop_http(task: Option<JoinHandle<()>>) {
    if let Some(task) = task {
        task.abort();
    }
}

/// Reaches workers that join by heartbeat over QUIC.
struct QuicConnector {
    tls: ClientTls,
    /// The name workers' certificates carry, if not the host they announce.
    server_name: Option<String>,
}

#[async_trait]
impl Connector for QuicConnector {
    /// Resolves the address (see [`resolve`]), then connects on first use.
    async fn connect(&self, address: &str) -> Result<BoxGater, Error> {
        let invalid =
            |e: &dyn std::fmt::Display| Error::invalid(format!("worker address {address:?}: {e}"));
        let addr = resolve(address)
            .await
            .map_err(|e| invalid(&format_args!("{e:#}")))?;
        let options = ClientOptions {
            server_name: self
                .server_name
                .clone()
                .unwrap_or_else(|| dialled_host(address).to_owned()),
            ..ClientOptions::default()
        };
        let link = QuicLink::new(&[addr], self.tls.clone(), options).map_err(|e| invalid(&e))?;
        Ok(Arc::new(RemoteGater::new(link)))
    }
}

/// A QUIC client that connects on first use (a worker down at start is not an error).
///
/// The server's certificate must carry `server_name`, by default the host of
/// the first address as dialled (a name, or an IP address).
pub(crate) async fn quic_client(
    addresses: &[String],
    tls: ClientTls,
    deadline_ms: Option<u32>,
    server_name: Option<&str>,
) -> Result<BoxGater> {
    let mut addrs = Vec::with_capacity(addresses.len());
    for address in addresses {
        addrs.push(resolve(address).await?);
    }
    let server_name = server_name
        .map(str::to_owned)
        .or_else(|| addresses.first().map(|a| dialled_host(a).to_owned()));
    let defaults = ClientOptions::default();
    let options = ClientOptions {
        deadline_ms: deadline_ms.or(defaults.deadline_ms),
        server_name: server_name.unwrap_or(defaults.server_name.clone()),
        ..defaults
    };
    let link = QuicLink::new(&addrs, tls, options)?;
    Ok(Arc::new(RemoteGater::new(link)))
}

/// The host part of `host:port` (`[v6]:port` gives `v6`): the name the
/// server's certificate must carry when it is dialled that way.
pub(crate) fn dialled_host(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Resolves `host:port` (names too, e.g. `localhost:7400`) to the first
/// address, with tokio's resolver (on its blocking pool, so a slow DNS
/// server never stalls the runtime).
pub(crate) async fn resolve(address: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await
        .with_context(|| format!("invalid address {address:?} (expected host:port)"))?
        .next()
        .with_context(|| format!("{address:?} resolves to no address"))
}

fn pick(explicit: &Option<PathBuf>, dir: &Path, name: &str) -> PathBuf {
    explicit.clone().unwrap_or_else(|| dir.join(name))
}

/// The server identity: explicit files from the config, else the `--certs` layout.
fn server_tls(dir: &Path, files: &TlsFiles) -> Result<ServerTls> {
    Ok(ServerTls::new(
        load_certs(&pick(&files.server_cert, dir, certs::SERVER_CERT))?,
        load_key(&pick(&files.server_key, dir, certs::SERVER_KEY))?,
        load_certs(&pick(&files.ca, dir, certs::CA_CERT))?,
    ))
}

/// The client identity used to reach other servers.
fn client_tls(dir: &Path, files: &TlsFiles) -> Result<ClientTls> {
    Ok(ClientTls::new(
        load_certs(&pick(&files.ca, dir, certs::CA_CERT))?,
        load_certs(&pick(&files.client_cert, dir, certs::CLIENT_CERT))?,
        load_key(&pick(&files.client_key, dir, certs::CLIENT_KEY))?,
    ))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_as_dialled() {
        assert_eq!(dialled_host("127.0.0.1:7400"), "127.0.0.1");
        assert_eq!(dialled_host("[::1]:7400"), "::1");
        assert_eq!(dialled_host("gater.example:7400"), "gater.example");
        assert_eq!(dialled_host("localhost"), "localhost");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn addresses_resolve_off_the_runtime_and_bad_ones_are_named() {
        let addr = resolve("127.0.0.1:7400").await.unwrap();
        assert_eq!(addr, "127.0.0.1:7400".parse().unwrap());
        assert_eq!(resolve("localhost:7400").await.unwrap().port(), 7400);
        let refused = resolve("no-port").await.unwrap_err();
        assert!(
            format!("{refused:#}").contains("\"no-port\""),
            "{refused:#}"
        );
    }
}
