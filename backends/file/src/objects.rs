//! [`FileObjects`]: the core's [`ObjectStorage`] over one directory, one file per object,
//! published atomically.

use crate::direct::{self, Alignment};
use crate::error::{FileError, Op};
use crate::fsutil::{
    ensure_dir, fsync_directory, open_nonblocking, open_regular_for_reading, read_full_at,
};
use crate::names::{TEMP_PREFIX, is_valid_object_name};
use lamina_core::io::{Completion, ErrorType, ObjectOp, ObjectStorage, Publish};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The number of the next temporary file, shared by every [`FileObjects`] of the process, so
/// that two of them over the same directory (two threads racing to publish) never pick the same
/// temporary name.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Threads deleting objects at once in [`FileObjects::delete_many`].
const DELETERS: usize = 8;

/// What [`FileObjects::read_whole`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WholeObject {
    /// The object's bytes, all of them.
    Bytes(Vec<u8>),
    /// The object is longer than the limit asked for; none of it was read.
    TooLong {
        /// Its length in bytes.
        len: u64,
    },
}

/// Named objects in one directory (checkpoint manifests and snapshot parts). A publish writes a
/// temporary file, syncs it, moves it into place (`rename` to replace, `link` to create only)
/// and syncs the directory: readers see the old object or the new one whole, and a completed
/// publish is durable. Blocking: each operation is done inside `submit`.
///
/// Temporary files are named `.tmp-{pid}-{n}`; a crash may leave one behind, which is never
/// listed or read as an object.
#[derive(Debug)]
pub struct FileObjects {
    dir: PathBuf,
    /// Completions not yet polled, in submission order.
    done: VecDeque<Completion<FileError>>,
    /// The direct I/O alignment of this directory's files, learnt at the first stage (`None`:
    /// not offered).
    direct: OnceLock<Option<Alignment>>,
    /// A direct write was refused here: stage through the page cache from now on.
    direct_refused: AtomicBool,
}

