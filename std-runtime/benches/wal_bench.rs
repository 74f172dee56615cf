//! `WriteAheadLog` against the raw limit of the same machine, measured in the same run. Each
//! group prints one line per benchmark with lamina's figure and its ratio to the raw reference.
//!
//! * `append`: buffered appends of 64/256/1024/4096-byte records (`SyncPolicy::Manual`). The
//!   timed loop only appends: between stretches of half a buffer the log is synced outside the
//!   timed part, so the buffer never fills inside it. It runs on a storage that discards
//!   (`support::sink`): the timed loop does no I/O, so the backend does not matter there, and the
//!   untimed writes cost no disk bandwidth. Segment roll-overs (every 64 MiB) fall inside the
//!   timed loop and are counted; on that storage they cost the framing of a seal and a header.
//! * `commit_latency`: append + sync of one record, per size, on the file backend with
//!   pre-zeroed segments; raw: `write_all_at` of the same framed bytes at the same offsets of a
//!   pre-zeroed file + `sync_data`. Medians of the per-commit latencies.
//! * `group_commit`: 100 appends of 256 bytes, then sync; raw: one write of the same bytes +
//!   `sync_data`. Records/s.
//!
//!   In these two groups lamina and raw alternate commit by commit (group by group) in the same
//!   run, on two files side by side: the fsync latency of a shared machine drifts by multiples
//!   within seconds, so separate runs give ratios that are noise. The `raw` and `lamina`
//!   benchmarks both run the pair and tell criterion the time of their side; the printed ratio is
//!   over every pair of both.
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
//!   thread within every run (criterion is told lamina's time); commits/s are over all chunks,
//!   and the ratios are also given at the median latencies, which the disk's stalls move less.
//!
//! Each fsync sample starts on a fresh file prepared outside the timed loop, so no commit grows
//! a file. `LAMINA_BENCH_DIR` picks the file system (default: the system's temporary directory).

mod support;

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use lamina::file_backend::{self, FileStorage};
use lamina::{Options, SharedLog, SyncPolicy, WriteAheadLog};
use lamina_core::record::frame_len;
use lamina_core::segment::HEADER_LEN;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use support::reference::{Flusher, Leader};
use support::sink::Sink;
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

/// A log on the file backend in `dir`, whose one segment is pre-zeroed and holds `bytes` of
/// frames; opened (the segment created) before it is returned.
fn prepared_log(dir: &std::path::Path, bytes: u64) -> WriteAheadLog<FileStorage> {
    let options = options_for(bytes);
    let storage = FileStorage::open(
        dir,
        file_backend::Options::new().prepare_size(options.config.segment_size),
    )
    .expect("open storage");
    WriteAheadLog::open_with(storage, options).expect("open").0
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

/// Which side of a paired run criterion is told the time of.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Raw,
    Lamina,
}

/// A fresh log with a pre-zeroed segment and a pre-zeroed raw file, both for `bytes` of frames,
/// side by side in a fresh directory.
fn pair(bytes: u64) -> (tempfile::TempDir, WriteAheadLog<FileStorage>, std::fs::File) {
    let dir = scratch();
    let log = prepared_log(&dir.path().join("log"), bytes);
    let file = prezeroed(&dir.path().join("raw"), segment_for(bytes));
    (dir, log, file)
}

