//! The fsync of a segment through the ring: `IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC`
//! (`fdatasync`), alone or as the second half of a linked write→fsync pair.

use crate::error::Op;
use crate::write::{FileRef, MISSING, Step, step_of};
use io_uring::{opcode, squeue, types};
use rustix::io::Errno;

/// The fsync entry for `file`.
pub(crate) fn entry(file: FileRef) -> squeue::Entry {
    let flags = types::FsyncFlags::DATASYNC;
    match file {
        FileRef::Fd(fd) => opcode::Fsync::new(types::Fd(fd)).flags(flags).build(),
        FileRef::Fixed(slot) => opcode::Fsync::new(types::Fixed(slot)).flags(flags).build(),
    }
}

/// What an fsync's completion result means: done, again (`EAGAIN`, `EINTR`), or its error
/// (`-ECANCELED` too, and a result that never came).
pub(crate) fn outcome(res: Option<i32>) -> Result<Step, (Op, Errno)> {
    match step_of(res.unwrap_or(MISSING)) {
        Step::Failed(e) => Err((Op::Sync, e)),
        step => Ok(step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_results_are_done_retried_or_failed() {
        let neg = |e: Errno| Some(-e.raw_os_error());
        assert_eq!(outcome(Some(0)), Ok(Step::Done));
        assert_eq!(outcome(neg(Errno::INTR)), Ok(Step::Again));
        assert_eq!(outcome(neg(Errno::AGAIN)), Ok(Step::Again));
        assert_eq!(outcome(neg(Errno::IO)), Err((Op::Sync, Errno::IO)));
        assert_eq!(
            outcome(neg(Errno::CANCELED)),
            Err((Op::Sync, Errno::CANCELED))
        );
        assert_eq!(outcome(None), Err((Op::Sync, Errno::CANCELED)));
    }
}
