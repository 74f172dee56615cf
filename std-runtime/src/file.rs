//! The log on the file backend: `WriteAheadLog::open(dir, options)`.

use crate::{Error, Lsn, Options, RecoveryReport, Tail, WriteAheadLog};
use lamina_file::names::segment_file_name;
use lamina_file::{FileReader, FileStorage};
use std::path::Path;

impl WriteAheadLog<FileStorage> {
    /// Opens the log in directory `dir` (created if missing) on the file backend, recovering it,
    /// and takes the directory's lock: a second opener gets an error naming this process.
    ///
    /// The storage prepares segments ahead of need and recycles them: each segment is
    /// zero-filled to the pipeline's `segment_size` (`options.config.segment_size`) before its
    /// header, so commits overwrite blocks that exist and `fdatasync` has no file size to
    /// journal; a background thread owned by the storage keeps one such spare file ready, so
    /// no zero-filling happens on the append path; and up to two segments deleted by
    /// [`WriteAheadLog::truncate_before`] are kept as spares and reused (their old records stay
    /// invisible under the new segment's header). The spares cost up to two segment sizes of
    /// disk beside the log, named `spare-*.tmp` and removed at the next open. A write that
    /// ends inside a page is padded with zeros to the page's end where that is safe, so a page
    /// no longer in the page cache is not read back first. A new log's first segment, and the
    /// first after a reopen, may be zero-filled inline when the spare is not ready yet. For
    /// other settings, open a [`FileStorage`] with its own [`lamina_file::Options`] and use
    /// [`WriteAheadLog::open_with`]. A recovery error names the segment's file.
    ///
    /// # Errors
    /// [`Error::Storage`] when the directory cannot be opened or is locked, then what
    /// [`WriteAheadLog::open_with`] returns.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<(Self, RecoveryReport), Error> {
        let dir = dir.as_ref();
        let storage =
            FileStorage::open(dir, file_options(&options)).map_err(|e| Error::Storage {
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

/// The file backend's settings [`WriteAheadLog::open`] uses for `options` (see there).
pub(crate) fn file_options(options: &Options) -> lamina_file::Options {
    lamina_file::Options::new()
        .prepare_size(options.config.segment_size)
        .prepare_ahead(SPARES_AHEAD)
        .recycle(SPARES_KEPT)
        .pad_to_page(true)
}

/// Spare segment files [`WriteAheadLog::open`] keeps prepared ahead of need.
const SPARES_AHEAD: usize = 1;

/// The most spare segment files (prepared or recycled) [`WriteAheadLog::open`] keeps.
const SPARES_KEPT: usize = 2;
