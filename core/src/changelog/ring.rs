//! [`ByteRing`]: a bounded, allocation-free, lock-free SPSC ring of variable-length changelog
//! entries, each stored as one contiguous frame.
//!
//! # Why a byte ring
//!
//! A changelog entry is a key and a value of any length. The two ways to queue such entries
//! without allocating are fixed slots plus a separate arena for the bytes, or one ring of bytes
//! holding framed entries. The byte ring wins here: one buffer and two indices (an arena needs its
//! own head and tail, kept in step with the slots), no slot count to tune against the byte size,
//! a slot never wasted on a small entry, and each entry lies contiguous, already in the encoding
//! a WAL record's payload holds (see [`Entry`]), so the drainer appends the frame's bytes as they
//! are: no copy, no re-encoding. Its cost: an entry's frame may not straddle the end of the
//! buffer, so the producer skips the tail end when a frame does not fit there, and an entry is
//! limited to half the ring (see [`ByteRing::MAX_ENTRY_LEN`]).
//!
//! # Frames
//!
//! A frame is `[len: u32 LE][entry: len bytes][0 to 3 padding bytes]`, its total length a
//! multiple of 4. A frame never wraps: when the next frame does not fit before the end of the
//! buffer, the producer writes the skip marker (`len = u32::MAX`) where the frame would have
//! started and puts the frame at offset 0. `N` is a multiple of 8 and frames are multiples of 4,
//! so at least 4 bytes remain wherever a frame can end, and the marker always fits.
//!
//! # Progress
//!
//! A frame is at most `N / 2` bytes, so in an empty ring it always fits: before the end of the
//! buffer, or else at offset 0, whose `N - p < frame` skipped bytes plus the frame come to less
//! than `N` exactly because `p > N / 2`. A full ring is back-pressure ([`PushError::Full`]); once
//! the consumer catches up the same push succeeds.
//!
//! # Memory orderings
//!
//! The same two pairs as `spsc`: the producer writes a frame (and any skip marker) then stores
//! `tail` with `Release`, the consumer loads `tail` with `Acquire` before reading; the consumer
//! is done with a frame's bytes before it stores `head` with `Release`, the producer loads `head`
//! with `Acquire` before overwriting them. `head` and `tail` count bytes modulo `2N` (as `spsc`
//! counts slots), so `head == tail` is empty and a distance of `N` is full; each side caches the
//! other's index, refreshing it only when it looks full or empty.
//!
//! # Releasing in runs
//!
//! The consumer may hand frames back one by one ([`Frame::release`]: one store of `head` each)
//! or in runs ([`Frame::release_later`], then one [`Consumer::hand_back`]). A run costs one
//! store, and a producer that found the ring full sees the whole run's room at its next load of
//! `head` instead of one frame's, so it does not reload `head` (a cache line the consumer keeps
//! writing) on every push. Deferring the store only delays the hand-over: every read of the
//! run's bytes comes before the one `Release` store in program order, so the pairing above
//! still orders them before the producer's reuse.
#![allow(unsafe_code)]

use core::fmt;

use super::entry::Entry;
use crate::sync::{AtomicUsize, ByteCells, Ordering};

/// A frame's length prefix.
const LEN_PREFIX: usize = 4;
/// The length prefix that says "nothing more before the end of the buffer: go to offset 0".
const SKIP: u32 = u32::MAX;

/// Keeps `head` and `tail` on separate cache lines (see `spsc`).
#[repr(align(128))]
struct CachePadded<T>(T);

