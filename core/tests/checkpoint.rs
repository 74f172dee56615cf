//! The checkpoint coordinator told every order of events.
//!
//! Exhaustive: for 1 to 3 cores, every order of the acknowledgements and the durability
//! notifications, each ending in a publish that succeeds or fails, with the manifest checked to
//! appear exactly when the last core's position becomes durable, and duplicates, late acks, a
//! core out of range and an early publish completion refused between every two steps. Random: proptest sequences of
//! triggers, acknowledgements (duplicates, late ones from aborted epochs, future epochs, cores out
//! of range, positions below the committed ones), durability, failures, timeouts and publish
//! completions, compared call by call with a small reference model, and checked against the
//! safety rule on their own: a committed checkpoint is one whose every core acknowledged that
//! epoch with a position that was durable when the manifest was handed out, and an abort leaves
//! the previous checkpoint current.

use lamina_core::Lsn;
use lamina_core::checkpoint::{
    AbortReason, Ack, AckError, Action, Checkpoint, Config, ConfigError, Coordinator, CoreEntry,
    Event, FailureError, Manifest, NoSuchCore, NotPublishing, Parts, Resume, State, TriggerError,
};
use lamina_core::io::Failure;
use proptest::prelude::*;
use std::collections::BTreeMap;

const TIMEOUT: u64 = 1_000;

fn coordinator<const N: usize>() -> Coordinator<N> {
    Coordinator::new(Config { timeout: TIMEOUT }).expect("valid config")
}

fn parts(core: usize, epoch: u64) -> Parts {
    Parts {
        count: (core as u32).wrapping_add(1),
        handle: epoch.wrapping_mul(100).wrapping_add(core as u64),
    }
}

fn ack(core: usize, epoch: u64, position: u64, durable: bool) -> Ack {
    Ack {
        core,
        epoch,
        position: Lsn(position),
        durable,
        parts: parts(core, epoch),
    }
}

/// Polls every barrier; asserts one per core in order, and nothing else.
fn take_barriers<const N: usize>(c: &mut Coordinator<N>, epoch: u64) {
    for core in 0..N {
        assert_eq!(
            c.poll_action(),
            Some(Action::InjectBarrier { core, epoch }),
            "barrier for core {core}"
        );
    }
    assert_eq!(c.poll_action(), None, "one barrier per core");
}

/// Polls the manifest, which must be due.
fn take_manifest<const N: usize>(c: &mut Coordinator<N>) -> Manifest<N> {
    match c.poll_action() {
        Some(Action::WriteManifest(m)) => m,
        other => panic!("expected the manifest, got {other:?}"),
    }
}

/// Triggers, acks every core durable at `positions`, publishes ok; returns the checkpoint.
fn commit_one<const N: usize>(c: &mut Coordinator<N>, now: u64, positions: [u64; N]) -> Checkpoint {
    let attempt = c.trigger(now).expect("idle");
    take_barriers(c, attempt.epoch);
    for (core, p) in positions.iter().enumerate() {
        c.handle_ack(ack(core, attempt.epoch, *p, true))
            .expect("valid ack");
    }
    let m = take_manifest(c);
    assert_eq!((m.id, m.epoch), (attempt.id, attempt.epoch));
    c.handle_published(m.id, Ok(())).expect("publishing");
    assert_eq!(c.poll_event(), Some(Event::Committed(attempt)));
    attempt
}

// ------------------------------------------------------------------------------------------------
// Every order, exhaustively
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Core acknowledges, position not yet durable.
    Ack(usize),
    /// Core's WAL durable through its position.
    Durable(usize),
}

fn permutations(items: &[Step]) -> Vec<Vec<Step>> {
    if items.is_empty() {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            out.push(tail);
        }
    }
    out
}

