//! A full disk for real: a worker's database (every store of the worker)
//! lives on a small tmpfs. Appends to one store fill the tmpfs until one
//! fails with `storage_full`; the store is then `read_only` (reads served),
//! and so is the worker's other store, whose journal is the same; growing
//! the tmpfs (`mount -o remount,size=...`) lets both heal by themselves
//! within their heal interval, without a restart; after a final restart
//! every acknowledged event is there with dense versions.
//!
//! Slow, and needs to mount a tmpfs (root, as in CI): runs only when
//! `RUN_SLOW_TESTS` is set, and says so when it skips.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gater_core::{
    Direction, Error, EventData, EventId, ExpectedVersion, Gater, Position, StoreConfig, StoreId,
    StoreState, StreamId,
};
use gater_store::{HealOptions, Store, StoreOptions};

/// The tmpfs's size while it fills up.
const SMALL_SIZE: &str = "16m";
/// Its size once grown: above the default free-space margin (64 MiB).
const GROWN_SIZE: &str = "160m";
/// Bytes of each event's data, as an operator's 4 KB events.
const EVENT_BYTES: usize = 4096;
/// Most appends tried before the tmpfs must have filled up.
const APPENDS_MAX: u32 = 100_000;
/// How often the read-only store checks for room here.
const HEAL_INTERVAL_MS: u64 = 200;
/// Most status polls while waiting for the store to heal.
const POLLS_MAX: u32 = 3_000;
/// Streams the appends rotate over.
const STREAMS: u32 = 4;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let size = format!("size={SMALL_SIZE}");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(at))?;
        Ok(Tmpfs(at.to_owned()))
    }

    fn grow(&self) {
        let size = format!("remount,size={GROWN_SIZE}");
        run(Command::new("mount").args(["-o", &size]).arg(&self.0)).expect("the tmpfs grows");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| e.to_string())?;
    if output.status.success() {
        return Ok(());
    }
    Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
}

fn event(n: u32) -> EventData {
    let mut id = [0u8; 16];
    id[12..].copy_from_slice(&n.to_be_bytes());
    let mut data = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
    data.resize(EVENT_BYTES - 2, b'x');
    data.extend_from_slice(b"\"}");
    EventData::json(EventId::from_random_bytes(id), "Filled", data, Vec::new())
}

fn options(dir: &Path) -> StoreOptions {
    let mut options = StoreOptions::new(dir);
    options.heal = HealOptions {
        interval_ms: HEAL_INTERVAL_MS,
        ..HealOptions::default()
    };
    options
}

/// A line as `gater --json` prints an error.
fn error_line(error: &Error) -> String {
    serde_json::json!({
        "error": error.kind(),
        "message": error.to_string(),
        "side": error.side().map(|s| s.to_string()),
        "retryable": error.is_retryable(),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_a_store_read_only_and_it_heals_when_the_disk_grows() {
    if std::env::var_os("RUN_SLOW_TESTS").is_none() {
        eprintln!("skipped: set RUN_SLOW_TESTS to run the tmpfs disk-full test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (small, big) = (StoreId::new("small").unwrap(), StoreId::new("big").unwrap());
    let config = StoreConfig::default();
    // The worker's database directory is the tmpfs: mounted before it opens.
    let tmpfs = match Tmpfs::mount(&dir.path().join("db")) {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let store = Store::open(options(dir.path())).await.unwrap();
    store.create_store(&small, config).await.unwrap();
    store.create_store(&big, config).await.unwrap();

    let mut acked: BTreeMap<EventId, (String, u64)> = BTreeMap::new();
    let mut full = None;
    for n in 0..APPENDS_MAX {
        let s = StreamId::new(format!("fill-{}", n % STREAMS)).unwrap();
        let e = event(n);
        match store
            .append_events(&small, &s, ExpectedVersion::Any, vec![e.clone()])
            .await
        {
            Ok(result) => {
                acked.insert(e.id, (s.to_string(), result.version));
            }
            Err(error) => {
                full = Some((n, error));
                break;
            }
        }
    }
    let (failed_at, error) = full.expect("the tmpfs fills up");
    eprintln!("after {} acknowledged appends:", acked.len());
    eprintln!("{}", error_line(&error));
    assert_eq!(error.kind(), "storage_full", "{error}");
    assert!(error.is_retryable());

    let status = store.get_store_status(&small).await.unwrap();
    eprintln!(
        "{}",
        serde_json::json!({
            "store": status.store.as_str(), "state": status.state.as_str(),
            "reason": status.reason, "events": status.event_count,
        })
    );
    assert_eq!(status.state, StoreState::ReadOnly);
    assert!(status.reason.is_some());
    let refused = store
        .append_events(
            &small,
            &StreamId::new("fill-0").unwrap(),
            ExpectedVersion::Any,
            vec![event(failed_at)],
        )
        .await;
    assert!(
        matches!(refused, Err(Error::StorageFull { .. })),
        "{refused:?}"
    );
    // Reads are served; the other store shares the journal, so its next
    // append fails the same way and it is read-only too, its reads served.
    let first = store
        .read_all(&small, Position::START, 5, Direction::Forward)
        .await
        .unwrap();
    assert_eq!(first.len(), 5);
    let elsewhere = StreamId::new("elsewhere").unwrap();
    let shared = store
        .append_events(&big, &elsewhere, ExpectedVersion::Any, vec![event(0)])
        .await;
    assert!(
        matches!(shared, Err(Error::StorageFull { .. })),
        "{shared:?}"
    );
    assert_eq!(
        store.get_store_status(&big).await.unwrap().state,
        StoreState::ReadOnly
    );
    assert!(store
        .read_all(&big, Position::START, 5, Direction::Forward)
        .await
        .is_ok());

    tmpfs.grow();
    for id in [&small, &big] {
        let mut healed = false;
        for _ in 0..POLLS_MAX {
            if store.get_store_status(id).await.unwrap().state == StoreState::Running {
                healed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(healed, "store {id} heals without a restart");
    }
    store
        .append_events(&big, &elsewhere, ExpectedVersion::Any, vec![event(0)])
        .await
        .unwrap();
    let s = StreamId::new("after").unwrap();
    let e = event(failed_at);
    let result = store
        .append_events(&small, &s, ExpectedVersion::Any, vec![e.clone()])
        .await
        .unwrap();
    eprintln!(
        "{}",
        serde_json::json!({"stream": "after", "version": result.version, "position": result.position.0})
    );
    acked.insert(e.id, (s.to_string(), result.version));
    store.shutdown().await;

    // A final restart: every acknowledged event is there, versions dense.
    let store = Store::open(options(dir.path())).await.unwrap();
    let mut events = Vec::new();
    loop {
        let from = Position(events.len() as u64);
        let page = store
            .read_all(&small, from, 1_000, Direction::Forward)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position.0, i as u64, "positions are gapless");
        let next = versions.entry(e.stream.to_string()).or_insert(0);
        assert_eq!(e.version, *next, "versions of {} are dense", e.stream);
        *next += 1;
    }
    let found: BTreeMap<EventId, (String, u64)> = events
        .iter()
        .map(|e| (e.data.id, (e.stream.to_string(), e.version)))
        .collect();
    for (id, place) in &acked {
        assert_eq!(
            found.get(id),
            Some(place),
            "acknowledged event {id} is there"
        );
    }
    eprintln!(
        "after the restart: {} events, all {} acknowledged ones in place",
        events.len(),
        acked.len()
    );
    store.shutdown().await;
    drop(store);
    drop(tmpfs);
}
