//! A simulated directory tree implementing the core's [`ObjectStorage`] the way lamina-file's
//! `FileObjects` does it on a POSIX file system, one step at a time, to crash between any two.
//!
//! [`SimFs`] is the file system: directories of names pointing at inodes, each inode's bytes,
//! and a log of every [`Step`] taken. [`SimObjects`] is one directory of it seen as an
//! [`ObjectStorage`]: a publish is the steps `Create` a temporary file, `Write` its bytes,
//! `SyncFile`, then `Rename` it over the name (replace) or `Link` it to the name and `Unlink`
//! the temporary (create-only), then `SyncDir`; a delete is `Unlink`, `SyncDir`. A failing step
//! is cleaned up after as `FileObjects` does (the temporary unlinked, unsynced).
//!
//! Durability follows POSIX: a `Write` is durable once a `SyncFile` of its inode follows it; a
//! name change (`Create`, `Rename`, `Link`, `Unlink`) once a `SyncDir` of its directory does.
//! Until then it is *unsynced*, and [`SimFs::crash_view`] builds the file system a restarted
//! process sees when any subset of the unsynced steps is lost ([`Fate`]): a lost name change
//! did not happen, a lost write left the file empty, a torn one left a prefix of its bytes and
//! zeros after (the length reached the disk, the data did not). [`SimFs::halt_after`] stops the
//! process after a chosen step (every later step fails with EIO and changes nothing), and
//! [`SimFs::fail_step`] fails one chosen step with EIO or ENOSPC.

use crate::sim::Rng;
use lamina_core::io::{Completion, ErrorType, Failure, ObjectOp, ObjectStorage, Publish};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The prefix of temporary files, as `FileObjects` names them: never listed or read.
pub const TEMP_PREFIX: &str = ".tmp-";

/// One file-system step, as the log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new empty file `name` in `dir` (inode `inode`).
    Create {
        /// The directory.
        dir: String,
        /// The file's name.
        name: String,
        /// Its inode.
        inode: u64,
    },
    /// `data` written to the (empty) file of `inode`.
    Write {
        /// The inode.
        inode: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `fsync` of the file of `inode`: its writes are durable.
    SyncFile {
        /// The inode.
        inode: u64,
    },
    /// `rename(from, to)` in `dir`, replacing `to`.
    Rename {
        /// The directory.
        dir: String,
        /// The old name.
        from: String,
        /// The new name.
        to: String,
        /// The inode moved.
        inode: u64,
    },
    /// `link(from, to)` in `dir` (`to` did not exist).
    Link {
        /// The directory.
        dir: String,
        /// The existing name.
        from: String,
        /// The new name.
        to: String,
        /// The inode linked.
        inode: u64,
    },
    /// `unlink(name)` in `dir`.
    Unlink {
        /// The directory.
        dir: String,
        /// The name removed.
        name: String,
    },
    /// `fsync` of `dir`: its name changes are durable.
    SyncDir {
        /// The directory.
        dir: String,
    },
}

impl Step {
    /// Whether this is a sync (a step a crash cannot undo).
    #[must_use]
    pub fn is_sync(&self) -> bool {
        matches!(self, Step::SyncFile { .. } | Step::SyncDir { .. })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Create { dir, name, inode } => write!(f, "create {dir}/{name} (inode {inode})"),
            Step::Write { inode, data } => write!(f, "write {} bytes to inode {inode}", data.len()),
            Step::SyncFile { inode } => write!(f, "fsync inode {inode}"),
            Step::Rename { dir, from, to, .. } => write!(f, "rename {dir}/{from} to {to}"),
            Step::Link { dir, from, to, .. } => write!(f, "link {dir}/{from} to {to}"),
            Step::Unlink { dir, name } => write!(f, "unlink {dir}/{name}"),
            Step::SyncDir { dir } => write!(f, "fsync {dir}/"),
        }
    }
}

/// What a crash does to one unsynced step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It reached the disk.
    Kept,
    /// It did not.
    Lost,
    /// A write whose first `n` bytes reached the disk, the rest reading as zeros (for a name
    /// change: the same as [`Fate::Kept`]).
    Torn(usize),
}

#[derive(Clone, Debug, Default)]
struct Dir {
    live: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
struct Fs {
    dirs: BTreeMap<String, Dir>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    next_temp: u64,
    log: Vec<Step>,
    /// Indices into `log` of the steps no sync has made durable yet, in order.
    unsynced: Vec<usize>,
    /// Steps after this many (counted over the log) fail with EIO and change nothing.
    halt_after: Option<usize>,
    /// The step with this index (the log's length when it is taken) fails with this failure.
    fail: Option<(usize, Failure)>,
    /// Steps failed by `fail` or a halt.
    failed: usize,
}

impl Fs {
    fn dir(&mut self, dir: &str) -> &mut Dir {
        self.dirs.entry(dir.to_owned()).or_default()
    }

