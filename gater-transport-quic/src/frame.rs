//! Frames on QUIC streams: a cancel-safe reader that never holds more than
//! one frame, and a writer.

use std::sync::Arc;

use gater_core::wire::{self, FrameError, FRAME_HEADER_LEN};
use gater_core::{Error, Side};
use serde::Serialize;

use crate::budget::{BudgetPermit, MemoryBudget};

/// Why no frame could be read.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The bytes are not a valid frame (oversize, undecodable, foreign version).
    Frame(FrameError),
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The stream or its connection failed.
    Stream(quinn::ReadError),
    /// The memory budget cannot hold the frame (a retryable `Overloaded`).
    Overloaded(Error),
}

impl From<ReadFailure> for Error {
    fn from(failure: ReadFailure) -> Error {
        match failure {
            ReadFailure::Frame(e) => e.into(),
            ReadFailure::Truncated => Error::Protocol("stream ended inside a frame".into()),
            ReadFailure::Stream(e) => lost(e),
            ReadFailure::Overloaded(e) => e,
        }
    }
}

/// The error of a stream or connection that failed under a request.
pub(crate) fn lost(e: impl std::fmt::Display) -> Error {
    Error::unavailable(Side::Worker, format!("connection lost: {e}"))
}

/// Bytes asked of the stream while no frame header is in: enough for a
/// typical whole frame in one read.
const READ_AHEAD: usize = 16 * 1024;

/// Reads frames from one stream.
///
/// Cancel-safe: the bytes of a partly read frame stay in the reader, so
/// `next` may lose a `select!` and be called again. Once a header is in it
/// asks the stream for no more than the rest of that frame, and it checks
/// the length prefix against `max` before reading the body, so it never
/// holds more than `READ_AHEAD + FRAME_HEADER_LEN + max` bytes.
///
/// With a budget, a frame reserves its bytes once its header is in, before
/// its body is read; the reservation of the last frame read is handed over
/// with [`FrameReader::take_permit`], to be held while the request is served.
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`: frames read are skipped, not
    /// moved out one by one; the rest moves to the front before the next read.
    start: usize,
    max: u32,
    budget: Option<(Arc<MemoryBudget>, Side)>,
    reading: Option<BudgetPermit>,
    read: Option<BudgetPermit>,
}

impl FrameReader {
    pub(crate) fn new(max: u32) -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            max,
            budget: None,
            reading: None,
            read: None,
        }
    }

    /// A reader whose frames reserve their bytes from `budget` (refusals name `side`).
    pub(crate) fn with_budget(max: u32, budget: Arc<MemoryBudget>, side: Side) -> Self {
        FrameReader {
            budget: Some((budget, side)),
            ..FrameReader::new(max)
        }
    }

    /// The reservation of the last frame read, if the reader has a budget.
    pub(crate) fn take_permit(&mut self) -> Option<BudgetPermit> {
        self.read.take()
    }

    /// The next frame decoded by `decode`; `None` when the stream ended cleanly between frames.
    pub(crate) async fn next<T>(
        &mut self,
        recv: &mut quinn::RecvStream,
        decode: impl Fn(&[u8]) -> Result<T, FrameError>,
    ) -> Result<Option<T>, ReadFailure> {
        loop {
            let len = self.body_len()?;
            if let (Some(len), Some((budget, side)), None) = (len, &self.budget, &self.reading) {
                // Waits for room (flow control holds the peer meanwhile);
                // cancel-safe, the reservation is kept once made.
                let bytes = (FRAME_HEADER_LEN + len) as u64;
                let permit = budget
                    .reserve(bytes, *side)
                    .await
                    .map_err(ReadFailure::Overloaded)?;
                self.reading = Some(permit);
            }
            let held = self.buf.len() - self.start;
            let wanted = match len {
                Some(len) if held >= FRAME_HEADER_LEN + len => {
                    let body = self.start + FRAME_HEADER_LEN;
                    let msg = decode(&self.buf[body..body + len]);
                    self.start = body + len;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    self.read = self.reading.take();
                    return msg.map(Some).map_err(ReadFailure::Frame);
                }
                Some(len) => FRAME_HEADER_LEN + len - held,
                None => READ_AHEAD,
            };
            // Only a partial frame is left: move it to the front, so the
            // buffer never holds more than one frame and a read-ahead.
            self.buf.drain(..self.start);
            self.start = 0;
            match recv.read_chunk(wanted, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err(ReadFailure::Truncated),
                Err(e) => return Err(ReadFailure::Stream(e)),
            }
        }
    }

    /// The announced body length once the header is in.
    fn body_len(&self) -> Result<Option<usize>, ReadFailure> {
        let Some(header) = self.buf.get(self.start..self.start + FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0; FRAME_HEADER_LEN];
        h.copy_from_slice(header);
        wire::body_len(h, self.max)
            .map(Some)
            .map_err(ReadFailure::Frame)
    }
}

/// Bytes the server gathers from answers that are ready before it writes them.
pub(crate) const COALESCE_BYTES_MAX: usize = 64 * 1024;

/// Writes one frame holding `msg`.
pub(crate) async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
    max: u32,
) -> Result<(), Error> {
    let frame = wire::encode(msg, max)?;
    send.write_all(&frame).await.map_err(lost)
}
