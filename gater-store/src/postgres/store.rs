//! One open store of the PostgreSQL backend: its SQL, reads, snapshots and
//! subscription records. Appends are in `append`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use gater_core::{
    Direction, Error, EventData, EventId, Position, Query, RecordedEvent, Snapshot, SnapshotKey,
    StoreConfig, StoreId, StreamId, StreamInfo, StreamPage, SubscriptionKey, Version,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::append::Known;
use super::Shared;
use crate::backend::{BackendStore, BatchOutcome, Counters, PendingAppend};
use crate::lease::{Claim, Claimant, Fence, Lease};
use crate::lifecycle::{LifecycleChange, Lifecycles, View};
use crate::subscription::SubscriptionRecord;

/// The columns of a lifecycle row, in the order `lifecycle::from_row` reads them.
pub(super) const LIFECYCLE_COLUMNS: &str =
    "stream, truncate_before, tombstoned, max_count, max_age_s";

/// The columns of an event row, in the order `event_from_row` reads them.
pub(super) const EVENT_COLUMNS: &str =
    "position, stream, version, event_id, event_type, data, metadata, content_type, created_us, tags";

/// The condition every write of an append batch carries: the head row
/// still holds the next position `$first`, the stream count `$first + 1`
/// and the lifecycle generation `$first + 4` the batch was staged over, and
/// the catalog row of store id `$first + 2` still has the incarnation
/// `$first + 3`.
fn batch_guard(s: &str, first: u32) -> String {
    let (next, streams, id, incarnation, generation) =
        (first, first + 1, first + 2, first + 3, first + 4);
    format!(
        "EXISTS (SELECT 1 FROM {s}.head
                 WHERE next_position = ${next} AND stream_count = ${streams}
                   AND lifecycle_generation = ${generation})
         AND EXISTS (SELECT 1 FROM gater.stores
                     WHERE id = ${id} AND created_us = ${incarnation})"
    )
}

