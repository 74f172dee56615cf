//! `Tail`: a reader on another thread that follows the log while its owner appends and syncs.
//! On the simulated device shared with a read-only view (`SharedSim`, with writes that land in
//! pieces and complete in any order, so a reader sees writes in flight) and on the file backend:
//! every record exactly once, in order, none before it is durable, across roll-overs; from a
//! middle LSN; waiting on an empty log; timeouts; the end of the log by close, drop or poisoning;
//! truncation past the tail; damage; a tail after a crash and recovery.

mod common;

use lamina::SegmentStorage as _;
use lamina::{Error, Failure, Lsn, Mode, Options, SyncPolicy, Tail, WriteAheadLog};
use lamina_core::SegmentId;
use lamina_tests::hook::{Hooked, Hooks};
use lamina_tests::shared::{SharedSim, SimReader};
use lamina_tests::sim::SimStorage;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

type Log = WriteAheadLog<SharedSim>;
type Records = Vec<(Lsn, Vec<u8>)>;

const MAX_PAYLOAD: u32 = 300;

/// A tail that gets nothing for this long is stuck (a hang guard, not a timing assertion).
const STUCK: Duration = Duration::from_secs(20);

fn options(segment_size: u64) -> Options {
    common::small_options(segment_size, MAX_PAYLOAD)
}

