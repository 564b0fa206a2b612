//! Disk faults: the one place where errors of fjall and of the file system
//! become readable [`Error`]s (never a `Debug` dump), where a store's health
//! (running, read-only, failed) is kept, and where the engine learns whether
//! a store's device has room again.
//!
//! A backend maps a library error with [`fjall_error`] / [`io_error`] where
//! it happens, without knowing the store; [`attribute`] then names the store
//! (and, for a full disk, its data directory) once, at the backend's edge.
//! PostgreSQL errors are mapped by the `postgres` backend's `error` module,
//! which uses [`full`] for the database's disk-full and read-only codes.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use gater_core::{Error, StoreFault, StoreId, StoreState};

/// Default interval between checks whether a read-only store can write
/// again, and the first back-off of a failed store. Milliseconds.
pub const HEAL_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// Default longest back-off between reopen attempts of a failed store. Milliseconds.
pub const HEAL_BACKOFF_MAX_MS_DEFAULT: u64 = 60_000;
/// Default free bytes a read-only store's device needs before it reopens (64 MiB).
pub const HEAL_FREE_BYTES_MIN_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default share of its device a read-only store needs free before it
/// reopens, in percent; the larger of this and the bytes minimum counts.
pub const HEAL_FREE_PERCENT_MIN_DEFAULT: u8 = 1;

/// How stores heal after a disk fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealOptions {
    /// How often a read-only store checks for room, and the first back-off
    /// of a failed one. Milliseconds.
    pub interval_ms: u64,
    /// The longest back-off between reopen attempts of a failed store. Milliseconds.
    pub backoff_max_ms: u64,
    /// Free bytes needed on the device before a read-only store reopens.
    pub free_bytes_min: u64,
    /// Free share of the device needed before a read-only store reopens, in percent.
    pub free_percent_min: u8,
}

impl Default for HealOptions {
    fn default() -> Self {
        HealOptions {
            interval_ms: HEAL_INTERVAL_MS_DEFAULT,
            backoff_max_ms: HEAL_BACKOFF_MAX_MS_DEFAULT,
            free_bytes_min: HEAL_FREE_BYTES_MIN_DEFAULT,
            free_percent_min: HEAL_FREE_PERCENT_MIN_DEFAULT,
        }
    }
}

impl HealOptions {
    /// The interval between checks of a read-only store.
    pub(crate) fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(1))
    }

    /// The back-off before reopen attempt `attempt` (1-based) of a failed
    /// store: the interval, doubled per attempt, capped.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .interval_ms
            .max(1)
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(32));
        Duration::from_millis(doubled.min(self.backoff_max_ms.max(1)))
    }

    /// Whether `space` leaves room enough to write again.
    pub(crate) fn has_room(&self, space: Space) -> bool {
        let share = space.total_bytes / 100 * u64::from(self.free_percent_min);
        space.free_bytes >= self.free_bytes_min.max(share)
    }
}

/// The size and free space of a file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Space {
    /// Bytes an unprivileged writer can still use.
    pub(crate) free_bytes: u64,
    /// The file system's size in bytes.
    pub(crate) total_bytes: u64,
}

/// The space of the file system holding `path`.
#[cfg(unix)]
pub(crate) fn space(path: &Path) -> Result<Space, Error> {
    let stat = rustix::fs::statvfs(path).map_err(|e| io_error(e.into()))?;
    Ok(Space {
        free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
        total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
    })
}

/// The space of the file system holding `path`: unknown off Unix, so a
/// read-only store simply tries to reopen at each interval.
#[cfg(not(unix))]
pub(crate) fn space(_path: &Path) -> Result<Space, Error> {
    Ok(Space {
        free_bytes: u64::MAX,
        total_bytes: u64::MAX,
    })
}

