//! A real process crash: a child process (this test binary again, `LAMINA_CRASH_CHILD=1`)
//! appends and syncs on the file backend (`WriteAheadLog::open`), printing each LSN once `sync`
//! has made it durable; the parent SIGKILLs it at a random moment, reopens the log and checks
//! that every LSN the child printed is there with its exact bytes, in order, and that nothing
//! comes back that no child appended (`lamina_tests::kill`). The rounds share one directory, so
//! each child continues the log the previous ones left behind (and is killed during recovery now
//! and then, when the kill comes early). The conformance suite runs the same machinery on every
//! backend through `open_dir`, with fewer rounds.
//!
//! `LAMINA_KILL_ROUNDS` sets the number of rounds (default 20), `LAMINA_KILL_SEED` the base seed
//! (default: from the clock); the seeds are printed on stderr.
#![cfg(unix)]

use lamina::{Lsn, Options, SyncPolicy, WriteAheadLog};
use lamina_tests::kill::{self, Parent};

/// This test's name: the child re-runs the binary with `--exact` on it.
const TEST_NAME: &str = "sigkill_at_random_moments_loses_no_durable_record";
const DEFAULT_ROUNDS: u64 = 20;

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

#[test]
fn sigkill_at_random_moments_loses_no_durable_record() {
    if kill::is_child() {
        let (mut log, _) = WriteAheadLog::open(kill::child_dir(), options()).expect("child: open");
        kill::child(log.next_lsn(), |batch| {
            let lsns = batch
                .iter()
                .map(|p| log.append(p).expect("child: append"))
                .collect();
            (lsns, log.sync().expect("child: sync"))
        });
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = Parent {
        test: TEST_NAME,
        label: "process_kill",
        rounds: kill::env_u64("LAMINA_KILL_ROUNDS").unwrap_or(DEFAULT_ROUNDS),
        delay_ms: 5..=150,
    };
    parent.run(dir.path(), |round, at| {
        let (mut log, _report) = WriteAheadLog::open(dir.path(), options())
            .unwrap_or_else(|e| panic!("{at}: reopening after the kill: {e}"));
        let mut records = Vec::new();
        log.read_from(Lsn::FIRST, |lsn, p| records.push((lsn, p.to_vec())))
            .unwrap_or_else(|e| panic!("{at}: reading the log back: {e}"));
        // Closed now and then, dropped (a crash too) the other times.
        let next = if round.is_multiple_of(2) {
            log.close()
                .unwrap_or_else(|e| panic!("{at}: closing: {e}"))
                .next()
        } else {
            let next = log.next_lsn();
            drop(log);
            next
        };
        (records, next)
    });
}
