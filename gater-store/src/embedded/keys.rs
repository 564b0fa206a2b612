//! Byte layouts of the embedded backend's keys and small values.
//!
//! Every store of a worker shares the database's `log` and `index`
//! keyspaces: each key a store writes starts with its store number
//! ([`StorePrefix`], allocated from the catalog and never reused), so a
//! store's rows are one contiguous range of each keyspace and no range of
//! one store reaches into another's. The functions below build the keys
//! *within* a store; `table` adds and strips the store prefix, so nothing
//! else handles it.
//!
//! A store prefix is short ([`StorePrefix::short`]): a prefix-free,
//! order-preserving code of one byte for the first 127 stores, two for
//! the next 16,384, up to five, never starting with a NUL. Short keys
//! matter to fjall: its keys keep their first four bytes inline for
//! comparisons and are stored inline up to 20 bytes, and a long common
//! prefix on every key sends every comparison of a memtable insert to
//! `memcmp` and every event-id key to the heap. Databases of the first
//! shared layout gave every store four big-endian bytes
//! ([`StorePrefix::wide`]); their stores keep those until `db` has
//! renumbered them, and the catalog's layout row ([`LAYOUT_KEY`]) holds
//! the first number of the short code: numbers below it are wide. Since
//! wide numbers stay below [`WIDE_NUMBERS_END`], every wide prefix starts
//! with a NUL and no wide prefix shares a byte range with a short one.
//!
//! Everything but the global log lives in the `index` keyspace, each table
//! under its own one-byte prefix after the store's.
//!
//! The catalog keyspace maps a store id to its number and config
//! ([`catalog_value`]); its other rows start with a dot, which no store id
//! holds: the next store number ([`NEXT_NUMBER_KEY`]) and the numbers whose
//! rows are being deleted ([`dead_key`]).
//!
//! Every numeric key part is big-endian so that byte order is numeric order:
//! range scans over positions and versions need no decoding. Stream ids never
//! hold a NUL (control characters are refused), so a NUL ends a stream id in
//! a composite key. Snapshot sources and streams may hold any byte, so they
//! use an order-preserving escape instead.

use std::ops::Bound;

use gater_core::{Error, Position, SnapshotKey, StreamId, SubscriptionKey, Version};

use crate::backend::Counters;
use crate::stage::Location;

/// Table prefix of the stream index: (stream, version) → position.
const STREAMS: u8 = b's';
/// Table prefix of the event-id index: id → (stream, version, position).
const IDS: u8 = b'i';
// Prefix `h` held stream heads (stream → version) in stores made before the
// stream index answered versions; such rows are left alone and never read.
/// Table prefix of snapshots.
const SNAPSHOTS: u8 = b'p';
/// Table prefix of the tag index: (tag, position) → nothing.
const TAGS: u8 = b't';
/// Table prefix of the event-type index: (event type, position) → nothing.
const TYPES: u8 = b'y';
/// Table prefix of stream lifecycle states: stream → postcard `StreamLifecycle`.
pub(super) const LIFECYCLES: [u8; 1] = [b'l'];
/// Table prefix of subscription records.
pub(super) const SUBSCRIPTIONS: [u8; 1] = [b'u'];
/// The meta row holding the counters.
pub(super) const COUNTERS_KEY: &[u8] = b"mcounters";
/// The meta row holding the config.
pub(super) const CONFIG_KEY: &[u8] = b"mconfig";

/// Most bytes of a LEB128 varint of a u64.
const VARINT_BYTES_MAX: usize = 10;
/// Bytes of a store number in catalog rows (big-endian).
pub(super) const NUMBER_LEN: usize = 4;
/// Bytes of the longest store prefix.
pub(super) const STORE_PREFIX_LEN_MAX: usize = 5;
/// Store numbers with a wide prefix stay below this: their prefixes all
/// start with a NUL, which no short prefix does.
pub(super) const WIDE_NUMBERS_END: u32 = 1 << 24;
/// The catalog row holding the first store number of the short prefix
/// code (absent in databases of the wide layout, see the module docs).
pub(super) const LAYOUT_KEY: &[u8] = b".layout";
/// The catalog row holding the next store number to allocate.
pub(super) const NEXT_NUMBER_KEY: &[u8] = b".next";
/// Starts the catalog rows of store numbers whose rows are being deleted.
pub(super) const DEAD_PREFIX: &[u8] = b".dead";
/// Bytes of the counters row's value.
pub(super) const COUNTERS_LEN: usize = 32;
/// Bytes of the counters row's value in layouts before the byte count.
const COUNTERS_LEN_UNCOUNTED: usize = 24;

