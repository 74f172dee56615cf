//! The log scenarios each blocking backend's own tests run through the core's commit pipeline
//! and recovery (`lamina-file`'s `tests/log.rs`, and `lamina-uring`'s in each of its modes):
//! logs written, reopened, damaged on disk and recovered. Each takes an empty directory, a label
//! for its failures (the backend and mode) and `open(dir, prepare)`, which opens the backend on
//! `dir` with segments pre-zeroed to `prepare` bytes (0: not prepared). Segment files are named
//! `{sequence:016x}.seg`, as every directory backend names them.

use crate::files::flip_bits;
use crate::pipeline::{
    SLOTS, append, config, first_header, listed, offset_of, payload, recover_log, settle,
};
use lamina_core::commit::{Event, Pipeline, ResumeTail, SyncPolicy};
use lamina_core::decode::Mode;
use lamina_core::io::SegmentStorage;
use lamina_core::recover::{self, RecoverError};
use lamina_core::{Lsn, SegmentId};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The file of segment `id` in `dir`.
pub fn segment_file(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{:016x}.seg", id.0))
}

/// A new log whose records are each durable before the next, in segments of `size` bytes.
fn every_record(buf: &mut [u8], size: u64) -> Pipeline<'_, SLOTS> {
    Pipeline::create(buf, config(SyncPolicy::EveryRecord, size), first_header()).unwrap()
}

/// 200 records in batches, reopened: all come back from one segment, not cut, and the segment
/// file has its prepared size.
pub fn appended_records_come_back_after_reopen<S: SegmentStorage>(
    dir: &Path,
    label: &str,
    open: impl Fn(&Path, u64) -> S,
) {
    let policy = SyncPolicy::Batch {
        max_records: 16,
        max_bytes: 1 << 20,
        max_delay: u64::MAX,
    };
    let written = {
        let mut s = open(dir, 1 << 20);
        let mut buf = vec![0u8; 64 * 1024];
        let mut p: Pipeline<'_, SLOTS> =
            Pipeline::create(&mut buf, config(policy, 1 << 20), first_header()).unwrap();
        let written = append(&mut p, &mut s, 1..=200);
        assert_eq!(p.durable_lsn(), Lsn(200), "{label}");
        written
    };
    let mut s = open(dir, 1 << 20);
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
    assert_eq!(records, written, "{label}");
    assert_eq!(recovered.report.cut, None, "{label}");
    assert_eq!(listed(&mut s), [SegmentId(0)], "{label}");
    // Pre-zeroed: the file was written to its full size at creation and never grew.
    let path = segment_file(dir, SegmentId(0));
    assert_eq!(fs::metadata(path).unwrap().len(), 1 << 20, "{label}");
}

/// 150 records, each durable before the next, over segments of 4 KiB: at least four rolls,
/// every segment listed in order at its prepared size, and all records back.
pub fn records_roll_over_across_several_segments<S: SegmentStorage>(
    dir: &Path,
    label: &str,
    open: impl Fn(&Path, u64) -> S,
) {
    let size = 4096;
    let mut written = Vec::new();
    {
        let mut s = open(dir, size);
        let mut buf = vec![0u8; 16 * 1024];
        let mut p: Pipeline<'_, SLOTS> = every_record(&mut buf, size);
        let mut rolls = 0;
        for n in 1..=150 {
            let lsn = p.append(&payload(n), 0).unwrap();
            written.push((lsn.0, payload(n)));
            settle(&mut p, &mut s, &mut |e| {
                if let Event::Rolled { .. } = e {
                    rolls += 1;
                }
            });
            assert_eq!(p.durable_lsn(), lsn, "{label}");
        }
        assert!(rolls >= 4, "{label}: {rolls} rolls");
    }
    let mut s = open(dir, size);
    let ids = listed(&mut s);
    assert!(ids.len() >= 5, "{label}: {ids:?}");
    assert_eq!(
        ids,
        (0..ids.len() as u64).map(SegmentId).collect::<Vec<_>>(),
        "{label}"
    );
    for id in &ids {
        let file = segment_file(dir, *id);
        assert_eq!(
            fs::metadata(file).unwrap().len(),
            size,
            "{label}: segment {id}"
        );
    }
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
    assert_eq!(records, written, "{label}");
    assert_eq!(recovered.report.segments, ids.len() as u64, "{label}");
    assert_eq!(recovered.report.cut, None, "{label}");
}

/// A log closed, reopened (sealed), continued in a new segment, and reopened clean.
pub fn close_then_reopen_continues_in_a_new_segment<S: SegmentStorage>(
    dir: &Path,
    label: &str,
    open: impl Fn(&Path, u64) -> S,
) {
    let size = 64 * 1024;
    let mut buf = vec![0u8; 16 * 1024];
    let mut written = Vec::new();
    {
        let mut s = open(dir, size);
        let mut p: Pipeline<'_, SLOTS> = every_record(&mut buf, size);
        written.extend(append(&mut p, &mut s, 1..=10));
        p.close().unwrap();
        let mut closed = None;
        settle(&mut p, &mut s, &mut |e| {
            if let Event::Closed { last } = e {
                closed = Some(last);
            }
        });
        assert!(closed.is_some(), "{label}: the close completed");
    }
    {
        let mut s = open(dir, size);
        let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
        assert_eq!(records, written, "{label}");
        let resume = recovered.resume.unwrap();
        assert_eq!(resume.tail, ResumeTail::Sealed, "{label}");
        let mut p: Pipeline<'_, SLOTS> =
            Pipeline::resume(&mut buf, config(SyncPolicy::EveryRecord, size), resume).unwrap();
        written.extend(append(&mut p, &mut s, 11..=20));
        assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(1)], "{label}");
    }
    let mut s = open(dir, size);
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
    assert_eq!(records, written, "{label}");
    assert_eq!(recovered.report.cut, None, "{label}");
}

