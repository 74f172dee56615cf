//! lamina: the std runtime of lamina, the crate users depend on. It sits on top of the layers:
//! `lamina-core` decides what bytes go where and when to sync (a `no_std`, allocation-free state
//! machine), a backend implements the core's [`SegmentStorage`] on real storage, and this crate
//! drives the one with the other: it owns the buffers, recovers the log on open, runs the I/O
//! loop, and turns the core's small error values into one [`Error`] that says what happened and
//! where.
//!
//! Today it holds [`WriteAheadLog`], a log with a single owner: `append` (buffered), `sync`
//! (durable through the returned LSN), `read_from` any LSN, `truncate_before`, `close`; and
//! [`SharedLog`], a `Clone + Send + Sync` handle over it for many threads that each `commit` and
//! return once their record is durable, one fdatasync covering many threads' records; and
//! [`Tail`], a reader on another thread that follows the log from any LSN while the owner writes
//! it, handing out each record once it is durable. It runs on any [`SegmentStorage`]: with the
//! default feature `file`, `WriteAheadLog::open(dir, options)` opens it in a directory on the file
//! backend (`lamina-file`); the tests also run it on the simulated device of `lamina-tests`.
//! [`WriteAheadLog::open_dir`] opens a [`DirLog`] on the [`Backend`] an option names: the file
//! backend, or with feature `io-uring` the io_uring backend (`lamina-uring`), failing or falling
//! back to the file backend, reported, when the kernel refuses io_uring.
//!
//! [`PerCoreWalManager`] keeps one such log per core: it opens and recovers the set, hands each
//! core a [`CoreWalWriter`] that owns its log (no lock shared between cores), whose
//! `begin_epoch` writes epoch markers, and reads the recovered records back per core with their
//! epochs and boundaries, or merged in (epoch, core, LSN) order.
//!
//! The Ring 0 changelog feeds those logs: [`ChangelogStateStore`] applies each put or delete to a
//! core's in-memory state and queues one changelog entry for it in the core's lock-free
//! `lamina_core::changelog::ByteRing` (back-pressure, never blocking or dropping),
//! [`ChangelogDrainer`] writes the queued entries to each core's log in batches (barriers become
//! epoch markers), and [`replay_core`] rebuilds a core's state from its log alone.
//!
//! [`CheckpointStore`] is where checkpoints are kept: snapshot parts verified by size and CRC32C
//! when read, numbered manifests published create-only, and the latest valid manifest found
//! past damaged newer ones (reported); [`FileSystemCheckpointStore`] keeps them in a directory.
//!
//! ```
//! use lamina::{Lsn, Options, WriteAheadLog};
//! # use lamina_tests::sim::SimStorage;
//! # fn main() -> Result<(), lamina::Error> {
//! # let storage = SimStorage::new(1);
//! let (mut log, _report) = WriteAheadLog::open_with(storage, Options::default())?;
//! let lsn = log.append(b"hello")?;
//! assert!(log.sync()? >= lsn); // `lsn` is durable now
//! let storage = log.into_storage();
//!
//! let (mut log, report) = WriteAheadLog::open_with(storage, Options::default())?;
//! assert_eq!(report.records, 1);
//! log.read_from(Lsn::FIRST, |lsn, payload| println!("{lsn}: {payload:?}"))?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "file")]
mod backend;
mod changelog;
mod checkpoint_store;
mod driver;
mod error;
#[cfg(feature = "file")]
mod file;
mod options;
mod parallel;
mod percore;
mod read;
mod relay;
mod seed;
mod shared;
mod slot;
pub mod snapshot;
mod state_store;
mod tail;
mod wal;
mod watch;

#[cfg(feature = "file")]
pub use backend::{Backend, BackendKind, DirError, DirLog, DirStorage, Selected};
pub use changelog::{
    BarrierCapture, BarrierLsn, ChangelogDrainer, ChangelogStateStore, CoreDrain, DrainReport,
    ReplayReport, replay_core,
};
#[cfg(feature = "file")]
pub use checkpoint_store::FileSystemCheckpointStore;
pub use checkpoint_store::{
    CheckpointError, CheckpointStore, LatestManifest, MANIFEST_SUFFIX, MAX_MANIFEST_LEN,
    ManifestDamage, ManifestFromParts, ObjectsCheckpointStore, PartInfo, SkippedManifest, StoreOp,
    StoredManifest, manifest_file_name, parse_manifest_file_name,
};
pub use error::Error;
pub use options::Options;
pub use percore::{
    CoreRecord, CoreRecovery, CoreWalWriter, EpochBoundary, MAX_CORES, PerCoreRecovery,
    PerCoreWalManager,
};
#[cfg(feature = "file")]
pub use percore::{PERCORE_FILE, PerCoreDescription};
pub use shared::SharedLog;
pub use snapshot::{
    CheckpointCoordinator, CheckpointRecoveryReport, IncrementalCheckpointManager,
    IncrementalConfig, Recovered, RecoveryManager, Shadow,
};
pub use state_store::{MAX_ENTRY_BYTES, Op, QUEUE_BYTES, StateStoreConfig, WalStateStore};
pub use tail::{Tail, TailRecord};
pub use wal::WriteAheadLog;

/// The file backend, with feature `file` (on by default).
#[cfg(feature = "file")]
pub use lamina_file as file_backend;

/// The io_uring backend, with feature `io-uring`.
#[cfg(feature = "io-uring")]
pub use lamina_uring as uring_backend;

pub use lamina_core::commit::{Config, ConfigError, OpKind, Poison, SyncPolicy};
pub use lamina_core::decode::Mode;
pub use lamina_core::io::{Failure, SegmentStorage};
pub use lamina_core::recover::{Damage, DamageReport, RecoveryReport};
pub use lamina_core::{Lsn, SegmentId};
