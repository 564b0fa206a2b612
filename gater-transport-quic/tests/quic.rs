//! The QUIC transport end to end on loopback: requests, subscriptions with
//! credit, bad input on raw streams, mutual TLS, reconnection, fail-over of
//! requests in flight on a killed server, deadlines and graceful shutdown.

#[path = "../../gater-transport-mem/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gater_core::wire::{self, Request, RequestEnvelope, ResponseEnvelope, PROTOCOL_VERSION};
use gater_core::{
    Error, ExpectedVersion, Gater, Resource, Side, StoreConfig, StreamId, SubscribeOptions,
    SubscriptionEnd, SubscriptionItem, SubscriptionKey,
};
use gater_transport_quic::{
    certs, connect, load_certs, load_key, ClientOptions, ClientTls, QuicClient, Server,
    ServerConfig, ServerTls, REQUEST_STREAMS,
};
use support::{event, store, stream, TestGater};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn shut_down(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

fn dev_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::write_dev_certs(dir.path(), &[]).unwrap();
    dir
}

fn start_with(
    gater: TestGater,
    dir: &Path,
    addr: SocketAddr,
    tune: impl FnOnce(&mut ServerConfig),
) -> Running {
    let mut config = ServerConfig::new(addr, ServerTls::from_dir(dir).unwrap());
    tune(&mut config);
    let server = Server::bind(config, gater).unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

fn start(gater: TestGater, dir: &Path) -> Running {
    start_with(gater, dir, "127.0.0.1:0".parse().unwrap(), |_| {})
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

async fn with_store(gater: &dyn Gater) {
    gater
        .create_store(&store("s"), StoreConfig::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn requests_and_their_errors_round_trip_over_quic() {
    let dir = dev_dir();
    let server = start(TestGater::new(), dir.path());
    let client = client(server.addr, dir.path()).await;
    with_store(&client).await;
    let appended = client
        .append_events(
            &store("s"),
            &stream("a"),
            ExpectedVersion::NoStream,
            vec![event(1), event(2)],
        )
        .await
        .unwrap();
    assert_eq!(appended.version, 1);
    let events = client
        .get_events(
            &store("s"),
            &stream("a"),
            0,
            10,
            gater_core::Direction::Forward,
        )
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
        [event(1), event(2)]
    );
    let err = client
        .append_events(
            &store("s"),
            &stream("a"),
            ExpectedVersion::NoStream,
            vec![event(3)],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::WrongExpectedVersion {
            stream: stream("a"),
            expected: ExpectedVersion::NoStream,
            current: Some(1)
        }
    );
    let err = client
        .get_version(&store("nope"), &stream("a"))
        .await
        .unwrap_err();
    assert_eq!(err, Error::not_found(Resource::Store, "nope"));
    server.shut_down().await;
}

#[tokio::test]
async fn a_subscription_streams_history_then_live_and_ends_with_shutdown() {
    let dir = dev_dir();
    let server = start(TestGater::new(), dir.path());
    let client = client(server.addr, dir.path()).await;
    with_store(&client).await;
    client
        .append_events(
            &store("s"),
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(1)],
        )
        .await
        .unwrap();
    let all = SubscriptionKey::stream(&StreamId::all());
    let mut sub = client
        .subscribe(&store("s"), all.clone(), SubscribeOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(sub.next().await, Some(SubscriptionItem::Event(d)) if d.event.position.0 == 0)
    );
    assert_eq!(sub.next().await, Some(SubscriptionItem::CaughtUp));
    client
        .append_events(
            &store("s"),
            &stream("b"),
            ExpectedVersion::Any,
            vec![event(2)],
        )
        .await
        .unwrap();
    assert!(
        matches!(sub.next().await, Some(SubscriptionItem::Event(d)) if d.event.position.0 == 1)
    );
    client
        .ack_event(&store("s"), &all, sub.consumer(), gater_core::Position(1))
        .await
        .unwrap();
    let (_, end) = tokio::join!(server.shut_down(), sub.next());
    assert_eq!(end, Some(SubscriptionItem::End(SubscriptionEnd::Shutdown)));
    assert_eq!(sub.next().await, None);
}

#[tokio::test]
async fn a_consumer_that_does_not_read_stops_the_server_at_its_credit() {
    let dir = dev_dir();
    let gater = TestGater::new();
    let server = start(gater.clone(), dir.path());
    let options = ClientOptions {
        subscription_credit: 8,
        ..ClientOptions::default()
    };
    let client = connect(
        &[server.addr],
        ClientTls::from_dir(dir.path()).unwrap(),
        options,
    )
    .await
    .unwrap();
    with_store(&client).await;
    let events = (0..100).map(event).collect();
    client
        .append_events(&store("s"), &stream("a"), ExpectedVersion::Any, events)
        .await
        .unwrap();
    let mut sub = client
        .subscribe(
            &store("s"),
            SubscriptionKey::stream(&StreamId::all()),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    // Give the server every chance to overrun the credit; it must not.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gater.pulled.load(Ordering::Relaxed), 8);
    for read in 1..=100 {
        assert!(matches!(sub.next().await, Some(SubscriptionItem::Event(_))));
        assert!(gater.pulled.load(Ordering::Relaxed) <= read + 8);
    }
    assert_eq!(sub.next().await, Some(SubscriptionItem::CaughtUp));
    server.shut_down().await;
}

/// A raw quinn connection with the development client identity.
async fn raw_connection(addr: SocketAddr, tls: &ClientTls) -> Result<quinn::Connection, String> {
    let config = tls
        .quinn_config(Arc::new(quinn::TransportConfig::default()))
        .unwrap();
    raw_connection_with(addr, config).await
}

async fn raw_connection_with(
    addr: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<quinn::Connection, String> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint
        .connect_with(config, addr, "localhost")
        .map_err(|e| e.to_string())?;
    connecting.await.map_err(|e| e.to_string())
}

/// Writes `bytes` on a new stream, finishes it and decodes the one answer frame.
/// Sends `bytes` on a stream of their own and returns every byte of the answer.
async fn raw_answer(connection: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    // The server may refuse the rest of a bad frame; its answer still comes.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())
}

async fn raw_exchange(
    connection: &quinn::Connection,
    bytes: &[u8],
) -> Result<ResponseEnvelope, String> {
    let answer = raw_answer(connection, bytes).await?;
    match wire::decode::<ResponseEnvelope>(&answer, 1 << 20) {
        Ok(Some((envelope, used))) if used == answer.len() => Ok(envelope),
        other => Err(format!("not one response frame: {other:?}")),
    }
}

fn frame_of(envelope: &RequestEnvelope) -> Vec<u8> {
    wire::encode(envelope, u32::MAX).unwrap()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_and_the_connection_keeps_serving() {
    let dir = dev_dir();
    let server = start(TestGater::new(), dir.path());
    with_store(&client(server.addr, dir.path()).await).await;
    let connection = raw_connection(server.addr, &ClientTls::from_dir(dir.path()).unwrap())
        .await
        .unwrap();
    let good = frame_of(&RequestEnvelope::new(
        Request::GetStoreConfig { store: store("s") },
        None,
    ));

    let mut foreign = RequestEnvelope::new(Request::ListStores, None);
    foreign.version = PROTOCOL_VERSION + 98;
    let mut unknown_variant = postcard::to_stdvec(&PROTOCOL_VERSION).unwrap();
    unknown_variant.extend_from_slice(&[0x00, 0x7f]); // no deadline, then variant 127
                                                      // What a client of protocol version 1 sent: version, deadline, request; no id.
    let mut version_1 = postcard::to_stdvec(&1u16).unwrap();
    version_1.extend_from_slice(&postcard::to_stdvec(&Some(500u32)).unwrap());
    version_1.extend_from_slice(&postcard::to_stdvec(&Request::ListStores).unwrap());
    let unknown_store = RequestEnvelope::new(
        Request::GetStoreConfig {
            store: store("nope"),
        },
        None,
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage bytes",
            framed(&[0xde, 0xad, 0xbe, 0xef, 0x01]),
            "protocol",
        ),
        (
            "truncated frame",
            good[..good.len() - 3].to_vec(),
            "protocol",
        ),
        (
            "oversize length prefix",
            u32::MAX.to_be_bytes().to_vec(),
            "limit_exceeded",
        ),
        ("wrong version", frame_of(&foreign), "unsupported_version"),
        ("unknown variant", framed(&unknown_variant), "protocol"),
        ("empty stream", Vec::new(), "protocol"),
        ("unknown store", frame_of(&unknown_store), "not_found"),
    ];
    // A version-1 client reads the refusal in its own response shape: the bare result.
    let answer = raw_answer(&connection, &framed(&version_1)).await.unwrap();
    let (result, _) = wire::decode::<Result<wire::Response, Error>>(&answer, 1 << 20)
        .unwrap()
        .unwrap();
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains("unsupported protocol version 1"),
        "{message}"
    );
    for (name, bytes, kind) in cases {
        let answer = raw_exchange(&connection, &bytes)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let err = answer.result.expect_err(name);
        assert_eq!(err.kind(), kind, "{name}: {err}");
        let after = raw_exchange(&connection, &good).await.unwrap();
        assert_eq!(
            after.result,
            Ok(wire::Response::StoreConfig(StoreConfig::default())),
            "after {name}"
        );
    }
    server.shut_down().await;
}

#[tokio::test]
async fn the_server_requires_a_client_certificate_from_its_ca() {
    let dir = dev_dir();
    let gater = TestGater::new();
    let server = start(gater.clone(), dir.path());
    let request = frame_of(&RequestEnvelope::new(
        Request::GetStoreConfig { store: store("s") },
        None,
    ));
    let ca = load_certs(&dir.path().join(certs::CA_CERT)).unwrap();

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca[0].clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![wire::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(anonymous).unwrap();
    let refused =
        match raw_connection_with(server.addr, quinn::ClientConfig::new(Arc::new(quic))).await {
            Ok(connection) => raw_exchange(&connection, &request).await.err(),
            Err(e) => Some(e),
        };
    assert!(
        refused.is_some(),
        "a client without a certificate was served"
    );

    // A certificate from another CA.
    let other = dev_dir();
    let stranger = ClientTls::new(
        ca.clone(),
        load_certs(&other.path().join(certs::CLIENT_CERT)).unwrap(),
        load_key(&other.path().join(certs::CLIENT_KEY)).unwrap(),
    );
    let refused = match raw_connection(server.addr, &stranger).await {
        Ok(connection) => raw_exchange(&connection, &request).await.err(),
        Err(e) => Some(e),
    };
    assert!(refused.is_some(), "a client of another CA was served");
    assert_eq!(gater.calls.load(Ordering::Relaxed), 0);

    // The right certificate.
    let client = client(server.addr, dir.path()).await;
    with_store(&client).await;
    assert_eq!(
        client.get_store_config(&store("s")).await,
        Ok(StoreConfig::default())
    );
    server.shut_down().await;
}

#[tokio::test]
async fn the_client_reconnects_when_the_server_comes_back_on_the_same_port() {
    let dir = dev_dir();
    let gater = TestGater::new();
    let server = start(gater.clone(), dir.path());
    let addr = server.addr;
    let options = ClientOptions {
        connect_timeout_ms: 500,
        ..ClientOptions::default()
    };
    let client = connect(&[addr], ClientTls::from_dir(dir.path()).unwrap(), options)
        .await
        .unwrap();
    with_store(&client).await;
    server.shut_down().await;
    let err = client.get_store_config(&store("s")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let server = start_with(gater, dir.path(), addr, |_| {});
    assert_eq!(
        client.get_store_config(&store("s")).await,
        Ok(StoreConfig::default())
    );
    server.shut_down().await;
}

#[tokio::test]
async fn the_client_fails_over_to_the_next_address() {
    let dir = dev_dir();
    let server = start(TestGater::new(), dir.path());
    let dead = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let options = ClientOptions {
        connect_timeout_ms: 300,
        ..ClientOptions::default()
    };
    let client = connect(
        &[dead, server.addr],
        ClientTls::from_dir(dir.path()).unwrap(),
        options,
    )
    .await
    .unwrap();
    with_store(&client).await;
    assert_eq!(client.link().connected_to(), Some(server.addr));
    server.shut_down().await;
}

#[tokio::test]
async fn connection_attempts_race_past_an_address_that_never_answers() {
    let dir = dev_dir();
    let server = start(TestGater::new(), dir.path());
    // Bound, so nothing else answers there, and never read: a black hole.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = silent.local_addr().unwrap();
    // Dialling the addresses one after another would wait out the first
    // attempt (ten minutes) and miss the call's deadline; racing does not.
    let options = ClientOptions {
        connect_timeout_ms: 600_000,
        deadline_ms: Some(20_000),
        ..ClientOptions::default()
    };
    let tls = ClientTls::from_dir(dir.path()).unwrap();
    let link = gater_transport_quic::QuicLink::new(&[dead, server.addr], tls, options).unwrap();
    let client = gater_core::dispatch::RemoteGater::new(link);
    with_store(&client).await;
    assert_eq!(client.link().connected_to(), Some(server.addr));
    server.shut_down().await;
    drop(silent);
}

#[tokio::test]
async fn a_request_in_flight_when_the_connection_drops_is_retryable_unavailable() {
    let dir = dev_dir();
    let gater = TestGater::new();
    let server = start_with(
        gater.clone(),
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        |c| {
            c.shutdown_grace_ms = 50;
        },
    );
    let client = client(server.addr, dir.path()).await;
    with_store(&client).await;
    gater.hold_appends.send_replace(true);
    let (s, a) = (store("s"), stream("a"));
    let in_flight = client.append_events(&s, &a, ExpectedVersion::Any, vec![event(1)]);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.shut_down().await;
    };
    let (result, ()) = tokio::join!(in_flight, stop);
    assert!(
        matches!(
            result,
            Err(Error::Unavailable {
                side: Side::Worker,
                ..
            })
        ),
        "{result:?}"
    );
}

/// A UDP relay in front of `to`: the address a client dials instead of the
/// server's. Aborting its task kills it (both sockets close) as a killed
/// server process would: from then on the client's packets go nowhere and
/// nothing comes back, no close, no reset.
async fn relay(to: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut up, mut down) = (vec![0u8; 65_536], vec![0u8; 65_536]);
        let mut client = None;
        loop {
            tokio::select! {
                received = front.recv_from(&mut up) => if let Ok((n, from)) = received {
                    client = Some(from);
                    let _ = back.send_to(&up[..n], to).await;
                },
                received = back.recv_from(&mut down) => {
                    if let (Ok((n, _)), Some(client)) = (received, client) {
                        let _ = front.send_to(&down[..n], client).await;
                    }
                },
            }
        }
    });
    (addr, task)
}

