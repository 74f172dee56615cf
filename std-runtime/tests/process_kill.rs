//! A real process crash: a child process (this test binary again, `LAMINA_CRASH_CHILD=1`)
//! appends and syncs on the file backend, printing each LSN once `sync` has made it durable; the
//! parent SIGKILLs it at a random moment, reopens the log and checks that every LSN the child
//! printed is there with its exact bytes, in order, and that nothing comes back that no child
//! appended. The rounds share one directory, so each child continues the log the previous ones
//! left behind (and is killed during recovery now and then, when the kill comes early).
//!
//! `LAMINA_KILL_ROUNDS` sets the number of rounds (default 20), `LAMINA_KILL_SEED` the base seed
//! (default: from the clock); the seeds are printed on stderr.
#![cfg(unix)]

use lamina::{Lsn, Options, SyncPolicy, WriteAheadLog};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// This test's name: the child re-runs the binary with `--exact` on it.
const TEST_NAME: &str = "sigkill_at_random_moments_loses_no_durable_record";
/// Starts each line the child says, after whatever the test harness printed on it.
const MARK: &str = "lamina-crash-child: ";
const DEFAULT_ROUNDS: u32 = 20;
/// Payloads are 0 to this many bytes long.
const MAX_LEN: u64 = 2000;
/// A child that is never killed stops by itself after this long.
const CHILD_CAP: Duration = Duration::from_secs(30);
/// The kill comes this many milliseconds after the spawn, at random.
const DELAY_MS: std::ops::RangeInclusive<u64> = 5..=150;
/// The parent gives up on a child's output after this long (a child stuck in the kernel).
const WAIT_CAP: Duration = Duration::from_secs(20);

fn options() -> Options {
    let mut options = Options::default();
    // Small segments, so kills land in roll-overs too; batches cut by the appends themselves, so
    // records are written (and survive the kill) before the `sync` that acknowledges them.
    options.config.segment_size = 64 * 1024;
    options.config.max_payload = 4096;
    options.config.policy = SyncPolicy::Batch {
        max_records: 16,
        max_bytes: 12 * 1024,
        max_delay: 0,
    };
    options.buffer_size = 256 * 1024;
    options
}

/// splitmix64: the test's only source of randomness, so a seed replays a round's choices.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The `index`th payload the child of `seed` appends: 0 to 2000 bytes, all a function of the
/// two, so the parent rebuilds it. (Not of the LSN: `append` tells the LSN only afterwards, and a
/// segment roll's seal may take the one `next_lsn` names.)
fn payload(seed: u64, index: u64) -> Vec<u8> {
    let mut rng = Rng(mix(seed ^ mix(index)));
    let len = rng.below(MAX_LEN + 1) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: {e}")),
    )
}

#[test]
fn sigkill_at_random_moments_loses_no_durable_record() {
    if std::env::var_os("LAMINA_CRASH_CHILD").is_some_and(|v| v == "1") {
        child();
    } else {
        parent();
    }
}

/// One line on stdout in one `write` (a pipe write this short is atomic, so a kill cannot cut
/// it), flushed at once. A closed pipe means the parent is gone: stop.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(format!("{MARK}{line}\n").as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// The child: continues the log in `LAMINA_CRASH_DIR`, prints `start <next LSN>` once it is
/// open, then appends batches of `LAMINA_CRASH_SEED`'s payloads, syncs, and prints
/// `durable <lsn> <index>` for each record of the batch. Runs until killed, or for 30 s at most.
fn child() {
    let dir = std::env::var_os("LAMINA_CRASH_DIR").expect("LAMINA_CRASH_DIR");
    let seed = env_u64("LAMINA_CRASH_SEED").expect("LAMINA_CRASH_SEED");
    let began = Instant::now();
    let (mut log, _) = WriteAheadLog::open(&dir, options()).expect("child: open");
    say(&format!("start {}", log.next_lsn()));
    let mut rng = Rng(mix(seed));
    let mut batch = Vec::new();
    let mut index = 0;
    while began.elapsed() < CHILD_CAP {
        batch.clear();
        for _ in 0..1 + rng.below(40) {
            let lsn = log.append(&payload(seed, index)).expect("child: append");
            batch.push((lsn, index));
            index += 1;
        }
        let durable = log.sync().expect("child: sync");
        for (lsn, index) in &batch {
            assert!(*lsn <= durable, "sync returned {durable}, short of {lsn}");
            say(&format!("durable {lsn} {index}"));
        }
    }
}

