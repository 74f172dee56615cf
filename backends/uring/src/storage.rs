//! [`UringStorage`]: the core's [`SegmentStorage`] over one directory, with writes and syncs
//! going through an io_uring.

use crate::buffer::{Buffer, Pool};
use crate::direct::{self, Span, Tail};
use crate::error::{Op, UringError, open_error, setup_error};
use crate::fsync;
use crate::options::Options;
use crate::write::{Bytes, FileRef, Step};
use io_uring::{IoUring, Probe, opcode, squeue};
use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, SegmentOp, SegmentStorage};
use lamina_file::{FileStorage, names};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Slots of the registered-file table (the log has one or two segments open at a time; a file
/// opened when every slot is taken is named by its descriptor).
const FILE_SLOTS: u32 = 64;

/// Registered buffers at most (the kernel's limit is 16384).
const MAX_FIXED_BUFFERS: usize = 1024;

/// The low bits of an entry's `user_data` say which entry of a job it is.
const TAG_BITS: u32 = 2;
const TAG_WRITE: u64 = 0;
const TAG_LINKED_SYNC: u64 = 1;
const TAG_SYNC: u64 = 2;

/// A segment file opened for the ring.
#[derive(Debug)]
struct SegFile {
    fd: OwnedFd,
    /// Its slot in the registered-file table, if it has one.
    slot: Option<u32>,
    path: PathBuf,
    segment: SegmentId,
}

impl SegFile {
    fn file_ref(&self) -> FileRef {
        match self.slot {
            Some(slot) => FileRef::Fixed(slot),
            None => FileRef::Fd(self.fd.as_raw_fd()),
        }
    }

    fn fsync_entry(&self) -> squeue::Entry {
        fsync::entry(self.file_ref())
    }
}

/// What a job does.
#[derive(Debug)]
enum Work {
    /// A write, linked to an fsync when `linked`.
    Write {
        bytes: Bytes,
        span: Span,
        linked: bool,
        write_res: Option<i32>,
        sync_res: Option<i32>,
    },
    /// An fsync.
    Sync { res: Option<i32> },
}

/// One operation of the core, or one part of one, from `submit` until the kernel has answered
/// for all its entries.
#[derive(Debug)]
struct Job {
    token: u64,
    file: Arc<SegFile>,
    work: Work,
    /// Entries of it the kernel has taken and not yet answered.
    outstanding: u8,
    /// Not given to the ring yet (an overlapping earlier write is in flight, or the queue was
    /// full).
    held: bool,
    /// The operation it is a part of, when it is one of several.
    group: Option<u64>,
}

/// An operation of the core carried out by several jobs: a direct write split at a first block
/// that an earlier write still changes, and the fsync of a linked one.
#[derive(Debug)]
struct Group {
    token: u64,
    /// Jobs of it not yet finished.
    parts: u8,
    /// The first error a part met.
    error: Option<UringError>,
    /// A linked write's file, to fsync once every part is written.
    then_sync: Option<Arc<SegFile>>,
}

impl Job {
    /// The blocks the job writes, if it is a write.
    fn span(&self) -> Option<&Span> {
        match &self.work {
            Work::Write { span, .. } => Some(span),
            Work::Sync { .. } => None,
        }
    }

    /// What its answered entries add up to.
    fn outcome(&mut self) -> Result<Step, (Op, Errno)> {
        match &mut self.work {
            Work::Sync { res } => fsync::outcome(res.take()),
            Work::Write {
                bytes,
                linked,
                write_res,
                sync_res,
                ..
            } => bytes.outcome(*linked, write_res.take(), sync_res.take()),
        }
    }
}

/// A log's segments in one directory (Linux), as files named `{sequence:016x}.seg` under the
/// directory lock of the file backend, written and synced through an io_uring. See the crate
/// documentation for what goes through the ring and what does not.
pub struct UringStorage {
    /// First, so that it is closed before the buffers registered with it are freed.
    ring: IoUring,
    /// The file backend over the same directory: lock, creates, deletes, directory syncs,
    /// reads, listing.
    files: FileStorage,
    dir: PathBuf,
    options: Options,
    /// The write granularity: the direct-I/O block, or 1 for buffered I/O.
    block: usize,
    open: HashMap<SegmentId, Arc<SegFile>>,
    /// Files closed for the log but still named by a job: freed once no job holds them.
    retired: Vec<Arc<SegFile>>,
    free_slots: Vec<u32>,
    jobs: HashMap<u64, Job>,
    /// Jobs not given to the ring yet, in submission order.
    held: VecDeque<u64>,
    /// Syncs, and buffered writes, of the core not given to the ring yet: the next poll hands
    /// them to it, or a wait runs them on the waiting thread ([`Self::wait`]).
    deferred: VecDeque<u64>,
    groups: HashMap<u64, Group>,
    next_id: u64,
    /// Each segment's last partly written block (direct I/O).
    tails: HashMap<SegmentId, Tail>,
    /// Completions to report, in the order they ended.
    ready: VecDeque<Completion<UringError>>,
    pool: Pool,
    cqes: Vec<(u64, i32)>,
    /// A failure of `io_uring_enter` that retrying does not cure, reported by [`Self::wait`].
    enter_error: Option<std::io::Error>,
    /// Dropping: completions free their buffers and nothing is resubmitted.
    draining: bool,
    /// Jobs given to the ring again after a short write, `EAGAIN` or `EINTR`.
    resubmitted: u64,
}

impl std::fmt::Debug for UringStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStorage")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("block", &self.block)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

fn retryable(e: &std::io::Error) -> bool {
    matches!(
        Errno::from_io_error(e),
        Some(Errno::INTR | Errno::AGAIN | Errno::BUSY)
    )
}

impl UringStorage {
    /// Opens the log directory `dir` as the file backend does (creating it if missing, taking
    /// its lock), sets up a ring, and registers files and buffers as `options` say.
    ///
    /// # Errors
    /// [`UringError::Unavailable`] when the kernel refuses io_uring (the file backend,
    /// `lamina_file::FileStorage`, is the alternative); [`UringError::DirectUnsupported`] when
    /// `options.direct` is set and the file system refuses `O_DIRECT`; [`UringError::File`]
    /// when the directory cannot be opened or is locked; [`UringError::Io`] when setup or
    /// registration fails otherwise.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Self, UringError> {
        let files = FileStorage::open(
            dir.as_ref(),
            lamina_file::Options::new().prepare_size(options.prepare_size),
        )?;
        let dir = files.dir().to_path_buf();
        let depth = options.queue_depth.clamp(2, 4096);
        let ring = IoUring::builder()
            .setup_cqsize(depth * 2)
            .build(depth)
            .map_err(|e| setup_error(&dir, e))?;
        check_opcodes(&ring, &dir, options.fixed_buffers)?;
        let (block, align) = if options.direct {
            direct_alignment(&dir)?
        } else {
            (1, 64)
        };
        let fixed_count = if options.fixed_buffers {
            (depth as usize).min(MAX_FIXED_BUFFERS)
        } else {
            0
        };
        let buffer_size = options.buffer_size.max(1).next_multiple_of(block);
        let mut pool = Pool::new(align, fixed_count, buffer_size)
            .ok_or_else(|| UringError::io(Op::Alloc, &dir, None, Errno::NOMEM.into()))?;
        if fixed_count > 0 {
            let iovecs = pool.iovecs();
            // SAFETY: the iovecs describe the pool's registered buffers, which are allocated
            // here, never freed or reallocated while the pool lives, and outlive the ring: the
            // ring is the first field of `UringStorage`, dropped (closed) before the pool.
            unsafe { ring.submitter().register_buffers(&iovecs) }
                .map_err(|e| UringError::io(Op::Register, &dir, None, e))?;
        }
        let free_slots = if options.fixed_files {
            ring.submitter()
                .register_files_sparse(FILE_SLOTS)
                .map_err(|e| UringError::io(Op::Register, &dir, None, e))?;
            (0..FILE_SLOTS).rev().collect()
        } else {
            Vec::new()
        };
        // The tables have room for a full ring from the start: a log that keeps more in flight
        // than before does not allocate then.
        let room = depth as usize;
        Ok(UringStorage {
            ring,
            files,
            dir,
            options,
            block,
            open: HashMap::new(),
            retired: Vec::new(),
            free_slots,
            jobs: HashMap::with_capacity(room),
            held: VecDeque::with_capacity(room),
            deferred: VecDeque::with_capacity(room),
            groups: HashMap::with_capacity(room),
            next_id: 0,
            tails: HashMap::new(),
            ready: VecDeque::with_capacity(room),
            pool,
            cqes: Vec::with_capacity(2 * room),
            enter_error: None,
            draining: false,
            resubmitted: 0,
        })
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

    /// The block size writes are composed in under `O_DIRECT` (the file system's direct-I/O
    /// alignment); 1 for buffered I/O.
    #[must_use]
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// The path of segment `id`'s file.
    #[must_use]
    pub fn segment_path(&self, id: SegmentId) -> PathBuf {
        self.files.segment_path(id)
    }

    /// Operations submitted whose completions have not been polled yet.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        let alone = self.jobs.values().filter(|j| j.group.is_none()).count();
        alone + self.groups.len() + self.ready.len()
    }

    /// Jobs accepted but not yet given to the kernel: a direct-I/O write (or the first block of
    /// one) waiting for an earlier write into the same block to complete, or entries beyond a
    /// full submission queue. (Syncs and buffered writes waiting for the next poll or wait are
    /// not counted: see [`Self::wait`].)
    #[must_use]
    pub fn held_back(&self) -> usize {
        self.held.len()
    }

    /// How many times an operation was given to the ring again, for the rest of a short write
    /// or after `EAGAIN` or `EINTR`.
    #[must_use]
    pub fn resubmissions(&self) -> u64 {
        self.resubmitted
    }

    /// Blocks until an operation has ended, when operations are in flight and none has ended
    /// yet: submits what is queued and waits in the kernel for at least one completion, in one
    /// system call. Syncs and buffered writes not handed to the ring by a poll yet run on this
    /// thread instead, when nothing else is in the ring (the kernel would hand them to a worker
    /// thread: see the crate documentation). Returns at once when a completion is ready to poll
    /// or nothing is in flight.
    ///
    /// # Errors
    /// When `io_uring_enter` fails with an error that retrying does not cure.
    pub fn wait(&mut self) -> Result<(), UringError> {
        if self.ready.is_empty() && !self.deferred.is_empty() {
            // The caller blocks until an operation ends anyway: the syncs and buffered writes
            // it waits for run here instead of on an io-wq worker (the kernel never runs an
            // `IORING_OP_FSYNC` inline, nor, on a file system without non-blocking buffered
            // writes such as ext4, a buffered write). That spares two thread switches per
            // operation, and the workers the kernel starts for each thread that submits.
            // Only when nothing of ours is in the ring, though: beside operations in flight (a
            // log streaming on), they join those in the ring instead, in order, rather than
            // race them for the same file's lock.
            self.release();
            if self.jobs.len() == self.held.len() + self.deferred.len() {
                self.run_here();
            } else {
                self.pass_deferred();
            }
        }
        // What is queued goes to the kernel in the same call that waits: one system call, not a
        // submit and then a wait. (A write run here but cut short went back to the ring: it is
        // waited for like any other.)
        self.release();
        self.reap();
        self.release();
        while self.ready.is_empty() && self.jobs.len() > self.held.len() + self.deferred.len() {
            if let Some(e) = self.enter_error.take() {
                return Err(UringError::io(Op::Enter, &self.dir, None, e));
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if retryable(&e) => {}
                Err(e) => return Err(UringError::io(Op::Enter, &self.dir, None, e)),
            }
            self.reap();
            self.release();
        }
        // Entries queued after the last call (a resubmission, a released write) go out now.
        self.flush();
        match self.enter_error.take() {
            Some(e) => Err(UringError::io(Op::Enter, &self.dir, None, e)),
            None => Ok(()),
        }
    }

    /// Gives what can go to the ring, collects what the kernel has answered.
    fn progress(&mut self) {
        self.pass_deferred();
        self.release();
        self.flush();
        self.reap();
        self.release();
        self.flush();
    }

    /// Hands the queued entries to the kernel, and has it move completions that overflowed the
    /// completion queue into it; no system call when there is neither.
    fn flush(&mut self) {
        let sq = self.ring.submission();
        if sq.is_empty() && !sq.cq_overflow() {
            return;
        }
        drop(sq);
        match self.ring.submit() {
            Ok(_) => {}
            Err(e) if retryable(&e) => {}
            Err(e) => self.enter_error = Some(e),
        }
    }

    /// Handles every completion the kernel has posted.
    fn reap(&mut self) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for (user_data, res) in cqes.drain(..) {
            self.on_cqe(user_data, res);
        }
        self.cqes = cqes;
        // Files no job names any more can be closed (and their slots freed).
        let mut i = 0;
        while let Some(file) = self.retired.get(i) {
            if Arc::strong_count(file) > 1 {
                i += 1;
                continue;
            }
            let file = self.retired.swap_remove(i);
            if let Some(slot) = file.slot
                && self
                    .ring
                    .submitter()
                    .register_files_update(slot, &[-1])
                    .is_ok()
            {
                self.free_slots.push(slot);
            }
        }
    }

    fn on_cqe(&mut self, user_data: u64, res: i32) {
        let id = user_data >> TAG_BITS;
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        match (&mut job.work, user_data & ((1 << TAG_BITS) - 1)) {
            (Work::Write { write_res, .. }, TAG_WRITE) => *write_res = Some(res),
            (Work::Write { sync_res, .. }, TAG_LINKED_SYNC) => *sync_res = Some(res),
            (Work::Sync { res: r }, TAG_SYNC) => *r = Some(res),
            _ => return,
        }
        job.outstanding = job.outstanding.saturating_sub(1);
        if job.outstanding > 0 {
            // The other half of a linked pair is still out: the pair ends as one.
            return;
        }
        let Some(mut job) = self.jobs.remove(&id) else {
            return;
        };
        if self.draining {
            self.give_back_buffer(job);
            return;
        }
        match job.outcome() {
            Ok(Step::Again) => {
                self.resubmitted += 1;
                job.held = true;
                self.jobs.insert(id, job);
                // Back in submission order: an overlapping later write must wait for it.
                let at = self.held.partition_point(|h| *h < id);
                self.held.insert(at, id);
            }
            Ok(_) => {
                let (token, group) = (job.token, job.group);
                self.give_back_buffer(job);
                self.finish(group, token, Ok(()));
            }
            Err((op, errno)) => {
                let e = UringError::io(op, &job.file.path, Some(job.file.segment), errno.into());
                let (token, group) = (job.token, job.group);
                self.give_back_buffer(job);
                self.finish(group, token, Err(e));
            }
        }
    }

    /// Reports the end of a job: the operation's completion, or, for a part of one, its end
    /// once every part has ended (the first error wins; a linked write's fsync follows).
    fn finish(&mut self, group: Option<u64>, token: u64, result: Result<(), UringError>) {
        let Some(id) = group else {
            self.ready.push_back((token, result));
            return;
        };
        let Some(g) = self.groups.get_mut(&id) else {
            self.ready.push_back((token, result));
            return;
        };
        if let Err(e) = result
            && g.error.is_none()
        {
            g.error = Some(e);
        }
        g.parts = g.parts.saturating_sub(1);
        if g.parts > 0 {
            return;
        }
        let Some(mut g) = self.groups.remove(&id) else {
            return;
        };
        match (g.error.take(), g.then_sync.take()) {
            (Some(e), _) => self.ready.push_back((g.token, Err(e))),
            (None, Some(file)) => {
                // Every part is written: the fsync now covers them all.
                g.parts = 1;
                let token = g.token;
                self.groups.insert(id, g);
                self.enqueue(token, file, Work::Sync { res: None }, Some(id));
            }
            (None, None) => self.ready.push_back((g.token, Ok(()))),
        }
    }

    fn give_back_buffer(&mut self, job: Job) {
        if let Work::Write { bytes, .. } = job.work {
            self.pool.give(bytes.buffer);
        }
    }

    /// Gives the ring every held job that no earlier overlapping write holds back.
    fn release(&mut self) {
        let mut i = 0;
        while let Some(&id) = self.held.get(i) {
            if self.blocked(id) {
                i += 1;
                continue;
            }
            if !self.push(id) {
                // The queue is full even after a submit: try again at the next poll.
                return;
            }
            self.held.remove(i);
        }
    }

    /// Whether job `id` overlaps a write in flight, or an earlier held one, on its segment.
    fn blocked(&self, id: u64) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return false;
        };
        let Some(span) = job.span() else {
            return false;
        };
        self.jobs.iter().any(|(other_id, other)| {
            *other_id != id
                && (!other.held || *other_id < id)
                && other.file.segment == job.file.segment
                && other.span().is_some_and(|s| s.overlaps(span))
        })
    }

    /// Puts job `id`'s entries into the submission queue; false when there is no room.
    fn push(&mut self, id: u64) -> bool {
        let Some(job) = self.jobs.get(&id) else {
            return true;
        };
        let user_data = |tag| (id << TAG_BITS) | tag;
        // At most two entries, on the stack: pushing a job allocates nothing.
        let (first, second) = match &job.work {
            Work::Write { bytes, linked, .. } => {
                let write = bytes
                    .entry(job.file.file_ref())
                    .user_data(user_data(TAG_WRITE));
                if *linked {
                    (
                        write.flags(squeue::Flags::IO_LINK),
                        Some(job.file.fsync_entry().user_data(user_data(TAG_LINKED_SYNC))),
                    )
                } else {
                    (write, None)
                }
            }
            Work::Sync { .. } => (job.file.fsync_entry().user_data(user_data(TAG_SYNC)), None),
        };
        let pair;
        let single;
        let entries: &[squeue::Entry] = match second {
            Some(second) => {
                pair = [first, second];
                &pair
            }
            None => {
                single = [first];
                &single
            }
        };
        let room = |ring: &mut IoUring| {
            let sq = ring.submission();
            sq.capacity() - sq.len() >= entries.len()
        };
        if !room(&mut self.ring) {
            self.flush();
            if !room(&mut self.ring) {
                return false;
            }
        }
        // SAFETY: every entry points only at memory the job owns: its buffer (a heap
        // allocation that does not move) and its file (kept open by the job's `Arc`). The job
        // stays in `self.jobs` until the kernel has answered for all its entries (`outstanding`
        // reaches 0), and on drop the backend waits for those answers or leaks the buffers.
        let pushed = unsafe { self.ring.submission().push_multiple(entries) };
        if pushed.is_err() {
            return false;
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            job.outstanding = entries.len() as u8;
            job.held = false;
        }
        true
    }

    /// Queues a job to be given to the ring.
    fn enqueue(&mut self, token: u64, file: Arc<SegFile>, work: Work, group: Option<u64>) {
        let id = self.next_id;
        self.next_id += 1;
        self.jobs.insert(
            id,
            Job {
                token,
                file,
                work,
                outstanding: 0,
                held: true,
                group,
            },
        );
        self.held.push_back(id);
        self.release();
    }

    /// The open file of `segment`, opened for the ring if it is not yet.
    fn file(&mut self, segment: SegmentId) -> Result<Arc<SegFile>, UringError> {
        if let Some(file) = self.open.get(&segment) {
            return Ok(Arc::clone(file));
        }
        let path = self.files.segment_path(segment);
        let mut flags = OFlags::RDWR | OFlags::CLOEXEC;
        if self.options.direct {
            flags |= OFlags::DIRECT;
        }
        let fd = rustix::fs::open(&path, flags, Mode::empty())
            .map_err(|e| open_error(&path, Some(segment), self.options.direct, e.into()))?;
        let slot = self.free_slots.pop().and_then(|slot| {
            match self
                .ring
                .submitter()
                .register_files_update(slot, &[fd.as_raw_fd()])
            {
                Ok(_) => Some(slot),
                Err(_) => {
                    self.free_slots.push(slot);
                    None
                }
            }
        });
        let file = Arc::new(SegFile {
            fd,
            slot,
            path,
            segment,
        });
        self.open.insert(segment, Arc::clone(&file));
        Ok(file)
    }

    /// Closes the ring's file of `segment` once no job names it, and forgets its tail.
    fn forget(&mut self, segment: SegmentId) {
        self.tails.remove(&segment);
        if let Some(file) = self.open.remove(&segment) {
            self.retired.push(file);
        }
    }

    fn write(&mut self, token: u64, segment: SegmentId, offset: u64, data: &[u8], linked: bool) {
        let (file, bytes, span) = match self.compose(segment, offset, data) {
            Ok(composed) => composed,
            Err(e) => return self.ready.push_back((token, Err(e))),
        };
        let block = self.block;
        let first = Span {
            start: span.start,
            len: block,
        };
        if block == 1 || span.len <= block || !self.changing(segment, &first) {
            let work = Work::Write {
                bytes,
                span,
                linked,
                write_res: None,
                sync_res: None,
            };
            // A direct write never waits for a worker thread (the device does it): it goes to
            // the ring as it comes. A buffered one may, so it waits for the next poll or wait.
            return if block == 1 {
                self.defer(token, file, work)
            } else {
                self.enqueue(token, file, work, None)
            };
        }
        // An earlier write still changes the first block: the other blocks go out at once, the
        // first one once that write completes.
        let Some(mut head) = self.pool.take(block) else {
            self.pool.give(bytes.buffer);
            let e = UringError::io(Op::Alloc, &file.path, Some(segment), Errno::NOMEM.into());
            return self.ready.push_back((token, Err(e)));
        };
        if let (Some(to), Some(from)) = (
            head.buf.as_mut_slice().get_mut(..block),
            bytes.buffer.buf.as_slice().get(..block),
        ) {
            to.copy_from_slice(from);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.groups.insert(
            id,
            Group {
                token,
                parts: 2,
                error: None,
                then_sync: linked.then(|| Arc::clone(&file)),
            },
        );
        let part = |bytes, span| Work::Write {
            bytes,
            span,
            linked: false,
            write_res: None,
            sync_res: None,
        };
        let rest = Span {
            start: span.start + block as u64,
            len: span.len - block,
        };
        let body = Bytes {
            done: block,
            ..bytes
        };
        self.enqueue(token, Arc::clone(&file), part(body, rest), Some(id));
        let head = Bytes {
            buffer: head,
            start: span.start,
            len: block,
            done: 0,
        };
        self.enqueue(token, file, part(head, first), Some(id));
    }

    /// Whether a write accepted earlier (held or in flight) changes bytes of `span`.
    fn changing(&self, segment: SegmentId, span: &Span) -> bool {
        self.jobs
            .values()
            .any(|j| j.file.segment == segment && j.span().is_some_and(|s| s.overlaps(span)))
    }

    /// Copies `data` into a buffer of the backend's, as whole blocks under direct I/O.
    fn compose(
        &mut self,
        segment: SegmentId,
        offset: u64,
        data: &[u8],
    ) -> Result<(Arc<SegFile>, Bytes, Span), UringError> {
        let file = self.file(segment)?;
        let block = self.block;
        let too_far = || UringError::io(Op::Write, &file.path, Some(segment), Errno::FBIG.into());
        let span = Span::of(block, offset, data.len()).ok_or_else(too_far)?;
        let first_index = span.start / block as u64;
        let mut read = None;
        let tail = self.tails.get(&segment).filter(|t| t.index == first_index);
        if offset != span.start && tail.is_none() {
            // The block's earlier bytes are on disk, unless a write in flight changes them.
            let first = Span {
                start: span.start,
                len: block,
            };
            if self.changing(segment, &first) {
                return Err(UringError::BlockInFlight {
                    path: file.path.clone(),
                    segment,
                    offset,
                });
            }
            let mut bytes = vec![0; block];
            self.files.read_at(segment, span.start, &mut bytes)?;
            read = Some(bytes);
        }
        let first = read
            .as_deref()
            .or_else(|| self.tails.get(&segment).map(|t| &*t.bytes));
        let mut buffer: Buffer = self.pool.take(span.len).ok_or_else(|| {
            UringError::io(Op::Alloc, &file.path, Some(segment), Errno::NOMEM.into())
        })?;
        let Some((span, tail)) =
            direct::compose(block, offset, data, first, buffer.buf.as_mut_slice())
        else {
            self.pool.give(buffer);
            return Err(too_far());
        };
        if block > 1 {
            let last = buffer
                .buf
                .as_slice()
                .get(span.len.saturating_sub(block)..span.len);
            match (tail, last) {
                (Some(index), Some(last)) => {
                    if let Some(t) = Tail::keep(self.tails.get_mut(&segment), index, last) {
                        self.tails.insert(segment, t);
                    }
                }
                _ => {
                    // No partly written block: the tail names none, and keeps its buffer.
                    if let Some(t) = self.tails.get_mut(&segment) {
                        t.index = u64::MAX;
                    }
                }
            }
        }
        let bytes = Bytes {
            buffer,
            start: span.start,
            len: span.len,
            done: 0,
        };
        Ok((file, bytes, span))
    }

    /// Queues a sync for the next poll or wait (see [`Self::wait`]).
    fn sync(&mut self, token: u64, segment: SegmentId) {
        match self.file(segment) {
            Ok(file) => self.defer(token, file, Work::Sync { res: None }),
            Err(e) => self.ready.push_back((token, Err(e))),
        }
    }

    /// Queues a job for the next poll (which gives it to the ring) or wait (which runs it on
    /// the waiting thread).
    fn defer(&mut self, token: u64, file: Arc<SegFile>, work: Work) {
        let id = self.next_id;
        self.next_id += 1;
        let job = Job {
            token,
            file,
            work,
            outstanding: 0,
            held: false,
            group: None,
        };
        self.jobs.insert(id, job);
        self.deferred.push_back(id);
    }

    /// Hands the deferred jobs to the ring: the caller goes on meanwhile.
    fn pass_deferred(&mut self) {
        while let Some(id) = self.deferred.pop_front() {
            if let Some(job) = self.jobs.get_mut(&id) {
                job.held = true;
                self.held.push_back(id);
            }
        }
    }

    /// Runs the deferred jobs on this thread, with the system calls the ring's workers would
    /// make (`pwrite`, `fdatasync`), and reports their results through the ring's completion
    /// path, so they end exactly as they would there.
    fn run_here(&mut self) {
        while let Some(id) = self.deferred.pop_front() {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            let fd = &job.file.fd;
            match &job.work {
                Work::Sync { .. } => {
                    let res = errno_result(fdatasync(fd).map(|()| 0));
                    job.outstanding = 1;
                    self.on_cqe((id << TAG_BITS) | TAG_SYNC, res);
                }
                Work::Write { bytes, linked, .. } => {
                    let linked = *linked;
                    let (at, offset, len) = bytes.rest();
                    let data = bytes
                        .buffer
                        .buf
                        .as_slice()
                        .get(at..at + len as usize)
                        .unwrap_or(&[]);
                    let res = errno_result(pwrite(fd, data, offset));
                    let sync_res = if !linked {
                        None
                    } else if res == len as i32 {
                        Some(errno_result(fdatasync(fd).map(|()| 0)))
                    } else {
                        // A short or failed write breaks the link, as the kernel cancels it.
                        Some(-libc::ECANCELED)
                    };
                    job.outstanding = 1 + u8::from(linked);
                    self.on_cqe((id << TAG_BITS) | TAG_WRITE, res);
                    if let Some(sync_res) = sync_res {
                        self.on_cqe((id << TAG_BITS) | TAG_LINKED_SYNC, sync_res);
                    }
                }
            }
        }
    }

    /// Does `op` with the file backend's code, at once; its completion is reported at the next
    /// poll.
    fn by_file_backend(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), UringError> {
        self.files.submit(token, op)?;
        while let Some((token, result)) = self.files.poll_completion() {
            self.ready
                .push_back((token, result.map_err(UringError::File)));
        }
        Ok(())
    }
}

