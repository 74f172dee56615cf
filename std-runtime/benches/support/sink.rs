//! [`Sink`]: a storage that completes every operation at once and keeps nothing, for the
//! `append` group, whose timed loop does no I/O: the writes between its runs then cost no disk
//! bandwidth (a 4 KiB append at memory speed would otherwise write gigabytes per run).

use lamina::{Failure, SegmentId, SegmentStorage};
use lamina_core::io::{Completion, ErrorType, SegmentOp};
use std::collections::VecDeque;

/// Completes every operation at once; holds no segments.
#[derive(Default)]
pub(crate) struct Sink {
    done: VecDeque<Completion<Failure>>,
}

impl ErrorType for Sink {
    type Error = Failure;
}

impl SegmentStorage for Sink {
    fn submit(&mut self, token: u64, _op: SegmentOp<'_>) -> Result<(), Failure> {
        self.done.push_back((token, Ok(())));
        Ok(())
    }

    fn poll_completion(&mut self) -> Option<Completion<Failure>> {
        self.done.pop_front()
    }

    fn read_at(&mut self, _: SegmentId, _: u64, _: &mut [u8]) -> Result<usize, Failure> {
        Ok(0)
    }

    fn list(&mut self, _: &mut [SegmentId]) -> Result<usize, Failure> {
        Ok(0)
    }
}
