//! The developer workflows run as a user runs them: the `xtask` binary as a
//! process, a cluster it starts answering the `gater` CLI, a worker killed and
//! restarted from a second invocation, Ctrl-C (SIGINT) leaving no process
//! behind, the demo's summary, and certificates that load.
//!
//! Tests that start servers build the `gater` binary in debug mode and take
//! more than a few seconds: they return early unless `RUN_SLOW_TESTS` is set.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use gater_transport_quic::{ClientTls, ServerTls};
use rustix::process::{kill_process, test_kill_process, Pid, Signal};
use serde_json::Value;

/// Building the gater binary from scratch may take this long on a small machine.
const READY_TIMEOUT: Duration = Duration::from_secs(900);
/// Time the cluster gets to stop after SIGINT (each process has a grace period).
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

fn slow_tests_enabled() -> bool {
    std::env::var_os("RUN_SLOW_TESTS").is_some()
}

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

/// A directory PostgreSQL (run as its own user when we are root) may enter too.
fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A running `cargo xtask cluster`, with what it printed so far.
struct RunningCluster {
    child: Child,
    dir: PathBuf,
    lines: mpsc::Receiver<String>,
    printed: String,
}

impl RunningCluster {
    /// Starts `xtask cluster --dir DIR --debug ARGS` and waits for its banner,
    /// or returns how it exited.
    fn start(dir: &Path, args: &[&str]) -> Result<RunningCluster, (ExitStatus, String)> {
        let mut child = xtask()
            .args(["cluster", "--debug", "--dir"])
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xtask starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        let errors = sender.clone();
        thread::spawn(move || forward(BufReader::new(stdout), sender));
        thread::spawn(move || forward(BufReader::new(stderr), errors));
        let mut cluster = RunningCluster {
            child,
            dir: dir.to_path_buf(),
            lines,
            printed: String::new(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !cluster.printed.contains("Press Ctrl-C") {
            if let Some(status) = cluster.child.try_wait().unwrap() {
                cluster.drain();
                return Err((status, cluster.printed.clone()));
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never became ready:\n{}",
                cluster.printed
            );
            cluster.read_for(Duration::from_millis(200));
        }
        Ok(cluster)
    }

    fn read_for(&mut self, wait: Duration) {
        if let Ok(line) = self.lines.recv_timeout(wait) {
            self.printed.push_str(&line);
            self.printed.push('\n');
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.printed.push_str(&line);
            self.printed.push('\n');
        }
    }

    fn state(&self) -> Value {
        let text = fs::read_to_string(self.dir.join("cluster.json")).expect("cluster.json");
        serde_json::from_str(&text).expect("cluster.json is JSON")
    }

    /// Sends SIGINT, as Ctrl-C does, and waits for the cluster to stop.
    fn interrupt(mut self) -> (ExitStatus, String) {
        kill_process(Pid::from_child(&self.child), Signal::INT).expect("SIGINT sent");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.drain();
                return (status, self.printed.clone());
            }
            assert!(Instant::now() < deadline, "the cluster did not stop");
            self.read_for(Duration::from_millis(200));
        }
    }
}

impl Drop for RunningCluster {
    fn drop(&mut self) {
        // A failed assertion must not leave servers behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill_process(Pid::from_child(&self.child), Signal::INT);
            let _ = self.child.wait();
        }
    }
}

fn forward(reader: impl BufRead, sender: mpsc::Sender<String>) {
    for line in reader.lines().map_while(Result::ok) {
        if sender.send(line).is_err() {
            return;
        }
    }
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u64) -> bool {
    let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    if test_kill_process(raw).is_err() {
        return false;
    }
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned));
            state.is_none_or(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}

