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
/// holds exactly the mutations before it; [`Shadow::capture`] then takes the snapshot in
/// O(buckets): each bucket is shared (`Arc`) with the capture, and the first later mutation of a
/// bucket copies it (copy-on-write), on Ring 1, never on Ring 0.
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
    changed: Changes,
    stats: ChangeStats,
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
            stats: ChangeStats::new(buckets.len()),
            buckets,
            changed: Changes::new(),
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
        // their values in one merged pass and are built at once too.
        let mut shares: Vec<Vec<(Vec<u8>, Value)>> = vec![Vec::new(); count as usize];
        let mut changes: Vec<(Vec<u8>, Option<Value>)> = Vec::new();
        let mut changed = changed.into_iter().peekable();
        for (key, value) in entries {
            while let Some(gone) = changed.next_if(|c| *c < key) {
                shadow.count(bucket_of(&gone, count) as usize, gone.len());
                changes.push((gone, None));
            }
            let b = bucket_of(&key, count) as usize;
            // The changed key's own bytes are kept: no copy of the key.
            if let Some(same) = changed.next_if(|c| *c == key) {
                shadow.count(b, same.len() + value.len());
                changes.push((same, Some(value.clone())));
            }
            if let Some(share) = shares.get_mut(b) {
                share.push((key, value));
            }
        }
        for gone in changed {
            shadow.count(bucket_of(&gone, count) as usize, gone.len());
            changes.push((gone, None));
        }
        shadow.changed = changes.into_iter().collect();
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
                    match bucket.get_mut(key) {
                        Some(now) => *now = value.clone(),
                        None => {
                            bucket.insert(key.to_vec(), value.clone());
                        }
                    }
                }
                self.mark(b, key, Some(value));
            }
            Entry::Delete { key } => {
                let b = bucket_of(key, count) as usize;
                if let Some(bucket) = self.buckets.get_mut(b) {
                    // Only copy a shared bucket when the key is there to remove.
                    if bucket.contains_key(key) {
                        Arc::make_mut(bucket).remove(key);
                    }
                }
                self.mark(b, key, None);
            }
            Entry::Barrier { .. } => {}
        }
    }

    /// Records `key` of `bucket` as changed, to `value`.
    fn mark(&mut self, bucket: usize, key: &[u8], value: Option<Value>) {
        match self.changed.get_mut(key) {
            Some(now) => *now = value,
            None => self.mark_changed(bucket, key.to_vec(), value),
        }
    }

    /// Records `key`, not yet changed, as changed to `value`, and counts it.
    fn mark_changed(&mut self, bucket: usize, key: Vec<u8>, value: Option<Value>) {
        self.count(bucket, key.len() + value.as_ref().map_or(0, |v| v.len()));
        self.changed.insert(key, value);
    }

    /// Counts a newly changed key of `bucket` whose entry holds `len` bytes of key and value.
    fn count(&mut self, bucket: usize, len: usize) {
        if let Some(k) = self.stats.keys.get_mut(bucket) {
            *k += 1;
        }
        if let Some(b) = self.stats.bytes.get_mut(bucket) {
            // The entry's bytes in a part: length prefix, entry header, key and value.
            *b += (4 + 5 + len) as u64;
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
    /// capture (which start over). O(buckets).
    pub fn capture(&mut self) -> Capture {
        let stats = ChangeStats::new(self.buckets.len());
        Capture {
            core: self.core,
            buckets: self.buckets.clone(),
            changed: std::mem::take(&mut self.changed),
            stats: std::mem::replace(&mut self.stats, stats),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