/// Generous: the dead connection is given up after the client's idle
/// timeout (600 ms) and the requests answered soon after; before, they
/// waited out a 5 s idle timeout.
const FAILOVER_BOUND: Duration = Duration::from_secs(3);

#[tokio::test]
async fn requests_in_flight_on_a_killed_server_fail_over_or_are_answered_unavailable() {
    let dir = dev_dir();
    let (doomed, healthy) = (TestGater::new(), TestGater::new());
    with_store(&doomed).await;
    with_store(&healthy).await;
    // Appends reach the doomed server and stay in flight there.
    doomed.hold_appends.send_replace(true);
    let a = start_with(
        doomed.clone(),
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        |c| c.shutdown_grace_ms = 50,
    );
    let b = start(healthy.clone(), dir.path());
    let (a_addr, a_relay) = relay(a.addr).await;
    let options = ClientOptions {
        // The first connection goes to the relayed server, whatever the load.
        race_stagger_ms: 600_000,
        // Far beyond the bound: answers come from the fail-over, not deadlines.
        deadline_ms: Some(60_000),
        ..ClientOptions::default()
    };
    let tls = ClientTls::from_dir(dir.path()).unwrap();
    let client = connect(&[a_addr, b.addr], tls, options).await.unwrap();
    assert_eq!(client.link().connected_to(), Some(a_addr));
    let s = store("s");
    const APPENDS: u64 = 4;
    let appends = futures::future::join_all((0..APPENDS).map(|i| {
        let (client, s) = (&client, &s);
        async move {
            let a = stream(&format!("a-{i}"));
            client
                .append_events(s, &a, ExpectedVersion::NoStream, vec![event(i)])
                .await
        }
    }));
    let kill_then_more = async {
        // Every append is waiting in the doomed server's gater.
        while doomed.hold_appends.receiver_count() < APPENDS as usize {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        a_relay.abort();
        // Sent on the connection to the killed server before it is given up.
        tokio::join!(client.get_store_config(&s), client.remove_store(&s),)
    };
    let answered = tokio::time::timeout(FAILOVER_BOUND, async {
        tokio::join!(appends, kill_then_more)
    })
    .await;
    let (appended, (read, removed)) =
        answered.expect("every request answered well within the old 5 s idle timeout");
    // Appends are safe to repeat: each was sent again and stored on the healthy server.
    for (i, result) in appended.into_iter().enumerate() {
        assert_eq!(result.map(|r| r.version), Ok(0), "append {i}");
        let version = healthy.get_version(&s, &stream(&format!("a-{i}"))).await;
        assert_eq!(version, Ok(Some(0)), "append {i} on the healthy server");
    }
    assert_eq!(read, Ok(StoreConfig::default()));
    // Removing a store is not: it is answered unavailable (retryable), not repeated.
    assert!(
        matches!(
            &removed,
            Err(e @ Error::Unavailable { side: Side::Worker, .. }) if e.is_retryable()
        ),
        "{removed:?}"
    );
    assert_eq!(
        healthy.get_store_config(&s).await,
        Ok(StoreConfig::default())
    );
    assert_eq!(client.link().connected_to(), Some(b.addr));
    doomed.hold_appends.send_replace(false);
    a.shut_down().await;
    b.shut_down().await;
}

#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded() {
    let dir = dev_dir();
    let gater = TestGater::new();
    let server = start(gater.clone(), dir.path());
    let options = ClientOptions {
        deadline_ms: Some(200),
        ..ClientOptions::default()
    };
    let client = connect(
        &[server.addr],
        ClientTls::from_dir(dir.path()).unwrap(),
        options,
    )
    .await
    .unwrap();
    with_store(&client).await;
    gater.hold_appends.send_replace(true);
    let err = client
        .append_events(
            &store("s"),
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(1)],
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::DeadlineExceeded { side: Side::Client });
    gater.hold_appends.send_replace(false);
    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let dir = dev_dir();
    let gater = TestGater::new();
    let server = start(gater.clone(), dir.path());
    let client = client(server.addr, dir.path()).await;
    with_store(&client).await;
    gater.hold_appends.send_replace(true);
    let (s, a) = (store("s"), stream("a"));
    let in_flight = client.append_events(&s, &a, ExpectedVersion::Any, vec![event(1)]);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = tokio::spawn(server.shut_down());
        tokio::time::sleep(Duration::from_millis(100)).await;
        gater.hold_appends.send_replace(false);
        done.await.unwrap();
    };
    let (result, ()) = tokio::join!(in_flight, stop);
    assert_eq!(result.map(|r| r.version), Ok(0));
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let dir = dev_dir();
    let server = start_with(
        TestGater::new(),
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        |c| {
            c.connections_max = 1;
        },
    );
    let first = client(server.addr, dir.path()).await;
    with_store(&first).await;
    let options = ClientOptions {
        connect_timeout_ms: 1_000,
        ..ClientOptions::default()
    };
    let second = connect(
        &[server.addr],
        ClientTls::from_dir(dir.path()).unwrap(),
        options,
    )
    .await;
    assert!(
        matches!(second, Err(Error::Unavailable { .. })),
        "{second:?}"
    );
    assert_eq!(
        first.get_store_config(&store("s")).await,
        Ok(StoreConfig::default())
    );
    server.shut_down().await;
}

