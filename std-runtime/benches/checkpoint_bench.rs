//! Checkpoints and recovery of a `WalStateStore`, against what the disk itself does.
//!
//! Groups:
//! * `checkpoint/{1,10,100}pct`: a checkpoint after 1 %, 10 % or 100 % of the keys changed
//!   since its parent (state of `LAMINA_BENCH_STATE_MIB` MiB, default 256; 64-byte keys,
//!   256-byte values). Each run also writes the same number of bytes to one new file with one
//!   fdatasync (the raw limit) and prints the medians, the bytes written (share of the state)
//!   and raw / checkpoint.
//! * `recovery`: reopening the store: the latest checkpoint loaded, then
//!   `LAMINA_BENCH_WAL_MIB` MiB (default 1024) of WAL replayed; GB/s over parts + WAL, and the
//!   ratio to reading the same WAL alone.
//! * `ring0`: Ring 0 pushing 64-byte changelog entries (in bursts of 256, about 1 µs of its own
//!   work per entry between bursts) with a drainer writing them to a WAL and checkpoints running
//!   every 100 ms (on a checkpoint thread of their own): ns per push (back-pressure waits
//!   excluded, counted), and Ring 0's longest pause at a barrier; then the drainer's rate, its
//!   syncs, and the checkpoint thread's time in jobs, commits and GC.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use lamina::file_backend::FileStorage;
use lamina::snapshot::{
    CheckpointCoordinator, CheckpointOutcome, ResumePoint, Shadow, SourceState,
};
use lamina::{
    ChangelogDrainer, FileSystemCheckpointStore, IncrementalCheckpointManager, IncrementalConfig,
    Op, Options, PerCoreWalManager, StateStoreConfig, SyncPolicy, WalStateStore,
};
use lamina_core::changelog::{ByteRing, Entry, PushError};

const KEY: usize = 64;
const VALUE: usize = 256;
type Store = WalStateStore<FileStorage, 2>;

fn env_mib(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
        << 20
}

fn state_bytes() -> u64 {
    env_mib("LAMINA_BENCH_STATE_MIB", 256)
}

fn scratch() -> tempfile::TempDir {
    match std::env::var_os("LAMINA_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("scratch directory")
}

fn key(i: u64) -> Vec<u8> {
    let mut k = vec![b'k'; KEY];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    k[KEY - 8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64, round: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE];
    for (n, chunk) in v.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(i ^ round.rotate_left(17) ^ n as u64).to_le_bytes());
    }
    v
}

fn options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 64 << 20;
    options.config.max_payload = 128 << 10;
    options
}

fn config() -> StateStoreConfig {
    let mut config = StateStoreConfig::default();
    config.incremental.retain = 2;
    config
}

/// A store in `dir` holding `keys` keys.
fn loaded(dir: &Path, keys: u64) -> Store {
    let mut store = Store::open_dir(dir, options(), config()).expect("open");
    let mut i = 0;
    while i < keys {
        let end = (i + 8192).min(keys);
        store
            .apply((i..end).map(|i| Op::Put(key(i), value(i, 0))))
            .expect("load");
        i = end;
    }
    store
}

/// A small pseudo-random generator (xorshift), so runs change the same keys.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Writes `bytes` bytes to a new file in `dir` and fdatasyncs it; returns the time taken.
fn raw_write(dir: &Path, bytes: u64, buf: &[u8]) -> Duration {
    let path = dir.join("raw");
    let _ = std::fs::remove_file(&path);
    let start = Instant::now();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("raw file");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.write_all(&buf[..n]).expect("raw write");
        left -= n as u64;
    }
    file.sync_data().expect("raw fdatasync");
    let took = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    took
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn checkpoint(c: &mut Criterion) {
    let dir = scratch();
    let raw_dir = scratch();
    let keys = state_bytes() / (KEY + VALUE) as u64;
    let mut store = loaded(dir.path(), keys);
    let first = store.checkpoint().expect("first checkpoint");
    println!(
        "checkpoint: state {} MiB, {keys} keys; the first (full) checkpoint wrote {} parts, {:.1} MiB in {:?}",
        state_bytes() >> 20,
        first.parts_written,
        first.bytes_written as f64 / (1 << 20) as f64,
        first.elapsed
    );
    let buf = vec![0x5au8; 1 << 20];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut round = 1;
    let mut group = c.benchmark_group("checkpoint");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for pct in [1u64, 10, 100] {
        // More samples where one is short: a small checkpoint's few milliseconds vary most
        // with the shared machine.
        group.sample_size(match pct {
            1 => 40,
            10 => 20,
            _ => 10,
        });
        let mut ours = Vec::new();
        let mut io = Vec::new();
        let mut raws = Vec::new();
        let mut written = Vec::new();
        group.bench_function(format!("{pct}pct"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    round += 1;
                    let changes = keys * pct / 100;
                    let picked: Vec<u64> = if pct == 100 {
                        (0..keys).collect()
                    } else {
                        (0..changes).map(|_| rng.below(keys)).collect()
                    };
                    for chunk in picked.chunks(8192) {
                        store
                            .apply(chunk.iter().map(|&i| Op::Put(key(i), value(i, round))))
                            .expect("change");
                    }
                    let start = Instant::now();
                    let committed = store.checkpoint().expect("checkpoint");
                    let took = start.elapsed();
                    total += took;
                    ours.push(took);
                    io.push(committed.write_time);
                    written.push(committed.bytes_written + committed.manifest_bytes);
                    raws.push(raw_write(raw_dir.path(), committed.bytes_written, &buf));
                }
                total
            });
        });
        if ours.is_empty() {
            continue;
        }
        let ours_median = median(&mut ours);
        let io_median = median(&mut io);
        let raw_median = median(&mut raws);
        written.sort_unstable();
        let bytes = written[written.len() / 2];
        println!(
            "checkpoint/{pct}pct: median {ours_median:?} in all (barriers, parts, manifest, GC, WAL \
             truncation), of which parts + manifest {io_median:?}; {:.2} MiB written = {:.2} % of \
             the state; raw write + fdatasync of those bytes {raw_median:?}: raw / (parts + \
             manifest) = {:.3}, raw / all = {:.3}",
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 * 100.0 / state_bytes() as f64,
            raw_median.as_secs_f64() / io_median.as_secs_f64(),
            raw_median.as_secs_f64() / ours_median.as_secs_f64()
        );
    }
    group.finish();
}

