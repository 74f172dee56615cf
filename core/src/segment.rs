//! The segment header: the first 72 bytes of every segment.
//!
//! ```text
//! offset size field
//!  0     8    magic        89 4C 41 4D 0D 0A 1A 0A ("\x89LAM\r\n\x1a\n")
//!  8     2    version      u16 LE, 1
//! 10     2    flags        u16 LE, 0 (reserved)
//! 12     4    core         u32 LE, which log of a per-core set (0 for a single log)
//! 16     8    log_id       u64 LE, random at log creation, the same in every segment of the log
//! 24     8    sequence     u64 LE, 0 for the log's first segment, +1 for each next
//! 32     8    nonce        u64 LE, random for each segment (and each reuse of a file)
//! 40     8    first_lsn    u64 LE, LSN of the segment's first record
//! 48     8    epoch        u64 LE, the epoch in force when the segment was started
//! 56     8    prev_nonce   u64 LE, the predecessor segment's nonce (0 for sequence 0)
//! 64     4    reserved     zero
//! 68     4    header_crc   CRC32C(bytes 0..68)
//! ```
//!
//! Bytes 16..40 (log id, sequence, nonce) are the segment's *seed*: every frame checksum in the
//! segment starts with them, so a frame from another log, another segment or an earlier use of
//! the same file never validates here.
//!
//! # Fuzzing
//! Under `cfg(fuzzing)` the header checksum comparison passes, so a fuzzer reaches the states
//! behind it; nothing else changes.

use crate::crc::crc32c;
use crate::lsn::{Lsn, SegmentId};
use crate::record::Seed;
use core::fmt;

/// Bytes in a segment header; the first record starts right after it.
pub const HEADER_LEN: usize = 72;
/// The magic at the start of every segment. The high byte and the CR LF / ^Z catch a file that
/// went through a text-mode transfer, as PNG's does.
pub const MAGIC: [u8; 8] = *b"\x89LAM\r\n\x1a\n";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;

mod field {
    use core::ops::Range;
    pub(crate) const MAGIC: Range<usize> = 0..8;
    pub(crate) const VERSION: Range<usize> = 8..10;
    pub(crate) const FLAGS: Range<usize> = 10..12;
    pub(crate) const CORE: Range<usize> = 12..16;
    pub(crate) const LOG_ID: Range<usize> = 16..24;
    pub(crate) const SEQUENCE: Range<usize> = 24..32;
    pub(crate) const NONCE: Range<usize> = 32..40;
    pub(crate) const FIRST_LSN: Range<usize> = 40..48;
    pub(crate) const EPOCH: Range<usize> = 48..56;
    pub(crate) const PREV_NONCE: Range<usize> = 56..64;
    pub(crate) const RESERVED: Range<usize> = 64..68;
    pub(crate) const CRC: Range<usize> = 68..72;
    pub(crate) const SEED: Range<usize> = 16..40;
}

/// A parsed segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Which log of a per-core set the segment belongs to.
    pub core: u32,
    /// The log's identity, the same in all its segments.
    pub log_id: u64,
    /// The segment's sequence number in the log.
    pub sequence: SegmentId,
    /// Random, fresh for each segment and each reuse of a file.
    pub nonce: u64,
    /// The LSN of the segment's first record.
    pub first_lsn: Lsn,
    /// The epoch in force when the segment was started.
    pub epoch: u64,
    /// The predecessor's nonce; 0 for the first segment.
    pub prev_nonce: u64,
}

/// Why bytes are not a segment header this code can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    Truncated {
        /// Bytes there were.
        len: usize,
    },
    /// Every byte is zero: a segment created (or prepared) but never started.
    Blank,
    /// The magic is wrong: not a lamina segment.
    BadMagic,
    /// A lamina segment of a version this code does not read.
    UnsupportedVersion {
        /// The version found.
        version: u16,
    },
    /// The header's checksum, a reserved field or the first LSN (never 0 or `Lsn::MAX`) does not
    /// validate: the header is damaged.
    Damaged,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Truncated { len } => {
                write!(f, "segment header truncated: {len} of {HEADER_LEN} bytes")
            }
            HeaderError::Blank => {
                f.write_str("segment header is all zeros (segment never started)")
            }
            HeaderError::BadMagic => f.write_str("not a lamina segment (bad magic)"),
            HeaderError::UnsupportedVersion { version } => write!(
                f,
                "segment format version {version} is not supported (this build reads {VERSION})"
            ),
            HeaderError::Damaged => {
                f.write_str("segment header damaged (checksum mismatch or invalid field)")
            }
        }
    }
}

impl core::error::Error for HeaderError {}