/// Ends a stream id inside a stream-index key.
const STREAM_END: u8 = 0x00;
/// Escape byte of snapshot key parts; followed by [`ESCAPED_NUL`] or [`PART_END`].
const ESCAPE: u8 = 0x00;
/// `ESCAPE` then this stands for a NUL inside a part.
const ESCAPED_NUL: u8 = 0xFF;
/// `ESCAPE` then this ends a part; it sorts before every continuation.
const PART_END: u8 = 0x01;

/// The first bytes of every key of one store in a shared keyspace.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct StorePrefix {
    bytes: [u8; STORE_PREFIX_LEN_MAX],
    len: u8,
}

/// The short code's two- to four-byte classes: the tag of their first
/// byte, the bits of the number they hold, and their length in bytes.
const SHORT_CLASSES: [(u8, u32, usize); 3] = [(0x80, 14, 2), (0xC0, 21, 3), (0xE0, 28, 4)];
/// The tag and length of the short code's last class, which holds every
/// number past the others in four bytes after its tag byte.
const SHORT_LAST_CLASS: (u8, usize) = (0xF0, 5);
/// Numbers the one-byte class holds (bytes 0x01 to 0x7F).
const SHORT_ONE_BYTE: u32 = 0x7F;

impl StorePrefix {
    /// The prefix of store `number` in the short code: 0x01–0x7F for the
    /// first 127 numbers, then classes of two to five bytes whose first
    /// byte's high bits say the length (as UTF-8 does), each holding the
    /// numbers past the previous ones in big-endian order. Lengths are
    /// known from the first byte (prefix-free) and byte order is number
    /// order; no prefix starts with a NUL.
    pub(super) fn short(number: u32) -> Self {
        if number < SHORT_ONE_BYTE {
            return Self::from_slice(&[number as u8 + 1]);
        }
        let mut rest = u64::from(number - SHORT_ONE_BYTE);
        for (tag, bits, len) in SHORT_CLASSES {
            if rest < 1 << bits {
                return Self::tagged(rest, tag, len);
            }
            rest -= 1 << bits;
        }
        let (tag, len) = SHORT_LAST_CLASS;
        Self::tagged(rest, tag, len)
    }

    /// The last `len` big-endian bytes of `rest`, `tag` set in the first.
    fn tagged(rest: u64, tag: u8, len: usize) -> Self {
        let mut prefix = Self::from_slice(&rest.to_be_bytes()[8 - len..]);
        prefix.bytes[0] |= tag;
        prefix
    }

    /// The prefix of store `number` in the first shared layout: four
    /// big-endian bytes.
    pub(super) fn wide(number: u32) -> Self {
        Self::from_slice(&number.to_be_bytes())
    }

    /// The prefix of store `number` in a database whose short code starts
    /// at number `short_from` (the catalog's [`LAYOUT_KEY`]).
    pub(super) fn of(number: u32, short_from: u32) -> Self {
        if number < short_from {
            Self::wide(number)
        } else {
            Self::short(number)
        }
    }

    fn from_slice(slice: &[u8]) -> Self {
        let mut bytes = [0; STORE_PREFIX_LEN_MAX];
        bytes[..slice.len()].copy_from_slice(slice);
        StorePrefix {
            bytes,
            len: slice.len() as u8,
        }
    }

    /// The prefix's bytes.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The first key after every key that starts with this prefix (`None`
    /// when no key is: the prefix is all 0xFF).
    pub(super) fn successor(&self) -> Option<Vec<u8>> {
        let bytes = self.as_bytes();
        let last = bytes.iter().rposition(|&b| b != 0xFF)?;
        let mut next = bytes[..=last].to_vec();
        next[last] += 1;
        Some(next)
    }
}

