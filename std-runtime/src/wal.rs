//! [`WriteAheadLog`]: one log with a single owner, blocking, on any [`SegmentStorage`].

use crate::Error;
use crate::driver::Driver;
use crate::options::Options;
use crate::read;
use crate::seed::random_u64;
use crate::tail::Tail;
use crate::watch::Publisher;
use lamina_core::commit::{AppendError, Pipeline};
use lamina_core::decode::min_window;
use lamina_core::io::{SegmentOp, SegmentStorage};
use lamina_core::recover::{self, RecoverError, RecoveryReport, Replay};
use lamina_core::segment::SegmentHeader;
use lamina_core::{Lsn, SegmentId};
use self_cell::{MutBorrow, self_cell};
use std::time::Instant;

/// Batches between being cut and being durable, at most (`Config::max_writes_in_flight` must not
/// exceed it).
const SLOTS: usize = 16;

/// Rounds of the I/O loop in a row that may see nothing happen before the backend counts as
/// stalled. A blocking backend completes at once; one that completes later (the simulated device
/// landing a short write) gets this many chances, with a yield between them; one whose
/// `wait_for_completion` blocks until an operation ends (io_uring) makes progress after each.
pub(crate) const STALL_ROUNDS: u32 = 100_000;

/// Tokens of the log's own deletes and namespace syncs count down from here; the pipeline's
/// count up from 1.
const OWN_TOKENS: u64 = u64::MAX;

pub(crate) type Pipe<'b> = Pipeline<'b, SLOTS>;

self_cell!(
    /// The pipeline together with the buffer it borrows.
    pub(crate) struct PipelineCell {
        owner: MutBorrow<Box<[u8]>>,
        #[covariant]
        dependent: Pipe,
    }
);

/// A write-ahead log with a single owner.
///
/// `append` frames a record into the log's buffer and returns its LSN; it writes a batch only when
/// the sync policy cuts one. `sync` writes the rest, syncs, and returns once everything appended
/// is durable. `read_from` reads durable records back; `truncate_before` deletes old segments.
///
/// After a write or sync fails the log is poisoned: every call answers [`Error::Poisoned`] with
/// the original failure, and nothing more becomes durable. Reopen it: recovery keeps every record
/// acknowledged before the failure.
///
/// Dropping the log without [`Self::close`] is a crash as far as the log can tell: records not
/// yet synced may be lost, and the next open recovers.
pub struct WriteAheadLog<S: SegmentStorage> {
    pub(crate) cell: PipelineCell,
    pub(crate) storage: S,
    pub(crate) driver: Driver,
    pub(crate) max_payload: u32,
    /// The largest payload reads must hold: `max_payload`, or a larger record recovery found
    /// (written while the log had a larger `max_payload`).
    pub(crate) read_payload: u32,
    /// The damage recovery stepped over (in `SkipCorrupt`): reads step over it again.
    pub(crate) mode: read::Stepped,
    /// The durable LSN, published to tails.
    pub(crate) watch: Publisher,
}

