//! Spare segment files: files whose blocks already exist, waiting to become segments, so that a
//! segment's commits overwrite space instead of growing a file. A background thread (the
//! preparer) keeps some zero-filled and synced ahead of need; deleted segments can be kept as
//! spares too (recycling). Spares live under names recovery never reads
//! ([`crate::names::spare_file_name`]) and are removed when the directory is opened again.

use crate::error::{FileError, Op};
use crate::fsutil::write_zeros;
use crate::names::spare_file_name;
use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The spare files of one log directory, and the preparer thread when there is one. Dropping it
/// stops and joins the thread, then removes the spares it holds (best effort: a crash leaves
/// them to the next open, which removes them).
#[derive(Debug)]
pub(crate) struct Spares {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the owner and the preparer share.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// Bytes every spare holds at least.
    prepare_size: u64,
    /// Spares the preparer keeps ready.
    prepare_ahead: usize,
    state: Mutex<State>,
    /// Signalled whenever `state` changes.
    changed: Condvar,
    /// Set once, when the owner is dropped; checked between pieces of zeros.
    stop: AtomicBool,
    /// Fail the preparer's next preparation (a fault hook for tests).
    fail_next: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Spare files ready to become segments, oldest first.
    ready: VecDeque<PathBuf>,
    /// Spare files shorter than `prepare_size` (kept from segments that were smaller), with
    /// their length, waiting for the preparer to extend them.
    short: VecDeque<(PathBuf, u64)>,
    /// The file the preparer is working on, if any.
    busy: Option<PathBuf>,
    /// The number of the next spare file name.
    next: u64,
    /// The preparer's failure, reported by the next [`Spares::take`].
    error: Option<FileError>,
    /// Spare files the preparer zero-filled so far.
    prepared: u64,
}

impl State {
    fn held(&self) -> usize {
        self.ready.len() + self.short.len() + usize::from(self.busy.is_some())
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Neither side panics while holding the lock; if one did, the state is still consistent
    // (every change is a single push or pop), so it is used as it is.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Spares {
    /// The spares of directory `dir`, each at least `prepare_size` bytes, with a preparer thread
    /// that keeps `prepare_ahead` of them ready when both are non-zero.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub(crate) fn new(
        dir: &Path,
        prepare_size: u64,
        prepare_ahead: usize,
    ) -> Result<Self, FileError> {
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            prepare_size,
            prepare_ahead,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            fail_next: AtomicBool::new(false),
        });
        let thread = if prepare_size > 0 && prepare_ahead > 0 {
            let theirs = Arc::clone(&shared);
            let spawned = thread::Builder::new()
                .name("lamina-prepare".into())
                .spawn(move || prepare_loop(&theirs))
                .map_err(|e| FileError::io(Op::Prepare, dir, None, e))?;
            Some(spawned)
        } else {
            None
        };
        Ok(Spares { shared, thread })
    }

    /// A ready spare for a new segment, if one is ready; first, the preparer's failure if it
    /// had one since the last call (so it is never lost; the preparer resumes after it).
    pub(crate) fn take(&self) -> Result<Option<PathBuf>, FileError> {
        let mut state = lock(&self.shared.state);
        if let Some(error) = state.error.take() {
            self.shared.changed.notify_all();
            return Err(error);
        }
        let spare = state.ready.pop_front();
        if spare.is_some() {
            // The preparer may make another.
            self.shared.changed.notify_all();
        }
        Ok(spare)
    }

    /// A fresh spare file name, for a deleted segment to be renamed to.
    pub(crate) fn new_name(&self) -> PathBuf {
        let mut state = lock(&self.shared.state);
        let n = state.next;
        state.next += 1;
        self.shared.dir.join(spare_file_name(n))
    }

    /// Adds `path`, a file of `len` bytes renamed to a spare name by [`Self::new_name`] and
    /// durably so: ready at once if it is long enough (or there is no preparer to extend it),
    /// else once the preparer has extended it with zeros.
    pub(crate) fn add(&self, path: PathBuf, len: u64) {
        let mut state = lock(&self.shared.state);
        if len >= self.shared.prepare_size || self.thread.is_none() {
            state.ready.push_back(path);
        } else {
            state.short.push_back((path, len));
        }
        self.shared.changed.notify_all();
    }

    /// Spare files held: ready, waiting to be extended, or being prepared.
    pub(crate) fn held(&self) -> usize {
        lock(&self.shared.state).held()
    }

    /// Spare files ready to become segments.
    pub(crate) fn ready(&self) -> usize {
        lock(&self.shared.state).ready.len()
    }

    /// Spare files the preparer has zero-filled so far.
    pub(crate) fn prepared(&self) -> u64 {
        lock(&self.shared.state).prepared
    }

    /// Waits until the preparer keeps all its spares ready, has failed, or `timeout` passed;
    /// returns whether they are ready. Without a preparer, returns at once.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> bool {
        // A timeout too long to add to now is as good as none.
        let deadline = Instant::now().checked_add(timeout);
        let mut state = lock(&self.shared.state);
        loop {
            let full = state.ready.len() >= self.shared.prepare_ahead;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if full
                || self.thread.is_none()
                || state.error.is_some()
                || left == Some(Duration::ZERO)
            {
                return full;
            }
            state = match left {
                Some(left) => self
                    .shared
                    .changed
                    .wait_timeout(state, left)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|e| e.into_inner().0),
                None => self
                    .shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// Makes the preparer's next preparation fail with an I/O error.
    pub(crate) fn fail_next(&self) {
        self.shared.fail_next.store(true, Ordering::Relaxed);
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Under the lock, so the preparer cannot miss the wake-up between its check and its wait.
        drop(lock(&self.shared.state));
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // The loop returns nothing and does not panic; a join error has nothing to report.
            let _ = thread.join();
        }
        let mut state = lock(&self.shared.state);
        let mut files: Vec<PathBuf> = state.ready.drain(..).collect();
        files.extend(state.short.drain(..).map(|(path, _)| path));
        files.extend(state.busy.take());
        for path in files {
            let _ = fs::remove_file(path);
        }
    }
}

