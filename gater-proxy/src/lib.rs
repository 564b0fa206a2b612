//! The proxy: a highly available, load-balancing [`Gater`](gater_core::Gater)
//! over a pool of workers.
//!
//! [`Proxy`] implements the `Gater` API over workers reached through any
//! `Gater` client (QUIC in production, the in-memory transport in tests), so
//! proxies compose and a whole cluster runs in one process. It routes by
//! store with the core's routing policy, tracks in-flight requests and
//! latency per worker, ejects failing workers and re-admits them on
//! probation, retries where the policy says it is safe, places new stores,
//! aggregates cluster-wide answers, and relays subscriptions, moving
//! persistent consumers when their worker dies.
//!
//! What it does not do: it makes no routing decision of its own (every pick,
//! ejection and retry decision is `gater_core::routing`'s), holds no event
//! data, and opens no sockets: serving a proxy over QUIC is the transport's
//! job, and workers that join at run time are reached through a [`Connector`].

#![warn(missing_docs)]

mod proxy;

pub use proxy::{
    Connector, Proxy, ProxyBuilder, ProxyConfig, ProxyCounters, StorageMode,
    COMPACTION_DEADLINE_DEFAULT, CONSUMERS_MAX_DEFAULT, HEARTBEAT_TIMEOUT_DEFAULT,
    JOINS_MAX_DEFAULT, JOINS_PER_IDENTITY_MAX_DEFAULT, PROBE_INTERVAL_DEFAULT,
    PROBE_TIMEOUT_DEFAULT, REATTACH_MAX_DEFAULT, REFUSAL_LOG_INTERVAL, RELAY_QUEUE_LEN_DEFAULT,
    REMOVAL_TIMEOUT_DEFAULT, REQUEST_DEADLINE_DEFAULT, SEED_DEFAULT, WORKERS_MAX_DEFAULT,
    WORKER_ADDRESS_LEN_MAX, WORKER_ID_LEN_MAX, WORKER_IN_FLIGHT_MAX_DEFAULT, WORKER_STORES_MAX,
};
