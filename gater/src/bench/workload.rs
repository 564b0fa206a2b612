//! Workloads W1–W4 over any [`Gater`]: write flood, optimistic concurrency,
//! one-in-flight latency, and reads. Each case runs in a store of its own,
//! created before and removed after, so cases never see each other's data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use gater_core::{
    BoxGater, Direction, Error, EventData, EventId, ExpectedVersion, Position, Rng, StoreConfig,
    StoreId, StreamId,
};

use super::cpu::CpuProbe;
use super::driver::{closed_loop, Client, Tally, Timing};
use super::report::{metric, CaseResult};

/// Bytes of each event's data.
pub(crate) const DATA_BYTES: usize = 256;
/// Bytes of each event's metadata.
pub(crate) const METADATA_BYTES: usize = 100;
/// Events per append when filling a store before a read workload.
const FILL_BATCH_LEN: u32 = 1000;
/// Appends in flight while filling a store.
const FILL_WRITERS: usize = 8;
/// Events per page of the `read_all` scan.
const SCAN_PAGE_LEN: u32 = 1000;
/// Events per page of W4's page reads.
pub(crate) const PAGE_LEN: u32 = 100;
/// The event type every benchmark event carries.
const EVENT_TYPE: &str = "BenchEvent";

/// Everything a workload needs to know besides its target.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    /// Warm-up and measured window of each case.
    pub(crate) timing: Timing,
    /// Seed of every random choice (streams, event ids).
    pub(crate) seed: u64,
    /// Streams W1 and W3 spread appends over.
    pub(crate) streams: u32,
    /// Hot streams W2 contends on.
    pub(crate) hot_streams: u32,
    /// Configuration of the stores the cases create.
    pub(crate) store_config: StoreConfig,
    /// Streams W4 reads from.
    pub(crate) read_streams: u32,
    /// Events in each of W4's streams.
    pub(crate) read_stream_len: u32,
    /// Concurrent readers of W4's single-event and page reads.
    pub(crate) readers: usize,
    /// Events W5's catch-up replays.
    pub(crate) catchup_events: u64,
    /// Appends per second while W5 measures live delivery.
    pub(crate) live_rate: u32,
    /// Consumers of W5's persistent group.
    pub(crate) group_consumers: usize,
    /// Tags of W8's store.
    pub(crate) tag_count: u32,
}

/// Hands out store ids unique to this run: `<prefix>-<n>`.
#[derive(Debug)]
pub(crate) struct StoreNames {
    prefix: String,
    next: AtomicU64,
}

impl StoreNames {
    /// Names starting with `prefix` (kept short: store ids hold at most 64 bytes).
    pub(crate) fn new(prefix: impl Into<String>) -> Self {
        StoreNames {
            prefix: prefix.into(),
            next: AtomicU64::new(0),
        }
    }

    /// The next unused store id.
    pub(crate) fn next(&self) -> Result<StoreId, Error> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(StoreId::new(format!("{}-{n}", self.prefix))?)
    }
}

/// A fresh store on `gater`, removed again when the case is done with it.
pub(crate) async fn fresh_store(
    gater: &BoxGater,
    names: &StoreNames,
    config: StoreConfig,
) -> Result<StoreId, Error> {
    let store = names.next()?;
    gater.create_store(&store, config).await?;
    Ok(store)
}

/// Removes a case's store; a failure only costs disk space, so it is logged.
pub(crate) async fn drop_store(gater: &BoxGater, store: &StoreId) {
    if let Err(error) = gater.remove_store(store).await {
        tracing::warn!(%store, %error, "cannot remove a benchmark store");
    }
}

/// `bench-0` … `bench-{n-1}`.
pub(crate) fn stream_ids(n: u32) -> Arc<[StreamId]> {
    (0..n.max(1))
        .map(|i| StreamId::new(format!("bench-{i}")).expect("bench-N is a valid stream id"))
        .collect()
}

/// Builds benchmark events: fixed-size data and metadata, ids from a seeded generator.
#[derive(Clone, Debug)]
pub(crate) struct EventMaker {
    rng: Rng,
    data: Arc<Vec<u8>>,
    metadata: Arc<Vec<u8>>,
}

