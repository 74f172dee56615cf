//! Scenarios of failure: EIO and ENOSPC on a write and on a sync (injected by `FaultyStorage`
//! around the backend), the poisoned log that follows, and syncs issued while writes are still in
//! flight, at the backend contract and under the log (with a simulated power cut).

use crate::common::*;
use lamina::{DirStorage, Error, Failure, Lsn, SyncPolicy, WriteAheadLog};
use lamina_core::SegmentId;
use lamina_core::io::{SegmentOp, SegmentStorage};
use lamina_tests::faulty::FaultyStorage;

type Faulty = WriteAheadLog<FaultyStorage<DirStorage>>;

fn open_faulty(under: &Under, dir: &std::path::Path) -> Faulty {
    WriteAheadLog::open_with(FaultyStorage::new(under.storage(dir)), options())
        .expect("open")
        .0
}

fn assert_poisoned<T: std::fmt::Debug>(result: Result<T, Error>, failure: Failure) {
    match result {
        Err(Error::Poisoned { poison, cause }) => {
            assert_eq!(poison.failure, failure);
            let cause = cause.expect("the backend's error is kept");
            assert!(cause.contains("Injected"), "{cause}");
        }
        other => panic!("expected Poisoned by {failure}, got {other:?}"),
    }
}

/// 100 synced records, then the `n`th write or sync from there fails with `failure`: appends
/// and syncs go on until the log reports it, poisoned; reopened on the bare backend, every
/// acknowledged record is back, in order.
fn fault_case(under: &Under, write: bool, n: u64, failure: Failure) {
    let dir = tempdir();
    let mut log = open_faulty(under, dir.path());
    let mut acked = append_range(&mut log, 0..100);
    log.sync().expect("sync");
    if write {
        log.storage_mut().fail_write(n, failure);
    } else {
        log.storage_mut().fail_sync(n, failure);
    }
    let mut pending = Vec::new();
    let mut poisoned = None;
    for i in 100..5_000 {
        let p = payload(i);
        match log.append(&p) {
            Ok(lsn) => pending.push((lsn, p)),
            Err(e) => {
                poisoned = Some(e);
                break;
            }
        }
        if i % 10 == 9 {
            match log.sync() {
                Ok(durable) => {
                    assert!(pending.iter().all(|(lsn, _)| *lsn <= durable));
                    acked.append(&mut pending);
                }
                Err(e) => {
                    poisoned = Some(e);
                    break;
                }
            }
        }
    }
    assert_poisoned(poisoned.map_or(Ok(()), Err), failure);
    let durable = log.durable_lsn();
    assert!(acked.iter().all(|(lsn, _)| *lsn <= durable));
    drop(log);
    let (mut log, _) = under.open(dir.path(), options());
    let read = read_all(&mut log);
    assert!(
        read.len() >= acked.len(),
        "{} < {}",
        read.len(),
        acked.len()
    );
    assert_eq!(
        read[..acked.len()],
        acked[..],
        "every acknowledged record, in order"
    );
}

pub(crate) fn eio_on_a_write_poisons_and_reopen_keeps_what_was_acked(under: &Under, _: &str) {
    fault_case(under, true, 3, Failure::Io);
}

pub(crate) fn enospc_on_a_write_poisons_and_reopen_keeps_what_was_acked(under: &Under, _: &str) {
    fault_case(under, true, 7, Failure::NoSpace);
}

pub(crate) fn eio_on_a_sync_poisons_and_reopen_keeps_what_was_acked(under: &Under, _: &str) {
    fault_case(under, false, 2, Failure::Io);
}

pub(crate) fn enospc_on_a_sync_poisons_and_reopen_keeps_what_was_acked(under: &Under, _: &str) {
    fault_case(under, false, 1, Failure::NoSpace);
}

pub(crate) fn a_poisoned_log_refuses_every_call_and_reopen_recovers(under: &Under, _: &str) {
    let dir = tempdir();
    let mut log = open_faulty(under, dir.path());
    let acked = append_range(&mut log, 0..50);
    log.sync().expect("sync");
    log.storage_mut().fail_sync(1, Failure::Io);
    log.append(b"never durable").expect("buffered");
    assert_poisoned(log.sync(), Failure::Io);
    let durable = log.durable_lsn();
    // For good: every call answers the original failure, and nothing more becomes durable.
    assert_poisoned(log.append(b"more"), Failure::Io);
    assert_poisoned(log.sync(), Failure::Io);
    assert_poisoned(log.read_from(Lsn::FIRST, |_, _| {}), Failure::Io);
    assert_poisoned(log.truncate_before(durable), Failure::Io);
    assert_eq!(log.durable_lsn(), durable);
    let (closed, storage) = log.close_into_storage();
    assert_poisoned(closed, Failure::Io);
    drop(storage);
    let (mut log, _) = under.open(dir.path(), options());
    let read = read_all(&mut log);
    assert_eq!(read[..acked.len()], acked[..]);
    let lsn = log.append(b"after reopen").expect("the reopened log works");
    assert!(log.sync().expect("sync") >= lsn);
}

