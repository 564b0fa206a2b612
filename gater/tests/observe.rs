//! End-to-end tests of watching a server: `gater top` against
//! `/api/status`, and the status page rendered by a real browser.

mod cli_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use cli_support::{free_port, gater, json_lines, run_cli, wait_ok, ServerProcess};
use serde_json::Value;

/// Events appended before the page is loaded (past a thousand, so the page
/// must show thousands separators).
const EVENTS: usize = 1_500;
/// Lets headless Chromium run the page's scripts for 5 virtual seconds.
const BROWSER_BUDGET: &str = "--virtual-time-budget=5000";

/// A `gater dev` with its HTTP listener on a free port.
struct Dev {
    _process: ServerProcess,
    addr: String,
    http: String,
    certs: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port")
}

impl Dev {
    fn start() -> Dev {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_tcp_port());
        let data = dir.path().join("data");
        let process = ServerProcess::start(&[
            "dev",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &addr,
            "--http",
            &http,
        ]);
        let certs = data.join("certs");
        wait_ok(&addr, &certs, &["store", "list"]);
        Dev {
            _process: process,
            addr,
            http,
            certs,
            _dir: dir,
        }
    }

    fn ok(&self, args: &[&str], stdin: &str) -> Vec<Value> {
        let out = run_cli(&self.addr, &self.certs, args, stdin);
        assert!(
            out.status.success(),
            "gater {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    }

    /// A store `demo` with [`EVENTS`] events and a persistent subscription
    /// `billing` whose consumer handled one event and left.
    fn with_lagging_subscription(&self) {
        self.ok(&["store", "create", "demo"], "");
        let lines: String = (0..EVENTS)
            .map(|i| format!("{{\"type\":\"Happened\",\"data\":{{\"i\":{i}}}}}\n"))
            .collect();
        self.ok(&["append", "demo", "orders"], &lines);
        self.ok(
            &[
                "subscribe",
                "demo",
                "--all",
                "--name",
                "billing",
                "--limit",
                "1",
            ],
            "",
        );
    }

    fn get(&self, path: &str) -> String {
        let url = format!("http://{}{path}", self.http);
        http_get(&url)
    }
}

/// `GET url` with a plain TCP request (no HTTP client crate in the tree).
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("the HTTP listener answers");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The numbers of stores and subscriptions, without what changes by itself
/// between two reads (worker latency estimates decay over time).
fn numbers(status: &Value) -> (Value, Value) {
    (status["stores"].clone(), status["subscriptions"].clone())
}

#[test]
fn top_once_json_prints_the_numbers_of_api_status() {
    let dev = Dev::start();
    dev.with_lagging_subscription();
    let top = dev.ok(&["top", "--once"], "");
    assert_eq!(top.len(), 1, "one JSON object: {top:?}");
    let status: Value = serde_json::from_str(&dev.get("/api/status")).unwrap();
    assert_eq!(numbers(&top[0]), numbers(&status));
    let lag = &top[0]["subscriptions"][0];
    assert_eq!(lag["name"], "billing");
    assert_eq!(lag["checkpoint"], 1);
    assert_eq!(lag["lag"], EVENTS as u64 - 1);
}

#[test]
fn an_explicit_http_address_that_is_taken_stops_the_server() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = gater()
        .args([
            "dev",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--http",
            &addr,
        ])
        .output()
        .expect("gater runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen for HTTP"), "{stderr}");
}

/// The browser CI installs (Debian's `chromium`).
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        let found = Command::new("which").arg(name).output().ok()?;
        found
            .status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&found.stdout).trim()))
    })
}

fn headless(browser: &Path, args: &[&str]) -> std::process::Output {
    Command::new(browser)
        // CI runs as root, where Chromium's sandbox cannot start.
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(BROWSER_BUDGET)
        .args(args)
        .output()
        .expect("chromium runs")
}

#[test]
fn the_status_page_shows_the_store_and_the_subscription_lag_in_a_browser() {
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        eprintln!("skipped: set RUN_SLOW_TESTS=1 to render the status page in headless Chromium");
        return;
    }
    let browser = chromium().expect("chromium is installed (.ci/run installs it)");
    let dev = Dev::start();
    dev.with_lagging_subscription();
    let url = format!("http://{}/", dev.http);
    let dom = headless(&browser, &["--dump-dom", &url]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    // The rendered tables, not the status embedded for the first render.
    let tables = dom
        .split_once("id=\"initial-status\"")
        .map_or(dom.as_ref(), |(rendered, _)| rendered);
    assert!(
        tables.contains("<td class=\"\">demo</td>"),
        "the store row:\n{tables}"
    );
    assert!(
        tables.contains("<td class=\"\">billing</td>"),
        "the subscription row:\n{tables}"
    );
    let lag = format!("{},{:03}", (EVENTS - 1) / 1000, (EVENTS - 1) % 1000);
    assert!(
        tables.contains(&format!(">{lag}</td>")),
        "the lag {lag}:\n{tables}"
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let taken = headless(
        &browser,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1100",
            &url,
        ],
    );
    assert!(
        shot.exists(),
        "a screenshot at {}: {}",
        shot.display(),
        String::from_utf8_lossy(&taken.stderr)
    );
    eprintln!("status page screenshot: {}", shot.display());
}

#[test]
fn dev_runs_without_http_when_the_default_port_is_taken() {
    use std::io::{BufRead, BufReader};
    // Held here, or by another dev server: taken either way.
    let _held = TcpListener::bind("127.0.0.1:7480");
    let dir = tempfile::tempdir().unwrap();
    let mut child = gater()
        .args([
            "dev",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gater starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut banner = String::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    let alive = child.try_wait().expect("status").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(alive, "gater dev keeps running:\n{banner}");
    assert!(banner.contains("listening on"), "{banner}");
    assert!(
        banner.contains("http:  off (127.0.0.1:7480 is taken"),
        "the banner says HTTP is off:\n{banner}"
    );
}
