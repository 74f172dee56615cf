//! Snapshots of per-core key-value state for checkpoints: Ring 1's materialized copy of each
//! core's state ([`Shadow`]), captured at a barrier without stopping Ring 0; the part format
//! ([`part`]); the incremental layout of base and delta parts ([`layout`]); the
//! [`IncrementalCheckpointManager`] that writes checkpoints and collects garbage; and the
//! [`RecoveryManager`] that loads the latest checkpoint and replays the WAL after it.

mod coordinator;
mod incremental;
pub mod layout;
mod overlay;
pub mod part;
mod recovery;
mod shadow;

pub use coordinator::{
    CheckpointCoordinator, CheckpointJob, CheckpointOutcome, CommittedCheckpoint, JobOutcome,
    SourceState,
};
pub use incremental::{
    GcReport, IncrementalCheckpointManager, IncrementalConfig, Leftover, ManifestBuilder, Plan,
    Staged,
};
pub(crate) use recovery::LoadedCheckpoint;
pub use recovery::{CheckpointRecoveryReport, CoreReplay, Recovered, RecoveryManager, ResumePoint};
pub use shadow::{Bucket, Capture, ChangeStats, Changes, Shadow, Value};
