//! A bounded, allocation-free, lock-free single-producer single-consumer queue.
//!
//! [`Queue<T, N>`] holds up to `N` items (the full `N`, no slot is sacrificed) in an inline array;
//! it never allocates and never blocks. [`Queue::split`] borrows it mutably and hands out one
//! [`Producer`] and one [`Consumer`]; neither is `Clone`, so the borrow checker, not a runtime
//! check, guarantees that there is a single producer and a single consumer. The halves can be
//! sent to different threads. A full queue is back-pressure: [`Producer::push`] returns the item
//! to the caller instead of waiting or dropping it.
//!
//! Items still in the queue when it is dropped are dropped with it, each exactly once.
//!
//! ```
//! use lamina_core::spsc::Queue;
//!
//! let mut queue: Queue<u32, 2> = Queue::new();
//! let (mut producer, mut consumer) = queue.split();
//! std::thread::scope(|s| {
//!     s.spawn(move || {
//!         for i in 0..10 {
//!             let mut item = i;
//!             // A full queue hands the item back: retry later (or do other work).
//!             while let Err(back) = producer.push(item) {
//!                 item = back;
//!                 std::thread::yield_now();
//!             }
//!         }
//!     });
//!     let mut next = 0;
//!     while next < 10 {
//!         match consumer.pop() {
//!             Some(i) => {
//!                 assert_eq!(i, next);
//!                 next += 1;
//!             }
//!             None => std::thread::yield_now(),
//!         }
//!     }
//! });
//! ```
//!
//! # How it works
//!
//! `head` (next slot to read) is written only by the consumer, `tail` (next slot to write) only by
//! the producer; each half keeps its own index in a plain field and only ever stores it to the
//! shared atomic. Both count modulo `2 * N` rather than modulo `N`, so that `head == tail` means
//! empty and `tail - head == N` (mod `2N`) means full, and all `N` slots are usable; slot `i` lives
//! at `i mod N`. Each side caches the other side's index and reloads it only when the cached value
//! says full (producer) or empty (consumer), which keeps the two cache lines from bouncing on
//! every call.
//!
//! Memory orderings, the only two pairs that matter:
//! - the producer writes a slot, then stores `tail` with `Release`; the consumer loads `tail` with
//!   `Acquire` before reading the slot, so the item is fully written when it is read;
//! - the consumer moves an item out of a slot, then stores `head` with `Release`; the producer
//!   loads `head` with `Acquire` before reusing the slot, so the read is over before the overwrite.
//!
//! A stale view of the other side's index is always safe, which is what makes the caches sound:
//! indices only move forward, so an old `head` shows the producer fewer free slots than there
//! are, and an old `tail` shows the consumer fewer items.
//!
//! Under `cfg(loom)` the atomics and cells are loom's (see the `sync` module) and the models in
//! `lamina-loom-tests` check these claims; [`Queue::new`] is then not `const`.
#![allow(unsafe_code)]

use core::fmt;
use core::mem::MaybeUninit;

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

/// Keeps `head` and `tail` on separate cache lines, so the producer's stores do not evict the
/// consumer's line and vice versa. 128 bytes because x86_64's adjacent-line prefetcher pulls
/// lines in pairs (crossbeam's `CachePadded` uses the same figure).
#[repr(align(128))]
struct CachePadded<T>(T);

/// A bounded single-producer single-consumer queue of up to `N` items of type `T`.
///
/// Build it with [`Queue::new`] (a `const fn`, so it can sit in a `static` behind a one-time
/// `&mut`, or in any struct), then [`split`](Queue::split) it into its two halves. `N` must be
/// at least 1 and at most `usize::MAX / 2`; other values fail to compile:
///
/// ```compile_fail
/// let queue: lamina_core::spsc::Queue<u8, 0> = lamina_core::spsc::Queue::new();
/// ```
pub struct Queue<T, const N: usize> {
    /// Index of the next item to pop, in `0..2N`. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Index of the next free slot to push to, in `0..2N`. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// The items; slot `i mod N` is initialised exactly when index `i` lies in `head..tail`.
    slots: [UnsafeCell<MaybeUninit<T>>; N],
}

impl<T, const N: usize> Queue<T, N> {
    /// Rejects `N == 0` (no slot to use) and `N > usize::MAX / 2` (indices run to `2N`), at
    /// compile time.
    const VALID_CAPACITY: () = assert!(
        N > 0 && N <= usize::MAX / 2,
        "spsc::Queue capacity N must be in 1..=usize::MAX / 2"
    );

