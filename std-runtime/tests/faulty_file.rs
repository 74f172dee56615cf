//! The core's fault and crash scenarios end to end through `WriteAheadLog` on real files:
//! `FileStorage` in a temporary directory, wrapped in `FaultyStorage`, which fails the Nth write
//! or sync and, at a crash, puts back what a power cut could have left (unsynced sectors lost,
//! kept or torn). After a crash the directory is reopened by a fresh `FileStorage`.
#![cfg(feature = "file")]

use lamina::file_backend::{self, FileStorage};
use lamina::{Config, Error, Failure, Lsn, Mode, Options, SyncPolicy, WriteAheadLog};
use lamina_tests::faulty::{CrashReport, FaultyStorage};
use std::path::Path;

type Storage = FaultyStorage<FileStorage>;
type Log = WriteAheadLog<Storage>;
type Records = Vec<(Lsn, Vec<u8>)>;

const MAX_PAYLOAD: u32 = 300;
const SEGMENT_SIZE: u64 = 16 * 1024;

fn options() -> Options {
    Options {
        config: Config {
            policy: SyncPolicy::Batch {
                max_records: 24,
                max_bytes: 4096,
                max_delay: 0,
            },
            max_writes_in_flight: 8,
            linked: false,
            segment_size: SEGMENT_SIZE,
            max_payload: MAX_PAYLOAD,
            nonce_seed: 0,
        },
        mode: Mode::Strict,
        buffer_size: 16 * 1024,
        core: 0,
        log_id: None,
    }
}

/// A payload that names its generation and index, 1 to 300 bytes long.
fn payload(generation: u32, i: u64) -> Vec<u8> {
    let mut p = format!("gen {generation} record {i} ").into_bytes();
    let len = 1 + (i as usize * 37) % MAX_PAYLOAD as usize;
    p.resize(len.max(p.len()), b'a' + (i % 26) as u8);
    p.truncate(MAX_PAYLOAD as usize);
    p
}

/// The file backend on `dir`, its segments pre-zeroed or not.
fn file_storage(dir: &Path, prepared: bool) -> FileStorage {
    let size = if prepared { SEGMENT_SIZE } else { 0 };
    FileStorage::open(dir, file_backend::Options::new().prepare_size(size)).expect("open dir")
}

fn open(dir: &Path, prepared: bool) -> (Log, lamina::RecoveryReport) {
    let storage = FaultyStorage::new(file_storage(dir, prepared));
    match WriteAheadLog::open_with(storage, options()) {
        Ok(opened) => opened,
        Err(e) => panic!("open of {} failed: {e}", dir.display()),
    }
}

fn read_all(log: &mut Log) -> Records {
    let mut out = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| out.push((lsn, p.to_vec())))
        .expect("read_from");
    out
}

fn append_range(log: &mut Log, generation: u32, range: std::ops::Range<u64>) -> Records {
    range
        .map(|i| {
            let p = payload(generation, i);
            (log.append(&p).expect("append"), p)
        })
        .collect()
}

