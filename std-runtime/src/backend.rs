//! Choosing the backend of a log in a directory: [`Backend`] says which, [`DirStorage`] is either
//! one behind one type, so that code written against [`DirLog`] compiles unchanged whichever
//! backend is built in or chosen. Both backends write the same files, so a log written by one is
//! opened by the other, and a tail reads either through a [`FileReader`].

use crate::{Error, Lsn, Options, RecoveryReport, Tail, WriteAheadLog};
use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, Failure, SegmentOp, SegmentStorage};
use lamina_file::{FileError, FileReader, FileStorage};
use std::fmt;
use std::path::Path;

/// A log in a directory, on the backend [`Backend`] chose: see [`WriteAheadLog::open_dir`].
pub type DirLog = WriteAheadLog<DirStorage>;

/// Which backend [`WriteAheadLog::open_dir`] runs a log on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// The file backend (`lamina-file`): pwrite and fdatasync on the log's own thread.
    #[default]
    File,
    /// The io_uring backend (`lamina-uring`, feature `io-uring`), with these options. When the
    /// kernel refuses io_uring, the open fails with an error naming the file backend.
    #[cfg(feature = "io-uring")]
    Uring(lamina_uring::Options),
    /// The io_uring backend when the kernel allows it, else the file backend. The fall-back is
    /// reported in the [`Selected`] the open returns, and by [`DirStorage::fallback`].
    #[cfg(feature = "io-uring")]
    UringOrFile(lamina_uring::Options),
}

/// The backend a [`DirStorage`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// The file backend.
    File,
    /// The io_uring backend.
    Uring,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::File => "file",
            BackendKind::Uring => "io_uring",
        })
    }
}

/// What an open chose: the backend the log runs on, and why it is not the one asked for, if it
/// is not.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a fall-back to the file backend is reported here"]
pub struct Selected {
    /// The backend the log runs on.
    pub backend: BackendKind,
    /// `Some(reason)` when io_uring was asked for with `Backend::UringOrFile` (feature `io-uring`) and the kernel
    /// refused it, so the log runs on the file backend.
    pub fallback: Option<String>,
}

/// The storage of a [`DirLog`]: the file backend's, or (feature `io-uring`) the io_uring
/// backend's, each doing every operation itself; this only forwards.
#[derive(Debug)]
pub struct DirStorage {
    inner: Inner,
    fallback: Option<String>,
}

#[derive(Debug)]
// One per log, moved only when opened: the file backend's few hundred bytes stay inline.
#[allow(clippy::large_enum_variant)]
enum Inner {
    File(FileStorage),
    /// Boxed: the ring's state is several times the file backend's.
    #[cfg(feature = "io-uring")]
    Uring(Box<lamina_uring::UringStorage>),
}

