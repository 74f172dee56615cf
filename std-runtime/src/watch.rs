//! The durable LSN as the log's owner publishes it to readers on other threads: an atomic to
//! look at, a condition variable to wait on, and the end of the log (closed, dropped or
//! poisoned) so that a waiting reader never waits forever.

use crate::Error;
use lamina_core::Lsn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// What a reader can see of the owner's progress. Shared by the owner's [`Publisher`] and every
/// reader.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// The durable LSN, for a look without the lock. Stored with `Release` after every byte of
    /// the records up to it was written, so a reader that loads it with `Acquire` and then reads
    /// finds those records whole.
    durable: AtomicU64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    durable: Lsn,
    /// Why the log publishes nothing more: `Error::Closed` or `Error::Poisoned`.
    end: Option<Error>,
    /// Readers waiting on `changed` (no wake-up call when there are none).
    waiters: usize,
}

/// What [`Watch::wait`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The durable LSN is above the one waited beyond.
    Moved(Lsn),
    /// The deadline passed first.
    TimedOut,
    /// The log publishes nothing more; it is durable through the LSN.
    Ended(Lsn, Error),
}

impl Watch {
    /// The durable LSN published last.
    pub(crate) fn durable(&self) -> Lsn {
        Lsn(self.durable.load(Ordering::Acquire))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the durable LSN is above `beyond`, the log ends, or `deadline` passes (never,
    /// when `None`).
    pub(crate) fn wait(&self, beyond: Lsn, deadline: Option<Instant>) -> Waited {
        let mut state = self.lock();
        loop {
            if state.durable > beyond {
                return Waited::Moved(state.durable);
            }
            if let Some(end) = &state.end {
                return Waited::Ended(state.durable, end.clone());
            }
            state.waiters += 1;
            state = match deadline {
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        state.waiters -= 1;
                        return Waited::TimedOut;
                    };
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            state.waiters -= 1;
        }
    }
}

/// The owner's side of a [`Watch`]. Dropping it ends the log for the readers (a log dropped
/// without close is a crash as far as they can tell: they read what is durable, then stop).
#[derive(Debug)]
pub(crate) struct Publisher {
    watch: Arc<Watch>,
    /// The durable LSN published last (the owner's copy: no atomic load to compare).
    published: Lsn,
    ended: bool,
}

impl Publisher {
    /// A watch whose log is durable through `durable`.
    pub(crate) fn new(durable: Lsn) -> Self {
        let watch = Watch::default();
        watch.durable.store(durable.0, Ordering::Release);
        watch.lock().durable = durable;
        Publisher {
            watch: Arc::new(watch),
            published: durable,
            ended: false,
        }
    }

    /// The watch, for a reader.
    pub(crate) fn watch(&self) -> Arc<Watch> {
        Arc::clone(&self.watch)
    }

    /// Publishes `durable` if it moved: one comparison when it did not.
    pub(crate) fn publish(&mut self, durable: Lsn) {
        if durable <= self.published || self.ended {
            return;
        }
        self.published = durable;
        let mut state = self.watch.lock();
        state.durable = durable;
        self.watch.durable.store(durable.0, Ordering::Release);
        if state.waiters > 0 {
            self.watch.changed.notify_all();
        }
    }

    /// Whether the log was ended (nothing more is published).
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// Ends the log for the readers with `why`: they read what is durable, then get `why`. The
    /// first end stays.
    pub(crate) fn end(&mut self, why: Error) {
        if self.ended {
            return;
        }
        self.ended = true;
        let mut state = self.watch.lock();
        state.end = Some(why);
        if state.waiters > 0 {
            self.watch.changed.notify_all();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let durable = self.published;
        self.end(Error::Closed { durable });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn wait_returns_at_once_when_already_beyond() {
        let publisher = Publisher::new(Lsn(5));
        let watch = publisher.watch();
        assert_eq!(watch.durable(), Lsn(5));
        assert_eq!(watch.wait(Lsn(4), None), Waited::Moved(Lsn(5)));
    }

    #[test]
    fn wait_times_out_when_nothing_moves() {
        let publisher = Publisher::new(Lsn(5));
        let watch = publisher.watch();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(watch.wait(Lsn(5), Some(deadline)), Waited::TimedOut);
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn publish_wakes_a_waiter_on_another_thread() {
        let mut publisher = Publisher::new(Lsn(1));
        let watch = publisher.watch();
        let waiter = std::thread::spawn(move || watch.wait(Lsn(1), None));
        std::thread::sleep(Duration::from_millis(10));
        publisher.publish(Lsn(1)); // no move: nothing to wake for
        publisher.publish(Lsn(7));
        assert_eq!(waiter.join().expect("waiter"), Waited::Moved(Lsn(7)));
    }

    #[test]
    fn drop_ends_the_log_and_wakes_waiters_with_closed() {
        let publisher = Publisher::new(Lsn(3));
        let watch = publisher.watch();
        let waiter = {
            let watch = Arc::clone(&watch);
            std::thread::spawn(move || watch.wait(Lsn(3), None))
        };
        std::thread::sleep(Duration::from_millis(10));
        drop(publisher);
        let closed = Waited::Ended(Lsn(3), Error::Closed { durable: Lsn(3) });
        assert_eq!(waiter.join().expect("waiter"), closed);
        // Below the end, what is durable is still reported as such.
        assert_eq!(watch.wait(Lsn(2), None), Waited::Moved(Lsn(3)));
    }

    #[test]
    fn first_end_stays_and_nothing_is_published_after_it() {
        let mut publisher = Publisher::new(Lsn(1));
        let watch = publisher.watch();
        publisher.end(Error::LsnExhausted);
        publisher.publish(Lsn(9));
        drop(publisher);
        assert_eq!(
            watch.wait(Lsn(1), None),
            Waited::Ended(Lsn(1), Error::LsnExhausted)
        );
    }
}
