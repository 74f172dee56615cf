//! The io_uring backend under the core's commit pipeline and recovery, in each mode (buffered
//! and direct I/O, with and without registered files and buffers): logs written, reopened,
//! damaged on disk and recovered, in the same scenarios as `lamina-file`'s own tests
//! (`lamina_tests::backend_log`); and the backend contract's operations one by one.

mod common;

use common::*;
use lamina_core::SegmentId;
use lamina_core::io::{Error as _, Failure, SegmentOp, SegmentStorage};
use lamina_core::segment::HEADER_LEN;
use lamina_tests::backend_log;
use lamina_uring::{Options, UringError, UringStorage};
use std::fs;
use std::path::Path;

/// Runs `scenario` in each mode, on a fresh directory, with the mode's options and segments
/// prepared to the size it asks for.
fn in_each_mode(scenario: impl Fn(&Path, &str, &dyn Fn(&Path, u64) -> UringStorage)) {
    for (mode, options) in modes() {
        let dir = tempdir();
        scenario(dir.path(), mode, &|dir, prepare| {
            open(dir, options.prepare_size(prepare))
        });
    }
}

#[test]
fn appended_records_come_back_after_reopen() {
    in_each_mode(|dir, mode, open| {
        backend_log::appended_records_come_back_after_reopen(dir, mode, open)
    });
}

#[test]
fn records_roll_over_across_several_segments() {
    in_each_mode(|dir, mode, open| {
        backend_log::records_roll_over_across_several_segments(dir, mode, open)
    });
}

#[test]
fn close_then_reopen_continues_in_a_new_segment() {
    in_each_mode(|dir, mode, open| {
        backend_log::close_then_reopen_continues_in_a_new_segment(dir, mode, open)
    });
}

#[test]
fn torn_tail_truncated_mid_record_is_cut_and_sealed() {
    in_each_mode(|dir, mode, open| {
        backend_log::torn_tail_is_cut_and_sealed(
            dir,
            mode,
            open,
            0,
            backend_log::truncate_mid_record_20,
        );
    });
}

