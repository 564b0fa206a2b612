//! The state a running cluster leaves in `DIR/cluster.json`: who supervises
//! it, which `gater` binary it runs, and every process with its pid, address,
//! arguments and log. A second `cargo xtask cluster --dir DIR --kill-worker K`
//! reads it to act on one worker; the supervisor reads it again when it stops,
//! to stop workers restarted from another terminal too.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The state file's name inside the cluster directory.
pub(crate) const STATE_FILE: &str = "cluster.json";

/// What a process of the cluster is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// A `gater worker`.
    Worker,
    /// A `gater proxy`.
    Proxy,
}

/// One server process of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessRecord {
    /// `worker-K` or `proxy-K`, 1-based.
    pub(crate) name: String,
    /// Worker or proxy.
    pub(crate) role: Role,
    /// The `host:port` it listens on.
    pub(crate) address: String,
    /// Its `gater` arguments; a restart reuses them.
    pub(crate) args: Vec<String>,
    /// Its pid while it runs; `None` once killed by hand.
    pub(crate) pid: Option<u32>,
    /// Where its stdout and stderr go.
    pub(crate) log: PathBuf,
}

/// The throwaway PostgreSQL server of a `--backend postgres` cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PostgresRecord {
    /// The URL workers connect with.
    pub(crate) url: String,
    /// Its data directory.
    pub(crate) data_dir: PathBuf,
    /// The directory holding `initdb` and `pg_ctl`.
    pub(crate) bin_dir: PathBuf,
    /// The postmaster's pid.
    pub(crate) pid: Option<u32>,
}

/// Everything `DIR/cluster.json` records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClusterState {
    /// The pid of the `cargo xtask cluster` process supervising the cluster.
    pub(crate) supervisor_pid: u32,
    /// The `gater` binary every process runs.
    pub(crate) gater: PathBuf,
    /// The certificates directory (`--certs`).
    pub(crate) certs: PathBuf,
    /// `embedded` or `postgres`.
    pub(crate) backend: String,
    /// The PostgreSQL server, with `--backend postgres`.
    pub(crate) postgres: Option<PostgresRecord>,
    /// Workers then proxies.
    pub(crate) processes: Vec<ProcessRecord>,
}

impl ClusterState {
    /// Reads `DIR/cluster.json`.
    pub(crate) fn load(dir: &Path) -> Result<ClusterState> {
        let path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&path)
            .with_context(|| format!("no cluster state in {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// Writes `DIR/cluster.json` whole (a temporary file renamed over it), so a
    /// concurrent reader never sees half a file.
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let temporary = dir.join(format!("{STATE_FILE}.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(self)?;
        fs::write(&temporary, text)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The workers, in order.
    pub(crate) fn workers(&self) -> impl Iterator<Item = &ProcessRecord> {
        self.processes.iter().filter(|p| p.role == Role::Worker)
    }

    /// The proxies, in order.
    pub(crate) fn proxies(&self) -> impl Iterator<Item = &ProcessRecord> {
        self.processes.iter().filter(|p| p.role == Role::Proxy)
    }

    /// The worker a user names on the command line: `K` (1-based) or `worker-K`.
    pub(crate) fn worker_index(&self, which: &str) -> Option<usize> {
        let name = if which.chars().all(|c| c.is_ascii_digit()) {
            format!("worker-{which}")
        } else {
            which.to_owned()
        };
        self.processes
            .iter()
            .position(|p| p.role == Role::Worker && p.name == name)
    }

    /// The comma-separated proxy addresses, as `gater --server` takes them.
    pub(crate) fn servers(&self) -> String {
        self.proxies()
            .map(|p| p.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, role: Role) -> ProcessRecord {
        ProcessRecord {
            name: name.into(),
            role,
            address: format!("127.0.0.1:{}", name.len()),
            args: vec!["worker".into()],
            pid: Some(42),
            log: PathBuf::from(format!("/logs/{name}.log")),
        }
    }

    fn state() -> ClusterState {
        ClusterState {
            supervisor_pid: 7,
            gater: PathBuf::from("/bin/gater"),
            certs: PathBuf::from("/c"),
            backend: "embedded".into(),
            postgres: None,
            processes: vec![
                record("worker-1", Role::Worker),
                record("worker-2", Role::Worker),
                record("proxy-1", Role::Proxy),
            ],
        }
    }

    #[test]
    fn the_state_file_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let written = state();
        written.save(dir.path()).unwrap();
        assert_eq!(ClusterState::load(dir.path()).unwrap(), written);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != STATE_FILE)
            .collect();
        assert!(leftovers.is_empty(), "no temporary file stays behind");
    }

    #[test]
    fn workers_are_named_by_number_or_name_and_proxies_are_not_workers() {
        let state = state();
        assert_eq!(state.worker_index("2"), Some(1));
        assert_eq!(state.worker_index("worker-1"), Some(0));
        assert_eq!(state.worker_index("proxy-1"), None);
        assert_eq!(state.worker_index("3"), None);
        assert_eq!(state.servers(), "127.0.0.1:7");
    }
}
