//! `ObjectsCheckpointStore` over lamina-file's `FileObjects` (two directories): the checkpoint
//! store contract through the core's `ObjectStorage`, with the damage made by hand on the files:
//! verified parts, create-only manifests, the fallback past a damaged newest manifest, and keys
//! that never leave the store.

mod common;

use lamina::file_backend::FileObjects;
use lamina::{
    CheckpointError, CheckpointStore, Failure, ManifestDamage, ObjectsCheckpointStore, PartInfo,
    StoreOp, manifest_file_name,
};
use lamina_core::crc::crc32c;
use lamina_core::manifest::DecodeError;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

type Store = ObjectsCheckpointStore<FileObjects>;

fn open(dir: &Path) -> Store {
    let parts = FileObjects::open(dir.join("parts")).expect("parts");
    let manifests = FileObjects::open(dir.join("manifests")).expect("manifests");
    ObjectsCheckpointStore::new(parts, manifests).with_root(dir.display().to_string())
}

fn part_path(dir: &Path, key: &str) -> PathBuf {
    dir.join("parts").join(key)
}

fn manifest_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("manifests").join(manifest_file_name(id))
}

/// An encoded manifest of checkpoint `id` naming one part.
fn manifest(id: u64, key: &str, size: u64, crc: u32) -> Vec<u8> {
    common::put_checkpoint::manifest_naming(id, &[key.to_owned()], &[PartInfo { size, crc }])
}

fn flip_bit(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x10;
    file.write_all_at(&b, offset).unwrap();
}

#[test]
fn part_round_trip_returns_its_size_and_crc_and_replaces_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = store.put_part("p1", b"hello parts").unwrap();
    assert_eq!(info.size, 11);
    assert_eq!(info.crc, crc32c(b"hello parts"));
    assert_eq!(
        store.read_part("p1", info.size, info.crc).unwrap(),
        b"hello parts"
    );
    let again = store.put_part("p1", b"x").unwrap();
    assert_eq!(store.read_part("p1", 1, again.crc).unwrap(), b"x");
    assert_eq!(store.list_parts().unwrap(), ["p1"]);
    store.delete_part("p1").unwrap();
    store.delete_part("p1").unwrap();
    assert!(store.list_parts().unwrap().is_empty());
}