    /// An empty queue.
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new() -> Self {
        let () = Self::VALID_CAPACITY;
        Self {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            slots: [const { UnsafeCell::new(MaybeUninit::uninit()) }; N],
        }
    }

    /// An empty queue (not `const` under loom: loom's atomics are built at run time).
    #[cfg(loom)]
    #[must_use]
    pub fn new() -> Self {
        let () = Self::VALID_CAPACITY;
        Self {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            slots: core::array::from_fn(|_| UnsafeCell::new(MaybeUninit::uninit())),
        }
    }

    /// The number of items the queue holds when full: `N`.
    #[must_use]
    #[inline]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Splits the queue into its producer and consumer halves.
    ///
    /// The halves borrow the queue, so there is at most one of each at a time. Once both are
    /// dropped the queue can be split again; items pushed earlier are still there, in order.
    #[must_use]
    pub fn split(&mut self) -> (Producer<'_, T, N>, Consumer<'_, T, N>) {
        let queue: &Self = self;
        // Relaxed: `&mut self` proves no half is alive, and whatever ended the previous halves'
        // borrow (a join, a scope's end) already ordered their stores before this point.
        let head = queue.head.0.load(Ordering::Relaxed);
        let tail = queue.tail.0.load(Ordering::Relaxed);
        (
            Producer {
                queue,
                tail,
                cached_head: head,
            },
            Consumer {
                queue,
                head,
                cached_tail: tail,
            },
        )
    }

    /// The slot that index `index` (in `0..2N`) maps to.
    ///
    /// `None` only if that invariant were broken; callers treat it as "nothing there" rather
    /// than panic.
    #[inline]
    fn slot(&self, index: usize) -> Option<&UnsafeCell<MaybeUninit<T>>> {
        debug_assert!(index / 2 < N, "spsc index out of range");
        self.slots.get(if index < N { index } else { index - N })
    }
}

impl<T, const N: usize> Default for Queue<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Drop for Queue<T, N> {
    fn drop(&mut self) {
        if !core::mem::needs_drop::<T>() {
            return;
        }
        // Relaxed: `&mut self` means both halves are gone and their accesses happen-before this.
        let mut head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Relaxed);
        while head != tail {
            if let Some(slot) = self.slot(head) {
                slot.with_mut(|ptr| {
                    // SAFETY: `head` lies in `head..tail`, so the slot holds an initialised item
                    // that nobody moved out; `head` moves past it at once, so it is dropped once.
                    unsafe { (*ptr).assume_init_drop() }
                });
            }
            head = next::<N>(head);
        }
    }
}

impl<T, const N: usize> fmt::Debug for Queue<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = distance::<N>(
            self.head.0.load(Ordering::Relaxed),
            self.tail.0.load(Ordering::Relaxed),
        );
        f.debug_struct("Queue")
            .field("len", &len)
            .field("capacity", &N)
            .finish_non_exhaustive()
    }
}

/// The pushing half of a [`Queue`]; there is one per [`Queue::split`].
pub struct Producer<'a, T, const N: usize> {
    queue: &'a Queue<T, N>,
    /// The producer's own index, the value it last stored to `queue.tail`. Kept here so that
    /// pushing never reads the shared atomic (only this producer writes it).
    tail: usize,
    /// A past value of `head`. `head` only moves forward, so this undercounts the free slots and
    /// is safe to trust; it is refreshed only when it says the queue is full.
    cached_head: usize,
}

// SAFETY: the producer moves `T` values into the queue, and the consumer may take them out on
// another thread, so `T: Send` is required and suffices: the producer touches only slots that no
// one else accesses until its `Release` store of `tail` hands them over.
unsafe impl<T: Send, const N: usize> Send for Producer<'_, T, N> {}

// SAFETY: through `&Producer` only `len`, `is_full` and `capacity` can be called, which read the
// atomic indices and never touch a slot.
unsafe impl<T: Send, const N: usize> Sync for Producer<'_, T, N> {}

