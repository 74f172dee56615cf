//! [`IncrementalCheckpointManager`]: decides which parts a checkpoint writes, writes them, and
//! collects the garbage.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lamina_core::manifest::Manifest;

use super::layout::{CoreLayout, DeltaRef, MAX_BUCKETS, PartRef};
use super::part::{HEADER_LEN, Kind as PartKind, PAD_BLOCK, PartWriter, bucket_of};
use super::shadow::{Capture, ChangeStats, Changes};
use crate::{CheckpointError, CheckpointStore, Error, Lsn, PartInfo};

/// Changed keys from which a committed checkpoint's changed sets are freed on a thread of
/// their own (below it, a thread costs more than it saves).
const DROP_OFF_THREAD_KEYS: usize = 4096;

/// The smallest part padded to whole blocks when the store asks for it
/// ([`CheckpointStore::prefers_block_padding`]). A smaller part gains little from it, and the
/// padding of a base hides its entry bytes from whoever reads only the manifest (the limit of
/// [`IncrementalConfig::delta_percent`] then assumes up to a block of it: under 7 % here).
const MIN_PADDED: usize = 64 << 10;

/// A base's entry bytes, from its size in the manifest: its size less the header, less a
/// block when it may be padded (whole blocks, at least [`MIN_PADDED`]).
fn base_entry_bytes(size: u64) -> u64 {
    let padding = if size >= MIN_PADDED as u64 && size.is_multiple_of(PAD_BLOCK as u64) {
        PAD_BLOCK as u64 - 1
    } else {
        0
    };
    size.saturating_sub(HEADER_LEN as u64 + padding)
}

/// How checkpoints are split into parts, and how many are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncrementalConfig {
    /// Buckets each core's state is split into (1 to [`MAX_BUCKETS`]). More buckets make each
    /// compaction (a base rewrite) smaller and copy-on-write finer, at the price of more parts.
    pub buckets: u32,
    /// Bases rewritten per core per checkpoint at most, beyond those that must be (a bucket
    /// without a base, or one whose deltas outgrew it): the dirty buckets with the oldest bases
    /// first. This keeps the delta chain at most about `buckets / compactions` long.
    pub compactions: u32,
    /// A bucket is rewritten whole when the delta bytes it would need (kept deltas + this one)
    /// reach its base's entry bytes times this (in percent), so a bucket changed whole is
    /// rewritten at 100: replay then reads at most about `1 + delta_percent / 100` times the
    /// state. A base's entry bytes are its size less the header, and less a block when it
    /// may be padded (whole 4 KiB blocks, at least 64 KiB; the manifest does not say by how
    /// much).
    pub delta_percent: u32,
    /// Manifests kept by [`IncrementalCheckpointManager::collect_garbage`] (at least 1).
    pub retain: usize,
    /// About the most bytes of one delta part (at least 1): a core's delta larger than this is
    /// cut by key into several parts, encoded and written at once by several threads.
    pub delta_part_bytes: u64,
}

impl Default for IncrementalConfig {
    fn default() -> Self {
        IncrementalConfig {
            buckets: 64,
            compactions: 1,
            delta_percent: 100,
            retain: 3,
            delta_part_bytes: 2 << 20,
        }
    }
}

