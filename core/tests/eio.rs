//! The `embedded-io` adapter on an in-memory flash model: each partition keeps a *flushed* image
//! (what survives a power cut) and a *pending* image (what reads see); `flush` copies pending to
//! flushed, a power cut copies flushed back over pending. Writes may be short (the adapter must
//! finish them), reads may be short, and the Nth write or flush can fail after writing part of
//! its bytes.
//!
//! `LAMINA_EIO_SEEDS=N` runs N seeds of the randomised test instead of the default.

use embedded_io::{ErrorKind, ErrorType, Read, Seek, SeekFrom, Write};
use lamina_core::commit::{AppendError, Config, OpKind, SyncPolicy};
use lamina_core::decode::min_window;
use lamina_core::eio::{EioError, EioLog, EioLogError, EioStorage, Options};
use lamina_core::io::{Error as _, Failure, SegmentOp, SegmentStorage};
use lamina_core::record::Kind;
use lamina_core::recover::{RecoverError, RecoveryReport, Replay};
use lamina_core::segment::{self, SegmentHeader};
use lamina_core::{Lsn, SegmentId};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A small deterministic generator (xorshift64*).
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------------------------------------
// The flash model
// ---------------------------------------------------------------------------------------------

struct Part {
    flushed: Vec<u8>,
    pending: Vec<u8>,
}

struct Chip {
    parts: Vec<Part>,
    rng: Rng,
    /// `write` takes a random prefix of what it is offered, half the time.
    short_writes: bool,
    /// `read` returns a random prefix of what was asked, half the time.
    short_reads: bool,
    /// The Nth `write` call (1-based, counted over the whole chip) fails after writing a random
    /// prefix of its bytes.
    fail_write: Option<u64>,
    /// The Nth `flush` call fails after flushing nothing.
    fail_flush: Option<u64>,
    /// The Nth `write` call returns `Ok(0)` (a driver bug the adapter must survive).
    zero_write: Option<u64>,
    /// The Nth `read` call fails.
    fail_read: Option<u64>,
    writes: u64,
    reads: u64,
    flushes: u64,
}

/// One flash chip cut into equal partitions.
#[derive(Clone)]
struct Flash(Rc<RefCell<Chip>>);

impl Flash {
    /// A chip of `parts` partitions of `size` bytes, erased (all 0xFF).
    fn new(parts: usize, size: usize, seed: u64) -> Self {
        Flash(Rc::new(RefCell::new(Chip {
            parts: (0..parts)
                .map(|_| Part {
                    flushed: vec![0xFF; size],
                    pending: vec![0xFF; size],
                })
                .collect(),
            rng: Rng::new(seed),
            short_writes: false,
            short_reads: false,
            fail_write: None,
            fail_flush: None,
            zero_write: None,
            fail_read: None,
            writes: 0,
            reads: 0,
            flushes: 0,
        })))
    }

    /// Handles on every partition, as a driver would hand them out after a boot.
    fn partitions<const N: usize>(&self) -> [Partition; N] {
        assert_eq!(self.0.borrow().parts.len(), N);
        std::array::from_fn(|index| Partition {
            chip: self.0.clone(),
            index,
            pos: 0,
        })
    }

    /// Storage over a fresh set of handles.
    fn storage<const N: usize>(&self) -> EioStorage<Partition, N> {
        EioStorage::new(self.partitions())
    }

    /// Everything written since the last flush of each partition is lost.
    fn power_cut(&self) {
        for part in &mut self.0.borrow_mut().parts {
            part.pending = part.flushed.clone();
        }
    }

