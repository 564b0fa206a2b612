//! Command-line arguments of the `gater` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default address of a development server.
pub(crate) const DEFAULT_SERVER: &str = "127.0.0.1:7400";
/// Default certificates directory (the one `gater dev` writes).
pub(crate) const DEFAULT_CERTS: &str = "./.gater/certs";

/// Gater: an event-store gateway. Start a server with `gater dev`, then talk to it.
#[derive(Parser, Debug)]
#[command(name = "gater", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command accepts (before the subcommand).
#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// Server address (`host:port`); repeat for failover across proxies.
    #[arg(long = "server", global = true, env = "GATER_SERVER", value_delimiter = ',', default_value = DEFAULT_SERVER)]
    pub(crate) servers: Vec<String>,
    /// Directory holding ca.crt, client.crt and client.key (servers: also server.crt/.key).
    #[arg(long, global = true, env = "GATER_CERTS", default_value = DEFAULT_CERTS)]
    pub(crate) certs: PathBuf,
    /// Print one JSON object per line instead of tables; errors as JSON on stderr.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Seconds to wait for each request.
    #[arg(long, global = true, default_value_t = 30)]
    pub(crate) timeout: u64,
    /// Name the server's certificate must carry (default: the host dialled;
    /// set it when dialling an IP address the certificate does not name).
    #[arg(long, global = true, env = "GATER_SERVER_NAME")]
    pub(crate) server_name: Option<String>,
}

/// A `gater` command.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a development server: an embedded store worker behind the proxy, on QUIC.
    Dev(DevArgs),
    /// Run a worker holding stores.
    Worker(WorkerArgs),
    /// Run a proxy in front of workers.
    Proxy(ProxyArgs),
    /// Manage stores.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Delete, truncate a stream or set its retention.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Append events (JSON lines on stdin) to a stream.
    Append(AppendArgs),
    /// Append events (JSON lines on stdin, each naming its "stream") to
    /// several streams atomically, as one append.
    AppendMulti(AppendMultiArgs),
    /// Read the events matching a query of event types and tags.
    Query(QueryArgs),
    /// Read events of a stream.
    Read(ReadArgs),
    /// Read the store's global log.
    ReadAll(ReadAllArgs),
    /// List streams with their versions.
    Streams(StreamsArgs),
    /// Print a stream's version (-1 when it does not exist).
    Version(VersionArgs),
    /// Follow events as they come; acks each after printing.
    Subscribe(SubscribeArgs),
    /// List subscriptions with checkpoint, consumers and lag.
    Subscriptions(StoreArg),
    /// Remove a subscription.
    Unsubscribe(UnsubscribeArgs),
    /// List the parked events of a persistent subscription.
    Parked(ParkedArgs),
    /// Move parked events back to delivery.
    ReplayParked(ParkedArgs),
    /// Record, read, list and delete snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Write every event, snapshot and persistent subscription of a store as JSON lines.
    Export(ExportArgs),
    /// Append what `export` wrote to a store (again: a no-op).
    Import(ImportArgs),
    /// List the gateway workers behind the server.
    Workers,
    /// Print the identity the server sees (the certificate's name) and its grants.
    Whoami,
    /// Watch workers, stores and persistent subscriptions live (`q` quits).
    Top(TopArgs),
    /// Issue certificates for identities.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Measure a server, or compare every transport in process (`--suite compare`).
    Bench(crate::bench::BenchArgs),
}

/// `gater dev`.
#[derive(Args, Debug, Clone)]
pub(crate) struct DevArgs {
    /// Data directory (stores, certificates).
    #[arg(long, default_value = "./.gater")]
    pub(crate) data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_SERVER)]
    pub(crate) listen: String,
    /// Log as JSON.
    #[arg(long)]
    pub(crate) log_json: bool,
    /// Access rules (TOML); without it every certificate from the CA is admin.
    #[arg(long, env = "GATER_ACCESS")]
    pub(crate) access: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) heal: HealArgs,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    /// Most stores the embedded worker holds [default: 100000].
    #[arg(long, env = "GATER_STORES_MAX")]
    pub(crate) stores_max: Option<u32>,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

