//! The client side: a [`Link`] to a [`MemServer`] with its own connection,
//! deadline and fault knobs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use gater_core::dispatch::{Link, RemoteGater};
use gater_core::wire;
use gater_core::wire::{Request, RequestEnvelope, Response, ResponseEnvelope};
use gater_core::{Error, Side, StoreId, SubscribeOptions, Subscription, SubscriptionKey};
use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::faults::{Faults, Plan, Rng};
use crate::server::MemServer;
use crate::subscription::Consumer;

/// A [`Gater`](gater_core::Gater) reached through a [`MemServer`].
/// Transport controls are on [`MemClient::link`].
pub type MemClient = RemoteGater<MemLink>;

/// How a client talks to its server.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MemClientOptions {
    /// Milliseconds a call waits for its answer before
    /// [`Error::DeadlineExceeded`]; `None` waits as long as it takes.
    pub deadline_ms: Option<u32>,
    /// Faults injected into each request.
    pub faults: Faults,
    /// Seed of the generator that draws the faults.
    pub seed: u64,
}

/// One client's connection to a [`MemServer`].
#[derive(Debug)]
pub struct MemLink {
    server: MemServer,
    deadline_ms: Option<u32>,
    connection: Arc<Breaker>,
    faults: Mutex<(Faults, Rng)>,
    /// The id of the next request, as a request stream numbers them.
    next_id: AtomicU64,
    identity: Option<Arc<str>>,
}

/// What became of a request on the link.
enum Outcome {
    /// An answer (or the link's own failure) to return at once.
    Answer(Result<Response, Error>),
    /// The request or its answer vanished: the caller only learns it by waiting.
    Lost(&'static str),
}

impl MemLink {
    pub(crate) fn new(
        server: MemServer,
        options: MemClientOptions,
        identity: Option<Arc<str>>,
    ) -> Self {
        MemLink {
            identity,
            server,
            deadline_ms: options.deadline_ms,
            connection: Arc::new(Breaker::new()),
            faults: Mutex::new((options.faults, Rng::new(options.seed))),
            next_id: AtomicU64::new(1),
        }
    }

    /// Cuts (`false`) or restores (`true`) this client's connection. While
    /// cut, calls in flight and new ones fail with a retryable
    /// [`Error::Unavailable`] and subscriptions end with `Failed`.
    pub fn set_connected(&self, connected: bool) {
        self.connection.set_down(!connected);
    }

    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        !self.connection.is_down()
    }

    /// Replaces the fault knobs; the generator continues its sequence.
    pub fn set_faults(&self, faults: Faults) {
        self.lock_faults().0 = faults;
    }

    /// The fault knobs in force.
    pub fn faults(&self) -> Faults {
        self.lock_faults().0
    }

    /// The server this client talks to.
    pub fn server(&self) -> &MemServer {
        &self.server
    }

