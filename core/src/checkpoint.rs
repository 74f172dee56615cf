//! The checkpoint coordinator: a state machine that runs aligned-epoch checkpoints across a fixed
//! number of cores, decides when a manifest may be written, and moves the committed checkpoint
//! only when its manifest is published. It does no I/O, reads no clock and holds no snapshot
//! data: parts stay with the caller, named by a [`Parts`] summary.
//!
//! Told things: [`Coordinator::trigger`], [`Coordinator::handle_ack`],
//! [`Coordinator::handle_durable`], [`Coordinator::handle_published`],
//! [`Coordinator::handle_failure`], [`Coordinator::handle_timeout`]. Asked things:
//! [`Coordinator::poll_action`], [`Coordinator::poll_event`], [`Coordinator::poll_timeout`],
//! [`Coordinator::current`], [`Coordinator::truncate_before`].
//!
//! # States
//! ```text
//!            trigger(now)                 every core acked, each position durable
//!   Idle ─────────────────▶ Collecting ─────────────────────────────────────▶ ManifestDue
//!    ▲                      │ (barriers)                                         │
//!    │   failure, timeout,  │                              poll_action:          │
//!    │   regressed position │                              WriteManifest         ▼
//!    ├──── Aborted ◀────────┴─────────────── failure, timeout ──────────────  Publishing
//!    │                                                                           │
//!    ├──── Aborted ◀──────────────── handle_published(id, Err) ─────────────────┤
//!    └──── Committed ◀───────────── handle_published(id, Ok) ───────────────────┘
//! ```
//! `Committed` and `Aborted` are events ([`Event`]); the machine is back in `Idle` after either.
//! After an abort the previous committed checkpoint stays [`Coordinator::current`].
//!
//! # The rules
//! * Epochs and checkpoint ids strictly increase: each trigger takes the next of both, and an
//!   aborted attempt's epoch and id are never used again (a manifest an aborted publish may have
//!   left behind can never be confused with a later one).
//! * A manifest never names a WAL position that is not durable: an acknowledgement whose
//!   position is not yet durable waits until [`Coordinator::handle_durable`] covers it.
//! * A core's position never goes back: an acknowledgement below the core's position in the
//!   committed checkpoint aborts the attempt (that WAL may already be truncated).
//! * The deadline runs from the trigger to the hand-out of the manifest. Once the manifest is
//!   handed out, only its publish completion ends the attempt: a timeout or failure report then
//!   would not stop a manifest already on its way to the store, which recovery would take as the
//!   latest, so the publish's own outcome decides (the store reports a publish that hangs as a
//!   failed completion).
//! * One checkpoint at a time: a trigger while one is in progress is refused with
//!   [`TriggerError::InProgress`], not queued; so is a trigger while the last outcome event has
//!   not been polled ([`TriggerError::EventPending`]), so no outcome is ever lost.
//! * Inputs that do not fit (an acknowledgement from an aborted or older epoch, a duplicate, a
//!   core out of range, a publish completion for a checkpoint not being published) return an
//!   error value and change nothing.
//!
//! # Driving it
//! ```
//! use lamina_core::Lsn;
//! use lamina_core::checkpoint::{Ack, Action, Config, Coordinator, Event, Parts};
//!
//! let mut c = Coordinator::<2>::new(Config { timeout: 1_000 }).unwrap();
//! let attempt = c.trigger(0).unwrap();
//! while let Some(action) = c.poll_action() {
//!     match action {
//!         // A real driver injects the barrier into the core's stream; here the core answers
//!         // at once, with a position its WAL has not made durable yet.
//!         Action::InjectBarrier { core, epoch } => {
//!             let parts = Parts { count: 1, handle: core as u64 };
//!             let ack = Ack { core, epoch, position: Lsn(10), durable: false, parts };
//!             c.handle_ack(ack).unwrap();
//!         }
//!         Action::WriteManifest(_) => unreachable!("no position is durable yet"),
//!     }
//! }
//! c.handle_durable(0, Lsn(10)).unwrap();
//! c.handle_durable(1, Lsn(12)).unwrap();
//! let Some(Action::WriteManifest(manifest)) = c.poll_action() else { unreachable!() };
//! assert_eq!(manifest.cores[1].position, Lsn(10));
//! // ... encode and publish the manifest, then:
//! c.handle_published(manifest.id, Ok(())).unwrap();
//! assert_eq!(c.poll_event(), Some(Event::Committed(attempt)));
//! assert_eq!(c.truncate_before(0), Some(Lsn(11)));
//! ```
//!
//! # Truncation
//! After a commit, core `c`'s WAL may be truncated below [`Coordinator::truncate_before`]`(c)`:
//! the committed manifest's position for that core, plus one. Recovery replays from there, so
//! nothing below it is needed, and nothing at or above it may go.

