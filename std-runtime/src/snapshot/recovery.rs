//! [`RecoveryManager`]: the latest valid checkpoint loaded and verified, then each core's WAL
//! replayed from the checkpoint's position.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lamina_core::changelog::Entry;
use lamina_core::checkpoint::Checkpoint;
use lamina_core::manifest::Manifest;

use super::layout::{CoreLayout, DeltaRef, PartRef, Placement, placement};
use super::overlay::{Overlay, State};
use super::part::{Header, Kind as PartKind, bucket_of, read as read_part};
use crate::percore::{Unscanned, scan_with};
use crate::read::Entry as ReadEntry;
use crate::{
    CheckpointStore, CoreRecovery, Error, Lsn, PerCoreRecovery, PerCoreWalManager, RecoveryReport,
    SegmentStorage, SkippedManifest,
};

/// One core's part of a [`CheckpointRecoveryReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreReplay {
    /// The core.
    pub core: usize,
    /// Keys loaded from the checkpoint's parts.
    pub keys_loaded: u64,
    /// The WAL was replayed from this LSN on (the checkpoint's position plus one).
    pub from: Lsn,
    /// Changelog records replayed from the WAL.
    pub records: u64,
    /// Bytes the WAL's recovery cut from its torn tail (0 when the tail was whole).
    pub torn_bytes: u64,
    /// The LSN of the last record replayed.
    pub last_lsn: Option<Lsn>,
}

/// What [`RecoveryManager::recover`] did.
#[derive(Debug)]
pub struct CheckpointRecoveryReport {
    /// The checkpoint loaded, `None` when there was none (the WALs were replayed from the
    /// start).
    pub checkpoint: Option<Checkpoint>,
    /// Newer manifests passed over because they are damaged, newest first: when not empty,
    /// recovery fell back to an older checkpoint.
    pub skipped: Vec<SkippedManifest>,
    /// Parts read and verified.
    pub parts_loaded: usize,
    /// Their bytes.
    pub part_bytes: u64,
    /// Per core.
    pub cores: Vec<CoreReplay>,
    /// Time taken: parts and replay.
    pub elapsed: Duration,
}

/// Where checkpointing resumes after recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// The checkpoint loaded and each core's position in it.
    pub current: Option<(Checkpoint, Vec<Lsn>)>,
    /// The highest epoch found in any manifest read or any WAL epoch marker.
    pub last_epoch: u64,
    /// The highest checkpoint id of any stored manifest, damaged or not.
    pub last_id: u64,
}

/// What recovery rebuilt.
#[derive(Debug)]
pub struct Recovered {
    /// Per core, its state.
    pub states: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Per core, the keys the WAL replay put or deleted: they differ from the checkpoint, and
    /// the next checkpoint must store them.
    pub changed: Vec<BTreeSet<Vec<u8>>>,
    /// Per core, the checkpoint's parts (for [`crate::IncrementalCheckpointManager::resume`]).
    pub layouts: Vec<CoreLayout>,
    /// Where checkpointing resumes.
    pub resume: ResumePoint,
    /// What was done.
    pub report: CheckpointRecoveryReport,
}

/// Recovers a set of per-core states: the latest valid checkpoint, falling back past damaged
/// newer manifests (and saying so), every part verified (size and CRC32C by the store, its
/// structure here), then each core's WAL replayed from the checkpoint's position, in LSN order.
///
/// The cores are rebuilt in parallel (as many at once as the machine runs threads). A core's
/// parts are loaded into one run in key order; its WAL replay then streams the log (a read window, not the log, is in memory) and lays the
/// records over that run through a hash index of its keys (in small batches whose
/// lookups overlap), last write wins: a loaded key's
/// value is overwritten in place, a key the checkpoint lacks is kept once (its last value, or
/// none once deleted). Replay memory is thus bounded by the keys, not by the WAL's length: the
/// index, plus one entry per key the checkpoint lacks. The state and the changed keys are then
/// built at once from their entries in key order. The states themselves are in memory, as the
/// stores they belong to are.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecoveryManager;

