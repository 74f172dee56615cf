//! [`Overlay`]: the WAL's changes laid over a checkpoint's loaded state during recovery, last
//! write wins, through a hash index of the loaded keys; records are applied in small batches so
//! that their lookups' cache misses overlap instead of following one another.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::hint::black_box;

use crate::Error;

/// A core's state: key → value.
pub(super) type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// The replay's hasher: foldhash, seeded at random per process and per index. The keys come
/// from the store's own checksummed WAL and parts (still, they are the application's keys).
/// SipHash (std's `RandomState`, DoS-resistant by design) made each lookup of a 64-byte key
/// about 2.5 times as slow (measured: ~270 against ~100 ns a lookup at 420k keys), the largest
/// single cost of recovery then.
type Hasher = foldhash::quality::RandomState;

/// Records queued before their lookups are issued together.
const BATCH_RECORDS: usize = 32;

/// Key and value bytes queued, at most (past it the batch is applied).
const BATCH_BYTES: usize = 64 * 1024;

/// A record with more key and value bytes than this is applied at once, not copied into a batch.
const BATCH_RECORD_BYTES: usize = 4 * 1024;

/// A cache line: the stride at which a value's lines are touched before it is overwritten.
const LINE: usize = 64;

/// A loaded key the WAL put or deleted.
const CHANGED: u8 = 1;

/// A loaded key the WAL deleted (last).
const DELETED: u8 = 2;

/// The WAL's changes over a checkpoint's state: each loaded key (in key order) with its value
/// and whether the WAL changed or deleted it, and the keys the checkpoint does not hold (`None`:
/// deleted again). Last write wins, so it holds one entry per key whatever the WAL's length;
/// the records queued for the next batch are bounded ([`BATCH_BYTES`]).
pub(super) struct Overlay {
    /// The loaded keys and their values now, in key order.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Per loaded key, [`CHANGED`] and [`DELETED`].
    marks: Vec<u8>,
    /// Built at the first record: a WAL with nothing after the checkpoint needs no index.
    index: Option<KeyIndex>,
    added: HashMap<Vec<u8>, Option<Vec<u8>>, Hasher>,
    batch: Batch,
}

impl Overlay {
    /// No change yet over `entries` (loaded, in increasing key order, each key once).
    pub(super) fn new(entries: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        Overlay {
            marks: vec![0; entries.len()],
            entries,
            index: None,
            added: HashMap::default(),
            batch: Batch::default(),
        }
    }

    /// `key` maps to `value` (`None`: to nothing, a delete), after every earlier change.
    ///
    /// # Errors
    /// [`Error::Refused`] when the loaded keys are too many to index (more than 2^40).
    pub(super) fn change(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), Error> {
        if self.index.is_none() {
            self.index = Some(KeyIndex::new(&self.entries)?);
        }
        let len = key.len() + value.map_or(0, <[u8]>::len);
        if len > BATCH_RECORD_BYTES {
            // Applied in order: what is queued goes first.
            self.flush();
            let hash = self.index.as_ref().map_or(0, |index| index.hash(key));
            self.apply(hash, key, value);
            return Ok(());
        }
        self.batch.push(key, value);
        if self.batch.ops.len() >= BATCH_RECORDS || self.batch.bytes.len() >= BATCH_BYTES {
            self.flush();
        }
        Ok(())
    }

