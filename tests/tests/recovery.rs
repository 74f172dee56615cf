//! Recovery of whole logs on the simulated device, one scenario per test: torn tails with frames
//! beyond the cut, damage to acknowledged records in each mode, read errors, broken chains,
//! foreign and future-version segments.

use lamina_core::commit::{AppendError, Config, Pipeline, SyncPolicy};
use lamina_core::crc::crc32c;
use lamina_core::decode::Mode;
use lamina_core::drive;
use lamina_core::recover::{self, Damage, RecoverError};
use lamina_core::segment::HEADER_LEN;
use lamina_core::{Lsn, SegmentId};
use lamina_tests::harness::{MAX_PAYLOAD, first_header, recover_log};
use lamina_tests::sim::SimStorage;

fn payload(generation: u8, lsn: u64) -> Vec<u8> {
    vec![generation ^ (lsn as u8); 100]
}

fn config(policy: SyncPolicy, segment_size: u64) -> Config {
    Config {
        policy,
        max_writes_in_flight: 4,
        linked: false,
        segment_size,
        max_payload: MAX_PAYLOAD,
        nonce_seed: 99,
    }
}

/// Appends `n` records, driving I/O to completion after each; returns the durable LSN.
fn write_durably(storage: &mut SimStorage, log_id: u64, n: u64, segment_size: u64) -> Lsn {
    write_durably_listing(storage, log_id, n, segment_size).0
}

/// As [`write_durably`], also returning the records appended (LSN, payload).
fn write_durably_listing(
    storage: &mut SimStorage,
    log_id: u64,
    n: u64,
    segment_size: u64,
) -> (Lsn, Vec<(u64, Vec<u8>)>) {
    let mut appended = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let cfg = config(SyncPolicy::EveryRecord, segment_size);
    let mut p: Pipeline<'_, 8> = Pipeline::create(&mut buf, cfg, first_header(log_id)).unwrap();
    for _ in 0..n {
        loop {
            let lsn = p.next_lsn().0;
            match p.append(&payload(1, lsn), 0) {
                Ok(got) => {
                    appended.push((got.0, payload(1, lsn)));
                    break;
                }
                Err(AppendError::Full) => drive::pump_all(&mut p, storage, &mut |_| {}),
                Err(e) => panic!("{e}"),
            }
        }
        drive::pump_all(&mut p, storage, &mut |_| {});
    }
    (p.durable_lsn(), appended)
}

/// Offset of the frame of `lsn` in a single-segment log of 100-byte payloads (frame 136 bytes).
fn offset_of(lsn: u64) -> u64 {
    HEADER_LEN as u64 + (lsn - 1) * 136
}

