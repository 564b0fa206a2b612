//! The QUIC client: a [`Link`] that keeps one connection to one of several
//! server addresses, reconnecting with back-off when it is lost, and spreads
//! its requests over a few long-lived request streams of that connection
//! ([`REQUEST_STREAMS`], round robin; see `mux`), which the server answers
//! on a task each.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use gater_core::dispatch::{Link, RemoteGater};
use gater_core::routing::retry_is_safe;
use gater_core::wire::{self, EncodedRequest, Request, RequestEnvelope, Response};
use gater_core::{Error, Limits, Side, StoreId, SubscribeOptions, Subscription, SubscriptionKey};
use tokio::time::Instant;

use crate::dialer::{Backoff, Dialer};
use crate::frame::lost;
use crate::mux::{Mux, Outcome};
use crate::tls::ClientTls;
use crate::{subscription, transport_config};

/// Default deadline of a call, milliseconds.
pub const DEADLINE_MS_DEFAULT: u32 = 30_000;
/// Default time a connection attempt may take, milliseconds.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default delay before a connection attempt races the next address, milliseconds.
pub const RACE_STAGGER_MS_DEFAULT: u64 = 150;
/// Default first back-off after every address failed, milliseconds.
pub const BACKOFF_MIN_MS_DEFAULT: u64 = 50;
/// Default longest back-off, milliseconds.
pub const BACKOFF_MAX_MS_DEFAULT: u64 = 2_000;
/// Default credit of a consumer: items in transit to it.
pub const SUBSCRIPTION_CREDIT_DEFAULT: u32 = 256;
/// Default idle timeout of a client's connection, milliseconds.
///
/// Short on purpose: it is how fast a dead server is noticed. A server that
/// was killed, or restarted on the same address and lost the connection's
/// state, never answers on it again, so the client notices only when the
/// connection idles out; its requests in flight then fail over (see
/// [`QuicLink`]). Keep-alives every [`CLIENT_KEEP_ALIVE_MS_DEFAULT`] make a
/// live server answer in the meantime (even while a slow request runs), so
/// only a server silent for this long is given up. quinn never times out
/// sooner than three probe timeouts, so a slow path stretches it by itself.
pub const CLIENT_IDLE_TIMEOUT_MS_DEFAULT: u64 = 600;
/// Default keep-alive interval of a client's connection, milliseconds: a
/// third of [`CLIENT_IDLE_TIMEOUT_MS_DEFAULT`], so two keep-alives in a row
/// may go unanswered before the connection idles out.
pub const CLIENT_KEEP_ALIVE_MS_DEFAULT: u64 = 200;
/// Streams a client lets the server open (it opens none).
const PEER_STREAMS_MAX: u32 = 0;
/// Request streams a call tries: a stream found closed as the call starts
/// is replaced once.
const STREAM_ATTEMPTS: usize = 2;
/// Request streams a client spreads its requests over on one connection
/// (round robin), so the server answers them on as many tasks. Fewer when
/// the server allows fewer streams at once: a stream it has no credit for
/// is not waited for while another is open.
pub const REQUEST_STREAMS: usize = 4;
/// Times a request lost with its connection is sent again (on a new
/// connection, other addresses first), when that is safe.
const RESENDS_MAX: u32 = 1;

/// How a round of connection attempts ended.
struct Race {
    /// The address (index) that connected first, and its connection.
    winner: Option<(usize, quinn::Connection)>,
    /// Addresses that failed or had not answered when another connected.
    failed: Vec<usize>,
    /// The last failure, for the error when none connected.
    last_error: String,
}

/// A [`Gater`](gater_core::Gater) reached over QUIC. Transport controls are on [`QuicClient::link`].
pub type QuicClient = RemoteGater<QuicLink>;

