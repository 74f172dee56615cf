//! The one error type of the runtime.

use lamina_core::Lsn;
use lamina_core::commit::{ConfigError, Poison};
use lamina_core::recover::DamageReport;

/// What went wrong, and where. Every variant's `Display` names the operation and the place
/// (segment, offset, LSN) as far as they are known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Recovery on open stopped: corruption that the mode does not allow to cut, a read error, an
    /// unsupported format version; or the segments it said to discard could not be deleted.
    /// Nothing was changed on storage except that discard.
    #[error("recovering the log failed: {detail}")]
    Recover {
        /// What stopped recovery, and where (segment, offset, LSN).
        detail: String,
        /// The damage found, when damage stopped it (to match on).
        damage: Option<Box<DamageReport>>,
    },
    /// The options cannot work together.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// An earlier write or sync failed, so nothing more can be made durable: reopen the log (its
    /// recovery keeps every record acknowledged before the failure).
    #[error("log poisoned by an earlier failure: {poison}{}", cause_text(cause))]
    Poisoned {
        /// What failed, on which segment, and how.
        poison: Poison,
        /// The backend's own error, when it reported one.
        cause: Option<String>,
    },
    /// The storage failed outside the commit pipeline (a listing, a header read, a delete).
    #[error("storage failed while {op}: {detail}")]
    Storage {
        /// What the log was doing.
        op: String,
        /// The backend's error.
        detail: String,
    },
    /// Reading records back failed: damage, a read error, or a chain of segments that does not
    /// continue.
    #[error("reading the log from LSN {from} failed: {detail}")]
    Read {
        /// Where the read started.
        from: Lsn,
        /// What went wrong, and where.
        detail: String,
    },
    /// The backend stopped completing operations before the records were durable. Nothing more
    /// than `durable` is acknowledged.
    #[error("storage stopped completing: durable through LSN {durable}, LSN {wanted} was wanted")]
    Stalled {
        /// What is durable.
        durable: Lsn,
        /// What was to be.
        wanted: Lsn,
    },
    /// The payload exceeds `Config::max_payload`.
    #[error("record of {len} bytes exceeds max_payload ({max} bytes)")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The configured limit.
        max: u32,
    },
    /// The log has used up its LSNs.
    #[error("the log has used up its LSNs")]
    LsnExhausted,
    /// The pipeline refused an append for another reason (it says which).
    #[error("append refused: {0}")]
    Refused(String),
    /// [`crate::SharedLog::close`] was called while other handles to the log are alive: only
    /// the last handle closes it (this one is dropped, the log goes on).
    #[error("close refused: {others} other handles to the shared log are alive")]
    HandlesAlive {
        /// How many other handles there were.
        others: usize,
    },
    /// A thread panicked while it held the shared log's state or ran its I/O, so what the
    /// storage holds is unknown: reopen the log (recovery keeps every acknowledged record).
    #[error("a thread panicked while driving the shared log: reopen it")]
    Panicked,
    /// [`crate::SharedLog::wait_durable`] was asked for an LSN no append has returned yet.
    #[error("LSN {lsn} was not appended yet (the next is {next})")]
    NotAppended {
        /// The LSN asked for.
        lsn: Lsn,
        /// The LSN the next record gets.
        next: Lsn,
    },
}

fn cause_text(cause: &Option<String>) -> String {
    match cause {
        Some(c) => format!(" ({c})"),
        None => String::new(),
    }
}
