//! The QUIC server: accepts connections, serves request streams (see
//! `requests`) and one subscription per long stream, and shuts down
//! gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gater_core::access::Gatekeeper;
use gater_core::wire::{Request, RequestKind, Response};
use gater_core::{BoxGater, Error, Gater, Limits, Side};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::budget::{
    memory_min_bytes, receive_windows, BudgetPermit, MemoryBudget, MEMORY_MAX_BYTES_DEFAULT,
    WINDOWS_PER_CONNECTION,
};
use crate::frame::{FrameReader, ReadFailure};
use crate::requests::{self, Read};
use crate::subscription;
use crate::tls::{ServerTls, TlsError};
use crate::transport_config;

/// Default time a shutdown waits for requests in flight, milliseconds.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 10_000;
/// Default idle timeout of a connection, milliseconds.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default keep-alive interval, milliseconds (well under the idle timeout).
pub const KEEP_ALIVE_MS_DEFAULT: u64 = 5_000;
/// Default most credit a consumer may hold (items the server may send unasked).
pub const SUBSCRIPTION_CREDIT_MAX_DEFAULT: u32 = 10_000;
/// Largest frame a consumer sends up a subscription stream (credit, ack, nack, close).
pub(crate) const UP_FRAME_BYTES_MAX: u32 = 1024;
/// Time a stopping server gives its connections to see the close, milliseconds;
/// a peer that never answers (a half-open handshake) must not hold it longer.
const CLOSE_WAIT_MS: u64 = 1_000;
/// QUIC application error code of a refused stream.
pub(crate) const STREAM_REFUSED: u32 = 1;
/// QUIC application error code of a connection whose certificate names no identity.
const IDENTITY_REFUSED: u32 = 2;
/// QUIC application error code of a server shutdown.
const SHUTDOWN_CODE: u32 = 0;

/// How a [`Server`] listens and what it bounds.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port ([`Server::local_addr`] tells which).
    pub listen: SocketAddr,
    /// Identity and client CA.
    pub tls: ServerTls,
    /// Largest frame body, bytes.
    pub frame_bytes_max: u32,
    /// Streams (request streams and subscriptions) one connection may have
    /// open at once, and requests it may have in flight over all its request streams.
    pub streams_per_connection_max: u32,
    /// Connections served at once; more are refused (and so are those whose
    /// flow-control windows no longer fit the memory budget).
    pub connections_max: u32,
    /// A connection without traffic for this long is closed, milliseconds.
    pub idle_timeout_ms: u64,
    /// Keep-alive interval, milliseconds.
    pub keep_alive_ms: u64,
    /// Time a shutdown waits for requests in flight, milliseconds.
    pub shutdown_grace_ms: u64,
    /// Most credit a consumer may hold; grants past it are capped.
    pub subscription_credit_max: u32,
    /// The rules each connection's identity (its certificate's name) is held
    /// to; `None` serves every connection without a check.
    pub access: Option<Arc<Gatekeeper>>,
    /// Server-wide byte budget: connections' QUIC windows (derived from
    /// it), request frames being received or served, answers and deliveries
    /// being sent (see [`MemoryBudget`]). At least
    /// [`memory_min_bytes`](crate::memory_min_bytes) of `frame_bytes_max`.
    pub memory_max_bytes: u64,
    /// A budget shared with other parts of the process (a proxy's relay
    /// queues, a store's subscription buffers); when set, it is the server's budget and `memory_max_bytes`
    /// is not read.
    pub budget: Option<Arc<MemoryBudget>>,
    /// What this server is, for the side named by its refusals (`Overloaded`).
    pub side: Side,
}

