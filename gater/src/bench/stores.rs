//! W9, many stores on one worker: how long creating N stores takes and
//! what they cost the process (threads, open files, resident memory, read
//! from `/proc/self/status` and `/proc/self/fd`), and W1 spread over many
//! stores against W1 on one.
//!
//! One embedded worker, in this process, grows through the store counts;
//! the figures at each are the process's with the stores created and idle,
//! and what they grew by per store. Creating is bounded in time
//! ([`CREATE_S_MAX`]), so a slow disk shortens the case instead of
//! stalling the suite. Off Linux the process figures are left out.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use async_trait::async_trait;
use gater_core::{BoxGater, Error, ExpectedVersion, Gater, StoreId, StreamId};
use gater_store::{Store, StoreOptions};

use super::cpu::CpuProbe;
use super::driver::{closed_loop, Client};
use super::report::CaseResult;
use super::workload::{self, client_seed, stream_ids, EventMaker, Params};
use super::Recorder;

/// Store counts W9 creates, each on a fresh worker.
pub(crate) const STORE_COUNTS: [u64; 3] = [200, 2_000, 10_000];
/// Seconds W9 spends creating stores at most, over every count together
/// (the target's own time for 10,000 stores): the counts it does not reach
/// within them are reported with the stores created (and no time to the
/// whole count), so a slow disk shortens the case instead of stalling the
/// suite.
pub(crate) const CREATE_S_MAX: f64 = 60.0;
/// Creation seconds per measured second of a case: the default 3 s window
/// gives [`CREATE_S_MAX`]; the tiny windows of tests give a second or so.
const CREATE_S_PER_MEASURED_S: f64 = 20.0;
/// Stores the spread W1 case appends over.
pub(crate) const SPREAD_STORES: u64 = 1_000;
/// Clients of the spread W1 case (W1's).
pub(crate) const SPREAD_CLIENTS: usize = 64;
/// Cases W9 adds: one per store count and the spread W1.
pub(crate) const CASE_COUNT: u64 = STORE_COUNTS.len() as u64 + 1;
/// The id of the spread W1 case, for ratios.
pub(crate) const SPREAD_CASE: &str = "w9/embedded/stores1000/c64";

/// Names of the figures W9 reports.
pub(crate) mod figure {
    /// Stores created.
    pub(crate) const STORES: &str = "stores";
    /// Seconds creating them took.
    pub(crate) const CREATE_S: &str = "create_s";
    /// Stores created per second.
    pub(crate) const STORES_PER_S: &str = "stores_per_s";
    /// Threads of the process with the stores idle.
    pub(crate) const THREADS: &str = "threads";
    /// Open files of the process with the stores idle.
    pub(crate) const FDS: &str = "fds";
    /// Resident memory of the process with the stores idle, bytes.
    pub(crate) const RSS_BYTES: &str = "rss_bytes";
    /// Resident memory the stores created since the previous count added,
    /// per store, bytes (memory the earlier cases freed back to the system
    /// meanwhile makes it read low at the first count).
    pub(crate) const RSS_BYTES_PER_STORE: &str = "rss_bytes_per_store";
    /// Threads the stores added.
    pub(crate) const THREADS_ADDED: &str = "threads_added";
    /// Open files the stores added.
    pub(crate) const FDS_ADDED: &str = "fds_added";
}

/// Threads, open files and resident memory of this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcessFigures {
    pub(crate) threads: u64,
    pub(crate) fds: u64,
    pub(crate) rss_bytes: u64,
}

impl ProcessFigures {
    /// Reads them from `/proc/self`; `None` where there is no such thing.
    pub(crate) fn read() -> Option<ProcessFigures> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let mut figures = parse_status(&status)?;
        figures.fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(figures)
    }
}

/// Threads and resident memory from the text of `/proc/<pid>/status`.
fn parse_status(status: &str) -> Option<ProcessFigures> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some(ProcessFigures {
        threads: field("Threads:")?,
        fds: 0,
        rss_bytes: field("VmRSS:")?.saturating_mul(1024),
    })
}

/// Runs W9: one worker grows through every store count of
/// [`STORE_COUNTS`] (figures at each), within [`CREATE_S_MAX`] seconds of
/// creating in all (less for short measured windows); then W1 spread over [`SPREAD_STORES`] of its stores
/// (fewer if fewer were created).
pub(crate) async fn run(dir: &Path, params: &Params, recorder: &mut Recorder) -> Result<()> {
    let before = ProcessFigures::read();
    let mut options = StoreOptions::new(dir.join("w9"));
    options.worker_id = "bench-w9".to_owned();
    let store = Store::open(options)
        .await
        .context("cannot open the store")?;
    let create_s_max =
        CREATE_S_MAX.min(CREATE_S_PER_MEASURED_S * params.timing.measure.as_secs_f64());
    let started = Instant::now();
    let mut created = 0u64;
    // A creation that fails (a full disk) ends the growth; the cases say so.
    let mut failed: Option<String> = None;
    // The process at the previous count (at first: with the worker open).
    let mut previous = (ProcessFigures::read(), 0u64);
    for count in STORE_COUNTS {
        let mut case = CaseResult::new("w9", "embedded", "stores", &format!("stores{count}"));
        recorder.starting(&case.id);
        while failed.is_none() && created < count && started.elapsed().as_secs_f64() < create_s_max
        {
            match store
                .create_store(&store_id(created)?, params.store_config)
                .await
            {
                Ok(()) => created += 1,
                Err(error) => {
                    tracing::warn!(%error, created, "W9 stops creating stores");
                    failed = Some(error.kind().to_owned());
                }
            }
        }
        if let Some(kind) = &failed {
            case.errors.insert(kind.clone(), 1);
        }
        let create_s = started.elapsed().as_secs_f64();
        let now = store_figures(&mut case, count, created, create_s, before, previous);
        previous = (now, created);
        recorder.record(case);
    }
    let case = spread(&store, created.min(SPREAD_STORES), params, recorder).await;
    store.shutdown().await;
    recorder.record(case?);
    Ok(())
}