impl IncrementalConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::Refused`] naming the setting out of range.
    pub fn check(&self) -> Result<(), Error> {
        if self.buckets == 0 || self.buckets > MAX_BUCKETS {
            return Err(Error::Refused(format!(
                "{} buckets: between 1 and {MAX_BUCKETS}",
                self.buckets
            )));
        }
        if self.retain == 0 || self.compactions == 0 || self.delta_part_bytes == 0 {
            return Err(Error::Refused(
                "retain, compactions and delta_part_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Writes checkpoints incrementally: a checkpoint writes, per core, one delta part (the keys
/// changed since its parent, of the buckets not rewritten) and the bases of the buckets it
/// compacts, and references every other part of its parent (see [`super::layout`]).
///
/// A checkpoint goes [`Self::plan`] → [`Plan::write`] (on any thread) → publish the manifest
/// ([`Staged::layouts`]; or both at once, [`Plan::write_and_publish`]) → [`Self::commit`], or
/// [`Self::abort`] on any failure, after which the parent stays the base of the next
/// checkpoint and no changed key is forgotten.
#[derive(Debug)]
pub struct IncrementalCheckpointManager {
    config: IncrementalConfig,
    committed: Vec<CoreLayout>,
    /// Per core, keys changed that no committed checkpoint holds yet (from aborted attempts),
    /// and their counts.
    carry: Vec<(Changes, ChangeStats)>,
    /// The attempt between `plan` and `commit`/`abort`.
    in_progress: Option<u64>,
}

/// What one checkpoint will write, per core.
#[derive(Debug)]
pub struct Plan {
    id: u64,
    cores: Vec<CorePlan>,
    /// [`IncrementalConfig::delta_part_bytes`].
    delta_part_bytes: u64,
}

#[derive(Debug)]
struct CorePlan {
    capture: Capture,
    /// Every key changed since the parent (carried + captured); the delta holds those outside
    /// the compacted buckets.
    changed: Arc<Changes>,
    /// Their counts per bucket.
    stats: ChangeStats,
    /// The buckets whose bases are rewritten, ascending.
    compact: Vec<u32>,
    /// Per bucket, whether it is compacted.
    compacted: Vec<bool>,
    /// Keys the delta holds.
    delta_keys: usize,
    layout: CoreLayout,
}

/// A checkpoint whose parts are written: its layout, for the manifest, and what it wrote.
#[derive(Debug)]
pub struct Staged {
    id: u64,
    layouts: Vec<CoreLayout>,
    changed: Vec<(Arc<Changes>, ChangeStats)>,
    /// Parts written.
    pub parts_written: usize,
    /// Bytes written.
    pub bytes_written: u64,
    /// Keys held by the snapshot, over every core.
    pub keys: u64,
}

impl Staged {
    /// The checkpoint's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Per core, the parts the manifest names.
    #[must_use]
    pub fn layouts(&self) -> &[CoreLayout] {
        &self.layouts
    }

    /// The keys of every part the checkpoint references (to protect them from a garbage
    /// collection running before it is committed).
    #[must_use]
    pub fn part_keys(&self) -> Vec<String> {
        self.layouts
            .iter()
            .flat_map(|l| l.parts().map(|p| p.key.clone()))
            .collect()
    }
}

/// Builds a checkpoint's encoded manifest from the layout its parts make, for
/// [`Plan::write_and_publish`].
pub type ManifestBuilder<'a> = dyn Fn(&[CoreLayout]) -> Result<Vec<u8>, Error> + Sync + 'a;

/// What [`IncrementalCheckpointManager::collect_garbage`] did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Manifests kept (ids ascending).
    pub kept: Vec<u64>,
    /// Manifests deleted.
    pub manifests_deleted: Vec<u64>,
    /// Parts deleted.
    pub parts_deleted: Vec<String>,
    /// Damaged manifests found among those kept; while there is one, no part is deleted (what
    /// it references cannot be known).
    pub damaged: Vec<CheckpointError>,
    /// Per core, the LSN below which its WAL may be truncated: the oldest kept manifest's
    /// position plus one, so that recovery can fall back to any kept checkpoint. Empty when no
    /// manifest is kept.
    pub truncate_before: Vec<Lsn>,
}

impl IncrementalCheckpointManager {
    /// A manager for `cores` cores with no checkpoint yet.
    ///
    /// # Errors
    /// [`Error::Refused`] for settings out of range.
    pub fn new(cores: usize, config: IncrementalConfig) -> Result<Self, Error> {
        Self::resume(config, vec![CoreLayout::empty(config.buckets); cores])
    }

    /// A manager continuing from the committed checkpoint whose parts are `layouts` (what
    /// [`crate::RecoveryManager`] found). A core whose layout has another bucket count (the
    /// setting changed) starts over: its next checkpoint writes every base.
    ///
    /// # Errors
    /// [`Error::Refused`] for settings out of range.
    pub fn resume(config: IncrementalConfig, layouts: Vec<CoreLayout>) -> Result<Self, Error> {
        config.check()?;
        let committed: Vec<CoreLayout> = layouts
            .into_iter()
            .map(|l| {
                if l.bases.len() == config.buckets as usize {
                    l
                } else {
                    CoreLayout::empty(config.buckets)
                }
            })
            .collect();
        let buckets = config.buckets as usize;
        let carry = vec![(Changes::new(), ChangeStats::new(buckets)); committed.len()];
        Ok(IncrementalCheckpointManager {
            config,
            committed,
            carry,
            in_progress: None,
        })
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &IncrementalConfig {
        &self.config
    }

    /// Per core, the parts of the last committed checkpoint.
    #[must_use]
    pub fn committed(&self) -> &[CoreLayout] {
        &self.committed
    }

    /// Plans checkpoint `id` from the captures of every core (one each, any order).
    ///
    /// # Errors
    /// [`Error::Refused`] when a checkpoint is already planned, a capture is missing or doubled,
    /// or a capture has another bucket count than the settings.
    pub fn plan(&mut self, id: u64, captures: Vec<Capture>) -> Result<Plan, Error> {
        if let Some(other) = self.in_progress {
            return Err(Error::Refused(format!(
                "checkpoint {other} is in progress: commit or abort it before planning {id}"
            )));
        }
        let cores = self.committed.len();
        let mut by_core: Vec<Option<Capture>> = (0..cores).map(|_| None).collect();
        for capture in captures {
            let core = capture.core as usize;
            if capture.buckets.len() != self.config.buckets as usize {
                return Err(Error::Refused(format!(
                    "core {core}'s capture has {} buckets, the checkpoints {}",
                    capture.buckets.len(),
                    self.config.buckets
                )));
            }
            match by_core.get_mut(core) {
                Some(slot @ None) => *slot = Some(capture),
                Some(Some(_)) => {
                    return Err(Error::Refused(format!("two captures of core {core}")));
                }
                None => return Err(Error::NoSuchCore { core, cores }),
            }
        }
        let mut plans = Vec::with_capacity(cores);
        if let Some(core) = by_core.iter().position(Option::is_none) {
            return Err(Error::Refused(format!("no capture of core {core}")));
        }
        for (core, capture) in by_core.into_iter().enumerate() {
            let Some(mut capture) = capture else {
                continue;
            };
            let buckets = self.config.buckets as usize;
            let (mut changed, mut stats) = std::mem::replace(
                &mut self.carry[core],
                (Changes::new(), ChangeStats::new(buckets)),
            );
            changed.append(&mut capture.changed);
            stats.add(&capture.stats);
            plans.push(self.plan_core(core, capture, changed, stats));
        }
        self.in_progress = Some(id);
        Ok(Plan {
            id,
            cores: plans,
            delta_part_bytes: self.config.delta_part_bytes,
        })
    }

    fn plan_core(
        &self,
        core: usize,
        capture: Capture,
        changed: Changes,
        stats: ChangeStats,
    ) -> CorePlan {
        let buckets = self.config.buckets;
        let layout = &self.committed[core];
        let change_bytes = &stats.bytes;
        let mut compact = Vec::new();
        let mut candidates = Vec::new();
        for (b, (&changing, base)) in change_bytes.iter().zip(&layout.bases).enumerate() {
            let pending = layout.delta_bytes(b) + changing;
            match base {
                None => compact.push(b as u32),
                Some(base) => {
                    // Measured against the base's entries (its header and any padding aside),
                    // so that a bucket changed whole is rewritten rather than put whole in a
                    // delta.
                    let limit = base_entry_bytes(base.size)
                        .saturating_mul(u64::from(self.config.delta_percent))
                        / 100;
                    if pending > 0 && pending >= limit.max(1) {
                        compact.push(b as u32);
                    } else if pending > 0 {
                        candidates.push((changing == 0, base.written_by, b as u32));
                    }
                }
            }
        }
        // Buckets this checkpoint changes go first, oldest base first; a bucket it does not
        // change is rewritten only to keep the delta chain bounded (its old deltas are held for
        // it), so a checkpoint with no change writes nothing.
        let chain_full = layout.delta_checkpoints() >= self.max_chain();
        candidates.sort_unstable();
        compact.extend(
            candidates
                .into_iter()
                .filter(|&(untouched, _, _)| !untouched || chain_full)
                .take(self.config.compactions as usize)
                .map(|(_, _, b)| b),
        );
        compact.sort_unstable();
        let mut compacted = vec![false; buckets as usize];
        for &b in &compact {
            compacted[b as usize] = true;
        }
        let delta_keys = stats
            .keys
            .iter()
            .zip(&compacted)
            .filter(|(_, compacted)| !**compacted)
            .map(|(&k, _)| k as usize)
            .sum();
        CorePlan {
            capture,
            changed: Arc::new(changed),
            stats,
            compact,
            compacted,
            delta_keys,
            layout: layout.clone(),
        }
    }

    /// The delta chain length past which buckets are rewritten even when unchanged:
    /// `buckets / compactions`, rounded up.
    fn max_chain(&self) -> usize {
        self.config.buckets.div_ceil(self.config.compactions.max(1)) as usize
    }

    /// Commits `staged` after its manifest was published: its layout becomes the parent of the
    /// next checkpoint.
    ///
    /// # Errors
    /// [`Error::Refused`] when `staged` is not the checkpoint in progress.
    pub fn commit(&mut self, staged: Staged) -> Result<(), Error> {
        self.finish(staged.id)?;
        let Staged {
            layouts, changed, ..
        } = staged;
        self.committed = layouts;
        // The changed sets are no longer needed; a large one is freed off this thread.
        let keys: usize = changed.iter().map(|(c, _)| c.len()).sum();
        if keys >= DROP_OFF_THREAD_KEYS {
            crate::parallel::drop_off_thread(changed);
        }
        Ok(())
    }

    /// Gives up checkpoint `id` (planned, maybe written, not published): the keys it would
    /// have stored are carried into the next checkpoint. `changed` is what the attempt got
    /// to: its [`Plan`] or its [`Staged`], whichever the failure left.
    ///
    /// # Errors
    /// [`Error::Refused`] when `id` is not the checkpoint in progress.
    pub fn abort(&mut self, id: u64, changed: Leftover) -> Result<(), Error> {
        self.finish(id)?;
        let sets: Vec<(Arc<Changes>, ChangeStats)> = match changed {
            Leftover::Plan(plan) => plan
                .cores
                .into_iter()
                .map(|c| (c.changed, c.stats))
                .collect(),
            Leftover::Staged(staged) => staged.changed,
        };
        for (carry, (set, stats)) in self.carry.iter_mut().zip(sets) {
            // The carry is empty while an attempt is in progress: the counts are the attempt's.
            carry
                .0
                .extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            carry.1 = stats;
        }
        Ok(())
    }

    fn finish(&mut self, id: u64) -> Result<(), Error> {
        if self.in_progress != Some(id) {
            return Err(Error::Refused(format!(
                "checkpoint {id} is not the one in progress ({:?})",
                self.in_progress
            )));
        }
        self.in_progress = None;
        Ok(())
    }

    /// Keeps the newest [`IncrementalConfig::retain`] manifests that read back whole, deletes
    /// the older ones, then deletes every part that no kept manifest references and that was
    /// not written by checkpoint `in_progress` or a later one (named by its key). Reachability,
    /// never counts: a collection interrupted by a crash is simply run again.
    ///
    /// # Errors
    /// A storage error listing, reading or deleting; what was deleted before it stays deleted,
    /// and nothing referenced was.
    pub fn collect_garbage(
        &self,
        store: &dyn CheckpointStore,
        in_progress: Option<u64>,
    ) -> Result<GcReport, Error> {
        let mut report = GcReport::default();
        let ids = store.list_manifests()?;
        let mut kept: Vec<(u64, Vec<u8>)> = Vec::new();
        for &id in ids.iter().rev() {
            if kept.len() >= self.config.retain {
                break;
            }
            match store.read_manifest(id) {
                Ok(bytes) => kept.push((id, bytes)),
                Err(e) if e.is_manifest_skippable() => report.damaged.push(e),
                Err(e) => return Err(e.into()),
            }
        }
        kept.reverse();
        report.kept = kept.iter().map(|(id, _)| *id).collect();
        let Some(&(oldest, _)) = kept.first() else {
            return Ok(report);
        };
        for &id in ids.iter().filter(|&&id| id < oldest) {
            store.delete_manifest(id)?;
            report.manifests_deleted.push(id);
        }
        let mut reachable: HashSet<String> = HashSet::new();
        for (_, bytes) in &kept {
            let manifest = Manifest::decode(bytes).map_err(|e| {
                Error::Refused(format!(
                    "a manifest the store returned does not decode: {e}"
                ))
            })?;
            reachable.extend(manifest.parts.iter().map(|p| p.key.to_owned()));
        }
        if let Some((_, bytes)) = kept.first()
            && let Ok(manifest) = Manifest::decode(bytes)
        {
            report.truncate_before = manifest.wal.iter().map(|w| w.lsn.next()).collect();
        }
        if report.damaged.is_empty() {
            for key in store.list_parts()? {
                let protected = in_progress
                    .zip(part_written_by(&key))
                    .is_some_and(|(attempt, by)| by >= attempt);
                if !reachable.contains(&key) && !protected {
                    report.parts_deleted.push(key);
                }
            }
            if !report.parts_deleted.is_empty() {
                store.delete_parts(&report.parts_deleted)?;
            }
        }
        Ok(report)
    }
}

/// What an aborted attempt got to, for [`IncrementalCheckpointManager::abort`].
#[derive(Debug)]
pub enum Leftover {
    /// It failed before or while writing its parts.
    Plan(Plan),
    /// Its parts were written; the manifest was not published.
    Staged(Staged),
}

/// The bytes an entry of `key` takes in a part: length prefix, entry header, key, value.
fn entry_bytes(key: &[u8], value: Option<&[u8]>) -> u64 {
    (4 + 5 + key.len() + value.map_or(0, <[u8]>::len)) as u64
}

/// The name of part `what` of `core` in checkpoint `id`.
fn part_key(id: u64, core: u32, what: &str) -> String {
    format!("kv-{id:016x}-c{core:04x}-{what}")
}

/// The checkpoint that wrote the part named `key`, from its name.
fn part_written_by(key: &str) -> Option<u64> {
    let hex = key.strip_prefix("kv-")?.get(..16)?;
    u64::from_str_radix(hex, 16).ok()
}

/// One part to write.
enum Job<'p> {
    Base {
        core: usize,
        bucket: u32,
    },
    /// Delta `index` of the core: its changed keys from `from` (inclusive, `None`: the first)
    /// to `to` (exclusive, `None`: past the last).
    Delta {
        core: usize,
        plan: &'p CorePlan,
        index: usize,
        from: Option<&'p [u8]>,
        to: Option<&'p [u8]>,
    },
}

impl Plan {
    /// The checkpoint's id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Writes the planned parts to `store` in one batch ([`CheckpointStore::put_parts`]), and
    /// returns the checkpoint's layout for its manifest.
    ///
    /// # Errors
    /// The first part write that failed, with the plan back for
    /// [`IncrementalCheckpointManager::abort`].
    pub fn write(self, store: &dyn CheckpointStore) -> Result<Staged, (Error, Plan)> {
        self.write_with(store, None).map(|(staged, _)| staged)
    }

    /// Writes the planned parts and publishes the checkpoint's manifest, whose bytes
    /// `manifest` builds from the layout the parts make, in one call
    /// ([`CheckpointStore::put_checkpoint`]: a store may write the manifest while the parts
    /// are being written). Returns the checkpoint's layout and the manifest's length.
    ///
    /// # Errors
    /// The first part write that failed, `manifest`'s error, or the publish's, with the plan
    /// back for [`IncrementalCheckpointManager::abort`].
    pub fn write_and_publish(
        self,
        store: &dyn CheckpointStore,
        manifest: &ManifestBuilder<'_>,
    ) -> Result<(Staged, u64), (Error, Plan)> {
        self.write_with(store, Some(manifest))
    }

    fn write_with(
        self,
        store: &dyn CheckpointStore,
        manifest: Option<&ManifestBuilder<'_>>,
    ) -> Result<(Staged, u64), (Error, Plan)> {
        let mut jobs = Vec::new();
        for (core, plan) in self.cores.iter().enumerate() {
            for &bucket in &plan.compact {
                jobs.push(Job::Base { core, bucket });
            }
            if plan.delta_keys > 0 {
                let bounds = plan.delta_bounds(self.delta_part_bytes);
                for index in 0..=bounds.len() {
                    let from = index.checked_sub(1).and_then(|b| bounds.get(b)).copied();
                    let to = bounds.get(index).copied();
                    jobs.push(Job::Delta {
                        core,
                        plan,
                        index,
                        from,
                        to,
                    });
                }
            }
        }
        let keys: Vec<String> = jobs.iter().map(|job| self.job_key(job)).collect();
        let delta_bytes: Vec<Mutex<Option<Vec<u64>>>> =
            jobs.iter().map(|_| Mutex::new(None)).collect();
        let padded = store.prefers_block_padding();
        let encode = |i: usize, buf: &mut Vec<u8>| {
            let Some(job) = jobs.get(i) else {
                return;
            };
            let bucket_bytes = self.encode_job(job, padded, buf);
            if let Some(slot) = delta_bytes.get(i)
                && let Ok(mut slot) = slot.lock()
            {
                *slot = bucket_bytes;
            }
        };
        // The builder's own error, returned as it is rather than as the store's.
        let build_error: Mutex<Option<Error>> = Mutex::new(None);
        let manifest_len = AtomicU64::new(0);
        // The layout the manifest was built from: the same once the store returns the infos
        // it built it from, and not worked out twice (it clones every core's layout).
        type Layout = (Vec<CoreLayout>, usize, u64);
        let built: Mutex<Option<(Layout, Vec<PartInfo>)>> = Mutex::new(None);
        let stored = match manifest {
            None => store.put_parts(&keys, &encode),
            Some(manifest) => {
                let build = |infos: &[PartInfo]| {
                    let layout = self.layouts_of(&jobs, &keys, infos, &delta_bytes);
                    match manifest(&layout.0) {
                        Ok(bytes) => {
                            manifest_len.store(bytes.len() as u64, Ordering::Relaxed);
                            if let Ok(mut slot) = built.lock() {
                                *slot = Some((layout, infos.to_vec()));
                            }
                            Ok(bytes)
                        }
                        Err(e) => {
                            let reason = e.to_string();
                            if let Ok(mut slot) = build_error.lock() {
                                *slot = Some(e);
                            }
                            Err(CheckpointError::ManifestNotBuilt {
                                id: self.id,
                                reason,
                            })
                        }
                    }
                };
                store.put_checkpoint(self.id, &keys, &encode, &build)
            }
        };
        let infos = match stored {
            Ok(infos) if infos.len() == keys.len() => infos,
            Ok(infos) => {
                let e = Error::Refused(format!(
                    "the store stored {} parts of {}",
                    infos.len(),
                    keys.len()
                ));
                return Err((e, self));
            }
            Err(e) => {
                let e = build_error
                    .into_inner()
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| e.into());
                return Err((e, self));
            }
        };
        let (layouts, parts_written, bytes_written) = match built.into_inner().ok().flatten() {
            Some((layout, built_from)) if built_from == infos => layout,
            _ => self.layouts_of(&jobs, &keys, &infos, &delta_bytes),
        };
        let keys = self.cores.iter().map(|c| c.capture.len() as u64).sum();
        let staged = Staged {
            id: self.id,
            layouts,
            changed: self
                .cores
                .into_iter()
                .map(|c| (c.changed, c.stats))
                .collect(),
            parts_written,
            bytes_written,
            keys,
        };
        Ok((staged, manifest_len.into_inner()))
    }

    /// The checkpoint's layout once `jobs` are stored under `keys` as `infos`, with the parts
    /// written and their bytes.
    fn layouts_of(
        &self,
        jobs: &[Job<'_>],
        keys: &[String],
        infos: &[PartInfo],
        delta_bytes: &[Mutex<Option<Vec<u64>>>],
    ) -> (Vec<CoreLayout>, usize, u64) {
        let mut layouts: Vec<CoreLayout> = self.cores.iter().map(|c| c.layout.clone()).collect();
        let (mut parts_written, mut bytes_written) = (0, 0);
        for (((job, key), info), bucket_bytes) in jobs.iter().zip(keys).zip(infos).zip(delta_bytes)
        {
            let (core, bucket) = match *job {
                Job::Base { core, bucket } => (core, bucket),
                Job::Delta { core, .. } => (core, 0),
            };
            let part = PartRef {
                key: key.clone(),
                size: info.size,
                crc: info.crc,
                written_by: self.id,
            };
            parts_written += 1;
            bytes_written += part.size;
            let Some(layout) = layouts.get_mut(core) else {
                continue;
            };
            match bucket_bytes.lock().ok().and_then(|b| b.clone()) {
                None => {
                    if let Some(slot) = layout.bases.get_mut(bucket as usize) {
                        *slot = Some(part);
                    }
                }
                Some(bucket_bytes) => layout.deltas.push(DeltaRef { part, bucket_bytes }),
            }
        }
        for layout in &mut layouts {
            layout.prune();
        }
        (layouts, parts_written, bytes_written)
    }

    fn job_key(&self, job: &Job<'_>) -> String {
        match *job {
            Job::Base { core, bucket } => {
                let c = self.cores.get(core).map_or(0, |p| p.capture.core);
                part_key(self.id, c, &format!("b{bucket:04x}"))
            }
            Job::Delta { plan, index, .. } => {
                part_key(self.id, plan.capture.core, &format!("delta{index:04x}"))
            }
        }
    }

    /// Encodes `job`'s part into `buf` (handed over empty, its memory reused), `padded` to
    /// whole blocks or not; returns a delta's entry bytes per bucket (`None` for a base).
    fn encode_job(&self, job: &Job<'_>, padded: bool, buf: &mut Vec<u8>) -> Option<Vec<u64>> {
        let finish = |part: PartWriter| {
            if padded && part.encoded_len() >= MIN_PADDED {
                part.finish_padded()
            } else {
                part.finish()
            }
        };
        let bytes = std::mem::take(buf);
        match *job {
            Job::Base { core, bucket } => {
                let plan = self.cores.get(core)?;
                let buckets = plan.capture.buckets.len() as u32;
                let mut part = PartWriter::in_buffer(
                    PartKind::Base,
                    plan.capture.core,
                    bucket,
                    buckets,
                    bytes,
                );
                if let Some(map) = plan.capture.buckets.get(bucket as usize) {
                    for (k, v) in map.iter() {
                        part.put(k, v);
                    }
                }
                *buf = finish(part);
                None
            }
            Job::Delta { plan, from, to, .. } => {
                let buckets = plan.capture.buckets.len() as u32;
                let mut part =
                    PartWriter::in_buffer(PartKind::Delta, plan.capture.core, 0, buckets, bytes);
                let mut per_bucket = vec![0u64; buckets as usize];
                let from = from.map_or(Bound::Unbounded, Bound::Included);
                let to = to.map_or(Bound::Unbounded, Bound::Excluded);
                for (k, value) in plan.changed.range::<[u8], _>((from, to)) {
                    let b = bucket_of(k, buckets) as usize;
                    if plan.compacted.get(b).copied().unwrap_or(true) {
                        continue;
                    }
                    match value {
                        Some(v) => part.put(k, v),
                        None => part.delete(k),
                    }
                    per_bucket[b] += entry_bytes(k, value.as_deref());
                }
                *buf = finish(part);
                Some(per_bucket)
            }
        }
    }
}

impl CorePlan {
    /// The keys where the core's delta is cut into parts of about `part_bytes`, so that a
    /// large delta is encoded and written by several threads at once; empty for one part. Each
    /// part holds the changed keys from one bound to the next, so no two share a key.
    fn delta_bounds(&self, part_bytes: u64) -> Vec<&[u8]> {
        let bytes: u64 = self
            .stats
            .bytes
            .iter()
            .zip(&self.compacted)
            .filter(|(_, compacted)| !**compacted)
            .map(|(&b, _)| b)
            .sum();
        let parts = bytes.div_ceil(part_bytes.max(1)).max(1) as usize;
        if parts == 1 {
            // Not a walk over every changed key (cache misses all) to find no bound.
            return Vec::new();
        }
        // Cut by count over every changed key (those of compacted buckets are skipped when
        // encoding), which keeps the parts about even when changes spread over the buckets.
        let step = self.changed.len().div_ceil(parts).max(1);
        self.changed
            .keys()
            .step_by(step)
            .skip(1)
            .map(Vec::as_slice)
            .collect()
    }
}
