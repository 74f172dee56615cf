//! CPU time (user + system) of the whole process, from `getrusage(RUSAGE_SELF)`: it counts every
//! thread of the process, the committers of a shared log, a reference's flusher and the
//! kernel's io_uring workers alike. The variants of a group take turns, so the process's CPU
//! time between the start and the end of a turn is that variant's.

use std::time::Duration;

/// User + system CPU time the process has used so far.
pub(crate) fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage fills it (or fails and leaves the
    // zeros, which `assume_init` below reads as zero times).
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: zero-initialised above and filled by the kernel: every bit pattern is a valid
    // `rusage` (plain integers).
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
