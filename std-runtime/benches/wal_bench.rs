//! `WriteAheadLog` against the raw limit of the same machine, measured in the same run. Each
//! group prints one line per variant with its figure and its ratio to the raw reference.
//!
//! The fsync groups (`commit_latency`, `group_commit`, `shared`, `pipelined`) run lamina on every
//! backend compiled in (`support::stores`): the file backend always; with the `io-uring` feature
//! also io_uring buffered (`uring`) and io_uring with `O_DIRECT`, registered buffers and files
//! (`uring_direct`). Their lines also give io_uring / file, and the process CPU time (user +
//! system, `getrusage(RUSAGE_SELF)`, so every thread of the process and the kernel's io_uring
//! workers count) per committed record, measured around each variant's turns; the raw
//! references' CPU per record is given too.
//!
//! * `append`: buffered appends of 64/256/1024/4096-byte records (`SyncPolicy::Manual`). The
//!   timed loop only appends: between stretches of half a buffer the log is synced outside the
//!   timed part, so the buffer never fills inside it. It runs on a storage that discards
//!   (`support::sink`): the timed loop does no I/O, so the backend does not matter there, and the
//!   untimed writes cost no disk bandwidth. Segment roll-overs (every 64 MiB) fall inside the
//!   timed loop and are counted; on that storage they cost the framing of a seal and a header.
//! * `commit_latency`: append + sync of one record, per size, with pre-zeroed segments; raw:
//!   `write_all_at` of the same framed bytes at the same offsets of a pre-zeroed file +
//!   `sync_data`. Medians of the per-commit latencies. With `io-uring` also in the linked-write
//!   mode (`Config::linked`: write and fsync as one `IOSQE_IO_LINK` pair), buffered and direct.
//! * `group_commit`: 100 appends of 256 bytes, then sync; raw: one write of the same bytes +
//!   `sync_data`. Records/s.
//!
//!   In these two groups the variants take turns commit by commit (group by group), in a
//!   rotating order, in the same run, on files side by side: the fsync latency of a shared
//!   machine drifts by multiples within seconds, so separate runs give ratios that are noise.
//!   Each variant's benchmark runs them all and tells criterion the time of its own; the
//!   printed ratios are over every turn of every benchmark.
//! * `recovery_scan`: `WriteAheadLog::open_with` recovering a log of 256-byte records from the
//!   page cache (`LAMINA_BENCH_SCAN_BYTES`, default 1 GiB, written once in setup); raw: reading
//!   the same files with `read_at` into a 256 KiB buffer. GB/s. Twice: with the default largest
//!   payload (1 MiB, so recovery reads through a window of 1 MiB and a bit) and with 4 KiB (a
//!   256 KiB window). The three scans take turns within every run, like the pairs above.
//! * `shared`: 1/2/8/32 threads each committing 256-byte records (write, wait until durable) on
//!   a pre-zeroed file: commits/s, p50/p99 latency, fdatasyncs per commit, for `SharedLog` and
//!   the raw references: write then sync on one thread, a leader-based group commit (the
//!   committing thread syncs for the group, `support::reference::Leader`), a dedicated flusher
//!   thread (`support::reference::Flusher`). All variants take turns in chunks of 16 commits a
//!   thread within every run (criterion is told the file backend's time); commits/s are over
//!   all chunks, and the ratios are also given at the median latencies, which the disk's stalls
//!   move less.
//! * `pipelined`: group commit with the default batch policy (batches cut at 64 KiB, 4 writes in
//!   flight), 256-byte records. `1`: one owner streams appends and syncs every 1024 records;
//!   raw: the same framed bytes of each 1024 records in one `write_all_at` + `sync_data`.
//!   `8`: 8 threads committing through `SharedLog`; raw: the leader reference. Records/s; the
//!   variants take turns as in `shared` (criterion is told the file backend's time).
//!
//! Each fsync sample starts on fresh files prepared outside the timed loop, so no commit grows
//! a file. `LAMINA_BENCH_DIR` picks the file system (default: the system's temporary directory).
//! `cargo bench ... -- NAME` runs the groups whose benchmark ids contain NAME.

mod support;

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use lamina::file_backend::{self, FileStorage};
use lamina::{DirLog, Options, SharedLog, SyncPolicy, WriteAheadLog};
use lamina_core::record::frame_len;
use lamina_core::segment::HEADER_LEN;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use support::reference::{Flusher, Leader};
use support::sink::Sink;
use support::stores::{COMMIT_STORES, STORES, Store};
use support::{Tally, pages, prezeroed, ratio, scratch, show};

