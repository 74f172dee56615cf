//! `lamina bench`: a quick measure of append, durable commit and recovery scan on this machine,
//! each against the raw limit measured in the same run on the same bytes: appends against
//! `pwrite` of the same framed bytes (page cache, no sync), commits against `pwrite` +
//! `fdatasync` of the same framed bytes at the same offsets of a pre-zeroed file (taking turns,
//! so both see the same disk), the scan against `pread` of the same segment files. The
//! criterion bench (`cargo bench -p lamina --bench wal_bench`) is the reference; this is the
//! few-seconds version.

use crate::Finding;
use crate::errors::{CliError, Exit};
use crate::logcheck;
use crate::output::{Out, bytes, text_of};
use indicatif::ProgressBar;
use lamina::file_backend::FileReader;
use lamina::{DirLog, Mode, Options, SyncPolicy, WriteAheadLog};
use lamina_core::record::{MAX_PAYLOAD, frame_len};
use lamina_core::segment::HEADER_LEN;
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which backend the log runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BackendArg {
    /// `lamina-file`: pwrite and fdatasync.
    File,
    /// `lamina-uring` (a build with feature `io-uring`).
    IoUring,
}

/// How commits are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SyncArg {
    /// Append one record, sync, repeat.
    Every,
    /// Append `--group-size` records, sync, repeat.
    Group,
}

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct Bench {
    /// The backend.
    pub(crate) backend: BackendArg,
    /// Payload bytes per record.
    pub(crate) record_size: usize,
    /// The sync pattern of the commit test.
    pub(crate) sync: SyncArg,
    /// Records per sync with `--sync group`.
    pub(crate) group_size: u64,
    /// Records per test.
    pub(crate) records: u64,
    /// Where the scratch directory is made (default: the system's temporary directory).
    pub(crate) dir: Option<PathBuf>,
}

/// Bytes of the raw scan's reads (the size recovery reads in, for small records).
const SCAN_BUF: usize = 256 * 1024;

