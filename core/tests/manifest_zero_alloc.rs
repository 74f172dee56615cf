//! Proof that the checkpoint manifest never allocates: a counting global allocator watches
//! encoding, decoding and iterating every list of a manifest with hundreds of entries, many
//! times over, and the test fails on the first allocation.
//!
//! Only allocations made by this test's own thread while it is measuring count (a thread-local
//! flag). Every buffer is allocated before the measured region.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use lamina_core::manifest::{List, Manifest, Part, SourceOffset, WalPosition};
use lamina_core::{Lsn, SegmentId};

/// The system allocator, counting the allocations of threads that are measuring.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn note() {
        // `try_with`: never touch a thread-local that is being torn down.
        if MEASURING.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are the caller's; the bookkeeping around it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the number of allocations this thread made inside it.
fn count_allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, ALLOCATIONS.load(Ordering::Relaxed) - before)
}

const CORES: u32 = 64;
const PARTS: u32 = 256;
const ROUNDS: u64 = 1_000;

#[test]
fn encoding_decoding_and_iterating_a_manifest_never_allocate() {
    let wal: Vec<WalPosition> = (0..CORES)
        .map(|core| WalPosition {
            core,
            lsn: Lsn(u64::from(core) * 1_000),
            segment: SegmentId(u64::from(core)),
        })
        .collect();
    let keys: Vec<String> = (0..PARTS).map(|p| format!("9-op-{p:04}")).collect();
    let parts: Vec<Part<'_>> = keys
        .iter()
        .zip(0..)
        .map(|(key, partition)| Part {
            operator: "op",
            partition,
            key,
            size: 4096,
            crc: partition.wrapping_mul(0x9e37_79b9),
            written_by: u64::from(partition % 10),
        })
        .collect();
    let offset_bytes = [7u8; 64];
    let offsets = [
        SourceOffset {
            connector: "files",
            bytes: &offset_bytes,
        },
        SourceOffset {
            connector: "kafka",
            bytes: &offset_bytes[..8],
        },
    ];
    let mut manifest = Manifest {
        id: 9,
        epoch: 9,
        parent: Some(8),
        timestamp: 0,
        watermark: 0,
        wal: List::new(&wal),
        parts: List::new(&parts),
        offsets: List::new(&offsets),
    };
    let mut buf = vec![0u8; manifest.encoded_len() + 64];

    let (checked, allocations) = count_allocations(|| {
        let mut checked = 0u64;
        for round in 0..ROUNDS {
            manifest.timestamp = round;
            let n = manifest.encode(&mut buf).expect("encodes");
            let decoded = Manifest::decode(&buf[..n]).expect("decodes");
            assert_eq!(decoded.timestamp, round);
            checked += decoded.wal.iter().map(|w| w.lsn.0).sum::<u64>() / 1_000;
            checked += decoded.parts.iter().filter(|p| p.size == 4096).count() as u64;
            checked += decoded
                .offsets
                .iter()
                .map(|o| o.bytes.len() as u64)
                .sum::<u64>();
        }
        checked
    });
    assert_eq!(allocations, 0, "the manifest allocated");
    let per_round = u64::from(CORES * (CORES - 1) / 2) + u64::from(PARTS) + 72;
    assert_eq!(checked, ROUNDS * per_round);
}
