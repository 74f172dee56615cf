//! Durable 4 KiB commits on the file backend against the raw limit, measured in the same run.
//!
//! * `raw`: `write_all_at` of 4 KiB at the next page of a pre-zeroed file, then `sync_data`.
//! * `pipeline`: the core's commit pipeline on [`FileStorage`] with pre-zeroed segments, one
//!   4 KiB frame (4064-byte payload) per commit (`EveryRecord`), pumped until durable; once
//!   with a write then a separate sync, once with the sync linked to the write.
//!
//! * `rolling_4k`: the pipeline's 4 KiB commits on 1 MiB segments, rolling over every 250
//!   commits or so: new segments zero-filled inline at creation, on the append path, against
//!   taken from the spares a background thread prepared (the creates of each kind are printed).
//! * `pages_{256,1000}`: small commits (`write_all_at` + `sync_data`) at growing, unaligned
//!   offsets (the commits back to back, as the pipeline writes them) against the same commits
//!   each widened to the whole 4 KiB pages it touches (the page's earlier bytes rewritten from a
//!   copy of the file's tail), and against them padded with zeros forward only, to the end of
//!   their last page (what `Options::pad_to_page` does); each once with the pre-zeroed file still in the page cache
//!   (`warm`) and once with its cache dropped before the timed loop (`cold`, so a partial page
//!   write may have to read the page first).
//!
//! After each page group, the same ways run again in turn, their order rotating, and each
//! one's median and 90th percentile commit latency is printed: on a machine shared with other
//! work, that pairing is what makes them comparable.
//!
//! Each sample starts on a fresh file prepared outside the timed loop, so no commit grows a
//! file. At the end the commits/s of each (over every iteration criterion ran, warm-up
//! included) and their ratio to `raw` (or, for the page groups, to the unaligned warm writes)
//! are printed.
//! `LAMINA_BENCH_DIR` picks the file system (default: the system's temporary directory).

use criterion::{Criterion, criterion_group, criterion_main};
use lamina_core::commit::{Config, Pipeline, SyncPolicy};
use lamina_core::segment::SegmentHeader;
use lamina_core::{Lsn, SegmentId, drive};
use lamina_file::{FileStorage, Options};
use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Bytes per commit.
const COMMIT: usize = 4096;
/// The payload whose frame is [`COMMIT`] bytes (a 32-byte record header, no padding).
const PAYLOAD: usize = COMMIT - 32;

fn scratch() -> TempDir {
    match std::env::var_os("LAMINA_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("scratch directory")
}

fn random() -> u64 {
    RandomState::new().hash_one(0u64) | 1
}

/// Room for `iters` commits and a segment's header and seals.
fn size_for(iters: u64) -> u64 {
    (iters + 4) * COMMIT as u64
}

/// A new file in `dir` holding `size` zeros, synced.
fn zeroed(dir: &TempDir, size: u64) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("raw"))
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

/// `iters` writes of 4 KiB + `sync_data` into a file pre-zeroed beforehand; the time of the
/// writes only.
fn raw(iters: u64) -> Duration {
    let dir = scratch();
    let file = zeroed(&dir, size_for(iters));
    let data = vec![0xa5u8; COMMIT];
    let start = Instant::now();
    for i in 0..iters {
        file.write_all_at(&data, i * COMMIT as u64).expect("write");
        file.sync_data().expect("sync");
    }
    start.elapsed()
}

/// `iters` durable commits through the pipeline on a [`FileStorage`] whose one segment was
/// prepared before the timed loop.
fn pipeline(iters: u64, linked: bool) -> Duration {
    let dir = scratch();
    let size = size_for(iters);
    let mut storage =
        FileStorage::open(dir.path(), Options::new().prepare_size(size)).expect("open");
    let config = Config {
        policy: SyncPolicy::EveryRecord,
        max_writes_in_flight: 4,
        linked,
        segment_size: size,
        max_payload: PAYLOAD as u32,
        nonce_seed: random(),
    };
    let header = SegmentHeader {
        core: 0,
        log_id: 1,
        sequence: SegmentId(0),
        nonce: random(),
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    };
    let mut buf = vec![0u8; 4 * COMMIT];
    let mut p: Pipeline<'_, 4> = Pipeline::create(&mut buf, config, header).expect("config");
    // The segment's creation (zero-fill, header, directory fsync) happens here, untimed.
    drive::pump_all(&mut p, &mut storage, &mut |_| {});
    let payload = vec![0xa5u8; PAYLOAD];
    let start = Instant::now();
    for _ in 0..iters {
        let lsn = p.append(&payload, 0).expect("append");
        drive::pump_all(&mut p, &mut storage, &mut |_| {});
        assert!(p.durable_lsn() >= lsn, "durable after the pump");
    }
    start.elapsed()
}

/// The segment size of the `rolling` group: a roll every 250 commits or so.
const ROLL_SEGMENT: u64 = 1 << 20;

