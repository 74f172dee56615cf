//! What the checkpoint crash tests share: a `WalStateStore` whose WALs are on the simulated
//! device (`SharedSim`, one per core) and whose checkpoints are in an `ObjectsCheckpointStore`
//! over the simulated directory tree (`SimFs`), and the crash of both.

use lamina::{Error, ObjectsCheckpointStore, Options, PerCoreWalManager, StateStoreConfig};
use lamina_tests::shared::SharedSim;
use lamina_tests::sim::SimStorage;
use lamina_tests::sim_objects::{SimFs, SimObjects};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Cores of the store.
pub(crate) const CORES: usize = 2;

/// The store under test.
pub(crate) type Store = lamina::WalStateStore<SharedSim, CORES>;

/// The checkpoint store under test.
pub(crate) type Objects = ObjectsCheckpointStore<SimObjects>;

/// The reference: what every acknowledged write left.
pub(crate) type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Small segments, so that truncation deletes whole ones; small payloads.
pub(crate) fn options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 8 * 1024;
    options.config.max_payload = 2048;
    options.buffer_size = 64 * 1024;
    options
}

/// Few buckets, one checkpoint kept (so that the garbage collection deletes the previous
/// checkpoint's manifest and parts).
pub(crate) fn config() -> StateStoreConfig {
    let mut config = StateStoreConfig::default();
    config.incremental.buckets = 4;
    config.incremental.retain = 1;
    config.incremental.compactions = 1;
    config
}

/// The devices a store lives on: one simulated disk per core's WAL and a file system for the
/// checkpoints (directories `parts` and `manifests`).
pub(crate) struct World {
    /// Per core, its WAL's device.
    pub(crate) wals: Vec<SharedSim>,
    /// The checkpoints' file system.
    pub(crate) fs: SimFs,
    /// The store's settings.
    pub(crate) config: StateStoreConfig,
    /// Threads writing parts (1: the steps come in one order).
    pub(crate) writers: usize,
}

impl World {
    /// Empty devices; `seed` picks the WAL devices' choices.
    pub(crate) fn new(seed: u64) -> Self {
        World {
            wals: (0..CORES as u64)
                .map(|c| SharedSim::new(SimStorage::new(seed.wrapping_mul(31).wrapping_add(c))))
                .collect(),
            fs: SimFs::new(),
            config: config(),
            writers: 1,
        }
    }

    /// The checkpoint store on this world's file system.
    pub(crate) fn objects(&self) -> Objects {
        ObjectsCheckpointStore::new(self.fs.objects("parts"), self.fs.objects("manifests"))
            .with_root("sim")
            .with_writers(self.writers)
    }

    /// Opens (recovering) the store.
    pub(crate) fn open(&self) -> Result<Store, Error> {
        let (wal, recovery) = PerCoreWalManager::open_with(self.wals.clone(), options())?;
        Store::open(wal, &recovery, Arc::new(self.objects()), self.config)
    }

    /// A power cut of the WAL devices: what was not synced is lost or torn (the file system
    /// is crashed on its own, with [`SimFs::crash_view`]).
    pub(crate) fn crash_wals(&self) {
        for wal in &self.wals {
            wal.lock().crash();
        }
    }

    /// An independent copy of the WAL devices' state with `fs` for the checkpoints: to recover
    /// many times from one crash.
    pub(crate) fn fork(&self, fs: SimFs) -> World {
        World {
            wals: self
                .wals
                .iter()
                .map(|w| SharedSim::new(w.lock().clone()))
                .collect(),
            fs,
            config: self.config,
            writers: self.writers,
        }
    }
}

/// The key of number `i`.
#[allow(dead_code)] // Used by some of the test files that include this module.
pub(crate) fn key(i: u32) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

/// Asserts that `store` holds exactly `model`.
pub(crate) fn assert_holds(store: &Store, model: &Model, context: &str) {
    let got: Model = store
        .range(..)
        .into_iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    if &got != model {
        let missing: Vec<_> = model
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|(k, v)| model.get(*k) != Some(v))
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        panic!(
            "{context}: recovered state differs: missing or other {missing:?}, \
             extra or other {extra:?}"
        );
    }
    assert_eq!(store.len(), model.len(), "{context}");
}
