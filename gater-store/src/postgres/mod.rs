//! The PostgreSQL backend: stores in a shared database, so any number of
//! stateless workers serve every store and a store survives the loss of any
//! worker.
//!
//! Layout: the catalog table `gater.stores` lists every store with its
//! schema and configuration; each store is one schema (`gs_<store id>`,
//! shortened with a hash past PostgreSQL's 63-byte identifier limit) holding
//! `head` (one row: the next position, the stream count and the lifecycle
//! generation), `events` (the global log: unique `(stream, version)`, unique
//! event id), `streams` (each stream's version), `lifecycles` and
//! `compacted_ids` (see `lifecycle`), `snapshots` and `subscriptions`. Creating a store
//! writes the schema, its tables and the catalog row in one transaction.
//!
//! Ordering across workers: an append transaction first locks the store's
//! head row (`SELECT … FOR UPDATE`), so commits of one store are serialised
//! whichever worker makes them; positions are allocated under that lock and
//! therefore commit, and become visible, in order and without gaps. A
//! batch is one transaction: all of it commits or none.
//!
//! What it does not do: no LISTEN/NOTIFY (other workers' commits are found by
//! polling the head row, see `BackendStore::head_poll_interval`), no TLS to
//! the database (reach it over a trusted network or a local socket), no
//! schema migrations beyond creating what is missing.

mod append;
mod error;
mod lifecycle;
mod pool;
mod query;
mod store;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gater_core::{Error, Resource, StoreConfig, StoreId};

use crate::backend::{Backend, BackendStore, Counters};
pub use error::redact_url;
use error::{map_error, Redactor};
use pool::{Pool, PoolConfig, Pooled};
use store::{column, PostgresStore};

/// Key of the advisory lock that serialises catalog changes across workers.
const CATALOG_LOCK: i64 = 0x6761_7465_725f_6361; // "gater_ca"
/// Prefix of every store's schema.
const SCHEMA_PREFIX: &str = "gs_";
/// PostgreSQL's longest identifier, in bytes.
const IDENTIFIER_LEN_MAX: usize = 63;
/// Slack on top of the statement timeout before the client gives up on an
/// answer itself (a silent network never answers at all).
const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// How a worker reaches its PostgreSQL database.
#[derive(Clone)]
pub struct PostgresOptions {
    /// Connection URL (`postgres://user:password@host:port/db`) or key-value string.
    pub url: String,
    /// Most connections this worker opens.
    pub pool_size: u32,
    /// Longest wait for a free connection before `Overloaded`, milliseconds.
    pub acquire_timeout_ms: u64,
    /// Longest wait for a new connection before `Unavailable`, milliseconds.
    pub connect_timeout_ms: u64,
    /// The server-side `statement_timeout` of every connection, milliseconds.
    pub statement_timeout_ms: u64,
    /// How often each store's head row is polled for other workers' commits, milliseconds.
    pub head_poll_interval_ms: u64,
}

impl PostgresOptions {
    /// Default most connections per worker.
    pub const POOL_SIZE_DEFAULT: u32 = 16;
    /// Default wait for a free connection.
    pub const ACQUIRE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
    /// Default wait for a new connection.
    pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
    /// Default statement timeout.
    pub const STATEMENT_TIMEOUT_MS_DEFAULT: u64 = 30_000;
    /// Default head poll interval: how late, at most, a subscription on one
    /// worker sees an event appended through another.
    pub const HEAD_POLL_INTERVAL_MS_DEFAULT: u64 = 50;

    /// Options with the defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            pool_size: Self::POOL_SIZE_DEFAULT,
            acquire_timeout_ms: Self::ACQUIRE_TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: Self::CONNECT_TIMEOUT_MS_DEFAULT,
            statement_timeout_ms: Self::STATEMENT_TIMEOUT_MS_DEFAULT,
            head_poll_interval_ms: Self::HEAD_POLL_INTERVAL_MS_DEFAULT,
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("head_poll_interval_ms", &self.head_poll_interval_ms)
            .finish()
    }
}

/// Every store of one PostgreSQL database.
#[derive(Debug)]
pub(crate) struct PostgresBackend {
    shared: Arc<Shared>,
}

/// What the backend and its open stores share.
#[derive(Debug)]
pub(crate) struct Shared {
    pool: Pool,
    catalog_ready: AtomicBool,
    head_poll_interval: Duration,
    /// How long the client waits for any one answer.
    client_timeout: Duration,
}

