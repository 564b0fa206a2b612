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
//! Most batches take one round trip instead. The store's writer remembers
//! the versions of the streams it wrote or read ([`Known`]), all true as of
//! one head (next position, stream count and lifecycle generation, whose
//! lifecycle states the store caches). A batch without conditions whose
//! streams it knows (or, when it knows every stream of the store, that are
//! new) is staged over that memory, as if none of its event ids were
//! stored, and sent whole in one pipeline: lock the head, insert, upsert,
//! update the head, commit. Every write holds only while the head row is
//! still the one the batch was staged over and the catalog row still names
//! the same incarnation of the store, so if another worker committed, a
//! lifecycle changed (or the store was removed and created again) meanwhile
//! nothing is written; an id that was stored after all breaks the unique
//! index (or, for a compacted one, the trigger of `lifecycle`) and rolls
//! the transaction back. Either way the batch then runs the two-round-trip
//! way and its answers come from there. Only the answers of a batch that
//! committed with the head it expected are given. Anything that changes a
//! stream's version or lifecycle must therefore move the head row's next
//! position, stream count or lifecycle generation.
//!
//! A transaction that loses a race (serialisation failure, deadlock, unique
//! violation) is rolled back whole and run again, so a batch never commits
//! in part.

use std::collections::HashMap;

use std::sync::Arc;

use gater_core::{
    AppendCondition, Error, EventId, Position, Query, Side, StreamLifecycle, Version,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::error::is_conflict;
use super::lifecycle::lifecycles_from_rows;
use super::query;
use super::store::{column, counters_from_row, to_i64, to_u64, PostgresStore};
use crate::backend::{BatchOutcome, Counters, PendingAppend};
use crate::lifecycle::{Lifecycles, View};
use crate::stage::{stage_batch, Location, Staged, Stored, Writes};

/// Runs of one batch's transaction before a lost race is reported as unavailable.
const APPEND_ATTEMPTS_MAX: u32 = 3;
/// Event bytes sent in one insert statement; bigger batches insert in chunks.
const INSERT_CHUNK_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Streams whose version the writer remembers; it forgets them all when full.
const KNOWN_STREAMS_MAX: usize = 65_536;
/// Matches of an append condition read per page when some events are hidden.
const CONDITION_PAGE_EVENTS: i64 = 256;

/// Versions of streams as of one head, remembered by the store's writer
/// between batches (the engine runs one writer per store on a worker).
#[derive(Debug, Default)]
pub(super) struct Known {
    /// The counters the versions are true at; `None` when nothing is known.
    at: Option<Counters>,
    /// The head row's lifecycle generation at `at`: a batch staged from
    /// memory takes the lifecycle states cached for it.
    generation: u64,
    versions: HashMap<String, Version>,
}

impl Known {
    /// After a batch committed (or was rolled back) over the head `before`
    /// at lifecycle `generation`: `read` are the versions it read under the
    /// head lock, `written` the streams it wrote, `after` the counters it left.
    fn learn<'s>(
        &mut self,
        before: Counters,
        generation: u64,
        read: impl IntoIterator<Item = (&'s str, Version)>,
        written: &crate::stage::Heads<'s>,
        after: Counters,
    ) {
        if self.at != Some(before) || self.versions.len() + written.len() > KNOWN_STREAMS_MAX {
            // Another worker may have written any stream since.
            self.versions.clear();
        }
        for (stream, version) in read
            .into_iter()
            .chain(written.iter().map(|(s, v)| (*s, *v)))
        {
            match self.versions.get_mut(stream) {
                Some(known) => *known = version,
                None => {
                    self.versions.insert(stream.to_owned(), version);
                }
            }
        }
        self.at = Some(after);
        self.generation = generation;
    }

    /// A lifecycle change committed, moving the generation from `from` to
    /// `to`: the versions stay true (a change writes none).
    pub(super) fn lifecycle_moved(&mut self, from: u64, to: u64) {
        if self.at.is_some() && self.generation == from {
            self.generation = to;
        }
    }

    /// Forgets everything (a batch ended in an unknown way).
    fn forget(&mut self) {
        self.at = None;
        self.versions.clear();
    }
}

/// The store as [`Known`] tells it, for staging a batch without reading:
/// no event id of the batch is taken as stored (the unique index, and for
/// compacted ids the trigger, check that), and a stream it does not know is
/// new only when it knows them all.
struct Remembered<'k> {
    known: &'k Known,
    /// The lifecycle states at the known generation.
    lifecycles: &'k Lifecycles,
    stream_count: u64,
    /// A stream was asked for that is neither known nor known to be new.
    missed: bool,
}

