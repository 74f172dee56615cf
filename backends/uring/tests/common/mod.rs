//! What the io_uring backend's tests share: a driver loop that waits instead of spinning, the
//! modes to run each scenario in, and recovery into a list of records.
#![allow(dead_code, unreachable_pub)]

use lamina_core::commit::{AppendError, Config, Event, Pipeline, SyncPolicy};
use lamina_core::decode::{Mode, min_window};
use lamina_core::io::SegmentStorage;
use lamina_core::record::Kind;
use lamina_core::recover::{self, RecoverError, Recovered, Replay};
use lamina_core::segment::SegmentHeader;
use lamina_core::{Lsn, SegmentId, drive};
use lamina_uring::{Options, UringStorage};
use std::hash::{BuildHasher, RandomState};
use std::path::Path;

pub const MAX_PAYLOAD: u32 = 300;
pub const PAYLOAD: usize = 100;
pub const SLOTS: usize = 8;

pub type Records = Vec<(u64, Vec<u8>)>;

/// A directory for a log on the disk the build runs on (`CARGO_TARGET_TMPDIR`, under
/// `target/`), not `/tmp`, which may be a tmpfs.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir")
}

/// The modes each scenario runs in: buffered and direct I/O, with and without registered files
/// and buffers.
pub fn modes() -> [(&'static str, Options); 4] {
    [
        ("buffered", Options::new()),
        (
            "buffered+fixed",
            Options::new().fixed_files(true).fixed_buffers(true),
        ),
        ("direct", Options::new().direct(true)),
        (
            "direct+fixed",
            Options::new()
                .direct(true)
                .fixed_files(true)
                .fixed_buffers(true)
                .queue_depth(8),
        ),
    ]
}

/// Opens `dir`; io_uring refused by the kernel fails the test with the backend's clear error.
pub fn open(dir: &Path, options: Options) -> UringStorage {
    UringStorage::open(dir, options).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// Fresh randomness, never 0.
pub fn random() -> u64 {
    RandomState::new().hash_one(0u64) | 1
}

pub fn config(policy: SyncPolicy, segment_size: u64) -> Config {
    Config {
        policy,
        max_writes_in_flight: 4,
        linked: false,
        segment_size,
        max_payload: MAX_PAYLOAD,
        nonce_seed: random(),
    }
}

pub fn header(nonce: u64) -> SegmentHeader {
    SegmentHeader {
        core: 0,
        log_id: 11,
        sequence: SegmentId(0),
        nonce,
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    }
}

pub fn first_header() -> SegmentHeader {
    header(random())
}

pub fn payload(lsn: u64) -> Vec<u8> {
    let mut p = vec![lsn as u8; PAYLOAD];
    p[..8].copy_from_slice(&lsn.to_le_bytes());
    p
}

/// Drives until the pipeline asks for nothing and the backend has nothing in flight, blocking
/// in the backend (not spinning) while operations are in flight.
pub fn settle<S: SegmentStorage>(
    p: &mut Pipeline<'_, SLOTS>,
    s: &mut S,
    on_event: &mut dyn FnMut(Event),
) {
    loop {
        drive::pump_all(p, s, on_event);
        s.wait_for_completion().expect("wait");
        if !drive::pump(p, s, on_event) {
            break;
        }
    }
}

/// Appends the records numbered `ns`, settling after each, so that every frame's durable
/// watermark is the same whatever the backend; returns them as (LSN, payload).
pub fn append<S: SegmentStorage>(
    p: &mut Pipeline<'_, SLOTS>,
    s: &mut S,
    ns: std::ops::RangeInclusive<u64>,
) -> Records {
    let mut written = Vec::new();
    for n in ns {
        loop {
            match p.append(&payload(n), 0) {
                Ok(lsn) => {
                    written.push((lsn.0, payload(n)));
                    break;
                }
                Err(AppendError::Full) => settle(p, s, &mut |_| {}),
                Err(e) => panic!("append {n}: {e}"),
            }
        }
        settle(p, s, &mut |_| {});
    }
    p.flush();
    settle(p, s, &mut |_| {});
    if let Some(last) = written.last() {
        assert!(
            p.durable_lsn() >= Lsn(last.0),
            "everything appended is durable"
        );
    }
    written
}

pub fn recover_log<S: SegmentStorage>(
    s: &mut S,
    mode: Mode,
) -> Result<(Recovered, Records), RecoverError<S::Error>> {
    let mut ids = [SegmentId(0); 256];
    let mut window = vec![0u8; min_window(MAX_PAYLOAD as usize)];
    let mut records = Vec::new();
    let recovered = recover::recover(s, &mut ids, &mut window, mode, &mut |r| {
        if let Replay::Record(r) = r
            && r.header.kind == Kind::Data
        {
            records.push((r.header.lsn.0, r.payload.to_vec()));
        }
    })?;
    Ok((recovered, records))
}

pub fn listed<S: SegmentStorage>(s: &mut S) -> Vec<SegmentId> {
    let mut ids = [SegmentId(0); 256];
    let n = s.list(&mut ids).expect("list");
    ids[..n].to_vec()
}