/// The statements of one store, with its schema filled in once.
#[derive(Debug)]
pub(super) struct Sql {
    pub(super) lock_head: String,
    pub(super) read_head: String,
    pub(super) update_head: String,
    pub(super) find_ids: String,
    pub(super) find_versions: String,
    pub(super) insert_events: String,
    pub(super) upsert_streams: String,
    pub(super) read_generation: String,
    pub(super) load_lifecycles: String,
    pub(super) read_lifecycle: String,
    pub(super) upsert_lifecycle: String,
    pub(super) delete_stream_snapshots: String,
    pub(super) bump_generation: String,
    pub(super) compaction_page: String,
    pub(super) compact_events: String,
    read_stream_forward: String,
    read_stream_backward: String,
    read_all_forward: String,
    read_all_backward: String,
    list_streams: String,
    list_streams_after: String,
    version: String,
    disk_bytes: String,
    put_snapshot: String,
    read_snapshot: String,
    read_latest_snapshot: String,
    list_snapshots: String,
    list_snapshots_of_source: String,
    list_snapshots_of_stream: String,
    list_snapshots_of_any_source: String,
    delete_snapshot: String,
    load_subscriptions: String,
    load_subscription: String,
    put_subscription: String,
    delete_subscription: String,
    read_head_checked: String,
    claim_lease: String,
    release_lease: String,
    put_subscription_fenced: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        Sql {
            lock_head: format!(
                "SELECT next_position, stream_count, lifecycle_generation FROM {s}.head FOR UPDATE"
            ),
            read_head: format!("SELECT next_position, stream_count FROM {s}.head"),
            // The writes of a batch hold only if the head is still the one
            // the batch was staged over, in the incarnation of the store it
            // was staged for (`batch_guard`).
            update_head: format!(
                "UPDATE {s}.head SET next_position = $1, stream_count = $2
                 WHERE {}",
                batch_guard(&s, 3)
            ),
            // Ids of compacted events count as stored: a retry of an
            // append made before a delete answers its original result.
            find_ids: format!(
                "SELECT event_id, stream, version, position FROM {s}.events
                 WHERE event_id = ANY($1::uuid[])
                 UNION ALL
                 SELECT event_id, stream, version, position FROM {s}.compacted_ids
                 WHERE event_id = ANY($1::uuid[])"
            ),
            find_versions: format!(
                "SELECT stream, version FROM {s}.streams WHERE stream = ANY($1::text[])"
            ),
            insert_events: format!(
                "INSERT INTO {s}.events ({EVENT_COLUMNS})
                 SELECT p, s, v, i, t, d, m, c, $9,
                        ARRAY(SELECT jsonb_array_elements_text(g::jsonb))
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::uuid[],
                             $5::bytea[], $6::bytea[], $7::bytea[], $8::bytea[], $10::text[])
                      AS u(p, s, v, i, t, d, m, c, g)
                 WHERE {}",
                batch_guard(&s, 11)
            ),
            read_generation: format!("SELECT lifecycle_generation FROM {s}.head"),
            load_lifecycles: format!("SELECT {LIFECYCLE_COLUMNS} FROM {s}.lifecycles"),
            read_lifecycle: format!(
                "SELECT {LIFECYCLE_COLUMNS},
                        (SELECT version FROM {s}.streams WHERE stream = $1)
                 FROM (SELECT 1) AS one LEFT JOIN {s}.lifecycles ON stream = $1"
            ),
            upsert_lifecycle: format!(
                "INSERT INTO {s}.lifecycles ({LIFECYCLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (stream) DO UPDATE SET
                     truncate_before = EXCLUDED.truncate_before,
                     tombstoned = EXCLUDED.tombstoned,
                     max_count = EXCLUDED.max_count,
                     max_age_s = EXCLUDED.max_age_s"
            ),
            delete_stream_snapshots: format!("DELETE FROM {s}.snapshots WHERE stream = $1"),
            // Held only in the incarnation of the store the change was
            // checked in: a store removed and created again is refused.
            bump_generation: format!(
                "UPDATE {s}.head SET lifecycle_generation = lifecycle_generation + 1
                 WHERE EXISTS (SELECT 1 FROM gater.stores WHERE id = $1 AND created_us = $2)
                 RETURNING lifecycle_generation"
            ),
            compaction_page: format!(
                "SELECT e.position, e.stream, e.version, e.created_us, s.version
                 FROM {s}.events e JOIN {s}.streams s ON s.stream = e.stream
                 WHERE e.position >= $1 ORDER BY e.position LIMIT $2"
            ),
            compact_events: format!(
                "WITH gone AS (
                     DELETE FROM {s}.events WHERE position = ANY($1::bigint[])
                     RETURNING event_id, stream, version, position
                 ),
                 kept AS (
                     INSERT INTO {s}.compacted_ids (event_id, stream, version, position)
                     SELECT * FROM gone ON CONFLICT (event_id) DO NOTHING
                 )
                 SELECT count(*) FROM gone"
            ),
            upsert_streams: format!(
                "INSERT INTO {s}.streams (stream, version)
                 SELECT * FROM unnest($1::text[], $2::bigint[])
                 WHERE {}
                 ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version",
                batch_guard(&s, 3)
            ),
            read_stream_forward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
            ),
            read_stream_backward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE stream = $1 AND version <= $2 ORDER BY version DESC LIMIT $3"
            ),
            read_all_forward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE position >= $1 ORDER BY position LIMIT $2"
            ),
            read_all_backward: format!(
                "SELECT {EVENT_COLUMNS} FROM {s}.events
                 WHERE position <= $1 ORDER BY position DESC LIMIT $2"
            ),
            list_streams: format!(
                "SELECT stream, version FROM {s}.streams ORDER BY stream LIMIT $1"
            ),
            list_streams_after: format!(
                "SELECT stream, version FROM {s}.streams WHERE stream > $1
                 ORDER BY stream LIMIT $2"
            ),
            version: format!("SELECT version FROM {s}.streams WHERE stream = $1"),
            disk_bytes: "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind = 'r'"
                .to_owned(),
            put_snapshot: format!(
                "INSERT INTO {s}.snapshots (source, stream, version, data, created_us)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (source, stream, version)
                 DO UPDATE SET data = EXCLUDED.data, created_us = EXCLUDED.created_us"
            ),
            read_snapshot: format!(
                "SELECT version, data, created_us FROM {s}.snapshots
                 WHERE source = $1 AND stream = $2 AND version = $3"
            ),
            read_latest_snapshot: format!(
                "SELECT version, data, created_us FROM {s}.snapshots
                 WHERE source = $1 AND stream = $2 ORDER BY version DESC LIMIT 1"
            ),
            list_snapshots: format!(
                "SELECT source, stream, version FROM {s}.snapshots
                 ORDER BY source, stream, version"
            ),
            list_snapshots_of_source: format!(
                "SELECT source, stream, version FROM {s}.snapshots WHERE source = $1
                 ORDER BY source, stream, version"
            ),
            list_snapshots_of_stream: format!(
                "SELECT source, stream, version FROM {s}.snapshots
                 WHERE source = $1 AND stream = $2 ORDER BY source, stream, version"
            ),
            list_snapshots_of_any_source: format!(
                "SELECT source, stream, version FROM {s}.snapshots WHERE stream = $1
                 ORDER BY source, stream, version"
            ),
            delete_snapshot: format!(
                "DELETE FROM {s}.snapshots WHERE source = $1 AND stream = $2 AND version = $3"
            ),
            load_subscriptions: format!("SELECT record FROM {s}.subscriptions ORDER BY key"),
            load_subscription: format!("SELECT record FROM {s}.subscriptions WHERE key = $1"),
            // Creates only: an existing record is written by its lease holder, fenced.
            put_subscription: format!(
                "INSERT INTO {s}.subscriptions (key, checkpoint, record) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO NOTHING"
            ),
            delete_subscription: format!(
                "WITH lease AS (DELETE FROM {s}.leases WHERE key = $1)
                 DELETE FROM {s}.subscriptions WHERE key = $1"
            ),
            // The head plus this store's catalog row: a store removed and
            // created again has another `created_us` (its incarnation).
            read_head_checked: format!(
                "SELECT next_position, stream_count,
                        (SELECT created_us FROM gater.stores WHERE id = $1)
                 FROM {s}.head"
            ),
            // Takes a missing or expired lease (epoch + 1) or renews the
            // claimant's own; a live lease of another holder is left alone.
            // Returns whether the record exists, the epoch taken (NULL when
            // none) and the lease as it was before.
            claim_lease: format!(
                "WITH record AS (SELECT 1 FROM {s}.subscriptions WHERE key = $1),
                 taken AS (
                     INSERT INTO {s}.leases AS l (key, holder, address, epoch, expires_at)
                     SELECT $1, $2, $3, 1, now() + $4::bigint * interval '1 millisecond'
                     FROM record
                     ON CONFLICT (key) DO UPDATE SET
                         holder = EXCLUDED.holder,
                         address = EXCLUDED.address,
                         epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now()
                                      THEN l.epoch ELSE l.epoch + 1 END,
                         expires_at = EXCLUDED.expires_at
                     WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
                     RETURNING l.epoch
                 )
                 SELECT EXISTS (SELECT 1 FROM record), (SELECT epoch FROM taken),
                        l.holder, l.address, l.epoch
                 FROM (SELECT 1) AS one LEFT JOIN {s}.leases AS l ON l.key = $1"
            ),
            release_lease: format!(
                "UPDATE {s}.leases SET expires_at = now()
                 WHERE key = $1 AND holder = $2 AND epoch = $3"
            ),
            // The compare-and-set: written only while the holder's lease is
            // live at its epoch (the lease row locked, so no claim slips in),
            // and never re-creating a removed record.
            put_subscription_fenced: format!(
                "WITH lease AS (
                     SELECT 1 FROM {s}.leases
                     WHERE key = $1 AND holder = $4 AND epoch = $5 AND expires_at > now()
                     FOR UPDATE
                 ),
                 written AS (
                     UPDATE {s}.subscriptions SET checkpoint = $2, record = $3
                     WHERE key = $1 AND EXISTS (SELECT 1 FROM lease)
                     RETURNING 1
                 )
                 SELECT EXISTS (SELECT 1 FROM written),
                        EXISTS (SELECT 1 FROM {s}.subscriptions WHERE key = $1)"
            ),
        }
    }
}

