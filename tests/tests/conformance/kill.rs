//! A real process crash on each backend: a child process (this test binary again, running only
//! this backend's scenario with `LAMINA_CRASH_CHILD=1`) appends and syncs, printing each LSN once
//! `sync` has made it durable; the parent SIGKILLs it at a random moment, reopens the log and
//! checks that every LSN the child printed is there with its exact bytes, in order, and nothing
//! that no child appended (`lamina_tests::kill`, which `std-runtime/tests/process_kill.rs` runs
//! too). The rounds share one directory, so each child continues what the previous ones left.
//! `LAMINA_CONFORMANCE_KILL_ROUNDS` sets the rounds per backend (default 3), `LAMINA_KILL_SEED`
//! the base seed (printed on stderr).

use crate::common::*;
use lamina::{Options, SyncPolicy};
use lamina_tests::kill::{self, Parent};

const DEFAULT_ROUNDS: u64 = 3;

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

pub(crate) fn sigkill_of_a_child_process_loses_no_durable_record(under: &Under, test: &str) {
    if kill::is_child() {
        let (mut log, _) = under.open(&kill::child_dir(), kill_options());
        kill::child(log.next_lsn(), |batch| {
            let lsns = batch
                .iter()
                .map(|p| log.append(p).expect("child: append"))
                .collect();
            (lsns, log.sync().expect("child: sync"))
        });
        return;
    }
    let dir = tempdir();
    let parent = Parent {
        // The harness names the test without the crate's name.
        test: test.split_once("::").map_or(test, |(_, rest)| rest),
        label: under.name,
        rounds: kill::env_u64("LAMINA_CONFORMANCE_KILL_ROUNDS").unwrap_or(DEFAULT_ROUNDS),
        delay_ms: 20..=200,
    };
    parent.run(dir.path(), |round, at| {
        let (mut log, _) = under.open(dir.path(), kill_options());
        let records = read_all(&mut log);
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
