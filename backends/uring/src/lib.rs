//! lamina-uring: the io_uring backend of lamina, one layer above `lamina-core`, beside
//! `lamina-file`. It implements the core's backend contract (`lamina_core::io`) on a Linux
//! directory with the same files, lock and create rule as the file backend, so a log written
//! by one is read by the other: [`UringStorage`] writes segments and makes them durable through
//! an io_uring, driven by the core's commit pipeline on the caller's thread: submission and
//! completion happen there, and the backend starts no thread (the kernel runs fsyncs, and writes
//! that would block, on its own io-wq workers). Nothing here knows the record format.
//!
//! # What goes through the ring
//! * Writes: `IORING_OP_WRITE` (`IORING_OP_WRITE_FIXED` from registered buffers), several in
//!   flight at once. The bytes are copied at `submit` into a buffer the backend owns, which
//!   goes back to its pool only once the kernel has answered for it. Short writes are
//!   resubmitted for the rest; `EAGAIN` and `EINTR` are retried; any other error is the
//!   write's completion error ([`UringError::Io`], naming the operation and the file).
//! * Syncs: `IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`. It covers the writes whose
//!   completions were reported before it was submitted, which is the core's rule.
//! * Buffered writes and syncs wait in the backend until the next poll or wait (see
//!   [Waiting](#waiting)); direct writes go to the ring as they come.
//! * Linked writes (`SegmentOp::Write { sync: true }`): the write and its fsync go out as one
//!   `IOSQE_IO_LINK` pair and complete as one operation. When the write fails, the kernel
//!   cancels the fsync (`-ECANCELED`) and the pair's error is the write's; it is never a
//!   successful sync. A short write breaks the link too: the rest goes out with a new fsync.
//!
//! # What does not
//! io_uring brings nothing to the rare operations around the writes, so they run at once, in
//! `submit`, with the file backend's code ([`lamina_file::FileStorage`] over the same
//! directory), and their completions are reported at the next poll: opening and creating the
//! directory, its lock, segment creation (zeros if asked, the header written and synced),
//! deletes, directory fsyncs, reads and listing (recovery reads sequentially, off the append
//! path). Reads always go through the file backend's buffered descriptor, also under
//! `O_DIRECT`.
//!
//! # Direct I/O
//! With [`Options::direct`], segment files are opened with `O_DIRECT` and writes go out as
//! whole blocks of the file system's direct-I/O alignment (`statx` `STATX_DIOALIGN`, else 4096
//! bytes) from buffers aligned to at least 4096 bytes. A write is composed as [the earlier bytes
//! of its first block][its data][zeros to the end of its last block]; the backend keeps each
//! segment's last partly written block for the next write, and reads it from disk when it does
//! not have it (the first write after a reopen). Two writes that share a block are never in
//! flight at once, since landing out of order the earlier one's zeros would overwrite the later
//! one's bytes: the later waits in the backend until the earlier completes. When only its first
//! block is shared, the rest of it goes out at once and that block alone waits; the write
//! completes when both parts have, and a linked one then gets its fsync (not a linked entry:
//! it must cover both parts). So a segment
//! written without preparation ends on a block boundary, with zeros after its last record,
//! where the file backend's ends at the last record; recovery reads both the same.
//!
//! # Waiting
//! [`UringStorage::wait`] (also the core's `SegmentStorage::wait_for_completion`) submits what
//! is queued and blocks in the kernel until a completion arrives, in one `io_uring_enter`, so a
//! driver need not spin on `poll_completion`. Dropping the storage waits for every operation the
//! kernel holds.
//!
//! The kernel never runs an `IORING_OP_FSYNC` in the submitting call: it hands it to an io-wq
//! worker thread, and so it does with a buffered write on a file system without non-blocking
//! buffered writes (ext4). A caller that goes on meanwhile (a log appending while its last batch
//! is synced) gains from that: a poll hands such operations to the ring. A caller that waits
//! gains nothing and pays two thread switches per operation (and the kernel starts workers for
//! each thread that submits, as the leaders of a shared log change): so the syncs and buffered
//! writes a wait finds not yet handed to the ring run on the waiting thread (`fdatasync`,
//! `pwrite`; a linked pair as the write, then its fsync only after a whole write), and end
//! exactly as they would in the ring, unless operations are in the ring already: then they join
//! them there. Either way no thread of the backend's own is involved.
//!
//! # When io_uring is refused
//! If the kernel refuses io_uring (too old, `kernel.io_uring_disabled`, a seccomp filter),
//! [`UringStorage::open`] fails with [`UringError::Unavailable`], whose message names the file
//! backend as the alternative.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod buffer;
mod direct;
mod error;
mod fsync;
mod options;
mod storage;
mod write;

pub use error::{Op, UringError, failure_of};
pub use options::Options;
pub use storage::UringStorage;
