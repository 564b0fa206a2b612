//! Access control: who may do what to which store.
//!
//! An identity is the name a server learned from the peer's certificate (its
//! subject's common name, or its first DNS name); no request field can claim
//! another. [`Access`] is a list of [`Grant`]s, each giving identities that
//! match a `*` glob a [`Role`] on the stores that match other globs. Roles
//! `reader` < `writer` < `admin` each include the one before; `worker` stands
//! apart and allows only `heartbeat`. The strongest matching grant wins;
//! anything not granted is refused with [`Error::PermissionDenied`].
//!
//! [`need`] is the one mapping from each wire [`Request`] to what it needs
//! (by its kind, [`need_of`], which also checks a request still encoded);
//! [`Access::check`] applies it, and [`Guarded`] puts the check in front of
//! any [`Gater`](crate::Gater) for one connection's identity (transports
//! build one per connection). With the `access-file` feature, `parse` reads
//! the TOML access file.
//!
//! What it does not do: it reads no file and no certificate; the caller hands
//! it text and identities.

#[cfg(feature = "access-file")]
mod file;
mod glob;
mod guard;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Side};
use crate::id::StoreId;
use crate::wire::{EncodedRequest, Request, RequestKind};

#[cfg(feature = "access-file")]
pub use file::{parse, AccessFileError};
pub use glob::{glob_matches, Glob};
pub use guard::{Gatekeeper, Guarded};

/// What an identity may do on the stores a grant names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads of any kind: events, streams, versions, store status and
    /// configuration, snapshots, transient subscriptions, subscription lists
    /// and parked events.
    Reader,
    /// Everything a reader may, and writes: appends, snapshots, persistent
    /// subscriptions (save, remove, subscribe, ack, nack, replay parked).
    Writer,
    /// Everything a writer may, and store administration (create, remove);
    /// with a grant on every store (`*`), cluster views (`workers`).
    Admin,
    /// Only `heartbeat`: a worker announcing itself to a proxy.
    Worker,
}

impl Role {
    /// Every role, weakest first (the `worker` role last).
    pub const ALL: [Role; 4] = [Role::Reader, Role::Writer, Role::Admin, Role::Worker];

    /// The role's name in access files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }

    /// Parses a role's name.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether holding `self` allows what `needed` allows.
    pub fn includes(self, needed: Role) -> bool {
        match (self, needed) {
            (Role::Worker, needed) => needed == Role::Worker,
            (_, Role::Worker) => false,
            (held, needed) => held >= needed,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule: identities matching `identity` hold `role` on stores matching any of `stores`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Which identities (a `*` glob).
    pub identity: Glob,
    /// Which stores (`*` globs); ignored for [`Role::Worker`].
    pub stores: Vec<Glob>,
    /// What they may do.
    pub role: Role,
}

/// A grant as an identity sees it (`whoami`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantView {
    /// The store globs.
    pub stores: Vec<String>,
    /// The role.
    pub role: Role,
}

/// The answer to `whoami`: the identity the server sees and its grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// The identity from the peer's certificate.
    pub identity: String,
    /// Every grant that matches it.
    pub grants: Vec<GrantView>,
}

/// What a request needs before it may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need<'a> {
    /// At least `role` on `store`.
    Store {
        /// The store.
        store: &'a StoreId,
        /// The weakest role that allows it.
        role: Role,
    },
    /// Admin on every store (a grant with the store glob `*`): cluster views.
    Cluster,
    /// The `worker` role.
    Worker,
    /// Anyone; the answer holds only the stores the identity may read.
    Listing,
    /// Anyone, granted or not.
    Anyone,
}

/// What `request` needs: the one mapping from requests to roles. A
/// transient subscription needs only reading; every other request what its
/// kind needs ([`need_of`]).
pub fn need(request: &Request) -> Need<'_> {
    match request {
        Request::Subscribe { store, key, .. } if key.is_transient() => Need::Store {
            store,
            role: Role::Reader,
        },
        _ => need_of(request.kind(), request.store()),
    }
}

/// What a request of `kind` about `store` needs (a subscription: as if
/// persistent). A store-scoped kind without its store needs the cluster grant.
pub fn need_of(kind: RequestKind, store: Option<&StoreId>) -> Need<'_> {
    use RequestKind as K;
    let role = match kind {
        K::GetEvents
        | K::ReadAll
        | K::GetStreams
        | K::GetVersion
        | K::GetSubscriptions
        | K::ListParked
        | K::ReadSnapshot
        | K::ListSnapshots
        | K::GetStoreStatus
        | K::GetStoreConfig
        | K::ReadQuery
        | K::StreamRetention => Role::Reader,
        K::AppendEvents
        | K::Append
        | K::SaveSubscription
        | K::Subscribe
        | K::RemoveSubscription
        | K::AckEvent
        | K::NackEvent
        | K::ReplayParked
        | K::RecordSnapshot
        | K::DeleteSnapshot
        | K::DeleteStream
        | K::TombstoneStream
        | K::TruncateStream
        | K::SetStreamRetention => Role::Writer,
        K::CreateStore | K::RemoveStore | K::ReopenStore | K::VerifyStore | K::CompactStore => {
            Role::Admin
        }
        K::Workers => return Need::Cluster,
        K::Heartbeat => return Need::Worker,
        K::ListStores => return Need::Listing,
        K::Whoami => return Need::Anyone,
    };
    match store {
        Some(store) => Need::Store { store, role },
        None => Need::Cluster,
    }
}