/// A store number as catalog rows hold it: four big-endian bytes.
pub(super) fn number_bytes(number: u32) -> [u8; NUMBER_LEN] {
    number.to_be_bytes()
}

/// The catalog value of a store: its number, then its postcard config.
pub(super) fn catalog_value(number: u32, config: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(NUMBER_LEN + config.len());
    value.extend_from_slice(&number_bytes(number));
    value.extend_from_slice(config);
    value
}

/// Decodes a catalog value into the store's number and postcard config.
pub(super) fn decode_catalog_value(bytes: &[u8]) -> Result<(u32, &[u8]), Error> {
    let Some((number, config)) = bytes.split_first_chunk::<NUMBER_LEN>() else {
        return Err(corrupt("catalog value too short"));
    };
    Ok((u32::from_be_bytes(*number), config))
}

/// Decodes a store number of the catalog (its next number, its layout row).
pub(super) fn decode_number(bytes: &[u8]) -> Result<u32, Error> {
    let array: [u8; NUMBER_LEN] = bytes
        .try_into()
        .map_err(|_| corrupt("store number is not 4 bytes"))?;
    Ok(u32::from_be_bytes(array))
}

/// The catalog row marking store number `number`'s rows as being deleted.
pub(super) fn dead_key(number: u32) -> Vec<u8> {
    let mut key = DEAD_PREFIX.to_vec();
    key.extend_from_slice(&number_bytes(number));
    key
}

/// Decodes a [`dead_key`] into its store number.
pub(super) fn decode_dead_key(bytes: &[u8]) -> Result<u32, Error> {
    let number = bytes
        .strip_prefix(DEAD_PREFIX)
        .ok_or_else(|| corrupt("not a dead-store row"))?;
    decode_number(number)
}

/// The global-log key of `position`.
pub(super) fn position_key(position: u64) -> [u8; 8] {
    position.to_be_bytes()
}

/// Decodes a big-endian u64 (log keys, stream-index values, heads).
pub(super) fn decode_u64(bytes: &[u8]) -> Result<u64, Error> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}

/// The stream-index key of `(stream, version)`.
pub(super) fn stream_key(stream: &str, version: Version) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    put_stream_key(&mut key, stream, version);
    key
}

/// Appends the stream-index key of `(stream, version)` to `key` (the
/// writer reuses one buffer for every key of a batch).
pub(super) fn put_stream_key(key: &mut Vec<u8>, stream: &str, version: Version) {
    key.push(STREAMS);
    key.extend_from_slice(stream.as_bytes());
    key.push(STREAM_END);
    key.extend_from_slice(&version.to_be_bytes());
}

/// The lifecycle key of `stream`.
pub(super) fn lifecycle_key(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 1);
    key.extend_from_slice(&LIFECYCLES);
    key.extend_from_slice(stream.as_bytes());
    key
}

/// Decodes a lifecycle key into its stream id.
pub(super) fn decode_lifecycle_key(bytes: &[u8]) -> Result<String, Error> {
    let stream = strip(bytes, LIFECYCLES[0])?;
    std::str::from_utf8(stream)
        .map(str::to_owned)
        .map_err(|_| corrupt("lifecycle key is not UTF-8"))
}

/// The event-id index key of `id`.
pub(super) fn id_key(id: &gater_core::EventId) -> [u8; 17] {
    let mut key = [IDS; 17];
    key[1..].copy_from_slice(id.as_bytes());
    key
}

/// The prefix of every event-id index key.
pub(super) fn ids_all() -> [u8; 1] {
    [IDS]
}

/// Decodes an event-id index key into its id.
pub(super) fn decode_id_key(bytes: &[u8]) -> Result<gater_core::EventId, Error> {
    let id: [u8; 16] = strip(bytes, IDS)?
        .try_into()
        .map_err(|_| corrupt("event-id index key is not 17 bytes"))?;
    Ok(gater_core::EventId::from_bytes(id))
}

/// The prefix of every stream-index key of `stream`: its last key holds
/// the stream's version, so the index is also the table of stream heads.
pub(super) fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 10);
    key.push(STREAMS);
    key.extend_from_slice(stream.as_bytes());
    key.push(STREAM_END);
    key
}

