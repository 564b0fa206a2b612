//! End-to-end access control: `gater dev --access FILE` with one certificate
//! per identity (`gater certs issue`), driven by the CLI. An admin creates two
//! stores; a writer of one is refused the other; a reader is refused an
//! append and nothing is appended; an identity without a grant is refused
//! everything; store listings show only what an identity may read; and a
//! worker joining with a certificate that is not granted `worker` never
//! enters the pool.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use cli_support::{free_port, gater, json_lines, run_cli, wait_ok, ServerProcess};
use serde_json::{json, Value};

/// Heartbeats a joining worker gets before the pool is checked (one a second).
const HEARTBEATS_WAITED: u64 = 3;

const ACCESS: &str = r#"
[[grant]]
identity = "ops"
stores = ["*"]
role = "admin"

[[grant]]
identity = "billing"
stores = ["orders"]
role = "writer"

[[grant]]
identity = "auditor"
stores = ["orders"]
role = "reader"
"#;

struct Cluster {
    _dev: ServerProcess,
    addr: String,
    ids: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn certs(&self, identity: &str) -> PathBuf {
        self.ids.join(identity)
    }

    fn run(&self, identity: &str, args: &[&str], stdin: &str) -> Output {
        run_cli(&self.addr, &self.certs(identity), args, stdin)
    }

    fn ok(&self, identity: &str, args: &[&str], stdin: &str) -> Vec<Value> {
        let out = self.run(identity, args, stdin);
        assert!(
            out.status.success(),
            "{identity}: gater {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    }

    /// Runs a command that must be refused; checks the JSON error line.
    fn denied(&self, identity: &str, args: &[&str], action: &str, store: Option<&str>) {
        let out = self.run(identity, args, "{\"type\":\"T\",\"data\":{}}\n");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{identity}: gater {args:?} exits 1"
        );
        let errors = json_lines(&out.stderr);
        let error = errors.last().expect("an error line");
        assert_eq!(error["error"], "permission_denied", "{error}");
        assert_eq!(error["identity"], identity, "{error}");
        assert_eq!(error["action"], action, "{error}");
        assert_eq!(error["store"], json!(store), "{error}");
        assert!(error["message"].is_string(), "{error}");
    }

    fn event_count(&self, store: &str) -> usize {
        self.ok("ops", &["read-all", store], "").len()
    }
}

fn issue(ca: &Path, name: &str, out: &Path, worker: bool) {
    let mut cmd = gater();
    cmd.args(["certs", "issue", "--ca-dir"])
        .arg(ca)
        .args(["--name", name, "--out"])
        .arg(out);
    if worker {
        cmd.arg("--worker");
    }
    let status = cmd.output().expect("gater certs issue runs");
    assert!(
        status.status.success(),
        "certs issue {name}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

fn start() -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let access = dir.path().join("access.toml");
    std::fs::write(&access, ACCESS).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("data");
    let dev = ServerProcess::start(&[
        "dev",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &addr,
        "--access",
        access.to_str().unwrap(),
    ]);
    let ca = data.join("certs");
    let ids = dir.path().join("ids");
    for name in ["ops", "billing", "auditor", "stranger"] {
        issue(&ca, name, &ids.join(name), name == "stranger");
    }
    wait_ok(&addr, &ids.join("ops"), &["store", "list"]);
    Cluster {
        _dev: dev,
        addr,
        ids,
        dir,
    }
}

#[test]
fn identities_get_what_their_grants_allow_and_nothing_else() {
    let c = start();
    let event = "{\"type\":\"Placed\",\"data\":{\"n\":1}}\n";
    c.ok("ops", &["store", "create", "orders"], "");
    c.ok("ops", &["store", "create", "payroll"], "");

    // A writer of `orders` appends there and is refused `payroll`.
    c.ok("billing", &["append", "orders", "o-1"], event);
    c.denied(
        "billing",
        &["append", "payroll", "p-1"],
        "append_events",
        Some("payroll"),
    );
    assert_eq!(c.event_count("payroll"), 0);

    // A reader reads and is refused an append; nothing is appended.
    let read = c.ok("auditor", &["read", "orders", "o-1"], "");
    assert_eq!(read.len(), 1);
    c.denied(
        "auditor",
        &["append", "orders", "o-1"],
        "append_events",
        Some("orders"),
    );
    assert_eq!(c.event_count("orders"), 1);

    // No grant: refused everything, sees no store.
    c.denied(
        "stranger",
        &["read", "orders", "o-1"],
        "get_events",
        Some("orders"),
    );
    c.denied(
        "stranger",
        &["append", "orders", "o-1"],
        "append_events",
        Some("orders"),
    );
    c.denied(
        "stranger",
        &["store", "create", "mine"],
        "create_store",
        Some("mine"),
    );
    c.denied("stranger", &["workers"], "workers", None);
    assert!(c.ok("stranger", &["store", "list"], "").is_empty());

    // Listings hold only what the identity may read.
    let listed: Vec<Value> = c
        .ok("billing", &["store", "list"], "")
        .iter()
        .map(|s| s["store"].clone())
        .collect();
    assert_eq!(listed, vec![json!("orders")]);

    let me = c.ok("billing", &["whoami"], "");
    assert_eq!(
        me,
        vec![json!({"identity": "billing", "grants": [{"stores": ["orders"], "role": "writer"}]})]
    );

    // The error line for people.
    let out = gater()
        .args(["--server", &c.addr, "--certs"])
        .arg(c.certs("billing"))
        .args(["append", "payroll", "p-1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(event.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: permission denied: billing may not append_events on store payroll"
    );

    joining_without_the_worker_role_is_refused(&c);
}

fn joining_without_the_worker_role_is_refused(c: &Cluster) {
    let worker_addr = format!("127.0.0.1:{}", free_port());
    let data = c.dir.path().join("intruder");
    let certs = c.certs("stranger");
    let _worker = ServerProcess::start(&[
        "--certs",
        certs.to_str().unwrap(),
        "worker",
        "--id",
        "intruder",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &worker_addr,
        "--join",
        &c.addr,
    ]);
    std::thread::sleep(Duration::from_secs(HEARTBEATS_WAITED));
    let workers: Vec<Value> = c
        .ok("ops", &["workers"], "")
        .iter()
        .map(|w| w["id"].clone())
        .collect();
    assert_eq!(workers, vec![json!("dev-worker")]);
}
