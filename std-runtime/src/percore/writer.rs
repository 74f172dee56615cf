//! [`CoreWalWriter`]: one core's log, owned by that core's thread.

use crate::{Error, Lsn, SegmentStorage, WriteAheadLog};

/// The writer of one core's log. It owns the log: move it to the core's thread; no lock is
/// shared with the other cores.
///
/// Records belong to the epoch in force when they are appended. A log starts in epoch 0 (before
/// any marker); [`Self::begin_epoch`] writes an epoch marker and moves the epoch forward, and
/// only forward. Dropping the writer without [`Self::close`] is a crash: what was not synced may
/// be lost, and the next open recovers.
pub struct CoreWalWriter<S: SegmentStorage> {
    core: usize,
    log: WriteAheadLog<S>,
    epoch: u64,
}

impl<S: SegmentStorage> CoreWalWriter<S> {
    pub(crate) fn new(core: usize, log: WriteAheadLog<S>, epoch: u64) -> Self {
        CoreWalWriter { core, log, epoch }
    }

    /// The core this writer belongs to.
    #[must_use]
    pub fn core(&self) -> usize {
        self.core
    }

    /// The epoch in force: the records appended now belong to it.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Appends a data record to the current epoch and returns its LSN (see
    /// [`WriteAheadLog::append`]).
    ///
    /// # Errors
    /// As [`WriteAheadLog::append`].
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn, Error> {
        self.log.append(payload)
    }

    /// Starts `epoch`: writes an epoch marker (record kind 2) and returns its LSN; the records
    /// appended after it belong to `epoch`. Like any record, the marker is durable once synced.
    ///
    /// # Errors
    /// [`Error::EpochNotIncreasing`] when `epoch` is not above the epoch in force (nothing is
    /// written then); otherwise as [`WriteAheadLog::append`].
    pub fn begin_epoch(&mut self, epoch: u64) -> Result<Lsn, Error> {
        if epoch <= self.epoch {
            return Err(Error::EpochNotIncreasing {
                core: self.core,
                current: self.epoch,
                requested: epoch,
            });
        }
        let lsn = self.log.append_epoch(epoch)?;
        self.epoch = epoch;
        Ok(lsn)
    }

    /// Writes and syncs everything appended; returns the durable LSN (see
    /// [`WriteAheadLog::sync`]).
    ///
    /// # Errors
    /// As [`WriteAheadLog::sync`].
    pub fn sync(&mut self) -> Result<Lsn, Error> {
        self.log.sync()
    }

    /// Every record of this core up to this LSN is durable.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        self.log.durable_lsn()
    }

    /// Closes the core's log: syncs and seals it (see [`WriteAheadLog::close`]).
    ///
    /// # Errors
    /// As [`WriteAheadLog::close`].
    pub fn close(self) -> Result<Lsn, Error> {
        self.log.close()
    }

    /// The core's log, to read it or truncate it.
    pub fn log_mut(&mut self) -> &mut WriteAheadLog<S> {
        &mut self.log
    }

    /// Gives the log up without closing it (as in a crash, what was not synced may be lost).
    #[must_use]
    pub fn into_log(self) -> WriteAheadLog<S> {
        self.log
    }
}
