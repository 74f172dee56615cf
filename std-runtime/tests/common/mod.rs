//! What the `lamina` crate's tests share that names its own types (`lamina-tests`, a
//! dependency of these tests, cannot name them): the options their logs open with.
#![allow(dead_code, unreachable_pub)]

pub mod put_checkpoint;

use lamina::{Config, Mode, Options, SyncPolicy};

/// Batches of 8 records or 2 KiB cut by the appends themselves, up to 8 writes in flight, a
/// 16 KiB buffer, Strict recovery: with small segments, logs on the simulated device roll
/// segments and fill the buffer often.
pub fn small_options(segment_size: u64, max_payload: u32) -> Options {
    Options {
        config: Config {
            policy: SyncPolicy::Batch {
                max_records: 8,
                max_bytes: 2048,
                max_delay: 0,
            },
            max_writes_in_flight: 8,
            linked: false,
            segment_size,
            max_payload,
            nonce_seed: 0,
        },
        mode: Mode::Strict,
        buffer_size: 16 * 1024,
        core: 0,
        log_id: None,
    }
}

/// The defaults with `segment_size`, payloads up to 4 KiB, and batches of 32 records or 16 KiB
/// cut by the appends themselves: logs on real files over several segments.
pub fn batched_options(segment_size: u64) -> Options {
    let mut options = Options::default();
    options.config.segment_size = segment_size;
    options.config.max_payload = 4096;
    options.config.policy = SyncPolicy::Batch {
        max_records: 32,
        max_bytes: 16 * 1024,
        max_delay: 0,
    };
    options
}