/// Record sizes of the `append` and `commit_latency` groups.
const SIZES: [usize; 4] = [64, 256, 1024, 4096];
/// Records per group of `group_commit`.
const GROUP: u64 = 100;
/// The record size of `group_commit`, `recovery_scan` and `shared`.
const RECORD: usize = 256;
/// Bytes of the raw scan's read buffer (the window recovery reads with).
const SCAN_BUF: usize = 256 * 1024;
/// The largest payload the logs of the fsync groups accept (their largest record).
const MAX_PAYLOAD: u32 = 4096;
/// Thread counts of `shared`.
const THREADS: [usize; 4] = [1, 2, 8, 32];

/// Options of a log whose one segment holds `bytes` of frames: the sync policy `Manual` (only
/// `sync` cuts a batch), the segment sized for them with room for the header and seals.
fn options_for(bytes: u64) -> Options {
    let mut options = Options::default();
    options.config.policy = SyncPolicy::Manual;
    options.config.max_payload = MAX_PAYLOAD;
    options.config.segment_size = segment_for(bytes);
    options
}

/// A segment size that holds `bytes` of frames, the header and seals (and at least one of the
/// largest frames, as the pipeline requires).
fn segment_for(bytes: u64) -> u64 {
    pages(bytes.max(2 * MAX_PAYLOAD as u64) + HEADER_LEN as u64 + 4096)
}

/// `iters` appends of `payload` bytes on `log`, the buffer synced (untimed) every half buffer.
fn append_run(log: &mut WriteAheadLog<Sink>, payload: &[u8], iters: u64) -> Duration {
    let stretch = (Options::default().buffer_size / 2 / frame_len(payload.len())) as u64;
    let mut time = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(stretch);
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(log.append(std::hint::black_box(payload)).expect("append"));
        }
        time += start.elapsed();
        log.sync().expect("sync");
        left -= n;
    }
    time
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    for size in SIZES {
        let tally = Tally::default();
        let mut options = Options::default();
        options.config.policy = SyncPolicy::Manual;
        let (mut log, _) = WriteAheadLog::open_with(Sink::default(), options).expect("open");
        let payload = vec![0xa5u8; size];
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_custom(|n| tally.add(n, append_run(&mut log, &payload, n)))
        });
        if let Some(median) = tally.median_per_op(1000) {
            println!(
                "append/{size}: median {} per append over the runs, {:.1} M appends/s overall",
                show(Some(median)),
                tally.per_second().unwrap_or(0.0) / 1e6
            );
        }
    }
    group.finish();
}

/// Variant 0 of the paired groups is the raw reference; the others are lamina on each of
/// `stores`.
fn variant_names(stores: &[Store]) -> Vec<&'static str> {
    std::iter::once("raw")
        .chain(stores.iter().map(|s| s.name()))
        .collect()
}

/// One tally per variant of [`variant_names`].
fn variant_tallies(stores: &[Store]) -> Vec<Tally> {
    variant_names(stores)
        .iter()
        .map(|_| Tally::default())
        .collect()
}

/// A fresh directory with one log on each of `stores`, each with a pre-zeroed segment, and a
/// pre-zeroed raw file, all for `bytes` of frames.
fn logs_and_file(
    stores: &[Store],
    bytes: u64,
    options: Options,
) -> (tempfile::TempDir, Vec<DirLog>, std::fs::File) {
    let dir = scratch();
    let logs = stores
        .iter()
        .map(|s| s.open(&dir.path().join(s.name()), options))
        .collect();
    let file = prezeroed(&dir.path().join("raw"), segment_for(bytes));
    (dir, logs, file)
}

