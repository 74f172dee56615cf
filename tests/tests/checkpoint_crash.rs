//! Crash and fault tests of a checkpoint, step by step (ALICE's method): a `WalStateStore` with
//! its WALs on the simulated device and its checkpoints on `ObjectsCheckpointStore<SimObjects>`
//! writes data, takes checkpoint 1, writes more, and takes checkpoint 2, whose every file-system
//! step is recorded: each part's create, write, fsync, rename and directory fsync, the
//! manifest's create-only publish, and the garbage collection's deletes of checkpoint 1's
//! manifest and parts (one checkpoint is kept).
//!
//! The process is stopped after each of those steps, and the file system crashed with every
//! subset of its unsynced steps lost (writes also torn): recovery must succeed and load exactly
//! checkpoint 1 or checkpoint 2 (2 whenever its manifest was durable), replay the WAL after it,
//! and hold every acknowledged write and nothing else. The subsets are all of them up to
//! `MAX_FATES` per step; past that a seeded sample of that many (a checkpoint's steps leave at
//! most three unsynced at once, so the cap is not reached here).
//!
//! Then EIO and ENOSPC are injected at each step instead: the checkpoint fails (aborted, or
//! committed with its garbage collection failing), the store stays usable, the next checkpoint
//! succeeds and leaves no garbage, and a crash and reopen recover every acknowledged write.

mod checkpoint_world;

use checkpoint_world::{Model, Store, World, assert_holds, key};
use lamina::{CheckpointStore, Error, Failure, Lsn, manifest_file_name};
use lamina_core::manifest::Manifest;
use lamina_tests::sim::Rng;
use lamina_tests::sim_objects::{Fate, SimFs, Step};
use std::collections::BTreeSet;

/// Crash outcomes tried per stopping point at most.
const MAX_FATES: usize = 256;

/// A run up to checkpoint 2, stopped or faulted as `arm` sets it up.
struct Run {
    world: World,
    store: Store,
    model: Model,
    /// Each core's position in checkpoint 1.
    first: Vec<Lsn>,
    /// File-system steps before checkpoint 2.
    start: usize,
    /// What checkpoint 2 returned.
    second: Result<lamina::snapshot::CommittedCheckpoint, Error>,
}

/// Writes, checkpoint 1, more writes, `arm(fs, first step of checkpoint 2)`, checkpoint 2.
fn run(arm: impl FnOnce(&SimFs, usize)) -> Run {
    let world = World::new(5);
    let mut store = world.open().expect("open empty");
    let mut model = Model::new();
    let first_batch: Vec<lamina::Op> = (0..60)
        .map(|i| lamina::Op::Put(key(i), format!("a{i}").into_bytes()))
        .collect();
    store.apply(first_batch).expect("first batch");
    for i in 0..60 {
        model.insert(key(i), format!("a{i}").into_bytes());
    }
    let first = store.checkpoint().expect("checkpoint 1");
    assert_eq!(first.checkpoint.id, 1);
    for i in 40..90 {
        let v = format!("b{i}").into_bytes();
        store.put(&key(i), &v).expect("put");
        model.insert(key(i), v);
    }
    for i in (0..20).step_by(3) {
        store.delete(&key(i)).expect("delete");
        model.remove(&key(i));
    }
    let start = world.fs.step_count();
    arm(&world.fs, start);
    let second = store.checkpoint();
    Run {
        world,
        store,
        model,
        first: first.positions,
        start,
        second,
    }
}

/// Every way the unsynced steps can fare (lost or kept; a write also torn halfway), at most
/// [`MAX_FATES`] of them (a seeded sample past that).
fn fate_choices(unsynced: &[(usize, Step)], seed: u64) -> Vec<Vec<Fate>> {
    let options: Vec<Vec<Fate>> = unsynced
        .iter()
        .map(|(_, step)| match step {
            Step::Write { data, .. } => vec![Fate::Lost, Fate::Kept, Fate::Torn(data.len() / 2)],
            _ => vec![Fate::Lost, Fate::Kept],
        })
        .collect();
    let total = options
        .iter()
        .try_fold(1usize, |n, o| n.checked_mul(o.len()));
    match total {
        Some(total) if total <= MAX_FATES => (0..total)
            .map(|mut n| {
                options
                    .iter()
                    .map(|o| {
                        let fate = o[n % o.len()];
                        n /= o.len();
                        fate
                    })
                    .collect()
            })
            .collect(),
        _ => {
            let mut rng = Rng::new(seed);
            (0..MAX_FATES)
                .map(|_| {
                    options
                        .iter()
                        .map(|o| o[rng.below(o.len() as u64) as usize])
                        .collect()
                })
                .collect()
        }
    }
}

/// How many steps a whole checkpoint 2 takes.
fn steps_of_second() -> usize {
    let full = run(|_, _| {});
    let committed = full.second.expect("checkpoint 2 without faults");
    assert_eq!(committed.checkpoint.id, 2);
    full.world.fs.step_count() - full.start
}

