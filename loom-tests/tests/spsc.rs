//! loom models of `lamina_core::spsc`: a producer thread and a consumer thread run against one
//! queue under every interleaving (up to `LOOM_MAX_PREEMPTIONS`) and every outcome of the memory
//! orderings that loom models.
//!
//! Run with `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" cargo test -p lamina-loom-tests
//! --release --target-dir target/loom`.
#![cfg(loom)]

use lamina_core::spsc::{Consumer, Producer, Queue};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

/// The two halves of a queue that lives until the end of [`with_queue`].
type Halves<T, const N: usize> = (Producer<'static, T, N>, Consumer<'static, T, N>);

/// Runs `body` on the halves of a fresh queue, then drops the queue (and any items left in it).
///
/// loom's `thread::spawn` wants `'static`, so the halves borrow a heap-allocated queue for
/// `'static`; `body` must give both back, which proves that no thread still uses them when the
/// queue is freed (neither half is `Clone`, and nothing borrowed from a half outlives it).
fn with_queue<T: Send + 'static, const N: usize, R>(
    body: impl FnOnce(Producer<'static, T, N>, Consumer<'static, T, N>) -> (Halves<T, N>, R),
) -> R {
    let raw: *mut Queue<T, N> = Box::into_raw(Box::new(Queue::new()));
    // SAFETY: `raw` comes from `Box::into_raw` and is freed only below, after the only borrow
    // made from it (the two halves) has ended.
    let queue: &'static mut Queue<T, N> = unsafe { &mut *raw };
    let (producer, consumer) = queue.split();
    let ((producer, consumer), result) = body(producer, consumer);
    // The halves are the only users of `queue`; ending them ends its borrow.
    let _ = (producer, consumer);
    // SAFETY: `raw` came from `Box::into_raw`, is freed once, and nothing borrows it any more:
    // `body` returned both halves (so every thread that held one is done with it) and they were
    // dropped above.
    drop(unsafe { Box::from_raw(raw) });
    result
}

/// Pushes `item`, yielding to the other thread while the queue is full.
fn push_blocking<T, const N: usize>(producer: &mut Producer<'_, T, N>, mut item: T) {
    while let Err(back) = producer.push(item) {
        item = back;
        thread::yield_now();
    }
}

#[test]
fn every_item_delivered_once_in_order_across_wrap() {
    loom::model(|| {
        with_queue::<usize, 2, _>(|mut producer, mut consumer| {
            // Five items through two slots: slots are reused and the indices (modulo 4) wrap
            // back to 0 and are used again.
            const ITEMS: usize = 5;
            let pushing = thread::spawn(move || {
                for i in 0..ITEMS {
                    push_blocking(&mut producer, i);
                    assert!(producer.len() <= 2);
                }
                producer
            });
            let mut next = 0;
            while next < ITEMS {
                let front = consumer.peek().copied();
                match consumer.pop() {
                    Some(item) => {
                        assert_eq!(item, next);
                        next += 1;
                    }
                    None => thread::yield_now(),
                }
                // What `peek` saw is what `pop` then took: only this consumer removes items.
                if let Some(front) = front {
                    assert_eq!(front, next - 1);
                }
            }
            let producer = pushing.join().unwrap();
            assert_eq!(consumer.pop(), None);
            assert!(producer.is_empty());
            ((producer, consumer), ())
        });
    });
}

/// The producer offers `N + 1` items once each while the consumer tries `N + 1` pops: the first
/// `N` pushes always fit, the last one only if a pop came first, a refused item comes back
/// unchanged, and what is received is exactly what was accepted, in order.
fn full_and_empty_edges<const N: usize>() {
    loom::model(|| {
        with_queue::<usize, N, _>(|mut producer, mut consumer| {
            let pushing = thread::spawn(move || {
                let mut accepted = Vec::new();
                for i in 0..=N {
                    match producer.push(i) {
                        Ok(()) => accepted.push(i),
                        Err(back) => {
                            assert_eq!(back, i);
                            assert!(i == N, "refused with room left: item {i}");
                        }
                    }
                    assert!(producer.len() <= N);
                }
                (producer, accepted)
            });
            let mut received = Vec::new();
            for _ in 0..=N {
                received.extend(consumer.pop());
                assert!(consumer.len() <= N);
            }
            let (mut producer, accepted) = pushing.join().unwrap();
            assert!(accepted.len() >= N);
            while let Some(item) = consumer.pop() {
                received.push(item);
            }
            assert_eq!(received, accepted);
            // Quiescent now: empty, then full after exactly N pushes.
            assert!(consumer.is_empty() && producer.is_empty());
            for i in 0..N {
                assert_eq!(producer.push(i), Ok(()));
            }
            assert!(producer.is_full());
            assert_eq!(producer.push(N), Err(N));
            assert_eq!(consumer.peek(), Some(&0));
            ((producer, consumer), ())
        });
    });
}

#[test]
fn capacity_one_full_and_empty_edges() {
    full_and_empty_edges::<1>();
}

#[test]
fn capacity_two_full_and_empty_edges() {
    full_and_empty_edges::<2>();
}

#[test]
fn wrap_around_in_batches() {
    loom::model(|| {
        with_queue::<usize, 2, _>(|mut producer, mut consumer| {
            // As in the model above, but drained with `pop_batch`, which frees its slots once
            // per batch.
            const ITEMS: usize = 5;
            let pushing = thread::spawn(move || {
                for i in 0..ITEMS {
                    push_blocking(&mut producer, i);
                }
                producer
            });
            let mut next = 0;
            while next < ITEMS {
                let popped = consumer.pop_batch(2, |item| {
                    assert_eq!(item, next);
                    next += 1;
                });
                if popped == 0 {
                    thread::yield_now();
                }
            }
            let producer = pushing.join().unwrap();
            assert!(consumer.is_empty());
            ((producer, consumer), ())
        });
    });
}

loom::lazy_static! {
    /// One bit per item id, set when that item is dropped.
    static ref DROPPED: AtomicUsize = AtomicUsize::new(0);
}

/// An item that records its drop in [`DROPPED`] and fails on a second drop.
struct Tracked(usize);

impl Drop for Tracked {
    fn drop(&mut self) {
        let bit = 1 << self.0;
        let before = DROPPED.fetch_or(bit, Ordering::Relaxed);
        assert_eq!(before & bit, 0, "item {} dropped twice", self.0);
    }
}

#[test]
fn leftover_items_dropped_exactly_once_with_the_queue() {
    loom::model(|| {
        const ITEMS: usize = 3;
        with_queue::<Tracked, 2, _>(|mut producer, mut consumer| {
            let pushing = thread::spawn(move || {
                // One attempt each; an item refused as full is dropped here by its owner.
                for id in 0..ITEMS {
                    drop(producer.push(Tracked(id)));
                }
                producer
            });
            // Pop (and drop) at most two, racing the pushes; the rest stay for the queue's drop.
            let mut expected = 0;
            for _ in 0..2 {
                if let Some(item) = consumer.pop() {
                    assert_eq!(item.0, expected);
                    expected += 1;
                }
            }
            let producer = pushing.join().unwrap();
            ((producer, consumer), ())
        });
        // Every item was dropped once: by the producer, the consumer, or the queue.
        assert_eq!(DROPPED.load(Ordering::Relaxed), (1 << ITEMS) - 1);
    });
}