impl ServerConfig {
    /// The shipped limits, listening on `listen`.
    pub fn new(listen: SocketAddr, tls: ServerTls) -> Self {
        let limits = Limits::DEFAULT;
        ServerConfig {
            listen,
            tls,
            frame_bytes_max: limits.frame_bytes_max,
            streams_per_connection_max: limits.connection_in_flight_max,
            connections_max: limits.connections_max,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            keep_alive_ms: KEEP_ALIVE_MS_DEFAULT,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
            subscription_credit_max: SUBSCRIPTION_CREDIT_MAX_DEFAULT,
            access: None,
            memory_max_bytes: MEMORY_MAX_BYTES_DEFAULT,
            budget: None,
            side: Side::Worker,
        }
    }
}

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS configuration was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A limit of the configuration is out of range.
    #[error("invalid server configuration: {0}")]
    Config(String),
}

/// A bound server, not yet serving. [`Server::run`] serves it.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    connections_max: u32,
    /// Bytes of a connection's flow-control windows (receive and send).
    windows_bytes: u64,
    streams_per_connection_max: u32,
    shutdown_grace: Duration,
}

/// What every connection and stream task of a server reads.
pub(crate) struct Shared {
    pub(crate) gater: BoxGater,
    pub(crate) frame_bytes_max: u32,
    pub(crate) subscription_credit_max: u32,
    access: Option<Arc<Gatekeeper>>,
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) side: Side,
}

impl Shared {
    /// What one connection's streams read: with access rules, the gater
    /// guarded for the identity of the peer's certificate (`None` if it has none).
    fn for_peer(self: &Arc<Self>, connection: &quinn::Connection) -> Option<Arc<Shared>> {
        let Some(keeper) = &self.access else {
            return Some(Arc::clone(self));
        };
        let identity = crate::identity::peer_identity(connection)?;
        Some(Arc::new(Shared {
            gater: Arc::new(keeper.guard(Arc::clone(&self.gater), identity)),
            frame_bytes_max: self.frame_bytes_max,
            subscription_credit_max: self.subscription_credit_max,
            access: None,
            budget: Arc::clone(&self.budget),
            side: self.side,
        }))
    }
}

impl Shared {
    /// Writes answer `bytes`, counted against the budget (waiting for room)
    /// until QUIC has taken them.
    pub(crate) async fn write_counted(
        &self,
        send: &mut quinn::SendStream,
        bytes: &[u8],
    ) -> Result<(), quinn::WriteError> {
        // `Server::bind` refuses a budget that cannot hold a frame and the
        // answers gathered with it, so this reservation is never refused.
        let _held = self
            .budget
            .reserve(bytes.len() as u64, self.side)
            .await
            .ok();
        send.write_all(bytes).await
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("frame_bytes_max", &self.frame_bytes_max)
            .finish_non_exhaustive()
    }
}

/// Serves `gater` on `config.listen` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve(
    config: ServerConfig,
    gater: impl Gater,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    Server::bind(config, gater)?.run(shutdown).await;
    Ok(())
}