#[test]
fn torn_tail_repair_with_frames_beyond_the_cut_never_resurrects() {
    let mut storage = SimStorage::new(1);
    storage.reorder = false;
    let mut buf = vec![0u8; 16 * 1024];
    let policy = SyncPolicy::Batch {
        max_records: 4,
        max_bytes: 1 << 20,
        max_delay: u64::MAX,
    };
    let mut p: Pipeline<'_, 8> =
        Pipeline::create(&mut buf, config(policy, 1 << 20), first_header(1)).unwrap();
    for lsn in 1..=20 {
        assert_eq!(p.append(&payload(1, lsn), 0), Ok(Lsn(lsn)));
    }
    drive::pump_all(&mut p, &mut storage, &mut |_| {});
    assert_eq!(p.durable_lsn(), Lsn(20));
    // Three batches of four go out together; the power fails before any completes.
    for lsn in 21..=32 {
        assert_eq!(p.append(&payload(1, lsn), 0), Ok(Lsn(lsn)));
    }
    assert_eq!(drive::submit_all(&mut p, &mut storage), 3);
    drop(p);
    // The first batch never reaches the device; the two after it do, whole.
    let (lost_from, lost_to) = (offset_of(21) as usize, offset_of(25) as usize);
    storage.crash_with(&mut |_, pos, len| {
        if (lost_from..lost_to).contains(&pos) {
            0
        } else {
            len
        }
    });

    let (recovered, got) =
        recover_log(&mut storage, Mode::Strict).expect("a torn tail, not corruption");
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    let cut = recovered.report.cut.expect("the tail is cut");
    assert_eq!((cut.offset, cut.next_lsn), (offset_of(21), Lsn(21)));
    assert_eq!(
        (cut.beyond.frames, cut.beyond.first_lsn, cut.beyond.last_lsn),
        (8, Lsn(25), Lsn(32))
    );

    // Resume: fewer bytes than were cut, then a crash with everything synced.
    let resume = recovered.resume.unwrap();
    let mut p: Pipeline<'_, 8> =
        Pipeline::resume(&mut buf, config(SyncPolicy::EveryRecord, 1 << 20), resume).unwrap();
    let a = p.append(&payload(2, 0), 0).unwrap();
    let b = p.append(&payload(2, 1), 0).unwrap();
    drive::pump_all(&mut p, &mut storage, &mut |_| {});
    assert_eq!(p.durable_lsn(), b);
    drop(p);
    storage.crash();

    let (_, got) = recover_log(&mut storage, Mode::Strict).unwrap();
    let mut want: Vec<(u64, Vec<u8>)> = (1..=20).map(|l| (l, payload(1, l))).collect();
    want.push((a.0, payload(2, 0)));
    want.push((b.0, payload(2, 1)));
    assert_eq!(got, want, "a frame from beyond the first cut came back");
}