/// Why [`Producer::push`] did not queue an entry. The entry was only borrowed: it stays with the
/// caller, who applies nothing and retries or sheds load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PushError {
    /// Back-pressure: the ring has no room for the entry now. The consumer frees room as it
    /// drains; the same push then succeeds.
    Full {
        /// The bytes the entry's frame needs.
        needed: usize,
        /// The bytes free now (some may sit at the end of the buffer, too short for the frame).
        free: usize,
    },
    /// The entry can never fit: its encoding is over [`ByteRing::MAX_ENTRY_LEN`] (or its key is
    /// over `u32::MAX` bytes, `len` is then `None`).
    TooLarge {
        /// The encoded length, if it could be computed.
        len: Option<usize>,
        /// The largest encoded entry this ring takes.
        max: usize,
    },
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PushError::Full { needed, free } => write!(
                f,
                "changelog ring full: the entry needs {needed} bytes, {free} are free"
            ),
            PushError::TooLarge {
                len: Some(len),
                max,
            } => write!(
                f,
                "changelog entry of {len} bytes is over this ring's limit of {max} bytes"
            ),
            PushError::TooLarge { len: None, max } => write!(
                f,
                "changelog entry too large to encode (this ring's limit is {max} bytes)"
            ),
        }
    }
}

impl core::error::Error for PushError {}

/// A bounded SPSC ring of `N` bytes holding framed changelog entries.
///
/// Build it with [`ByteRing::new`] (`const` except under loom) and [`split`](ByteRing::split) it
/// into a [`Producer`] (Ring 0: pushes, never blocks, never drops) and a [`Consumer`] (Ring 1:
/// reads each frame in place as borrowed bytes, then releases it). `N` is a multiple of 8, at
/// least 40 (so that a barrier fits); other values fail to compile:
///
/// ```compile_fail
/// let ring: lamina_core::changelog::ByteRing<36> = lamina_core::changelog::ByteRing::new();
/// ```
pub struct ByteRing<const N: usize> {
    /// Bytes consumed so far, modulo `2N`. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Bytes produced so far, modulo `2N`. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// The frames; the bytes at positions `head..tail` (mod `N`) are the producer's handed-over
    /// frames, the rest are the producer's to write.
    buf: ByteCells<N>,
}

impl<const N: usize> ByteRing<N> {
    /// Rejects capacities that break the framing arithmetic, at compile time. `N >= 40` lets a
    /// barrier (13 bytes) fit; `N <= 2^30` keeps frame lengths below the `u32` skip marker, and
    /// `N <= usize::MAX / 4` keeps index sums (below `3N`) from overflowing.
    const VALID_CAPACITY: () = assert!(
        N >= 40 && N.is_multiple_of(8) && N <= (1 << 30) && N <= usize::MAX / 4,
        "ByteRing capacity N must be a multiple of 8 in 40..=2^30"
    );

    /// The largest encoded entry the ring takes: a frame (prefix, entry, padding) is at most
    /// half the ring, so that it always fits once the ring is empty.
    pub const MAX_ENTRY_LEN: usize = N / 2 - LEN_PREFIX;

    /// An empty ring.
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new() -> Self {
        let () = Self::VALID_CAPACITY;
        Self {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            buf: ByteCells::new(),
        }
    }

    /// An empty ring (not `const` under loom).
    #[cfg(loom)]
    #[must_use]
    pub fn new() -> Self {
        let () = Self::VALID_CAPACITY;
        Self {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            buf: ByteCells::new(),
        }
    }

    /// The ring's size in bytes: `N`.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Splits the ring into its producer and consumer halves; frames pushed by earlier halves
    /// are still there, in order.
    #[must_use]
    pub fn split(&mut self) -> (Producer<'_, N>, Consumer<'_, N>) {
        let ring: &Self = self;
        // Relaxed: `&mut self` proves no half is alive (see `spsc::Queue::split`).
        let head = ring.head.0.load(Ordering::Relaxed);
        let tail = ring.tail.0.load(Ordering::Relaxed);
        (
            Producer {
                ring,
                tail,
                cached_head: head,
            },
            Consumer {
                ring,
                head,
                published: head,
                cached_tail: tail,
            },
        )
    }
}

impl<const N: usize> Default for ByteRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for ByteRing<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = distance::<N>(
            self.head.0.load(Ordering::Relaxed),
            self.tail.0.load(Ordering::Relaxed),
        );
        f.debug_struct("ByteRing")
            .field("used", &used)
            .field("capacity", &N)
            .finish_non_exhaustive()
    }
}

