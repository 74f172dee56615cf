//! `SharedLog` and its tails when things go wrong: a tail must never wait forever once nothing
//! more can become durable.

use lamina::{Error, Failure, Lsn, Options, SegmentId, SegmentStorage, SharedLog, WriteAheadLog};
use lamina_core::io::{Completion, ErrorType, SegmentOp};
use lamina_tests::hook::{Hooked, Hooks, before_submit};
use lamina_tests::shared::SharedSim;
use lamina_tests::sim::SimStorage;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// A tail that gets nothing for this long is stuck (a hang guard, not a timing assertion).
const STUCK: Duration = Duration::from_secs(20);

#[test]
fn a_leader_panic_ends_a_waiting_tail_while_other_handles_live() {
    let sim = SharedSim::new(SimStorage::new(7));
    let reader = sim.reader();
    let armed = Arc::new(AtomicBool::new(false));
    // The shared simulated device, panicking at a sync once armed: a backend bug inside a
    // leader.
    let hook_armed = Arc::clone(&armed);
    let storage = before_submit(sim, move |op: &SegmentOp<'_>| {
        if let SegmentOp::Sync { .. } = op {
            assert!(
                !hook_armed.load(Ordering::Relaxed),
                "the backend panics (test)"
            );
        }
    });
    let (log, _) = WriteAheadLog::open_with(storage, Options::default()).expect("open");
    let log = SharedLog::new(log);
    let mut tail = log.tail_with(reader, Lsn::FIRST).expect("tail");
    let first = log.commit(b"durable").expect("commit");
    let (send, got) = mpsc::channel();
    let tailer = thread::spawn(move || {
        let record = tail
            .next(None)
            .map(|r| r.map(|r| (r.lsn, r.payload.to_vec())));
        send.send(format!("{record:?}")).expect("send");
        // Waits with no timeout: only the end of the log may wake it.
        let end = tail.next(None).map(|r| r.map(|r| r.lsn));
        send.send(format!("{end:?}")).expect("send");
    });
    let expected = format!("{:?}", Ok::<_, Error>(Some((first, b"durable".to_vec()))));
    assert_eq!(got.recv_timeout(STUCK).expect("first record"), expected);
    armed.store(true, Ordering::Relaxed);
    let other = log.clone();
    let panicked = thread::spawn(move || other.commit(b"never durable")).join();
    assert!(panicked.is_err(), "the leader met the backend's panic");
    // `log` is still alive: the tail must learn that nothing more will be durable.
    let end = got
        .recv_timeout(STUCK)
        .expect("the tail still waits after the leader panicked");
    assert_eq!(end, format!("{:?}", Err::<Option<Lsn>, _>(Error::Panicked)));
    assert_eq!(log.commit(b"x"), Err(Error::Panicked));
    tailer.join().expect("tailer");
}

/// A read-only view that panics when it lists the segments: a reader's bug.
struct PanickingReader;

impl ErrorType for PanickingReader {
    type Error = Failure;
}

impl SegmentStorage for PanickingReader {
    fn submit(&mut self, _: u64, _: SegmentOp<'_>) -> Result<(), Failure> {
        Err(Failure::Unsupported)
    }

    fn poll_completion(&mut self) -> Option<Completion<Failure>> {
        None
    }

    fn read_at(&mut self, _: SegmentId, _: u64, _: &mut [u8]) -> Result<usize, Failure> {
        Err(Failure::Unsupported)
    }

    fn list(&mut self, _: &mut [SegmentId]) -> Result<usize, Failure> {
        panic!("the reader panics (test)")
    }
}

#[test]
fn a_reader_that_panics_in_tail_with_leaves_the_shared_log_and_its_tails_working() {
    let sim = SharedSim::new(SimStorage::new(9));
    let reader = sim.reader();
    let (log, _) = WriteAheadLog::open_with(sim, Options::default()).expect("open");
    let log = SharedLog::new(log);
    let mut tail = log.tail_with(reader, Lsn::FIRST).expect("tail");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        log.tail_with(PanickingReader, Lsn::FIRST).map(|_| ())
    }));
    assert!(caught.is_err(), "the reader's panic is passed on");
    // The reader's bug is the reader's: the log goes on, and so do its tails.
    let lsn = log
        .commit(b"after")
        .expect("commit after a reader panicked");
    let next = tail
        .next(Some(STUCK))
        .map(|r| r.map(|r| (r.lsn, r.payload.to_vec())));
    assert_eq!(next, Ok(Some((lsn, b"after".to_vec()))));
}

