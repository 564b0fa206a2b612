//! Stream lifecycle in the PostgreSQL backend: the `lifecycles` table (one
//! row per stream with some state), changes applied under the head-row lock,
//! the lifecycle generation that tells every worker its cached states are
//! stale, and compaction.
//!
//! A change locks the head row (`SELECT … FOR UPDATE`), as an append does,
//! so no append of any worker commits between reading the stream's version
//! and writing its new state; it moves the head row's
//! `lifecycle_generation`, so an append staged from a worker's memory
//! before the change (`append`'s one-round-trip path, whose writes hold
//! only while the head row is unchanged) writes nothing and is staged again
//! from the database. A tombstone deletes the stream's snapshots in the same
//! transaction.
//!
//! Each worker keeps the states it read with the generation they are true
//! at and checks that generation against the head row before each use, so a
//! change made through one worker shows through every other at once.
//!
//! Compaction walks the log in pages and deletes every event the view
//! hides, a page per committed statement (a rerun after a crash finds what
//! is left), moving each deleted event's id, stream, version and position to
//! `compacted_ids`, so a retry of an append made before a delete still
//! answers its original result; a statement trigger makes an insert of such
//! an id fail like the unique index would. Stream versions live in
//! `streams` and the next position in the head row, so numbering needs no
//! event kept. Then it runs `VACUUM` on the tables it deleted from: the
//! space is free for the store's new rows; a table's files shrink only by
//! the empty pages at their end (what `VACUUM FULL` would give back takes a
//! lock that blocks appends, which compaction never does).

use std::sync::Arc;
use std::time::Duration;

use gater_core::{Error, Retention, Side, StreamId, StreamLifecycle};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::store::{column, to_i64, to_u64, PostgresStore};
use crate::backend::{BackendStore, Compacted};
use crate::lifecycle::{apply, LifecycleChange, Lifecycles, View};

/// Events compaction reads per page of its walk (and deletes, at most, per statement).
const COMPACT_PAGE_EVENTS: i64 = 4_096;
/// Longest a compaction's `VACUUM` may run, milliseconds.
const VACUUM_TIMEOUT_MS: u64 = 3_600_000;
/// Slack on top of [`VACUUM_TIMEOUT_MS`] before the client gives up itself.
const VACUUM_CLIENT_MARGIN: Duration = Duration::from_secs(5);
/// The trigger that refuses inserts of compacted event ids.
const COMPACTED_IDS_TRIGGER: &str = "events_compacted_ids";

/// The lifecycle table, the compacted ids and the head row's lifecycle
/// generation, for a new store or one made before them; safe to run again.
pub(super) fn lifecycle_ddl(schema: &str) -> String {
    let s = format!("\"{schema}\"");
    format!(
        "ALTER TABLE {s}.head ADD COLUMN IF NOT EXISTS lifecycle_generation bigint NOT NULL DEFAULT 0;
         CREATE TABLE IF NOT EXISTS {s}.lifecycles (
             stream text COLLATE \"C\" PRIMARY KEY,
             truncate_before bigint,
             tombstoned boolean NOT NULL,
             max_count bigint,
             max_age_s bigint
         );
         CREATE TABLE IF NOT EXISTS {s}.compacted_ids (
             event_id uuid PRIMARY KEY,
             stream text COLLATE \"C\" NOT NULL,
             version bigint NOT NULL,
             position bigint NOT NULL
         );"
    )
}

/// The name `to_regclass` finds once [`lifecycle_ddl`] ran.
pub(super) fn lifecycle_table(schema: &str) -> String {
    format!("\"{schema}\".compacted_ids")
}

