//! [`RecoveryManager`]: the latest valid checkpoint loaded and verified, then each core's WAL
//! replayed from the checkpoint's position.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lamina_core::changelog::Entry;
use lamina_core::checkpoint::Checkpoint;
use lamina_core::manifest::Manifest;

use super::layout::{CoreLayout, DeltaRef, PartRef, Placement, placement};
use super::part::{Header, Kind as PartKind, bucket_of, read as read_part};
use crate::{
    CheckpointStore, Error, Lsn, PerCoreRecovery, PerCoreWalManager, SegmentStorage,
    SkippedManifest,
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
/// Replay streams the WAL (a read window, not the log, is in memory); the states themselves
/// are in memory, as the stores they belong to are.
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
        let started = Instant::now();
        let cores = wal.cores();
        let latest = store.latest_manifest()?;
        let last_id = store.list_manifests()?.last().copied().unwrap_or(0);
        let mut states = vec![BTreeMap::new(); cores];
        let mut layouts = vec![CoreLayout::empty(1); cores];
        let mut positions = vec![Lsn::ZERO; cores];
        let mut checkpoint = None;
        let mut last_epoch = wal_recovery
            .cores
            .iter()
            .map(|c| c.epoch)
            .max()
            .unwrap_or(0);
        let mut keys_loaded = vec![0u64; cores];
        let (mut parts_loaded, mut part_bytes) = (0, 0);
        if let Some(stored) = &latest.latest {
            let manifest = stored
                .manifest()
                .map_err(|e| snapshot(stored.id, e.to_string()))?;
            checkpoint = Some(Checkpoint {
                id: manifest.id,
                epoch: manifest.epoch,
            });
            last_epoch = last_epoch.max(manifest.epoch);
            positions = wal_positions(&manifest, cores)?;
            layouts = core_layouts(&manifest, cores)?;
            for (core, layout) in layouts.iter_mut().enumerate() {
                let loaded = load_core(store, manifest.id, core, layout, &mut states[core])?;
                keys_loaded[core] = states[core].len() as u64;
                parts_loaded += loaded.0;
                part_bytes += loaded.1;
            }
        }
        let mut changed = vec![BTreeSet::new(); cores];
        // Each core's WAL is replayed into its own state on its own thread.
        let replayed: Vec<Result<(u64, Option<Lsn>), Error>> = std::thread::scope(|scope| {
            let workers: Vec<_> = wal
                .logs_mut()
                .iter_mut()
                .zip(states.iter_mut())
                .zip(changed.iter_mut())
                .enumerate()
                .map(|(core, ((log, state), changed))| {
                    let from = positions.get(core).copied().unwrap_or(Lsn::ZERO).next();
                    scope.spawn(move || replay(log, core, from, state, changed))
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(Error::Refused("a replay thread panicked".into())))
                })
                .collect()
        });
        let mut replays = Vec::with_capacity(cores);
        for (core, replay) in replayed.into_iter().enumerate() {
            let replay = replay?;
            let from = positions.get(core).copied().unwrap_or(Lsn::ZERO).next();
            let torn_bytes = wal_recovery
                .core(core)
                .and_then(|c| c.report.cut)
                .map_or(0, |cut| cut.extent.saturating_sub(cut.offset));
            replays.push(CoreReplay {
                core,
                keys_loaded: keys_loaded[core],
                from,
                records: replay.0,
                torn_bytes,
                last_lsn: replay.1,
            });
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
                skipped: latest.skipped,
                parts_loaded,
                part_bytes,
                cores: replays,
                elapsed: started.elapsed(),
            },
        })
    }
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
    let mut deltas: Vec<Vec<PartRef>> = vec![Vec::new(); cores];
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
            Some(Placement::Delta { core, .. }) if core < cores => deltas[core].push(owned),
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
        core_deltas.sort_by_key(|p| p.written_by);
        if core_deltas
            .windows(2)
            .any(|w| w[0].written_by == w[1].written_by)
        {
            return Err(snapshot(
                manifest.id,
                "two deltas of one core written by the same checkpoint".into(),
            ));
        }
        layout.deltas = core_deltas
            .into_iter()
            .map(|part| DeltaRef {
                part,
                bucket_bytes: Vec::new(),
            })
            .collect();
        layouts.push(layout);
    }
    Ok(layouts)
}