/// The schema and tables of a new store (run inside the creating transaction).
///
/// Stream ids compare byte-wise (`COLLATE "C"`) to list in id order; event
/// types, content types and snapshot keys may hold any character, NUL
/// included, which `text` cannot, so they are `bytea`.
pub(super) fn schema_ddl(schema: &str) -> String {
    let s = format!("\"{schema}\"");
    format!(
        "DROP SCHEMA IF EXISTS {s} CASCADE;
         CREATE SCHEMA {s};
         CREATE TABLE {s}.head (
             singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
             next_position bigint NOT NULL,
             stream_count bigint NOT NULL
         );
         INSERT INTO {s}.head (next_position, stream_count) VALUES (0, 0);
         CREATE TABLE {s}.events (
             position bigint PRIMARY KEY,
             stream text COLLATE \"C\" NOT NULL,
             version bigint NOT NULL,
             event_id uuid NOT NULL,
             event_type bytea NOT NULL,
             data bytea NOT NULL,
             metadata bytea NOT NULL,
             content_type bytea NOT NULL,
             created_us bigint NOT NULL,
             CONSTRAINT events_stream_version UNIQUE (stream, version),
             CONSTRAINT events_event_id UNIQUE (event_id)
         );
         CREATE TABLE {s}.streams (
             stream text COLLATE \"C\" PRIMARY KEY,
             version bigint NOT NULL
         );
         CREATE TABLE {s}.snapshots (
             source bytea NOT NULL,
             stream bytea NOT NULL,
             version bigint NOT NULL,
             data bytea NOT NULL,
             created_us bigint NOT NULL,
             PRIMARY KEY (source, stream, version)
         );
         CREATE TABLE {s}.subscriptions (
             key bytea PRIMARY KEY,
             checkpoint bigint NOT NULL,
             record bytea NOT NULL
         );
         {}
         {}
         {}",
        leases_ddl(schema),
        super::query::tags_ddl(schema),
        super::lifecycle::lifecycle_ddl(schema)
    )
}

