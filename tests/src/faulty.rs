//! [`FaultyStorage`]: a wrapper around any [`SegmentStorage`] that fails the Nth write or sync
//! and, at [`FaultyStorage::crash`], puts back what a power cut could have left on the device.
//!
//! Every operation passes through to the inner backend, except an injected failure, which is
//! reported as the operation's completion error and never reaches it. Before a write passes
//! through, the bytes it overwrites are read with the inner `read_at` and kept in an undo log,
//! until a sync covers the write: a `Sync` of a segment that completes covers the writes to it
//! whose completions were polled before the sync was submitted (the contract's rule, taken
//! strictly: a blocking backend has done the write earlier, but the caller only knows it then),
//! and a `sync: true` write covers itself. A crash undoes the writes no sync covers, newest
//! first, sector by sector: each 512-byte sector the unsynced writes touched ends up at one of
//! its versions (none, some or all of those writes, oldest first, chosen by the seed), and the
//! first write it lost may be torn there (a prefix of its new bytes kept, the rest old).
//!
//! Inner backends that complete later (io_uring) work too: an injected failure is a completion
//! like any other, [`SegmentStorage::wait_for_completion`] waits in the inner backend unless a
//! completion is ready, and a crash first waits until every operation it follows has completed.
//!
//! Limits:
//! * The undo log reads the old bytes before the write is started: writes in flight at once must
//!   not overlap (the commit pipeline's never do).
//! * A crash puts bytes back with plain writes of their exact ranges, so an inner backend that
//!   rewrites whole blocks (`O_DIRECT`) would zero what follows them in their last block: crash
//!   only buffered backends.
//! * Creates and deletes pass through as they are: the namespace (a create or delete that no
//!   namespace sync made durable) is not simulated, nor the header of a create (the file backend
//!   makes it durable before completing). A delete or create of a segment drops its undo entries.
//! * The trait cannot shorten a segment: bytes a lost write had appended past the old end are
//!   put back as zeros (a power cut that kept the new size), and [`CrashReport::lengths`] says
//!   how long each such segment was, for a caller that can truncate it (a cut that lost the size).
//! * An injected write failure writes nothing; a failure of the inner backend keeps the write's
//!   undo entry, so a crash may undo it.

use crate::sim::{Rng, SECTOR};
use lamina_core::SegmentId;
use lamina_core::io::{Completion, Error, ErrorType, Failure, SegmentOp, SegmentStorage};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

/// The error of a [`FaultyStorage`]: the inner backend's, or an injected one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Faulty<E> {
    /// The inner backend failed.
    Inner(E),
    /// The wrapper injected this failure.
    Injected(Failure),
}

