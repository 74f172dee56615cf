//! [`FileStorage`]: the core's [`SegmentStorage`] over one directory, one file per segment.

use crate::error::{FileError, Op};
use crate::fsutil::{
    PAGE, ensure_dir, fsync_directory, read_full_at, rename_noreplace, write_all_at_padded,
    write_zeros,
};
use crate::lock::DirLock;
use crate::names::{OBJECTS_DIR, is_spare_file_name, parse_segment_file_name, segment_file_name};
use crate::objects::FileObjects;
use crate::reader::FileReader;
use crate::spares::Spares;
use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, SegmentOp, SegmentStorage};
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a [`FileStorage`] works. The default prepares nothing and deletes segments outright.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Bytes of zeros written into a new segment before its header (0: none). Set it to the
    /// pipeline's segment size, so that commits overwrite blocks that exist and `fdatasync`
    /// has no file size to journal (measured here: ~131 µs per 4 KiB commit against ~200 µs
    /// when the file grows).
    pub prepare_size: u64,
    /// Spare files a background thread keeps zero-filled (`prepare_size` bytes) and synced
    /// ahead of need, so that a create takes one instead of zero-filling on the append path
    /// (0: none, every create zero-fills inline). Only with a `prepare_size`.
    pub prepare_ahead: usize,
    /// The most spare files kept: a deleted segment's file is renamed to a spare name, to be
    /// reused by a later create, while fewer spares than this are held; beyond it, it is
    /// unlinked (0: deleted segments are unlinked). Its old records stay in it and stay
    /// invisible: the next segment's header has a fresh nonce, so they never validate.
    pub recycle: usize,
    /// Pad a write that ends inside a 4 KiB page with zeros to the page's end, in the same
    /// write, when it is the furthest write into its segment so far (nothing written beyond
    /// it can be overwritten) and the file is that long already (it never grows the file).
    /// The page is then written whole, so the kernel need not read it first when it is not in
    /// the page cache (a recycled file's pages, or any under memory pressure). Measured here
    /// (`benches/commit.rs`, 256 and 1000-byte commits + `fdatasync`): the first commit into a
    /// page not in the cache ~230-240 µs unpadded against ~140-150 µs padded; a page in the
    /// cache costs the same either way. Writes are never widened backwards: that would rewrite
    /// bytes already durable, and a torn rewrite could damage acknowledged records.
    pub pad_to_page: bool,
}

impl Options {
    /// The default options: no preparation, no recycling.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// With `prepare_size` bytes of zeros written into each new segment.
    #[must_use]
    pub fn prepare_size(mut self, bytes: u64) -> Self {
        self.prepare_size = bytes;
        self
    }

    /// With `spares` spare files kept prepared by a background thread.
    #[must_use]
    pub fn prepare_ahead(mut self, spares: usize) -> Self {
        self.prepare_ahead = spares;
        self
    }

    /// With deleted segments kept as spare files, up to `spares` spares held in all.
    #[must_use]
    pub fn recycle(mut self, spares: usize) -> Self {
        self.recycle = spares;
        self
    }

    /// With writes padded to the end of their last page where that is safe.
    #[must_use]
    pub fn pad_to_page(mut self, pad: bool) -> Self {
        self.pad_to_page = pad;
        self
    }
}

/// What a [`FileStorage`] did with its spare files, since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Creates that took a ready spare file (prepared or recycled).
    pub creates_from_spare: u64,
    /// Creates that found no spare ready and zero-filled their file inline, on the append path
    /// (`prepare_size` bytes; none when it is 0).
    pub creates_inline: u64,
    /// Deletes that kept the segment's file as a spare.
    pub recycled: u64,
    /// Spare files the background thread zero-filled.
    pub prepared: u64,
    /// Writes padded with zeros to their page's end.
    pub padded_writes: u64,
}

/// An open segment file, and what this storage knows of it.
#[derive(Debug)]
struct Open {
    file: File,
    /// Its length: from `fstat` when opened (0 if that failed, which only stops padding),
    /// grown by writes.
    len: u64,
    /// Where the furthest write into it since it was opened ends.
    furthest: u64,
}