/// How a client connects and waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// Milliseconds a call waits for its answer (connecting included) before
    /// [`Error::DeadlineExceeded`]; `None` waits as long as it takes.
    pub deadline_ms: Option<u32>,
    /// Time one connection attempt may take, milliseconds.
    pub connect_timeout_ms: u64,
    /// Time an attempt has before the next address is dialled too (the first
    /// handshake to complete wins), milliseconds.
    pub race_stagger_ms: u64,
    /// First wait after every address failed, doubled per failed round, and
    /// first time a failed address is dialled after the others, doubled per
    /// failure, milliseconds.
    pub backoff_min_ms: u64,
    /// Longest wait between rounds of connection attempts, milliseconds.
    pub backoff_max_ms: u64,
    /// Largest frame body, bytes.
    pub frame_bytes_max: u32,
    /// A connection without traffic for this long is closed, milliseconds.
    pub idle_timeout_ms: u64,
    /// Keep-alive interval, milliseconds.
    pub keep_alive_ms: u64,
    /// Items a consumer may have in transit (its credit).
    pub subscription_credit: u32,
    /// Requests in flight on the connection at once; more calls wait their turn.
    pub in_flight_max: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            server_name: "localhost".into(),
            deadline_ms: Some(DEADLINE_MS_DEFAULT),
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            race_stagger_ms: RACE_STAGGER_MS_DEFAULT,
            backoff_min_ms: BACKOFF_MIN_MS_DEFAULT,
            backoff_max_ms: BACKOFF_MAX_MS_DEFAULT,
            frame_bytes_max: Limits::DEFAULT.frame_bytes_max,
            idle_timeout_ms: CLIENT_IDLE_TIMEOUT_MS_DEFAULT,
            keep_alive_ms: CLIENT_KEEP_ALIVE_MS_DEFAULT,
            subscription_credit: SUBSCRIPTION_CREDIT_DEFAULT,
            in_flight_max: Limits::DEFAULT.connection_in_flight_max,
        }
    }
}

/// Connects to the first reachable of `addresses` and returns a client.
/// No address reachable → a retryable [`Error::Unavailable`].
pub async fn connect(
    addresses: &[SocketAddr],
    tls: ClientTls,
    options: ClientOptions,
) -> Result<QuicClient, Error> {
    let link = QuicLink::new(addresses, tls, options)?;
    link.connection().await?;
    Ok(RemoteGater::new(link))
}

/// A client's connection to a server (or its fail-over addresses).
#[derive(Debug)]
pub struct QuicLink {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    addresses: Vec<SocketAddr>,
    options: ClientOptions,
    /// The connection in use and the index of its address; read on every
    /// call, so a plain mutex held briefly.
    current: Mutex<Option<(usize, quinn::Connection)>>,
    /// Serialises dialling, and remembers where and when to dial next.
    dialer: tokio::sync::Mutex<Dialer>,
    /// The request streams in use, [`REQUEST_STREAMS`] slots; read on every call.
    muxes: Mutex<[Option<Arc<Mux>>; REQUEST_STREAMS]>,
    /// The slot the next call starts from.
    next_stream: AtomicUsize,
    /// Serialises opening a request stream.
    opening: tokio::sync::Mutex<()>,
    /// One permit per request in flight.
    in_flight: tokio::sync::Semaphore,
}

impl QuicLink {
    /// A link that connects on first use. Needs a tokio runtime.
    pub fn new(
        addresses: &[SocketAddr],
        tls: ClientTls,
        options: ClientOptions,
    ) -> Result<Self, Error> {
        if addresses.is_empty() {
            return Err(Error::invalid("no server address given"));
        }
        let transport = transport_config(
            options.idle_timeout_ms,
            options.keep_alive_ms,
            PEER_STREAMS_MAX,
        )
        .map_err(Error::InvalidArgument)?;
        let config = tls
            .quinn_config(Arc::new(transport))
            .map_err(|e| Error::invalid(e.to_string()))?;
        let bind: SocketAddr = if addresses.iter().all(SocketAddr::is_ipv4) {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| Error::unavailable(Side::Client, format!("cannot open a socket: {e}")))?;
        Ok(QuicLink {
            endpoint,
            config,
            addresses: addresses.to_vec(),
            current: Mutex::new(None),
            dialer: tokio::sync::Mutex::new(Dialer::new(
                addresses.len(),
                Backoff {
                    min_ms: options.backoff_min_ms,
                    max_ms: options.backoff_max_ms,
                },
            )),
            muxes: Mutex::new(Default::default()),
            next_stream: AtomicUsize::new(0),
            opening: tokio::sync::Mutex::new(()),
            in_flight: tokio::sync::Semaphore::new(options.in_flight_max.max(1) as usize),
            options,
        })
    }