    fn chip(&self) -> std::cell::RefMut<'_, Chip> {
        self.0.borrow_mut()
    }

    /// Writes `bytes` into both images of `partition` at `offset` (damage from outside).
    fn poke(&self, partition: usize, offset: usize, bytes: &[u8]) {
        let mut chip = self.chip();
        let part = &mut chip.parts[partition];
        part.flushed[offset..offset + bytes.len()].copy_from_slice(bytes);
        part.pending[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
}

/// A partition handle: `embedded-io` over one partition of the chip.
struct Partition {
    chip: Rc<RefCell<Chip>>,
    index: usize,
    pos: u64,
}

impl ErrorType for Partition {
    type Error = ErrorKind;
}

impl Read for Partition {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let mut chip = self.chip.borrow_mut();
        chip.reads += 1;
        if chip.fail_read == Some(chip.reads) {
            return Err(ErrorKind::Other);
        }
        let short = chip.short_reads && chip.rng.chance(50);
        let cut = chip.rng.next_u64();
        let image = &chip.parts[self.index].pending;
        let start = (self.pos as usize).min(image.len());
        let mut n = buf.len().min(image.len() - start);
        if short && n > 1 {
            n = 1 + (cut % n as u64) as usize;
        }
        buf[..n].copy_from_slice(&image[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Partition {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut chip = self.chip.borrow_mut();
        chip.writes += 1;
        let nth = chip.writes;
        if chip.zero_write == Some(nth) {
            return Ok(0);
        }
        let size = chip.parts[self.index].pending.len();
        let start = self.pos as usize;
        if start >= size {
            return Err(ErrorKind::WriteZero);
        }
        let mut n = buf.len().min(size - start);
        let failing = chip.fail_write == Some(nth);
        if failing || (chip.short_writes && chip.rng.chance(50)) {
            n = chip.rng.below(n as u64) as usize + usize::from(!failing);
        }
        chip.parts[self.index].pending[start..start + n].copy_from_slice(&buf[..n]);
        if failing {
            return Err(ErrorKind::Other);
        }
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        let mut chip = self.chip.borrow_mut();
        chip.flushes += 1;
        if chip.fail_flush == Some(chip.flushes) {
            return Err(ErrorKind::Other);
        }
        let part = &mut chip.parts[self.index];
        part.flushed.clone_from(&part.pending);
        Ok(())
    }
}

impl Seek for Partition {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, ErrorKind> {
        let size = self.chip.borrow().parts[self.index].pending.len() as i128;
        let to = match pos {
            SeekFrom::Start(n) => i128::from(n),
            SeekFrom::End(d) => size + i128::from(d),
            SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
        };
        if to < 0 {
            return Err(ErrorKind::InvalidInput);
        }
        self.pos = to as u64;
        Ok(self.pos)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const MAX_PAYLOAD: u32 = 200;

fn config(policy: SyncPolicy, segment_size: u64, nonce_seed: u64) -> Config {
    Config {
        policy,
        max_writes_in_flight: 4,
        linked: false,
        segment_size,
        max_payload: MAX_PAYLOAD,
        nonce_seed,
    }
}

/// The payload of `lsn` in generation `generation`: differs between generations, so a record of
/// an earlier generation that came back would be seen.
fn payload(generation: u64, lsn: u64) -> Vec<u8> {
    let mut r = Rng::new(generation.wrapping_mul(1_000_003) ^ lsn);
    let len = r.below(u64::from(MAX_PAYLOAD) + 1) as usize;
    (0..len).map(|_| r.next_u64() as u8).collect()
}

type Records = Vec<(u64, Vec<u8>)>;

/// Opens the log, collecting the data records recovery hands over.
fn open<'a, const N: usize>(
    storage: &'a mut EioStorage<Partition, N>,
    buf: &'a mut [u8],
    config: Config,
) -> Result<(EioLog<'a, Partition, N>, RecoveryReport, Records), EioLogError> {
    let mut records = Vec::new();
    let (log, report) = EioLog::open(storage, buf, Options::new(config, 0x1A_4141), &mut |r| {
        if let Replay::Record(r) = r
            && r.header.kind == Kind::Data
        {
            records.push((r.header.lsn.0, r.payload.to_vec()));
        }
    })?;
    Ok((log, report, records))
}

/// Checks that `got` is exactly the records of `expected` from `from` up to its last LSN, and
/// that it reaches `acked`; returns `expected` cut down to what was recovered.
fn check(
    what: &str,
    expected: &BTreeMap<u64, Vec<u8>>,
    from: u64,
    acked: Lsn,
    got: &[(u64, Vec<u8>)],
) -> BTreeMap<u64, Vec<u8>> {
    let last = got.last().map_or(0, |(l, _)| *l);
    let want: Vec<(u64, Vec<u8>)> = expected
        .range(from..=last.max(from))
        .filter(|(l, _)| **l <= last)
        .map(|(l, p)| (*l, p.clone()))
        .collect();
    assert_eq!(
        got.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        want.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        "{what}: recovered LSNs are not the appended ones"
    );
    for (g, w) in got.iter().zip(&want) {
        assert!(g.1 == w.1, "{what}: record {} has other bytes", g.0);
    }
    let lost: Vec<u64> = expected
        .range(from..=acked.0.max(from))
        .map(|(l, _)| *l)
        .filter(|l| *l > last && *l <= acked.0)
        .collect();
    assert!(
        lost.is_empty(),
        "{what}: acknowledged records lost: {lost:?} (acked {acked})"
    );
    expected
        .range(..=last)
        .map(|(l, p)| (*l, p.clone()))
        .collect()
}

/// The first LSN the storage still holds (the oldest segment's first LSN).
fn kept_from<const N: usize>(storage: &mut EioStorage<Partition, N>) -> u64 {
    storage.scan().expect("scan");
    let mut ids = [SegmentId(0); N];
    let n = storage.list(&mut ids).expect("list");
    ids[..n]
        .first()
        .and_then(|id| storage.header_of(*id))
        .map_or(1, |h| h.first_lsn.0)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn synced_records_survive_a_power_cut_and_unsynced_ones_do_not() {
    let flash = Flash::new(4, 8192, 1);
    flash.chip().short_writes = true;
    let mut buf = vec![0u8; 16 * 1024];
    let cfg = config(SyncPolicy::Manual, 8192, 11);
    let mut storage = flash.storage::<4>();
    let mut expected = BTreeMap::new();
    let (mut log, report, got) = open(&mut storage, &mut buf, cfg).expect("open");
    assert!(got.is_empty());
    assert_eq!(report.records, 0);
    for _ in 0..30 {
        let lsn = log.next_lsn().0;
        let data = payload(1, lsn);
        assert_eq!(log.append(&data).expect("append"), Lsn(lsn));
        expected.insert(lsn, data);
    }
    let acked = log.sync().expect("sync");
    assert_eq!(acked, Lsn(30));
    for _ in 0..10 {
        let lsn = log.next_lsn().0;
        log.append(&payload(1, lsn)).expect("append");
    }
    assert_eq!(
        log.durable_lsn(),
        acked,
        "manual policy: nothing more written"
    );
    drop(log);
    flash.power_cut();

    let mut storage = flash.storage::<4>();
    let mut buf = vec![0u8; 16 * 1024];
    let cfg = config(SyncPolicy::Manual, 8192, 12);
    let (mut log, report, got) = open(&mut storage, &mut buf, cfg).expect("reopen");
    assert_eq!(got.len(), 30, "exactly the synced records");
    check("reopen", &expected, 1, acked, &got);
    assert_eq!(report.cut, None);
    assert_eq!(
        log.next_lsn(),
        Lsn(31),
        "LSNs continue after the last synced record"
    );
    let data = payload(2, 31);
    assert_eq!(log.append(&data).expect("append"), Lsn(31));
    expected.insert(31, data);
    assert_eq!(log.sync().expect("sync"), Lsn(31));
    drop(log);
    flash.power_cut();

    let mut storage = flash.storage::<4>();
    let mut buf = vec![0u8; 16 * 1024];
    let (_, _, got) =
        open(&mut storage, &mut buf, config(SyncPolicy::Manual, 8192, 13)).expect("third open");
    assert_eq!(got.len(), 31);
    check("third open", &expected, 1, Lsn(31), &got);
}

#[test]
fn segments_roll_round_the_partitions_and_recycled_partitions_hide_their_old_records() {
    let flash = Flash::new(4, 1024, 2);
    let mut expected = BTreeMap::new();
    let mut placements = Vec::new();
    let mut acked = Lsn::ZERO;
    let mut from = 1;
    for generation in 1..=6u64 {
        let mut storage = flash.storage::<4>();
        let mut buf = vec![0u8; 4096];
        let cfg = config(
            SyncPolicy::Batch {
                max_records: 3,
                max_bytes: 512,
                max_delay: 0,
            },
            1024,
            generation * 77,
        );
        let (mut log, _, got) = open(&mut storage, &mut buf, cfg).expect("open");
        expected = check(
            &format!("generation {generation}"),
            &expected,
            from,
            acked,
            &got,
        );
        for i in 0..25 {
            let lsn = log.next_lsn().0;
            let data = payload(generation, lsn);
            let got_lsn = log.append(&data).expect("append");
            expected.insert(got_lsn.0, data);
            let seg = log.segment().sequence;
            if let Some(p) = log.storage().partition_of(seg)
                && placements.last() != Some(&(seg, p))
            {
                placements.push((seg, p));
            }
            if i % 5 == 4 {
                acked = log.sync().expect("sync");
                // Keep only the segment holding the last few records.
                log.truncate_before(Lsn(acked.0.saturating_sub(8)))
                    .expect("truncate");
            }
        }
        acked = log.sync().expect("sync");
        drop(log);
        from = kept_from(&mut storage);
        flash.power_cut();
    }
    // Segment s went to partition s mod 4 (each new segment takes the next partition round the
    // ring), and every partition was reused several times.
    assert!(placements.len() > 12, "only {} segments", placements.len());
    for (seg, p) in &placements {
        assert_eq!(*p as u64, seg.0 % 4, "segment {seg} in partition {p}");
    }
    let mut storage = flash.storage::<4>();
    let mut buf = vec![0u8; 4096];
    let (_, _, got) = open(
        &mut storage,
        &mut buf,
        config(SyncPolicy::Manual, 1024, 999),
    )
    .expect("final open");
    check("final", &expected, from, acked, &got);
    assert!(!got.is_empty());
}

/// One randomised run: rounds of open (check), random appends, syncs, truncations, closes and
/// reads, then a power cut or a plain reboot.
fn random_run(seed: u64, rounds: u64) {
    let mut rng = Rng::new(seed);
    let size = 1024 + 512 * rng.below(4) as usize;
    let flash = Flash::new(6, size, seed ^ 0xF1A5);
    flash.chip().short_writes = true;
    flash.chip().short_reads = true;
    let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut acked = Lsn::ZERO;
    let mut from = 1;
    for round in 1..=rounds {
        let what = format!("seed {seed} round {round}");
        let policy = match rng.below(3) {
            0 => SyncPolicy::EveryRecord,
            1 => SyncPolicy::Batch {
                max_records: 1 + rng.below(8) as u32,
                max_bytes: 128 + rng.below(1024) as u32,
                max_delay: 0,
            },
            _ => SyncPolicy::Manual,
        };
        let min_segment = (segment::HEADER_LEN + 2 * 32 + MAX_PAYLOAD as usize + 8) as u64;
        let segment_size = min_segment + rng.below(size as u64 - min_segment + 1);
        let mut cfg = config(policy, segment_size, rng.next_u64());
        cfg.max_writes_in_flight = 1 + rng.below(8) as usize;
        cfg.linked = rng.chance(20);
        let mut buf = vec![0u8; 1024 + rng.below(4096) as usize];
        let mut storage = flash.storage::<6>();
        let opened = open(&mut storage, &mut buf, cfg);
        let (mut log, _, got) = match opened {
            Ok(opened) => opened,
            Err(EioLogError::Poisoned { poison, cause }) => {
                // The last round filled the device: truncate, as the owner would, and go on.
                assert_eq!(poison.failure, Failure::NoSpace, "{what}");
                assert_eq!(cause, Some(EioError::NoFreePartition), "{what}");
                let mut fix = flash.storage::<6>();
                assert!(fix.delete_before(acked.next()).expect("delete_before") > 0);
                from = kept_from(&mut fix);
                continue;
            }
            Err(e) => panic!("{what}: open: {e}"),
        };
        // Every write the log makes is flushed before its call returns, so what comes back is
        // exactly what was acknowledged: nothing more.
        let acked_last = expected.range(from..=acked.0.max(from)).last();
        assert_eq!(
            got.last().map(|(l, _)| *l),
            acked_last.filter(|(l, _)| **l <= acked.0).map(|(l, _)| *l),
            "{what}: recovered more or less than acknowledged (acked {acked})"
        );
        expected = check(&what, &expected, from, acked, &got);
        let last = got.last().map_or(from - 1, |(l, _)| *l);
        assert!(log.next_lsn().0 > last, "{what}: LSNs do not continue");
        acked = acked.max(log.durable_lsn());
        let mut close = false;
        for _ in 0..rng.below(60) {
            let roll = rng.below(100);
            if roll < 70 {
                let lsn = log.next_lsn().0;
                let data = payload(round, lsn);
                match log.append(&data) {
                    Ok(got) => {
                        expected.insert(got.0, data);
                    }
                    Err(AppendError::Poisoned(p)) => {
                        assert_eq!(p.failure, Failure::NoSpace, "{what}: {p}");
                        break;
                    }
                    Err(e) => panic!("{what}: append: {e}"),
                }
                acked = acked.max(log.durable_lsn());
            } else if roll < 88 {
                match log.sync() {
                    Ok(durable) => {
                        assert_eq!(durable, log.next_lsn().prev(), "{what}: sync left records");
                        acked = durable;
                    }
                    Err(EioLogError::Poisoned { poison, .. }) => {
                        assert_eq!(poison.failure, Failure::NoSpace, "{what}: {poison}");
                        break;
                    }
                    Err(e) => panic!("{what}: sync: {e}"),
                }
                if rng.chance(80) {
                    let upto = Lsn(acked.0.saturating_sub(rng.below(20)));
                    log.truncate_before(upto).expect("truncate");
                    from = from.max(kept_from_log(&log));
                }
            } else if roll < 97 {
                // Read back what is durable from somewhere and compare.
                let start = from + rng.below(acked.0.saturating_sub(from) + 2);
                let mut window = vec![0u8; min_window(MAX_PAYLOAD as usize)];
                let mut read = Vec::new();
                log.read_from(Lsn(start), &mut window, &mut |r| {
                    if r.header.kind == Kind::Data {
                        read.push((r.header.lsn.0, r.payload.to_vec()));
                    }
                })
                .unwrap_or_else(|e| panic!("{what}: read_from({start}): {e}"));
                let want: Records = expected
                    .range(start..=log.durable_lsn().0.max(start))
                    .filter(|(l, _)| **l <= log.durable_lsn().0)
                    .map(|(l, p)| (*l, p.clone()))
                    .collect();
                assert!(read == want, "{what}: read_from({start}) differs");
            } else {
                close = true;
                break;
            }
        }
        if close {
            let last = log.next_lsn().prev();
            match log.close() {
                Ok(seal) => {
                    assert!(seal > last, "{what}: seal {seal} not after {last}");
                    acked = last;
                }
                Err(EioLogError::Poisoned { poison, .. }) => {
                    assert_eq!(poison.failure, Failure::NoSpace, "{what}: {poison}");
                }
                Err(e) => panic!("{what}: close: {e}"),
            }
        } else {
            acked = acked.max(log.durable_lsn());
            drop(log);
        }
        from = from.max(kept_from(&mut storage));
        if rng.chance(85) {
            flash.power_cut();
        }
    }
    let mut storage = flash.storage::<6>();
    let mut buf = vec![0u8; 8192];
    match open(&mut storage, &mut buf, config(SyncPolicy::Manual, 1024, 5)) {
        Ok((_, _, got)) => {
            check(&format!("seed {seed} final"), &expected, from, acked, &got);
        }
        Err(EioLogError::Poisoned { poison, .. }) => assert_eq!(poison.failure, Failure::NoSpace),
        Err(e) => panic!("seed {seed} final: {e}"),
    }
}

/// The first LSN the log's storage still holds.
fn kept_from_log<const N: usize>(log: &EioLog<'_, Partition, N>) -> u64 {
    log.storage()
        .segments()
        .map(|(_, h)| h.first_lsn.0)
        .min()
        .unwrap_or(1)
}

#[test]
fn randomised_power_cuts_with_short_writes_keep_every_synced_record() {
    let seeds = std::env::var("LAMINA_EIO_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10u64);
    for seed in 0..seeds {
        random_run(seed, 30);
    }
}

/// Appends until the log is poisoned, syncing every few records; returns the records appended,
/// the LSN acknowledged and the poison.
fn append_until_poisoned<const N: usize>(
    what: &str,
    log: &mut EioLog<'_, Partition, N>,
) -> (BTreeMap<u64, Vec<u8>>, Lsn, lamina_core::commit::Poison) {
    let mut expected = BTreeMap::new();
    let mut acked = Lsn::ZERO;
    for i in 0..400 {
        let lsn = log.next_lsn().0;
        let data = payload(1, lsn);
        match log.append(&data) {
            Ok(got) => {
                expected.insert(got.0, data);
            }
            Err(AppendError::Poisoned(p)) => return (expected, acked, p),
            Err(e) => panic!("{what}: {e}"),
        }
        acked = log.durable_lsn();
        if i % 7 == 6 {
            match log.sync() {
                Ok(d) => acked = d,
                Err(EioLogError::Poisoned { poison, cause }) => {
                    assert!(cause.is_some(), "{what}: no cause");
                    return (expected, acked, poison);
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }
    panic!("{what}: never poisoned");
}

#[test]
fn a_failed_write_or_flush_poisons_the_log_and_loses_nothing_acknowledged() {
    let cases = (1..50u64).flat_map(|k| {
        [
            (k, true, true),
            (k, true, false),
            (k, false, true),
            (k, false, false),
        ]
    });
    for (k, fail_write, cut_power) in cases {
        if !fail_write && k > 25 {
            continue;
        }
        let what = format!(
            "{} {k} fails, power cut {cut_power}",
            if fail_write { "write" } else { "flush" }
        );
        let flash = Flash::new(6, 2048, k);
        flash.chip().short_writes = true;
        let mut storage = flash.storage::<6>();
        let mut buf = vec![0u8; 4096];
        let policy = SyncPolicy::Batch {
            max_records: 2,
            max_bytes: 1024,
            max_delay: 0,
        };
        let (mut log, _, _) = open(&mut storage, &mut buf, config(policy, 2048, k)).expect("open");
        {
            let mut chip = flash.chip();
            if fail_write {
                chip.fail_write = Some(chip.writes + k);
            } else {
                chip.fail_flush = Some(chip.flushes + k);
            }
        }
        let (expected, acked, poison) = append_until_poisoned(&what, &mut log);
        assert_eq!(poison.failure, Failure::Io, "{what}: {poison}");
        let cause = log.storage().last_error().expect("cause");
        let op = if fail_write {
            lamina_core::eio::DeviceOp::Write
        } else {
            lamina_core::eio::DeviceOp::Flush
        };
        assert!(
            matches!(cause, EioError::Device { op: o, kind: ErrorKind::Other, .. } if o == op),
            "{what}: {cause}"
        );
        assert!(
            matches!(log.append(b"more"), Err(AppendError::Poisoned(_))),
            "{what}: a poisoned log took an append"
        );
        assert!(
            matches!(log.sync(), Err(EioLogError::Poisoned { .. })),
            "{what}"
        );
        assert_eq!(
            log.durable_lsn(),
            acked,
            "{what}: durable moved after poisoning"
        );
        drop(log);
        {
            let mut chip = flash.chip();
            chip.fail_write = None;
            chip.fail_flush = None;
        }
        if cut_power {
            flash.power_cut();
        }
        let mut storage = flash.storage::<6>();
        let mut buf = vec![0u8; 4096];
        let (log, _, got) = open(
            &mut storage,
            &mut buf,
            config(SyncPolicy::Manual, 2048, k + 100),
        )
        .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        check(&what, &expected, 1, acked, &got);
        drop(log);
        // What the reopen recovered is durable now, and a cut tail stays cut.
        flash.power_cut();
        let mut storage = flash.storage::<6>();
        let mut buf = vec![0u8; 4096];
        let (_, _, again) = open(
            &mut storage,
            &mut buf,
            config(SyncPolicy::Manual, 2048, k + 200),
        )
        .unwrap_or_else(|e| panic!("{what}: third open: {e}"));
        assert!(
            again == got,
            "{what}: the second recovery differs from the first"
        );
    }
}

#[test]
fn a_full_device_poisons_with_no_space_until_old_segments_are_deleted() {
    let flash = Flash::new(2, 1024, 3);
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    let cfg = config(SyncPolicy::EveryRecord, 1024, 1);
    let (mut log, _, _) = open(&mut storage, &mut buf, cfg).expect("open");
    let mut expected = BTreeMap::new();
    let poison = loop {
        let lsn = log.next_lsn().0;
        let data = payload(1, lsn);
        match log.append(&data) {
            Ok(got) => {
                expected.insert(got.0, data);
            }
            Err(AppendError::Poisoned(p)) => break p,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(poison.op, OpKind::Create);
    assert_eq!(poison.segment, SegmentId(2));
    assert_eq!(poison.failure, Failure::NoSpace);
    let acked = log.durable_lsn();
    match log.sync() {
        Err(EioLogError::Poisoned { poison: p, cause }) => {
            assert_eq!(p, poison);
            assert_eq!(cause, Some(EioError::NoFreePartition));
            let message = EioLogError::Poisoned { poison: p, cause }.to_string();
            assert!(message.contains("no free partition"), "{message}");
        }
        other => panic!("sync on a full device: {other:?}"),
    }
    drop(log);
    flash.power_cut();

    // Reopening needs a new segment (the last one is sealed) and fails the same way.
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    match open(
        &mut storage,
        &mut buf,
        config(SyncPolicy::EveryRecord, 1024, 2),
    ) {
        Err(EioLogError::Poisoned { poison, cause }) => {
            assert_eq!(
                (poison.op, poison.failure),
                (OpKind::Create, Failure::NoSpace)
            );
            assert_eq!(cause, Some(EioError::NoFreePartition));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a full device"),
    }
    // A checkpoint covers segment 0: delete it, and the log goes on.
    let seg1 = storage.header_of(SegmentId(1)).expect("segment 1");
    assert_eq!(storage.delete_before(seg1.first_lsn).expect("delete"), 1);
    drop(storage);
    flash.power_cut();
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    let (mut log, _, got) = open(
        &mut storage,
        &mut buf,
        config(SyncPolicy::EveryRecord, 1024, 3),
    )
    .expect("reopen");
    check("after truncation", &expected, seg1.first_lsn.0, acked, &got);
    assert_eq!(log.segment().sequence, SegmentId(2));
    assert_eq!(log.storage().partition_of(SegmentId(2)), Some(0));
    let lsn = log.append(b"after").expect("append");
    assert!(lsn > acked);
    assert_eq!(log.sync().expect("sync"), lsn);
}

#[test]
fn a_partition_that_is_not_a_segment_is_refused_until_erased() {
    let flash = Flash::new(3, 1024, 4);
    flash.poke(1, 0, b"not a lamina segment");
    let mut storage = flash.storage::<3>();
    let mut buf = vec![0u8; 4096];
    let cfg = config(SyncPolicy::EveryRecord, 1024, 1);
    match open(&mut storage, &mut buf, cfg) {
        Err(EioLogError::Storage(EioError::Unidentified {
            partition: 1,
            error,
        })) => {
            assert_eq!(error, segment::HeaderError::BadMagic);
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened over a foreign partition"),
    }
    let mut storage = flash.storage::<3>();
    storage.erase(1).expect("erase");
    let mut buf = vec![0u8; 4096];
    let (mut log, _, got) = open(&mut storage, &mut buf, cfg).expect("open after erase");
    assert!(got.is_empty());
    log.append(b"x").expect("append");
    assert_eq!(log.sync().expect("sync"), Lsn(1));
}

#[test]
fn two_partitions_with_the_same_segment_are_refused() {
    let flash = Flash::new(3, 1024, 5);
    let header = SegmentHeader {
        core: 0,
        log_id: 9,
        sequence: SegmentId(4),
        nonce: 1,
        first_lsn: Lsn(10),
        epoch: 0,
        prev_nonce: 0,
    }
    .emit();
    flash.poke(0, 0, &header);
    flash.poke(2, 0, &header);
    let mut storage = flash.storage::<3>();
    let mut ids = [SegmentId(0); 3];
    assert_eq!(
        storage.list(&mut ids),
        Err(EioError::Duplicate {
            segment: SegmentId(4),
            partitions: [0, 2]
        })
    );
}

#[test]
fn erased_and_zeroed_partitions_are_free_and_list_reads_headers() {
    let flash = Flash::new(4, 512, 6);
    flash.poke(1, 0, &[0u8; segment::HEADER_LEN]);
    let mut storage = flash.storage::<4>();
    let mut ids = [SegmentId(0); 4];
    assert_eq!(storage.list(&mut ids), Ok(0));
    let header = |sequence| SegmentHeader {
        core: 0,
        log_id: 9,
        sequence: SegmentId(sequence),
        nonce: sequence,
        first_lsn: Lsn(1 + sequence),
        epoch: 0,
        prev_nonce: 0,
    };
    for (token, seq) in [(1, 7), (2, 5), (3, 6)] {
        let h = header(seq).emit();
        storage
            .submit(
                token,
                SegmentOp::Create {
                    segment: SegmentId(seq),
                    header: &h,
                },
            )
            .expect("submit");
        assert_eq!(storage.poll_completion(), Some((token, Ok(()))));
    }
    assert_eq!(storage.submit(4, SegmentOp::SyncNamespace), Ok(()));
    assert_eq!(storage.poll_completion(), Some((4, Ok(()))));
    assert_eq!(storage.poll_completion(), None);
    // Round the ring: 7 in 0, then 5 after the newest (7) in 1, then 6 after 7 again in 1's
    // successor.
    assert_eq!(storage.partition_of(SegmentId(7)), Some(0));
    assert_eq!(storage.partition_of(SegmentId(5)), Some(1));
    assert_eq!(storage.partition_of(SegmentId(6)), Some(2));
    // A fresh boot finds them from the headers alone.
    let mut storage = flash.storage::<4>();
    let mut short = [SegmentId(0); 2];
    assert_eq!(
        storage.list(&mut short),
        Ok(3),
        "more than fit: the count is still right"
    );
    assert_eq!(storage.list(&mut ids), Ok(3));
    assert_eq!(&ids[..3], &[SegmentId(5), SegmentId(6), SegmentId(7)]);
    let h = header(7).emit();
    assert_eq!(
        storage.submit(
            5,
            SegmentOp::Create {
                segment: SegmentId(7),
                header: &h
            }
        ),
        Err(EioError::Exists {
            segment: SegmentId(7),
            partition: 0
        })
    );
    storage
        .submit(
            6,
            SegmentOp::Delete {
                segment: SegmentId(6),
            },
        )
        .expect("delete");
    assert_eq!(storage.poll_completion(), Some((6, Ok(()))));
    flash.power_cut();
    let mut storage = flash.storage::<4>();
    assert_eq!(
        storage.list(&mut ids),
        Ok(2),
        "the delete was durable on completion"
    );
    assert_eq!(&ids[..2], &[SegmentId(5), SegmentId(7)]);
    // Deleting what is not there succeeds; writing to it does not start.
    storage
        .submit(
            7,
            SegmentOp::Delete {
                segment: SegmentId(6),
            },
        )
        .expect("delete");
    assert_eq!(storage.poll_completion(), Some((7, Ok(()))));
    assert_eq!(
        storage.submit(
            8,
            SegmentOp::Write {
                segment: SegmentId(6),
                offset: 72,
                data: b"x",
                sync: false
            }
        ),
        Err(EioError::NotFound {
            segment: SegmentId(6)
        })
    );
    assert_eq!(
        storage.submit(
            9,
            SegmentOp::Write {
                segment: SegmentId(5),
                offset: 510,
                data: b"xyz",
                sync: false
            }
        ),
        Err(EioError::PastEnd {
            segment: SegmentId(5),
            partition: 1,
            end: 513,
            size: 512
        })
    );
}

#[test]
fn a_driver_that_writes_zero_bytes_poisons_instead_of_panicking() {
    let flash = Flash::new(2, 2048, 7);
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    let (mut log, _, _) = open(
        &mut storage,
        &mut buf,
        config(SyncPolicy::EveryRecord, 2048, 1),
    )
    .expect("open");
    let writes = flash.chip().writes;
    flash.chip().zero_write = Some(writes + 1);
    assert!(log.append(b"hello").is_ok());
    match log.sync() {
        Err(EioLogError::Poisoned { poison, cause }) => {
            assert_eq!(poison.failure, Failure::NoSpace);
            assert_eq!(cause, Some(EioError::WriteZero { partition: 0 }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn device_error_kinds_map_to_the_documented_failures() {
    let device = |kind| EioError::Device {
        partition: 0,
        op: lamina_core::eio::DeviceOp::Write,
        kind,
    };
    let table = [
        (ErrorKind::OutOfMemory, Failure::NoSpace),
        (ErrorKind::WriteZero, Failure::NoSpace),
        (ErrorKind::NotFound, Failure::NotFound),
        (ErrorKind::AlreadyExists, Failure::AlreadyExists),
        (ErrorKind::Unsupported, Failure::Unsupported),
        (ErrorKind::InvalidInput, Failure::Other),
        (ErrorKind::Other, Failure::Io),
        (ErrorKind::Interrupted, Failure::Io),
        (ErrorKind::TimedOut, Failure::Io),
        (ErrorKind::InvalidData, Failure::Io),
        (ErrorKind::PermissionDenied, Failure::Io),
    ];
    for (kind, failure) in table {
        assert_eq!(device(kind).failure(), failure, "{kind:?}");
        assert_eq!(device(kind).device_kind(), Some(kind));
    }
    assert_eq!(EioError::NoFreePartition.failure(), Failure::NoSpace);
    assert_eq!(
        EioError::WriteZero { partition: 1 }.failure(),
        Failure::NoSpace
    );
    assert_eq!(
        EioError::NotFound {
            segment: SegmentId(1)
        }
        .failure(),
        Failure::NotFound
    );
    assert_eq!(EioError::QueueFull.failure(), Failure::Other);
}

#[test]
fn a_closed_log_reopens_in_a_new_segment_and_reads_back_from_any_lsn() {
    let flash = Flash::new(8, 1024, 8);
    let mut storage = flash.storage::<8>();
    let mut buf = vec![0u8; 4096];
    let (mut log, _, _) =
        open(&mut storage, &mut buf, config(SyncPolicy::Manual, 1024, 1)).expect("open");
    let mut expected = BTreeMap::new();
    for _ in 0..20 {
        let lsn = log.next_lsn().0;
        let data = payload(1, lsn);
        expected.insert(log.append(&data).expect("append").0, data);
    }
    let last = log.next_lsn().prev();
    let seal = log.close().expect("close");
    assert_eq!(seal, last.next());
    flash.power_cut();
    let mut storage = flash.storage::<8>();
    let mut buf = vec![0u8; 4096];
    let (mut log, report, got) =
        open(&mut storage, &mut buf, config(SyncPolicy::Manual, 1024, 2)).expect("reopen");
    check("reopen", &expected, 1, last, &got);
    assert_eq!(report.cut, None);
    assert_eq!(log.next_lsn(), seal.next());
    let closed_segment = report.segments - 1;
    assert_eq!(log.segment().sequence, SegmentId(closed_segment + 1));
    assert!(
        report.segments >= 2,
        "20 records of up to 200 bytes roll 1 KiB segments"
    );

    let mut window = vec![0u8; min_window(MAX_PAYLOAD as usize)];
    for start in [1, 2, 7, 13, 20, 21] {
        let mut read = Vec::new();
        let next = log
            .read_from(Lsn(start), &mut window, &mut |r| {
                read.push((r.header.lsn.0, r.header.kind, r.payload.to_vec()));
            })
            .expect("read_from");
        let data: Records = read
            .iter()
            .filter(|(_, k, _)| *k == Kind::Data)
            .map(|(l, _, p)| (*l, p.clone()))
            .collect();
        let want: Records = expected
            .range(start..)
            .map(|(l, p)| (*l, p.clone()))
            .collect();
        assert!(data == want, "read_from({start})");
        assert!(read.iter().all(|(l, _, _)| *l >= start));
        assert!(next > last, "read_from({start}) ended at {next}");
    }
    // Records not yet durable are not read.
    let unsynced = log.append(b"not yet").expect("append");
    let mut read = Vec::new();
    log.read_from(unsynced, &mut window, &mut |r| read.push(r.header.lsn))
        .expect("read_from");
    assert!(read.is_empty());
    log.sync().expect("sync");
    log.read_from(unsynced, &mut window, &mut |r| read.push(r.header.lsn))
        .expect("read_from");
    assert_eq!(read, vec![unsynced]);
}

#[test]
fn a_power_cut_before_any_record_leaves_an_openable_empty_log() {
    let flash = Flash::new(2, 1024, 9);
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    let (mut log, _, _) =
        open(&mut storage, &mut buf, config(SyncPolicy::Manual, 1024, 1)).expect("open");
    log.append(b"never synced").expect("append");
    drop(log);
    flash.power_cut();
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    let (log, report, got) =
        open(&mut storage, &mut buf, config(SyncPolicy::Manual, 1024, 2)).expect("reopen");
    assert!(got.is_empty());
    assert_eq!(
        report.segments, 1,
        "the created segment survived: its header was flushed"
    );
    assert_eq!(log.next_lsn(), Lsn::FIRST);
}

#[test]
fn a_segment_larger_than_a_partition_is_refused_before_anything_is_written() {
    let flash = Flash::new(2, 1024, 10);
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    match open(&mut storage, &mut buf, config(SyncPolicy::Manual, 2048, 1)) {
        Err(EioLogError::SegmentTooLarge {
            segment_size: 2048,
            partition_size: 1024,
        }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened"),
    }
    assert_eq!(flash.chip().writes, 0);
}

#[test]
fn a_read_error_during_recovery_stops_the_open_and_cuts_nothing() {
    let flash = Flash::new(2, 2048, 11);
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    let (mut log, _, _) = open(
        &mut storage,
        &mut buf,
        config(SyncPolicy::EveryRecord, 2048, 1),
    )
    .expect("open");
    let mut expected = BTreeMap::new();
    for _ in 0..10 {
        let lsn = log.next_lsn().0;
        let data = payload(1, lsn);
        expected.insert(log.append(&data).expect("append").0, data);
    }
    let acked = log.sync().expect("sync");
    drop(log);
    flash.power_cut();
    // The open reads the two headers twice (its own scan, then recovery's listing); the fifth
    // read is recovery's first read of segment 0.
    let reads = flash.chip().reads;
    flash.chip().fail_read = Some(reads + 5);
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    match open(
        &mut storage,
        &mut buf,
        config(SyncPolicy::EveryRecord, 2048, 2),
    ) {
        Err(EioLogError::Recover(RecoverError::Io {
            segment: Some(SegmentId(0)),
            error,
            ..
        })) => assert_eq!(error.device_kind(), Some(ErrorKind::Other)),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened through a read error"),
    }
    flash.chip().fail_read = None;
    let mut storage = flash.storage::<2>();
    let mut buf = vec![0u8; 4096];
    let (_, report, got) = open(
        &mut storage,
        &mut buf,
        config(SyncPolicy::EveryRecord, 2048, 3),
    )
    .expect("reopen");
    assert_eq!(report.cut, None);
    assert_eq!(got.len(), 10);
    check("after the read error", &expected, 1, acked, &got);
}