/// A fjall error in words, as `StorageFull` (no space left) or
/// `StorageFailed`; the store is named later by [`attribute`].
pub(crate) fn fjall_error(e: fjall::Error) -> Error {
    match e {
        fjall::Error::Io(e) => io_error(e),
        fjall::Error::Storage(e) => lsm_error(e),
        fjall::Error::Poisoned => failed(
            "an earlier write or flush failed, so the database refuses writes until it is reopened",
        ),
        fjall::Error::JournalRecovery(e) => failed(format!(
            "the journal cannot be recovered: {}",
            journal_recovery(e)
        )),
        fjall::Error::InvalidVersion(_) => failed("the data files have an unknown format version"),
        fjall::Error::Decompress(_) => failed("a block of the data files does not decompress"),
        fjall::Error::InvalidTrailer | fjall::Error::InvalidTag(_) => {
            failed("the journal holds damaged data")
        }
        fjall::Error::KeyspaceDeleted => failed("a keyspace of the database was deleted"),
        fjall::Error::Locked => failed("the database is locked by another process"),
        fjall::Error::Unrecoverable => failed("the database cannot be recovered from its files"),
        _ => failed("the storage engine reported an unknown error"),
    }
}

fn lsm_error(e: fjall::LsmError) -> Error {
    use fjall::LsmError as L;
    match e {
        L::Io(e) => io_error(e),
        L::ChecksumMismatch { .. } => failed("a block of the data files fails its checksum"),
        L::Decompress(_) => failed("a block of the data files does not decompress"),
        L::InvalidVersion(_) => failed("a data file has an unknown format version"),
        L::Unrecoverable => failed("some data files cannot be recovered"),
        L::InvalidTag(_) | L::InvalidTrailer | L::InvalidHeader(_) => {
            failed("a data file holds damaged data")
        }
        L::Utf8(_) => failed("a data file holds a name that is not UTF-8"),
        _ => failed("the storage engine reported an unknown error"),
    }
}

fn journal_recovery(e: fjall::JournalRecoveryError) -> &'static str {
    match e {
        fjall::JournalRecoveryError::InsufficientLength => "a batch is shorter than it says",
        fjall::JournalRecoveryError::TooManyItems => "a batch is longer than it says",
        fjall::JournalRecoveryError::ChecksumMismatch => "a batch fails its checksum",
        fjall::JournalRecoveryError::InvalidFileName => "a journal file has an unknown name",
    }
}

/// An I/O error in words: no space left (or quota exhausted) is
/// `StorageFull`, anything else `StorageFailed` with the OS's own words.
pub(crate) fn io_error(e: std::io::Error) -> Error {
    if is_full(&e) {
        return full(String::new());
    }
    failed(format!("I/O error: {e}"))
}

fn is_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    )
}

/// A `StorageFailed` not yet attributed to a store.
pub(crate) fn failed(message: impl Into<String>) -> Error {
    Error::StorageFailed {
        store: String::new(),
        message: message.into(),
    }
}

/// A `StorageFull` not yet attributed to a store; an empty message is
/// filled in by [`attribute`] with the store's data directory.
pub(crate) fn full(message: impl Into<String>) -> Error {
    Error::StorageFull {
        store: String::new(),
        message: message.into(),
    }
}

/// Names `store` (held in `dir`) in a storage error that does not name one yet.
pub(crate) fn attribute(error: Error, store: &StoreId, dir: Option<&Path>) -> Error {
    match error {
        Error::StorageFull { store: s, message } if s.is_empty() => {
            let message = match (message.is_empty(), dir) {
                (true, Some(dir)) => format!(
                    "no space left on the device holding store {store} (data dir {})",
                    dir.display()
                ),
                (true, None) => format!("no space left for store {store}"),
                (false, _) => message,
            };
            Error::StorageFull {
                store: store.to_string(),
                message,
            }
        }
        Error::StorageFailed { store: s, message } if s.is_empty() => Error::StorageFailed {
            store: store.to_string(),
            message,
        },
        other => other,
    }
}

/// Whether a failed commit is a disk fault, after which the store stops
/// taking appends and is reopened from its storage before the next one.
pub(crate) fn is_disk_fault(error: &Error) -> bool {
    matches!(
        error,
        Error::StorageFull { .. } | Error::StorageFailed { .. }
    )
}

/// A store's health: whether it takes appends, and why not.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// `ReadOnly` or `Failed` with the reason; `None` while the store runs.
    fault: Mutex<Option<(StoreState, String)>>,
}

