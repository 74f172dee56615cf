//! The file-system checkpoint store: verified parts, create-only manifests, the fallback past a
//! damaged newest manifest, and keys that never leave the store's directory.

mod common;

use lamina::{
    CheckpointError, CheckpointStore, Failure, FileSystemCheckpointStore, ManifestDamage, PartInfo,
    StoreOp, manifest_file_name,
};
use lamina_core::manifest::{DecodeError, KeyError, MAX_KEY_LEN};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn open(dir: &Path) -> FileSystemCheckpointStore {
    FileSystemCheckpointStore::open(dir).expect("open store")
}

/// An encoded manifest of checkpoint `id` naming one part.
fn manifest(id: u64, key: &str, size: u64, crc: u32) -> Vec<u8> {
    common::put_checkpoint::manifest_naming(id, &[key.to_owned()], &[PartInfo { size, crc }])
}

/// Every path under `root`, relative, files and directories.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    out
}

/// Runs `f` on another thread and fails the test if it takes more than 10 s (a blocked open).
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the operation blocked")
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

fn flip_bit(path: &Path, offset: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read");
    byte[0] ^= 0x10;
    file.write_all_at(&byte, offset).expect("write");
}

// ---- parts ----

#[test]
fn part_round_trip_returns_its_size_and_crc() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let info = store.put_part("op-1.part-0", &bytes).unwrap();
    assert_eq!(info.size, 10_000);
    assert_eq!(info.crc, lamina_core::crc::crc32c(&bytes));
    assert_eq!(
        store.read_part("op-1.part-0", info.size, info.crc).unwrap(),
        bytes
    );
    assert!(dir.path().join("parts/op-1.part-0").is_file());
    let empty = store.put_part("empty", b"").unwrap();
    assert_eq!(store.read_part("empty", 0, empty.crc).unwrap(), b"");
}

/// Part `i` of a batch: its own length and bytes.
fn batch_part(i: usize) -> Vec<u8> {
    (0..(i * 997) % 20_000)
        .map(|n| (n * 31 + i) as u8)
        .collect()
}

#[test]
fn put_parts_stores_a_batch_in_order_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // More parts than the store has encoding and syncing threads.
    let keys: Vec<String> = (0..40).map(|i| format!("batch-{i:03}")).collect();
    let infos = store
        // Appends only: whatever the buffer held before (the store may start a part where it
        // suits its I/O) is not part of the part, as the sizes and checksums below show.
        .put_parts(&keys, &|i, buf: &mut Vec<u8>| {
            buf.extend_from_slice(&batch_part(i));
        })
        .unwrap();
    assert_eq!(infos.len(), keys.len());
    for (i, (key, info)) in keys.iter().zip(&infos).enumerate() {
        let bytes = batch_part(i);
        assert_eq!(info.size, bytes.len() as u64, "{key}");
        assert_eq!(info.crc, lamina_core::crc::crc32c(&bytes), "{key}");
        assert_eq!(store.read_part(key, info.size, info.crc).unwrap(), bytes);
    }
    assert_eq!(store.list_parts().unwrap(), keys);
    let temporary: Vec<_> = tree(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(temporary.is_empty(), "{temporary:?}");
}

