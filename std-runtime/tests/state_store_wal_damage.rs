//! `WalStateStore::open_dir` with its WALs damaged by hand. `open_dir` reads each core's log once
//! after the open's recovery, scanning it as it replays it; these tests check that it finds the
//! same damage and recovers the same state, with the same report or the same error, as opening
//! the logs with their scan (`PerCoreWalManager::open`) and then replaying them
//! (`WalStateStore::open`).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lamina::snapshot::CoreReplay;
use lamina::{
    Error, FileSystemCheckpointStore, Mode, Options, PerCoreWalManager, StateStoreConfig,
    WalStateStore,
};

type Store = WalStateStore<lamina::file_backend::FileStorage, 2>;
type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn config() -> StateStoreConfig {
    let mut config = StateStoreConfig::default();
    config.incremental.buckets = 4;
    config.incremental.retain = 2;
    config
}

/// Small segments, so that each core's log has several.
fn options(mode: Mode) -> Options {
    let mut options = Options::default();
    options.config.segment_size = 16 * 1024;
    options.config.max_payload = 4096;
    options.buffer_size = 64 * 1024;
    options.mode = mode;
    options
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// Writes with two checkpoints between them, then writes in the WALs only (several segments'
/// worth); the store is then dropped as in a crash. Returns what was acknowledged.
fn fill(dir: &Path) -> Model {
    let mut store = Store::open_dir(dir, options(Mode::Strict), config()).unwrap();
    let mut model = Model::new();
    for round in 0..5u32 {
        for i in 0..300 {
            let k = key((i * 7 + round * 31) % 400);
            if (i + round) % 6 == 0 {
                store.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let v = format!("r{round}-{i}-{}", "x".repeat(60)).into_bytes();
                store.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        if round < 2 {
            store.checkpoint().unwrap();
        }
    }
    drop(store.into_writers());
    model
}

/// What an open gave: the state and each core's replay, or the error (its text, with the
/// directory opened replaced by `<dir>`).
#[derive(Debug, PartialEq)]
enum Opened {
    Store(Model, Vec<CoreReplay>),
    Failed(String),
}

fn outcome(result: Result<Store, Error>, dir: &Path) -> Opened {
    match result {
        Ok(store) => {
            let state = store
                .range(..)
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            let replays = store.recovery().cores.clone();
            drop(store.into_writers());
            Opened::Store(state, replays)
        }
        Err(e) => Opened::Failed(e.to_string().replace(&dir.display().to_string(), "<dir>")),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Opens a copy of `dir` with `open_dir`, another with the logs' scan at the open then the
/// replay, checks that both give the same, and returns it.
fn open_both(dir: &Path, mode: Mode) -> Opened {
    let copies = tempfile::tempdir().unwrap();
    let (once, scanned) = (copies.path().join("once"), copies.path().join("scanned"));
    copy_dir(dir, &once);
    copy_dir(dir, &scanned);
    let read_once = outcome(Store::open_dir(&once, options(mode), config()), &once);
    let opened = PerCoreWalManager::open(scanned.join("wal"), 2, options(mode)).and_then(
        |(wal, recovery)| {
            let store = FileSystemCheckpointStore::open(scanned.join("checkpoints"))?;
            Store::open(wal, &recovery, Arc::new(store), config())
        },
    );
    let read_twice = outcome(opened, &scanned);
    assert_eq!(read_once, read_twice);
    read_once
}

/// Core `core`'s segment files, in order.
fn segments(dir: &Path, core: usize) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = fs::read_dir(dir.join("wal").join(format!("core-{core:03}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

fn flip_bit(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x04;
    file.write_all_at(&b, offset).unwrap();
}

/// The offset of the last byte of `path` that is not zero.
fn last_written(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    bytes.iter().rposition(|b| *b != 0).unwrap() as u64
}

#[test]
fn an_undamaged_store_recovers_every_acknowledged_write_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let model = fill(dir.path());
    assert!(segments(dir.path(), 0).len() > 2, "too few segments");
    match open_both(dir.path(), Mode::Strict) {
        Opened::Store(state, replays) => {
            assert!(state == model, "the recovered state differs");
            assert!(replays.iter().all(|r| r.records > 0 && r.torn_bytes == 0));
        }
        Opened::Failed(e) => panic!("{e}"),
    }
}

#[test]
fn a_torn_last_record_is_cut_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let model = fill(dir.path());
    let last = segments(dir.path(), 0).pop().unwrap();
    // Inside the last record's payload: its body no longer checks, and nothing after it
    // vouches for it.
    flip_bit(&last, last_written(&last) - 2);
    match open_both(dir.path(), Mode::Strict) {
        Opened::Store(state, replays) => {
            assert!(replays[0].torn_bytes > 0, "{replays:?}");
            assert_eq!(replays[1].torn_bytes, 0);
            // Only core 0's last write is lost.
            let lost: Vec<_> = model
                .iter()
                .filter(|(k, v)| state.get(*k) != Some(*v))
                .collect();
            assert!(lost.len() <= 1, "{} writes lost", lost.len());
        }
        Opened::Failed(e) => panic!("{e}"),
    }
}

#[test]
fn a_damaged_record_in_a_sealed_segment_fails_strict_recovery_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let segments = segments(dir.path(), 1);
    let sealed = &segments[segments.len() - 2];
    flip_bit(sealed, 4096);
    match open_both(dir.path(), Mode::Strict) {
        Opened::Failed(e) => assert!(e.contains("core 1"), "{e}"),
        Opened::Store(..) => panic!("damage in a sealed segment was not detected"),
    }
}

#[test]
fn a_damaged_record_in_a_sealed_segment_is_stepped_over_the_same_way_in_skip_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let Opened::Store(_, whole) = open_both(dir.path(), Mode::SkipCorrupt) else {
        panic!("the undamaged store did not open");
    };
    let segments = segments(dir.path(), 1);
    let sealed = &segments[segments.len() - 2];
    flip_bit(sealed, 4096);
    match open_both(dir.path(), Mode::SkipCorrupt) {
        // A record after the checkpoint was lost, and the replay went on after it.
        Opened::Store(_, replays) => {
            assert!(replays[1].records < whole[1].records, "{replays:?}");
            assert_eq!(replays[1].last_lsn, whole[1].last_lsn);
        }
        Opened::Failed(e) => panic!("{e}"),
    }
}

#[test]
fn a_skipped_whole_segment_fails_the_read_before_a_damaged_part_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let parts = dir.path().join("checkpoints").join("parts");
    for part in fs::read_dir(&parts).unwrap() {
        let part = part.unwrap().path();
        if fs::metadata(&part).unwrap().len() > 64 {
            flip_bit(&part, 40);
        }
    }
    let Opened::Failed(e) = open_both(dir.path(), Mode::SkipCorrupt) else {
        panic!("damaged parts were loaded");
    };
    assert!(e.contains("part"), "{e}");
    // A damaged header: `SkipCorrupt` recovery skips the segment whole, and a log with a hole
    // cannot be read back, so the set does not open; that error comes before the parts'.
    let segments = segments(dir.path(), 1);
    flip_bit(&segments[segments.len() - 2], 20);
    let Opened::Failed(e) = open_both(dir.path(), Mode::SkipCorrupt) else {
        panic!("a log with a skipped segment was read back");
    };
    assert!(e.contains("core 1") && e.contains("bad header"), "{e}");
}
