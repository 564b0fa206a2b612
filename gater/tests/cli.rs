//! End-to-end tests of the `gater` binary: a real `gater dev` process on a free
//! port in a temporary directory, driven by the CLI for every command.

mod cli_support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Output, Stdio};

use cli_support::{free_port, gater, json_lines, run_cli, wait_ok, ServerProcess};
use serde_json::Value;

/// A `gater dev` process in a temporary directory, killed on drop.
struct DevServer {
    _process: ServerProcess,
    addr: String,
    certs: PathBuf,
    _dir: tempfile::TempDir,
}

impl DevServer {
    fn start() -> DevServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = format!("127.0.0.1:{}", free_port());
        let data = dir.path().join("data");
        let process = ServerProcess::start(&[
            "dev",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &addr,
        ]);
        assert!(
            process.banner.contains(&addr),
            "gater dev announces {addr}:\n{}",
            process.banner
        );
        let certs = data.join("certs");
        for file in [
            "ca.crt",
            "client.crt",
            "client.key",
            "server.crt",
            "server.key",
        ] {
            assert!(
                certs.join(file).exists(),
                "{file} written under {}",
                certs.display()
            );
        }
        wait_ok(&addr, &certs, &["store", "list"]);
        DevServer {
            _process: process,
            addr,
            certs,
            _dir: dir,
        }
    }

    /// Runs `gater --server ADDR --certs DIR --json ARGS` with `stdin`.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        run_cli(&self.addr, &self.certs, args, stdin)
    }

    /// Runs a command that must succeed and returns its JSON lines.
    fn ok(&self, args: &[&str], stdin: &str) -> Vec<Value> {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "gater {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_lines(&out.stdout)
    }

    /// Runs a command that must fail; returns its JSON error.
    fn fails(&self, args: &[&str], stdin: &str) -> Value {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "gater {args:?} should fail");
        let err = json_lines(&out.stderr);
        assert_eq!(err.len(), 1, "one error line on stderr");
        err.into_iter().next().unwrap()
    }
}

#[test]
fn stores_can_be_created_listed_inspected_and_removed() {
    let s = DevServer::start();
    s.ok(&["store", "create", "orders"], "");
    s.ok(&["store", "create", "orders"], "");
    let list = s.ok(&["store", "list"], "");
    assert!(list.iter().any(|r| r["store"] == "orders"), "{list:?}");
    let status = s.ok(&["store", "status", "orders"], "");
    assert_eq!(status[0]["events"], 0);
    assert_eq!(status[0]["head"], -1);
    let config = s.ok(&["store", "config", "orders"], "");
    assert_eq!(config[0]["fsync"], true);
    s.ok(&["store", "remove", "orders"], "");
    let err = s.fails(&["store", "status", "orders"], "");
    assert_eq!(err["error"], "not_found");
}

#[test]
fn store_verify_prints_its_report_and_store_reopen_reopens_from_disk() {
    let s = DevServer::start();
    s.ok(&["store", "create", "checked"], "");
    let events = "{\"type\":\"A\",\"data\":{\"n\":1}}\n{\"type\":\"B\",\"data\":{\"n\":2}}\n";
    s.ok(&["append", "checked", "s"], events);
    let out = s.run(&["store", "verify", "checked"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"store":"checked","records":2,"corrupt":[]}"#
    );
    let reopened = s.ok(&["store", "reopen", "checked"], "");
    assert_eq!(reopened[0]["reopened"], true);
    let status = s.ok(&["store", "status", "checked"], "");
    assert_eq!(status[0]["state"], "running");
    assert_eq!(status[0]["events"], 2);
    assert!(status[0].get("reason").is_none(), "{status:?}");
    let list = s.ok(&["store", "list"], "");
    assert_eq!(list[0]["state"], "running");
    let err = s.fails(&["store", "verify", "missing"], "");
    assert_eq!(err["error"], "not_found");
}