#[test]
fn put_parts_whose_encoder_dies_stores_none_and_leaves_no_temporary_file() {
    // A batch no larger than the store's encoders (each syncs its own part) and a larger one
    // (syncing threads too).
    for (count, dies) in [(4, 2), (30, 17)] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let keys: Vec<String> = (0..count).map(|i| format!("batch-{i:03}")).collect();
        let err = store
            .put_parts(&keys, &|i, buf: &mut Vec<u8>| {
                assert!(i != dies, "part {dies} cannot be encoded");
                buf.extend_from_slice(&batch_part(i));
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                CheckpointError::Storage {
                    op: StoreOp::PutPart,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(store.list_parts().unwrap().is_empty());
        assert_eq!(
            tree(dir.path()),
            [PathBuf::from("parts"), PathBuf::from("manifests")]
                .into_iter()
                .collect()
        );
    }
}

#[test]
fn put_parts_into_a_vanished_directory_is_an_error_naming_a_part() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fs::remove_dir(dir.path().join("parts")).unwrap();
    fs::write(dir.path().join("parts"), b"not a directory").unwrap();
    let keys: Vec<String> = (0..6).map(|i| format!("batch-{i:03}")).collect();
    let err = store
        .put_parts(&keys, &|i, buf: &mut Vec<u8>| {
            buf.extend_from_slice(&batch_part(i))
        })
        .unwrap_err();
    match &err {
        CheckpointError::Storage {
            op: StoreOp::PutPart,
            location,
            ..
        } => assert!(location.contains("batch-"), "{location}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn put_part_replaces_a_part_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_part("p", b"old bytes, longer").unwrap();
    let info = store.put_part("p", b"new").unwrap();
    assert_eq!(store.read_part("p", info.size, info.crc).unwrap(), b"new");
    assert_eq!(store.list_parts().unwrap(), ["p"]);
}

#[test]
fn bit_flipped_part_is_a_checksum_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = store.put_part("part-7", &[7u8; 4096]).unwrap();
    let path = store.part_path("part-7").unwrap();
    flip_bit(&path, 1234);
    let err = store.read_part("part-7", info.size, info.crc).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::PartChecksum { key, expected, .. } if key == "part-7" && *expected == info.crc),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("part-7") && text.contains(&path.display().to_string()),
        "{text}"
    );
}

#[test]
fn truncated_part_is_a_size_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = store.put_part("part-t", &[1u8; 1000]).unwrap();
    let path = store.part_path("part-t").unwrap();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(999)
        .unwrap();
    let err = store.read_part("part-t", info.size, info.crc).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::PartSize { key, expected: 1000, actual: 999, .. } if key == "part-t"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn extended_part_is_a_size_error_and_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = store.put_part("part-x", b"ten bytes!").unwrap();
    let path = store.part_path("part-x").unwrap();
    // A sparse 10 GiB file: reading it into memory would be the bug this test catches.
    let huge = 10u64 << 30;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(huge)
        .unwrap();
    let err = store.read_part("part-x", info.size, info.crc).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::PartSize { expected: 10, actual, .. } if *actual == huge),
        "{err:?}"
    );
    // One byte more is also caught, by length, not by checksum.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(11)
        .unwrap();
    let err = store.read_part("part-x", info.size, info.crc).unwrap_err();
    assert!(
        matches!(err, CheckpointError::PartSize { actual: 11, .. }),
        "{err:?}"
    );
}

#[test]
fn missing_part_is_not_found_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store.read_part("absent", 1, 0).unwrap_err();
    assert_eq!(err.failure(), Failure::NotFound, "{err:?}");
    assert!(matches!(
        err,
        CheckpointError::Storage {
            op: StoreOp::ReadPart,
            ..
        }
    ));
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn fifo_or_directory_under_a_part_name_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let store = open(&root);
    mkfifo(&root.join("parts/fifo"));
    fs::create_dir(root.join("parts/subdir")).unwrap();
    let store = Arc::new(store);
    for key in ["fifo", "subdir"] {
        let s = Arc::clone(&store);
        let err = within(move || s.read_part(key, 0, 0)).unwrap_err();
        assert!(
            matches!(&err, CheckpointError::PartNotAFile { key: k, .. } if k == key),
            "{key}: {err:?}"
        );
    }
    // Deleting a directory through a part name is refused, and the directory stays.
    assert!(store.delete_part("subdir").is_err());
    assert!(root.join("parts/subdir").is_dir());
}

/// A symlink under `parts/` is not followed, wherever it points: a part is a regular file the
/// store wrote, and a link there (to a file outside the store, holding the very bytes the
/// manifest expects) would let whoever planted it feed or probe files outside the store.
#[test]
fn symlink_under_a_part_name_is_not_followed() {
    let outer = tempfile::tempdir().unwrap();
    let secret = outer.path().join("secret");
    fs::write(&secret, b"outside").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    std::os::unix::fs::symlink(&secret, dir.path().join("parts/link")).unwrap();
    let crc = lamina_core::crc::crc32c(b"outside");
    let err = store.read_part("link", 7, crc).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::PartNotAFile { key, .. } if key == "link"),
        "{err:?}"
    );
    // Deleting it removes the link only.
    store.delete_part("link").unwrap();
    assert_eq!(fs::read(&secret).unwrap(), b"outside");
}

