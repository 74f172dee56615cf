//! What is particular to the io_uring backend: writes in flight together, linked pairs,
//! failures through the ring, direct-I/O blocks, registered buffers, dropping with operations in
//! flight, and logs that the file backend reads byte for byte.

mod common;

use common::*;
use lamina_core::commit::{Pipeline, SyncPolicy};
use lamina_core::decode::Mode;
use lamina_core::io::{Error as _, ErrorType, Failure, SegmentOp, SegmentStorage};
use lamina_core::segment::HEADER_LEN;
use lamina_core::{Lsn, SegmentId};
use lamina_file::FileStorage;
use lamina_uring::{Op, Options, UringError, UringStorage};
use std::fs;
use std::path::Path;

/// Counts what the pipeline asks the backend for, and the most operations in flight at once.
struct Counting<'a> {
    inner: &'a mut UringStorage,
    writes: usize,
    linked: usize,
    syncs: usize,
    max_in_flight: usize,
}

impl<'a> Counting<'a> {
    fn new(inner: &'a mut UringStorage) -> Self {
        Counting {
            inner,
            writes: 0,
            linked: 0,
            syncs: 0,
            max_in_flight: 0,
        }
    }
}

impl ErrorType for Counting<'_> {
    type Error = UringError;
}

impl SegmentStorage for Counting<'_> {
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), UringError> {
        match op {
            SegmentOp::Write { sync: false, .. } => self.writes += 1,
            SegmentOp::Write { sync: true, .. } => self.linked += 1,
            SegmentOp::Sync { .. } => self.syncs += 1,
            _ => {}
        }
        self.inner.submit(token, op)?;
        self.max_in_flight = self.max_in_flight.max(self.inner.in_flight());
        Ok(())
    }

    fn poll_completion(&mut self) -> Option<lamina_core::io::Completion<UringError>> {
        self.inner.poll_completion()
    }

    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, UringError> {
        self.inner.read_at(segment, offset, buf)
    }

    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, UringError> {
        self.inner.list(out)
    }

    fn wait_for_completion(&mut self) -> Result<(), UringError> {
        self.inner.wait()
    }
}

/// Polls every completion, waiting while operations are in flight; returns them by token.
fn drain(s: &mut UringStorage) -> Vec<(u64, Result<(), UringError>)> {
    let mut done = Vec::new();
    loop {
        while let Some(c) = s.poll_completion() {
            done.push(c);
        }
        if s.in_flight() == 0 {
            break;
        }
        s.wait().expect("wait");
    }
    done.sort_by_key(|c| c.0);
    done
}

fn create(s: &mut UringStorage, id: SegmentId, header: &[u8]) {
    s.submit(
        0,
        SegmentOp::Create {
            segment: id,
            header,
        },
    )
    .unwrap();
    for (_, result) in drain(s) {
        result.expect("create");
    }
}

#[test]
fn io_uring_is_available_here() {
    // Not skipped when the kernel refuses: the open error names the file backend instead.
    let dir = tempdir();
    if let Err(e) = UringStorage::open(dir.path(), Options::new()) {
        panic!("{e}");
    }
}

#[test]
fn wait_returns_at_once_when_nothing_is_in_flight() {
    let dir = tempdir();
    let mut s = open(dir.path(), Options::new());
    s.wait().unwrap();
    assert!(s.poll_completion().is_none());
    // A completion already reported needs no waiting either.
    s.submit(3, SegmentOp::SyncNamespace).unwrap();
    s.wait().unwrap();
    assert_eq!(s.poll_completion().map(|c| c.0), Some(3));
}