impl Open {
    fn new(file: File) -> Self {
        let len = file.metadata().map_or(0, |m| m.len());
        Open {
            file,
            len,
            furthest: 0,
        }
    }
}

/// A log's segments in one directory (Linux), as files named `{sequence:016x}.seg`, under an
/// exclusive lock on the directory. Blocking: each operation is done inside `submit`.
///
/// With [`Options::prepare_ahead`], a background thread owned by the storage zero-fills spare
/// files ahead of need (stopped and joined on drop); its failures are reported by the next
/// create. With [`Options::recycle`], deleted segments become spare files. Spare files are
/// named `spare-{n:016x}.tmp`, never listed as segments, and removed at the next open.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    options: Options,
    /// The open segment files, kept open between writes.
    files: HashMap<SegmentId, Open>,
    /// Completions not yet polled, in submission order.
    done: VecDeque<Completion<FileError>>,
    /// Zeros to prepare segments with (allocated at the first prepared create).
    zeros: Vec<u8>,
    /// Deleted segments renamed to spare names, with their lengths, whose renames are not yet
    /// durable: they become spares at the next namespace sync, so that a crash can never bring
    /// back a segment's old name on a file that already holds another segment's header.
    recycled: Vec<(PathBuf, u64)>,
    stats: Stats,
    /// Before the lock, so that it is dropped first: the preparer is joined, and the spares
    /// removed, while the directory is still ours.
    spares: Spares,
    _lock: DirLock,
}

