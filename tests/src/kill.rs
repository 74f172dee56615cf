//! The machinery of the SIGKILL tests: a child process (the test binary again, running one test
//! with `LAMINA_CRASH_CHILD=1`) appends and syncs, printing each LSN once `sync` has made it
//! durable; the parent SIGKILLs it at a random moment, reopens the log and checks that every LSN
//! the child printed is there with its exact bytes, in order, and that nothing comes back that no
//! child appended. The rounds share one directory, so each child continues the log the previous
//! ones left behind (and is killed during recovery now and then, when the kill comes early).
//!
//! The log itself stays with the test (this crate does not depend on `lamina`): the child appends
//! and syncs through a closure, the parent reopens through another. `LAMINA_KILL_SEED` sets the
//! base seed (default: from the clock); the seeds are printed on stderr.

use crate::hang::within;
use lamina_core::Lsn;
use std::io::{Read, Write};
use std::ops::RangeInclusive;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Starts each line the child says, after whatever the test harness printed on it.
const MARK: &str = "lamina-crash-child: ";
/// Payloads are 0 to this many bytes long.
const MAX_LEN: u64 = 2000;
/// A child that is never killed stops by itself after this long.
const CHILD_CAP: Duration = Duration::from_secs(30);
/// The parent gives up on a child's output after this long (a child stuck in the kernel).
const WAIT_CAP: Duration = Duration::from_secs(20);
/// Rounds added at most when no child acknowledged anything.
const EXTRA_ROUNDS: u64 = 5;

/// A log's records as read back: each LSN with its payload.
pub type Records = Vec<(Lsn, Vec<u8>)>;

/// splitmix64: the tests' only source of randomness, so a seed replays a round's choices.
pub fn mix(mut z: u64) -> u64 {
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
pub fn payload(seed: u64, index: u64) -> Vec<u8> {
    let mut rng = Rng(mix(seed ^ mix(index)));
    let len = rng.below(MAX_LEN + 1) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The variable `name` as a number, if set; a value that is not one is the test's error.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: {e}")),
    )
}

/// Whether this process is a child the parent started (and so must run [`child`]).
pub fn is_child() -> bool {
    std::env::var_os("LAMINA_CRASH_CHILD").is_some_and(|v| v == "1")
}