#[test]
fn several_writes_in_flight_and_one_sync_at_a_time_make_everything_durable() {
    for (mode, options) in modes() {
        let dir = tempdir();
        let size = 1 << 20;
        let options = options.prepare_size(size);
        let policy = SyncPolicy::Batch {
            max_records: 4,
            max_bytes: 1 << 20,
            max_delay: u64::MAX,
        };
        let mut cfg = config(policy, size);
        cfg.max_writes_in_flight = 8;
        let mut written = Vec::new();
        {
            let mut uring = open(dir.path(), options);
            let mut s = Counting::new(&mut uring);
            let mut buf = vec![0u8; 64 * 1024];
            let mut p: Pipeline<'_, SLOTS> =
                Pipeline::create(&mut buf, cfg, first_header()).unwrap();
            // Appends pumped without waiting, so that batches pile up in flight.
            for n in 1..=400u64 {
                let lsn = loop {
                    match p.append(&payload(n), 0) {
                        Ok(lsn) => break lsn,
                        Err(_) => {
                            s.wait_for_completion().unwrap();
                            lamina_core::drive::pump(&mut p, &mut s, &mut |_| {});
                        }
                    }
                };
                written.push((lsn.0, payload(n)));
                lamina_core::drive::submit_all(&mut p, &mut s);
                lamina_core::drive::complete(&mut p, &mut s, usize::MAX);
            }
            p.flush();
            settle(&mut p, &mut s, &mut |_| {});
            assert_eq!(p.durable_lsn(), Lsn(400), "{mode}");
            assert!(
                s.max_in_flight >= 2,
                "{mode}: {} in flight at most",
                s.max_in_flight
            );
            assert!(s.writes >= 2, "{mode}: {} writes", s.writes);
            assert!(
                s.syncs <= s.writes,
                "{mode}: a sync covers several writes ({} syncs, {} writes)",
                s.syncs,
                s.writes
            );
            assert_eq!(s.linked, 0, "{mode}");
        }
        let mut s = open(dir.path(), options);
        let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
        assert_eq!(records, written, "{mode}");
        assert_eq!(recovered.report.cut, None, "{mode}");
    }
}

#[test]
fn linked_mode_makes_each_write_durable_with_its_own_fsync() {
    for (mode, options) in modes() {
        let dir = tempdir();
        let size = 8192;
        let mut cfg = config(SyncPolicy::EveryRecord, size);
        cfg.linked = true;
        let written = {
            let mut uring = open(dir.path(), options);
            let mut s = Counting::new(&mut uring);
            let mut buf = vec![0u8; 16 * 1024];
            let mut p: Pipeline<'_, SLOTS> =
                Pipeline::create(&mut buf, cfg, first_header()).unwrap();
            let written = append(&mut p, &mut s, 1..=120);
            assert_eq!(s.syncs, 0, "{mode}: no separate syncs");
            assert!(s.linked >= 120, "{mode}: {} linked writes", s.linked);
            written
        };
        let mut s = open(dir.path(), options);
        let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("recover");
        assert_eq!(records, written, "{mode}");
        assert!(recovered.report.segments >= 3, "{mode}: rolled over");
    }
}

/// A write far beyond the largest file the file system allows fails with `EFBIG`.
const BEYOND_MAX_FILE: u64 = 1 << 60;

#[test]
fn failed_linked_write_is_the_write_error_never_a_sync() {
    for (mode, options) in modes() {
        let dir = tempdir();
        let mut s = open(dir.path(), options);
        let id = SegmentId(0);
        create(&mut s, id, &[1; HEADER_LEN]);
        let data = [5u8; 64];
        for sync in [true, false] {
            let write = SegmentOp::Write {
                segment: id,
                offset: BEYOND_MAX_FILE,
                data: &data,
                sync,
            };
            s.submit(7, write).unwrap();
            let done = drain(&mut s);
            let [(7, Err(e))] = done.as_slice() else {
                panic!("{mode}: expected one failure, got {done:?}");
            };
            // The kernel cancelled the linked fsync; what is reported is the write's EFBIG.
            assert!(
                matches!(
                    e,
                    UringError::Io {
                        op: Op::Write,
                        segment: Some(_),
                        ..
                    }
                ),
                "{mode}: {e:?}"
            );
            assert_eq!(e.failure(), Failure::Other, "{mode}");
            assert_eq!(
                e.io_error().and_then(|e| e.raw_os_error()),
                Some(libc::EFBIG)
            );
            assert!(
                e.to_string().starts_with("io_uring write of "),
                "{mode}: {e}"
            );
            assert!(
                e.to_string().contains("0000000000000000.seg"),
                "{mode}: {e}"
            );
        }
        // The ring still works after a failure.
        let write = SegmentOp::Write {
            segment: id,
            offset: HEADER_LEN as u64,
            data: &data,
            sync: true,
        };
        s.submit(8, write).unwrap();
        assert!(matches!(drain(&mut s).as_slice(), [(8, Ok(()))]), "{mode}");
    }
}