/// Reads `core`'s parts into `state`: bases, then deltas oldest first, each delta entry applied
/// only when its bucket's base is older than the delta. Fills in the layout's bucket count and
/// each delta's bytes per bucket. Returns (parts, bytes) read.
fn load_core(
    store: &dyn CheckpointStore,
    id: u64,
    core: usize,
    layout: &mut CoreLayout,
    state: &mut BTreeMap<Vec<u8>, Vec<u8>>,
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
    let mut base_entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
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
        let mut entries =
            Vec::with_capacity(usize::try_from(header.count).unwrap_or(0).min(1 << 20));
        read_part(&data, |e| {
            if let Entry::Put { key, value } = e {
                entries.push((key.to_vec(), value.to_vec()));
            }
        })
        .map_err(|e| bad(&base.key, e.to_string()))?;
        base_entries.append(&mut entries);
        parts += 1;
        bytes += base.size;
    }
    // Each base is in key order and the buckets' keys interleave: collecting them and building
    // the map at once (a merge of sorted runs, then a bulk build) beats inserting one by one.
    if state.is_empty() {
        *state = std::mem::take(&mut base_entries).into_iter().collect();
    } else {
        state.extend(base_entries.drain(..));
    }
    let bases: Vec<u64> = (0..layout.bases.len())
        .map(|b| layout.base_written_by(b))
        .collect();
    for delta in &mut layout.deltas {
        let part = &delta.part;
        let data = store.read_part(&part.key, part.size, part.crc)?;
        let header = Header::parse(&data).map_err(|e| bad(&part.key, e.to_string()))?;
        check(&part.key, &header, PartKind::Delta)?;
        let count = header.buckets;
        let mut per_bucket = vec![0u64; count as usize];
        let mut apply: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        read_part(&data, |e| {
            let (key, value) = match e {
                Entry::Put { key, value } => (key, Some(value)),
                Entry::Delete { key } => (key, None),
                Entry::Barrier { .. } => return,
            };
            let b = bucket_of(key, count) as usize;
            if let Some(n) = per_bucket.get_mut(b) {
                *n += (9 + key.len() + value.map_or(0, <[u8]>::len)) as u64;
            }
            if bases.get(b).copied().unwrap_or(0) < part.written_by {
                apply.push((key.to_vec(), value.map(<[u8]>::to_vec)));
            }
        })
        .map_err(|e| bad(&part.key, e.to_string()))?;
        for (key, value) in apply {
            match value {
                Some(v) => {
                    state.insert(key, v);
                }
                None => {
                    state.remove(&key);
                }
            }
        }
        delta.bucket_bytes = per_bucket;
        parts += 1;
        bytes += part.size;
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

/// Replays `core`'s changelog records from `from` on into `state`; returns (records, last LSN).
fn replay<S: SegmentStorage>(
    log: &mut crate::WriteAheadLog<S>,
    core: usize,
    from: Lsn,
    state: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    changed: &mut BTreeSet<Vec<u8>>,
) -> Result<(u64, Option<Lsn>), Error> {
    // Reading from below the oldest record held starts at that record: replay would leave
    // out what was truncated, and hand back part of the state as if it were all of it.
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
    let mut records = 0;
    let mut last = None;
    let mut failed = None;
    let mut window = vec![0u8; log.read_window_len()];
    let upto = log.durable_lsn();
    log.read_records(from, upto, &mut window, &mut |record| {
        if failed.is_some() || record.kind != lamina_core::record::Kind::Data {
            return;
        }
        match Entry::parse(record.payload) {
            Ok(Entry::Put { key, value }) => {
                // A key seen before is overwritten in place: no allocation for it.
                match state.get_mut(key) {
                    Some(old) => {
                        old.clear();
                        old.extend_from_slice(value);
                    }
                    None => {
                        state.insert(key.to_vec(), value.to_vec());
                    }
                }
                if !changed.contains(key) {
                    changed.insert(key.to_vec());
                }
            }
            Ok(Entry::Delete { key }) => {
                state.remove(key);
                if !changed.contains(key) {
                    changed.insert(key.to_vec());
                }
            }
            Ok(Entry::Barrier { epoch }) => {
                failed = Some(Error::Changelog {
                    core,
                    lsn: Some(record.lsn),
                    detail: format!("a barrier (epoch {epoch}) in a data record"),
                });
                return;
            }
            Err(e) => {
                failed = Some(Error::Changelog {
                    core,
                    lsn: Some(record.lsn),
                    detail: e.to_string(),
                });
                return;
            }
        }
        records += 1;
        last = Some(record.lsn);
    })
    .map_err(|e| crate::percore::in_core(core, e))?;
    match failed {
        Some(e) => Err(e),
        None => Ok((records, last)),
    }
}