impl RecoveryManager {
    /// Recovers every core of `wal` (opened and recovered by [`PerCoreWalManager`], whose
    /// report is `wal_recovery`) from the checkpoints in `store`.
    ///
    /// # Errors
    /// A storage error; [`Error::Checkpoint`] for a damaged part (naming it); [`Error::Snapshot`]
    /// for a manifest whose parts or positions do not fit this set of cores; what reading a
    /// core's WAL returns ([`Error::Truncated`] when the WAL no longer holds the records after
    /// the checkpoint's position); [`Error::Changelog`] for a record that is not a changelog
    /// entry.
    pub fn recover<S: SegmentStorage + Send>(
        store: &dyn CheckpointStore,
        wal: &mut PerCoreWalManager<S>,
        wal_recovery: &PerCoreRecovery,
    ) -> Result<Recovered, Error> {
        let loaded = Self::load(store, wal.cores())?;
        Self::replay(loaded, wal, wal_recovery)
    }

    /// The first half of [`Self::recover`]: the latest valid checkpoint's parts for `cores`
    /// cores, loaded and verified (the cores in parallel). Needs no WAL, so it may run
    /// while the WALs are opened.
    pub(crate) fn load(
        store: &dyn CheckpointStore,
        cores: usize,
    ) -> Result<LoadedCheckpoint, Error> {
        let started = Instant::now();
        let latest = store.latest_manifest()?;
        let last_id = store.list_manifests()?.last().copied().unwrap_or(0);
        let mut layouts = vec![CoreLayout::empty(1); cores];
        let mut positions = vec![Lsn::ZERO; cores];
        let mut checkpoint = None;
        let mut manifest_id = None;
        if let Some(stored) = &latest.latest {
            let manifest = stored
                .manifest()
                .map_err(|e| snapshot(stored.id, e.to_string()))?;
            checkpoint = Some(Checkpoint {
                id: manifest.id,
                epoch: manifest.epoch,
            });
            positions = wal_positions(&manifest, cores)?;
            layouts = core_layouts(&manifest, cores)?;
            manifest_id = Some(manifest.id);
        }
        let parts: Vec<Result<LoadedCore, Error>> = match manifest_id {
            None => (0..cores).map(|_| Ok(LoadedCore::default())).collect(),
            Some(id) => crate::parallel::map_each(
                layouts.iter_mut().collect(),
                &|core, layout: &mut CoreLayout| {
                    let mut entries = Vec::new();
                    let (parts, bytes) = load_core(store, id, core, layout, &mut entries)?;
                    Ok(LoadedCore {
                        entries,
                        parts,
                        bytes,
                    })
                },
            )
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::Refused(
                        "a thread loading a checkpoint panicked".into(),
                    ))
                })
            })
            .collect(),
        };
        // The first damaged part in core order, whichever thread met its fault first.
        let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(LoadedCheckpoint {
            manifest_id,
            checkpoint,
            skipped: latest.skipped,
            last_id,
            positions,
            layouts,
            parts,
            elapsed: started.elapsed(),
        })
    }

    /// The second half of [`Self::recover`]: each core's WAL replayed over `loaded` (each on
    /// its own thread).
    pub(crate) fn replay<S: SegmentStorage + Send>(
        loaded: LoadedCheckpoint,
        wal: &mut PerCoreWalManager<S>,
        wal_recovery: &PerCoreRecovery,
    ) -> Result<Recovered, Error> {
        let started = Instant::now();
        let (loaded, parts) = loaded.split(wal.cores())?;
        let work: Vec<_> = wal.logs_mut().iter_mut().zip(parts).collect();
        let rebuilt: Vec<Result<Rebuilt, Error>> =
            crate::parallel::map_each(work, &|core, (log, part)| {
                let from = loaded.from(core);
                let rebuilt = rebuild_core(part.entries, core, log, from);
                rebuilt.map(|r| r.with_counts(part.parts, part.bytes))
            })
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Refused("a replay thread panicked".into()))))
            .collect();
        loaded.assemble(rebuilt, wal_recovery, started)
    }

    /// [`Self::replay`] over logs opened but not yet scanned: each core's log is read once,
    /// scanned for its [`PerCoreRecovery`] as it is replayed (each core on its own thread).
    /// Errors come as they would from a scan at the open followed by [`Self::replay`]: a scan's
    /// first (in core order), then a replay's.
    pub(crate) fn replay_scanning<S: SegmentStorage + Send>(
        loaded: LoadedCheckpoint,
        wal: Unscanned<S>,
    ) -> Result<(Recovered, PerCoreWalManager<S>), Error> {
        let started = Instant::now();
        let (loaded, parts) = loaded.split(wal.cores.len())?;
        let work: Vec<_> = wal.cores.into_iter().zip(parts).collect();
        let done = crate::parallel::map_each(work, &|core, ((mut log, report), part)| {
            let from = loaded.from(core);
            let rebuilt = scan_and_rebuild(part.entries, core, &mut log, report, from);
            (
                log,
                rebuilt.map(|(scanned, r)| {
                    (scanned, r.map(|r| r.with_counts(part.parts, part.bytes)))
                }),
            )
        });
        let mut logs = Vec::with_capacity(done.len());
        let mut scans = Vec::with_capacity(done.len());
        let mut rebuilt = Vec::with_capacity(done.len());
        for done in done {
            let (log, result) =
                done.ok_or_else(|| Error::Refused("a replay thread panicked".into()))?;
            let (scanned, r) = result?;
            logs.push(log);
            scans.push(scanned);
            rebuilt.push(r);
        }
        let recovery = PerCoreRecovery { cores: scans };
        let recovered = loaded.assemble(rebuilt, &recovery, started)?;
        Ok((recovered, PerCoreWalManager::from_scanned(logs, &recovery)))
    }
}

