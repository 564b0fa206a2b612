//! Property test: random sequences of appends (plain, multi-part and
//! conditional), reads (by stream, of the log, by query), snapshot
//! operations and stream lifecycle operations (soft and hard delete,
//! truncation, retention by count, compaction) give the same answers from
//! the store as from a small in-memory model of the contract.

use std::collections::BTreeMap;

use gater_core::{
    Append, AppendCondition, AppendOutcome, AppendPart, AppendResult, Direction, Error, EventData,
    EventId, ExpectedVersion, Gater, Position, Query, QueryItem, SnapshotKey, StoreConfig, StoreId,
    StreamId, StreamVersion,
};
use gater_store::{Store, StoreOptions};
use proptest::prelude::*;

const STREAMS: [&str; 3] = ["a", "b", "a-b"];
const SOURCES: [&str; 2] = ["x", "y"];
const TYPES: [&str; 2] = ["A", "B"];
const TAGS: [&str; 3] = ["x", "y", "z"];

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: usize,
        expected: ExpectedVersion,
        count: usize,
    },
    /// Sends an earlier append's events again, to `stream`.
    Resend {
        earlier: usize,
        stream: usize,
        expected: ExpectedVersion,
    },
    GetEvents {
        stream: usize,
        start: u64,
        count: u32,
        forward: bool,
    },
    ReadAll {
        from: u64,
        count: u32,
        forward: bool,
    },
    Streams {
        after: Option<usize>,
        limit: u32,
    },
    Record {
        source: usize,
        stream: usize,
        version: u64,
        data: u8,
    },
    ReadSnapshot {
        source: usize,
        stream: usize,
        version: Option<u64>,
    },
    ListSnapshots {
        source: Option<usize>,
        stream: Option<usize>,
    },
    DeleteSnapshot {
        source: usize,
        stream: usize,
        version: u64,
    },
    /// One append of several parts (distinct streams), maybe with a condition.
    AppendParts {
        parts: Vec<(usize, ExpectedVersion, usize)>,
        condition: Option<(Query, Option<u64>)>,
    },
    ReadQuery {
        query: Query,
        from: u64,
        count: u32,
        forward: bool,
    },
    Delete {
        stream: usize,
        expected: ExpectedVersion,
        hard: bool,
    },
    Truncate {
        stream: usize,
        before: u64,
    },
    /// Retention by count; it only ever tightens, so what compaction
    /// removed is never asked to show again.
    Retain {
        stream: usize,
        max_count: u64,
    },
    Compact,
}

/// What the model keeps of a stream's lifecycle.
#[derive(Clone, Copy, Debug, Default)]
struct Life {
    truncate_before: u64,
    tombstoned: bool,
    max_count: Option<u64>,
}

/// A query over [`TYPES`] and [`TAGS`]; every item names a type or a tag.
fn query() -> impl Strategy<Value = Query> {
    let item = (
        proptest::sample::subsequence(TYPES.to_vec(), 0..=2),
        proptest::sample::subsequence(TAGS.to_vec(), 0..=2),
    )
        .prop_filter("an item names a type or a tag", |(types, tags)| {
            !types.is_empty() || !tags.is_empty()
        })
        .prop_map(|(types, tags)| QueryItem {
            types: types.into_iter().map(str::to_owned).collect(),
            tags: tags.into_iter().map(str::to_owned).collect(),
        });
    proptest::collection::vec(item, 0..3).prop_map(|items| Query { items })
}

