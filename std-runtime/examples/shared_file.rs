//! Many threads committing on one `SharedLog` in a directory: commits per second and syncs per
//! commit at 1, 8 and 32 threads (each commit waits until its record is durable).
//!
//! `cargo run --release -p lamina --example shared_file [commits per run] [dir]` (a temporary
//! directory per run by default).

use lamina::{Options, SharedLog, WriteAheadLog};
use std::sync::Barrier;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let commits: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4_000);
    let base = args.next();
    for threads in [1usize, 8, 32] {
        let temp = tempfile::tempdir()?;
        let dir = base.as_ref().map_or_else(
            || temp.path().to_path_buf(),
            |b| std::path::Path::new(b).join(format!("shared-{threads}")),
        );
        let (log, _) = WriteAheadLog::open(&dir, Options::default())?;
        let log = SharedLog::new(log);
        let per_thread = commits.div_ceil(threads);
        let start = Barrier::new(threads + 1);
        let elapsed = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (log, start) = (log.clone(), &start);
                    scope.spawn(move || -> Result<(), lamina::Error> {
                        start.wait();
                        for i in 0..per_thread {
                            log.commit(
                                format!("thread {t} event {i}: {}", "x".repeat(100)).as_bytes(),
                            )?;
                        }
                        Ok(())
                    })
                })
                .collect();
            start.wait();
            let began = Instant::now();
            for w in workers {
                w.join().map_err(|_| "a committing thread panicked")??;
            }
            Ok::<_, Box<dyn std::error::Error>>(began.elapsed())
        })?;
        let total = per_thread * threads;
        println!(
            "{threads:>2} threads: {total} commits in {elapsed:.2?}: {:.0} commits/s, {:.3} syncs per commit",
            total as f64 / elapsed.as_secs_f64(),
            log.syncs() as f64 / total as f64
        );
        log.close()?;
    }
    Ok(())
}
