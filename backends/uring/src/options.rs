//! [`Options`]: how a [`crate::UringStorage`] uses the ring.

/// How a [`crate::UringStorage`] works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Submission-queue entries of the ring, 2 to 4096 (the completion queue has twice as
    /// many). Writes, syncs and linked pairs beyond it wait in the backend until the kernel takes
    /// them.
    pub queue_depth: u32,
    /// Register segment files with the ring (`IORING_REGISTER_FILES`) and name them by slot.
    pub fixed_files: bool,
    /// Register `queue_depth` (at most 1024) write buffers of `buffer_size` bytes with the ring,
    /// allocated at open, and write them
    /// with `IORING_OP_WRITE_FIXED`. A write larger than `buffer_size`, or one issued while every
    /// registered buffer is in use, goes out from an unregistered buffer.
    pub fixed_buffers: bool,
    /// Bytes of each registered buffer.
    pub buffer_size: usize,
    /// Open segment files with `O_DIRECT`: writes bypass the page cache and go out as whole
    /// aligned blocks (see the crate documentation).
    pub direct: bool,
    /// Bytes of zeros written into a new segment before its header (0: none), as
    /// [`lamina_file::Options::prepare_size`].
    pub prepare_size: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue_depth: 32,
            fixed_files: false,
            fixed_buffers: false,
            buffer_size: 128 * 1024,
            direct: false,
            prepare_size: 0,
        }
    }
}

impl Options {
    /// The default options: depth 32, nothing registered, buffered I/O, no preparation.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// With `entries` submission-queue entries (at least 2: a linked pair).
    #[must_use]
    pub fn queue_depth(mut self, entries: u32) -> Self {
        self.queue_depth = entries;
        self
    }

    /// With segment files registered with the ring, or not.
    #[must_use]
    pub fn fixed_files(mut self, on: bool) -> Self {
        self.fixed_files = on;
        self
    }

    /// With registered write buffers, or not.
    #[must_use]
    pub fn fixed_buffers(mut self, on: bool) -> Self {
        self.fixed_buffers = on;
        self
    }

    /// With registered buffers of `bytes` each.
    #[must_use]
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// With `O_DIRECT`, or not.
    #[must_use]
    pub fn direct(mut self, on: bool) -> Self {
        self.direct = on;
        self
    }

    /// With `bytes` of zeros written into each new segment.
    #[must_use]
    pub fn prepare_size(mut self, bytes: u64) -> Self {
        self.prepare_size = bytes;
        self
    }
}