/// Cuts a segment file in the middle of record 20's frame (a log of [`payload`]s).
pub fn truncate_mid_record_20(file: &Path) {
    let f = OpenOptions::new().write(true).open(file).unwrap();
    f.set_len(offset_of(20) + 50).unwrap();
}

/// Garbles 40 bytes in the middle of record 20's frame (a log of [`payload`]s).
pub fn garble_mid_record_20(file: &Path) {
    let f = OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(&[0xa5; 40], offset_of(20) + 60).unwrap();
}

/// Writes 20 records into one segment (prepared to `prepare` bytes), damages the last one's
/// frame with `damage`, and checks that recovery cuts it, the resumed log seals the cut (a write
/// into the block the cut is in, read back from disk) and continues, and the next reopen is
/// clean.
pub fn torn_tail_is_cut_and_sealed<S: SegmentStorage>(
    dir: &Path,
    label: &str,
    open: impl Fn(&Path, u64) -> S,
    prepare: u64,
    damage: impl FnOnce(&Path),
) {
    let size = 64 * 1024;
    let mut buf = vec![0u8; 16 * 1024];
    let mut written;
    {
        let mut s = open(dir, prepare);
        let mut p: Pipeline<'_, SLOTS> = every_record(&mut buf, size);
        written = append(&mut p, &mut s, 1..=20);
        assert_eq!(p.durable_lsn(), Lsn(20), "{label}");
    }
    // The last record is lost to the damage.
    written.pop();
    damage(&segment_file(dir, SegmentId(0)));
    {
        let mut s = open(dir, prepare);
        let (recovered, records) =
            recover_log(&mut s, Mode::Strict).expect("a torn tail, not corruption");
        assert_eq!(records, written, "{label}");
        let cut = recovered.report.cut.expect("the tail is cut");
        assert_eq!(
            (cut.offset, cut.next_lsn),
            (offset_of(20), Lsn(20)),
            "{label}"
        );
        let resume = recovered.resume.unwrap();
        assert_eq!(resume.tail, ResumeTail::Torn, "{label}");
        let mut p: Pipeline<'_, SLOTS> =
            Pipeline::resume(&mut buf, config(SyncPolicy::EveryRecord, size), resume).unwrap();
        written.extend(append(&mut p, &mut s, 20..=25));
        assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(1)], "{label}");
    }
    let mut s = open(dir, prepare);
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("clean");
    assert_eq!(records, written, "{label}");
    assert_eq!(recovered.report.cut, None, "{label}");
}

/// A bit flipped in record 3 of a segment the log rolled past: Strict recovery reports
/// corruption in segment 0.
pub fn flipped_byte_in_a_sealed_segment_is_corruption_in_strict<S: SegmentStorage>(
    dir: &Path,
    label: &str,
    open: impl Fn(&Path, u64) -> S,
) where
    S::Error: std::fmt::Debug,
{
    let size = 4096;
    {
        let mut s = open(dir, size);
        let mut buf = vec![0u8; 16 * 1024];
        let mut p: Pipeline<'_, SLOTS> = every_record(&mut buf, size);
        append(&mut p, &mut s, 1..=100);
    }
    let at = usize::try_from(offset_of(3) + 40).unwrap();
    flip_bits(&segment_file(dir, SegmentId(0)), at, 0x10);
    let mut s = open(dir, size);
    match recover_log(&mut s, Mode::Strict) {
        Err(RecoverError::Corrupt(d)) => assert_eq!(d.segment, SegmentId(0), "{label}"),
        other => panic!("{label}: expected corruption, got {:?}", other.map(|r| r.0)),
    }
}

/// `recover::discard` of the segments from 2 on: they are gone from the listing and the
/// directory, and what remains reopens as a whole, sealed log.
pub fn discard_deletes_segments_durably<S: SegmentStorage>(
    dir: &Path,
    label: &str,
    open: impl Fn(&Path, u64) -> S,
) where
    S::Error: std::fmt::Debug,
{
    let size = 4096;
    {
        let mut s = open(dir, size);
        let mut buf = vec![0u8; 16 * 1024];
        let mut p: Pipeline<'_, SLOTS> = every_record(&mut buf, size);
        append(&mut p, &mut s, 1..=100);
        let n = listed(&mut s).len();
        assert!(n >= 4, "{label}: {n} segments");
        let mut ids = [SegmentId(0); 256];
        recover::discard(&mut s, &mut ids, SegmentId(2)).expect("discard");
        assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(1)], "{label}");
    }
    let mut on_disk: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk,
        ["0000000000000000.seg", "0000000000000001.seg"],
        "{label}"
    );
    // What remains is a whole log: segment 1 was sealed when it rolled.
    let mut s = open(dir, size);
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
    assert_eq!(records.first().map(|r| r.0), Some(1), "{label}");
    assert_eq!(
        recovered.resume.unwrap().tail,
        ResumeTail::Sealed,
        "{label}"
    );
}
