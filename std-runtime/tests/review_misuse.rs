//! API misuse and hostile input on the newest parts (shared handle, tails, per-core sets): an
//! error or a documented answer, never a panic, a hang or unbounded memory.
#![cfg(feature = "file")]

use lamina::file_backend::FileReader;
use lamina::{Error, Lsn, Options, PerCoreWalManager, SharedLog, WriteAheadLog};
use lamina_tests::hang::{mkfifo, within};
use std::time::Duration;

#[test]
fn shared_log_answers_extreme_lsns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = WriteAheadLog::open(dir.path(), Options::default()).expect("open");
    let log = SharedLog::new(log);
    let a = log.commit(b"a").expect("commit");
    assert!(matches!(
        log.wait_durable(Lsn::MAX),
        Err(Error::NotAppended { .. })
    ));
    assert!(log.wait_durable(Lsn::ZERO).is_ok());
    assert_eq!(log.truncate_before(Lsn::MAX), Ok(0));
    let mut seen = Vec::new();
    assert_eq!(log.read_from(Lsn::MAX, |l, _| seen.push(l)), Ok(Lsn::MAX));
    assert!(seen.is_empty());
    let mut far = log
        .tail_with(FileReader::open(dir.path()).expect("reader"), Lsn::MAX)
        .expect("tail");
    assert_eq!(
        far.next(Some(Duration::ZERO)).map(|r| r.is_none()),
        Ok(true)
    );
    let mut zero = log
        .tail_with(FileReader::open(dir.path()).expect("reader"), Lsn::ZERO)
        .expect("tail");
    assert_eq!(
        zero.next(Some(Duration::ZERO)).map(|r| r.map(|r| r.lsn)),
        Ok(Some(a))
    );
    log.close().expect("close");
    assert!(matches!(far.next(None), Err(Error::Closed { .. })));
}

#[test]
fn epoch_u64_max_is_kept_and_cannot_be_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (manager, _) = PerCoreWalManager::open(dir.path(), 2, Options::default()).expect("open");
    for mut w in manager.writers() {
        w.begin_epoch(u64::MAX).expect("epoch max");
        w.append(b"x").expect("append");
        assert!(matches!(
            w.begin_epoch(u64::MAX),
            Err(Error::EpochNotIncreasing { .. })
        ));
        w.close().expect("close");
    }
    let (mut manager, recovery) =
        PerCoreWalManager::open(dir.path(), 2, Options::default()).expect("reopen");
    assert!(recovery.cores.iter().all(|c| c.epoch == u64::MAX));
    let mut n = 0;
    manager
        .read_merged(|r| {
            assert_eq!(r.epoch, u64::MAX);
            n += 1;
        })
        .expect("merge");
    assert_eq!(n, 2);
}

#[test]
fn percore_description_as_a_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(PerCoreWalManager::open(dir.path(), 2, Options::default()).expect("open"));
    std::fs::remove_file(dir.path().join("PERCORE")).expect("rm");
    std::fs::create_dir(dir.path().join("PERCORE")).expect("mkdir");
    assert!(matches!(
        PerCoreWalManager::open(dir.path(), 2, Options::default()),
        Err(Error::CoreSet { .. })
    ));
}

#[test]
fn tail_steps_over_a_headerless_file_and_names_a_directory_under_a_segment_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = WriteAheadLog::open(dir.path(), Options::default()).expect("open");
    let a = log.append(b"a").expect("append");
    log.sync().expect("sync");
    // No header that parses: taken for a segment being created, and passed over.
    std::fs::write(dir.path().join("00000000000000f1.seg"), vec![0xff; 100_000]).expect("write");
    let mut tail = log.tail(Lsn::FIRST).expect("tail");
    let first = tail.next(Some(Duration::ZERO)).map(|r| r.map(|r| r.lsn));
    assert_eq!(first, Ok(Some(a)));
    let odd = dir.path().join("00000000000000f0.seg");
    std::fs::create_dir(&odd).expect("mkdir");
    match log.tail(Lsn::FIRST) {
        Err(Error::Storage { detail, .. }) => {
            assert!(detail.contains("00000000000000f0.seg"), "{detail}");
        }
        other => panic!("expected a storage error naming the directory, got {other:?}"),
    }
}

/// A call that has not returned after this long hangs (a hang guard, not a speed check).
const HANG: Duration = Duration::from_secs(20);

#[test]
fn a_fifo_under_a_segment_name_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = WriteAheadLog::open(dir.path(), Options::default()).expect("open");
    log.append(b"a").expect("append");
    log.sync().expect("sync");
    mkfifo(&dir.path().join("00000000000000f0.seg"));
    let reader = FileReader::open(dir.path()).expect("reader");
    let tailed = within(HANG, move || log.tail_with(reader, Lsn::FIRST).map(|_| ()))
        .expect("a tail on a directory with a FIFO hangs");
    match tailed {
        Err(e) => assert!(e.to_string().contains("00000000000000f0.seg"), "{e}"),
        Ok(()) => panic!("a FIFO under a segment name was taken for a segment"),
    }
    let path = dir.path().to_path_buf();
    let reopened = within(HANG, move || {
        WriteAheadLog::open(&path, Options::default()).map(|_| ())
    })
    .expect("recovery of a directory with a FIFO hangs");
    match reopened {
        Err(e) => assert!(e.to_string().contains("00000000000000f0.seg"), "{e}"),
        Ok(()) => panic!("a FIFO under a segment name was taken for a segment"),
    }
}

#[test]
fn a_fifo_as_the_percore_description_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(PerCoreWalManager::open(dir.path(), 2, Options::default()).expect("open"));
    std::fs::remove_file(dir.path().join("PERCORE")).expect("rm");
    mkfifo(&dir.path().join("PERCORE"));
    let path = dir.path().to_path_buf();
    let opened = within(HANG, move || {
        PerCoreWalManager::open(&path, 2, Options::default())
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .expect("opening a set whose description is a FIFO hangs");
    match opened {
        Err(e) => assert!(e.contains("PERCORE"), "{e}"),
        Ok(()) => panic!("a FIFO was taken for the description"),
    }
}

#[test]
fn a_log_reopened_with_a_smaller_max_payload_reads_its_larger_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut large = Options::default();
    large.config.max_payload = 200_000;
    large.config.segment_size = 4 << 20;
    let (mut log, _) = WriteAheadLog::open(dir.path(), large).expect("open");
    let big = log.append(&[7u8; 150_000]).expect("append");
    log.close().expect("close");
    let mut small = Options::default();
    small.config.max_payload = 4096;
    small.config.segment_size = 4 << 20;
    let (mut log, _) = WriteAheadLog::open(dir.path(), small).expect("reopen");
    let mut read = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| read.push((lsn, p.len())))
        .expect("read_from reads what recovery read");
    assert_eq!(read, vec![(big, 150_000)]);
    let mut tail = log.tail(Lsn::FIRST).expect("tail");
    let first = tail
        .next(Some(Duration::ZERO))
        .map(|r| r.map(|r| (r.lsn, r.payload.len())));
    assert_eq!(first, Ok(Some((big, 150_000))));
    // New records still obey the new limit.
    assert!(matches!(
        log.append(&[0u8; 5000]),
        Err(Error::TooLarge { .. })
    ));
}