/// The table of subscription leases (see `crate::lease`).
pub(super) fn leases_ddl(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS \"{schema}\".leases (
             key bytea PRIMARY KEY,
             holder text NOT NULL,
             address text NOT NULL,
             epoch bigint NOT NULL,
             expires_at timestamptz NOT NULL
         );"
    )
}

/// One open store.
#[derive(Debug)]
pub(crate) struct PostgresStore {
    pub(super) shared: Arc<Shared>,
    pub(super) store: StoreId,
    pub(super) schema: String,
    pub(super) config: StoreConfig,
    pub(super) sql: Sql,
    /// The counters as last seen: after this worker's commits and each head poll.
    counters: Mutex<Counters>,
    /// Stream versions the writer knows, for appends in one round trip.
    pub(super) known: Mutex<Known>,
    closed: AtomicBool,
    /// The catalog row's `created_us`: tells this creation of the id from a later one.
    pub(super) incarnation: u64,
    /// Another worker removed this incarnation (found by a head poll).
    gone: AtomicBool,
    /// The lifecycle states as of a lifecycle generation of the head row,
    /// checked against the database before each use (`lifecycle`).
    pub(super) lifecycle_cache: Mutex<Option<(u64, Arc<Lifecycles>)>>,
}

impl PostgresStore {
    pub(super) fn new(
        shared: Arc<Shared>,
        store: StoreId,
        schema: String,
        config: StoreConfig,
        counters: Counters,
        incarnation: u64,
    ) -> Self {
        let sql = Sql::new(&schema);
        PostgresStore {
            shared,
            store,
            schema,
            config,
            sql,
            counters: Mutex::new(counters),
            known: Mutex::new(Known::default()),
            closed: AtomicBool::new(false),
            incarnation,
            gone: AtomicBool::new(false),
            lifecycle_cache: Mutex::new(None),
        }
    }

    /// Reads the head row and moves the cached counters forward, unless the
    /// store was removed (and maybe created again) by another worker: then
    /// this handle is closed and `gone`.
    async fn refresh_checked(&self) -> Result<Counters, Error> {
        let rows = match self
            .query(&self.sql.read_head_checked, &[&self.store.as_str()])
            .await
        {
            Ok(rows) => rows,
            Err(Error::NotFound { .. }) => {
                self.mark_gone();
                return Err(Error::StoreStopping {
                    store: self.store.to_string(),
                });
            }
            Err(error) => return Err(error),
        };
        let row = rows
            .first()
            .ok_or_else(|| corrupt(format!("store {} has no head row", self.store)))?;
        let created: Option<i64> = row.get(2);
        if created.map(to_u64).transpose()? != Some(self.incarnation) {
            self.mark_gone();
            return Err(Error::StoreStopping {
                store: self.store.to_string(),
            });
        }
        Ok(self.advance_counters(counters_from_row(row)?))
    }

    fn mark_gone(&self) {
        if !self.gone.swap(true, Ordering::AcqRel) {
            tracing::info!(store = %self.store, "the store was removed by another worker");
        }
        self.closed.store(true, Ordering::Release);
    }