/// Runs the benchmark.
///
/// # Errors
/// Settings this build cannot run (io_uring without the feature, a record above the format's
/// limit), or an I/O failure naming the file.
pub(crate) fn run(bench: &Bench, out: &mut Out) -> Result<Finding, CliError> {
    check_settings(bench)?;
    let base = bench.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("lamina-bench-")
        .tempdir_in(&base)
        .map_err(|e| CliError::io(&base, &e))?;
    let root = scratch.path();
    let frame = frame_len(bench.record_size) as u64;
    let group = match bench.sync {
        SyncArg::Every => 1,
        SyncArg::Group => bench.group_size,
    };
    let rounds = bench.records.div_ceil(group);
    let total = rounds * group * frame;
    // The append test writes its records APPEND_ROUNDS times into one log.
    let options = options(bench.record_size, total * APPEND_ROUNDS);
    out.human(format!(
        "lamina bench: {} backend, {}-byte records ({frame} bytes framed), {} records, sync {}, \
         in {}",
        backend_name(bench.backend),
        bench.record_size,
        rounds * group,
        match bench.sync {
            SyncArg::Every => "after every record".to_string(),
            SyncArg::Group => format!("after every {group} records"),
        },
        root.display()
    ));

    let append = append_test(bench, root, &options, rounds * group, frame)?;
    out.human(format!(
        "append  {} records, buffered: lamina {:.0} records/s ({}/s); raw pwrite of the same \
         bytes {}/s; ratio {:.2}x",
        rounds * group,
        append.records as f64 / append.lamina.as_secs_f64(),
        bytes(rate(append.bytes, append.lamina)),
        bytes(rate(append.bytes, append.raw)),
        ratio(append.raw, append.lamina),
    ));

    let commit = commit_test(bench, root, &options, rounds, group, frame)?;
    let lamina_rate =
        (rounds * group) as f64 / commit.lamina.iter().sum::<Duration>().as_secs_f64();
    let raw_rate = (rounds * group) as f64 / commit.raw.iter().sum::<Duration>().as_secs_f64();
    out.human(format!(
        "commit  {rounds} commits of {group} {}: lamina {lamina_rate:.0} records/s (p50 {:.1?}, \
         p99 {:.1?}); raw pwrite + fdatasync {raw_rate:.0} records/s (p50 {:.1?}, p99 {:.1?}); \
         ratio {:.2}x",
        if group == 1 { "record" } else { "records" },
        percentile(&commit.lamina, 50.0),
        percentile(&commit.lamina, 99.0),
        percentile(&commit.raw, 50.0),
        percentile(&commit.raw, 99.0),
        lamina_rate / raw_rate,
    ));

    let scan = scan_test(&root.join("append"))?;
    out.human(format!(
        "scan    lamina recovery scan of {} {}/s; raw pread of the {} segment files {}/s; \
         ratio {:.2}x",
        bytes(scan.lamina_bytes),
        bytes(rate(scan.lamina_bytes, scan.lamina)),
        bytes(scan.bytes),
        bytes(rate(scan.bytes, scan.raw)),
        scan_ratio(&scan),
    ));
    out.json(&json!({
        "command": "bench",
        "backend": backend_name(bench.backend),
        "record_size": bench.record_size,
        "frame_size": frame,
        "records": rounds * group,
        "sync": match bench.sync { SyncArg::Every => "every", SyncArg::Group => "group" },
        "group_size": group,
        "dir": text_of(root),
        "append": {
            "records": append.records,
            "bytes": append.bytes,
            "lamina_seconds": append.lamina.as_secs_f64(),
            "raw_seconds": append.raw.as_secs_f64(),
            "ratio": ratio(append.raw, append.lamina),
        },
        "commit": {
            "syncs": rounds,
            "records_per_sync": group,
            "lamina_records_per_second": lamina_rate,
            "raw_records_per_second": raw_rate,
            "lamina_p50_us": micros(percentile(&commit.lamina, 50.0)),
            "lamina_p99_us": micros(percentile(&commit.lamina, 99.0)),
            "raw_p50_us": micros(percentile(&commit.raw, 50.0)),
            "raw_p99_us": micros(percentile(&commit.raw, 99.0)),
            "ratio": lamina_rate / raw_rate,
        },
        "scan": {
            "lamina_bytes": scan.lamina_bytes,
            "raw_bytes": scan.bytes,
            "lamina_seconds": scan.lamina.as_secs_f64(),
            "raw_seconds": scan.raw.as_secs_f64(),
            "ratio": scan_ratio(&scan),
        },
    }));
    scratch.close().map_err(|e| CliError::io(&base, &e))?;
    Ok(Finding::ok())
}

fn check_settings(bench: &Bench) -> Result<(), CliError> {
    if bench.backend == BackendArg::IoUring && !cfg!(feature = "io-uring") {
        return Err(CliError::usage(
            "this lamina was built without io_uring: build it with `--features io-uring` to \
             bench the io-uring backend",
        ));
    }
    if bench.record_size > MAX_PAYLOAD as usize {
        return Err(CliError::usage(format!(
            "--record-size {} is above the format's largest payload ({MAX_PAYLOAD} bytes)",
            bench.record_size
        )));
    }
    if bench.records == 0 || bench.group_size == 0 {
        return Err(CliError::usage(
            "--records and --group-size must be at least 1",
        ));
    }
    Ok(())
}

fn backend_name(backend: BackendArg) -> &'static str {
    match backend {
        BackendArg::File => "file",
        BackendArg::IoUring => "io-uring",
    }
}

/// Options of a log that holds `total` bytes of frames of `record_size` payloads in one segment
/// where it can (at most 1 GiB a segment), synced only when told.
fn options(record_size: usize, total: u64) -> Options {
    let mut options = Options::default();
    options.config.policy = SyncPolicy::Manual;
    let max_payload = u32::try_from(record_size).unwrap_or(MAX_PAYLOAD).max(4096);
    options.config.max_payload = max_payload;
    let largest = frame_len(max_payload as usize) as u64;
    let segment = (total + HEADER_LEN as u64 + 2 * largest + 4096).next_multiple_of(4096);
    options.config.segment_size = segment.clamp(64 << 10, 1 << 30);
    options.buffer_size = options.buffer_size.max(2 * largest as usize + 4096);
    options
}

