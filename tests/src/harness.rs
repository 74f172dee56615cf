//! Helpers for driving a log on the simulated device in tests.

use crate::sim::SimStorage;
use lamina_core::decode::{Mode, min_window};
use lamina_core::io::Failure;
use lamina_core::record::Kind;
use lamina_core::recover::{self, RecoverError, Recovered, Replay};
use lamina_core::segment::SegmentHeader;
use lamina_core::{Lsn, SegmentId};

/// The largest payload the test logs use.
pub const MAX_PAYLOAD: u32 = 300;

/// The first segment header of a test log.
pub fn first_header(log_id: u64) -> SegmentHeader {
    SegmentHeader {
        core: 0,
        log_id,
        sequence: SegmentId(0),
        nonce: 7,
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    }
}

/// Records as a test sees them: (LSN, payload).
pub type Records = Vec<(u64, Vec<u8>)>;

/// Recovers in `mode`, returning the outcome and the data records read (LSN, payload).
///
/// # Errors
/// What [`recover::recover`] returns.
pub fn recover_log(
    storage: &mut SimStorage,
    mode: Mode,
) -> Result<(Recovered, Records), RecoverError<Failure>> {
    let mut ids = [SegmentId(0); 512];
    let mut window = vec![0u8; min_window(MAX_PAYLOAD as usize)];
    let mut records = Vec::new();
    let recovered = recover::recover(storage, &mut ids, &mut window, mode, &mut |r| {
        if let Replay::Record(r) = r
            && r.header.kind == Kind::Data
        {
            records.push((r.header.lsn.0, r.payload.to_vec()));
        }
    })?;
    Ok((recovered, records))
}

/// Pumps until nothing is in flight and nothing more happens (with short writes, a poll may
/// report nothing while a write is still landing).
pub fn pump_until_quiet<const SLOTS: usize>(
    pipeline: &mut lamina_core::commit::Pipeline<'_, SLOTS>,
    storage: &mut SimStorage,
    on_event: &mut dyn FnMut(lamina_core::commit::Event),
) {
    while lamina_core::drive::pump(pipeline, storage, on_event) || storage.in_flight() > 0 {}
}