/// The error of a [`DirStorage`]: its backend's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirError {
    /// The file backend's error.
    #[error(transparent)]
    File(#[from] FileError),
    /// The io_uring backend's error.
    #[cfg(feature = "io-uring")]
    #[error(transparent)]
    Uring(#[from] lamina_uring::UringError),
}

impl lamina_core::io::Error for DirError {
    fn failure(&self) -> Failure {
        match self {
            DirError::File(e) => e.failure(),
            #[cfg(feature = "io-uring")]
            DirError::Uring(e) => e.failure(),
        }
    }
}

impl From<FileStorage> for DirStorage {
    fn from(storage: FileStorage) -> Self {
        DirStorage {
            inner: Inner::File(storage),
            fallback: None,
        }
    }
}

#[cfg(feature = "io-uring")]
impl From<lamina_uring::UringStorage> for DirStorage {
    fn from(storage: lamina_uring::UringStorage) -> Self {
        DirStorage {
            inner: Inner::Uring(Box::new(storage)),
            fallback: None,
        }
    }
}

impl DirStorage {
    /// Opens the log directory `dir` (created if missing, its lock taken) on `backend`.
    ///
    /// # Errors
    /// [`Error::Storage`] when the directory cannot be opened or is locked, or when
    /// `Backend::Uring` (feature `io-uring`) was asked for and the kernel refuses io_uring (the error names the file
    /// backend) or the file system refuses `O_DIRECT`.
    pub fn open(dir: impl AsRef<Path>, backend: Backend) -> Result<Self, Error> {
        Self::open_on(dir.as_ref(), backend, lamina_file::Options::new())
    }

    /// [`Self::open`], with `file` the file backend's settings (when it is the file backend,
    /// asked for or fallen back to).
    pub(crate) fn open_on(
        dir: &Path,
        backend: Backend,
        file: lamina_file::Options,
    ) -> Result<Self, Error> {
        let file_options = file;
        let file = |e: FileError| Error::Storage {
            op: "opening the log directory".into(),
            detail: e.to_string(),
        };
        match backend {
            Backend::File => Ok(FileStorage::open(dir, file_options).map_err(file)?.into()),
            #[cfg(feature = "io-uring")]
            Backend::Uring(options) => lamina_uring::UringStorage::open(dir, options)
                .map(DirStorage::from)
                .map_err(uring_error),
            #[cfg(feature = "io-uring")]
            Backend::UringOrFile(options) => uring_or_file(dir, file_options, || {
                lamina_uring::UringStorage::open(dir, options)
            }),
        }
    }

    /// The backend it runs on.
    #[must_use]
    pub fn kind(&self) -> BackendKind {
        match &self.inner {
            Inner::File(_) => BackendKind::File,
            #[cfg(feature = "io-uring")]
            Inner::Uring(_) => BackendKind::Uring,
        }
    }

    /// Why it runs on the file backend though io_uring was asked for, if it fell back.
    #[must_use]
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// What the open chose.
    pub fn selected(&self) -> Selected {
        Selected {
            backend: self.kind(),
            fallback: self.fallback.clone(),
        }
    }

    /// The log directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        match &self.inner {
            Inner::File(s) => s.dir(),
            #[cfg(feature = "io-uring")]
            Inner::Uring(s) => s.dir(),
        }
    }

    /// A read-only view of the directory for a [`Tail`]: both backends write the same files.
    ///
    /// # Errors
    /// When the directory cannot be opened for reading.
    pub fn reader(&self) -> Result<FileReader, FileError> {
        FileReader::open(self.dir())
    }

    /// The file backend's storage, when it runs on it.
    #[must_use]
    pub fn as_file(&self) -> Option<&FileStorage> {
        match &self.inner {
            Inner::File(s) => Some(s),
            #[cfg(feature = "io-uring")]
            Inner::Uring(_) => None,
        }
    }

    /// The io_uring backend's storage, when it runs on it.
    #[cfg(feature = "io-uring")]
    #[must_use]
    pub fn as_uring(&self) -> Option<&lamina_uring::UringStorage> {
        match &self.inner {
            Inner::Uring(s) => Some(s),
            Inner::File(_) => None,
        }
    }
}

/// The open error for an io_uring refusal or failure; a refusal names the other ways to open.
#[cfg(feature = "io-uring")]
fn uring_error(e: lamina_uring::UringError) -> Error {
    let hint = if matches!(e, lamina_uring::UringError::Unavailable { .. }) {
        " (Backend::File, or Backend::UringOrFile to fall back to it, opens the log on the file \
         backend)"
    } else {
        ""
    };
    Error::Storage {
        op: "opening the log directory on io_uring".into(),
        detail: format!("{e}{hint}"),
    }
}

/// io_uring from `open_uring`, or the file backend when the kernel refuses io_uring, with the
/// refusal kept as the fall-back's reason.
#[cfg(feature = "io-uring")]
fn uring_or_file(
    dir: &Path,
    file_options: lamina_file::Options,
    open_uring: impl FnOnce() -> Result<lamina_uring::UringStorage, lamina_uring::UringError>,
) -> Result<DirStorage, Error> {
    match open_uring() {
        Ok(storage) => Ok(storage.into()),
        Err(refused @ lamina_uring::UringError::Unavailable { .. }) => {
            // The failed open released the directory's lock with its storage.
            let storage = FileStorage::open(dir, file_options).map_err(|e| Error::Storage {
                op: "opening the log directory on the file backend, io_uring being refused".into(),
                detail: e.to_string(),
            })?;
            Ok(DirStorage {
                inner: Inner::File(storage),
                fallback: Some(refused.to_string()),
            })
        }
        Err(e) => Err(uring_error(e)),
    }
}

impl ErrorType for DirStorage {
    type Error = DirError;
}

