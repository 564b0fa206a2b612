//! The server's side of a request stream: every request frame the client
//! sends on it is answered, each answer carrying its request's id, in the
//! order the answers are ready.
//!
//! One task per stream reads frames, drives the requests in flight (no task
//! per request) and writes the answers (a client spreads its requests over
//! a few streams, so one connection's requests run on as many tasks), gathering every answer that is
//! ready into one write from one buffer reused for the stream's life. A
//! request takes a permit of its connection's in-flight bound before its
//! frame is read, so a client past the bound is slowed by flow control,
//! never buffered without limit.
//!
//! [`answer`] is the one point where a request is handed to the `Gater`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use gater_core::wire::{
    self, EncodedRequest, FrameError, RequestHeader, RequestKind, Response, ResponseEnvelope,
};
use gater_core::Error;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::budget::BudgetPermit;
use crate::frame::{FrameReader, ReadFailure, COALESCE_BYTES_MAX};
use crate::server::{stopping, Shared, Stream, STREAM_REFUSED};

/// A request frame as read.
pub(crate) enum Read {
    /// A request to answer: its header, and the request still encoded (its
    /// head read), to be decoded by whatever answers it.
    Request {
        header: RequestHeader,
        request: EncodedRequest,
    },
    /// A frame refused: the answer's id (0 when it could not be read), why,
    /// and whether the stream can go on (its framing or version is not to be trusted).
    Refused { id: u64, error: Error, fatal: bool },
}

/// Reads one request frame body, keeping the request's bytes as they are
/// (a slice of `body`, not a copy); never fails (refusals are answers).
pub(crate) fn read_request(body: Bytes) -> Result<Read, FrameError> {
    Ok(match wire::split_request(&body) {
        Err(e) => Read::Refused {
            id: 0,
            error: e.into(),
            fatal: true,
        },
        Ok((header, request)) => {
            // The request is what follows the header: the body's tail.
            let request = body.slice(body.len() - request.len()..);
            match EncodedRequest::from_bytes(request) {
                Ok(request) => Read::Request { header, request },
                Err(e) => Read::Refused {
                    id: header.id,
                    error: e.into(),
                    fatal: false,
                },
            }
        }
    })
}

/// A frame read past for want of memory: refused under its request's id,
/// the stream staying in step, or fatally when even the request's header
/// cannot be read from the start of its body: `(id, error, fatal)`.
pub(crate) fn overloaded(error: Error, body_prefix: &[u8]) -> (u64, Error, bool) {
    match wire::split_request(body_prefix) {
        Ok((header, _)) => (header.id, error, false),
        Err(_) => (0, error, true),
    }
}

/// Hands one request to the `Gater` and returns its result.
pub(crate) async fn answer(
    shared: &Shared,
    header: RequestHeader,
    request: EncodedRequest,
) -> Result<Response, Error> {
    // Through the `dyn Gater`, not the `Arc`: one boxed future fewer. The
    // request's trace id is current while it is answered, so whatever it
    // calls on (a proxy's worker) carries it on.
    let call = (*shared.gater).call_encoded(request, header.within());
    gater_core::trace::scope(header.trace, call).await
}

