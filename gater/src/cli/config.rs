//! Server configuration: a TOML file can set everything the flags set; flags
//! (and their `GATER_*` environment variables, which clap reads) win over it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use gater_core::Limits;
use gater_proxy::StorageMode;
use gater_transport_quic::{ServerConfig, MEMORY_MAX_BYTES_DEFAULT};

use super::args::{BackendKind, HttpArgs, LimitArgs, ProxyArgs, WorkerArgs};

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
    connections_max: Option<u32>,
    connection_in_flight_max: Option<u32>,
    stores_max: Option<u32>,
    server_name: Option<String>,
    heal_interval_ms: Option<u64>,
    heal_free_bytes_min: Option<u64>,
    heal_free_percent_min: Option<u8>,
    // The HTTP admin listener (`--http`, `--http-public`).
    http: Option<String>,
    http_public: Option<bool>,
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
    connections_max: Option<u32>,
    connection_in_flight_max: Option<u32>,
    server_name: Option<String>,
    // The HTTP admin listener (`--http`, `--http-public`).
    http: Option<String>,
    http_public: Option<bool>,
    threads: Option<u16>,
    #[serde(default)]
    tls: TlsFiles,
}

/// The bounds a server holds its peers to: flags, else the config file's
/// keys of the same names, else the shipped defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerLimits {
    /// Byte budget of everything peers make the server hold.
    pub(crate) memory_max_bytes: u64,
    /// Connections served at once.
    pub(crate) connections_max: u32,
    /// Requests in flight on one connection.
    pub(crate) connection_in_flight_max: u32,
}

impl ServerLimits {
    /// `flags` over `file` over the defaults.
    pub(crate) fn merge(flags: &LimitArgs, file: &LimitArgs) -> Self {
        let defaults = Limits::DEFAULT;
        ServerLimits {
            memory_max_bytes: flags
                .memory_max_bytes
                .or(file.memory_max_bytes)
                .unwrap_or(MEMORY_MAX_BYTES_DEFAULT),
            connections_max: flags
                .connections_max
                .or(file.connections_max)
                .unwrap_or(defaults.connections_max),
            connection_in_flight_max: flags
                .connection_in_flight_max
                .or(file.connection_in_flight_max)
                .unwrap_or(defaults.connection_in_flight_max),
        }
    }

    /// Sets them on a server's configuration (`Server::bind` checks them).
    pub(crate) fn apply(&self, config: &mut ServerConfig) {
        config.memory_max_bytes = self.memory_max_bytes;
        config.connections_max = self.connections_max;
        config.streams_per_connection_max = self.connection_in_flight_max;
    }
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
    /// What the server holds its peers to.
    pub(crate) limits: ServerLimits,
    /// Most stores the worker holds.
    pub(crate) stores_max: u32,
    /// Name the certificates of the servers this one dials must carry, when
    /// not the host dialled (`--server-name` wins).
    pub(crate) server_name: Option<String>,
    /// How stores heal after a disk fault.
    pub(crate) heal: gater_store::HealOptions,
    /// The HTTP admin listener.
    pub(crate) http: HttpSettings,
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
            .field("limits", &self.limits)
            .field("stores_max", &self.stores_max)
            .field("server_name", &self.server_name)
            .field("http", &self.http)
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
    /// What the server holds its peers to.
    pub(crate) limits: ServerLimits,
    /// Name the certificates of the servers this one dials must carry, when
    /// not the host dialled (`--server-name` wins).
    pub(crate) server_name: Option<String>,
    /// The HTTP admin listener.
    pub(crate) http: HttpSettings,
    /// Threads of the proxy's runtime.
    pub(crate) threads: usize,
    /// Explicit certificate files.
    pub(crate) tls: TlsFiles,
}

/// Where the HTTP admin listener serves, after merging file and flags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HttpSettings {
    /// `--http` or `http = "ADDR"`; `None`: no listener.
    pub(crate) address: Option<String>,
    /// `--http-public` or `http_public = true`: a non-loopback address is allowed.
    pub(crate) public: bool,
}

impl HttpSettings {
    fn merge(args: &HttpArgs, address: Option<String>, public: Option<bool>) -> Self {
        HttpSettings {
            address: args.http.clone().or(address),
            public: args.http_public || public.unwrap_or(false),
        }
    }
}

