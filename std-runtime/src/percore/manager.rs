//! [`PerCoreWalManager`]: opens one log per core, recovers them, reads them, hands the writers
//! out.

use super::merge;
use super::recovery::{self, CoreRecord, CoreRecovery, PerCoreRecovery};
use super::writer::CoreWalWriter;
use crate::RecoveryReport;
use crate::{Error, Lsn, Options, SegmentStorage, WriteAheadLog};
use lamina_core::record::Kind;

/// A set of per-core logs, opened and recovered, before its writers are handed to the cores.
///
/// Core `i`'s log is a [`WriteAheadLog`] whose segment headers carry `core = i`. While the
/// manager holds the logs it reads them: [`Self::read_core`] for one core's records with their
/// epochs, [`Self::read_merged`] for every core's in (epoch, core, LSN) order. Then
/// [`Self::writers`] hands out one [`CoreWalWriter`] per core, to move to its thread.
///
/// ```
/// use lamina::{Lsn, Options, PerCoreWalManager};
/// # use lamina_tests::sim::SimStorage;
/// # fn main() -> Result<(), lamina::Error> {
/// # let storages = vec![SimStorage::new(1), SimStorage::new(2)];
/// // On the file backend: `PerCoreWalManager::open(dir, 2, Options::default())`.
/// let (manager, _recovery) = PerCoreWalManager::open_with(storages, Options::default())?;
/// let mut storages = Vec::new();
/// for mut writer in manager.writers() {
///     // (Each writer would move to its core's thread.)
///     writer.begin_epoch(1)?;
///     writer.append(b"in epoch 1")?;
///     writer.sync()?;
///     storages.push(writer.into_log().into_storage());
/// }
///
/// let (mut manager, recovery) = PerCoreWalManager::open_with(storages, Options::default())?;
/// assert_eq!(recovery.records(), 2);
/// manager.read_merged(|r| {
///     println!("epoch {} core {} LSN {}: {:?}", r.epoch, r.core, r.lsn, r.payload);
/// })?;
/// # Ok(())
/// # }
/// ```
pub struct PerCoreWalManager<S: SegmentStorage> {
    logs: Vec<WriteAheadLog<S>>,
    /// The epoch each core continues in.
    epochs: Vec<u64>,
}

impl<S: SegmentStorage> PerCoreWalManager<S> {
    /// Opens one log per storage (core `i` in `storages[i]`), each with `options` and
    /// `options.core = i`, recovers each, and reads each once to find its epoch boundaries and
    /// the epoch it continues in.
    ///
    /// Opening reads each whole log once more after its recovery (headers and frames, no payload
    /// kept). A log that [`crate::Mode::SkipCorrupt`] recovered past damaged records is read
    /// stepping over them; one where it skipped a whole segment cannot be read
    /// ([`WriteAheadLog::read_from`] ends at it too), so its set does not open.
    ///
    /// # Errors
    /// [`Error::CoreSet`] for an empty set, more cores than a header can name, or a log whose
    /// headers name another core; what [`WriteAheadLog::open_with`] returns for a core;
    /// [`Error::Read`] when the recovered log cannot be read back.
    pub fn open_with(storages: Vec<S>, options: Options) -> Result<(Self, PerCoreRecovery), Error>
    where
        S: Send,
    {
        Self::open_in(storages, options, "", None)
    }

    /// [`Self::open_with`], naming `dir` in its errors. With `set_id`, core `i`'s log has the
    /// log id `core_log_id(set_id, i)` (a new one is created with it; one that has another is
    /// refused: it belongs to another set).
    pub(crate) fn open_in(
        storages: Vec<S>,
        options: Options,
        dir: &str,
        set_id: Option<u64>,
    ) -> Result<(Self, PerCoreRecovery), Error>
    where
        S: Send,
    {
        // The cores' logs are recovered and scanned in parallel: the logs are independent, and
        // reading a large one is most of the time a recovery takes.
        Ok(opened(open_cores(
            storages,
            options,
            dir,
            set_id,
            &|core, log, report| recovery::scan(log, core, report).map_err(|e| in_core(core, e)),
        )?))
    }

    /// [`Self::open_in`] up to the scan: each core's log opened and recovered, not yet read
    /// back. [`Unscanned::scan`] finishes the open; a caller that reads every core's records
    /// anyway scans each with [`recovery::scan_with`] while it reads, and builds the set with
    /// [`Self::from_scanned`].
    pub(crate) fn open_unscanned(
        storages: Vec<S>,
        options: Options,
        dir: &str,
        set_id: Option<u64>,
    ) -> Result<Unscanned<S>, Error>
    where
        S: Send,
    {
        let cores = open_cores(storages, options, dir, set_id, &|_, _, report| Ok(report))?;
        Ok(Unscanned { cores })
    }

