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
