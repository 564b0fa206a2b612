//! The PostgreSQL backend's group commit: one transaction per batch.
//!
//! The transaction locks the store's head row first, so it runs alone among
//! every worker's appends to the store; then it looks up, in two queries for
//! the whole batch, which event ids are already stored and the current
//! version of every stream the batch touches. The batch is staged over that
//! state (`crate::stage`, exactly as in the embedded backend), and the
//! accepted appends are written with one multi-row insert, one stream upsert
//! and one head update, and committed. The statements of each of the two
//! phases are pipelined on the connection: a batch costs two round trips
//! plus the commit's flush.
//!
//! A transaction that loses a race (serialisation failure, deadlock, unique
//! violation) is rolled back whole and run again, so a batch never commits
//! in part.

use std::collections::HashMap;

use gater_core::{AppendCondition, Error, EventId, Position, Query, Side, Version};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::error::is_conflict;
use super::query;
use super::store::{column, counters_from_row, to_i64, to_u64, PostgresStore};
use crate::backend::{BatchOutcome, PendingAppend};
use crate::stage::{stage_batch, Location, Staged, Stored, Writes};

/// Runs of one batch's transaction before a lost race is reported as unavailable.
const APPEND_ATTEMPTS_MAX: u32 = 3;
/// Event bytes sent in one insert statement; bigger batches insert in chunks.
const INSERT_CHUNK_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Why one run of the transaction failed.
struct Failed {
    error: Error,
    /// Lost a race with another worker: running again may succeed.
    conflict: bool,
}

impl Failed {
    fn fatal(error: Error) -> Self {
        Failed {
            error,
            conflict: false,
        }
    }
}

/// Column arrays of events to insert, borrowing the batch.
#[derive(Default)]
struct Rows<'a> {
    positions: Vec<i64>,
    streams: Vec<&'a str>,
    versions: Vec<i64>,
    ids: Vec<Uuid>,
    types: Vec<&'a [u8]>,
    data: Vec<&'a [u8]>,
    metadata: Vec<&'a [u8]>,
    content_types: Vec<&'a [u8]>,
    /// Each event's tags as a JSON array (SQL arrays of arrays must be rectangular).
    tags: Vec<String>,
    bytes: usize,
}

/// What the database held before the batch, read in its transaction: where
/// the batch's event ids are stored and the versions of its streams.
struct Found<'a> {
    ids: HashMap<Uuid, (String, Version, Position)>,
    versions: HashMap<&'a str, Version>,
    /// Each condition of the batch with the first stored event it matches.
    conditions: Vec<(&'a AppendCondition, Option<Position>)>,
}

/// The rows of the accepted appends, in insert statements of bounded size.
struct Chunks<'a> {
    chunks: Vec<Rows<'a>>,
}

impl PostgresStore {
    /// `BackendStore::append_batch`: runs the batch's transaction, again after a lost race.
    pub(super) async fn append(
        &self,
        appends: Vec<PendingAppend>,
        created_us: u64,
    ) -> Result<BatchOutcome, Error> {
        self.check_open()?;
        let mut attempt = 1;
        loop {
            let run = tokio::time::timeout(
                self.shared.client_timeout,
                self.append_once(&appends, created_us),
            )
            .await;
            let failed = match run {
                Ok(Ok(outcome)) => return Ok(outcome),
                Ok(Err(failed)) => failed,
                Err(_) => {
                    return Err(Error::unavailable(
                        Side::Storage,
                        "postgres: the append transaction got no answer in time",
                    ))
                }
            };
            if !failed.conflict {
                return Err(failed.error);
            }
            if attempt >= APPEND_ATTEMPTS_MAX {
                return Err(Error::unavailable(
                    Side::Storage,
                    format!(
                        "postgres: the append lost {attempt} races with other workers: {}",
                        failed.error
                    ),
                ));
            }
            tracing::debug!(store = %self.store, error = %failed.error, "append transaction lost a race; running it again");
            attempt += 1;
        }
    }

