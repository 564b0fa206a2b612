//! Queries over the embedded backend's tag and event-type indexes.
//!
//! Every event has a posting `(type, position)` in the type index and one
//! `(tag, position)` per tag in the tag index (see `keys`), written in the
//! append's batch. An item with tags walks the postings of its first tag and
//! keeps a position when the item's other tags (and one of its types) have
//! a posting at it too, point lookups that touch no event; an item with only
//! types walks the postings of each type. Items are merged by position, and
//! only the positions of the page are read from the log: reading a tag that
//! 10 events carry reads those 10 events.
//!
//! Every read goes through a [`Consistent`] view: the index and the log
//! read at one fjall snapshot, so a commit between the two reads (a
//! compaction removing hidden events with their postings) never shows an
//! index entry whose record is gone.

use std::collections::BTreeSet;

use fjall::Snapshot;
use gater_core::{Direction, Error, Position, Query, QueryItem};

use super::table::Iter;
use super::{fjall_error, keys, Tables};

/// A store's tables as of one instant: every read through it sees the same
/// commits, in both keyspaces.
pub(super) struct Consistent<'t> {
    pub(super) tables: &'t Tables,
    snapshot: Snapshot,
}

impl<'t> Consistent<'t> {
    /// The tables as they are now.
    pub(super) fn now(tables: &'t Tables) -> Consistent<'t> {
        Consistent {
            tables,
            snapshot: tables.db.snapshot(),
        }
    }

    /// The index entries in `range`.
    pub(super) fn index_range<K: AsRef<[u8]>>(&self, range: impl std::ops::RangeBounds<K>) -> Iter {
        self.tables.index.range_at(&self.snapshot, range)
    }

    /// The index entries under `prefix`.
    pub(super) fn index_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        self.tables.index.prefix_at(&self.snapshot, prefix)
    }

    /// Whether the index holds `key`.
    pub(super) fn index_has(&self, key: &[u8]) -> Result<bool, Error> {
        self.tables
            .index
            .contains_key_at(&self.snapshot, key)
            .map_err(fjall_error)
    }

    /// The log records in `range`.
    pub(super) fn log_range<K: AsRef<[u8]>>(&self, range: impl std::ops::RangeBounds<K>) -> Iter {
        self.tables.log.range_at(&self.snapshot, range)
    }

    /// The log record at `key`.
    pub(super) fn log_get(&self, key: &[u8]) -> Result<Option<fjall::Slice>, Error> {
        self.tables
            .log
            .get_at(&self.snapshot, key)
            .map_err(fjall_error)
    }
}

/// Up to `count` positions of events matching `query` (at least one item)
/// from `from` in `direction`, in that direction's order.
pub(super) fn positions(
    t: &Consistent<'_>,
    query: &Query,
    from: Position,
    count: usize,
    direction: Direction,
) -> Result<Vec<u64>, Error> {
    if let [item] = query.items.as_slice() {
        return item_positions(t, item, from, count, direction);
    }
    let mut found = BTreeSet::new();
    for item in &query.items {
        // Each item's own first `count` matches: the union's first `count`
        // are among them.
        found.extend(item_positions(t, item, from, count, direction)?);
    }
    Ok(in_order(found, count, direction))
}

/// The first position after `after` (from the start when `None`) of an
/// event matching `query`; an empty query matches any event.
pub(super) fn first_match(
    t: &Consistent<'_>,
    query: &Query,
    after: Option<Position>,
) -> Result<Option<Position>, Error> {
    let from = match after {
        Some(after) if after == Position::END => return Ok(None),
        Some(after) => after.next(),
        None => Position::START,
    };
    if query.items.is_empty() {
        return match t.log_range(keys::position_key(from.0)..).next() {
            Some(guard) => Ok(Some(Position(keys::decode_u64(
                &guard.key().map_err(fjall_error)?,
            )?))),
            None => Ok(None),
        };
    }
    let found = positions(t, query, from, 1, Direction::Forward)?;
    Ok(found.first().copied().map(Position))
}

/// Up to `count` positions matching `item`, in `direction` from `from`.
fn item_positions(
    t: &Consistent<'_>,
    item: &QueryItem,
    from: Position,
    count: usize,
    direction: Direction,
) -> Result<Vec<u64>, Error> {
    let type_prefixes: Vec<Vec<u8>> = item.types.iter().map(|ty| keys::type_prefix(ty)).collect();
    let Some((first_tag, other_tags)) = item.tags.split_first() else {
        // Types only: each type's postings are all matches; an event has
        // one type, so they are disjoint.
        if let [prefix] = type_prefixes.as_slice() {
            return postings(t, prefix, from, direction).take(count).collect();
        }
        let mut found = BTreeSet::new();
        for prefix in &type_prefixes {
            for position in postings(t, prefix, from, direction).take(count) {
                found.insert(position?);
            }
        }
        return Ok(in_order(found, count, direction));
    };
    let other_tags: Vec<Vec<u8>> = other_tags.iter().map(|tag| keys::tag_prefix(tag)).collect();
    let mut found = Vec::new();
    for position in postings(t, &keys::tag_prefix(first_tag), from, direction) {
        let position = position?;
        if has_all(t, &other_tags, position)?
            && (type_prefixes.is_empty() || has_any(t, &type_prefixes, position)?)
        {
            found.push(position);
            if found.len() >= count {
                break;
            }
        }
    }
    Ok(found)
}

/// The first `count` of `found` in `direction`'s order.
fn in_order(found: BTreeSet<u64>, count: usize, direction: Direction) -> Vec<u64> {
    match direction {
        Direction::Forward => found.into_iter().take(count).collect(),
        Direction::Backward => found.into_iter().rev().take(count).collect(),
    }
}

/// The positions posted under `prefix`, from `from` in `direction`.
fn postings<'t>(
    t: &'t Consistent<'_>,
    prefix: &[u8],
    from: Position,
    direction: Direction,
) -> Box<dyn Iterator<Item = Result<u64, Error>> + 't> {
    let decode =
        |guard: super::table::Entry| keys::decode_posting(&guard.key().map_err(fjall_error)?);
    match direction {
        Direction::Forward => Box::new(
            t.index_range(keys::posting_key(prefix, from.0)..=keys::posting_key(prefix, u64::MAX))
                .map(decode),
        ),
        Direction::Backward => Box::new(
            t.index_range(keys::posting_key(prefix, 0)..=keys::posting_key(prefix, from.0))
                .rev()
                .map(decode),
        ),
    }
}

fn has_all(t: &Consistent<'_>, prefixes: &[Vec<u8>], position: u64) -> Result<bool, Error> {
    for prefix in prefixes {
        if !has(t, prefix, position)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn has_any(t: &Consistent<'_>, prefixes: &[Vec<u8>], position: u64) -> Result<bool, Error> {
    for prefix in prefixes {
        if has(t, prefix, position)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn has(t: &Consistent<'_>, prefix: &[u8], position: u64) -> Result<bool, Error> {
    t.index_has(&keys::posting_key(prefix, position))
}