/// The statement trigger that fails an insert of an event whose id was
/// compacted away, with the unique violation the unique index gives for a
/// stored one. Installed by the first compaction: a store never compacted
/// pays nothing for it on appends.
fn compacted_ids_trigger_ddl(schema: &str) -> String {
    let s = format!("\"{schema}\"");
    format!(
        "CREATE OR REPLACE FUNCTION {s}.refuse_compacted_ids() RETURNS trigger
         LANGUAGE plpgsql AS $body$
         BEGIN
             IF EXISTS (SELECT 1 FROM inserted i
                        JOIN {s}.compacted_ids c ON c.event_id = i.event_id) THEN
                 RAISE EXCEPTION 'an event id of the append is already stored'
                     USING ERRCODE = 'unique_violation';
             END IF;
             RETURN NULL;
         END
         $body$;
         CREATE OR REPLACE TRIGGER {COMPACTED_IDS_TRIGGER} AFTER INSERT ON {s}.events
             REFERENCING NEW TABLE AS inserted
             FOR EACH STATEMENT EXECUTE FUNCTION {s}.refuse_compacted_ids();"
    )
}

/// Every state in rows of `LIFECYCLE_COLUMNS`.
pub(super) fn lifecycles_from_rows(rows: &[Row]) -> Result<Lifecycles, Error> {
    let mut states = Lifecycles::with_capacity(rows.len());
    for row in rows {
        let stream: String = column(row, 0)?;
        states.insert(stream, state_from_row(row, 1)?);
    }
    Ok(states)
}

/// The state in columns `first..first + 4` of `row` (`truncate_before`,
/// `tombstoned`, `max_count`, `max_age_s`).
fn state_from_row(row: &Row, first: usize) -> Result<StreamLifecycle, Error> {
    let number = |index: usize| -> Result<Option<u64>, Error> {
        column::<Option<i64>>(row, index)?.map(to_u64).transpose()
    };
    Ok(StreamLifecycle {
        truncate_before: number(first)?,
        tombstoned: column(row, first + 1)?,
        retention: Retention {
            max_count: number(first + 2)?,
            max_age_s: number(first + 3)?,
        },
    })
}

impl PostgresStore {
    /// The states as of now: the cached ones when the head row's lifecycle
    /// generation is still theirs, else read again.
    pub(super) async fn current_lifecycles(&self) -> Result<Arc<Lifecycles>, Error> {
        let row = self.query_one(&self.sql.read_generation, &[]).await?;
        let generation = to_u64(column(&row, 0)?)?;
        if let Some(states) = self.cached_lifecycles(generation) {
            return Ok(states);
        }
        // Read after the generation: states at least as new as it, so
        // labelling them with it at worst reads them again next time.
        let rows = self.query(&self.sql.load_lifecycles, &[]).await?;
        let states = Arc::new(lifecycles_from_rows(&rows)?);
        self.cache_lifecycles(generation, &states);
        Ok(states)
    }

    /// The cached states when they are those of `generation`.
    pub(super) fn cached_lifecycles(&self, generation: u64) -> Option<Arc<Lifecycles>> {
        let cache = self
            .lifecycle_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*cache {
            Some((cached, states)) if *cached == generation => Some(Arc::clone(states)),
            _ => None,
        }
    }

    /// Caches `states` as those of `generation`, unless newer ones are cached.
    pub(super) fn cache_lifecycles(&self, generation: u64, states: &Arc<Lifecycles>) {
        let mut cache = self
            .lifecycle_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache
            .as_ref()
            .is_none_or(|(cached, _)| *cached <= generation)
        {
            *cache = Some((generation, Arc::clone(states)));
        }
    }

    /// `BackendStore::change_lifecycle`: one transaction under the head-row lock.
    pub(super) async fn apply_lifecycle(
        &self,
        stream: &StreamId,
        change: LifecycleChange,
    ) -> Result<(), Error> {
        self.check_open()?;
        self.shared
            .timed(self.apply_lifecycle_locked(stream, change))
            .await
    }

