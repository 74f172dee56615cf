//! Scenarios of many threads: a shared handle's group commit, and per-core logs with epochs.

use crate::common::*;
use lamina::{PerCoreWalManager, SharedLog};
use std::collections::BTreeSet;
use std::sync::Barrier;

pub(crate) fn shared_handles_group_commit_from_many_threads(under: &Under, _: &str) {
    const THREADS: usize = 8;
    const EACH: u32 = 40;
    let dir = tempdir();
    let (log, _) = under.open(dir.path(), options());
    let shared = SharedLog::new(log);
    let start = Barrier::new(THREADS);
    let mut acked: Records = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS as u32)
            .map(|t| {
                let (shared, start) = (shared.clone(), &start);
                scope.spawn(move || {
                    start.wait();
                    (0..EACH)
                        .map(|i| {
                            let p = payload(t * 1000 + i);
                            let lsn = shared.commit(&p).expect("commit");
                            // Acknowledged means durable, on every handle.
                            assert!(shared.durable_lsn() >= lsn);
                            (lsn, p)
                        })
                        .collect::<Records>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a committing thread"))
            .collect()
    });
    let commits = acked.len() as u64;
    let syncs = shared.syncs();
    assert!(
        syncs >= 1 && syncs <= commits,
        "{syncs} syncs for {commits} commits"
    );
    eprintln!("{}: {commits} commits, {syncs} syncs", under.name);
    shared.close().expect("the last handle closes");
    acked.sort();
    let lsns: BTreeSet<_> = acked.iter().map(|r| r.0).collect();
    assert_eq!(lsns.len(), acked.len(), "every LSN handed out once");
    let (mut log, _) = under.open(dir.path(), options());
    assert_eq!(
        read_all(&mut log),
        acked,
        "every commit, once, with its bytes"
    );
}

pub(crate) fn per_core_logs_keep_their_epochs_and_merge_in_order(under: &Under, _: &str) {
    const CORES: usize = 3;
    let dir = tempdir();
    let (set, recovery, selected) =
        unlocked(|| PerCoreWalManager::open_dir(dir.path(), CORES, options(), under.backend))
            .expect("open");
    assert_eq!(selected.backend, under.kind());
    assert_eq!(recovery.records(), 0);
    let payload = |core: usize, epoch: u64, i: u32| format!("core {core} epoch {epoch} #{i}");
    std::thread::scope(|scope| {
        for mut writer in set.writers() {
            scope.spawn(move || {
                let core = writer.core();
                for epoch in 1..=3u64 {
                    writer.begin_epoch(epoch).expect("epoch");
                    for i in 0..(20 + core as u32 * 7) {
                        writer
                            .append(payload(core, epoch, i).as_bytes())
                            .expect("append");
                    }
                    writer.sync().expect("sync");
                }
                writer.close().expect("close");
            });
        }
    });
    let (mut set, recovery, _) =
        unlocked(|| PerCoreWalManager::open_dir(dir.path(), CORES, options(), under.backend))
            .expect("reopen");
    for core in 0..CORES {
        let c = recovery.core(core).expect("each core recovered");
        assert_eq!(c.epoch, 3, "core {core}");
        let epochs: Vec<u64> = c.boundaries.iter().map(|b| b.epoch).collect();
        assert_eq!(epochs, [1, 2, 3], "core {core}");
    }
    let mut merged = Vec::new();
    set.read_merged(|r| {
        merged.push((
            r.epoch,
            r.core,
            r.lsn,
            String::from_utf8_lossy(r.payload).into_owned(),
        ));
    })
    .expect("merge");
    let mut expected_count = 0;
    for core in 0..CORES {
        expected_count += 3 * (20 + core * 7);
    }
    assert_eq!(merged.len(), expected_count);
    for pair in merged.windows(2) {
        assert!(
            (pair[0].0, pair[0].1, pair[0].2) < (pair[1].0, pair[1].1, pair[1].2),
            "(epoch, core, LSN) order: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    for (epoch, core, _, text) in &merged {
        assert!(
            text.starts_with(&format!("core {core} epoch {epoch} #")),
            "{text}"
        );
    }
}
