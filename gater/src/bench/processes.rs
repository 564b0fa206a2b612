//! `gater worker` and `gater proxy` as processes of their own, for the
//! compare suite's case laid out as users run a cluster.
//!
//! Each is started from the `gater` binary on an ephemeral loopback port; the
//! address is read from the line it prints once it listens. Its log goes to
//! a file beside its data. Stopping sends SIGTERM (a graceful shutdown) and,
//! past [`STOP_TIMEOUT`], kills it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Time a server process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a server process may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// What a server prints once it listens, before its address.
const LISTENING: &str = " listening on ";

/// A running `gater` server process.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    /// Kept open so later lines on stdout never meet a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl ServerProcess {
    /// Runs `binary --certs certs <args>` with its log in `log`, and waits until it listens.
    pub(crate) async fn start(
        binary: &Path,
        certs: &Path,
        args: &[&str],
        log: &Path,
    ) -> Result<ServerProcess> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(binary)
            .arg("--certs")
            .arg(certs)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("the child's stdout is piped but missing")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(START_TIMEOUT, listening_address(&mut lines))
            .await
            .with_context(|| format!("`gater {}` did not start listening in time", args[0]))?
            .with_context(|| format!("`gater {}` did not start; see {}", args[0], log.display()))?;
        Ok(ServerProcess {
            child,
            addr,
            _stdout: lines,
        })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Asks it to shut down gracefully and waits; kills it if it takes too long.
    pub(crate) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            terminate(pid);
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The address in the first line saying where the server listens.
async fn listening_address(lines: &mut Lines<BufReader<ChildStdout>>) -> Result<SocketAddr> {
    while let Some(line) = lines.next_line().await? {
        if let Some(addr) = parse_listening(&line) {
            return Ok(addr);
        }
    }
    bail!("it exited before listening")
}

/// `…listening on ADDR…` → ADDR.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(LISTENING)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(unix)]
fn terminate(pid: u32) {
    use rustix::process::{kill_process, Pid, Signal};
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let _ = kill_process(pid, Signal::TERM);
}

#[cfg(not(unix))]
fn terminate(_pid: u32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_the_listening_line() {
        let addr: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        assert_eq!(
            parse_listening("gater worker w1 listening on 127.0.0.1:4567"),
            Some(addr)
        );
        assert_eq!(
            parse_listening("gater proxy listening on 127.0.0.1:4567"),
            Some(addr)
        );
        assert_eq!(parse_listening("  worker 127.0.0.1:4567"), None);
        assert_eq!(parse_listening("gater proxy listening on nowhere"), None);
    }
}
