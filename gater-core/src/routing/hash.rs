//! Stable hashing and rendezvous (highest random weight) placement.
//!
//! The hash is FNV-1a over length-prefixed fields, finished with the SplitMix64
//! mixer for avalanche. It is fixed forever: every proxy, on every platform and
//! after every restart, must agree on which worker owns a key, so std's
//! randomly keyed hasher is not an option. It is not collision resistant
//! against an adversary; keys are ids the operator or client chose, and a
//! collision only places two keys on the same worker.

use std::cmp::Ordering;

use crate::id::StoreId;
use crate::rng::mix64;
use crate::subscription::SubscriptionKey;
use crate::WorkerHealth;

use super::pick::WorkerView;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Domain tags keep keys of different kinds apart even when their text is equal.
const TAG_BYTES: u8 = 0;
const TAG_STORE: u8 = 1;
const TAG_SUBSCRIPTION: u8 = 2;

/// A stable 64-bit hash of whatever a request must stay attached to.
///
/// Requests with the same key go to the same worker for as long as that worker
/// is eligible; see [`rendezvous_weight`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AffinityKey(pub u64);

impl AffinityKey {
    /// The key of arbitrary bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut h = Fnv::new(TAG_BYTES);
        h.field(bytes);
        AffinityKey(h.finish())
    }

    /// The key of a store: used to place it on a worker at creation.
    pub fn store(store: &StoreId) -> Self {
        let mut h = Fnv::new(TAG_STORE);
        h.field(store.as_str().as_bytes());
        AffinityKey(h.finish())
    }

    /// The key of a subscription of a store: places persistent subscriptions
    /// (and so their pinned consumers) on one worker.
    pub fn subscription(store: &StoreId, key: &SubscriptionKey) -> Self {
        let mut h = Fnv::new(TAG_SUBSCRIPTION);
        h.field(store.as_str().as_bytes());
        h.field(key.kind().as_str().as_bytes());
        h.field(key.selector().as_bytes());
        h.field(key.name().as_bytes());
        AffinityKey(h.finish())
    }
}

/// The weight of `worker` for `key`; the eligible worker of highest weight owns the key.
///
/// Because each weight depends on the key and that one worker only, a worker
/// joining takes exactly the keys for which it now weighs most, and a worker
/// leaving hands each of its keys to that key's runner-up: no other key moves.
pub fn rendezvous_weight(key: AffinityKey, worker: &str) -> u64 {
    let mut h = Fnv::seeded(mix64(key.0));
    h.field(worker.as_bytes());
    h.finish()
}

/// Orders two `(weight, id)` candidates: higher weight first, ties by id so the
/// order never depends on the order of the snapshot.
pub(crate) fn rendezvous_cmp(a: (u64, &str), b: (u64, &str)) -> Ordering {
    b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
}

/// Candidate owners of a new store, best first: the indices into `workers` of
/// every worker that is not ejected, ranked by rendezvous weight on the store id.
///
/// `create_store` walks this order and takes the first worker with room, so
/// the same store id lands on the same worker from any proxy. Health beyond
/// ejection and capacity are the caller's to weigh.
pub fn placement_order(store: &StoreId, workers: &[WorkerView<'_>]) -> Vec<usize> {
    let key = AffinityKey::store(store);
    let mut ranked: Vec<(u64, usize)> = workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.health != WorkerHealth::Ejected)
        .map(|(i, w)| (rendezvous_weight(key, w.id), i))
        .collect();
    ranked.sort_by(|a, b| rendezvous_cmp((a.0, workers[a.1].id), (b.0, workers[b.1].id)));
    ranked.into_iter().map(|(_, i)| i).collect()
}

/// FNV-1a with length-prefixed fields, so `("ab", "c")` and `("a", "bc")` differ.
struct Fnv(u64);

impl Fnv {
    fn new(tag: u8) -> Self {
        let mut h = Fnv(FNV_OFFSET);
        h.bytes(&[tag]);
        h
    }

    fn seeded(seed: u64) -> Self {
        let mut h = Fnv(FNV_OFFSET);
        h.bytes(&seed.to_le_bytes());
        h
    }

    fn field(&mut self, bytes: &[u8]) {
        // Ids are bounded far below u64; the length prefix only disambiguates.
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    fn finish(&self) -> u64 {
        mix64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::SubscriptionType;

    #[test]
    fn fnv1a_core_matches_the_published_vector() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        let mut h = Fnv(FNV_OFFSET);
        h.bytes(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn keys_are_stable_across_runs_and_separate_fields() {
        let store = StoreId::new("orders").unwrap();
        assert_eq!(AffinityKey::store(&store), AffinityKey::store(&store));
        let ab_c = {
            let mut h = Fnv::new(TAG_BYTES);
            h.field(b"ab");
            h.field(b"c");
            h.finish()
        };
        let a_bc = {
            let mut h = Fnv::new(TAG_BYTES);
            h.field(b"a");
            h.field(b"bc");
            h.finish()
        };
        assert_ne!(ab_c, a_bc);
        let sub = SubscriptionKey::new(SubscriptionType::ByStream, "s-1", "billing").unwrap();
        let other = SubscriptionKey::new(SubscriptionType::ByStream, "s-1", "audit").unwrap();
        assert_ne!(
            AffinityKey::subscription(&store, &sub),
            AffinityKey::subscription(&store, &other)
        );
    }

    #[test]
    fn rendezvous_spreads_keys_over_workers() {
        let workers = ["w-a", "w-b", "w-c", "w-d"];
        let mut owned = [0u32; 4];
        for k in 0..4000u64 {
            let key = AffinityKey::from_bytes(&k.to_le_bytes());
            let best = (0..4)
                .min_by(|&a, &b| {
                    rendezvous_cmp(
                        (rendezvous_weight(key, workers[a]), workers[a]),
                        (rendezvous_weight(key, workers[b]), workers[b]),
                    )
                })
                .unwrap();
            owned[best] += 1;
        }
        // Each worker should own about a quarter; allow a wide statistical margin.
        assert!(owned.iter().all(|&n| (800..1200).contains(&n)), "{owned:?}");
    }
}