/// Runs one order of events for `N` cores, then a publish with `publish_ok`, after a first
/// committed checkpoint so that "the previous stays current" is visible.
fn run_order<const N: usize>(order: &[Step], publish_ok: bool) {
    let mut c = coordinator::<N>();
    let first = commit_one(&mut c, 0, [1; N]);
    let attempt = c.trigger(10).expect("idle");
    assert_eq!(attempt.epoch, first.epoch + 1);
    take_barriers(&mut c, attempt.epoch);
    // Core k acknowledges position 10 + k.
    let position = |core: usize| 10 + core as u64;
    let mut acked = [false; N];
    let mut durable = [false; N];
    for (i, step) in order.iter().enumerate() {
        // Before the last step the manifest is not due, and a publish completion is refused.
        assert_eq!(c.poll_action(), None, "step {i} of {order:?}");
        assert_eq!(
            c.handle_published(attempt.id, Ok(())),
            Err(NotPublishing { id: attempt.id })
        );
        // Misuse between the steps changes nothing: a duplicate of every ack so far (with
        // another position, claimed durable), a late ack of the committed epoch, a core out of
        // range.
        for (core, _) in acked.iter().enumerate().filter(|(_, a)| **a) {
            assert_eq!(
                c.handle_ack(ack(core, attempt.epoch, 99, true)),
                Err(AckError::Duplicate { core })
            );
        }
        assert_eq!(
            c.handle_ack(ack(0, first.epoch, 99, true)),
            Err(AckError::WrongEpoch {
                epoch: first.epoch,
                expected: attempt.epoch
            })
        );
        assert_eq!(
            c.handle_ack(ack(N, attempt.epoch, 99, true)),
            Err(AckError::NoSuchCore { core: N })
        );
        match *step {
            Step::Ack(core) => {
                c.handle_ack(ack(core, attempt.epoch, position(core), false))
                    .expect("valid ack");
                acked[core] = true;
            }
            Step::Durable(core) => {
                c.handle_durable(core, Lsn(position(core)))
                    .expect("core in range");
                durable[core] = true;
            }
        }
        let ready = acked.iter().zip(&durable).all(|(a, d)| *a && *d);
        let expect = if ready {
            State::ManifestDue { attempt }
        } else {
            State::Collecting {
                attempt,
                acked: acked.iter().filter(|a| **a).count(),
            }
        };
        assert_eq!(c.state(), expect, "after step {i} of {order:?}");
    }
    let m = take_manifest(&mut c);
    assert_eq!(c.poll_action(), None, "the manifest is handed out once");
    assert_eq!(m.parent, Some(first));
    assert_eq!(m.started_at, 10);
    for (core, entry) in m.cores.iter().enumerate() {
        assert_eq!(
            *entry,
            CoreEntry {
                position: Lsn(position(core)),
                parts: parts(core, attempt.epoch),
            }
        );
    }
    assert_eq!(c.state(), State::Publishing { attempt });
    assert_eq!(c.poll_timeout(), None, "no deadline while publishing");
    if publish_ok {
        c.handle_published(attempt.id, Ok(())).expect("publishing");
        assert_eq!(c.poll_event(), Some(Event::Committed(attempt)));
        assert_eq!(c.current(), Some(attempt));
        for core in 0..N {
            assert_eq!(c.truncate_before(core), Some(Lsn(position(core) + 1)));
        }
    } else {
        c.handle_published(attempt.id, Err(Failure::Io))
            .expect("publishing");
        assert_eq!(
            c.poll_event(),
            Some(Event::Aborted {
                attempt,
                reason: AbortReason::PublishFailed(Failure::Io)
            })
        );
        assert_eq!(c.current(), Some(first), "the previous checkpoint stays");
        for core in 0..N {
            assert_eq!(c.truncate_before(core), Some(Lsn(2)), "truncation stays");
        }
    }
    assert_eq!(c.state(), State::Idle);
    assert_eq!(
        c.handle_published(attempt.id, Ok(())),
        Err(NotPublishing { id: attempt.id }),
        "a second completion is refused"
    );
    assert_eq!(c.poll_event(), None);
}

fn every_order<const N: usize>() -> usize {
    let steps: Vec<Step> = (0..N)
        .flat_map(|c| [Step::Ack(c), Step::Durable(c)])
        .collect();
    let orders = permutations(&steps);
    for order in &orders {
        run_order::<N>(order, true);
        run_order::<N>(order, false);
    }
    orders.len()
}

#[test]
fn every_order_of_acks_and_durability_for_one_core_commits_or_aborts_on_publish() {
    assert_eq!(every_order::<1>(), 2);
}

#[test]
fn every_order_of_acks_and_durability_for_two_cores_commits_or_aborts_on_publish() {
    assert_eq!(every_order::<2>(), 24);
}

#[test]
fn every_order_of_acks_and_durability_for_three_cores_commits_or_aborts_on_publish() {
    assert_eq!(every_order::<3>(), 720);
}

#[test]
fn every_order_of_durable_acks_for_three_cores_makes_the_manifest_due_at_the_last() {
    let steps = [Step::Ack(0), Step::Ack(1), Step::Ack(2)];
    for order in permutations(&steps) {
        let mut c = coordinator::<3>();
        let attempt = c.trigger(0).expect("idle");
        take_barriers(&mut c, attempt.epoch);
        for (i, step) in order.iter().enumerate() {
            let Step::Ack(core) = *step else {
                unreachable!()
            };
            assert_eq!(c.poll_action(), None);
            c.handle_ack(ack(core, attempt.epoch, 5, true))
                .expect("valid ack");
            assert_eq!(
                matches!(c.state(), State::ManifestDue { .. }),
                i == 2,
                "{order:?}"
            );
        }
        let m = take_manifest(&mut c);
        assert_eq!(m.parent, None);
        c.handle_published(m.id, Ok(())).expect("publishing");
        assert_eq!(c.current(), Some(attempt));
    }
}

// ------------------------------------------------------------------------------------------------
// Durability
// ------------------------------------------------------------------------------------------------

#[test]
fn durability_below_the_acked_position_keeps_the_manifest_waiting() {
    let mut c = coordinator::<2>();
    let a = c.trigger(0).expect("idle");
    take_barriers(&mut c, a.epoch);
    c.handle_ack(ack(0, a.epoch, 7, true)).expect("ack");
    c.handle_ack(ack(1, a.epoch, 9, false)).expect("ack");
    c.handle_durable(1, Lsn(8)).expect("core 1");
    assert_eq!(c.poll_action(), None, "position 9 is not durable at 8");
    c.handle_durable(1, Lsn(3)).expect("core 1");
    assert_eq!(c.poll_action(), None, "a lower durable LSN changes nothing");
    c.handle_durable(1, Lsn(12)).expect("core 1");
    let m = take_manifest(&mut c);
    assert_eq!(
        m.cores[1].position,
        Lsn(9),
        "the acked position, not the durable one"
    );
}