impl Server {
    /// Binds the address and prepares to serve `gater`. Needs a tokio runtime.
    pub fn bind(config: ServerConfig, gater: impl Gater) -> Result<Server, ServeError> {
        if config.streams_per_connection_max == 0 || config.connections_max == 0 {
            return Err(ServeError::Config(
                "streams_per_connection_max and connections_max must be at least 1".into(),
            ));
        }
        let mut transport = transport_config(
            config.idle_timeout_ms,
            config.keep_alive_ms,
            config.streams_per_connection_max,
        )
        .map_err(ServeError::Config)?;
        let budget = config
            .budget
            .clone()
            .unwrap_or_else(|| MemoryBudget::new(config.memory_max_bytes));
        let memory_max_bytes = budget.max_bytes();
        let memory_min = memory_min_bytes(config.frame_bytes_max);
        if memory_max_bytes < memory_min {
            return Err(ServeError::Config(format!(
                "memory_max_bytes {memory_max_bytes} cannot hold frames of frame_bytes_max {}: at least {memory_min}",
                config.frame_bytes_max
            )));
        }
        let (connection_window, stream_window) =
            receive_windows(memory_max_bytes, config.connections_max);
        let varint = |v: u64| {
            quinn::VarInt::from_u64(v).map_err(|e| ServeError::Config(format!("window {v}: {e}")))
        };
        transport
            .receive_window(varint(connection_window)?)
            .stream_receive_window(varint(stream_window)?)
            .send_window(connection_window);
        let quinn_config = config.tls.quinn_config(Arc::new(transport))?;
        let endpoint = quinn::Endpoint::server(quinn_config, config.listen).map_err(|source| {
            ServeError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        Ok(Server {
            endpoint,
            shared: Arc::new(Shared {
                gater: Arc::new(gater),
                frame_bytes_max: config.frame_bytes_max,
                subscription_credit_max: config.subscription_credit_max.max(1),
                access: config.access,
                budget,
                side: config.side,
            }),
            connections_max: config.connections_max,
            windows_bytes: WINDOWS_PER_CONNECTION * connection_window,
            streams_per_connection_max: config.streams_per_connection_max,
            shutdown_grace: Duration::from_millis(config.shutdown_grace_ms),
        })
    }

    /// The server's memory budget (for its accounting: in use, peak).
    pub fn budget(&self) -> Arc<MemoryBudget> {
        Arc::clone(&self.shared.budget)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound UDP socket always has a local address.
        self.endpoint
            .local_addr()
            .expect("a bound endpoint has a local address")
    }

    /// Serves until `shutdown` resolves; then stops accepting, ends
    /// subscriptions with `End(Shutdown)`, lets requests in flight finish
    /// within the grace period and closes every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Every task holds a sender; the channel closes when the last task ends.
        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
        let connections = Arc::new(Semaphore::new(self.connections_max as usize));
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                () = &mut shutdown => break,
                incoming = self.endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let Some(admitted) = self.admit(&connections, &incoming) else {
                incoming.refuse();
                continue;
            };
            let task = Connection {
                shared: Arc::clone(&self.shared),
                stop: stop_rx.clone(),
                drain: drain_tx.clone(),
                in_flight: Arc::new(Semaphore::new(self.streams_per_connection_max as usize)),
                wait_slot: Arc::new(Semaphore::new(1)),
            };
            tokio::spawn(async move {
                let _admitted = admitted;
                task.run(incoming).await;
            });
        }
        tracing::info!("shutting down: no new connections or streams");
        self.endpoint.set_server_config(None);
        let _ = stop_tx.send(true);
        drop(drain_tx);
        if tokio::time::timeout(self.shutdown_grace, drain_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: closing connections with requests in flight");
        }
        self.endpoint.close(SHUTDOWN_CODE.into(), b"shutdown");
        let close_wait = Duration::from_millis(CLOSE_WAIT_MS);
        let _ = tokio::time::timeout(close_wait, self.endpoint.wait_idle()).await;
    }
}

impl Server {
    /// Admits a new connection: a place under `connections_max` and its
    /// flow-control windows reserved from the budget, both held for its
    /// life; `None` (logged) when either is full.
    fn admit(
        &self,
        connections: &Arc<Semaphore>,
        incoming: &quinn::Incoming,
    ) -> Option<(OwnedSemaphorePermit, BudgetPermit)> {
        let remote = incoming.remote_address();
        let Ok(place) = Arc::clone(connections).try_acquire_owned() else {
            tracing::warn!(%remote, "connection limit reached: refused");
            return None;
        };
        match self
            .shared
            .budget
            .try_reserve_windows(self.windows_bytes, self.shared.side)
        {
            Ok(windows) => Some((place, windows)),
            Err(e) => {
                tracing::warn!(%remote, "connection refused: its windows do not fit: {e}");
                None
            }
        }
    }
}

/// Resolves once the server is shutting down (or gone).
pub(crate) async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One connection's accept loop.
struct Connection {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
    /// One permit per request in flight on the connection.
    in_flight: Arc<Semaphore>,
    /// The one frame of the connection that may wait for memory.
    wait_slot: Arc<Semaphore>,
}

