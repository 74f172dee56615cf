//! [`ChangelogStateStore`]: Ring 0's state, every mutation of which is queued as a changelog
//! entry.

use std::collections::BTreeMap;

use lamina_core::changelog::{Entry, Producer, PushError};

/// One core's in-memory key-value state (Ring 0), whose every mutation is pushed, as one
/// changelog entry, into the core's [`ByteRing`](lamina_core::changelog::ByteRing) for the
/// [`ChangelogDrainer`](crate::ChangelogDrainer) to write to the core's WAL.
///
/// The entry is queued first and the mutation applied only if that succeeded: on back-pressure
/// ([`PushError::Full`]) or a too-large entry the state is unchanged and the error returned, so
/// the state and the log never diverge. Nothing here blocks or does I/O.
///
/// ```
/// use lamina::ChangelogStateStore;
/// use lamina_core::changelog::{ByteRing, Entry};
///
/// let mut ring: ByteRing<256> = ByteRing::new();
/// let (producer, mut consumer) = ring.split();
/// let mut store = ChangelogStateStore::new(producer);
/// store.put(b"k", b"v").unwrap();
/// assert_eq!(store.get(b"k"), Some(&b"v"[..]));
/// let frame = consumer.peek().unwrap();
/// assert_eq!(frame.entry(), Ok(Entry::Put { key: b"k", value: b"v" }));
/// ```
pub struct ChangelogStateStore<'q, const N: usize> {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    producer: Producer<'q, N>,
}

impl<'q, const N: usize> ChangelogStateStore<'q, N> {
    /// An empty state feeding `producer`.
    #[must_use]
    pub fn new(producer: Producer<'q, N>) -> Self {
        Self::with_state(BTreeMap::new(), producer)
    }

    /// A store that starts from `state` (for example what [`crate::replay_core`] rebuilt).
    #[must_use]
    pub fn with_state(state: BTreeMap<Vec<u8>, Vec<u8>>, producer: Producer<'q, N>) -> Self {
        ChangelogStateStore { state, producer }
    }

    /// The value of `key`.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.state.get(key).map(Vec::as_slice)
    }

    /// Maps `key` to `value`, once its entry is queued.
    ///
    /// # Errors
    /// [`PushError::Full`] (back-pressure: retry after the drainer catches up) or
    /// [`PushError::TooLarge`]; the state is unchanged then.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), PushError> {
        self.producer.push(&Entry::Put { key, value })?;
        self.state.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    /// Removes `key` (an entry is queued whether or not it was there) and returns its old value.
    ///
    /// # Errors
    /// As [`Self::put`]; the state is unchanged then.
    pub fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, PushError> {
        self.producer.push(&Entry::Delete { key })?;
        Ok(self.state.remove(key))
    }

    /// Queues a checkpoint barrier: the mutations before it belong to the epochs before
    /// `epoch`, those after it to `epoch`. The drainer turns it into an epoch marker.
    ///
    /// # Errors
    /// [`PushError::Full`] (back-pressure).
    pub fn barrier(&mut self, epoch: u64) -> Result<(), PushError> {
        self.producer.push(&Entry::Barrier { epoch })
    }

    /// The state.
    #[must_use]
    pub fn state(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.state
    }

    /// The queue's producer half (to see how full it is).
    #[must_use]
    pub fn producer(&self) -> &Producer<'q, N> {
        &self.producer
    }

    /// The state and the producer, taken apart.
    #[must_use]
    pub fn into_parts(self) -> (BTreeMap<Vec<u8>, Vec<u8>>, Producer<'q, N>) {
        (self.state, self.producer)
    }
}

impl<const N: usize> std::fmt::Debug for ChangelogStateStore<'_, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangelogStateStore")
            .field("keys", &self.state.len())
            .field("producer", &self.producer)
            .finish()
    }
}
