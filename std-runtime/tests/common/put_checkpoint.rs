//! The contract of `CheckpointStore::put_checkpoint`, checked on any store: the manifest built
//! from the parts as stored is published, create-only, and nothing is published (or left as a
//! temporary file) when a part, the builder or the publish fails.

use lamina::{CheckpointError, CheckpointStore, Failure, PartInfo, StoreOp};
use lamina_core::manifest::{List, Manifest, Part};
use lamina_core::{Lsn, SegmentId};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Part `i` of a batch: its own length and bytes.
pub fn batch_part(i: usize) -> Vec<u8> {
    (0..(i * 997) % 20_000)
        .map(|n| (n * 31 + i) as u8)
        .collect()
}

fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("ckpt-part-{i:03}")).collect()
}

/// Manifest `id` naming `keys` stored as `infos`.
pub fn manifest_naming(id: u64, keys: &[String], infos: &[PartInfo]) -> Vec<u8> {
    let parts: Vec<Part<'_>> = keys
        .iter()
        .zip(infos)
        .enumerate()
        .map(|(i, (key, info))| Part {
            operator: "op",
            partition: i as u32,
            key,
            size: info.size,
            crc: info.crc,
            written_by: id,
        })
        .collect();
    let wal = [lamina_core::manifest::WalPosition {
        core: 0,
        lsn: Lsn(id * 10),
        segment: SegmentId(1),
    }];
    let m = Manifest {
        id,
        epoch: id,
        parent: id.checked_sub(1),
        timestamp: 1_700_000_000_000 + id,
        watermark: i64::MIN,
        wal: List::new(&wal),
        parts: List::new(&parts),
        offsets: List::empty(),
    };
    let mut buf = vec![0; m.encoded_len()];
    let n = m.encode(&mut buf).expect("encode");
    buf.truncate(n);
    buf
}

/// Files under `dir` (recursively) whose names mark them temporary.
pub fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().contains(".tmp-") {
                out.push(path);
            }
        }
    }
    out
}

/// A checkpoint of `count` parts is stored and its manifest, built once from the parts as
/// stored, published; the manifest reads back naming every part, each of which reads back.
pub fn publishes_the_manifest_of_the_parts_as_stored(
    store: &dyn CheckpointStore,
    dir: &Path,
    count: usize,
) {
    let id = 7;
    let keys = keys(count);
    let built = AtomicUsize::new(0);
    let seen: Mutex<Vec<PartInfo>> = Mutex::new(Vec::new());
    let infos = store
        .put_checkpoint(
            id,
            &keys,
            &|i, buf: &mut Vec<u8>| buf.extend_from_slice(&batch_part(i)),
            &|infos: &[PartInfo]| {
                built.fetch_add(1, Ordering::SeqCst);
                *seen.lock().unwrap() = infos.to_vec();
                Ok(manifest_naming(id, &keys, infos))
            },
        )
        .unwrap();
    assert_eq!(built.load(Ordering::SeqCst), 1, "built once");
    assert_eq!(
        *seen.lock().unwrap(),
        infos,
        "built from the parts as stored"
    );
    assert_eq!(infos.len(), count);
    for (i, (key, info)) in keys.iter().zip(&infos).enumerate() {
        let bytes = batch_part(i);
        assert_eq!(info.size, bytes.len() as u64, "{key}");
        assert_eq!(info.crc, lamina_core::crc::crc32c(&bytes), "{key}");
        assert_eq!(store.read_part(key, info.size, info.crc).unwrap(), bytes);
    }
    assert_eq!(store.list_manifests().unwrap(), [id]);
    assert_eq!(
        store.read_manifest(id).unwrap(),
        manifest_naming(id, &keys, &infos)
    );
    assert_eq!(temporaries(dir), Vec::<PathBuf>::new());
}

/// A checkpoint whose manifest id is taken loses: the first manifest stays, no temporary
/// file is left (its parts stay, for garbage collection).
pub fn a_taken_id_loses_and_the_winner_stays(store: &dyn CheckpointStore, dir: &Path) {
    let id = 3;
    let winner = manifest_naming(id, &[], &[]);
    store.publish_manifest(id, &winner).unwrap();
    let keys = keys(5);
    let err = store
        .put_checkpoint(
            id,
            &keys,
            &|i, buf: &mut Vec<u8>| buf.extend_from_slice(&batch_part(i)),
            &|infos: &[PartInfo]| Ok(manifest_naming(id, &keys, infos)),
        )
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::ManifestExists { id: 3, .. }),
        "{err:?}"
    );
    assert_eq!(err.failure(), Failure::AlreadyExists);
    assert_eq!(store.read_manifest(id).unwrap(), winner);
    assert_eq!(temporaries(dir), Vec::<PathBuf>::new());
}

