//! [`Shadow`]: Ring 1's copy of one core's state, fed by the drained changelog, from which a
//! checkpoint's snapshot is captured without stopping Ring 0.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use lamina_core::changelog::Entry;

use super::part::bucket_of;

/// A value in the shadow: shared, so a bucket copied on write and the changed keys hold it
/// without copying its bytes.
pub type Value = Arc<[u8]>;

/// One bucket of a core's state: key → value.
pub type Bucket = BTreeMap<Vec<u8>, Value>;

/// The keys changed since a capture, each with its value now (`None`: deleted), in key order:
/// a delta is written from them without looking a key up in its bucket.
pub type Changes = BTreeMap<Vec<u8>, Option<Value>>;

/// Ring 1's materialized copy of one core's state, split into buckets by key hash
/// ([`bucket_of`]), plus the keys changed since the last capture with their values.
///
/// The drainer applies each entry after writing it to the core's WAL, so at a barrier the shadow
/// holds exactly the mutations before it; [`Shadow::capture`] then takes the snapshot: each
/// bucket is shared (`Arc`) with the capture, and the first later mutation of a bucket copies it
/// (copy-on-write), on Ring 1, never on Ring 0.
///
/// Applying an entry costs one bucket lookup: the changed key is only logged (its bytes in one
/// buffer, no allocation), and the log is sorted and merged into a run of distinct changed keys
/// now and then, so that a capture sorts only the last stretch and builds [`Changes`] from the
/// run in O(changes). The values a put replaces are dropped in runs, after one pass that loads them
/// all: their reference counts lie in memory that is cold by then, and touching them one at a
/// time, each with a locked decrement, would wait for each miss in turn.
///
/// Memory: the shadow is a second copy of the core's state (Ring 0 keeps its own); while a
/// checkpoint is being written, each bucket mutated since its capture exists twice, so the peak
/// is up to three copies of the state's keys, less with more buckets; values are shared
/// ([`Value`]) by the copies and the changed keys, so their bytes exist once (twice for a key
/// overwritten since its capture).
#[derive(Clone, Debug)]
pub struct Shadow {
    core: u32,
    buckets: Vec<Arc<Bucket>>,
    log: ChangeLog,
    /// Values replaced in the buckets, dropped in runs (see [`Shadow::bury`]).
    graveyard: Vec<Value>,
}

/// Values buried before the graveyard is emptied.
const GRAVEYARD: usize = 256;

/// The keys changed since the last capture, each with its bucket and its value now (`None`:
/// deleted): a sorted run of distinct keys, and a tail logged in the order the changes were
/// made (a key may appear more than once there), folded into the run once it holds a quarter
/// as many (at least [`ChangeLog::MIN_TAIL`]). So a change costs a log push now and a few
/// moves and comparisons later, and a capture sorts at most the tail.
#[derive(Clone, Debug, Default)]
struct ChangeLog {
    /// The folded changes, in key order, each key once.
    run: Vec<Folded>,
    /// The tail's keys' bytes, one after the other.
    keys: Vec<u8>,
    /// The tail, in the order the changes were made.
    changes: Vec<Change>,
}

/// A change folded into [`ChangeLog::run`].
#[derive(Clone, Debug)]
struct Folded {
    prefix: u64,
    key: Vec<u8>,
    bucket: usize,
    value: Option<Value>,
}

/// One logged change of the tail.
#[derive(Clone, Debug)]
struct Change {
    /// The key's first 8 bytes, big-endian, zero-padded: most comparisons end here, without
    /// reading the key. Zero padding makes the prefix order agree with the keys' (a key that is
    /// a prefix of another sorts first either way).
    prefix: u64,
    /// Where its key lies in [`ChangeLog::keys`]; later changes lie further on, so this orders
    /// a key's changes.
    start: usize,
    len: usize,
    bucket: usize,
    value: Option<Value>,
}

/// The first 8 bytes of `key`, big-endian, zero-padded.
fn prefix_of(key: &[u8]) -> u64 {
    let mut prefix = [0u8; 8];
    for (to, from) in prefix.iter_mut().zip(key) {
        *to = *from;
    }
    u64::from_be_bytes(prefix)
}

impl ChangeLog {
    /// The tail is not folded below this many entries.
    const MIN_TAIL: usize = 1 << 13;

