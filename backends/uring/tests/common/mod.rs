//! What the io_uring backend's tests share: the modes to run each scenario in and opening a
//! directory in one; the pipeline helpers (a driver loop that waits instead of spinning,
//! recovery into a list of records) are `lamina_tests::pipeline`'s, as for the file backend.
#![allow(dead_code, unreachable_pub, unused_imports)]

use lamina_uring::{Options, UringStorage};
use std::path::Path;

pub use lamina_tests::pipeline::*;

/// A directory for a log on the disk the build runs on (`CARGO_TARGET_TMPDIR`, under
/// `target/`), not `/tmp`, which may be a tmpfs.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

/// The modes each scenario runs in: buffered and direct I/O, with and without registered files
/// and buffers.
pub fn modes() -> [(&'static str, Options); 4] {
    [
        ("buffered", Options::new()),
        (
            "buffered+fixed",
            Options::new().fixed_files(true).fixed_buffers(true),
        ),
        ("direct", Options::new().direct(true)),
        (
            "direct+fixed",
            Options::new()
                .direct(true)
                .fixed_files(true)
                .fixed_buffers(true)
                .queue_depth(8),
        ),
    ]
}

/// Opens `dir`; io_uring refused by the kernel fails the test with the backend's clear error.
pub fn open(dir: &Path, options: Options) -> UringStorage {
    UringStorage::open(dir, options).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}
