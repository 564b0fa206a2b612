//! The hash of the writer's in-memory tables (stream versions, event ids of
//! a batch, the event-id filter): a folded multiply per 8 bytes under a
//! random key, several times cheaper than std's SipHash on the short keys
//! these tables hold (16-byte ids, stream ids of a few dozen bytes).
//!
//! Keys come from clients, so the multiplier is random per table (drawn
//! from std's `RandomState`): which keys collide cannot be known in advance.
//! What it does not do: resist an attacker who can observe a table's
//! timings at length; the tables it serves are bounded, so the worst case is
//! a slower batch, never unbounded memory.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

/// A `HashMap` under [`FastState`].
pub(crate) type FastMap<K, V> = HashMap<K, V, FastState>;

/// Builds [`FastHasher`]s with one random key.
#[derive(Clone, Debug)]
pub(crate) struct FastState {
    /// Odd, so multiplying by it loses no bits.
    key: u64,
}

impl Default for FastState {
    fn default() -> Self {
        FastState {
            key: RandomState::new().hash_one(0x5ca1_ab1e_u64) | 1,
        }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            key: self.key,
            state: self.key.rotate_left(32),
        }
    }
}

/// The hasher of [`FastState`].
#[derive(Clone, Debug)]
pub(crate) struct FastHasher {
    key: u64,
    state: u64,
}

impl FastHasher {
    fn mix(&mut self, word: u64) {
        self.state = folded_multiply(self.state ^ word, self.key);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length tells "ab" from "ab\0".
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        folded_multiply(self.state, self.key.rotate_left(17) | 1)
    }
}

/// The high and low halves of the full product, folded together.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn one_state_hashes_equal_keys_alike_and_two_states_differ() {
        let (a, b) = (FastState::default(), FastState::default());
        assert_eq!(a.hash_one("stream-1"), a.hash_one("stream-1"));
        assert_ne!(a.hash_one("stream-1"), b.hash_one("stream-1"));
    }

    #[test]
    fn close_keys_spread_over_the_buckets_of_a_small_table() {
        let state = FastState::default();
        let ids = (0u64..4_096).map(|n| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&n.to_le_bytes());
            bytes
        });
        let buckets: HashSet<u64> = ids.map(|id| state.hash_one(id) >> 54).collect();
        assert!(buckets.len() > 900, "{} of 1024 buckets", buckets.len());
        let streams = (0..4_096).map(|n| format!("stream-{n}"));
        let buckets: HashSet<u64> = streams.map(|s| state.hash_one(s) & 1023).collect();
        assert!(buckets.len() > 900, "{} of 1024 buckets", buckets.len());
        assert_ne!(state.hash_one("ab"), state.hash_one("ab\0"));
    }
}
