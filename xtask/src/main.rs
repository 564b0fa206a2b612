//! Project automation: `cargo xtask <command>` (the alias lives in `.cargo/config.toml`).
//!
//! Every workflow is plain Rust here, no shell scripts. `ci` runs the same
//! steps as `.ci/run`, which only installs what a fresh machine lacks and then
//! calls `cargo xtask ci`: one definition of the steps.

mod bench;
mod certs;
mod ci;
mod cluster;
mod demo;
mod fuzz;
mod profile;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "Gater's project workflows")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Format check, clippy with warnings denied, then the test suite (as CI runs it).
    Ci {
        /// Also run slow tests (sets RUN_SLOW_TESTS=1, as CI does) and every
        /// fuzz target briefly (60 s in total).
        #[arg(long)]
        slow: bool,
    },
    /// Run the in-process benchmark suite; write JSON, Markdown and SVG under target/bench.
    Bench {
        /// Measured seconds per case.
        #[arg(long)]
        seconds: Option<f64>,
        /// Print the change of every figure against this earlier report.
        #[arg(long, value_name = "OLD.json")]
        compare: Option<PathBuf>,
        /// Render this report instead of running the suite.
        #[arg(long, value_name = "REPORT.json")]
        input: Option<PathBuf>,
    },
    /// Run every fuzz target (wire frames, access files) for a while; installs cargo-fuzz.
    Fuzz {
        /// Seconds to fuzz in total, split between the targets.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Count the embedded writer's instructions per append under callgrind (needs valgrind).
    ProfileAppend {
        /// Appends to make (64 appenders, one 256-byte event each).
        #[arg(long, default_value_t = 20_000)]
        appends: u64,
    },
    /// Start a local cluster of workers and proxies; Ctrl-C stops it.
    Cluster(cluster::ClusterArgs),
    /// Write a development CA with server and client certificates for `gater --certs DIR`.
    Certs(certs::CertsArgs),
    /// Run a short mixed workload against a cluster (or one it starts) and print a summary.
    Demo(demo::DemoArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Ci { slow } => ci::run(slow),
        Cmd::Fuzz { seconds } => fuzz::run(seconds),
        Cmd::ProfileAppend { appends } => profile::run(appends),
        Cmd::Cluster(args) => cluster::run(args),
        Cmd::Certs(args) => certs::run(args),
        Cmd::Demo(args) => demo::run(args),
        Cmd::Bench {
            seconds,
            compare,
            input,
        } => bench::run(&bench::Options {
            seconds,
            compare,
            input,
        }),
    }
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs `program args` in the project root, echoing it first; fails on a non-zero exit.
pub(crate) fn run_step(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(project_root())
        .status()
        .with_context(|| format!("cannot start {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}
