//! A deterministic simulated device implementing the core's [`SegmentStorage`].
//!
//! It keeps, per segment, a *durable* image (what survives a power cut) and a *live* image (what
//! reads see), and the writes that completed but no sync has covered yet. Submitted operations
//! complete in an order the seed picks. A sync covers exactly the writes that had completed when
//! it was submitted. [`SimStorage::crash`] throws away everything not durable, except a random
//! subset of the unsynced sectors (any order), some torn (a prefix of new bytes, the rest old),
//! and forgets creates and deletes that no namespace sync made durable. Faults: EIO or ENOSPC on
//! the Nth write or sync, bit flips in the durable image, read errors during recovery.

use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, Failure, SegmentOp, SegmentStorage};
use std::collections::{BTreeMap, BTreeSet};

/// Bytes in a sector: the unit a power cut persists or tears.
pub const SECTOR: usize = 512;

/// A small deterministic generator (xorshift64*), so a seed replays a run exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// A write that completed but no completed sync covers yet.
#[derive(Clone, Debug)]
struct Unsynced {
    id: u64,
    offset: usize,
    data: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
struct File {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Unsynced>,
}

#[derive(Clone, Debug)]
enum Pending {
    Create {
        segment: SegmentId,
        header: Vec<u8>,
    },
    /// The first `landed` bytes of a write the device takes in pieces (short writes) are in the
    /// live image already.
    Write {
        segment: SegmentId,
        offset: usize,
        data: Vec<u8>,
        sync: bool,
        landed: usize,
    },
    /// A sync and the unsynced writes it covers (those completed before it was submitted).
    Sync {
        segment: SegmentId,
        covers: Vec<u64>,
    },
    SyncNamespace,
    Delete {
        segment: SegmentId,
    },
}

/// Faults to inject.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fail the Nth write submitted from now (1-based) with this failure.
    pub fail_write: Option<(u64, Failure)>,
    /// Fail the Nth sync submitted from now (1-based) with this failure.
    pub fail_sync: Option<(u64, Failure)>,
    /// Fail the Nth read from now (1-based) with EIO.
    pub fail_read: Option<u64>,
}

/// The simulated device.
#[derive(Clone, Debug)]
pub struct SimStorage {
    rng: Rng,
    files: BTreeMap<SegmentId, File>,
    /// Files deleted since the last namespace sync.
    deleted: BTreeMap<SegmentId, File>,
    /// Segments whose existence is durable.
    durable_names: BTreeSet<SegmentId>,
    pending: Vec<(u64, Pending)>,
    /// Operations failed at submission, reported at the next poll.
    failed: Vec<(u64, Failure)>,
    next_write_id: u64,
    /// Operations complete in random order when true, in submission order when false.
    pub reorder: bool,
    /// Writes land in pieces (the backend's short writes) before they complete; a poll that
    /// lands a piece reports no completion.
    pub short_writes: bool,
    /// Faults to inject.
    pub faults: Faults,
}

impl SimStorage {
    /// An empty device whose choices follow `seed`.
    pub fn new(seed: u64) -> Self {
        SimStorage {
            rng: Rng::new(seed),
            files: BTreeMap::new(),
            deleted: BTreeMap::new(),
            durable_names: BTreeSet::new(),
            pending: Vec::new(),
            failed: Vec::new(),
            next_write_id: 1,
            reorder: true,
            short_writes: false,
            faults: Faults::default(),
        }
    }

    /// How many operations are in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// A power cut: in-flight operations are lost (their writes may have reached some
    /// sectors), unsynced writes survive only as a random subset of their sectors, some torn,
    /// and creates and deletes not made durable are undone. Returns how many unsynced sectors
    /// survived.
    pub fn crash(&mut self) -> usize {
        let mut rng = self.rng.clone();
        let survived = self.crash_with(&mut |_, _, sector_len| {
            let roll = rng.below(100);
            if roll < 45 {
                0
            } else if roll < 90 {
                sector_len
            } else {
                // Torn: a prefix of the new bytes.
                rng.below(sector_len as u64) as usize
            }
        });
        self.rng = rng;
        survived
    }

