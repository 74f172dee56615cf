//! A per-core set in a directory on the file backend, `PerCoreWalManager::open(dir, cores,
//! options)`, or on the backend an option names, `PerCoreWalManager::open_dir`.

use super::describe;
use super::manager::{PerCoreWalManager, Unscanned};
use super::recovery::PerCoreRecovery;
use crate::{Backend, DirStorage, Error, Options, SegmentStorage, Selected};
use lamina_file::FileStorage;
use std::path::{Path, PathBuf};

/// The directory of core `core`'s log.
pub(crate) fn core_dir(dir: &Path, core: usize) -> PathBuf {
    dir.join(format!("core-{core:03}"))
}

/// The core index a directory entry named `name` would hold, if it is named like a core's.
fn core_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("core-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The error for a core directory the description lists but that is missing.
fn missing(dir: &Path, core: usize, name: &str) -> Error {
    Error::CoreSet {
        dir: name.to_owned(),
        detail: format!(
            "the description lists core {core}, but {} is missing",
            core_dir(dir, core).display()
        ),
    }
}

impl PerCoreWalManager<FileStorage> {
    /// Opens the per-core set in directory `dir` (created if missing) with `cores` cores: core
    /// `i`'s log lives in `dir/core-{i:03}/` (each with its own lock), and `dir/PERCORE`
    /// describes the set (its core count, published atomically when the set is created). Each
    /// log is recovered as in [`crate::WriteAheadLog::open`].
    ///
    /// Core 0's directory lock is taken before the description is read, so two openers of one
    /// set cannot both create it.
    ///
    /// # Errors
    /// [`Error::CoreCountMismatch`] when the set was created with another count;
    /// [`Error::CoreSet`] when `cores` is 0 or above [`crate::MAX_CORES`], the description is damaged, a core directory it
    /// lists is missing, or the directory holds core directories beyond `cores` but no
    /// description; [`Error::Storage`] when a directory cannot be opened or is locked; then what
    /// [`PerCoreWalManager::open_with`] returns.
    pub fn open(
        dir: impl AsRef<Path>,
        cores: usize,
        options: Options,
    ) -> Result<(Self, PerCoreRecovery), Error> {
        let (storages, name, set_id) = open_files(dir.as_ref(), cores, &options)?;
        PerCoreWalManager::open_in(storages, options, &name, Some(set_id))
    }

    /// [`Self::open`] up to the scan of each log (see [`PerCoreWalManager::open_unscanned`]).
    pub(crate) fn open_files_unscanned(
        dir: impl AsRef<Path>,
        cores: usize,
        options: Options,
    ) -> Result<Unscanned<FileStorage>, Error> {
        let (storages, name, set_id) = open_files(dir.as_ref(), cores, &options)?;
        PerCoreWalManager::open_unscanned(storages, options, &name, Some(set_id))
    }
}

/// The storages of the set in `dir` on the file backend (see [`open_set`]).
fn open_files(
    dir: &Path,
    cores: usize,
    options: &Options,
) -> Result<(Vec<FileStorage>, String, u64), Error> {
    let file_options = crate::file::file_options(options);
    open_set(dir, cores, |core, path| {
        FileStorage::open(path, file_options).map_err(|e| Error::Storage {
            op: format!("opening the log directory of core {core}"),
            detail: e.to_string(),
        })
    })
}

impl PerCoreWalManager<DirStorage> {
    /// [`PerCoreWalManager::open`] on `backend`: every core's log runs on it (see
    /// [`crate::WriteAheadLog::open_dir`]). Also returns what the opens chose: io_uring, or the
    /// file backend, with the reason when a core fell back to it.
    ///
    /// # Errors
    /// What [`PerCoreWalManager::open`] returns, and what [`DirStorage::open`] returns for a
    /// core's directory.
    pub fn open_dir(
        dir: impl AsRef<Path>,
        cores: usize,
        options: Options,
        backend: Backend,
    ) -> Result<(Self, PerCoreRecovery, Selected), Error> {
        let mut selected: Option<Selected> = None;
        let file_options = crate::file::file_options(&options);
        let prepared = open_set(dir.as_ref(), cores, |core, path| {
            let storage =
                DirStorage::open_on(&path, backend, file_options).map_err(|e| match e {
                    Error::Storage { op, detail } => Error::Storage {
                        op: format!("{op} of core {core}"),
                        detail,
                    },
                    other => other,
                })?;
            // The first fall-back is the one to report; else what core 0 runs on.
            let this = storage.selected();
            if selected
                .as_ref()
                .is_none_or(|s| s.fallback.is_none() && this.fallback.is_some())
            {
                selected = Some(this);
            }
            Ok(storage)
        })?;
        let (storages, name, set_id) = prepared;
        let (set, recovery) = PerCoreWalManager::open_in(storages, options, &name, Some(set_id))?;
        let selected = selected.ok_or_else(|| Error::CoreSet {
            dir: dir.as_ref().display().to_string(),
            detail: "no core was opened".into(),
        })?;
        Ok((set, recovery, selected))
    }
}

/// Opens the per-core set in `dir` up to its logs, each core's directory with `open_core` (see
/// [`PerCoreWalManager::open`]): the storages in core order, the set's name for errors and its
/// set id.
fn open_set<S: SegmentStorage + Send>(
    dir: &Path,
    cores: usize,
    mut open_core: impl FnMut(usize, PathBuf) -> Result<S, Error>,
) -> Result<(Vec<S>, String, u64), Error> {
    let name = dir.display().to_string();
    let set_error = |detail: String| Error::CoreSet {
        dir: name.clone(),
        detail,
    };
    if cores == 0 {
        return Err(set_error("a per-core set needs at least one core".into()));
    }
    if cores > super::MAX_CORES {
        return Err(set_error(format!(
            "{cores} cores are more than the {} a set may have",
            super::MAX_CORES
        )));
    }
    let count = u32::try_from(cores)
        .map_err(|_| set_error(format!("{cores} cores cannot be named in a header")))?;
    let mut open_core = |core: usize| open_core(core, core_dir(dir, core));
    let first_existed = core_dir(dir, 0).is_dir();
    if !first_existed && dir.join(describe::NAME).exists() {
        // Taking core 0's lock would create its directory and hide that it is gone.
        return Err(missing(dir, 0, &name));
    }
    // Core 0's lock guards the description too.
    let first = open_core(0)?;
    let stored = describe::read(dir)?;
    match stored {
        Some(stored) if stored.cores != count => {
            return Err(Error::CoreCountMismatch {
                dir: name,
                stored: usize::try_from(stored.cores).unwrap_or(usize::MAX),
                requested: cores,
            });
        }
        Some(_) => {
            for core in 0..cores {
                let exists = if core == 0 {
                    first_existed
                } else {
                    core_dir(dir, core).is_dir()
                };
                if !exists {
                    return Err(missing(dir, core, &name));
                }
            }
        }
        None => {
            // A set whose creation was cut short has core directories but no description
            // yet; a set of more cores than asked for would lose its other cores' logs.
            let entries = std::fs::read_dir(dir).map_err(|e| Error::Storage {
                op: format!("listing {}", dir.display()),
                detail: e.to_string(),
            })?;
            for entry in entries.flatten() {
                let Some(core) = entry.file_name().to_str().and_then(core_index) else {
                    continue;
                };
                if core >= cores {
                    return Err(set_error(format!(
                        "it has no description but holds the directory of core {core}; \
                             {cores} cores were asked for"
                    )));
                }
                if holds_a_log(&entry.path()) {
                    return Err(set_error(format!(
                        "it has no description but core {core}'s directory holds a log: the \
                         description was lost (a set's logs are created only after it)"
                    )));
                }
            }
        }
    }
    let mut storages = Vec::with_capacity(cores);
    storages.push(first);
    for core in 1..cores {
        storages.push(open_core(core)?);
    }
    let description = match stored {
        Some(stored) => stored,
        None => {
            // Every core directory exists and is durable (the backend syncs its parent when
            // it creates one): only now does the description say the set exists. No core has
            // a log yet: logs are created below, with the set's log ids.
            let description = describe::Description {
                cores: count,
                set_id: crate::seed::random_u64(),
            };
            describe::write(dir, description)?;
            description
        }
    };
    Ok((storages, name, description.set_id))
}

/// Whether directory `dir` holds a segment file.
fn holds_a_log(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .and_then(lamina_file::names::parse_segment_file_name)
                .is_some()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::core_index;

    #[test]
    fn core_names_parse_and_others_do_not() {
        assert_eq!(core_index("core-000"), Some(0));
        assert_eq!(core_index("core-1234"), Some(1234));
        assert_eq!(core_index("core-"), None);
        assert_eq!(core_index("core-+1"), None);
        assert_eq!(core_index("PERCORE"), None);
    }
}
