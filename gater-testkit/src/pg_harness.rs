//! A throwaway PostgreSQL server for tests and benchmarks, started from the
//! machine's own binaries (`initdb`, `pg_ctl`).
//!
//! [`PgServer::start`] makes a fresh cluster in a new temporary directory,
//! with password authentication over TCP on a free loopback port and
//! `fsync=on`, and waits until it accepts connections; dropping the server
//! stops it and deletes the directory. Run as root, every PostgreSQL binary
//! runs as the `postgres` user (through `runuser`), which then owns the
//! directory. When the binaries are missing, `start` answers `Ok(None)` and
//! callers skip their PostgreSQL cases with a message.
//!
//! [`bin_dir`], [`running_as_root`] and [`run_tool`] are the pieces
//! `cargo xtask cluster --backend postgres` shares for its longer-lived server.
//!
//! What it does not do: it is not a way to run PostgreSQL in production (no
//! tuning, no TLS, no backups); it exists for the `postgres` tests and benchmarks
//! (including the PostgreSQL cases `cargo xtask bench` hands to
//! `gater bench --suite compare --postgres-url`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where Debian-style installs keep the binaries when they are not on `PATH`.
const DEBIAN_BIN_ROOT: &str = "/usr/lib/postgresql";
/// The superuser the cluster is created with.
pub const USER: &str = "gater";
/// That user's password (used over TCP; the harness's own socket is trusted).
pub const PASSWORD: &str = "gater-harness-secret";
/// The system user PostgreSQL runs as when the tests run as root.
pub const SYSTEM_USER: &str = "postgres";
/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "60";
/// Connections the server accepts (several workers' pools at once).
const MAX_CONNECTIONS: u32 = 300;

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A running throwaway server; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgServer {
    /// Starts a fresh server; `Ok(None)` when no PostgreSQL binaries are installed.
    pub fn start() -> Result<Option<PgServer>, String> {
        let Some(bin) = bin_dir() else {
            return Ok(None);
        };
        let as_postgres = running_as_root();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "gater-pg-{}-{nanos}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let server = PgServer {
            dir,
            bin,
            port: free_port()?,
            as_postgres,
        };
        server.init()?;
        server.start_again()?;
        Ok(Some(server))
    }

    /// The URL of database `postgres` (with the password).
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` (with the password).
    pub fn database_url(&self, name: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once (`immediate`: like a crash, recovered at the next start).
    pub fn stop(&self) -> Result<(), String> {
        let data = self.data_dir();
        let data = data.to_string_lossy();
        let args = [
            "-D",
            data.as_ref(),
            "-m",
            "immediate",
            "-w",
            "-t",
            PG_CTL_WAIT_SECS,
            "stop",
        ];
        self.run("pg_ctl", &args).map(drop)
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&self) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=on -c max_connections={MAX_CONNECTIONS}",
            self.port,
            self.dir.display()
        );
        let args = [
            "-D",
            &data.to_string_lossy(),
            "-l",
            &log.to_string_lossy(),
            "-o",
            &options,
            "-w",
            "-t",
            PG_CTL_WAIT_SECS,
            "start",
        ];
        self.run(
            "pg_ctl",
            &args.iter().map(|s| s.as_ref()).collect::<Vec<&str>>(),
        )
        .map(drop)
        .map_err(|e| format!("{e}\nserver log:\n{}", self.log_tail()))
    }

    fn init(&self) -> Result<(), String> {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| format!("writing the password file: {e}"))?;
        if self.as_postgres {
            let dir = self.dir.to_string_lossy().into_owned();
            let owner = format!("{SYSTEM_USER}:{SYSTEM_USER}");
            run_command(Command::new("chown").args(["-R", &owner, &dir]))?;
        }
        let data = self.data_dir();
        let args = [
            "-D",
            &data.to_string_lossy(),
            "-U",
            USER,
            "--pwfile",
            &pwfile.to_string_lossy(),
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ];
        self.run(
            "initdb",
            &args.iter().map(|s| s.as_ref()).collect::<Vec<&str>>(),
        )
        .map(drop)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        run_tool(&self.bin, self.as_postgres, &self.dir, program, args)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A plain SQL session on the server, for tests that poke at the database
/// behind the workers' backs (hold locks, check rows).
pub struct Session {
    client: tokio_postgres::Client,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

impl Session {
    /// Connects to `url`; the connection lives as long as the session (on a tokio runtime).
    pub async fn connect(url: &str) -> Result<Session, String> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connecting a test session: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Session { client })
    }

    /// Runs `sql` (one or more statements separated by `;`).
    pub async fn batch(&self, sql: &str) -> Result<(), String> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))
    }

    /// The first column of the first row of `sql`, as a bigint.
    pub async fn scalar(&self, sql: &str) -> Result<i64, String> {
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
        row.try_get(0).map_err(|e| format!("{sql}: {e}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            // Already stopped by the test, or never started: nothing to stop.
            tracing::debug!(%error, "stopping the throwaway PostgreSQL server");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else the newest Debian install.
pub fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| has_binaries(dir)));
    if let Some(dir) = on_path {
        // A symlink on PATH (Debian's /usr/local/bin links) resolves to the real directory.
        let real = std::fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        return Some(real.filter(|d| has_binaries(d)).unwrap_or(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir(DEBIAN_BIN_ROOT)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|dir| has_binaries(dir))
        .collect();
    versions.sort_by_key(|dir| {
        dir.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

fn has_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// Whether this process runs as root (then PostgreSQL's tools run as [`SYSTEM_USER`]).
pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Runs PostgreSQL tool `program` from `bin` in `cwd`, as [`SYSTEM_USER`]
/// (through `runuser`) when `as_postgres`; a failure carries the tool's output.
pub fn run_tool(
    bin: &Path,
    as_postgres: bool,
    cwd: &Path,
    program: &str,
    args: &[&str],
) -> Result<Output, String> {
    let path = bin.join(program);
    let mut command = if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", SYSTEM_USER, "--"]).arg(&path);
        command
    } else {
        Command::new(&path)
    };
    command.args(args).current_dir(cwd).stdin(Stdio::null());
    run_command(&mut command)
}

fn run_command(command: &mut Command) -> Result<Output, String> {
    let output = command
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output)
}
