//! Helpers for driving a log on the simulated device in tests.

use crate::sim::SimStorage;
use lamina_core::segment::SegmentHeader;
use lamina_core::{Lsn, SegmentId};

pub use crate::pipeline::{MAX_PAYLOAD, Records, recover_log};

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

/// Pumps until nothing is in flight and nothing more happens (with short writes, a poll may
/// report nothing while a write is still landing).
pub fn pump_until_quiet<const SLOTS: usize>(
    pipeline: &mut lamina_core::commit::Pipeline<'_, SLOTS>,
    storage: &mut SimStorage,
    on_event: &mut dyn FnMut(lamina_core::commit::Event),
) {
    while lamina_core::drive::pump(pipeline, storage, on_event) || storage.in_flight() > 0 {}
}
