//! The incremental segment decoder: bytes in any chunking in, header, records and a classified
//! end out.
//!
//! The decoder owns no memory: it works in a window the caller lends it, which must hold the
//! segment header and the largest frame the log may contain ([`min_window`]). The caller writes
//! bytes into [`SegmentDecoder::space`], reports them with [`SegmentDecoder::fill`] (or uses
//! [`SegmentDecoder::feed`]), says [`SegmentDecoder::finish`] at the end of the segment's bytes,
//! and loops on [`SegmentDecoder::poll`] until it answers [`Decoded::NeedMore`] or
//! [`Decoded::End`].
//!
//! # How the end of a segment is classified
//! Records are read in order, each at the offset where the previous one ended, each with the next
//! LSN. At the first offset where that fails (zeros, a frame that does not validate, a wrong LSN,
//! or the segment's bytes end inside a frame) the decoder has found *damage* whose first lost LSN
//! is `L`. It then looks at every 8-byte-aligned offset after it for frames that validate under
//! this segment's seed, without trusting any length it has not checked, and applies the durable
//! watermark rule: the damage is *corruption* if and only if a later valid frame carries a
//! watermark `>= L` (the writer had promised `L` durable before it wrote that frame). Otherwise:
//! * [`End::Clean`]: nothing validates from the damage on and the damage is zeros or a header
//!   that does not validate (space never written, or stale bytes of a reused file);
//! * [`End::Torn`]: a crash explains it: a header that validated with a broken body, bytes ending
//!   inside a frame, or valid frames beyond that no watermark vouches for. All of it is cut.
//!
//! With [`Mode::SkipCorrupt`] the decoder does not stop at damage: it resumes at the next valid
//! frame with a higher LSN and reports the gap as [`Decoded::Skipped`].

use crate::lsn::Lsn;
use crate::record::{self, HeaderCheck, RecordHeader, Seed};
use crate::segment::{self, HeaderError, SegmentHeader};
use core::fmt;

/// How recovery treats damage. The default is [`Mode::Strict`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A torn tail is cut (and the cut made durable before anything is appended); corruption is
    /// an error that names segment, offset and LSN, and nothing is cut.
    #[default]
    Strict,
    /// Stop at the first damage, whatever it is: everything from it on is cut and reported,
    /// classified as torn or corrupt. For restoring to the last consistent point by hand.
    PointInTime,
    /// Skip every damaged region to the next valid frame, report each skip with the LSNs lost,
    /// and keep reading. Salvage: the log that results has gaps in its LSNs.
    SkipCorrupt,
}

/// The smallest window a decoder can work in for payloads up to `max_payload` bytes.
#[must_use]
pub const fn min_window(max_payload: usize) -> usize {
    let frame = record::frame_len(max_payload);
    if frame > segment::HEADER_LEN {
        frame
    } else {
        segment::HEADER_LEN
    }
}

/// A record read from a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its header.
    pub header: RecordHeader,
    /// Byte offset of its frame in the segment.
    pub offset: u64,
    /// Its payload.
    pub payload: &'a [u8],
}

/// A damaged region that [`Mode::SkipCorrupt`] stepped over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Where the damage starts.
    pub offset: u64,
    /// Bytes stepped over.
    pub len: u64,
    /// The first LSN lost.
    pub first_lost: Lsn,
    /// The LSN decoding resumed at; `first_lost..resumed` are lost.
    pub resumed: Lsn,
}

/// Frames that validated beyond a point of damage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Beyond {
    /// How many.
    pub frames: u64,
    /// The LSN of the first of them found (`Lsn::ZERO` when none).
    pub first_lsn: Lsn,
    /// The LSN of the last of them found (`Lsn::ZERO` when none).
    pub last_lsn: Lsn,
    /// Where the last of them ends (the damage offset when none).
    pub extent: u64,
    /// The highest watermark among them.
    pub max_watermark: Lsn,
}

