//! [`map_each`]: one job per input (a core, say), run on a bounded number of threads;
//! [`drop_off_thread`]: a large structure freed without holding up the caller;
//! [`Permits`]: at most so many threads in a stretch of work at once.

use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

/// How many threads the machine runs at once, asked once: the answer reads files (the cgroup's
/// CPU quota) each time, a tenth of a millisecond at a checkpoint's start.
pub(crate) fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// Drops `value` on a thread of its own, or here if no thread can be started.
///
/// Freeing a checkpoint's changed keys is one allocation and a reference count or two per key,
/// each a cache miss: ~0.5 ms per thousand keys, 0.4–1 s after every key of a 256 MiB state
/// changed, which the checkpoint's caller need not wait for.
pub(crate) fn drop_off_thread<T: Send + 'static>(value: T) {
    // On a failed spawn the closure, and `value` with it, is dropped here.
    let _ = std::thread::Builder::new()
        .name("lamina-drop".into())
        .spawn(move || drop(value));
}

/// Runs `job(i, input)` for each of `inputs` on up to as many threads as the machine runs at
/// once (the calling thread among them), and returns the results in input order: `None` for a
/// job that panicked (the others still run).
///
/// A set may have thousands of cores; a thread per core would exhaust a process's thread limit
/// (and a failed spawn panics) and hold every core's buffers at once. A spawn that fails only
/// leaves fewer threads: the calling thread always works.
pub(crate) fn map_each<I: Send, T: Send>(
    inputs: Vec<I>,
    job: &(dyn Fn(usize, I) -> T + Sync),
) -> Vec<Option<T>> {
    let count = inputs.len();
    let slots: Vec<Mutex<Option<I>>> = inputs.into_iter().map(|i| Mutex::new(Some(i))).collect();
    let results: Vec<Mutex<Option<T>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(i) else {
                return;
            };
            // No lock is held while a job runs, so none is ever poisoned.
            let input = slot.lock().ok().and_then(|mut s| s.take());
            if let Some(input) = input
                && let Ok(out) = catch_unwind(AssertUnwindSafe(|| job(i, input)))
                && let Some(Ok(mut result)) = results.get(i).map(Mutex::lock)
            {
                *result = Some(out);
            }
        }
    };
    let threads = cpus().min(count);
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map_while(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        work();
        for helper in helpers {
            // Jobs catch their own panics; joined here all the same, so none reaches the caller.
            let _ = helper.join();
        }
    });
    results
        .into_iter()
        .map(|r| r.into_inner().ok().flatten())
        .collect()
}

/// At most `n` holders at once: the threads of a pool that mostly wait on a device take one
/// for their CPU work only, so that work finishes in the order it started rather than all of it
/// late (16 threads encoding at once on 2 cores finish together, and the device idles until
/// then).
pub(crate) struct Permits {
    free: Mutex<usize>,
    returned: Condvar,
}

/// A permit held: given back when dropped.
pub(crate) struct Permit<'a>(&'a Permits);

impl Permits {
    /// `n` permits (at least one).
    pub(crate) fn new(n: usize) -> Self {
        Permits {
            free: Mutex::new(n.max(1)),
            returned: Condvar::new(),
        }
    }

    /// As many permits as the machine runs threads at once.
    pub(crate) fn per_cpu() -> Self {
        Self::new(cpus())
    }

    /// Waits for a permit and takes it.
    pub(crate) fn acquire(&self) -> Permit<'_> {
        // Nothing panics while the count is locked, so a poisoned lock holds a sound count.
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .returned
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.returned.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::{Permits, map_each};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn no_more_than_the_permits_hold_one_at_once() {
        let permits = Permits::new(3);
        let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        let _permit = permits.acquire();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        let most = most.load(Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} held permits at once");
    }

    #[test]
    fn a_pool_of_no_permits_still_has_one() {
        let permits = Permits::new(0);
        drop(permits.acquire());
        drop(permits.acquire());
    }

    #[test]
    fn results_come_back_in_input_order() {
        let out = map_each((0..100u64).collect(), &|i, x| (i as u64, x * 2));
        let expected: Vec<_> = (0..100u64).map(|x| Some((x, x * 2))).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn a_job_that_panics_is_a_missing_result_and_the_others_run() {
        let out = map_each((0..20u32).collect(), &|_, x| {
            assert!(x != 7, "job 7 fails");
            x
        });
        assert_eq!(out[7], None);
        assert_eq!(out.iter().filter(|r| r.is_some()).count(), 19);
    }

    #[test]
    fn no_inputs_no_results() {
        let out: Vec<Option<u8>> = map_each(Vec::<u8>::new(), &|_, x| x);
        assert!(out.is_empty());
    }
}
