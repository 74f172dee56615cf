//! The Ring 0 changelog end to end: `ChangelogStateStore` (Ring 0) pushing mutations and barriers
//! into per-core byte rings, `ChangelogDrainer` (Ring 1) writing them to per-core WALs on the
//! simulated device or real files, then a crash, a reopen and `replay_core`: the replayed state is
//! exactly the state after the mutations acknowledged durable, and each record sits in the epoch
//! its barrier started. Plus the misuse and damage cases.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lamina::{
    ChangelogDrainer, ChangelogStateStore, CoreWalWriter, Error, Lsn, Options, PerCoreWalManager,
    SegmentStorage, replay_core,
};
use lamina_core::changelog::{ByteRing, Entry, PushError};
use lamina_tests::sim::{Rng, SimStorage};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// The ring size in the end-to-end tests: small, so that Ring 0 meets back-pressure.
const RING: usize = 4096;
/// A barrier after every this many mutations.
const EPOCH_EVERY: usize = 100;

/// Mutations per core in the end-to-end tests (`LAMINA_CHANGELOG_OPS`, default 3000).
fn ops_per_core() -> usize {
    std::env::var("LAMINA_CHANGELOG_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000)
}

#[derive(Clone, Debug)]
enum Mutation {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

fn apply(state: &mut State, mutations: &[Mutation]) {
    for m in mutations {
        match m {
            Mutation::Put(k, v) => {
                state.insert(k.clone(), v.clone());
            }
            Mutation::Delete(k) => {
                state.remove(k);
            }
        }
    }
}

/// Ring 0 of one core: `ops` random puts and deletes over 64 keys, a barrier (epochs 1, 2, ...)
/// after every [`EPOCH_EVERY`], retrying on back-pressure; gives up (returning what it
/// applied) once `stop` is set while the ring is full. Returns the mutations applied, in order,
/// and the final state.
fn ring0<const N: usize>(
    mut store: ChangelogStateStore<'_, N>,
    seed: u64,
    ops: usize,
    stop: &AtomicBool,
) -> (Vec<Mutation>, State) {
    let mut rng = Rng::new(seed);
    let mut done = Vec::new();
    'ops: for i in 0..ops {
        if i > 0 && i % EPOCH_EVERY == 0 {
            let epoch = (i / EPOCH_EVERY) as u64;
            loop {
                match store.barrier(epoch) {
                    Ok(()) => break,
                    Err(PushError::Full { .. }) if stop.load(Ordering::Acquire) => break 'ops,
                    Err(PushError::Full { .. }) => std::thread::yield_now(),
                    Err(e) => panic!("barrier: {e}"),
                }
            }
        }
        let key = format!("key-{}", rng.below(64)).into_bytes();
        let mutation = if rng.below(4) == 0 {
            Mutation::Delete(key)
        } else {
            let len = rng.below(200) as usize;
            let value = (0..len).map(|_| rng.below(256) as u8).collect();
            Mutation::Put(key, value)
        };
        loop {
            let before = store.state().clone();
            let pushed = match &mutation {
                Mutation::Put(k, v) => store.put(k, v),
                Mutation::Delete(k) => store.delete(k).map(drop),
            };
            match pushed {
                Ok(()) => break,
                Err(PushError::Full { .. }) => {
                    // Back-pressure: the mutation was not applied.
                    assert_eq!(store.state(), &before);
                    if stop.load(Ordering::Acquire) {
                        break 'ops;
                    }
                    std::thread::yield_now();
                }
                Err(e) => panic!("push: {e}"),
            }
        }
        done.push(mutation);
    }
    let (state, _producer) = store.into_parts();
    (done, state)
}

/// Runs Ring 0 on every core and the drainer on its own thread. The drainer stops after
/// `rounds` drains (or, with `None`, once Ring 0 is done and the rings are empty). Returns per
/// core the mutations Ring 0 applied, its state, and how many of its mutations the drainer
/// acknowledged durable; and the writers.
#[allow(clippy::type_complexity)]
fn run<S: SegmentStorage + Send>(
    writers: Vec<CoreWalWriter<S>>,
    seed: u64,
    rounds: Option<usize>,
) -> (Vec<(Vec<Mutation>, State, u64)>, Vec<CoreWalWriter<S>>) {
    let cores = writers.len();
    let mut rings: Vec<Box<ByteRing<RING>>> = (0..cores).map(|_| Box::default()).collect();
    let mut producers = Vec::new();
    let mut pairs = Vec::new();
    for (ring, writer) in rings.iter_mut().zip(writers) {
        let (producer, consumer) = ring.split();
        producers.push(producer);
        pairs.push((consumer, writer));
    }
    let stop = AtomicBool::new(false);
    let ring0_done = AtomicU64::new(0);
    let ops = ops_per_core();
    std::thread::scope(|s| {
        let handles: Vec<_> = producers
            .into_iter()
            .enumerate()
            .map(|(core, producer)| {
                let (stop, ring0_done) = (&stop, &ring0_done);
                s.spawn(move || {
                    let out = ring0(
                        ChangelogStateStore::new(producer),
                        seed * 31 + core as u64,
                        ops,
                        stop,
                    );
                    ring0_done.fetch_add(1, Ordering::AcqRel);
                    out
                })
            })
            .collect();
        let drainer = s.spawn(|| {
            let mut drainer = ChangelogDrainer::new(pairs, 64).expect("drainer");
            let mut acked = vec![0u64; cores];
            let mut barriers = vec![0u64; cores];
            let mut round = 0;
            loop {
                let finished = ring0_done.load(Ordering::Acquire) == cores as u64;
                let report = drainer.drain().expect("drain");
                round += 1;
                for c in &report.cores {
                    barriers[c.core] += c.barriers.len() as u64;
                    for (i, b) in c.barriers.iter().enumerate() {
                        assert_eq!(
                            b.epoch,
                            barriers[c.core] - (c.barriers.len() - i - 1) as u64
                        );
                        assert!(b.lsn <= c.durable);
                    }
                    acked[c.core] = c.durable_entries - barriers[c.core];
                }
                if rounds.is_some_and(|r| round >= r) {
                    stop.store(true, Ordering::Release);
                    break;
                }
                if finished && report.entries() == 0 {
                    break;
                }
                if report.entries() == 0 {
                    std::thread::yield_now();
                }
            }
            (acked, drainer.into_writers())
        });
        let (acked, writers) = drainer.join().expect("drainer thread");
        let per_core = handles
            .into_iter()
            .zip(acked)
            .map(|(h, acked)| {
                let (mutations, state) = h.join().expect("ring 0 thread");
                (mutations, state, acked)
            })
            .collect();
        (per_core, writers)
    })
}

/// Replays every core of `manager` and checks it against what Ring 0 did: the replayed state is
/// the state after the first `r` mutations, with `acked <= r`, and every record's epoch is the
/// number of barriers Ring 0 pushed before it.
fn check_replay<S: SegmentStorage>(
    manager: &mut PerCoreWalManager<S>,
    per_core: &[(Vec<Mutation>, State, u64)],
) -> Vec<u64> {
    let mut replayed = Vec::new();
    for (core, (mutations, _, acked)) in per_core.iter().enumerate() {
        let mut state = State::new();
        let report = replay_core(manager, core, Lsn::FIRST, &mut state).expect("replay");
        let r = report.records;
        assert!(
            r >= *acked,
            "core {core}: {r} replayed, {acked} acknowledged durable"
        );
        assert!(r as usize <= mutations.len());
        let mut expected = State::new();
        apply(&mut expected, &mutations[..r as usize]);
        assert_eq!(state, expected, "core {core}: replay of {r} mutations");
        let mut i = 0u64;
        manager
            .read_core(core, Lsn::FIRST, |record| {
                assert_eq!(record.epoch, i / EPOCH_EVERY as u64, "record {i}");
                i += 1;
            })
            .expect("read");
        assert_eq!(i, r);
        replayed.push(r);
    }
    replayed
}

#[test]
fn ring0_and_drainer_on_sim_then_crash_replays_every_acknowledged_mutation() {
    for seed in 1..=3 {
        let storages = vec![SimStorage::new(seed), SimStorage::new(seed + 100)];
        let (manager, _) = PerCoreWalManager::open_with(storages, Options::default()).unwrap();
        let (per_core, writers) = run(manager.writers(), seed, None);
        for (mutations, _, acked) in &per_core {
            // Without a stop, Ring 0 finished and the drainer drained and synced everything.
            assert_eq!(mutations.len(), ops_per_core());
            assert_eq!(*acked as usize, mutations.len());
        }
        let storages = writers
            .into_iter()
            .map(|w| {
                let mut storage = w.into_log().into_storage();
                storage.crash();
                storage
            })
            .collect();
        let (mut manager, _) = PerCoreWalManager::open_with(storages, Options::default()).unwrap();
        let replayed = check_replay(&mut manager, &per_core);
        // Everything was synced, so the replay is Ring 0's whole final state.
        for (core, (_, state, _)) in per_core.iter().enumerate() {
            let mut again = State::new();
            replay_core(&mut manager, core, Lsn::FIRST, &mut again).unwrap();
            assert_eq!(&again, state);
            assert_eq!(replayed[core] as usize, ops_per_core());
        }
    }
}

#[test]
fn drainer_stopped_early_leaves_ring0_back_pressured_and_replay_is_the_acknowledged_prefix() {
    for seed in 4..=6 {
        let storages = vec![SimStorage::new(seed), SimStorage::new(seed + 100)];
        let (manager, _) = PerCoreWalManager::open_with(storages, Options::default()).unwrap();
        let (per_core, writers) = run(manager.writers(), seed, Some(5));
        let storages = writers
            .into_iter()
            .map(|w| {
                let mut storage = w.into_log().into_storage();
                storage.crash();
                storage
            })
            .collect();
        let (mut manager, _) = PerCoreWalManager::open_with(storages, Options::default()).unwrap();
        let replayed = check_replay(&mut manager, &per_core);
        for (core, (mutations, _, acked)) in per_core.iter().enumerate() {
            // Drained entries were synced, so exactly the acknowledged ones are back; Ring 0
            // applied at most one ring's worth more (bounded memory), still queued when it stopped.
            assert_eq!(replayed[core], *acked);
            assert!(mutations.len() as u64 >= *acked);
            // Every frame is at least 16 bytes: at most RING / 16 entries were still queued.
            assert!(mutations.len() as u64 - *acked <= (RING / 16) as u64);
            if ops_per_core() > 1000 {
                // Five rounds of 64 cannot drain 1000: Ring 0 met back-pressure and stopped.
                assert!(mutations.len() < ops_per_core());
            }
        }
    }
}

#[test]
fn ring0_and_drainer_on_files_then_reopen_replays_the_final_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (manager, _) = PerCoreWalManager::open(dir.path(), 2, Options::default()).unwrap();
    let (per_core, writers) = run(manager.writers(), 9, None);
    for w in writers {
        w.close().unwrap();
    }
    let (mut manager, _) = PerCoreWalManager::open(dir.path(), 2, Options::default()).unwrap();
    check_replay(&mut manager, &per_core);
    for (core, (_, state, _)) in per_core.iter().enumerate() {
        let mut again = State::new();
        replay_core(&mut manager, core, Lsn::FIRST, &mut again).unwrap();
        assert_eq!(&again, state);
    }
}