/// Opens a new log in `dir` on the chosen backend.
fn open(dir: &Path, options: Options, backend: BackendArg) -> Result<DirLog, CliError> {
    let chosen = match backend {
        BackendArg::File => lamina::Backend::File,
        #[cfg(feature = "io-uring")]
        BackendArg::IoUring => lamina::Backend::Uring(
            lamina::uring_backend::Options::new().prepare_size(options.config.segment_size),
        ),
        #[cfg(not(feature = "io-uring"))]
        BackendArg::IoUring => {
            return Err(CliError::usage("this lamina was built without io_uring"));
        }
    };
    let (log, _, _) =
        WriteAheadLog::open_dir(dir, options, chosen).map_err(|e| CliError::unreadable(dir, e))?;
    Ok(log)
}

fn failed(dir: &Path, e: lamina::Error) -> CliError {
    CliError::new(Exit::Unreadable, format!("{}: {e}", dir.display()))
}

/// A new file of `size` zero bytes, written and synced (so writes into it grow nothing).
fn prezeroed(path: &Path, size: u64) -> Result<File, CliError> {
    let io = |e: std::io::Error| CliError::io(path, &e);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(zeros.len() as u64) as usize;
        file.write_all_at(zeros.get(..n).unwrap_or_default(), at)
            .map_err(io)?;
        at += n as u64;
    }
    file.sync_all().map_err(io)?;
    Ok(file)
}

struct Pair {
    records: u64,
    /// Bytes the raw side moved.
    bytes: u64,
    /// Bytes lamina moved (recovery reads a closed segment only up to its seal).
    lamina_bytes: u64,
    lamina: Duration,
    raw: Duration,
}

/// Rounds of the append test; the best of each side is kept.
const APPEND_ROUNDS: u64 = 3;

/// `records` appends into the log's buffer (written when it fills, never synced inside the timed
/// part); raw: `pwrite` of the same framed bytes in buffer-sized pieces into a pre-zeroed file
/// (the page cache), no fdatasync. Best of [`APPEND_ROUNDS`] each, taking turns.
fn append_test(
    bench: &Bench,
    root: &Path,
    options: &Options,
    records: u64,
    frame: u64,
) -> Result<Pair, CliError> {
    let dir = root.join("append");
    let mut log = open(&dir, *options, bench.backend)?;
    let payload = vec![0xa5u8; bench.record_size];
    let total = records * frame;
    let path = root.join("raw-append");
    let file = prezeroed(&path, (total + HEADER_LEN as u64).next_multiple_of(4096))?;
    let chunk = (options.buffer_size as u64 / frame).max(1) * frame;
    let data = vec![0xa5u8; usize::try_from(chunk).unwrap_or(usize::MAX)];
    let io = |e: std::io::Error| CliError::io(&path, &e);
    let (mut lamina, mut raw) = (Duration::MAX, Duration::MAX);
    for _ in 0..APPEND_ROUNDS {
        let start = Instant::now();
        for _ in 0..records {
            log.append(&payload).map_err(|e| failed(&dir, e))?;
        }
        lamina = lamina.min(start.elapsed());
        log.sync().map_err(|e| failed(&dir, e))?;

        let start = Instant::now();
        let mut at = 0;
        while at < total {
            let n = (total - at).min(chunk) as usize;
            file.write_all_at(data.get(..n).unwrap_or_default(), HEADER_LEN as u64 + at)
                .map_err(io)?;
            at += n as u64;
        }
        raw = raw.min(start.elapsed());
        file.sync_data().map_err(io)?;
    }
    log.close().map_err(|e| failed(&dir, e))?;
    Ok(Pair {
        records,
        bytes: total,
        lamina_bytes: total,
        lamina,
        raw,
    })
}

struct Latencies {
    lamina: Vec<Duration>,
    raw: Vec<Duration>,
}