/// What one child said.
#[derive(Default)]
struct Said {
    start: Option<Lsn>,
    /// Each record acknowledged: its LSN and its index among the child's appends.
    durable: Vec<(Lsn, u64)>,
}

fn parse(out: &[u8]) -> Said {
    let mut said = Said::default();
    for line in out.split_inclusive(|b| *b == b'\n') {
        // A line without its newline was cut by the kill: it says nothing.
        let Some(line) = line.strip_suffix(b"\n") else {
            continue;
        };
        let line = String::from_utf8_lossy(line);
        // The test harness prints its own lines around the child's, and "test <name> ... " just
        // before them, on the same line.
        let Some(at) = line.find(MARK) else {
            continue;
        };
        let line = &line[at + MARK.len()..];
        if let Some(n) = line.strip_prefix("start ") {
            said.start = Some(Lsn(n.parse().expect("start line")));
        } else if let Some(rest) = line.strip_prefix("durable ") {
            let (lsn, index) = rest.split_once(' ').expect("durable line");
            said.durable.push((
                Lsn(lsn.parse().expect("durable LSN")),
                index.parse().expect("durable index"),
            ));
        }
    }
    said
}

/// A child's run: from its first LSN on (up to the next child's), the log holds its payloads, in
/// the order it appended them.
struct Generation {
    start: Lsn,
    seed: u64,
    /// What it acknowledged.
    durable: Vec<(Lsn, u64)>,
}

fn parent() {
    let rounds = env_u64("LAMINA_KILL_ROUNDS").map_or(DEFAULT_ROUNDS, |n| n as u32);
    let base = env_u64("LAMINA_KILL_SEED").unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        mix(nanos as u64 ^ u64::from(std::process::id()))
    });
    eprintln!("process_kill: {rounds} rounds, base seed {base} (LAMINA_KILL_SEED={base} replays)");
    let exe = std::env::current_exe().expect("current_exe");
    let dir = tempfile::tempdir().expect("tempdir");
    let began = Instant::now();

    let mut generations: Vec<Generation> = Vec::new();
    let mut acknowledged = 0;
    // Where the next child must start: what the parent's own open left.
    let mut next_start: Option<Lsn> = None;
    let mut rounds_with_records = 0;
    for round in 0..rounds {
        let seed = mix(base.wrapping_add(u64::from(round)));
        let delay = DELAY_MS.start() + Rng(seed).below(DELAY_MS.end() - DELAY_MS.start() + 1);
        eprintln!("round {round} seed {seed} kill after {delay} ms");

        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env("LAMINA_CRASH_CHILD", "1")
            .env("LAMINA_CRASH_DIR", dir.path())
            .env("LAMINA_CRASH_SEED", seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let spawned = Instant::now();
        let mut stdout = child.stdout.take().expect("child stdout");
        let mut stderr = child.stderr.take().expect("child stderr");
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let err_reader = std::thread::spawn(move || {
            let mut err = Vec::new();
            let _ = stderr.read_to_end(&mut err);
            String::from_utf8_lossy(&err).into_owned()
        });
        std::thread::sleep(Duration::from_millis(delay).saturating_sub(spawned.elapsed()));
        let _ = child.kill(); // SIGKILL; fails only if the child already ended
        let status = child.wait().expect("wait for the child");
        let lived = spawned.elapsed();
        let out = join_within(reader, WAIT_CAP, "the child's stdout");
        let err = join_within(err_reader, WAIT_CAP, "the child's stderr");
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round} seed {seed}: the child ended on its own ({status}); its stderr:\n{err}"
        );

        let said = parse(&out);
        if let Some(start) = said.start {
            if let Some(expected) = next_start {
                assert_eq!(
                    start, expected,
                    "round {round} seed {seed}: the child continued the log at another LSN than \
                     the parent's open left it at"
                );
            }
            if let Some(last) = generations.last() {
                assert!(start > last.start, "round {round}: LSNs went backwards");
            }
            generations.push(Generation {
                start,
                seed,
                durable: said.durable.clone(),
            });
        } else {
            assert!(
                said.durable.is_empty(),
                "durable lines before the start line"
            );
        }
        if !said.durable.is_empty() {
            rounds_with_records += 1;
        }
        acknowledged += said.durable.len();

        let (next, recovered) = check(dir.path(), &generations, round, seed);
        next_start = Some(next);
        eprintln!(
            "round {round}: child killed after {} ms, {} records acknowledged, {recovered} in \
             the log",
            lived.as_millis(),
            said.durable.len()
        );
    }
    assert!(
        rounds_with_records > 0,
        "no child lived long enough to make a record durable: the test proved nothing"
    );
    eprintln!(
        "process_kill: {rounds} rounds ({rounds_with_records} with acknowledged records), {} \
         records acknowledged, {} ms",
        acknowledged,
        began.elapsed().as_millis()
    );
}