/// Records the concurrent tests write (`LAMINA_TAIL_RECORDS` for more).
fn record_count() -> u64 {
    std::env::var("LAMINA_TAIL_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

/// A payload that names its generation and index, 1 to 300 bytes long.
fn payload(generation: u32, i: u64) -> Vec<u8> {
    let mut p = format!("gen {generation} record {i} ").into_bytes();
    let len = 1 + (i as usize * 37) % MAX_PAYLOAD as usize;
    p.resize(len.max(p.len()), b'a' + (i % 26) as u8);
    p.truncate(MAX_PAYLOAD as usize);
    p
}

/// A log on a fresh shared simulated device whose writes land in pieces, in any order.
fn sim_log(seed: u64) -> Log {
    let shared = SharedSim::new(SimStorage::new(seed));
    shared.lock().short_writes = true;
    match WriteAheadLog::open_with(shared, options(8 * 1024)) {
        Ok((log, _)) => log,
        Err(e) => panic!("open failed: {e}"),
    }
}

fn sim_tail(log: &Log, from: Lsn) -> Tail<SimReader> {
    log.tail_with(log.storage().reader(), from).expect("tail")
}

fn append_range<S: lamina::SegmentStorage>(
    log: &mut WriteAheadLog<S>,
    generation: u32,
    range: std::ops::Range<u64>,
) -> Records {
    range
        .map(|i| {
            let p = payload(generation, i);
            (log.append(&p).expect("append"), p)
        })
        .collect()
}

/// Reads records until the tail answers an error (returned with them), checking on the way that
/// none is above the durable LSN published when it was handed out.
fn read_to_end<R: lamina::SegmentStorage>(tail: &mut Tail<R>) -> (Records, Error) {
    let mut out = Vec::new();
    loop {
        match tail.next(Some(STUCK)) {
            Ok(Some(r)) => {
                let (lsn, payload) = (r.lsn, r.payload.to_vec());
                // The durable LSN only grows: one above it now was above it when handed out.
                let durable = tail.durable_lsn();
                assert!(
                    lsn <= durable,
                    "LSN {lsn} handed out beyond the durable {durable}"
                );
                out.push((lsn, payload));
            }
            Ok(None) => panic!("tail stuck at {:?} after {} records", tail, out.len()),
            Err(e) => return (out, e),
        }
    }
}

/// Reads what is durable now, without waiting.
fn read_durable<R: lamina::SegmentStorage>(tail: &mut Tail<R>) -> Records {
    let mut out = Vec::new();
    while let Some(r) = tail.next(Some(Duration::ZERO)).expect("next") {
        out.push((r.lsn, r.payload.to_vec()));
    }
    out
}

/// The owner appends `count` records of `generation` in batches of 1 to 40 and syncs after each
/// batch, while a tail on another thread reads to the end; the owner then closes the log. The
/// tail must see exactly the records, in order, and then `Closed`.
fn writer_and_tailer<S, R>(mut log: WriteAheadLog<S>, tail: Tail<R>, count: u64) -> Records
where
    S: lamina::SegmentStorage,
    R: lamina::SegmentStorage + Send + 'static,
{
    let tailer = thread::spawn(move || {
        let mut tail = tail;
        read_to_end(&mut tail)
    });
    let mut written = Vec::new();
    let mut i = 0;
    while i < count {
        let batch = (1 + (i * 7919) % 40).min(count - i);
        written.extend(append_range(&mut log, 1, i..i + batch));
        let durable = log.sync().expect("sync");
        assert!(durable >= written.last().map_or(Lsn::ZERO, |r| r.0));
        i += batch;
    }
    let seal = log.close().expect("close");
    let (read, end) = tailer.join().expect("tailer");
    assert_eq!(
        end,
        Error::Closed { durable: seal },
        "the tail ends with the close"
    );
    assert_eq!(read.len(), written.len());
    assert!(read == written, "the tail read other records than written");
    written
}

#[test]
fn tailer_on_another_thread_reads_every_record_once_in_order_across_rollovers() {
    let log = sim_log(11);
    let reader = log.storage().reader();
    let tail = sim_tail(&log, Lsn::FIRST);
    let count = record_count();
    writer_and_tailer(log, tail, count);
    let mut reader = reader;
    let mut ids = [SegmentId(0); 4];
    let segments = lamina::SegmentStorage::list(&mut reader, &mut ids).expect("list");
    assert!(
        segments >= 4,
        "only {segments} segments: the test wants roll-overs"
    );
}

#[test]
fn tail_from_a_middle_lsn_starts_there_and_skips_nothing_after() {
    let mut log = sim_log(12);
    let written = append_range(&mut log, 1, 0..300);
    log.sync().expect("sync");
    // A record in a later segment than the first, and one in the first.
    for (k, (from, _)) in [written[200].clone(), written[3].clone()]
        .into_iter()
        .enumerate()
    {
        let mut tail = sim_tail(&log, from);
        let read = read_durable(&mut tail);
        let expected: Records = written.iter().filter(|r| r.0 >= from).cloned().collect();
        assert!(read == expected, "case {k}: from {from}");
        assert_eq!(tail.next_lsn(), log.next_lsn(), "case {k}");
    }
}

#[test]
fn tail_started_on_an_empty_log_waits_for_the_first_record() {
    let mut log = sim_log(13);
    let mut tail = sim_tail(&log, Lsn::FIRST);
    let (started, wait) = mpsc::channel();
    let tailer = thread::spawn(move || {
        started.send(()).expect("send");
        let r = tail.next(Some(STUCK)).expect("next").map(|r| r.lsn);
        (r, tail)
    });
    wait.recv().expect("started");
    thread::sleep(Duration::from_millis(20));
    let lsn = log.append(b"first").expect("append");
    log.sync().expect("sync");
    let (got, mut tail) = tailer.join().expect("tailer");
    assert_eq!(got, Some(lsn));
    assert_eq!(tail.next(Some(Duration::ZERO)), Ok(None));
}

#[test]
fn timeout_returns_none_and_appended_records_are_not_read_before_they_are_durable() {
    let shared = SharedSim::new(SimStorage::new(14));
    let mut opts = options(8 * 1024);
    opts.config.policy = SyncPolicy::Manual;
    let (mut log, _) = WriteAheadLog::open_with(shared, opts).expect("open");
    let mut tail = sim_tail(&log, Lsn::FIRST);
    let lsn = log.append(b"buffered only").expect("append");
    let started = Instant::now();
    assert_eq!(tail.next(Some(Duration::from_millis(30))), Ok(None));
    assert!(started.elapsed() >= Duration::from_millis(30));
    log.sync().expect("sync");
    let r = tail.next(Some(Duration::ZERO)).expect("next");
    assert_eq!(
        r.map(|r| (r.lsn, r.payload.to_vec())),
        Some((lsn, b"buffered only".to_vec()))
    );
    assert_eq!(tail.next(Some(Duration::ZERO)), Ok(None));
}

#[test]
fn failed_sync_wakes_the_tail_with_poisoned_after_the_durable_records_only() {
    let mut log = sim_log(15);
    let durable = append_range(&mut log, 1, 0..40);
    log.sync().expect("sync");
    let mut tail = sim_tail(&log, Lsn::FIRST);
    let (ready, wait) = mpsc::channel();
    let tailer = thread::spawn(move || {
        let mut read = read_durable(&mut tail);
        ready.send(()).expect("send");
        let (rest, end) = read_to_end(&mut tail);
        read.extend(rest);
        (read, end)
    });
    wait.recv().expect("ready");
    log.storage().lock().faults.fail_sync = Some((1, Failure::Io));
    let sizes = |log: &Log| {
        let sim = log.storage().lock();
        sim.segments()
            .iter()
            .map(|s| sim.bytes(*s).map_or(0, <[u8]>::len))
            .sum::<usize>()
    };
    let before = sizes(&log);
    // A batch cut by an append is written and synced at once, so an append may meet the failure.
    let e = (40..60)
        .find_map(|i| log.append(&payload(1, i)).err())
        .unwrap_or_else(|| log.sync().expect_err("the sync fails"));
    assert!(matches!(e, Error::Poisoned { .. }), "{e}");
    // The records of the failed sync were written: a reader could see their bytes.
    assert!(
        sizes(&log) > before,
        "the unsynced records reached the device"
    );
    let (read, end) = tailer.join().expect("tailer");
    assert!(matches!(end, Error::Poisoned { .. }), "{end}");
    assert!(read == durable, "the tail read {} records", read.len());
    assert!(durable.last().is_some_and(|r| r.0 <= log.durable_lsn()));
}

#[test]
fn close_or_drop_ends_the_tail_after_the_last_record() {
    for close in [true, false] {
        let mut log = sim_log(16);
        let written = append_range(&mut log, 1, 0..50);
        log.sync().expect("sync");
        let mut tail = sim_tail(&log, Lsn::FIRST);
        let tailer = thread::spawn(move || read_to_end(&mut tail));
        let more = append_range(&mut log, 1, 50..60);
        let end = if close {
            Error::Closed {
                durable: log.close().expect("close"),
            }
        } else {
            // A drop is a crash for the log: only what was synced is durable.
            let durable = log.durable_lsn();
            drop(log);
            Error::Closed { durable }
        };
        let (read, got) = tailer.join().expect("tailer");
        assert_eq!(got, end, "close: {close}");
        let expected: Records = written.iter().chain(&more).cloned().collect();
        if close {
            assert!(read == expected, "close reads all");
        } else {
            assert!(read.len() >= written.len() && expected.starts_with(&read));
        }
    }
}

#[test]
fn truncation_past_the_tail_is_an_error_not_a_skip() {
    let mut log = sim_log(17);
    let written = append_range(&mut log, 1, 0..400);
    log.sync().expect("sync");
    let mut tail = sim_tail(&log, Lsn::FIRST);
    let first = tail
        .next(Some(Duration::ZERO))
        .expect("next")
        .map(|r| r.lsn);
    assert_eq!(first, Some(written[0].0));
    let deleted = log.truncate_before(written[350].0).expect("truncate");
    assert!(deleted >= 2, "deleted {deleted}");
    let (read, end) = read_to_end(&mut tail);
    let Error::Truncated { next, .. } = &end else {
        panic!("expected Truncated, got {end}");
    };
    // What was read is an unbroken run from the start; the error names the first LSN lost.
    assert!(written[1..].starts_with(&read));
    let lost = 1 + read.len();
    assert!(
        *next > written[lost - 1].0 && *next <= written[lost].0,
        "{end}"
    );
    assert!(end.to_string().contains("deleted"), "{end}");
    // It stays.
    assert_eq!(tail.next(Some(Duration::ZERO)), Err(end));

    // A new tail below the oldest record held is refused the same way.
    let e = sim_tail_err(&log, Lsn::FIRST);
    assert!(
        matches!(
            e,
            Error::Truncated {
                next: Lsn::FIRST,
                ..
            }
        ),
        "{e}"
    );
    // From `Lsn::ZERO` it starts at the oldest record held: what `read_from` reads.
    let mut held = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| held.push((lsn, p.to_vec())))
        .expect("read_from");
    assert!(held.len() < written.len() - 300 && written.ends_with(&held));
    let mut tail = sim_tail(&log, Lsn::ZERO);
    assert!(read_durable(&mut tail) == held);
}

fn sim_tail_err(log: &Log, from: Lsn) -> Error {
    log.tail_with(log.storage().reader(), from)
        .expect_err("tail refused")
}

#[test]
fn damage_in_a_durable_record_is_a_read_error() {
    let mut log = sim_log(18);
    let written = append_range(&mut log, 1, 0..10);
    log.sync().expect("sync");
    // A byte inside the 6th record's frame (past the segment header and five frames).
    let offset = {
        let sim = log.storage().lock();
        let len = sim.bytes(SegmentId(0)).map_or(0, <[u8]>::len);
        assert!(len > 1024);
        len / 2
    };
    log.storage().lock().flip_bit(SegmentId(0), offset, 3);
    let mut tail = sim_tail(&log, Lsn::FIRST);
    let (read, end) = read_to_end(&mut tail);
    assert!(matches!(end, Error::Read { .. }), "{end}");
    assert!(end.to_string().contains("segment 0"), "{end}");
    assert!(written.starts_with(&read) && read.len() < written.len());
}

/// A read-only view that counts its reads.
struct Counting {
    reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Hooks<SimReader> for Counting {
    fn read_at(
        &mut self,
        inner: &mut SimReader,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Failure> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        inner.read_at(segment, offset, buf)
    }
}

#[test]
fn durable_records_are_read_in_chunks_not_one_read_each() {
    let shared = SharedSim::new(SimStorage::new(21));
    let (mut log, _) = WriteAheadLog::open_with(shared, options(256 * 1024)).expect("open");
    let written = append_range(&mut log, 1, 0..1000);
    log.sync().expect("sync");
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = Hooked {
        inner: log.storage().reader(),
        hooks: Counting {
            reads: std::sync::Arc::clone(&reads),
        },
    };
    let mut tail = log.tail_with(reader, Lsn::FIRST).expect("tail");
    let after_open = reads.load(std::sync::atomic::Ordering::Relaxed);
    assert!(read_durable(&mut tail) == written);
    let reads = reads.load(std::sync::atomic::Ordering::Relaxed) - after_open;
    let segments = log.storage().lock().segments().len();
    // About 160 KiB of frames in 64 KiB reads, a few more at each segment's start and end.
    assert!(
        reads <= 4 + 3 * segments,
        "{reads} reads for {} records in {segments} segments",
        written.len()
    );
}

#[test]
fn skip_corrupt_log_tail_steps_over_what_recovery_stepped_over() {
    let mut log = sim_log(22);
    let written = append_range(&mut log, 1, 0..300);
    let (closed, shared) = log.close_into_storage();
    closed.expect("close");
    shared.lock().flip_bit(SegmentId(1), 4000, 5);
    let mut opts = options(8 * 1024);
    opts.mode = Mode::SkipCorrupt;
    let (mut log, report) = WriteAheadLog::open_with(shared, opts).expect("reopen");
    assert!(report.skipped >= 1, "{report:?}");
    let mut recovered = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| recovered.push((lsn, p.to_vec())))
        .expect("read_from");
    assert!(recovered.len() < written.len() && recovered.len() > 250);
    let mut tail = sim_tail(&log, Lsn::FIRST);
    assert!(read_durable(&mut tail) == recovered);
    let more = append_range(&mut log, 2, 0..10);
    log.sync().expect("sync");
    assert!(read_durable(&mut tail) == more);
}

#[test]
fn a_reader_of_another_log_is_refused() {
    let log = sim_log(19);
    let other = sim_log(20);
    let e = log
        .tail_with(other.storage().reader(), Lsn::FIRST)
        .expect_err("another log");
    assert!(matches!(e, Error::Read { .. }), "{e}");
    assert!(e.to_string().contains("another log"), "{e}");
}

#[test]
fn tail_after_a_crash_and_reopen_sees_exactly_the_recovered_records() {
    for seed in 0..8 {
        let mut log = sim_log(100 + seed);
        append_range(&mut log, 1, 0..150);
        log.sync().expect("sync");
        // Appended past the last sync: some of it may be in flight at the cut.
        append_range(&mut log, 1, 150..230);
        let shared = log.into_storage();
        shared.lock().crash();
        let (mut log, _) = WriteAheadLog::open_with(shared, options(8 * 1024)).expect("reopen");
        let mut recovered = Vec::new();
        log.read_from(Lsn::FIRST, |lsn, p| recovered.push((lsn, p.to_vec())))
            .expect("read_from");
        let mut tail = sim_tail(&log, Lsn::FIRST);
        let read = read_durable(&mut tail);
        assert!(
            read == recovered,
            "seed {seed}: {} against {}",
            read.len(),
            recovered.len()
        );
        assert!(recovered.len() >= 150, "seed {seed}");
        // And it goes on with the records appended after the reopen.
        let more = append_range(&mut log, 2, 0..30);
        log.sync().expect("sync");
        assert!(read_durable(&mut tail) == more, "seed {seed}");
    }
}

#[cfg(feature = "file")]
mod file {
    use super::*;
    use lamina::file_backend::FileStorage;

    fn file_log(dir: &std::path::Path) -> WriteAheadLog<FileStorage> {
        let storage = FileStorage::open(dir, lamina::file_backend::Options::new()).expect("dir");
        match WriteAheadLog::open_with(storage, options(16 * 1024)) {
            Ok((log, _)) => log,
            Err(e) => panic!("open failed: {e}"),
        }
    }

    fn segment_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            })
            .count()
    }

    #[test]
    fn file_tailer_on_another_thread_reads_every_record_once_across_rollovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = file_log(dir.path());
        let tail = log.tail(Lsn::FIRST).expect("tail");
        writer_and_tailer(log, tail, record_count());
        let segments = segment_files(dir.path());
        assert!(
            segments >= 4,
            "only {segments} segments: the test wants roll-overs"
        );
    }

    #[test]
    fn file_tail_from_a_middle_lsn_then_truncation_past_it_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = file_log(dir.path());
        let written = append_range(&mut log, 1, 0..600);
        log.sync().expect("sync");
        let from = written[100].0;
        let mut tail = log.tail(from).expect("tail");
        let first = tail
            .next(Some(Duration::ZERO))
            .expect("next")
            .map(|r| r.lsn);
        assert_eq!(first, Some(from));
        let deleted = log.truncate_before(written[550].0).expect("truncate");
        assert!(deleted >= 2, "deleted {deleted}");
        // The segment it is in stays readable through its open file; the next ones are gone.
        let (read, end) = read_to_end(&mut tail);
        assert!(matches!(end, Error::Truncated { .. }), "{end}");
        assert!(written[101..].starts_with(&read));
        assert!(read.len() < 449);
    }

    #[test]
    fn file_failed_sync_ends_the_tail_with_poisoned_after_the_durable_records() {
        use lamina::file_backend::FileReader;
        use lamina_tests::faulty::FaultyStorage;

        let dir = tempfile::tempdir().expect("tempdir");
        let storage =
            FileStorage::open(dir.path(), lamina::file_backend::Options::new()).expect("dir");
        let (mut log, _) =
            WriteAheadLog::open_with(FaultyStorage::new(storage), options(16 * 1024))
                .expect("open");
        let durable = append_range(&mut log, 1, 0..100);
        log.sync().expect("sync");
        let mut tail = log
            .tail_with(FileReader::open(dir.path()).expect("reader"), Lsn::FIRST)
            .expect("tail");
        let tailer = thread::spawn(move || read_to_end(&mut tail));
        log.storage_mut().fail_sync(1, Failure::Io);
        let e = (100..140)
            .find_map(|i| log.append(&payload(1, i)).err())
            .unwrap_or_else(|| log.sync().expect_err("the sync fails"));
        assert!(matches!(e, Error::Poisoned { .. }), "{e}");
        // The failed sync's writes are in the files, where a reader could see them.
        assert!(log.storage().unsynced_writes() > 0);
        let (read, end) = tailer.join().expect("tailer");
        assert!(matches!(end, Error::Poisoned { .. }), "{end}");
        assert!(read == durable, "the tail read {} records", read.len());
    }

    #[test]
    fn file_tail_reopened_after_close_reads_the_whole_log_then_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = file_log(dir.path());
        let first = append_range(&mut log, 1, 0..200);
        log.close().expect("close");
        let mut log = file_log(dir.path());
        let mut tail = log.tail(Lsn::FIRST).expect("tail");
        assert!(read_durable(&mut tail) == first);
        let second = append_range(&mut log, 2, 0..20);
        log.sync().expect("sync");
        assert!(read_durable(&mut tail) == second);
    }
}
