//! `SharedLog`: many threads committing on one log, on the simulated device and on files. Every
//! acknowledged record is durable and reads back once with its bytes; power cuts, failed writes
//! and syncs, and a panicking leader never leave a thread waiting or lose an acknowledgement;
//! truncation while threads commit keeps every record from the cut on.

mod common;

use lamina::file_backend::FileStorage;
use lamina::{Error, Failure, Lsn, Options, SegmentStorage, SharedLog, WriteAheadLog};
use lamina_core::io::{Completion, SegmentOp};
use lamina_tests::faulty::FaultyStorage;
use lamina_tests::hang::without_hanging;
use lamina_tests::hook::{Hooked, Hooks, before_submit};
use lamina_tests::sim::SimStorage;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Barrier;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

type Records = Vec<(Lsn, Vec<u8>)>;

/// Small segments and buffer, so that many threads roll segments and fill the buffer often.
fn sim_options() -> Options {
    common::small_options(8 * 1024, 300)
}

fn file_options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 64 * 1024;
    options.config.max_payload = 300;
    options
}

/// A payload that names its thread and counter, 20 to 250 bytes long.
fn payload(thread: usize, i: usize) -> Vec<u8> {
    let mut p = format!("thread {thread} record {i};").into_bytes();
    p.resize(p.len() + (thread * 31 + i * 7) % 200, b'a' + (i % 26) as u8);
    p
}

fn open_sim(storage: SimStorage) -> WriteAheadLog<SimStorage> {
    WriteAheadLog::open_with(storage, sim_options())
        .expect("open")
        .0
}

/// `threads` threads, each committing up to `per_thread` records on its own handle and stopping
/// at its first error. Returns what was acknowledged, and each thread's error.
fn commit_from_threads<S: SegmentStorage + Send>(
    log: &SharedLog<S>,
    threads: usize,
    per_thread: usize,
) -> (Records, Vec<Option<Error>>) {
    let start = Barrier::new(threads);
    let outcomes: Vec<(Records, Option<Error>)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let log = log.clone();
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    let mut acked = Vec::new();
                    for i in 0..per_thread {
                        let p = payload(t, i);
                        match log.commit(&p) {
                            Ok(lsn) => {
                                // Acknowledged means durable, on every handle.
                                assert!(log.durable_lsn() >= lsn);
                                acked.push((lsn, p));
                            }
                            Err(e) => return (acked, Some(e)),
                        }
                    }
                    (acked, None)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a committing thread panicked"))
            .collect()
    });
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    for (records, error) in outcomes {
        acked.extend(records);
        errors.push(error);
    }
    (acked, errors)
}

fn read_all<S: SegmentStorage>(log: &mut WriteAheadLog<S>) -> Records {
    let mut out = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| out.push((lsn, p.to_vec())))
        .expect("read_from");
    out
}

/// Every acknowledged LSN was handed out once, reads back with its exact bytes, and no record
/// is in the log twice.
fn assert_acked_read_back(acked: &Records, read: &Records) {
    let lsns: HashSet<Lsn> = acked.iter().map(|(lsn, _)| *lsn).collect();
    assert_eq!(lsns.len(), acked.len(), "an LSN was acknowledged twice");
    let by_lsn: BTreeMap<Lsn, &Vec<u8>> = read.iter().map(|(lsn, p)| (*lsn, p)).collect();
    for (lsn, p) in acked {
        assert_eq!(
            by_lsn.get(lsn),
            Some(&p),
            "acknowledged LSN {lsn} lost or changed"
        );
    }
    let payloads: HashSet<&Vec<u8>> = read.iter().map(|(_, p)| p).collect();
    assert_eq!(payloads.len(), read.len(), "a record is in the log twice");
}

/// A thread left waiting this long is left waiting forever (a hang guard, not a speed check).
const HANG: Duration = Duration::from_secs(60);

fn assert_poisoned<T: std::fmt::Debug>(result: Result<T, Error>, failure: Failure) {
    match result {
        Err(Error::Poisoned { poison, cause }) => {
            assert_eq!(poison.failure, failure);
            assert!(cause.is_some(), "the backend's error is kept");
        }
        other => panic!("expected Poisoned with {failure}, got {other:?}"),
    }
}

