//! One write as the ring sees it: its owned bytes, how far the kernel got, and what a
//! completion result means for it (done, resubmit the rest, or failed).

use crate::buffer::Buffer;
use crate::error::Op;
use io_uring::{opcode, squeue, types};
use rustix::io::Errno;

/// The most bytes one write entry asks for (Linux writes at most this much per call anyway).
const MAX_PER_ENTRY: usize = 0x7fff_f000;

/// What a completion result means for an operation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// All of it is done.
    Done,
    /// Submit it again for what is left (a short write, `EAGAIN`, `EINTR`).
    Again,
    /// It failed with this error number.
    Failed(Errno),
}

/// What a completion result `res` that is not a byte count means.
pub(crate) fn step_of(res: i32) -> Step {
    if res >= 0 {
        return Step::Done;
    }
    match Errno::from_raw_os_error(-res) {
        Errno::AGAIN | Errno::INTR => Step::Again,
        errno => Step::Failed(errno),
    }
}

/// A result the kernel never gave: counted as cancelled, never as success.
pub(crate) const MISSING: i32 = -(libc::ECANCELED);

/// The bytes of one write, owned until the kernel has answered for them.
#[derive(Debug)]
pub(crate) struct Bytes {
    pub(crate) buffer: Buffer,
    /// The file offset of the buffer's first byte.
    pub(crate) start: u64,
    /// Bytes of the buffer to write.
    pub(crate) len: usize,
    /// Bytes the kernel has written so far.
    pub(crate) done: usize,
}

impl Bytes {
    /// Accounts for a write completion result `res`.
    pub(crate) fn advance(&mut self, res: i32) -> Step {
        if res < 0 {
            return step_of(res);
        }
        if res == 0 && self.done < self.len {
            // No progress and no error: a retry would spin.
            return Step::Failed(Errno::IO);
        }
        self.done = self.done.saturating_add(res as usize).min(self.len);
        if self.done == self.len {
            Step::Done
        } else {
            Step::Again
        }
    }

    /// What a write's completion (`written`), and with `linked` its fsync's (`synced`), add up
    /// to: done, again for the rest, or the failed operation and its error. A failed write is
    /// the pair's error whatever the fsync says (the kernel cancels it: `-ECANCELED`); a
    /// cancelled or failed fsync after a whole write is the fsync's error, never a success.
    pub(crate) fn outcome(
        &mut self,
        linked: bool,
        written: Option<i32>,
        synced: Option<i32>,
    ) -> Result<Step, (Op, Errno)> {
        match self.advance(written.unwrap_or(MISSING)) {
            Step::Failed(e) => Err((Op::Write, e)),
            // A short write breaks the link: the rest goes out with a new fsync.
            Step::Again => Ok(Step::Again),
            Step::Done if !linked => Ok(Step::Done),
            Step::Done => crate::fsync::outcome(synced),
        }
    }

    /// What is left to write: its position in the buffer, its file offset, its length (capped
    /// at what one entry may ask for).
    pub(crate) fn rest(&self) -> (usize, u64, u32) {
        let rest = self.len.saturating_sub(self.done);
        let len = rest.min(MAX_PER_ENTRY) as u32;
        (self.done, self.start + self.done as u64, len)
    }

    /// The write entry for what is left: from the registered buffer if it is one.
    pub(crate) fn entry(&self, fd: FileRef) -> squeue::Entry {
        let (at, offset, len) = self.rest();
        // Stays inside the allocation: `done <= len <= capacity`.
        let ptr = self.buffer.buf.as_ptr().wrapping_add(at);
        match (self.buffer.fixed, fd) {
            (Some(index), FileRef::Fd(fd)) => {
                opcode::WriteFixed::new(types::Fd(fd), ptr, len, index)
                    .offset(offset)
                    .build()
            }
            (Some(index), FileRef::Fixed(slot)) => {
                opcode::WriteFixed::new(types::Fixed(slot), ptr, len, index)
                    .offset(offset)
                    .build()
            }
            (None, FileRef::Fd(fd)) => opcode::Write::new(types::Fd(fd), ptr, len)
                .offset(offset)
                .build(),
            (None, FileRef::Fixed(slot)) => opcode::Write::new(types::Fixed(slot), ptr, len)
                .offset(offset)
                .build(),
        }
    }
}

