//! The demo's child: an engine of `CORES` Ring 0 threads, a drainer (Ring 1) and a checkpoint
//! thread, on the store's directory layout. It prints, on stdout, one line per fact the parent
//! needs: `ack <core> <seq>` (every op of the core up to `seq` is durable), `checkpoint ...`,
//! `latency ...`. It runs until it is killed.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lamina::snapshot::{CheckpointCoordinator, CheckpointOutcome, Shadow, SourceState};
use lamina::{
    ChangelogDrainer, ChangelogStateStore, CheckpointStore, FileSystemCheckpointStore,
    IncrementalCheckpointManager, PerCoreWalManager, RecoveryManager, WalStateStore,
};
use lamina_core::changelog::{ByteRing, PushError};

use super::workload::Workload;
use super::{config, options};

/// Bytes of each core's changelog queue.
const QUEUE: usize = 1 << 20;

/// One line on stdout, whole (a short pipe write is atomic, so a kill cannot cut it).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(format!("{line}\n").as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Runs the engine on `dir` with workload generation `generation`, a checkpoint every
/// `interval`, until killed.
pub(crate) fn run<const CORES: usize>(
    dir: &Path,
    generation: u64,
    interval: Duration,
) -> Result<(), String> {
    let (mut wal, wal_recovery) =
        PerCoreWalManager::open(dir.join("wal"), CORES, options()).map_err(|e| e.to_string())?;
    let store: Arc<dyn CheckpointStore> = Arc::new(
        FileSystemCheckpointStore::open(dir.join("checkpoints")).map_err(|e| e.to_string())?,
    );
    let recovered =
        RecoveryManager::recover(&*store, &mut wal, &wal_recovery).map_err(|e| e.to_string())?;
    let config = config();
    let manager = IncrementalCheckpointManager::resume(config.incremental, recovered.layouts)
        .map_err(|e| e.to_string())?;
    let mut coordinator = CheckpointCoordinator::<CORES>::new(
        Arc::clone(&store),
        manager,
        &recovered.resume,
        config.checkpoint_timeout,
    )
    .map_err(|e| e.to_string())?;
    let buckets = config.incremental.buckets;
    let mut rings: Vec<Box<ByteRing<QUEUE>>> =
        (0..CORES).map(|_| Box::new(ByteRing::new())).collect();
    let mut producers = Vec::new();
    let mut lanes = Vec::new();
    let mut states = recovered.states.into_iter();
    let mut changed = recovered.changed.into_iter();
    for (ring, writer) in rings.iter_mut().zip(wal.writers()) {
        let (producer, consumer) = ring.split();
        let state = states.next().unwrap_or_default();
        let core = writer.core() as u32;
        let shadow = Shadow::with_state(
            core,
            buckets,
            state.clone(),
            changed.next().unwrap_or_default(),
        );
        producers.push((producer, state));
        lanes.push((consumer, writer, shadow));
    }
    let durable: Vec<AtomicU64> = (0..CORES).map(|_| AtomicU64::new(0)).collect();
    let requested: Vec<AtomicU64> = (0..CORES).map(|_| AtomicU64::new(0)).collect();
    let failed = AtomicBool::new(false);
    say("started");
    std::thread::scope(|scope| {
        for (core, (producer, state)) in producers.into_iter().enumerate() {
            let (durable, requested, failed) = (&durable[core], &requested[core], &failed);
            scope.spawn(move || {
                let store = ChangelogStateStore::with_state(state, producer);
                if let Err(e) = ring0::<CORES>(core, generation, store, durable, requested, failed)
                {
                    failed.store(true, Ordering::Relaxed);
                    eprintln!("lamina demo: core {core}: {e}");
                }
            });
        }
        let (jobs, job_rx) = mpsc::channel::<lamina::snapshot::CheckpointJob>();
        let (done_tx, done) = mpsc::channel();
        scope.spawn(move || {
            for job in job_rx {
                if done_tx.send(job.run()).is_err() {
                    return;
                }
            }
        });
        let drained = ring1(
            lanes,
            &mut coordinator,
            &durable,
            &requested,
            &failed,
            interval,
            &jobs,
            &done,
        );
        if let Err(e) = drained {
            failed.store(true, Ordering::Relaxed);
            eprintln!("lamina demo: drainer: {e}");
        }
        drop(jobs);
    });
    Err("the engine stopped on an error".into())
}

