//! Hostile input and API misuse against the core: the segment decoder fed any bytes in any
//! chunking through any window, and the commit pipeline driven the wrong way (bad tokens,
//! duplicated completions, time running backwards, LSNs and offsets at the edge of `u64`).
//!
//! Every test checks the rules that are not negotiable: no panic, termination in a number of
//! polls bounded by the input, and a classification of damage that follows the durable
//! watermark rule of `decode.rs`. `PROPTEST_CASES=N` runs the property
//! tests longer.

use lamina_core::commit::{
    AppendError, Config, ConfigError, Event, IoRequest, LAST_APPENDABLE, Pipeline, Resume,
    ResumeTail, SEAL_LEN, SyncPolicy, UnknownCompletion,
};
use lamina_core::decode::{
    Corruption, DecodeError, Decoded, End, Mode, SegmentDecoder, Skipped, min_window,
};
use lamina_core::io::Failure;
use lamina_core::record::{self, HeaderCheck, Kind};
use lamina_core::segment::{self, HeaderError, SegmentHeader};
use lamina_core::{Lsn, SegmentId};
use proptest::prelude::*;
use std::collections::BTreeMap;

// ------------------------------------------------------------------------------------------------
// Building segments
// ------------------------------------------------------------------------------------------------

const HEADER: usize = segment::HEADER_LEN;

fn seg_header(first_lsn: u64) -> SegmentHeader {
    SegmentHeader {
        core: 0,
        log_id: 0x0bad_cafe,
        sequence: SegmentId(0),
        nonce: 0x1357_9bdf,
        first_lsn: Lsn(first_lsn),
        epoch: 0,
        prev_nonce: 0,
    }
}

/// A frame as the builder wrote it.
#[derive(Clone, Debug)]
struct Frame {
    lsn: u64,
    watermark: u64,
    kind: Kind,
    offset: usize,
    end: usize,
    payload: Vec<u8>,
}

/// A segment under construction: its header and frames, each at the offset where the previous
/// one ended.
#[derive(Clone, Debug)]
struct Seg {
    header: SegmentHeader,
    bytes: Vec<u8>,
    frames: Vec<Frame>,
}

impl Seg {
    fn new(first_lsn: u64) -> Self {
        let header = seg_header(first_lsn);
        Seg {
            header,
            bytes: header.emit().to_vec(),
            frames: Vec::new(),
        }
    }

    /// Appends a frame of this segment's seed, whatever its LSN.
    fn push(&mut self, lsn: u64, watermark: u64, kind: Kind, payload: &[u8]) -> &mut Self {
        let mut frame = vec![0u8; record::frame_len(payload.len())];
        let n = record::encode(
            &mut frame,
            &self.header.seed(),
            Lsn(lsn),
            Lsn(watermark),
            kind,
            payload,
        )
        .expect("a frame the format allows");
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(&frame[..n]);
        self.frames.push(Frame {
            lsn,
            watermark,
            kind,
            offset,
            end: self.bytes.len(),
            payload: payload.to_vec(),
        });
        self
    }

    /// Data records `lsns`, each with watermark `wm(lsn)` and a payload of `len(lsn)` bytes.
    fn data(
        &mut self,
        lsns: impl IntoIterator<Item = u64>,
        wm: impl Fn(u64) -> u64,
        len: impl Fn(u64) -> usize,
    ) -> &mut Self {
        for lsn in lsns {
            self.push(lsn, wm(lsn), Kind::Data, &payload(lsn, len(lsn)));
        }
        self
    }

    fn frame(&self, lsn: u64) -> &Frame {
        self.frames.iter().find(|f| f.lsn == lsn).expect("a frame")
    }
}

fn payload(lsn: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (lsn as u8).wrapping_mul(31) ^ (i as u8))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Driving the decoder
// ------------------------------------------------------------------------------------------------

/// How a decoding run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    End(End),
    Error(DecodeError),
    /// `NeedMore` with no space to put more bytes in, before the bytes ran out: a caller that
    /// only feeds can never make progress.
    Stuck {
        offset_wanted: u64,
    },
}

#[derive(Clone, Debug)]
struct Run {
    header: Option<SegmentHeader>,
    /// (LSN, offset, kind, payload) of every record, in order.
    records: Vec<(u64, u64, Kind, Vec<u8>)>,
    skips: Vec<Skipped>,
    outcome: Outcome,
    polls: usize,
}

impl Run {
    fn lsns(&self) -> Vec<u64> {
        self.records.iter().map(|r| r.0).collect()
    }

    fn end(&self) -> End {
        match &self.outcome {
            Outcome::End(e) => *e,
            other => panic!("expected an end, got {other:?}"),
        }
    }
}

/// Decodes `bytes` through a `window`-byte window, feeding at most `chunk` bytes at a time.
///
/// Checks on the way: no `NeedMore` after `finish`, and a number of polls bounded by the input
/// (every poll that is not `NeedMore` consumes at least 8 bytes; every `NeedMore` is answered by
/// a feed of at least one byte or by `finish`).
fn run(bytes: &[u8], window: usize, chunk: usize, mode: Mode) -> Run {
    let mut win = vec![0u8; window];
    let mut d = SegmentDecoder::new(&mut win, mode);
    let mut rest = bytes;
    let mut finished = false;
    let mut run = Run {
        header: None,
        records: Vec::new(),
        skips: Vec::new(),
        outcome: Outcome::Stuck { offset_wanted: 0 },
        polls: 0,
    };
    let bound = 2 * bytes.len() + 16;
    loop {
        run.polls += 1;
        assert!(
            run.polls <= bound,
            "no end after {} polls of {} bytes",
            run.polls,
            bytes.len()
        );
        match d.poll() {
            Decoded::NeedMore => {
                assert!(!finished, "NeedMore after finish");
                if rest.is_empty() {
                    d.finish();
                    finished = true;
                    continue;
                }
                let take = chunk.max(1).min(rest.len());
                let n = d.feed(&rest[..take]);
                if n == 0 {
                    run.outcome = Outcome::Stuck {
                        offset_wanted: d.offset_wanted(),
                    };
                    return run;
                }
                rest = &rest[n..];
            }
            Decoded::Header(h) => {
                assert!(run.header.is_none(), "two headers");
                run.header = Some(h);
            }
            Decoded::Record(r) => {
                assert!(run.header.is_some(), "a record before the header");
                run.records
                    .push((r.header.lsn.0, r.offset, r.header.kind, r.payload.to_vec()));
            }
            Decoded::Skipped(s) => run.skips.push(s),
            Decoded::End(e) => {
                // Final: every later poll answers the same.
                assert_eq!(d.poll(), Decoded::End(e));
                assert_eq!(d.poll(), Decoded::End(e));
                run.outcome = Outcome::End(e);
                return run;
            }
            Decoded::Error(e) => {
                assert_eq!(d.poll(), Decoded::Error(e));
                run.outcome = Outcome::Error(e);
                return run;
            }
        }
    }
}

const BIG: usize = 4096;

// ------------------------------------------------------------------------------------------------
// Decoder: windows
// ------------------------------------------------------------------------------------------------

#[test]
fn window_smaller_than_the_segment_header_is_window_too_small() {
    let mut seg = Seg::new(1);
    seg.data(1..=3, |l| l - 1, |_| 8);
    for window in [0, 1, 8, 31, 32, 71] {
        let r = run(&seg.bytes, window, 7, Mode::Strict);
        assert!(
            matches!(
                r.outcome,
                Outcome::Error(DecodeError::WindowTooSmall { needed: 72, .. })
            ),
            "window {window}: {:?}",
            r.outcome
        );
        assert!(r.header.is_none() && r.records.is_empty());
    }
}