impl PostgresBackend {
    /// Parses the options; connects lazily, so a database that is down now is no error.
    pub(crate) fn new(options: &PostgresOptions) -> Result<Self, Error> {
        let mut config: tokio_postgres::Config = options.url.parse().map_err(|_| {
            // The parser's message may quote the text it choked on: leave it out.
            Error::invalid(format!(
                "invalid PostgreSQL URL {}",
                redact_url(&options.url)
            ))
        })?;
        if config.get_application_name().is_none() {
            config.application_name("gater");
        }
        let redactor = Redactor::new(config.get_password());
        let statement_timeout = Duration::from_millis(options.statement_timeout_ms.max(1));
        let settings = PoolConfig {
            config,
            size: options.pool_size.max(1) as usize,
            acquire_timeout: Duration::from_millis(options.acquire_timeout_ms.max(1)),
            connect_timeout: Duration::from_millis(options.connect_timeout_ms.max(1)),
            statement_timeout,
        };
        Ok(PostgresBackend {
            shared: Arc::new(Shared {
                pool: Pool::new(settings, redactor),
                catalog_ready: AtomicBool::new(false),
                head_poll_interval: Duration::from_millis(options.head_poll_interval_ms.max(1)),
                client_timeout: statement_timeout + CLIENT_TIMEOUT_MARGIN,
            }),
        })
    }
}

impl Shared {
    fn redactor(&self) -> &Redactor {
        self.pool.redactor()
    }

    fn error(&self, store: Option<&StoreId>, e: &tokio_postgres::Error) -> Error {
        map_error(self.redactor(), store, e)
    }

    /// Creates the catalog if this database has none yet.
    async fn ensure_catalog(&self, pooled: &mut Pooled<'_>) -> Result<(), Error> {
        if self.catalog_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let client = &pooled.conn().client;
        // The retention columns came later than the table.
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                                WHERE table_schema = 'gater' AND table_name = 'stores'
                                  AND column_name = 'retention_max_age_s')",
                &[],
            )
            .await
            .map_err(|e| self.error(None, &e))?;
        let current: bool = column(&row, 0)?;
        if !current {
            pooled.set_in_transaction(true);
            let ddl = format!(
                "BEGIN;
                 SELECT pg_advisory_xact_lock({CATALOG_LOCK});
                 CREATE SCHEMA IF NOT EXISTS gater;
                 CREATE TABLE IF NOT EXISTS gater.stores (
                     id text COLLATE \"C\" PRIMARY KEY,
                     schema_name text NOT NULL UNIQUE,
                     fsync boolean NOT NULL,
                     group_commit boolean NOT NULL,
                     created_us bigint NOT NULL
                 );
                 ALTER TABLE gater.stores
                     ADD COLUMN IF NOT EXISTS retention_max_count bigint,
                     ADD COLUMN IF NOT EXISTS retention_max_age_s bigint;
                 COMMIT;"
            );
            pooled
                .conn()
                .client
                .batch_execute(&ddl)
                .await
                .map_err(|e| self.error(None, &e))?;
            pooled.set_in_transaction(false);
        }
        self.catalog_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// A connection with the catalog in place.
    async fn catalog_conn(&self) -> Result<Pooled<'_>, Error> {
        let mut pooled = self.pool.get().await?;
        self.ensure_catalog(&mut pooled).await?;
        Ok(pooled)
    }

    /// A connection in an open transaction holding the catalog lock, which
    /// serialises creating and removing stores across workers.
    async fn locked_catalog(&self) -> Result<Pooled<'_>, Error> {
        let mut pooled = self.catalog_conn().await?;
        let e = |e: tokio_postgres::Error| self.error(None, &e);
        pooled.set_in_transaction(true);
        let conn = pooled.conn();
        conn.client.batch_execute("BEGIN").await.map_err(e)?;
        conn.client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOG_LOCK])
            .await
            .map_err(e)?;
        Ok(pooled)
    }

    /// Runs `work` within the client timeout.
    async fn timed<R>(
        &self,
        work: impl std::future::Future<Output = Result<R, Error>>,
    ) -> Result<R, Error> {
        tokio::time::timeout(self.client_timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(Error::unavailable(
                    gater_core::Side::Storage,
                    format!(
                        "postgres: no answer within {} ms",
                        self.client_timeout.as_millis()
                    ),
                ))
            })
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn create_store(
        &self,
        store: &StoreId,
        config: StoreConfig,
    ) -> Result<Arc<dyn BackendStore>, Error> {
        let shared = &self.shared;
        let (schema, incarnation) = shared.timed(create_schema(shared, store, config)).await?;
        let opened = PostgresStore::new(
            Arc::clone(shared),
            store.clone(),
            schema,
            config,
            Counters::default(),
            incarnation,
        );
        // A concurrent creation by another worker may have won: read its head.
        opened.refresh_counters().await?;
        Ok(Arc::new(opened))
    }

    async fn open_store(&self, store: &StoreId) -> Result<Arc<dyn BackendStore>, Error> {
        let shared = &self.shared;
        let (schema, config, incarnation) = shared
            .timed(catalog_row(shared, store))
            .await?
            .ok_or_else(|| Error::not_found(Resource::Store, store))?;
        // A store created before leases, tags or lifecycles lacks their tables.
        shared.timed(ensure_tables(shared, store, &schema)).await?;
        let opened = PostgresStore::new(
            Arc::clone(shared),
            store.clone(),
            schema,
            config,
            Counters::default(),
            incarnation,
        );
        opened.refresh_counters().await?;
        Ok(Arc::new(opened))
    }

    async fn remove_store(&self, store: &StoreId) -> Result<(), Error> {
        let shared = &self.shared;
        shared.timed(drop_schema(shared, store)).await
    }

    async fn list_stores(&self) -> Result<Vec<StoreId>, Error> {
        let shared = &self.shared;
        shared
            .timed(async {
                let mut pooled = shared.catalog_conn().await?;
                let rows = pooled
                    .conn()
                    .client
                    .query("SELECT id FROM gater.stores ORDER BY id", &[])
                    .await
                    .map_err(|e| shared.error(None, &e))?;
                let mut stores = Vec::with_capacity(rows.len());
                for row in rows {
                    let id: String = column(&row, 0)?;
                    match StoreId::new(id) {
                        Ok(id) => stores.push(id),
                        Err(e) => tracing::warn!(error = %e, "skipping a catalog row"),
                    }
                }
                Ok(stores)
            })
            .await
    }

    fn shared(&self) -> bool {
        true
    }
}

