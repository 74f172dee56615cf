//! [`FileReader`]: a read-only view of a log directory, for a reader that follows the log from
//! another thread or process while its owner writes it.

use crate::error::{FileError, Op};
use crate::fsutil::read_full_at;
use crate::names::{parse_segment_file_name, segment_file_name};
use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, SegmentOp, SegmentStorage};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Segment files kept open at once. A reader walks the segments in order, so a few suffice; the
/// oldest is closed when a new one is opened beyond this.
const OPEN_FILES: usize = 4;

/// An open segment file and the identity (device, inode) it was opened with.
#[derive(Debug)]
struct Open {
    file: File,
    identity: (u64, u64),
}

/// A read-only view of a log directory: [`SegmentStorage::read_at`] and
/// [`SegmentStorage::list`] work, every [`SegmentStorage::submit`] fails with
/// [`FileError::ReadOnly`]. It takes no lock, so it opens a directory that a [`crate::FileStorage`]
/// holds, and it writes nothing.
///
/// Segment files are opened read-only and kept open (a few at a time). A read that reaches the
/// end of a file checks that the name still leads to the file that is open, and reopens it if the
/// segment was deleted and made again under the same name; a listing forgets the files of
/// segments that no longer exist.
#[derive(Debug)]
pub struct FileReader {
    dir: PathBuf,
    files: HashMap<SegmentId, Open>,
}

impl FileReader {
    /// A read-only view of the log directory `dir`.
    ///
    /// # Errors
    /// An I/O error naming the path when `dir` does not exist or is not a directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, FileError> {
        let dir = dir.as_ref().to_path_buf();
        let meta = fs::metadata(&dir).map_err(|e| FileError::io(Op::Open, &dir, None, e))?;
        if !meta.is_dir() {
            let e = std::io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error());
            return Err(FileError::io(Op::Open, &dir, None, e));
        }
        Ok(FileReader {
            dir,
            files: HashMap::new(),
        })
    }

    /// The log directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of segment `id`'s file.
    #[must_use]
    pub fn segment_path(&self, id: SegmentId) -> PathBuf {
        self.dir.join(segment_file_name(id))
    }

    /// Opens segment `id` read-only, keeping at most [`OPEN_FILES`] open.
    fn open_segment(&mut self, id: SegmentId) -> Result<&Open, FileError> {
        if !self.files.contains_key(&id) {
            let path = self.segment_path(id);
            let io = |e| FileError::io(Op::Open, &path, Some(id), e);
            // Without blocking: opening a FIFO under a segment's name for reading would wait for
            // a writer forever.
            let nonblock = i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0);
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(nonblock)
                .open(&path)
                .map_err(io)?;
            let meta = file.metadata().map_err(io)?;
            if !meta.is_file() {
                return Err(io(not_a_segment()));
            }
            if self.files.len() >= OPEN_FILES
                && let Some(oldest) = self.files.keys().min().copied()
            {
                self.files.remove(&oldest);
            }
            let identity = (meta.dev(), meta.ino());
            self.files.insert(id, Open { file, identity });
        }
        self.files.get(&id).ok_or_else(|| {
            FileError::io(
                Op::Open,
                &self.segment_path(id),
                Some(id),
                ErrorKind::NotFound.into(),
            )
        })
    }

    /// Whether the name of segment `id` still leads to the file open for it (`false` also when
    /// the name is gone or cannot be looked up).
    fn still_same(&self, id: SegmentId, open: &Open) -> bool {
        fs::metadata(self.segment_path(id))
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == open.identity)
    }

    fn read(&mut self, id: SegmentId, offset: u64, buf: &mut [u8]) -> Result<usize, FileError> {
        let open = self.open_segment(id)?;
        read_full_at(&open.file, offset, buf)
            .map_err(|e| FileError::io(Op::Read, &self.segment_path(id), Some(id), e))
    }
}

/// The error for a name of a segment that leads to something other than a regular file (a
/// directory, a FIFO, a device): reading it could fail in odd ways or block forever.
pub(crate) fn not_a_segment() -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, "not a regular file")
}

impl ErrorType for FileReader {
    type Error = FileError;
}

impl SegmentStorage for FileReader {
    /// Always fails with [`FileError::ReadOnly`]: the view writes nothing.
    fn submit(&mut self, _token: u64, op: SegmentOp<'_>) -> Result<(), FileError> {
        let (what, path) = match op {
            SegmentOp::Create { segment, .. } => ("create", self.segment_path(segment)),
            SegmentOp::Write { segment, .. } => ("write", self.segment_path(segment)),
            SegmentOp::Sync { segment } => ("sync", self.segment_path(segment)),
            SegmentOp::SyncNamespace => ("directory sync", self.dir.clone()),
            SegmentOp::Delete { segment } => ("delete", self.segment_path(segment)),
        };
        Err(FileError::ReadOnly { op: what, path })
    }

