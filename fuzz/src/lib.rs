//! The checks behind lamina's fuzz targets, and the seed corpus they start from.
//!
//! Under `cfg(fuzzing)` lamina-core's checksum comparisons always pass (see the `# Fuzzing`
//! sections of `record.rs` and `segment.rs`), so the fuzzer reaches every state behind them. The
//! checks here therefore never depend on a checksum: no panic, termination within a bound linear
//! in the input, the decoder's liveness contract, the same answer in any chunking, and reports
//! that agree with the bytes (positions, LSN order, lengths, field values, the payload found at
//! the offset reported).

pub mod manifest;
pub mod part;

use lamina_core::decode::{DecodeError, Decoded, End, Mode, SegmentDecoder, Skipped, min_window};
use lamina_core::record::{self, Kind, MAX_PAYLOAD, RecordHeader};
use lamina_core::segment::{self, SegmentHeader};
use lamina_core::{Lsn, SegmentId};

/// The window every fuzz decode works in: frames up to 64 KiB fit, larger ones exercise
/// [`DecodeError::WindowTooSmall`].
pub const WINDOW: usize = min_window(64 * 1024);

/// The valid segment header that `decode_valid_prefix` puts in front of the fuzzer's bytes.
pub fn prefix_header() -> SegmentHeader {
    SegmentHeader {
        core: 0,
        log_id: 0x0123_4567_89ab_cdef,
        sequence: SegmentId(0),
        nonce: 0x5eed_5eed_0000_0001,
        first_lsn: Lsn::FIRST,
        epoch: 0,
        prev_nonce: 0,
    }
}

/// A record as reported, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The segment header.
    Header(SegmentHeader),
    /// A record: its header, offset and payload.
    Record(RecordHeader, u64, Vec<u8>),
    /// A skipped region.
    Skipped(Skipped),
}

/// The decoder's final answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Final {
    /// How the segment ends.
    End(End),
    /// Why decoding stopped.
    Error(DecodeError),
}

/// Decodes `segment` with the chunk size and mode that `control` picks (low 6 bits: 0..=62 feed
/// that many bytes plus one per call, 63 feeds everything at once; high 2 bits: 0 `Strict`, 1 `PointInTime`, 2
/// `SkipCorrupt`, 3 `Strict`), checks everything the decoder reports, checks that feeding the
/// whole segment at once reports the same, and returns the final answer.
pub fn check_decode(control: u8, segment: &[u8]) -> Final {
    let chunk = match control & 0x3f {
        63 => usize::MAX,
        n => usize::from(n) + 1,
    };
    let mode = match control >> 6 {
        1 => Mode::PointInTime,
        2 => Mode::SkipCorrupt,
        _ => Mode::Strict,
    };
    let (events, last) = decode(segment, chunk, mode);
    check_reports(segment, mode, &events, last);
    if chunk != usize::MAX {
        let whole = decode(segment, usize::MAX, mode);
        assert!(
            whole == (events, last),
            "chunks of {chunk} and the whole input decode differently"
        );
    }
    last
}

fn decode(segment: &[u8], chunk: usize, mode: Mode) -> (Vec<Event>, Final) {
    let mut window = vec![0u8; WINDOW];
    let mut decoder = SegmentDecoder::new(&mut window, mode);
    let mut rest = segment;
    let mut finished = false;
    let mut events = Vec::new();
    let limit = 4 * segment.len() + 1_000;
    let mut polls = 0;
    let last = loop {
        polls += 1;
        assert!(
            polls <= limit,
            "decoder did not finish within {limit} polls"
        );
        match decoder.poll() {
            Decoded::NeedMore => {
                assert!(!finished, "NeedMore after finish");
                if rest.is_empty() {
                    decoder.finish();
                    finished = true;
                } else {
                    let n = decoder.feed(&rest[..chunk.min(rest.len())]);
                    assert!(n > 0, "NeedMore with no room in the window");
                    rest = &rest[n..];
                }
            }
            Decoded::Header(h) => events.push(Event::Header(h)),
            Decoded::Record(r) => {
                events.push(Event::Record(r.header, r.offset, r.payload.to_vec()));
            }
            Decoded::Skipped(s) => events.push(Event::Skipped(s)),
            Decoded::End(end) => break Final::End(end),
            Decoded::Error(e) => break Final::Error(e),
        }
    };
    for _ in 0..2 {
        let again = match decoder.poll() {
            Decoded::End(end) => Final::End(end),
            Decoded::Error(e) => Final::Error(e),
            other => panic!("final answer not stable: {other:?} after {last:?}"),
        };
        assert_eq!(again, last, "final answer changed");
    }
    (events, last)
}