#[test]
fn shared_log_is_send_and_sync() {
    fn check<T: Clone + Send + Sync>() {}
    check::<SharedLog<SimStorage>>();
    check::<SharedLog<FileStorage>>();
    check::<SharedLog<FaultyStorage<FileStorage>>>();
}

fn many_threads_on_the_sim(threads: usize, per_thread: usize) {
    for seed in 0..3 {
        let mut storage = SimStorage::new(seed);
        storage.short_writes = seed % 2 == 1;
        let log = SharedLog::new(open_sim(storage));
        let (acked, errors) = commit_from_threads(&log, threads, per_thread);
        assert!(errors.iter().all(Option::is_none), "{errors:?}");
        assert_eq!(acked.len(), threads * per_thread);
        let last = acked.iter().map(|(lsn, _)| *lsn).max().expect("records");
        assert!(log.durable_lsn() >= last);
        // Read back through the shared handle.
        let mut read = Vec::new();
        log.read_from(Lsn::FIRST, |lsn, p| read.push((lsn, p.to_vec())))
            .expect("read_from");
        assert_acked_read_back(&acked, &read);
        // A power cut right after: everything acknowledged survives it.
        let mut storage = log.into_log().expect("last handle").into_storage();
        storage.crash();
        let read = read_all(&mut open_sim(storage));
        assert_acked_read_back(&acked, &read);
    }
}

#[test]
fn two_threads_on_the_sim_every_acked_record_is_durable_once() {
    many_threads_on_the_sim(2, 100);
}

#[test]
fn eight_threads_on_the_sim_every_acked_record_is_durable_once() {
    many_threads_on_the_sim(8, 40);
}

#[test]
fn thirty_two_threads_on_the_sim_every_acked_record_is_durable_once() {
    many_threads_on_the_sim(32, 12);
}

fn many_threads_on_files(threads: usize, per_thread: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = WriteAheadLog::open(dir.path(), file_options()).expect("open");
    let log = SharedLog::new(log);
    let (acked, errors) = commit_from_threads(&log, threads, per_thread);
    assert!(errors.iter().all(Option::is_none), "{errors:?}");
    assert_eq!(acked.len(), threads * per_thread);
    assert!(log.syncs() > 0);
    // Dropped without a close: as far as the log can tell, a crash.
    drop(log);
    let (mut log, _) = WriteAheadLog::open(dir.path(), file_options()).expect("reopen");
    assert_acked_read_back(&acked, &read_all(&mut log));
}

#[test]
fn two_threads_on_files_every_acked_record_reads_back_after_reopen() {
    many_threads_on_files(2, 100);
}

#[test]
fn eight_threads_on_files_every_acked_record_reads_back_after_reopen() {
    many_threads_on_files(8, 30);
}

#[test]
fn thirty_two_threads_on_files_every_acked_record_reads_back_after_reopen() {
    many_threads_on_files(32, 8);
}

#[test]
fn eight_threads_on_files_share_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = WriteAheadLog::open(dir.path(), file_options()).expect("open");
    let log = SharedLog::new(log);
    let (acked, errors) = commit_from_threads(&log, 8, 40);
    assert!(errors.iter().all(Option::is_none), "{errors:?}");
    let (commits, syncs) = (acked.len() as u64, log.syncs());
    eprintln!("8 threads: {commits} commits, {syncs} syncs");
    assert!(syncs > 0);
    assert!(
        syncs < commits,
        "no grouping: {syncs} syncs for {commits} commits"
    );
    log.close().expect("close");
}

/// The sim with a power cut at its `cut_at`th operation: the device crashes there (operations
/// in flight are lost, unsynced writes partly kept), and every operation after it fails, as on a
/// machine whose disk went away.
struct PowerCut {
    ops_left: u64,
    cut: bool,
    in_flight: Vec<u64>,
    /// Operations lost in the cut, reported as failed.
    lost: VecDeque<u64>,
}

impl Hooks<SimStorage> for PowerCut {
    fn submit(
        &mut self,
        inner: &mut SimStorage,
        token: u64,
        op: SegmentOp<'_>,
    ) -> Result<(), Failure> {
        if !self.cut {
            self.ops_left = self.ops_left.saturating_sub(1);
            if self.ops_left == 0 {
                inner.crash();
                self.cut = true;
                self.lost.extend(self.in_flight.drain(..));
            }
        }
        if self.cut {
            return Err(Failure::Io);
        }
        inner.submit(token, op)?;
        self.in_flight.push(token);
        Ok(())
    }

