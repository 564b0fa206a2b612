//! The PostgreSQL backend's group commit: one transaction per batch.
//!
//! The transaction locks the store's head row first, so it runs alone among
//! every worker's appends to the store; then it looks up, in two queries for
//! the whole batch, which event ids are already stored and the current
//! version of every stream the batch touches. Each append is checked in
//! order against that state plus what earlier appends of the batch staged
//! (exactly as the embedded backend does), and the accepted ones are written
//! with one multi-row insert, one stream upsert and one head update, and
//! committed. The statements of each of the two phases are pipelined on the
//! connection: a batch costs two round trips plus the commit's flush.
//!
//! A transaction that loses a race (serialisation failure, deadlock, unique
//! violation) is rolled back whole and run again, so a batch never commits
//! in part.

use std::collections::{BTreeMap, HashMap};

use gater_core::{AppendResult, Error, Position, Side, Version};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use uuid::Uuid;

use super::error::is_conflict;
use super::store::{counters_from_row, to_i64, to_u64, PostgresStore};
use crate::backend::{BatchOutcome, Counters, PendingAppend};

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

/// Where an event id is stored.
#[derive(Clone)]
struct Location {
    stream: String,
    version: Version,
    position: Position,
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
    bytes: usize,
}

/// What the appends accepted so far in this batch have changed.
struct Staged<'a> {
    next_position: u64,
    stream_count: u64,
    /// Current version of every stream the batch touches (`None`: no stream).
    versions: HashMap<&'a str, Option<Version>>,
    /// Stored and staged event ids of the batch.
    ids: HashMap<Uuid, Location>,
    /// New stream versions, upserted once per stream.
    heads: BTreeMap<&'a str, Version>,
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
            .flat_map(|a| a.events.iter().map(|e| e.id.uuid()))
            .collect();
        let mut streams: Vec<&str> = appends.iter().map(|a| a.stream.as_str()).collect();
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
        let mut staged = Staged::new(counters, &streams);
        staged
            .load(&found_ids, &found_versions)
            .map_err(Failed::fatal)?;
        let results: Vec<Result<AppendResult, Error>> =
            appends.iter().map(|append| staged.stage(append)).collect();
        let written = !staged.heads.is_empty();
        if written {
            staged
                .write(client, [&insert, &upsert, &update], created_us)
                .await
                .map_err(fail)?;
        }
        if !written {
            client.batch_execute("ROLLBACK").await.map_err(fail)?;
        }
        pooled.set_in_transaction(false);
        let after = Counters {
            head: staged.next_position.checked_sub(1).map(Position),
            event_count: staged.next_position,
            stream_count: staged.stream_count,
        };
        self.advance_counters(after);
        Ok(BatchOutcome {
            results,
            head: after.head,
        })
    }
}

