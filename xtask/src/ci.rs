//! `cargo xtask ci`: the repository's checks, in the order CI runs them.

use anyhow::Result;

use crate::run_step;

/// The test command README.md gives; CI runs exactly this.
pub(crate) const TEST_COMMAND: &[&str] = &["test", "--workspace"];

/// Runs formatting, lints and tests; `slow` also runs the slow tests.
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
    eprintln!("ci: all checks passed");
    Ok(())
}