impl Stored for Remembered<'_> {
    fn version(&mut self, stream: &str) -> Result<Option<Version>, Error> {
        let found = self.known.versions.get(stream).copied();
        if found.is_none() && self.known.versions.len() as u64 != self.stream_count {
            self.missed = true;
        }
        Ok(found)
    }

    fn lifecycle(&mut self, stream: &str) -> Result<StreamLifecycle, Error> {
        Ok(self.lifecycles.get(stream).copied().unwrap_or_default())
    }

    fn location(&mut self, _id: &EventId) -> Result<Option<Location<'_>>, Error> {
        Ok(None)
    }

    fn first_match(
        &mut self,
        _query: &Query,
        _after: Option<Position>,
    ) -> Result<Option<Position>, Error> {
        // Batches with conditions are never staged from memory.
        self.missed = true;
        Ok(None)
    }
}

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
    /// What readers see (hidden events match no condition).
    view: View,
    /// Each condition of the batch with the first stored event it matches.
    conditions: Vec<(&'a AppendCondition, Option<Position>)>,
}

/// What a batch's writes are stamped with and hold only under.
struct Guard<'s> {
    created_us: u64,
    /// The counters the batch was staged over.
    before: Counters,
    /// The head row's lifecycle generation the batch was staged over.
    generation: u64,
    store: &'s str,
    /// The catalog row's `created_us` of the store the batch was staged for.
    incarnation: u64,
}

/// The rows of the accepted appends, in insert statements of bounded size.
struct Chunks<'a> {
    chunks: Vec<Rows<'a>>,
}