fn expected() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::StreamExists),
        (0u64..6).prop_map(ExpectedVersion::Exact),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let stream = 0..STREAMS.len();
    let source = 0..SOURCES.len();
    prop_oneof![
        4 => (stream.clone(), expected(), 1usize..4)
            .prop_map(|(stream, expected, count)| Op::Append { stream, expected, count }),
        2 => (0usize..64, stream.clone(), expected())
            .prop_map(|(earlier, stream, expected)| Op::Resend { earlier, stream, expected }),
        2 => (stream.clone(), prop_oneof![0u64..8, Just(u64::MAX)], 1u32..5, any::<bool>())
            .prop_map(|(stream, start, count, forward)| Op::GetEvents { stream, start, count, forward }),
        2 => (prop_oneof![0u64..20, Just(u64::MAX)], 1u32..6, any::<bool>())
            .prop_map(|(from, count, forward)| Op::ReadAll { from, count, forward }),
        1 => (proptest::option::of(stream.clone()), 1u32..3)
            .prop_map(|(after, limit)| Op::Streams { after, limit }),
        2 => (source.clone(), stream.clone(), 0u64..3, any::<u8>())
            .prop_map(|(source, stream, version, data)| Op::Record { source, stream, version, data }),
        1 => (source.clone(), stream.clone(), proptest::option::of(0u64..3))
            .prop_map(|(source, stream, version)| Op::ReadSnapshot { source, stream, version }),
        1 => (proptest::option::of(source.clone()), proptest::option::of(stream.clone()))
            .prop_map(|(source, stream)| Op::ListSnapshots { source, stream }),
        1 => (source, stream.clone(), 0u64..3)
            .prop_map(|(source, stream, version)| Op::DeleteSnapshot { source, stream, version }),
        3 => (
            proptest::collection::vec((stream.clone(), expected(), 1usize..3), 1..3),
            proptest::option::of((query(), proptest::option::of(0u64..20))),
        )
            .prop_map(|(mut parts, condition)| {
                let mut seen = Vec::new();
                parts.retain(|(s, _, _)| !seen.contains(s) && { seen.push(*s); true });
                Op::AppendParts { parts, condition }
            }),
        2 => (query(), prop_oneof![0u64..20, Just(u64::MAX)], 1u32..6, any::<bool>())
            .prop_map(|(query, from, count, forward)| Op::ReadQuery { query, from, count, forward }),
        1 => (stream.clone(), expected(), proptest::bool::weighted(0.2))
            .prop_map(|(stream, expected, hard)| Op::Delete { stream, expected, hard }),
        1 => (stream.clone(), 0u64..8).prop_map(|(stream, before)| Op::Truncate { stream, before }),
        1 => (stream, 1u64..4).prop_map(|(stream, max_count)| Op::Retain { stream, max_count }),
        1 => Just(Op::Compact),
    ]
}

/// The contract, kept as plain data.
#[derive(Default)]
struct Model {
    /// (stream, event id) in commit order; the index is the position.
    log: Vec<(usize, EventId)>,
    /// Positions of each stream's events, by version.
    streams: BTreeMap<usize, Vec<u64>>,
    /// Every append sent so far, successful or not.
    sent: Vec<Vec<EventData>>,
    /// The type and tags of each event of `log`, by position.
    kinds: Vec<(String, Vec<String>)>,
    snapshots: BTreeMap<SnapshotKey, Vec<u8>>,
    next_id: u64,
    lives: BTreeMap<usize, Life>,
}