// ---- keys ----

#[test]
fn hostile_keys_are_refused_before_any_file_operation() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("store");
    let store = open(&root);
    let overlong = "k".repeat(MAX_KEY_LEN + 1);
    let hostile: [(&str, KeyError); 10] = [
        ("../escape", KeyError::Separator { at: 2 }),
        ("/abs-lamina-escape", KeyError::Separator { at: 0 }),
        ("a/b", KeyError::Separator { at: 1 }),
        ("a\\b", KeyError::Separator { at: 1 }),
        ("nul\0x", KeyError::Nul { at: 3 }),
        (
            &overlong,
            KeyError::TooLong {
                len: MAX_KEY_LEN + 1,
            },
        ),
        ("..", KeyError::DotName),
        (".", KeyError::DotName),
        ("", KeyError::Empty),
        ("C:x", KeyError::Forbidden { at: 1, byte: b':' }),
    ];
    let before = tree(outer.path());
    for (key, want) in &hostile {
        let check = |err: CheckpointError, what: &str| {
            assert!(
                matches!(&err, CheckpointError::InvalidKey { key: k, error } if k == key && error == want),
                "{what} {key:?}: {err:?}"
            );
        };
        check(store.put_part(key, b"x").unwrap_err(), "put");
        check(store.read_part(key, 1, 0).unwrap_err(), "read");
        check(store.delete_part(key).unwrap_err(), "delete");
        check(store.part_path(key).unwrap_err(), "path");
    }
    // The temporary files' prefix is the store's own.
    let err = store.put_part(".tmp-1-2", b"x").unwrap_err();
    assert!(
        matches!(err, CheckpointError::ReservedKey { .. }),
        "{err:?}"
    );
    assert_eq!(
        tree(outer.path()),
        before,
        "a refused key touched the file system"
    );
    assert!(!Path::new("/abs-lamina-escape").exists());
    assert!(!outer.path().join("escape").exists());
}

#[test]
fn a_key_reaching_into_the_manifest_directory_is_refused() {
    // A key is untrusted when it comes back from a manifest; the store checks it on every call,
    // whatever decoded it.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store.read_part("../manifests/x", 1, 0).unwrap_err();
    assert!(matches!(err, CheckpointError::InvalidKey { .. }), "{err:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("LAMINA_CKSTORE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
    ))]

    /// A random key is refused before anything is written, or stored exactly at
    /// `parts/{key}` and read back; nothing ever appears outside the store.
    #[test]
    fn random_keys_are_refused_or_stay_inside_the_store(
        key in "[a-z./\\\\:\0\n\u{7f}é -]{0,12}|\\.tmp-[0-9]{1,3}|\\.\\.?",
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("store");
        let store = open(&root);
        let before = tree(outer.path());
        match store.put_part(&key, &bytes) {
            Ok(info) => {
                prop_assert!(lamina_core::manifest::validate_key(&key).is_ok());
                prop_assert_eq!(store.read_part(&key, info.size, info.crc).unwrap(), bytes);
                let mut want = before.clone();
                want.insert(Path::new("store/parts").join(&key));
                prop_assert_eq!(tree(outer.path()), want);
                prop_assert_eq!(store.list_parts().unwrap(), vec![key.clone()]);
            }
            Err(CheckpointError::InvalidKey { key: k, error }) => {
                prop_assert_eq!(&k, &key);
                prop_assert_eq!(lamina_core::manifest::validate_key(&key), Err(error));
                prop_assert_eq!(tree(outer.path()), before);
            }
            Err(CheckpointError::ReservedKey { .. }) => {
                prop_assert!(key.starts_with(".tmp-"));
                prop_assert_eq!(tree(outer.path()), before);
            }
            Err(other) => prop_assert!(false, "unexpected error for {:?}: {:?}", key, other),
        }
    }
}