impl PostgresStore {
    /// A failed statement of the append transaction, a conflict when it
    /// lost a race with another worker.
    fn failed(&self, e: &tokio_postgres::Error) -> Failed {
        Failed {
            conflict: is_conflict(e),
            error: self.error(e),
        }
    }

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
                    self.known().forget();
                    return Err(Error::unavailable(
                        Side::Storage,
                        "postgres: the append transaction got no answer in time",
                    ));
                }
            };
            self.known().forget();
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

    /// Tells [`Known`] that a lifecycle change moved the generation `from` → `to`.
    pub(super) fn known_lifecycle_moved(&self, from: u64, to: u64) {
        self.known().lifecycle_moved(from, to);
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One run of the batch: in one round trip from what the writer
    /// remembers when that can be done, else reading the store first.
    async fn append_once(
        &self,
        appends: &[PendingAppend],
        created_us: u64,
    ) -> Result<BatchOutcome, Failed> {
        if let Some(outcome) = self.append_remembered(appends, created_us).await? {
            return Ok(outcome);
        }
        self.append_read(appends, created_us).await
    }

    /// The batch staged over [`Known`] and written in one round trip;
    /// `None` when it cannot be staged so, or when the head had moved or an
    /// id was stored after all (nothing was written then).
    async fn append_remembered(
        &self,
        appends: &[PendingAppend],
        created_us: u64,
    ) -> Result<Option<BatchOutcome>, Failed> {
        if appends.iter().any(|a| a.condition.is_some()) {
            return Ok(None);
        }
        let mut chunks = Chunks {
            chunks: vec![Rows::default()],
        };
        let (staged, before, generation) = {
            let known = self.known();
            let Some(before) = known.at else {
                return Ok(None);
            };
            let generation = known.generation;
            let Some(lifecycles) = self.cached_lifecycles(generation) else {
                return Ok(None);
            };
            let mut remembered = Remembered {
                known: &known,
                lifecycles: &lifecycles,
                stream_count: before.stream_count,
                missed: false,
            };
            let staged = stage_batch(appends, before, &mut remembered, &mut chunks);
            // Only a batch accepted whole is sure of its answers: a refusal
            // may be an idempotent re-send, which only the read tells.
            if remembered.missed || !staged.written() || staged.results.iter().any(Result::is_err) {
                return Ok(None);
            }
            (staged, before, generation)
        };
        let fail = |e: tokio_postgres::Error| self.failed(&e);
        let mut pooled = self.shared.pool.get().await.map_err(Failed::fatal)?;
        let conn = pooled.conn();
        let sql = &self.sql;
        let lock = conn.statement(&sql.lock_head).await.map_err(fail)?;
        let insert = conn.statement(&sql.insert_events).await.map_err(fail)?;
        let upsert = conn.statement(&sql.upsert_streams).await.map_err(fail)?;
        let update = conn.statement(&sql.update_head).await.map_err(fail)?;
        pooled.set_in_transaction(true);
        let client = &pooled.conn().client;
        let written = futures::try_join!(
            client.batch_execute(self.begin_sql()),
            client.query_one(&lock, &[]),
            chunks.write(
                client,
                [&insert, &upsert, &update],
                &staged,
                Guard {
                    created_us,
                    before,
                    generation,
                    store: self.store.as_str(),
                    incarnation: self.incarnation,
                },
            ),
        );
        match written {
            Ok((_, _, true)) => {}
            Ok((_, _, false)) => {
                // Another worker committed since: the transaction wrote nothing.
                pooled.set_in_transaction(false);
                self.known().forget();
                return Ok(None);
            }
            Err(e) if is_conflict(&e) => {
                // A stored id broke the unique index and the transaction
                // rolled back; the connection is dropped with it.
                self.known().forget();
                return Ok(None);
            }
            Err(e) => return Err(fail(e)),
        }
        pooled.set_in_transaction(false);
        self.known().learn(
            before,
            generation,
            std::iter::empty(),
            &staged.heads,
            staged.counters,
        );
        self.advance_counters(staged.counters);
        Ok(Some(BatchOutcome {
            results: staged.results,
            head: staged.counters.head,
        }))
    }

    /// The transaction's first statement, with the store's durability.
    fn begin_sql(&self) -> &'static str {
        if self.config.fsync {
            "BEGIN"
        } else {
            // The store asked for speed over durability on power loss.
            "BEGIN; SET LOCAL synchronous_commit = off"
        }
    }

    /// The batch staged over the store as read under the head lock, in two round trips.
    async fn append_read(
        &self,
        appends: &[PendingAppend],
        created_us: u64,
    ) -> Result<BatchOutcome, Failed> {
        let fail = |e: tokio_postgres::Error| self.failed(&e);
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
        let begin = self.begin_sql();
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
        let generation = column(&head, 2).and_then(to_u64).map_err(Failed::fatal)?;
        // Under the head-row lock: no lifecycle change and no other
        // worker's append commits until this transaction ends, so the
        // states and what the conditions see stay true.
        let lifecycles = match self.cached_lifecycles(generation) {
            Some(states) => states,
            None => {
                let rows = client
                    .query(self.sql.load_lifecycles.as_str(), &[])
                    .await
                    .map_err(fail)?;
                let states = Arc::new(lifecycles_from_rows(&rows).map_err(Failed::fatal)?);
                self.cache_lifecycles(generation, &states);
                states
            }
        };
        let view = View::new(lifecycles, self.config.retention, created_us);
        let mut found =
            Found::load(&found_ids, &found_versions, &streams, view).map_err(Failed::fatal)?;
        found.conditions = self
            .check_conditions(client, appends, &found.view)
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
            let held = chunks
                .write(
                    client,
                    [&insert, &upsert, &update],
                    &staged,
                    Guard {
                        created_us,
                        before: counters,
                        generation,
                        store: self.store.as_str(),
                        incarnation: self.incarnation,
                    },
                )
                .await
                .map_err(fail)?;
            if !held {
                // The head is locked, so only the catalog row can have
                // changed: another worker removed this store (and maybe
                // created it again), which this worker's next head poll
                // finds.
                return Err(Failed::fatal(Error::unavailable(
                    Side::Storage,
                    "postgres: another worker removed this store; try again",
                )));
            }
        } else {
            client.batch_execute("ROLLBACK").await.map_err(fail)?;
        }
        pooled.set_in_transaction(false);
        self.known().learn(
            counters,
            generation,
            found.versions.iter().map(|(s, v)| (*s, *v)),
            &staged.heads,
            staged.counters,
        );
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
    /// The first stored match that `view` shows of every condition of the
    /// batch: the first page of each pipelined, further pages (when a page
    /// held only hidden matches) one after the other.
    async fn check_conditions<'a>(
        &self,
        client: &Client,
        appends: &'a [PendingAppend],
        view: &View,
    ) -> Result<Vec<(&'a AppendCondition, Option<Position>)>, ConditionError> {
        let conditions: Vec<&AppendCondition> = appends
            .iter()
            .filter_map(|a| a.condition.as_ref())
            .collect();
        // Without anything hidden the first match is the answer.
        let limit = if view.hides_nothing() {
            1
        } else {
            CONDITION_PAGE_EVENTS
        };
        let firsts = futures::future::try_join_all(conditions.iter().map(|c| {
            let after = c.after.map_or(-1, |p| to_i64(p.0));
            self.match_page(client, c, after, limit)
        }))
        .await?;
        let mut found = Vec::with_capacity(conditions.len());
        for (condition, mut page) in conditions.into_iter().zip(firsts) {
            let position = loop {
                match first_shown(view, &page, limit).map_err(ConditionError::Decode)? {
                    Ok(position) => break position,
                    Err(after) => page = self.match_page(client, condition, after, limit).await?,
                }
            };
            found.push((condition, position));
        }
        Ok(found)
    }

    /// Up to `limit` stored matches of `condition` after position `after`.
    async fn match_page(
        &self,
        client: &Client,
        condition: &AppendCondition,
        after: i64,
        limit: i64,
    ) -> Result<Vec<tokio_postgres::Row>, ConditionError> {
        let sql = query::matches(&self.schema, &condition.fail_if_events_match, after, limit);
        let params = sql.params();
        client
            .query(sql.text.as_str(), &params)
            .await
            .map_err(ConditionError::Sql)
    }
}

