//! What the adapter's tests run against: an embedded store, the same behind
//! the in-memory transport (codec mode, so every message crosses the wire
//! format), and a proxy over two workers; plus `Gater` wrappers that hold
//! appends at a barrier and watch reads.

#![allow(dead_code, unreachable_pub)] // a kit shared by test binaries, each using a part

#[path = "../../examples/support/bank_account.rs"]
pub mod bank_account;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gater_core::wire::{Request, Response};
use gater_core::{
    BoxGater, Error, Gater, StoreConfig, StoreId, SubscribeOptions, Subscription, SubscriptionKey,
};
use gater_proxy::{Proxy, ProxyConfig, StorageMode};
use gater_store::{Store, StoreOptions};
use gater_transport_mem::{serve_with, MemOptions, MemServer};
use tempfile::TempDir;

/// A store config for tests: no fsync (these tests check the adapter, not durability).
pub const FAST: StoreConfig = StoreConfig {
    fsync: false,
    group_commit: true,
    retention: gater_core::Retention::NONE,
};

/// Where a test's `Gater` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// The embedded store, called directly.
    Embedded,
    /// The embedded store behind the in-memory transport.
    Mem,
    /// A proxy over two workers, each an embedded store behind the in-memory transport.
    Proxy,
}

/// Every setup, for tests that run against each.
pub const SETUPS: [Setup; 3] = [Setup::Embedded, Setup::Mem, Setup::Proxy];

/// A `Gater` with a created store, and what keeps it alive.
pub struct Harness {
    pub gater: BoxGater,
    pub store: StoreId,
    servers: Vec<MemServer>,
    dirs: Vec<TempDir>,
}

impl Harness {
    pub async fn new(setup: Setup) -> Harness {
        let mut dirs = Vec::new();
        let mut servers = Vec::new();
        let gater: BoxGater = match setup {
            Setup::Embedded => Arc::new(open_store(&mut dirs, "w0").await),
            Setup::Mem => Arc::new(served(&mut servers, open_store(&mut dirs, "w0").await)),
            Setup::Proxy => {
                let mut builder = Proxy::builder().config(ProxyConfig {
                    storage: StorageMode::Embedded,
                    ..ProxyConfig::default()
                });
                for id in ["w0", "w1"] {
                    let store = open_store(&mut dirs, id).await;
                    let client = served(&mut servers, store);
                    builder = builder.worker(id, format!("mem:{id}"), Arc::new(client));
                }
                Arc::new(builder.build().await.expect("the proxy builds"))
            }
        };
        let store = StoreId::new("bank").expect("a valid store id");
        gater
            .create_store(&store, FAST)
            .await
            .expect("the store is created");
        Harness {
            gater,
            store,
            servers,
            dirs,
        }
    }
}

async fn open_store(dirs: &mut Vec<TempDir>, worker_id: &str) -> Store {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut options = StoreOptions::new(dir.path());
    options.worker_id = worker_id.to_owned();
    dirs.push(dir);
    Store::open(options).await.expect("the store opens")
}

fn served(servers: &mut Vec<MemServer>, store: Store) -> gater_transport_mem::MemClient {
    let server = serve_with(
        store,
        MemOptions {
            codec: true,
            ..MemOptions::default()
        },
    );
    let client = server.client();
    servers.push(server);
    client
}

/// Holds every append until `parties` appends wait, then lets them all go:
/// commands that race to commit reach the store together, whatever the scheduling.
pub struct Gated {
    inner: BoxGater,
    barrier: tokio::sync::Barrier,
}

impl Gated {
    pub fn new(inner: BoxGater, parties: usize) -> Gated {
        Gated {
            inner,
            barrier: tokio::sync::Barrier::new(parties),
        }
    }
}

#[async_trait]
impl Gater for Gated {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        if matches!(request, Request::AppendEvents { .. }) {
            self.barrier.wait().await;
        }
        self.inner.call(request, within).await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.inner.subscribe(store, key, options).await
    }
}

/// Counts what global-log reads ask for and return.
#[derive(Debug, Default)]
pub struct LogReads {
    /// `read_all` calls.
    pub calls: AtomicU64,
    /// Events returned by them in all.
    pub events: AtomicU64,
    /// The largest `count` asked for.
    pub count_max: AtomicU64,
    /// Events the test has taken from the replay so far (the test counts them).
    pub consumed: AtomicU64,
    /// The most events read from the log but not yet taken by the test, seen
    /// right after each read: what the replay held in memory at most.
    pub ahead_max: AtomicU64,
}

/// Passes everything on, counting `read_all`s in [`LogReads`].
pub struct Watched {
    inner: BoxGater,
    pub reads: Arc<LogReads>,
}

impl Watched {
    pub fn new(inner: BoxGater) -> Watched {
        Watched {
            inner,
            reads: Arc::default(),
        }
    }
}

#[async_trait]
impl Gater for Watched {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        let log_read = match &request {
            Request::ReadAll { count, .. } => {
                self.reads
                    .count_max
                    .fetch_max(u64::from(*count), Ordering::SeqCst);
                true
            }
            _ => false,
        };
        let response = self.inner.call(request, within).await?;
        if let (true, Response::Events(events)) = (log_read, &response) {
            self.reads.calls.fetch_add(1, Ordering::SeqCst);
            let read = self
                .reads
                .events
                .fetch_add(events.len() as u64, Ordering::SeqCst)
                + events.len() as u64;
            let consumed = self.reads.consumed.load(Ordering::SeqCst);
            self.reads
                .ahead_max
                .fetch_max(read.saturating_sub(consumed), Ordering::SeqCst);
        }
        Ok(response)
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.inner.subscribe(store, key, options).await
    }
}

/// Applies the first append but answers it with a retryable `Unavailable`,
/// as when the answer is lost on the way back; passes everything else on.
pub struct LoseFirstAppendAnswer {
    inner: BoxGater,
    lost: std::sync::atomic::AtomicBool,
}

impl LoseFirstAppendAnswer {
    pub fn new(inner: BoxGater) -> LoseFirstAppendAnswer {
        LoseFirstAppendAnswer {
            inner,
            lost: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Gater for LoseFirstAppendAnswer {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        let append = matches!(request, Request::AppendEvents { .. });
        let response = self.inner.call(request, within).await?;
        if append && !self.lost.swap(true, Ordering::SeqCst) {
            return Err(Error::unavailable(
                gater_core::Side::Worker,
                "the answer was lost",
            ));
        }
        Ok(response)
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.inner.subscribe(store, key, options).await
    }
}

/// Refuses every `record_snapshot` with a storage error; passes everything else on.
pub struct RefuseSnapshots {
    inner: BoxGater,
}

impl RefuseSnapshots {
    pub fn new(inner: BoxGater) -> RefuseSnapshots {
        RefuseSnapshots { inner }
    }
}

#[async_trait]
impl Gater for RefuseSnapshots {
    async fn call(&self, request: Request, within: Option<Duration>) -> Result<Response, Error> {
        if matches!(request, Request::RecordSnapshot { .. }) {
            return Err(Error::Storage("the disk is full".to_owned()));
        }
        self.inner.call(request, within).await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.inner.subscribe(store, key, options).await
    }
}
