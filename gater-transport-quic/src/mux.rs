//! The client's request stream: many requests in flight on one long-lived
//! bidirectional stream, answers matched to them by request id.
//!
//! A caller registers a waiter (getting the request id), encodes its
//! envelope and queues the frame. One writer task per stream takes every
//! frame that is ready and writes them in one go (coalesced writes, one
//! buffer reused for the stream's life); one reader task decodes answers
//! and wakes their waiters. Losing the stream fails every request in flight
//! with a retryable `Unavailable`; the next call opens a new stream.
//!
//! Bounded: the waiters table holds at most `in_flight_max` requests and the
//! frame queue as many frames; callers past that get `Overloaded` at once
//! (the link's semaphore keeps them from getting here).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gater_core::pending::{Pending, RegisterError};
use gater_core::wire::{self, RequestEnvelope, Response, ResponseEnvelope};
use gater_core::{Error, Side};
use tokio::sync::{mpsc, oneshot};

use crate::frame::{lost, write_queued, FrameReader, ReadFailure};

type Waiter = oneshot::Sender<Result<Response, Error>>;

/// One request stream and its tasks. Dropping it finishes the stream once
/// the queued frames are written.
#[derive(Debug)]
pub(crate) struct Mux {
    frames: mpsc::Sender<Vec<u8>>,
    pending: Arc<Mutex<Pending<Waiter>>>,
    frame_bytes_max: u32,
}

impl Mux {
    /// Starts the tasks of a freshly opened stream.
    pub(crate) fn start(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        in_flight_max: usize,
        frame_bytes_max: u32,
    ) -> Mux {
        let (frames, queued) = mpsc::channel(in_flight_max.max(1));
        let pending = Arc::new(Mutex::new(Pending::new(in_flight_max.max(1))));
        tokio::spawn(write(send, queued, Arc::clone(&pending)));
        tokio::spawn(read(recv, frame_bytes_max, Arc::clone(&pending)));
        Mux {
            frames,
            pending,
            frame_bytes_max,
        }
    }

    /// Whether the stream failed or ended (new requests need a new one).
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.pending).closed().is_some() || self.frames.is_closed()
    }

    /// Sends `envelope` (its id set here) and waits for its answer. A
    /// stream already closed gives the envelope back, unsent, for a new stream.
    pub(crate) async fn call(
        &self,
        mut envelope: RequestEnvelope,
    ) -> Result<Result<Response, Error>, RequestEnvelope> {
        let (waiter, answer) = oneshot::channel();
        let id = match lock(&self.pending).register(waiter) {
            Ok(id) => id,
            Err(RegisterError::Closed(_)) => return Err(envelope),
            Err(RegisterError::Full(n)) => {
                return Ok(Err(Error::Overloaded {
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
        envelope.id = id;
        let frame = match wire::encode(&envelope, self.frame_bytes_max) {
            Ok(frame) => frame,
            Err(e) => return Ok(Err(e.into())),
        };
        if self.frames.send(frame).await.is_err() {
            return Err(envelope);
        }
        let answer = answer.await;
        drop(guard);
        match answer {
            Ok(result) => Ok(result),
            // The reader dropped the waiter without an answer: the stream is gone.
            Err(_) => Ok(Err(lost("request stream closed"))),
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

/// Fails every request in flight with `error` and refuses new ones.
fn close(pending: &Mutex<Pending<Waiter>>, error: Error) {
    let waiters = lock(pending).close(error.clone());
    for waiter in waiters {
        let _ = waiter.send(Err(error.clone()));
    }
}

/// Writes queued frames until the queue closes (the [`Mux`] was dropped);
/// then finishes the stream.
async fn write(
    mut send: quinn::SendStream,
    mut queued: mpsc::Receiver<Vec<u8>>,
    pending: Arc<Mutex<Pending<Waiter>>>,
) {
    match write_queued(&mut send, &mut queued).await {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(e) => close(&pending, lost(e)),
    }
}

/// Reads answers and hands each to its waiter, until the stream ends.
async fn read(
    mut recv: quinn::RecvStream,
    frame_bytes_max: u32,
    pending: Arc<Mutex<Pending<Waiter>>>,
) {
    let mut reader = FrameReader::new(frame_bytes_max);
    let error = loop {
        match reader
            .next(&mut recv, wire::decode_body::<ResponseEnvelope>)
            .await
        {
            Ok(Some(envelope)) => match envelope.id {
                // An answer to no request of ours: the server could not read one.
                0 => {
                    break envelope
                        .result
                        .err()
                        .unwrap_or_else(|| Error::Protocol("an answer with request id 0".into()))
                }
                id => {
                    let waiter = lock(&pending).complete(id);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(envelope.result);
                    }
                }
            },
            Ok(None) => break lost("the server ended the request stream"),
            Err(ReadFailure::Stream(e)) => break lost(e),
            Err(failure) => break failure.into(),
        }
    };
    close(&pending, error);
}