    /// Takes `step`, or fails it (a halt or the chosen fault) without changing anything.
    fn take(&mut self, step: Step) -> Result<(), Failure> {
        let index = self.log.len();
        if self.halt_after.is_some_and(|n| index >= n) {
            self.failed += 1;
            return Err(Failure::Io);
        }
        if let Some((at, failure)) = self.fail
            && at == index
        {
            self.fail = None;
            self.failed += 1;
            return Err(failure);
        }
        match &step {
            Step::Create { dir, name, inode } => {
                let d = self.dir(dir);
                if d.live.contains_key(name) {
                    return Err(Failure::AlreadyExists);
                }
                d.live.insert(name.clone(), *inode);
                self.inodes.insert(*inode, Inode::default());
            }
            Step::Write { inode, data } => {
                let file = self.inodes.get_mut(inode).ok_or(Failure::NotFound)?;
                file.live = data.clone();
            }
            Step::SyncFile { inode } => {
                let file = self.inodes.get_mut(inode).ok_or(Failure::NotFound)?;
                file.durable = file.live.clone();
                let log = &self.log;
                self.unsynced.retain(
                    |&i| !matches!(log.get(i), Some(Step::Write { inode: w, .. }) if w == inode),
                );
            }
            Step::Rename {
                dir,
                from,
                to,
                inode,
            } => {
                let d = self.dir(dir);
                if d.live.get(from) != Some(inode) {
                    return Err(Failure::NotFound);
                }
                d.live.remove(from);
                d.live.insert(to.clone(), *inode);
            }
            Step::Link {
                dir,
                from,
                to,
                inode,
            } => {
                let d = self.dir(dir);
                if d.live.get(from) != Some(inode) {
                    return Err(Failure::NotFound);
                }
                if d.live.contains_key(to) {
                    return Err(Failure::AlreadyExists);
                }
                d.live.insert(to.clone(), *inode);
            }
            Step::Unlink { dir, name } => {
                if self.dir(dir).live.remove(name).is_none() {
                    return Err(Failure::NotFound);
                }
            }
            Step::SyncDir { dir } => {
                let d = self.dir(dir);
                d.durable = d.live.clone();
                let log = &self.log;
                self.unsynced
                    .retain(|&i| log.get(i).and_then(step_dir) != Some(dir.as_str()));
            }
        }
        if !step.is_sync() {
            self.unsynced.push(index);
        }
        self.log.push(step);
        Ok(())
    }

    fn publish(
        &mut self,
        dir: &str,
        name: &str,
        data: &[u8],
        mode: Publish,
    ) -> Result<(), Failure> {
        let temp = format!("{TEMP_PREFIX}sim-{}", self.next_temp);
        self.next_temp += 1;
        let inode = self.next_inode;
        self.next_inode += 1;
        self.take(Step::Create {
            dir: dir.to_owned(),
            name: temp.clone(),
            inode,
        })?;
        let written = self
            .take(Step::Write {
                inode,
                data: data.to_vec(),
            })
            .and_then(|()| self.take(Step::SyncFile { inode }));
        let placed = written.and_then(|()| match mode {
            Publish::Replace => self.take(Step::Rename {
                dir: dir.to_owned(),
                from: temp.clone(),
                to: name.to_owned(),
                inode,
            }),
            Publish::IfAbsent => {
                let linked = self.take(Step::Link {
                    dir: dir.to_owned(),
                    from: temp.clone(),
                    to: name.to_owned(),
                    inode,
                });
                let removed = self.take(Step::Unlink {
                    dir: dir.to_owned(),
                    name: temp.clone(),
                });
                linked.and(removed)
            }
        });
        if let Err(failure) = placed {
            // As `FileObjects`: the temporary is removed, best effort, and not synced.
            if self.dir(dir).live.get(&temp) == Some(&inode) {
                let _ = self.take(Step::Unlink {
                    dir: dir.to_owned(),
                    name: temp,
                });
            }
            return Err(failure);
        }
        self.take(Step::SyncDir {
            dir: dir.to_owned(),
        })
    }

    fn delete(&mut self, dir: &str, name: &str) -> Result<(), Failure> {
        match self.take(Step::Unlink {
            dir: dir.to_owned(),
            name: name.to_owned(),
        }) {
            Err(f) if f != Failure::NotFound => Err(f),
            _ => self.take(Step::SyncDir {
                dir: dir.to_owned(),
            }),
        }
    }