pub(crate) fn a_sync_submitted_while_writes_are_in_flight_completes_each_once(
    under: &Under,
    _: &str,
) {
    let dir = tempdir();
    let mut s = under.storage(dir.path());
    let segment = SegmentId(0);
    let header = [0x5a; 64];
    s.submit(
        1,
        SegmentOp::Create {
            segment,
            header: &header,
        },
    )
    .expect("create");
    let created = completions(&mut s, 1);
    assert!(matches!(created[..], [(1, Ok(()))]), "{created:?}");
    let (a, b, c) = (vec![1u8; 5000], vec![2u8; 3000], vec![3u8; 700]);
    // A completed write, then a sync and a linked write submitted while another is in flight.
    s.submit(2, write(64, &a, false)).expect("write");
    let first = completions(&mut s, 1);
    assert!(matches!(first[..], [(2, Ok(()))]), "{first:?}");
    s.submit(3, write(64 + a.len(), &b, false)).expect("write");
    s.submit(4, SegmentOp::Sync { segment }).expect("sync");
    s.submit(5, write(64 + a.len() + b.len(), &c, true))
        .expect("linked write");
    let mut done = completions(&mut s, 3);
    done.sort_by_key(|(token, _)| *token);
    let tokens: Vec<u64> = done.iter().map(|(t, _)| *t).collect();
    assert_eq!(tokens, [3, 4, 5], "each exactly once");
    assert!(done.iter().all(|(_, r)| r.is_ok()), "{done:?}");
    // Every write has completed: a sync now covers them all.
    s.submit(6, SegmentOp::Sync { segment }).expect("sync");
    assert!(matches!(completions(&mut s, 1)[..], [(6, Ok(()))]));
    assert!(s.poll_completion().is_none(), "nothing more");
    let mut expected = header.to_vec();
    expected.extend([a, b, c].concat());
    let mut read = vec![0u8; expected.len()];
    let mut at = 0;
    while at < read.len() {
        let n = s
            .read_at(segment, at as u64, &mut read[at..])
            .expect("read");
        assert!(n > 0, "short file at {at}");
        at += n;
    }
    assert!(read == expected, "the bytes are where they were written");
}

/// A write of `data` at `offset` of segment 0.
fn write(offset: usize, data: &[u8], sync: bool) -> SegmentOp<'_> {
    SegmentOp::Write {
        segment: SegmentId(0),
        offset: offset as u64,
        data,
        sync,
    }
}

pub(crate) fn syncs_among_many_writes_in_flight_cover_every_acked_record(under: &Under, _: &str) {
    let dir = tempdir();
    let mut opts = options();
    // Every append cuts a batch, up to 8 writes in flight when a sync is asked for.
    opts.config.max_writes_in_flight = 8;
    opts.config.policy = SyncPolicy::Batch {
        max_records: 1,
        max_bytes: 8 * 1024,
        max_delay: 0,
    };
    let (mut log, _) =
        WriteAheadLog::open_with(FaultyStorage::new(under.storage(dir.path())), opts)
            .expect("open");
    let mut acked = Vec::new();
    for round in 0..20u32 {
        acked.extend(append_range(&mut log, round * 25..round * 25 + 25));
        let durable = log.sync().expect("sync");
        assert!(acked.iter().all(|(lsn, _)| *lsn <= durable));
    }
    let unsynced = append_range(&mut log, 500..540);
    let mut storage = log.into_storage();
    if !under.direct() {
        // A power cut: what no completed sync covered may be lost or torn.
        let report = storage.crash(7).expect("crash");
        assert!(report.writes > 0, "{report:?}");
    }
    drop(storage);
    let (mut log, _) = under.open(dir.path(), opts);
    let read = read_all(&mut log);
    assert_eq!(
        read[..acked.len()],
        acked[..],
        "every acknowledged record survives"
    );
    let all: Records = acked.iter().chain(&unsynced).cloned().collect();
    assert_eq!(
        read[..],
        all[..read.len()],
        "and nothing that was never appended"
    );
}
