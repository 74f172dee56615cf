//! `WalStateStore` on the file backend with its checkpoint files damaged by hand: a damaged part
//! is an error naming its file; a damaged newest manifest makes recovery fall back to the one
//! before, say so, and still recover every acknowledged write (the WALs are truncated only
//! below the oldest kept checkpoint).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lamina::{
    CheckpointError, Error, Failure, ManifestDamage, Options, StateStoreConfig, WalStateStore,
    manifest_file_name,
};

type Store = WalStateStore<lamina::file_backend::FileStorage, 2>;
type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn config(retain: usize) -> StateStoreConfig {
    let mut config = StateStoreConfig::default();
    config.incremental.buckets = 4;
    config.incremental.retain = retain;
    config
}

/// Small segments, so that truncating below a checkpoint deletes some.
fn options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 16 * 1024;
    options.config.max_payload = 4096;
    options.buffer_size = 64 * 1024;
    options
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// `rounds` rounds of writes, each ending with a checkpoint, then writes in the WALs only;
/// the store is then dropped as in a crash. Returns what was acknowledged.
fn fill(dir: &Path, retain: usize, rounds: u32) -> Model {
    let mut store = Store::open_dir(dir, options(), config(retain)).unwrap();
    let mut model = Model::new();
    for round in 0..rounds {
        for i in 0..200 {
            let k = key((i * 7 + round * 31) % 300);
            if (i + round) % 6 == 0 {
                store.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let v = format!("r{round}-{i}-{}", "x".repeat(40)).into_bytes();
                store.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        store.checkpoint().unwrap();
    }
    for i in 0..30 {
        let v = b"after the last checkpoint".to_vec();
        store.put(&key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    drop(store.into_writers());
    model
}

fn assert_holds(store: &Store, model: &Model) {
    let got: Model = store
        .range(..)
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert!(&got == model, "the recovered state differs");
}

fn manifests_dir(dir: &Path) -> PathBuf {
    dir.join("checkpoints").join("manifests")
}

/// The parts in the store (with one checkpoint kept, all of them are the latest's).
fn parts(dir: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = fs::read_dir(dir.join("checkpoints").join("parts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    parts.sort();
    parts
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

/// Damages one part of the only kept checkpoint with `damage` and expects opening to fail with
/// an error naming that part's file.
fn damaged_part_is_named(damage: impl FnOnce(&Path), failure: Failure) {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 1, 3);
    let parts = parts(dir.path());
    assert!(parts.len() > 1, "{parts:?}");
    let victim = &parts[parts.len() / 2];
    damage(victim);
    match Store::open_dir(dir.path(), options(), config(1)) {
        Err(Error::Checkpoint { detail, failure: f }) => {
            assert_eq!(f, failure, "{detail}");
            let path = victim.display().to_string();
            assert!(detail.contains(&path), "{detail} does not name {path}");
        }
        Err(other) => panic!("not a checkpoint error: {other}"),
        Ok(_) => panic!("a damaged part was loaded"),
    }
}

#[test]
fn a_bit_flipped_part_fails_recovery_naming_its_file() {
    damaged_part_is_named(
        |p| {
            let len = fs::metadata(p).unwrap().len();
            flip_bit(p, len / 2);
        },
        Failure::Other,
    );
}

#[test]
fn a_truncated_part_fails_recovery_naming_its_file() {
    damaged_part_is_named(
        |p| {
            let len = fs::metadata(p).unwrap().len();
            OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len - 3)
                .unwrap();
        },
        Failure::Other,
    );
}

#[test]
fn a_deleted_part_fails_recovery_naming_its_file() {
    damaged_part_is_named(|p| fs::remove_file(p).unwrap(), Failure::NotFound);
}

/// Damages the newest of two kept manifests with `damage`: recovery loads the one before,
/// reports the damaged one as skipped, and holds every acknowledged write; the store then goes
/// on checkpointing past it.
fn falls_back_past_the_newest_manifest(
    damage: impl FnOnce(&Path),
    expect: impl Fn(&ManifestDamage) -> bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = fill(dir.path(), 2, 5);
    let newest = manifests_dir(dir.path()).join(manifest_file_name(5));
    assert!(
        manifests_dir(dir.path())
            .join(manifest_file_name(4))
            .exists()
    );
    assert!(
        !manifests_dir(dir.path())
            .join(manifest_file_name(3))
            .exists()
    );
    // The garbage collection truncated the WALs (their first segments are gone), below
    // checkpoint 4's position only.
    for core in ["core-000", "core-001"] {
        let first = dir
            .path()
            .join("wal")
            .join(core)
            .join("0000000000000000.seg");
        assert!(!first.exists(), "{} was not truncated", first.display());
    }
    damage(&newest);
    let mut store = Store::open_dir(dir.path(), options(), config(2)).unwrap();
    let report = store.recovery();
    assert_eq!(report.checkpoint.map(|c| c.id), Some(4));
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    let skipped = &report.skipped[0];
    assert_eq!(skipped.id, 5);
    match &skipped.error {
        CheckpointError::ManifestDamaged {
            id: 5,
            location,
            damage,
        } => {
            assert!(expect(damage), "{damage:?}");
            assert!(location.ends_with(&manifest_file_name(5)), "{location}");
        }
        other => panic!("{other:?}"),
    }
    assert_holds(&store, &model);
    // The WAL held everything since checkpoint 4: the replay was longer than after 5.
    assert!(report.cores.iter().map(|c| c.records).sum::<u64>() > 30);

    // The store goes on: the next checkpoint has a new id, and a reopen finds it.
    store.put(b"later", b"write").unwrap();
    model.insert(b"later".to_vec(), b"write".to_vec());
    let next = store.checkpoint().unwrap();
    assert_eq!(next.checkpoint.id, 6);
    drop(store.into_writers());
    let store = Store::open_dir(dir.path(), options(), config(2)).unwrap();
    assert_eq!(store.recovery().checkpoint.map(|c| c.id), Some(6));
    assert!(store.recovery().skipped.is_empty());
    assert_holds(&store, &model);
}

#[test]
fn a_bit_flipped_newest_manifest_falls_back_to_the_previous_one() {
    falls_back_past_the_newest_manifest(
        |p| flip_bit(p, 40),
        |d| matches!(d, ManifestDamage::Decode(_)),
    );
}

#[test]
fn a_truncated_newest_manifest_falls_back_to_the_previous_one() {
    falls_back_past_the_newest_manifest(
        |p| {
            let len = fs::metadata(p).unwrap().len();
            OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        },
        |d| matches!(d, ManifestDamage::Decode(_)),
    );
}

#[test]
fn an_emptied_newest_manifest_falls_back_to_the_previous_one() {
    falls_back_past_the_newest_manifest(
        |p| fs::write(p, b"").unwrap(),
        |d| matches!(d, ManifestDamage::Decode(_)),
    );
}

#[test]
fn the_only_kept_manifest_damaged_is_refused_not_a_partial_state() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 1, 4);
    let only = manifests_dir(dir.path()).join(manifest_file_name(4));
    flip_bit(&only, 40);
    // Nothing to fall back to, and the WALs were truncated below checkpoint 4: replaying them
    // alone would give a partial state, so recovery refuses.
    match Store::open_dir(dir.path(), options(), config(1)) {
        Err(e @ Error::Truncated { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("WAL holds records from LSN") && text.contains("missing or damaged"),
                "{text}"
            );
        }
        Err(other) => panic!("not a truncation error: {other}"),
        Ok(store) => panic!(
            "recovered {} keys from a truncated WAL with no checkpoint",
            store.len()
        ),
    }
}

#[test]
fn deltas_of_one_checkpoint_whose_keys_overlap_are_refused_naming_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(1);
    // Small delta parts: a checkpoint's delta is cut into several.
    config.incremental.delta_part_bytes = 256;
    let mut store = Store::open_dir(dir.path(), options(), config).unwrap();
    let value = |round: u32| format!("r{round}-{}", "y".repeat(40)).into_bytes();
    for i in 0..300 {
        store.put(&key(i), &value(0)).unwrap();
    }
    store.checkpoint().unwrap();
    for i in (0..300).step_by(3) {
        store.put(&key(i), &value(1)).unwrap();
    }
    let id = store.checkpoint().unwrap().checkpoint.id;
    drop(store.into_writers());
    // The manifest rewritten with two deltas of one core and checkpoint swapped (their
    // partitions stay in order): each part is whole, but the later one's keys come first.
    let path = manifests_dir(dir.path()).join(manifest_file_name(id));
    let bytes = fs::read(&path).unwrap();
    let manifest = lamina_core::manifest::Manifest::decode(&bytes).unwrap();
    let mut parts: Vec<lamina_core::manifest::Part<'_>> = manifest.parts.iter().collect();
    let pair = (1..parts.len())
        .find(|&i| {
            let (a, b) = (&parts[i - 1], &parts[i]);
            a.operator == "kv-delta"
                && b.operator == "kv-delta"
                && a.partition >> 16 == b.partition >> 16
                && a.written_by == id
                && b.written_by == id
        })
        .expect("a core with two deltas written by the last checkpoint");
    let (a, b) = (parts[pair - 1], parts[pair]);
    parts[pair - 1] = lamina_core::manifest::Part {
        partition: a.partition,
        ..b
    };
    parts[pair] = lamina_core::manifest::Part {
        partition: b.partition,
        ..a
    };
    // Read second, it is the one found overlapping.
    let swapped_key = a.key.to_owned();
    let tampered = lamina_core::manifest::Manifest {
        parts: lamina_core::manifest::List::new(&parts),
        ..manifest
    };
    let mut out = vec![0u8; tampered.encoded_len()];
    let len = tampered.encode(&mut out).unwrap();
    out.truncate(len);
    fs::write(&path, &out).unwrap();
    match Store::open_dir(dir.path(), options(), config) {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("overlap"), "{text}");
            assert!(text.contains(&swapped_key), "{text}");
        }
        Ok(_) => panic!("overlapping deltas were accepted"),
    }
}
