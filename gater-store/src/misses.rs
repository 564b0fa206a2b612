//! A brief memory of stores a shared backend said do not exist, so requests
//! naming unknown stores neither take the admin lock nor query the database
//! each time.
//!
//! A miss is remembered for [`UNKNOWN_STORE_TTL`], well under a proxy's
//! probe interval (1 s by default), so a store created through another
//! worker is seen here within one probe interval; a create through this
//! worker forgets the miss at once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use gater_core::StoreId;
use tokio::time::Instant;

/// How long a miss is remembered.
pub(crate) const UNKNOWN_STORE_TTL: Duration = Duration::from_millis(500);
/// Most misses remembered; past it the oldest are forgotten first (expired
/// ones, then all), which only costs a few more lookups.
pub(crate) const MISSES_MAX: usize = 10_000;

/// Recently missed stores and when they were missed.
#[derive(Debug, Default)]
pub(crate) struct Misses {
    seen: Mutex<HashMap<StoreId, Instant>>,
}

impl Misses {
    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<StoreId, Instant>> {
        // Plain map operations; a panic elsewhere cannot leave it half-updated.
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `store` was missed within the last [`UNKNOWN_STORE_TTL`].
    pub(crate) fn recent(&self, store: &StoreId) -> bool {
        self.seen()
            .get(store)
            .is_some_and(|at| at.elapsed() < UNKNOWN_STORE_TTL)
    }

    /// Remembers that `store` was not found just now.
    pub(crate) fn note(&self, store: &StoreId) {
        let mut seen = self.seen();
        if seen.len() >= MISSES_MAX {
            seen.retain(|_, at| at.elapsed() < UNKNOWN_STORE_TTL);
            if seen.len() >= MISSES_MAX {
                seen.clear();
            }
        }
        seen.insert(store.clone(), Instant::now());
    }

    /// Forgets a miss of `store` (it was just created).
    pub(crate) fn forget(&self, store: &StoreId) {
        self.seen().remove(store);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_miss_is_remembered_briefly_and_forgotten_on_create() {
        let misses = Misses::default();
        let a = StoreId::new("a").unwrap();
        assert!(!misses.recent(&a));
        misses.note(&a);
        assert!(misses.recent(&a));
        tokio::time::advance(UNKNOWN_STORE_TTL).await;
        assert!(!misses.recent(&a), "expired after the TTL");
        misses.note(&a);
        misses.forget(&a);
        assert!(!misses.recent(&a), "a create forgets the miss");
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_is_bounded() {
        let misses = Misses::default();
        for i in 0..=MISSES_MAX {
            misses.note(&StoreId::new(format!("s-{i}")).unwrap());
        }
        assert!(misses.seen().len() <= MISSES_MAX);
    }
}
