//! Scenarios of one log on one backend: append, sync, reopen, roll-over, truncation, a torn
//! tail, corruption in each recovery mode, a log passed between backends, and a tail.

use crate::common::*;
use lamina::{BackendKind, Damage, Error, Lsn, Mode, Options, SegmentId};
use lamina_core::record::frame_len;
use lamina_core::segment::HEADER_LEN;
use std::fs::OpenOptions;
use std::time::Duration;

pub(crate) fn append_sync_reopen_keeps_every_synced_record(under: &Under, _: &str) {
    let dir = tempdir();
    let (mut log, report) = under.open(dir.path(), options());
    assert_eq!(report.records, 0);
    let appended = append_range(&mut log, 0..300);
    let last = appended.last().expect("records").0;
    assert!(log.sync().expect("sync") >= last);
    assert!(log.durable_lsn() >= last);
    assert_eq!(read_all(&mut log), appended);
    // Dropped without a close: a crash as far as the log can tell; every synced record stays.
    drop(log);
    let (mut log, report) = under.open(dir.path(), options());
    assert!(report.last_lsn >= last, "{report:?}");
    assert_eq!(read_all(&mut log), appended);
}

pub(crate) fn close_then_reopen_continues_after_the_seal(under: &Under, _: &str) {
    let dir = tempdir();
    let (mut log, _) = under.open(dir.path(), options());
    let mut appended = append_range(&mut log, 0..50);
    let segment = log.segment().sequence;
    let seal = log.close().expect("close");
    assert!(seal > appended.last().expect("records").0);
    let (mut log, _) = under.open(dir.path(), options());
    assert!(log.next_lsn() > seal, "continues after the seal");
    assert!(log.segment().sequence > segment, "in a new segment");
    appended.extend(append_range(&mut log, 50..60));
    log.close().expect("close");
    let (mut log, _) = under.open(dir.path(), options());
    assert_eq!(read_all(&mut log), appended);
}

pub(crate) fn records_roll_over_across_segments_and_come_back(under: &Under, _: &str) {
    let dir = tempdir();
    let (mut log, _) = under.open(dir.path(), options());
    let appended = append_range(&mut log, 0..1500);
    log.sync().expect("sync");
    assert!(
        log.segment().sequence >= SegmentId(4),
        "{:?}",
        log.segment()
    );
    assert_eq!(read_all(&mut log), appended);
    drop(log);
    assert!(segment_files(dir.path()).len() >= 5);
    let (mut log, report) = under.open(dir.path(), options());
    assert!(report.segments >= 5, "{report:?}");
    assert_eq!(read_all(&mut log), appended);
}

pub(crate) fn truncate_before_deletes_whole_old_segments_durably(under: &Under, _: &str) {
    let dir = tempdir();
    let (mut log, _) = under.open(dir.path(), options());
    let appended = append_range(&mut log, 0..1500);
    // Every segment exists once everything is durable (a backend that completes later may
    // still be behind the appends).
    log.sync().expect("sync");
    let before = segment_files(dir.path()).len();
    let mid = appended[appended.len() / 2].0;
    let deleted = log.truncate_before(mid).expect("truncate");
    assert!(deleted >= 1, "{deleted}");
    assert_eq!(segment_files(dir.path()).len(), before - deleted);
    // What is left: a suffix of the records, holding every one from `mid` on.
    let check = |read: &Records| {
        let first = read.first().expect("records left").0;
        assert!(first <= mid && first > Lsn::FIRST, "{first}");
        let from = appended.iter().position(|r| r.0 == first).expect("known");
        assert_eq!(read[..], appended[from..]);
    };
    check(&read_all(&mut log));
    assert_eq!(log.truncate_before(mid).expect("again"), 0, "nothing more");
    drop(log);
    let (mut log, _) = under.open(dir.path(), options());
    check(&read_all(&mut log));
}

/// Offset of the frame of `lsn` in the first segment of a fresh log of equal payloads.
fn offset_of(lsn: Lsn, payload: usize) -> u64 {
    (HEADER_LEN + (lsn.0 as usize - 1) * frame_len(payload)) as u64
}

/// 40 synced records of 100 bytes in one segment, the file cut at `into` bytes of the last
/// record's frame: recovery cuts that record, and the log goes on from its LSN.
fn torn_tail(under: &Under, into: u64) {
    let dir = tempdir();
    let mut opts = options();
    opts.config.segment_size = 1 << 20;
    let (mut log, _) = under.open(dir.path(), opts);
    let appended: Records = (0..40u8)
        .map(|i| {
            let p = vec![i; 100];
            (log.append(&p).expect("append"), p)
        })
        .collect();
    log.sync().expect("sync");
    drop(log);
    let last = appended.last().expect("records").0;
    let file = segment_files(dir.path()).pop().expect("a segment");
    OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(offset_of(last, 100) + into))
        .expect("cut the file");

    let (mut log, report) = under.open(dir.path(), opts);
    let cut = report.cut.expect("a torn tail is cut, not an error");
    assert_eq!(cut.next_lsn, last, "{report:?}");
    assert_eq!(read_all(&mut log), appended[..39]);
    let lsn = log.append(b"after the cut").expect("append");
    // The cut is sealed at its LSN; the log goes on after it.
    assert!(lsn >= last, "{lsn}");
    log.sync().expect("sync");
    drop(log);
    let (mut log, report) = under.open(dir.path(), opts);
    assert!(report.cut.is_none(), "{report:?}");
    let read = read_all(&mut log);
    assert_eq!(read[..39], appended[..39]);
    assert_eq!(read[39], (lsn, b"after the cut".to_vec()));
    assert_eq!(read.len(), 40);
}