#[test]
fn window_of_exactly_the_segment_header_reads_frames_that_fit_it() {
    // 40-byte payloads make 72-byte frames: the smallest window holds them exactly.
    assert_eq!(record::frame_len(40), HEADER);
    assert_eq!(min_window(40), HEADER);
    assert_eq!(min_window(0), HEADER);
    let mut seg = Seg::new(1);
    seg.data(1..=20, |l| l - 1, |l| (l % 41) as usize);
    for chunk in [1, 7, 72, 1000] {
        let r = run(&seg.bytes, HEADER, chunk, Mode::Strict);
        assert_eq!(r.lsns(), (1..=20).collect::<Vec<_>>(), "chunk {chunk}");
        assert_eq!(
            r.end(),
            End::Clean {
                offset: seg.bytes.len() as u64,
                next_lsn: Lsn(21)
            }
        );
    }
}

#[test]
fn frame_larger_than_the_window_in_records_state_is_window_too_small() {
    let mut seg = Seg::new(1);
    seg.data(1..=3, |l| l - 1, |l| if l == 2 { 200 } else { 8 });
    let r = run(&seg.bytes, 100, 13, Mode::Strict);
    assert_eq!(r.lsns(), vec![1]);
    assert_eq!(
        r.outcome,
        Outcome::Error(DecodeError::WindowTooSmall {
            offset: seg.frame(2).offset as u64,
            lsn: Lsn(2),
            needed: record::frame_len(200),
        })
    );
}

#[test]
fn frame_larger_than_the_window_beyond_damage_is_window_too_small() {
    // Record 1 is lost (its header zeroed); records 2..=5 are 232-byte frames whose watermarks
    // say record 1 was acknowledged. A 100-byte window cannot check them whole.
    let mut seg = Seg::new(1);
    seg.data(1..=5, |l| l - 1, |l| if l == 1 { 8 } else { 200 });
    let at = seg.frame(1).offset;
    seg.bytes[at..at + record::HEADER_LEN].fill(0);
    // With a window that fits, this is corruption.
    let big = run(&seg.bytes, BIG, 64, Mode::Strict);
    assert!(matches!(big.end(), End::Corrupt(_)), "{:?}", big.outcome);
    // With a window that does not, the decoder must say so, as it does before any damage.
    let small = run(&seg.bytes, 100, 64, Mode::Strict);
    assert!(
        matches!(
            small.outcome,
            Outcome::Error(DecodeError::WindowTooSmall { .. })
        ),
        "{:?}",
        small.outcome
    );
}

// ------------------------------------------------------------------------------------------------
// Decoder: shapes of segments
// ------------------------------------------------------------------------------------------------

#[test]
fn segment_of_only_a_header_is_a_clean_end_at_the_header() {
    let seg = Seg::new(77);
    for chunk in [1, 72, 500] {
        let r = run(&seg.bytes, BIG, chunk, Mode::Strict);
        assert_eq!(r.header, Some(seg.header));
        assert_eq!(
            r.end(),
            End::Clean {
                offset: HEADER as u64,
                next_lsn: Lsn(77)
            }
        );
    }
}

#[test]
fn segment_of_only_zeros_is_a_blank_header() {
    for len in [0, 1, 71, 72, 73, 4096] {
        let r = run(&vec![0u8; len], BIG, 33, Mode::Strict);
        assert_eq!(
            r.end(),
            End::BadHeader {
                error: HeaderError::Blank,
                rest_is_zero: true
            },
            "len {len}"
        );
    }
}

#[test]
fn segment_of_only_ff_bytes_is_bad_magic() {
    for len in [1, 8, 71, 72, 4096] {
        let r = run(&vec![0xFF; len], BIG, 33, Mode::Strict);
        let expected = if len < HEADER {
            HeaderError::Truncated { len }
        } else {
            HeaderError::BadMagic
        };
        assert_eq!(
            r.end(),
            End::BadHeader {
                error: expected,
                rest_is_zero: len <= HEADER
            },
            "len {len}"
        );
    }
}

#[test]
fn truncated_header_is_named_truncated() {
    let seg = Seg::new(1);
    for len in 1..HEADER {
        let r = run(&seg.bytes[..len], BIG, 5, Mode::Strict);
        assert_eq!(
            r.end(),
            End::BadHeader {
                error: HeaderError::Truncated { len },
                rest_is_zero: true
            }
        );
    }
}

#[test]
fn seal_followed_by_garbage_ends_at_the_seal() {
    let mut seg = Seg::new(1);
    seg.data(1..=4, |l| l - 1, |l| l as usize * 3);
    seg.push(5, 4, Kind::Seal, &[]);
    let seal_end = seg.bytes.len() as u64;
    // Garbage, then a valid frame of this segment that must not count.
    seg.bytes.extend((0..300u32).map(|i| (i * 7 + 3) as u8));
    seg.push(6, 5, Kind::Data, b"after the seal");
    for mode in [Mode::Strict, Mode::PointInTime, Mode::SkipCorrupt] {
        let r = run(&seg.bytes, BIG, 17, mode);
        assert_eq!(r.lsns(), vec![1, 2, 3, 4, 5], "{mode:?}");
        assert_eq!(
            r.end(),
            End::Sealed {
                last_lsn: Lsn(5),
                offset: seal_end
            }
        );
    }
}

