//! [`WalStateStore`]: a small durable key-value store built from the whole path: Ring 0 state
//! and changelog queue, the drainer into per-core WALs with Ring 1's shadow, incremental
//! checkpoints in a checkpoint store, and recovery.

use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Duration;

use lamina_core::changelog::{ByteRing, Entry, PushError};
use lamina_core::crc::crc32c;

use crate::percore::Unscanned;
use crate::snapshot::{
    CheckpointCoordinator, CheckpointOutcome, CheckpointRecoveryReport, CommittedCheckpoint,
    GcReport, IncrementalCheckpointManager, IncrementalConfig, LoadedCheckpoint, Recovered,
    RecoveryManager, Shadow, SourceState,
};
use crate::{
    ChangelogDrainer, ChangelogStateStore, CheckpointStore, CoreWalWriter, Error, Lsn,
    PerCoreRecovery, PerCoreWalManager, SegmentStorage,
};

/// Bytes of each core's changelog queue.
pub const QUEUE_BYTES: usize = 1 << 18;

/// The largest key plus value a [`WalStateStore`] takes (an entry fills at most half a queue).
pub const MAX_ENTRY_BYTES: usize = ByteRing::<QUEUE_BYTES>::MAX_ENTRY_LEN - 5;

/// One mutation of a [`WalStateStore::apply`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `key` maps to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// `key` maps to nothing.
    Delete(Vec<u8>),
}

/// Settings of a [`WalStateStore`].
#[derive(Clone, Copy, Debug)]
pub struct StateStoreConfig {
    /// How checkpoints are split into parts and how many are kept.
    pub incremental: IncrementalConfig,
    /// How long a checkpoint may take to be ready to publish.
    pub checkpoint_timeout: Duration,
}

impl Default for StateStoreConfig {
    fn default() -> Self {
        StateStoreConfig {
            incremental: IncrementalConfig::default(),
            checkpoint_timeout: Duration::from_secs(60),
        }
    }
}

/// One core: its Ring 0 state and queue, and its WAL writer with Ring 1's shadow.
struct Core<S: SegmentStorage> {
    ring: Box<ByteRing<QUEUE_BYTES>>,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// In the drainer while it runs; always back after (a drain error poisons the log, and
    /// the writer is kept to say so).
    writer: Option<CoreWalWriter<S>>,
    shadow: Option<Shadow>,
}

/// A durable key-value store over `CORES` per-core WALs and a checkpoint store: the reference
/// user of lamina's whole path.
///
/// Each key belongs to one core (by hash). A mutation goes as it would in an engine: Ring 0
/// applies it to the core's in-memory state and queues its changelog entry
/// ([`ChangelogStateStore`]); the drainer ([`ChangelogDrainer`]) appends it to the core's WAL,
/// applies it to Ring 1's [`Shadow`], and syncs. [`Self::put`], [`Self::delete`] and
/// [`Self::apply`] return once the mutations are durable: that is the acknowledgement.
///
/// [`Self::checkpoint`] pushes a barrier into every core's queue, captures each shadow at it,
/// writes the changed parts ([`IncrementalCheckpointManager`]) and publishes the manifest
/// ([`CheckpointCoordinator`]), then collects garbage and truncates each WAL below what the
/// oldest kept checkpoint needs. [`Self::open`] recovers: the latest valid checkpoint, then
/// each WAL replayed after it ([`RecoveryManager`]).
///
/// Here one thread plays Ring 0 and Ring 1 in turn; an engine runs them on their own threads
/// with the same types.
pub struct WalStateStore<S: SegmentStorage, const CORES: usize = 1> {
    cores: Vec<Core<S>>,
    coordinator: CheckpointCoordinator<CORES>,
    recovery: CheckpointRecoveryReport,
}

