//! [`Relay`]: the storage a shared log's pipeline talks to while the state lock is held. It
//! records the requests the pipeline makes, copying a write's bytes out of the pipeline's buffer
//! (the borrow cannot outlive the lock) into buffers it keeps until the write completes, and hands
//! back completions collected earlier.
//! [`Relay::run`] replays the recorded requests on the real storage with the lock released, and
//! collects what completes. So the driver's loop (`Driver::submit`, `Driver::complete`) works
//! unchanged, and the slow calls (pwrite, fdatasync) run outside the lock.

use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, Failure, SegmentOp, SegmentStorage};
use std::collections::VecDeque;
use std::fmt;

/// A backend error carried across the lock: its kind, and its `Debug` text (the poison's cause).
/// Keeping text instead of the error itself keeps the shared state `Send` whatever the error is.
pub(crate) struct Relayed {
    failure: Failure,
    text: String,
}

impl Relayed {
    fn of<E: lamina_core::io::Error>(e: &E) -> Self {
        Relayed {
            failure: e.failure(),
            text: format!("{e:?}"),
        }
    }
}

impl fmt::Debug for Relayed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl lamina_core::io::Error for Relayed {
    fn failure(&self) -> Failure {
        self.failure
    }
}

/// A recorded request. A create's or write's bytes are in a buffer of the relay's own, kept
/// unchanged until the operation's completion is polled (the backend contract: a backend that
/// completes later may still be reading them).
#[derive(Debug)]
enum Op {
    Create {
        segment: SegmentId,
        header: Vec<u8>,
    },
    Write {
        segment: SegmentId,
        offset: u64,
        data: Vec<u8>,
        sync: bool,
    },
    Sync {
        segment: SegmentId,
    },
    SyncNamespace,
    Delete {
        segment: SegmentId,
    },
}

/// An operation submitted through the relay and not yet completed.
#[derive(Debug)]
struct InFlight {
    token: u64,
    /// Its bytes (empty for an operation without any), freed for reuse at its completion.
    bytes: Vec<u8>,
    /// A sync, or a linked write: counted when it completes.
    syncs: bool,
}

/// Requests recorded under the lock, and completions collected outside it.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    ops: Vec<(u64, Op)>,
    in_flight: Vec<InFlight>,
    /// Buffers of completed operations, to record the next ones in (at most one per operation
    /// ever in flight at once: the pipeline bounds them).
    spare: Vec<Vec<u8>>,
    done: VecDeque<Completion<Relayed>>,
}

impl Relay {
    /// Whether requests are waiting for [`Self::run`].
    pub(crate) fn has_requests(&self) -> bool {
        !self.ops.is_empty()
    }

    /// Whether a sync is among the requests waiting for [`Self::run`].
    pub(crate) fn has_sync(&self) -> bool {
        self.ops.iter().any(|(_, op)| matches!(op, Op::Sync { .. }))
    }

    /// Whether an operation submitted through the relay has not completed yet.
    pub(crate) fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Blocks in `storage` until an operation in flight ends, when no request waits to be run
    /// and some are in flight (`SegmentStorage::wait_for_completion`: a backend that completes
    /// inside `submit` returns at once).
    ///
    /// # Errors
    /// When the storage cannot wait.
    pub(crate) fn wait<S: SegmentStorage>(&self, storage: &mut S) -> Result<(), S::Error> {
        if self.has_requests() || !self.has_in_flight() {
            return Ok(());
        }
        storage.wait_for_completion()
    }

    /// Submits the recorded requests to `storage` in order, then collects every completion it
    /// reports. Returns how many completed (a refused submit counts: its failure is reported)
    /// and how many of them were successful data syncs.
    pub(crate) fn run<S: SegmentStorage>(&mut self, storage: &mut S) -> (usize, u64) {
        let refused = self.submit_to(storage);
        let (completed, synced) = self.collect(storage);
        (refused + completed, synced)
    }

