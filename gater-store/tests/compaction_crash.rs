//! Crash safety of compaction: a child process compacts a store with many
//! hidden events; the parent kills it with SIGKILL at a seeded moment,
//! reopens the store, checks that every visible event is there and every
//! hidden one still hidden, then compacts again to the end and checks the
//! same. Several rounds run against the same data directory.
//!
//! Slow: runs only when `RUN_SLOW_TESTS` is set.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use gater_core::{
    Direction, EventData, EventId, ExpectedVersion, Gater, Position, Retention, StoreConfig,
    StoreId, StreamId,
};
use gater_store::{Store, StoreOptions};

/// Set in the child: the data directory it compacts.
const CHILD_DIR_VAR: &str = "GATER_COMPACT_CRASH_CHILD_DIR";
/// This test's name, for `--exact`.
const TEST_NAME: &str = "compaction_killed_midway_finishes_later_and_loses_no_visible_event";
/// Streams written; every other one is deleted (and one truncated).
const STREAMS: u32 = 40;
/// Events per stream.
const EVENTS_PER_STREAM: u32 = 500;
/// The seed of the kill delays.
const SEED: u64 = 0x5eed_c0de;
/// Kill rounds.
const ROUNDS: u32 = 3;
/// Page size of the reads that compare the log.
const PAGE: u32 = 1_000;

#[test]
fn compaction_killed_midway_finishes_later_and_loses_no_visible_event() {
    if let Ok(dir) = std::env::var(CHILD_DIR_VAR) {
        run_child(dir.into());
        return;
    }
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        eprintln!("{TEST_NAME}: skipped, slow test (set RUN_SLOW_TESTS=1 to run it)");
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = runtime();
    let visible = runtime.block_on(fill(dir.path()));
    let mut rng = SEED;
    for round in 0..ROUNDS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(rng % 300);
        let finished = kill_during_compaction(dir.path(), delay);
        eprintln!("round {round}: killed after {delay:?}, child finished first: {finished}");
        let after_crash = runtime.block_on(read_log(dir.path(), false));
        assert_eq!(
            after_crash, visible,
            "round {round}: visible events after the crash"
        );
    }
    let after_compaction = runtime.block_on(read_log(dir.path(), true));
    assert_eq!(
        after_compaction, visible,
        "visible events after a full compaction"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn store_id() -> StoreId {
    StoreId::new("compacted").expect("store id")
}

fn event(stream: u32, n: u32) -> EventData {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&stream.to_be_bytes());
    bytes[4..8].copy_from_slice(&n.to_be_bytes());
    EventData::json(
        EventId::from_random_bytes(bytes),
        "Filled",
        format!("{{\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes(),
        Vec::new(),
    )
}

/// Writes the store, hides half of it and returns the (stream, version) of every visible event.
async fn fill(dir: &std::path::Path) -> Vec<(String, u64)> {
    let store = Store::open(StoreOptions::new(dir)).await.expect("open");
    let id = store_id();
    let config = StoreConfig {
        fsync: false,
        group_commit: true,
        retention: Retention::NONE,
    };
    store.create_store(&id, config).await.expect("create");
    for s in 0..STREAMS {
        let stream = StreamId::new(format!("s-{s}")).expect("stream id");
        let events = (0..EVENTS_PER_STREAM).map(|n| event(s, n)).collect();
        store
            .append_events(&id, &stream, ExpectedVersion::NoStream, events)
            .await
            .expect("append");
        if s % 2 == 0 {
            store
                .delete_stream(&id, &stream, ExpectedVersion::Any)
                .await
                .expect("delete");
        } else if s == 1 {
            store
                .truncate_stream(&id, &stream, 100)
                .await
                .expect("truncate");
        }
    }
    let visible = log(&store, &id).await;
    store.shutdown().await;
    visible
}

async fn log(store: &Store, id: &StoreId) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store
            .read_all(id, from, PAGE, Direction::Forward)
            .await
            .expect("read_all");
        let Some(last) = page.last() else {
            return out;
        };
        from = last.position.next();
        out.extend(
            page.iter()
                .map(|e| (e.stream.as_str().to_owned(), e.version)),
        );
    }
}

/// Reopens the store and reads what it shows, after a full compaction when asked.
async fn read_log(dir: &std::path::Path, compact: bool) -> Vec<(String, u64)> {
    let mut options = StoreOptions::new(dir);
    options.compact_hidden_share_percent = 0;
    let store = Store::open(options).await.expect("reopen after the crash");
    let id = store_id();
    if compact {
        store.compact_store(&id).await.expect("compaction");
        let again = store.compact_store(&id).await.expect("second compaction");
        assert_eq!(
            again.events_removed, 0,
            "the first compaction finished the work"
        );
    }
    let visible = log(&store, &id).await;
    store.shutdown().await;
    visible
}

/// Starts a child that compacts, kills it `delay` after it started; whether it finished first.
fn kill_during_compaction(dir: &std::path::Path, delay: Duration) -> bool {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VAR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    // libtest prints the test's name on the same line before its output.
    let mut lines = BufReader::new(stdout).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.ends_with("compacting"));
    assert!(started, "the child did not start compacting");
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    lines
        .map_while(Result::ok)
        .any(|l| l.ends_with("compacted"))
}

fn run_child(dir: std::path::PathBuf) {
    runtime().block_on(async {
        let mut options = StoreOptions::new(&dir);
        options.compact_hidden_share_percent = 0;
        let store = Store::open(options).await.expect("child: open");
        println!("compacting");
        store
            .compact_store(&store_id())
            .await
            .expect("child: compaction");
        println!("compacted");
    });
}
