//! `SkipCorrupt` reads step over the damage recovery stepped over, and only it: damage that
//! appears in a durable record after the open was never reported, so reading it is an error,
//! not a silent loss.
#![cfg(feature = "file")]

mod common;

use lamina::{Error, Lsn, Mode, Options, WriteAheadLog};
use lamina_tests::files::{flip_bits, segment_files};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

const RECORDS: u32 = 600;

fn options() -> Options {
    Options {
        mode: Mode::SkipCorrupt,
        ..common::batched_options(32 * 1024)
    }
}

/// Every record the tail hands out up to its first error, and that error.
fn tail_to_error(log: &WriteAheadLog<lamina::file_backend::FileStorage>) -> (usize, Error) {
    let mut tail = log.tail(Lsn::FIRST).expect("tail");
    let mut n = 0;
    loop {
        match tail.next(Some(Duration::ZERO)) {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("the tail passed the damage and read {n} records"),
            Err(e) => return (n, e),
        }
    }
}

#[test]
fn skip_corrupt_damage_after_the_open_is_a_read_error_not_a_silent_skip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, report) = WriteAheadLog::open(dir.path(), options()).expect("open");
    assert_eq!(report.skipped, 0);
    for i in 0..RECORDS {
        log.append(format!("record {i:05} acknowledged").as_bytes())
            .expect("append");
    }
    log.sync().expect("every record is acknowledged");
    // Bit rot in a durable record of the first segment, after recovery looked at the log.
    flip_bits(&segment_files(dir.path())[0], 3_000, 0x40);
    let mut read = 0;
    match log.read_from(Lsn::FIRST, |_, _| read += 1) {
        Err(Error::Read { detail, .. }) => assert!(detail.contains("damage"), "{detail}"),
        other => panic!("read {read} of {RECORDS} records and then {other:?}"),
    }
    assert!(read < RECORDS as usize);
    let (handed, e) = tail_to_error(&log);
    assert_eq!(handed, read, "the tail stops where read_from did");
    assert!(matches!(e, Error::Read { .. }), "{e:?}");
}

#[test]
fn skip_corrupt_steps_over_the_recovered_damage_but_not_later_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = WriteAheadLog::open(dir.path(), options()).expect("open");
    for i in 0..RECORDS {
        log.append(format!("record {i:05} acknowledged").as_bytes())
            .expect("append");
    }
    log.close().expect("close");
    let first = segment_files(dir.path()).swap_remove(0);
    flip_bits(&first, 20_000, 0x40);
    let (mut log, report) = WriteAheadLog::open(dir.path(), options()).expect("reopen");
    assert!(report.skipped >= 1, "{report:?}");
    let mut before = 0;
    log.read_from(Lsn::FIRST, |_, _| before += 1)
        .expect("the damage recovery reported is stepped over");
    assert!(before < RECORDS as usize && before > RECORDS as usize - 64);
    let mut tail = log.tail(Lsn::FIRST).expect("tail");
    let mut tailed = 0;
    while let Ok(Some(_)) = tail.next(Some(Duration::ZERO)) {
        tailed += 1;
    }
    assert_eq!(tailed, before, "the tail steps over what read_from does");
    // New damage before the old: never reported, so an error.
    flip_bits(&first, 3_000, 0x40);
    let mut after = 0;
    let result = log.read_from(Lsn::FIRST, |_, _| after += 1);
    assert!(matches!(result, Err(Error::Read { .. })), "{result:?}");
    assert!(after < before);
    let (handed, e) = tail_to_error(&log);
    assert_eq!(handed, after);
    assert!(matches!(e, Error::Read { .. }), "{e:?}");
}

#[test]
fn skip_corrupt_reads_on_past_a_damaged_segment_end_as_recovery_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = WriteAheadLog::open(dir.path(), options()).expect("open");
    let records = 3_000;
    for i in 0..records {
        log.append(format!("record {i:05} acknowledged").as_bytes())
            .expect("append");
    }
    log.close().expect("close");
    let mut files: Vec<PathBuf> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "a middle segment");
    // The end of a middle segment (its last records and its seal) is damaged: recovery goes on
    // in the next segment, which no longer links.
    let mut bytes = fs::read(&files[1]).expect("read");
    let len = bytes.len();
    bytes[len - 300..].fill(0x5a);
    fs::write(&files[1], bytes).expect("write");
    let (mut log, report) = WriteAheadLog::open(dir.path(), options()).expect("reopen");
    assert!(report.skipped >= 1, "{report:?}");
    let mut read = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, _| read.push(lsn))
        .expect("read_from goes on where recovery went on");
    let lost = records - read.len();
    assert!(
        (1..40).contains(&lost),
        "only the damaged end is lost: {lost}"
    );
    let mut tail = log.tail(Lsn::FIRST).expect("tail");
    let mut tailed = Vec::new();
    while let Ok(Some(r)) = tail.next(Some(Duration::ZERO)) {
        tailed.push(r.lsn);
    }
    assert_eq!(tailed, read, "the tail goes on where read_from does");
}
