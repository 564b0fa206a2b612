//! W7 and W8: the append model of Dynamic Consistency Boundaries, in the
//! shapes UmaDB publishes figures for.
//!
//! - W7, conditional appends: each client owns a tag and appends one event
//!   carrying it, on the condition that no event with its tag exists after
//!   the position of its own last append (it always holds, so every append
//!   pays for the condition check without conflicting).
//! - W8, tag reads: a store of `tag_count` tags carried by
//!   [`EVENTS_PER_TAG`] events each; one reader reads all events of a
//!   random tag per call.

use async_trait::async_trait;
use gater_core::{
    Append, AppendCondition, BoxGater, Direction, Error, ExpectedVersion, Position, Query, Rng,
    StoreId, StreamId,
};

use super::cpu::CpuProbe;
use super::driver::{closed_loop, Client, Tally};
use super::workload::{client_seed, drop_store, fresh_store, EventMaker, Params, StoreNames};

/// Events carrying each tag of W8's store (UmaDB's read benchmark shape).
pub(crate) const EVENTS_PER_TAG: u32 = 10;
/// Tags W8's fill appends per append (one append of their events).
const FILL_TAGS_PER_APPEND: u32 = 100;
/// Concurrent appenders filling W8's store.
const FILL_WRITERS: u32 = 8;

/// The tag of W7 client `i` or W8 tag `i`.
fn tag(i: u64) -> String {
    format!("tag-{i}")
}

fn tag_query(i: u64) -> Query {
    Query::item(Vec::new(), vec![tag(i)])
}

/// A W7 client: conditional appends on its own tag.
struct Conditional {
    gater: BoxGater,
    store: StoreId,
    stream: StreamId,
    query: Query,
    tag: String,
    maker: EventMaker,
    /// Position of its last append; the condition looks after it.
    last: Option<Position>,
}

#[async_trait]
impl Client for Conditional {
    async fn op(&mut self) -> Result<u64, Error> {
        let event = self.maker.event(None).with_tags(vec![self.tag.clone()]);
        let append = Append::single(self.stream.clone(), ExpectedVersion::Any, vec![event])
            .with_condition(AppendCondition {
                fail_if_events_match: self.query.clone(),
                after: self.last,
            });
        let outcome = self.gater.append(&self.store, append).await?;
        self.last = Some(outcome.position);
        Ok(1)
    }
}

/// W7: `clients` conditional appenders, each on its own tag.
pub(crate) async fn conditional_appends(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    clients: usize,
    probe: &CpuProbe,
) -> Result<Tally, Error> {
    let store = fresh_store(gater, names, params.store_config).await?;
    let writers = (0..clients.max(1))
        .map(|i| {
            Ok(Conditional {
                gater: gater.clone(),
                store: store.clone(),
                stream: StreamId::new(format!("dcb-{i}"))?,
                query: tag_query(i as u64),
                tag: tag(i as u64),
                maker: EventMaker::new(client_seed(params.seed, &store, i)),
                last: None,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let tally = closed_loop(writers, params.timing, probe).await;
    drop_store(gater, &store).await;
    Ok(tally)
}

/// A W8 reader: every event of a random tag per call.
struct TagReader {
    gater: BoxGater,
    store: StoreId,
    tags: u64,
    rng: Rng,
}

#[async_trait]
impl Client for TagReader {
    async fn op(&mut self) -> Result<u64, Error> {
        let i = self.rng.index(self.tags as usize) as u64;
        let events = self
            .gater
            .read_query(
                &self.store,
                &tag_query(i),
                Position::START,
                EVENTS_PER_TAG,
                Direction::Forward,
            )
            .await?;
        Ok(events.len() as u64)
    }
}

/// W8's store: `params.tag_count` tags of [`EVENTS_PER_TAG`] events each,
/// spread over the log (each append holds [`FILL_TAGS_PER_APPEND`] tags'
/// worth of events, interleaved), compacted once filled.
pub(crate) async fn tag_store(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
) -> Result<StoreId, Error> {
    let store = fresh_store(gater, names, params.store_config).await?;
    let tags = u64::from(params.tag_count.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..FILL_WRITERS {
        let (gater, store) = (gater.clone(), store.clone());
        let seed = client_seed(params.seed, &store, w as usize);
        tasks.spawn(async move {
            let mut maker = EventMaker::new(seed);
            let stream = StreamId::new(format!("tags-{w}"))?;
            let chunk = u64::from(FILL_TAGS_PER_APPEND);
            let mut first = u64::from(w) * chunk;
            while first < tags {
                let last = (first + chunk).min(tags);
                let events = (0..EVENTS_PER_TAG)
                    .flat_map(|_| first..last)
                    .map(|i| maker.event(None).with_tags(vec![tag(i)]))
                    .collect();
                gater
                    .append_events(&store, &stream, ExpectedVersion::Any, events)
                    .await?;
                first += chunk * u64::from(FILL_WRITERS);
            }
            Ok::<(), Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| Error::invalid(format!("a fill task failed: {e}")))??;
    }
    // The store settles before it is read: the fill's flushes and
    // compactions would otherwise still run while the reads are measured.
    gater.compact_store(&store).await?;
    Ok(store)
}

/// W8: `readers` tag readers on a filled store.
pub(crate) async fn tag_reads(
    gater: &BoxGater,
    store: &StoreId,
    params: &Params,
    readers: usize,
) -> Tally {
    let readers = (0..readers.max(1))
        .map(|i| TagReader {
            gater: gater.clone(),
            store: store.clone(),
            tags: u64::from(params.tag_count.max(1)),
            rng: Rng::from_seed(client_seed(params.seed, store, i)),
        })
        .collect();
    closed_loop(readers, params.timing, &CpuProbe::none()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::driver::Timing;
    use gater_core::StoreConfig;
    use std::time::Duration;

    fn params(tag_count: u32) -> Params {
        Params {
            timing: Timing {
                warmup: Duration::ZERO,
                measure: Duration::from_millis(50),
            },
            seed: 1,
            streams: 1,
            hot_streams: 1,
            store_config: StoreConfig {
                fsync: false,
                group_commit: true,
                retention: gater_core::Retention::NONE,
            },
            read_streams: 1,
            read_stream_len: 1,
            readers: 1,
            catchup_events: 1,
            live_rate: 1,
            group_consumers: 1,
            tag_count,
        }
    }

    #[tokio::test]
    async fn the_tag_store_holds_each_tag_on_its_events_and_tag_reads_find_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = gater_store::Store::open(gater_store::StoreOptions::new(dir.path()))
            .await
            .unwrap();
        let gater: BoxGater = std::sync::Arc::new(store.clone());
        let names = StoreNames::new("w8");
        let params = params(250);
        let id = tag_store(&gater, &names, &params).await.unwrap();
        let status = gater.get_store_status(&id).await.unwrap();
        assert_eq!(status.event_count, 250 * u64::from(EVENTS_PER_TAG));
        for i in [0, 99, 100, 249] {
            let events = gater
                .read_query(&id, &tag_query(i), Position::START, 100, Direction::Forward)
                .await
                .unwrap();
            assert_eq!(events.len(), EVENTS_PER_TAG as usize, "tag {i}");
        }
        let tally = tag_reads(&gater, &id, &params, 1).await;
        assert!(tally.errors.is_empty(), "{:?}", tally.errors);
        let w7 = conditional_appends(&gater, &names, &params, 4, &CpuProbe::none())
            .await
            .unwrap();
        assert!(w7.errors.is_empty(), "{:?}", w7.errors);
        store.shutdown().await;
    }
}
