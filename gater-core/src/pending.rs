//! The requests in flight on one multiplexed request stream, by request id.
//!
//! A sender registers a waiter for each request it sends and gets the id to
//! put in the envelope; an answer hands back the waiter of its id; a waiter
//! whose caller gave up is cancelled; losing the stream closes the table and
//! hands back every waiter, so each learns the failure. Pure bookkeeping (no
//! I/O, no clock): the transports hold it behind their own lock.
//!
//! Bounded: at most `capacity` waiters; ids are never 0 (the id of an
//! answer to a request whose id could not be read) and never repeat among
//! the waiters in the table.

use std::collections::HashMap;

use crate::error::Error;

/// Why a waiter could not be registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The stream is gone; the error says how.
    #[error("request stream closed: {0}")]
    Closed(Error),
    /// `capacity` requests are already in flight.
    #[error("{0} requests already in flight on the stream")]
    Full(usize),
}

/// The waiters of the requests in flight on one stream.
#[derive(Debug)]
pub struct Pending<W> {
    next_id: u64,
    waiting: HashMap<u64, W>,
    closed: Option<Error>,
    capacity: usize,
}

impl<W> Pending<W> {
    /// An open table holding at most `capacity` waiters.
    pub fn new(capacity: usize) -> Self {
        Pending {
            next_id: 1,
            waiting: HashMap::new(),
            closed: None,
            capacity,
        }
    }

    /// Registers `waiter` and returns the id its request must carry.
    pub fn register(&mut self, waiter: W) -> Result<u64, RegisterError> {
        if let Some(error) = &self.closed {
            return Err(RegisterError::Closed(error.clone()));
        }
        if self.waiting.len() >= self.capacity {
            return Err(RegisterError::Full(self.capacity));
        }
        // Fewer than `capacity` ids are taken, so this ends within capacity + 1 steps.
        let id = loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.waiting.contains_key(&id) {
                break id;
            }
        };
        self.waiting.insert(id, waiter);
        Ok(id)
    }

    /// The waiter of the request an answer with `id` belongs to; `None` for
    /// an id not in flight (its caller gave up, or the peer is confused).
    pub fn complete(&mut self, id: u64) -> Option<W> {
        self.waiting.remove(&id)
    }

    /// Forgets the request `id` (its caller stopped waiting).
    pub fn cancel(&mut self, id: u64) {
        self.waiting.remove(&id);
    }

    /// Closes the table for `error` and hands back every waiter; later
    /// registrations fail with that error. Closing again keeps the first error.
    pub fn close(&mut self, error: Error) -> Vec<W> {
        if self.closed.is_none() {
            self.closed = Some(error);
        }
        self.waiting.drain().map(|(_, w)| w).collect()
    }

    /// Why the table is closed, if it is.
    pub fn closed(&self) -> Option<&Error> {
        self.closed.as_ref()
    }

    /// Waiters in the table.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether no request is in flight.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Side;

    #[test]
    fn ids_skip_zero_and_those_in_flight() {
        let mut pending = Pending::new(3);
        pending.next_id = u64::MAX;
        assert_eq!(pending.register('a'), Ok(u64::MAX));
        assert_eq!(pending.register('b'), Ok(1));
        pending.next_id = 1;
        assert_eq!(pending.register('c'), Ok(2));
        assert_eq!(pending.register('d'), Err(RegisterError::Full(3)));
        assert_eq!(pending.complete(1), Some('b'));
        assert_eq!(pending.complete(1), None);
    }

    #[test]
    fn closing_hands_back_every_waiter_and_refuses_new_ones() {
        let mut pending = Pending::new(8);
        pending.register(1).unwrap();
        pending.register(2).unwrap();
        let lost = Error::unavailable(Side::Worker, "gone");
        let mut back = pending.close(lost.clone());
        back.sort_unstable();
        assert_eq!(back, vec![1, 2]);
        assert_eq!(
            pending.register(3),
            Err(RegisterError::Closed(lost.clone()))
        );
        pending.close(Error::Protocol("later".into()));
        assert_eq!(pending.closed(), Some(&lost));
        assert!(pending.is_empty());
    }
}
