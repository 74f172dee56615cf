//! The simulated device shared between a log's owner and readers on other threads: [`SharedSim`]
//! is the owner's storage, [`SimReader`] a read-only view of the same device.

use crate::sim::SimStorage;
use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, Failure, SegmentOp, SegmentStorage};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A [`SimStorage`] behind a lock, so that [`SimReader`]s see what the owner writes (the live
/// image, as reads of the device itself do: writes still in flight included, short writes half
/// landed).
#[derive(Debug, Clone)]
pub struct SharedSim {
    sim: Arc<Mutex<SimStorage>>,
}

impl SharedSim {
    /// Shares `sim`.
    pub fn new(sim: SimStorage) -> Self {
        SharedSim {
            sim: Arc::new(Mutex::new(sim)),
        }
    }

    /// The device, to inject faults, crash it or look at its bytes.
    pub fn lock(&self) -> MutexGuard<'_, SimStorage> {
        self.sim.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A read-only view of the same device.
    pub fn reader(&self) -> SimReader {
        SimReader {
            sim: Arc::clone(&self.sim),
        }
    }
}

impl ErrorType for SharedSim {
    type Error = Failure;
}

impl SegmentStorage for SharedSim {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), Failure> {
        self.lock().submit(token, op)
    }

    fn poll_completion(&mut self) -> Option<Completion<Failure>> {
        self.lock().poll_completion()
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Failure> {
        self.lock().read_at(segment, offset, buf)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, Failure> {
        self.lock().list(out)
    }

    fn wait_for_completion(&mut self) -> Result<(), Failure> {
        self.lock().wait_for_completion()
    }
}

/// A read-only view of a [`SharedSim`]: reads and listings go to the shared device, every submit
/// fails with [`Failure::Unsupported`].
#[derive(Debug, Clone)]
pub struct SimReader {
    sim: Arc<Mutex<SimStorage>>,
}

impl ErrorType for SimReader {
    type Error = Failure;
}

impl SegmentStorage for SimReader {
    fn submit(&mut self, _token: u64, _op: SegmentOp<'_>) -> Result<(), Failure> {
        Err(Failure::Unsupported)
    }

    fn poll_completion(&mut self) -> Option<Completion<Failure>> {
        None
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Failure> {
        let mut sim = self.sim.lock().unwrap_or_else(PoisonError::into_inner);
        sim.read_at(segment, offset, buf)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, Failure> {
        let mut sim = self.sim.lock().unwrap_or_else(PoisonError::into_inner);
        sim.list(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_sees_the_owners_writes_and_cannot_submit() {
        let mut owner = SharedSim::new(SimStorage::new(1));
        owner.lock().reorder = false;
        let mut reader = owner.reader();
        let id = SegmentId(0);
        owner
            .submit(
                1,
                SegmentOp::Create {
                    segment: id,
                    header: b"hdr",
                },
            )
            .expect("create");
        assert!(owner.poll_completion().is_some());
        let mut buf = [0u8; 8];
        assert_eq!(reader.read_at(id, 0, &mut buf), Ok(3));
        assert_eq!(&buf[..3], b"hdr");
        let mut ids = [SegmentId(9); 2];
        assert_eq!(reader.list(&mut ids), Ok(1));
        assert_eq!(ids[0], id);
        assert_eq!(
            reader.submit(2, SegmentOp::Delete { segment: id }),
            Err(Failure::Unsupported)
        );
        assert!(reader.poll_completion().is_none());
        assert_eq!(owner.lock().segments(), vec![id]);
    }
}
