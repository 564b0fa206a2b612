//! `cargo xtask fuzz`: runs the frame-decoder fuzz target under `fuzz/` for a while.
//!
//! cargo-fuzz needs nightly compiler flags; the machine's single stable
//! toolchain accepts them with `RUSTC_BOOTSTRAP=1`, so no second toolchain is
//! needed. cargo-fuzz itself is installed on first use.

use std::process::{Command, Stdio};

use anyhow::{bail, Result};

use crate::{project_root, run_step};

/// The fuzz target over every wire decoder.
const TARGET: &str = "frame_decode";

/// Runs the fuzz target for `seconds`.
pub(crate) fn run(seconds: u64) -> Result<()> {
    if !project_root().join("fuzz").is_dir() {
        bail!("no fuzz/ directory in the project");
    }
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        run_step("cargo", &["install", "--locked", "cargo-fuzz"], &[])?;
    }
    let max_time = format!("-max_total_time={seconds}");
    run_step(
        "cargo",
        &["fuzz", "run", "--fuzz-dir", "fuzz", TARGET, "--", &max_time],
        &[("RUSTC_BOOTSTRAP", "1")],
    )
}
