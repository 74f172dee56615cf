//! The file-system helpers every module shares: directory fsync, directory creation, full
//! positioned reads.

use crate::error::{FileError, Op};
use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;

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