/// Default worker listen address.
pub(crate) const WORKER_LISTEN_DEFAULT: &str = "127.0.0.1:7401";
/// Default proxy listen address.
pub(crate) const PROXY_LISTEN_DEFAULT: &str = "127.0.0.1:7400";
/// Default threads of `gater proxy`'s runtime.
///
/// One: a proxy's work per request is small (routing on a header, passing
/// bytes on), so it is bound by how fast it wakes, not by CPU. A runtime
/// with more threads than it has work for wakes a sleeping thread to steal
/// nearly every task the network hands it. Measured on a 2-core machine
/// with the client, proxy and worker processes sharing it: with one client
/// (one append in flight) the proxy made about 12 context switches per
/// request on two threads and 4 on one; with 64 clients it spent about
/// 27 µs of CPU per append on two threads and 21 µs on one. One thread
/// carries some 45,000 small appends a second at that cost; a proxy with
/// cores of its own and more load than that raises `--threads`.
pub(crate) const PROXY_THREADS_DEFAULT: usize = 1;

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
            limits: ServerLimits::merge(
                &args.limits,
                &LimitArgs {
                    memory_max_bytes: file.memory_max_bytes,
                    connections_max: file.connections_max,
                    connection_in_flight_max: file.connection_in_flight_max,
                },
            ),
            stores_max: args
                .stores_max
                .or(file.stores_max)
                .unwrap_or(Limits::DEFAULT.stores_max),
            server_name: file.server_name,
            heal: heal_options(
                &args.heal,
                (
                    file.heal_interval_ms,
                    file.heal_free_bytes_min,
                    file.heal_free_percent_min,
                ),
            ),
            http: HttpSettings::merge(&args.http, file.http, file.http_public),
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
            limits: ServerLimits::merge(
                &args.limits,
                &LimitArgs {
                    memory_max_bytes: file.memory_max_bytes,
                    connections_max: file.connections_max,
                    connection_in_flight_max: file.connection_in_flight_max,
                },
            ),
            server_name: file.server_name,
            http: HttpSettings::merge(&args.http, file.http, file.http_public),
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
            threads: args
                .threads
                .or(file.threads)
                .map_or(PROXY_THREADS_DEFAULT, usize::from)
                .max(1),
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
    fn proxy_threads_come_from_the_flag_over_the_config_key_over_one() {
        let plain = ProxyConfig::load(&proxy_args(&["gater", "proxy"])).unwrap();
        assert_eq!(plain.threads, PROXY_THREADS_DEFAULT);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        fs::write(&path, "threads = 3\n").unwrap();
        let p = path.to_str().unwrap();
        let file = ProxyConfig::load(&proxy_args(&["gater", "proxy", "--config", p])).unwrap();
        assert_eq!(file.threads, 3);
        let argv = ["gater", "proxy", "--config", p, "--threads", "2"];
        assert_eq!(ProxyConfig::load(&proxy_args(&argv)).unwrap().threads, 2);
        let zero = Cli::try_parse_from(["gater", "proxy", "--threads", "0"]);
        assert!(zero.is_err(), "a runtime needs a thread");
    }

    #[test]
    fn limits_come_from_flags_over_config_keys_over_defaults() {
        let defaults =
            WorkerConfig::load(&worker_args(&["gater", "worker", "--data-dir", "/d"])).unwrap();
        assert_eq!(
            (defaults.limits.memory_max_bytes, defaults.stores_max),
            (MEMORY_MAX_BYTES_DEFAULT, Limits::DEFAULT.stores_max)
        );
        assert_eq!(
            defaults.limits.connection_in_flight_max,
            Limits::DEFAULT.connection_in_flight_max
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        fs::write(
            &path,
            "data_dir = \"/d\"\nmemory_max_bytes = 268435456\nstores_max = 10000\n\
             connections_max = 64\nconnection_in_flight_max = 32\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let file = WorkerConfig::load(&worker_args(&["gater", "worker", "--config", p])).unwrap();
        let expected = ServerLimits {
            memory_max_bytes: 256 << 20,
            connections_max: 64,
            connection_in_flight_max: 32,
        };
        assert_eq!((file.limits, file.stores_max), (expected, 10_000));
        let flags = [
            "gater",
            "worker",
            "--config",
            p,
            "--memory-max-bytes",
            "134217728",
            "--stores-max",
            "5",
            "--connection-in-flight-max",
            "8",
        ];
        let merged = WorkerConfig::load(&worker_args(&flags)).unwrap();
        assert_eq!(merged.limits.memory_max_bytes, 128 << 20);
        assert_eq!(merged.limits.connection_in_flight_max, 8);
        assert_eq!(merged.limits.connections_max, 64);
        assert_eq!(merged.stores_max, 5);
        let proxy_file = dir.path().join("proxy.toml");
        fs::write(&proxy_file, "connection_in_flight_max = 16\n").unwrap();
        let q = proxy_file.to_str().unwrap();
        let proxy = ProxyConfig::load(&proxy_args(&[
            "gater",
            "proxy",
            "--config",
            q,
            "--memory-max-bytes",
            "100000000",
        ]))
        .unwrap();
        assert_eq!(proxy.limits.connection_in_flight_max, 16);
        assert_eq!(proxy.limits.memory_max_bytes, 100_000_000);
        fs::write(&proxy_file, "stores_max = 16\n").unwrap();
        assert!(
            ProxyConfig::load(&proxy_args(&["gater", "proxy", "--config", q])).is_err(),
            "a proxy holds no stores"
        );
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

    #[test]
    fn the_http_listener_comes_from_the_config_file_under_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        fs::write(&path, "http = \"10.0.0.1:7480\"\nhttp_public = true\n").unwrap();
        let p = path.to_str().unwrap();
        let from_file = ProxyConfig::load(&proxy_args(&["gater", "proxy", "--config", p])).unwrap();
        assert_eq!(
            from_file.http,
            HttpSettings {
                address: Some("10.0.0.1:7480".into()),
                public: true
            }
        );
        let flags = ["gater", "proxy", "--config", p, "--http", "127.0.0.1:9480"];
        let merged = ProxyConfig::load(&proxy_args(&flags)).unwrap();
        assert_eq!(merged.http.address.as_deref(), Some("127.0.0.1:9480"));
        let none =
            WorkerConfig::load(&worker_args(&["gater", "worker", "--data-dir", "/d"])).unwrap();
        assert_eq!(none.http, HttpSettings::default());
        let flag = [
            "gater",
            "worker",
            "--data-dir",
            "/d",
            "--http",
            "127.0.0.1:1",
            "--http-public",
        ];
        let flagged = WorkerConfig::load(&worker_args(&flag)).unwrap();
        assert_eq!(
            flagged.http,
            HttpSettings {
                address: Some("127.0.0.1:1".into()),
                public: true
            }
        );
    }
}