/// The first stream-index key of any stream after `after` (of the first
/// stream when `None`), and the end of the stream index.
pub(super) fn streams_after(after: Option<&str>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = match after {
        // Stream ids hold no control characters, so every key of a later
        // stream sorts at or after `after` + 0x01, and every key of `after`
        // (`after` + 0x00 + version) before it.
        Some(after) => {
            let mut key = Vec::with_capacity(after.len() + 2);
            key.push(STREAMS);
            key.extend_from_slice(after.as_bytes());
            key.push(STREAM_END + 1);
            Bound::Included(key)
        }
        None => Bound::Included(vec![STREAMS]),
    };
    (lower, Bound::Excluded(vec![STREAMS + 1]))
}

/// Decodes a stream-index key into its stream id and version.
pub(super) fn decode_stream_key(bytes: &[u8]) -> Result<(StreamId, Version), Error> {
    let bytes = strip(bytes, STREAMS)?;
    if bytes.len() < 9 || bytes[bytes.len() - 9] != STREAM_END {
        return Err(corrupt("stream-index key too short"));
    }
    let (stream, version) = bytes.split_at(bytes.len() - 9);
    let text = std::str::from_utf8(stream).map_err(|_| corrupt("stream id is not UTF-8"))?;
    let stream = StreamId::new(text).map_err(|e| corrupt(format!("stored stream id: {e}")))?;
    Ok((stream, decode_u64(&version[1..])?))
}

/// The prefix of every tag-index key of `tag`: the table byte, the tag's
/// length (big-endian u16, so no tag's keys share a prefix with a longer
/// tag's) and the tag; a big-endian position follows.
pub(super) fn tag_prefix(tag: &str) -> Vec<u8> {
    length_prefixed(TAGS, tag)
}

/// The prefix of every event-type-index key of `event_type`, laid out as
/// [`tag_prefix`].
pub(super) fn type_prefix(event_type: &str) -> Vec<u8> {
    length_prefixed(TYPES, event_type)
}

/// Appends the type-index key of `(event_type, position)` to `key`.
pub(super) fn put_type_posting(key: &mut Vec<u8>, event_type: &str, position: u64) {
    put_length_prefixed(key, TYPES, event_type);
    key.extend_from_slice(&position.to_be_bytes());
}

/// Appends the tag-index key of `(tag, position)` to `key`.
pub(super) fn put_tag_posting(key: &mut Vec<u8>, tag: &str, position: u64) {
    put_length_prefixed(key, TAGS, tag);
    key.extend_from_slice(&position.to_be_bytes());
}

/// `prefix` (from [`tag_prefix`] or [`type_prefix`]) followed by `position`.
pub(super) fn posting_key(prefix: &[u8], position: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&position.to_be_bytes());
    key
}

/// The position at the end of a tag- or type-index key.
pub(super) fn decode_posting(key: &[u8]) -> Result<u64, Error> {
    let start = key
        .len()
        .checked_sub(8)
        .ok_or_else(|| corrupt("index posting key too short"))?;
    decode_u64(&key[start..])
}

fn length_prefixed(table: u8, text: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(text.len() + 11);
    put_length_prefixed(&mut key, table, text);
    key
}

fn put_length_prefixed(key: &mut Vec<u8>, table: u8, text: &str) {
    // Tags and event types are at most 256 bytes (checked before they are stored).
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    key.push(table);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(text.as_bytes());
}

/// The subscription-record key of `key`.
pub(super) fn subscription_key(key: &SubscriptionKey) -> Result<Vec<u8>, postcard::Error> {
    let mut bytes = SUBSCRIPTIONS.to_vec();
    postcard::to_io(key, &mut bytes)?;
    Ok(bytes)
}

/// The event-id index value: where an event was stored.
#[cfg(test)]
fn id_value(stream: &str, version: Version, position: Position) -> Vec<u8> {
    let mut value = Vec::with_capacity(16 + stream.len());
    put_id_value(&mut value, stream, version, position);
    value
}