/// `iters` commits of a `size`-byte record on lamina (append + sync) and as many raw commits
/// (`write_all_at` of the same framed bytes at the same offsets of a pre-zeroed file +
/// `sync_data`), interleaved one by one so that both see the same disk (the machine is shared
/// and its fsync latency drifts by multiples within seconds). Keeps every latency in the
/// tallies; returns the total time of `side`.
fn paired_commits(size: usize, iters: u64, side: Side, raw: &Tally, lamina: &Tally) -> Duration {
    let frame = frame_len(size) as u64;
    let (_dir, mut log, file) = pair(iters * frame);
    let payload = vec![0xa5u8; size];
    let framed = vec![0xa5u8; frame as usize];
    let (mut l, mut r) = (
        Vec::with_capacity(iters as usize),
        Vec::with_capacity(iters as usize),
    );
    for i in 0..iters {
        let t = Instant::now();
        let lsn = log.append(&payload).expect("append");
        assert!(log.sync().expect("sync") >= lsn, "durable after sync");
        l.push(t.elapsed());
        let t = Instant::now();
        file.write_all_at(&framed, HEADER_LEN as u64 + i * frame)
            .expect("write");
        file.sync_data().expect("sync");
        r.push(t.elapsed());
    }
    lamina.latencies(&l);
    raw.latencies(&r);
    let (l, r) = (
        lamina.add(iters, l.iter().sum()),
        raw.add(iters, r.iter().sum()),
    );
    match side {
        Side::Raw => r,
        Side::Lamina => l,
    }
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

fn commit_latency(c: &mut Criterion) {
    let mut group = fsync_group(c, "commit_latency");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let (raw, lamina) = (Tally::default(), Tally::default());
        for (name, side) in [("raw", Side::Raw), ("lamina", Side::Lamina)] {
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter_custom(|n| paired_commits(size, n, side, &raw, &lamina))
            });
        }
        let (r50, l50) = (raw.percentile(50.0), lamina.percentile(50.0));
        if l50.is_none() && r50.is_none() {
            continue; // filtered out
        }
        println!(
            "commit_latency/{size}: lamina median {} (p99 {}), raw median {} (p99 {}): {} raw ({} commits each)",
            show(l50),
            show(lamina.percentile(99.0)),
            show(r50),
            show(raw.percentile(99.0)),
            ratio(l50.map(|d| d.as_secs_f64()), r50.map(|d| d.as_secs_f64())),
            lamina.count(),
        );
    }
    group.finish();
}

/// `iters` groups of [`GROUP`] appends of [`RECORD`] bytes then a sync on lamina, interleaved
/// group by group with as many raw groups (one write of the same framed bytes + `sync_data`).
/// Returns the total time of `side`.
fn paired_groups(iters: u64, side: Side, raw: &Tally, lamina: &Tally) -> Duration {
    let bytes = GROUP * frame_len(RECORD) as u64;
    let (_dir, mut log, file) = pair(iters * bytes);
    let payload = vec![0xa5u8; RECORD];
    let framed = vec![0xa5u8; bytes as usize];
    let (mut l, mut r) = (
        Vec::with_capacity(iters as usize),
        Vec::with_capacity(iters as usize),
    );
    for i in 0..iters {
        let t = Instant::now();
        let mut last = lamina::Lsn::ZERO;
        for _ in 0..GROUP {
            last = log.append(&payload).expect("append");
        }
        assert!(log.sync().expect("sync") >= last, "durable after sync");
        l.push(t.elapsed());
        let t = Instant::now();
        file.write_all_at(&framed, HEADER_LEN as u64 + i * bytes)
            .expect("write");
        file.sync_data().expect("sync");
        r.push(t.elapsed());
    }
    lamina.latencies(&l);
    raw.latencies(&r);
    let l = lamina.add(iters * GROUP, l.iter().sum());
    let r = raw.add(iters * GROUP, r.iter().sum());
    match side {
        Side::Raw => r,
        Side::Lamina => l,
    }
}

