//! Frames on QUIC streams: a cancel-safe reader that never holds more than
//! one frame, and a writer.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use gater_core::wire::{self, FrameError, FRAME_HEADER_LEN};
use gater_core::{Error, Side};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// The memory budget could not hold the frame (a retryable
    /// `Overloaded`): it was read past, not kept, so the stream is at the
    /// next frame. `body_prefix` is the start of its body (enough for a
    /// request's header).
    Overloaded {
        /// Why.
        error: Error,
        /// The first [`BODY_PREFIX_LEN`] bytes of the body (fewer if it is shorter).
        body_prefix: Vec<u8>,
    },
}

impl From<ReadFailure> for Error {
    fn from(failure: ReadFailure) -> Error {
        match failure {
            ReadFailure::Frame(e) => e.into(),
            ReadFailure::Truncated => Error::Protocol("stream ended inside a frame".into()),
            ReadFailure::Stream(e) => lost(e),
            ReadFailure::Overloaded { error, .. } => error,
        }
    }
}

/// The error of a stream or connection that failed under a request.
pub(crate) fn lost(e: impl std::fmt::Display) -> Error {
    Error::unavailable(Side::Worker, format!("connection lost: {e}"))
}

/// Bytes an unbudgeted reader asks of the stream while no frame header is
/// in: enough for a typical whole frame in one read.
const READ_AHEAD: usize = 16 * 1024;
/// Bytes of a frame's body kept when the frame is read past (a request
/// header is at most 19 bytes).
pub(crate) const BODY_PREFIX_LEN: usize = 32;

/// Where a budgeted reader reserves its frames' bytes.
#[derive(Debug)]
struct Budgeted {
    budget: Arc<MemoryBudget>,
    side: Side,
    /// One permit per connection: the one frame that may wait for room.
    wait_slot: Arc<Semaphore>,
}

/// Where a frame read is.
enum Ready {
    /// In the reader's buffer: a body of this many bytes after the frame
    /// header at `start`.
    Buffered(usize),
    /// In a buffer of its own (see [`FrameReader::next_owned`]).
    Owned(Bytes),
}

/// A frame being read past: what is left of its body and its first bytes.
#[derive(Debug)]
struct Skip {
    remaining: usize,
    body_prefix: Vec<u8>,
    error: Error,
}

