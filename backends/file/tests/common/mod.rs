//! What the file backend's tests share: one operation submitted and completed, creates and
//! deletes of segments with a fixed header, and the spare files of a directory.
#![allow(dead_code, unreachable_pub)]

use lamina_core::SegmentId;
use lamina_core::io::{SegmentOp, SegmentStorage};
use lamina_file::{FileError, FileStorage, names};
use std::fs;
use std::path::{Path, PathBuf};

/// The header the tests' segments are created with.
pub const HEADER: [u8; 72] = [0xab; 72];

/// Submits `op` and returns its result: the file backend completes it at once, and nothing else
/// (a token the pipeline never uses, so a mix-up fails the test).
pub fn run(s: &mut FileStorage, op: SegmentOp<'_>) -> Result<(), FileError> {
    s.submit(u64::MAX, op).expect("submit never fails");
    let (token, result) = s.poll_completion().expect("completed at once");
    assert_eq!(token, u64::MAX);
    assert!(s.poll_completion().is_none(), "one completion");
    result
}

/// Creates segment `id` with [`HEADER`].
pub fn create(s: &mut FileStorage, id: SegmentId) -> Result<(), FileError> {
    run(
        s,
        SegmentOp::Create {
            segment: id,
            header: &HEADER,
        },
    )
}

/// Deletes segment `id`.
pub fn delete(s: &mut FileStorage, id: SegmentId) -> Result<(), FileError> {
    run(s, SegmentOp::Delete { segment: id })
}

/// The spare files in `dir`, in order.
pub fn spare_files(dir: &Path) -> Vec<PathBuf> {
    let mut spares: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| names::is_spare_file_name(e.file_name().to_str().unwrap()))
        .map(|e| e.path())
        .collect();
    spares.sort();
    spares
}
