//! Crash safety: a child process appends in a loop and reports every
//! acknowledged append on stdout; the parent kills it with SIGKILL at a
//! seeded random moment, reopens the store and checks that every
//! acknowledged append is there, that positions and versions are gapless,
//! and that every append is all or nothing. Several rounds run against the
//! same data directory, so recovery also meets data recovered before.
//!
//! Slow: runs only when `RUN_SLOW_TESTS` is set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gater_core::{
    Direction, EventData, EventId, ExpectedVersion, Gater, Position, RecordedEvent, StoreConfig,
    StoreId, StreamId,
};
use gater_store::{Store, StoreOptions};

/// Set in the child: the data directory it appends to.
const CHILD_DIR_VAR: &str = "GATER_CRASH_CHILD_DIR";
/// Set in the child: the round number, part of every event id.
const CHILD_ROUND_VAR: &str = "GATER_CRASH_CHILD_ROUND";
/// This test's name, for `--exact`.
const TEST_NAME: &str = "acknowledged_appends_survive_sigkill";
/// Concurrent appenders in the child.
const CHILD_APPENDERS: u8 = 8;
/// Streams the child appends to.
const STREAMS: u32 = 5;
/// Kill rounds per seed.
const ROUNDS: u8 = 3;
/// Seeds run by default; `GATER_CRASH_SEEDS=N` runs the first N of the same series.
const SEEDS: [u64; 3] = [0x5eed_0001, 0x5eed_0002, 0x5eed_0003];
/// Sets how many seeds of the series `0x5eed_0001, 0x5eed_0002, …` to run.
const SEEDS_VAR: &str = "GATER_CRASH_SEEDS";
/// Longest wait for the child's first acknowledgement.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// One acknowledged append as the child reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ack {
    round: u8,
    task: u8,
    seq: u32,
    stream: String,
    count: u8,
    version: u64,
    position: u64,
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_DIR_VAR) {
        let round = std::env::var(CHILD_ROUND_VAR)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        run_child(dir.into(), round);
        return;
    }
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        return;
    }
    let seeds: Vec<u64> = match std::env::var(SEEDS_VAR).ok().and_then(|n| n.parse().ok()) {
        Some(n) => (1..=n).map(|i: u64| 0x5eed_0000 + i).collect(),
        None => SEEDS.to_vec(),
    };
    for seed in seeds {
        eprintln!("crash test: seed {seed:#x}");
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut rng = XorShift(seed);
        let mut acked = Vec::new();
        for round in 0..ROUNDS {
            let delay_ms = 20 + rng.next() % 400;
            acked.extend(run_round(
                dir.path(),
                round,
                Duration::from_millis(delay_ms),
            ));
            verify(dir.path(), &acked, seed, round);
        }
    }
}

/// Starts a child, kills it `delay` after its first acknowledgement, returns what it acknowledged.
fn run_round(dir: &std::path::Path, round: u8, delay: Duration) -> Vec<Ack> {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VAR, dir)
        .env(CHILD_ROUND_VAR, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = parse_ack(&line) {
                if lines_tx.send(ack).is_err() {
                    break;
                }
            }
        }
    });
    let first = lines_rx
        .recv_timeout(FIRST_ACK_TIMEOUT)
        .expect("the child acknowledged nothing");
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    reader.join().expect("stdout reader");
    let mut acked = vec![first];
    acked.extend(lines_rx.try_iter());
    acked
}

/// Reopens the store and checks it against the acknowledgements of every round so far.
fn verify(dir: &std::path::Path, acked: &[Ack], seed: u64, round: u8) {
    let context = format!("seed {seed:#x}, round {round}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open(StoreOptions::new(dir))
            .await
            .expect("reopen after the crash");
        let id = store_id();
        let log = read_log(&store, &id).await;
        for (i, event) in log.iter().enumerate() {
            assert_eq!(
                event.position,
                Position(i as u64),
                "{context}: the log has a gap"
            );
        }
        let status = store.get_store_status(&id).await.unwrap();
        assert_eq!(
            status.event_count,
            log.len() as u64,
            "{context}: event count"
        );
        assert_eq!(
            status.head,
            log.last().map(|e| e.position),
            "{context}: head"
        );
        check_streams_and_appends(&log, &context);
        let by_position: BTreeMap<u64, &RecordedEvent> =
            log.iter().map(|e| (e.position.0, e)).collect();
        for ack in acked {
            let last = by_position
                .get(&ack.position)
                .unwrap_or_else(|| panic!("{context}: acknowledged {ack:?} is lost"));
            let (round, task, seq, index, count) = decode_id(last.data.id);
            assert_eq!(
                (round, task, seq, index + 1, count),
                (ack.round, ack.task, ack.seq, ack.count, ack.count),
                "{context}: {ack:?}"
            );
            assert_eq!(
                (last.stream.as_str(), last.version),
                (ack.stream.as_str(), ack.version),
                "{context}: {ack:?}"
            );
        }
        store.shutdown().await;
    });
}

