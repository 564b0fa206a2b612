//! A fixed amount of append work for instruction counting:
//! `cargo xtask profile-append` runs this under callgrind and divides the
//! instructions of the writer's batch commits (and of the whole process) by
//! the appends made.
//!
//! 64 concurrent appenders, one 256-byte event per append, expected version
//! `Any`, spread over 1,000 streams, fsync and group commit on: the shape of
//! the W1 benchmark. `PROFILE_APPENDS` sets the number of appends (default
//! 20,000). With `PROFILE_CONDITIONAL=1` each appender's events carry its
//! own tag and each append is conditional on no event with that tag after
//! the appender's last append: the shape of W7. Prints `appends: N` for the
//! caller to divide by.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gater_core::{
    Append, AppendCondition, EventData, EventId, ExpectedVersion, Gater, Query, StoreConfig,
    StoreId, StreamId,
};
use gater_store::{Store, StoreOptions};

/// Concurrent appenders.
const APPENDERS: u64 = 64;
/// Streams the appends are spread over.
const STREAMS: u64 = 1_000;
/// Bytes of each event's data.
const EVENT_BYTES: usize = 256;
/// Appends made when `PROFILE_APPENDS` is not set.
const APPENDS_DEFAULT: u64 = 20_000;

fn main() {
    let appends: u64 = std::env::var("PROFILE_APPENDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(APPENDS_DEFAULT);
    let conditional = std::env::var("PROFILE_CONDITIONAL").is_ok_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(StoreOptions::new(dir.path()))
            .await
            .expect("open store");
        let id = StoreId::new("profile").expect("store id");
        let config = StoreConfig {
            fsync: true,
            group_commit: true,
            retention: gater_core::Retention::NONE,
        };
        store.create_store(&id, config).await.expect("create store");
        let next = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..APPENDERS)
            .map(|appender| {
                let (store, id, next) = (store.clone(), id.clone(), next.clone());
                tokio::spawn(async move {
                    let tag = format!("tag-{appender}");
                    let mine = Query::item(Vec::new(), vec![tag.clone()]);
                    let mut last = None;
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= appends {
                            break;
                        }
                        let stream =
                            StreamId::new(format!("stream-{}", n % STREAMS)).expect("stream id");
                        if !conditional {
                            store
                                .append_events(&id, &stream, ExpectedVersion::Any, vec![event(n)])
                                .await
                                .expect("append");
                            continue;
                        }
                        let tagged = event(n).with_tags(vec![tag.clone()]);
                        let append = Append::single(stream, ExpectedVersion::Any, vec![tagged])
                            .with_condition(AppendCondition {
                                fail_if_events_match: mine.clone(),
                                after: last,
                            });
                        let outcome = store.append(&id, append).await.expect("append");
                        last = Some(outcome.position);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("appender");
        }
        store.shutdown().await;
    });
    println!("appends: {appends}");
}

fn event(n: u64) -> EventData {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8] = 0xbe;
    EventData {
        id: EventId::from_bytes(id),
        event_type: "BenchEvent".to_owned(),
        data: vec![b'x'; EVENT_BYTES],
        metadata: Vec::new(),
        content_type: "application/octet-stream".to_owned(),
        tags: Vec::new(),
    }
}