#[test]
fn huge_length_in_a_header_is_never_trusted_unchecked() {
    // A header whose checksum does not cover the huge length: not a frame, the end is clean.
    let mut seg = Seg::new(1);
    seg.data(1..=2, |l| l - 1, |_| 8);
    let mut fake = [0u8; 32];
    fake[8..16].copy_from_slice(&3u64.to_le_bytes());
    fake[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    fake[28] = Kind::Data as u8;
    seg.bytes.extend_from_slice(&fake);
    seg.bytes.extend_from_slice(&[0xAB; 64]);
    let r = run(&seg.bytes, BIG, 9, Mode::Strict);
    assert_eq!(r.lsns(), vec![1, 2]);
    assert!(matches!(
        r.end(),
        End::Clean {
            next_lsn: Lsn(3),
            ..
        }
    ));
    // The largest payload the format allows, with a valid checksum, but bytes ending after 1 KiB:
    // the window cannot hold it, which is an error, never an allocation or a read past the end.
    let mut seg = Seg::new(1);
    seg.data(1..=1, |_| 0, |_| 8);
    let mut frame = vec![0u8; record::frame_len(record::MAX_PAYLOAD as usize)];
    let big = vec![1u8; record::MAX_PAYLOAD as usize];
    record::encode(
        &mut frame,
        &seg.header.seed(),
        Lsn(2),
        Lsn(1),
        Kind::Data,
        &big,
    )
    .unwrap();
    seg.bytes.extend_from_slice(&frame[..1024]);
    let r = run(&seg.bytes, BIG, 100, Mode::Strict);
    assert_eq!(r.lsns(), vec![1]);
    assert!(matches!(
        r.outcome,
        Outcome::Error(DecodeError::WindowTooSmall { lsn: Lsn(2), .. })
    ));
}

// ------------------------------------------------------------------------------------------------
// Decoder: the durable watermark rule
// ------------------------------------------------------------------------------------------------

/// Ten data records; record 5's body is damaged; records after it carry `wm(lsn)`.
fn damaged_at_5(wm: impl Fn(u64) -> u64) -> Seg {
    let mut seg = Seg::new(1);
    seg.data(1..=10, |l| if l <= 5 { l - 1 } else { wm(l) }, |_| 24);
    let f = seg.frame(5).clone();
    seg.bytes[f.offset + record::HEADER_LEN + 3] ^= 0x40;
    seg
}

#[test]
fn watermark_one_below_the_lost_lsn_is_a_torn_tail() {
    let seg = damaged_at_5(|_| 4);
    for mode in [Mode::Strict, Mode::PointInTime] {
        let r = run(&seg.bytes, BIG, 50, mode);
        assert_eq!(r.lsns(), vec![1, 2, 3, 4]);
        let End::Torn {
            offset,
            next_lsn,
            beyond,
            extent,
        } = r.end()
        else {
            panic!("{:?}", r.outcome)
        };
        assert_eq!((offset, next_lsn), (seg.frame(5).offset as u64, Lsn(5)));
        assert_eq!(
            (beyond.frames, beyond.first_lsn, beyond.last_lsn),
            (5, Lsn(6), Lsn(10))
        );
        assert_eq!(extent, seg.bytes.len() as u64);
    }
}

#[test]
fn watermark_equal_to_the_lost_lsn_is_corruption() {
    // Only the last frame vouches.
    let seg = damaged_at_5(|l| if l == 10 { 5 } else { 4 });
    let r = run(&seg.bytes, BIG, 50, Mode::Strict);
    assert_eq!(r.lsns(), vec![1, 2, 3, 4]);
    let End::Corrupt(c) = r.end() else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(
        (c.expected_lsn, c.witness_lsn, c.witness_watermark),
        (Lsn(5), Lsn(10), Lsn(5))
    );
    assert_eq!(c.witness_offset, seg.frame(10).offset as u64);
}

#[test]
fn zeroed_record_vouched_by_a_later_one_is_corruption_not_a_clean_end() {
    let mut seg = Seg::new(1);
    seg.data(1..=6, |l| l - 1, |_| 16);
    let f = seg.frame(3).clone();
    seg.bytes[f.offset..f.end].fill(0);
    let r = run(&seg.bytes, BIG, 50, Mode::Strict);
    assert_eq!(r.lsns(), vec![1, 2]);
    assert!(
        matches!(r.end(), End::Corrupt(c) if c.expected_lsn == Lsn(3) && c.witness_lsn == Lsn(4))
    );
}

#[test]
fn padding_frame_watermark_vouches_for_earlier_damage() {
    // Records 1..=5 were framed before anything was durable; padding 6 after all five were.
    let mut seg = Seg::new(1);
    seg.data(1..=5, |_| 0, |_| 16);
    seg.push(6, 5, Kind::Padding, &[0; 16]);
    let f = seg.frame(4).clone();
    seg.bytes[f.offset + 40] ^= 1;
    let r = run(&seg.bytes, BIG, 50, Mode::Strict);
    assert_eq!(r.lsns(), vec![1, 2, 3]);
    // Padding 6 was framed when 5 was durable: record 4 was acknowledged and is damaged.
    assert!(matches!(r.end(), End::Corrupt(_)), "{:?}", r.outcome);
}

#[test]
fn frame_that_skips_an_lsn_and_vouches_for_it_is_corruption() {
    // Records 1..=5, then a frame with LSN 7 whose watermark says 6 was acknowledged; no byte is
    // damaged, LSN 6 is simply missing.
    let mut seg = Seg::new(1);
    seg.data(1..=5, |l| l - 1, |_| 16);
    seg.push(7, 6, Kind::Data, &payload(7, 16));
    let r = run(&seg.bytes, BIG, 50, Mode::Strict);
    assert_eq!(r.lsns(), vec![1, 2, 3, 4, 5]);
    match r.end() {
        End::Corrupt(c) => assert_eq!((c.expected_lsn, c.witness_lsn), (Lsn(6), Lsn(7))),
        // At the very least the cut must name the frame it cuts.
        other => panic!("{other:?}"),
    }
}

#[test]
fn skip_corrupt_keeps_an_intact_frame_after_an_lsn_gap() {
    let mut seg = Seg::new(1);
    seg.data(1..=5, |l| l - 1, |_| 16);
    seg.data(7..=9, |l| l - 1, |_| 16);
    let r = run(&seg.bytes, BIG, 50, Mode::SkipCorrupt);
    assert_eq!(r.lsns(), vec![1, 2, 3, 4, 5, 7, 8, 9]);
    assert_eq!(r.skips.len(), 1);
    assert_eq!(
        (r.skips[0].first_lost, r.skips[0].resumed, r.skips[0].len),
        (Lsn(6), Lsn(7), 0)
    );
}

#[test]
fn frame_with_a_lower_lsn_than_expected_is_damage_and_never_replayed() {
    // A valid frame of this segment with LSN 3 where 6 is expected (a misdirected write).
    let mut seg = Seg::new(1);
    seg.data(1..=5, |l| l - 1, |_| 16);
    seg.push(3, 2, Kind::Data, &payload(3, 16));
    seg.data(6..=8, |l| l - 1, |_| 16);
    let strict = run(&seg.bytes, BIG, 50, Mode::Strict);
    assert_eq!(strict.lsns(), vec![1, 2, 3, 4, 5]);
    assert!(matches!(strict.end(), End::Corrupt(c) if c.expected_lsn == Lsn(6)));
    // SkipCorrupt steps over the stray frame and resumes at 6: nothing is lost, nothing repeated.
    let skip = run(&seg.bytes, BIG, 50, Mode::SkipCorrupt);
    assert_eq!(skip.lsns(), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(skip.skips.len(), 1);
    assert_eq!(
        (skip.skips[0].first_lost, skip.skips[0].resumed),
        (Lsn(6), Lsn(6))
    );
}

#[test]
fn skip_corrupt_steps_over_every_damaged_region() {
    let mut seg = Seg::new(1);
    seg.data(1..=30, |l| l - 1, |l| (l % 20) as usize);
    for lsn in [4, 5, 12, 20, 29] {
        let f = seg.frame(lsn).clone();
        seg.bytes[f.offset + 9] ^= 0x10;
    }
    let r = run(&seg.bytes, BIG, 23, Mode::SkipCorrupt);
    let kept: Vec<u64> = (1..=30)
        .filter(|l| ![4, 5, 12, 20, 29].contains(l))
        .collect();
    assert_eq!(r.lsns(), kept);
    let gaps: Vec<(u64, u64)> = r
        .skips
        .iter()
        .map(|s| (s.first_lost.0, s.resumed.0))
        .collect();
    assert_eq!(gaps, vec![(4, 6), (12, 13), (20, 21), (29, 30)]);
    for (lsn, _, _, p) in &r.records {
        assert_eq!(p, &seg.frame(*lsn).payload);
    }
}

#[test]
fn frames_of_another_segment_never_validate() {
    // Same log, same LSNs, another nonce: every frame is stale, the end is clean at the header.
    let mut other = Seg::new(1);
    other.header.nonce ^= 1;
    other.bytes = other.header.emit().to_vec();
    other.data(1..=5, |l| l - 1, |_| 16);
    let mine = Seg::new(1);
    let mut bytes = mine.bytes.clone();
    bytes.extend_from_slice(&other.bytes[HEADER..]);
    let r = run(&bytes, BIG, 50, Mode::Strict);
    assert!(r.records.is_empty());
    assert_eq!(
        r.end(),
        End::Clean {
            offset: HEADER as u64,
            next_lsn: Lsn(1)
        }
    );
}

// ------------------------------------------------------------------------------------------------
// Decoder: LSNs at the edges
// ------------------------------------------------------------------------------------------------

#[test]
fn header_with_first_lsn_zero_replays_nothing() {
    let mut seg = Seg::new(0);
    seg.data(1..=3, |l| l - 1, |_| 8);
    for mode in [Mode::Strict, Mode::PointInTime, Mode::SkipCorrupt] {
        let r = run(&seg.bytes, BIG, 11, mode);
        // No frame can carry LSN 0, so nothing continues this header in Strict.
        if mode != Mode::SkipCorrupt {
            assert!(r.records.is_empty(), "{mode:?}");
        }
        assert!(matches!(r.outcome, Outcome::End(_)));
    }
}

#[test]
fn lsn_u64_max_is_never_a_record_and_the_lsn_before_it_is_the_last() {
    let mut seg = Seg::new(u64::MAX - 2);
    seg.data([u64::MAX - 2, u64::MAX - 1], |l| l - 1, |_| 8);
    // Neither LSN 0 nor Lsn::MAX can be framed: the LSN after any record exists.
    let mut out = [0u8; 64];
    for lsn in [Lsn(0), Lsn::MAX] {
        let framed = record::encode(&mut out, &seg.header.seed(), lsn, Lsn(0), Kind::Data, b"");
        assert!(framed.is_err(), "{lsn:?} was framed");
    }
    let r = run(&seg.bytes, BIG, 11, Mode::Strict);
    assert_eq!(r.lsns(), vec![u64::MAX - 2, u64::MAX - 1]);
    assert!(matches!(
        r.outcome,
        Outcome::End(End::Clean {
            next_lsn: Lsn::MAX,
            ..
        })
    ));
}

// ------------------------------------------------------------------------------------------------
// Decoder: misuse of the feeding API
// ------------------------------------------------------------------------------------------------

#[test]
fn finish_early_twice_and_poll_after_end_are_harmless() {
    let mut seg = Seg::new(1);
    seg.data(1..=3, |l| l - 1, |_| 8);
    let mut win = vec![0u8; BIG];
    let mut d = SegmentDecoder::new(&mut win, Mode::Strict);
    d.finish();
    d.finish();
    assert_eq!(
        d.poll(),
        Decoded::End(End::BadHeader {
            error: HeaderError::Blank,
            rest_is_zero: true
        })
    );
    // Bytes after the end change nothing.
    d.feed(&seg.bytes);
    d.finish();
    for _ in 0..3 {
        assert!(matches!(d.poll(), Decoded::End(End::BadHeader { .. })));
    }
    // Finishing in the middle of a frame is a torn end there.
    let cut = seg.frame(2).offset + 20;
    let mut win = vec![0u8; BIG];
    let mut d = SegmentDecoder::new(&mut win, Mode::Strict);
    d.feed(&seg.bytes[..cut]);
    d.finish();
    let mut lsns = Vec::new();
    let end = loop {
        match d.poll() {
            Decoded::Record(r) => lsns.push(r.header.lsn.0),
            Decoded::Header(_) => {}
            Decoded::End(e) => break e,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(lsns, vec![1]);
    assert!(matches!(
        end,
        End::Torn {
            next_lsn: Lsn(2),
            ..
        }
    ));
}

#[test]
fn fill_more_than_the_space_given_is_clamped_to_the_window() {
    let mut win = vec![0u8; 80];
    let mut d = SegmentDecoder::new(&mut win, Mode::Strict);
    let space = d.space().len();
    d.fill(space + 1000);
    assert_eq!(d.offset_wanted(), 80);
    assert!(d.space().is_empty());
    d.fill(5);
    assert_eq!(d.offset_wanted(), 80);
    assert!(matches!(d.poll(), Decoded::End(_) | Decoded::NeedMore));
}

#[test]
fn fill_usize_max_does_not_overflow() {
    let mut win = vec![0u8; 80];
    let mut d = SegmentDecoder::new(&mut win, Mode::Strict);
    d.fill(1);
    d.fill(usize::MAX);
    assert_eq!(d.offset_wanted(), 80);
}

#[test]
fn min_window_and_frame_len_of_format_sizes() {
    assert_eq!(record::frame_len(0), 32);
    assert_eq!(record::frame_len(1), 40);
    assert_eq!(
        record::frame_len(record::MAX_PAYLOAD as usize),
        32 + (1 << 24)
    );
    assert_eq!(min_window(record::MAX_PAYLOAD as usize), 32 + (1 << 24));
    // On a 32-bit target the largest frame (16 MiB + 32) is far from usize::MAX.
    assert!(record::frame_len(record::MAX_PAYLOAD as usize) < u32::MAX as usize / 2);
}

#[test]
fn frame_len_of_a_huge_length_does_not_overflow() {
    let huge = std::hint::black_box(usize::MAX - 3);
    let w = std::panic::catch_unwind(|| min_window(huge));
    assert!(w.is_ok(), "min_window panicked");
    let f = std::panic::catch_unwind(|| record::frame_len(huge));
    assert!(f.is_ok(), "frame_len panicked");
}

// ------------------------------------------------------------------------------------------------
// Decoder: property tests
// ------------------------------------------------------------------------------------------------

/// Which bytes a damage overwrites, and with what.
#[derive(Clone, Debug)]
enum Fill {
    Zero,
    Ones,
    Noise(u64),
}

#[derive(Clone, Debug)]
struct Hurt {
    /// Where, as a fraction of the segment's record bytes (0..10_000).
    at: u32,
    len: usize,
    fill: Fill,
}

fn hurt() -> impl Strategy<Value = Hurt> {
    (
        0u32..10_000,
        1usize..200,
        prop_oneof![
            Just(Fill::Zero),
            Just(Fill::Ones),
            any::<u64>().prop_map(Fill::Noise)
        ],
    )
        .prop_map(|(at, len, fill)| Hurt { at, len, fill })
}

fn apply(bytes: &mut [u8], h: &Hurt) {
    let body = bytes.len() - HEADER;
    if body == 0 {
        return;
    }
    let start = HEADER + (h.at as usize * body / 10_000).min(body - 1);
    let end = (start + h.len).min(bytes.len());
    let mut x = match h.fill {
        Fill::Noise(s) => s | 1,
        _ => 0,
    };
    for b in &mut bytes[start..end] {
        *b = match h.fill {
            Fill::Zero => 0,
            Fill::Ones => 0xFF,
            Fill::Noise(_) => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        };
    }
}

/// What the documented rule says a segment of `seg`'s frames ends as, given the damaged `bytes`:
/// the records read are the intact prefix; at the first damaged frame (LSN `L`), the end is
/// corruption iff an intact frame after it (up to and including a seal) carries a watermark
/// `>= L`; otherwise clean iff the damage is zeros / an invalid header and no intact frame
/// follows, else torn.
fn expected(seg: &Seg, bytes: &[u8]) -> (Vec<u64>, End) {
    let intact = |f: &Frame| bytes.get(f.offset..f.end) == seg.bytes.get(f.offset..f.end);
    let prefix: Vec<&Frame> = seg.frames.iter().take_while(|f| intact(f)).collect();
    let lsns: Vec<u64> = prefix.iter().map(|f| f.lsn).collect();
    if let Some(last) = prefix.last()
        && last.kind == Kind::Seal
    {
        return (
            lsns,
            End::Sealed {
                last_lsn: Lsn(last.lsn),
                offset: last.end as u64,
            },
        );
    }
    let at = prefix.last().map_or(HEADER, |f| f.end);
    let lost = seg.frames.get(prefix.len()).map_or(
        prefix.last().map_or(seg.header.first_lsn.0, |f| f.lsn + 1),
        |f| f.lsn,
    );
    let mut later = Vec::new();
    for f in seg.frames.iter().skip(prefix.len() + 1) {
        if intact(f) {
            later.push(f);
            if f.watermark >= lost || f.kind == Kind::Seal {
                break;
            }
        }
    }
    if let Some(w) = later.iter().find(|f| f.watermark >= lost) {
        let c = Corruption {
            offset: at as u64,
            expected_lsn: Lsn(lost),
            witness_lsn: Lsn(w.lsn),
            witness_offset: w.offset as u64,
            witness_watermark: Lsn(w.watermark),
            beyond: Default::default(),
        };
        return (lsns, End::Corrupt(c));
    }
    let rest = &bytes[at.min(bytes.len())..];
    let unwritten = match rest.get(..record::HEADER_LEN) {
        None => rest.iter().all(|b| *b == 0),
        Some(h) => !matches!(
            record::check_header(&seg.header.seed(), h.try_into().unwrap()),
            HeaderCheck::Valid(_)
        ),
    };
    let end = if later.is_empty() && unwritten {
        End::Clean {
            offset: at as u64,
            next_lsn: Lsn(lost),
        }
    } else {
        // `beyond` and `extent` are not compared.
        End::Torn {
            offset: at as u64,
            next_lsn: Lsn(lost),
            beyond: Default::default(),
            extent: 0,
        }
    };
    (lsns, end)
}

/// Compares an end with the expected one on what the rule decides (class, offset, LSNs).
fn same_class(got: &End, want: &End) -> bool {
    match (got, want) {
        (End::Corrupt(a), End::Corrupt(b)) => {
            (a.offset, a.expected_lsn, a.witness_lsn, a.witness_offset)
                == (b.offset, b.expected_lsn, b.witness_lsn, b.witness_offset)
        }
        (
            End::Torn {
                offset: a,
                next_lsn: x,
                ..
            },
            End::Torn {
                offset: b,
                next_lsn: y,
                ..
            },
        ) => (a, x) == (b, y),
        (a, b) => a == b,
    }
}

/// A segment of `n` data records with payloads of up to 100 bytes, watermarks lagging by `lag`
/// (some batched: the watermark steps every `step` records), optionally sealed.
fn built(n: u64, lag: u64, step: u64, sealed: bool, sizes: &[u8]) -> Seg {
    let mut seg = Seg::new(1);
    let wm = |l: u64| (l.saturating_sub(lag) / step * step).min(l - 1);
    seg.data(1..=n, wm, |l| {
        sizes[(l as usize) % sizes.len().max(1)] as usize % 101
    });
    if sealed {
        seg.push(n + 1, n, Kind::Seal, &[]);
    }
    seg
}

/// Property test cases: `n`, or `PROPTEST_CASES` when set (for longer hunts).
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1000), ..ProptestConfig::default() })]

    /// Any bytes at all (a valid header in front or not), through any window of at least the
    /// header, in any chunking: the decoder ends, within bounded polls, without panicking.
    #[test]
    fn any_bytes_any_chunking_any_window_ends(
        with_header in any::<bool>(),
        noise in prop::collection::vec(any::<u8>(), 0..2048),
        window in 72usize..600,
        chunk in 1usize..300,
        mode in prop_oneof![Just(Mode::Strict), Just(Mode::PointInTime), Just(Mode::SkipCorrupt)],
    ) {
        let mut bytes = if with_header { Seg::new(1).bytes } else { Vec::new() };
        bytes.extend_from_slice(&noise);
        let r = run(&bytes, window, chunk, mode);
        prop_assert!(!matches!(r.outcome, Outcome::Stuck { .. }), "{:?}", r.outcome);
        prop_assert!(r.records.is_empty());
    }

    /// A real segment damaged anywhere (zeros, 0xFF, noise, cut short), read through any window
    /// that holds its frames, in any chunking: the records are the intact prefix (Strict,
    /// PointInTime) or every intact frame (SkipCorrupt), each exactly as written, and the end is
    /// what the watermark rule says.
    #[test]
    fn damaged_segments_end_as_the_watermark_rule_says(
        n in 1u64..40,
        lag in 0u64..6,
        step in 1u64..5,
        sealed in any::<bool>(),
        sizes in prop::collection::vec(any::<u8>(), 1..8),
        hurts in prop::collection::vec(hurt(), 0..4),
        cut in prop::option::of(0u32..10_000),
        window in 136usize..700,
        chunk in 1usize..400,
    ) {
        let seg = built(n, lag, step, sealed, &sizes);
        let mut bytes = seg.bytes.clone();
        for h in &hurts {
            apply(&mut bytes, h);
        }
        if let Some(c) = cut {
            let body = bytes.len() - HEADER;
            bytes.truncate(HEADER + c as usize * body / 10_000);
        }
        let (want_lsns, want_end) = expected(&seg, &bytes);
        for mode in [Mode::Strict, Mode::PointInTime] {
            let r = run(&bytes, window, chunk, mode);
            prop_assert_eq!(&r.lsns(), &want_lsns, "{:?}", mode);
            let Outcome::End(got) = r.outcome else {
                return Err(TestCaseError::fail(format!("{:?}", r.outcome)));
            };
            prop_assert!(same_class(&got, &want_end), "{:?}: got {:?} want {:?}", mode, got, want_end);
            for (lsn, off, _, p) in &r.records {
                let f = seg.frame(*lsn);
                prop_assert_eq!((f.offset as u64, &f.payload), (*off, p));
            }
        }
        let r = run(&bytes, window, chunk, Mode::SkipCorrupt);
        let intact: Vec<u64> = seg
            .frames
            .iter()
            .filter(|f| bytes.get(f.offset..f.end) == seg.bytes.get(f.offset..f.end))
            .map(|f| f.lsn)
            .collect();
        prop_assert_eq!(r.lsns(), intact);
        for (lsn, _, _, p) in &r.records {
            prop_assert_eq!(&seg.frame(*lsn).payload, p);
        }
        prop_assert!(matches!(r.outcome, Outcome::End(_)));
    }
}

