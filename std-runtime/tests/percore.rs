//! Per-core logs end to end: writer threads on real files with epochs, a crash, recovery of each
//! core's records in order with their epochs and boundaries, the merged stream; power cuts on the
//! simulated device; the set's description and the misuse that must be an error.
#![cfg(feature = "file")]

mod common;

use lamina::{
    CoreRecord, CoreWalWriter, EpochBoundary, Error, Lsn, Options, PerCoreRecovery,
    PerCoreWalManager, SegmentStorage,
};
use lamina_tests::sim::SimStorage;
use std::path::Path;

const CORES: usize = 4;
const EPOCHS: u64 = 5;
const PER_EPOCH: u64 = 40;
const MAX_PAYLOAD: u32 = 200;

/// Small segments, so that segments roll over inside an epoch and start after its marker.
fn options() -> Options {
    common::small_options(4 * 1024, MAX_PAYLOAD)
}

/// A payload that names its core, epoch and index, 20 to 200 bytes long.
fn payload(core: usize, epoch: u64, i: u64) -> Vec<u8> {
    let mut p = format!("core {core} epoch {epoch} record {i} ").into_bytes();
    let len = 20 + (i as usize * 37 + core * 11) % (MAX_PAYLOAD as usize - 20);
    p.resize(len.max(p.len()), b'a' + (i % 26) as u8);
    p
}

/// One record appended to a core's log, in append order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Appended {
    Marker {
        epoch: u64,
        lsn: Lsn,
    },
    Data {
        epoch: u64,
        lsn: Lsn,
        payload: Vec<u8>,
    },
}

impl Appended {
    fn lsn(&self) -> Lsn {
        match self {
            Appended::Marker { lsn, .. } | Appended::Data { lsn, .. } => *lsn,
        }
    }
}

/// What a writer did: everything appended, and the durable LSN the last sync returned.
#[derive(Debug, Default)]
struct History {
    appended: Vec<Appended>,
    synced: Lsn,
}

/// Epochs `first..=last`, `PER_EPOCH` records each, a sync after each epoch; then, unless
/// `tail` is 0, one more epoch of `tail` records that is never synced.
fn write_epochs<S: SegmentStorage>(
    writer: &mut CoreWalWriter<S>,
    epochs: std::ops::RangeInclusive<u64>,
    tail: u64,
    history: &mut History,
) {
    let last = *epochs.end();
    for epoch in epochs {
        write_epoch(writer, epoch, PER_EPOCH, history);
        history.synced = writer.sync().expect("sync");
        assert_eq!(writer.epoch(), epoch);
    }
    if tail > 0 {
        write_epoch(writer, last + 1, tail, history);
    }
}

/// Begins `epoch` and appends `records` records in it, noting each in `history`.
fn write_epoch<S: SegmentStorage>(
    writer: &mut CoreWalWriter<S>,
    epoch: u64,
    records: u64,
    history: &mut History,
) {
    let core = writer.core();
    let lsn = writer.begin_epoch(epoch).expect("begin_epoch");
    history.appended.push(Appended::Marker { epoch, lsn });
    for i in 0..records {
        let p = payload(core, epoch, i);
        let lsn = writer.append(&p).expect("append");
        history.appended.push(Appended::Data {
            epoch,
            lsn,
            payload: p,
        });
    }
}

fn read_core<S: SegmentStorage>(
    manager: &mut PerCoreWalManager<S>,
    core: usize,
) -> Vec<(u64, Lsn, Vec<u8>)> {
    let mut out = Vec::new();
    manager
        .read_core(core, Lsn::FIRST, |r: CoreRecord<'_>| {
            assert_eq!(r.core, core);
            out.push((r.epoch, r.lsn, r.payload.to_vec()));
        })
        .expect("read_core");
    out
}

