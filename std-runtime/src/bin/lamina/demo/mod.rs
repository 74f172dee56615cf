//! `lamina demo`: the whole pipeline on the file backend, crashed and recovered.
//!
//! The parent recovers what the directory holds, starts a child (this binary, `demo --child`)
//! that runs the engine ([`engine`]: `--cores` Ring 0 threads mutating their state, the drainer
//! into per-core WALs, a checkpoint every `--checkpoint-every` seconds), shows its progress, kills
//! it with SIGKILL after `--seconds`, recovers (latest checkpoint + WAL replay), and checks that
//! every core's recovered state is its state before plus a prefix of the ops the child applied,
//! at least as long as the child had acknowledged.

mod engine;
mod workload;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lamina::{Options, StateStoreConfig, WalStateStore};

use crate::Finding;
use crate::errors::{CliError, Exit};
use crate::output::{Out, bytes};

/// How far past its last acknowledgement a core's recovered prefix is looked for.
const SEARCH_LIMIT: u64 = 20_000_000;

/// The WAL options of the demo's logs.
pub(crate) fn options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 16 << 20;
    options.config.max_payload = 256 << 10;
    options
}

/// The demo store's settings.
pub(crate) fn config() -> StateStoreConfig {
    let mut config = StateStoreConfig::default();
    config.incremental.buckets = 32;
    config.incremental.retain = 2;
    config
}

/// The demo's flags.
#[derive(Debug)]
pub(crate) struct Demo {
    /// Where the store lives (`None`: a temporary directory).
    pub(crate) dir: Option<PathBuf>,
    /// Ring 0 threads, 1 to 8.
    pub(crate) cores: usize,
    /// How long the child runs before it is killed.
    pub(crate) seconds: f64,
    /// Seconds between checkpoints.
    pub(crate) checkpoint_every: f64,
    /// Run as the child of workload generation `child`.
    pub(crate) child: Option<u64>,
}

/// Runs `$body` with `$n` as the const core count.
macro_rules! with_cores {
    ($cores:expr, $n:ident => $body:expr) => {
        match $cores {
            1 => {
                const $n: usize = 1;
                $body
            }
            2 => {
                const $n: usize = 2;
                $body
            }
            3 => {
                const $n: usize = 3;
                $body
            }
            4 => {
                const $n: usize = 4;
                $body
            }
            5 => {
                const $n: usize = 5;
                $body
            }
            6 => {
                const $n: usize = 6;
                $body
            }
            7 => {
                const $n: usize = 7;
                $body
            }
            8 => {
                const $n: usize = 8;
                $body
            }
            other => Err(CliError::usage(format!("--cores {other}: 1 to 8 cores"))),
        }
    };
}

/// Runs the demo (or, with `--child`, its engine).
pub(crate) fn run(demo: &Demo, out: &mut Out) -> Result<Finding, CliError> {
    if !(0.1..=3600.0).contains(&demo.seconds) || !(0.1..=3600.0).contains(&demo.checkpoint_every) {
        return Err(CliError::usage(
            "--seconds and --checkpoint-every: 0.1 to 3600",
        ));
    }
    if demo.child.is_some() {
        return Err(CliError::usage("--child needs --dir"));
    }
    let temp;
    let dir = match &demo.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("lamina-demo-")
                .tempdir()
                .map_err(|e| {
                    CliError::new(Exit::Unreadable, format!("a temporary directory: {e}"))
                })?;
            temp.path().to_path_buf()
        }
    };
    with_cores!(demo.cores, N => parent::<N>(demo, &dir, out))
}

/// Runs the engine the demo kills (`demo --child G --dir D`), until it is killed.
pub(crate) fn run_child(
    dir: &Path,
    cores: usize,
    generation: u64,
    checkpoint_every: f64,
) -> Result<(), CliError> {
    if !(0.1..=3600.0).contains(&checkpoint_every) {
        return Err(CliError::usage("--checkpoint-every: 0.1 to 3600"));
    }
    let every = Duration::from_secs_f64(checkpoint_every);
    with_cores!(cores, N => engine::run::<N>(dir, generation, every)
        .map_err(|e| CliError::new(Exit::Unreadable, e)))
}

