//! W6, failover: appends through a proxy over two in-process workers (mem
//! transport, embedded storage), while first the worker that does not hold
//! the store and then the one that does go down and come back.
//!
//! With embedded storage a store lives on one worker, so losing the other
//! must cost nothing, and losing the holder costs an error window (or a
//! stall, while the proxy retries idempotent appends). Afterwards every
//! stream is read back: each acknowledged event must be there exactly once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gater_core::{
    BoxGater, Direction, Error, EventId, ExpectedVersion, Gater, Rng, StoreId, StreamId,
};
use gater_proxy::Proxy;
use gater_store::{Store, StoreOptions};
use gater_transport_mem::{serve, MemServer};
use tokio::time::Instant;

use super::report::{metric, CaseResult};
use super::workload::{client_seed, stream_ids, EventMaker, Params};

/// Concurrent writers during the failover case.
const WRITERS: usize = 16;
/// Streams the writers spread over.
const STREAMS: u32 = 100;
/// Shortest phase of the outage timeline.
const PHASE_MIN: Duration = Duration::from_millis(100);
/// Events per read while checking the streams.
const READ_BACK_PAGE: u32 = 10_000;
/// Attempts of one read-back call while the proxy re-admits the holder.
const READ_BACK_ATTEMPTS: u32 = 100;
/// A writer's pause after a failed append, as a client backs off before retrying.
const ERROR_PAUSE: Duration = Duration::from_millis(1);
/// Pause between read-back attempts.
const READ_BACK_PAUSE: Duration = Duration::from_millis(100);

/// Timeline of the outages, as offsets from the writers' start.
#[derive(Clone, Copy, Debug)]
struct Timeline {
    other_down: Duration,
    other_up: Duration,
    holder_down: Duration,
    holder_up: Duration,
    end: Duration,
}

impl Timeline {
    /// Warm-up, then four phases of half the measured window each.
    fn new(params: &Params) -> Self {
        let phase = (params.timing.measure / 2).max(PHASE_MIN);
        let other_down = params.timing.warmup;
        Timeline {
            other_down,
            other_up: other_down + phase,
            holder_down: other_down + 2 * phase,
            holder_up: other_down + 3 * phase,
            end: other_down + 4 * phase,
        }
    }
}

/// What one writer saw: acknowledged events, failures and slow calls.
#[derive(Default)]
struct WriterLog {
    acked: Vec<(usize, EventId)>,
    /// (offset of the failure, error kind).
    errors: Vec<(Duration, &'static str)>,
    /// (offset of the start, duration) of every call.
    calls: Vec<(Duration, Duration)>,
}

/// Runs W6 in `dir` and returns its case.
pub(crate) async fn run(params: &Params, dir: &Path) -> Result<CaseResult, Error> {
    let mut case = CaseResult::new("w6", "proxy-mem", "failover", "");
    case.params.insert("writers".into(), WRITERS as u64);
    let (a, b) = (
        worker(dir, "worker-a").await?,
        worker(dir, "worker-b").await?,
    );
    let proxy = Proxy::builder()
        .worker("worker-a", "mem", Arc::new(a.1.client()) as BoxGater)
        .worker("worker-b", "mem", Arc::new(b.1.client()) as BoxGater)
        .seed(params.seed)
        .build()
        .await?;
    let store = StoreId::new("failover")?;
    proxy.create_store(&store, params.store_config).await?;
    proxy.probe_now().await;
    let holder_id = proxy.workers_serving(&store).into_iter().next();
    let (holder, other) = match holder_id.as_deref() {
        Some("worker-a") => (&a.1, &b.1),
        Some("worker-b") => (&b.1, &a.1),
        _ => return Err(Error::invalid("the proxy places the store on no worker")),
    };
    let timeline = Timeline::new(params);
    let gater: BoxGater = Arc::new(proxy.clone());
    let epoch = Instant::now();
    let streams = stream_ids(STREAMS);
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let seed = client_seed(params.seed, &store, i);
        writers.spawn(write(
            gater.clone(),
            store.clone(),
            streams.clone(),
            seed,
            epoch,
            timeline.end,
        ));
    }
    outages(holder, other, epoch, timeline).await;
    let mut logs = Vec::new();
    while let Some(joined) = writers.join_next().await {
        logs.push(joined.map_err(|e| Error::invalid(format!("a writer failed: {e}")))?);
    }
    figures(&mut case, &logs, timeline);
    let (lost, duplicated) = verify(&gater, &store, &streams, &logs).await?;
    case.figures.insert(metric::LOST.into(), lost as f64);
    case.figures
        .insert(metric::DUPLICATED.into(), duplicated as f64);
    drop(gater);
    drop(proxy);
    a.0.shutdown().await;
    b.0.shutdown().await;
    Ok(case)
}

