//! Server configuration: a TOML file can set everything the flags set; flags
//! (and their `GATER_*` environment variables, which clap reads) win over it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use gater_proxy::StorageMode;
use gater_transport_quic::MEMORY_MAX_BYTES_DEFAULT;

use super::args::{BackendKind, ProxyArgs, WorkerArgs};

/// Explicit certificate files; each falls back to the `--certs DIR` layout.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFiles {
    /// CA certificate that signs peers (PEM).
    pub(crate) ca: Option<PathBuf>,
    /// This server's certificate (PEM).
    pub(crate) server_cert: Option<PathBuf>,
    /// This server's key (PEM).
    pub(crate) server_key: Option<PathBuf>,
    /// Client certificate used to reach other servers (PEM).
    pub(crate) client_cert: Option<PathBuf>,
    /// Client key (PEM).
    pub(crate) client_key: Option<PathBuf>,
}

/// `gater worker` settings as a TOML file writes them.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerFile {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    join: Option<String>,
    advertise: Option<String>,
    id: Option<String>,
    backend: Option<String>,
    postgres_url: Option<String>,
    postgres_url_file: Option<PathBuf>,
    access: Option<PathBuf>,
    memory_max_bytes: Option<u64>,
    server_name: Option<String>,
    heal_interval_ms: Option<u64>,
    heal_free_bytes_min: Option<u64>,
    heal_free_percent_min: Option<u8>,
    #[serde(default)]
    tls: TlsFiles,
}

/// `gater proxy` settings as a TOML file writes them.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProxyFile {
    listen: Option<String>,
    #[serde(default)]
    workers: Vec<String>,
    /// `"embedded"` (the default) or `"shared"`.
    storage: Option<String>,
    access: Option<PathBuf>,
    memory_max_bytes: Option<u64>,
    server_name: Option<String>,
    #[serde(default)]
    tls: TlsFiles,
}

/// A worker's settings after merging file and flags. Its `Debug` shows the
/// PostgreSQL URL with the password redacted.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct WorkerConfig {
    /// Data directory.
    pub(crate) data_dir: PathBuf,
    /// Listen address.
    pub(crate) listen: String,
    /// Proxy to announce to.
    pub(crate) join: Option<String>,
    /// Address proxies reach this worker at.
    pub(crate) advertise: String,
    /// Worker id.
    pub(crate) id: String,
    /// Storage engine.
    pub(crate) backend: BackendKind,
    /// PostgreSQL URL.
    pub(crate) postgres_url: Option<String>,
    /// Access rules file.
    pub(crate) access: Option<PathBuf>,
    /// Server-wide byte budget of requests.
    pub(crate) memory_max_bytes: u64,
    /// Name the certificates of the servers this one dials must carry, when
    /// not the host dialled (`--server-name` wins).
    pub(crate) server_name: Option<String>,
    /// How stores heal after a disk fault.
    pub(crate) heal: gater_store::HealOptions,
    /// Explicit certificate files.
    pub(crate) tls: TlsFiles,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("join", &self.join)
            .field("advertise", &self.advertise)
            .field("id", &self.id)
            .field("backend", &self.backend)
            .field(
                "postgres_url",
                &self.postgres_url.as_deref().map(gater_store::redact_url),
            )
            .field("access", &self.access)
            .field("memory_max_bytes", &self.memory_max_bytes)
            .field("server_name", &self.server_name)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The PostgreSQL URL: the flag (or GATER_POSTGRES_URL), else the first
/// line of the URL file (flag, GATER_POSTGRES_URL_FILE or config), else
/// the config file's `postgres_url`.
fn postgres_url(args: &WorkerArgs, file: &WorkerFile) -> Result<Option<String>> {
    if let Some(url) = &args.postgres_url {
        return Ok(Some(url.clone()));
    }
    if let Some(path) = args
        .postgres_url_file
        .as_ref()
        .or(file.postgres_url_file.as_ref())
    {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the PostgreSQL URL file {}", path.display()))?;
        let url = text.lines().next().unwrap_or("").trim().to_owned();
        anyhow::ensure!(
            !url.is_empty(),
            "{} holds no PostgreSQL URL",
            path.display()
        );
        return Ok(Some(url));
    }
    Ok(file.postgres_url.clone())
}

