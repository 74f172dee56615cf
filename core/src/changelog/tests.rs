//! Unit tests and proptests of the byte ring against a model queue.

extern crate std;

use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::vec::Vec;

/// An owned entry, for the model.
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

/// Pops one entry, releasing its frame.
fn pop<const N: usize>(consumer: &mut Consumer<'_, N>) -> Option<Owned> {
    let frame = consumer.peek()?;
    let owned = Owned::from_entry(frame.entry().expect("the producer wrote a valid entry"));
    frame.release();
    Some(owned)
}

/// Pops one entry, releasing its frame for a later hand-back.
fn pop_later<const N: usize>(consumer: &mut Consumer<'_, N>) -> Option<Owned> {
    let frame = consumer.peek()?;
    let owned = Owned::from_entry(frame.entry().expect("the producer wrote a valid entry"));
    frame.release_later();
    Some(owned)
}

#[test]
fn empty_ring_peeks_none() {
    let mut ring: ByteRing<40> = ByteRing::new();
    let (producer, mut consumer) = ring.split();
    assert!(consumer.peek().is_none());
    assert!(producer.is_empty());
    assert_eq!(consumer.used(), 0);
}

#[test]
fn full_ring_returns_back_pressure_and_queues_nothing() {
    let mut ring: ByteRing<64> = ByteRing::new();
    let (mut producer, mut consumer) = ring.split();
    // 5 + 1 + 6 = 12 bytes, a 16-byte frame: four fill the ring.
    let entry = Entry::Put {
        key: b"k",
        value: b"value1",
    };
    for _ in 0..4 {
        assert_eq!(producer.push(&entry), Ok(()));
    }
    assert_eq!(
        producer.push(&Entry::Delete { key: b"k" }),
        Err(PushError::Full {
            needed: 12,
            free: 0
        })
    );
    assert_eq!(producer.used(), 64);
    assert_eq!(pop(&mut consumer), Some(Owned::from_entry(entry)));
    // Room again: the same push succeeds.
    assert_eq!(producer.push(&Entry::Delete { key: b"k" }), Ok(()));
    for _ in 0..3 {
        assert_eq!(pop(&mut consumer), Some(Owned::from_entry(entry)));
    }
    assert_eq!(pop(&mut consumer), Some(Owned::Delete(b"k".to_vec())));
    assert_eq!(pop(&mut consumer), None);
}

#[test]
fn oversized_entry_is_too_large_even_when_empty() {
    let mut ring: ByteRing<64> = ByteRing::new();
    let (mut producer, mut consumer) = ring.split();
    assert_eq!(ByteRing::<64>::MAX_ENTRY_LEN, 28);
    let value = [7u8; 23];
    // 5 + 1 + 23 = 29 bytes: one over.
    assert_eq!(
        producer.push(&Entry::Put {
            key: b"k",
            value: &value
        }),
        Err(PushError::TooLarge {
            len: Some(29),
            max: 28
        })
    );
    assert!(producer.is_empty());
    // Exactly the limit fits.
    assert_eq!(
        producer.push(&Entry::Put {
            key: b"k",
            value: &value[..22]
        }),
        Ok(())
    );
    assert!(consumer.peek().is_some());
}

#[test]
fn frame_that_does_not_fit_at_the_end_skips_to_the_start() {
    let mut ring: ByteRing<64> = ByteRing::new();
    let (mut producer, mut consumer) = ring.split();
    // A 24-byte frame (delete of a 15-byte key: 20 bytes) three times: 0..24, 24..48, then
    // 48..64 is too short, so the third goes to 0 once the first is released.
    let a = Entry::Delete {
        key: b"aaaaaaaaaaaaaaa",
    };
    let b = Entry::Delete {
        key: b"bbbbbbbbbbbbbbb",
    };
    let c = Entry::Delete {
        key: b"ccccccccccccccc",
    };
    producer.push(&a).unwrap();
    producer.push(&b).unwrap();
    assert_eq!(
        producer.push(&c),
        Err(PushError::Full {
            needed: 40,
            free: 16
        })
    );
    assert_eq!(pop(&mut consumer), Some(Owned::from_entry(a)));
    producer.push(&c).unwrap();
    // Skip (16) + frame (24) on top of b's 24.
    assert_eq!(producer.used(), 64);
    assert_eq!(pop(&mut consumer), Some(Owned::from_entry(b)));
    assert_eq!(pop(&mut consumer), Some(Owned::from_entry(c)));
    assert_eq!(pop(&mut consumer), None);
    assert!(producer.is_empty());
}