/// Crashes the log's storage with `seed`, truncating extended segments back when `truncate`
/// (a cut that lost the new sizes), and releases the directory.
fn crash(log: Log, seed: u64, truncate: bool) -> CrashReport {
    let mut storage = log.into_storage();
    let report = storage.crash(seed).expect("crash");
    let files = storage.into_inner();
    if truncate {
        for (segment, len) in &report.lengths {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(files.segment_path(*segment))
                .expect("segment file");
            file.set_len(*len).expect("truncate");
        }
    }
    drop(files);
    report
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

/// Fails the `n`th write or sync after 100 synced records with `failure`, checks that the log
/// is poisoned for good, crashes, reopens: everything acknowledged is back.
fn fault_case(write: bool, n: u64, failure: Failure, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let prepared = seed.is_multiple_of(2);
    let (mut log, _) = open(dir.path(), prepared);
    let mut appended = append_range(&mut log, 1, 0..100);
    log.sync().expect("sync");
    if write {
        log.storage_mut().fail_write(n, failure);
    } else {
        log.storage_mut().fail_sync(n, failure);
    }
    let mut i = 100;
    let err = loop {
        match log.append(&payload(1, i)) {
            Ok(lsn) => appended.push((lsn, payload(1, i))),
            Err(e) => break e,
        }
        i += 1;
        if let Some(Err(e)) = i.is_multiple_of(7).then(|| log.sync()) {
            break e;
        }
        assert!(i < 10_000, "the fault never surfaced");
    };
    let Error::Poisoned { poison, .. } = &err else {
        panic!("expected Poisoned, got {err:?}");
    };
    assert_eq!(poison.failure, failure, "{err}");
    assert!(err.to_string().contains(&failure.to_string()), "{err}");
    let acked = log.durable_lsn();
    assert!(acked >= appended[99].0);
    // Every later call says so, with the original failure.
    assert_poisoned(log.append(b"x"), failure);
    assert_poisoned(log.sync(), failure);
    assert_poisoned(log.read_from(Lsn::FIRST, |_, _| {}), failure);
    assert_poisoned(log.truncate_before(Lsn::MAX), failure);
    assert_eq!(log.durable_lsn(), acked, "nothing more became durable");
    crash(log, seed, seed.is_multiple_of(3));

    let (mut log, _) = open(dir.path(), prepared);
    let got = read_all(&mut log);
    let acked_count = appended.iter().take_while(|r| r.0 <= acked).count();
    assert!(
        got.len() >= acked_count,
        "{failure} on write {n}: acknowledged records lost ({} of {acked_count})",
        got.len()
    );
    assert_eq!(got, appended[..got.len()], "{failure} on write {n}");
    // The log goes on.
    let lsn = log.append(b"after").expect("append");
    assert_eq!(log.sync().expect("sync"), lsn);
}

#[test]
fn eio_and_enospc_on_the_nth_write_poison_the_log_and_reopen_keeps_what_was_acked() {
    for (k, n) in [1, 2, 3, 5, 9].into_iter().enumerate() {
        for failure in [Failure::Io, Failure::NoSpace] {
            fault_case(
                true,
                n,
                failure,
                k as u64 * 2 + u64::from(failure == Failure::Io),
            );
        }
    }
}

#[test]
fn eio_and_enospc_on_the_nth_sync_poison_the_log_and_reopen_keeps_what_was_acked() {
    for (k, n) in [1, 2, 3, 5, 9].into_iter().enumerate() {
        for failure in [Failure::Io, Failure::NoSpace] {
            fault_case(
                false,
                n,
                failure,
                k as u64 * 2 + u64::from(failure == Failure::Io),
            );
        }
    }
}

/// Appends records of `generation` from `from` until at least `min` are appended and the last
/// append left a write on the file that no sync covers (at most `min + 200`).
fn append_until_unsynced(log: &mut Log, generation: u32, from: u64, min: u64) -> Records {
    let mut out = Vec::new();
    let mut i = from;
    loop {
        let p = payload(generation, i);
        out.push((log.append(&p).expect("append"), p));
        i += 1;
        let done = i - from >= min && log.storage().unsynced_writes() > 0;
        if done || i - from >= min + 200 {
            return out;
        }
    }
}

#[test]
fn power_cut_keeps_every_synced_record_and_nothing_from_beyond_the_cut_comes_back() {
    let mut cuts = 0;
    let mut unsynced_crashes = 0;
    let (mut kept, mut torn, mut lost) = (0, 0, 0);
    for seed in 0..50u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let prepared = seed.is_multiple_of(2);
        let truncate = seed % 4 == 1;
        let (mut log, _) = open(dir.path(), prepared);
        let synced = append_range(&mut log, 1, 0..(40 + seed * 3));
        log.sync().expect("sync");
        let unsynced = append_until_unsynced(&mut log, 1, synced.len() as u64, 5 + seed % 40);
        unsynced_crashes += usize::from(log.storage().unsynced_writes() > 0);
        let durable = log.durable_lsn();
        let report = crash(log, seed, truncate);
        kept += report.kept;
        torn += report.torn;
        lost += report.sectors - report.kept;

        let (mut log, report) = open(dir.path(), prepared);
        cuts += u64::from(report.cut.is_some());
        let first = read_all(&mut log);
        let gen1: Records = synced.iter().chain(unsynced.iter()).cloned().collect();
        let durable_count = gen1.iter().take_while(|r| r.0 <= durable).count();
        assert!(
            first.len() >= durable_count,
            "seed {seed}: durable records lost"
        );
        assert_eq!(first, gen1[..first.len()], "seed {seed}: replay differs");

        // Append after the cut; crash again with unsynced writes.
        let second = append_range(&mut log, 2, 0..30);
        log.sync().expect("sync");
        append_until_unsynced(&mut log, 2, 30, 1 + seed % 20);
        crash(log, seed + 1_000, truncate);
        let (mut log, _) = open(dir.path(), prepared);
        let got = read_all(&mut log);
        assert_eq!(got[..first.len()], first, "seed {seed}");
        let rest = &got[first.len()..];
        assert!(
            rest.len() >= second.len(),
            "seed {seed}: second generation lost"
        );
        for (i, (lsn, p)) in rest.iter().enumerate() {
            assert_eq!(
                *p,
                payload(2, i as u64),
                "seed {seed}: LSN {lsn} is not the second generation's"
            );
        }
    }
    assert!(
        kept > 0 && torn > 0 && lost > 0,
        "sectors kept {kept}, torn {torn}, lost {lost}"
    );
    assert!(
        unsynced_crashes > 40,
        "only {unsynced_crashes} crashes lost writes"
    );
    assert!(cuts > 0, "no seed produced a torn tail");
}