// ---- manifests ----

#[test]
fn second_publisher_of_a_manifest_gets_already_exists_and_the_first_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = manifest(5, "a", 1, 2);
    let second = manifest(5, "b", 3, 4);
    store.publish_manifest(5, &first).unwrap();
    let err = store.publish_manifest(5, &second).unwrap_err();
    assert!(
        matches!(err, CheckpointError::ManifestExists { id: 5, .. }),
        "{err:?}"
    );
    assert_eq!(err.failure(), Failure::AlreadyExists);
    assert!(err.to_string().contains(&manifest_file_name(5)), "{err}");
    assert_eq!(store.read_manifest(5).unwrap(), first);
    // No temporary file is left behind by the losing publish.
    let names: Vec<_> = fs::read_dir(dir.path().join("manifests"))
        .unwrap()
        .collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn two_threads_publishing_one_manifest_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    for id in 1..=8u64 {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = ["left", "right"]
            .into_iter()
            .map(|key| {
                // Each thread has its own store over the same directory, as two processes would.
                let store = open(&root);
                let barrier = Arc::clone(&barrier);
                let bytes = manifest(id, key, 1, 0);
                std::thread::spawn(move || {
                    barrier.wait();
                    (store.publish_manifest(id, &bytes), bytes)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter(|(r, _)| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "manifest {id}: {results:?}");
        for (r, _) in &results {
            if let Err(e) = r {
                assert!(matches!(e, CheckpointError::ManifestExists { .. }), "{e:?}");
            }
        }
        assert_eq!(open(&root).read_manifest(id).unwrap(), winners[0].1);
    }
    assert_eq!(
        open(&root).list_manifests().unwrap(),
        (1..=8).collect::<Vec<_>>()
    );
}

#[test]
fn publish_refuses_bytes_that_are_not_a_manifest_of_that_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store.publish_manifest(3, b"not a manifest").unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::ManifestInvalid {
                id: 3,
                damage: ManifestDamage::Decode(_)
            }
        ),
        "{err:?}"
    );
    let err = store
        .publish_manifest(3, &manifest(4, "k", 1, 1))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::ManifestInvalid {
                id: 3,
                damage: ManifestDamage::IdMismatch { found: 4 }
            }
        ),
        "{err:?}"
    );
    assert!(store.list_manifests().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(dir.path().join("manifests")).unwrap().count(),
        0
    );
}

#[test]
fn latest_manifest_of_an_empty_store_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let latest = open(dir.path()).latest_manifest().unwrap();
    assert!(latest.latest.is_none() && latest.skipped.is_empty());
}

#[test]
fn latest_manifest_is_the_highest_numbered_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for id in [1, 2, 10, 9] {
        store
            .publish_manifest(id, &manifest(id, "k", 1, 1))
            .unwrap();
    }
    let latest = store.latest_manifest().unwrap();
    let found = latest.latest.expect("a manifest");
    assert_eq!(found.id, 10);
    assert_eq!(found.manifest().unwrap().id, 10);
    assert!(latest.skipped.is_empty());
}

