//! The one error type of the runtime.

use lamina_core::commit::{ConfigError, Poison};
use lamina_core::io::Failure;
use lamina_core::recover::DamageReport;
use lamina_core::{Lsn, SegmentId};

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
        /// The segment it is about, when it is about one.
        segment: Option<SegmentId>,
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
        /// Where the read started (for a [`crate::Tail`]: the LSN it was reading).
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
    /// The log was closed, or dropped without a close, and a [`crate::Tail`] handed out every
    /// record durable before that: nothing more will come.
    #[error("the log was closed: durable through LSN {durable}, and all of it was read")]
    Closed {
        /// The durable LSN when the log was closed or dropped.
        durable: Lsn,
    },
    /// Records a reader had not read yet were deleted (`truncate_before`, or the log's
    /// segments removed): they are lost to it.
    #[error("records from LSN {next} on were deleted before they were read: {detail}")]
    Truncated {
        /// The first LSN that could not be read.
        next: Lsn,
        /// What is gone.
        detail: String,
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
    /// A per-core log set cannot be opened as asked: no cores or more than
    /// [`crate::MAX_CORES`], its description file is damaged or unreadable, a core directory it
    /// lists is missing, a directory holds core logs but no description, or a core's log belongs
    /// to another core.
    #[error("per-core log set in {dir}: {detail}")]
    CoreSet {
        /// The set's directory (empty for a set opened over storages).
        dir: String,
        /// What is wrong, and where.
        detail: String,
    },
    /// A per-core log set was opened with another core count than the one it was created with.
    #[error("per-core log set in {dir} has {stored} cores, {requested} were asked for")]
    CoreCountMismatch {
        /// The set's directory.
        dir: String,
        /// The count its description holds.
        stored: usize,
        /// The count asked for.
        requested: usize,
    },
    /// A core index outside the set.
    #[error("core {core} does not exist: the set has {cores} cores")]
    NoSuchCore {
        /// The index asked for.
        core: usize,
        /// How many cores the set has.
        cores: usize,
    },
    /// An epoch marker that does not move the core's epoch forward.
    #[error("core {core} is in epoch {current}: epoch {requested} does not follow it")]
    EpochNotIncreasing {
        /// The core.
        core: usize,
        /// The epoch in force.
        current: u64,
        /// The epoch asked for.
        requested: u64,
    },
    /// [`crate::SharedLog::close`] or [`crate::SharedLog::into_log`] was called while other
    /// handles to the log are alive: only the last handle closes it (this one is dropped, the
    /// log goes on).
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
    /// A checkpoint store operation failed, or a part or manifest it holds is damaged (the
    /// store's [`crate::CheckpointError`], which names the part or manifest and where it is).
    #[error("{detail}")]
    Checkpoint {
        /// The store's error, with its causes.
        detail: String,
        /// Its kind.
        failure: Failure,
    },
    /// A checkpoint attempt was given up; the previous checkpoint stays current.
    #[error("checkpoint {id} aborted: {reason}")]
    CheckpointAborted {
        /// The attempt's id (never used again).
        id: u64,
        /// Why.
        reason: String,
    },
    /// A checkpoint's manifest and parts are whole but do not describe a state this set can
    /// hold: parts of another layout or core count, missing positions.
    #[error("checkpoint {id}: {detail}")]
    Snapshot {
        /// The checkpoint.
        id: u64,
        /// What is wrong.
        detail: String,
    },
    /// A changelog entry did not parse: a queued frame, or a WAL record read back (untrusted
    /// bytes) that is not a changelog put or delete.
    #[error("changelog of core {core}{}: {detail}", lsn_text(lsn))]
    Changelog {
        /// The core.
        core: usize,
        /// The record's LSN, when it was read from the log.
        lsn: Option<Lsn>,
        /// What is wrong with it.
        detail: String,
    },
}

fn lsn_text(lsn: &Option<Lsn>) -> String {
    match lsn {
        Some(lsn) => format!(" at LSN {lsn}"),
        None => String::new(),
    }
}

fn cause_text(cause: &Option<String>) -> String {
    match cause {
        Some(c) => format!(" ({c})"),
        None => String::new(),
    }
}

impl From<crate::CheckpointError> for Error {
    fn from(e: crate::CheckpointError) -> Self {
        let failure = e.failure();
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !detail.contains(&text) {
                detail.push_str(": ");
                detail.push_str(&text);
            }
            source = cause.source();
        }
        Error::Checkpoint { detail, failure }
    }
}
