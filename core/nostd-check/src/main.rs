//! The no_std proof of lamina-core: a bare-metal binary with a panic handler and no global
//! allocator that drives the core's encoder, decoder, commit pipeline and checkpoint
//! coordinator, and encodes and decodes a checkpoint manifest.
//!
//! Built for `thumbv7em-none-eabihf` by `scripts/test.sh`. If lamina-core or anything it
//! depends on needs `std` or `alloc`, this does not build or link: there is no `std` for the
//! target, and without a `#[global_allocator]` any use of `alloc` fails at link time. Nothing
//! runs it; `_start` is only the root that keeps the calls from being discarded.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::panic::PanicInfo;

use lamina_core::checkpoint::{self, Ack, Action, Coordinator, Parts};
use lamina_core::commit::{Config, Event, IoRequest, Pipeline, SyncPolicy};
use lamina_core::decode::{Decoded, End, Mode, SegmentDecoder, min_window};
use lamina_core::manifest::{List, Manifest, Part, SourceOffset, WalPosition};
use lamina_core::record::{self, Kind, Seed};
use lamina_core::segment::{self, SegmentHeader};
use lamina_core::{Lsn, SegmentId};

const MAX_PAYLOAD: u32 = 64;
const SEGMENT_SIZE: usize = 2048;
const RECORDS: u32 = 40;

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// The entry point the linker roots the binary at (rust-lld's default entry is `_start`).
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    black_box(encode_one());
    black_box(commit_and_decode());
    black_box(checkpoint_once());
    black_box(manifest_round_trip());
    loop {
        core::hint::spin_loop();
    }
}

fn header() -> SegmentHeader {
    SegmentHeader {
        core: 0,
        log_id: black_box(1),
        sequence: SegmentId(0),
        nonce: black_box(0x5eed),
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    }
}

/// The encoder on its own.
fn encode_one() -> usize {
    let mut frame = [0u8; record::frame_len(16)];
    let seed = Seed::new(black_box(b"log-id--sequence--nonce-"));
    let payload = black_box([7u8; 16]);
    record::encode(&mut frame, &seed, Lsn(2), Lsn(1), Kind::Data, &payload)
        .map_or(0, |n| black_box(&frame).len().min(n))
}

/// Drives the pipeline against a disk that completes at once, then decodes what it wrote.
/// Returns the number of records decoded.
fn commit_and_decode() -> u32 {
    let mut buf = [0u8; 1024];
    let mut disk = [0u8; SEGMENT_SIZE];
    let config = Config {
        policy: SyncPolicy::Batch {
            max_records: 4,
            max_bytes: 512,
            max_delay: 1_000,
        },
        max_writes_in_flight: 2,
        linked: black_box(false),
        segment_size: SEGMENT_SIZE as u64,
        max_payload: MAX_PAYLOAD,
        nonce_seed: black_box(3),
    };
    let Ok(mut pipeline) = Pipeline::<4>::create(&mut buf, config, header()) else {
        return 0;
    };
    let mut durable = Lsn::ZERO;
    let mut appended = 0u32;
    let mut now = 0u64;
    while durable.0 < u64::from(RECORDS) && pipeline.poisoned().is_none() {
        if appended < RECORDS {
            let payload = black_box([appended as u8; 24]);
            if pipeline.append(&payload, now).is_ok() {
                appended += 1;
            }
        } else {
            pipeline.flush();
        }
        while let Some(request) = pipeline.poll_io() {
            if let IoRequest::Write { offset, range, .. } = &request {
                let bytes = pipeline.bytes(range.clone());
                let at = *offset as usize;
                if let Some(dst) = disk.get_mut(at..at + bytes.len()) {
                    dst.copy_from_slice(bytes);
                }
            }
            if let IoRequest::Create { header, .. } = &request
                && let Some(dst) = disk.get_mut(..segment::HEADER_LEN)
            {
                dst.copy_from_slice(header);
            }
            let _ = pipeline.handle_completion(request.token(), Ok(()));
        }
        while let Some(event) = pipeline.poll_event() {
            if let Event::Durable { upto } = event {
                durable = upto;
            }
        }
        now += 100;
        pipeline.handle_timeout(now);
    }
    black_box(&disk);

    let mut window = [0u8; min_window(MAX_PAYLOAD as usize)];
    let mut decoder = SegmentDecoder::new(&mut window, Mode::Strict);
    let mut rest: &[u8] = &disk;
    let mut records = 0u32;
    loop {
        match decoder.poll() {
            Decoded::NeedMore if rest.is_empty() => decoder.finish(),
            Decoded::NeedMore => {
                let n = decoder.feed(rest);
                rest = rest.get(n..).unwrap_or(&[]);
            }
            Decoded::Record(r) => {
                black_box(r.payload);
                records += 1;
            }
            Decoded::Header(_) | Decoded::Skipped(_) => {}
            Decoded::End(End::Clean { .. }) => return records,
            Decoded::End(_) | Decoded::Error(_) => return 0,
        }
    }
}

/// One checkpoint on two cores through the coordinator: barriers, durable acknowledgements, the
/// manifest, its publish. Returns the committed checkpoint's id, or 0.
fn checkpoint_once() -> u64 {
    let Ok(mut coordinator) = Coordinator::<2>::new(checkpoint::Config {
        timeout: black_box(1_000),
    }) else {
        return 0;
    };
    if coordinator.trigger(black_box(5)).is_err() {
        return 0;
    }
    while let Some(action) = coordinator.poll_action() {
        match action {
            Action::InjectBarrier { core, epoch } => {
                let ack = Ack {
                    core,
                    epoch,
                    position: Lsn(black_box(10)),
                    durable: black_box(true),
                    parts: Parts {
                        count: 1,
                        handle: core as u64,
                    },
                };
                let _ = coordinator.handle_ack(ack);
            }
            Action::WriteManifest(manifest) => {
                let _ = coordinator.handle_published(manifest.id, black_box(Ok(())));
            }
        }
    }
    coordinator.handle_timeout(black_box(2_000));
    let _ = coordinator.poll_event();
    coordinator.current().map_or(0, |c| c.id)
}

/// Encodes a checkpoint manifest into a stack buffer and decodes it again. Returns the total length
/// of the decoded part keys (0 on any error).
fn manifest_round_trip() -> usize {
    let wal = [
        WalPosition {
            core: 0,
            lsn: Lsn(black_box(40)),
            segment: SegmentId(0),
        },
        WalPosition {
            core: 1,
            lsn: Lsn(black_box(12)),
            segment: SegmentId(0),
        },
    ];
    let parts = [Part {
        operator: black_box("window"),
        partition: 0,
        key: black_box("2-window-0"),
        size: 4096,
        crc: black_box(0x1234_5678),
        written_by: 2,
    }];
    let offsets = [SourceOffset {
        connector: "uart",
        bytes: black_box(&[1, 2, 3, 4]),
    }];
    let manifest = Manifest {
        id: black_box(2),
        epoch: 5,
        parent: Some(1),
        timestamp: black_box(1_000),
        watermark: -1,
        wal: List::new(&wal),
        parts: List::new(&parts),
        offsets: List::new(&offsets),
    };
    let mut buf = [0u8; 256];
    let Ok(n) = manifest.encode(&mut buf) else {
        return 0;
    };
    let Some(bytes) = black_box(&buf).get(..n) else {
        return 0;
    };
    match Manifest::decode(bytes) {
        Ok(decoded) => decoded.parts.iter().map(|p| black_box(p.key).len()).sum(),
        Err(_) => 0,
    }
}
