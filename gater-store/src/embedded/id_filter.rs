//! A filter of the event ids a store holds, so that the writer's
//! idempotency check learns that an id is new without a lookup in the
//! event-id index (a miss there searches the memtable's skiplist and every
//! table's bloom filter).
//!
//! The writer is its store's only writer, so it can know every id stored:
//! the filter is seeded once from the event-id index (only when the store
//! holds at most [`SEED_SCAN_IDS_MAX`] events; a larger store keeps asking
//! the index) and takes every id the writer stages, before the commit, so
//! it holds whatever a failed commit may have left on disk too. Ids deleted
//! later (compaction) stay in it, which only costs a lookup. It is a
//! scalable bloom filter: layers of growing capacity, each a blocked bloom
//! filter (one 512-bit block per id) with more bits per id than the one
//! before, so the false positives of all layers together stay near
//! [`FIRST_LAYER_BITS_PER_ID`]'s rate. A false positive costs one lookup;
//! "absent" is never wrong.
//!
//! What it does not do: answer where an id is stored (the index does), or
//! grow without bound: past [`IDS_MAX`] ids it lets go of its memory and
//! answers "maybe" for every id.

use std::hash::BuildHasher;

use gater_core::EventId;

use crate::hashing::FastState;

/// Most ids the filter holds; past this it covers nothing (about 20 MiB).
pub(super) const IDS_MAX: u64 = 8 << 20;
/// Most events a store may hold when its filter is seeded: the seed scans
/// the event-id index once, in the writer's first batch.
pub(super) const SEED_SCAN_IDS_MAX: u64 = 1 << 20;
/// Ids the first layer holds; each further layer holds [`LAYER_GROWTH`] times more.
const FIRST_LAYER_IDS: u64 = 4_096;
/// How much larger each layer is than the one before.
const LAYER_GROWTH: u64 = 4;
/// Bits per id of the first layer (about 1 % false positives); each
/// further layer spends [`LAYER_EXTRA_BITS`] more.
const FIRST_LAYER_BITS_PER_ID: u64 = 10;
/// Bits per id a layer spends beyond the layer before it (each halves the rate).
const LAYER_EXTRA_BITS: u64 = 2;
/// Bits of one block: a cache line.
const BLOCK_BITS: u64 = 512;
/// u64 words of one block.
const BLOCK_WORDS: usize = (BLOCK_BITS / 64) as usize;

/// The ids a store holds, approximately: see the module docs.
#[derive(Debug)]
pub(super) struct IdFilter {
    /// Keys the id hash, so ids that collide are not predictable.
    hasher: FastState,
    coverage: Coverage,
    layers: Vec<Layer>,
}

/// Which ids the filter answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Coverage {
    /// Not yet seeded from the index: it answers for no id.
    Unseeded,
    /// Every id the store holds is in it.
    Complete,
    /// The store held too many ids to seed, or grew past [`IDS_MAX`]: it
    /// answers for no id until the store is reopened.
    Nothing,
}

/// One blocked bloom filter.
#[derive(Debug)]
struct Layer {
    blocks: Box<[[u64; BLOCK_WORDS]]>,
    /// Bits set per id.
    probes: u32,
    /// Ids it was sized for; the next id goes to a new layer.
    capacity: u64,
    len: u64,
}

impl Default for IdFilter {
    fn default() -> Self {
        IdFilter {
            hasher: FastState::default(),
            coverage: Coverage::Unseeded,
            layers: Vec::new(),
        }
    }
}

impl IdFilter {
    /// Which ids it answers for.
    pub(super) fn coverage(&self) -> Coverage {
        self.coverage
    }

    /// Marks the filter as holding every stored id, once `insert` took each.
    pub(super) fn seeded(&mut self) {
        if self.coverage == Coverage::Unseeded {
            self.coverage = Coverage::Complete;
        }
    }

    /// Gives up covering ids (the store holds too many to seed).
    pub(super) fn cover_nothing(&mut self) {
        self.coverage = Coverage::Nothing;
        self.layers = Vec::new();
    }

    /// `false` only when `id` is certainly not stored.
    pub(super) fn may_hold(&self, id: &EventId) -> bool {
        if self.coverage != Coverage::Complete {
            return true;
        }
        let hash = self.hasher.hash_one(id.as_bytes());
        self.layers.iter().any(|layer| layer.may_hold(hash))
    }

