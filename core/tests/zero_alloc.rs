//! Proof that the hot paths of lamina-core never allocate: a counting global allocator watches
//! the encoder, the commit pipeline (appends, I/O requests, completions, events, segment
//! roll-over and close) and the decoder over 100,000 records, and the checkpoint coordinator
//! over 10,000 checkpoints (committed and aborted), and the test fails on the first allocation.
//!
//! Only allocations made by this test's own thread while it is measuring count
//! (`lamina_tests::alloc`), so the test harness's threads and the set-up before and the checks
//! after do not. Every buffer is allocated before the measured region.

use lamina_core::checkpoint::{self, Ack, Action, Coordinator, Parts};
use lamina_core::commit::{AppendError, Config, Event, IoRequest, Pipeline, SyncPolicy};
use lamina_core::decode::{Decoded, End, Mode, SegmentDecoder, min_window};
use lamina_core::record::{self, Kind};
use lamina_core::segment::{self, SegmentHeader};
use lamina_core::{Lsn, SegmentId};
use lamina_tests::alloc::{Counting, count_allocations, first_counted_size};

#[global_allocator]
static GLOBAL: Counting = Counting;

const RECORDS: u64 = 100_000;
const MAX_PAYLOAD: usize = 128;
const SEGMENT_SIZE: usize = 1 << 20;
/// Segments the disk can hold; 100,000 records of 80 bytes on average take about ten.
const MAX_SEGMENTS: usize = 32;
const SLOTS: usize = 8;

/// The payload of the `i`-th data record (0-based): 0 to 100 bytes, derived from `i`.
fn payload(i: u64, out: &mut [u8; MAX_PAYLOAD]) -> &[u8] {
    let len = (i * 7 % 101) as usize;
    for (k, b) in out[..len].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(k as u8);
    }
    &out[..len]
}

fn first_header() -> SegmentHeader {
    SegmentHeader {
        core: 0,
        log_id: 0x1a3b,
        sequence: SegmentId(0),
        nonce: 0x5eed,
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    }
}

/// A disk that completes everything at once: creates and writes land in preallocated segment
/// images, syncs are no-ops.
struct Disk {
    segments: Vec<Vec<u8>>,
    used: usize,
    /// Tokens of the requests submitted and not yet completed.
    in_flight: [u64; 64],
}

impl Disk {
    fn new() -> Disk {
        Disk {
            segments: (0..MAX_SEGMENTS).map(|_| vec![0; SEGMENT_SIZE]).collect(),
            used: 0,
            in_flight: [0; 64],
        }
    }

    fn segment(&mut self, id: SegmentId) -> &mut [u8] {
        let i = id.0 as usize;
        self.used = self.used.max(i + 1);
        &mut self.segments[i]
    }
}

/// What the driver has seen.
#[derive(Default)]
struct Seen {
    durable: Lsn,
    rolls: u64,
    closed: Option<Lsn>,
}

/// Submits every request the pipeline has, completes them (newest first), until it asks for
/// nothing more; then takes its events.
fn drive(p: &mut Pipeline<'_, SLOTS>, disk: &mut Disk, seen: &mut Seen) {
    loop {
        let mut n = 0;
        while let Some(request) = p.poll_io() {
            match &request {
                IoRequest::Create {
                    segment, header, ..
                } => disk.segment(*segment)[..segment::HEADER_LEN].copy_from_slice(header),
                IoRequest::Write {
                    segment,
                    offset,
                    range,
                    ..
                } => {
                    let bytes = p.bytes(range.clone());
                    let at = *offset as usize;
                    disk.segment(*segment)[at..at + bytes.len()].copy_from_slice(bytes);
                }
                IoRequest::Sync { .. } | IoRequest::SyncNamespace { .. } => {}
            }
            disk.in_flight[n] = request.token();
            n += 1;
        }
        if n == 0 {
            break;
        }
        for token in disk.in_flight[..n].iter().rev() {
            p.handle_completion(*token, Ok(()))
                .expect("the pipeline knows its own tokens");
        }
    }
    while let Some(event) = p.poll_event() {
        match event {
            Event::Durable { upto } => seen.durable = upto,
            Event::Rolled { .. } => seen.rolls += 1,
            Event::Closed { last } => seen.closed = Some(last),
            Event::Poisoned(poison) => panic!("poisoned without a failure: {poison}"),
        }
    }
}

