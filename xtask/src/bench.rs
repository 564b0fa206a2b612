//! `cargo xtask bench`: builds `gater` in release, runs its in-process
//! compare suite, and writes the report as JSON, a Markdown table and an SVG
//! chart under `<target dir>/bench/<timestamp>.*`. With `--compare OLD.json`
//! it also prints the change of every figure against that earlier run.

mod chart;
mod compare;
mod markdown;
mod schema;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use gater_testkit::pg_harness::PgServer;

use crate::project_root;

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Measured seconds per case, passed to the suite.
    pub(crate) seconds: Option<f64>,
    /// An earlier report to compare against.
    pub(crate) compare: Option<PathBuf>,
    /// Render this report instead of running the suite.
    pub(crate) input: Option<PathBuf>,
}

/// Runs the suite (or reads `--input`), writes the files, prints where they went.
pub(crate) fn run(options: &Options) -> Result<()> {
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let stamp = timestamp(unix_now());
    let json = out_dir.join(format!("{stamp}.json"));
    let report = match &options.input {
        Some(input) => {
            let report = schema::load(input)?;
            std::fs::copy(input, &json).with_context(|| {
                format!("cannot copy {} to {}", input.display(), json.display())
            })?;
            print_ratios_and_goals(&report);
            report
        }
        None => {
            run_suite(&json, options.seconds)?;
            schema::load(&json)?
        }
    };
    let md = out_dir.join(format!("{stamp}.md"));
    write(&md, &markdown::render(&report, &stamp))?;
    let svg = out_dir.join(format!("{stamp}.svg"));
    write(&svg, &chart::render(&report)?)?;
    if let Some(old) = &options.compare {
        let old_report = schema::load(old)?;
        println!("\nchanges against {}:", old.display());
        print!(
            "{}",
            compare::render(&compare::changes(&old_report, &report))
        );
    }
    println!(
        "\nwrote:\n  {}\n  {}\n  {}",
        json.display(),
        md.display(),
        svg.display()
    );
    Ok(())
}

/// Builds the release binary and runs `gater bench --suite compare --out <json>`,
/// with `--postgres-url` of a throwaway PostgreSQL server where the machine
/// has PostgreSQL's binaries (its cases are skipped otherwise).
fn run_suite(json: &Path, seconds: Option<f64>) -> Result<()> {
    let binary = crate::cluster::build_gater(false)?;
    let mut command = Command::new(&binary);
    command
        .args(["bench", "--suite", "compare", "--out"])
        .arg(json)
        .current_dir(project_root());
    if let Some(seconds) = seconds {
        command.args(["--seconds", &seconds.to_string()]);
    }
    let postgres = PgServer::start().map_err(anyhow::Error::msg)?;
    match &postgres {
        Some(server) => {
            command.args(["--postgres-url", &server.url()]);
        }
        None => eprintln!("bench: no PostgreSQL binaries here, its cases are skipped"),
    }
    eprintln!(
        "$ {} bench --suite compare --out {}{}",
        binary.display(),
        json.display(),
        if postgres.is_some() {
            " --postgres-url <throwaway server>"
        } else {
            ""
        }
    );
    let status = command
        .status()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    drop(postgres);
    if !status.success() {
        bail!("the benchmark suite failed with {status}");
    }
    Ok(())
}

fn print_ratios_and_goals(report: &schema::Report) {
    for r in &report.ratios {
        let value = r.value.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
        println!("{:<40} {value}", r.name);
    }
    for g in &report.goals {
        let actual = g.actual.map_or("n/a".to_owned(), markdown::number);
        let verdict = if g.met { "met" } else { "MISSED" };
        println!(
            "{verdict:<6} {:<45} {actual} (goal {} {})",
            g.name,
            g.bound.operator(),
            markdown::number(g.threshold)
        );
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the project root) or `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => project_root().join(dir),
        None => project_root().join("target"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYYMMDDTHHMMSSZ` (UTC) for seconds since the Unix epoch.
fn timestamp(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_times() {
        assert_eq!(timestamp(0), "19700101T000000Z");
        assert_eq!(timestamp(951_782_400), "20000229T000000Z");
        assert_eq!(timestamp(1_764_230_461), "20251127T080101Z");
    }
}