impl<T, const N: usize> Producer<'_, T, N> {
    /// Appends `item` at the back, or gives it back as `Err(item)` if the queue is full.
    ///
    /// Never blocks and never drops the item: a full queue is back-pressure for the caller to
    /// act on (retry later, shed load, or do other work first).
    #[inline]
    pub fn push(&mut self, item: T) -> Result<(), T> {
        let queue = self.queue;
        let tail = self.tail;
        if distance::<N>(self.cached_head, tail) == N {
            // Acquire: pairs with the consumer's Release store of `head`, so its move out of the
            // slot we are about to reuse is complete before we overwrite it.
            self.cached_head = queue.head.0.load(Ordering::Acquire);
            if distance::<N>(self.cached_head, tail) == N {
                return Err(item);
            }
        }
        // Unreachable `None`: `tail` is always in `0..2N`.
        let Some(slot) = queue.slot(tail) else {
            return Err(item);
        };
        slot.with_mut(|ptr| {
            // SAFETY: `tail` is outside `head..tail`, so the slot is free: the consumer does not
            // read it until the store of `tail` below, the Acquire load of `head` (now or when
            // `cached_head` was loaded) ordered its last read before this write, and `split`
            // gives out one producer only, so no one else writes it.
            unsafe { ptr.write(MaybeUninit::new(item)) }
        });
        self.tail = next::<N>(tail);
        // Release: pairs with the consumer's Acquire load of `tail`, publishing the write above.
        queue.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// The number of items in the queue. The consumer may pop concurrently, so this is an upper
    /// bound by the time it returns.
    #[must_use]
    #[inline]
    pub fn len(&self) -> usize {
        // Relaxed: a snapshot; `push` does its own Acquire before reusing a slot.
        distance::<N>(self.queue.head.0.load(Ordering::Relaxed), self.tail)
    }

    /// Whether the queue holds no item (it may gain one only through this producer).
    #[must_use]
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue is full. `false` stays true until this producer pushes: only it adds.
    #[must_use]
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len() == N
    }

    /// The number of items the queue holds when full: `N`.
    #[must_use]
    #[inline]
    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<T, const N: usize> fmt::Debug for Producer<'_, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("len", &self.len())
            .field("capacity", &N)
            .finish_non_exhaustive()
    }
}

/// The popping half of a [`Queue`]; there is one per [`Queue::split`].
pub struct Consumer<'a, T, const N: usize> {
    queue: &'a Queue<T, N>,
    /// The consumer's own index, the value it last stored to `queue.head`. Kept here so that
    /// popping never reads the shared atomic (only this consumer writes it).
    head: usize,
    /// A past value of `tail`. `tail` only moves forward, so this undercounts the items and is
    /// safe to trust; it is refreshed only when it says the queue is empty.
    cached_tail: usize,
}

// SAFETY: the consumer takes `T` values out that the producer put in, possibly on another thread,
// so `T: Send` is required and suffices: it touches only slots that the producer handed over with
// its `Release` store of `tail` and does not touch again until the consumer's store of `head`.
unsafe impl<T: Send, const N: usize> Send for Consumer<'_, T, N> {}

// SAFETY: through `&Consumer` only `peek`, `len`, `is_empty` and `capacity` can be called. `peek`
// hands out `&T` to the front item, hence `T: Sync`; that item stays in place while the shared
// borrow lasts, because popping needs `&mut Consumer` and the producer never writes an occupied
// slot.
unsafe impl<T: Send + Sync, const N: usize> Sync for Consumer<'_, T, N> {}