// ------------------------------------------------------------------------------------------------
// Pipeline: configuration at the edges
// ------------------------------------------------------------------------------------------------

fn cfg(policy: SyncPolicy) -> Config {
    Config {
        policy,
        max_writes_in_flight: 2,
        linked: false,
        segment_size: 1 << 20,
        max_payload: 64,
        nonce_seed: 5,
    }
}

/// A disk that completes everything at once, in order, and keeps what was written.
#[derive(Default)]
struct Disk {
    segs: BTreeMap<u64, Vec<u8>>,
    /// Completions not yet handed back.
    queue: Vec<u64>,
    durable_events: Vec<Lsn>,
    closed: Option<Lsn>,
}

impl Disk {
    fn submit_all<const S: usize>(&mut self, p: &mut Pipeline<'_, S>) -> usize {
        let mut n = 0;
        while let Some(req) = p.poll_io() {
            n += 1;
            match &req {
                IoRequest::Create {
                    segment, header, ..
                } => {
                    self.segs.insert(segment.0, header.to_vec());
                }
                IoRequest::Write {
                    segment,
                    offset,
                    range,
                    ..
                } => {
                    let data = p.bytes(range.clone()).to_vec();
                    assert_eq!(data.len(), range.len(), "a write of bytes the buffer has");
                    if *offset > 1 << 24 {
                        // Far out (a resumed segment larger than this one): not kept.
                        self.queue.push(req.token());
                        continue;
                    }
                    let img = self.segs.entry(segment.0).or_default();
                    let end = *offset as usize + data.len();
                    if img.len() < end {
                        img.resize(end, 0);
                    }
                    img[*offset as usize..end].copy_from_slice(&data);
                }
                _ => {}
            }
            self.queue.push(req.token());
        }
        n
    }