/// The rules a server enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    grants: Vec<Grant>,
    open: bool,
}

impl Access {
    /// Rules of exactly `grants`: anything not granted is refused.
    pub fn new(grants: Vec<Grant>) -> Self {
        Access {
            grants,
            open: false,
        }
    }

    /// The rules without an access file: every identity is admin on every
    /// store and may heartbeat as a worker.
    pub fn open() -> Self {
        let any = || Glob::new("*");
        Access {
            grants: vec![
                Grant {
                    identity: any(),
                    stores: vec![any()],
                    role: Role::Admin,
                },
                Grant {
                    identity: any(),
                    stores: vec![any()],
                    role: Role::Worker,
                },
            ],
            open: true,
        }
    }

    /// Whether these are the rules of [`Access::open`].
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The grants, in file order.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    fn matching<'a>(&'a self, identity: &'a str) -> impl Iterator<Item = &'a Grant> + 'a {
        self.grants
            .iter()
            .filter(move |g| g.identity.matches(identity))
    }

    /// The strongest of `reader`, `writer`, `admin` that `identity` holds on `store`.
    pub fn role_on(&self, identity: &str, store: &str) -> Option<Role> {
        self.matching(identity)
            .filter(|g| g.role != Role::Worker)
            .filter(|g| g.stores.iter().any(|s| s.matches(store)))
            .map(|g| g.role)
            .max()
    }

    /// Whether `identity` may read `store` (and so sees it in `list_stores`).
    pub fn may_read(&self, identity: &str, store: &str) -> bool {
        self.role_on(identity, store)
            .is_some_and(|r| r.includes(Role::Reader))
    }

    /// Whether `request` from `identity` is allowed; the refusal names the
    /// identity, the method, the store and `side`, the server refusing it.
    pub fn check(&self, identity: &str, request: &Request, side: Side) -> Result<(), Error> {
        self.allow(
            identity,
            need(request),
            request.kind(),
            request.store(),
            side,
        )
    }

    /// [`Access::check`] for a request still encoded, by its head (a
    /// subscription is checked as if persistent).
    pub fn check_encoded(
        &self,
        identity: &str,
        request: &EncodedRequest,
        side: Side,
    ) -> Result<(), Error> {
        let need = need_of(request.kind(), request.store());
        self.allow(identity, need, request.kind(), request.store(), side)
    }

    fn allow(
        &self,
        identity: &str,
        need: Need<'_>,
        kind: RequestKind,
        store: Option<&StoreId>,
        side: Side,
    ) -> Result<(), Error> {
        // The open rules grant every identity admin on every store and the
        // worker role, so every need is met: no glob to match per request.
        if self.open {
            return Ok(());
        }
        let allowed = match need {
            Need::Store { store, role } => self
                .role_on(identity, store.as_str())
                .is_some_and(|held| held.includes(role)),
            Need::Cluster => self
                .matching(identity)
                .any(|g| g.role == Role::Admin && g.stores.iter().any(|s| s.as_str() == "*")),
            Need::Worker => self.matching(identity).any(|g| g.role == Role::Worker),
            Need::Listing | Need::Anyone => true,
        };
        if allowed {
            return Ok(());
        }
        Err(Error::PermissionDenied {
            identity: identity.to_owned(),
            action: kind.method().to_owned(),
            store: store.map(|s| s.as_str().to_owned()),
            side,
        })
    }

    /// What `whoami` answers for `identity`.
    pub fn whoami(&self, identity: &str) -> Whoami {
        Whoami {
            identity: identity.to_owned(),
            grants: self
                .matching(identity)
                .map(|g| GrantView {
                    stores: g.stores.iter().map(|s| s.as_str().to_owned()).collect(),
                    role: g.role,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(identity: &str, stores: &[&str], role: Role) -> Grant {
        Grant {
            identity: Glob::new(identity),
            stores: stores.iter().map(|s| Glob::new(*s)).collect(),
            role,
        }
    }

    fn store(id: &str) -> StoreId {
        StoreId::new(id).unwrap()
    }

    #[test]
    fn roles_include_the_weaker_ones_and_worker_stands_apart() {
        use Role::*;
        assert!(Admin.includes(Writer) && Admin.includes(Reader) && Writer.includes(Reader));
        assert!(!Reader.includes(Writer) && !Writer.includes(Admin));
        assert!(!Admin.includes(Worker) && !Worker.includes(Reader));
        assert!(Worker.includes(Worker));
    }

    #[test]
    fn the_strongest_matching_grant_wins() {
        let access = Access::new(vec![
            grant("billing", &["orders"], Role::Reader),
            grant("bill*", &["orders", "invoices-*"], Role::Writer),
            grant("*", &["public"], Role::Reader),
        ]);
        assert_eq!(access.role_on("billing", "orders"), Some(Role::Writer));
        assert_eq!(
            access.role_on("billing", "invoices-2026"),
            Some(Role::Writer)
        );
        assert_eq!(access.role_on("billing", "public"), Some(Role::Reader));
        assert_eq!(access.role_on("billing", "secrets"), None);
        assert_eq!(access.role_on("ops", "orders"), None);
    }

    #[test]
    fn refusals_name_identity_action_store_and_side() {
        let access = Access::new(vec![grant("a", &["s"], Role::Reader)]);
        let append = Request::AppendEvents {
            store: store("s"),
            stream: crate::StreamId::new("x").unwrap(),
            expected: crate::ExpectedVersion::Any,
            events: Vec::new(),
        };
        let err = access.check("a", &append, Side::Proxy).unwrap_err();
        assert_eq!(
            err.to_string(),
            "permission denied: a may not append_events on store s"
        );
        assert_eq!(err.kind(), "permission_denied");
        assert!(!err.is_retryable());
        assert_eq!(err.side(), Some(Side::Proxy));
    }

    #[test]
    fn heartbeats_need_the_worker_role_and_admins_do_not_have_it() {
        let access = Access::new(vec![
            grant("ops", &["*"], Role::Admin),
            grant("worker-*", &[], Role::Worker),
        ]);
        let hb = Request::Heartbeat {
            worker: crate::WorkerInfo {
                id: "w".into(),
                address: "a:1".into(),
                health: crate::WorkerHealth::Healthy,
                in_flight: 0,
                latency_us: 0,
                stores: Vec::new(),
                shared_storage: true,
                faults: Vec::new(),
            },
        };
        assert!(access.check("worker-1", &hb, Side::Proxy).is_ok());
        assert!(access.check("ops", &hb, Side::Proxy).is_err());
        assert!(access.check("ops", &Request::Workers, Side::Proxy).is_ok());
        assert!(access
            .check("worker-1", &Request::Workers, Side::Proxy)
            .is_err());
    }

    #[test]
    fn cluster_views_need_admin_on_every_store() {
        let access = Access::new(vec![grant("team", &["team-*"], Role::Admin)]);
        assert!(access
            .check("team", &Request::Workers, Side::Proxy)
            .is_err());
        let create = Request::CreateStore {
            store: store("team-a"),
            config: crate::StoreConfig::default(),
        };
        assert!(access.check("team", &create, Side::Proxy).is_ok());
    }

    #[test]
    fn whoami_lists_every_matching_grant() {
        let access = Access::new(vec![
            grant("billing", &["orders"], Role::Writer),
            grant("ops", &["*"], Role::Admin),
        ]);
        let me = access.whoami("billing");
        assert_eq!(me.identity, "billing");
        assert_eq!(
            me.grants,
            vec![GrantView {
                stores: vec!["orders".into()],
                role: Role::Writer
            }]
        );
        assert!(access.whoami("nobody").grants.is_empty());
        assert!(access
            .check("nobody", &Request::Whoami, Side::Proxy)
            .is_ok());
    }

    #[test]
    fn open_access_allows_every_request_its_grants_allow() {
        let open = Access::open();
        let same_grants = Access::new(open.grants().to_vec());
        let store = StoreId::new("orders").unwrap();
        // Every kind: a kind is encoded as its index.
        let kinds = (0..=u8::MAX).filter_map(|i| postcard::from_bytes::<RequestKind>(&[i]).ok());
        let mut checked = 0;
        for kind in kinds {
            let store = kind.has_store().then_some(&store);
            let need = need_of(kind, store);
            for identity in ["anyone", "worker-1", ""] {
                let by_grants = same_grants.allow(identity, need, kind, store, Side::Proxy);
                assert!(by_grants.is_ok(), "{kind:?}: {by_grants:?}");
                assert_eq!(
                    open.allow(identity, need, kind, store, Side::Proxy),
                    by_grants
                );
            }
            checked += 1;
        }
        assert!(checked > 20, "only {checked} request kinds");
    }

    #[test]
    fn open_access_makes_everyone_admin_and_worker() {
        let access = Access::open();
        assert!(access.is_open());
        assert_eq!(access.role_on("anyone", "any"), Some(Role::Admin));
        assert!(access.check("x", &Request::Workers, Side::Proxy).is_ok());
    }
}