    fn poll_completion(&mut self, inner: &mut SimStorage) -> Option<Completion<Failure>> {
        if let Some(token) = self.lost.pop_front() {
            return Some((token, Err(Failure::Io)));
        }
        if self.cut {
            return None;
        }
        let (token, result) = inner.poll_completion()?;
        self.in_flight.retain(|t| *t != token);
        Some((token, result))
    }
}

#[test]
fn power_cut_while_threads_commit_loses_nothing_acknowledged() {
    let mut cut_with_acks = 0;
    for seed in 0..12 {
        let (log, _) = WriteAheadLog::open_with(
            Hooked {
                inner: SimStorage::new(seed),
                hooks: PowerCut {
                    ops_left: 20 + seed * 13,
                    cut: false,
                    in_flight: Vec::new(),
                    lost: VecDeque::new(),
                },
            },
            sim_options(),
        )
        .expect("open");
        let log = SharedLog::new(log);
        let (acked, errors) = without_hanging(HANG, || commit_from_threads(&log, 8, 100));
        // Every thread learned of the cut; none waits on.
        for error in errors {
            assert_poisoned(Err::<(), _>(error.expect("the cut surfaces")), Failure::Io);
        }
        cut_with_acks += usize::from(!acked.is_empty());
        let storage = log.into_log().expect("last handle").into_storage();
        let read = read_all(&mut open_sim(storage.inner));
        assert_acked_read_back(&acked, &read);
    }
    assert!(cut_with_acks > 0, "every cut came before the first commit");
}

/// Threads commit until a fault poisons the log: every thread wakes with `Poisoned`, every later
/// call on every handle answers it, and what was acknowledged survives a crash and reopen.
fn poisoned_while_committing<S: SegmentStorage + Send>(
    log: SharedLog<S>,
    failure: Failure,
) -> (Records, WriteAheadLog<S>) {
    let other = log.clone();
    let (acked, errors) = without_hanging(HANG, || commit_from_threads(&log, 8, 200));
    for error in errors {
        assert_poisoned(Err::<(), _>(error.expect("the fault surfaces")), failure);
    }
    let text = log.sync().expect_err("poisoned").to_string();
    assert!(text.contains("poisoned"), "{text}");
    for handle in [&log, &other] {
        assert_poisoned(handle.append(b"x"), failure);
        assert_poisoned(handle.commit(b"x"), failure);
        assert_poisoned(handle.sync(), failure);
        assert_poisoned(handle.wait_durable(Lsn::FIRST), failure);
        assert_poisoned(handle.read_from(Lsn::FIRST, |_, _| {}), failure);
        assert_poisoned(handle.truncate_before(Lsn::MAX), failure);
    }
    drop(other);
    let log = log.into_log().expect("last handle");
    (acked, log)
}

/// A shared log on the simulated device of `seed`, made to fail by `fail` with `failure` while
/// threads commit: every waiter is woken with `Poisoned`, and after a crash every acknowledged
/// record is back.
fn failed_io_case(seed: u64, fail: impl FnOnce(&mut SimStorage), failure: Failure) {
    let mut log = open_sim(SimStorage::new(seed));
    fail(log.storage_mut());
    let (acked, log) = poisoned_while_committing(SharedLog::new(log), failure);
    assert!(!acked.is_empty());
    let mut storage = log.into_storage();
    storage.crash();
    assert_acked_read_back(&acked, &read_all(&mut open_sim(storage)));
}

#[test]
fn a_failed_write_wakes_every_waiter_with_poisoned_and_keeps_what_was_acked() {
    failed_io_case(
        21,
        |s| s.faults.fail_write = Some((40, Failure::Io)),
        Failure::Io,
    );
}

#[test]
fn a_failed_sync_wakes_every_waiter_with_poisoned_and_keeps_what_was_acked() {
    failed_io_case(
        22,
        |s| s.faults.fail_sync = Some((25, Failure::NoSpace)),
        Failure::NoSpace,
    );
}

