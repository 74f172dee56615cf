//! [`Relay`]: the storage a shared log's pipeline talks to while the state lock is held. It
//! records the requests the pipeline makes, copying a write's bytes out of the pipeline's buffer
//! (the borrow cannot outlive the lock), and hands back completions collected earlier.
//! [`Relay::run`] replays the recorded requests on the real storage with the lock released, and
//! collects what completes. So the driver's loop (`Driver::submit`, `Driver::complete`) works
//! unchanged, and the slow calls (pwrite, fdatasync) run outside the lock.

use lamina_core::SegmentId;
use lamina_core::io::{Completion, ErrorType, Failure, SegmentOp, SegmentStorage};
use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;

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

/// A recorded request; byte ranges point into [`Relay::bytes`].
#[derive(Debug)]
enum Op {
    Create {
        segment: SegmentId,
        header: Range<usize>,
    },
    Write {
        segment: SegmentId,
        offset: u64,
        data: Range<usize>,
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

/// Requests recorded under the lock, and completions collected outside it.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    ops: Vec<(u64, Op)>,
    /// The bytes of the recorded creates and writes (reused: cleared after each run).
    bytes: Vec<u8>,
    done: VecDeque<Completion<Relayed>>,
    /// Tokens of the syncs (and linked writes) submitted and not yet completed.
    syncing: Vec<u64>,
}

impl Relay {
    /// Whether requests are waiting for [`Self::run`].
    pub(crate) fn has_requests(&self) -> bool {
        !self.ops.is_empty()
    }

    /// Submits the recorded requests to `storage` in order, then collects every completion it
    /// reports. Returns how many completed (a refused submit counts: its failure is reported)
    /// and how many of them were successful data syncs.
    pub(crate) fn run<S: SegmentStorage>(&mut self, storage: &mut S) -> (usize, u64) {
        let mut completed = 0;
        for (token, op) in self.ops.drain(..) {
            let bytes = |range: Range<usize>| self.bytes.get(range).unwrap_or(&[]);
            let (op, syncs) = match op {
                Op::Create { segment, header } => (
                    SegmentOp::Create {
                        segment,
                        header: bytes(header),
                    },
                    false,
                ),
                Op::Write {
                    segment,
                    offset,
                    data,
                    sync,
                } => (
                    SegmentOp::Write {
                        segment,
                        offset,
                        data: bytes(data),
                        sync,
                    },
                    sync,
                ),
                Op::Sync { segment } => (SegmentOp::Sync { segment }, true),
                Op::SyncNamespace => (SegmentOp::SyncNamespace, false),
                Op::Delete { segment } => (SegmentOp::Delete { segment }, false),
            };
            match storage.submit(token, op) {
                Ok(()) if syncs => self.syncing.push(token),
                Ok(()) => {}
                Err(e) => {
                    // It never started: report it as failed, as the blocking driver does.
                    self.done.push_back((token, Err(Relayed::of(&e))));
                    completed += 1;
                }
            }
        }
        self.bytes.clear();
        let mut synced = 0;
        while let Some((token, result)) = storage.poll_completion() {
            if let Some(i) = self.syncing.iter().position(|t| *t == token) {
                self.syncing.swap_remove(i);
                synced += u64::from(result.is_ok());
            }
            self.done
                .push_back((token, result.map_err(|e| Relayed::of(&e))));
            completed += 1;
        }
        (completed, synced)
    }

    /// Copies `data` into the reused byte store; returns where it lies.
    fn keep(&mut self, data: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        start..self.bytes.len()
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
