//! [`CheckpointCoordinator`]: drives the core's checkpoint state machine across the cores, with
//! the drainer's captures, the incremental manager and a checkpoint store.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lamina_core::checkpoint::{
    AbortReason, Ack, Action, Checkpoint, Config, Coordinator, Event, Manifest as Due, Parts,
    Resume,
};
use lamina_core::io::Failure;
use lamina_core::manifest::{List, Manifest, SourceOffset, WalPosition};

use super::incremental::{GcReport, IncrementalCheckpointManager, Leftover, Plan, Staged};
use super::layout::{CoreLayout, manifest_parts};
use super::recovery::ResumePoint;
use crate::{BarrierCapture, CheckpointStore, Error, Lsn, SegmentId};

/// What the sources had reached at a checkpoint's barrier: stored in its manifest as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceState {
    /// The event-time watermark (`i64::MIN` for none).
    pub watermark: i64,
    /// Each connector's offsets, in its own encoding.
    pub offsets: Vec<(String, Vec<u8>)>,
}

impl Default for SourceState {
    /// No watermark (`i64::MIN`) and no offsets.
    fn default() -> Self {
        SourceState {
            watermark: i64::MIN,
            offsets: Vec::new(),
        }
    }
}

/// How a checkpoint attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointOutcome {
    /// The manifest is published: the checkpoint is current.
    Committed(CommittedCheckpoint),
    /// The attempt was given up; the previous checkpoint stays current.
    Aborted {
        /// The attempt.
        attempt: Checkpoint,
        /// Why.
        reason: String,
    },
}

/// A committed checkpoint and what writing it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedCheckpoint {
    /// Its id and epoch.
    pub checkpoint: Checkpoint,
    /// Per core, the last WAL LSN it covers.
    pub positions: Vec<Lsn>,
    /// Parts it wrote (the others are its parent's).
    pub parts_written: usize,
    /// Bytes of parts it wrote.
    pub bytes_written: u64,
    /// Bytes of its manifest.
    pub manifest_bytes: u64,
    /// Keys its snapshot holds.
    pub keys: u64,
    /// From the trigger to the publish.
    pub elapsed: Duration,
    /// Of which writing the parts and publishing the manifest (the job).
    pub write_time: Duration,
}

/// Runs checkpoints across `CORES` cores: [`Self::trigger`] hands out the barriers to put into
/// each core's changelog queue; the drainer's captures at those barriers come back through
/// [`Self::handle_capture`] and the durability of each core's WAL through
/// [`Self::handle_durable`]; once every core's position is durable, [`Self::poll_job`] hands out
/// a [`CheckpointJob`] (write the parts, publish the manifest) to run on any thread, whose
/// outcome goes to [`Self::handle_job`]. The state machine is `lamina_core::checkpoint`'s.
///
/// Ring 0 only pushes a barrier; the snapshot is Ring 1's capture and the I/O is the job's.
pub struct CheckpointCoordinator<const CORES: usize> {
    machine: Coordinator<CORES>,
    manager: IncrementalCheckpointManager,
    store: Arc<dyn CheckpointStore>,
    captures: Vec<Option<(Lsn, SegmentId, super::Capture)>>,
    sources: SourceState,
    origin: Instant,
    triggered_at: Instant,
    positions: Vec<Lsn>,
}

/// The I/O of one checkpoint: its parts, then its manifest. `Send`: run it where the I/O may
/// block.
pub struct CheckpointJob {
    plan: Plan,
    store: Arc<dyn CheckpointStore>,
    due: DueManifest,
}

/// What the manifest says besides the parts.
#[derive(Clone, Debug)]
struct DueManifest {
    id: u64,
    epoch: u64,
    parent: Option<u64>,
    wal: Vec<WalPosition>,
    sources: SourceState,
}

/// A finished [`CheckpointJob`], for [`CheckpointCoordinator::handle_job`].
#[derive(Debug)]
pub struct JobOutcome {
    id: u64,
    took: Duration,
    result: Result<(Staged, u64), (Error, Leftover)>,
}

