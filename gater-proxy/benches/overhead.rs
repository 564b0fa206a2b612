//! What the proxy costs: appends over loopback QUIC straight to a worker
//! versus through one proxy, side by side in one run.
//!
//! Two figures each way: throughput with 64 appends in flight (256-byte
//! events) and the median latency of one append at a time. Prints a table
//! and one JSON line. `BENCH_APPENDS` (default 20000) and `BENCH_SAMPLES`
//! (default 2000) size the runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gater_core::{
    BoxGater, EventData, EventId, ExpectedVersion, Gater, StoreConfig, StoreId, StreamId,
};
use gater_proxy::{Proxy, ProxyConfig};
use gater_store::{Store, StoreOptions};
use gater_transport_quic::{
    certs, connect, ClientOptions, ClientTls, QuicClient, Server, ServerConfig, ServerTls,
};
use tokio::sync::oneshot;

/// Appends kept in flight for the throughput figure.
const IN_FLIGHT: usize = 64;
/// Bytes of data per event.
const EVENT_BYTES: usize = 256;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start(gater: impl Gater, dir: &Path) -> (SocketAddr, oneshot::Sender<()>) {
    let config = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        ServerTls::from_dir(dir).unwrap(),
    );
    let server = Server::bind(config, gater).unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn client(addr: SocketAddr, dir: &Path) -> QuicClient {
    connect(
        &[addr],
        ClientTls::from_dir(dir).unwrap(),
        ClientOptions::default(),
    )
    .await
    .unwrap()
}

/// A 256-byte event with an id that is unique across the run.
fn event(n: u64) -> EventData {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8..].copy_from_slice(&0x6265_6e63_685f_6964u64.to_le_bytes());
    EventData {
        id: EventId::from_random_bytes(id),
        event_type: "Benchmarked".into(),
        data: vec![b'x'; EVENT_BYTES],
        metadata: Vec::new(),
        content_type: "application/octet-stream".into(),
        tags: Vec::new(),
    }
}