impl Model {
    fn append(
        &mut self,
        stream: usize,
        expected: ExpectedVersion,
        events: &[EventData],
    ) -> Result<AppendResult, &'static str> {
        if self.life(stream).tombstoned {
            return Err("stream_deleted");
        }
        let located: Vec<Option<(usize, u64, u64)>> =
            events.iter().map(|e| self.locate(e.id)).collect();
        if let Some(Some((s, v0, _))) = located.first() {
            let in_place = located
                .iter()
                .enumerate()
                .all(|(i, l)| matches!(l, Some((ls, lv, _)) if ls == s && *lv == v0 + i as u64));
            if *s == stream && in_place {
                let (_, version, position) = located
                    .last()
                    .copied()
                    .flatten()
                    .unwrap_or_else(|| unreachable!());
                return Ok(AppendResult {
                    version,
                    position: Position(position),
                });
            }
            return Err("duplicate_event_id");
        }
        if located.iter().any(Option::is_some) {
            return Err("duplicate_event_id");
        }
        if !expected.is_satisfied_by(self.visible_version(stream)) {
            return Err("wrong_expected_version");
        }
        self.commit(stream, events);
        let versions = &self.streams[&stream];
        Ok(AppendResult {
            version: versions.len() as u64 - 1,
            position: Position(self.log.len() as u64 - 1),
        })
    }

    fn commit(&mut self, stream: usize, events: &[EventData]) {
        for event in events {
            let position = self.log.len() as u64;
            self.log.push((stream, event.id));
            self.kinds
                .push((event.event_type.clone(), event.tags.clone()));
            self.streams.entry(stream).or_default().push(position);
        }
    }

    /// A multi-part append of new events: every expectation in part order,
    /// then the condition, then every part committed.
    fn append_parts(
        &mut self,
        parts: &[(usize, ExpectedVersion, Vec<EventData>)],
        condition: Option<&(Query, Option<u64>)>,
    ) -> Result<AppendOutcome, String> {
        if parts
            .iter()
            .any(|(stream, _, _)| self.life(*stream).tombstoned)
        {
            return Err("stream_deleted".into());
        }
        for (stream, expected, _) in parts {
            if !expected.is_satisfied_by(self.visible_version(*stream)) {
                return Err("wrong_expected_version".into());
            }
        }
        if let Some((query, after)) = condition {
            let from = after.map_or(0, |a| a + 1);
            if !self.query_read(query, from, 1, true).is_empty() {
                return Err("append_condition_failed".into());
            }
        }
        let mut streams = Vec::new();
        for (stream, _, events) in parts {
            self.commit(*stream, events);
            streams.push(StreamVersion {
                stream: StreamId::new(STREAMS[*stream]).unwrap(),
                version: self.streams[stream].len() as u64 - 1,
            });
        }
        Ok(AppendOutcome {
            position: Position(self.log.len() as u64 - 1),
            streams,
        })
    }

    /// Positions of events matching `query` a read from `from` returns.
    fn query_read(&self, query: &Query, from: u64, count: u32, forward: bool) -> Vec<u64> {
        let matching = |p: &u64| {
            let (event_type, tags) = &self.kinds[*p as usize];
            query.matches(event_type, tags)
        };
        self.log_read(from, u32::MAX, forward)
            .into_iter()
            .filter(matching)
            .take(count as usize)
            .collect()
    }

    fn life(&self, stream: usize) -> Life {
        self.lives.get(&stream).copied().unwrap_or_default()
    }

    fn last_version(&self, stream: usize) -> Option<u64> {
        self.streams.get(&stream).map(|v| v.len() as u64 - 1)
    }

    /// The version readers see: none when tombstoned or soft-deleted.
    fn visible_version(&self, stream: usize) -> Option<u64> {
        let life = self.life(stream);
        let last = self.last_version(stream)?;
        (!life.tombstoned && last >= life.truncate_before).then_some(last)
    }

    fn shows(&self, stream: usize, version: u64) -> bool {
        let life = self.life(stream);
        let last = self.last_version(stream).unwrap_or(0);
        !life.tombstoned
            && version >= life.truncate_before
            && life.max_count.is_none_or(|n| last - version < n)
    }

    fn shows_position(&self, position: u64) -> bool {
        let stream = self.log[position as usize].0;
        let version = self.streams[&stream]
            .iter()
            .position(|p| *p == position)
            .unwrap_or_else(|| unreachable!()) as u64;
        self.shows(stream, version)
    }

    /// A delete (soft or hard) as the contract describes it.
    fn delete(
        &mut self,
        stream: usize,
        expected: ExpectedVersion,
        hard: bool,
    ) -> Result<(), &'static str> {
        if self.life(stream).tombstoned {
            return Err("stream_deleted");
        }
        if !expected.is_satisfied_by(self.visible_version(stream)) {
            return Err("wrong_expected_version");
        }
        let last = self.last_version(stream);
        let life = self.lives.entry(stream).or_default();
        if hard {
            life.tombstoned = true;
        } else if let Some(last) = last {
            life.truncate_before = life.truncate_before.max(last + 1);
        }
        Ok(())
    }

    fn locate(&self, id: EventId) -> Option<(usize, u64, u64)> {
        let position = self.log.iter().position(|(_, e)| *e == id)? as u64;
        let stream = self.log[position as usize].0;
        let version = self.streams[&stream].iter().position(|p| *p == position)? as u64;
        Some((stream, version, position))
    }

    fn new_events(&mut self, count: usize) -> Vec<EventData> {
        (0..count)
            .map(|_| {
                self.next_id += 1;
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&self.next_id.to_le_bytes());
                let n = self.next_id as usize;
                let tags = (0..TAGS.len())
                    .filter(|i| (n >> i) & 1 == 1)
                    .map(|i| TAGS[i].to_owned())
                    .collect();
                EventData::json(
                    EventId::from_random_bytes(bytes),
                    TYPES[n / 8 % TYPES.len()],
                    b"{}".to_vec(),
                    Vec::new(),
                )
                .with_tags(tags)
            })
            .collect()
    }

    /// Positions of `stream`'s events a read from `start` returns.
    fn stream_read(&self, stream: usize, start: u64, count: u32, forward: bool) -> Vec<u64> {
        let versions = self.streams.get(&stream).cloned().unwrap_or_default();
        let take = count as usize;
        let shown = |(v, _): &(usize, &u64)| self.shows(stream, *v as u64);
        if forward {
            versions
                .iter()
                .enumerate()
                .skip(usize::try_from(start).unwrap_or(usize::MAX))
                .filter(shown)
                .take(take)
                .map(|(_, p)| *p)
                .collect()
        } else {
            let end = versions.len().min(
                usize::try_from(start)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            );
            versions[..end]
                .iter()
                .enumerate()
                .rev()
                .filter(shown)
                .take(take)
                .map(|(_, p)| *p)
                .collect()
        }
    }

    fn log_read(&self, from: u64, count: u32, forward: bool) -> Vec<u64> {
        let len = self.log.len() as u64;
        let shown = |p: &u64| self.shows_position(*p);
        if forward {
            (from..len).filter(shown).take(count as usize).collect()
        } else if len == 0 {
            Vec::new()
        } else {
            (0..=from.min(len - 1))
                .rev()
                .filter(shown)
                .take(count as usize)
                .collect()
        }
    }
}

