//! [`SharedLog`]: a log many threads append to and wait on, with leader-based group commit.

use crate::read;
use crate::relay::Relay;
use crate::slot::Slot;
use crate::wal::{Pipe, STALL_ROUNDS};
use crate::{Error, Tail, WriteAheadLog};
use lamina_core::Lsn;
use lamina_core::commit::AppendError;
use lamina_core::io::SegmentStorage;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A handle to a log shared by many threads (`Clone + Send + Sync` when the storage is `Send`):
/// each thread appends, and waits until its record is durable.
///
/// **The guarantee**: when [`Self::commit`] or [`Self::wait_durable`] returns `Ok`, the record
/// (every record up to the LSN) is durable: a power cut after it cannot lose it. [`Self::append`]
/// alone only buffers.
///
/// **Group commit by a leader.** The pipeline (framing, batches, which writes a sync covers) sits
/// behind a mutex; the storage is touched only by the current leader, with the mutex released,
/// so other threads keep appending while a write or an fdatasync runs. A thread that waits for an
/// LSN not yet durable, and finds no leader, becomes the leader and runs rounds: under the lock it
/// feeds back the completions of the last round, publishes the durable LSN and wakes the waiters,
/// then takes the pipeline's next requests (copying the bytes to write); without the lock it runs
/// them on the storage and collects their completions. A round either syncs the writes completed
/// so far (one fdatasync at a time, covering every write completed before it was issued) or, when
/// there is nothing to sync, cuts and writes everything appended since the last round, so a sync
/// covers the records of every thread that appended before its write: the more threads commit at
/// once, the fewer syncs per commit ([`Self::syncs`]). The leader stops once its own LSN is
/// durable and hands over to a thread still waiting.
///
/// After a write or sync fails, every call on every handle answers [`Error::Poisoned`] with the
/// original failure, and every waiter wakes with it; reopen the log (recovery keeps every
/// acknowledged record). A thread that panics while leading wakes the others, who get
/// [`Error::Panicked`].
///
/// Only the last handle closes the log ([`Self::close`]). Dropping the last handle without
/// closing is a crash as far as the log can tell: records not yet durable may be lost.
pub struct SharedLog<S: SegmentStorage> {
    shared: Arc<Shared<S>>,
}