/// A system call's result as a completion's: the count, or the negated error number.
fn errno_result(r: Result<usize, Errno>) -> i32 {
    match r {
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(e) => -e.raw_os_error(),
    }
}

/// `fdatasync`, again after `EINTR`.
fn fdatasync(fd: &OwnedFd) -> Result<(), Errno> {
    loop {
        match rustix::fs::fdatasync(fd) {
            Err(Errno::INTR) => {}
            r => return r,
        }
    }
}

/// `pwrite`, again after `EINTR`.
fn pwrite(fd: &OwnedFd, data: &[u8], offset: u64) -> Result<usize, Errno> {
    loop {
        match rustix::io::pwrite(fd, data, offset) {
            Err(Errno::INTR) => {}
            r => return r,
        }
    }
}

/// Fails with [`UringError::Unavailable`] when the ring lacks an operation this backend uses.
fn check_opcodes(ring: &IoUring, dir: &Path, fixed_buffers: bool) -> Result<(), UringError> {
    let mut probe = Probe::new();
    match ring.submitter().register_probe(&mut probe) {
        Ok(()) => {}
        // Before Linux 5.6 there is no probe, and no `IORING_OP_WRITE` either.
        Err(e) if Errno::from_io_error(&e) == Some(Errno::INVAL) => {
            return Err(UringError::Unavailable { source: e });
        }
        Err(e) => return Err(UringError::io(Op::Register, dir, None, e)),
    }
    let mut needed = vec![
        (opcode::Write::CODE, "IORING_OP_WRITE"),
        (opcode::Fsync::CODE, "IORING_OP_FSYNC"),
    ];
    if fixed_buffers {
        needed.push((opcode::WriteFixed::CODE, "IORING_OP_WRITE_FIXED"));
    }
    match needed
        .into_iter()
        .find(|(code, _)| !probe.is_supported(*code))
    {
        Some((_, name)) => Err(UringError::Unavailable {
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("the kernel's io_uring lacks {name}"),
            ),
        }),
        None => Ok(()),
    }
}

