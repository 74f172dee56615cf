//! The core's commit pipeline and recovery over any blocking backend, for the backends' own
//! tests (`lamina-file`'s and `lamina-uring`'s): a configuration, fresh headers, numbered
//! payloads, appending until durable, recovering into a list of records, listing segments.

use lamina_core::commit::{AppendError, Config, Event, Pipeline, SyncPolicy};
use lamina_core::decode::{Mode, min_window};
use lamina_core::io::SegmentStorage;
use lamina_core::record::{Kind, frame_len};
use lamina_core::recover::{self, RecoverError, Recovered, Replay};
use lamina_core::segment::{HEADER_LEN, SegmentHeader};
use lamina_core::{Lsn, SegmentId, drive};
use std::hash::{BuildHasher, RandomState};

/// The largest payload the test logs take.
pub const MAX_PAYLOAD: u32 = 300;
/// The length of [`payload`]'s payloads.
pub const PAYLOAD: usize = 100;
/// The pipeline's batch slots.
pub const SLOTS: usize = 8;

/// Records as a test sees them: (LSN, payload).
pub type Records = Vec<(u64, Vec<u8>)>;

/// Fresh randomness, never 0 (the nonces must differ on every open).
pub fn random() -> u64 {
    RandomState::new().hash_one(0u64) | 1
}

/// A pipeline configuration with `policy` and `segment_size`, a fresh nonce seed, up to four
/// writes in flight and [`MAX_PAYLOAD`].
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

/// The first segment's header of log 11, with `nonce`.
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

/// [`header`] with a fresh nonce.
pub fn first_header() -> SegmentHeader {
    header(random())
}

/// Record `n`'s payload: [`PAYLOAD`] bytes starting with `n`.
pub fn payload(n: u64) -> Vec<u8> {
    let mut p = vec![n as u8; PAYLOAD];
    p[..8].copy_from_slice(&n.to_le_bytes());
    p
}

/// Offset of the frame of `lsn` in the first segment of a log of [`PAYLOAD`]-byte records.
pub fn offset_of(lsn: u64) -> u64 {
    HEADER_LEN as u64 + (lsn - 1) * frame_len(PAYLOAD) as u64
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

/// Appends the records numbered `ns` (payloads from [`payload`]), settling after each, so that
/// every frame's durable watermark is the same whatever the backend; returns them as (LSN,
/// payload). Seals of rolls take LSNs too, so a record's LSN is not its number.
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

/// Recovers in `mode`, returning the outcome and the data records read (LSN, payload).
///
/// # Errors
/// What [`recover::recover`] returns.
pub fn recover_log<S: SegmentStorage>(
    s: &mut S,
    mode: Mode,
) -> Result<(Recovered, Records), RecoverError<S::Error>> {
    let mut ids = [SegmentId(0); 512];
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

/// The segments `s` lists (up to 256).
pub fn listed<S: SegmentStorage>(s: &mut S) -> Vec<SegmentId> {
    let mut ids = [SegmentId(0); 256];
    let n = s.list(&mut ids).expect("list");
    ids[..n].to_vec()
}
