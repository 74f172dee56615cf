//! A durable key-value store through the whole path: `WalStateStore` with two cores, written by
//! a child process that checkpoints as it goes and is killed with SIGKILL mid-flight; the store
//! is then reopened (latest checkpoint + WAL replay) and checked against what the child had
//! acknowledged.
//!
//! `cargo run --release -p lamina --example state_store [-- DIR]`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lamina::{Op, Options, StateStoreConfig, WalStateStore};

type Store = WalStateStore<lamina::file_backend::FileStorage, 2>;

const KEYS: u64 = 10_000;

fn key(k: u64) -> Vec<u8> {
    format!("user:{k:05}").into_bytes()
}

fn value(n: u64) -> Vec<u8> {
    format!("balance={}", n * 7 % 10_000).into_bytes()
}

/// The writer: batches of puts (every 10th op a delete), each batch acknowledged on stdout once
/// durable, a checkpoint every 50 batches. Runs until killed.
fn child(dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = Store::open_dir(dir, Options::default(), StateStoreConfig::default())?;
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    for batch in 0u64.. {
        let ops: Vec<Op> = (0..100)
            .map(|_| {
                n += 1;
                let k = key(n * 7919 % KEYS);
                if n.is_multiple_of(10) {
                    Op::Delete(k)
                } else {
                    Op::Put(k, value(n))
                }
            })
            .collect();
        store.apply(ops)?;
        writeln!(out, "ack {n}")?;
        if batch % 50 == 49 {
            let c = store.checkpoint()?;
            writeln!(
                out,
                "checkpoint {} wrote {} parts, {} bytes",
                c.checkpoint.id, c.parts_written, c.bytes_written
            )?;
        }
        out.flush()?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, dir] = args.as_slice()
        && flag == "--child"
    {
        return child(dir);
    }
    let temp = tempfile::tempdir()?;
    let dir = match args.get(1) {
        Some(dir) => dir.clone(),
        None => temp.path().display().to_string(),
    };
    println!("store in {dir}");

    // The writer, killed with SIGKILL after 1.5 s.
    let mut writer = Command::new(std::env::current_exe()?)
        .args(["--child", &dir])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = writer.stdout.take().ok_or("no stdout")?;
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(1500));
    writer.kill()?;
    writer.wait()?;
    let lines = lines.join().map_err(|_| "reader panicked")?;
    let mut acked = 0;
    let mut checkpoints = 0;
    for line in &lines {
        if let Some(n) = line.strip_prefix("ack ") {
            acked = n.parse()?;
        } else if line.starts_with("checkpoint ") {
            checkpoints += 1;
            println!("  writer: {line}");
        }
    }
    println!("writer killed with SIGKILL: {acked} ops acknowledged, {checkpoints} checkpoints");

    // What the writer acknowledged, recomputed.
    let mut expected: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for n in 1..=acked {
        let k = key(n * 7919 % KEYS);
        expected.insert(k, (!n.is_multiple_of(10)).then(|| value(n)));
    }

    let started = Instant::now();
    let store = Store::open_dir(&dir, Options::default(), StateStoreConfig::default())?;
    let took = started.elapsed();
    let report = store.recovery();
    match report.checkpoint {
        Some(c) => println!(
            "recovered checkpoint {} (epoch {}): {} parts, {} bytes",
            c.id, c.epoch, report.parts_loaded, report.part_bytes
        ),
        None => println!("recovered without a checkpoint"),
    }
    for core in &report.cores {
        println!(
            "  core {}: {} keys from the checkpoint, {} WAL records replayed from LSN {}, {} torn bytes cut",
            core.core, core.keys_loaded, core.records, core.from, core.torn_bytes
        );
    }
    println!("recovery took {took:?}");

    // Every acknowledged write is there; a batch in flight at the kill may be there too (it was
    // never acknowledged), so only the acknowledged state is checked, key by key.
    let mut matched = 0;
    let mut newer = 0;
    for (k, v) in &expected {
        let found = store.get(k).map(<[u8]>::to_vec);
        if &found == v {
            matched += 1;
        } else {
            newer += 1;
        }
    }
    // The writer's unacknowledged batch is at most 100 ops.
    println!(
        "{matched} of {} keys hold their acknowledged value; {newer} hold a later, unacknowledged one",
        expected.len()
    );
    if newer > 100 {
        return Err("acknowledged writes were lost".into());
    }
    store.close()?;
    println!("ok");
    Ok(())
}