impl Health {
    /// The store's state, `Running` when it has no fault.
    pub(crate) fn state(&self) -> (StoreState, Option<String>) {
        match &*self.lock() {
            Some((state, reason)) => (*state, Some(reason.clone())),
            None => (StoreState::Running, None),
        }
    }

    /// The error an append gets now, `None` when the store takes appends.
    pub(crate) fn refusal(&self, store: &StoreId) -> Option<Error> {
        let guard = self.lock();
        let (state, reason) = guard.as_ref()?;
        state.refusal(store, reason)
    }

    /// The store refuses appends from now on, in `state`, because of `reason`.
    pub(crate) fn set_fault(&self, state: StoreState, reason: String) {
        *self.lock() = Some((state, reason));
    }

    /// The store takes appends again.
    pub(crate) fn clear(&self) {
        *self.lock() = None;
    }

    /// The fault as a worker reports it, if any.
    pub(crate) fn report(&self, store: &StoreId) -> Option<StoreFault> {
        let guard = self.lock();
        let (state, reason) = guard.as_ref()?;
        Some(StoreFault {
            store: store.clone(),
            state: *state,
            reason: reason.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(StoreState, String)>> {
        // Every writer replaces the whole value: a poisoned lock still
        // guards a consistent one.
        self.fault.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The state a store enters after the disk fault `error`: `ReadOnly` when
/// its device is full (whatever failed first: a write, or a flush that
/// poisoned the database), `Failed` otherwise; and the reason, in words.
pub(crate) fn state_after(
    error: &Error,
    device_full: bool,
    store: &StoreId,
    dir: Option<&Path>,
) -> (StoreState, String) {
    match error {
        Error::StorageFull { message, .. } => (StoreState::ReadOnly, message.clone()),
        _ if device_full => match attribute(full(String::new()), store, dir) {
            Error::StorageFull { message, .. } => (StoreState::ReadOnly, message),
            other => (StoreState::ReadOnly, other.to_string()),
        },
        Error::StorageFailed { message, .. } => (StoreState::Failed, message.clone()),
        other => (StoreState::Failed, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_left_is_storage_full_and_names_the_store_and_its_directory() {
        let store = StoreId::new("orders").unwrap();
        let e = std::io::Error::from_raw_os_error(28);
        let error = attribute(
            fjall_error(fjall::Error::Io(e)),
            &store,
            Some(Path::new("/data/stores/orders")),
        );
        assert_eq!(error.kind(), "storage_full");
        assert!(error.is_retryable());
        assert_eq!(
            error.to_string(),
            "no space left on the device holding store orders (data dir /data/stores/orders)"
        );
    }

    #[test]
    fn other_io_errors_are_storage_failed_in_words_without_debug_dumps() {
        let store = StoreId::new("orders").unwrap();
        let error = attribute(
            fjall_error(fjall::Error::Io(std::io::Error::from_raw_os_error(5))),
            &store,
            None,
        );
        assert_eq!(error.kind(), "storage_failed");
        assert!(!error.is_retryable());
        let text = error.to_string();
        assert!(text.contains("store orders"), "{text}");
        assert!(text.contains("os error 5"), "{text}");
        assert!(!text.contains("Os {"), "{text}");
        let poisoned = attribute(fjall_error(fjall::Error::Poisoned), &store, None).to_string();
        assert!(!poisoned.contains("Poisoned"), "{poisoned}");
    }

    #[test]
    fn a_failed_store_backs_off_exponentially_up_to_the_cap() {
        let options = HealOptions {
            interval_ms: 100,
            backoff_max_ms: 1_000,
            ..HealOptions::default()
        };
        let waits: Vec<u64> = (1..=6)
            .map(|a| options.backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn room_needs_the_larger_of_the_byte_and_percent_margins() {
        let options = HealOptions::default();
        let small = |free| Space {
            free_bytes: free,
            total_bytes: 1 << 30,
        };
        assert!(!options.has_room(small(63 << 20)));
        assert!(options.has_room(small(64 << 20)));
        let large = |free| Space {
            free_bytes: free,
            total_bytes: 100 << 30,
        };
        assert!(
            !options.has_room(large(900 << 20)),
            "1 % of 100 GiB is 1 GiB"
        );
        assert!(options.has_room(large(1 << 30)));
    }
}
