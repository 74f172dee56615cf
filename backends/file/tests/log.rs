//! The file backend under the core's commit pipeline and recovery: logs written, reopened,
//! damaged on disk and recovered, as the std runtime will drive them (the scenarios are
//! `lamina_tests::backend_log`'s, which the io_uring backend runs too); and the backend
//! contract's operations one by one.

mod common;

use common::*;
use lamina_core::SegmentId;
use lamina_core::io::{Error as _, Failure, SegmentOp, SegmentStorage};
use lamina_core::segment::HEADER_LEN;
use lamina_file::{FileStorage, Options};
use lamina_tests::backend_log;
use lamina_tests::pipeline::*;
use std::fs;
use std::path::Path;

/// Segments pre-zeroed to `prepare` bytes (the segment size, as the runtime opens them).
fn open(dir: &Path, prepare: u64) -> FileStorage {
    FileStorage::open(dir, Options::new().prepare_size(prepare)).expect("open")
}

#[test]
fn appended_records_come_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    backend_log::appended_records_come_back_after_reopen(dir.path(), "file", open);
}

#[test]
fn records_roll_over_across_several_segments() {
    let dir = tempfile::tempdir().unwrap();
    backend_log::records_roll_over_across_several_segments(dir.path(), "file", open);
}

#[test]
fn close_then_reopen_continues_in_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    backend_log::close_then_reopen_continues_in_a_new_segment(dir.path(), "file", open);
}

#[test]
fn torn_tail_truncated_mid_record_is_cut_and_sealed() {
    let dir = tempfile::tempdir().unwrap();
    backend_log::torn_tail_is_cut_and_sealed(
        dir.path(),
        "file",
        open,
        0,
        backend_log::truncate_mid_record_20,
    );
}

#[test]
fn torn_tail_garbled_in_prepared_segment_is_cut_and_sealed() {
    let dir = tempfile::tempdir().unwrap();
    backend_log::torn_tail_is_cut_and_sealed(
        dir.path(),
        "file",
        open,
        64 * 1024,
        backend_log::garble_mid_record_20,
    );
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_corruption_in_strict() {
    let dir = tempfile::tempdir().unwrap();
    backend_log::flipped_byte_in_a_sealed_segment_is_corruption_in_strict(dir.path(), "file", open);
}

#[test]
fn discard_deletes_segments_durably() {
    let dir = tempfile::tempdir().unwrap();
    backend_log::discard_deletes_segments_durably(dir.path(), "file", open);
}

#[test]
fn delete_removes_the_file_and_an_absent_segment_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 0);
    let header = [1u8; HEADER_LEN];
    run(
        &mut s,
        SegmentOp::Create {
            segment: SegmentId(5),
            header: &header,
        },
    )
    .unwrap();
    run(&mut s, SegmentOp::SyncNamespace).unwrap();
    assert_eq!(listed(&mut s), [SegmentId(5)]);
    delete(&mut s, SegmentId(5)).unwrap();
    run(&mut s, SegmentOp::SyncNamespace).unwrap();
    assert!(listed(&mut s).is_empty());
    assert!(!s.segment_path(SegmentId(5)).exists());
    delete(&mut s, SegmentId(5)).unwrap();
}

#[test]
fn create_of_an_existing_segment_is_already_exists() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 8192);
    let header = [7u8; HEADER_LEN];
    run(
        &mut s,
        SegmentOp::Create {
            segment: SegmentId(3),
            header: &header,
        },
    )
    .unwrap();
    let e = run(
        &mut s,
        SegmentOp::Create {
            segment: SegmentId(3),
            header: &[9u8; HEADER_LEN],
        },
    )
    .unwrap_err();
    assert_eq!(e.failure(), Failure::AlreadyExists);
    assert_eq!(e.path(), s.segment_path(SegmentId(3)));
    assert!(e.to_string().contains("0000000000000003.seg"), "{e}");
    // The first header is untouched.
    let mut back = [0u8; HEADER_LEN];
    assert_eq!(s.read_at(SegmentId(3), 0, &mut back).unwrap(), HEADER_LEN);
    assert_eq!(back, header);
}

#[test]
fn writes_and_reads_land_where_asked_and_read_stops_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 0);
    let id = SegmentId(0);
    run(
        &mut s,
        SegmentOp::Create {
            segment: id,
            header: &[1; HEADER_LEN],
        },
    )
    .unwrap();
    let data = [2u8; 100];
    let write = SegmentOp::Write {
        segment: id,
        offset: 200,
        data: &data,
        sync: true,
    };
    run(&mut s, write).unwrap();
    run(&mut s, SegmentOp::Sync { segment: id }).unwrap();
    let mut buf = [9u8; 512];
    assert_eq!(s.read_at(id, 0, &mut buf).unwrap(), 300);
    assert_eq!(&buf[..HEADER_LEN], &[1; HEADER_LEN]);
    assert!(buf[HEADER_LEN..200].iter().all(|b| *b == 0));
    assert_eq!(&buf[200..300], &data);
    assert_eq!(s.read_at(id, 300, &mut buf).unwrap(), 0);
    // Several completions queue up in order.
    s.submit(10, SegmentOp::Sync { segment: id }).unwrap();
    s.submit(11, SegmentOp::SyncNamespace).unwrap();
    assert_eq!(s.poll_completion().map(|c| c.0), Some(10));
    assert_eq!(s.poll_completion().map(|c| c.0), Some(11));
    assert!(s.poll_completion().is_none());
}

#[test]
fn errors_carry_the_operation_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that is a file.
    let not_a_dir = dir.path().join("plain");
    fs::write(&not_a_dir, b"x").unwrap();
    let e = FileStorage::open(&not_a_dir, Options::new()).unwrap_err();
    assert_eq!(e.path(), not_a_dir);
    assert!(e.to_string().contains("plain"), "{e}");
    assert!(e.to_string().contains("Not a directory"), "{e}");
    // A write to a segment that was never created.
    let mut s = open(&dir.path().join("log"), 0);
    let e = run(
        &mut s,
        SegmentOp::Write {
            segment: SegmentId(9),
            offset: 0,
            data: b"x",
            sync: false,
        },
    )
    .unwrap_err();
    assert_eq!(e.failure(), Failure::NotFound);
    assert_eq!(
        e.to_string(),
        format!(
            "pwrite of {} failed: No such file or directory (os error 2)",
            s.segment_path(SegmentId(9)).display()
        )
    );
    let e = s.read_at(SegmentId(9), 0, &mut [0; 8]).unwrap_err();
    assert_eq!(e.failure(), Failure::NotFound);
    assert!(e.to_string().starts_with("pread of "), "{e}");
}

#[test]
fn listing_ignores_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path(), 0);
    for name in [
        "0000000000000002.seg",
        "0000000000000000.seg",
        "notes.txt",
        "00000000000000zz.seg",
    ] {
        fs::write(dir.path().join(name), b"").unwrap();
    }
    fs::create_dir(dir.path().join("0000000000000001.seg.d")).unwrap();
    assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(2)]);
    let mut short = [SegmentId(0); 1];
    assert_eq!(
        s.list(&mut short).unwrap(),
        2,
        "a short buffer still counts all"
    );
}
