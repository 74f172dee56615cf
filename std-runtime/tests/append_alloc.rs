//! Proof that `WriteAheadLog::append` does not allocate once the log is open: a counting global
//! allocator watches 100,000 appends on the file backend, and the syncs between their batches.
//! Also that recovery allocates per open, not per record: reopening a log of 20,000 records
//! allocates as often as reopening one of 100 (give or take a directory entry).
//!
//! Only allocations made by this test's own thread while it is measuring count
//! (`lamina_tests::alloc`), so the test harness's threads, the other tests and the set-up before and
//! the checks after do not.

use lamina::{Options, SyncPolicy, WriteAheadLog};
use lamina_tests::alloc::{Counting, count_allocations, first_counted_size};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Appends measured in all.
const APPENDS: usize = 100_000;
/// Appends between two syncs.
const BATCH: usize = 10_000;

/// Opens a log in `dir` with `policy`, and warms it up: one append and one sync, so the file
/// backend has opened the segment and its queues have their room.
fn warm_log(
    dir: &std::path::Path,
    policy: SyncPolicy,
) -> WriteAheadLog<lamina::file_backend::FileStorage> {
    let mut options = Options::default();
    options.config.policy = policy;
    let (mut log, _) = WriteAheadLog::open(dir, options).expect("open");
    log.append(b"warm-up").expect("append");
    log.sync().expect("sync");
    log
}

/// Appends [`APPENDS`] 64-byte records in batches of [`BATCH`]; returns the allocations made by
/// the appends and by the syncs between the batches.
fn measure<S: lamina_core::io::SegmentStorage>(log: &mut WriteAheadLog<S>) -> (usize, usize) {
    let payload = [0x5au8; 64];
    let (mut in_appends, mut in_syncs) = (0, 0);
    for _ in 0..APPENDS / BATCH {
        let (result, n) = count_allocations(|| {
            for _ in 0..BATCH {
                log.append(&payload)?;
            }
            Ok::<_, lamina::Error>(())
        });
        result.expect("append");
        in_appends += n;
        let (synced, n) = count_allocations(|| log.sync());
        synced.expect("sync");
        in_syncs += n;
    }
    (in_appends, in_syncs)
}

#[test]
fn buffered_appends_and_syncs_do_not_allocate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = warm_log(dir.path(), SyncPolicy::Manual);
    let (appends, syncs) = measure(&mut log);
    assert_eq!(appends, 0, "allocations in {APPENDS} buffered appends");
    assert_eq!(syncs, 0, "allocations in {} syncs", APPENDS / BATCH);
    log.close().expect("close");
}

#[test]
fn appends_that_cut_and_write_batches_do_not_allocate() {
    // The default batch policy cuts a batch every 1024 records or 64 KiB: these appends write
    // and sync on the file backend inside `append`.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = warm_log(dir.path(), Options::default().config.policy);
    let (appends, syncs) = measure(&mut log);
    assert_eq!(
        appends,
        0,
        "allocations in {APPENDS} appends cutting batches (the first of {} bytes)",
        first_counted_size()
    );
    assert_eq!(syncs, 0, "allocations in {} syncs", APPENDS / BATCH);
    log.close().expect("close");
}

#[cfg(feature = "io-uring")]
#[test]
fn io_uring_appends_that_cut_and_write_batches_and_syncs_do_not_allocate() {
    // Writes and syncs go through the ring while appends go on, and a sync's caller runs what
    // it waits for on its own thread: neither allocates once the backend's tables, queues and
    // buffers have grown to what the log keeps in flight (one unmeasured pass).
    use lamina::uring_backend::{Options as UringOptions, UringStorage};
    let direct = UringOptions::new()
        .direct(true)
        .fixed_buffers(true)
        .fixed_files(true);
    for (mode, uring) in [("buffered", UringOptions::new()), ("direct", direct)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = UringStorage::open(dir.path(), uring).expect("open io_uring");
        let (mut log, _) = WriteAheadLog::open_with(storage, Options::default()).expect("open");
        measure(&mut log);
        let (appends, syncs) = measure(&mut log);
        assert_eq!(
            appends,
            0,
            "{mode}: allocations in {APPENDS} appends (the first of {} bytes)",
            first_counted_size()
        );
        assert_eq!(syncs, 0, "{mode}: allocations in {} syncs", APPENDS / BATCH);
        log.close().expect("close");
    }
}

#[test]
fn counting_allocator_sees_a_vec() {
    // The proof above is only worth something if the allocator counts.
    let (v, n) = count_allocations(|| vec![0u8; 64]);
    assert_eq!(v.len(), 64);
    assert_eq!(n, 1);
}

/// Writes `records` records of 256 bytes into a new log in `dir` (one segment) and closes it.
fn closed_log(dir: &std::path::Path, records: usize) {
    let (mut log, _) = WriteAheadLog::open(dir, Options::default()).expect("open");
    for _ in 0..records {
        log.append(&[0xa5u8; 256]).expect("append");
    }
    log.close().expect("close");
}

/// The allocations of reopening the log in `dir` (recovery included), and the records found.
fn reopen_allocations(dir: &std::path::Path) -> (usize, u64) {
    let (opened, n) = count_allocations(|| WriteAheadLog::open(dir, Options::default()));
    let (log, report) = opened.expect("reopen");
    drop(log);
    (n, report.records)
}

#[test]
fn recovery_allocations_do_not_grow_with_the_records() {
    let (few, many) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    closed_log(few.path(), 100);
    closed_log(many.path(), 20_000);
    let (small, small_records) = reopen_allocations(few.path());
    let (large, large_records) = reopen_allocations(many.path());
    assert!(small_records >= 100 && large_records >= 20_000);
    // Buffers, paths and the segment list are allocated once per open; nothing per record.
    // The directory's listing varies by a few entries (a spare file being prepared or not),
    // so the counts may differ by a few: allocating even once per 1,000 records would add 20.
    assert!(small > 0, "the counter sees the open's buffers");
    assert!(
        large.abs_diff(small) < 16,
        "allocations reopening {small_records} records: {small}, {large_records} records: {large}"
    );
}
