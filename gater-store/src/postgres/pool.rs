//! A small bounded pool of PostgreSQL connections.
//!
//! At most `pool_size` connections exist; a caller waits for one up to the
//! acquire timeout and then gets a retryable `Overloaded`. Connections are
//! made on demand, so a database that is down at start (or goes away) costs
//! nothing but errors: the next request connects again. A connection that
//! failed, or was dropped in the middle of a transaction, is discarded
//! rather than returned. Each connection caches its prepared statements.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gater_core::{Error, Side};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls, Statement};

use super::error::{map_error, Redactor};

/// Prepared statements kept per connection before the cache starts over.
const STATEMENT_CACHE_MAX: usize = 512;

/// Connection settings of a pool.
#[derive(Clone, Debug)]
pub(crate) struct PoolConfig {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) size: usize,
    pub(crate) acquire_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) statement_timeout: Duration,
}

/// The pool: idle connections plus one permit per connection that may exist.
#[derive(Debug)]
pub(crate) struct Pool {
    settings: PoolConfig,
    redactor: Redactor,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

/// One connection and its statement cache.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<String, Statement>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("statements", &self.statements.len())
            .finish_non_exhaustive()
    }
}

/// A connection on loan; it goes back to the pool on drop unless it is spoiled.
#[derive(Debug)]
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    /// Set while a transaction is open: dropped then, the connection is discarded.
    in_transaction: bool,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    /// A pool that has not connected yet.
    pub(crate) fn new(settings: PoolConfig, redactor: Redactor) -> Self {
        let permits = Arc::new(Semaphore::new(settings.size.max(1)));
        Pool {
            settings,
            redactor,
            idle: Mutex::new(Vec::new()),
            permits,
        }
    }

    /// The redactor of this pool's password.
    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// A connection: an idle one, or a new one if none is idle.
    pub(crate) async fn get(&self) -> Result<Pooled<'_>, Error> {
        let permit = tokio::time::timeout(
            self.settings.acquire_timeout,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        .map_err(|_| Error::Overloaded {
            side: Side::Storage,
            message: format!("all {} PostgreSQL connections are busy", self.settings.size),
        })?
        .map_err(|_| Error::unavailable(Side::Storage, "the PostgreSQL pool is closed"))?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let mut found = None;
            while let Some(conn) = idle.pop() {
                if !conn.client.is_closed() {
                    found = Some(conn);
                    break;
                }
            }
            found
        };
        let conn = match reused {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        Ok(Pooled {
            pool: self,
            conn: Some(conn),
            in_transaction: false,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let connecting = self.settings.config.connect(NoTls);
        let (client, connection) =
            match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
                Ok(result) => result.map_err(|e| map_error(&self.redactor, None, &e))?,
                Err(_) => {
                    return Err(Error::unavailable(
                        Side::Storage,
                        format!(
                            "postgres: no connection within {} ms",
                            self.settings.connect_timeout.as_millis()
                        ),
                    ))
                }
            };
        let redactor = self.redactor.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                let error = map_error(&redactor, None, &e);
                tracing::debug!(%error, "a PostgreSQL connection ended");
            }
        });
        let timeout_ms = self.settings.statement_timeout.as_millis().max(1);
        // Notices ("already exists, skipping") are expected and not worth a log line.
        let setup =
            format!("SET statement_timeout = {timeout_ms}; SET client_min_messages = warning");
        client
            .batch_execute(&setup)
            .await
            .map_err(|e| map_error(&self.redactor, None, &e))?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }
}

impl Conn {
    /// The prepared statement of `sql` on this connection.
    pub(crate) async fn statement(
        &mut self,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        if self.statements.len() >= STATEMENT_CACHE_MAX {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Forgets every prepared statement (their tables were dropped and made again).
    pub(crate) fn forget_statements(&mut self) {
        self.statements.clear();
    }
}

impl Pooled<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> &mut Conn {
        // Invariant: `conn` is only taken out in `drop`.
        self.conn
            .as_mut()
            .expect("a loaned connection is present until dropped")
    }

    /// Marks the start or end of a transaction on this connection.
    pub(crate) fn set_in_transaction(&mut self, open: bool) {
        self.in_transaction = open;
    }

    /// Discards the connection instead of returning it (it failed).
    pub(crate) fn spoil(&mut self) {
        self.conn = None;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.in_transaction || conn.client.is_closed() {
            // A transaction cut off half way leaves the session in an unknown
            // state; dropping the client closes it and the server rolls back.
            return;
        }
        self.pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }
}