/// Versions are gapless per stream, and each append's events are all there, consecutive.
fn check_streams_and_appends(log: &[RecordedEvent], context: &str) {
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    let mut i = 0;
    while i < log.len() {
        let (round, task, seq, index, count) = decode_id(log[i].data.id);
        assert_eq!(
            index, 0,
            "{context}: an append starts mid-way at {}",
            log[i].position
        );
        for j in 0..count as usize {
            let event = log
                .get(i + j)
                .unwrap_or_else(|| panic!("{context}: an append is cut short"));
            assert_eq!(
                decode_id(event.data.id),
                (round, task, seq, j as u8, count),
                "{context}: an append is split"
            );
            let next = versions.entry(event.stream.as_str()).or_insert(0);
            assert_eq!(
                event.version, *next,
                "{context}: stream {} has a version gap",
                event.stream
            );
            *next += 1;
        }
        i += count as usize;
    }
}

async fn read_log(store: &Store, id: &StoreId) -> Vec<RecordedEvent> {
    let mut log = Vec::new();
    loop {
        let page = store
            .read_all(id, Position(log.len() as u64), 1000, Direction::Forward)
            .await
            .unwrap();
        if page.is_empty() {
            return log;
        }
        log.extend(page);
    }
}

fn store_id() -> StoreId {
    StoreId::new("crash").unwrap()
}

/// The child: appends from several tasks until killed, printing each acknowledgement.
fn run_child(dir: std::path::PathBuf, round: u8) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Store::open(StoreOptions::new(dir))
            .await
            .expect("child open");
        store
            .create_store(&store_id(), StoreConfig::default())
            .await
            .expect("child create");
        let tasks: Vec<_> = (0..CHILD_APPENDERS)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    for seq in 0u32.. {
                        let count = (1 + (seq + u32::from(task)) % 3) as u8;
                        let stream = format!("s-{}", (seq * 7 + u32::from(task)) % STREAMS);
                        let events = (0..count)
                            .map(|index| event(round, task, seq, index, count))
                            .collect();
                        let sid = StreamId::new(stream.clone()).unwrap();
                        let r = store
                            .append_events(&store_id(), &sid, ExpectedVersion::Any, events)
                            .await
                            .expect("child append");
                        let line = format!(
                            "ack {round} {task} {seq} {stream} {count} {} {}\n",
                            r.version, r.position.0
                        );
                        let mut out = std::io::stdout().lock();
                        out.write_all(line.as_bytes())
                            .and_then(|()| out.flush())
                            .expect("child stdout");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("child appender");
        }
    });
}

fn event(round: u8, task: u8, seq: u32, index: u8, count: u8) -> EventData {
    let mut id = [0u8; 16];
    id[0] = round;
    id[1] = task;
    id[2..6].copy_from_slice(&seq.to_le_bytes());
    id[6] = index;
    id[7] = count;
    id[8] = 0xc5;
    EventData::json(
        EventId::from_bytes(id),
        "Crashed",
        vec![b'x'; 200],
        Vec::new(),
    )
}

fn decode_id(id: EventId) -> (u8, u8, u32, u8, u8) {
    let b = id.as_bytes();
    (
        b[0],
        b[1],
        u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
        b[6],
        b[7],
    )
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    let mut next = || parts.next();
    Some(Ack {
        round: next()?.parse().ok()?,
        task: next()?.parse().ok()?,
        seq: next()?.parse().ok()?,
        stream: next()?.to_owned(),
        count: next()?.parse().ok()?,
        version: next()?.parse().ok()?,
        position: next()?.parse().ok()?,
    })
}

/// A small seeded generator for kill delays.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
