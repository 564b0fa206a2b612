//! The adapter's bounds: read page size, replay queue length, retries.

use std::future::Future;
use std::time::Duration;

use gater_core::Error;

/// Default events asked for per read while loading or replaying.
pub const READ_PAGE_LEN_DEFAULT: u32 = 500;
/// Default events buffered between a replay's reader task and its consumer.
pub const REPLAY_QUEUE_LEN_DEFAULT: usize = 256;
/// Default attempts of one Gater call that fails with a retryable error.
pub const CALL_ATTEMPTS_MAX_DEFAULT: u32 = 3;
/// Default wait before the first retry, milliseconds (doubled per retry).
pub const RETRY_BACKOFF_MS_DEFAULT: u64 = 100;

/// How the repositories read, buffer and retry. Every field is a bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepositoryOptions {
    /// Events asked for per read (`get_events`, `read_all`); at most the
    /// server's read limit (10,000 by default). 0 is taken as 1.
    ///
    /// A reader pages on from where a page ended until a page comes back
    /// empty, so a server that returns shorter pages is read correctly.
    pub read_page_len: u32,
    /// Events a `stream_events` / `stream_all_events` feed holds before its
    /// reader task waits for the consumer. 0 is taken as 1. A replay holds at
    /// most this many events plus one page in memory.
    pub replay_queue_len: usize,
    /// Attempts of one Gater call that fails with a retryable error
    /// (unavailable, deadline exceeded, overloaded, store stopping). An append
    /// is retried with the same event ids, so Gater answers a retry of an
    /// append that was applied with the original result. 0 is taken as 1.
    pub call_attempts_max: u32,
    /// Wait before the first retry, milliseconds; doubled for each next one.
    pub retry_backoff_ms: u64,
}

impl Default for RepositoryOptions {
    fn default() -> Self {
        RepositoryOptions {
            read_page_len: READ_PAGE_LEN_DEFAULT,
            replay_queue_len: REPLAY_QUEUE_LEN_DEFAULT,
            call_attempts_max: CALL_ATTEMPTS_MAX_DEFAULT,
            retry_backoff_ms: RETRY_BACKOFF_MS_DEFAULT,
        }
    }
}

impl RepositoryOptions {
    pub(crate) fn page_len(&self) -> u32 {
        self.read_page_len.max(1)
    }

    pub(crate) fn queue_len(&self) -> usize {
        self.replay_queue_len.max(1)
    }

    /// Runs `call` until it succeeds, fails with an error that is not
    /// retryable, or has had `call_attempts_max` attempts.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let attempts_max = self.call_attempts_max.max(1);
        let mut backoff_ms = self.retry_backoff_ms;
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && attempt < attempts_max => {
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = backoff_ms.saturating_mul(2);
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }
}