use crate::io::Failure;
use crate::lsn::Lsn;
use core::fmt;

/// The coordinator's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Nanoseconds (in the caller's clock) from a trigger until the attempt is aborted if its
    /// manifest has not been handed out. At least 1.
    pub timeout: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: 60_000_000_000,
        }
    }
}

/// A committed (or attempted) checkpoint's identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checkpoint {
    /// The checkpoint id: the manifest's number.
    pub id: u64,
    /// The epoch whose barrier the checkpoint is aligned on.
    pub epoch: u64,
}

/// A core's snapshot parts, as the coordinator sees them: a summary, the parts themselves stay
/// with the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Parts {
    /// How many parts the core's snapshot has.
    pub count: u32,
    /// The caller's handle to the list of parts (an index into its own table, for example).
    pub handle: u64,
}

/// A core's acknowledgement of a barrier: its snapshot for `epoch` is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ack {
    /// Which core (0-based, below the coordinator's `CORES`).
    pub core: usize,
    /// The epoch of the barrier it acknowledges.
    pub epoch: u64,
    /// The last LSN of the core's WAL that the snapshot covers: recovery replays from the one
    /// after it. `Lsn::ZERO` when the core's WAL holds nothing before the barrier.
    pub position: Lsn,
    /// Whether `position` is already durable in the core's WAL.
    pub durable: bool,
    /// The core's snapshot parts.
    pub parts: Parts,
}

/// One core's entry in a manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CoreEntry {
    /// The core's acknowledged WAL position (durable).
    pub position: Lsn,
    /// The core's snapshot parts.
    pub parts: Parts,
}

/// What a manifest must say, for the caller to encode and publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Manifest<const CORES: usize> {
    /// The checkpoint id (the manifest's number).
    pub id: u64,
    /// The checkpoint's epoch.
    pub epoch: u64,
    /// The checkpoint current when this one was triggered, if any.
    pub parent: Option<Checkpoint>,
    /// The caller's clock at the trigger.
    pub started_at: u64,
    /// Per core, in core order: its durable WAL position and its parts.
    pub cores: [CoreEntry; CORES],
}

/// Something for the caller to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action<const CORES: usize> {
    /// Inject the barrier of `epoch` into `core`'s stream; the core acknowledges it with
    /// [`Coordinator::handle_ack`].
    InjectBarrier {
        /// Which core.
        core: usize,
        /// The barrier's epoch.
        epoch: u64,
    },
    /// Write and publish this manifest, then report with [`Coordinator::handle_published`].
    WriteManifest(Manifest<CORES>),
}

/// Why an attempt was aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbortReason {
    /// The deadline passed before the manifest was handed out.
    TimedOut,
    /// A failure was reported ([`Coordinator::handle_failure`]).
    Failed(Failure),
    /// Publishing the manifest failed.
    PublishFailed(Failure),
    /// A core acknowledged a position below its position in the committed checkpoint.
    PositionRegressed {
        /// Which core.
        core: usize,
    },
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortReason::TimedOut => f.write_str("timed out"),
            AbortReason::Failed(e) => write!(f, "failure reported: {e}"),
            AbortReason::PublishFailed(e) => write!(f, "manifest publish failed: {e}"),
            AbortReason::PositionRegressed { core } => write!(
                f,
                "core {core} acknowledged a WAL position below the committed checkpoint's"
            ),
        }
    }
}

/// The outcome of an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The checkpoint's manifest is published: it is now [`Coordinator::current`].
    Committed(Checkpoint),
    /// The attempt was given up; the previous checkpoint stays current.
    Aborted {
        /// The attempt's id and epoch (never used again).
        attempt: Checkpoint,
        /// Why.
        reason: AbortReason,
    },
}