impl<E: Error> Error for Faulty<E> {
    fn failure(&self) -> Failure {
        match self {
            Faulty::Inner(e) => e.failure(),
            Faulty::Injected(f) => *f,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Faulty<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Faulty::Inner(e) => e.fmt(f),
            Faulty::Injected(failure) => write!(f, "injected failure: {failure}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Faulty<E> {}

/// A write no sync covers yet, with the bytes it overwrote.
#[derive(Clone, Debug)]
struct Undo {
    id: u64,
    segment: SegmentId,
    offset: u64,
    /// The bytes before the write; zeros past `old_end`.
    old: Vec<u8>,
    /// Where the segment ended, when the write reached past it.
    old_end: Option<u64>,
    /// Its completion was polled, successful: a later sync covers it.
    completed: bool,
}

/// The bytes a write overwrites (zeros past the end), and where the segment ended if it did
/// within the write's range.
type OldBytes = (Vec<u8>, Option<u64>);

/// An operation the wrapper follows until its completion is polled.
#[derive(Clone, Debug)]
enum Tracked {
    Write { id: u64, sync: bool },
    Sync { covers: Vec<u64> },
}

/// What a crash did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Unsynced writes found.
    pub writes: usize,
    /// Sectors those writes touched.
    pub sectors: usize,
    /// Sectors left at the newest version (every unsynced write to them kept).
    pub kept: usize,
    /// Sectors left with a torn write (a prefix of its new bytes).
    pub torn: usize,
    /// The segments that unsynced writes extended: the length each needs to hold what was kept
    /// (at least its length before those writes). Past it, the crash wrote zeros.
    pub lengths: Vec<(SegmentId, u64)>,
}

/// A fault-injecting wrapper around a [`SegmentStorage`]; see the module documentation.
#[derive(Debug)]
pub struct FaultyStorage<S: SegmentStorage> {
    inner: S,
    /// Completions taken from the inner backend or injected, in order, not yet polled.
    ready: VecDeque<Completion<Faulty<S::Error>>>,
    tracked: HashMap<u64, Tracked>,
    undo: Vec<Undo>,
    next_id: u64,
    fail_write: Option<(u64, Failure)>,
    fail_sync: Option<(u64, Failure)>,
    writes: u64,
    syncs: u64,
}

/// Counts a fault down; the failure when it is due.
fn countdown(fault: &mut Option<(u64, Failure)>) -> Option<Failure> {
    let (n, failure) = fault.as_mut()?;
    *n = n.saturating_sub(1);
    if *n == 0 {
        let failure = *failure;
        *fault = None;
        Some(failure)
    } else {
        None
    }
}

impl<S: SegmentStorage> FaultyStorage<S> {
    /// Wraps `inner`, with no fault set.
    pub fn new(inner: S) -> Self {
        FaultyStorage {
            inner,
            ready: VecDeque::new(),
            tracked: HashMap::new(),
            undo: Vec::new(),
            next_id: 1,
            fail_write: None,
            fail_sync: None,
            writes: 0,
            syncs: 0,
        }
    }

    /// Fails the `n`th write submitted from now (1-based) with `failure`.
    pub fn fail_write(&mut self, n: u64, failure: Failure) {
        self.fail_write = Some((n.max(1), failure));
    }

    /// Fails the `n`th sync submitted from now (1-based) with `failure`.
    pub fn fail_sync(&mut self, n: u64, failure: Failure) {
        self.fail_sync = Some((n.max(1), failure));
    }

    /// Writes and syncs submitted so far, injected failures included.
    pub fn counts(&self) -> (u64, u64) {
        (self.writes, self.syncs)
    }

    /// Writes no sync covers yet.
    pub fn unsynced_writes(&self) -> usize {
        self.undo.len()
    }

    /// The inner backend.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The inner backend, to change directly (the undo log does not see such changes).
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner backend back (after a [`Self::crash`], what a power cut left).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A power cut: undoes the writes no sync covered, except that each sector they touched
    /// keeps a seeded choice of its versions, possibly torn (see the module documentation).
    /// Completions not yet polled are dropped; faults stay set.
    ///
    /// # Errors
    /// When the inner backend fails to put bytes back (the inner state is then undefined).
    pub fn crash(&mut self, seed: u64) -> Result<CrashReport, Faulty<S::Error>> {
        self.settle()?;
        self.ready.clear();
        self.tracked.clear();
        let undo = std::mem::take(&mut self.undo);
        let mut rng = Rng::new(seed);
        let mut report = CrashReport {
            writes: undo.len(),
            ..CrashReport::default()
        };
        // Per sector, the unsynced writes touching it, oldest first.
        let mut sectors: BTreeMap<(SegmentId, u64), Vec<usize>> = BTreeMap::new();
        for (i, w) in undo.iter().enumerate() {
            let end = w.offset + w.old.len() as u64;
            let first = w.offset / SECTOR as u64;
            let last = end.div_ceil(SECTOR as u64);
            for s in first..last {
                sectors.entry((w.segment, s)).or_default().push(i);
            }
        }
        report.sectors = sectors.len();
        // Per sector: how many of its writes landed, and how much of the next one (torn).
        let mut landed: HashMap<(SegmentId, u64), (usize, Option<u64>)> = HashMap::new();
        for (key, writes) in &sectors {
            let m = writes.len() as u64;
            let roll = rng.below(100);
            let k = if roll < 45 {
                0
            } else if roll < 90 {
                m
            } else {
                rng.below(m + 1)
            };
            let torn = (k < m && rng.chance(30)).then(|| rng.below(SECTOR as u64));
            report.kept += usize::from(k == m);
            report.torn += usize::from(torn.is_some());
            landed.insert(*key, (k as usize, torn));
        }
        // The end of the bytes kept, per segment an unsynced write extended.
        let mut ends: BTreeMap<SegmentId, u64> = BTreeMap::new();
        for w in &undo {
            if let Some(old_end) = w.old_end {
                let e = ends.entry(w.segment).or_insert(old_end);
                *e = (*e).min(old_end);
            }
        }
        // Newest first: put the old bytes back where the sector did not keep the write.
        for (i, w) in undo.iter().enumerate().rev() {
            let end = w.offset + w.old.len() as u64;
            let mut pos = w.offset;
            while pos < end {
                let sector = pos / SECTOR as u64;
                let piece_end = ((sector + 1) * SECTOR as u64).min(end);
                let (k, torn) = landed[&(w.segment, sector)];
                let rank = sectors[&(w.segment, sector)]
                    .iter()
                    .position(|&j| j == i)
                    .unwrap_or(0);
                let keep_to = if rank < k {
                    piece_end
                } else if rank == k {
                    // A tear: the sector's first `t` bytes of this write's new bytes.
                    let t = torn.unwrap_or(0);
                    (sector * SECTOR as u64 + t).clamp(pos, piece_end)
                } else {
                    pos
                };
                if let Some(e) = ends.get_mut(&w.segment).filter(|_| keep_to > pos) {
                    *e = (*e).max(keep_to);
                }
                if keep_to < piece_end {
                    let from = (keep_to - w.offset) as usize;
                    let to = (piece_end - w.offset) as usize;
                    self.put_back(w.segment, keep_to, &w.old[from..to])?;
                }
                pos = piece_end;
            }
        }
        report.lengths = ends.into_iter().collect();
        Ok(report)
    }

    /// Writes `bytes` at `offset` of `segment` through the inner backend, and waits for it.
    fn put_back(
        &mut self,
        segment: SegmentId,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), Faulty<S::Error>> {
        const TOKEN: u64 = u64::MAX / 2;
        let op = SegmentOp::Write {
            segment,
            offset,
            data: bytes,
            sync: false,
        };
        self.inner.submit(TOKEN, op).map_err(Faulty::Inner)?;
        loop {
            match self.inner.poll_completion() {
                Some((TOKEN, result)) => return result.map_err(Faulty::Inner),
                Some(_) => {}
                None => self.inner.wait_for_completion().map_err(Faulty::Inner)?,
            }
        }
    }

    /// Waits until no operation the wrapper follows is still in the inner backend, moving the
    /// completions to `ready` (a backend that completes later may still be writing).
    fn settle(&mut self) -> Result<(), Faulty<S::Error>> {
        loop {
            self.pull();
            let pending = self
                .tracked
                .keys()
                .any(|token| !self.ready.iter().any(|(t, _)| t == token));
            if !pending {
                return Ok(());
            }
            self.inner.wait_for_completion().map_err(Faulty::Inner)?;
        }
    }

    /// Moves the inner backend's completions to `ready`.
    fn pull(&mut self) {
        while let Some((token, result)) = self.inner.poll_completion() {
            self.ready.push_back((token, result.map_err(Faulty::Inner)));
        }
    }

    /// Reads what a write of `len` bytes at `offset` overwrites: the bytes (zeros past the end)
    /// and where the segment ended, if within the range.
    fn read_old(
        &mut self,
        segment: SegmentId,
        offset: u64,
        len: usize,
    ) -> Result<OldBytes, Faulty<S::Error>> {
        let mut old = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let n = self
                .inner
                .read_at(segment, offset + at as u64, &mut old[at..])
                .map_err(Faulty::Inner)?;
            if n == 0 {
                return Ok((old, Some(offset + at as u64)));
            }
            at += n;
        }
        Ok((old, None))
    }

    fn forget_segment(&mut self, segment: SegmentId) {
        self.undo.retain(|w| w.segment != segment);
    }
}

impl<S: SegmentStorage> ErrorType for FaultyStorage<S> {
    type Error = Faulty<S::Error>;
}

impl<S: SegmentStorage> SegmentStorage for FaultyStorage<S> {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), Self::Error> {
        match op {
            SegmentOp::Write {
                segment,
                offset,
                data,
                sync,
            } => {
                self.writes += 1;
                if let Some(failure) = countdown(&mut self.fail_write) {
                    self.ready
                        .push_back((token, Err(Faulty::Injected(failure))));
                    return Ok(());
                }
                let (old, old_end) = self.read_old(segment, offset, data.len())?;
                let id = self.next_id;
                self.next_id += 1;
                self.undo.push(Undo {
                    id,
                    segment,
                    offset,
                    old,
                    old_end,
                    completed: false,
                });
                self.tracked.insert(token, Tracked::Write { id, sync });
            }
            SegmentOp::Sync { segment } => {
                self.syncs += 1;
                if let Some(failure) = countdown(&mut self.fail_sync) {
                    self.ready
                        .push_back((token, Err(Faulty::Injected(failure))));
                    return Ok(());
                }
                let covers = self
                    .undo
                    .iter()
                    .filter(|w| w.segment == segment && w.completed)
                    .map(|w| w.id)
                    .collect();
                self.tracked.insert(token, Tracked::Sync { covers });
            }
            SegmentOp::Create { segment, .. } | SegmentOp::Delete { segment } => {
                self.forget_segment(segment);
            }
            SegmentOp::SyncNamespace => {}
        }
        let submitted = self.inner.submit(token, op).map_err(Faulty::Inner);
        if submitted.is_err() {
            self.tracked.remove(&token);
        }
        self.pull();
        submitted
    }

    fn poll_completion(&mut self) -> Option<Completion<Self::Error>> {
        self.pull();
        let (token, result) = self.ready.pop_front()?;
        if let Some(tracked) = self.tracked.remove(&token) {
            match (tracked, &result) {
                (Tracked::Write { id, sync: true }, Ok(())) => self.undo.retain(|w| w.id != id),
                (Tracked::Write { id, sync: false }, Ok(())) => {
                    if let Some(w) = self.undo.iter_mut().find(|w| w.id == id) {
                        w.completed = true;
                    }
                }
                (Tracked::Sync { covers }, Ok(())) => {
                    self.undo.retain(|w| !covers.contains(&w.id));
                }
                // A failed write stays undoable; a failed sync covers nothing.
                _ => {}
            }
        }
        Some((token, result))
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Self::Error> {
        self.inner
            .read_at(segment, offset, buf)
            .map_err(Faulty::Inner)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, Self::Error> {
        self.inner.list(out).map_err(Faulty::Inner)
    }

    /// Returns at once while a completion (an injected failure, or one taken from the inner
    /// backend) waits to be polled; else waits in the inner backend.
    fn wait_for_completion(&mut self) -> Result<(), Self::Error> {
        self.pull();
        if !self.ready.is_empty() {
            return Ok(());
        }
        self.inner.wait_for_completion().map_err(Faulty::Inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blocking in-memory backend: every operation is done inside `submit`. With `later`, its
    /// completions are handed out only after a `wait_for_completion`, as a ring's are.
    #[derive(Debug, Default)]
    struct Mem {
        files: BTreeMap<SegmentId, Vec<u8>>,
        done: VecDeque<Completion<Failure>>,
        later: bool,
        released: usize,
        waits: u32,
    }

    impl ErrorType for Mem {
        type Error = Failure;
    }

    impl SegmentStorage for Mem {
        fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), Failure> {
            let result = match op {
                SegmentOp::Create { segment, header } => {
                    self.files.insert(segment, header.to_vec());
                    Ok(())
                }
                SegmentOp::Write {
                    segment,
                    offset,
                    data,
                    ..
                } => match self.files.get_mut(&segment) {
                    Some(f) => {
                        let (at, end) = (offset as usize, offset as usize + data.len());
                        if f.len() < end {
                            f.resize(end, 0);
                        }
                        f[at..end].copy_from_slice(data);
                        Ok(())
                    }
                    None => Err(Failure::NotFound),
                },
                SegmentOp::Delete { segment } => {
                    self.files.remove(&segment);
                    Ok(())
                }
                SegmentOp::Sync { .. } | SegmentOp::SyncNamespace => Ok(()),
            };
            self.done.push_back((token, result));
            Ok(())
        }

        fn poll_completion(&mut self) -> Option<Completion<Failure>> {
            if self.later {
                if self.released == 0 {
                    return None;
                }
                self.released -= 1;
            }
            self.done.pop_front()
        }

        fn wait_for_completion(&mut self) -> Result<(), Failure> {
            self.waits += 1;
            self.released = self.done.len();
            Ok(())
        }

        fn read_at(&mut self, s: SegmentId, offset: u64, buf: &mut [u8]) -> Result<usize, Failure> {
            let f = self.files.get(&s).ok_or(Failure::NotFound)?;
            let from = (offset as usize).min(f.len());
            let n = buf.len().min(f.len() - from);
            buf[..n].copy_from_slice(&f[from..from + n]);
            Ok(n)
        }

        fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, Failure> {
            for (slot, id) in out.iter_mut().zip(self.files.keys()) {
                *slot = *id;
            }
            Ok(self.files.len())
        }
    }

    const SEG: SegmentId = SegmentId(0);

    fn run(
        s: &mut FaultyStorage<Mem>,
        token: u64,
        op: SegmentOp<'_>,
    ) -> Result<(), Faulty<Failure>> {
        s.submit(token, op)?;
        let (t, result) = s
            .poll_completion()
            .expect("a blocking backend completes at once");
        assert_eq!(t, token);
        result
    }

    fn write(s: &mut FaultyStorage<Mem>, offset: u64, data: &[u8]) -> Result<(), Faulty<Failure>> {
        let op = SegmentOp::Write {
            segment: SEG,
            offset,
            data,
            sync: false,
        };
        run(s, 1, op)
    }

    fn sync(s: &mut FaultyStorage<Mem>) -> Result<(), Faulty<Failure>> {
        run(s, 2, SegmentOp::Sync { segment: SEG })
    }

    /// A segment of 4 KiB of `a`, synced.
    fn storage() -> FaultyStorage<Mem> {
        let mut s = FaultyStorage::new(Mem::default());
        run(
            &mut s,
            0,
            SegmentOp::Create {
                segment: SEG,
                header: &[b'h'; 16],
            },
        )
        .expect("create");
        write(&mut s, 16, &[b'a'; 4080]).expect("write");
        sync(&mut s).expect("sync");
        s
    }

    #[test]
    fn a_backend_that_completes_later_is_waited_on_unless_a_completion_is_ready() {
        let mut s = storage();
        s.inner_mut().later = true;
        let op = SegmentOp::Write {
            segment: SEG,
            offset: 4096,
            data: b"later",
            sync: false,
        };
        s.submit(5, op).expect("submitted");
        assert!(s.poll_completion().is_none(), "in flight");
        s.wait_for_completion().expect("wait");
        assert_eq!(s.inner().waits, 1);
        assert!(matches!(s.poll_completion(), Some((5, Ok(())))));
        // An injected failure is ready at once: no wait reaches the backend.
        s.fail_sync(1, Failure::Io);
        s.submit(6, SegmentOp::Sync { segment: SEG })
            .expect("submitted");
        s.wait_for_completion().expect("wait");
        assert_eq!(s.inner().waits, 1);
        assert!(matches!(
            s.poll_completion(),
            Some((6, Err(Faulty::Injected(Failure::Io))))
        ));
    }

    #[test]
    fn a_crash_waits_for_writes_still_in_flight_then_undoes_them() {
        let mut s = storage();
        s.inner_mut().later = true;
        let op = SegmentOp::Write {
            segment: SEG,
            offset: 16,
            data: &[b'z'; 4080],
            sync: false,
        };
        s.submit(7, op).expect("submitted");
        let report = s.crash(3).expect("crash");
        assert_eq!(report.writes, 1);
        assert!(s.inner().waits >= 1, "the crash waited for the write");
        assert!(
            s.inner().done.is_empty(),
            "nothing of it is left to complete"
        );
        let f = &s.inner().files[&SEG];
        // Whatever each sector kept, nothing outside the write changed and no sector is
        // anything but old, new or a torn mix.
        assert!(f[..16] == [b'h'; 16]);
        assert!(f[16..].iter().all(|&b| b == b'a' || b == b'z'));
    }

    #[test]
    fn synced_bytes_survive_every_crash_and_unsynced_sectors_are_old_new_or_torn() {
        let (mut kept, mut lost, mut torn) = (0, 0, 0);
        for seed in 0..200 {
            let mut s = storage();
            write(&mut s, 1000, &[b'b'; 2000]).expect("write");
            assert_eq!(s.unsynced_writes(), 1);
            let report = s.crash(seed).expect("crash");
            assert_eq!((report.writes, report.sectors), (1, 5));
            let f = &s.inner().files[&SEG];
            assert_eq!(f.len(), 4096);
            assert!(f[..16] == [b'h'; 16] && f[16..1000].iter().all(|&b| b == b'a'));
            assert!(f[3000..].iter().all(|&b| b == b'a'));
            for first in (1..=5).map(|k| (k * SECTOR).max(1000)) {
                let sector = &f[first..(first / SECTOR * SECTOR + SECTOR).min(3000)];
                let new = sector.iter().take_while(|&&b| b == b'b').count();
                assert!(
                    sector[new..].iter().all(|&b| b == b'a'),
                    "seed {seed}: not a prefix"
                );
                match new {
                    0 => lost += 1,
                    n if n == sector.len() => kept += 1,
                    _ => torn += 1,
                }
            }
        }
        assert!(
            kept > 0 && lost > 0 && torn > 0,
            "kept {kept}, lost {lost}, torn {torn}"
        );
    }

    #[test]
    fn overwritten_sectors_end_at_one_of_their_versions_oldest_first() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..300 {
            let mut s = storage();
            write(&mut s, 1000, &[b'b'; 2000]).expect("write");
            write(&mut s, 1000, &[b'c'; 2000]).expect("write");
            s.crash(seed).expect("crash");
            let f = &s.inner().files[&SEG];
            for first in (1..=5).map(|k| (k * SECTOR).max(1000)) {
                let piece = &f[first..(first / SECTOR * SECTOR + SECTOR).min(3000)];
                let head = piece[0];
                let n = piece.iter().take_while(|&&b| b == head).count();
                let tail = piece.get(n).copied().unwrap_or(head);
                assert!(piece[n..].iter().all(|&b| b == tail), "seed {seed}");
                // Whole at one version, or torn between two that follow each other.
                assert!(
                    [
                        (b'a', b'a'),
                        (b'b', b'b'),
                        (b'c', b'c'),
                        (b'b', b'a'),
                        (b'c', b'b')
                    ]
                    .contains(&(head, tail)),
                    "seed {seed}: {} then {}",
                    head as char,
                    tail as char
                );
                seen.insert((head, tail));
            }
        }
        assert_eq!(seen.len(), 5, "every outcome seen: {seen:?}");
    }

    #[test]
    fn a_sync_covers_only_writes_completed_before_it_was_submitted() {
        let mut s = storage();
        write(&mut s, 100, b"covered").expect("write");
        // Submitted, not yet polled: the sync submitted next does not cover it.
        let op = SegmentOp::Write {
            segment: SEG,
            offset: 200,
            data: b"not covered",
            sync: false,
        };
        s.submit(7, op).expect("submit");
        s.submit(8, SegmentOp::Sync { segment: SEG })
            .expect("submit");
        assert_eq!(s.poll_completion().map(|c| c.0), Some(7));
        assert_eq!(s.poll_completion().map(|c| c.0), Some(8));
        assert_eq!(s.unsynced_writes(), 1);
        // A linked write is synced at once.
        let op = SegmentOp::Write {
            segment: SEG,
            offset: 300,
            data: b"linked",
            sync: true,
        };
        run(&mut s, 9, op).expect("linked write");
        assert_eq!(s.unsynced_writes(), 1);
    }

    #[test]
    fn the_nth_write_and_sync_fail_with_the_injected_failure_and_write_nothing() {
        let mut s = storage();
        s.fail_write(2, Failure::NoSpace);
        write(&mut s, 100, b"first").expect("first write");
        let err = write(&mut s, 200, b"second").expect_err("second write fails");
        assert_eq!(err, Faulty::Injected(Failure::NoSpace));
        assert_eq!(err.failure(), Failure::NoSpace);
        assert_eq!(&s.inner().files[&SEG][200..206], &[b'a'; 6]);
        write(&mut s, 300, b"third").expect("only the second fails");

        s.fail_sync(1, Failure::Io);
        assert_eq!(sync(&mut s), Err(Faulty::Injected(Failure::Io)));
        assert_eq!(s.unsynced_writes(), 2, "a failed sync covers nothing");
        sync(&mut s).expect("the next sync works");
        assert_eq!(s.unsynced_writes(), 0);
        assert_eq!(s.counts(), (4, 3));
    }

    #[test]
    fn a_lost_append_past_the_end_is_zeros_and_the_old_length_is_reported() {
        for seed in 0..50 {
            let mut s = storage();
            write(&mut s, 4000, &[b'c'; 1096]).expect("write");
            let report = s.crash(seed).expect("crash");
            let f = &s.inner().files[&SEG];
            let [(segment, len)] = report.lengths[..] else {
                panic!("seed {seed}: {report:?}");
            };
            assert_eq!(segment, SEG);
            assert!((4096..=5096).contains(&len), "seed {seed}: {len}");
            assert!(f[..4000].iter().all(|&b| b == b'a' || b == b'h'));
            // Past the reported length only zeros: a caller may cut them off.
            assert!(f[len as usize..].iter().all(|&b| b == 0), "seed {seed}");
        }
    }
}
