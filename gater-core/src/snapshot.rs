//! Snapshots: a projection's saved state at a stream version.

use serde::{Deserialize, Serialize};

use crate::event::Version;

/// The key of a snapshot: `(source_uuid, stream_uuid, version)` as in the reference API.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SnapshotKey {
    /// Who produced the snapshot (an aggregate type, a projection): 1 to 256 bytes.
    pub source: String,
    /// Which stream it summarises: 1 to 256 bytes.
    pub stream: String,
    /// The stream version it was taken at.
    pub version: Version,
}

/// A stored snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its key.
    pub key: SnapshotKey,
    /// The saved state, opaque to Gater (the CLI stores JSON).
    pub data: Vec<u8>,
    /// When it was recorded, microseconds since the Unix epoch.
    pub created_us: u64,
}
