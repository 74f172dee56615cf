//! Per-core logs: one [`crate::WriteAheadLog`] per core, each owned by its core's thread through a
//! [`CoreWalWriter`], with epoch markers; [`PerCoreWalManager`] opens the set, recovers every
//! core, reads each core's records with their epochs, and merges the cores into one stream in
//! (epoch, core, LSN) order.
//!
//! The append path shares nothing between cores: each writer owns its log, its buffer and its
//! storage (on the file backend, its own directory with its own lock).

#[cfg(feature = "file")]
mod describe;
#[cfg(feature = "file")]
mod file;
mod manager;
mod merge;
mod recovery;
mod writer;

pub use manager::PerCoreWalManager;
pub(crate) use manager::{Unscanned, in_core};
pub(crate) use recovery::scan_with;

/// A per-core set's description file, read without opening the set.
#[cfg(feature = "file")]
pub use describe::{Description as PerCoreDescription, NAME as PERCORE_FILE};

/// The most cores `PerCoreWalManager::open` makes a set of on the file backend: each core is a
/// directory with its own lock and open files, so a count beyond any machine's is misuse,
/// refused before anything is created or allocated.
pub const MAX_CORES: usize = 4096;
pub use recovery::{CoreRecord, CoreRecovery, EpochBoundary, PerCoreRecovery};
pub use writer::CoreWalWriter;

/// The log id of core `core`'s log in set `set_id`: the set id mixed with the core (SplitMix64's
/// finalizer), so no two cores of a set, and no two sets' cores, share one by construction.
pub(crate) fn core_log_id(set_id: u64, core: usize) -> u64 {
    let mut z = set_id.wrapping_add(
        (core as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
