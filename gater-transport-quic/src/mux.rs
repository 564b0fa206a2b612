//! A client's request stream: many requests in flight on one long-lived
//! bidirectional stream, answers matched to them by request id. A link
//! spreads its requests over a few of them per connection.
//!
//! A caller registers a waiter (getting the request id) and encodes its
//! frame straight into the stream's outbox, a buffer shared with the
//! writer. One writer task per stream takes every frame that is ready (the
//! whole outbox, swapped for its own spare buffer; woken by a first frame it
//! yields once, so callers the runtime has ready queue theirs too) and
//! writes them in one go:
//! coalesced writes, no buffer per request, two buffers reused for the
//! stream's life. One reader task decodes answers and wakes their waiters. Losing the stream (its connection failed or
//! went silent, or the server stopped it) hands every request in flight back
//! to its caller as [`Outcome::Lost`] with a retryable `Unavailable`, so the
//! link decides whether it may be sent again; the next call opens a new stream.
//!
//! Bounded: the waiters table holds at most `in_flight_max` requests and the
//! outbox as many frames (the writer holds one more outbox's worth while
//! writing it); callers past that get `Overloaded` at once (the link's
//! semaphore keeps them from getting here).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gater_core::pending::{Pending, RegisterError};
use gater_core::wire::{self, EncodedRequest, RequestHeader, Response, ResponseEnvelope};
use gater_core::{Error, Side};
use tokio::sync::{oneshot, Notify};

use crate::frame::{lost, FrameReader, ReadFailure};

type Waiter = oneshot::Sender<Reply>;

/// QUIC application error code of a connection the client gave up.
const CONNECTION_GIVEN_UP: u32 = 2;

/// What a waiter is told.
#[derive(Debug)]
enum Reply {
    /// The server's answer, or an answer that could not be read.
    Answer(Result<Response, Error>),
    /// The stream was lost with the request in flight.
    Lost(Error),
}

/// How a call on the stream ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The server answered (an error answer included).
    Answered(Result<Response, Error>),
    /// The stream was closed before the request was queued: the server
    /// never saw it.
    Unsent(EncodedRequest),
    /// The stream was lost with the request in flight: the server may or may
    /// not have carried it out.
    Lost(Error, EncodedRequest),
}

/// One request stream and its tasks. Dropping it finishes the stream once
/// the queued frames are written.
#[derive(Debug)]
pub(crate) struct Mux {
    connection: quinn::Connection,
    outbox: Arc<Outbox>,
    pending: Arc<Mutex<Pending<Waiter>>>,
    frame_bytes_max: u32,
    /// The most frames the outbox holds (the in-flight bound).
    frames_max: usize,
}

/// Frames encoded and not yet taken by the writer, shared by the callers
/// and the stream's writer task.
#[derive(Debug, Default)]
struct Outbox {
    state: Mutex<Queued>,
    /// Wakes the writer when frames are queued or the outbox closes.
    ready: Notify,
}

#[derive(Debug, Default)]
struct Queued {
    frames: Vec<u8>,
    /// How many frames `frames` holds.
    count: usize,
    /// No more frames: the [`Mux`] was dropped or the writer failed.
    closed: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        // Every writer appends whole frames or swaps the whole buffer while
        // holding the lock, so a poisoned lock still guards whole frames.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.outbox.close();
    }
}

impl Mux {
    /// Starts the tasks of a freshly opened stream.
    pub(crate) fn start(
        connection: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        in_flight_max: usize,
        frame_bytes_max: u32,
    ) -> Mux {
        let outbox = Arc::new(Outbox::default());
        let pending = Arc::new(Mutex::new(Pending::new(in_flight_max.max(1))));
        tokio::spawn(write(send, Arc::clone(&outbox), Arc::clone(&pending)));
        tokio::spawn(read(recv, frame_bytes_max, Arc::clone(&pending)));
        Mux {
            connection,
            outbox,
            pending,
            frame_bytes_max,
            frames_max: in_flight_max.max(1),
        }
    }