    /// The file system after a crash where `fate` says what became of each unsynced step.
    fn crashed(&self, fate: &mut dyn FnMut(usize, &Step) -> Fate) -> Fs {
        let mut dirs: BTreeMap<String, BTreeMap<String, u64>> = self
            .dirs
            .iter()
            .map(|(name, d)| (name.clone(), d.durable.clone()))
            .collect();
        let mut data: BTreeMap<u64, Vec<u8>> = self
            .inodes
            .iter()
            .map(|(&i, f)| (i, f.durable.clone()))
            .collect();
        for &i in &self.unsynced {
            let Some(step) = self.log.get(i) else {
                continue;
            };
            let fate = fate(i, step);
            if fate == Fate::Lost {
                continue;
            }
            match step {
                Step::Create { dir, name, inode } => {
                    dirs.entry(dir.clone())
                        .or_default()
                        .insert(name.clone(), *inode);
                }
                Step::Write { inode, data: bytes } => {
                    let mut image = bytes.clone();
                    if let Fate::Torn(n) = fate {
                        for b in image.iter_mut().skip(n) {
                            *b = 0;
                        }
                    }
                    data.insert(*inode, image);
                }
                Step::Rename {
                    dir,
                    from,
                    to,
                    inode,
                } => {
                    let d = dirs.entry(dir.clone()).or_default();
                    if d.get(from) == Some(inode) {
                        d.remove(from);
                    }
                    d.insert(to.clone(), *inode);
                }
                Step::Link { dir, to, inode, .. } => {
                    dirs.entry(dir.clone())
                        .or_default()
                        .insert(to.clone(), *inode);
                }
                Step::Unlink { dir, name } => {
                    dirs.entry(dir.clone()).or_default().remove(name);
                }
                Step::SyncFile { .. } | Step::SyncDir { .. } => {}
            }
        }
        let mut inodes = BTreeMap::new();
        for d in dirs.values() {
            for inode in d.values() {
                let bytes = data.get(inode).cloned().unwrap_or_default();
                inodes.insert(
                    *inode,
                    Inode {
                        live: bytes.clone(),
                        durable: bytes,
                    },
                );
            }
        }
        Fs {
            dirs: dirs
                .into_iter()
                .map(|(name, d)| {
                    (
                        name,
                        Dir {
                            live: d.clone(),
                            durable: d,
                        },
                    )
                })
                .collect(),
            inodes,
            next_inode: self.next_inode,
            next_temp: self.next_temp,
            ..Fs::default()
        }
    }
}

/// The directory a name change is in.
fn step_dir(step: &Step) -> Option<&str> {
    match step {
        Step::Create { dir, .. }
        | Step::Rename { dir, .. }
        | Step::Link { dir, .. }
        | Step::Unlink { dir, .. } => Some(dir),
        _ => None,
    }
}

/// A simulated file system; clones share it.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    fs: Arc<Mutex<Fs>>,
}

