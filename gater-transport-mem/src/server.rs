//! The server side: a [`Gater`] behind the in-process link.

use std::fmt;
use std::sync::Arc;

use gater_core::access::Gatekeeper;
use gater_core::wire::{
    FrameError, Request, RequestEnvelope, Response, ResponseEnvelope, SubscriptionDown,
    SubscriptionUp, FRAME_BYTES_MAX_DEFAULT, PROTOCOL_VERSION,
};
use gater_core::{BoxGater, Error, Gater, Limits, Side};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::carry::Codec;
use crate::client::{MemClient, MemClientOptions, MemLink};
use crate::subscription::{self, UP_CHANNEL_LEN};

/// Items a consumer may have in transit by default (its credit).
pub const SUBSCRIPTION_CREDIT_DEFAULT: u32 = 256;

/// How a [`MemServer`] behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOptions {
    /// Round-trip every message through postcard frames, as the wire would.
    pub codec: bool,
    /// Largest frame body in codec mode, bytes.
    pub frame_bytes_max: u32,
    /// Requests the server works on at once; more wait for a slot.
    pub in_flight_max: u32,
    /// Items a consumer may have in transit (granted credit and channel length).
    pub subscription_credit: u32,
}

impl Default for MemOptions {
    fn default() -> Self {
        MemOptions {
            codec: false,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            in_flight_max: Limits::DEFAULT.connection_in_flight_max,
            subscription_credit: SUBSCRIPTION_CREDIT_DEFAULT,
        }
    }
}

/// A [`Gater`] served in process. Cloning shares the server.
#[derive(Clone)]
pub struct MemServer {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) gater: BoxGater,
    pub(crate) options: MemOptions,
    pub(crate) codec: Codec,
    in_flight: Arc<Semaphore>,
    pub(crate) breaker: Breaker,
    access: Option<Arc<Gatekeeper>>,
}

/// A subscription opened on the server: the consumer's ends of its two channels.
pub(crate) struct Channels {
    pub(crate) down: mpsc::Receiver<SubscriptionDown>,
    pub(crate) up: mpsc::Sender<SubscriptionUp>,
}

/// Serves `gater` in process with the default [`MemOptions`].
pub fn serve(gater: impl Gater) -> MemServer {
    serve_with(gater, MemOptions::default())
}

/// Serves `gater` in process.
pub fn serve_with(gater: impl Gater, options: MemOptions) -> MemServer {
    serve_inner(Arc::new(gater), options, None)
}

/// Serves `gater` in process, holding every client to `access` under the
/// identity it was made with ([`MemServer::client_as`]); a client made
/// without one has the empty identity.
pub fn serve_guarded(gater: impl Gater, options: MemOptions, access: Arc<Gatekeeper>) -> MemServer {
    serve_inner(Arc::new(gater), options, Some(access))
}

fn serve_inner(gater: BoxGater, options: MemOptions, access: Option<Arc<Gatekeeper>>) -> MemServer {
    let options = MemOptions {
        in_flight_max: options.in_flight_max.max(1),
        subscription_credit: options.subscription_credit.max(1),
        ..options
    };
    MemServer {
        inner: Arc::new(Inner {
            gater,
            codec: Codec {
                enabled: options.codec,
                frame_bytes_max: options.frame_bytes_max,
            },
            in_flight: Arc::new(Semaphore::new(options.in_flight_max as usize)),
            options,
            breaker: Breaker::new(),
            access,
        }),
    }
}

impl MemServer {
    /// A new client with default options: no deadline, no faults.
    pub fn client(&self) -> MemClient {
        self.client_with(MemClientOptions::default())
    }

    /// A new client with its own connection, deadline and fault knobs.
    pub fn client_with(&self, options: MemClientOptions) -> MemClient {
        MemClient::new(MemLink::new(self.clone(), options, None))
    }

    /// A new client that the server sees as `identity`, as a QUIC server
    /// sees the name of a client's certificate (see [`serve_guarded`]).
    pub fn client_as(&self, identity: &str, options: MemClientOptions) -> MemClient {
        MemClient::new(MemLink::new(self.clone(), options, Some(identity.into())))
    }

    /// What a client of `identity` reaches: the gater, guarded when the
    /// server holds clients to access rules.
    fn gater_for(&self, identity: Option<&Arc<str>>) -> BoxGater {
        let gater = Arc::clone(&self.inner.gater);
        match &self.inner.access {
            Some(keeper) => {
                Arc::new(keeper.guard(gater, identity.cloned().unwrap_or_else(|| "".into())))
            }
            None => gater,
        }
    }

