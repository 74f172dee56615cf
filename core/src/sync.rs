//! The one door to shared-memory primitives: core's atomics and cells normally, loom's under
//! `cfg(loom)`.
//!
//! Lock-free code in this crate imports [`AtomicUsize`], [`Ordering`] and [`UnsafeCell`] from here,
//! never from `core` or `loom` directly, so the same source is model-checked by loom and compiled
//! for real without a change at the call sites (tokio's `loom` shim). Loom's `UnsafeCell` exposes
//! its contents only through `with` / `with_mut` closures, so that it can track every access; the
//! plain wrapper below has the same shape and compiles to a bare pointer.
//!
//! Loom's types cannot be built in a `const` context, so a constructor that uses them is `const`
//! only under `cfg(not(loom))`.
//!
//! [`ByteCells`] (for `changelog::ByteRing`) is the one place here with `unsafe`: raw-pointer
//! copies into and views of disjoint byte ranges of one array.
#![allow(unsafe_code)]

#[cfg(loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::atomic::{AtomicUsize, Ordering},
};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};

/// `core::cell::UnsafeCell` behind loom's closure-based API.
///
/// Handing out a raw pointer is safe; what the caller does with it is not, and each such use is an
/// `unsafe` block with its own `SAFETY:` comment at the call site.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `data`.
    #[inline]
    pub(crate) const fn new(data: T) -> Self {
        Self(core::cell::UnsafeCell::new(data))
    }

    /// Calls `f` with a pointer for reading the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with a pointer for writing the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// A fixed array of `N` bytes that two threads write and read in disjoint ranges, for
/// `changelog::ByteRing`.
///
/// The caller promises, per call, that no other thread accesses the same bytes at the same time
/// (the ring's indices hand each range from one side to the other with a Release/Acquire pair).
/// Normally one `core::cell::UnsafeCell<[u8; N]>` accessed through raw pointers, never through a
/// reference to the whole array, so disjoint ranges never alias. Under loom, one loom cell per
/// byte, so that loom checks the hand-over of every byte.
#[cfg(not(loom))]
pub(crate) struct ByteCells<const N: usize>(core::cell::UnsafeCell<[u8; N]>);

#[cfg(not(loom))]
impl<const N: usize> ByteCells<N> {
    /// `N` zero bytes.
    pub(crate) const fn new() -> Self {
        Self(core::cell::UnsafeCell::new([0; N]))
    }

    /// Copies `src` to the bytes from `at` on; `false` (and nothing written) if they do not fit.
    ///
    /// # Safety
    /// No other thread reads or writes `at..at + src.len()` during the call.
    #[inline]
    pub(crate) unsafe fn write(&self, at: usize, src: &[u8]) -> bool {
        if at.checked_add(src.len()).is_none_or(|end| end > N) {
            return false;
        }
        // SAFETY: `at + src.len() <= N`, so the destination lies inside the array; the caller
        // guarantees that no one else touches it meanwhile, and `src` cannot overlap it (the
        // array is reached only through this raw pointer, never lent out mutably).
        unsafe {
            core::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.0.get().cast::<u8>().add(at),
                src.len(),
            );
        }
        true
    }

    /// The bytes `at..at + len`, or `None` if they are out of range.
    ///
    /// # Safety
    /// No thread writes `at..at + len` while the returned slice is alive.
    #[inline]
    pub(crate) unsafe fn slice(&self, at: usize, len: usize) -> Option<&[u8]> {
        if at.checked_add(len).is_none_or(|end| end > N) {
            return None;
        }
        // SAFETY: the range lies inside the array (checked above) and the caller guarantees that
        // nobody writes it while the slice lives; the pointer comes from `UnsafeCell::get`, so
        // a shared slice of one range does not claim the rest of the array.
        Some(unsafe { core::slice::from_raw_parts(self.0.get().cast::<u8>().add(at), len) })
    }
}

/// Loom's version: one tracked cell per byte (see the non-loom version for the contract).
#[cfg(loom)]
pub(crate) struct ByteCells<const N: usize>([UnsafeCell<u8>; N]);

#[cfg(loom)]
impl<const N: usize> ByteCells<N> {
    /// `N` zero bytes.
    pub(crate) fn new() -> Self {
        Self(core::array::from_fn(|_| UnsafeCell::new(0)))
    }

    /// Copies `src` to the bytes from `at` on; `false` (and nothing written) if they do not fit.
    ///
    /// # Safety
    /// No other thread reads or writes `at..at + src.len()` during the call.
    pub(crate) unsafe fn write(&self, at: usize, src: &[u8]) -> bool {
        let Some(cells) = at
            .checked_add(src.len())
            .and_then(|end| self.0.get(at..end))
        else {
            return false;
        };
        for (cell, &byte) in cells.iter().zip(src) {
            // SAFETY: the caller guarantees exclusive access to this byte; loom checks it.
            cell.with_mut(|ptr| unsafe { ptr.write(byte) });
        }
        true
    }

    /// Copies the bytes `at..at + out.len()` into `out`; `false` if they are out of range.
    ///
    /// # Safety
    /// No thread writes `at..at + out.len()` during the call.
    pub(crate) unsafe fn read(&self, at: usize, out: &mut [u8]) -> bool {
        let Some(cells) = at
            .checked_add(out.len())
            .and_then(|end| self.0.get(at..end))
        else {
            return false;
        };
        for (cell, byte) in cells.iter().zip(out) {
            // SAFETY: the caller guarantees that nobody writes this byte now; loom checks it.
            *byte = cell.with(|ptr| unsafe { ptr.read() });
        }
        true
    }
}
