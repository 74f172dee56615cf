//! `WriteAheadLog` end to end on the simulated device: durability across reopen and crash,
//! roll-over, reading from any LSN, truncation, poisoning, torn tails.

use lamina::SegmentStorage as _;
use lamina::{Config, Error, Failure, Lsn, Mode, Options, SyncPolicy, WriteAheadLog};
use lamina_tests::hook::{Hooked, Hooks};
use lamina_tests::sim::SimStorage;

type Log = WriteAheadLog<SimStorage>;
type Records = Vec<(Lsn, Vec<u8>)>;

const MAX_PAYLOAD: u32 = 300;

fn options(policy: SyncPolicy) -> Options {
    Options {
        config: Config {
            policy,
            max_writes_in_flight: 8,
            linked: false,
            segment_size: 8 * 1024,
            max_payload: MAX_PAYLOAD,
            nonce_seed: 0,
        },
        mode: Mode::Strict,
        buffer_size: 16 * 1024,
        core: 0,
        log_id: None,
    }
}

fn batched() -> Options {
    options(SyncPolicy::Batch {
        max_records: 8,
        max_bytes: 2048,
        max_delay: 0,
    })
}

/// A payload that names its generation and index, 1 to 300 bytes long.
fn payload(generation: u32, i: u64) -> Vec<u8> {
    let mut p = format!("gen {generation} record {i} ").into_bytes();
    let len = 1 + (i as usize * 37) % MAX_PAYLOAD as usize;
    p.resize(
        len.max(p.len().min(MAX_PAYLOAD as usize)),
        b'a' + (i % 26) as u8,
    );
    p.truncate(MAX_PAYLOAD as usize);
    p
}

fn open(storage: SimStorage, options: Options) -> Log {
    match WriteAheadLog::open_with(storage, options) {
        Ok((log, _)) => log,
        Err(e) => panic!("open failed: {e}"),
    }
}

fn read_all(log: &mut Log, from: Lsn) -> Records {
    let mut out = Vec::new();
    log.read_from(from, |lsn, p| out.push((lsn, p.to_vec())))
        .expect("read_from");
    out
}

/// Appends `count` records of `generation`; returns them with their LSNs.
fn append_many(log: &mut Log, generation: u32, count: u64) -> Records {
    append_range(log, generation, 0..count)
}

/// Appends the records `range` of `generation`; returns them with their LSNs.
fn append_range(log: &mut Log, generation: u32, range: std::ops::Range<u64>) -> Records {
    range
        .map(|i| {
            let p = payload(generation, i);
            let lsn = log.append(&p).expect("append");
            (lsn, p)
        })
        .collect()
}

#[test]
fn append_sync_reopen_gives_back_every_record_byte_for_byte() {
    let mut log = open(SimStorage::new(1), batched());
    let written = append_many(&mut log, 1, 300);
    let durable = log.sync().expect("sync");
    assert_eq!(durable, written.last().unwrap().0);
    assert_eq!(read_all(&mut log, Lsn::FIRST), written);

    // Reopen after a clean close.
    let (closed, storage) = log.close_into_storage();
    closed.expect("close");
    let (mut log, report) = WriteAheadLog::open_with(storage, batched()).expect("reopen");
    assert!(report.cut.is_none());
    assert_eq!(read_all(&mut log, Lsn::FIRST), written);

    // Reopen after dropping the log without a close: synced records are there too.
    let more = append_many(&mut log, 2, 50);
    log.sync().expect("sync");
    let mut log = open(log.into_storage(), batched());
    let all: Records = written.iter().chain(more.iter()).cloned().collect();
    assert_eq!(read_all(&mut log, Lsn::FIRST), all);
    assert!(log.next_lsn() > all.last().unwrap().0);
}

#[test]
fn a_new_log_starts_empty_at_the_first_lsn() {
    let (mut log, report) = WriteAheadLog::open_with(SimStorage::new(2), batched()).expect("open");
    assert_eq!(report.records, 0);
    assert_eq!(log.next_lsn(), Lsn::FIRST);
    assert_eq!(log.durable_lsn(), Lsn::ZERO);
    assert!(read_all(&mut log, Lsn::FIRST).is_empty());
    assert_eq!(log.sync().expect("sync"), Lsn::ZERO);
}

