//! The server's side of a request stream: every request frame the client
//! sends on it is answered, each answer carrying its request's id, in the
//! order the answers are ready.
//!
//! One task per stream reads frames and drives the requests in flight (no
//! task per request); a writer task writes the answers, coalescing those
//! that are ready into one write. A request takes a permit of its
//! connection's in-flight bound before its frame is read, so a client past
//! the bound is slowed by flow control, never buffered without limit.
//!
//! [`answer`] is the one point where a request is handed to the `Gater`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use gater_core::wire::{self, FrameError, Request, RequestEnvelope, Response, ResponseEnvelope};
use gater_core::Error;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::frame::{write_queued, FrameReader, ReadFailure};
use crate::server::{stopping, Shared, Stream, STREAM_REFUSED};

/// Answers a writer may have queued; past it the stream stops taking
/// answers (and so reading requests) until the writer catches up.
const ANSWER_QUEUE_LEN: usize = 256;

/// A request frame as read.
pub(crate) enum Read {
    /// A request to answer.
    Request(RequestEnvelope),
    /// A frame refused: the answer's id (0 when it could not be read), why,
    /// and whether the stream can go on (its framing or version is not to be trusted).
    Refused { id: u64, error: Error, fatal: bool },
}

/// Reads one request frame body; never fails (refusals are answers).
pub(crate) fn read_request(body: &[u8]) -> Result<Read, FrameError> {
    Ok(match wire::split_request(body) {
        Err(e) => Read::Refused {
            id: 0,
            error: e.into(),
            fatal: true,
        },
        Ok((header, request)) => match wire::decode_body::<Request>(request) {
            Ok(request) => Read::Request(RequestEnvelope {
                version: header.version,
                id: header.id,
                deadline_ms: header.deadline_ms,
                request,
            }),
            Err(e) => Read::Refused {
                id: header.id,
                error: e.into(),
                fatal: false,
            },
        },
    })
}

/// Hands one request to the `Gater` and returns its result.
pub(crate) async fn answer(shared: &Shared, envelope: RequestEnvelope) -> Result<Response, Error> {
    let within = envelope.within();
    shared.gater.call(envelope.request, within).await
}

/// One answer frame; an answer too large for a frame becomes the error saying so.
pub(crate) fn answer_frame(id: u64, result: Result<Response, Error>, max: u32) -> Option<Vec<u8>> {
    match wire::encode(&ResponseEnvelope { id, result }, max) {
        Ok(frame) => Some(frame),
        Err(e) => match wire::encode(
            &ResponseEnvelope {
                id,
                result: Err(e.into()),
            },
            max,
        ) {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::error!("cannot encode even an error response: {e}");
                None
            }
        },
    }
}

type Answering = Pin<Box<dyn Future<Output = (u64, Result<Response, Error>)> + Send>>;

/// Serves the request stream whose first frame was `first`, until the client
/// finishes it (or it fails, or the server stops), then finishes it once
/// every request read is answered.
pub(crate) async fn serve(
    stream: Stream,
    mut reader: FrameReader,
    first: Read,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let Stream {
        shared,
        send,
        mut recv,
    } = stream;
    let max = shared.frame_bytes_max;
    let (answers, queued) = mpsc::channel(ANSWER_QUEUE_LEN);
    let writer = tokio::spawn(write_answers(send, queued));
    let mut in_flight: FuturesUnordered<Answering> = FuturesUnordered::new();
    let first_permit = Arc::clone(&permits).acquire_owned().await;
    let mut read = first_permit.ok().map(|permit| (permit, Ok(Some(first))));
    let mut reading = true;
    loop {
        if let Some((permit, frame)) = read.take() {
            let refusal = match frame {
                Ok(Some(Read::Request(envelope))) => match envelope.request {
                    Request::Subscribe { .. } => Some((
                        envelope.id,
                        Error::Protocol("a subscription opens a stream of its own".into()),
                        false,
                    )),
                    _ => {
                        in_flight.push(Box::pin(handle(Arc::clone(&shared), envelope, permit)));
                        None
                    }
                },
                Ok(Some(Read::Refused { id, error, fatal })) => Some((id, error, fatal)),
                Ok(None) => {
                    reading = false;
                    None
                }
                Err(ReadFailure::Stream(e)) => {
                    tracing::debug!("request stream failed: {e}");
                    reading = false;
                    None
                }
                Err(failure) => Some((0, failure.into(), true)),
            };
            if let Some((id, error, fatal)) = refusal {
                if fatal {
                    // Bad input: stop the peer sending more of it on this stream.
                    let _ = recv.stop(STREAM_REFUSED.into());
                    reading = false;
                }
                if let Some(frame) = answer_frame(id, Err(error), max) {
                    if answers.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
        tokio::select! {
            biased;
            Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                let Some(frame) = answer_frame(id, result, max) else { continue };
                if answers.send(frame).await.is_err() {
                    break;
                }
            }
            () = stopping(&mut stop), if reading => {
                let _ = recv.stop(STREAM_REFUSED.into());
                reading = false;
            }
            next = next_request(&mut reader, &mut recv, &permits), if reading => {
                read = next;
            }
            else => break,
        }
    }
    drop(answers);
    let _ = writer.await;
}

/// Takes a permit, then reads the next request frame. Cancel-safe: the
/// reader keeps a partial frame, and a permit taken is given back.
async fn next_request(
    reader: &mut FrameReader,
    recv: &mut quinn::RecvStream,
    permits: &Arc<Semaphore>,
) -> Option<(OwnedSemaphorePermit, Result<Option<Read>, ReadFailure>)> {
    // The semaphore is never closed.
    let permit = Arc::clone(permits).acquire_owned().await.ok()?;
    Some((permit, reader.next(recv, read_request).await))
}

async fn handle(
    shared: Arc<Shared>,
    envelope: RequestEnvelope,
    permit: OwnedSemaphorePermit,
) -> (u64, Result<Response, Error>) {
    let id = envelope.id;
    let result = answer(&shared, envelope).await;
    drop(permit);
    (id, result)
}

/// Writes answers as they are queued; finishes the stream once the queue
/// closes and waits until the client has them.
async fn write_answers(mut send: quinn::SendStream, mut queued: mpsc::Receiver<Vec<u8>>) {
    if let Err(e) = write_queued(&mut send, &mut queued).await {
        tracing::debug!("answers not delivered: {e}");
        return;
    }
    let _ = send.finish();
    // Keep the task (and the shutdown drain) until the peer has the answers.
    let _ = send.stopped().await;
}