/// One piece of the preparer's work.
struct Job {
    path: PathBuf,
    /// The length of an existing file to extend; `None` for a new file.
    extend_from: Option<u64>,
}

/// The preparer: extends short spares, then makes new ones while fewer than `prepare_ahead`
/// are ready or on their way; waits while there is nothing to do or a failure is not yet
/// reported.
fn prepare_loop(shared: &Shared) {
    let mut zeros = Vec::new();
    loop {
        let Some(job) = next_job(shared) else { return };
        let result = prepare(shared, &job, &mut zeros);
        let mut state = lock(&shared.state);
        state.busy = None;
        match result {
            Ok(true) => {
                state.ready.push_back(job.path);
                state.prepared += 1;
            }
            Ok(false) => {
                // Stopped halfway: the half-prepared file is no use to anyone.
                let _ = fs::remove_file(&job.path);
                return;
            }
            Err(e) => {
                let _ = fs::remove_file(&job.path);
                state.error = Some(FileError::io(Op::Prepare, &job.path, None, e));
            }
        }
        shared.changed.notify_all();
    }
}

/// Waits for the next job; `None` once stopped.
fn next_job(shared: &Shared) -> Option<Job> {
    let mut state = lock(&shared.state);
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return None;
        }
        if state.error.is_none() {
            let job = if let Some((path, len)) = state.short.pop_front() {
                Some(Job {
                    path,
                    extend_from: Some(len),
                })
            } else if state.held() < shared.prepare_ahead {
                let n = state.next;
                state.next += 1;
                Some(Job {
                    path: shared.dir.join(spare_file_name(n)),
                    extend_from: None,
                })
            } else {
                None
            };
            if let Some(job) = job {
                state.busy = Some(job.path.clone());
                return Some(job);
            }
        }
        state = shared
            .changed
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// Zero-fills the job's file up to `prepare_size` and syncs it; `Ok(false)` when stopped first.
fn prepare(shared: &Shared, job: &Job, zeros: &mut Vec<u8>) -> io::Result<bool> {
    let file = match job.extend_from {
        None => OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&job.path)?,
        Some(_) => OpenOptions::new().write(true).open(&job.path)?,
    };
    if shared.fail_next.swap(false, Ordering::Relaxed) {
        return Err(io::Error::other("injected preparation fault"));
    }
    let from = job.extend_from.unwrap_or(0);
    if !write_zeros(&file, from, shared.prepare_size, zeros, Some(&shared.stop))? {
        return Ok(false);
    }
    // The size and the zeros durable: a commit into this space has no metadata to journal.
    file.sync_data()?;
    Ok(true)
}
