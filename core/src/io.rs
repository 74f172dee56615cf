//! The backend contract: what a storage backend does for the log, and how it reports back.
//!
//! Mutating operations are *completion-based*: [`SegmentStorage::submit`] starts one and
//! [`SegmentStorage::poll_completion`] reports its end, in any order, tagged with the caller's
//! token. A blocking backend does the work inside `submit` and reports it at the next poll; an
//! io_uring backend queues an SQE; an object-store backend starts a request. Up to the commit
//! pipeline's limit of writes may be in flight at once.
//!
//! Reads and listings are plain calls: they run during recovery, sequentially and off the append
//! path, so a backend that completes later blocks on its own runtime for them.
//!
//! The rules each backend keeps (the conformance suite checks them):
//! * `Create`: the segment exists, holding `header` at offset 0 durably (written and synced).
//!   The rest may be empty, zeros, or stale bytes of an earlier use of the space: frames are
//!   seeded with the new header's identity, so stale ones never validate. Its name is durable
//!   only after a later `SyncNamespace` completes. (A header is never torn under records: see
//!   `core/FORMAT.md`.)
//! * `Write`: `data` is at `offset` once complete (a short write is the backend's to finish;
//!   the completion covers all of `data`). Not durable until a `Sync` issued after this
//!   completion completes. The caller keeps `data` unchanged until the completion is polled.
//!   With `sync: true` the backend makes it durable before completing (a linked write→fsync).
//! * `Sync`: every write to the segment that completed before the sync was submitted is durable
//!   on completion. A write still in flight is not covered.
//! * `SyncNamespace`: every create and delete completed before it is durable on completion (a
//!   directory fsync).
//! * `Delete`: the segment is gone; durable after a later `SyncNamespace`.
//! * After any failure, the caller stops trusting the backend's state (the log is poisoned).
//!
//! A backend accepts at least `max_writes_in_flight + 2` operations in flight before the driver
//! polls completions: the pipeline's writes, one sync, and one create or namespace sync.

use crate::lsn::SegmentId;
use core::fmt;

/// What kind of failure an operation met, as far as the log needs to tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// The device reported an I/O error (`EIO`).
    Io,
    /// No space left (`ENOSPC`, a full quota or flash).
    NoSpace,
    /// The operation was cancelled (a linked write failed, so its sync never ran).
    Cancelled,
    /// The target is absent (`ENOENT`).
    NotFound,
    /// The target already exists (a conditional publish lost).
    AlreadyExists,
    /// The backend cannot do this at all.
    Unsupported,
    /// Anything else.
    Other,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Io => "I/O error",
            Failure::NoSpace => "no space left",
            Failure::Cancelled => "cancelled",
            Failure::NotFound => "not found",
            Failure::AlreadyExists => "already exists",
            Failure::Unsupported => "unsupported",
            Failure::Other => "other failure",
        })
    }
}

/// A backend error: anything that can say which [`Failure`] it is.
pub trait Error: fmt::Debug {
    /// Which kind of failure this is.
    fn failure(&self) -> Failure;
}

impl Error for Failure {
    fn failure(&self) -> Failure {
        *self
    }
}

/// A type with an associated backend error (the shape of `embedded_io::ErrorType`).
pub trait ErrorType {
    /// The backend's error.
    type Error: Error;
}

/// A mutating segment operation. See the module documentation for each one's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentOp<'a> {
    /// Create `segment` with `header` at offset 0.
    Create {
        /// Which segment.
        segment: SegmentId,
        /// Its header bytes.
        header: &'a [u8],
    },
    /// Write `data` at `offset` of `segment`; with `sync`, durably.
    Write {
        /// Which segment.
        segment: SegmentId,
        /// Byte offset in the segment.
        offset: u64,
        /// The bytes, unchanged until the completion is polled.
        data: &'a [u8],
        /// Make this write durable before completing (linked write→sync).
        sync: bool,
    },
    /// Make every write to `segment` that completed before this submission durable.
    Sync {
        /// Which segment.
        segment: SegmentId,
    },
    /// Make completed creates and deletes durable.
    SyncNamespace,
    /// Delete `segment`.
    Delete {
        /// Which segment.
        segment: SegmentId,
    },
}

/// The end of an operation: the token it was submitted with, and how it went.
pub type Completion<E> = (u64, Result<(), E>);

/// Where a log's segments live: a directory, a flash partition, an object-store prefix.
pub trait SegmentStorage: ErrorType {
    /// Starts `op`; its end is reported by [`Self::poll_completion`] with `token`.
    ///
    /// # Errors
    /// When the operation cannot even be started; it then has no completion.
    fn submit(&mut self, token: u64, op: SegmentOp<'_>) -> Result<(), Self::Error>;

    /// The end of one submitted operation, if one has ended; `None` when none has yet.
    fn poll_completion(&mut self) -> Option<Completion<Self::Error>>;

    /// Reads from `offset` of `segment` into `buf`; returns the bytes read, 0 at the end.
    ///
    /// # Errors
    /// A read error: recovery stops on it, it never becomes a truncation.
    fn read_at(
        &mut self,
        segment: SegmentId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Self::Error>;

    /// Writes the ids of the existing segments, ascending, into `out`; returns how many exist
    /// (more than `out.len()` means the list was cut short: call again with more room).
    ///
    /// # Errors
    /// When the segments cannot be listed.
    fn list(&mut self, out: &mut [SegmentId]) -> Result<usize, Self::Error>;

    /// Blocks until a submitted operation has ended, when some are in flight and none has
    /// ended yet, so that a driver waits instead of polling in a loop; returns at once when a
    /// completion is ready or nothing is in flight. The default returns at once: it suits a
    /// backend that completes every operation inside `submit`.
    ///
    /// # Errors
    /// When the backend cannot wait (its completion mechanism failed).
    fn wait_for_completion(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// How an object is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Publish {
    /// Replace any object of that name, atomically: readers see the old or the new whole.
    Replace,
    /// Only if no object of that name exists; else the completion fails with
    /// [`Failure::AlreadyExists`]. The fence of a writer that lost ownership.
    IfAbsent,
}

/// A mutating object operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectOp<'a> {
    /// Publish `data` under `name`, whole and durable on completion.
    Publish {
        /// The object's name.
        name: &'a str,
        /// Its bytes, unchanged until the completion is polled.
        data: &'a [u8],
        /// Replace or create-only.
        mode: Publish,
    },
    /// Delete `name`, durably on completion. Deleting an absent object succeeds.
    Delete {
        /// The object's name.
        name: &'a str,
    },
}

/// Where named objects live (checkpoint manifests and snapshot parts).
pub trait ObjectStorage: ErrorType {
    /// Starts `op`; its end is reported by [`Self::poll_completion`] with `token`.
    ///
    /// # Errors
    /// When the operation cannot even be started; it then has no completion.
    fn submit(&mut self, token: u64, op: ObjectOp<'_>) -> Result<(), Self::Error>;

    /// The end of one submitted operation, if one has ended.
    fn poll_completion(&mut self) -> Option<Completion<Self::Error>>;

    /// Reads from `offset` of object `name` into `buf`; returns the bytes read, 0 at the end.
    ///
    /// # Errors
    /// [`Failure::NotFound`] for a missing object, or a read error.
    fn read_at(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error>;

    /// Calls `each` with the name of every object whose name starts with `prefix`, in
    /// lexicographic order.
    ///
    /// # Errors
    /// When the objects cannot be listed.
    fn list(&mut self, prefix: &str, each: &mut dyn FnMut(&str)) -> Result<(), Self::Error>;
}
