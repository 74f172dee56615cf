//! A real process crash on each backend: a child process (this test binary again, running only
//! this backend's scenario with `LAMINA_CRASH_CHILD=1`) appends and syncs, printing each LSN once
//! `sync` has made it durable; the parent SIGKILLs it at a random moment, reopens the log and
//! checks that every LSN the child printed is there with its exact bytes, and nothing that no
//! child appended. The rounds share one directory, so each child continues what the previous
//! ones left. `LAMINA_CONFORMANCE_KILL_ROUNDS` sets the rounds per backend (default 3),
//! `LAMINA_KILL_SEED` the base seed (printed on stderr).

use crate::common::*;
use lamina::{DirLog, Lsn, Options, SyncPolicy};
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MARK: &str = "lamina-crash-child: ";
const DEFAULT_ROUNDS: u64 = 3;
/// A child that is never killed stops by itself after this long.
const CHILD_CAP: Duration = Duration::from_secs(30);
/// The kill comes this many milliseconds after the spawn, at random.
const DELAY_MS: (u64, u64) = (20, 200);
/// Rounds added at most when no child acknowledged anything.
const EXTRA_ROUNDS: u64 = 5;

fn kill_options() -> Options {
    let mut options = options();
    options.config.segment_size = 64 * 1024;
    options.config.policy = SyncPolicy::Batch {
        max_records: 16,
        max_bytes: 12 * 1024,
        max_delay: 0,
    };
    options
}

/// splitmix64: a seed replays a round's choices.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `index`th payload of the child of `seed`: 0 to 1500 bytes, rebuilt by the parent.
fn child_payload(seed: u64, index: u64) -> Vec<u8> {
    let r = mix(seed ^ mix(index));
    let len = (r % 1501) as usize;
    (0..len)
        .map(|i| (mix(r.wrapping_add(i as u64 / 8)) >> (i % 8 * 8)) as u8)
        .collect()
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: {e}")),
    )
}

pub(crate) fn sigkill_of_a_child_process_loses_no_durable_record(under: &Under, test: &str) {
    if std::env::var_os("LAMINA_CRASH_CHILD").is_some_and(|v| v == "1") {
        child(under);
    } else {
        // The harness names the test without the crate's name.
        let name = test.split_once("::").map_or(test, |(_, rest)| rest);
        parent(under, name);
    }
}

/// One line on stdout in one `write` (atomic on a pipe), flushed at once.
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

fn child(under: &Under) {
    let dir = std::env::var_os("LAMINA_CRASH_DIR").expect("LAMINA_CRASH_DIR");
    let seed = env_u64("LAMINA_CRASH_SEED").expect("LAMINA_CRASH_SEED");
    let began = Instant::now();
    let (mut log, _) = under.open(Path::new(&dir), kill_options());
    say(&format!("start {}", log.next_lsn()));
    let mut index = 0;
    let mut batch = Vec::new();
    while began.elapsed() < CHILD_CAP {
        batch.clear();
        for _ in 0..1 + mix(seed ^ index) % 40 {
            batch.push((
                log.append(&child_payload(seed, index)).expect("append"),
                index,
            ));
            index += 1;
        }
        let durable = log.sync().expect("sync");
        for (lsn, index) in &batch {
            assert!(*lsn <= durable);
            say(&format!("durable {lsn} {index}"));
        }
    }
}

/// What one child said: where it started, and each record it acknowledged (LSN, index).
struct Generation {
    start: Lsn,
    seed: u64,
    durable: Vec<(Lsn, u64)>,
}

