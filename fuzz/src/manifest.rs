//! The checks behind the `manifest` fuzz target, and its seeds.
//!
//! Under `cfg(fuzzing)` the manifest's checksum comparison passes, so arbitrary bytes behind a
//! plausible header reach the body parser and the content rules. The checks never depend on the
//! checksum: no panic, and a manifest that decodes is valid, iterates as many entries as it says,
//! and encodes to bytes that decode to the same manifest.

use lamina_core::manifest::{List, Manifest, Part, SourceOffset, WalPosition};
use lamina_core::{Lsn, SegmentId};

/// Decodes `bytes` as a manifest and checks what a successful decode returns.
pub fn check_manifest(bytes: &[u8]) {
    let Ok(m) = Manifest::decode(bytes) else {
        return;
    };
    assert_eq!(m.validate(), Ok(()), "a decoded manifest breaks a rule");
    assert_eq!(m.wal.iter().count(), m.wal.len());
    assert_eq!(m.parts.iter().count(), m.parts.len());
    assert_eq!(m.offsets.iter().count(), m.offsets.len());
    let mut again = vec![0u8; m.encoded_len()];
    let n = m.encode(&mut again).expect("a decoded manifest encodes");
    assert_eq!(n, again.len());
    assert_eq!(
        Manifest::decode(&again),
        Ok(m),
        "re-encoding changed the manifest"
    );
}

/// The seed files of the `manifest` target: `(file name, bytes)`.
pub fn seed_files() -> Vec<(&'static str, Vec<u8>)> {
    let wal = [
        WalPosition {
            core: 0,
            lsn: Lsn(40),
            segment: SegmentId(0),
        },
        WalPosition {
            core: 3,
            lsn: Lsn(300),
            segment: SegmentId(1),
        },
    ];
    let parts = [
        Part {
            operator: "sum",
            partition: 0,
            key: "2-sum-0",
            size: 4096,
            crc: 0xdead_beef,
            written_by: 2,
        },
        Part {
            operator: "sum",
            partition: 1,
            key: "1-sum-1",
            size: 17,
            crc: 7,
            written_by: 1,
        },
    ];
    let offsets = [SourceOffset {
        connector: "kafka",
        bytes: &[1, 2, 3],
    }];
    let full = Manifest {
        id: 2,
        epoch: 5,
        parent: Some(1),
        timestamp: 1_764_000_000_000,
        watermark: -1,
        wal: List::new(&wal),
        parts: List::new(&parts),
        offsets: List::new(&offsets),
    };
    let first = Manifest {
        id: 1,
        epoch: 0,
        parent: None,
        timestamp: 0,
        watermark: i64::MIN,
        wal: List::empty(),
        parts: List::empty(),
        offsets: List::empty(),
    };
    [("full", full), ("first", first)]
        .into_iter()
        .map(|(name, m)| {
            let mut buf = vec![0u8; m.encoded_len()];
            m.encode(&mut buf).expect("seed manifests are valid");
            (name, buf)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// `LAMINA_WRITE_SEEDS=1 cargo test` (in `fuzz/`) rewrites the seed files.
    #[test]
    fn checked_in_manifest_seeds_are_what_seed_files_builds() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join("manifest");
        for (name, bytes) in seed_files() {
            let path = dir.join(name);
            if std::env::var_os("LAMINA_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{} is stale",
                path.display()
            );
        }
    }

    #[test]
    fn manifest_seeds_decode_and_pass_the_checks() {
        for (name, bytes) in seed_files() {
            assert!(Manifest::decode(&bytes).is_ok(), "{name}");
            check_manifest(&bytes);
        }
    }
}