impl<'a> Staged<'a> {
    fn new(counters: Counters, streams: &[&'a str]) -> Self {
        Staged {
            next_position: counters.event_count,
            stream_count: counters.stream_count,
            versions: streams.iter().map(|s| (*s, None)).collect(),
            ids: HashMap::new(),
            heads: BTreeMap::new(),
            chunks: vec![Rows::default()],
        }
    }

    /// Takes in the stored locations of the batch's ids and its streams' versions.
    fn load(
        &mut self,
        ids: &[tokio_postgres::Row],
        versions: &[tokio_postgres::Row],
    ) -> Result<(), Error> {
        for row in ids {
            let location = Location {
                stream: row.get(1),
                version: to_u64(row.get(2))?,
                position: Position(to_u64(row.get(3))?),
            };
            self.ids.insert(row.get(0), location);
        }
        for row in versions {
            let stream: String = row.get(0);
            let version = to_u64(row.get(1))?;
            if let Some(slot) = self.versions.get_mut(stream.as_str()) {
                *slot = Some(version);
            }
        }
        Ok(())
    }

    /// Checks one append and, if it is accepted and new, stages its rows.
    fn stage(&mut self, append: &'a PendingAppend) -> Result<AppendResult, Error> {
        if let Some(original) = self.earlier_result(append)? {
            return Ok(original);
        }
        let stream = append.stream.as_str();
        let current = self.versions.get(stream).copied().flatten();
        if !append.expected.is_satisfied_by(current) {
            return Err(Error::WrongExpectedVersion {
                expected: append.expected,
                current,
            });
        }
        let first_version = current.map_or(0, |v| v + 1);
        let first_position = self.next_position;
        for (i, event) in append.events.iter().enumerate() {
            let version = first_version + i as u64;
            let position = first_position + i as u64;
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
            rows.positions.push(to_i64(position));
            rows.streams.push(stream);
            rows.versions.push(to_i64(version));
            rows.ids.push(event.id.uuid());
            rows.types.push(event.event_type.as_bytes());
            rows.data.push(&event.data);
            rows.metadata.push(&event.metadata);
            rows.content_types.push(event.content_type.as_bytes());
            rows.bytes += size;
            let location = Location {
                stream: stream.to_owned(),
                version,
                position: Position(position),
            };
            self.ids.insert(event.id.uuid(), location);
        }
        let count = append.events.len() as u64;
        let last_version = first_version + count - 1;
        if current.is_none() {
            self.stream_count += 1;
        }
        self.versions.insert(stream, Some(last_version));
        self.heads.insert(stream, last_version);
        self.next_position += count;
        Ok(AppendResult {
            version: last_version,
            position: Position(first_position + count - 1),
        })
    }

    /// The idempotency check: `Some` with the original result when every id
    /// of `append` is already stored consecutively, in order, in its stream.
    fn earlier_result(&self, append: &PendingAppend) -> Result<Option<AppendResult>, Error> {
        let Some(first) = append.events.first() else {
            return Err(Error::invalid("an append needs at least one event"));
        };
        let Some(origin) = self.ids.get(&first.id.uuid()) else {
            for event in &append.events[1..] {
                if self.ids.contains_key(&event.id.uuid()) {
                    return Err(Error::DuplicateEventId { id: event.id });
                }
            }
            return Ok(None);
        };
        let mut last = origin;
        for (i, event) in append.events.iter().enumerate() {
            last = match self.ids.get(&event.id.uuid()) {
                Some(found)
                    if found.stream == append.stream.as_str()
                        && Some(found.version) == origin.version.checked_add(i as u64) =>
                {
                    found
                }
                Some(_) => return Err(Error::DuplicateEventId { id: event.id }),
                // Part of the append is stored and part is not: the stored part is the duplicate.
                None => return Err(Error::DuplicateEventId { id: first.id }),
            };
        }
        Ok(Some(AppendResult {
            version: last.version,
            position: last.position,
        }))
    }

    /// Writes the staged rows, stream versions and head and commits, pipelined.
    async fn write(
        &self,
        client: &Client,
        [insert, upsert, update]: [&Statement; 3],
        created_us: u64,
    ) -> Result<(), tokio_postgres::Error> {
        let created_us = to_i64(created_us);
        let inserts = futures::future::try_join_all(
            self.chunks
                .iter()
                .filter(|rows| !rows.positions.is_empty())
                .map(|rows| {
                    let params: [&(dyn ToSql + Sync); 9] = [
                        &rows.positions,
                        &rows.streams,
                        &rows.versions,
                        &rows.ids,
                        &rows.types,
                        &rows.data,
                        &rows.metadata,
                        &rows.content_types,
                        &created_us,
                    ];
                    async move { client.execute(insert, &params).await }
                }),
        );
        let streams: Vec<&str> = self.heads.keys().copied().collect();
        let versions: Vec<i64> = self.heads.values().map(|v| to_i64(*v)).collect();
        let next = to_i64(self.next_position);
        let stream_count = to_i64(self.stream_count);
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