/// Checks a recovered set against what its writers appended: per core, the records and markers
/// recovered are a prefix (by LSN) of those appended, holding at least everything synced, each
/// data record with the epoch it was appended in; the merged stream is the union of the cores'
/// records, sorted by (epoch, core, LSN). Returns the epoch each core continues in.
fn check_recovered<S: SegmentStorage + Send>(
    manager: &mut PerCoreWalManager<S>,
    recovery: &PerCoreRecovery,
    histories: &[History],
) -> Vec<u64> {
    assert_eq!(manager.cores(), histories.len());
    let mut union = Vec::new();
    let mut epochs = Vec::new();
    for (core, history) in histories.iter().enumerate() {
        let found = recovery.core(core).expect("core recovery");
        let records = read_core(manager, core);
        assert_eq!(found.records, records.len() as u64, "core {core}");

        let mut recovered: Vec<Appended> = found
            .boundaries
            .iter()
            .map(|b| Appended::Marker {
                epoch: b.epoch,
                lsn: b.lsn,
            })
            .chain(records.iter().map(|(epoch, lsn, payload)| Appended::Data {
                epoch: *epoch,
                lsn: *lsn,
                payload: payload.clone(),
            }))
            .collect();
        recovered.sort_by_key(Appended::lsn);
        assert!(
            recovered.len() <= history.appended.len()
                && recovered[..] == history.appended[..recovered.len()],
            "core {core}: the recovered records are not a prefix of those appended"
        );
        let synced = history
            .appended
            .iter()
            .filter(|a| a.lsn() <= history.synced)
            .count();
        assert!(
            recovered.len() >= synced,
            "core {core}: {} records recovered, {synced} were synced",
            recovered.len()
        );
        let last_epoch = found.boundaries.last().map_or(0, |b| b.epoch);
        assert_eq!(found.epoch, last_epoch, "core {core}");
        epochs.push(found.epoch);
        union.extend(records.into_iter().map(|(e, l, p)| (e, core, l, p)));
    }

    let mut merged = Vec::new();
    manager
        .read_merged(|r| merged.push((r.epoch, r.core, r.lsn, r.payload.to_vec())))
        .expect("read_merged");
    assert!(
        merged
            .windows(2)
            .all(|w| (w[0].0, w[0].1, w[0].2) < (w[1].0, w[1].1, w[1].2)),
        "the merged stream is not sorted by (epoch, core, lsn)"
    );
    union.sort_by_key(|(e, c, l, _)| (*e, *c, *l));
    assert_eq!(
        merged, union,
        "the merged stream is not the union of the cores"
    );
    epochs
}

fn open_files(
    dir: &Path,
    cores: usize,
) -> (
    PerCoreWalManager<lamina::file_backend::FileStorage>,
    PerCoreRecovery,
) {
    PerCoreWalManager::open(dir, cores, options()).expect("open the per-core set")
}

#[test]
fn four_writer_threads_with_epochs_crash_and_recover_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (manager, recovery) = open_files(dir.path(), CORES);
    assert_eq!(recovery.records(), 0);
    assert!(recovery.cores.iter().all(|c| c.epoch == 0));

    let threads: Vec<_> = manager
        .writers()
        .into_iter()
        .map(|mut writer| {
            std::thread::spawn(move || {
                let mut history = History::default();
                // Core c leaves 0 to 3 batches' worth of an epoch unsynced.
                let tail = writer.core() as u64 * 9;
                write_epochs(&mut writer, 1..=EPOCHS, tail, &mut history);
                // Dropped without close: a crash.
                drop(writer);
                history
            })
        })
        .collect();
    let histories: Vec<History> = threads
        .into_iter()
        .map(|t| t.join().expect("writer thread"))
        .collect();

    let (mut manager, recovery) = open_files(dir.path(), CORES);
    for (core, history) in histories.iter().enumerate() {
        let markers: Vec<EpochBoundary> = history
            .appended
            .iter()
            .filter_map(|a| match a {
                Appended::Marker { epoch, lsn } if *lsn <= history.synced => Some(EpochBoundary {
                    epoch: *epoch,
                    lsn: *lsn,
                }),
                _ => None,
            })
            .collect();
        let found = &recovery.cores[core].boundaries;
        assert!(
            found.starts_with(&markers),
            "core {core}: boundaries {found:?} lack the synced markers {markers:?}"
        );
        assert!(
            recovery.cores[core].report.segments > 1,
            "core {core} never rolled over"
        );
    }
    let epochs = check_recovered(&mut manager, &recovery, &histories);

    // The writers continue in the epoch their logs ended in, and only forward.
    for (mut writer, epoch) in manager.writers().into_iter().zip(epochs) {
        assert_eq!(writer.epoch(), epoch);
        assert!(matches!(
            writer.begin_epoch(epoch),
            Err(Error::EpochNotIncreasing { current, requested, .. }) if current == epoch && requested == epoch
        ));
        writer.begin_epoch(epoch + 1).expect("next epoch");
        writer.close().expect("close");
    }
}

