//! Ring 0 push latency into a changelog `ByteRing`: ns per 64-byte entry (16-byte key, 43-byte
//! value, 5-byte header) while a consumer thread drains the ring, releasing each frame after
//! reading its bytes. A push that meets a full ring is retried (spinning), and that wait is
//! counted: the figure is the producer's cost per entry when the consumer keeps up.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lamina_core::changelog::{ByteRing, Entry};

/// 64 KiB: about a thousand 68-byte frames.
const RING: usize = 64 * 1024;

fn push_64_byte_entries(c: &mut Criterion) {
    let mut group = c.benchmark_group("changelog");
    group.throughput(Throughput::Elements(1));
    let key = [7u8; 16];
    let value = [9u8; 43];
    let entry = Entry::Put {
        key: &key,
        value: &value,
    };
    assert_eq!(entry.encoded_len(), Some(64));
    let mut ring: Box<ByteRing<RING>> = Box::default();
    let (mut producer, mut consumer) = ring.split();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match consumer.peek() {
                    Some(frame) => {
                        black_box(frame.bytes());
                        frame.release();
                    }
                    None => std::hint::spin_loop(),
                }
            }
        });
        group.bench_function("push_64_byte_entry_with_consumer_draining", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    while producer.push(black_box(&entry)).is_err() {
                        std::hint::spin_loop();
                    }
                }
                start.elapsed()
            });
        });
        stop.store(true, Ordering::Relaxed);
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = push_64_byte_entries
}
criterion_main!(benches);
