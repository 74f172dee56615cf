//! [`ChangelogDrainer`]: Ring 1, moving each core's queued changelog entries into its WAL.

use std::time::{Duration, Instant};

use lamina_core::changelog::{Consumer, Entry};

use crate::snapshot::{Capture, Shadow};
use crate::{CoreWalWriter, Error, Lsn, SegmentStorage};

/// The LSN a barrier's epoch marker got in its core's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BarrierLsn {
    /// The epoch the barrier starts.
    pub epoch: u64,
    /// The LSN of its epoch marker.
    pub lsn: Lsn,
}

/// What one [`ChangelogDrainer::drain`] did in one core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreDrain {
    /// The core (its writer's).
    pub core: usize,
    /// Entries taken from the queue and written (barriers included).
    pub entries: usize,
    /// The barriers among them, in order, with their markers' LSNs.
    pub barriers: Vec<BarrierLsn>,
    /// The core's log is durable through this LSN: every entry drained so far is durable.
    pub durable: Lsn,
    /// Entries drained from this core since the drainer was built, all durable now.
    pub durable_entries: u64,
    /// Time this drain spent syncing the core's log (zero when it drained nothing).
    pub sync_time: Duration,
}

/// What one [`ChangelogDrainer::drain`] did, per core in the drainer's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReport {
    /// Per core.
    pub cores: Vec<CoreDrain>,
}

impl DrainReport {
    /// Entries drained in all cores.
    #[must_use]
    pub fn entries(&self) -> usize {
        self.cores.iter().map(|c| c.entries).sum()
    }
}

/// A core's state captured at a barrier, by a drainer that keeps shadows
/// ([`ChangelogDrainer::with_shadows`]): exactly the mutations queued before the barrier.
#[derive(Clone, Debug)]
pub struct BarrierCapture {
    /// The core.
    pub core: usize,
    /// The barrier and its marker's LSN: the checkpoint covers the core's WAL up to it.
    pub barrier: BarrierLsn,
    /// The segment holding the marker.
    pub segment: crate::SegmentId,
    /// The state.
    pub capture: Capture,
}

/// A drain hands released frames back to Ring 0 once they fill this fraction of the ring (and
/// at the end of each core's batch, and before a capture): a producer waiting for room waits for
/// at most this much more draining than with frames handed back one by one.
const HAND_BACK_FRACTION: usize = 64;

/// One core: its queue's consumer half and its log's writer.
struct Lane<'q, S: SegmentStorage, const N: usize> {
    consumer: Consumer<'q, N>,
    writer: CoreWalWriter<S>,
    drained: u64,
    /// Ring 1's copy of the core's state, when the drainer keeps one.
    shadow: Option<Shadow>,
    /// Barriers written whose report or capture was not handed out yet (a batch that fails
    /// after a barrier keeps it here for the next report).
    barriers: Vec<BarrierLsn>,
    captures: Vec<BarrierCapture>,
}

/// Ring 1: drains each core's changelog queue into that core's WAL, in batches.
///
/// Each put or delete entry becomes one WAL data record whose payload is the entry's encoding;
/// each barrier becomes an epoch marker ([`CoreWalWriter::begin_epoch`]), whose LSN the report
/// gives. A frame leaves the queue only after its record was appended, so an error leaves it
/// queued: nothing is dropped, nothing reordered. When the WAL is slower than Ring 0 the queue
/// fills and Ring 0 sees back-pressure; memory stays bounded by the queues.
///
/// The drainer is the logs' group commit: each core's batch ends with one sync. Open the
/// writers' logs with [`SyncPolicy::Manual`](crate::SyncPolicy::Manual), so that a log cuts a
/// write only at those syncs (or when its buffer fills); the default batch policy cuts a write,
/// and syncs it, every 64 KiB, which at a million entries per second is some 1500 syncs per
/// second, each blocking the drainer.
///
/// A drain hands the frames it wrote back to Ring 0 in runs (at least every 64th of the ring,
/// before a capture, and at the end of each core's batch, before the sync): one store of the
/// ring's shared index per run rather than per frame.
///
/// A ring's largest entry (`ByteRing::<N>::MAX_ENTRY_LEN`, `N / 2 - 4` bytes) should not exceed
/// the log's largest record: an entry the log refuses ([`Error::TooLarge`]) stays queued and
/// every later drain of that core returns the same error.
pub struct ChangelogDrainer<'q, S: SegmentStorage, const N: usize> {
    lanes: Vec<Lane<'q, S, N>>,
    batch: usize,
}