/// Publishes manifests 1 and 2, lets `damage` spoil manifest 3's file, and checks that the
/// latest is 2 with 3 reported as skipped for the reason `expect` accepts.
fn falls_back_past(damage: impl FnOnce(&Path, &[u8]), expect: impl Fn(&ManifestDamage) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    for id in 1..=2 {
        store
            .publish_manifest(id, &manifest(id, "k", 1, 1))
            .unwrap();
    }
    let third = manifest(3, "k", 1, 1);
    damage(&store.manifest_path(3), &third);
    let s = Arc::clone(&store);
    let latest = within(move || s.latest_manifest()).unwrap();
    assert_eq!(latest.latest.as_ref().map(|m| m.id), Some(2));
    assert_eq!(latest.latest.unwrap().bytes, manifest(2, "k", 1, 1));
    assert_eq!(latest.skipped.len(), 1, "{:?}", latest.skipped);
    let skipped = &latest.skipped[0];
    assert_eq!(skipped.id, 3);
    match &skipped.error {
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
fn truncated_newest_manifest_falls_back_and_is_reported() {
    falls_back_past(
        |path, bytes| fs::write(path, &bytes[..bytes.len() / 2]).unwrap(),
        |d| matches!(d, ManifestDamage::Decode(DecodeError::Truncated { .. })),
    );
}

#[test]
fn bit_flipped_newest_manifest_falls_back_and_is_reported() {
    falls_back_past(
        |path, bytes| {
            fs::write(path, bytes).unwrap();
            flip_bit(path, bytes.len() as u64 / 2);
        },
        |d| {
            matches!(
                d,
                ManifestDamage::Decode(DecodeError::ChecksumMismatch { .. })
            )
        },
    );
}

#[test]
fn garbage_under_the_newest_manifest_name_falls_back_and_is_reported() {
    falls_back_past(
        |path, _| fs::write(path, b"garbage, not a manifest at all").unwrap(),
        |d| matches!(d, ManifestDamage::Decode(DecodeError::BadMagic)),
    );
}

#[test]
fn empty_newest_manifest_falls_back_and_is_reported() {
    falls_back_past(
        |path, _| fs::write(path, b"").unwrap(),
        |d| {
            matches!(
                d,
                ManifestDamage::Decode(DecodeError::Truncated { len: 0, .. })
            )
        },
    );
}

#[test]
fn newest_manifest_holding_another_id_falls_back_and_is_reported() {
    falls_back_past(
        |path, _| fs::write(path, manifest(7, "k", 1, 1)).unwrap(),
        |d| matches!(d, ManifestDamage::IdMismatch { found: 7 }),
    );
}

#[test]
fn oversized_newest_manifest_is_not_read_and_is_reported() {
    falls_back_past(
        |path, _| {
            let f = fs::File::create(path).unwrap();
            f.set_len(lamina::MAX_MANIFEST_LEN + 1).unwrap();
        },
        |d| matches!(d, ManifestDamage::TooLong { len } if *len == lamina::MAX_MANIFEST_LEN + 1),
    );
}

#[test]
fn directory_under_the_newest_manifest_name_falls_back_and_is_reported() {
    falls_back_past(
        |path, _| fs::create_dir(path).unwrap(),
        |d| matches!(d, ManifestDamage::NotAFile),
    );
}

#[test]
fn symlink_under_the_newest_manifest_name_is_not_followed_and_falls_back() {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("elsewhere.manifest");
    falls_back_past(
        move |path, bytes| {
            // A whole, valid manifest 3, but outside the store.
            fs::write(&target, bytes).unwrap();
            std::os::unix::fs::symlink(&target, path).unwrap();
        },
        |d| matches!(d, ManifestDamage::NotAFile),
    );
}

#[test]
fn fifo_under_the_newest_manifest_name_falls_back_without_blocking() {
    falls_back_past(
        |path, _| mkfifo(path),
        |d| matches!(d, ManifestDamage::NotAFile),
    );
}

#[test]
fn temp_file_left_by_a_crash_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.publish_manifest(1, &manifest(1, "k", 1, 1)).unwrap();
    // A publish of manifest 2 that crashed before its link: whole or half written, under a
    // temporary name.
    let whole = manifest(2, "k", 1, 1);
    fs::write(dir.path().join("manifests/.tmp-4242-0"), &whole).unwrap();
    fs::write(dir.path().join("manifests/.tmp-4242-1"), &whole[..10]).unwrap();
    fs::write(dir.path().join("parts/.tmp-4242-2"), b"half a part").unwrap();
    let latest = store.latest_manifest().unwrap();
    assert_eq!(latest.latest.map(|m| m.id), Some(1));
    assert!(latest.skipped.is_empty(), "{:?}", latest.skipped);
    assert!(store.list_parts().unwrap().is_empty());
    // Manifest 2 can still be published.
    store.publish_manifest(2, &whole).unwrap();
    assert_eq!(
        store.latest_manifest().unwrap().latest.map(|m| m.id),
        Some(2)
    );
}

#[test]
fn every_manifest_damaged_gives_none_and_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for id in 1..=3 {
        fs::write(store.manifest_path(id), b"damaged").unwrap();
    }
    let latest = store.latest_manifest().unwrap();
    assert!(latest.latest.is_none());
    let ids: Vec<_> = latest.skipped.iter().map(|s| s.id).collect();
    assert_eq!(ids, [3, 2, 1]);
}