impl<S: SegmentStorage> Clone for SharedLog<S> {
    fn clone(&self) -> Self {
        SharedLog {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<S: SegmentStorage> {
    state: Mutex<State<S>>,
    /// Signalled when the durable LSN moves, the log breaks, or a leader steps down.
    turn: Condvar,
    /// The durable LSN, published by the leader.
    durable: AtomicU64,
    /// Data syncs completed.
    syncs: AtomicU64,
    /// Poisoned, or lost to a panic: the fast path of `wait_durable` must not answer `Ok`.
    broken: AtomicBool,
}

/// Fields drop in order: the storage (in `log`) before the relay's buffers it may still read.
struct State<S: SegmentStorage> {
    /// The log; its storage is out of the slot while a leader holds it.
    log: WriteAheadLog<Slot<S>>,
    /// The relay, with the buffers of operations in flight, kept between leaders.
    relay: Relay,
    /// A thread holds the storage and runs the I/O.
    leader: bool,
    /// A leader panicked holding the storage: nothing more can be done.
    lost: bool,
}

/// What only the leader touches. The storage drops before the relay's buffers it may still read.
struct Io<S> {
    storage: S,
    relay: Relay,
}

impl<S: SegmentStorage> State<S> {
    fn check(&self) -> Result<(), Error> {
        if self.lost {
            return Err(Error::Panicked);
        }
        self.log.check()
    }

    fn pipe(&self) -> &Pipe<'_> {
        self.log.cell.borrow_dependent()
    }

    /// The error of a storage that completed nothing for [`STALL_ROUNDS`] rounds in a row.
    fn stalled(&self) -> Error {
        let p = self.pipe();
        Error::Stalled {
            durable: p.durable_lsn(),
            wanted: p.next_lsn().prev(),
        }
    }

    /// Takes the storage (and the relay) out, to lead.
    fn take_io(&mut self) -> Result<Io<S>, Error> {
        let storage = self.log.storage.0.take().ok_or(Error::Panicked)?;
        self.leader = true;
        Ok(Io {
            storage,
            relay: std::mem::take(&mut self.relay),
        })
    }

    /// With the storage in its slot: polls it until nothing submitted through the relay is in
    /// flight, feeding the completions back, so that the single-owner code on the log sees every
    /// completion itself and the relay's buffers are no longer read.
    fn settle(&mut self, syncs: &AtomicU64) -> Result<(), Error> {
        let mut idle = 0u32;
        loop {
            let (log, relay) = (&mut self.log, &mut self.relay);
            log.cell
                .with_dependent_mut(|_, p| log.driver.complete(p, relay) + log.driver.events(p));
            if !relay.has_in_flight() {
                return Ok(());
            }
            let storage = log.storage.0.as_mut().ok_or(Error::Panicked)?;
            relay
                .wait(storage)
                .map_err(|e| crate::driver::wait_error(&e))?;
            let (completed, synced) = relay.run(storage);
            syncs.fetch_add(synced, Ordering::Relaxed);
            if completed > 0 {
                idle = 0;
            } else {
                idle += 1;
                if idle > STALL_ROUNDS {
                    return Err(self.stalled());
                }
                std::thread::yield_now();
            }
        }
    }

    /// `Some` once every record through `lsn` is durable.
    fn durable_through(&self, lsn: Lsn) -> Option<Result<Lsn, Error>> {
        let durable = self.pipe().durable_lsn();
        (durable >= lsn).then_some(Ok(durable))
    }
}

/// Clears the leader flag and wakes the waiters however leadership ends. Without
/// [`Self::resign`] (a panic, a poisoned mutex) the storage is taken to be lost.
struct Leadership<'a, S: SegmentStorage> {
    shared: &'a Shared<S>,
    resigned: bool,
}

impl<S: SegmentStorage> Leadership<'_, S> {
    fn resign(&mut self, state: &mut State<S>, io: Io<S>) {
        state.log.storage.0 = Some(io.storage);
        state.relay = io.relay;
        state.leader = false;
        self.resigned = true;
        self.shared.turn.notify_all();
    }
}

impl<S: SegmentStorage> Drop for Leadership<'_, S> {
    fn drop(&mut self) {
        if self.resigned {
            return;
        }
        // The caller's guard of the state lock is dropped before this one (declared later).
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.leader = false;
        state.lost = true;
        // Nothing more becomes durable: tails end after what is, instead of waiting forever
        // while other handles live.
        state.log.watch.end(Error::Panicked);
        drop(state);
        self.shared.broken.store(true, Ordering::Release);
        self.shared.turn.notify_all();
    }
}