    pub(super) fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::StoreStopping {
                store: self.store.to_string(),
            });
        }
        Ok(())
    }

    pub(super) fn error(&self, e: &tokio_postgres::Error) -> Error {
        self.shared.error(Some(&self.store), e)
    }

    /// Moves the cached counters forward to `seen` (never back: a poll and a
    /// commit of this worker may report in either order).
    pub(super) fn advance_counters(&self, seen: Counters) -> Counters {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.event_count >= counters.event_count {
            *counters = seen;
        }
        *counters
    }

    /// Reads the head row and moves the cached counters forward.
    pub(super) async fn refresh_counters(&self) -> Result<Counters, Error> {
        let row = self.query_one(&self.sql.read_head, &[]).await?;
        let seen = counters_from_row(&row)?;
        Ok(self.advance_counters(seen))
    }

    /// Runs one statement on a pooled connection, within the client timeout.
    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.check_open()?;
        self.shared
            .timed(async {
                let mut pooled = self.shared.pool.get().await?;
                let conn = pooled.conn();
                let result = match conn.statement(sql).await {
                    Ok(statement) => conn.client.query(&statement, params).await,
                    Err(e) => Err(e),
                };
                result.map_err(|e| {
                    if e.code().is_none() {
                        pooled.spoil();
                    }
                    self.error(&e)
                })
            })
            .await
    }

    pub(super) async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        self.query(sql, params)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| corrupt(format!("store {} has no head row", self.store)))
    }

    async fn events(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.query(sql, params)
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }
}

#[async_trait]
impl BackendStore for PostgresStore {
    fn config(&self) -> StoreConfig {
        self.config
    }

    fn counters(&self) -> Counters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn append_batch(
        &self,
        appends: Vec<PendingAppend>,
        created_us: u64,
    ) -> Result<BatchOutcome, Error> {
        self.append(appends, created_us).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        start: Version,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let sql = match direction {
            Direction::Forward => &self.sql.read_stream_forward,
            Direction::Backward => &self.sql.read_stream_backward,
        };
        let params: [&(dyn ToSql + Sync); 3] =
            [&stream.as_str(), &to_i64(start), &i64::from(count)];
        self.events(sql, &params).await
    }

    async fn read_all(
        &self,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let sql = match direction {
            Direction::Forward => &self.sql.read_all_forward,
            Direction::Backward => &self.sql.read_all_backward,
        };
        self.events(sql, &[&to_i64(from.0), &i64::from(count)])
            .await
    }

    async fn read_query(
        &self,
        query: &Query,
        from: Position,
        count: u32,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let sql = super::query::read(
            &self.schema,
            EVENT_COLUMNS,
            query,
            to_i64(from.0),
            i64::from(count),
            direction,
        );
        self.events(&sql.text, &sql.params()).await
    }

    async fn list_streams(&self, after: Option<StreamId>, limit: u32) -> Result<StreamPage, Error> {
        // One more than asked tells whether another page follows.
        let fetch = i64::from(limit) + 1;
        let rows = match &after {
            Some(after) => {
                self.query(&self.sql.list_streams_after, &[&after.as_str(), &fetch])
                    .await?
            }
            None => self.query(&self.sql.list_streams, &[&fetch]).await?,
        };
        let mut streams = Vec::with_capacity(rows.len().min(limit as usize));
        let more = rows.len() > limit as usize;
        for row in rows.iter().take(limit as usize) {
            streams.push(StreamInfo {
                stream: stream_from(column(row, 0)?)?,
                version: to_u64(column(row, 1)?)?,
            });
        }
        Ok(StreamPage::new(streams, more))
    }

    async fn version(&self, stream: &StreamId) -> Result<Option<Version>, Error> {
        let rows = self.query(&self.sql.version, &[&stream.as_str()]).await?;
        rows.first().map(|row| to_u64(column(row, 0)?)).transpose()
    }

    async fn disk_bytes(&self) -> Result<u64, Error> {
        let row = self
            .query_one(&self.sql.disk_bytes, &[&self.schema])
            .await?;
        to_u64(column(&row, 0)?)
    }

    async fn lifecycles(&self) -> Result<Arc<Lifecycles>, Error> {
        self.current_lifecycles().await
    }

    async fn change_lifecycle(
        &self,
        stream: &StreamId,
        change: LifecycleChange,
    ) -> Result<(), Error> {
        self.apply_lifecycle(stream, change).await
    }

    async fn compact(&self, view: &View) -> Result<crate::backend::Compacted, Error> {
        self.compact_hidden(view).await
    }

