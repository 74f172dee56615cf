//! `WalStateStore` on the file backend: writes, checkpoints, crashes and reopens.

use std::collections::BTreeMap;

use lamina::{Options, StateStoreConfig, WalStateStore};

type Store = WalStateStore<lamina::file_backend::FileStorage, 2>;

fn config() -> StateStoreConfig {
    let mut config = StateStoreConfig::default();
    config.incremental.buckets = 8;
    config.incremental.retain = 2;
    config
}

fn options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 256 * 1024;
    options.config.max_payload = 128 * 1024;
    options
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

/// Records the store's recovery replayed, over every core.
fn replayed(store: &Store) -> u64 {
    store.recovery().cores.iter().map(|c| c.records).sum()
}

fn check(store: &Store, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    assert_eq!(store.len(), model.len());
    for (k, v) in model {
        assert_eq!(
            store.get(k),
            Some(v.as_slice()),
            "key {:?}",
            String::from_utf8_lossy(k)
        );
    }
    let all: Vec<(Vec<u8>, Vec<u8>)> = store
        .range(..)
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
    assert_eq!(all, expected);
}

#[test]
fn writes_checkpoints_and_a_crash_recover_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let mut store = Store::open_dir(dir.path(), options(), config()).unwrap();
    for round in 0..6u32 {
        for i in 0..300 {
            let k = key((i * 7 + round * 13) % 500);
            if (i + round) % 5 == 0 {
                store.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let v = format!("v{round}-{i}").into_bytes();
                store.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        let committed = store.checkpoint().unwrap();
        assert_eq!(committed.checkpoint.id, u64::from(round) + 1);
        assert!(committed.bytes_written > 0);
        check(&store, &model);
    }
    // Writes after the last checkpoint are in the WALs only.
    for i in 0..50 {
        let v = b"after".to_vec();
        store.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    drop(store.into_writers());
    let store = Store::open_dir(dir.path(), options(), config()).unwrap();
    let report = store.recovery();
    assert_eq!(report.checkpoint.map(|c| c.id), Some(6));
    assert!(report.skipped.is_empty());
    assert_eq!(report.cores.iter().map(|c| c.records).sum::<u64>(), 50);
    check(&store, &model);
    // Only the retained manifests are left.
    let manifests = store.checkpoint_store().list_manifests().unwrap();
    assert_eq!(manifests, vec![5, 6]);
}

#[test]
fn a_small_change_writes_a_small_delta() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config.incremental.buckets = 32;
    let mut store = Store::open_dir(dir.path(), options(), config).unwrap();
    let value = vec![7u8; 200];
    store
        .apply((0..2000).map(|i| lamina::Op::Put(key(i), value.clone())))
        .unwrap();
    let full = store.checkpoint().unwrap();
    store
        .apply((0..20).map(|i| lamina::Op::Put(key(i * 100), vec![8u8; 200])))
        .unwrap();
    let small = store.checkpoint().unwrap();
    // 1 % of the keys changed: the delta, plus at most one compacted bucket per core.
    assert!(
        small.bytes_written * 100 < full.bytes_written * 10,
        "full {} small {}",
        full.bytes_written,
        small.bytes_written
    );
    let nothing = store.checkpoint().unwrap();
    assert_eq!(nothing.parts_written, 0);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> =
        (0..2000).map(|i| (key(i), value.clone())).collect();
    for i in 0..20 {
        model.insert(key(i * 100), vec![8u8; 200]);
    }
    drop(store.into_writers());
    let store = Store::open_dir(dir.path(), options(), config).unwrap();
    check(&store, &model);
}

#[test]
fn every_key_changed_rewrites_every_bucket_and_writes_no_delta() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_dir(dir.path(), options(), config()).unwrap();
    let buckets = config().incremental.buckets as usize;
    for round in 0..3u8 {
        store
            .apply((0..2000).map(|i| lamina::Op::Put(key(i), vec![round; 100])))
            .unwrap();
        let committed = store.checkpoint().unwrap();
        // A delta holding every key of a bucket is as large as its base: the base is
        // rewritten instead, every round (2 cores).
        assert_eq!(committed.parts_written, 2 * buckets, "round {round}");
    }
}

#[test]
fn a_delta_cut_into_parts_recovers_every_key_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config.incremental.delta_part_bytes = 512;
    let mut model = BTreeMap::new();
    let mut store = Store::open_dir(dir.path(), options(), config).unwrap();
    for round in 0..4u32 {
        for i in (0..600).filter(|i| round == 0 || i % (round + 2) == 0) {
            let v = format!("round {round} key {i}").into_bytes();
            store.put(&key(i), &v).unwrap();
            model.insert(key(i), v);
        }
        if round == 2 {
            store.delete(&key(6)).unwrap();
            model.remove(&key(6));
        }
        let committed = store.checkpoint().unwrap();
        if round > 0 {
            // At most one base rewritten per core (compactions 1): the rest are deltas, of
            // 512 bytes or so each.
            assert!(
                committed.parts_written > 2 + 2,
                "round {round}: {committed:?}"
            );
        }
    }
    drop(store.into_writers());
    let store = Store::open_dir(dir.path(), options(), config).unwrap();
    assert_eq!(replayed(&store), 0);
    check(&store, &model);
}

