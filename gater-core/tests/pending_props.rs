//! Property test of request multiplexing: over random interleavings of
//! requests, answers in any order, callers giving up and the stream being
//! lost, every caller gets the answer to its own request (or the stream's
//! failure), never another's, and the answers survive being coalesced into
//! one byte stream and read back in arbitrary chunks.

use std::collections::BTreeMap;

use gater_core::pending::Pending;
use gater_core::wire::{self, Response, ResponseEnvelope};
use gater_core::{Error, Side};
use proptest::collection::vec;
use proptest::prelude::*;

const MAX: u32 = wire::FRAME_BYTES_MAX_DEFAULT;
/// Requests in flight at once in the simulation.
const CAPACITY: usize = 16;

/// One step of the simulation.
#[derive(Clone, Debug)]
enum Step {
    /// A caller sends a request.
    Send,
    /// The server answers the n-th request in flight (modulo their number).
    Answer(usize),
    /// The caller of the n-th request in flight gives up.
    Cancel(usize),
    /// The answers written so far reach the client, cut into chunks of this size.
    Deliver(usize),
    /// The stream is lost; a new one replaces it.
    Drop,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Send),
        4 => any::<usize>().prop_map(Step::Answer),
        1 => any::<usize>().prop_map(Step::Cancel),
        2 => (1usize..64).prop_map(Step::Deliver),
        1 => Just(Step::Drop),
    ]
}

/// The client's view: the table of waiters (a waiter is the caller's
/// number), and what each caller got.
struct Client {
    pending: Pending<u64>,
    got: BTreeMap<u64, Result<Response, Error>>,
    /// Bytes received but not yet a whole frame.
    buf: Vec<u8>,
}

impl Client {
    fn read(&mut self, chunk: &[u8]) -> Result<(), TestCaseError> {
        self.buf.extend_from_slice(chunk);
        while let Some((answer, used)) = wire::decode::<ResponseEnvelope>(&self.buf, MAX)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
        {
            self.buf.drain(..used);
            if let Some(caller) = self.pending.complete(answer.id) {
                prop_assert!(self.got.insert(caller, answer.result).is_none());
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn answers_reach_the_callers_of_their_requests(steps in vec(step(), 1..200)) {
        let mut client = Client { pending: Pending::new(CAPACITY), got: BTreeMap::new(), buf: Vec::new() };
        // The server's side: requests in flight (id, caller) and bytes written.
        let mut in_flight: Vec<(u64, u64)> = Vec::new();
        let mut wire_bytes: Vec<u8> = Vec::new();
        let mut next_caller = 0u64;
        let mut cancelled = Vec::new();
        let mut failed = Vec::new();
        for step in steps {
            match step {
                Step::Send => {
                    let caller = next_caller;
                    next_caller += 1;
                    match client.pending.register(caller) {
                        Ok(id) => in_flight.push((id, caller)),
                        Err(_) => prop_assert_eq!(client.pending.len(), CAPACITY),
                    }
                }
                Step::Answer(n) if !in_flight.is_empty() => {
                    let (id, caller) = in_flight.remove(n % in_flight.len());
                    // The answer names the caller, so a misrouted one shows.
                    let answer = ResponseEnvelope { id, result: Ok(Response::Replayed(caller)) };
                    wire::encode_into(&answer, &mut wire_bytes, MAX)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                Step::Cancel(n) if !in_flight.is_empty() => {
                    let (id, caller) = in_flight[n % in_flight.len()];
                    client.pending.cancel(id);
                    cancelled.push(caller);
                }
                Step::Deliver(chunk) => {
                    for piece in wire_bytes.chunks(chunk) {
                        client.read(piece)?;
                    }
                    wire_bytes.clear();
                }
                Step::Drop => {
                    let lost = Error::unavailable(Side::Worker, "connection lost");
                    failed.extend(client.pending.close(lost));
                    client = Client { pending: Pending::new(CAPACITY), got: client.got, buf: Vec::new() };
                    in_flight.clear();
                    wire_bytes.clear();
                }
                Step::Answer(_) | Step::Cancel(_) => {}
            }
        }
        for (caller, result) in &client.got {
            prop_assert_eq!(result, &Ok(Response::Replayed(*caller)), "caller {} got another's answer", caller);
            prop_assert!(!cancelled.contains(caller), "caller {} gave up but was answered", caller);
            prop_assert!(!failed.contains(caller), "caller {} was failed and answered", caller);
        }
    }
}