#[test]
fn append_read_streams_and_version_round_trip() {
    let s = DevServer::start();
    s.ok(&["store", "create", "shop"], "");
    let events = "{\"type\":\"Placed\",\"data\":{\"total\":5}}\n{\"type\":\"Paid\",\"data\":{\"ok\":true},\"metadata\":{\"by\":\"me\"}}\n";
    let appended = s.ok(
        &["append", "shop", "order-1", "--expected", "no-stream"],
        events,
    );
    assert_eq!(appended[0]["version"], 1);
    assert_eq!(appended[0]["position"], 1);
    let read = s.ok(&["read", "shop", "order-1"], "");
    assert_eq!(read.len(), 2);
    for field in [
        "stream", "version", "position", "id", "type", "data", "metadata", "created",
    ] {
        assert!(
            read[0].get(field).is_some(),
            "event has {field}: {:?}",
            read[0]
        );
    }
    assert_eq!(read[0]["data"]["total"], 5);
    assert_eq!(read[1]["metadata"]["by"], "me");
    let back = s.ok(
        &["read", "shop", "order-1", "--backward", "--count", "1"],
        "",
    );
    assert_eq!(back[0]["type"], "Paid");
    s.ok(
        &["append", "shop", "order-2"],
        "{\"type\":\"Placed\",\"data\":{}}\n",
    );
    let all = s.ok(&["read-all", "shop"], "");
    let positions: Vec<u64> = all
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![0, 1, 2]);
    let all_back = s.ok(&["read-all", "shop", "--backward", "--count", "2"], "");
    assert_eq!(all_back[0]["position"], 2);
    let streams = s.ok(&["streams", "shop"], "");
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0]["stream"], "order-1");
    assert_eq!(streams[0]["version"], 1);
    let v = s.ok(&["version", "shop", "order-1"], "");
    assert_eq!(v[0], serde_json::json!({"stream": "order-1", "version": 1}));
    let missing = s.ok(&["version", "shop", "nope"], "");
    assert_eq!(missing[0]["version"], -1);
}

#[test]
fn error_paths_exit_non_zero_with_a_typed_error() {
    let s = DevServer::start();
    s.ok(&["store", "create", "errs"], "");
    s.ok(&["append", "errs", "a"], "{\"type\":\"T\",\"data\":1}\n");
    let e = s.fails(
        &["append", "errs", "a", "--expected", "5"],
        "{\"type\":\"T\",\"data\":1}\n",
    );
    assert_eq!(e["error"], "wrong_expected_version");
    assert_eq!(e["current"], 0);
    let e = s.fails(&["read", "nostore", "a"], "");
    assert_eq!(e["error"], "not_found");
    let e = s.fails(&["read", "errs", "$bad"], "");
    assert_eq!(e["error"], "invalid_id");
    let e = s.fails(&["read", "errs", "a", "--count", "0"], "");
    assert_eq!(e["error"], "invalid_argument");
    let bad = "{\"type\":\"T\",\"data\":1}\n{\"type\":\n";
    let e = s.fails(&["append", "errs", "a"], bad);
    assert!(e["message"].as_str().unwrap().contains("line 2"), "{e}");
    let v = s.ok(&["version", "errs", "a"], "");
    assert_eq!(v[0]["version"], 0, "a bad line appends nothing");
    let human = run_cli_human(
        &s,
        &["append", "errs", "a", "--expected", "7"],
        "{\"type\":\"T\"}\n",
    );
    assert_eq!(
        human.trim(),
        "error: wrong expected version: expected 7, current 0"
    );
    let usage = gater().args(["append"]).output().unwrap();
    assert!(!usage.status.success());
    assert!(String::from_utf8_lossy(&usage.stderr).contains("Usage"));
}