impl<T, const N: usize> Consumer<'_, T, N> {
    /// Removes and returns the front item, or `None` if the queue is empty.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        let queue = self.queue;
        let head = self.head;
        if head == self.cached_tail {
            // Acquire: pairs with the producer's Release store of `tail`, so the item is fully
            // written before we read it.
            self.cached_tail = queue.tail.0.load(Ordering::Acquire);
            if head == self.cached_tail {
                return None;
            }
        }
        let slot = queue.slot(head)?;
        let item = slot.with(|ptr| {
            // SAFETY: `head` lies in `head..tail`, so the slot holds an item whose write the
            // Acquire load of `tail` (now or when `cached_tail` was loaded) made visible; the
            // producer does not touch it until `head` moves past it, which happens right below,
            // so the item is moved out exactly once.
            unsafe { ptr.read().assume_init() }
        });
        self.head = next::<N>(head);
        // Release: pairs with the producer's Acquire load of `head`, so our read of the slot is
        // over before it is overwritten.
        queue.head.0.store(self.head, Ordering::Release);
        Some(item)
    }

    /// Pops up to `max` items in order, handing each to `f`, and returns how many it popped.
    ///
    /// One Acquire load of the producer's index covers the whole batch, and the freed slots are
    /// released to the producer once, when the call returns (also if `f` panics: items already
    /// handed to `f` are then gone from the queue, the others stay).
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let queue = self.queue;
        // Acquire: as in `pop`, for every item up to `tail`. Always reloaded: a batch wants all
        // there is.
        self.cached_tail = queue.tail.0.load(Ordering::Acquire);
        let available = distance::<N>(self.head, self.cached_tail).min(max);
        if available == 0 {
            // Nothing to free: skip the store, which would only dirty the producer's cache line.
            return 0;
        }
        let release = ReleaseHead {
            shared: &queue.head.0,
            index: &mut self.head,
        };
        let mut popped = 0;
        while popped < available {
            let Some(slot) = queue.slot(*release.index) else {
                break;
            };
            let item = slot.with(|ptr| {
                // SAFETY: as in `pop`: `*release.index` lies in `head..tail`, the Acquire load of
                // `tail` above made the item visible, and the index moves past it before `f` can
                // unwind, so the guard never frees a slot twice or keeps a moved-out one.
                unsafe { ptr.read().assume_init() }
            });
            *release.index = next::<N>(*release.index);
            popped += 1;
            f(item);
        }
        popped
    }

    /// The front item, without removing it, or `None` if the queue is empty.
    #[must_use]
    #[inline]
    pub fn peek(&self) -> Option<&T> {
        let queue = self.queue;
        let head = self.head;
        let tail = if head == self.cached_tail {
            // Acquire: as in `pop`. Not cached: `&self` here, and `pop` reloads anyway.
            queue.tail.0.load(Ordering::Acquire)
        } else {
            self.cached_tail
        };
        if head == tail {
            return None;
        }
        let slot = queue.slot(head)?;
        slot.with(|ptr| {
            // SAFETY: the slot holds an initialised item (as in `pop`). The returned reference
            // borrows `self`, so `pop` (which needs `&mut self`) cannot move the item out while
            // it lives, and the producer never writes a slot in `head..tail`.
            Some(unsafe { (*ptr).assume_init_ref() })
        })
    }

    /// The number of items in the queue. The producer may push concurrently, so this is a lower
    /// bound by the time it returns.
    #[must_use]
    #[inline]
    pub fn len(&self) -> usize {
        // Relaxed: a snapshot; `pop` does its own Acquire before reading a slot.
        distance::<N>(self.head, self.queue.tail.0.load(Ordering::Relaxed))
    }

    /// Whether the queue is empty. `false` stays true until this consumer pops: only it removes.
    #[must_use]
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of items the queue holds when full: `N`.
    #[must_use]
    #[inline]
    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<T, const N: usize> fmt::Debug for Consumer<'_, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("len", &self.len())
            .field("capacity", &N)
            .finish_non_exhaustive()
    }
}

/// Stores the consumer's progress when dropped, so `pop_batch` frees its slots once, on return or
/// on unwind.
struct ReleaseHead<'a> {
    /// The queue's `head`.
    shared: &'a AtomicUsize,
    /// The consumer's own copy of `head`, advanced past each item as it is moved out.
    index: &'a mut usize,
}

impl Drop for ReleaseHead<'_> {
    fn drop(&mut self) {
        // Release: as in `pop`, our reads of the freed slots are over before they are reused.
        self.shared.store(*self.index, Ordering::Release);
    }
}

/// The index after `index`, counting modulo `2N`.
#[inline]
const fn next<const N: usize>(index: usize) -> usize {
    // No overflow: `index < 2N <= usize::MAX`.
    if index + 1 == 2 * N { 0 } else { index + 1 }
}