/// Appends per second with `IN_FLIGHT` appenders sharing `total` appends.
async fn throughput(g: BoxGater, store: &StoreId, label: &str, total: usize, ids: u64) -> f64 {
    let per_task = total / IN_FLIGHT;
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|t| {
            let g = Arc::clone(&g);
            let store = store.clone();
            let stream = StreamId::new(format!("{label}-{t}")).unwrap();
            tokio::spawn(async move {
                for i in 0..per_task {
                    let n = ids + (t * per_task + i) as u64;
                    g.append_events(&store, &stream, ExpectedVersion::Any, vec![event(n)])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per_task * IN_FLIGHT) as f64 / started.elapsed().as_secs_f64()
}

/// Median latency of `samples` appends sent one at a time.
async fn p50(g: &dyn Gater, store: &StoreId, label: &str, samples: usize, ids: u64) -> Duration {
    let stream = StreamId::new(format!("{label}-serial")).unwrap();
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let started = Instant::now();
        g.append_events(
            store,
            &stream,
            ExpectedVersion::Any,
            vec![event(ids + i as u64)],
        )
        .await
        .expect("append");
        times.push(started.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let total = env_usize("BENCH_APPENDS", 20_000).max(IN_FLIGHT);
    let samples = env_usize("BENCH_SAMPLES", 2_000).max(1);
    let certs_dir = tempfile::tempdir().unwrap();
    certs::write_dev_certs(certs_dir.path(), &[]).unwrap();
    let dir = certs_dir.path();
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(data.path())).await.unwrap();
    let (worker_addr, _stop_worker) = start(store, dir);
    let proxy = Proxy::builder()
        .config(ProxyConfig::default())
        .worker(
            "w0",
            worker_addr.to_string(),
            Arc::new(client(worker_addr, dir).await),
        )
        .build()
        .await
        .unwrap();
    let (proxy_addr, _stop_proxy) = start(proxy, dir);
    let direct: BoxGater = Arc::new(client(worker_addr, dir).await);
    let through: BoxGater = Arc::new(client(proxy_addr, dir).await);
    let bench = StoreId::new("bench").unwrap();
    // Group commit on, fsync off: the figures isolate the network and the
    // proxy rather than the disk.
    let config = StoreConfig {
        fsync: false,
        group_commit: true,
        retention: gater_core::Retention::NONE,
    };
    through.create_store(&bench, config).await.unwrap();

    // Warm up both paths, then interleave the runs so drift hits both alike.
    throughput(
        Arc::clone(&direct),
        &bench,
        "warm-direct",
        IN_FLIGHT * 20,
        1 << 40,
    )
    .await;
    throughput(
        Arc::clone(&through),
        &bench,
        "warm-proxy",
        IN_FLIGHT * 20,
        2 << 40,
    )
    .await;
    let direct_tput = throughput(Arc::clone(&direct), &bench, "direct", total, 3 << 40).await;
    let proxy_tput = throughput(Arc::clone(&through), &bench, "proxy", total, 4 << 40).await;
    let direct_p50 = p50(direct.as_ref(), &bench, "direct", samples, 5 << 40).await;
    let proxy_p50 = p50(through.as_ref(), &bench, "proxy", samples, 6 << 40).await;

    // The same pair in process (mem transport): the proxy's own cost without
    // a second QUIC hop competing for the machine's cores.
    let mem_store = Store::open(StoreOptions::new(data.path().join("mem")))
        .await
        .unwrap();
    let mem_server = gater_transport_mem::serve(mem_store);
    let mem_direct: BoxGater = Arc::new(mem_server.client());
    let mem_proxy: BoxGater = Arc::new(
        Proxy::builder()
            .worker("m0", "mem", Arc::new(mem_server.client()))
            .build()
            .await
            .unwrap(),
    );
    mem_proxy.create_store(&bench, config).await.unwrap();
    throughput(
        Arc::clone(&mem_direct),
        &bench,
        "warm-mem",
        IN_FLIGHT * 20,
        7 << 40,
    )
    .await;
    let mem_direct_tput = throughput(
        Arc::clone(&mem_direct),
        &bench,
        "mem-direct",
        total,
        8 << 40,
    )
    .await;
    let mem_proxy_tput =
        throughput(Arc::clone(&mem_proxy), &bench, "mem-proxy", total, 9 << 40).await;

    let ratio = proxy_tput / direct_tput;
    let added_us = proxy_p50.as_secs_f64() * 1e6 - direct_p50.as_secs_f64() * 1e6;
    println!("proxy overhead over loopback QUIC ({EVENT_BYTES}-byte events, fsync off)");
    println!("{:<28} {:>14} {:>14}", "", "direct", "via proxy");
    println!(
        "{:<28} {:>14.0} {:>14.0}",
        format!("appends/s, {IN_FLIGHT} in flight"),
        direct_tput,
        proxy_tput
    );
    println!(
        "{:<28} {:>14.1} {:>14.1}",
        "p50 µs, 1 in flight",
        direct_p50.as_secs_f64() * 1e6,
        proxy_p50.as_secs_f64() * 1e6
    );
    println!(
        "throughput ratio {:.2} (target ≥ 0.80), added p50 {:.1} µs (target ≤ 100)",
        ratio, added_us
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "proxy_overhead",
            "event_bytes": EVENT_BYTES,
            "in_flight": IN_FLIGHT,
            "appends": total,
            "samples": samples,
            "direct_appends_per_sec": direct_tput,
            "proxy_appends_per_sec": proxy_tput,
            "throughput_ratio": ratio,
            "direct_p50_us": direct_p50.as_secs_f64() * 1e6,
            "proxy_p50_us": proxy_p50.as_secs_f64() * 1e6,
            "added_p50_us": added_us,
            "mem_direct_appends_per_sec": mem_direct_tput,
            "mem_proxy_appends_per_sec": mem_proxy_tput,
        })
    );
}
