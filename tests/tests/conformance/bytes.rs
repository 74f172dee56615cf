//! The same bytes on disk: one sequence of operations through the backend contract leaves, on
//! every backend, the files the file backend leaves (a direct-I/O backend may add zeros after
//! the last byte written, up to its block).

use crate::common::*;
use lamina::{Backend, DirStorage};
use lamina_core::SegmentId;
use lamina_core::io::{SegmentOp, SegmentStorage};
use std::fs;
use std::path::Path;

/// Sizes of the writes, around sector and page boundaries.
const SIZES: [usize; 12] = [1, 7, 8, 511, 512, 513, 4095, 4096, 4097, 10_000, 3, 65_536];

fn bytes(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 + seed * 7 + i / 251) as u8)
        .collect()
}

/// Two segments, each a header and the writes of [`SIZES`] back to back, a few in flight at
/// once, every third one linked to its sync, a sync after each group; then a namespace sync.
fn replay(s: &mut DirStorage) {
    let mut token = 0;
    for segment in [SegmentId(0), SegmentId(1)] {
        let header = bytes(segment.0 as usize, 64);
        token += 1;
        s.submit(
            token,
            SegmentOp::Create {
                segment,
                header: &header,
            },
        )
        .expect("create");
        assert!(completions(s, 1).iter().all(|(_, r)| r.is_ok()));
        let mut offset = header.len();
        for (group, sizes) in SIZES.chunks(4).enumerate() {
            let data: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, len)| bytes(group * 4 + i + 100 * segment.0 as usize, *len))
                .collect();
            for (i, d) in data.iter().enumerate() {
                token += 1;
                let op = SegmentOp::Write {
                    segment,
                    offset: offset as u64,
                    data: d,
                    sync: (group * 4 + i) % 3 == 2,
                };
                s.submit(token, op).expect("write");
                offset += d.len();
            }
            let done = completions(s, data.len());
            assert!(done.iter().all(|(_, r)| r.is_ok()), "{done:?}");
            token += 1;
            s.submit(token, SegmentOp::Sync { segment }).expect("sync");
            assert!(completions(s, 1).iter().all(|(_, r)| r.is_ok()));
        }
    }
    token += 1;
    s.submit(token, SegmentOp::SyncNamespace)
        .expect("namespace sync");
    assert!(completions(s, 1).iter().all(|(_, r)| r.is_ok()));
}

pub(crate) fn the_same_operations_leave_the_same_bytes_as_the_file_backend(under: &Under, _: &str) {
    let reference = tempdir();
    let file = Under {
        name: "file",
        backend: Backend::File,
    };
    replay(&mut file.storage(reference.path()));
    let dir = tempdir();
    replay(&mut under.storage(dir.path()));
    let (theirs, ours) = (segment_files(reference.path()), segment_files(dir.path()));
    let names = |files: &[std::path::PathBuf]| -> Vec<_> {
        files
            .iter()
            .map(|f| f.file_name().map(ToOwned::to_owned))
            .collect()
    };
    assert_eq!(names(&ours), names(&theirs), "the same files");
    for (theirs, ours) in theirs.iter().zip(&ours) {
        compare(theirs, ours, under.direct());
    }
}

fn compare(theirs: &Path, ours: &Path, direct: bool) {
    let (theirs_bytes, ours_bytes) = (
        fs::read(theirs).expect("read"),
        fs::read(ours).expect("read"),
    );
    let n = theirs_bytes.len();
    assert!(ours_bytes.len() >= n, "{} is short", ours.display());
    let first_difference = (0..n).find(|&i| ours_bytes[i] != theirs_bytes[i]);
    assert_eq!(first_difference, None, "{} differs", ours.display());
    if direct {
        assert!(
            ours_bytes[n..].iter().all(|b| *b == 0),
            "only zeros after the last write"
        );
    } else {
        assert_eq!(ours_bytes.len(), n, "{}: no bytes added", ours.display());
    }
}