    /// Submits the recorded requests to `storage` in order, without polling it (a backend that
    /// completes later then hands them to the kernel in the call that waits). Returns how many
    /// it refused: their failures are reported as completions.
    pub(crate) fn submit_to<S: SegmentStorage>(&mut self, storage: &mut S) -> usize {
        let mut completed = 0;
        let mut ops = std::mem::take(&mut self.ops);
        for (token, op) in ops.drain(..) {
            let submitted = match &op {
                Op::Create { segment, header } => storage.submit(
                    token,
                    SegmentOp::Create {
                        segment: *segment,
                        header,
                    },
                ),
                Op::Write {
                    segment,
                    offset,
                    data,
                    sync,
                } => storage.submit(
                    token,
                    SegmentOp::Write {
                        segment: *segment,
                        offset: *offset,
                        data,
                        sync: *sync,
                    },
                ),
                Op::Sync { segment } => {
                    storage.submit(token, SegmentOp::Sync { segment: *segment })
                }
                Op::SyncNamespace => storage.submit(token, SegmentOp::SyncNamespace),
                Op::Delete { segment } => {
                    storage.submit(token, SegmentOp::Delete { segment: *segment })
                }
            };
            let (bytes, syncs) = match op {
                Op::Create { header, .. } => (header, false),
                Op::Write { data, sync, .. } => (data, sync),
                Op::Sync { .. } => (Vec::new(), true),
                Op::SyncNamespace | Op::Delete { .. } => (Vec::new(), false),
            };
            match submitted {
                Ok(()) => self.in_flight.push(InFlight {
                    token,
                    bytes,
                    syncs,
                }),
                Err(e) => {
                    // It never started: report it as failed, as the blocking driver does.
                    self.done.push_back((token, Err(Relayed::of(&e))));
                    self.spare(bytes);
                    completed += 1;
                }
            }
        }
        // The list's room is kept for the next round.
        self.ops = ops;
        completed
    }

    /// Collects every completion `storage` reports. Returns how many completed and how many of
    /// them were successful data syncs.
    pub(crate) fn collect<S: SegmentStorage>(&mut self, storage: &mut S) -> (usize, u64) {
        let mut completed = 0;
        let mut synced = 0;
        while let Some((token, result)) = storage.poll_completion() {
            if let Some(i) = self.in_flight.iter().position(|f| f.token == token) {
                let done = self.in_flight.swap_remove(i);
                synced += u64::from(done.syncs && result.is_ok());
                self.spare(done.bytes);
            }
            self.done
                .push_back((token, result.map_err(|e| Relayed::of(&e))));
            completed += 1;
        }
        (completed, synced)
    }

    /// A copy of `data` in a reused buffer.
    fn keep(&mut self, data: &[u8]) -> Vec<u8> {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(data);
        buf
    }

    fn spare(&mut self, buf: Vec<u8>) {
        if buf.capacity() > 0 {
            self.spare.push(buf);
        }
    }
}

impl ErrorType for Relay {
    type Error = Relayed;
}

impl SegmentStorage for Relay {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), Relayed> {
        let op = match op {
            SegmentOp::Create { segment, header } => Op::Create {
                segment,
                header: self.keep(header),
            },
            SegmentOp::Write {
                segment,
                offset,
                data,
                sync,
            } => Op::Write {
                segment,
                offset,
                data: self.keep(data),
                sync,
            },
            SegmentOp::Sync { segment } => Op::Sync { segment },
            SegmentOp::SyncNamespace => Op::SyncNamespace,
            SegmentOp::Delete { segment } => Op::Delete { segment },
        };
        self.ops.push((token, op));
        Ok(())
    }

    fn poll_completion(&mut self) -> Option<Completion<Relayed>> {
        self.done.pop_front()
    }

    fn read_at(&mut self, _: SegmentId, _: u64, _: &mut [u8]) -> Result<usize, Relayed> {
        Err(unsupported())
    }

    fn list(&mut self, _: &mut [SegmentId]) -> Result<usize, Relayed> {
        Err(unsupported())
    }
}