#[test]
fn direct_writes_sharing_a_block_wait_for_each_other() {
    let dir = tempdir();
    let mut s = open(dir.path(), Options::new().direct(true));
    let id = SegmentId(0);
    create(&mut s, id, &[1; HEADER_LEN]);
    let pieces: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i + 10; 200]).collect();
    let mut offset = HEADER_LEN as u64;
    for (token, piece) in pieces.iter().enumerate() {
        let write = SegmentOp::Write {
            segment: id,
            offset,
            data: piece,
            sync: false,
        };
        s.submit(token as u64 + 1, write).unwrap();
        offset += piece.len() as u64;
    }
    // Each shares a block with the one before: one goes to the kernel, the others wait their
    // turn.
    assert!(s.block_size() >= 512);
    assert_eq!(s.held_back(), 3);
    let done = drain(&mut s);
    assert_eq!(done.len(), 4);
    assert!(done.iter().all(|c| c.1.is_ok()), "{done:?}");
    assert_eq!(s.held_back(), 0);
    // Each later write kept the earlier ones' bytes: nothing was padded over.
    let mut want = vec![1u8; HEADER_LEN];
    for piece in &pieces {
        want.extend_from_slice(piece);
    }
    want.resize(want.len().next_multiple_of(s.block_size()), 0);
    let mut back = vec![0u8; want.len() + 100];
    assert_eq!(s.read_at(id, 0, &mut back).unwrap(), want.len());
    back.truncate(want.len());
    assert_eq!(back, want);
}

#[test]
fn a_direct_write_sharing_only_its_first_block_sends_the_rest_at_once() {
    for linked in [false, true] {
        let dir = tempdir();
        let mut s = open(dir.path(), Options::new().direct(true));
        let block = s.block_size();
        let id = SegmentId(0);
        create(&mut s, id, &[1; HEADER_LEN]);
        let small = [7u8; 100];
        let large: Vec<u8> = (0..3 * block as u32).map(|i| (i % 249) as u8).collect();
        let writes = [(HEADER_LEN, &small[..]), (HEADER_LEN + 100, &large[..])];
        for (token, (offset, data)) in writes.iter().enumerate() {
            let write = SegmentOp::Write {
                segment: id,
                offset: *offset as u64,
                data,
                sync: linked,
            };
            s.submit(token as u64, write).unwrap();
        }
        // Only the first block of the second write waits for the first write.
        assert_eq!(s.held_back(), 1, "linked {linked}");
        assert_eq!(s.in_flight(), 2, "two operations, however many parts");
        let done = drain(&mut s);
        assert_eq!(done.len(), 2, "linked {linked}: {done:?}");
        assert!(
            done.iter().all(|c| c.1.is_ok()),
            "linked {linked}: {done:?}"
        );
        let mut want = vec![1u8; HEADER_LEN];
        want.extend_from_slice(&small);
        want.extend_from_slice(&large);
        let mut back = vec![0u8; want.len()];
        assert_eq!(s.read_at(id, 0, &mut back).unwrap(), want.len());
        assert_eq!(back, want, "linked {linked}");
    }
}

#[test]
fn buffered_adjacent_writes_go_out_together() {
    let dir = tempdir();
    let mut s = open(dir.path(), Options::new());
    let id = SegmentId(0);
    create(&mut s, id, &[1; HEADER_LEN]);
    for i in 0..4u64 {
        let data = [i as u8; 100];
        let write = SegmentOp::Write {
            segment: id,
            offset: HEADER_LEN as u64 + i * 100,
            data: &data,
            sync: false,
        };
        s.submit(i, write).unwrap();
    }
    assert_eq!(s.held_back(), 0);
    assert!(drain(&mut s).iter().all(|c| c.1.is_ok()));
}

#[test]
fn direct_write_into_a_block_a_write_in_flight_changes_is_refused() {
    let dir = tempdir();
    let mut s = open(dir.path(), Options::new().direct(true));
    let block = s.block_size() as u64;
    let id = SegmentId(0);
    create(&mut s, id, &[1; HEADER_LEN]);
    // Spans blocks 0 and 1; the segment's tail is now block 1.
    let long = vec![3u8; block as usize];
    let first = SegmentOp::Write {
        segment: id,
        offset: HEADER_LEN as u64,
        data: &long,
        sync: false,
    };
    s.submit(1, first).unwrap();
    // Starts inside block 0 while that write is still in flight.
    let second = SegmentOp::Write {
        segment: id,
        offset: HEADER_LEN as u64 + 8,
        data: &[4u8; 8],
        sync: false,
    };
    s.submit(2, second).unwrap();
    let done = drain(&mut s);
    assert!(done[0].1.is_ok(), "{done:?}");
    let Err(e) = &done[1].1 else {
        panic!("expected a refusal: {done:?}");
    };
    assert!(matches!(e, UringError::BlockInFlight { .. }), "{e:?}");
    assert_eq!(e.failure(), Failure::Unsupported);
}