impl<S: SegmentStorage, const CORES: usize> WalStateStore<S, CORES> {
    /// Opens the store over `wal` (a per-core set of `CORES` logs, just opened, with what its
    /// opening found) and `store`, recovering the state.
    ///
    /// # Errors
    /// [`Error::CoreCountMismatch`] when `wal` has another number of cores; what
    /// [`RecoveryManager::recover`] returns; [`Error::Refused`] for settings out of range.
    pub fn open(
        mut wal: PerCoreWalManager<S>,
        wal_recovery: &PerCoreRecovery,
        store: Arc<dyn CheckpointStore>,
        config: StateStoreConfig,
    ) -> Result<Self, Error>
    where
        S: Send,
    {
        Self::check_cores(wal.cores())?;
        config.incremental.check()?;
        let loaded = RecoveryManager::load(&*store, CORES)?;
        let recovered = RecoveryManager::replay(loaded, &mut wal, wal_recovery)?;
        Self::assemble(wal, recovered, store, config)
    }

    /// [`Self::open`] over logs opened but not yet scanned: each log is read once, scanned as it
    /// is replayed. Uses `preloaded` (the checkpoint loaded from `store` before the WALs were
    /// opened) when the store still holds what it was loaded from. Errors come as from
    /// [`Self::open`] after a scan at the open: a log's scan fails first.
    fn open_unscanned(
        wal: Unscanned<S>,
        store: Arc<dyn CheckpointStore>,
        config: StateStoreConfig,
        preloaded: Option<LoadedCheckpoint>,
    ) -> Result<Self, Error>
    where
        S: Send,
    {
        let loaded = Self::check_cores(wal.cores.len())
            .and_then(|()| config.incremental.check())
            .and_then(|()| match preloaded {
                Some(loaded) if loaded.still_current(&*store)? => Ok(loaded),
                _ => RecoveryManager::load(&*store, CORES),
            });
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                wal.scan()?;
                return Err(e);
            }
        };
        let (recovered, wal) = RecoveryManager::replay_scanning(loaded, wal)?;
        Self::assemble(wal, recovered, store, config)
    }

    /// [`Error::CoreCountMismatch`] unless `cores` is `CORES`.
    fn check_cores(cores: usize) -> Result<(), Error> {
        if cores != CORES {
            return Err(Error::CoreCountMismatch {
                dir: String::new(),
                stored: cores,
                requested: CORES,
            });
        }
        Ok(())
    }

    /// The store over `wal` holding what recovery `recovered`.
    fn assemble(
        wal: PerCoreWalManager<S>,
        recovered: Recovered,
        store: Arc<dyn CheckpointStore>,
        config: StateStoreConfig,
    ) -> Result<Self, Error> {
        let manager = IncrementalCheckpointManager::resume(config.incremental, recovered.layouts)?;
        let coordinator = CheckpointCoordinator::<CORES>::new(
            store,
            manager,
            &recovered.resume,
            config.checkpoint_timeout,
        )?;
        let buckets = config.incremental.buckets;
        let writers = wal.writers();
        // The cores' shadows (each a copy of its state, split into buckets) are built in
        // parallel.
        let work: Vec<_> = writers
            .iter()
            .map(|w| w.core() as u32)
            .zip(&recovered.states)
            .zip(recovered.changed)
            .collect();
        let shadows = crate::parallel::map_each(work, &|_, ((core, state), changed)| {
            Shadow::with_copy_of(core, buckets, state, changed)
        })
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::Refused("a thread building a shadow panicked".into()))?;
        let cores = writers
            .into_iter()
            .zip(recovered.states)
            .zip(shadows)
            .map(|((writer, state), shadow)| Core {
                ring: Box::new(ByteRing::new()),
                shadow: Some(shadow),
                state,
                writer: Some(writer),
            })
            .collect();
        Ok(WalStateStore {
            cores,
            coordinator,
            recovery: recovered.report,
        })
    }

    /// What opening recovered.
    #[must_use]
    pub fn recovery(&self) -> &CheckpointRecoveryReport {
        &self.recovery
    }

    /// The core `key` belongs to.
    #[must_use]
    pub fn core_of(key: &[u8]) -> usize {
        // The high bits of the hash (the buckets use it modulo their count: the low bits).
        ((u64::from(crc32c(key)) * CORES as u64) >> 32) as usize
    }

    /// The value of `key`.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.cores
            .get(Self::core_of(key))?
            .state
            .get(key)
            .map(Vec::as_slice)
    }

    /// The keys and values in `range`, in key order.
    #[must_use]
    pub fn range<R: RangeBounds<Vec<u8>> + Clone>(&self, range: R) -> Vec<(&[u8], &[u8])> {
        let mut out: Vec<(&[u8], &[u8])> = self
            .cores
            .iter()
            .flat_map(|c| {
                c.state
                    .range(range.clone())
                    .map(|(k, v)| (k.as_slice(), v.as_slice()))
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Keys held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cores.iter().map(|c| c.state.len()).sum()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maps `key` to `value`; durable on return.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when key and value exceed [`MAX_ENTRY_BYTES`] or the entry exceeds
    /// the WAL's `max_payload` (nothing changes);
    /// what appending or syncing the WAL returns (the log is then poisoned: reopen).
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.apply([Op::Put(key.to_vec(), value.to_vec())])
    }

    /// Removes `key`; durable on return.
    ///
    /// # Errors
    /// As [`Self::put`].
    pub fn delete(&mut self, key: &[u8]) -> Result<(), Error> {
        self.apply([Op::Delete(key.to_vec())])
    }

    /// Applies `ops` in order, then makes them durable with one sync per core touched: the
    /// batch is acknowledged when this returns `Ok`. On an error, the mutations before it are
    /// applied and may or may not be durable (as with any unacknowledged write).
    ///
    /// # Errors
    /// As [`Self::put`].
    pub fn apply(&mut self, ops: impl IntoIterator<Item = Op>) -> Result<(), Error> {
        let mut touched = [false; CORES];
        for op in ops {
            let key = match &op {
                Op::Put(k, _) | Op::Delete(k) => k.as_slice(),
            };
            let core = Self::core_of(key);
            // An entry the queue takes but the core's WAL would refuse is refused here: queued,
            // it would stay at the queue's head, failing every later drain of the core.
            self.check_fits(core, &op)?;
            loop {
                match self.push(core, &op) {
                    Ok(()) => break,
                    // The queue is full: drain it (Ring 1's turn) and push again.
                    Err(PushError::Full { .. }) => self.drain(core)?,
                    Err(PushError::TooLarge { len, max }) => {
                        return Err(Error::TooLarge {
                            len: len.unwrap_or(usize::MAX),
                            max: u32::try_from(max).unwrap_or(u32::MAX),
                        });
                    }
                    Err(e) => return Err(Error::Refused(format!("core {core}'s queue: {e}"))),
                }
            }
            touched[core] = true;
        }
        for (core, touched) in touched.into_iter().enumerate() {
            if touched {
                self.drain(core)?;
            }
        }
        Ok(())
    }

    /// Checks that `op`'s changelog entry fits `core`'s WAL records.
    fn check_fits(&mut self, core: usize, op: &Op) -> Result<(), Error> {
        let entry = match op {
            Op::Put(key, value) => Entry::Put { key, value },
            Op::Delete(key) => Entry::Delete { key },
        };
        let len = entry.encoded_len().unwrap_or(usize::MAX);
        let max = self
            .cores
            .get_mut(core)
            .and_then(|c| c.writer.as_mut())
            .map_or(u32::MAX, |w| w.log_mut().max_payload);
        if u32::try_from(len).map_or(true, |len| len > max) {
            return Err(Error::TooLarge { len, max });
        }
        Ok(())
    }

    /// Ring 0: applies `op` to `core`'s state once its entry is queued.
    fn push(&mut self, core: usize, op: &Op) -> Result<(), PushError> {
        let Some(c) = self.cores.get_mut(core) else {
            return Ok(());
        };
        let (producer, _) = c.ring.split();
        let mut store = ChangelogStateStore::with_state(std::mem::take(&mut c.state), producer);
        let result = match op {
            Op::Put(k, v) => store.put(k, v),
            Op::Delete(k) => store.delete(k).map(|_| ()),
        };
        c.state = store.into_parts().0;
        result
    }

    /// Ring 1: drains `core`'s queue into its WAL and shadow, durably.
    fn drain(&mut self, core: usize) -> Result<(), Error> {
        self.drain_core(core).map(|_| ())
    }

    fn drain_core(&mut self, core: usize) -> Result<(Vec<crate::BarrierCapture>, Lsn), Error> {
        let Some(c) = self.cores.get_mut(core) else {
            return Err(Error::NoSuchCore { core, cores: CORES });
        };
        let (Some(writer), Some(shadow)) = (c.writer.take(), c.shadow.take()) else {
            return Err(Error::Refused(format!(
                "core {core}'s writer was lost by an earlier failure: reopen the store"
            )));
        };
        let (_, consumer) = c.ring.split();
        let mut drainer =
            ChangelogDrainer::with_shadows(vec![(consumer, writer, shadow)], usize::MAX)?;
        let result = drainer.drain();
        let captures = drainer.take_captures();
        for (_, writer, shadow) in drainer.into_lanes() {
            c.writer = Some(writer);
            c.shadow = shadow;
        }
        let report = result?;
        let durable = report.cores.first().map_or(Lsn::ZERO, |d| d.durable);
        Ok((captures, durable))
    }

    /// Takes a checkpoint: a barrier into every core's queue, each core's shadow captured at
    /// it, the changed parts written, the manifest published; then garbage collected and each
    /// WAL truncated below what the oldest kept checkpoint needs.
    ///
    /// # Errors
    /// [`Error::CheckpointAborted`] when the attempt was given up (the previous checkpoint stays
    /// current, and the store stays usable); what draining or truncating a WAL or collecting
    /// garbage returns.
    pub fn checkpoint(&mut self) -> Result<CommittedCheckpoint, Error> {
        self.checkpoint_with(SourceState {
            watermark: i64::MIN,
            offsets: Vec::new(),
        })
    }

    /// [`Self::checkpoint`], recording `sources` in the manifest.
    ///
    /// # Errors
    /// As [`Self::checkpoint`].
    pub fn checkpoint_with(&mut self, sources: SourceState) -> Result<CommittedCheckpoint, Error> {
        let barriers = self.coordinator.trigger(sources)?;
        for (core, epoch) in barriers {
            self.barrier(core, epoch)?;
        }
        let outcome = match self.coordinator.poll_job() {
            Some(job) => self.coordinator.handle_job(job.run())?,
            None => self.coordinator.poll_outcome().ok_or_else(|| {
                Error::Refused("the checkpoint neither finished nor failed".into())
            })?,
        };
        match outcome {
            CheckpointOutcome::Committed(committed) => {
                self.collect_garbage()?;
                Ok(committed)
            }
            CheckpointOutcome::Aborted { attempt, reason } => Err(Error::CheckpointAborted {
                id: attempt.id,
                reason,
            }),
        }
    }

    /// Pushes `core`'s barrier of `epoch`, drains the core, hands its capture and durability to
    /// the coordinator.
    fn barrier(&mut self, core: usize, epoch: u64) -> Result<(), Error> {
        loop {
            let Some(c) = self.cores.get_mut(core) else {
                return Err(Error::NoSuchCore { core, cores: CORES });
            };
            let (producer, _) = c.ring.split();
            let mut store = ChangelogStateStore::with_state(std::mem::take(&mut c.state), producer);
            let pushed = store.barrier(epoch);
            c.state = store.into_parts().0;
            match pushed {
                Ok(()) => break,
                Err(PushError::Full { .. }) => self.drain(core)?,
                Err(e) => return Err(Error::Refused(format!("barrier of core {core}: {e}"))),
            }
        }
        let (captures, durable) = self.drain_core(core)?;
        for capture in captures {
            self.coordinator.handle_capture(capture)?;
        }
        self.coordinator.handle_durable(core, durable)
    }

    /// Deletes the checkpoints beyond the kept ones and the parts nothing kept references, then
    /// truncates each core's WAL below the oldest kept checkpoint's position (whole segments).
    ///
    /// # Errors
    /// What collecting or truncating returns.
    pub fn collect_garbage(&mut self) -> Result<GcReport, Error> {
        let report = self.coordinator.collect_garbage()?;
        for (c, &below) in self.cores.iter_mut().zip(&report.truncate_before) {
            if let Some(writer) = &mut c.writer {
                writer.log_mut().truncate_before(below)?;
            }
        }
        Ok(report)
    }

    /// The last committed checkpoint.
    #[must_use]
    pub fn current_checkpoint(&self) -> Option<lamina_core::checkpoint::Checkpoint> {
        self.coordinator.current()
    }

    /// The checkpoint store.
    #[must_use]
    pub fn checkpoint_store(&self) -> &Arc<dyn CheckpointStore> {
        self.coordinator.store()
    }

    /// Closes every core's WAL (synced and sealed).
    ///
    /// # Errors
    /// The first error closing a log.
    pub fn close(self) -> Result<(), Error> {
        let mut first = Ok(());
        for c in self.cores {
            if let Some(writer) = c.writer
                && let Err(e) = writer.close()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// Gives the WAL writers up without closing them, as a crash would (what was not synced may
    /// be lost; everything acknowledged was synced). For tests of recovery.
    #[must_use]
    pub fn into_writers(self) -> Vec<CoreWalWriter<S>> {
        self.cores.into_iter().filter_map(|c| c.writer).collect()
    }
}

impl<S: SegmentStorage, const CORES: usize> std::fmt::Debug for WalStateStore<S, CORES> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalStateStore")
            .field("cores", &CORES)
            .field("keys", &self.len())
            .field("checkpoint", &self.coordinator.current())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "file")]
impl<const CORES: usize> WalStateStore<lamina_file::FileStorage, CORES> {
    /// Opens (creating if needed) a store in `dir`: the WALs in `dir/wal` (one directory per
    /// core) and the checkpoints in `dir/checkpoints`, on the file backend.
    ///
    /// # Errors
    /// What opening the per-core set, the checkpoint store, or [`Self::open`] returns.
    pub fn open_dir(
        dir: impl AsRef<std::path::Path>,
        options: crate::Options,
        config: StateStoreConfig,
    ) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let checkpoints = dir.join("checkpoints");
        // The checkpoint is read while the WALs are opened (their tails recovered); each WAL is
        // then read once more, scanned as it is replayed.
        // Only a store whose directories are all there is read, so the read creates nothing
        // before the WALs' lock is held; and what was read without the lock is used only if the
        // store has not changed since ([`LoadedCheckpoint::still_current`]).
        let complete = ["parts", "manifests"]
            .iter()
            .all(|sub| checkpoints.join(sub).is_dir());
        let (wal, preloaded) = std::thread::scope(|scope| {
            let preload = complete.then(|| {
                scope.spawn(|| {
                    let store = crate::FileSystemCheckpointStore::open(&checkpoints).ok()?;
                    let loaded = RecoveryManager::load(&store, CORES).ok();
                    Some((store, loaded))
                })
            });
            let wal = PerCoreWalManager::open_files_unscanned(dir.join("wal"), CORES, options);
            (wal, preload.and_then(|p| p.join().ok().flatten()))
        });
        let wal = wal?;
        let (store, preloaded) = match preloaded {
            Some((store, loaded)) => (store, loaded),
            None => (crate::FileSystemCheckpointStore::open(&checkpoints)?, None),
        };
        Self::open_unscanned(wal, Arc::new(store), config, preloaded)
    }
}