impl SimFs {
    /// An empty file system.
    #[must_use]
    pub fn new() -> Self {
        SimFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, Fs> {
        self.fs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Directory `dir` as an [`ObjectStorage`].
    #[must_use]
    pub fn objects(&self, dir: &str) -> SimObjects {
        self.lock().dir(dir);
        SimObjects {
            fs: self.clone(),
            dir: dir.to_owned(),
            done: VecDeque::new(),
        }
    }

    /// Every step taken so far (since the file system was made or crashed into being).
    #[must_use]
    pub fn steps(&self) -> Vec<Step> {
        self.lock().log.clone()
    }

    /// How many steps were taken so far.
    #[must_use]
    pub fn step_count(&self) -> usize {
        self.lock().log.len()
    }

    /// The steps no sync has made durable yet, with their indices in the log.
    #[must_use]
    pub fn unsynced(&self) -> Vec<(usize, Step)> {
        let fs = self.lock();
        fs.unsynced
            .iter()
            .filter_map(|&i| fs.log.get(i).map(|s| (i, s.clone())))
            .collect()
    }

    /// Stops the process after `steps` steps in all: every later step fails with EIO and
    /// changes nothing (reads still see the live state).
    pub fn halt_after(&self, steps: usize) {
        self.lock().halt_after = Some(steps);
    }

    /// Fails the step with log index `index` (the `index + 1`th step taken) with `failure`,
    /// once.
    pub fn fail_step(&self, index: usize, failure: Failure) {
        self.lock().fail = Some((index, failure));
    }

    /// Clears a step failure set by [`Self::fail_step`] that did not happen yet.
    pub fn clear_fault(&self) {
        self.lock().fail = None;
    }

    /// How many steps failed (by [`Self::fail_step`] or [`Self::halt_after`]).
    #[must_use]
    pub fn failed_steps(&self) -> usize {
        self.lock().failed
    }

    /// The file system a restarted process sees after a crash now, where `fate(index, step)`
    /// says what became of each unsynced step. A new file system: this one is unchanged, so
    /// many crashes can be taken from one point.
    #[must_use]
    pub fn crash_view(&self, fate: &mut dyn FnMut(usize, &Step) -> Fate) -> SimFs {
        let crashed = self.lock().crashed(fate);
        SimFs {
            fs: Arc::new(Mutex::new(crashed)),
        }
    }

    /// [`Self::crash_view`] with each unsynced step's fate drawn from `rng`: kept, lost or (a
    /// write) torn at a random byte.
    #[must_use]
    pub fn crash_random(&self, rng: &mut Rng) -> SimFs {
        self.crash_view(&mut |_, step| match (rng.below(3), step) {
            (0, _) => Fate::Lost,
            (1, Step::Write { data, .. }) => Fate::Torn(rng.below(data.len() as u64) as usize),
            _ => Fate::Kept,
        })
    }

    /// Flips one bit of the file `name` in `dir` at byte `offset` (modulo its length), in what
    /// reads see and what survives a crash: damage the disk did. Returns false when there is no
    /// such file or it is empty.
    pub fn flip_bit(&self, dir: &str, name: &str, offset: usize) -> bool {
        let mut fs = self.lock();
        let Some(&inode) = fs.dirs.get(dir).and_then(|d| d.live.get(name)) else {
            return false;
        };
        let Some(file) = fs.inodes.get_mut(&inode) else {
            return false;
        };
        let len = file.live.len();
        if len == 0 {
            return false;
        }
        let at = offset % len;
        file.live[at] ^= 0x20;
        if let Some(b) = file.durable.get_mut(at) {
            *b ^= 0x20;
        }
        true
    }

    /// The names in `dir` now (temporary files included), sorted.
    #[must_use]
    pub fn names(&self, dir: &str) -> Vec<String> {
        self.lock()
            .dirs
            .get(dir)
            .map(|d| d.live.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// One directory of a [`SimFs`] as an [`ObjectStorage`], doing each operation inside `submit`
/// as `FileObjects` does.
#[derive(Debug)]
pub struct SimObjects {
    fs: SimFs,
    dir: String,
    done: VecDeque<Completion<Failure>>,
}

impl SimObjects {
    /// The file system it is in.
    #[must_use]
    pub fn fs(&self) -> &SimFs {
        &self.fs
    }

    /// Its directory.
    #[must_use]
    pub fn dir(&self) -> &str {
        &self.dir
    }
}

/// Whether `name` can be an object's name (as lamina-file's rule).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && !name.starts_with(TEMP_PREFIX)
}

impl ErrorType for SimObjects {
    type Error = Failure;
}

impl ObjectStorage for SimObjects {
    fn submit(&mut self, token: u64, op: ObjectOp<'_>) -> Result<(), Failure> {
        let mut fs = self.fs.lock();
        let result = match op {
            ObjectOp::Publish { name, data, mode } => {
                if !valid_name(name) {
                    return Err(Failure::Other);
                }
                fs.publish(&self.dir, name, data, mode)
            }
            ObjectOp::Delete { name } => {
                if !valid_name(name) {
                    return Err(Failure::Other);
                }
                fs.delete(&self.dir, name)
            }
        };
        drop(fs);
        self.done.push_back((token, result));
        Ok(())
    }

    fn poll_completion(&mut self) -> Option<Completion<Failure>> {
        self.done.pop_front()
    }

    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, Failure> {
        if !valid_name(name) {
            return Err(Failure::Other);
        }
        let fs = self.fs.lock();
        let inode = fs
            .dirs
            .get(&self.dir)
            .and_then(|d| d.live.get(name))
            .ok_or(Failure::NotFound)?;
        let bytes = fs.inodes.get(inode).map_or(&[][..], |f| f.live.as_slice());
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }

    fn list(&mut self, prefix: &str, each: &mut dyn FnMut(&str)) -> Result<(), Failure> {
        let names: Vec<String> = self
            .fs
            .lock()
            .dirs
            .get(&self.dir)
            .map(|d| {
                d.live
                    .keys()
                    .filter(|n| n.starts_with(prefix) && valid_name(n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for name in &names {
            each(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(o: &mut SimObjects, name: &str, data: &[u8], mode: Publish) -> Result<(), Failure> {
        o.submit(7, ObjectOp::Publish { name, data, mode })?;
        o.poll_completion().expect("a completion").1
    }

    fn read(o: &mut SimObjects, name: &str) -> Result<Vec<u8>, Failure> {
        let mut buf = vec![0u8; 4096];
        let n = o.read_at(name, 0, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn a_publish_is_the_file_objects_steps_and_ends_durable() {
        let fs = SimFs::new();
        let mut o = fs.objects("d");
        publish(&mut o, "a", b"one", Publish::Replace).unwrap();
        let kinds: Vec<&str> = fs
            .steps()
            .iter()
            .map(|s| match s {
                Step::Create { .. } => "create",
                Step::Write { .. } => "write",
                Step::SyncFile { .. } => "fsync",
                Step::Rename { .. } => "rename",
                Step::Link { .. } => "link",
                Step::Unlink { .. } => "unlink",
                Step::SyncDir { .. } => "fsync-dir",
            })
            .collect();
        assert_eq!(kinds, ["create", "write", "fsync", "rename", "fsync-dir"]);
        assert!(fs.unsynced().is_empty());
        let mut after = fs.crash_view(&mut |_, _| Fate::Lost).objects("d");
        assert_eq!(read(&mut after, "a").unwrap(), b"one");
    }

    #[test]
    fn if_absent_loses_to_an_existing_name_and_leaves_no_temporary() {
        let fs = SimFs::new();
        let mut o = fs.objects("d");
        publish(&mut o, "m", b"first", Publish::IfAbsent).unwrap();
        assert_eq!(
            publish(&mut o, "m", b"second", Publish::IfAbsent),
            Err(Failure::AlreadyExists)
        );
        assert_eq!(read(&mut o, "m").unwrap(), b"first");
        assert_eq!(fs.names("d"), ["m"]);
    }

    #[test]
    fn an_unsynced_rename_or_write_may_be_lost_or_torn() {
        let fs = SimFs::new();
        let mut o = fs.objects("d");
        publish(&mut o, "a", b"old", Publish::Replace).unwrap();
        fs.halt_after(fs.step_count() + 4);
        // Create, write, fsync, rename done; the directory sync fails: the rename is unsynced.
        assert_eq!(
            publish(&mut o, "a", b"new", Publish::Replace),
            Err(Failure::Io)
        );
        assert_eq!(read(&mut o, "a").unwrap(), b"new");
        let unsynced = fs.unsynced();
        assert_eq!(unsynced.len(), 2, "{unsynced:?}");
        let mut lost = fs.crash_view(&mut |_, _| Fate::Lost).objects("d");
        assert_eq!(read(&mut lost, "a").unwrap(), b"old");
        let mut kept = fs.crash_view(&mut |_, _| Fate::Kept).objects("d");
        assert_eq!(read(&mut kept, "a").unwrap(), b"new");

        // A write never synced: lost leaves the file empty, torn a prefix and zeros.
        let fs = SimFs::new();
        fs.halt_after(2);
        let mut o = fs.objects("d");
        assert!(publish(&mut o, "b", b"abcd", Publish::Replace).is_err());
        let mut names = Vec::new();
        let view = fs.crash_view(&mut |_, s| match s {
            Step::Write { .. } => Fate::Torn(2),
            _ => Fate::Kept,
        });
        let mut d = view.objects("d");
        d.list("", &mut |n| names.push(n.to_owned())).unwrap();
        assert!(names.is_empty(), "a temporary is never listed");
        let temp = view.names("d");
        assert_eq!(temp.len(), 1);
        let fs_guard = view.lock();
        let inode = fs_guard.dirs["d"].live[&temp[0]];
        assert_eq!(fs_guard.inodes[&inode].live, b"ab\0\0");
    }

    #[test]
    fn a_failed_step_is_cleaned_up_like_file_objects() {
        let fs = SimFs::new();
        let mut o = fs.objects("d");
        // The write (step 1) fails: the temporary is unlinked, nothing is published.
        fs.fail_step(1, Failure::NoSpace);
        assert_eq!(
            publish(&mut o, "a", b"x", Publish::Replace),
            Err(Failure::NoSpace)
        );
        assert!(fs.names("d").is_empty());
        assert_eq!(fs.failed_steps(), 1);
        publish(&mut o, "a", b"y", Publish::Replace).unwrap();
        assert_eq!(read(&mut o, "a").unwrap(), b"y");
        assert_eq!(read(&mut o, "zz"), Err(Failure::NotFound));
        assert_eq!(
            o.submit(1, ObjectOp::Delete { name: "../x" }),
            Err(Failure::Other)
        );
    }
}