impl SegmentStorage for DirStorage {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), DirError> {
        match &mut self.inner {
            Inner::File(s) => Ok(s.submit(token, op)?),
            #[cfg(feature = "io-uring")]
            Inner::Uring(s) => Ok(s.submit(token, op)?),
        }
    }

    fn poll_completion(&mut self) -> Option<Completion<DirError>> {
        let (token, result) = match &mut self.inner {
            Inner::File(s) => s
                .poll_completion()
                .map(|(t, r)| (t, r.map_err(DirError::from))),
            #[cfg(feature = "io-uring")]
            Inner::Uring(s) => s
                .poll_completion()
                .map(|(t, r)| (t, r.map_err(DirError::from))),
        }?;
        Some((token, result))
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, DirError> {
        match &mut self.inner {
            Inner::File(s) => Ok(s.read_at(segment, offset, buf)?),
            #[cfg(feature = "io-uring")]
            Inner::Uring(s) => Ok(s.read_at(segment, offset, buf)?),
        }
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, DirError> {
        match &mut self.inner {
            Inner::File(s) => Ok(s.list(out)?),
            #[cfg(feature = "io-uring")]
            Inner::Uring(s) => Ok(s.list(out)?),
        }
    }

    fn wait_for_completion(&mut self) -> Result<(), DirError> {
        match &mut self.inner {
            Inner::File(s) => Ok(s.wait_for_completion()?),
            #[cfg(feature = "io-uring")]
            Inner::Uring(s) => Ok(s.wait_for_completion()?),
        }
    }
}

impl WriteAheadLog<DirStorage> {
    /// Opens the log in directory `dir` (created if missing, its lock taken) on `backend`,
    /// recovering it as [`WriteAheadLog::open`] does; also returns what recovery found and which
    /// backend the log runs on (a fall-back to the file backend is reported there). Code written
    /// against [`DirLog`] runs unchanged on every backend.
    ///
    /// # Errors
    /// What [`DirStorage::open`] returns, then what [`WriteAheadLog::open_with`] returns (a
    /// recovery error names the segment's file).
    pub fn open_dir(
        dir: impl AsRef<Path>,
        options: Options,
        backend: Backend,
    ) -> Result<(Self, RecoveryReport, Selected), Error> {
        let dir = dir.as_ref();
        let storage = DirStorage::open_on(dir, backend, crate::file::file_options(&options))?;
        let selected = storage.selected();
        let (log, report) =
            Self::open_with(storage, options).map_err(|e| crate::file::name_the_file(e, dir))?;
        Ok((log, report, selected))
    }

    /// A [`Tail`] of this log from `from`, reading the directory through its own read-only
    /// [`FileReader`] (whichever backend writes it): see [`WriteAheadLog::tail_with`].
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn the_default_backend_is_the_file_backend_and_reports_no_fallback() {
        let dir = tempdir();
        let storage = DirStorage::open(dir.path(), Backend::default()).expect("open");
        assert_eq!(storage.kind(), BackendKind::File);
        assert_eq!(
            storage.selected(),
            Selected {
                backend: BackendKind::File,
                fallback: None
            }
        );
        assert!(storage.as_file().is_some());
    }

    #[test]
    fn a_locked_directory_is_a_storage_error() {
        let dir = tempdir();
        let _first = DirStorage::open(dir.path(), Backend::File).expect("open");
        let e = DirStorage::open(dir.path(), Backend::File).expect_err("locked");
        assert!(matches!(e, Error::Storage { .. }), "{e:?}");
    }

    #[cfg(feature = "io-uring")]
    fn refused() -> lamina_uring::UringError {
        lamina_uring::UringError::Unavailable {
            source: std::io::Error::from_raw_os_error(1),
        }
    }

    #[cfg(feature = "io-uring")]
    #[test]
    fn a_refused_ring_falls_back_to_the_file_backend_and_says_why() {
        let dir = tempdir();
        let storage = uring_or_file(dir.path(), lamina_file::Options::new(), || Err(refused()))
            .expect("fell back");
        assert_eq!(storage.kind(), BackendKind::File);
        let reason = storage.fallback().expect("the fall-back is reported");
        assert!(reason.contains("io_uring is not available"), "{reason}");
        assert_eq!(storage.selected().fallback.as_deref(), Some(reason));
    }

    #[cfg(feature = "io-uring")]
    #[test]
    fn a_refused_ring_without_fallback_is_an_error_naming_the_file_backend() {
        let e = uring_error(refused());
        let text = e.to_string();
        assert!(text.contains("file backend"), "{text}");
        assert!(text.contains("Backend::UringOrFile"), "{text}");
    }

    #[cfg(feature = "io-uring")]
    #[test]
    fn other_ring_failures_do_not_fall_back() {
        let dir = tempdir();
        let e = uring_or_file(dir.path(), lamina_file::Options::new(), || {
            Err(lamina_uring::UringError::DirectUnsupported {
                path: dir.path().to_path_buf(),
                source: std::io::Error::from_raw_os_error(22),
            })
        })
        .expect_err("no fall-back for O_DIRECT");
        assert!(e.to_string().contains("O_DIRECT"), "{e}");
    }
}