/// How stores heal after a disk fault (`gater dev` and `gater worker`).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct HealArgs {
    /// How often a read-only store (disk full) checks whether it can write
    /// again; also the first back-off of a failed store. Milliseconds
    /// [default: 5000].
    #[arg(long, env = "GATER_HEAL_INTERVAL_MS")]
    pub(crate) heal_interval_ms: Option<u64>,
    /// Free bytes a read-only store's device needs before the store reopens
    /// [default: 67108864, 64 MiB].
    #[arg(long, env = "GATER_HEAL_FREE_BYTES_MIN")]
    pub(crate) heal_free_bytes_min: Option<u64>,
    /// Free share of the device, in percent, a read-only store needs before
    /// it reopens; the larger of this and the bytes counts [default: 1].
    #[arg(long, env = "GATER_HEAL_FREE_PERCENT_MIN")]
    pub(crate) heal_free_percent_min: Option<u8>,
}

/// The HTTP admin listener's flags (`gater dev`, `worker`, `proxy`).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct HttpArgs {
    /// Serve /metrics, /api/status and the status page over plain HTTP on ADDR
    /// (`gater dev`: 127.0.0.1:7480 unless taken).
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<String>,
    /// Allow --http on an address that is not loopback (plain HTTP: use a private network).
    #[arg(long)]
    pub(crate) http_public: bool,
}

/// `gater top`.
#[derive(Args, Debug, Clone)]
pub(crate) struct TopArgs {
    /// Print one frame and exit (with --json: one JSON object).
    #[arg(long)]
    pub(crate) once: bool,
    /// Milliseconds between refreshes.
    #[arg(long, default_value_t = 2000)]
    pub(crate) interval_ms: u64,
}

/// Bounds a server holds its peers to; each flag wins over the config file,
/// whose keys have the same names (`memory_max_bytes = ...`).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LimitArgs {
    /// Byte budget of everything peers make the server hold: QUIC windows,
    /// requests, answers, deliveries [default: 1073741824 (1 GiB)].
    #[arg(long, env = "GATER_MEMORY_MAX_BYTES")]
    pub(crate) memory_max_bytes: Option<u64>,
    /// Connections served at once [default: 4096].
    #[arg(long, env = "GATER_CONNECTIONS_MAX")]
    pub(crate) connections_max: Option<u32>,
    /// Requests (streams) in flight on one connection [default: 1024].
    #[arg(long, env = "GATER_CONNECTION_IN_FLIGHT_MAX")]
    pub(crate) connection_in_flight_max: Option<u32>,
}

/// `gater certs ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum CertsCommand {
    /// Sign a client certificate with CN=NAME; `gater --certs OUT ...` then acts as NAME.
    Issue(IssueArgs),
}

/// `gater certs issue`.
#[derive(Args, Debug, Clone)]
pub(crate) struct IssueArgs {
    /// Directory holding the CA (ca.crt, ca.key).
    #[arg(long)]
    pub(crate) ca_dir: PathBuf,
    /// The identity (the certificate's common name).
    #[arg(long)]
    pub(crate) name: String,
    /// Where to write ca.crt, client.crt and client.key.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Also write server.crt and server.key (a worker that serves and heartbeats).
    #[arg(long)]
    pub(crate) worker: bool,
    /// Extra names of the server certificate (besides localhost, 127.0.0.1, ::1).
    #[arg(long, value_delimiter = ',')]
    pub(crate) hosts: Vec<String>,
    /// Replace keys that exist already.
    #[arg(long)]
    pub(crate) force: bool,
}

/// Storage engine of a worker.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendKind {
    /// Embedded fjall storage under the data directory.
    Embedded,
    /// A shared PostgreSQL database.
    Postgres,
}

