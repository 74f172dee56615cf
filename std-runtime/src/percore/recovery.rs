//! What opening a per-core set found: per core, the records held, the epoch boundaries and the
//! epoch to continue in.

use crate::read::Entry;
use crate::{Error, Lsn, RecoveryReport, SegmentStorage, WriteAheadLog};
use lamina_core::record::Kind;

/// An epoch marker found in a core's log: the records from `lsn` on belong to `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EpochBoundary {
    /// The epoch the marker starts.
    pub epoch: u64,
    /// The marker's LSN.
    pub lsn: Lsn,
}

/// A data record of one core's log, with the epoch it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreRecord<'a> {
    /// The core whose log holds it.
    pub core: usize,
    /// The epoch in force when it was appended.
    pub epoch: u64,
    /// Its LSN in the core's log.
    pub lsn: Lsn,
    /// Its payload (valid for the call it is handed to).
    pub payload: &'a [u8],
}

/// What opening found in one core's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreRecovery {
    /// The core.
    pub core: usize,
    /// The log's own recovery report (torn tail cut, damage skipped, ...).
    pub report: RecoveryReport,
    /// How many data records the log holds.
    pub records: u64,
    /// The epoch markers the log holds, in LSN order (one entry per marker: the memory is
    /// proportional to the number of epochs held, not to the records).
    pub boundaries: Vec<EpochBoundary>,
    /// The epoch of the first record held (0 for a new log); records before the first boundary
    /// belong to it.
    pub first_epoch: u64,
    /// The epoch in force at the end of the log: the writer continues in it.
    pub epoch: u64,
    /// The log is durable through this LSN.
    pub durable_lsn: Lsn,
}

/// What opening a per-core set found, one entry per core, in core order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerCoreRecovery {
    /// Per core, in core order.
    pub cores: Vec<CoreRecovery>,
}

impl PerCoreRecovery {
    /// What was found in `core`'s log, if the set has that core.
    #[must_use]
    pub fn core(&self, core: usize) -> Option<&CoreRecovery> {
        self.cores.get(core)
    }

    /// The data records held, over every core.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.cores.iter().map(|c| c.records).sum()
    }
}

/// Reads `core`'s recovered log once (no payload is kept) for its counts, boundaries and epoch.
pub(crate) fn scan<S: SegmentStorage>(
    log: &mut WriteAheadLog<S>,
    core: usize,
    report: RecoveryReport,
) -> Result<CoreRecovery, Error> {
    scan_with(log, core, report, &mut |_| {})
}

/// [`scan`], handing every record it reads to `each` as well (data records, epoch and
/// checkpoint markers, in LSN order, from the oldest held): a caller that needs the records
/// reads the log once, not twice.
pub(crate) fn scan_with<S: SegmentStorage>(
    log: &mut WriteAheadLog<S>,
    core: usize,
    report: RecoveryReport,
    each: &mut dyn FnMut(&Entry<'_>),
) -> Result<CoreRecovery, Error> {
    let durable_lsn = log.durable_lsn();
    let mut window = vec![0u8; log.read_window_len()];
    let mut records = 0;
    let mut boundaries = Vec::new();
    let mut first_epoch = None;
    let mut last_epoch = 0;
    log.read_records(Lsn::FIRST, durable_lsn, &mut window, &mut |e: Entry<'_>| {
        first_epoch.get_or_insert(e.epoch);
        last_epoch = e.epoch;
        match e.kind {
            Kind::Data => records += 1,
            Kind::Epoch => boundaries.push(EpochBoundary {
                epoch: e.epoch,
                lsn: e.lsn,
            }),
            _ => {}
        }
        each(&e);
    })?;
    // The segment being appended to says which epoch was in force when it started: it is the
    // epoch to continue in when no record of that segment moved it on (markers read move it on
    // within the segment; epochs only grow, so the larger one is in force).
    let header_epoch = log.segment().epoch;
    Ok(CoreRecovery {
        core,
        report,
        records,
        boundaries,
        first_epoch: first_epoch.unwrap_or(header_epoch),
        epoch: last_epoch.max(header_epoch),
        durable_lsn,
    })
}
