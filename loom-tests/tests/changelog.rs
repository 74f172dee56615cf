//! loom models of `lamina_core::changelog::ByteRing` as the changelog uses it: Ring 0 pushing
//! variable-length entries (wrapping past the end of the ring, with a skip marker) and a
//! checkpoint barrier between them, while the drainer reads each frame in place and releases it.
//! Every byte of the ring is its own loom cell, so loom checks that each frame's bytes are handed
//! from the producer to the consumer and back without a race.
//!
//! Run with `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" cargo test -p lamina-loom-tests
//! --release --target-dir target/loom`.
#![cfg(loom)]

use lamina_core::changelog::{ByteRing, Consumer, Entry, Producer, PushError};
use loom::thread;

/// The two halves of a ring that lives until the end of [`with_ring`].
type Halves<const N: usize> = (Producer<'static, N>, Consumer<'static, N>);

/// Runs `body` on the halves of a fresh ring, then frees it (see `spsc.rs`'s `with_queue`:
/// `body` gives both halves back, proving no thread still uses them).
fn with_ring<const N: usize, R>(
    body: impl FnOnce(Producer<'static, N>, Consumer<'static, N>) -> (Halves<N>, R),
) -> R {
    let raw: *mut ByteRing<N> = Box::into_raw(Box::new(ByteRing::new()));
    // SAFETY: `raw` comes from `Box::into_raw` and is freed only below, after the only borrow
    // made from it (the two halves) has ended.
    let ring: &'static mut ByteRing<N> = unsafe { &mut *raw };
    let (producer, consumer) = ring.split();
    let ((producer, consumer), result) = body(producer, consumer);
    let _ = (producer, consumer);
    // SAFETY: `raw` came from `Box::into_raw`, is freed once, and nothing borrows it any more:
    // `body` returned both halves and they were dropped above.
    drop(unsafe { Box::from_raw(raw) });
    result
}

/// An owned entry, to compare what arrives with what was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Barrier(u64),
}

impl Owned {
    fn entry(&self) -> Entry<'_> {
        match self {
            Owned::Put(key, value) => Entry::Put { key, value },
            Owned::Delete(key) => Entry::Delete { key },
            Owned::Barrier(epoch) => Entry::Barrier { epoch: *epoch },
        }
    }

    fn from_entry(entry: Entry<'_>) -> Self {
        match entry {
            Entry::Put { key, value } => Owned::Put(key.to_vec(), value.to_vec()),
            Entry::Delete { key } => Owned::Delete(key.to_vec()),
            Entry::Barrier { epoch } => Owned::Barrier(epoch),
        }
    }
}

/// Pushes `entry`, yielding to the drainer while the ring is full (back-pressure never loses
/// the entry: it is pushed again, the same one).
fn push_blocking<const N: usize>(producer: &mut Producer<'_, N>, entry: &Owned) {
    loop {
        match producer.push(&entry.entry()) {
            Ok(()) => return,
            Err(PushError::Full { .. }) => thread::yield_now(),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
}

/// In a 40-byte ring: a 16-byte frame, the barrier's 20-byte frame, then a 16-byte frame that
/// does not fit in the last 4 bytes (skip marker, frame at 0), then a 12-byte frame.
fn entries() -> Vec<Owned> {
    vec![
        Owned::Put(vec![1], vec![0xa1, 0xa2, 0xa3]),
        Owned::Barrier(7),
        Owned::Put(vec![2], vec![0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6]),
        Owned::Delete(vec![3]),
    ]
}

#[test]
fn entries_and_barrier_arrive_once_in_order_intact_across_wrap() {
    loom::model(|| {
        with_ring::<40, _>(|mut producer, mut consumer| {
            let pushing = thread::spawn(move || {
                for entry in entries() {
                    push_blocking(&mut producer, &entry);
                }
                producer
            });
            let expected = entries();
            let mut got = Vec::new();
            while got.len() < expected.len() {
                match consumer.peek() {
                    Some(frame) => {
                        got.push(Owned::from_entry(frame.entry().expect("intact frame")));
                        frame.release();
                    }
                    None => thread::yield_now(),
                }
            }
            // The barrier sits between the first and the second put, as pushed.
            assert_eq!(got, expected);
            let producer = pushing.join().unwrap();
            assert!(consumer.peek().is_none());
            assert!(producer.is_empty());
            ((producer, consumer), ())
        });
    });
}

#[test]
fn unreleased_frame_stays_while_producer_waits_on_a_full_ring() {
    loom::model(|| {
        with_ring::<40, _>(|mut producer, mut consumer| {
            // Two 20-byte frames fill the ring: the third waits for the drainer, which reads
            // the first frame, lets it go unreleased (it must stay and read the same), then
            // releases it.
            let sent = vec![
                Owned::Barrier(1),
                Owned::Put(vec![9; 4], vec![8; 6]),
                Owned::Barrier(2),
            ];
            let to_push = sent.clone();
            let pushing = thread::spawn(move || {
                for entry in &to_push {
                    push_blocking(&mut producer, entry);
                }
                producer
            });
            let mut got = Vec::new();
            let mut peeked_once = false;
            while got.len() < sent.len() {
                match consumer.peek() {
                    Some(frame) => {
                        let owned = Owned::from_entry(frame.entry().expect("intact frame"));
                        if !peeked_once {
                            peeked_once = true;
                            drop(frame);
                            let again = consumer.peek().expect("an unreleased frame stays");
                            assert_eq!(Owned::from_entry(again.entry().unwrap()), owned);
                            again.release();
                        } else {
                            frame.release();
                        }
                        got.push(owned);
                    }
                    None => thread::yield_now(),
                }
            }
            assert_eq!(got, sent);
            let producer = pushing.join().unwrap();
            assert!(producer.is_empty());
            ((producer, consumer), ())
        });
    });
}

#[test]
fn frames_released_in_a_run_are_reused_only_after_the_hand_back() {
    loom::model(|| {
        with_ring::<40, _>(|mut producer, mut consumer| {
            // The entries of the first model (wrapping, with a skip marker): the drainer
            // releases them in runs of two, one store of `head` per run, so the producer
            // overwrites a run's bytes (loom checks each byte) only after its hand-back.
            let pushing = thread::spawn(move || {
                for entry in entries() {
                    push_blocking(&mut producer, &entry);
                }
                producer
            });
            let expected = entries();
            let mut got = Vec::new();
            while got.len() < expected.len() {
                match consumer.peek() {
                    Some(frame) => {
                        got.push(Owned::from_entry(frame.entry().expect("intact frame")));
                        frame.release_later();
                        if got.len() % 2 == 0 {
                            consumer.hand_back();
                        }
                    }
                    None => {
                        // Waiting for the producer: it may be waiting for room.
                        consumer.hand_back();
                        thread::yield_now();
                    }
                }
            }
            assert_eq!(got, expected);
            let producer = pushing.join().unwrap();
            assert!(consumer.peek().is_none());
            assert!(producer.is_empty());
            ((producer, consumer), ())
        });
    });
}