#[test]
fn power_cut_with_unsynced_writes_keeps_synced_records_and_epochs() {
    // `LAMINA_PERCORE_SEEDS=N` runs N seeded cuts instead of 8.
    let seeds = std::env::var("LAMINA_PERCORE_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8u64);
    let mut lost = 0;
    for seed in 0..seeds {
        let storages = (0..CORES as u64)
            .map(|c| SimStorage::new(seed * 16 + c))
            .collect();
        let (manager, _) = PerCoreWalManager::open_with(storages, options()).expect("open");
        let mut histories = Vec::new();
        let mut storages = Vec::new();
        for mut writer in manager.writers() {
            let mut history = History::default();
            write_epochs(&mut writer, 1..=3, 30, &mut history);
            let mut storage = writer.into_log().into_storage();
            storage.crash();
            storages.push(storage);
            histories.push(history);
        }
        let (mut manager, recovery) =
            PerCoreWalManager::open_with(storages, options()).expect("reopen after the cut");
        check_recovered(&mut manager, &recovery, &histories);
        let appended = histories
            .iter()
            .flat_map(|h| &h.appended)
            .filter(|a| matches!(a, Appended::Data { .. }))
            .count() as u64;
        lost += appended - recovery.records();
    }
    // The cuts did cut: otherwise this test shows nothing about unsynced writes.
    assert!(lost > 0, "no power cut lost an unsynced record");
}

#[test]
fn records_keep_their_epoch_when_the_front_of_the_log_is_truncated() {
    let storages = (0..2).map(SimStorage::new).collect();
    let (manager, _) = PerCoreWalManager::open_with(storages, options()).expect("open");
    let mut histories = Vec::new();
    let mut storages = Vec::new();
    for mut writer in manager.writers() {
        let mut history = History::default();
        write_epochs(&mut writer, 1..=4, 0, &mut history);
        // Drop the segments before the one holding epoch 3's last record: that segment starts
        // after epoch 3's marker, so only its header says which epoch its first records are in.
        let last_of_3 = history
            .appended
            .iter()
            .rev()
            .find_map(|a| match a {
                Appended::Data { epoch: 3, lsn, .. } => Some(*lsn),
                _ => None,
            })
            .expect("epoch 3");
        let deleted = writer
            .log_mut()
            .truncate_before(last_of_3)
            .expect("truncate");
        assert!(deleted > 0);
        storages.push(writer.into_log().into_storage());
        histories.push(history);
    }
    let (mut manager, recovery) =
        PerCoreWalManager::open_with(storages, options()).expect("reopen");
    for (core, history) in histories.iter().enumerate() {
        let records = read_core(&mut manager, core);
        let first = records.first().expect("records held");
        let found = &recovery.cores[core];
        let marker_3 = history
            .appended
            .iter()
            .find_map(|a| match a {
                Appended::Marker { epoch: 3, lsn } => Some(*lsn),
                _ => None,
            })
            .expect("marker 3");
        assert!(
            first.1 > marker_3,
            "core {core}: the held log still starts before epoch 3"
        );
        assert_eq!(found.first_epoch, 3, "core {core}");
        assert_eq!(
            found.boundaries.first().map(|b| b.epoch),
            Some(4),
            "core {core}"
        );
        // Every record held is one appended, with the epoch it was appended in.
        let held: Vec<_> = history
            .appended
            .iter()
            .filter_map(|a| match a {
                Appended::Data {
                    epoch,
                    lsn,
                    payload,
                } if *lsn >= first.1 => Some((*epoch, *lsn, payload.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(records, held, "core {core}");
    }
    let mut merged = Vec::new();
    manager
        .read_merged(|r| merged.push((r.epoch, r.core)))
        .expect("merged");
    assert!(merged.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn clean_close_then_reopen_continues_in_the_last_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (manager, _) = open_files(dir.path(), 2);
    for mut writer in manager.writers() {
        writer.begin_epoch(7).expect("epoch 7");
        writer.append(b"x").expect("append");
        writer.close().expect("close");
    }
    // The close sealed the segment; the reopen starts a new one whose header carries epoch 7.
    let (manager, recovery) = open_files(dir.path(), 2);
    assert!(
        recovery
            .cores
            .iter()
            .all(|c| c.epoch == 7 && c.records == 1)
    );
    for mut writer in manager.writers() {
        assert_eq!(writer.epoch(), 7);
        assert!(matches!(
            writer.begin_epoch(7),
            Err(Error::EpochNotIncreasing {
                current: 7,
                requested: 7,
                ..
            })
        ));
        writer.begin_epoch(8).expect("epoch 8");
    }
}

#[test]
fn epoch_going_backwards_is_an_error_and_writes_nothing() {
    let storages = vec![SimStorage::new(1)];
    let (manager, _) = PerCoreWalManager::open_with(storages, options()).expect("open");
    let mut writer = manager.writers().pop().expect("one writer");
    assert!(matches!(
        writer.begin_epoch(0),
        Err(Error::EpochNotIncreasing {
            core: 0,
            current: 0,
            requested: 0
        })
    ));
    let marker = writer.begin_epoch(3).expect("epoch 3");
    let data = writer.append(b"in 3").expect("append");
    for bad in [3, 2, 0] {
        assert!(matches!(
            writer.begin_epoch(bad),
            Err(Error::EpochNotIncreasing { current: 3, requested, .. }) if requested == bad
        ));
    }
    assert_eq!(writer.epoch(), 3);
    writer.sync().expect("sync");
    let storage = writer.into_log().into_storage();

    let (mut manager, recovery) =
        PerCoreWalManager::open_with(vec![storage], options()).expect("reopen");
    assert_eq!(
        recovery.cores[0].boundaries,
        vec![EpochBoundary {
            epoch: 3,
            lsn: marker
        }]
    );
    assert_eq!(
        read_core(&mut manager, 0),
        vec![(3, data, b"in 3".to_vec())]
    );
}

#[test]
fn reopen_with_another_core_count_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (manager, _) = open_files(dir.path(), CORES);
    drop(manager);
    for cores in [1, CORES - 1, CORES + 1] {
        match PerCoreWalManager::open(dir.path(), cores, options()) {
            Err(Error::CoreCountMismatch {
                stored, requested, ..
            }) => assert_eq!((stored, requested), (CORES, cores)),
            Err(e) => panic!("{cores} cores: wrong error {e}"),
            Ok(_) => panic!("{cores} cores: opened a set of {CORES}"),
        }
    }
    // The refused opens changed nothing.
    open_files(dir.path(), CORES);
}

#[test]
fn zero_cores_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        PerCoreWalManager::open(dir.path(), 0, options()),
        Err(Error::CoreSet { .. })
    ));
    assert!(matches!(
        PerCoreWalManager::<SimStorage>::open_with(Vec::new(), options()),
        Err(Error::CoreSet { .. })
    ));
}

#[test]
fn damaged_description_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open_files(dir.path(), CORES));
    let path = dir.path().join("PERCORE");
    let good = std::fs::read(&path).expect("description");
    let mut damaged = vec![
        Vec::new(),
        good[..good.len() - 1].to_vec(),
        [&good[..], b"x"].concat(),
    ];
    for byte in [0, 8, 10, 12, 16, good.len() - 1] {
        let mut d = good.clone();
        d[byte] ^= 0x10;
        damaged.push(d);
    }
    damaged.push(vec![0xff; 1 << 20]);
    for bytes in damaged {
        std::fs::write(&path, &bytes).expect("damage");
        match PerCoreWalManager::open(dir.path(), CORES, options()) {
            Err(Error::CoreSet { detail, .. }) => assert!(detail.contains("PERCORE"), "{detail}"),
            Err(e) => panic!("{} bytes: wrong error {e}", bytes.len()),
            Ok(_) => panic!("{} bytes: a damaged description was accepted", bytes.len()),
        }
    }
    std::fs::write(&path, &good).expect("restore");
    open_files(dir.path(), CORES);
}