/// `rounds` commits of `group` records (appends, then sync) and as many raw commits (one write
/// of the same framed bytes at the same offsets of a pre-zeroed file, then fdatasync), taking
/// turns in alternating order so both see the same disk.
fn commit_test(
    bench: &Bench,
    root: &Path,
    options: &Options,
    rounds: u64,
    group: u64,
    frame: u64,
) -> Result<Latencies, CliError> {
    let dir = root.join("commit");
    let mut log = open(&dir, *options, bench.backend)?;
    let path = root.join("raw-commit");
    let file = prezeroed(
        &path,
        (rounds * group * frame + HEADER_LEN as u64).next_multiple_of(4096),
    )?;
    let payload = vec![0xa5u8; bench.record_size];
    let framed = vec![0xa5u8; usize::try_from(group * frame).unwrap_or(usize::MAX)];
    let mut lat = Latencies {
        lamina: Vec::with_capacity(rounds as usize),
        raw: Vec::with_capacity(rounds as usize),
    };
    for round in 0..rounds {
        for turn in 0..2 {
            let start = Instant::now();
            if (round + turn) % 2 == 0 {
                for _ in 0..group {
                    log.append(&payload).map_err(|e| failed(&dir, e))?;
                }
                log.sync().map_err(|e| failed(&dir, e))?;
                lat.lamina.push(start.elapsed());
            } else {
                let at = HEADER_LEN as u64 + round * group * frame;
                file.write_all_at(&framed, at)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| CliError::io(&path, &e))?;
                lat.raw.push(start.elapsed());
            }
        }
    }
    log.close().map_err(|e| failed(&dir, e))?;
    Ok(lat)
}

/// Recovery's scan of the log in `dir` (read-only, as `verify` and `open` run it) against
/// reading its segment files with `pread`, both from the page cache, best of three each.
fn scan_test(dir: &Path) -> Result<Pair, CliError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| CliError::io(dir, &e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    let mut buf = vec![0u8; SCAN_BUF];
    let (mut lamina, mut raw, mut scanned, mut recovered) = (Duration::MAX, Duration::MAX, 0, 0);
    for _ in 0..3 {
        let start = Instant::now();
        let mut total = 0;
        for path in &files {
            let file = File::open(path).map_err(|e| CliError::io(path, &e))?;
            let mut at = 0;
            loop {
                let n = file
                    .read_at(&mut buf, at)
                    .map_err(|e| CliError::io(path, &e))?;
                if n == 0 {
                    break;
                }
                at += n as u64;
            }
            total += at;
        }
        raw = raw.min(start.elapsed());
        scanned = total;

        let reader = FileReader::open(dir).map_err(|e| CliError::unreadable(dir, e))?;
        let check = logcheck::check(dir, reader, Mode::Strict, &ProgressBar::hidden())?;
        match &check.outcome {
            Ok(r) => recovered = r.report.bytes,
            Err(e) => return Err(CliError::unreadable(dir, format!("the scan failed: {e}"))),
        }
        lamina = lamina.min(check.elapsed);
    }
    Ok(Pair {
        records: 0,
        bytes: scanned,
        lamina_bytes: recovered,
        lamina,
        raw,
    })
}

/// lamina's scan rate over the raw one (each over the bytes it read).
fn scan_ratio(scan: &Pair) -> f64 {
    rate(scan.lamina_bytes, scan.lamina) as f64 / rate(scan.bytes, scan.raw).max(1) as f64
}

/// Bytes per second.
fn rate(bytes: u64, time: Duration) -> u64 {
    (bytes as f64 / time.as_secs_f64().max(1e-9)) as u64
}

/// How fast lamina was against raw: raw time / lamina time.
fn ratio(raw: Duration, lamina: Duration) -> f64 {
    raw.as_secs_f64() / lamina.as_secs_f64().max(1e-9)
}

/// The `p`-th percentile of `samples`.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let last = sorted.len().saturating_sub(1);
    let at = ((last as f64) * p / 100.0).round() as usize;
    sorted.get(at.min(last)).copied().unwrap_or_default()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