/// The first match of a page of `query::matches` rows (of at most `limit`)
/// that `view` shows: `Ok` with it, or `None` when the page ends the
/// matches; `Err` with the position to read on after when a full page
/// held only hidden ones.
fn first_shown(
    view: &View,
    page: &[tokio_postgres::Row],
    limit: i64,
) -> Result<Result<Option<Position>, i64>, Error> {
    for row in page {
        let position = to_u64(column(row, 0)?)?;
        let stream: &str = column(row, 1)?;
        let version = to_u64(column(row, 2)?)?;
        let created_us = to_u64(column(row, 3)?)?;
        let last = to_u64(column(row, 4)?)?;
        if view.shows_stored(stream, last, version, created_us) {
            return Ok(Ok(Some(Position(position))));
        }
    }
    match page.last() {
        Some(last) if page.len() as i64 >= limit => Ok(Err(column(last, 0)?)),
        _ => Ok(Ok(None)),
    }
}

impl<'a> Found<'a> {
    /// Takes in the stored locations of the batch's ids and the versions of
    /// its `streams` (sorted).
    fn load(
        ids: &[tokio_postgres::Row],
        versions: &[tokio_postgres::Row],
        streams: &[&'a str],
        view: View,
    ) -> Result<Self, Error> {
        let mut found = Found {
            ids: HashMap::with_capacity(ids.len()),
            versions: HashMap::with_capacity(versions.len()),
            view,
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

    fn lifecycle(&mut self, stream: &str) -> Result<StreamLifecycle, Error> {
        Ok(self.view.lifecycle(stream))
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
    /// Writes the staged rows, stream versions and head and commits,
    /// pipelined; every write holds only while `guard` does. `false` when
    /// it did not: the transaction wrote nothing.
    async fn write(
        &self,
        client: &Client,
        [insert, upsert, update]: [&Statement; 3],
        staged: &Staged<'_>,
        guard: Guard<'_>,
    ) -> Result<bool, tokio_postgres::Error> {
        let created_us = to_i64(guard.created_us);
        let before_next = to_i64(guard.before.head.map_or(0, |h| h.0 + 1));
        let before_streams = to_i64(guard.before.stream_count);
        let incarnation = to_i64(guard.incarnation);
        let generation = to_i64(guard.generation);
        let store = guard.store;
        let inserts = futures::future::try_join_all(
            self.chunks
                .iter()
                .filter(|rows| !rows.positions.is_empty())
                .map(|rows| {
                    let params: [&(dyn ToSql + Sync); 15] = [
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
                        &before_next,
                        &before_streams,
                        &store,
                        &incarnation,
                        &generation,
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
        let upsert_params: [&(dyn ToSql + Sync); 7] = [
            &streams,
            &versions,
            &before_next,
            &before_streams,
            &store,
            &incarnation,
            &generation,
        ];
        let update_params: [&(dyn ToSql + Sync); 7] = [
            &next,
            &stream_count,
            &before_next,
            &before_streams,
            &store,
            &incarnation,
            &generation,
        ];
        // COMMIT rides in the same round trip. Should a write fail, its error
        // arrives first and is what this returns, and the server turns the
        // COMMIT of the aborted transaction into a rollback. The head is
        // updated last, so the writes before it saw the head as it was.
        let (_, _, updated, _) = futures::try_join!(
            inserts,
            client.execute(upsert, &upsert_params),
            client.execute(update, &update_params),
            client.batch_execute("COMMIT"),
        )?;
        Ok(updated == 1)
    }
}