/// Damage that a later frame proves was acknowledged data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Where the damage starts.
    pub offset: u64,
    /// The first LSN lost (the LSN expected at `offset`).
    pub expected_lsn: Lsn,
    /// The LSN of the later frame whose watermark proves it.
    pub witness_lsn: Lsn,
    /// Where that frame is.
    pub witness_offset: u64,
    /// Its watermark (`>= expected_lsn`).
    pub witness_watermark: Lsn,
    /// Every frame that validated beyond the damage.
    pub beyond: Beyond,
}

/// How a segment's bytes end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// A seal record: the segment is complete and nothing after the seal counts.
    Sealed {
        /// The seal's LSN, the last of the segment.
        last_lsn: Lsn,
        /// Where the seal ends.
        offset: u64,
    },
    /// The records end at `offset`; nothing that validates follows.
    Clean {
        /// Where the next record would go.
        offset: u64,
        /// The LSN it would take.
        next_lsn: Lsn,
    },
    /// A torn tail: damage at `offset` that a crash explains. Everything from `offset` on,
    /// `beyond` included, is cut.
    Torn {
        /// Where the cut is.
        offset: u64,
        /// The first LSN cut (the next record appended takes it).
        next_lsn: Lsn,
        /// Valid frames beyond the cut that no watermark vouches for.
        beyond: Beyond,
        /// Where the damaged or partial data ends: the repair must neutralise `offset..extent`.
        extent: u64,
    },
    /// Damage to acknowledged data.
    Corrupt(Corruption),
    /// The segment header does not validate.
    BadHeader {
        /// Why.
        error: HeaderError,
        /// Whether every byte after the header is zero (a creation that never completed), as far
        /// as the segment's bytes go.
        rest_is_zero: bool,
    },
}

/// A failure that is not about the bytes being damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A frame that validates is larger than the decoder's window.
    WindowTooSmall {
        /// Where the frame is.
        offset: u64,
        /// Its LSN.
        lsn: Lsn,
        /// Bytes the window needs.
        needed: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::WindowTooSmall {
                offset,
                lsn,
                needed,
            } => write!(
                f,
                "record {lsn} at offset {offset} needs a decode window of {needed} bytes"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

/// What [`SegmentDecoder::poll`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// More bytes are needed (or [`SegmentDecoder::finish`], if there are none).
    NeedMore,
    /// The segment header; always the first thing reported for a segment that has one.
    Header(SegmentHeader),
    /// The next record.
    Record(Record<'a>),
    /// A damaged region skipped in [`Mode::SkipCorrupt`].
    Skipped(Skipped),
    /// The end of the segment; every later poll answers the same.
    End(End),
    /// A failure that stops decoding; every later poll answers the same.
    Error(DecodeError),
}

/// What the decoder found at the point of damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    /// Zeros or a header that does not validate: what unwritten or reused space looks like.
    Unwritten,
    /// A header that validated but a body that did not, a wrong LSN, or bytes ending in a frame.
    Torn,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Header,
    /// After a header that does not validate: checking whether the rest is zero.
    RestOfBadHeader {
        error: HeaderError,
        nonzero: bool,
    },
    Records {
        seed: Seed,
        next: Lsn,
    },
    /// After damage at `at` with first lost LSN `lost`: looking at every aligned offset.
    Scanning {
        seed: Seed,
        at: u64,
        lost: Lsn,
        damage: Damage,
        beyond: Beyond,
        extent: u64,
    },
    Done(Outcome),
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    End(End),
    Error(DecodeError),
}

/// The decoder of one segment. See the module documentation.
pub struct SegmentDecoder<'w> {
    window: &'w mut [u8],
    /// `window[start..end]` holds the segment's bytes from offset `pos`.
    start: usize,
    end: usize,
    pos: u64,
    finished: bool,
    mode: Mode,
    state: State,
}

impl<'w> SegmentDecoder<'w> {
    /// A decoder for one segment that works inside `window` (at least [`min_window`] of the
    /// largest payload the log holds; a smaller window fails with
    /// [`DecodeError::WindowTooSmall`] at the first frame that does not fit).
    #[must_use]
    pub fn new(window: &'w mut [u8], mode: Mode) -> Self {
        SegmentDecoder {
            window,
            start: 0,
            end: 0,
            pos: 0,
            finished: false,
            mode,
            state: State::Header,
        }
    }