    fn pump<const S: usize>(&mut self, p: &mut Pipeline<'_, S>) {
        for _ in 0..10_000 {
            let n = self.submit_all(p);
            let done: Vec<u64> = std::mem::take(&mut self.queue);
            for t in &done {
                p.handle_completion(*t, Ok(())).expect("a token it issued");
            }
            while let Some(e) = p.poll_event() {
                match e {
                    Event::Durable { upto } => self.durable_events.push(upto),
                    Event::Closed { last } => self.closed = Some(last),
                    _ => {}
                }
            }
            if n == 0 && done.is_empty() {
                return;
            }
        }
        panic!("the pipeline never settles");
    }
}

#[test]
fn create_with_first_lsn_zero_is_refused() {
    let mut buf = vec![0u8; 4096];
    let r: Result<Pipeline<'_, 4>, _> =
        Pipeline::create(&mut buf, cfg(SyncPolicy::EveryRecord), seg_header(0));
    assert!(matches!(r, Err(ConfigError::ResumePosition)));
}

#[test]
fn config_limits_are_checked_before_anything_is_framed() {
    let mut buf = vec![0u8; 1 << 16];
    let h = seg_header(1);
    let bad = |c: Config| {
        let mut b = vec![0u8; 1 << 16];
        Pipeline::<'_, 4>::create(&mut b, c, h).err()
    };
    let base = cfg(SyncPolicy::EveryRecord);
    assert_eq!(
        bad(Config {
            max_payload: record::MAX_PAYLOAD + 1,
            ..base
        }),
        Some(ConfigError::PayloadLimit)
    );
    assert_eq!(
        bad(Config {
            max_payload: u32::MAX,
            ..base
        }),
        Some(ConfigError::PayloadLimit)
    );
    assert_eq!(
        bad(Config {
            max_writes_in_flight: 0,
            ..base
        }),
        Some(ConfigError::WritesInFlight)
    );
    assert_eq!(
        bad(Config {
            max_writes_in_flight: 5,
            ..base
        }),
        Some(ConfigError::WritesInFlight)
    );
    assert_eq!(
        bad(Config {
            policy: SyncPolicy::Batch {
                max_records: 0,
                max_bytes: 1,
                max_delay: 1
            },
            ..base
        }),
        Some(ConfigError::Policy)
    );
    let needed = (HEADER + record::frame_len(64) + SEAL_LEN) as u64;
    assert_eq!(
        bad(Config {
            segment_size: needed - 1,
            ..base
        }),
        Some(ConfigError::SegmentTooSmall { needed })
    );
    assert_eq!(
        bad(Config {
            segment_size: 0,
            ..base
        }),
        Some(ConfigError::SegmentTooSmall { needed })
    );
    let min_buf = 2 * record::frame_len(64) + 2 * SEAL_LEN;
    assert!(matches!(
        Pipeline::<'_, 4>::create(&mut buf[..min_buf - 1], base, h),
        Err(ConfigError::BufferTooSmall { needed }) if needed == min_buf
    ));
    assert!(Pipeline::<'_, 4>::create(&mut buf[..min_buf], base, h).is_ok());
    assert!(
        Pipeline::<'_, 4>::create(
            &mut buf,
            Config {
                segment_size: u64::MAX,
                ..base
            },
            h
        )
        .is_ok()
    );
}