/// Bytes from index `head` to index `tail` (both in `0..2N`).
const fn distance<const N: usize>(head: usize, tail: usize) -> usize {
    if tail >= head {
        tail - head
    } else {
        tail + 2 * N - head
    }
}

/// Index `index` (in `0..2N`) moved `n <= N` bytes forward.
const fn forward<const N: usize>(index: usize, n: usize) -> usize {
    let sum = index + n;
    if sum >= 2 * N { sum - 2 * N } else { sum }
}

/// The buffer position of index `index` (in `0..2N`).
const fn position<const N: usize>(index: usize) -> usize {
    if index >= N { index - N } else { index }
}

/// The frame length for an entry of `len` encoded bytes: prefix plus entry, rounded up to 4.
const fn frame_len(len: usize) -> usize {
    (LEN_PREFIX + len + 3) & !3
}

/// The pushing half of a [`ByteRing`] (Ring 0); one per [`ByteRing::split`].
pub struct Producer<'a, const N: usize> {
    ring: &'a ByteRing<N>,
    /// The producer's own index, the value it last stored to `ring.tail`.
    tail: usize,
    /// A past value of `head`: it undercounts the free bytes, so it is safe to trust.
    cached_head: usize,
}

// SAFETY: the producer only writes bytes outside `head..tail` and hands them over with its
// Release store of `tail`; the bytes are plain `u8`, so sending the half to another thread
// moves nothing that is not `Send`.
unsafe impl<const N: usize> Send for Producer<'_, N> {}

impl<const N: usize> Producer<'_, N> {
    /// Queues `entry` as one frame, or says why not. Never blocks; on `Err` nothing was queued
    /// and the entry (borrowed) is still the caller's.
    ///
    /// # Errors
    /// [`PushError::Full`] when there is no room now (back-pressure), [`PushError::TooLarge`]
    /// when there never will be.
    pub fn push(&mut self, entry: &Entry<'_>) -> Result<(), PushError> {
        let too_large = |len| PushError::TooLarge {
            len,
            max: ByteRing::<N>::MAX_ENTRY_LEN,
        };
        let len = entry.encoded_len().ok_or(too_large(None))?;
        if len > ByteRing::<N>::MAX_ENTRY_LEN {
            return Err(too_large(Some(len)));
        }
        let frame = frame_len(len);
        let tail = self.tail;
        let at = position::<N>(tail);
        // A frame that does not fit before the end starts at 0, after a skip of the rest.
        let skip = if N - at >= frame { 0 } else { N - at };
        let needed = skip + frame;
        if N - distance::<N>(self.cached_head, tail) < needed {
            // Acquire: pairs with the consumer's Release store of `head`, so its reads of the
            // bytes we are about to reuse are over before we overwrite them.
            self.cached_head = self.ring.head.0.load(Ordering::Acquire);
            let free = N - distance::<N>(self.cached_head, tail);
            if free < needed {
                return Err(PushError::Full { needed, free });
            }
        }
        let buf = &self.ring.buf;
        let start = if skip > 0 {
            // SAFETY: `at..at + 4` lies in the `needed` free bytes after `tail`, which the
            // consumer does not read until the Release store of `tail` below, and whose last
            // reads the Acquire load of `head` ordered before this write; one producer only.
            let _ = unsafe { buf.write(at, &SKIP.to_le_bytes()) };
            0
        } else {
            at
        };
        // `len <= N / 2`, which is below `u32::MAX` by `VALID_CAPACITY`.
        let prefix = u32::try_from(len).unwrap_or(SKIP).to_le_bytes();
        let mut offset = start;
        let mut put = |bytes: &[u8]| {
            // SAFETY: `start..start + frame` lies in the free bytes claimed above (same argument
            // as the skip marker); `write` checks the range against the buffer.
            let _ = unsafe { buf.write(offset, bytes) };
            offset += bytes.len();
        };
        put(&prefix);
        entry.emit_pieces(&mut put);
        self.tail = forward::<N>(tail, needed);
        // Release: pairs with the consumer's Acquire load of `tail`, publishing the frame.
        self.ring.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Bytes in use (frames, padding and skipped ends). The consumer may release concurrently,
    /// so this is an upper bound by the time it returns.
    #[must_use]
    pub fn used(&self) -> usize {
        // Relaxed: a snapshot; `push` does its own Acquire before reusing bytes.
        distance::<N>(self.ring.head.0.load(Ordering::Relaxed), self.tail)
    }

    /// Whether the consumer has released every frame pushed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.used() == 0
    }

    /// The ring's size in bytes: `N`.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize> fmt::Debug for Producer<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("used", &self.used())
            .field("capacity", &N)
            .finish_non_exhaustive()
    }
}