impl FileObjects {
    /// Opens the object directory `dir`, creating it if missing.
    ///
    /// # Errors
    /// An I/O error naming the path when it cannot be created or is not a directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, FileError> {
        let dir = dir.as_ref().to_path_buf();
        ensure_dir(&dir)?;
        Ok(FileObjects {
            dir,
            done: VecDeque::new(),
            direct: OnceLock::new(),
            direct_refused: AtomicBool::new(false),
        })
    }

    /// The same objects, staged ([`Self::stage`]) with direct I/O only if `allowed` (the
    /// default: allowed where the file system offers it). Without it, staged bytes go through
    /// the page cache and stay there for a reader soon after.
    #[must_use]
    pub fn with_direct_io(self, allowed: bool) -> Self {
        self.direct_refused.store(!allowed, Ordering::Relaxed);
        self
    }

    /// The object directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of object `name`.
    ///
    /// # Errors
    /// [`FileError::InvalidName`] when `name` cannot be an object's file name.
    pub fn object_path(&self, name: &str) -> Result<PathBuf, FileError> {
        if is_valid_object_name(name) {
            Ok(self.dir.join(name))
        } else {
            Err(FileError::InvalidName {
                dir: self.dir.clone(),
                name: name.to_owned(),
            })
        }
    }

    /// Reads the whole of object `name` if it is at most `limit` bytes long. The length is
    /// checked before anything is read or allocated, so a huge file costs nothing; a file that is
    /// not a regular one (a FIFO, a directory, a symlink, which is not followed) is refused
    /// without blocking.
    ///
    /// # Errors
    /// [`FileError::InvalidName`], [`FileError::NotRegularFile`], or an I/O error naming the
    /// path (`NotFound` for a missing object).
    pub fn read_whole(&self, name: &str, limit: u64) -> Result<WholeObject, FileError> {
        let path = self.object_path(name)?;
        let file = match open_nonblocking(&path) {
            Ok(file) => file,
            // A symlink under the object's name: not an object, and not followed.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(FileError::NotRegularFile { path });
            }
            Err(e) => return Err(FileError::io(Op::Open, &path, None, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| FileError::io(Op::Open, &path, None, e))?;
        if !meta.is_file() {
            return Err(FileError::NotRegularFile { path });
        }
        let len = meta.len();
        let want = match usize::try_from(len) {
            Ok(want) if len <= limit => want,
            _ => return Ok(WholeObject::TooLong { len }),
        };
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(want)
            .map_err(|_| FileError::io(Op::Read, &path, None, ErrorKind::OutOfMemory.into()))?;
        bytes.resize(want, 0);
        let n = read_full_at(&file, 0, &mut bytes)
            .map_err(|e| FileError::io(Op::Read, &path, None, e))?;
        // A file cut short since the length was taken yields what it still holds.
        bytes.truncate(n);
        Ok(WholeObject::Bytes(bytes))
    }

    fn sync_dir(&self) -> Result<(), FileError> {
        fsync_directory(&self.dir).map_err(|e| FileError::io(Op::SyncDir, &self.dir, None, e))
    }

    /// Stages `data` as object `name`: written to a temporary file, not yet synced, invisible
    /// (a temporary file is never listed or read) until [`Self::commit_staged`] syncs it and
    /// moves it into place. Staging many objects (from several threads: this takes `&self`) and
    /// committing them together lets their syncs run at once and costs one directory sync.
    ///
    /// The bytes are written with direct I/O where the file system offers it (no copy into the
    /// page cache: staged objects are read back only by recovery), else through the page cache
    /// with the write-back started at once.
    ///
    /// # Errors
    /// [`FileError::InvalidName`], or the write error naming the temporary file (which is
    /// removed).
    pub fn stage(&self, name: &str, data: &[u8]) -> Result<StagedObject, FileError> {
        let path = self.object_path(name)?;
        let (temp, file) = self.create_temp()?;
        let mut staged = StagedObject {
            temp,
            path,
            file: None,
            placed: false,
        };
        // On error `staged` is dropped, which removes the temporary file.
        let written = self.write_direct(&file, data).and_then(|direct| {
            if direct {
                Ok(())
            } else {
                write_buffered(&file, data)
            }
        });
        if let Err(e) = written {
            return Err(FileError::io(Op::Write, &staged.temp, None, e));
        }
        staged.file = Some(file);
        Ok(staged)
    }

    /// Writes `data` into the new, empty `file` with direct I/O if this directory allows it;
    /// `Ok(false)` (nothing written) if not.
    fn write_direct(&self, file: &File, data: &[u8]) -> std::io::Result<bool> {
        if data.is_empty() || self.direct_refused.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let Some(align) = *self.direct.get_or_init(|| direct::alignment(file)) else {
            return Ok(false);
        };
        let direct = direct::write_new(file, data, align)?;
        if !direct {
            self.direct_refused.store(true, Ordering::Relaxed);
        }
        Ok(direct)
    }

    /// Syncs every staged file not yet synced ([`StagedObject::sync`]) (on up to 16 threads at
    /// once, so the file system can merge their flushes), moves each into place (replacing any object of its name whole), then
    /// syncs the directory once: on `Ok` every one is visible and durable.
    ///
    /// # Errors
    /// The first sync or rename or the directory sync that failed, naming the path; nothing is
    /// moved into place when a sync failed, and the staged files not moved are removed.
    pub fn commit_staged(&self, mut staged: Vec<StagedObject>) -> Result<(), FileError> {
        let next = AtomicUsize::new(0);
        let files: Vec<(&Path, File)> = staged
            .iter_mut()
            .filter_map(|s| s.file.take().map(|f| (s.temp.as_path(), f)))
            .collect();
        let threads = files.len().min(16);
        let synced: Result<(), FileError> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        while let Some((temp, file)) =
                            files.get(next.fetch_add(1, Ordering::Relaxed))
                        {
                            file.sync_all()
                                .map_err(|e| FileError::io(Op::Sync, temp, None, e))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(FileError::io(
                        Op::Sync,
                        &self.dir,
                        None,
                        std::io::Error::other("a sync thread panicked"),
                    ))
                })
            })
        });
        drop(files);
        let mut failed = synced.err();
        // Those not moved into place remove their temporary files when dropped.
        for mut s in staged {
            if failed.is_some() {
                continue;
            }
            match fs::rename(&s.temp, &s.path) {
                Ok(()) => s.placed = true,
                Err(e) => failed = Some(FileError::io(Op::Rename, &s.path, None, e)),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => self.sync_dir(),
        }
    }

    /// Deletes each object of `names` (a missing one is not an error), on up to
    /// [`DELETERS`] threads, then syncs the directory once.
    ///
    /// Deletes run in parallel because an unlink may wait on the device: a file system mounted
    /// with `discard` (ext4 without a journal) trims a file's blocks inside the unlink.
    ///
    /// # Errors
    /// [`FileError::InvalidName`] (nothing deleted), or a delete or the sync that failed; other
    /// names may have been deleted.
    pub fn delete_many(&self, names: &[&str]) -> Result<(), FileError> {
        let paths = names
            .iter()
            .map(|name| self.object_path(name))
            .collect::<Result<Vec<_>, _>>()?;
        let next = AtomicUsize::new(0);
        let delete = || -> Result<(), FileError> {
            while let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) {
                if let Err(e) = fs::remove_file(path)
                    && e.kind() != ErrorKind::NotFound
                {
                    return Err(FileError::io(Op::Delete, path, None, e));
                }
            }
            Ok(())
        };
        let threads = paths.len().clamp(1, DELETERS);
        std::thread::scope(|scope| {
            // A helper that cannot start leaves its share to the others and this thread.
            let helpers: Vec<_> = (1..threads)
                .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, delete).ok())
                .collect();
            let mine = delete();
            helpers
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(FileError::io(
                            Op::Delete,
                            &self.dir,
                            None,
                            std::io::Error::other("a delete thread panicked"),
                        ))
                    })
                })
                .fold(mine, Result::and)
        })?;
        self.sync_dir()
    }

    /// Writes `data` to a new temporary file and syncs it; returns its path.
    fn write_temp_synced(&self, data: &[u8]) -> Result<PathBuf, FileError> {
        let (temp, mut file) = self.create_temp()?;
        let written = file
            .write_all(data)
            .map_err(|e| (Op::Write, e))
            .and_then(|()| file.sync_all().map_err(|e| (Op::Sync, e)));
        match written {
            Ok(()) => Ok(temp),
            Err((op, e)) => {
                let _ = fs::remove_file(&temp);
                Err(FileError::io(op, &temp, None, e))
            }
        }
    }

    /// Creates a new temporary file; returns its path and the open file.
    fn create_temp(&self) -> Result<(PathBuf, File), FileError> {
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => Ok((temp, file)),
            Err(e) => Err(FileError::io(Op::Create, &temp, None, e)),
        }
    }

    fn publish(&mut self, path: &Path, data: &[u8], mode: Publish) -> Result<(), FileError> {
        let temp = self.write_temp_synced(data)?;
        place(&temp, path, mode)?;
        self.sync_dir()
    }

    /// Publishes one staged object on its own, as [`ObjectOp::Publish`] does with `mode`: synced
    /// if it is not yet, moved into place (with [`Publish::IfAbsent`], only if no object has its
    /// name: the first writer wins), the directory synced. A writer stages an object early (a
    /// manifest while the parts it names are written) and publishes it once it may.
    ///
    /// # Errors
    /// [`lamina_core::io::Failure::AlreadyExists`] for an [`Publish::IfAbsent`] object whose name
    /// is taken; the sync, rename, link or directory sync that failed, naming the path. The
    /// temporary file is removed unless the object was placed.
    pub fn publish_staged(&self, staged: StagedObject, mode: Publish) -> Result<(), FileError> {
        let mut staged = staged.sync()?;
        place(&staged.temp, &staged.path, mode)?;
        staged.placed = true;
        self.sync_dir()
    }

    fn delete(&self, path: &Path) -> Result<(), FileError> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(FileError::io(Op::Delete, path, None, e))
            }
            _ => self.sync_dir(),
        }
    }
}