/// `iters` commits of a `size`-byte record on lamina on each of [`COMMIT_STORES`] (append +
/// sync) and as
/// many raw commits (`write_all_at` of the same framed bytes at the same offsets of a pre-zeroed
/// file + `sync_data`), taking turns commit by commit in a rotating order so that all see the
/// same disk (the machine is shared and its fsync latency drifts by multiples within seconds).
/// Keeps every latency and each turn's process CPU time in the tallies; returns the total time
/// of variant `me`.
fn paired_commits(size: usize, iters: u64, me: usize, tallies: &[Tally]) -> Duration {
    let frame = frame_len(size) as u64;
    let bytes = iters * frame;
    let (_dir, mut logs, file) = logs_and_file(COMMIT_STORES, bytes, options_for(bytes));
    let payload = vec![0xa5u8; size];
    let framed = vec![0xa5u8; frame as usize];
    let n = tallies.len();
    let mut latencies = vec![Vec::with_capacity(iters as usize); n];
    for i in 0..iters {
        for k in 0..n {
            let who = (i as usize + k) % n;
            let took = tallies[who].on_cpu(|| {
                let t = Instant::now();
                match who.checked_sub(1) {
                    None => {
                        file.write_all_at(&framed, HEADER_LEN as u64 + i * frame)
                            .expect("write");
                        file.sync_data().expect("sync");
                    }
                    Some(l) => {
                        let log = &mut logs[l];
                        let lsn = log.append(&payload).expect("append");
                        assert!(log.sync().expect("sync") >= lsn, "durable after sync");
                    }
                }
                t.elapsed()
            });
            latencies[who].push(took);
        }
    }
    let mut mine = Duration::ZERO;
    for (who, (tally, l)) in tallies.iter().zip(&latencies).enumerate() {
        tally.latencies(l);
        let total = tally.add(iters, l.iter().sum());
        if who == me {
            mine = total;
        }
    }
    mine
}

/// Settings of the groups that wait for fdatasync.
fn fsync_group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    group
}

/// Settings of a paired group with a benchmark per variant, each of which runs them all: the
/// time criterion aims for is shared out, so the group takes as long as with one variant.
fn paired_group<'c>(
    c: &'c mut Criterion,
    name: &str,
    stores: &[Store],
) -> BenchmarkGroup<'c, WallTime> {
    let variants = variant_names(stores).len() as u32;
    let mut group = fsync_group(c, name);
    group
        .warm_up_time(Duration::from_millis(1000) / variants)
        .measurement_time(Duration::from_secs(4) / variants);
    group
}

/// Prints one line per variant of a paired group: its figure (`show` of its value), its ratio
/// to raw (variant 0), io_uring's ratio to the file backend (variant 1), and the process CPU
/// time per record or commit with its ratio to the file backend's.
fn report_variants(
    label: &str,
    stores: &[Store],
    values: &[Option<f64>],
    tallies: &[Tally],
    show_value: impl Fn(f64) -> String,
) {
    let names = variant_names(stores);
    let cpu = |t: &Tally| t.cpu_per_op().map(|d| d.as_secs_f64());
    for (who, (name, (value, tally))) in names.iter().zip(values.iter().zip(tallies)).enumerate() {
        let Some(v) = value else { continue };
        let mut line = format!("{label}/{name}: {}", show_value(*v));
        if who > 0 {
            line += &format!(", {} raw", ratio(Some(*v), values[0]));
        }
        if who > 1 {
            line += &format!(", {} file", ratio(Some(*v), values[1]));
        }
        line += &format!("; CPU {} per record", show(tally.cpu_per_op()));
        if who > 1 {
            line += &format!(" ({} file)", ratio(cpu(tally), cpu(&tallies[1])));
        }
        println!("{line}");
    }
}

fn commit_latency(c: &mut Criterion) {
    let stores = COMMIT_STORES;
    let mut group = paired_group(c, "commit_latency", stores);
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let tallies = variant_tallies(stores);
        for (me, name) in variant_names(stores).into_iter().enumerate() {
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter_custom(|n| paired_commits(size, n, me, &tallies))
            });
        }
        if tallies[0].count() == 0 {
            continue; // filtered out
        }
        let p50: Vec<_> = tallies
            .iter()
            .map(|t| t.percentile(50.0).map(|d| d.as_secs_f64()))
            .collect();
        let label = format!("commit_latency/{size}");
        report_variants(&label, stores, &p50, &tallies, |v| {
            format!("median {}", show(Some(Duration::from_secs_f64(v))))
        });
        println!(
            "commit_latency/{size}: p99 {} ({} commits each)",
            variant_names(stores)
                .iter()
                .zip(&tallies)
                .map(|(n, t)| format!("{n} {}", show(t.percentile(99.0))))
                .collect::<Vec<_>>()
                .join(", "),
            tallies[0].count(),
        );
    }
    group.finish();
}