impl FileStorage {
    /// Opens the log directory `dir`, creating it if missing, and takes its lock; removes the
    /// spare files an earlier opener left (after a crash), then starts the background preparer
    /// if the options ask for one.
    ///
    /// # Errors
    /// [`FileError::Locked`] when another opener holds the directory; an I/O error naming the
    /// path when it cannot be created or is not a directory, when a leftover spare cannot be
    /// removed, or when the preparer cannot be started.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Self, FileError> {
        let dir = dir.as_ref().to_path_buf();
        ensure_dir(&dir)?;
        let lock = DirLock::acquire(&dir)?;
        remove_leftover_spares(&dir)?;
        let spares = Spares::new(&dir, options.prepare_size, options.prepare_ahead)?;
        Ok(FileStorage {
            dir,
            options,
            files: HashMap::new(),
            done: VecDeque::new(),
            zeros: Vec::new(),
            recycled: Vec::new(),
            stats: Stats::default(),
            spares,
            _lock: lock,
        })
    }

    /// What it did with spare files so far.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            prepared: self.spares.prepared(),
            ..self.stats
        }
    }

    /// Spare files ready for the next creates.
    #[must_use]
    pub fn spares_ready(&self) -> usize {
        self.spares.ready()
    }

    /// Waits until the background preparer has its [`Options::prepare_ahead`] spares ready,
    /// has failed (the next create reports it), or `timeout` passed; returns whether they are
    /// ready. Returns at once when there is no preparer. For benchmarks and tests that want
    /// creates to find a spare.
    pub fn wait_for_spares(&self, timeout: Duration) -> bool {
        self.spares.wait_ready(timeout)
    }

    /// Makes the background preparer's next preparation fail with an I/O error, which the
    /// create after it reports. A fault hook for tests of that path.
    #[doc(hidden)]
    pub fn fail_next_preparation(&self) {
        self.spares.fail_next();
    }

    /// The log directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was opened with.
    #[must_use]
    pub fn options(&self) -> Options {
        self.options
    }

    /// The path of segment `id`'s file.
    #[must_use]
    pub fn segment_path(&self, id: SegmentId) -> PathBuf {
        self.dir.join(segment_file_name(id))
    }

    /// Opens the objects of this log, in its `objects` subdirectory (created if missing). They
    /// are covered by this directory's lock as long as only holders of it write them.
    ///
    /// # Errors
    /// As [`FileObjects::open`].
    pub fn open_objects(&self) -> Result<FileObjects, FileError> {
        FileObjects::open(self.dir.join(OBJECTS_DIR))
    }

    /// A read-only view of this log directory ([`FileReader`]), for a reader on another thread.
    ///
    /// # Errors
    /// As [`FileReader::open`].
    pub fn reader(&self) -> Result<FileReader, FileError> {
        FileReader::open(&self.dir)
    }

    fn err(&self, op: Op, segment: SegmentId, e: std::io::Error) -> FileError {
        FileError::io(op, &self.segment_path(segment), Some(segment), e)
    }

    /// The open file of `segment`, opened (not created) if it is not yet.
    fn open_file(&mut self, op: Op, segment: SegmentId) -> Result<&mut Open, FileError> {
        if !self.files.contains_key(&segment) {
            let path = self.segment_path(segment);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| FileError::io(op, &path, Some(segment), e))?;
            // A FIFO under a segment's name opens, and a read of it would block forever.
            let regular = file.metadata().map(|m| m.is_file());
            if !regular.map_err(|e| FileError::io(op, &path, Some(segment), e))? {
                let e = crate::reader::not_a_segment();
                return Err(FileError::io(op, &path, Some(segment), e));
            }
            self.files.insert(segment, Open::new(file));
        }
        // The path only for the error: a write must not allocate.
        let dir = &self.dir;
        self.files.get_mut(&segment).ok_or_else(|| {
            let path = dir.join(segment_file_name(segment));
            FileError::io(op, &path, Some(segment), ErrorKind::NotFound.into())
        })
    }

    fn file(&mut self, op: Op, segment: SegmentId) -> Result<&File, FileError> {
        Ok(&self.open_file(op, segment)?.file)
    }

    fn create(&mut self, segment: SegmentId, header: &[u8]) -> Result<(), FileError> {
        if let Some(spare) = self.spares.take()? {
            self.stats.creates_from_spare += 1;
            return self.create_from_spare(segment, header, &spare);
        }
        self.stats.creates_inline += 1;
        let path = self.segment_path(segment);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| FileError::io(Op::Create, &path, Some(segment), e))?;
        match self.prepare(&file, header) {
            Ok(()) => {
                self.files.insert(segment, Open::new(file));
                Ok(())
            }
            Err((op, e)) => {
                // A create that did not complete leaves no file behind (best effort: a crash
                // here leaves a blank or headerless segment, which recovery discards).
                drop(file);
                let _ = fs::remove_file(&path);
                Err(FileError::io(op, &path, Some(segment), e))
            }
        }
    }

    /// Writes the zeros of a new segment, then its header, then syncs.
    fn prepare(&mut self, file: &File, header: &[u8]) -> Result<(), (Op, std::io::Error)> {
        // Zeros first, the header last: a crash in between leaves a blank segment, which
        // recovery tells from a started one.
        write_zeros(file, 0, self.options.prepare_size, &mut self.zeros, None)
            .map_err(|e| (Op::Prepare, e))?;
        file.write_all_at(header, 0).map_err(|e| (Op::Write, e))?;
        file.sync_data().map_err(|e| (Op::Sync, e))
    }

    /// Makes spare file `spare` segment `segment`: its header written and synced under the
    /// spare's name first, then the rename. So a segment's name never stands for a file
    /// without its header durable: a recycled spare still holds an old segment's valid header,
    /// which under the new name would break the chain.
    fn create_from_spare(
        &mut self,
        segment: SegmentId,
        header: &[u8],
        spare: &Path,
    ) -> Result<(), FileError> {
        let path = self.segment_path(segment);
        let made = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(spare)
                .map_err(|e| (Op::Open, e))?;
            file.write_all_at(header, 0).map_err(|e| (Op::Write, e))?;
            file.sync_data().map_err(|e| (Op::Sync, e))?;
            // Never over an existing segment, as the inline create's `O_EXCL`.
            rename_noreplace(spare, &path).map_err(|e| (Op::Create, e))?;
            Ok(file)
        })();
        match made {
            Ok(file) => {
                self.files.insert(segment, Open::new(file));
                Ok(())
            }
            Err((op, e)) => {
                // The spare holds a header now; no use keeping it.
                let _ = fs::remove_file(spare);
                Err(FileError::io(op, &path, Some(segment), e))
            }
        }
    }

    fn write(
        &mut self,
        segment: SegmentId,
        offset: u64,
        data: &[u8],
        sync: bool,
    ) -> Result<(), FileError> {
        let pad_to_page = self.options.pad_to_page;
        let open = self.open_file(Op::Write, segment)?;
        let end = offset + data.len() as u64;
        // Only the furthest write so far: then no byte after `end` holds data written since
        // the file was opened, and what an earlier opener wrote there lies past the end that
        // recovery found, so nothing acknowledged.
        let pad = if pad_to_page && end >= open.furthest {
            (end.div_ceil(PAGE) * PAGE)
                .min(open.len)
                .saturating_sub(end)
        } else {
            0
        };
        // Both finish short writes and retry on EINTR.
        let written = if pad > 0 {
            write_all_at_padded(&open.file, offset, data, pad as usize)
        } else {
            open.file.write_all_at(data, offset)
        };
        if written.is_ok() {
            open.furthest = open.furthest.max(end);
            open.len = open.len.max(end);
        }
        written.map_err(|e| self.err(Op::Write, segment, e))?;
        if pad > 0 {
            self.stats.padded_writes += 1;
        }
        if sync {
            self.sync(segment)?;
        }
        Ok(())
    }

    fn sync(&mut self, segment: SegmentId) -> Result<(), FileError> {
        let synced = self.file(Op::Sync, segment)?.sync_data();
        synced.map_err(|e| self.err(Op::Sync, segment, e))
    }

    fn sync_namespace(&mut self) -> Result<(), FileError> {
        fsync_directory(&self.dir).map_err(|e| FileError::io(Op::SyncDir, &self.dir, None, e))?;
        // The recycled segments' renames are durable now.
        for (spare, len) in self.recycled.drain(..) {
            self.spares.add(spare, len);
        }
        Ok(())
    }

    fn delete(&mut self, segment: SegmentId) -> Result<(), FileError> {
        self.files.remove(&segment);
        let path = self.segment_path(segment);
        if self.spares.held() + self.recycled.len() < self.options.recycle {
            let spare = self.spares.new_name();
            match fs::rename(&path, &spare) {
                Ok(()) => {
                    // An unknown length counts as none: the preparer extends the file in full.
                    let len = fs::metadata(&spare).map_or(0, |m| m.len());
                    self.recycled.push((spare, len));
                    self.stats.recycled += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(self.err(Op::Rename, segment, e)),
            }
        }
        match fs::remove_file(&path) {
            // Already gone is what was asked for (a delete repeated after a crash).
            Err(e) if e.kind() != ErrorKind::NotFound => Err(self.err(Op::Delete, segment, e)),
            _ => Ok(()),
        }
    }
}

