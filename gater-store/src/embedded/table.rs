//! One store's view of a keyspace every store of the worker shares: the
//! store's rows are the keys under its store number (`keys::StorePrefix`),
//! and a [`Table`] adds that prefix to every key it is given and strips it
//! from every key it hands back, so the rest of `embedded` builds and
//! decodes keys exactly as if the store had the keyspace to itself, and no
//! read of a store can reach another store's rows.
//!
//! It also keeps the store's byte count ([`StoreBatch`], [`Table::row_bytes`]): the
//! bytes of the keys (prefix included) and values of every row the store
//! holds in the shared keyspaces, the measure of a store's `disk_bytes` now
//! that it has no files of its own. It is logical (before compression,
//! tombstones and not-yet-compacted versions are not counted), exact, and
//! persisted in the store's counters row by every commit that changes it.

use std::ops::{Bound, RangeBounds};

use byteview::ByteView;
use fjall::{Keyspace, OwnedWriteBatch, Readable, Slice, Snapshot, UserKey, UserValue};

use super::keys::StorePrefix;

/// A store's rows in one shared keyspace.
#[derive(Clone)]
pub(super) struct Table {
    keyspace: Keyspace,
    prefix: StorePrefix,
}

impl Table {
    /// The rows under `prefix` in `keyspace`.
    pub(super) fn new(keyspace: Keyspace, prefix: StorePrefix) -> Self {
        Table { keyspace, prefix }
    }

    /// The shared keyspace itself (for writes, flushes and compactions).
    pub(super) fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    /// `key` under the store's prefix, as fjall stores it: built in place,
    /// in one allocation (none for short keys).
    pub(super) fn user_key(&self, key: &[u8]) -> UserKey {
        UserKey::from(ByteView::fused(self.prefix.as_bytes(), key))
    }

    /// The value at `key`.
    pub(super) fn get(&self, key: impl AsRef<[u8]>) -> fjall::Result<Option<Slice>> {
        self.keyspace.get(self.user_key(key.as_ref()))
    }

    /// The bytes of the value at `key`, if any.
    pub(super) fn size_of(&self, key: impl AsRef<[u8]>) -> fjall::Result<Option<u32>> {
        self.keyspace.size_of(self.user_key(key.as_ref()))
    }

    /// Every row of the store, in key order.
    pub(super) fn iter(&self) -> Iter {
        self.prefix([])
    }

    /// The rows whose keys start with `prefix`.
    pub(super) fn prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        self.rows(self.keyspace.prefix(self.user_key(prefix.as_ref())))
    }

    /// The rows in `range`; an open end stops at the end of the store's rows.
    pub(super) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        self.rows(self.keyspace.range::<UserKey, _>(self.bounds(range)))
    }

    /// The value at `key` as of `snapshot`.
    pub(super) fn get_at(
        &self,
        snapshot: &Snapshot,
        key: impl AsRef<[u8]>,
    ) -> fjall::Result<Option<Slice>> {
        snapshot.get(&self.keyspace, self.user_key(key.as_ref()))
    }

    /// Whether `key` holds a value as of `snapshot`.
    pub(super) fn contains_key_at(
        &self,
        snapshot: &Snapshot,
        key: impl AsRef<[u8]>,
    ) -> fjall::Result<bool> {
        snapshot.contains_key(&self.keyspace, self.user_key(key.as_ref()))
    }

    /// The rows whose keys start with `prefix`, as of `snapshot`.
    pub(super) fn prefix_at(&self, snapshot: &Snapshot, prefix: impl AsRef<[u8]>) -> Iter {
        self.rows(snapshot.prefix(&self.keyspace, self.user_key(prefix.as_ref())))
    }

    /// The rows in `range` as of `snapshot`; open ends as [`Table::range`].
    pub(super) fn range_at<K: AsRef<[u8]>, R: RangeBounds<K>>(
        &self,
        snapshot: &Snapshot,
        range: R,
    ) -> Iter {
        self.rows(snapshot.range::<UserKey, _>(&self.keyspace, self.bounds(range)))
    }

    fn rows(&self, rows: fjall::Iter) -> Iter {
        Iter {
            rows,
            prefix_len: self.prefix.as_bytes().len(),
        }
    }

    /// `range` in full keys, an open end stopping at the store's rows' end.
    fn bounds<K: AsRef<[u8]>, R: RangeBounds<K>>(
        &self,
        range: R,
    ) -> (Bound<UserKey>, Bound<UserKey>) {
        let lower = match range.start_bound() {
            Bound::Included(k) => Bound::Included(self.user_key(k.as_ref())),
            Bound::Excluded(k) => Bound::Excluded(self.user_key(k.as_ref())),
            Bound::Unbounded => Bound::Included(UserKey::from(self.prefix.as_bytes())),
        };
        let upper = match range.end_bound() {
            Bound::Included(k) => Bound::Included(self.user_key(k.as_ref())),
            Bound::Excluded(k) => Bound::Excluded(self.user_key(k.as_ref())),
            Bound::Unbounded => match self.prefix.successor() {
                Some(next) => Bound::Excluded(UserKey::from(&next[..])),
                None => Bound::Unbounded,
            },
        };
        (lower, upper)
    }

    /// The store's last row.
    pub(super) fn last_key_value(&self) -> Option<Entry> {
        self.iter().next_back()
    }

    /// What a row of `key` (without the store prefix) and `value_len`
    /// bytes of value adds to its store's byte count.
    pub(super) fn row_bytes(&self, key: &[u8], value_len: usize) -> i64 {
        (self.prefix.as_bytes().len() + key.len() + value_len) as i64
    }
}

