//! Recycling: deleted segments kept as spare files and reused by later creates, within a bound;
//! and the safety of it end to end: a recycled file still holds its old records, which the new
//! segment's header (a fresh nonce, so a new checksum seed) must make invisible to recovery,
//! through a crash.

mod common;

use common::*;
use lamina_core::commit::{AppendError, Event, Pipeline, ResumeTail, SyncPolicy};
use lamina_core::decode::Mode;
use lamina_core::io::SegmentOp;
use lamina_core::record::frame_len;
use lamina_core::segment::SegmentHeader;
use lamina_core::{SegmentId, drive};
use lamina_file::{FileStorage, Options, names};
use lamina_tests::pipeline::{PAYLOAD, Records, SLOTS, config, first_header, listed, recover_log};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

const SIZE: u64 = 64 * 1024;

#[test]
fn recycling_keeps_at_most_the_bound_of_spares() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), Options::new().recycle(2)).unwrap();
    for id in 0..5 {
        let segment = SegmentId(id);
        create(&mut s, segment).unwrap();
    }
    for id in 0..4 {
        delete(&mut s, SegmentId(id)).unwrap();
    }
    run(&mut s, SegmentOp::SyncNamespace).unwrap();
    assert_eq!(s.stats().recycled, 2);
    assert_eq!(spare_files(dir.path()).len(), 2, "two kept, two unlinked");
    assert_eq!(s.spares_ready(), 2);
    assert_eq!(listed(&mut s), [SegmentId(4)]);
    // A delete repeated after a crash finds nothing and succeeds, recycling nothing.
    delete(&mut s, SegmentId(0)).unwrap();
    assert_eq!(s.stats().recycled, 2);

    // The next creates take them, then prepare inline.
    for id in 5..8 {
        let segment = SegmentId(id);
        create(&mut s, segment).unwrap();
    }
    let stats = s.stats();
    assert_eq!((stats.creates_from_spare, stats.creates_inline), (2, 6));
    assert_eq!(spare_files(dir.path()), Vec::<PathBuf>::new());
    // Without recycling, a delete unlinks.
    drop(s);
    let mut s = FileStorage::open(dir.path(), Options::new()).unwrap();
    delete(&mut s, SegmentId(4)).unwrap();
    run(&mut s, SegmentOp::SyncNamespace).unwrap();
    assert_eq!(spare_files(dir.path()), Vec::<PathBuf>::new());
    assert_eq!(listed(&mut s), [SegmentId(5), SegmentId(6), SegmentId(7)]);
}

#[test]
fn a_recycled_file_becomes_a_spare_only_after_the_namespace_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStorage::open(dir.path(), Options::new().recycle(1)).unwrap();
    for id in 0..2 {
        let segment = SegmentId(id);
        create(&mut s, segment).unwrap();
    }
    delete(&mut s, SegmentId(0)).unwrap();
    assert_eq!(spare_files(dir.path()).len(), 1, "renamed at once");
    assert_eq!(
        s.spares_ready(),
        0,
        "but not reused before its rename is durable"
    );
    let segment = SegmentId(2);
    create(&mut s, segment).unwrap();
    assert_eq!(s.stats().creates_inline, 3);
    run(&mut s, SegmentOp::SyncNamespace).unwrap();
    assert_eq!(s.spares_ready(), 1);
    let segment = SegmentId(3);
    create(&mut s, segment).unwrap();
    assert_eq!(s.stats().creates_from_spare, 1);
}

#[test]
fn a_short_recycled_file_is_extended_by_the_preparer_before_reuse() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A segment made without preparation: 72 bytes.
        let mut s = FileStorage::open(dir.path(), Options::new()).unwrap();
        let segment = SegmentId(0);
        create(&mut s, segment).unwrap();
        run(&mut s, SegmentOp::SyncNamespace).unwrap();
    }
    let options = Options::new()
        .prepare_size(SIZE)
        .prepare_ahead(1)
        .recycle(2);
    let mut s = FileStorage::open(dir.path(), options).unwrap();
    let wait = std::time::Duration::from_secs(30);
    assert!(s.wait_for_spares(wait));
    delete(&mut s, SegmentId(0)).unwrap();
    run(&mut s, SegmentOp::SyncNamespace).unwrap();
    assert!(s.wait_for_spares(wait));
    for id in 1..=2 {
        assert!(s.wait_for_spares(wait));
        let segment = SegmentId(id);
        create(&mut s, segment).unwrap();
        let len = fs::metadata(s.segment_path(segment)).unwrap().len();
        assert_eq!(len, SIZE, "segment {id} holds a whole prepared size");
    }
    assert_eq!(s.stats().creates_from_spare, 2);
    assert_eq!(s.stats().recycled, 1);
}