#[test]
fn durability_told_before_the_ack_counts() {
    let mut c = coordinator::<1>();
    c.handle_durable(0, Lsn(20)).expect("core 0");
    let a = c.trigger(0).expect("idle");
    take_barriers(&mut c, a.epoch);
    c.handle_ack(ack(0, a.epoch, 15, false)).expect("ack");
    assert_eq!(take_manifest(&mut c).cores[0].position, Lsn(15));
}

#[test]
fn durable_for_a_core_out_of_range_is_refused() {
    let mut c = coordinator::<2>();
    assert_eq!(c.handle_durable(2, Lsn(1)), Err(NoSuchCore { core: 2 }));
}

#[test]
fn a_position_of_zero_is_durable_at_once() {
    let mut c = coordinator::<1>();
    let a = c.trigger(0).expect("idle");
    c.handle_ack(ack(0, a.epoch, 0, false)).expect("ack");
    // Every core acknowledged, so the barrier not yet handed out is not needed any more.
    assert_eq!(take_manifest(&mut c).cores[0].position, Lsn::ZERO);
    c.handle_published(a.id, Ok(())).expect("publishing");
    assert_eq!(c.truncate_before(0), Some(Lsn(1)), "nothing truncatable");
}

// ------------------------------------------------------------------------------------------------
// Triggers
// ------------------------------------------------------------------------------------------------

#[test]
fn trigger_while_in_progress_is_refused_not_queued() {
    let mut c = coordinator::<1>();
    let a = c.trigger(0).expect("idle");
    assert_eq!(c.trigger(1), Err(TriggerError::InProgress { attempt: a }));
    c.handle_ack(ack(0, a.epoch, 1, true)).expect("ack");
    assert_eq!(c.trigger(2), Err(TriggerError::InProgress { attempt: a }));
    let _ = take_barriers_and_manifest(&mut c);
    assert_eq!(c.trigger(3), Err(TriggerError::InProgress { attempt: a }));
    c.handle_published(a.id, Ok(())).expect("publishing");
    assert_eq!(c.trigger(4), Err(TriggerError::EventPending));
    assert_eq!(c.poll_event(), Some(Event::Committed(a)));
    assert_eq!(c.poll_action(), None, "nothing was queued");
    let b = c.trigger(5).expect("idle");
    assert_eq!((b.id, b.epoch), (2, 2));
}

fn take_barriers_and_manifest<const N: usize>(c: &mut Coordinator<N>) -> Manifest<N> {
    loop {
        match c.poll_action() {
            Some(Action::InjectBarrier { .. }) => {}
            Some(Action::WriteManifest(m)) => return m,
            None => panic!("no manifest"),
        }
    }
}

#[test]
fn trigger_with_an_unpolled_abort_is_refused_until_polled() {
    let mut c = coordinator::<1>();
    let a = c.trigger(0).expect("idle");
    c.handle_timeout(TIMEOUT);
    assert_eq!(c.trigger(TIMEOUT), Err(TriggerError::EventPending));
    assert!(matches!(c.poll_event(), Some(Event::Aborted { attempt, .. }) if attempt == a));
    assert!(c.trigger(TIMEOUT).is_ok());
}

#[test]
fn next_trigger_after_an_abort_takes_a_higher_epoch_and_id() {
    let mut c = coordinator::<2>();
    let a = c.trigger(0).expect("idle");
    c.handle_failure(a.epoch, Failure::NoSpace)
        .expect("in progress");
    let _ = c.poll_event();
    let b = c.trigger(5).expect("idle");
    assert!(b.epoch > a.epoch && b.id > a.id, "{a:?} then {b:?}");
    take_barriers(&mut c, b.epoch);
    c.handle_ack(ack(0, b.epoch, 3, true)).expect("ack");
    c.handle_ack(ack(1, b.epoch, 4, true)).expect("ack");
    let m = take_manifest(&mut c);
    assert_eq!((m.id, m.epoch, m.parent), (b.id, b.epoch, None));
    c.handle_published(b.id, Ok(())).expect("publishing");
    assert_eq!(c.current(), Some(b));
}

#[test]
fn exhausted_epochs_refuse_the_trigger() {
    let mut c = Coordinator::<1>::resume(
        Config { timeout: 5 },
        Resume {
            current: None,
            last_epoch: u64::MAX,
            last_id: 3,
        },
    )
    .expect("valid");
    assert_eq!(c.trigger(0), Err(TriggerError::Exhausted));
    assert_eq!(c.state(), State::Idle);
    assert_eq!(c.last_id(), 3, "nothing taken");
}

// ------------------------------------------------------------------------------------------------
// Timeouts
// ------------------------------------------------------------------------------------------------

#[test]
fn timeout_while_collecting_aborts_and_keeps_the_previous_current() {
    let mut c = coordinator::<2>();
    let first = commit_one(&mut c, 0, [4, 4]);
    let a = c.trigger(100).expect("idle");
    assert_eq!(c.poll_timeout(), Some(100 + TIMEOUT));
    take_barriers(&mut c, a.epoch);
    c.handle_ack(ack(0, a.epoch, 9, true)).expect("ack");
    c.handle_timeout(100 + TIMEOUT - 1);
    assert_eq!(c.poll_event(), None, "not yet due");
    c.handle_timeout(100 + TIMEOUT);
    assert_eq!(
        c.poll_event(),
        Some(Event::Aborted {
            attempt: a,
            reason: AbortReason::TimedOut
        })
    );
    assert_eq!(c.current(), Some(first));
    assert_eq!(c.truncate_before(0), Some(Lsn(5)));
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(
        c.handle_ack(ack(1, a.epoch, 9, true)),
        Err(AckError::NotInProgress { epoch: a.epoch }),
        "a late ack of the aborted epoch"
    );
}

