//! A real process crash during checkpoints and garbage collection: a child process (this test
//! binary again, `LAMINA_STORE_CHILD=1`) runs a `WalStateStore` on the file backend, applying
//! batches of puts and deletes and printing each batch once `apply` acknowledged it, and taking a
//! checkpoint (which collects garbage and truncates the WALs) every few batches; the parent
//! SIGKILLs it at a random moment (in a batch, a checkpoint, a collection or the recovery itself),
//! reopens the store and checks that every acknowledged write is there, and that anything else
//! found was written by the killed child after its last acknowledgement.
//!
//! `LAMINA_KILL_ROUNDS` sets the rounds (default 20), `LAMINA_KILL_SEED` the base seed.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lamina::{Op, Options, StateStoreConfig, WalStateStore};

type Store = WalStateStore<lamina::file_backend::FileStorage, 2>;

const TEST_NAME: &str = "sigkill_during_checkpoints_and_gc_loses_no_acknowledged_write";
const MARK: &str = "lamina-store-child: ";
const KEYS: u64 = 400;

fn options() -> Options {
    let mut options = Options::default();
    options.config.segment_size = 256 * 1024;
    options.config.max_payload = 128 * 1024;
    options
}

fn config() -> StateStoreConfig {
    let mut config = StateStoreConfig::default();
    config.incremental.buckets = 8;
    config.incremental.retain = 2;
    config
}

fn key(k: u64) -> Vec<u8> {
    format!("key-{k:04}").into_bytes()
}

/// A value says who wrote it: round and sequence number, padded to some length.
fn value(round: u64, seq: u64) -> Vec<u8> {
    let mut v = format!("r{round}-s{seq}-").into_bytes();
    v.resize(16 + (seq % 200) as usize, b'x');
    v
}

fn parse_value(v: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(v).ok()?;
    let rest = text.strip_prefix('r')?;
    let (round, rest) = rest.split_once("-s")?;
    let (seq, _) = rest.split_once('-')?;
    Some((round.parse().ok()?, seq.parse().ok()?))
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

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

/// The child: writes until killed (or 30 s). Each op of a batch is `seq`-numbered; `ack <seq>`
/// says every op up to `seq` is acknowledged.
fn child() {
    let dir = std::env::var_os("LAMINA_STORE_DIR").expect("dir");
    let round: u64 = std::env::var("LAMINA_STORE_ROUND")
        .expect("round")
        .parse()
        .expect("round");
    let mut store = Store::open_dir(&dir, options(), config()).expect("child: open");
    say("open");
    let mut seq = 0u64;
    let mut rng = mix(round);
    let began = Instant::now();
    let mut batches = 0u64;
    while began.elapsed() < Duration::from_secs(30) {
        let n = 1 + mix(rng) % 24;
        rng = mix(rng);
        let ops: Vec<Op> = (0..n)
            .map(|_| {
                seq += 1;
                rng = mix(rng);
                let k = key(rng % KEYS);
                if rng.is_multiple_of(7) {
                    Op::Delete(k)
                } else {
                    Op::Put(k, value(round, seq))
                }
            })
            .collect();
        // The ops' order and content are the parent's to recompute: it replays the same rng.
        store.apply(ops).expect("child: apply");
        say(&format!("ack {seq}"));
        batches += 1;
        if batches.is_multiple_of(8) {
            let c = store.checkpoint().expect("child: checkpoint");
            say(&format!("checkpoint {}", c.checkpoint.id));
        }
    }
}

/// The ops the child of `round` applies, in order, as (seq, key, value or delete), up to `upto`.
fn replay(round: u64, upto: u64) -> Vec<(u64, Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut seq = 0u64;
    let mut rng = mix(round);
    while seq < upto {
        let n = 1 + mix(rng) % 24;
        rng = mix(rng);
        for _ in 0..n {
            seq += 1;
            rng = mix(rng);
            let k = key(rng % KEYS);
            let op = if rng.is_multiple_of(7) {
                None
            } else {
                Some(value(round, seq))
            };
            out.push((seq, k, op));
        }
    }
    out
}

#[test]
fn sigkill_during_checkpoints_and_gc_loses_no_acknowledged_write() {
    if std::env::var_os("LAMINA_STORE_CHILD").is_some_and(|v| v == "1") {
        child();
        return;
    }
    let rounds: u64 = std::env::var("LAMINA_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let base: u64 = std::env::var("LAMINA_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| mix(u64::from(std::process::id())));
    eprintln!("state_store_kill: {rounds} rounds, LAMINA_KILL_SEED={base}");
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("exe");
    // The model: every key's acknowledged value (None: deleted or never written).
    let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let (mut acked_total, mut checkpoints_total) = (0u64, 0u64);
    for round in 0..rounds {
        let delay = 30 + mix(base ^ round) % 400;
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env("LAMINA_STORE_CHILD", "1")
            .env("LAMINA_STORE_DIR", dir.path())
            .env("LAMINA_STORE_ROUND", round.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let out = String::from_utf8_lossy(&reader.join().expect("reader")).into_owned();
        let mut acked = 0u64;
        for line in out.lines() {
            let Some(at) = line.find(MARK) else { continue };
            let line = &line[at + MARK.len()..];
            if let Some(seq) = line.strip_prefix("ack ") {
                acked = seq.parse().expect("ack line");
            } else if line.starts_with("checkpoint ") {
                checkpoints_total += 1;
            }
        }
        acked_total += acked;
        // What the child applied: acknowledged up to `acked`, maybe more after it (in flight).
        let ops = replay(round, acked + 24);
        let in_flight: BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>> = ops
            .iter()
            .filter(|(seq, _, _)| *seq > acked)
            .fold(BTreeMap::new(), |mut m, (_, k, v)| {
                m.entry(k.clone()).or_default().push(v.clone());
                m
            });
        for (seq, k, v) in &ops {
            if *seq <= acked {
                model.insert(k.clone(), v.clone());
            }
        }
        let at = format!("round {round} (seed {base}, killed after {delay} ms, acked {acked})");
        let store = Store::open_dir(dir.path(), options(), config())
            .unwrap_or_else(|e| panic!("{at}: reopening: {e}"));
        for k in (0..KEYS).map(key) {
            let found = store.get(&k).map(<[u8]>::to_vec);
            let expected = model.get(&k).cloned().flatten();
            if found == expected {
                continue;
            }
            // Otherwise it must be a write of this round's child after its last ack.
            let later = in_flight.get(&k).is_some_and(|vs| vs.contains(&found));
            assert!(
                later,
                "{at}: key {:?} holds {:?}, acknowledged {:?}",
                String::from_utf8_lossy(&k),
                found.as_deref().map(String::from_utf8_lossy),
                expected.as_deref().map(String::from_utf8_lossy)
            );
            assert!(found.as_deref().is_none_or(|v| parse_value(v).is_some()));
            // The unacknowledged write survived: it is the state from now on.
            model.insert(k, found);
        }
        drop(store.into_writers());
    }
    eprintln!(
        "state_store_kill: {rounds} rounds, {acked_total} ops acknowledged, {checkpoints_total} checkpoints"
    );
    assert!(
        acked_total > 0,
        "no child acknowledged anything: the test proved nothing"
    );
    assert!(
        checkpoints_total > 0,
        "no child took a checkpoint: the test proved nothing"
    );
}