fn key(source: usize, stream: usize, version: u64) -> SnapshotKey {
    SnapshotKey {
        source: SOURCES[source].into(),
        stream: STREAMS[stream].into(),
        version,
    }
}

fn kind<T: std::fmt::Debug>(result: Result<T, Error>) -> Result<T, String> {
    result.map_err(|e| e.kind().to_owned())
}

async fn check(store: &Store, id: &StoreId, model: &mut Model, op: Op) {
    let sid = |i: usize| StreamId::new(STREAMS[i]).unwrap();
    match op {
        Op::Append {
            stream,
            expected,
            count,
        } => {
            let events = model.new_events(count);
            model.sent.push(events.clone());
            let want = model
                .append(stream, expected, &events)
                .map_err(str::to_owned);
            let got = kind(
                store
                    .append_events(id, &sid(stream), expected, events)
                    .await,
            );
            assert_eq!(got, want, "append to {stream} expecting {expected:?}");
        }
        Op::Resend {
            earlier,
            stream,
            expected,
        } => {
            let Some(events) = model.sent.get(earlier % model.sent.len().max(1)).cloned() else {
                return;
            };
            let want = model
                .append(stream, expected, &events)
                .map_err(str::to_owned);
            let got = kind(
                store
                    .append_events(id, &sid(stream), expected, events)
                    .await,
            );
            assert_eq!(got, want, "resend to {stream} expecting {expected:?}");
        }
        Op::GetEvents {
            stream,
            start,
            count,
            forward,
        } => {
            let direction = if forward {
                Direction::Forward
            } else {
                Direction::Backward
            };
            let got = kind(
                store
                    .get_events(id, &sid(stream), start, count, direction)
                    .await,
            );
            if model.life(stream).tombstoned {
                assert_eq!(got.map(|_| ()), Err("stream_deleted".to_owned()));
                return;
            }
            let got = got.unwrap();
            let positions: Vec<u64> = got.iter().map(|e| e.position.0).collect();
            assert_eq!(positions, model.stream_read(stream, start, count, forward));
            for e in &got {
                assert_eq!(model.log[e.position.0 as usize], (stream, e.data.id));
            }
        }
        Op::ReadAll {
            from,
            count,
            forward,
        } => {
            let direction = if forward {
                Direction::Forward
            } else {
                Direction::Backward
            };
            let got = store
                .read_all(id, Position(from), count, direction)
                .await
                .unwrap();
            let positions: Vec<u64> = got.iter().map(|e| e.position.0).collect();
            assert_eq!(positions, model.log_read(from, count, forward));
            for e in &got {
                let (stream, event) = model.log[e.position.0 as usize];
                assert_eq!((e.stream.as_str(), e.data.id), (STREAMS[stream], event));
            }
        }
        Op::Streams { after, limit } => {
            let page = store.get_streams(id, after.map(sid), limit).await.unwrap();
            let mut all: Vec<(&str, u64)> = model
                .streams
                .keys()
                .filter_map(|s| Some((STREAMS[*s], model.visible_version(*s)?)))
                .collect();
            all.sort();
            let want: Vec<_> = all
                .into_iter()
                .filter(|(s, _)| after.is_none_or(|a| *s > STREAMS[a]))
                .collect();
            let got: Vec<_> = page
                .streams
                .iter()
                .map(|s| (s.stream.as_str(), s.version))
                .collect();
            assert_eq!(got.as_slice(), &want[..want.len().min(limit as usize)]);
            assert_eq!(page.next_after.is_some(), want.len() > limit as usize);
        }
        Op::Record {
            source,
            stream,
            version,
            data,
        } => {
            store
                .record_snapshot(id, key(source, stream, version), vec![data])
                .await
                .unwrap();
            model
                .snapshots
                .insert(key(source, stream, version), vec![data]);
        }
        Op::ReadSnapshot {
            source,
            stream,
            version,
        } => {
            let got = kind(
                store
                    .read_snapshot(id, SOURCES[source], STREAMS[stream], version)
                    .await,
            )
            .map(|s| (s.key, s.data));
            let want = model
                .snapshots
                .range(key(source, stream, 0)..=key(source, stream, u64::MAX))
                .rfind(|(k, _)| version.is_none_or(|v| k.version == v))
                .map(|(k, d)| (k.clone(), d.clone()))
                .ok_or_else(|| "not_found".to_owned());
            assert_eq!(got, want);
        }
        Op::ListSnapshots { source, stream } => {
            let got = store
                .list_snapshots(id, source.map(|s| SOURCES[s]), stream.map(|s| STREAMS[s]))
                .await
                .unwrap();
            let want: Vec<_> = model
                .snapshots
                .keys()
                .filter(|k| {
                    source.is_none_or(|s| k.source == SOURCES[s])
                        && stream.is_none_or(|s| k.stream == STREAMS[s])
                })
                .cloned()
                .collect();
            assert_eq!(got, want);
        }
        Op::DeleteSnapshot {
            source,
            stream,
            version,
        } => {
            let got = kind(
                store
                    .delete_snapshot(id, &key(source, stream, version))
                    .await,
            );
            let want = model
                .snapshots
                .remove(&key(source, stream, version))
                .map(|_| ())
                .ok_or_else(|| "not_found".to_owned());
            assert_eq!(got, want);
        }
        Op::AppendParts { parts, condition } => {
            let parts: Vec<(usize, ExpectedVersion, Vec<EventData>)> = parts
                .into_iter()
                .map(|(stream, expected, count)| (stream, expected, model.new_events(count)))
                .collect();
            let append = Append {
                parts: parts
                    .iter()
                    .map(|(stream, expected, events)| AppendPart {
                        stream: sid(*stream),
                        expected: *expected,
                        events: events.clone(),
                    })
                    .collect(),
                condition: condition.clone().map(|(query, after)| AppendCondition {
                    fail_if_events_match: query,
                    after: after.map(Position),
                }),
            };
            let want = model.append_parts(&parts, condition.as_ref());
            let got = kind(store.append(id, append.clone()).await);
            assert_eq!(got, want, "{append:?}");
        }
        Op::ReadQuery {
            query,
            from,
            count,
            forward,
        } => {
            let direction = if forward {
                Direction::Forward
            } else {
                Direction::Backward
            };
            let got = store
                .read_query(id, &query, Position(from), count, direction)
                .await
                .unwrap();
            let positions: Vec<u64> = got.iter().map(|e| e.position.0).collect();
            assert_eq!(
                positions,
                model.query_read(&query, from, count, forward),
                "{query:?}"
            );
            for e in &got {
                let (stream, event) = model.log[e.position.0 as usize];
                assert_eq!((e.stream.as_str(), e.data.id), (STREAMS[stream], event));
            }
        }
        Op::Delete {
            stream,
            expected,
            hard,
        } => {
            let want = model.delete(stream, expected, hard).map_err(str::to_owned);
            let got = if hard {
                store.tombstone_stream(id, &sid(stream), expected).await
            } else {
                store.delete_stream(id, &sid(stream), expected).await
            };
            if want.is_ok() && hard {
                model.snapshots.retain(|k, _| k.stream != STREAMS[stream]);
            }
            assert_eq!(kind(got), want, "delete {stream} expecting {expected:?}");
        }
        Op::Truncate { stream, before } => {
            let got = kind(store.truncate_stream(id, &sid(stream), before).await);
            let want = if model.life(stream).tombstoned {
                Err("stream_deleted".to_owned())
            } else {
                let end = model.last_version(stream).map_or(0, |l| l + 1);
                let life = model.lives.entry(stream).or_default();
                life.truncate_before = life.truncate_before.max(before.min(end));
                Ok(())
            };
            assert_eq!(got, want, "truncate {stream} before {before}");
        }
        Op::Retain { stream, max_count } => {
            let max_count = model
                .life(stream)
                .max_count
                .map_or(max_count, |n| n.min(max_count));
            let got = kind(
                store
                    .set_stream_retention(id, &sid(stream), Some(max_count), None)
                    .await,
            );
            let want = if model.life(stream).tombstoned {
                Err("stream_deleted".to_owned())
            } else {
                model.lives.entry(stream).or_default().max_count = Some(max_count);
                Ok(())
            };
            assert_eq!(got, want, "retain {max_count} of {stream}");
        }
        Op::Compact => {
            store.compact_store(id).await.unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(StoreOptions::new(dir.path())).await.unwrap();
            let id = StoreId::new("model").unwrap();
            let config = StoreConfig { fsync: false, group_commit: true, retention: gater_core::Retention::NONE };
            store.create_store(&id, config).await.unwrap();
            let mut model = Model::default();
            for op in ops {
                check(&store, &id, &mut model, op).await;
            }
            // The status counts what readers see.
            let status = store.get_store_status(&id).await.unwrap();
            let shown = (0..model.log.len() as u64).filter(|&p| model.shows_position(p)).count();
            assert_eq!(status.event_count, shown as u64);
            let existing = model.streams.keys().filter(|&&s| model.visible_version(s).is_some()).count();
            assert_eq!(status.stream_count, existing as u64);
            store.shutdown().await;
        });
    }
}
