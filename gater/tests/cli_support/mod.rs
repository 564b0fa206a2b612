//! Helpers for tests that run the `gater` binary as real processes.

#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a server gets to start answering.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A free UDP port on loopback (QUIC listens on UDP).
pub(crate) fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// The `gater` binary built for this test run.
pub(crate) fn gater() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gater"))
}

/// A server process, killed on drop.
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    /// What it printed before announcing that it listens.
    pub(crate) banner: String,
}

impl ServerProcess {
    /// Starts `gater ARGS` and waits until it prints a line containing "listening on".
    pub(crate) fn start(args: &[&str]) -> ServerProcess {
        let mut child = gater()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gater starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + START_TIMEOUT;
        let mut banner = String::new();
        while Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if line.contains("listening on") {
                        break;
                    }
                }
                _ => break,
            }
        }
        assert!(
            banner.contains("listening on"),
            "gater {args:?} did not start:\n{banner}"
        );
        std::thread::spawn(move || lines.for_each(drop));
        ServerProcess { child, banner }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `gater --server ADDR --certs DIR --json ARGS` with `stdin`.
pub(crate) fn run_cli(addr: &str, certs: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = gater()
        .args([
            "--server",
            addr,
            "--certs",
            certs.to_str().unwrap(),
            "--json",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gater runs");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("gater exits")
}

/// The JSON lines of an output.
pub(crate) fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Retries `gater ARGS` until it succeeds (servers starting, probes catching up).
pub(crate) fn wait_ok(addr: &str, certs: &Path, args: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let out = run_cli(addr, certs, args, "");
        if out.status.success() {
            return json_lines(&out.stdout);
        }
        assert!(
            Instant::now() < deadline,
            "gater {args:?} on {addr} never succeeded: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
