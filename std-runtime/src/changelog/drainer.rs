//! [`ChangelogDrainer`]: Ring 1, moving each core's queued changelog entries into its WAL.

use lamina_core::changelog::{Consumer, Entry};

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

/// One core: its queue's consumer half and its log's writer.
struct Lane<'q, S: SegmentStorage, const N: usize> {
    consumer: Consumer<'q, N>,
    writer: CoreWalWriter<S>,
    drained: u64,
}

/// Ring 1: drains each core's changelog queue into that core's WAL, in batches.
///
/// Each put or delete entry becomes one WAL data record whose payload is the entry's encoding;
/// each barrier becomes an epoch marker ([`CoreWalWriter::begin_epoch`]), whose LSN the report
/// gives. A frame leaves the queue only after its record was appended, so an error leaves it
/// queued: nothing is dropped, nothing reordered. When the WAL is slower than Ring 0 the queue
/// fills and Ring 0 sees back-pressure; memory stays bounded by the queues.
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
            })
            .collect();
        Ok(ChangelogDrainer { lanes, batch })
    }

    /// Drains up to one batch from every core: appends each entry to the core's log, then syncs
    /// each core that got any, so that everything drained is durable on `Ok`.
    ///
    /// # Errors
    /// What appending, starting an epoch or syncing returns ([`Error::EpochNotIncreasing`] for a
    /// barrier that does not move its core's epoch forward); [`Error::Changelog`] for a frame
    /// that does not parse. The failing entry and those after it stay queued; the cores before
    /// it were drained.
    pub fn drain(&mut self) -> Result<DrainReport, Error> {
        let mut cores = Vec::with_capacity(self.lanes.len());
        for lane in &mut self.lanes {
            cores.push(drain_lane(lane, self.batch)?);
        }
        Ok(DrainReport { cores })
    }

    /// The queues and writers, in the drainer's order; what was not drained is still queued.
    #[must_use]
    pub fn into_parts(self) -> Vec<(Consumer<'q, N>, CoreWalWriter<S>)> {
        self.lanes
            .into_iter()
            .map(|lane| (lane.consumer, lane.writer))
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
    let mut barriers = Vec::new();
    while entries < batch {
        let Some(frame) = lane.consumer.peek() else {
            break;
        };
        let entry = frame.entry().map_err(|e| Error::Changelog {
            core,
            lsn: None,
            detail: format!("queued entry: {e}"),
        })?;
        match entry {
            Entry::Barrier { epoch } => {
                let lsn = lane.writer.begin_epoch(epoch)?;
                barriers.push(BarrierLsn { epoch, lsn });
            }
            Entry::Put { .. } | Entry::Delete { .. } => {
                lane.writer.append(frame.bytes())?;
            }
        }
        frame.release();
        entries += 1;
    }
    let durable = if entries > 0 {
        lane.writer.sync()?
    } else {
        lane.writer.durable_lsn()
    };
    lane.drained += entries as u64;
    Ok(CoreDrain {
        core,
        entries,
        barriers,
        durable,
        durable_entries: lane.drained,
    })
}

impl<S: SegmentStorage, const N: usize> std::fmt::Debug for ChangelogDrainer<'_, S, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangelogDrainer")
            .field("cores", &self.lanes.len())
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}
