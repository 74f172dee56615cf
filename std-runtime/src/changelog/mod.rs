//! The Ring 0 changelog on the std side: [`ChangelogStateStore`] (Ring 0: applies each mutation
//! to the engine's in-memory state and queues one changelog entry for it),
//! [`ChangelogDrainer`] (Ring 1: drains each core's queue into that core's WAL), and
//! [`replay_core`] (rebuilds a core's state from its WAL alone).
//!
//! The queue is `lamina_core::changelog::ByteRing`, one per core: a bounded, lock-free ring of
//! framed entries whose bytes are the WAL record payloads (`core/FORMAT.md`, "Changelog entry").

mod drainer;
mod replay;
mod store;

pub use drainer::{BarrierCapture, BarrierLsn, ChangelogDrainer, CoreDrain, DrainReport};
pub use replay::{ReplayReport, replay_core};
pub use store::ChangelogStateStore;