#[test]
fn max_payload_zero_takes_empty_records_only() {
    let mut buf = vec![0u8; 4 * SEAL_LEN];
    let c = Config {
        max_payload: 0,
        ..cfg(SyncPolicy::EveryRecord)
    };
    let mut p: Pipeline<'_, 4> = Pipeline::create(&mut buf, c, seg_header(1)).unwrap();
    let mut disk = Disk::default();
    assert_eq!(p.append(b"x", 0), Err(AppendError::TooLarge { len: 1 }));
    for i in 1..=50 {
        loop {
            match p.append(&[], 0) {
                Ok(lsn) => {
                    assert_eq!(lsn, Lsn(i));
                    break;
                }
                Err(AppendError::Full) => disk.pump(&mut p),
                Err(e) => panic!("{e}"),
            }
        }
    }
    disk.pump(&mut p);
    assert_eq!(p.durable_lsn(), Lsn(50));
}

/// Appends `n` records of the largest payload into a buffer of exactly the minimum size, with
/// segments so small that every few records roll: the pipeline must never wedge.
fn minimum_buffer_makes_progress(policy: SyncPolicy, linked: bool) {
    let max = 64u32;
    let largest = record::frame_len(max as usize);
    let mut buf = vec![0u8; 2 * largest + 2 * SEAL_LEN];
    let c = Config {
        policy,
        linked,
        max_payload: max,
        segment_size: (HEADER + 3 * largest + SEAL_LEN) as u64,
        ..cfg(policy)
    };
    let mut p: Pipeline<'_, 2> = Pipeline::create(&mut buf, c, seg_header(1)).unwrap();
    let mut disk = Disk::default();
    let mut next = 1;
    let mut data = Vec::new();
    for i in 0..60u64 {
        let len = if i % 3 == 0 {
            max as usize
        } else {
            (i % 50) as usize
        };
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries < 50, "append {i} wedged");
            match p.append(&payload(i, len), i) {
                Ok(lsn) => {
                    assert!(lsn.0 >= next, "LSNs go up");
                    next = lsn.0 + 1;
                    data.push((lsn, payload(i, len)));
                    break;
                }
                Err(AppendError::Full) => {
                    p.flush();
                    p.handle_timeout(u64::MAX);
                    disk.pump(&mut p);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    p.close().unwrap();
    disk.pump(&mut p);
    let last = disk.closed.expect("the close completes");
    assert_eq!(p.durable_lsn(), last);
    // Every record reads back from the disk images.
    let mut read = Vec::new();
    for bytes in disk.segs.values() {
        let r = run(bytes, min_window(max as usize), 100, Mode::Strict);
        for (lsn, _, kind, pl) in r.records {
            if kind == Kind::Data {
                read.push((Lsn(lsn), pl));
            }
        }
    }
    assert_eq!(read, data);
}

#[test]
fn buffer_of_exactly_the_minimum_never_wedges_with_every_record() {
    minimum_buffer_makes_progress(SyncPolicy::EveryRecord, false);
}

#[test]
fn buffer_of_exactly_the_minimum_never_wedges_with_manual_batches() {
    minimum_buffer_makes_progress(SyncPolicy::Manual, false);
}

#[test]
fn buffer_of_exactly_the_minimum_never_wedges_linked() {
    let policy = SyncPolicy::Batch {
        max_records: 3,
        max_bytes: 10_000,
        max_delay: 5,
    };
    minimum_buffer_makes_progress(policy, true);
}

// ------------------------------------------------------------------------------------------------
// Pipeline: LSNs and offsets at the edge of u64
// ------------------------------------------------------------------------------------------------

#[test]
fn appends_stop_at_the_last_appendable_lsn() {
    let mut buf = vec![0u8; 4096];
    let mut p: Pipeline<'_, 4> = Pipeline::create(
        &mut buf,
        cfg(SyncPolicy::Manual),
        seg_header(LAST_APPENDABLE.0),
    )
    .unwrap();
    assert_eq!(p.append(b"last", 0), Ok(LAST_APPENDABLE));
    assert_eq!(p.append(b"one too many", 0), Err(AppendError::LsnExhausted));
    // The seal of a close still has its LSN.
    assert_eq!(p.close(), Ok(()));
}

#[test]
fn a_log_cannot_start_at_lsn_zero_or_lsn_max() {
    for first in [0, u64::MAX] {
        let mut buf = vec![0u8; 4096];
        let r = Pipeline::<'_, 4>::create(&mut buf, cfg(SyncPolicy::Manual), seg_header(first));
        assert_eq!(r.err(), Some(ConfigError::ResumePosition));
    }
}

#[test]
fn appends_past_the_last_lsn_write_nothing() {
    let mut buf = vec![0u8; 4096];
    let mut p: Pipeline<'_, 4> = Pipeline::create(
        &mut buf,
        cfg(SyncPolicy::Manual),
        seg_header(LAST_APPENDABLE.0),
    )
    .unwrap();
    let mut disk = Disk::default();
    assert_eq!(p.append(b"last", 0), Ok(LAST_APPENDABLE));
    let _ = p.append(b"one too many", 0);
    p.flush();
    disk.pump(&mut p);
    let r = run(&disk.segs[&0], BIG, 64, Mode::Strict);
    assert_eq!(r.lsns(), vec![LAST_APPENDABLE.0]);
}