#[test]
fn an_entry_larger_than_the_wals_max_payload_is_refused_and_the_core_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options();
    options.config.max_payload = 1024;
    let mut store = Store::open_dir(dir.path(), options, config()).unwrap();
    store.put(b"k", b"before").unwrap();
    // Within the queue's limit, beyond the WAL's: refused before it is queued.
    let big = vec![1u8; 2000];
    match store.put(b"k", &big) {
        Err(lamina::Error::TooLarge { len, max }) => assert_eq!((len, max), (2006, 1024)),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get(b"k"), Some(&b"before"[..]));
    match store.apply([
        lamina::Op::Put(b"a".to_vec(), b"1".to_vec()),
        lamina::Op::Put(b"k".to_vec(), big.clone()),
    ]) {
        Err(lamina::Error::TooLarge { .. }) => {}
        other => panic!("{other:?}"),
    }
    // The core is not wedged by the refused entry: writes and checkpoints go on.
    store.put(b"k", b"after").unwrap();
    store.checkpoint().unwrap();
    store.put(b"z", b"last").unwrap();
    drop(store.into_writers());
    let store = Store::open_dir(dir.path(), options, config()).unwrap();
    assert_eq!(store.get(b"k"), Some(&b"after"[..]));
    assert_eq!(store.get(b"z"), Some(&b"last"[..]));
    // "a" came before the refused entry in its batch: applied, and durable with the writes
    // after it.
    assert_eq!(store.get(b"a"), Some(&b"1"[..]));
}

#[test]
fn wal_deletes_and_put_then_delete_over_a_checkpoint_survive_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_dir(dir.path(), options(), config()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = (0..200).map(|i| (key(i), b"c".to_vec())).collect();
    store
        .apply(
            model
                .iter()
                .map(|(k, v)| lamina::Op::Put(k.clone(), v.clone())),
        )
        .unwrap();
    store.checkpoint().unwrap();
    // After the checkpoint, in the WALs only: a delete of a key only the checkpoint holds, a
    // put then a delete of a checkpointed key and of a new key, overwrites, a new key, and a
    // delete of a key never held.
    store.delete(&key(5)).unwrap();
    store.put(&key(7), b"w").unwrap();
    store.delete(&key(7)).unwrap();
    store.put(&key(1000), b"new").unwrap();
    store.delete(&key(1000)).unwrap();
    for round in 0..3u8 {
        store.put(&key(9), &[round; 40]).unwrap();
    }
    store.put(&key(2000), b"added").unwrap();
    store.delete(&key(3000)).unwrap();
    model.remove(&key(5));
    model.remove(&key(7));
    model.insert(key(9), vec![2; 40]);
    model.insert(key(2000), b"added".to_vec());
    drop(store.into_writers());

    let mut store = Store::open_dir(dir.path(), options(), config()).unwrap();
    assert_eq!(replayed(&store), 10);
    check(&store, &model);
    // The keys the replay touched are the next checkpoint's changes: reopened from it alone
    // (nothing left to replay), the deletes stay deleted and the puts stay put.
    store.checkpoint().unwrap();
    drop(store.into_writers());
    let store = Store::open_dir(dir.path(), options(), config()).unwrap();
    assert_eq!(store.recovery().checkpoint.map(|c| c.id), Some(2));
    assert_eq!(replayed(&store), 0);
    check(&store, &model);
}

#[test]
fn large_parts_are_padded_to_whole_blocks_recover_and_a_bucket_changed_whole_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config.incremental.buckets = 2;
    let mut store = Store::open_dir(dir.path(), options(), config).unwrap();
    // About 100 KiB per bucket (2 cores, 2 buckets each): over the 64 KiB from which parts
    // are padded.
    let mut model = BTreeMap::new();
    for round in 0..2u8 {
        store
            .apply((0..3000).map(|i| lamina::Op::Put(key(i), vec![round; 120])))
            .unwrap();
        model.extend((0..3000).map(|i| (key(i), vec![round; 120])));
        let committed = store.checkpoint().unwrap();
        // Every key changed: every base is rewritten, though its padding hides its exact
        // entry bytes from the manifest.
        assert_eq!(committed.parts_written, 2 * 2, "round {round}");
    }
    let parts = dir.path().join("checkpoints").join("parts");
    let mut padded = 0;
    for entry in std::fs::read_dir(&parts).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let header = lamina::snapshot::part::Header::parse(&bytes).unwrap();
        assert!(bytes.len() >= 64 << 10);
        assert!(header.padded, "a part of {} bytes", bytes.len());
        assert_eq!(bytes.len() % 4096, 0);
        padded += 1;
    }
    assert_eq!(padded, 2 * 2 * config.incremental.retain);
    drop(store.into_writers());
    let store = Store::open_dir(dir.path(), options(), config).unwrap();
    check(&store, &model);
}