/// What the child said.
#[derive(Default)]
struct Said {
    started: bool,
    acked: Vec<u64>,
    /// (id, parts, bytes, keys, microseconds)
    checkpoints: Vec<(u64, u64, u64, u64, u64)>,
    aborted: Vec<String>,
    /// Per core: (samples, p50, p99, p999) in microseconds.
    latency: Vec<Option<(u64, u64, u64, u64)>>,
}

impl Said {
    fn hear(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
        match words.first() {
            Some(&"started") => self.started = true,
            Some(&"ack") => {
                if let (Some(core), Some(seq)) = (num(1), num(2))
                    && let Some(slot) = self.acked.get_mut(core as usize)
                {
                    *slot = seq;
                }
            }
            Some(&"checkpoint") => {
                if let (Some(a), Some(b), Some(c), Some(d), Some(e)) =
                    (num(1), num(2), num(3), num(4), num(5))
                {
                    self.checkpoints.push((a, b, c, d, e));
                }
            }
            Some(&"aborted") => self.aborted.push(line.to_owned()),
            Some(&"latency") => {
                if let (Some(core), Some(n), Some(a), Some(b), Some(c)) =
                    (num(1), num(2), num(3), num(4), num(5))
                    && let Some(slot) = self.latency.get_mut(core as usize)
                {
                    *slot = Some((n, a, b, c));
                }
            }
            _ => {}
        }
    }
}