#[test]
fn unreleased_frame_is_read_again() {
    let mut ring: ByteRing<64> = ByteRing::new();
    let (mut producer, mut consumer) = ring.split();
    producer.push(&Entry::Barrier { epoch: 9 }).unwrap();
    {
        let frame = consumer.peek().unwrap();
        assert_eq!(frame.entry(), Ok(Entry::Barrier { epoch: 9 }));
    }
    let frame = consumer.peek().unwrap();
    assert_eq!(frame.bytes(), [2, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    frame.release();
    assert!(consumer.peek().is_none());
}

#[test]
fn frames_released_later_give_no_room_until_handed_back() {
    let mut ring: ByteRing<64> = ByteRing::new();
    let (mut producer, mut consumer) = ring.split();
    // Four 16-byte frames fill the ring.
    for key in [b"k1", b"k2", b"k3", b"k4"] {
        producer
            .push(&Entry::Put {
                key,
                value: b"vvvvv",
            })
            .unwrap();
    }
    assert_eq!(
        pop_later(&mut consumer),
        Some(Owned::Put(b"k1".to_vec(), b"vvvvv".to_vec()))
    );
    assert_eq!(
        pop_later(&mut consumer),
        Some(Owned::Put(b"k2".to_vec(), b"vvvvv".to_vec()))
    );
    // The consumer is past them, the producer still sees them.
    assert_eq!(consumer.unhanded(), 32);
    assert_eq!(consumer.used(), 32);
    assert_eq!(producer.used(), 64);
    let late = Entry::Delete { key: b"late" };
    assert_eq!(
        producer.push(&late),
        Err(PushError::Full {
            needed: 16,
            free: 0
        })
    );
    consumer.hand_back();
    assert_eq!(consumer.unhanded(), 0);
    assert_eq!(producer.used(), 32);
    producer.push(&late).unwrap();
    // A second hand-back with nothing released stores nothing and changes nothing.
    consumer.hand_back();
    assert_eq!(producer.used(), 48);
    assert_eq!(
        pop(&mut consumer),
        Some(Owned::Put(b"k3".to_vec(), b"vvvvv".to_vec()))
    );
    assert_eq!(
        pop(&mut consumer),
        Some(Owned::Put(b"k4".to_vec(), b"vvvvv".to_vec()))
    );
    assert_eq!(pop(&mut consumer), Some(Owned::Delete(b"late".to_vec())));
    assert_eq!(pop(&mut consumer), None);
    assert!(producer.is_empty());
}

#[test]
fn release_hands_back_the_frames_released_later_before_it() {
    let mut ring: ByteRing<64> = ByteRing::new();
    let (mut producer, mut consumer) = ring.split();
    for key in [b"1", b"2", b"3"] {
        producer.push(&Entry::Delete { key }).unwrap();
    }
    pop_later(&mut consumer).unwrap();
    pop_later(&mut consumer).unwrap();
    assert_eq!(producer.used(), 36);
    assert_eq!(pop(&mut consumer), Some(Owned::Delete(b"3".to_vec())));
    assert_eq!(consumer.unhanded(), 0);
    assert!(producer.is_empty());
}

#[test]
fn skipped_end_is_handed_back_with_the_frame_after_it() {
    let mut ring: ByteRing<64> = ByteRing::new();
    let (mut producer, mut consumer) = ring.split();
    // 24-byte frames at 0 and 24; the third skips 48..64 and lies at 0 (see
    // `frame_that_does_not_fit_at_the_end_skips_to_the_start`).
    let a = Entry::Delete {
        key: b"aaaaaaaaaaaaaaa",
    };
    let c = Entry::Delete {
        key: b"ccccccccccccccc",
    };
    producer.push(&a).unwrap();
    producer.push(&a).unwrap();
    assert_eq!(pop(&mut consumer), Some(Owned::from_entry(a)));
    producer.push(&c).unwrap();
    assert_eq!(pop_later(&mut consumer), Some(Owned::from_entry(a)));
    assert_eq!(pop_later(&mut consumer), Some(Owned::from_entry(c)));
    // The second frame, the skipped end and the third.
    assert_eq!(consumer.unhanded(), 64);
    assert_eq!(producer.used(), 64);
    consumer.hand_back();
    assert!(producer.is_empty());
}

#[test]
fn dropped_consumer_hands_back_so_a_resplit_does_not_read_again() {
    let mut ring: ByteRing<64> = ByteRing::new();
    {
        let (mut producer, mut consumer) = ring.split();
        producer.push(&Entry::Delete { key: b"1" }).unwrap();
        producer.push(&Entry::Delete { key: b"2" }).unwrap();
        assert_eq!(pop_later(&mut consumer), Some(Owned::Delete(b"1".to_vec())));
    }
    let (producer, mut consumer) = ring.split();
    assert_eq!(producer.used(), 12);
    assert_eq!(pop(&mut consumer), Some(Owned::Delete(b"2".to_vec())));
    assert_eq!(pop(&mut consumer), None);
}

#[test]
fn resplit_keeps_frames_in_order() {
    let mut ring: ByteRing<64> = ByteRing::new();
    {
        let (mut producer, _consumer) = ring.split();
        producer.push(&Entry::Delete { key: b"1" }).unwrap();
        producer.push(&Entry::Delete { key: b"2" }).unwrap();
    }
    let (_producer, mut consumer) = ring.split();
    assert_eq!(pop(&mut consumer), Some(Owned::Delete(b"1".to_vec())));
    assert_eq!(pop(&mut consumer), Some(Owned::Delete(b"2".to_vec())));
}

#[test]
fn debug_shows_used_and_capacity() {
    let mut ring: ByteRing<64> = ByteRing::new();
    {
        let (mut producer, consumer) = ring.split();
        producer.push(&Entry::Delete { key: b"" }).unwrap();
        assert_eq!(
            std::format!("{producer:?}"),
            "Producer { used: 12, capacity: 64, .. }"
        );
        assert_eq!(
            std::format!("{consumer:?}"),
            "Consumer { used: 12, capacity: 64, .. }"
        );
    }
    assert_eq!(
        std::format!("{ring:?}"),
        "ByteRing { used: 12, capacity: 64, .. }"
    );
}

#[test]
fn halves_are_send() {
    fn send<X: Send>() {}
    send::<Producer<'static, 64>>();
    send::<Consumer<'static, 64>>();
}

/// Entries sent through the thread test; Miri is far slower, so it sends fewer.
const STRESS_ENTRIES: usize = if cfg!(miri) { 150 } else { 50_000 };

#[test]
fn threads_deliver_every_entry_once_in_order_with_bytes_intact() {
    let mut ring: ByteRing<128> = ByteRing::new();
    let (mut producer, mut consumer) = ring.split();
    // Entry i: key = i's bytes, value = i % 40 bytes of (i as u8); every 97th is a barrier.
    fn expected(i: usize) -> Owned {
        if i.is_multiple_of(97) {
            Owned::Barrier(i as u64)
        } else {
            Owned::Put(
                (i as u32).to_le_bytes().to_vec(),
                std::vec![i as u8; i % 40],
            )
        }
    }
    std::thread::scope(|s| {
        s.spawn(move || {
            for i in 0..STRESS_ENTRIES {
                let owned = expected(i);
                while let Err(e) = producer.push(&owned.entry()) {
                    assert!(matches!(e, PushError::Full { .. }));
                    std::thread::yield_now();
                }
            }
        });
        s.spawn(move || {
            let mut next = 0;
            while next < STRESS_ENTRIES {
                match pop(&mut consumer) {
                    Some(owned) => {
                        assert_eq!(owned, expected(next));
                        next += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
            assert!(consumer.peek().is_none());
        });
    });
}

fn arb_owned() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (
            proptest::collection::vec(any::<u8>(), 0..20),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(k, v)| Owned::Put(k, v)),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Owned::Delete),
        any::<u64>().prop_map(Owned::Barrier),
    ]
}

proptest! {
    // Under Miri: few cases, and no failure file (Miri's isolation has no working directory).
    #![proptest_config(if cfg!(miri) {
        ProptestConfig { cases: 2, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::default()
    })]

    /// Random pushes and pops of random sizes (wrapping many times) against a model queue: every
    /// accepted entry comes out once, in order, intact; a refused one leaves the ring unchanged;
    /// an entry is refused as too large exactly when its encoding is over the limit.
    #[test]
    fn random_pushes_and_pops_match_a_model_queue(
        ops in proptest::collection::vec(prop_oneof![arb_owned().prop_map(Some), Just(None)], 1..200)
    ) {
        random_ops(ops.into_iter().map(|op| op.map_or(Op::Pop, Op::Push)).collect())?;
    }

    /// The same with frames also released in runs (`release_later`, `hand_back`): the producer
    /// sees the room of a run only once it is handed back, and nothing else changes.
    #[test]
    fn random_pushes_and_runs_of_pops_match_a_model_queue(
        ops in proptest::collection::vec(prop_oneof![
            arb_owned().prop_map(Op::Push),
            Just(Op::Pop),
            Just(Op::PopLater),
            Just(Op::HandBack),
        ], 1..200)
    ) {
        random_ops(ops)?;
    }
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    Push(Owned),
    Pop,
    PopLater,
    HandBack,
}