fn join_within<T: Send + 'static>(
    handle: std::thread::JoinHandle<T>,
    cap: Duration,
    what: &str,
) -> T {
    // A hang guard, not a speed check: the pipe of a killed child closes at once, and `cap` is
    // generous; without it a stuck reader would hang the test run.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(handle.join());
    });
    match finished.recv_timeout(cap) {
        Ok(result) => result.expect("reader thread"),
        Err(_) => panic!("{what} never closed"),
    }
}

/// Reopens the log (Strict) and checks it against what the children said; closes it (even
/// rounds) or drops it (odd rounds). Returns the LSN the next open will continue at and how many
/// records the log holds.
fn check(dir: &Path, generations: &[Generation], round: u32, seed: u64) -> (Lsn, usize) {
    let at = format!("round {round} seed {seed}");
    let (mut log, _report) = WriteAheadLog::open(dir, options())
        .unwrap_or_else(|e| panic!("{at}: reopening after the kill: {e}"));
    let mut records: Vec<(Lsn, Vec<u8>)> = Vec::new();
    log.read_from(Lsn::FIRST, |lsn, p| records.push((lsn, p.to_vec())))
        .unwrap_or_else(|e| panic!("{at}: reading the log back: {e}"));

    for pair in records.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "{at}: LSN {} after {}",
            pair[1].0,
            pair[0].0
        );
    }
    // Nothing before the first child's first LSN.
    if let Some((first, _)) = records.first() {
        assert!(
            generations.first().is_some_and(|g| g.start <= *first),
            "{at}: LSN {first} came back, but no child ever appended it"
        );
    }
    for (i, g) in generations.iter().enumerate() {
        let end = generations
            .get(i + 1)
            .map_or(Lsn(u64::MAX), |next| next.start);
        let mine: Vec<&(Lsn, Vec<u8>)> = records
            .iter()
            .filter(|r| g.start <= r.0 && r.0 < end)
            .collect();
        // The child's appends, from its first on, none skipped, none that it never appended.
        for (index, (lsn, bytes)) in mine.iter().enumerate() {
            assert!(
                *bytes == payload(g.seed, index as u64),
                "{at}: LSN {lsn} came back with {} bytes that are not the child's (seed {}) \
                 append number {index}",
                bytes.len(),
                g.seed
            );
        }
        // Every record it acknowledged, at the LSN `append` gave it.
        for (lsn, index) in &g.durable {
            let got = mine.get(*index as usize).map(|r| r.0);
            assert_eq!(
                got,
                Some(*lsn),
                "{at}: the child of seed {} acknowledged its append number {index} as durable at \
                 LSN {lsn}; {} of its records came back",
                g.seed,
                mine.len()
            );
        }
    }

    let next = if round.is_multiple_of(2) {
        let seal = log.close().unwrap_or_else(|e| panic!("{at}: closing: {e}"));
        seal.next()
    } else {
        let next = log.next_lsn();
        drop(log);
        next
    };
    (next, records.len())
}
