//! Hang guards, for the tests whose point is that nothing waits forever: a bound on how long a
//! call may take before the test says so, not a speed check (the bounds are generous); and FIFOs,
//! the files that make a careless `open` or `read` wait forever.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// Runs `f` on another thread and returns what it returned, or `None` when it has not returned
/// within `cap` (the thread is left behind, still waiting).
pub fn within<T: Send + 'static>(
    cap: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (send, got) = mpsc::channel();
    thread::spawn(move || {
        let _ = send.send(f());
    });
    got.recv_timeout(cap).ok()
}

/// Runs `f` on this thread, aborting the test binary if it has not returned within `cap`: for a
/// call that borrows what another thread could not take, and whose hang would otherwise hang the
/// whole test run.
pub fn without_hanging<T>(cap: Duration, f: impl FnOnce() -> T) -> T {
    let (finished, watch) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = watch.recv_timeout(cap) {
            eprintln!("a thread was left waiting: the test hangs");
            std::process::abort();
        }
    });
    let out = f();
    drop(finished);
    watchdog.join().expect("watchdog");
    out
}

/// Makes a FIFO at `path` (with the `mkfifo` command: the std crates deny unsafe code).
pub fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_returns_what_a_quick_call_returned() {
        assert_eq!(within(Duration::from_secs(20), || 7), Some(7));
    }

    #[test]
    fn within_gives_up_on_a_call_that_does_not_return() {
        let (_keep, never) = mpsc::channel::<()>();
        let waited = within(Duration::from_millis(50), move || never.recv().is_ok());
        assert_eq!(waited, None);
    }

    #[test]
    fn without_hanging_returns_what_the_call_returned() {
        assert_eq!(without_hanging(Duration::from_secs(60), || "done"), "done");
    }
}