impl EventMaker {
    /// A maker whose ids follow `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        EventMaker {
            rng: Rng::from_seed(seed),
            data: Arc::new(vec![b'd'; DATA_BYTES]),
            metadata: Arc::new(vec![b'm'; METADATA_BYTES]),
        }
    }

    /// The maker's generator, for other seeded choices of the same client.
    pub(crate) fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// One event; `stamp` (if any) overwrites the first 8 bytes of its data.
    pub(crate) fn event(&mut self, stamp: Option<u64>) -> EventData {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        id[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let mut data = self.data.as_ref().clone();
        if let Some(stamp) = stamp {
            data[..8].copy_from_slice(&stamp.to_le_bytes());
        }
        EventData {
            id: EventId::from_random_bytes(id),
            event_type: EVENT_TYPE.to_owned(),
            data,
            metadata: self.metadata.as_ref().clone(),
            content_type: "application/octet-stream".to_owned(),
            tags: Vec::new(),
        }
    }

    /// `n` events.
    pub(crate) fn events(&mut self, n: u32) -> Vec<EventData> {
        (0..n).map(|_| self.event(None)).collect()
    }
}

/// The seed of client `i` of a case: distinct per client, fixed per run.
pub(crate) fn client_seed(seed: u64, case: &StoreId, i: usize) -> u64 {
    let mut h = seed;
    for b in case.as_str().bytes().chain((i as u64).to_le_bytes()) {
        h = Rng::from_seed(h ^ u64::from(b)).next_u64();
    }
    h
}

/// A W1/W3 client: appends `batch` events to a random stream, expecting any version.
struct Appender {
    gater: BoxGater,
    store: StoreId,
    streams: Arc<[StreamId]>,
    maker: EventMaker,
    batch: u32,
}

#[async_trait]
impl Client for Appender {
    async fn op(&mut self) -> Result<u64, Error> {
        let stream = &self.streams[self.maker.rng().index(self.streams.len())];
        let events = self.maker.events(self.batch);
        self.gater
            .append_events(&self.store, stream, ExpectedVersion::Any, events)
            .await?;
        Ok(u64::from(self.batch))
    }
}

/// W1 (and W3 with one client): `clients` appenders of `batch` events each.
pub(crate) async fn write_flood(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    clients: usize,
    batch: u32,
    probe: &CpuProbe,
) -> Result<Tally, Error> {
    let store = fresh_store(gater, names, params.store_config).await?;
    let streams = stream_ids(params.streams);
    let writers = (0..clients.max(1))
        .map(|i| Appender {
            gater: gater.clone(),
            store: store.clone(),
            streams: streams.clone(),
            maker: EventMaker::new(client_seed(params.seed, &store, i)),
            batch: batch.max(1),
        })
        .collect();
    let tally = closed_loop(writers, params.timing, probe).await;
    drop_store(gater, &store).await;
    Ok(tally)
}

/// Fills a case's figures from a write tally.
pub(crate) fn write_figures(case: &mut CaseResult, tally: &Tally) {
    case.measured_s = tally.measured.as_secs_f64();
    case.figures
        .insert(metric::EVENTS_PER_S.into(), tally.events_per_s());
    case.figures
        .insert(metric::APPENDS_PER_S.into(), tally.ops_per_s());
    case.latency = tally.latencies.summary();
    case.errors = tally.errors.clone();
    if tally.ops > 0 && !tally.cpu.is_empty() {
        let per_append = |time: std::time::Duration| time.as_secs_f64() * 1e6 / tally.ops as f64;
        let mut total = std::time::Duration::ZERO;
        for used in &tally.cpu {
            total += used.time;
            case.figures
                .insert(metric::cpu_us_per_append(used.role), per_append(used.time));
        }
        case.figures
            .insert(metric::CPU_US_PER_APPEND.into(), per_append(total));
    }
}

/// A W2 client: reads a hot stream's version, then appends expecting exactly it.
struct Contender {
    gater: BoxGater,
    store: StoreId,
    streams: Arc<[StreamId]>,
    maker: EventMaker,
}

