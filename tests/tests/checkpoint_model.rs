//! A state machine test of `WalStateStore` on simulated devices against a `BTreeMap`: random
//! puts, deletes, batches, checkpoints, faults (EIO or ENOSPC on a WAL write or sync, or on a
//! checkpoint file-system step), crashes (the WAL devices lose unsynced sectors or tear them,
//! the checkpoints' file system loses a random subset of its unsynced steps) and clean reopens.
//! After every reopen the store holds every acknowledged write and nothing else; a write whose
//! call failed is uncertain: its key may hold any value it was given since the last reopen, or
//! the acknowledged one.
//!
//! `LAMINA_CHECKPOINT_CASES=N` runs N cases instead of the default.

mod checkpoint_world;

use checkpoint_world::{CORES, Model, Store, World, assert_holds};
use lamina::{Failure, Op};
use lamina_core::manifest::Manifest;
use lamina_tests::sim::{Faults, Rng};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn cases() -> u32 {
    std::env::var("LAMINA_CHECKPOINT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[derive(Clone, Debug)]
enum Action {
    Put(u8, Vec<u8>),
    Delete(u8),
    Apply(Vec<(u8, Option<Vec<u8>>)>),
    Checkpoint,
    /// A power cut of every device; the seed picks what is lost.
    Crash(u64),
    /// The process stops `after` file-system steps into a checkpoint, then a power cut.
    CrashInCheckpoint {
        after: usize,
        seed: u64,
    },
    /// Close and open again.
    Reopen,
    /// Close and open again with another bucket count (the checkpoints' layout changes).
    Rebucket(u32),
    /// The `nth` write (or sync) of core `core`'s WAL from now fails.
    WalFault {
        core: usize,
        nth: u64,
        sync: bool,
        failure: Failure,
    },
    /// A bit of the newest manifest flips on disk, then a reopen: it falls back to an older
    /// checkpoint, or (with none left that the WAL reaches back to) refuses with `Truncated`,
    /// never hands back part of the state.
    DamageNewest(usize),
    /// The file-system step `after` steps from now fails.
    FsFault {
        after: usize,
        failure: Failure,
    },
}

fn failure() -> impl Strategy<Value = Failure> {
    prop_oneof![Just(Failure::Io), Just(Failure::NoSpace)]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..48)
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (0u8..24, value()).prop_map(|(k, v)| Action::Put(k, v)),
        3 => (0u8..24).prop_map(Action::Delete),
        3 => proptest::collection::vec((0u8..24, proptest::option::of(value())), 1..12)
            .prop_map(Action::Apply),
        3 => Just(Action::Checkpoint),
        2 => any::<u64>().prop_map(Action::Crash),
        2 => (0usize..40, any::<u64>())
            .prop_map(|(after, seed)| Action::CrashInCheckpoint { after, seed }),
        1 => Just(Action::Reopen),
        1 => prop_oneof![Just(1u32), Just(3), Just(8)].prop_map(Action::Rebucket),
        1 => (0..CORES, 1u64..4, any::<bool>(), failure()).prop_map(|(core, nth, sync, failure)| {
            Action::WalFault { core, nth, sync, failure }
        }),
        1 => (0usize..40, failure())
            .prop_map(|(after, failure)| Action::FsFault { after, failure }),
        1 => any::<usize>().prop_map(Action::DamageNewest),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("k{k:02}").into_bytes()
}

/// What acknowledged writes left, and the keys written by calls that failed with every value
/// they may hold.
#[derive(Default)]
struct Reference {
    acked: Model,
    uncertain: BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>>,
}

impl Reference {
    /// Records `ops` (one call), acknowledged or not.
    fn record(&mut self, ops: &[(Vec<u8>, Option<Vec<u8>>)], acked: bool) {
        for (k, v) in ops {
            if acked {
                match v {
                    Some(v) => self.acked.insert(k.clone(), v.clone()),
                    None => self.acked.remove(k),
                };
                // Later in its core's log than any failed write of the key: it wins.
                self.uncertain.remove(k);
            } else {
                self.uncertain.entry(k.clone()).or_default().push(v.clone());
            }
        }
    }

    /// Checks a reopened store and settles the uncertain keys to what it holds.
    fn check(&mut self, store: &Store, context: &str) {
        let got: Model = store
            .range(..)
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let keys: BTreeSet<Vec<u8>> = got
            .keys()
            .chain(self.acked.keys())
            .chain(self.uncertain.keys())
            .cloned()
            .collect();
        for k in keys {
            let have = got.get(&k).cloned();
            let want = self.acked.get(&k).cloned();
            match self.uncertain.get(&k) {
                Some(maybe) => assert!(
                    have == want || maybe.contains(&have),
                    "{context}: key {:?} holds {have:?}, acknowledged {want:?}, maybe {maybe:?}",
                    String::from_utf8_lossy(&k)
                ),
                None => assert_eq!(
                    have,
                    want,
                    "{context}: key {:?}",
                    String::from_utf8_lossy(&k)
                ),
            }
        }
        self.acked = got;
        self.uncertain.clear();
        assert_holds(store, &self.acked, context);
    }
}

/// Opens the store, checks it against `reference`. Manifests passed over are only those
/// `damaged` by the test.
fn reopen(
    world: &World,
    reference: &mut Reference,
    damaged: &BTreeSet<u64>,
    context: &str,
) -> Store {
    let store = world
        .open()
        .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
    for skipped in &store.recovery().skipped {
        assert!(
            damaged.contains(&skipped.id),
            "{context}: a crash damaged manifest {}: {:?}",
            skipped.id,
            skipped.error
        );
    }
    reference.check(&store, context);
    store
}

/// Whether a stored manifest is one the test damaged.
fn has_damaged(store: &Store, damaged: &BTreeSet<u64>) -> bool {
    let ids = store
        .checkpoint_store()
        .list_manifests()
        .expect("list manifests");
    ids.iter().any(|id| damaged.contains(id))
}

/// After a checkpoint and its garbage collection: the parts stored are exactly those the
/// stored manifests name.
fn assert_no_garbage(store: &Store, context: &str) {
    let objects = store.checkpoint_store();
    let ids = objects.list_manifests().expect("list manifests");
    let mut named = BTreeSet::new();
    for id in ids {
        let bytes = objects.read_manifest(id).expect("read manifest");
        let manifest = Manifest::decode(&bytes).expect("decode");
        named.extend(manifest.parts.iter().map(|p| p.key.to_owned()));
    }
    let stored: BTreeSet<String> = objects
        .list_parts()
        .expect("list parts")
        .into_iter()
        .collect();
    assert_eq!(
        stored, named,
        "{context}: parts stored and parts named differ"
    );
}

fn clear_faults(world: &World) {
    for wal in &world.wals {
        wal.lock().faults = Faults::default();
    }
    world.fs.clear_fault();
}

/// Settings a case runs with: kept checkpoints, part writer threads, buckets.
#[derive(Clone, Copy, Debug)]
struct Setup {
    seed: u64,
    retain: usize,
    threads: usize,
    buckets: u32,
    delta_part_bytes: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<u64>(),
        1usize..4,
        1usize..3,
        prop_oneof![Just(1u32), Just(4), Just(16)],
        // Deltas cut into parts of a few entries, or whole.
        prop_oneof![Just(64u64), Just(1 << 20)],
    )
        .prop_map(|(seed, retain, threads, buckets, delta_part_bytes)| Setup {
            seed,
            retain,
            threads,
            buckets,
            delta_part_bytes,
        })
}