/// Runs `ops` on a 64-byte ring and a model queue (see the proptests).
fn random_ops(ops: Vec<Op>) -> Result<(), TestCaseError> {
    {
        let mut ring: ByteRing<64> = ByteRing::new();
        let (mut producer, mut consumer) = ring.split();
        let mut model: VecDeque<Owned> = VecDeque::new();
        for op in ops {
            match op {
                Op::Push(owned) => {
                    let entry = owned.entry();
                    let len = entry.encoded_len().unwrap();
                    let before = producer.used();
                    match producer.push(&entry) {
                        Ok(()) => model.push_back(owned),
                        Err(PushError::TooLarge { len: Some(l), max }) => {
                            prop_assert_eq!(l, len);
                            prop_assert!(len > max);
                            prop_assert_eq!(producer.used(), before);
                        }
                        Err(PushError::Full { needed, free }) => {
                            prop_assert!(len <= ByteRing::<64>::MAX_ENTRY_LEN);
                            prop_assert!(needed > free);
                            prop_assert_eq!(producer.used(), before);
                            prop_assert!(
                                !model.is_empty() || consumer.unhanded() > 0,
                                "an empty ring takes any entry within the limit"
                            );
                        }
                        Err(other) => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                Op::Pop => prop_assert_eq!(pop(&mut consumer), model.pop_front()),
                Op::PopLater => prop_assert_eq!(pop_later(&mut consumer), model.pop_front()),
                Op::HandBack => consumer.hand_back(),
            }
            // The producer's view counts the released frames not handed back yet.
            prop_assert_eq!(producer.used(), consumer.used() + consumer.unhanded());
        }
        while let Some(owned) = model.pop_front() {
            prop_assert_eq!(pop(&mut consumer), Some(owned));
        }
        prop_assert_eq!(pop(&mut consumer), None);
        consumer.hand_back();
        prop_assert!(producer.is_empty());
    }
    Ok(())
}
