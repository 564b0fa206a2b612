//! End-to-end cluster test: `gater proxy` in front of two `gater worker`
//! processes (and a third that joins by heartbeat); a worker is killed and the
//! CLI keeps working for the stores the surviving worker serves, and the
//! killed worker's store serves again once it restarts.

mod cli_support;

use std::path::Path;
use std::time::{Duration, Instant};

use cli_support::{free_port, json_lines, run_cli, wait_ok, ServerProcess};
use serde_json::Value;

fn worker(dir: &Path, certs: &Path, name: &str, extra: &[&str]) -> (ServerProcess, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    (worker_at(dir, certs, name, &addr, extra), addr)
}

fn worker_at(dir: &Path, certs: &Path, name: &str, addr: &str, extra: &[&str]) -> ServerProcess {
    let data = dir.join(name);
    let mut args = vec![
        "--certs",
        certs.to_str().unwrap(),
        "worker",
        "--id",
        name,
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        addr,
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

/// The id of the worker serving `store`, from `store list`.
fn owner(proxy: &str, certs: &Path, store: &str) -> String {
    let list = wait_ok(proxy, certs, &["store", "list"]);
    let row = list
        .iter()
        .find(|r| r["store"] == store)
        .unwrap_or_else(|| panic!("{store} listed: {list:?}"));
    row["workers"][0]
        .as_str()
        .expect("one worker serves it")
        .to_owned()
}

fn append_ok(proxy: &str, certs: &Path, store: &str) -> Value {
    let out = run_cli(
        proxy,
        certs,
        &["append", store, "s-1"],
        "{\"type\":\"T\",\"data\":{}}\n",
    );
    assert!(
        out.status.success(),
        "append to {store} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&out.stdout).remove(0)
}

#[test]
fn the_cli_keeps_working_through_the_proxy_when_a_worker_dies() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    gater_transport_quic::certs::write_dev_certs(&certs, &[]).unwrap();
    let (mut worker_a, addr_a) = worker(dir.path(), &certs, "worker-a", &[]);
    let (_worker_b, addr_b) = worker(dir.path(), &certs, "worker-b", &[]);
    let proxy = format!("127.0.0.1:{}", free_port());
    let _proxy = ServerProcess::start(&[
        "--certs",
        certs.to_str().unwrap(),
        "proxy",
        "--listen",
        &proxy,
        "--worker",
        &addr_a,
        "--worker",
        &addr_b,
    ]);
    // A third worker joins at run time by heartbeat.
    let (_worker_c, _) = worker(dir.path(), &certs, "worker-c", &["--join", &proxy]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while wait_ok(&proxy, &certs, &["workers"]).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the joining worker never appeared"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Create stores until both static workers own at least one.
    let mut on_a = None;
    let mut on_b = None;
    for i in 0..32 {
        let store = format!("store-{i}");
        wait_ok(&proxy, &certs, &["store", "create", &store]);
        // Statically listed workers are known to the proxy by their address.
        let owner = owner(&proxy, &certs, &store);
        if owner == addr_a {
            on_a = on_a.or(Some(store));
        } else if owner == addr_b {
            on_b = on_b.or(Some(store));
        }
        if on_a.is_some() && on_b.is_some() {
            break;
        }
    }
    let (on_a, on_b) = (
        on_a.expect("a store on worker-a"),
        on_b.expect("a store on worker-b"),
    );
    append_ok(&proxy, &certs, &on_a);
    append_ok(&proxy, &certs, &on_b);

    worker_a.kill();

    // Every request for worker-b's store succeeds, during and after detection.
    for i in 1..=10 {
        let written = append_ok(&proxy, &certs, &on_b);
        assert_eq!(written["version"], i, "appends to {on_b} continue");
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = wait_ok(&proxy, &certs, &["read", &on_b, "s-1"]);
    assert_eq!(read.len(), 11, "every acknowledged append is there");
    // worker-a's store is unavailable with a typed, retryable error.
    let out = run_cli(&proxy, &certs, &["read", &on_a, "s-1"], "");
    assert!(!out.status.success());
    let err = json_lines(&out.stderr).remove(0);
    assert_eq!(err["retryable"], true, "{err}");

    // worker-a comes back on the same address with its data: its store serves again,
    // well within a generous bound (the proxy's stale connection idles out, probes re-admit it).
    let _worker_a = worker_at(dir.path(), &certs, "worker-a", &addr_a, &[]);
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let out = run_cli(&proxy, &certs, &["read", &on_a, "s-1"], "");
        if out.status.success() {
            assert_eq!(
                json_lines(&out.stdout).len(),
                1,
                "worker-a's event survived"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker-a's store never came back"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
