//! A Rust service talking to a running Gater server or cluster over QUIC.
//!
//! Start a server (`cargo run --release -- dev`), then:
//!
//! ```text
//! cargo run -p gater --example client -- --server 127.0.0.1:7400 --certs .gater/certs
//! ```
//!
//! It connects with the client certificate, appends two events to a new
//! stream, reads them back, and follows the stream with a subscription until
//! it has caught up. The code between the `README` markers is the README's
//! "From a Rust service" section, word for word (xtask's `tidy` checks it).
//! Only gater-core, gater-transport-quic, tokio, futures and uuid are used.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use futures::StreamExt;
use gater_core::{
    Direction, EventData, EventId, ExpectedVersion, Gater, Position, StoreConfig, StoreId,
    StreamId, SubscribeOptions, SubscriptionItem, SubscriptionKey,
};
use gater_transport_quic::{connect, ClientOptions, ClientTls};

/// Where `gater dev` listens by default.
const SERVER_DEFAULT: &str = "127.0.0.1:7400";
/// Where `gater dev` writes its development certificates by default.
const CERTS_DEFAULT: &str = ".gater/certs";

#[tokio::main]
async fn main() -> ExitCode {
    let (servers, certs) = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&servers, certs).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<(Vec<SocketAddr>, PathBuf), String> {
    let mut servers = Vec::new();
    let mut certs = PathBuf::from(CERTS_DEFAULT);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--server" => servers.push(
                value
                    .parse()
                    .map_err(|e| format!("--server {value}: {e}"))?,
            ),
            "--certs" => certs = PathBuf::from(value),
            _ => {
                return Err(format!(
                    "unknown argument {arg} (use --server ADDR --certs DIR)"
                ))
            }
        }
    }
    if servers.is_empty() {
        servers.push(SERVER_DEFAULT.parse().map_err(|e| format!("{e}"))?);
    }
    Ok((servers, certs))
}

async fn run(servers: &[SocketAddr], certs: PathBuf) -> Result<(), Box<dyn Error>> {
    // README: begin
    // Trust the cluster's CA and present a client certificate (mutual TLS);
    // several addresses (proxies) are fail-over targets.
    let tls = ClientTls::from_dir(&certs)?;
    let gater = connect(servers, tls, ClientOptions::default()).await?;

    let shop = StoreId::new("shop")?;
    gater.create_store(&shop, StoreConfig::default()).await?; // idempotent
    let stream = StreamId::new(format!("order-{}", uuid::Uuid::new_v4().simple()))?;

    // Append atomically; the event ids make a retried append idempotent.
    let placed = EventData::json(
        EventId::from_uuid(uuid::Uuid::new_v4()),
        "OrderPlaced",
        br#"{"total":42}"#.to_vec(),
        b"{}".to_vec(),
    );
    let paid = EventData::json(
        EventId::from_uuid(uuid::Uuid::new_v4()),
        "OrderPaid",
        br#"{"by":"card"}"#.to_vec(),
        br#"{"user":"ana"}"#.to_vec(),
    );
    let written = gater
        .append_events(
            &shop,
            &stream,
            ExpectedVersion::NoStream,
            vec![placed, paid],
        )
        .await?;
    println!(
        "appended to {stream}: version {}, position {}",
        written.version, written.position
    );

    // Read the stream forward from version 0.
    for event in gater
        .get_events(&shop, &stream, 0, 100, Direction::Forward)
        .await?
    {
        let data = String::from_utf8_lossy(&event.data.data);
        println!(
            "read {} v{} {} {data}",
            event.stream, event.version, event.data.event_type
        );
    }

    // Follow the stream: history first (catch-up), then live events.
    let key = SubscriptionKey::stream(&stream); // transient: no acks needed
    let options = SubscribeOptions {
        start_from: Some(Position::START),
        ..SubscribeOptions::default()
    };
    let mut subscription = gater.subscribe(&shop, key, options).await?;
    while let Some(item) = subscription.next().await {
        match item {
            SubscriptionItem::Event(delivery) => {
                let event = delivery.event;
                println!(
                    "delivered {} at position {}",
                    event.data.event_type, event.position
                );
            }
            SubscriptionItem::CaughtUp => break, // a service would keep going: live events follow
            SubscriptionItem::End(end) => return Err(format!("subscription ended: {end:?}").into()),
        }
    }
    // README: end
    Ok(())
}