/// A proxy's settings after merging file and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyConfig {
    /// Listen address.
    pub(crate) listen: String,
    /// Static workers.
    pub(crate) workers: Vec<String>,
    /// How the workers hold their stores.
    pub(crate) storage: StorageMode,
    /// Access rules file.
    pub(crate) access: Option<PathBuf>,
    /// Server-wide byte budget of requests.
    pub(crate) memory_max_bytes: u64,
    /// Name the certificates of the servers this one dials must carry, when
    /// not the host dialled (`--server-name` wins).
    pub(crate) server_name: Option<String>,
    /// Explicit certificate files.
    pub(crate) tls: TlsFiles,
}

/// Default worker listen address.
pub(crate) const WORKER_LISTEN_DEFAULT: &str = "127.0.0.1:7401";
/// Default proxy listen address.
pub(crate) const PROXY_LISTEN_DEFAULT: &str = "127.0.0.1:7400";

fn read_toml<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration in {}", path.display()))
}

impl WorkerConfig {
    /// Merges the config file (if any) under the flags.
    pub(crate) fn load(args: &WorkerArgs) -> Result<Self> {
        let file: WorkerFile = read_toml(args.config.as_deref())?;
        let postgres_url = postgres_url(args, &file)?;
        let listen = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| WORKER_LISTEN_DEFAULT.to_owned());
        let advertise = args
            .advertise
            .clone()
            .or(file.advertise)
            .unwrap_or_else(|| listen.clone());
        let backend = match (args.backend, file.backend.as_deref()) {
            (Some(b), _) => b,
            (None, None | Some("embedded")) => BackendKind::Embedded,
            (None, Some("postgres")) => BackendKind::Postgres,
            (None, Some(other)) => {
                anyhow::bail!("backend must be embedded or postgres, got {other:?}")
            }
        };
        // A PostgreSQL worker keeps nothing on disk.
        let no_data_dir = (backend == BackendKind::Postgres).then(|| PathBuf::from("."));
        Ok(WorkerConfig {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .or(no_data_dir)
                .context("--data-dir (or data_dir in the config file) is required")?,
            id: args
                .id
                .clone()
                .or(file.id)
                .unwrap_or_else(|| advertise.clone()),
            join: args.join.clone().or(file.join),
            postgres_url,
            access: args.access.clone().or(file.access),
            memory_max_bytes: file.memory_max_bytes.unwrap_or(MEMORY_MAX_BYTES_DEFAULT),
            server_name: file.server_name,
            heal: heal_options(
                &args.heal,
                (
                    file.heal_interval_ms,
                    file.heal_free_bytes_min,
                    file.heal_free_percent_min,
                ),
            ),
            listen,
            advertise,
            backend,
            tls: file.tls,
        })
    }
}

/// Heal options from the flags, over the config file's `(interval,
/// free bytes, free percent)`, over the defaults.
pub(crate) fn heal_options(
    args: &crate::cli::args::HealArgs,
    file: (Option<u64>, Option<u64>, Option<u8>),
) -> gater_store::HealOptions {
    let defaults = gater_store::HealOptions::default();
    gater_store::HealOptions {
        interval_ms: args
            .heal_interval_ms
            .or(file.0)
            .unwrap_or(defaults.interval_ms),
        free_bytes_min: args
            .heal_free_bytes_min
            .or(file.1)
            .unwrap_or(defaults.free_bytes_min),
        free_percent_min: args
            .heal_free_percent_min
            .or(file.2)
            .unwrap_or(defaults.free_percent_min),
        ..defaults
    }
}