// The crash test: a log over several segments, the oldest deleted and recycled, the log rolled
// into the recycled file, a crash, and recovery.

/// Record `n`'s payload; `old` ones (written before the recycling) differ from new ones in
/// every byte, so a resurrected old record can never pass for a new one.
fn payload(n: u64, old: bool) -> Vec<u8> {
    let mut p = vec![if old { 0x0d } else { 0x4e }; PAYLOAD];
    p[..8].copy_from_slice(&n.to_le_bytes());
    p
}

/// Appends records `ns`, each durable before the next.
fn append(
    p: &mut Pipeline<'_, SLOTS>,
    s: &mut FileStorage,
    ns: std::ops::RangeInclusive<u64>,
    old: bool,
    rolled: &mut u64,
) -> Records {
    let mut written = Vec::new();
    for n in ns {
        let lsn = loop {
            match p.append(&payload(n, old), 0) {
                Ok(lsn) => break lsn,
                Err(AppendError::Full) => drive::pump_all(p, s, &mut |_| {}),
                Err(e) => panic!("append {n}: {e}"),
            }
        };
        written.push((lsn.0, payload(n, old)));
        drive::pump_all(p, s, &mut |e| {
            if let Event::Rolled { .. } = e {
                *rolled += 1;
            }
        });
        assert!(p.durable_lsn() >= lsn, "record {n} durable");
    }
    written
}

fn header_of(dir: &Path, id: SegmentId) -> SegmentHeader {
    let bytes = fs::read(dir.join(names::segment_file_name(id))).unwrap();
    SegmentHeader::parse(&bytes).unwrap()
}

/// What the crash did to the last records written into the recycled segment.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lost {
    /// Nothing: every record written is there.
    Nothing,
    /// The last `n` records never reached the disk: their bytes are the old file's.
    Whole(usize),
    /// The last record reached the disk only in part: its second half is the old file's.
    HalfOfLast,
}