    /// Applies the queued records, in order. Three passes over the batch touch what the lookups
    /// will read (the index's slots, then the entries found there, then their key and value
    /// bytes), each pass issuing all its loads at once; the last pass looks each key up for
    /// real and applies it, finding everything in cache. The touches only warm the cache: the
    /// results come from the last pass alone.
    fn flush(&mut self) {
        let Some(index) = &self.index else {
            return;
        };
        let mut batch = std::mem::take(&mut self.batch);
        let mut touched = 0u64;
        for op in &mut batch.ops {
            op.hash = batch.bytes.get(op.key.clone()).map_or(0, |k| index.hash(k));
        }
        for op in &batch.ops {
            touched ^= index.slot_at(op.hash);
        }
        for op in &mut batch.ops {
            op.hint = index.candidate(op.hash);
            if let Some((key, value)) = op.hint.and_then(|i| self.entries.get(i)) {
                touched ^= (key.len() ^ value.len()) as u64;
            }
        }
        for op in &batch.ops {
            if let Some((key, value)) = op.hint.and_then(|i| self.entries.get(i)) {
                // Its first and last byte: a key of a line's length mostly spans two lines.
                touched ^= u64::from(key.first().copied().unwrap_or(0));
                touched ^= u64::from(key.last().copied().unwrap_or(0));
                for line in value.iter().step_by(LINE) {
                    touched ^= u64::from(*line);
                }
            }
        }
        black_box(touched);
        for op in &batch.ops {
            let key = batch.bytes.get(op.key.clone()).unwrap_or_default();
            let value = op
                .value
                .clone()
                .map(|v| batch.bytes.get(v).unwrap_or_default());
            self.apply(op.hash, key, value);
        }
        batch.clear();
        self.batch = batch;
    }

    /// Applies one change now; `hash` is `key`'s in the index.
    fn apply(&mut self, hash: u64, key: &[u8], value: Option<&[u8]>) {
        let entries = &mut self.entries;
        let found = self
            .index
            .as_ref()
            .and_then(|index| index.find(hash, key, entries));
        if let Some(i) = found
            && let (Some((_, held)), Some(mark)) = (entries.get_mut(i), self.marks.get_mut(i))
        {
            match value {
                Some(v) => {
                    // Overwritten in place: the allocation held is reused.
                    held.clear();
                    held.extend_from_slice(v);
                    *mark = CHANGED;
                }
                None => {
                    held.clear();
                    *mark = CHANGED | DELETED;
                }
            }
        } else if let Some(slot) = self.added.get_mut(key) {
            match (slot.as_mut(), value) {
                (Some(held), Some(v)) => {
                    held.clear();
                    held.extend_from_slice(v);
                }
                (_, v) => *slot = v.map(<[u8]>::to_vec),
            }
        } else {
            self.added.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        }
    }

    /// The state (the loaded keys with the changes laid over them) and the changed keys, each
    /// built at once from its entries in key order.
    pub(super) fn finish(mut self) -> (State, BTreeSet<Vec<u8>>) {
        self.flush();
        let Overlay {
            entries,
            marks,
            added,
            ..
        } = self;
        let mut added: Vec<(Vec<u8>, Option<Vec<u8>>)> = added.into_iter().collect();
        added.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let touched = entries
            .iter()
            .zip(&marks)
            .filter(|(_, mark)| **mark & CHANGED != 0)
            .map(|((key, _), _)| key.clone());
        let changed = merge_runs(touched, added.iter().map(|(key, _)| key.clone()), |k| k);
        let held = entries
            .into_iter()
            .zip(marks)
            .filter(|(_, mark)| mark & DELETED == 0)
            .map(|(entry, _)| entry);
        let added = added
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)));
        let state = merge_runs(held, added, |(k, _)| k);
        (state.into_iter().collect(), changed.into_iter().collect())
    }
}

/// Records queued: their keys and values copied out of the read window (which the next read
/// reuses), back to back.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    ops: Vec<Queued>,
}

/// One queued record.
struct Queued {
    /// Its key in [`Batch::bytes`].
    key: std::ops::Range<usize>,
    /// Its value there (`None`: a delete).
    value: Option<std::ops::Range<usize>>,
    /// The key's hash.
    hash: u64,
    /// The loaded entry the index first points to for the hash (a guess, to warm the cache).
    hint: Option<usize>,
}

impl Batch {
    fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let key = start..self.bytes.len();
        let value = value.map(|v| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(v);
            start..self.bytes.len()
        });
        self.ops.push(Queued {
            key,
            value,
            hash: 0,
            hint: None,
        });
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ops.clear();
    }
}

/// Bits of an index slot that hold the entry's position (plus one; 0 is an empty slot).
const POSITION_BITS: u32 = 40;

/// Where each loaded key is: open addressing with linear probing, at most half full, each slot
/// one `u64` (the hash's top 24 bits, then the entry's position plus one) so that a lookup
/// reads one cache line of the index and compares a key only when its tag matches.
struct KeyIndex {
    slots: Vec<u64>,
    mask: u64,
    hasher: Hasher,
}

