//! The role matrix: every request × every role, through a server that holds
//! its clients to [`matrix_access`], allowed or `permission_denied`.
//!
//! The expected outcome of each request is written out here, from the roles
//! the access model promises (reader: reads and transient subscriptions;
//! writer: + appends, snapshots and persistent subscriptions; admin: + store
//! administration and cluster views; worker: only heartbeats; anyone:
//! `list_stores`, filtered, and `whoami`), independently of the mapping in
//! `gater_core::access`, so the two check each other.
//!
//! A transport runs it by serving a `Store` guarded by [`matrix_access`] and
//! handing [`run`] a way to connect as an identity.

use std::future::Future;
use std::pin::Pin;

use gater_core::access::{Access, Glob, Grant, Role};
use gater_core::wire::Request;
use gater_core::{
    BoxGater, Direction, Error, ExpectedVersion, Gater, Position, SnapshotKey, StoreId,
    SubscribeOptions, SubscriptionKey, SubscriptionSpec, SubscriptionType, WorkerHealth,
    WorkerInfo,
};

use crate::conformance::support::{event, ok, stream, CONFIG};

/// The store every role is granted on.
pub const STORE: &str = "matrix";
/// A second granted store: created and removed by the admin case.
pub const DOOMED: &str = "matrix-doomed";
/// A store nobody but the admin is granted.
pub const OTHER: &str = "other";
/// The identities, one per role, and one without a grant.
pub const READER: &str = "matrix-reader";
/// Holds `writer` on the matrix stores.
pub const WRITER: &str = "matrix-writer";
/// Holds `admin` on every store.
pub const ADMIN: &str = "matrix-admin";
/// Holds only `worker`.
pub const WORKER: &str = "matrix-worker";
/// Holds nothing.
pub const NOBODY: &str = "matrix-nobody";

/// The rules the server under test enforces.
pub fn matrix_access() -> Access {
    let grant = |identity: &str, stores: &[&str], role| Grant {
        identity: Glob::new(identity),
        stores: stores.iter().map(|s| Glob::new(*s)).collect(),
        role,
    };
    Access::new(vec![
        grant(READER, &[STORE, "matrix-*"], Role::Reader),
        grant(WRITER, &[STORE, "matrix-*"], Role::Writer),
        grant(ADMIN, &["*"], Role::Admin),
        grant(WORKER, &[], Role::Worker),
    ])
}

/// Connects to the server under test as an identity.
pub type Connect<'a> = &'a (dyn Fn(&str) -> Pin<Box<dyn Future<Output = BoxGater> + Send>> + Sync);

/// What a request needs, as the access model promises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Role(Role),
    Anyone,
}

/// The promise for each request kind; the match has no wildcard, so a new
/// request does not compile until its row is written.
fn expected(request: &Request) -> Expect {
    use Expect::{Anyone, Role as R};
    use Request as Q;
    match request {
        Q::GetEvents { .. }
        | Q::ReadAll { .. }
        | Q::GetStreams { .. }
        | Q::GetVersion { .. }
        | Q::GetSubscriptions { .. }
        | Q::ListParked { .. }
        | Q::ReadSnapshot { .. }
        | Q::ListSnapshots { .. }
        | Q::GetStoreStatus { .. }
        | Q::GetStoreConfig { .. }
        | Q::ReadQuery { .. }
        | Q::StreamRetention { .. } => R(Role::Reader),
        Q::Subscribe { key, .. } if key.is_transient() => R(Role::Reader),
        Q::Subscribe { .. }
        | Q::AppendEvents { .. }
        | Q::Append { .. }
        | Q::SaveSubscription { .. }
        | Q::RemoveSubscription { .. }
        | Q::AckEvent { .. }
        | Q::NackEvent { .. }
        | Q::ReplayParked { .. }
        | Q::RecordSnapshot { .. }
        | Q::DeleteSnapshot { .. }
        | Q::DeleteStream { .. }
        | Q::TombstoneStream { .. }
        | Q::TruncateStream { .. }
        | Q::SetStreamRetention { .. } => R(Role::Writer),
        Q::CreateStore { .. }
        | Q::RemoveStore { .. }
        | Q::ReopenStore { .. }
        | Q::VerifyStore { .. }
        | Q::CompactStore { .. }
        | Q::Workers => R(Role::Admin),
        Q::Heartbeat { .. } => R(Role::Worker),
        Q::ListStores | Q::Whoami => Anyone,
    }
}

fn id(s: &str) -> StoreId {
    StoreId::new(s).unwrap_or_else(|e| panic!("[role matrix] store id {s:?}: {e}"))
}

fn persistent() -> SubscriptionKey {
    SubscriptionKey::new(SubscriptionType::ByStream, "$all", "matrix-group")
        .unwrap_or_else(|e| panic!("[role matrix] key: {e}"))
}