#[test]
fn unrelated_files_in_the_manifest_directory_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.publish_manifest(4, &manifest(4, "k", 1, 1)).unwrap();
    for name in [
        "README",
        "5.manifest",
        "000000000000000000005.manifest",
        "0000000000000000000x.manifest",
        "99999999999999999999.manifest",
        "00000000000000000009.manifest.bak",
    ] {
        fs::write(dir.path().join("manifests").join(name), b"x").unwrap();
    }
    assert_eq!(store.list_manifests().unwrap(), [4]);
    let latest = store.latest_manifest().unwrap();
    assert_eq!(latest.latest.map(|m| m.id), Some(4));
    assert!(latest.skipped.is_empty());
}

#[test]
fn missing_manifest_read_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = open(dir.path()).read_manifest(12).unwrap_err();
    assert_eq!(err.failure(), Failure::NotFound, "{err:?}");
    assert!(err.to_string().contains(&manifest_file_name(12)), "{err}");
}

// ---- delete and list ----

#[test]
fn delete_and_list_parts_and_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for key in ["c", "a", "b"] {
        store.put_part(key, key.as_bytes()).unwrap();
    }
    for id in [3, 1, 2] {
        store
            .publish_manifest(id, &manifest(id, "a", 1, 1))
            .unwrap();
    }
    assert_eq!(store.list_parts().unwrap(), ["a", "b", "c"]);
    assert_eq!(store.list_manifests().unwrap(), [1, 2, 3]);
    store.delete_part("b").unwrap();
    store.delete_manifest(2).unwrap();
    assert_eq!(store.list_parts().unwrap(), ["a", "c"]);
    assert_eq!(store.list_manifests().unwrap(), [1, 3]);
    assert_eq!(
        store.read_part("b", 1, 0).unwrap_err().failure(),
        Failure::NotFound
    );
    // Deleting what is gone succeeds: an interrupted garbage collection runs again.
    store.delete_part("b").unwrap();
    store.delete_manifest(2).unwrap();
    // A deleted manifest id can be published again (deletion is the caller's decision).
    store.publish_manifest(2, &manifest(2, "a", 1, 1)).unwrap();
    assert_eq!(store.list_manifests().unwrap(), [1, 2, 3]);
}

#[test]
fn list_parts_leaves_out_names_that_are_not_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_part("good", b"1").unwrap();
    for name in ["has:colon", "ctl\u{1}", ".tmp-1-1"] {
        fs::write(dir.path().join("parts").join(name), b"x").unwrap();
    }
    assert_eq!(store.list_parts().unwrap(), ["good"]);
}

#[test]
fn reopened_store_sees_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let info = {
        let store = open(dir.path());
        store.publish_manifest(1, &manifest(1, "p", 3, 0)).unwrap();
        store.put_part("p", b"abc").unwrap()
    };
    let store = open(dir.path());
    assert_eq!(store.read_part("p", info.size, info.crc).unwrap(), b"abc");
    assert_eq!(
        store.latest_manifest().unwrap().latest.map(|m| m.id),
        Some(1)
    );
}

#[test]
fn opening_a_store_on_a_regular_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    fs::write(&file, b"x").unwrap();
    let err = FileSystemCheckpointStore::open(&file).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::Storage {
                op: StoreOp::Open,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn store_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FileSystemCheckpointStore>();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..4 {
                    let key = format!("t{t}-{i}");
                    let info = store.put_part(&key, key.as_bytes()).unwrap();
                    assert_eq!(
                        store.read_part(&key, info.size, info.crc).unwrap(),
                        key.as_bytes()
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(store.list_parts().unwrap().len(), 16);
}

// ---- a whole checkpoint in one call ----

common::put_checkpoint::contract!(open);