/// `gater worker`.
#[derive(Args, Debug, Clone)]
pub(crate) struct WorkerArgs {
    /// Data directory.
    #[arg(long, env = "GATER_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "GATER_LISTEN")]
    pub(crate) listen: Option<String>,
    /// A proxy to announce this worker to (heartbeats).
    #[arg(long, env = "GATER_JOIN")]
    pub(crate) join: Option<String>,
    /// Address the proxy should use to reach this worker (defaults to --listen).
    #[arg(long, env = "GATER_ADVERTISE")]
    pub(crate) advertise: Option<String>,
    /// Worker id (defaults to the advertised address).
    #[arg(long, env = "GATER_WORKER_ID")]
    pub(crate) id: Option<String>,
    /// Storage engine.
    #[arg(long, value_enum, env = "GATER_BACKEND")]
    pub(crate) backend: Option<BackendKind>,
    /// PostgreSQL connection URL (with --backend postgres). Prefer
    /// GATER_POSTGRES_URL or --postgres-url-file: a flag shows in `ps`.
    #[arg(long, env = "GATER_POSTGRES_URL", hide_env_values = true)]
    pub(crate) postgres_url: Option<String>,
    /// File holding the PostgreSQL connection URL (first line), so the
    /// password appears neither in `ps` nor in the environment.
    #[arg(long, env = "GATER_POSTGRES_URL_FILE", conflicts_with = "postgres_url")]
    pub(crate) postgres_url_file: Option<PathBuf>,
    /// TOML configuration file; flags and GATER_* variables win over it.
    #[arg(long, env = "GATER_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Log as JSON.
    #[arg(long)]
    pub(crate) log_json: bool,
    /// Access rules (TOML); without it every certificate from the CA is admin.
    #[arg(long, env = "GATER_ACCESS")]
    pub(crate) access: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) heal: HealArgs,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    /// Most stores this worker holds [default: 100000].
    #[arg(long, env = "GATER_STORES_MAX")]
    pub(crate) stores_max: Option<u32>,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

/// `gater proxy`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, env = "GATER_LISTEN")]
    pub(crate) listen: Option<String>,
    /// A worker address; repeat for several.
    #[arg(long = "worker", env = "GATER_WORKERS", value_delimiter = ',')]
    pub(crate) workers: Vec<String>,
    /// The workers share one PostgreSQL database: every worker serves every
    /// store, and persistent subscriptions move when a worker dies.
    #[arg(long, env = "GATER_SHARED")]
    pub(crate) shared: bool,
    /// TOML configuration file; flags and GATER_* variables win over it.
    #[arg(long, env = "GATER_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Log as JSON.
    #[arg(long)]
    pub(crate) log_json: bool,
    /// Access rules (TOML); without it every certificate from the CA is admin.
    #[arg(long, env = "GATER_ACCESS")]
    pub(crate) access: Option<PathBuf>,
    /// Threads of the proxy's runtime [default: 1]: one wakes fastest and
    /// carries tens of thousands of requests a second; more for a proxy with
    /// cores of its own and more load than that.
    #[arg(long, env = "GATER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) threads: Option<u16>,
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

/// `gater store ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum StoreCommand {
    /// Create a store (idempotent).
    Create {
        /// Store id: [a-z0-9_-]{1,64}.
        id: String,
        /// Acknowledge appends before they reach stable storage.
        #[arg(long)]
        no_fsync: bool,
    },
    /// Remove a store and delete its data.
    Remove {
        /// Store id.
        id: String,
    },
    /// List stores and the workers serving them.
    List,
    /// Show a store's status.
    Status {
        /// Store id.
        id: String,
    },
    /// Show a store's configuration.
    Config {
        /// Store id.
        id: String,
    },
    /// Reopen a store from its storage now (after a disk fault) instead of
    /// waiting for it to heal by itself.
    Reopen {
        /// Store id.
        id: String,
    },
    /// Read back and check every record of a store; prints
    /// {"store":..,"records":N,"corrupt":[positions..]} and exits 1 if any is corrupt.
    Verify {
        /// Store id.
        id: String,
    },
    /// Reclaim the space of deleted, truncated and expired events; waits
    /// until it is reclaimed and prints {"store":..,"bytes_before":B,"bytes_after":A}.
    Compact {
        /// Store id.
        id: String,
    },
}