    async fn record_snapshot(&self, snapshot: Snapshot) -> Result<(), Error> {
        let key = &snapshot.key;
        let params: [&(dyn ToSql + Sync); 5] = [
            &key.source.as_bytes(),
            &key.stream.as_bytes(),
            &to_i64(key.version),
            &snapshot.data,
            &to_i64(snapshot.created_us),
        ];
        self.query(&self.sql.put_snapshot, &params).await.map(drop)
    }

    async fn read_snapshot(
        &self,
        source: &str,
        stream: &str,
        version: Option<Version>,
    ) -> Result<Option<Snapshot>, Error> {
        let rows = match version {
            Some(version) => {
                let params: [&(dyn ToSql + Sync); 3] =
                    [&source.as_bytes(), &stream.as_bytes(), &to_i64(version)];
                self.query(&self.sql.read_snapshot, &params).await?
            }
            None => {
                let params: [&(dyn ToSql + Sync); 2] = [&source.as_bytes(), &stream.as_bytes()];
                self.query(&self.sql.read_latest_snapshot, &params).await?
            }
        };
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            key: SnapshotKey {
                source: source.to_owned(),
                stream: stream.to_owned(),
                version: to_u64(column(row, 0)?)?,
            },
            data: column(row, 1)?,
            created_us: to_u64(column(row, 2)?)?,
        }))
    }

    async fn list_snapshots(
        &self,
        source: Option<&str>,
        stream: Option<&str>,
    ) -> Result<Vec<SnapshotKey>, Error> {
        let rows = match (source, stream) {
            (Some(source), Some(stream)) => {
                let params: [&(dyn ToSql + Sync); 2] = [&source.as_bytes(), &stream.as_bytes()];
                self.query(&self.sql.list_snapshots_of_stream, &params)
                    .await?
            }
            (Some(source), None) => {
                self.query(&self.sql.list_snapshots_of_source, &[&source.as_bytes()])
                    .await?
            }
            (None, Some(stream)) => {
                self.query(
                    &self.sql.list_snapshots_of_any_source,
                    &[&stream.as_bytes()],
                )
                .await?
            }
            (None, None) => self.query(&self.sql.list_snapshots, &[]).await?,
        };
        rows.iter()
            .map(|row| {
                Ok(SnapshotKey {
                    source: text_from(column(row, 0)?)?,
                    stream: text_from(column(row, 1)?)?,
                    version: to_u64(column(row, 2)?)?,
                })
            })
            .collect()
    }

    async fn delete_snapshot(&self, key: &SnapshotKey) -> Result<bool, Error> {
        let params: [&(dyn ToSql + Sync); 3] = [
            &key.source.as_bytes(),
            &key.stream.as_bytes(),
            &to_i64(key.version),
        ];
        self.check_open()?;
        let deleted = self
            .shared
            .timed(async {
                let mut pooled = self.shared.pool.get().await?;
                let conn = pooled.conn();
                let result = match conn.statement(&self.sql.delete_snapshot).await {
                    Ok(statement) => conn.client.execute(&statement, &params).await,
                    Err(e) => Err(e),
                };
                result.map_err(|e| self.error(&e))
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn load_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error> {
        let rows = self.query(&self.sql.load_subscriptions, &[]).await?;
        rows.iter()
            .map(|row| record_from(column(row, 0)?))
            .collect()
    }

    async fn load_subscription(
        &self,
        key: &SubscriptionKey,
    ) -> Result<Option<SubscriptionRecord>, Error> {
        let key = encode(key)?;
        let rows = self.query(&self.sql.load_subscription, &[&key]).await?;
        rows.first()
            .map(|row| record_from(column(row, 0)?))
            .transpose()
    }

    async fn put_subscription(&self, record: &SubscriptionRecord) -> Result<(), Error> {
        let key = encode(&record.spec.key)?;
        let value = encode(record)?;
        let params: [&(dyn ToSql + Sync); 3] = [&key, &to_i64(record.checkpoint.0), &value];
        self.query(&self.sql.put_subscription, &params)
            .await
            .map(drop)
    }

    async fn delete_subscription(&self, key: &SubscriptionKey) -> Result<(), Error> {
        let key = encode(key)?;
        self.query(&self.sql.delete_subscription, &[&key])
            .await
            .map(drop)
    }

    async fn close(&self) -> Result<(), Error> {
        // Every commit is durable when acknowledged: nothing to flush.
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    fn release(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn shared(&self) -> bool {
        true
    }

    fn head_poll_interval(&self) -> Option<Duration> {
        Some(self.shared.head_poll_interval)
    }

    async fn refresh_head(&self) -> Result<Option<Position>, Error> {
        Ok(self.refresh_checked().await?.head)
    }

    /// Nothing of the store lives in the worker: the head is read again,
    /// and a database that is still read-only keeps the store `read_only`
    /// (a full disk shows at the next append, which the database refuses
    /// until it has room).
    async fn reopen(&self) -> Result<Counters, Error> {
        let counters = self.refresh_checked().await?;
        let row = self
            .query_one("SELECT current_setting('transaction_read_only')", &[])
            .await?;
        let read_only: String = row
            .try_get(0)
            .map_err(|e| corrupt(format!("transaction_read_only: {e}")))?;
        if read_only == "on" {
            return Err(crate::faults::attribute(
                crate::faults::full(
                    "the database accepts no writes, it is read-only (transaction_read_only is on)",
                ),
                &self.store,
                None,
            ));
        }
        Ok(counters)
    }

    fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    async fn claim_lease(
        &self,
        key: &SubscriptionKey,
        claimant: &Claimant,
    ) -> Result<Claim, Error> {
        let key = encode(key)?;
        let period_ms = i64::try_from(claimant.period.as_millis()).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 4] =
            [&key, &claimant.holder, &claimant.address, &period_ms];
        let row = self.query_one(&self.sql.claim_lease, &params).await?;
        if !row.get::<_, bool>(0) {
            return Ok(Claim::Removed);
        }
        if let Some(epoch) = row.get::<_, Option<i64>>(1) {
            return Ok(Claim::Held(to_u64(epoch)?));
        }
        match (
            row.get::<_, Option<String>>(2),
            row.get::<_, Option<String>>(3),
        ) {
            (Some(holder), Some(address)) => Ok(Claim::Other(Lease {
                holder,
                address,
                epoch: to_u64(row.get(4))?,
            })),
            // Another worker created the lease row at this instant: ask again later.
            _ => Err(Error::unavailable(
                gater_core::Side::Storage,
                "the subscription's lease is being taken by another worker",
            )),
        }
    }

    async fn release_lease(
        &self,
        key: &SubscriptionKey,
        holder: &str,
        epoch: u64,
    ) -> Result<(), Error> {
        let key = encode(key)?;
        let epoch = to_i64(epoch);
        let params: [&(dyn ToSql + Sync); 3] = [&key, &holder, &epoch];
        self.query(&self.sql.release_lease, &params).await.map(drop)
    }

    async fn put_subscription_fenced(
        &self,
        record: &SubscriptionRecord,
        holder: &str,
        epoch: u64,
    ) -> Result<Fence, Error> {
        let key = encode(&record.spec.key)?;
        let value = encode(record)?;
        let (checkpoint, epoch) = (to_i64(record.checkpoint.0), to_i64(epoch));
        let params: [&(dyn ToSql + Sync); 5] = [&key, &checkpoint, &value, &holder, &epoch];
        let row = self
            .query_one(&self.sql.put_subscription_fenced, &params)
            .await?;
        Ok(match (row.get::<_, bool>(0), row.get::<_, bool>(1)) {
            (true, _) => Fence::Written,
            (false, true) => Fence::LeaseLost,
            (false, false) => Fence::Removed,
        })
    }
}

/// The counters in a head row `(next_position, stream_count)`.
pub(super) fn counters_from_row(row: &Row) -> Result<Counters, Error> {
    let next = to_u64(column(row, 0)?)?;
    Ok(Counters {
        head: next.checked_sub(1).map(Position),
        event_count: next,
        stream_count: to_u64(column(row, 1)?)?,
    })
}

fn event_from_row(row: &Row) -> Result<RecordedEvent, Error> {
    Ok(RecordedEvent {
        position: Position(to_u64(column(row, 0)?)?),
        stream: stream_from(column(row, 1)?)?,
        version: to_u64(column(row, 2)?)?,
        created_us: to_u64(column(row, 8)?)?,
        data: EventData {
            id: EventId::from_uuid(column(row, 3)?),
            event_type: text_from(column(row, 4)?)?,
            data: column(row, 5)?,
            metadata: column(row, 6)?,
            content_type: text_from(column(row, 7)?)?,
            tags: column(row, 9)?,
        },
    })
}

/// A u64 as a bigint parameter; values past `i64::MAX` (such as "from the
/// end" markers) clamp to it, which no stored number reaches.
pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored bigint as a u64; a negative one is corrupt.
pub(super) fn to_u64(value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative number {value}")))
}

pub(super) fn stream_from(text: String) -> Result<StreamId, Error> {
    StreamId::new(text).map_err(|e| corrupt(format!("stored stream id: {e}")))
}

fn text_from(bytes: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|_| corrupt("stored text is not UTF-8"))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(value).map_err(|e| Error::Storage(format!("encoding failed: {e}")))
}

fn record_from(bytes: Vec<u8>) -> Result<SubscriptionRecord, Error> {
    postcard::from_bytes(&bytes).map_err(corrupt)
}

/// Column `index` of `row` as `T`: a column missing or of another type (a
/// foreign or altered schema) is a storage error, never a panic.
pub(super) fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    index: usize,
) -> Result<T, Error> {
    row.try_get(index)
        .map_err(|e| Error::Storage(format!("unexpected database schema: column {index}: {e}")))
}

/// A storage error for rows that do not decode.
pub(super) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Storage(format!("corrupt data: {what}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gater_core::{
        Position, StoreConfig, StoreId, SubscriptionKey, SubscriptionSpec, SubscriptionType,
    };
    use gater_testkit::pg_harness::PgServer;

    use crate::backend::Backend;
    use crate::lease::{Claim, Claimant, Fence};
    use crate::postgres::{PostgresBackend, PostgresOptions};
    use crate::subscription::SubscriptionRecord;

    const PERIOD: Duration = Duration::from_millis(300);

    fn claimant(holder: &str) -> Claimant {
        Claimant {
            holder: holder.to_owned(),
            address: format!("{holder}:7401"),
            period: PERIOD,
        }
    }

    fn record(checkpoint: u64) -> SubscriptionRecord {
        let key = SubscriptionKey::new(SubscriptionType::ByStream, "$all", "g").unwrap();
        SubscriptionRecord {
            spec: SubscriptionSpec::new(key),
            checkpoint: Position(checkpoint),
            parked: Vec::new(),
        }
    }

    #[tokio::test]
    async fn an_expired_owners_checkpoint_write_is_refused_by_postgres() {
        let case = "an_expired_owners_checkpoint_write_is_refused_by_postgres";
        if std::env::var_os("RUN_SLOW_TESTS").is_none() {
            eprintln!("{case}: skipped, slow test (set RUN_SLOW_TESTS=1 to run it)");
            return;
        }
        let Some(pg) = PgServer::start().unwrap() else {
            eprintln!("{case}: skipped, no PostgreSQL binaries (initdb, pg_ctl) on this machine");
            return;
        };
        let backend = PostgresBackend::new(&PostgresOptions::new(pg.url())).unwrap();
        let config = StoreConfig {
            fsync: false,
            group_commit: true,
            retention: gater_core::Retention::NONE,
        };
        let store = backend
            .create_store(&StoreId::new("fenced").unwrap(), config)
            .await
            .unwrap();
        let key = record(0).spec.key;
        store.put_subscription(&record(0)).await.unwrap();
        let (a, b) = (claimant("a"), claimant("b"));
        assert_eq!(store.claim_lease(&key, &a).await.unwrap(), Claim::Held(1));
        assert_eq!(store.claim_lease(&key, &a).await.unwrap(), Claim::Held(1));
        let Claim::Other(lease) = store.claim_lease(&key, &b).await.unwrap() else {
            panic!("a holds the lease");
        };
        assert_eq!((lease.holder.as_str(), lease.epoch), ("a", 1));
        let write = |checkpoint, holder: &'static str, epoch| {
            let store = store.clone();
            async move {
                store
                    .put_subscription_fenced(&record(checkpoint), holder, epoch)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(write(5, "a", 1).await, Fence::Written);
        tokio::time::sleep(PERIOD * 2).await;
        assert_eq!(write(6, "a", 1).await, Fence::LeaseLost, "expired: refused");
        assert_eq!(store.claim_lease(&key, &b).await.unwrap(), Claim::Held(2));
        assert_eq!(
            write(7, "a", 1).await,
            Fence::LeaseLost,
            "taken over: refused"
        );
        assert_eq!(write(8, "b", 2).await, Fence::Written);
        let stored = store.load_subscription(&key).await.unwrap().unwrap();
        assert_eq!(stored.checkpoint, Position(8));
        store.delete_subscription(&key).await.unwrap();
        assert_eq!(write(9, "b", 2).await, Fence::Removed, "never re-created");
        assert_eq!(store.claim_lease(&key, &b).await.unwrap(), Claim::Removed);
        assert!(store.load_subscription(&key).await.unwrap().is_none());
    }
}
