//! The log on the file backend: `WriteAheadLog::open(dir, options)`.

use crate::{Error, Lsn, Options, RecoveryReport, Tail, WriteAheadLog};
use lamina_file::names::segment_file_name;
use lamina_file::{FileReader, FileStorage};
use std::path::Path;

impl WriteAheadLog<FileStorage> {
    /// Opens the log in directory `dir` (created if missing) on the file backend, recovering it,
    /// and takes the directory's lock: a second opener gets an error naming this process.
    /// Segments are not pre-zeroed; use [`WriteAheadLog::open_with`] with a [`FileStorage`]
    /// opened with `prepare_size` for that. A recovery error names the segment's file.
    ///
    /// # Errors
    /// [`Error::Storage`] when the directory cannot be opened or is locked, then what
    /// [`WriteAheadLog::open_with`] returns.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<(Self, RecoveryReport), Error> {
        let dir = dir.as_ref();
        let storage =
            FileStorage::open(dir, lamina_file::Options::new()).map_err(|e| Error::Storage {
                op: "opening the log directory".into(),
                detail: e.to_string(),
            })?;
        Self::open_with(storage, options).map_err(|e| name_the_file(e, dir))
    }

    /// A [`Tail`] of this log from `from`, reading the directory through its own read-only
    /// [`FileReader`]: see [`WriteAheadLog::tail_with`].
    ///
    /// # Errors
    /// [`Error::Storage`] when the directory cannot be opened for reading, then what
    /// [`WriteAheadLog::tail_with`] returns.
    pub fn tail(&self, from: Lsn) -> Result<Tail<FileReader>, Error> {
        let reader = self.storage().reader().map_err(|e| Error::Storage {
            op: "opening the log directory for reading".into(),
            detail: e.to_string(),
        })?;
        self.tail_with(reader, from)
    }
}

/// Adds the path of the segment's file to a recovery error about one segment.
pub(crate) fn name_the_file(error: Error, dir: &Path) -> Error {
    match error {
        Error::Recover {
            detail,
            segment: Some(segment),
            damage,
        } => Error::Recover {
            detail: format!(
                "{detail} (file {})",
                dir.join(segment_file_name(segment)).display()
            ),
            segment: Some(segment),
            damage,
        },
        other => other,
    }
}