/// Appends `RECORDS` records, closes the log, and returns what the driver saw.
fn commit(buf: &mut [u8], disk: &mut Disk) -> Seen {
    let config = Config {
        policy: SyncPolicy::Batch {
            max_records: 64,
            max_bytes: 16 * 1024,
            max_delay: 50_000,
        },
        max_writes_in_flight: 4,
        linked: false,
        segment_size: SEGMENT_SIZE as u64,
        max_payload: MAX_PAYLOAD as u32,
        nonce_seed: 7,
    };
    let mut p = Pipeline::<SLOTS>::create(buf, config, first_header()).expect("valid config");
    let mut seen = Seen::default();
    let mut scratch = [0u8; MAX_PAYLOAD];
    let mut now = 0u64;
    for i in 0..RECORDS {
        let data = payload(i, &mut scratch);
        loop {
            match p.append(data, now) {
                Ok(_) => break,
                Err(AppendError::Full) => drive(&mut p, disk, &mut seen),
                Err(e) => panic!("append {i}: {e}"),
            }
        }
        now += 1_000;
        if p.poll_timeout().is_some_and(|t| t <= now) {
            p.handle_timeout(now);
        }
        drive(&mut p, disk, &mut seen);
    }
    p.close().expect("not poisoned");
    for _ in 0..100 {
        drive(&mut p, disk, &mut seen);
        if seen.closed.is_some() {
            break;
        }
    }
    assert!(p.is_idle(), "everything is durable after close");
    seen
}

/// What the decoder found across the segments.
#[derive(Default)]
struct Read {
    data: u64,
    seals: u64,
    last_lsn: Lsn,
}

/// Decodes every segment the disk holds in 4 KiB chunks, checking each record against what was
/// appended.
fn decode(disk: &Disk, window: &mut [u8]) -> Read {
    let mut read = Read::default();
    let mut scratch = [0u8; MAX_PAYLOAD];
    for (n, image) in disk.segments[..disk.used].iter().enumerate() {
        let mut d = SegmentDecoder::new(&mut *window, Mode::Strict);
        let mut rest: &[u8] = image;
        loop {
            match d.poll() {
                Decoded::NeedMore if rest.is_empty() => d.finish(),
                Decoded::NeedMore => {
                    let k = d.feed(&rest[..rest.len().min(4096)]);
                    rest = &rest[k..];
                }
                Decoded::Header(h) => assert_eq!(h.sequence, SegmentId(n as u64)),
                Decoded::Record(r) => {
                    assert_eq!(r.header.lsn, read.last_lsn.next(), "LSNs are continuous");
                    read.last_lsn = r.header.lsn;
                    match r.header.kind {
                        Kind::Data => {
                            assert_eq!(r.payload, payload(read.data, &mut scratch));
                            read.data += 1;
                        }
                        Kind::Seal => read.seals += 1,
                        other => panic!("unexpected {other} record"),
                    }
                }
                Decoded::End(End::Sealed { .. }) => break,
                Decoded::End(end) => panic!("segment {n} ends {end:?}"),
                Decoded::Skipped(s) => panic!("segment {n}: skipped {s:?}"),
                Decoded::Error(e) => panic!("segment {n}: {e}"),
            }
        }
    }
    read
}

/// Encodes `RECORDS` records with `record::encode` into one segment image after its header.
fn encode(image: &mut [u8]) -> usize {
    let header = first_header();
    let seed = header.seed();
    image[..segment::HEADER_LEN].copy_from_slice(&header.emit());
    let mut at = segment::HEADER_LEN;
    let mut scratch = [0u8; MAX_PAYLOAD];
    for i in 0..RECORDS {
        let lsn = Lsn(i + 1);
        let data = payload(i, &mut scratch);
        at += record::encode(&mut image[at..], &seed, lsn, lsn.prev(), Kind::Data, data)
            .expect("the image has room");
    }
    at
}