/// `iters` groups of [`GROUP`] appends of [`RECORD`] bytes then a sync on lamina on each
/// backend, taking turns group by group with as many raw groups (one write of the same framed
/// bytes + `sync_data`). Returns the total time of variant `me`.
fn paired_groups(iters: u64, me: usize, tallies: &[Tally]) -> Duration {
    let bytes = GROUP * frame_len(RECORD) as u64;
    let (_dir, mut logs, file) = logs_and_file(STORES, iters * bytes, options_for(iters * bytes));
    let payload = vec![0xa5u8; RECORD];
    let framed = vec![0xa5u8; bytes as usize];
    let n = tallies.len();
    let mut latencies = vec![Vec::with_capacity(iters as usize); n];
    for i in 0..iters {
        for k in 0..n {
            let who = (i as usize + k) % n;
            let took = tallies[who].on_cpu(|| {
                let t = Instant::now();
                match who.checked_sub(1) {
                    None => {
                        file.write_all_at(&framed, HEADER_LEN as u64 + i * bytes)
                            .expect("write");
                        file.sync_data().expect("sync");
                    }
                    Some(l) => {
                        let log = &mut logs[l];
                        let mut last = lamina::Lsn::ZERO;
                        for _ in 0..GROUP {
                            last = log.append(&payload).expect("append");
                        }
                        assert!(log.sync().expect("sync") >= last, "durable after sync");
                    }
                }
                t.elapsed()
            });
            latencies[who].push(took);
        }
    }
    let mut mine = Duration::ZERO;
    for (who, (tally, l)) in tallies.iter().zip(&latencies).enumerate() {
        tally.latencies(l);
        let total = tally.add(iters * GROUP, l.iter().sum());
        if who == me {
            mine = total;
        }
    }
    mine
}

fn group_commit(c: &mut Criterion) {
    let mut group = paired_group(c, "group_commit", STORES);
    group.throughput(Throughput::Elements(GROUP));
    let tallies = variant_tallies(STORES);
    for (me, name) in variant_names(STORES).into_iter().enumerate() {
        group.bench_function(name, |b| b.iter_custom(|n| paired_groups(n, me, &tallies)));
    }
    group.finish();
    if tallies[0].per_second().is_none() {
        return; // filtered out
    }
    // Records/s at the median group latency: the mean is the disk's stalls as much as anyone's.
    let at_median: Vec<_> = tallies
        .iter()
        .map(|t| t.percentile(50.0).map(|d| GROUP as f64 / d.as_secs_f64()))
        .collect();
    let overall: Vec<_> = tallies.iter().map(Tally::per_second).collect();
    report_variants(
        &format!("group_commit/{GROUP}x{RECORD}"),
        STORES,
        &at_median,
        &tallies,
        |v| format!("{v:.0} records/s at the median group"),
    );
    report_variants(
        &format!("group_commit/{GROUP}x{RECORD}/overall"),
        STORES,
        &overall,
        &tallies,
        |v| format!("{v:.0} records/s over all groups"),
    );
}