impl JobOutcome {
    /// The checkpoint's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The job's error, if it failed.
    #[must_use]
    pub fn error(&self) -> Option<&Error> {
        self.result.as_ref().err().map(|(e, _)| e)
    }
}

impl CheckpointJob {
    /// The checkpoint's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.due.id
    }

    /// Writes the parts, then publishes the manifest create-only, in one call to the store
    /// ([`Plan::write_and_publish`]). Blocking.
    #[must_use]
    pub fn run(self) -> JobOutcome {
        let started = Instant::now();
        let id = self.due.id;
        let due = &self.due;
        let result = self
            .plan
            .write_and_publish(&*self.store, &|layouts| manifest_bytes(due, layouts))
            .map_err(|(e, plan)| (e, Leftover::Plan(plan)));
        JobOutcome {
            id,
            took: started.elapsed(),
            result,
        }
    }
}

/// Encodes the manifest `due` describes, with the parts of `layouts`.
fn manifest_bytes(due: &DueManifest, layouts: &[CoreLayout]) -> Result<Vec<u8>, Error> {
    let parts = manifest_parts(layouts)?;
    let parts: Vec<_> = parts.iter().map(|p| p.as_part()).collect();
    let mut sources = due.sources.offsets.clone();
    sources.sort_by(|a, b| a.0.cmp(&b.0));
    let offsets: Vec<SourceOffset<'_>> = sources
        .iter()
        .map(|(connector, bytes)| SourceOffset { connector, bytes })
        .collect();
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let manifest = Manifest {
        id: due.id,
        epoch: due.epoch,
        parent: due.parent,
        timestamp,
        watermark: due.sources.watermark,
        wal: List::new(&due.wal),
        parts: List::new(&parts),
        offsets: List::new(&offsets),
    };
    let mut bytes = vec![0u8; manifest.encoded_len()];
    let len = manifest.encode(&mut bytes).map_err(|e| Error::Snapshot {
        id: due.id,
        detail: format!("the manifest cannot be encoded: {e}"),
    })?;
    bytes.truncate(len);
    Ok(bytes)
}

