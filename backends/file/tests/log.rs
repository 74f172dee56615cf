//! The file backend under the core's commit pipeline and recovery: logs written, reopened,
//! damaged on disk and recovered, as the std runtime will drive them.

mod common;

use common::*;
use lamina_core::commit::{Event, Pipeline, ResumeTail, SyncPolicy};
use lamina_core::decode::Mode;
use lamina_core::io::{Error as _, Failure, SegmentOp, SegmentStorage};
use lamina_core::recover::{self, RecoverError};
use lamina_core::segment::HEADER_LEN;
use lamina_core::{Lsn, SegmentId};
use lamina_file::{FileStorage, Options, names};
use lamina_tests::pipeline::*;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Segments pre-zeroed to the segment size, as the runtime opens them.
fn open(dir: &Path, segment_size: u64) -> FileStorage {
    FileStorage::open(dir, Options::new().prepare_size(segment_size)).expect("open")
}

#[test]
fn appended_records_come_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let policy = SyncPolicy::Batch {
        max_records: 16,
        max_bytes: 1 << 20,
        max_delay: u64::MAX,
    };
    let written = {
        let mut s = open(dir.path(), 1 << 20);
        let mut buf = vec![0u8; 64 * 1024];
        let mut p: Pipeline<'_, SLOTS> =
            Pipeline::create(&mut buf, config(policy, 1 << 20), first_header()).unwrap();
        let written = append(&mut p, &mut s, 1..=200);
        assert_eq!(p.durable_lsn(), Lsn(200));
        written
    };
    let mut s = open(dir.path(), 1 << 20);
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
    assert_eq!(records, written);
    assert_eq!(recovered.report.cut, None);
    assert_eq!(listed(&mut s), [SegmentId(0)]);
    // Pre-zeroed: the file was written to its full size at creation and never grew.
    let path = dir.path().join("0000000000000000.seg");
    assert_eq!(fs::metadata(path).unwrap().len(), 1 << 20);
}

#[test]
fn records_roll_over_across_several_segments() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4096;
    let mut written = Vec::new();
    {
        let mut s = open(dir.path(), size);
        let mut buf = vec![0u8; 16 * 1024];
        let mut p: Pipeline<'_, SLOTS> = Pipeline::create(
            &mut buf,
            config(SyncPolicy::EveryRecord, size),
            first_header(),
        )
        .unwrap();
        let mut rolls = 0;
        for n in 1..=150 {
            let lsn = p.append(&payload(n), 0).unwrap();
            written.push((lsn.0, payload(n)));
            settle(&mut p, &mut s, &mut |e| {
                if let Event::Rolled { .. } = e {
                    rolls += 1;
                }
            });
            assert_eq!(p.durable_lsn(), lsn);
        }
        assert!(rolls >= 4, "{rolls} rolls");
    }
    let mut s = open(dir.path(), size);
    let ids = listed(&mut s);
    assert!(ids.len() >= 5, "{ids:?}");
    assert_eq!(
        ids,
        (0..ids.len() as u64).map(SegmentId).collect::<Vec<_>>()
    );
    for id in &ids {
        let file = dir.path().join(names::segment_file_name(*id));
        assert_eq!(fs::metadata(file).unwrap().len(), size, "segment {id}");
    }
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
    assert_eq!(records, written);
    assert_eq!(recovered.report.segments, ids.len() as u64);
    assert_eq!(recovered.report.cut, None);
}

#[test]
fn close_then_reopen_continues_in_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * 1024;
    let mut buf = vec![0u8; 16 * 1024];
    let mut written = Vec::new();
    {
        let mut s = open(dir.path(), size);
        let mut p: Pipeline<'_, SLOTS> = Pipeline::create(
            &mut buf,
            config(SyncPolicy::EveryRecord, size),
            first_header(),
        )
        .unwrap();
        written.extend(append(&mut p, &mut s, 1..=10));
        p.close().unwrap();
        let mut closed = None;
        settle(&mut p, &mut s, &mut |e| {
            if let Event::Closed { last } = e {
                closed = Some(last);
            }
        });
        assert!(closed.is_some(), "the close completed");
    }
    {
        let mut s = open(dir.path(), size);
        let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
        assert_eq!(records, written);
        let resume = recovered.resume.unwrap();
        assert_eq!(resume.tail, ResumeTail::Sealed);
        let mut p: Pipeline<'_, SLOTS> =
            Pipeline::resume(&mut buf, config(SyncPolicy::EveryRecord, size), resume).unwrap();
        written.extend(append(&mut p, &mut s, 11..=20));
        assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(1)]);
    }
    let mut s = open(dir.path(), size);
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
    assert_eq!(records, written);
    assert_eq!(recovered.report.cut, None);
}