/// Bytes of the log `recovery_scan` recovers.
fn scan_bytes() -> u64 {
    std::env::var("LAMINA_BENCH_SCAN_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30)
}

/// Writes a log of about `bytes` of [`RECORD`]-byte records into `dir` and closes it.
fn write_scan_log(dir: &std::path::Path, bytes: u64) {
    let mut options = Options::default();
    options.config.policy = SyncPolicy::Manual;
    let (mut log, _) = WriteAheadLog::open(dir, options).expect("open");
    let payload = vec![0xa5u8; RECORD];
    let frames = bytes / frame_len(RECORD) as u64;
    for i in 0..frames {
        log.append(&payload).expect("append");
        if i % 100_000 == 99_999 {
            log.sync().expect("sync");
        }
    }
    log.close().expect("close");
}

/// Reads every segment file of `dir` with `read_at` into `buf`; returns the bytes.
fn raw_scan(dir: &std::path::Path, buf: &mut [u8]) -> u64 {
    let mut total = 0;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    for path in files {
        let file = std::fs::File::open(path).expect("open");
        let mut at = 0;
        loop {
            let n = file.read_at(buf, at).expect("read");
            if n == 0 {
                break;
            }
            std::hint::black_box(&buf[..n]);
            at += n as u64;
        }
        total += at;
    }
    total
}

fn recovery_scan(c: &mut Criterion) {
    // Written on first use, so that a run filtered to other groups does not write it.
    let log = std::cell::OnceCell::new();
    let setup = || {
        log.get_or_init(|| {
            let dir = scratch();
            let bytes = scan_bytes();
            let start = Instant::now();
            write_scan_log(dir.path(), bytes);
            eprintln!(
                "recovery_scan: wrote {bytes} bytes of {RECORD}-byte records in {:.1?}",
                start.elapsed()
            );
            let file_bytes = raw_scan(dir.path(), &mut vec![0u8; SCAN_BUF]);
            (dir, file_bytes)
        })
    };
    let mut group = fsync_group(c, "recovery_scan");
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(scan_bytes()));
    // Recovery reads through a window of at least one largest frame: 1 MiB and a bit with the
    // default `max_payload`, 256 KiB (the raw scan's buffer) with 4 KiB payloads.
    let mut default_options = Options::default();
    default_options.config.policy = SyncPolicy::Manual;
    let mut small_options = default_options;
    small_options.config.max_payload = MAX_PAYLOAD;
    let scans = [
        ("raw", None, Tally::default()),
        ("lamina", Some(default_options), Tally::default()),
        (
            "lamina_max_payload_4k",
            Some(small_options),
            Tally::default(),
        ),
    ];
    let scanned = std::cell::Cell::new(0);
    // Every benchmark runs all three scans in turn, in a rotating order, so that all see the
    // same machine (the page cache's copy speed drifts by 2x between runs here), and tells
    // criterion the time of its own.
    for (me, (name, _, _)) in scans.iter().enumerate() {
        group.bench_function(*name, |b| {
            b.iter_custom(|n| {
                let (dir, file_bytes) = setup();
                let mut buf = vec![0u8; SCAN_BUF];
                let mut mine = Duration::ZERO;
                for i in 0..n as usize {
                    for k in 0..scans.len() {
                        let who = (i + k) % scans.len();
                        let (_, options, tally) = &scans[who];
                        let start = Instant::now();
                        let bytes = match options {
                            None => raw_scan(dir.path(), &mut buf),
                            Some(options) => {
                                let storage =
                                    FileStorage::open(dir.path(), file_backend::Options::new())
                                        .expect("open");
                                let (log, report) =
                                    WriteAheadLog::open_with(storage, *options).expect("recover");
                                let time = start.elapsed();
                                // Dropped without a close: the next open resumes the same last
                                // segment.
                                drop(log);
                                scanned.set(report.bytes);
                                tally.add(report.bytes, time);
                                if who == me {
                                    mine += time;
                                }
                                continue;
                            }
                        };
                        let time = start.elapsed();
                        // The first open after the close starts a new segment (a header more).
                        assert!(bytes >= *file_bytes, "the raw scan read the log");
                        tally.add(bytes, time);
                        if who == me {
                            mine += time;
                        }
                    }
                }
                mine
            })
        });
    }
    group.finish();
    // GB/s of the median scan (each tally entry is one scan).
    let median = |t: &Tally| t.median_rate().map(|r| r / 1e9);
    let (r, rm) = (scans[0].2.per_second(), median(&scans[0].2));
    let file_bytes = log.get().map_or(0, |l| l.1);
    for (name, _, tally) in &scans[1..] {
        let Some(l) = tally.per_second() else {
            continue;
        };
        let lm = median(tally);
        println!(
            "recovery_scan/{RECORD}/{name}: median scan {:.2} GB/s, raw read_at {:.2} GB/s: {} raw; over all scans {:.2} GB/s, raw {:.2} GB/s: {} raw ({} bytes scanned, {file_bytes} read raw)",
            lm.unwrap_or(0.0),
            rm.unwrap_or(0.0),
            ratio(lm, rm),
            l / 1e9,
            r.unwrap_or(0.0) / 1e9,
            ratio(Some(l), r),
            scanned.get(),
        );
    }
}

/// `iters` commits of `data` split over `threads` threads, each calling `commit`; the
/// wall time from the common start to the last commit, each commit's latency kept in `tally`.
fn threaded<C: Fn(&[u8]) + Sync>(
    threads: usize,
    iters: u64,
    data: &[u8],
    tally: &Tally,
    commit: C,
) -> Duration {
    let barrier = std::sync::Barrier::new(threads + 1);
    let (time, latencies) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|t| {
                let count = iters / threads as u64 + u64::from(t < iters % threads as u64);
                let (barrier, commit) = (&barrier, &commit);
                s.spawn(move || {
                    let mut latencies = Vec::with_capacity(count as usize);
                    barrier.wait();
                    for _ in 0..count {
                        let t = Instant::now();
                        commit(data);
                        latencies.push(t.elapsed());
                    }
                    (latencies, Instant::now())
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut end = start;
        let mut latencies = Vec::with_capacity(iters as usize);
        for w in workers {
            let (l, done) = w.join().expect("worker");
            latencies.extend(l);
            end = end.max(done);
        }
        (end - start, latencies)
    });
    tally.latencies(&latencies);
    tally.add(iters, time)
}

/// How a threaded variant commits one record.
type Commit<'a> = Box<dyn Fn(&[u8]) + Sync + 'a>;

/// One variant of a threaded group: `threads` threads each committing `data` with `commit`.
struct Turn<'a> {
    tally: &'a Tally,
    threads: usize,
    data: &'a [u8],
    commit: Commit<'a>,
}

