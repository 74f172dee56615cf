//! The backend's error: what failed, where, and the operating system's reason.

use lamina_core::SegmentId;
use lamina_core::io::{self, Failure};
use rustix::io::Errno;
use std::fmt;
use std::path::{Path, PathBuf};

/// The file-system operation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Creating the log or object directory.
    CreateDir,
    /// Opening the directory or a file in it.
    Open,
    /// Taking the directory lock.
    Lock,
    /// Creating a segment file (`O_CREAT|O_EXCL`).
    Create,
    /// Writing zeros ahead of need into a new segment.
    Prepare,
    /// A positioned write.
    Write,
    /// `fdatasync` of a file.
    Sync,
    /// `fsync` of the directory.
    SyncDir,
    /// Removing a file.
    Delete,
    /// A positioned read.
    Read,
    /// Listing the directory.
    List,
    /// Renaming a published object into place.
    Rename,
    /// Linking a published object into place (create-only publish).
    Link,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::CreateDir => "creating directory",
            Op::Open => "open",
            Op::Lock => "lock",
            Op::Create => "create",
            Op::Prepare => "zero-filling",
            Op::Write => "pwrite",
            Op::Sync => "fdatasync",
            Op::SyncDir => "directory fsync",
            Op::Delete => "unlink",
            Op::Read => "pread",
            Op::List => "listing",
            Op::Rename => "rename",
            Op::Link => "link",
        })
    }
}

/// An error of the file backend: it says what happened and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A system call failed.
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
    /// Another opener holds the directory's lock.
    #[error("{} is locked by another process (pid {})", path.display(), Pid(*pid))]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, as written in the lock file (`None` if unreadable).
        pid: Option<u32>,
    },
    /// An object name that cannot be a file name in the object directory.
    #[error("invalid object name {name:?} in {}", dir.display())]
    InvalidName {
        /// The object directory.
        dir: PathBuf,
        /// The name given.
        name: String,
    },
    /// A file that should be a regular file is something else (a FIFO, a directory, a device):
    /// it is refused, never read (a FIFO would block the reader).
    #[error("{} is not a regular file", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// An operation that writes, asked of a read-only view ([`crate::FileReader`]).
    #[error("{op} of {} refused: the log directory is opened read-only", path.display())]
    ReadOnly {
        /// What was asked.
        op: &'static str,
        /// The file or directory it would have changed.
        path: PathBuf,
    },
}

/// A pid as the lock error shows it.
struct Pid(Option<u32>);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "{pid}"),
            None => f.write_str("unknown"),
        }
    }
}

impl FileError {
    /// An error of `op` on `path` (of `segment`, if it is one).
    pub(crate) fn io(
        op: Op,
        path: &Path,
        segment: Option<SegmentId>,
        source: std::io::Error,
    ) -> Self {
        FileError::Io {
            op,
            path: path.to_path_buf(),
            segment,
            source,
        }
    }

    /// The file or directory the error is about.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. }
            | FileError::Locked { path, .. }
            | FileError::ReadOnly { path, .. }
            | FileError::NotRegularFile { path } => path,
            FileError::InvalidName { dir, .. } => dir,
        }
    }

    /// The operating system's error, if a system call failed.
    #[must_use]
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            FileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl io::Error for FileError {
    fn failure(&self) -> Failure {
        if let FileError::ReadOnly { .. } = self {
            return Failure::Unsupported;
        }
        self.io_error()
            .and_then(Errno::from_io_error)
            .map_or(Failure::Other, failure_of)
    }
}

/// What kind of failure an operating-system error number is (the io_uring backend's errors
/// too, whose completions carry an error number).
#[must_use]
pub fn failure_of(errno: Errno) -> Failure {
    match errno {
        Errno::IO => Failure::Io,
        Errno::NOSPC | Errno::DQUOT => Failure::NoSpace,
        Errno::CANCELED => Failure::Cancelled,
        Errno::NOENT => Failure::NotFound,
        Errno::EXIST => Failure::AlreadyExists,
        _ => Failure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_core::io::Error as _;

    fn os(errno: Errno) -> FileError {
        FileError::io(
            Op::Sync,
            Path::new("/log/0000000000000003.seg"),
            Some(SegmentId(3)),
            std::io::Error::from_raw_os_error(errno.raw_os_error()),
        )
    }

    #[test]
    fn errno_maps_to_failure() {
        assert_eq!(os(Errno::IO).failure(), Failure::Io);
        assert_eq!(os(Errno::NOSPC).failure(), Failure::NoSpace);
        assert_eq!(os(Errno::DQUOT).failure(), Failure::NoSpace);
        assert_eq!(os(Errno::CANCELED).failure(), Failure::Cancelled);
        assert_eq!(os(Errno::NOENT).failure(), Failure::NotFound);
        assert_eq!(os(Errno::EXIST).failure(), Failure::AlreadyExists);
        assert_eq!(os(Errno::ACCESS).failure(), Failure::Other);
    }

    #[test]
    fn display_says_what_and_where() {
        assert_eq!(
            os(Errno::IO).to_string(),
            "fdatasync of /log/0000000000000003.seg failed: Input/output error (os error 5)"
        );
        let locked = FileError::Locked {
            path: PathBuf::from("/log/LOCK"),
            pid: Some(42),
        };
        assert_eq!(
            locked.to_string(),
            "/log/LOCK is locked by another process (pid 42)"
        );
        assert_eq!(locked.failure(), Failure::Other);
    }
}