#[test]
fn crash_after_sync_loses_nothing_synced_and_replays_only_what_was_written() {
    for seed in 0..50 {
        let mut storage = SimStorage::new(seed);
        storage.short_writes = seed % 2 == 0;
        let mut log = open(storage, batched());
        let synced = append_many(&mut log, 1, 120);
        log.sync().expect("sync");
        let unsynced = append_range(&mut log, 1, 120..160);
        let mut storage = log.into_storage();
        storage.crash();
        let mut log = open(storage, batched());
        let got = read_all(&mut log, Lsn::FIRST);
        let appended: Records = synced.iter().chain(unsynced.iter()).cloned().collect();
        assert!(
            got.len() >= synced.len(),
            "seed {seed}: synced records lost"
        );
        assert_eq!(got, appended[..got.len()], "seed {seed}: replay differs");
    }
}

#[test]
fn unsynced_records_under_a_manual_policy_never_come_back() {
    for seed in 0..20 {
        let mut log = open(SimStorage::new(seed), options(SyncPolicy::Manual));
        let synced = append_many(&mut log, 1, 30);
        log.sync().expect("sync");
        // Buffered only: never written, so a crash cannot bring any of them back.
        append_many(&mut log, 2, 10);
        let mut storage = log.into_storage();
        storage.crash();
        let mut log = open(storage, options(SyncPolicy::Manual));
        assert_eq!(read_all(&mut log, Lsn::FIRST), synced, "seed {seed}");
    }
}

#[test]
fn roll_over_spreads_the_log_over_segments_and_reads_back_whole() {
    let mut log = open(SimStorage::new(3), batched());
    let written = append_many(&mut log, 1, 2_000);
    log.sync().expect("sync");
    assert!(log.storage().segments().len() > 10);
    assert!(log.segment().sequence.0 > 10);
    let mut log = open(log.into_storage(), batched());
    assert_eq!(read_all(&mut log, Lsn::FIRST), written);
}

#[test]
fn read_from_starts_at_any_lsn_and_stops_at_the_durable_one() {
    let mut log = open(SimStorage::new(4), batched());
    let written = append_many(&mut log, 1, 1_000);
    log.sync().expect("sync");
    for start in [0usize, 1, 17, 499, 500, 998, 999] {
        let from = written[start].0;
        assert_eq!(read_all(&mut log, from), written[start..], "from {from}");
    }
    // Lsn::ZERO reads everything; beyond the end reads nothing.
    assert_eq!(read_all(&mut log, Lsn::ZERO), written);
    let next = log.next_lsn();
    assert!(read_all(&mut log, next).is_empty());
    assert!(read_all(&mut log, Lsn::MAX).is_empty());
    // What is appended and not yet durable is not read.
    let more = append_many(&mut log, 2, 3);
    let durable = log.durable_lsn();
    assert!(
        read_all(&mut log, Lsn::FIRST)
            .iter()
            .all(|(l, _)| *l <= durable)
    );
    log.sync().expect("sync");
    assert_eq!(read_all(&mut log, more[0].0), more);
}

#[test]
fn truncate_before_deletes_only_whole_segments_below_the_lsn() {
    let mut log = open(SimStorage::new(5), batched());
    let written = append_many(&mut log, 1, 2_000);
    log.sync().expect("sync");
    let before = log.storage().segments().len();
    let cut = written[1_000].0;
    let deleted = log.truncate_before(cut).expect("truncate");
    assert!(deleted > 0);
    assert_eq!(log.storage().segments().len(), before - deleted);
    let got = read_all(&mut log, Lsn::FIRST);
    // Every record from `cut` on is still there; what remains below it is a whole segment's.
    assert!(got.first().unwrap().0 <= cut);
    assert_eq!(got.last(), written.last());
    let from = written.iter().position(|r| r.0 == got[0].0).unwrap();
    assert_eq!(got, written[from..]);
    // Nothing to do the second time.
    assert_eq!(log.truncate_before(cut).expect("truncate"), 0);

    // Everything: the segment being appended to stays, and the log goes on.
    log.truncate_before(Lsn::MAX).expect("truncate");
    assert!(!log.storage().segments().is_empty());
    let more = append_many(&mut log, 2, 10);
    log.sync().expect("sync");
    // The deletes are durable: a crash does not bring the segments back.
    let segments = log.storage().segments();
    let mut storage = log.into_storage();
    storage.crash();
    assert_eq!(storage.segments(), segments);
    let mut log = open(storage, batched());
    let got = read_all(&mut log, Lsn::FIRST);
    assert!(got.ends_with(&more));
}