#[test]
fn timeout_with_the_manifest_due_but_not_handed_out_aborts() {
    let mut c = coordinator::<1>();
    let a = c.trigger(0).expect("idle");
    c.handle_ack(ack(0, a.epoch, 1, true)).expect("ack");
    assert_eq!(c.state(), State::ManifestDue { attempt: a });
    c.handle_timeout(TIMEOUT);
    assert!(matches!(c.poll_event(), Some(Event::Aborted { .. })));
    assert_eq!(c.poll_action(), None, "no manifest after the abort");
    assert_eq!(c.current(), None);
}

#[test]
fn timeout_after_the_manifest_is_handed_out_waits_for_the_publish() {
    let mut c = coordinator::<1>();
    let a = c.trigger(0).expect("idle");
    c.handle_ack(ack(0, a.epoch, 1, true)).expect("ack");
    let m = take_barriers_and_manifest(&mut c);
    c.handle_timeout(10 * TIMEOUT);
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.state(), State::Publishing { attempt: a });
    c.handle_published(m.id, Ok(())).expect("publishing");
    assert_eq!(c.poll_event(), Some(Event::Committed(a)));
}

#[test]
fn deadline_saturates_at_the_end_of_the_clock() {
    let mut c = coordinator::<1>();
    let _ = c.trigger(u64::MAX - 1).expect("idle");
    assert_eq!(c.poll_timeout(), Some(u64::MAX));
}

// ------------------------------------------------------------------------------------------------
// Failures and misuse
// ------------------------------------------------------------------------------------------------

#[test]
fn publish_failure_aborts_and_keeps_the_previous_current() {
    let mut c = coordinator::<2>();
    let first = commit_one(&mut c, 0, [3, 5]);
    let a = c.trigger(1).expect("idle");
    c.handle_ack(ack(0, a.epoch, 8, true)).expect("ack");
    c.handle_ack(ack(1, a.epoch, 9, true)).expect("ack");
    let m = take_barriers_and_manifest(&mut c);
    c.handle_published(m.id, Err(Failure::AlreadyExists))
        .expect("publishing");
    assert_eq!(
        c.poll_event(),
        Some(Event::Aborted {
            attempt: a,
            reason: AbortReason::PublishFailed(Failure::AlreadyExists)
        })
    );
    assert_eq!(c.current(), Some(first));
    assert_eq!(c.truncate_before(0), Some(Lsn(4)));
    assert_eq!(c.truncate_before(1), Some(Lsn(6)));
}

#[test]
fn failure_report_aborts_the_attempt_and_a_stale_one_is_refused() {
    let mut c = coordinator::<2>();
    let a = c.trigger(0).expect("idle");
    assert_eq!(
        c.handle_failure(a.epoch + 1, Failure::Io),
        Err(FailureError::NotInProgress { epoch: a.epoch + 1 })
    );
    c.handle_failure(a.epoch, Failure::Io).expect("in progress");
    assert_eq!(
        c.poll_event(),
        Some(Event::Aborted {
            attempt: a,
            reason: AbortReason::Failed(Failure::Io)
        })
    );
    assert_eq!(
        c.handle_failure(a.epoch, Failure::Io),
        Err(FailureError::NotInProgress { epoch: a.epoch }),
        "a second report of the aborted epoch"
    );
    assert_eq!(c.poll_event(), None);
}

#[test]
fn failure_report_while_publishing_is_refused_and_the_publish_decides() {
    let mut c = coordinator::<1>();
    let a = c.trigger(0).expect("idle");
    c.handle_ack(ack(0, a.epoch, 2, true)).expect("ack");
    let _ = take_barriers_and_manifest(&mut c);
    assert_eq!(
        c.handle_failure(a.epoch, Failure::Io),
        Err(FailureError::Publishing { epoch: a.epoch })
    );
    c.handle_published(a.id, Ok(())).expect("publishing");
    assert_eq!(c.current(), Some(a));
}

#[test]
fn duplicate_ack_is_refused_and_the_first_stands() {
    let mut c = coordinator::<2>();
    let a = c.trigger(0).expect("idle");
    c.handle_ack(ack(0, a.epoch, 5, false)).expect("ack");
    assert_eq!(
        c.handle_ack(ack(0, a.epoch, 1, true)),
        Err(AckError::Duplicate { core: 0 })
    );
    c.handle_ack(ack(1, a.epoch, 2, true)).expect("ack");
    assert_eq!(
        c.poll_action(),
        Some(Action::InjectBarrier { core: 0, epoch: 1 })
    );
    assert_eq!(
        c.poll_action(),
        Some(Action::InjectBarrier { core: 1, epoch: 1 })
    );
    assert_eq!(
        c.poll_action(),
        None,
        "the duplicate's durable flag did not make position 5 durable"
    );
    c.handle_durable(0, Lsn(5)).expect("core 0");
    assert_eq!(take_manifest(&mut c).cores[0].position, Lsn(5));
    assert_eq!(
        c.handle_ack(ack(1, a.epoch, 2, true)),
        Err(AckError::Duplicate { core: 1 }),
        "while publishing"
    );
}