fn one_core() -> CoreWalWriter<SimStorage> {
    let (manager, _) =
        PerCoreWalManager::open_with(vec![SimStorage::new(1)], Options::default()).unwrap();
    manager.writers().pop().unwrap()
}

#[test]
fn back_pressure_and_too_large_leave_the_state_unchanged() {
    let mut ring: ByteRing<64> = ByteRing::new();
    let (producer, mut consumer) = ring.split();
    let mut store = ChangelogStateStore::new(producer);
    store.put(b"a", &[1; 20]).unwrap(); // 26 bytes: a 32-byte frame
    store.put(b"b", &[2; 20]).unwrap(); // the ring is full
    assert!(matches!(store.put(b"c", b"3"), Err(PushError::Full { .. })));
    assert!(matches!(store.delete(b"a"), Err(PushError::Full { .. })));
    assert!(matches!(store.barrier(1), Err(PushError::Full { .. })));
    assert_eq!(store.get(b"c"), None);
    assert_eq!(store.get(b"a"), Some(&[1u8; 20][..]));
    assert!(matches!(
        store.put(b"big", &[0; 64]),
        Err(PushError::TooLarge { .. })
    ));
    assert_eq!(store.get(b"big"), None);
    consumer.peek().unwrap().release();
    assert_eq!(store.delete(b"a").unwrap(), Some(vec![1; 20]));
    assert_eq!(store.state().len(), 1);
}