#[async_trait]
impl Client for Contender {
    async fn op(&mut self) -> Result<u64, Error> {
        let stream = &self.streams[self.maker.rng().index(self.streams.len())];
        let expected = match self.gater.get_version(&self.store, stream).await? {
            Some(v) => ExpectedVersion::Exact(v),
            None => ExpectedVersion::NoStream,
        };
        let events = vec![self.maker.event(None)];
        self.gater
            .append_events(&self.store, stream, expected, events)
            .await?;
        Ok(1)
    }
}

/// W2: `clients` contenders on the hot streams; conflicts are counted, not hidden.
pub(crate) async fn contention(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    clients: usize,
    case: &mut CaseResult,
) -> Result<(), Error> {
    let store = fresh_store(gater, names, params.store_config).await?;
    let streams = stream_ids(params.hot_streams);
    let contenders = (0..clients.max(1))
        .map(|i| Contender {
            gater: gater.clone(),
            store: store.clone(),
            streams: streams.clone(),
            maker: EventMaker::new(client_seed(params.seed, &store, i)),
        })
        .collect();
    let tally = closed_loop(contenders, params.timing, &CpuProbe::none()).await;
    drop_store(gater, &store).await;
    write_figures(case, &tally);
    let conflicts = tally
        .errors
        .get("wrong_expected_version")
        .copied()
        .unwrap_or(0);
    let attempts = tally.ops + tally.error_count();
    case.figures
        .insert(metric::CONFLICTS.into(), conflicts as f64);
    let rate = if attempts == 0 {
        0.0
    } else {
        conflicts as f64 / attempts as f64
    };
    case.figures.insert(metric::CONFLICT_RATE.into(), rate);
    Ok(())
}

/// Writes `per_stream` events into each of `streams`, `FILL_BATCH_LEN` per append.
pub(crate) async fn fill(
    gater: &BoxGater,
    store: &StoreId,
    streams: &Arc<[StreamId]>,
    per_stream: u64,
    seed: u64,
) -> Result<(), Error> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..FILL_WRITERS {
        let (gater, store, streams) = (gater.clone(), store.clone(), streams.clone());
        tasks.spawn(async move {
            let mut maker = EventMaker::new(client_seed(seed, &store, w));
            for stream in streams.iter().skip(w).step_by(FILL_WRITERS) {
                let mut left = per_stream;
                while left > 0 {
                    let n = left.min(u64::from(FILL_BATCH_LEN)) as u32;
                    let events = maker.events(n);
                    gater
                        .append_events(&store, stream, ExpectedVersion::Any, events)
                        .await?;
                    left -= u64::from(n);
                }
            }
            Ok::<(), Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| Error::invalid(format!("a fill task failed: {e}")))??;
    }
    Ok(())
}

/// How a W4 reader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// One event at a random version.
    Single,
    /// `PAGE_LEN` events forward from a random version.
    PageForward,
    /// `PAGE_LEN` events backward from a random version.
    PageBackward,
}

impl ReadMode {
    /// The name used in case ids.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ReadMode::Single => "single",
            ReadMode::PageForward => "page-forward",
            ReadMode::PageBackward => "page-backward",
        }
    }
}

struct Reader {
    gater: BoxGater,
    store: StoreId,
    streams: Arc<[StreamId]>,
    stream_len: u64,
    rng: Rng,
    mode: ReadMode,
}

#[async_trait]
impl Client for Reader {
    async fn op(&mut self) -> Result<u64, Error> {
        let stream = &self.streams[self.rng.index(self.streams.len())];
        let page = u64::from(PAGE_LEN).min(self.stream_len);
        let (start, count, direction) = match self.mode {
            ReadMode::Single => (self.rng.below(self.stream_len), 1, Direction::Forward),
            ReadMode::PageForward => (
                self.rng.below(self.stream_len - page + 1),
                PAGE_LEN,
                Direction::Forward,
            ),
            ReadMode::PageBackward => (
                page - 1 + self.rng.below(self.stream_len - page + 1),
                PAGE_LEN,
                Direction::Backward,
            ),
        };
        let events = self
            .gater
            .get_events(&self.store, stream, start, count, direction)
            .await?;
        Ok(events.len() as u64)
    }
}