impl<const CORES: usize> CheckpointCoordinator<CORES> {
    /// A coordinator over `store` continuing from `resume` (what recovery found; use
    /// `ResumePoint::default()`-like values for a new set: no current, 0, 0), writing through
    /// `manager`, aborting an attempt not ready to publish within `timeout`.
    ///
    /// # Errors
    /// [`Error::Refused`] when `resume` names another number of cores, or the state machine
    /// refuses the configuration.
    pub fn new(
        store: Arc<dyn CheckpointStore>,
        manager: IncrementalCheckpointManager,
        resume: &ResumePoint,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let mut positions = vec![Lsn::ZERO; CORES];
        let current = match &resume.current {
            Some((checkpoint, at)) => {
                let at: [Lsn; CORES] = at.as_slice().try_into().map_err(|_| {
                    Error::Refused(format!(
                        "the checkpoint to resume from has {} cores, this coordinator {CORES}",
                        at.len()
                    ))
                })?;
                positions = at.to_vec();
                Some((*checkpoint, at))
            }
            None => None,
        };
        let config = Config {
            timeout: u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX).max(1),
        };
        let machine = Coordinator::resume(
            config,
            Resume {
                current,
                last_epoch: resume.last_epoch,
                last_id: resume.last_id,
            },
        )
        .map_err(|e| Error::Refused(format!("checkpoint coordinator: {e}")))?;
        Ok(CheckpointCoordinator {
            machine,
            manager,
            store,
            captures: (0..CORES).map(|_| None).collect(),
            sources: SourceState::default(),
            origin: Instant::now(),
            triggered_at: Instant::now(),
            positions,
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Starts a checkpoint whose manifest will record `sources`, and returns the barriers to
    /// push, one `(core, epoch)` per core.
    ///
    /// # Errors
    /// [`Error::Refused`] when one is in progress (not queued) or the ids are exhausted.
    pub fn trigger(&mut self, sources: SourceState) -> Result<Vec<(usize, u64)>, Error> {
        let attempt = self
            .machine
            .trigger(self.now())
            .map_err(|e| Error::Refused(format!("checkpoint not started: {e}")))?;
        self.sources = sources;
        self.triggered_at = Instant::now();
        for slot in &mut self.captures {
            *slot = None;
        }
        let mut barriers = Vec::with_capacity(CORES);
        while let Some(action) = self.machine.poll_action() {
            if let Action::InjectBarrier { core, epoch } = action {
                barriers.push((core, epoch));
            }
        }
        debug_assert!(barriers.iter().all(|&(_, e)| e == attempt.epoch));
        Ok(barriers)
    }

    /// Takes a core's state captured at the barrier of the attempt in progress.
    ///
    /// # Errors
    /// [`Error::Refused`] for a capture of another epoch, a duplicate, or a position below the
    /// committed checkpoint's (which aborts the attempt).
    pub fn handle_capture(&mut self, capture: BarrierCapture) -> Result<(), Error> {
        let BarrierCapture {
            core,
            barrier,
            segment,
            capture,
        } = capture;
        self.machine
            .handle_ack(Ack {
                core,
                epoch: barrier.epoch,
                position: barrier.lsn,
                durable: false,
                parts: Parts {
                    count: 0,
                    handle: core as u64,
                },
            })
            .map_err(|e| Error::Refused(format!("capture of core {core}: {e}")))?;
        if let Some(slot) = self.captures.get_mut(core) {
            *slot = Some((barrier.lsn, segment, capture));
        }
        Ok(())
    }

    /// Tells that `core`'s WAL is durable through `lsn`.
    ///
    /// # Errors
    /// [`Error::NoSuchCore`].
    pub fn handle_durable(&mut self, core: usize, lsn: Lsn) -> Result<(), Error> {
        self.machine
            .handle_durable(core, lsn)
            .map_err(|_| Error::NoSuchCore { core, cores: CORES })
    }

    /// The job of the attempt once every core's position is durable (once), after checking the
    /// deadline.
    pub fn poll_job(&mut self) -> Option<CheckpointJob> {
        self.machine.handle_timeout(self.now());
        let Some(Action::WriteManifest(due)) = self.machine.poll_action() else {
            return None;
        };
        match self.job(&due) {
            Ok(job) => Some(job),
            Err(e) => {
                // The manager refused the plan: nothing was written.
                let _ = self.machine.handle_published(due.id, Err(failure_of(&e)));
                None
            }
        }
    }

    fn job(&mut self, due: &Due<CORES>) -> Result<CheckpointJob, Error> {
        let mut captures = Vec::with_capacity(CORES);
        let mut wal = Vec::with_capacity(CORES);
        for (core, slot) in self.captures.iter_mut().enumerate() {
            let Some((lsn, segment, capture)) = slot.take() else {
                return Err(Error::Refused(format!("no capture of core {core}")));
            };
            wal.push(WalPosition {
                core: core as u32,
                lsn,
                segment,
            });
            captures.push(capture);
        }
        let plan = self.manager.plan(due.id, captures)?;
        Ok(CheckpointJob {
            plan,
            store: Arc::clone(&self.store),
            due: DueManifest {
                id: due.id,
                epoch: due.epoch,
                parent: due.parent.map(|p| p.id),
                wal,
                sources: std::mem::take(&mut self.sources),
            },
        })
    }

    /// Takes a finished job's outcome and returns how the attempt ended (also when it was
    /// aborted earlier by its deadline or a refused capture; poll with [`Self::poll_outcome`]
    /// for those).
    ///
    /// # Errors
    /// [`Error::Refused`] for the outcome of a job this coordinator did not hand out last.
    pub fn handle_job(&mut self, outcome: JobOutcome) -> Result<CheckpointOutcome, Error> {
        let id = outcome.id;
        match outcome.result {
            Ok((staged, manifest_bytes)) => {
                let (parts_written, bytes_written, keys) =
                    (staged.parts_written, staged.bytes_written, staged.keys);
                self.machine
                    .handle_published(id, Ok(()))
                    .map_err(|e| Error::Refused(e.to_string()))?;
                self.manager.commit(staged)?;
                let event = self.machine.poll_event();
                let Some(Event::Committed(checkpoint)) = event else {
                    return Err(Error::Refused(format!(
                        "checkpoint {id} published but not committed: {event:?}"
                    )));
                };
                self.positions = (0..CORES)
                    .map(|c| self.machine.committed_position(c).unwrap_or(Lsn::ZERO))
                    .collect();
                Ok(CheckpointOutcome::Committed(CommittedCheckpoint {
                    checkpoint,
                    positions: self.positions.clone(),
                    parts_written,
                    bytes_written,
                    manifest_bytes,
                    keys,
                    elapsed: self.triggered_at.elapsed(),
                    write_time: outcome.took,
                }))
            }
            Err((error, leftover)) => {
                self.machine
                    .handle_published(id, Err(failure_of(&error)))
                    .map_err(|e| Error::Refused(e.to_string()))?;
                self.manager.abort(id, leftover)?;
                let attempt = match self.machine.poll_event() {
                    Some(Event::Aborted { attempt, .. }) => attempt,
                    _ => Checkpoint { id, epoch: 0 },
                };
                Ok(CheckpointOutcome::Aborted {
                    attempt,
                    reason: error.to_string(),
                })
            }
        }
    }

    /// An outcome reached without a job: an attempt aborted by its deadline, a regressed
    /// position, or a plan the manager refused.
    pub fn poll_outcome(&mut self) -> Option<CheckpointOutcome> {
        self.machine.handle_timeout(self.now());
        match self.machine.poll_event()? {
            Event::Aborted { attempt, reason } => {
                // Nothing of it reached the manager, or its plan was refused there.
                Some(CheckpointOutcome::Aborted {
                    attempt,
                    reason: reason_text(reason),
                })
            }
            Event::Committed(checkpoint) => {
                Some(CheckpointOutcome::Committed(CommittedCheckpoint {
                    checkpoint,
                    positions: self.positions.clone(),
                    parts_written: 0,
                    bytes_written: 0,
                    manifest_bytes: 0,
                    keys: 0,
                    elapsed: Duration::ZERO,
                    write_time: Duration::ZERO,
                }))
            }
        }
    }

    /// Deletes the manifests beyond the retained ones and the parts no retained manifest
    /// references (parts of an attempt in progress are kept), and says below which LSN each
    /// core's WAL may now be truncated.
    ///
    /// # Errors
    /// As [`IncrementalCheckpointManager::collect_garbage`].
    pub fn collect_garbage(&self) -> Result<GcReport, Error> {
        let in_progress = match self.machine.state() {
            lamina_core::checkpoint::State::Idle => None,
            _ => Some(self.machine.last_id()),
        };
        self.manager.collect_garbage(&*self.store, in_progress)
    }

    /// The last committed checkpoint.
    #[must_use]
    pub fn current(&self) -> Option<Checkpoint> {
        self.machine.current()
    }

    /// Whether an attempt is in progress.
    #[must_use]
    pub fn in_progress(&self) -> bool {
        self.machine.state() != lamina_core::checkpoint::State::Idle
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.store
    }

    /// The incremental manager.
    #[must_use]
    pub fn manager(&self) -> &IncrementalCheckpointManager {
        &self.manager
    }
}

fn failure_of(e: &Error) -> Failure {
    match e {
        Error::Checkpoint { failure, .. } => *failure,
        _ => Failure::Other,
    }
}

fn reason_text(reason: AbortReason) -> String {
    reason.to_string()
}

impl<const CORES: usize> std::fmt::Debug for CheckpointCoordinator<CORES> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointCoordinator")
            .field("state", &self.machine.state())
            .field("current", &self.machine.current())
            .finish_non_exhaustive()
    }
}