fn assert_poisoned(result: Result<impl std::fmt::Debug, Error>, failure: Failure) {
    match result {
        Err(Error::Poisoned { poison, cause }) => {
            assert_eq!(poison.failure, failure);
            assert!(cause.is_some(), "the backend's error is kept");
        }
        other => panic!("expected Poisoned, got {other:?}"),
    }
}

fn poisoning(seed: u64, inject: impl Fn(&mut SimStorage)) -> Failure {
    let mut log = open(SimStorage::new(seed), batched());
    let acked = append_many(&mut log, 1, 100);
    log.sync().expect("sync");
    inject(log.storage_mut());
    append_many(&mut log, 2, 5);
    let err = log.sync().expect_err("the fault surfaces");
    let Error::Poisoned { poison, .. } = err else {
        panic!("expected Poisoned, got {err:?}");
    };
    let text = err.to_string();
    assert!(text.contains("poisoned"), "{text}");
    // Every later call says so, with the original failure.
    assert_poisoned(log.append(b"x"), poison.failure);
    assert_poisoned(log.sync(), poison.failure);
    assert_poisoned(log.read_from(Lsn::FIRST, |_, _| {}), poison.failure);
    assert_poisoned(log.truncate_before(Lsn::MAX), poison.failure);
    let (closed, mut storage) = log.close_into_storage();
    assert_poisoned(closed, poison.failure);
    // Reopen after a crash: everything acknowledged before the failure is there.
    storage.crash();
    let mut log = open(storage, batched());
    let got = read_all(&mut log, Lsn::FIRST);
    assert!(got.len() >= acked.len());
    assert_eq!(got[..acked.len()], acked);
    poison.failure
}

#[test]
fn a_failed_write_poisons_every_later_call_and_reopen_keeps_what_was_acked() {
    let failure = poisoning(6, |s| s.faults.fail_write = Some((1, Failure::Io)));
    assert_eq!(failure, Failure::Io);
}

#[test]
fn a_failed_sync_poisons_every_later_call_and_reopen_keeps_what_was_acked() {
    let failure = poisoning(7, |s| s.faults.fail_sync = Some((1, Failure::NoSpace)));
    assert_eq!(failure, Failure::NoSpace);
}

#[test]
fn torn_tail_is_cut_and_a_second_crash_shows_nothing_from_beyond_the_cut() {
    let mut cuts = 0;
    for seed in 0..200 {
        let mut storage = SimStorage::new(seed);
        storage.short_writes = seed % 2 == 1;
        let every = options(SyncPolicy::EveryRecord);
        let mut log = open(storage, every);
        let synced = append_many(&mut log, 1, 50);
        log.sync().expect("sync");
        // Written, not synced: the crash keeps some sectors, tears others.
        let unsynced = append_range(&mut log, 1, 50..80);
        let mut storage = log.into_storage();
        storage.crash();

        let (mut log, report) = WriteAheadLog::open_with(storage, every).expect("reopen");
        cuts += u64::from(report.cut.is_some());
        let first: Records = read_all(&mut log, Lsn::FIRST);
        let gen1: Records = synced.iter().chain(unsynced.iter()).cloned().collect();
        assert!(first.len() >= synced.len(), "seed {seed}: synced lost");
        assert_eq!(first, gen1[..first.len()], "seed {seed}");

        // The log appends after the cut; crash again before and after a sync.
        let second = append_many(&mut log, 2, 20);
        log.sync().expect("sync");
        append_range(&mut log, 2, 20..25);
        let mut storage = log.into_storage();
        storage.crash();
        let mut log = open(storage, every);
        let got = read_all(&mut log, Lsn::FIRST);
        assert_eq!(got[..first.len()], first, "seed {seed}");
        let rest = &got[first.len()..];
        assert!(
            rest.len() >= second.len(),
            "seed {seed}: second generation lost"
        );
        for (i, (lsn, p)) in rest.iter().enumerate() {
            assert_eq!(
                *p,
                payload(2, i as u64),
                "seed {seed}: LSN {lsn} from beyond the cut"
            );
        }
        assert_eq!(rest[..second.len()], second, "seed {seed}");
    }
    assert!(cuts > 0, "no seed produced a torn tail");
}