impl<S: SegmentStorage> WriteAheadLog<S> {
    /// Opens the log in `storage`: recovers it (in `options.mode`), deletes the segments recovery
    /// says to discard, and continues it; on empty storage, creates a new log. On return what
    /// recovery found is durable and appends can start. Also returns what recovery found (a torn
    /// tail is cut and reported there, not an error).
    ///
    /// # Errors
    /// [`Error::Config`] for options that cannot work (checked before anything is read),
    /// [`Error::Recover`] when recovery stops, [`Error::Storage`] when the segments cannot be
    /// listed, [`Error::Poisoned`] or [`Error::Stalled`] when the first sync fails.
    pub fn open_with(mut storage: S, options: Options) -> Result<(Self, RecoveryReport), Error> {
        let mut config = options.config;
        config.nonce_seed = random_u64();
        let log_id = options.log_id.unwrap_or_else(random_u64);
        let first = SegmentHeader {
            core: options.core,
            log_id,
            sequence: SegmentId(0),
            nonce: random_u64(),
            first_lsn: Lsn::FIRST,
            epoch: 0,
            prev_nonce: 0,
        };
        let mut buf = vec![0u8; options.buffer_size].into_boxed_slice();
        // Check the configuration before anything is read or deleted.
        Pipe::create(&mut buf, config, first)?;

        let mut ids = read::list(&mut storage)?;
        ids.push(SegmentId(0));
        let max_payload = usize::try_from(config.max_payload).unwrap_or(usize::MAX);
        let mut window = vec![0u8; min_window(max_payload).max(256 * 1024)];
        let started = Instant::now();
        let mut stepped = read::SteppedBuilder::default();
        let mut read_payload = config.max_payload;
        let mut recovered = recover::recover(
            &mut storage,
            &mut ids,
            &mut window,
            options.mode,
            &mut |replayed| {
                if let Replay::Record(r) = replayed {
                    let len = u32::try_from(r.payload.len()).unwrap_or(u32::MAX);
                    read_payload = read_payload.max(len);
                }
                stepped.replayed(replayed);
            },
        )
        .map_err(|e| Error::Recover {
            detail: e.to_string(),
            segment: e.segment(),
            damage: match e {
                RecoverError::Corrupt(d) => Some(Box::new(d)),
                _ => None,
            },
        })?;
        if let Some(from) = recovered.report.discard_from {
            recover::discard(&mut storage, &mut ids, from).map_err(|e| Error::Recover {
                detail: format!("discarding the segments from {from} on: {e}"),
                segment: e.segment(),
                damage: None,
            })?;
        }
        recovered.report.elapsed = started.elapsed();
        let cell = PipelineCell::try_new(MutBorrow::new(buf), |buf| {
            let buf = &mut **buf.borrow_mut();
            match recovered.resume {
                Some(resume) => Pipe::resume(buf, config, resume),
                None => Pipe::create(buf, config, first),
            }
        })?;
        let mut log = WriteAheadLog {
            watch: Publisher::new(cell.borrow_dependent().durable_lsn()),
            cell,
            storage,
            driver: Driver::default(),
            max_payload: config.max_payload,
            read_payload,
            mode: stepped.build(options.mode),
        };
        // The recovery sync, or the first segment's creation.
        log.drive_until(|p| p.is_idle())?;
        Ok((log, recovered.report))
    }

