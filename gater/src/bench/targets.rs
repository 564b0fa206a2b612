//! The targets the compare suite measures side by side, all in this process:
//! the embedded store called directly, through the mem transport, over QUIC
//! on loopback, and over QUIC through a proxy whose worker is itself reached
//! over QUIC (the cluster's path, hop for hop).
//!
//! Adding a target is one [`TargetKind`]
//! variant, its arm in [`open`] and its entry in the suite's list; the
//! workloads only ever see a `BoxGater`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use gater_core::BoxGater;
use gater_proxy::Proxy;
use gater_store::{Store, StoreOptions};
use gater_transport_quic::{connect, ClientOptions, ClientTls, Server, ServerConfig, ServerTls};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What serves the requests of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// The embedded store, called in process.
    Embedded,
    /// The embedded store behind the mem transport.
    Mem,
    /// The embedded store behind a QUIC server on loopback.
    Quic,
    /// A QUIC server in front of a proxy whose worker is a QUIC server in front of the store.
    QuicProxy,
}

impl TargetKind {
    /// The name used in case ids.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TargetKind::Embedded => "embedded",
            TargetKind::Mem => "mem",
            TargetKind::Quic => "quic",
            TargetKind::QuicProxy => "quic+proxy",
        }
    }
}

/// A running target: the client the workloads use, and what to stop afterwards.
pub(crate) struct Target {
    /// The client side.
    pub(crate) gater: BoxGater,
    store: Store,
    servers: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("servers", &self.servers.len())
            .finish_non_exhaustive()
    }
}

/// Starts `kind` with its data under `dir`; QUIC targets use the certificates in `certs`.
pub(crate) async fn open(kind: TargetKind, dir: &Path, certs: &Path) -> Result<Target> {
    let mut options = StoreOptions::new(dir.join(kind.name().replace('+', "-")));
    options.worker_id = format!("bench-{}", kind.name());
    let store = Store::open(options)
        .await
        .context("cannot open the store")?;
    let mut target = Target {
        gater: Arc::new(store.clone()),
        store: store.clone(),
        servers: Vec::new(),
    };
    match kind {
        TargetKind::Embedded => {}
        TargetKind::Mem => {
            target.gater = Arc::new(gater_transport_mem::serve(store).client());
        }
        TargetKind::Quic => {
            let addr = target.quic_server(Arc::new(store), certs)?;
            target.gater = quic_client(addr, certs).await?;
        }
        TargetKind::QuicProxy => {
            let worker_addr = target.quic_server(Arc::new(store), certs)?;
            let worker = quic_client(worker_addr, certs).await?;
            let proxy = Proxy::builder()
                .worker("bench-worker", worker_addr.to_string(), worker)
                .build()
                .await?;
            let proxy_addr = target.quic_server(Arc::new(proxy), certs)?;
            target.gater = quic_client(proxy_addr, certs).await?;
        }
    }
    Ok(target)
}

impl Target {
    /// Serves `gater` on an ephemeral loopback port until the target closes.
    fn quic_server(&mut self, gater: BoxGater, certs: &Path) -> Result<SocketAddr> {
        let tls = ServerTls::from_dir(certs).context("cannot load the server certificates")?;
        let listen: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
        let server = Server::bind(ServerConfig::new(listen, tls), gater)?;
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        self.servers.push((stop, task));
        Ok(addr)
    }

    /// Stops the servers (outermost first) and flushes the store.
    pub(crate) async fn close(self) {
        drop(self.gater);
        for (stop, task) in self.servers.into_iter().rev() {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.store.shutdown().await;
    }
}

async fn quic_client(addr: SocketAddr, certs: &Path) -> Result<BoxGater> {
    let tls = ClientTls::from_dir(certs).context("cannot load the client certificates")?;
    let client = connect(&[addr], tls, ClientOptions::default()).await?;
    Ok(Arc::new(client))
}

/// Writes a development CA with server and client certificates under `dir/certs`.
pub(crate) fn dev_certs(dir: &Path) -> Result<PathBuf> {
    let certs = dir.join("certs");
    gater_transport_quic::certs::write_dev_certs(&certs, &[])
        .context("cannot write development certificates")?;
    Ok(certs)
}