/// The block size and buffer alignment of direct I/O in `dir`, after checking that its file
/// system accepts `O_DIRECT` (on the lock file, which is always there).
fn direct_alignment(dir: &Path) -> Result<(usize, usize), UringError> {
    probe_direct(&dir.join(names::LOCK_FILE))
}

/// The block size and buffer alignment of direct I/O on `file`'s file system, after opening it
/// with `O_DIRECT`.
fn probe_direct(file: &Path) -> Result<(usize, usize), UringError> {
    let (block, memory) = direct::alignment(file)?;
    rustix::fs::open(
        file,
        OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| open_error(file, None, true, e.into()))?;
    Ok((block, memory.max(block).max(direct::DEFAULT_BLOCK)))
}

impl ErrorType for UringStorage {
    type Error = UringError;
}

impl SegmentStorage for UringStorage {
    /// Writes and syncs are queued for the ring (given to the kernel at the next poll or wait);
    /// creates, deletes and namespace syncs are done at once with the file backend's code.
    /// Never fails to start: every error is reported as the operation's completion.
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), UringError> {
        match op {
            SegmentOp::Write {
                segment,
                offset,
                data,
                sync,
            } => self.write(token, segment, offset, data, sync),
            SegmentOp::Sync { segment } => self.sync(token, segment),
            SegmentOp::Create { segment, .. } | SegmentOp::Delete { segment } => {
                // A segment created again (after a cut) is a new file: the ring's old one goes.
                self.forget(segment);
                if let Err(e) = self.by_file_backend(token, op) {
                    self.ready.push_back((token, Err(e)));
                }
            }
            SegmentOp::SyncNamespace => {
                if let Err(e) = self.by_file_backend(token, op) {
                    self.ready.push_back((token, Err(e)));
                }
            }
        }
        Ok(())
    }

    fn poll_completion(&mut self) -> Option<Completion<UringError>> {
        if self.ready.is_empty() {
            self.progress();
        }
        self.ready.pop_front()
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, UringError> {
        Ok(self.files.read_at(segment, offset, buf)?)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, UringError> {
        Ok(self.files.list(out)?)
    }

    fn wait_for_completion(&mut self) -> Result<(), UringError> {
        self.wait()
    }
}

impl Drop for UringStorage {
    /// Waits for the kernel to answer for every entry it was given, so that no buffer it may
    /// still read is freed; if waiting fails, those buffers are leaked instead.
    fn drop(&mut self) {
        // Deferred jobs were accepted as if queued for the ring: they go to it now.
        self.pass_deferred();
        self.release();
        self.draining = true;
        // Jobs never given to the ring have no entry the kernel could read.
        for id in std::mem::take(&mut self.held) {
            self.jobs.remove(&id);
        }
        while !self.jobs.is_empty() {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if retryable(&e) => {}
                Err(_) => {
                    for (_, job) in self.jobs.drain() {
                        std::mem::forget(job);
                    }
                    break;
                }
            }
            self.reap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_system_that_refuses_o_direct_is_a_clear_error() {
        // procfs has no direct I/O: the kernel refuses the open with EINVAL.
        let proc_file = Path::new("/proc/self/status");
        let e = probe_direct(proc_file).unwrap_err();
        assert!(matches!(e, UringError::DirectUnsupported { .. }), "{e:?}");
        assert_eq!(e.path(), Some(proc_file));
        assert!(e.to_string().contains("O_DIRECT is refused"), "{e}");
        // The disk this builds on takes it.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let file = dir.path().join("probe");
        std::fs::write(&file, b"x").unwrap();
        let (block, align) = probe_direct(&file).unwrap();
        assert!(block.is_power_of_two() && align >= 4096 && align >= block);
    }

    #[test]
    fn a_split_write_ends_once_with_the_first_error_of_its_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = UringStorage::open(dir.path(), Options::new()).unwrap();
        let group = |then_sync| Group {
            token: 9,
            parts: 2,
            error: None,
            then_sync,
        };
        s.groups.insert(1, group(None));
        let e = || UringError::io(Op::Write, dir.path(), None, Errno::IO.into());
        s.finish(Some(1), 9, Err(e()));
        assert!(s.ready.is_empty(), "one part is still out");
        assert_eq!(s.in_flight(), 1);
        s.finish(Some(1), 9, Ok(()));
        let (token, result) = s.ready.pop_front().unwrap();
        assert_eq!(token, 9);
        assert!(matches!(result, Err(UringError::Io { op: Op::Write, .. })));
        assert!(s.groups.is_empty() && s.ready.is_empty());
        // A linked write whose parts fail never gets its fsync.
        let file = Arc::new(SegFile {
            fd: rustix::fs::open(dir.path(), OFlags::RDONLY, Mode::empty()).unwrap(),
            slot: None,
            path: dir.path().to_path_buf(),
            segment: SegmentId(0),
        });
        s.groups.insert(2, group(Some(file)));
        s.finish(Some(2), 9, Ok(()));
        s.finish(Some(2), 9, Err(e()));
        assert!(s.jobs.is_empty(), "no fsync after a failed part");
        assert!(matches!(s.ready.pop_front(), Some((9, Err(_)))));
    }

    #[test]
    fn the_storage_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<UringStorage>();
    }
}