/// `gater stream ...`: a stream's lifecycle.
#[derive(Subcommand, Debug)]
pub(crate) enum StreamCommand {
    /// Delete a stream. Soft by default: reads show nothing, and an append
    /// recreates it with versions going on after the last; `--hard`
    /// tombstones it for good (every later use fails with stream_deleted).
    Delete {
        /// Store id.
        store: String,
        /// Stream id.
        stream: String,
        /// Expected version: any, no-stream, exists or a number.
        #[arg(long, default_value = "any")]
        expected: String,
        /// Tombstone the stream: permanent.
        #[arg(long)]
        hard: bool,
    },
    /// Hide the events of a stream with a version lower than `--before`.
    Truncate {
        /// Store id.
        store: String,
        /// Stream id.
        stream: String,
        /// The first version still read.
        #[arg(long)]
        before: u64,
    },
    /// Set a stream's retention (with `--max-count` or `--max-age`; a flag
    /// left out keeps its value), then print it: {"stream":..,
    /// "max_count":N|null, "max_age":S|null, "truncate_before":V|null}.
    Retention {
        /// Store id.
        store: String,
        /// Stream id.
        stream: String,
        /// Read only the newest N events.
        #[arg(long)]
        max_count: Option<u64>,
        /// Read no event older than this many seconds.
        #[arg(long)]
        max_age: Option<u64>,
    },
}

/// A store argument alone.
#[derive(Args, Debug)]
pub(crate) struct StoreArg {
    /// Store id.
    pub(crate) store: String,
}

/// `gater append`.
#[derive(Args, Debug)]
pub(crate) struct AppendArgs {
    /// Store id.
    pub(crate) store: String,
    /// Stream id.
    pub(crate) stream: String,
    /// Expected version: any, no-stream, exists or a number.
    #[arg(long, default_value = "any")]
    pub(crate) expected: String,
    #[command(flatten)]
    pub(crate) condition: ConditionArgs,
}

/// The append condition of `append` and `append-multi`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConditionArgs {
    /// Fail the append if an event matching this query exists (JSON
    /// `{"items":[{"types":["A"],"tags":["x"]}]}`); the events are sent as
    /// one append.
    #[arg(long, value_name = "QUERY")]
    pub(crate) fail_if: Option<String>,
    /// Only events after this position count for --fail-if.
    #[arg(long, value_name = "POS", requires = "fail_if")]
    pub(crate) after: Option<u64>,
}

/// `gater append-multi`.
#[derive(Args, Debug)]
pub(crate) struct AppendMultiArgs {
    /// Store id.
    pub(crate) store: String,
    /// Expected version of a stream, STREAM=E with E as for `append
    /// --expected`; repeat for several; streams without it are `any`.
    #[arg(long = "expect", value_name = "STREAM=E")]
    pub(crate) expect: Vec<String>,
    #[command(flatten)]
    pub(crate) condition: ConditionArgs,
}

/// `gater query`.
#[derive(Args, Debug)]
pub(crate) struct QueryArgs {
    /// Store id.
    pub(crate) store: String,
    /// An event type (repeat: any of them); with --tag one query item.
    #[arg(long = "type", value_name = "T", conflicts_with = "query")]
    pub(crate) types: Vec<String>,
    /// A tag (repeat: all of them); with --type one query item.
    #[arg(long = "tag", value_name = "TAG", conflicts_with = "query")]
    pub(crate) tags: Vec<String>,
    /// The whole query as JSON, `{"items":[{"types":[..],"tags":[..]}]}`.
    #[arg(long)]
    pub(crate) query: Option<String>,
    #[command(flatten)]
    pub(crate) page: PageArgs,
}