    async fn apply_lifecycle_locked(
        &self,
        stream: &StreamId,
        change: LifecycleChange,
    ) -> Result<(), Error> {
        let e = |e: tokio_postgres::Error| self.error(&e);
        let mut pooled = self.shared.pool.get().await?;
        let conn = pooled.conn();
        let lock = conn.statement(&self.sql.lock_head).await.map_err(e)?;
        let read = conn.statement(&self.sql.read_lifecycle).await.map_err(e)?;
        let upsert = conn
            .statement(&self.sql.upsert_lifecycle)
            .await
            .map_err(e)?;
        let bump = conn.statement(&self.sql.bump_generation).await.map_err(e)?;
        let snapshots = conn
            .statement(&self.sql.delete_stream_snapshots)
            .await
            .map_err(e)?;
        pooled.set_in_transaction(true);
        let client = &pooled.conn().client;
        let name = stream.as_str();
        let read_params: [&(dyn ToSql + Sync); 1] = [&name];
        let (_, head, row) = futures::try_join!(
            client.batch_execute("BEGIN"),
            client.query_one(&lock, &[]),
            client.query_one(&read, &read_params),
        )
        .map_err(e)?;
        let generation = to_u64(column(&head, 2)?)?;
        let current = match column::<Option<String>>(&row, 0)? {
            Some(_) => state_from_row(&row, 1)?,
            None => StreamLifecycle::default(),
        };
        let last = column::<Option<i64>>(&row, 5)?.map(to_u64).transpose()?;
        let next = match apply(stream, current, last, change) {
            Ok(next) if next != current => next,
            decided => {
                client.batch_execute("ROLLBACK").await.map_err(e)?;
                pooled.set_in_transaction(false);
                return decided.map(drop);
            }
        };
        let number = |n: Option<u64>| n.map(to_i64);
        let (truncate_before, max_count, max_age_s) = (
            number(next.truncate_before),
            number(next.retention.max_count),
            number(next.retention.max_age_s),
        );
        let params: [&(dyn ToSql + Sync); 5] = [
            &name,
            &truncate_before,
            &next.tombstoned,
            &max_count,
            &max_age_s,
        ];
        let incarnation = to_i64(self.incarnation);
        let store = self.store.as_str();
        let bump_params: [&(dyn ToSql + Sync); 2] = [&store, &incarnation];
        let snapshot_stream = name.as_bytes();
        let snapshot_params: [&(dyn ToSql + Sync); 1] = [&snapshot_stream];
        let bumped = futures::try_join!(
            client.execute(&upsert, &params),
            async {
                if next.tombstoned {
                    client.execute(&snapshots, &snapshot_params).await
                } else {
                    Ok(0)
                }
            },
            client.query_opt(&bump, &bump_params),
        )
        .map_err(e)?
        .2;
        let Some(bumped) = bumped else {
            client.batch_execute("ROLLBACK").await.map_err(e)?;
            pooled.set_in_transaction(false);
            return Err(Error::unavailable(
                Side::Storage,
                "postgres: another worker removed this store; try again",
            ));
        };
        client.batch_execute("COMMIT").await.map_err(e)?;
        pooled.set_in_transaction(false);
        let new_generation = to_u64(column(&bumped, 0)?)?;
        if let Some(states) = self.cached_lifecycles(generation) {
            let mut states = (*states).clone();
            states.insert(name.to_owned(), next);
            self.cache_lifecycles(new_generation, &Arc::new(states));
        }
        self.known_lifecycle_moved(generation, new_generation);
        Ok(())
    }

    /// `BackendStore::compact`; see the module docs.
    pub(super) async fn compact_hidden(&self, view: &View) -> Result<Compacted, Error> {
        self.check_open()?;
        let bytes_before = self.disk_bytes().await?;
        let mut removed = 0;
        if !view.hides_nothing() {
            self.install_compacted_ids_trigger().await?;
            removed = self.delete_hidden(view).await?;
        }
        self.vacuum().await?;
        let bytes_after = self.disk_bytes().await?;
        Ok(Compacted {
            removed,
            bytes_before,
            bytes_after,
        })
    }