/// One request of every kind, in an order where each can succeed for a
/// role that holds it (create before remove, save before subscribe).
fn samples() -> Vec<Request> {
    let store = id(STORE);
    let snapshot = SnapshotKey {
        source: "matrix".into(),
        stream: "s".into(),
        version: 0,
    };
    vec![
        Request::Whoami,
        Request::ListStores,
        Request::GetEvents {
            store: store.clone(),
            stream: stream("s"),
            start: 0,
            count: 10,
            direction: Direction::Forward,
        },
        Request::ReadAll {
            store: store.clone(),
            from: Position(0),
            count: 10,
            direction: Direction::Forward,
        },
        Request::GetStreams {
            store: store.clone(),
            after: None,
            limit: 10,
        },
        Request::GetVersion {
            store: store.clone(),
            stream: stream("s"),
        },
        Request::GetStoreStatus {
            store: store.clone(),
        },
        Request::GetStoreConfig {
            store: store.clone(),
        },
        Request::AppendEvents {
            store: store.clone(),
            stream: stream("s"),
            expected: ExpectedVersion::Any,
            events: vec![event("Matrix", 1)],
        },
        Request::ReadQuery {
            store: store.clone(),
            query: gater_core::Query::item(vec!["Matrix".into()], vec![]),
            from: Position(0),
            count: 10,
            direction: Direction::Forward,
        },
        Request::Append {
            store: store.clone(),
            append: gater_core::Append::single(
                stream("t"),
                ExpectedVersion::Any,
                vec![event("Matrix", 2).with_tags(vec!["matrix:1".into()])],
            )
            .with_condition(gater_core::AppendCondition {
                fail_if_events_match: gater_core::Query::item(vec![], vec!["matrix:none".into()]),
                after: None,
            }),
        },
        Request::RecordSnapshot {
            store: store.clone(),
            key: snapshot.clone(),
            data: b"state".to_vec(),
        },
        Request::ReadSnapshot {
            store: store.clone(),
            source: "matrix".into(),
            stream: "s".into(),
            version: None,
        },
        Request::ListSnapshots {
            store: store.clone(),
            source: None,
            stream: None,
        },
        Request::DeleteSnapshot {
            store: store.clone(),
            key: snapshot,
        },
        Request::SaveSubscription {
            store: store.clone(),
            spec: SubscriptionSpec::new(persistent()),
        },
        Request::Subscribe {
            store: store.clone(),
            key: SubscriptionKey::stream(&stream("s")),
            options: SubscribeOptions::default(),
        },
        Request::Subscribe {
            store: store.clone(),
            key: persistent(),
            options: SubscribeOptions::default(),
        },
        Request::GetSubscriptions {
            store: store.clone(),
        },
        Request::AckEvent {
            store: store.clone(),
            key: persistent(),
            consumer: gater_core::ConsumerId(u128::MAX),
            position: Position(0),
        },
        Request::NackEvent {
            store: store.clone(),
            key: persistent(),
            consumer: gater_core::ConsumerId(u128::MAX),
            position: Position(0),
            action: gater_core::NackAction::Retry,
        },
        Request::ListParked {
            store: store.clone(),
            key: persistent(),
        },
        Request::ReplayParked {
            store: store.clone(),
            key: persistent(),
        },
        Request::RemoveSubscription {
            store: store.clone(),
            key: persistent(),
        },
        Request::StreamRetention {
            store: store.clone(),
            stream: stream("matrix-kept"),
        },
        Request::SetStreamRetention {
            store: store.clone(),
            stream: stream("matrix-kept"),
            retention: gater_core::Retention {
                max_count: Some(5),
                max_age_s: None,
            },
        },
        Request::TruncateStream {
            store: store.clone(),
            stream: stream("matrix-kept"),
            before: 1,
        },
        Request::DeleteStream {
            store: store.clone(),
            stream: stream("matrix-deleted"),
            expected: ExpectedVersion::Any,
        },
        Request::TombstoneStream {
            store: store.clone(),
            stream: stream("matrix-tombstoned"),
            expected: ExpectedVersion::Any,
        },
        Request::CompactStore {
            store: store.clone(),
        },
        Request::VerifyStore {
            store: store.clone(),
        },
        Request::ReopenStore {
            store: store.clone(),
        },
        Request::CreateStore {
            store: id(DOOMED),
            config: CONFIG,
        },
        Request::RemoveStore { store: id(DOOMED) },
        Request::Workers,
        Request::Heartbeat {
            worker: WorkerInfo {
                id: "matrix-fake".into(),
                address: "127.0.0.1:1".into(),
                health: WorkerHealth::Healthy,
                in_flight: 0,
                latency_us: 0,
                stores: Vec::new(),
                shared_storage: true,
                faults: Vec::new(),
            },
        },
    ]
}