    /// A power cut where `keep(segment, offset, len)` says how many bytes of each unsynced
    /// piece (a write's part within one sector, starting at `offset`) reach the device: 0, all
    /// (`len`) or a torn prefix. Pieces are offered in a random order. Returns how many pieces
    /// kept something.
    pub fn crash_with(&mut self, keep: &mut dyn FnMut(SegmentId, usize, usize) -> usize) -> usize {
        if std::env::var("LAMINA_SIM_TRACE").is_ok() {
            eprintln!("crash; durable names {:?}", self.durable_names);
        }
        let mut survived = 0;
        // Writes still in flight may have reached the device too.
        let in_flight: Vec<(SegmentId, Unsynced)> = self
            .pending
            .drain(..)
            .filter_map(|(_, p)| match p {
                Pending::Write {
                    segment,
                    offset,
                    data,
                    ..
                } => Some((
                    segment,
                    Unsynced {
                        id: 0,
                        offset,
                        data,
                    },
                )),
                _ => None,
            })
            .collect();
        for (segment, w) in in_flight {
            if let Some(f) = self.files.get_mut(&segment) {
                f.unsynced.push(w);
            }
        }
        let names = self.durable_names.clone();
        self.files.retain(|id, _| names.contains(id));
        // Deletes that no namespace sync made durable are undone, with the file's contents.
        for (id, file) in std::mem::take(&mut self.deleted) {
            if names.contains(&id) {
                self.files.insert(id, file);
            }
        }
        for id in &names {
            self.files.entry(*id).or_default();
        }
        for (segment, file) in self.files.iter_mut() {
            let mut image = file.durable.clone();
            let mut unsynced = std::mem::take(&mut file.unsynced);
            // Any order: later writes may land and earlier ones not.
            let n = unsynced.len();
            for i in (1..n).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                unsynced.swap(i, j);
            }
            for w in unsynced {
                let end = w.offset + w.data.len();
                let mut pos = w.offset;
                while pos < end {
                    let sector_end = ((pos / SECTOR) + 1) * SECTOR;
                    let chunk_end = sector_end.min(end);
                    let keep = keep(*segment, pos, chunk_end - pos).min(chunk_end - pos);
                    if keep > 0 {
                        survived += 1;
                        if image.len() < pos + keep {
                            image.resize(pos + keep, 0);
                        }
                        image[pos..pos + keep]
                            .copy_from_slice(&w.data[pos - w.offset..pos - w.offset + keep]);
                    }
                    pos = chunk_end;
                }
            }
            file.durable = image.clone();
            file.live = image;
        }
        survived
    }

    /// Flips one bit of the durable (and live) image of `segment` at `offset`.
    pub fn flip_bit(&mut self, segment: SegmentId, offset: usize, bit: u8) {
        if let Some(f) = self.files.get_mut(&segment) {
            if let Some(b) = f.durable.get_mut(offset) {
                *b ^= 1 << (bit % 8);
            }
            if let Some(b) = f.live.get_mut(offset) {
                *b ^= 1 << (bit % 8);
            }
        }
    }

    /// Replaces the bytes of `segment` (live and durable), creating it durably if needed.
    pub fn set_bytes(&mut self, segment: SegmentId, bytes: Vec<u8>) {
        let file = self.files.entry(segment).or_default();
        file.live = bytes.clone();
        file.durable = bytes;
        file.unsynced.clear();
        self.durable_names.insert(segment);
    }

    /// Removes `segment` at once, durably.
    pub fn remove(&mut self, segment: SegmentId) {
        self.files.remove(&segment);
        self.durable_names.remove(&segment);
    }

    /// The live bytes of `segment`.
    pub fn bytes(&self, segment: SegmentId) -> Option<&[u8]> {
        self.files.get(&segment).map(|f| f.live.as_slice())
    }

    /// The segments that exist now.
    pub fn segments(&self) -> Vec<SegmentId> {
        self.files.keys().copied().collect()
    }

    fn complete(&mut self, op: Pending) -> Result<(), Failure> {
        match op {
            Pending::Create { segment, header } => {
                // The contract: the header is durable when the create completes; the name only
                // after a namespace sync.
                let file = self.files.entry(segment).or_default();
                file.live = header.clone();
                file.durable = header;
                Ok(())
            }
            Pending::Write {
                segment,
                offset,
                data,
                sync,
                ..
            } => {
                let id = self.next_write_id;
                self.next_write_id += 1;
                let file = self.files.get_mut(&segment).ok_or(Failure::NotFound)?;
                if file.live.len() < offset + data.len() {
                    file.live.resize(offset + data.len(), 0);
                }
                file.live[offset..offset + data.len()].copy_from_slice(&data);
                file.unsynced.push(Unsynced { id, offset, data });
                if sync {
                    Self::make_durable(file, None);
                }
                Ok(())
            }
            Pending::Sync { segment, covers } => {
                let file = self.files.get_mut(&segment).ok_or(Failure::NotFound)?;
                Self::make_durable(file, Some(&covers));
                Ok(())
            }
            Pending::SyncNamespace => {
                self.durable_names = self.files.keys().copied().collect();
                self.deleted.clear();
                Ok(())
            }
            Pending::Delete { segment } => {
                // Gone for readers; back after a crash until a namespace sync.
                if let Some(file) = self.files.remove(&segment) {
                    self.deleted.insert(segment, file);
                }
                Ok(())
            }
        }
    }

    /// Applies the covered unsynced writes (all when `covers` is `None`) to the durable image.
    fn make_durable(file: &mut File, covers: Option<&[u64]>) {
        let (done, keep): (Vec<Unsynced>, Vec<Unsynced>) = std::mem::take(&mut file.unsynced)
            .into_iter()
            .partition(|w| covers.is_none_or(|c| c.contains(&w.id)));
        for w in done {
            if file.durable.len() < w.offset + w.data.len() {
                file.durable.resize(w.offset + w.data.len(), 0);
            }
            file.durable[w.offset..w.offset + w.data.len()].copy_from_slice(&w.data);
        }
        file.unsynced = keep;
    }
}