/// Small segments and buffer, so that threads roll segments and fill the buffer often.
fn small_options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 8 * 1024;
    options.config.max_payload = 300;
    options.config.max_writes_in_flight = 8;
    options.config.policy = lamina::SyncPolicy::Batch {
        max_records: 8,
        max_bytes: 2048,
        max_delay: 0,
    };
    options.buffer_size = 16 * 1024;
    options
}

/// Seeds for the stress below (`LAMINA_REVIEW_SEEDS` for more).
fn seeds() -> u64 {
    std::env::var("LAMINA_REVIEW_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

#[test]
fn tail_of_a_shared_log_on_a_device_completing_late_sees_each_acked_record_once() {
    for seed in 0..seeds() {
        let sim = SharedSim::new(SimStorage::new(100 + seed));
        sim.lock().short_writes = true;
        let reader = sim.reader();
        let (log, _) = WriteAheadLog::open_with(sim, small_options()).expect("open");
        let log = SharedLog::new(log);
        let mut tail = log.tail_with(reader, Lsn::FIRST).expect("tail");
        let tailer = thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                match tail.next(Some(STUCK)) {
                    Ok(Some(r)) => {
                        let lsn = r.lsn;
                        seen.push((lsn, r.payload.to_vec()));
                        assert!(lsn <= tail.durable_lsn(), "handed out above durable");
                    }
                    Ok(None) => panic!("seed {seed}: the tail waited {STUCK:?}"),
                    Err(Error::Closed { .. }) => return seen,
                    Err(e) => panic!("seed {seed}: tail: {e}"),
                }
            }
        });
        let mut acked: Vec<(Lsn, Vec<u8>)> = thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let log = log.clone();
                    scope.spawn(move || {
                        (0..150)
                            .map(|i| {
                                let p = format!("seed {seed} thread {t} record {i}").into_bytes();
                                (log.commit(&p).expect("commit"), p)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("worker"))
                .collect()
        });
        acked.sort();
        log.close().expect("close");
        let seen = tailer.join().expect("tailer");
        assert_eq!(
            seen, acked,
            "seed {seed}: every acked record once, in order"
        );
    }
}

/// The shared simulated device, holding back the completions of syncs while `hold` is set.
struct HoldSyncs {
    hold: Arc<AtomicBool>,
    syncs: Vec<u64>,
    held: Vec<Completion<Failure>>,
}

impl Hooks<SharedSim> for HoldSyncs {
    fn submit(
        &mut self,
        inner: &mut SharedSim,
        token: u64,
        op: SegmentOp<'_>,
    ) -> Result<(), Failure> {
        if let SegmentOp::Sync { .. } = op {
            self.syncs.push(token);
        }
        inner.submit(token, op)
    }

    fn poll_completion(&mut self, inner: &mut SharedSim) -> Option<Completion<Failure>> {
        let holding = self.hold.load(Ordering::Relaxed);
        if !holding && let Some(done) = self.held.pop() {
            return Some(done);
        }
        let done = inner.poll_completion()?;
        if holding && self.syncs.contains(&done.0) {
            self.held.push(done);
            return None;
        }
        Some(done)
    }
}

#[test]
fn a_sync_completed_while_into_log_settles_reaches_the_tails() {
    let sim = SharedSim::new(SimStorage::new(3));
    sim.lock().reorder = false;
    let reader = sim.reader();
    let hold = Arc::new(AtomicBool::new(false));
    let storage = Hooked {
        inner: sim,
        hooks: HoldSyncs {
            hold: Arc::clone(&hold),
            syncs: Vec::new(),
            held: Vec::new(),
        },
    };
    let (log, _) = WriteAheadLog::open_with(storage, Options::default()).expect("open");
    let log = SharedLog::new(log);
    let mut tail = log.tail_with(reader, Lsn::FIRST).expect("tail");
    let a = log.commit(b"a").expect("commit a");
    let b = log.append(b"b").expect("append b");
    hold.store(true, Ordering::Relaxed);
    // The leader writes b, syncs, and gives up waiting for the sync: it is left in flight.
    assert!(matches!(log.wait_durable(b), Err(Error::Stalled { .. })));
    hold.store(false, Ordering::Relaxed);
    // The last handle takes the log back: the sync completes while it settles, so b is durable.
    let log = log.into_log().expect("into_log");
    assert!(log.durable_lsn() >= b);
    drop(log.into_storage());
    let mut seen = Vec::new();
    let end = loop {
        match tail.next(Some(STUCK)) {
            Ok(Some(r)) => seen.push(r.lsn),
            Ok(None) => panic!("the tail waited {STUCK:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(seen, vec![a, b], "every durable record reaches the tail");
    assert!(matches!(end, Error::Closed { .. }), "{end:?}");
}