/// The schema of `store`: `gs_<id>`, or a prefix of the id plus a hash of
/// all of it when that would pass PostgreSQL's identifier limit.
pub(crate) fn schema_name(store: &StoreId) -> String {
    let id = store.as_str();
    let whole = format!("{SCHEMA_PREFIX}{id}");
    if whole.len() <= IDENTIFIER_LEN_MAX {
        return whole;
    }
    let hash = format!("{:016x}", fnv1a(id.as_bytes()));
    let keep = IDENTIFIER_LEN_MAX - SCHEMA_PREFIX.len() - 1 - hash.len();
    // Store ids are ASCII, so any byte index is a character boundary.
    format!("{SCHEMA_PREFIX}{}_{hash}", &id[..keep])
}

/// FNV-1a, 64 bits: a stable hash for schema names (std's hasher is not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The catalog row of `store`: its schema, config and incarnation (`created_us`).
async fn catalog_row(
    shared: &Shared,
    store: &StoreId,
) -> Result<Option<(String, StoreConfig, u64)>, Error> {
    let mut pooled = shared.catalog_conn().await?;
    let row = pooled
        .conn()
        .client
        .query_opt(
            "SELECT schema_name, fsync, group_commit, created_us, retention_max_count,
                    retention_max_age_s
             FROM gater.stores WHERE id = $1",
            &[&store.as_str()],
        )
        .await
        .map_err(|e| shared.error(None, &e))?;
    row.map(|row| {
        Ok((
            column(&row, 0)?,
            config_from_row(&row)?,
            store::to_u64(column(&row, 3)?)?,
        ))
    })
    .transpose()
}

/// The configuration in a catalog row read by [`catalog_row`].
fn config_from_row(row: &tokio_postgres::Row) -> Result<StoreConfig, Error> {
    let number = |index: usize| -> Result<Option<u64>, Error> {
        column::<Option<i64>>(row, index)?
            .map(store::to_u64)
            .transpose()
    };
    Ok(StoreConfig {
        fsync: column(row, 1)?,
        group_commit: column(row, 2)?,
        retention: gater_core::Retention {
            max_count: number(4)?,
            max_age_s: number(5)?,
        },
    })
}