/// Reads the whole global log in pages, starting over at the end.
struct Scanner {
    gater: BoxGater,
    store: StoreId,
    next: Position,
}

#[async_trait]
impl Client for Scanner {
    async fn op(&mut self) -> Result<u64, Error> {
        let page = self
            .gater
            .read_all(&self.store, self.next, SCAN_PAGE_LEN, Direction::Forward)
            .await?;
        self.next = match page.last() {
            Some(last) => last.position.next(),
            None => Position::START,
        };
        Ok(page.len() as u64)
    }
}

/// A store filled for W4: `read_streams` streams of `read_stream_len` events.
pub(crate) async fn read_store(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
) -> Result<(StoreId, Arc<[StreamId]>), Error> {
    let store = fresh_store(gater, names, params.store_config).await?;
    let streams = stream_ids(params.read_streams);
    let per_stream = u64::from(params.read_stream_len.max(1));
    fill(gater, &store, &streams, per_stream, params.seed).await?;
    Ok((store, streams))
}

/// W4 reads of one mode on a filled store.
pub(crate) async fn reads(
    gater: &BoxGater,
    store: &StoreId,
    streams: &Arc<[StreamId]>,
    params: &Params,
    mode: ReadMode,
) -> Tally {
    let readers = (0..params.readers.max(1))
        .map(|i| Reader {
            gater: gater.clone(),
            store: store.clone(),
            streams: streams.clone(),
            stream_len: u64::from(params.read_stream_len.max(1)),
            rng: Rng::from_seed(client_seed(params.seed, store, i)),
            mode,
        })
        .collect();
    closed_loop(readers, params.timing, &CpuProbe::none()).await
}

/// W4's full scan: one reader over the global log.
pub(crate) async fn scan(gater: &BoxGater, store: &StoreId, params: &Params) -> Tally {
    let scanner = Scanner {
        gater: gater.clone(),
        store: store.clone(),
        next: Position::START,
    };
    closed_loop(vec![scanner], params.timing, &CpuProbe::none()).await
}

/// Fills a case's figures from a read tally.
pub(crate) fn read_figures(case: &mut CaseResult, tally: &Tally) {
    case.measured_s = tally.measured.as_secs_f64();
    case.figures
        .insert(metric::EVENTS_PER_S.into(), tally.events_per_s());
    case.figures
        .insert(metric::READS_PER_S.into(), tally.ops_per_s());
    case.latency = tally.latencies.summary();
    case.errors = tally.errors.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_maker_is_deterministic_and_sized() {
        let mut a = EventMaker::new(9);
        let mut b = EventMaker::new(9);
        let (x, y) = (a.events(3), b.events(3));
        assert_eq!(x, y);
        assert_ne!(x[0].id, x[1].id);
        assert_eq!(x[0].data.len(), DATA_BYTES);
        assert_eq!(x[0].metadata.len(), METADATA_BYTES);
        let stamped = a.event(Some(0x0102_0304));
        assert_eq!(&stamped.data[..8], &0x0102_0304u64.to_le_bytes());
    }

    #[test]
    fn client_seeds_differ_per_client_and_store() {
        let s1 = StoreId::new("a").unwrap();
        let s2 = StoreId::new("b").unwrap();
        assert_eq!(client_seed(1, &s1, 0), client_seed(1, &s1, 0));
        assert_ne!(client_seed(1, &s1, 0), client_seed(1, &s1, 1));
        assert_ne!(client_seed(1, &s1, 0), client_seed(1, &s2, 0));
        assert_ne!(client_seed(1, &s1, 0), client_seed(2, &s1, 0));
    }

    #[test]
    fn store_names_are_unique_and_valid() {
        let names = StoreNames::new("bench-x");
        let a = names.next().unwrap();
        let b = names.next().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "bench-x-0");
    }
}
