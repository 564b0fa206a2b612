//! Unary append round trips: QUIC on loopback, the mem transport, and a bare
//! quinn echo of the same frame sizes (the ceiling), with 64 requests in
//! flight (throughput) and with one (latency percentiles).
//!
//! The gater behind both transports is the embedded store with fsync on
//! (group commit), as a worker runs it; `BENCH_STORE=memory` puts the
//! in-memory test gater there instead, to see the transports' own cost.
//! `BENCH_REQUESTS` sets the number of requests per run (default 20 000).

#[path = "../../gater-transport-mem/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gater_core::wire::{self, Request, RequestEnvelope, Response, ResponseEnvelope};
use gater_core::{AppendResult, ExpectedVersion, Gater, Position, StoreConfig};
use gater_store::{Store, StoreOptions};
use gater_transport_quic::{
    certs, connect, ClientOptions, ClientTls, Server, ServerConfig, ServerTls,
};
use support::{event, store, stream, TestGater};

const IN_FLIGHT: usize = 64;

struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

#[tokio::main]
async fn main() {
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    certs::write_dev_certs(dir.path(), &[]).unwrap();

    let echo = echo_figures(dir.path(), requests).await;
    let data = tempfile::tempdir().unwrap();
    let in_memory = std::env::var("BENCH_STORE").is_ok_and(|v| v == "memory");
    let quic = {
        let gater = backend(in_memory, &data.path().join("quic")).await;
        let config = ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            ServerTls::from_dir(dir.path()).unwrap(),
        );
        let server = Server::bind(config, gater).unwrap();
        let addr = server.local_addr();
        tokio::spawn(server.run(std::future::pending()));
        let client = connect(
            &[addr],
            ClientTls::from_dir(dir.path()).unwrap(),
            ClientOptions::default(),
        )
        .await
        .unwrap();
        gater_figures(Arc::new(client), requests).await
    };
    let mem = {
        let client =
            gater_transport_mem::serve(backend(in_memory, &data.path().join("mem")).await).client();
        gater_figures(Arc::new(client), requests).await
    };
    let behind = if in_memory {
        "in-memory test gater"
    } else {
        "embedded store, fsync on"
    };
    println!("unary append, 256-byte events, {requests} requests per run, {behind}");
    println!(
        "{:<12} {:>14} {:>10} {:>10}",
        "path", "req/s (64)", "p50 (1)", "p99 (1)"
    );
    for (name, f) in [("quinn echo", &echo), ("quic", &quic), ("mem", &mem)] {
        println!(
            "{name:<12} {:>14.0} {:>10.1?} {:>10.1?}",
            f.rate, f.p50, f.p99
        );
    }
    println!(
        "quic / echo rate: {:.0}%; quic p50 - echo p50: {:.1?}",
        100.0 * quic.rate / echo.rate,
        quic.p50.saturating_sub(echo.p50)
    );
}

/// What serves the appends: the embedded store, or the in-memory test gater.
async fn backend(in_memory: bool, path: &std::path::Path) -> Arc<dyn Gater> {
    if in_memory {
        return Arc::new(TestGater::new());
    }
    Arc::new(Store::open(StoreOptions::new(path)).await.unwrap())
}

async fn gater_figures(gater: Arc<dyn Gater>, requests: usize) -> Figures {
    gater
        .create_store(&store("bench"), StoreConfig::default())
        .await
        .unwrap();
    let append = |gater: Arc<dyn Gater>, n: u64| async move {
        let stream = stream(&format!("s-{}", n % 1024));
        gater
            .append_events(
                &store("bench"),
                &stream,
                ExpectedVersion::Any,
                vec![event(n)],
            )
            .await
            .unwrap();
    };
    let rate = throughput(requests, |n| append(Arc::clone(&gater), n)).await;
    let (p50, p99) = latency(requests / 4, |n| append(Arc::clone(&gater), n)).await;
    Figures { rate, p50, p99 }
}

/// Requests per second with `IN_FLIGHT` requests outstanding.
async fn throughput<F: std::future::Future<Output = ()> + Send + 'static>(
    requests: usize,
    one: impl Fn(u64) -> F,
) -> f64 {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = requests / IN_FLIGHT;
    let mut n = 0u64;
    for _ in 0..IN_FLIGHT {
        let batch: Vec<F> = (0..per_task)
            .map(|_| {
                n += 1;
                one(n)
            })
            .collect();
        tasks.spawn(async move {
            for f in batch {
                f.await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (per_task * IN_FLIGHT) as f64 / start.elapsed().as_secs_f64()
}

/// p50 and p99 with one request at a time.
async fn latency<F: std::future::Future<Output = ()>>(
    requests: usize,
    one: impl Fn(u64) -> F,
) -> (Duration, Duration) {
    let mut samples = Vec::with_capacity(requests);
    for n in 0..requests as u64 {
        let start = Instant::now();
        one(1_000_000 + n).await;
        samples.push(start.elapsed());
    }
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// The same frame sizes over bare quinn: the request frame of a one-event
/// append up, the response frame of its answer down.
async fn echo_figures(dir: &std::path::Path, requests: usize) -> Figures {
    let request = wire::encode(
        &RequestEnvelope::new(
            Request::AppendEvents {
                store: store("bench"),
                stream: stream("s-1"),
                expected: ExpectedVersion::Any,
                events: vec![event(1)],
            },
            Some(30_000),
        ),
        u32::MAX,
    )
    .unwrap();
    let reply = wire::encode(
        &ResponseEnvelope {
            id: 1,
            result: Ok(Response::Appended(AppendResult {
                version: 1000,
                position: Position(100_000),
            })),
        },
        u32::MAX,
    )
    .unwrap();
    let addr = echo_server(dir, reply.len()).await;
    let transport = Arc::new(quinn::TransportConfig::default());
    let config = ClientTls::from_dir(dir)
        .unwrap()
        .quinn_config(transport)
        .unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint
        .connect_with(config, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let request = Arc::new(request);
    let one = |_| {
        let (connection, request) = (connection.clone(), Arc::clone(&request));
        async move {
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            send.write_all(&request).await.unwrap();
            send.finish().unwrap();
            recv.read_to_end(1 << 16).await.unwrap();
        }
    };
    let rate = throughput(requests, one).await;
    let (p50, p99) = latency(requests / 4, one).await;
    Figures { rate, p50, p99 }
}

async fn echo_server(dir: &std::path::Path, reply_len: usize) -> SocketAddr {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1024u32.into());
    let config = ServerTls::from_dir(dir)
        .unwrap()
        .quinn_config(Arc::new(transport))
        .unwrap();
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let connection = incoming.await.unwrap();
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    tokio::spawn(async move {
                        let _ = recv.read_to_end(1 << 16).await;
                        let _ = send.write_all(&vec![0u8; reply_len]).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    addr
}