    /// Adds `id` (stored, or about to be).
    pub(super) fn insert(&mut self, id: &EventId) {
        if self.coverage == Coverage::Nothing {
            return;
        }
        let held: u64 = self.layers.iter().map(|l| l.len).sum();
        if held >= IDS_MAX {
            self.cover_nothing();
            return;
        }
        let hash = self.hasher.hash_one(id.as_bytes());
        let full = self.layers.last().is_none_or(|l| l.len >= l.capacity);
        if full {
            let n = self.layers.len() as u64;
            let capacity = FIRST_LAYER_IDS.saturating_mul(LAYER_GROWTH.saturating_pow(n as u32));
            self.layers.push(Layer::new(
                capacity,
                FIRST_LAYER_BITS_PER_ID + n * LAYER_EXTRA_BITS,
            ));
        }
        if let Some(layer) = self.layers.last_mut() {
            layer.insert(hash);
        }
    }

    /// Bytes the filter's layers take.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| std::mem::size_of_val(&*l.blocks))
            .sum()
    }
}

impl Layer {
    fn new(capacity: u64, bits_per_id: u64) -> Self {
        let blocks = (capacity * bits_per_id).div_ceil(BLOCK_BITS).max(1);
        // k = bits per id × ln 2 minimises false positives.
        let probes = ((bits_per_id as f64) * std::f64::consts::LN_2).round() as u32;
        Layer {
            blocks: vec![[0u64; BLOCK_WORDS]; blocks as usize].into_boxed_slice(),
            probes: probes.max(1),
            capacity,
            len: 0,
        }
    }

    /// The block of `hash` and the bit positions in it (double hashing).
    fn probes(&self, hash: u64) -> (usize, impl Iterator<Item = usize>) {
        let block = ((hash >> 32) * self.blocks.len() as u64) >> 32;
        let (h1, h2) = (hash as u32, (hash >> 16) as u32 | 1);
        let bits = (0..self.probes)
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % BLOCK_BITS as u32) as usize);
        (block as usize, bits)
    }

    fn insert(&mut self, hash: u64) {
        let (block, bits) = self.probes(hash);
        let words = &mut self.blocks[block];
        for bit in bits {
            words[bit / 64] |= 1 << (bit % 64);
        }
        self.len += 1;
    }

    fn may_hold(&self, hash: u64) -> bool {
        let (block, mut bits) = self.probes(hash);
        let words = &self.blocks[block];
        bits.all(|bit| words[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u64) -> EventId {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        bytes[15] = 0x5a;
        EventId::from_bytes(bytes)
    }

    fn seeded() -> IdFilter {
        let mut filter = IdFilter::default();
        filter.seeded();
        filter
    }

    proptest! {
        #[test]
        fn an_inserted_id_is_always_maybe_held(ids in proptest::collection::vec(any::<[u8; 16]>(), 1..64)) {
            let mut filter = seeded();
            for bytes in &ids {
                filter.insert(&EventId::from_bytes(*bytes));
            }
            for bytes in &ids {
                prop_assert!(filter.may_hold(&EventId::from_bytes(*bytes)));
            }
        }
    }

    #[test]
    fn every_id_of_many_layers_is_held_and_few_others_seem_to_be() {
        let mut filter = seeded();
        let n = FIRST_LAYER_IDS * (1 + LAYER_GROWTH) + 1_000;
        for i in 0..n {
            filter.insert(&id(i));
        }
        assert_eq!(filter.layers.len(), 3);
        assert!((0..n).all(|i| filter.may_hold(&id(i))));
        let probes = 100_000;
        let false_positives = (n..n + probes).filter(|&i| filter.may_hold(&id(i))).count();
        assert!(
            false_positives < (probes / 20) as usize,
            "{false_positives} false positives in {probes}"
        );
    }

    #[test]
    fn an_unseeded_filter_holds_every_id_and_a_seeded_empty_one_none() {
        let filter = IdFilter::default();
        assert_eq!(filter.coverage(), Coverage::Unseeded);
        assert!(filter.may_hold(&id(1)));
        let filter = seeded();
        assert!(!filter.may_hold(&id(1)));
        assert_eq!(filter.bytes(), 0, "an empty filter takes no memory");
    }

    #[test]
    fn a_filter_that_covers_nothing_holds_every_id_and_no_memory() {
        let mut filter = seeded();
        filter.insert(&id(1));
        filter.cover_nothing();
        assert!(filter.may_hold(&id(2)));
        filter.insert(&id(3));
        assert_eq!(filter.coverage(), Coverage::Nothing);
        assert_eq!(filter.bytes(), 0);
    }
}
