//! A quick measurement, not a benchmark suite: commits of one 4 KiB frame each through the core's
//! pipeline (up to 8 writes in flight, one fdatasync at a time covering the completed ones) on
//! the file backend and on the io_uring backend in a few modes, in pre-zeroed segments. Prints
//! commits per second and CPU time (user + system, all threads) per commit; the ratios are to
//! the file backend with 8 writes per fdatasync (the second line; it is to the first on that
//! line).
//!
//! `cargo run --release -p lamina-uring --example commit_rate`; `LAMINA_COMMITS` sets the
//! count (default 3000), `LAMINA_BENCH_DIR` the directory (default: the current one).

use lamina_core::commit::{AppendError, Config, Pipeline, SyncPolicy};
use lamina_core::io::SegmentStorage;
use lamina_core::record::{self, frame_len};
use lamina_core::segment::SegmentHeader;
use lamina_core::{Lsn, SegmentId, drive};
use lamina_file::FileStorage;
use lamina_uring::{Options, UringStorage};
use std::time::{Duration, Instant};

const SLOTS: usize = 8;
const SEGMENT: u64 = 32 << 20;

fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` fills the `rusage` it is given; zeroed is a valid `rusage` either way.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Appends `commits` frames of 4 KiB as fast as the pipeline takes them, driving I/O after every
/// `per_pump` appends; returns wall and CPU time until the last is durable.
fn run<S: SegmentStorage>(
    s: &mut S,
    commits: u64,
    linked: bool,
    per_pump: u64,
) -> (Duration, Duration) {
    let payload = vec![0x5au8; 4096 - frame_len(0)];
    assert_eq!(frame_len(payload.len()), 4096);
    let config = Config {
        policy: SyncPolicy::EveryRecord,
        max_writes_in_flight: 8,
        linked,
        segment_size: SEGMENT,
        max_payload: record::MAX_PAYLOAD.min(8192),
        nonce_seed: 0x1234_5678_9abc_def1,
    };
    let header = SegmentHeader {
        core: 0,
        log_id: 1,
        sequence: SegmentId(0),
        nonce: 42,
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut p: Pipeline<'_, SLOTS> = Pipeline::create(&mut buf, config, header).expect("config");
    // The segment's creation (and zero-filling) is not timed.
    loop {
        drive::pump_all(&mut p, s, &mut |_| {});
        s.wait_for_completion().expect("wait");
        if !drive::pump(&mut p, s, &mut |_| {}) {
            break;
        }
    }
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut n = 0;
    while n < commits {
        match p.append(&payload, 0) {
            Ok(_) => n += 1,
            Err(AppendError::Full) => {
                s.wait_for_completion().expect("wait");
                drive::pump(&mut p, s, &mut |_| {});
            }
            Err(e) => panic!("append: {e}"),
        }
        if n % per_pump == 0 {
            drive::pump(&mut p, s, &mut |_| {});
        }
    }
    while p.durable_lsn() < Lsn(commits) {
        s.wait_for_completion().expect("wait");
        drive::pump(&mut p, s, &mut |_| {});
    }
    (wall.elapsed(), cpu_time() - cpu)
}

fn main() {
    let commits: u64 = std::env::var("LAMINA_COMMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let base = std::env::var("LAMINA_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let report = |name: &str, (wall, cpu): (Duration, Duration), file_rate: Option<f64>| {
        let rate = commits as f64 / wall.as_secs_f64();
        let ratio = file_rate.map_or(String::new(), |f| format!("  {:.2}x file", rate / f));
        println!(
            "{name:<28} {rate:>9.0} commits/s  {:>6.1} us CPU/commit{ratio}",
            cpu.as_secs_f64() * 1e6 / commits as f64
        );
        rate
    };
    let dir = tempfile::tempdir_in(&base).expect("dir");
    let mut f = FileStorage::open(
        dir.path(),
        lamina_file::Options::new().prepare_size(SEGMENT),
    )
    .expect("file backend");
    // A blocking backend completes each write inside `submit`, so driven after every append
    // each fdatasync covers one write; driven after every 8, each covers 8.
    let file_rate = report(
        "file, 1 write per fdatasync",
        run(&mut f, commits, false, 1),
        None,
    );
    drop(f);
    let dir = tempfile::tempdir_in(&base).expect("dir");
    let mut f = FileStorage::open(
        dir.path(),
        lamina_file::Options::new().prepare_size(SEGMENT),
    )
    .expect("file backend");
    let file_rate = report(
        "file, 8 writes per fdatasync",
        run(&mut f, commits, false, 8),
        Some(file_rate),
    );
    drop(f);
    let fixed = Options::new().fixed_files(true).fixed_buffers(true);
    let direct = Options::new().direct(true);
    // (name, options, linked, appends between pumps)
    let modes = [
        ("uring, driven every append", Options::new(), false, 1),
        ("uring", Options::new(), false, 8),
        ("uring fixed files+buffers", fixed, false, 8),
        ("uring O_DIRECT", direct, false, 8),
        (
            "uring O_DIRECT fixed",
            direct.fixed_files(true).fixed_buffers(true),
            false,
            8,
        ),
        ("uring linked pairs", Options::new(), true, 8),
        ("uring O_DIRECT linked pairs", direct, true, 8),
    ];
    for (name, options, linked, per_pump) in modes {
        let dir = tempfile::tempdir_in(&base).expect("dir");
        let mut s = UringStorage::open(dir.path(), options.prepare_size(SEGMENT))
            .unwrap_or_else(|e| panic!("{e}"));
        report(
            name,
            run(&mut s, commits, linked, per_pump),
            Some(file_rate),
        );
    }
}