/// Ring 0 of `core`: applies its workload's ops, pushes a barrier when one is requested, and
/// says which ops are durable (those whose entries the drainer made durable).
fn ring0<const CORES: usize>(
    core: usize,
    generation: u64,
    mut store: ChangelogStateStore<'_, QUEUE>,
    durable: &AtomicU64,
    requested: &AtomicU64,
    failed: &AtomicBool,
) -> Result<(), String> {
    let mut workload = Workload::new::<CORES>(core, generation);
    let mut pushed = 0u64; // entries pushed, barriers included
    let mut epoch_done = 0;
    // Ops not yet durable: (entries pushed through it, its seq, when pushed if sampled).
    let mut pending: VecDeque<(u64, u64, Option<Instant>)> = VecDeque::new();
    let mut latencies: Vec<u32> = Vec::new();
    let mut last_say = Instant::now();
    let mut acked = 0;
    while !failed.load(Ordering::Relaxed) {
        let wanted = requested.load(Ordering::Acquire);
        if wanted > epoch_done {
            match store.barrier(wanted) {
                Ok(()) => {
                    pushed += 1;
                    epoch_done = wanted;
                }
                Err(PushError::Full { .. }) => std::thread::yield_now(),
                Err(e) => return Err(format!("barrier: {e}")),
            }
            continue;
        }
        let (seq, key, value) = workload.peek();
        let result = match &value {
            Some(v) => store.put(key, v),
            None => store.delete(key).map(|_| ()),
        };
        match result {
            Ok(()) => {
                pushed += 1;
                let sampled = seq.is_multiple_of(16).then(Instant::now);
                pending.push_back((pushed, seq, sampled));
                workload.advance();
            }
            Err(PushError::Full { .. }) => std::thread::yield_now(),
            Err(e) => return Err(format!("push: {e}")),
        }
        let now_durable = durable.load(Ordering::Acquire);
        while let Some(&(through, seq, sampled)) = pending.front() {
            if through > now_durable {
                break;
            }
            pending.pop_front();
            acked = seq;
            if let Some(at) = sampled
                && latencies.len() < 4_000_000
            {
                latencies.push(u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
        }
        if last_say.elapsed() >= Duration::from_millis(50) {
            say(&format!("ack {core} {acked}"));
            if !latencies.is_empty() {
                latencies.sort_unstable();
                let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
                say(&format!(
                    "latency {core} {} {} {} {}",
                    latencies.len(),
                    p(0.5),
                    p(0.99),
                    p(0.999)
                ));
            }
            last_say = Instant::now();
        }
    }
    Ok(())
}

/// Ring 1: drains every core into its WAL and shadow, publishes each core's durable entry
/// count, runs the checkpoints (their I/O on the checkpoint thread), collects garbage and
/// truncates the WALs after each.
#[allow(clippy::too_many_arguments)]
fn ring1<const CORES: usize>(
    lanes: Vec<(
        lamina_core::changelog::Consumer<'_, QUEUE>,
        lamina::CoreWalWriter<lamina::file_backend::FileStorage>,
        Shadow,
    )>,
    coordinator: &mut CheckpointCoordinator<CORES>,
    durable: &[AtomicU64],
    requested: &[AtomicU64],
    failed: &AtomicBool,
    interval: Duration,
    jobs: &mpsc::Sender<lamina::snapshot::CheckpointJob>,
    done: &mpsc::Receiver<lamina::snapshot::JobOutcome>,
) -> Result<(), String> {
    let mut drainer = ChangelogDrainer::with_shadows(lanes, 8192).map_err(|e| e.to_string())?;
    let mut next = Instant::now() + interval;
    while !failed.load(Ordering::Relaxed) {
        let report = drainer.drain().map_err(|e| e.to_string())?;
        for core in &report.cores {
            durable[core.core].store(core.durable_entries, Ordering::Release);
            coordinator
                .handle_durable(core.core, core.durable)
                .map_err(|e| e.to_string())?;
        }
        for capture in drainer.take_captures() {
            coordinator
                .handle_capture(capture)
                .map_err(|e| e.to_string())?;
        }
        if let Some(job) = coordinator.poll_job() {
            jobs.send(job).map_err(|e| e.to_string())?;
        }
        if let Some(outcome) = coordinator.poll_outcome() {
            say_outcome(&outcome);
        }
        if let Ok(finished) = done.try_recv() {
            let outcome = coordinator
                .handle_job(finished)
                .map_err(|e| e.to_string())?;
            say_outcome(&outcome);
            if let CheckpointOutcome::Committed(_) = outcome {
                let gc = coordinator.collect_garbage().map_err(|e| e.to_string())?;
                for (core, &below) in gc.truncate_before.iter().enumerate() {
                    if let Some(writer) = drainer.writer_mut(core) {
                        writer
                            .log_mut()
                            .truncate_before(below)
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        if Instant::now() >= next && !coordinator.in_progress() {
            for (core, epoch) in coordinator
                .trigger(SourceState::default())
                .map_err(|e| e.to_string())?
            {
                requested[core].store(epoch, Ordering::Release);
            }
            next = Instant::now() + interval;
        }
        if report.entries() == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

fn say_outcome(outcome: &CheckpointOutcome) {
    match outcome {
        CheckpointOutcome::Committed(c) => say(&format!(
            "checkpoint {} {} {} {} {}",
            c.checkpoint.id,
            c.parts_written,
            c.bytes_written,
            c.keys,
            c.elapsed.as_micros()
        )),
        CheckpointOutcome::Aborted { attempt, reason } => {
            say(&format!("aborted {} {reason}", attempt.id));
        }
    }
}

/// Which prefix of `core`'s ops of `generation` the `recovered` state of that core is: the
/// smallest `k >= acked` (up to `acked + limit`) such that `before` plus ops `1..=k` is exactly
/// `recovered`, or `Err(keys that differ at acked)` when there is none: an acknowledged write
/// was lost, or something was recovered that the child never wrote.
pub(crate) fn recovered_prefix<const CORES: usize>(
    core: usize,
    generation: u64,
    before: &BTreeMap<Vec<u8>, Vec<u8>>,
    recovered: &BTreeMap<Vec<u8>, Vec<u8>>,
    acked: u64,
    limit: u64,
) -> Result<u64, usize> {
    let mut sim = before.clone();
    let mut workload = Workload::new::<CORES>(core, generation);
    let apply =
        |sim: &mut BTreeMap<Vec<u8>, Vec<u8>>, key: &[u8], value: Option<Vec<u8>>| match value {
            Some(v) => {
                sim.insert(key.to_vec(), v);
            }
            None => {
                sim.remove(key);
            }
        };
    while workload.seq() < acked {
        let (_, key, value) = workload.peek();
        apply(&mut sim, key, value);
        workload.advance();
    }
    let mut differ: std::collections::BTreeSet<Vec<u8>> = sim
        .iter()
        .filter(|(k, v)| recovered.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(recovered.keys().filter(|k| !sim.contains_key(*k)).cloned())
        .collect();
    let at_ack = differ.len();
    while !differ.is_empty() {
        if workload.seq() >= acked.saturating_add(limit) {
            return Err(at_ack);
        }
        let (_, key, value) = workload.peek();
        let key = key.to_vec();
        apply(&mut sim, &key, value);
        if sim.get(&key) == recovered.get(&key) {
            differ.remove(&key);
        } else {
            differ.insert(key);
        }
        workload.advance();
    }
    Ok(workload.seq())
}

/// Keeps the state store type in one place for the parent.
pub(crate) type Store<const CORES: usize> = WalStateStore<lamina::file_backend::FileStorage, CORES>;
