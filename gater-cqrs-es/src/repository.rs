//! [`GaterEventRepository`]: cqrs-es's `PersistedEventRepository` over a Gater.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayFeed, ReplayStream, SerializedEvent,
    SerializedSnapshot,
};
use cqrs_es::Aggregate;
use gater_core::{
    BoxGater, Direction, Error, EventData, EventId, Position, RecordedEvent, Resource, SnapshotKey,
    StoreId, StreamId, Version,
};
use serde_json::Value;

use crate::codec;
use crate::error::RepositoryError;
use crate::options::RepositoryOptions;

/// cqrs-es events and snapshots of every aggregate type in one Gater store.
///
/// See the crate docs for the layout. Cloning is cheap (the `Gater` is shared).
///
/// ```
/// use cqrs_es::persist::PersistedEventStore;
/// use cqrs_es::{Aggregate, CqrsFramework};
/// use gater_core::{BoxGater, StoreId};
/// use gater_cqrs_es::GaterEventRepository;
///
/// /// A framework for aggregate `A` whose events live in store `bank`,
/// /// with a snapshot every 100 events.
/// fn framework<A: Aggregate>(
///     gater: BoxGater,
///     services: A::Services,
/// ) -> CqrsFramework<A, PersistedEventStore<GaterEventRepository, A>> {
///     let store = StoreId::new("bank").expect("a valid store id");
///     let repo = GaterEventRepository::new(gater, store);
///     CqrsFramework::new(PersistedEventStore::new_snapshot_store(repo, 100), vec![], services)
/// }
/// ```
#[derive(Clone)]
pub struct GaterEventRepository {
    gater: BoxGater,
    store: StoreId,
    options: RepositoryOptions,
}

