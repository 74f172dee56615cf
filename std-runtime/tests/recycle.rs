//! `WriteAheadLog::open` prepares segments ahead of need and recycles the ones
//! `truncate_before` deletes: a log that truncates, rolls into recycled files, and crashes comes
//! back with exactly its durable records, none of the truncated ones, and no corruption. Also
//! under seeded power cuts (`FaultyStorage`: unsynced sectors of the recycled files lost, kept
//! or torn, the lost ones showing the old records again); `LAMINA_RECYCLE_SEEDS` sets how many
//! (default 12).
#![cfg(feature = "file")]

mod common;

use lamina::file_backend::{self, FileStorage, names};
use lamina::{Lsn, Options, WriteAheadLog};
use lamina_tests::faulty::FaultyStorage;
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn options() -> Options {
    common::batched_options(64 * 1024)
}

fn payload(n: u64, old: bool) -> Vec<u8> {
    let tag = if old { "old" } else { "new" };
    format!("{tag} record {n} ")
        .repeat(1 + (n % 23) as usize)
        .into_bytes()
}

/// The inodes of the files in `dir` whose names `keep` accepts.
fn inodes(dir: &Path, keep: impl Fn(&str) -> bool) -> HashSet<u64> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| keep(e.file_name().to_str().unwrap()))
        .map(|e| e.metadata().unwrap().ino())
        .collect()
}

fn is_segment(name: &str) -> bool {
    names::parse_segment_file_name(name).is_some()
}

#[test]
fn truncated_segments_are_recycled_and_a_crash_over_them_loses_nothing_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = WriteAheadLog::open(dir.path(), options()).unwrap();
    let mut appended = Vec::new();
    for n in 0..3000 {
        appended.push((log.append(&payload(n, true)).unwrap(), payload(n, true)));
    }
    log.sync().unwrap();
    let cut = appended[2400].0;
    let doomed = inodes(dir.path(), is_segment);
    let deleted = log.truncate_before(cut).unwrap();
    assert!(deleted >= 3, "{deleted} segments deleted");
    let stats = log.storage().stats();
    assert!(stats.recycled >= 1, "{stats:?}");
    // The files kept as spares are the deleted segments' files, renamed.
    let recycled: HashSet<u64> = inodes(dir.path(), names::is_spare_file_name)
        .intersection(&doomed)
        .copied()
        .collect();
    assert_eq!(recycled.len() as u64, stats.recycled);

    // Roll on until every recycled file is a segment again.
    let mut n = 0;
    while !recycled.is_subset(&inodes(dir.path(), is_segment)) {
        assert!(n < 20_000, "the recycled files were never reused");
        appended.push((log.append(&payload(n, false)).unwrap(), payload(n, false)));
        if n % 40 == 0 {
            log.sync().unwrap();
        }
        n += 1;
    }
    // A few more records, durable, in the recycled segment.
    for _ in 0..10 {
        appended.push((log.append(&payload(n, false)).unwrap(), payload(n, false)));
        n += 1;
    }
    let durable = log.sync().unwrap();
    assert_eq!(durable, appended.last().unwrap().0);
    let stats = log.storage().stats();
    assert!(stats.creates_from_spare >= stats.recycled, "{stats:?}");
    // Appended, not synced, still in the buffer: lost to the crash.
    for _ in 0..3 {
        log.append(&payload(n, false)).unwrap();
        n += 1;
    }
    drop(log);

    // Strict recovery fails on corruption, so opening at all says there is none.
    let (mut log, report) = WriteAheadLog::open(dir.path(), options()).unwrap();
    assert_eq!(report.cut, None, "{report:?}");
    let mut read = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, payload| {
        read.push((lsn, payload.to_vec()))
    })
    .unwrap();
    let first = read.first().unwrap().0;
    assert!(first <= cut, "truncation keeps what is at or after {cut}");
    let expected: Vec<_> = appended.into_iter().filter(|r| r.0 >= first).collect();
    assert_eq!(read.len(), expected.len());
    assert!(read == expected, "exactly the durable records from {first}");
    assert!(first > Lsn::FIRST, "nothing truncated comes back");
    // And the log goes on.
    let lsn = log.append(b"after").unwrap();
    assert_eq!(log.sync().unwrap(), lsn);
}