/// The id of store `i` of W9.
fn store_id(i: u64) -> Result<StoreId> {
    Ok(StoreId::new(format!("w9-{i}"))?)
}

/// Fills a store-count case: `created` of the `count` stores asked for,
/// in `create_s` seconds, and the process's figures against `before` (the
/// process before the worker opened) and, per store, against `previous`
/// (the process and the stores created at the previous count); returns
/// the process's figures now.
fn store_figures(
    case: &mut CaseResult,
    count: u64,
    created: u64,
    create_s: f64,
    before: Option<ProcessFigures>,
    previous: (Option<ProcessFigures>, u64),
) -> Option<ProcessFigures> {
    case.params.insert(figure::STORES.into(), count);
    case.measured_s = create_s;
    case.figures.insert(figure::STORES.into(), created as f64);
    // Time to the whole count: only when it was reached within the budget.
    if created == count {
        case.figures.insert(figure::CREATE_S.into(), create_s);
    }
    case.figures.insert(
        figure::STORES_PER_S.into(),
        created as f64 / create_s.max(1e-9),
    );
    let now = ProcessFigures::read();
    let (Some(before), Some(after), Some(at_previous)) = (before, now, previous.0) else {
        return now;
    };
    case.figures
        .insert(figure::THREADS.into(), after.threads as f64);
    case.figures.insert(figure::FDS.into(), after.fds as f64);
    case.figures
        .insert(figure::RSS_BYTES.into(), after.rss_bytes as f64);
    let added = created.saturating_sub(previous.1);
    case.figures.insert(
        figure::RSS_BYTES_PER_STORE.into(),
        after.rss_bytes.saturating_sub(at_previous.rss_bytes) as f64 / added.max(1) as f64,
    );
    case.figures.insert(
        figure::THREADS_ADDED.into(),
        after.threads.saturating_sub(before.threads) as f64,
    );
    case.figures.insert(
        figure::FDS_ADDED.into(),
        after.fds.saturating_sub(before.fds) as f64,
    );
    now
}

/// A spread W1 client: appends one event to a random stream of a random store.
struct SpreadAppender {
    gater: BoxGater,
    stores: Arc<[StoreId]>,
    streams: Arc<[StreamId]>,
    maker: EventMaker,
}

#[async_trait]
impl Client for SpreadAppender {
    async fn op(&mut self) -> Result<u64, Error> {
        let store = &self.stores[self.maker.rng().index(self.stores.len())];
        let stream = &self.streams[self.maker.rng().index(self.streams.len())];
        let events = self.maker.events(1);
        self.gater
            .append_events(store, stream, ExpectedVersion::Any, events)
            .await?;
        Ok(1)
    }
}

/// W1 (64 clients, one event per append) spread over the first `stores`
/// stores of `store`.
async fn spread(
    store: &Store,
    stores: u64,
    params: &Params,
    recorder: &mut Recorder,
) -> Result<CaseResult> {
    let mut case = CaseResult::new(
        "w9",
        "embedded",
        "w1-spread",
        &format!("stores{SPREAD_STORES}/c{SPREAD_CLIENTS}"),
    );
    recorder.starting(&case.id);
    let ids: Arc<[StoreId]> = (0..stores.max(1)).map(store_id).collect::<Result<_>>()?;
    let streams = stream_ids(params.streams);
    let gater: BoxGater = Arc::new(store.clone());
    let clients = (0..SPREAD_CLIENTS)
        .map(|i| SpreadAppender {
            gater: gater.clone(),
            stores: ids.clone(),
            streams: streams.clone(),
            maker: EventMaker::new(client_seed(params.seed, &ids[0], i)),
        })
        .collect();
    let tally = closed_loop(clients, params.timing, &CpuProbe::this_process("bench")).await;
    case.params.insert("clients".into(), SPREAD_CLIENTS as u64);
    case.params.insert(figure::STORES.into(), stores);
    case.params
        .insert("fsync".into(), u64::from(params.store_config.fsync));
    workload::write_figures(&mut case, &tally);
    Ok(case)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_figures_come_from_the_status_fields() {
        let status = "Name:\tgater\nVmRSS:\t  20480 kB\nThreads:\t7\n";
        assert_eq!(
            parse_status(status),
            Some(ProcessFigures {
                threads: 7,
                fds: 0,
                rss_bytes: 20480 * 1024,
            })
        );
        assert_eq!(parse_status("Name:\tgater\n"), None);
    }

    #[test]
    fn this_process_reports_threads_files_and_memory_on_linux() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let figures = ProcessFigures::read().expect("/proc/self is readable");
        assert!(figures.threads >= 1 && figures.fds >= 1 && figures.rss_bytes > 0);
    }
}
