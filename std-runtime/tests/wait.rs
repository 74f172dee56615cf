//! The I/O loops wait in the backend (`SegmentStorage::wait_for_completion`) instead of spinning:
//! on a backend whose operations complete only when it is waited on, every loop (the single
//! owner's sync, append and truncate, the shared log's leader, its settle before a truncate)
//! finishes, where spinning on `poll_completion` alone would count up to a stall; and the waits
//! stay few, about one per operation.

use lamina::{Error, Failure, Lsn, Options, SharedLog, SyncPolicy, WriteAheadLog};
use lamina_core::SegmentId;
use lamina_core::io::{Completion, SegmentOp, SegmentStorage};
use lamina_tests::hook::{Hooked, Hooks};
use lamina_tests::sim::SimStorage;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The simulated device, except that completions are handed out only after a wait: each
/// `wait_for_completion` releases what completed so far, as a ring's `submit_and_wait` does.
struct OnlyOnWait {
    released: VecDeque<Completion<Failure>>,
    waits: Arc<AtomicU64>,
    /// Waits that found nothing in flight (they must return at once, not block).
    idle_waits: Arc<AtomicU64>,
    in_flight: usize,
}

impl OnlyOnWait {
    fn new(seed: u64) -> Hooked<SimStorage, Self> {
        Hooked {
            inner: SimStorage::new(seed),
            hooks: OnlyOnWait {
                released: VecDeque::new(),
                waits: Arc::default(),
                idle_waits: Arc::default(),
                in_flight: 0,
            },
        }
    }
}

impl Hooks<SimStorage> for OnlyOnWait {
    fn submit(
        &mut self,
        inner: &mut SimStorage,
        token: u64,
        op: SegmentOp<'_>,
    ) -> Result<(), Failure> {
        inner.submit(token, op)?;
        self.in_flight += 1;
        Ok(())
    }

    fn poll_completion(&mut self, _: &mut SimStorage) -> Option<Completion<Failure>> {
        self.released.pop_front()
    }

    fn wait_for_completion(&mut self, inner: &mut SimStorage) -> Result<(), Failure> {
        self.waits.fetch_add(1, Ordering::Relaxed);
        if self.in_flight == 0 && self.released.is_empty() {
            self.idle_waits.fetch_add(1, Ordering::Relaxed);
        }
        while let Some(done) = inner.poll_completion() {
            self.in_flight = self.in_flight.saturating_sub(1);
            self.released.push_back(done);
        }
        Ok(())
    }
}

fn options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 8 * 1024;
    options.config.max_payload = 512;
    options.config.policy = SyncPolicy::Batch {
        max_records: 8,
        max_bytes: 2048,
        max_delay: 0,
    };
    options.buffer_size = 16 * 1024;
    options
}

#[test]
fn the_single_owner_waits_for_completions_instead_of_stalling() {
    let storage = OnlyOnWait::new(1);
    let waits = Arc::clone(&storage.hooks.waits);
    let (mut log, _) = WriteAheadLog::open_with(storage, options()).expect("open");
    let mut last = Lsn::ZERO;
    for i in 0..300u32 {
        last = log.append(&i.to_le_bytes().repeat(20)).expect("append");
        if i % 50 == 49 {
            assert!(log.sync().expect("sync") >= last);
        }
    }
    assert!(log.sync().expect("sync") >= last);
    assert!(log.segment().sequence > SegmentId(2), "rolled over");
    let deleted = log
        .truncate_before(last)
        .expect("truncate, the log's own deletes");
    assert!(deleted > 0);
    let waited = waits.load(Ordering::Relaxed);
    let (closed, storage) = log.close_into_storage();
    closed.expect("close");
    // Spinning would have polled 100 000 times per stall; waiting takes about one per operation.
    assert!(waited > 0 && waited < 5_000, "{waited} waits");
    let (mut log, report) = WriteAheadLog::open_with(storage, options()).expect("reopen");
    assert!(report.records > 0);
    let mut count = 0;
    log.read_from(Lsn::FIRST, |_, _| count += 1).expect("read");
    assert!(count > 0);
}

/// The simulated device, except that nothing it is given ever completes, and its wait returns
/// `wait` at once.
struct NeverCompletes {
    wait: Result<(), Failure>,
}

impl Hooks<SimStorage> for NeverCompletes {
    fn poll_completion(&mut self, _: &mut SimStorage) -> Option<Completion<Failure>> {
        None
    }

    fn wait_for_completion(&mut self, _: &mut SimStorage) -> Result<(), Failure> {
        self.wait
    }
}

#[test]
fn a_wait_with_nothing_in_flight_does_not_hide_a_stall() {
    // A backend that never completes anything and whose wait returns at once is still stalled
    // after the same number of idle rounds.
    let never = Hooked {
        inner: SimStorage::new(2),
        hooks: NeverCompletes { wait: Ok(()) },
    };
    let e = WriteAheadLog::open_with(never, options())
        .err()
        .expect("the first segment's create never completes");
    assert!(matches!(e, Error::Stalled { .. }), "{e:?}");
}

#[test]
fn a_wait_that_fails_is_a_storage_error_not_a_hang() {
    let broken = Hooked {
        inner: SimStorage::new(3),
        hooks: NeverCompletes {
            wait: Err(Failure::Other),
        },
    };
    let e = WriteAheadLog::open_with(broken, options())
        .err()
        .expect("refused");
    match e {
        Error::Storage { op, detail } => {
            assert!(op.contains("waiting"), "{op}");
            assert!(detail.contains("Other"), "{detail}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn the_shared_leader_waits_for_completions_instead_of_stalling() {
    let storage = OnlyOnWait::new(4);
    let (waits, idle_waits) = (
        Arc::clone(&storage.hooks.waits),
        Arc::clone(&storage.hooks.idle_waits),
    );
    let (log, _) = WriteAheadLog::open_with(storage, options()).expect("open");
    let shared = SharedLog::new(log);
    let before = waits.load(Ordering::Relaxed);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    let lsn = shared.commit(&[t, i]).expect("commit");
                    assert!(shared.durable_lsn() >= lsn);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    // The settle before a truncate waits too.
    let last = shared.append(b"last").expect("append");
    shared.truncate_before(last).expect("truncate");
    let waited = waits.load(Ordering::Relaxed) - before;
    assert!(waited > 0 && waited < 10_000, "{waited} waits");
    assert_eq!(
        idle_waits.load(Ordering::Relaxed),
        0,
        "the leader waits only with operations in flight"
    );
    shared.close().expect("close");
}