fn recovery(c: &mut Criterion) {
    let dir = scratch();
    let keys = state_bytes() / (KEY + VALUE) as u64;
    let wal_bytes = env_mib("LAMINA_BENCH_WAL_MIB", 1024);
    {
        let mut store = loaded(dir.path(), keys);
        store.checkpoint().expect("checkpoint");
        // WAL after the checkpoint: puts over the same keys (the state keeps its size).
        let per_entry = (4 + 5 + KEY + VALUE + 32) as u64;
        let entries = wal_bytes / per_entry;
        let mut i = 0;
        while i < entries {
            let end = (i + 8192).min(entries);
            store
                .apply((i..end).map(|i| Op::Put(key(i % keys), value(i, 7))))
                .expect("wal");
            i = end;
        }
        store.close().expect("close");
    }
    let mut group = c.benchmark_group("recovery");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    let mut rates = Vec::new();
    group.bench_function("checkpoint_and_wal", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let store = Store::open_dir(dir.path(), options(), config()).expect("recover");
                let took = start.elapsed();
                total += took;
                let report = store.recovery();
                let wal: u64 = report.cores.iter().map(|c| c.records).sum::<u64>()
                    * (4 + 5 + KEY + VALUE + 32) as u64;
                rates.push((report.part_bytes + wal) as f64 / took.as_secs_f64());
                black_box(store.len());
                drop(store.into_writers());
            }
            total
        });
    });
    let mut scans = Vec::new();
    group.bench_function("wal_scan_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let (mut wal, _) =
                    PerCoreWalManager::open(dir.path().join("wal"), 2, options()).expect("open");
                let mut bytes = 0u64;
                for core in 0..2 {
                    wal.read_core(core, lamina::Lsn::FIRST, |r| {
                        bytes += r.payload.len() as u64 + 32;
                    })
                    .expect("scan");
                }
                let took = start.elapsed();
                total += took;
                scans.push(bytes as f64 / took.as_secs_f64());
                drop(wal.writers());
            }
            total
        });
    });
    group.finish();
    if rates.is_empty() || scans.is_empty() {
        return;
    }
    rates.sort_by(f64::total_cmp);
    scans.sort_by(f64::total_cmp);
    let (rate, scan) = (rates[rates.len() / 2], scans[scans.len() / 2]);
    println!(
        "recovery: {:.2} GB/s (checkpoint parts + {} MiB of WAL); WAL open + scan alone {:.2} GB/s; ratio {:.3}",
        rate / 1e9,
        wal_bytes >> 20,
        scan / 1e9,
        rate / scan
    );
}

const RING: usize = 1 << 22;

/// What the drainer thread of `ring0` did, for its printed line.
#[derive(Default)]
struct DrainerStats {
    /// Entries drained (barriers included).
    entries: u64,
    /// Drains that got entries: each ended with one sync.
    syncs: u64,
    /// Time in those drains: appends, shadow applies and the sync.
    drain_time: Duration,
    /// Of which syncing.
    sync_time: Duration,
    /// The drainer thread's whole run.
    wall: Duration,
}

