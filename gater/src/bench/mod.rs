//! `gater bench`: workloads W1–W9 over any `Gater`, against a server or side
//! by side in this process (`--suite compare`), with HDR latency histograms,
//! a fixed seed and warm-up excluded.
//!
//! Against a server (`--server`, `--certs`) it runs W1–W5 in stores of its
//! own (created and removed per case), shows a progress bar on a terminal
//! and prints a table, or JSON lines with `--json`. The compare suite sets
//! up every target in one process (see `targets`) and adds ratios and goals;
//! `--out FILE` writes the whole report as one JSON document, which
//! `cargo xtask bench` renders.
//!
//! What it does not do: no assertion on speed (goals are reported, met or
//! not), no network setup of its own beyond loopback servers in the suite.

mod args;
mod cpu;
mod dcb;
mod disk;
mod driver;
mod failover;
mod latency;
mod processes;
mod report;
mod stores;
mod subscriptions;
mod suite;
mod targets;
mod workload;

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

pub(crate) use args::BenchArgs;
use args::Suite;
use report::{CaseResult, Report, REPORT_SCHEMA};

use crate::cli::args::Global;

/// Runs `gater bench`.
pub(crate) async fn run(global: &Global, args: BenchArgs) -> Result<()> {
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let params = args.params();
    let (target, cases, ratio_specs, mut goals) = match args.suite {
        Some(Suite::Compare) => {
            let mut recorder = Recorder::new(
                global.json,
                suite::COMPARE_CASE_COUNT + suite::POSTGRES_CASE_COUNT,
            );
            let binary = std::env::current_exe().context("cannot find the gater binary")?;
            let postgres_url = args.postgres_url.as_deref();
            suite::compare(&params, Some(&binary), postgres_url, &mut recorder).await?;
            let cases = recorder.finish();
            (
                "compare".to_owned(),
                cases,
                suite::compare_ratios(),
                suite::compare_goals(),
            )
        }
        Some(Suite::Stores) => {
            let mut recorder = Recorder::new(global.json, 1 + stores::CASE_COUNT);
            suite::stores(&params, &mut recorder).await?;
            (
                "stores".to_owned(),
                recorder.finish(),
                suite::stores_ratios(),
                suite::stores_goals(),
            )
        }
        None => {
            let gater = crate::connect(global, global.timeout).await?;
            let names = workload::StoreNames::new(format!("bench-{started_unix_s:x}"));
            let mut recorder = Recorder::new(global.json, suite::server_case_count(&args));
            suite::server(&gater, &args, &names, &mut recorder).await?;
            (
                global.servers.join(","),
                recorder.finish(),
                Vec::new(),
                Vec::new(),
            )
        }
    };
    let ratios = report::ratios(&cases, &ratio_specs);
    report::evaluate(&mut goals, &cases, &ratios);
    let report = Report {
        schema: REPORT_SCHEMA,
        started_unix_s,
        target,
        seed: args.seed,
        seconds: params.timing.measure.as_secs_f64(),
        warmup_s: params.timing.warmup.as_secs_f64(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cases,
        ratios,
        goals,
    };
    print_summary(&report, global.json)?;
    if let Some(path) = &args.out {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        if !global.json {
            println!("report written to {}", path.display());
        }
    }
    Ok(())
}

/// Collects cases as they finish and shows progress: a bar on a terminal,
/// each case as a JSON line with `--json`.
pub(crate) struct Recorder {
    json: bool,
    bar: ProgressBar,
    cases: Vec<CaseResult>,
}

/// How often the progress bar redraws on its own.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

impl Recorder {
    fn new(json: bool, cases: u64) -> Self {
        let bar = if json || !io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(cases);
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(PROGRESS_TICK);
            bar
        };
        Recorder {
            json,
            bar,
            cases: Vec::new(),
        }
    }

    /// A recorder that shows nothing (tests).
    #[cfg(test)]
    pub(crate) fn hidden() -> Self {
        Recorder {
            json: false,
            bar: ProgressBar::hidden(),
            cases: Vec::new(),
        }
    }

    /// A case is about to run.
    pub(crate) fn starting(&self, id: &str) {
        self.bar.set_message(id.to_owned());
    }

    /// A step that is not a case (setup, filling) is under way.
    pub(crate) fn note(&self, what: &str) {
        self.bar.set_message(what.to_owned());
    }

    /// A case finished.
    pub(crate) fn record(&mut self, case: CaseResult) {
        if self.json {
            println!("{}", json!({ "case": case }));
        }
        self.bar.inc(1);
        self.cases.push(case);
    }

    pub(crate) fn finish(self) -> Vec<CaseResult> {
        self.bar.finish_and_clear();
        self.cases
    }
}

/// Prints the table, ratios and goals (or, with `--json`, ratios and goals as JSON lines).
fn print_summary(report: &Report, json: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    if json {
        for ratio in &report.ratios {
            writeln!(out, "{}", json!({ "ratio": ratio }))?;
        }
        for goal in &report.goals {
            writeln!(out, "{}", json!({ "goal": goal }))?;
        }
        return Ok(());
    }
    let rows: Vec<_> = report.cases.iter().map(report::table_row).collect();
    write!(
        out,
        "{}",
        report::render_table(report::TABLE_COLUMNS, &rows)
    )?;
    if !report.ratios.is_empty() {
        writeln!(out)?;
        for ratio in &report.ratios {
            let value = ratio.value.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
            writeln!(out, "{:<40} {value}", ratio.name)?;
        }
    }
    if !report.goals.is_empty() {
        writeln!(out)?;
        for goal in &report.goals {
            let actual = goal.actual.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
            let verdict = if goal.met { "met" } else { "MISSED" };
            writeln!(
                out,
                "{verdict:<6} {:<45} {actual} (goal {} {})",
                goal.name,
                goal.bound.operator(),
                goal.threshold
            )?;
        }
    }
    Ok(())
}
