//! The cross-backend conformance suite: one set of scenarios, run on every backend compiled in,
//! each through the same `lamina::DirLog` code. The file backend always runs; with the feature
//! `io-uring` of lamina-tests (`cargo test --workspace --all-features`), so does the io_uring
//! backend, in buffered, direct (`O_DIRECT`) and registered-files-and-buffers modes.
//!
//! Adding a backend means adding one line to the list in [`conformance!`]'s invocation below:
//! every scenario then runs on it as `<backend>::<scenario>`.
//!
//! Logs live under `CARGO_TARGET_TMPDIR` (the build's own disk, which takes `O_DIRECT`), not a
//! tmpfs. `LAMINA_CONFORMANCE_KILL_ROUNDS` sets the SIGKILL rounds per backend (default 3).
#![cfg(unix)]

mod bytes;
mod common;
mod concurrent;
mod faults;
mod kill;
mod log;

/// One module per backend, each with one `#[test]` per scenario calling the scenario with that
/// backend: `name => Backend` (with `#[cfg]` attributes for the backends behind a feature).
macro_rules! conformance {
    ($($(#[$attr:meta])* $name:ident => $backend:expr,)+) => {
        /// Every backend of the suite, for the scenarios that use two (a log written by one and
        /// read by another).
        pub(crate) fn all_backends() -> Vec<common::Under> {
            vec![$($(#[$attr])* common::Under { name: stringify!($name), backend: $backend },)+]
        }

        $(
            $(#[$attr])*
            mod $name {
                use crate::common::Under;

                fn under() -> Under {
                    Under { name: stringify!($name), backend: $backend }
                }

                conformance!(@scenarios
                    log::append_sync_reopen_keeps_every_synced_record,
                    log::close_then_reopen_continues_after_the_seal,
                    log::records_roll_over_across_segments_and_come_back,
                    log::truncate_before_deletes_whole_old_segments_durably,
                    log::torn_tail_mid_header_is_cut_and_the_log_goes_on,
                    log::torn_tail_mid_payload_is_cut_and_the_log_goes_on,
                    log::bit_flip_in_a_middle_segment_is_corruption_naming_the_file_in_strict,
                    log::bit_flip_in_a_middle_segment_stops_there_in_point_in_time,
                    log::bit_flip_in_a_middle_segment_is_skipped_and_reported_in_skip_corrupt,
                    log::a_log_written_here_is_read_and_continued_by_every_backend,
                    log::a_tail_follows_the_log_from_its_own_reader,
                    bytes::the_same_operations_leave_the_same_bytes_as_the_file_backend,
                    faults::eio_on_a_write_poisons_and_reopen_keeps_what_was_acked,
                    faults::enospc_on_a_write_poisons_and_reopen_keeps_what_was_acked,
                    faults::eio_on_a_sync_poisons_and_reopen_keeps_what_was_acked,
                    faults::enospc_on_a_sync_poisons_and_reopen_keeps_what_was_acked,
                    faults::a_poisoned_log_refuses_every_call_and_reopen_recovers,
                    faults::a_sync_submitted_while_writes_are_in_flight_completes_each_once,
                    faults::syncs_among_many_writes_in_flight_cover_every_acked_record,
                    concurrent::shared_handles_group_commit_from_many_threads,
                    concurrent::per_core_logs_keep_their_epochs_and_merge_in_order,
                    kill::sigkill_of_a_child_process_loses_no_durable_record,
                );
            }
        )+
    };
    (@scenarios $($module:ident :: $scenario:ident,)+) => {
        $(
            #[test]
            fn $scenario() {
                crate::$module::$scenario(&under(), concat!(module_path!(), "::", stringify!($scenario)));
            }
        )+
    };
}

conformance! {
    file => lamina::Backend::File,
    #[cfg(feature = "io-uring")]
    uring => lamina::Backend::Uring(lamina::uring_backend::Options::new()),
    #[cfg(feature = "io-uring")]
    uring_direct => lamina::Backend::Uring(lamina::uring_backend::Options::new().direct(true)),
    #[cfg(feature = "io-uring")]
    uring_fixed => lamina::Backend::Uring(
        lamina::uring_backend::Options::new().fixed_files(true).fixed_buffers(true).queue_depth(8)
    ),
}