/// Starts an event-id index value of the compact layout. Values of the
/// earlier layout start with the big-endian version's high byte, which is
/// 0xFF only for versions past 2^63 that no stream reaches (every event
/// of a stream takes a position of the store too).
const ID_VALUE_COMPACT: u8 = 0xFF;
/// Bytes of an event-id index value of the earlier layout before its stream id.
const ID_VALUE_WIDE_HEADER: usize = 16;

/// Appends the event-id index value of an event stored at `(stream,
/// version)`, `position` to `value`: [`ID_VALUE_COMPACT`], the version and
/// the position as LEB128 varints, then the stream id. A value of at most
/// 20 bytes (streams of up to a dozen bytes for the first versions and
/// positions) is kept inline by fjall, no allocation of its own.
pub(super) fn put_id_value(
    value: &mut Vec<u8>,
    stream: &str,
    version: Version,
    position: Position,
) {
    value.push(ID_VALUE_COMPACT);
    put_varint(value, version);
    put_varint(value, position.0);
    value.extend_from_slice(stream.as_bytes());
}

/// Decodes an event-id index value of either layout, borrowing the stream
/// id from it.
pub(super) fn decode_id_value(bytes: &[u8]) -> Result<Location<'_>, Error> {
    let (version, position, stream) = match bytes.split_first() {
        Some((&ID_VALUE_COMPACT, rest)) => {
            let (version, rest) = take_varint(rest)?;
            let (position, stream) = take_varint(rest)?;
            (version, position, stream)
        }
        _ if bytes.len() > ID_VALUE_WIDE_HEADER => {
            let (version, rest) = bytes.split_at(8);
            let (position, stream) = rest.split_at(8);
            (decode_u64(version)?, decode_u64(position)?, stream)
        }
        _ => return Err(corrupt("event-id index value too short")),
    };
    if stream.is_empty() {
        return Err(corrupt("event-id index value without a stream id"));
    }
    let stream = std::str::from_utf8(stream).map_err(|_| corrupt("stream id is not UTF-8"))?;
    Ok(Location {
        stream,
        version,
        position: Position(position),
    })
}

/// Appends `n` as a LEB128 varint: seven bits a byte, low bits first, the
/// high bit set on every byte but the last.
fn put_varint(bytes: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        bytes.push(n as u8 | 0x80);
        n >>= 7;
    }
    bytes.push(n as u8);
}

/// Decodes a LEB128 varint from the start of `bytes`; the rest follows.
fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), Error> {
    let mut n = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(VARINT_BYTES_MAX) {
        let bits = u64::from(byte & 0x7F);
        let shift = 7 * i as u32;
        if shift == 63 && bits > 1 {
            return Err(corrupt("varint past u64"));
        }
        n |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok((n, &bytes[i + 1..]));
        }
    }
    Err(corrupt("unterminated varint"))
}

/// The snapshot key of `(source, stream, version)`.
pub(super) fn snapshot_key(key: &SnapshotKey) -> Vec<u8> {
    let mut bytes = snapshot_prefix(&key.source, Some(&key.stream));
    bytes.extend_from_slice(&key.version.to_be_bytes());
    bytes
}

/// The prefix shared by every snapshot of `source` (and `stream`, when given).
pub(super) fn snapshot_prefix(source: &str, stream: Option<&str>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(source.len() + stream.map_or(0, str::len) + 13);
    bytes.push(SNAPSHOTS);
    push_part(&mut bytes, source.as_bytes());
    if let Some(stream) = stream {
        push_part(&mut bytes, stream.as_bytes());
    }
    bytes
}

/// The prefix of every snapshot key.
pub(super) fn snapshots_all() -> [u8; 1] {
    [SNAPSHOTS]
}

/// Decodes a snapshot key.
pub(super) fn decode_snapshot_key(bytes: &[u8]) -> Result<SnapshotKey, Error> {
    let (source, rest) = take_part(strip(bytes, SNAPSHOTS)?)?;
    let (stream, rest) = take_part(rest)?;
    Ok(SnapshotKey {
        source,
        stream,
        version: decode_u64(rest)?,
    })
}