/// Where `read`, `read-all` and `query` start, how many events they print and in which direction.
#[derive(Args, Debug)]
pub(crate) struct PageArgs {
    /// First version (`read`) or position (`read-all`, `query`) to read; backward: default the last one.
    #[arg(long)]
    pub(crate) from: Option<u64>,
    /// Most events to read, or `all`; reads past one page go on page by page.
    #[arg(long, default_value = "100", value_parser = ReadCount::parse)]
    pub(crate) count: ReadCount,
    /// Read newest first.
    #[arg(long)]
    pub(crate) backward: bool,
}

/// How many events `read` and `read-all` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadCount {
    /// At most this many (0 is passed on for the server to refuse).
    Events(u64),
    /// Every event from the start to the end.
    All,
}

impl ReadCount {
    /// `all` or a number.
    fn parse(text: &str) -> Result<ReadCount, String> {
        if text == "all" {
            return Ok(ReadCount::All);
        }
        text.parse()
            .map(ReadCount::Events)
            .map_err(|_| format!("{text:?} is neither a number nor `all`"))
    }
}

/// `gater read`.
#[derive(Args, Debug)]
pub(crate) struct ReadArgs {
    /// Store id.
    pub(crate) store: String,
    /// Stream id.
    pub(crate) stream: String,
    #[command(flatten)]
    pub(crate) page: PageArgs,
}

/// `gater read-all`.
#[derive(Args, Debug)]
pub(crate) struct ReadAllArgs {
    /// Store id.
    pub(crate) store: String,
    #[command(flatten)]
    pub(crate) page: PageArgs,
}

/// `gater export`.
#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// Store id.
    pub(crate) store: String,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

/// `gater import`.
#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    /// Store id (created beforehand).
    pub(crate) store: String,
    /// Read this file instead of stdin.
    #[arg(long = "in", value_name = "FILE")]
    pub(crate) input: Option<PathBuf>,
}

/// `gater streams`.
#[derive(Args, Debug)]
pub(crate) struct StreamsArgs {
    /// Store id.
    pub(crate) store: String,
    /// Start after this stream id.
    #[arg(long)]
    pub(crate) after: Option<String>,
    /// Most streams to list (all when absent).
    #[arg(long)]
    pub(crate) limit: Option<u32>,
}

/// `gater version`.
#[derive(Args, Debug)]
pub(crate) struct VersionArgs {
    /// Store id.
    pub(crate) store: String,
    /// Stream id.
    pub(crate) stream: String,
}

/// The selector flags shared by subscribe and unsubscribe: exactly one is required.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub(crate) struct SelectorArgs {
    /// Follow one stream.
    #[arg(long)]
    pub(crate) stream: Option<String>,
    /// Follow every stream.
    #[arg(long)]
    pub(crate) all: bool,
    /// Follow events of one type.
    #[arg(long)]
    pub(crate) event_type: Option<String>,
    /// Follow events whose envelope matches a JSON object (globs with *).
    #[arg(long)]
    pub(crate) pattern: Option<String>,
    /// Follow events whose JSON data contains a JSON object.
    #[arg(long)]
    pub(crate) payload: Option<String>,
    /// Follow events matching a query of types and tags (JSON, as for `query --query`).
    #[arg(long)]
    pub(crate) query: Option<String>,
}

/// `gater subscribe`.
#[derive(Args, Debug)]
pub(crate) struct SubscribeArgs {
    /// Store id.
    pub(crate) store: String,
    #[command(flatten)]
    pub(crate) selector: SelectorArgs,
    /// Subscription name; any name but "transient" is a persistent consumer group.
    #[arg(long, default_value = gater_core::TRANSIENT)]
    pub(crate) name: String,
    /// Global position to start from (when no checkpoint is stored).
    #[arg(long)]
    pub(crate) from: Option<u64>,
    /// Exit after this many events.
    #[arg(long)]
    pub(crate) limit: Option<u64>,
    /// Do not acknowledge deliveries.
    #[arg(long)]
    pub(crate) no_ack: bool,
}