impl ErrorType for FileStorage {
    type Error = FileError;
}

impl SegmentStorage for FileStorage {
    /// Does the operation at once; its result is reported by the next poll. Never fails to
    /// start.
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), FileError> {
        let result = match op {
            SegmentOp::Create { segment, header } => self.create(segment, header),
            SegmentOp::Write {
                segment,
                offset,
                data,
                sync,
            } => self.write(segment, offset, data, sync),
            SegmentOp::Sync { segment } => self.sync(segment),
            SegmentOp::SyncNamespace => self.sync_namespace(),
            SegmentOp::Delete { segment } => self.delete(segment),
        };
        self.done.push_back((token, result));
        Ok(())
    }

    fn poll_completion(&mut self) -> Option<Completion<FileError>> {
        self.done.pop_front()
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, FileError> {
        let read = read_full_at(self.file(Op::Read, segment)?, offset, buf);
        read.map_err(|e| self.err(Op::Read, segment, e))
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
        for (slot, id) in out.iter_mut().zip(&ids) {
            *slot = *id;
        }
        Ok(ids.len())
    }
}

/// Removes the spare files an earlier opener of `dir` left behind (a crash keeps them; they
/// hold zeros or an old segment's bytes, and nothing in them is needed).
fn remove_leftover_spares(dir: &Path) -> Result<(), FileError> {
    let io = |e| FileError::io(Op::List, dir, None, e);
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_name().to_str().is_some_and(is_spare_file_name) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(FileError::io(Op::Delete, &path, None, e));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