    /// Nothing is ever submitted, so nothing completes.
    fn poll_completion(&mut self) -> Option<Completion<FileError>> {
        None
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, FileError> {
        let n = self.read(segment, offset, buf)?;
        if n < buf.len()
            && let Some(open) = self.files.get(&segment)
            && !self.still_same(segment, open)
        {
            // The end of a file whose name now leads elsewhere (or nowhere): read the segment
            // that has the name now, if there is one.
            self.files.remove(&segment);
            return self.read(segment, offset, buf);
        }
        Ok(n)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, FileError> {
        let io = |e| FileError::io(Op::List, &self.dir, None, e);
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        self.files.retain(|id, _| ids.binary_search(id).is_ok());
        for (slot, id) in out.iter_mut().zip(&ids) {
            *slot = *id;
        }
        Ok(ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileStorage, Options};
    use lamina_core::io::{Error as _, Failure};

    fn write(storage: &mut FileStorage, op: SegmentOp<'_>) {
        storage.submit(1, op).expect("submit");
        let (_, result) = storage.poll_completion().expect("completion");
        result.expect("operation");
    }

    fn read_all(reader: &mut FileReader, id: SegmentId) -> Result<Vec<u8>, FileError> {
        let mut buf = vec![0u8; 64];
        let n = reader.read_at(id, 0, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn reader_sees_what_the_owner_writes_while_it_holds_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = FileStorage::open(dir.path(), Options::new()).expect("open");
        let mut reader = storage.reader().expect("reader");
        let id = SegmentId(3);
        write(
            &mut storage,
            SegmentOp::Create {
                segment: id,
                header: b"head",
            },
        );
        assert_eq!(read_all(&mut reader, id).expect("read"), b"head");
        write(
            &mut storage,
            SegmentOp::Write {
                segment: id,
                offset: 4,
                data: b"-more",
                sync: false,
            },
        );
        assert_eq!(read_all(&mut reader, id).expect("read"), b"head-more");
        let mut ids = [SegmentId(0); 4];
        assert_eq!(reader.list(&mut ids).expect("list"), 1);
        assert_eq!(ids[0], id);
    }

    #[test]
    fn every_submit_fails_read_only_and_nothing_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reader = FileReader::open(dir.path()).expect("open");
        let ops = [
            SegmentOp::Create {
                segment: SegmentId(0),
                header: b"h",
            },
            SegmentOp::Write {
                segment: SegmentId(0),
                offset: 0,
                data: b"d",
                sync: true,
            },
            SegmentOp::Sync {
                segment: SegmentId(0),
            },
            SegmentOp::SyncNamespace,
            SegmentOp::Delete {
                segment: SegmentId(0),
            },
        ];
        for op in ops {
            let e = reader.submit(1, op).expect_err("read-only");
            assert!(matches!(e, FileError::ReadOnly { .. }), "{e}");
            assert_eq!(e.failure(), Failure::Unsupported);
            assert!(e.to_string().contains("read-only"), "{e}");
        }
        assert!(reader.poll_completion().is_none());
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn deleted_segment_reads_not_found_and_a_remade_one_is_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = FileStorage::open(dir.path(), Options::new()).expect("open");
        let mut reader = storage.reader().expect("reader");
        let id = SegmentId(1);
        write(
            &mut storage,
            SegmentOp::Create {
                segment: id,
                header: b"first life",
            },
        );
        assert_eq!(read_all(&mut reader, id).expect("read"), b"first life");

        write(&mut storage, SegmentOp::Delete { segment: id });
        let mut ids = [SegmentId(0); 4];
        assert_eq!(reader.list(&mut ids).expect("list"), 0);
        let e = read_all(&mut reader, id).expect_err("gone");
        assert_eq!(e.failure(), Failure::NotFound);

        write(
            &mut storage,
            SegmentOp::Create {
                segment: id,
                header: b"second",
            },
        );
        assert_eq!(read_all(&mut reader, id).expect("read"), b"second");
    }

    #[test]
    fn a_file_replaced_under_an_open_handle_is_reopened_at_its_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = FileStorage::open(dir.path(), Options::new()).expect("open");
        let mut reader = storage.reader().expect("reader");
        let id = SegmentId(2);
        write(
            &mut storage,
            SegmentOp::Create {
                segment: id,
                header: b"old",
            },
        );
        assert_eq!(read_all(&mut reader, id).expect("read"), b"old");
        // Replaced without the reader listing in between: its handle still reads the old file.
        write(&mut storage, SegmentOp::Delete { segment: id });
        write(
            &mut storage,
            SegmentOp::Create {
                segment: id,
                header: b"a new one",
            },
        );
        assert_eq!(read_all(&mut reader, id).expect("read"), b"a new one");
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let e = FileReader::open(&missing).expect_err("missing");
        assert!(e.to_string().contains("nope"), "{e}");
        let file = dir.path().join("file");
        fs::write(&file, b"x").expect("write");
        assert!(FileReader::open(&file).is_err());
    }
}