#[test]
fn more_writes_than_the_queue_holds_all_complete() {
    for direct in [false, true] {
        let dir = tempdir();
        let mut s = open(dir.path(), Options::new().queue_depth(2).direct(direct));
        let id = SegmentId(0);
        create(&mut s, id, &[1; HEADER_LEN]);
        let block = s.block_size().max(512) as u64;
        for i in 0..20u64 {
            let data = vec![i as u8 + 1; 512];
            let write = SegmentOp::Write {
                segment: id,
                offset: block + i * 512.max(block),
                data: &data,
                sync: i % 3 == 0,
            };
            s.submit(i, write).unwrap();
        }
        let done = drain(&mut s);
        assert_eq!(done.len(), 20);
        assert!(done.iter().all(|c| c.1.is_ok()), "{done:?}");
        for i in 0..20u64 {
            let mut back = [0u8; 512];
            s.read_at(id, block + i * 512.max(block), &mut back)
                .unwrap();
            assert_eq!(back, [i as u8 + 1; 512], "direct {direct}, write {i}");
        }
    }
}

#[test]
fn writes_larger_than_a_registered_buffer_go_out_from_their_own() {
    for direct in [false, true] {
        let dir = tempdir();
        let options = Options::new()
            .fixed_buffers(true)
            .fixed_files(true)
            .buffer_size(4096)
            .direct(direct);
        let mut s = open(dir.path(), options);
        let id = SegmentId(0);
        create(&mut s, id, &[1; HEADER_LEN]);
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let small = [9u8; 100];
        let writes = [
            (HEADER_LEN as u64, &small[..]),
            (HEADER_LEN as u64 + 100, &big[..]),
        ];
        for (token, (offset, data)) in writes.iter().enumerate() {
            let write = SegmentOp::Write {
                segment: id,
                offset: *offset,
                data,
                sync: true,
            };
            s.submit(token as u64, write).unwrap();
        }
        assert!(drain(&mut s).iter().all(|c| c.1.is_ok()));
        let mut back = vec![0u8; 20_100];
        s.read_at(id, HEADER_LEN as u64, &mut back).unwrap();
        assert_eq!(&back[..100], &small);
        assert_eq!(&back[100..], &big[..]);
    }
}

#[test]
fn dropping_with_writes_in_flight_waits_for_them() {
    for (mode, options) in modes() {
        let dir = tempdir();
        let data: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i + 1; 4096]).collect();
        {
            let mut s = open(dir.path(), options);
            create(&mut s, SegmentId(0), &[1; HEADER_LEN]);
            for (i, d) in data.iter().enumerate() {
                let write = SegmentOp::Write {
                    segment: SegmentId(0),
                    offset: 4096 * (i as u64 + 1),
                    data: d,
                    sync: i % 2 == 0,
                };
                s.submit(i as u64, write).unwrap();
            }
            // Queued for the ring, never polled or waited for.
            assert_eq!(s.in_flight(), 8, "{mode}");
        }
        let mut f = FileStorage::open(dir.path(), lamina_file::Options::new()).unwrap();
        for (i, d) in data.iter().enumerate() {
            let mut back = vec![0u8; 4096];
            f.read_at(SegmentId(0), 4096 * (i as u64 + 1), &mut back)
                .unwrap();
            assert_eq!(&back, d, "{mode}: write {i}");
        }
    }
}

/// The `.seg` files of `dir`, by name, with their bytes.
fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Writes the same log (fixed nonces) through `storage` in `dir`.
fn write_fixed_log<S: SegmentStorage>(storage: &mut S, size: u64) {
    let mut cfg = config(
        SyncPolicy::Batch {
            max_records: 3,
            max_bytes: 1 << 20,
            max_delay: u64::MAX,
        },
        size,
    );
    cfg.nonce_seed = 0x5eed_5eed_5eed_5eed;
    let mut buf = vec![0u8; 16 * 1024];
    let mut p: Pipeline<'_, SLOTS> = Pipeline::create(&mut buf, cfg, header(0xabcd_ef01)).unwrap();
    append(&mut p, storage, 1..=100);
    p.close().unwrap();
    settle(&mut p, storage, &mut |_| {});
}