/// What [`LoadedCheckpoint::split`] leaves beside the parts: what a replay needs to know and to
/// report.
struct Loaded {
    checkpoint: Option<Checkpoint>,
    skipped: Vec<SkippedManifest>,
    last_id: u64,
    positions: Vec<Lsn>,
    layouts: Vec<CoreLayout>,
    elapsed: Duration,
}

impl LoadedCheckpoint {
    /// Its parts (one per core: `cores` of them, or an error) and the rest.
    fn split(self, cores: usize) -> Result<(Loaded, Vec<LoadedCore>), Error> {
        if self.parts.len() != cores {
            return Err(Error::Refused(format!(
                "a checkpoint loaded for {} cores, replayed over {cores}",
                self.parts.len()
            )));
        }
        let LoadedCheckpoint {
            checkpoint,
            skipped,
            last_id,
            positions,
            layouts,
            parts,
            elapsed,
            ..
        } = self;
        let loaded = Loaded {
            checkpoint,
            skipped,
            last_id,
            positions,
            layouts,
            elapsed,
        };
        Ok((loaded, parts))
    }
}

impl Loaded {
    /// Where `core`'s replay starts: after the checkpoint's position.
    fn from(&self, core: usize) -> Lsn {
        self.positions
            .get(core)
            .copied()
            .unwrap_or(Lsn::ZERO)
            .next()
    }