/// Moves the synced temporary file `temp` to `path`: replacing what is there, or, with
/// [`Publish::IfAbsent`], linked only if the name is free, then unlinked. On error the temporary
/// file is removed.
fn place(temp: &Path, path: &Path, mode: Publish) -> Result<(), FileError> {
    let placed = match mode {
        Publish::Replace => fs::rename(temp, path).map_err(|e| (Op::Rename, e)),
        Publish::IfAbsent => {
            // `link` fails with EEXIST if the name is taken: the create-only fence.
            let linked = fs::hard_link(temp, path).map_err(|e| (Op::Link, e));
            let removed = fs::remove_file(temp);
            linked.and_then(|()| removed.map_err(|e| (Op::Delete, e)))
        }
    };
    if let Err((op, e)) = placed {
        let _ = fs::remove_file(temp);
        return Err(FileError::io(op, path, None, e));
    }
    Ok(())
}

/// An object written by [`FileObjects::stage`], waiting for [`FileObjects::commit_staged`] (or
/// [`FileObjects::publish_staged`]).
/// Dropping it without committing removes its temporary file.
#[derive(Debug)]
pub struct StagedObject {
    temp: PathBuf,
    path: PathBuf,
    /// The temporary file, open until it is synced.
    file: Option<File>,
    /// Moved into place: the temporary name is gone, nothing to remove.
    placed: bool,
}