#[test]
fn too_large_a_record_is_refused_and_the_log_goes_on() {
    let mut log = open(SimStorage::new(8), batched());
    let big = vec![0u8; MAX_PAYLOAD as usize + 1];
    let err = log.append(&big).expect_err("too large");
    assert!(matches!(err, Error::TooLarge { len, max } if len == big.len() && max == MAX_PAYLOAD));
    let lsn = log.append(b"fits").expect("append");
    assert_eq!(log.sync().expect("sync"), lsn);
}

#[test]
fn a_bad_configuration_is_an_error_before_anything_is_touched() {
    let mut opts = batched();
    opts.buffer_size = 64;
    let err = WriteAheadLog::open_with(SimStorage::new(9), opts)
        .err()
        .expect("refused");
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("buffer"), "{err}");
}

/// The simulated device, except that it stops completing anything once `stuck` is set.
struct Stuck {
    stuck: bool,
}

impl Hooks<SimStorage> for Stuck {
    fn poll_completion(
        &mut self,
        inner: &mut SimStorage,
    ) -> Option<lamina_core::io::Completion<Failure>> {
        if self.stuck {
            None
        } else {
            inner.poll_completion()
        }
    }
}

#[test]
fn a_backend_that_stops_completing_is_stalled_never_success() {
    let storage = Hooked {
        inner: SimStorage::new(10),
        hooks: Stuck { stuck: false },
    };
    let (mut log, _) = WriteAheadLog::open_with(storage, batched()).expect("open");
    log.append(b"first").expect("append");
    let durable = log.sync().expect("sync");
    log.storage_mut().hooks.stuck = true;
    let lsn = log.append(b"second").expect("append");
    match log.sync() {
        Err(Error::Stalled { durable: d, wanted }) => {
            assert_eq!(d, durable);
            assert_eq!(wanted, lsn);
        }
        other => panic!("expected Stalled, got {other:?}"),
    }
    assert_eq!(log.durable_lsn(), durable);
}

/// A closed log of several segments with a bit flipped in the middle of segment 1.
fn damaged_log() -> (SimStorage, Records) {
    let mut log = open(SimStorage::new(11), batched());
    let written = append_many(&mut log, 1, 400);
    let (closed, mut storage) = log.close_into_storage();
    closed.expect("close");
    assert!(storage.segments().len() > 3);
    let segment = lamina::SegmentId(1);
    let len = storage.bytes(segment).unwrap().len();
    storage.flip_bit(segment, len / 2, 3);
    (storage, written)
}

#[test]
fn middle_bit_flip_is_corruption_in_strict_naming_the_segment() {
    let (storage, _) = damaged_log();
    let err = WriteAheadLog::open_with(storage, batched())
        .err()
        .expect("strict refuses");
    let Error::Recover {
        damage: Some(damage),
        ..
    } = &err
    else {
        panic!("expected corruption, got {err:?}");
    };
    assert_eq!(damage.segment, lamina::SegmentId(1));
    assert!(
        err.to_string().contains("segment 0000000000000001"),
        "{err}"
    );
}

#[test]
fn middle_bit_flip_in_point_in_time_keeps_the_records_before_it() {
    let (storage, written) = damaged_log();
    let mut opts = batched();
    opts.mode = Mode::PointInTime;
    let (mut log, report) = WriteAheadLog::open_with(storage, opts).expect("open");
    assert!(report.damage.is_some() || report.cut.is_some());
    let got = read_all(&mut log, Lsn::FIRST);
    assert!(!got.is_empty() && got.len() < written.len());
    assert_eq!(got, written[..got.len()]);
    // The log goes on after the cut, and reopens cleanly.
    let more = append_range(&mut log, 1, 1_000..1_010);
    log.sync().expect("sync");
    let mut log = open(log.into_storage(), opts);
    let all: Records = got.iter().chain(more.iter()).cloned().collect();
    assert_eq!(read_all(&mut log, Lsn::FIRST), all);
}

#[test]
fn truncate_before_the_first_record_deletes_nothing() {
    let mut log = open(SimStorage::new(12), batched());
    let written = append_many(&mut log, 1, 1_000);
    log.sync().expect("sync");
    let segments = log.storage().segments();
    assert_eq!(log.truncate_before(Lsn::ZERO).expect("truncate"), 0);
    assert_eq!(log.truncate_before(Lsn::FIRST).expect("truncate"), 0);
    assert_eq!(log.storage().segments(), segments);
    assert_eq!(read_all(&mut log, Lsn::FIRST), written);
}

#[test]
fn the_error_can_cross_threads() {
    fn check<T: Send + Sync + 'static + std::error::Error>() {}
    check::<Error>();
}