fn group_commit(c: &mut Criterion) {
    let mut group = fsync_group(c, "group_commit");
    group.throughput(Throughput::Elements(GROUP));
    let (raw, lamina) = (Tally::default(), Tally::default());
    for (name, side) in [("raw", Side::Raw), ("lamina", Side::Lamina)] {
        group.bench_function(name, |b| {
            b.iter_custom(|n| paired_groups(n, side, &raw, &lamina))
        });
    }
    group.finish();
    let (r, l) = (raw.per_second(), lamina.per_second());
    if r.is_none() && l.is_none() {
        return; // filtered out
    }
    // Records/s at the median group latency: the mean is the disk's stalls as much as anyone's.
    let at_median = |t: &Tally| t.percentile(50.0).map(|d| GROUP as f64 / d.as_secs_f64());
    let (rm, lm) = (at_median(&raw), at_median(&lamina));
    println!(
        "group_commit/100x{RECORD}: at the median group lamina {:.0} records/s, raw {:.0} records/s: {} raw; over all groups lamina {:.0}, raw {:.0} records/s: {} raw",
        lm.unwrap_or(0.0),
        rm.unwrap_or(0.0),
        ratio(lm, rm),
        l.unwrap_or(0.0),
        r.unwrap_or(0.0),
        ratio(l, r)
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

/// The `shared` variants of one thread count, with what each measured.
struct Variants {
    write_then_sync: Option<Tally>,
    leader: Tally,
    flusher: Tally,
    lamina: Tally,
}

/// `iters` commits of [`RECORD`] bytes on `threads` threads through each variant: lamina's
/// `SharedLog` (`commit`), the leader and flusher references, and at one thread write then
/// sync. The variants take turns in chunks, in a rotating order, so that all see the same
/// disk (the machine is shared and its fsync latency drifts by multiples within seconds).
/// Returns lamina's time.
fn shared_round(threads: usize, iters: u64, v: &Variants) -> Duration {
    let frame = frame_len(RECORD) as u64;
    let bytes = iters * frame;
    // The raw references write the framed bytes lamina writes for a record of `RECORD` bytes.
    let (framed, payload) = (vec![0xa5u8; frame as usize], vec![0xa5u8; RECORD]);
    let dir = scratch();
    let file = |name: &str| prezeroed(&dir.path().join(name), segment_for(bytes));
    let lamina = SharedLog::new(prepared_log(&dir.path().join("log"), bytes));
    let leader = Leader::new(file("leader"), HEADER_LEN as u64);
    let flusher = Flusher::new(file("flusher"), HEADER_LEN as u64);
    let single = v.write_then_sync.as_ref().map(|t| (t, file("single")));
    let at = std::sync::atomic::AtomicU64::new(HEADER_LEN as u64);
    // Chunks of at least 16 commits a thread, at most 64 of them.
    let chunks = (iters / (16 * threads as u64)).clamp(1, 64);
    let mut lamina_time = Duration::ZERO;
    for c in 0..chunks {
        let n = iters / chunks + u64::from(c < iters % chunks);
        for k in 0..4 {
            match (c + k) % 4 {
                0 => {
                    lamina_time += threaded(threads, n, &payload, &v.lamina, |data| {
                        lamina.commit(data).expect("commit");
                    });
                }
                1 => {
                    threaded(threads, n, &framed, &v.leader, |data| leader.commit(data));
                }
                2 => {
                    threaded(threads, n, &framed, &v.flusher, |data| flusher.commit(data));
                }
                _ => {
                    if let Some((tally, file)) = &single {
                        threaded(1, n, &framed, tally, |data| {
                            let offset = at.fetch_add(frame, std::sync::atomic::Ordering::Relaxed);
                            file.write_all_at(data, offset).expect("write");
                            file.sync_data().expect("sync");
                        });
                        tally.syncs(n);
                    }
                }
            }
        }
    }
    v.lamina.syncs(lamina.syncs());
    v.leader.syncs(leader.syncs());
    v.flusher.syncs(flusher.syncs());
    lamina_time
}

/// Prints one line for a `shared` variant.
fn report_shared(name: &str, threads: usize, t: &Tally, reference: &[(&str, &Tally)]) {
    let Some(rate) = t.per_second() else { return };
    let mut against = String::new();
    let p50 = |t: &Tally| t.percentile(50.0).map(|d| 1.0 / d.as_secs_f64());
    for (what, r) in reference {
        against += &format!(
            ", {} {what} (at the p50s: {})",
            ratio(Some(rate), r.per_second()),
            ratio(p50(t), p50(r))
        );
    }
    println!(
        "shared/{name}/{threads}: {rate:.0} commits/s, p50 {}, p99 {}, {:.3} fdatasyncs/commit{against}",
        show(t.percentile(50.0)),
        show(t.percentile(99.0)),
        t.syncs_per_op().unwrap_or(0.0),
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
            lamina: Tally::default(),
        };
        group.bench_function(BenchmarkId::new("lamina", threads), |b| {
            b.iter_custom(|n| shared_round(threads, n, &v))
        });
        let mut refs = vec![("leader", &v.leader)];
        if let Some(single) = &v.write_then_sync {
            report_shared("write_then_sync", threads, single, &[]);
            refs.push(("write_then_sync", single));
        }
        report_shared("leader", threads, &v.leader, &[]);
        report_shared("flusher", threads, &v.flusher, &[("leader", &v.leader)]);
        report_shared("lamina", threads, &v.lamina, &refs);
    }
    group.finish();
}

criterion_group!(
    benches,
    append,
    commit_latency,
    group_commit,
    recovery_scan,
    shared
);
criterion_main!(benches);