impl<S: SegmentStorage + Send> SharedLog<S> {
    /// Takes over an opened log.
    #[must_use]
    pub fn new(log: WriteAheadLog<S>) -> Self {
        let WriteAheadLog {
            cell,
            storage,
            driver,
            max_payload,
            read_payload,
            mode,
            watch,
        } = log;
        let durable = cell.borrow_dependent().durable_lsn();
        let broken = cell.borrow_dependent().poisoned().is_some();
        let log = WriteAheadLog {
            cell,
            storage: Slot(Some(storage)),
            driver,
            max_payload,
            read_payload,
            mode,
            watch,
        };
        SharedLog {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    log,
                    relay: Relay::default(),
                    leader: false,
                    lost: false,
                }),
                turn: Condvar::new(),
                durable: AtomicU64::new(durable.0),
                syncs: AtomicU64::new(0),
                broken: AtomicBool::new(broken),
            }),
        }
    }

    /// Appends a data record and returns its LSN. Buffered: no I/O unless the buffer is full
    /// (then it frees room as the leader, or waits for the leader to, and retries).
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::TooLarge`], [`Error::LsnExhausted`], [`Error::Stalled`],
    /// [`Error::Panicked`].
    pub fn append(&self, payload: &[u8]) -> Result<Lsn, Error> {
        let state = self.lock()?;
        self.drive_until(state, |state| {
            let log = &mut state.log;
            match log.cell.with_dependent_mut(|_, p| p.append(payload, 0)) {
                Ok(lsn) => Some(Ok(lsn)),
                // The pipeline cut the open batch: room comes once it is durable.
                Err(AppendError::Full) => None,
                Err(e) => Some(Err(log.driver.append_error(e, log.max_payload))),
            }
        })
    }

    /// Returns once every record through `lsn` is durable; returns the durable LSN (at least
    /// `lsn`).
    ///
    /// # Errors
    /// [`Error::NotAppended`] for an LSN no append returned yet; [`Error::Poisoned`] when a write
    /// or sync failed, [`Error::Stalled`] when the storage stopped completing,
    /// [`Error::Panicked`]: nothing more than [`Self::durable_lsn`] is durable then.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<Lsn, Error> {
        let durable = self.durable_lsn();
        if durable >= lsn && !self.shared.broken.load(Ordering::Acquire) {
            return Ok(durable);
        }
        let state = self.lock()?;
        state.check()?;
        let next = state.pipe().next_lsn();
        if lsn >= next {
            return Err(Error::NotAppended { lsn, next });
        }
        self.drive_until(state, |state| state.durable_through(lsn))
    }

    /// Appends a record and waits until it is durable; returns its LSN.
    ///
    /// # Errors
    /// What [`Self::append`] and [`Self::wait_durable`] return.
    pub fn commit(&self, payload: &[u8]) -> Result<Lsn, Error> {
        let lsn = self.append(payload)?;
        self.wait_durable(lsn)?;
        Ok(lsn)
    }

    /// Makes every record appended before the call durable; returns the durable LSN.
    ///
    /// # Errors
    /// What [`Self::wait_durable`] returns.
    pub fn sync(&self) -> Result<Lsn, Error> {
        let state = self.lock()?;
        state.check()?;
        let target = state.pipe().next_lsn().prev();
        self.drive_until(state, |state| state.durable_through(target))
    }

    /// Every record up to this LSN is durable. Cheap: one atomic load.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.shared.durable.load(Ordering::Acquire))
    }

    /// How many data syncs (fdatasyncs, or linked writes) completed through this log since
    /// [`Self::new`]: with [`Self::commit`]s counted alongside, the syncs per commit.
    #[must_use]
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Hands every durable data record with an LSN from `from` on to `each`, in LSN order, and
    /// returns the LSN after the last one handed over, like [`WriteAheadLog::read_from`]. This
    /// thread holds the storage meanwhile (appends go on while the buffer has room; syncs wait):
    /// `each` must not wait for durability on this log, nor append to it (an append that finds
    /// the buffer full waits for the storage), or it waits for itself. A panic in `each` is
    /// passed on, and the log goes on.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Panicked`]; [`Error::Read`] for damage or a read error;
    /// [`Error::Storage`] when the segments cannot be listed.
    pub fn read_from(&self, from: Lsn, mut each: impl FnMut(Lsn, &[u8])) -> Result<Lsn, Error> {
        let mut state = self.without_leader()?;
        let mut io = state.take_io()?;
        let mut leadership = Leadership {
            shared: &self.shared,
            resigned: false,
        };
        let state = state;
        let upto = state.pipe().durable_lsn();
        let mode = state.log.mode.clone();
        let mut window = vec![0u8; state.log.read_window_len()];
        drop(state);
        // A panic in `each` leaves the storage as it was (reads change nothing): give it back
        // before passing the panic on, so the log goes on.
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            read::read_from(&mut io.storage, from, upto, &mut window, &mode, &mut each)
        }));
        leadership.resign(&mut *self.lock()?, io);
        // The lock is released: unwinding with it held would poison it.
        result.unwrap_or_else(|payload| panic::resume_unwind(payload))
    }

    /// [`WriteAheadLog::tail_with`]: a [`Tail`] of the shared log from `from`, reading through
    /// `reader` (for the file backend, `lamina_file::FileReader::open(dir)`), that follows it on
    /// another thread, handing out each record once a leader's sync made it durable.
    ///
    /// # Errors
    /// What [`WriteAheadLog::tail_with`] returns; [`Error::Panicked`].
    pub fn tail_with<R: SegmentStorage>(&self, reader: R, from: Lsn) -> Result<Tail<R>, Error> {
        // The reader's I/O (and a panic in it) happens without the lock: it neither holds up the
        // appenders nor poisons the log.
        let (header, watch, max_payload, mode) = {
            let state = self.lock()?;
            let log = &state.log;
            (
                log.segment(),
                log.watch.watch(),
                log.read_payload,
                log.mode.clone(),
            )
        };
        Tail::new(
            reader,
            watch,
            from,
            header.log_id,
            header.core,
            max_payload,
            mode,
        )
    }

    /// Deletes the whole segments whose records all lie below `lsn`, like
    /// [`WriteAheadLog::truncate_before`]: makes everything appended durable, deletes, and makes
    /// the deletes durable; returns how many segments were deleted. It holds the lock meanwhile,
    /// so calls on other handles wait for it (a sync, a few deletes and a directory sync). Its
    /// sync is not counted in [`Self::syncs`].
    ///
    /// # Errors
    /// What [`WriteAheadLog::truncate_before`] returns, and [`Error::Panicked`].
    pub fn truncate_before(&self, lsn: Lsn) -> Result<usize, Error> {
        let mut state = self.without_leader()?;
        let state = &mut *state;
        // With no leader the storage is in its slot, and once nothing the leaders submitted is
        // in flight the single-owner code runs on it.
        let settled = state.settle(&self.shared.syncs);
        self.publish(state);
        settled?;
        let deleted = state.log.truncate_before(lsn);
        self.publish(state);
        deleted
    }

    /// Closes the log, when this is the last handle: everything appended is made durable and a
    /// seal is written (see [`WriteAheadLog::close`]); returns the seal's LSN.
    ///
    /// # Errors
    /// [`Error::HandlesAlive`] when other handles are alive (this one is dropped; the log goes
    /// on); then what [`WriteAheadLog::close`] returns, and [`Error::Panicked`].
    pub fn close(self) -> Result<Lsn, Error> {
        self.into_log()?.close()
    }

    /// Gives the log back to a single owner, when this is the last handle, without closing it
    /// (for example to take its storage back with [`WriteAheadLog::into_storage`]).
    ///
    /// # Errors
    /// [`Error::HandlesAlive`] when other handles are alive (this one is dropped);
    /// [`Error::Panicked`] when a leader panicked and the storage went with it;
    /// [`Error::Stalled`] when operations in flight never complete.
    pub fn into_log(self) -> Result<WriteAheadLog<S>, Error> {
        let Shared { state, syncs, .. } =
            Arc::try_unwrap(self.shared).map_err(|shared| Error::HandlesAlive {
                others: Arc::strong_count(&shared).saturating_sub(1),
            })?;
        let mut state = state.into_inner().map_err(|_| Error::Panicked)?;
        // The single owner polls the storage itself from now on. What the settling made durable
        // reaches the tails, also when the log is dropped right after.
        let settled = state.settle(&syncs);
        state.log.publish_to_tails();
        settled?;
        let WriteAheadLog {
            cell,
            storage,
            driver,
            max_payload,
            read_payload,
            mode,
            watch,
        } = state.log;
        let storage = storage.0.ok_or(Error::Panicked)?;
        Ok(WriteAheadLog {
            cell,
            storage,
            driver,
            max_payload,
            read_payload,
            mode,
            watch,
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State<S>>, Error> {
        self.shared.state.lock().map_err(|_| Error::Panicked)
    }

    /// The lock, once no leader holds the storage.
    fn without_leader(&self) -> Result<MutexGuard<'_, State<S>>, Error> {
        let mut state = self.lock()?;
        loop {
            state.check()?;
            if !state.leader {
                return Ok(state);
            }
            state = self.wait(state)?;
        }
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State<S>>) -> Result<MutexGuard<'a, State<S>>, Error> {
        self.shared.turn.wait(state).map_err(|_| Error::Panicked)
    }

    /// Asks `done` under the lock until it answers: after each change while another thread
    /// leads, or after each round of I/O when this thread leads.
    fn drive_until<R>(
        &self,
        mut state: MutexGuard<'_, State<S>>,
        mut done: impl FnMut(&mut State<S>) -> Option<Result<R, Error>>,
    ) -> Result<R, Error> {
        loop {
            state.check()?;
            if let Some(answer) = done(&mut state) {
                return answer;
            }
            if !state.leader {
                return self.lead(state, &mut done);
            }
            state = self.wait(state)?;
        }
    }

    /// Leads until `done` answers: rounds of (under the lock) feeding completions back, reading
    /// events, cutting the open batch and taking the requests, then (without it) running them on
    /// the storage.
    fn lead<R>(
        &self,
        mut state: MutexGuard<'_, State<S>>,
        done: &mut impl FnMut(&mut State<S>) -> Option<Result<R, Error>>,
    ) -> Result<R, Error> {
        let mut io = state.take_io()?;
        let mut leadership = Leadership {
            shared: &self.shared,
            resigned: false,
        };
        // Declared after `leadership`, so an unwind releases the lock before its drop locks.
        let mut state = state;
        let mut idle = 0u32;
        let answer = loop {
            let log = &mut state.log;
            let (driver, relay) = (&mut log.driver, &mut io.relay);
            let fed = log
                .cell
                .with_dependent_mut(|_, p| driver.complete(p, relay) + driver.events(p));
            self.publish(&mut state);
            if let Err(e) = state.check() {
                break Err(e);
            }
            if let Some(answer) = done(&mut state) {
                break answer;
            }
            let log = &mut state.log;
            let (driver, relay) = (&mut log.driver, &mut io.relay);
            let submitted = log.cell.with_dependent_mut(|_, p| {
                let mut n = driver.submit(p, relay);
                if !relay.has_sync() {
                    // Whatever was appended since the last round is written in this one. Not
                    // alongside a sync: written after it, it would wait for the next one, so
                    // the sync goes alone and the next round's write takes more records.
                    p.flush();
                    n += driver.submit(p, relay);
                }
                n
            });
            if fed + submitted > 0 {
                idle = 0;
            } else {
                idle += 1;
                if idle > STALL_ROUNDS {
                    break Err(state.stalled());
                }
            }
            drop(state);
            let refused = io.relay.submit_to(&mut io.storage);
            // Nothing changes under the lock until an operation ends: block in the backend
            // until one does (others append meanwhile). A backend that completes later hands
            // what was just submitted to the kernel in the same call that waits; one that
            // completes inside `submit` returns at once.
            let waited = io
                .relay
                .wait(&mut io.storage)
                .map_err(|e| crate::driver::wait_error(&e));
            let (completed, synced) = io.relay.collect(&mut io.storage);
            if refused + completed == 0 {
                // The backend returned from its wait with nothing ended: let it (or whatever
                // completes its operations) run. A wait that blocked until an operation ended
                // (io_uring) goes straight on: yielding then hands the processor to the
                // committers waiting for the lock, and the round waits behind them.
                std::thread::yield_now();
            }
            self.shared.syncs.fetch_add(synced, Ordering::Relaxed);
            state = self.lock()?;
            if let Err(e) = waited {
                break Err(e);
            }
        };
        leadership.resign(&mut state, io);
        answer
    }

    /// Publishes the durable LSN and wakes the waiters when it moved or the log broke.
    fn publish(&self, state: &mut State<S>) {
        state.log.publish_to_tails();
        let p = state.pipe();
        let durable = p.durable_lsn().0;
        let broken = p.poisoned().is_some();
        if broken {
            self.shared.broken.store(true, Ordering::Release);
        }
        let before = self.shared.durable.swap(durable, Ordering::AcqRel);
        if before != durable || broken {
            self.shared.turn.notify_all();
        }
    }
}
