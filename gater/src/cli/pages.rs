//! Reads longer than one request: `read`, `read-all` and `query` with `--count all`
//! or a count above one page go on page by page, printing as they go.
//!
//! A server may answer a page shorter than asked (pages are bounded by bytes
//! as well as by count), so only an empty page, the count or the end of the
//! range ends a read; each page starts after the last event of the one
//! before.

use std::io::Write;

use gater_core::{Direction, Error, Gater, Position, Query, RecordedEvent, StoreId, StreamId};

use super::args::ReadCount;
use super::client::CommandError;
use super::output::Output;

/// Events asked for per request when a read pages.
pub(crate) const READ_PAGE_LEN: u32 = 1_000;

/// What is read: one stream (by version) or the global log (by position).
pub(crate) enum Source<'a> {
    /// `get_events` of a stream; starts and steps are versions.
    Stream(&'a StreamId),
    /// `read_all`; starts and steps are positions.
    Log,
    /// `read_query`; starts and steps are positions.
    Query(&'a Query),
}

impl Source<'_> {
    async fn page(
        &self,
        gater: &dyn Gater,
        store: &StoreId,
        start: u64,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        match self {
            Source::Stream(stream) => {
                gater
                    .get_events(store, stream, start, count, direction)
                    .await
            }
            Source::Log => {
                gater
                    .read_all(store, Position(start), count, direction)
                    .await
            }
            Source::Query(query) => {
                gater
                    .read_query(store, query, Position(start), count, direction)
                    .await
            }
        }
    }

    /// Where the page after `last` starts; `None` past either end.
    fn after(&self, last: &RecordedEvent, direction: Direction) -> Option<u64> {
        let at = match self {
            Source::Stream(_) => last.version,
            Source::Log | Source::Query(_) => last.position.0,
        };
        match direction {
            Direction::Forward => at.checked_add(1),
            Direction::Backward => at.checked_sub(1),
        }
    }
}

/// Prints up to `count` events of `source` from `start` in `direction`.
pub(crate) async fn print<W: Write>(
    gater: &dyn Gater,
    store: &StoreId,
    source: Source<'_>,
    (direction, start): (Direction, u64),
    count: ReadCount,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let mut left = match count {
        ReadCount::Events(n) => Some(n),
        ReadCount::All => None,
    };
    let mut start = start;
    loop {
        let ask = left.map_or(READ_PAGE_LEN, |n| {
            u32::try_from(n).map_or(READ_PAGE_LEN, |n| n.min(READ_PAGE_LEN))
        });
        // `ask` is 0 only for `--count 0`, which the server refuses with its own error.
        let page = source.page(gater, store, start, ask, direction).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        let next = source.after(last, direction);
        for event in &page {
            out.event(event)?;
        }
        left = left.map(|n| n.saturating_sub(page.len() as u64));
        match next {
            Some(next) if left != Some(0) => start = next,
            _ => return Ok(()),
        }
    }
}