/// Rows of a [`Table`], their keys without the store prefix.
pub(super) struct Iter {
    rows: fjall::Iter,
    /// Bytes of the store prefix to strip from every key.
    prefix_len: usize,
}

impl Iterator for Iter {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let prefix_len = self.prefix_len;
        self.rows.next().map(|guard| Entry { guard, prefix_len })
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Entry> {
        let prefix_len = self.prefix_len;
        self.rows
            .next_back()
            .map(|guard| Entry { guard, prefix_len })
    }
}

/// One row of a [`Table`]; read like `fjall::Guard`.
pub(super) struct Entry {
    guard: fjall::Guard,
    prefix_len: usize,
}

impl Entry {
    /// The row's key, without the store prefix.
    pub(super) fn key(self) -> fjall::Result<UserKey> {
        let prefix_len = self.prefix_len;
        self.guard.key().map(|k| strip(&k, prefix_len))
    }

    /// The row's value.
    pub(super) fn value(self) -> fjall::Result<UserValue> {
        self.guard.value()
    }

    /// The row's key (without the store prefix) and value.
    pub(super) fn into_inner(self) -> fjall::Result<(UserKey, UserValue)> {
        let prefix_len = self.prefix_len;
        self.guard
            .into_inner()
            .map(|(k, v)| (strip(&k, prefix_len), v))
    }
}

fn strip(key: &[u8], prefix_len: usize) -> UserKey {
    // Every key of a table's iterator starts with its prefix.
    Slice::from(key.get(prefix_len..).unwrap_or_default())
}

/// A fjall batch of one store's writes that counts what they change of
/// the store's bytes (see the module docs); the store commits it with its
/// counters row (`StoreInner::commit_counted`).
pub(super) struct StoreBatch {
    pub(super) batch: OwnedWriteBatch,
    /// Bytes the batch adds to the store (negative: removes).
    pub(super) delta: i64,
}

impl StoreBatch {
    pub(super) fn new(batch: OwnedWriteBatch) -> Self {
        StoreBatch { batch, delta: 0 }
    }

    /// Writes `value` at `key`, replacing what is there.
    pub(super) fn put(
        &mut self,
        table: &Table,
        key: impl AsRef<[u8]>,
        value: impl Into<UserValue>,
    ) -> fjall::Result<()> {
        let key = key.as_ref();
        let value = value.into();
        if let Some(old) = table.size_of(key)? {
            self.delta -= table.row_bytes(key, old as usize);
        }
        self.delta += table.row_bytes(key, value.len());
        self.batch
            .insert(table.keyspace(), table.user_key(key), value);
        Ok(())
    }

    /// Removes `key`, if it holds a value.
    pub(super) fn remove(&mut self, table: &Table, key: impl AsRef<[u8]>) -> fjall::Result<()> {
        let key = key.as_ref();
        if let Some(old) = table.size_of(key)? {
            self.remove_known(table, key, old as usize);
        }
        Ok(())
    }

    /// Removes `key`, known to hold `value_len` bytes.
    pub(super) fn remove_known(&mut self, table: &Table, key: impl AsRef<[u8]>, value_len: usize) {
        let key = key.as_ref();
        self.delta -= table.row_bytes(key, value_len);
        self.batch.remove(table.keyspace(), table.user_key(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_reads_only_its_own_store_and_hands_back_keys_without_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let keyspace = db
            .keyspace("index", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let (a, b, last, wide) = (
            Table::new(keyspace.clone(), StorePrefix::short(1)),
            Table::new(keyspace.clone(), StorePrefix::short(200)),
            Table::new(keyspace.clone(), StorePrefix::short(u32::MAX)),
            Table::new(keyspace, StorePrefix::wide(1)),
        );
        for table in [&a, &b, &last, &wide] {
            for key in [&b"k1"[..], b"k2", b"\xff\xff"] {
                table.keyspace().insert(table.user_key(key), key).unwrap();
            }
        }
        let keys =
            |iter: Iter| -> Vec<Vec<u8>> { iter.map(|e| e.key().unwrap().to_vec()).collect() };
        let all = vec![b"k1".to_vec(), b"k2".to_vec(), b"\xff\xff".to_vec()];
        for table in [&a, &b, &last, &wide] {
            assert_eq!(keys(table.iter()), all);
            assert_eq!(keys(table.range::<&[u8], _>(..)), all);
            assert_eq!(keys(table.range(&b"k2"[..]..)), all[1..].to_vec());
            assert_eq!(keys(table.prefix(b"k")), all[..2].to_vec());
            let backward: Vec<Vec<u8>> = table
                .iter()
                .rev()
                .map(|e| e.key().unwrap().to_vec())
                .collect();
            assert_eq!(backward, all.iter().rev().cloned().collect::<Vec<_>>());
            assert_eq!(table.last_key_value().unwrap().key().unwrap(), b"\xff\xff");
        }
        b.keyspace().remove(b.user_key(b"k1")).unwrap();
        assert!(a.get(b"k1").unwrap().is_some());
        assert!(b.get(b"k1").unwrap().is_none());
        assert_eq!(a.get(b"k2").unwrap().as_deref(), Some(&b"k2"[..]));
    }
}
