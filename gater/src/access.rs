//! The access rules a server enforces: read from the `--access` file (or
//! `access = "FILE"` in `--config`), or, without one, every identity is
//! admin and the server says so once at start.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use gater_core::access::{self, Access, Gatekeeper};
use gater_core::Side;

/// The warning a server without an access file logs once at start.
pub(crate) const OPEN_WARNING: &str =
    "no access file (--access): every certificate signed by the CA is admin";

/// The rules of `path`, or open rules (with the warning) without one; a file
/// that does not parse is refused naming its line.
pub(crate) fn load(path: Option<&Path>) -> Result<Access> {
    let Some(path) = path else {
        tracing::warn!("{OPEN_WARNING}");
        return Ok(Access::open());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the access file {}", path.display()))?;
    let access =
        access::parse(&text).with_context(|| format!("invalid access file {}", path.display()))?;
    tracing::info!(
        file = %path.display(),
        grants = access.grants().len(),
        "access rules loaded"
    );
    Ok(access)
}

/// The gatekeeper of a server of kind `side` (proxy or worker).
pub(crate) fn gatekeeper(path: Option<&Path>, side: Side) -> Result<Arc<Gatekeeper>> {
    Ok(Gatekeeper::new(load(path)?, side))
}