/// Reads frames from one stream.
///
/// Cancel-safe: the bytes of a partly read frame stay in the reader, so
/// `next` may lose a `select!` and be called again. Once a header is in it
/// asks the stream for no more than the rest of that frame, and it checks
/// the length prefix against `max` before reading the body, so it never
/// holds more than `READ_AHEAD + FRAME_HEADER_LEN + max` bytes.
///
/// A budgeted reader (a server's) reads no byte past a header before the
/// frame's bytes are reserved: a frame reserves them once its header is in,
/// and the reservation of the last frame read is handed over with
/// [`FrameReader::take_permit`], to be held while the request is served.
/// When the budget is used up, one frame per connection (its `wait_slot`)
/// waits for room; any other is read past and refused with
/// [`ReadFailure::Overloaded`], so no stream stops draining while a frame
/// of its connection waits for bytes the budget may only get back from it.
/// An exact reader (a server's subscription stream) asks for no byte past a
/// frame either, without a budget: its frames are small and bounded.
///
/// [`FrameReader::next`] decodes a frame where it lies in the reader's
/// buffer; [`FrameReader::next_owned`] reads a body into a buffer of its own
/// (exactly its length) and hands it over, so a request kept while it is
/// served (and passed on by a proxy) is never copied out of the buffer.
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`: frames read are skipped, not
    /// moved out one by one; the rest moves to the front before the next read.
    start: usize,
    max: u32,
    read_ahead: bool,
    budget: Option<Budgeted>,
    reading: Option<BudgetPermit>,
    read: Option<BudgetPermit>,
    waiting: Option<OwnedSemaphorePermit>,
    skipping: Option<Skip>,
    /// The body being read into a buffer of its own, and its length.
    owned: Option<(BytesMut, usize)>,
}

impl FrameReader {
    pub(crate) fn new(max: u32) -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            max,
            read_ahead: true,
            budget: None,
            reading: None,
            read: None,
            waiting: None,
            skipping: None,
            owned: None,
        }
    }

    /// A reader that asks for no byte past the frame it reads.
    pub(crate) fn exact(max: u32) -> Self {
        FrameReader {
            read_ahead: false,
            ..FrameReader::new(max)
        }
    }

    /// A reader whose frames reserve their bytes from `budget` (refusals
    /// name `side`); `wait_slot` is its connection's one permit to wait for room.
    pub(crate) fn with_budget(
        max: u32,
        budget: Arc<MemoryBudget>,
        side: Side,
        wait_slot: Arc<Semaphore>,
    ) -> Self {
        FrameReader {
            budget: Some(Budgeted {
                budget,
                side,
                wait_slot,
            }),
            ..FrameReader::exact(max)
        }
    }

    /// The reservation of the last frame read, if the reader has a budget.
    pub(crate) fn take_permit(&mut self) -> Option<BudgetPermit> {
        self.read.take()
    }

    /// The next frame decoded by `decode` where it lies in the reader's
    /// buffer; `None` when the stream ended cleanly between frames.
    pub(crate) async fn next<T>(
        &mut self,
        recv: &mut quinn::RecvStream,
        decode: impl Fn(&[u8]) -> Result<T, FrameError>,
    ) -> Result<Option<T>, ReadFailure> {
        let msg = match self.fill(recv, false).await? {
            None => return Ok(None),
            Some(Ready::Buffered(len)) => {
                let body = self.start + FRAME_HEADER_LEN;
                let msg = decode(&self.buf[body..body + len]);
                self.consume(len);
                msg
            }
            Some(Ready::Owned(body)) => decode(&body),
        };
        msg.map(Some).map_err(ReadFailure::Frame)
    }

    /// The next frame, its body handed to `decode` in a buffer of its own:
    /// once its header is in, the body is read into a buffer of exactly its
    /// length, so what `decode` keeps of it needs no further copy. `None`
    /// when the stream ended cleanly between frames.
    pub(crate) async fn next_owned<T>(
        &mut self,
        recv: &mut quinn::RecvStream,
        decode: impl Fn(Bytes) -> Result<T, FrameError>,
    ) -> Result<Option<T>, ReadFailure> {
        let body = match self.fill(recv, true).await? {
            None => return Ok(None),
            Some(Ready::Owned(body)) => body,
            // The whole frame came in with bytes read ahead before it.
            Some(Ready::Buffered(len)) => {
                let start = self.start + FRAME_HEADER_LEN;
                let body = Bytes::copy_from_slice(&self.buf[start..start + len]);
                self.consume(len);
                body
            }
        };
        decode(body).map(Some).map_err(ReadFailure::Frame)
    }

    /// Reads until a whole frame is in; `owned` reads a body not already
    /// begun in the buffer into a buffer of its own.
    async fn fill(
        &mut self,
        recv: &mut quinn::RecvStream,
        owned: bool,
    ) -> Result<Option<Ready>, ReadFailure> {
        loop {
            if let Some(skip) = &mut self.skipping {
                if skip.remaining == 0 {
                    // Just checked: there is a skip to take.
                    let skip = self.skipping.take().expect("a frame being read past");
                    return Err(ReadFailure::Overloaded {
                        error: skip.error,
                        body_prefix: skip.body_prefix,
                    });
                }
                match recv.read_chunk(skip.remaining, true).await {
                    Ok(Some(chunk)) => skip.pass(&chunk.bytes),
                    Ok(None) => return Err(ReadFailure::Truncated),
                    Err(e) => return Err(ReadFailure::Stream(e)),
                }
                continue;
            }
            if let Some((body, len)) = &mut self.owned {
                let missing = len.saturating_sub(body.len());
                if missing > 0 {
                    match recv.read_chunk(missing, true).await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
                        Ok(None) => return Err(ReadFailure::Truncated),
                        Err(e) => return Err(ReadFailure::Stream(e)),
                    }
                    continue;
                }
            }
            if let Some((body, _)) = self.owned.take() {
                self.read = self.reading.take();
                return Ok(Some(Ready::Owned(body.freeze())));
            }
            let len = self.body_len()?;
            if let (Some(len), Some(_), None) = (len, &self.budget, &self.reading) {
                if let Some(error) = self.reserve(len).await {
                    self.skip(len, error);
                    continue;
                }
            }
            let held = self.buf.len() - self.start;
            let wanted = match len {
                Some(len) if held >= FRAME_HEADER_LEN + len => {
                    self.read = self.reading.take();
                    return Ok(Some(Ready::Buffered(len)));
                }
                Some(len) if owned => {
                    // What the buffer holds past the header is the body's start.
                    let start = self.start + FRAME_HEADER_LEN;
                    let mut body = BytesMut::with_capacity(len);
                    body.extend_from_slice(&self.buf[start..]);
                    self.buf.clear();
                    self.start = 0;
                    self.owned = Some((body, len));
                    continue;
                }
                Some(len) => FRAME_HEADER_LEN + len - held,
                None if self.read_ahead => READ_AHEAD,
                None => FRAME_HEADER_LEN - held,
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

    /// Moves past the buffered frame at `start`, whose body is `len` bytes.
    fn consume(&mut self, len: usize) {
        self.start += FRAME_HEADER_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reserves the bytes of a frame whose header is in (body `len`);
    /// `Some(refusal)` when it is to be read past instead: larger than the
    /// whole budget, or the budget is used up and another frame of the
    /// connection already waits. Cancel-safe: a wait slot taken is kept.
    async fn reserve(&mut self, len: usize) -> Option<Error> {
        let budgeted = self.budget.as_ref()?;
        let bytes = (FRAME_HEADER_LEN + len) as u64;
        let refusal = match budgeted.budget.try_reserve(bytes, budgeted.side) {
            Ok(permit) => {
                self.reading = Some(permit);
                return None;
            }
            Err(refusal) => refusal,
        };
        if !budgeted.budget.can_hold(bytes) {
            return Some(refusal);
        }
        if self.waiting.is_none() {
            match Arc::clone(&budgeted.wait_slot).try_acquire_owned() {
                Ok(slot) => self.waiting = Some(slot),
                Err(_) => return Some(refusal),
            }
        }
        let reserved = budgeted.budget.reserve(bytes, budgeted.side).await;
        self.waiting = None;
        match reserved {
            Ok(permit) => {
                self.reading = Some(permit);
                None
            }
            Err(refusal) => Some(refusal),
        }
    }

    /// Starts reading past the frame whose header is in (body `len`).
    fn skip(&mut self, len: usize, error: Error) {
        let mut skip = Skip {
            remaining: len,
            body_prefix: Vec::with_capacity(BODY_PREFIX_LEN.min(len)),
            error,
        };
        // A budgeted reader reads no byte past a header before this.
        let body = self.start + FRAME_HEADER_LEN;
        debug_assert!(self.buf.len() <= body + len);
        skip.pass(&self.buf[body..]);
        self.buf.clear();
        self.start = 0;
        self.skipping = Some(skip);
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

impl Skip {
    /// Passes over `bytes` of the body, keeping its first few.
    fn pass(&mut self, bytes: &[u8]) {
        let room = BODY_PREFIX_LEN - self.body_prefix.len();
        self.body_prefix
            .extend_from_slice(&bytes[..room.min(bytes.len())]);
        self.remaining = self.remaining.saturating_sub(bytes.len());
    }
}

/// Bytes a writer gathers from frames that are ready before it writes them.
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
