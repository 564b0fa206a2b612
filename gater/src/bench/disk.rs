//! The disk's own durable-write latency, measured in the suite's data
//! directory right before each W3 case so W3 (one client, one event per append) can be read against
//! it: an embedded append with fsync on costs at least one `fdatasync`, and
//! what it costs beyond that is the store's.
//!
//! Each sample appends one block to a file and calls `fdatasync` on it, the
//! pattern of a journal that grows (the file's new size is flushed too).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::latency::Latencies;
use super::report::{metric, CaseResult};

/// Samples taken.
const SAMPLES: u32 = 400;
/// Bytes appended before each `fdatasync`: about one small batch of a journal.
const BLOCK_BYTES: usize = 4_096;
/// Workload name of the case.
pub(crate) const WORKLOAD: &str = "disk";
/// Target name of the case.
pub(crate) const TARGET: &str = "fdatasync";

/// Measures `fdatasync` after appends to a fresh file in `dir` (removed
/// after), just before the W3 case of target `before`: case
/// `disk/fdatasync/<before>`.
pub(crate) async fn fdatasync(dir: &Path, before: &str) -> Result<CaseResult> {
    let path = dir.join("fdatasync.probe");
    let measured = tokio::task::spawn_blocking(move || {
        let result = measure(&path);
        let _ = std::fs::remove_file(&path);
        result
    })
    .await
    .context("the fdatasync probe panicked")??;
    let (latencies, elapsed) = measured;
    let mut case = CaseResult::new(WORKLOAD, TARGET, "w3", before);
    case.params.insert("block_bytes".into(), BLOCK_BYTES as u64);
    case.measured_s = elapsed.as_secs_f64();
    case.latency = latencies.summary();
    if !elapsed.is_zero() {
        case.figures.insert(
            metric::SYNCS_PER_S.into(),
            f64::from(SAMPLES) / elapsed.as_secs_f64(),
        );
    }
    Ok(case)
}

fn measure(path: &Path) -> Result<(Latencies, Duration)> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let block = vec![0x5a; BLOCK_BYTES];
    let mut latencies = Latencies::new();
    let started = Instant::now();
    for _ in 0..SAMPLES {
        let sample = Instant::now();
        file.write_all(&block)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot write and sync {}", path.display()))?;
        latencies.record(sample.elapsed());
    }
    Ok((latencies, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_probe_reports_a_median_and_a_rate_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let case = fdatasync(dir.path(), "embedded").await.unwrap();
        assert_eq!(case.id, "disk/fdatasync/embedded");
        assert!(case.value(metric::P50_US).is_some_and(|v| v > 0.0));
        assert!(case.figures[metric::SYNCS_PER_S] > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