    /// The recovery of the cores `rebuilt` (in core order; the first error is returned), whose
    /// logs' open found `wal_recovery`.
    fn assemble(
        self,
        rebuilt: Vec<Result<Rebuilt, Error>>,
        wal_recovery: &PerCoreRecovery,
        started: Instant,
    ) -> Result<Recovered, Error> {
        let Loaded {
            checkpoint,
            skipped,
            last_id,
            positions,
            layouts,
            elapsed,
        } = self;
        let cores = rebuilt.len();
        let last_epoch = wal_recovery
            .cores
            .iter()
            .map(|c| c.epoch)
            .chain(checkpoint.map(|c| c.epoch))
            .max()
            .unwrap_or(0);
        let (mut parts_loaded, mut part_bytes) = (0, 0);
        let mut states = Vec::with_capacity(cores);
        let mut changed = Vec::with_capacity(cores);
        let mut replays = Vec::with_capacity(cores);
        for (core, r) in rebuilt.into_iter().enumerate() {
            let r = r?;
            parts_loaded += r.parts;
            part_bytes += r.part_bytes;
            let from = positions.get(core).copied().unwrap_or(Lsn::ZERO).next();
            let torn_bytes = wal_recovery
                .core(core)
                .and_then(|c| c.report.cut)
                .map_or(0, |cut| cut.extent.saturating_sub(cut.offset));
            replays.push(CoreReplay {
                core,
                keys_loaded: r.keys_loaded,
                from,
                records: r.records,
                torn_bytes,
                last_lsn: r.last_lsn,
            });
            states.push(r.state);
            changed.push(r.changed);
        }
        let resume = ResumePoint {
            current: checkpoint.map(|c| (c, positions.clone())),
            last_epoch,
            last_id: last_id.max(checkpoint.map_or(0, |c| c.id)),
        };
        Ok(Recovered {
            states,
            changed,
            layouts,
            resume,
            report: CheckpointRecoveryReport {
                checkpoint,
                skipped,
                parts_loaded,
                part_bytes,
                cores: replays,
                elapsed: elapsed + started.elapsed(),
            },
        })
    }
}

/// A checkpoint's parts loaded by [`RecoveryManager::load`], before any WAL is replayed over
/// them.
#[derive(Debug)]
pub(crate) struct LoadedCheckpoint {
    manifest_id: Option<u64>,
    checkpoint: Option<Checkpoint>,
    skipped: Vec<SkippedManifest>,
    last_id: u64,
    positions: Vec<Lsn>,
    layouts: Vec<CoreLayout>,
    parts: Vec<LoadedCore>,
    elapsed: Duration,
}

impl LoadedCheckpoint {
    /// Whether `store` still holds what this was loaded from: the same latest manifest, and no
    /// newer one. (A store read before its WALs' lock was taken may have changed since.)
    pub(crate) fn still_current(&self, store: &dyn CheckpointStore) -> Result<bool, Error> {
        let latest = store.latest_manifest()?.latest.map(|m| m.id);
        let last_id = store.list_manifests()?.last().copied().unwrap_or(0);
        Ok(latest == self.manifest_id && last_id == self.last_id)
    }
}

/// One core's share of a [`LoadedCheckpoint`].
#[derive(Debug, Default)]
struct LoadedCore {
    /// In key order, each key once.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Parts read.
    parts: usize,
    /// Their bytes.
    bytes: u64,
}

fn snapshot(id: u64, detail: String) -> Error {
    Error::Snapshot { id, detail }
}

/// Each core's position, from a manifest that must name exactly cores `0..cores`.
fn wal_positions(manifest: &Manifest<'_>, cores: usize) -> Result<Vec<Lsn>, Error> {
    let mut positions = vec![None; cores];
    for w in manifest.wal.iter() {
        match positions.get_mut(w.core as usize) {
            Some(slot) => *slot = Some(w.lsn),
            None => {
                return Err(snapshot(
                    manifest.id,
                    format!(
                        "it names the WAL of core {}, the set has {cores} cores",
                        w.core
                    ),
                ));
            }
        }
    }
    positions
        .into_iter()
        .enumerate()
        .map(|(core, p)| {
            p.ok_or_else(|| {
                snapshot(
                    manifest.id,
                    format!("it names no WAL position for core {core}"),
                )
            })
        })
        .collect()
}

