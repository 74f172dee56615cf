//! A counting global allocator, for the tests that prove a path never allocates.
//!
//! Only allocations made by a thread inside [`count_allocations`] count (a thread-local flag and
//! counter), so the test harness's threads, the other tests running at the same time and the
//! set-up before and the checks after do not. A test binary declares it as its allocator itself
//! (a global allocator is one per binary):
//!
//! ```
//! use lamina_tests::alloc::{Counting, count_allocations};
//!
//! #[global_allocator]
//! static GLOBAL: Counting = Counting;
//!
//! let (v, n) = count_allocations(|| vec![0u8; 64]);
//! assert_eq!((v.len(), n), (64, 1));
//! let (_, n) = count_allocations(|| 2 + 2);
//! assert_eq!(n, 0);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting the allocations of threads inside [`count_allocations`].
#[derive(Debug)]
pub struct Counting;

thread_local! {
    /// Whether this thread is measuring.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    /// This thread's allocations in its current (or last) measurement.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    /// The size of the first of them, to name it in a failure.
    static FIRST_SIZE: Cell<usize> = const { Cell::new(0) };
}

impl Counting {
    fn note(size: usize) {
        // `try_with`: never touch a thread-local that is being torn down.
        if MEASURING.try_with(Cell::get).unwrap_or(false) {
            let _ = ALLOCATIONS.try_with(|n| {
                if n.get() == 0 {
                    let _ = FIRST_SIZE.try_with(|f| f.set(size));
                }
                n.set(n.get() + 1);
            });
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are the caller's; the bookkeeping around it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` and returns its result with the number of allocations this thread made inside it.
/// Counts only in a binary whose global allocator is [`Counting`].
pub fn count_allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    FIRST_SIZE.with(|s| s.set(0));
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, ALLOCATIONS.with(Cell::get))
}

/// The size in bytes of the first allocation this thread's last [`count_allocations`] counted
/// (0 if it counted none).
pub fn first_counted_size() -> usize {
    FIRST_SIZE.with(Cell::get)
}