/// The draining half of a [`ByteRing`] (Ring 1); one per [`ByteRing::split`]. Dropping it hands
/// back the frames released with [`Frame::release_later`] (see [`Consumer::hand_back`]).
pub struct Consumer<'a, const N: usize> {
    ring: &'a ByteRing<N>,
    /// The consumer's own index: the end of the frames it is done with.
    head: usize,
    /// The value it last stored to `ring.head`: `published..head` are the bytes released but
    /// not handed back yet.
    published: usize,
    /// A past value of `tail`: it undercounts the frames, so it is safe to trust.
    cached_tail: usize,
}

// SAFETY: the consumer only reads bytes inside `head..tail`, handed over by the producer's
// Release store of `tail`, and gives them back with its own Release store of `head`; the bytes
// are plain `u8`.
unsafe impl<const N: usize> Send for Consumer<'_, N> {}

impl<'a, const N: usize> Consumer<'a, N> {
    /// The oldest frame, read in place, or `None` if the ring is empty. The frame stays in the
    /// ring until [`Frame::release`]; dropping the [`Frame`] without releasing it leaves it
    /// there, to be read again.
    pub fn peek(&mut self) -> Option<Frame<'_, 'a, N>> {
        loop {
            let head = self.head;
            if head == self.cached_tail {
                // Acquire: pairs with the producer's Release store of `tail`, so the frame's
                // bytes are written before we read them.
                self.cached_tail = self.ring.tail.0.load(Ordering::Acquire);
                if head == self.cached_tail {
                    return None;
                }
            }
            let ring = self.ring;
            let at = position::<N>(head);
            let mut prefix = [0u8; LEN_PREFIX];
            // SAFETY: `at..at + 4` lies in `head..tail` (a frame or skip marker starts at every
            // frame boundary and is at least 4 bytes), written before the producer's Release
            // store that the Acquire above saw, and not rewritten until we move `head` past it.
            if !unsafe { read(&ring.buf, at, &mut prefix) } {
                return None;
            }
            let len = u32::from_le_bytes(prefix);
            // Every value of `tail` is a frame boundary, so a marker or frame starting at `head`
            // lies whole in `head..cached_tail`. A length saying otherwise (damaged memory) is
            // refused rather than trusted: reading past `cached_tail` would race the producer,
            // and moving `head` past it would corrupt the indices or loop forever.
            let published = distance::<N>(head, self.cached_tail);
            if len == SKIP {
                if N - at > published {
                    return None;
                }
                self.advance(N - at);
                continue;
            }
            let len = usize::try_from(len).ok()?;
            if len > ByteRing::<N>::MAX_ENTRY_LEN || frame_len(len) > published {
                return None;
            }
            let frame = frame_len(len);
            let bytes = FrameBytes::load(&ring.buf, at + LEN_PREFIX, len)?;
            return Some(Frame {
                consumer: self,
                bytes,
                frame,
            });
        }
    }

    /// Moves `head` past `n` bytes, which are the consumer's no more; they go back to the
    /// producer at the next [`Self::hand_back`].
    fn advance(&mut self, n: usize) {
        self.head = forward::<N>(self.head, n);
    }

