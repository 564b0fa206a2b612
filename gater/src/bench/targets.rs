//! The targets the compare suite measures side by side: the embedded store
//! called directly, through the mem transport, over QUIC on loopback, and
//! over QUIC through a proxy whose worker is itself reached over QUIC (the
//! cluster's path, hop for hop), all in this process; and the same path with
//! the proxy and the worker as separate `gater` processes, as users run it.
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

use super::cpu::CpuProbe;
use super::processes::ServerProcess;

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
    /// [`TargetKind::QuicProxy`] with the proxy and the worker as separate `gater` processes.
    QuicProxySeparate,
}

impl TargetKind {
    /// The name used in case ids.
    pub(crate) fn name(self) -> &'static str {
        match self {
            TargetKind::Embedded => "embedded",
            TargetKind::Mem => "mem",
            TargetKind::Quic => "quic",
            TargetKind::QuicProxy => "quic+proxy",
            TargetKind::QuicProxySeparate => "quic+proxy-processes",
        }
    }
}

/// A running target: the client the workloads use, and what to stop afterwards.
pub(crate) struct Target {
    /// The client side.
    pub(crate) gater: BoxGater,
    /// The processes whose CPU time the target's cases report.
    pub(crate) cpu: CpuProbe,
    store: Option<Store>,
    servers: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
    processes: Vec<ServerProcess>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("servers", &self.servers.len())
            .finish_non_exhaustive()
    }
}

/// Starts `kind` with its data under `dir`; QUIC targets use the
/// certificates in `certs`. [`TargetKind::QuicProxySeparate`] runs `gater`
/// processes from `binary` (the `gater` binary), which it needs.
pub(crate) async fn open(
    kind: TargetKind,
    dir: &Path,
    certs: &Path,
    binary: Option<&Path>,
) -> Result<Target> {
    let data = dir.join(kind.name().replace('+', "-"));
    if kind == TargetKind::QuicProxySeparate {
        let binary = binary.context("separate server processes need the gater binary")?;
        return separate(&data, certs, binary).await;
    }
    let mut options = StoreOptions::new(data);
    options.worker_id = format!("bench-{}", kind.name());
    let store = Store::open(options)
        .await
        .context("cannot open the store")?;
    let mut target = Target {
        gater: Arc::new(store.clone()),
        cpu: CpuProbe::this_process("bench"),
        store: Some(store.clone()),
        servers: Vec::new(),
        processes: Vec::new(),
    };
    match kind {
        // The separate processes were started above; the store opened here is not theirs.
        TargetKind::Embedded | TargetKind::QuicProxySeparate => {}
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

/// A `gater worker` process behind a `gater proxy` process, both on loopback.
async fn separate(data: &Path, certs: &Path, binary: &Path) -> Result<Target> {
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let worker_dir = data.join("worker");
    let worker_dir = worker_dir.to_str().context("the data path is not UTF-8")?;
    let listen = "127.0.0.1:0";
    let worker = ServerProcess::start(
        binary,
        certs,
        &[
            "worker",
            "--data-dir",
            worker_dir,
            "--listen",
            listen,
            "--id",
            "bench-worker",
        ],
        &data.join("worker.log"),
    )
    .await?;
    let worker_addr = worker.addr().to_string();
    let proxy = ServerProcess::start(
        binary,
        certs,
        &["proxy", "--listen", listen, "--worker", &worker_addr],
        &data.join("proxy.log"),
    )
    .await;
    let proxy = match proxy {
        Ok(proxy) => proxy,
        Err(e) => {
            worker.stop().await;
            return Err(e);
        }
    };
    let mut cpu = CpuProbe::this_process("client");
    for (role, process) in [("proxy", &proxy), ("worker", &worker)] {
        if let Some(pid) = process.pid() {
            cpu = cpu.with(role, pid);
        }
    }
    let gater = quic_client(proxy.addr(), certs).await?;
    Ok(Target {
        gater,
        cpu,
        store: None,
        servers: Vec::new(),
        processes: vec![worker, proxy],
    })
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
        for process in self.processes.into_iter().rev() {
            process.stop().await;
        }
        if let Some(store) = self.store {
            store.shutdown().await;
        }
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