/// `iters` commits through each of `turns`, which take turns in chunks of at least 16 commits a
/// thread (at most 64 chunks), in a rotating order, so that all see the same disk (the machine
/// is shared and its fsync latency drifts by multiples within seconds). Each turn's process CPU
/// time goes to its tally. Returns the time of turn `me`.
fn take_turns(threads: usize, iters: u64, turns: &[Turn<'_>], me: usize) -> Duration {
    let chunks = (iters / (16 * threads as u64)).clamp(1, 64);
    let mut mine = Duration::ZERO;
    for c in 0..chunks {
        let n = iters / chunks + u64::from(c < iters % chunks);
        for k in 0..turns.len() {
            let who = (c as usize + k) % turns.len();
            let t = &turns[who];
            let time = t
                .tally
                .on_cpu(|| threaded(t.threads, n, t.data, t.tally, &*t.commit));
            if who == me {
                mine += time;
            }
        }
    }
    mine
}

/// The `shared` variants of one thread count, with what each measured.
struct Variants {
    write_then_sync: Option<Tally>,
    leader: Tally,
    flusher: Tally,
    /// `SharedLog` on each of [`STORES`].
    lamina: Vec<Tally>,
}

/// `iters` commits of [`RECORD`] bytes on `threads` threads through each variant: lamina's
/// `SharedLog` (`commit`) on each backend, the leader and flusher references, and at one thread
/// write then sync, taking turns ([`take_turns`]). Returns the file backend's time.
fn shared_round(threads: usize, iters: u64, v: &Variants) -> Duration {
    let frame = frame_len(RECORD) as u64;
    let bytes = iters * frame;
    // The raw references write the framed bytes lamina writes for a record of `RECORD` bytes.
    let (framed, payload) = (vec![0xa5u8; frame as usize], vec![0xa5u8; RECORD]);
    let dir = scratch();
    let file = |name: &str| prezeroed(&dir.path().join(name), segment_for(bytes));
    let logs: Vec<_> = STORES
        .iter()
        .map(|s| SharedLog::new(s.open(&dir.path().join(s.name()), options_for(bytes))))
        .collect();
    let leader = Leader::new(file("leader"), HEADER_LEN as u64);
    let flusher = Flusher::new(file("flusher"), HEADER_LEN as u64);
    let single = v.write_then_sync.as_ref().map(|t| (t, file("single")));
    let at = std::sync::atomic::AtomicU64::new(HEADER_LEN as u64);
    let mut turns: Vec<Turn<'_>> = logs
        .iter()
        .zip(&v.lamina)
        .map(|(log, tally)| Turn {
            tally,
            threads,
            data: &payload,
            commit: Box::new(move |data: &[u8]| {
                log.commit(data).expect("commit");
            }),
        })
        .collect();
    turns.push(Turn {
        tally: &v.leader,
        threads,
        data: &framed,
        commit: Box::new(|data: &[u8]| leader.commit(data)),
    });
    turns.push(Turn {
        tally: &v.flusher,
        threads,
        data: &framed,
        commit: Box::new(|data: &[u8]| flusher.commit(data)),
    });
    if let Some((tally, file)) = &single {
        turns.push(Turn {
            tally,
            threads: 1,
            data: &framed,
            commit: Box::new(|data: &[u8]| {
                let offset = at.fetch_add(frame, std::sync::atomic::Ordering::Relaxed);
                file.write_all_at(data, offset).expect("write");
                file.sync_data().expect("sync");
            }),
        });
    }
    let file_time = take_turns(threads, iters, &turns, 0);
    drop(turns);
    for (log, tally) in logs.iter().zip(&v.lamina) {
        tally.syncs(log.syncs());
    }
    v.leader.syncs(leader.syncs());
    v.flusher.syncs(flusher.syncs());
    if let Some((tally, _)) = &single {
        tally.syncs(
            at.load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(HEADER_LEN as u64)
                / frame,
        );
    }
    file_time
}

/// Prints one line for a threaded variant: commits/s, latencies, syncs per commit, CPU per
/// commit, and its ratios to `reference`s (commits/s overall and at the median latencies; CPU
/// per commit).
fn report_threaded(label: &str, t: &Tally, reference: &[(&str, &Tally)]) {
    let Some(rate) = t.per_second() else { return };
    let mut against = String::new();
    let p50 = |t: &Tally| t.percentile(50.0).map(|d| 1.0 / d.as_secs_f64());
    let cpu = |t: &Tally| t.cpu_per_op().map(|d| d.as_secs_f64());
    for (what, r) in reference {
        against += &format!(
            ", {} {what} (at the p50s: {}; CPU {})",
            ratio(Some(rate), r.per_second()),
            ratio(p50(t), p50(r)),
            ratio(cpu(t), cpu(r)),
        );
    }
    println!(
        "{label}: {rate:.0} commits/s, p50 {}, p99 {}, {:.3} fdatasyncs/commit, CPU {} per commit{against}",
        show(t.percentile(50.0)),
        show(t.percentile(99.0)),
        t.syncs_per_op().unwrap_or(0.0),
        show(t.cpu_per_op()),
    );
}

fn shared(c: &mut Criterion) {
    let mut group = fsync_group(c, "shared");
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));
    for threads in THREADS {
        let v = Variants {
            write_then_sync: (threads == 1).then(Tally::default),
            leader: Tally::default(),
            flusher: Tally::default(),
            lamina: STORES.iter().map(|_| Tally::default()).collect(),
        };
        // Criterion is told the file backend's time; every variant runs in each round.
        group.bench_function(BenchmarkId::new("lamina", threads), |b| {
            b.iter_custom(|n| shared_round(threads, n, &v))
        });
        let mut refs = vec![("leader", &v.leader)];
        if let Some(single) = &v.write_then_sync {
            report_threaded(&format!("shared/write_then_sync/{threads}"), single, &[]);
            refs.push(("write_then_sync", single));
        }
        report_threaded(&format!("shared/leader/{threads}"), &v.leader, &[]);
        report_threaded(
            &format!("shared/flusher/{threads}"),
            &v.flusher,
            &[("leader", &v.leader)],
        );
        for (k, (store, tally)) in STORES.iter().zip(&v.lamina).enumerate() {
            let mut against = refs.clone();
            if k > 0 {
                against.push(("file", &v.lamina[0]));
            }
            report_threaded(
                &format!("shared/{}/{threads}", store.name()),
                tally,
                &against,
            );
        }
    }
    group.finish();
}