fn run(setup: Setup, actions: Vec<Action>) {
    let mut world = World::new(setup.seed);
    world.config.incremental.retain = setup.retain;
    world.writers = setup.threads;
    world.config.incremental.buckets = setup.buckets;
    world.config.incremental.delta_part_bytes = setup.delta_part_bytes;
    let mut reference = Reference::default();
    // Manifests the test damaged.
    let mut damaged = BTreeSet::new();
    let mut store = reopen(&world, &mut reference, &damaged, "first open");
    let mut checkpoints = 0;
    for (step, action) in actions.into_iter().enumerate() {
        let context = format!("action {step} ({action:?})");
        match action {
            Action::Put(k, v) => {
                let acked = store.put(&key(k), &v).is_ok();
                reference.record(&[(key(k), Some(v))], acked);
            }
            Action::Delete(k) => {
                let acked = store.delete(&key(k)).is_ok();
                reference.record(&[(key(k), None)], acked);
            }
            Action::Apply(batch) => {
                let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                    batch.into_iter().map(|(k, v)| (key(k), v)).collect();
                let acked = store
                    .apply(ops.iter().map(|(k, v)| match v {
                        Some(v) => Op::Put(k.clone(), v.clone()),
                        None => Op::Delete(k.clone()),
                    }))
                    .is_ok();
                reference.record(&ops, acked);
            }
            Action::Checkpoint => {
                // A damaged manifest stops the part collection of the round that sees it, even
                // the round that deletes it (its parts go at the next one).
                let clean = !has_damaged(&store, &damaged);
                if store.checkpoint().is_ok() {
                    checkpoints += 1;
                    if clean {
                        assert_no_garbage(&store, &context);
                    }
                }
            }
            Action::CrashInCheckpoint { after, seed } => {
                world.fs.halt_after(world.fs.step_count() + after);
                if store.checkpoint().is_ok() {
                    checkpoints += 1;
                }
                drop(store.into_writers());
                world.crash_wals();
                let mut rng = Rng::new(seed);
                world = world.fork(world.fs.crash_random(&mut rng));
                clear_faults(&world);
                store = reopen(&world, &mut reference, &damaged, &context);
            }
            Action::Crash(seed) => {
                drop(store.into_writers());
                world.crash_wals();
                let mut rng = Rng::new(seed);
                world = world.fork(world.fs.crash_random(&mut rng));
                clear_faults(&world);
                store = reopen(&world, &mut reference, &damaged, &context);
            }
            Action::Reopen => {
                let _ = store.close();
                clear_faults(&world);
                store = reopen(&world, &mut reference, &damaged, &context);
            }
            Action::Rebucket(buckets) => {
                let _ = store.close();
                clear_faults(&world);
                world.config.incremental.buckets = buckets;
                store = reopen(&world, &mut reference, &damaged, &context);
            }
            Action::DamageNewest(offset) => {
                let ids: Vec<u64> = world
                    .fs
                    .names("manifests")
                    .iter()
                    .filter_map(|n| lamina::parse_manifest_file_name(n))
                    .collect();
                let whole = ids.iter().filter(|id| !damaged.contains(*id)).count();
                let Some(&newest) = ids.last() else { continue };
                if damaged.contains(&newest) {
                    continue;
                }
                // With two kept, the one before covers the WAL kept; otherwise there may be
                // nothing to fall back to.
                let can_fall_back = setup.retain >= 2 && whole >= 2;
                let _ = store.close();
                clear_faults(&world);
                let name = lamina::manifest_file_name(newest);
                assert!(world.fs.flip_bit("manifests", &name, offset));
                damaged.insert(newest);
                match world.open() {
                    Ok(opened) => {
                        let skipped: Vec<u64> =
                            opened.recovery().skipped.iter().map(|s| s.id).collect();
                        assert!(skipped.contains(&newest), "{context}: {skipped:?}");
                        reference.check(&opened, &context);
                        store = opened;
                    }
                    // Never a part of the state handed back as all of it: the WAL no longer
                    // reaches back to an older checkpoint, and recovery says so. Nothing more
                    // can be recovered: the case ends.
                    Err(lamina::Error::Truncated { .. }) if !can_fall_back => return,
                    Err(e) => panic!("{context}: recovery failed: {e}"),
                }
            }
            Action::WalFault {
                core,
                nth,
                sync,
                failure,
            } => {
                if let Some(wal) = world.wals.get(core) {
                    let mut sim = wal.lock();
                    if sync {
                        sim.faults.fail_sync = Some((nth, failure));
                    } else {
                        sim.faults.fail_write = Some((nth, failure));
                    }
                }
            }
            Action::FsFault { after, failure } => {
                world.fs.fail_step(world.fs.step_count() + after, failure);
            }
        }
    }
    drop(store.into_writers());
    world.crash_wals();
    let mut rng = Rng::new(checkpoints);
    let world = world.fork(world.fs.crash_random(&mut rng));
    clear_faults(&world);
    reopen(&world, &mut reference, &damaged, "the final crash");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_writes_checkpoints_faults_and_crashes_keep_every_acknowledged_write(
        setup in setup(),
        actions in proptest::collection::vec(action(), 1..60),
    ) {
        run(setup, actions);
    }
}

#[test]
fn a_long_run_with_many_checkpoints_and_crashes_keeps_every_acknowledged_write() {
    let mut rng = Rng::new(77);
    let mut actions = Vec::new();
    for round in 0..30u64 {
        for _ in 0..8 {
            let k = rng.below(24) as u8;
            if rng.chance(25) {
                actions.push(Action::Delete(k));
            } else {
                actions.push(Action::Put(k, round.to_le_bytes().to_vec()));
            }
        }
        actions.push(Action::Checkpoint);
        if round % 4 == 3 {
            actions.push(Action::Crash(rng.next_u64()));
        }
    }
    let setup = Setup {
        seed: 3,
        retain: 2,
        threads: 2,
        buckets: 4,
        delta_part_bytes: 256,
    };
    run(setup, actions);
}
