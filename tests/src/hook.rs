//! A backend that runs a test's hook on every operation submitted before passing it on: for
//! tests that count operations, or make a backend panic at a chosen one (a backend bug), without
//! a wrapper of their own forwarding every method.

use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, SegmentOp, SegmentStorage};

/// `inner`, with `hook` called on each operation before `inner` is given it.
#[derive(Debug)]
pub struct OnSubmit<S, F> {
    /// The backend every method is passed on to.
    pub inner: S,
    /// Called with each operation submitted, before `inner` sees it.
    pub hook: F,
}

impl<S: ErrorType, F> ErrorType for OnSubmit<S, F> {
    type Error = S::Error;
}

impl<S: SegmentStorage, F: FnMut(&SegmentOp<'_>)> SegmentStorage for OnSubmit<S, F> {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), S::Error> {
        (self.hook)(&op);
        self.inner.submit(token, op)
    }

    fn poll_completion(&mut self) -> Option<Completion<S::Error>> {
        self.inner.poll_completion()
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, S::Error> {
        self.inner.read_at(segment, offset, buf)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, S::Error> {
        self.inner.list(out)
    }

    fn wait_for_completion(&mut self) -> Result<(), S::Error> {
        self.inner.wait_for_completion()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    #[test]
    fn the_hook_sees_each_operation_before_the_backend_does() {
        let mut seen = Vec::new();
        let mut s = OnSubmit {
            inner: SimStorage::new(1),
            hook: |op: &SegmentOp<'_>| seen.push(matches!(op, SegmentOp::SyncNamespace)),
        };
        s.submit(1, SegmentOp::SyncNamespace).expect("submit");
        let mut ids = [SegmentId(0); 4];
        assert_eq!(s.list(&mut ids), Ok(0));
        while s.poll_completion().is_none() {}
        drop(s);
        assert_eq!(seen, [true]);
    }
}