#[test]
fn missing_core_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open_files(dir.path(), CORES));
    for core in [2, 0] {
        let core_dir = dir.path().join(format!("core-{core:03}"));
        let kept = dir.path().join("kept");
        std::fs::rename(&core_dir, &kept).expect("move the core away");
        // Twice: the first refusal must not leave a new, empty core directory behind.
        for _ in 0..2 {
            match PerCoreWalManager::open(dir.path(), CORES, options()) {
                Err(Error::CoreSet { detail, .. }) => {
                    assert!(detail.contains(&format!("core {core}")), "{detail}");
                }
                Err(e) => panic!("core {core}: wrong error {e}"),
                Ok(_) => panic!("core {core}: opened without its directory"),
            }
            assert!(!core_dir.exists(), "core {core}: a directory was created");
        }
        std::fs::rename(&kept, &core_dir).expect("move the core back");
    }
    open_files(dir.path(), CORES);
}

#[test]
fn core_directories_without_a_description_beyond_the_count_are_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open_files(dir.path(), CORES));
    std::fs::remove_file(dir.path().join("PERCORE")).expect("remove the description");
    assert!(matches!(
        PerCoreWalManager::open(dir.path(), 2, options()),
        Err(Error::CoreSet { .. })
    ));
    // Logs without a description: it was lost (a set's logs are created only after it).
    match PerCoreWalManager::open(dir.path(), CORES, options()) {
        Err(Error::CoreSet { detail, .. }) => {
            assert!(detail.contains("description was lost"), "{detail}")
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a set of logs without its description"),
    }
    // Core directories without logs or a description: a creation cut short, taken up.
    let cut_short = tempfile::tempdir().expect("tempdir");
    for core in 0..CORES {
        std::fs::create_dir(cut_short.path().join(format!("core-{core:03}"))).expect("mkdir");
    }
    open_files(cut_short.path(), CORES);
    assert!(cut_short.path().join("PERCORE").exists());
}