#[test]
fn the_same_appends_give_the_same_bytes_as_the_file_backend() {
    let size = 4096;
    for prepare in [0, size] {
        let by_file = tempdir();
        let mut f = FileStorage::open(
            by_file.path(),
            lamina_file::Options::new().prepare_size(prepare),
        )
        .unwrap();
        write_fixed_log(&mut f, size);
        let expected = segment_files(by_file.path());
        assert!(expected.len() >= 3, "{} segments", expected.len());
        for (mode, options) in modes() {
            let by_uring = tempdir();
            let mut s = open(by_uring.path(), options.prepare_size(prepare));
            let block = s.block_size();
            write_fixed_log(&mut s, size);
            drop(s);
            let got = segment_files(by_uring.path());
            assert_eq!(got.len(), expected.len(), "{mode}, prepare {prepare}");
            for ((name, want), (got_name, got)) in expected.iter().zip(&got) {
                assert_eq!(name, got_name);
                if block == 1 || prepare > 0 {
                    assert!(got == want, "{mode}, prepare {prepare}: {name} differs");
                } else {
                    // Direct I/O without preparation ends the file on a block boundary.
                    assert_eq!(
                        got.len(),
                        want.len().next_multiple_of(block),
                        "{mode}: {name}"
                    );
                    assert!(got.starts_with(want), "{mode}: {name} differs");
                    assert!(got[want.len()..].iter().all(|b| *b == 0), "{mode}: {name}");
                }
            }
        }
    }
}

#[test]
fn a_log_moves_between_the_backends_both_ways() {
    for (mode, options) in modes() {
        let dir = tempdir();
        let size = 8192;
        let mut buf = vec![0u8; 16 * 1024];
        let cfg = || config(SyncPolicy::EveryRecord, size);
        // Written by io_uring.
        let mut written = {
            let mut s = open(dir.path(), options);
            let mut p: Pipeline<'_, SLOTS> =
                Pipeline::create(&mut buf, cfg(), first_header()).unwrap();
            append(&mut p, &mut s, 1..=60)
        };
        // Read and continued by the file backend.
        {
            let mut f = FileStorage::open(dir.path(), lamina_file::Options::new()).unwrap();
            let (recovered, records) = recover_log(&mut f, Mode::Strict).expect("file reads uring");
            assert_eq!(records, written, "{mode}");
            let mut p: Pipeline<'_, SLOTS> =
                Pipeline::resume(&mut buf, cfg(), recovered.resume.unwrap()).unwrap();
            written.extend(append(&mut p, &mut f, 61..=90));
        }
        // Read and continued by io_uring again (a resumed, open segment: the first direct write
        // reads its block from disk).
        {
            let mut s = open(dir.path(), options);
            let (recovered, records) = recover_log(&mut s, Mode::Strict).expect("uring reads file");
            assert_eq!(records, written, "{mode}");
            let mut p: Pipeline<'_, SLOTS> =
                Pipeline::resume(&mut buf, cfg(), recovered.resume.unwrap()).unwrap();
            written.extend(append(&mut p, &mut s, 91..=120));
        }
        let mut f = FileStorage::open(dir.path(), lamina_file::Options::new()).unwrap();
        let (recovered, records) = recover_log(&mut f, Mode::Strict).expect("file reads both");
        assert_eq!(records, written, "{mode}");
        assert_eq!(recovered.report.cut, None, "{mode}");
    }
}

/// A small deterministic generator (xorshift64*), so that a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn appends_of_random_sizes_polled_at_random_land_exactly() {
    let rounds: u64 = std::env::var("LAMINA_URING_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for round in 0..rounds {
        for (mode, options) in modes() {
            let seed = 0x9e37_79b9_7f4a_7c15 ^ round;
            let mut rng = Rng(seed);
            let dir = tempdir();
            let mut s = open(dir.path(), options.buffer_size(2048));
            let id = SegmentId(0);
            create(&mut s, id, &[1; HEADER_LEN]);
            let mut expected = vec![1u8; HEADER_LEN];
            let mut tokens = 0u64;
            let mut done = 0u64;
            for _ in 0..200 {
                let len = 1 + rng.below(3000) as usize;
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let write = SegmentOp::Write {
                    segment: id,
                    offset: expected.len() as u64,
                    data: &data,
                    sync: rng.below(4) == 0,
                };
                s.submit(tokens, write).unwrap();
                tokens += 1;
                expected.extend_from_slice(&data);
                if rng.below(3) == 0 {
                    s.submit(tokens, SegmentOp::Sync { segment: id }).unwrap();
                    tokens += 1;
                }
                match rng.below(4) {
                    0 => s.wait().unwrap(),
                    1 => {}
                    _ => {
                        while let Some((token, result)) = s.poll_completion() {
                            result.unwrap_or_else(|e| panic!("{mode}, seed {seed}: {token}: {e}"));
                            done += 1;
                        }
                    }
                }
            }
            for (token, result) in drain(&mut s) {
                result.unwrap_or_else(|e| panic!("{mode}, seed {seed}: {token}: {e}"));
                done += 1;
            }
            assert_eq!(
                done, tokens,
                "{mode}, seed {seed}: every operation completed once"
            );
            drop(s);
            let on_disk = fs::read(dir.path().join("0000000000000000.seg")).unwrap();
            assert!(
                on_disk.starts_with(&expected),
                "{mode}, seed {seed}: contents differ"
            );
            // Direct I/O pads the last block with zeros; buffered I/O writes nothing more.
            let padding = on_disk.len() - expected.len();
            assert!(
                on_disk[expected.len()..].iter().all(|b| *b == 0),
                "{mode}, seed {seed}"
            );
            assert!(
                padding < if options.direct { 4096 } else { 1 },
                "{mode}, seed {seed}"
            );
        }
    }
}

