//! `cargo xtask demo`: a short mixed workload against a running cluster
//! (`--server ADDR --certs DIR`) or against one it starts (one worker and one
//! proxy, as `cargo xtask cluster` would, stopped at the end).
//!
//! It drives the server in Rust through the QUIC client: creates a fresh
//! store, attaches a persistent `$all` subscription that acks and counts what
//! it receives, appends events to a few streams concurrently (each append
//! conditional on the stream's version, with a progress bar), records and
//! reads back a snapshot, then prints a summary: events/s, append and delivery
//! latency p50/p99, deliveries and subscription lag.
//!
//! What it does not do: measure precisely (that is `cargo xtask bench`), or
//! remove the store it created (inspect it afterwards with the `gater` CLI).

mod workload;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use gater_transport_quic::{ClientOptions, ClientTls};

use crate::cluster::{Backend, Cluster, ClusterOptions, GaterBinary, StopFlag};
pub(crate) use workload::Report;

/// Default directory of the cluster the demo starts.
const DEFAULT_DIR: &str = ".gater/demo";
/// Most events one demo appends.
const EVENTS_MAX: u64 = 1_000_000;
/// Most streams (and concurrent writers) one demo uses.
const STREAMS_MAX: u64 = 256;
/// How often the demo checks whether Ctrl-C was pressed.
const STOP_POLL: Duration = Duration::from_millis(100);

/// `cargo xtask demo` arguments.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// A running proxy (or worker), `host:port`; commas for fail-over. Without
    /// it the demo starts a cluster of one worker and one proxy.
    #[arg(long, requires = "certs")]
    server: Option<String>,
    /// Certificates directory of the running cluster (ca.crt, client.crt, client.key).
    #[arg(long, requires = "server")]
    certs: Option<PathBuf>,
    /// Events to append.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=EVENTS_MAX))]
    events: u64,
    /// Streams to append to, one concurrent writer each.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=STREAMS_MAX))]
    streams: u64,
    /// Directory of the cluster the demo starts (certificates, data, logs).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Build the gater binary in debug mode for the cluster the demo starts.
    #[arg(long)]
    debug: bool,
    /// Use this gater binary for the cluster the demo starts instead of building one.
    #[arg(long, value_name = "PATH")]
    gater: Option<PathBuf>,
}

/// Runs `cargo xtask demo`.
pub(crate) fn run(args: DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let stop = StopFlag::on_signals(&runtime)?;
    let (own_cluster, server, certs) = match (args.server, args.certs) {
        (Some(server), Some(certs)) => (None, server, certs),
        _ => {
            let options = ClusterOptions {
                workers: 1,
                proxies: 1,
                backend: Backend::Embedded,
                dir: args.dir,
                gater: match args.gater {
                    Some(path) => GaterBinary::Path(path),
                    None => GaterBinary::Build { debug: args.debug },
                },
            };
            let started = Cluster::start(&options, &stop)?;
            let state = started.state();
            let (server, certs) = (state.servers(), state.certs.clone());
            println!(
                "demo: started a cluster of one worker and one proxy on {server}\n  \
                 (it stops when the demo ends; Ctrl-C stops both)"
            );
            (Some(started), server, certs)
        }
    };
    let plan = workload::Plan {
        events: args.events,
        streams: args.streams,
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            report = drive(&server, &certs, &plan) => report,
            () = stopped(&stop) => Err(anyhow!("interrupted")),
        }
    });
    let kept = own_cluster.is_none();
    if let Some(started) = own_cluster {
        started.shutdown()?;
    }
    let report = outcome?;
    println!("{}", report.render());
    if report.deliveries < report.appended {
        bail!(
            "the subscription received {} of {} events",
            report.deliveries,
            report.appended
        );
    }
    if kept {
        println!(
            "inspect the store:  gater --server {server} --certs {} read-all {}",
            certs.display(),
            report.store
        );
    }
    Ok(())
}

/// Connects to `server` and runs the workload.
async fn drive(server: &str, certs: &std::path::Path, plan: &workload::Plan) -> Result<Report> {
    let addresses = resolve(server)?;
    let tls = ClientTls::from_dir(certs)
        .with_context(|| format!("cannot load client certificates from {}", certs.display()))?;
    let client = gater_transport_quic::connect(&addresses, tls, ClientOptions::default())
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    workload::run(std::sync::Arc::new(client), server, plan).await
}

/// `host:port[,host:port...]` to socket addresses.
fn resolve(servers: &str) -> Result<Vec<SocketAddr>> {
    let mut addresses = Vec::new();
    for server in servers.split(',').filter(|s| !s.is_empty()) {
        let address = server
            .to_socket_addrs()
            .with_context(|| format!("invalid address {server:?} (expected host:port)"))?
            .next()
            .with_context(|| format!("{server:?} resolves to no address"))?;
        addresses.push(address);
    }
    if addresses.is_empty() {
        bail!("no server address given");
    }
    Ok(addresses)
}

async fn stopped(stop: &StopFlag) {
    while !stop.is_set() {
        tokio::time::sleep(STOP_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_servers_resolve_in_order_and_none_is_an_error() {
        let addresses = resolve("127.0.0.1:1,127.0.0.1:2").unwrap();
        assert_eq!(
            addresses,
            vec![
                "127.0.0.1:1".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:2".parse().unwrap()
            ]
        );
        assert!(resolve("").is_err());
        assert!(resolve("no-port").is_err());
    }
}
