//! End-to-end shared-storage cluster: two `gater worker --backend postgres`
//! processes over one PostgreSQL database and a `gater proxy` told nothing
//! about the storage. The proxy learns from the workers that it is shared,
//! so every store is served by both, and a persistent group consumed through
//! either worker has one owner.
//!
//! Slow (it starts a PostgreSQL server): runs only with `RUN_SLOW_TESTS`, and
//! is skipped, with a message, when the machine has no PostgreSQL binaries.

mod cli_support;

use std::path::Path;
use std::time::{Duration, Instant};

use cli_support::{free_port, json_lines, run_cli, wait_ok, ServerProcess};
use gater_testkit::pg_harness::PgServer;

fn pg_worker(dir: &Path, certs: &Path, name: &str, url: &str) -> (ServerProcess, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.join(name);
    let process = ServerProcess::start(&[
        "--certs",
        certs.to_str().unwrap(),
        "worker",
        "--id",
        name,
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &addr,
        "--backend",
        "postgres",
        "--postgres-url",
        url,
    ]);
    (process, addr)
}

#[test]
fn a_proxy_not_told_shared_serves_each_store_on_both_postgres_workers() {
    let case = "a_proxy_not_told_shared_serves_each_store_on_both_postgres_workers";
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        eprintln!("{case}: skipped, slow test (set RUN_SLOW_TESTS=1 to run it)");
        return;
    }
    let Some(pg) = PgServer::start().expect("the PostgreSQL server starts") else {
        eprintln!("{case}: skipped, no PostgreSQL binaries (initdb, pg_ctl) on this machine");
        return;
    };
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    gater_transport_quic::certs::write_dev_certs(&certs, &[]).unwrap();
    let (_a, addr_a) = pg_worker(dir.path(), &certs, "pg-a", &url);
    let (_b, addr_b) = pg_worker(dir.path(), &certs, "pg-b", &url);
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
    wait_ok(&proxy, &certs, &["store", "create", "orders"]);
    let mut both = vec![addr_a.clone(), addr_b.clone()];
    both.sort();
    let status = wait_ok(&proxy, &certs, &["store", "status", "orders"]);
    let mut serving: Vec<String> = status[0]["workers"]
        .as_array()
        .expect("a list of workers")
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    serving.sort();
    assert_eq!(
        serving, both,
        "the store is served by both workers: {status:?}"
    );
    let listed = wait_ok(&proxy, &certs, &["store", "list"]);
    let row = listed.iter().find(|r| r["store"] == "orders").unwrap();
    assert_eq!(row["workers"].as_array().map(Vec::len), Some(2), "{row}");

    // Six events, consumed through worker b while worker a saved the group:
    // one owner, every event once, acks through the worker the consumer is on.
    for _ in 0..6 {
        let out = run_cli(
            &proxy,
            &certs,
            &["append", "orders", "s-1"],
            "{\"type\":\"T\",\"data\":{}}\n",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let first = run_cli(
        &addr_a,
        &certs,
        &[
            "subscribe",
            "orders",
            "--all",
            "--name",
            "g",
            "--limit",
            "3",
        ],
        "",
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = run_cli(
        &addr_b,
        &certs,
        &[
            "subscribe",
            "orders",
            "--all",
            "--name",
            "g",
            "--limit",
            "3",
        ],
        "",
    );
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let positions: Vec<u64> = json_lines(&first.stdout)
        .iter()
        .chain(json_lines(&second.stdout).iter())
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        positions,
        (0..6).collect::<Vec<_>>(),
        "each event once, in order"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let subs = wait_ok(&proxy, &certs, &["subscriptions", "orders"]);
        let g = subs
            .iter()
            .find(|s| s["name"] == "g")
            .expect("group g listed");
        if g["checkpoint"] == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the checkpoint never reached 6: {g}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
