//! The fault-injection seam of the embedded backend: the next commit of a
//! store fails as a real disk would make it fail. Compiled only with debug
//! assertions (tests and debug builds), never into a release build.

use fjall::{OwnedWriteBatch, PersistMode};
use gater_core::Error;

use crate::faults::{fjall_error, io_error};

/// How the next commit of a store fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// The batch is written to the journal but its flush to stable storage
    /// fails (EIO): what the journal holds is unknown to the appenders,
    /// who get errors.
    FailNextFsync,
    /// The batch write fails (EIO) before anything reaches the journal.
    FailNextWrite,
    /// The batch write fails with no space left on the device (ENOSPC).
    DiskFullNextWrite,
}

/// The OS error number of an I/O error (EIO).
const EIO: i32 = 5;
/// The OS error number of a full device (ENOSPC).
const ENOSPC: i32 = 28;

impl InjectedFault {
    /// Commits (or not) `batch` as the fault says, and fails.
    pub(super) fn apply(self, batch: OwnedWriteBatch) -> Result<(), Error> {
        match self {
            InjectedFault::FailNextFsync => {
                // Reaches the journal file (the OS's cache), not the disk.
                batch
                    .durability(Some(PersistMode::Buffer))
                    .commit()
                    .map_err(fjall_error)?;
                Err(io_error(std::io::Error::from_raw_os_error(EIO)))
            }
            InjectedFault::FailNextWrite => {
                drop(batch);
                Err(io_error(std::io::Error::from_raw_os_error(EIO)))
            }
            InjectedFault::DiskFullNextWrite => {
                drop(batch);
                Err(io_error(std::io::Error::from_raw_os_error(ENOSPC)))
            }
        }
    }
}