/// Checks that the reports agree with the bytes, without relying on any checksum.
fn check_reports(segment: &[u8], mode: Mode, events: &[Event], last: Final) {
    let mut events = events.iter();
    let Some(Event::Header(header)) = events.next() else {
        assert!(
            matches!(last, Final::End(End::BadHeader { .. })),
            "no header but {last:?}"
        );
        assert!(events.next().is_none());
        return;
    };
    assert_eq!(SegmentHeader::parse(segment).as_ref(), Ok(header));
    let mut at = segment::HEADER_LEN as u64;
    let mut next = header.first_lsn;
    let mut skip: Option<Skipped> = None;
    let mut sealed = None;
    for event in events {
        assert!(sealed.is_none(), "{event:?} after a seal");
        match event {
            Event::Header(h) => panic!("a second header {h:?}"),
            Event::Skipped(s) => {
                assert_eq!(mode, Mode::SkipCorrupt, "a skip outside SkipCorrupt");
                assert!(skip.is_none(), "two skips in a row");
                assert_eq!((s.offset, s.first_lost), (at, next));
                assert!(s.len > 0 && s.len % record::ALIGN as u64 == 0);
                assert!(s.resumed >= s.first_lost);
                skip = Some(*s);
            }
            Event::Record(h, offset, payload) => {
                match skip.take() {
                    Some(s) => assert_eq!((*offset, h.lsn), (s.offset + s.len, s.resumed)),
                    None => assert_eq!((*offset, h.lsn), (at, next)),
                }
                assert!(h.lsn != Lsn::ZERO && h.watermark < h.lsn && h.len <= MAX_PAYLOAD);
                assert!(h.frame_len() <= WINDOW);
                let start = usize::try_from(*offset).unwrap();
                let frame = &segment[start..start + h.frame_len()];
                assert_eq!(frame[8..16], h.lsn.0.to_le_bytes());
                assert_eq!(frame[16..24], h.watermark.0.to_le_bytes());
                assert_eq!(frame[24..28], h.len.to_le_bytes());
                assert_eq!(frame[28], h.kind as u8);
                assert_eq!(frame[29..32], [0; 3]);
                assert_eq!(payload[..], frame[32..32 + h.len as usize]);
                at = offset + h.frame_len() as u64;
                next = h.lsn.next();
                if h.kind == Kind::Seal {
                    sealed = Some((h.lsn, at));
                }
            }
        }
    }
    assert!(skip.is_none(), "a skip with no record after it");
    match last {
        Final::End(End::Sealed { last_lsn, offset }) => {
            assert_eq!(Some((last_lsn, offset)), sealed);
        }
        Final::End(End::Clean { offset, next_lsn }) => {
            assert_eq!((offset, next_lsn), (at, next));
        }
        Final::End(End::Torn {
            offset,
            next_lsn,
            beyond,
            extent,
        }) => {
            assert_eq!((offset, next_lsn), (at, next));
            assert!(extent >= offset && extent >= beyond.extent);
            assert!(beyond.frames == 0 || beyond.first_lsn >= next_lsn);
        }
        Final::End(End::Corrupt(c)) => {
            assert_eq!((c.offset, c.expected_lsn), (at, next));
            assert!(c.witness_offset > c.offset);
            assert!(c.witness_watermark >= c.expected_lsn);
            assert!(c.witness_lsn >= c.expected_lsn);
        }
        Final::End(End::BadHeader { .. }) => panic!("a bad header after a header"),
        Final::Error(DecodeError::WindowTooSmall { offset, needed, .. }) => {
            assert_eq!(offset, at);
            assert!(needed > WINDOW);
        }
        Final::Error(e) => panic!("unexpected error {e:?}"),
    }
}