/// Records a single owner appends between syncs in `pipelined/1`.
const SYNC_EVERY: u64 = 1024;

/// `n` records of [`RECORD`] bytes streamed by one owner, synced every [`SYNC_EVERY`] records and
/// at the end; `at` counts the records the log already holds.
fn stream(log: &mut DirLog, payload: &[u8], n: u64) {
    for j in 1..=n {
        log.append(payload).expect("append");
        if j % SYNC_EVERY == 0 || j == n {
            log.sync().expect("sync");
        }
    }
}

/// The raw limit of [`stream`]: the framed bytes of every [`SYNC_EVERY`] records (or fewer, at
/// the end) in one `write_all_at` + `sync_data`, from offset `*at` on.
fn raw_stream(file: &std::fs::File, framed: &[u8], n: u64, at: &mut u64) {
    let frame = frame_len(RECORD) as u64;
    let mut left = n;
    while left > 0 {
        let k = left.min(SYNC_EVERY);
        let bytes = framed.get(..(k * frame) as usize).expect("framed bytes");
        file.write_all_at(bytes, *at).expect("write");
        file.sync_data().expect("sync");
        *at += k * frame;
        left -= k;
    }
}

/// `iters` records streamed ([`stream`]) by each backend's log and the raw limit
/// ([`raw_stream`]), taking turns in chunks of at least two sync periods (at most 64 chunks), in
/// a rotating order. Returns the time of variant `me`.
fn pipelined_stream(iters: u64, me: usize, tallies: &[Tally]) -> Duration {
    let frame = frame_len(RECORD) as u64;
    let bytes = iters * frame;
    let (_dir, mut logs, file) = logs_and_file(STORES, bytes, pipelined_options(bytes));
    let payload = vec![0xa5u8; RECORD];
    let framed = vec![0xa5u8; (SYNC_EVERY * frame) as usize];
    let mut at = HEADER_LEN as u64;
    let chunks = (iters / (2 * SYNC_EVERY)).clamp(1, 64);
    let mut mine = Duration::ZERO;
    for c in 0..chunks {
        let n = iters / chunks + u64::from(c < iters % chunks);
        for k in 0..tallies.len() {
            let who = (c as usize + k) % tallies.len();
            let time = tallies[who].on_cpu(|| {
                let t = Instant::now();
                match who.checked_sub(1) {
                    None => raw_stream(&file, &framed, n, &mut at),
                    Some(l) => stream(&mut logs[l], &payload, n),
                }
                t.elapsed()
            });
            tallies[who].add(n, time);
            if who == me {
                mine += time;
            }
        }
    }
    mine
}