    /// Free space where the caller writes the segment's next bytes, then calls [`Self::fill`].
    /// Empty only while a complete item waits to be polled.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.window.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.window.get_mut(self.end..).unwrap_or(&mut [])
    }

    /// Reports that the first `n` bytes of [`Self::space`] now hold the segment's next bytes.
    pub fn fill(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.window.len());
    }

    /// Copies as much of `data` as fits into the window and returns how much it took.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let space = self.space();
        let n = space.len().min(data.len());
        if let (Some(dst), Some(src)) = (space.get_mut(..n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.fill(n);
        n
    }

    /// Says that the segment has no more bytes.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The segment offset of the next byte the decoder expects from the caller.
    #[must_use]
    pub fn offset_wanted(&self) -> u64 {
        self.pos + (self.end - self.start) as u64
    }

    fn buffered(&self) -> &[u8] {
        self.window.get(self.start..self.end).unwrap_or(&[])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.pos += n as u64;
    }

    /// Decodes what the bytes given so far allow. Call again after:
    /// * [`Decoded::Header`], [`Decoded::Record`], [`Decoded::Skipped`]: at once;
    /// * [`Decoded::NeedMore`]: after [`Self::fill`] / [`Self::feed`] or [`Self::finish`].
    ///
    /// [`Decoded::End`] and [`Decoded::Error`] are final.
    #[must_use]
    pub fn poll(&mut self) -> Decoded<'_> {
        loop {
            match self.state {
                State::Done(Outcome::End(end)) => return Decoded::End(end),
                State::Done(Outcome::Error(e)) => return Decoded::Error(e),
                State::Header => return self.poll_header(),
                State::RestOfBadHeader { error, nonzero } => {
                    let nonzero = nonzero || self.buffered().iter().any(|b| *b != 0);
                    let n = self.end - self.start;
                    self.consume(n);
                    if !self.finished {
                        self.state = State::RestOfBadHeader { error, nonzero };
                        return Decoded::NeedMore;
                    }
                    self.state = State::Done(Outcome::End(End::BadHeader {
                        error,
                        rest_is_zero: !nonzero,
                    }));
                }
                State::Records { seed, next } => match self.step_record(seed, next) {
                    Step::Record(header, len) => {
                        let offset = self.pos;
                        self.state = State::Records {
                            seed,
                            next: header.lsn.next(),
                        };
                        let start = self.start;
                        self.consume(len);
                        if header.kind == record::Kind::Seal {
                            self.state = State::Done(Outcome::End(End::Sealed {
                                last_lsn: header.lsn,
                                offset: self.pos,
                            }));
                        }
                        let frame = self.window.get(start..start + len).unwrap_or(&[]);
                        return Decoded::Record(Record {
                            header,
                            offset,
                            payload: record::payload(&header, frame),
                        });
                    }
                    Step::NeedMore => return Decoded::NeedMore,
                    Step::Continue => {}
                },
                State::Scanning { .. } => match self.step_scan() {
                    Some(Scan::NeedMore) => return Decoded::NeedMore,
                    Some(Scan::Skipped(s)) => return Decoded::Skipped(s),
                    None => {}
                },
            }
        }
    }

    fn poll_header(&mut self) -> Decoded<'_> {
        if self.window.len() < segment::HEADER_LEN {
            let error = DecodeError::WindowTooSmall {
                offset: 0,
                lsn: Lsn::ZERO,
                needed: segment::HEADER_LEN,
            };
            self.state = State::Done(Outcome::Error(error));
            return Decoded::Error(error);
        }
        let have = self.end - self.start;
        if have < segment::HEADER_LEN && !self.finished {
            return Decoded::NeedMore;
        }
        match SegmentHeader::parse(self.buffered()) {
            Ok(header) => {
                self.consume(segment::HEADER_LEN);
                self.state = State::Records {
                    seed: header.seed(),
                    next: header.first_lsn,
                };
                Decoded::Header(header)
            }
            Err(error) => {
                let n = have.min(segment::HEADER_LEN);
                self.consume(n);
                self.state = State::RestOfBadHeader {
                    error,
                    nonzero: false,
                };
                self.poll()
            }
        }
    }

    fn step_record(&mut self, seed: Seed, next: Lsn) -> Step {
        let at = self.pos;
        let bytes = self.buffered();
        let Some(header_bytes) = bytes.get(..record::HEADER_LEN) else {
            if !self.finished {
                return Step::NeedMore;
            }
            // The segment's bytes end within a header's room.
            let damage = if bytes.iter().all(|b| *b == 0) {
                Damage::Unwritten
            } else {
                Damage::Torn
            };
            let extent = self.offset_wanted();
            self.start_scan(seed, at, next, damage, extent);
            return Step::Continue;
        };
        let header_bytes: &[u8; record::HEADER_LEN] = match header_bytes.try_into() {
            Ok(h) => h,
            Err(_) => return Step::NeedMore,
        };
        match record::check_header(&seed, header_bytes) {
            HeaderCheck::Zero | HeaderCheck::Invalid => {
                self.start_scan(seed, at, next, Damage::Unwritten, at);
                Step::Continue
            }
            HeaderCheck::Valid(header) => {
                let len = header.frame_len();
                if len > self.window.len() {
                    self.state = State::Done(Outcome::Error(DecodeError::WindowTooSmall {
                        offset: at,
                        lsn: header.lsn,
                        needed: len,
                    }));
                    return Step::Continue;
                }
                let Some(frame) = bytes.get(..len) else {
                    if !self.finished {
                        return Step::NeedMore;
                    }
                    let extent = self.offset_wanted();
                    self.start_scan(seed, at, next, Damage::Torn, extent);
                    return Step::Continue;
                };
                if !record::check_body(&seed, frame) {
                    // A frame that was being written; nothing of this writer starts inside it.
                    self.start_scan_at_damage(seed, at, next, Damage::Torn, at + len as u64);
                    self.consume(len);
                    return Step::Continue;
                }
                if header.lsn != next {
                    // A whole frame with another LSN: the damage is the gap before it, and the
                    // frame itself is the first thing the scan looks at (it may vouch for the
                    // gap, or be where SkipCorrupt resumes).
                    self.start_scan_at_damage(seed, at, next, Damage::Torn, at);
                    return Step::Continue;
                }
                Step::Record(header, len)
            }
        }
    }

    fn start_scan(&mut self, seed: Seed, at: u64, lost: Lsn, damage: Damage, extent: u64) {
        self.start_scan_at_damage(seed, at, lost, damage, extent);
        // The damaged candidate itself is not a frame; look from the next aligned offset.
        self.consume(record::ALIGN);
    }

    fn start_scan_at_damage(
        &mut self,
        seed: Seed,
        at: u64,
        lost: Lsn,
        damage: Damage,
        extent: u64,
    ) {
        self.state = State::Scanning {
            seed,
            at,
            lost,
            damage,
            beyond: Beyond {
                extent: at,
                ..Beyond::default()
            },
            extent,
        };
    }

    /// Looks at candidate offsets until the window runs out; `None` means the state changed.
    fn step_scan(&mut self) -> Option<Scan> {
        let State::Scanning {
            seed,
            at,
            lost,
            damage,
            mut beyond,
            mut extent,
        } = self.state
        else {
            return None;
        };
        let wait = loop {
            let bytes = self.buffered();
            let Some(header_bytes) = bytes.get(..record::HEADER_LEN) else {
                if !self.finished {
                    break Some(Scan::NeedMore);
                }
                if bytes.iter().any(|b| *b != 0) {
                    extent = extent.max(self.offset_wanted());
                }
                self.state = State::Done(Outcome::End(
                    self.classify(at, lost, damage, beyond, extent),
                ));
                return None;
            };
            let header_bytes: &[u8; record::HEADER_LEN] = header_bytes.try_into().ok()?;
            let candidate = self.pos;
            let check = record::check_header(&seed, header_bytes);
            if let HeaderCheck::Invalid = check {
                // Non-zero bytes that do not validate: part of the damage.
                extent = extent.max(candidate + record::ALIGN as u64);
            }
            let HeaderCheck::Valid(header) = check else {
                self.consume(record::ALIGN);
                continue;
            };
            let len = header.frame_len();
            if len > self.window.len() {
                if header.lsn >= lost {
                    // It may be the witness that decides torn against corrupt: guessing either
                    // way could cut acknowledged data, so the window must grow.
                    self.state = State::Done(Outcome::Error(DecodeError::WindowTooSmall {
                        offset: candidate,
                        lsn: header.lsn,
                        needed: len,
                    }));
                    return None;
                }
                self.consume(record::ALIGN);
                continue;
            }
            let Some(frame) = bytes.get(..len) else {
                if !self.finished {
                    break Some(Scan::NeedMore);
                }
                extent = extent.max(self.offset_wanted());
                self.consume(record::ALIGN);
                continue;
            };
            if !record::check_body(&seed, frame) {
                // A header of this segment's writer with a broken body: a frame that was being
                // written. The writer's frames never overlap, so nothing of it starts inside:
                // step over it whole (which also keeps the scan linear in the segment's size).
                extent = extent.max(candidate + len as u64);
                self.consume(len);
                continue;
            }
            if header.lsn < lost {
                // LSNs only grow along a segment: a whole frame of this segment with a lower
                // LSN than the damage's is something no crash explains.
                if self.mode == Mode::SkipCorrupt {
                    self.consume(len);
                    continue;
                }
                self.state = corruption(at, lost, candidate, &header, beyond);
                return None;
            }
            if self.mode == Mode::SkipCorrupt {
                // Resume at this frame; the gap is reported.
                self.state = State::Records {
                    seed,
                    next: header.lsn,
                };
                return Some(Scan::Skipped(Skipped {
                    offset: at,
                    len: candidate - at,
                    first_lost: lost,
                    resumed: header.lsn,
                }));
            }
            if beyond.frames == 0 {
                beyond.first_lsn = header.lsn;
            }
            beyond.frames += 1;
            beyond.last_lsn = header.lsn;
            beyond.extent = candidate + len as u64;
            beyond.max_watermark = beyond.max_watermark.max(header.watermark);
            extent = extent.max(beyond.extent);
            if header.watermark >= lost {
                self.state = corruption(at, lost, candidate, &header, beyond);
                return None;
            }
            if header.kind == record::Kind::Seal {
                // Nothing after a seal was written by this use of the segment.
                self.state = State::Done(Outcome::End(
                    self.classify(at, lost, damage, beyond, extent),
                ));
                return None;
            }
            self.consume(len);
        };
        // Waiting for bytes: the scan goes on later with what it has found so far.
        self.state = State::Scanning {
            seed,
            at,
            lost,
            damage,
            beyond,
            extent,
        };
        wait
    }

    fn classify(&self, at: u64, lost: Lsn, damage: Damage, beyond: Beyond, extent: u64) -> End {
        if beyond.frames == 0 && damage == Damage::Unwritten {
            End::Clean {
                offset: at,
                next_lsn: lost,
            }
        } else {
            End::Torn {
                offset: at,
                next_lsn: lost,
                beyond,
                extent: extent.max(beyond.extent),
            }
        }
    }
}