/// Each core's parts as a layout (bucket counts found when the parts are read).
fn core_layouts(manifest: &Manifest<'_>, cores: usize) -> Result<Vec<CoreLayout>, Error> {
    let mut bases: Vec<Vec<(usize, PartRef)>> = vec![Vec::new(); cores];
    let mut deltas: Vec<Vec<(usize, PartRef)>> = vec![Vec::new(); cores];
    for part in manifest.parts.iter() {
        let owned = PartRef {
            key: part.key.to_owned(),
            size: part.size,
            crc: part.crc,
            written_by: part.written_by,
        };
        let bad = |what: &str| {
            snapshot(
                manifest.id,
                format!(
                    "part {} (operator {}, partition {:#x}): {what}",
                    part.key, part.operator, part.partition
                ),
            )
        };
        if part.written_by > manifest.id {
            return Err(bad("written by a later checkpoint"));
        }
        match placement(&part) {
            Some(Placement::Base { core, bucket }) if core < cores => {
                bases[core].push((bucket, owned));
            }
            Some(Placement::Delta { core, position }) if core < cores => {
                deltas[core].push((position, owned));
            }
            Some(_) => return Err(bad("of a core the set does not have")),
            None => return Err(bad("an operator this state store does not write")),
        }
    }
    let mut layouts = Vec::with_capacity(cores);
    for (core_bases, mut core_deltas) in bases.into_iter().zip(deltas) {
        // The bucket count comes from the parts' headers; the slots grow to hold every bucket
        // named, and `load_core` checks each header against it.
        let slots = core_bases.iter().map(|(b, _)| b + 1).max().unwrap_or(0);
        let mut layout = CoreLayout::empty(slots as u32);
        for (bucket, part) in core_bases {
            layout.bases[bucket] = Some(part);
        }
        // Oldest first; the deltas of one checkpoint in their order, which is their keys' (each
        // holds keys above the one before: checked as they are read).
        core_deltas.sort_by_key(|(position, p)| (p.written_by, *position));
        layout.deltas = core_deltas
            .into_iter()
            .map(|(_, part)| DeltaRef {
                part,
                bucket_bytes: Vec::new(),
            })
            .collect();
        layouts.push(layout);
    }
    Ok(layouts)
}

