//! Conformance cases for snapshots: record, overwrite, exact and latest
//! reads, listing filters, deletion and invalid input.

use gater_core::{Gater, Limits, Resource, SnapshotKey};

use super::support::{check, err, kind, new_store, ok, same};

/// Runs every snapshot case against `gater`.
pub async fn run(gater: &dyn Gater) {
    snapshots_record_overwrite_and_read_back(gater).await;
    snapshot_listing_filters_by_source_and_stream(gater).await;
    deleted_and_missing_snapshots_are_not_found(gater).await;
    invalid_snapshots_are_refused(gater).await;
}

fn key(source: &str, stream: &str, version: u64) -> SnapshotKey {
    SnapshotKey {
        source: source.to_owned(),
        stream: stream.to_owned(),
        version,
    }
}

async fn snapshots_record_overwrite_and_read_back(g: &dyn Gater) {
    let case = "snapshots_record_overwrite_and_read_back";
    let store = new_store(g, case).await;
    for version in [1, 5, 3] {
        let data = format!("{{\"v\":{version}}}").into_bytes();
        ok(
            case,
            g.record_snapshot(&store, key("cart", "cart-1", version), data)
                .await,
        );
    }
    let exact = ok(
        case,
        g.read_snapshot(&store, "cart", "cart-1", Some(3)).await,
    );
    same(case, "exact key", exact.key, key("cart", "cart-1", 3));
    same(case, "exact data", exact.data, b"{\"v\":3}".to_vec());
    check(case, "created_us is stamped", exact.created_us > 0);
    let latest = ok(case, g.read_snapshot(&store, "cart", "cart-1", None).await);
    same(case, "latest is the highest version", latest.key.version, 5);
    ok(
        case,
        g.record_snapshot(&store, key("cart", "cart-1", 3), b"new".to_vec())
            .await,
    );
    let again = ok(
        case,
        g.read_snapshot(&store, "cart", "cart-1", Some(3)).await,
    );
    same(case, "record overwrites", again.data, b"new".to_vec());
    let listed = ok(
        case,
        g.list_snapshots(&store, Some("cart"), Some("cart-1")).await,
    );
    same(case, "overwrite keeps one key", listed.len(), 3);
    ok(
        case,
        g.record_snapshot(&store, key("cart", "cart-1", 9), Vec::new())
            .await,
    );
    let empty = ok(case, g.read_snapshot(&store, "cart", "cart-1", None).await);
    same(
        case,
        "empty data round trip",
        (empty.key.version, empty.data),
        (9, Vec::new()),
    );
}

async fn snapshot_listing_filters_by_source_and_stream(g: &dyn Gater) {
    let case = "snapshot_listing_filters_by_source_and_stream";
    let store = new_store(g, case).await;
    let keys = [
        key("b-source", "s-1", 2),
        key("a-source", "s-2", 1),
        key("a-source", "s-1", 10),
        key("a-source", "s-1", 2),
        key("a-sourcex", "s-1", 0),
        key("a-source", "s-10", 0),
    ];
    for k in &keys {
        ok(
            case,
            g.record_snapshot(&store, k.clone(), b"{}".to_vec()).await,
        );
    }
    let mut sorted = keys.to_vec();
    sorted.sort();
    same(
        case,
        "all, in key order",
        ok(case, g.list_snapshots(&store, None, None).await),
        sorted.clone(),
    );
    let by_source: Vec<_> = sorted
        .iter()
        .filter(|k| k.source == "a-source")
        .cloned()
        .collect();
    let listed = ok(case, g.list_snapshots(&store, Some("a-source"), None).await);
    same(case, "by source", listed, by_source);
    let by_both: Vec<_> = sorted
        .iter()
        .filter(|k| k.source == "a-source" && k.stream == "s-1")
        .cloned()
        .collect();
    let listed = ok(
        case,
        g.list_snapshots(&store, Some("a-source"), Some("s-1"))
            .await,
    );
    same(case, "by source and stream", listed, by_both);
    let listed = ok(case, g.list_snapshots(&store, Some("nobody"), None).await);
    check(case, "an unknown source lists nothing", listed.is_empty());
}

async fn deleted_and_missing_snapshots_are_not_found(g: &dyn Gater) {
    let case = "deleted_and_missing_snapshots_are_not_found";
    let store = new_store(g, case).await;
    let k = key("order", "order-9", 4);
    ok(
        case,
        g.record_snapshot(&store, k.clone(), b"{}".to_vec()).await,
    );
    ok(case, g.delete_snapshot(&store, &k).await);
    for (what, result) in [
        (
            "exact read after delete",
            g.read_snapshot(&store, "order", "order-9", Some(4)).await,
        ),
        (
            "latest read after delete",
            g.read_snapshot(&store, "order", "order-9", None).await,
        ),
        (
            "missing version",
            g.read_snapshot(&store, "order", "order-1", Some(0)).await,
        ),
    ] {
        match err(case, result) {
            gater_core::Error::NotFound {
                resource: Resource::Snapshot,
                ..
            } => {}
            other => panic!("[{case}] {what}: expected snapshot not found, got {other:?}"),
        }
    }
    let e = err(case, g.delete_snapshot(&store, &k).await);
    kind(case, "deleting twice", &e, "not_found");
    let listed = ok(case, g.list_snapshots(&store, None, None).await);
    check(case, "nothing left", listed.is_empty());
}

async fn invalid_snapshots_are_refused(g: &dyn Gater) {
    let case = "invalid_snapshots_are_refused";
    let store = new_store(g, case).await;
    let long = "s".repeat(257);
    for (what, k) in [
        ("empty source", key("", "s", 0)),
        ("empty stream", key("src", "", 0)),
        ("source over 256 bytes", key(&long, "s", 0)),
        ("stream over 256 bytes", key("src", &long, 0)),
    ] {
        let e = err(case, g.record_snapshot(&store, k.clone(), Vec::new()).await);
        kind(case, what, &e, "invalid_argument");
        let e = err(
            case,
            g.read_snapshot(&store, &k.source, &k.stream, None).await,
        );
        kind(case, what, &e, "invalid_argument");
    }
    let too_big = vec![0u8; Limits::DEFAULT.snapshot_bytes_max as usize + 1];
    let e = err(
        case,
        g.record_snapshot(&store, key("src", "s", 0), too_big).await,
    );
    kind(case, "snapshot over the size limit", &e, "limit_exceeded");
    let listed = ok(case, g.list_snapshots(&store, None, None).await);
    check(case, "nothing recorded", listed.is_empty());
}