/// Encodes the counters row of the meta table: the counters, then the
/// bytes the store's rows hold (see `table::StoreBytes`).
pub(super) fn encode_counters(counters: &Counters, store_bytes: u64) -> [u8; COUNTERS_LEN] {
    let mut bytes = [0; COUNTERS_LEN];
    let next = counters.head.map_or(0, |h| h.0 + 1);
    bytes[..8].copy_from_slice(&next.to_be_bytes());
    bytes[8..16].copy_from_slice(&counters.event_count.to_be_bytes());
    bytes[16..24].copy_from_slice(&counters.stream_count.to_be_bytes());
    bytes[24..].copy_from_slice(&store_bytes.to_be_bytes());
    bytes
}

/// Decodes the counters row of the meta table, and the store's byte count
/// (`None` in a row of a layout before the byte count).
pub(super) fn decode_counters(bytes: &[u8]) -> Result<(Counters, Option<u64>), Error> {
    let store_bytes = match bytes.len() {
        COUNTERS_LEN => Some(decode_u64(&bytes[24..])?),
        COUNTERS_LEN_UNCOUNTED => None,
        other => return Err(corrupt(format!("counters row is {other} bytes"))),
    };
    let next = decode_u64(&bytes[..8])?;
    let counters = Counters {
        head: next.checked_sub(1).map(Position),
        event_count: decode_u64(&bytes[8..16])?,
        stream_count: decode_u64(&bytes[16..24])?,
    };
    Ok((counters, store_bytes))
}

/// A storage error for bytes that do not decode.
pub(super) fn corrupt(what: impl std::fmt::Display) -> Error {
    crate::faults::failed(format!("corrupt data: {what}"))
}

fn strip(bytes: &[u8], table: u8) -> Result<&[u8], Error> {
    match bytes.split_first() {
        Some((&first, rest)) if first == table => Ok(rest),
        _ => Err(corrupt("key of another table")),
    }
}

fn push_part(bytes: &mut Vec<u8>, part: &[u8]) {
    for &b in part {
        if b == 0 {
            bytes.extend_from_slice(&[ESCAPE, ESCAPED_NUL]);
        } else {
            bytes.push(b);
        }
    }
    bytes.extend_from_slice(&[ESCAPE, PART_END]);
}