/// How an entry names its file: a plain descriptor or a slot of the registered files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileRef {
    /// A file descriptor.
    Fd(std::os::fd::RawFd),
    /// A registered file's slot.
    Fixed(u32),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Pool;

    fn bytes(len: usize) -> Bytes {
        let buffer = Pool::new(64, 0, 0).unwrap().take(len).unwrap();
        Bytes {
            buffer,
            start: 4096,
            len,
            done: 0,
        }
    }

    fn neg(e: Errno) -> i32 {
        -e.raw_os_error()
    }

    #[test]
    fn a_short_write_is_resubmitted_for_the_rest() {
        let mut b = bytes(1000);
        assert_eq!(b.advance(300), Step::Again);
        assert_eq!(b.done, 300);
        // The next entry starts where the kernel stopped.
        assert_eq!(b.rest(), (300, 4396, 700));
        assert_eq!(b.advance(650), Step::Again);
        assert_eq!(b.advance(50), Step::Done);
        assert_eq!(b.done, 1000);
    }

    #[test]
    fn eagain_and_eintr_are_retried_and_other_errors_fail() {
        let mut b = bytes(10);
        assert_eq!(b.advance(neg(Errno::AGAIN)), Step::Again);
        assert_eq!(b.advance(neg(Errno::INTR)), Step::Again);
        assert_eq!(b.done, 0);
        assert_eq!(b.advance(neg(Errno::NOSPC)), Step::Failed(Errno::NOSPC));
        assert_eq!(b.advance(neg(Errno::IO)), Step::Failed(Errno::IO));
        assert_eq!(
            b.advance(neg(Errno::CANCELED)),
            Step::Failed(Errno::CANCELED)
        );
    }

    #[test]
    fn a_write_that_makes_no_progress_fails_instead_of_spinning() {
        let mut b = bytes(10);
        assert_eq!(b.advance(0), Step::Failed(Errno::IO));
    }

    #[test]
    fn a_failed_linked_write_is_the_write_error_whatever_the_fsync_says() {
        let cancelled = Some(neg(Errno::CANCELED));
        let mut b = bytes(100);
        assert_eq!(
            b.outcome(true, Some(neg(Errno::IO)), cancelled),
            Err((Op::Write, Errno::IO))
        );
        assert_eq!(
            b.outcome(true, Some(neg(Errno::NOSPC)), Some(0)),
            Err((Op::Write, Errno::NOSPC))
        );
    }

    #[test]
    fn a_cancelled_fsync_after_a_whole_write_is_never_a_success() {
        let mut b = bytes(100);
        assert_eq!(
            b.outcome(true, Some(100), Some(neg(Errno::CANCELED))),
            Err((Op::Sync, Errno::CANCELED))
        );
        let mut b = bytes(100);
        assert_eq!(
            b.outcome(true, Some(100), None),
            Err((Op::Sync, Errno::CANCELED))
        );
        let mut b = bytes(100);
        assert_eq!(
            b.outcome(true, None, Some(0)),
            Err((Op::Write, Errno::CANCELED))
        );
    }

    #[test]
    fn a_short_linked_write_goes_again_with_a_new_fsync() {
        let mut b = bytes(100);
        let cancelled = Some(neg(Errno::CANCELED));
        assert_eq!(b.outcome(true, Some(60), cancelled), Ok(Step::Again));
        assert_eq!(b.rest(), (60, 4156, 40));
        assert_eq!(b.outcome(true, Some(40), Some(0)), Ok(Step::Done));
        // An interrupted fsync after the whole write: the pair goes again, with nothing left
        // to write.
        let mut b = bytes(100);
        assert_eq!(
            b.outcome(true, Some(100), Some(neg(Errno::INTR))),
            Ok(Step::Again)
        );
        assert_eq!(b.rest(), (100, 4196, 0));
        assert_eq!(b.outcome(true, Some(0), Some(0)), Ok(Step::Done));
    }

    #[test]
    fn an_unlinked_write_ignores_the_fsync_it_does_not_have() {
        let mut b = bytes(100);
        assert_eq!(b.outcome(false, Some(100), None), Ok(Step::Done));
    }
}