fn run_cli_human(s: &DevServer, args: &[&str], stdin: &str) -> String {
    let mut child = gater()
        .args(["--server", &s.addr, "--certs", s.certs.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn subscriptions_deliver_ack_list_and_unsubscribe() {
    let s = DevServer::start();
    s.ok(&["store", "create", "subs"], "");
    let three = "{\"type\":\"A\",\"data\":{\"n\":1}}\n{\"type\":\"B\",\"data\":{\"n\":2}}\n{\"type\":\"A\",\"data\":{\"n\":3}}\n";
    s.ok(&["append", "subs", "s-1"], three);
    let got = s.ok(&["subscribe", "subs", "--all", "--limit", "3"], "");
    assert_eq!(got.len(), 3);
    let typed = s.ok(
        &["subscribe", "subs", "--event-type", "A", "--limit", "2"],
        "",
    );
    assert!(typed.iter().all(|e| e["type"] == "A"));
    let payload = s.ok(
        &[
            "subscribe",
            "subs",
            "--payload",
            "{\"n\":2}",
            "--limit",
            "1",
        ],
        "",
    );
    assert_eq!(payload[0]["type"], "B");
    let pattern = s.ok(
        &[
            "subscribe",
            "subs",
            "--pattern",
            "{\"stream\":\"s-*\"}",
            "--limit",
            "1",
        ],
        "",
    );
    assert_eq!(pattern[0]["position"], 0);
    let durable = s.ok(
        &[
            "subscribe",
            "subs",
            "--stream",
            "s-1",
            "--name",
            "billing",
            "--limit",
            "2",
        ],
        "",
    );
    assert_eq!(durable.len(), 2);
    let list = s.ok(&["subscriptions", "subs"], "");
    let billing = list
        .iter()
        .find(|r| r["name"] == "billing")
        .expect("billing listed");
    assert_eq!(billing["checkpoint"], 2);
    let rest = s.ok(
        &[
            "subscribe",
            "subs",
            "--stream",
            "s-1",
            "--name",
            "billing",
            "--limit",
            "1",
        ],
        "",
    );
    assert_eq!(
        rest[0]["position"], 2,
        "a persistent subscription resumes after its checkpoint"
    );
    let parked = s.ok(&["parked", "subs", "billing"], "");
    assert!(parked.is_empty());
    let replayed = s.ok(&["replay-parked", "subs", "billing"], "");
    assert_eq!(replayed[0]["replayed"], 0);
    s.ok(
        &[
            "unsubscribe",
            "subs",
            "--stream",
            "s-1",
            "--name",
            "billing",
        ],
        "",
    );
    let e = s.fails(
        &[
            "unsubscribe",
            "subs",
            "--stream",
            "s-1",
            "--name",
            "billing",
        ],
        "",
    );
    assert_eq!(e["error"], "not_found");
}

#[test]
fn snapshots_record_read_list_and_delete() {
    let s = DevServer::start();
    s.ok(&["store", "create", "snaps"], "");
    s.ok(
        &["snapshot", "record", "snaps", "cart", "cart-1", "3"],
        "{\"items\":2}",
    );
    s.ok(
        &["snapshot", "record", "snaps", "cart", "cart-1", "7"],
        "{\"items\":5}",
    );
    let latest = s.ok(&["snapshot", "read", "snaps", "cart", "cart-1"], "");
    assert_eq!(latest[0]["version"], 7);
    assert_eq!(latest[0]["data"]["items"], 5);
    let exact = s.ok(&["snapshot", "read", "snaps", "cart", "cart-1", "3"], "");
    assert_eq!(exact[0]["data"]["items"], 2);
    assert_eq!(s.ok(&["snapshot", "list", "snaps"], "").len(), 2);
    assert_eq!(
        s.ok(&["snapshot", "list", "snaps", "cart", "cart-1"], "")
            .len(),
        2
    );
    s.ok(&["snapshot", "delete", "snaps", "cart", "cart-1", "7"], "");
    let e = s.fails(&["snapshot", "read", "snaps", "cart", "cart-1", "7"], "");
    assert_eq!(e["error"], "not_found");
}

#[test]
fn workers_lists_the_embedded_worker() {
    let s = DevServer::start();
    s.ok(&["store", "create", "w"], "");
    let workers = s.ok(&["workers"], "");
    assert_eq!(workers.len(), 1);
    assert!(workers[0]["stores"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x == "w"));
    assert_eq!(workers[0]["health"], "healthy");
}

#[test]
fn reads_page_past_a_frame_and_count_all_reads_every_event() {
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        eprintln!("skipped: set RUN_SLOW_TESTS=1 to read 18 MB through the CLI");
        return;
    }
    const EVENTS: usize = 4_500;
    let s = DevServer::start();
    s.ok(&["store", "create", "big"], "");
    // 4,500 events of 4 KB: 18 MB, more than one 16 MiB frame holds.
    let filler = "x".repeat(4_000);
    let input: String = (0..EVENTS)
        .map(|n| {
            format!("{{\"type\":\"Filled\",\"data\":{{\"n\":{n},\"filler\":\"{filler}\"}}}}\n")
        })
        .collect();
    s.ok(&["append", "big", "s"], &input);
    let all = s.ok(&["read", "big", "s", "--count", "all"], "");
    assert_eq!(all.len(), EVENTS);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, e)| e["version"] == i as u64));
    let counted = s.ok(&["read", "big", "s", "--count", "10000"], "");
    assert_eq!(
        counted.len(),
        EVENTS,
        "a count within the limit never fails for size"
    );
    let some = s.ok(
        &["read", "big", "s", "--count", "2500", "--from", "100"],
        "",
    );
    assert_eq!(some.len(), 2_500);
    assert_eq!(some[0]["version"], 100);
    assert_eq!(some[2_499]["version"], 2_599);
    let back = s.ok(&["read", "big", "s", "--backward", "--count", "all"], "");
    assert_eq!(back.len(), EVENTS);
    assert_eq!(back[0]["version"], (EVENTS - 1) as u64);
    assert_eq!(back[EVENTS - 1]["version"], 0);
    let log = s.ok(&["read-all", "big", "--count", "all"], "");
    assert_eq!(log.len(), EVENTS);
    assert_eq!(log[EVENTS - 1]["position"], (EVENTS - 1) as u64);
}

