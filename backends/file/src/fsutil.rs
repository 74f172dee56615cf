//! The file-system helpers every module shares: directory fsync, directory creation, full
//! positioned reads, zero-filling, renames that never replace.

use crate::error::{FileError, Op};
use rustix::fs::{CWD, RenameFlags, renameat_with};
use rustix::io::{Errno, pwritev};
use std::fs::{self, File};
use std::io::IoSlice;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The largest piece of zeros written at once when a file is zero-filled.
const ZERO_CHUNK: usize = 1 << 20;

/// The page size writes are padded to.
pub(crate) const PAGE: u64 = 4096;

/// A page of zeros to pad writes with.
static ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];

/// Makes the entries of directory `dir` durable (creates, renames and deletes in it).
///
/// # Errors
/// When the directory cannot be opened or fsynced.
pub(crate) fn fsync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates directory `dir` if missing, with every missing ancestor, and makes each new entry
/// durable; fails clearly if `dir` is something else.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), FileError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(FileError::io(
            Op::Open,
            dir,
            None,
            io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error()),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // The ancestors that do not exist yet, deepest first.
            let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
            fs::create_dir_all(dir).map_err(|e| FileError::io(Op::CreateDir, dir, None, e))?;
            for created in missing {
                // A relative path's first component lives in the current directory.
                let parent = created
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                fsync_directory(parent).map_err(|e| FileError::io(Op::SyncDir, parent, None, e))?;
            }
            Ok(())
        }
        Err(e) => Err(FileError::io(Op::Open, dir, None, e)),
    }
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns the bytes read.
pub(crate) fn read_full_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match file.read_at(rest, offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes zeros into `file` from offset `from` up to `to`, in pieces of at most 1 MiB taken from
/// `zeros` (grown as needed); not synced. Stops early, returning `false`, once `stop` is set.
pub(crate) fn write_zeros(
    file: &File,
    from: u64,
    to: u64,
    zeros: &mut Vec<u8>,
    stop: Option<&AtomicBool>,
) -> io::Result<bool> {
    let mut at = from;
    while at < to {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Ok(false);
        }
        let n = (to - at).min(ZERO_CHUNK as u64) as usize;
        if zeros.len() < n {
            zeros.resize(n, 0);
        }
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(true)
}

/// Renames `from` to `to`, failing with `EEXIST` when `to` exists instead of replacing it.
/// (`renameat2(RENAME_NOREPLACE)`; on a file system without it, a check then a plain rename,
/// which is exact for a directory only its lock holder changes.)
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL | Errno::NOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from_raw_os_error(Errno::EXIST.raw_os_error()));
            }
            fs::rename(from, to)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `data` at `offset` followed by `pad` zeros (at most a page; fewer if more are asked),
/// as one positioned write, so that a page it ends in is written whole; finishes short writes
/// and retries on EINTR.
pub(crate) fn write_all_at_padded(
    file: &File,
    offset: u64,
    data: &[u8],
    pad: usize,
) -> io::Result<()> {
    let zeros = ZERO_PAGE.get(..pad).unwrap_or(&ZERO_PAGE);
    let total = data.len() + zeros.len();
    let mut done = 0;
    while done < total {
        let rest = [
            IoSlice::new(data.get(done..).unwrap_or(&[])),
            IoSlice::new(zeros.get(done.saturating_sub(data.len())..).unwrap_or(&[])),
        ];
        match pwritev(file, &rest, offset + done as u64) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Opens `path` for reading without blocking, and only if it is a regular file: opening a FIFO
/// for reading would wait for a writer forever.
pub(crate) fn open_regular_for_reading(path: &Path) -> io::Result<File> {
    let file = open_nonblocking(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Opens `path` for reading without blocking (`O_NONBLOCK`), whatever kind of file it is: the
/// caller checks the kind before it reads. A symlink as the last component is not followed
/// (`O_NOFOLLOW`, failing with `ELOOP`): an object is a regular file its store wrote, and a link
/// planted under an object's name must not make a read reach a file outside the directory.
pub(crate) fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW;
    let flags = i32::try_from(flags.bits()).unwrap_or(0);
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}