/// What the checkpoint thread of `ring0` did.
#[derive(Default)]
struct CheckpointStats {
    /// Checkpoint jobs: parts, manifest.
    job_time: Duration,
    /// Their commits.
    commit_time: Duration,
    /// Garbage collection after each.
    gc_time: Duration,
}

/// What the drainer tells the checkpoint thread of `ring0`.
enum ToCheckpoints {
    /// A core's state at a barrier.
    Capture(lamina::BarrierCapture),
    /// The core's WAL is durable through this LSN.
    Durable(lamina::Lsn),
}

impl DrainerStats {
    /// Entries per second the drainer takes when it has work (syncs included).
    fn rate(&self) -> f64 {
        self.entries as f64 / self.drain_time.as_secs_f64().max(1e-9)
    }

    /// Nanoseconds per entry in the drain loop (appends, shadow), syncs left out.
    fn ns_per_entry(&self) -> f64 {
        (self.drain_time - self.sync_time).as_nanos() as f64 / self.entries.max(1) as f64
    }
}

/// Ring 0 pushing into its queue while the drainer writes the WAL and checkpoints run.
fn ring0(c: &mut Criterion) {
    let dir = scratch();
    // The drainer is the log's group commit: it syncs once per drain. The log's own batch
    // policy would add a write and a sync per 64 KiB on top (about 1500 per second at 1 M
    // entries per second, each blocking the drainer).
    let mut wal_options = options();
    wal_options.config.policy = SyncPolicy::Manual;
    let (wal, recovery) =
        PerCoreWalManager::open(dir.path().join("wal"), 1, wal_options).expect("wal");
    drop(recovery);
    let store: Arc<dyn lamina::CheckpointStore> =
        Arc::new(FileSystemCheckpointStore::open(dir.path().join("checkpoints")).expect("store"));
    let incremental = IncrementalConfig::default();
    let manager = IncrementalCheckpointManager::new(1, incremental).expect("manager");
    let resume = ResumePoint {
        current: None,
        last_epoch: 0,
        last_id: 0,
    };
    let mut coordinator =
        CheckpointCoordinator::<1>::new(store, manager, &resume, Duration::from_secs(60))
            .expect("coordinator");
    let mut ring: Box<ByteRing<RING>> = Box::new(ByteRing::new());
    let (producer, consumer) = ring.split();
    let writer = wal.writers().pop().expect("writer");
    let requested = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let checkpoints = AtomicU64::new(0);
    let mut pushes = Vec::new();
    let mut barrier_pauses = Vec::new();
    let mut barrier_waits = Vec::new();
    let mut fulls = 0u64;
    let mut drained = DrainerStats::default();
    let mut checkpointed = CheckpointStats::default();
    std::thread::scope(|scope| {
        // Ring 1 only drains: it hands each capture and its durable LSN to the checkpoint
        // thread, which owns the coordinator, as in an engine. Nothing of a checkpoint (its
        // job's I/O, its commit, GC) runs on the drainer, so none of it stalls the draining.
        let (to_checkpoints, checkpoint_rx) = mpsc::channel::<ToCheckpoints>();
        let (stop, requested, checkpoints) = (&stop, &requested, &checkpoints);
        let coordinator = &mut coordinator;
        let checkpointer = scope.spawn(move || {
            let mut stats = CheckpointStats::default();
            let mut next = Instant::now() + Duration::from_millis(100);
            while !stop.load(Ordering::Relaxed) {
                match checkpoint_rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(ToCheckpoints::Capture(capture)) => {
                        coordinator.handle_capture(capture).expect("capture");
                    }
                    Ok(ToCheckpoints::Durable(lsn)) => {
                        coordinator.handle_durable(0, lsn).expect("durable");
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if let Some(job) = coordinator.poll_job() {
                    let job_started = Instant::now();
                    let outcome = job.run();
                    stats.job_time += job_started.elapsed();
                    let commit_started = Instant::now();
                    match coordinator.handle_job(outcome).expect("job") {
                        CheckpointOutcome::Committed(_) => {
                            checkpoints.fetch_add(1, Ordering::Relaxed);
                        }
                        CheckpointOutcome::Aborted { reason, .. } => panic!("aborted: {reason}"),
                    }
                    stats.commit_time += commit_started.elapsed();
                    let gc_started = Instant::now();
                    coordinator.collect_garbage().expect("gc");
                    stats.gc_time += gc_started.elapsed();
                }
                if Instant::now() >= next && !coordinator.in_progress() {
                    let barriers = coordinator
                        .trigger(SourceState::default())
                        .expect("trigger");
                    for (_, epoch) in barriers {
                        requested.store(epoch, Ordering::Release);
                    }
                    next = Instant::now() + Duration::from_millis(100);
                }
            }
            stats
        });
        let drainer = scope.spawn(move || {
            let mut stats = DrainerStats::default();
            let started = Instant::now();
            let shadow = Shadow::new(0, incremental.buckets);
            let mut drainer =
                ChangelogDrainer::with_shadows(vec![(consumer, writer, shadow)], 65536)
                    .expect("drainer");
            let mut durable = lamina::Lsn::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let drain_started = Instant::now();
                let report = drainer.drain().expect("drain");
                if report.entries() > 0 {
                    stats.drain_time += drain_started.elapsed();
                    stats.entries += report.entries() as u64;
                    stats.syncs += 1;
                    stats.sync_time += report.cores.iter().map(|c| c.sync_time).sum::<Duration>();
                }
                // A send fails only once the checkpoint thread stopped: the run is ending.
                for capture in drainer.take_captures() {
                    let _ = to_checkpoints.send(ToCheckpoints::Capture(capture));
                }
                if let Some(core) = report.cores.first()
                    && core.durable > durable
                {
                    durable = core.durable;
                    let _ = to_checkpoints.send(ToCheckpoints::Durable(durable));
                }
                if report.entries() == 0 {
                    std::thread::yield_now();
                }
            }
            stats.wall = started.elapsed();
            stats
        });
        let mut producer = producer;
        let mut epoch_done = 0u64;
        let value = [7u8; 64 - 5 - 32];
        let mut k = [0u8; 32];
        let mut i = 0u64;
        let mut group = c.benchmark_group("ring0");
        group.sample_size(20);
        group.bench_function("push_64B", |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let wanted = requested.load(Ordering::Acquire);
                    if wanted > epoch_done {
                        let waited = Instant::now();
                        loop {
                            let start = Instant::now();
                            match producer.push(&Entry::Barrier { epoch: wanted }) {
                                Ok(()) => {
                                    barrier_pauses.push(start.elapsed());
                                    break;
                                }
                                Err(PushError::Full { .. }) => std::thread::yield_now(),
                                Err(e) => panic!("barrier: {e}"),
                            }
                        }
                        barrier_waits.push(waited.elapsed());
                        epoch_done = wanted;
                    }
                    let start = Instant::now();
                    let mut n = 0;
                    while n < 256 && done + n < iters {
                        k[..8].copy_from_slice(&(i % 100_000).to_le_bytes());
                        match producer.push(&Entry::Put {
                            key: &k,
                            value: &value,
                        }) {
                            Ok(()) => {
                                i += 1;
                                n += 1;
                            }
                            Err(PushError::Full { .. }) => break,
                            Err(e) => panic!("push: {e}"),
                        }
                    }
                    if n == 0 {
                        // The queue was full: back-pressure, not push cost. Let the drainer run.
                        fulls += 1;
                        std::thread::yield_now();
                    } else {
                        timed += start.elapsed();
                        // Ring 0's own work between events (not timed): about 1 µs per event,
                        // so the drainer keeps up and the pushes find room, as in an engine
                        // whose operators do more than push.
                        let until = start + Duration::from_micros(n);
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    }
                    done += n;
                }
                pushes.push(timed.as_nanos() as f64 / iters as f64);
                timed
            });
        });
        group.finish();
        stop.store(true, Ordering::Relaxed);
        drained = drainer.join().expect("drainer thread");
        checkpointed = checkpointer.join().expect("checkpoint thread");
    });
    if pushes.is_empty() {
        return;
    }
    pushes.sort_by(f64::total_cmp);
    let max_pause = barrier_pauses.iter().max().copied().unwrap_or_default();
    let max_wait = barrier_waits.iter().max().copied().unwrap_or_default();
    println!(
        "ring0: push of a 64-byte entry, median {:.1} ns (back-pressure waits excluded: {fulls} times the queue was full); \
         {} barriers: Ring 0's longest pause at one {max_pause:?} (the push), {max_wait:?} with the wait for \
         room in a full queue; {} checkpoints committed meanwhile",
        pushes[pushes.len() / 2],
        barrier_pauses.len(),
        checkpoints.load(Ordering::Relaxed)
    );
    println!(
        "ring0 drainer: {:.2} M entries/s while draining ({:.0} ns per entry in appends and shadow, \
         syncs left out; {} entries in {:?}); {} syncs ({:.0} per s of the run), {:.1} % of the \
         drain time; on the checkpoint thread: jobs {:?}, commits {:?}, GC {:?}",
        drained.rate() / 1e6,
        drained.ns_per_entry(),
        drained.entries,
        drained.wall,
        drained.syncs,
        drained.syncs as f64 / drained.wall.as_secs_f64().max(1e-9),
        drained.sync_time.as_secs_f64() * 100.0 / drained.drain_time.as_secs_f64().max(1e-9),
        checkpointed.job_time,
        checkpointed.commit_time,
        checkpointed.gc_time,
    );
}

criterion_group!(benches, ring0, checkpoint, recovery);
criterion_main!(benches);