#[test]
fn export_then_import_recreates_a_store_and_a_second_import_changes_nothing() {
    let s = DevServer::start();
    for store in ["src", "dst", "clash"] {
        s.ok(&["store", "create", store], "");
    }
    for (stream, n) in [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("c", 0), ("b", 1)] {
        let line = format!(
            "{{\"type\":\"T{n}\",\"data\":{{\"n\":{n}}},\"metadata\":{{\"s\":\"{stream}\"}}}}\n"
        );
        s.ok(&["append", "src", stream], &line);
    }
    s.ok(
        &["snapshot", "record", "src", "cart", "a", "2"],
        "{\"items\":2}\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("src.jsonl");
    let file = file.to_str().unwrap();
    let summary = s.ok(&["export", "src", "--out", file], "");
    assert_eq!(summary[0]["events"], 6);
    assert_eq!(summary[0]["snapshots"], 1);

    let imported = s.ok(&["import", "dst", "--in", file], "");
    assert_eq!(imported[0]["events"], 6);
    let again = dir.path().join("dst.jsonl");
    s.ok(&["export", "dst", "--out", again.to_str().unwrap()], "");
    let lines = |path: &str| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("created");
                o.remove("created_us");
                v
            })
            .collect()
    };
    assert_eq!(
        lines(file),
        lines(again.to_str().unwrap()),
        "same events, ids, versions, positions and snapshot"
    );

    s.ok(&["import", "dst", "--in", file], "");
    let status = s.ok(&["store", "status", "dst"], "");
    assert_eq!(status[0]["events"], 6, "a second import is a no-op");

    // A store whose stream `b` already holds another event: the import stops there.
    s.ok(
        &["append", "clash", "b"],
        "{\"type\":\"Other\",\"data\":{}}\n",
    );
    let out = s.run(&["import", "clash", "--in", file], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"import_stopped_at_line\":2"), "{stderr}");
    assert!(stderr.contains("wrong_expected_version"), "{stderr}");
    let clash = s.ok(&["read-all", "clash", "--count", "all"], "");
    assert_eq!(
        clash.len(),
        2,
        "the run before the conflict and nothing after: {clash:?}"
    );
}