/// Creates the store's schema, tables and catalog row in one transaction;
/// returns the schema and the incarnation. An existing store with the same
/// config is opened, with another config it is a conflict.
async fn create_schema(
    shared: &Shared,
    store: &StoreId,
    config: StoreConfig,
) -> Result<(String, u64), Error> {
    let mut pooled = shared.locked_catalog().await?;
    let e = |e: tokio_postgres::Error| shared.error(None, &e);
    let conn = pooled.conn();
    let existing = conn
        .client
        .query_opt(
            "SELECT schema_name, fsync, group_commit, created_us, retention_max_count,
                    retention_max_age_s
             FROM gater.stores WHERE id = $1",
            &[&store.as_str()],
        )
        .await
        .map_err(e)?;
    if let Some(row) = existing {
        conn.client.batch_execute("ROLLBACK").await.map_err(e)?;
        pooled.set_in_transaction(false);
        if config_from_row(&row)? != config {
            return Err(Error::StoreConfigConflict {
                store: store.to_string(),
            });
        }
        return Ok((column(&row, 0)?, store::to_u64(column(&row, 3)?)?));
    }
    let schema = schema_name(store);
    let created_us = crate::engine::now_us();
    conn.client
        .batch_execute(&store::schema_ddl(&schema))
        .await
        .map_err(e)?;
    conn.client
        .execute(
            "INSERT INTO gater.stores (id, schema_name, fsync, group_commit, created_us,
                                       retention_max_count, retention_max_age_s)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &store.as_str(),
                &schema,
                &config.fsync,
                &config.group_commit,
                &store::to_i64(created_us),
                &config.retention.max_count.map(store::to_i64),
                &config.retention.max_age_s.map(store::to_i64),
            ],
        )
        .await
        .map_err(e)?;
    conn.client.batch_execute("COMMIT").await.map_err(e)?;
    // A schema of the same name may have existed before; its plans are stale.
    conn.forget_statements();
    pooled.set_in_transaction(false);
    Ok((schema, created_us))
}

/// Creates the store's `leases` table, its tags column and indexes and its
/// lifecycle tables and column if they are missing (a store made by an
/// older version), under the catalog
/// lock (two workers opening the store at once must not both create them).
async fn ensure_tables(shared: &Shared, store: &StoreId, schema: &str) -> Result<(), Error> {
    let mut pooled = shared.catalog_conn().await?;
    let row = pooled
        .conn()
        .client
        .query_one(
            "SELECT to_regclass($1)::text, to_regclass($2)::text, to_regclass($3)::text",
            &[
                &format!("\"{schema}\".leases"),
                &query::tags_index(schema),
                &lifecycle::lifecycle_table(schema),
            ],
        )
        .await
        .map_err(|e| shared.error(Some(store), &e))?;
    let found: [Option<String>; 3] = [row.get(0), row.get(1), row.get(2)];
    if found.iter().all(Option::is_some) {
        return Ok(());
    }
    drop(pooled);
    let mut pooled = shared.locked_catalog().await?;
    let e = |e: tokio_postgres::Error| shared.error(Some(store), &e);
    let conn = pooled.conn();
    conn.client
        .batch_execute(&format!(
            "{} {} {} COMMIT",
            store::leases_ddl(schema),
            query::tags_ddl(schema),
            lifecycle::lifecycle_ddl(schema)
        ))
        .await
        .map_err(e)?;
    pooled.set_in_transaction(false);
    Ok(())
}

/// Drops the store's schema and catalog row in one transaction.
async fn drop_schema(shared: &Shared, store: &StoreId) -> Result<(), Error> {
    let mut pooled = shared.locked_catalog().await?;
    let e = |e: tokio_postgres::Error| shared.error(None, &e);
    let conn = pooled.conn();
    let row = conn
        .client
        .query_opt(
            "DELETE FROM gater.stores WHERE id = $1 RETURNING schema_name",
            &[&store.as_str()],
        )
        .await
        .map_err(e)?;
    let Some(row) = row else {
        conn.client.batch_execute("ROLLBACK").await.map_err(e)?;
        pooled.set_in_transaction(false);
        return Err(Error::not_found(Resource::Store, store));
    };
    let schema: String = column(&row, 0)?;
    conn.client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; COMMIT"
        ))
        .await
        .map_err(e)?;
    conn.forget_statements();
    pooled.set_in_transaction(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_fit_postgres_identifiers_and_stay_distinct() {
        let short = StoreId::new("orders").unwrap();
        assert_eq!(schema_name(&short), "gs_orders");
        let a = StoreId::new("a".repeat(64)).unwrap();
        let b = StoreId::new(format!("{}b", "a".repeat(63))).unwrap();
        assert_eq!(schema_name(&a).len(), IDENTIFIER_LEN_MAX);
        assert_ne!(schema_name(&a), schema_name(&b));
        assert_eq!(schema_name(&a), schema_name(&a.clone()));
    }

    #[test]
    fn options_never_print_the_password() {
        let options = PostgresOptions::new("postgres://gater:hunter2@db/events");
        let printed = format!("{options:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("gater:***@db"), "{printed}");
    }

    #[test]
    fn a_malformed_url_is_refused_without_echoing_it() {
        let error = PostgresBackend::new(&PostgresOptions::new(
            "postgres://gater:hunter2@db:notaport/events",
        ))
        .unwrap_err();
        assert_eq!(error.kind(), "invalid_argument");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