#[test]
fn torn_tail_garbled_in_prepared_segment_is_cut_and_sealed() {
    in_each_mode(|dir, mode, open| {
        backend_log::torn_tail_is_cut_and_sealed(
            dir,
            mode,
            open,
            64 * 1024,
            backend_log::garble_mid_record_20,
        );
    });
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_corruption_in_strict() {
    in_each_mode(|dir, mode, open| {
        backend_log::flipped_byte_in_a_sealed_segment_is_corruption_in_strict(dir, mode, open)
    });
}

#[test]
fn discard_deletes_segments_durably() {
    in_each_mode(|dir, mode, open| backend_log::discard_deletes_segments_durably(dir, mode, open));
}

/// Submits `op` and waits for its completion.
fn run(s: &mut UringStorage, op: SegmentOp<'_>) -> Result<(), UringError> {
    s.submit(1, op).expect("submit never fails");
    s.wait().expect("wait");
    let (token, result) = s.poll_completion().expect("completed after the wait");
    assert_eq!(token, 1);
    assert!(s.poll_completion().is_none());
    assert_eq!(s.in_flight(), 0);
    result
}

#[test]
fn delete_removes_the_file_and_an_absent_segment_is_fine() {
    let dir = tempdir();
    let mut s = open(dir.path(), Options::new().fixed_files(true));
    let header = [1u8; HEADER_LEN];
    let create = SegmentOp::Create {
        segment: SegmentId(5),
        header: &header,
    };
    run(&mut s, create).unwrap();
    run(&mut s, SegmentOp::SyncNamespace).unwrap();
    // Written through the ring, so the segment has a registered file to let go of.
    let write = SegmentOp::Write {
        segment: SegmentId(5),
        offset: HEADER_LEN as u64,
        data: b"abc",
        sync: true,
    };
    run(&mut s, write).unwrap();
    assert_eq!(listed(&mut s), [SegmentId(5)]);
    let delete = SegmentOp::Delete {
        segment: SegmentId(5),
    };
    run(&mut s, delete).unwrap();
    run(&mut s, SegmentOp::SyncNamespace).unwrap();
    assert!(listed(&mut s).is_empty());
    assert!(!s.segment_path(SegmentId(5)).exists());
    run(&mut s, delete).unwrap();
    // The same sequence number again is a new file, written through a new registration.
    run(&mut s, create).unwrap();
    run(&mut s, write).unwrap();
    let mut back = [0u8; 3];
    s.read_at(SegmentId(5), HEADER_LEN as u64, &mut back)
        .unwrap();
    assert_eq!(&back, b"abc");
}

#[test]
fn create_of_an_existing_segment_is_already_exists() {
    let dir = tempdir();
    let mut s = open(dir.path(), Options::new().prepare_size(8192));
    let header = [7u8; HEADER_LEN];
    let create = SegmentOp::Create {
        segment: SegmentId(3),
        header: &header,
    };
    run(&mut s, create).unwrap();
    let e = run(
        &mut s,
        SegmentOp::Create {
            segment: SegmentId(3),
            header: &[9u8; HEADER_LEN],
        },
    )
    .unwrap_err();
    assert_eq!(e.failure(), Failure::AlreadyExists);
    assert_eq!(e.path(), Some(s.segment_path(SegmentId(3)).as_path()));
    assert!(e.to_string().contains("0000000000000003.seg"), "{e}");
    let mut back = [0u8; HEADER_LEN];
    assert_eq!(s.read_at(SegmentId(3), 0, &mut back).unwrap(), HEADER_LEN);
    assert_eq!(back, header);
}

#[test]
fn writes_and_reads_land_where_asked_and_read_stops_at_the_end() {
    for (mode, options) in modes() {
        let dir = tempdir();
        let mut s = open(dir.path(), options);
        let id = SegmentId(0);
        let create = SegmentOp::Create {
            segment: id,
            header: &[1; HEADER_LEN],
        };
        run(&mut s, create).unwrap();
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
        // Direct I/O writes whole blocks: the file ends at the block's end, in zeros.
        let end = 300usize.next_multiple_of(s.block_size());
        assert_eq!(s.read_at(id, 0, &mut buf).unwrap(), end.min(512), "{mode}");
        assert_eq!(&buf[..HEADER_LEN], &[1; HEADER_LEN], "{mode}");
        assert!(buf[HEADER_LEN..200].iter().all(|b| *b == 0), "{mode}");
        assert_eq!(&buf[200..300], &data, "{mode}");
        assert!(buf[300..end.min(512)].iter().all(|b| *b == 0), "{mode}");
        assert_eq!(s.read_at(id, end as u64, &mut buf).unwrap(), 0, "{mode}");
        // Several completions come back, each once.
        s.submit(10, SegmentOp::Sync { segment: id }).unwrap();
        s.submit(11, SegmentOp::SyncNamespace).unwrap();
        let mut tokens = Vec::new();
        while s.in_flight() > 0 {
            s.wait().unwrap();
            while let Some((token, result)) = s.poll_completion() {
                result.unwrap();
                tokens.push(token);
            }
        }
        tokens.sort_unstable();
        assert_eq!(tokens, [10, 11], "{mode}");
    }
}

#[test]
fn errors_carry_the_operation_and_the_path() {
    let dir = tempdir();
    let not_a_dir = dir.path().join("plain");
    fs::write(&not_a_dir, b"x").unwrap();
    let e = UringStorage::open(&not_a_dir, Options::new()).unwrap_err();
    assert_eq!(e.path(), Some(not_a_dir.as_path()));
    assert!(e.to_string().contains("Not a directory"), "{e}");
    // A write to a segment that was never created.
    let mut s = open(&dir.path().join("log"), Options::new());
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
            "open of {} failed: No such file or directory (os error 2)",
            s.segment_path(SegmentId(9)).display()
        )
    );
    let e = s.read_at(SegmentId(9), 0, &mut [0; 8]).unwrap_err();
    assert_eq!(e.failure(), Failure::NotFound);
    assert!(e.to_string().starts_with("pread of "), "{e}");
    // A second opener is told about the lock, by the file backend's error.
    let e = UringStorage::open(dir.path().join("log"), Options::new()).unwrap_err();
    assert!(
        e.to_string().contains("is locked by another process"),
        "{e}"
    );
}

#[test]
fn listing_ignores_other_files() {
    let dir = tempdir();
    let mut s = open(dir.path(), Options::new());
    for name in [
        "0000000000000002.seg",
        "0000000000000000.seg",
        "notes.txt",
        "00000000000000zz.seg",
    ] {
        fs::write(dir.path().join(name), b"").unwrap();
    }
    assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(2)]);
}