    /// The address of the connection in use, if one is up.
    pub fn connected_to(&self) -> Option<SocketAddr> {
        self.live().map(|c| c.remote_address())
    }

    /// Request streams open on the connection in use (at most [`REQUEST_STREAMS`]).
    pub fn request_streams(&self) -> usize {
        self.lock_muxes()
            .iter()
            .flatten()
            .filter(|m| !m.is_closed())
            .count()
    }

    /// Closes the connection and the local socket; later calls fail.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"client closed");
    }

    fn live(&self) -> Option<quinn::Connection> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .map(|(_, c)| c)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// The address index of the connection in use once it has closed, which
    /// is then forgotten.
    fn take_closed(&self) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match current.as_ref() {
            Some((index, c)) if c.close_reason().is_some() => {
                let index = *index;
                *current = None;
                Some(index)
            }
            _ => None,
        }
    }

    /// The live connection, dialling (with back-off, racing the addresses) if there is none.
    async fn connection(&self) -> Result<quinn::Connection, Error> {
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        let mut dialer = self.dialer.lock().await;
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        // A connection that closed under us (its server went silent, went
        // away or reset it) counts against its address: others are dialled first.
        if let Some(index) = self.take_closed() {
            dialer.failed(index, Instant::now());
        }
        if let Some(at) = dialer.retry_at {
            tokio::time::sleep_until(at).await;
        }
        let order = dialer.order(Instant::now());
        let race = self.race(&order).await;
        let now = Instant::now();
        for &index in &race.failed {
            dialer.failed(index, now);
        }
        if let Some((index, connection)) = race.winner {
            dialer.connected(index);
            *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((index, connection.clone()));
            return Ok(connection);
        }
        let backoff = dialer.round_failed(now);
        Err(Error::unavailable(
            Side::Worker,
            format!(
                "no server reachable (last: {}); next attempt in {backoff:?}",
                race.last_error
            ),
        ))
    }

    /// Dials the addresses of `order` (indexes), each
    /// [`ClientOptions::race_stagger_ms`] after the one before or as soon as
    /// it fails; the first handshake to complete wins. Addresses that failed,
    /// or were still dialling when another won, are reported as failed.
    async fn race(&self, order: &[usize]) -> Race {
        let stagger = Duration::from_millis(self.options.race_stagger_ms);
        let mut attempts = FuturesUnordered::new();
        let mut pending = order.iter().copied();
        let mut dialling = Vec::new();
        let mut race = Race {
            winner: None,
            failed: Vec::new(),
            last_error: String::new(),
        };
        loop {
            if attempts.is_empty() {
                let Some(index) = pending.next() else {
                    return race;
                };
                dialling.push(index);
                attempts.push(self.dial(index));
            }
            let more = dialling.len() < order.len();
            tokio::select! {
                Some((index, result)) = attempts.next() => {
                    dialling.retain(|&i| i != index);
                    match result {
                        Ok(connection) => {
                            race.winner = Some((index, connection));
                            race.failed.extend(dialling);
                            return race;
                        }
                        Err(e) => {
                            race.last_error = format!("{}: {e}", self.addresses[index]);
                            race.failed.push(index);
                        }
                    }
                }
                () = tokio::time::sleep(stagger), if more => {
                    if let Some(index) = pending.next() {
                        dialling.push(index);
                        attempts.push(self.dial(index));
                    }
                }
            }
        }
    }

    async fn dial(&self, index: usize) -> (usize, Result<quinn::Connection, String>) {
        let address = self.addresses[index];
        let connecting = match self.endpoint.connect_with(
            self.config.clone(),
            address,
            &self.options.server_name,
        ) {
            Ok(connecting) => connecting,
            Err(e) => return (index, Err(e.to_string())),
        };
        let timeout = Duration::from_millis(self.options.connect_timeout_ms);
        let result = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no handshake within {timeout:?}")),
        };
        (index, result)
    }

    async fn within_deadline<T>(
        &self,
        deadline_ms: Option<u32>,
        work: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let Some(ms) = deadline_ms else {
            return work.await;
        };
        tokio::time::timeout(Duration::from_millis(ms.into()), work)
            .await
            .unwrap_or(Err(Error::DeadlineExceeded { side: Side::Client }))
    }

    /// The open request stream of the next slot (round robin), opening it
    /// (and connecting) if there is none; another open stream when the
    /// server has no credit for one more yet.
    async fn mux(&self) -> Result<Arc<Mux>, Error> {
        let slot = self.next_stream.fetch_add(1, Ordering::Relaxed) % REQUEST_STREAMS;
        if let Some(mux) = self.open_mux(slot) {
            return Ok(mux);
        }
        let _opening = self.opening.lock().await;
        if let Some(mux) = self.open_mux(slot) {
            return Ok(mux);
        }
        let connection = self.connection().await?;
        let opened = match connection.open_bi().now_or_never() {
            Some(opened) => opened,
            None => match self.any_open_mux() {
                Some(mux) => return Ok(mux),
                None => connection.open_bi().await,
            },
        };
        let (send, recv) = opened.map_err(lost)?;
        let mux = Arc::new(Mux::start(
            connection,
            send,
            recv,
            self.options.in_flight_max as usize,
            self.options.frame_bytes_max,
        ));
        self.lock_muxes()[slot] = Some(Arc::clone(&mux));
        Ok(mux)
    }

    fn lock_muxes(&self) -> std::sync::MutexGuard<'_, [Option<Arc<Mux>>; REQUEST_STREAMS]> {
        self.muxes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open_mux(&self, slot: usize) -> Option<Arc<Mux>> {
        self.lock_muxes()[slot]
            .as_ref()
            .filter(|m| !m.is_closed())
            .cloned()
    }

    fn any_open_mux(&self) -> Option<Arc<Mux>> {
        self.lock_muxes()
            .iter()
            .flatten()
            .find(|m| !m.is_closed())
            .cloned()
    }

    /// Sends `envelope` and waits for its answer. A request lost with its
    /// connection gives that connection up; it is sent again (at most
    /// [`RESENDS_MAX`] times, on a new connection that tries the other
    /// addresses first) when there are other addresses and gater-core's
    /// `retry_is_safe` allows it for its class (reads, appends, idempotent
    /// writes), and is otherwise answered with the retryable `Unavailable`
    /// at once.
    async fn exchange(
        &self,
        mut deadline_ms: Option<u32>,
        mut request: EncodedRequest,
    ) -> Result<Response, Error> {
        let started = Instant::now();
        // The semaphore is never closed.
        let _permit = self.in_flight.acquire().await.map_err(lost)?;
        let mut unsent = 0;
        let mut resent = 0;
        loop {
            let mux = self.mux().await?;
            match mux.call(deadline_ms, request).await {
                Outcome::Answered(result) => return result,
                Outcome::Unsent(back) => {
                    unsent += 1;
                    if unsent >= STREAM_ATTEMPTS {
                        return Err(lost("request streams keep closing"));
                    }
                    request = back;
                }
                Outcome::Lost(error, back) => {
                    mux.give_up();
                    let safe = retry_is_safe(back.class(), &error);
                    if resent >= RESENDS_MAX || self.addresses.len() < 2 || !safe {
                        return Err(error);
                    }
                    resent += 1;
                    request = back;
                    // The server is told what is left of the caller's wait.
                    let spent = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
                    deadline_ms = deadline_ms.map(|ms| ms.saturating_sub(spent));
                    tracing::debug!(
                        method = request.kind().method(),
                        "request lost with its connection: sent again"
                    );
                }
            }
        }
    }
}

#[async_trait]
impl Link for QuicLink {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        let request = EncodedRequest::encode(&request)?;
        self.call_encoded(request, within).await
    }

    async fn call_encoded(
        &self,
        request: EncodedRequest,
        within: Option<Duration>,
    ) -> Result<Response, Error> {
        let deadline_ms = wire::deadline_ms(self.options.deadline_ms, within);
        self.within_deadline(deadline_ms, self.exchange(deadline_ms, request))
            .await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let request = Request::Subscribe {
            store: store.clone(),
            key,
            options,
        };
        let envelope = RequestEnvelope::new(request, self.options.deadline_ms);
        let open = async {
            let connection = self.connection().await?;
            let credit = self.options.subscription_credit.max(1);
            subscription::open(&connection, envelope, self.options.frame_bytes_max, credit).await
        };
        self.within_deadline(self.options.deadline_ms, open).await
    }
}
