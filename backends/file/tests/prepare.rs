//! Segment preparation off the append path: spare files zero-filled by the background preparer,
//! taken by creates; inline preparation when none is ready; the preparer's failures reported by
//! the next create; leftovers of a crash removed on open; the thread joined on drop.

mod common;

use common::*;
use lamina_core::SegmentId;
use lamina_core::io::{Error as _, Failure, SegmentOp};
use lamina_file::{FileError, FileStorage, Op, Options, names};
use lamina_tests::pipeline::listed;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

const SIZE: u64 = 64 * 1024;
/// Long enough for a slow machine; the waits return as soon as the spares are ready.
const WAIT: Duration = Duration::from_secs(30);

fn preparing(size: u64, ahead: usize) -> Options {
    Options::new().prepare_size(size).prepare_ahead(ahead)
}

#[test]
fn a_ready_spare_is_taken_by_create_without_inline_preparation() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), preparing(SIZE, 1)).unwrap();
    assert!(s.wait_for_spares(WAIT), "the preparer made its spare");
    assert_eq!(s.spares_ready(), 1);
    let spares = spare_files(dir.path());
    assert_eq!(spares.len(), 1, "{spares:?}");
    assert_eq!(fs::metadata(&spares[0]).unwrap().len(), SIZE);
    assert_eq!(listed(&mut s), [], "a spare is never listed as a segment");

    create(&mut s, SegmentId(0)).unwrap();
    let stats = s.stats();
    assert_eq!((stats.creates_from_spare, stats.creates_inline), (1, 0));
    assert_eq!(listed(&mut s), [SegmentId(0)]);
    assert!(!spares[0].exists(), "the spare became the segment");
    let mut bytes = vec![0xffu8; SIZE as usize];
    let segment = fs::File::open(s.segment_path(SegmentId(0))).unwrap();
    segment.read_exact_at(&mut bytes, 0).unwrap();
    assert_eq!(bytes[..72], HEADER);
    assert!(
        bytes[72..].iter().all(|b| *b == 0),
        "zeros after the header"
    );

    // The preparer makes the next one (a wait with no deadline at all is fine too).
    assert!(s.wait_for_spares(Duration::MAX));
    create(&mut s, SegmentId(1)).unwrap();
    let stats = s.stats();
    assert_eq!((stats.creates_from_spare, stats.creates_inline), (2, 0));
    assert!(stats.prepared >= 2, "{stats:?}");
    run(&mut s, SegmentOp::SyncNamespace).unwrap();
    assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(1)]);
}

#[test]
fn without_a_ready_spare_create_prepares_inline_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), preparing(SIZE, 0)).unwrap();
    create(&mut s, SegmentId(0)).unwrap();
    let stats = s.stats();
    assert_eq!((stats.creates_from_spare, stats.creates_inline), (0, 1));
    assert_eq!(stats.prepared, 0);
    assert_eq!(spare_files(dir.path()), Vec::<PathBuf>::new());
    let len = fs::metadata(s.segment_path(SegmentId(0))).unwrap().len();
    assert_eq!(len, SIZE, "zero-filled inline");
}

#[test]
fn create_over_an_existing_segment_fails_even_from_a_spare() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), preparing(SIZE, 1)).unwrap();
    assert!(s.wait_for_spares(WAIT));
    create(&mut s, SegmentId(0)).unwrap();
    run(
        &mut s,
        SegmentOp::Write {
            segment: SegmentId(0),
            offset: 72,
            data: b"acknowledged",
            sync: true,
        },
    )
    .unwrap();
    assert!(s.wait_for_spares(WAIT));
    let e = create(&mut s, SegmentId(0)).expect_err("segment 0 exists");
    assert_eq!(e.failure(), Failure::AlreadyExists, "{e}");
    let mut bytes = [0u8; 12];
    let segment = fs::File::open(s.segment_path(SegmentId(0))).unwrap();
    segment.read_exact_at(&mut bytes, 72).unwrap();
    assert_eq!(&bytes, b"acknowledged", "the existing segment is untouched");
    assert_eq!(s.stats().creates_from_spare, 2);
}

#[test]
fn a_preparer_failure_is_reported_by_the_next_create_then_preparation_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), preparing(SIZE, 1)).unwrap();
    assert!(s.wait_for_spares(WAIT));
    s.fail_next_preparation();
    // Takes the ready spare; the preparer's next spare fails.
    create(&mut s, SegmentId(0)).unwrap();
    assert!(!s.wait_for_spares(WAIT), "the preparer failed");
    match create(&mut s, SegmentId(1)) {
        Err(FileError::Io {
            op: Op::Prepare,
            path,
            source,
            ..
        }) => {
            assert!(source.to_string().contains("injected"), "{source}");
            assert!(names::is_spare_file_name(
                path.file_name().unwrap().to_str().unwrap()
            ));
            assert!(!path.exists(), "the failed spare is removed");
        }
        other => panic!("expected the preparer's failure, got {other:?}"),
    }
    assert_eq!(
        listed(&mut s),
        [SegmentId(0)],
        "the failed create made nothing"
    );
    // Reported once: the preparer goes on, and the next create works.
    assert!(s.wait_for_spares(WAIT), "preparation resumed");
    create(&mut s, SegmentId(1)).unwrap();
    assert_eq!(s.stats().creates_from_spare, 2);
}

#[test]
fn leftover_spares_of_a_crash_are_removed_on_open_and_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = FileStorage::open(dir.path(), Options::new()).unwrap();
        create(&mut s, SegmentId(0)).unwrap();
        run(&mut s, SegmentOp::SyncNamespace).unwrap();
    }
    // What a crash leaves: a spare holding a whole segment's bytes (a recycled file), a
    // half-prepared one, and the names of other things that must stay.
    let segment = dir.path().join(names::segment_file_name(SegmentId(0)));
    let recycled = dir.path().join(names::spare_file_name(3));
    let half = dir.path().join(names::spare_file_name(9));
    fs::copy(&segment, &recycled).unwrap();
    fs::write(&half, vec![0u8; 1000]).unwrap();
    let other = dir.path().join("spare-notes.tmp");
    fs::write(&other, b"not ours").unwrap();

    let mut s = FileStorage::open(dir.path(), Options::new()).unwrap();
    assert!(
        !recycled.exists() && !half.exists(),
        "leftover spares removed"
    );
    assert!(other.exists(), "a file that is not a spare stays");
    assert!(segment.exists());
    assert_eq!(listed(&mut s), [SegmentId(0)]);
}

#[test]
fn drop_joins_the_preparer_and_leaves_no_spare_behind() {
    let dir = tempfile::tempdir().unwrap();
    {
        // Large spares, so the thread is most likely in the middle of one when dropped; it
        // stops between pieces of zeros.
        let s = FileStorage::open(dir.path(), preparing(64 << 20, 2)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(s);
    }
    assert_eq!(spare_files(dir.path()), Vec::<PathBuf>::new());
    // A thread still running after the drop would go on making spares.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(spare_files(dir.path()), Vec::<PathBuf>::new());
    // And the directory is free again.
    let s = FileStorage::open(dir.path(), preparing(SIZE, 1)).unwrap();
    assert!(s.wait_for_spares(WAIT));
    drop(s);
    assert_eq!(spare_files(dir.path()), Vec::<PathBuf>::new());
}