impl Connection {
    async fn run(mut self, incoming: quinn::Incoming) {
        // A handshake that stalls must not hold up a shutdown.
        let handshake = tokio::select! {
            () = stopping(&mut self.stop) => return,
            handshake = incoming => handshake,
        };
        let connection = match handshake {
            Ok(connection) => connection,
            Err(e) => {
                tracing::debug!("handshake failed: {e}");
                return;
            }
        };
        let Some(shared) = self.shared.for_peer(&connection) else {
            tracing::warn!(remote = %connection.remote_address(), "peer certificate names no identity: refused");
            connection.close(IDENTITY_REFUSED.into(), b"certificate names no identity");
            return;
        };
        loop {
            let accepted = tokio::select! {
                () = stopping(&mut self.stop) => return,
                accepted = connection.accept_bi() => accepted,
            };
            let Ok((send, recv)) = accepted else { return };
            let stream = Stream {
                shared: Arc::clone(&shared),
                send,
                recv,
                wait_slot: Arc::clone(&self.wait_slot),
            };
            let (stop, drain) = (self.stop.clone(), self.drain.clone());
            let in_flight = Arc::clone(&self.in_flight);
            tokio::spawn(async move {
                let _drain = drain;
                stream.run(in_flight, stop).await;
            });
        }
    }
}

/// One request or subscription stream.
pub(crate) struct Stream {
    pub(crate) shared: Arc<Shared>,
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    /// Its connection's one permit to wait for memory (see `FrameReader`).
    pub(crate) wait_slot: Arc<Semaphore>,
}

impl Stream {
    /// Reads the first frame: a `Subscribe` makes the stream a subscription,
    /// anything else makes it a request stream.
    async fn run(mut self, in_flight: Arc<Semaphore>, stop: watch::Receiver<bool>) {
        let mut reader = FrameReader::with_budget(
            self.shared.frame_bytes_max,
            Arc::clone(&self.shared.budget),
            self.shared.side,
            Arc::clone(&self.wait_slot),
        );
        let first = match reader
            .next_owned(&mut self.recv, requests::read_request)
            .await
        {
            Ok(Some(first)) => first,
            Ok(None) => Read::Refused {
                id: 0,
                error: Error::Protocol("stream ended before a request".into()),
                fatal: true,
            },
            Err(ReadFailure::Stream(e)) => {
                tracing::debug!("request stream failed: {e}");
                return;
            }
            Err(ReadFailure::Overloaded { error, body_prefix }) => {
                let (id, error, fatal) = requests::overloaded(error, &body_prefix);
                Read::Refused { id, error, fatal }
            }
            Err(failure) => Read::Refused {
                id: 0,
                error: failure.into(),
                fatal: true,
            },
        };
        let first = match first {
            Read::Request { header, request } if request.kind() == RequestKind::Subscribe => {
                match request.decode() {
                    Ok(Request::Subscribe {
                        store,
                        key,
                        options,
                    }) => {
                        // A subscription's first frame is small and read: its bytes are returned.
                        drop(reader.take_permit());
                        let sub = subscription::Serve {
                            stream: self,
                            reader: FrameReader::exact(UP_FRAME_BYTES_MAX),
                            id: header.id,
                            store,
                            key,
                        };
                        return sub.run(options, stop).await;
                    }
                    Ok(other) => Read::Refused {
                        id: header.id,
                        error: Error::Protocol(format!("{} read as a subscribe", other.method())),
                        fatal: true,
                    },
                    Err(e) => Read::Refused {
                        id: header.id,
                        error: e.into(),
                        fatal: false,
                    },
                }
            }
            first => first,
        };
        requests::serve(self, reader, first, in_flight, stop).await
    }

    /// Writes one answer frame.
    pub(crate) async fn respond(&mut self, id: u64, result: Result<Response, Error>) {
        let mut frame = Vec::new();
        requests::push_answer(&mut frame, id, result, self.shared.frame_bytes_max);
        if let Err(e) = self.shared.write_counted(&mut self.send, &frame).await {
            tracing::debug!("response not delivered: {e}");
        }
    }
}