/// The end found when the whole frame `witness` at `candidate` proves damage at `at` (first
/// lost LSN `lost`) was corruption.
fn corruption(at: u64, lost: Lsn, candidate: u64, witness: &RecordHeader, beyond: Beyond) -> State {
    State::Done(Outcome::End(End::Corrupt(Corruption {
        offset: at,
        expected_lsn: lost,
        witness_lsn: witness.lsn,
        witness_offset: candidate,
        witness_watermark: witness.watermark,
        beyond,
    })))
}

enum Step {
    Record(RecordHeader, usize),
    NeedMore,
    Continue,
}

enum Scan {
    NeedMore,
    Skipped(Skipped),
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::lsn::SegmentId;
    use crate::record::Kind;
    use std::vec::Vec;

    pub(crate) fn header() -> SegmentHeader {
        SegmentHeader {
            core: 0,
            log_id: 1,
            sequence: SegmentId(0),
            nonce: 99,
            first_lsn: Lsn(1),
            epoch: 0,
            prev_nonce: 0,
        }
    }

    /// A segment of `n` data records; record i (LSN i+1) has a payload of i % 50 bytes and a
    /// watermark of `wm(lsn)`. Returns the bytes and each frame's end offset.
    fn segment(n: u64, wm: impl Fn(u64) -> u64) -> (Vec<u8>, Vec<usize>) {
        let h = header();
        let seed = h.seed();
        let mut out = h.emit().to_vec();
        let mut ends = Vec::new();
        for lsn in 1..=n {
            let payload: Vec<u8> = (0..(lsn % 50)).map(|i| (i * lsn) as u8).collect();
            let mut frame = std::vec![0u8; record::frame_len(payload.len())];
            record::encode(
                &mut frame,
                &seed,
                Lsn(lsn),
                Lsn(wm(lsn)),
                Kind::Data,
                &payload,
            )
            .unwrap();
            out.extend_from_slice(&frame);
            ends.push(out.len());
        }
        (out, ends)
    }

