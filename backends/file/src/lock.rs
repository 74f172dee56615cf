//! The exclusive lock on a log directory: `flock(LOCK_EX|LOCK_NB)` on its `LOCK` file, which
//! holds the holder's pid so that a second opener can say who has it.

use crate::error::{FileError, Op};
use crate::names::LOCK_FILE;
use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A held directory lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of directory `dir`, without waiting.
    ///
    /// # Errors
    /// [`FileError::Locked`] when another opener (in this process or another) holds it; an
    /// I/O error when the lock file cannot be opened or written.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, FileError> {
        let path = dir.join(LOCK_FILE);
        let io = |e| FileError::io(Op::Lock, &path, None, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(FileError::Locked { path, pid });
            }
            Err(e) => return Err(io(e.into())),
        }
        // Ours now: record who holds it. Not synced: after a crash nobody holds it anyway.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}