#[test]
fn a_failed_fdatasync_on_files_poisons_every_handle_and_keeps_what_was_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = FileStorage::open(dir.path(), lamina::file_backend::Options::new()).expect("dir");
    let mut storage = FaultyStorage::new(files);
    storage.fail_sync(20, Failure::Io);
    let (log, _) = WriteAheadLog::open_with(storage, file_options()).expect("open");
    let (acked, log) = poisoned_while_committing(SharedLog::new(log), Failure::Io);
    assert!(!acked.is_empty());
    let mut storage = log.into_storage();
    storage.crash(5).expect("crash");
    let (mut log, _) =
        WriteAheadLog::open_with(storage.into_inner(), file_options()).expect("reopen");
    assert_acked_read_back(&acked, &read_all(&mut log));
}

#[test]
fn a_leader_that_panics_wakes_every_waiter_with_an_error() {
    // The sim, panicking at its 30th sync: a backend bug inside a leader's I/O.
    let mut syncs_left = 30u64;
    let storage = before_submit(SimStorage::new(31), move |op: &SegmentOp<'_>| {
        if let SegmentOp::Sync { .. } = op {
            syncs_left = syncs_left.saturating_sub(1);
            assert!(syncs_left != 0, "the backend panics (test)");
        }
    });
    let (log, _) = WriteAheadLog::open_with(storage, sim_options()).expect("open");
    let log = SharedLog::new(log);
    let threads = 8;
    let start = Barrier::new(threads);
    let outcomes: Vec<thread::Result<Option<Error>>> = without_hanging(HANG, || {
        thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let log = log.clone();
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        (0..200)
                            .map(|i| log.commit(&payload(t, i)))
                            .find_map(Result::err)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join()).collect()
        })
    });
    let panicked = outcomes.iter().filter(|o| o.is_err()).count();
    assert_eq!(panicked, 1, "the leader that met the panic unwound");
    for outcome in outcomes.into_iter().flatten() {
        assert_eq!(
            outcome,
            Some(Error::Panicked),
            "the others woke with an error"
        );
    }
    assert_eq!(log.commit(b"x"), Err(Error::Panicked));
    assert_eq!(log.sync(), Err(Error::Panicked));
    assert!(matches!(log.into_log(), Err(Error::Panicked)));
}

#[test]
fn appending_threads_that_fill_the_buffer_go_on_and_one_sync_covers_all() {
    let log = SharedLog::new(open_sim(SimStorage::new(41)));
    let appended: Records = thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                scope.spawn(move || {
                    // Ten times the buffer: appends find it full and free room themselves.
                    (0..600)
                        .map(|i| {
                            let p = payload(t, i);
                            (log.append(&p).expect("append"), p)
                        })
                        .collect::<Records>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("append thread"))
            .collect()
    });
    let last = appended.iter().map(|(lsn, _)| *lsn).max().expect("records");
    assert!(log.sync().expect("sync") >= last);
    assert_eq!(log.wait_durable(last), Ok(log.durable_lsn()));
    let mut storage = log.into_log().expect("last handle").into_storage();
    storage.crash();
    let read = read_all(&mut open_sim(storage));
    assert_eq!(read.len(), appended.len());
    assert_acked_read_back(&appended, &read);
}

#[test]
fn close_with_other_handles_alive_is_an_error_and_the_last_handle_closes() {
    let log = SharedLog::new(open_sim(SimStorage::new(51)));
    let other = log.clone();
    let first = log.commit(b"one").expect("commit");
    assert_eq!(log.close(), Err(Error::HandlesAlive { others: 1 }));
    // The log goes on through the other handle.
    let second = other.commit(b"two").expect("commit");
    assert!(second > first);
    let closed = other.close().expect("close");
    assert!(closed > second);
}

#[test]
fn waiting_for_an_lsn_never_appended_is_an_error() {
    let log = SharedLog::new(open_sim(SimStorage::new(61)));
    assert_eq!(log.wait_durable(Lsn::ZERO), Ok(Lsn::ZERO));
    let lsn = log.append(b"one").expect("append");
    assert_eq!(
        log.wait_durable(Lsn(lsn.0 + 5)),
        Err(Error::NotAppended {
            lsn: Lsn(lsn.0 + 5),
            next: lsn.next()
        })
    );
    assert_eq!(log.wait_durable(lsn), Ok(lsn));
    assert_eq!(log.syncs(), 1);
}

