//! A write-ahead log in a directory: append, sync in groups, close, reopen, read back.
//!
//! `cargo run -p lamina --example wal_file [records] [dir]` (a temporary directory by default).

use lamina::{Lsn, Options, SyncPolicy, WriteAheadLog};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let temp = tempfile::tempdir()?;
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let mut options = Options::default();
    options.config.segment_size = 4 * 1024 * 1024;
    options.config.policy = SyncPolicy::Batch {
        max_records: 256,
        max_bytes: 64 * 1024,
        max_delay: 0,
    };
    println!("lamina WAL in {}", dir.display());

    let (mut log, report) = WriteAheadLog::open(&dir, options)?;
    println!(
        "opened: {} records recovered from {} segments",
        report.records, report.segments
    );
    let start = Instant::now();
    let mut syncs = 0u64;
    for i in 0..records {
        log.append(format!("event {i}: {}", "x".repeat(200)).as_bytes())?;
        if i % 1_000 == 999 {
            log.sync()?;
            syncs += 1;
        }
    }
    let durable = log.sync()?;
    let elapsed = start.elapsed();
    println!(
        "appended {records} records of ~210 bytes, {syncs} group syncs: durable through LSN {durable} in {:.2?} ({:.0} records/s)",
        elapsed,
        records as f64 / elapsed.as_secs_f64()
    );
    let seal = log.close()?;
    println!("closed with a seal at LSN {seal}");

    let (mut log, report) = WriteAheadLog::open(&dir, options)?;
    let mut count = 0u64;
    let mut last = Lsn::ZERO;
    log.read_from(Lsn::FIRST, |lsn, _| {
        count += 1;
        last = lsn;
    })?;
    println!(
        "reopened: {} segments, {} bytes scanned, {count} records read back (last LSN {last}), cut: {:?}",
        report.segments, report.bytes, report.cut
    );
    Ok(())
}
