//! The quick start of README.md: open a log in a directory, append, sync, reopen, read back.
//!
//! `cargo run --release --example quickstart [dir]` (a temporary directory by default).

use lamina::{Lsn, Options, WriteAheadLog};

fn main() -> Result<(), lamina::Error> {
    let temp = tempfile::tempdir().map_err(|e| lamina::Error::Storage {
        op: "making a temporary directory".into(),
        detail: e.to_string(),
    })?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);

    // The README's ten lines.
    let (mut log, _report) = WriteAheadLog::open(&dir, Options::default())?;
    let first = log.append(b"order 1 placed")?;
    log.append(b"order 1 paid")?;
    let durable = log.sync()?; // both records are on disk when sync returns
    drop(log); // no close: as if the process died here

    let (mut log, report) = WriteAheadLog::open(&dir, Options::default())?;
    log.read_from(Lsn::FIRST, |lsn, payload| {
        println!("{lsn}: {}", String::from_utf8_lossy(payload));
    })?;

    println!(
        "first record at LSN {first}, durable through {durable}; reopened in {:.2?}: {} records \
         in {} segments, torn tail cut: {}",
        report.elapsed,
        report.records,
        report.segments,
        report.cut.is_some()
    );
    log.close()?;
    Ok(())
}
