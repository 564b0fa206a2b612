//! Processes of a local cluster: building the `gater` binary, starting a
//! server with its output in a log file, signalling and reaping by pid, and
//! running `gater` client commands against it.
//!
//! Every server runs in its own process group, so a Ctrl-C in the terminal
//! reaches only xtask, which then stops the servers in order. A pid read back
//! from the state file is signalled only while `/proc` shows it is still the
//! `gater` process started for that record (pids are reused).

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::process::{kill_process, test_kill_process, Pid, Signal};

use super::state::ProcessRecord;
use crate::project_root;

/// How long a server gets to exit after SIGTERM before it is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often waits poll a process or a condition.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Seconds one `gater` client command may wait for its answer.
const CLIENT_TIMEOUT_SECS: &str = "3";
/// Reads of an empty `/proc/PID/cmdline` before giving up.
const CMDLINE_READS_MAX: usize = 5;
/// Wait between those reads.
const CMDLINE_RETRY: Duration = Duration::from_millis(10);
/// Variables cargo sets for the programs it runs, besides `CARGO_PKG_*` and `CARGO_BIN_EXE_*`.
const INHERITED_CARGO_VARIABLES: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];
/// Lines of a log shown when a process fails.
const LOG_TAIL_LINES: usize = 12;

/// Set when the user asked to stop (Ctrl-C or SIGTERM); every wait checks it.
#[derive(Clone, Debug, Default)]
pub(crate) struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag set by the first SIGINT or SIGTERM, through a task on `runtime`.
    pub(crate) fn on_signals(runtime: &tokio::runtime::Runtime) -> Result<StopFlag> {
        use tokio::signal::unix::{signal, SignalKind};
        let flag = StopFlag::default();
        let _guard = runtime.enter();
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let set = flag.clone();
        runtime.spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            set.set();
        });
        Ok(flag)
    }

    /// Asks everything waiting on this flag to stop.
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps `duration` unless a stop is asked for first; returns whether one was.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            if self.is_set() {
                return true;
            }
            thread::sleep(POLL_INTERVAL.min(until - Instant::now()));
        }
        self.is_set()
    }
}

/// Builds the `gater` binary (release unless `debug`) and returns its path.
pub(crate) fn build_gater(debug: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "--package", "gater", "--bin", "gater"];
    if !debug {
        args.push("--release");
    }
    build_executable(&args, "gater")
}

/// Runs `cargo ARGS` (a build that makes executables) and returns the path
/// of the executable of target `target`.
pub(crate) fn build_executable(args: &[&str], target: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut args = args.to_vec();
    args.push("--message-format=json-render-diagnostics");
    eprintln!("$ cargo {}", args.join(" "));
    let mut command = Command::new(&cargo);
    // Variables cargo set for this process (it runs under `cargo run` or
    // `cargo test`) would look like changed build inputs to build scripts,
    // and rebuild dependencies both here and in the user's next build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if INHERITED_CARGO_VARIABLES.contains(&name.as_ref())
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_")
        {
            command.env_remove(name.as_ref());
        }
    }
    let output = command
        .args(&args)
        .current_dir(project_root())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {cargo}"))?;
    if !output.status.success() {
        bail!("building {target} failed with {}", output.status);
    }
    executable_named(&String::from_utf8_lossy(&output.stdout), target)
        .with_context(|| format!("cargo built no `{target}` executable"))
}

/// The executable of target `target` named in cargo's JSON build messages.
fn executable_named(messages: &str, target: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == target)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

/// A `127.0.0.1:PORT` address whose UDP port was free a moment ago (QUIC is UDP).
pub(crate) fn free_address() -> Result<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("cannot find a free UDP port")?;
    Ok(socket.local_addr()?.to_string())
}