/// Reads `core`'s parts into `state` (in key order, each key once): bases, then deltas oldest
/// first, each delta entry applied only when its bucket's base is older than the delta. Fills in
/// the layout's bucket count and each delta's bytes per bucket. Returns (parts, bytes) read.
fn load_core(
    store: &dyn CheckpointStore,
    id: u64,
    core: usize,
    layout: &mut CoreLayout,
    state: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(usize, u64), Error> {
    let mut buckets: Option<u32> = None;
    let (mut parts, mut bytes) = (0, 0);
    let bad = |key: &str, detail: String| snapshot(id, format!("part {key}: {detail}"));
    let mut check = |key: &str, h: &Header, kind: PartKind| {
        if h.core as usize != core || h.kind != kind {
            return Err(bad(
                key,
                format!(
                    "it holds a {:?} part of core {}, the manifest names a {kind:?} part of core {core}",
                    h.kind, h.core
                ),
            ));
        }
        match buckets {
            Some(b) if b != h.buckets => Err(bad(
                key,
                format!(
                    "it splits the state into {} buckets, other parts into {b}",
                    h.buckets
                ),
            )),
            _ => {
                buckets = Some(h.buckets);
                Ok(())
            }
        }
    };
    // Each entry with its key's prefix ([`prefix`]), so the sort below seldom reads the keys.
    let mut base_entries: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
    for (bucket, base) in layout.bases.iter().enumerate() {
        let Some(base) = base else { continue };
        let data = store.read_part(&base.key, base.size, base.crc)?;
        let header = Header::parse(&data).map_err(|e| bad(&base.key, e.to_string()))?;
        check(&base.key, &header, PartKind::Base)?;
        if header.bucket as usize != bucket {
            return Err(bad(
                &base.key,
                format!(
                    "it holds bucket {}, the manifest says {bucket}",
                    header.bucket
                ),
            ));
        }
        base_entries.reserve(usize::try_from(header.count).unwrap_or(0).min(1 << 20));
        read_part(&data, |e| {
            if let Entry::Put { key, value } = e {
                base_entries.push((prefix(key), key.to_vec(), value.to_vec()));
            }
        })
        .map_err(|e| bad(&base.key, e.to_string()))?;
        parts += 1;
        bytes += base.size;
    }
    // Each base is in key order and a key is in one bucket only: a stable sort merges the
    // buckets' runs (a key met twice in damaged parts keeps its last value, as a map would).
    base_entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    *state = base_entries
        .into_iter()
        .map(|(_, key, value)| (key, value))
        .collect();
    dedup_keep_last(state);
    // Deltas are applied to a map (only stores with deltas pay for building one).
    let mut map: Option<BTreeMap<Vec<u8>, Vec<u8>>> = None;
    let bases: Vec<u64> = (0..layout.bases.len())
        .map(|b| layout.base_written_by(b))
        .collect();
    // The checkpoint and the last key of the delta read before: a checkpoint's deltas hold
    // disjoint key ranges, in order, so the order they are applied in cannot matter.
    let mut previous: Option<(u64, Vec<u8>)> = None;
    for delta in &mut layout.deltas {
        let part = &delta.part;
        let data = store.read_part(&part.key, part.size, part.crc)?;
        let header = Header::parse(&data).map_err(|e| bad(&part.key, e.to_string()))?;
        check(&part.key, &header, PartKind::Delta)?;
        let count = header.buckets;
        let mut per_bucket = vec![0u64; count as usize];
        let mut apply: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let (mut first, mut last): (Option<Vec<u8>>, &[u8]) = (None, &[]);
        read_part(&data, |e| {
            let (key, value) = match e {
                Entry::Put { key, value } => (key, Some(value)),
                Entry::Delete { key } => (key, None),
                Entry::Barrier { .. } => return,
            };
            if first.is_none() {
                first = Some(key.to_vec());
            }
            last = key;
            let b = bucket_of(key, count) as usize;
            if let Some(n) = per_bucket.get_mut(b) {
                *n += (9 + key.len() + value.map_or(0, <[u8]>::len)) as u64;
            }
            if bases.get(b).copied().unwrap_or(0) < part.written_by {
                apply.push((key.to_vec(), value.map(<[u8]>::to_vec)));
            }
        })
        .map_err(|e| bad(&part.key, e.to_string()))?;
        if let (Some(first), Some((by, before))) = (&first, &previous)
            && *by == part.written_by
            && first <= before
        {
            return Err(bad(
                &part.key,
                format!("its keys overlap those of another delta of checkpoint {by}"),
            ));
        }
        if first.is_some() {
            previous = Some((part.written_by, last.to_vec()));
        }
        let map = map.get_or_insert_with(|| std::mem::take(state).into_iter().collect());
        for (key, value) in apply {
            match value {
                Some(v) => {
                    map.insert(key, v);
                }
                None => {
                    map.remove(&key);
                }
            }
        }
        delta.bucket_bytes = per_bucket;
        parts += 1;
        bytes += part.size;
    }
    if let Some(map) = map {
        *state = map.into_iter().collect();
    }
    if let Some(b) = buckets {
        if (b as usize) < layout.bases.len() {
            return Err(snapshot(
                id,
                format!("core {core}: a base names a bucket beyond its {b} buckets"),
            ));
        }
        layout.bases.resize(b as usize, None);
        for delta in &mut layout.deltas {
            delta.bucket_bytes.resize(b as usize, 0);
        }
    }
    Ok((parts, bytes))
}

/// `key`'s first 8 bytes, big-endian, zero-padded. Keys in order have their prefixes in order
/// (equal or not), so ordering by prefix, then by key, orders by key; and the prefixes, held
/// inline, settle most comparisons without reading a key (a cache miss each at this size).
fn prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    for (b, k) in bytes.iter_mut().zip(key) {
        *b = *k;
    }
    u64::from_be_bytes(bytes)
}

/// Keeps, of adjacent entries with equal keys, the last (as inserting them into a map would).
fn dedup_keep_last(entries: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    // `dedup_by` keeps the first of a run: the later value moves into it.
    entries.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(&mut later.1, &mut kept.1);
        }
        same
    });
}

/// One core rebuilt.
struct Rebuilt {
    state: State,
    changed: BTreeSet<Vec<u8>>,
    records: u64,
    last_lsn: Option<Lsn>,
    /// Keys loaded from the checkpoint.
    keys_loaded: u64,
    /// Parts loaded, and their bytes.
    parts: usize,
    part_bytes: u64,
}