/// `iters` durable 4 KiB commits through the pipeline on 1 MiB segments, so that the log rolls
/// over again and again: each new segment zero-filled inline at its creation (`ahead` 0), or
/// taken from the spares a background thread keeps ready (`ahead` 1). Adds the storage's
/// counts of creates to `creates` (from a spare, inline).
fn rolling(iters: u64, ahead: usize, creates: &Cell<(u64, u64)>) -> Duration {
    let dir = scratch();
    let options = Options::new()
        .prepare_size(ROLL_SEGMENT)
        .prepare_ahead(ahead);
    let mut storage = FileStorage::open(dir.path(), options).expect("open");
    let config = Config {
        policy: SyncPolicy::EveryRecord,
        max_writes_in_flight: 4,
        linked: false,
        segment_size: ROLL_SEGMENT,
        max_payload: PAYLOAD as u32,
        nonce_seed: random(),
    };
    let header = SegmentHeader {
        core: 0,
        log_id: 1,
        sequence: SegmentId(0),
        nonce: random(),
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    };
    let mut buf = vec![0u8; 4 * COMMIT];
    let mut p: Pipeline<'_, 4> = Pipeline::create(&mut buf, config, header).expect("config");
    drive::pump_all(&mut p, &mut storage, &mut |_| {});
    storage.wait_for_spares(Duration::from_secs(10));
    let before = storage.stats();
    let payload = vec![0xa5u8; PAYLOAD];
    let start = Instant::now();
    for _ in 0..iters {
        let lsn = p.append(&payload, 0).expect("append");
        drive::pump_all(&mut p, &mut storage, &mut |_| {});
        assert!(p.durable_lsn() >= lsn, "durable after the pump");
    }
    let time = start.elapsed();
    let stats = storage.stats();
    let (spare, inline) = creates.get();
    creates.set((
        spare + stats.creates_from_spare - before.creates_from_spare,
        inline + stats.creates_inline - before.creates_inline,
    ));
    time
}

fn roll(c: &mut Criterion) {
    let mut group = c.benchmark_group("rolling_4k");
    for (name, ahead) in [("inline", 0), ("background", 1)] {
        let tally = Tally::default();
        let creates = Cell::new((0, 0));
        group.bench_function(name, |b| {
            b.iter_custom(|n| tally.add(n, rolling(n, ahead, &creates)))
        });
        if let Some(got) = tally.per_second() {
            let (spare, inline) = creates.get();
            println!(
                "rolling_4k: {name} {got:.0} commits/s; segments created from a spare {spare}, \
                 zero-filled inline {inline}"
            );
        }
    }
    group.finish();
}

/// The page size whole-page writes are aligned to.
const PAGE: u64 = 4096;

/// How a small commit's write is widened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Widen {
    /// Not: the commit's bytes only.
    No,
    /// Zeros after it to the end of its last page.
    Forward,
    /// To the whole pages it touches, the first one's earlier bytes rewritten.
    Whole,
}

/// How the small commits of the page groups are written.
#[derive(Clone, Copy)]
struct Pages {
    /// Bytes per commit.
    commit: u64,
    /// How each write is widened.
    widen: Widen,
    /// Drop the pre-zeroed file from the page cache before the timed loop.
    cold: bool,
}

/// `iters` commits of `how.commit` bytes + `sync_data`, back to back from offset 72 (the first
/// record's offset) into a file pre-zeroed beforehand; the time of the writes only.
fn pages(iters: u64, how: Pages) -> Duration {
    pages_each(iters, how, &mut |_, _| {})
}

/// As [`pages`], also telling `each` the time of every commit and whether it is the first to
/// write into a page (the one that may have to read it first when the cache is cold).
fn pages_each(iters: u64, how: Pages, each: &mut dyn FnMut(Duration, bool)) -> Duration {
    let dir = scratch();
    let start_at = 72;
    let size = (start_at + (iters + 1) * how.commit).div_ceil(PAGE) * PAGE;
    let file = zeroed(&dir, size);
    if how.cold {
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
    }
    // The file's bytes as written so far, so that a widened write rewrites what is there.
    let mut image = vec![0u8; size as usize];
    let start = Instant::now();
    let mut at = start_at;
    for i in 0..iters {
        let end = at + how.commit;
        image[at as usize..end as usize].fill(i as u8 | 1);
        let (from, to) = match how.widen {
            Widen::No => (at, end),
            Widen::Forward => (at, end.div_ceil(PAGE) * PAGE),
            Widen::Whole => (at / PAGE * PAGE, end.div_ceil(PAGE) * PAGE),
        };
        let one = Instant::now();
        file.write_all_at(&image[from as usize..to as usize], from)
            .expect("write");
        file.sync_data().expect("sync");
        each(one.elapsed(), (end - 1) / PAGE != (at.max(1) - 1) / PAGE);
        at = end;
    }
    start.elapsed()
}

/// Commits and time measured by one benchmark, for the ratios printed at the end.
#[derive(Default)]
struct Tally {
    commits: Cell<u64>,
    time: Cell<Duration>,
}

