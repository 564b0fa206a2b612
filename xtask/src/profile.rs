//! `cargo xtask profile-append`: instructions per append of the embedded
//! store's writer, counted by callgrind (instruction counts are stable where
//! timings on a shared machine are not).
//!
//! Builds gater-store's `profile_append` benchmark (64 appenders, one
//! 256-byte event per append over 1,000 streams, fsync and group commit on),
//! runs it under `valgrind --tool=callgrind`, and divides two inclusive
//! counts by the appends made: the writer's batch commits (the embedded
//! backend's `append_batch`: staging, encoding into the write batch, commit
//! and flush, without the kernel's share of the flush) and the whole process
//! (appenders, runtime, writer). The raw callgrind file stays under
//! `<target dir>/profile/` for `callgrind_annotate`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::cluster::build_executable;

/// The function whose inclusive count is the writer's cost.
const WRITER_FUNCTION: &str = "StoreInner>::append_batch";
/// The line of `callgrind_annotate` holding the whole program's count.
const PROGRAM_TOTALS: &str = "PROGRAM TOTALS";

/// Builds the profile, runs it under callgrind and prints instructions per append.
pub(crate) fn run(appends: u64) -> Result<()> {
    for tool in ["valgrind", "callgrind_annotate"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("{tool} is missing: install valgrind (apt-get install valgrind)");
        }
    }
    let binary = build_executable(
        &[
            "bench",
            "--package",
            "gater-store",
            "--bench",
            "profile_append",
            "--no-run",
        ],
        "profile_append",
    )?;
    let out = output_file(&binary)?;
    let mut callgrind = Command::new("valgrind");
    callgrind
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&binary)
        .env("PROFILE_APPENDS", appends.to_string());
    eprintln!(
        "$ PROFILE_APPENDS={appends} valgrind --tool=callgrind --callgrind-out-file={} {}",
        out.display(),
        binary.display()
    );
    let status = callgrind.status().context("cannot start valgrind")?;
    if !status.success() {
        bail!("the profiled run failed with {status}");
    }
    let annotated = Command::new("callgrind_annotate")
        .arg("--inclusive=yes")
        .arg(&out)
        .output()
        .context("cannot start callgrind_annotate")?;
    if !annotated.status.success() {
        bail!("callgrind_annotate failed with {}", annotated.status);
    }
    let text = String::from_utf8_lossy(&annotated.stdout);
    let counts = Counts::from_annotation(&text)?;
    println!("appends                         {appends:>12}");
    println!(
        "writer instructions per append  {:>12.0}",
        counts.writer as f64 / appends as f64
    );
    println!(
        "process instructions per append {:>12.0}",
        counts.total as f64 / appends as f64
    );
    println!("callgrind output                {}", out.display());
    Ok(())
}

/// Inclusive instruction counts read from `callgrind_annotate --inclusive=yes`.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    /// The whole program.
    total: u64,
    /// The writer's batch commits.
    writer: u64,
}

impl Counts {
    fn from_annotation(text: &str) -> Result<Counts> {
        let count_of = |needle: &str| {
            text.lines()
                .filter(|line| line.contains(needle))
                .filter_map(leading_count)
                .max()
        };
        let total = count_of(PROGRAM_TOTALS).context("callgrind_annotate printed no totals")?;
        let writer = count_of(WRITER_FUNCTION).with_context(|| {
            format!("{WRITER_FUNCTION} is not in the profile (inlined or renamed?)")
        })?;
        Ok(Counts { total, writer })
    }
}

/// The count a `callgrind_annotate` line starts with (`1,234 (5.6%) ...`).
fn leading_count(line: &str) -> Option<u64> {
    let first = line.split_whitespace().next()?;
    first.replace(',', "").parse().ok()
}

/// `<target dir>/profile/callgrind.append.<unix seconds>`, next to `release/`.
fn output_file(binary: &Path) -> Result<PathBuf> {
    // The binary is `<target dir>/release/deps/profile_append-<hash>`.
    let target = binary
        .ancestors()
        .nth(3)
        .context("the benchmark binary is not inside a target directory")?;
    let dir = target.join("profile");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(dir.join(format!("callgrind.append.{seconds}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_the_totals_and_the_writer_line() {
        let text = "\
--------------------------------------------------------------------------------
183,156,091 (100.0%)  PROGRAM TOTALS
--------------------------------------------------------------------------------
137,124,050 (74.87%)  /x/gater-store/src/embedded/mod.rs:<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll
131,711,559 (71.91%)  /x/gater-store/src/embedded/append.rs:gater_store::embedded::append::<impl gater_store::embedded::StoreInner>::append_batch [/x/profile_append-1]
 80,065,132 (43.71%)  /x/fjall/src/batch/mod.rs:fjall::batch::WriteBatch::commit [/x/profile_append-1]
";
        assert_eq!(
            Counts::from_annotation(text).unwrap(),
            Counts {
                total: 183_156_091,
                writer: 131_711_559
            }
        );
    }

    #[test]
    fn a_profile_without_the_writer_is_an_error_that_names_it() {
        let err = Counts::from_annotation("5 (100.0%)  PROGRAM TOTALS\n").unwrap_err();
        assert!(err.to_string().contains(WRITER_FUNCTION), "{err}");
    }
}
