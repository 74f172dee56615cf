//! CRC32C throughput: the reference table against [`Crc32c::update`], which is the hardware path
//! when the build enables it (see [`HARDWARE`]), on record-sized and segment-sized buffers.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lamina_core::crc::{Crc32c, HARDWARE, update_reference};

fn crc32c(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    let dispatched = if HARDWARE {
        "hardware"
    } else {
        "dispatched-reference"
    };
    for size in [64, 256, 4096, 65_536] {
        let data: Vec<u8> = (0..size)
            .map(|i: u32| (i.wrapping_mul(0x9E37_79B9) >> 24) as u8)
            .collect();
        group.throughput(Throughput::Bytes(u64::from(size)));
        group.bench_with_input(BenchmarkId::new("reference", size), &data, |b, data| {
            b.iter(|| update_reference(!0, black_box(data)));
        });
        group.bench_with_input(BenchmarkId::new(dispatched, size), &data, |b, data| {
            b.iter(|| Crc32c::new().update(black_box(data)).finish());
        });
    }
    group.finish();
}

criterion_group!(benches, crc32c);
criterion_main!(benches);