#[test]
fn swapped_core_directories_are_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open_files(dir.path(), 2));
    let (a, b, t) = (
        dir.path().join("core-000"),
        dir.path().join("core-001"),
        dir.path().join("tmp"),
    );
    std::fs::rename(&a, &t).expect("swap");
    std::fs::rename(&b, &a).expect("swap");
    std::fs::rename(&t, &b).expect("swap");
    match PerCoreWalManager::open(dir.path(), 2, options()) {
        Err(Error::CoreSet { detail, .. }) => {
            assert!(detail.contains("belongs to core 1"), "{detail}")
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a set whose core directories were swapped"),
    }
}

#[test]
fn a_core_directory_of_another_set_is_refused() {
    let ours = tempfile::tempdir().expect("tempdir");
    let theirs = tempfile::tempdir().expect("tempdir");
    drop(open_files(ours.path(), 2));
    drop(open_files(theirs.path(), 2));
    let core = ours.path().join("core-001");
    std::fs::remove_dir_all(&core).expect("remove");
    std::fs::rename(theirs.path().join("core-001"), &core).expect("move theirs in");
    match PerCoreWalManager::open(ours.path(), 2, options()) {
        Err(Error::CoreSet { detail, .. }) => {
            assert!(detail.contains("belongs to another set"), "{detail}")
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a set holding another set's core directory"),
    }
}

#[test]
fn second_opener_of_a_set_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_held, _) = open_files(dir.path(), 2);
    assert!(matches!(
        PerCoreWalManager::open(dir.path(), 2, options()),
        Err(Error::Storage { .. })
    ));
}

#[test]
fn core_out_of_range_is_an_error() {
    let storages = vec![SimStorage::new(1), SimStorage::new(2)];
    let (mut manager, _) = PerCoreWalManager::open_with(storages, options()).expect("open");
    assert!(matches!(
        manager.read_core(2, Lsn::FIRST, |_| {}),
        Err(Error::NoSuchCore { core: 2, cores: 2 })
    ));
}

#[test]
fn writers_are_send() {
    fn check<T: Send>() {}
    check::<CoreWalWriter<lamina::file_backend::FileStorage>>();
    check::<CoreWalWriter<SimStorage>>();
}

#[test]
fn merge_orders_by_epoch_then_core_and_passes_over_an_empty_core() {
    let storages = (0..3).map(SimStorage::new).collect();
    let (manager, _) = PerCoreWalManager::open_with(storages, options()).expect("open");
    let mut writers = manager.writers();
    // Core 0: epochs 1 and 3; core 1: nothing; core 2: records before any marker (epoch 0),
    // then epochs 2 and 3.
    let plan: [&[(u64, &[u8])]; 3] = [
        &[(1, b"a1"), (1, b"a2"), (3, b"a3")],
        &[],
        &[(0, b"c0"), (2, b"c2"), (3, b"c3"), (3, b"c4")],
    ];
    for (writer, records) in writers.iter_mut().zip(plan) {
        for &(epoch, payload) in records {
            if epoch > writer.epoch() {
                writer.begin_epoch(epoch).expect("begin_epoch");
            }
            writer.append(payload).expect("append");
        }
        writer.sync().expect("sync");
    }
    let storages = writers
        .into_iter()
        .map(|w| w.into_log().into_storage())
        .collect();
    let (mut manager, recovery) =
        PerCoreWalManager::open_with(storages, options()).expect("reopen");
    assert_eq!(recovery.cores[1].records, 0);
    assert_eq!(recovery.cores[2].first_epoch, 0);
    let mut merged = Vec::new();
    manager
        .read_merged(|r| merged.push((r.epoch, r.core, r.payload.to_vec())))
        .expect("merged");
    let expected: Vec<(u64, usize, Vec<u8>)> = [
        (0, 2, "c0"),
        (1, 0, "a1"),
        (1, 0, "a2"),
        (2, 2, "c2"),
        (3, 0, "a3"),
        (3, 2, "c3"),
        (3, 2, "c4"),
    ]
    .into_iter()
    .map(|(e, c, p)| (e, c, p.as_bytes().to_vec()))
    .collect();
    assert_eq!(merged, expected);
}

