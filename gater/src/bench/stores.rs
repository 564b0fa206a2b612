//! W9, many stores on one worker: how long creating N stores takes and
//! what they cost the process (threads, open files, resident memory, read
//! from `/proc/self/status` and `/proc/self/fd`), and W1 spread over many
//! stores against W1 on one.
//!
//! Each store count runs on a fresh embedded worker in its own directory,
//! in this process; the figures are the process's after the stores are
//! created and idle, and what they grew by per store. Off Linux the
//! process figures are left out.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use async_trait::async_trait;
use gater_core::{BoxGater, Error, ExpectedVersion, Gater, StoreConfig, StoreId, StreamId};
use gater_store::{Store, StoreOptions};

use super::cpu::CpuProbe;
use super::driver::{closed_loop, Client};
use super::report::CaseResult;
use super::workload::{self, client_seed, stream_ids, EventMaker, Params};
use super::Recorder;

/// Store counts W9 creates, each on a fresh worker.
pub(crate) const STORE_COUNTS: [u64; 3] = [200, 2_000, 10_000];
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
    /// Resident memory the stores added, per store, bytes.
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

/// Runs W9: every store count of [`STORE_COUNTS`], then the spread W1.
pub(crate) async fn run(dir: &Path, params: &Params, recorder: &mut Recorder) -> Result<()> {
    for count in STORE_COUNTS {
        let dir = dir.join(format!("w9-{count}"));
        let case = store_count(&dir, count, params.store_config, recorder).await?;
        recorder.record(case);
    }
    let case = spread(&dir.join("w9-spread"), params, recorder).await?;
    recorder.record(case);
    Ok(())
}

/// The id of store `i` of W9.
fn store_id(i: u64) -> Result<StoreId> {
    Ok(StoreId::new(format!("w9-{i}"))?)
}

/// A fresh worker in `dir` with `count` stores, and how long creating them took.
async fn worker_with(dir: &Path, count: u64, config: StoreConfig) -> Result<(Store, f64)> {
    let mut options = StoreOptions::new(dir);
    options.worker_id = "bench-w9".to_owned();
    let store = Store::open(options)
        .await
        .context("cannot open the store")?;
    let started = Instant::now();
    for i in 0..count {
        store
            .create_store(&store_id(i)?, config)
            .await
            .with_context(|| format!("creating store {i} of {count}"))?;
    }
    Ok((store, started.elapsed().as_secs_f64()))
}

async fn store_count(
    dir: &Path,
    count: u64,
    config: StoreConfig,
    recorder: &mut Recorder,
) -> Result<CaseResult> {
    let mut case = CaseResult::new("w9", "embedded", "stores", &format!("stores{count}"));
    recorder.starting(&case.id);
    let before = ProcessFigures::read();
    let (store, create_s) = worker_with(dir, count, config).await?;
    let after = ProcessFigures::read();
    case.params.insert(figure::STORES.into(), count);
    case.measured_s = create_s;
    case.figures.insert(figure::STORES.into(), count as f64);
    case.figures.insert(figure::CREATE_S.into(), create_s);
    case.figures.insert(
        figure::STORES_PER_S.into(),
        count as f64 / create_s.max(1e-9),
    );
    if let (Some(before), Some(after)) = (before, after) {
        case.figures
            .insert(figure::THREADS.into(), after.threads as f64);
        case.figures.insert(figure::FDS.into(), after.fds as f64);
        case.figures
            .insert(figure::RSS_BYTES.into(), after.rss_bytes as f64);
        case.figures.insert(
            figure::RSS_BYTES_PER_STORE.into(),
            after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / count.max(1) as f64,
        );
        case.figures.insert(
            figure::THREADS_ADDED.into(),
            after.threads.saturating_sub(before.threads) as f64,
        );
        case.figures.insert(
            figure::FDS_ADDED.into(),
            after.fds.saturating_sub(before.fds) as f64,
        );
    }
    store.shutdown().await;
    drop(store);
    Ok(case)
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

/// W1 (64 clients, one event per append) spread over [`SPREAD_STORES`] stores.
async fn spread(dir: &Path, params: &Params, recorder: &mut Recorder) -> Result<CaseResult> {
    let mut case = CaseResult::new(
        "w9",
        "embedded",
        "w1-spread",
        &format!("stores{SPREAD_STORES}/c{SPREAD_CLIENTS}"),
    );
    recorder.note(&format!("{}: creating stores", case.id));
    let (store, _) = worker_with(dir, SPREAD_STORES, params.store_config).await?;
    recorder.starting(&case.id);
    let stores: Arc<[StoreId]> = (0..SPREAD_STORES).map(store_id).collect::<Result<_>>()?;
    let streams = stream_ids(params.streams);
    let gater: BoxGater = Arc::new(store.clone());
    let clients = (0..SPREAD_CLIENTS)
        .map(|i| SpreadAppender {
            gater: gater.clone(),
            stores: stores.clone(),
            streams: streams.clone(),
            maker: EventMaker::new(client_seed(params.seed, &stores[0], i)),
        })
        .collect();
    let tally = closed_loop(clients, params.timing, &CpuProbe::this_process("bench")).await;
    case.params.insert("clients".into(), SPREAD_CLIENTS as u64);
    case.params.insert(figure::STORES.into(), SPREAD_STORES);
    case.params
        .insert("fsync".into(), u64::from(params.store_config.fsync));
    workload::write_figures(&mut case, &tally);
    drop(gater);
    store.shutdown().await;
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