/// Whether the kernel runs io-wq workers for ring operations this thread submitted (named
/// `iou-wrk-<submitter's thread id>`).
fn workers_of_this_thread() -> bool {
    // SAFETY: gettid has no preconditions.
    let name = format!("iou-wrk-{}", unsafe { libc::gettid() });
    fs::read_dir("/proc/self/task").unwrap().any(|task| {
        fs::read_to_string(task.unwrap().path().join("comm")).is_ok_and(|c| c.trim() == name)
    })
}

#[test]
fn operations_waited_for_before_any_poll_run_on_the_waiting_thread() {
    // Each mode on a thread of its own: io-wq workers belong to the thread that submitted.
    for (mode, options) in modes() {
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let dir = tempdir();
                let mut s = open(dir.path(), options);
                let id = SegmentId(0);
                create(&mut s, id, &[1; HEADER_LEN]);
                let (a, b) = ([3u8; 100], [4u8; 5000]);
                let at = |n: u64| HEADER_LEN as u64 + n;
                let write = |offset, data, sync| SegmentOp::Write {
                    segment: id,
                    offset,
                    data,
                    sync,
                };
                s.submit(1, write(at(0), &a, false)).unwrap();
                s.wait().unwrap();
                assert!(matches!(s.poll_completion(), Some((1, Ok(())))), "{mode}");
                s.submit(2, SegmentOp::Sync { segment: id }).unwrap();
                s.submit(3, write(at(100), &b, true)).unwrap();
                s.wait().unwrap();
                assert!(
                    matches!(drain(&mut s).as_slice(), [(2, Ok(())), (3, Ok(()))]),
                    "{mode}"
                );
                // Failures end as they do through the ring: the write's error, never a sync.
                for sync in [false, true] {
                    s.submit(4, write(BEYOND_MAX_FILE, &a, sync)).unwrap();
                    s.wait().unwrap();
                    let Some((4, Err(e))) = s.poll_completion() else {
                        panic!("{mode}: expected the write's failure");
                    };
                    assert!(matches!(e, UringError::Io { op: Op::Write, .. }), "{e:?}");
                    assert_eq!(
                        e.io_error().and_then(|e| e.raw_os_error()),
                        Some(libc::EFBIG)
                    );
                }
                if !options.direct {
                    // Buffered writes and syncs never went to the ring: no worker ran them.
                    assert!(!workers_of_this_thread(), "{mode}");
                }
                let mut back = vec![0u8; 5100];
                s.read_at(id, at(0), &mut back).unwrap();
                assert_eq!(&back[..100], &a, "{mode}");
                assert_eq!(&back[100..], &b, "{mode}");
            });
        });
    }
}

#[test]
fn a_sync_handed_over_at_a_poll_runs_on_a_ring_worker() {
    // The other way, which a log that goes on appending takes: a poll gives the kernel what is
    // queued, and the caller goes on while a worker runs it (the kernel never runs an fsync
    // inline).
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let dir = tempdir();
            let mut s = open(dir.path(), Options::new());
            let id = SegmentId(0);
            create(&mut s, id, &[1; HEADER_LEN]);
            assert!(!workers_of_this_thread());
            s.submit(1, SegmentOp::Sync { segment: id }).unwrap();
            let mut done: Vec<_> = s.poll_completion().into_iter().collect();
            done.extend(drain(&mut s));
            assert!(matches!(done.as_slice(), [(1, Ok(()))]), "{done:?}");
            assert!(workers_of_this_thread());
        });
    });
}