/// Decodes the image `encode` wrote and returns the number of records.
fn decode_encoded(image: &[u8], window: &mut [u8]) -> u64 {
    let mut d = SegmentDecoder::new(&mut *window, Mode::Strict);
    let mut rest = image;
    let mut scratch = [0u8; MAX_PAYLOAD];
    let mut records = 0;
    loop {
        match d.poll() {
            Decoded::NeedMore if rest.is_empty() => d.finish(),
            Decoded::NeedMore => {
                let k = d.feed(&rest[..rest.len().min(4096)]);
                rest = &rest[k..];
            }
            Decoded::Header(_) => {}
            Decoded::Record(r) => {
                assert_eq!(r.header.lsn, Lsn(records + 1));
                assert_eq!(r.payload, payload(records, &mut scratch));
                records += 1;
            }
            Decoded::End(End::Clean { next_lsn, .. }) => {
                assert_eq!(next_lsn, Lsn(records + 1));
                return records;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn encode_commit_and_decode_of_100k_records_allocate_nothing() {
    // Everything the measured region uses, allocated up front.
    let mut image = vec![0u8; segment::HEADER_LEN + RECORDS as usize * record::frame_len(100) + 64];
    let mut window = vec![0u8; min_window(MAX_PAYLOAD)];
    let mut buf = vec![0u8; 64 * 1024];
    let mut disk = Disk::new();

    let ((encoded, decoded), allocations) = count_allocations(|| {
        let end = encode(&mut image);
        (end, decode_encoded(&image[..end], &mut window))
    });
    assert_eq!(decoded, RECORDS);
    assert!(encoded > segment::HEADER_LEN);
    assert_eq!(
        allocations,
        0,
        "encode + decode allocated {allocations} times (the first: {} bytes)",
        first_counted_size()
    );

    let ((seen, read), allocations) = count_allocations(|| {
        let seen = commit(&mut buf, &mut disk);
        (seen, decode(&disk, &mut window))
    });
    assert_eq!(
        allocations,
        0,
        "commit + decode allocated {allocations} times (the first: {} bytes)",
        first_counted_size()
    );
    // The work really happened: every record durable, several segments, all read back.
    assert!(seen.rolls >= 5, "only {} roll-overs", seen.rolls);
    assert_eq!(seen.closed, Some(read.last_lsn));
    assert_eq!(seen.durable, read.last_lsn);
    assert_eq!(read.data, RECORDS);
    assert_eq!(read.seals, seen.rolls + 1, "every segment ends with a seal");
    assert_eq!(read.last_lsn, Lsn(RECORDS + read.seals));
}

/// Runs `rounds` checkpoints on four cores: every fourth one times out, every seventh fails its
/// publish, the rest commit. Returns (commits, aborts, surprises): it does not panic, so that a
/// failure's own allocations never land in the measured region.
fn checkpoints(rounds: u64) -> (u64, u64, u64) {
    const CORES: usize = 4;
    let Ok(mut c) = Coordinator::<CORES>::new(checkpoint::Config { timeout: 1_000 }) else {
        return (0, 0, 1);
    };
    let (mut commits, mut aborts, mut surprises) = (0, 0, 0);
    let mut now = 0;
    for round in 0..rounds {
        let Ok(attempt) = c.trigger(now) else {
            surprises += 1;
            continue;
        };
        let times_out = round % 4 == 3;
        while let Some(action) = c.poll_action() {
            match action {
                // The last core never answers in a round that times out.
                Action::InjectBarrier { core, .. } if times_out && core == CORES - 1 => {}
                Action::InjectBarrier { core, epoch } => {
                    let position = Lsn(round * 10 + core as u64);
                    let ack = Ack {
                        core,
                        epoch,
                        position,
                        durable: core % 2 == 0,
                        parts: Parts {
                            count: 1,
                            handle: round,
                        },
                    };
                    if c.handle_ack(ack).is_err() || c.handle_durable(core, position).is_err() {
                        surprises += 1;
                    }
                }
                Action::WriteManifest(m) => {
                    let result = if round % 7 == 6 {
                        Err(lamina_core::io::Failure::Io)
                    } else {
                        Ok(())
                    };
                    if c.handle_published(m.id, result).is_err() {
                        surprises += 1;
                    }
                }
            }
        }
        if times_out {
            now += 1_000;
            c.handle_timeout(now);
        }
        match c.poll_event() {
            Some(checkpoint::Event::Committed(cp)) if cp == attempt => commits += 1,
            Some(checkpoint::Event::Aborted { attempt: a, .. }) if a == attempt => aborts += 1,
            _ => surprises += 1,
        }
        now += 1;
    }
    (commits, aborts, surprises)
}

#[test]
fn checkpoint_coordinator_over_10k_checkpoints_allocates_nothing() {
    const ROUNDS: u64 = 10_000;
    let ((commits, aborts, surprises), allocations) = count_allocations(|| checkpoints(ROUNDS));
    assert_eq!(
        allocations,
        0,
        "the checkpoint coordinator allocated {allocations} times (the first: {} bytes)",
        first_counted_size()
    );
    assert_eq!(
        surprises, 0,
        "the coordinator refused a valid input or missed an outcome"
    );
    assert_eq!(commits + aborts, ROUNDS);
    assert!(
        commits > ROUNDS / 2 && aborts > ROUNDS / 4,
        "{commits} commits, {aborts} aborts"
    );
}