    /// Whether the stream or its connection failed or ended (new requests
    /// need a new one).
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.pending).closed().is_some()
            || self.outbox.lock().closed
            || self.connection.close_reason().is_some()
    }

    /// Gives up the stream's connection after the stream was lost: it is
    /// closed (if it is not already), so no new request or stream goes to a
    /// server that stopped answering or is going away.
    pub(crate) fn give_up(&self) {
        self.connection
            .close(CONNECTION_GIVEN_UP.into(), b"request stream lost");
    }

    /// Sends `request` (under a request id chosen here, telling the server
    /// it waits `deadline_ms`) and waits for its answer; the request comes
    /// back with an [`Outcome`] that did not answer it.
    pub(crate) async fn call(&self, deadline_ms: Option<u32>, request: EncodedRequest) -> Outcome {
        let (waiter, answer) = oneshot::channel();
        let id = match lock(&self.pending).register(waiter) {
            Ok(id) => id,
            Err(RegisterError::Closed(_)) => return Outcome::Unsent(request),
            Err(RegisterError::Full(n)) => {
                return Outcome::Answered(Err(Error::Overloaded {
                    side: Side::Client,
                    message: format!("{n} requests in flight on the connection"),
                }))
            }
        };
        // Forget the waiter if this call is dropped (its deadline passed).
        let guard = Cancel {
            pending: &self.pending,
            id,
        };
        let header = RequestHeader {
            version: wire::PROTOCOL_VERSION,
            id,
            deadline_ms,
            // The request being answered, if any: a proxy's call to its
            // worker carries its client's trace id on.
            trace: gater_core::trace::current().unwrap_or(0),
        };
        {
            let mut queued = self.outbox.lock();
            if queued.closed {
                return Outcome::Unsent(request);
            }
            // Frames of calls that gave up stay queued until written: the
            // outbox too is bounded, by as many frames as requests in flight.
            if queued.count >= self.frames_max {
                return Outcome::Answered(Err(Error::Overloaded {
                    side: Side::Client,
                    message: format!("{} request frames waiting to be sent", queued.count),
                }));
            }
            let encoded = wire::encode_request_into(
                &header,
                &request,
                &mut queued.frames,
                self.frame_bytes_max,
            );
            if let Err(e) = encoded {
                return Outcome::Answered(Err(e.into()));
            }
            queued.count += 1;
        }
        self.outbox.ready.notify_one();
        let answer = answer.await;
        drop(guard);
        match answer {
            Ok(Reply::Answer(result)) => Outcome::Answered(result),
            Ok(Reply::Lost(error)) => Outcome::Lost(error, request),
            // The reader dropped the waiter without an answer: the stream is gone.
            Err(_) => Outcome::Lost(lost("request stream closed"), request),
        }
    }
}

/// Removes a waiter from the table when its call ends, answered or not.
struct Cancel<'a> {
    pending: &'a Mutex<Pending<Waiter>>,
    id: u64,
}

impl Drop for Cancel<'_> {
    fn drop(&mut self) {
        lock(self.pending).cancel(self.id);
    }
}

fn lock(pending: &Mutex<Pending<Waiter>>) -> MutexGuard<'_, Pending<Waiter>> {
    // The table stays consistent whatever panicked while holding it.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ends every request in flight with `reply` and refuses new ones.
fn close(pending: &Mutex<Pending<Waiter>>, reply: Reply) {
    let error = match &reply {
        Reply::Answer(Err(e)) | Reply::Lost(e) => e.clone(),
        Reply::Answer(Ok(_)) => lost("request stream closed"),
    };
    let waiters = lock(pending).close(error);
    for waiter in waiters {
        let reply = match &reply {
            Reply::Answer(result) => Reply::Answer(result.clone()),
            Reply::Lost(e) => Reply::Lost(e.clone()),
        };
        let _ = waiter.send(reply);
    }
}

/// Writes queued frames, every frame that is ready in one write, until the
/// outbox closes (the [`Mux`] was dropped) and is empty; then finishes the
/// stream. A failed write closes the outbox and loses the requests in flight.
async fn write(
    mut send: quinn::SendStream,
    outbox: Arc<Outbox>,
    pending: Arc<Mutex<Pending<Waiter>>>,
) {
    let mut spare = Vec::new();
    loop {
        let closed = {
            let mut queued = outbox.lock();
            std::mem::swap(&mut queued.frames, &mut spare);
            queued.count = 0;
            queued.closed
        };
        if spare.is_empty() {
            if closed {
                let _ = send.finish();
                return;
            }
            outbox.ready.notified().await;
            // Let every caller the runtime has ready queue its frame first:
            // woken by the first frame, the writer would otherwise run
            // right after its caller and send one frame per datagram.
            tokio::task::yield_now().await;
            continue;
        }
        if let Err(e) = send.write_all(&spare).await {
            outbox.close();
            close(&pending, Reply::Lost(lost(e)));
            return;
        }
        spare.clear();
    }
}

/// Reads answers and hands each to its waiter, until the stream ends.
async fn read(
    mut recv: quinn::RecvStream,
    frame_bytes_max: u32,
    pending: Arc<Mutex<Pending<Waiter>>>,
) {
    let mut reader = FrameReader::new(frame_bytes_max);
    let reply = loop {
        match reader
            .next(&mut recv, wire::decode_body::<ResponseEnvelope>)
            .await
        {
            Ok(Some(envelope)) => match envelope.id {
                // An answer to no request of ours: the server could not read one.
                0 => {
                    break Reply::Answer(Err(envelope
                        .result
                        .err()
                        .unwrap_or_else(|| Error::Protocol("an answer with request id 0".into()))))
                }
                id => {
                    let waiter = lock(&pending).complete(id);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(Reply::Answer(envelope.result));
                    }
                }
            },
            Ok(None) => break Reply::Lost(lost("the server ended the request stream")),
            Err(ReadFailure::Stream(e)) => break Reply::Lost(lost(e)),
            // Bytes that are no answer: an answer nobody can read, not a lost path.
            Err(failure) => break Reply::Answer(Err(failure.into())),
        }
    };
    close(&pending, reply);
}