#[test]
fn resume_at_an_offset_near_u64_max_does_not_overflow() {
    let mut buf = vec![0u8; 4096];
    let resume = Resume {
        header: seg_header(1),
        offset: u64::MAX - 7,
        next_lsn: Lsn(1),
        epoch: 0,
        tail: ResumeTail::Open,
    };
    let r = std::panic::catch_unwind(move || {
        let Ok(mut p) = Pipeline::<'_, 4>::resume(&mut buf, cfg(SyncPolicy::EveryRecord), resume)
        else {
            return;
        };
        let _ = p.append(b"x", 0);
        let mut disk = Disk::default();
        disk.pump(&mut p);
        let _ = p.append(b"y", 0);
    });
    assert!(r.is_ok(), "the pipeline panicked");
}

#[test]
fn resume_at_a_bad_offset_or_lsn_is_refused() {
    let mut buf = vec![0u8; 4096];
    let base = Resume {
        header: seg_header(1),
        offset: HEADER as u64,
        next_lsn: Lsn(1),
        epoch: 0,
        tail: ResumeTail::Open,
    };
    for (offset, next) in [(0, 1), (71, 1), (73, 1), (HEADER as u64, 0)] {
        let r = Pipeline::<'_, 4>::resume(
            &mut buf,
            cfg(SyncPolicy::EveryRecord),
            Resume {
                offset,
                next_lsn: Lsn(next),
                ..base
            },
        );
        assert!(
            matches!(r, Err(ConfigError::ResumePosition)),
            "{offset} {next}"
        );
    }
}

#[test]
fn resume_past_the_segment_size_rolls_at_the_first_append() {
    let mut buf = vec![0u8; 4096];
    let c = Config {
        segment_size: 4096,
        ..cfg(SyncPolicy::EveryRecord)
    };
    let resume = Resume {
        header: seg_header(1),
        offset: 1 << 40,
        next_lsn: Lsn(9),
        epoch: 0,
        tail: ResumeTail::Open,
    };
    let mut p: Pipeline<'_, 4> = Pipeline::resume(&mut buf, c, resume).unwrap();
    let mut disk = Disk::default();
    disk.pump(&mut p);
    assert_eq!(p.durable_lsn(), Lsn(8));
    let lsn = loop {
        match p.append(b"next", 0) {
            Ok(l) => break l,
            Err(AppendError::Full) => disk.pump(&mut p),
            Err(e) => panic!("{e}"),
        }
    };
    // LSN 9 is the seal of the old segment; the record goes into segment 1.
    assert_eq!(lsn, Lsn(10));
    assert_eq!(p.segment().sequence, SegmentId(1));
    disk.pump(&mut p);
    assert_eq!(p.durable_lsn(), Lsn(10));
}

// ------------------------------------------------------------------------------------------------
// Pipeline: misuse of the request / completion API
// ------------------------------------------------------------------------------------------------

#[test]
fn completions_for_tokens_never_issued_are_unknown_and_change_nothing() {
    let mut buf = vec![0u8; 4096];
    let mut p: Pipeline<'_, 4> =
        Pipeline::create(&mut buf, cfg(SyncPolicy::Manual), seg_header(1)).unwrap();
    let mut disk = Disk::default();
    disk.pump(&mut p);
    p.append(b"a", 0).unwrap();
    p.append(b"b", 0).unwrap();
    // The batch is cut (its slot has a token) but its write is not asked for yet.
    p.flush();
    for token in [0, 1, 2, 3, 4, 5, 1000, u64::MAX] {
        for result in [Ok(()), Err(Failure::Io)] {
            assert_eq!(
                p.handle_completion(token, result),
                Err(UnknownCompletion { token })
            );
        }
    }
    assert_eq!(p.poisoned(), None);
    assert_eq!(p.durable_lsn(), Lsn(0));
    disk.pump(&mut p);
    assert_eq!(p.durable_lsn(), Lsn(2));
}

#[test]
fn duplicated_completions_are_unknown_the_second_time() {
    let mut buf = vec![0u8; 4096];
    let mut p: Pipeline<'_, 4> =
        Pipeline::create(&mut buf, cfg(SyncPolicy::EveryRecord), seg_header(1)).unwrap();
    let mut seen = Vec::new();
    for round in 0..6 {
        if round > 0 {
            p.append(&[round as u8; 9], 0).unwrap();
        }
        while let Some(req) = p.poll_io() {
            let t = req.token();
            assert!(!seen.contains(&t), "token {t} issued twice");
            seen.push(t);
            assert_eq!(p.handle_completion(t, Ok(())), Ok(()));
            assert_eq!(
                p.handle_completion(t, Ok(())),
                Err(UnknownCompletion { token: t })
            );
            // A late failure for it changes nothing either.
            assert_eq!(
                p.handle_completion(t, Err(Failure::Io)),
                Err(UnknownCompletion { token: t })
            );
        }
    }
    assert_eq!(p.poisoned(), None);
    assert_eq!(p.durable_lsn(), Lsn(5));
}

#[test]
fn append_after_close_and_close_twice() {
    let mut buf = vec![0u8; 4096];
    let mut p: Pipeline<'_, 4> =
        Pipeline::create(&mut buf, cfg(SyncPolicy::Manual), seg_header(1)).unwrap();
    let mut disk = Disk::default();
    p.append(b"a", 0).unwrap();
    p.close().unwrap();
    p.close().unwrap();
    assert_eq!(p.append(b"b", 0), Err(AppendError::Closed));
    assert_eq!(p.append_kind(Kind::Seal, b"", 0), Err(AppendError::Closed));
    disk.pump(&mut p);
    p.close().unwrap();
    disk.pump(&mut p);
    assert_eq!(disk.closed, Some(Lsn(2)));
    // One seal, after the record.
    let r = run(&disk.segs[&0], BIG, 64, Mode::Strict);
    assert_eq!(r.lsns(), vec![1, 2]);
    assert_eq!(
        r.end(),
        End::Sealed {
            last_lsn: Lsn(2),
            offset: (HEADER + record::frame_len(1) + SEAL_LEN) as u64
        }
    );
}

#[test]
fn time_going_backwards_neither_cuts_nor_panics() {
    let policy = SyncPolicy::Batch {
        max_records: 100,
        max_bytes: 1 << 20,
        max_delay: 1_000,
    };
    let mut buf = vec![0u8; 4096];
    let mut p: Pipeline<'_, 4> = Pipeline::create(&mut buf, cfg(policy), seg_header(1)).unwrap();
    let mut disk = Disk::default();
    disk.pump(&mut p);
    p.append(b"a", u64::MAX - 10).unwrap();
    // The deadline saturates instead of wrapping.
    assert_eq!(p.poll_timeout(), Some(u64::MAX));
    for now in [u64::MAX - 11, 5, 0] {
        p.handle_timeout(now);
        assert!(p.poll_io().is_none(), "cut at {now}");
    }
    p.handle_timeout(u64::MAX);
    disk.pump(&mut p);
    assert_eq!(p.durable_lsn(), Lsn(1));
    // A later batch appended "before" the previous one in time.
    p.append(b"b", 3).unwrap();
    assert_eq!(p.poll_timeout(), Some(1_003));
    p.handle_timeout(2);
    assert!(p.poll_io().is_none());
    p.handle_timeout(1_003);
    disk.pump(&mut p);
    assert_eq!(p.durable_lsn(), Lsn(2));
}