    /// Appends a data record and returns its LSN. It is durable once [`Self::durable_lsn`]
    /// reaches it, at the latest when [`Self::sync`] returns. No I/O unless the sync policy cuts
    /// a batch (or the buffer is full: then it writes and waits for room).
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::TooLarge`], [`Error::LsnExhausted`], [`Error::Stalled`].
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn, Error> {
        self.append_with(|p| p.append(payload, 0))
    }

    /// Appends an epoch marker (record kind 2): records after it belong to `epoch`, and so do
    /// segments started after it (their header's `epoch`). Whether epochs increase is the
    /// caller's business (`CoreWalWriter::begin_epoch` checks it).
    ///
    /// # Errors
    /// As [`Self::append`].
    pub(crate) fn append_epoch(&mut self, epoch: u64) -> Result<Lsn, Error> {
        self.append_with(|p| p.append_epoch(epoch, 0))
    }

    /// Frames a record with `frame`, waiting for room when the buffer is full.
    fn append_with(
        &mut self,
        mut frame: impl FnMut(&mut Pipe<'_>) -> Result<Lsn, AppendError>,
    ) -> Result<Lsn, Error> {
        self.check()?;
        let mut idle = 0;
        loop {
            match self.cell.with_dependent_mut(|_, p| frame(p)) {
                Ok(lsn) => {
                    // An append that cut no batch has nothing to drive: skipping the round is
                    // a fifth of a small append's time.
                    if self.cell.borrow_dependent().io_pending() {
                        self.round();
                    }
                    return Ok(lsn);
                }
                Err(AppendError::Full) => {
                    // Cut what is buffered and wait until a write completes and frees room.
                    self.cell.with_dependent_mut(|_, p| p.flush());
                    if self.round() {
                        idle = 0;
                    } else {
                        idle += 1;
                        self.idle_wait(idle)?;
                    }
                    self.check()?;
                }
                Err(e) => return Err(self.append_error(e)),
            }
        }
    }

    /// Writes everything appended and syncs it; returns the durable LSN: every record appended
    /// before the call is durable through it.
    ///
    /// # Errors
    /// [`Error::Poisoned`] when a write or sync failed, [`Error::Stalled`] when the backend stopped
    /// completing: nothing more than [`Self::durable_lsn`] is durable then.
    pub fn sync(&mut self) -> Result<Lsn, Error> {
        self.check()?;
        let target = self.next_lsn().prev();
        self.drive_until(|p| {
            if p.durable_lsn() >= target {
                return true;
            }
            p.flush();
            false
        })?;
        Ok(self.durable_lsn())
    }

    /// Every record up to this LSN is durable.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.cell.borrow_dependent().durable_lsn()
    }

    /// The LSN the next record is framed with. An append that rolls the segment over gives this
    /// LSN to the seal and takes the one after: use the LSN `append` returns.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.cell.borrow_dependent().next_lsn()
    }

    /// The header of the segment being appended to.
    #[must_use]
    pub fn segment(&self) -> SegmentHeader {
        *self.cell.borrow_dependent().segment()
    }

    /// Hands every durable data record with an LSN from `from` on to `each`, in LSN order, and
    /// returns the LSN after the last one handed over (`from` when there was none). Records below
    /// the oldest segment still held were truncated: reading starts at the oldest record held.
    /// Records appended but not yet durable are not read (call [`Self::sync`] first). A log opened
    /// in `SkipCorrupt` steps over the damaged records recovery stepped over (and reported), and
    /// only those (up to 4096 regions; past that, any damage): damage that appeared after the open
    /// is an error. A segment recovery skipped whole (a damaged header) ends the read with an
    /// error.
    ///
    /// # Errors
    /// [`Error::Poisoned`]; [`Error::Read`] for damage or a read error (the records handed over
    /// before it are valid); [`Error::Storage`] when the segments cannot be listed.
    pub fn read_from(&mut self, from: Lsn, mut each: impl FnMut(Lsn, &[u8])) -> Result<Lsn, Error> {
        self.check()?;
        let upto = self.durable_lsn();
        let mut window = vec![0u8; self.read_window_len()];
        read::read_from(
            &mut self.storage,
            from,
            upto,
            &mut window,
            &self.mode,
            &mut each,
        )
    }

    /// Hands every durable data, epoch and checkpoint record from `from` through `upto` to
    /// `each`, with the epoch each belongs to, reading through `window` (at least
    /// [`Self::read_window_len`] bytes).
    pub(crate) fn read_records(
        &mut self,
        from: Lsn,
        upto: Lsn,
        window: &mut [u8],
        each: &mut dyn FnMut(read::Entry<'_>),
    ) -> Result<(), Error> {
        self.check()?;
        let upto = upto.min(self.durable_lsn());
        read::read_records(&mut self.storage, from, upto, window, &self.mode, each)
    }

    /// The window [`Self::read_records`] needs: room for the largest frame.
    pub(crate) fn read_window_len(&self) -> usize {
        let max_payload = usize::try_from(self.read_payload).unwrap_or(usize::MAX);
        min_window(max_payload).max(64 * 1024)
    }

    /// A [`Tail`] of this log from `from`, reading through `reader`, a read-only view of this
    /// log's storage (`FileStorage::reader`, for the file backend `tail` does it): a reader that
    /// may move to another thread and follows the log while this owner appends and syncs, handing
    /// out each data record once it is durable. Records below `from` are skipped (`Lsn::ZERO`
    /// starts at the oldest record held); in a log opened in `SkipCorrupt`, so are the damaged
    /// records recovery stepped over.
    ///
    /// # Errors
    /// [`Error::Truncated`] when `from` is below the oldest record held; [`Error::Read`] when the
    /// reader shows another log's segments; [`Error::Storage`] when it cannot list them.
    pub fn tail_with<R: SegmentStorage>(&self, reader: R, from: Lsn) -> Result<Tail<R>, Error> {
        let header = self.segment();
        let watch = self.watch.watch();
        let (id, core, max_payload) = (header.log_id, header.core, self.read_payload);
        Tail::new(
            reader,
            watch,
            from,
            id,
            core,
            max_payload,
            self.mode.clone(),
        )
    }

    /// Deletes the whole segments whose records all lie below `lsn` (never the segment being
    /// appended to), oldest first, and makes the deletes durable. Makes everything appended
    /// durable first. Returns how many segments were deleted.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Stalled`] from the sync; [`Error::Storage`] when a delete or
    /// the namespace sync fails (the segments before the failing one are deleted, the log stays
    /// usable).
    pub fn truncate_before(&mut self, lsn: Lsn) -> Result<usize, Error> {
        self.sync()?;
        // Nothing is in flight now: every completion the storage reports is one of ours.
        self.drive_until(|p| p.is_idle())?;
        let lsn = lsn.min(self.durable_lsn().next());
        let current = self.segment().sequence;
        let ids = read::list(&mut self.storage)?;
        let mut doomed = Vec::new();
        for pair in ids.windows(2) {
            let [old, successor] = [pair[0], pair[1]];
            if old >= current {
                break;
            }
            match read::header(&mut self.storage, successor)? {
                Some(h) if h.first_lsn <= lsn => doomed.push(old),
                _ => break,
            }
        }
        let mut deleted = 0;
        let mut token = OWN_TOKENS;
        for segment in &doomed {
            self.own_op(token, SegmentOp::Delete { segment: *segment }, || {
                format!("deleting segment {segment}")
            })?;
            token -= 1;
            deleted += 1;
        }
        if deleted > 0 {
            self.own_op(token, SegmentOp::SyncNamespace, || {
                "syncing the namespace after deleting segments".into()
            })?;
        }
        Ok(deleted)
    }

    /// Closes the log: everything appended is made durable and a seal that vouches for it is
    /// written, so the next open continues in a new segment. Returns the seal's LSN.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Stalled`].
    pub fn close(self) -> Result<Lsn, Error> {
        self.close_into_storage().0
    }

    /// [`Self::close`], then gives the storage back (also when the close failed), to reopen it.
    pub fn close_into_storage(mut self) -> (Result<Lsn, Error>, S) {
        let result = self.close_inner();
        (result, self.storage)
    }

    /// Gives the storage back without closing the log: what was not synced may be lost, as in a
    /// crash, and the next open recovers.
    #[must_use]
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// The storage, to look at.
    #[must_use]
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The storage, to change its settings (a fault to inject, a test's knobs). Submitting
    /// operations or changing segments through it breaks the log's view of them.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    fn close_inner(&mut self) -> Result<Lsn, Error> {
        self.check()?;
        if self.cell.with_dependent_mut(|_, p| p.close()).is_err() {
            // Only a poisoned (or already closed) pipeline refuses to close.
            self.check()?;
        }
        self.drive_until(|_| false).or_else(|e| match e {
            Error::Stalled { .. } => Ok(()),
            e => Err(e),
        })?;
        self.check()?;
        self.driver.closed.ok_or(Error::Stalled {
            durable: self.durable_lsn(),
            wanted: self.next_lsn(),
        })
    }

    /// One round of the I/O loop; whether anything happened.
    fn round(&mut self) -> bool {
        let (driver, storage) = (&mut self.driver, &mut self.storage);
        let progressed = self
            .cell
            .with_dependent_mut(|_, p| driver.round(p, storage));
        self.publish_to_tails();
        progressed
    }

    /// A round for a caller that blocks until something ends anyway: what it submits is waited
    /// for before the storage is polled, so a backend that runs what a waiter waits for on the
    /// waiter's own thread can (io_uring's syncs and buffered writes, which the kernel would
    /// otherwise hand to a worker thread). A backend that completes inside `submit` returns
    /// from the wait at once.
    fn waiting_round(&mut self) -> Result<bool, Error> {
        let (driver, storage) = (&mut self.driver, &mut self.storage);
        let submitted = self
            .cell
            .with_dependent_mut(|_, p| driver.submit(p, storage));
        if submitted > 0 {
            storage
                .wait_for_completion()
                .map_err(|e| crate::driver::wait_error(&e))?;
        }
        let ended = self
            .cell
            .with_dependent_mut(|_, p| driver.complete(p, storage) + driver.events(p));
        self.publish_to_tails();
        Ok(submitted + ended > 0)
    }

    /// Tails learn what is durable, or that nothing more will be: after each round that may
    /// have fed completions back.
    pub(crate) fn publish_to_tails(&mut self) {
        self.watch.publish(self.durable_lsn());
        if !self.watch.ended()
            && let Err(poisoned) = self.check()
        {
            self.watch.end(poisoned);
        }
    }

    /// Runs the I/O loop until `done` says so (it may ask the pipeline for more, e.g. a flush),
    /// the log is poisoned, or the backend stalls. Stops at once after a close finished.
    fn drive_until(&mut self, mut done: impl FnMut(&mut Pipe<'_>) -> bool) -> Result<(), Error> {
        let mut idle = 0;
        loop {
            self.check()?;
            if self.driver.closed.is_some() || self.cell.with_dependent_mut(|_, p| done(p)) {
                return Ok(());
            }
            if self.waiting_round()? {
                idle = 0;
            } else {
                idle += 1;
                self.idle_wait(idle)?;
            }
        }
    }

    /// After `idle` rounds in a row without progress: waits for the storage to complete an
    /// operation in flight (a backend that completes later blocks there instead of the loop
    /// spinning; one that completes inside `submit` returns at once), from the second such round
    /// on also yields, or reports a stall. A round after a wait that blocked sees the completion, so only a backend that
    /// returns at once with nothing done counts up to a stall.
    fn idle_wait(&mut self, idle: u32) -> Result<(), Error> {
        if idle > STALL_ROUNDS {
            return Err(Error::Stalled {
                durable: self.durable_lsn(),
                wanted: self.next_lsn().prev(),
            });
        }
        self.storage
            .wait_for_completion()
            .map_err(|e| crate::driver::wait_error(&e))?;
        if idle > 1 {
            // The last wait returned with nothing done: let the backend (or whatever completes
            // its operations) run. After a first wait, which a backend like io_uring blocks in
            // until an operation ends, yielding would only queue the log behind every other
            // runnable thread of the machine.
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Runs one operation of the log's own to its end.
    fn own_op(
        &mut self,
        token: u64,
        op: SegmentOp<'_>,
        what: impl Fn() -> String,
    ) -> Result<(), Error> {
        let storage_error = |detail: String| Error::Storage { op: what(), detail };
        self.storage
            .submit(token, op)
            .map_err(|e| storage_error(format!("{e:?}")))?;
        let mut idle = 0;
        loop {
            match self.storage.poll_completion() {
                Some((t, result)) if t == token => {
                    return result.map_err(|e| storage_error(format!("{e:?}")));
                }
                // The pipeline was idle, so nothing else can complete; a stray token is the
                // backend's bug and is ignored.
                Some(_) => idle = 0,
                None => {
                    idle += 1;
                    if idle > STALL_ROUNDS {
                        return Err(storage_error("the operation never completed".into()));
                    }
                    self.storage
                        .wait_for_completion()
                        .map_err(|e| storage_error(format!("waiting for it: {e:?}")))?;
                    std::thread::yield_now();
                }
            }
        }
    }

    /// `Err(Poisoned)` once a write or sync failed.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match self.cell.borrow_dependent().poisoned() {
            Some(poison) => Err(self.driver.poisoned(poison)),
            None => Ok(()),
        }
    }

    fn append_error(&self, e: AppendError) -> Error {
        self.driver.append_error(e, self.max_payload)
    }
}