#[test]
fn bit_flipped_part_is_a_checksum_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = store.put_part("p", &[7u8; 300]).unwrap();
    flip_bit(&part_path(dir.path(), "p"), 150);
    match store.read_part("p", info.size, info.crc).unwrap_err() {
        CheckpointError::PartChecksum { key, location, .. } => {
            assert_eq!(key, "p");
            assert!(location.ends_with("parts/p"), "{location}");
            assert!(location.starts_with(&dir.path().display().to_string()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_part_is_a_size_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = store.put_part("p", &[1u8; 100]).unwrap();
    let file = OpenOptions::new()
        .write(true)
        .open(part_path(dir.path(), "p"))
        .unwrap();
    file.set_len(40).unwrap();
    match store.read_part("p", info.size, info.crc).unwrap_err() {
        CheckpointError::PartSize {
            key,
            expected,
            actual,
            location,
        } => {
            assert_eq!((key.as_str(), expected, actual), ("p", 100, 40));
            assert!(location.ends_with("parts/p"), "{location}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn extended_part_is_a_size_error_with_its_real_length() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = store.put_part("p", &[1u8; 10]).unwrap();
    // Longer than one read chunk: the store counts it without keeping it.
    fs::write(part_path(dir.path(), "p"), vec![2u8; 200_000]).unwrap();
    match store.read_part("p", info.size, info.crc).unwrap_err() {
        CheckpointError::PartSize {
            expected, actual, ..
        } => assert_eq!((expected, actual), (10, 200_000)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_manifest_claiming_a_huge_part_reads_only_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_part("p", b"small").unwrap();
    match store.read_part("p", u64::MAX, 0).unwrap_err() {
        CheckpointError::PartSize {
            expected, actual, ..
        } => assert_eq!((expected, actual), (u64::MAX, 5)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_part_is_not_found_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store.read_part("gone", 1, 0).unwrap_err();
    assert_eq!(err.failure(), Failure::NotFound);
    match &err {
        CheckpointError::Storage {
            op: StoreOp::ReadPart,
            location,
            ..
        } => assert!(location.ends_with("parts/gone"), "{location}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_keys_are_refused_before_any_object_operation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for key in [
        "",
        "..",
        "../manifests/x",
        "a/b",
        "a\\b",
        "c:d",
        ".tmp-1-2",
        "nul\0",
    ] {
        assert!(
            matches!(
                store.put_part(key, b"x"),
                Err(CheckpointError::InvalidKey { .. } | CheckpointError::ReservedKey { .. })
            ),
            "{key:?}"
        );
        assert!(store.read_part(key, 1, 0).is_err(), "{key:?}");
        assert!(store.delete_part(key).is_err(), "{key:?}");
    }
    assert!(store.list_parts().unwrap().is_empty());
    assert!(store.list_manifests().unwrap().is_empty());
}

#[test]
fn second_publisher_of_a_manifest_gets_already_exists_and_the_first_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = manifest(1, "a", 1, 1);
    store.publish_manifest(1, &first).unwrap();
    let err = store
        .publish_manifest(1, &manifest(1, "b", 2, 2))
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::ManifestExists { id: 1, .. }),
        "{err:?}"
    );
    assert_eq!(err.failure(), Failure::AlreadyExists);
    assert_eq!(store.read_manifest(1).unwrap(), first);
    assert_eq!(store.list_manifests().unwrap(), [1]);
}

#[test]
fn publish_refuses_bytes_that_are_not_a_manifest_of_that_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store
        .publish_manifest(2, &manifest(1, "a", 1, 1))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::ManifestInvalid {
                id: 2,
                damage: ManifestDamage::IdMismatch { found: 1 }
            }
        ),
        "{err:?}"
    );
    assert!(store.publish_manifest(3, b"not a manifest").is_err());
    assert!(store.list_manifests().unwrap().is_empty());
}

/// Publishes manifests 1 to 3, damages 3 with `damage`, and checks the fallback to 2.
fn falls_back_past(damage: impl FnOnce(&Path), expect: impl Fn(&ManifestDamage) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for id in 1..=3 {
        store
            .publish_manifest(id, &manifest(id, "k", 1, 1))
            .unwrap();
    }
    damage(&manifest_path(dir.path(), 3));
    let latest = store.latest_manifest().unwrap();
    assert_eq!(latest.latest.as_ref().map(|m| m.id), Some(2));
    assert_eq!(latest.skipped.len(), 1, "{:?}", latest.skipped);
    match &latest.skipped[0].error {
        CheckpointError::ManifestDamaged {
            id: 3,
            location,
            damage,
        } => {
            assert!(expect(damage), "{damage:?}");
            assert!(location.ends_with(&manifest_file_name(3)), "{location}");
        }
        other => panic!("not reported as damaged: {other:?}"),
    }
}

#[test]
fn bit_flipped_newest_manifest_falls_back_and_is_reported() {
    falls_back_past(
        |path| flip_bit(path, 30),
        |d| matches!(d, ManifestDamage::Decode(_)),
    );
}

#[test]
fn truncated_newest_manifest_falls_back_and_is_reported() {
    falls_back_past(
        |path| {
            let file = OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(20).unwrap();
        },
        |d| matches!(d, ManifestDamage::Decode(_)),
    );
}

#[test]
fn empty_newest_manifest_falls_back_and_is_reported() {
    falls_back_past(
        |path| fs::write(path, b"").unwrap(),
        |d| matches!(d, ManifestDamage::Decode(DecodeError::Truncated { .. })),
    );
}

#[test]
fn newest_manifest_holding_another_id_falls_back_and_is_reported() {
    falls_back_past(
        |path| fs::write(path, manifest(9, "k", 1, 1)).unwrap(),
        |d| matches!(d, ManifestDamage::IdMismatch { found: 9 }),
    );
}

#[test]
fn oversized_newest_manifest_is_not_kept_and_is_reported() {
    let len = lamina::MAX_MANIFEST_LEN + 100_000;
    falls_back_past(
        |path| {
            let file = OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(len).unwrap();
        },
        |d| matches!(d, ManifestDamage::TooLong { len: l } if *l == len),
    );
}

#[test]
fn temp_files_and_other_names_are_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_part("p", b"x").unwrap();
    store.publish_manifest(4, &manifest(4, "p", 1, 1)).unwrap();
    fs::write(
        dir.path().join("parts").join(".tmp-99-1"),
        b"left by a crash",
    )
    .unwrap();
    fs::write(dir.path().join("manifests").join(".tmp-99-2"), b"left").unwrap();
    fs::write(dir.path().join("manifests").join("notes.txt"), b"other").unwrap();
    assert_eq!(store.list_parts().unwrap(), ["p"]);
    assert_eq!(store.list_manifests().unwrap(), [4]);
    store.delete_manifest(4).unwrap();
    store.delete_manifest(4).unwrap();
    assert!(store.list_manifests().unwrap().is_empty());
}

#[test]
fn the_store_is_shared_between_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = &store;
            s.spawn(move || {
                for i in 0..20 {
                    let key = format!("t{t}-{i}");
                    let info = store.put_part(&key, key.as_bytes()).unwrap();
                    assert_eq!(
                        store.read_part(&key, info.size, info.crc).unwrap(),
                        key.as_bytes()
                    );
                }
            });
        }
    });
    assert_eq!(store.list_parts().unwrap().len(), 80);
}

#[test]
fn the_file_system_store_and_this_one_read_each_others_directory() {
    let dir = tempfile::tempdir().unwrap();
    let files = lamina::FileSystemCheckpointStore::open(dir.path()).unwrap();
    let objects = open(dir.path());
    let a = files.put_part("a", b"from the file store").unwrap();
    let b = objects.put_part("b", b"from the objects store").unwrap();
    files
        .publish_manifest(1, &manifest(1, "a", a.size, a.crc))
        .unwrap();
    objects
        .publish_manifest(2, &manifest(2, "b", b.size, b.crc))
        .unwrap();
    for store in [&files as &dyn CheckpointStore, &objects] {
        assert_eq!(store.list_parts().unwrap(), ["a", "b"]);
        assert_eq!(store.list_manifests().unwrap(), [1, 2]);
        assert_eq!(
            store.read_part("a", a.size, a.crc).unwrap(),
            b"from the file store"
        );
        assert_eq!(
            store.read_part("b", b.size, b.crc).unwrap(),
            b"from the objects store"
        );
        assert_eq!(store.latest_manifest().unwrap().latest.unwrap().id, 2);
    }
    assert!(matches!(
        objects.publish_manifest(1, &manifest(1, "b", b.size, b.crc)),
        Err(CheckpointError::ManifestExists { id: 1, .. })
    ));
}

// ---- a whole checkpoint in one call ----

common::put_checkpoint::contract!(open);