/// Where the coordinator stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// No checkpoint in progress.
    Idle,
    /// Barriers are out; waiting for acknowledgements and their durability.
    Collecting {
        /// The attempt.
        attempt: Checkpoint,
        /// Cores that have acknowledged.
        acked: usize,
    },
    /// Every core acknowledged with a durable position; the manifest is next from
    /// [`Coordinator::poll_action`].
    ManifestDue {
        /// The attempt.
        attempt: Checkpoint,
    },
    /// The manifest was handed out; waiting for [`Coordinator::handle_published`].
    Publishing {
        /// The attempt.
        attempt: Checkpoint,
    },
}

/// A configuration or resume point that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `CORES` is 0.
    NoCores,
    /// `timeout` is 0.
    ZeroTimeout,
    /// The resumed checkpoint's epoch or id is above the last epoch or id given.
    ResumeAhead,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::NoCores => "a checkpoint coordinator needs at least one core",
            ConfigError::ZeroTimeout => "the checkpoint timeout must be at least 1",
            ConfigError::ResumeAhead => {
                "the resumed checkpoint's epoch or id is above the last epoch or id"
            }
        })
    }
}

impl core::error::Error for ConfigError {}

/// Why a trigger was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TriggerError {
    /// A checkpoint is in progress: wait for its outcome event.
    InProgress {
        /// The attempt in progress.
        attempt: Checkpoint,
    },
    /// The last outcome event has not been polled: poll it first.
    EventPending,
    /// Epochs or ids are used up.
    Exhausted,
}

impl fmt::Display for TriggerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriggerError::InProgress { attempt } => write!(
                f,
                "checkpoint {} (epoch {}) is in progress",
                attempt.id, attempt.epoch
            ),
            TriggerError::EventPending => f.write_str("poll the last checkpoint event first"),
            TriggerError::Exhausted => f.write_str("checkpoint epochs or ids are used up"),
        }
    }
}

impl core::error::Error for TriggerError {}

/// Why an acknowledgement was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckError {
    /// The core is out of range. Ignored.
    NoSuchCore {
        /// The core given.
        core: usize,
    },
    /// No checkpoint is collecting acknowledgements (late, from an aborted or committed epoch).
    /// Ignored.
    NotInProgress {
        /// The epoch acknowledged.
        epoch: u64,
    },
    /// The epoch is not the one in progress (older, or never triggered). Ignored.
    WrongEpoch {
        /// The epoch acknowledged.
        epoch: u64,
        /// The epoch in progress.
        expected: u64,
    },
    /// The core already acknowledged this epoch. Ignored: the first acknowledgement stands.
    Duplicate {
        /// Which core.
        core: usize,
    },
    /// The position is below the core's position in the committed checkpoint. The attempt was
    /// aborted ([`AbortReason::PositionRegressed`]).
    PositionRegressed {
        /// Which core.
        core: usize,
        /// The position acknowledged.
        position: Lsn,
        /// The committed checkpoint's position for the core.
        committed: Lsn,
    },
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::NoSuchCore { core } => write!(f, "no core {core}"),
            AckError::NotInProgress { epoch } => {
                write!(
                    f,
                    "acknowledgement of epoch {epoch}: no checkpoint in progress"
                )
            }
            AckError::WrongEpoch { epoch, expected } => write!(
                f,
                "acknowledgement of epoch {epoch} while epoch {expected} is in progress"
            ),
            AckError::Duplicate { core } => write!(f, "core {core} already acknowledged"),
            AckError::PositionRegressed {
                core,
                position,
                committed,
            } => write!(
                f,
                "core {core} acknowledged position {position}, below its committed {committed}"
            ),
        }
    }
}

impl core::error::Error for AckError {}

/// A core index out of range. Ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSuchCore {
    /// The core given.
    pub core: usize,
}

impl fmt::Display for NoSuchCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no core {}", self.core)
    }
}

impl core::error::Error for NoSuchCore {}

/// A publish completion for a checkpoint that is not being published (its manifest was not
/// handed out, or it already ended). Ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotPublishing {
    /// The id given.
    pub id: u64,
}

impl fmt::Display for NotPublishing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "checkpoint {} is not being published", self.id)
    }
}

impl core::error::Error for NotPublishing {}

/// Why a failure report changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureError {
    /// No attempt of that epoch is in progress (it already ended, or never began). Ignored.
    NotInProgress {
        /// The epoch given.
        epoch: u64,
    },
    /// The attempt's manifest is being published: the publish completion decides. Ignored.
    Publishing {
        /// The epoch given.
        epoch: u64,
    },
}