/// Writes records over three segments, deletes the first (recycled), writes on until the log
/// rolls into the recycled file and 30 records land in it, "crashes" (drops everything,
/// puts back the old bytes under the records `lost` says), recovers, and checks: exactly the
/// records that survived, from the segments still there, none of the deleted segment's, a clean
/// end or a torn tail but never corruption; then that the log continues over it and reopens
/// clean.
fn recycled_segment_survives_a_crash(lost: Lost) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::new().prepare_size(SIZE).recycle(1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = Vec::new();
    let (recycled_id, stale, spare_ino);
    {
        let mut s = FileStorage::open(dir.path(), options).unwrap();
        let mut p: Pipeline<'_, SLOTS> = Pipeline::create(
            &mut buf,
            config(SyncPolicy::EveryRecord, SIZE),
            first_header(),
        )
        .unwrap();
        let mut rolled = 0;
        let mut n = 0;
        while rolled < 2 {
            n += 1;
            written.extend(append(&mut p, &mut s, n..=n, true, &mut rolled));
        }
        // Some records in the third segment too.
        written.extend(append(&mut p, &mut s, n + 1..=n + 50, true, &mut rolled));
        n += 50;
        assert_eq!(listed(&mut s), [SegmentId(0), SegmentId(1), SegmentId(2)]);

        delete(&mut s, SegmentId(0)).unwrap();
        run(&mut s, SegmentOp::SyncNamespace).unwrap();
        assert_eq!(s.stats().recycled, 1);
        let spares = spare_files(dir.path());
        assert_eq!(spares.len(), 1);
        // The old bytes, full of records that validate under segment 0's seed.
        stale = fs::read(&spares[0]).unwrap();
        spare_ino = fs::metadata(&spares[0]).unwrap().ino();
        assert!(
            stale.len() as u64 >= SIZE - 2 * frame_len(PAYLOAD) as u64,
            "a full segment"
        );

        // New records until the log rolls into the recycled file, then 30 more there.
        let mut rolls = 0;
        while rolls == 0 {
            n += 1;
            written.extend(append(&mut p, &mut s, n..=n, false, &mut rolls));
        }
        recycled_id = SegmentId(3);
        assert_eq!(listed(&mut s), [SegmentId(1), SegmentId(2), recycled_id]);
        written.extend(append(&mut p, &mut s, n + 1..=n + 30, false, &mut rolls));
        assert_eq!(s.stats().creates_from_spare, 1);
        let ino = fs::metadata(s.segment_path(recycled_id)).unwrap().ino();
        assert_eq!(ino, spare_ino, "segment 3 is the recycled file");
        // No close, no seal: a crash.
    }

    let path = dir.path().join(names::segment_file_name(recycled_id));
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let first_new = header_of(dir.path(), recycled_id).first_lsn.0;
    let frame = frame_len(PAYLOAD) as u64;
    // Segment 3 holds one frame per record from offset 72 (no seal or padding before them).
    let offset_of = |lsn: u64| 72 + (lsn - first_new) * frame;
    let last = written.last().unwrap().0;
    let restore = |from: u64, to: u64| {
        file.write_all_at(&stale[from as usize..to as usize], from)
            .unwrap();
    };
    let cut_at = match lost {
        Lost::Nothing => None,
        Lost::Whole(k) => {
            let from = offset_of(last + 1 - k as u64);
            restore(from, offset_of(last + 1));
            written.truncate(written.len() - k);
            Some(from)
        }
        Lost::HalfOfLast => {
            let from = offset_of(last);
            restore(from + frame / 2, from + frame);
            written.pop();
            Some(from)
        }
    };
    drop(file);
    if let Some(d) = cut_at {
        // The worst case for the reader: the old use wrote the same frame sizes from the same
        // offset, so a whole old record (of segment 0) lies exactly where recovery looks next.
        let d = d as usize;
        let old_lsn = u64::from_le_bytes(stale[d + 8..d + 16].try_into().unwrap());
        let old_payload = &stale[d + 32..d + 32 + PAYLOAD];
        assert!(
            old_lsn >= 1 && old_payload[8..].iter().all(|b| *b == 0x0d),
            "{old_lsn}"
        );
    }

    let first_kept = header_of(dir.path(), SegmentId(1)).first_lsn.0;
    let expected: Records = written
        .iter()
        .filter(|(lsn, _)| *lsn >= first_kept)
        .cloned()
        .collect();
    let mut s = FileStorage::open(dir.path(), options).unwrap();
    let (recovered, records) = match recover_log(&mut s, Mode::Strict) {
        Ok(r) => r,
        Err(e) => panic!("{lost:?}: recovery failed: {e:?}"),
    };
    assert_eq!(records, expected, "{lost:?}: exactly the surviving records");
    assert!(
        records.iter().all(|(_, p)| p[8] == 0x4e || p[8] == 0x0d),
        "no foreign payload"
    );
    let last_old_in_segment_0 = first_kept - 1;
    assert!(
        records.iter().all(|(lsn, _)| *lsn > last_old_in_segment_0),
        "nothing of the deleted segment"
    );
    let resume = recovered.resume.expect("a log to resume");
    match (lost, recovered.report.cut) {
        (Lost::HalfOfLast, Some(cut)) => {
            assert_eq!(cut.segment, recycled_id);
            assert_eq!(Some(cut.offset), cut_at);
            assert_eq!(cut.beyond.frames, 0, "no frame of the old use validates");
            // The old bytes after the cut do not validate and are not zeros, so the cut's
            // extent (what a repair by zeroing would have to zero) covers them too.
            assert!(cut.extent >= cut.offset + frame, "{cut:?}");
            assert_eq!(resume.tail, ResumeTail::Torn);
        }
        (Lost::Nothing | Lost::Whole(_), None) => {
            // The old bytes where records end read as a clean end.
            assert_eq!(resume.tail, ResumeTail::Open);
            let end = cut_at.unwrap_or(offset_of(last + 1));
            assert_eq!(resume.offset, end, "{lost:?}");
        }
        (lost, cut) => panic!("{lost:?}: unexpected end {cut:?}"),
    }

    // The log continues over the old bytes, and the next recovery is clean.
    let mut buf = vec![0u8; 64 * 1024];
    let mut p: Pipeline<'_, SLOTS> =
        Pipeline::resume(&mut buf, config(SyncPolicy::EveryRecord, SIZE), resume).unwrap();
    let mut rolls = 0;
    let more = append(&mut p, &mut s, 1_000_001..=1_000_010, false, &mut rolls);
    drop(p);
    drop(s);
    let mut s = FileStorage::open(dir.path(), options).unwrap();
    let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("clean");
    let mut expected = expected;
    expected.extend(more);
    assert_eq!(records, expected, "{lost:?}: after continuing");
    assert_eq!(recovered.report.cut, None);
}

#[test]
fn recycled_segment_crash_keeps_every_record() {
    recycled_segment_survives_a_crash(Lost::Nothing);
}

#[test]
fn recycled_segment_crash_losing_unsynced_records_is_a_clean_end() {
    recycled_segment_survives_a_crash(Lost::Whole(1));
    recycled_segment_survives_a_crash(Lost::Whole(7));
}

#[test]
fn recycled_segment_crash_tearing_the_last_record_is_a_torn_tail() {
    recycled_segment_survives_a_crash(Lost::HalfOfLast);
}