#[test]
fn damage_to_an_acknowledged_record_is_corruption_in_strict_and_each_mode_does_what_it_says() {
    let mut storage = SimStorage::new(2);
    assert_eq!(write_durably(&mut storage, 1, 50, 1 << 20), Lsn(50));
    let victim = offset_of(10) as usize + 60;
    storage.flip_bit(SegmentId(0), victim, 3);
    let before = storage.bytes(SegmentId(0)).unwrap().to_vec();

    match recover_log(&mut storage, Mode::Strict) {
        Err(RecoverError::Corrupt(d)) => {
            assert_eq!(
                (d.segment, d.offset, d.expected_lsn),
                (SegmentId(0), offset_of(10), Lsn(10))
            );
            assert!(matches!(d.damage, Damage::Records(c) if c.witness_watermark >= Lsn(10)));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(
        storage.bytes(SegmentId(0)).unwrap(),
        before,
        "strict recovery changed the log"
    );

    let (r, got) = recover_log(&mut storage, Mode::PointInTime).unwrap();
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=9).collect::<Vec<_>>()
    );
    assert_eq!(r.report.cut.map(|c| c.next_lsn), Some(Lsn(10)));
    assert!(r.report.damage.is_some());

    let (r, got) = recover_log(&mut storage, Mode::SkipCorrupt).unwrap();
    let lsns: Vec<u64> = got.iter().map(|r| r.0).collect();
    assert_eq!(lsns, (1..=50).filter(|l| *l != 10).collect::<Vec<_>>());
    assert_eq!(r.report.skipped, 1);
    assert_eq!(r.resume.map(|r| r.next_lsn), Some(Lsn(51)));
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_and_point_in_time_discards_what_follows() {
    let mut storage = SimStorage::new(3);
    let (_, appended) = write_durably_listing(&mut storage, 1, 60, 2048);
    let segments = storage.segments();
    assert!(segments.len() >= 4, "{segments:?}");
    storage.flip_bit(SegmentId(1), HEADER_LEN + 40, 0);

    let Err(RecoverError::Corrupt(d)) = recover_log(&mut storage, Mode::Strict) else {
        panic!("expected corruption");
    };
    assert_eq!(d.segment, SegmentId(1));

    let (r, got) = recover_log(&mut storage, Mode::PointInTime).unwrap();
    assert_eq!(r.report.discard_from, Some(SegmentId(2)));
    assert!(
        !got.is_empty() && got[..] == appended[..got.len()],
        "not a prefix"
    );
    let mut ids = [SegmentId(0); 64];
    recover::discard(&mut storage, &mut ids, SegmentId(2)).unwrap();
    assert_eq!(storage.segments(), vec![SegmentId(0), SegmentId(1)]);

    let mut storage = SimStorage::new(3);
    write_durably(&mut storage, 1, 60, 2048);
    storage.flip_bit(SegmentId(1), HEADER_LEN + 40, 0);
    let (_, got) = recover_log(&mut storage, Mode::SkipCorrupt).unwrap();
    assert_eq!(got.len(), 59, "exactly the damaged record is skipped");
}

#[test]
fn a_read_error_aborts_recovery_and_cuts_nothing() {
    let mut storage = SimStorage::new(4);
    write_durably(&mut storage, 1, 80, 2048);
    let before: Vec<Vec<u8>> = storage
        .segments()
        .iter()
        .map(|s| storage.bytes(*s).unwrap().to_vec())
        .collect();
    for n in 1..12 {
        storage.faults.fail_read = Some(n);
        for mode in [Mode::Strict, Mode::PointInTime, Mode::SkipCorrupt] {
            storage.faults.fail_read = Some(n);
            match recover_log(&mut storage, mode) {
                Err(RecoverError::Io {
                    segment: Some(_), ..
                }) => {}
                other => panic!("read {n}: expected a read error, got {other:?}"),
            }
        }
    }
    storage.faults.fail_read = None;
    let after: Vec<Vec<u8>> = storage
        .segments()
        .iter()
        .map(|s| storage.bytes(*s).unwrap().to_vec())
        .collect();
    assert_eq!(before, after);
    assert_eq!(recover_log(&mut storage, Mode::Strict).unwrap().1.len(), 80);
}

#[test]
fn a_missing_segment_breaks_the_chain() {
    let mut storage = SimStorage::new(5);
    let (_, appended) = write_durably_listing(&mut storage, 1, 60, 2048);
    storage.remove(SegmentId(2));
    let Err(RecoverError::Corrupt(d)) = recover_log(&mut storage, Mode::Strict) else {
        panic!("expected corruption");
    };
    assert_eq!(d.segment, SegmentId(3));
    assert!(matches!(
        d.damage,
        Damage::Sequence {
            expected: SegmentId(2),
            found: SegmentId(3)
        }
    ));
    let (r, got) = recover_log(&mut storage, Mode::PointInTime).unwrap();
    assert_eq!(r.report.discard_from, Some(SegmentId(3)));
    assert!(
        !got.is_empty() && got[..] == appended[..got.len()],
        "not a prefix"
    );
}

#[test]
fn a_segment_of_another_log_is_foreign() {
    let mut storage = SimStorage::new(6);
    write_durably(&mut storage, 1, 60, 2048);
    let mut other = SimStorage::new(6);
    write_durably(&mut other, 2, 60, 2048);
    storage.set_bytes(SegmentId(1), other.bytes(SegmentId(1)).unwrap().to_vec());
    let Err(RecoverError::Corrupt(d)) = recover_log(&mut storage, Mode::Strict) else {
        panic!("expected corruption");
    };
    assert_eq!(d.segment, SegmentId(1));
    assert!(matches!(d.damage, Damage::Foreign { log_id: 2, .. }));
}

#[test]
fn a_segment_of_a_future_version_is_refused_in_every_mode() {
    let mut storage = SimStorage::new(7);
    write_durably(&mut storage, 1, 60, 2048);
    let mut bytes = storage.bytes(SegmentId(2)).unwrap().to_vec();
    bytes[8] = 2;
    let crc = crc32c(&bytes[..68]);
    bytes[68..72].copy_from_slice(&crc.to_le_bytes());
    storage.set_bytes(SegmentId(2), bytes);
    for mode in [Mode::Strict, Mode::PointInTime, Mode::SkipCorrupt] {
        match recover_log(&mut storage, mode) {
            Err(RecoverError::UnsupportedVersion {
                segment: SegmentId(2),
                version: 2,
            }) => {}
            other => panic!("{mode:?}: {other:?}"),
        }
    }
}

#[test]
fn trailing_blank_segments_are_reported_and_discarded() {
    let mut storage = SimStorage::new(8);
    write_durably(&mut storage, 1, 10, 1 << 20);
    storage.set_bytes(SegmentId(1), vec![0u8; 4096]);
    storage.set_bytes(SegmentId(2), vec![0u8; 100]);
    let (r, got) = recover_log(&mut storage, Mode::Strict).unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(
        (r.report.blank_segments, r.report.discard_from),
        (2, Some(SegmentId(1)))
    );
}

#[test]
fn frames_of_another_use_of_the_file_after_the_end_are_a_clean_end() {
    let mut storage = SimStorage::new(9);
    write_durably(&mut storage, 1, 10, 1 << 20);
    let mut old = SimStorage::new(9);
    write_durably(&mut old, 3, 40, 1 << 20);
    // The file held another log before: its frames lie beyond this log's end.
    let mut bytes = storage.bytes(SegmentId(0)).unwrap().to_vec();
    let end = bytes.len();
    bytes.extend_from_slice(&old.bytes(SegmentId(0)).unwrap()[end..]);
    storage.set_bytes(SegmentId(0), bytes);
    let (r, got) = recover_log(&mut storage, Mode::Strict).unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(r.report.cut, None, "stale frames are not a torn tail");
    assert_eq!(r.resume.map(|r| r.offset), Some(end as u64));
}

#[test]
fn a_delete_that_no_namespace_sync_made_durable_comes_back_after_a_crash() {
    use lamina_core::io::{SegmentOp, SegmentStorage};
    let mut storage = SimStorage::new(10);
    write_durably(&mut storage, 1, 60, 2048);
    let before = storage.bytes(SegmentId(3)).unwrap().to_vec();
    storage
        .submit(
            1,
            SegmentOp::Delete {
                segment: SegmentId(3),
            },
        )
        .unwrap();
    assert!(storage.poll_completion().unwrap().1.is_ok());
    assert_eq!(storage.bytes(SegmentId(3)), None);
    storage.crash();
    assert_eq!(storage.bytes(SegmentId(3)), Some(&before[..]));
    // After a namespace sync the delete holds.
    let mut ids = [SegmentId(0); 64];
    recover::discard(&mut storage, &mut ids, SegmentId(3)).unwrap();
    storage.crash();
    assert_eq!(storage.bytes(SegmentId(3)), None);
}

#[test]
fn skip_corrupt_reads_past_a_missing_segment_and_skips_a_foreign_one() {
    let mut storage = SimStorage::new(11);
    let (_, appended) = write_durably_listing(&mut storage, 1, 60, 2048);
    let mut other = SimStorage::new(11);
    write_durably(&mut other, 2, 60, 2048);
    let lost: Vec<u64> = {
        // Records of segment 2 go with it.
        let seg2 = storage.bytes(SegmentId(2)).unwrap().to_vec();
        let first = u64::from_le_bytes(seg2[40..48].try_into().unwrap());
        let seg3 = storage.bytes(SegmentId(3)).unwrap();
        let next = u64::from_le_bytes(seg3[40..48].try_into().unwrap());
        (first..next).collect()
    };
    storage.remove(SegmentId(2));
    storage.set_bytes(SegmentId(4), other.bytes(SegmentId(4)).unwrap().to_vec());
    let (r, got) = recover_log(&mut storage, Mode::SkipCorrupt).unwrap();
    let got_lsns: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert!(got_lsns.windows(2).all(|w| w[0] < w[1]), "LSNs go forward");
    for (lsn, payload) in &got {
        let want = appended
            .iter()
            .find(|a| a.0 == *lsn)
            .expect("only this log's records");
        assert_eq!(&want.1, payload);
    }
    assert!(lost.iter().all(|l| !got_lsns.contains(l)));
    assert!(r.report.skipped >= 2, "{:?}", r.report);
}