impl fmt::Display for FailureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureError::NotInProgress { epoch } => {
                write!(f, "no checkpoint of epoch {epoch} in progress")
            }
            FailureError::Publishing { epoch } => write!(
                f,
                "the manifest of epoch {epoch} is being published: its completion decides"
            ),
        }
    }
}

impl core::error::Error for FailureError {}

/// Where a recovered system resumes checkpointing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Resume<const CORES: usize> {
    /// The latest committed checkpoint and its per-core positions, if any.
    pub current: Option<(Checkpoint, [Lsn; CORES])>,
    /// The highest epoch ever used (in any manifest or WAL epoch marker): the next is above it.
    pub last_epoch: u64,
    /// The highest checkpoint id ever used (any manifest, published or not): the next is above.
    pub last_id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Collecting,
    ManifestDue,
    Publishing,
}

/// One core's part of the coordinator's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CoreSlot {
    /// Its acknowledgement of the attempt in progress.
    ack: Option<CoreEntry>,
    /// Its WAL is durable through here (only ever rises).
    durable: Lsn,
    /// Its position in the committed checkpoint (`Lsn::ZERO` before any).
    committed: Lsn,
}

impl CoreSlot {
    const NEW: CoreSlot = CoreSlot {
        ack: None,
        durable: Lsn::ZERO,
        committed: Lsn::ZERO,
    };

    fn ready(&self) -> bool {
        self.ack.is_some_and(|a| self.durable >= a.position)
    }
}

/// The checkpoint coordinator for `CORES` cores. See the [module docs](self) for the states and
/// rules.
#[derive(Clone, Debug)]
pub struct Coordinator<const CORES: usize> {
    config: Config,
    phase: Phase,
    /// The attempt in progress (meaningful unless `Idle`).
    attempt: Checkpoint,
    started_at: u64,
    /// The deadline of the attempt; `None` once the manifest is handed out.
    deadline: Option<u64>,
    /// Barriers handed out for the attempt.
    barriers: usize,
    cores: [CoreSlot; CORES],
    current: Option<Checkpoint>,
    last_epoch: u64,
    last_id: u64,
    /// The outcome not yet polled. At most one: a trigger waits until it is polled.
    event: Option<Event>,
}