/// Appends one answer frame to `out`; an answer too large for a frame
/// becomes the error saying so.
pub(crate) fn push_answer(out: &mut Vec<u8>, id: u64, result: Result<Response, Error>, max: u32) {
    let Err(e) = wire::encode_into(&ResponseEnvelope { id, result }, out, max) else {
        return;
    };
    let refusal = ResponseEnvelope {
        id,
        result: Err(e.into()),
    };
    if let Err(e) = wire::encode_into(&refusal, out, max) {
        tracing::error!("cannot encode even an error response: {e}");
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
        mut send,
        mut recv,
        ..
    } = stream;
    let max = shared.frame_bytes_max;
    let mut out = Vec::new();
    let mut in_flight: FuturesUnordered<Answering> = FuturesUnordered::new();
    let first_permit = Arc::clone(&permits).acquire_owned().await;
    let mut read = first_permit
        .ok()
        .map(|permit| (permit, reader.take_permit(), Ok(Some(first))));
    let mut reading = true;
    // Made once, not per turn of the loop: a `select!` drops the branches
    // that lose, and remaking these cost a watch registration, a permit
    // taken and given back and the stream's read state on every answer.
    let stopped = stopping(&mut stop);
    tokio::pin!(stopped);
    let mut next_permit: Option<OwnedSemaphorePermit> = None;
    loop {
        out.clear();
        if let Some((permit, bytes, frame)) = read.take() {
            let refusal = match frame {
                Ok(Some(Read::Request { header, request })) => match request.kind() {
                    RequestKind::Subscribe => Some((
                        header.id,
                        Error::Protocol("a subscription opens a stream of its own".into()),
                        false,
                    )),
                    _ => {
                        let shared = Arc::clone(&shared);
                        let answering = handle(shared, header, request, (permit, bytes));
                        in_flight.push(Box::pin(answering));
                        None
                    }
                },
                Ok(Some(Read::Refused { id, error, fatal })) => Some((id, error, fatal)),
                Err(ReadFailure::Overloaded { error, body_prefix }) => {
                    Some(overloaded(error, &body_prefix))
                }
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
                match error {
                    Error::UnsupportedVersion { version, .. } => {
                        if let Err(e) = wire::encode_version_refusal(version, &mut out) {
                            tracing::error!("cannot encode a version refusal: {e}");
                        }
                    }
                    error => push_answer(&mut out, id, Err(error), max),
                }
            }
        }
        if !out.is_empty() && shared.write_counted(&mut send, &out).await.is_err() {
            break;
        }
        out.clear();
        tokio::select! {
            biased;
            Some((id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                push_answer(&mut out, id, result, max);
                // Gather the answers that are ready too, for one write.
                while out.len() < COALESCE_BYTES_MAX {
                    let Some(Some((id, result))) = in_flight.next().now_or_never() else {
                        break;
                    };
                    push_answer(&mut out, id, result, max);
                }
                if shared.write_counted(&mut send, &out).await.is_err() {
                    break;
                }
            }
            // Polled only while reading, which it ends: never after it is done.
            () = &mut stopped, if reading => {
                let _ = recv.stop(STREAM_REFUSED.into());
                reading = false;
            }
            next = next_request(&mut reader, &mut recv, &permits, &mut next_permit), if reading => {
                read = next.map(|(permit, frame)| (permit, reader.take_permit(), frame));
            }
            else => break,
        }
    }
    let _ = send.finish();
    // Keep the task (and the shutdown drain) until the peer has the answers.
    let _ = send.stopped().await;
}

/// Takes a permit (unless `held` has one already), then reads the next
/// request frame. Cancel-safe: the reader keeps a partial frame, and a
/// permit taken stays in `held` for the next call.
async fn next_request(
    reader: &mut FrameReader,
    recv: &mut quinn::RecvStream,
    permits: &Arc<Semaphore>,
    held: &mut Option<OwnedSemaphorePermit>,
) -> Option<(OwnedSemaphorePermit, Result<Option<Read>, ReadFailure>)> {
    if held.is_none() {
        // The semaphore is never closed.
        *held = Some(Arc::clone(permits).acquire_owned().await.ok()?);
    }
    let frame = reader.next_owned(recv, read_request).await;
    Some((held.take()?, frame))
}

/// Answers one request; its in-flight permit and the budget bytes of its
/// frame are held until then.
async fn handle(
    shared: Arc<Shared>,
    header: RequestHeader,
    request: EncodedRequest,
    held: (OwnedSemaphorePermit, Option<BudgetPermit>),
) -> (u64, Result<Response, Error>) {
    let id = header.id;
    let result = answer(&shared, header, request).await;
    drop(held);
    (id, result)
}