impl SegmentHeader {
    /// Parses and validates the first [`HEADER_LEN`] bytes of `bytes`.
    ///
    /// # Errors
    /// [`HeaderError`] for short, blank, foreign, unknown-version or damaged headers, checked in
    /// that order, so that a file of another kind is named as such before its checksum is blamed.
    pub fn parse(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            if bytes.iter().all(|b| *b == 0) {
                return Err(HeaderError::Blank);
            }
            return Err(HeaderError::Truncated { len: bytes.len() });
        };
        if h.iter().all(|b| *b == 0) {
            return Err(HeaderError::Blank);
        }
        if h.get(field::MAGIC) != Some(&MAGIC[..]) {
            return Err(HeaderError::BadMagic);
        }
        let version = u16::from_le_bytes(take(h, field::VERSION));
        if version != VERSION {
            return Err(HeaderError::UnsupportedVersion { version });
        }
        let stored = u32::from_le_bytes(take(h, field::CRC));
        let computed = crc32c(h.get(..field::CRC.start).unwrap_or(&[]));
        if !(cfg!(fuzzing) || stored == computed)
            || take::<2>(h, field::FLAGS) != [0; 2]
            || take::<4>(h, field::RESERVED) != [0; 4]
        {
            return Err(HeaderError::Damaged);
        }
        let first_lsn = Lsn(u64::from_le_bytes(take(h, field::FIRST_LSN)));
        if first_lsn == Lsn::ZERO || first_lsn == Lsn::MAX {
            // No record takes LSN 0 or Lsn::MAX: a writer never starts a segment there.
            return Err(HeaderError::Damaged);
        }
        Ok(SegmentHeader {
            core: u32::from_le_bytes(take(h, field::CORE)),
            log_id: u64::from_le_bytes(take(h, field::LOG_ID)),
            sequence: SegmentId(u64::from_le_bytes(take(h, field::SEQUENCE))),
            nonce: u64::from_le_bytes(take(h, field::NONCE)),
            first_lsn,
            epoch: u64::from_le_bytes(take(h, field::EPOCH)),
            prev_nonce: u64::from_le_bytes(take(h, field::PREV_NONCE)),
        })
    }

    /// The header's bytes.
    #[must_use]
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        put(&mut h, field::MAGIC, &MAGIC);
        put(&mut h, field::VERSION, &VERSION.to_le_bytes());
        put(&mut h, field::CORE, &self.core.to_le_bytes());
        put(&mut h, field::LOG_ID, &self.log_id.to_le_bytes());
        put(&mut h, field::SEQUENCE, &self.sequence.0.to_le_bytes());
        put(&mut h, field::NONCE, &self.nonce.to_le_bytes());
        put(&mut h, field::FIRST_LSN, &self.first_lsn.0.to_le_bytes());
        put(&mut h, field::EPOCH, &self.epoch.to_le_bytes());
        put(&mut h, field::PREV_NONCE, &self.prev_nonce.to_le_bytes());
        let crc = crc32c(h.get(..field::CRC.start).unwrap_or(&[]));
        put(&mut h, field::CRC, &crc.to_le_bytes());
        h
    }

    /// The seed of every frame checksum in this segment.
    #[must_use]
    pub fn seed(&self) -> Seed {
        let h = self.emit();
        Seed::new(h.get(field::SEED).unwrap_or(&[]))
    }

    /// The header of the segment that follows this one, which holds `next_lsn` onward.
    #[must_use]
    pub fn successor(&self, nonce: u64, next_lsn: Lsn, epoch: u64) -> SegmentHeader {
        SegmentHeader {
            core: self.core,
            log_id: self.log_id,
            sequence: self.sequence.next(),
            nonce,
            first_lsn: next_lsn,
            epoch,
            prev_nonce: self.nonce,
        }
    }
}

impl fmt::Display for SegmentHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment {} core {} log {:016x} first_lsn {} epoch {} nonce {:016x} prev_nonce {:016x}",
            self.sequence,
            self.core,
            self.log_id,
            self.first_lsn,
            self.epoch,
            self.nonce,
            self.prev_nonce
        )
    }
}

fn take<const N: usize>(h: &[u8], range: core::ops::Range<usize>) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = h.get(range).filter(|src| src.len() == N) {
        out.copy_from_slice(src);
    }
    out
}

fn put(h: &mut [u8; HEADER_LEN], range: core::ops::Range<usize>, value: &[u8]) {
    if let Some(dst) = h.get_mut(range) {
        dst.copy_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentHeader {
        SegmentHeader {
            core: 3,
            log_id: 0xdead_beef,
            sequence: SegmentId(9),
            nonce: 42,
            first_lsn: Lsn(1000),
            epoch: 7,
            prev_nonce: 41,
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(SegmentHeader::parse(&sample().emit()), Ok(sample()));
    }

    #[test]
    fn damage_is_named() {
        let good = sample().emit();
        assert_eq!(
            SegmentHeader::parse(&good[..10]),
            Err(HeaderError::Truncated { len: 10 })
        );
        assert_eq!(SegmentHeader::parse(&[0; 72]), Err(HeaderError::Blank));
        assert_eq!(SegmentHeader::parse(&[0; 7]), Err(HeaderError::Blank));
        let mut bad = good;
        bad[0] = b'P';
        assert_eq!(SegmentHeader::parse(&bad), Err(HeaderError::BadMagic));
        let mut bad = good;
        bad[8] = 2;
        assert_eq!(
            SegmentHeader::parse(&bad),
            Err(HeaderError::UnsupportedVersion { version: 2 })
        );
        for byte in 10..HEADER_LEN {
            let mut bad = good;
            bad[byte] ^= 0x10;
            assert_eq!(
                SegmentHeader::parse(&bad),
                Err(HeaderError::Damaged),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn seed_differs_per_segment_and_reuse() {
        let a = sample();
        let b = SegmentHeader { nonce: 43, ..a };
        let c = SegmentHeader {
            sequence: SegmentId(10),
            ..a
        };
        let d = SegmentHeader { log_id: 1, ..a };
        assert_ne!(a.seed(), b.seed());
        assert_ne!(a.seed(), c.seed());
        assert_ne!(a.seed(), d.seed());
    }
}