    /// Crashes (`true`) or restores (`false`) the server. While down, requests
    /// in flight and new ones fail with a retryable
    /// [`Error::Unavailable`] and subscriptions end with `Failed`; the
    /// `Gater` behind keeps its state, as a restarted worker keeps its disk.
    pub fn set_down(&self, down: bool) {
        if down {
            tracing::debug!("mem server down");
        }
        self.inner.breaker.set_down(down);
    }

    /// Whether the server is down.
    pub fn is_down(&self) -> bool {
        self.inner.breaker.is_down()
    }

    /// The options it was served with.
    pub fn options(&self) -> &MemOptions {
        &self.inner.options
    }

    /// Answers one request, as a server answers a request stream.
    pub(crate) async fn handle(
        &self,
        envelope: RequestEnvelope,
        identity: Option<&Arc<str>>,
    ) -> Result<ResponseEnvelope, Error> {
        let id = envelope.id;
        let result = self.answer(envelope, self.gater_for(identity)).await;
        self.inner
            .codec
            .carry_response(ResponseEnvelope { id, result })
    }

    async fn answer(&self, envelope: RequestEnvelope, gater: BoxGater) -> Result<Response, Error> {
        let epoch = self.inner.breaker.epoch().ok_or_else(down)?;
        check_version(&envelope)?;
        let inner = Arc::clone(&self.inner);
        let arrived = Instant::now();
        let work = async move {
            // The semaphore lives in `inner` and is never closed.
            let permit = Arc::clone(&inner.in_flight).acquire_owned().await;
            // Time spent queued counts against the caller's deadline: work
            // that became late while it waited is refused, not started.
            let within = envelope
                .within()
                .map(|d| d.saturating_sub(arrived.elapsed()));
            let (tx, rx) = oneshot::channel();
            // Spawned: a caller that gives up does not cancel what the server started.
            tokio::spawn(async move {
                let _permit = permit;
                let call = gater.call(envelope.request, within);
                let _ = tx.send(gater_core::trace::scope(envelope.trace, call).await);
            });
            rx.await
                .unwrap_or_else(|_| Err(Error::unavailable(Side::Worker, "request task failed")))
        };
        tokio::select! {
            result = work => result,
            () = self.inner.breaker.tripped(epoch) => Err(down()),
        }
    }

    /// Attaches a consumer, as a server answers a subscription stream's first frame.
    pub(crate) async fn open_subscription(
        &self,
        envelope: RequestEnvelope,
        identity: Option<&Arc<str>>,
    ) -> (Result<ResponseEnvelope, Error>, Option<Channels>) {
        let id = envelope.id;
        let (result, channels) = match self.attach(envelope, self.gater_for(identity)).await {
            Ok((consumer, channels)) => (Ok(Response::Subscribed(consumer)), Some(channels)),
            Err(e) => (Err(e), None),
        };
        (
            self.inner
                .codec
                .carry_response(ResponseEnvelope { id, result }),
            channels,
        )
    }

    async fn attach(
        &self,
        envelope: RequestEnvelope,
        gater: BoxGater,
    ) -> Result<(gater_core::ConsumerId, Channels), Error> {
        let epoch = self.inner.breaker.epoch().ok_or_else(down)?;
        check_version(&envelope)?;
        let Request::Subscribe {
            store,
            key,
            options,
        } = envelope.request
        else {
            return Err(Error::Protocol(format!(
                "a subscription stream must start with subscribe, not {}",
                envelope.request.method()
            )));
        };
        let attach = gater.subscribe(&store, key.clone(), options);
        let sub = tokio::select! {
            sub = attach => sub?,
            () = self.inner.breaker.tripped(epoch) => return Err(down()),
        };
        let consumer = sub.consumer();
        let credit = self.inner.options.subscription_credit as usize;
        let (down_tx, down_rx) = mpsc::channel(credit);
        let (up_tx, up_rx) = mpsc::channel(UP_CHANNEL_LEN);
        let pump = subscription::Pump {
            server: Arc::clone(&self.inner),
            gater,
            store,
            key,
            consumer,
            epoch,
        };
        tokio::spawn(pump.run(sub, down_tx, up_rx));
        Ok((
            consumer,
            Channels {
                down: down_rx,
                up: up_tx,
            },
        ))
    }
}

impl fmt::Debug for MemServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemServer")
            .field("options", &self.inner.options)
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

fn check_version(envelope: &RequestEnvelope) -> Result<(), Error> {
    if envelope.version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(envelope.version).into());
    }
    Ok(())
}

/// The error of a crashed server.
pub(crate) fn down() -> Error {
    Error::unavailable(Side::Worker, "server down")
}