impl<'q, S: SegmentStorage, const N: usize> ChangelogDrainer<'q, S, N> {
    /// A drainer over `(queue, writer)` pairs, one per core, taking at most `batch` entries per
    /// core per [`Self::drain`] (a batch ends with one sync).
    ///
    /// # Errors
    /// [`Error::Refused`] when `batch` is 0, or two pairs have the same core.
    pub fn new(
        pairs: Vec<(Consumer<'q, N>, CoreWalWriter<S>)>,
        batch: usize,
    ) -> Result<Self, Error> {
        if batch == 0 {
            return Err(Error::Refused(
                "a changelog drainer batch of 0 entries would never drain".into(),
            ));
        }
        let mut cores: Vec<usize> = pairs.iter().map(|(_, w)| w.core()).collect();
        cores.sort_unstable();
        if cores.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
            return Err(Error::Refused(
                "a changelog drainer got two writers of the same core".into(),
            ));
        }
        let lanes = pairs
            .into_iter()
            .map(|(consumer, writer)| Lane {
                consumer,
                writer,
                drained: 0,
                shadow: None,
                barriers: Vec::new(),
                captures: Vec::new(),
            })
            .collect();
        Ok(ChangelogDrainer { lanes, batch })
    }

    /// A drainer that also keeps Ring 1's copy of each core's state: each put or delete is
    /// applied to the core's [`Shadow`] once its record is appended, and at each barrier the
    /// shadow is captured ([`Shadow::capture`]), for [`Self::take_captures`]. The
    /// shadows must hold the state the queues start from (what recovery rebuilt).
    ///
    /// # Errors
    /// As [`Self::new`]; [`Error::Refused`] when a shadow's core is not its writer's.
    pub fn with_shadows(
        lanes: Vec<(Consumer<'q, N>, CoreWalWriter<S>, Shadow)>,
        batch: usize,
    ) -> Result<Self, Error> {
        if let Some((_, w, s)) = lanes.iter().find(|(_, w, s)| s.core() as usize != w.core()) {
            return Err(Error::Refused(format!(
                "the shadow of core {} was paired with the writer of core {}",
                s.core(),
                w.core()
            )));
        }
        let (pairs, shadows): (Vec<_>, Vec<_>) =
            lanes.into_iter().map(|(c, w, s)| ((c, w), s)).unzip();
        let mut drainer = Self::new(pairs, batch)?;
        for (lane, shadow) in drainer.lanes.iter_mut().zip(shadows) {
            lane.shadow = Some(shadow);
        }
        Ok(drainer)
    }

    /// The states captured at the barriers drained so far, in drain order, once each.
    pub fn take_captures(&mut self) -> Vec<BarrierCapture> {
        self.lanes
            .iter_mut()
            .flat_map(|lane| std::mem::take(&mut lane.captures))
            .collect()
    }

    /// `core`'s shadow, when the drainer keeps them.
    #[must_use]
    pub fn shadow(&self, core: usize) -> Option<&Shadow> {
        self.lanes
            .iter()
            .find(|lane| lane.writer.core() == core)
            .and_then(|lane| lane.shadow.as_ref())
    }

    /// `core`'s writer (to truncate its log after a checkpoint, for example).
    pub fn writer_mut(&mut self, core: usize) -> Option<&mut CoreWalWriter<S>> {
        self.lanes
            .iter_mut()
            .find(|lane| lane.writer.core() == core)
            .map(|lane| &mut lane.writer)
    }

    /// Drains up to one batch from every core: appends each entry to the core's log, then syncs
    /// each core that got any, so that everything drained is durable on `Ok`.
    ///
    /// # Errors
    /// What appending, starting an epoch or syncing returns ([`Error::EpochNotIncreasing`] for a
    /// barrier that does not move its core's epoch forward); [`Error::Changelog`] for a frame
    /// that does not parse. The failing entry and those after it stay queued; the other cores
    /// are drained all the same, and the first error is returned. Barriers (and captures)
    /// written before a failure are kept for the next report.
    pub fn drain(&mut self) -> Result<DrainReport, Error> {
        let mut cores = Vec::with_capacity(self.lanes.len());
        let mut first_error = None;
        for lane in &mut self.lanes {
            match drain_lane(lane, self.batch) {
                Ok(core) => cores.push(core),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(DrainReport { cores }),
        }
    }

    /// The queues and writers, in the drainer's order; what was not drained is still queued.
    #[must_use]
    pub fn into_parts(self) -> Vec<(Consumer<'q, N>, CoreWalWriter<S>)> {
        self.lanes
            .into_iter()
            .map(|lane| (lane.consumer, lane.writer))
            .collect()
    }

    /// The queues, writers and shadows, in the drainer's order (captures not taken are
    /// dropped).
    #[must_use]
    pub fn into_lanes(self) -> Vec<(Consumer<'q, N>, CoreWalWriter<S>, Option<Shadow>)> {
        self.lanes
            .into_iter()
            .map(|lane| (lane.consumer, lane.writer, lane.shadow))
            .collect()
    }

    /// The writers, in the drainer's order (to close them, or keep writing).
    #[must_use]
    pub fn into_writers(self) -> Vec<CoreWalWriter<S>> {
        self.lanes.into_iter().map(|lane| lane.writer).collect()
    }
}

/// Drains up to `batch` entries of one core and syncs if any were written.
fn drain_lane<S: SegmentStorage, const N: usize>(
    lane: &mut Lane<'_, S, N>,
    batch: usize,
) -> Result<CoreDrain, Error> {
    let core = lane.writer.core();
    let mut entries = 0;
    let result = drain_entries(lane, batch, &mut entries);
    // Also after an error: the frames before the failing one are in the log.
    lane.consumer.hand_back();
    lane.drained += entries as u64;
    result?;
    let mut sync_time = Duration::ZERO;
    let durable = if entries > 0 {
        let started = Instant::now();
        let durable = lane.writer.sync()?;
        sync_time = started.elapsed();
        durable
    } else {
        lane.writer.durable_lsn()
    };
    Ok(CoreDrain {
        core,
        entries,
        barriers: std::mem::take(&mut lane.barriers),
        durable,
        durable_entries: lane.drained,
        sync_time,
    })
}

/// Appends up to `batch` queued entries of one core to its log, counting them in `entries`.
fn drain_entries<S: SegmentStorage, const N: usize>(
    lane: &mut Lane<'_, S, N>,
    batch: usize,
    entries: &mut usize,
) -> Result<(), Error> {
    let core = lane.writer.core();
    while *entries < batch {
        let Some(frame) = lane.consumer.peek() else {
            break;
        };
        let entry = frame.entry().map_err(|e| Error::Changelog {
            core,
            lsn: None,
            detail: format!("queued entry: {e}"),
        })?;
        let barrier = match entry {
            Entry::Barrier { epoch } => {
                let lsn = lane.writer.begin_epoch(epoch)?;
                Some(BarrierLsn { epoch, lsn })
            }
            Entry::Put { .. } | Entry::Delete { .. } => {
                lane.writer.append(frame.bytes())?;
                if let Some(shadow) = &mut lane.shadow {
                    shadow.apply(&entry);
                }
                None
            }
        };
        // Frames go back to Ring 0 in runs (one store of the shared index per run, see
        // `ByteRing`), each run at most a 64th of the ring so Ring 0 gets room steadily.
        frame.release_later();
        if let Some(barrier) = barrier {
            lane.barriers.push(barrier);
            if let Some(shadow) = &mut lane.shadow {
                // The capture sorts the changed keys: Ring 0 gets the room of the frames up to
                // the barrier meanwhile.
                lane.consumer.hand_back();
                lane.captures.push(BarrierCapture {
                    core,
                    barrier,
                    segment: lane.writer.log_mut().segment().sequence,
                    capture: shadow.capture(),
                });
            }
        }
        if lane.consumer.unhanded() >= N / HAND_BACK_FRACTION {
            lane.consumer.hand_back();
        }
        *entries += 1;
    }
    Ok(())
}

impl<S: SegmentStorage, const N: usize> std::fmt::Debug for ChangelogDrainer<'_, S, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangelogDrainer")
            .field("cores", &self.lanes.len())
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}
