//! `cargo xtask fuzz`: runs every fuzz target under `fuzz/` for a bounded
//! time in total, split evenly between them.
//!
//! cargo-fuzz needs nightly compiler flags; the machine's single stable
//! toolchain accepts them with `RUSTC_BOOTSTRAP=1`, so no second toolchain is
//! needed. cargo-fuzz itself is installed on first use. `cargo xtask ci`
//! runs this too: when cargo-fuzz cannot be installed or the targets cannot
//! be built here, it says so and skips; a target that finds a crash fails.

use std::fs;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{project_root, run_step};

/// Seconds `cargo xtask ci` fuzzes in total.
pub(crate) const CI_SECONDS: u64 = 60;
/// Least time one target gets, seconds.
const TARGET_SECONDS_MIN: u64 = 1;

/// Why fuzzing could not start (as opposed to a target failing).
#[derive(Debug)]
pub(crate) enum Skip {
    /// cargo-fuzz is missing and could not be installed.
    NoCargoFuzz,
    /// The targets do not build with this toolchain.
    NoBuild,
}

/// Runs every target for `seconds` in total; fails if setup fails.
pub(crate) fn run(seconds: u64) -> Result<()> {
    match run_or_skip(seconds)? {
        None => Ok(()),
        Some(skip) => bail!("fuzzing cannot run here: {skip:?}"),
    }
}

/// Runs every target for `seconds` in total; `Ok(Some(_))` when the
/// toolchain cannot fuzz here (nothing ran), `Err` when a target failed.
pub(crate) fn run_or_skip(seconds: u64) -> Result<Option<Skip>> {
    let targets = targets()?;
    if targets.is_empty() {
        bail!("no fuzz target in fuzz/Cargo.toml");
    }
    if !cargo_fuzz_installed()
        && run_step("cargo", &["install", "--locked", "cargo-fuzz"], &[]).is_err()
    {
        return Ok(Some(Skip::NoCargoFuzz));
    }
    let bootstrap = [("RUSTC_BOOTSTRAP", "1")];
    if run_step(
        "cargo",
        &["fuzz", "build", "--fuzz-dir", "fuzz"],
        &bootstrap,
    )
    .is_err()
    {
        return Ok(Some(Skip::NoBuild));
    }
    let each = (seconds / targets.len() as u64).max(TARGET_SECONDS_MIN);
    let max_time = format!("-max_total_time={each}");
    for target in &targets {
        run_step(
            "cargo",
            &["fuzz", "run", "--fuzz-dir", "fuzz", target, "--", &max_time],
            &bootstrap,
        )?;
    }
    Ok(None)
}

fn cargo_fuzz_installed() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `[[bin]]` names of `fuzz/Cargo.toml`: every fuzz target.
fn targets() -> Result<Vec<String>> {
    let path = project_root().join("fuzz").join("Cargo.toml");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    Ok(manifest
        .get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|bin| bin.get("name").and_then(toml::Value::as_str))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fuzz_target_is_found() {
        let targets = targets().unwrap();
        assert!(targets.contains(&"frame_decode".to_owned()), "{targets:?}");
        assert!(targets.contains(&"access_file".to_owned()), "{targets:?}");
    }
}