/// `gater unsubscribe`.
#[derive(Args, Debug)]
pub(crate) struct UnsubscribeArgs {
    /// Store id.
    pub(crate) store: String,
    #[command(flatten)]
    pub(crate) selector: SelectorArgs,
    /// Subscription name.
    #[arg(long, default_value = gater_core::TRANSIENT)]
    pub(crate) name: String,
}

/// `gater parked` and `gater replay-parked`.
#[derive(Args, Debug)]
pub(crate) struct ParkedArgs {
    /// Store id.
    pub(crate) store: String,
    /// Subscription name.
    pub(crate) name: String,
    #[command(flatten)]
    pub(crate) selector: OptionalSelectorArgs,
}

/// Selector flags where none means `--all`.
#[derive(Args, Debug, Clone)]
#[group(required = false, multiple = false)]
pub(crate) struct OptionalSelectorArgs {
    /// The subscription follows one stream.
    #[arg(long)]
    pub(crate) stream: Option<String>,
    /// The subscription follows events of one type.
    #[arg(long)]
    pub(crate) event_type: Option<String>,
    /// The subscription's envelope pattern.
    #[arg(long)]
    pub(crate) pattern: Option<String>,
    /// The subscription's payload selector.
    #[arg(long)]
    pub(crate) payload: Option<String>,
    /// The subscription's query.
    #[arg(long)]
    pub(crate) query: Option<String>,
}

/// `gater snapshot ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum SnapshotCommand {
    /// Record a snapshot (JSON on stdin), overwriting the same key.
    Record {
        /// Store id.
        store: String,
        /// Source (e.g. an aggregate type).
        source: String,
        /// Stream the snapshot summarises.
        stream: String,
        /// Stream version it was taken at.
        version: u64,
    },
    /// Read a snapshot: at VERSION, or the latest.
    Read {
        /// Store id.
        store: String,
        /// Source.
        source: String,
        /// Stream.
        stream: String,
        /// Version (latest when absent).
        version: Option<u64>,
    },
    /// List snapshot keys.
    List {
        /// Store id.
        store: String,
        /// Only this source.
        source: Option<String>,
        /// Only this stream (of the source).
        stream: Option<String>,
    },
    /// Delete a snapshot.
    Delete {
        /// Store id.
        store: String,
        /// Source.
        source: String,
        /// Stream.
        stream: String,
        /// Version.
        version: u64,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn argument_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_come_before_the_subcommand() {
        let cli = Cli::try_parse_from([
            "gater", "--server", "a:1", "--server", "b:2", "--certs", "/c", "--json", "read", "s",
            "x",
        ])
        .unwrap();
        assert_eq!(cli.global.servers, vec!["a:1", "b:2"]);
        assert!(cli.global.json);
        assert!(matches!(cli.command, Command::Read(_)));
    }

    #[test]
    fn read_counts_are_a_number_or_all() {
        let count = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Read(r)) => Ok(r.page.count),
            Ok(_) => panic!("not a read"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(
            count(&["gater", "read", "s", "x"]),
            Ok(ReadCount::Events(100))
        );
        assert_eq!(
            count(&["gater", "read", "s", "x", "--count", "all"]),
            Ok(ReadCount::All)
        );
        assert_eq!(
            count(&["gater", "read", "s", "x", "--count", "25000"]),
            Ok(ReadCount::Events(25_000))
        );
        assert_eq!(
            count(&["gater", "read", "s", "x", "--count", "0"]),
            Ok(ReadCount::Events(0)),
            "0 reaches the server, which refuses it with its own error"
        );
        assert!(count(&["gater", "read", "s", "x", "--count", "many"]).is_err());
    }
}
