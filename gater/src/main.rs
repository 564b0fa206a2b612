//! The `gater` binary: servers (`dev`, `worker`, `proxy`) and a client command for every API call.
//!
//! `main` parses arguments, sets up logging and hands over to the server or
//! client code; a usage mistake prints help (clap), a failure prints one line
//! on stderr and exits non-zero.

mod access;
mod bench;
mod cli;
mod observe;
mod peers;
mod server;

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use gater_core::Error;
use gater_transport_quic::ClientTls;

use cli::args::{Cli, Command, Global, StoreCommand};

use cli::client::{execute, CommandError};
use cli::output::{error_line, Output};

/// Seconds `gater store compact` waits at least (more with a longer `--timeout`).
const COMPACT_TIMEOUT_S: u64 = 3_600;

/// The process's allocator. mimalloc, not the system's: under callgrind a
/// W1-shaped append (64 appenders, one 256-byte event each) cost 14 %
/// fewer instructions in the whole process (32,679 -> 27,968) and 11 %
/// fewer in the store's writer (23,338 -> 20,835), a fifth of which had
/// been glibc's malloc and free. Only the binary chooses it: the library
/// crates leave the allocator to their embedder.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = runtime_threads(&cli.command) {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

/// Threads of the runtime when the command sets them (`gater proxy`);
/// `None`: one per core. A configuration that does not load is reported
/// once the command runs.
fn runtime_threads(command: &Command) -> Option<usize> {
    match command {
        Command::Proxy(args) => cli::config::ProxyConfig::load(args).ok().map(|c| c.threads),
        _ => None,
    }
}

async fn run(cli: Cli) -> ExitCode {
    let Cli { global, command } = cli;
    let served = match command {
        Command::Dev(args) => {
            init_logging(args.log_json);
            server::dev(args).await
        }
        Command::Worker(args) => {
            init_logging(args.log_json);
            server::worker(&global, args).await
        }
        Command::Proxy(args) => {
            init_logging(args.log_json);
            server::proxy(&global, args).await
        }
        Command::Bench(args) => bench::run(&global, args).await,
        Command::Certs(cmd) => cli::certs::run(cmd, global.json),
        client => return run_client(&global, client).await,
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_client(global: &Global, command: Command) -> ExitCode {
    let mut out = Output::new(io::stdout().lock(), global.json);
    // A compaction answers once the space is reclaimed: minutes on large stores.
    let timeout_s = match &command {
        Command::Store(StoreCommand::Compact { .. }) => global.timeout.max(COMPACT_TIMEOUT_S),
        _ => global.timeout,
    };
    let result = match connect(global, timeout_s).await {
        Ok(gater) => execute(gater.as_ref(), command, io::stdin().lock(), &mut out).await,
        Err(e) => Err(CommandError::Gater(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CommandError::Gater(e)) => {
            eprintln!("{}", error_line(&e, global.json));
            ExitCode::FAILURE
        }
        Err(CommandError::Import(stop)) => {
            // Where the import stopped, then the store's own typed error.
            let at = serde_json::json!({
                "import_stopped_at_line": stop.line,
                "stream": stop.stream,
                "version": stop.version,
            });
            if global.json {
                eprintln!("{at}");
            } else {
                eprintln!(
                    "import stopped at line {} (stream {}, version {}): nothing after it was written",
                    stop.line, stop.stream, stop.version
                );
            }
            eprintln!("{}", error_line(&stop.error, global.json));
            ExitCode::FAILURE
        }
        Err(CommandError::Corrupt { .. }) => ExitCode::FAILURE,
        Err(CommandError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(CommandError::Io(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A QUIC client for `--server` (several for failover) with the `--certs` identity.
async fn connect(global: &Global, timeout_s: u64) -> Result<gater_core::BoxGater, Error> {
    let tls = ClientTls::from_dir(&global.certs).map_err(|e| {
        Error::invalid(format!(
            "cannot load client certificates from {}: {e} (start `gater dev` or pass --certs DIR)",
            global.certs.display()
        ))
    })?;
    let deadline_ms = u32::try_from(timeout_s.saturating_mul(1000)).unwrap_or(u32::MAX);
    server::quic_client(
        &global.servers,
        tls,
        Some(deadline_ms),
        global.server_name.as_deref(),
    )
    .await
    .map_err(|e| Error::invalid(format!("{e:#}")))
}

/// Logs through `tracing` on stderr: human format, or JSON; level from `RUST_LOG` (default info).
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