impl<const CORES: usize> Coordinator<CORES> {
    /// A coordinator with no committed checkpoint, epochs and ids starting at 1.
    ///
    /// # Errors
    /// [`ConfigError::NoCores`], [`ConfigError::ZeroTimeout`].
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::resume(
            config,
            Resume {
                current: None,
                last_epoch: 0,
                last_id: 0,
            },
        )
    }

    /// A coordinator that continues after recovery: `resume.current` is current, and the next
    /// trigger takes epoch `last_epoch + 1` and id `last_id + 1`.
    ///
    /// # Errors
    /// [`ConfigError::NoCores`], [`ConfigError::ZeroTimeout`], and
    /// [`ConfigError::ResumeAhead`] when the current checkpoint's epoch or id is above the last.
    pub fn resume(config: Config, resume: Resume<CORES>) -> Result<Self, ConfigError> {
        if CORES == 0 {
            return Err(ConfigError::NoCores);
        }
        if config.timeout == 0 {
            return Err(ConfigError::ZeroTimeout);
        }
        let mut cores = [CoreSlot::NEW; CORES];
        let mut current = None;
        if let Some((checkpoint, positions)) = resume.current {
            if checkpoint.epoch > resume.last_epoch || checkpoint.id > resume.last_id {
                return Err(ConfigError::ResumeAhead);
            }
            for (slot, position) in cores.iter_mut().zip(positions) {
                slot.committed = position;
                // The manifest named it, so it was durable.
                slot.durable = position;
            }
            current = Some(checkpoint);
        }
        Ok(Coordinator {
            config,
            phase: Phase::Idle,
            attempt: Checkpoint::default(),
            started_at: 0,
            deadline: None,
            barriers: 0,
            cores,
            current,
            last_epoch: resume.last_epoch,
            last_id: resume.last_id,
            event: None,
        })
    }

    /// Starts a checkpoint at `now`: the next epoch and id, barriers for every core from
    /// [`Self::poll_action`], the deadline at `now + timeout`. Returns the attempt.
    ///
    /// # Errors
    /// [`TriggerError::InProgress`] (not queued: trigger again after its outcome),
    /// [`TriggerError::EventPending`], [`TriggerError::Exhausted`]. Nothing changes.
    pub fn trigger(&mut self, now: u64) -> Result<Checkpoint, TriggerError> {
        if self.phase != Phase::Idle {
            return Err(TriggerError::InProgress {
                attempt: self.attempt,
            });
        }
        if self.event.is_some() {
            return Err(TriggerError::EventPending);
        }
        let (Some(epoch), Some(id)) = (self.last_epoch.checked_add(1), self.last_id.checked_add(1))
        else {
            return Err(TriggerError::Exhausted);
        };
        self.last_epoch = epoch;
        self.last_id = id;
        self.attempt = Checkpoint { id, epoch };
        self.started_at = now;
        self.deadline = Some(now.saturating_add(self.config.timeout));
        self.barriers = 0;
        for slot in &mut self.cores {
            slot.ack = None;
        }
        self.phase = Phase::Collecting;
        Ok(self.attempt)
    }

    /// Takes a core's acknowledgement of the barrier in progress. If `ack.durable`, its position
    /// counts as durable; otherwise it waits for [`Self::handle_durable`] to cover it.
    ///
    /// # Errors
    /// See [`AckError`]: every case but `PositionRegressed` changes nothing;
    /// `PositionRegressed` aborts the attempt.
    pub fn handle_ack(&mut self, ack: Ack) -> Result<(), AckError> {
        let Some(&slot) = self.cores.get(ack.core) else {
            return Err(AckError::NoSuchCore { core: ack.core });
        };
        if self.phase == Phase::Idle {
            return Err(AckError::NotInProgress { epoch: ack.epoch });
        }
        if ack.epoch != self.attempt.epoch {
            return Err(AckError::WrongEpoch {
                epoch: ack.epoch,
                expected: self.attempt.epoch,
            });
        }
        if slot.ack.is_some() {
            return Err(AckError::Duplicate { core: ack.core });
        }
        // In the later phases every core has acknowledged, so the duplicate check caught it.
        if ack.position < slot.committed {
            self.abort(AbortReason::PositionRegressed { core: ack.core });
            return Err(AckError::PositionRegressed {
                core: ack.core,
                position: ack.position,
                committed: slot.committed,
            });
        }
        let Some(slot) = self.cores.get_mut(ack.core) else {
            return Err(AckError::NoSuchCore { core: ack.core });
        };
        slot.ack = Some(CoreEntry {
            position: ack.position,
            parts: ack.parts,
        });
        if ack.durable {
            slot.durable = slot.durable.max(ack.position);
        }
        self.check_ready();
        Ok(())
    }

    /// Tells the coordinator that `core`'s WAL is durable through `upto`. A lower value than
    /// one already told is ignored (durability only rises).
    ///
    /// # Errors
    /// [`NoSuchCore`]; nothing changes.
    pub fn handle_durable(&mut self, core: usize, upto: Lsn) -> Result<(), NoSuchCore> {
        let Some(slot) = self.cores.get_mut(core) else {
            return Err(NoSuchCore { core });
        };
        slot.durable = slot.durable.max(upto);
        self.check_ready();
        Ok(())
    }

    /// Tells the coordinator how the publish of manifest `id` ended. `Ok`: the checkpoint is
    /// committed and becomes current. `Err`: the attempt is aborted and the previous checkpoint
    /// stays current.
    ///
    /// # Errors
    /// [`NotPublishing`] when `id` is not the manifest being published; nothing changes.
    pub fn handle_published(
        &mut self,
        id: u64,
        result: Result<(), Failure>,
    ) -> Result<(), NotPublishing> {
        if self.phase != Phase::Publishing || self.attempt.id != id {
            return Err(NotPublishing { id });
        }
        match result {
            Ok(()) => self.commit(),
            Err(failure) => self.abort(AbortReason::PublishFailed(failure)),
        }
        Ok(())
    }

    /// Reports a failure in the attempt of `epoch` (a core could not take its snapshot, a part
    /// could not be written): the attempt is aborted.
    ///
    /// # Errors
    /// [`FailureError`]; nothing changes.
    pub fn handle_failure(&mut self, epoch: u64, failure: Failure) -> Result<(), FailureError> {
        if self.phase == Phase::Idle || self.attempt.epoch != epoch {
            return Err(FailureError::NotInProgress { epoch });
        }
        if self.phase == Phase::Publishing {
            return Err(FailureError::Publishing { epoch });
        }
        self.abort(AbortReason::Failed(failure));
        Ok(())
    }

    /// Tells the coordinator the time: an attempt whose deadline has passed before its manifest
    /// was handed out is aborted.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.deadline.is_some_and(|d| now >= d)
            && matches!(self.phase, Phase::Collecting | Phase::ManifestDue)
        {
            self.abort(AbortReason::TimedOut);
        }
    }

    /// The next thing for the caller to do, if any: the barriers (one per core, in core order),
    /// then the manifest once every core acknowledged with a durable position (barriers not yet
    /// handed out by then are dropped: every core has already acknowledged). Handing out the
    /// manifest starts the publish. Call again after:
    /// * an action: at once, until `None`;
    /// * `None`: after [`Self::trigger`], [`Self::handle_ack`], [`Self::handle_durable`].
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action<CORES>> {
        match self.phase {
            Phase::Collecting if self.barriers < CORES => {
                let core = self.barriers;
                self.barriers += 1;
                Some(Action::InjectBarrier {
                    core,
                    epoch: self.attempt.epoch,
                })
            }
            Phase::ManifestDue => {
                let mut cores = [CoreEntry::default(); CORES];
                for (entry, slot) in cores.iter_mut().zip(&self.cores) {
                    // `ManifestDue` means every slot has its acknowledgement.
                    *entry = slot.ack?;
                }
                self.phase = Phase::Publishing;
                self.deadline = None;
                Some(Action::WriteManifest(Manifest {
                    id: self.attempt.id,
                    epoch: self.attempt.epoch,
                    parent: self.current,
                    started_at: self.started_at,
                    cores,
                }))
            }
            _ => None,
        }
    }

    /// The outcome of the last attempt, once. Call again after:
    /// * an event: never needed at once (there is at most one);
    /// * `None`: after [`Self::handle_ack`] (a regressed position aborts),
    ///   [`Self::handle_published`], [`Self::handle_failure`], [`Self::handle_timeout`].
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.event.take()
    }

    /// When [`Self::handle_timeout`] is next due, if an attempt's deadline is running. Call again
    /// after: [`Self::trigger`], [`Self::poll_action`] (the manifest stops the deadline), and
    /// any outcome.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Collecting | Phase::ManifestDue => self.deadline,
            Phase::Idle | Phase::Publishing => None,
        }
    }

    /// The last committed checkpoint, if any.
    #[must_use]
    pub fn current(&self) -> Option<Checkpoint> {
        self.current
    }

    /// Where the coordinator stands.
    #[must_use]
    pub fn state(&self) -> State {
        let attempt = self.attempt;
        match self.phase {
            Phase::Idle => State::Idle,
            Phase::Collecting => State::Collecting {
                attempt,
                acked: self.cores.iter().filter(|s| s.ack.is_some()).count(),
            },
            Phase::ManifestDue => State::ManifestDue { attempt },
            Phase::Publishing => State::Publishing { attempt },
        }
    }

    /// `core`'s position in the committed checkpoint, if one is committed and the core exists.
    #[must_use]
    pub fn committed_position(&self, core: usize) -> Option<Lsn> {
        self.current?;
        self.cores.get(core).map(|s| s.committed)
    }

    /// The LSN below which `core`'s WAL may be truncated: the committed checkpoint's position
    /// for it, plus one. `None` before any commit (nothing may be truncated) or for a core out
    /// of range.
    #[must_use]
    pub fn truncate_before(&self, core: usize) -> Option<Lsn> {
        self.committed_position(core).map(Lsn::next)
    }

    /// The highest epoch used so far (0 before the first trigger of a new coordinator).
    #[must_use]
    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// The highest checkpoint id used so far.
    #[must_use]
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    fn check_ready(&mut self) {
        if self.phase == Phase::Collecting && self.cores.iter().all(CoreSlot::ready) {
            self.phase = Phase::ManifestDue;
        }
    }

    fn commit(&mut self) {
        for slot in &mut self.cores {
            if let Some(ack) = slot.ack.take() {
                slot.committed = ack.position;
            }
        }
        self.current = Some(self.attempt);
        self.event = Some(Event::Committed(self.attempt));
        self.end();
    }

    fn abort(&mut self, reason: AbortReason) {
        for slot in &mut self.cores {
            slot.ack = None;
        }
        self.event = Some(Event::Aborted {
            attempt: self.attempt,
            reason,
        });
        self.end();
    }

    fn end(&mut self) {
        self.phase = Phase::Idle;
        self.deadline = None;
        self.barriers = 0;
    }
}