    /// Hands the frames released so far back to the producer (those of
    /// [`Frame::release_later`], and skipped buffer ends): one store, nothing if there are
    /// none.
    pub fn hand_back(&mut self) {
        if self.published != self.head {
            self.published = self.head;
            // Release: pairs with the producer's Acquire load of `head`, so our reads of these
            // bytes (all before this store in program order) are over before it overwrites them.
            self.ring.head.0.store(self.head, Ordering::Release);
        }
    }

    /// Bytes released but not handed back yet ([`Frame::release_later`]): the producer cannot
    /// reuse them until [`Self::hand_back`].
    #[must_use]
    pub fn unhanded(&self) -> usize {
        distance::<N>(self.published, self.head)
    }

    /// Bytes in use; the producer may push concurrently, so this is a lower bound by the time
    /// it returns.
    #[must_use]
    pub fn used(&self) -> usize {
        // Relaxed: a snapshot; `peek` does its own Acquire before reading bytes.
        distance::<N>(self.head, self.ring.tail.0.load(Ordering::Relaxed))
    }

    /// The ring's size in bytes: `N`.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize> Drop for Consumer<'_, N> {
    /// Hands back the released frames: a later [`ByteRing::split`] must not read them again.
    fn drop(&mut self) {
        self.hand_back();
    }
}

impl<const N: usize> fmt::Debug for Consumer<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("used", &self.used())
            .field("capacity", &N)
            .finish_non_exhaustive()
    }
}

/// Reads `out.len()` bytes from `at` into `out`.
///
/// # Safety
/// As `ByteCells::slice` / `ByteCells::read`: nobody writes those bytes meanwhile.
#[cfg(not(loom))]
unsafe fn read<const N: usize>(buf: &ByteCells<N>, at: usize, out: &mut [u8]) -> bool {
    // SAFETY: passed on from the caller.
    match unsafe { buf.slice(at, out.len()) } {
        Some(bytes) => {
            out.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// Reads `out.len()` bytes from `at` into `out` (loom: byte by byte, each access checked).
///
/// # Safety
/// As `ByteCells::read`: nobody writes those bytes meanwhile.
#[cfg(loom)]
unsafe fn read<const N: usize>(buf: &ByteCells<N>, at: usize, out: &mut [u8]) -> bool {
    // SAFETY: passed on from the caller.
    unsafe { buf.read(at, out) }
}

/// Where a frame's entry bytes are: normally the ring itself plus a range, read in place by
/// [`Frame::bytes`]. No slice is kept: a `&[u8]` held in the frame would still be alive (as a
/// moved argument) inside [`Frame::release`] after `head` is stored, when the producer may
/// already overwrite its bytes; the borrow checker sees no fault in that, Miri's aliasing model
/// does.
#[cfg(not(loom))]
struct FrameBytes<'c, const N: usize> {
    buf: &'c ByteCells<N>,
    at: usize,
    len: usize,
}

#[cfg(not(loom))]
impl<'c, const N: usize> FrameBytes<'c, N> {
    fn load(buf: &'c ByteCells<N>, at: usize, len: usize) -> Option<Self> {
        (at.checked_add(len)? <= N).then_some(FrameBytes { buf, at, len })
    }

    fn get(&self) -> &[u8] {
        // SAFETY: the frame lies in `head..tail`, handed over by the producer's Release store of
        // `tail` (seen by the Acquire in `peek`); the producer does not rewrite it until `head`
        // moves past it, which takes `Frame::release(self)` and so ends every borrow of `self`,
        // and with it the returned slice, first.
        unsafe { self.buf.slice(self.at, self.len) }.unwrap_or(&[])
    }
}

/// A frame's entry bytes under loom: a copy, taken while the frame is the consumer's (loom's
/// cells cannot be lent out as one slice), so the hand-over is still checked byte by byte.
/// Loom models keep entries within 64 bytes.
#[cfg(loom)]
struct FrameBytes<'c, const N: usize> {
    copy: [u8; 64],
    len: usize,
    _buf: core::marker::PhantomData<&'c ByteCells<N>>,
}

#[cfg(loom)]
impl<'c, const N: usize> FrameBytes<'c, N> {
    fn load(buf: &'c ByteCells<N>, at: usize, len: usize) -> Option<Self> {
        let mut copy = [0u8; 64];
        let out = copy.get_mut(..len)?;
        // SAFETY: as in the non-loom `get`: the frame is the consumer's until it is released.
        if !unsafe { buf.read(at, out) } {
            return None;
        }
        Some(FrameBytes {
            copy,
            len,
            _buf: core::marker::PhantomData,
        })
    }

    fn get(&self) -> &[u8] {
        self.copy.get(..self.len).unwrap_or(&[])
    }
}

/// The oldest frame of a [`Consumer`], read in place. It borrows the consumer: release it (or
/// drop it, which leaves it in the ring) before reading the next.
pub struct Frame<'c, 'a, const N: usize> {
    consumer: &'c mut Consumer<'a, N>,
    bytes: FrameBytes<'c, N>,
    /// The frame's whole length in the ring.
    frame: usize,
}

impl<const N: usize> Frame<'_, '_, N> {
    /// The entry's encoding: what a WAL record's payload holds.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get()
    }

    /// The entry, parsed from [`Self::bytes`]. The producer wrote it, so this fails only if the
    /// ring's memory was damaged; it is checked all the same.
    ///
    /// # Errors
    /// As [`Entry::parse`].
    pub fn entry(&self) -> Result<Entry<'_>, super::EntryError> {
        Entry::parse(self.bytes())
    }

    /// Removes the frame from the ring, handing its bytes (and those of frames released
    /// earlier with [`Self::release_later`]) back to the producer at once.
    pub fn release(self) {
        let frame = self.frame;
        self.consumer.advance(frame);
        self.consumer.hand_back();
    }

    /// Removes the frame from the ring: the next [`Consumer::peek`] reads the one after it. Its
    /// bytes go back to the producer at the consumer's next [`Consumer::hand_back`] (or
    /// [`Self::release`], or when the consumer is dropped): releasing a run of frames this way
    /// and handing them back once costs one store of the shared index instead of one each (see
    /// the module docs). Until then the producer cannot reuse their room.
    pub fn release_later(self) {
        let frame = self.frame;
        self.consumer.advance(frame);
    }
}