#[test]
fn a_unique_username_is_claimed_once_with_fail_if() {
    let s = DevServer::start();
    s.ok(&["store", "create", "users"], "");
    let claim = |user: &str, name: &str| {
        format!(
            "{{\"type\":\"UsernameClaimed\",\"data\":{{\"user\":\"{user}\"}},\"tags\":[\"username:{name}\"]}}\n"
        )
    };
    let unless_taken = |name: &str| format!("{{\"items\":[{{\"tags\":[\"username:{name}\"]}}]}}");
    let first = s.ok(
        &[
            "append",
            "users",
            "user-1",
            "--expected",
            "no-stream",
            "--fail-if",
            &unless_taken("ada"),
        ],
        &claim("u-1", "ada"),
    );
    assert_eq!(first[0]["position"], 0);
    let err = s.fails(
        &[
            "append",
            "users",
            "user-2",
            "--fail-if",
            &unless_taken("ada"),
        ],
        &claim("u-2", "ada"),
    );
    assert_eq!(err["error"], "append_condition_failed");
    assert_eq!(err["position"], 0);
    let version = s.ok(&["version", "users", "user-2"], "");
    assert_eq!(version[0]["version"], -1, "nothing appended");
    // Only events after --after count.
    s.ok(
        &[
            "append",
            "users",
            "user-2",
            "--fail-if",
            &unless_taken("ada"),
            "--after",
            "0",
        ],
        &claim("u-2", "ada"),
    );
    let found = s.ok(&["query", "users", "--tag", "username:ada"], "");
    let positions: Vec<&Value> = found.iter().map(|e| &e["position"]).collect();
    assert_eq!(positions, [0, 1]);
    assert_eq!(found[0]["tags"], serde_json::json!(["username:ada"]));
    let read = s.ok(&["read", "users", "user-1"], "");
    assert_eq!(read[0]["tags"], serde_json::json!(["username:ada"]));
}

#[test]
fn append_multi_appends_to_several_streams_at_once_or_not_at_all() {
    let s = DevServer::start();
    s.ok(&["store", "create", "courses"], "");
    s.ok(
        &["append", "courses", "course-c1"],
        "{\"type\":\"CourseDefined\",\"data\":{\"capacity\":2},\"tags\":[\"course:c1\"]}\n",
    );
    let subscribe = "{\"stream\":\"student-s1\",\"type\":\"StudentSubscribed\",\"data\":{},\"tags\":[\"course:c1\",\"student:s1\"]}\n\
                     {\"stream\":\"course-c1\",\"type\":\"SeatTaken\",\"data\":{},\"tags\":[\"course:c1\"]}\n";
    let query = "{\"items\":[{\"types\":[\"StudentSubscribed\"],\"tags\":[\"student:s1\"]}]}";
    let out = s.ok(
        &[
            "append-multi",
            "courses",
            "--expect",
            "course-c1=0",
            "--expect",
            "student-s1=no-stream",
            "--fail-if",
            query,
            "--after",
            "0",
        ],
        subscribe,
    );
    assert_eq!(
        out,
        [serde_json::json!({"position": 2, "streams": [
            {"stream": "student-s1", "version": 0},
            {"stream": "course-c1", "version": 1}
        ]})]
    );
    let err = s.fails(&["append-multi", "courses", "--fail-if", query], subscribe);
    assert_eq!(err["error"], "append_condition_failed");
    assert_eq!(err["position"], 1);
    let err = s.fails(
        &["append-multi", "courses", "--expect", "course-c1=0"],
        "{\"stream\":\"student-s2\",\"type\":\"StudentSubscribed\",\"data\":{}}\n\
         {\"stream\":\"course-c1\",\"type\":\"SeatTaken\",\"data\":{}}\n",
    );
    assert_eq!(err["error"], "wrong_expected_version");
    assert_eq!(err["stream"], "course-c1");
    let version = s.ok(&["version", "courses", "student-s2"], "");
    assert_eq!(version[0]["version"], -1, "nothing appended");
    let by_type = s.ok(
        &[
            "query",
            "courses",
            "--type",
            "SeatTaken",
            "--type",
            "CourseDefined",
            "--tag",
            "course:c1",
        ],
        "",
    );
    let positions: Vec<&Value> = by_type.iter().map(|e| &e["position"]).collect();
    assert_eq!(positions, [0, 2]);
    let last = s.ok(
        &[
            "query",
            "courses",
            "--query",
            "{\"items\":[{\"tags\":[\"course:c1\"]}]}",
            "--backward",
            "--count",
            "1",
        ],
        "",
    );
    assert_eq!(last[0]["position"], 2);
    let from = s.ok(
        &["query", "courses", "--tag", "course:c1", "--from", "1"],
        "",
    );
    assert_eq!(from.len(), 2);
    let live = s.ok(
        &[
            "subscribe",
            "courses",
            "--query",
            "{\"items\":[{\"types\":[\"StudentSubscribed\"]}]}",
            "--limit",
            "1",
        ],
        "",
    );
    assert_eq!(live[0]["stream"], "student-s1");
    assert_eq!(
        live[0]["tags"],
        serde_json::json!(["course:c1", "student:s1"])
    );
}