#[test]
fn drainer_with_batch_zero_or_a_core_twice_is_refused() {
    let mut ring: ByteRing<64> = ByteRing::new();
    let (_p, consumer) = ring.split();
    let err = ChangelogDrainer::new(vec![(consumer, one_core())], 0).unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
    let mut r1: ByteRing<64> = ByteRing::new();
    let mut r2: ByteRing<64> = ByteRing::new();
    let (_, c1) = r1.split();
    let (_, c2) = r2.split();
    let err = ChangelogDrainer::new(vec![(c1, one_core()), (c2, one_core())], 4).unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err}");
}

#[test]
fn drainer_batches_and_reports_barrier_lsns() {
    let mut ring: ByteRing<256> = ByteRing::new();
    let (producer, consumer) = ring.split();
    let mut store = ChangelogStateStore::new(producer);
    store.put(b"a", b"1").unwrap();
    store.barrier(1).unwrap();
    store.put(b"b", b"2").unwrap();
    store.delete(b"a").unwrap();
    let mut drainer = ChangelogDrainer::new(vec![(consumer, one_core())], 3).unwrap();
    let first = drainer.drain().unwrap();
    assert_eq!(first.entries(), 3);
    let core = &first.cores[0];
    assert_eq!(core.barriers.len(), 1);
    assert_eq!(core.barriers[0].epoch, 1);
    // LSNs: the put got 1, the marker 2, the second put 3.
    assert_eq!(core.barriers[0].lsn, Lsn(2));
    assert_eq!(core.durable, Lsn(3));
    assert_eq!(core.durable_entries, 3);
    let second = drainer.drain().unwrap();
    assert_eq!(second.entries(), 1);
    assert_eq!(second.cores[0].durable_entries, 4);
    assert_eq!(drainer.drain().unwrap().entries(), 0);
}