impl Tally {
    fn add(&self, iters: u64, time: Duration) -> Duration {
        self.commits.set(self.commits.get() + iters);
        self.time.set(self.time.get() + time);
        time
    }

    /// Commits per second; `None` when it did not run (filtered out).
    fn per_second(&self) -> Option<f64> {
        let secs = self.time.get().as_secs_f64();
        (self.commits.get() > 0 && secs > 0.0).then(|| self.commits.get() as f64 / secs)
    }
}

fn commit(c: &mut Criterion) {
    let (t_raw, t_split, t_linked) = (Tally::default(), Tally::default(), Tally::default());
    let mut group = c.benchmark_group("commit_4k");
    group.bench_function("raw", |b| b.iter_custom(|n| t_raw.add(n, raw(n))));
    group.bench_function("pipeline", |b| {
        b.iter_custom(|n| t_split.add(n, pipeline(n, false)))
    });
    group.bench_function("pipeline_linked", |b| {
        b.iter_custom(|n| t_linked.add(n, pipeline(n, true)))
    });
    group.finish();
    let raw = t_raw.per_second();
    for (name, t) in [
        ("raw", &t_raw),
        ("pipeline", &t_split),
        ("pipeline_linked", &t_linked),
    ] {
        let Some(got) = t.per_second() else { continue };
        match raw {
            Some(raw) if name != "raw" => {
                println!(
                    "commit_4k: {name} {got:.0} commits/s, {:.3}x raw",
                    got / raw
                )
            }
            _ => println!("commit_4k: {name} {got:.0} commits/s"),
        }
    }
}

/// The ways the page groups write, by name.
const PAGE_WAYS: [(&str, Widen, bool); 6] = [
    ("unaligned_warm", Widen::No, false),
    ("padded_warm", Widen::Forward, false),
    ("whole_pages_warm", Widen::Whole, false),
    ("unaligned_cold", Widen::No, true),
    ("padded_cold", Widen::Forward, true),
    ("whole_pages_cold", Widen::Whole, true),
];

/// Rounds of the paired comparison (`LAMINA_BENCH_PAIRED_ROUNDS` sets another number), and
/// commits per way in each round.
const PAIRED_ROUNDS: usize = 12;
const PAIRED_COMMITS: u64 = 150;

/// The ways in turn (the order rotating every round), so that load from elsewhere on a
/// shared machine falls on all of them alike; prints each way's median and 90th percentile
/// commit latency.
fn paired(commit: u64) {
    // Per way: every commit's time, and those that wrote first into a page.
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); PAGE_WAYS.len()];
    let mut first: Vec<Vec<Duration>> = vec![Vec::new(); PAGE_WAYS.len()];
    let rounds = std::env::var("LAMINA_BENCH_PAIRED_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(PAIRED_ROUNDS);
    for round in 0..rounds {
        for k in 0..PAGE_WAYS.len() {
            let i = (k + round) % PAGE_WAYS.len();
            let (_, widen, cold) = PAGE_WAYS[i];
            let how = Pages {
                commit,
                widen,
                cold,
            };
            pages_each(PAIRED_COMMITS, how, &mut |d, new_page| {
                times[i].push(d);
                if new_page {
                    first[i].push(d);
                }
            });
        }
    }
    let micros = |t: &mut Vec<Duration>, q: f64| {
        t.sort_unstable();
        t.get(((t.len().max(1) - 1) as f64 * q) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    for (((name, ..), t), f) in PAGE_WAYS.iter().zip(&mut times).zip(&mut first) {
        let mean = t.iter().sum::<Duration>().as_secs_f64() * 1e6 / t.len().max(1) as f64;
        println!(
            "pages_{commit} paired: {name} median {:.0} µs, mean {mean:.0} µs, p90 {:.0} µs \
             ({} commits); first into a page: median {:.0} µs ({} commits)",
            micros(t, 0.5),
            micros(t, 0.9),
            t.len(),
            micros(f, 0.5),
            f.len()
        );
    }
}

fn whole_pages(c: &mut Criterion) {
    for commit in [256, 1000] {
        let mut group = c.benchmark_group(format!("pages_{commit}"));
        let mut tallies = Vec::new();
        for (name, widen, cold) in PAGE_WAYS {
            let how = Pages {
                commit,
                widen,
                cold,
            };
            let tally = Tally::default();
            group.bench_function(name, |b| b.iter_custom(|n| tally.add(n, pages(n, how))));
            tallies.push((name, tally));
        }
        group.finish();
        let base = tallies.first().and_then(|(_, t)| t.per_second());
        for (name, t) in &tallies {
            let Some(got) = t.per_second() else { continue };
            match base {
                Some(base) => println!(
                    "pages_{commit}: {name} {got:.0} commits/s, {:.3}x unaligned_warm",
                    got / base
                ),
                None => println!("pages_{commit}: {name} {got:.0} commits/s"),
            }
        }
        if tallies.iter().any(|(_, t)| t.per_second().is_some()) {
            paired(commit);
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = commit, roll, whole_pages
}
criterion_main!(benches);