impl<const N: usize> fmt::Debug for Frame<'_, '_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("len", &self.bytes().len())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Overwrites the length prefix at buffer position `at`, as a stray write or a producer bug
    /// would.
    fn damage_prefix<const N: usize>(ring: &ByteRing<N>, at: usize, len: u32) {
        // SAFETY: no half of the ring is in use on another thread during the test.
        assert!(unsafe { ring.buf.write(at, &len.to_le_bytes()) });
    }

    #[test]
    fn length_reaching_past_the_published_bytes_is_refused_and_head_stays() {
        let mut ring: ByteRing<64> = ByteRing::new();
        {
            let (mut producer, _) = ring.split();
            // A 12-byte frame: prefix, 5-byte header, key and value of 1 byte, padding.
            producer
                .push(&Entry::Put {
                    key: b"k",
                    value: b"v",
                })
                .unwrap();
        }
        // 20 is within MAX_ENTRY_LEN (28) but the frame would run 12 bytes past `tail`, into
        // bytes the producer owns and may be writing.
        damage_prefix(&ring, 0, 20);
        let (producer, mut consumer) = ring.split();
        assert!(consumer.peek().is_none());
        assert_eq!(consumer.used(), 12);
        assert_eq!(producer.used(), 12);
    }

    #[test]
    fn skip_marker_reaching_past_the_published_bytes_is_refused_and_head_stays() {
        let mut ring: ByteRing<64> = ByteRing::new();
        {
            let (mut producer, _) = ring.split();
            producer.push(&Entry::Delete { key: b"k" }).unwrap();
        }
        // A skip marker at 0 would move `head` 64 bytes, far past `tail` (12).
        damage_prefix(&ring, 0, SKIP);
        let (producer, mut consumer) = ring.split();
        assert!(consumer.peek().is_none());
        assert_eq!(consumer.used(), 12);
        assert_eq!(producer.used(), 12);
    }
}