/// The directory the parent gave the child.
pub fn child_dir() -> std::path::PathBuf {
    std::env::var_os("LAMINA_CRASH_DIR")
        .expect("LAMINA_CRASH_DIR")
        .into()
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

/// The child, once its log in [`child_dir`] is open at `next_lsn`: prints `start <next LSN>`,
/// then hands batches of `LAMINA_CRASH_SEED`'s payloads to `append_and_sync` (which appends
/// each and syncs, returning their LSNs and the durable LSN) and prints `durable <lsn> <index>`
/// for each record of the batch. Runs until killed, or for 30 s at most.
pub fn child(next_lsn: Lsn, mut append_and_sync: impl FnMut(&[Vec<u8>]) -> (Vec<Lsn>, Lsn)) {
    let seed = env_u64("LAMINA_CRASH_SEED").expect("LAMINA_CRASH_SEED");
    let began = Instant::now();
    say(&format!("start {next_lsn}"));
    let mut rng = Rng(mix(seed));
    let mut index = 0;
    while began.elapsed() < CHILD_CAP {
        let first = index;
        let batch: Vec<Vec<u8>> = (0..1 + rng.below(40))
            .map(|_| {
                index += 1;
                payload(seed, index - 1)
            })
            .collect();
        let (lsns, durable) = append_and_sync(&batch);
        assert_eq!(lsns.len(), batch.len(), "an LSN per append");
        for (lsn, index) in lsns.iter().zip(first..) {
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

/// How the parent runs.
#[derive(Debug)]
pub struct Parent<'a> {
    /// The test's name as the harness knows it: each child re-runs the binary with `--exact` on it.
    pub test: &'a str,
    /// What the failures and the lines on stderr say first (the backend, or the test).
    pub label: &'a str,
    /// Rounds of spawn, kill and check; more follow (at most 5, each child living longer) while
    /// no child has acknowledged anything, since such a run would prove nothing.
    pub rounds: u64,
    /// The kill comes this many milliseconds after the spawn, at random.
    pub delay_ms: RangeInclusive<u64>,
}

impl Parent<'_> {
    /// Runs the rounds on the log in `dir`. `reopen(round, at)` opens it (`at` names the round
    /// for failures), reads every record back, closes it (even rounds) or drops it (odd rounds),
    /// and returns the records and the LSN the next open will continue at.
    pub fn run(&self, dir: &Path, mut reopen: impl FnMut(u64, &str) -> (Records, Lsn)) {
        let label = self.label;
        let base = env_u64("LAMINA_KILL_SEED").unwrap_or_else(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            mix(nanos as u64 ^ u64::from(std::process::id()))
        });
        eprintln!(
            "{label}: {} rounds, base seed {base} (LAMINA_KILL_SEED={base} replays)",
            self.rounds
        );
        let exe = std::env::current_exe().expect("current_exe");
        let began = Instant::now();
        let (lowest, highest) = (*self.delay_ms.start(), *self.delay_ms.end());

        let mut generations: Vec<Generation> = Vec::new();
        let mut acknowledged = 0;
        // Where the next child must start: what the parent's own open left.
        let mut next_start: Option<Lsn> = None;
        let mut rounds_with_records = 0;
        let mut round = 0;
        while round < self.rounds
            || (rounds_with_records == 0 && round < self.rounds + EXTRA_ROUNDS)
        {
            let seed = mix(base.wrapping_add(round));
            let longer = round.saturating_sub(self.rounds) * 200;
            let delay = lowest + longer + Rng(seed).below(highest - lowest + 1);
            let at = format!("{label} round {round} seed {seed}");
            eprintln!("{at}: kill after {delay} ms");

            let (said, lived) = self.kill_one(&exe, dir, seed, delay, &at);
            if let Some(start) = said.start {
                if let Some(expected) = next_start {
                    assert_eq!(
                        start, expected,
                        "{at}: the child continued the log at another LSN than the parent's open \
                         left it at"
                    );
                }
                if let Some(last) = generations.last() {
                    assert!(start > last.start, "{at}: LSNs went backwards");
                }
                generations.push(Generation {
                    start,
                    seed,
                    durable: said.durable.clone(),
                });
            } else {
                assert!(
                    said.durable.is_empty(),
                    "{at}: durable lines before the start line"
                );
            }
            if !said.durable.is_empty() {
                rounds_with_records += 1;
            }
            acknowledged += said.durable.len();

            let (records, next) = reopen(round, &at);
            check(&records, &generations, &at);
            next_start = Some(next);
            eprintln!(
                "{at}: child killed after {} ms, {} records acknowledged, {} in the log",
                lived.as_millis(),
                said.durable.len(),
                records.len()
            );
            round += 1;
        }
        assert!(
            rounds_with_records > 0,
            "{label}: no child lived long enough to make a record durable: the test proved nothing"
        );
        eprintln!(
            "{label}: {round} rounds ({rounds_with_records} with acknowledged records), \
             {acknowledged} records acknowledged, {} ms",
            began.elapsed().as_millis()
        );
    }

    /// Spawns a child on `dir` with `seed`, SIGKILLs it `delay` ms later, and returns what it said
    /// and how long it lived.
    fn kill_one(
        &self,
        exe: &Path,
        dir: &Path,
        seed: u64,
        delay: u64,
        at: &str,
    ) -> (Said, Duration) {
        let mut child = Command::new(exe)
            .args(["--exact", self.test, "--nocapture", "--test-threads=1"])
            .env("LAMINA_CRASH_CHILD", "1")
            .env("LAMINA_CRASH_DIR", dir)
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
        // A hang guard, not a speed check: the pipes of a killed child close at once; without it
        // a stuck reader would hang the test run.
        let out = within(WAIT_CAP, move || reader.join())
            .expect("the child's stdout never closed")
            .expect("stdout reader");
        let err = within(WAIT_CAP, move || err_reader.join())
            .expect("the child's stderr never closed")
            .expect("stderr reader");
        assert_eq!(
            status.signal(),
            Some(9),
            "{at}: the child ended on its own ({status}); its stderr:\n{err}"
        );
        (parse(&out), lived)
    }
}

/// Checks the records read back against what the children said.
fn check(records: &[(Lsn, Vec<u8>)], generations: &[Generation], at: &str) {
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
}