#[test]
fn open_prepares_segments_to_the_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = WriteAheadLog::open(dir.path(), options()).unwrap();
    for n in 0..1500 {
        log.append(&payload(n, false)).unwrap();
    }
    log.sync().unwrap();
    let stats = log.storage().stats();
    assert!(
        stats.creates_from_spare + stats.creates_inline >= 3,
        "{stats:?}"
    );
    assert_eq!(log.storage().options().prepare_size, 64 * 1024);
    assert!(stats.padded_writes > 0, "{stats:?}");
    for entry in fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if is_segment(&name) || names::is_spare_file_name(&name) {
            assert_eq!(entry.metadata().unwrap().len(), 64 * 1024, "{name}");
        }
    }
    drop(log);
    let spares = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| names::is_spare_file_name(e.as_ref().unwrap().file_name().to_str().unwrap()))
        .count();
    assert_eq!(spares, 0, "spares removed with the log");
}

type Faulty = WriteAheadLog<FaultyStorage<FileStorage>>;

/// The log on a recycling file backend with no preparer, so that new segments take the
/// recycled files, behind `FaultyStorage`.
fn open_faulty(dir: &Path) -> (Faulty, lamina::RecoveryReport) {
    let options = file_backend::Options::new()
        .prepare_size(64 * 1024)
        .recycle(2)
        .pad_to_page(true);
    let storage = FaultyStorage::new(FileStorage::open(dir, options).unwrap());
    match WriteAheadLog::open_with(storage, self::options()) {
        Ok(opened) => opened,
        Err(e) => panic!("reopen after a power cut failed: {e}"),
    }
}

#[test]
fn power_cuts_in_recycled_segments_keep_every_synced_record_and_bring_back_no_old_one() {
    let seeds: u64 = std::env::var("LAMINA_RECYCLE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut cuts = 0;
    for seed in 0..seeds {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open_faulty(dir.path());
        let mut appended = Vec::new();
        for n in 0..3000 {
            appended.push((log.append(&payload(n, true)).unwrap(), payload(n, true)));
        }
        log.sync().unwrap();
        let truncated_below = appended[2400].0;
        assert!(log.truncate_before(truncated_below).unwrap() >= 3);
        // New records until a recycled file is written into, then until some are unsynced.
        let mut n = 0;
        let mut unsynced = false;
        while log.storage().inner().stats().creates_from_spare < 2 || !unsynced {
            assert!(
                n < 20_000,
                "seed {seed}: never rolled into the recycled files"
            );
            appended.push((log.append(&payload(n, false)).unwrap(), payload(n, false)));
            n += 1;
            if n % (50 + seed) == 0 {
                log.sync().unwrap();
            }
            unsynced = log.storage().unsynced_writes() > 0;
        }
        let durable = log.durable_lsn();
        let mut storage = log.into_storage();
        storage.crash(seed).expect("crash");
        drop(storage);

        // Strict: corruption would fail the open.
        let (mut log, report) = open_faulty(dir.path());
        cuts += u64::from(report.cut.is_some());
        let mut read = Vec::new();
        log.read_from(Lsn::FIRST, |lsn, p| read.push((lsn, p.to_vec())))
            .unwrap();
        let first = read.first().unwrap().0;
        assert!(
            first > Lsn::FIRST && first <= truncated_below,
            "seed {seed}"
        );
        let expected: Vec<_> = appended.iter().filter(|r| r.0 >= first).collect();
        let durable_count = expected.iter().take_while(|r| r.0 <= durable).count();
        assert!(
            read.len() >= durable_count,
            "seed {seed}: synced records lost"
        );
        assert!(
            read.len() <= expected.len(),
            "seed {seed}: records from nowhere"
        );
        for (got, want) in read.iter().zip(&expected) {
            assert!(got == *want, "seed {seed}: LSN {} differs", got.0);
        }
        // The log goes on over the cut.
        let lsn = log.append(b"after").unwrap();
        assert_eq!(log.sync().unwrap(), lsn);
    }
    // Not a requirement, but a sign the cuts hit records: some seeds cut a torn tail.
    eprintln!("{cuts} of {seeds} power cuts left a torn tail");
}