    fn decode(bytes: &[u8], chunk: usize, mode: Mode) -> (Vec<u64>, Vec<Skipped>, Option<End>) {
        let mut window = std::vec![0u8; 4096];
        let mut d = SegmentDecoder::new(&mut window, mode);
        let mut lsns = Vec::new();
        let mut skips = Vec::new();
        let mut rest = bytes;
        loop {
            match d.poll() {
                Decoded::NeedMore => {
                    if rest.is_empty() {
                        d.finish();
                    } else {
                        let take = chunk.min(rest.len());
                        let n = d.feed(&rest[..take]);
                        rest = &rest[n..];
                    }
                }
                Decoded::Header(_) => {}
                Decoded::Record(r) => {
                    assert_eq!(r.payload.len() as u64, r.header.lsn.0 % 50);
                    lsns.push(r.header.lsn.0);
                }
                Decoded::Skipped(s) => skips.push(s),
                Decoded::End(e) => return (lsns, skips, Some(e)),
                Decoded::Error(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn any_chunking_gives_the_same_records() {
        let (bytes, _) = segment(200, |l| l - 1);
        for chunk in [1, 3, 8, 31, 32, 33, 100, 4096] {
            let (lsns, _, end) = decode(&bytes, chunk, Mode::Strict);
            assert_eq!(lsns, (1..=200).collect::<Vec<_>>(), "chunk {chunk}");
            assert_eq!(
                end,
                Some(End::Clean {
                    offset: bytes.len() as u64,
                    next_lsn: Lsn(201)
                })
            );
        }
    }

    #[test]
    fn crash_at_every_byte_is_a_torn_or_clean_tail() {
        // Watermark lags by 3: the writer acknowledges in batches.
        let (bytes, ends) = segment(300, |l| l.saturating_sub(3));
        let mut noise = 0x2545_F491_4F6C_DD1Du64;
        for cut in segment::HEADER_LEN..=bytes.len() {
            for random_tail in [false, true] {
                let mut damaged = bytes[..cut].to_vec();
                // What lies past the cut: zeros (pre-zeroed space) or noise (reused space).
                while damaged.len() < bytes.len() + 64 {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    damaged.push(if random_tail { noise as u8 } else { 0 });
                }
                let fill = u8::from(random_tail);
                let (lsns, _, end) = decode(&damaged, 61, Mode::Strict);
                // A frame survives when its bytes are unchanged (a zero fill can rewrite padding
                // with what it held).
                let whole = ends
                    .iter()
                    .filter(|e| damaged[..**e] == bytes[..**e])
                    .count() as u64;
                assert_eq!(
                    lsns,
                    (1..=whole).collect::<Vec<_>>(),
                    "cut {cut} fill {fill}"
                );
                match end.unwrap() {
                    End::Clean { next_lsn, .. } | End::Torn { next_lsn, .. } => {
                        assert_eq!(next_lsn, Lsn(whole + 1))
                    }
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn damage_vouched_by_a_later_watermark_is_corruption() {
        let (mut bytes, ends) = segment(40, |l| l - 1);
        let victim = ends[9] + 40; // inside record 11 or 12
        bytes[victim] ^= 0x01;
        let (lsns, _, end) = decode(&bytes, 4096, Mode::Strict);
        let Some(End::Corrupt(c)) = end else {
            panic!("{end:?}")
        };
        assert_eq!(lsns.len() as u64, c.expected_lsn.0 - 1);
        assert!(c.witness_watermark >= c.expected_lsn);
        let (lsns, skips, end) = decode(&bytes, 7, Mode::SkipCorrupt);
        assert_eq!(skips.len(), 1);
        assert_eq!(lsns.len(), 39);
        assert!(matches!(end, Some(End::Clean { .. })));
    }

    #[test]
    fn unvouched_frames_beyond_a_hole_are_a_torn_tail() {
        // Watermarks never reach the hole: the writer had not acknowledged it.
        let (mut bytes, ends) = segment(40, |l| l.min(10).saturating_sub(1));
        for b in &mut bytes[ends[19]..ends[21]] {
            *b = 0;
        }
        let (lsns, _, end) = decode(&bytes, 4096, Mode::Strict);
        assert_eq!(lsns, (1..=20).collect::<Vec<_>>());
        let Some(End::Torn {
            next_lsn, beyond, ..
        }) = end
        else {
            panic!("{end:?}")
        };
        assert_eq!(next_lsn, Lsn(21));
        assert_eq!(
            (beyond.frames, beyond.first_lsn, beyond.last_lsn),
            (18, Lsn(23), Lsn(40))
        );
    }

    #[test]
    fn nothing_inside_a_frame_that_was_being_written_is_looked_at() {
        let (mut bytes, _) = segment(5, |l| l - 1);
        let seed = header().seed();
        // A frame (LSN 6) whose body breaks, holding in its payload the bytes of a whole frame
        // that would vouch for LSN 6: the writer's frames never overlap, so it is not evidence.
        let mut inner = [0u8; 40];
        record::encode(&mut inner, &seed, Lsn(7), Lsn(6), Kind::Data, b"inner").unwrap();
        let mut payload = std::vec![0x11u8; 200];
        payload[16..56].copy_from_slice(&inner);
        let mut outer = std::vec![0u8; record::frame_len(200)];
        record::encode(&mut outer, &seed, Lsn(6), Lsn(5), Kind::Data, &payload).unwrap();
        let last = outer.len() - 1;
        outer[last] ^= 1;
        let at = bytes.len() as u64;
        bytes.extend_from_slice(&outer);
        let (lsns, _, end) = decode(&bytes, 4096, Mode::Strict);
        assert_eq!(lsns, (1..=5).collect::<Vec<_>>());
        let Some(End::Torn {
            offset,
            next_lsn,
            beyond,
            extent,
        }) = end
        else {
            panic!("{end:?}")
        };
        assert_eq!((offset, next_lsn, beyond.frames), (at, Lsn(6), 0));
        assert_eq!(extent, at + outer.len() as u64);
    }

    #[test]
    fn bad_headers_are_named() {
        let (mut bytes, _) = segment(3, |l| l - 1);
        bytes[0] = b'X';
        let (_, _, end) = decode(&bytes, 4096, Mode::Strict);
        assert_eq!(
            end,
            Some(End::BadHeader {
                error: HeaderError::BadMagic,
                rest_is_zero: false
            })
        );
        let (_, _, end) = decode(&[0u8; 500], 9, Mode::Strict);
        assert_eq!(
            end,
            Some(End::BadHeader {
                error: HeaderError::Blank,
                rest_is_zero: true
            })
        );
        let (_, _, end) = decode(&[], 9, Mode::Strict);
        assert_eq!(
            end,
            Some(End::BadHeader {
                error: HeaderError::Blank,
                rest_is_zero: true
            })
        );
    }
}