impl ErrorType for SimStorage {
    type Error = Failure;
}

impl SegmentStorage for SimStorage {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), Failure> {
        if std::env::var("LAMINA_SIM_TRACE").is_ok() {
            match &op {
                SegmentOp::Write {
                    segment,
                    offset,
                    data,
                    sync,
                } => eprintln!(
                    "submit {token} write {segment} @{offset} +{} sync={sync}",
                    data.len()
                ),
                other => eprintln!("submit {token} {other:?}"),
            }
        }
        let pending = match op {
            SegmentOp::Create { segment, header } => {
                if self.files.contains_key(&segment) {
                    return Err(Failure::AlreadyExists);
                }
                // The name exists at once; durable after a namespace sync.
                self.files.insert(segment, File::default());
                Pending::Create {
                    segment,
                    header: header.to_vec(),
                }
            }
            SegmentOp::Write {
                segment,
                offset,
                data,
                sync,
            } => {
                if let Some((_, f)) = countdown(&mut self.faults.fail_write) {
                    self.failed.push((token, f));
                    return Ok(());
                }
                Pending::Write {
                    segment,
                    offset: offset as usize,
                    data: data.to_vec(),
                    sync,
                    landed: 0,
                }
            }
            SegmentOp::Sync { segment } => {
                if let Some((_, f)) = countdown(&mut self.faults.fail_sync) {
                    self.failed.push((token, f));
                    return Ok(());
                }
                let covers = self
                    .files
                    .get(&segment)
                    .map(|f| f.unsynced.iter().map(|w| w.id).collect())
                    .unwrap_or_default();
                Pending::Sync { segment, covers }
            }
            SegmentOp::SyncNamespace => Pending::SyncNamespace,
            SegmentOp::Delete { segment } => Pending::Delete { segment },
        };
        self.pending.push((token, pending));
        Ok(())
    }

    fn poll_completion(&mut self) -> Option<Completion<Failure>> {
        if let Some(failed) = self.failed.pop() {
            self.pending.retain(|(t, _)| *t != failed.0);
            return Some((failed.0, Err(failed.1)));
        }
        if self.pending.is_empty() {
            return None;
        }
        let i = if self.reorder {
            self.rng.below(self.pending.len() as u64) as usize
        } else {
            0
        };
        if self.short_writes
            && let Some((
                _,
                Pending::Write {
                    segment,
                    offset,
                    data,
                    landed,
                    ..
                },
            )) = self.pending.get_mut(i)
            && data.len() - *landed > 1
            && self.rng.chance(40)
        {
            // A short write: the device took a piece and the backend goes on with the rest; the
            // operation has not completed, and no sync covers any of it yet.
            let upto = *landed + 1 + self.rng.below((data.len() - *landed - 1) as u64) as usize;
            if let Some(file) = self.files.get_mut(segment) {
                let end = *offset + upto;
                if file.live.len() < end {
                    file.live.resize(end, 0);
                }
                file.live[*offset + *landed..end].copy_from_slice(&data[*landed..upto]);
            }
            *landed = upto;
            return None;
        }
        let (token, op) = self.pending.remove(i);
        if std::env::var("LAMINA_SIM_TRACE").is_ok() {
            eprintln!("complete {token}");
        }
        Some((token, self.complete(op)))
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Failure> {
        if let Some(n) = self.faults.fail_read {
            self.faults.fail_read = n.checked_sub(1).filter(|n| *n > 0);
            if n <= 1 {
                return Err(Failure::Io);
            }
        }
        let file = self.files.get(&segment).ok_or(Failure::NotFound)?;
        let start = (offset as usize).min(file.live.len());
        let n = buf.len().min(file.live.len() - start);
        buf[..n].copy_from_slice(&file.live[start..start + n]);
        Ok(n)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, Failure> {
        for (slot, id) in out.iter_mut().zip(self.files.keys()) {
            *slot = *id;
        }
        Ok(self.files.len())
    }
}

/// Counts a fault down; returns it when it is due (and clears it).
fn countdown(fault: &mut Option<(u64, Failure)>) -> Option<(u64, Failure)> {
    let (n, f) = (*fault)?;
    if n <= 1 {
        *fault = None;
        Some((n, f))
    } else {
        *fault = Some((n - 1, f));
        None
    }
}