fn take_part(bytes: &[u8]) -> Result<(String, &[u8]), Error> {
    let mut part = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != ESCAPE {
            part.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(&ESCAPED_NUL) => part.push(0),
            Some(&PART_END) => {
                let text = String::from_utf8(part).map_err(|_| corrupt("snapshot key part"))?;
                return Ok((text, &bytes[i + 2..]));
            }
            _ => return Err(corrupt("snapshot key escape")),
        }
        i += 2;
    }
    Err(corrupt("unterminated snapshot key part"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(source: &str, stream: &str, version: u64) -> SnapshotKey {
        SnapshotKey {
            source: source.to_owned(),
            stream: stream.to_owned(),
            version,
        }
    }

    proptest! {
        #[test]
        fn snapshot_keys_round_trip_and_sort_like_the_key_type(
            a in ("[a\\x00b]{0,4}", "[a\\x00b]{0,4}", 0u64..4),
            b in ("[a\\x00b]{0,4}", "[a\\x00b]{0,4}", 0u64..4),
        ) {
            let a = key(&a.0, &a.1, a.2);
            let b = key(&b.0, &b.1, b.2);
            let (ea, eb) = (snapshot_key(&a), snapshot_key(&b));
            prop_assert_eq!(decode_snapshot_key(&ea).unwrap(), a.clone());
            prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
        }
    }

    #[test]
    fn stream_keys_of_one_stream_do_not_share_a_prefix_with_longer_ids() {
        let a = stream_key("a", u64::MAX);
        let ab = stream_key("ab", 0);
        assert!(a < ab);
        let prefix = stream_prefix("a");
        assert!(a.starts_with(&prefix) && !ab.starts_with(&prefix));
    }

    #[test]
    fn stream_keys_decode_to_their_stream_and_version() {
        for (stream, version) in [("a", 0), ("order-17", 41), ("é$x", u64::MAX)] {
            let (decoded, v) = decode_stream_key(&stream_key(stream, version)).unwrap();
            assert_eq!((decoded.as_str(), v), (stream, version));
        }
        assert!(decode_stream_key(&[STREAMS, b'a']).is_err());
        assert!(decode_stream_key(&stream_key("a", 1)[..9]).is_err());
    }

    proptest! {
        #[test]
        fn streams_after_a_stream_start_after_all_its_keys_and_before_every_later_stream(
            a in "[ -~]{1,8}", b in "[ -~]{1,8}", version in any::<u64>(),
        ) {
            let (Bound::Included(lower), _) = streams_after(Some(&a)) else {
                panic!("the lower bound is inclusive");
            };
            prop_assert!(stream_key(&a, version) < lower);
            if b > a {
                prop_assert!(stream_key(&b, 0) >= lower);
            } else {
                prop_assert!(stream_key(&b, version) < lower);
            }
        }
    }

    #[test]
    fn counters_round_trip_including_an_empty_log() {
        for counters in [
            Counters::default(),
            Counters {
                head: Some(Position(0)),
                event_count: 1,
                stream_count: 1,
            },
        ] {
            assert_eq!(
                decode_counters(&encode_counters(&counters, 77)).unwrap(),
                (counters, Some(77))
            );
        }
        let earlier = &encode_counters(&Counters::default(), 0)[..COUNTERS_LEN_UNCOUNTED];
        assert_eq!(
            decode_counters(earlier).unwrap(),
            (Counters::default(), None)
        );
        assert!(decode_counters(&[0; 9]).is_err());
    }

    #[test]
    fn catalog_rows_round_trip_and_dead_rows_never_look_like_a_store_id() {
        let value = catalog_value(70_000, b"config");
        assert_eq!(
            decode_catalog_value(&value).unwrap(),
            (70_000, &b"config"[..])
        );
        assert!(decode_catalog_value(&[1, 2]).is_err());
        let dead = dead_key(9);
        assert_eq!(decode_dead_key(&dead).unwrap(), 9);
        assert!(gater_core::StoreId::new(String::from_utf8_lossy(&dead)).is_err());
        assert!(gater_core::StoreId::new(String::from_utf8_lossy(NEXT_NUMBER_KEY)).is_err());
    }

    /// Numbers around every class boundary of the short code, and random ones.
    fn number() -> impl Strategy<Value = u32> {
        let edges: Vec<u32> = [0u64, 0x7F, 0x7F + (1 << 14), 0x7F + (1 << 14) + (1 << 21)]
            .into_iter()
            .chain([0x7F + (1 << 14) + (1 << 21) + (1 << 28)])
            .flat_map(|edge| [edge.saturating_sub(1), edge, edge + 1])
            .chain([u64::from(u32::MAX) - 1, u64::from(u32::MAX)])
            .map(|n| n as u32)
            .collect();
        prop_oneof![proptest::sample::select(edges), any::<u32>()]
    }

    proptest! {
        #[test]
        fn short_prefixes_sort_as_their_numbers_and_none_starts_another_or_with_a_nul(
            a in number(), b in number(),
        ) {
            let (pa, pb) = (StorePrefix::short(a), StorePrefix::short(b));
            prop_assert_eq!(pa.as_bytes().cmp(pb.as_bytes()), a.cmp(&b));
            prop_assert_eq!(pa.as_bytes().starts_with(pb.as_bytes()), a == b);
            prop_assert_ne!(pa.as_bytes()[0], 0);
            // Every key under a prefix sorts before its successor, which
            // sorts at or before the next store's prefix.
            let mut key = pa.as_bytes().to_vec();
            key.extend_from_slice(&[0xFF; 12]);
            match pa.successor() {
                Some(next) => {
                    prop_assert!(key < next);
                    if let Some(c) = a.checked_add(1) {
                        prop_assert!(next.as_slice() <= StorePrefix::short(c).as_bytes());
                    }
                }
                None => prop_assert_eq!(a, u32::MAX),
            }
        }

        #[test]
        fn wide_prefixes_sort_as_their_numbers_and_never_meet_a_short_one(
            a in 0..WIDE_NUMBERS_END, b in number(),
        ) {
            let wide = StorePrefix::wide(a);
            prop_assert_eq!(wide.as_bytes(), &a.to_be_bytes()[..]);
            prop_assert!(wide.successor().unwrap().as_slice() <= StorePrefix::short(b).as_bytes());
        }
    }

    #[test]
    fn the_first_stores_have_one_byte_prefixes() {
        assert_eq!(StorePrefix::short(0).as_bytes(), [0x01]);
        assert_eq!(StorePrefix::short(126).as_bytes(), [0x7F]);
        assert_eq!(StorePrefix::short(127).as_bytes(), [0x80, 0x00]);
        assert_eq!(StorePrefix::short(u32::MAX).as_bytes().len(), 5);
        assert_eq!(StorePrefix::of(3, 5), StorePrefix::wide(3));
        assert_eq!(StorePrefix::of(5, 5), StorePrefix::short(5));
    }

    proptest! {
        #[test]
        fn postings_of_one_tag_sort_by_position_and_never_share_a_prefix_with_another_tag(
            a in "[ -~]{1,8}", b in "[ -~]{1,8}", p in any::<u64>(), q in any::<u64>(),
        ) {
            let (ka, kb) = (posting_key(&tag_prefix(&a), p), posting_key(&tag_prefix(&a), q));
            prop_assert_eq!(ka.cmp(&kb), p.cmp(&q));
            prop_assert_eq!(decode_posting(&ka).unwrap(), p);
            let other = posting_key(&tag_prefix(&b), q);
            prop_assert_eq!(other.starts_with(&tag_prefix(&a)), a == b);
            prop_assert!(!posting_key(&type_prefix(&a), p).starts_with(&tag_prefix(&a)));
            let mut key = vec![9];
            put_tag_posting(&mut key, &a, p);
            prop_assert_eq!(&key[1..], &ka[..]);
            key.clear();
            put_type_posting(&mut key, &a, p);
            prop_assert_eq!(key, posting_key(&type_prefix(&a), p));
        }
    }

    #[test]
    fn id_keys_round_trip_and_start_with_the_ids_prefix() {
        let id = gater_core::EventId::from_bytes([9; 16]);
        let key = id_key(&id);
        assert!(key.starts_with(&ids_all()));
        assert_eq!(decode_id_key(&key).unwrap(), id);
        assert!(decode_id_key(&key[..16]).is_err());
        assert!(decode_id_key(&stream_key("a", 1)).is_err());
    }

    proptest! {
        #[test]
        fn id_values_round_trip(
            stream in "[ -~]{1,12}", version in any::<u64>(), position in any::<u64>(),
        ) {
            let bytes = id_value(&stream, version, Position(position));
            let location = decode_id_value(&bytes).unwrap();
            prop_assert_eq!(location.stream, stream.as_str());
            prop_assert_eq!((location.version, location.position), (version, Position(position)));
            // Cut before the stream id, it does not decode.
            let header = bytes.len() - stream.len();
            for cut in 0..header {
                prop_assert!(decode_id_value(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn id_values_of_the_first_versions_and_positions_fit_fjall_inline() {
        assert!(id_value("stream-999", 1_000, Position(1_000_000)).len() <= 20);
    }

    #[test]
    fn id_values_of_the_earlier_layout_still_decode() {
        let mut bytes = 7u64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&42u64.to_be_bytes());
        bytes.extend_from_slice(b"orders-1");
        let location = decode_id_value(&bytes).unwrap();
        assert_eq!(location.stream, "orders-1");
        assert_eq!((location.version, location.position), (7, Position(42)));
        assert!(decode_id_value(&bytes[..16]).is_err());
        assert!(decode_id_value(&bytes[..10]).is_err());
    }

    #[test]
    fn varints_refuse_values_past_u64_and_missing_ends() {
        let mut bytes = Vec::new();
        put_varint(&mut bytes, u64::MAX);
        assert_eq!(take_varint(&bytes).unwrap(), (u64::MAX, &[][..]));
        assert!(take_varint(&bytes[..bytes.len() - 1]).is_err());
        let mut past = vec![0xFF; 9];
        past.push(0x02);
        assert!(take_varint(&past).is_err());
    }
}