#[test]
fn a_too_large_record_is_refused_and_the_shared_log_goes_on() {
    let log = SharedLog::new(open_sim(SimStorage::new(71)));
    assert_eq!(
        log.commit(&[0u8; 301]),
        Err(Error::TooLarge { len: 301, max: 300 })
    );
    let lsn = log.commit(b"fits").expect("commit");
    assert_eq!(log.durable_lsn(), lsn);
}

#[test]
fn truncate_before_while_threads_commit_keeps_every_acked_record_from_the_cut_on() {
    let log = SharedLog::new(open_sim(SimStorage::new(81)));
    let (cut, deleted, acked) = thread::scope(|scope| {
        let truncating = scope.spawn(|| {
            let (mut cut, mut deleted) = (Lsn::ZERO, 0);
            for _ in 0..20 {
                thread::yield_now();
                let at = Lsn(log.durable_lsn().0 / 2);
                deleted += log.truncate_before(at).expect("truncate");
                cut = cut.max(at);
            }
            (cut, deleted)
        });
        let (acked, errors) = commit_from_threads(&log, 4, 60);
        assert!(errors.iter().all(Option::is_none), "{errors:?}");
        let (cut, deleted) = truncating.join().expect("truncating thread");
        (cut, deleted, acked)
    });
    // Once more after the commits, so that something is deleted whatever the interleaving.
    let last = Lsn(log.durable_lsn().0 / 2);
    let deleted = deleted + log.truncate_before(last).expect("truncate");
    let cut = cut.max(last);
    assert!(deleted > 0, "nothing was deleted");
    let mut storage = log.into_log().expect("last handle").into_storage();
    storage.crash();
    let read = read_all(&mut open_sim(storage));
    assert!(read.first().expect("records").0 <= cut);
    let kept: Records = acked.into_iter().filter(|(lsn, _)| *lsn >= cut).collect();
    assert!(!kept.is_empty());
    assert_acked_read_back(&kept, &read);
}

#[test]
fn a_panic_in_a_read_callback_is_passed_on_and_the_log_goes_on() {
    let log = SharedLog::new(open_sim(SimStorage::new(91)));
    let first = log.commit(b"one").expect("commit");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        log.read_from(Lsn::FIRST, |_, _| panic!("the reader panics (test)"))
    }));
    assert!(caught.is_err());
    let second = log.commit(b"two").expect("commit after the panic");
    let mut read = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| read.push((lsn, p.to_vec())))
        .expect("read_from");
    assert_eq!(
        read,
        vec![(first, b"one".to_vec()), (second, b"two".to_vec())]
    );
}

#[test]
fn a_tail_follows_the_shared_log_and_sees_every_acked_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = WriteAheadLog::open(dir.path(), file_options()).expect("open");
    let log = SharedLog::new(log);
    let reader = lamina::file_backend::FileReader::open(dir.path()).expect("reader");
    let mut tail = log.tail_with(reader, Lsn::FIRST).expect("tail");
    let (send, seen) = mpsc::channel();
    let tailer = thread::spawn(move || {
        loop {
            match tail.next(Some(Duration::from_secs(30))) {
                Ok(Some(r)) => send.send((r.lsn, r.payload.to_vec())).expect("send"),
                Ok(None) => panic!("the tail waited 30 s for a record"),
                Err(Error::Closed { .. }) => return,
                Err(e) => panic!("tail: {e}"),
            }
        }
    });
    let (mut acked, errors) = commit_from_threads(&log, 8, 40);
    assert!(errors.iter().all(Option::is_none), "{errors:?}");
    acked.sort();
    // Before the close: the leaders' syncs alone must have told the tail.
    let mut got = Records::new();
    while got.len() < acked.len() {
        match seen.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => got.push(r),
            Err(e) => panic!(
                "the tail saw {} of {} acked records: {e}",
                got.len(),
                acked.len()
            ),
        }
    }
    assert_eq!(got, acked, "every acked record once, in LSN order");
    log.close().expect("close");
    without_hanging(HANG, || tailer.join().expect("tailer"));
    assert!(seen.try_recv().is_err(), "nothing after the acked records");
}