fn parse(out: &[u8], seed: u64) -> Option<Generation> {
    let mut generation: Option<Generation> = None;
    for line in out.split_inclusive(|b| *b == b'\n') {
        // A line without its newline was cut by the kill: it says nothing.
        let Some(line) = line.strip_suffix(b"\n") else {
            continue;
        };
        let line = String::from_utf8_lossy(line);
        let Some(at) = line.find(MARK) else {
            continue;
        };
        let line = &line[at + MARK.len()..];
        if let Some(n) = line.strip_prefix("start ") {
            generation = Some(Generation {
                start: Lsn(n.parse().expect("start line")),
                seed,
                durable: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("durable ") {
            let (lsn, index) = rest.split_once(' ').expect("durable line");
            let g = generation
                .as_mut()
                .expect("durable lines after the start line");
            g.durable.push((
                Lsn(lsn.parse().expect("LSN")),
                index.parse().expect("index"),
            ));
        }
    }
    generation
}

fn parent(under: &Under, test: &str) {
    let rounds = env_u64("LAMINA_CONFORMANCE_KILL_ROUNDS").unwrap_or(DEFAULT_ROUNDS);
    let base = env_u64("LAMINA_KILL_SEED").unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        mix(nanos as u64 ^ u64::from(std::process::id()))
    });
    eprintln!(
        "{}: {rounds} kill rounds, LAMINA_KILL_SEED={base} replays",
        under.name
    );
    let exe = std::env::current_exe().expect("current_exe");
    let dir = tempdir();
    let mut generations: Vec<Generation> = Vec::new();
    let mut acknowledged = 0;
    let mut round = 0;
    // Extra rounds, each letting the child live longer, until one acknowledged something: a run
    // where every child died before its first sync would prove nothing.
    while round < rounds || (acknowledged == 0 && round < rounds + EXTRA_ROUNDS) {
        let seed = mix(base.wrapping_add(round));
        let longer = round.saturating_sub(rounds) * 200;
        let delay = DELAY_MS.0 + longer + seed % (DELAY_MS.1 - DELAY_MS.0 + 1);
        let mut child = Command::new(&exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("LAMINA_CRASH_CHILD", "1")
            .env("LAMINA_CRASH_DIR", dir.path())
            .env("LAMINA_CRASH_SEED", seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let spawned = Instant::now();
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let err_reader = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            err
        });
        std::thread::sleep(Duration::from_millis(delay).saturating_sub(spawned.elapsed()));
        let _ = child.kill(); // SIGKILL; fails only if the child already ended
        let status = child.wait().expect("wait for the child");
        let out = reader.join().expect("stdout reader");
        let err = err_reader.join().expect("stderr reader");
        assert_eq!(
            status.signal(),
            Some(9),
            "{} round {round} seed {seed}: the child ended on its own ({status}):\n{err}",
            under.name
        );
        if let Some(g) = parse(&out, seed) {
            if let Some(last) = generations.last() {
                assert!(g.start > last.start, "LSNs went backwards");
            }
            acknowledged += g.durable.len();
            generations.push(g);
        }
        check(
            under,
            dir.path(),
            &generations,
            &format!("{} round {round} seed {seed}", under.name),
        );
        round += 1;
    }
    assert!(
        acknowledged > 0,
        "{}: no child lived long enough to make a record durable",
        under.name
    );
    eprintln!(
        "{}: {rounds} rounds, {acknowledged} records acknowledged",
        under.name
    );
}

/// Reopens the log and checks it against what the children said, then drops it (a crash too).
fn check(under: &Under, dir: &Path, generations: &[Generation], at: &str) {
    let (mut log, _): (DirLog, _) = under.open(dir, kill_options());
    let records = read_all(&mut log);
    if let (Some((first, _)), Some(g)) = (records.first(), generations.first()) {
        assert!(
            g.start <= *first,
            "{at}: LSN {first} came back, no child appended it"
        );
    }
    for (i, g) in generations.iter().enumerate() {
        let end = generations
            .get(i + 1)
            .map_or(Lsn(u64::MAX), |next| next.start);
        let mine: Vec<_> = records
            .iter()
            .filter(|r| g.start <= r.0 && r.0 < end)
            .collect();
        for (index, (lsn, bytes)) in mine.iter().enumerate() {
            assert!(
                *bytes == child_payload(g.seed, index as u64),
                "{at}: LSN {lsn} is not the child's append number {index}"
            );
        }
        for (lsn, index) in &g.durable {
            assert_eq!(
                mine.get(*index as usize).map(|r| r.0),
                Some(*lsn),
                "{at}: append number {index} was acknowledged at {lsn} and is not there"
            );
        }
    }
}