#[test]
fn ack_from_a_core_out_of_range_is_refused() {
    let mut c = coordinator::<2>();
    let a = c.trigger(0).expect("idle");
    assert_eq!(
        c.handle_ack(ack(2, a.epoch, 1, true)),
        Err(AckError::NoSuchCore { core: 2 })
    );
    assert_eq!(
        c.handle_ack(ack(usize::MAX, a.epoch, 1, true)),
        Err(AckError::NoSuchCore { core: usize::MAX })
    );
    assert_eq!(
        c.state(),
        State::Collecting {
            attempt: a,
            acked: 0
        }
    );
}

#[test]
fn ack_of_an_older_or_future_epoch_is_refused() {
    let mut c = coordinator::<1>();
    let first = commit_one(&mut c, 0, [1]);
    assert_eq!(
        c.handle_ack(ack(0, first.epoch, 1, true)),
        Err(AckError::NotInProgress { epoch: first.epoch }),
        "late ack of a committed epoch while idle"
    );
    let a = c.trigger(1).expect("idle");
    for epoch in [first.epoch, a.epoch + 1, 0, u64::MAX] {
        assert_eq!(
            c.handle_ack(ack(0, epoch, 3, true)),
            Err(AckError::WrongEpoch {
                epoch,
                expected: a.epoch
            })
        );
    }
    assert_eq!(
        c.state(),
        State::Collecting {
            attempt: a,
            acked: 0
        }
    );
}

#[test]
fn ack_below_the_committed_position_aborts() {
    let mut c = coordinator::<2>();
    let first = commit_one(&mut c, 0, [10, 10]);
    let a = c.trigger(1).expect("idle");
    c.handle_ack(ack(0, a.epoch, 10, true))
        .expect("the same position is fine");
    assert_eq!(
        c.handle_ack(ack(1, a.epoch, 9, true)),
        Err(AckError::PositionRegressed {
            core: 1,
            position: Lsn(9),
            committed: Lsn(10)
        })
    );
    assert_eq!(
        c.poll_event(),
        Some(Event::Aborted {
            attempt: a,
            reason: AbortReason::PositionRegressed { core: 1 }
        })
    );
    assert_eq!(c.current(), Some(first));
    assert_eq!(c.truncate_before(1), Some(Lsn(11)));
}

#[test]
fn publish_completion_for_another_id_is_refused() {
    let mut c = coordinator::<1>();
    let a = c.trigger(0).expect("idle");
    c.handle_ack(ack(0, a.epoch, 1, true)).expect("ack");
    let _ = take_barriers_and_manifest(&mut c);
    for id in [0, a.id + 1, u64::MAX] {
        assert_eq!(c.handle_published(id, Ok(())), Err(NotPublishing { id }));
        assert_eq!(
            c.handle_published(id, Err(Failure::Io)),
            Err(NotPublishing { id })
        );
    }
    assert_eq!(c.state(), State::Publishing { attempt: a });
    assert_eq!(c.current(), None);
}

// ------------------------------------------------------------------------------------------------
// Configuration, resume, truncation
// ------------------------------------------------------------------------------------------------

#[test]
fn zero_cores_and_zero_timeout_are_config_errors() {
    assert_eq!(
        Coordinator::<0>::new(Config::default()).err(),
        Some(ConfigError::NoCores)
    );
    assert_eq!(
        Coordinator::<1>::new(Config { timeout: 0 }).err(),
        Some(ConfigError::ZeroTimeout)
    );
}

#[test]
fn resume_ahead_of_the_last_epoch_or_id_is_refused() {
    let current = Checkpoint { id: 4, epoch: 9 };
    for (last_epoch, last_id) in [(8, 4), (9, 3)] {
        assert_eq!(
            Coordinator::<1>::resume(
                Config::default(),
                Resume {
                    current: Some((current, [Lsn(1)])),
                    last_epoch,
                    last_id
                }
            )
            .err(),
            Some(ConfigError::ResumeAhead)
        );
    }
}

#[test]
fn resume_continues_epochs_ids_and_truncation() {
    let current = Checkpoint { id: 4, epoch: 9 };
    let mut c = Coordinator::<2>::resume(
        Config { timeout: TIMEOUT },
        Resume {
            current: Some((current, [Lsn(30), Lsn(40)])),
            last_epoch: 12,
            last_id: 6,
        },
    )
    .expect("valid");
    assert_eq!(c.current(), Some(current));
    assert_eq!(c.truncate_before(0), Some(Lsn(31)));
    assert_eq!(c.truncate_before(1), Some(Lsn(41)));
    assert_eq!(c.truncate_before(2), None);
    let a = c.trigger(0).expect("idle");
    assert_eq!((a.id, a.epoch), (7, 13));
    assert!(matches!(
        c.handle_ack(ack(0, a.epoch, 29, true)),
        Err(AckError::PositionRegressed { core: 0, .. })
    ));
}

