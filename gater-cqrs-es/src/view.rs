//! [`GaterViewRepository`]: cqrs-es's `ViewRepository` over a Gater, one stream per view instance.

use std::marker::PhantomData;

use cqrs_es::persist::{PersistenceError, ViewContext, ViewRepository};
use cqrs_es::{Aggregate, View};
use gater_core::{BoxGater, Direction, EventData, EventId, ExpectedVersion, StoreId, Version};

use crate::codec::{self, VIEW_UPDATED_EVENT_TYPE};
use crate::error::RepositoryError;
use crate::options::RepositoryOptions;

/// Views of type `V` (built from aggregate `A`'s events) kept in a Gater store.
///
/// Each view instance is a stream `{view_name}-{view_id}`; an update appends
/// the whole view as one [`VIEW_UPDATED_EVENT_TYPE`] event (JSON data,
/// metadata `{"view": view_name, "view_id": id}`), and a load reads the last
/// one. The view's [`ViewContext::version`] is the number of updates so far
/// (the stream's version + 1, 0 for a new view), and an update appends with
/// the matching expected version, so two updaters that loaded the same
/// version cannot both write: the second gets
/// `PersistenceError::OptimisticLockError` (Gater snapshots, which overwrite
/// without a condition, could not give this). The price is that a view's
/// stream keeps every past state.
///
/// Pick a `view_name` that is no aggregate type, so view streams and
/// aggregate streams never share a name.
pub struct GaterViewRepository<V, A> {
    gater: BoxGater,
    store: StoreId,
    view_name: String,
    options: RepositoryOptions,
    view: PhantomData<fn() -> (V, A)>,
}

impl<V, A> std::fmt::Debug for GaterViewRepository<V, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaterViewRepository")
            .field("store", &self.store)
            .field("view_name", &self.view_name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<V, A> GaterViewRepository<V, A>
where
    V: View<A>,
    A: Aggregate,
{
    /// Views named `view_name` in `store` of `gater`, with default options.
    pub fn new(gater: BoxGater, store: StoreId, view_name: impl Into<String>) -> Self {
        GaterViewRepository {
            gater,
            store,
            view_name: view_name.into(),
            options: RepositoryOptions::default(),
            view: PhantomData,
        }
    }

    /// The same repository with other `options` (only the retry fields apply).
    pub fn with_options(self, options: RepositoryOptions) -> Self {
        GaterViewRepository { options, ..self }
    }

    async fn load_latest(
        &self,
        view_id: &str,
    ) -> Result<Option<(V, ViewContext)>, RepositoryError> {
        let stream = codec::stream_id(&self.view_name, view_id)?;
        let last = self
            .options
            .retrying(|| {
                self.gater
                    .get_events(&self.store, &stream, Version::MAX, 1, Direction::Backward)
            })
            .await?;
        let Some(last) = last.first() else {
            return Ok(None);
        };
        let view: V =
            serde_json::from_slice(&last.data.data).map_err(|e| RepositoryError::ForeignEvent {
                stream: stream.to_string(),
                version: last.version,
                reason: format!("data is not this view: {e}"),
            })?;
        // Updates so far: at most the stream's version + 1, far below i64::MAX.
        let version = i64::try_from(last.version.saturating_add(1)).unwrap_or(i64::MAX);
        Ok(Some((view, ViewContext::new(view_id.to_owned(), version))))
    }

    async fn store_view(&self, view: &V, context: &ViewContext) -> Result<(), RepositoryError> {
        let view_id = &context.view_instance_id;
        let stream = codec::stream_id(&self.view_name, view_id)?;
        let expected = match Version::try_from(context.version) {
            Ok(0) => ExpectedVersion::NoStream,
            Ok(updates) => ExpectedVersion::Exact(updates - 1),
            Err(_) => {
                return Err(RepositoryError::NegativeViewVersion {
                    view_id: view_id.clone(),
                    version: context.version,
                })
            }
        };
        let data = serde_json::to_vec(view).map_err(RepositoryError::Encode)?;
        let metadata = serde_json::to_vec(&serde_json::json!({
            "view": self.view_name,
            "view_id": view_id,
        }))
        .map_err(RepositoryError::Encode)?;
        // One id for this update and its retries, as for aggregate events.
        let event = EventData::json(
            EventId::from_uuid(uuid::Uuid::new_v4()),
            VIEW_UPDATED_EVENT_TYPE,
            data,
            metadata,
        );
        self.options
            .retrying(|| {
                self.gater
                    .append_events(&self.store, &stream, expected, vec![event.clone()])
            })
            .await?;
        Ok(())
    }
}

impl<V, A> ViewRepository<V, A> for GaterViewRepository<V, A>
where
    V: View<A>,
    A: Aggregate,
{
    async fn load(&self, view_id: &str) -> Result<Option<V>, PersistenceError> {
        Ok(self.load_latest(view_id).await?.map(|(view, _)| view))
    }

    async fn load_with_context(
        &self,
        view_id: &str,
    ) -> Result<Option<(V, ViewContext)>, PersistenceError> {
        Ok(self.load_latest(view_id).await?)
    }

    async fn update_view(&self, view: V, context: ViewContext) -> Result<(), PersistenceError> {
        Ok(self.store_view(&view, &context).await?)
    }
}