#[test]
fn bytes_of_a_bogus_range_is_empty() {
    let mut buf = vec![0u8; 4096];
    let p: Pipeline<'_, 4> =
        Pipeline::create(&mut buf, cfg(SyncPolicy::Manual), seg_header(1)).unwrap();
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 10..2;
    assert!(p.bytes(backwards).is_empty());
    assert!(p.bytes(0..usize::MAX).is_empty());
    assert!(p.bytes(usize::MAX..usize::MAX).is_empty());
    assert!(p.bytes(4000..5000).is_empty());
    assert_eq!(p.bytes(0..4096).len(), 4096);
}

#[test]
fn seal_kind_cannot_be_appended() {
    let mut buf = vec![0u8; 4096];
    let mut p: Pipeline<'_, 4> =
        Pipeline::create(&mut buf, cfg(SyncPolicy::Manual), seg_header(1)).unwrap();
    assert_eq!(
        p.append_kind(Kind::Seal, b"", 0),
        Err(AppendError::SealKind)
    );
    assert_eq!(p.next_lsn(), Lsn(1));
}

/// One thing a hostile driver does to a pipeline.
#[derive(Clone, Debug)]
enum Act {
    Append(u8, Kind),
    Flush,
    Close,
    Timeout(u64),
    /// Submit everything asked for.
    Poll,
    /// Complete the in-flight request at this index (mod the count) with this result.
    Complete(usize, bool),
    /// Complete a token at random (issued, done, or never issued).
    Bogus(u64, bool),
    /// Complete again a token that already completed.
    Again(usize),
}

fn act() -> impl Strategy<Value = Act> {
    let kind = prop_oneof![
        4 => Just(Kind::Data),
        1 => Just(Kind::Padding),
        1 => Just(Kind::Epoch),
        1 => Just(Kind::Checkpoint),
        1 => Just(Kind::Seal),
    ];
    prop_oneof![
        6 => (0u8..=64, kind).prop_map(|(n, k)| Act::Append(n, k)),
        1 => Just(Act::Flush),
        1 => Just(Act::Close),
        1 => any::<u64>().prop_map(Act::Timeout),
        5 => Just(Act::Poll),
        6 => (any::<usize>(), prop::bool::weighted(0.97)).prop_map(|(i, ok)| Act::Complete(i, ok)),
        1 => (0u64..40, any::<bool>()).prop_map(|(t, ok)| Act::Bogus(t, ok)),
        1 => any::<usize>().prop_map(Act::Again),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(500), ..ProptestConfig::default() })]

    /// A driver that completes in any order, completes twice, invents tokens, runs time
    /// backwards and closes whenever: the pipeline never panics, LSNs only go up and are never
    /// 0, the durable LSN never goes down, never passes what was framed, never moves after a
    /// failure, and every LSN it reports durable was in a write that completed before a sync
    /// that completed (or in a linked write).
    #[test]
    fn hostile_driver_never_breaks_the_pipeline(
        acts in prop::collection::vec(act(), 1..200),
        linked in any::<bool>(),
        first in prop_oneof![Just(1u64), 2u64..1_000_000],
    ) {
        let mut buf = vec![0u8; 2048];
        let c = Config {
            linked,
            segment_size: 1024,
            max_writes_in_flight: 3,
            ..cfg(SyncPolicy::Batch { max_records: 3, max_bytes: 256, max_delay: 100 })
        };
        let mut p: Pipeline<'_, 4> = Pipeline::create(&mut buf, c, seg_header(first)).unwrap();
        let mut in_flight: Vec<IoRequest> = Vec::new();
        let mut done: Vec<u64> = Vec::new();
        // LSNs in writes that completed successfully, per segment, not yet covered by a sync.
        let mut written: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        // What each in-flight sync covers.
        let mut sync_covers: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut proven: Vec<u64> = Vec::new();
        let mut last_lsn = first - 1;
        let mut durable = p.durable_lsn();
        let mut failed = false;
        let mut now = 0u64;
        for a in acts {
            match a {
                Act::Append(n, kind) => {
                    now = now.wrapping_add(7);
                    if let Ok(lsn) = p.append_kind(kind, &vec![n; n as usize], now) {
                        prop_assert!(lsn.0 > last_lsn && lsn.0 != 0);
                        last_lsn = lsn.0;
                    }
                }
                Act::Flush => p.flush(),
                Act::Close => { let _ = p.close(); }
                Act::Timeout(t) => p.handle_timeout(t),
                Act::Poll => {
                    while let Some(req) = p.poll_io() {
                        if let IoRequest::Write { range, .. } = &req {
                            prop_assert_eq!(p.bytes(range.clone()).len(), range.len());
                        }
                        if let IoRequest::Sync { token, segment } = &req {
                            let covered = written.remove(&segment.0).unwrap_or_default();
                            sync_covers.insert(*token, covered);
                        }
                        in_flight.push(req);
                    }
                }
                Act::Complete(i, ok) => {
                    if in_flight.is_empty() {
                        continue;
                    }
                    let req = in_flight.remove(i % in_flight.len());
                    let t = req.token();
                    // Frame LSNs of a write, read from the bytes it carries.
                    if let IoRequest::Write { range, segment, sync, .. } = &req && ok {
                        let data = p.bytes(range.clone()).to_vec();
                        let mut at = 0;
                        let mut lsns = Vec::new();
                        while at + 32 <= data.len() {
                            lsns.push(u64::from_le_bytes(data[at + 8..at + 16].try_into().unwrap()));
                            let len = u32::from_le_bytes(data[at + 24..at + 28].try_into().unwrap());
                            at += record::frame_len(len as usize);
                        }
                        if *sync {
                            if !failed { proven.extend(lsns); }
                        } else {
                            written.entry(segment.0).or_default().extend(lsns);
                        }
                    }
                    let covered = sync_covers.remove(&t);
                    let result = if ok { Ok(()) } else { Err(Failure::Io) };
                    prop_assert_eq!(p.handle_completion(t, result), Ok(()));
                    if !ok {
                        failed = true;
                    } else if let Some(c) = covered && !failed {
                        proven.extend(c);
                    }
                    done.push(t);
                }
                Act::Bogus(t, ok) => {
                    let known = in_flight.iter().any(|r| r.token() == t);
                    if !known {
                        let result = if ok { Ok(()) } else { Err(Failure::Io) };
                        prop_assert_eq!(p.handle_completion(t, result), Err(UnknownCompletion { token: t }));
                    }
                }
                Act::Again(i) => {
                    if done.is_empty() {
                        continue;
                    }
                    let t = done[i % done.len()];
                    prop_assert_eq!(p.handle_completion(t, Ok(())), Err(UnknownCompletion { token: t }));
                }
            }
            while let Some(e) = p.poll_event() {
                if let Event::Durable { upto } = e {
                    prop_assert!(upto > durable);
                }
            }
            let d = p.durable_lsn();
            prop_assert!(d >= durable, "durable went down");
            prop_assert!(d.0 <= last_lsn.max(first - 1) + 2, "durable {} past framed {}", d, last_lsn);
            if failed {
                prop_assert_eq!(d, durable, "durable moved after a failure");
            }
            for lsn in first..=d.0 {
                prop_assert!(proven.contains(&lsn), "LSN {} durable without a covering sync", lsn);
            }
            durable = d;
        }
    }
}

#[test]
fn a_nonce_seed_of_zero_is_refused() {
    let mut buf = vec![0u8; 4096];
    let config = Config {
        nonce_seed: 0,
        ..cfg(SyncPolicy::EveryRecord)
    };
    let r = Pipeline::<'_, 4>::create(&mut buf, config, seg_header(1));
    assert_eq!(r.err(), Some(ConfigError::NonceSeed));
}