fn parent<const N: usize>(demo: &Demo, dir: &Path, out: &mut Out) -> Result<Finding, CliError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        CliError::new(
            Exit::Unreadable,
            format!("{what} in {}: {e}", dir.display()),
        )
    };
    out.human(format!(
        "lamina demo: {N} cores, {} s, a checkpoint every {} s, in {}{}",
        demo.seconds,
        demo.checkpoint_every,
        dir.display(),
        if demo.dir.is_none() {
            " (a temporary directory, removed at the end)"
        } else {
            ""
        }
    ));
    // What the directory holds before: the child starts from it.
    let before: Vec<BTreeMap<Vec<u8>, Vec<u8>>> = {
        let store = engine::Store::<N>::open_dir(dir, options(), config())
            .map_err(|e| fail("opening the store", &e))?;
        let states = split::<N>(&store);
        store.close().map_err(|e| fail("closing the store", &e))?;
        states
    };
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let exe = std::env::current_exe().map_err(|e| fail("finding this program", &e))?;
    let mut child = Command::new(exe)
        .arg("demo")
        .arg("--child")
        .arg(generation.to_string())
        .arg("--dir")
        .arg(dir)
        .arg("--cores")
        .arg(N.to_string())
        .arg("--checkpoint-every")
        .arg(demo.checkpoint_every.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail("starting the engine", &e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("the engine's output", &"missing"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let bar = progress(demo.seconds, out);
    let mut said = Said {
        acked: vec![0; N],
        latency: vec![None; N],
        ..Said::default()
    };
    let began = Instant::now();
    let mut started_at = None;
    let run_for = Duration::from_secs_f64(demo.seconds);
    loop {
        while let Ok(line) = rx.try_recv() {
            said.hear(&line);
            if said.started && started_at.is_none() {
                started_at = Some(Instant::now());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            bar.finish_and_clear();
            return Err(CliError::new(
                Exit::Unreadable,
                format!(
                    "the engine stopped on its own ({status}) in {}",
                    dir.display()
                ),
            ));
        }
        let ran = started_at.map_or(Duration::ZERO, |s| s.elapsed());
        bar.set_position(ran.as_millis() as u64);
        bar.set_message(format!(
            "{} ops acknowledged, {} checkpoints",
            said.acked.iter().sum::<u64>(),
            said.checkpoints.len()
        ));
        if ran >= run_for || began.elapsed() > run_for + Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The crash: SIGKILL, no chance to flush or close anything.
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    while let Ok(line) = rx.try_recv() {
        said.hear(&line);
    }
    bar.finish_and_clear();
    let ran = started_at
        .map_or(Duration::ZERO, |s| s.elapsed())
        .min(run_for);
    let acked: u64 = said.acked.iter().sum();
    out.human(format!(
        "engine killed with SIGKILL after {:.1} s: {acked} ops acknowledged ({:.0} ops/s), {} checkpoints committed{}",
        ran.as_secs_f64(),
        acked as f64 / ran.as_secs_f64().max(1e-9),
        said.checkpoints.len(),
        if said.aborted.is_empty() { String::new() } else { format!(", {} aborted", said.aborted.len()) }
    ));
    for (core, l) in said.latency.iter().enumerate() {
        if let Some((n, p50, p99, p999)) = l {
            out.human(format!(
                "  core {core}: commit latency p50 {p50} µs, p99 {p99} µs, p99.9 {p999} µs ({n} samples)"
            ));
        }
    }
    if let Some(&(id, parts, b, keys, us)) = said.checkpoints.last() {
        let sizes: Vec<String> = said.checkpoints.iter().map(|c| bytes(c.2)).collect();
        out.human(format!(
            "  checkpoints wrote {} ({} shown); the last, {id}: {parts} parts, {}, {keys} keys, {:.1} ms",
            sizes.join(", "),
            sizes.len(),
            bytes(b),
            us as f64 / 1000.0
        ));
    }

    let started = Instant::now();
    let store = engine::Store::<N>::open_dir(dir, options(), config())
        .map_err(|e| fail("recovering the store", &e))?;
    let took = started.elapsed();
    let report = store.recovery();
    out.human(format!(
        "recovered in {:.1} ms: {}, {} parts ({}), WAL replayed {} records{}",
        took.as_secs_f64() * 1000.0,
        report
            .checkpoint
            .map_or("no checkpoint".into(), |c| format!(
                "checkpoint {} (epoch {})",
                c.id, c.epoch
            )),
        report.parts_loaded,
        bytes(report.part_bytes),
        report.cores.iter().map(|c| c.records).sum::<u64>(),
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!(
                ", {} damaged newer manifests passed over",
                report.skipped.len()
            )
        }
    ));
    let recovered = split::<N>(&store);
    let mut lost = Vec::new();
    for core in 0..N {
        let acked = said.acked[core];
        match engine::recovered_prefix::<N>(core, generation, &before[core], &recovered[core], acked, SEARCH_LIMIT) {
            Ok(k) => out.human(format!(
                "  core {core}: acknowledged ops 1..={acked}; recovered ops 1..={k} ({} durable but not yet acknowledged at the kill): match",
                k - acked
            )),
            Err(differ) => {
                out.human(format!(
                    "  core {core}: acknowledged ops 1..={acked}; the recovered state is no prefix of the ops from there ({differ} keys differ)"
                ));
                lost.push(core);
            }
        }
    }
    out.json(&serde_json::json!({
        "cores": N,
        "seconds": ran.as_secs_f64(),
        "acknowledged": acked,
        "ops_per_second": acked as f64 / ran.as_secs_f64().max(1e-9),
        "checkpoints": said.checkpoints.len(),
        "checkpoint_bytes": said.checkpoints.iter().map(|c| c.2).collect::<Vec<_>>(),
        "latency_us": said.latency.iter().map(|l| l.map(|(n, a, b, c)| serde_json::json!({"samples": n, "p50": a, "p99": b, "p999": c}))).collect::<Vec<_>>(),
        "recovery_ms": took.as_secs_f64() * 1000.0,
        "recovered_checkpoint": report.checkpoint.map(|c| c.id),
        "match": lost.is_empty(),
    }));
    store.close().map_err(|e| fail("closing the store", &e))?;
    if lost.is_empty() {
        out.human("every acknowledged write was recovered, and nothing that was not written");
        Ok(Finding::ok())
    } else {
        Ok(Finding::new(
            Exit::Corrupt,
            format!(
                "acknowledged writes of cores {lost:?} were not recovered in {}",
                dir.display()
            ),
        ))
    }
}

/// The store's keys and values, per core.
fn split<const N: usize>(
    store: &WalStateStore<lamina::file_backend::FileStorage, N>,
) -> Vec<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut states = vec![BTreeMap::new(); N];
    for (k, v) in store.range(..) {
        if let Some(state) =
            states.get_mut(WalStateStore::<lamina::file_backend::FileStorage, N>::core_of(k))
        {
            state.insert(k.to_vec(), v.to_vec());
        }
    }
    states
}

/// A bar over the run's milliseconds on stderr, when it is a terminal and not --quiet/--json.
fn progress(seconds: f64, out: &Out) -> ProgressBar {
    let style = out.style();
    if style.quiet || style.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(
        Some((seconds * 1000.0) as u64),
        ProgressDrawTarget::stderr(),
    );
    if let Ok(s) = ProgressStyle::with_template("{bar:40} {elapsed} {msg}") {
        bar.set_style(s);
    }
    bar
}