    fn key(&self, change: &Change) -> &[u8] {
        self.keys
            .get(change.start..change.start + change.len)
            .unwrap_or(&[])
    }

    fn push(&mut self, bucket: usize, key: &[u8], value: Option<Value>) {
        self.changes.push(Change {
            prefix: prefix_of(key),
            start: self.keys.len(),
            len: key.len(),
            bucket,
            value,
        });
        self.keys.extend_from_slice(key);
        if self.changes.len() >= Self::MIN_TAIL.max(self.run.len() / 4) {
            self.fold();
        }
    }

    /// Sorts the tail by key, keeps each key's last change, and merges it into the run (a
    /// key already there keeps its key bytes and takes the new value).
    fn fold(&mut self) {
        let mut changes = std::mem::take(&mut self.changes);
        changes.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| self.key(a).cmp(self.key(b)))
                .then(a.start.cmp(&b.start))
        });
        changes.dedup_by(|later, kept| {
            let same = later.prefix == kept.prefix && self.key(later) == self.key(kept);
            if same {
                std::mem::swap(&mut later.value, &mut kept.value);
            }
            same
        });
        let run = std::mem::take(&mut self.run);
        let mut merged = Vec::with_capacity(run.len() + changes.len());
        let mut run = run.into_iter().peekable();
        for change in changes {
            let key = self.key(&change);
            let order = |folded: &Folded| {
                folded
                    .prefix
                    .cmp(&change.prefix)
                    .then_with(|| folded.key.as_slice().cmp(key))
            };
            while let Some(before) = run.next_if(|f| order(f).is_lt()) {
                merged.push(before);
            }
            match run.next_if(|f| order(f).is_eq()) {
                Some(mut same) => {
                    same.value = change.value;
                    merged.push(same);
                }
                None => merged.push(Folded {
                    prefix: change.prefix,
                    key: key.to_vec(),
                    bucket: change.bucket,
                    value: change.value,
                }),
            }
        }
        merged.extend(run);
        self.run = merged;
        self.keys.clear();
    }

    /// The changed keys in key order, each with its last value, and their counts per bucket
    /// (of `buckets`); the log starts over.
    fn take(&mut self, buckets: usize) -> (Changes, ChangeStats) {
        self.fold();
        let mut stats = ChangeStats::new(buckets);
        let changed = std::mem::take(&mut self.run)
            .into_iter()
            .map(|folded| {
                stats.count(
                    folded.bucket,
                    folded.key.len() + folded.value.as_ref().map_or(0, |v| v.len()),
                );
                (folded.key, folded.value)
            })
            .collect();
        (changed, stats)
    }
}

/// Per bucket, how many changed keys and how many bytes their entries took when first changed
/// (an estimate of the delta's size that needs no pass over the keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeStats {
    /// Changed keys per bucket.
    pub keys: Vec<u64>,
    /// Entry bytes per bucket.
    pub bytes: Vec<u64>,
}

impl ChangeStats {
    /// No change in `buckets` buckets.
    #[must_use]
    pub fn new(buckets: usize) -> Self {
        ChangeStats {
            keys: vec![0; buckets],
            bytes: vec![0; buckets],
        }
    }

    /// Counts a changed key of `bucket` whose entry holds `len` bytes of key and value.
    fn count(&mut self, bucket: usize, len: usize) {
        if let Some(k) = self.keys.get_mut(bucket) {
            *k += 1;
        }
        if let Some(b) = self.bytes.get_mut(bucket) {
            // The entry's bytes in a part: length prefix, entry header, key and value.
            *b += (4 + 5 + len) as u64;
        }
    }

    /// Adds `other`'s counts (of as many buckets).
    pub fn add(&mut self, other: &ChangeStats) {
        for (a, b) in self.keys.iter_mut().zip(&other.keys) {
            *a += b;
        }
        for (a, b) in self.bytes.iter_mut().zip(&other.bytes) {
            *a += b;
        }
    }
}

/// A core's state at a barrier: the shadow's buckets, shared, and the keys changed since the
/// capture before it.
#[derive(Clone, Debug)]
pub struct Capture {
    /// The core.
    pub core: u32,
    /// Its buckets at the barrier.
    pub buckets: Vec<Arc<Bucket>>,
    /// The keys put or deleted between the previous capture and this one, with their values
    /// at this one.
    pub changed: Changes,
    /// Their counts per bucket.
    pub stats: ChangeStats,
}

