//! [`SharedLog`]: a log many threads append to and wait on, with leader-based group commit.

use crate::driver::Driver;
use crate::read;
use crate::relay::Relay;
use crate::wal::{Pipe, PipelineCell, STALL_ROUNDS};
use crate::{Error, WriteAheadLog};
use lamina_core::Lsn;
use lamina_core::commit::AppendError;
use lamina_core::decode::min_window;
use lamina_core::io::SegmentStorage;
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
/// LSN not yet durable, and finds no leader, becomes the leader: under the lock it cuts what is
/// buffered and takes the pipeline's requests (copying the bytes to write), then without the lock
/// it runs them on the storage and collects the completions, then under the lock again it feeds
/// them back, publishes the durable LSN and wakes the waiters. It repeats until its own LSN is
/// durable, then hands leadership to a thread still waiting. One fdatasync runs at a time and
/// covers every write completed before it was issued, so a sync covers the records of every
/// thread that appended before it: the more threads commit at once, the fewer syncs per commit
/// ([`Self::syncs`]).
///
/// After a write or sync fails, every call on every handle answers [`Error::Poisoned`] with the
/// original failure, and every waiter wakes with it; reopen the log (recovery keeps every
/// acknowledged record). A thread that panics while leading wakes the others, who get
/// [`Error::Panicked`].
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

struct State<S: SegmentStorage> {
    cell: PipelineCell,
    driver: Driver,
    max_payload: u32,
    /// A thread holds the storage and runs the I/O.
    leader: bool,
    /// The storage, when no leader holds it.
    io: Option<Io<S>>,
    /// A leader panicked holding the storage: nothing more can be done.
    lost: bool,
}

/// What only the leader touches.
struct Io<S> {
    storage: S,
    relay: Relay,
}

impl<S: SegmentStorage> State<S> {
    fn check(&self) -> Result<(), Error> {
        if self.lost {
            return Err(Error::Panicked);
        }
        match self.cell.borrow_dependent().poisoned() {
            Some(poison) => Err(self.driver.poisoned(poison)),
            None => Ok(()),
        }
    }

    fn pipe(&self) -> &Pipe<'_> {
        self.cell.borrow_dependent()
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
        state.io = Some(io);
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
        } = log;
        let durable = cell.borrow_dependent().durable_lsn();
        let broken = cell.borrow_dependent().poisoned().is_some();
        SharedLog {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    cell,
                    driver,
                    max_payload,
                    leader: false,
                    io: Some(Io {
                        storage,
                        relay: Relay::default(),
                    }),
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
            match state.cell.with_dependent_mut(|_, p| p.append(payload, 0)) {
                Ok(lsn) => Some(Ok(lsn)),
                // The pipeline cut the open batch: room comes once it is durable.
                Err(AppendError::Full) => None,
                Err(e) => Some(Err(state.driver.append_error(e, state.max_payload))),
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
    /// thread holds the storage meanwhile (appends go on; syncs wait): `each` must not wait for
    /// durability on this log, or it waits for itself.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Panicked`]; [`Error::Read`] for damage or a read error;
    /// [`Error::Storage`] when the segments cannot be listed.
    pub fn read_from(&self, from: Lsn, mut each: impl FnMut(Lsn, &[u8])) -> Result<Lsn, Error> {
        let mut state = self.lock()?;
        loop {
            state.check()?;
            if !state.leader {
                break;
            }
            state = self.wait(state)?;
        }
        let mut io = state.io.take().ok_or(Error::Panicked)?;
        state.leader = true;
        let mut leadership = Leadership {
            shared: &self.shared,
            resigned: false,
        };
        let state = state;
        let upto = state.pipe().durable_lsn();
        let max_payload = usize::try_from(state.max_payload).unwrap_or(usize::MAX);
        drop(state);
        let mut window = vec![0u8; min_window(max_payload).max(64 * 1024)];
        let result = read::read_from(&mut io.storage, from, upto, &mut window, &mut each);
        let mut state = self.lock()?;
        leadership.resign(&mut state, io);
        result
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
    /// [`Error::Panicked`] when a leader panicked and the storage went with it.
    pub fn into_log(self) -> Result<WriteAheadLog<S>, Error> {
        let shared = Arc::try_unwrap(self.shared).map_err(|shared| Error::HandlesAlive {
            others: Arc::strong_count(&shared).saturating_sub(1),
        })?;
        let state = shared.state.into_inner().map_err(|_| Error::Panicked)?;
        let State {
            mut cell,
            mut driver,
            max_payload,
            io,
            ..
        } = state;
        let Io { storage, mut relay } = io.ok_or(Error::Panicked)?;
        // Completions collected but not yet fed back (a leader stops only after feeding them;
        // this keeps the pipeline whole whatever happened).
        cell.with_dependent_mut(|_, p| driver.complete(p, &mut relay));
        Ok(WriteAheadLog {
            cell,
            storage,
            driver,
            max_payload,
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State<S>>, Error> {
        self.shared.state.lock().map_err(|_| Error::Panicked)
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
        let mut io = state.io.take().ok_or(Error::Panicked)?;
        state.leader = true;
        let mut leadership = Leadership {
            shared: &self.shared,
            resigned: false,
        };
        // Declared after `leadership`, so an unwind releases the lock before its drop locks.
        let mut state = state;
        let mut idle = 0u32;
        let answer = loop {
            let st = &mut *state;
            let (driver, relay) = (&mut st.driver, &mut io.relay);
            let fed = st
                .cell
                .with_dependent_mut(|_, p| driver.complete(p, relay) + driver.events(p));
            self.publish(&state);
            if let Err(e) = state.check() {
                break Err(e);
            }
            if let Some(answer) = done(&mut state) {
                break answer;
            }
            let st = &mut *state;
            let (driver, relay) = (&mut st.driver, &mut io.relay);
            let submitted = st.cell.with_dependent_mut(|_, p| {
                // Whatever was appended since the last round goes out in this one.
                p.flush();
                driver.submit(p, relay)
            });
            if fed + submitted > 0 {
                idle = 0;
            } else {
                idle += 1;
                if idle > STALL_ROUNDS {
                    let p = state.pipe();
                    break Err(Error::Stalled {
                        durable: p.durable_lsn(),
                        wanted: p.next_lsn().prev(),
                    });
                }
            }
            drop(state);
            if !io.relay.has_requests() {
                // Only operations of a backend that completes later are in flight.
                std::thread::yield_now();
            }
            let (_, synced) = io.relay.run(&mut io.storage);
            self.shared.syncs.fetch_add(synced, Ordering::Relaxed);
            state = self.lock()?;
        };
        leadership.resign(&mut state, io);
        answer
    }

    /// Publishes the durable LSN and wakes the waiters when it moved or the log broke.
    fn publish(&self, state: &State<S>) {
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
