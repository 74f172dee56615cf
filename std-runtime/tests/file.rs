//! The log on the file backend: a directory on this machine's file system.

mod common;

use lamina::{Error, Lsn, Options, WriteAheadLog};

fn options() -> Options {
    common::batched_options(64 * 1024)
}

#[test]
fn records_synced_to_files_come_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = WriteAheadLog::open(dir.path(), options()).unwrap();
    assert_eq!(report.records, 0);
    let mut appended = Vec::new();
    for i in 0..2_000u32 {
        let payload = format!("record {i}").repeat(1 + (i % 7) as usize);
        appended.push((
            log.append(payload.as_bytes()).unwrap(),
            payload.into_bytes(),
        ));
    }
    let durable = log.sync().unwrap();
    assert!(durable >= appended.last().unwrap().0);
    drop(log);

    let (mut log, report) = WriteAheadLog::open(dir.path(), options()).unwrap();
    assert!(report.segments > 1, "the log rolled over: {report:?}");
    let mut read = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, payload| {
        read.push((lsn, payload.to_vec()))
    })
    .unwrap();
    assert_eq!(read, appended);
    let seal = log.close().unwrap();
    assert!(seal > appended.last().unwrap().0);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = WriteAheadLog::open(dir.path(), options()).unwrap();
    match WriteAheadLog::open(dir.path(), options()) {
        Err(Error::Storage { detail, .. }) => {
            assert!(detail.contains("locked"), "{detail}");
            assert!(detail.contains(&std::process::id().to_string()), "{detail}");
        }
        other => panic!("expected a lock error, got {:?}", other.map(|_| ())),
    }
    drop(log);
    WriteAheadLog::open(dir.path(), options()).unwrap();
}

#[test]
fn a_file_in_place_of_the_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-dir");
    std::fs::write(&path, b"x").unwrap();
    match WriteAheadLog::open(&path, options()) {
        Err(Error::Storage { detail, .. }) => assert!(detail.contains("not-a-dir"), "{detail}"),
        other => panic!("expected a storage error, got {:?}", other.map(|_| ())),
    }
}