#[test]
fn truncation_is_none_before_a_commit_and_follows_each_commit() {
    let mut c = coordinator::<2>();
    assert_eq!(c.truncate_before(0), None);
    assert_eq!(c.committed_position(0), None);
    let _ = commit_one(&mut c, 0, [5, 0]);
    assert_eq!(c.truncate_before(0), Some(Lsn(6)));
    assert_eq!(c.truncate_before(1), Some(Lsn(1)));
    let _ = commit_one(&mut c, 1, [5, 8]);
    assert_eq!(c.committed_position(1), Some(Lsn(8)));
    assert_eq!(c.truncate_before(1), Some(Lsn(9)));
}

#[test]
fn errors_display_what_went_wrong() {
    let text = AckError::WrongEpoch {
        epoch: 3,
        expected: 4,
    }
    .to_string();
    assert!(text.contains('3') && text.contains('4'), "{text}");
    let text = AbortReason::PublishFailed(Failure::NoSpace).to_string();
    assert!(text.contains("no space"), "{text}");
}

// ------------------------------------------------------------------------------------------------
// Random sequences against a reference model
// ------------------------------------------------------------------------------------------------

const CORES: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Trigger,
    /// `epoch`: 0 the current attempt's, 1 the one before, 2 the one after. `core` may be out of
    /// range.
    Ack {
        core: usize,
        epoch: u8,
        position: u64,
        durable: bool,
    },
    Durable {
        core: usize,
        upto: u64,
    },
    /// `other`: a wrong id.
    Published {
        other: bool,
        ok: bool,
    },
    Failure {
        old: bool,
    },
    Advance(u64),
    PollActions,
    PollEvent,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Trigger),
        12 => (0..=CORES, 0u8..3, 0u64..40, any::<bool>()).prop_map(|(core, epoch, position, durable)| {
            Op::Ack { core, epoch, position, durable }
        }),
        8 => (0..=CORES, 0u64..40).prop_map(|(core, upto)| Op::Durable { core, upto }),
        4 => (any::<bool>(), prop::bool::weighted(0.8))
            .prop_map(|(other, ok)| Op::Published { other: other && ok, ok }),
        1 => any::<bool>().prop_map(|old| Op::Failure { old }),
        1 => (0u64..700).prop_map(Op::Advance),
        8 => Just(Op::PollActions),
        6 => Just(Op::PollEvent),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MPhase {
    Idle,
    Collecting,
    Due,
    Publishing,
}

/// The reference model: the rules of the module docs, written plainly.
struct Model {
    phase: MPhase,
    attempt: Checkpoint,
    started: u64,
    deadline: u64,
    barriers: usize,
    acks: BTreeMap<usize, (u64, Parts)>,
    durable: [u64; CORES],
    committed: Option<(Checkpoint, [u64; CORES])>,
    last_epoch: u64,
    last_id: u64,
    event: Option<Event>,
}

impl Model {
    fn new() -> Model {
        Model {
            phase: MPhase::Idle,
            attempt: Checkpoint::default(),
            started: 0,
            deadline: 0,
            barriers: 0,
            acks: BTreeMap::new(),
            durable: [0; CORES],
            committed: None,
            last_epoch: 0,
            last_id: 0,
            event: None,
        }
    }

    fn committed_pos(&self, core: usize) -> u64 {
        self.committed.map_or(0, |(_, p)| p[core])
    }

    fn settle(&mut self) {
        if self.phase == MPhase::Collecting
            && (0..CORES).all(|c| {
                self.acks
                    .get(&c)
                    .is_some_and(|(p, _)| self.durable[c] >= *p)
            })
        {
            self.phase = MPhase::Due;
        }
    }

    fn end(&mut self, event: Event) {
        if let Event::Committed(cp) = event {
            let mut p = [0; CORES];
            for (c, slot) in p.iter_mut().enumerate() {
                *slot = self.acks[&c].0;
            }
            self.committed = Some((cp, p));
        }
        self.acks.clear();
        self.event = Some(event);
        self.phase = MPhase::Idle;
    }

    fn abort(&mut self, reason: AbortReason) {
        let attempt = self.attempt;
        self.end(Event::Aborted { attempt, reason });
    }

    fn state(&self) -> State {
        let attempt = self.attempt;
        match self.phase {
            MPhase::Idle => State::Idle,
            MPhase::Collecting => State::Collecting {
                attempt,
                acked: self.acks.len(),
            },
            MPhase::Due => State::ManifestDue { attempt },
            MPhase::Publishing => State::Publishing { attempt },
        }
    }
}

/// What the harness saw, to check safety independently of the model.
#[derive(Default)]
struct History {
    /// Per (epoch, core): the position of the first ack the coordinator took.
    taken: BTreeMap<(u64, usize), u64>,
    /// Per core: the highest durable LSN told (by a durable ack or a notification).
    durable: [u64; CORES],
    /// Manifests handed out, by id, with the durable LSNs at that moment.
    manifests: BTreeMap<u64, (Manifest<CORES>, [u64; CORES])>,
    last_trigger: Option<Checkpoint>,
}

