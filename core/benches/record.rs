//! Encode and decode throughput of record frames, for the payload sizes a log sees.
//!
//! `encode`: one frame (header, both checksums, payload copy) into a reused buffer.
//! `decode`: a 4 MiB segment held in memory, fed to the incremental decoder in 64 KiB chunks,
//! every record checked and handed out.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lamina_core::decode::{Decoded, Mode, SegmentDecoder, min_window};
use lamina_core::record::{self, Kind};
use lamina_core::segment::SegmentHeader;
use lamina_core::{Lsn, SegmentId};
use std::hint::black_box;

const PAYLOADS: [usize; 5] = [48, 64, 240, 1008, 4080];

fn header() -> SegmentHeader {
    SegmentHeader {
        core: 0,
        log_id: 0x1a31_7a00,
        sequence: SegmentId(0),
        nonce: 0x5eed,
        first_lsn: Lsn(1),
        epoch: 0,
        prev_nonce: 0,
    }
}

fn encode(c: &mut Criterion) {
    let seed = header().seed();
    let mut group = c.benchmark_group("encode");
    for len in PAYLOADS {
        let payload = vec![0xA5u8; len];
        let mut out = vec![0u8; record::frame_len(len)];
        group.throughput(Throughput::Bytes(record::frame_len(len) as u64));
        let mut lsn = 1u64;
        group.bench_with_input(BenchmarkId::from_parameter(len), &payload, |b, payload| {
            b.iter(|| {
                lsn += 1;
                let n =
                    record::encode(&mut out, &seed, Lsn(lsn), Lsn(lsn - 1), Kind::Data, payload);
                black_box(n)
            })
        });
    }
    group.finish();
}

/// A segment of `len`-byte records filling about 4 MiB.
fn segment(len: usize) -> Vec<u8> {
    let h = header();
    let seed = h.seed();
    let mut out = h.emit().to_vec();
    let payload = vec![0x5Au8; len];
    let frame = record::frame_len(len);
    let mut lsn = 1;
    while out.len() + frame <= 4 << 20 {
        let at = out.len();
        out.resize(at + frame, 0);
        record::encode(
            &mut out[at..],
            &seed,
            Lsn(lsn),
            Lsn(lsn - 1),
            Kind::Data,
            &payload,
        )
        .unwrap();
        lsn += 1;
    }
    out
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for len in PAYLOADS {
        let bytes = segment(len);
        let mut window = vec![0u8; 64 * 1024 + min_window(len)];
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &bytes, |b, bytes| {
            b.iter(|| {
                let mut d = SegmentDecoder::new(&mut window, Mode::Strict);
                let mut rest = &bytes[..];
                let mut records = 0u64;
                loop {
                    match d.poll() {
                        Decoded::NeedMore if rest.is_empty() => d.finish(),
                        Decoded::NeedMore => {
                            let n = d.feed(rest);
                            rest = &rest[n..];
                        }
                        Decoded::Record(r) => {
                            records += 1;
                            black_box(r.payload);
                        }
                        Decoded::End(_) | Decoded::Error(_) => break,
                        _ => {}
                    }
                }
                records
            })
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