#[test]
fn a_conditional_append_over_the_append_limit_is_refused_whole() {
    let s = DevServer::start();
    s.ok(&["store", "create", "big"], "");
    let lines = "{\"stream\":\"s\",\"type\":\"A\",\"data\":{}}\n".repeat(10_001);
    let err = s.fails(&["append-multi", "big"], &lines);
    assert_eq!(err["error"], "limit_exceeded");
    let plain = lines.replace("\"stream\":\"s\",", "");
    let err = s.fails(
        &[
            "append",
            "big",
            "s",
            "--fail-if",
            "{\"items\":[{\"types\":[\"B\"]}]}",
        ],
        &plain,
    );
    assert_eq!(err["error"], "limit_exceeded");
    let status = s.ok(&["store", "status", "big"], "");
    assert_eq!(status[0]["events"], 0, "nothing appended");
}

#[test]
fn stream_delete_truncate_retention_and_store_compact_follow_the_documented_shapes() {
    let s = DevServer::start();
    s.ok(&["store", "create", "life"], "");
    let three =
        "{\"type\":\"T\",\"data\":1}\n{\"type\":\"T\",\"data\":2}\n{\"type\":\"T\",\"data\":3}\n";
    s.ok(&["append", "life", "a"], three);
    s.ok(&["append", "life", "b"], three);
    let e = s.fails(&["stream", "delete", "life", "a", "--expected", "7"], "");
    assert_eq!(e["error"], "wrong_expected_version");
    s.ok(&["stream", "delete", "life", "a", "--expected", "2"], "");
    let v = s.ok(&["version", "life", "a"], "");
    assert_eq!(v[0]["version"], -1, "a soft-deleted stream has no version");
    let again = s.ok(
        &["append", "life", "a", "--expected", "no-stream"],
        "{\"type\":\"T\",\"data\":4}\n",
    );
    assert_eq!(
        again[0]["version"], 3,
        "numbering goes on after a soft delete"
    );
    s.ok(&["stream", "delete", "life", "a", "--hard"], "");
    let e = s.fails(&["read", "life", "a"], "");
    assert_eq!(e["error"], "stream_deleted");
    let e = s.fails(&["append", "life", "a"], "{\"type\":\"T\",\"data\":5}\n");
    assert_eq!(e["error"], "stream_deleted");
    let out = s.run(
        &["stream", "retention", "life", "b", "--max-count", "2"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"stream":"b","max_count":2,"max_age":null,"truncate_before":null}"#
    );
    let read = s.ok(&["read", "life", "b"], "");
    assert_eq!(read.len(), 2, "retention keeps the newest two");
    s.ok(&["stream", "truncate", "life", "b", "--before", "2"], "");
    let printed = s.ok(&["stream", "retention", "life", "b"], "");
    assert_eq!(printed[0]["truncate_before"], 2);
    assert_eq!(printed[0]["max_count"], 2);
    let out = s.run(&["store", "compact", "life"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(r#"{"store":"life","bytes_before":"#),
        "{text}"
    );
    let compacted = json_lines(&out.stdout);
    assert!(compacted[0]["bytes_after"].as_u64().is_some(), "{text}");
    let all = s.ok(&["read-all", "life"], "");
    let versions: Vec<(String, u64)> = all
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().unwrap().to_owned(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, vec![("b".to_owned(), 2)]);
}
