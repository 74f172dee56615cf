//! The raw references of the `shared` group: commits of the same bytes straight on a pre-zeroed
//! file with `write_all_at` + `sync_data`, shared by many threads.
//!
//! * [`Leader`]: a simple leader-based group commit. A committer writes its bytes under the
//!   mutex (so every reserved byte before `next` is written), then waits until a sync covers
//!   them; when no sync is running it runs one itself, for everything written so far, outside
//!   the mutex, and wakes the others.
//! * [`Flusher`]: the same, but a dedicated thread runs every sync and the committers only wait.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Where the log stands: bytes written, bytes durable.
#[derive(Default)]
struct State {
    /// The offset the next commit writes at; everything before it is written.
    next: u64,
    /// Everything before this offset is durable.
    durable: u64,
    /// A sync is running (leader design).
    syncing: bool,
    /// The flusher is asked to stop (flusher design).
    stop: bool,
}

struct Inner {
    file: File,
    state: Mutex<State>,
    /// Signalled when `durable` moves.
    durable: Condvar,
    /// Signalled when there is something to sync (flusher design).
    work: Condvar,
    syncs: AtomicU64,
}

impl Inner {
    fn new(file: File, start: u64) -> Self {
        Inner {
            file,
            state: Mutex::new(State {
                next: start,
                durable: start,
                ..State::default()
            }),
            durable: Condvar::new(),
            work: Condvar::new(),
            syncs: AtomicU64::new(0),
        }
    }

    fn sync(&self) {
        self.file.sync_data().expect("sync");
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }
}

/// Leader-based group commit: the committing thread syncs for the whole group.
#[derive(Clone)]
pub(crate) struct Leader(Arc<Inner>);

impl Leader {
    /// Commits append at `start` of `file`.
    pub(crate) fn new(file: File, start: u64) -> Self {
        Leader(Arc::new(Inner::new(file, start)))
    }

    /// Writes `data` and returns once it is durable.
    pub(crate) fn commit(&self, data: &[u8]) {
        let inner = &*self.0;
        let mut s = inner.state.lock().expect("lock");
        let at = s.next;
        inner.file.write_all_at(data, at).expect("write");
        s.next = at + data.len() as u64;
        let end = s.next;
        while s.durable < end {
            if s.syncing {
                s = inner.durable.wait(s).expect("wait");
                continue;
            }
            s.syncing = true;
            let target = s.next;
            drop(s);
            inner.sync();
            s = inner.state.lock().expect("lock");
            s.syncing = false;
            s.durable = s.durable.max(target);
            inner.durable.notify_all();
        }
    }

    /// fdatasyncs so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.0.syncs.load(Ordering::Relaxed)
    }
}

/// Group commit with a dedicated flusher thread: committers write and wait, the flusher syncs.
pub(crate) struct Flusher {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Commits append at `start` of `file`; starts the flusher thread.
    pub(crate) fn new(file: File, start: u64) -> Self {
        let inner = Arc::new(Inner::new(file, start));
        let flusher = Arc::clone(&inner);
        let thread = std::thread::spawn(move || flush(&flusher));
        Flusher {
            inner,
            thread: Some(thread),
        }
    }

    /// Writes `data` and returns once the flusher made it durable.
    pub(crate) fn commit(&self, data: &[u8]) {
        let inner = &*self.inner;
        let mut s = inner.state.lock().expect("lock");
        let at = s.next;
        inner.file.write_all_at(data, at).expect("write");
        s.next = at + data.len() as u64;
        let end = s.next;
        inner.work.notify_one();
        while s.durable < end {
            s = inner.durable.wait(s).expect("wait");
        }
    }

    /// fdatasyncs so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::Relaxed)
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.inner.state.lock().expect("lock").stop = true;
        self.inner.work.notify_one();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("flusher");
        }
    }
}

/// The flusher thread: syncs whatever was written since the last sync, until stopped.
fn flush(inner: &Inner) {
    let mut s = inner.state.lock().expect("lock");
    loop {
        if s.next > s.durable {
            let target = s.next;
            drop(s);
            inner.sync();
            s = inner.state.lock().expect("lock");
            s.durable = target;
            inner.durable.notify_all();
        } else if s.stop {
            return;
        } else {
            s = inner.work.wait(s).expect("wait");
        }
    }
}