    /// The set of `logs` (core `i`'s log in `logs[i]`), each scanned as `recovery` says.
    pub(crate) fn from_scanned(logs: Vec<WriteAheadLog<S>>, recovery: &PerCoreRecovery) -> Self {
        let epochs = recovery.cores.iter().map(|c| c.epoch).collect();
        PerCoreWalManager { logs, epochs }
    }

    /// How many cores the set has.
    #[must_use]
    pub fn cores(&self) -> usize {
        self.logs.len()
    }

    /// `core`'s log, to read or truncate it before its writer is handed out.
    ///
    /// # Errors
    /// [`Error::NoSuchCore`].
    pub fn log_mut(&mut self, core: usize) -> Result<&mut WriteAheadLog<S>, Error> {
        let cores = self.logs.len();
        self.logs
            .get_mut(core)
            .ok_or(Error::NoSuchCore { core, cores })
    }

    /// Every core's log, in core order (to read them on several threads).
    pub(crate) fn logs_mut(&mut self) -> &mut [WriteAheadLog<S>] {
        &mut self.logs
    }

    /// Hands `core`'s durable data records with an LSN from `from` on to `each`, in LSN order,
    /// each with the epoch it belongs to (also when its segment started after the epoch's
    /// marker: the segment header carries the epoch in force). Payloads come from a reused
    /// window: copy what you keep.
    ///
    /// # Errors
    /// [`Error::NoSuchCore`]; otherwise what reading the log returns ([`Error::Read`] for
    /// damage; the records handed over before it are valid).
    pub fn read_core(
        &mut self,
        core: usize,
        from: Lsn,
        mut each: impl FnMut(CoreRecord<'_>),
    ) -> Result<(), Error> {
        let log = self.log_mut(core)?;
        let mut window = vec![0u8; log.read_window_len()];
        let upto = log.durable_lsn();
        log.read_records(from, upto, &mut window, &mut |e| {
            if e.kind == Kind::Data {
                each(CoreRecord {
                    core,
                    epoch: e.epoch,
                    lsn: e.lsn,
                    payload: e.payload,
                });
            }
        })
        .map_err(|e| in_core(core, e))
    }

    /// Hands every core's durable data records to `each` in one stream sorted by (epoch, core,
    /// LSN): for each epoch in turn, core 0's records of it, then core 1's, and so on.
    ///
    /// A k-way merge: each core's log is read once, on its own scoped thread, at most 16
    /// records ahead of the merge (copied into buffers that are reused), so memory is bounded
    /// per core (a read window and about 32 payload buffers), not by the size of the logs.
    ///
    /// # Errors
    /// What reading a log returns; [`Error::Read`] when a core's epochs go backwards (only a log
    /// written without [`CoreWalWriter::begin_epoch`]'s check can hold that). The records
    /// handed over before an error are valid.
    pub fn read_merged(&mut self, mut each: impl FnMut(CoreRecord<'_>)) -> Result<(), Error>
    where
        S: Send,
    {
        merge::merged(&mut self.logs, &mut each)
    }

    /// The writers, one per core in core order, each continuing in the epoch its log ended in.
    #[must_use]
    pub fn writers(self) -> Vec<CoreWalWriter<S>> {
        self.logs
            .into_iter()
            .zip(self.epochs)
            .enumerate()
            .map(|(core, (log, epoch))| CoreWalWriter::new(core, log, epoch))
            .collect()
    }
}

/// The logs of a per-core set opened and recovered, not yet scanned (see
/// [`PerCoreWalManager::open_unscanned`]): per core, in core order, its log and what its
/// recovery found.
pub(crate) struct Unscanned<S: SegmentStorage> {
    pub(crate) cores: Vec<(WriteAheadLog<S>, RecoveryReport)>,
}

impl<S: SegmentStorage + Send> Unscanned<S> {
    /// Scans each core's log (in parallel), finishing the open as
    /// [`PerCoreWalManager::open_with`] does.
    ///
    /// # Errors
    /// What reading a core's log back returns.
    pub(crate) fn scan(self) -> Result<(PerCoreWalManager<S>, PerCoreRecovery), Error> {
        let scanned = crate::parallel::map_each(self.cores, &|core, (mut log, report)| {
            let scanned = recovery::scan(&mut log, core, report).map_err(|e| in_core(core, e));
            scanned.map(|scanned| (log, scanned))
        });
        Ok(opened(each_core(scanned)?))
    }
}

/// What [`open_cores`] does with each core's log once it is opened and checked: scan it, or
/// keep its recovery report.
type AfterOpen<S, T> =
    dyn Fn(usize, &mut WriteAheadLog<S>, RecoveryReport) -> Result<T, Error> + Sync;

/// Opens one log per storage, in parallel, each followed by `then`.
fn open_cores<S: SegmentStorage + Send, T: Send>(
    storages: Vec<S>,
    options: Options,
    dir: &str,
    set_id: Option<u64>,
    then: &AfterOpen<S, T>,
) -> Result<Vec<(WriteAheadLog<S>, T)>, Error> {
    let set_error = |detail: String| Error::CoreSet {
        dir: dir.to_owned(),
        detail,
    };
    if storages.is_empty() {
        return Err(set_error("a per-core set needs at least one core".into()));
    }
    for core in 0..storages.len() {
        u32::try_from(core)
            .map_err(|_| set_error(format!("core {core} cannot be named in a header")))?;
    }
    each_core(crate::parallel::map_each(storages, &|core, storage| {
        let (mut log, report) = open_core(core, storage, options, set_id, &set_error)?;
        let then = then(core, &mut log, report)?;
        Ok((log, then))
    }))
}

/// One core's result from [`crate::parallel::map_each`]: `None` when its job panicked.
type CoreResult<T> = Option<Result<T, Error>>;

/// Each core's result (core `i`'s in `results[i]`, `None` for a core whose open panicked), or
/// the first core's error.
fn each_core<T>(results: Vec<CoreResult<T>>) -> Result<Vec<T>, Error> {
    results
        .into_iter()
        .enumerate()
        .map(|(core, result)| {
            result.unwrap_or_else(|| {
                Err(Error::Refused(format!(
                    "opening the log of core {core} panicked"
                )))
            })
        })
        .collect()
}

/// The set of the logs `opened`, each with what its scan found.
fn opened<S: SegmentStorage>(
    opened: Vec<(WriteAheadLog<S>, CoreRecovery)>,
) -> (PerCoreWalManager<S>, PerCoreRecovery) {
    let (logs, cores): (Vec<_>, Vec<_>) = opened.into_iter().unzip();
    let recovery = PerCoreRecovery { cores };
    (PerCoreWalManager::from_scanned(logs, &recovery), recovery)
}

/// Opens core `core`'s log from `storage` and checks that its headers name this core (and this
/// set's log id).
fn open_core<S: SegmentStorage>(
    core: usize,
    storage: S,
    options: Options,
    set_id: Option<u64>,
    set_error: &(dyn Fn(String) -> Error + Sync),
) -> Result<(WriteAheadLog<S>, RecoveryReport), Error> {
    let id = u32::try_from(core)
        .map_err(|_| set_error(format!("core {core} cannot be named in a header")))?;
    let log_id = set_id.map(|set| super::core_log_id(set, core));
    let (log, report) = WriteAheadLog::open_with(
        storage,
        Options {
            core: id,
            log_id: log_id.or(options.log_id),
            ..options
        },
    )
    .map_err(|e| in_core(core, e))?;
    let found = log.segment().core;
    if found != id {
        return Err(set_error(format!(
            "the log of core {core} belongs to core {found} (its segment headers say so)"
        )));
    }
    let found = log.segment().log_id;
    if let Some(expected) = log_id
        && found != expected
    {
        return Err(set_error(format!(
            "the log of core {core} belongs to another set: its log id is {found:#018x}, \
             this set's core {core} has {expected:#018x}"
        )));
    }
    Ok((log, report))
}

/// `e`, saying which core it happened in where the error has room for it.
pub(crate) fn in_core(core: usize, e: Error) -> Error {
    match e {
        Error::Recover {
            detail,
            segment,
            damage,
        } => Error::Recover {
            detail: format!("core {core}: {detail}"),
            segment,
            damage,
        },
        Error::Read { from, detail } => Error::Read {
            from,
            detail: format!("core {core}: {detail}"),
        },
        Error::Storage { op, detail } => Error::Storage {
            op: format!("{op} (core {core})"),
            detail,
        },
        e => e,
    }
}