#[test]
fn drain_hands_the_drained_frames_back_to_ring0_and_only_those() {
    let mut ring: ByteRing<256> = ByteRing::new();
    let (producer, consumer) = ring.split();
    let mut store = ChangelogStateStore::new(producer);
    // Five 16-byte frames (5-byte header, 1-byte key, 6-byte value).
    for key in [b"a", b"b", b"c", b"d", b"e"] {
        store.put(key, b"value!").unwrap();
    }
    assert_eq!(store.producer().used(), 80);
    let mut drainer = ChangelogDrainer::new(vec![(consumer, one_core())], 3).unwrap();
    assert_eq!(drainer.drain().unwrap().entries(), 3);
    assert_eq!(store.producer().used(), 32);
    assert_eq!(drainer.drain().unwrap().entries(), 2);
    assert!(store.producer().is_empty());
}

#[test]
fn failed_drain_hands_back_the_frames_before_the_failing_one() {
    let mut ring: ByteRing<256> = ByteRing::new();
    let (producer, consumer) = ring.split();
    let mut store = ChangelogStateStore::new(producer);
    store.put(b"k", b"v").unwrap(); // 12-byte frame
    store.barrier(2).unwrap(); // 20 bytes
    store.barrier(2).unwrap(); // refused by the drainer
    store.put(b"k", b"w").unwrap();
    let mut drainer = ChangelogDrainer::new(vec![(consumer, one_core())], 8).unwrap();
    let err = drainer.drain().unwrap_err();
    assert!(matches!(err, Error::EpochNotIncreasing { .. }), "{err}");
    // The put and the first barrier are in the log and their room is Ring 0's again.
    assert_eq!(store.producer().used(), 32);
}

#[test]
fn barrier_not_moving_the_epoch_is_an_error_and_stays_queued() {
    let mut ring: ByteRing<256> = ByteRing::new();
    let (producer, consumer) = ring.split();
    let mut store = ChangelogStateStore::new(producer);
    store.barrier(2).unwrap();
    store.barrier(2).unwrap();
    store.put(b"k", b"v").unwrap();
    let mut drainer = ChangelogDrainer::new(vec![(consumer, one_core())], 8).unwrap();
    let err = drainer.drain().unwrap_err();
    assert!(matches!(err, Error::EpochNotIncreasing { .. }), "{err}");
    // Again: the refused barrier was not dropped, it is still first in the queue.
    let err = drainer.drain().unwrap_err();
    assert!(
        matches!(err, Error::EpochNotIncreasing { requested: 2, .. }),
        "{err}"
    );
    let (mut consumer, writer) = drainer.into_parts().pop().unwrap();
    assert_eq!(writer.epoch(), 2);
    let frame = consumer.peek().unwrap();
    assert_eq!(frame.entry(), Ok(Entry::Barrier { epoch: 2 }));
    frame.release();
    let frame = consumer.peek().unwrap();
    assert_eq!(
        frame.entry(),
        Ok(Entry::Put {
            key: b"k",
            value: b"v"
        })
    );
}

#[test]
fn replay_of_a_record_that_is_not_an_entry_names_its_lsn_and_keeps_what_came_before() {
    let (manager, _) =
        PerCoreWalManager::open_with(vec![SimStorage::new(5)], Options::default()).unwrap();
    let mut writer = manager.writers().pop().unwrap();
    let mut put = vec![0u8; 32];
    let len = Entry::Put {
        key: b"k",
        value: b"v",
    }
    .emit(&mut put)
    .unwrap();
    writer.append(&put[..len]).unwrap();
    writer.append(&[9, 0, 0, 0, 0]).unwrap(); // unknown operation
    writer.append(&put[..len]).unwrap();
    writer.sync().unwrap();
    let storage = writer.into_log().into_storage();
    let (mut manager, _) = PerCoreWalManager::open_with(vec![storage], Options::default()).unwrap();
    let mut state = State::new();
    let err = replay_core(&mut manager, 0, Lsn::FIRST, &mut state).unwrap_err();
    assert!(
        matches!(err, Error::Changelog { core: 0, lsn: Some(lsn), .. } if lsn == Lsn(2)),
        "{err}"
    );
    assert_eq!(state.get(&b"k"[..]), Some(&b"v".to_vec()));
}