    /// Walks the log and deletes what `view` hides; returns the events deleted.
    async fn delete_hidden(&self, view: &View) -> Result<u64, Error> {
        let mut removed = 0;
        let mut from = 0i64;
        loop {
            let rows = self
                .query(&self.sql.compaction_page, &[&from, &COMPACT_PAGE_EVENTS])
                .await?;
            let Some(last) = rows.last() else {
                return Ok(removed);
            };
            from = column::<i64>(last, 0)?.saturating_add(1);
            let mut doomed = Vec::new();
            for row in &rows {
                let stream: &str = column(row, 1)?;
                let version = to_u64(column(row, 2)?)?;
                let created_us = to_u64(column(row, 3)?)?;
                let last = to_u64(column(row, 4)?)?;
                if !view.shows_stored(stream, last, version, created_us) {
                    doomed.push(column::<i64>(row, 0)?);
                }
            }
            if !doomed.is_empty() {
                let row = self.query_one(&self.sql.compact_events, &[&doomed]).await?;
                removed += to_u64(column(&row, 0)?)?;
            }
            if (rows.len() as i64) < COMPACT_PAGE_EVENTS {
                return Ok(removed);
            }
        }
    }

    /// Installs the trigger of [`compacted_ids_trigger_ddl`] if it is
    /// missing, under the catalog lock (two workers compacting at once).
    async fn install_compacted_ids_trigger(&self) -> Result<(), Error> {
        let events = format!("\"{}\".events", self.schema);
        let row = self
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger
                                WHERE tgrelid = to_regclass($1) AND tgname = $2)",
                &[&events, &COMPACTED_IDS_TRIGGER],
            )
            .await?;
        if column::<bool>(&row, 0)? {
            return Ok(());
        }
        self.shared
            .timed(async {
                let mut pooled = self.shared.locked_catalog().await?;
                let ddl = format!("{} COMMIT", compacted_ids_trigger_ddl(&self.schema));
                pooled
                    .conn()
                    .client
                    .batch_execute(&ddl)
                    .await
                    .map_err(|e| self.error(&e))?;
                pooled.set_in_transaction(false);
                Ok(())
            })
            .await
    }

    /// `VACUUM (ANALYZE)` of the tables compaction and tombstones delete
    /// from, on a connection of its own with a statement timeout of
    /// [`VACUUM_TIMEOUT_MS`] (then dropped, never pooled with it).
    async fn vacuum(&self) -> Result<(), Error> {
        let s = format!("\"{}\"", self.schema);
        let timeout = format!("SET statement_timeout = {VACUUM_TIMEOUT_MS}");
        // A statement of its own: several in one message run as one
        // transaction, which VACUUM refuses.
        let vacuum = format!("VACUUM (ANALYZE) {s}.events, {s}.compacted_ids, {s}.snapshots");
        let limit = Duration::from_millis(VACUUM_TIMEOUT_MS) + VACUUM_CLIENT_MARGIN;
        let work = async {
            let mut pooled = self.shared.pool.get().await?;
            let client = &pooled.conn().client;
            let done = match client.batch_execute(&timeout).await {
                Ok(()) => client.batch_execute(&vacuum).await,
                Err(e) => Err(e),
            };
            pooled.spoil();
            done.map_err(|e| self.error(&e))
        };
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(Error::unavailable(
                Side::Storage,
                format!(
                    "postgres: VACUUM gave no answer within {} ms",
                    limit.as_millis()
                ),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifecycle_ddl_only_adds_what_is_missing() {
        let ddl = lifecycle_ddl("gs_x");
        assert!(ddl.contains("ADD COLUMN IF NOT EXISTS lifecycle_generation"));
        assert_eq!(ddl.matches("CREATE TABLE IF NOT EXISTS").count(), 2);
        assert_eq!(lifecycle_table("gs_x"), "\"gs_x\".compacted_ids");
    }
}