impl std::fmt::Debug for GaterEventRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaterEventRepository")
            .field("store", &self.store)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl GaterEventRepository {
    /// A repository over `store` of `gater`, with default options. The store
    /// must exist (`Gater::create_store`); calls on a missing one fail with
    /// Gater's `NotFound`.
    pub fn new(gater: BoxGater, store: StoreId) -> Self {
        GaterEventRepository {
            gater,
            store,
            options: RepositoryOptions::default(),
        }
    }

    /// The same repository with other `options`.
    pub fn with_options(self, options: RepositoryOptions) -> Self {
        GaterEventRepository { options, ..self }
    }

    /// The store it uses.
    pub fn store(&self) -> &StoreId {
        &self.store
    }

    /// Its options.
    pub fn options(&self) -> &RepositoryOptions {
        &self.options
    }

    /// Events of `stream` from version `start` on, read page by page.
    async fn read_stream(
        &self,
        stream: &StreamId,
        start: Version,
    ) -> Result<Vec<SerializedEvent>, RepositoryError> {
        let mut events = Vec::new();
        let mut pages = StreamPages::new(self.clone(), stream.clone(), start);
        while let Some(page) = pages.next().await? {
            for recorded in &page {
                events.push(codec::serialized_event(recorded)?);
            }
        }
        Ok(events)
    }

    async fn persist_events<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), RepositoryError> {
        let aggregate_type = A::TYPE;
        // cqrs-es sends no events when a command decided nothing; a snapshot
        // then covers nothing new, and cqrs-es sends none either.
        let Some(first) = events.first() else {
            return Ok(());
        };
        codec::check_one_commit(events)?;
        let stream = codec::stream_id(aggregate_type, &first.aggregate_id)?;
        let expected = codec::expected_version(first)?;
        if let Some((aggregate_id, _, _)) = &snapshot_update {
            if *aggregate_id != first.aggregate_id {
                return Err(RepositoryError::NotOneCommit {
                    aggregate_type: aggregate_type.to_owned(),
                    aggregate_id: first.aggregate_id.clone(),
                    expected_sequence: first.sequence + events.len(),
                    got: format!("a snapshot of {aggregate_id:?}"),
                });
            }
        }
        // Fresh ids per commit, kept across this commit's retries: see the crate docs.
        let batch = events
            .iter()
            .map(|event| codec::event_data(event, EventId::from_uuid(uuid::Uuid::new_v4())))
            .collect::<Result<Vec<EventData>, _>>()?;
        let appended = self
            .options
            .retrying(|| {
                self.gater
                    .append_events(&self.store, &stream, expected, batch.clone())
            })
            .await?;
        let Some((_, aggregate, current_snapshot)) = snapshot_update else {
            return Ok(());
        };
        // Written only now that the events are durable. One event: the
        // snapshot covers it; several: find which of them it covers.
        let version = if events.len() == 1 {
            appended.version
        } else {
            self.covered_version::<A>(&stream, events, &aggregate)
                .await?
        };
        let key = SnapshotKey {
            source: aggregate_type.to_owned(),
            stream: stream.to_string(),
            version,
        };
        let data = codec::snapshot_data(aggregate, current_snapshot)?;
        self.options
            .retrying(|| {
                self.gater
                    .record_snapshot(&self.store, key.clone(), data.clone())
            })
            .await
            .map_err(|source| RepositoryError::SnapshotNotRecorded {
                stream: stream.to_string(),
                version: appended.version,
                source,
            })
    }

    /// The version the snapshot state `snapshot` of a commit of several
    /// `events` (already appended to `stream`) covers.
    ///
    /// A snapshot store builds the state from the commit's events up to its
    /// snapshot boundary only, and cqrs-es does not say where that is: replay
    /// the aggregate from its previous snapshot through the commit and take
    /// the last of the commit's events after which the state is `snapshot`.
    async fn covered_version<A: Aggregate>(
        &self,
        stream: &StreamId,
        events: &[SerializedEvent],
        snapshot: &Value,
    ) -> Result<Version, RepositoryError> {
        let unknown = |reason: String| RepositoryError::SnapshotCoverage {
            stream: stream.to_string(),
            reason,
        };
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Err(unknown("the commit has no events".to_owned()));
        };
        // From the previous snapshot when there is one that decodes (as
        // cqrs-es does, a snapshot of an older shape means a full replay).
        let base = self
            .latest_snapshot(A::TYPE, &first.aggregate_id)
            .await?
            .filter(|previous| previous.current_sequence < first.sequence)
            .and_then(|previous| {
                let state = serde_json::from_value::<A>(previous.aggregate).ok()?;
                Some((state, previous.current_sequence))
            });
        let (mut state, base_sequence) = base.unwrap_or_else(|| (A::default(), 0));
        let mut covered = None;
        // Sequences after `base_sequence` start at version `base_sequence`.
        let mut pages = StreamPages::new(self.clone(), stream.clone(), base_sequence as Version);
        'replay: while let Some(page) = pages.next().await? {
            for recorded in &page {
                let event = codec::serialized_event(recorded)?;
                if event.sequence > last.sequence {
                    break 'replay;
                }
                let payload: A::Event = serde_json::from_value(event.payload).map_err(|e| {
                    unknown(format!("event {} does not decode: {e}", event.sequence))
                })?;
                state.apply(payload);
                if event.sequence >= first.sequence
                    && serde_json::to_value(&state).map_err(RepositoryError::Encode)? == *snapshot
                {
                    covered = Some(event.sequence);
                }
            }
        }
        covered.map(codec::version_of).ok_or_else(|| {
            unknown("it is the aggregate's state after none of the commit's events".to_owned())
        })
    }

    async fn latest_snapshot(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, RepositoryError> {
        let stream = codec::stream_id(aggregate_type, aggregate_id)?;
        let answer = self
            .options
            .retrying(|| {
                self.gater
                    .read_snapshot(&self.store, aggregate_type, stream.as_str(), None)
            })
            .await;
        match answer {
            Ok(snapshot) => Ok(Some(codec::serialized_snapshot(aggregate_id, &snapshot)?)),
            Err(Error::NotFound {
                resource: Resource::Snapshot,
                ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A replay of one aggregate's events, read page by page by a task that
    /// waits whenever the feed is full.
    fn replay_stream(&self, stream: StreamId) -> ReplayStream {
        let (feed, replay) = ReplayStream::new(self.options.queue_len());
        let pages = StreamPages::new(self.clone(), stream, 0);
        tokio::spawn(feed_stream(pages, feed));
        replay
    }

    /// A replay of every event of `aggregate_type` in the store's global order.
    fn replay_log(&self, aggregate_type: &'static str) -> ReplayStream {
        let (feed, replay) = ReplayStream::new(self.options.queue_len());
        tokio::spawn(feed_log(self.clone(), aggregate_type, feed));
        replay
    }
}

impl PersistedEventRepository for GaterEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let stream = codec::stream_id(A::TYPE, aggregate_id)?;
        Ok(self.read_stream(&stream, 0).await?)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let stream = codec::stream_id(A::TYPE, aggregate_id)?;
        // Sequences after `last_sequence` start at version `last_sequence`.
        Ok(self.read_stream(&stream, last_sequence as Version).await?)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(self.latest_snapshot(A::TYPE, aggregate_id).await?)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        Ok(self.persist_events::<A>(events, snapshot_update).await?)
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let stream = codec::stream_id(A::TYPE, aggregate_id)?;
        Ok(self.replay_stream(stream))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Ok(self.replay_log(A::TYPE))
    }
}

/// One stream read forward page by page, until a page comes back empty.
struct StreamPages {
    repo: GaterEventRepository,
    stream: StreamId,
    next: Option<Version>,
}

impl StreamPages {
    fn new(repo: GaterEventRepository, stream: StreamId, start: Version) -> Self {
        StreamPages {
            repo,
            stream,
            next: Some(start),
        }
    }

    async fn next(&mut self) -> Result<Option<Vec<RecordedEvent>>, RepositoryError> {
        let Some(start) = self.next else {
            return Ok(None);
        };
        let repo = &self.repo;
        let page = repo
            .options
            .retrying(|| {
                repo.gater.get_events(
                    &repo.store,
                    &self.stream,
                    start,
                    repo.options.page_len(),
                    Direction::Forward,
                )
            })
            .await?;
        let Some(last) = page.last() else {
            self.next = None;
            return Ok(None);
        };
        self.next = last.version.checked_add(1);
        Ok(Some(page))
    }
}

async fn feed_stream(mut pages: StreamPages, mut feed: ReplayFeed) {
    loop {
        let page = match pages.next().await {
            Ok(Some(page)) => page,
            Ok(None) => return,
            Err(e) => {
                // The consumer may have gone; then nobody is left to tell.
                let _ = feed.push(Err(e.into())).await;
                return;
            }
        };
        for recorded in &page {
            let event = codec::serialized_event(recorded).map_err(PersistenceError::from);
            let failed = event.is_err();
            if feed.push(event).await.is_err() || failed {
                return;
            }
        }
    }
}

async fn feed_log(repo: GaterEventRepository, aggregate_type: &'static str, mut feed: ReplayFeed) {
    let mut from = Position::START;
    loop {
        let answer = repo
            .options
            .retrying(|| {
                repo.gater.read_all(
                    &repo.store,
                    from,
                    repo.options.page_len(),
                    Direction::Forward,
                )
            })
            .await;
        let page = match answer {
            Ok(page) => page,
            Err(e) => {
                // The consumer may have gone; then nobody is left to tell.
                let _ = feed.push(Err(RepositoryError::from(e).into())).await;
                return;
            }
        };
        let Some(last) = page.last() else {
            return;
        };
        from = last.position.next();
        for recorded in &page {
            let Some(event) = codec::event_of_type(recorded, aggregate_type) else {
                continue;
            };
            if feed.push(Ok(event)).await.is_err() {
                return;
            }
        }
    }
}
