//! The backend's error: what failed, where, and the operating system's reason.

use lamina_core::SegmentId;
use lamina_core::io::{self, Failure};
use lamina_file::FileError;
use rustix::io::Errno;
use std::fmt;
use std::path::{Path, PathBuf};

/// The operation of the io_uring backend that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Setting up the ring (`io_uring_setup`).
    Setup,
    /// Registering files or buffers with the ring.
    Register,
    /// Submitting to or waiting on the ring (`io_uring_enter`).
    Enter,
    /// Opening a segment file for the ring.
    Open,
    /// Asking the file system for its direct-I/O alignment (`statx`).
    Statx,
    /// Reading the start of a partly written block (direct I/O).
    ReadBlock,
    /// Allocating a buffer.
    Alloc,
    /// `IORING_OP_WRITE` (or `WRITE_FIXED`).
    Write,
    /// `IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`.
    Sync,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Setup => "io_uring setup",
            Op::Register => "io_uring register",
            Op::Enter => "io_uring enter",
            Op::Open => "open",
            Op::Statx => "statx",
            Op::ReadBlock => "block read",
            Op::Alloc => "buffer allocation",
            Op::Write => "io_uring write",
            Op::Sync => "io_uring fdatasync",
        })
    }
}

/// An error of the io_uring backend: it says what happened and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UringError {
    /// An operation on the ring or a segment file failed.
    #[error("{op} of {} failed: {source}", path.display())]
    Io {
        /// What was being done.
        op: Op,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The segment, when the file is one.
        segment: Option<SegmentId>,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// What the backend does with the file backend's code (directory, lock, create, delete,
    /// namespace sync, reads, listing) failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The kernel refuses io_uring (too old, `kernel.io_uring_disabled`, a seccomp filter).
    #[error(
        "io_uring is not available here ({source}); use the file backend, lamina_file::FileStorage, instead"
    )]
    Unavailable {
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// Direct I/O (`O_DIRECT`) was asked for and the file system refuses it.
    #[error(
        "O_DIRECT is refused by the file system of {} ({source}); open without the direct option",
        path.display()
    )]
    DirectUnsupported {
        /// The file it was tried on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A direct-I/O write starts inside a block that another write in flight changes and that is
    /// not the block the segment's previous write ended in: its earlier bytes are unknown until
    /// that write completes. The commit pipeline never issues one (its writes follow each other).
    #[error(
        "direct write at offset {offset} of {} starts in a block another write in flight changes",
        path.display()
    )]
    BlockInFlight {
        /// The segment's file.
        path: PathBuf,
        /// The segment.
        segment: SegmentId,
        /// Where the write starts.
        offset: u64,
    },
}

impl UringError {
    /// An error of `op` on `path` (of `segment`, if it is one).
    pub(crate) fn io(
        op: Op,
        path: &Path,
        segment: Option<SegmentId>,
        source: std::io::Error,
    ) -> Self {
        UringError::Io {
            op,
            path: path.to_path_buf(),
            segment,
            source,
        }
    }

    /// The file or directory the error is about, if any.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match self {
            UringError::Io { path, .. }
            | UringError::DirectUnsupported { path, .. }
            | UringError::BlockInFlight { path, .. } => Some(path),
            UringError::File(e) => Some(e.path()),
            UringError::Unavailable { .. } => None,
        }
    }

    /// The operating system's error, if a system call or an io_uring operation failed.
    #[must_use]
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            UringError::Io { source, .. }
            | UringError::Unavailable { source }
            | UringError::DirectUnsupported { source, .. } => Some(source),
            UringError::File(e) => e.io_error(),
            UringError::BlockInFlight { .. } => None,
        }
    }
}

pub use lamina_file::failure_of;

impl io::Error for UringError {
    fn failure(&self) -> Failure {
        match self {
            UringError::File(e) => e.failure(),
            UringError::BlockInFlight { .. }
            | UringError::Unavailable { .. }
            | UringError::DirectUnsupported { .. } => Failure::Unsupported,
            UringError::Io { source, .. } => {
                Errno::from_io_error(source).map_or(Failure::Other, failure_of)
            }
        }
    }
}

/// The error of a failed `io_uring_setup`: the kernel's refusal of io_uring is
/// [`UringError::Unavailable`], anything else an error of `dir`.
pub(crate) fn setup_error(dir: &Path, e: std::io::Error) -> UringError {
    match Errno::from_io_error(&e) {
        Some(Errno::NOSYS | Errno::PERM | Errno::ACCESS) => UringError::Unavailable { source: e },
        _ => UringError::io(Op::Setup, dir, None, e),
    }
}

/// The error of opening `path` (of `segment`) with `O_DIRECT`: `EINVAL` means the file system
/// refuses direct I/O.
pub(crate) fn open_error(
    path: &Path,
    segment: Option<SegmentId>,
    direct: bool,
    e: std::io::Error,
) -> UringError {
    if direct && Errno::from_io_error(&e) == Some(Errno::INVAL) {
        UringError::DirectUnsupported {
            path: path.to_path_buf(),
            source: e,
        }
    } else {
        UringError::io(Op::Open, path, segment, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_core::io::Error as _;

    fn os(errno: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(errno.raw_os_error())
    }

    fn write_error(errno: Errno) -> UringError {
        UringError::io(
            Op::Write,
            Path::new("/log/0000000000000003.seg"),
            Some(SegmentId(3)),
            os(errno),
        )
    }

    #[test]
    fn errno_maps_to_failure() {
        assert_eq!(write_error(Errno::IO).failure(), Failure::Io);
        assert_eq!(write_error(Errno::NOSPC).failure(), Failure::NoSpace);
        assert_eq!(write_error(Errno::DQUOT).failure(), Failure::NoSpace);
        assert_eq!(write_error(Errno::CANCELED).failure(), Failure::Cancelled);
        assert_eq!(write_error(Errno::NOENT).failure(), Failure::NotFound);
        assert_eq!(write_error(Errno::EXIST).failure(), Failure::AlreadyExists);
        assert_eq!(write_error(Errno::FBIG).failure(), Failure::Other);
        assert_eq!(write_error(Errno::ACCESS).failure(), Failure::Other);
    }

    #[test]
    fn display_says_what_and_where() {
        assert_eq!(
            write_error(Errno::IO).to_string(),
            "io_uring write of /log/0000000000000003.seg failed: Input/output error (os error 5)"
        );
    }

    #[test]
    fn refused_io_uring_names_the_file_backend() {
        for errno in [Errno::NOSYS, Errno::PERM, Errno::ACCESS] {
            let e = setup_error(Path::new("/log"), os(errno));
            assert!(matches!(e, UringError::Unavailable { .. }), "{e:?}");
            assert!(e.to_string().contains("lamina_file::FileStorage"), "{e}");
            assert_eq!(e.failure(), Failure::Unsupported);
        }
        let e = setup_error(Path::new("/log"), os(Errno::NOMEM));
        assert!(matches!(e, UringError::Io { op: Op::Setup, .. }), "{e:?}");
    }

    #[test]
    fn refused_direct_io_is_a_clear_error() {
        let path = Path::new("/log/LOCK");
        let e = open_error(path, None, true, os(Errno::INVAL));
        assert!(matches!(e, UringError::DirectUnsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("O_DIRECT is refused"), "{e}");
        assert!(e.to_string().contains("/log/LOCK"), "{e}");
        // Without direct I/O, EINVAL is an ordinary open error.
        let e = open_error(path, None, false, os(Errno::INVAL));
        assert!(matches!(e, UringError::Io { op: Op::Open, .. }), "{e:?}");
    }
}
