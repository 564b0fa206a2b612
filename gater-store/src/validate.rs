//! Request checks the engine runs before anything reaches the writer or the
//! backend, so bad input changes nothing and costs no I/O.

use std::collections::HashSet;

use gater_core::{Append, Error, EventData, Limits, StreamId};

/// Longest event type, in bytes.
pub const EVENT_TYPE_LEN_MAX: usize = 256;
/// Longest snapshot source or stream, in bytes.
pub const SNAPSHOT_PART_LEN_MAX: usize = 256;

/// Checks an append (its parts, events and condition) against the contract
/// and `limits`.
pub(crate) fn append(limits: &Limits, append: &Append) -> Result<(), Error> {
    for part in &append.parts {
        writable_stream(&part.stream)?;
    }
    append.validate_shape()?;
    let count = append.event_count();
    if count > limits.append_events_max as usize {
        return Err(Error::limit(
            "append_events_max",
            limits.append_events_max.into(),
            count as u64,
        ));
    }
    let mut ids = HashSet::with_capacity(count);
    for event in append.events() {
        event_shape(limits, event)?;
        if !ids.insert(event.id) {
            return Err(Error::DuplicateEventId { id: event.id });
        }
    }
    Ok(())
}

/// Checks one event: its type, its size and its tags.
fn event_shape(limits: &Limits, event: &EventData) -> Result<(), Error> {
    if event.event_type.is_empty() || event.event_type.len() > EVENT_TYPE_LEN_MAX {
        return Err(Error::invalid(format!(
            "event type must be 1 to {EVENT_TYPE_LEN_MAX} bytes, got {}",
            event.event_type.len()
        )));
    }
    let size = event.size_bytes();
    if size > limits.event_bytes_max as usize {
        return Err(Error::limit(
            "event_bytes_max",
            limits.event_bytes_max.into(),
            size as u64,
        ));
    }
    gater_core::query::validate_tags(&event.tags)
}

/// Checks a stream id names a real stream (not the `$all` pseudo-stream).
pub(crate) fn writable_stream(stream: &StreamId) -> Result<(), Error> {
    if stream.is_all() {
        return Err(Error::invalid(
            "$all names the global log: use read_all, not a stream operation",
        ));
    }
    Ok(())
}

/// Checks a read's `count` against the read limit.
pub(crate) fn read_count(limits: &Limits, count: u32) -> Result<(), Error> {
    if count == 0 || count > limits.read_count_max {
        return Err(Error::invalid(format!(
            "count must be 1 to {}, got {count}",
            limits.read_count_max
        )));
    }
    Ok(())
}

/// Checks a `get_streams` page size against the page limit.
pub(crate) fn page_limit(limits: &Limits, limit: u32) -> Result<(), Error> {
    if limit == 0 || limit > limits.streams_page_max {
        return Err(Error::invalid(format!(
            "limit must be 1 to {}, got {limit}",
            limits.streams_page_max
        )));
    }
    Ok(())
}

/// Checks a snapshot source or stream.
pub(crate) fn snapshot_part(what: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.len() > SNAPSHOT_PART_LEN_MAX {
        return Err(Error::invalid(format!(
            "snapshot {what} must be 1 to {SNAPSHOT_PART_LEN_MAX} bytes, got {}",
            value.len()
        )));
    }
    Ok(())
}

/// Checks a snapshot's data against the snapshot limit.
pub(crate) fn snapshot_data(limits: &Limits, data: &[u8]) -> Result<(), Error> {
    if data.len() > limits.snapshot_bytes_max as usize {
        return Err(Error::limit(
            "snapshot_bytes_max",
            limits.snapshot_bytes_max.into(),
            data.len() as u64,
        ));
    }
    Ok(())
}
