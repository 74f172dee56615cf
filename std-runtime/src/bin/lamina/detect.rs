//! What a path given on the command line is: a log directory, a per-core log set, or one segment
//! file. Anything else is named for what it is, with the error every command gives for it.

use crate::errors::{CliError, io_text};
use crate::segfile;
use lamina::file_backend::names::parse_segment_file_name;
use lamina::{PERCORE_FILE, PerCoreDescription};
use lamina_core::segment::MAGIC;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What a path holds.
#[derive(Debug)]
pub(crate) enum Target {
    /// A directory of segment files (`{sequence:016x}.seg`).
    Log(PathBuf),
    /// A per-core set: `PERCORE` and one log directory per core.
    Set {
        /// The set's directory.
        dir: PathBuf,
        /// What its description says.
        description: PerCoreDescription,
    },
    /// One segment file.
    Segment(PathBuf),
    /// A checkpoint store: `manifests/` and `parts/`.
    Checkpoints(PathBuf),
    /// A state store's directory: a per-core set in `wal/` and a checkpoint store in
    /// `checkpoints/`.
    Store(PathBuf),
}

/// Says what `path` is.
///
/// # Errors
/// A missing or unreadable path, or one that is none of the above: a one-line error naming it.
pub(crate) fn detect(path: &Path) -> Result<Target, CliError> {
    let meta = fs::metadata(path).map_err(|e| CliError::io(path, &e))?;
    if meta.is_dir() {
        directory(path)
    } else if meta.is_file() {
        file(path)
    } else {
        Err(CliError::not_a_log(
            path,
            format!("it is {}", segfile::kind_of(&meta)),
        ))
    }
}

fn file(path: &Path) -> Result<Target, CliError> {
    let file = segfile::open(path)?;
    let mut magic = [0u8; 8];
    let mut n = 0;
    while n < magic.len() {
        let rest = magic.get_mut(n..).unwrap_or_default();
        match file.read_at(rest, n as u64) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) => return Err(CliError::io(path, &e)),
        }
    }
    if n == magic.len() && magic == MAGIC {
        return Ok(Target::Segment(path.to_path_buf()));
    }
    let why = if path.file_name().is_some_and(|n| n == PERCORE_FILE) {
        "it is a per-core set's description: give the directory that holds it".to_string()
    } else if n == 0 {
        "it is an empty file".to_string()
    } else {
        "it is a file that does not start with the lamina segment magic".to_string()
    };
    Err(CliError::not_a_log(path, why))
}

fn directory(dir: &Path) -> Result<Target, CliError> {
    let entries = fs::read_dir(dir).map_err(|e| CliError::io(dir, &e))?;
    let (mut segments, mut others, mut percore) = (0usize, 0usize, false);
    let mut core_dirs = Vec::new();
    let (mut manifests, mut parts) = (false, false);
    for entry in entries {
        let entry = entry.map_err(|e| CliError::unreadable(dir, io_text(&e)))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if parse_segment_file_name(&name).is_some() {
            segments += 1;
        } else if name == PERCORE_FILE {
            percore = true;
        } else if is_dir && is_core_dir_name(&name) {
            core_dirs.push(name.into_owned());
        } else {
            manifests |= is_dir && name == "manifests";
            parts |= is_dir && name == "parts";
            others += 1;
        }
    }
    if percore {
        return match PerCoreDescription::read(dir) {
            Ok(Some(description)) => Ok(Target::Set {
                dir: dir.to_path_buf(),
                description,
            }),
            Ok(None) => Err(CliError::unreadable(
                dir,
                format!("its {PERCORE_FILE} vanished while it was read"),
            )),
            Err(e) => Err(CliError::new(
                crate::errors::Exit::Unreadable,
                e.to_string(),
            )),
        };
    }
    if segments > 0 {
        return Ok(Target::Log(dir.to_path_buf()));
    }
    if !core_dirs.is_empty() {
        core_dirs.sort();
        return Err(CliError::unreadable(
            dir,
            format!(
                "it holds per-core log directories ({}) but no {PERCORE_FILE}: the set's \
                 description is missing",
                core_dirs.join(", ")
            ),
        ));
    }
    if manifests && parts {
        return Ok(Target::Checkpoints(dir.to_path_buf()));
    }
    if dir.join("wal").join(PERCORE_FILE).is_file() && dir.join("checkpoints").is_dir() {
        return Ok(Target::Store(dir.to_path_buf()));
    }
    Err(CliError::not_a_log(
        dir,
        if others == 0 {
            "the directory is empty".to_string()
        } else {
            format!("the directory holds no segment files ({others} other entries)")
        },
    ))
}

/// Whether `name` is a core directory's name in a per-core set (`core-` and digits).
fn is_core_dir_name(name: &str) -> bool {
    name.strip_prefix("core-")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}