/// The number of steps from index `from` to index `to`, both in `0..2N`: the length of the
/// queue when `from` is `head` and `to` is `tail`.
#[inline]
const fn distance<const N: usize>(from: usize, to: usize) -> usize {
    if to >= from {
        to - from
    } else {
        2 * N - (from - to)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;

    use super::*;
    use core::cell::Cell;
    use std::vec::Vec;

    /// Records its own drop in a shared counter, so tests can count drops per item.
    struct DropCounter<'a> {
        id: usize,
        drops: &'a [Cell<usize>],
    }

    impl Drop for DropCounter<'_> {
        fn drop(&mut self) {
            let count = &self.drops[self.id];
            count.set(count.get() + 1);
        }
    }

    fn counters<const K: usize>() -> [Cell<usize>; K] {
        core::array::from_fn(|_| Cell::new(0))
    }

    fn drop_counts(drops: &[Cell<usize>]) -> Vec<usize> {
        drops.iter().map(Cell::get).collect()
    }

    #[test]
    fn new_queue_is_empty_with_full_capacity() {
        let mut queue: Queue<u8, 3> = Queue::new();
        assert_eq!(queue.capacity(), 3);
        let (producer, mut consumer) = queue.split();
        assert!(producer.is_empty());
        assert!(!producer.is_full());
        assert_eq!(producer.capacity(), 3);
        assert_eq!(consumer.capacity(), 3);
        assert!(consumer.is_empty());
        assert_eq!(consumer.len(), 0);
        assert_eq!(consumer.peek(), None);
        assert_eq!(consumer.pop(), None);
    }

    #[test]
    fn new_is_const() {
        let queue: Queue<u64, 4> = const { Queue::new() };
        assert_eq!(queue.capacity(), 4);
    }

    #[test]
    fn holds_exactly_n_then_hands_the_item_back() {
        let mut queue: Queue<u32, 3> = Queue::new();
        let (mut producer, mut consumer) = queue.split();
        for i in 0..3 {
            assert_eq!(producer.push(i), Ok(()));
            assert_eq!(producer.len(), i as usize + 1);
        }
        assert!(producer.is_full());
        assert_eq!(producer.push(99), Err(99));
        assert_eq!(consumer.len(), 3);
        assert_eq!(consumer.pop(), Some(0));
        assert!(!producer.is_full());
        assert_eq!(producer.push(3), Ok(()));
        assert_eq!(producer.push(100), Err(100));
        for i in 1..4 {
            assert_eq!(consumer.pop(), Some(i));
        }
        assert_eq!(consumer.pop(), None);
        assert!(consumer.is_empty());
    }

    #[test]
    fn capacity_one_alternates_full_and_empty() {
        let mut queue: Queue<u32, 1> = Queue::new();
        let (mut producer, mut consumer) = queue.split();
        for i in 0..5 {
            assert_eq!(consumer.pop(), None);
            assert_eq!(producer.push(i), Ok(()));
            assert!(producer.is_full());
            assert_eq!(producer.push(i + 100), Err(i + 100));
            assert_eq!(consumer.peek(), Some(&i));
            assert_eq!(consumer.pop(), Some(i));
        }
    }

    #[test]
    fn wraps_around_many_times_in_order() {
        // N = 3 is not a power of two, and 100 rounds take the indices past 2N many times.
        let mut queue: Queue<usize, 3> = Queue::new();
        let (mut producer, mut consumer) = queue.split();
        let mut next_in = 0;
        let mut next_out = 0;
        for round in 0..100 {
            for _ in 0..(round % 3) + 1 {
                assert_eq!(producer.push(next_in), Ok(()));
                next_in += 1;
            }
            for _ in 0..(round % 3) + 1 {
                assert_eq!(consumer.pop(), Some(next_out));
                next_out += 1;
            }
            assert!(consumer.is_empty());
        }
        assert_eq!(next_out, next_in);
    }

    #[test]
    fn interleaved_push_and_pop_keep_fifo_order() {
        let mut queue: Queue<u32, 4> = Queue::new();
        let (mut producer, mut consumer) = queue.split();
        let mut expected = std::collections::VecDeque::new();
        let mut value = 0;
        // A fixed pattern of pushes (true) and pops (false) that fills, drains and wraps.
        let pattern = [
            true, true, false, true, true, true, false, false, true, false, false, false, false,
            true, false, true, true, true, true, true, false, true, false, false,
        ];
        for _ in 0..10 {
            for &push in &pattern {
                if push {
                    match producer.push(value) {
                        Ok(()) => expected.push_back(value),
                        Err(back) => {
                            assert_eq!(back, value);
                            assert_eq!(expected.len(), 4);
                        }
                    }
                    value += 1;
                } else {
                    assert_eq!(consumer.pop(), expected.pop_front());
                }
                assert_eq!(consumer.len(), expected.len());
                assert_eq!(consumer.peek(), expected.front());
            }
        }
    }

    #[test]
    fn peek_does_not_remove() {
        let mut queue: Queue<u32, 2> = Queue::new();
        let (mut producer, mut consumer) = queue.split();
        assert_eq!(producer.push(7), Ok(()));
        assert_eq!(consumer.peek(), Some(&7));
        assert_eq!(consumer.peek(), Some(&7));
        assert_eq!(consumer.len(), 1);
        assert_eq!(consumer.pop(), Some(7));
        assert_eq!(consumer.peek(), None);
    }

    #[test]
    fn pop_batch_takes_at_most_max_in_order() {
        let mut queue: Queue<u32, 4> = Queue::new();
        let (mut producer, mut consumer) = queue.split();
        let mut out = Vec::new();
        assert_eq!(consumer.pop_batch(10, |i| out.push(i)), 0);
        for round in 0..5 {
            for i in 0..4 {
                assert_eq!(producer.push(round * 4 + i), Ok(()));
            }
            assert!(producer.is_full());
            assert_eq!(consumer.pop_batch(3, |i| out.push(i)), 3);
            assert_eq!(producer.len(), 1);
            assert_eq!(consumer.pop_batch(10, |i| out.push(i)), 1);
            assert!(producer.is_empty());
        }
        assert_eq!(out, (0..20).collect::<Vec<_>>());
        assert_eq!(consumer.pop_batch(0, |_| panic!("max is 0")), 0);
    }

    #[test]
    fn queue_drop_drops_leftover_items_once() {
        let drops = counters::<6>();
        {
            let mut queue: Queue<DropCounter<'_>, 4> = Queue::new();
            let (mut producer, mut consumer) = queue.split();
            for id in 0..4 {
                assert!(producer.push(DropCounter { id, drops: &drops }).is_ok());
            }
            // Full: the item comes back and is the caller's to drop.
            let back = producer.push(DropCounter {
                id: 4,
                drops: &drops,
            });
            assert!(back.is_err());
            drop(back);
            assert_eq!(drop_counts(&drops), [0, 0, 0, 0, 1, 0]);
            // Popped items are the caller's: dropped here, once.
            drop(consumer.pop());
            assert_eq!(drop_counts(&drops), [1, 0, 0, 0, 1, 0]);
            // Wrap the tail past the end of the array before the queue drops.
            assert!(
                producer
                    .push(DropCounter {
                        id: 5,
                        drops: &drops
                    })
                    .is_ok()
            );
        }
        assert_eq!(drop_counts(&drops), [1; 6]);
    }

    #[test]
    fn queue_drop_after_indices_wrapped_drops_only_live_items() {
        let drops = counters::<8>();
        {
            let mut queue: Queue<DropCounter<'_>, 3> = Queue::new();
            let (mut producer, mut consumer) = queue.split();
            let mut push = |id| assert!(producer.push(DropCounter { id, drops: &drops }).is_ok());
            // Indices count modulo 6: afterwards head = 4 and tail = 1, so the live items 4, 5, 6
            // sit in slots 1, 2, 0 and the tail index is below the head index.
            for id in 0..3 {
                push(id);
            }
            for _ in 0..3 {
                drop(consumer.pop());
            }
            for id in 3..6 {
                push(id);
            }
            drop(consumer.pop());
            push(6);
            assert_eq!(consumer.len(), 3);
            assert_eq!(drop_counts(&drops), [1, 1, 1, 1, 0, 0, 0, 0]);
        }
        assert_eq!(drop_counts(&drops), [1, 1, 1, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn pop_batch_panic_leaves_no_double_drop() {
        let drops = counters::<4>();
        {
            let mut queue: Queue<DropCounter<'_>, 4> = Queue::new();
            let (mut producer, mut consumer) = queue.split();
            for id in 0..4 {
                assert!(producer.push(DropCounter { id, drops: &drops }).is_ok());
            }
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                consumer.pop_batch(4, |item| {
                    if item.id == 1 {
                        panic!("consumer callback fails on item 1");
                    }
                })
            }));
            assert!(result.is_err());
            // Items 0 and 1 went to the callback (and were dropped there); 2 and 3 remain.
            assert_eq!(drop_counts(&drops), [1, 1, 0, 0]);
            assert_eq!(consumer.len(), 2);
            assert_eq!(consumer.peek().map(|item| item.id), Some(2));
        }
        assert_eq!(drop_counts(&drops), [1; 4]);
    }

    #[test]
    fn resplit_keeps_items_and_order() {
        let mut queue: Queue<u32, 3> = Queue::new();
        {
            let (mut producer, mut consumer) = queue.split();
            for i in 0..3 {
                assert_eq!(producer.push(i), Ok(()));
            }
            assert_eq!(consumer.pop(), Some(0));
        }
        let (mut producer, mut consumer) = queue.split();
        assert_eq!(producer.len(), 2);
        assert_eq!(producer.push(3), Ok(()));
        assert_eq!(producer.push(4), Err(4));
        assert_eq!(consumer.pop(), Some(1));
        assert_eq!(consumer.pop(), Some(2));
        assert_eq!(consumer.pop(), Some(3));
        assert_eq!(consumer.pop(), None);
    }

    #[test]
    fn zero_sized_items_are_counted() {
        let mut queue: Queue<(), 2> = Queue::new();
        let (mut producer, mut consumer) = queue.split();
        assert_eq!(producer.push(()), Ok(()));
        assert_eq!(producer.push(()), Ok(()));
        assert_eq!(producer.push(()), Err(()));
        assert_eq!(consumer.pop(), Some(()));
        assert_eq!(consumer.pop(), Some(()));
        assert_eq!(consumer.pop(), None);
    }

    #[test]
    fn halves_are_send_and_sync_for_send_items() {
        fn send<X: Send>() {}
        fn sync<X: Sync>() {}
        send::<Producer<'static, std::string::String, 4>>();
        send::<Consumer<'static, std::string::String, 4>>();
        sync::<Producer<'static, std::string::String, 4>>();
        sync::<Consumer<'static, std::string::String, 4>>();
        send::<Queue<std::string::String, 4>>();
    }

    #[test]
    fn debug_shows_len_and_capacity() {
        let mut queue: Queue<u8, 2> = Queue::new();
        {
            let (mut producer, consumer) = queue.split();
            assert_eq!(producer.push(1), Ok(()));
            assert_eq!(
                std::format!("{producer:?}"),
                "Producer { len: 1, capacity: 2, .. }"
            );
            assert_eq!(
                std::format!("{consumer:?}"),
                "Consumer { len: 1, capacity: 2, .. }"
            );
        }
        assert_eq!(
            std::format!("{queue:?}"),
            "Queue { len: 1, capacity: 2, .. }"
        );
    }

    /// Items sent through the stress test; Miri is ~1000x slower, so it sends far fewer.
    const STRESS_ITEMS: usize = if cfg!(miri) { 2_000 } else { 200_000 };

    #[test]
    fn threads_deliver_every_item_once_in_order() {
        let mut queue: Queue<usize, 7> = Queue::new();
        let (mut producer, mut consumer) = queue.split();
        std::thread::scope(|s| {
            s.spawn(move || {
                for i in 0..STRESS_ITEMS {
                    let mut item = i;
                    while let Err(back) = producer.push(item) {
                        item = back;
                        std::thread::yield_now();
                    }
                }
            });
            s.spawn(move || {
                let mut next = 0;
                while next < STRESS_ITEMS {
                    let before = next;
                    if next % 2 == 0 {
                        if let Some(item) = consumer.pop() {
                            assert_eq!(item, next);
                            next += 1;
                        }
                    } else {
                        consumer.pop_batch(3, |item| {
                            assert_eq!(item, next);
                            next += 1;
                        });
                    }
                    if next == before {
                        std::thread::yield_now();
                    }
                }
                assert_eq!(consumer.pop(), None);
            });
        });
    }

    #[test]
    fn threads_with_drop_counting_items_drop_each_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        const ITEMS: usize = if cfg!(miri) { 500 } else { 10_000 };
        /// Left in the queue for its own drop to handle.
        const LEFT: usize = 3;
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let drops = AtomicUsize::new(0);
        {
            let mut queue: Queue<Counted<'_>, 4> = Queue::new();
            let (mut producer, mut consumer) = queue.split();
            std::thread::scope(|s| {
                s.spawn(|| {
                    for _ in 0..ITEMS {
                        let mut item = Counted(&drops);
                        while let Err(back) = producer.push(item) {
                            item = back;
                            std::thread::yield_now();
                        }
                    }
                });
                let mut popped = 0;
                while popped < ITEMS - LEFT {
                    if consumer.pop().is_some() {
                        popped += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
            });
            assert_eq!(consumer.len(), LEFT);
            assert_eq!(drops.load(Ordering::Relaxed), ITEMS - LEFT);
        }
        assert_eq!(drops.load(Ordering::Relaxed), ITEMS);
    }
}