impl KeyIndex {
    /// The index of `entries`' keys.
    fn new(entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Self, Error> {
        let count = entries.len();
        if count as u64 >= (1u64 << POSITION_BITS) - 1 {
            return Err(Error::Refused(format!(
                "{count} keys in one core's checkpoint are more than recovery indexes"
            )));
        }
        let len = count.saturating_mul(2).max(16).next_power_of_two();
        let mut index = KeyIndex {
            slots: vec![0; len],
            mask: len as u64 - 1,
            hasher: Hasher::default(),
        };
        // The hashes first (their keys' loads overlap), then the slots.
        let hashes: Vec<u64> = entries.iter().map(|(k, _)| index.hash(k)).collect();
        for (position, hash) in hashes.into_iter().enumerate() {
            index.insert(hash, position as u64);
        }
        Ok(index)
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn tag(hash: u64) -> u64 {
        hash >> POSITION_BITS
    }

    /// Puts `position` in the first empty slot from `hash`'s (the table is never full).
    fn insert(&mut self, hash: u64, position: u64) {
        let mut at = hash & self.mask;
        while let Some(slot) = self.slots.get_mut(at as usize) {
            if *slot == 0 {
                *slot = (Self::tag(hash) << POSITION_BITS) | (position + 1);
                return;
            }
            at = (at + 1) & self.mask;
        }
    }

    /// The slot `hash` starts at (read only to warm the cache).
    fn slot_at(&self, hash: u64) -> u64 {
        self.slots
            .get((hash & self.mask) as usize)
            .copied()
            .unwrap_or(0)
    }

    /// The slots from `hash`'s on until an empty one: the positions whose tag matches `hash`'s.
    fn matches(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let tag = Self::tag(hash);
        let mut at = hash & self.mask;
        std::iter::from_fn(move || {
            let slot = *self.slots.get(at as usize)?;
            at = (at + 1) & self.mask;
            Some(slot)
        })
        .take_while(|slot| *slot != 0)
        .filter(move |slot| slot >> POSITION_BITS == tag)
        .map(|slot| ((slot & ((1 << POSITION_BITS) - 1)) - 1) as usize)
    }

    /// The first entry whose tag matches `hash`'s: most likely the key's.
    fn candidate(&self, hash: u64) -> Option<usize> {
        self.matches(hash).next()
    }

    /// The position of `key` (whose hash is `hash`) in `entries`.
    fn find(&self, hash: u64, key: &[u8], entries: &[(Vec<u8>, Vec<u8>)]) -> Option<usize> {
        self.matches(hash)
            .find(|&i| entries.get(i).is_some_and(|(k, _)| k.as_slice() == key))
    }
}

/// Two runs in key order (with no key in both) merged into one.
fn merge_runs<T>(
    a: impl Iterator<Item = T>,
    b: impl Iterator<Item = T>,
    key: impl Fn(&T) -> &Vec<u8>,
) -> Vec<T> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut out = Vec::with_capacity(a.size_hint().0 + b.size_hint().0);
    loop {
        let from_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => key(x) <= key(y),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if from_a { a.next() } else { b.next() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loaded(keys: impl IntoIterator<Item = u32>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = keys
            .into_iter()
            .map(|k| (k.to_be_bytes().to_vec(), format!("v{k}").into_bytes()))
            .collect();
        entries.sort();
        entries.dedup_by(|a, b| a.0 == b.0);
        entries
    }

    /// What the overlay must produce: the changes applied one by one to a map.
    fn model(
        loaded: &[(Vec<u8>, Vec<u8>)],
        changes: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> (State, BTreeSet<Vec<u8>>) {
        let mut state: State = loaded.iter().cloned().collect();
        let mut changed = BTreeSet::new();
        for (key, value) in changes {
            match value {
                Some(v) => state.insert(key.clone(), v.clone()),
                None => state.remove(key),
            };
            changed.insert(key.clone());
        }
        (state, changed)
    }

    fn overlay(
        loaded: Vec<(Vec<u8>, Vec<u8>)>,
        changes: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> (State, BTreeSet<Vec<u8>>) {
        let mut overlay = Overlay::new(loaded);
        for (key, value) in changes {
            overlay.change(key, value.as_deref()).unwrap();
        }
        overlay.finish()
    }

    #[test]
    fn last_write_wins_for_loaded_and_new_keys_across_batches() {
        let base = loaded(0..100);
        let mut changes = Vec::new();
        // Several batches' worth, each key written, deleted and written again at other points.
        for round in 0..5u32 {
            for k in (0..150u32).step_by(3) {
                let value = (round % 2 == 0 || k % 2 == 0).then(|| format!("r{round}k{k}"));
                changes.push((k.to_be_bytes().to_vec(), value.map(String::into_bytes)));
            }
        }
        assert!(changes.len() > 3 * BATCH_RECORDS);
        assert_eq!(overlay(base.clone(), &changes), model(&base, &changes));
    }

    #[test]
    fn a_large_record_between_queued_ones_keeps_its_place_in_order() {
        let base = loaded(0..10);
        let key = |k: u32| k.to_be_bytes().to_vec();
        let big = vec![7u8; BATCH_RECORD_BYTES + 1];
        let changes = vec![
            (key(1), Some(b"queued first".to_vec())),
            (key(1), Some(big.clone())),
            (key(2), Some(big.clone())),
            (key(2), Some(b"queued after".to_vec())),
            (key(50), Some(b"new".to_vec())),
            (key(50), Some(big)),
            (key(3), None),
        ];
        let (state, changed) = overlay(base.clone(), &changes);
        assert_eq!(
            state.get(&key(1)).map(Vec::len),
            Some(BATCH_RECORD_BYTES + 1)
        );
        assert_eq!(
            state.get(&key(2)).map(Vec::as_slice),
            Some(&b"queued after"[..])
        );
        assert_eq!(
            state.get(&key(50)).map(Vec::len),
            Some(BATCH_RECORD_BYTES + 1)
        );
        assert_eq!(state.get(&key(3)), None);
        assert_eq!((state, changed), model(&base, &changes));
    }

    #[test]
    fn no_change_leaves_the_loaded_state_and_no_changed_key() {
        let base = loaded(0..1000);
        let (state, changed) = overlay(base.clone(), &[]);
        assert_eq!(state, base.into_iter().collect::<State>());
        assert!(changed.is_empty());
    }

    #[test]
    fn a_deleted_key_put_again_is_held_and_changed() {
        let base = loaded(0..4);
        let key = 2u32.to_be_bytes().to_vec();
        let changes = vec![(key.clone(), None), (key.clone(), Some(b"back".to_vec()))];
        let (state, changed) = overlay(base, &changes);
        assert_eq!(state.get(&key).map(Vec::as_slice), Some(&b"back"[..]));
        assert!(changed.contains(&key));
        assert_eq!(state.len(), 4);
    }

    #[test]
    fn the_index_finds_every_loaded_key_and_no_other() {
        let base = loaded((0..5000).map(|k| k * 7));
        let index = KeyIndex::new(&base).unwrap();
        for (i, (key, _)) in base.iter().enumerate() {
            assert_eq!(index.find(index.hash(key), key, &base), Some(i));
        }
        for k in (0..5000u32).map(|k| k * 7 + 1) {
            let key = k.to_be_bytes();
            assert_eq!(index.find(index.hash(&key), &key, &base), None);
        }
        // At most half full, so every probe ends at an empty slot.
        let used = index.slots.iter().filter(|s| **s != 0).count();
        assert_eq!(used, base.len());
        assert!(index.slots.len() >= 2 * base.len());
    }

    proptest! {
        #[test]
        fn the_overlay_is_the_changes_applied_in_order(
            keys in proptest::collection::vec(0u32..64, 0..64),
            changes in proptest::collection::vec(
                (0u32..96, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))),
                0..200,
            ),
        ) {
            let base = loaded(keys);
            let changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = changes
                .into_iter()
                .map(|(k, v)| (k.to_be_bytes().to_vec(), v))
                .collect();
            prop_assert_eq!(overlay(base.clone(), &changes), model(&base, &changes));
        }
    }
}