impl ProxyConfig {
    /// Merges the config file (if any) under the flags.
    pub(crate) fn load(args: &ProxyArgs) -> Result<Self> {
        let file: ProxyFile = read_toml(args.config.as_deref())?;
        let storage = match (args.shared, file.storage.as_deref()) {
            (true, _) | (false, Some("shared")) => StorageMode::Shared,
            (false, None | Some("embedded")) => StorageMode::Embedded,
            (false, Some(other)) => {
                anyhow::bail!("storage must be embedded or shared, got {other:?}")
            }
        };
        Ok(ProxyConfig {
            storage,
            access: args.access.clone().or(file.access),
            memory_max_bytes: file.memory_max_bytes.unwrap_or(MEMORY_MAX_BYTES_DEFAULT),
            server_name: file.server_name,
            listen: args
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(|| PROXY_LISTEN_DEFAULT.to_owned()),
            workers: if args.workers.is_empty() {
                file.workers
            } else {
                args.workers.clone()
            },
            tls: file.tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    use crate::cli::args::{Cli, Command};

    fn worker_args(argv: &[&str]) -> WorkerArgs {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Worker(w) => w,
            other => panic!("not a worker command: {other:?}"),
        }
    }

    #[test]
    fn worker_flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        fs::write(
            &path,
            "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:9000\"\nid = \"w-file\"\n[tls]\nca = \"/x/ca.crt\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let from_file =
            WorkerConfig::load(&worker_args(&["gater", "worker", "--config", p])).unwrap();
        assert_eq!(from_file.data_dir, PathBuf::from("/from/file"));
        assert_eq!(from_file.listen, "127.0.0.1:9000");
        assert_eq!(from_file.id, "w-file");
        assert_eq!(from_file.tls.ca, Some(PathBuf::from("/x/ca.crt")));
        let flags = [
            "gater",
            "worker",
            "--config",
            p,
            "--listen",
            "127.0.0.1:9100",
            "--data-dir",
            "/d",
        ];
        let merged = WorkerConfig::load(&worker_args(&flags)).unwrap();
        assert_eq!(merged.listen, "127.0.0.1:9100");
        assert_eq!(merged.data_dir, PathBuf::from("/d"));
        assert_eq!(merged.advertise, "127.0.0.1:9100");
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        fs::write(&path, "data_dri = \"/typo\"\n").unwrap();
        let args = worker_args(&["gater", "worker", "--config", path.to_str().unwrap()]);
        assert!(WorkerConfig::load(&args).is_err());
    }

    fn proxy_args(argv: &[&str]) -> ProxyArgs {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Proxy(p) => p,
            other => panic!("not a proxy command: {other:?}"),
        }
    }

    #[test]
    fn proxy_storage_is_shared_by_flag_or_config_key() {
        let plain = ProxyConfig::load(&proxy_args(&["gater", "proxy"])).unwrap();
        assert_eq!(plain.storage, StorageMode::Embedded);
        let flag = ProxyConfig::load(&proxy_args(&["gater", "proxy", "--shared"])).unwrap();
        assert_eq!(flag.storage, StorageMode::Shared);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        fs::write(&path, "storage = \"shared\"\n").unwrap();
        let p = path.to_str().unwrap();
        let file = ProxyConfig::load(&proxy_args(&["gater", "proxy", "--config", p])).unwrap();
        assert_eq!(file.storage, StorageMode::Shared);
        fs::write(&path, "storage = \"replicated\"\n").unwrap();
        assert!(ProxyConfig::load(&proxy_args(&["gater", "proxy", "--config", p])).is_err());
    }

    #[test]
    fn a_postgres_worker_needs_no_data_dir() {
        let args = worker_args(&[
            "gater",
            "worker",
            "--backend",
            "postgres",
            "--postgres-url",
            "postgres://gater@localhost/events",
        ]);
        let config = WorkerConfig::load(&args).unwrap();
        assert_eq!(config.backend, BackendKind::Postgres);
        assert_eq!(
            config.postgres_url.as_deref(),
            Some("postgres://gater@localhost/events")
        );
        assert!(WorkerConfig::load(&worker_args(&["gater", "worker"])).is_err());
    }

    #[test]
    fn the_postgres_url_comes_from_a_file_and_debug_hides_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg-url");
        fs::write(&path, "postgres://gater:s3cret@db/events\n").unwrap();
        let args = worker_args(&[
            "gater",
            "worker",
            "--backend",
            "postgres",
            "--postgres-url-file",
            path.to_str().unwrap(),
        ]);
        let config = WorkerConfig::load(&args).unwrap();
        assert_eq!(
            config.postgres_url.as_deref(),
            Some("postgres://gater:s3cret@db/events")
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://gater:***@db/events"), "{shown}");
    }
}