async fn worker(dir: &Path, id: &str) -> Result<(Store, MemServer), Error> {
    let mut options = StoreOptions::new(dir.join(id));
    options.worker_id = id.to_owned();
    let store = Store::open(options).await?;
    let server = serve(store.clone());
    Ok((store, server))
}

/// Takes the other worker down and up, then the holder.
async fn outages(holder: &MemServer, other: &MemServer, epoch: Instant, t: Timeline) {
    tokio::time::sleep_until(epoch + t.other_down).await;
    other.set_down(true);
    tokio::time::sleep_until(epoch + t.other_up).await;
    other.set_down(false);
    tokio::time::sleep_until(epoch + t.holder_down).await;
    holder.set_down(true);
    tokio::time::sleep_until(epoch + t.holder_up).await;
    holder.set_down(false);
}

async fn write(
    gater: BoxGater,
    store: StoreId,
    streams: Arc<[StreamId]>,
    seed: u64,
    epoch: Instant,
    end: Duration,
) -> WriterLog {
    let mut log = WriterLog::default();
    let mut maker = EventMaker::new(seed);
    let mut rng = Rng::from_seed(seed.rotate_left(17));
    while epoch.elapsed() < end {
        let s = rng.index(streams.len());
        let event = maker.event(None);
        let id = event.id;
        let began = epoch.elapsed();
        let outcome = gater
            .append_events(&store, &streams[s], ExpectedVersion::Any, vec![event])
            .await;
        let ended = epoch.elapsed();
        log.calls.push((began, ended - began));
        match outcome {
            Ok(_) => log.acked.push((s, id)),
            Err(e) => {
                log.errors.push((ended, e.kind()));
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    log
}

fn figures(case: &mut CaseResult, logs: &[WriterLog], t: Timeline) {
    let errors = logs.iter().flat_map(|l| l.errors.iter());
    let mut other_down = 0u64;
    let mut holder_down = 0u64;
    let mut last_holder_error = None::<Duration>;
    for (at, kind) in errors {
        *case.errors.entry((*kind).to_owned()).or_default() += 1;
        if *at >= t.holder_down {
            holder_down += 1;
            last_holder_error = last_holder_error.max(Some(*at));
        } else if *at >= t.other_down {
            other_down += 1;
        }
    }
    let window = last_holder_error.map_or(Duration::ZERO, |last| last - t.holder_down);
    let stall = logs
        .iter()
        .flat_map(|l| l.calls.iter())
        .filter(|(began, took)| *began + *took >= t.holder_down)
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    let acked: usize = logs.iter().map(|l| l.acked.len()).sum();
    let span = t.end.saturating_sub(t.other_down);
    case.measured_s = span.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    let f = &mut case.figures;
    f.insert(metric::ERRORS_OTHER_DOWN.into(), other_down as f64);
    f.insert(metric::ERRORS_HOLDER_DOWN.into(), holder_down as f64);
    f.insert(metric::ERROR_WINDOW_MS.into(), ms(window));
    f.insert(metric::STALL_MS.into(), ms(stall));
    f.insert(metric::ACKED_APPENDS.into(), acked as f64);
    f.insert(
        metric::APPENDS_PER_S.into(),
        acked as f64 / span.as_secs_f64().max(f64::MIN_POSITIVE),
    );
}

/// Reads every stream back; returns (acknowledged events missing, events stored twice).
async fn verify(
    gater: &BoxGater,
    store: &StoreId,
    streams: &[StreamId],
    logs: &[WriterLog],
) -> Result<(u64, u64), Error> {
    let mut stored: HashMap<(usize, EventId), u64> = HashMap::new();
    for (s, stream) in streams.iter().enumerate() {
        let mut next = 0u64;
        loop {
            let page = read_back(gater, store, stream, next).await?;
            let Some(last) = page.last() else { break };
            next = last.version + 1;
            for event in &page {
                *stored.entry((s, event.data.id)).or_default() += 1;
            }
        }
    }
    let acked: HashSet<(usize, EventId)> =
        logs.iter().flat_map(|l| l.acked.iter().copied()).collect();
    let lost = acked.iter().filter(|k| !stored.contains_key(k)).count() as u64;
    let duplicated = stored.values().map(|n| n - 1).sum();
    Ok((lost, duplicated))
}

/// One page, retried while the proxy still counts the holder as down.
async fn read_back(
    gater: &BoxGater,
    store: &StoreId,
    stream: &StreamId,
    from: u64,
) -> Result<Vec<gater_core::RecordedEvent>, Error> {
    let mut attempt = 0;
    loop {
        match gater
            .get_events(store, stream, from, READ_BACK_PAGE, Direction::Forward)
            .await
        {
            Err(e) if e.is_retryable() && attempt + 1 < READ_BACK_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(READ_BACK_PAUSE).await;
            }
            other => return other,
        }
    }
}