#[tokio::test]
async fn concurrent_calls_on_one_connection_each_get_their_own_answer() {
    let dir = dev_dir();
    // A small bound on the server: requests past it wait, none is lost.
    let server = start_with(
        TestGater::new(),
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        |config| config.streams_per_connection_max = 4,
    );
    let options = ClientOptions {
        in_flight_max: 16,
        ..ClientOptions::default()
    };
    let tls = ClientTls::from_dir(dir.path()).unwrap();
    let client = connect(&[server.addr], tls, options).await.unwrap();
    with_store(&client).await;
    let s = store("s");
    // Stream i holds i + 1 events, so its version names it.
    for i in 0..40u64 {
        let events = (0..=i).map(|n| event(i * 100 + n)).collect();
        client
            .append_events(&s, &stream(&format!("s-{i}")), ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let calls = (0..40u64).map(|i| {
        let (client, s) = (&client, &s);
        async move {
            let version = client.get_version(s, &stream(&format!("s-{i}"))).await;
            (i, version)
        }
    });
    for (i, version) in futures::future::join_all(calls).await {
        assert_eq!(version, Ok(Some(i)), "stream s-{i}");
    }
    server.shut_down().await;
}

#[tokio::test]
async fn a_client_spreads_its_requests_over_several_request_streams() {
    let dir = dev_dir();
    let server = start(TestGater::new(), dir.path());
    let client = client(server.addr, dir.path()).await;
    with_store(&client).await;
    for _ in 0..2 * REQUEST_STREAMS {
        assert_eq!(
            client.get_store_config(&store("s")).await,
            Ok(StoreConfig::default())
        );
    }
    assert_eq!(client.link().request_streams(), REQUEST_STREAMS);
    server.shut_down().await;
}

#[tokio::test]
async fn a_server_allowing_fewer_streams_than_the_client_spreads_over_answers_every_request() {
    let dir = dev_dir();
    // Two streams at once, two requests in flight: the client opens two
    // request streams, never waits for a third, and no request is stuck.
    let server = start_with(
        TestGater::new(),
        dir.path(),
        "127.0.0.1:0".parse().unwrap(),
        |config| config.streams_per_connection_max = 2,
    );
    let client = client(server.addr, dir.path()).await;
    with_store(&client).await;
    let s = store("s");
    for i in 0..REQUEST_STREAMS as u64 {
        // One at a time: each call takes the next stream slot.
        let a = stream(&format!("a-{i}"));
        let appended = client
            .append_events(&s, &a, ExpectedVersion::NoStream, vec![event(i)])
            .await;
        assert_eq!(appended.map(|r| r.version), Ok(0), "stream a-{i}");
    }
    let calls = (0..20u64).map(|i| {
        let (client, s) = (&client, &s);
        async move {
            let a = stream(&format!("a-{}", i % REQUEST_STREAMS as u64));
            client.get_version(s, &a).await
        }
    });
    for version in futures::future::join_all(calls).await {
        assert_eq!(version, Ok(Some(0)));
    }
    assert_eq!(client.link().request_streams(), 2);
    server.shut_down().await;
}