fn run_model(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut c = coordinator::<CORES>();
    let mut m = Model::new();
    let mut h = History::default();
    let mut now = 0u64;
    let mut truncation = [0u64; CORES];
    for op in ops {
        let before = c.current();
        match op.clone() {
            Op::Trigger => {
                let expect = if m.phase != MPhase::Idle {
                    Err(TriggerError::InProgress { attempt: m.attempt })
                } else if m.event.is_some() {
                    Err(TriggerError::EventPending)
                } else {
                    m.last_epoch += 1;
                    m.last_id += 1;
                    m.attempt = Checkpoint {
                        id: m.last_id,
                        epoch: m.last_epoch,
                    };
                    m.phase = MPhase::Collecting;
                    m.started = now;
                    m.deadline = now + TIMEOUT;
                    m.barriers = 0;
                    Ok(m.attempt)
                };
                let got = c.trigger(now);
                prop_assert_eq!(got, expect);
                if let Ok(a) = got {
                    if let Some(last) = h.last_trigger {
                        prop_assert!(a.epoch > last.epoch && a.id > last.id);
                    }
                    h.last_trigger = Some(a);
                }
            }
            Op::Ack {
                core,
                epoch,
                position,
                durable,
            } => {
                let epoch = match epoch {
                    0 => m.attempt.epoch,
                    1 => m.attempt.epoch.saturating_sub(1),
                    _ => m.attempt.epoch + 1,
                };
                let a = ack(core, epoch, position, durable);
                let expect = if core >= CORES {
                    Err(AckError::NoSuchCore { core })
                } else if m.phase == MPhase::Idle {
                    Err(AckError::NotInProgress { epoch })
                } else if epoch != m.attempt.epoch {
                    Err(AckError::WrongEpoch {
                        epoch,
                        expected: m.attempt.epoch,
                    })
                } else if m.acks.contains_key(&core) {
                    Err(AckError::Duplicate { core })
                } else if position < m.committed_pos(core) {
                    let committed = Lsn(m.committed_pos(core));
                    m.abort(AbortReason::PositionRegressed { core });
                    Err(AckError::PositionRegressed {
                        core,
                        position: Lsn(position),
                        committed,
                    })
                } else {
                    m.acks.insert(core, (position, a.parts));
                    if durable {
                        m.durable[core] = m.durable[core].max(position);
                    }
                    m.settle();
                    Ok(())
                };
                let got = c.handle_ack(a);
                prop_assert_eq!(got, expect);
                if got.is_ok() {
                    h.taken.insert((epoch, core), position);
                    if durable {
                        h.durable[core] = h.durable[core].max(position);
                    }
                }
            }
            Op::Durable { core, upto } => {
                let expect = if core >= CORES {
                    Err(NoSuchCore { core })
                } else {
                    m.durable[core] = m.durable[core].max(upto);
                    h.durable[core] = h.durable[core].max(upto);
                    m.settle();
                    Ok(())
                };
                prop_assert_eq!(c.handle_durable(core, Lsn(upto)), expect);
            }
            Op::Published { other, ok } => {
                let id = if other {
                    m.attempt.id + 1
                } else {
                    m.attempt.id
                };
                let result = if ok { Ok(()) } else { Err(Failure::Io) };
                let expect = if m.phase != MPhase::Publishing || id != m.attempt.id {
                    Err(NotPublishing { id })
                } else {
                    if ok {
                        m.end(Event::Committed(m.attempt));
                    } else {
                        m.abort(AbortReason::PublishFailed(Failure::Io));
                    }
                    Ok(())
                };
                prop_assert_eq!(c.handle_published(id, result), expect);
            }
            Op::Failure { old } => {
                let epoch = if old {
                    m.attempt.epoch.saturating_sub(1)
                } else {
                    m.attempt.epoch
                };
                let expect = if m.phase == MPhase::Idle || epoch != m.attempt.epoch {
                    Err(FailureError::NotInProgress { epoch })
                } else if m.phase == MPhase::Publishing {
                    Err(FailureError::Publishing { epoch })
                } else {
                    m.abort(AbortReason::Failed(Failure::Other));
                    Ok(())
                };
                prop_assert_eq!(c.handle_failure(epoch, Failure::Other), expect);
            }
            Op::Advance(dt) => {
                now += dt;
                if matches!(m.phase, MPhase::Collecting | MPhase::Due) && now >= m.deadline {
                    m.abort(AbortReason::TimedOut);
                }
                c.handle_timeout(now);
            }
            Op::PollActions => loop {
                let expect = match m.phase {
                    MPhase::Collecting if m.barriers < CORES => {
                        m.barriers += 1;
                        Some(Action::InjectBarrier {
                            core: m.barriers - 1,
                            epoch: m.attempt.epoch,
                        })
                    }
                    MPhase::Due => {
                        m.phase = MPhase::Publishing;
                        let mut cores = [CoreEntry::default(); CORES];
                        for (k, e) in cores.iter_mut().enumerate() {
                            let (position, parts) = m.acks[&k];
                            *e = CoreEntry {
                                position: Lsn(position),
                                parts,
                            };
                        }
                        Some(Action::WriteManifest(Manifest {
                            id: m.attempt.id,
                            epoch: m.attempt.epoch,
                            parent: m.committed.map(|(cp, _)| cp),
                            started_at: m.started,
                            cores,
                        }))
                    }
                    _ => None,
                };
                let got = c.poll_action();
                prop_assert_eq!(got, expect);
                match got {
                    None => break,
                    Some(Action::WriteManifest(man)) => {
                        h.manifests.insert(man.id, (man, h.durable));
                    }
                    Some(Action::InjectBarrier { .. }) => {}
                }
            },
            Op::PollEvent => prop_assert_eq!(c.poll_event(), m.event.take()),
        }
        prop_assert_eq!(c.state(), m.state());
        let timeout = matches!(m.phase, MPhase::Collecting | MPhase::Due).then_some(m.deadline);
        prop_assert_eq!(c.poll_timeout(), timeout);

        // Safety on its own: whatever is current had a manifest whose every position was that
        // core's first taken ack of the epoch and durable when the manifest was handed out.
        let current = c.current();
        prop_assert_eq!(current, m.committed.map(|(cp, _)| cp));
        if current != before {
            let cp = current.expect("current never goes back to none");
            prop_assert!(before.is_none_or(|b| cp.id > b.id && cp.epoch > b.epoch));
            let (man, durable_then) = h.manifests.get(&cp.id).expect("a manifest was handed out");
            prop_assert_eq!(man.epoch, cp.epoch);
            for (core, e) in man.cores.iter().enumerate() {
                prop_assert_eq!(Some(&e.position.0), h.taken.get(&(cp.epoch, core)));
                prop_assert!(
                    e.position.0 <= durable_then[core],
                    "core {} not durable",
                    core
                );
            }
        }
        for (core, t) in truncation.iter_mut().enumerate() {
            let bound = c.truncate_before(core).map_or(0, |l| l.0);
            prop_assert!(bound >= *t, "truncation bound went back for core {}", core);
            if let Some(cp) = current {
                let man = &h.manifests[&cp.id].0;
                prop_assert_eq!(bound, man.cores[core].position.0 + 1, "never beyond");
            }
            *t = bound;
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("LAMINA_CHECKPOINT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_event_sequences_match_the_model_and_commit_only_durable_acks(
        ops in prop::collection::vec(op(), 1..120)
    ) {
        run_model(&ops)?;
    }
}

/// The random sequences do reach commits and every kind of abort (a check on the generator, so
/// the property above is not vacuous).
#[test]
fn random_sequences_reach_commits_and_aborts() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(op(), 100..120);
    let (mut commits, mut timeouts, mut failed, mut publish_failed) = (0, 0, 0, 0);
    for _ in 0..200 {
        let ops = strategy.new_tree(&mut runner).expect("tree").current();
        run_model(&ops).expect("model agrees");
        // Replay to count outcomes.
        let mut c = coordinator::<CORES>();
        let mut now = 0;
        let mut epoch = 0;
        let mut id = 0;
        for op in &ops {
            match *op {
                Op::Trigger => {
                    if let Ok(a) = c.trigger(now) {
                        (epoch, id) = (a.epoch, a.id);
                    }
                }
                Op::Ack {
                    core,
                    epoch: e,
                    position,
                    durable,
                } => {
                    let e = match e {
                        0 => epoch,
                        1 => epoch.saturating_sub(1),
                        _ => epoch + 1,
                    };
                    let _ = c.handle_ack(ack(core, e, position, durable));
                }
                Op::Durable { core, upto } => {
                    let _ = c.handle_durable(core, Lsn(upto));
                }
                Op::Published { other, ok } => {
                    let id = if other { id + 1 } else { id };
                    let _ = c.handle_published(id, if ok { Ok(()) } else { Err(Failure::Io) });
                }
                Op::Failure { old } => {
                    let e = if old { epoch.saturating_sub(1) } else { epoch };
                    let _ = c.handle_failure(e, Failure::Other);
                }
                Op::Advance(dt) => {
                    now += dt;
                    c.handle_timeout(now);
                }
                Op::PollActions => while c.poll_action().is_some() {},
                Op::PollEvent => match c.poll_event() {
                    Some(Event::Committed(_)) => commits += 1,
                    Some(Event::Aborted { reason, .. }) => match reason {
                        AbortReason::TimedOut => timeouts += 1,
                        AbortReason::Failed(_) => failed += 1,
                        AbortReason::PublishFailed(_) => publish_failed += 1,
                        _ => {}
                    },
                    None => {}
                },
            }
        }
    }
    assert!(
        commits > 20 && timeouts > 5 && failed > 5 && publish_failed > 2,
        "commits {commits}, timeouts {timeouts}, failures {failed}, publish failures {publish_failed}"
    );
}

#[test]
fn late_ack_from_an_aborted_epoch_does_not_count_for_the_next() {
    let mut c = coordinator::<2>();
    let a = c.trigger(0).expect("idle");
    c.handle_ack(ack(0, a.epoch, 4, true)).expect("ack");
    c.handle_timeout(TIMEOUT);
    let _ = c.poll_event();
    let b = c.trigger(TIMEOUT).expect("idle");
    take_barriers(&mut c, b.epoch);
    assert_eq!(
        c.handle_ack(ack(1, a.epoch, 4, true)),
        Err(AckError::WrongEpoch {
            epoch: a.epoch,
            expected: b.epoch
        })
    );
    c.handle_ack(ack(1, b.epoch, 6, true)).expect("ack");
    assert_eq!(
        c.state(),
        State::Collecting {
            attempt: b,
            acked: 1
        },
        "core 0's ack of the aborted epoch was dropped with it"
    );
    c.handle_ack(ack(0, b.epoch, 5, true)).expect("ack");
    let m = take_manifest(&mut c);
    assert_eq!(m.cores[0].position, Lsn(5));
    assert_eq!(m.cores[1].position, Lsn(6));
}
