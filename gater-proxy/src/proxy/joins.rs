//! Who may join the pool by heartbeat, and at which address.
//!
//! A server that checks identities passes the caller's identity with the
//! heartbeat ([`Gater::call_as`](gater_core::Gater::call_as)); no field of
//! the heartbeat can claim one. The rules:
//! - a configured (static) worker keeps its configured address: a heartbeat
//!   naming its id at another address is refused;
//! - a worker that joined belongs to the identity that registered it: a
//!   heartbeat for its id from another identity is refused, so nobody can
//!   move it to another address or rewrite what it serves;
//! - new joins are capped per identity and in total, so one identity cannot
//!   fill the pool with fake ids;
//! - refusals are logged once per identity per [`REFUSAL_LOG_INTERVAL`],
//!   not once per heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use gater_core::{Error, Side, WorkerInfo};

use super::pool::{Pool, Worker};

/// Default most workers in the pool that joined by heartbeat.
pub const JOINS_MAX_DEFAULT: usize = 128;
/// Default most workers one identity may have joined at once.
pub const JOINS_PER_IDENTITY_MAX_DEFAULT: usize = 16;
/// A refused identity is logged at most once per this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Identities whose last refusal is remembered (for the log's rate limit);
/// past it the memory starts over, which only logs a little more.
const REFUSAL_LOG_IDENTITIES_MAX: usize = 4_096;

/// What a heartbeat may do.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Refresh the worker already in the pool.
    Refresh(Arc<Worker>),
    /// Connect and add (or move) the worker.
    Join,
}

/// Decides what a heartbeat from `identity` may do to `pool`.
pub(crate) fn admit(
    pool: &Pool,
    info: &WorkerInfo,
    identity: Option<&str>,
    (joins_max, per_identity_max): (usize, usize),
) -> Result<Admission, Error> {
    let refuse = |why: &str| Error::PermissionDenied {
        identity: identity.unwrap_or_default().to_owned(),
        action: format!("heartbeat ({why})"),
        store: None,
        side: Side::Proxy,
    };
    if let Some(worker) = pool.get(&info.id) {
        if !worker.dynamic {
            if worker.address != info.address {
                return Err(refuse(&format!(
                    "worker {} is configured at {}",
                    info.id, worker.address
                )));
            }
            return Ok(Admission::Refresh(worker));
        }
        if worker.owner.as_deref() != identity {
            return Err(refuse(&format!(
                "worker {} was registered by another identity",
                info.id
            )));
        }
        if worker.address == info.address {
            return Ok(Admission::Refresh(worker));
        }
        return Ok(Admission::Join);
    }
    let joined: Vec<Arc<Worker>> = pool.all().into_iter().filter(|w| w.dynamic).collect();
    if joined.len() >= joins_max {
        return Err(Error::limit(
            "joins_max",
            joins_max as u64,
            joined.len() as u64 + 1,
        ));
    }
    let mine = joined
        .iter()
        .filter(|w| w.owner.as_deref() == identity)
        .count();
    if mine >= per_identity_max {
        return Err(Error::limit(
            "joins_per_identity_max",
            per_identity_max as u64,
            mine as u64 + 1,
        ));
    }
    Ok(Admission::Join)
}

/// Logs refused heartbeats once per identity per [`REFUSAL_LOG_INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    last: Mutex<HashMap<String, Duration>>,
}

impl RefusalLog {
    /// Logs `error` for `identity` at proxy time `now`, unless it was logged
    /// for that identity within the interval. Returns whether it logged.
    pub(crate) fn note(&self, identity: Option<&str>, error: &Error, now: Duration) -> bool {
        let identity = identity.unwrap_or_default();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let due = last
            .get(identity)
            .is_none_or(|at| now.saturating_sub(*at) >= REFUSAL_LOG_INTERVAL);
        if !due {
            return false;
        }
        if last.len() >= REFUSAL_LOG_IDENTITIES_MAX {
            last.retain(|_, at| now.saturating_sub(*at) < REFUSAL_LOG_INTERVAL);
            if last.len() >= REFUSAL_LOG_IDENTITIES_MAX {
                last.clear();
            }
        }
        last.insert(identity.to_owned(), now);
        tracing::warn!(identity, error = %error, "heartbeat refused (logged once a minute per identity)");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_once_per_identity_per_interval() {
        let log = RefusalLog::default();
        let error = Error::invalid("x");
        let s = Duration::from_secs;
        assert!(log.note(Some("a"), &error, s(0)));
        assert!(!log.note(Some("a"), &error, s(30)));
        assert!(log.note(Some("b"), &error, s(30)));
        assert!(log.note(Some("a"), &error, s(61)));
    }
}