impl Rebuilt {
    /// A core rebuilt by replaying `records` (the last at `last_lsn`) over `keys_loaded` keys
    /// of its checkpoint, into `overlay`; its parts are counted by [`Self::with_counts`].
    fn replayed(overlay: Overlay, records: u64, last_lsn: Option<Lsn>, keys_loaded: u64) -> Self {
        let (state, changed) = overlay.finish();
        Rebuilt {
            state,
            changed,
            records,
            last_lsn,
            keys_loaded,
            parts: 0,
            part_bytes: 0,
        }
    }

    /// With the core's checkpoint parts counted.
    fn with_counts(self, parts: usize, part_bytes: u64) -> Self {
        Rebuilt {
            parts,
            part_bytes,
            ..self
        }
    }
}

/// Rebuilds `core`: its WAL replayed from `from` on over `loaded` (its checkpointed entries, in
/// key order).
fn rebuild_core<S: SegmentStorage>(
    loaded: Vec<(Vec<u8>, Vec<u8>)>,
    core: usize,
    log: &mut crate::WriteAheadLog<S>,
    from: Lsn,
) -> Result<Rebuilt, Error> {
    let keys_loaded = loaded.len() as u64;
    let mut overlay = Overlay::new(loaded);
    check_held(log, core, from)?;
    let mut replayer = Replayer::new(core, from, &mut overlay);
    let mut window = vec![0u8; log.read_window_len()];
    let upto = log.durable_lsn();
    log.read_records(from, upto, &mut window, &mut |record| {
        replayer.record(&record)
    })
    .map_err(|e| crate::percore::in_core(core, e))?;
    let (records, last_lsn) = replayer.finish()?;
    Ok(Rebuilt::replayed(overlay, records, last_lsn, keys_loaded))
}

/// [`rebuild_core`] over a log not yet scanned: the log read once from its oldest record, each
/// record scanned ([`scan_with`]) and the ones from `from` on replayed. Returns the scan's error
/// first (as a scan at the open would), then the scan and the replay's own result.
fn scan_and_rebuild<S: SegmentStorage>(
    loaded: Vec<(Vec<u8>, Vec<u8>)>,
    core: usize,
    log: &mut crate::WriteAheadLog<S>,
    report: RecoveryReport,
    from: Lsn,
) -> Result<(CoreRecovery, Result<Rebuilt, Error>), Error> {
    let in_core = |e| crate::percore::in_core(core, e);
    if let Err(e) = check_held(log, core, from) {
        // Nothing to replay: the scan alone, whose error comes first.
        let scanned = scan_with(log, core, report, &mut |_| {}).map_err(in_core)?;
        return Ok((scanned, Err(e)));
    }
    let keys_loaded = loaded.len() as u64;
    let mut overlay = Overlay::new(loaded);
    let mut replayer = Replayer::new(core, from, &mut overlay);
    let scanned =
        scan_with(log, core, report, &mut |record| replayer.record(record)).map_err(in_core)?;
    let rebuilt = replayer
        .finish()
        .map(|(records, last_lsn)| Rebuilt::replayed(overlay, records, last_lsn, keys_loaded));
    Ok((scanned, rebuilt))
}

/// Checks that `core`'s log still holds LSN `from`. Reading from below the oldest record held
/// would start at that record: replay would leave out what was truncated, and hand back part of
/// the state as if it were all of it.
fn check_held<S: SegmentStorage>(
    log: &mut crate::WriteAheadLog<S>,
    core: usize,
    from: Lsn,
) -> Result<(), Error> {
    let oldest = match crate::read::list(log.storage_mut())?.first() {
        Some(&first) => crate::read::header(log.storage_mut(), first)?.map(|h| h.first_lsn),
        None => None,
    };
    if let Some(oldest) = oldest
        && from < oldest
    {
        return Err(Error::Truncated {
            next: from,
            detail: format!(
                "core {core}'s WAL holds records from LSN {oldest} on, and recovery must replay \
                 it from LSN {from} (the checkpoint it needs is missing or damaged)"
            ),
        });
    }
    Ok(())
}