impl StagedObject {
    /// Syncs the staged file now, so that [`FileObjects::commit_staged`] has only to move it
    /// into place: a writer that syncs each object as soon as it is written overlaps the
    /// device's work with the writing of the next.
    ///
    /// # Errors
    /// The sync error naming the temporary file, which is removed.
    pub fn sync(mut self) -> Result<StagedObject, FileError> {
        if let Some(file) = self.file.take()
            && let Err(e) = file.sync_all()
        {
            // `self` is dropped on return, which removes the temporary file.
            return Err(FileError::io(Op::Sync, &self.temp, None, e));
        }
        Ok(self)
    }

    /// Gives the staged object up: its temporary file is removed (as when it is dropped).
    pub fn discard(self) {}
}

impl Drop for StagedObject {
    /// A staged object never moved into place leaves nothing behind.
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.placed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `data` into the new, empty `file` through the page cache and starts its write-back,
/// so the device works while the next object is written and the sync later mostly waits. The
/// kernel keeps the pages being written back and drops only those already clean (a refusal
/// costs nothing but the head start).
fn write_buffered(mut file: &File, data: &[u8]) -> std::io::Result<()> {
    file.write_all(data)?;
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
    Ok(())
}

impl ErrorType for FileObjects {
    type Error = FileError;
}

impl ObjectStorage for FileObjects {
    /// Does the operation at once; its result is reported by the next poll. Fails to start
    /// only for a name that cannot be a file name ([`FileError::InvalidName`]).
    fn submit(&mut self, token: u64, op: ObjectOp<'_>) -> Result<(), FileError> {
        let result = match op {
            ObjectOp::Publish { name, data, mode } => {
                let path = self.object_path(name)?;
                self.publish(&path, data, mode)
            }
            ObjectOp::Delete { name } => {
                let path = self.object_path(name)?;
                self.delete(&path)
            }
        };
        self.done.push_back((token, result));
        Ok(())
    }

    fn poll_completion(&mut self) -> Option<Completion<FileError>> {
        self.done.pop_front()
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, FileError> {
        let path = self.object_path(name)?;
        let file =
            open_regular_for_reading(&path).map_err(|e| FileError::io(Op::Open, &path, None, e))?;
        read_full_at(&file, offset, buf).map_err(|e| FileError::io(Op::Read, &path, None, e))
    }

    fn list(&mut self, prefix: &str, each: &mut dyn FnMut(&str)) -> Result<(), FileError> {
        let io = |e| FileError::io(Op::List, &self.dir, None, e);
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if let Ok(name) = entry.file_name().into_string()
                && name.starts_with(prefix)
                && is_valid_object_name(&name)
            {
                names.push(name);
            }
        }
        names.sort_unstable();
        for name in &names {
            each(name);
        }
        Ok(())
    }
}