pub(crate) fn torn_tail_mid_header_is_cut_and_the_log_goes_on(under: &Under, _: &str) {
    torn_tail(under, 10);
}

pub(crate) fn torn_tail_mid_payload_is_cut_and_the_log_goes_on(under: &Under, _: &str) {
    torn_tail(under, 80);
}

/// A closed log over several segments; a byte of a record in the second segment flipped in a
/// copy per mode. Returns the directories: original damaged, and what was appended.
fn damaged_log(under: &Under) -> (tempfile::TempDir, Records) {
    let dir = tempdir();
    let (mut log, _) = under.open(dir.path(), options());
    let appended = append_range(&mut log, 0..1500);
    log.close().expect("close");
    let files = segment_files(dir.path());
    assert!(files.len() >= 4, "{files:?}");
    lamina_tests::files::flip_bits(&files[1], 4_000, 0x10);
    (dir, appended)
}

fn opts(mode: Mode) -> Options {
    Options { mode, ..options() }
}

pub(crate) fn bit_flip_in_a_middle_segment_is_corruption_naming_the_file_in_strict(
    under: &Under,
    _: &str,
) {
    let (dir, _) = damaged_log(under);
    let second = segment_files(dir.path())[1].clone();
    let open =
        || match lamina::WriteAheadLog::open_dir(dir.path(), opts(Mode::Strict), under.backend) {
            Ok((_, report, _)) => panic!("opened a damaged log: {report:?}"),
            Err(e) => e,
        };
    let e = open();
    let name = second
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(e.to_string().contains(&name), "names {name}: {e}");
    // Damaged records in the middle of a segment (`Records`), when a later frame's watermark
    // proves they were durable; else the segment looks cut short (`Unsealed`), which a
    // backend whose syncs complete later (so watermarks lag behind) can leave. Both stop Strict.
    // The file backend completes every sync inside `submit`: always `Records` there.
    let damage = match &e {
        Error::Recover { damage, .. } => damage.as_ref().map(|d| d.damage),
        other => panic!("expected a recovery error, got {other:?}"),
    };
    if under.kind() == BackendKind::File {
        assert!(matches!(damage, Some(Damage::Records(_))), "{e}");
    } else {
        assert!(
            matches!(damage, Some(Damage::Records(_) | Damage::Unsealed { .. })),
            "{e}"
        );
    }
    assert_eq!(open(), e, "nothing was changed");
}

pub(crate) fn bit_flip_in_a_middle_segment_stops_there_in_point_in_time(under: &Under, _: &str) {
    let (dir, appended) = damaged_log(under);
    let (mut log, report) = under.open(dir.path(), opts(Mode::PointInTime));
    assert!(report.damage.is_some(), "{report:?}");
    let read = read_all(&mut log);
    assert!(
        !read.is_empty() && read.len() < appended.len(),
        "{}",
        read.len()
    );
    assert_eq!(read[..], appended[..read.len()], "a prefix, byte for byte");
    let lsn = log.append(b"after").expect("append");
    assert!(log.sync().expect("sync") >= lsn);
}

pub(crate) fn bit_flip_in_a_middle_segment_is_skipped_and_reported_in_skip_corrupt(
    under: &Under,
    _: &str,
) {
    let (dir, appended) = damaged_log(under);
    let (mut log, report) = under.open(dir.path(), opts(Mode::SkipCorrupt));
    assert!(report.skipped >= 1, "{report:?}");
    assert!(
        report
            .damage
            .is_some_and(|d| matches!(d.damage, Damage::Skipped(_))),
        "{report:?}"
    );
    let read = read_all(&mut log);
    let lost = appended.len() - read.len();
    assert!(
        (1..64).contains(&lost),
        "only the damaged records are lost: {lost}"
    );
    // Everything read was appended, in order; only the damaged records are missing.
    let mut rest = appended.iter();
    for r in &read {
        assert!(rest.any(|a| a == r), "{:?} was never appended here", r.0);
    }
    assert_eq!(
        read.last(),
        appended.last(),
        "reading goes on past the damage"
    );
}

pub(crate) fn a_log_written_here_is_read_and_continued_by_every_backend(under: &Under, _: &str) {
    for other in crate::all_backends() {
        let dir = tempdir();
        let (mut log, _) = under.open(dir.path(), options());
        let mut appended = append_range(&mut log, 0..700);
        log.sync().expect("sync");
        // Not closed: the other backend recovers a log cut anywhere.
        drop(log);
        let (mut log, _) = other.open(dir.path(), options());
        assert_eq!(
            read_all(&mut log),
            appended,
            "{} read by {}",
            under.name,
            other.name
        );
        appended.extend(append_range(&mut log, 700..900));
        log.close().expect("close");
        let (mut log, _) = under.open(dir.path(), options());
        assert_eq!(
            read_all(&mut log),
            appended,
            "{} continued by {}, read back by {}",
            under.name,
            other.name,
            under.name
        );
    }
}

pub(crate) fn a_tail_follows_the_log_from_its_own_reader(under: &Under, _: &str) {
    let dir = tempdir();
    let (mut log, _) = under.open(dir.path(), options());
    let mut tail = log.tail(Lsn::ZERO).expect("tail");
    let appended = append_range(&mut log, 0..400);
    log.sync().expect("sync");
    let follower = std::thread::spawn(move || {
        let mut read = Vec::new();
        while read.len() < 400 {
            match tail.next(Some(Duration::from_secs(20))).expect("tail") {
                Some(r) => read.push((r.lsn, r.payload.to_vec())),
                None => panic!("the tail saw no durable record for 20 s"),
            }
        }
        read
    });
    assert_eq!(follower.join().expect("follower"), appended);
    log.close().expect("close");
}