fn holds(role: Option<Role>, expect: Expect) -> bool {
    match (role, expect) {
        (_, Expect::Anyone) => true,
        (None, _) => false,
        (Some(held), Expect::Role(needed)) => held.includes(needed),
    }
}

/// Sends one request the way a client would: subscriptions through `subscribe`.
async fn send(gater: &dyn Gater, request: Request) -> Result<(), Error> {
    match request {
        Request::Subscribe {
            store,
            key,
            options,
        } => gater.subscribe(&store, key, options).await.map(drop),
        other => gater.call(other, None).await.map(drop),
    }
}

/// What a refused request must not have changed: the store's log and the store list.
async fn state(admin: &dyn Gater) -> (Option<Position>, Vec<String>) {
    let head = ok(
        "role matrix: status",
        admin.get_store_status(&id(STORE)).await,
    )
    .head;
    let mut stores: Vec<String> = ok("role matrix: list", admin.list_stores().await)
        .into_iter()
        .map(|s| s.store.as_str().to_owned())
        .collect();
    stores.sort();
    (head, stores)
}

/// Runs the matrix against the server `connect` reaches, which must hold its
/// clients to [`matrix_access`]. Creates the stores [`STORE`] and [`OTHER`].
pub async fn run(connect: Connect<'_>) {
    let admin = connect(ADMIN).await;
    for store in [STORE, OTHER] {
        ok(
            "role matrix: setup",
            admin.create_store(&id(store), CONFIG).await,
        );
    }
    let roles = [
        (NOBODY, None),
        (WORKER, Some(Role::Worker)),
        (READER, Some(Role::Reader)),
        (WRITER, Some(Role::Writer)),
        (ADMIN, Some(Role::Admin)),
    ];
    for (identity, role) in roles {
        let client = connect(identity).await;
        for request in samples() {
            let method = request.method();
            let case = format!("role matrix: {identity} {method}");
            let allowed = holds(role, expected(&request));
            let before = state(&*admin).await;
            let result = send(&*client, request).await;
            match (allowed, result) {
                (true, Err(Error::PermissionDenied { .. })) => {
                    panic!("[{case}] refused, but the role allows it")
                }
                (true, _) => {}
                (
                    false,
                    Err(Error::PermissionDenied {
                        identity: who,
                        action,
                        ..
                    }),
                ) => {
                    assert_eq!(
                        (who.as_str(), action.as_str()),
                        (identity, method),
                        "[{case}]"
                    );
                    assert_eq!(
                        state(&*admin).await,
                        before,
                        "[{case}] a refusal changed state"
                    );
                }
                (false, other) => panic!("[{case}] allowed without a grant: {other:?}"),
            }
        }
    }
    listing_is_filtered(connect).await;
    consumers_are_bound_to_their_identity(connect, &*admin).await;
}

async fn listing_is_filtered(connect: Connect<'_>) {
    for (identity, sees_other) in [(READER, false), (NOBODY, false), (ADMIN, true)] {
        let client = connect(identity).await;
        let case = format!("role matrix: {identity} list_stores");
        let names: Vec<String> = ok(&case, client.list_stores().await)
            .into_iter()
            .map(|s| s.store.as_str().to_owned())
            .collect();
        assert_eq!(
            names.iter().any(|n| n == OTHER),
            sees_other,
            "[{case}] {names:?}"
        );
        assert_eq!(
            names.iter().any(|n| n == STORE),
            identity != NOBODY,
            "[{case}] {names:?}"
        );
        let me = ok(&case, client.whoami().await);
        assert_eq!(me.identity, identity, "[{case}] whoami");
    }
}

async fn consumers_are_bound_to_their_identity(connect: Connect<'_>, admin: &dyn Gater) {
    let case = "role matrix: consumer binding";
    let store = id(STORE);
    ok(
        case,
        admin
            .save_subscription(&store, SubscriptionSpec::new(persistent()))
            .await,
    );
    let writer = connect(WRITER).await;
    let sub = ok(
        case,
        writer
            .subscribe(&store, persistent(), SubscribeOptions::default())
            .await,
    );
    let stolen = admin
        .ack_event(&store, &persistent(), sub.consumer(), Position(0))
        .await;
    assert!(
        matches!(stolen, Err(Error::PermissionDenied { .. })),
        "[{case}] another identity acked: {stolen:?}"
    );
    let own = writer
        .ack_event(&store, &persistent(), sub.consumer(), Position(0))
        .await;
    assert!(
        !matches!(own, Err(Error::PermissionDenied { .. })),
        "[{case}] the owner was refused: {own:?}"
    );
    drop(sub);
}
