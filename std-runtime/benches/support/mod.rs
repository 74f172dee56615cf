//! Pieces the groups of `wal_bench` share: scratch directories, pre-zeroed files, a storage that
//! discards, and the tallies the ratios are printed from.

pub(crate) mod cpu;
pub(crate) mod reference;
pub(crate) mod sink;
pub(crate) mod stores;

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

/// A fresh directory; `LAMINA_BENCH_DIR` picks the file system (default: the system's temporary
/// directory).
pub(crate) fn scratch() -> TempDir {
    match std::env::var_os("LAMINA_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("scratch directory")
}

/// `size` rounded up to whole 4 KiB pages.
pub(crate) fn pages(size: u64) -> u64 {
    size.next_multiple_of(4096)
}

/// A new file of `size` bytes of zeros written and synced, so that later writes overwrite
/// blocks that exist and `fdatasync` has no file size to journal (the fast case).
pub(crate) fn prezeroed(path: &Path, size: u64) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create");
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(zeros.len() as u64);
        file.write_all_at(&zeros[..n as usize], at).expect("zero");
        at += n;
    }
    file.sync_all().expect("sync");
    file
}

/// What one benchmark measured over every run criterion made (warm-up included): operations and
/// time per run, and per-operation latencies where the benchmark keeps them.
#[derive(Default)]
pub(crate) struct Tally {
    runs: RefCell<Vec<(u64, Duration)>>,
    latencies: RefCell<Vec<Duration>>,
    /// fdatasyncs counted by the benchmark.
    syncs: RefCell<u64>,
    /// Process CPU time (user + system) over the benchmark's turns.
    cpu: RefCell<Duration>,
}

impl Tally {
    /// Notes a run of `ops` operations that took `time`; returns `time` for criterion.
    pub(crate) fn add(&self, ops: u64, time: Duration) -> Duration {
        self.runs.borrow_mut().push((ops, time));
        time
    }

    /// Notes per-operation latencies.
    pub(crate) fn latencies(&self, more: &[Duration]) {
        self.latencies.borrow_mut().extend_from_slice(more);
    }

    /// Runs `f`, adding the process CPU time (user + system) it took to the tally: the variants
    /// of a group take turns, so during `f` the process works for this variant only.
    pub(crate) fn on_cpu<R>(&self, f: impl FnOnce() -> R) -> R {
        let start = cpu::process_cpu();
        let result = f();
        *self.cpu.borrow_mut() += cpu::process_cpu().saturating_sub(start);
        result
    }

    /// CPU time per operation over every run; `None` when it did not run.
    pub(crate) fn cpu_per_op(&self) -> Option<Duration> {
        let ops = self.ops();
        (ops > 0).then(|| Duration::from_secs_f64(self.cpu.borrow().as_secs_f64() / ops as f64))
    }

    /// Notes fdatasyncs.
    pub(crate) fn syncs(&self, n: u64) {
        *self.syncs.borrow_mut() += n;
    }

    /// Latencies kept.
    pub(crate) fn count(&self) -> usize {
        self.latencies.borrow().len()
    }

    fn ops(&self) -> u64 {
        self.runs.borrow().iter().map(|r| r.0).sum()
    }

    /// Operations per second over every run; `None` when it did not run (filtered out).
    pub(crate) fn per_second(&self) -> Option<f64> {
        let secs: f64 = self.runs.borrow().iter().map(|r| r.1.as_secs_f64()).sum();
        let ops = self.ops();
        (ops > 0 && secs > 0.0).then(|| ops as f64 / secs)
    }

    /// The median over the runs of the time per operation, counting only runs of at least
    /// `min_ops` operations (criterion's first warm-up runs are a handful of iterations).
    pub(crate) fn median_per_op(&self, min_ops: u64) -> Option<Duration> {
        let mut per: Vec<f64> = self
            .runs
            .borrow()
            .iter()
            .filter(|r| r.0 >= min_ops.max(1))
            .map(|r| r.1.as_secs_f64() / r.0 as f64)
            .collect();
        per.sort_by(f64::total_cmp);
        per.get(per.len() / 2).map(|s| Duration::from_secs_f64(*s))
    }

    /// The median over the runs of operations per second (runs of any size).
    pub(crate) fn median_rate(&self) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .runs
            .borrow()
            .iter()
            .filter(|r| r.0 > 0 && r.1 > Duration::ZERO)
            .map(|r| r.0 as f64 / r.1.as_secs_f64())
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied()
    }

    /// The `p`-th percentile (0..=100) of the kept latencies.
    pub(crate) fn percentile(&self, p: f64) -> Option<Duration> {
        let mut l = self.latencies.borrow_mut();
        l.sort_unstable();
        let last = l.len().checked_sub(1)?;
        let at = ((last as f64) * p / 100.0).round() as usize;
        l.get(at.min(last)).copied()
    }

    /// fdatasyncs per operation.
    pub(crate) fn syncs_per_op(&self) -> Option<f64> {
        let ops = self.ops();
        (ops > 0).then(|| *self.syncs.borrow() as f64 / ops as f64)
    }
}

/// `got / raw`, as text for the one-line reports (`-` when either did not run).
pub(crate) fn ratio(got: Option<f64>, raw: Option<f64>) -> String {
    match (got, raw) {
        (Some(g), Some(r)) if r > 0.0 => format!("{:.3}x", g / r),
        _ => "-".into(),
    }
}

/// A duration as text with a fitting unit (`-` when missing).
pub(crate) fn show(d: Option<Duration>) -> String {
    match d {
        Some(d) if d < Duration::from_micros(10) => format!("{:.1} ns", d.as_secs_f64() * 1e9),
        Some(d) if d < Duration::from_millis(10) => format!("{:.1} µs", d.as_secs_f64() * 1e6),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
        None => "-".into(),
    }
}