/// Writes 20 records into one segment, damages the last one's frame with `damage`, and checks
/// that recovery cuts it, the resumed log seals the cut and continues, and the next reopen is
/// clean.
fn torn_tail_is_cut_and_sealed(prepare: u64, damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * 1024;
    let options = Options::new().prepare_size(prepare);
    let mut buf = vec![0u8; 16 * 1024];
    let mut written;
    {
        let mut s = FileStorage::open(dir.path(), options).unwrap();
        let mut p: Pipeline<'_, SLOTS> = Pipeline::create(
            &mut buf,
            config(SyncPolicy::EveryRecord, size),
            first_header(),
        )
        .unwrap();
        written = append(&mut p, &mut s, 1..=20);
        assert_eq!(p.durable_lsn(), Lsn(20));
    }
    // The last record is lost to the damage.
    written.pop();
    damage(&dir.path().join("0000000000000000.seg"));
    {
        let mut s = FileStorage::open(dir.path(), options).unwrap();
        let (recovered, records) =
            recover_log(&mut s, Mode::Strict).expect("a torn tail, not corruption");
        assert_eq!(records, written);
        let cut = recovered.report.cut.expect("the tail is cut");
        assert_eq!((cut.offset, cut.next_lsn), (offset_of(20), Lsn(20)));
        let resume = recovered.resume.unwrap();
        assert_eq!(resume.tail, ResumeTail::Torn);
        let mut p: Pipeline<'_, SLOTS> =
            Pipeline::resume(&mut buf, config(SyncPolicy::EveryRecord, size), resume).unwrap();
        written.extend(append(&mut p, &mut s, 20..=25));
        assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(1)]);
    }
    let mut s = FileStorage::open(dir.path(), options).unwrap();
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("clean");
    assert_eq!(records, written);
    assert_eq!(recovered.report.cut, None);
}

#[test]
fn torn_tail_truncated_mid_record_is_cut_and_sealed() {
    torn_tail_is_cut_and_sealed(0, |file| {
        let f = OpenOptions::new().write(true).open(file).unwrap();
        f.set_len(offset_of(20) + 50).unwrap();
    });
}

#[test]
fn torn_tail_garbled_in_prepared_segment_is_cut_and_sealed() {
    torn_tail_is_cut_and_sealed(64 * 1024, |file| {
        let f = OpenOptions::new().write(true).open(file).unwrap();
        f.write_all_at(&[0xa5; 40], offset_of(20) + 60).unwrap();
    });
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_corruption_in_strict() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4096;
    {
        let mut s = open(dir.path(), size);
        let mut buf = vec![0u8; 16 * 1024];
        let mut p: Pipeline<'_, SLOTS> = Pipeline::create(
            &mut buf,
            config(SyncPolicy::EveryRecord, size),
            first_header(),
        )
        .unwrap();
        append(&mut p, &mut s, 1..=100);
    }
    let file = dir.path().join("0000000000000000.seg");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let at = offset_of(3) + 40;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
    drop(f);
    let mut s = open(dir.path(), size);
    match recover_log(&mut s, Mode::Strict) {
        Err(RecoverError::Corrupt(d)) => assert_eq!(d.segment, SegmentId(0)),
        other => panic!("expected corruption, got {:?}", other.map(|r| r.0)),
    }
}

#[test]
fn discard_deletes_segments_durably() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4096;
    {
        let mut s = open(dir.path(), size);
        let mut buf = vec![0u8; 16 * 1024];
        let mut p: Pipeline<'_, SLOTS> = Pipeline::create(
            &mut buf,
            config(SyncPolicy::EveryRecord, size),
            first_header(),
        )
        .unwrap();
        append(&mut p, &mut s, 1..=100);
        let n = listed(&mut s).len();
        assert!(n >= 4, "{n} segments");
        let mut ids = [SegmentId(0); 256];
        recover::discard(&mut s, &mut ids, SegmentId(2)).expect("discard");
        assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(1)]);
    }
    let mut on_disk: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, ["0000000000000000.seg", "0000000000000001.seg"]);
    // What remains is a whole log: segment 1 was sealed when it rolled.
    let mut s = open(dir.path(), size);
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
    assert_eq!(records.first().map(|r| r.0), Some(1));
    assert_eq!(recovered.resume.unwrap().tail, ResumeTail::Sealed);
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