/// Starts `gater ARGS` for `record`, appending its output to the record's log.
pub(crate) fn spawn(gater: &Path, record: &ProcessRecord) -> Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&record.log)
        .with_context(|| format!("cannot open {}", record.log.display()))?;
    let log_err = log.try_clone()?;
    Command::new(gater)
        .args(&record.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {} for {}", gater.display(), record.name))
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub(crate) fn signal(pid: u32, signal: Signal) {
    if let Some(pid) = to_pid(pid) {
        let _ = kill_process(pid, signal);
    }
}

/// SIGTERM to a child, then SIGKILL after [`STOP_GRACE`]; reaps it either way.
pub(crate) fn stop_child(child: &mut Child) -> Option<ExitStatus> {
    signal(child.id(), Signal::TERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(_) => return None,
        }
    }
    let _ = child.kill();
    child.wait().ok()
}

/// SIGTERM to a process that is not our child, then SIGKILL after [`STOP_GRACE`].
pub(crate) fn stop_pid(pid: u32) {
    signal(pid, Signal::TERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return;
        }
        thread::sleep(POLL_INTERVAL);
    }
    signal(pid, Signal::KILL);
}

/// Whether `pid` names a live process (a zombie waiting to be reaped is not).
pub(crate) fn is_alive(pid: u32) -> bool {
    let Some(raw) = to_pid(pid) else {
        return false;
    };
    if test_kill_process(raw).is_err() {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// Whether `pid` is alive and, where `/proc` tells, runs with `record`'s arguments.
pub(crate) fn is_ours(pid: u32, record: &ProcessRecord) -> bool {
    if !is_alive(pid) {
        return false;
    }
    if !Path::new("/proc/self/cmdline").exists() {
        return true;
    }
    let Some(cmdline) = read_cmdline(pid) else {
        return false;
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.iter().take(record.args.len()).eq(record.args.iter())
}

/// `/proc/PID/cmdline`; empty (and retried) for the instant between a new
/// process leaving its parent and its arguments being set up by exec.
fn read_cmdline(pid: u32) -> Option<Vec<u8>> {
    for _ in 0..CMDLINE_READS_MAX {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if !cmdline.is_empty() {
            return Some(cmdline);
        }
        thread::sleep(CMDLINE_RETRY);
    }
    None
}

fn to_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid).ok().and_then(Pid::from_raw)
}

/// Runs `gater --server SERVER --certs CERTS --json ARGS` once.
pub(crate) fn gater_client(
    gater: &Path,
    server: &str,
    certs: &Path,
    args: &[&str],
) -> Result<Output> {
    Command::new(gater)
        .arg("--server")
        .arg(server)
        .arg("--certs")
        .arg(certs)
        .args(["--json", "--timeout", CLIENT_TIMEOUT_SECS])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", gater.display()))
}

/// The JSON lines a `gater --json` command printed.
pub(crate) fn json_rows(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(file) = fs::File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gater_executable_is_found_among_build_messages() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"name":"gater_proxy"},"executable":null}"#,
            "not json",
            r#"{"reason":"compiler-artifact","target":{"name":"gater"},"executable":"/t/debug/gater"}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(
            executable_named(&messages, "gater"),
            Some(PathBuf::from("/t/debug/gater"))
        );
        assert_eq!(
            executable_named(r#"{"reason":"build-finished"}"#, "gater"),
            None
        );
    }

    #[test]
    fn a_reaped_child_is_not_alive_and_a_running_one_is() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(is_alive(pid));
        stop_child(&mut child);
        assert!(!is_alive(pid));
    }

    #[test]
    fn a_pid_running_other_arguments_is_not_ours() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let record = ProcessRecord {
            name: "worker-1".into(),
            role: super::super::state::Role::Worker,
            address: "127.0.0.1:1".into(),
            args: vec!["worker".into(), "--listen".into(), "127.0.0.1:1".into()],
            pid: Some(child.id()),
            log: PathBuf::from("/dev/null"),
        };
        assert!(!is_ours(child.id(), &record));
        let sleeping = ProcessRecord {
            args: vec!["30".into()],
            ..record
        };
        assert!(is_ours(child.id(), &sleeping));
        stop_child(&mut child);
        assert!(!is_ours(child.id(), &sleeping));
    }
}
