//! [`Slot`]: where a shared log keeps its storage while no leader holds it. The log inside the
//! shared state is a `WriteAheadLog<Slot<S>>`, so the leader can take the storage out (and run
//! I/O without the lock) and put it back, and the single-owner code runs on it unchanged
//! whenever the storage is in.

use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, Failure, SegmentOp, SegmentStorage};
use std::fmt;

/// The storage, or nothing while a leader holds it.
#[derive(Debug)]
pub(crate) struct Slot<S>(pub(crate) Option<S>);

/// The storage's error, or the slot being empty.
pub(crate) enum SlotError<E> {
    Storage(E),
    /// The storage is out with the leader: nothing reaches it through the slot then.
    Empty,
}

impl<E: fmt::Debug> fmt::Debug for SlotError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The storage's own text, as the single-owner log shows it.
            SlotError::Storage(e) => e.fmt(f),
            SlotError::Empty => f.write_str("the storage is out with the leader"),
        }
    }
}

impl<E: lamina_core::io::Error> lamina_core::io::Error for SlotError<E> {
    fn failure(&self) -> Failure {
        match self {
            SlotError::Storage(e) => e.failure(),
            SlotError::Empty => Failure::Other,
        }
    }
}

impl<S: SegmentStorage> Slot<S> {
    fn with<R>(
        &mut self,
        f: impl FnOnce(&mut S) -> Result<R, S::Error>,
    ) -> Result<R, SlotError<S::Error>> {
        let storage = self.0.as_mut().ok_or(SlotError::Empty)?;
        f(storage).map_err(SlotError::Storage)
    }
}

impl<S: SegmentStorage> ErrorType for Slot<S> {
    type Error = SlotError<S::Error>;
}

impl<S: SegmentStorage> SegmentStorage for Slot<S> {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), Self::Error> {
        self.with(|s| s.submit(token, op))
    }

    fn poll_completion(&mut self) -> Option<Completion<Self::Error>> {
        let (token, result) = self.0.as_mut()?.poll_completion()?;
        Some((token, result.map_err(SlotError::Storage)))
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Self::Error> {
        self.with(|s| s.read_at(segment, offset, buf))
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, Self::Error> {
        self.with(|s| s.list(out))
    }

    /// Nothing submitted through an empty slot is in flight: it returns at once.
    fn wait_for_completion(&mut self) -> Result<(), Self::Error> {
        match self.0.as_mut() {
            Some(storage) => storage.wait_for_completion().map_err(SlotError::Storage),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Slot;
    use lamina_core::SegmentId;
    use lamina_core::io::{Error as _, Failure, SegmentOp, SegmentStorage};
    use lamina_tests::sim::SimStorage;

    #[test]
    fn an_empty_slot_refuses_everything_and_reports_nothing() {
        let mut slot: Slot<SimStorage> = Slot(None);
        let e = slot.submit(1, SegmentOp::SyncNamespace).expect_err("empty");
        assert_eq!(e.failure(), Failure::Other);
        assert_eq!(format!("{e:?}"), "the storage is out with the leader");
        assert!(slot.list(&mut []).is_err());
        assert!(slot.poll_completion().is_none());
        assert!(
            slot.wait_for_completion().is_ok(),
            "nothing in flight: at once"
        );
    }

    #[test]
    fn a_full_slot_passes_through_with_the_storage_errors() {
        let mut storage = SimStorage::new(1);
        storage.faults.fail_sync = Some((1, Failure::Io));
        let mut slot = Slot(Some(storage));
        let sync = SegmentOp::Sync {
            segment: SegmentId(0),
        };
        slot.submit(7, sync).expect("submitted");
        let (token, result) = slot.poll_completion().expect("completion");
        assert_eq!(token, 7);
        let e = result.expect_err("the injected failure");
        assert_eq!(e.failure(), Failure::Io);
        assert_eq!(format!("{e:?}"), "Io");
    }
}
