//! A backend with a test's hooks around it: the test says only what it changes (how a submit, a
//! completion, a read or a wait goes) and everything else is passed on to the backend inside, so
//! a test that makes a backend panic, stall, lose completions or count reads needs no wrapper
//! of its own forwarding every method.

use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, SegmentOp, SegmentStorage};

/// What a test changes of the backend `S`. Each method is given the backend and, by default,
/// passes the call on to it unchanged.
pub trait Hooks<S: SegmentStorage> {
    /// [`SegmentStorage::submit`].
    ///
    /// # Errors
    /// The backend's, or the hook's own.
    fn submit(&mut self, inner: &mut S, token: u64, op: SegmentOp<'_>) -> Result<(), S::Error> {
        inner.submit(token, op)
    }

    /// [`SegmentStorage::poll_completion`].
    fn poll_completion(&mut self, inner: &mut S) -> Option<Completion<S::Error>> {
        inner.poll_completion()
    }

    /// [`SegmentStorage::read_at`].
    ///
    /// # Errors
    /// The backend's, or the hook's own.
    fn read_at(
        &mut self,
        inner: &mut S,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, S::Error> {
        inner.read_at(segment, offset, buf)
    }

    /// [`SegmentStorage::list`].
    ///
    /// # Errors
    /// The backend's, or the hook's own.
    fn list(&mut self, inner: &mut S, out: &mut [SegmentId]) -> Result<usize, S::Error> {
        inner.list(out)
    }

    /// [`SegmentStorage::wait_for_completion`].
    ///
    /// # Errors
    /// The backend's, or the hook's own.
    fn wait_for_completion(&mut self, inner: &mut S) -> Result<(), S::Error> {
        inner.wait_for_completion()
    }
}

/// The backend `inner` with `hooks` around it.
#[derive(Debug)]
pub struct Hooked<S, H> {
    /// The backend the calls are passed on to.
    pub inner: S,
    /// What the test changes.
    pub hooks: H,
}

impl<S: ErrorType, H> ErrorType for Hooked<S, H> {
    type Error = S::Error;
}

impl<S: SegmentStorage, H: Hooks<S>> SegmentStorage for Hooked<S, H> {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), S::Error> {
        self.hooks.submit(&mut self.inner, token, op)
    }

    fn poll_completion(&mut self) -> Option<Completion<S::Error>> {
        self.hooks.poll_completion(&mut self.inner)
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, S::Error> {
        self.hooks.read_at(&mut self.inner, segment, offset, buf)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, S::Error> {
        self.hooks.list(&mut self.inner, out)
    }

    fn wait_for_completion(&mut self) -> Result<(), S::Error> {
        self.hooks.wait_for_completion(&mut self.inner)
    }
}

/// Hooks that call `F` with each operation before the backend is given it (to count operations,
/// or panic at a chosen one).
#[derive(Debug)]
pub struct BeforeSubmit<F>(pub F);

impl<S: SegmentStorage, F: FnMut(&SegmentOp<'_>)> Hooks<S> for BeforeSubmit<F> {
    fn submit(&mut self, inner: &mut S, token: u64, op: SegmentOp<'_>) -> Result<(), S::Error> {
        (self.0)(&op);
        inner.submit(token, op)
    }
}

/// `inner`, with `before` called on each operation before `inner` is given it.
pub fn before_submit<S, F>(inner: S, before: F) -> Hooked<S, BeforeSubmit<F>> {
    Hooked {
        inner,
        hooks: BeforeSubmit(before),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    #[test]
    fn the_hook_sees_each_operation_before_the_backend_does() {
        let mut seen = Vec::new();
        let mut s = before_submit(SimStorage::new(1), |op: &SegmentOp<'_>| {
            seen.push(matches!(op, SegmentOp::SyncNamespace));
        });
        s.submit(1, SegmentOp::SyncNamespace).expect("submit");
        let mut ids = [SegmentId(0); 4];
        assert_eq!(s.list(&mut ids), Ok(0));
        while s.poll_completion().is_none() {}
        drop(s);
        assert_eq!(seen, [true]);
    }

    /// Hooks that hold every completion back.
    struct Hold;

    impl Hooks<SimStorage> for Hold {
        fn poll_completion(
            &mut self,
            _: &mut SimStorage,
        ) -> Option<Completion<lamina_core::io::Failure>> {
            None
        }
    }

    #[test]
    fn a_hook_changes_only_what_it_overrides() {
        let mut s = Hooked {
            inner: SimStorage::new(2),
            hooks: Hold,
        };
        s.submit(1, SegmentOp::SyncNamespace).expect("submit");
        for _ in 0..100 {
            assert!(s.poll_completion().is_none(), "held back");
        }
        assert!(
            s.inner.poll_completion().is_some(),
            "the backend completed it"
        );
    }
}