/// Replays `core`'s changelog records from `from` on into an overlay, counting them. A record
/// that is not a changelog entry fails the replay; nothing after it is applied.
struct Replayer<'o> {
    core: usize,
    from: Lsn,
    overlay: &'o mut Overlay,
    records: u64,
    last: Option<Lsn>,
    failed: Option<Error>,
}

impl<'o> Replayer<'o> {
    fn new(core: usize, from: Lsn, overlay: &'o mut Overlay) -> Self {
        Replayer {
            core,
            from,
            overlay,
            records: 0,
            last: None,
            failed: None,
        }
    }

    /// Takes in one record read (any kind, any LSN: only data records from `from` on count).
    fn record(&mut self, record: &ReadEntry<'_>) {
        if self.failed.is_some()
            || record.kind != lamina_core::record::Kind::Data
            || record.lsn < self.from
        {
            return;
        }
        let core = self.core;
        let applied = match Entry::parse(record.payload) {
            Ok(Entry::Put { key, value }) => self.overlay.change(key, Some(value)),
            Ok(Entry::Delete { key }) => self.overlay.change(key, None),
            Ok(Entry::Barrier { epoch }) => Err(Error::Changelog {
                core,
                lsn: Some(record.lsn),
                detail: format!("a barrier (epoch {epoch}) in a data record"),
            }),
            Err(e) => Err(Error::Changelog {
                core,
                lsn: Some(record.lsn),
                detail: e.to_string(),
            }),
        };
        match applied {
            Ok(()) => {
                self.records += 1;
                self.last = Some(record.lsn);
            }
            Err(e) => self.failed = Some(e),
        }
    }

    /// (records replayed, the last one's LSN), or the first failure.
    fn finish(self) -> Result<(u64, Option<Lsn>), Error> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok((self.records, self.last)),
        }
    }
}

#[cfg(all(test, feature = "file"))]
mod tests {
    use super::*;
    use crate::{FileSystemCheckpointStore, Options, StateStoreConfig, WalStateStore};

    type Store = WalStateStore<lamina_file::FileStorage, 2>;

    #[test]
    fn ordering_by_prefix_then_key_is_ordering_by_key() {
        let mut keys: Vec<Vec<u8>> = [
            &b""[..],
            b"a",
            b"a\0",
            b"a\0\x01",
            b"\0",
            b"\0\0\0\0\0\0\0\0",
            b"\0\0\0\0\0\0\0\0\0",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefgha",
            b"abcdefgg\xff\xff",
            b"b",
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\0",
        ]
        .iter()
        .map(|k| k.to_vec())
        .collect();
        keys.reverse();
        let mut by_prefix = keys.clone();
        by_prefix.sort_by(|a, b| prefix(a).cmp(&prefix(b)).then_with(|| a.cmp(b)));
        keys.sort();
        assert_eq!(by_prefix, keys);
    }

    #[test]
    fn a_load_is_no_longer_current_once_a_newer_checkpoint_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            Store::open_dir(dir.path(), Options::default(), StateStoreConfig::default()).unwrap();
        store.put(b"a", b"1").unwrap();
        store.checkpoint().unwrap();
        let checkpoints = FileSystemCheckpointStore::open(dir.path().join("checkpoints")).unwrap();
        let loaded = RecoveryManager::load(&checkpoints, 2).unwrap();
        assert_eq!(loaded.manifest_id, Some(1));
        assert!(loaded.still_current(&checkpoints).unwrap());
        store.put(b"b", b"2").unwrap();
        store.checkpoint().unwrap();
        assert!(!loaded.still_current(&checkpoints).unwrap());
        // A load made after it is current again, and holds the newer checkpoint's keys.
        let loaded = RecoveryManager::load(&checkpoints, 2).unwrap();
        assert!(loaded.still_current(&checkpoints).unwrap());
        let keys: usize = loaded.parts.iter().map(|p| p.entries.len()).sum();
        assert_eq!(keys, 2);
    }
}