/// The options of `pipelined`: the default batch policy and writes in flight, a segment that
/// holds `bytes` of frames.
fn pipelined_options(bytes: u64) -> Options {
    let mut options = options_for(bytes);
    options.config.policy = lamina::Config::default().policy;
    options
}

/// `iters` commits of [`RECORD`] bytes on 8 threads through each backend's `SharedLog` (default
/// batch policy) and the raw leader reference, taking turns ([`take_turns`]). Returns the time
/// of variant `me` (0: raw, then [`STORES`]).
fn pipelined_shared(iters: u64, me: usize, tallies: &[Tally]) -> Duration {
    let threads = PIPELINED_THREADS;
    let frame = frame_len(RECORD) as u64;
    let bytes = iters * frame;
    let (framed, payload) = (vec![0xa5u8; frame as usize], vec![0xa5u8; RECORD]);
    let dir = scratch();
    let logs: Vec<_> = STORES
        .iter()
        .map(|s| SharedLog::new(s.open(&dir.path().join(s.name()), pipelined_options(bytes))))
        .collect();
    let leader = Leader::new(
        prezeroed(&dir.path().join("leader"), segment_for(bytes)),
        HEADER_LEN as u64,
    );
    let mut turns = vec![Turn {
        tally: &tallies[0],
        threads,
        data: &framed,
        commit: Box::new(|data: &[u8]| leader.commit(data)),
    }];
    for (log, tally) in logs.iter().zip(&tallies[1..]) {
        turns.push(Turn {
            tally,
            threads,
            data: &payload,
            commit: Box::new(move |data: &[u8]| {
                log.commit(data).expect("commit");
            }),
        });
    }
    let time = take_turns(threads, iters, &turns, me);
    drop(turns);
    tallies[0].syncs(leader.syncs());
    for (log, tally) in logs.iter().zip(&tallies[1..]) {
        tally.syncs(log.syncs());
    }
    time
}

/// Committers of `pipelined`'s shared variant.
const PIPELINED_THREADS: usize = 8;

fn pipelined(c: &mut Criterion) {
    let mut group = fsync_group(c, "pipelined");
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));
    // Criterion is told the file backend's time; every variant runs in each round.
    let file = 1;
    let streamed = variant_tallies(STORES);
    group.bench_function(BenchmarkId::new("file", 1), |b| {
        b.iter_custom(|n| pipelined_stream(n, file, &streamed))
    });
    let rates: Vec<_> = streamed.iter().map(Tally::per_second).collect();
    if rates[0].is_some() {
        report_variants(
            &format!("pipelined/1x{RECORD}/sync_every_{SYNC_EVERY}"),
            STORES,
            &rates,
            &streamed,
            |v| format!("{v:.0} records/s"),
        );
    }
    let shared = variant_tallies(STORES);
    group.bench_function(BenchmarkId::new("file", PIPELINED_THREADS), |b| {
        b.iter_custom(|n| pipelined_shared(n, file, &shared))
    });
    group.finish();
    if shared[0].per_second().is_none() {
        return; // filtered out
    }
    let label = |name: &str| format!("pipelined/{PIPELINED_THREADS}x{RECORD}/{name}");
    report_threaded(&label("raw_leader"), &shared[0], &[]);
    for (k, (store, tally)) in STORES.iter().zip(&shared[1..]).enumerate() {
        let mut against = vec![("raw", &shared[0])];
        if k > 0 {
            against.push(("file", &shared[1]));
        }
        report_threaded(&label(store.name()), tally, &against);
    }
}

criterion_group!(
    benches,
    append,
    commit_latency,
    group_commit,
    recovery_scan,
    shared,
    pipelined
);
criterion_main!(benches);
