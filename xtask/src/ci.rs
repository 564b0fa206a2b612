//! `cargo xtask ci`: the repository's checks, in the order CI runs them.

use anyhow::Result;

use crate::run_step;

/// The test command README.md gives; CI runs exactly this.
pub(crate) const TEST_COMMAND: &[&str] = &["test", "--workspace"];

/// Runs formatting, lints and tests; `slow` also runs the slow tests and
/// every fuzz target for [`CI_SECONDS`](crate::fuzz::CI_SECONDS) in total.
pub(crate) fn run(slow: bool) -> Result<()> {
    run_step("cargo", &["fmt", "--all", "--", "--check"], &[])?;
    run_step(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    let envs: &[(&str, &str)] = if slow {
        &[("RUN_SLOW_TESTS", "1")]
    } else {
        &[]
    };
    run_step("cargo", TEST_COMMAND, envs)?;
    if slow {
        // A decoder regression fails CI; a machine that cannot fuzz says so.
        if let Some(skip) = crate::fuzz::run_or_skip(crate::fuzz::CI_SECONDS)? {
            eprintln!("ci: fuzzing skipped: {skip:?} (cargo-fuzz cannot build the targets here)");
        }
    }
    eprintln!("ci: all checks passed");
    Ok(())
}