    async fn append_once(
        &self,
        appends: &[PendingAppend],
        created_us: u64,
    ) -> Result<BatchOutcome, Failed> {
        let fail = |e: tokio_postgres::Error| Failed {
            conflict: is_conflict(&e),
            error: self.error(&e),
        };
        let mut pooled = self.shared.pool.get().await.map_err(Failed::fatal)?;
        let conn = pooled.conn();
        let sql = &self.sql;
        let lock = conn.statement(&sql.lock_head).await.map_err(fail)?;
        let find_ids = conn.statement(&sql.find_ids).await.map_err(fail)?;
        let find_versions = conn.statement(&sql.find_versions).await.map_err(fail)?;
        let insert = conn.statement(&sql.insert_events).await.map_err(fail)?;
        let upsert = conn.statement(&sql.upsert_streams).await.map_err(fail)?;
        let update = conn.statement(&sql.update_head).await.map_err(fail)?;
        let ids: Vec<Uuid> = appends
            .iter()
            .flat_map(|a| {
                a.parts
                    .iter()
                    .flat_map(|p| p.events.iter().map(|e| e.id.uuid()))
            })
            .collect();
        let mut streams: Vec<&str> = appends
            .iter()
            .flat_map(|a| a.parts.iter().map(|p| p.stream.as_str()))
            .collect();
        streams.sort_unstable();
        streams.dedup();

        pooled.set_in_transaction(true);
        let client = &pooled.conn().client;
        let begin = if self.config.fsync {
            "BEGIN"
        } else {
            // The store asked for speed over durability on power loss.
            "BEGIN; SET LOCAL synchronous_commit = off"
        };
        let ids_params: [&(dyn ToSql + Sync); 1] = [&ids];
        let streams_params: [&(dyn ToSql + Sync); 1] = [&streams];
        let (_, head, found_ids, found_versions) = futures::try_join!(
            client.batch_execute(begin),
            client.query_one(&lock, &[]),
            client.query(&find_ids, &ids_params),
            client.query(&find_versions, &streams_params),
        )
        .map_err(fail)?;
        let counters = counters_from_row(&head).map_err(Failed::fatal)?;
        let mut found =
            Found::load(&found_ids, &found_versions, &streams).map_err(Failed::fatal)?;
        // Under the head-row lock: no other worker commits until this
        // transaction ends, so what the conditions see stays true.
        found.conditions = self
            .check_conditions(client, appends)
            .await
            .map_err(|e| match e {
                ConditionError::Sql(e) => fail(e),
                ConditionError::Decode(e) => Failed::fatal(e),
            })?;
        let mut chunks = Chunks {
            chunks: vec![Rows::default()],
        };
        let staged = stage_batch(appends, counters, &mut found, &mut chunks);
        if staged.written() {
            chunks
                .write(client, [&insert, &upsert, &update], &staged, created_us)
                .await
                .map_err(fail)?;
        } else {
            client.batch_execute("ROLLBACK").await.map_err(fail)?;
        }
        pooled.set_in_transaction(false);
        self.advance_counters(staged.counters);
        Ok(BatchOutcome {
            results: staged.results,
            head: staged.counters.head,
        })
    }
}

/// Why reading a condition's first match failed.
enum ConditionError {
    Sql(tokio_postgres::Error),
    Decode(Error),
}

impl PostgresStore {
    /// The first stored match of every condition of the batch, pipelined.
    async fn check_conditions<'a>(
        &self,
        client: &Client,
        appends: &'a [PendingAppend],
    ) -> Result<Vec<(&'a AppendCondition, Option<Position>)>, ConditionError> {
        let conditions: Vec<&AppendCondition> = appends
            .iter()
            .filter_map(|a| a.condition.as_ref())
            .collect();
        let sqls: Vec<_> = conditions
            .iter()
            .map(|c| {
                let after = c.after.map_or(-1, |p| to_i64(p.0));
                query::first_match(&self.schema, &c.fail_if_events_match, after)
            })
            .collect();
        let rows = futures::future::try_join_all(sqls.iter().map(|sql| async move {
            let params = sql.params();
            client.query_opt(sql.text.as_str(), &params).await
        }))
        .await
        .map_err(ConditionError::Sql)?;
        let mut found = Vec::with_capacity(conditions.len());
        for (condition, row) in conditions.into_iter().zip(rows) {
            let position = match row {
                Some(row) => Some(Position(
                    to_u64(column(&row, 0).map_err(ConditionError::Decode)?)
                        .map_err(ConditionError::Decode)?,
                )),
                None => None,
            };
            found.push((condition, position));
        }
        Ok(found)
    }
}

impl<'a> Found<'a> {
    /// Takes in the stored locations of the batch's ids and the versions of
    /// its `streams` (sorted).
    fn load(
        ids: &[tokio_postgres::Row],
        versions: &[tokio_postgres::Row],
        streams: &[&'a str],
    ) -> Result<Self, Error> {
        let mut found = Found {
            ids: HashMap::with_capacity(ids.len()),
            versions: HashMap::with_capacity(versions.len()),
            conditions: Vec::new(),
        };
        for row in ids {
            let location = (
                column(row, 1)?,
                to_u64(column(row, 2)?)?,
                Position(to_u64(column(row, 3)?)?),
            );
            found.ids.insert(column(row, 0)?, location);
        }
        for row in versions {
            let stream: &str = column(row, 0)?;
            if let Ok(i) = streams.binary_search(&stream) {
                found.versions.insert(streams[i], to_u64(column(row, 1)?)?);
            }
        }
        Ok(found)
    }
}

impl Stored for Found<'_> {
    fn version(&mut self, stream: &str) -> Result<Option<Version>, Error> {
        Ok(self.versions.get(stream).copied())
    }