fn recorded_pids(state: &Value) -> Vec<u64> {
    let mut pids: Vec<u64> = state["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    pids.extend(state["postgres"]["pid"].as_u64());
    pids
}

fn worker_pid(state: &Value, name: &str) -> Option<u64> {
    state["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["pid"].as_u64())
}

/// `gater --server ADDR --certs DIR --json workers`, as the banner tells users to run it.
fn gater_workers(state: &Value, server: &str) -> Vec<Value> {
    let out = Command::new(state["gater"].as_str().expect("gater path"))
        .args(["--server", server, "--certs"])
        .arg(state["certs"].as_str().expect("certs path"))
        .args(["--json", "workers"])
        .output()
        .expect("gater runs");
    assert!(
        out.status.success(),
        "gater workers on {server}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

fn proxies(state: &Value) -> Vec<String> {
    state["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter(|p| p["role"] == "proxy")
        .map(|p| p["address"].as_str().expect("address").to_owned())
        .collect()
}

fn run_ok(command: &mut Command) -> Output {
    let out = command.output().expect("xtask runs");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The value of a row of the demo's summary table.
fn summary_value(stdout: &str, metric: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix(metric).map(str::trim))
        .unwrap_or_else(|| panic!("no {metric:?} row in:\n{stdout}"))
        .to_owned()
}

#[test]
fn certs_writes_six_files_that_load_as_server_and_client() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = run_ok(
        xtask()
            .args(["certs", "--dir"])
            .arg(&certs)
            .args(["--hosts", "gater.test"]),
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    for file in [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    ] {
        assert!(certs.join(file).is_file(), "{file} written");
        assert!(printed.contains(file), "{file} listed in:\n{printed}");
    }
    ServerTls::from_dir(&certs).expect("server identity loads");
    ClientTls::from_dir(&certs).expect("client identity loads");
}

#[test]
fn cluster_answers_with_every_worker_survives_a_worker_restart_and_ctrl_c_leaves_no_process() {
    if !slow_tests_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let cluster = RunningCluster::start(&cluster_dir, &["--workers", "2", "--proxies", "2"])
        .unwrap_or_else(|(status, printed)| panic!("cluster exited with {status}:\n{printed}"));
    assert!(cluster.printed.contains("--certs"), "{}", cluster.printed);
    let state = cluster.state();
    let proxies = proxies(&state);
    assert_eq!(proxies.len(), 2);
    for proxy in &proxies {
        assert_eq!(gater_workers(&state, proxy).len(), 2, "{proxy} lists both");
    }
    let first_pids = recorded_pids(&state);
    assert_eq!(first_pids.len(), 4);

    // The demo runs against the running cluster too.
    let servers = proxies.join(",");
    let demo = run_ok(
        xtask()
            .args(["demo", "--server", &servers, "--certs"])
            .arg(state["certs"].as_str().unwrap())
            .args(["--events", "100", "--streams", "4"]),
    );
    let printed = String::from_utf8_lossy(&demo.stdout);
    assert_eq!(summary_value(&printed, "deliveries"), "100", "{printed}");

    let killed = worker_pid(&state, "worker-1").expect("worker-1 runs");
    run_ok(
        xtask()
            .args(["cluster", "--dir"])
            .arg(&cluster_dir)
            .args(["--kill-worker", "1"]),
    );
    assert!(!alive(killed), "worker-1 was killed");
    assert_eq!(worker_pid(&cluster.state(), "worker-1"), None);
    run_ok(
        xtask()
            .args(["cluster", "--dir"])
            .arg(&cluster_dir)
            .args(["--restart-worker", "1"]),
    );
    let restarted = worker_pid(&cluster.state(), "worker-1").expect("worker-1 restarted");
    assert!(alive(restarted));
    assert_eq!(gater_workers(&state, &proxies[0]).len(), 2);

    let (status, printed) = cluster.interrupt();
    assert!(status.success(), "{status}:\n{printed}");
    assert!(printed.contains("cluster: stopped"), "{printed}");
    for pid in first_pids.into_iter().chain([restarted]) {
        assert!(!alive(pid), "pid {pid} still runs after Ctrl-C");
    }
    assert!(cluster_dir.join("logs/worker-1.log").is_file(), "logs stay");
}

#[test]
fn demo_starts_its_own_cluster_prints_a_summary_with_deliveries_and_stops_it() {
    if !slow_tests_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = run_ok(
        xtask()
            .args(["demo", "--debug", "--dir"])
            .arg(&demo_dir)
            .args(["--events", "200", "--streams", "4"]),
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("demo summary"), "{printed}");
    assert_eq!(summary_value(&printed, "deliveries"), "200");
    assert!(summary_value(&printed, "events/s").parse::<f64>().unwrap() > 0.0);
    assert!(summary_value(&printed, "snapshot").contains("read back"));
    let state: Value =
        serde_json::from_str(&fs::read_to_string(demo_dir.join("cluster.json")).unwrap()).unwrap();
    for pid in recorded_pids(&state) {
        assert!(!alive(pid), "pid {pid} still runs after the demo");
    }
}

#[test]
fn postgres_cluster_serves_or_reports_the_refused_backend_and_stops_postgres() {
    if !slow_tests_enabled() {
        return;
    }
    let has_postgres = Path::new("/usr/lib/postgresql").is_dir()
        || std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join("pg_ctl").is_file())
        });
    if !has_postgres {
        eprintln!("no PostgreSQL server binaries here: nothing to check");
        return;
    }
    let dir = open_tempdir();
    let cluster_dir = dir.path().join("cluster");
    let args = ["--workers", "1", "--proxies", "1", "--backend", "postgres"];
    match RunningCluster::start(&cluster_dir, &args) {
        Ok(cluster) => {
            let state = cluster.state();
            assert!(state["postgres"]["url"].as_str().is_some());
            assert_eq!(gater_workers(&state, &proxies(&state)[0]).len(), 1);
            let pids = recorded_pids(&state);
            let (status, printed) = cluster.interrupt();
            assert!(status.success(), "{printed}");
            for pid in pids {
                assert!(!alive(pid), "pid {pid} still runs after Ctrl-C");
            }
        }
        Err((status, printed)) => {
            assert!(!status.success());
            assert!(
                printed.contains("refused `--backend postgres`"),
                "the failure names the refused backend:\n{printed}"
            );
            let state: Value = serde_json::from_str(
                &fs::read_to_string(cluster_dir.join("cluster.json")).unwrap(),
            )
            .unwrap();
            let postmaster = state["postgres"]["pid"].as_u64().expect("postgres ran");
            assert!(!alive(postmaster), "PostgreSQL is stopped");
            for pid in recorded_pids(&state) {
                assert!(!alive(pid), "pid {pid} still runs");
            }
        }
    }
}