impl Capture {
    /// Keys held, over every bucket.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.len()).sum()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shadow {
    /// An empty state of `core`, split into `buckets` buckets (at least 1).
    #[must_use]
    pub fn new(core: u32, buckets: u32) -> Self {
        let buckets: Vec<Arc<Bucket>> = (0..buckets.max(1)).map(|_| Arc::default()).collect();
        Shadow {
            core,
            buckets,
            log: ChangeLog::default(),
            graveyard: Vec::with_capacity(GRAVEYARD),
        }
    }

    /// A shadow holding `state` (what recovery rebuilt), with `changed` the keys that differ from
    /// the checkpoint recovery started from (those the WAL replay touched): the next capture
    /// must carry them.
    #[must_use]
    pub fn with_state(
        core: u32,
        buckets: u32,
        state: BTreeMap<Vec<u8>, Vec<u8>>,
        changed: BTreeSet<Vec<u8>>,
    ) -> Self {
        let entries = state.into_iter().map(|(k, v)| (k, Value::from(v)));
        Self::from_sorted(core, buckets, entries, changed)
    }

    /// [`Self::with_state`] with a copy of `state`, which stays with the caller (Ring 0's).
    pub(crate) fn with_copy_of(
        core: u32,
        buckets: u32,
        state: &BTreeMap<Vec<u8>, Vec<u8>>,
        changed: BTreeSet<Vec<u8>>,
    ) -> Self {
        let entries = state
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_slice())));
        Self::from_sorted(core, buckets, entries, changed)
    }

    /// A shadow holding `entries` (in increasing key order, each key once) and `changed`.
    fn from_sorted(
        core: u32,
        buckets: u32,
        entries: impl IntoIterator<Item = (Vec<u8>, Value)>,
        changed: BTreeSet<Vec<u8>>,
    ) -> Self {
        let mut shadow = Shadow::new(core, buckets);
        let count = shadow.bucket_count();
        // The entries and the changed keys come in key order, so each bucket's share does too
        // (each bucket is built at once from its sorted entries), and the changed keys find
        // their values in one merged pass, into the change log.
        let mut shares: Vec<Vec<(Vec<u8>, Value)>> = vec![Vec::new(); count as usize];
        let mut changed = changed.into_iter().peekable();
        for (key, value) in entries {
            while let Some(gone) = changed.next_if(|c| *c < key) {
                shadow
                    .log
                    .push(bucket_of(&gone, count) as usize, &gone, None);
            }
            let b = bucket_of(&key, count) as usize;
            if changed.next_if(|c| *c == key).is_some() {
                shadow.log.push(b, &key, Some(value.clone()));
            }
            if let Some(share) = shares.get_mut(b) {
                share.push((key, value));
            }
        }
        for gone in changed {
            shadow
                .log
                .push(bucket_of(&gone, count) as usize, &gone, None);
        }
        for (bucket, share) in shadow.buckets.iter_mut().zip(shares) {
            *bucket = Arc::new(share.into_iter().collect());
        }
        shadow
    }

    /// The core.
    #[must_use]
    pub fn core(&self) -> u32 {
        self.core
    }

    /// How many buckets the state is split into.
    #[must_use]
    pub fn bucket_count(&self) -> u32 {
        u32::try_from(self.buckets.len()).unwrap_or(u32::MAX)
    }

    /// Applies a put or a delete (a barrier changes nothing: capture at it instead).
    pub fn apply(&mut self, entry: &Entry<'_>) {
        let count = self.bucket_count();
        match *entry {
            Entry::Put { key, value } => {
                let b = bucket_of(key, count) as usize;
                let value: Value = Arc::from(value);
                if let Some(bucket) = self.buckets.get_mut(b) {
                    // An existing key keeps its key bytes: no allocation for them.
                    let bucket = Arc::make_mut(bucket);
                    let replaced = match bucket.get_mut(key) {
                        Some(now) => Some(std::mem::replace(now, value.clone())),
                        None => bucket.insert(key.to_vec(), value.clone()),
                    };
                    if let Some(old) = replaced {
                        self.bury(old);
                    }
                }
                self.log.push(b, key, Some(value));
            }
            Entry::Delete { key } => {
                let b = bucket_of(key, count) as usize;
                if let Some(bucket) = self.buckets.get_mut(b) {
                    // Only copy a shared bucket when the key is there to remove.
                    if bucket.contains_key(key)
                        && let Some(old) = Arc::make_mut(bucket).remove(key)
                    {
                        self.bury(old);
                    }
                }
                self.log.push(b, key, None);
            }
            Entry::Barrier { .. } => {}
        }
    }

    /// Drops `value`, a replaced one, with others in a run: first a pass that only reads each
    /// one's reference count, whose cache misses overlap, then the drops, whose locked
    /// decrements then find their lines in the cache instead of each waiting for its own miss.
    fn bury(&mut self, value: Value) {
        self.graveyard.push(value);
        if self.graveyard.len() >= GRAVEYARD {
            let counts: usize = self.graveyard.iter().map(Arc::strong_count).sum();
            std::hint::black_box(counts);
            self.graveyard.clear();
        }
    }

    /// The value of `key`.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let b = bucket_of(key, self.bucket_count()) as usize;
        self.buckets.get(b)?.get(key).map(|v| &**v)
    }

    /// Keys held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.len()).sum()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state as it is now, shared with the shadow, and the keys changed since the last
    /// capture (which start over). O(buckets + changes).
    pub fn capture(&mut self) -> Capture {
        let (changed, stats) = self.log.take(self.buckets.len());
        Capture {
            core: self.core,
            buckets: self.buckets.clone(),
            changed,
            stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(shadow: &mut Shadow, key: &[u8], value: &[u8]) {
        shadow.apply(&Entry::Put { key, value });
    }

    fn delete(shadow: &mut Shadow, key: &[u8]) {
        shadow.apply(&Entry::Delete { key });
    }

    /// The capture's state, all buckets together.
    fn captured(capture: &Capture) -> BTreeMap<Vec<u8>, Vec<u8>> {
        capture
            .buckets
            .iter()
            .flat_map(|b| b.iter().map(|(k, v)| (k.clone(), v.to_vec())))
            .collect()
    }

    fn changes(capture: &Capture) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        capture
            .changed
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref().map(|v| v.to_vec())))
            .collect()
    }

    #[test]
    fn capture_carries_each_changed_key_once_with_its_last_value_and_counts_it() {
        let mut shadow = Shadow::new(3, 4);
        put(&mut shadow, b"a", b"1");
        put(&mut shadow, b"b", b"2");
        put(&mut shadow, b"a", b"33");
        delete(&mut shadow, b"b");
        delete(&mut shadow, b"never");
        let first = shadow.capture();
        assert_eq!(first.core, 3);
        let expected: BTreeMap<Vec<u8>, Option<Vec<u8>>> = [
            (b"a".to_vec(), Some(b"33".to_vec())),
            (b"b".to_vec(), None),
            (b"never".to_vec(), None),
        ]
        .into_iter()
        .collect();
        assert_eq!(changes(&first), expected);
        assert_eq!(first.stats.keys.iter().sum::<u64>(), 3);
        // Part bytes: prefix and header (9) plus key and last value of each.
        assert_eq!(
            first.stats.bytes.iter().sum::<u64>(),
            (9 + 3) + (9 + 1) + (9 + 5)
        );
        let a = bucket_of(b"a", 4) as usize;
        assert!(first.stats.keys[a] >= 1);
        assert_eq!(captured(&first), [(b"a".to_vec(), b"33".to_vec())].into());
        // The log started over; the buckets did not.
        put(&mut shadow, b"c", b"4");
        let second = shadow.capture();
        assert_eq!(
            changes(&second),
            [(b"c".to_vec(), Some(b"4".to_vec()))].into()
        );
        assert_eq!(captured(&second).len(), 2);
        assert_eq!(
            captured(&first).len(),
            1,
            "the first capture is not changed by later puts"
        );
    }

    /// A small xorshift, for keys that share prefixes of every length.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn changes_match_a_model_across_folds_and_captures() {
        // Many times `MIN_TAIL` changes between two captures, so the tail is folded into the
        // run again and again; keys of 0 to 11 bytes drawn from two byte values share long
        // prefixes, so the prefix ties go to the full comparison.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut shadow = Shadow::new(0, 8);
        let mut state: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut changed: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let ops = ChangeLog::MIN_TAIL * 16 + 1000;
        for i in 0..ops {
            let len = rng.below(12) as usize;
            let key: Vec<u8> = (0..len).map(|_| rng.below(2) as u8).collect();
            if rng.below(4) == 0 {
                delete(&mut shadow, &key);
                state.remove(&key);
                changed.insert(key, None);
            } else {
                let value = (i as u64).to_le_bytes();
                put(&mut shadow, &key, &value);
                state.insert(key.clone(), value.to_vec());
                changed.insert(key, Some(value.to_vec()));
            }
            // Folded as it fills: a bounded tail.
            assert!(shadow.log.changes.len() < ChangeLog::MIN_TAIL);
            if i % 10_000 == 0 {
                assert!(shadow.log.run.windows(2).all(|w| w[0].key < w[1].key));
            }
            if i == ops / 3 || i == ops - 1 {
                let capture = shadow.capture();
                assert_eq!(changes(&capture), std::mem::take(&mut changed));
                assert_eq!(captured(&capture), state);
                let counted: u64 = capture.stats.keys.iter().sum();
                assert_eq!(counted, capture.changed.len() as u64);
            }
        }
    }

    #[test]
    fn replaced_values_are_dropped_in_runs() {
        let mut shadow = Shadow::new(0, 1);
        put(&mut shadow, b"k", b"first");
        let capture = shadow.capture();
        let first = Arc::clone(capture.buckets[0].get(&b"k"[..]).unwrap());
        drop(capture);
        // Ours, the shadow's bucket's.
        assert_eq!(Arc::strong_count(&first), 2);
        put(&mut shadow, b"k", b"second");
        // Replaced, but waiting in the graveyard.
        assert_eq!(Arc::strong_count(&first), 2);
        for i in 0..GRAVEYARD {
            put(&mut shadow, b"k", &i.to_le_bytes());
        }
        assert_eq!(Arc::strong_count(&first), 1);
        assert_eq!(shadow.get(b"k"), Some(&(GRAVEYARD - 1).to_le_bytes()[..]));
    }

    #[test]
    fn recovered_changes_go_to_the_first_capture() {
        let state: BTreeMap<Vec<u8>, Vec<u8>> = [
            (b"a".to_vec(), b"1".to_vec()),
            (b"c".to_vec(), b"3".to_vec()),
        ]
        .into();
        let replayed = [b"a".to_vec(), b"b".to_vec()].into_iter().collect();
        let mut shadow = Shadow::with_state(1, 4, state, replayed);
        assert_eq!(shadow.len(), 2);
        put(&mut shadow, b"d", b"4");
        let capture = shadow.capture();
        let expected: BTreeMap<Vec<u8>, Option<Vec<u8>>> = [
            (b"a".to_vec(), Some(b"1".to_vec())),
            (b"b".to_vec(), None),
            (b"d".to_vec(), Some(b"4".to_vec())),
        ]
        .into();
        assert_eq!(changes(&capture), expected);
    }

    #[test]
    fn a_recovered_state_marks_changed_keys_held_and_gone_with_their_counts() {
        let state: BTreeMap<Vec<u8>, Vec<u8>> = (0u32..200)
            .map(|k| (k.to_be_bytes().to_vec(), vec![k as u8; (k % 7) as usize]))
            .collect();
        // Held keys, keys gone (before, between and after the held ones), and unchanged keys.
        let changed: BTreeSet<Vec<u8>> = (0u32..260)
            .filter(|k| k % 3 == 0)
            .map(|k| k.to_be_bytes().to_vec())
            .chain([Vec::new(), b"\x00\x00\x00\x05\x01".to_vec()])
            .collect();
        let shadow = Shadow::with_state(3, 8, state.clone(), changed.clone());
        let copy = Shadow::with_copy_of(3, 8, &state, changed.clone());
        for shadow in [shadow, copy] {
            assert_eq!(shadow.len(), state.len());
            for (key, value) in &state {
                assert_eq!(shadow.get(key), Some(value.as_slice()));
            }
            let mut stats = ChangeStats::new(8);
            let mut expected = Changes::new();
            for key in &changed {
                let value = state.get(key).map(|v| Value::from(v.as_slice()));
                let b = bucket_of(key, 8) as usize;
                stats.keys[b] += 1;
                stats.bytes[b] += (9 + key.len() + value.as_ref().map_or(0, |v| v.len())) as u64;
                expected.insert(key.clone(), value);
            }
            let mut shadow = shadow;
            let capture = shadow.capture();
            assert_eq!(capture.changed, expected);
            assert_eq!(capture.stats, stats);
        }
    }
}