    fn lock_faults(&self) -> std::sync::MutexGuard<'_, (Faults, Rng)> {
        // The guarded data stays consistent whatever panicked while holding it.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn plan(&self) -> Plan {
        let mut guard = self.lock_faults();
        let (faults, rng) = &mut *guard;
        rng.plan(faults)
    }

    fn envelope(
        &self,
        request: Request,
        deadline_ms: Option<u32>,
    ) -> Result<RequestEnvelope, Error> {
        let mut envelope = RequestEnvelope::new(request, deadline_ms);
        envelope.id = self.next_id.fetch_add(1, Ordering::Relaxed).max(1);
        self.server.inner.codec.carry_request(envelope)
    }

    /// Runs `exchange` within the deadline and turns a loss into the error
    /// the caller sees once it stops waiting.
    async fn within_deadline<T>(
        &self,
        deadline_ms: Option<u32>,
        exchange: impl std::future::Future<Output = (Outcome, Option<T>)>,
    ) -> Result<(Response, Option<T>), Error> {
        let Some(deadline_ms) = deadline_ms else {
            return settle(exchange.await, None).await;
        };
        let deadline = Instant::now() + Duration::from_millis(deadline_ms.into());
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(outcome) => settle(outcome, Some(deadline)).await,
            Err(_) => Err(Error::DeadlineExceeded { side: Side::Client }),
        }
    }

    async fn exchange(&self, request: Request, deadline_ms: Option<u32>) -> (Outcome, Option<()>) {
        let Some(epoch) = self.connection.epoch() else {
            return (Outcome::Answer(Err(cut())), None);
        };
        let envelope = match self.envelope(request, deadline_ms) {
            Ok(envelope) => envelope,
            Err(e) => return (Outcome::Answer(Err(e)), None),
        };
        let plan = self.plan();
        let id = envelope.id;
        let deliver = async {
            pause(plan.delay_up_ms).await;
            if plan.drop_request {
                return Outcome::Lost("request");
            }
            let response = self.server.handle(envelope, self.identity.as_ref()).await;
            pause(plan.delay_down_ms).await;
            if plan.drop_response {
                return Outcome::Lost("response");
            }
            Outcome::Answer(response.and_then(|envelope| answer_to(id, envelope)))
        };
        tokio::select! {
            outcome = deliver => (outcome, None),
            () = self.connection.tripped(epoch) => (Outcome::Answer(Err(cut())), None),
        }
    }

    async fn open(&self, request: Request) -> (Outcome, Option<Consumer>) {
        let Some(epoch) = self.connection.epoch() else {
            return (Outcome::Answer(Err(cut())), None);
        };
        let envelope = match self.envelope(request, self.deadline_ms) {
            Ok(envelope) => envelope,
            Err(e) => return (Outcome::Answer(Err(e)), None),
        };
        let plan = self.plan();
        let id = envelope.id;
        let deliver = async {
            pause(plan.delay_up_ms).await;
            if plan.drop_request {
                return (Outcome::Lost("request"), None);
            }
            let (response, channels) = self
                .server
                .open_subscription(envelope, self.identity.as_ref())
                .await;
            pause(plan.delay_down_ms).await;
            if plan.drop_response {
                // Dropping the channels detaches the consumer on the server.
                return (Outcome::Lost("response"), None);
            }
            let consumer = channels.map(|channels| Consumer {
                down: channels.down,
                up: channels.up,
                codec: self.server.inner.codec,
                link: Arc::clone(&self.connection),
                epoch,
                consumed: 0,
                grant_batch: (self.server.options().subscription_credit / 4).max(1),
                done: false,
            });
            let outcome = Outcome::Answer(response.and_then(|answer| answer_to(id, answer)));
            (outcome, consumer)
        };
        tokio::select! {
            opened = deliver => opened,
            () = self.connection.tripped(epoch) => (Outcome::Answer(Err(cut())), None),
        }
    }
}

#[async_trait]
impl Link for MemLink {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        let deadline_ms = wire::deadline_ms(self.deadline_ms, within);
        let exchange = self.exchange(request, deadline_ms);
        let (response, _) = self.within_deadline(deadline_ms, exchange).await?;
        Ok(response)
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
        let (response, consumer) = self
            .within_deadline(self.deadline_ms, self.open(request))
            .await?;
        match (response, consumer) {
            (Response::Subscribed(id), Some(consumer)) => {
                Ok(consumer.start(id, self.server.options().subscription_credit))
            }
            (other, _) => Err(Error::Protocol(format!(
                "subscribe: unexpected response {other:?}"
            ))),
        }
    }
}

/// Turns an outcome into the caller's result: a loss is reported once the
/// caller's deadline has passed (at once without one).
async fn settle<T>(
    (outcome, extra): (Outcome, Option<T>),
    deadline: Option<Instant>,
) -> Result<(Response, Option<T>), Error> {
    match outcome {
        Outcome::Answer(result) => result.map(|response| (response, extra)),
        Outcome::Lost(what) => {
            if let Some(deadline) = deadline {
                tokio::time::sleep_until(deadline).await;
            }
            Err(Error::unavailable(
                Side::Worker,
                format!("{what} lost: no answer came"),
            ))
        }
    }
}

/// Waits `ms` of (possibly paused) tokio time; no yield at all for 0.
async fn pause(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// The error of a cut connection.
fn cut() -> Error {
    Error::unavailable(Side::Worker, "connection to the server failed")
}

/// The result of an answer, which must carry the id of the request `id` it answers.
fn answer_to(id: u64, answer: ResponseEnvelope) -> Result<Response, Error> {
    if answer.id != id {
        return Err(Error::Protocol(format!(
            "answer for request {} to request {id}",
            answer.id
        )));
    }
    answer.result
}