#[test]
fn a_crash_after_any_step_of_a_checkpoint_recovers_the_old_or_the_new_one_and_every_write() {
    let full = run(|_, _| {});
    let second = full
        .second
        .as_ref()
        .expect("checkpoint 2")
        .positions
        .clone();
    let total = full.world.fs.step_count() - full.start;
    let steps = full.world.fs.steps();
    // The checkpoint's steps include what the test means to cover.
    let taken = &steps[full.start..];
    assert!(
        taken
            .iter()
            .any(|s| matches!(s, Step::Rename { dir, .. } if dir == "parts"))
    );
    assert!(
        taken
            .iter()
            .any(|s| matches!(s, Step::Link { dir, .. } if dir == "manifests"))
    );
    let unlinks = |in_dir: &str, named: &dyn Fn(&str) -> bool| {
        taken
            .iter()
            .any(|s| matches!(s, Step::Unlink { dir, name } if dir == in_dir && named(name)))
    };
    // The garbage collection deletes manifest 1 and parts only checkpoint 1 named.
    assert!(unlinks("manifests", &|n| n == manifest_file_name(1)));
    assert!(unlinks("parts", &|n| n.starts_with("kv-0000000000000001")));
    drop(full.store.into_writers());

    let mut crashes = 0;
    for k in 0..=total {
        let stopped = run(|fs, start| fs.halt_after(start + k));
        assert_eq!(
            stopped.second.is_ok(),
            k == total,
            "stopped after {k} steps"
        );
        let Run {
            world,
            store,
            model,
            first,
            ..
        } = stopped;
        drop(store.into_writers());
        world.crash_wals();
        // Whether manifest 2 is durable whatever is lost: recovery must then load it.
        let durable_second = world
            .fs
            .crash_view(&mut |_, _| Fate::Lost)
            .names("manifests")
            .contains(&manifest_file_name(2));
        // A checkpoint that returned is durable.
        assert!(
            durable_second || k < total,
            "checkpoint 2 returned, not durable"
        );
        let unsynced = world.fs.unsynced();
        let choices = fate_choices(&unsynced, k as u64);
        for (n, fates) in choices.iter().enumerate() {
            let fared: Vec<String> = unsynced
                .iter()
                .zip(fates)
                .map(|((_, step), fate)| format!("{step}: {fate:?}"))
                .collect();
            let context = format!("stopped after step {k} of {total}, unsynced steps {fared:?}");
            let view = world.fs.crash_view(&mut |i, _| {
                let at = unsynced.iter().position(|(j, _)| *j == i).unwrap_or(0);
                fates[at]
            });
            let forked = world.fork(view);
            let mut store = forked
                .open()
                .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
            crashes += 1;
            let report = store.recovery();
            assert!(report.skipped.is_empty(), "{context}: {:?}", report.skipped);
            let id = report.checkpoint.map(|c| c.id);
            let positions = match id {
                Some(2) => &second,
                Some(1) if !durable_second => &first,
                other => panic!("{context}: recovered checkpoint {other:?}"),
            };
            for (c, replay) in report.cores.iter().enumerate() {
                assert_eq!(replay.from, positions[c].next(), "{context}: core {c}");
            }
            assert_holds(&store, &model, &context);
            // The store goes on: the first and last outcome of each point take a checkpoint
            // and reopen.
            if n == 0 || n + 1 == choices.len() {
                let mut model = model.clone();
                store.put(b"after", b"crash").expect("put after recovery");
                model.insert(b"after".to_vec(), b"crash".to_vec());
                let next = store.checkpoint().expect("checkpoint after recovery");
                // Ids follow the stored manifests: an attempt that left none is not counted.
                assert_eq!(Some(next.checkpoint.id), id.map(|id| id + 1), "{context}");
                drop(store.into_writers());
                let store = forked.open().expect("reopen");
                assert_eq!(
                    store.recovery().checkpoint.map(|c| c.id),
                    Some(next.checkpoint.id)
                );
                assert_holds(&store, &model, &context);
            }
        }
    }
    assert!(crashes > total, "{crashes} crashes over {total} steps");
}

/// The part keys manifest `id` names.
fn parts_of(store: &dyn CheckpointStore, id: u64) -> BTreeSet<String> {
    let bytes = store.read_manifest(id).expect("manifest");
    let manifest = Manifest::decode(&bytes).expect("decode");
    manifest.parts.iter().map(|p| p.key.to_owned()).collect()
}

#[test]
fn a_fault_at_any_step_of_a_checkpoint_aborts_it_and_the_next_one_succeeds() {
    let total = steps_of_second();
    let mut rng = Rng::new(11);
    for k in 0..total {
        for failure in [Failure::Io, Failure::NoSpace] {
            let context = format!("{failure:?} at step {k} of {total}");
            let Run {
                world,
                mut store,
                mut model,
                second,
                ..
            } = run(|fs, start| fs.fail_step(start + k, failure));
            assert_eq!(world.fs.failed_steps(), 1, "{context}");
            match second {
                Err(Error::CheckpointAborted { id: 2, .. }) => {}
                // Committed; its garbage collection failed.
                Err(Error::Checkpoint { failure: f, detail }) => {
                    assert_eq!(f, failure, "{context}: {detail}");
                    assert_eq!(store.current_checkpoint().map(|c| c.id), Some(2));
                }
                other => panic!("{context}: checkpoint 2 returned {other:?}"),
            }
            store.put(b"after", b"fault").expect("put after the fault");
            model.insert(b"after".to_vec(), b"fault".to_vec());
            let third = store
                .checkpoint()
                .unwrap_or_else(|e| panic!("{context}: checkpoint 3 failed: {e}"));
            assert_eq!(third.checkpoint.id, 3, "{context}");
            // One checkpoint is kept, and nothing else: no part leaked.
            let objects = store.checkpoint_store();
            assert_eq!(objects.list_manifests().expect("list"), [3], "{context}");
            let listed: BTreeSet<String> =
                objects.list_parts().expect("list").into_iter().collect();
            assert_eq!(listed, parts_of(&**objects, 3), "{context}");
            store.delete(&key(41)).expect("delete after");
            model.remove(&key(41));
            drop(store.into_writers());
            world.crash_wals();
            let crashed = world.fork(world.fs.crash_random(&mut rng));
            let store = crashed
                .open()
                .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
            assert_eq!(store.recovery().checkpoint.map(|c| c.id), Some(3));
            assert!(store.recovery().skipped.is_empty());
            assert_holds(&store, &model, &context);
        }
    }
}