/// A builder that fails, or builds a manifest of another id, publishes nothing and leaves no
/// temporary file; its own error comes back.
pub fn a_manifest_not_built_or_invalid_publishes_nothing(store: &dyn CheckpointStore, dir: &Path) {
    let keys = keys(4);
    let encode = |i: usize, buf: &mut Vec<u8>| buf.extend_from_slice(&batch_part(i));
    let err = store
        .put_checkpoint(9, &keys, &encode, &|_: &[PartInfo]| {
            Err(CheckpointError::ManifestNotBuilt {
                id: 9,
                reason: "too many parts".into(),
            })
        })
        .unwrap_err();
    assert!(
        matches!(&err, CheckpointError::ManifestNotBuilt { id: 9, reason } if reason == "too many parts"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("manifest 9 could not be built"),
        "{err}"
    );
    let err = store
        .put_checkpoint(9, &keys, &encode, &|infos: &[PartInfo]| {
            Ok(manifest_naming(10, &keys, infos))
        })
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::ManifestInvalid { id: 9, .. }),
        "{err:?}"
    );
    assert!(store.list_manifests().unwrap().is_empty());
    assert_eq!(temporaries(dir), Vec::<PathBuf>::new());
}

/// A part that cannot be encoded (its encoder panics) fails the checkpoint: no manifest is
/// built or published, no part is stored, no temporary file is left.
pub fn a_part_that_fails_publishes_nothing(store: &dyn CheckpointStore, dir: &Path) {
    // A batch no larger than a store's writers and a larger one.
    for (count, dies) in [(4, 2), (30, 17)] {
        let keys = keys(count);
        let built = Arc::new(AtomicUsize::new(0));
        let err = store
            .put_checkpoint(
                11,
                &keys,
                &|i, buf: &mut Vec<u8>| {
                    assert!(i != dies, "part {dies} cannot be encoded");
                    buf.extend_from_slice(&batch_part(i));
                },
                &|infos: &[PartInfo]| {
                    built.fetch_add(1, Ordering::SeqCst);
                    Ok(manifest_naming(11, &keys, infos))
                },
            )
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
        assert_eq!(built.load(Ordering::SeqCst), 0, "no manifest built");
        assert!(store.list_manifests().unwrap().is_empty());
        assert_eq!(temporaries(dir), Vec::<PathBuf>::new());
    }
}

/// A checkpoint with no part to write publishes its manifest all the same.
pub fn no_parts_still_publishes(store: &dyn CheckpointStore) {
    let infos = store
        .put_checkpoint(2, &[], &|_, _: &mut Vec<u8>| {}, &|infos: &[PartInfo]| {
            Ok(manifest_naming(2, &[], infos))
        })
        .unwrap();
    assert!(infos.is_empty());
    assert_eq!(
        store.read_manifest(2).unwrap(),
        manifest_naming(2, &[], &[])
    );
}

/// The tests of this contract, each on a fresh store in a temporary directory that `$open`
/// (a `fn(&Path) -> impl CheckpointStore`) opens.
#[allow(unused_macros)] // Only the checkpoint store tests among those sharing `common` use it.
macro_rules! contract {
    ($open:ident) => {
        #[test]
        fn put_checkpoint_publishes_the_manifest_of_the_parts_as_stored() {
            // No more parts than the store's writers, and more.
            for count in [1, 3, 40] {
                let dir = tempfile::tempdir().unwrap();
                common::put_checkpoint::publishes_the_manifest_of_the_parts_as_stored(
                    &$open(dir.path()),
                    dir.path(),
                    count,
                );
            }
        }

        #[test]
        fn put_checkpoint_of_a_taken_id_loses_and_the_winner_stays() {
            let dir = tempfile::tempdir().unwrap();
            common::put_checkpoint::a_taken_id_loses_and_the_winner_stays(
                &$open(dir.path()),
                dir.path(),
            );
        }

        #[test]
        fn put_checkpoint_whose_manifest_is_not_built_or_invalid_publishes_nothing() {
            let dir = tempfile::tempdir().unwrap();
            common::put_checkpoint::a_manifest_not_built_or_invalid_publishes_nothing(
                &$open(dir.path()),
                dir.path(),
            );
        }

        #[test]
        fn put_checkpoint_whose_part_fails_publishes_nothing() {
            let dir = tempfile::tempdir().unwrap();
            common::put_checkpoint::a_part_that_fails_publishes_nothing(
                &$open(dir.path()),
                dir.path(),
            );
        }

        #[test]
        fn put_checkpoint_with_no_parts_still_publishes() {
            let dir = tempfile::tempdir().unwrap();
            common::put_checkpoint::no_parts_still_publishes(&$open(dir.path()));
        }
    };
}
#[allow(unused_imports)]
pub(crate) use contract;