/// Three cores on simulated devices, each with epochs 1 and 2 of `PER_EPOCH` records synced;
/// returns the devices.
fn three_cores_of_two_epochs() -> Vec<SimStorage> {
    let storages = (0..3).map(SimStorage::new).collect();
    let (manager, _) = PerCoreWalManager::open_with(storages, options()).expect("open");
    let mut storages = Vec::new();
    for mut writer in manager.writers() {
        write_epochs(&mut writer, 1..=2, 0, &mut History::default());
        storages.push(writer.into_log().into_storage());
    }
    storages
}

#[test]
fn read_error_in_one_core_fails_the_merge_without_hanging() {
    // More records than the merge lets a reader run ahead, so the other readers block.
    let storages = three_cores_of_two_epochs();
    let (mut manager, _) = PerCoreWalManager::open_with(storages, options()).expect("reopen");
    // Every read of the merge failing in turn: the first reads are segment headers' (finding
    // where to start), later ones frames'. Each failure ends the merge with an error.
    let mut frame_errors = 0;
    for fail_at in 1.. {
        assert!(fail_at < 1000, "the merge never got past its reads");
        let core_1 = manager.log_mut(1).expect("core 1");
        core_1.storage_mut().faults.fail_read = Some(fail_at);
        let mut handed = 0;
        let result = manager.read_merged(|_| handed += 1);
        let faults = &mut manager.log_mut(1).expect("core 1").storage_mut().faults;
        let pending = faults.fail_read.take();
        match result {
            Ok(()) => {
                // Only when the fault lay beyond the merge's reads.
                assert!(
                    pending.is_some(),
                    "read {fail_at} failed, yet the merge succeeded"
                );
                assert_eq!(handed, 3 * 2 * PER_EPOCH);
                break;
            }
            Err(Error::Storage { op, .. }) => {
                assert!(op.contains("header") && op.contains("core 1"), "{op}");
            }
            Err(Error::Read { detail, .. }) => {
                assert!(detail.contains("core 1: read error"), "{detail}");
                frame_errors += 1;
            }
            Err(e) => panic!("read {fail_at} failing: {e}"),
        }
        assert!(handed < 3 * 2 * PER_EPOCH, "{handed} records handed");
        manager
            .read_core(1, Lsn::FIRST, |_| {})
            .expect("core 1 reads after the fault");
    }
    assert!(frame_errors > 0, "no frame read failed");
    assert!(matches!(
        manager.log_mut(3),
        Err(Error::NoSuchCore { core: 3, cores: 3 })
    ));
}

#[test]
fn corruption_in_one_core_fails_the_open_naming_that_core() {
    let mut storages = three_cores_of_two_epochs();
    // A bit of a record in core 2's first (sealed) segment: acknowledged data is damaged.
    storages[2].flip_bit(lamina::SegmentId(0), 200, 3);
    match PerCoreWalManager::open_with(storages, options()) {
        Err(Error::Recover { detail, damage, .. }) => {
            assert!(detail.starts_with("core 2: "), "{detail}");
            assert!(damage.is_some());
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a corrupted core was opened in strict mode"),
    }
}

#[test]
fn a_core_count_beyond_the_limit_is_an_error_before_anything_is_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    for cores in [lamina::MAX_CORES + 1, u32::MAX as usize, usize::MAX] {
        match PerCoreWalManager::open(dir.path(), cores, options()) {
            Err(Error::CoreSet { .. }) => {}
            Err(e) => panic!("{cores} cores: wrong error {e}"),
            Ok(_) => panic!("{cores} cores: opened"),
        }
    }
    let made = std::fs::read_dir(dir.path()).expect("list").count();
    assert_eq!(made, 0, "nothing is created for a refused count");
}