/// The frames of the seed segments: LSN 1 onward under [`prefix_header`]'s seed.
fn frames(kinds: &[(Kind, &[u8], u64)]) -> Vec<u8> {
    let seed = prefix_header().seed();
    let mut out = Vec::new();
    for (i, (kind, payload, watermark)) in kinds.iter().enumerate() {
        let start = out.len();
        out.resize(start + record::frame_len(payload.len()), 0);
        record::encode(
            &mut out[start..],
            &seed,
            Lsn(i as u64 + 1),
            Lsn(*watermark),
            *kind,
            payload,
        )
        .unwrap();
    }
    out
}

/// The seed corpus: `(name, control byte, frames)`. The `decode` seed is the control byte, the
/// prefix header and the frames; the `decode_valid_prefix` seed is the control byte and the
/// frames.
pub fn seeds() -> Vec<(&'static str, u8, Vec<u8>)> {
    let epoch = 7u64.to_le_bytes();
    let checkpoint = 42u64.to_le_bytes();
    let records: [(Kind, &[u8], u64); 5] = [
        (Kind::Data, b"hello", 0),
        (Kind::Epoch, &epoch, 1),
        (Kind::Data, b"a payload of more than eight bytes", 1),
        (Kind::Checkpoint, &checkpoint, 3),
        (Kind::Padding, &[0; 12], 3),
    ];
    let small = frames(&records);
    let mut sealed_records = records.to_vec();
    sealed_records.push((Kind::Seal, b"", 5));
    let sealed = frames(&sealed_records);
    // A crash in the middle of the third record's payload (its header made it to storage),
    // the rest of a pre-zeroed file after it.
    let mut torn = small[..40 + 40 + 32 + 10].to_vec();
    torn.resize(small.len() + 64, 0);
    // A flipped payload bit in the first record; later watermarks prove it was durable.
    let mut corrupt = small.clone();
    corrupt[32] ^= 0x20;
    vec![
        ("empty", 0x00, Vec::new()),
        ("small", 0x07, small),
        ("sealed", 0x3f, sealed),
        ("torn", 0x01, torn),
        ("corrupt", 0x80 | 0x05, corrupt),
    ]
}

/// The two targets' seed files: `(target, file name, bytes)`.
pub fn seed_files() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, control, frames) in seeds() {
        let mut whole = vec![control];
        // `empty` is an empty file for `decode`: not even a header.
        if name != "empty" {
            whole.extend_from_slice(&prefix_header().emit());
        }
        whole.extend_from_slice(&frames);
        out.push(("decode", name, whole));
        let mut prefixed = vec![control];
        prefixed.extend_from_slice(&frames);
        out.push(("decode_valid_prefix", name, prefixed));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// `LAMINA_WRITE_SEEDS=1 cargo test` (in `fuzz/`) rewrites the seed files.
    #[test]
    fn checked_in_seeds_are_what_seed_files_builds() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds");
        for (target, name, bytes) in seed_files() {
            let path = dir.join(target).join(name);
            if std::env::var_os("LAMINA_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{} is stale",
                path.display()
            );
        }
    }

    #[test]
    fn seeds_decode_to_the_end_their_name_says() {
        for (target, name, bytes) in seed_files() {
            let last = if target == "decode" {
                check_decode(bytes[0], &bytes[1..])
            } else {
                let mut segment = prefix_header().emit().to_vec();
                segment.extend_from_slice(&bytes[1..]);
                check_decode(bytes[0], &segment)
            };
            let ok = match name {
                "empty" if target == "decode" => matches!(
                    last,
                    Final::End(End::BadHeader {
                        error: segment::HeaderError::Blank,
                        rest_is_zero: true
                    })
                ),
                "empty" | "small" => matches!(last, Final::End(End::Clean { .. })),
                "sealed" => matches!(last, Final::End(End::Sealed { .. })),
                "torn" => matches!(last, Final::End(End::Torn { .. })),
                // SkipCorrupt: the damaged record is skipped and the rest read to a clean end.
                "corrupt" => matches!(last, Final::End(End::Clean { .. })),
                _ => false,
            };
            assert!(ok, "{target}/{name}: {last:?}");
        }
    }

    #[test]
    fn corrupt_seed_is_corruption_in_strict() {
        let (_, _, frames) = seeds().into_iter().find(|s| s.0 == "corrupt").unwrap();
        let mut segment = prefix_header().emit().to_vec();
        segment.extend_from_slice(&frames);
        let last = check_decode(0x05, &segment);
        assert!(matches!(last, Final::End(End::Corrupt(_))), "{last:?}");
    }
}
