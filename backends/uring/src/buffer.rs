//! Write buffers the backend owns: the bytes of a write are copied in at `submit` and stay put
//! until the kernel has answered for them (the core lends its bytes only for the call).

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Unregistered buffers kept for reuse at most (more are freed when they come back).
const LOOSE_KEPT: usize = 64;
/// Unregistered buffers made alongside one that had to be made: twice the writes a log keeps in
/// flight by default.
const SPARES: usize = 7;

/// A zero-initialised heap buffer with a fixed address and alignment.
#[derive(Debug)]
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer owns its allocation alone (no aliasing pointer is kept elsewhere while it
// is reachable from safe code), so moving it to another thread is moving a `Box<[u8]>`.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes aligned to `align` (a power of two); `None` if that cannot be allocated.
    pub(crate) fn new(len: usize, align: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        NonNull::new(ptr).map(|ptr| AlignedBuf { ptr, layout })
    }

    /// Its capacity in bytes.
    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    /// Its bytes.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised (zeroed at allocation) bytes that
        // this value owns; `&mut self` makes the slice the only access while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// Its bytes, read-only.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`, shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The address the kernel reads from (stable while the buffer lives).
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated with exactly `layout` and is freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A buffer lent to one write: registered (`fixed` is its index in the ring's table) or not.
#[derive(Debug)]
pub(crate) struct Buffer {
    pub(crate) buf: AlignedBuf,
    pub(crate) fixed: Option<u16>,
}

/// The write buffers: the registered ones by index, and unregistered ones kept for reuse.
#[derive(Debug)]
pub(crate) struct Pool {
    align: usize,
    /// Registered buffers by index; `None` while one is lent out.
    fixed: Vec<Option<AlignedBuf>>,
    fixed_size: usize,
    loose: Vec<AlignedBuf>,
}

impl Pool {
    /// A pool of buffers aligned to `align`, with `fixed_count` buffers of `fixed_size` bytes to
    /// register (`None` if they cannot be allocated).
    pub(crate) fn new(align: usize, fixed_count: usize, fixed_size: usize) -> Option<Self> {
        let fixed = (0..fixed_count)
            .map(|_| AlignedBuf::new(fixed_size, align).map(Some))
            .collect::<Option<Vec<_>>>()?;
        Some(Pool {
            align,
            fixed,
            fixed_size,
            loose: Vec::with_capacity(LOOSE_KEPT),
        })
    }

    /// The `iovec`s of the registered buffers, in index order (call before lending any).
    pub(crate) fn iovecs(&mut self) -> Vec<libc::iovec> {
        self.fixed
            .iter_mut()
            .flatten()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_slice().as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect()
    }

    /// A buffer of at least `len` bytes: a free registered one if it fits, else an unregistered
    /// one (`None` if it cannot be allocated). Its bytes are stale: the caller overwrites them.
    pub(crate) fn take(&mut self, len: usize) -> Option<Buffer> {
        if len <= self.fixed_size
            && let Some((i, slot)) = self.fixed.iter_mut().enumerate().find(|(_, s)| s.is_some())
            && let Ok(index) = u16::try_from(i)
            && let Some(buf) = slot.take()
        {
            return Some(Buffer {
                buf,
                fixed: Some(index),
            });
        }
        // The smallest that fits: a small write taking a large buffer would leave the next large
        // one to allocate.
        let fitting = self
            .loose
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len);
        if let Some((i, _)) = fitting.min_by_key(|(_, b)| b.len()) {
            let buf = self.loose.swap_remove(i);
            return Some(Buffer { buf, fixed: None });
        }
        // Round up so that buffers are reused across writes of slightly different sizes.
        let size = len.max(4096).checked_next_power_of_two()?;
        // With spares of the size: a log keeps several writes in flight, and without them the
        // first time more are in flight than ever before (any time, on a loaded machine) would
        // allocate again, long after the log has settled.
        for _ in 0..SPARES {
            match AlignedBuf::new(size, self.align) {
                Some(spare) if self.loose.len() < LOOSE_KEPT => self.loose.push(spare),
                _ => break,
            }
        }
        AlignedBuf::new(size, self.align).map(|buf| Buffer { buf, fixed: None })
    }

    /// Takes back a buffer whose operation the kernel has answered for.
    pub(crate) fn give(&mut self, buffer: Buffer) {
        match buffer
            .fixed
            .and_then(|i| self.fixed.get_mut(usize::from(i)))
        {
            Some(slot) => *slot = Some(buffer.buf),
            None if self.loose.len() < LOOSE_KEPT => self.loose.push(buffer.buf),
            None => {}
        }
    }

    /// Registered buffers not lent out.
    #[cfg(test)]
    pub(crate) fn fixed_free(&self) -> usize {
        self.fixed.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_registered_ones_come_back_to_their_slot() {
        let mut pool = Pool::new(4096, 2, 8192).unwrap();
        assert_eq!(pool.iovecs().len(), 2);
        let a = pool.take(100).unwrap();
        let b = pool.take(8192).unwrap();
        let c = pool.take(100).unwrap();
        assert_eq!((a.fixed, b.fixed, c.fixed), (Some(0), Some(1), None));
        for x in [&a, &b, &c] {
            assert_eq!(x.buf.as_ptr() as usize % 4096, 0);
        }
        let big = pool.take(10_000).unwrap();
        assert_eq!(big.fixed, None, "larger than a registered buffer");
        assert!(big.buf.len() >= 10_000);
        assert_eq!(pool.fixed_free(), 0);
        pool.give(b);
        assert_eq!(pool.fixed_free(), 1);
        assert_eq!(pool.take(10).unwrap().fixed, Some(1));
        pool.give(a);
        pool.give(c);
        pool.give(big);
        // An unregistered buffer is reused when it is large enough.
        let again = pool.take(9_000).unwrap();
        assert!(again.buf.len() >= 10_000);
    }

    #[test]
    fn the_first_buffer_of_a_size_comes_with_spares_and_the_kept_list_never_grows() {
        let mut pool = Pool::new(4096, 0, 0).unwrap();
        let capacity = pool.loose.capacity();
        assert!(capacity >= LOOSE_KEPT);
        let first = pool.take(5000).unwrap();
        assert_eq!(pool.loose.len(), SPARES);
        // As many more writes in flight as there are spares: none is made anew.
        let more: Vec<_> = (0..SPARES).map(|_| pool.take(6000).unwrap()).collect();
        assert!(pool.loose.is_empty());
        for b in more.into_iter().chain([first]) {
            assert!(b.buf.len() >= 6000);
            pool.give(b);
        }
        assert_eq!(pool.loose.len(), SPARES + 1);
        // Buffers beyond those kept are freed, and the list keeps its memory.
        let many: Vec<_> = (0..LOOSE_KEPT + 20)
            .map(|_| pool.take(4096).unwrap())
            .collect();
        for b in many {
            pool.give(b);
        }
        assert_eq!(pool.loose.len(), LOOSE_KEPT);
        assert_eq!(pool.loose.capacity(), capacity);
    }
}