    fn location(&mut self, id: &EventId) -> Result<Option<Location<'_>>, Error> {
        Ok(self
            .ids
            .get(&id.uuid())
            .map(|(stream, version, position)| Location {
                stream,
                version: *version,
                position: *position,
            }))
    }

    fn first_match(
        &mut self,
        query: &Query,
        after: Option<Position>,
    ) -> Result<Option<Position>, Error> {
        self.conditions
            .iter()
            .find(|(c, _)| &c.fail_if_events_match == query && c.after == after)
            .map(|(_, found)| *found)
            .ok_or_else(|| Error::Storage("a condition of the batch was not read".into()))
    }
}

impl<'a> Writes<'a> for Chunks<'a> {
    fn stage(
        &mut self,
        append: &'a PendingAppend,
        first_versions: &[Version],
        first_position: Position,
    ) -> Result<(), Error> {
        let mut position = first_position.0;
        for (part, &first_version) in append.parts.iter().zip(first_versions) {
            let stream = part.stream.as_str();
            for (i, event) in part.events.iter().enumerate() {
                let size = event.size_bytes();
                let full = self.chunks.last().is_some_and(|rows| {
                    !rows.positions.is_empty() && rows.bytes + size > INSERT_CHUNK_BYTES_MAX
                });
                if full {
                    self.chunks.push(Rows::default());
                }
                let Some(rows) = self.chunks.last_mut() else {
                    unreachable!("staging starts with one chunk and only adds more");
                };
                let tags = serde_json::to_string(&event.tags)
                    .map_err(|e| Error::Storage(format!("encoding tags: {e}")))?;
                rows.positions.push(to_i64(position));
                rows.streams.push(stream);
                rows.versions.push(to_i64(first_version + i as u64));
                rows.ids.push(event.id.uuid());
                rows.types.push(event.event_type.as_bytes());
                rows.data.push(&event.data);
                rows.metadata.push(&event.metadata);
                rows.content_types.push(event.content_type.as_bytes());
                rows.tags.push(tags);
                rows.bytes += size;
                position += 1;
            }
        }
        Ok(())
    }
}

impl Chunks<'_> {
    /// Writes the staged rows, stream versions and head and commits, pipelined.
    async fn write(
        &self,
        client: &Client,
        [insert, upsert, update]: [&Statement; 3],
        staged: &Staged<'_>,
        created_us: u64,
    ) -> Result<(), tokio_postgres::Error> {
        let created_us = to_i64(created_us);
        let inserts = futures::future::try_join_all(
            self.chunks
                .iter()
                .filter(|rows| !rows.positions.is_empty())
                .map(|rows| {
                    let params: [&(dyn ToSql + Sync); 10] = [
                        &rows.positions,
                        &rows.streams,
                        &rows.versions,
                        &rows.ids,
                        &rows.types,
                        &rows.data,
                        &rows.metadata,
                        &rows.content_types,
                        &created_us,
                        &rows.tags,
                    ];
                    async move { client.execute(insert, &params).await }
                }),
        );
        // Streams are upserted in id order.
        let mut heads: Vec<(&str, Version)> = staged.heads.iter().map(|(s, v)| (*s, *v)).collect();
        heads.sort_unstable();
        let streams: Vec<&str> = heads.iter().map(|(s, _)| *s).collect();
        let versions: Vec<i64> = heads.iter().map(|(_, v)| to_i64(*v)).collect();
        let next = to_i64(staged.counters.head.map_or(0, |h| h.0 + 1));
        let stream_count = to_i64(staged.counters.stream_count);
        let upsert_params: [&(dyn ToSql + Sync); 2] = [&streams, &versions];
        let update_params: [&(dyn ToSql + Sync); 2] = [&next, &stream_count];
        // COMMIT rides in the same round trip. Should a write fail, its error
        // arrives first and is what this returns, and the server turns the
        // COMMIT of the aborted transaction into a rollback.
        futures::try_join!(
            inserts,
            client.execute(upsert, &upsert_params),
            client.execute(update, &update_params),
            client.batch_execute("COMMIT"),
        )?;
        Ok(())
    }
}