/// Reads and listings go to the real storage, never through the relay.
fn unsupported() -> Relayed {
    Relayed {
        failure: Failure::Unsupported,
        text: "reads go to the storage, not the relay".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::Relay;
    use lamina_core::SegmentId;
    use lamina_core::io::{Completion, Error as _, ErrorType, Failure, SegmentOp, SegmentStorage};
    use std::collections::VecDeque;

    /// A backend that completes only when told to, or refuses every submit.
    #[derive(Default)]
    struct Later {
        writes: Vec<Vec<u8>>,
        pending: VecDeque<u64>,
        complete: bool,
        refuse: bool,
        waits: u32,
    }

    impl ErrorType for Later {
        type Error = Failure;
    }

    impl SegmentStorage for Later {
        fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), Failure> {
            if self.refuse {
                return Err(Failure::NoSpace);
            }
            if let SegmentOp::Write { data, .. } = op {
                self.writes.push(data.to_vec());
            }
            self.pending.push_back(token);
            Ok(())
        }

        fn poll_completion(&mut self) -> Option<Completion<Failure>> {
            if !self.complete {
                return None;
            }
            self.pending.pop_front().map(|token| (token, Ok(())))
        }

        fn read_at(&mut self, _: SegmentId, _: u64, _: &mut [u8]) -> Result<usize, Failure> {
            Err(Failure::Unsupported)
        }

        fn list(&mut self, _: &mut [SegmentId]) -> Result<usize, Failure> {
            Err(Failure::Unsupported)
        }

        /// Waiting lets everything in flight complete.
        fn wait_for_completion(&mut self) -> Result<(), Failure> {
            self.waits += 1;
            self.complete = true;
            Ok(())
        }
    }

    #[test]
    fn the_relay_waits_in_the_storage_only_with_operations_in_flight_and_none_to_run() {
        let mut relay = Relay::default();
        let mut storage = Later::default();
        relay.wait(&mut storage).expect("nothing in flight");
        assert_eq!(storage.waits, 0);
        record_write_and_sync(&mut relay);
        relay.wait(&mut storage).expect("requests to run first");
        assert_eq!(storage.waits, 0);
        assert_eq!(relay.run(&mut storage), (0, 0));
        relay.wait(&mut storage).expect("in flight");
        assert_eq!(storage.waits, 1);
        assert_eq!(
            relay.run(&mut storage),
            (2, 1),
            "what the wait let complete"
        );
    }

    fn record_write_and_sync(relay: &mut Relay) {
        let segment = SegmentId(0);
        let write = SegmentOp::Write {
            segment,
            offset: 64,
            data: b"abc",
            sync: false,
        };
        relay.submit(1, write).expect("recorded");
        relay
            .submit(2, SegmentOp::Sync { segment })
            .expect("recorded");
    }

    #[test]
    fn a_write_stays_in_flight_until_it_completes_then_its_buffer_is_reused() {
        let mut relay = Relay::default();
        let mut storage = Later::default();
        record_write_and_sync(&mut relay);
        assert!(relay.has_requests() && relay.has_sync());
        assert_eq!(relay.run(&mut storage), (0, 0));
        assert!(!relay.has_requests() && relay.has_in_flight());
        assert_eq!(storage.writes, vec![b"abc".to_vec()]);
        assert!(relay.poll_completion().is_none());

        storage.complete = true;
        assert_eq!(relay.run(&mut storage), (2, 1), "two completed, one a sync");
        assert!(!relay.has_in_flight());
        assert_eq!(relay.spare.len(), 1, "the write's buffer is kept for reuse");
        assert_eq!(
            relay.poll_completion().map(|(t, r)| (t, r.is_ok())),
            Some((1, true))
        );
        assert_eq!(
            relay.poll_completion().map(|(t, r)| (t, r.is_ok())),
            Some((2, true))
        );
        assert!(relay.poll_completion().is_none());
    }

    #[test]
    fn a_refused_submit_comes_back_as_its_failure_with_the_backend_text() {
        let mut relay = Relay::default();
        let mut storage = Later {
            refuse: true,
            ..Later::default()
        };
        record_write_and_sync(&mut relay);
        assert_eq!(relay.run(&mut storage), (2, 0));
        assert!(!relay.has_in_flight());
        let (token, result) = relay.poll_completion().expect("the write's failure");
        assert_eq!(token, 1);
        let e = result.expect_err("refused");
        assert_eq!(e.failure(), Failure::NoSpace);
        assert_eq!(format!("{e:?}"), "NoSpace");
    }

    #[test]
    fn reads_never_go_through_the_relay() {
        let mut relay = Relay::default();
        let e = relay.list(&mut []).expect_err("unsupported");
        assert_eq!(e.failure(), Failure::Unsupported);
    }
}
